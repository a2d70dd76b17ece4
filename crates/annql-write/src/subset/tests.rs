//! The cut checked through a sink that records what it is given, against values read from the
//! source fixtures (written by the real anndata) with the store reader.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use annql_store::arrow::array::{Array, ArrayRef, AsArray, Float32Array, Int8Array, Int32Array};
use annql_store::{AnnDataStore, ReadStats};

use super::*;
use crate::select::Rows;
use crate::sink::{ArraySpec, Attrs};

/// What a [`Recorder`] was given.
#[derive(Default)]
struct Recorded {
    groups: BTreeMap<String, Attrs>,
    arrays: BTreeMap<String, (ArraySpec, Attrs, Vec<ArrayRef>, bool)>,
    finished: bool,
}

impl Recorded {
    fn values(&self, path: &str) -> ArrayRef {
        let (spec, _, blocks, closed) = self
            .arrays
            .get(path)
            .unwrap_or_else(|| panic!("no array {path}"));
        assert!(closed, "{path} was not closed");
        if blocks.is_empty() {
            use annql_store::arrow::datatypes::DataType;
            let t = match spec.dtype {
                annql_store::DType::String => DataType::Utf8,
                _ => DataType::Null,
            };
            return annql_store::arrow::array::new_empty_array(&t);
        }
        let refs: Vec<&dyn Array> = blocks.iter().map(|b| b.as_ref()).collect();
        annql_store::arrow::compute::concat(&refs).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn strings(&self, path: &str) -> Vec<String> {
        let v = self.values(path);
        let s = v.as_string::<i32>();
        (0..s.len()).map(|i| s.value(i).to_string()).collect()
    }

    fn ints(&self, path: &str) -> Vec<i64> {
        let v = self.values(path);
        let v =
            annql_store::arrow::compute::cast(&v, &annql_store::arrow::datatypes::DataType::Int64)
                .unwrap_or_else(|e| panic!("{e}"));
        v.as_primitive::<annql_store::arrow::datatypes::Int64Type>()
            .values()
            .to_vec()
    }
}

/// A sink keeping what it is given in memory.
struct Recorder {
    into: Arc<Mutex<Recorded>>,
    paths: Vec<String>,
}

impl Sink for Recorder {
    fn group(&mut self, path: &str, attrs: &Attrs) -> Result<()> {
        let mut r = self.into.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            r.groups.insert(path.into(), attrs.clone()).is_none(),
            "{path} twice"
        );
        Ok(())
    }
    fn open_array(&mut self, path: &str, spec: &ArraySpec, attrs: &Attrs) -> Result<ArrayId> {
        let mut r = self.into.lock().unwrap_or_else(|e| e.into_inner());
        let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
        assert!(r.groups.contains_key(parent), "{path} before its group");
        r.arrays.insert(
            path.into(),
            (spec.clone(), attrs.clone(), Vec::new(), false),
        );
        self.paths.push(path.into());
        Ok(ArrayId(self.paths.len() - 1))
    }
    fn append(&mut self, array: ArrayId, values: &ArrayRef) -> Result<()> {
        let mut r = self.into.lock().unwrap_or_else(|e| e.into_inner());
        let entry = r.arrays.get_mut(&self.paths[array.0]).expect("open array");
        assert!(!entry.3, "append after close");
        entry.2.push(values.clone());
        Ok(())
    }
    fn close_array(&mut self, array: ArrayId) -> Result<()> {
        let mut r = self.into.lock().unwrap_or_else(|e| e.into_inner());
        let entry = r.arrays.get_mut(&self.paths[array.0]).expect("open array");
        entry.3 = true;
        Ok(())
    }
    fn finish(self: Box<Self>) -> Result<()> {
        let mut r = self.into.lock().unwrap_or_else(|e| e.into_inner());
        assert!(r.arrays.values().all(|a| a.3), "finish with open arrays");
        r.finished = true;
        Ok(())
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/data")
        .join(name)
}

fn open(name: &str) -> AnnDataStore {
    AnnDataStore::open(fixture(name)).unwrap_or_else(|e| panic!("{e}"))
}

fn run(
    store: &AnnDataStore,
    selection: &Selection,
    options: &ExportOptions,
) -> (Result<(u64, u64)>, Recorded) {
    let into = Arc::new(Mutex::new(Recorded::default()));
    let sink = Box::new(Recorder {
        into: into.clone(),
        paths: Vec::new(),
    });
    let anndata = store.root();
    let result = export_into(
        store,
        anndata,
        selection,
        sink,
        options,
        Path::new("out.h5ad"),
    );
    let recorded = std::mem::take(&mut *into.lock().unwrap_or_else(|e| e.into_inner()));
    (result, recorded)
}

/// The tiny fixture's elements annql cannot copy (an awkward array, a rec-array).
fn tiny_options(block_bytes: usize) -> ExportOptions {
    ExportOptions {
        block_bytes,
        exclude: vec!["obsm/awk".into(), "uns/rec".into()],
        ..ExportOptions::default()
    }
}

/// The rows of `obs/<column>` equal to `value`.
fn rows_where(store: &AnnDataStore, column: &str, value: &str) -> Vec<u64> {
    let col = store.element(&format!("obs/{column}")).expect("column");
    let n = col.shape[0];
    let values = store
        .read_column(col, 0..n, &ReadStats::new_shared())
        .expect("read");
    let values =
        annql_store::arrow::compute::cast(&values, &annql_store::arrow::datatypes::DataType::Utf8)
            .expect("cast");
    let values = values.as_string::<i32>();
    (0..n)
        .filter(|&i| values.is_valid(i as usize) && values.value(i as usize) == value)
        .collect()
}

/// The dense values of a CSR matrix of `shape` given by its arrays.
fn dense_csr(indptr: &[i64], indices: &[i64], data: &Float32Array, cols: usize) -> Vec<Vec<f32>> {
    (0..indptr.len() - 1)
        .map(|r| {
            let mut row = vec![0.0; cols];
            for e in indptr[r] as usize..indptr[r + 1] as usize {
                row[indices[e] as usize] = data.value(e);
            }
            row
        })
        .collect()
}

/// X of a selection of rows and genes equals X read whole from the source, cut by hand; the
/// result is the same with blocks of a few rows (many blocks, blocks cut inside chunks).
#[test]
fn x_keeps_the_selected_rows_and_genes_whatever_the_block_size() {
    let store = open("tiny.v2.zarr");
    let rows = rows_where(&store, "cell_type", "B cell");
    assert!(rows.len() > 5 && rows.len() < 100);
    let genes: Vec<u64> = vec![0, 3, 5, 17, 39];
    let selection = Selection {
        obs: Rows::Some(rows.clone()),
        var: Rows::Some(genes.clone()),
    };
    let x = store.element("X").expect("X");
    let all = store
        .read_sparse("X", 0..120, &ReadStats::new_shared())
        .expect("read X");
    let data = all
        .data
        .as_primitive::<annql_store::arrow::datatypes::Float32Type>();
    let mut want = Vec::new();
    for &r in &rows {
        let mut row = vec![0.0f32; genes.len()];
        for e in all.indptr[r as usize]..all.indptr[r as usize + 1] {
            let g = u64::from(all.indices[e as usize]);
            if let Some(j) = genes.iter().position(|&x| x == g) {
                row[j] = data.value(e as usize);
            }
        }
        want.push(row);
    }
    assert_eq!(x.shape, vec![120, 40]);
    for block_bytes in [128 << 20, 64] {
        let (result, rec) = run(&store, &selection, &tiny_options(block_bytes));
        assert_eq!(result.expect("export"), (rows.len() as u64, 5));
        assert!(rec.finished);
        assert_eq!(rec.groups["X"]["shape"], serde_json::json!([rows.len(), 5]));
        assert_eq!(rec.groups["X"]["encoding-type"], "csr_matrix");
        let got = dense_csr(
            &rec.ints("X/indptr"),
            &rec.ints("X/indices"),
            rec.values("X/data")
                .as_any()
                .downcast_ref::<Float32Array>()
                .expect("float32 data"),
            genes.len(),
        );
        assert_eq!(got, want, "block_bytes {block_bytes}");
        // The CSC layer holds the same counts; its genes are columns, its cells minor indices.
        assert_eq!(
            rec.groups["layers/csc_counts"]["encoding-type"],
            "csc_matrix"
        );
        let blocks = rec.arrays["X/data"].2.len();
        assert!(block_bytes > 1000 || blocks > 3, "{blocks} blocks");
        assert_eq!(rec.strings("var/_index").len(), 5);
        assert_eq!(rec.strings("obs/_index").len(), rows.len());
        // obsm rows, obsp both axes, varp both axes.
        assert_eq!(rec.arrays["obsm/X_pca"].0.inner, vec![5]);
        assert_eq!(rec.values("obsm/X_pca").len(), rows.len() * 5);
        assert_eq!(
            rec.groups["obsp/connectivities"]["shape"],
            serde_json::json!([rows.len(), rows.len()])
        );
        assert_eq!(rec.values("varp/corr").len(), 25);
        // raw keeps every gene.
        assert_eq!(
            rec.groups["raw/X"]["shape"],
            serde_json::json!([rows.len(), 45])
        );
        assert_eq!(rec.strings("raw/var/_index").len(), 45);
    }
}

/// Categories no kept cell uses are dropped and the codes renumbered, as anndata's views do;
/// `ordered` is kept.
#[test]
fn unused_categories_are_dropped_and_codes_renumbered() {
    let store = open("tiny.v2.zarr");
    let rows = rows_where(&store, "cell_type", "NK cell");
    let selection = Selection {
        obs: Rows::Some(rows.clone()),
        var: Rows::All,
    };
    let (result, rec) = run(&store, &selection, &tiny_options(1 << 20));
    result.expect("export");
    assert_eq!(rec.strings("obs/cell_type/categories"), vec!["NK cell"]);
    assert_eq!(rec.ints("obs/cell_type/codes"), vec![0; rows.len()]);
    assert_eq!(
        rec.values("obs/cell_type/codes").data_type(),
        Int8Array::from(vec![0i8]).data_type()
    );
    assert_eq!(rec.groups["obs/severity"]["ordered"], true);
    assert_eq!(rec.groups["obs/cell_type"]["ordered"], false);
    // The severity codes still name the same categories.
    let severity = rows_where(&store, "severity", "high");
    let kept: Vec<String> = rec.strings("obs/severity/categories");
    let codes = rec.ints("obs/severity/codes");
    for (i, r) in rows.iter().enumerate() {
        let name = &kept[codes[i] as usize];
        assert_eq!(name == "high", severity.contains(r), "row {r}");
    }
    // A missing value (code -1) stays missing.
    let batch = rec.ints("obs/batch code/codes");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(batch[i] == -1, r % 10 == 0, "row {r}");
    }
    // Nullable columns keep values and mask.
    assert_eq!(rec.values("obs/age/mask").len(), rows.len());
    assert_eq!(rec.groups["obs/age"]["encoding-type"], "nullable-integer");
    // Not along an axis: the obsm dataframe keeps its columns; uns is copied.
    assert_eq!(rec.values("obsm/meta_df/qc_a").len(), rows.len());
    assert_eq!(rec.strings("uns/title"), vec!["tiny fixture"]);
    assert!(rec.arrays["uns/title"].0.scalar);
    assert_eq!(rec.groups["uns/neighbors/params"]["encoding-type"], "dict");
}

/// An empty selection writes every element with no rows; a selection of everything writes the
/// source's counts.
#[test]
fn empty_and_full_selections() {
    let store = open("chunky.v2.zarr");
    let empty = Selection {
        obs: Rows::Some(Vec::new()),
        var: Rows::Some(Vec::new()),
    };
    let (result, rec) = run(&store, &empty, &ExportOptions::default());
    assert_eq!(result.expect("export"), (0, 0));
    assert_eq!(rec.ints("X/indptr"), vec![0]);
    assert_eq!(rec.values("X/data").len(), 0);
    assert!(rec.strings("obs/cell_type/categories").is_empty());
    let options = ExportOptions {
        block_bytes: 4096,
        ..ExportOptions::default()
    };
    let (result, rec) = run(&store, &Selection::all(), &options);
    assert_eq!(result.expect("export"), (10_000, 50));
    let indptr = rec.ints("X/indptr");
    let nnz = store.array_meta("X/indices").expect("indices").shape[0];
    assert_eq!(indptr.len(), 10_001);
    assert_eq!(*indptr.last().expect("indptr") as u64, nnz);
    assert_eq!(
        rec.values("X/indices").data_type(),
        Int32Array::from(vec![0]).data_type()
    );
}

/// An element annql cannot copy is refused by name; leaving it out is asked for by name, and a
/// name that is not in the store is an error too.
#[test]
fn elements_annql_cannot_copy_are_refused_by_name() {
    let store = open("tiny.v2.zarr");
    let (result, rec) = run(&store, &Selection::all(), &ExportOptions::default());
    match result {
        Err(Error::Refused { element, reason }) => {
            assert_eq!(element, "obsm/awk");
            assert!(reason.contains("awkward"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!rec.finished);
    let options = ExportOptions {
        exclude: vec!["obsm/awk".into()],
        ..ExportOptions::default()
    };
    match run(&store, &Selection::all(), &options).0 {
        Err(Error::Refused { element, reason }) => {
            assert_eq!(element, "uns/rec");
            assert!(reason.contains("rec-array"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let options = ExportOptions {
        exclude: vec!["obsm/no_such".into()],
        ..ExportOptions::default()
    };
    let err = run(&store, &Selection::all(), &options)
        .0
        .expect_err("typo");
    assert!(err.to_string().contains("obsm/no_such"), "{err}");
}

/// A selection past the end, or not increasing, is refused before anything is written.
#[test]
fn bad_selections_are_refused() {
    let store = open("tiny.v2.zarr");
    for ids in [vec![3, 120], vec![5, 2]] {
        let selection = Selection {
            obs: Rows::Some(ids),
            var: Rows::All,
        };
        let (result, rec) = run(&store, &selection, &tiny_options(1 << 20));
        assert!(
            matches!(result, Err(Error::Selection { axis: "obs", .. })),
            "{result:?}"
        );
        assert!(rec.groups.is_empty());
    }
}

/// A cancelled export stops with `Cancelled` and never finishes the sink.
#[test]
fn cancelled_export_does_not_finish() {
    let store = open("chunky.v2.zarr");
    let options = ExportOptions {
        cancel: Some(Arc::new(AtomicBool::new(true))),
        ..ExportOptions::default()
    };
    let (result, rec) = run(&store, &Selection::all(), &options);
    assert!(matches!(result, Err(Error::Cancelled(_))), "{result:?}");
    assert!(!rec.finished);
}

/// Strings of a string-array column are kept in source order.
#[test]
fn string_columns_keep_rows_in_order() {
    let store = open("tiny.h5ad");
    let rows = vec![0, 1, 2, 50, 119];
    let selection = Selection {
        obs: Rows::Some(rows.clone()),
        var: Rows::All,
    };
    let (result, rec) = run(&store, &selection, &tiny_options(1 << 20));
    result.expect("export");
    let want: Vec<String> = rows.iter().map(|r| format!("sample_{}", r % 3)).collect();
    assert_eq!(rec.strings("obs/orig.ident"), want);
    let names: Vec<String> = rows.iter().map(|r| format!("cell_{r:04}")).collect();
    assert_eq!(rec.strings("obs/_index"), names);
}

#[test]
#[ignore]
fn probe_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/anndata-files");
    let mut stack = vec![root.clone()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() && n.ends_with(".zarr") {
                files.push(p)
            } else if p.is_dir() {
                stack.push(p)
            } else if n.ends_with(".h5ad") || n.ends_with(".h5mu") || n.ends_with(".zarr.zip") {
                files.push(p)
            }
        }
    }
    files.sort();
    for f in files {
        let store = match AnnDataStore::open(&f) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("OPENFAIL {}: {e}", f.display());
                continue;
            }
        };
        for ad in store.anndatas() {
            let mut exclude = Vec::new();
            loop {
                let into = Arc::new(Mutex::new(Recorded::default()));
                let sink = Box::new(Recorder {
                    into: into.clone(),
                    paths: Vec::new(),
                });
                let options = ExportOptions {
                    exclude: exclude.clone(),
                    ..ExportOptions::default()
                };
                let r = export_into(
                    &store,
                    ad,
                    &Selection::all(),
                    sink,
                    &options,
                    Path::new("x"),
                );
                match r {
                    Err(Error::Refused { element, reason }) => {
                        eprintln!(
                            "REFUSED {} [{}] {element}: {reason}",
                            f.strip_prefix(&root).unwrap().display(),
                            ad.path
                        );
                        let rel = element
                            .strip_prefix(&format!("{}/", ad.path))
                            .unwrap_or(&element)
                            .to_string();
                        if exclude.contains(&rel) {
                            break;
                        }
                        exclude.push(rel);
                    }
                    Err(e) => {
                        eprintln!(
                            "ERROR {} [{}]: {e}",
                            f.strip_prefix(&root).unwrap().display(),
                            ad.path
                        );
                        break;
                    }
                    Ok(s) => {
                        eprintln!(
                            "OK {} [{}] {s:?}",
                            f.strip_prefix(&root).unwrap().display(),
                            ad.path
                        );
                        break;
                    }
                }
            }
        }
    }
}
