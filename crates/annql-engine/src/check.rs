//! Whether an element can be read as the table or column the model gives it, from metadata alone:
//! its encoding and version, the parts the spec requires, its shape, and its length against the
//! axis it lies along (a column against its dataframe's index, a matrix against `obs` and `var`).
//!
//! These run when a table is bound (at attach), without reading a chunk. A failed check is kept
//! as the table's or column's note ([`crate::table::AnnTable::notes`]): `annql schema` shows it,
//! a query that reads the element gets it as its error, and the other tables and columns answer.
//! What only the data can tell (`indptr` starting at 0) is checked when the element is first
//! read ([`crate::table::AnnTable::check_first_read`]).

use annql_store::arrow::datatypes::{DataType, Field};
use annql_store::{AnnDataStore, DType, Element, Encoding, Error as StoreError};
use serde_json::Value;

use crate::decode::arrow_type;

/// The encoding versions anndata reads, per `encoding-type` (its IO registry, anndata 0.12);
/// None where annql does not check (an encoding inferred from the layout).
fn known_versions(encoding: &Encoding) -> Option<&'static [&'static str]> {
    Some(match encoding {
        Encoding::AnnData
        | Encoding::MuData
        | Encoding::Raw
        | Encoding::CsrMatrix
        | Encoding::CscMatrix
        | Encoding::Dict
        | Encoding::Null
        | Encoding::NullableInteger
        | Encoding::NullableBoolean
        | Encoding::NullableStringArray
        | Encoding::AwkwardArray => &["0.1.0"],
        Encoding::DataFrame => &["0.1.0", "0.2.0"],
        Encoding::Categorical
        | Encoding::StringArray
        | Encoding::Array
        | Encoding::NumericScalar
        | Encoding::String
        | Encoding::RecArray => &["0.2.0"],
        Encoding::LegacyCategorical | Encoding::Unknown(_) => return None,
    })
}

pub(crate) fn malformed(store: &AnnDataStore, path: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Malformed {
        store: store.name().into(),
        path: path.trim_start_matches('/').into(),
        reason: reason.into(),
    }
}

pub(crate) fn unsupported(
    store: &AnnDataStore,
    path: &str,
    what: &str,
    reason: impl Into<String>,
) -> StoreError {
    StoreError::Unsupported {
        store: store.name().into(),
        path: path.trim_start_matches('/').into(),
        what: what.into(),
        reason: reason.into(),
    }
}

/// The element's encoding is one annql knows, and so is its `encoding-version`; an element
/// without `encoding-type` is taken as its layout says (anndata reads those too).
pub(crate) fn encoding(store: &AnnDataStore, e: &Element) -> Result<(), StoreError> {
    // Metadata unreadable at open: the element's own, or (for an element whose parts are not
    // elements of their own: a matrix, a categorical) a part's.
    let container = matches!(
        e.encoding,
        Encoding::AnnData | Encoding::MuData | Encoding::Raw | Encoding::Dict | Encoding::DataFrame
    );
    if let Some(damage) = store.damage(&e.path, !container) {
        return Err(damage);
    }
    if let Encoding::Unknown(name) = &e.encoding {
        return Err(unsupported(
            store,
            &e.path,
            name,
            format!("unknown encoding-type '{name}' (anndata has no reader for it either)"),
        ));
    }
    if e.attrs
        .get("encoding-type")
        .and_then(Value::as_str)
        .is_none()
    {
        return Ok(());
    }
    let Some(versions) = known_versions(&e.encoding) else {
        return Ok(());
    };
    let name = e.encoding.name();
    match e.attrs.get("encoding-version").and_then(Value::as_str) {
        Some(v) if versions.contains(&v) => Ok(()),
        Some(v) => Err(unsupported(
            store,
            &e.path,
            name,
            format!(
                "encoding-version {v} of {name} is not one annql reads ({}); anndata refuses it too",
                versions.join(", ")
            ),
        )),
        None => Err(malformed(
            store,
            &e.path,
            format!("encoding-type '{name}' without an encoding-version"),
        )),
    }
}

/// A group that has no `encoding-type` where an encoded element belongs.
fn unencoded(store: &AnnDataStore, e: &Element, expected: &str) -> StoreError {
    malformed(
        store,
        &e.path,
        format!("a group without an 'encoding-type' attribute where {expected} belongs"),
    )
}

fn shape_text(shape: &[u64]) -> String {
    format!(
        "({})",
        shape
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The Arrow type of a store type, or why there is none.
fn sql_type(store: &AnnDataStore, path: &str, dtype: &DType) -> Result<DataType, StoreError> {
    arrow_type(dtype).ok_or_else(|| {
        unsupported(
            store,
            path,
            &dtype.to_string(),
            "annql reads bool, integer, float and string arrays",
        )
    })
}

/// A part of an element that must be a 1-D array (categorical codes, nullable values…).
fn part<'a>(
    store: &'a AnnDataStore,
    e: &Element,
    name: &str,
) -> Result<&'a annql_store::metadata::ArrayMeta, StoreError> {
    let meta = store.array_meta(&format!("{}/{name}", e.path))?;
    if meta.shape.len() != 1 {
        return Err(malformed(
            store,
            &format!("{}/{name}", e.path),
            format!("must be 1-D; its shape is {}", shape_text(&meta.shape)),
        ));
    }
    Ok(meta)
}

/// A dataframe: the name of its index column and its length (the frame's row count).
pub(crate) fn frame(store: &AnnDataStore, e: &Element) -> Result<(String, u64), StoreError> {
    if let Some(damage) = store.damage(&e.path, false) {
        return Err(damage);
    }
    match &e.encoding {
        Encoding::DataFrame => {}
        Encoding::Dict if e.attrs.get("encoding-type").is_none() => {
            return Err(unencoded(store, e, "a dataframe"));
        }
        other => {
            return Err(unsupported(
                store,
                &e.path,
                other.name(),
                "a dataframe is expected here",
            ));
        }
    }
    encoding(store, e)?;
    let index = e
        .attrs
        .get("_index")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(store, &e.path, "dataframe without an '_index' attribute"))?;
    let column = e.child(index).ok_or_else(|| {
        malformed(
            store,
            &format!("{}/{index}", e.path),
            "the dataframe's index (its '_index' attribute) is not stored",
        )
    })?;
    column_type(store, column)?;
    Ok((index.to_string(), column_len(column)))
}

/// Rows of a dataframe column (codes of a categorical, values of a nullable column).
fn column_len(e: &Element) -> u64 {
    e.shape.first().copied().unwrap_or(0)
}

/// The Arrow field of dataframe column `e`, named `name`, in a dataframe of `rows` rows whose
/// index is at `index_path`.
pub(crate) fn column(
    store: &AnnDataStore,
    name: &str,
    e: &Element,
    rows: u64,
    index_path: &str,
) -> Result<Field, StoreError> {
    let dt = column_type(store, e)?;
    let len = column_len(e);
    if len != rows {
        return Err(malformed(
            store,
            &e.path,
            format!("has {len} rows but the dataframe's index '/{index_path}' has {rows}"),
        ));
    }
    let mut field = Field::new(name, dt, true);
    if let Some(ordered) = e.attrs.get("ordered").and_then(Value::as_bool) {
        field = field.with_metadata([("annql.ordered".to_string(), ordered.to_string())].into());
    }
    Ok(field)
}

/// The Arrow type of a dataframe column element, from metadata alone.
pub(crate) fn column_type(store: &AnnDataStore, e: &Element) -> Result<DataType, StoreError> {
    encoding(store, e)?;
    let one_d = |shape: &[u64]| {
        if shape.len() == 1 {
            Ok(())
        } else {
            Err(malformed(
                store,
                &e.path,
                format!(
                    "a dataframe column must be 1-D; its shape is {}",
                    shape_text(shape)
                ),
            ))
        }
    };
    Ok(match &e.encoding {
        Encoding::Array | Encoding::StringArray => {
            let meta = store.array_meta(&e.path)?;
            one_d(&meta.shape)?;
            sql_type(store, &e.path, &meta.dtype)?
        }
        Encoding::Categorical => {
            let codes = part(store, e, "codes")?;
            let categories = part(store, e, "categories")?;
            if e.attrs.get("ordered").and_then(Value::as_bool).is_none() {
                return Err(malformed(
                    store,
                    &e.path,
                    "categorical without a boolean 'ordered' attribute",
                ));
            }
            DataType::Dictionary(
                Box::new(codes_type(
                    store,
                    &format!("{}/codes", e.path),
                    &codes.dtype,
                )?),
                Box::new(sql_type(
                    store,
                    &format!("{}/categories", e.path),
                    &categories.dtype,
                )?),
            )
        }
        Encoding::LegacyCategorical => {
            let meta = store.array_meta(&e.path)?;
            one_d(&meta.shape)?;
            let path = e
                .legacy_categories_path()
                .ok_or_else(|| malformed(store, &e.path, "'categories' is not a path string"))?;
            let cats = store.array_meta(&path)?;
            DataType::Dictionary(
                Box::new(codes_type(store, &e.path, &meta.dtype)?),
                Box::new(sql_type(store, &path, &cats.dtype)?),
            )
        }
        Encoding::NullableInteger | Encoding::NullableBoolean | Encoding::NullableStringArray => {
            let values = part(store, e, "values")?;
            let mask = part(store, e, "mask")?;
            if mask.dtype != DType::Bool {
                return Err(malformed(
                    store,
                    &format!("{}/mask", e.path),
                    format!("mask is {}, not bool", mask.dtype),
                ));
            }
            if mask.shape != values.shape {
                return Err(malformed(
                    store,
                    &e.path,
                    format!(
                        "mask has {} entries but values has {}",
                        mask.shape[0], values.shape[0]
                    ),
                ));
            }
            sql_type(store, &format!("{}/values", e.path), &values.dtype)?
        }
        Encoding::Dict if e.attrs.get("encoding-type").is_none() => {
            return Err(unencoded(store, e, "a dataframe column"));
        }
        other => {
            return Err(unsupported(
                store,
                &e.path,
                other.name(),
                "not a dataframe column encoding",
            ));
        }
    })
}

/// Categorical codes are signed integers (−1 is a missing value).
fn codes_type(store: &AnnDataStore, path: &str, dtype: &DType) -> Result<DataType, StoreError> {
    match dtype {
        DType::Int8 | DType::Int16 | DType::Int32 | DType::Int64 => sql_type(store, path, dtype),
        other => Err(malformed(
            store,
            path,
            format!("categorical codes are {other}, expected signed integers"),
        )),
    }
}

/// The length of the axis a dataframe spans, with its index's path: None when the dataframe
/// cannot be read (it carries its own note; lengths against it are then not compared).
pub(crate) fn axis_len(store: &AnnDataStore, frame_path: Option<&str>) -> Option<(u64, String)> {
    let e = store.element(frame_path?).ok()?;
    let (index, rows) = frame(store, e).ok()?;
    Some((rows, format!("{}/{index}", e.path)))
}

/// A matrix (CSR, CSC or a 2-D array) whose rows and columns match `axes` where given: the type
/// of its values.
pub(crate) fn matrix(
    store: &AnnDataStore,
    e: &Element,
    axes: [Option<(u64, String)>; 2],
) -> Result<DataType, StoreError> {
    encoding(store, e)?;
    let value = match &e.encoding {
        Encoding::CsrMatrix | Encoding::CscMatrix => {
            let declared = e
                .attrs
                .get("shape")
                .or_else(|| e.attrs.get("h5sparse_shape"));
            let two = declared
                .and_then(Value::as_array)
                .is_some_and(|s| s.len() == 2 && s.iter().all(|n| n.as_u64().is_some()));
            if !two {
                return Err(malformed(
                    store,
                    &e.path,
                    format!(
                        "a sparse matrix's 'shape' must be two lengths; it is {}",
                        declared.map_or("missing".into(), Value::to_string)
                    ),
                ));
            }
            store.sparse_dims(e)?;
            let data = part(store, e, "data")?;
            let indices = part(store, e, "indices")?;
            if indices.shape != data.shape {
                return Err(malformed(
                    store,
                    &e.path,
                    format!(
                        "indices has {} entries but data has {}",
                        indices.shape[0], data.shape[0]
                    ),
                ));
            }
            // Both index arrays are integers: otherwise every read of the matrix fails, so the
            // table carries the reason from the start (and `annql schema` shows it).
            for (name, meta) in [("indices", indices), ("indptr", part(store, e, "indptr")?)] {
                if !meta.dtype.is_integer() {
                    return Err(malformed(
                        store,
                        &format!("{}/{name}", e.path),
                        format!("{name} are {}, expected integers", meta.dtype),
                    ));
                }
            }
            sql_type(store, &format!("{}/data", e.path), &data.dtype)?
        }
        Encoding::Array => {
            let meta = store.array_meta(&e.path)?;
            if meta.shape.len() != 2 {
                return Err(malformed(
                    store,
                    &e.path,
                    format!(
                        "a matrix must be 2-D; its shape is {}",
                        shape_text(&meta.shape)
                    ),
                ));
            }
            sql_type(store, &e.path, &meta.dtype)?
        }
        Encoding::Dict if e.attrs.get("encoding-type").is_none() => {
            return Err(unencoded(store, e, "a matrix"));
        }
        other => {
            return Err(unsupported(
                store,
                &e.path,
                other.name(),
                "not a matrix (csr_matrix, csc_matrix or a 2-D array)",
            ));
        }
    };
    lengths(store, e, axes)?;
    Ok(value)
}

/// A dense embedding (a 2-D array in obsm/varm) whose rows match `axis`: the type of its values.
pub(crate) fn embedding(
    store: &AnnDataStore,
    e: &Element,
    axis: Option<(u64, String)>,
) -> Result<DataType, StoreError> {
    encoding(store, e)?;
    let dt = match &e.encoding {
        Encoding::Array => {
            let meta = store.array_meta(&e.path)?;
            // 1-D arrays are allowed too (MuData's modality masks in obsm): one component.
            if !matches!(meta.shape.len(), 1 | 2) {
                return Err(malformed(
                    store,
                    &e.path,
                    format!(
                        "an obsm/varm array must be 1-D or 2-D; its shape is {}",
                        shape_text(&meta.shape)
                    ),
                ));
            }
            sql_type(store, &e.path, &meta.dtype)?
        }
        Encoding::Dict if e.attrs.get("encoding-type").is_none() => {
            return Err(unencoded(store, e, "an obsm/varm entry"));
        }
        other => {
            return Err(unsupported(
                store,
                &e.path,
                other.name(),
                "annql reads obsm/varm entries that are 2-D arrays, dataframes or sparse matrices",
            ));
        }
    };
    lengths(store, e, [axis, None])?;
    Ok(dt)
}

/// The element's rows (and columns) equal the lengths of the axes they lie along.
fn lengths(
    store: &AnnDataStore,
    e: &Element,
    axes: [Option<(u64, String)>; 2],
) -> Result<(), StoreError> {
    for (i, axis) in axes.into_iter().enumerate() {
        let (Some((want, index)), Some(&have)) = (axis, e.shape.get(i)) else {
            continue;
        };
        if have != want {
            let what = if i == 0 { "rows" } else { "columns" };
            return Err(malformed(
                store,
                &e.path,
                format!("has {have} {what} but '/{index}' has {want}"),
            ));
        }
    }
    Ok(())
}
