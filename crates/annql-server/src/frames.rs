//! Frontend messages checked before pgwire decodes them.
//!
//! pgwire 0.41 decodes message bodies with `Buf::get_*` on bytes it has not measured (a Parse
//! declaring more parameter types than it carries panics the connection task), closes the
//! connection without a word on an unknown message type or an over-long length, and buffers any
//! declared length up to 1 GiB. PostgreSQL answers each with `FATAL 08P01` and closes. [`Guarded`]
//! sits between the (decrypted) socket and pgwire's codec: it hands a message on only once all of
//! it has arrived and its fields fit its length, and otherwise fails the read with a
//! [`ProtocolViolation`], which the connection loop (`server.rs`) answers with that error.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest frontend message accepted after startup (PostgreSQL's is 1 GiB; a query text,
/// a Bind of parameters or a password is far shorter, and every byte is buffered before use).
pub const MAX_MESSAGE_LEN: usize = 64 << 20;
/// The longest startup packet (PostgreSQL's limit).
pub const MAX_STARTUP_LEN: usize = 10_000;
/// The startup code of a CancelRequest.
pub const CANCEL_REQUEST: u32 = 80_877_102;

/// A frontend message that breaks the protocol: the connection is answered with
/// `FATAL 08P01 <message>` and closed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolViolation(pub String);

impl ProtocolViolation {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// The violation behind an I/O error of a [`Guarded`] read, if that is what it is.
    pub fn of(e: &io::Error) -> Option<&ProtocolViolation> {
        e.get_ref()?.downcast_ref()
    }
}

/// Where in the conversation the next message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Untyped packets: startup, cancel, SSL/GSS requests.
    Startup,
    /// Typed messages (after a protocol-3 startup packet).
    Typed,
}

/// A stream whose reads yield only whole, well-formed frontend messages (see the module docs).
/// Writes pass straight through.
#[derive(Debug)]
pub struct Guarded<IO> {
    io: IO,
    /// Bytes read and not yet handed on; the first `ready` of them are checked messages.
    buf: BytesMut,
    ready: usize,
    phase: Phase,
    eof: bool,
}

impl<IO> Guarded<IO> {
    /// Guards `io`; `pending` are bytes already read from it (before TLS negotiation ended).
    pub fn new(io: IO, pending: BytesMut) -> Self {
        Self {
            io,
            buf: pending,
            ready: 0,
            phase: Phase::Startup,
            eof: false,
        }
    }

    /// Checks the next message in the buffer: Some(its length) when whole and well-formed,
    /// None when more bytes are needed.
    fn next_message(&mut self) -> Result<Option<usize>, ProtocolViolation> {
        let (len, next) = match self.phase {
            Phase::Startup => match check_startup(&self.buf)? {
                Some((len, typed)) => (len, if typed { Phase::Typed } else { Phase::Startup }),
                None => return Ok(None),
            },
            Phase::Typed => match check_message(&self.buf)? {
                Some(len) => (len, Phase::Typed),
                None => return Ok(None),
            },
        };
        self.phase = next;
        Ok(Some(len))
    }
}

/// A startup-phase packet at the head of `buf`: Some((length, whether typed messages follow)).
fn check_startup(buf: &[u8]) -> Result<Option<(usize, bool)>, ProtocolViolation> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(ProtocolViolation::new("invalid length of startup packet"));
    }
    let Some(packet) = buf.get(..len) else {
        return Ok(None);
    };
    let code = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    // Protocol 3.x: a StartupMessage, after which every message is typed.
    Ok(Some((len, code >> 16 == 3)))
}

/// A typed message at the head of `buf`: Some(its whole length) once it has all arrived.
pub fn check_message(buf: &[u8]) -> Result<Option<usize>, ProtocolViolation> {
    let Some(head) = buf.get(..5) else {
        return Ok(None);
    };
    let kind = head[0];
    if !b"QPBEDCSHXcdfp".contains(&kind) {
        return Err(ProtocolViolation(format!(
            "invalid frontend message type {kind}"
        )));
    }
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    let limit = match kind {
        b'Q' | b'P' | b'B' | b'd' | b'p' => MAX_MESSAGE_LEN,
        _ => MAX_STARTUP_LEN,
    };
    let len = match usize::try_from(len) {
        Ok(len) if (4..=limit).contains(&len) => len,
        _ => {
            return Err(ProtocolViolation(format!(
                "invalid message length {len} for message type {:?}",
                char::from(kind)
            )));
        }
    };
    let Some(body) = buf.get(5..1 + len) else {
        return Ok(None);
    };
    check_body(kind, body).map_err(|what| {
        ProtocolViolation(format!(
            "invalid {} message format: {what}",
            message_name(kind)
        ))
    })?;
    Ok(Some(1 + len))
}

fn message_name(kind: u8) -> &'static str {
    match kind {
        b'Q' => "Query",
        b'P' => "Parse",
        b'B' => "Bind",
        b'E' => "Execute",
        b'D' => "Describe",
        b'C' => "Close",
        b'S' => "Sync",
        b'H' => "Flush",
        b'X' => "Terminate",
        b'c' => "CopyDone",
        b'd' => "CopyData",
        b'f' => "CopyFail",
        _ => "password",
    }
}

/// The fields of one message body, read front to back.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err(format!("{n} more bytes expected, {} left", self.0.len()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn cstring(&mut self) -> Result<(), String> {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or("a string without its terminating NUL")?;
        self.0 = &self.0[end + 1..];
        Ok(())
    }

    fn u16(&mut self) -> Result<usize, String> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn i32(&mut self) -> Result<i32, String> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `n` format codes, each 0 (text) or 1 (binary).
    fn format_codes(&mut self, n: usize) -> Result<(), String> {
        for _ in 0..n {
            let code = self.u16()?;
            if code > 1 {
                return Err(format!("unsupported format code {code}"));
            }
        }
        Ok(())
    }

    fn end(&self) -> Result<(), String> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(format!("{n} bytes after the last field")),
        }
    }
}

/// Whether `body` holds exactly the fields of a `kind` message.
fn check_body(kind: u8, body: &[u8]) -> Result<(), String> {
    let mut f = Fields(body);
    match kind {
        b'Q' | b'f' => f.cstring()?,
        b'P' => {
            f.cstring()?;
            f.cstring()?;
            let types = f.u16()?;
            f.take(types * 4)?;
        }
        b'B' => {
            f.cstring()?;
            f.cstring()?;
            let formats = f.u16()?;
            f.format_codes(formats)?;
            let params = f.u16()?;
            if formats > 1 && formats != params {
                return Err(format!(
                    "{formats} parameter formats but {params} parameters"
                ));
            }
            for _ in 0..params {
                match f.i32()? {
                    -1 => {}
                    n if n < 0 => return Err(format!("parameter length {n}")),
                    n => {
                        f.take(n as usize)?;
                    }
                }
            }
            let results = f.u16()?;
            f.format_codes(results)?;
        }
        b'E' => {
            f.cstring()?;
            f.i32()?;
        }
        b'D' | b'C' => {
            let target = f.take(1)?[0];
            if target != b'S' && target != b'P' {
                return Err(format!("target {:?}", char::from(target)));
            }
            f.cstring()?;
        }
        // CopyData and the password family carry bytes pgwire reads as they come.
        b'd' | b'p' => return Ok(()),
        // Sync, Flush, Terminate, CopyDone: no fields.
        _ => {}
    }
    f.end()
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready > 0 {
                let n = this.ready.min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            match this.next_message() {
                Ok(Some(len)) => {
                    this.ready = len;
                    continue;
                }
                Ok(None) => {}
                Err(v) => return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, v))),
            }
            if this.eof {
                // A message cut short by the end of the stream is dropped with the connection,
                // as PostgreSQL drops it (the client is gone; there is no one to answer).
                return Poll::Ready(Ok(()));
            }
            this.buf.reserve(8192);
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.io),
                cx,
                &mut this.buf
            ))?;
            if n == 0 {
                this.eof = true;
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn violation(buf: &[u8]) -> String {
        match check_message(buf) {
            Err(v) => v.0,
            Ok(r) => panic!("accepted: {r:?}"),
        }
    }

    #[test]
    fn whole_well_formed_messages_pass() {
        let q = message(b'Q', b"SELECT 1\0");
        assert_eq!(check_message(&q).ok(), Some(Some(q.len())));
        // Incomplete: wait for more.
        assert_eq!(check_message(&q[..q.len() - 1]).ok(), Some(None));
        assert_eq!(check_message(&q[..3]).ok(), Some(None));
        let mut bind = b"\0s\0".to_vec();
        bind.extend_from_slice(&1u16.to_be_bytes());
        bind.extend_from_slice(&0u16.to_be_bytes());
        bind.extend_from_slice(&2u16.to_be_bytes());
        bind.extend_from_slice(&(-1i32).to_be_bytes());
        bind.extend_from_slice(&2i32.to_be_bytes());
        bind.extend_from_slice(b"42");
        bind.extend_from_slice(&0u16.to_be_bytes());
        let b = message(b'B', &bind);
        assert_eq!(check_message(&b).ok(), Some(Some(b.len())));
        let s = message(b'S', b"");
        assert_eq!(check_message(&s).ok(), Some(Some(5)));
    }

    #[test]
    fn malformed_messages_are_violations() {
        assert!(violation(&message(b'z', b"")).contains("invalid frontend message type 122"));
        let mut huge = vec![b'Q'];
        huge.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(violation(&huge).contains("invalid message length"));
        let mut short = vec![b'Q'];
        short.extend_from_slice(&3i32.to_be_bytes());
        assert!(violation(&short).contains("invalid message length 3"));
        assert!(violation(&message(b'Q', b"SELECT 1")).contains("NUL"));
        // A Parse declaring 65535 parameter types and carrying none.
        let mut parse = b"\0SELECT 1\0".to_vec();
        parse.extend_from_slice(&u16::MAX.to_be_bytes());
        assert!(violation(&message(b'P', &parse)).contains("Parse"));
        // A Bind with 3 formats for 2 parameters, and a parameter longer than the message.
        let mut bind = b"\0\0".to_vec();
        bind.extend_from_slice(&3u16.to_be_bytes());
        bind.extend_from_slice(&[0; 6]);
        bind.extend_from_slice(&2u16.to_be_bytes());
        assert!(violation(&message(b'B', &bind)).contains("3 parameter formats"));
        let mut bind = b"\0\0\0\0\0\x01".to_vec();
        bind.extend_from_slice(&1000i32.to_be_bytes());
        assert!(violation(&message(b'B', &bind)).contains("Bind"));
        assert!(violation(&message(b'S', b"x")).contains("after the last field"));
        assert!(violation(&message(b'D', b"Zname\0")).contains("target"));
    }

    #[test]
    fn startup_packets_switch_to_typed_messages() {
        let mut p = 196_608u32.to_be_bytes().to_vec();
        p.extend_from_slice(b"user\0a\0\0");
        let mut packet = ((p.len() + 4) as u32).to_be_bytes().to_vec();
        packet.extend_from_slice(&p);
        assert_eq!(
            check_startup(&packet).ok(),
            Some(Some((packet.len(), true)))
        );
        let cancel = [
            &16u32.to_be_bytes()[..],
            &CANCEL_REQUEST.to_be_bytes(),
            &[0; 8],
        ]
        .concat();
        assert_eq!(check_startup(&cancel).ok(), Some(Some((16, false))));
        assert!(check_startup(&4u32.to_be_bytes()).is_err());
    }
}
