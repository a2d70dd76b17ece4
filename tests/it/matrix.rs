//! Matrices handed to Rust (`AnnSession::dataset`): the selected cells × genes of X, layers and
//! raw.X of the tiny fixture, stored CSR, CSC and dense, equal what anndata read from it
//! (`tiny.expected.json`), as `sprs`, `ndarray` and row blocks.

use annql::engine::sprs::CsMat;
use annql::engine::{AnnSession, MatrixElement};
use serde_json::Value;

use crate::common::{expected, fixture};

fn session(store: &str) -> AnnSession {
    let s = AnnSession::builder()
        .with_threads(2)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    s.attach("tiny", fixture(store))
        .unwrap_or_else(|e| panic!("{e}"));
    s
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
        .block_on(f)
}

/// anndata's matrix (`X`, a layer name, or `raw`) from the exported values, dense row-major.
fn anndata_matrix(name: &str) -> (Vec<f64>, usize, usize) {
    let e = expected("tiny");
    let m = match name {
        "X" => &e["X"],
        "raw" => &e["raw"]["X"],
        layer => &e["layers"][layer],
    };
    let shape: Vec<usize> = m["shape"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .map(|v| v as usize)
        .collect();
    let (rows, cols) = (shape[0], shape[1]);
    let nums = |k: &str| -> Vec<f64> {
        m[k].as_array()
            .into_iter()
            .flatten()
            .map(|v| v.as_f64().unwrap_or(f64::NAN))
            .collect()
    };
    let mut dense = vec![0.0; rows * cols];
    match m["format"].as_str() {
        Some("dense") => dense = nums("data"),
        Some(fmt) => {
            let (indptr, indices, data) = (nums("indptr"), nums("indices"), nums("data"));
            for outer in 0..indptr.len() - 1 {
                for k in indptr[outer] as usize..indptr[outer + 1] as usize {
                    let inner = indices[k] as usize;
                    let (r, c) = if fmt == "csr" {
                        (outer, inner)
                    } else {
                        (inner, outer)
                    };
                    dense[r * cols + c] = data[k];
                }
            }
        }
        None => panic!("{name}: no format"),
    }
    (dense, rows, cols)
}

/// Positions where an exported obs/var column (`frame` "obs", "var" or "raw_var") satisfies `keep`.
fn positions(frame: &str, column: &str, keep: impl Fn(&Value) -> bool) -> Vec<usize> {
    let e = expected("tiny");
    let f = match frame {
        "raw_var" => &e["raw"]["var"],
        f => &e[f],
    };
    f["columns"][column]["values"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, v)| keep(v))
        .map(|(i, _)| i)
        .collect()
}

/// anndata's `m[rows][:, cols]`, dense row-major.
fn cut(m: &(Vec<f64>, usize, usize), rows: &[usize], cols: &[usize]) -> Vec<f64> {
    let mut out = Vec::new();
    for &r in rows {
        for &c in cols {
            out.push(m.0[r * m.2 + c]);
        }
    }
    out
}

fn dense_of<T: MatrixElement + Into<f64>>(m: &CsMat<T>) -> Vec<f64> {
    let (rows, cols) = m.shape();
    let mut out = vec![0.0; rows * cols];
    for (&v, (r, c)) in m.iter() {
        out[r * cols + c] = v.into();
    }
    out
}

fn t_cells() -> Vec<usize> {
    positions("obs", "cell_type", |v| v == "T cell")
}

fn hvg() -> Vec<usize> {
    positions("var", "highly_variable", |v| v == &Value::Bool(true))
}

/// X (CSR float32) of T cells × highly variable genes, as CSR and as CSC, in every format.
#[test]
fn csr_source_cut_as_anndata_does() {
    let want = cut(&anndata_matrix("X"), &t_cells(), &hvg());
    for store in [
        "tiny.v2.zarr",
        "tiny.v3.zarr",
        "tiny.h5ad",
        "tiny.v3.zarr.zip",
    ] {
        let s = session(store);
        let ds = s
            .dataset("tiny")
            .unwrap_or_else(|e| panic!("{e}"))
            .obs("cell_type = 'T cell'")
            .var("highly_variable");
        let csr = block_on(ds.to_csmat::<f32>()).unwrap_or_else(|e| panic!("{store}: {e}"));
        assert!(csr.is_csr());
        assert_eq!(csr.shape(), (t_cells().len(), hvg().len()), "{store}");
        assert_eq!(dense_of(&csr), want, "{store}");
        let csc = block_on(ds.clone().csc().to_csmat::<f32>()).unwrap_or_else(|e| panic!("{e}"));
        assert!(csc.is_csc());
        assert_eq!(dense_of(&csc), want, "{store} as CSC");
    }
}

/// A CSC layer, a dense float64 layer and an int64 layer give the same cut as anndata's.
#[test]
fn csc_dense_and_integer_sources() {
    let s = session("tiny.v2.zarr");
    let ds = |layer: &str| {
        s.dataset("tiny")
            .unwrap_or_else(|e| panic!("{e}"))
            .obs("cell_type = 'T cell'")
            .var("highly_variable")
            .layer(layer)
    };
    let (rows, cols) = (t_cells(), hvg());
    let csc = block_on(ds("csc_counts").to_csmat::<f32>()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        dense_of(&csc),
        cut(&anndata_matrix("csc_counts"), &rows, &cols)
    );
    let csc = block_on(ds("csc_counts").csc().to_csmat::<f32>()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        dense_of(&csc),
        cut(&anndata_matrix("csc_counts"), &rows, &cols)
    );
    let dense = block_on(ds("dense").to_csmat::<f64>()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        dense_of(&dense),
        cut(&anndata_matrix("dense"), &rows, &cols)
    );
    let ints = block_on(ds("counts_i64").to_csmat::<i64>()).unwrap_or_else(|e| panic!("{e}"));
    let ints: Vec<f64> = dense_of(&ints.map(|&v| v as f64));
    assert_eq!(ints, cut(&anndata_matrix("counts_i64"), &rows, &cols));
    let arr = block_on(ds("dense").to_array2::<f64>(10_000)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(arr.shape(), &[rows.len(), cols.len()]);
    assert_eq!(
        arr.iter().copied().collect::<Vec<_>>(),
        cut(&anndata_matrix("dense"), &rows, &cols)
    );
}

/// raw.X with a predicate over raw's var.
#[test]
fn raw_matrix_selects_raw_genes() {
    let s = session("tiny.h5ad");
    let e = expected("tiny");
    let raw_genes: Vec<String> = e["raw"]["var"]["index"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let cols: Vec<usize> = (0..raw_genes.len()).filter(|i| i % 3 == 0).collect();
    let list: Vec<String> = cols
        .iter()
        .map(|&i| format!("'{}'", raw_genes[i]))
        .collect();
    let ds = s
        .dataset("tiny")
        .unwrap_or_else(|e| panic!("{e}"))
        .raw()
        .obs("donor_id = 'D3'")
        .var(&format!("var_name IN ({})", list.join(", ")));
    let rows = positions("obs", "donor_id", |v| v == "D3");
    let m = block_on(ds.to_csmat::<f32>()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dense_of(&m), cut(&anndata_matrix("raw"), &rows, &cols));
}

/// Row blocks cover exactly the selected cells, in order, each block its cells' rows.
#[test]
fn row_blocks_cover_exactly_the_selection() {
    for (store, layer) in [
        ("tiny.v3.zarr", "counts"),
        ("tiny.v3.zarr", "csc_counts"),
        ("tiny.h5ad", "dense"),
    ] {
        let s = session(store);
        let ds = s
            .dataset("tiny")
            .unwrap_or_else(|e| panic!("{e}"))
            .obs("tissue <> 'lung'")
            .layer(layer);
        let rows = positions("obs", "tissue", |v| v != "lung");
        let all: Vec<usize> = (0..40).collect();
        let want = cut(&anndata_matrix(layer), &rows, &all);
        let mut ids = Vec::new();
        let mut got = Vec::new();
        let mut n_blocks = 0;
        if layer == "dense" {
            let blocks = block_on(ds.row_blocks::<f64>(7)).unwrap_or_else(|e| panic!("{e}"));
            for b in blocks {
                let b = b.unwrap_or_else(|e| panic!("{e}"));
                assert!(b.matrix.rows() <= 7 && b.matrix.rows() == b.obs_ids.len());
                ids.extend(b.obs_ids.iter().map(|&i| i as usize));
                got.extend(dense_of(&b.matrix));
                n_blocks += 1;
            }
        } else {
            let blocks = block_on(ds.row_blocks::<f32>(7)).unwrap_or_else(|e| panic!("{e}"));
            for b in blocks {
                let b = b.unwrap_or_else(|e| panic!("{e}"));
                assert!(b.matrix.rows() <= 7 && b.matrix.rows() == b.obs_ids.len());
                ids.extend(b.obs_ids.iter().map(|&i| i as usize));
                got.extend(dense_of(&b.matrix));
                n_blocks += 1;
            }
        }
        assert_eq!(ids, rows, "{store} {layer}");
        assert_eq!(n_blocks, rows.len().div_ceil(7));
        assert_eq!(got, want, "{store} {layer}");
    }
}

/// An empty selection is an empty matrix of the right shape, and no blocks.
#[test]
fn empty_selection() {
    let s = session("tiny.v2.zarr");
    let ds = s
        .dataset("tiny")
        .unwrap_or_else(|e| panic!("{e}"))
        .obs("cell_type = 'no such type'");
    let m = block_on(ds.to_csmat::<f32>()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((m.shape(), m.nnz()), ((0, 40), 0));
    let m = block_on(ds.clone().csc().to_csmat::<f32>()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((m.shape(), m.nnz()), ((0, 40), 0));
    let a = block_on(ds.to_array2::<f32>(0)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.shape(), &[0, 40]);
    let blocks = block_on(ds.row_blocks::<f32>(10)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(blocks.count(), 0);
    let genes = ds.var("false");
    let m = block_on(genes.to_csmat::<f32>()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.shape(), (0, 0));
}

/// Wrong element type, the dense limit, a missing layer, a bad predicate, an unknown dataset:
/// each a clear error.
#[test]
fn bad_requests_are_clear_errors() {
    let s = session("tiny.v2.zarr");
    let ds = || s.dataset("tiny").unwrap_or_else(|e| panic!("{e}"));
    let err = |r: annql::engine::Result<()>| r.err().map(|e| e.to_string()).unwrap_or_default();
    let e = err(block_on(ds().to_csmat::<f64>()).map(|_| ()));
    assert!(
        e.contains("matrix 'X' of") && e.contains("tiny.v2.zarr stores float32"),
        "{e}"
    );
    assert!(e.ends_with("not f64"), "{e}");
    let e = err(block_on(ds().layer("counts_i64").row_blocks::<f32>(5)).map(|_| ()));
    assert!(e.contains("stores int64"), "{e}");
    let e = err(block_on(ds().to_array2::<f32>(100)).map(|_| ()));
    assert!(e.contains("120 × 40") && e.contains("limit of 100"), "{e}");
    let e = err(block_on(ds().layer("nope").to_csmat::<f32>()).map(|_| ()));
    assert!(e.contains("no matrix 'layers/nope'"), "{e}");
    let e = err(block_on(ds().obs("no_such_column = 1").to_csmat::<f32>()).map(|_| ()));
    assert!(e.contains("no_such_column"), "{e}");
    let e = err(block_on(ds().row_blocks::<f32>(0)).map(|_| ()));
    assert!(e.contains("at least one row"), "{e}");
    let e = s
        .dataset("other")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("'other'"), "{e}");
}

/// Selections written in the pipeline language select what the same SQL predicates select.
#[test]
fn language_predicates_select_as_sql() {
    use annql::engine::select::SelectAxis;
    use annql::lang::where_to_sql;
    let s = session("tiny.v3.zarr");
    let obs = block_on(where_to_sql(
        &s,
        "tiny",
        SelectAxis::Obs,
        r#"cell_type == "T cell""#,
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let var = block_on(where_to_sql(&s, "tiny", SelectAxis::Var, "highly_variable"))
        .unwrap_or_else(|e| panic!("{e}"));
    let ds = s.dataset("tiny").unwrap_or_else(|e| panic!("{e}"));
    let by_lang =
        block_on(ds.clone().obs(&obs).var(&var).selected()).unwrap_or_else(|e| panic!("{e}"));
    let by_sql = block_on(
        ds.obs("cell_type = 'T cell'")
            .var("highly_variable")
            .selected(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(by_lang, by_sql);
    let want: Vec<u64> = t_cells().iter().map(|&i| i as u64).collect();
    assert_eq!(by_lang.obs, want);
    let e = block_on(where_to_sql(
        &s,
        "tiny",
        SelectAxis::Obs,
        "no_such_column > 1",
    ))
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("no_such_column"), "{e}");
}
