//! Dense n-D arrays (dense `X`, `obsm`) written in bounded memory although hdf5-pure 0.47
//! appends to rank-1 datasets only.
//!
//! A row-major `(n, a, b)` array chunked as `(r, a, b)` stores exactly the bytes, chunk by chunk,
//! of a rank-1 array of `n·a·b` elements chunked as `r·a·b`, and with one unlimited axis both
//! are indexed by the same Extensible Array (chunk `k` holds rows `k·r..(k+1)·r`). So the sink
//! streams such an array as that rank-1 dataset, and once the file is closed rewrites two
//! messages of its object header in place: the dataspace (`(n, a, b)`, the first axis
//! unlimited) and the layout (chunk `(r, a, b)`, same index address and parameters). The header
//! keeps its size: the dataset is created with a placeholder attribute ([`RESERVE`]) whose
//! message becomes a NIL message absorbing the growth. The header's checksum is recomputed.
//!
//! The rewrite only accepts the header shape hdf5-pure writes (version 2, one chunk, a version
//! 4 chunked layout with an Extensible Array index); anything else is an error naming the
//! element, never a silently different file.

use std::fs::File as OsFile;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// The placeholder attribute whose message room the n-D dataspace and layout take.
pub(super) const RESERVE: &str = "_annql_nd_reserve";
/// Elements of the placeholder (`int64`): 64 bytes of room, more than rank 2–4 needs.
pub(super) const RESERVE_LEN: usize = 8;

const NIL: u8 = 0x00;
const DATASPACE: u8 = 0x01;
const LAYOUT: u8 = 0x08;
const ATTRIBUTE: u8 = 0x0C;

/// A streamed rank-1 dataset to give its n-D shape.
#[derive(Debug, Clone)]
pub(super) struct Reshape {
    /// Element path (for errors).
    pub path: String,
    /// Address of its object header.
    pub header: u64,
    /// Final shape: rows, then the inner axes.
    pub shape: Vec<u64>,
    /// Rows per chunk.
    pub chunk_rows: u64,
}

/// One message of an object header: where its prefix starts, its type and its body.
struct Message {
    kind: u8,
    flags: u8,
    order: Option<[u8; 2]>,
    body: Vec<u8>,
}

fn bad(path: &Path, element: &str, what: &str) -> Error {
    Error::Internal(format!(
        "h5ad sink: cannot give '{element}' of {} its n-D shape: {what}",
        path.display()
    ))
}

/// Rewrites the object header of `r` in the closed file at `path`.
pub(super) fn apply(path: &Path, r: &Reshape) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let bad = |what: &str| bad(path, &r.path, what);
    let mut file = OsFile::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    // The prefix: signature, version, flags, optional times / phase change, chunk 0 size.
    let mut head = [0u8; 32];
    file.seek(SeekFrom::Start(r.header)).map_err(io)?;
    file.read_exact(&mut head).map_err(io)?;
    if &head[..4] != b"OHDR" || head[4] != 2 {
        return Err(bad("its object header is not a version 2 header"));
    }
    let hflags = head[5];
    let mut pos =
        6 + if hflags & 0x20 != 0 { 16 } else { 0 } + if hflags & 0x10 != 0 { 4 } else { 0 };
    let width = 1usize << (hflags & 0x03);
    let mut size_bytes = [0u8; 8];
    size_bytes[..width].copy_from_slice(&head[pos..pos + width]);
    pos += width;
    let chunk0 = usize::try_from(u64::from_le_bytes(size_bytes))
        .map_err(|_| bad("its header chunk is too large"))?;
    let total = pos + chunk0 + 4;
    let mut header = vec![0u8; total];
    file.seek(SeekFrom::Start(r.header)).map_err(io)?;
    file.read_exact(&mut header).map_err(io)?;
    if lookup3(&header[..total - 4])
        != u32::from_le_bytes([
            header[total - 4],
            header[total - 3],
            header[total - 2],
            header[total - 1],
        ])
    {
        return Err(bad("its object header checksum does not match"));
    }
    let (mut messages, gap) = parse_messages(&header[pos..pos + chunk0], hflags & 0x04 != 0)
        .ok_or_else(|| bad("its object header messages are malformed"))?;
    let find = |kind: u8, messages: &[Message]| messages.iter().position(|m| m.kind == kind);
    let ds = find(DATASPACE, &messages).ok_or_else(|| bad("no dataspace message"))?;
    let lay = find(LAYOUT, &messages).ok_or_else(|| bad("no layout message"))?;
    let reserve = messages
        .iter()
        .position(|m| m.kind == ATTRIBUTE && attribute_name(&m.body) == Some(RESERVE.as_bytes()))
        .ok_or_else(|| bad("no placeholder attribute"))?;
    let new_ds = dataspace(&r.shape);
    let new_lay = layout(&messages[lay].body, &r.shape, r.chunk_rows)
        .ok_or_else(|| bad("its layout is not a version 4 Extensible-Array chunked layout"))?;
    let room = messages[ds].body.len() + messages[lay].body.len() + messages[reserve].body.len();
    let needed = new_ds.len() + new_lay.len();
    if needed > room {
        return Err(bad("its header has no room for the n-D messages"));
    }
    messages[ds].body = new_ds;
    messages[lay].body = new_lay;
    messages[reserve].kind = NIL;
    messages[reserve].flags = 0;
    messages[reserve].body = vec![0; room - needed];
    let mut out = header[..pos].to_vec();
    for m in &messages {
        out.push(m.kind);
        let len = u16::try_from(m.body.len()).map_err(|_| bad("a message is too large"))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.push(m.flags);
        if let Some(order) = m.order {
            out.extend_from_slice(&order);
        }
        out.extend_from_slice(&m.body);
    }
    out.extend_from_slice(&gap);
    if out.len() != total - 4 {
        return Err(bad("the rewritten header changed size"));
    }
    let checksum = lookup3(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    file.seek(SeekFrom::Start(r.header)).map_err(io)?;
    file.write_all(&out).map_err(io)?;
    file.sync_all().map_err(io)
}

/// The messages of a header chunk, and the gap after the last one (too short for a message).
fn parse_messages(chunk: &[u8], with_order: bool) -> Option<(Vec<Message>, Vec<u8>)> {
    let prefix = if with_order { 6 } else { 4 };
    let mut messages = Vec::new();
    let mut pos = 0;
    while chunk.len() - pos >= prefix {
        let kind = chunk[pos];
        let len = usize::from(u16::from_le_bytes([chunk[pos + 1], chunk[pos + 2]]));
        let flags = chunk[pos + 3];
        let order = with_order.then(|| [chunk[pos + 4], chunk[pos + 5]]);
        let body = chunk.get(pos + prefix..pos + prefix + len)?.to_vec();
        messages.push(Message {
            kind,
            flags,
            order,
            body,
        });
        pos += prefix + len;
    }
    Some((messages, chunk[pos..].to_vec()))
}

/// The name of an attribute message (versions 1–3), without its terminating NUL.
fn attribute_name(body: &[u8]) -> Option<&[u8]> {
    let version = *body.first()?;
    let name_len = usize::from(u16::from_le_bytes([*body.get(2)?, *body.get(3)?]));
    let start = match version {
        1 => 8,
        2 => 8,
        3 => 9,
        _ => return None,
    };
    let name = body.get(start..start + name_len)?;
    Some(name.strip_suffix(&[0]).unwrap_or(name))
}

/// A version 2 simple dataspace of `shape`, the first axis unlimited.
fn dataspace(shape: &[u64]) -> Vec<u8> {
    let mut out = vec![2, shape.len() as u8, 0x01, 0x01];
    for d in shape {
        out.extend_from_slice(&d.to_le_bytes());
    }
    for (i, d) in shape.iter().enumerate() {
        let max = if i == 0 { u64::MAX } else { *d };
        out.extend_from_slice(&max.to_le_bytes());
    }
    out
}

/// The version 4 chunked layout of `shape` chunked by `chunk_rows` rows, keeping the old
/// layout's flags, element size, index parameters and index address.
fn layout(old: &[u8], shape: &[u64], chunk_rows: u64) -> Option<Vec<u8>> {
    if old.len() < 5 || old[0] != 4 || old[1] != 2 {
        return None;
    }
    let (flags, ndims, enc) = (old[2], usize::from(old[3]), usize::from(old[4]));
    let dims_end = 5 + ndims * enc;
    let read = |at: usize| {
        let mut b = [0u8; 8];
        b[..enc].copy_from_slice(old.get(at..at + enc)?);
        Some(u64::from_le_bytes(b))
    };
    let element_size = read(5 + (ndims - 1) * enc)?;
    // Index type 4 (Extensible Array): 5 parameter bytes, then the 8-byte index address.
    let tail = old.get(dims_end..)?;
    if tail.first() != Some(&4) || tail.len() != 1 + 5 + 8 {
        return None;
    }
    let mut dims: Vec<u64> = vec![chunk_rows];
    dims.extend_from_slice(&shape[1..]);
    dims.push(element_size);
    // libhdf5 requires exactly this width: (floor(log2(largest dimension)) + 8) / 8 bytes.
    let largest = dims.iter().copied().max()?.max(1);
    let width = ((63 - largest.leading_zeros()) as usize + 8) / 8;
    let mut out = vec![4, 2, flags, dims.len() as u8, width as u8];
    for d in &dims {
        out.extend_from_slice(&d.to_le_bytes()[..width]);
    }
    out.extend_from_slice(tail);
    Some(out)
}

/// Bob Jenkins' lookup3 `hashlittle` with seed 0: the checksum of HDF5 metadata.
fn lookup3(data: &[u8]) -> u32 {
    let init = 0xdead_beefu32.wrapping_add(data.len() as u32);
    let (mut a, mut b, mut c) = (init, init, init);
    let word = |k: &[u8], i: usize| u32::from_le_bytes([k[i], k[i + 1], k[i + 2], k[i + 3]]);
    let mut k = data;
    while k.len() > 12 {
        a = a.wrapping_add(word(k, 0));
        b = b.wrapping_add(word(k, 4));
        c = c.wrapping_add(word(k, 8));
        // mix
        a = a.wrapping_sub(c) ^ c.rotate_left(4);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a) ^ a.rotate_left(6);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b) ^ b.rotate_left(8);
        b = b.wrapping_add(a);
        a = a.wrapping_sub(c) ^ c.rotate_left(16);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a) ^ a.rotate_left(19);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b) ^ b.rotate_left(4);
        b = b.wrapping_add(a);
        k = &k[12..];
    }
    if k.is_empty() {
        return c;
    }
    let mut last = [0u8; 12];
    last[..k.len()].copy_from_slice(k);
    a = a.wrapping_add(word(&last, 0));
    b = b.wrapping_add(word(&last, 4));
    c = c.wrapping_add(word(&last, 8));
    // final
    c = (c ^ b).wrapping_sub(b.rotate_left(14));
    a = (a ^ c).wrapping_sub(c.rotate_left(11));
    b = (b ^ a).wrapping_sub(a.rotate_left(25));
    c = (c ^ b).wrapping_sub(b.rotate_left(16));
    a = (a ^ c).wrapping_sub(c.rotate_left(4));
    b = (b ^ a).wrapping_sub(a.rotate_left(14));
    (c ^ b).wrapping_sub(b.rotate_left(24))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup3_matches_the_reference_values() {
        // From lookup3.c's driver: hashlittle("", 0) and hashlittle("Four score...", 0).
        assert_eq!(lookup3(b""), 0xdead_beef);
        assert_eq!(lookup3(b"Four score and seven years ago"), 0x1777_0551);
    }

    #[test]
    fn layout_widths_follow_libhdf5() {
        // Rank-1 layout as hdf5-pure writes it: 2 dims of 2 bytes (chunk 600, element 4).
        let mut old = vec![4, 2, 0, 2, 2];
        old.extend_from_slice(&600u16.to_le_bytes());
        old.extend_from_slice(&4u16.to_le_bytes());
        old.extend_from_slice(&[4, 32, 4, 4, 16, 10]);
        old.extend_from_slice(&0x1234u64.to_le_bytes());
        let new = layout(&old, &[1000, 300], 2).unwrap_or_default();
        // Dims (2, 300, 4): largest 300 → (8 + 8) / 8 = 2 bytes each.
        assert_eq!(&new[..5], &[4, 2, 0, 3, 2]);
        assert_eq!(&new[5..11], &[2, 0, 44, 1, 4, 0]);
        assert_eq!(&new[11..], &old[9..]);
    }
}
