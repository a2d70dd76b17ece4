//! The zarr sink against its two readers: an AnnData-shaped tree written in blocks that straddle
//! chunk and shard boundaries, read back by annql's store and by the real anndata.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use annql_store::arrow::array::{
    Array as _, ArrayRef, AsArray, BooleanArray, Float32Array, Float64Array, Int8Array, Int32Array,
    Int64Array, StringArray,
};
use annql_store::arrow::datatypes::{Float32Type, Float64Type, Int64Type};
use annql_store::{AnnDataStore, DType, ReadStats};
use serde_json::json;

use super::super::{ArraySpec, Attrs, Chunking, Format, Sink, create};
use crate::error::Error;
use crate::testing::Must;

/// Cells of the test tree.
const N: u64 = 50;
/// Genes.
const G: u64 = 7;

fn attrs(v: serde_json::Value) -> Attrs {
    match v {
        serde_json::Value::Object(m) => m,
        other => panic!("attributes must be an object, not {other}"),
    }
}

fn enc(kind: &str, version: &str) -> Attrs {
    attrs(json!({ "encoding-type": kind, "encoding-version": version }))
}

fn spec(dtype: DType, inner: Vec<u64>, len_hint: Option<u64>) -> ArraySpec {
    ArraySpec {
        dtype,
        inner,
        scalar: false,
        len_hint,
    }
}

/// Small chunks, so 50 cells cross many chunk and shard boundaries.
fn small_chunks() -> Chunking {
    Chunking {
        chunk_len: 8,
        target_chunk_elements: 8,
        chunks_per_shard: 3,
    }
}

/// The columns of cell `i` (the same formulas are in [`CHECK_PY`]).
fn cell_string(i: u64) -> String {
    if i.is_multiple_of(7) {
        String::new()
    } else {
        format!("s{i}é")
    }
}

/// Row `i` of X: the columns `j` with `(i + j).is_multiple_of(3)`, value `7i + j + 0.5`.
fn x_row(i: u64) -> Vec<(i32, f32)> {
    (0..G)
        .filter(|j| (i + j).is_multiple_of(3))
        .map(|j| (j as i32, (7 * i + j) as f32 + 0.5))
        .collect()
}

/// Appends `values` to a new array in blocks of the given sizes (cycled), then closes it.
fn write_array(
    sink: &mut dyn Sink,
    path: &str,
    spec: &ArraySpec,
    attrs: &Attrs,
    values: ArrayRef,
    rows_per_block: &[usize],
) {
    let row = spec.inner.iter().product::<u64>() as usize;
    let id = sink
        .open_array(path, spec, attrs)
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut offset, mut k) = (0, 0);
    while offset < values.len() {
        let take = (rows_per_block[k % rows_per_block.len()] * row).min(values.len() - offset);
        sink.append(id, &values.slice(offset, take))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        offset += take;
        k += 1;
    }
    sink.close_array(id).unwrap_or_else(|e| panic!("{e}"));
}

fn strings(values: impl IntoIterator<Item = String>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

/// Writes the test AnnData at `out` in `format`.
fn write_tree(format: &Format, out: &Path, chunking: &Chunking) {
    let mut sink = create(format, out, chunking).unwrap_or_else(|e| panic!("{e}"));
    let s: &mut dyn Sink = sink.as_mut();
    let none = Attrs::new();
    s.group("", &enc("anndata", "0.1.0")).must();

    let mut obs = enc("dataframe", "0.2.0");
    obs.insert("_index".into(), json!("_index"));
    obs.insert("column-order".into(), json!(["cat", "s", "ni", "b"]));
    s.group("obs", &obs).must();
    let index = strings((0..N).map(|i| format!("cell{i}")));
    let str_spec = spec(DType::String, vec![], Some(N));
    write_array(
        s,
        "obs/_index",
        &str_spec,
        &enc("string-array", "0.2.0"),
        index,
        &[13],
    );
    let mut cat = enc("categorical", "0.2.0");
    cat.insert("ordered".into(), json!(false));
    s.group("obs/cat", &cat).must();
    let codes: ArrayRef = Arc::new(Int8Array::from_iter_values((0..N).map(|i| (i % 3) as i8)));
    write_array(
        s,
        "obs/cat/codes",
        &spec(DType::Int8, vec![], None),
        &enc("array", "0.2.0"),
        codes,
        &[5, 11],
    );
    let cats = strings(["a", "b", "c"].map(String::from));
    write_array(
        s,
        "obs/cat/categories",
        &spec(DType::String, vec![], Some(3)),
        &enc("string-array", "0.2.0"),
        cats,
        &[3],
    );
    let column = strings((0..N).map(cell_string));
    write_array(
        s,
        "obs/s",
        &spec(DType::String, vec![], None),
        &enc("string-array", "0.2.0"),
        column,
        &[7, 1, 30],
    );
    s.group("obs/ni", &enc("nullable-integer", "0.1.0")).must();
    let values: ArrayRef = Arc::new(Int64Array::from_iter_values((0..N).map(|i| i as i64 * 10)));
    write_array(
        s,
        "obs/ni/values",
        &spec(DType::Int64, vec![], Some(N)),
        &enc("array", "0.2.0"),
        values,
        &[24, 24, 2],
    );
    let mask: ArrayRef = Arc::new(BooleanArray::from_iter(
        (0..N).map(|i| Some(i.is_multiple_of(4))),
    ));
    write_array(
        s,
        "obs/ni/mask",
        &spec(DType::Bool, vec![], Some(N)),
        &enc("array", "0.2.0"),
        mask,
        &[9],
    );
    let b: ArrayRef = Arc::new(BooleanArray::from_iter(
        (0..N).map(|i| Some(i.is_multiple_of(2))),
    ));
    write_array(
        s,
        "obs/b",
        &spec(DType::Bool, vec![], None),
        &enc("array", "0.2.0"),
        b,
        &[50],
    );

    let mut var = enc("dataframe", "0.2.0");
    var.insert("_index".into(), json!("_index"));
    var.insert("column-order".into(), json!([]));
    s.group("var", &var).must();
    let genes = strings((0..G).map(|j| format!("gene{j}")));
    write_array(
        s,
        "var/_index",
        &spec(DType::String, vec![], Some(G)),
        &enc("string-array", "0.2.0"),
        genes,
        &[4],
    );

    // X: the three arrays of a CSR matrix grow together, in blocks of a few rows.
    let mut x = enc("csr_matrix", "0.1.0");
    x.insert("shape".into(), json!([N, G]));
    s.group("X", &x).must();
    let data = s
        .open_array("X/data", &spec(DType::Float32, vec![], None), &none)
        .must();
    let indices = s
        .open_array("X/indices", &spec(DType::Int32, vec![], None), &none)
        .must();
    let indptr = s
        .open_array("X/indptr", &spec(DType::Int64, vec![], Some(N + 1)), &none)
        .must();
    s.append(indptr, &(Arc::new(Int64Array::from(vec![0])) as ArrayRef))
        .must();
    let mut nnz = 0;
    for block in [0..3, 3..4, 4..17, 17..18, 18..50] {
        let rows: Vec<_> = block.map(x_row).collect();
        let entries = rows.iter().flatten();
        let cols: ArrayRef = Arc::new(Int32Array::from_iter_values(entries.clone().map(|e| e.0)));
        let vals: ArrayRef = Arc::new(Float32Array::from_iter_values(entries.map(|e| e.1)));
        let ends = rows.iter().map(|r| {
            nnz += r.len() as i64;
            nnz
        });
        let ptr: ArrayRef = Arc::new(Int64Array::from_iter_values(ends.collect::<Vec<_>>()));
        s.append(data, &vals).must();
        s.append(indices, &cols).must();
        s.append(indptr, &ptr).must();
    }
    for id in [data, indices, indptr] {
        s.close_array(id).must();
    }

    s.group("obsm", &enc("dict", "0.1.0")).must();
    let pca: ArrayRef = Arc::new(Float64Array::from_iter_values(
        (0..N * 3).map(|e| (e / 3) as f64 + (e % 3) as f64 / 10.0),
    ));
    write_array(
        s,
        "obsm/pca",
        &spec(DType::Float64, vec![3], Some(N)),
        &enc("array", "0.2.0"),
        pca,
        &[3, 10, 1],
    );

    s.group("uns", &enc("dict", "0.1.0")).must();
    let scalar = |dtype| ArraySpec {
        dtype,
        inner: vec![],
        scalar: true,
        len_hint: None,
    };
    let title = strings(["hello, zarr ✓".to_string()]);
    write_array(
        s,
        "uns/title",
        &scalar(DType::String),
        &enc("string", "0.2.0"),
        title,
        &[1],
    );
    let n: ArrayRef = Arc::new(Int64Array::from(vec![42]));
    write_array(
        s,
        "uns/n",
        &scalar(DType::Int64),
        &enc("numeric-scalar", "0.2.0"),
        n,
        &[1],
    );
    let zero: ArrayRef = Arc::new(Float64Array::from(vec![0.0]));
    write_array(
        s,
        "uns/zero",
        &scalar(DType::Float64),
        &enc("numeric-scalar", "0.2.0"),
        zero,
        &[1],
    );
    for dict in ["layers", "obsp", "varm", "varp"] {
        s.group(dict, &enc("dict", "0.1.0")).must();
    }
    sink.finish().unwrap_or_else(|e| panic!("{e}"));
}

/// Checks the tree with annql's own reader.
fn check_with_store(out: &Path) {
    let store = AnnDataStore::open(out).unwrap_or_else(|e| panic!("{e}"));
    assert!(store.consolidated(), "consolidated metadata is read");
    let stats = Arc::new(ReadStats::default());
    let obs = store.element("obs").must();
    let column = |name: &str| {
        store
            .read_column(obs.child(name).must(), 0..N, &stats)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let s = column("s");
    let s = s.as_string::<i32>();
    assert_eq!(
        s.iter().map(|v| v.must().to_string()).collect::<Vec<_>>(),
        (0..N).map(cell_string).collect::<Vec<_>>()
    );
    let ni = column("ni");
    let ni = ni.as_primitive::<Int64Type>();
    for i in 0..N as usize {
        assert_eq!(ni.is_null(i), i.is_multiple_of(4), "ni[{i}] null");
        if !ni.is_null(i) {
            assert_eq!(ni.value(i), i as i64 * 10);
        }
    }
    let b = column("b");
    assert_eq!(
        b.as_boolean().iter().collect::<Vec<_>>(),
        (0..N)
            .map(|i| Some(i.is_multiple_of(2)))
            .collect::<Vec<_>>()
    );
    let cat = column("cat");
    let cat =
        annql_store::arrow::compute::cast(&cat, &annql_store::arrow::datatypes::DataType::Utf8)
            .must();
    let want: Vec<_> = (0..N)
        .map(|i| Some(["a", "b", "c"][(i % 3) as usize]))
        .collect();
    assert_eq!(cat.as_string::<i32>().iter().collect::<Vec<_>>(), want);

    let x = store
        .read_sparse("X", 0..N, &stats)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut got = vec![];
    for i in 0..N as usize {
        let (lo, hi) = (x.indptr[i] as usize, x.indptr[i + 1] as usize);
        let vals = x.data.as_primitive::<Float32Type>();
        got.push(
            (lo..hi)
                .map(|k| (x.indices[k] as i32, vals.value(k)))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(got, (0..N).map(x_row).collect::<Vec<_>>());

    let pca = store.read_dense_rows("obsm/pca", 0..N, &stats).must();
    assert_eq!(pca.ncols, 3);
    let want: Vec<f64> = (0..N * 3)
        .map(|e| (e / 3) as f64 + (e % 3) as f64 / 10.0)
        .collect();
    assert_eq!(
        pca.values.as_primitive::<Float64Type>().values().to_vec(),
        want
    );
    let title = store.read_array("uns/title", 0..1, &stats).must();
    assert_eq!(title.as_string::<i32>().value(0), "hello, zarr ✓");
    let n = store.read_array("uns/n", 0..1, &stats).must();
    assert_eq!(n.as_primitive::<Int64Type>().value(0), 42);
}

/// What the real anndata reads must equal what was written (same formulas as the Rust side).
const CHECK_PY: &str = r#"
import sys, warnings
warnings.simplefilter("ignore")
import anndata as ad, numpy as np, pandas as pd
a = ad.read_zarr(sys.argv[1])
n, g = 50, 7
assert a.shape == (n, g), a.shape
assert list(a.obs_names) == [f"cell{i}" for i in range(n)]
assert list(a.var_names) == [f"gene{j}" for j in range(g)]
assert list(a.obs.columns) == ["cat", "s", "ni", "b"], list(a.obs.columns)
cat = a.obs["cat"]
assert isinstance(cat.dtype, pd.CategoricalDtype) and not cat.cat.ordered
assert list(cat.cat.categories) == ["a", "b", "c"]
assert list(cat) == [["a", "b", "c"][i % 3] for i in range(n)]
assert list(a.obs["s"]) == ["" if i % 7 == 0 else f"s{i}é" for i in range(n)]
ni = a.obs["ni"]
assert str(ni.dtype) == "Int64", ni.dtype
assert [None if pd.isna(v) else int(v) for v in ni] == [None if i % 4 == 0 else i * 10 for i in range(n)]
assert a.obs["b"].dtype == bool and list(a.obs["b"]) == [i % 2 == 0 for i in range(n)]
import scipy.sparse as sp
assert sp.issparse(a.X) and a.X.format == "csr" and a.X.dtype == np.float32, (type(a.X), a.X.dtype)
want = np.zeros((n, g), dtype=np.float32)
for i in range(n):
    for j in range(g):
        if (i + j) % 3 == 0:
            want[i, j] = 7 * i + j + 0.5
assert (a.X.toarray() == want).all()
assert a.X.indices.dtype == np.int32 and a.X.indptr.dtype == np.int64
pca = a.obsm["pca"]
assert pca.dtype == np.float64 and pca.shape == (n, 3)
assert (pca == np.array([[i + k / 10 for k in range(3)] for i in range(n)])).all()
assert a.uns["title"] == "hello, zarr ✓", a.uns["title"]
assert a.uns["n"] == 42 and np.asarray(a.uns["n"]).dtype == np.int64
assert a.uns["zero"] == 0.0 and np.asarray(a.uns["zero"]).dtype == np.float64
print("ok")
"#;

fn python() -> PathBuf {
    let path = std::env::var_os("ANNQL_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "no Python environment at {} (run `bash .ci/deps`, or set ANNQL_PYTHON)",
        path.display()
    );
    path
}

fn check_with_anndata(out: &Path) {
    let run = Command::new(python())
        .arg("-c")
        .arg(CHECK_PY)
        .arg(out)
        .output()
        .must();
    assert!(
        run.status.success() && String::from_utf8_lossy(&run.stdout).trim() == "ok",
        "anndata read of {}:\n{}{}",
        out.display(),
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}

fn round_trip(format: Format, name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().must();
    let out = dir.path().join(name);
    write_tree(&format, &out, &small_chunks());
    check_with_store(&out);
    check_with_anndata(&out);
    dir
}

#[test]
fn v2_round_trip() {
    let dir = round_trip(Format::ZarrV2, "v2.zarr");
    let out = dir.path().join("v2.zarr");
    // The layout zarr-python gives v2: `.` separator, blosc, `|O` + vlen-utf8.
    let zarray: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("obs/s/.zarray")).must()).must();
    assert_eq!(zarray["dtype"], "|O");
    assert_eq!(zarray["filters"], json!([{ "id": "vlen-utf8" }]));
    assert_eq!(zarray["compressor"]["id"], "blosc");
    assert_eq!(zarray["chunks"], json!([8]));
    assert!(
        out.join("obsm/pca/24.0").exists(),
        "2-row chunks of pca, `.`-separated"
    );
    assert!(out.join("uns/title/0").exists(), "0-d chunk key");
    assert!(out.join(".zmetadata").exists());
}

#[test]
fn v3_round_trip() {
    let dir = round_trip(Format::ZarrV3 { sharded: false }, "v3.zarr");
    let out = dir.path().join("v3.zarr");
    assert!(out.join("obsm/pca/c/24/0").exists());
    assert!(out.join("uns/title/c").exists());
    let root: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("zarr.json")).must()).must();
    assert_eq!(
        root["consolidated_metadata"]["metadata"]["X/data"]["shape"],
        json!([x_nnz()])
    );
}

#[test]
fn v3_sharded_round_trip() {
    let dir = round_trip(Format::ZarrV3 { sharded: true }, "v3s.zarr");
    let out = dir.path().join("v3s.zarr");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("obs/s/zarr.json")).must()).must();
    assert_eq!(
        doc["chunk_grid"]["configuration"]["chunk_shape"],
        json!([24])
    );
    let sharding = &doc["codecs"][0];
    assert_eq!(sharding["name"], "sharding_indexed");
    assert_eq!(sharding["configuration"]["chunk_shape"], json!([8]));
    assert_eq!(sharding["configuration"]["codecs"][0]["name"], "vlen-utf8");
    // 50 strings in shards of 24: three shard objects, no more.
    let shards: Vec<_> = std::fs::read_dir(out.join("obs/s/c")).must().collect();
    assert_eq!(shards.len(), 3);
}

fn x_nnz() -> u64 {
    (0..N).map(|i| x_row(i).len() as u64).sum()
}

#[test]
fn default_chunking_gives_one_chunk_to_short_arrays() {
    let dir = tempfile::tempdir().must();
    let out = dir.path().join("d.zarr");
    write_tree(
        &Format::ZarrV3 { sharded: true },
        &out,
        &Chunking::default(),
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("obs/_index/zarr.json")).must()).must();
    assert_eq!(
        doc["chunk_grid"]["configuration"]["chunk_shape"],
        json!([N])
    );
    check_with_anndata(&out);
}

#[test]
fn refuses_bad_calls_by_name() {
    let dir = tempfile::tempdir().must();
    let out = dir.path().join("bad.zarr");
    let mut sink = create(&Format::ZarrV3 { sharded: true }, &out, &small_chunks()).must();
    // A child before its parent.
    let err = sink.group("obs", &Attrs::new()).err().must();
    assert!(err.to_string().contains("before its parent group"), "{err}");
    sink.group("", &Attrs::new()).must();
    let err = sink.group("zarr.json", &Attrs::new()).err().must();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    let other = spec(DType::Other("complex128".into()), vec![], None);
    let err = sink.open_array("z", &other, &Attrs::new()).err().must();
    assert!(
        err.to_string().contains("'z'") && err.to_string().contains("complex128"),
        "{err}"
    );
    // A block of the wrong type, a block with nulls, a block that is not whole rows.
    let id = sink
        .open_array("m", &spec(DType::Float64, vec![2], None), &Attrs::new())
        .must();
    let wrong: ArrayRef = Arc::new(Int32Array::from(vec![1, 2]));
    let err = sink.append(id, &wrong).err().must();
    assert!(
        err.to_string().contains("'m'") && err.to_string().contains("Int32"),
        "{err}"
    );
    let nulls: ArrayRef = Arc::new(Float64Array::from(vec![Some(1.0), None]));
    assert!(
        sink.append(id, &nulls)
            .err()
            .must()
            .to_string()
            .contains("null")
    );
    let odd: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0]));
    assert!(
        sink.append(id, &odd)
            .err()
            .must()
            .to_string()
            .contains("whole rows")
    );
    // An array left open is reported at finish; nothing claims success.
    let err = sink.finish().err().must();
    assert!(err.to_string().contains("'m' was never closed"), "{err}");
    // The directory exists: a second sink refuses it with the OS error.
    let err = create(&Format::ZarrV2, &out, &small_chunks()).err().must();
    assert!(
        matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
        "{err}"
    );
}

#[test]
fn a_file_in_the_way_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().must();
    let out = dir.path().join("f.zarr");
    let mut sink = create(&Format::ZarrV3 { sharded: true }, &out, &small_chunks()).must();
    sink.group("", &Attrs::new()).must();
    // A regular file where the array's directory goes: even root cannot write below it.
    std::fs::write(out.join("col"), "in the way").must();
    let id = sink
        .open_array("col", &spec(DType::Float64, vec![], None), &Attrs::new())
        .must();
    let block: ArrayRef = Arc::new(Float64Array::from_iter_values((0..30).map(f64::from)));
    match sink.append(id, &block).err().must() {
        Error::Io { path, source } => {
            assert!(path.starts_with(out.join("col")), "{}", path.display());
            assert!(source.raw_os_error().is_some(), "the OS error: {source:?}");
        }
        other => panic!("expected an I/O error, got {other}"),
    }
}

/// Peak resident memory of this process, in MiB (Linux).
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").must();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).must();
    line.split_whitespace().nth(1).must().parse::<u64>().must() / 1024
}

/// A measurement, not a check: 20M float32 values appended in blocks of 1M (v3 sharded, default
/// chunking), with the time and peak memory (`cargo test -p annql-write --release -- --ignored
/// --nocapture large_array`).
#[test]
#[ignore]
#[allow(clippy::print_stdout)]
fn large_array_throughput_and_memory() {
    let dir = tempfile::tempdir().must();
    let out = dir.path().join("big.zarr");
    let before = peak_rss_mib();
    let start = std::time::Instant::now();
    let mut sink = create(
        &Format::ZarrV3 { sharded: true },
        &out,
        &Chunking::default(),
    )
    .must();
    sink.group("", &enc("anndata", "0.1.0")).must();
    let id = sink
        .open_array("x", &spec(DType::Float32, vec![], None), &Attrs::new())
        .must();
    for b in 0..20 {
        let block: ArrayRef = Arc::new(Float32Array::from_iter_values(
            (0..1 << 20).map(|i| ((b << 20) + i) as f32 * 0.001),
        ));
        sink.append(id, &block).must();
    }
    sink.close_array(id).must();
    sink.finish().must();
    let took = start.elapsed();
    println!(
        "20M f32: {:.2}s, {:.0} MB/s, peak RSS {} MiB (was {before} MiB)",
        took.as_secs_f64(),
        80.0 / took.as_secs_f64(),
        peak_rss_mib()
    );
    let store = AnnDataStore::open(&out).must();
    let stats = Arc::new(ReadStats::default());
    let tail = store.read_array("x", 20_971_510..20_971_520, &stats).must();
    assert_eq!(
        tail.as_primitive::<Float32Type>().value(9),
        20_971_519.0 * 0.001
    );
}
