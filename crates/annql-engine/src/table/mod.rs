//! [`AnnTable`]: a table definition bound to its store — the engine's central noun. Its schema
//! and column sources come from the store's metadata when a dataset is attached ([`bind`]); its
//! reads turn a block of its major axis into record batches ([`read`]); a matrix table also
//! reads its `indptr` and stored entries whole-chunk for the fused aggregation ([`matrix`]). The
//! scan, the fused aggregation and the providers all read through it.

mod bind;
mod read;

mod matrix;

use std::sync::{Arc, OnceLock};

use annql_store::arrow::datatypes::{Schema, SchemaRef};
use annql_store::{AnnDataStore, Element, Encoding, ReadStats};
use datafusion::error::Result;

use crate::check;
use crate::decode::nullable;
use crate::error::{Error, store_err};
use crate::gene_index::SidecarCopy;
use crate::model::{TableDef, TableKind};
use crate::progress::Progress;

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
    pub(crate) progress: Arc<Progress>,
    /// The same matrix stored CSC ([`TableDef::csc_copy`], or a gene index's sidecar), for
    /// gene-selective reads.
    pub(crate) csc_copy: Option<Arc<AnnTable>>,
    /// The gene index `csc_copy` comes from, if a sidecar: used only once checked against the
    /// source ([`SidecarCopy::usable`]).
    sidecar: Option<Arc<SidecarCopy>>,
    /// Why the whole table cannot be read, if it cannot: its element failed a check of
    /// [`crate::check`]. The table stays in the schema so that naming it gives this reason.
    pub(crate) unmapped: Option<Note>,
    /// The verdict of [`Self::check_first_read`], once the element has been read.
    first_read: OnceLock<Option<Note>>,
}

impl AnnTable {
    /// Binds a table definition to its store, working out its schema from metadata. An element
    /// that fails the checks of [`crate::check`] still makes a table: the table (or the column)
    /// carries the reason, which `annql schema` shows and a query reading it gets as its error.
    pub fn try_new(
        store: Arc<AnnDataStore>,
        def: TableDef,
        progress: Arc<Progress>,
    ) -> Result<Self> {
        let element = store.element(&def.path).map_err(store_err)?.clone();
        let bind::Layout {
            fields,
            sources,
            unmapped,
            major_len,
            column_major,
            block_rows,
        } = match &def.kind {
            TableKind::Frame { axis, with_names } => {
                bind::frame(&store, &def, &element, *axis, *with_names)
            }
            TableKind::Embedding { axis } => bind::embedding(&store, &def, &element, *axis),
            TableKind::Matrix { rows, cols, .. } => {
                bind::matrix(&store, &def, &element, *rows, *cols)?
            }
            TableKind::Uns => bind::uns(&store, &element),
        };
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
            sidecar: None,
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

    /// The CSC copy of this matrix, if the store has one or a gene index has one that matches
    /// the source.
    pub fn csc_copy(&self) -> Option<&Arc<AnnTable>> {
        match &self.sidecar {
            Some(sidecar) if !sidecar.usable() => None,
            _ => self.csc_copy.as_ref(),
        }
    }

    /// Where the CSC copy is, for `EXPLAIN` (`/layers/X_csc`, or `<sidecar>:/X`), if usable.
    pub fn csc_copy_location(&self) -> Option<String> {
        let copy = self.csc_copy()?;
        Some(match &self.sidecar {
            Some(sidecar) => sidecar.describe(),
            None => format!("/{}", copy.def.path),
        })
    }

    /// Where the gene index of this table's sidecar copy is, if it has one.
    pub(crate) fn sidecar_index(&self) -> Option<&str> {
        self.sidecar.as_deref().map(SidecarCopy::index_location)
    }

    /// Uses `sidecar`'s copy for gene-selective reads of this matrix, unless the store has its
    /// own copy (which needs no check) or the sidecar's cannot stand in for it (another value
    /// type, an element annql cannot read).
    pub(crate) fn with_sidecar(mut self, sidecar: Arc<SidecarCopy>) -> Result<Self> {
        if self.csc_copy.is_some()
            || self.unmapped.is_some()
            || !matches!(self.def.kind, TableKind::Matrix { .. })
        {
            return Ok(self);
        }
        let def = TableDef {
            path: sidecar.path().to_string(),
            csc_copy: None,
            axes: [None, None],
            ..self.def.clone()
        };
        let copy = AnnTable::try_new(sidecar.store().clone(), def, self.progress.clone())?;
        if copy.unmapped.is_some() || copy.schema != self.schema {
            log::warn!(
                "ignoring the gene index {}: it cannot stand in for {}",
                sidecar.describe(),
                self.def.name
            );
            return Ok(self);
        }
        self.csc_copy = Some(Arc::new(copy));
        self.sidecar = Some(sidecar);
        Ok(self)
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
}
