//! Time and peak memory of large writes, run by hand under `/usr/bin/time -v` (the figures in
//! docs/h5ad-writer.md): `ANNQL_H5AD_BENCH=<output path> cargo test -p annql-write <name> --
//! --ignored`.

use std::path::PathBuf;
use std::sync::Arc;

use annql_store::DType;
use annql_store::arrow::array::{ArrayRef, Float32Array, Int32Array, Int64Array};
use serde_json::json;

use super::tests::{attrs, enc, spec, with};
use super::*;

/// The memory measurement of the report: a CSR X of 50M entries (float32 data, int32 indices)
/// over 100k rows, appended in 1M-entry blocks with the default chunking. Run alone under
/// `/usr/bin/time -v` with `ANNQL_H5AD_BENCH=<output path>`:
/// `cargo test -p annql-write csr_50m -- --ignored`.
#[test]
#[ignore = "writes a 400 MB file; run by hand to measure time and peak memory"]
fn csr_50m_entries_in_1m_blocks() {
    let Some(path) = std::env::var_os("ANNQL_H5AD_BENCH").map(PathBuf::from) else {
        panic!("set ANNQL_H5AD_BENCH to the output path");
    };
    let (n_obs, per_row, block) = (100_000usize, 500usize, 1_000_000usize);
    let mut sink: Box<dyn Sink> =
        Box::new(H5adSink::create(&path, &Chunking::default()).unwrap_or_else(|e| panic!("{e}")));
    sink.group("", &attrs(enc("anndata", "0.1.0")))
        .unwrap_or_else(|e| panic!("{e}"));
    let shape = json!({"shape": [n_obs, 20_000]});
    sink.group("X", &attrs(with(enc("csr_matrix", "0.1.0"), shape)))
        .unwrap_or_else(|e| panic!("{e}"));
    let d = sink
        .open_array("X/data", &spec(DType::Float32, &[], false), &Attrs::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let i = sink
        .open_array("X/indices", &spec(DType::Int32, &[], false), &Attrs::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let p = sink
        .open_array("X/indptr", &spec(DType::Int64, &[], false), &Attrs::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let total = n_obs * per_row;
    for start in (0..total).step_by(block) {
        let data: ArrayRef = Arc::new(Float32Array::from_iter_values(
            (start..start + block).map(|k| k as f32),
        ));
        let indices: ArrayRef = Arc::new(Int32Array::from_iter_values(
            (start..start + block).map(|k| ((k % per_row) * 40) as i32),
        ));
        sink.append(d, &data).unwrap_or_else(|e| panic!("{e}"));
        sink.append(i, &indices).unwrap_or_else(|e| panic!("{e}"));
        let rows = (start / per_row)..((start + block) / per_row);
        let first = if start == 0 { 0 } else { 1 };
        let indptr: ArrayRef = Arc::new(Int64Array::from_iter_values(
            (rows.start + first..=rows.end).map(|r| (r * per_row) as i64),
        ));
        sink.append(p, &indptr).unwrap_or_else(|e| panic!("{e}"));
    }
    for id in [d, i, p] {
        sink.close_array(id).unwrap_or_else(|e| panic!("{e}"));
    }
    sink.finish().unwrap_or_else(|e| panic!("{e}"));
}

/// The dense counterpart: a float32 matrix of 100k × 2000 (800 MB) appended in blocks of 500
/// rows. Run like `csr_50m_entries_in_1m_blocks`: `cargo test -p annql-write dense_800mb --
/// --ignored` with `ANNQL_H5AD_BENCH=<output path>`.
#[test]
#[ignore = "writes an 800 MB file; run by hand to measure time and peak memory"]
fn dense_800mb_in_row_blocks() {
    let Some(path) = std::env::var_os("ANNQL_H5AD_BENCH").map(PathBuf::from) else {
        panic!("set ANNQL_H5AD_BENCH to the output path");
    };
    let (n_obs, n_vars, block) = (100_000usize, 2_000usize, 500usize);
    let create = H5adSink::create(&path, &Chunking::default());
    let mut sink: Box<dyn Sink> = Box::new(create.unwrap_or_else(|e| panic!("{e}")));
    let ok = |r: Result<()>| r.unwrap_or_else(|e| panic!("{e}"));
    ok(sink.group("", &attrs(enc("anndata", "0.1.0"))));
    let x = spec(DType::Float32, &[n_vars as u64], false);
    let id = sink.open_array("X", &x, &attrs(enc("array", "0.2.0")));
    let id = id.unwrap_or_else(|e| panic!("{e}"));
    for start in (0..n_obs).step_by(block) {
        let values = (start * n_vars..(start + block) * n_vars).map(|k| (k % 1000) as f32);
        let values: ArrayRef = Arc::new(Float32Array::from_iter_values(values));
        ok(sink.append(id, &values));
    }
    ok(sink.close_array(id));
    ok(sink.finish());
}
