//! One partition's work: each block of its span turned into output batches — rows pruned by the
//! id predicates and the joins' dynamic filters, entries by the minor-id ones, the block (or the
//! CSC copy's columns) read through the table, then the batch filters and the projection.

use std::ops::Range;
use std::sync::Arc;

use annql_store::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, RecordBatchOptions,
};
use annql_store::arrow::compute::{and_kleene, filter_record_batch};
use annql_store::arrow::datatypes::SchemaRef;
use annql_store::{ReadStats, SparseCarry};
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_plan::metrics::Count;

use crate::blocks::{prefer_columns, selected_spans};
use crate::decode::probe_batch;
use crate::pushdown::CodeFilter;
use crate::table::AnnTable;

/// The counters of one partition, as `EXPLAIN ANALYZE` shows them.
pub(super) struct ScanMetrics {
    /// Partitions that read the CSC copy instead of their rows.
    pub(super) copy_reads: Count,
    pub(super) bytes: Count,
    pub(super) chunks: Count,
    pub(super) requests: Count,
    pub(super) blocks_read: Count,
    pub(super) blocks_pruned: Count,
}

/// What one partition's stream needs to turn a block into a batch.
pub(super) struct ScanState {
    /// The partition's whole major range.
    pub(super) span: Range<u64>,
    /// Whether the partition reads the CSC copy instead of its blocks (decided at its first
    /// block, when the join filters are known; the copy is then read at once).
    pub(super) use_copy: std::sync::OnceLock<bool>,
    pub(super) table: Arc<AnnTable>,
    pub(super) needed: Vec<bool>,
    pub(super) projection: Vec<usize>,
    pub(super) output: SchemaRef,
    pub(super) id_filters: Vec<Arc<dyn PhysicalExpr>>,
    pub(super) code_filters: Vec<Arc<CodeFilter>>,
    pub(super) batch_filters: Vec<Arc<dyn PhysicalExpr>>,
    /// Those of `batch_filters` on the minor id alone, which also select entries.
    pub(super) minor_filters: Vec<Arc<dyn PhysicalExpr>>,
    pub(super) stats: Arc<ReadStats>,
    pub(super) metrics: ScanMetrics,
    /// The entries decoded past the last block, which the partition's next block starts with
    /// (blocks are read in order, so a chunk two blocks share is decoded once).
    pub(super) carry: std::sync::Mutex<SparseCarry>,
}

impl ScanState {
    pub(super) fn scan_block(
        &self,
        block: Range<u64>,
        dynamic: &[Arc<dyn PhysicalExpr>],
    ) -> Result<Vec<RecordBatch>> {
        self.table.check_first_read()?;
        if let Some(copy) = self.table.csc_copy() {
            match self.use_copy.get() {
                Some(true) => return Ok(Vec::new()),
                Some(false) => {}
                None => {
                    let batches = self.scan_copy(copy, dynamic)?;
                    // Blocks of a partition run one after another: nothing else sets it.
                    let _ = self.use_copy.set(batches.is_some());
                    if let Some(batches) = batches {
                        return Ok(batches);
                    }
                }
            }
        }
        self.scan_rows(block, dynamic)
    }

    /// Reads this partition's rows of the selected genes from the CSC copy, when the selection
    /// makes that cheaper than reading the rows (see [`prefer_columns`]); None otherwise.
    fn scan_copy(
        &self,
        copy: &Arc<AnnTable>,
        dynamic: &[Arc<dyn PhysicalExpr>],
    ) -> Result<Option<Vec<RecordBatch>>> {
        let Some(genes) = self.minor_mask(dynamic)? else {
            return Ok(None);
        };
        let keep = self.prune(&self.span, dynamic)?;
        let n_cells = self.table.major_len as usize;
        let kept_cells = keep.as_ref().map_or(self.span.end - self.span.start, |k| {
            k.iter().filter(|&&b| b).count() as u64
        });
        let kept_genes = genes.iter().filter(|&&b| b).count() as u64;
        if !prefer_columns(kept_cells, n_cells as u64, kept_genes, genes.len() as u64) {
            return Ok(None);
        }
        copy.check_first_read()?;
        self.metrics.copy_reads.add(1);
        // The copy's minor axis is cells: those of this partition that survive the filters.
        let mut cells = vec![false; n_cells];
        for (i, c) in (self.span.start as usize..self.span.end as usize).enumerate() {
            cells[c] = keep.as_ref().is_none_or(|k| k[i]);
        }
        let mut out = Vec::new();
        for run in selected_spans(genes.iter().copied(), copy.block_rows, 0) {
            let before = (
                self.stats.bytes(),
                self.stats.requests(),
                self.stats.key_count(),
            );
            let gene_keep = &genes[run.start as usize..run.end as usize];
            let batches = copy.read_block(
                run,
                &self.needed,
                Some(gene_keep),
                Some(&cells),
                &mut *self.carry()?,
                &self.stats,
            )?;
            self.count_read(before);
            for batch in batches {
                out.extend(self.finish(batch)?);
            }
        }
        Ok(Some(out))
    }

    fn carry(&self) -> Result<std::sync::MutexGuard<'_, SparseCarry>> {
        self.carry
            .lock()
            .map_err(|_| DataFusionError::Internal("scan carry lock poisoned".into()))
    }

    fn count_read(&self, before: (u64, u64, usize)) {
        self.metrics.blocks_read.add(1);
        self.metrics
            .bytes
            .add((self.stats.bytes() - before.0) as usize);
        self.metrics
            .requests
            .add((self.stats.requests() - before.1) as usize);
        self.metrics.chunks.add(self.stats.key_count() - before.2);
    }

    fn scan_rows(
        &self,
        block: Range<u64>,
        dynamic: &[Arc<dyn PhysicalExpr>],
    ) -> Result<Vec<RecordBatch>> {
        let keep = self.prune(&block, dynamic)?;
        let minor_keep = self.minor_mask(dynamic)?;
        if minor_keep.as_ref().is_some_and(|m| !m.iter().any(|&b| b)) {
            self.metrics.blocks_pruned.add(1);
            return Ok(Vec::new());
        }
        let span = match &keep {
            None => block.clone(),
            Some(k) => match (k.iter().position(|&b| b), k.iter().rposition(|&b| b)) {
                (Some(first), Some(last)) => {
                    block.start + first as u64..block.start + last as u64 + 1
                }
                _ => {
                    self.metrics.blocks_pruned.add(1);
                    return Ok(Vec::new());
                }
            },
        };
        let span_keep = keep.as_ref().map(|k| {
            let (a, b) = (
                (span.start - block.start) as usize,
                (span.end - block.start) as usize,
            );
            k[a..b].to_vec()
        });
        let before = (
            self.stats.bytes(),
            self.stats.requests(),
            self.stats.key_count(),
        );
        let batches = self.table.read_block(
            span,
            &self.needed,
            span_keep.as_deref(),
            minor_keep.as_deref(),
            &mut *self.carry()?,
            &self.stats,
        )?;
        self.count_read(before);
        let mut out = Vec::with_capacity(batches.len());
        for batch in batches {
            out.extend(self.finish(batch)?);
        }
        Ok(out)
    }

    /// Applies the filters left for decoded batches and projects.
    fn finish(&self, batch: RecordBatch) -> Result<Option<RecordBatch>> {
        let mut mask: Option<BooleanArray> = None;
        for c in &self.code_filters {
            mask = Some(combine(mask, c.evaluate(&batch)?)?);
        }
        for f in &self.batch_filters {
            let result = f.evaluate(&batch)?.into_array(batch.num_rows())?;
            let result = result
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| DataFusionError::Plan(format!("filter {f} is not boolean")))?
                .clone();
            mask = Some(combine(mask, result)?);
        }
        let batch = match mask {
            Some(m) => filter_record_batch(&batch, &m)?,
            None => batch,
        };
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        let projected = batch.project(&self.projection)?;
        let options = RecordBatchOptions::new().with_row_count(Some(projected.num_rows()));
        Ok(Some(RecordBatch::try_new_with_options(
            self.output.clone(),
            projected.columns().to_vec(),
            &options,
        )?))
    }

    /// Which minor positions (genes of a CSR matrix) survive the join filters on the minor id.
    fn minor_mask(&self, dynamic: &[Arc<dyn PhysicalExpr>]) -> Result<Option<Vec<bool>>> {
        let (Some(minor), Some(len)) = (self.table.minor_id_column(), self.table.minor_len())
        else {
            return Ok(None);
        };
        let name = self.table.schema().field(minor).name().clone();
        let Ok(col) = self.output.index_of(&name) else {
            return Ok(None);
        };
        let on_minor: Vec<_> = dynamic
            .iter()
            .filter(|f| collect_columns(f).iter().all(|c| c.index() == col))
            .collect();
        // The query's own predicates on the minor id (applied to batches anyway) select too.
        let static_minor = &self.minor_filters;
        if on_minor.is_empty() && static_minor.is_empty() {
            return Ok(None);
        }
        // One id per minor position, sized from the declared shape: within the read limit.
        let what = format!("the {len} ids of the minor axis");
        let bytes = len.saturating_mul(8);
        self.table
            .store
            .check_alloc(&self.table.def.path, &what, bytes)
            .map_err(crate::error::store_err)?;
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..len as i64));
        let mut mask = None;
        if !on_minor.is_empty() {
            let batch = probe_batch(&self.output, col, ids.clone())?;
            mask = mask_of(on_minor, &batch)?;
        }
        if !static_minor.is_empty() {
            let batch = probe_batch(&self.table.schema(), minor, ids)?;
            mask = and_flags(mask, mask_of(static_minor, &batch)?);
        }
        Ok(mask)
    }

    /// Which major positions of `block` survive the id predicates (None: all, without checking).
    fn prune(
        &self,
        block: &Range<u64>,
        dynamic: &[Arc<dyn PhysicalExpr>],
    ) -> Result<Option<Vec<bool>>> {
        if self.id_filters.is_empty() && dynamic.is_empty() {
            return Ok(None);
        }
        let Some(major) = self.table.major_id_column() else {
            return Ok(None);
        };
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(
            block.start as i64..block.end as i64,
        ));
        let mut keep: Option<Vec<bool>> = None;
        if !self.id_filters.is_empty() {
            let batch = probe_batch(&self.table.schema(), major, ids.clone())?;
            keep = and_flags(keep, mask_of(&self.id_filters, &batch)?);
        }
        let name = self.table.schema().field(major).name().clone();
        if let Ok(col) = self.output.index_of(&name) {
            let on_major: Vec<_> = dynamic
                .iter()
                .filter(|f| collect_columns(f).iter().all(|c| c.index() == col))
                .collect();
            if !on_major.is_empty() {
                let batch = probe_batch(&self.output, col, ids)?;
                keep = and_flags(keep, mask_of(on_major, &batch)?);
            }
        }
        Ok(keep)
    }
}

/// Evaluates predicates on a batch and ANDs them into one flag per row (NULL counts as false).
fn mask_of<'a>(
    filters: impl IntoIterator<Item = &'a Arc<dyn PhysicalExpr>>,
    batch: &RecordBatch,
) -> Result<Option<Vec<bool>>> {
    let mut mask: Option<BooleanArray> = None;
    for f in filters {
        mask = Some(combine(
            mask,
            as_bool(f.evaluate(batch)?.into_array(batch.num_rows())?)?,
        )?);
    }
    Ok(mask.map(|m| m.iter().map(|v| v == Some(true)).collect()))
}

fn and_flags(a: Option<Vec<bool>>, b: Option<Vec<bool>>) -> Option<Vec<bool>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.iter().zip(&b).map(|(x, y)| *x && *y).collect()),
        (a, b) => a.or(b),
    }
}

fn as_bool(a: ArrayRef) -> Result<BooleanArray> {
    a.as_any()
        .downcast_ref::<BooleanArray>()
        .cloned()
        .ok_or_else(|| DataFusionError::Plan("row filter is not boolean".into()))
}

fn combine(acc: Option<BooleanArray>, next: BooleanArray) -> Result<BooleanArray> {
    Ok(match acc {
        None => next,
        Some(a) => and_kleene(&a, &next)?,
    })
}
