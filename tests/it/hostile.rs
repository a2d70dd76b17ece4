//! Hostile files: a FIFO or a symlink loop where a store, chunk or metadata file belongs, real
//! decompression bombs in zarr chunks (blosc, gzip, a zstd inner chunk of a shard), zip members
//! whose declared size lies, a declared shape of 10¹⁵ rows, and, the other way, a matrix of more
//! than 2³¹ stored entries that must answer. Every case damages a copy of a committed fixture
//! written by the real anndata (`tests/fixtures/make_hostile.py` makes the bombs, the zips and the
//! wide store). What could hang runs on a thread with a deadline; what could abort the process
//! runs the CLI in a subprocess under an address-space limit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use annql::engine::AnnSession;
use serde_json::Value;

use crate::common::{assert_close, copy_dir, fixture, python, rows};

/// Runs `f` on its own thread and fails the test if it takes longer than `secs` (a refusal that
/// regressed into a blocking open would otherwise hang the suite).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // The receiver is gone only when the deadline has already failed the test.
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("still running after {secs} s: it hangs"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn session(limit: Option<u64>) -> AnnSession {
    let mut b = AnnSession::builder().with_threads(2);
    if let Some(bytes) = limit {
        b = b.with_read_limit(bytes);
    }
    b.build().unwrap_or_else(|e| panic!("{e}"))
}

/// The error of attaching `path` and running `sql` (an answer is itself a failure).
fn fails(path: &Path, sql: &str, limit: Option<u64>) -> String {
    let path = path.to_path_buf();
    let sql = sql.to_string();
    within(60, move || {
        let s = session(limit);
        if let Err(e) = s.attach("t", &path) {
            return e.to_string();
        }
        match runtime().block_on(s.collect(&sql)) {
            Ok(b) => panic!("{sql}: expected an error, got {:?}", rows(&b)),
            Err(e) => e.to_string(),
        }
    })
}

/// The rows `sql` answers on the store at `path`.
fn answers(path: &Path, sql: &str) -> Vec<Value> {
    let path = path.to_path_buf();
    let sql = sql.to_string();
    within(120, move || {
        let s = session(None);
        s.attach("t", &path)
            .unwrap_or_else(|e| panic!("attach {}: {e}", path.display()));
        rows(
            &runtime()
                .block_on(s.collect(&sql))
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        )
    })
}

/// Asserts `text` names every one of `parts`.
fn names(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "'{p}' missing from: {text}");
    }
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mkfifo {}", path.display());
}

/// A copy of the fixture `name` at `<dir>/<as_name>`.
fn copy_of(dir: &Path, name: &str, as_name: &str) -> PathBuf {
    let to = dir.join(as_name);
    copy_dir(&fixture(name), &to);
    to
}

fn make_hostile(args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(fixture("../make_hostile.py"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("make_hostile.py: {e}"));
    assert!(
        out.status.success(),
        "make_hostile.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const FIFO: &str = "is a FIFO (named pipe), not a regular file";

#[test]
fn fifo_where_a_store_chunk_or_metadata_file_belongs_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for name in ["s.zarr", "s.zarr.zip", "s.h5ad"] {
        let path = dir.path().join(name);
        mkfifo(&path);
        names(&fails(&path, "SELECT 1", None), &[name, FIFO]);
    }
    // A chunk: the query reading it fails naming it; one that does not still answers.
    let store = copy_of(dir.path(), "tiny.v2.zarr", "chunk.zarr");
    let chunk = store.join("X/data/0");
    std::fs::remove_file(&chunk).unwrap_or_else(|e| panic!("{e}"));
    mkfifo(&chunk);
    names(
        &fails(&store, "SELECT sum(value) FROM t.x", None),
        &["X/data/0", FIFO],
    );
    assert_eq!(
        answers(&store, "SELECT count(*) FROM t.obs"),
        vec![serde_json::json!([120.0])]
    );
    // A metadata file of a store without consolidated metadata: that element's note (the query
    // reading obs fails naming it); the rest of the store answers.
    let store = copy_of(dir.path(), "tiny.v2.zarr", "meta.zarr");
    std::fs::remove_file(store.join(".zmetadata")).unwrap_or_else(|e| panic!("{e}"));
    let attrs = store.join("obs/.zattrs");
    std::fs::remove_file(&attrs).unwrap_or_else(|e| panic!("{e}"));
    mkfifo(&attrs);
    names(
        &fails(&store, "SELECT count(*) FROM t.obs", None),
        &["obs/.zattrs", FIFO],
    );
    assert_eq!(
        answers(&store, "SELECT count(*) FROM t.var"),
        vec![serde_json::json!([40.0])]
    );
}

#[test]
fn symlink_loops_are_errors_not_hangs() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = copy_of(dir.path(), "tiny.v2.zarr", "s.zarr");
    let chunk = store.join("X/data/0");
    std::fs::remove_file(&chunk).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(&chunk, &chunk).unwrap_or_else(|e| panic!("{e}"));
    names(
        &fails(&store, "SELECT sum(value) FROM t.x", None),
        &["X/data/0", "symbolic links"],
    );
    // A store whose path is a loop.
    let looped = dir.path().join("loop.zarr");
    std::os::unix::fs::symlink(&looped, &looped).unwrap_or_else(|e| panic!("{e}"));
    names(
        &fails(&looped, "SELECT 1", None),
        &["loop.zarr", "symbolic links"],
    );
}

#[test]
fn decompression_bombs_are_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let v2 = copy_of(dir.path(), "tiny.v2.zarr", "v2.zarr");
    let gzip = copy_of(dir.path(), "tiny.v2.gzip.zarr", "gzip.zarr");
    let v3 = copy_of(dir.path(), "tiny.v3.zarr", "v3.zarr");
    make_hostile(&["bombs", &dir.path().to_string_lossy()]);
    // blosc and zstd declare 64 MiB in their headers; gzip inflates to it.
    for (store, chunk, declared) in [
        (
            &v2,
            "chunk 'X/data/0'",
            "its blosc header declares 67108864 bytes",
        ),
        (
            &gzip,
            "chunk 'X/data/0'",
            "its gzip stream inflates to more than",
        ),
        (
            &v3,
            "chunk 'X/data/c/0'",
            "its zstd frames declare 67108864 bytes",
        ),
    ] {
        let err = fails(store, "SELECT sum(value) FROM t.x", None);
        names(
            &err,
            &[
                "element '/X/data'",
                chunk,
                declared,
                "more than the 256 bytes of its declared shape",
            ],
        );
        assert_eq!(
            answers(store, "SELECT count(*) FROM t.var"),
            vec![serde_json::json!([40.0])]
        );
    }
}

#[test]
fn zip_members_whose_declared_size_lies_are_errors() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("zips");
    make_hostile(&[
        "zipsizes",
        &fixture("tiny.v2.zarr").to_string_lossy(),
        &out.to_string_lossy(),
    ]);
    let sql = "SELECT sum(value) FROM t.x";
    // The deflated archive itself reads as the directory store does.
    assert_eq!(
        answers(&out.join("deflated.zip"), sql),
        answers(&fixture("tiny.v2.zarr"), sql)
    );
    // 4 GiB declared: refused before allocating it, by the default 1 GiB limit...
    names(
        &fails(&out.join("bigger.zip"), sql, None),
        &[
            "bigger.zip",
            "member 'X/data/0'",
            "read limit of 1073741824 bytes",
        ],
    );
    // ...and, under a limit that allows it, found to inflate to less.
    names(
        &fails(&out.join("bigger.zip"), sql, Some(8 << 30)),
        &[
            "member 'X/data/0'",
            "inflates to fewer bytes than the 4294901760",
        ],
    );
    names(
        &fails(&out.join("smaller.zip"), sql, None),
        &[
            "smaller.zip",
            "member 'X/data/0'",
            "inflates to more bytes than",
        ],
    );
}

#[test]
fn the_read_limit_refuses_what_one_read_would_allocate() {
    // chunky.v2.zarr: 10,000 cells in one chunk of codes, X/indptr read whole.
    let store = fixture("chunky.v2.zarr");
    let limit = "more than the read limit of 6000 bytes";
    names(
        &fails(&store, "SELECT cell_type FROM t.obs", Some(6000)),
        &[
            "element '/obs/cell_type/codes'",
            "chunk shape (10000 int8 values) would take 10000 bytes",
            limit,
        ],
    );
    names(
        &fails(&store, "SELECT sum(value) FROM t.x", Some(6000)),
        &["element '/X/indptr'", "reading 10001 int32 values", limit],
    );
    // The same through the CLI flag; a read within the limit answers.
    let run = |sql: &str| {
        Command::new(env!("CARGO_BIN_EXE_annql"))
            .args(["run", "--read-limit", "6000", "-d"])
            .arg(format!("t={}", store.display()))
            .args(["-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("spawn annql: {e}"))
    };
    let out = run("SELECT sum(value) FROM t.x");
    assert!(!out.status.success());
    names(&String::from_utf8_lossy(&out.stderr), &["X/indptr", limit]);
    assert!(run("SELECT count(*) FROM t.var").status.success());
    // A metadata document is one read too.
    names(
        &fails(&fixture("tiny.v2.zarr"), "SELECT 1", Some(100)),
        &[
            ".zmetadata",
            "reading 34539 bytes would exceed the read limit of 100 bytes",
        ],
    );
}

/// A copy of `tiny.v2.zarr` at `<dir>/<name>` with `key` of metadata document `doc` set, for
/// each of `edits`.
fn declared(dir: &Path, name: &str, edits: &[(&str, &str, Value)]) -> PathBuf {
    let store = copy_of(dir, "tiny.v2.zarr", name);
    let path = store.join(".zmetadata");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    for (doc, key, value) in edits {
        v["metadata"][*doc][*key] = value.clone();
    }
    std::fs::write(&path, v.to_string()).unwrap_or_else(|e| panic!("{e}"));
    store
}

#[test]
fn a_declared_shape_of_10_15_rows_is_an_error_not_an_abort() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let n = 1_000_000_000_000_000u64;
    let rows = declared(
        dir.path(),
        "rows.zarr",
        &[
            ("obs/_index/.zarray", "shape", serde_json::json!([n])),
            ("X/.zattrs", "shape", serde_json::json!([n, 40])),
            ("X/indptr/.zarray", "shape", serde_json::json!([n + 1])),
        ],
    );
    let cols = declared(
        dir.path(),
        "cols.zarr",
        &[
            ("var/_index/.zarray", "shape", serde_json::json!([n])),
            ("X/.zattrs", "shape", serde_json::json!([120, n])),
            (
                "obs/cell_type/categories/.zarray",
                "shape",
                serde_json::json!([n]),
            ),
        ],
    );
    let chunk = declared(
        dir.path(),
        "chunk.zarr",
        &[("X/data/.zarray", "chunks", serde_json::json!([n]))],
    );
    let run = |store: &Path, sql: &str| {
        // 4 GB of address space: room for the allocator's and threads' reservations, none for
        // what the declared shape would size.
        Command::new("prlimit")
            .arg("--as=4000000000")
            .arg(env!("CARGO_BIN_EXE_annql"))
            // One partition: the first refusal met is the same on every run.
            .args(["run", "--threads", "1", "-d"])
            .arg(format!("t={}", store.display()))
            .args(["-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("spawn prlimit annql: {e}"))
    };
    for (store, sql, what) in [
        (&rows, "SELECT count(*) FROM t.obs", "the scan's list of"),
        (&rows, "SELECT * FROM t.x LIMIT 2", "the scan's list of"),
        (
            &rows,
            "SELECT obs_id, sum(value) FROM t.x GROUP BY obs_id",
            "positions of an axis",
        ),
        (&cols, "SELECT count(*) FROM t.var", "the scan's list of"),
        (
            &cols,
            "SELECT * FROM t.x WHERE var_id = 3",
            "ids of the minor axis",
        ),
        (
            &cols,
            "SELECT var_id, sum(value) FROM t.x GROUP BY var_id",
            "positions of an axis",
        ),
        (
            &cols,
            "SELECT cell_type FROM t.obs",
            "reading 1000000000000000 string values",
        ),
        (
            &chunk,
            "SELECT sum(value) FROM t.x",
            "declared chunk shape (1000000000000000 float32 values)",
        ),
    ] {
        let out = run(store, sql);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // An abort is a signal (no exit code); an error exits 1.
        assert_eq!(out.status.code(), Some(1), "{sql}: {stderr}");
        names(
            &stderr,
            &[what, "more than the read limit of 1073741824 bytes"],
        );
    }
    // What does not touch the declared shape still answers.
    for (store, sql) in [
        (&rows, "SELECT count(*) FROM t.var"),
        (&cols, "SELECT count(*) FROM t.obs"),
    ] {
        let out = run(store, sql);
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The wide store's figures (see `make_hostile.py wide`).
const ROWS: u64 = 65_536;
const PER_ROW: u64 = 33_000;

#[test]
fn a_matrix_of_more_than_2_31_entries_with_int64_indptr_opens_and_answers() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = dir.path().join("wide.zarr");
    let made: Value = serde_json::from_str(&make_hostile(&["wide", &store.to_string_lossy()]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(made["nnz"], ROWS * PER_ROW);
    // What the store declares: more than 2³¹ entries, reached through an int64 indptr.
    let opened = annql::store::AnnDataStore::open(&store).unwrap_or_else(|e| panic!("{e}"));
    let meta = |p: &str| {
        opened
            .array_meta(p)
            .cloned()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert!(meta("X/data").shape[0] > 1 << 31);
    assert_eq!(meta("X/indptr").dtype, annql::store::DType::Int64);
    // The rows read start past entry 2³¹ and lie in the chunks written.
    let first = 65_530;
    assert!(first * PER_ROW > 1 << 31);
    assert!(Some(first * PER_ROW) >= made["first_written"].as_u64());
    let value = |r: u64, k: u64| (r % 100) as f64 + k as f64 / 1024.0;
    let got = answers(
        &store,
        &format!(
            "SELECT obs_id, var_id, value FROM t.x WHERE obs_id >= {first} \
             AND var_id IN (0, 1023, 32999) ORDER BY obs_id, var_id"
        ),
    );
    let want: Vec<Value> = (first..ROWS)
        .flat_map(|r| {
            [0, 1023, 32_999].map(|k| serde_json::json!([r as f64, k as f64, value(r, k)]))
        })
        .collect();
    assert_close(&Value::Array(got), &Value::Array(want), "entries past 2^31");
    let got = answers(
        &store,
        &format!("SELECT count(*), sum(value) FROM t.x WHERE obs_id >= {first}"),
    );
    let sum: f64 = (first..ROWS)
        .map(|r| (0..PER_ROW).map(|k| value(r, k)).sum::<f64>())
        .sum();
    let (count, total) = (got[0][0].as_f64(), got[0][1].as_f64().unwrap_or(f64::NAN));
    assert_eq!(count, Some(((ROWS - first) * PER_ROW) as f64));
    assert!(
        (total - sum).abs() <= 1e-6 * sum,
        "sum {total}, written {sum}"
    );
}
