//! Local files opened safely: regular files only, checked without blocking. A FIFO where a chunk,
//! a metadata file, a zip or an `.h5ad` should be would block `open(2)` forever, and a device
//! could be read without end; each is opened with `O_NONBLOCK` (which a FIFO honours at once) and
//! refused after `fstat`. Symlink loops fail in `open` (`ELOOP`). A directory store's reads all
//! go through here ([`DirStorage`]), with each read bounded by the [`ReadLimit`].

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zarrs::filesystem::FilesystemStore;
use zarrs::storage::byte_range::ByteRangeIterator;
use zarrs::storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, ReadableStorageTraits, StorageError,
    StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix,
};

use crate::error::{Error, Result};
use crate::limits::{ReadLimit, describe_range, range_within};

/// What a non-regular file is, for errors.
fn kind_of(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_fifo() {
        "FIFO (named pipe)"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

/// Opens `path` for reading if it is a regular file, never blocking: `O_NONBLOCK` first, then
/// `fstat` on what was opened (so the check and the read concern the same file).
pub(crate) fn open_regular(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| Error::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(Error::NotAFile {
            path: path.to_path_buf(),
            kind: kind_of(meta.file_type()),
        });
    }
    Ok(file)
}

/// Refuses anything but a directory or a regular file at `path` (following symlinks), by `stat`
/// alone: it never opens, so a FIFO cannot block.
pub(crate) fn check_store_path(path: &Path) -> Result<std::fs::Metadata> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() && !meta.is_file() {
        return Err(Error::NotAFile {
            path: path.to_path_buf(),
            kind: kind_of(meta.file_type()),
        });
    }
    Ok(meta)
}

/// A zarr directory store: listing by zarrs' [`FilesystemStore`], reads by annql, of regular
/// files only and within the read limit.
pub(crate) struct DirStorage {
    base: PathBuf,
    listing: FilesystemStore,
    limit: ReadLimit,
}

impl DirStorage {
    pub(crate) fn open(base: &Path, limit: ReadLimit) -> Result<Self> {
        let listing = FilesystemStore::new(base).map_err(|e| Error::Open {
            path: base.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        Ok(Self {
            base: base.to_path_buf(),
            listing,
            limit,
        })
    }

    /// The file of `key`, open, with its length; `None` when it does not exist.
    fn open_key(&self, key: &StoreKey) -> Result<Option<(File, u64, PathBuf)>, StorageError> {
        let path = self.base.join(key.as_str().trim_start_matches('/'));
        match open_regular(&path) {
            Ok(file) => {
                let len = file
                    .metadata()
                    .map_err(|e| StorageError::Other(format!("{}: {e}", path.display())))?
                    .len();
                Ok(Some((file, len, path)))
            }
            Err(Error::Open { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(StorageError::Other(e.to_string())),
        }
    }
}

impl ReadableStorageTraits for DirStorage {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        let Some((file, len, path)) = self.open_key(key)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for range in byte_ranges {
            let Some((start, end)) = range_within(&range, len) else {
                return Err(StorageError::Other(format!(
                    "{}: the file holds {len} bytes, so {} of it cannot be read",
                    path.display(),
                    describe_range(&range)
                )));
            };
            let n = end - start;
            if n > self.limit.bytes() {
                return Err(StorageError::Other(format!(
                    "{}: reading {n} bytes would exceed the read limit of {} bytes",
                    path.display(),
                    self.limit.bytes()
                )));
            }
            // `n <= limit`, which a `usize` holds on the 64-bit targets annql builds for.
            let mut buf =
                vec![0u8; usize::try_from(n).map_err(|e| StorageError::Other(e.to_string()))?];
            file.read_exact_at(&mut buf, start)
                .map_err(|e| StorageError::Other(format!("{}: {e}", path.display())))?;
            out.push(Ok(Bytes::from(buf)));
        }
        Ok(Some(Box::new(out.into_iter())))
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        Ok(self.open_key(key)?.map(|(_, len, _)| len))
    }

    fn supports_get_partial(&self) -> bool {
        true
    }
}

impl ListableStorageTraits for DirStorage {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        self.listing.list()
    }

    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        self.listing.list_prefix(prefix)
    }

    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        self.listing.list_dir(prefix)
    }

    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        self.listing.size_prefix(prefix)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Runs `f` on another thread; a refusal that regresses into a block fails here, not hangs.
    fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // The receiver is gone only if the deadline already failed the test.
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("opening a FIFO blocked for 10 s"))
    }

    fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo").arg(path).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "mkfifo {}",
            path.display()
        );
    }

    #[test]
    fn fifo_chunk_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        mkfifo(&dir.path().join("0"));
        let base = dir.path().to_path_buf();
        let got = within(move || {
            let store = DirStorage::open(&base, ReadLimit::default())?;
            let key = StoreKey::new("0").map_err(|e| Error::Open {
                path: base.clone(),
                source: std::io::Error::other(e),
            })?;
            store.get(&key).map(|_| ()).map_err(|e| Error::Open {
                path: base.clone(),
                source: std::io::Error::other(e),
            })
        });
        let text = got.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("is a FIFO (named pipe), not a regular file"),
            "{text}"
        );
    }

    #[test]
    fn symlink_loop_and_oversized_read_are_errors() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let looped = dir.path().join("loop");
        std::os::unix::fs::symlink(&looped, &looped).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("big"), [7u8; 64]).unwrap_or_else(|e| panic!("{e}"));
        let store =
            DirStorage::open(dir.path(), ReadLimit::new(16)).unwrap_or_else(|e| panic!("{e}"));
        let key = |k: &str| StoreKey::new(k).unwrap_or_else(|e| panic!("{e}"));
        let err = store.get(&key("loop")).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("loop")));
        let err = store.get(&key("big")).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("read limit of 16 bytes")));
        assert_eq!(store.get(&key("absent")).ok().flatten(), None);
    }
}
