//! The reader's end of the channel to the writer: what to write, in order, with array handles the
//! reader numbers itself (the sink's ids are only known on the writer's side).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;

use annql_store::ReadStats;
use annql_store::arrow::array::ArrayRef;

use crate::error::{Error, Result};
use crate::sink::{ArraySpec, Attrs};

/// One step of the write.
pub(crate) enum Op {
    /// Create a group.
    Group { path: String, attrs: Attrs },
    /// Open an array under the reader's `handle`.
    Open {
        handle: usize,
        path: String,
        spec: ArraySpec,
        attrs: Attrs,
    },
    /// Append rows to an open array.
    Append { handle: usize, values: ArrayRef },
    /// Close an array.
    Close { handle: usize },
    /// Everything was sent: the writer may finish the sink.
    Done,
}

/// An array opened through an [`Emitter`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handle(usize);

/// Sends the write's steps to the writer, checking for cancellation at every block.
pub(crate) struct Emitter<'a> {
    tx: SyncSender<Op>,
    cancel: Option<&'a AtomicBool>,
    out: &'a Path,
    next: usize,
    /// Bytes of source values one block may hold.
    pub block_bytes: u64,
    /// What the export's reads cost.
    pub stats: Arc<ReadStats>,
}

impl<'a> Emitter<'a> {
    pub(crate) fn new(
        tx: SyncSender<Op>,
        cancel: Option<&'a AtomicBool>,
        out: &'a Path,
        block_bytes: usize,
    ) -> Self {
        Emitter {
            tx,
            cancel,
            out,
            next: 0,
            block_bytes: (block_bytes as u64).max(1),
            stats: ReadStats::new_shared(),
        }
    }

    fn send(&self, op: Op) -> Result<()> {
        // A closed channel means the writer stopped; its own error is what the caller sees.
        self.tx
            .send(op)
            .map_err(|_| Error::Internal("the writer stopped before the reader".into()))
    }

    /// Fails with [`Error::Cancelled`] once the caller has asked to stop.
    pub(crate) fn check_cancel(&self) -> Result<()> {
        match self.cancel {
            Some(flag) if flag.load(Ordering::Relaxed) => {
                Err(Error::Cancelled(self.out.to_path_buf()))
            }
            _ => Ok(()),
        }
    }

    /// Creates a group.
    pub(crate) fn group(&mut self, path: &str, attrs: Attrs) -> Result<()> {
        self.send(Op::Group {
            path: path.to_string(),
            attrs,
        })
    }

    /// Opens an array.
    pub(crate) fn open(&mut self, path: &str, spec: ArraySpec, attrs: Attrs) -> Result<Handle> {
        let handle = self.next;
        self.next += 1;
        self.send(Op::Open {
            handle,
            path: path.to_string(),
            spec,
            attrs,
        })?;
        Ok(Handle(handle))
    }

    /// Appends a block of rows (checking for cancellation first).
    pub(crate) fn append(&mut self, array: Handle, values: ArrayRef) -> Result<()> {
        self.check_cancel()?;
        self.send(Op::Append {
            handle: array.0,
            values,
        })
    }

    /// Closes an array.
    pub(crate) fn close(&mut self, array: Handle) -> Result<()> {
        self.send(Op::Close { handle: array.0 })
    }

    /// Tells the writer everything was sent.
    pub(crate) fn done(&mut self) -> Result<()> {
        self.send(Op::Done)
    }
}

/// Attributes `encoding-type` and `encoding-version`.
pub(crate) fn encoding(kind: &str, version: &str) -> Attrs {
    let mut attrs = Attrs::new();
    attrs.insert("encoding-type".into(), kind.into());
    attrs.insert("encoding-version".into(), version.into());
    attrs
}
