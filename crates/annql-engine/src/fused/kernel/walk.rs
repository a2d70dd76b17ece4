//! One sparse block's entries walked to the grid cells they land in: CSR rows by their
//! group, then by the few kept genes (searched), by index (every gene its own slot: a full
//! pseudobulk) or through the slot map; CSC columns by their slot, then their cells' groups.

use annql_store::SparseBlock;

use super::{NONE, Sink};

/// Genes mapped to slots; when a query keeps only a few genes, also their ids, ascending.
#[derive(Debug, Clone)]
pub(crate) struct GeneSlots<'a> {
    /// Slot per gene, or [`NONE`].
    pub(crate) slot: &'a [u32],
    /// The kept genes, when there are at most [`FEW_GENES`].
    pub(crate) picked: Option<Vec<u32>>,
    /// Every gene kept, in its own slot (`slot[g] == g`): an entry's gene is its slot, with no
    /// lookup between loading the index and adding to the grid.
    pub(crate) identity: bool,
}

impl<'a> GeneSlots<'a> {
    /// The slots of `slot`, listing the kept genes when they are few.
    pub(crate) fn new(slot: &'a [u32]) -> Self {
        let identity = slot.iter().enumerate().all(|(g, &s)| s as usize == g);
        let mut picked = Vec::new();
        for (gene, &s) in slot.iter().enumerate() {
            if s != NONE {
                if picked.len() == FEW_GENES {
                    return Self {
                        slot,
                        picked: None,
                        identity,
                    };
                }
                picked.push(gene as u32);
            }
        }
        Self {
            slot,
            picked: Some(picked),
            identity,
        }
    }
}

/// Up to this many kept genes, a CSR row with sorted indices is searched for each of them
/// instead of being walked entry by entry.
pub(crate) const FEW_GENES: usize = 16;

/// One block's fold: the block and the maps from its axes to groups and slots.
pub(super) struct Fold<'a> {
    block: &'a SparseBlock,
    row_major: bool,
    row_group: &'a [u32],
    gene_slot: &'a [u32],
    /// The few kept genes, ascending (see [`GeneSlots`]).
    picked: Option<&'a [u32]>,
    /// Every gene in its own slot (see [`GeneSlots`]).
    identity: bool,
    slots: usize,
    /// The group the sink's cell 0 belongs to (a tile of a [`Grid`] starts past 0).
    pub(super) first_group: usize,
}

impl<'a> Fold<'a> {
    pub(super) fn new(
        block: &'a SparseBlock,
        row_major: bool,
        row_group: &'a [u32],
        genes: &'a GeneSlots,
        slots: usize,
    ) -> Self {
        Self {
            block,
            row_major,
            row_group,
            gene_slot: genes.slot,
            picked: genes.picked.as_deref(),
            identity: genes.identity,
            slots,
            first_group: 0,
        }
    }

    /// Adds the entries of CSR rows `rows` (positions in the block) to `sink`, whose cell 0 is
    /// that of group `first_group` (every row's group is at or past it).
    #[inline(always)]
    pub(super) fn run_rows(
        &self,
        rows: impl Iterator<Item = usize>,
        sink: &mut impl Sink,
        value: impl Fn(usize) -> f64,
    ) {
        for m in rows {
            self.row(m, sink, &value);
        }
    }

    /// Adds CSR row `m` of the block (a position in it) to `sink`.
    #[inline(always)]
    fn row(&self, m: usize, sink: &mut impl Sink, value: &impl Fn(usize) -> f64) {
        let (indptr, indices) = (&self.block.indptr, &self.block.indices);
        let entries = indptr[m] as usize..indptr[m + 1] as usize;
        let g = self.row_group[self.block.major.start as usize + m];
        if g == NONE {
            return;
        }
        let base = (g as usize - self.first_group) * self.slots;
        let gene_slot = self.gene_slot;
        // A few genes of a row in gene order (as anndata writes them): search for each.
        if let Some(picked) = self.picked {
            let row = &indices[entries.clone()];
            if row.is_sorted() {
                for &gene in picked {
                    let mut j = row.partition_point(|&i| i < gene);
                    while j < row.len() && row[j] == gene {
                        let s = gene_slot[gene as usize];
                        sink.add(base + s as usize, value(entries.start + j));
                        j += 1;
                    }
                }
                return;
            }
        }
        // Every gene kept (a full pseudobulk): the index is the slot. The store checked each index
        // against the gene count, so `base + gene` stays inside the group's slots.
        if self.identity {
            for (e, &gene) in entries.clone().zip(&indices[entries]) {
                sink.add(base + gene as usize, value(e));
            }
            return;
        }
        for e in entries {
            let s = gene_slot[indices[e] as usize];
            if s != NONE {
                sink.add(base + s as usize, value(e));
            }
        }
    }

    #[inline(always)]
    pub(super) fn run(&self, sink: &mut impl Sink, value: impl Fn(usize) -> f64) {
        let (row_group, gene_slot, slots) = (self.row_group, self.gene_slot, self.slots);
        let start = self.block.major.start as usize;
        let (indptr, indices) = (&self.block.indptr, &self.block.indices);
        let majors = indptr.len().saturating_sub(1);
        if self.row_major {
            return self.run_rows(0..majors, sink, value);
        }
        // A CSC block: a gene per major position, its cells' groups per entry.
        for m in 0..majors {
            let s = gene_slot[start + m];
            if s == NONE {
                continue;
            }
            for e in indptr[m] as usize..indptr[m + 1] as usize {
                let g = row_group[indices[e] as usize];
                if g != NONE {
                    sink.add(g as usize * slots + s as usize, value(e));
                }
            }
        }
    }
}
