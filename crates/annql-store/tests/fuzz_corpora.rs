//! Replays every input of every fuzz corpus (`fuzz/corpus/<target>`) through the entry points the
//! cargo-fuzz targets call, without sanitizers: no input may panic or take more than a few
//! seconds, and each corpus holds inputs that open cleanly (so the harness is not failing every
//! input early). The long fuzzing runs live in `fuzz/README.md`; this is what CI checks.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use annql_store::fuzzing;

/// A generous bound on one input without sanitizers (libFuzzer's is 10 s with them).
const PER_INPUT: Duration = Duration::from_secs(10);

type Entry = fn(&[u8]) -> annql_store::Result<()>;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    files.sort();
    files
}

/// Feeds every corpus file to `entry`; fails naming each input that panicked or was slow.
fn replay(target: &str, entry: Entry) {
    let files = corpus(target);
    assert!(
        files.len() >= 5,
        "fuzz/corpus/{target} holds {} inputs",
        files.len()
    );
    let mut failures = Vec::new();
    let mut opened = 0;
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let start = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| entry(&data))) {
            Ok(Ok(())) => opened += 1,
            Ok(Err(_)) => {}
            Err(_) => failures.push(format!("{}: panicked", file.display())),
        }
        if start.elapsed() > PER_INPUT {
            failures.push(format!("{}: took {:?}", file.display(), start.elapsed()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        opened > 0,
        "no input of fuzz/corpus/{target} opened as a store: the harness rejects everything"
    );
}

#[test]
fn zarr_v2_metadata_corpus() {
    replay("zarr_v2_metadata", fuzzing::zarr_v2_metadata);
}

#[test]
fn zarr_v3_metadata_corpus() {
    replay("zarr_v3_metadata", fuzzing::zarr_v3_metadata);
}

#[test]
fn consolidated_corpus() {
    replay("consolidated", fuzzing::consolidated_metadata);
}

#[test]
fn zip_corpus() {
    replay("zip", fuzzing::zip_archive);
}

#[test]
fn hdf5_corpus() {
    replay("hdf5", fuzzing::hdf5_file);
}

#[test]
fn chunk_corpus() {
    replay("chunk", fuzzing::chunk_to_arrow);
}
