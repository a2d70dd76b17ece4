//! How a closed block reads its matrices: one row per cell, or one per cell × gene of the one
//! gene set it reads, with its entries read stored-only, from the dense view, or filled with
//! zeros. Decided after the block is built, from every expression in it.

use super::Binder;
use crate::ast::Span;
use crate::error::Diagnostic;
use crate::ir::{AggFn, BExpr, Block, ColRef, GeneJoin, Layout, MatrixRef, visit_block};

/// Cells × genes when the block reads one gene set (or exactly one single gene); single genes
/// besides it are joined per cell.
pub(super) fn choose_layout(
    block: &Block,
    spans: &[(MatrixRef, Span)],
    b: &mut Binder<'_>,
) -> Layout {
    let mut values = Vec::new();
    visit_block(block, &mut |e| {
        if let BExpr::Value(m) = e
            && !values.contains(m)
        {
            values.push(m.clone());
        }
    });
    let uses_var = {
        let mut any = false;
        visit_block(block, &mut |e| {
            if matches!(e, BExpr::Col(ColRef::Var(_))) {
                any = true;
            }
        });
        any
    };
    let sets: Vec<&MatrixRef> = values.iter().filter(|m| !m.is_single()).collect();
    let matrix = match (sets.as_slice(), values.as_slice()) {
        ([], []) => {
            if uses_var {
                b.errors.push(Diagnostic::new(
                    "gene columns (`gene`, `var.…`) need a gene set in the same stage, such as `X[[\"CD3E\", \"CD4\"]]` or `layers.counts`",
                    spans.first().map_or(Span::default(), |s| s.1),
                ));
            }
            return Layout::Rows;
        }
        ([], [single]) => single.clone(),
        ([], _) if !uses_var => return Layout::Rows,
        ([], _) => {
            b.errors.push(Diagnostic::new(
                "gene columns (`gene`, `var.…`) need one gene set in the stage",
                spans.first().map_or(Span::default(), |s| s.1),
            ));
            return Layout::Rows;
        }
        ([one], _) => (*one).clone(),
        ([first, ..], _) => {
            for (m, sp) in spans {
                if !m.is_single() && m != *first {
                    b.errors.push(
                        Diagnostic::new(
                            "a second gene set in one block is not supported yet",
                            *sp,
                        )
                        .with_hint("use one gene set per pipeline block (end the block with `select` or `agg`)"),
                    );
                }
            }
            (*first).clone()
        }
    };
    // Stored entries suffice when every use of the value is `sum(value)` or `nnz(value)` in an agg.
    let mut uses = 0;
    visit_block(block, &mut |e| {
        if *e == BExpr::Value(matrix.clone()) {
            uses += 1;
        }
    });
    let zero_blind = block.group.is_some()
        && block.aggs.iter().all(|a| match &a.expr {
            BExpr::Agg(AggFn::Sum | AggFn::Nnz, Some(arg)) => **arg == BExpr::Value(matrix.clone()),
            _ => false,
        })
        && uses == block.aggs.len()
        && !block.aggs.is_empty();
    let join = if zero_blind {
        GeneJoin::Stored
    } else {
        let dense = format!("{}_dense", matrix.table);
        if b.dataset.tables.contains_key(&dense) {
            GeneJoin::DenseView(dense)
        } else {
            GeneJoin::Filled
        }
    };
    Layout::Genes { matrix, join }
}
