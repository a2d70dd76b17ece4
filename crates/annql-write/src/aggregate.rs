//! A group-by aggregate of a matrix written as an AnnData, in the layout of
//! `scanpy.get.aggregate`: obs are the groups with their key columns, var is the source's var, each
//! statistic is a layer named by its function, `X` is empty unless one statistic is copied there.
//!
//! scanpy's layout, which [`write_aggregate`] reproduces (scanpy 1.11, `get/_aggregated.py`):
//! - each key becomes an unordered categorical whose categories are the key's values present
//!   among the aggregated cells, in the column's category order (sorted values for a column that
//!   is not categorical);
//! - groups are the combinations of key values present, in the order of the categories' product
//!   (the first key varies slowest), and the obs index joins a group's values with `_`;
//! - every statistic is a dense float64 groups × genes layer named `sum`, `mean`,
//!   `count_nonzero` or `var` (sample variance, NaN for one-cell groups);
//! - var is the source's var, whole or along the gene selection.
//!
//! The engine computes the statistics ([`Aggregate`]); this module lays them out and streams them
//! into a [`Sink`].

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use annql_store::arrow::array::{
    Array, ArrayRef, Float64Array, Int8Array, Int16Array, Int32Array, StringArray,
};
use annql_store::arrow::datatypes::DataType;
use annql_store::{AnnDataStore, DType};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::output::Staged;
use crate::select::Rows;
use crate::sink::{self, ArraySpec, Attrs, Format, Sink};
use crate::subset::emit::{Emitter, Op};
use crate::subset::frame::cut_frame;
use crate::subset::{ExportOptions, ExportSummary, apply};

/// A statistic of `scanpy.get.aggregate`, named as scanpy names its layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggFunc {
    /// Sum over the group's cells.
    Sum,
    /// Mean over the group's cells, absent entries as 0.
    Mean,
    /// Cells of the group with a non-zero value.
    CountNonzero,
    /// Sample variance (ddof 1) over the group's cells, absent entries as 0.
    Var,
}

impl AggFunc {
    /// scanpy's name, which is the layer's name.
    pub fn name(self) -> &'static str {
        match self {
            AggFunc::Sum => "sum",
            AggFunc::Mean => "mean",
            AggFunc::CountNonzero => "count_nonzero",
            AggFunc::Var => "var",
        }
    }

    /// The function scanpy calls `name`.
    pub fn from_name(name: &str) -> Option<AggFunc> {
        Some(match name {
            "sum" => AggFunc::Sum,
            "mean" => AggFunc::Mean,
            "count_nonzero" => AggFunc::CountNonzero,
            "var" => AggFunc::Var,
            _ => return None,
        })
    }
}

/// One group-by key column of the output's obs.
#[derive(Debug, Clone)]
pub struct GroupKey {
    /// The obs column grouped by (the output column's name).
    pub name: String,
    /// The key's values present among the aggregated cells, in category order: `Utf8`, an
    /// integer type or `Boolean`.
    pub categories: ArrayRef,
    /// Each group's position in `categories`.
    pub codes: Vec<u32>,
}

/// A computed aggregate: groups, their keys and the statistics.
#[derive(Debug, Clone)]
pub struct Aggregate {
    /// The key columns, in the order grouped by.
    pub keys: Vec<GroupKey>,
    /// The obs index: each group's key values joined with `_`.
    pub group_names: Vec<String>,
    /// Genes (columns of every statistic).
    pub n_vars: u64,
    /// Each statistic, groups × genes, row-major.
    pub stats: Vec<(AggFunc, Vec<f64>)>,
    /// A statistic also written as `X`.
    pub x_from: Option<AggFunc>,
}

impl Aggregate {
    /// Checks that the parts agree in size (a mismatch is a bug of the caller).
    fn check(&self) -> Result<()> {
        let groups = self.group_names.len();
        let bad = |what: String| Err(Error::Internal(format!("aggregate: {what}")));
        for key in &self.keys {
            if key.codes.len() != groups {
                return bad(format!(
                    "key '{}' has {} codes for {groups} groups",
                    key.name,
                    key.codes.len()
                ));
            }
            if let Some(&c) = key
                .codes
                .iter()
                .find(|&&c| c as usize >= key.categories.len())
            {
                return bad(format!(
                    "key '{}' has code {c} past its categories",
                    key.name
                ));
            }
        }
        for (f, values) in &self.stats {
            if values.len() as u64 != groups as u64 * self.n_vars {
                return bad(format!(
                    "{} has {} values for {groups} × {}",
                    f.name(),
                    values.len(),
                    self.n_vars
                ));
            }
        }
        if let Some(x) = self.x_from
            && !self.stats.iter().any(|(f, _)| *f == x)
        {
            return bad(format!(
                "X is to be {} but that statistic was not computed",
                x.name()
            ));
        }
        Ok(())
    }
}

/// The source's var written as the output's var: the dataframe at `path` of `store` (`var`, or
/// `raw/var` when raw.X was aggregated), along `rows`.
#[derive(Debug, Clone, Copy)]
pub struct VarSource<'a> {
    /// The source store.
    pub store: &'a AnnDataStore,
    /// The dataframe's path in it.
    pub path: &'a str,
    /// The genes kept.
    pub rows: &'a Rows,
}

/// Writes `aggregate` as a new AnnData at `out` (through a temporary sibling renamed into place).
pub fn write_aggregate(
    aggregate: &Aggregate,
    var: VarSource<'_>,
    out: &Path,
    options: &ExportOptions,
) -> Result<ExportSummary> {
    let format = match &options.format {
        Some(f) => f.clone(),
        None => Format::from_path(out).ok_or_else(|| Error::Refused {
            element: out.display().to_string(),
            reason:
                "cannot tell the output format from the extension (.h5ad or .zarr); give the format"
                    .into(),
        })?,
    };
    let staged = Staged::begin(out, options.overwrite)?;
    let mut sink = sink::create(&format, staged.tmp(), &options.chunking)?;
    write_into(sink.as_mut(), aggregate, |sink| {
        copy_var(sink, var, options, out)
    })?;
    if let Some(flag) = options.cancel.as_deref()
        && flag.load(std::sync::atomic::Ordering::Relaxed)
    {
        return Err(Error::Cancelled(out.to_path_buf()));
    }
    sink.finish()?;
    let path = staged.commit()?;
    Ok(ExportSummary {
        path,
        format,
        n_obs: aggregate.group_names.len() as u64,
        n_vars: aggregate.n_vars,
    })
}

/// The source's var copied into `sink` at `var` by the subset copier's dataframe cut (run on a
/// reader thread, as the subset export runs it), unused categories dropped when genes were
/// selected as `adata[:, mask]` drops them.
fn copy_var(
    sink: &mut dyn Sink,
    var: VarSource<'_>,
    options: &ExportOptions,
    out: &Path,
) -> Result<()> {
    let df = var.store.element(var.path)?;
    let drop_unused = matches!(var.rows, Rows::Some(_));
    let (tx, rx) = sync_channel::<Op>(2);
    let cancel = options.cancel.as_deref();
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut em = Emitter::new(tx, cancel, out, options.block_bytes);
            cut_frame(&mut em, var.store, df, "var", var.rows, drop_unused).map(drop)
        });
        let written = apply(sink, rx, cancel, out);
        let read = reader
            .join()
            .map_err(|_| Error::Internal("the var copy's reader thread panicked".into()))?;
        // The writer's failure stopped the reader: report the writer's.
        written?;
        read
    })
}

fn attrs(value: Value) -> Attrs {
    match value {
        Value::Object(map) => map,
        _ => Attrs::new(),
    }
}

fn encoding(kind: &str, version: &str) -> Attrs {
    attrs(json!({"encoding-type": kind, "encoding-version": version}))
}

/// Writes the aggregate's elements into `sink`; `write_var` writes the `var` dataframe.
pub fn write_into(
    sink: &mut dyn Sink,
    aggregate: &Aggregate,
    write_var: impl FnOnce(&mut dyn Sink) -> Result<()>,
) -> Result<()> {
    aggregate.check()?;
    sink.group("", &encoding("anndata", "0.1.0"))?;
    write_obs(sink, aggregate)?;
    write_var(sink)?;
    let groups = aggregate.group_names.len() as u64;
    let matrix = |sink: &mut dyn Sink, path: &str, values: &[f64]| -> Result<()> {
        let spec = ArraySpec {
            dtype: DType::Float64,
            inner: vec![aggregate.n_vars],
            scalar: false,
            len_hint: Some(groups),
        };
        let id = sink.open_array(path, &spec, &encoding("array", "0.2.0"))?;
        // Appended a few MiB of whole rows at a time, so the write never copies a whole matrix.
        let rows_per_block = ((1usize << 19) / (aggregate.n_vars.max(1) as usize)).max(1);
        for block in values.chunks(rows_per_block * aggregate.n_vars.max(1) as usize) {
            let block: ArrayRef = Arc::new(Float64Array::from(block.to_vec()));
            sink.append(id, &block)?;
        }
        sink.close_array(id)
    };
    if let Some(x) = aggregate.x_from
        && let Some((_, values)) = aggregate.stats.iter().find(|(f, _)| *f == x)
    {
        matrix(sink, "X", values)?;
    }
    sink.group("layers", &encoding("dict", "0.1.0"))?;
    for (f, values) in &aggregate.stats {
        matrix(sink, &format!("layers/{}", f.name()), values)?;
    }
    for empty in ["obsm", "obsp", "varm", "varp", "uns"] {
        sink.group(empty, &encoding("dict", "0.1.0"))?;
    }
    Ok(())
}

/// One whole 1-D array.
fn write_array(
    sink: &mut dyn Sink,
    path: &str,
    dtype: DType,
    values: ArrayRef,
    attrs: &Attrs,
) -> Result<()> {
    let spec = ArraySpec {
        dtype,
        inner: Vec::new(),
        scalar: false,
        len_hint: Some(values.len() as u64),
    };
    let id = sink.open_array(path, &spec, attrs)?;
    sink.append(id, &values)?;
    sink.close_array(id)
}

/// obs: the group names as the index, each key an unordered categorical.
fn write_obs(sink: &mut dyn Sink, aggregate: &Aggregate) -> Result<()> {
    let names: Vec<&str> = aggregate.keys.iter().map(|k| k.name.as_str()).collect();
    let mut frame = encoding("dataframe", "0.2.0");
    frame.insert("_index".into(), json!("_index"));
    frame.insert("column-order".into(), json!(names));
    sink.group("obs", &frame)?;
    let index: ArrayRef = Arc::new(StringArray::from(aggregate.group_names.clone()));
    write_array(
        sink,
        "obs/_index",
        DType::String,
        index,
        &encoding("string-array", "0.2.0"),
    )?;
    for key in &aggregate.keys {
        let path = format!("obs/{}", key.name);
        let mut cat = encoding("categorical", "0.2.0");
        cat.insert("ordered".into(), json!(false));
        sink.group(&path, &cat)?;
        let (codes, code_type) = codes_as_pandas(&key.codes, key.categories.len());
        write_array(
            sink,
            &format!("{path}/codes"),
            code_type,
            codes,
            &encoding("array", "0.2.0"),
        )?;
        let (dtype, kind) = category_type(&key.categories).ok_or_else(|| Error::Refused {
            element: format!("obs/{}", key.name),
            reason: format!(
                "cannot group by values of type {}",
                key.categories.data_type()
            ),
        })?;
        write_array(
            sink,
            &format!("{path}/categories"),
            dtype,
            key.categories.clone(),
            &encoding(kind, "0.2.0"),
        )?;
    }
    Ok(())
}

/// Codes in the narrowest type pandas gives them (int8 below 128 categories, …).
fn codes_as_pandas(codes: &[u32], n_categories: usize) -> (ArrayRef, DType) {
    if n_categories < i8::MAX as usize {
        let c: Int8Array = codes.iter().map(|&c| c as i8).collect();
        (Arc::new(c), DType::Int8)
    } else if n_categories < i16::MAX as usize {
        let c: Int16Array = codes.iter().map(|&c| c as i16).collect();
        (Arc::new(c), DType::Int16)
    } else {
        let c: Int32Array = codes.iter().map(|&c| c as i32).collect();
        (Arc::new(c), DType::Int32)
    }
}

/// The stored type and encoding of categories of this Arrow type.
fn category_type(categories: &ArrayRef) -> Option<(DType, &'static str)> {
    Some(match categories.data_type() {
        DataType::Utf8 => (DType::String, "string-array"),
        DataType::Int8 => (DType::Int8, "array"),
        DataType::Int16 => (DType::Int16, "array"),
        DataType::Int32 => (DType::Int32, "array"),
        DataType::Int64 => (DType::Int64, "array"),
        DataType::UInt8 => (DType::UInt8, "array"),
        DataType::UInt16 => (DType::UInt16, "array"),
        DataType::UInt32 => (DType::UInt32, "array"),
        DataType::UInt64 => (DType::UInt64, "array"),
        DataType::Boolean => (DType::Bool, "array"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
