//! Read limits: what ONE read may allocate — a decoded chunk, a row block, a category table, a zip
//! member, a metadata document. Every allocation sized from something a file declares (a shape, a
//! chunk shape, `nnz`, a category count, a member size, a compressed stream's header) is checked
//! against the limit *before* it is made, so a hostile file gets an error naming it instead of
//! aborting the process. Declared shapes alone are never refused: a matrix of 10¹⁰ entries opens,
//! and reads of it that fit answer.
//!
//! This module also checks encoded chunks before zarrs decodes them ([`ChunkGuard`]): a blosc or
//! zstd header that declares more than the chunk's decoded size, or a gzip stream that inflates to
//! more, is refused (a decompression bomb).

use std::io::Read;
use std::sync::Arc;

use zarrs::storage::byte_range::{ByteRange, ByteRangeIterator};
use zarrs::storage::{MaybeBytesIterator, ReadableStorageTraits, StorageError, StoreKey};

use crate::error::{Error, Result};

/// The default read limit: 1 GiB.
pub const DEFAULT_READ_LIMIT: u64 = 1 << 30;

/// The most one read may allocate, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimit(u64);

impl Default for ReadLimit {
    fn default() -> Self {
        Self(DEFAULT_READ_LIMIT)
    }
}

impl ReadLimit {
    /// A limit of `bytes` (at least 1).
    pub fn new(bytes: u64) -> Self {
        Self(bytes.max(1))
    }

    /// The limit in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Refuses `bytes` (of `what`, read from `path` of `store`) above the limit.
    pub fn check(self, store: &str, path: &str, what: &str, bytes: u64) -> Result<()> {
        if bytes <= self.0 {
            return Ok(());
        }
        Err(Error::TooLarge {
            store: store.into(),
            path: path.trim_start_matches('/').into(),
            what: what.into(),
            bytes,
            limit: self.0,
        })
    }
}

/// The `start..end` of `range` in a value of `len` bytes, or None when it does not lie within
/// it. zarrs' own `ByteRange::start`/`end` subtract and add unchecked: a suffix longer than the
/// value (an empty shard's index) or an offset near `u64::MAX` would panic in a debug build.
pub fn range_within(range: &ByteRange, len: u64) -> Option<(u64, u64)> {
    let (start, end) = match *range {
        ByteRange::FromStart(offset, None) => (offset, len),
        ByteRange::FromStart(offset, Some(n)) => (offset, offset.checked_add(n)?),
        ByteRange::Suffix(n) => (len.checked_sub(n)?, len),
    };
    (start <= end && end <= len).then_some((start, end))
}

/// `range` in words, for errors (zarrs' own display writes a suffix as `-20..`).
pub fn describe_range(range: &ByteRange) -> String {
    match *range {
        ByteRange::FromStart(offset, None) => format!("the bytes from offset {offset}"),
        ByteRange::FromStart(offset, Some(n)) => format!("{n} bytes from offset {offset}"),
        ByteRange::Suffix(n) => format!("the last {n} bytes"),
    }
}

/// `count` items of `size` bytes, saturating: a product that overflows is above any limit.
pub fn bytes_of(count: u64, size: u64) -> u64 {
    count.saturating_mul(size)
}

/// How a chunk's encoded bytes are compressed, as far as their decoded size can be bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    /// Nothing annql bounds (uncompressed, or a codec zarrs bounds itself).
    None,
    /// blosc: the header declares the decoded size.
    Blosc,
    /// zstd: frames declare their content size, or their blocks bound it.
    Zstd,
    /// gzip: only inflating tells; inflated into a counter, never a buffer.
    Gzip,
}

impl Compression {
    fn from_id(id: &str) -> Self {
        match id {
            "blosc" => Compression::Blosc,
            "zstd" => Compression::Zstd,
            "gzip" => Compression::Gzip,
            _ => Compression::None,
        }
    }
}

/// What an array's encoded chunks are checked for before zarrs decodes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkGuard {
    /// The outermost compression of a chunk (of an inner chunk, for a sharded array).
    pub compression: Compression,
    /// Bytes a trailing `crc32c` codec appends after the compressed stream.
    pub trailer: usize,
    /// For a sharded array: the shard index's length in bytes, and where it sits.
    pub shard_index: Option<(u64, bool)>,
    /// Most bytes one (inner) chunk may decode to.
    pub decoded: u64,
}

impl ChunkGuard {
    /// The guard for an array from its metadata document (v2 or v3); `decoded` bounds one chunk.
    pub(crate) fn from_document(doc: &serde_json::Value, decoded: u64) -> Self {
        let mut guard = ChunkGuard {
            compression: Compression::None,
            trailer: 0,
            shard_index: None,
            decoded,
        };
        if let Some(id) = doc.pointer("/compressor/id").and_then(|v| v.as_str()) {
            guard.compression = Compression::from_id(id);
            return guard;
        }
        let Some(codecs) = doc.get("codecs").and_then(|v| v.as_array()) else {
            return guard;
        };
        let mut codecs = codecs.as_slice();
        if let [first] = codecs
            && first.get("name").and_then(|v| v.as_str()) == Some("sharding_indexed")
        {
            let config = first.get("configuration");
            let outer = doc
                .pointer("/chunk_grid/configuration/chunk_shape")
                .and_then(|v| v.as_array());
            let inner = config
                .and_then(|c| c.get("chunk_shape"))
                .and_then(|v| v.as_array());
            let chunks_per_shard = match (outer, inner) {
                (Some(o), Some(i)) if o.len() == i.len() => o
                    .iter()
                    .zip(i)
                    .map(|(o, i)| match (o.as_u64(), i.as_u64()) {
                        (Some(o), Some(i)) if i > 0 => o.div_ceil(i),
                        _ => 0,
                    })
                    .fold(1u64, u64::saturating_mul),
                _ => 0,
            };
            let index_crc = config
                .and_then(|c| c.get("index_codecs"))
                .and_then(|v| v.as_array())
                .is_some_and(|c| c.iter().any(|c| c.get("name") == Some(&"crc32c".into())));
            let at_start = config.and_then(|c| c.get("index_location"))
                == Some(&serde_json::Value::from("start"));
            let index_len = chunks_per_shard
                .saturating_mul(16)
                .saturating_add(if index_crc { 4 } else { 0 });
            guard.shard_index = Some((index_len, at_start));
            codecs = config
                .and_then(|c| c.get("codecs"))
                .and_then(|v| v.as_array())
                .map_or(&[], Vec::as_slice);
        }
        let names: Vec<&str> = codecs
            .iter()
            .filter_map(|c| c.get("name").and_then(|v| v.as_str()))
            .collect();
        let mut names = names.as_slice();
        if let [rest @ .., "crc32c"] = names {
            guard.trailer = 4;
            names = rest;
        }
        if let [.., last] = names {
            guard.compression = Compression::from_id(last);
        }
        guard
    }

    /// Whether reads of this array need checking at all.
    pub(crate) fn is_active(&self) -> bool {
        self.compression != Compression::None
    }

    /// Checks one encoded (inner) chunk; the error says what the stream declares.
    pub(crate) fn check_chunk(&self, encoded: &[u8]) -> std::result::Result<(), String> {
        let body = &encoded[..encoded.len().saturating_sub(self.trailer)];
        let (decoded, says) = match self.compression {
            Compression::None => return Ok(()),
            Compression::Blosc => (blosc_size(body)?, "its blosc header declares"),
            Compression::Zstd => (zstd_bound(body)?, "its zstd frames declare"),
            Compression::Gzip => (
                gzip_size(body, self.decoded)?,
                "its gzip stream inflates to",
            ),
        };
        if decoded > self.decoded {
            let decoded = match self.compression {
                Compression::Gzip => "more than".to_string(),
                _ => format!("{decoded} bytes, more than"),
            };
            return Err(format!(
                "{says} {decoded} the {} bytes of its declared shape (a decompression bomb?)",
                self.decoded
            ));
        }
        Ok(())
    }

    /// Checks a whole shard: each inner chunk its index points to.
    pub(crate) fn check_shard(&self, shard: &[u8]) -> std::result::Result<(), String> {
        let Some((index_len, at_start)) = self.shard_index else {
            return self.check_chunk(shard);
        };
        let len = shard.len() as u64;
        if index_len > len {
            return Err(format!(
                "the shard holds {len} bytes, less than its {index_len}-byte index"
            ));
        }
        let index = if at_start {
            &shard[..index_len as usize]
        } else {
            &shard[(len - index_len) as usize..]
        };
        for entry in index.chunks_exact(16) {
            let word = |at: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&entry[at..at + 8]);
                u64::from_le_bytes(b)
            };
            let (offset, size) = (word(0), word(8));
            if offset == u64::MAX && size == u64::MAX {
                continue; // an empty inner chunk
            }
            match offset.checked_add(size).filter(|&end| end <= len) {
                Some(end) => self.check_chunk(&shard[offset as usize..end as usize])?,
                // zarrs reports an index pointing outside the shard itself.
                None => continue,
            }
        }
        Ok(())
    }
}

/// Storage adapter that checks an array's encoded chunks with its [`ChunkGuard`] before zarrs
/// decodes them.
pub(crate) struct GuardedStorage {
    inner: Arc<dyn ReadableStorageTraits>,
    guard: Arc<ChunkGuard>,
}

impl GuardedStorage {
    /// `inner`'s reads checked by `guard` (the caller's error names the store and element).
    pub(crate) fn new(inner: Arc<dyn ReadableStorageTraits>, guard: Arc<ChunkGuard>) -> Self {
        Self { inner, guard }
    }

    /// Checks one fetched range of `key`: a whole chunk or shard, an inner chunk, or (passed)
    /// a shard's index.
    fn check(&self, range: &ByteRange, bytes: &[u8]) -> std::result::Result<(), String> {
        match self.guard.shard_index {
            None => self.guard.check_chunk(bytes),
            Some(_) if matches!(range, ByteRange::FromStart(0, None)) => {
                self.guard.check_shard(bytes)
            }
            Some((index_len, _)) if bytes.len() as u64 == index_len => Ok(()),
            Some(_) => self.guard.check_chunk(bytes),
        }
    }
}

impl ReadableStorageTraits for GuardedStorage {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> std::result::Result<MaybeBytesIterator<'a>, StorageError> {
        let ranges: Vec<ByteRange> = byte_ranges.collect();
        let Some(values) = self
            .inner
            .get_partial_many(key, Box::new(ranges.clone().into_iter()))?
        else {
            return Ok(None);
        };
        let values: Vec<_> = values.collect();
        for (range, value) in ranges.iter().zip(&values) {
            // A failed read is reported by zarrs, as it is.
            let Ok(bytes) = value else { continue };
            self.check(range, bytes)
                .map_err(|reason| StorageError::Other(format!("chunk '{key}': {reason}")))?;
        }
        Ok(Some(Box::new(values.into_iter())))
    }

    fn size_key(&self, key: &StoreKey) -> std::result::Result<Option<u64>, StorageError> {
        self.inner.size_key(key)
    }

    fn supports_get_partial(&self) -> bool {
        self.inner.supports_get_partial()
    }
}

/// The decoded size a blosc (1.x) header declares.
fn blosc_size(body: &[u8]) -> std::result::Result<u64, String> {
    match body.get(4..8) {
        Some(n) => Ok(u64::from(u32::from_le_bytes([n[0], n[1], n[2], n[3]]))),
        None => Err(format!(
            "a blosc chunk of {} bytes is shorter than its header",
            body.len()
        )),
    }
}

/// zstd's largest block: a compressed block never decodes to more.
const ZSTD_BLOCK_MAX: u64 = 128 * 1024;

/// An upper bound of what a zstd stream decodes to: the content size its frames declare, or,
/// where a frame does not declare one, the sum over its blocks (raw and RLE blocks state their
/// size, a compressed block decodes to at most 128 KiB).
fn zstd_bound(mut body: &[u8]) -> std::result::Result<u64, String> {
    let bad = |what: &str| format!("not a valid zstd stream: {what}");
    let mut total = 0u64;
    while !body.is_empty() {
        let magic = le(body, 0, 4).ok_or_else(|| bad("truncated frame"))?;
        if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
            // A skippable frame: no output.
            let n = le(body, 4, 4).ok_or_else(|| bad("truncated skippable frame"))?;
            body = body.get(8 + n as usize..).unwrap_or(&[]);
            continue;
        }
        if magic != 0xFD2F_B528 {
            return Err(bad("bad magic number"));
        }
        let fhd = *body.get(4).ok_or_else(|| bad("truncated frame header"))?;
        let single_segment = fhd & 0x20 != 0;
        let checksum = fhd & 0x04 != 0;
        let dict_len = [0, 1, 2, 4][(fhd & 3) as usize];
        let fcs_len = match fhd >> 6 {
            0 if single_segment => 1,
            0 => 0,
            1 => 2,
            2 => 4,
            _ => 8,
        };
        let mut at = 5 + usize::from(!single_segment) + dict_len;
        let declared = (fcs_len > 0)
            .then(|| le(body, at, fcs_len).map(|v| if fcs_len == 2 { v + 256 } else { v }))
            .flatten();
        if fcs_len > 0 && declared.is_none() {
            return Err(bad("truncated frame header"));
        }
        at += fcs_len;
        // Walk the blocks: the frame's end, and a bound when no size is declared.
        let mut bound = 0u64;
        loop {
            let header = le(body, at, 3).ok_or_else(|| bad("truncated block"))?;
            let (last, kind, size) = (header & 1 == 1, (header >> 1) & 3, header >> 3);
            at += 3;
            let (stored, out) = match kind {
                0 => (size, size),           // raw
                1 => (1, size),              // RLE: one byte, repeated
                2 => (size, ZSTD_BLOCK_MAX), // compressed
                _ => return Err(bad("reserved block type")),
            };
            bound = bound.saturating_add(out);
            at = at.saturating_add(stored as usize);
            if last {
                break;
            }
        }
        at = at.saturating_add(if checksum { 4 } else { 0 });
        total = total.saturating_add(declared.unwrap_or(bound));
        body = body.get(at..).unwrap_or(&[]);
    }
    Ok(total)
}

/// A little-endian integer of `n` bytes at `at`.
fn le(bytes: &[u8], at: usize, n: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(n)?)?;
    Some(
        b.iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
    )
}

/// What a gzip stream inflates to, counted without keeping it, stopping one byte past `most`.
fn gzip_size(body: &[u8], most: u64) -> std::result::Result<u64, String> {
    let mut decoder = flate2::read::GzDecoder::new(body).take(most.saturating_add(1));
    // Corrupt streams are zarrs's to report (it names the codec); only the size matters here.
    std::io::copy(&mut decoder, &mut std::io::sink()).or(Ok(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limit_refuses_above_and_names_the_element() {
        let limit = ReadLimit::new(100);
        assert!(limit.check("s.zarr", "/X/data", "a chunk", 100).is_ok());
        let err = limit.check("s.zarr", "/X/data", "a chunk", 101).err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("s.zarr: element '/X/data': a chunk"),
            "{text}"
        );
        assert!(
            text.contains("101 bytes") && text.contains("100 bytes"),
            "{text}"
        );
        assert_eq!(bytes_of(u64::MAX, 2), u64::MAX);
    }

    #[test]
    fn guards_follow_v2_v3_and_sharded_codecs() {
        let v2 = ChunkGuard::from_document(&json!({"compressor": {"id": "zstd"}}), 8);
        assert_eq!(v2.compression, Compression::Zstd);
        let v3 = ChunkGuard::from_document(
            &json!({"codecs": [{"name": "bytes"}, {"name": "gzip"}, {"name": "crc32c"}]}),
            8,
        );
        assert_eq!((v3.compression, v3.trailer), (Compression::Gzip, 4));
        let sharded = ChunkGuard::from_document(
            &json!({
                "chunk_grid": {"configuration": {"chunk_shape": [100, 10]}},
                "codecs": [{"name": "sharding_indexed", "configuration": {
                    "chunk_shape": [10, 10],
                    "codecs": [{"name": "bytes"}, {"name": "blosc"}],
                    "index_codecs": [{"name": "bytes"}, {"name": "crc32c"}]}}]
            }),
            400,
        );
        assert_eq!(sharded.compression, Compression::Blosc);
        assert_eq!(sharded.shard_index, Some((10 * 16 + 4, false)));
        let plain = ChunkGuard::from_document(&json!({"compressor": null}), 8);
        assert!(!plain.is_active());
    }

    #[test]
    fn zstd_sizes_are_bounded_from_headers() {
        // A frame declaring 1 TiB of content in its header (single segment, 8-byte size).
        let mut frame = vec![0x28, 0xB5, 0x2F, 0xFD, 0xE0];
        frame.extend_from_slice(&(1u64 << 40).to_le_bytes());
        frame.extend_from_slice(&[0x01, 0x00, 0x00]); // last raw block of 0 bytes
        assert_eq!(zstd_bound(&frame), Ok(1 << 40));
        // No declared size: one RLE block of 1000 bytes.
        let rle = [0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x58, 0x43, 0x1F, 0x00, 0x07];
        assert_eq!(zstd_bound(&rle), Ok(1000));
        assert!(zstd_bound(b"not zstd").is_err());
    }

    #[test]
    fn byte_ranges_outside_the_value_are_refused_without_overflow() {
        assert_eq!(range_within(&ByteRange::Suffix(20), 0), None);
        assert_eq!(range_within(&ByteRange::Suffix(20), 100), Some((80, 100)));
        assert_eq!(
            range_within(&ByteRange::FromStart(u64::MAX, Some(2)), 10),
            None
        );
        assert_eq!(range_within(&ByteRange::FromStart(11, None), 10), None);
        assert_eq!(
            range_within(&ByteRange::FromStart(2, Some(3)), 10),
            Some((2, 5))
        );
        assert_eq!(describe_range(&ByteRange::Suffix(20)), "the last 20 bytes");
    }
}
