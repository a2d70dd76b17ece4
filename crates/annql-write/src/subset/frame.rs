//! Cutting dataframes (`obs`, `var`, dataframes in `obsm`/`varm`/`uns`): the index and every
//! column in its own encoding, rows kept in source order. Categorical columns of `obs` and `var`
//! lose the categories no kept row uses, as anndata's views do (`_remove_unused_categories`).

use annql_store::arrow::array::{Array, ArrayRef, Int64Array};
use annql_store::{AnnDataStore, DType, Element, Encoding};
use serde_json::{Value, json};

use super::emit::{Emitter, encoding};
use super::matrix::cut_dense;
use super::plan::{Block, Blocks, ints_as, take};
use crate::error::{Error, Result};
use crate::select::Rows;

/// Which categories of one categorical column the kept rows use (source order).
#[derive(Debug, Clone)]
pub(crate) struct Used {
    /// The column's name.
    pub column: String,
    /// One flag per source category.
    pub used: Vec<bool>,
}

/// Copies the dataframe `df` to `out`, keeping rows `rows`; with `drop_unused`, categorical
/// columns keep only the categories the kept rows use. Returns the categories each categorical
/// column keeps (for trimming `uns["<column>_colors"]`).
pub(crate) fn cut_frame(
    em: &mut Emitter,
    store: &AnnDataStore,
    df: &Element,
    out: &str,
    rows: &Rows,
    drop_unused: bool,
) -> Result<Vec<Used>> {
    let index = df.index_column().unwrap_or("_index").to_string();
    let order = df.column_order();
    let n = df.shape.first().copied().unwrap_or(0);
    let mut attrs = encoding("dataframe", "0.2.0");
    attrs.insert("_index".into(), json!(index));
    attrs.insert("column-order".into(), json!(order));
    em.group(out, attrs)?;
    let index_column = df.child(&index).ok_or_else(|| Error::Refused {
        element: df.path.clone(),
        reason: format!("dataframe without its index column '{index}'"),
    })?;
    cut_column(
        em,
        store,
        index_column,
        &format!("{out}/{index}"),
        rows,
        n,
        false,
    )?;
    let mut used = Vec::new();
    // Columns are those of `column-order` (what anndata reads); anything else stored in the group
    // is not part of the dataframe anndata reads, so it is not part of the cut either.
    for name in &order {
        let column = df.child(name).ok_or_else(|| Error::Refused {
            element: format!("{}/{name}", df.path),
            reason: "listed in the dataframe's column-order but missing".into(),
        })?;
        if let Some(u) = cut_column(
            em,
            store,
            column,
            &format!("{out}/{name}"),
            rows,
            n,
            drop_unused,
        )? {
            used.push(Used {
                column: name.clone(),
                used: u,
            });
        }
    }
    Ok(used)
}

/// Copies one column; returns the used-category flags of a categorical.
pub(crate) fn cut_column(
    em: &mut Emitter,
    store: &AnnDataStore,
    column: &Element,
    out: &str,
    rows: &Rows,
    n: u64,
    drop_unused: bool,
) -> Result<Option<Vec<bool>>> {
    let path = &column.path;
    let len = column.shape.first().copied();
    if len != Some(n) || column.shape.len() != 1 {
        return Err(malformed(
            store,
            path,
            &format!(
                "column of shape {:?} in a dataframe of {n} rows (expected a 1-D column)",
                column.shape
            ),
        ));
    }
    match &column.encoding {
        Encoding::Array | Encoding::StringArray => {
            let kind = array_kind(column.dtype.as_ref());
            cut_dense(em, store, path, out, rows, None, encoding(kind, "0.2.0"))?;
            Ok(None)
        }
        Encoding::NullableInteger | Encoding::NullableBoolean | Encoding::NullableStringArray => {
            em.group(out, encoding(column.encoding.name(), "0.1.0"))?;
            let values = format!("{path}/values");
            let kind = array_kind(Some(&store.array_meta(&values)?.dtype));
            let values_out = format!("{out}/values");
            cut_dense(
                em,
                store,
                &values,
                &values_out,
                rows,
                None,
                encoding(kind, "0.2.0"),
            )?;
            let mask = format!("{path}/mask");
            let mask_out = format!("{out}/mask");
            cut_dense(
                em,
                store,
                &mask,
                &mask_out,
                rows,
                None,
                encoding("array", "0.2.0"),
            )?;
            Ok(None)
        }
        Encoding::Categorical | Encoding::LegacyCategorical => {
            cut_categorical(em, store, column, out, rows, drop_unused).map(Some)
        }
        other => Err(Error::Refused {
            element: path.clone(),
            reason: format!(
                "a {} column: annql copies array, string-array, categorical and nullable columns",
                other.name()
            ),
        }),
    }
}

/// `string-array` for strings, `array` otherwise.
pub(crate) fn array_kind(dtype: Option<&DType>) -> &'static str {
    if dtype == Some(&DType::String) {
        "string-array"
    } else {
        "array"
    }
}

/// Copies a categorical (0.2.0, or a 0.1.0 dataframe's, written as 0.2.0): a first pass over the
/// kept codes finds the categories in use, a second writes the codes renumbered.
fn cut_categorical(
    em: &mut Emitter,
    store: &AnnDataStore,
    column: &Element,
    out: &str,
    rows: &Rows,
    drop_unused: bool,
) -> Result<Vec<bool>> {
    let path = &column.path;
    let (codes_path, categories_path) = if column.encoding == Encoding::Categorical {
        (format!("{path}/codes"), format!("{path}/categories"))
    } else {
        let categories = column
            .legacy_categories_path()
            .ok_or_else(|| malformed(store, path, "the 'categories' attribute is not a path"))?;
        (path.clone(), categories)
    };
    let ordered = match column.attrs.get("ordered") {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        _ => {
            return Err(malformed(
                store,
                path,
                "categorical without a boolean 'ordered' attribute (anndata cannot read it)",
            ));
        }
    };
    let n_categories = store
        .array_meta(&categories_path)?
        .shape
        .first()
        .copied()
        .unwrap_or(0);
    let n = column.shape.first().copied().unwrap_or(0);
    let per_block = em.block_bytes / 8;
    let codes_of = |values: ArrayRef| -> Result<Int64Array> {
        let cast = annql_store::arrow::compute::cast(
            &values,
            &annql_store::arrow::datatypes::DataType::Int64,
        )
        .map_err(|_| malformed(store, &codes_path, "categorical codes are not integers"))?;
        let codes = cast
            .as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
            .ok_or_else(|| Error::Internal("a cast to Int64 gave another type".into()))?;
        if codes.null_count() > 0 {
            return Err(malformed(
                store,
                &codes_path,
                "categorical codes are not integers",
            ));
        }
        if let Some(c) = codes
            .values()
            .iter()
            .find(|&&c| c < -1 || c >= n_categories as i64)
        {
            return Err(malformed(
                store,
                &codes_path,
                &format!("code {c} out of range for {n_categories} categories"),
            ));
        }
        Ok(codes)
    };
    let read_kept = |em: &Emitter, block: &Block| -> Result<Int64Array> {
        let values = store.read_array(&codes_path, block.range.clone(), &em.stats)?;
        let values = match &block.keep {
            None => values,
            Some(keep) => take(&values, keep.clone())?,
        };
        codes_of(values)
    };
    let used: Vec<bool> = if drop_unused {
        let mut used = vec![false; n_categories as usize];
        for block in Blocks::new(rows, n, per_block) {
            em.check_cancel()?;
            for &c in read_kept(em, &block)?.values().iter() {
                if c >= 0 {
                    used[c as usize] = true;
                }
            }
        }
        used
    } else {
        vec![true; n_categories as usize]
    };
    let mut renumber = Vec::with_capacity(used.len());
    let mut kept = Vec::new();
    for (c, &u) in used.iter().enumerate() {
        renumber.push(kept.len() as i64);
        if u {
            kept.push(c as u64);
        }
    }
    let mut attrs = encoding("categorical", "0.2.0");
    attrs.insert("ordered".into(), Value::Bool(ordered));
    em.group(out, attrs)?;

    // pandas' code type for this many categories (`coerce_indexer_dtype`).
    let code_type = match kept.len() {
        k if k < i8::MAX as usize => DType::Int8,
        k if k < i16::MAX as usize => DType::Int16,
        k if k < i32::MAX as usize => DType::Int32,
        _ => DType::Int64,
    };
    let spec = crate::sink::ArraySpec {
        dtype: code_type.clone(),
        inner: Vec::new(),
        scalar: false,
        len_hint: Some(rows.count(n)),
    };
    let codes = em.open(&format!("{out}/codes"), spec, encoding("array", "0.2.0"))?;
    for block in Blocks::new(rows, n, per_block) {
        em.check_cancel()?;
        let new: Vec<i64> = read_kept(em, &block)?
            .values()
            .iter()
            .map(|&c| if c < 0 { -1 } else { renumber[c as usize] })
            .collect();
        em.append(codes, ints_as(new, &code_type)?)?;
    }
    em.close(codes)?;

    // Categories are read whole, as anndata does: they are the column's dictionary.
    let categories = store.read_array(&categories_path, 0..n_categories, &em.stats)?;
    let categories = if kept.len() == used.len() {
        categories
    } else {
        take(&categories, kept)?
    };
    let dtype = store.array_meta(&categories_path)?.dtype.clone();
    let spec = crate::sink::ArraySpec {
        dtype: dtype.clone(),
        inner: Vec::new(),
        scalar: false,
        len_hint: Some(categories.len() as u64),
    };
    let attrs = encoding(array_kind(Some(&dtype)), "0.2.0");
    let handle = em.open(&format!("{out}/categories"), spec, attrs)?;
    em.append(handle, categories)?;
    em.close(handle)?;
    Ok(used)
}

/// A store error naming an element that does not follow the AnnData spec.
pub(crate) fn malformed(store: &AnnDataStore, path: &str, reason: &str) -> Error {
    Error::Source(annql_store::Error::Malformed {
        store: store.name().to_string(),
        path: path.to_string(),
        reason: reason.to_string(),
    })
}
