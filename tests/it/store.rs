//! The store reader against files written by the real anndata (fixtures) and by many tools (corpus).

use std::path::Path;
use std::sync::Arc;

use annql::store::arrow::array::{Array, ArrayRef, AsArray};
use annql::store::arrow::datatypes::{DataType, Float32Type, Float64Type, Int64Type};
use annql::store::{AnnDataStore, Encoding, Error, ReadStats};
use serde_json::{Value, json};

use crate::common::{TINY_LAYOUTS, assert_close, copy_dir, expected, fixture};

fn stats() -> Arc<ReadStats> {
    ReadStats::new_shared()
}

/// An Arrow array as JSON values (dictionary entries resolved, nulls as null).
fn to_json(array: &ArrayRef) -> Vec<Value> {
    let n = array.len();
    let at =
        |i: usize, f: &dyn Fn(usize) -> Value| if array.is_null(i) { Value::Null } else { f(i) };
    match array.data_type() {
        DataType::Dictionary(_, _) => {
            let dict = array.as_any_dictionary();
            let values = to_json(dict.values());
            let keys = annql::store::arrow::compute::cast(dict.keys(), &DataType::Int64)
                .unwrap_or_else(|e| panic!("{e}"));
            let keys = keys.as_primitive::<Int64Type>();
            (0..n)
                .map(|i| {
                    if keys.is_null(i) {
                        Value::Null
                    } else {
                        values[keys.value(i) as usize].clone()
                    }
                })
                .collect()
        }
        DataType::Boolean => (0..n)
            .map(|i| at(i, &|i| json!(array.as_boolean().value(i))))
            .collect(),
        DataType::Utf8 => (0..n)
            .map(|i| at(i, &|i| json!(array.as_string::<i32>().value(i))))
            .collect(),
        DataType::Float32 => (0..n)
            .map(|i| {
                let v = array.as_primitive::<Float32Type>().value(i);
                if array.is_null(i) || v.is_nan() {
                    Value::Null
                } else {
                    json!(v as f64)
                }
            })
            .collect(),
        DataType::Float64 => (0..n)
            .map(|i| {
                let v = array.as_primitive::<Float64Type>().value(i);
                if array.is_null(i) || v.is_nan() {
                    Value::Null
                } else {
                    json!(v)
                }
            })
            .collect(),
        _ => {
            let as_i64 = annql::store::arrow::compute::cast(array, &DataType::Int64)
                .unwrap_or_else(|e| panic!("{e}"));
            let p = as_i64.as_primitive::<Int64Type>();
            (0..n)
                .map(|i| {
                    if p.is_null(i) {
                        Value::Null
                    } else {
                        json!(p.value(i))
                    }
                })
                .collect()
        }
    }
}

fn open(name: &str) -> AnnDataStore {
    AnnDataStore::open(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every column of a dataframe element equals what anndata read.
fn check_frame(store: &AnnDataStore, path: &str, want: &Value, what: &str) {
    let df = store.element(path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(df.encoding, Encoding::DataFrame, "{what}: {path}");
    let index_name = df.index_column().unwrap_or("_index");
    let index = df
        .child(index_name)
        .unwrap_or_else(|| panic!("{what}: no index column {index_name}"));
    let n = index.shape[0];
    let got = to_json(
        &store
            .read_column(index, 0..n, &stats())
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert_close(
        &Value::Array(got),
        &want["index"],
        &format!("{what} {path} index"),
    );
    assert_eq!(
        df.column_order(),
        want["column_order"]
            .as_array()
            .map(|c| c
                .iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect::<Vec<_>>())
            .unwrap_or_default(),
        "{what} column order"
    );
    for (name, col) in want["columns"].as_object().into_iter().flatten() {
        let element = df
            .child(name)
            .unwrap_or_else(|| panic!("{what}: column {name} missing"));
        let array = store
            .read_column(element, 0..n, &stats())
            .unwrap_or_else(|e| panic!("{what} {name}: {e}"));
        assert_close(
            &Value::Array(to_json(&array)),
            &col["values"],
            &format!("{what} {path}/{name}"),
        );
        if let Some(cats) = col.get("categories") {
            let DataType::Dictionary(_, _) = array.data_type() else {
                panic!("{what} {name}: not a dictionary")
            };
            let dict = array.as_any_dictionary();
            assert_close(
                &Value::Array(to_json(dict.values())),
                cats,
                &format!("{what} {name} categories"),
            );
            let ordered = element.attrs.get("ordered").cloned();
            assert_eq!(
                ordered.unwrap_or(json!(false)),
                col["ordered"],
                "{what} {name} ordered"
            );
        }
        // A slice reads the same values as the whole.
        let part = store
            .read_column(element, 7..29, &stats())
            .unwrap_or_else(|e| panic!("{e}"));
        let whole = to_json(&array);
        assert_eq!(to_json(&part), whole[7..29].to_vec(), "{what} {name} slice");
    }
}

/// A matrix element (csr, csc or dense) equals what anndata read; also checks a middle range.
fn check_matrix(store: &AnnDataStore, path: &str, want: &Value, what: &str) {
    let element = store
        .element(path)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let shape: Vec<u64> = want["shape"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(element.shape, shape, "{what} {path} shape");
    match want["format"].as_str() {
        Some(fmt @ ("csr" | "csc")) => {
            let enc = if fmt == "csr" {
                Encoding::CsrMatrix
            } else {
                Encoding::CscMatrix
            };
            assert_eq!(element.encoding, enc, "{what} {path}");
            let major = if fmt == "csr" { shape[0] } else { shape[1] };
            let block = store
                .read_sparse(path, 0..major, &stats())
                .unwrap_or_else(|e| panic!("{what} {path}: {e}"));
            assert_close(
                &json!(block.indptr),
                &want["indptr"],
                &format!("{what} {path} indptr"),
            );
            assert_close(
                &json!(block.indices.to_vec()),
                &want["indices"],
                &format!("{what} {path} indices"),
            );
            assert_close(
                &Value::Array(to_json(&block.data)),
                &want["data"],
                &format!("{what} {path} data"),
            );
            // A range in the middle: the rebased slice of the whole.
            let (a, b) = (major / 3, 2 * major / 3);
            let part = store
                .read_sparse(path, a..b, &stats())
                .unwrap_or_else(|e| panic!("{e}"));
            let (s, e) = (
                block.indptr[a as usize] as usize,
                block.indptr[b as usize] as usize,
            );
            assert_eq!(
                part.indices.to_vec(),
                block.indices[s..e].to_vec(),
                "{what} {path} range indices"
            );
            assert_eq!(part.nnz(), e - s);
            let nnz = store
                .sparse_nnz(path, a..b, &stats())
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(nnz as usize, e - s, "{what} {path} nnz from indptr");
        }
        _ => {
            assert_eq!(element.encoding, Encoding::Array, "{what} {path}");
            let block = store
                .read_dense_rows(path, 0..shape[0], &stats())
                .unwrap_or_else(|e| panic!("{e}"));
            assert_close(
                &Value::Array(to_json(&block.values)),
                &want["data"],
                &format!("{what} {path}"),
            );
        }
    }
}

#[test]
fn every_layout_reads_what_anndata_reads() {
    let want = expected("tiny");
    for layout in TINY_LAYOUTS {
        let store = open(layout);
        assert_eq!(store.root().encoding, Encoding::AnnData, "{layout}");
        assert_eq!(store.root().shape, vec![120, 40], "{layout}");
        check_frame(&store, "obs", &want["obs"], layout);
        check_frame(&store, "var", &want["var"], layout);
        check_matrix(&store, "X", &want["X"], layout);
        for group in ["layers", "obsm", "varm", "obsp", "varp"] {
            for (name, m) in want[group].as_object().into_iter().flatten() {
                check_matrix(&store, &format!("{group}/{name}"), m, layout);
            }
        }
        for (name, f) in want["obsm_frames"].as_object().into_iter().flatten() {
            check_frame(&store, &format!("obsm/{name}"), f, layout);
        }
        check_matrix(&store, "raw/X", &want["raw"]["X"], layout);
        check_frame(&store, "raw/var", &want["raw"]["var"], layout);
        check_uns(&store, "uns", &want["uns"], layout);
    }
}

fn check_uns(store: &AnnDataStore, path: &str, want: &Value, what: &str) {
    for (key, value) in want.as_object().into_iter().flatten() {
        let p = format!("{path}/{key}");
        let element = store.element(&p).unwrap_or_else(|e| panic!("{what}: {e}"));
        if value.is_object() {
            assert_eq!(element.encoding, Encoding::Dict, "{what} {p}");
            check_uns(store, &p, value, what);
            continue;
        }
        let len = element.shape.first().copied().unwrap_or(1);
        let got = to_json(
            &store
                .read_array(&p, 0..len, &stats())
                .unwrap_or_else(|e| panic!("{what} {p}: {e}")),
        );
        let got = if value.is_array() {
            Value::Array(got)
        } else {
            got.into_iter().next().unwrap_or(Value::Null)
        };
        assert_close(&got, value, &format!("{what} {p}"));
    }
}

#[test]
fn element_tree_names_every_encoding() {
    let expected_encodings = [
        ("", "anndata"),
        ("obs", "dataframe"),
        ("obs/cell_type", "categorical"),
        ("obs/severity", "categorical"),
        ("obs/age", "nullable-integer"),
        ("obs/treated", "nullable-boolean"),
        ("obs/note", "nullable-string-array"),
        ("obs/orig.ident", "string-array"),
        ("obs/n_counts", "array"),
        ("X", "csr_matrix"),
        ("layers/csc_counts", "csc_matrix"),
        ("layers/dense", "array"),
        ("obsm/meta_df", "dataframe"),
        ("obsm/awk", "awkward-array"),
        ("uns", "dict"),
        ("uns/title", "string"),
        ("uns/n_pcs", "numeric-scalar"),
        ("uns/colors", "string-array"),
        ("uns/rec", "rec-array"),
        ("raw", "raw"),
    ];
    for layout in TINY_LAYOUTS {
        let store = open(layout);
        for (path, enc) in expected_encodings {
            let e = store
                .element(path)
                .unwrap_or_else(|e| panic!("{layout}: {e}"));
            assert_eq!(e.encoding.name(), enc, "{layout}: /{path}");
        }
        let obs = store.element("obs").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(obs.shape, vec![120, 15], "{layout}");
        let severity = store
            .element("obs/severity")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            severity.attrs.get("ordered"),
            Some(&json!(true)),
            "{layout}"
        );
    }
    // Consolidated metadata is used where the store has it; the sharded v3 chunky store has none.
    assert!(open("tiny.v2.zarr").consolidated());
    assert!(open("tiny.v3.zarr").consolidated());
    assert!(!open("chunky.v3.zarr").consolidated());
}

#[test]
fn awkward_arrays_are_named_unsupported() {
    let store = open("tiny.v2.zarr");
    let awk = store.element("obsm/awk").unwrap_or_else(|e| panic!("{e}"));
    let err = error_text(store.read_column(awk, 0..1, &stats()));
    assert!(
        err.contains("obsm/awk") && err.contains("awkward-array"),
        "{err}"
    );
}

/// Reading rows 1000–1100 of X touches one or two chunks of data and of indices, out of fifty.
#[test]
fn range_reads_touch_only_the_chunks_they_need() {
    let want = expected("chunky");
    for layout in ["chunky.v2.zarr", "chunky.v3.zarr"] {
        let store = open(layout);
        let s = stats();
        let block = store
            .read_sparse("X", 1000..1100, &s)
            .unwrap_or_else(|e| panic!("{e}"));
        let indptr: Vec<u64> = want["X"]["indptr"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .collect();
        assert_eq!(block.nnz() as u64, indptr[1100] - indptr[1000]);
        let data_chunks = store
            .array_meta("X/data")
            .map(|m| m.shape[0].div_ceil(1000))
            .unwrap_or(0);
        assert!(
            data_chunks >= 50,
            "{layout}: fixture has {data_chunks} data chunks"
        );
        let (data, indices) = (s.keys_under("X/data/"), s.keys_under("X/indices/"));
        assert!(
            (1..=2).contains(&data),
            "{layout}: touched {data} data keys: {:?}",
            s.keys()
        );
        assert!(
            (1..=2).contains(&indices),
            "{layout}: touched {indices} indices keys"
        );
        assert!(s.bytes() > 0);
        // Sharded v3: besides the shard index, only the inner chunks covering the range are fetched.
        if layout == "chunky.v3.zarr" {
            assert!(s.requests() <= 16, "{layout}: {} requests", s.requests());
        }
        // An obs column read touches no X chunk.
        let s2 = stats();
        let col = store
            .element("obs/cell_type")
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .read_column(col, 0..10_000, &s2)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s2.keys_under("X/"), 0);
    }
}

/// A scan reading X in consecutive row blocks with a carry gets, part by part, what plain reads
/// get, and requests every data/indices chunk exactly once (plain reads fetch the chunks two blocks
/// share twice). A jump (a pruned block) drops the carry and still reads right.
#[test]
fn carried_block_reads_decode_each_chunk_once() {
    for layout in ["chunky.v2.zarr", "chunky.v3.zarr", "chunky.h5ad"] {
        let store = open(layout);
        let (plain, carried) = (stats(), stats());
        let mut carry = annql::store::SparseCarry::default();
        let blocks: Vec<std::ops::Range<u64>> = (0..10_000u64)
            .step_by(333)
            .map(|a| a..(a + 333).min(10_000))
            .filter(|r| r.start != 3996) // one block skipped, as pruning does
            .collect();
        for r in &blocks {
            store
                .read_sparse("X", r.clone(), &plain)
                .unwrap_or_else(|e| panic!("{layout}: {e}"));
            let parts = store
                .read_sparse_parts("X", r.clone(), &mut carry, &carried)
                .unwrap_or_else(|e| panic!("{layout}: {e}"));
            // The parts cover the block's rows in order, each as a plain read of its rows.
            let mut next = r.start;
            for got in &parts {
                assert_eq!(got.major.start, next, "{layout} {r:?}");
                next = got.major.end;
                let want = store
                    .read_sparse("X", got.major.clone(), &stats())
                    .unwrap_or_else(|e| panic!("{layout}: {e}"));
                assert_eq!(got.indptr, want.indptr, "{layout} {:?}", got.major);
                assert_eq!(got.indices, want.indices, "{layout} {:?}", got.major);
                assert_eq!(
                    got.data.as_ref(),
                    want.data.as_ref(),
                    "{layout} {:?}",
                    got.major
                );
            }
            assert_eq!(next, r.end, "{layout} {r:?}");
        }
        // (Sharded v3 requests also count shard indexes; HDF5 reads are not per chunk key.)
        if layout == "chunky.v2.zarr" {
            for array in ["X/data/", "X/indices/"] {
                let chunks = carried.keys_under(array) as u64;
                assert!(chunks >= 45, "{layout}: {chunks} chunks of {array}");
                assert_eq!(carried.requests_under(array), chunks, "{layout} {array}");
                assert!(plain.requests_under(array) > chunks, "{layout} {array}");
            }
        }
    }
}

/// The message of an error a read must raise (a success is itself a test failure).
fn error_text<T>(result: Result<T, Error>) -> String {
    match result {
        Ok(_) => panic!("expected an error, the read succeeded"),
        Err(e) => e.to_string(),
    }
}

/// Copies a fixture directory so a test can damage it (source data is never modified).
fn damaged_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    copy_dir(&fixture(name), &dir.path().join("s.zarr"));
    dir
}

fn edit_json(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default())
        .unwrap_or(Value::Null);
    f(&mut v);
    std::fs::write(path, v.to_string()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn damaged_stores_give_errors_naming_the_element() {
    // A truncated chunk.
    let dir = damaged_copy("chunky.v2.zarr");
    let chunk = dir.path().join("s.zarr/X/data/3");
    let bytes = std::fs::read(&chunk).unwrap_or_default();
    std::fs::write(&chunk, &bytes[..bytes.len() / 2]).unwrap_or_else(|e| panic!("{e}"));
    let store = AnnDataStore::open(dir.path().join("s.zarr")).unwrap_or_else(|e| panic!("{e}"));
    let err = error_text(store.read_sparse("X", 0..10_000, &stats()));
    assert!(err.contains("'/X/data'"), "{err}");

    // A corrupt (garbage) chunk of indices.
    let dir = damaged_copy("chunky.v2.zarr");
    std::fs::write(dir.path().join("s.zarr/X/indices/0"), b"not blosc at all")
        .unwrap_or_else(|e| panic!("{e}"));
    let store = AnnDataStore::open(dir.path().join("s.zarr")).unwrap_or_else(|e| panic!("{e}"));
    let err = error_text(store.read_sparse("X", 0..100, &stats()));
    assert!(err.contains("'/X/indices'"), "{err}");

    // Indices past the declared gene count.
    let dir = damaged_copy("chunky.v2.zarr");
    edit_json(&dir.path().join("s.zarr/.zmetadata"), |v| {
        v["metadata"]["X/.zattrs"]["shape"] = json!([10_000, 20]);
    });
    let store = AnnDataStore::open(dir.path().join("s.zarr")).unwrap_or_else(|e| panic!("{e}"));
    let err = error_text(store.read_sparse("X", 0..10_000, &stats()));
    assert!(
        err.contains("'/X/indices'") && err.contains("index out of range 0..20"),
        "{err}"
    );

    // Bad JSON in consolidated metadata.
    let dir = damaged_copy("chunky.v2.zarr");
    std::fs::write(dir.path().join("s.zarr/.zmetadata"), b"{\"metadata\": {")
        .unwrap_or_else(|e| panic!("{e}"));
    let err = error_text(AnnDataStore::open(dir.path().join("s.zarr")));
    assert!(
        err.contains(".zmetadata") && err.contains("invalid JSON"),
        "{err}"
    );

    // A declared shape that does not match the data; a missing array; wrong dtype; unknown encoding.
    let dir = damaged_copy("chunky.v2.zarr");
    let zmeta = dir.path().join("s.zarr/.zmetadata");
    edit_json(&zmeta, |v| {
        v["metadata"]["X/.zattrs"]["shape"] = json!([20_000, 50]);
        v["metadata"]["X/indptr/.zarray"]["dtype"] = json!("<f8");
        v["metadata"]["obs/cell_type/.zattrs"]["encoding-type"] = json!("fancy-column");
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("obs/tissue/codes/.zarray");
        }
    });
    let store = AnnDataStore::open(dir.path().join("s.zarr")).unwrap_or_else(|e| panic!("{e}"));
    let err = error_text(store.read_sparse("X", 0..10, &stats()));
    assert!(
        err.contains("'/X'") && err.contains("indptr has length 10001"),
        "{err}"
    );
    let err = error_text(store.read_offsets("X/indptr", 0..3, &stats()));
    assert!(
        err.contains("'/X/indptr'") && err.contains("float64"),
        "{err}"
    );
    let col = store
        .element("obs/cell_type")
        .unwrap_or_else(|e| panic!("{e}"));
    let err = error_text(store.read_column(col, 0..3, &stats()));
    assert!(err.contains("fancy-column"), "{err}");
    let col = store
        .element("obs/tissue")
        .unwrap_or_else(|e| panic!("{e}"));
    let err = error_text(store.read_column(col, 0..3, &stats()));
    assert!(
        err.contains("'/obs/tissue/codes'") && err.contains("missing"),
        "{err}"
    );

    // Out-of-range reads are refused, not clamped.
    let store = open("chunky.v2.zarr");
    let err = error_text(store.read_sparse("X", 9_990..10_001, &stats()));
    assert!(err.contains("out of bounds"), "{err}");

    // An absurd declared chunk shape is refused rather than allocated.
    let dir = damaged_copy("chunky.v2.zarr");
    edit_json(&dir.path().join("s.zarr/.zmetadata"), |v| {
        v["metadata"]["X/data/.zarray"]["chunks"] = json!([1u64 << 40]);
    });
    let store = AnnDataStore::open(dir.path().join("s.zarr")).unwrap_or_else(|e| panic!("{e}"));
    let err = error_text(store.read_sparse("X", 0..10, &stats()));
    assert!(
        err.contains("'/X/data'") && err.contains("chunk shape"),
        "{err}"
    );

    // Not an AnnData store at all.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join(".zgroup"), br#"{"zarr_format": 2}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    let err = error_text(AnnDataStore::open(dir.path()));
    assert!(err.contains("no 'encoding-type'"), "{err}");
}
