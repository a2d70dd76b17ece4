//! Tiled grids over CSR blocks: windows of blocks decoded in parallel, their rows bucketed by
//! the tile of whole groups they land in ([`RowBuckets`]), then the tiles added to in parallel,
//! each by one thread while it sits in cache. Chunk-aligned jobs of fixed-width values decode
//! into an [`Arena`] reused from window to window.

use std::ops::Range;

use annql_store::SparseBlock;
use annql_store::arrow::array::{Array, ArrayData, make_array};
use annql_store::arrow::buffer::{Buffer, MutableBuffer, ScalarBuffer};
use annql_store::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};

use super::jobs::Job;
use super::{Pass, PhaseTimes, WINDOW_ENTRIES};
use crate::fused::kernel::{RowBuckets, SharedTiles, row_tile_groups};
use crate::schedule::Workers;

/// Folds `pass` into `tiles`, a shared grid of tiles of whole groups
/// ([`row_tile_groups`] groups each), window by window.
pub(super) fn fold(pass: &Pass, times: &PhaseTimes, tiles: &SharedTiles) -> Result<()> {
    let (slots, jobs) = (pass.slots, pass.jobs);
    let tile_groups = row_tile_groups(slots);
    let pool = Workers::try_new(pass.workers)?;
    let mut buckets = RowBuckets::default();
    let value_type = pass.matrix.schema().field(2).data_type().clone();
    let windows = windows(jobs);
    let largest = windows.iter().map(|w| w.1).max().unwrap_or(0);
    let mut arena = Arena::new(&value_type, jobs, largest);
    for (range, _) in windows {
        let (start, end) = (range.start, range.end);
        let decoding = times.decode.timer();
        let window = match &mut arena {
            Some(arena) => arena.fill(&jobs[start..end], &pool, |i| pass.read(start + i))?,
            None => pool.map::<_, _, Result<Option<Vec<_>>>>(start..end, |_, i| pass.read(i))?,
        };
        // None: the query was dropped.
        decoding.done();
        let Some(window) = window else { break };
        window.iter().for_each(|_| pass.matrix.progress.step());
        let bucketing = times.bucket.timer();
        buckets.fill(&window, pass.row_group, tile_groups, tiles.count());
        let todo: Vec<usize> = buckets.tiles().collect();
        bucketing.done();
        let _adding = times.add.timer();
        pool.try_for_each(todo, |i| {
            tiles.with(i, |tile| {
                tile.add_rows(
                    &window,
                    buckets.bucket(i),
                    pass.row_group,
                    pass.genes,
                    slots,
                    i * tile_groups,
                )
            })?
        })?;
        drop(window);
        if let Some(arena) = &mut arena {
            arena.reclaim();
        }
    }
    Ok(())
}

/// Consecutive jobs grouped into windows of about [`WINDOW_ENTRIES`] entries, with the entries
/// of each.
fn windows(jobs: &[Job]) -> Vec<(Range<usize>, usize)> {
    let mut windows = Vec::new();
    let mut start = 0;
    while start < jobs.len() {
        let (mut end, mut entries) = (start, 0);
        while end < jobs.len() && entries < WINDOW_ENTRIES {
            entries += jobs[end].entries();
            end += 1;
        }
        windows.push((start..end, entries));
        start = end;
    }
    windows
}

/// Two buffers (indices and values) a fold's windows of decoded chunks are copied into, reused
/// from window to window. Holding a window's hundreds of MB in per-chunk allocations and freeing
/// them after every window makes the allocator return the pages and the kernel zero them again
/// for the next window, which costs more than copying each chunk once it is decoded (its own
/// buffers are then reused by the next chunk the thread decodes). The buffers are allocated once,
/// for the largest window, as zeroed memory fresh from the OS: their pages are first touched by
/// the decoding workers' copies, in parallel, rather than cleared by one thread up front.
struct Arena {
    value_type: DataType,
    /// Bytes per value.
    width: usize,
    indices: MutableBuffer,
    values: MutableBuffer,
    /// The buffers while a window's blocks point into them.
    frozen: Option<(Buffer, Buffer)>,
}

impl Arena {
    /// An arena for windows of up to `entries` entries of chunk-aligned jobs over fixed-width
    /// values; None for other folds.
    fn new(value_type: &DataType, jobs: &[Job], entries: usize) -> Option<Self> {
        let width = value_type.primitive_width()?;
        jobs.iter()
            .all(|j| matches!(j, Job::Entries(_)))
            .then(|| Self {
                value_type: value_type.clone(),
                width,
                indices: MutableBuffer::from_len_zeroed(entries * 4),
                values: MutableBuffer::from_len_zeroed(entries * width),
                frozen: None,
            })
    }

    /// Reads `jobs` in parallel on `pool` (`read` gets a job's position in `jobs`) into the
    /// arena; the blocks point into it until [`Arena::reclaim`]. None if the query was dropped.
    fn fill(
        &mut self,
        jobs: &[Job],
        pool: &Workers,
        read: impl Fn(usize) -> Result<Option<SparseBlock>> + Sync,
    ) -> Result<Option<Vec<SparseBlock>>> {
        let counts: Vec<usize> = jobs.iter().map(Job::entries).collect();
        let total: usize = counts.iter().sum();
        let (width, value_type) = (self.width, self.value_type.clone());
        if self.indices.len() < total * 4 || self.values.len() < total * width {
            return Err(DataFusionError::Internal(format!(
                "a window of {total} entries overflows its arena"
            )));
        }
        // Each job's own slices of the two buffers.
        let mut slices = Vec::with_capacity(jobs.len());
        let (mut indices, mut values) = (
            &mut self.indices.as_slice_mut()[..total * 4],
            &mut self.values.as_slice_mut()[..total * width],
        );
        for &n in &counts {
            let (i, rest) = std::mem::take(&mut indices).split_at_mut(n * 4);
            let (v, more) = std::mem::take(&mut values).split_at_mut(n * width);
            slices.push((i, v));
            (indices, values) = (rest, more);
        }
        let heads = pool.map::<_, _, Result<Option<Vec<_>>>>(
            slices,
            |j, (into_indices, into_values): (&mut [u8], &mut [u8])| {
                let Some(block) = read(j)? else {
                    return Ok(None);
                };
                if block.data.data_type() != &value_type {
                    return Err(DataFusionError::Internal(format!(
                        "job {j} decoded values of type {}, expected {value_type}",
                        block.data.data_type()
                    )));
                }
                let data = block.data.to_data();
                let bytes = &data.buffers()[0].as_slice()
                    [data.offset() * width..(data.offset() + data.len()) * width];
                let stored = block.indices.inner().as_slice();
                if stored.len() != into_indices.len() || bytes.len() != into_values.len() {
                    return Err(DataFusionError::Internal(format!(
                        "job {j} decoded {} entries, expected {}",
                        block.nnz(),
                        counts[j]
                    )));
                }
                into_indices.copy_from_slice(stored);
                into_values.copy_from_slice(bytes);
                Ok(Some((block.major, block.indptr)))
            },
        )?;
        let Some(heads) = heads else {
            return Ok(None);
        };
        let indices = Buffer::from(std::mem::replace(&mut self.indices, MutableBuffer::new(0)));
        let values = Buffer::from(std::mem::replace(&mut self.values, MutableBuffer::new(0)));
        let mut blocks = Vec::with_capacity(heads.len());
        let mut at = 0;
        for ((major, indptr), n) in heads.into_iter().zip(counts) {
            let data = ArrayData::try_new(
                self.value_type.clone(),
                n,
                None,
                0,
                vec![values.slice_with_length(at * width, n * width)],
                vec![],
            )?;
            blocks.push(SparseBlock {
                major,
                indptr,
                indices: ScalarBuffer::new(indices.clone(), at, n),
                data: make_array(data),
            });
            at += n;
        }
        self.frozen = Some((indices, values));
        Ok(Some(blocks))
    }

    /// Takes the buffers back once the window's blocks are dropped.
    fn reclaim(&mut self) {
        // A buffer still shared (it is not, once the blocks are dropped) is replaced, not reused.
        if let Some((indices, values)) = self.frozen.take() {
            let (i, v) = (indices.len(), values.len());
            self.indices = indices
                .into_mutable()
                .unwrap_or_else(|_| MutableBuffer::from_len_zeroed(i));
            self.values = values
                .into_mutable()
                .unwrap_or_else(|_| MutableBuffer::from_len_zeroed(v));
        }
    }
}
