//! Decode floor: the time to read and decompress every chunk of a sparse matrix, on all cores,
//! doing nothing else. It is the physical limit a full scan of that matrix is held against.
//!
//! ```text
//! cargo run --example decode_floor -- STORE MATRIX [--part all|data|indices] [--threads N] [--repeat N]
//! cargo run --example decode_floor -- /work/data/atlas-m.zarr layers/counts
//! cargo run --example decode_floor -- /work/data/atlas-m.zarr X --part indices
//! ```
//!
//! `MATRIX` is the group of a CSR/CSC matrix (`X`, `layers/counts`, `raw/X`); `--part all` reads
//! `MATRIX/data` and `MATRIX/indices`, `--part indices` only `MATRIX/indices` (the floor of a
//! gene-selective scan, which must look at every stored gene id but at only a few values).
//! Chunks are retrieved and decoded in parallel with rayon (one chunk per task, no nested codec
//! parallelism). A first untimed pass warms the page cache; then `--repeat` timed passes run and
//! the median is reported. The last line is `FLOOR {json}` for scripts (`benches/run.py`).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use zarrs::array::{Array, ArrayBytes, CodecOptions};
use zarrs::filesystem::FilesystemStore;
use zarrs::storage::{ReadableStorageTraits, ReadableWritableListableStorage};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Command-line options.
struct Args {
    store: PathBuf,
    matrix: String,
    arrays: Vec<&'static str>,
    part: String,
    threads: Option<usize>,
    repeat: usize,
}

fn parse_args() -> Result<Args, Error> {
    let mut positional = Vec::new();
    let (mut part, mut threads, mut repeat) = ("all".to_string(), None, 3usize);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--part" => part = it.next().ok_or("--part needs a value")?,
            "--threads" => threads = Some(it.next().ok_or("--threads needs a value")?.parse()?),
            "--repeat" => repeat = it.next().ok_or("--repeat needs a value")?.parse()?,
            "-h" | "--help" => {
                println!(
                    "usage: decode_floor STORE MATRIX [--part all|data|indices] [--threads N] [--repeat N]"
                );
                std::process::exit(0);
            }
            _ => positional.push(a),
        }
    }
    let [store, matrix] = <[String; 2]>::try_from(positional).map_err(
        |_| "usage: decode_floor STORE MATRIX [--part all|data|indices] [--threads N] [--repeat N]",
    )?;
    let arrays = match part.as_str() {
        "all" => vec!["data", "indices"],
        "data" => vec!["data"],
        "indices" => vec!["indices"],
        other => return Err(format!("unknown --part {other} (all, data, indices)").into()),
    };
    Ok(Args {
        store: store.into(),
        matrix: matrix.trim_matches('/').to_string(),
        arrays,
        part,
        threads,
        repeat: repeat.max(1),
    })
}

/// One array to decode: the zarrs array and the indices of all its chunks.
struct Target {
    array: Array<dyn ReadableStorageTraits>,
    chunks: Vec<Vec<u64>>,
    encoded_bytes: u64,
}

fn open_target(storage: &ReadableWritableListableStorage, path: &str) -> Result<Target, Error> {
    let readable: Arc<dyn ReadableStorageTraits> = storage.clone();
    let array = Array::open(readable.clone(), path)?;
    let grid = array.chunk_grid_shape().to_vec();
    let mut chunks: Vec<Vec<u64>> = vec![vec![]];
    for &n in &grid {
        chunks = chunks
            .into_iter()
            .flat_map(|prefix| {
                (0..n).map(move |i| {
                    let mut c = prefix.clone();
                    c.push(i);
                    c
                })
            })
            .collect();
    }
    let mut encoded_bytes = 0;
    for c in &chunks {
        encoded_bytes += readable.size_key(&array.chunk_key(c))?.unwrap_or(0);
    }
    Ok(Target {
        array,
        chunks,
        encoded_bytes,
    })
}

/// Retrieves and decodes every chunk of every target in parallel; returns the decoded bytes.
fn decode_all(targets: &[Target]) -> Result<u64, Error> {
    let options = CodecOptions::default().with_concurrent_target(1);
    let jobs: Vec<(&Target, &Vec<u64>)> = targets
        .iter()
        .flat_map(|t| t.chunks.iter().map(move |c| (t, c)))
        .collect();
    jobs.par_iter()
        .map(|(t, c)| -> Result<u64, Error> {
            let bytes: ArrayBytes<'static> = t.array.retrieve_chunk_opt(c, &options)?;
            Ok(bytes.size() as u64)
        })
        .try_reduce(|| 0, |a, b| Ok(a + b))
}

fn main() -> Result<(), Error> {
    let args = parse_args()?;
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()?;
    }
    let storage: ReadableWritableListableStorage = Arc::new(FilesystemStore::new(&args.store)?);
    let targets = args
        .arrays
        .iter()
        .map(|a| open_target(&storage, &format!("/{}/{a}", args.matrix)))
        .collect::<Result<Vec<_>, _>>()?;
    let n_chunks: usize = targets.iter().map(|t| t.chunks.len()).sum();
    let encoded: u64 = targets.iter().map(|t| t.encoded_bytes).sum();

    let decoded = decode_all(&targets)?; // warm-up pass: page cache, allocator
    let mut times = Vec::with_capacity(args.repeat);
    for _ in 0..args.repeat {
        let t0 = Instant::now();
        decode_all(&targets)?;
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let threads = rayon::current_num_threads();
    println!(
        "{}/{} ({}): {n_chunks} chunks, {:.1} MB read, {:.1} MB decoded, {threads} threads: {median:.3} s (median of {}; min {:.3} s)",
        args.store.display(),
        args.matrix,
        args.part,
        encoded as f64 / 1e6,
        decoded as f64 / 1e6,
        times.len(),
        times[0],
    );
    let json = serde_json::json!({
        "store": args.store.display().to_string(),
        "matrix": args.matrix,
        "part": args.part,
        "chunks": n_chunks,
        "encoded_bytes": encoded,
        "decoded_bytes": decoded,
        "threads": threads,
        "seconds": median,
        "seconds_min": times[0],
        "runs_s": times,
    });
    println!("FLOOR {json}");
    Ok(())
}
