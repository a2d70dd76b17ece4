//! Where a store's bytes come from: a directory, a zip archive, and the accounting wrapper that
//! records which keys (chunks) and how many bytes each read touched.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use zarrs::storage::byte_range::{ByteRange, ByteRangeIterator};
use zarrs::storage::{
    Bytes, ListableStorageTraits, MaybeBytes, MaybeBytesIterator, ReadableListableStorageTraits,
    ReadableStorageTraits, StorageError, StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix,
    StorePrefixes,
};

use crate::error::{Error, Result};
use crate::limits::{ReadLimit, describe_range, range_within};
use crate::local::{DirStorage, check_store_path, open_regular};

/// A readable, listable store: what every backend provides.
pub type Storage = Arc<dyn ReadableListableStorageTraits>;

/// Opens the storage behind a local path: a zarr directory, a `.zip` archive of one, or an HDF5
/// file (`.h5ad`, `.h5mu`) presented as a zarr v2 store, with the default [`ReadLimit`].
pub fn open_local(path: &Path) -> Result<Storage> {
    open_local_within(path, ReadLimit::default())
}

/// [`open_local`], every read bounded by `limit`. A FIFO, socket or device is refused without
/// being opened for reading.
pub fn open_local_within(path: &Path, limit: ReadLimit) -> Result<Storage> {
    let meta = check_store_path(path)?;
    if meta.is_dir() {
        return Ok(Arc::new(DirStorage::open(path, limit)?));
    }
    let mut magic = [0u8; 8];
    let n = open_regular(path)?
        .read(&mut magic)
        .map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        })?;
    match &magic[..n.min(8)] {
        [] => Err(Error::UnsupportedSource {
            path: path.to_path_buf(),
            reason: "the file is empty (0 bytes): neither a zip archive nor an HDF5 file".into(),
        }),
        [b'P', b'K', ..] => Ok(Arc::new(ZipStorage::open(path, limit)?)),
        [0x89, b'H', b'D', b'F', ..] => Ok(Arc::new(crate::hdf5::Hdf5Storage::open(path)?)),
        // A user block moves the HDF5 signature to 512, 1024, ... bytes: trust the extension.
        _ if has_hdf5_extension(path) => Ok(Arc::new(crate::hdf5::Hdf5Storage::open(path)?)),
        _ => Err(Error::UnsupportedSource {
            path: path.to_path_buf(),
            reason: "neither a zarr directory nor a zip archive".into(),
        }),
    }
}

fn has_hdf5_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["h5ad", "h5mu", "h5", "hdf5"].contains(&e.to_ascii_lowercase().as_str()))
}

/// One member of a zip archive, located once when the archive is opened.
#[derive(Debug)]
struct ZipMember {
    index: usize,
    data_start: u64,
    size: u64,
    stored: bool,
    /// The CRC-32 the central directory records for the member's bytes.
    crc32: u32,
    /// Whether a stored member's bytes have been checked against `crc32` (the zip crate checks
    /// compressed members as it inflates them; stored ones are sliced from the file past it).
    verified: AtomicBool,
    /// Why the member cannot be read (its local header is damaged): reading it fails with this,
    /// the rest of the archive still reads.
    damage: Option<String>,
}

/// Bytes hashed per positional read when a stored member is checked before a partial read.
const CRC_BLOCK: u64 = 1 << 20;

/// A zarr store inside a zip archive, as written by zarr's `ZipStore` or by zipping a directory.
///
/// `ZipStore` appends a new member each time metadata is rewritten, so names repeat: the last
/// member wins (as with Python's `zipfile`). Archives made by zipping a folder nest the store one
/// level down; the root is found where the shallowest zarr metadata file sits. Uncompressed
/// members (zarr's default) are read by byte range straight from the file, without locking.
pub struct ZipStorage {
    path: PathBuf,
    file: File,
    /// The archive's length: a stored member must lie within it.
    file_len: u64,
    limit: ReadLimit,
    archive: Mutex<zip::ZipArchive<File>>,
    members: BTreeMap<String, ZipMember>,
}

impl ZipStorage {
    /// Reads the archive's central directory; members are read within `limit`.
    pub fn open(path: &Path, limit: ReadLimit) -> Result<Self> {
        let open = |p: &Path| open_regular(p);
        let zip_err = |source| Error::Zip {
            path: path.to_path_buf(),
            source,
        };
        let mut archive = zip::ZipArchive::new(open(path)?).map_err(zip_err)?;
        let mut all = BTreeMap::new();
        for index in 0..archive.len() {
            // The central directory names every member; the zip crate reads a member's local
            // header (where its data starts) here too. A damaged one fails that member only.
            let name = archive.name_for_index(index).map(str::to_string);
            let entry = match archive.by_index_raw(index) {
                Ok(member) if member.is_dir() => continue,
                Ok(member) => ZipMember {
                    index,
                    data_start: member.data_start(),
                    size: member.size(),
                    stored: member.compression() == zip::CompressionMethod::Stored,
                    crc32: member.crc32(),
                    verified: AtomicBool::new(false),
                    damage: None,
                },
                Err(e) => ZipMember {
                    index,
                    data_start: 0,
                    size: 0,
                    stored: true,
                    crc32: 0,
                    verified: AtomicBool::new(false),
                    damage: Some(format!("its local header is damaged: {e}")),
                },
            };
            let Some(name) = name else {
                return Err(zip_err(zip::result::ZipError::FileNotFound));
            };
            if name.ends_with('/') {
                continue;
            }
            all.insert(name, entry);
        }
        let root = Self::find_root(&all).ok_or_else(|| Error::UnsupportedSource {
            path: path.to_path_buf(),
            reason: "zip archive holds no zarr store (no zarr.json, .zgroup or .zarray)".into(),
        })?;
        let members = all
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix(&root).map(|k| (k.to_string(), v)))
            .collect();
        let file = open(path)?;
        let file_len = file
            .metadata()
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            file_len,
            limit,
            archive: Mutex::new(archive),
            members,
        })
    }

    /// The folder prefix of the store inside the archive ("" when it sits at the top).
    fn find_root(members: &BTreeMap<String, ZipMember>) -> Option<String> {
        const MARKERS: [&str; 4] = ["zarr.json", ".zgroup", ".zmetadata", ".zarray"];
        members
            .keys()
            .filter(|k| !k.starts_with("__MACOSX/"))
            .filter_map(|k| {
                let (dir, file) = k.rsplit_once('/').unwrap_or(("", k.as_str()));
                MARKERS.contains(&file).then(|| {
                    if dir.is_empty() {
                        String::new()
                    } else {
                        format!("{dir}/")
                    }
                })
            })
            .min_by_key(|dir| (dir.matches('/').count(), dir.clone()))
    }

    /// An error about member `key`.
    fn member_error(&self, key: &StoreKey, what: impl std::fmt::Display) -> StorageError {
        StorageError::Other(format!("{}: member '{key}': {what}", self.path.display()))
    }

    /// Refuses a read of `len` bytes of member `key` above the read limit.
    fn check_limit(&self, key: &StoreKey, len: u64) -> Result<usize, StorageError> {
        if len > self.limit.bytes() {
            return Err(self.member_error(
                key,
                format_args!(
                    "reading {len} bytes would exceed the read limit of {} bytes",
                    self.limit.bytes()
                ),
            ));
        }
        usize::try_from(len).map_err(|e| self.member_error(key, e))
    }

    /// Inflates a compressed member: at most the size the directory declares (and the read
    /// limit), and exactly that size, or the member is damaged.
    fn read_member(&self, key: &StoreKey, member: &ZipMember) -> Result<Vec<u8>, StorageError> {
        let capacity = self.check_limit(key, member.size)?;
        let mut archive = self
            .archive
            .lock()
            .map_err(|_| StorageError::Other("zip archive lock poisoned".into()))?;
        let file = archive
            .by_index(member.index)
            .map_err(|e| self.member_error(key, e))?;
        let mut buf = Vec::with_capacity(capacity);
        // One byte past the declared size tells a member that inflates to more. The zip crate
        // checks the member's CRC-32 when the read reaches its end ("Invalid checksum" otherwise).
        file.take(member.size.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| self.member_error(key, e))?;
        if buf.len() as u64 != member.size {
            let how = if buf.len() as u64 > member.size {
                "more"
            } else {
                "fewer"
            };
            return Err(self.member_error(
                key,
                format_args!(
                    "is damaged: it inflates to {how} bytes than the {} the archive declares",
                    member.size
                ),
            ));
        }
        Ok(buf)
    }

    /// Reads `len` bytes of a stored member from `start`, naming the member if the file fails.
    fn read_stored(
        &self,
        key: &StoreKey,
        member: &ZipMember,
        start: u64,
        len: u64,
    ) -> Result<Vec<u8>, StorageError> {
        let len = self.check_limit(key, len)?;
        let end = member.data_start.saturating_add(member.size);
        if end > self.file_len {
            return Err(self.member_error(
                key,
                format_args!(
                    "is damaged: it declares {} bytes from offset {}, past the archive's end at {}",
                    member.size, member.data_start, self.file_len
                ),
            ));
        }
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, member.data_start + start)
            .map_err(|e| self.member_error(key, e))?;
        Ok(buf)
    }

    /// Checks a stored member's bytes against its CRC-32, once per member: `whole` is the member
    /// when the caller has just read all of it; otherwise the member is hashed from the file.
    fn verify_stored(
        &self,
        key: &StoreKey,
        member: &ZipMember,
        whole: Option<&[u8]>,
    ) -> Result<(), StorageError> {
        if member.verified.load(Ordering::Acquire) {
            return Ok(());
        }
        let crc = match whole {
            Some(bytes) => crc32fast::hash(bytes),
            None => {
                let mut hasher = crc32fast::Hasher::new();
                let mut at = 0;
                while at < member.size {
                    let n = CRC_BLOCK.min(member.size - at);
                    hasher.update(&self.read_stored(key, member, at, n)?);
                    at += n;
                }
                hasher.finalize()
            }
        };
        if crc != member.crc32 {
            return Err(StorageError::Other(format!(
                "{}: member '{key}' is damaged: its bytes have CRC-32 {crc:08x}, the archive \
                 records {:08x}",
                self.path.display(),
                member.crc32
            )));
        }
        member.verified.store(true, Ordering::Release);
        Ok(())
    }
}

impl ReadableStorageTraits for ZipStorage {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        let Some(member) = self.members.get(key.as_str()) else {
            return Ok(None);
        };
        if let Some(damage) = &member.damage {
            return Err(self.member_error(key, damage));
        }
        // Uncompressed members are sliced from the file directly; compressed ones are inflated once.
        let inflated = if member.stored {
            None
        } else {
            Some(Bytes::from(self.read_member(key, member)?))
        };
        // A compressed member's ranges are taken from what it inflated to, which a damaged
        // archive can make differ from the size its directory declares.
        let len = inflated.as_ref().map_or(member.size, |b| b.len() as u64);
        let ranges = byte_ranges
            .map(|r| {
                range_within(&r, len).ok_or_else(|| {
                    StorageError::Other(format!(
                        "{}: member '{key}' holds {len} bytes, so {} of it cannot be read",
                        self.path.display(),
                        describe_range(&r)
                    ))
                })
            })
            .collect::<Result<Vec<(u64, u64)>, StorageError>>()?;
        let out: Vec<Result<Bytes, StorageError>> = match inflated {
            Some(bytes) => ranges
                .iter()
                .map(|&(start, end)| Ok(bytes.slice(start as usize..end as usize)))
                .collect(),
            // A stored member read whole (an unsharded chunk) is checked on the bytes read;
            // one read in part (a shard) is hashed once from the file first.
            None if ranges == [(0, len)] => {
                let bytes = self.read_stored(key, member, 0, len)?;
                self.verify_stored(key, member, Some(&bytes))?;
                vec![Ok(Bytes::from(bytes))]
            }
            None => {
                self.verify_stored(key, member, None)?;
                ranges
                    .iter()
                    .map(|&(start, end)| {
                        self.read_stored(key, member, start, end - start)
                            .map(Bytes::from)
                    })
                    .collect()
            }
        };
        Ok(Some(Box::new(out.into_iter())))
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        match self.members.get(key.as_str()) {
            Some(ZipMember {
                damage: Some(damage),
                ..
            }) => Err(self.member_error(key, damage)),
            member => Ok(member.map(|m| m.size)),
        }
    }

    fn supports_get_partial(&self) -> bool {
        true
    }
}

impl ListableStorageTraits for ZipStorage {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        self.members
            .keys()
            .map(|k| StoreKey::new(k.as_str()).map_err(|e| StorageError::Other(e.to_string())))
            .collect()
    }

    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        self.members
            .range(prefix.as_str().to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix.as_str()))
            .map(|(k, _)| StoreKey::new(k.as_str()).map_err(|e| StorageError::Other(e.to_string())))
            .collect()
    }

    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        let mut keys = StoreKeys::new();
        let mut prefixes = BTreeSet::new();
        for (k, _) in self
            .members
            .range(prefix.as_str().to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix.as_str()))
        {
            let rest = &k[prefix.as_str().len()..];
            match rest.split_once('/') {
                Some((dir, _)) => {
                    prefixes.insert(format!("{}{dir}/", prefix.as_str()));
                }
                None => keys.push(
                    StoreKey::new(k.as_str()).map_err(|e| StorageError::Other(e.to_string()))?,
                ),
            }
        }
        let prefixes = prefixes
            .into_iter()
            .map(|p| StorePrefix::new(p).map_err(|e| StorageError::Other(e.to_string())))
            .collect::<Result<StorePrefixes, _>>()?;
        Ok(StoreKeysPrefixes::new(keys, prefixes))
    }

    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        Ok(self
            .members
            .iter()
            .filter(|(k, _)| k.starts_with(prefix.as_str()))
            .map(|(_, m)| m.size)
            .sum())
    }
}

/// What reads cost: requests made, bytes fetched and the distinct keys (chunks, shards) touched.
///
/// One `ReadStats` can be shared by many reads (a scan partition, a whole query); the store keeps
/// its own running total too. The counts are accounting, never data: a lock poisoned by a
/// panicking reader makes the per-key ones read as empty rather than fail the query.
#[derive(Debug, Default)]
pub struct ReadStats {
    requests: AtomicU64,
    bytes: AtomicU64,
    keys: Mutex<BTreeMap<String, (u64, u64)>>,
}

impl ReadStats {
    /// A fresh, shareable counter.
    pub fn new_shared() -> Arc<Self> {
        Arc::default()
    }

    /// Byte-range requests made to storage.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Bytes returned by storage.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Distinct storage keys read (for an unsharded array, its chunks).
    pub fn keys(&self) -> BTreeSet<String> {
        self.keys
            .lock()
            .map(|k| k.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of distinct keys read so far.
    pub fn key_count(&self) -> usize {
        self.keys.lock().map(|k| k.len()).unwrap_or(0)
    }

    /// Bytes read from keys under `prefix` (e.g. `X/data/`).
    pub fn bytes_under(&self, prefix: &str) -> u64 {
        self.keys
            .lock()
            .map(|k| {
                k.iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(_, (_, b))| b)
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Byte-range requests made to keys under `prefix`. For a sharded array this is the shard
    /// indexes read plus the inner chunks read.
    pub fn requests_under(&self, prefix: &str) -> u64 {
        self.keys
            .lock()
            .map(|k| {
                k.iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(_, (r, _))| r)
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Number of distinct keys read under `prefix` (e.g. `X/data/`), i.e. chunks of one array.
    pub fn keys_under(&self, prefix: &str) -> usize {
        self.keys
            .lock()
            .map(|k| k.keys().filter(|k| k.starts_with(prefix)).count())
            .unwrap_or(0)
    }

    fn record(&self, key: &StoreKey, requests: u64, bytes: u64) {
        self.requests.fetch_add(requests, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Ok(mut keys) = self.keys.lock() {
            match keys.get_mut(key.as_str()) {
                Some((r, b)) => {
                    *r += requests;
                    *b += bytes;
                }
                None => {
                    keys.insert(key.as_str().to_string(), (requests, bytes));
                }
            }
        }
    }
}

/// Storage adapter that records every read into one or more [`ReadStats`].
pub(crate) struct CountingStorage {
    inner: Storage,
    sinks: Vec<Arc<ReadStats>>,
}

impl CountingStorage {
    pub(crate) fn new(inner: Storage, sinks: Vec<Arc<ReadStats>>) -> Self {
        Self { inner, sinks }
    }
}

impl ReadableStorageTraits for CountingStorage {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        let Some(values) = self.inner.get_partial_many(key, byte_ranges)? else {
            return Ok(None);
        };
        let values = values.collect::<Vec<_>>();
        let bytes = values
            .iter()
            .map(|b| b.as_ref().map_or(0, |b| b.len() as u64))
            .sum();
        for sink in &self.sinks {
            sink.record(key, values.len() as u64, bytes);
        }
        Ok(Some(Box::new(values.into_iter())))
    }

    fn get(&self, key: &StoreKey) -> Result<MaybeBytes, StorageError> {
        self.get_partial(key, ByteRange::FromStart(0, None))
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        self.inner.size_key(key)
    }

    fn supports_get_partial(&self) -> bool {
        self.inner.supports_get_partial()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/data")
            .join(name)
    }

    #[test]
    fn zip_last_duplicate_wins_and_nested_root_is_found() -> Result<()> {
        let plain = ZipStorage::open(&fixture("tiny.v2.zarr.zip"), ReadLimit::default())?;
        let nested = ZipStorage::open(&fixture("tiny.nested.zarr.zip"), ReadLimit::default())?;
        let key = StoreKey::new(".zattrs").map_err(|e| Error::UnsupportedSource {
            path: PathBuf::new(),
            reason: e.to_string(),
        })?;
        assert!(plain.members.contains_key("X/data/.zarray"));
        assert!(nested.members.contains_key("X/data/.zarray"));
        let attrs = plain.get(&key).ok().flatten().map(|b| b.to_vec());
        let text = String::from_utf8(attrs.unwrap_or_default()).unwrap_or_default();
        assert!(
            text.contains("anndata"),
            "last .zattrs carries the encoding: {text}"
        );
        Ok(())
    }

    /// A copy of `tiny.v2.zarr.zip` (stored members) whose central directory declares `size`
    /// bytes for `X/data/0`.
    fn zip_declaring(dir: &Path, size: u32) -> PathBuf {
        let mut bytes = std::fs::read(fixture("tiny.v2.zarr.zip")).unwrap_or_default();
        let name = b"X/data/0";
        let at = (0..bytes.len().saturating_sub(46))
            .find(|&i| {
                bytes[i..i + 4] == *b"PK\x01\x02"
                    && usize::from(u16::from_le_bytes([bytes[i + 28], bytes[i + 29]])) == name.len()
                    && bytes[i + 46..].starts_with(name)
            })
            .unwrap_or_else(|| panic!("no central directory entry for X/data/0"));
        for field in [at + 20, at + 24] {
            bytes[field..field + 4].copy_from_slice(&size.to_le_bytes());
        }
        let path = dir.join("s.zarr.zip");
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    #[test]
    fn stored_zip_members_are_read_within_the_archive_and_the_limit() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let key = StoreKey::new("X/data/0").unwrap_or_else(|e| panic!("{e}"));
        let read = |size: u32, limit: u64| {
            let zip = ZipStorage::open(&zip_declaring(dir.path(), size), ReadLimit::new(limit))
                .unwrap_or_else(|e| panic!("{e}"));
            zip.get(&key)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let past_end = read(1 << 30, 1 << 31);
        assert!(past_end.contains("past the archive's end"), "{past_end}");
        let too_big = read(1 << 30, 1 << 20);
        assert!(
            too_big.contains("exceed the read limit of 1048576 bytes"),
            "{too_big}"
        );
    }

    #[test]
    fn not_a_store_is_a_clear_error() {
        let err = open_local(&fixture("tiny.expected.json"))
            .err()
            .map(|e| e.to_string());
        assert!(
            err.unwrap_or_default()
                .contains("neither a zarr directory nor a zip")
        );
        let err = open_local(Path::new("/nonexistent/x.zarr"))
            .err()
            .map(|e| e.to_string());
        assert!(
            err.unwrap_or_default()
                .contains("cannot open /nonexistent/x.zarr")
        );
    }
}
