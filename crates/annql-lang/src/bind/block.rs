//! The block being built: what the stages so far put in its `SELECT`, and how it is closed into
//! an IR [`Block`] that the next block reads (in no order, or with the sort in effect carried
//! over). A room of its own because every stage reads and extends it.

use super::Binder;
use super::layout::choose_layout;
use crate::ast::Span;
use crate::catalog::{Column, Ty};
use crate::ir::{BExpr, Block, ColRef, Columns, Combine, Layout, Named};

/// A sort in effect carried from one block to the next.
mod order;

/// A block being built.
pub(super) struct BlockState {
    /// Columns of the input relation.
    pub(super) input: Vec<Column>,
    /// The input's name in messages.
    pub(super) label: String,
    /// Whether the input is cells (matrices etc. reachable).
    pub(super) cells: bool,
    /// `WHERE` conjuncts.
    pub(super) filters: Vec<BExpr>,
    /// Columns added by `derive`: name, expression and type.
    pub(super) derived: Vec<(String, (BExpr, Ty))>,
    /// `group` keys, once the block groups.
    pub(super) group: Option<Vec<(String, (BExpr, Ty))>>,
    /// The aggregates of `agg`.
    pub(super) aggs: Vec<(String, (BExpr, Ty))>,
    /// `select` ran: output is exactly `outputs`.
    pub(super) projected: bool,
    /// The columns out, once `projected`.
    pub(super) outputs: Vec<(String, (BExpr, Ty))>,
    /// The sort in effect: keys, descending, where written.
    pub(super) order: Vec<(BExpr, bool, Span)>,
    /// The `take` in effect.
    pub(super) limit: Option<u64>,
    /// Columns of `input` that carry an earlier block's sort keys: not the user's to see.
    pub(super) hidden: Vec<String>,
}

impl BlockState {
    pub(super) fn new(input: Vec<Column>, cells: bool) -> Self {
        Self {
            input,
            label: if cells {
                "obs"
            } else {
                "the previous stage's output"
            }
            .into(),
            cells,
            filters: Vec::new(),
            derived: Vec::new(),
            group: None,
            aggs: Vec::new(),
            projected: false,
            outputs: Vec::new(),
            order: Vec::new(),
            limit: None,
            hidden: Vec::new(),
        }
    }

    pub(super) fn select(&mut self, out: Vec<(String, (BExpr, Ty))>) {
        self.projected = true;
        self.outputs = out;
    }

    pub(super) fn aggregate(
        &mut self,
        keys: Vec<(String, (BExpr, Ty))>,
        aggs: Vec<(String, (BExpr, Ty))>,
    ) {
        self.outputs = keys.iter().chain(&aggs).cloned().collect();
        self.group = Some(keys);
        self.aggs = aggs;
        self.projected = true;
    }

    /// The output columns users see (hidden sort keys left out).
    pub(super) fn visible_columns(&self) -> Vec<Column> {
        let mut cols = self.output_columns();
        cols.retain(|c| !self.hidden.contains(&c.name));
        cols
    }

    /// The output columns, for the next block (hidden sort keys included).
    fn output_columns(&self) -> Vec<Column> {
        if self.projected {
            self.outputs
                .iter()
                .map(|(n, (_, t))| Column::new(n, *t))
                .collect()
        } else {
            let mut cols = self.input.clone();
            for (n, (_, t)) in &self.derived {
                cols.retain(|c| &c.name != n);
                cols.push(Column::new(n, *t));
            }
            cols
        }
    }

    /// Ends this block; the next reads its output, in no order.
    pub(super) fn wrap(mut self, blocks: &mut Vec<Block>, b: &mut Binder<'_>) -> BlockState {
        // Without a limit, the order of a subquery means nothing to SQL.
        if self.limit.is_none() {
            self.order.clear();
        }
        let cols = self.output_columns();
        blocks.push(self.finish(b, false));
        BlockState::new(cols, false)
    }

    /// Ends this block; the next reads its output with the sort in effect carried over
    /// (`sort` holds until `group`, `agg`, `join` or `union`).
    pub(super) fn wrap_sorted(mut self, blocks: &mut Vec<Block>, b: &mut Binder<'_>) -> BlockState {
        let order = self.carry_order(b);
        let hidden = self.hidden.clone();
        let mut next = self.wrap(blocks, b);
        next.hidden = hidden
            .into_iter()
            .filter(|h| next.input.iter().any(|c| &c.name == h))
            .collect();
        next.order = order;
        next
    }

    /// Like [`BlockState::wrap`], with the closed block's output joined or unioned `with` another
    /// pipeline; the next block reads `cols`, the combined columns.
    pub(super) fn combine(
        self,
        with: Combine,
        cols: Vec<Column>,
        blocks: &mut Vec<Block>,
        b: &mut Binder<'_>,
    ) -> BlockState {
        let mut block = self.finish(b, true);
        block.combine = Some(with);
        blocks.push(block);
        BlockState::new(cols, false)
    }

    /// The block, with hidden sort keys projected away when `drop_hidden` (its output is the
    /// pipeline's, or joined or unioned).
    pub(super) fn finish(mut self, b: &mut Binder<'_>, drop_hidden: bool) -> Block {
        if drop_hidden && !self.projected && !self.hidden.is_empty() {
            let outputs = self
                .visible_columns()
                .into_iter()
                .map(|c| {
                    let e = match self.derived.iter().rev().find(|(n, _)| *n == c.name) {
                        Some((_, e)) => e.clone(),
                        None => (BExpr::Col(ColRef::Input(c.name.clone())), c.ty),
                    };
                    (c.name, e)
                })
                .collect();
            self.select(outputs);
        }
        let named = |v: Vec<(String, (BExpr, Ty))>| -> Vec<Named> {
            v.into_iter()
                .map(|(name, (expr, _))| Named { name, expr })
                .collect()
        };
        let columns = if self.projected {
            Columns::Exactly(named(self.outputs))
        } else {
            Columns::All(named(self.derived))
        };
        let group = self.group.map(named);
        let aggs = named(self.aggs);
        let mut block = Block {
            layout: Layout::Rows,
            filters: self.filters,
            group,
            aggs,
            columns,
            order: self
                .order
                .into_iter()
                .map(|(e, desc, _)| (e, desc))
                .collect(),
            limit: self.limit,
            combine: None,
        };
        let spans = std::mem::take(&mut b.matrix_spans);
        block.layout = choose_layout(&block, &spans, b);
        block
    }
}
