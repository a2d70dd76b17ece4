//! A group-by aggregate of a dataset's matrix written as a new AnnData, as
//! `scanpy.get.aggregate(adata[obs_mask, var_mask], by=[…], func=[…])` returns it.
//!
//! Stages: `keys` (the selected cells' key values → the groups, in scanpy's order) → `fused` (one
//! zero-filled group-by over `x_dense`/`layers_<name>_dense`, run by the fused aggregation) →
//! `pivot` (the long result into dense groups × genes matrices) → `write`
//! ([`annql_write::aggregate::write_aggregate`]).
//!
//! Cells whose key is missing (NULL) belong to no group: they are left out of every statistic.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;

use annql_write::aggregate::{Aggregate, GroupKey, VarSource, write_aggregate};
use annql_write::select::Rows;

/// The statistics, and how the output is written, as the writer defines them.
pub use annql_write::aggregate::AggFunc;
pub use annql_write::{ExportOptions, ExportSummary, Format};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use datafusion::arrow::compute::{cast, concat};
use datafusion::arrow::datatypes::{DataType, Float64Type};

use crate::context::QueryContext;
use crate::error::{Error, Result};
use crate::model::{OBS_ID, VALUE, VAR_ID, sql_name};
use crate::select::{SelectAxis, quote_ident, select_rows};

/// What to aggregate and where to write it.
#[derive(Debug, Clone)]
pub struct AggregateRequest {
    /// The attached dataset.
    pub dataset: String,
    /// obs columns grouped by (categorical, string, integer or boolean).
    pub by: Vec<String>,
    /// The statistics, each written as a layer named by its function.
    pub funcs: Vec<AggFunc>,
    /// The layer aggregated; `None` is X.
    pub layer: Option<String>,
    /// Cells kept (a SQL predicate over obs); `None` keeps every cell.
    pub obs: Option<String>,
    /// Genes kept (a SQL predicate over var); `None` keeps every gene.
    pub var: Option<String>,
    /// A statistic (one of `funcs`) also written as X.
    pub x_from: Option<AggFunc>,
    /// The output path.
    pub out: PathBuf,
    /// How to write.
    pub options: ExportOptions,
}

/// Computes the aggregate of `request` and writes it as a new AnnData at `request.out`.
pub async fn export_aggregate(
    session: &dyn QueryContext,
    mut request: AggregateRequest,
) -> Result<ExportSummary> {
    // The session's write policy first (a server writes only inside its writable directory).
    request.out = super::writable_output(session, &request.out, request.options.overwrite)?;
    let store = session
        .store(&request.dataset)
        .ok_or_else(|| Error::NotAttached(request.dataset.clone()))?;
    let (aggregate, genes) = compute_aggregate(session, &request).await?;
    let rows = match &request.var {
        None => Rows::All,
        Some(_) => Rows::Some(genes),
    };
    let var = VarSource {
        store: &store,
        path: "var",
        rows: &rows,
    };
    Ok(write_aggregate(
        &aggregate,
        var,
        &request.out,
        &request.options,
    )?)
}

/// The aggregate of `request` (groups, keys, statistics) and the genes it covers (`var_id`s).
pub async fn compute_aggregate(
    session: &dyn QueryContext,
    request: &AggregateRequest,
) -> Result<(Aggregate, Vec<u64>)> {
    let n_vars = check(session, request)?;
    // The gene list and its column lookup are sized from the declared shape.
    if let Some(store) = session.store(&request.dataset) {
        let what = format!("the ids of its {n_vars} genes");
        store.check_alloc("X", &what, n_vars.saturating_mul(16))?;
    }
    let genes = match &request.var {
        None => (0..n_vars).collect(),
        Some(p) => select_rows(session, &request.dataset, SelectAxis::Var, p).await?,
    };
    let groups = groups_of(session, request).await?;
    // Streamed: only the dense groups × genes statistics are held, never the long result.
    let mut batches = session
        .sql(&aggregate_sql(request))
        .await?
        .execute_stream()
        .await?;
    // The dense matrices are allocated at the first output batch, once the scan (whose workers
    // hold partial grids) is over: they then never coexist with more than the merged grid.
    let mut pivot = None;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        pivot
            .get_or_insert_with(|| Pivot::new(request, &groups, &genes, n_vars))
            .add(&batch)?;
    }
    let pivot = pivot.unwrap_or_else(|| Pivot::new(request, &groups, &genes, n_vars));
    let stats = pivot.finish()?;
    let aggregate = Aggregate {
        keys: groups.keys,
        group_names: groups.names,
        n_vars: genes.len() as u64,
        stats,
        x_from: request.x_from,
    };
    Ok((aggregate, genes))
}

/// An Arrow kernel's error (a cast or concatenation of the query's own results).
fn arrow_err(e: datafusion::arrow::error::ArrowError) -> Error {
    Error::DataFusion(e.into())
}

fn bad_request(request: &AggregateRequest, reason: impl Into<String>) -> Error {
    Error::Matrix {
        dataset: request.dataset.clone(),
        reason: format!("cannot aggregate: {}", reason.into()),
    }
}

/// Checks the request against the dataset; the matrix's gene count.
fn check(session: &dyn QueryContext, request: &AggregateRequest) -> Result<u64> {
    let store = session
        .store(&request.dataset)
        .ok_or_else(|| Error::NotAttached(request.dataset.clone()))?;
    if request.by.is_empty() {
        return Err(bad_request(request, "no obs column to group by"));
    }
    if request.funcs.is_empty() {
        return Err(bad_request(request, "no statistic asked for"));
    }
    let distinct: BTreeSet<&str> = request.funcs.iter().map(|f| f.name()).collect();
    if distinct.len() != request.funcs.len() {
        return Err(bad_request(request, "a statistic is asked for twice"));
    }
    let distinct: BTreeSet<&str> = request.by.iter().map(String::as_str).collect();
    if distinct.len() != request.by.len() {
        return Err(bad_request(request, "an obs column is grouped by twice"));
    }
    if let Some(x) = request.x_from
        && !request.funcs.contains(&x)
    {
        return Err(bad_request(
            request,
            format!("X is to be {} but it is not among the statistics", x.name()),
        ));
    }
    let path = match &request.layer {
        None => "X".to_string(),
        Some(l) => format!("layers/{l}"),
    };
    let matrix = store
        .root()
        .find(&path)
        .ok_or_else(|| bad_request(request, format!("the dataset has no matrix '{path}'")))?;
    match matrix.shape[..] {
        [_, n_vars] => Ok(n_vars),
        _ => Err(bad_request(
            request,
            format!("'{path}' is not a 2-D matrix"),
        )),
    }
}

/// The zero-filled group-by the fused aggregation runs: key columns, `var_id`, then one column
/// per statistic in `request.funcs` order.
pub fn aggregate_sql(request: &AggregateRequest) -> String {
    let ds = quote_ident(&request.dataset);
    let table = match &request.layer {
        None => "x_dense".to_string(),
        Some(l) => format!("layers_{}_dense", sql_name(l)),
    };
    let keys: Vec<String> = request
        .by
        .iter()
        .map(|k| format!("o.{}", quote_ident(k)))
        .collect();
    let stats: Vec<String> = request
        .funcs
        .iter()
        .map(|f| match f {
            AggFunc::Sum => format!("sum(d.{VALUE})"),
            AggFunc::Mean => format!("avg(d.{VALUE})"),
            AggFunc::CountNonzero => format!("count(*) FILTER (WHERE d.{VALUE} <> 0)"),
            AggFunc::Var => format!("var_samp(d.{VALUE})"),
        })
        .collect();
    let mut keep: Vec<String> = request
        .by
        .iter()
        .map(|k| format!("{} IS NOT NULL", quote_ident(k)))
        .collect();
    if let Some(p) = &request.obs {
        keep.push(format!("({p})"));
    }
    let obs = format!("(SELECT * FROM {ds}.obs WHERE {}) o", keep.join(" AND "));
    let var = match &request.var {
        None => String::new(),
        Some(p) => format!(" JOIN (SELECT {VAR_ID} FROM {ds}.var WHERE ({p})) v USING ({VAR_ID})"),
    };
    format!(
        "SELECT {keys}, d.{VAR_ID}, {stats} FROM {ds}.{table} d JOIN {obs} USING ({OBS_ID}){var} \
         GROUP BY {keys}, d.{VAR_ID}",
        keys = keys.join(", "),
        table = quote_ident(&table),
        stats = stats.join(", "),
    )
}

/// The groups: each key's categories and every group's codes, in scanpy's order.
struct Groups {
    keys: Vec<GroupKey>,
    names: Vec<String>,
    /// A group's position from its key values (as text, one per key).
    index: HashMap<Vec<String>, usize>,
}

/// One key column over the selected cells: its categories (those present, in category order)
/// and each cell's category (`None` for a missing value).
struct KeyColumn {
    categories: ArrayRef,
    texts: Vec<String>,
    labels: Vec<String>,
    cells: Vec<Option<usize>>,
}

/// The groups present among the selected cells, in the order of the product of the keys'
/// categories (the first key slowest), as scanpy orders them.
async fn groups_of(session: &dyn QueryContext, request: &AggregateRequest) -> Result<Groups> {
    let keys: Vec<String> = request.by.iter().map(|k| quote_ident(k)).collect();
    let sql = format!(
        "SELECT {} FROM {}.obs{}",
        keys.join(", "),
        quote_ident(&request.dataset),
        request
            .obs
            .as_ref()
            .map(|p| format!(" WHERE ({p})"))
            .unwrap_or_default()
    );
    let batches = session.collect(&sql).await?;
    let mut columns = Vec::new();
    for (i, name) in request.by.iter().enumerate() {
        let parts: Vec<ArrayRef> = batches.iter().map(|b| b.column(i).clone()).collect();
        columns.push(key_column(request, name, &parts)?);
    }
    let n_cells = columns.first().map_or(0, |c| c.cells.len());
    let mut present = BTreeSet::new();
    for cell in 0..n_cells {
        let combo: Option<Vec<usize>> = columns.iter().map(|c| c.cells[cell]).collect();
        if let Some(combo) = combo {
            present.insert(combo);
        }
    }
    if present.is_empty() {
        return Err(bad_request(
            request,
            "no selected cell has a value for every key",
        ));
    }
    // Categories present among the cells of complete groups only, as scanpy drops unused ones
    // per key before combining.
    let mut keys = Vec::new();
    let mut names = vec![Vec::new(); present.len()];
    let mut index_keys = vec![Vec::new(); present.len()];
    for (k, (name, column)) in request.by.iter().zip(&columns).enumerate() {
        let used: BTreeSet<usize> = present.iter().map(|c| c[k]).collect();
        let used: Vec<usize> = used.into_iter().collect();
        let position: HashMap<usize, u32> = used
            .iter()
            .enumerate()
            .map(|(p, &c)| (c, p as u32))
            .collect();
        let take = UInt64Array::from(used.iter().map(|&c| c as u64).collect::<Vec<_>>());
        let categories =
            datafusion::arrow::compute::take(&column.categories, &take, None).map_err(arrow_err)?;
        let mut codes = Vec::with_capacity(present.len());
        for (g, combo) in present.iter().enumerate() {
            codes.push(position[&combo[k]]);
            names[g].push(column.labels[combo[k]].clone());
            index_keys[g].push(column.texts[combo[k]].clone());
        }
        keys.push(GroupKey {
            name: name.clone(),
            categories,
            codes,
        });
    }
    Ok(Groups {
        keys,
        names: names.into_iter().map(|n| n.join("_")).collect(),
        index: index_keys
            .into_iter()
            .enumerate()
            .map(|(g, k)| (k, g))
            .collect(),
    })
}

/// A key column's categories and each cell's category: a categorical's own categories in their
/// order; otherwise the distinct values, sorted (as pandas makes a categorical of them).
fn key_column(request: &AggregateRequest, name: &str, parts: &[ArrayRef]) -> Result<KeyColumn> {
    let Some(first) = parts.first() else {
        return Err(bad_request(request, "the obs predicate keeps no cells"));
    };
    let (categories, cells): (ArrayRef, Vec<Option<usize>>) = match first.data_type() {
        DataType::Dictionary(_, _) => {
            // Each batch carries the column's categories; they are matched by value, so batches
            // whose dictionaries differ still land on the first one's categories.
            let categories = first.as_any_dictionary().values().clone();
            let position: HashMap<String, usize> = texts_of(&categories)?
                .into_iter()
                .enumerate()
                .map(|(i, t)| (t, i))
                .collect();
            let mut cells = Vec::new();
            for part in parts {
                let dict = part.as_any_dictionary();
                let local: Vec<Option<usize>> = texts_of(dict.values())?
                    .iter()
                    .map(|t| position.get(t).copied())
                    .collect();
                let keys = cast(dict.keys(), &DataType::Int64).map_err(arrow_err)?;
                let keys = keys.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                for k in keys.iter() {
                    let Some(k) = k else {
                        cells.push(None);
                        continue;
                    };
                    let cell = usize::try_from(k)
                        .ok()
                        .and_then(|k| local.get(k).copied().flatten())
                        .ok_or_else(|| {
                            Error::Internal(format!("obs.{name}: code {k} has no category"))
                        })?;
                    cells.push(Some(cell));
                }
            }
            (categories, cells)
        }
        t => {
            let refs: Vec<&dyn Array> = parts.iter().map(|p| p.as_ref()).collect();
            let values = concat(&refs).map_err(arrow_err)?;
            plain_key(request, name, &values, t)?
        }
    };
    let categories = match categories.data_type() {
        DataType::LargeUtf8 | DataType::Utf8View => {
            cast(&categories, &DataType::Utf8).map_err(arrow_err)?
        }
        _ => categories,
    };
    let texts = texts_of(&categories)?;
    // The obs names join Python's str() of each value: True/False for booleans.
    let labels = match categories.data_type() {
        DataType::Boolean => texts
            .iter()
            .map(|t| if t == "true" { "True" } else { "False" }.to_string())
            .collect(),
        _ => texts.clone(),
    };
    Ok(KeyColumn {
        categories,
        texts,
        labels,
        cells,
    })
}

/// The categories (sorted distinct values) and each cell's category of a key column that is not
/// categorical, as pandas makes a categorical of it.
fn plain_key(
    request: &AggregateRequest,
    name: &str,
    values: &ArrayRef,
    t: &DataType,
) -> Result<(ArrayRef, Vec<Option<usize>>)> {
    Ok(match t {
        DataType::Boolean => {
            let b = values.as_boolean();
            let cells = b.iter().map(|v| v.map(usize::from)).collect();
            (
                Arc::new(BooleanArray::from(vec![false, true])) as ArrayRef,
                cells,
            )
        }
        t if t.is_integer() => {
            let ints = cast(values, &DataType::Int64).map_err(arrow_err)?;
            let ints = ints.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let distinct: BTreeSet<i64> = ints.iter().flatten().collect();
            let distinct: Vec<i64> = distinct.into_iter().collect();
            let cells = ints
                .iter()
                .map(|v| v.and_then(|v| distinct.binary_search(&v).ok()))
                .collect();
            let categories =
                cast(&(Arc::new(Int64Array::from(distinct)) as ArrayRef), t).map_err(arrow_err)?;
            (categories, cells)
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let text = cast(values, &DataType::Utf8).map_err(arrow_err)?;
            let text = text.as_string::<i32>();
            let distinct: BTreeSet<&str> = text.iter().flatten().collect();
            let distinct: Vec<&str> = distinct.into_iter().collect();
            let cells = text
                .iter()
                .map(|v| v.and_then(|v| distinct.binary_search(&v).ok()))
                .collect();
            (Arc::new(StringArray::from(distinct)) as ArrayRef, cells)
        }
        other => {
            return Err(bad_request(
                request,
                format!(
                    "obs column '{name}' holds {other} values; group by categorical, string, integer or boolean columns"
                ),
            ));
        }
    })
}

/// Every value of `array` as text (how the fused result's key columns are matched to groups).
fn texts_of(array: &ArrayRef) -> Result<Vec<String>> {
    let text = cast(array, &DataType::Utf8).map_err(arrow_err)?;
    // `aggregate_sql` keeps only cells whose keys are all set: a NULL here is a bug, not a group.
    text.as_string::<i32>()
        .iter()
        .map(|v| {
            v.map(str::to_string)
                .ok_or_else(|| Error::Internal("a NULL group key in the aggregate's result".into()))
        })
        .collect()
}

/// The long result of the group-by (keys, `var_id`, one column per statistic) pivoted batch by
/// batch into dense groups × genes matrices, each (group, gene) seen exactly once.
struct Pivot<'a> {
    request: &'a AggregateRequest,
    groups: &'a Groups,
    n_genes: usize,
    column_of: Vec<usize>,
    stats: Vec<Vec<f64>>,
    seen: Vec<bool>,
}

impl<'a> Pivot<'a> {
    fn new(request: &'a AggregateRequest, groups: &'a Groups, genes: &[u64], n_vars: u64) -> Self {
        let mut column_of = vec![usize::MAX; n_vars as usize];
        for (i, &g) in genes.iter().enumerate() {
            column_of[g as usize] = i;
        }
        let size = groups.names.len() * genes.len();
        Pivot {
            request,
            groups,
            n_genes: genes.len(),
            column_of,
            stats: vec![vec![f64::NAN; size]; request.funcs.len()],
            seen: vec![false; size],
        }
    }

    fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let n_keys = self.request.by.len();
        let keys: Vec<Vec<String>> = (0..n_keys)
            .map(|k| texts_of(batch.column(k)))
            .collect::<Result<_>>()?;
        let var_ids = cast(batch.column(n_keys), &DataType::Int64).map_err(arrow_err)?;
        let var_ids = var_ids.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let values: Vec<ArrayRef> = (0..self.request.funcs.len())
            .map(|f| cast(batch.column(n_keys + 1 + f), &DataType::Float64).map_err(arrow_err))
            .collect::<Result<_>>()?;
        // Rows of one group tend to come together: the last lookup is reused while the keys match.
        let mut last: Option<(usize, usize)> = None;
        for row in 0..batch.num_rows() {
            let group = match last {
                Some((at, group)) if keys.iter().all(|k| k[row] == k[at]) => Some(group),
                _ => {
                    let combo: Vec<String> = keys.iter().map(|k| k[row].clone()).collect();
                    let group = self.groups.index.get(&combo).copied();
                    last = group.map(|g| (row, g));
                    group
                }
            };
            let gene = usize::try_from(var_ids.value(row))
                .ok()
                .and_then(|g| self.column_of.get(g).copied())
                .filter(|&c| c != usize::MAX);
            let (Some(group), Some(gene)) = (group, gene) else {
                let combo: Vec<&String> = keys.iter().map(|k| &k[row]).collect();
                return Err(Error::Internal(format!(
                    "aggregate row {combo:?} × var_id {} is not a selected group and gene",
                    var_ids.value(row)
                )));
            };
            let at = group * self.n_genes + gene;
            if std::mem::replace(&mut self.seen[at], true) {
                return Err(Error::Internal(format!(
                    "aggregate row of group '{}' × gene {gene} twice",
                    self.groups.names[group]
                )));
            }
            for (f, v) in values.iter().enumerate() {
                let v = v.as_primitive::<Float64Type>();
                // NULL is var_samp of a one-cell group: scanpy's NaN.
                self.stats[f][at] = if v.is_null(row) {
                    f64::NAN
                } else {
                    v.value(row)
                };
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<(AggFunc, Vec<f64>)>> {
        if let Some(at) = self.seen.iter().position(|s| !s) {
            return Err(Error::Internal(format!(
                "the aggregate has no row for group '{}' × gene {}",
                self.groups.names[at / self.n_genes.max(1)],
                at % self.n_genes.max(1)
            )));
        }
        Ok(self.request.funcs.iter().copied().zip(self.stats).collect())
    }
}
