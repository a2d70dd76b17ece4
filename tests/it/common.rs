//! Helpers shared by the integration tests: fixture paths and anndata's exported values.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// A file under `tests/fixtures/data/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data")
        .join(name)
}

/// The shared corpus of AnnData files written by many tools (`../shared/corpus/anndata-files`).
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/anndata-files")
}

/// What anndata read back from a fixture (written by `tests/fixtures/make_fixtures.py`).
pub fn expected(name: &str) -> Value {
    let text =
        std::fs::read_to_string(fixture(&format!("{name}.expected.json"))).unwrap_or_else(|e| {
            panic!("fixture {name}.expected.json: {e} (run tests/fixtures/make_fixtures.py)")
        });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}.expected.json: {e}"))
}

/// Compares two JSON values, numbers within a relative tolerance.
pub fn assert_close(got: &Value, want: &Value, what: &str) {
    match (got, want) {
        (Value::Number(g), Value::Number(w)) => {
            let (g, w) = (
                g.as_f64().unwrap_or(f64::NAN),
                w.as_f64().unwrap_or(f64::NAN),
            );
            let tol = 1e-6 * w.abs().max(1.0);
            assert!((g - w).abs() <= tol, "{what}: got {g}, anndata read {w}");
        }
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{what}: length");
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                assert_close(g, w, &format!("{what}[{i}]"));
            }
        }
        (g, w) => assert_eq!(g, w, "{what}"),
    }
}
