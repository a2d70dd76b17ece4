//! The LZF filter (HDF5 filter id 32000, h5py's `compression="lzf"`): anndata 0.7 wrote sparse
//! matrices with it. Not in hdf5-reader's built-in set, so annql decodes it here.

use hdf5_reader::messages::filter_pipeline::FilterDescription;

/// The filter id h5py registers LZF under.
pub(crate) const FILTER_LZF: u16 = 32000;

/// Largest chunk LZF may inflate to when the filter parameters do not say (h5py always does).
const MAX_OUTPUT: usize = 1 << 31;

/// The filter function hdf5-reader calls: h5py stores the chunk's decoded size as the third
/// client value, which bounds the output.
pub(crate) fn lzf_filter(
    filter: &FilterDescription,
    data: &[u8],
    _element_size: usize,
) -> hdf5_reader::error::Result<Vec<u8>> {
    let limit = filter
        .client_data
        .get(2)
        .map(|&n| n as usize)
        .filter(|&n| n > 0)
        .unwrap_or(MAX_OUTPUT);
    decompress(data, limit).map_err(|e| hdf5_reader::error::Error::Other(format!("lzf: {e}")))
}

/// Decodes one LZF stream (liblzf's format: literal runs and back references, no header).
pub(crate) fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, &'static str> {
    let mut out: Vec<u8> = Vec::with_capacity(limit.min(input.len().saturating_mul(4)));
    let mut i = 0;
    while i < input.len() {
        let ctrl = usize::from(input[i]);
        i += 1;
        if ctrl < 32 {
            let len = ctrl + 1;
            let literal = input.get(i..i + len).ok_or("literal run past the end")?;
            if out.len() + len > limit {
                return Err("output larger than the chunk");
            }
            out.extend_from_slice(literal);
            i += len;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += usize::from(*input.get(i).ok_or("truncated back reference")?);
                i += 1;
            }
            len += 2;
            let low = usize::from(*input.get(i).ok_or("truncated back reference")?);
            i += 1;
            let back = ((ctrl & 0x1f) << 8) + low + 1;
            if back > out.len() {
                return Err("back reference before the start");
            }
            if out.len() + len > limit {
                return Err("output larger than the chunk");
            }
            // Overlapping copies repeat bytes, so copy one at a time.
            let start = out.len() - back;
            for k in 0..len {
                let b = out[start + k];
                out.push(b);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_overlapping_back_references() {
        // "abc" literal, then a back reference of length 6 at distance 3: "abcabcabc".
        let stream = [2, b'a', b'b', b'c', (4 << 5), 2];
        assert_eq!(decompress(&stream, 100).ok(), Some(b"abcabcabc".to_vec()));
        // Long match (len field 7 + extra byte).
        let stream = [0, b'x', (7 << 5), 3, 0];
        assert_eq!(decompress(&stream, 100).ok(), Some(vec![b'x'; 13]));
    }

    #[test]
    fn corrupt_streams_are_errors() {
        assert!(decompress(&[5, b'a'], 100).is_err());
        assert!(decompress(&[(1 << 5), 9], 100).is_err());
        assert!(decompress(&[0, b'a', (7 << 5)], 100).is_err());
        assert!(decompress(&[2, b'a', b'b', b'c'], 2).is_err());
    }
}
