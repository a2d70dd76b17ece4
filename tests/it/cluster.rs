//! A Ballista cluster of annql processes on loopback: `annql scheduler` and two
//! `annql executor`s, started as the user starts them. Q1–Q7 and the sqllogictest suite over the
//! cluster answer as in one process (and as anndata); the fused aggregation is split into partial
//! states per row slice and merged; an executor killed mid-query gives a correct answer (Ballista
//! reruns its tasks) or a clear error, within 60 s.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use annql::engine::AnnSession;
use serde_json::Value;

use crate::collection::{answer, assert_rows, atlas, keyed, query};
use crate::common::{fixture, rows};

/// A free loopback port (bound and released: another process could take it between, which the
/// start-up check below would report).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// The processes of one cluster, killed when dropped.
pub(crate) struct Cluster {
    scheduler: Child,
    executors: Vec<Child>,
    port: u16,
    _work: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.executors.iter_mut().chain([&mut self.scheduler]) {
            // Already gone (killed by a test) is fine: the point is that none outlives it.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Cluster {
    /// A scheduler and `executors` executors of one task slot each; an executor silent for
    /// `timeout` seconds is taken for dead.
    pub(crate) fn start(executors: usize, timeout: u64) -> Cluster {
        let work = tempfile::tempdir().unwrap();
        let port = free_port();
        let scheduler = Command::new(env!("CARGO_BIN_EXE_annql"))
            .args(["scheduler", "--bind", &format!("127.0.0.1:{port}")])
            .args(["--executor-timeout", &timeout.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut cluster = Cluster {
            scheduler,
            executors: Vec::new(),
            port,
            _work: work,
        };
        let up = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                up.elapsed() < Duration::from_secs(30),
                "the scheduler did not listen on {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        for i in 0..executors {
            let dir = cluster._work.path().join(format!("executor-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_annql"))
                .args(["executor", "--scheduler", &format!("127.0.0.1:{port}")])
                .args(["--flight-port", &free_port().to_string()])
                .args(["--grpc-port", &free_port().to_string()])
                .args(["--vcores", "1", "--heartbeat", "1"])
                .arg("--work-dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            cluster.executors.push(child);
        }
        cluster
    }

    pub(crate) fn url(&self) -> String {
        format!("df://127.0.0.1:{}", self.port)
    }

    /// Kills executor `i` (SIGKILL: no goodbye to the scheduler).
    pub(crate) fn kill_executor(&mut self, i: usize) {
        self.executors[i].kill().unwrap();
        self.executors[i].wait().unwrap();
    }
}

/// A session over `location` as `atlas`, in this process or on `cluster`.
async fn session(location: &str, cluster: Option<&Cluster>, threads: usize) -> AnnSession {
    let s = annql::open(AnnSession::builder().with_threads(threads)).unwrap();
    s.sql(&format!("ATTACH '{location}' AS atlas"))
        .await
        .unwrap_or_else(|e| panic!("{location}: {e}"));
    match cluster {
        None => s,
        Some(c) => {
            let s = annql::cluster::connect(s, &c.url()).unwrap();
            // Executors register within a second or two of starting.
            let up = Instant::now();
            loop {
                match s.collect("SELECT count(*) FROM atlas.obs").await {
                    Ok(_) => break s,
                    Err(e) if up.elapsed() > Duration::from_secs(60) => {
                        panic!("the cluster did not answer within 60 s: {e}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
        }
    }
}

fn text(plan: Vec<Value>) -> String {
    format!("{plan:?}")
}

/// Rows sorted by every column (answers keyed by numbers as well as text).
async fn sorted(s: &AnnSession, sql: &str) -> Vec<Value> {
    let mut rows = rows(
        &s.collect(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}")),
    );
    rows.sort_by_key(|r| r.to_string());
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q1_to_q7_on_a_cluster_equal_one_process_and_anndata() {
    let a = atlas();
    let cluster = Cluster::start(2, 180);
    let location = a.source.to_string_lossy().into_owned();
    let here = session(&location, None, 2).await;
    let there = session(&location, Some(&cluster), 2).await;
    for q in ["q1", "q2", "q3", "q4", "q5", "q6", "q7"] {
        let sql = query(q, &a.answers["params"]);
        let got = answer(&there, &sql).await;
        assert!(!got.is_empty(), "{q}: no rows");
        assert_rows(
            &got,
            &answer(&here, &sql).await,
            &format!("{q}: cluster vs one process"),
        );
        let want: Vec<Value> = keyed(a.answers["queries"][q]["rows"].as_array().unwrap().clone());
        assert_rows(&got, &want, &format!("{q}: cluster vs anndata"));
    }
    // The plan the cluster ran: Ballista's stages, annql's fused fold in row slices.
    let analyzed = text(rows(
        &there
            .collect(&format!(
                "EXPLAIN ANALYZE {}",
                query("q3", &a.answers["params"])
            ))
            .await
            .unwrap(),
    ));
    assert!(analyzed.contains("SuccessfulStage"), "{analyzed}");
    assert!(
        analyzed.contains("row_slices=2 (partial states)"),
        "{analyzed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fused_aggregation_is_split_into_partial_states_and_merged() {
    let a = atlas();
    let cluster = Cluster::start(2, 180);
    let location = a.source.to_string_lossy().into_owned();
    let here = session(&location, None, 2).await;
    // Four slices over two executors: each folds its rows' blocks into states.
    let there = session(&location, Some(&cluster), 4).await;
    // Sums, counts, means, minima and maxima, sparse and zero-filled, with FILTER clauses.
    let sqls = [
        "SELECT o.cell_type, c.var_id, sum(c.value) AS s, count(*) AS n, avg(c.value) AS m, \
         min(c.value) AS lo, max(c.value) AS hi \
         FROM atlas.layers_counts c JOIN atlas.obs o USING (obs_id) GROUP BY o.cell_type, c.var_id",
        "SELECT o.donor_id, avg(d.value) AS m, count(d.value) FILTER (WHERE d.value > 0) AS pos, \
         min(d.value) AS lo, max(d.value) AS hi \
         FROM atlas.x_dense d JOIN atlas.obs o USING (obs_id) JOIN atlas.var v USING (var_id) \
         WHERE v.var_name IN ('CD3E', 'MS4A1', 'LYZ') GROUP BY o.donor_id",
        "SELECT o.tissue, sum(c.value) AS s FROM atlas.layers_counts c JOIN atlas.obs o \
         USING (obs_id) WHERE o.tissue <> 'blood' GROUP BY o.tissue",
    ];
    for sql in sqls {
        let got = sorted(&there, sql).await;
        assert!(!got.is_empty(), "{sql}: no rows");
        assert_rows(&got, &sorted(&here, sql).await, sql);
    }
    // What the executors ran: the fused operator over row slices, its states merged by key.
    let plan = rows(
        &there
            .collect(&format!("EXPLAIN ANALYZE {}", sqls[0]))
            .await
            .unwrap(),
    );
    let plan = text(plan);
    assert!(plan.contains("row_slices=4 (partial states)"), "{plan}");
    assert!(plan.contains("PartitionSliceExec"), "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_a_cluster_cannot_run_runs_here() {
    let a = atlas();
    let cluster = Cluster::start(1, 180);
    let location = a.source.to_string_lossy().into_owned();
    let there = session(&location, Some(&cluster), 2).await;
    // A collection's tables are not shipped: the query runs in this process, with the answer.
    let glob = format!(
        "{}/part*",
        a.source.parent().unwrap().join("parts").display()
    );
    there
        .sql(&format!("ATTACH '{glob}' AS parts"))
        .await
        .unwrap();
    let got = rows(
        &there
            .collect("SELECT count(*) FROM parts.obs")
            .await
            .unwrap(),
    );
    assert_eq!(got[0][0].as_f64(), a.answers["n_obs"].as_f64(), "{got:?}");
}

// Ballista 55's rerun of a stage after a lost executor counts part of the stage's output twice
// (before annql's scheduler refused such jobs, three runs in four here gave inflated sums); the
// scheduler now fails those jobs (`annql_cluster::rerun`, docs/distributed.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_killed_mid_query_gives_the_answer_or_an_error_within_60_s() {
    let a = atlas();
    // Executors heartbeat every second and are declared dead after 5 s without one.
    let mut cluster = Cluster::start(2, 5);
    let location = a.source.to_string_lossy().into_owned();
    let here = session(&location, None, 2).await;
    let there = session(&location, Some(&cluster), 4).await;
    // Every stored entry joined 200 times over (a VALUES list, which travels in the plan):
    // seconds of work on two one-core executors, so the kill lands in the middle.
    let times: Vec<String> = (0..200).map(|i| format!("({i})")).collect();
    let sql = format!(
        "SELECT o.donor_id, o.cell_type, v.var_name, sum(c.value) AS s \
         FROM atlas.layers_counts c JOIN atlas.obs o USING (obs_id) \
         JOIN atlas.var v USING (var_id) CROSS JOIN (VALUES {}) t(k) \
         GROUP BY o.donor_id, o.cell_type, v.var_name",
        times.join(", ")
    );
    let want = answer(&here, &sql).await;
    let started = Instant::now();
    let query = sql.clone();
    let running = tokio::spawn(async move {
        let out = there.collect(&query).await;
        (out, there)
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.kill_executor(0);
    let (out, there) = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("the query neither answered nor failed within 60 s of the kill")
        .unwrap();
    match out {
        Ok(batches) => assert_rows(&keyed(rows(&batches)), &want, "after the kill"),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.trim().is_empty(), "an empty error");
            eprintln!(
                "the query failed after the kill ({:?}): {msg}",
                started.elapsed()
            );
            // As the error advises: asked again, the surviving executor answers.
            let again = there.collect(&sql).await.expect("the query asked again");
            assert_rows(&keyed(rows(&again)), &want, "asked again after the kill");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqllogictest_suite_on_a_cluster_answers_as_in_process() {
    let a = atlas();
    let cluster = Cluster::start(2, 180);
    // Executors registered before the suite starts.
    session(&a.source.to_string_lossy(), Some(&cluster), 2).await;
    let mut failures = Vec::new();
    for file in crate::slt::files() {
        // Plans are the client's and the cluster's own: EXPLAIN records differ by design and
        // are left out (explain.slt is all EXPLAIN).
        if file.file_name().is_some_and(|n| n == "explain.slt") {
            continue;
        }
        let url = cluster.url();
        let mut runner = sqllogictest::Runner::new(move || {
            let url = url.clone();
            async move {
                let s = annql::open(AnnSession::builder().with_threads(2))?;
                let s = annql::cluster::connect(s, &url)
                    .map_err(|e| annql::engine::Error::Statement(e.to_string()))?;
                Ok(crate::slt::AnnDb::new(s))
            }
        });
        runner.set_var("TINY".into(), fixture("tiny.v2.zarr").display().to_string());
        runner.set_var(
            "CHUNKY".into(),
            fixture("chunky.v2.zarr").display().to_string(),
        );
        let records = sqllogictest::parse_file::<sqllogictest::DefaultColumnType>(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for record in records {
            if let sqllogictest::Record::Query { sql, .. } = &record
                && sql.trim_start().to_ascii_uppercase().starts_with("EXPLAIN")
            {
                continue;
            }
            if let Err(e) = runner.run_async(record).await {
                failures.push(format!("{}: {e}", file.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_runs_its_clients_queries_on_the_cluster() {
    use annql::server::{Dataset, Server, ServerConfig};
    use std::net::SocketAddr;
    use std::sync::Arc;
    use tokio_postgres::SimpleQueryMessage;

    let a = atlas();
    let cluster = Cluster::start(2, 180);
    let location = a.source.to_string_lossy().into_owned();
    let here = session(&location, None, 2).await;
    // Executors registered before the server's first query.
    session(&location, Some(&cluster), 2).await;
    let config = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        datasets: vec![Dataset {
            name: "atlas".into(),
            location: a.source.clone(),
            options: Default::default(),
        }],
        threads: Some(2),
        cluster: Some(Arc::new(
            annql::cluster::Cluster::new(&cluster.url()).unwrap(),
        )),
        ..ServerConfig::default()
    };
    let server = Server::bind(config).await.expect("server starts");
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run());
    let client = crate::common::pg_connect(addr).await.unwrap();
    let text = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .simple_query(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .into_iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(r) => Some(
                        (0..r.len())
                            .map(|i| r.get(i).unwrap_or("NULL").to_string())
                            .collect::<Vec<_>>(),
                    ),
                    _ => None,
                })
                .collect::<Vec<_>>()
        }
    };
    // A psql-style catalog query runs in the server; the question runs on the cluster.
    assert!(
        !text("SELECT relname FROM pg_catalog.pg_class LIMIT 1")
            .await
            .is_empty()
    );
    let sql = "SELECT o.cell_type, count(*) AS n FROM atlas.layers_counts c \
               JOIN atlas.obs o USING (obs_id) GROUP BY o.cell_type ORDER BY o.cell_type";
    let mut want: Vec<Vec<String>> = rows(&here.collect(sql).await.unwrap())
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    v => v.to_string().trim_end_matches(".0").to_string(),
                })
                .collect()
        })
        .collect();
    want.sort();
    let mut got = text(
        "SELECT o.cell_type, count(*) AS n FROM atlas.layers_counts c \
         JOIN atlas.obs o USING (obs_id) GROUP BY o.cell_type ORDER BY o.cell_type",
    )
    .await;
    got.sort();
    assert_eq!(got, want);
    let plan = text(
        "EXPLAIN ANALYZE SELECT o.cell_type, count(*) AS n FROM atlas.layers_counts c \
         JOIN atlas.obs o USING (obs_id) GROUP BY o.cell_type",
    )
    .await;
    assert!(format!("{plan:?}").contains("SuccessfulStage"), "{plan:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clusters_categorical_answer_is_written_as_an_arrow_file() {
    let a = atlas();
    let cluster = Cluster::start(1, 180);
    let location = a.source.to_string_lossy().into_owned();
    // Executors registered before the run.
    session(&location, Some(&cluster), 2).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("answer.arrow");
    let sql = "SELECT o.donor_id, o.cell_type, c.var_id, sum(c.value) AS s \
               FROM atlas.layers_counts c JOIN atlas.obs o USING (obs_id) GROUP BY 1, 2, 3";
    // The cluster's batches come with categoricals decoded; the file has one dictionary each.
    let run = Command::new(env!("CARGO_BIN_EXE_annql"))
        .args(["run", "--cluster", &cluster.url(), "--threads", "2"])
        .args([
            "-d",
            &format!("atlas={location}"),
            "--format",
            "arrow",
            "-o",
        ])
        .arg(&out)
        .args(["-c", sql])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let file = std::fs::File::open(&out).unwrap();
    let reader =
        annql::engine::datafusion::arrow::ipc::reader::FileReader::try_new(file, None).unwrap();
    let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    let mut got = rows(&batches);
    got.sort_by_key(|r| r.to_string());
    let here = session(&location, None, 2).await;
    assert_rows(&got, &sorted(&here, sql).await, "the Arrow file");
}
