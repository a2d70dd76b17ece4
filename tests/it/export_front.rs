//! Subsets written as new AnnData stores, through each front end: SQL `COPY dataset TO …`, the
//! pipeline language's `write`, `annql export`, and the server (read-only unless
//! `--writable-dir`, and then only inside it). What is written is read back by the real anndata
//! and compared with `adata[obs_mask, var_mask]`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use annql::engine::AnnSession;
use annql::engine::datafusion::arrow::array::{AsArray, RecordBatch};
use annql::engine::datafusion::arrow::datatypes::Int64Type;
use annql_server::{Dataset, Server, ServerConfig};
use tokio_postgres::SimpleQueryMessage;

use crate::common::{fixture, pg_connect, python};

/// What tiny holds that annql refuses to cut (an awkward array, a rec-array in uns): left out.
const EXCLUDE: &str = "EXCLUDE 'obsm/awk, uns/rec'";
/// The selection the tests cut: blood cells, highly variable genes.
const OBS_SQL: &str = "tissue = 'blood'";
const VAR_SQL: &str = "highly_variable";
const OBS_PY: &str = "obs['tissue'] == 'blood'";
const VAR_PY: &str = "var['highly_variable']";

/// Reads `out` with anndata and checks it equals `src[obs_mask, var_mask]` (X, layers, obs, var,
/// obsm), the masks being Python expressions over `obs` and `var`.
fn assert_subset(src: &Path, out: &Path, obs_mask: &str, var_mask: &str) {
    let script = r#"
import sys, warnings
warnings.simplefilter("ignore")
import anndata as ad, numpy as np, pandas as pd, scipy.sparse as sp
src_path, out_path, obs_mask, var_mask = sys.argv[1:5]
def read(p):
    return ad.read_h5ad(p) if p.endswith(".h5ad") else ad.read_zarr(p)
src, out = read(src_path), read(out_path)
obs, var = src.obs, src.var
want = src[eval(obs_mask).to_numpy(), eval(var_mask).to_numpy()].copy()
def dense(m):
    return m.toarray() if sp.issparse(m) else np.asarray(m)
assert out.shape == want.shape, (out.shape, want.shape)
np.testing.assert_array_equal(dense(out.X), dense(want.X))
assert sorted(out.layers.keys()) == sorted(want.layers.keys())
for k in want.layers:
    np.testing.assert_array_equal(dense(out.layers[k]), dense(want.layers[k]))
pd.testing.assert_frame_equal(out.obs, want.obs)
pd.testing.assert_frame_equal(out.var, want.var)
for k in want.obsm:
    v = want.obsm[k]
    if isinstance(v, np.ndarray) or sp.issparse(v):
        np.testing.assert_array_equal(dense(out.obsm[k]), dense(v))
print("equal", out.shape)
"#;
    let o = Command::new(python())
        .args(["-c", script])
        .arg(src)
        .arg(out)
        .args([obs_mask, var_mask])
        .output()
        .unwrap_or_else(|e| panic!("python: {e}"));
    assert!(
        o.status.success(),
        "anndata's read of {} differs from the subset:\n{}{}",
        out.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn annql(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_annql"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn annql: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

fn tiny_session() -> AnnSession {
    let session = AnnSession::new().unwrap_or_else(|e| panic!("{e}"));
    annql::lang::install(&session).unwrap_or_else(|e| panic!("{e}"));
    session
        .attach("tiny", fixture("tiny.v2.zarr"))
        .unwrap_or_else(|e| panic!("{e}"));
    session
}

/// The single row of an export's result: (path, format, n_obs, n_vars).
fn summary(batches: &[RecordBatch]) -> (String, String, i64, i64) {
    let b = &batches[0];
    assert_eq!(b.num_rows(), 1);
    (
        b.column(0).as_string::<i32>().value(0).to_string(),
        b.column(1).as_string::<i32>().value(0).to_string(),
        b.column(2).as_primitive::<Int64Type>().value(0),
        b.column(3).as_primitive::<Int64Type>().value(0),
    )
}

// ---------------------------------------------------------------------------------------------
// SQL

#[tokio::test]
async fn sql_copy_writes_the_subset() {
    let dir = tmpdir();
    let session = tiny_session();
    for (name, format) in [
        ("blood.h5ad", "h5ad"),
        ("blood.zarr", "zarr3-sharded"),
        ("blood2.zarr", "zarr2"),
    ] {
        let out = dir.path().join(name);
        let with = if name == "blood2.zarr" {
            format!(" WITH (ZARR_VERSION 2, CHUNK_LEN 16, {EXCLUDE})")
        } else {
            format!(" ({EXCLUDE})")
        };
        let sql = format!(
            "COPY tiny TO '{}' WHERE OBS ({OBS_SQL}) AND VAR ({VAR_SQL}){with}",
            out.display()
        );
        let batches = session
            .collect(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let (path, got_format, n_obs, n_vars) = summary(&batches);
        assert_eq!(path, out.display().to_string());
        assert_eq!(got_format, format);
        let blood = session
            .collect("SELECT count(*) FROM tiny.obs WHERE tissue = 'blood'")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            n_obs,
            blood[0].column(0).as_primitive::<Int64Type>().value(0)
        );
        assert!(n_vars > 0 && n_vars < 40);
        assert_subset(&fixture("tiny.v2.zarr"), &out, OBS_PY, VAR_PY);
    }
}

#[tokio::test]
async fn sql_copy_errors_name_the_problem() {
    let dir = tmpdir();
    let session = tiny_session();
    let exists = dir.path().join("exists.h5ad");
    std::fs::write(&exists, b"not an anndata").unwrap_or_else(|e| panic!("{e}"));
    let cases = [
        (
            "COPY tiny WHERE OBS (tissue = 'blood')".to_string(),
            "needs TO 'path'",
        ),
        (
            format!(
                "COPY tiny TO '{}/a.h5ad' WITH (FORMAT 'csv')",
                dir.path().display()
            ),
            "unknown format 'csv'",
        ),
        (
            format!("COPY tiny TO '{}/a.parquet'", dir.path().display()),
            "cannot tell the format",
        ),
        (
            format!(
                "COPY tiny TO '{}/a.h5ad' WHERE OBS (tisue = 'blood')",
                dir.path().display()
            ),
            "tisue",
        ),
        (
            format!(
                "COPY tiny TO '{}/a.h5ad' WHERE VAR (highly_variabel)",
                dir.path().display()
            ),
            "highly_variabel",
        ),
        (
            format!(
                "COPY nope TO '{}/a.h5ad' WHERE OBS (x)",
                dir.path().display()
            ),
            "no dataset named 'nope'",
        ),
        (
            format!("COPY tiny TO '{}'", exists.display()),
            "already exists",
        ),
    ];
    for (sql, needle) in cases {
        let err = match session.collect(&sql).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{sql} succeeded"),
        };
        assert!(err.contains(needle), "{sql}: {err}");
    }
    // The predicate's error says which axis it is.
    let err = session
        .collect(&format!(
            "COPY tiny TO '{}/a.h5ad' WHERE OBS (tisue = 1)",
            dir.path().display()
        ))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("obs predicate"), "{err}");
    // Nothing was written by the failures, and the existing file is untouched.
    assert!(!dir.path().join("a.h5ad").exists());
    assert_eq!(
        std::fs::read(&exists).unwrap_or_default(),
        b"not an anndata"
    );
}

#[tokio::test]
async fn datafusion_copy_still_writes_files() {
    let dir = tmpdir();
    let session = tiny_session();
    let out = dir.path().join("obs.csv");
    session
        .collect(&format!(
            "COPY (SELECT obs_id, tissue FROM tiny.obs ORDER BY obs_id) TO '{}' STORED AS CSV",
            out.display()
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let written = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(written.lines().count(), 121, "{written}");
}

// ---------------------------------------------------------------------------------------------
// Pipelines

#[tokio::test]
async fn pipeline_write_lowers_to_the_sql_selection() {
    let session = tiny_session();
    let source = r#"let hv = ["CD8A", "CD14"]
from tiny | where tissue == "blood" | where n_genes > 0 | write "x.h5ad" genes hv with overwrite = true"#;
    let pipeline = annql::lang::parse(source).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        pipeline
            .to_string()
            .ends_with(r#"(write "x.h5ad" (genes hv) (with (overwrite = true)))"#),
        "{pipeline}"
    );
    let request = annql::lang::write::request(&session, source, &pipeline)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(request.options.overwrite);
    // The lowered predicates select what the SQL ones do.
    use annql::engine::select::{SelectAxis, select_rows};
    let obs = request.obs.unwrap_or_default();
    let got = select_rows(&session, "tiny", SelectAxis::Obs, &obs)
        .await
        .unwrap_or_else(|e| panic!("{obs}: {e}"));
    let want = select_rows(
        &session,
        "tiny",
        SelectAxis::Obs,
        "tissue = 'blood' AND n_genes > 0",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, want);
    assert!(!got.is_empty());
    let var = request.var.unwrap_or_default();
    let got = select_rows(&session, "tiny", SelectAxis::Var, &var)
        .await
        .unwrap_or_else(|e| panic!("{var}: {e}"));
    assert_eq!(got, vec![2, 4]);
    // A var predicate, with `var.` names.
    let source = r#"from tiny | write "x.h5ad" genes var.highly_variable and var.means > 0.1"#;
    let pipeline = annql::lang::parse(source).unwrap_or_else(|e| panic!("{e}"));
    let request = annql::lang::write::request(&session, source, &pipeline)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(request.obs, None);
    let var = request.var.unwrap_or_default();
    let got = select_rows(&session, "tiny", SelectAxis::Var, &var)
        .await
        .unwrap_or_else(|e| panic!("{var}: {e}"));
    let want = select_rows(
        &session,
        "tiny",
        SelectAxis::Var,
        "highly_variable AND means > 0.1",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, want);
}

#[tokio::test]
async fn pipeline_write_errors_point_at_the_stage() {
    let session = tiny_session();
    for (source, needle, at) in [
        (
            r#"from tiny | group cell_type | write "x.h5ad""#,
            "only `where` stages",
            "group cell_type",
        ),
        (
            r#"from tiny.var | write "x.h5ad""#,
            "start with `from tiny`",
            "var",
        ),
        (
            r#"from tiny | write "x.h5ad" with colour = "red""#,
            "unknown option `colour`",
            "colour",
        ),
        (
            r#"from tiny | write "x.h5ad" with overwrite = 1"#,
            "`overwrite` needs true or false",
            "1",
        ),
        (
            r#"from tiny | where tisue == "blood" | write "x.h5ad""#,
            "tisue",
            "tisue",
        ),
        (
            r#"from tiny | write "x.h5ad" genes var.highly_variabel"#,
            "highly_variabel",
            "highly_variabel",
        ),
        (
            r#"from tiny | write "x.h5ad" | take 3"#,
            "`write` ends a pipeline",
            "write",
        ),
    ] {
        let err = match annql::lang::query(&session, source).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{source} ran"),
        };
        assert!(err.contains(needle), "{source}: {err}");
        assert!(err.contains(at), "{source}: {err}");
    }
    // Inside SQL, through aql('…'): refused.
    let err = session
        .collect(r#"SELECT * FROM aql('from tiny | write "x.h5ad"')"#)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("`write` ends a pipeline"), "{err}");
}

#[tokio::test]
async fn pipeline_write_runs_the_export() {
    let dir = tmpdir();
    let session = tiny_session();
    let out = dir.path().join("blood.h5ad");
    let source = format!(
        r#"from tiny | where tissue == "blood" | write "{}" genes var.highly_variable with exclude = ["obsm/awk", "uns/rec"]"#,
        out.display()
    );
    let batches = annql::lang::query(&session, &source)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (path, format, _, _) = summary(&batches);
    assert_eq!(
        (path.as_str(), format.as_str()),
        (out.to_str().unwrap_or(""), "h5ad")
    );
    assert_subset(&fixture("tiny.v2.zarr"), &out, OBS_PY, VAR_PY);
}

// ---------------------------------------------------------------------------------------------
// The command line

#[test]
fn cli_export_writes_and_reports() {
    let dir = tmpdir();
    let out = dir.path().join("blood.zarr");
    let src = fixture("tiny.v3.zarr");
    let o = annql(&[
        "export",
        src.to_str().unwrap_or(""),
        "-o",
        out.to_str().unwrap_or(""),
        "--obs",
        OBS_SQL,
        "--var",
        VAR_SQL,
        "--format",
        "zarr2",
        "--chunk-len",
        "32",
        "--exclude",
        "obsm/awk",
        "--exclude",
        "uns/rec",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    assert!(
        stdout.starts_with(&format!("wrote {} (zarr2): ", out.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("cells ×") && stdout.contains("genes"),
        "{stdout}"
    );
    assert_subset(&src, &out, OBS_PY, VAR_PY);
    // Again: the output exists now.
    let again = annql(&[
        "export",
        src.to_str().unwrap_or(""),
        "-o",
        out.to_str().unwrap_or(""),
    ]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
    // With --overwrite: every cell and gene.
    let all = annql(&[
        "export",
        src.to_str().unwrap_or(""),
        "-o",
        out.to_str().unwrap_or(""),
        "--overwrite",
        "--exclude=obsm/awk",
        "--exclude=uns/rec",
    ]);
    assert!(all.status.success(), "{}", text(&all.stderr));
    assert!(
        text(&all.stdout).contains("120 cells × 40 genes"),
        "{}",
        text(&all.stdout)
    );
}

#[test]
fn cli_export_errors_exit_non_zero() {
    let dir = tmpdir();
    let src = fixture("tiny.v2.zarr");
    let src = src.to_str().unwrap_or("");
    let out = |name: &str| dir.path().join(name).display().to_string();
    for (args, needle) in [
        (
            vec!["export", src, "-o", &out("a.txt")],
            "cannot tell the format",
        ),
        (
            vec![
                "export",
                src,
                "-o",
                &out("a.h5ad"),
                "--obs",
                "tisue = 'blood'",
            ],
            "tisue",
        ),
        (
            vec!["export", src, "-o", &out("a.h5ad"), "--shard-chunks", "4"],
            "SHARD_CHUNKS applies to zarr v3",
        ),
        (
            vec!["export", "/nonexistent/x.zarr", "-o", &out("a.h5ad")],
            "/nonexistent/x.zarr",
        ),
        (
            vec!["export", src, "-o", &out("missing-dir/a.h5ad")],
            "missing-dir",
        ),
    ] {
        let o = annql(&args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let stderr = text(&o.stderr);
        assert!(
            stderr.starts_with("annql: ") && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
    }
    // Nothing was left in the directory (no output, no temporary).
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

// ---------------------------------------------------------------------------------------------
// The server

async fn serve(writable: Option<PathBuf>) -> std::net::SocketAddr {
    let config = ServerConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        datasets: vec![Dataset {
            name: "tiny".into(),
            location: fixture("tiny.v2.zarr"),
            options: Default::default(),
        }],
        threads: Some(2),
        writable_dir: writable,
        ..ServerConfig::default()
    };
    let server = Server::bind(config).await.expect("server starts");
    let addr = server.local_addr().expect("bound");
    tokio::spawn(server.run());
    addr
}

async fn client(addr: std::net::SocketAddr) -> tokio_postgres::Client {
    pg_connect(addr).await.expect("connects")
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

#[tokio::test]
async fn server_refuses_copy_without_a_writable_dir() {
    let dir = tmpdir();
    let c = client(serve(None).await).await;
    let out = dir.path().join("a.h5ad");
    let err = c
        .simple_query(&format!(
            "COPY tiny TO '{}' WHERE OBS ({OBS_SQL})",
            out.display()
        ))
        .await
        .expect_err("refused");
    assert_eq!(sqlstate(&err), "25006", "{err:?}");
    assert!(format!("{err:?}").contains("read-only"), "{err:?}");
    // Extended protocol too.
    let err = c
        .query(&format!("COPY tiny TO '{}'", out.display()), &[])
        .await
        .expect_err("refused");
    assert_eq!(sqlstate(&err), "25006", "{err:?}");
    assert!(!out.exists());
    // The connection still answers.
    c.simple_query("SELECT 1").await.expect("still serving");
}

/// psql, as users type it: refused on a read-only server, written inside --writable-dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copy_to_a_new_store() {
    let psql = |port: u16, sql: String| {
        tokio::task::spawn_blocking(move || {
            Command::new("psql")
                .args(["-X", "-At", "-h", "127.0.0.1", "-p", &port.to_string()])
                .args([
                    "-U",
                    "annql",
                    "-d",
                    "annql",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    &sql,
                ])
                .output()
                .expect("psql runs")
        })
    };
    let dir = tmpdir();
    let read_only = serve(None).await;
    let o = psql(read_only.port(), "COPY tiny TO 'a.h5ad'".into())
        .await
        .expect("psql task");
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("read-only"), "{}", text(&o.stderr));
    let writable = serve(Some(dir.path().to_path_buf())).await;
    let o = psql(
        writable.port(),
        format!("COPY tiny TO 'blood.h5ad' WHERE OBS ({OBS_SQL}) WITH ({EXCLUDE})"),
    )
    .await
    .expect("psql task");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = dir
        .path()
        .canonicalize()
        .unwrap_or_else(|e| panic!("{e}"))
        .join("blood.h5ad");
    assert!(
        text(&o.stdout).starts_with(&format!("{}|h5ad|", out.display())),
        "{}",
        text(&o.stdout)
    );
    assert_subset(
        &fixture("tiny.v2.zarr"),
        &out,
        OBS_PY,
        "pd.Series(True, index=var.index)",
    );
}

#[tokio::test]
async fn server_writes_only_inside_its_writable_dir() {
    let root = tmpdir();
    let writable = root.path().join("w");
    let outside = root.path().join("outside");
    for d in [&writable, &outside] {
        std::fs::create_dir(d).unwrap_or_else(|e| panic!("{e}"));
    }
    std::os::unix::fs::symlink(&outside, writable.join("escape")).unwrap_or_else(|e| panic!("{e}"));
    let c = client(serve(Some(writable.clone())).await).await;
    for path in [
        "../outside/a.h5ad".to_string(),
        "escape/a.h5ad".to_string(),
        outside.join("a.h5ad").display().to_string(),
    ] {
        let err = c
            .simple_query(&format!("COPY tiny TO '{path}' WHERE OBS ({OBS_SQL})"))
            .await
            .err()
            .unwrap_or_else(|| panic!("{path} was written"));
        assert_eq!(sqlstate(&err), "42501", "{path}: {err:?}");
        assert!(format!("{err:?}").contains(&path), "{path}: {err:?}");
    }
    assert_eq!(
        std::fs::read_dir(&outside).map(|d| d.count()).unwrap_or(1),
        0
    );
    // A bad predicate names the column.
    let err = c
        .simple_query("COPY tiny TO 'bad.h5ad' WHERE OBS (tisue = 'blood')")
        .await
        .expect_err("bad predicate");
    assert!(format!("{err:?}").contains("tisue"), "{err:?}");
    // Inside: written, one row answered.
    let rows = c
        .simple_query(&format!(
            "COPY tiny TO 'blood.h5ad' WHERE OBS ({OBS_SQL}) AND VAR ({VAR_SQL}) ({EXCLUDE})"
        ))
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let row = rows
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .expect("a row");
    let out = writable
        .canonicalize()
        .unwrap_or_else(|e| panic!("{e}"))
        .join("blood.h5ad");
    assert_eq!(row.get(0), Some(out.to_str().unwrap_or("")));
    assert_eq!(row.get(1), Some("h5ad"));
    assert_subset(&fixture("tiny.v2.zarr"), &out, OBS_PY, VAR_PY);
    // Written again without OVERWRITE: 58P02.
    let err = c
        .simple_query("COPY tiny TO 'blood.h5ad'")
        .await
        .expect_err("exists");
    assert_eq!(sqlstate(&err), "58P02", "{err:?}");
    // Through the extended protocol (psycopg, JDBC), with OVERWRITE.
    let rows = c
        .query(
            &format!("COPY tiny TO 'blood.h5ad' WITH (OVERWRITE true, {EXCLUDE})"),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(2), 120);
}
