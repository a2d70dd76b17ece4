//! A new AnnData written from parts that are not one store: dataframes given as Arrow arrays and
//! sparse matrices streamed as blocks of CSR rows. This is how a collection of stores (or a
//! selection of it) is written as one AnnData — annql's `concat_on_disk`: the engine brings the
//! datasets' rows together, this writes them as anndata's `concat` would lay them out.

use std::path::Path;
use std::sync::Arc;

use annql_store::DType;
use annql_store::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int8Array, Int16Array, Int32Array, Int64Array,
};
use annql_store::arrow::compute::{cast, is_not_null};
use annql_store::arrow::datatypes::{DataType, Int32Type};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::output::Staged;
use crate::sink::{self, ArraySpec, Attrs, Format, Sink};
use crate::subset::{ExportOptions, ExportSummary};

/// A dataframe as Arrow: its index (text) and its columns, in order.
#[derive(Debug, Clone)]
pub struct ArrowFrame {
    /// The index (`obs_names`, `var_names`).
    pub index: ArrayRef,
    /// The columns: name and values (strings, numbers, booleans, dictionaries of strings), with
    /// nulls where a value is missing.
    pub columns: Vec<(String, ArrayRef)>,
}

/// A block of consecutive rows of a CSR matrix.
#[derive(Debug, Clone)]
pub struct CsrBlock {
    /// Stored entries of each row of the block.
    pub row_lengths: Vec<u64>,
    /// Column of each entry, rows one after another.
    pub indices: Vec<i64>,
    /// Value of each entry (the matrix's dtype).
    pub values: ArrayRef,
}

/// A sparse matrix written as CSR, its rows arriving in blocks, in order.
pub struct CsrMatrixOut<'a> {
    /// Where in the AnnData (`X`, `layers/counts`).
    pub path: String,
    /// Its columns.
    pub n_cols: u64,
    /// Its values' type.
    pub dtype: DType,
    /// The blocks; `None` when every row was given.
    pub blocks: Box<dyn FnMut() -> Result<Option<CsrBlock>> + 'a>,
}

/// Writes obs, var and the matrices as a new AnnData at `out` (through a temporary sibling
/// renamed into place; a failure leaves nothing).
pub fn write_frames(
    out: &Path,
    options: &ExportOptions,
    obs: &ArrowFrame,
    var: &ArrowFrame,
    matrices: Vec<CsrMatrixOut<'_>>,
) -> Result<ExportSummary> {
    let format = match &options.format {
        Some(f) => f.clone(),
        None => Format::from_path(out).ok_or_else(|| Error::Refused {
            element: out.display().to_string(),
            reason: "cannot tell the output format from the extension (.h5ad or .zarr); \
                     give the format"
                .into(),
        })?,
    };
    let staged = Staged::begin(out, options.overwrite)?;
    let mut sink = sink::create(&format, staged.tmp(), &options.chunking)?;
    let (n_obs, n_vars) = (obs.index.len() as u64, var.index.len() as u64);
    sink.group("", &encoding("anndata", "0.1.0"))?;
    write_frame(sink.as_mut(), "obs", obs)?;
    write_frame(sink.as_mut(), "var", var)?;
    let mut layers = false;
    for m in matrices {
        if m.n_cols != n_vars {
            return Err(Error::Internal(format!(
                "{} has {} columns for {n_vars} genes",
                m.path, m.n_cols
            )));
        }
        if m.path.starts_with("layers/") && !layers {
            sink.group("layers", &encoding("dict", "0.1.0"))?;
            layers = true;
        }
        write_csr(sink.as_mut(), m, n_obs, options)?;
    }
    let groups: &[&str] = if layers {
        &["obsm", "obsp", "varm", "varp", "uns"]
    } else {
        &["layers", "obsm", "obsp", "varm", "varp", "uns"]
    };
    for g in groups {
        sink.group(g, &encoding("dict", "0.1.0"))?;
    }
    sink.finish()?;
    let path = staged.commit()?;
    Ok(ExportSummary {
        path,
        format,
        n_obs,
        n_vars,
    })
}

fn write_csr(
    sink: &mut dyn Sink,
    mut m: CsrMatrixOut<'_>,
    n_rows: u64,
    options: &ExportOptions,
) -> Result<()> {
    let mut attrs = encoding("csr_matrix", "0.1.0");
    attrs.insert("shape".into(), json!([n_rows, m.n_cols]));
    sink.group(&m.path, &attrs)?;
    let spec = |dtype: DType, len_hint| ArraySpec {
        dtype,
        inner: Vec::new(),
        scalar: false,
        len_hint,
    };
    let data = sink.open_array(
        &format!("{}/data", m.path),
        &spec(m.dtype.clone(), None),
        &Attrs::new(),
    )?;
    // Indices and offsets as int64: their count is not known before the last block.
    let indices = sink.open_array(
        &format!("{}/indices", m.path),
        &spec(DType::Int64, None),
        &Attrs::new(),
    )?;
    let indptr = sink.open_array(
        &format!("{}/indptr", m.path),
        &spec(DType::Int64, Some(n_rows + 1)),
        &Attrs::new(),
    )?;
    sink.append(indptr, &(Arc::new(Int64Array::from(vec![0])) as ArrayRef))?;
    let (mut rows, mut at) = (0u64, 0i64);
    while let Some(block) = (m.blocks)()? {
        if let Some(flag) = options.cancel.as_deref()
            && flag.load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(Error::Cancelled(m.path.clone().into()));
        }
        let stored: u64 = block.row_lengths.iter().sum();
        if stored != block.indices.len() as u64 || stored != block.values.len() as u64 {
            return Err(Error::Internal(format!(
                "{}: a block of {stored} entries has {} indices and {} values",
                m.path,
                block.indices.len(),
                block.values.len()
            )));
        }
        if let Some(&bad) = block
            .indices
            .iter()
            .find(|&&c| c < 0 || c as u64 >= m.n_cols)
        {
            return Err(Error::Internal(format!(
                "{}: column {bad} out of range",
                m.path
            )));
        }
        let offsets: Vec<i64> = block
            .row_lengths
            .iter()
            .map(|&n| {
                at += n as i64;
                at
            })
            .collect();
        rows += block.row_lengths.len() as u64;
        sink.append(data, &block.values)?;
        sink.append(
            indices,
            &(Arc::new(Int64Array::from(block.indices)) as ArrayRef),
        )?;
        sink.append(indptr, &(Arc::new(Int64Array::from(offsets)) as ArrayRef))?;
    }
    if rows != n_rows {
        return Err(Error::Internal(format!(
            "{}: {rows} rows for {n_rows} cells",
            m.path
        )));
    }
    sink.close_array(data)?;
    sink.close_array(indices)?;
    sink.close_array(indptr)
}

/// A dataframe group with its index and columns, encoded as anndata encodes pandas columns:
/// `array`, `string-array`, `categorical`, and the nullable encodings where values are missing.
fn write_frame(sink: &mut dyn Sink, path: &str, frame: &ArrowFrame) -> Result<()> {
    let names: Vec<&str> = frame.columns.iter().map(|(n, _)| n.as_str()).collect();
    let mut attrs = encoding("dataframe", "0.2.0");
    attrs.insert("_index".into(), json!("_index"));
    attrs.insert("column-order".into(), json!(names));
    sink.group(path, &attrs)?;
    let index = cast(&frame.index, &DataType::Utf8).map_err(converting(path))?;
    whole(
        sink,
        &format!("{path}/_index"),
        DType::String,
        index,
        "string-array",
    )?;
    for (name, values) in &frame.columns {
        if name == "_index" || name.contains('/') {
            return Err(Error::Refused {
                element: format!("{path}/{name}"),
                reason: "a column name anndata cannot store".into(),
            });
        }
        write_column(sink, &format!("{path}/{name}"), values)?;
    }
    Ok(())
}

fn write_column(sink: &mut dyn Sink, path: &str, values: &ArrayRef) -> Result<()> {
    let refuse = || Error::Refused {
        element: path.to_string(),
        reason: format!("a column of type {} cannot be written", values.data_type()),
    };
    let nulls = values.null_count() > 0;
    match values.data_type() {
        DataType::Dictionary(_, _) => write_categorical(sink, path, values),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let text = cast(values, &DataType::Utf8).map_err(converting(path))?;
            if nulls {
                nullable(
                    sink,
                    path,
                    "nullable-string-array",
                    text,
                    DType::String,
                    "string-array",
                )
            } else {
                whole(sink, path, DType::String, text, "string-array")
            }
        }
        DataType::Boolean if nulls => nullable(
            sink,
            path,
            "nullable-boolean",
            values.clone(),
            DType::Bool,
            "array",
        ),
        DataType::Boolean => whole(sink, path, DType::Bool, values.clone(), "array"),
        t if t.is_integer() && nulls => {
            let ints = cast(values, &DataType::Int64).map_err(converting(path))?;
            nullable(sink, path, "nullable-integer", ints, DType::Int64, "array")
        }
        t if t.is_floating() => {
            // Missing values are NaN, as pandas keeps them.
            let floats = cast(values, &DataType::Float64).map_err(converting(path))?;
            let floats = floats.as_primitive::<annql_store::arrow::datatypes::Float64Type>();
            let filled: ArrayRef = Arc::new(
                floats
                    .iter()
                    .map(|v| Some(v.unwrap_or(f64::NAN)))
                    .collect::<annql_store::arrow::array::Float64Array>(),
            );
            let dtype = if *t == DataType::Float32 {
                DType::Float32
            } else {
                DType::Float64
            };
            let filled = if dtype == DType::Float32 {
                cast(&filled, &DataType::Float32).map_err(converting(path))?
            } else {
                filled
            };
            whole(sink, path, dtype, filled, "array")
        }
        t => {
            let dtype = dtype_of(t).ok_or_else(refuse)?;
            whole(sink, path, dtype, values.clone(), "array")
        }
    }
}

/// A categorical: codes (−1 where missing, in the narrowest type pandas uses) and categories.
fn write_categorical(sink: &mut dyn Sink, path: &str, values: &ArrayRef) -> Result<()> {
    let dict = cast(
        values,
        &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
    )
    .map_err(converting(path))?;
    let dict = dict.as_dictionary::<Int32Type>();
    let mut cat = encoding("categorical", "0.2.0");
    cat.insert("ordered".into(), json!(false));
    sink.group(path, &cat)?;
    // Dictionaries concatenated from several batches repeat their values: one category per
    // distinct value, as pandas requires.
    let names = cast(dict.values(), &DataType::Utf8).map_err(converting(path))?;
    let names = names.as_string::<i32>();
    let mut seen: std::collections::HashMap<&str, i32> = std::collections::HashMap::new();
    let mut unique: Vec<&str> = Vec::new();
    let recode: Vec<i32> = (0..names.len())
        .map(|i| {
            let v = if names.is_null(i) { "" } else { names.value(i) };
            *seen.entry(v).or_insert_with(|| {
                unique.push(v);
                unique.len() as i32 - 1
            })
        })
        .collect();
    let n = unique.len();
    let codes: Vec<i32> = dict
        .keys()
        .iter()
        .map(|k| k.map_or(-1, |k| recode[k as usize]))
        .collect();
    let (codes, dtype): (ArrayRef, DType) = if n < i8::MAX as usize {
        let c: Int8Array = codes.iter().map(|&c| Some(c as i8)).collect();
        (Arc::new(c), DType::Int8)
    } else if n < i16::MAX as usize {
        let c: Int16Array = codes.iter().map(|&c| Some(c as i16)).collect();
        (Arc::new(c), DType::Int16)
    } else {
        (Arc::new(Int32Array::from(codes)), DType::Int32)
    };
    whole(sink, &format!("{path}/codes"), dtype, codes, "array")?;
    let categories: ArrayRef = Arc::new(annql_store::arrow::array::StringArray::from(unique));
    whole(
        sink,
        &format!("{path}/categories"),
        DType::String,
        categories,
        "string-array",
    )
}

/// A nullable encoding: `values` (missing ones filled) and `mask` (true where missing).
fn nullable(
    sink: &mut dyn Sink,
    path: &str,
    kind: &str,
    values: ArrayRef,
    dtype: DType,
    values_kind: &str,
) -> Result<()> {
    sink.group(path, &encoding(kind, "0.1.0"))?;
    let mask: BooleanArray = is_not_null(&values)
        .and_then(|present| annql_store::arrow::compute::not(&present))
        .map_err(converting(path))?;
    let filled: ArrayRef = match values.data_type() {
        DataType::Utf8 => Arc::new(
            values
                .as_string::<i32>()
                .iter()
                .map(|v| Some(v.unwrap_or("")))
                .collect::<annql_store::arrow::array::StringArray>(),
        ),
        DataType::Boolean => Arc::new(
            values
                .as_boolean()
                .iter()
                .map(|v| Some(v.unwrap_or(false)))
                .collect::<BooleanArray>(),
        ),
        _ => Arc::new(
            values
                .as_primitive::<annql_store::arrow::datatypes::Int64Type>()
                .iter()
                .map(|v| Some(v.unwrap_or(0)))
                .collect::<Int64Array>(),
        ),
    };
    whole(sink, &format!("{path}/values"), dtype, filled, values_kind)?;
    whole(
        sink,
        &format!("{path}/mask"),
        DType::Bool,
        Arc::new(mask),
        "array",
    )
}

/// One whole 1-D array.
fn whole(
    sink: &mut dyn Sink,
    path: &str,
    dtype: DType,
    values: ArrayRef,
    kind: &str,
) -> Result<()> {
    let spec = ArraySpec {
        dtype,
        inner: Vec::new(),
        scalar: false,
        len_hint: Some(values.len() as u64),
    };
    let id = sink.open_array(path, &spec, &encoding(kind, "0.2.0"))?;
    sink.append(id, &values)?;
    sink.close_array(id)
}

/// An Arrow conversion of element `path` that failed.
fn converting(path: &str) -> impl Fn(annql_store::arrow::error::ArrowError) -> Error + '_ {
    move |e| Error::Refused {
        element: path.to_string(),
        reason: format!("its values cannot be converted: {e}"),
    }
}

/// The stored type of values of Arrow type `t` (numbers and booleans), if annql writes it.
pub fn dtype_of(t: &DataType) -> Option<DType> {
    Some(match t {
        DataType::Float32 => DType::Float32,
        DataType::Float64 => DType::Float64,
        DataType::Boolean => DType::Bool,
        DataType::Int8 => DType::Int8,
        DataType::Int16 => DType::Int16,
        DataType::Int32 => DType::Int32,
        DataType::Int64 => DType::Int64,
        DataType::UInt8 => DType::UInt8,
        DataType::UInt16 => DType::UInt16,
        DataType::UInt32 => DType::UInt32,
        DataType::UInt64 => DType::UInt64,
        _ => return None,
    })
}

fn encoding(kind: &str, version: &str) -> Attrs {
    match json!({"encoding-type": kind, "encoding-version": version}) {
        Value::Object(map) => map,
        _ => Attrs::new(),
    }
}
