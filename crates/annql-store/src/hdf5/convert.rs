//! HDF5 types and attributes in zarr v2 terms: the `dtype` a dataset is presented with, how its
//! stored elements become zarr chunk bytes, and attributes as the JSON a `.zattrs` holds.

use std::collections::HashMap;

use hdf5_reader::Attribute;
use hdf5_reader::error::ByteOrder;
use hdf5_reader::messages::datatype::{
    Datatype, EnumMember, ReferenceType, StringPadding, StringSize, VarLenKind,
};
use serde_json::{Number, Value, json};

/// How a dataset's stored elements turn into zarr chunk bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Values {
    /// Fixed-size numbers (and h5py's enum booleans): the stored bytes are the zarr bytes.
    Plain,
    /// Variable-length strings: global-heap references, resolved and re-encoded as vlen-utf8.
    VlenString,
    /// Fixed-length strings of `len` bytes, trimmed per `padding`, re-encoded as vlen-utf8.
    FixedString {
        /// Bytes per element.
        len: usize,
        /// How the stored value is padded.
        padding: StringPadding,
    },
    /// A compound of fixed-size members (h5py's numpy structured arrays): each element's members
    /// copied, in order, into numpy's packed record layout, `(offset, length)` per member. The
    /// store's legacy reading cuts fields out of these records (see `crate::legacy`).
    Record(Vec<(usize, usize)>),
    /// Anything else (references, opaque, compounds of other members): listed with its type,
    /// not readable.
    Unreadable,
}

/// The zarr v2 `dtype`, `fill_value` and `filters` of a dataset, and how its values convert.
pub(crate) fn zarr_dtype(dt: &Datatype) -> (Value, Value, Value, Values) {
    let plain = |typestr: String, fill: Value| (json!(typestr), fill, Value::Null, Values::Plain);
    match dt {
        Datatype::FixedPoint {
            size,
            signed,
            byte_order,
        } if matches!(size, 1 | 2 | 4 | 8) => {
            let kind = if *signed { 'i' } else { 'u' };
            plain(
                format!("{}{kind}{size}", order_char(*size, *byte_order)),
                json!(0),
            )
        }
        Datatype::FloatingPoint { size, byte_order } if matches!(size, 2 | 4 | 8) => plain(
            format!("{}f{size}", order_char(*size, *byte_order)),
            json!(0.0),
        ),
        Datatype::Enum { base, members } if is_bool_enum(base, members) => {
            plain("|b1".into(), json!(false))
        }
        Datatype::Enum { base, .. } => zarr_dtype(base),
        Datatype::String {
            size: StringSize::Variable,
            ..
        }
        | Datatype::VarLen {
            kind: VarLenKind::String,
            ..
        } => string(Values::VlenString),
        Datatype::String {
            size: StringSize::Fixed(len),
            padding,
            ..
        } if *len > 0 => string(Values::FixedString {
            len: *len as usize,
            padding: *padding,
        }),
        Datatype::Compound { fields, size } => {
            // The shape of a numpy structured dtype, so the element tree sees a rec-array.
            let members: Option<Vec<(Value, (usize, usize))>> = fields
                .iter()
                .map(|f| {
                    let (typestr, len) = member_typestr(&f.datatype)?;
                    let offset = f.byte_offset as usize;
                    (offset + len <= *size as usize).then(|| {
                        let mut field = vec![json!(f.name)];
                        field.extend(typestr);
                        (Value::Array(field), (offset, len))
                    })
                })
                .collect();
            match members {
                Some(members) => {
                    let (dtype, layout): (Vec<Value>, Vec<(usize, usize)>) =
                        members.into_iter().unzip();
                    (
                        Value::Array(dtype),
                        Value::Null,
                        Value::Null,
                        Values::Record(layout),
                    )
                }
                None => {
                    let fields: Vec<Value> = fields
                        .iter()
                        .map(|f| json!([f.name, zarr_dtype(&f.datatype).0]))
                        .collect();
                    (
                        Value::Array(fields),
                        Value::Null,
                        Value::Null,
                        Values::Unreadable,
                    )
                }
            }
        }
        other => (
            json!(format!("hdf5:{}", type_name(other))),
            Value::Null,
            Value::Null,
            Values::Unreadable,
        ),
    }
}

/// A compound member as numpy describes a structured field (`["<f4"]`, `["|S16"]`, `["<f8",
/// [50]]` for a sub-array) and its size in bytes; `None` for members that are not fixed-size
/// numbers, booleans or byte strings.
fn member_typestr(dt: &Datatype) -> Option<(Vec<Value>, usize)> {
    match dt {
        Datatype::String {
            size: StringSize::Fixed(len),
            ..
        } if *len > 0 => Some((vec![json!(format!("|S{len}"))], *len as usize)),
        Datatype::Array { base, dims } => {
            let (typestr, len) = member_typestr(base)?;
            let [typestr] = &typestr[..] else {
                return None;
            };
            let n = dims
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))?;
            Some((vec![typestr.clone(), json!(dims)], len.checked_mul(n)?))
        }
        Datatype::FixedPoint { size, .. } | Datatype::FloatingPoint { size, .. } => {
            let (typestr, _, _, values) = zarr_dtype(dt);
            (values == Values::Plain).then(|| (vec![typestr], usize::from(*size)))
        }
        Datatype::Enum { base, .. } => {
            let (typestr, _, _, values) = zarr_dtype(dt);
            let size = match base.as_ref() {
                Datatype::FixedPoint { size, .. } => usize::from(*size),
                _ => return None,
            };
            (values == Values::Plain).then(|| (vec![typestr], size))
        }
        _ => None,
    }
}

fn string(values: Values) -> (Value, Value, Value, Values) {
    (json!("|O"), json!(""), json!([{"id": "vlen-utf8"}]), values)
}

fn order_char(size: u8, order: ByteOrder) -> char {
    match (size, order) {
        (1, _) => '|',
        (_, ByteOrder::LittleEndian) => '<',
        (_, ByteOrder::BigEndian) => '>',
    }
}

/// h5py stores numpy booleans as an enum of int8 with members FALSE = 0 and TRUE = 1.
fn is_bool_enum(base: &Datatype, members: &[EnumMember]) -> bool {
    let names = |n: &str| members.iter().any(|m| m.name.eq_ignore_ascii_case(n));
    matches!(base, Datatype::FixedPoint { size: 1, .. })
        && members.len() == 2
        && names("FALSE")
        && names("TRUE")
}

/// A short name for a type annql cannot read, as shown in "not supported" errors.
pub(crate) fn type_name(dt: &Datatype) -> String {
    match dt {
        Datatype::FixedPoint { size, signed, .. } => {
            format!(
                "{}int{}",
                if *signed { "" } else { "u" },
                u32::from(*size) * 8
            )
        }
        Datatype::FloatingPoint { size, .. } => format!("float{}", u32::from(*size) * 8),
        Datatype::String { .. } => "string".into(),
        Datatype::Compound { .. } => "compound".into(),
        Datatype::Array { .. } => "array-type".into(),
        Datatype::Enum { .. } => "enum".into(),
        Datatype::VarLen { .. } => "vlen-sequence".into(),
        Datatype::Opaque { .. } => "opaque".into(),
        Datatype::Reference {
            ref_type: ReferenceType::Object,
            ..
        } => "object-reference".into(),
        Datatype::Reference { .. } => "region-reference".into(),
        Datatype::Bitfield { .. } => "bitfield".into(),
    }
}

/// Decodes one fixed-length string element the way h5py does (bytes up to the padding).
pub(crate) fn fixed_string(bytes: &[u8], padding: StringPadding) -> String {
    let end = match padding {
        StringPadding::NullTerminate | StringPadding::NullPad => {
            bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())
        }
        StringPadding::SpacePad => bytes
            .iter()
            .rposition(|&b| b != b' ' && b != 0)
            .map_or(0, |p| p + 1),
    };
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Appends `strings` in numcodecs' vlen-utf8 layout (count, then length-prefixed values), the
/// chunk encoding zarrs decodes for a v2 `|O` array with the `vlen-utf8` filter.
pub(crate) fn vlen_utf8<S: AsRef<str>>(strings: &[S]) -> Result<Vec<u8>, String> {
    let len32 = |n: usize| u32::try_from(n).map_err(|_| format!("{n} is too long for vlen-utf8"));
    let total: usize = strings.iter().map(|s| s.as_ref().len() + 4).sum();
    let mut out = Vec::with_capacity(total + 4);
    out.extend_from_slice(&len32(strings.len())?.to_le_bytes());
    for s in strings {
        let s = s.as_ref().as_bytes();
        out.extend_from_slice(&len32(s.len())?.to_le_bytes());
        out.extend_from_slice(s);
    }
    Ok(out)
}

/// An attribute as JSON: strings, numbers, booleans (h5py's enum), object references (as the
/// absolute path of the object, which is how anndata 0.7 pointed categoricals at their
/// categories), scalars as values and arrays as (nested) lists. `None` for types JSON cannot
/// hold (compound, opaque, floats of other widths), which are left out of `.zattrs`; an attribute
/// whose values cannot be read (damaged, truncated) is an error, never a missing attribute.
pub(crate) fn attribute_json(
    attr: &Attribute,
    objects: &HashMap<u64, String>,
    offset_size: u8,
) -> hdf5_reader::error::Result<Option<Value>> {
    let raw = &attr.raw_data;
    let n = usize::try_from(attr.num_elements()?).map_err(|_| {
        hdf5_reader::error::Error::InvalidData(format!("attribute '{}' is too large", attr.name))
    })?;
    let fixed = |size: u8, f: &dyn Fn(&[u8]) -> Option<Value>| {
        numbers(raw, n, usize::from(size), f).map_err(|reason| {
            hdf5_reader::error::Error::InvalidData(format!("attribute '{}': {reason}", attr.name))
        })
    };
    let values: Option<Vec<Value>> = match &attr.datatype {
        Datatype::String { .. } | Datatype::VarLen { .. } => Some(
            attr.read_strings()?
                .into_iter()
                .map(Value::String)
                .collect(),
        ),
        // JSON numbers hold integers of up to 8 bytes; wider ones are left out.
        Datatype::FixedPoint {
            size,
            signed,
            byte_order,
        } if matches!(size, 1 | 2 | 4 | 8) => fixed(*size, &|b| int_json(b, *signed, *byte_order))?,
        Datatype::FloatingPoint { size, byte_order } => {
            fixed(*size, &|b| float_json(b, *byte_order))?
        }
        Datatype::Enum { base, members } if is_bool_enum(base, members) => {
            fixed(1, &|b| Some(Value::Bool(b[0] != 0)))?
        }
        Datatype::Enum { base, .. } => match base.as_ref() {
            Datatype::FixedPoint {
                size,
                signed,
                byte_order,
            } if matches!(size, 1 | 2 | 4 | 8) => {
                fixed(*size, &|b| int_json(b, *signed, *byte_order))?
            }
            _ => None,
        },
        Datatype::Reference {
            ref_type: ReferenceType::Object,
            ..
        } => Some(
            hdf5_reader::reference::read_object_references(raw, offset_size)?
                .into_iter()
                .map(|addr| objects.get(&addr).map_or(Value::Null, |p| json!(p)))
                .collect(),
        ),
        _ => None,
    };
    Ok(values.map(|values| shape_values(values, &attr.shape)))
}

/// `n` fixed-size values of `size` bytes each, decoded by `f` (`None` when `f` cannot represent
/// one); an error when the attribute holds fewer bytes than that.
fn numbers(
    raw: &[u8],
    n: usize,
    size: usize,
    f: impl Fn(&[u8]) -> Option<Value>,
) -> Result<Option<Vec<Value>>, String> {
    let needed = n.checked_mul(size).filter(|_| size > 0);
    match needed {
        Some(needed) if raw.len() >= needed => Ok(raw.chunks_exact(size).take(n).map(f).collect()),
        _ => Err(format!(
            "holds {} bytes, {n} values of {size} bytes expected",
            raw.len()
        )),
    }
}

fn int_json(b: &[u8], signed: bool, order: ByteOrder) -> Option<Value> {
    let mut buf = [0u8; 8];
    let size = b.len();
    match order {
        ByteOrder::LittleEndian => buf[..size].copy_from_slice(b),
        ByteOrder::BigEndian => {
            for (i, byte) in b.iter().rev().enumerate() {
                buf[i] = *byte;
            }
        }
    }
    let raw = u64::from_le_bytes(buf);
    Some(if signed {
        let shift = 64 - 8 * size as u32;
        json!(((raw << shift) as i64) >> shift)
    } else {
        json!(raw)
    })
}

fn float_json(b: &[u8], order: ByteOrder) -> Option<Value> {
    let v = match (b.len(), order) {
        // The widths are matched, so the conversions to arrays cannot fail.
        (4, ByteOrder::LittleEndian) => f64::from(f32::from_le_bytes(b.try_into().ok()?)),
        (4, ByteOrder::BigEndian) => f64::from(f32::from_be_bytes(b.try_into().ok()?)),
        (8, ByteOrder::LittleEndian) => f64::from_le_bytes(b.try_into().ok()?),
        (8, ByteOrder::BigEndian) => f64::from_be_bytes(b.try_into().ok()?),
        _ => return None,
    };
    Some(Number::from_f64(v).map_or(Value::Null, Value::Number))
}

/// Scalars (shape `[]`) as one value; arrays as lists nested by shape.
fn shape_values(values: Vec<Value>, shape: &[u64]) -> Value {
    match shape {
        [] => values.into_iter().next().unwrap_or(Value::Null),
        [_] => Value::Array(values),
        [_, rest @ ..] => {
            // A product that overflows cannot match the values read: one row then holds them all.
            let inner = rest
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d))
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(usize::MAX)
                .max(1);
            let mut rows = Vec::new();
            let mut it = values.into_iter().peekable();
            while it.peek().is_some() {
                let row: Vec<Value> = it.by_ref().take(inner).collect();
                rows.push(shape_values(row, rest));
            }
            Value::Array(rows)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtypes_map_to_numpy_typestrs() {
        let le = ByteOrder::LittleEndian;
        let dt = |d: &Datatype| zarr_dtype(d).0;
        assert_eq!(
            dt(&Datatype::FloatingPoint {
                size: 4,
                byte_order: le
            }),
            json!("<f4")
        );
        assert_eq!(
            dt(&Datatype::FixedPoint {
                size: 8,
                signed: true,
                byte_order: ByteOrder::BigEndian
            }),
            json!(">i8")
        );
        assert_eq!(
            dt(&Datatype::FixedPoint {
                size: 1,
                signed: false,
                byte_order: le
            }),
            json!("|u1")
        );
        let bool_enum = Datatype::Enum {
            base: Box::new(Datatype::FixedPoint {
                size: 1,
                signed: true,
                byte_order: le,
            }),
            members: vec![
                EnumMember {
                    name: "FALSE".into(),
                    value: vec![0],
                },
                EnumMember {
                    name: "TRUE".into(),
                    value: vec![1],
                },
            ],
        };
        assert_eq!(dt(&bool_enum), json!("|b1"));
        let reference = Datatype::Reference {
            ref_type: ReferenceType::Object,
            size: 8,
        };
        assert_eq!(dt(&reference), json!("hdf5:object-reference"));
        assert_eq!(zarr_dtype(&reference).3, Values::Unreadable);
    }

    #[test]
    fn strings_and_numbers_convert() {
        assert_eq!(fixed_string(b"ab\0\0", StringPadding::NullPad), "ab");
        assert_eq!(fixed_string(b"ab  ", StringPadding::SpacePad), "ab");
        assert_eq!(
            vlen_utf8(&["a", ""]).ok(),
            Some(vec![2, 0, 0, 0, 1, 0, 0, 0, b'a', 0, 0, 0, 0])
        );
        assert_eq!(
            int_json(&[0xff, 0xfe], true, ByteOrder::LittleEndian),
            Some(json!(-257))
        );
        assert_eq!(
            int_json(&[0x01, 0x00], false, ByteOrder::BigEndian),
            Some(json!(256))
        );
        assert_eq!(
            shape_values((0..6).map(|i| json!(i)).collect(), &[2, 3]),
            json!([[0, 1, 2], [3, 4, 5]])
        );
        assert_eq!(shape_values(vec![json!(1)], &[]), json!(1));
    }
}
