//! Stores written before anndata 0.7: read in the modern table model as anndata reads them, and
//! damaged copies give errors naming the element.

use std::path::Path;

use annql::engine::AnnSession;
use annql::engine::datafusion::arrow::array::RecordBatch;
use annql::engine::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use annql::store::{AnnDataStore, Encoding, Error, ReadStats};

use crate::common::{copy_dir, corpus_dir};

/// anndata 0.5's h5ad of pbmc68k_reduced (compound obs/var/obsm/varm, categories in uns, raw.X,
/// graphs in uns/neighbors) and scanpy's modern rewrite of the same object, which anndata reads
/// to the same values.
const LEGACY_H5AD: &str = "scverse-anndata/tests/data/archives/v0.5.0/adata.h5ad";
const MODERN_H5AD: &str = "scverse-scanpy/src/scanpy/datasets/10x_pbmc68k_reduced.h5ad";
/// A zarr written by anndata < 0.7 (structured obs/var of fixed-length byte strings).
const LEGACY_ZARR: &str = "scverse-scanpy/tests/_data/10x-10k-subset.zarr";

fn text(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        for r in 0..b.num_rows() {
            out.push(fmts.iter().map(|f| f.value(r).to_string()).collect());
        }
    }
    out
}

/// Every table of the legacy h5ad holds the rows of the same table of the modern copy (same
/// columns, types and values), the tables anndata's legacy reading creates included: the uns
/// categories as categoricals, raw.X as `raw_x`, the compound obsm as `obsm_x_pca`, the graphs
/// in uns/neighbors as `obsp_*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_h5ad_tables_equal_the_modern_copy() {
    let s = AnnSession::builder()
        .with_threads(2)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    s.attach("old", corpus_dir().join(LEGACY_H5AD))
        .unwrap_or_else(|e| panic!("{e}"));
    s.attach("new", corpus_dir().join(MODERN_H5AD))
        .unwrap_or_else(|e| panic!("{e}"));
    let tables = [
        ("obs", "obs_id"),
        ("var", "var_id"),
        ("x", "obs_id, var_id"),
        ("raw_x", "obs_id, var_id"),
        ("raw_var", "var_id"),
        ("obsm_x_pca", "obs_id"),
        ("obsm_x_umap", "obs_id"),
        ("varm_pcs", "var_id"),
        ("obsp_connectivities", "obs_id_1, obs_id_2"),
        ("obsp_distances", "obs_id_1, obs_id_2"),
    ];
    for (table, order) in tables {
        let rows = |db: &str| format!("SELECT * FROM {db}.{table} ORDER BY {order}");
        let old = s
            .collect(&rows("old"))
            .await
            .unwrap_or_else(|e| panic!("old.{table}: {e}"));
        let new = s
            .collect(&rows("new"))
            .await
            .unwrap_or_else(|e| panic!("new.{table}: {e}"));
        let schema = |b: &[RecordBatch]| {
            b.first().map(|b| {
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| (f.name().clone(), f.data_type().clone()))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(schema(&old), schema(&new), "{table}: columns and types");
        let (old, new) = (text(&old), text(&new));
        assert!(!old.is_empty(), "{table}: no rows");
        assert_eq!(old.len(), new.len(), "{table}: rows");
        for (i, (a, b)) in old.iter().zip(&new).enumerate() {
            assert_eq!(a, b, "{table}: row {i}");
        }
    }
    // The categories anndata applied are gone from uns; the colours stay.
    let store = s.store("old").unwrap_or_else(|| panic!("old not attached"));
    assert!(store.element("uns/louvain_categories").is_err());
    assert!(store.element("uns/louvain_colors").is_ok());
    assert_eq!(
        store
            .element("obs/louvain")
            .map(|e| e.encoding.clone())
            .ok(),
        Some(Encoding::Categorical)
    );
}

/// Copies the legacy zarr into a tempdir so a test can damage it.
fn legacy_zarr_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    copy_dir(&corpus_dir().join(LEGACY_ZARR), &dir.path().join("s.zarr"));
    dir
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
    assert!(text.contains(from), "{}: no '{from}'", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap_or_else(|e| panic!("{e}"));
}

/// Damaged pre-0.7 stores: each gives an error naming the element, never a wrong value.
#[test]
fn damaged_legacy_stores_give_errors_naming_the_element() {
    let stats = ReadStats::new_shared;
    // A field declared wider than stored: the decoded chunk has the wrong size.
    let dir = legacy_zarr_copy();
    let store_path = dir.path().join("s.zarr");
    edit(&store_path.join("var/.zarray"), "\"|S18\"", "\"|S20\"");
    // Refused at open (the stored fill value no longer fits a record) or when read.
    let err = match AnnDataStore::open(&store_path) {
        Err(e) => e.to_string(),
        Ok(store) => {
            let column = store
                .element("var/gene_ids")
                .unwrap_or_else(|e| panic!("{e}"))
                .clone();
            store
                .read_column(&column, 0..10, &stats())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_else(|| panic!("a damaged record read succeeded"))
        }
    };
    assert!(err.contains("'/var"), "{err}");

    // A field name with '/' cannot be a column: refused at open, naming obs.
    let dir = legacy_zarr_copy();
    let store_path = dir.path().join("s.zarr");
    edit(&store_path.join("obs/.zarray"), "\"index\"", "\"in/dex\"");
    match AnnDataStore::open(&store_path) {
        Err(e @ Error::Unsupported { .. }) => {
            let text = e.to_string();
            assert!(text.contains("'/obs'") && text.contains("in/dex"), "{text}");
        }
        other => panic!("expected Unsupported naming obs, got {other:?}"),
    }

    // Categories in uns for a column of strings: pandas cannot take strings as codes, so anndata
    // refuses the file; annql refuses it at open, naming the column.
    let dir = legacy_zarr_copy();
    let store_path = dir.path().join("s.zarr");
    let uns = store_path.join("uns");
    std::fs::create_dir_all(uns.join("gene_ids_categories")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(uns.join(".zgroup"), r#"{"zarr_format": 2}"#).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        uns.join("gene_ids_categories/.zarray"),
        r#"{"chunks": [2], "compressor": null, "dtype": "|S1", "fill_value": "AA==",
            "filters": null, "order": "C", "shape": [2], "zarr_format": 2}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(uns.join("gene_ids_categories/0"), b"ab").unwrap_or_else(|e| panic!("{e}"));
    match AnnDataStore::open(&store_path) {
        Err(e @ Error::Unsupported { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("'/var/gene_ids'") && text.contains("uns/gene_ids_categories"),
                "{text}"
            );
        }
        other => panic!("expected Unsupported naming var/gene_ids, got {other:?}"),
    }
}

/// A non-ASCII byte in a fixed-length string is an error when read (numpy, and so anndata,
/// cannot decode it), not a replacement character.
#[test]
fn non_ascii_fixed_strings_are_an_error() {
    let dir = legacy_zarr_copy();
    let store_path = dir.path().join("s.zarr");
    let uns = store_path.join("uns");
    std::fs::create_dir_all(uns.join("note")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(uns.join(".zgroup"), r#"{"zarr_format": 2}"#).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        uns.join("note/.zarray"),
        r#"{"chunks": [2], "compressor": null, "dtype": "|S2", "fill_value": "AAA=",
            "filters": null, "order": "C", "shape": [2], "zarr_format": 2}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(uns.join("note/0"), b"ok\xc3\xa9").unwrap_or_else(|e| panic!("{e}"));
    let store = AnnDataStore::open(&store_path).unwrap_or_else(|e| panic!("{e}"));
    let err = store
        .read_array("uns/note", 0..2, &ReadStats::new_shared())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| panic!("a non-ASCII byte string read succeeded"));
    assert!(err.contains("uns/note") && err.contains("ASCII"), "{err}");
}
