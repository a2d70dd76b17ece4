//! [`UnionTable`]: a table every dataset of a collection has (`obs`, `x`, `layers_counts`, an
//! `obsm` embedding…), as the union of the datasets' tables: their rows in dataset order, cell ids
//! shifted, gene ids mapped, columns harmonised ([`super::harmonise`]). [`Remap`] turns one
//! dataset's batches into the collection's; [`GlobalIds`] lets a dataset's scan evaluate a
//! predicate written on the collection's ids.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use annql_store::arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Int32Array, Int64Array, RecordBatch,
    RecordBatchOptions, StringArray, new_null_array,
};
use annql_store::arrow::compute::cast;
use annql_store::arrow::datatypes::{DataType, Int32Type, Int64Type, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr_common::physical_expr::snapshot_physical_expr;

use super::Collection;
use super::harmonise::{ColumnPlan, Conv, Source};
use crate::decode::{nullable, probe_batch};
use crate::model::TableKind;
use crate::provider::AnnDataTableProvider;

/// A table every dataset of a collection has, as their union.
#[derive(Debug)]
pub struct UnionTable {
    /// SQL name.
    pub(crate) name: String,
    pub(crate) collection: Arc<Collection>,
    /// The kind, as in every dataset (`x_dense` keeps `dense`).
    pub(crate) kind: TableKind,
    pub(crate) columns: Vec<ColumnPlan>,
    pub(crate) schema: SchemaRef,
    /// The dataset's table, per dataset.
    pub(crate) members: Vec<Arc<AnnDataTableProvider>>,
    /// Unions of categories, per column, made on first use (they read every dataset's).
    categories: Mutex<HashMap<usize, Arc<CategoryUnion>>>,
}

/// The categories of a collection categorical: the union, and each value's code in it.
#[derive(Debug)]
pub(crate) struct CategoryUnion {
    pub(crate) values: ArrayRef,
    codes: HashMap<String, i32>,
}

impl UnionTable {
    pub(crate) fn new(
        name: String,
        collection: Arc<Collection>,
        kind: TableKind,
        columns: Vec<ColumnPlan>,
        members: Vec<Arc<AnnDataTableProvider>>,
    ) -> Self {
        Self {
            schema: super::harmonise::schema_of(&columns),
            name,
            collection,
            kind,
            columns,
            members,
            categories: Mutex::default(),
        }
    }

    /// The collection's schema of this table.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Rows of the whole table, when every dataset's count is cheap to know (for a zero-filled
    /// view, each dataset's cells times the collection's genes).
    pub(crate) fn exact_rows(&self) -> Option<usize> {
        let mut rows = 0usize;
        for m in 0..self.members.len() {
            rows = rows.checked_add(self.member_rows(m)?)?;
        }
        Some(rows)
    }

    /// Rows of dataset `m`'s part of the table (its cells times the collection's genes for a
    /// zero-filled view), when cheap to know.
    pub(crate) fn member_rows(&self, m: usize) -> Option<usize> {
        if self.is_dense() {
            let d = &self.collection.members[m];
            // Past usize: no row count to give (statistics are optional).
            return usize::try_from(d.n_obs.checked_mul(self.collection.genes.len)?).ok();
        }
        // Likewise.
        usize::try_from(self.members[m].exact_rows()?).ok()
    }

    /// Whether this is a zero-filled view (`x_dense`).
    pub(crate) fn is_dense(&self) -> bool {
        matches!(self.kind, TableKind::Matrix { dense: true, .. })
    }

    /// The union of categories of column `c`, read from every dataset once.
    pub(crate) fn categories(&self, c: usize) -> Result<Arc<CategoryUnion>> {
        let mut cache = self
            .categories
            .lock()
            .map_err(|_| DataFusionError::Internal("category cache poisoned".into()))?;
        if let Some(u) = cache.get(&c) {
            return Ok(u.clone());
        }
        let DataType::Dictionary(_, value_type) = self.columns[c].field.data_type() else {
            return Err(DataFusionError::Internal(format!(
                "column {} is not categorical",
                self.columns[c].field.name()
            )));
        };
        let mut codes: HashMap<String, i32> = HashMap::new();
        let mut order: Vec<ArrayRef> = Vec::new();
        for (m, source) in self.columns[c].sources.iter().enumerate() {
            let Source::Column { index, .. } = source else {
                continue;
            };
            let values = self.members[m]
                .categories(*index)
                .map_err(|e| self.collection.in_dataset(m, e))?;
            let values = cast(&values, value_type)?;
            let keys = cast(&values, &DataType::Utf8)?;
            let keys = keys.as_string::<i32>();
            for i in 0..values.len() {
                let next = codes.len() as i32;
                if let std::collections::hash_map::Entry::Vacant(e) =
                    codes.entry(keys.value(i).to_string())
                {
                    e.insert(next);
                    order.push(values.slice(i, 1));
                }
            }
        }
        let refs: Vec<&dyn Array> = order.iter().map(|a| a.as_ref()).collect();
        let values = if refs.is_empty() {
            new_null_array(value_type, 0)
        } else {
            annql_store::arrow::compute::concat(&refs)?
        };
        let union = Arc::new(CategoryUnion { values, codes });
        cache.insert(c, union.clone());
        Ok(union)
    }

    /// How dataset `m`'s batches become the collection's, for the collection columns `needed`:
    /// the dataset columns to read (its scan's projection) and the conversion.
    pub(crate) fn remap(&self, m: usize, needed: &[usize]) -> Result<Remap> {
        let mut projection: Vec<usize> = needed
            .iter()
            .filter_map(|&c| match self.columns[c].sources[m] {
                Source::Column { index, .. } => Some(index),
                _ => None,
            })
            .collect();
        projection.sort_unstable();
        projection.dedup();
        let mut makes = Vec::with_capacity(needed.len());
        for &c in needed {
            let plan = &self.columns[c];
            let target = plan.field.data_type().clone();
            makes.push(match plan.sources[m] {
                Source::Null => Make::Null(target),
                Source::Dataset => Make::Dataset,
                Source::Column { index, conv } => {
                    let at = projection.iter().position(|&i| i == index).ok_or_else(|| {
                        DataFusionError::Internal("remapped column not read".into())
                    })?;
                    let how = match conv {
                        Conv::Same => How::Same,
                        Conv::Cast => How::Cast(target),
                        Conv::Categories => How::Categories(self.categories(c)?),
                        Conv::ObsOffset => How::Offset(self.collection.members[m].obs_start as i64),
                        Conv::GeneMap => How::Genes(self.collection.genes.to_global[m].clone()),
                    };
                    Make::Column(at, how)
                }
            });
        }
        let fields: Vec<_> = needed
            .iter()
            .map(|&c| self.columns[c].field.clone())
            .collect();
        Ok(Remap {
            projection,
            makes,
            schema: Arc::new(nullable(&Schema::new(fields))),
            dataset: self.collection.dataset_values(),
            member: m as i32,
        })
    }
}

/// Dataset `m`'s batches as the collection's.
#[derive(Debug, Clone)]
pub(crate) struct Remap {
    /// The dataset table's columns its scan reads.
    pub(crate) projection: Vec<usize>,
    makes: Vec<Make>,
    /// The schema of the converted batches.
    pub(crate) schema: SchemaRef,
    /// Every dataset's name (the `dataset` column's dictionary).
    dataset: ArrayRef,
    member: i32,
}

#[derive(Debug, Clone)]
enum Make {
    Column(usize, How),
    Null(DataType),
    Dataset,
}

#[derive(Debug, Clone)]
enum How {
    Same,
    Cast(DataType),
    Categories(Arc<CategoryUnion>),
    Offset(i64),
    Genes(Arc<Vec<i64>>),
}

impl Remap {
    /// Converts a batch of the dataset's scan (its columns [`Self::projection`]).
    pub(crate) fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let mut columns = Vec::with_capacity(self.makes.len());
        for make in &self.makes {
            columns.push(match make {
                Make::Null(t) => new_null_array(t, n),
                Make::Dataset => {
                    let keys = Int32Array::from_value(self.member, n);
                    Arc::new(DictionaryArray::<Int32Type>::try_new(
                        keys,
                        self.dataset.clone(),
                    )?) as ArrayRef
                }
                Make::Column(at, how) => convert(batch.column(*at), how)?,
            });
        }
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?)
    }
}

fn convert(a: &ArrayRef, how: &How) -> Result<ArrayRef> {
    Ok(match how {
        How::Same => a.clone(),
        How::Cast(t) => cast(a, t)?,
        How::Offset(o) => {
            let ids = cast(a, &DataType::Int64)?;
            let ids = ids.as_primitive::<Int64Type>();
            Arc::new(ids.unary::<_, Int64Type>(|v| v + o)) as ArrayRef
        }
        How::Genes(map) => Arc::new(map_ids(a, map)?) as ArrayRef,
        How::Categories(union) => recode(a, union)?,
    })
}

/// Dataset gene ids as collection gene ids.
fn map_ids(a: &ArrayRef, map: &[i64]) -> Result<Int64Array> {
    let ids = cast(a, &DataType::Int64)?;
    let ids = ids.as_primitive::<Int64Type>();
    ids.iter()
        .map(|v| {
            v.map(|v| {
                usize::try_from(v)
                    .ok()
                    .and_then(|i| map.get(i).copied())
                    .ok_or_else(|| {
                        DataFusionError::Internal(format!("gene id {v} outside its dataset"))
                    })
            })
            .transpose()
        })
        .collect()
}

/// A dataset's categorical re-coded into the union of categories (by value).
fn recode(a: &ArrayRef, union: &CategoryUnion) -> Result<ArrayRef> {
    let dict = a.as_any_dictionary_opt().ok_or_else(|| {
        DataFusionError::Internal("a categorical column was read without its dictionary".into())
    })?;
    let names = cast(dict.values(), &DataType::Utf8)?;
    let names: &StringArray = names.as_string::<i32>();
    let lookup: Vec<Option<i32>> = (0..names.len())
        .map(|i| {
            (!names.is_null(i))
                .then(|| union.codes.get(names.value(i)).copied())
                .flatten()
        })
        .collect();
    let keys = cast(dict.keys(), &DataType::Int64)?;
    let keys = keys.as_primitive::<Int64Type>();
    let new: Int32Array = keys
        .iter()
        .map(|k| k.and_then(|k| lookup.get(k as usize).copied().flatten()))
        .collect();
    Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
        new,
        union.values.clone(),
    )?))
}

/// How a dataset's ids become the collection's.
#[derive(Debug, Clone)]
pub(crate) enum IdMap {
    /// Cells: shifted by the dataset's first cell.
    Offset(i64),
    /// Genes: through the dataset's gene map.
    Genes(Arc<Vec<i64>>),
}

impl IdMap {
    fn apply(&self, a: &ArrayRef) -> Result<ArrayRef> {
        match self {
            IdMap::Offset(o) => convert(a, &How::Offset(*o)),
            IdMap::Genes(m) => Ok(Arc::new(map_ids(a, m)?)),
        }
    }
}

/// A predicate on a collection id column (`inner`, planned on `schema` with the id at
/// `column`) evaluated on a dataset's batches: the dataset's ids (`local`) are mapped first.
/// A dataset's scan takes it as one of its own id predicates, so it prunes blocks before
/// reading them; a join's dynamic filter stays live through it (see [`Self::snapshot`]).
#[derive(Debug)]
pub(crate) struct GlobalIds {
    pub(crate) inner: Arc<dyn PhysicalExpr>,
    pub(crate) local: Arc<dyn PhysicalExpr>,
    pub(crate) map: IdMap,
    pub(crate) schema: SchemaRef,
    pub(crate) column: usize,
}

impl fmt::Display for GlobalIds {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "collection({})", self.inner)
    }
}

impl PartialEq for GlobalIds {
    fn eq(&self, other: &Self) -> bool {
        self.inner.as_ref() == other.inner.as_ref()
            && self.local.as_ref() == other.local.as_ref()
            && self.column == other.column
    }
}

impl Eq for GlobalIds {}

impl Hash for GlobalIds {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.local.hash(state);
        self.column.hash(state);
    }
}

impl PhysicalExpr for GlobalIds {
    fn data_type(&self, _: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, _: &Schema) -> Result<bool> {
        Ok(true)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let local = self.local.evaluate(batch)?.into_array(batch.num_rows())?;
        let global = self.map.apply(&local)?;
        let probe = probe_batch(&self.schema, self.column, global)?;
        self.inner.evaluate(&probe)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.local]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let local = children
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Internal("GlobalIds takes one child".into()))?;
        Ok(Arc::new(Self {
            inner: self.inner.clone(),
            local,
            map: self.map.clone(),
            schema: self.schema.clone(),
            column: self.column,
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }

    /// The inner predicate as it stands now (a join's filter once its build side is known).
    fn snapshot(&self) -> Result<Option<Arc<dyn PhysicalExpr>>> {
        Ok(Some(Arc::new(Self {
            inner: snapshot_physical_expr(self.inner.clone())?,
            local: self.local.clone(),
            map: self.map.clone(),
            schema: self.schema.clone(),
            column: self.column,
        })))
    }

    fn snapshot_generation(&self) -> u64 {
        datafusion::physical_expr_common::physical_expr::snapshot_generation(&self.inner)
    }
}
