//! [`AnnDataTableProvider`] and [`AnnDataSchemaProvider`]: AnnData tables as DataFusion sees them.

use std::collections::BTreeMap;
use std::sync::Arc;

use annql_store::AnnDataStore;
use annql_store::arrow::array::ArrayRef;
use annql_store::arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DFSchema, Statistics, stats::Precision};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use crate::error::store_err;
use crate::gene_index::{AttachedIndex, SidecarCopy};
use crate::model::{TableKind, tables_of_store};
use crate::progress::Progress;
use crate::pushdown::{CodeFilter, FilterPlacement, place_filter, place_physical};
use crate::scan::{AnnDataScanExec, ScanParams};
use crate::table::{AnnTable, Note, Source};

/// One table of an attached store.
#[derive(Debug)]
pub struct AnnDataTableProvider {
    table: Arc<AnnTable>,
    rows: std::sync::OnceLock<Option<u64>>,
}

impl AnnDataTableProvider {
    /// Wraps a bound table.
    pub fn new(table: AnnTable) -> Self {
        Self {
            table: Arc::new(table),
            rows: std::sync::OnceLock::new(),
        }
    }

    /// The bound table.
    pub fn table(&self) -> &Arc<AnnTable> {
        &self.table
    }

    /// Number of categories of a categorical column, by name (None: not a column of this
    /// table).
    pub fn category_count(&self, column: &str) -> Result<Option<usize>> {
        let Ok(i) = self.table.schema().index_of(column) else {
            return Ok(None);
        };
        Ok(Some(self.categories(i)?.len()))
    }

    /// What cannot be read in this table (see [`AnnTable::notes`]).
    pub fn notes(&self) -> Vec<(Option<String>, Note)> {
        self.table.notes()
    }

    pub(crate) fn exact_rows(&self) -> Option<u64> {
        // Statistics are optional: a table whose row count cannot be read has none, and its
        // scan reports the error when it reads the same element.
        *self
            .rows
            .get_or_init(|| self.table.exact_rows().ok().flatten())
    }

    /// The dictionary values of a categorical column (read once, cached by the store).
    pub(crate) fn categories(&self, column: usize) -> Result<ArrayRef> {
        let Some(Source::Column(e)) = self.table.sources.get(column) else {
            return Err(DataFusionError::Internal(format!(
                "column {column} is not a stored column"
            )));
        };
        let empty = self
            .table
            .store
            .read_column(e, 0..0, &annql_store::ReadStats::new_shared())
            .map_err(store_err)?;
        let dict = annql_store::arrow::array::AsArray::as_any_dictionary_opt(empty.as_ref())
            .ok_or_else(|| {
                DataFusionError::Internal("categorical column read without a dictionary".into())
            })?;
        Ok(dict.values().clone())
    }

    /// Splits the major axis into blocks and the blocks into `partitions` contiguous groups. The
    /// block list is sized from the declared shape: refused above the store's read limit (a
    /// hostile 10¹⁵-row shape would otherwise abort the process allocating it).
    fn partition(&self, partitions: usize) -> Result<Vec<Vec<std::ops::Range<u64>>>> {
        let (len, step) = (self.table.major_len, self.table.block_rows.max(1));
        let count = len.div_ceil(step);
        // Each block is held twice (the list, then its partition's copy).
        let bytes = count.saturating_mul(2 * std::mem::size_of::<std::ops::Range<u64>>() as u64);
        self.table
            .store
            .check_alloc(
                &self.table.def.path,
                &format!("the scan's list of {count} blocks of {step} rows"),
                bytes,
            )
            .map_err(store_err)?;
        let blocks: Vec<_> = (0..count)
            .map(|b| b * step..((b + 1) * step).min(len))
            .collect();
        if blocks.is_empty() {
            return Ok(vec![vec![0..self.table.major_len]]);
        }
        let per = blocks.len().div_ceil(partitions.max(1));
        Ok(blocks.chunks(per).map(<[_]>::to_vec).collect())
    }
}

#[async_trait]
impl TableProvider for AnnDataTableProvider {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| place_filter(f, &self.table).pushdown())
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.schema();
        let projection = projection
            .cloned()
            .unwrap_or_else(|| (0..schema.fields().len()).collect());
        // A table or column that cannot be read fails the query that reads it, with the reason.
        let filter_columns = filters
            .iter()
            .flat_map(|f| f.column_refs())
            // A name not in this table's schema is not one of its columns.
            .filter_map(|c| schema.index_of(&c.name).ok());
        if let Some(e) = self
            .table
            .refusal(projection.iter().copied().chain(filter_columns))
        {
            return Err(e.into());
        }
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let physical = filters
            .iter()
            .map(|f| state.create_physical_expr(f.clone(), &df_schema))
            .collect::<Result<Vec<_>>>()?;
        let exec = self.plan_scan(
            projection,
            physical,
            limit,
            state.config().target_partitions(),
        )?;
        Ok(Arc::new(exec))
    }

    fn statistics(&self) -> Option<Statistics> {
        let rows = self.exact_rows()?;
        Some(Statistics::new_unknown(&self.schema()).with_num_rows(Precision::Exact(rows as usize)))
    }
}

impl AnnDataTableProvider {
    /// The scan of `projection` with exact `filters` (planned on the table's schema), in up to
    /// `partitions` partitions: what [`TableProvider::scan`] plans, and a collection plans for
    /// each of its datasets.
    pub(crate) fn plan_scan(
        &self,
        projection: Vec<usize>,
        physical: Vec<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
        limit: Option<usize>,
        partitions: usize,
    ) -> Result<AnnDataScanExec> {
        let params = ScanParams {
            projection,
            partitions: self.partition(partitions)?,
            limit,
        };
        self.scan_with(params, physical)
    }

    /// The scan `params` describe, with exact `filters` (on the table's schema): what
    /// [`Self::plan_scan`] plans, and what a scan shipped to another process is rebuilt from.
    pub fn scan_with(
        &self,
        params: ScanParams,
        physical: Vec<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
    ) -> Result<AnnDataScanExec> {
        let schema = self.schema();
        let filter_columns: Vec<usize> = physical
            .iter()
            .flat_map(datafusion::physical_expr::utils::collect_columns)
            .map(|c| c.index())
            .collect();
        if let Some(e) = self
            .table
            .refusal(params.projection.iter().copied().chain(filter_columns))
        {
            return Err(e.into());
        }
        let mut code_filters = Vec::new();
        for f in &physical {
            if place_physical(f, &self.table) == FilterPlacement::CategoricalCodes
                && let Some(c) = CodeFilter::try_new(f, &schema, |i| self.categories(i))?
            {
                code_filters.push(Arc::new(c));
            }
        }
        let exec = AnnDataScanExec::try_new(self.table.clone(), params, physical, code_filters)?;
        Ok(exec.with_row_count(self.exact_rows()))
    }
}

/// An attached store as a DataFusion schema: one table per element the table model exposes.
#[derive(Debug)]
pub struct AnnDataSchemaProvider {
    store: Arc<AnnDataStore>,
    tables: BTreeMap<String, Arc<AnnDataTableProvider>>,
}

impl AnnDataSchemaProvider {
    /// Binds every table of `store`. Tables and columns whose element cannot be read are kept
    /// with the reason ([`Self::notes`]); reading them is an error.
    pub fn try_new(store: Arc<AnnDataStore>) -> Result<Self> {
        Self::with_progress(store, Arc::default())
    }

    /// As [`Self::try_new`], counting scanned blocks into `progress`.
    pub fn with_progress(store: Arc<AnnDataStore>, progress: Arc<Progress>) -> Result<Self> {
        Self::with_index(store, progress, None)
    }

    /// As [`Self::with_progress`], reading the genes of matrices that `index` has a copy of from
    /// it (once the copy is checked against the store).
    pub fn with_index(
        store: Arc<AnnDataStore>,
        progress: Arc<Progress>,
        index: Option<&AttachedIndex>,
    ) -> Result<Self> {
        let mut tables = BTreeMap::new();
        for def in tables_of_store(&store) {
            let name = def.name.clone();
            let sidecar = match (&def.kind, index) {
                (TableKind::Matrix { .. }, Some(index)) => {
                    SidecarCopy::find(index, &store, &def.path)
                }
                _ => None,
            };
            let mut table = AnnTable::try_new(store.clone(), def, progress.clone())?;
            if let Some(sidecar) = sidecar {
                table = table.with_sidecar(sidecar)?;
            }
            tables.insert(name, Arc::new(AnnDataTableProvider::new(table)));
        }
        Ok(Self { store, tables })
    }

    /// The store behind this schema.
    pub fn store(&self) -> &Arc<AnnDataStore> {
        &self.store
    }

    /// What cannot be read in each table: (table, column or None for the whole table, reason),
    /// for `annql schema` and `\d`.
    pub fn notes(&self) -> Vec<(String, Option<String>, Note)> {
        self.tables
            .iter()
            .flat_map(|(name, t)| {
                t.notes()
                    .into_iter()
                    .map(move |(column, note)| (name.clone(), column, note))
            })
            .collect()
    }

    /// A table by name; an exact match first, then the folded name (so `"X"` finds `x`).
    pub fn provider(&self, name: &str) -> Option<&Arc<AnnDataTableProvider>> {
        self.tables
            .get(name)
            .or_else(|| self.tables.get(&name.to_lowercase()))
    }
}

#[async_trait]
impl SchemaProvider for AnnDataSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self
            .provider(name)
            .map(|t| t.clone() as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.provider(name).is_some()
    }
}
