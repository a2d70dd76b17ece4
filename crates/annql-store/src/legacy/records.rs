//! numpy structured dtypes as zarr v2 writes them (`[["index", "|S18"], ["X_pca", "<f4", [50]]]`),
//! and how one field's bytes in a record become values: numbers as stored, fixed-length strings
//! decoded as numpy decodes them when anndata turns them into `str`.

use serde_json::{Value, json};

use crate::metadata::DType;

/// The element type of one field (or of a plain fixed-size array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A number or boolean, with its numpy typestr (`<f4`, `|b1`, `>i8`).
    Number {
        /// The typestr, byte order included: zarrs swaps bytes where needed.
        typestr: String,
        /// What annql reads it as.
        dtype: DType,
        /// Bytes per value.
        size: usize,
    },
    /// `S<n>`: bytes, NUL-padded at the end.
    Bytes(usize),
    /// `U<n>`: UTF-32 code units, NUL-padded at the end.
    Utf32 {
        /// Characters per value.
        chars: usize,
        /// Byte order of the code units.
        big_endian: bool,
    },
}

impl Kind {
    /// Bytes per value.
    pub(crate) fn size(&self) -> usize {
        match self {
            Kind::Number { size, .. } => *size,
            Kind::Bytes(n) => *n,
            Kind::Utf32 { chars, .. } => 4 * chars,
        }
    }

    /// Whether the values are strings.
    pub(crate) fn is_string(&self) -> bool {
        !matches!(self, Kind::Number { .. })
    }

    /// The zarr v2 `dtype`, `fill_value` and `filters` of an array of these values as annql
    /// presents it: numbers as stored, strings as vlen-utf8.
    pub(crate) fn zarr_dtype(&self) -> (Value, Value, Value) {
        match self {
            Kind::Number { typestr, dtype, .. } => {
                let fill = match dtype {
                    DType::Bool => json!(false),
                    DType::Float32 | DType::Float64 => json!(0.0),
                    _ => json!(0),
                };
                (json!(typestr), fill, Value::Null)
            }
            Kind::Bytes(_) | Kind::Utf32 { .. } => {
                (json!("|O"), json!(""), json!([{"id": "vlen-utf8"}]))
            }
        }
    }

    /// The annql type of an array of these values.
    pub(crate) fn dtype(&self) -> DType {
        match self {
            Kind::Number { dtype, .. } => dtype.clone(),
            Kind::Bytes(_) | Kind::Utf32 { .. } => DType::String,
        }
    }
}

/// Largest record annql reads (and so longest fixed-length string), in bytes.
const MAX_RECORD: usize = 1 << 24;

/// Parses a scalar numpy typestr: booleans, integers, floats, `S<n>` and `U<n>`.
pub(crate) fn parse_typestr(typestr: &str) -> Result<Kind, String> {
    let unsupported = || format!("numpy type '{typestr}' is not one annql reads");
    let (order, rest) = match typestr.chars().next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, &typestr[1..]),
        _ => ('|', typestr),
    };
    let code = rest.chars().next().ok_or_else(unsupported)?;
    let n: usize = rest[code.len_utf8()..].parse().map_err(|_| unsupported())?;
    let number = |dtype: DType| Kind::Number {
        typestr: typestr.to_string(),
        dtype,
        size: n,
    };
    Ok(match (code, n) {
        ('b', 1) => number(DType::Bool),
        ('i', 1) => number(DType::Int8),
        ('i', 2) => number(DType::Int16),
        ('i', 4) => number(DType::Int32),
        ('i', 8) => number(DType::Int64),
        ('u', 1) => number(DType::UInt8),
        ('u', 2) => number(DType::UInt16),
        ('u', 4) => number(DType::UInt32),
        ('u', 8) => number(DType::UInt64),
        ('f', 4) => number(DType::Float32),
        ('f', 8) => number(DType::Float64),
        // A string longer than the largest record cannot be one of its fields.
        ('S', n) if n > 0 && n <= MAX_RECORD => Kind::Bytes(n),
        ('U', n) if n > 0 && n <= MAX_RECORD / 4 => Kind::Utf32 {
            chars: n,
            big_endian: order == '>',
        },
        _ => return Err(unsupported()),
    })
}

/// One named field of a structured dtype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    /// The field name.
    pub name: String,
    /// Byte offset in the record.
    pub offset: usize,
    /// Element type.
    pub kind: Kind,
    /// Sub-array shape (`[50]` for `["X_pca", "<f4", [50]]`), empty for scalars.
    pub shape: Vec<u64>,
}

impl Field {
    /// Bytes the field takes in a record; `None` when the declared sub-array shape overflows.
    pub(crate) fn size(&self) -> Option<usize> {
        let count = self.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d))?;
        self.kind.size().checked_mul(usize::try_from(count).ok()?)
    }
}

/// The fields of a zarr v2 structured dtype and the record size. numpy packs fields in order;
/// unnamed fields are padding (numpy's aligned layouts).
pub(crate) fn parse_record(dtype: &Value) -> Result<(Vec<Field>, usize), String> {
    let list = dtype
        .as_array()
        .ok_or_else(|| format!("dtype {dtype} is not a structured dtype"))?;
    let mut fields = Vec::new();
    let mut offset = 0usize;
    for item in list {
        let parts = item.as_array().map(Vec::as_slice).unwrap_or_default();
        let (name, typestr, shape) = match parts {
            [Value::String(n), Value::String(t)] => (n, t, Vec::new()),
            [Value::String(n), Value::String(t), Value::Array(s)] => {
                let shape: Option<Vec<u64>> = s.iter().map(Value::as_u64).collect();
                let shape = shape.ok_or_else(|| format!("field {item}: bad sub-array shape"))?;
                (n, t, shape)
            }
            _ => {
                return Err(format!(
                    "field {item} is not [name, type] or [name, type, shape]"
                ));
            }
        };
        if let Some(pad) = typestr.strip_prefix("|V").filter(|_| name.is_empty()) {
            let pad: usize = pad
                .parse()
                .map_err(|_| format!("padding field {item}: bad size"))?;
            offset = offset
                .checked_add(pad)
                .ok_or_else(|| format!("padding field {item}: bad size"))?;
            continue;
        }
        let kind = parse_typestr(typestr).map_err(|e| format!("field '{name}': {e}"))?;
        let field = Field {
            name: name.clone(),
            offset,
            kind,
            shape,
        };
        offset = field
            .size()
            .and_then(|size| offset.checked_add(size))
            .filter(|&o| o <= MAX_RECORD)
            .ok_or_else(|| format!("field '{name}': records too large"))?;
        if !name.is_empty() {
            fields.push(field);
        }
    }
    if fields.is_empty() {
        return Err("structured dtype without named fields".into());
    }
    Ok((fields, offset))
}

/// Decodes one fixed-length string value as numpy does when anndata turns it into `str`: trailing
/// NULs dropped; `S` bytes must be ASCII (numpy's `astype(str)` refuses anything else, and so
/// anndata cannot read such a file).
pub(crate) fn decode_string(bytes: &[u8], kind: &Kind) -> Result<String, String> {
    match kind {
        Kind::Bytes(_) => {
            let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            let text = &bytes[..end];
            if let Some(b) = text.iter().find(|b| !b.is_ascii()) {
                return Err(format!(
                    "byte 0x{b:02x} in a fixed-length byte string is not ASCII (numpy, and so \
                     anndata, cannot decode it either)"
                ));
            }
            Ok(String::from_utf8_lossy(text).into_owned())
        }
        Kind::Utf32 { big_endian, .. } => {
            let units: Vec<u32> = bytes
                .chunks_exact(4)
                .map(|c| {
                    let c = [c[0], c[1], c[2], c[3]];
                    if *big_endian {
                        u32::from_be_bytes(c)
                    } else {
                        u32::from_le_bytes(c)
                    }
                })
                .collect();
            let end = units.iter().rposition(|&u| u != 0).map_or(0, |p| p + 1);
            units[..end]
                .iter()
                .map(|&u| {
                    char::from_u32(u).ok_or_else(|| format!("0x{u:x} is not a unicode character"))
                })
                .collect()
        }
        Kind::Number { .. } => Err("not a string field".into()),
    }
}

/// Decodes one number (of a `Number` kind) as f64, for checks made at open (categorical codes).
pub(crate) fn decode_number(bytes: &[u8], kind: &Kind) -> Option<f64> {
    let Kind::Number { typestr, dtype, .. } = kind else {
        return None;
    };
    let big = typestr.starts_with('>');
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[..n].copy_from_slice(&bytes[..n]);
    if big {
        buf[..n].reverse();
    }
    let raw = u64::from_le_bytes(buf);
    let signed = |bits: u32| {
        let shift = 64 - bits;
        (((raw << shift) as i64) >> shift) as f64
    };
    Some(match dtype {
        DType::Bool => (raw != 0) as u8 as f64,
        DType::Int8 => signed(8),
        DType::Int16 => signed(16),
        DType::Int32 => signed(32),
        DType::Int64 => signed(64),
        DType::UInt8 | DType::UInt16 | DType::UInt32 | DType::UInt64 => raw as f64,
        DType::Float32 => f64::from(f32::from_bits(raw as u32)),
        DType::Float64 => f64::from_bits(raw),
        DType::String | DType::Other(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_dtypes_parse_with_offsets() -> Result<(), String> {
        let (fields, size) = parse_record(&json!([
            ["index", "|S18"],
            ["n", "<i8"],
            ["", "|V2"],
            ["X_pca", "<f4", [50]],
            ["name", ">U3"]
        ]))?;
        assert_eq!(size, 18 + 8 + 2 + 200 + 12);
        let offsets: Vec<usize> = fields.iter().map(|f| f.offset).collect();
        assert_eq!(offsets, vec![0, 18, 28, 228]);
        assert_eq!(fields[2].shape, vec![50]);
        assert!(parse_record(&json!("<f4")).is_err());
        assert!(parse_record(&json!([["a", "<c8"]])).is_err());
        Ok(())
    }

    /// Dtypes a hostile store can declare are errors, never a panic or an overflow.
    #[test]
    fn hostile_dtypes_are_refused() {
        assert!(parse_typestr("<\u{e9}4").is_err());
        assert!(parse_typestr("|S").is_err());
        assert!(parse_typestr("<U4611686018427387904").is_err());
        assert!(parse_typestr("|S16777217").is_err());
        let huge = json!([["a", "<f8", [4294967296u64, 4294967296u64]]]);
        assert!(parse_record(&huge).is_err());
        let wide = json!([["a", "<f8", [1u64 << 40]]]);
        assert!(parse_record(&wide).is_err());
    }

    #[test]
    fn strings_decode_like_numpy() {
        let kind = Kind::Bytes(5);
        assert_eq!(decode_string(b"a\0b\0\0", &kind).ok(), Some("a\0b".into()));
        assert!(decode_string(b"\xc3\xa9\0\0\0", &kind).is_err());
        let utf32 = Kind::Utf32 {
            chars: 2,
            big_endian: false,
        };
        assert_eq!(
            decode_string(&[0xe9, 0, 0, 0, 0, 0, 0, 0], &utf32).ok(),
            Some("é".into())
        );
        let i1 = parse_typestr("|i1").ok();
        assert_eq!(i1.and_then(|k| decode_number(&[0xff], &k)), Some(-1.0));
        let be = parse_typestr(">u2").ok();
        assert_eq!(be.and_then(|k| decode_number(&[1, 0], &k)), Some(256.0));
    }
}
