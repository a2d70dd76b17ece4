//! The directory a zarr output is written into, as a zarrs writable store.
//!
//! zarrs' own `FilesystemStore` syncs every file it writes (one `fsync` per chunk); an output is
//! written into a temporary sibling that only becomes visible once complete, so per-file syncs buy
//! nothing and this store writes plainly. It also keeps the first I/O failure with the file it
//! concerned, so the sink reports `Error::Io` with the OS error (a full disk, a read-only
//! directory) rather than a codec error wrapping a message.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use zarrs_storage::{
    Bytes, OffsetBytesIterator, StorageError, StoreKey, StorePrefix, WritableStorageTraits,
};

/// A directory written key by key (`obs/_index/c/0` → `<root>/obs/_index/c/0`).
#[derive(Debug)]
pub(super) struct DirStore {
    root: PathBuf,
    failure: Mutex<Option<(PathBuf, io::Error)>>,
}

impl DirStore {
    /// A store writing below `root` (which exists).
    pub fn new(root: &Path) -> DirStore {
        DirStore {
            root: root.to_path_buf(),
            failure: Mutex::new(None),
        }
    }

    /// Writes `value` at `key`, creating the directories above it.
    pub fn write(&self, key: &str, value: &[u8]) -> Result<(), (PathBuf, io::Error)> {
        let path = self.root.join(key);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| (parent.to_path_buf(), e))?;
        }
        fs::write(&path, value).map_err(|e| (path, e))
    }

    /// The first I/O failure a zarrs write met, with the file it concerned (taken: reported once).
    pub fn take_failure(&self) -> Option<(PathBuf, io::Error)> {
        // A panic while holding the lock cannot leave the option half-written.
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Records a failure for [`take_failure`](Self::take_failure) and hands zarrs an equivalent.
    fn fail(&self, path: PathBuf, error: io::Error) -> StorageError {
        let copy = io::Error::new(error.kind(), format!("{}: {error}", path.display()));
        let mut slot = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some((path, error));
        }
        StorageError::IOError(Arc::new(copy))
    }
}

impl WritableStorageTraits for DirStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        self.write(key.as_str(), &value)
            .map_err(|(path, e)| self.fail(path, e))
    }

    fn set_partial_many(
        &self,
        key: &StoreKey,
        _offset_values: OffsetBytesIterator,
    ) -> Result<(), StorageError> {
        // `supports_set_partial` is false, so zarrs writes whole chunks and never calls this.
        Err(StorageError::Unsupported(format!(
            "partial write of {key}: the output store writes whole chunks"
        )))
    }

    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        let path = self.root.join(key.as_str());
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.fail(path, e)),
            _ => Ok(()),
        }
    }

    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        let path = self.root.join(prefix.as_str());
        match fs::remove_dir_all(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.fail(path, e)),
            _ => Ok(()),
        }
    }

    fn supports_set_partial(&self) -> bool {
        false
    }
}
