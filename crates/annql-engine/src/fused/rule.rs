//! Recognises `Aggregate(group by obs/var columns) over matrix ⋈ obs [⋈ var]` and replaces it
//! with a [`FusedAggregateNode`].
//!
//! The matcher returns None wherever the plan is not of that shape, and an `.ok()?` in it means
//! just that: "the rule does not apply". The plan is then left as it is and runs on DataFusion's
//! operators, which report any error (a store error included) themselves.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, DFSchemaRef, JoinType, Result, ScalarValue, TableReference};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{
    Aggregate, Expr, Extension, LogicalPlan, Operator, TableScan, UserDefinedLogicalNodeCore,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

use super::source::{FusedMatrix, Leaf, leaf_of, selects_ids};
use super::{AggFunc, AggSpec, FusedSpec, KeySource, ValueFilter};
use crate::model::{Axis, OBS_ID, TableKind, VALUE, VAR_ID};

/// The optimizer rule. Appended after DataFusion's own rules, so it sees scans with their
/// projections and filters already pushed down.
#[derive(Debug, Default)]
pub struct FusedAggregateRule;

impl OptimizerRule for FusedAggregateRule {
    fn name(&self) -> &str {
        "annql_fused_aggregate"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(agg) = &plan else {
            return Ok(Transformed::no(plan));
        };
        match match_aggregate(agg) {
            Some(node) => Ok(Transformed::yes(LogicalPlan::Extension(Extension {
                node: Arc::new(node),
            }))),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// The fused aggregate in a logical plan. Its inputs are the obs side and the var side (each
/// optional, in that order); the matrix is read by the operator itself.
#[derive(Debug, Clone)]
pub struct FusedAggregateNode {
    /// What to compute.
    pub spec: FusedSpec,
    /// The matrix.
    pub matrix: FusedMatrix,
    /// Filters of the matrix scan, on its `obs_id`/`var_id` columns only.
    pub matrix_filters: Vec<Expr>,
    /// obs side, then var side (those present).
    pub inputs: Vec<LogicalPlan>,
    /// Output schema: that of the replaced `Aggregate`.
    pub schema: DFSchemaRef,
}

impl FusedAggregateNode {
    fn identity(&self) -> (&FusedSpec, &Vec<Expr>, &Vec<LogicalPlan>) {
        (&self.spec, &self.matrix_filters, &self.inputs)
    }
}

impl PartialEq for FusedAggregateNode {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity() && self.matrix.same(&other.matrix)
    }
}

impl Eq for FusedAggregateNode {}

impl Hash for FusedAggregateNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
    }
}

impl PartialOrd for FusedAggregateNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.spec.partial_cmp(&other.spec)
    }
}

impl UserDefinedLogicalNodeCore for FusedAggregateNode {
    fn name(&self) -> &str {
        "FusedAggregate"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        self.inputs.iter().collect()
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        self.matrix_filters.clone()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FusedAggregate: {}", describe(&self.spec))?;
        if !self.matrix_filters.is_empty() {
            let filters: Vec<String> = self.matrix_filters.iter().map(|e| e.to_string()).collect();
            write!(f, ", matrix_filters=[{}]", filters.join(", "))?;
        }
        Ok(())
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        Ok(Self {
            matrix_filters: exprs,
            inputs,
            ..self.clone()
        })
    }
}

/// One line describing a spec, shared by the logical and physical EXPLAIN.
pub(crate) fn describe(spec: &FusedSpec) -> String {
    let keys: Vec<String> = spec
        .keys
        .iter()
        .map(|k| match k {
            KeySource::Obs(i) => format!("obs#{i}"),
            KeySource::Var(i) => format!("var#{i}"),
            KeySource::MatrixRow => OBS_ID.into(),
            KeySource::MatrixCol => VAR_ID.into(),
        })
        .collect();
    let aggs: Vec<String> = spec
        .aggs
        .iter()
        .map(|a| {
            let f = format!("{:?}", a.func).to_lowercase();
            match a.filter {
                Some(v) => format!("{f} filter(value {} {})", v.op, v.constant),
                None => f,
            }
        })
        .collect();
    let slices = if spec.slices > 1 {
        format!(", row_slices={} (partial states)", spec.slices)
    } else {
        String::new()
    };
    format!(
        "matrix={}.{}{}, keys=[{}], aggs=[{}]{slices}",
        spec.dataset,
        spec.table,
        if spec.dense { " (dense)" } else { "" },
        keys.join(", "),
        aggs.join(", ")
    )
}

/// The join leaves found under the aggregate.
struct Leaves<'a> {
    all: Vec<&'a LogicalPlan>,
    on: Vec<(&'a Expr, &'a Expr)>,
}

/// Matches an aggregate the fused operator can run; `None` leaves it to DataFusion.
fn match_aggregate(agg: &Aggregate) -> Option<FusedAggregateNode> {
    if agg.group_expr.is_empty() {
        return None;
    }
    let mut leaves = Leaves {
        all: Vec::new(),
        on: Vec::new(),
    };
    // Projections between the aggregate and the joins (column pass-through, and the casts
    // common-subexpression elimination hoists out of aggregates) are seen through.
    let (input, through) = peel_projections(&agg.input)?;
    collect_leaves(input, &mut leaves)?;
    let (matrix, others) = matrix_leaf(&leaves)?;
    let dense = matches!(matrix.table.kind, TableKind::Matrix { dense: true, .. });
    // Unknown shape: the rule does not apply; the scan reports the error.
    let (n_obs, n_var) = matrix.fused.shape().ok()?;
    // Matrix scan filters: only selections of ids (cells or genes), as the scan places them.
    if matrix
        .scan
        .filters
        .iter()
        .any(|f| !selects_ids(&matrix.fused, f))
    {
        return None;
    }
    let (obs_leaf, var_leaf) = join_sides(&leaves, &matrix, &others, n_obs, n_var)?;
    let joined = usize::from(obs_leaf.is_some()) + usize::from(var_leaf.is_some());
    if joined != others.len() {
        return None;
    }
    let keys = group_keys(agg, &through, &matrix, obs_leaf, var_leaf)?;
    let aggs = aggregates(agg, &through, matrix.leaf)?;
    let (dataset, table) = table_name(&matrix.scan.table_name);
    let mut inputs = Vec::new();
    let obs_key = obs_leaf.map(|(leaf, idx)| {
        inputs.push(leaf.clone());
        idx
    });
    let var_key = var_leaf.map(|(leaf, idx)| {
        inputs.push(leaf.clone());
        idx
    });
    // Matrix filters are re-expressed on the bare table columns (qualifiers dropped).
    let matrix_filters = matrix
        .scan
        .filters
        .iter()
        .map(|f| unqualify(f.clone()))
        .collect::<Option<Vec<_>>>()?;
    Some(FusedAggregateNode {
        spec: FusedSpec {
            dataset,
            table,
            dense,
            obs_key,
            var_key,
            keys,
            aggs,
            slices: 1,
        },
        matrix: matrix.fused,
        matrix_filters,
        inputs,
        schema: agg.schema.clone(),
    })
}

/// The matrix leaf of a join: the plan, its scan, its table and the matrix it reads.
struct MatrixLeaf<'a> {
    leaf: &'a LogicalPlan,
    scan: &'a TableScan,
    table: Leaf,
    fused: FusedMatrix,
}

/// An obs or var side: its leaf, and the column of its id.
type Side<'a> = Option<(&'a LogicalPlan, usize)>;

/// The obs and var frames of a join, with their tables.
type Others<'a> = Vec<(&'a LogicalPlan, Leaf)>;

/// Exactly one matrix leaf, a plain scan; the other leaves (obs and var frames) with their
/// tables.
fn matrix_leaf<'a>(leaves: &Leaves<'a>) -> Option<(MatrixLeaf<'a>, Others<'a>)> {
    let mut matrix = None;
    let mut others = Vec::new();
    for leaf in &leaves.all {
        let (scan, table) = base_scan(leaf)?;
        if matches!(table.kind, TableKind::Matrix { .. }) {
            if matrix.is_some() || !is_plain_scan(leaf) {
                return None;
            }
            // A matrix the operator cannot read (dense, unreadable): the rule does not apply.
            let fused = table.matrix.clone()?;
            matrix = Some(MatrixLeaf {
                leaf,
                scan,
                table,
                fused,
            });
        } else {
            others.push((*leaf, table));
        }
    }
    Some((matrix?, others))
}

/// The obs and var sides: each equi-join pairs a matrix id column with the id column of an obs
/// or var frame of the same store and length.
fn join_sides<'a>(
    leaves: &Leaves<'a>,
    matrix: &MatrixLeaf<'a>,
    others: &[(&'a LogicalPlan, Leaf)],
    n_obs: u64,
    n_var: u64,
) -> Option<(Side<'a>, Side<'a>)> {
    let (mut obs_leaf, mut var_leaf) = (None, None);
    for (l, r) in &leaves.on {
        let (Expr::Column(l), Expr::Column(r)) = (l, r) else {
            return None;
        };
        let (mcol, ocol) = if matrix.leaf.schema().has_column(l) {
            (l, r)
        } else {
            (r, l)
        };
        let mname = trace(matrix.leaf, mcol)?;
        let (other, table) = others
            .iter()
            .find(|(leaf, _)| leaf.schema().has_column(ocol))?;
        let oname = trace(other, ocol)?;
        let TableKind::Frame { axis, .. } = table.kind else {
            return None;
        };
        if table.origin != matrix.table.origin {
            return None;
        }
        let idx = other.schema().index_of_column(ocol).ok()?;
        match (mname.as_str(), oname.as_str(), axis) {
            (OBS_ID, OBS_ID, Axis::Obs) if obs_leaf.is_none() && table.rows == n_obs => {
                obs_leaf = Some((*other, idx));
            }
            (VAR_ID, VAR_ID, Axis::Var) if var_leaf.is_none() && table.rows == n_var => {
                var_leaf = Some((*other, idx));
            }
            _ => return None,
        }
    }
    Some((obs_leaf, var_leaf))
}

/// Where each group key comes from: a column of the obs or var side, or a matrix id.
fn group_keys(
    agg: &Aggregate,
    through: &Through,
    matrix: &MatrixLeaf,
    obs_leaf: Side,
    var_leaf: Side,
) -> Option<Vec<KeySource>> {
    let mut keys = Vec::new();
    for g in &agg.group_expr {
        let g = see_through(g, through)?;
        let Expr::Column(c) = &g else {
            return None;
        };
        let key = if let Some((leaf, _)) = obs_leaf.filter(|(l, _)| l.schema().has_column(c)) {
            KeySource::Obs(leaf.schema().index_of_column(c).ok()?)
        } else if let Some((leaf, _)) = var_leaf.filter(|(l, _)| l.schema().has_column(c)) {
            KeySource::Var(leaf.schema().index_of_column(c).ok()?)
        } else if matrix.leaf.schema().has_column(c) {
            match trace(matrix.leaf, c)?.as_str() {
                OBS_ID => KeySource::MatrixRow,
                VAR_ID => KeySource::MatrixCol,
                _ => return None,
            }
        } else {
            return None;
        };
        keys.push(key);
    }
    Some(keys)
}

/// The aggregates, each over the matrix's value (or `count` of a constant), with an optional
/// `FILTER (WHERE value <op> constant)`.
fn aggregates(agg: &Aggregate, through: &Through, m_leaf: &LogicalPlan) -> Option<Vec<AggSpec>> {
    let is_value = |e: &Expr| {
        value_column(unalias(e)).is_some_and(|c| trace(m_leaf, c).as_deref() == Some(VALUE))
    };
    let mut aggs = Vec::new();
    for a in &agg.aggr_expr {
        let Expr::AggregateFunction(f) = unalias(a) else {
            return None;
        };
        let p = &f.params;
        if p.distinct || !p.order_by.is_empty() {
            return None;
        }
        let func = AggFunc::from_name(f.func.name())?;
        let args = p
            .args
            .iter()
            .map(|a| see_through(a, through))
            .collect::<Option<Vec<_>>>()?;
        match (func, args.as_slice()) {
            (AggFunc::Count, [Expr::Literal(v, _)]) if !v.is_null() => {}
            (_, [arg]) if is_value(arg) => {}
            _ => return None,
        }
        let filter = match &p.filter {
            None => None,
            Some(e) => Some(value_filter(&see_through(e, through)?, &is_value)?),
        };
        aggs.push(AggSpec { func, filter });
    }
    Some(aggs)
}

/// The dataset (schema) and table of the matrix scan, for display.
fn table_name(name: &TableReference) -> (String, String) {
    match name {
        TableReference::Partial { schema, table } => (schema.to_string(), table.to_string()),
        TableReference::Full { schema, table, .. } => (schema.to_string(), table.to_string()),
        TableReference::Bare { table } => (String::new(), table.to_string()),
    }
}

/// Output column → the expression it stands for, in terms of the input under the projections.
type Through = Vec<(Column, Expr)>;

/// Skips the projections on top of an aggregate's input whose expressions are columns or numeric
/// casts of columns, returning what each of their output columns stands for.
fn peel_projections(plan: &LogicalPlan) -> Option<(&LogicalPlan, Through)> {
    let mut through: Through = Vec::new();
    let mut plan = plan;
    while let LogicalPlan::Projection(p) = plan {
        if !p.expr.iter().all(|e| value_column(unalias(e)).is_some()) {
            break;
        }
        let mut next: Through = Vec::new();
        for (i, e) in p.expr.iter().enumerate() {
            let (q, f) = p.schema.qualified_field(i);
            next.push((Column::new(q.cloned(), f.name()), unalias(e).clone()));
        }
        // Compose: what the upper columns meant, re-expressed below this projection.
        through = if through.is_empty() {
            next
        } else {
            through
                .into_iter()
                .map(|(c, e)| Some((c, see_through(&e, &next)?)))
                .collect::<Option<Through>>()?
        };
        plan = &p.input;
    }
    Some((plan, through))
}

/// `e` with the columns of peeled projections replaced by what they stand for.
fn see_through(e: &Expr, through: &Through) -> Option<Expr> {
    use datafusion::common::tree_node::TreeNode;
    if through.is_empty() {
        return Some(e.clone());
    }
    e.clone()
        .transform(|e| {
            Ok(match e {
                Expr::Column(c) => match through.iter().find(|(o, _)| *o == c) {
                    Some((_, x)) => Transformed::yes(x.clone()),
                    None => Transformed::no(Expr::Column(c)),
                },
                other => Transformed::no(other),
            })
        })
        .map(|t| t.data)
        // A rewrite that fails: the rule does not apply.
        .ok()
}

/// Skips projections that only pass columns through.
fn peel_columns(plan: &LogicalPlan) -> Option<&LogicalPlan> {
    match plan {
        LogicalPlan::Projection(p) if p.expr.iter().all(|e| matches!(e, Expr::Column(_))) => {
            peel_columns(&p.input)
        }
        other => Some(other),
    }
}

/// Flattens a tree of inner equi-joins into its leaves and key pairs.
fn collect_leaves<'a>(plan: &'a LogicalPlan, out: &mut Leaves<'a>) -> Option<()> {
    match plan {
        LogicalPlan::Join(j) => {
            if j.join_type != JoinType::Inner || j.filter.is_some() || j.null_aware {
                return None;
            }
            out.on.extend(j.on.iter().map(|(l, r)| (l, r)));
            collect_leaves(peel_columns(&j.left)?, out)?;
            collect_leaves(peel_columns(&j.right)?, out)
        }
        leaf => {
            out.all.push(leaf);
            Some(())
        }
    }
}

/// The AnnData or collection table scan at the bottom of a leaf made of aliases, projections
/// and filters.
fn base_scan(plan: &LogicalPlan) -> Option<(&TableScan, Leaf)> {
    match plan {
        LogicalPlan::SubqueryAlias(a) => base_scan(&a.input),
        LogicalPlan::Projection(p) => base_scan(&p.input),
        LogicalPlan::Filter(f) => base_scan(&f.input),
        LogicalPlan::TableScan(scan) => {
            if scan.fetch.is_some() {
                return None;
            }
            let provider = source_as_provider(&scan.source).ok()?;
            Some((scan, leaf_of(&provider)?))
        }
        _ => None,
    }
}

/// A leaf that is only aliases and column projections over a scan (no filter above it).
fn is_plain_scan(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::SubqueryAlias(a) => is_plain_scan(&a.input),
        LogicalPlan::Projection(p) => {
            p.expr.iter().all(|e| matches!(e, Expr::Column(_))) && is_plain_scan(&p.input)
        }
        LogicalPlan::TableScan(_) => true,
        _ => false,
    }
}

/// The table column a leaf's output column passes through unchanged, if it does.
fn trace(plan: &LogicalPlan, col: &Column) -> Option<String> {
    let idx = plan.schema().index_of_column(col).ok()?;
    match plan {
        LogicalPlan::SubqueryAlias(a) => {
            let (q, f) = a.input.schema().qualified_field(idx);
            trace(&a.input, &Column::new(q.cloned(), f.name()))
        }
        LogicalPlan::Filter(f) => trace(&f.input, col),
        LogicalPlan::Projection(p) => match unalias(&p.expr[idx]) {
            Expr::Column(c) => trace(&p.input, c),
            _ => None,
        },
        LogicalPlan::TableScan(s) => Some(s.projected_schema.field(idx).name().clone()),
        _ => None,
    }
}

fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        other => other,
    }
}

/// The column under an optional numeric cast.
fn value_column(e: &Expr) -> Option<&Column> {
    match e {
        Expr::Column(c) => Some(c),
        Expr::Cast(c) if c.field.data_type().is_numeric() => value_column(&c.expr),
        Expr::TryCast(c) if c.field.data_type().is_numeric() => value_column(&c.expr),
        _ => None,
    }
}

/// `value <op> constant` (either way round) as a [`ValueFilter`].
fn value_filter(e: &Expr, is_value: &dyn Fn(&Expr) -> bool) -> Option<ValueFilter> {
    let Expr::BinaryExpr(b) = e else {
        return None;
    };
    let (op, constant) = if is_value(&b.left) {
        (b.op, constant(&b.right)?)
    } else if is_value(&b.right) {
        (b.op.swap()?, constant(&b.left)?)
    } else {
        return None;
    };
    matches!(
        op,
        Operator::Gt
            | Operator::GtEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Eq
            | Operator::NotEq
    )
    .then_some(ValueFilter { op, constant })
}

fn constant(e: &Expr) -> Option<f64> {
    match unalias(e) {
        Expr::Literal(v, _) => scalar_f64(v),
        Expr::Cast(c) => constant(&c.expr),
        Expr::TryCast(c) => constant(&c.expr),
        _ => None,
    }
}

fn scalar_f64(v: &ScalarValue) -> Option<f64> {
    if v.is_null() || !v.data_type().is_numeric() {
        return None;
    }
    // A constant that is not a number: the filter is not one the kernel applies.
    match v
        .cast_to(&datafusion::arrow::datatypes::DataType::Float64)
        .ok()?
    {
        ScalarValue::Float64(Some(f)) => Some(f),
        _ => None,
    }
}

/// The same expression with column qualifiers removed (for evaluation on the bare table).
fn unqualify(e: Expr) -> Option<Expr> {
    // A rewrite that fails: the rule does not apply.
    crate::pushdown::unqualify(e).ok()
}
