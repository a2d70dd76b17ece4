//! Rendering results as their batches arrive: aligned tables that stay readable when wide or
//! long, and the text formats (CSV, JSON, NDJSON, Markdown) written with the arrow writers. No
//! format holds a whole result: a table keeps only the rows it shows (its first and last) and
//! counts the rest; the others are written batch by batch. Parquet and Arrow files: [`crate::binary`].

use std::io::Write;
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
    /// Most rows shown (duckbox's max rows): beyond it the first and last halves are shown and
    /// the middle is counted, not kept.
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

/// The rows a table shows, gathered as the batches arrive: the first `max_rows` (all of them if
/// the result is that short) and a ring of the last `max_rows / 2`, with the count of all rows.
/// Only these rows are formatted, so a result of any length is shown in bounded memory.
#[derive(Debug, Default)]
struct Preview {
    head: Vec<Vec<String>>,
    tail: std::collections::VecDeque<Vec<String>>,
    rows: usize,
}

impl Preview {
    fn push(&mut self, batch: &RecordBatch, max_rows: usize, stop: Stop) -> Result<()> {
        let half = max_rows / 2;
        let n = batch.num_rows();
        // Rows this batch gives the head, and its last rows, which the tail (at most `half`
        // long) keeps: a row can be in both until the result outgrows `max_rows`.
        let head_take = max_rows.saturating_sub(self.rows).min(n);
        let tail_from = n.saturating_sub(half);
        if head_take > 0 || tail_from < n {
            let fmts = formatters(batch)?;
            let row =
                |r: usize| -> Vec<String> { fmts.iter().map(|f| f.value(r).to_string()).collect() };
            for r in 0..head_take {
                stop.check()?;
                self.head.push(row(r));
            }
            for r in tail_from..n {
                stop.check()?;
                self.tail.push_back(row(r));
                if self.tail.len() > half {
                    self.tail.pop_front();
                }
            }
        }
        self.rows += n;
        Ok(())
    }

    /// The rows shown, and whether the middle of the result was left out.
    fn shown(self, max_rows: usize) -> (Vec<Vec<String>>, bool) {
        if self.rows <= max_rows {
            return (self.head, false);
        }
        let mut shown = self.head;
        shown.truncate(max_rows / 2);
        shown.extend(self.tail);
        (shown, true)
    }
}

/// One text formatter per column of `batch` (NULL shown as `NULL`).
fn formatters(batch: &RecordBatch) -> Result<Vec<ArrayFormatter<'_>>> {
    let options = FormatOptions::default().with_null("NULL");
    Ok(batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()?)
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
    let mut preview = Preview::default();
    for b in batches {
        preview.push(b, style.max_rows, Stop::Never)?;
    }
    Ok(layout_table(schema, preview, style))
}

/// The table of `preview`'s rows: column widths from the rows shown, middle columns hidden
/// when the table is wider than `style.max_table_width`, and a footer with the row count.
fn layout_table(schema: &SchemaRef, preview: Preview, style: &TableStyle) -> String {
    let n = preview.rows;
    let half = style.max_rows / 2;
    let (shown, elided) = preview.shown(style.max_rows);
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
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
    out.join("\n")
}

/// A result in a text format, written as its batches arrive ([`TextWriter::write`]) and ended
/// by [`TextWriter::finish`]. A table keeps only the rows it shows; every other format writes
/// each batch as it comes, so memory stays bounded whatever the result's length.
pub struct TextWriter {
    schema: SchemaRef,
    style: TableStyle,
    stop: Stop,
    /// Rows written so far (the expanded display numbers its records with it).
    rows: usize,
    /// Whether anything was written yet (the CSV header, the Markdown header).
    started: bool,
    shape: Shape,
}

/// What a [`TextWriter`] keeps between batches, per format.
enum Shape {
    Table(Preview),
    Expanded,
    Markdown,
    Csv,
    Ndjson,
    /// One JSON array over all batches: the writer keeps the `[`/`,` state, each batch's text
    /// is moved out of its buffer as soon as it is written.
    Json(Box<arrow::json::ArrayWriter<Vec<u8>>>),
}

impl TextWriter {
    /// A writer of a result of `schema` in `format` (a text format), stopping with
    /// [`CliError::Cancelled`] at `stop` (between rows and batches): printing a large result
    /// takes long, and Ctrl-C must end it.
    pub fn try_new(
        format: Format,
        schema: &SchemaRef,
        style: &TableStyle,
        stop: Stop,
    ) -> Result<Self> {
        let shape = match format {
            Format::Table if style.expanded => Shape::Expanded,
            Format::Table => Shape::Table(Preview::default()),
            Format::Markdown => Shape::Markdown,
            Format::Csv => Shape::Csv,
            Format::Ndjson => Shape::Ndjson,
            Format::Json => Shape::Json(Box::new(arrow::json::ArrayWriter::new(Vec::new()))),
            Format::Parquet | Format::Arrow => {
                return Err(CliError::Usage(format!(
                    "{format:?} output is binary: give --output FILE"
                )));
            }
        };
        Ok(Self {
            schema: schema.clone(),
            style: style.clone(),
            stop,
            rows: 0,
            started: false,
            shape,
        })
    }

    /// Writes (or, for a table, takes in) the next batches of the result.
    pub fn write(&mut self, batches: &[RecordBatch], out: &mut dyn Write) -> Result<()> {
        let stop = self.stop;
        match &mut self.shape {
            Shape::Table(preview) => {
                for b in batches {
                    stop.check()?;
                    preview.push(b, self.style.max_rows, stop)?;
                }
            }
            Shape::Expanded => {
                for b in batches {
                    self.rows = write_expanded(&self.schema, b, self.rows, stop, out)?;
                }
            }
            Shape::Markdown => {
                if !self.started {
                    write_markdown_header(&self.schema, out)?;
                    self.started = true;
                }
                for b in batches {
                    write_markdown_rows(b, stop, out)?;
                }
            }
            Shape::Csv => {
                let batches = flatten_dictionaries(&self.schema, batches)?.1;
                let rows: Vec<RecordBatch> =
                    batches.into_iter().filter(|b| b.num_rows() > 0).collect();
                if !rows.is_empty() {
                    write_csv(&rows, !self.started, out, stop)?;
                    self.started = true;
                }
            }
            Shape::Ndjson => {
                let batches = flatten_dictionaries(&self.schema, batches)?.1;
                let mut w = arrow::json::LineDelimitedWriter::new(&mut *out);
                for b in &batches {
                    stop.check()?;
                    w.write(b)?;
                }
                w.finish()?;
            }
            Shape::Json(w) => {
                let batches = flatten_dictionaries(&self.schema, batches)?.1;
                for b in &batches {
                    stop.check()?;
                    w.write(b)?;
                    out.write_all(w.get_mut())?;
                    w.get_mut().clear();
                }
            }
        }
        Ok(())
    }

    /// Ends the result: the table itself (a table is laid out once its rows are counted), the
    /// footer of the expanded display, the CSV header of an empty result, the end of the JSON
    /// array.
    pub fn finish(self, out: &mut dyn Write) -> Result<()> {
        match self.shape {
            Shape::Table(preview) => {
                writeln!(out, "{}", layout_table(&self.schema, preview, &self.style))?
            }
            Shape::Expanded => {
                let k = self.rows;
                writeln!(out, "({k} row{})", if k == 1 { "" } else { "s" })?;
            }
            Shape::Markdown if !self.started => write_markdown_header(&self.schema, out)?,
            Shape::Csv if !self.started => writeln!(out, "{}", header_line(&self.schema))?,
            Shape::Markdown | Shape::Csv | Shape::Ndjson => {}
            Shape::Json(mut w) => {
                w.finish()?;
                out.write_all(w.get_mut())?;
                writeln!(out)?;
            }
        }
        Ok(())
    }
}

/// Writes a whole result held in memory in a text format (tests, small results).
pub fn write_text(
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    style: &TableStyle,
    out: &mut dyn Write,
) -> Result<()> {
    let mut w = TextWriter::try_new(format, schema, style, Stop::Never)?;
    w.write(batches, out)?;
    w.finish(out)
}

/// psql's `\\x` display of `batch`: one `column | value` block per row, numbered on from
/// `before` rows already written; returns the rows written in all.
fn write_expanded(
    schema: &SchemaRef,
    batch: &RecordBatch,
    before: usize,
    stop: Stop,
    out: &mut dyn Write,
) -> Result<usize> {
    let names: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
    let w = names.iter().map(|s| s.chars().count()).max().unwrap_or(0);
    let fmts = formatters(batch)?;
    let mut k = before;
    for r in 0..batch.num_rows() {
        stop.check()?;
        k += 1;
        writeln!(out, "-[ RECORD {k} ]{}", "-".repeat(w.saturating_sub(8)))?;
        for (name, f) in names.iter().zip(&fmts) {
            writeln!(out, "{name:<w$} | {}", f.value(r))?;
        }
    }
    Ok(k)
}

/// The header of a Markdown table: column names and the `|---|` line.
fn write_markdown_header(schema: &SchemaRef, out: &mut dyn Write) -> Result<()> {
    let names: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| escape_cell(f.name()))
        .collect();
    writeln!(out, "| {} |", names.join(" | "))?;
    writeln!(out, "|{}|", vec!["---"; schema.fields().len()].join("|"))?;
    Ok(())
}

/// The rows of `batch` as Markdown table rows.
fn write_markdown_rows(batch: &RecordBatch, stop: Stop, out: &mut dyn Write) -> Result<()> {
    let fmts = formatters(batch)?;
    for r in 0..batch.num_rows() {
        stop.check()?;
        let cells: Vec<String> = fmts
            .iter()
            .map(|f| escape_cell(&f.value(r).to_string()))
            .collect();
        writeln!(out, "| {} |", cells.join(" | "))?;
    }
    Ok(())
}

/// A Markdown cell's `|` escaped.
fn escape_cell(s: &str) -> String {
    s.replace('|', "\\|")
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

/// The CSV header line of `schema`.
fn header_line(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    fn batches(sizes: &[usize]) -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let mut next = 0i64;
        let batches = sizes
            .iter()
            .map(|&len| {
                let values: Int64Array = (next..next + len as i64).collect();
                next += len as i64;
                RecordBatch::try_new(schema.clone(), vec![Arc::new(values)])
            })
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| panic!("{e}"));
        (schema, batches)
    }

    /// The rows a table shows are the first and last halves of the result, whatever its
    /// batches' lengths (empty ones, ones shorter than a half, ones longer than the result's
    /// display limit).
    #[test]
    fn a_table_shows_the_first_and_last_rows_however_batched() {
        for sizes in [
            &[0, 3, 0, 1, 50, 7][..],
            &[100],
            &[1; 61],
            &[39, 1],
            &[40, 1],
            &[],
            &[5, 0, 2],
        ] {
            let (_, batches) = batches(sizes);
            let total: usize = sizes.iter().sum();
            for max_rows in [0, 1, 6, 40] {
                let mut preview = Preview::default();
                for b in &batches {
                    preview
                        .push(b, max_rows, Stop::Never)
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                assert_eq!(preview.rows, total);
                let (shown, elided) = preview.shown(max_rows);
                let want: Vec<usize> = if total <= max_rows {
                    (0..total).collect()
                } else {
                    (0..max_rows / 2)
                        .chain(total - max_rows / 2..total)
                        .collect()
                };
                let got: Vec<usize> = shown
                    .iter()
                    .map(|r| r[0].parse().unwrap_or_else(|e| panic!("{e}")))
                    .collect();
                assert_eq!(got, want, "batches {sizes:?}, max_rows {max_rows}");
                assert_eq!(elided, total > max_rows);
            }
        }
    }
}
