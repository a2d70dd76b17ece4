//! Parquet and Arrow IPC result files, written a window of batches at a time (categorical
//! columns kept as dictionaries in Arrow files).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::args::Format;
use crate::error::{CliError, Result};

/// An error writing `path`, named after it.
fn in_file(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> CliError {
    CliError::File {
        what: "",
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

/// A Parquet or Arrow IPC file written a window of batches at a time, so a large result streams
/// to disk instead of being held whole.
pub struct BinaryWriter {
    path: std::path::PathBuf,
    inner: BinaryInner,
}

enum BinaryInner {
    Parquet(datafusion::parquet::arrow::ArrowWriter<std::fs::File>),
    Arrow(
        arrow_ipc::writer::FileWriter<std::io::BufWriter<std::fs::File>>,
        Dictionaries,
    ),
}

/// The categorical columns of an Arrow IPC file, kept as dictionaries. A file holds one
/// dictionary per column, which may only grow (as deltas), while a result's batches may each
/// carry their own (an aggregate's output): each batch's keys are remapped onto the dictionary
/// written so far, grown by the values it lacks. String-valued dictionaries are kept; other
/// categorical columns are written as their values.
struct Dictionaries {
    /// The file's schema.
    schema: SchemaRef,
    /// Per column: the values written so far and their positions, for a kept dictionary.
    columns: Vec<Option<Written>>,
}

#[derive(Default)]
struct Written {
    /// The values written so far, and the position of each.
    values: Vec<String>,
    position: std::collections::HashMap<String, i64>,
    /// `values` as the dictionary written with the last batch.
    dictionary: Option<ArrayRef>,
    /// The last batch's own dictionary, when it was `values` exactly (passed on as it is).
    same: Option<ArrayRef>,
}

impl Dictionaries {
    /// The file schema for results of `schema`.
    fn new(schema: &SchemaRef) -> Self {
        let kept = |f: &Field| match f.data_type() {
            DataType::Dictionary(_, v) => v.as_ref() == &DataType::Utf8,
            _ => true,
        };
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Dictionary(_, v) if !kept(f) => {
                    f.as_ref().clone().with_data_type(v.as_ref().clone())
                }
                _ => f.as_ref().clone(),
            })
            .collect();
        let columns = fields
            .iter()
            .map(|f| matches!(f.data_type(), DataType::Dictionary(..)).then(Written::default))
            .collect();
        Self {
            schema: Arc::new(Schema::new(fields)),
            columns,
        }
    }

    /// `batch` with its categorical columns on the file's dictionaries.
    fn unify(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let mut cols = Vec::with_capacity(batch.num_columns());
        for ((c, f), written) in batch
            .columns()
            .iter()
            .zip(self.schema.fields())
            .zip(&mut self.columns)
        {
            let string_dictionary = matches!(
                c.data_type(),
                DataType::Dictionary(_, v) if v.as_ref() == &DataType::Utf8
            );
            cols.push(match written {
                Some(w) if c.data_type() == f.data_type() => w.remap(c, f, true)?,
                // Another key type: re-keyed onto the file's dictionary, never cast with its own.
                Some(w) if string_dictionary => w.remap(c, f, false)?,
                // Plain strings where the plan has a categorical (a cluster's batches, decoded
                // by its exchanges): encoded, then re-keyed onto the file's dictionary.
                Some(w) if c.data_type() == &DataType::Utf8 => {
                    let int32 =
                        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
                    w.remap(&cast(c, &int32)?, f, false)?
                }
                _ if c.data_type() == f.data_type() => c.clone(),
                _ => cast(c, f.data_type())?,
            });
        }
        Ok(RecordBatch::try_new(self.schema.clone(), cols)?)
    }
}

impl Written {
    /// `column` (a string dictionary) with keys into the values written so far, which grow by
    /// the values it lacks. `same_type`: the column has the field's type, so it may pass as it
    /// is when its dictionary is the one written.
    fn remap(&mut self, column: &ArrayRef, field: &Field, same_type: bool) -> Result<ArrayRef> {
        use arrow::array::{Array, AsArray, Int64Array, StringArray, make_array};
        use arrow::datatypes::Int64Type;
        let dict = column.as_any_dictionary();
        let values = dict.values();
        // The dictionary of the last batch again (a scan's, or a fused aggregate's categories).
        if let Some(same) = &self.same
            && same_type
            && (Arc::ptr_eq(same, values) || same.to_data() == values.to_data())
        {
            return Ok(column.clone());
        }
        let before = self.values.len();
        let mapping: Int64Array = values
            .as_string::<i32>()
            .iter()
            // A null among the values stays null (its keys become null keys): it is not the
            // category "".
            .map(|v| {
                v.map(|v| {
                    *self.position.entry(v.to_string()).or_insert_with(|| {
                        self.values.push(v.to_string());
                        self.values.len() as i64 - 1
                    })
                })
            })
            .collect();
        if self.values.len() > before || self.dictionary.is_none() {
            self.dictionary = Some(Arc::new(StringArray::from_iter_values(&self.values)));
        }
        let identity = mapping.len() == self.values.len()
            && mapping.null_count() == 0
            && mapping
                .values()
                .iter()
                .enumerate()
                .all(|(i, &p)| p == i as i64);
        if identity && same_type {
            self.same = Some(values.clone());
            return Ok(column.clone());
        }
        self.same = None;
        let DataType::Dictionary(key_type, _) = field.data_type() else {
            return Ok(column.clone());
        };
        let keys = cast(dict.keys(), &DataType::Int64)?;
        let keys = arrow::compute::take(&mapping, keys.as_primitive::<Int64Type>(), None)?;
        let strict = arrow::compute::CastOptions {
            safe: false,
            ..Default::default()
        };
        let keys = arrow::compute::kernels::cast::cast_with_options(&keys, key_type, &strict)
            .map_err(|_| {
                CliError::Usage(format!(
                    "column '{}' has more categories across batches than {key_type} codes hold",
                    field.name()
                ))
            })?;
        let dictionary = self.dictionary.clone().unwrap_or_else(|| values.clone());
        let data = keys
            .to_data()
            .into_builder()
            .data_type(field.data_type().clone())
            .child_data(vec![dictionary.to_data()])
            .build()?;
        Ok(make_array(data))
    }
}

impl BinaryWriter {
    /// Creates `path` for a result of `schema` in `format` (Parquet or Arrow).
    pub fn create(format: Format, path: &Path, schema: &SchemaRef) -> Result<Self> {
        let file = std::fs::File::create(path).map_err(|e| in_file(path, e))?;
        let inner = match format {
            Format::Parquet => BinaryInner::Parquet(
                datafusion::parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None)
                    .map_err(|e| in_file(path, e))?,
            ),
            Format::Arrow => {
                let dictionaries = Dictionaries::new(schema);
                let options = arrow_ipc::writer::IpcWriteOptions::default()
                    .with_dictionary_handling(arrow_ipc::writer::DictionaryHandling::Delta);
                let writer = arrow_ipc::writer::FileWriter::try_new_with_options(
                    std::io::BufWriter::new(file),
                    &dictionaries.schema,
                    options,
                )
                .map_err(|e| in_file(path, e))?;
                BinaryInner::Arrow(writer, dictionaries)
            }
            other => {
                return Err(CliError::Usage(format!("{other:?} is not a binary format")));
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            inner,
        })
    }

    /// Appends batches.
    pub fn write(&mut self, batches: &[RecordBatch]) -> Result<()> {
        match &mut self.inner {
            BinaryInner::Parquet(w) => {
                for b in batches {
                    w.write(b).map_err(|e| in_file(&self.path, e))?;
                }
            }
            BinaryInner::Arrow(w, dictionaries) => {
                for b in batches {
                    w.write(&dictionaries.unify(b)?)
                        .map_err(|e| in_file(&self.path, e))?;
                }
            }
        }
        Ok(())
    }

    /// Writes the file's footer; a file not finished is not a valid Parquet/Arrow file.
    pub fn finish(self) -> Result<()> {
        match self.inner {
            BinaryInner::Parquet(w) => {
                w.close().map_err(|e| in_file(&self.path, e))?;
            }
            BinaryInner::Arrow(mut w, _) => {
                w.finish().map_err(|e| in_file(&self.path, e))?;
                w.into_inner()
                    .map_err(|e| in_file(&self.path, e))?
                    .flush()
                    .map_err(|e| in_file(&self.path, e))?;
            }
        }
        Ok(())
    }
}
