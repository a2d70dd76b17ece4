//! The sink writes an AnnData-shaped tree; annql's reader and the real anndata (with h5py for
//! attribute types) read it back equal.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use annql_store::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float32Array, Float64Array, Int8Array, Int32Array,
    Int64Array, StringArray,
};
use annql_store::arrow::datatypes::{Float32Type, Float64Type, Int64Type};
use annql_store::{AnnDataStore, DType, Encoding};
use serde_json::{Value, json};

use super::*;

const N_OBS: usize = 10;
const N_VARS: usize = 6;

pub(super) fn attrs(v: Value) -> Attrs {
    v.as_object().cloned().unwrap_or_default()
}

pub(super) fn enc(t: &str, v: &str) -> Value {
    json!({"encoding-type": t, "encoding-version": v})
}

pub(super) fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    base
}

pub(super) fn spec(dtype: DType, inner: &[u64], scalar: bool) -> ArraySpec {
    ArraySpec {
        dtype,
        inner: inner.to_vec(),
        scalar,
        len_hint: None,
    }
}

/// Writes a whole array in blocks of `block` rows.
fn array(
    sink: &mut dyn Sink,
    path: &str,
    spec: &ArraySpec,
    attrs_: Value,
    values: ArrayRef,
    block: usize,
) {
    let id = sink
        .open_array(path, spec, &attrs(attrs_))
        .unwrap_or_else(|e| panic!("{e}"));
    let row_len: usize = spec.inner.iter().map(|&d| d as usize).product();
    let step = block * row_len.max(1);
    let mut start = 0;
    while start < values.len() {
        let len = step.min(values.len() - start);
        sink.append(id, &values.slice(start, len))
            .unwrap_or_else(|e| panic!("{e}"));
        start += len;
    }
    sink.close_array(id).unwrap_or_else(|e| panic!("{e}"));
}

fn strings(v: &[String]) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v))
}

/// The sparse matrix X: entry (r, c) is present when (r + 2c) % 3 == 0, valued r·10 + c.
fn x_dense() -> Vec<Vec<f32>> {
    (0..N_OBS)
        .map(|r| {
            (0..N_VARS)
                .map(|c| {
                    if (r + 2 * c) % 3 == 0 {
                        (r * 10 + c) as f32
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect()
}

/// CSR (or, transposed, CSC) parts of a dense matrix.
fn compress<T: Copy + PartialEq + Default>(rows: &[Vec<T>]) -> (Vec<T>, Vec<i32>, Vec<i64>) {
    let (mut data, mut indices, mut indptr) = (Vec::new(), Vec::new(), vec![0i64]);
    for row in rows {
        for (c, &v) in row.iter().enumerate() {
            if v != T::default() {
                data.push(v);
                indices.push(c as i32);
            }
        }
        indptr.push(data.len() as i64);
    }
    (data, indices, indptr)
}

fn obs_names() -> Vec<String> {
    (0..N_OBS).map(|i| format!("cell{i}")).collect()
}

fn var_names() -> Vec<String> {
    (0..N_VARS).map(|i| format!("gene{i}")).collect()
}

/// Writes the test AnnData through an h5ad sink with 4-element chunks (so X streams over
/// several chunks and a partial tail).
fn write_tree(path: &Path) {
    let chunking = Chunking {
        chunk_len: 4,
        target_chunk_elements: 6,
        ..Chunking::default()
    };
    let mut sink: Box<dyn Sink> =
        Box::new(H5adSink::create(path, &chunking).unwrap_or_else(|e| panic!("{e}")));
    let s = sink.as_mut();
    s.group("", &attrs(enc("anndata", "0.1.0")))
        .unwrap_or_else(|e| panic!("{e}"));
    let columns = ["cat", "ocat", "s", "ni", "nb", "b"];
    s.group(
        "obs",
        &attrs(with(
            enc("dataframe", "0.2.0"),
            json!({"_index": "_index", "column-order": columns}),
        )),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let string_spec = spec(DType::String, &[], false);
    let sa = enc("string-array", "0.2.0");
    let arr = enc("array", "0.2.0");
    array(
        s,
        "obs/_index",
        &string_spec,
        sa.clone(),
        strings(&obs_names()),
        3,
    );
    for (name, ordered, cats) in [
        ("cat", false, vec!["a", "b", "c"]),
        ("ocat", true, vec!["lo", "hi"]),
    ] {
        let g = format!("obs/{name}");
        let a = with(enc("categorical", "0.2.0"), json!({"ordered": ordered}));
        s.group(&g, &attrs(a)).unwrap_or_else(|e| panic!("{e}"));
        let cats: Vec<String> = cats.iter().map(|c| c.to_string()).collect();
        let n = cats.len();
        array(
            s,
            &format!("{g}/categories"),
            &string_spec,
            sa.clone(),
            strings(&cats),
            8,
        );
        let codes: Vec<i8> = (0..N_OBS)
            .map(|i| if i == 4 { -1 } else { (i % n) as i8 })
            .collect();
        let codes: ArrayRef = Arc::new(Int8Array::from(codes));
        array(
            s,
            &format!("{g}/codes"),
            &spec(DType::Int8, &[], false),
            arr.clone(),
            codes,
            3,
        );
    }
    let svals: Vec<String> = (0..N_OBS).map(|i| format!("s{i}·é")).collect();
    array(s, "obs/s", &string_spec, sa.clone(), strings(&svals), 4);
    let bool_spec = spec(DType::Bool, &[], false);
    let mask: ArrayRef = Arc::new(BooleanArray::from_iter(
        (0..N_OBS).map(|i| Some(i % 4 == 1)),
    ));
    s.group("obs/ni", &attrs(enc("nullable-integer", "0.1.0")))
        .unwrap_or_else(|e| panic!("{e}"));
    let ni: ArrayRef = Arc::new(Int64Array::from_iter_values(
        (0..N_OBS).map(|i| i as i64 * 7),
    ));
    array(
        s,
        "obs/ni/values",
        &spec(DType::Int64, &[], false),
        arr.clone(),
        ni,
        3,
    );
    array(s, "obs/ni/mask", &bool_spec, arr.clone(), mask.clone(), 3);
    s.group("obs/nb", &attrs(enc("nullable-boolean", "0.1.0")))
        .unwrap_or_else(|e| panic!("{e}"));
    let nb: ArrayRef = Arc::new(BooleanArray::from_iter(
        (0..N_OBS).map(|i| Some(i % 3 == 0)),
    ));
    array(s, "obs/nb/values", &bool_spec, arr.clone(), nb, 5);
    array(s, "obs/nb/mask", &bool_spec, arr.clone(), mask, 5);
    let b: ArrayRef = Arc::new(BooleanArray::from_iter(
        (0..N_OBS).map(|i| Some(i % 2 == 0)),
    ));
    array(s, "obs/b", &bool_spec, arr.clone(), b, 4);

    let var = with(
        enc("dataframe", "0.2.0"),
        json!({"_index": "_index", "column-order": []}),
    );
    s.group("var", &attrs(var))
        .unwrap_or_else(|e| panic!("{e}"));
    array(
        s,
        "var/_index",
        &string_spec,
        sa.clone(),
        strings(&var_names()),
        100,
    );

    // X: CSR float32, appended in blocks of 3 values over chunks of 4.
    let shape = json!({"shape": [N_OBS, N_VARS]});
    s.group("X", &attrs(with(enc("csr_matrix", "0.1.0"), shape.clone())))
        .unwrap_or_else(|e| panic!("{e}"));
    let (data, indices, indptr) = compress(&x_dense());
    let data: ArrayRef = Arc::new(Float32Array::from(data));
    let (d, i, p) = (
        s.open_array("X/data", &spec(DType::Float32, &[], false), &Attrs::new())
            .unwrap_or_else(|e| panic!("{e}")),
        s.open_array("X/indices", &spec(DType::Int32, &[], false), &Attrs::new())
            .unwrap_or_else(|e| panic!("{e}")),
        s.open_array("X/indptr", &spec(DType::Int64, &[], false), &Attrs::new())
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let indices: ArrayRef = Arc::new(Int32Array::from(indices));
    for start in (0..data.len()).step_by(3) {
        let len = 3.min(data.len() - start);
        s.append(d, &data.slice(start, len))
            .unwrap_or_else(|e| panic!("{e}"));
        s.append(i, &indices.slice(start, len))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    s.append(p, &(Arc::new(Int64Array::from(indptr)) as ArrayRef))
        .unwrap_or_else(|e| panic!("{e}"));
    for id in [d, i, p] {
        s.close_array(id).unwrap_or_else(|e| panic!("{e}"));
    }

    // layers/L: the transpose of X as CSC float64.
    s.group("layers", &attrs(enc("dict", "0.1.0")))
        .unwrap_or_else(|e| panic!("{e}"));
    s.group("layers/L", &attrs(with(enc("csc_matrix", "0.1.0"), shape)))
        .unwrap_or_else(|e| panic!("{e}"));
    let columns: Vec<Vec<f64>> = (0..N_VARS)
        .map(|c| x_dense().iter().map(|r| f64::from(r[c])).collect())
        .collect();
    let (data, indices, indptr) = compress(&columns);
    let f64_spec = spec(DType::Float64, &[], false);
    array(
        s,
        "layers/L/data",
        &f64_spec,
        json!({}),
        Arc::new(Float64Array::from(data)),
        5,
    );
    let indices: ArrayRef = Arc::new(Int32Array::from(indices));
    array(
        s,
        "layers/L/indices",
        &spec(DType::Int32, &[], false),
        json!({}),
        indices,
        5,
    );
    let indptr: Vec<i32> = indptr.iter().map(|&p| p as i32).collect();
    let indptr: ArrayRef = Arc::new(Int32Array::from(indptr));
    array(
        s,
        "layers/L/indptr",
        &spec(DType::Int32, &[], false),
        json!({}),
        indptr,
        2,
    );

    // layers/D: X dense as int32, streamed a row per chunk and reshaped to 2-D.
    let dense: ArrayRef = Arc::new(Int32Array::from_iter_values(
        x_dense().into_iter().flatten().map(|v| v as i32),
    ));
    array(
        s,
        "layers/D",
        &spec(DType::Int32, &[N_VARS as u64], false),
        arr.clone(),
        dense,
        4,
    );

    // obsm/pca: dense (n_obs, 2) float64, streamed 3 rows per chunk and reshaped to 2-D.
    s.group("obsm", &attrs(enc("dict", "0.1.0")))
        .unwrap_or_else(|e| panic!("{e}"));
    let pca: ArrayRef = Arc::new(Float64Array::from_iter_values(
        (0..N_OBS * 2).map(|k| k as f64 / 2.0),
    ));
    array(
        s,
        "obsm/pca",
        &spec(DType::Float64, &[2], false),
        arr.clone(),
        pca,
        3,
    );
    for g in ["obsp", "varm", "varp"] {
        s.group(g, &attrs(enc("dict", "0.1.0")))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    // uns: a string scalar, a numeric scalar, a string array, a nested dict.
    s.group("uns", &attrs(enc("dict", "0.1.0")))
        .unwrap_or_else(|e| panic!("{e}"));
    let hello = strings(&["hello".to_string()]);
    array(
        s,
        "uns/s",
        &spec(DType::String, &[], true),
        enc("string", "0.2.0"),
        hello,
        1,
    );
    let n: ArrayRef = Arc::new(Int64Array::from(vec![3]));
    let scalar = enc("numeric-scalar", "0.2.0");
    array(
        s,
        "uns/n",
        &spec(DType::Int64, &[], true),
        scalar.clone(),
        n,
        1,
    );
    let pq = strings(&["p".to_string(), "q".to_string()]);
    array(s, "uns/arr", &string_spec, sa, pq, 1);
    s.group("uns/d", &attrs(enc("dict", "0.1.0")))
        .unwrap_or_else(|e| panic!("{e}"));
    let x: ArrayRef = Arc::new(Float64Array::from(vec![1.5]));
    array(s, "uns/d/x", &spec(DType::Float64, &[], true), scalar, x, 1);
    sink.finish().unwrap_or_else(|e| panic!("{e}"));
}

fn python() -> PathBuf {
    let path = std::env::var_os("ANNQL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"));
    assert!(
        path.exists(),
        "no Python environment at {} (run `bash .ci/deps`, or set ANNQL_PYTHON)",
        path.display()
    );
    path
}

#[test]
fn annql_reads_back_what_the_sink_wrote() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("out.h5ad");
    write_tree(&path);
    let store = AnnDataStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let stats = store.totals();
    let obs = store.element("obs").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(obs.encoding, Encoding::DataFrame);
    let index = store
        .read_array("obs/_index", 0..N_OBS as u64, stats)
        .unwrap_or_else(|e| panic!("{e}"));
    let index: Vec<&str> = index.as_string::<i32>().iter().flatten().collect();
    assert_eq!(index, obs_names());
    let ocat = store.element("obs/ocat").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ocat.encoding, Encoding::Categorical);
    assert_eq!(ocat.attrs.get("ordered"), Some(&json!(true)));
    assert_eq!(
        store
            .element("obs/cat")
            .unwrap_or_else(|e| panic!("{e}"))
            .attrs
            .get("ordered"),
        Some(&json!(false))
    );
    let cat = store.read_column(
        store.element("obs/cat").unwrap_or_else(|e| panic!("{e}")),
        0..N_OBS as u64,
        stats,
    );
    let cat = cat.unwrap_or_else(|e| panic!("{e}"));
    let cat = cat.as_any_dictionary();
    assert_eq!(cat.keys().null_count(), 1, "code -1 is a null");
    let ni = store
        .read_column(
            store.element("obs/ni").unwrap_or_else(|e| panic!("{e}")),
            0..N_OBS as u64,
            stats,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let ni = ni.as_primitive::<Int64Type>();
    assert!(ni.is_null(1) && ni.is_valid(0));
    assert_eq!(ni.value(2), 14);
    let b = store
        .read_array("obs/b", 0..N_OBS as u64, stats)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.as_boolean().iter().flatten().filter(|&v| v).count(), 5);
    // X as CSR: every row equal.
    let block = store
        .read_sparse("X", 0..N_OBS as u64, stats)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        block.nnz(),
        x_dense().iter().flatten().filter(|&&v| v != 0.0).count()
    );
    let data = store
        .read_array("X/data", 0..block.nnz() as u64, stats)
        .unwrap_or_else(|e| panic!("{e}"));
    let expected: Vec<f32> = x_dense()
        .into_iter()
        .flatten()
        .filter(|&v| v != 0.0)
        .collect();
    assert_eq!(
        data.as_primitive::<Float32Type>().values().to_vec(),
        expected
    );
    let pca = store
        .read_dense_rows("obsm/pca", 2..4, stats)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pca.ncols, 2);
    assert_eq!(
        pca.values.as_primitive::<Float64Type>().values().to_vec(),
        [2.0, 2.5, 3.0, 3.5]
    );
    let s = store
        .read_array("uns/s", 0..1, stats)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.as_string::<i32>().value(0), "hello");
    let dense = store.read_dense_rows("layers/D", 3..5, stats);
    let dense = dense.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dense.ncols, N_VARS as u64);
    let want: Vec<i32> = x_dense()[3..5]
        .iter()
        .flatten()
        .map(|&v| v as i32)
        .collect();
    let got = dense
        .values
        .as_primitive::<annql_store::arrow::datatypes::Int32Type>();
    assert_eq!(got.values().to_vec(), want);
}

#[test]
fn anndata_reads_back_what_the_sink_wrote() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("out.h5ad");
    write_tree(&path);
    let expected = json!({
        "obs_names": obs_names(),
        "var_names": var_names(),
        "X": x_dense(),
    });
    let script = include_str!("check_anndata.py");
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(&path)
        .arg(expected.to_string())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "anndata check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn bad_input_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("out.h5ad");
    // An existing output is not overwritten.
    std::fs::write(&path, b"x").unwrap_or_else(|e| panic!("{e}"));
    let err = H5adSink::create(&path, &Chunking::default())
        .err()
        .unwrap_or_else(|| panic!("expected an error"));
    assert!(matches!(err, Error::Exists(_)), "{err}");
    std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
    // A directory that does not exist is an OS error naming the path.
    let missing = dir.path().join("no/such/dir/out.h5ad");
    let err = H5adSink::create(&missing, &Chunking::default())
        .err()
        .unwrap_or_else(|| panic!("expected an error"));
    assert!(
        matches!(&err, Error::Io { path, .. } if path == &missing),
        "{err}"
    );

    let mut sink = H5adSink::create(&path, &Chunking::default()).unwrap_or_else(|e| panic!("{e}"));
    // An attribute h5py cannot store.
    let err = sink
        .group("obs", &attrs(json!({"x": {"a": 1}})))
        .err()
        .unwrap_or_else(|| panic!("expected an error"));
    assert!(
        matches!(&err, Error::Refused { element, .. } if element == "obs"),
        "{err}"
    );
    sink.group("uns", &attrs(enc("dict", "0.1.0")))
        .unwrap_or_else(|e| panic!("{e}"));
    // A bool attribute other than a group's `ordered` (hdf5-pure cannot write an enum one).
    let flag = sink.group("uns/g", &attrs(json!({"flag": true})));
    assert!(matches!(&flag, Err(Error::Refused { element, .. }) if element == "uns/g"));
    let ordered = attrs(json!({"ordered": true}));
    let on_dataset = sink.open_array("uns/o", &spec(DType::Int8, &[], false), &ordered);
    assert!(matches!(&on_dataset, Err(Error::Refused { element, .. }) if element == "uns/o"));
    // A 0-d array given two values is a bug of the caller.
    let id = sink.open_array("uns/one", &spec(DType::Int64, &[], true), &Attrs::new());
    let id = id.unwrap_or_else(|e| panic!("{e}"));
    let two: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
    assert!(matches!(sink.append(id, &two), Err(Error::Internal(_))));
    // A type anndata has no encoding for.
    let other = spec(DType::Other("complex128".into()), &[], false);
    let err = sink
        .open_array("uns/z", &other, &Attrs::new())
        .err()
        .unwrap_or_else(|| panic!("expected an error"));
    assert!(
        matches!(&err, Error::Refused { element, .. } if element == "uns/z"),
        "{err}"
    );
    // Nulls in a plain array.
    let id = sink
        .open_array("uns/v", &spec(DType::Int32, &[], false), &Attrs::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let nulls: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), None]));
    let err = sink
        .append(id, &nulls)
        .err()
        .unwrap_or_else(|| panic!("expected an error"));
    assert!(
        matches!(&err, Error::Refused { element, .. } if element == "uns/v"),
        "{err}"
    );
    // A block that does not fill whole rows, an array without its parent group, and a closed
    // array are bugs of the caller.
    sink.group("obsm", &attrs(enc("dict", "0.1.0")))
        .unwrap_or_else(|e| panic!("{e}"));
    let id = sink
        .open_array("obsm/m", &spec(DType::Int32, &[2], false), &Attrs::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let odd: ArrayRef = Arc::new(Int32Array::from(vec![1, 2, 3]));
    assert!(matches!(sink.append(id, &odd), Err(Error::Internal(_))));
    let err = sink.open_array("nogroup/a", &spec(DType::Int32, &[], false), &Attrs::new());
    assert!(matches!(err, Err(Error::Internal(_))));
    sink.close_array(id).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(sink.close_array(id), Err(Error::Internal(_))));
    // Finishing with an array still open is a bug too, reported rather than dropped.
    assert!(matches!(Box::new(sink).finish(), Err(Error::Internal(_))));
}

/// libhdf5 refuses a chunk dimension of 65536 elements or more as hdf5-pure 0.47 encodes it;
/// the sink's chunks stay below that whatever the chunking asks, and h5py reads them.
#[test]
fn large_chunk_lengths_stay_readable_by_h5py() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut paths = Vec::new();
    for chunk_len in [1u64 << 16, 1 << 20] {
        let path = dir.path().join(format!("c{chunk_len}.h5ad"));
        let chunking = Chunking {
            chunk_len,
            ..Chunking::default()
        };
        let mut sink: Box<dyn Sink> =
            Box::new(H5adSink::create(&path, &chunking).unwrap_or_else(|e| panic!("{e}")));
        let id = sink
            .open_array("d", &spec(DType::Float32, &[], false), &Attrs::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let n = 200_001u32;
        let values: ArrayRef = Arc::new(Float32Array::from_iter_values((0..n).map(|k| k as f32)));
        sink.append(id, &values).unwrap_or_else(|e| panic!("{e}"));
        sink.close_array(id).unwrap_or_else(|e| panic!("{e}"));
        // Rows longer than the largest 1-D chunk: one row per chunk.
        let wide = spec(DType::Float32, &[70_000], false);
        let id = sink.open_array("m", &wide, &Attrs::new());
        let id = id.unwrap_or_else(|e| panic!("{e}"));
        let values: ArrayRef = Arc::new(Float32Array::from_iter_values(
            (0..210_000u32).map(|k| k as f32),
        ));
        sink.append(id, &values).unwrap_or_else(|e| panic!("{e}"));
        sink.close_array(id).unwrap_or_else(|e| panic!("{e}"));
        sink.finish().unwrap_or_else(|e| panic!("{e}"));
        paths.push(path);
    }
    let script = "import sys, h5py, numpy as np\n\
        for p in sys.argv[1:]:\n\
        \x20   d = h5py.File(p)['d']\n\
        \x20   assert d.chunks[0] < 65536 and d.maxshape == (None,), d.chunks\n\
        \x20   assert (d[:] == np.arange(200_001, dtype=np.float32)).all()\n\
        \x20   m = h5py.File(p)['m']\n\
        \x20   assert m.shape == (3, 70_000) and m.chunks == (1, 70_000), (m.shape, m.chunks)\n\
        \x20   assert (m[:].ravel() == np.arange(210_000, dtype=np.float32)).all()\n\
        print('ok')";
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(&paths)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "h5py check failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A dataframe with more columns than a compact HDF5 group holds links (8), a dict with more
/// entries than that, and arrays of length 0 (no genes, an X without entries).
#[test]
fn wide_groups_and_empty_arrays_read_back() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("wide.h5ad");
    let mut sink: Box<dyn Sink> =
        Box::new(H5adSink::create(&path, &Chunking::default()).unwrap_or_else(|e| panic!("{e}")));
    let s = sink.as_mut();
    let ok = |r: Result<()>| r.unwrap_or_else(|e| panic!("{e}"));
    ok(s.group("", &attrs(enc("anndata", "0.1.0"))));
    let columns: Vec<String> = (0..30).map(|c| format!("c{c}")).collect();
    let obs = json!({"_index": "_index", "column-order": columns});
    ok(s.group("obs", &attrs(with(enc("dataframe", "0.2.0"), obs))));
    let sa = enc("string-array", "0.2.0");
    let names: Vec<String> = (0..3).map(|i| format!("o{i}")).collect();
    array(
        s,
        "obs/_index",
        &spec(DType::String, &[], false),
        sa.clone(),
        strings(&names),
        2,
    );
    for (c, name) in columns.iter().enumerate() {
        let v: ArrayRef = Arc::new(Int32Array::from_iter_values(
            (0..3).map(|i| i * 100 + c as i32),
        ));
        let a = enc("array", "0.2.0");
        array(
            s,
            &format!("obs/{name}"),
            &spec(DType::Int32, &[], false),
            a,
            v,
            2,
        );
    }
    let var = with(
        enc("dataframe", "0.2.0"),
        json!({"_index": "_index", "column-order": []}),
    );
    ok(s.group("var", &attrs(var)));
    array(
        s,
        "var/_index",
        &spec(DType::String, &[], false),
        sa,
        strings(&[]),
        1,
    );
    ok(s.group(
        "X",
        &attrs(with(enc("csr_matrix", "0.1.0"), json!({"shape": [3, 0]}))),
    ));
    let empty: ArrayRef = Arc::new(Float32Array::from(Vec::<f32>::new()));
    array(
        s,
        "X/data",
        &spec(DType::Float32, &[], false),
        json!({}),
        empty,
        1,
    );
    let empty: ArrayRef = Arc::new(Int32Array::from(Vec::<i32>::new()));
    array(
        s,
        "X/indices",
        &spec(DType::Int32, &[], false),
        json!({}),
        empty,
        1,
    );
    let indptr: ArrayRef = Arc::new(Int64Array::from(vec![0i64; 4]));
    array(
        s,
        "X/indptr",
        &spec(DType::Int64, &[], false),
        json!({}),
        indptr,
        1,
    );
    ok(s.group("uns", &attrs(enc("dict", "0.1.0"))));
    for k in 0..12 {
        let v: ArrayRef = Arc::new(Int64Array::from(vec![k]));
        let a = enc("numeric-scalar", "0.2.0");
        array(
            s,
            &format!("uns/k{k}"),
            &spec(DType::Int64, &[], true),
            a,
            v,
            1,
        );
    }
    sink.finish().unwrap_or_else(|e| panic!("{e}"));
    let script = "import sys, anndata as ad\n\
        a = ad.read_h5ad(sys.argv[1])\n\
        assert a.shape == (3, 0), a.shape\n\
        assert list(a.obs.columns) == [f'c{c}' for c in range(30)]\n\
        assert all(list(a.obs[f'c{c}']) == [i * 100 + c for i in range(3)] for c in range(30))\n\
        assert a.X.nnz == 0 and a.X.shape == (3, 0)\n\
        assert {k: a.uns[k] for k in a.uns} == {f'k{k}': k for k in range(12)}\n\
        print('ok')";
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output();
    let out = out.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "anndata check failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = AnnDataStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let c29 = store.read_array("obs/c29", 0..3, store.totals());
    let c29 = c29.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c29.as_primitive::<annql_store::arrow::datatypes::Int32Type>()
            .values()
            .to_vec(),
        [29, 129, 229]
    );
}
