//! Block selection: which spans of a table's major axis a read covers, and whether a gene
//! selection is read faster from a matrix's CSC copy than from its rows.
//!
//! A room of its own because two operators choose blocks the same way: the scan
//! ([`crate::scan`]) and the fused aggregation ([`crate::fused`]). It sits below both.

use std::ops::Range;

/// Whether reading the kept genes' columns touches fewer entries than reading the kept cells'
/// rows (entries assumed spread evenly): the share of genes kept is at most half the share of
/// cells kept.
pub(crate) fn prefer_columns(kept_cells: u64, cells: u64, kept_genes: u64, genes: u64) -> bool {
    2 * u128::from(kept_genes) * u128::from(cells) <= u128::from(kept_cells) * u128::from(genes)
}

/// Spans of a major axis holding selected positions: within each aligned block of `block`
/// positions, from a selected position to a selected one, split where more than `max_gap`
/// unselected positions lie between two selected ones. Cells of a CSR block are read in one span
/// and filtered (`max_gap` unbounded); the genes of a CSC copy run by run (`max_gap` 0).
pub(crate) fn selected_spans(
    selected: impl IntoIterator<Item = bool>,
    block: u64,
    max_gap: u64,
) -> Vec<Range<u64>> {
    let block = block.max(1);
    let mut out: Vec<Range<u64>> = Vec::new();
    for (i, _) in selected.into_iter().enumerate().filter(|(_, s)| *s) {
        let i = i as u64;
        match out.last_mut() {
            Some(r) if i - r.end <= max_gap && r.start / block == i / block => r.end = i + 1,
            _ => out.push(i..i + 1),
        }
    }
    out
}
