//! Rendering results: aligned tables that stay readable when wide or long, and the machine
//! formats (CSV, JSON, NDJSON, Parquet, Arrow IPC) written with the arrow/parquet writers.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::args::Format;
use crate::error::{CliError, Result};
use crate::interrupt::Since;

/// When a long write stops early: never (files, batch runs), or at a Ctrl-C pressed since it
/// began (the REPL), with [`CliError::Cancelled`]. Checked between rows and between batches.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// Write everything.
    Never,
    /// Stop at a Ctrl-C pressed after this moment.
    OnCtrlC(Since),
}

impl Stop {
    /// Stop at a Ctrl-C pressed from now on.
    pub fn on_ctrl_c() -> Stop {
        Stop::OnCtrlC(Since::now())
    }

    /// `Err(Cancelled)` once the write is to stop.
    fn check(self) -> Result<()> {
        match self {
            Stop::OnCtrlC(since) if since.pressed() => Err(CliError::Cancelled),
            _ => Ok(()),
        }
    }
}

/// How tables are shown to people.
#[derive(Debug, Clone)]
pub struct TableStyle {
    /// Most rows shown; the middle is elided beyond it.
    pub max_rows: usize,
    /// Widest a cell may be before it is cut with `…`.
    pub max_width: usize,
    /// Widest the whole table may be before middle columns are hidden.
    pub max_table_width: usize,
    /// One `column | value` block per row (psql's `\x`).
    pub expanded: bool,
}

impl Default for TableStyle {
    fn default() -> Self {
        Self {
            max_rows: 40,
            max_width: 40,
            max_table_width: 160,
            expanded: false,
        }
    }
}

/// Formats the rows of `batches` that `wanted` picks (by their index in the whole result) as
/// text cells and hands each to `each`, in order; only those rows are formatted.
fn each_row(
    batches: &[RecordBatch],
    wanted: impl Fn(usize) -> bool,
    stop: Stop,
    mut each: impl FnMut(Vec<String>) -> Result<()>,
) -> Result<()> {
    let options = FormatOptions::default().with_null("NULL");
    let mut index = 0;
    for batch in batches {
        let fmts = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for r in 0..batch.num_rows() {
            if wanted(index + r) {
                stop.check()?;
                each(fmts.iter().map(|f| f.value(r).to_string()).collect())?;
            }
        }
        index += batch.num_rows();
    }
    Ok(())
}

fn cut(s: &str, width: usize) -> String {
    let s = s.replace('\n', "↵");
    if s.chars().count() <= width {
        s
    } else {
        let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Renders an aligned table with a footer saying how many rows there are and what was hidden.
pub fn render_table(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    style: &TableStyle,
) -> Result<String> {
    render_table_until(schema, batches, style, Stop::Never)
}

/// [`render_table`], stopping at `stop`. Only the rows shown are formatted.
fn render_table_until(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    style: &TableStyle,
    stop: Stop,
) -> Result<String> {
    let n: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    if style.expanded {
        let mut out = Vec::new();
        write_expanded(schema, batches, stop, &mut out)?;
        let text = String::from_utf8_lossy(&out);
        return Ok(text.strip_suffix('\n').unwrap_or(&text).to_string());
    }
    // Rows shown: the first and last halves when there are too many.
    let half = style.max_rows / 2;
    let elided = n > style.max_rows;
    let mut shown: Vec<Vec<String>> = Vec::with_capacity(n.min(style.max_rows));
    each_row(
        batches,
        |i| !elided || i < half || i >= n - half,
        stop,
        |r| {
            shown.push(r);
            Ok(())
        },
    )?;
    let width_of = |i: usize| {
        shown
            .iter()
            .map(|r| cut(&r[i], style.max_width).chars().count())
            .chain([cut(&names[i], style.max_width).chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..names.len()).map(width_of).collect();
    // Columns shown: as many from each end as fit.
    let mut cols: Vec<usize> = (0..names.len()).collect();
    let total = |cols: &[usize]| cols.iter().map(|&i| widths[i] + 3).sum::<usize>() + 1;
    let mut hidden = 0;
    while cols.len() > 2 && total(&cols) > style.max_table_width {
        cols.remove(cols.len() / 2);
        hidden += 1;
    }
    let gap = hidden > 0;
    let mid = cols.len().div_ceil(2);
    let line = |cells: &dyn Fn(usize) -> String| {
        let mut parts: Vec<String> = cols
            .iter()
            .map(|&i| format!(" {:<w$} ", cells(i), w = widths[i]))
            .collect();
        if gap {
            parts.insert(mid, " … ".into());
        }
        format!("|{}|", parts.join("|"))
    };
    let rule = {
        let mut parts: Vec<String> = cols.iter().map(|&i| "-".repeat(widths[i] + 2)).collect();
        if gap {
            parts.insert(mid, "---".into());
        }
        format!("+{}+", parts.join("+"))
    };
    let mut out = vec![
        rule.clone(),
        line(&|i| cut(&names[i], style.max_width)),
        rule.clone(),
    ];
    for (k, row) in shown.iter().enumerate() {
        if elided && k == half {
            out.push(line(&|_| "…".into()));
        }
        out.push(line(&|i| cut(&row[i], style.max_width)));
    }
    out.push(rule);
    let mut footer = format!("({n} row{})", if n == 1 { "" } else { "s" });
    if elided {
        footer = format!("({n} rows, {} shown)", shown.len());
    }
    if hidden > 0 {
        footer.push_str(&format!(
            " ({hidden} column{} hidden; use \\x or .mode csv)",
            if hidden == 1 { "" } else { "s" }
        ));
    }
    out.push(footer);
    Ok(out.join("\n"))
}

/// psql's `\\x` display: one `column | value` block per row, written row by row.
fn write_expanded(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    stop: Stop,
    out: &mut dyn Write,
) -> Result<()> {
    let names: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
    let w = names.iter().map(|s| s.chars().count()).max().unwrap_or(0);
    let mut k = 0;
    each_row(
        batches,
        |_| true,
        stop,
        |row| {
            k += 1;
            writeln!(out, "-[ RECORD {k} ]{}", "-".repeat(w.saturating_sub(8)))?;
            for (name, v) in names.iter().zip(&row) {
                writeln!(out, "{name:<w$} | {v}")?;
            }
            Ok(())
        },
    )?;
    writeln!(out, "({k} row{})", if k == 1 { "" } else { "s" })?;
    Ok(())
}

/// A Markdown table (all rows).
pub fn render_markdown(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<String> {
    let mut out = Vec::new();
    write_markdown(schema, batches, Stop::Never, &mut out)?;
    // Every cell was a Rust string, so the table is UTF-8; drop the final newline.
    let text = String::from_utf8_lossy(&out);
    Ok(text.strip_suffix('\n').unwrap_or(&text).to_string())
}

/// A Markdown table (all rows), written row by row.
fn write_markdown(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    stop: Stop,
    out: &mut dyn Write,
) -> Result<()> {
    let esc = |s: &str| s.replace('|', "\\|");
    writeln!(
        out,
        "| {} |",
        schema
            .fields()
            .iter()
            .map(|f| esc(f.name()))
            .collect::<Vec<_>>()
            .join(" | ")
    )?;
    writeln!(out, "|{}|", vec!["---"; schema.fields().len()].join("|"))?;
    each_row(
        batches,
        |_| true,
        stop,
        |r| {
            writeln!(
                out,
                "| {} |",
                r.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")
            )?;
            Ok(())
        },
    )
}

/// Categorical (dictionary) columns as their plain values, for formats without dictionaries.
pub fn flatten_dictionaries(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, v) => f.as_ref().clone().with_data_type(v.as_ref().clone()),
            _ => f.as_ref().clone(),
        })
        .collect();
    let flat = Arc::new(Schema::new(fields));
    let batches = batches
        .iter()
        .map(|b| {
            let cols = b
                .columns()
                .iter()
                .zip(flat.fields())
                .map(|(c, f)| {
                    if c.data_type() == f.data_type() {
                        Ok(c.clone())
                    } else {
                        cast(c, f.data_type())
                    }
                })
                .collect::<Result<Vec<ArrayRef>, _>>()?;
            RecordBatch::try_new(flat.clone(), cols)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((flat, batches))
}

/// Writes one result in a text format to `out`.
pub fn write_text(
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    style: &TableStyle,
    out: &mut dyn Write,
) -> Result<()> {
    write_text_until(format, schema, batches, style, out, Stop::Never)
}

/// [`write_text`], stopping with [`CliError::Cancelled`] at `stop` (between rows and batches):
/// formatting and printing a large result takes long, and Ctrl-C must end it.
pub fn write_text_until(
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    style: &TableStyle,
    out: &mut dyn Write,
    stop: Stop,
) -> Result<()> {
    match format {
        Format::Table if style.expanded => write_expanded(schema, batches, stop, out)?,
        Format::Table => writeln!(out, "{}", render_table_until(schema, batches, style, stop)?)?,
        Format::Markdown => write_markdown(schema, batches, stop, out)?,
        // One window: the writing of a streamed result, all at once.
        Format::Csv | Format::Ndjson => {
            write_window_until(format, schema, batches, true, out, stop)?
        }
        Format::Json => {
            let (_, batches) = flatten_dictionaries(schema, batches)?;
            let mut w = arrow::json::ArrayWriter::new(&mut *out);
            for b in &batches {
                stop.check()?;
                w.write(b)?;
            }
            w.finish()?;
            drop(w);
            writeln!(out)?;
        }
        Format::Parquet | Format::Arrow => {
            return Err(CliError::Usage(format!(
                "{format:?} output is binary: give --output FILE"
            )));
        }
    }
    Ok(())
}

/// CSV of `batches` (with the header first when `header`), formatted on every core a window of
/// batches at a time and written in order: formatting numbers is most of the cost of a large
/// result.
fn write_csv(batches: &[RecordBatch], header: bool, out: &mut dyn Write, stop: Stop) -> Result<()> {
    let rows: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let format = |b: &RecordBatch, header: bool| -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        {
            let mut w = arrow_csv::WriterBuilder::new()
                .with_header(header)
                .build(&mut buf);
            w.write(b)?;
        }
        Ok(buf)
    };
    for (w, window) in rows.chunks(threads * 2).enumerate() {
        stop.check()?;
        let parts: Vec<Result<Vec<u8>>> = std::thread::scope(|s| {
            let handles: Vec<_> = window
                .iter()
                .enumerate()
                .map(|(i, b)| s.spawn(move || format(b, header && w == 0 && i == 0)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(CliError::Usage("the CSV writer thread panicked".into()))
                    })
                })
                .collect()
        });
        for part in parts {
            stop.check()?;
            out.write_all(&part?)?;
        }
    }
    Ok(())
}

/// One window of a streamed CSV or NDJSON result (`first`: the header goes before it; an empty
/// first window of a CSV result is the header alone).
pub fn write_window(
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    first: bool,
    out: &mut dyn Write,
) -> Result<()> {
    write_window_until(format, schema, batches, first, out, Stop::Never)
}

/// [`write_window`], stopping at `stop` between batches.
fn write_window_until(
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    first: bool,
    out: &mut dyn Write,
    stop: Stop,
) -> Result<()> {
    let (_, batches) = flatten_dictionaries(schema, batches)?;
    match format {
        Format::Csv if batches.iter().all(|b| b.num_rows() == 0) => {
            if first {
                writeln!(out, "{}", header_line(schema))?;
            }
        }
        Format::Csv => write_csv(&batches, first, out, stop)?,
        Format::Ndjson => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut *out);
            for b in &batches {
                stop.check()?;
                w.write(b)?;
            }
            w.finish()?;
        }
        other => {
            return Err(CliError::Usage(format!(
                "{other:?} results are written whole, not streamed"
            )));
        }
    }
    Ok(())
}

fn header_line(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect::<Vec<_>>()
        .join(",")
}

/// Writes one result to a file in `format` (binary formats included).
pub fn write_file(
    format: Format,
    path: &Path,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    style: &TableStyle,
) -> Result<()> {
    match format {
        Format::Parquet | Format::Arrow => {
            let mut w = BinaryWriter::create(format, path, schema)?;
            w.write(batches)?;
            w.finish()
        }
        _ => {
            let file = std::fs::File::create(path)?;
            let mut f = std::io::BufWriter::new(file);
            write_text(format, schema, batches, style, &mut f)?;
            f.flush()?;
            Ok(())
        }
    }
}

/// An error writing `path`, named after it.
fn in_file(path: &Path, e: &dyn std::fmt::Display) -> CliError {
    CliError::Usage(format!("{}: {e}", path.display()))
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
            cols.push(match written {
                Some(w) if c.data_type() == f.data_type() => w.remap(c, f)?,
                _ if c.data_type() == f.data_type() => c.clone(),
                _ => cast(c, f.data_type())?,
            });
        }
        Ok(RecordBatch::try_new(self.schema.clone(), cols)?)
    }
}

impl Written {
    /// `column` (a string dictionary) with keys into the values written so far, which grow by
    /// the values it lacks.
    fn remap(&mut self, column: &ArrayRef, field: &Field) -> Result<ArrayRef> {
        use arrow::array::{Array, AsArray, Int64Array, StringArray, make_array};
        use arrow::datatypes::Int64Type;
        let dict = column.as_any_dictionary();
        let values = dict.values();
        // The dictionary of the last batch again (a scan's, or a fused aggregate's categories).
        if let Some(same) = &self.same
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
        if identity {
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
        let named = |e: &dyn std::fmt::Display| in_file(path, e);
        let file = std::fs::File::create(path).map_err(|e| named(&e))?;
        let inner = match format {
            Format::Parquet => BinaryInner::Parquet(
                datafusion::parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None)
                    .map_err(|e| named(&e))?,
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
                .map_err(|e| named(&e))?;
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
        let named = |e: &dyn std::fmt::Display| in_file(&self.path, e);
        match &mut self.inner {
            BinaryInner::Parquet(w) => {
                for b in batches {
                    w.write(b).map_err(|e| named(&e))?;
                }
            }
            BinaryInner::Arrow(w, dictionaries) => {
                for b in batches {
                    w.write(&dictionaries.unify(b)?).map_err(|e| named(&e))?;
                }
            }
        }
        Ok(())
    }

    /// Writes the file's footer; a file not finished is not a valid Parquet/Arrow file.
    pub fn finish(self) -> Result<()> {
        let named = |e: &dyn std::fmt::Display| in_file(&self.path, e);
        match self.inner {
            BinaryInner::Parquet(w) => {
                w.close().map_err(|e| named(&e))?;
            }
            BinaryInner::Arrow(mut w, _) => {
                w.finish().map_err(|e| named(&e))?;
                w.into_inner()
                    .map_err(|e| named(&e))?
                    .flush()
                    .map_err(|e| named(&e))?;
            }
        }
        Ok(())
    }
}
