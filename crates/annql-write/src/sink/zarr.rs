//! zarr v2 and v3 outputs, written with zarrs.

use std::path::Path;

use annql_store::arrow::array::ArrayRef;

use super::{ArrayId, ArraySpec, Attrs, Chunking, Sink};
use crate::error::{Error, Result};

/// A zarr directory store being written.
pub struct ZarrSink {}

impl ZarrSink {
    /// Creates the store directory at `path` (zarr format `version`, sharded arrays if asked).
    pub fn create(path: &Path, version: u8, sharded: bool, chunking: &Chunking) -> Result<Self> {
        let _ = (path, version, sharded, chunking);
        Err(Error::Internal("zarr sink not written yet".into()))
    }
}

impl Sink for ZarrSink {
    fn group(&mut self, _path: &str, _attrs: &Attrs) -> Result<()> {
        Err(Error::Internal("zarr sink not written yet".into()))
    }
    fn open_array(&mut self, _path: &str, _spec: &ArraySpec, _attrs: &Attrs) -> Result<ArrayId> {
        Err(Error::Internal("zarr sink not written yet".into()))
    }
    fn append(&mut self, _array: ArrayId, _values: &ArrayRef) -> Result<()> {
        Err(Error::Internal("zarr sink not written yet".into()))
    }
    fn close_array(&mut self, _array: ArrayId) -> Result<()> {
        Err(Error::Internal("zarr sink not written yet".into()))
    }
    fn finish(self: Box<Self>) -> Result<()> {
        Err(Error::Internal("zarr sink not written yet".into()))
    }
}
