//! A collection as a DataFusion schema: the tables of one store, over every dataset.
//!
//! | table | rows |
//! |---|---|
//! | `obs` | every dataset's cells, in dataset order, with the `dataset` column |
//! | `var` | the union of genes, each with the columns of the first dataset that has it |
//! | `x`, `x_dense`, `layers_*`, `obsm_*` | the union of the datasets' tables (those every dataset has) |
//! | `datasets` | one row per dataset: name, location, cells, genes, first `obs_id`, what was harmonised |
//! | `gene_presence` | one row per (dataset, gene it measured): the feature presence matrix |

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use annql_store::arrow::array::{
    ArrayRef, DictionaryArray, Int32Array, Int64Array, RecordBatch, RecordBatchOptions,
    StringArray, UInt64Array,
};
use annql_store::arrow::compute::{concat_batches, take};
use annql_store::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use annql_store::{ReadStats, SparseCarry};
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{Statistics, stats::Precision};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use super::Collection;
use super::harmonise::{Conv, categorical, union_columns};
use super::scan::CollectionScanExec;
use super::union::UnionTable;
use crate::error::Error;
use crate::model::{Axis, OBS_ID, TableKind, VAR_ID};

/// A collection's tables.
#[derive(Debug)]
pub struct CollectionSchemaProvider {
    collection: Arc<Collection>,
    tables: BTreeMap<String, Arc<CollectionTableProvider>>,
}

impl CollectionSchemaProvider {
    /// The tables of `collection`: checks that their columns can be brought together.
    pub fn try_new(collection: Arc<Collection>) -> crate::error::Result<Self> {
        let names: Vec<String> = collection.members.iter().map(|m| m.name.clone()).collect();
        let mut tables = BTreeMap::new();
        let first = &collection.members[0];
        for name in SchemaProvider::table_names(&first.tables) {
            let Some(kind) = union_kind(&collection, &name) else {
                continue;
            };
            let members = collection
                .members
                .iter()
                .map(|m| m.table(&name))
                .collect::<crate::error::Result<Vec<_>>>()?;
            let schemas: Vec<SchemaRef> = members.iter().map(|t| t.schema()).collect();
            let dataset =
                (name == "obs").then_some((collection.dataset_column.as_str(), "obs_name"));
            let ids: &[(&str, Conv)] = &[(OBS_ID, Conv::ObsOffset), (VAR_ID, Conv::GeneMap)];
            let columns =
                union_columns(&name, &names, &schemas, ids, dataset, &collection.options)?;
            let table = UnionTable::new(name.clone(), collection.clone(), kind, columns, members);
            tables.insert(
                name,
                Arc::new(CollectionTableProvider::new(CollectionTable::Union(
                    Arc::new(table),
                ))),
            );
        }
        let var = VarTable::try_new(collection.clone(), &names)?;
        tables.insert(
            "var".into(),
            Arc::new(CollectionTableProvider::new(CollectionTable::Var(
                Arc::new(var),
            ))),
        );
        tables.insert(
            "datasets".into(),
            Arc::new(CollectionTableProvider::new(CollectionTable::Datasets(
                datasets_batch(&collection)?,
            ))),
        );
        tables.insert(
            "gene_presence".into(),
            Arc::new(CollectionTableProvider::new(CollectionTable::Presence(
                collection.clone(),
            ))),
        );
        Ok(Self { collection, tables })
    }

    /// The collection.
    pub fn collection(&self) -> &Arc<Collection> {
        &self.collection
    }

    /// The unions of tables every dataset has, by name.
    pub(crate) fn union_tables(&self) -> impl Iterator<Item = Arc<UnionTable>> + '_ {
        self.tables.values().filter_map(|t| match t.table() {
            CollectionTable::Union(u) => Some(u.clone()),
            _ => None,
        })
    }

    /// A table by name; exact first, then folded.
    pub fn provider(&self, name: &str) -> Option<&Arc<CollectionTableProvider>> {
        self.tables
            .get(name)
            .or_else(|| self.tables.get(&name.to_lowercase()))
    }
}

/// The kind of a table every dataset has and a collection can union: obs, obs-axis dataframes
/// and embeddings, cells × genes matrices. None otherwise (or if a dataset lacks it, or has it
/// of another kind).
fn union_kind(collection: &Collection, name: &str) -> Option<TableKind> {
    let kind = collection.members[0]
        .tables
        .provider(name)?
        .table()
        .def()
        .kind
        .clone();
    let ok = matches!(
        &kind,
        TableKind::Frame {
            axis: Axis::Obs,
            ..
        } | TableKind::Embedding { axis: Axis::Obs }
            | TableKind::Matrix {
                rows: Axis::Obs,
                cols: Axis::Var,
                ..
            }
    );
    let everywhere = collection.members.iter().all(|m| {
        m.tables
            .provider(name)
            .is_some_and(|t| t.table().def().kind == kind)
    });
    (ok && everywhere).then_some(kind)
}

#[async_trait]
impl SchemaProvider for CollectionSchemaProvider {
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

/// What a collection table is.
#[derive(Debug)]
pub enum CollectionTable {
    /// The union of a table every dataset has.
    Union(Arc<UnionTable>),
    /// The union of genes.
    Var(Arc<VarTable>),
    /// One row per dataset.
    Datasets(RecordBatch),
    /// One row per (dataset, gene it measured).
    Presence(Arc<Collection>),
}

/// One table of a collection.
#[derive(Debug)]
pub struct CollectionTableProvider {
    table: CollectionTable,
}

impl CollectionTableProvider {
    fn new(table: CollectionTable) -> Self {
        Self { table }
    }

    /// What the table is.
    pub fn table(&self) -> &CollectionTable {
        &self.table
    }
}

#[async_trait]
impl TableProvider for CollectionTableProvider {
    fn schema(&self) -> SchemaRef {
        match &self.table {
            CollectionTable::Union(t) => t.schema(),
            CollectionTable::Var(t) => t.schema.clone(),
            CollectionTable::Datasets(b) => b.schema(),
            CollectionTable::Presence(_) => presence_schema(),
        }
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // The union's scan applies every deterministic filter on its columns exactly; the small
        // tables leave them to DataFusion.
        Ok(filters
            .iter()
            .map(|f| match &self.table {
                CollectionTable::Union(t)
                    if !f.is_volatile()
                        && f.column_refs()
                            .iter()
                            .all(|c| t.schema.index_of(&c.name).is_ok()) =>
                {
                    TableProviderFilterPushDown::Exact
                }
                _ => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = match &self.table {
            CollectionTable::Union(t) => {
                let exec =
                    CollectionScanExec::try_new(t.clone(), state, projection, filters, limit)?;
                return Ok(Arc::new(exec));
            }
            CollectionTable::Var(t) => {
                let batch = t.batch(projection)?;
                let schema = batch.schema();
                return Ok(MemorySourceConfig::try_new_exec(
                    &[vec![batch]],
                    schema,
                    None,
                )?);
            }
            CollectionTable::Datasets(b) => b.clone(),
            CollectionTable::Presence(c) => presence_batch(c)?,
        };
        let schema = batch.schema();
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            schema,
            projection.cloned(),
        )?)
    }

    fn statistics(&self) -> Option<Statistics> {
        let rows = match &self.table {
            CollectionTable::Union(t) => t.exact_rows()?,
            CollectionTable::Var(t) => t.collection.genes.len as usize,
            CollectionTable::Datasets(b) => b.num_rows(),
            CollectionTable::Presence(c) => c.members.iter().map(|m| m.n_vars as usize).sum(),
        };
        Some(Statistics::new_unknown(&self.schema()).with_num_rows(Precision::Exact(rows)))
    }
}

/// The union of the datasets' genes: each gene with the var columns of the first dataset that
/// has it (read on first use).
#[derive(Debug)]
pub struct VarTable {
    collection: Arc<Collection>,
    columns: Vec<super::harmonise::ColumnPlan>,
    schema: SchemaRef,
    union: UnionTable,
    /// Columns read so far.
    rows: Mutex<std::collections::HashMap<usize, ArrayRef>>,
}

impl VarTable {
    /// The collection.
    pub(crate) fn collection(&self) -> &Arc<Collection> {
        &self.collection
    }

    fn try_new(collection: Arc<Collection>, names: &[String]) -> crate::error::Result<Self> {
        let members = collection
            .members
            .iter()
            .map(|m| m.table("var"))
            .collect::<crate::error::Result<Vec<_>>>()?;
        let schemas: Vec<SchemaRef> = members.iter().map(|t| t.schema()).collect();
        let columns = union_columns(
            "var",
            names,
            &schemas,
            &[(VAR_ID, Conv::GeneMap)],
            None,
            &collection.options,
        )?;
        let union = UnionTable::new(
            "var".into(),
            collection.clone(),
            TableKind::Frame {
                axis: Axis::Var,
                with_names: true,
            },
            columns.clone(),
            members,
        );
        Ok(Self {
            schema: union.schema(),
            collection,
            columns,
            union,
            rows: Mutex::default(),
        })
    }

    /// The genes' `projection` columns (each read from the datasets once, then kept).
    fn batch(&self, projection: Option<&Vec<usize>>) -> Result<RecordBatch> {
        let all: Vec<usize> = (0..self.columns.len()).collect();
        let projection = projection.unwrap_or(&all);
        let columns = projection
            .iter()
            .map(|&c| self.column(c))
            .collect::<Result<Vec<_>>>()?;
        let schema = Arc::new(self.schema.project(projection)?);
        let options =
            RecordBatchOptions::new().with_row_count(Some(self.collection.genes.len as usize));
        Ok(RecordBatch::try_new_with_options(
            schema, columns, &options,
        )?)
    }

    /// Column `c` of every gene: the ids, the keys read when the genes were aligned (the var
    /// index), or each gene's value in the first dataset that has it.
    fn column(&self, c: usize) -> Result<ArrayRef> {
        let mut cache = self
            .rows
            .lock()
            .map_err(|_| DataFusionError::Internal("var table lock poisoned".into()))?;
        if let Some(a) = cache.get(&c) {
            return Ok(a.clone());
        }
        let genes = &self.collection.genes;
        let name = self.columns[c].field.name().as_str();
        let array: ArrayRef = if name == VAR_ID {
            Arc::new(Int64Array::from_iter_values(0..genes.len as i64))
        } else if name == "var_name" && self.collection.options.var_key.is_none() {
            Arc::new(StringArray::from_iter_values(genes.keys.iter()))
        } else {
            self.read_column(c)?
        };
        cache.insert(c, array.clone());
        Ok(array)
    }

    fn read_column(&self, c: usize) -> Result<ArrayRef> {
        let genes = &self.collection.genes;
        let mut firsts: Vec<Vec<u32>> = vec![Vec::new(); self.collection.members.len()];
        for &(m, row) in &genes.first {
            firsts[m as usize].push(row);
        }
        let mut parts = Vec::new();
        for (m, take_rows) in firsts.iter().enumerate() {
            if take_rows.is_empty() {
                continue;
            }
            let remap = self.union.remap(m, &[c])?;
            let table = self.union.members[m].table();
            let mut needed = vec![false; table.schema().fields().len()];
            for &i in &remap.projection {
                needed[i] = true;
            }
            let read = table
                .read_block(
                    0..table.major_len,
                    &needed,
                    None,
                    None,
                    &mut SparseCarry::default(),
                    &ReadStats::new_shared(),
                )
                .map_err(|e| self.collection.in_dataset(m, e))?;
            let read = concat_batches(&table.work_schema, &read)?;
            let indices = annql_store::arrow::array::UInt32Array::from(take_rows.clone());
            let columns = remap
                .projection
                .iter()
                .map(|&i| take(read.column(i), &indices, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let fields: Vec<_> = remap
                .projection
                .iter()
                .map(|&i| table.schema().field(i).clone().with_nullable(true))
                .collect();
            let options = RecordBatchOptions::new().with_row_count(Some(take_rows.len()));
            let projected = RecordBatch::try_new_with_options(
                Arc::new(Schema::new(fields)),
                columns,
                &options,
            )?;
            parts.push(remap.apply(&projected)?.column(0).clone());
        }
        let refs: Vec<&dyn annql_store::arrow::array::Array> =
            parts.iter().map(|a| a.as_ref()).collect();
        Ok(annql_store::arrow::compute::concat(&refs)?)
    }
}

/// The `datasets` table.
fn datasets_batch(c: &Collection) -> crate::error::Result<RecordBatch> {
    let m = &c.members;
    let harmonised: Vec<String> = m
        .iter()
        .map(|d| {
            let mut notes = Vec::new();
            if d.n_vars < c.genes.len {
                notes.push(format!("{} genes absent (zero)", c.genes.len - d.n_vars));
            }
            notes.join("; ")
        })
        .collect();
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "dataset_id",
            Arc::new(Int32Array::from_iter_values(0..m.len() as i32)),
        ),
        (
            "dataset",
            Arc::new(StringArray::from_iter_values(
                m.iter().map(|d| d.name.as_str()),
            )),
        ),
        (
            "location",
            Arc::new(StringArray::from_iter_values(
                m.iter().map(|d| d.location.as_str()),
            )),
        ),
        (
            "n_obs",
            Arc::new(UInt64Array::from_iter_values(m.iter().map(|d| d.n_obs))),
        ),
        (
            "n_vars",
            Arc::new(UInt64Array::from_iter_values(m.iter().map(|d| d.n_vars))),
        ),
        (
            "obs_id_start",
            Arc::new(Int64Array::from_iter_values(
                m.iter().map(|d| d.obs_start as i64),
            )),
        ),
        (
            "harmonised",
            Arc::new(StringArray::from_iter_values(harmonised)),
        ),
    ];
    RecordBatch::try_from_iter(columns).map_err(|e| Error::DataFusion(e.into()))
}

fn presence_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("dataset", categorical(DataType::Utf8), false),
        Field::new(VAR_ID, DataType::Int64, false),
        Field::new("dataset_var_id", DataType::Int64, false),
    ]))
}

/// The `gene_presence` table: which genes each dataset measured.
fn presence_batch(c: &Collection) -> Result<RecordBatch> {
    let (mut datasets, mut global, mut local) = (Vec::new(), Vec::new(), Vec::new());
    for (m, map) in c.genes.to_global.iter().enumerate() {
        for (row, &g) in map.iter().enumerate() {
            datasets.push(m as i32);
            global.push(g);
            local.push(row as i64);
        }
    }
    let dataset =
        DictionaryArray::<Int32Type>::try_new(Int32Array::from(datasets), c.dataset_values())?;
    Ok(RecordBatch::try_new(
        presence_schema(),
        vec![
            Arc::new(dataset),
            Arc::new(Int64Array::from(global)),
            Arc::new(Int64Array::from(local)),
        ],
    )?)
}
