//! The fused aggregation split for a cluster: each executor folds a row slice of the matrix into
//! partial states (sums, counts, minima, maxima per group × gene), DataFusion's own aggregation
//! merges them by key, and a projection finishes each aggregate. What travels between processes
//! is therefore group × gene states, never stored entries.
//!
//! `FusedAggregate(keys, aggs)` becomes
//! `Projection(keys, finish(aggs)) ← Aggregate(keys, merge(states)) ← FusedAggregate(keys,
//! states, slices = n)`. Only aggregates whose states merge by addition or comparison split
//! (sum, count, avg, min, max, with or without FILTER, sparse or dense); variance and standard
//! deviation, and collections, stay in one slice.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, DFSchema, Result, ScalarValue};
use datafusion::functions_aggregate::expr_fn::{max, min, sum};
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, LogicalPlanBuilder, cast, col, lit, when,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

use super::rule::FusedAggregateNode;
use super::source::FusedMatrix;
use super::{AggFunc, AggSpec};

/// Splits fused aggregations into partial states over row slices, one per target partition
/// of the session, and a merge.
#[derive(Debug, Default)]
pub struct FusedSplitRule;

impl OptimizerRule for FusedSplitRule {
    fn name(&self) -> &str {
        "annql_fused_split"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let slices = config.options().execution.target_partitions;
        let LogicalPlan::Extension(ext) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let Some(node) = ext.node.as_any().downcast_ref::<FusedAggregateNode>() else {
            return Ok(Transformed::no(plan));
        };
        if slices < 2 || !splits(node) {
            return Ok(Transformed::no(plan));
        }
        Ok(Transformed::yes(split(node, slices)?))
    }
}

/// Whether the node's aggregates have mergeable states and it is not split already.
fn splits(node: &FusedAggregateNode) -> bool {
    node.spec.slices == 1
        && matches!(node.matrix, FusedMatrix::Table(_))
        && node.spec.aggs.iter().all(|a| {
            matches!(
                a.func,
                AggFunc::Sum | AggFunc::Count | AggFunc::Avg | AggFunc::Min | AggFunc::Max
            )
        })
}

/// The states an aggregate is finished from.
fn states_of(agg: &AggSpec) -> Vec<AggSpec> {
    let with = |func| AggSpec {
        func,
        filter: agg.filter,
    };
    match agg.func {
        AggFunc::Avg => vec![with(AggFunc::Sum), with(AggFunc::Count)],
        f => vec![with(f)],
    }
}

fn state_name(i: usize) -> String {
    format!("__annql_state_{i}")
}

fn merged_name(i: usize) -> String {
    format!("__annql_merged_{i}")
}

fn split(node: &FusedAggregateNode, slices: usize) -> Result<LogicalPlan> {
    let n_keys = node.spec.keys.len();
    // Each distinct state once, and for each aggregate the states it reads.
    let mut states: Vec<AggSpec> = Vec::new();
    let mut reads: Vec<Vec<usize>> = Vec::new();
    for agg in &node.spec.aggs {
        let idx = states_of(agg)
            .into_iter()
            .map(|s| match states.iter().position(|t| *t == s) {
                Some(i) => i,
                None => {
                    states.push(s);
                    states.len() - 1
                }
            })
            .collect();
        reads.push(idx);
    }

    // The partial node: the same keys, then one column per state.
    let mut fields: Vec<(Option<datafusion::common::TableReference>, Arc<Field>)> = (0..n_keys)
        .map(|i| {
            let (q, f) = node.schema.qualified_field(i);
            (q.cloned(), f.clone())
        })
        .collect();
    for (i, s) in states.iter().enumerate() {
        let dt = match s.func {
            AggFunc::Count => DataType::Int64,
            _ => DataType::Float64,
        };
        fields.push((None, Arc::new(Field::new(state_name(i), dt, true))));
    }
    let mut spec = node.spec.clone();
    spec.aggs = states.clone();
    spec.slices = slices;
    let partial = FusedAggregateNode {
        spec,
        matrix: node.matrix.clone(),
        matrix_filters: node.matrix_filters.clone(),
        inputs: node.inputs.clone(),
        schema: Arc::new(DFSchema::new_with_metadata(fields, HashMap::new())?),
    };
    let partial = LogicalPlan::Extension(Extension {
        node: Arc::new(partial),
    });

    // Merge the states of every slice by key.
    let keys: Vec<Expr> = (0..n_keys)
        .map(|i| Expr::Column(Column::from(node.schema.qualified_field(i))))
        .collect();
    let merges: Vec<Expr> = states
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let c = col(Column::from_name(state_name(i)));
            let merged = match s.func {
                AggFunc::Min => min(c),
                AggFunc::Max => max(c),
                _ => sum(c),
            };
            merged.alias(merged_name(i))
        })
        .collect();
    let merged = LogicalPlanBuilder::from(partial)
        .aggregate(keys.clone(), merges)?
        .build()?;

    // Finish each aggregate under its original name and type.
    let mut out = keys;
    for (j, (agg, idx)) in node.spec.aggs.iter().zip(&reads).enumerate() {
        let (q, field) = node.schema.qualified_field(n_keys + j);
        let m = |k: usize| col(Column::from_name(merged_name(idx[k])));
        let value = match agg.func {
            AggFunc::Avg => {
                let count = cast(m(1), DataType::Float64);
                when(m(1).eq(lit(0_i64)), lit(ScalarValue::Float64(None)))
                    .otherwise(cast(m(0), DataType::Float64) / count)?
            }
            _ => m(0),
        };
        let value = cast(value, field.data_type().clone());
        out.push(match q {
            Some(q) => value.alias_qualified(Some(q.clone()), field.name()),
            None => value.alias(field.name()),
        });
    }
    LogicalPlanBuilder::from(merged).project(out)?.build()
}
