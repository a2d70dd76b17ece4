//! The values of an open array not yet stored: Arrow blocks turned into the bytes zarrs encodes
//! (little-endian fixed-size elements, or UTF-8 bytes with element offsets for strings).

use annql_store::DType;
use annql_store::arrow::array::{Array, ArrayRef, AsArray};
use annql_store::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use zarrs::array::{ArrayBytes, ArrayBytesOffsets};

// The `bytes` codec and the v2 dtypes are declared little-endian; Arrow buffers are native.
#[cfg(target_endian = "big")]
compile_error!("annql's zarr writer copies native buffers as little-endian values");

/// Buffered elements of one array, in row-major order.
#[derive(Debug)]
pub(super) enum Values {
    /// Fixed-size elements, `width` bytes each (bools as one byte 0/1).
    Fixed { bytes: Vec<u8>, width: usize },
    /// Strings: concatenated UTF-8 and `len + 1` offsets into it.
    Strings { bytes: Vec<u8>, offsets: Vec<usize> },
}

impl Values {
    /// An empty buffer for elements of `dtype` (`None` for a type annql does not write).
    pub fn new(dtype: &DType) -> Option<Values> {
        let width = match dtype {
            DType::Bool | DType::Int8 | DType::UInt8 => 1,
            DType::Int16 | DType::UInt16 => 2,
            DType::Int32 | DType::UInt32 | DType::Float32 => 4,
            DType::Int64 | DType::UInt64 | DType::Float64 => 8,
            DType::String => {
                return Some(Values::Strings {
                    bytes: Vec::new(),
                    offsets: vec![0],
                });
            }
            DType::Other(_) => return None,
        };
        Some(Values::Fixed {
            bytes: Vec::new(),
            width,
        })
    }

    /// Number of elements buffered.
    pub fn len(&self) -> usize {
        match self {
            Values::Fixed { bytes, width } => bytes.len() / width,
            Values::Strings { offsets, .. } => offsets.len() - 1,
        }
    }

    /// Appends the values of `block`, which must be of `dtype`'s Arrow type and hold no nulls
    /// (the subset stage writes nulls as masks or codes); the error says what was wrong.
    pub fn push(&mut self, dtype: &DType, block: &ArrayRef) -> Result<(), String> {
        if block.null_count() > 0 {
            return Err(format!(
                "{} null values in a block (arrays are written without nulls)",
                block.null_count()
            ));
        }
        let mismatch = || format!("a block of {} for an array of {dtype:?}", block.data_type());
        macro_rules! prim {
            ($t:ty) => {{
                let a = block.as_primitive_opt::<$t>().ok_or_else(mismatch)?;
                self.extend_fixed(a.values().inner().as_slice())
            }};
        }
        match (dtype, block.data_type()) {
            (DType::Bool, DataType::Boolean) => {
                let a = block.as_boolean();
                let Values::Fixed { bytes, .. } = self else {
                    return Err(mismatch());
                };
                bytes.extend(a.values().iter().map(u8::from));
                Ok(())
            }
            (DType::Int8, _) => prim!(Int8Type),
            (DType::Int16, _) => prim!(Int16Type),
            (DType::Int32, _) => prim!(Int32Type),
            (DType::Int64, _) => prim!(Int64Type),
            (DType::UInt8, _) => prim!(UInt8Type),
            (DType::UInt16, _) => prim!(UInt16Type),
            (DType::UInt32, _) => prim!(UInt32Type),
            (DType::UInt64, _) => prim!(UInt64Type),
            (DType::Float32, _) => prim!(Float32Type),
            (DType::Float64, _) => prim!(Float64Type),
            (DType::String, DataType::Utf8) => self.extend_strings(block.as_string::<i32>().iter()),
            (DType::String, DataType::LargeUtf8) => {
                self.extend_strings(block.as_string::<i64>().iter())
            }
            (DType::String, DataType::Utf8View) => {
                self.extend_strings(block.as_string_view().iter())
            }
            _ => Err(mismatch()),
        }
    }

    fn extend_fixed(&mut self, values: &[u8]) -> Result<(), String> {
        match self {
            Values::Fixed { bytes, .. } => {
                bytes.extend_from_slice(values);
                Ok(())
            }
            Values::Strings { .. } => Err("a numeric block for a string array".into()),
        }
    }

    fn extend_strings<'a>(
        &mut self,
        values: impl Iterator<Item = Option<&'a str>>,
    ) -> Result<(), String> {
        let Values::Strings { bytes, offsets } = self else {
            return Err("a string block for a numeric array".into());
        };
        for value in values {
            // Nulls were refused above: `None` cannot occur, and would be an empty string.
            bytes.extend_from_slice(value.unwrap_or_default().as_bytes());
            offsets.push(bytes.len());
        }
        Ok(())
    }

    /// Appends `n` fill values (zero, false, the empty string): the padding of a last chunk.
    pub fn pad(&mut self, n: usize) {
        match self {
            Values::Fixed { bytes, width } => bytes.resize(bytes.len() + n * *width, 0),
            Values::Strings { bytes, offsets } => {
                offsets.extend(std::iter::repeat_n(bytes.len(), n))
            }
        }
    }

    /// Moves the buffered elements out as zarrs array bytes, leaving the buffer empty.
    pub fn take(&mut self) -> Result<ArrayBytes<'static>, String> {
        match self {
            Values::Fixed { bytes, .. } => Ok(ArrayBytes::new_flen(std::mem::take(bytes))),
            Values::Strings { bytes, offsets } => {
                let offsets = std::mem::replace(offsets, vec![0]);
                let bytes = std::mem::take(bytes);
                let offsets = ArrayBytesOffsets::new(offsets).map_err(|e| e.to_string())?;
                ArrayBytes::new_vlen(bytes, offsets).map_err(|e| e.to_string())
            }
        }
    }
}
