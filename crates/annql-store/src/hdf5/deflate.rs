//! HDF5's deflate filter (id 1, h5py's `compression="gzip"`), decoded here so that every chunk's
//! zlib stream is read to its end and its Adler-32 checked.
//!
//! hdf5-reader's built-in decoder stops as soon as the chunk's expected size has been produced,
//! before the checksum that ends the stream: a chunk whose checksum (or whose last deflate
//! bytes) were damaged then decodes as if nothing were wrong. This decoder is registered over it
//! in every [`FilterRegistry`](hdf5_reader::FilterRegistry) annql uses.

use flate2::{Decompress, FlushDecompress, Status};
use hdf5_reader::error::Error as H5Error;
use hdf5_reader::filters::{FILTER_DEFLATE, FILTER_FLETCHER32, FILTER_SHUFFLE};
use hdf5_reader::messages::filter_pipeline::FilterDescription;

/// How much larger than its input a deflate stream can decode to (zlib's 1032:1 ratio).
const MAX_RATIO: usize = 1032;

/// Decodes one zlib stream to its end, checking its Adler-32, into at most `limit` bytes (and
/// never more than the stream could hold).
pub(crate) fn inflate(data: &[u8], limit: usize) -> hdf5_reader::error::Result<Vec<u8>> {
    let fail = |what: String| H5Error::DecompressionError(format!("deflate: {what}"));
    let cap = limit.min(data.len().saturating_mul(MAX_RATIO).saturating_add(64));
    // One byte of room past `cap`: a stream that fills exactly `cap` can still reach its end
    // and its checksum, and one that needs more is caught.
    let mut out = Vec::new();
    out.try_reserve_exact(cap.saturating_add(1))
        .map_err(|_| fail(format!("cannot allocate {cap} output bytes")))?;
    let mut decoder = Decompress::new(true);
    loop {
        let (read, written) = (decoder.total_in(), decoder.total_out());
        let rest = usize::try_from(read)
            .ok()
            .and_then(|r| data.get(r..))
            .ok_or_else(|| fail("the decoder read past its input".into()))?;
        let status = decoder
            .decompress_vec(rest, &mut out, FlushDecompress::Finish)
            .map_err(|e| {
                fail(format!(
                    "the zlib stream is corrupt (bad deflate data or Adler-32 checksum): {e}"
                ))
            })?;
        if out.len() > cap {
            return Err(fail(format!("the stream decodes to more than {cap} bytes")));
        }
        if status == Status::StreamEnd {
            return Ok(out);
        }
        if (decoder.total_in(), decoder.total_out()) == (read, written) {
            return Err(fail(
                "the zlib stream ends before its end marker and checksum".into(),
            ));
        }
    }
}

/// The largest output the deflate filters of `filters` (a dataset's pipeline, in write order)
/// can produce for a chunk of `chunk_bytes`: what the filters applied before each one can grow
/// the chunk to. `None` when a filter before one is not bounded here (the stream's own size then
/// bounds its output).
pub(crate) fn output_limit(filters: &[FilterDescription], chunk_bytes: usize) -> Option<usize> {
    let mut limit = 0;
    for (i, filter) in filters.iter().enumerate() {
        if filter.id != FILTER_DEFLATE {
            continue;
        }
        let before = filters[..i]
            .iter()
            .try_fold(chunk_bytes, |n, earlier| grown(earlier.id, n))?;
        limit = limit.max(before);
    }
    Some(limit)
}

/// How large filter `id` can make `n` bytes when writing, where known.
fn grown(id: u16, n: usize) -> Option<usize> {
    Some(match id {
        // zlib's compressBound.
        FILTER_DEFLATE => n
            .saturating_add(n >> 12)
            .saturating_add(n >> 14)
            .saturating_add(n >> 25)
            .saturating_add(13),
        FILTER_FLETCHER32 => n.saturating_add(4),
        FILTER_SHUFFLE => n,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::ZlibEncoder;
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut encoder = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap_or_else(|e| panic!("{e}"));
        encoder.finish().unwrap_or_else(|e| panic!("{e}"))
    }

    /// A stream that decodes to exactly the limit is read to its checksum: a damaged checksum,
    /// a cut stream and a stream longer than the limit are errors.
    #[test]
    fn streams_are_read_to_their_checksum() {
        let raw: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let stream = zlib(&raw);
        assert_eq!(inflate(&stream, raw.len()).ok(), Some(raw.clone()));
        let mut bad = stream.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(inflate(&bad, raw.len()).is_err());
        assert!(inflate(&stream[..stream.len() - 4], raw.len()).is_err());
        assert!(inflate(&stream, raw.len() - 1).is_err());
    }

    #[test]
    fn limits_follow_the_filters_written_before_deflate() {
        let f = |id| FilterDescription {
            id,
            name: None,
            client_data: Vec::new(),
        };
        let shuffle_gzip = [f(FILTER_SHUFFLE), f(FILTER_DEFLATE), f(FILTER_FLETCHER32)];
        assert_eq!(output_limit(&shuffle_gzip, 256), Some(256));
        assert_eq!(output_limit(&[f(FILTER_FLETCHER32)], 256), Some(0));
        assert_eq!(output_limit(&[f(32000), f(FILTER_DEFLATE)], 256), None);
    }
}
