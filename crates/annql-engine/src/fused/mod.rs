//! The fused group-by: `matrix JOIN obs [JOIN var] GROUP BY <obs/var columns>` with sum, count,
//! avg, min, max, variance and standard deviation of `value`, run as one pass over the sparse
//! blocks of the matrix instead of a scan, two hash joins and a hash aggregate.
//!
//! Stages: [`rule`] recognises the plan shape and replaces the `Aggregate` with a
//! [`FusedAggregateNode`]; [`exec`] plans and runs it ([`FusedAggregateExec`]): the obs side
//! becomes a cell → group map, the var side a gene → slot map (`grouping`); the matrix's blocks
//! are folded by the strategy `fold` chooses into group × slot accumulators (`kernel`), per
//! worker and merged, or shared in tiles; and the grid is read out as batches (`output`). Memory
//! is O(groups × slots), never O(stored entries). Anything the rule does not match runs on
//! DataFusion's own operators, with the same results.

/// The physical operator and the extension planner that builds it.
pub mod exec;
/// The fold strategies and their chooser.
mod fold;
/// Cells and genes mapped to groups and slots.
mod grouping;
/// The accumulators and the per-block loops.
mod kernel;
/// The grid read out as batches.
mod output;
/// The optimizer rule and the logical node.
pub mod rule;
/// What the operator reads: a store's matrix or a collection's, and the tables under the join.
pub mod source;
/// The aggregation split into partial states per row slice and a final merge, for a cluster.
pub mod split;

pub use exec::{FusedAggregateExec, FusedPlanner};
pub use rule::{FusedAggregateNode, FusedAggregateRule};
pub use split::FusedSplitRule;

use datafusion::logical_expr::Operator;
use serde::{Deserialize, Serialize};

/// Where an output group column comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
pub enum KeySource {
    /// Column `i` of the obs-side input.
    Obs(usize),
    /// Column `i` of the var-side input.
    Var(usize),
    /// The matrix's row id (`obs_id`).
    MatrixRow,
    /// The matrix's column id (`var_id`).
    MatrixCol,
}

/// An aggregate function the fused kernel computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
pub enum AggFunc {
    /// `sum(value)`.
    Sum,
    /// `count(*)` / `count(value)`.
    Count,
    /// `avg(value)`.
    Avg,
    /// `min(value)`.
    Min,
    /// `max(value)`.
    Max,
    /// `var_samp(value)` (`var`).
    VarSamp,
    /// `var_pop(value)`.
    VarPop,
    /// `stddev_samp(value)` (`stddev`).
    StddevSamp,
    /// `stddev_pop(value)`.
    StddevPop,
}

impl AggFunc {
    /// The function for a DataFusion aggregate name.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "sum" => Self::Sum,
            "count" => Self::Count,
            "avg" | "mean" => Self::Avg,
            "min" => Self::Min,
            "max" => Self::Max,
            "var" | "var_samp" | "var_sample" => Self::VarSamp,
            "var_pop" | "var_population" => Self::VarPop,
            "stddev" | "stddev_samp" => Self::StddevSamp,
            "stddev_pop" => Self::StddevPop,
            _ => return None,
        })
    }
}

/// A `FILTER (WHERE value <op> <constant>)` clause.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
pub struct ValueFilter {
    /// Comparison.
    #[serde(with = "comparison")]
    pub op: Operator,
    /// Constant compared against.
    pub constant: f64,
}

impl ValueFilter {
    /// Whether `v` passes.
    #[inline]
    pub fn test(&self, v: f64) -> bool {
        match self.op {
            Operator::Gt => v > self.constant,
            Operator::GtEq => v >= self.constant,
            Operator::Lt => v < self.constant,
            Operator::LtEq => v <= self.constant,
            Operator::Eq => v == self.constant,
            _ => v != self.constant,
        }
    }
}

impl Eq for ValueFilter {}

impl std::hash::Hash for ValueFilter {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.op.hash(state);
        self.constant.to_bits().hash(state);
    }
}

/// One output aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
pub struct AggSpec {
    /// The function.
    pub func: AggFunc,
    /// Its FILTER clause, if any.
    pub filter: Option<ValueFilter>,
}

/// What the fused operator computes: plain data, so the plan can be shipped to another executor.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
pub struct FusedSpec {
    /// Dataset (schema) and table of the matrix, for display.
    pub dataset: String,
    /// The matrix table's name.
    pub table: String,
    /// Zero-filled semantics (`x_dense`): every selected cell × gene counts, absent ones as 0.
    pub dense: bool,
    /// Column of the obs-side input holding `obs_id`, if there is an obs side.
    pub obs_key: Option<usize>,
    /// Column of the var-side input holding `var_id`, if there is a var side.
    pub var_key: Option<usize>,
    /// The group columns, in output order.
    pub keys: Vec<KeySource>,
    /// The aggregates, in output order.
    pub aggs: Vec<AggSpec>,
    /// Row slices folded apart, one per output partition: 1 in one process; more when a cluster
    /// runs the aggregation as partial states per slice and a final merge ([`split`]).
    pub slices: usize,
}

/// A FILTER clause's comparison as its SQL symbol (the only operators [`ValueFilter`] holds).
mod comparison {
    use datafusion::logical_expr::Operator;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    const OPS: [(Operator, &str); 6] = [
        (Operator::Gt, ">"),
        (Operator::GtEq, ">="),
        (Operator::Lt, "<"),
        (Operator::LtEq, "<="),
        (Operator::Eq, "="),
        (Operator::NotEq, "!="),
    ];

    pub(super) fn serialize<S: Serializer>(op: &Operator, s: S) -> Result<S::Ok, S::Error> {
        match OPS.iter().find(|(o, _)| o == op) {
            Some((_, symbol)) => s.serialize_str(symbol),
            None => Err(serde::ser::Error::custom(format!(
                "{op} is not a FILTER comparison"
            ))),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Operator, D::Error> {
        let symbol = String::deserialize(d)?;
        OPS.iter()
            .find(|(_, s)| *s == symbol)
            .map(|(o, _)| *o)
            .ok_or_else(|| D::Error::custom(format!("'{symbol}' is not a FILTER comparison")))
    }
}
