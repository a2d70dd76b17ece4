//! Helpers shared by the integration tests: fixture paths and anndata's exported values.

use std::path::{Path, PathBuf};

use annql::engine::datafusion::arrow::array::RecordBatch;
use annql::engine::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::Value;

/// Every physical layout of the `tiny` fixture: zarr v2/v3 directories, zips and HDF5 files.
pub const TINY_LAYOUTS: [&str; 9] = [
    "tiny.v2.zarr",
    "tiny.v2.gzip.zarr",
    "tiny.v3.zarr",
    "tiny.v2.zarr.zip",
    "tiny.v3.zarr.zip",
    "tiny.nested.zarr.zip",
    "tiny.h5ad",
    "tiny.gzip.h5ad",
    "tiny.lzf.h5ad",
];

/// The repository's root: the tests are annql-cli's (beside the binary they run), their files
/// the repository's.
pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// A file under `tests/fixtures/data/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(crate::common::REPO)
        .join("tests/fixtures/data")
        .join(name)
}

/// The shared corpus of AnnData files written by many tools (`../shared/corpus/anndata-files`).
pub fn corpus_dir() -> PathBuf {
    Path::new(crate::common::REPO).join("../shared/corpus/anndata-files")
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

/// Rows as JSON values (numbers parsed back, so they compare within tolerance).
pub fn rows(batches: &[RecordBatch]) -> Vec<Value> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        for r in 0..b.num_rows() {
            out.push(Value::Array(
                fmts.iter()
                    .map(|f| {
                        let s = f.value(r).to_string();
                        s.parse::<f64>()
                            .map(|n| serde_json::json!(n))
                            .unwrap_or(Value::String(s))
                    })
                    .collect(),
            ));
        }
    }
    out
}

/// The Python the tests drive clients and servers with: `$ANNQL_PYTHON`, or the virtual environment
/// `.venv/` that `bash .ci/deps` makes. A missing one fails the test that needs it, never skips it.
pub fn python() -> PathBuf {
    let path = std::env::var_os("ANNQL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(crate::common::REPO).join(".venv/bin/python"));
    assert!(
        path.exists(),
        "no Python environment at {} (run `bash .ci/deps`, or set ANNQL_PYTHON)",
        path.display()
    );
    path
}

/// Copies a directory store so a test can damage the copy (sources are never modified).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{e}"));
    for entry in std::fs::read_dir(from).into_iter().flatten().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Every store of the corpus below `dir`, sorted: `.h5ad`, `.h5mu`, `.zarr.zip` files and `.zarr`
/// directories (as `tests/fixtures/make_corpus_expected.py` walks it).
pub fn corpus_stores(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = entry.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if p.is_dir() && name.ends_with(".zarr") {
                out.push(p);
            } else if p.is_dir() {
                walk(&p, out);
            } else if [".h5ad", ".h5mu", ".zarr.zip"]
                .iter()
                .any(|s| name.ends_with(s))
            {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// A tokio-postgres client of the annql server at `addr` (user `annql`, no TLS); its connection
/// is driven on a spawned task.
pub async fn pg_connect(
    addr: std::net::SocketAddr,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let dsn = format!(
        "host={} port={} user=annql dbname=annql",
        addr.ip(),
        addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}
