//! `.h5ad` outputs (HDF5), written with hdf5-pure.

use std::path::Path;

use annql_store::arrow::array::ArrayRef;

use super::{ArrayId, ArraySpec, Attrs, Chunking, Sink};
use crate::error::{Error, Result};

/// An `.h5ad` file being written.
pub struct H5adSink {}

impl H5adSink {
    /// Creates the file at `path`.
    pub fn create(path: &Path, chunking: &Chunking) -> Result<Self> {
        let _ = (path, chunking);
        Err(Error::Internal("h5ad sink not written yet".into()))
    }
}

impl Sink for H5adSink {
    fn group(&mut self, _path: &str, _attrs: &Attrs) -> Result<()> {
        Err(Error::Internal("h5ad sink not written yet".into()))
    }
    fn open_array(&mut self, _path: &str, _spec: &ArraySpec, _attrs: &Attrs) -> Result<ArrayId> {
        Err(Error::Internal("h5ad sink not written yet".into()))
    }
    fn append(&mut self, _array: ArrayId, _values: &ArrayRef) -> Result<()> {
        Err(Error::Internal("h5ad sink not written yet".into()))
    }
    fn close_array(&mut self, _array: ArrayId) -> Result<()> {
        Err(Error::Internal("h5ad sink not written yet".into()))
    }
    fn finish(self: Box<Self>) -> Result<()> {
        Err(Error::Internal("h5ad sink not written yet".into()))
    }
}
