//! Gene indexes (`annql index`, `annql::index`): the CSC copy equals scipy's `tocsc()` of the
//! same matrix as anndata reads it (tests/fixtures/check_index.py), whatever the source's format,
//! chunking or number of passes; queries answer the same with and without it while reading the
//! copy instead of the matrix; a stale copy is ignored; an interrupted build leaves nothing that
//! would be used; two builds do not race; the build stays within the memory it is given.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use annql::engine::AnnSession;
use annql::index::{Error, IndexOptions, build, check, default_location};
use annql::store::StorageOptions;
use serde_json::{Value, json};

use crate::common::{assert_close, copy_dir, fixture, python, rows};

/// A copy of fixture `name` in `dir` (sources are never indexed in place of the repository).
fn copy_fixture(dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    let from = fixture(name);
    if from.is_dir() {
        copy_dir(&from, &to);
    } else {
        std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    to
}

fn index(source: &Path, options: IndexOptions) -> annql::index::IndexSummary {
    build(
        &source.to_string_lossy(),
        &StorageOptions::default(),
        &options,
        &|_, _| {},
    )
    .unwrap_or_else(|e| panic!("{}: {e}", source.display()))
}

fn matrix(name: &str) -> IndexOptions {
    IndexOptions {
        matrix: name.into(),
        ..IndexOptions::default()
    }
}

/// Runs tests/fixtures/check_index.py over `jobs`; panics with its report if any copy differs.
fn check_with_scipy(dir: &Path, jobs: &[Value]) {
    let manifest = dir.join("index-jobs.json");
    std::fs::write(&manifest, serde_json::to_vec(jobs).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let script = Path::new(crate::common::REPO).join("tests/fixtures/check_index.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(&manifest)
        .output()
        .unwrap_or_else(|e| panic!("python: {e}"));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report.lines().count(), jobs.len(), "{report}");
}

#[test]
fn the_copy_equals_scipy_tocsc_for_every_format_and_any_number_of_passes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut jobs = Vec::new();
    let stores = [
        ("tiny.v2.zarr", &["X", "layers/counts"][..]),
        ("tiny.v3.zarr", &["X"][..]),
        ("tiny.v2.zarr.zip", &["X"][..]),
        ("tiny.h5ad", &["X", "layers/counts"][..]),
        // X's data and indices in chunks of 1000 entries, never aligned to rows.
        ("chunky.v2.zarr", &["X"][..]),
        ("chunky.v3.zarr", &["X"][..]),
        ("chunky.h5ad", &["X"][..]),
        // Empty rows and columns (the first and last genes), chunks of 7 entries, int32 and
        // float64 values, a matrix without entries.
        ("edges.v2.zarr", &["X", "layers/counts", "layers/none"][..]),
        ("edges.v3.zarr", &["X", "layers/none"][..]),
        ("edges.h5ad", &["X", "layers/counts"][..]),
    ];
    for (name, matrices) in stores {
        let source = copy_fixture(dir.path(), name);
        for (i, m) in matrices.iter().enumerate() {
            // The first matrix in one pass, the others in windows of 5 entries (tens of passes,
            // windows cut inside columns); each later build keeps the copies built before.
            let options = IndexOptions {
                window: (i > 0 || name.starts_with("edges")).then_some(5),
                ..matrix(m)
            };
            let built = index(&source, options);
            assert_eq!(
                built.sidecar,
                default_location(&source.to_string_lossy()).unwrap()
            );
            jobs.push(json!({
                "source": source, "matrix": m, "sidecar": built.sidecar,
            }));
        }
        // Every copy of the sidecar is still there and matches the source.
        let sidecar = default_location(&source.to_string_lossy()).unwrap();
        let statuses = check(
            &source.to_string_lossy(),
            &StorageOptions::default(),
            &sidecar,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let listed: Vec<&str> = statuses.iter().map(|s| s.matrix.as_str()).collect();
        assert_eq!(listed.len(), matrices.len(), "{name}: {listed:?}");
        assert!(
            statuses.iter().all(|s| s.stale.is_none()),
            "{name}: {statuses:?}"
        );
    }
    check_with_scipy(dir.path(), &jobs);
}

#[test]
fn in_place_the_copy_is_a_layer_anndata_reads_and_the_engine_uses() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut jobs = Vec::new();
    for name in ["chunky.v2.zarr", "edges.v3.zarr"] {
        let source = copy_fixture(dir.path(), name);
        let built = index(
            &source,
            IndexOptions {
                in_place: true,
                window: Some(777),
                ..matrix("X")
            },
        );
        assert_eq!(built.sidecar, source.join("layers/X_csc"));
        assert!(
            !default_location(&source.to_string_lossy())
                .unwrap()
                .exists()
        );
        jobs.push(json!({"source": source, "matrix": "X", "sidecar": null}));
        let s = AnnSession::builder().with_threads(2).build().unwrap();
        s.attach("c", &source).unwrap();
        let plan = explain(&s, "SELECT value FROM c.x WHERE var_id = 3").await_blocking();
        assert!(plan.contains("csc_copy=/layers/X_csc"), "{plan}");
    }
    check_with_scipy(dir.path(), &jobs);
    // A file store cannot take a layer in place.
    let h5ad = copy_fixture(dir.path(), "tiny.h5ad");
    let err = build(
        &h5ad.to_string_lossy(),
        &StorageOptions::default(),
        &IndexOptions {
            in_place: true,
            ..matrix("X")
        },
        &|_, _| {},
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("local zarr directory"), "{err}");
}

/// Small helper: run a future to completion on a fresh runtime (for the sync tests).
trait AwaitBlocking: std::future::Future + Sized {
    fn await_blocking(self) -> Self::Output {
        tokio::runtime::Runtime::new().unwrap().block_on(self)
    }
}
impl<F: std::future::Future> AwaitBlocking for F {}

async fn explain(s: &AnnSession, sql: &str) -> String {
    let batches = s.collect(&format!("EXPLAIN {sql}")).await.unwrap();
    rows(&batches)
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn session(store: &Path, index: &str) -> AnnSession {
    let s = AnnSession::builder().with_threads(2).build().unwrap();
    s.sql(&format!(
        "ATTACH '{}' AS c (index '{index}')",
        store.display()
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    s
}

/// Gene-selective questions: plain scans, the zero-filled view, the fused aggregation (Q2, Q5
/// and Q7 of the benchmark in the fixture's terms).
const GENE_QUERIES: [&str; 4] = [
    "SELECT x.obs_id, x.value FROM c.x x JOIN c.var v USING (var_id) WHERE v.var_name = 'G7'",
    "SELECT o.cell_type, avg(d.value) FROM c.x_dense d JOIN c.obs o USING (obs_id) \
     JOIN c.var v USING (var_id) WHERE v.var_name = 'G3' GROUP BY 1",
    "SELECT o.cell_type, v.var_name, avg(d.value), count(*) FILTER (WHERE d.value > 0) \
     FROM c.x_dense d JOIN c.obs o USING (obs_id) JOIN c.var v USING (var_id) \
     WHERE v.var_name IN ('G3', 'G30', 'G31', 'G49') GROUP BY 1, 2",
    "SELECT o.obs_name, CAST(d.value AS DOUBLE) FROM c.x_dense d JOIN c.obs o USING (obs_id) \
     JOIN c.var v USING (var_id) WHERE o.cell_type = 'b' AND v.var_name = 'G12'",
];

async fn sorted(s: &AnnSession, sql: &str) -> Vec<Value> {
    let mut r = rows(
        &s.collect(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}")),
    );
    r.sort_by_key(|v| v.to_string());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_the_same_with_the_index_which_is_read_instead_of_the_matrix() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for name in ["chunky.v2.zarr", "chunky.v3.zarr", "chunky.h5ad"] {
        let source = copy_fixture(dir.path(), name);
        index(
            &source,
            IndexOptions {
                window: Some(4096),
                ..matrix("X")
            },
        );
        let sidecar = default_location(&source.to_string_lossy()).unwrap();
        let (with, without) = (
            session(&source, &sidecar.to_string_lossy()).await,
            session(&source, "off").await,
        );
        let plan = explain(&with, GENE_QUERIES[2]).await;
        assert!(
            plan.contains(&format!("csc_copy={}:/X", sidecar.display())),
            "{plan}"
        );
        assert!(
            !explain(&without, GENE_QUERIES[2])
                .await
                .contains("csc_copy")
        );
        for sql in GENE_QUERIES {
            let totals = with.store("c").unwrap().totals().clone();
            let before = totals.keys_under("X/indices") + totals.keys_under("X/data");
            let got = sorted(&with, sql).await;
            let after = totals.keys_under("X/indices") + totals.keys_under("X/data");
            let want = sorted(&without, sql).await;
            assert!(!want.is_empty(), "{sql}: empty");
            assert_close(
                &Value::Array(got),
                &Value::Array(want),
                &format!("{name}: {sql}"),
            );
            assert_eq!(
                after, before,
                "{name}: {sql} read X's entries, not the copy"
            );
        }
    }
    // Q1–Q7 on the tiny fixture, indexed (X and layers/counts), equal pandas' answers.
    for name in ["tiny.v2.zarr", "tiny.v3.zarr", "tiny.h5ad"] {
        let source = copy_fixture(dir.path(), name);
        index(&source, matrix("X"));
        index(
            &source,
            IndexOptions {
                window: Some(100),
                ..matrix("layers/counts")
            },
        );
        let s = AnnSession::builder().with_threads(2).build().unwrap();
        s.attach("t", &source).unwrap();
        let plan = explain(&s, "SELECT value FROM t.layers_counts WHERE var_id = 3").await;
        assert!(plan.contains("csc_copy="), "{plan}");
        crate::engine::assert_q1_q7_equal_pandas(&s, &format!("{name} (indexed)")).await;
    }
}

/// Plans name the copy they may read (`, csc_copy=…`); everything else is as without it.
fn same_but_the_copy(
    normalizer: sqllogictest::Normalizer,
    actual: &[Vec<String>],
    expected: &[String],
) -> bool {
    let strip = |cell: &String| match cell.find(", csc_copy=") {
        Some(i) => {
            let rest = &cell[i + ", csc_copy=".len()..];
            format!(
                "{}{}",
                &cell[..i],
                &rest[rest.find(", ").unwrap_or(rest.len())..]
            )
        }
        None => cell.clone(),
    };
    let actual: Vec<Vec<String>> = actual
        .iter()
        .map(|r| r.iter().map(strip).collect())
        .collect();
    sqllogictest::default_validator(normalizer, &actual, expected)
}

/// The sqllogictest suite over indexed copies of the fixtures: every expectation holds with the
/// index (plans show the copy besides, which [`same_but_the_copy`] leaves out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slt_suite_answers_the_same_on_indexed_stores() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut failures = Vec::new();
    for (tiny, chunky) in [
        ("tiny.v2.zarr", "chunky.v2.zarr"),
        ("tiny.v3.zarr", "chunky.v3.zarr"),
        ("tiny.h5ad", "chunky.h5ad"),
    ] {
        let (tiny, chunky) = (
            copy_fixture(dir.path(), tiny),
            copy_fixture(dir.path(), chunky),
        );
        for store in [&tiny, &chunky] {
            index(
                store,
                IndexOptions {
                    window: Some(3000),
                    ..matrix("X")
                },
            );
        }
        index(&tiny, matrix("layers/counts"));
        for file in crate::slt::files() {
            let mut runner = crate::slt::located_runner(
                tiny.display().to_string(),
                chunky.display().to_string(),
                StorageOptions::default(),
            );
            runner.with_validator(same_but_the_copy);
            if let Err(e) = runner.run_file_async(&file).await {
                failures.push(format!("[{}] {}: {e}", tiny.display(), file.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_index_is_ignored_and_never_answers() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let source = copy_fixture(dir.path(), "chunky.v2.zarr");
    index(&source, matrix("X"));
    let sidecar = default_location(&source.to_string_lossy()).unwrap();
    // anndata rewrites X with other values: same shape, same indptr (a normalisation in place).
    let script = format!(
        "import anndata as ad, zarr\n\
         a = ad.read_zarr(r'{0}')\n\
         a.X.data = a.X.data * 2 + 1\n\
         g = zarr.open_group(r'{0}', mode='a', use_consolidated=False)\n\
         del g['X']\n\
         ad.io.write_elem(g, 'X', a.X, dataset_kwargs={{'chunks': (1000,)}})\n\
         zarr.consolidate_metadata(r'{0}')\n",
        source.display()
    );
    let out = Command::new(python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let statuses = check(
        &source.to_string_lossy(),
        &StorageOptions::default(),
        &sidecar,
    )
    .unwrap();
    let why = statuses[0].stale.clone().unwrap_or_default();
    assert!(why.contains("changed"), "{statuses:?}");
    let (with, without) = (
        session(&source, &sidecar.to_string_lossy()).await,
        session(&source, "off").await,
    );
    for sql in GENE_QUERIES {
        let got = sorted(&with, sql).await;
        let want = sorted(&without, sql).await;
        assert_close(&Value::Array(got), &Value::Array(want), sql);
    }
    assert!(!explain(&with, GENE_QUERIES[0]).await.contains("csc_copy"));
    // The CLI says so, and fails, so scripts notice.
    let out = Command::new(env!("CARGO_BIN_EXE_annql"))
        .args(["index", "--check"])
        .arg(&source)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("stale"), "{text}");
    // Rebuilt, it is used again.
    index(&source, matrix("X"));
    let s = session(&source, &sidecar.to_string_lossy()).await;
    assert!(explain(&s, GENE_QUERIES[0]).await.contains("csc_copy"));
}

#[test]
fn an_interrupted_build_leaves_no_index_and_two_builds_do_not_race() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let source = copy_fixture(dir.path(), "chunky.v2.zarr");
    let sidecar = default_location(&source.to_string_lossy()).unwrap();
    // Cancelled at its first progress report (the count pass).
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let result = build(
        &source.to_string_lossy(),
        &StorageOptions::default(),
        &IndexOptions {
            cancel: Some(cancel),
            window: Some(1000),
            ..matrix("X")
        },
        &move |_, _| flag.store(true, Ordering::SeqCst),
    );
    assert!(matches!(result, Err(Error::Cancelled(_))), "{result:?}");
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("annql-index"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // A build killed mid-way leaves its temporary and its lock: neither is ever used as an index,
    // and the next build takes over both.
    let killed = dir
        .path()
        .join(".chunky.v2.zarr.annql-index.annql-tmp-999999-0");
    std::fs::create_dir_all(killed.join("X")).unwrap();
    std::fs::write(killed.join("zarr.json"), "{").unwrap();
    let lock = PathBuf::from(format!("{}.lock", sidecar.display()));
    std::fs::write(&lock, "999999").unwrap();
    let s = AnnSession::builder().with_threads(2).build().unwrap();
    s.attach("c", &source).unwrap();
    let plan = explain(&s, GENE_QUERIES[0]).await_blocking();
    assert!(!plan.contains("csc_copy"), "{plan}");
    index(&source, matrix("X"));
    assert!(sidecar.exists() && !killed.exists() && !lock.exists());
    // A live builder's lock stops a second build, naming the process.
    std::fs::write(&lock, std::process::id().to_string()).unwrap();
    let err = build(
        &source.to_string_lossy(),
        &StorageOptions::default(),
        &matrix("X"),
        &|_, _| {},
    );
    match err {
        Err(Error::Locked { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
        other => panic!("expected the lock to stop the build: {other:?}"),
    }
    std::fs::remove_file(&lock).unwrap();
    // `--drop` removes the index; --out at a store that is not an index is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_annql"))
        .args(["index", "--drop"])
        .arg(&source)
        .output()
        .unwrap();
    assert!(out.status.success() && !sidecar.exists(), "{out:?}");
    let other = copy_fixture(dir.path(), "tiny.v2.zarr");
    let err = build(
        &source.to_string_lossy(),
        &StorageOptions::default(),
        &IndexOptions {
            out: Some(other.clone()),
            ..matrix("X")
        },
        &|_, _| {},
    );
    assert!(matches!(err, Err(Error::BadSidecar { .. })), "{err:?}");
    assert!(other.join("obs").exists());
}

/// The SQL statement: built from the REPL's session, used by the next query; refused where the
/// session may not write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_gene_index_builds_and_uses_it_and_a_read_only_session_refuses() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let source = copy_fixture(dir.path(), "chunky.v2.zarr");
    let s = AnnSession::builder().with_threads(2).build().unwrap();
    s.sql(&format!("ATTACH '{}' AS c", source.display()))
        .await
        .unwrap();
    assert!(!explain(&s, GENE_QUERIES[0]).await.contains("csc_copy"));
    let summary = rows(
        &s.collect("CREATE GENE INDEX ON c.x WITH (memory '256MiB')")
            .await
            .unwrap(),
    );
    assert_eq!(summary[0][4].as_f64(), Some(50_000.0), "{summary:?}");
    assert!(explain(&s, GENE_QUERIES[0]).await.contains("csc_copy"));
    s.collect("DROP GENE INDEX ON c").await.unwrap();
    assert!(!explain(&s, GENE_QUERIES[0]).await.contains("csc_copy"));
    let read_only = AnnSession::builder()
        .with_write_policy(annql::engine::export::WritePolicy::ReadOnly)
        .build()
        .unwrap();
    read_only.attach("c", &source).unwrap();
    let err = read_only
        .collect("CREATE GENE INDEX ON c")
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref().unwrap_or("").contains("read-only"),
        "{err:?}"
    );
    assert!(
        !default_location(&source.to_string_lossy())
            .unwrap()
            .exists()
    );
}

/// `annql index --memory 64MiB` on a 5,000-cell atlas (6M entries, ~50 MB as CSC) made by
/// ../shared/datagen/make_atlas.py: the process's peak stays within the limit.
#[test]
fn a_small_atlas_is_indexed_within_64_mib() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let atlas = dir.path().join("atlas.zarr");
    let make = Path::new(crate::common::REPO).join("../shared/datagen/make_atlas.py");
    let out = Command::new(python())
        .arg(&make)
        .args(["--cells", "5000", "--out"])
        .arg(&atlas)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = "import resource, subprocess, sys\n\
                  p = subprocess.run(sys.argv[1:], capture_output=True)\n\
                  assert p.returncode == 0, p.stderr.decode()\n\
                  print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, p.stdout.decode().strip())\n";
    let out = Command::new(python())
        .args([
            "-c",
            script,
            env!("CARGO_BIN_EXE_annql"),
            "index",
            "--memory",
            "64MiB",
        ])
        .arg(&atlas)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peak: f64 = text
        .split(' ')
        .next()
        .unwrap_or("")
        .parse()
        .unwrap_or(f64::MAX);
    eprintln!("annql index --memory 64MiB: peak {peak:.1} MiB ({text})");
    assert!(
        peak <= 64.0,
        "peak {peak:.1} MiB over --memory 64MiB: {text}"
    );
    assert!(text.contains("pass"), "{text}");
    check_with_scipy(
        dir.path(),
        &[json!({"source": atlas, "matrix": "X",
                 "sidecar": default_location(&atlas.to_string_lossy())})],
    );
}

/// Over loopback HTTP, a one-gene question on an indexed remote store fetches that gene's column
/// of the copy (plus shard indexes and `indptr`), and none of the matrix's entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_indexed_store_fetches_only_the_genes_column() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let source = copy_fixture(dir.path(), "chunky.v2.zarr");
    index(&source, matrix("X"));
    let nginx = crate::remote::Nginx::serving(dir.path());
    let s = AnnSession::builder().with_threads(2).build().unwrap();
    s.sql(&format!(
        "ATTACH '{}' AS c (index '{}')",
        nginx.url("chunky.v2.zarr"),
        nginx.url("chunky.v2.zarr.annql-index")
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let local = session(&source, "off").await;
    let sql = GENE_QUERIES[0];
    assert_close(
        &Value::Array(sorted(&s, sql).await),
        &Value::Array(sorted(&local, sql).await),
        sql,
    );
    // G7's column: its entries' cell ids and values, 4 bytes each.
    let x = &crate::common::expected("chunky")["X"];
    let entries = x["indices"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|v| v.as_u64() == Some(7)).count()) as u64;
    assert!(entries > 0);
    let column = entries * 8;
    let copy_entries =
        nginx.bytes_for("annql-index/X/data") + nginx.bytes_for("annql-index/X/indices");
    let copy_all = nginx.bytes_for("annql-index/");
    let source_entries =
        nginx.bytes_for("chunky.v2.zarr/X/data") + nginx.bytes_for("chunky.v2.zarr/X/indices");
    eprintln!(
        "one gene over HTTP: column {column} B, copy's entries {copy_entries} B, copy in all \
         {copy_all} B, source's X entries {source_entries} B"
    );
    if std::env::var_os("ANNQL_DUMP_LOG").is_some() {
        nginx.dump();
    }
    assert_eq!(source_entries, 0, "the matrix's entries were fetched");
    assert!(copy_entries > 0, "the copy was not read");
    assert!(
        copy_all as f64 <= 1.5 * column as f64 + (1 << 20) as f64,
        "fetched {copy_all} B of the copy for a {column} B column"
    );
}

/// `annql serve` finds the index beside each dataset at start: BI queries read the copy too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_uses_the_index_beside_its_datasets() {
    use annql_server::{Dataset, Server, ServerConfig};
    use tokio_postgres::SimpleQueryMessage;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let source = copy_fixture(dir.path(), "chunky.v2.zarr");
    index(&source, matrix("X"));
    let config = ServerConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        datasets: vec![Dataset {
            name: "c".into(),
            location: source.clone(),
            options: Default::default(),
        }],
        threads: Some(2),
        ..ServerConfig::default()
    };
    let server = Server::bind(config).await.expect("server starts");
    let addr = server.local_addr().expect("bound");
    tokio::spawn(server.run());
    let client = crate::common::pg_connect(addr).await.expect("connect");
    let text = |messages: Vec<SimpleQueryMessage>| -> Vec<String> {
        crate::server::simple_rows(&messages)
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|c| c.unwrap_or_else(|| "NULL".into()))
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect()
    };
    let plan = text(
        client
            .simple_query(&format!("EXPLAIN {}", GENE_QUERIES[0]))
            .await
            .unwrap(),
    );
    assert!(plan.join("\n").contains("csc_copy="), "{plan:?}");
    let mut got = text(client.simple_query(GENE_QUERIES[3]).await.unwrap());
    got.sort();
    let local = session(&source, "off").await;
    let want = sorted(&local, GENE_QUERIES[3]).await;
    assert_eq!(got.len(), want.len());
    assert!(!got.is_empty());
}
