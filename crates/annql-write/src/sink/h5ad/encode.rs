//! What anndata's HDF5 elements look like to h5py, spelled for hdf5-pure: element types,
//! attribute values, and Arrow blocks turned into the bytes or strings a dataset holds.

use annql_store::DType;
use annql_store::arrow::array::{Array, ArrayRef, AsArray};
use annql_store::arrow::datatypes::ToByteSlice;
use annql_store::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use hdf5_pure::{AttrValue, Datatype, EnumTypeBuilder};
use serde_json::Value;

use crate::error::{Error, Result};

// Raw element bytes are Arrow's native buffers, written as HDF5 little-endian types.
#[cfg(target_endian = "big")]
compile_error!("the h5ad sink writes Arrow's native buffers as little-endian HDF5 data");

/// The HDF5 type of a numeric or bool element of the array `element`. Strings have none here
/// (they are variable-length, staged through `with_vlen_strings`).
pub(super) fn datatype(element: &str, dtype: &DType) -> Result<Datatype> {
    Ok(match dtype {
        DType::Bool => bool_type()?,
        DType::Int8 => hdf5_pure::make_i8_type(),
        DType::Int16 => hdf5_pure::make_i16_type(),
        DType::Int32 => hdf5_pure::make_i32_type(),
        DType::Int64 => hdf5_pure::make_i64_type(),
        DType::UInt8 => hdf5_pure::make_u8_type(),
        DType::UInt16 => hdf5_pure::make_u16_type(),
        DType::UInt32 => hdf5_pure::make_u32_type(),
        DType::UInt64 => hdf5_pure::make_u64_type(),
        DType::Float32 => hdf5_pure::make_f32_type(),
        DType::Float64 => hdf5_pure::make_f64_type(),
        DType::String => {
            return Err(Error::Internal(format!(
                "h5ad sink: string array '{element}' has no fixed-size element type"
            )));
        }
        DType::Other(name) => {
            return Err(Error::Refused {
                element: element.to_string(),
                reason: format!("element type '{name}' has no .h5ad encoding"),
            });
        }
    })
}

/// Bytes one element of `dtype` occupies (strings: none, they are not held as bytes).
pub(super) fn element_size(dtype: &DType) -> usize {
    match dtype {
        DType::Bool | DType::Int8 | DType::UInt8 => 1,
        DType::Int16 | DType::UInt16 => 2,
        DType::Int32 | DType::UInt32 | DType::Float32 => 4,
        DType::Int64 | DType::UInt64 | DType::Float64 => 8,
        DType::String | DType::Other(_) => 0,
    }
}

/// numpy's bool as h5py stores it: an enum over int8 with members FALSE = 0 and TRUE = 1.
fn bool_type() -> Result<Datatype> {
    EnumTypeBuilder::with_base(hdf5_pure::make_i8_type())
        .value("FALSE", 0)
        .value("TRUE", 1)
        .build()
        .map_err(|e| Error::Internal(format!("h5ad sink: the bool enum type is refused: {e}")))
}

/// Appends the raw little-endian bytes of `values` (of element type `dtype`) to `out`.
///
/// `element` names the array for the errors: a block of another type is a bug of the caller;
/// a null is refused (anndata's arrays have none: nullable columns arrive as values + mask).
pub(super) fn push_bytes(
    element: &str,
    dtype: &DType,
    values: &ArrayRef,
    out: &mut Vec<u8>,
) -> Result<()> {
    refuse_nulls(element, values)?;
    fn prim<T: ArrowPrimitiveType>(values: &ArrayRef, out: &mut Vec<u8>) -> bool {
        match values.as_primitive_opt::<T>() {
            Some(a) => {
                out.extend_from_slice(a.values().as_ref().to_byte_slice());
                true
            }
            None => false,
        }
    }
    let ok = match dtype {
        DType::Bool => match values.as_boolean_opt() {
            Some(a) => {
                out.extend(a.values().iter().map(u8::from));
                true
            }
            None => false,
        },
        DType::Int8 => prim::<Int8Type>(values, out),
        DType::Int16 => prim::<Int16Type>(values, out),
        DType::Int32 => prim::<Int32Type>(values, out),
        DType::Int64 => prim::<Int64Type>(values, out),
        DType::UInt8 => prim::<UInt8Type>(values, out),
        DType::UInt16 => prim::<UInt16Type>(values, out),
        DType::UInt32 => prim::<UInt32Type>(values, out),
        DType::UInt64 => prim::<UInt64Type>(values, out),
        DType::Float32 => prim::<Float32Type>(values, out),
        DType::Float64 => prim::<Float64Type>(values, out),
        DType::String | DType::Other(_) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(mismatch(element, dtype, values.data_type()))
    }
}

/// Appends the strings of `values` (Utf8, LargeUtf8 or Utf8View) to `out`.
pub(super) fn push_strings(element: &str, values: &ArrayRef, out: &mut Vec<String>) -> Result<()> {
    refuse_nulls(element, values)?;
    // No nulls (checked above), so every `Option` below is `Some`.
    match values.data_type() {
        DataType::Utf8 => out.extend(values.as_string::<i32>().iter().flatten().map(String::from)),
        DataType::LargeUtf8 => {
            out.extend(values.as_string::<i64>().iter().flatten().map(String::from))
        }
        DataType::Utf8View => {
            out.extend(values.as_string_view().iter().flatten().map(String::from))
        }
        other => return Err(mismatch(element, &DType::String, other)),
    }
    Ok(())
}

fn refuse_nulls(element: &str, values: &ArrayRef) -> Result<()> {
    if values.null_count() > 0 {
        return Err(Error::Refused {
            element: element.to_string(),
            reason: format!(
                "{} null values in a plain array (HDF5 arrays of anndata have no nulls)",
                values.null_count()
            ),
        });
    }
    Ok(())
}

fn mismatch(element: &str, dtype: &DType, got: &DataType) -> Error {
    Error::Internal(format!(
        "h5ad sink: array '{element}' holds {dtype:?} but was handed a block of {got}"
    ))
}

/// An attribute as hdf5-pure writes it, or the bool that only a copied template can carry.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Attr {
    /// Any attribute hdf5-pure's values express.
    Value(AttrValue),
    /// A numpy bool (`ordered` of a categorical): an enum, which `AttrValue` cannot express.
    Bool(bool),
}

/// The attribute h5py would write for the JSON value anndata puts in `attrs`: `str` → a
/// variable-length UTF-8 string, a list of strings → an array of them, integers → int64
/// (`shape`), floats → float64, an empty list → an empty float64 array (what h5py stores for
/// an empty `column-order`), bools → numpy bools.
pub(super) fn attr(element: &str, name: &str, value: &Value) -> Result<Attr> {
    let refuse = |what: &str| Error::Refused {
        element: element.to_string(),
        reason: format!("attribute '{name}' is {what}, which an .h5ad attribute cannot hold"),
    };
    Ok(Attr::Value(match value {
        Value::String(s) => AttrValue::VarLenString(s.clone()),
        Value::Bool(b) => return Ok(Attr::Bool(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                AttrValue::I64(i)
            } else if let Some(u) = n.as_u64() {
                AttrValue::U64(u)
            } else {
                AttrValue::F64(n.as_f64().ok_or_else(|| refuse("a number out of range"))?)
            }
        }
        Value::Array(items) if items.is_empty() => AttrValue::F64Array(Vec::new()),
        Value::Array(items) => {
            if let Some(strings) = items
                .iter()
                .map(|v| v.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
            {
                AttrValue::VarLenStringArray(strings)
            } else if let Some(ints) = items.iter().map(Value::as_i64).collect::<Option<Vec<_>>>() {
                AttrValue::I64Array(ints)
            } else if let Some(floats) = items.iter().map(Value::as_f64).collect::<Option<Vec<_>>>()
            {
                AttrValue::F64Array(floats)
            } else {
                return Err(refuse("a list mixing strings, numbers and other values"));
            }
        }
        Value::Null => return Err(refuse("null")),
        Value::Object(_) => return Err(refuse("a JSON object")),
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use annql_store::arrow::array::{BooleanArray, Float32Array, Int32Array, StringArray};
    use serde_json::json;

    use super::*;

    #[test]
    fn attributes_take_the_types_h5py_gives_them() {
        let a = |v: Value| attr("obs", "x", &v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            a(json!("dataframe")),
            Attr::Value(AttrValue::VarLenString("dataframe".into()))
        );
        assert_eq!(
            a(json!(["a", "b"])),
            Attr::Value(AttrValue::VarLenStringArray(vec!["a".into(), "b".into()]))
        );
        assert_eq!(a(json!([])), Attr::Value(AttrValue::F64Array(vec![])));
        assert_eq!(
            a(json!([3, 4])),
            Attr::Value(AttrValue::I64Array(vec![3, 4]))
        );
        assert_eq!(a(json!(1.5)), Attr::Value(AttrValue::F64(1.5)));
        assert_eq!(a(json!(true)), Attr::Bool(true));
        for bad in [json!(null), json!({"a": 1}), json!(["a", 1])] {
            let err = attr("obs", "x", &bad)
                .err()
                .unwrap_or_else(|| panic!("expected an error"));
            assert!(
                matches!(&err, Error::Refused { element, .. } if element == "obs"),
                "{err}"
            );
        }
    }

    #[test]
    fn blocks_become_little_endian_bytes_or_strings() {
        let mut out = Vec::new();
        let v: ArrayRef = Arc::new(Int32Array::from(vec![1, -2]));
        push_bytes("X/indices", &DType::Int32, &v, &mut out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out, [1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff]);
        let sliced: ArrayRef = Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0]).slice(1, 1));
        out.clear();
        push_bytes("X/data", &DType::Float32, &sliced, &mut out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out, 2f32.to_le_bytes());
        let b: ArrayRef = Arc::new(BooleanArray::from(vec![true, false]));
        out.clear();
        push_bytes("obs/b", &DType::Bool, &b, &mut out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out, [1, 0]);
        // A block of another type is a bug upstream, reported as such.
        let err = push_bytes("X/data", &DType::Float64, &v, &mut out)
            .err()
            .unwrap_or_else(|| panic!("expected an error"));
        assert!(matches!(err, Error::Internal(_)), "{err}");
        // Nulls are refused by name.
        let n: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), None]));
        let err = push_bytes("obs/n", &DType::Int32, &n, &mut out)
            .err()
            .unwrap_or_else(|| panic!("expected an error"));
        assert!(
            matches!(&err, Error::Refused { element, .. } if element == "obs/n"),
            "{err}"
        );
        let s: ArrayRef = Arc::new(StringArray::from(vec!["a", "ÿ"]));
        let mut strings = Vec::new();
        push_strings("obs/_index", &s, &mut strings).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(strings, ["a", "ÿ"]);
    }
}
