//! Stage `decode`: the Arrow schema of each table kind, and record batches built from range reads.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use annql_store::arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, RecordBatchOptions, StringArray, UInt32Array,
    new_null_array,
};
use annql_store::arrow::compute::take;
use annql_store::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use annql_store::{AnnDataStore, DType, Element, Encoding, ReadStats, SparseCarry};
use datafusion::error::{DataFusionError, Result};

use crate::check;
use crate::error::{Error, store_err};
use crate::model::{Axis, TableDef, TableKind};

/// Where a table column comes from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// The row position (`obs_id`, `var_id`).
    RowId,
    /// A dataframe column element (the index too).
    Column(Box<Element>),
    /// Component `i` of a dense embedding.
    Component(usize),
    /// Matrix row id, column id, value.
    MatrixRow,
    /// Matrix column id.
    MatrixCol,
    /// Matrix value.
    MatrixValue,
    /// `uns` path, type, value.
    Uns,
    /// A column annql cannot read: reading it raises this note (see [`crate::check`]).
    Unmapped(Note),
}

/// Why a table or column cannot be read: the store's error naming the element and the reason.
pub type Note = Arc<annql_store::Error>;

/// A table bound to its store: schema, column sources and the major axis it is scanned along.
#[derive(Debug)]
pub struct AnnTable {
    pub(crate) store: Arc<AnnDataStore>,
    pub(crate) def: TableDef,
    pub(crate) schema: SchemaRef,
    /// The schema of internal full-width batches: every column nullable, since columns a query
    /// does not need are left null.
    pub(crate) work_schema: SchemaRef,
    pub(crate) sources: Vec<Source>,
    /// Length of the axis scans are partitioned along (rows; columns for CSC).
    pub(crate) major_len: u64,
    /// Whether the major axis is the matrix's column axis (CSC).
    pub(crate) column_major: bool,
    /// Rows per block, aligned to the chunking of the data read.
    pub(crate) block_rows: u64,
    /// The session's progress counter.
    pub(crate) progress: Arc<crate::scan::Progress>,
    /// The same matrix stored CSC ([`TableDef::csc_copy`]), for gene-selective reads.
    pub(crate) csc_copy: Option<Arc<AnnTable>>,
    /// Why the whole table cannot be read, if it cannot: its element failed a check of
    /// [`crate::check`]. The table stays in the schema so that naming it gives this reason.
    pub(crate) unmapped: Option<Note>,
    /// The verdict of [`Self::check_first_read`], once the element has been read.
    first_read: OnceLock<Option<Note>>,
}

/// The Arrow type a store element type maps to.
pub(crate) fn arrow_type(dtype: &DType) -> Option<DataType> {
    Some(match dtype {
        DType::Bool => DataType::Boolean,
        DType::Int8 => DataType::Int8,
        DType::Int16 => DataType::Int16,
        DType::Int32 => DataType::Int32,
        DType::Int64 => DataType::Int64,
        DType::UInt8 => DataType::UInt8,
        DType::UInt16 => DataType::UInt16,
        DType::UInt32 => DataType::UInt32,
        DType::UInt64 => DataType::UInt64,
        DType::Float32 => DataType::Float32,
        DType::Float64 => DataType::Float64,
        DType::String => DataType::Utf8,
        DType::Other(_) => return None,
    })
}

/// A dataframe's column names in table order: the index, then `column-order`, then any other
/// stored column; each once.
fn column_names(frame: &Element, index: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    std::iter::once(index.to_string())
        .chain(frame.column_order())
        .chain(frame.children.iter().map(|c| c.name().to_string()))
        .filter(|n| seen.insert(n.clone()))
        .collect()
}

/// The major-axis length, orientation (CSC: column-major) and rows per block of a matrix that
/// passed [`check::matrix`].
fn matrix_blocks(store: &AnnDataStore, element: &Element) -> Result<(u64, bool, u64)> {
    let [n_rows, n_cols] = element.shape[..] else {
        return Err(DataFusionError::Internal(format!(
            "matrix /{} passed its checks without a 2-D shape",
            element.path
        )));
    };
    let column_major = element.encoding == Encoding::CscMatrix;
    let major_len = if column_major { n_cols } else { n_rows };
    let minor_len = if column_major { n_rows } else { n_cols };
    let (nnz, chunk) = match element.encoding {
        Encoding::Array => (n_rows.saturating_mul(n_cols), 0),
        _ => {
            let data = store
                .array_meta(&format!("{}/data", element.path))
                .map_err(store_err)?;
            // Without a declared chunk length, blocks are sized by entries alone.
            (data.shape[0], data.chunk_len().unwrap_or(0))
        }
    };
    let per_major = (nnz / major_len.max(1)).max(1).min(minor_len.max(1));
    // Blocks span several data chunks, so a chunk shared by two blocks (and decoded by both) is
    // the exception rather than the rule.
    let block_rows = (TARGET_ENTRIES.max(4 * chunk) / per_major).max(1);
    Ok((major_len, column_major, block_rows))
}

fn id_name(axis: Axis, suffix: &str) -> String {
    format!("{}_id{suffix}", axis.name())
}

/// Target stored entries per matrix batch (and rows per frame batch): large enough to amortise
/// per-batch work, small enough to keep memory per partition bounded.
const TARGET_ENTRIES: u64 = 1 << 20;
const FRAME_ROWS: u64 = 1 << 16;

/// Largest block of dataframe rows, however its string columns are chunked.
const MAX_FRAME_ROWS: u64 = 1 << 22;

impl AnnTable {
    /// Binds a table definition to its store, working out its schema from metadata. An element
    /// that fails the checks of [`crate::check`] still makes a table: the table (or the column)
    /// carries the reason, which `annql schema` shows and a query reading it gets as its error.
    pub fn try_new(
        store: Arc<AnnDataStore>,
        def: TableDef,
        progress: Arc<crate::scan::Progress>,
    ) -> Result<Self> {
        let element = store.element(&def.path).map_err(store_err)?.clone();
        let mut fields = Vec::new();
        let mut sources = Vec::new();
        let mut unmapped = None;
        let mut major_len = 0;
        let mut column_major = false;
        let mut block_rows = FRAME_ROWS;
        match &def.kind {
            TableKind::Frame { axis, with_names } => {
                fields.push(Field::new(id_name(*axis, ""), DataType::Int64, false));
                sources.push(Source::RowId);
                // A dataframe in obsm/varm must also be as long as its axis.
                let axis_rows = check::axis_len(&store, def.axes[0].as_deref());
                let frame = check::frame(&store, &element)
                    .and_then(|(index, rows)| match axis_rows {
                        Some((want, axis_index)) if want != rows => Err(check::malformed(
                            &store,
                            &element.path,
                            format!("has {rows} rows but '/{axis_index}' has {want}"),
                        )),
                        _ => Ok((index, rows)),
                    })
                    .map_err(Arc::new);
                let index = match &frame {
                    Ok((index, _)) => index.clone(),
                    // Only to list the columns of a dataframe that cannot be read.
                    Err(_) => element.index_column().unwrap_or("_index").to_string(),
                };
                for name in column_names(&element, &index) {
                    let is_index = name == index;
                    if is_index && !with_names {
                        continue;
                    }
                    let sql = if is_index {
                        format!("{}_name", axis.name())
                    } else {
                        name.clone()
                    };
                    let path = format!("{}/{name}", element.path);
                    let column = match (&frame, element.child(&name)) {
                        (Err(note), _) => Err(note.clone()),
                        (Ok(_), None) => Err(Arc::new(check::malformed(
                            &store,
                            &path,
                            "listed in the dataframe's 'column-order' but not stored",
                        ))),
                        (Ok((index, rows)), Some(child)) => {
                            let index_path = format!("{}/{index}", element.path);
                            check::column(&store, &sql, child, *rows, &index_path)
                                .map(|field| (field, child))
                                .map_err(Arc::new)
                        }
                    };
                    match column {
                        Ok((field, child)) => {
                            fields.push(field);
                            sources.push(Source::Column(Box::new(child.clone())));
                            // A string chunk decodes only whole: blocks span its chunks, or each
                            // block would decode the chunks it touches again. (A categorical's
                            // group has no chunks of its own: only block sizing is skipped.)
                            if child.dtype == Some(DType::String)
                                && let Ok(meta) = store.array_meta(&child.path)
                                && let Some(chunk) = meta.chunk_len()
                            {
                                block_rows = block_rows.max(chunk.min(MAX_FRAME_ROWS));
                            }
                        }
                        Err(note) => {
                            // Its type where it has one (a column of the wrong length), so that
                            // queries naming it plan and reach the scan, which refuses them. A
                            // type that cannot be read (a dtype annql does not have, a column not
                            // stored) is a Float64 placeholder, not Null: `sum(col)` or `avg(col)`
                            // on Null fails in planning with a message naming neither the store
                            // nor the column, while numbers plan and reach the scan. The error
                            // itself is `note`, kept in `Source::Unmapped`, raised by any read.
                            let dt = element
                                .child(&name)
                                .and_then(|c| check::column_type(&store, c).ok())
                                .unwrap_or(DataType::Float64);
                            fields.push(Field::new(sql, dt, true));
                            sources.push(Source::Unmapped(note));
                        }
                    }
                }
                match frame {
                    Ok((_, rows)) => major_len = rows,
                    Err(note) => unmapped = Some(note),
                }
            }
            TableKind::Embedding { axis } => {
                fields.push(Field::new(id_name(*axis, ""), DataType::Int64, false));
                sources.push(Source::RowId);
                let rows = check::axis_len(&store, def.axes[0].as_deref());
                match check::embedding(&store, &element, rows) {
                    Ok(dt) => {
                        let prefix = crate::model::sql_name(element.name());
                        major_len = element.shape[0];
                        // A 1-D array is one component.
                        let components = element.shape.get(1).copied().unwrap_or(1);
                        for i in 0..components {
                            fields.push(Field::new(format!("{prefix}_{i}"), dt.clone(), false));
                            sources.push(Source::Component(i as usize));
                        }
                        block_rows = (TARGET_ENTRIES / components.max(1)).max(1);
                    }
                    Err(e) => unmapped = Some(Arc::new(e)),
                }
            }
            TableKind::Matrix { rows, cols, .. } => {
                let (r, c) = if rows == cols { ("_1", "_2") } else { ("", "") };
                fields.push(Field::new(id_name(*rows, r), DataType::Int64, false));
                fields.push(Field::new(id_name(*cols, c), DataType::Int64, false));
                sources.extend([Source::MatrixRow, Source::MatrixCol, Source::MatrixValue]);
                let axes = [
                    check::axis_len(&store, def.axes[0].as_deref()),
                    check::axis_len(&store, def.axes[1].as_deref()),
                ];
                match check::matrix(&store, &element, axes) {
                    Ok(dt) => {
                        fields.push(Field::new("value", dt, false));
                        (major_len, column_major, block_rows) = matrix_blocks(&store, &element)?;
                    }
                    Err(e) => {
                        // The stored type where known, else a number: queries naming the
                        // table plan and reach the scan, which refuses them with the reason.
                        let dt = element.dtype.as_ref().and_then(arrow_type);
                        fields.push(Field::new("value", dt.unwrap_or(DataType::Float64), true));
                        unmapped = Some(Arc::new(e));
                    }
                }
            }
            TableKind::Uns => {
                for (i, n) in ["path", "type", "value"].iter().enumerate() {
                    fields.push(Field::new(*n, DataType::Utf8, i == 2));
                    sources.push(Source::Uns);
                }
                if let Err(e) = check::encoding(&store, &element) {
                    unmapped = Some(Arc::new(e));
                }
                major_len = 1;
                block_rows = 1;
            }
        }
        let work_schema = Arc::new(nullable(&Schema::new(fields.clone())));
        let csc_copy = match &def.csc_copy {
            Some(path) if matches!(def.kind, TableKind::Matrix { .. }) && unmapped.is_none() => {
                let copy = TableDef {
                    path: path.clone(),
                    csc_copy: None,
                    ..def.clone()
                };
                let copy = AnnTable::try_new(store.clone(), copy, progress.clone())?;
                // A copy that cannot be read, or whose schema differs (another value type), is
                // not a copy.
                (copy.unmapped.is_none() && copy.schema.as_ref() == &Schema::new(fields.clone()))
                    .then(|| Arc::new(copy))
            }
            _ => None,
        };
        Ok(Self {
            csc_copy,
            store,
            def,
            work_schema,
            schema: Arc::new(Schema::new(fields)),
            sources,
            major_len,
            column_major,
            block_rows,
            progress,
            unmapped,
            first_read: OnceLock::new(),
        })
    }

    /// What cannot be read in this table, with the reason: `(None, note)` for the whole table,
    /// `(Some(column), note)` for each column that cannot be read in a table that can.
    pub fn notes(&self) -> Vec<(Option<String>, Note)> {
        if let Some(note) = &self.unmapped {
            return vec![(None, note.clone())];
        }
        self.sources
            .iter()
            .zip(self.schema.fields())
            .filter_map(|(s, f)| match s {
                Source::Unmapped(note) => Some((Some(f.name().clone()), note.clone())),
                _ => None,
            })
            .collect()
    }

    /// The error for reading the table, if it cannot be read, or else for reading any of
    /// `columns` that cannot.
    pub(crate) fn refusal(&self, columns: impl IntoIterator<Item = usize>) -> Option<Error> {
        if let Some(note) = &self.unmapped {
            return Some(Error::Unmapped {
                what: format!("table {}", self.def.name),
                source: note.clone(),
            });
        }
        columns.into_iter().find_map(|i| match self.sources.get(i) {
            Some(Source::Unmapped(note)) => Some(Error::Unmapped {
                what: format!("column {}.{}", self.def.name, self.schema.field(i).name()),
                source: note.clone(),
            }),
            _ => None,
        })
    }

    /// What only the data can tell, checked once, when the element is first read: a sparse
    /// matrix's `indptr` starts at 0 (scipy and anndata require it; the entries before its first
    /// value would belong to no row, and scans would silently skip them). A read error is
    /// returned, not kept: only a verdict on data that was read is remembered.
    pub(crate) fn check_first_read(&self) -> Result<()> {
        let verdict = match self.first_read.get() {
            Some(verdict) => verdict.clone(),
            None => {
                let verdict = self.first_read_verdict().map_err(store_err)?;
                // Another partition may have stored the same verdict first: either is right.
                let _ = self.first_read.set(verdict.clone());
                verdict
            }
        };
        match verdict {
            Some(note) => Err(Error::Unmapped {
                what: format!("table {}", self.def.name),
                source: note,
            }
            .into()),
            None => Ok(()),
        }
    }

    fn first_read_verdict(&self) -> Result<Option<Note>, annql_store::Error> {
        if !matches!(self.def.kind, TableKind::Matrix { .. }) || self.unmapped.is_some() {
            return Ok(None);
        }
        let element = self.store.element(&self.def.path)?;
        if !matches!(element.encoding, Encoding::CsrMatrix | Encoding::CscMatrix) {
            return Ok(None);
        }
        let path = format!("{}/indptr", self.def.path);
        let first = self
            .store
            .read_offsets(&path, 0..1, &ReadStats::new_shared())?;
        Ok(match first.first() {
            Some(0) => None,
            Some(v) => Some(Arc::new(check::malformed(
                &self.store,
                &path,
                format!("indptr starts at {v}, not 0"),
            ))),
            None => Some(Arc::new(check::malformed(
                &self.store,
                &path,
                "indptr is empty",
            ))),
        })
    }

    /// The table's full schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The table definition.
    pub fn def(&self) -> &TableDef {
        &self.def
    }

    /// Whether this is a zero-filled view of a matrix (`x_dense`).
    pub fn is_dense(&self) -> bool {
        matches!(self.def.kind, TableKind::Matrix { dense: true, .. })
    }

    /// The CSC copy of this matrix, if the store has one.
    pub fn csc_copy(&self) -> Option<&Arc<AnnTable>> {
        self.csc_copy.as_ref()
    }

    /// Index of the column whose values are the major-axis position (None for `uns`).
    pub(crate) fn major_id_column(&self) -> Option<usize> {
        match self.def.kind {
            TableKind::Frame { .. } | TableKind::Embedding { .. } => Some(0),
            TableKind::Matrix { .. } => Some(if self.column_major { 1 } else { 0 }),
            TableKind::Uns => None,
        }
    }

    /// Index of the matrix column holding the minor-axis id (var_id for CSR), if a matrix.
    pub(crate) fn minor_id_column(&self) -> Option<usize> {
        match self.def.kind {
            TableKind::Matrix { .. } => Some(if self.column_major { 0 } else { 1 }),
            _ => None,
        }
    }

    /// Length of the minor axis of a matrix table.
    pub(crate) fn minor_len(&self) -> Option<u64> {
        if !matches!(self.def.kind, TableKind::Matrix { .. }) || self.unmapped.is_some() {
            return None;
        }
        // The element was found when the table was bound; the store's tree does not change.
        let e = self.store.element(&self.def.path).ok()?;
        e.shape.get(if self.column_major { 0 } else { 1 }).copied()
    }

    /// Exact row count when cheap to know: dataframe/embedding length, or a sparse matrix's
    /// stored entries from its `indptr` (after [`Self::check_first_read`]). None for a table
    /// that cannot be read (its scan reports why) and for dense matrices and `uns`.
    pub(crate) fn exact_rows(&self) -> Result<Option<u64>> {
        if self.unmapped.is_some() {
            return Ok(None);
        }
        match self.def.kind {
            TableKind::Frame { .. } | TableKind::Embedding { .. } => Ok(Some(self.major_len)),
            TableKind::Matrix { .. } => {
                let element = self.store.element(&self.def.path).map_err(store_err)?;
                if self.is_dense() {
                    let [r, c] = element.shape[..] else {
                        return Ok(None);
                    };
                    return Ok(Some(r.saturating_mul(c)));
                }
                if element.encoding == Encoding::Array {
                    return Ok(None);
                }
                self.check_first_read()?;
                let nnz = self
                    .store
                    .sparse_nnz(&self.def.path, 0..self.major_len, &ReadStats::new_shared())
                    .map_err(store_err)?;
                Ok(Some(nnz))
            }
            TableKind::Uns => Ok(None),
        }
    }

    /// Reads `major` of the table into a batch of the full schema; only the columns in `needed`
    /// are read (others are null), `keep` (one flag per major position) drops rows and
    /// `minor_keep` (one flag per minor position, matrices only) drops entries.
    pub(crate) fn read_block(
        &self,
        major: Range<u64>,
        needed: &[bool],
        keep: Option<&[bool]>,
        minor_keep: Option<&[bool]>,
        carry: &mut SparseCarry,
        stats: &Arc<ReadStats>,
    ) -> Result<Vec<RecordBatch>> {
        match &self.def.kind {
            TableKind::Frame { .. } | TableKind::Embedding { .. } => {
                Ok(vec![self.read_rows(major, needed, keep, stats)?])
            }
            TableKind::Matrix { .. } => {
                self.read_entries(major, needed, keep, minor_keep, carry, stats)
            }
            TableKind::Uns => Ok(vec![self.read_uns(needed)?]),
        }
    }

    fn read_rows(
        &self,
        rows: Range<u64>,
        needed: &[bool],
        keep: Option<&[bool]>,
        stats: &Arc<ReadStats>,
    ) -> Result<RecordBatch> {
        let n = (rows.end - rows.start) as usize;
        let mut dense = None;
        let mut columns = Vec::with_capacity(self.sources.len());
        for (i, source) in self.sources.iter().enumerate() {
            let field = self.schema.field(i);
            if !needed[i] {
                columns.push(new_null_array(field.data_type(), n));
                continue;
            }
            let array: ArrayRef = match source {
                Source::RowId => Arc::new(Int64Array::from_iter_values(
                    rows.start as i64..rows.end as i64,
                )),
                Source::Column(e) => self
                    .store
                    .read_column(e, rows.clone(), stats)
                    .map_err(store_err)?,
                Source::Component(c) => {
                    if dense.is_none() {
                        dense = Some(
                            self.store
                                .read_dense_rows(&self.def.path, rows.clone(), stats)
                                .map_err(store_err)?,
                        );
                    }
                    let block = dense
                        .as_ref()
                        .ok_or_else(|| DataFusionError::Internal("dense block".into()))?;
                    let ncols = block.ncols as u32;
                    let idx =
                        UInt32Array::from_iter_values((0..n as u32).map(|r| r * ncols + *c as u32));
                    take(&block.values, &idx, None)?
                }
                Source::Unmapped(note) => {
                    return Err(Error::Unmapped {
                        what: format!("column {}.{}", self.def.name, field.name()),
                        source: note.clone(),
                    }
                    .into());
                }
                _ => {
                    return Err(DataFusionError::Internal(
                        "matrix source in a row table".into(),
                    ));
                }
            };
            columns.push(array);
        }
        let batch = RecordBatch::try_new_with_options(
            self.work_schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        apply_keep(batch, keep)
    }

    /// Reads the stored entries of `major`, keeping rows where `keep` is set and entries whose
    /// minor id is set in `minor_keep` (a join's gene selection), before building any column: a
    /// batch per part of the block as it lies in the decoded chunks (see
    /// `AnnDataStore::read_sparse_parts`).
    fn read_entries(
        &self,
        major: Range<u64>,
        needed: &[bool],
        keep: Option<&[bool]>,
        minor_keep: Option<&[bool]>,
        carry: &mut SparseCarry,
        stats: &Arc<ReadStats>,
    ) -> Result<Vec<RecordBatch>> {
        let element = self.store.element(&self.def.path).map_err(store_err)?;
        if element.encoding == Encoding::Array {
            // A dense matrix: its non-zero entries.
            let row_ok = |r: usize| keep.is_none_or(|k| k[r]);
            let minor_ok = |c: usize| minor_keep.is_none_or(|m| m.get(c).copied().unwrap_or(false));
            let block = self
                .store
                .read_dense_rows(&self.def.path, major.clone(), stats)
                .map_err(store_err)?;
            let as_f64 = annql_store::arrow::compute::cast(&block.values, &DataType::Float64)?;
            let f = as_f64
                .as_any()
                .downcast_ref::<annql_store::arrow::array::Float64Array>()
                .ok_or_else(|| DataFusionError::Internal("cast to f64".into()))?;
            let ncols = block.ncols as usize;
            let (mut idx, mut mj, mut mn) = (Vec::new(), Vec::new(), Vec::new());
            for (pos, v) in f.values().iter().enumerate() {
                let (r, c) = (pos / ncols, pos % ncols);
                if (*v != 0.0 || self.is_dense()) && row_ok(r) && minor_ok(c) {
                    idx.push(pos as u32);
                    mj.push(major.start as i64 + r as i64);
                    mn.push(c as i64);
                }
            }
            let values = take(&block.values, &UInt32Array::from(idx), None)?;
            return Ok(vec![self.entries_batch(mj, mn, values, needed)?]);
        }
        let parts = self
            .store
            .read_sparse_parts(&self.def.path, major.clone(), carry, stats)
            .map_err(store_err)?;
        let mut batches = Vec::with_capacity(parts.len());
        for part in &parts {
            let at = (part.major.start - major.start) as usize;
            let keep = keep.map(|k| &k[at..at + (part.major.end - part.major.start) as usize]);
            let (mj, mn, values) = self.part_entries(part, keep, minor_keep)?;
            if !values.is_empty() {
                batches.push(self.entries_batch(mj, mn, values, needed)?);
            }
        }
        Ok(batches)
    }

    /// The (major ids, minor ids, values) a part of a sparse block yields.
    fn part_entries(
        &self,
        block: &annql_store::SparseBlock,
        keep: Option<&[bool]>,
        minor_keep: Option<&[bool]>,
    ) -> Result<(Vec<i64>, Vec<i64>, ArrayRef)> {
        let start = block.major.start as i64;
        if self.is_dense() {
            let minor_len = self.minor_len().unwrap_or(0) as usize;
            return densify(block, minor_len, keep, minor_keep);
        }
        if keep.is_none() && minor_keep.is_none() {
            let mut mj = Vec::with_capacity(block.nnz());
            for (r, w) in block.indptr.windows(2).enumerate() {
                mj.extend(std::iter::repeat_n(
                    start + r as i64,
                    (w[1] - w[0]) as usize,
                ));
            }
            let mn = block.indices.iter().map(|&i| i64::from(i)).collect();
            return Ok((mj, mn, block.data.clone()));
        }
        let row_ok = |r: usize| keep.is_none_or(|k| k[r]);
        let minor_ok = |c: usize| minor_keep.is_none_or(|m| m.get(c).copied().unwrap_or(false));
        let (mut idx, mut mj, mut mn) = (Vec::new(), Vec::new(), Vec::new());
        for (r, w) in block.indptr.windows(2).enumerate() {
            if !row_ok(r) {
                continue;
            }
            for e in w[0] as usize..w[1] as usize {
                let c = block.indices[e];
                if minor_ok(c as usize) {
                    idx.push(e as u32);
                    mj.push(start + r as i64);
                    mn.push(i64::from(c));
                }
            }
        }
        Ok((mj, mn, take(&block.data, &UInt32Array::from(idx), None)?))
    }

    /// A batch of entries in the table's (row, column, value) layout.
    fn entries_batch(
        &self,
        major_ids: Vec<i64>,
        minor_ids: Vec<i64>,
        values: ArrayRef,
        needed: &[bool],
    ) -> Result<RecordBatch> {
        let (rows, cols) = if self.column_major {
            (minor_ids, major_ids)
        } else {
            (major_ids, minor_ids)
        };
        let n = values.len();
        let columns: Vec<ArrayRef> = vec![
            if needed[0] {
                Arc::new(Int64Array::from(rows))
            } else {
                new_null_array(&DataType::Int64, n)
            },
            if needed[1] {
                Arc::new(Int64Array::from(cols))
            } else {
                new_null_array(&DataType::Int64, n)
            },
            if needed[2] {
                values
            } else {
                new_null_array(self.schema.field(2).data_type(), n)
            },
        ];
        Ok(RecordBatch::try_new_with_options(
            self.work_schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?)
    }

    /// The leaves of `uns`; their values (read only when `needed`) as JSON text. A value that
    /// cannot be read is an error naming the leaf, never a NULL.
    fn read_uns(&self, needed: &[bool]) -> Result<RecordBatch> {
        let uns = self.store.element(&self.def.path).map_err(store_err)?;
        let (mut paths, mut types, mut values) = (Vec::new(), Vec::new(), Vec::new());
        // Leaves of the dict tree; a dataframe (or any encoded group) is one entry, not its parts.
        let mut leaves = Vec::new();
        collect_uns_leaves(uns, &mut leaves);
        let with_values = needed.get(2).copied().unwrap_or(true);
        for e in leaves {
            let rel = e
                .path
                .strip_prefix(&format!("{}/", uns.path))
                .unwrap_or(&e.path);
            paths.push(rel.to_string());
            types.push(e.encoding.name().to_string());
            values.push(if with_values {
                Some(uns_value(&self.store, e)?)
            } else {
                None
            });
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(paths)),
            Arc::new(StringArray::from(types)),
            Arc::new(StringArray::from(values)),
        ];
        Ok(RecordBatch::try_new(self.work_schema.clone(), columns)?)
    }
}

fn collect_uns_leaves<'a>(e: &'a Element, out: &mut Vec<&'a Element>) {
    for c in &e.children {
        if c.encoding == Encoding::Dict {
            collect_uns_leaves(c, out);
        } else {
            out.push(c);
        }
    }
}

/// An array as a JSON array of its values.
fn json_values(a: &ArrayRef) -> Result<serde_json::Value> {
    let mut buf = Vec::new();
    let batch = RecordBatch::try_from_iter([("v", a.clone())])?;
    let mut writer = annql_store::arrow::json::ArrayWriter::new(&mut buf);
    writer.write(&batch)?;
    writer.finish()?;
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&buf).map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok(serde_json::Value::Array(
        rows.into_iter()
            // The JSON writer leaves out null values: a row without "v" is a null.
            .map(|r| r.get("v").cloned().unwrap_or(serde_json::Value::Null))
            .collect(),
    ))
}

/// Small scalars and arrays of `uns` as JSON text; anything larger or nested is described instead.
/// An element that cannot be read (a damaged chunk, an unknown encoding or version) is an error.
fn uns_value(store: &AnnDataStore, e: &Element) -> Result<String> {
    const MAX_VALUES: u64 = 10_000;
    check::encoding(store, e).map_err(store_err)?;
    let stats = ReadStats::new_shared();
    Ok(match e.encoding {
        Encoding::String | Encoding::NumericScalar | Encoding::Array | Encoding::StringArray
            if e.shape.iter().product::<u64>() <= MAX_VALUES && e.shape.len() <= 1 =>
        {
            let len = e.shape.first().copied().unwrap_or(1);
            let a = store
                .read_array(&e.path, 0..len, &stats)
                .map_err(store_err)?;
            let v = json_values(&a)?;
            if e.shape.is_empty() {
                // A scalar: the one value of a 0-D read.
                v.get(0)
                    .cloned()
                    .ok_or_else(|| {
                        store_err(check::malformed(store, &e.path, "a scalar with no value"))
                    })?
                    .to_string()
            } else {
                v.to_string()
            }
        }
        Encoding::Categorical
        | Encoding::NullableInteger
        | Encoding::NullableBoolean
        | Encoding::NullableStringArray
            if e.shape.first().copied().unwrap_or(0) <= MAX_VALUES =>
        {
            let len = e.shape.first().copied().unwrap_or(0);
            let a = store.read_column(e, 0..len, &stats).map_err(store_err)?;
            // Categories as their labels; values of a type with no text form stay as they are
            // (the JSON writer writes them in their own form).
            let a = annql_store::arrow::compute::cast(&a, &DataType::Utf8).unwrap_or(a);
            json_values(&a)?.to_string()
        }
        Encoding::Null => "null".into(),
        _ => format!(
            "\"<{} {}>\"",
            e.encoding.name(),
            e.shape
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join("x")
        ),
    })
}

/// The same schema with every field nullable.
pub(crate) fn nullable(schema: &Schema) -> Schema {
    Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    )
}

/// A batch of `schema` (made nullable) whose column `column` is `values` and every other column
/// null: enough to evaluate a predicate that reads only that column.
pub(crate) fn probe_batch(schema: &Schema, column: usize, values: ArrayRef) -> Result<RecordBatch> {
    let schema = Arc::new(nullable(schema));
    let n = values.len();
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if i == column {
                values.clone()
            } else {
                new_null_array(f.data_type(), n)
            }
        })
        .collect();
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The kept rows × kept minor positions of a sparse block, zeros included: (major ids, minor
/// ids, values). Each row is scattered into a slot per kept minor position, so the cost is
/// O(rows × kept + stored), whatever the order of `indices` within a row.
fn densify(
    block: &annql_store::SparseBlock,
    minor_len: usize,
    keep: Option<&[bool]>,
    minor_keep: Option<&[bool]>,
) -> Result<(Vec<i64>, Vec<i64>, ArrayRef)> {
    let minors: Vec<u32> = (0..minor_len as u32)
        .filter(|&c| minor_keep.is_none_or(|m| m.get(c as usize).copied().unwrap_or(false)))
        .collect();
    let mut slot = vec![u32::MAX; minor_len];
    for (i, &c) in minors.iter().enumerate() {
        slot[c as usize] = i as u32;
    }
    // Absent entries are taken as nulls, then filled with a 0 of the matrix's type.
    let zero = u32::MAX;
    let rows = block.indptr.len().saturating_sub(1);
    let kept_rows = (0..rows).filter(|&r| keep.is_none_or(|k| k[r])).count();
    let n = kept_rows * minors.len();
    let (mut mj, mut mn, mut idx) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut row = vec![zero; minors.len()];
    for r in (0..rows).filter(|&r| keep.is_none_or(|k| k[r])) {
        row.fill(zero);
        for e in block.indptr[r] as usize..block.indptr[r + 1] as usize {
            let s = slot[block.indices[e] as usize];
            if s != u32::MAX {
                row[s as usize] = e as u32;
            }
        }
        let id = (block.major.start + r as u64) as i64;
        mj.extend(std::iter::repeat_n(id, minors.len()));
        mn.extend(minors.iter().map(|&c| i64::from(c)));
        idx.extend(row.iter().map(|&e| (e != zero).then_some(e)));
    }
    let zero_value =
        annql_store::arrow::compute::cast(&Int64Array::from(vec![0_i64]), block.data.data_type())?;
    let taken = take(&block.data, &UInt32Array::from(idx), None)?;
    let stored = annql_store::arrow::compute::is_not_null(&taken)?;
    let values = annql_store::arrow::compute::kernels::zip::zip(
        &stored,
        &taken,
        &annql_store::arrow::array::Scalar::new(zero_value),
    )?;
    Ok((mj, mn, values))
}

fn apply_keep(batch: RecordBatch, keep: Option<&[bool]>) -> Result<RecordBatch> {
    match keep {
        None => Ok(batch),
        Some(k) => {
            let mask = annql_store::arrow::array::BooleanArray::from(k.to_vec());
            Ok(annql_store::arrow::compute::filter_record_batch(
                &batch, &mask,
            )?)
        }
    }
}
