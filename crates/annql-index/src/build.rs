//! Building an index: checks the matrix, takes the sidecar's lock, transposes the matrix into a
//! temporary sibling of the sidecar within the memory given, carries over the copies of other
//! matrices an older sidecar holds, and renames the result into place.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use annql_store::arrow::array::{ArrayRef, Int32Array, Int64Array};
use annql_store::arrow::datatypes::DataType;
use annql_store::{AnnDataStore, DType, Encoding, ReadStats, StorageOptions, ZarrFormat};
use annql_write::Sink;
use annql_write::output::Staged;
use annql_write::sink::{self, ArraySpec, Attrs, Chunking, Format};
use serde_json::{Value, json};

use crate::carry::carry_over;
use crate::error::{Error, Result};
use crate::in_place;
use crate::provenance::{Provenance, RECORD_ATTR};
use crate::sidecar::{BuildLock, GeneIndex, default_location};
use crate::transpose::{Budget, Control, Csr, Output, column_counts, transpose};

/// Entries per chunk of the copy's `indices` and `data`: a typical gene's column (10⁴–10⁵
/// entries in an atlas) spans a few chunks, so a one-gene read decodes little more than it.
pub const CHUNK_ENTRIES: u64 = 1 << 14;
/// Chunks per shard: a shard is one stored object (1 MiB of cell ids), its index one read of
/// 260 bytes; the writer holds one shard of each array at a time.
pub const CHUNKS_PER_SHARD: u64 = 16;

/// What to index and how.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// The matrix: `X` or `layers/<name>`.
    pub matrix: String,
    /// The memory the build may allocate, in bytes, beyond what the process already holds.
    pub memory: u64,
    /// Where the sidecar goes (default: `<source>.annql-index`).
    pub out: Option<PathBuf>,
    /// Write the copy into the source itself, as `layers/<name>_csc` (a local zarr directory),
    /// instead of a sidecar.
    pub in_place: bool,
    /// Set to stop the build; nothing is left at the sidecar's path.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Output entries per pass, instead of what `memory` leaves for them: tests use it to run
    /// many passes over a small matrix.
    pub window: Option<u64>,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            matrix: "X".into(),
            memory: 1 << 30,
            out: None,
            in_place: false,
            cancel: None,
            window: None,
        }
    }
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct IndexSummary {
    /// The sidecar written (the copy's directory inside the source, in place).
    pub sidecar: PathBuf,
    /// The matrix indexed.
    pub matrix: String,
    /// (cells, genes).
    pub shape: (u64, u64),
    /// Stored entries.
    pub nnz: u64,
    /// Passes over the source after the count (windows of the output).
    pub passes: u64,
    /// Output entries per pass.
    pub window: u64,
    /// Wall time, in seconds.
    pub seconds: f64,
}

/// Builds the CSC copy of `options.matrix` of the store at `location`, reporting progress as
/// (entries done, entries to do).
pub fn build(
    location: &str,
    storage: &StorageOptions,
    options: &IndexOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<IndexSummary> {
    let started = Instant::now();
    let sidecar = match &options.out {
        Some(out) => out.clone(),
        // In place, there is no sidecar: the copy goes into the store (see `in_place::target`).
        None if options.in_place => PathBuf::new(),
        None => default_location(location).ok_or_else(|| Error::NotIndexable {
            element: options.matrix.clone(),
            reason: format!("{location} is remote: give the index's path (--out)"),
        })?,
    };
    let store = AnnDataStore::open_with(location, storage)?;
    let matrix = options.matrix.trim_matches('/').to_string();
    let element = store.element(&matrix)?;
    match element.encoding {
        Encoding::CsrMatrix => {}
        Encoding::CscMatrix => {
            return Err(Error::NotIndexable {
                element: matrix,
                reason: "it is already stored by gene (CSC): queries read its genes directly"
                    .into(),
            });
        }
        ref other => {
            return Err(Error::NotIndexable {
                element: matrix,
                reason: format!("it is a {other:?}, not a CSR sparse matrix"),
            });
        }
    }
    let (rows, cols) = store.sparse_dims(element)?;
    if rows > u64::from(u32::MAX) {
        return Err(Error::NotIndexable {
            element: matrix,
            reason: format!("{rows} cells: cell ids past 2³² are not supported"),
        });
    }
    let stats = ReadStats::new_shared();
    let indptr = store.read_offsets(&format!("{matrix}/indptr"), 0..rows + 1, &stats)?;
    if let Some(row) = indptr.windows(2).position(|w| w[0] > w[1]) {
        return Err(Error::NotIndexable {
            element: format!("{matrix}/indptr"),
            reason: format!("it decreases at row {row}: not a CSR matrix's offsets"),
        });
    }
    let nnz = *indptr.last().unwrap_or(&0);
    let value_type = value_type(&store, &matrix)?;
    let budget = plan_budget(
        &store,
        &matrix,
        rows,
        cols,
        nnz,
        &value_type,
        options.memory,
    )?;
    let provenance = Provenance::of(&store, location, &matrix, &indptr)?;
    if !options.in_place && sidecar.exists() {
        // Only an annql index is ever replaced: `--out` naming another store is refused.
        GeneIndex::open(&sidecar.to_string_lossy(), &StorageOptions::default())?;
    }

    let csr = Csr {
        store: &store,
        path: &matrix,
        rows,
        cols,
        indptr,
        value_type,
    };
    let target = if options.in_place {
        in_place::target(location, &store, &matrix)?
    } else {
        sidecar.clone()
    };
    let _lock = BuildLock::take(&target)?;
    let staged = Staged::begin(&target, !options.in_place)?;
    let control = Control {
        progress,
        cancel: options.cancel.as_deref(),
        sidecar: &target,
    };
    // In place, the copy's group is the root of what is written (renamed to
    // `layers/<name>_csc`), in the store's own format; a sidecar is a zarr v3 store.
    let (format, group) = match (options.in_place, store.format()) {
        (true, ZarrFormat::V2) => (Format::ZarrV2, ""),
        (true, _) => (Format::ZarrV3 { sharded: true }, ""),
        (false, _) => (Format::ZarrV3 { sharded: true }, matrix.as_str()),
    };
    let mut sink = sink::create(&format, staged.tmp(), &chunking())?;
    if !options.in_place {
        sidecar_groups(sink.as_mut(), &matrix)?;
    }
    write_copy(
        sink.as_mut(),
        group,
        &csr,
        &provenance,
        budget,
        &stats,
        &control,
    )?;
    sink.finish()?;
    if options.in_place {
        in_place::install(staged, location, &store)?;
    } else {
        carry_over(&sidecar, staged.tmp(), &matrix)?;
        staged.commit()?;
    }
    Ok(IndexSummary {
        sidecar: target,
        matrix,
        shape: (rows, cols),
        nnz,
        passes: nnz.div_ceil(budget.window.max(1)),
        window: budget.window,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The sidecar's root (a dict of matrices, so anndata reads it: `anndata.io.read_elem`) and the
/// groups above `matrix` (`layers`).
fn sidecar_groups(sink: &mut dyn Sink, matrix: &str) -> Result<()> {
    sink.group(
        "",
        &attrs(json!({
            "encoding-type": "dict",
            "encoding-version": "0.1.0",
            RECORD_ATTR: { "version": 1 },
        })),
    )?;
    let parts: Vec<&str> = matrix.split('/').collect();
    for depth in 1..parts.len() {
        sink.group(
            &parts[..depth].join("/"),
            &attrs(json!({ "encoding-type": "dict", "encoding-version": "0.1.0" })),
        )?;
    }
    Ok(())
}

fn chunking() -> Chunking {
    Chunking {
        chunk_len: CHUNK_ENTRIES,
        target_chunk_elements: CHUNK_ENTRIES,
        chunks_per_shard: CHUNKS_PER_SHARD,
    }
}

/// Writes the CSC copy of `csr` as the group `group` of `sink`: its `indptr` from a count pass,
/// then `indices` and `data` from the passes of the transposition.
fn write_copy(
    sink: &mut dyn Sink,
    group: &str,
    csr: &Csr,
    provenance: &Provenance,
    budget: Budget,
    stats: &Arc<ReadStats>,
    control: &Control,
) -> Result<()> {
    let (rows, cols) = (csr.rows, csr.cols);
    let nnz = *csr.indptr.last().unwrap_or(&0);
    let counts = column_counts(csr, stats, control)?;
    let mut colptr = Vec::with_capacity(counts.len() + 1);
    colptr.push(0u64);
    for c in &counts {
        colptr.push(colptr[colptr.len() - 1] + c);
    }
    drop(counts);
    let wide = nnz > i32::MAX as u64 || rows > i32::MAX as u64 || cols > i32::MAX as u64;
    sink.group(
        group,
        &attrs(json!({
            "encoding-type": "csc_matrix",
            "encoding-version": "0.1.0",
            "shape": [rows, cols],
            RECORD_ATTR: provenance.to_json(),
        })),
    )?;
    let at = |name: &str| {
        if group.is_empty() {
            name.to_string()
        } else {
            format!("{group}/{name}")
        }
    };
    let index_type = if wide { DType::Int64 } else { DType::Int32 };
    let spec = |dtype: DType, len: u64| ArraySpec {
        dtype,
        inner: Vec::new(),
        scalar: false,
        len_hint: Some(len),
    };
    let id = sink.open_array(
        &at("indptr"),
        &spec(index_type.clone(), cols + 1),
        &Attrs::new(),
    )?;
    let offsets: ArrayRef = if wide {
        Arc::new(Int64Array::from_iter_values(
            colptr.iter().map(|&p| p as i64),
        ))
    } else {
        Arc::new(Int32Array::from_iter_values(
            colptr.iter().map(|&p| p as i32),
        ))
    };
    sink.append(id, &offsets)?;
    sink.close_array(id)?;
    drop(offsets);
    let data_dtype = csr
        .store
        .array_meta(&format!("{}/data", csr.path))?
        .dtype
        .clone();
    let indices = sink.open_array(&at("indices"), &spec(index_type, nnz), &Attrs::new())?;
    let data = sink.open_array(&at("data"), &spec(data_dtype, nnz), &Attrs::new())?;
    let mut output = Output {
        sink: &mut *sink,
        indices,
        data,
        wide,
    };
    transpose(csr, &colptr, budget, &mut output, stats, control)?;
    sink.close_array(indices)?;
    sink.close_array(data)?;
    Ok(())
}

fn attrs(v: Value) -> Attrs {
    match v {
        Value::Object(map) => map,
        _ => Attrs::new(),
    }
}

/// The Arrow type the store reads `data` as: a number.
fn value_type(store: &AnnDataStore, matrix: &str) -> Result<DataType> {
    let path = format!("{matrix}/data");
    let dtype = &store.array_meta(&path)?.dtype;
    match dtype.arrow_type() {
        Some(t) if t.is_numeric() => Ok(t),
        _ => Err(Error::NotIndexable {
            element: path,
            reason: format!("values of type {dtype} are not numbers annql indexes"),
        }),
    }
}

/// Splits `memory` between what every build holds and the window of the output a pass fills.
///
/// Held throughout: the source's `indptr` and the copy's (8 bytes per cell and per gene, the
/// counts twice more while they are summed and per worker), a decoded row block and the chunk
/// carried past it, the sink's shard buffers and their encoded copies, and an allowance for
/// the process itself. The window gets the rest, at 4 bytes (cell id) plus a value per entry.
fn plan_budget(
    store: &AnnDataStore,
    matrix: &str,
    rows: u64,
    cols: u64,
    nnz: u64,
    value_type: &DataType,
    memory: u64,
) -> Result<Budget> {
    // Room for what the allocator keeps between frees and reuse.
    const SLACK: u64 = 16 << 20;
    let width = value_type.primitive_width().unwrap_or(8) as u64;
    let entry = 4 + width;
    let workers = rayon::current_num_threads().max(1) as u64;
    let source_chunk = store
        .sparse_chunk_len(matrix)
        .unwrap_or(1 << 16)
        .min(nnz.max(1));
    // A block of a couple of source chunks per worker keeps every worker decoding.
    let block = (source_chunk * 2 * workers)
        .clamp(1 << 16, (memory / 16 / entry).max(1 << 16))
        .min(nnz.max(1));
    let shard = (CHUNK_ENTRIES * CHUNKS_PER_SHARD).min(nnz.max(1));
    let fixed = SLACK
        + (rows + 1) * 8
        + (cols + 1) * 8 * (3 + workers)
        // the decoded block, and the chunk carried past it, as entries and as Arrow arrays
        + (block + source_chunk) * entry * 2
        // one shard of indices and of data in the writer, and their encoding
        + 2 * shard * entry;
    let floor = fixed + (1u64 << 16).min(nnz.max(1)) * entry;
    if memory < floor {
        return Err(Error::TooLittleMemory {
            element: matrix.to_string(),
            given: memory,
            reason: format!(
                "the build needs at least {} MiB for a {rows}×{cols} matrix",
                floor.div_ceil(1 << 20)
            ),
        });
    }
    let window = ((memory - fixed) / entry).min(nnz.max(1));
    Ok(Budget { window, block })
}

/// The process's resident memory now (Linux: `VmRSS` of /proc/self/status): a command that
/// promises a peak for the whole process gives the build `memory - resident_bytes()`.
pub fn resident_bytes() -> Option<u64> {
    // Elsewhere (or without /proc) the caller assumes a typical size instead.
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb << 10)
}
