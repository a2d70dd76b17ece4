//! [`CollectionScanExec`]: a collection table read as each dataset's own scan, its batches
//! converted to the collection's ([`super::union::Remap`]).
//!
//! At planning, a dataset whose values show a predicate cannot match — on the `dataset` column, a
//! column it lacks (NULL there), or a categorical none of whose categories passes — is pruned: its
//! scan is not even planned, and `EXPLAIN` lists it. Predicates on one id column reach the
//! datasets' scans through [`GlobalIds`] (so their blocks are pruned before any read); so do the
//! joins' dynamic filters. Every predicate is also applied to the converted batches, so what the
//! datasets' scans do not take is still applied exactly. A zero-filled view (`x_dense`) adds, per
//! dataset, the zeros of the collection genes it did not measure.

use std::fmt;
use std::sync::Arc;

use annql_store::arrow::array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, Int32Array, Int64Array, RecordBatch,
    new_null_array,
};
use annql_store::arrow::compute::filter_record_batch;
use annql_store::arrow::datatypes::{DataType, Int32Type, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, Statistics, stats::Precision};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_expr_common::physical_expr::snapshot_physical_expr;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterPushdownPhase, FilterPushdownPropagation, PushedDown,
};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};

use super::genes::ABSENT;
use super::harmonise::{Conv, Source};
use super::union::{GlobalIds, IdMap, Remap, UnionTable};
use crate::decode::{nullable, probe_batch};
use crate::model::{OBS_ID, VAR_ID};
use crate::scan::AnnDataScanExec;

/// One dataset's part of a collection scan.
#[derive(Debug, Clone)]
struct Part {
    /// The dataset.
    member: usize,
    /// Its scan (over its own table, with the predicates it can take).
    scan: Arc<AnnDataScanExec>,
    /// Its batches as the collection's (the work columns).
    remap: Remap,
}

/// A unit of a partition's work.
#[derive(Debug, Clone, Copy)]
enum Unit {
    /// Partition `partition` of part `part`'s scan.
    Scan { part: usize, partition: usize },
    /// The zeros of the genes part `part`'s dataset did not measure (zero-filled views).
    Absent { part: usize },
}

/// Scans a collection table.
#[derive(Debug)]
pub struct CollectionScanExec {
    table: Arc<UnionTable>,
    /// Output columns (collection schema).
    projection: Vec<usize>,
    /// Work columns: the projection, then the columns only the filters read.
    needed: Vec<usize>,
    /// All predicates, on the work schema: applied to every converted batch.
    filters: Vec<Arc<dyn PhysicalExpr>>,
    parts: Vec<Part>,
    /// Datasets pruned at planning, and the predicate that ruled each out.
    pruned: Vec<(usize, String)>,
    units: Vec<Vec<Unit>>,
    /// Joins' dynamic filters on an id column of the output.
    dynamic: Vec<Arc<dyn PhysicalExpr>>,
    limit: Option<usize>,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
}

impl CollectionScanExec {
    /// Plans the scan of `table` with the provider's arguments.
    pub(crate) fn try_new(
        table: Arc<UnionTable>,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Self> {
        let full = table.schema();
        let projection = projection
            .cloned()
            .unwrap_or_else(|| (0..full.fields().len()).collect());
        let mut needed = projection.clone();
        for f in filters {
            for c in f.column_refs() {
                let i = full.index_of(&c.name)?;
                if !needed.contains(&i) {
                    needed.push(i);
                }
            }
        }
        let work = Arc::new(nullable(&full.project(&needed)?));
        let work_df = DFSchema::try_from(work.as_ref().clone())?;
        let physical = filters
            .iter()
            .map(|f| state.create_physical_expr(f.clone(), &work_df))
            .collect::<Result<Vec<_>>>()?;
        let threads = state.config().target_partitions().max(1);
        let mut parts = Vec::new();
        let mut pruned = Vec::new();
        let members = table.collection.members.len();
        let live: Vec<usize> = (0..members)
            .filter_map(|m| match rule_out(&table, m, &needed, &work, &physical) {
                Ok(Some(why)) => {
                    pruned.push((m, why));
                    None
                }
                Ok(None) => Some(Ok(m)),
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_>>()?;
        let per_member = threads.div_ceil(live.len().max(1));
        for &m in &live {
            let remap = table.remap(m, &needed)?;
            let member_filters =
                member_filters(&table, m, &needed, &work, &physical, filters, state)?;
            let scan = table.members[m]
                .plan_scan(remap.projection.clone(), member_filters, limit, per_member)
                .map_err(|e| table.collection.in_dataset(m, e))?;
            parts.push(Part {
                member: m,
                scan: Arc::new(scan),
                remap,
            });
        }
        let schema = Arc::new(full.project(&projection)?);
        let exec = Self {
            units: units(&parts, table.is_dense(), threads),
            cache: properties(&schema, threads),
            table,
            projection,
            needed,
            filters: physical,
            parts,
            pruned,
            dynamic: Vec::new(),
            limit,
            schema,
        };
        Ok(exec)
    }

    /// The datasets pruned at planning, by name, with the predicate that ruled each out.
    pub fn pruned(&self) -> Vec<(String, String)> {
        self.pruned
            .iter()
            .map(|(m, why)| (self.table.collection.members[*m].name.clone(), why.clone()))
            .collect()
    }

    /// The datasets the scan reads.
    pub fn datasets(&self) -> Vec<String> {
        self.parts
            .iter()
            .map(|p| self.table.collection.members[p.member].name.clone())
            .collect()
    }

    /// Rows of the datasets read, when each one's count is cheap to know.
    fn rows_read(&self) -> Option<usize> {
        let mut rows = 0usize;
        for p in &self.parts {
            rows += self.table.member_rows(p.member)?;
        }
        Some(rows)
    }

    fn with_dynamic(&self, added: Vec<Arc<dyn PhysicalExpr>>) -> Result<Self> {
        let mut parts = Vec::with_capacity(self.parts.len());
        for p in &self.parts {
            let mut translated = Vec::new();
            for f in &added {
                if let Some(t) = self.translate_output(p, f)? {
                    translated.push(t);
                }
            }
            parts.push(Part {
                scan: Arc::new(p.scan.with_added_dynamic_filters(translated)),
                ..p.clone()
            });
        }
        let mut dynamic = self.dynamic.clone();
        dynamic.extend(added);
        Ok(Self {
            table: self.table.clone(),
            projection: self.projection.clone(),
            needed: self.needed.clone(),
            filters: self.filters.clone(),
            parts,
            pruned: self.pruned.clone(),
            units: self.units.clone(),
            dynamic,
            limit: self.limit,
            schema: self.schema.clone(),
            cache: self.cache.clone(),
        })
    }

    /// A dynamic filter on one output id column, for part `p`'s scan (on its output).
    fn translate_output(
        &self,
        p: &Part,
        f: &Arc<dyn PhysicalExpr>,
    ) -> Result<Option<Arc<dyn PhysicalExpr>>> {
        let Some((column, name)) = one_column(f) else {
            return Ok(None);
        };
        let c = self.projection[column];
        let Source::Column { index, conv } = self.table.columns[c].sources[p.member] else {
            return Ok(None);
        };
        let Some(at) = p.remap.projection.iter().position(|&i| i == index) else {
            return Ok(None);
        };
        let map = match conv {
            Conv::ObsOffset => {
                IdMap::Offset(self.table.collection.members[p.member].obs_start as i64)
            }
            Conv::GeneMap => IdMap::Genes(self.table.collection.genes.to_global[p.member].clone()),
            _ => return Ok(None),
        };
        Ok(Some(Arc::new(GlobalIds {
            inner: f.clone(),
            local: Arc::new(Column::new(&name, at)),
            map,
            schema: self.schema.clone(),
            column,
        })))
    }
}

/// The column a predicate reads, if exactly one: its index and name.
fn one_column(f: &Arc<dyn PhysicalExpr>) -> Option<(usize, String)> {
    let cols = collect_columns(f);
    let mut it = cols.iter();
    let first = it.next()?;
    it.all(|c| c.index() == first.index())
        .then(|| (first.index(), first.name().to_string()))
}

fn properties(schema: &SchemaRef, partitions: usize) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema.clone()),
        Partitioning::UnknownPartitioning(partitions),
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

/// The parts' units spread over `partitions` partitions, in dataset order.
fn units(parts: &[Part], dense: bool, partitions: usize) -> Vec<Vec<Unit>> {
    let mut all = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        for partition in 0..p.scan.properties().partitioning.partition_count() {
            all.push(Unit::Scan { part: i, partition });
        }
        if dense {
            all.push(Unit::Absent { part: i });
        }
    }
    let per = all.len().div_ceil(partitions.max(1)).max(1);
    let mut out: Vec<Vec<Unit>> = all.chunks(per).map(<[_]>::to_vec).collect();
    out.resize(partitions, Vec::new());
    out
}

/// Why dataset `m` cannot match the predicates, if a predicate over only its `dataset` value,
/// columns it lacks, or one categorical column shows so.
fn rule_out(
    table: &UnionTable,
    m: usize,
    needed: &[usize],
    work: &SchemaRef,
    filters: &[Arc<dyn PhysicalExpr>],
) -> Result<Option<String>> {
    for f in filters {
        let cols = collect_columns(f);
        let sources: Vec<(usize, &Source)> = cols
            .iter()
            .map(|c| (c.index(), &table.columns[needed[c.index()]].sources[m]))
            .collect();
        let constant = sources
            .iter()
            .all(|(_, s)| matches!(s, Source::Dataset | Source::Null));
        let verdict = if constant {
            // One row: the dataset's name, NULL for what it lacks.
            let columns: Vec<ArrayRef> = work
                .fields()
                .iter()
                .enumerate()
                .map(|(i, field)| match sources.iter().find(|(c, _)| *c == i) {
                    Some((_, Source::Dataset)) => {
                        Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
                            Int32Array::from(vec![m as i32]),
                            table.collection.dataset_values(),
                        )?) as ArrayRef)
                    }
                    _ => Ok(new_null_array(field.data_type(), 1)),
                })
                .collect::<Result<_>>()?;
            let probe = RecordBatch::try_new(work.clone(), columns)?;
            any_true(f, &probe)?
        } else if let [
            (
                c,
                Source::Column {
                    index,
                    conv: Conv::Categories,
                },
            ),
        ] = sources[..]
        {
            // Every category of the dataset's column, and a missing value.
            let categories = table.members[m]
                .categories(*index)
                .map_err(|e| table.collection.in_dataset(m, e))?;
            let n = categories.len();
            let DataType::Dictionary(_, value_type) = work.field(c).data_type() else {
                continue;
            };
            let values = annql_store::arrow::compute::cast(&categories, value_type)?;
            let keys = Int32Array::from_iter((0..n as i32).map(Some).chain([None]));
            let dict: ArrayRef = Arc::new(DictionaryArray::<Int32Type>::try_new(keys, values)?);
            any_true(f, &probe_batch(work, c, dict)?)?
        } else {
            true
        };
        if !verdict {
            return Ok(Some(f.to_string()));
        }
    }
    Ok(None)
}

fn any_true(f: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<bool> {
    let result = f.evaluate(batch)?.into_array(batch.num_rows())?;
    let result = result
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| DataFusionError::Plan(format!("filter {f} is not boolean")))?;
    Ok(result.iter().any(|v| v == Some(true)))
}

/// The predicates dataset `m`'s scan takes, on its table's schema: those over columns it has as
/// they are (planned again on its schema), and those on one id column (through [`GlobalIds`]).
fn member_filters(
    table: &UnionTable,
    m: usize,
    needed: &[usize],
    work: &SchemaRef,
    physical: &[Arc<dyn PhysicalExpr>],
    logical: &[Expr],
    state: &dyn Session,
) -> Result<Vec<Arc<dyn PhysicalExpr>>> {
    let member_schema = table.members[m].schema();
    let member_df = DFSchema::try_from(member_schema.as_ref().clone())?;
    let mut out = Vec::new();
    for (f, expr) in physical.iter().zip(logical) {
        let cols = collect_columns(f);
        let sources: Vec<&Source> = cols
            .iter()
            .map(|c| &table.columns[needed[c.index()]].sources[m])
            .collect();
        if sources.iter().all(|s| {
            matches!(
                s,
                Source::Column {
                    conv: Conv::Same,
                    ..
                }
            )
        }) {
            let unqualified = crate::pushdown::unqualify(expr.clone())?;
            out.push(state.create_physical_expr(unqualified, &member_df)?);
            continue;
        }
        if let (Some((column, _)), [Source::Column { index, conv }]) =
            (one_column(f), &sources[..1])
        {
            let map = match conv {
                Conv::ObsOffset => IdMap::Offset(table.collection.members[m].obs_start as i64),
                Conv::GeneMap => IdMap::Genes(table.collection.genes.to_global[m].clone()),
                _ => continue,
            };
            let name = member_schema.field(*index).name();
            out.push(Arc::new(GlobalIds {
                inner: f.clone(),
                local: Arc::new(Column::new(name, *index)),
                map,
                schema: work.clone(),
                column,
            }));
        }
    }
    Ok(out)
}

impl DisplayAs for CollectionScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let schema = self.table.schema();
        let names: Vec<&str> = self
            .projection
            .iter()
            .map(|&i| schema.field(i).name().as_str())
            .collect();
        write!(
            f,
            "CollectionScanExec: table={}, projection=[{}], datasets={} of {}",
            self.table.name,
            names.join(", "),
            self.parts.len(),
            self.table.collection.members.len()
        )?;
        if !self.filters.is_empty() {
            let fs: Vec<String> = self.filters.iter().map(|e| e.to_string()).collect();
            write!(f, ", filters=[{}]", fs.join(" AND "))?;
        }
        if !self.pruned.is_empty() {
            let p: Vec<String> = self
                .pruned()
                .into_iter()
                .map(|(name, why)| format!("{name}: {why}"))
                .collect();
            write!(f, ", pruned=[{}]", p.join("; "))?;
        }
        if !self.dynamic.is_empty() && t != DisplayFormatType::TreeRender {
            let fs: Vec<String> = self.dynamic.iter().map(|e| e.to_string()).collect();
            write!(f, ", dynamic_row_selection=[{}]", fs.join(" AND "))?;
        }
        if let Some(l) = self.limit {
            write!(f, ", limit={l}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for CollectionScanExec {
    fn name(&self) -> &str {
        "CollectionScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for e in self.filters.iter().chain(&self.dynamic) {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let mut stats = Statistics::new_unknown(&self.schema);
        // Exact for a whole table, an upper bound otherwise (the datasets read, before filters):
        // join planning puts the smaller side first, as for one store.
        if args.partition().is_none()
            && let Some(rows) = self.rows_read()
        {
            let whole = self.filters.is_empty()
                && self.pruned.is_empty()
                && self.limit.is_none()
                && self.dynamic.is_empty();
            stats = stats.with_num_rows(if whole {
                Precision::Exact(rows)
            } else {
                Precision::Inexact(self.limit.map_or(rows, |l| l.min(rows)))
            });
        }
        Ok(Arc::new(stats))
    }

    fn handle_child_pushdown_result(
        &self,
        phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        // As AnnDataScanExec: filters on one id column prune rows (in each dataset's scan), and
        // are reported as not pushed, so their owner still applies them.
        let filters: Vec<Arc<dyn PhysicalExpr>> = child_pushdown_result
            .parent_filters
            .iter()
            .map(|f| f.filter.clone())
            .collect();
        let mut result = FilterPushdownPropagation {
            filters: vec![PushedDown::No; filters.len()],
            updated_node: None,
        };
        let usable: Vec<_> = filters
            .into_iter()
            .filter(|f| {
                phase == FilterPushdownPhase::Post
                    && one_column(f).is_some_and(|(i, name)| {
                        (name == OBS_ID || name == VAR_ID)
                            && self
                                .schema
                                .fields()
                                .get(i)
                                .is_some_and(|f| *f.name() == name)
                    })
            })
            .collect();
        if !usable.is_empty() {
            result = result.with_updated_node(Arc::new(self.with_dynamic(usable)?) as _);
        }
        Ok(result)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let units = self.units.get(partition).cloned().ok_or_else(|| {
            DataFusionError::Internal(format!("CollectionScanExec has no partition {partition}"))
        })?;
        let run = Arc::new(Run {
            table: self.table.clone(),
            parts: self.parts.clone(),
            filters: self.filters.clone(),
            dynamic: self.dynamic.clone(),
            out: (0..self.projection.len()).collect(),
            schema: self.schema.clone(),
            batch_size: context.session_config().batch_size(),
            context,
        });
        let stream = futures::stream::iter(units)
            .map(move |u| run.clone().unit(u))
            .flatten();
        let limit = self.limit;
        let mut emitted = 0usize;
        let stream = stream.take_while(move |r| {
            let go = limit.is_none_or(|l| emitted < l);
            if let Ok(b) = r {
                emitted += b.num_rows();
            }
            async move { go }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// What a partition's units need.
struct Run {
    table: Arc<UnionTable>,
    parts: Vec<Part>,
    filters: Vec<Arc<dyn PhysicalExpr>>,
    dynamic: Vec<Arc<dyn PhysicalExpr>>,
    /// Work columns of the output (the projection leads the work columns).
    out: Vec<usize>,
    schema: SchemaRef,
    batch_size: usize,
    context: Arc<TaskContext>,
}

type BatchStream = futures::stream::BoxStream<'static, Result<RecordBatch>>;

impl Run {
    fn unit(self: Arc<Self>, unit: Unit) -> BatchStream {
        match unit {
            Unit::Scan { part, partition } => {
                let p = &self.parts[part];
                let member = p.member;
                let stream = match p.scan.execute(partition, self.context.clone()) {
                    Ok(s) => s,
                    Err(e) => {
                        let e = self.table.collection.in_dataset(member, e);
                        return futures::stream::once(async move { Err(e) }).boxed();
                    }
                };
                let run = self.clone();
                stream
                    .map_err(move |e| run.table.collection.in_dataset(member, e))
                    .and_then(move |b| {
                        let r = self.finish(part, &b);
                        async move { r }
                    })
                    .try_filter(|b| futures::future::ready(b.num_rows() > 0))
                    .boxed()
            }
            Unit::Absent { part } => match self.absent(part) {
                Ok(stream) => stream,
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            },
        }
    }

    /// A dataset's batch converted, filtered and projected.
    fn finish(&self, part: usize, batch: &RecordBatch) -> Result<RecordBatch> {
        let work = self.parts[part].remap.apply(batch)?;
        self.filter_project(work)
    }

    fn filter_project(&self, work: RecordBatch) -> Result<RecordBatch> {
        let mut mask: Option<BooleanArray> = None;
        for f in &self.filters {
            let r = f.evaluate(&work)?.into_array(work.num_rows())?;
            let r = r
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| DataFusionError::Plan(format!("filter {f} is not boolean")))?
                .clone();
            mask = Some(match mask {
                None => r,
                Some(m) => annql_store::arrow::compute::and_kleene(&m, &r)?,
            });
        }
        let work = match mask {
            Some(m) => filter_record_batch(&work, &m)?,
            None => work,
        };
        let projected = work.project(&self.out)?;
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            projected.columns().to_vec(),
            &annql_store::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(projected.num_rows())),
        )?)
    }

    /// The zeros of the genes dataset `part` did not measure, for its selected cells: rows
    /// (obs_id, var_id, 0), made a batch at a time as the stream is read.
    fn absent(self: Arc<Self>, part: usize) -> Result<BatchStream> {
        let p = &self.parts[part];
        let m = p.member;
        let collection = &self.table.collection;
        let local = &collection.genes.to_local[m];
        let mut genes: Vec<i64> = (0..local.len())
            .filter(|&g| local[g] == ABSENT)
            .map(|g| g as i64)
            .collect();
        let member = &collection.members[m];
        let mut cells: Vec<i64> =
            (member.obs_start as i64..(member.obs_start + member.n_obs) as i64).collect();
        let work = p.remap.schema.clone();
        // Each of the three columns only where the query reads it (`Err`: not a work column).
        let (obs, var, value) = (
            work.index_of(OBS_ID).ok(),
            work.index_of(VAR_ID).ok(),
            work.index_of(crate::model::VALUE).ok(),
        );
        if genes.is_empty() {
            return Ok(futures::stream::empty().boxed());
        }
        let dynamic = self
            .dynamic
            .iter()
            .map(|f| snapshot_physical_expr(f.clone()))
            .collect::<Result<Vec<_>>>()?;
        for (ids, column) in [(&mut cells, obs), (&mut genes, var)] {
            let Some(column) = column else { continue };
            let values: ArrayRef = Arc::new(Int64Array::from(ids.clone()));
            let mut keep = vec![true; ids.len()];
            let probe = probe_batch(&work, column, values.clone())?;
            for f in &self.filters {
                if collect_columns(f).iter().all(|c| c.index() == column) {
                    and_into(&mut keep, f, &probe)?;
                }
            }
            // The output leads the work columns: the same position, if projected.
            if column < self.out.len() {
                let probe = probe_batch(&self.schema, column, values)?;
                for f in &dynamic {
                    if collect_columns(f).iter().all(|c| c.index() == column) {
                        and_into(&mut keep, f, &probe)?;
                    }
                }
            }
            let mut k = keep.iter();
            ids.retain(|_| *k.next().unwrap_or(&false));
        }
        let value_type = match value {
            Some(v) => work.field(v).data_type().clone(),
            None => DataType::Float64,
        };
        let per = self.batch_size.max(1);
        let total = cells.len().saturating_mul(genes.len());
        let run = self.clone();
        let stream = futures::stream::iter((0..total).step_by(per)).map(move |at| {
            let n = per.min(total - at);
            let ids = |i: usize| (cells[i / genes.len()], genes[i % genes.len()]);
            let obs_ids = Int64Array::from_iter_values((at..at + n).map(|i| ids(i).0));
            let var_ids = Int64Array::from_iter_values((at..at + n).map(|i| ids(i).1));
            let zeros = annql_store::arrow::compute::cast(
                &(Arc::new(Int64Array::from_value(0, n)) as ArrayRef),
                &value_type,
            )?;
            let columns: Vec<ArrayRef> = (0..work.fields().len())
                .map(|i| {
                    if Some(i) == obs {
                        Arc::new(obs_ids.clone()) as ArrayRef
                    } else if Some(i) == var {
                        Arc::new(var_ids.clone()) as ArrayRef
                    } else if Some(i) == value {
                        zeros.clone()
                    } else {
                        new_null_array(work.field(i).data_type(), n)
                    }
                })
                .collect();
            run.filter_project(RecordBatch::try_new(work.clone(), columns)?)
        });
        Ok(stream
            .try_filter(|b| futures::future::ready(b.num_rows() > 0))
            .boxed())
    }
}

fn and_into(keep: &mut [bool], f: &Arc<dyn PhysicalExpr>, probe: &RecordBatch) -> Result<()> {
    let r = f.evaluate(probe)?.into_array(probe.num_rows())?;
    let r = r
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| DataFusionError::Plan(format!("filter {f} is not boolean")))?;
    for (k, v) in keep.iter_mut().zip(r.iter()) {
        *k = *k && v == Some(true);
    }
    Ok(())
}
