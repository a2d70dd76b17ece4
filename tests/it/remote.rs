//! Stores read in place from real servers on loopback: nginx for HTTP (with its range support)
//! and moto's S3 server, both started here (`bash .ci/deps` installs them). The sqllogictest suite
//! runs over each with the expectations of the local run; request accounting and faults are
//! checked against what the servers saw.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use annql::engine::AnnSession;
use annql::store::StorageOptions;
use serde_json::Value;

use crate::common::{expected, fixture, python};
use crate::slt::{files, located_runner};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start ({status})");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not listen on {port} within 30 s");
}

/// A child process killed when the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx serving `tests/fixtures/data` on a free port. Under `/e500/`, `/slow/` and `/drop/` it
/// serves the same files, but chunk requests (paths with `/X/`) get a 500, a 100 B/s trickle, or
/// a closed connection (nginx's 444) — metadata stays whole, so stores open and queries fail.
pub(crate) struct Nginx {
    port: u16,
    dir: tempfile::TempDir,
    _process: Running,
}

impl Nginx {
    fn start() -> Nginx {
        Nginx::serving(&fixture(""))
    }

    /// nginx serving `root` (with the same fault locations).
    pub(crate) fn serving(root: &Path) -> Nginx {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx is installed (run `bash .ci/deps`)");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let d = dir.path().display();
        let r = root.display();
        let conf = format!(
            r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 128; }}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port};
    root {r};
    location ~ ^/e500/.*/X/ {{ return 500; }}
    location ~ ^/drop/.*/X/ {{ return 444; }}
    location ~ ^/slow/(.*/X/.*)$ {{ alias {r}/$1; limit_rate 100; }}
    location ~ ^/(e500|drop|slow)/(.*)$ {{ alias {r}/$2; }}
  }}
}}
"#
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf written");
        let mut child = Command::new(binary)
            .args(["-p", &d.to_string(), "-c"])
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        wait_for_port(port, "nginx", &mut child);
        Nginx {
            port,
            dir,
            _process: Running(child),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// Body bytes nginx sent for paths containing `needle` (the access log's default format).
    pub(crate) fn bytes_for(&self, needle: &str) -> u64 {
        std::thread::sleep(Duration::from_millis(200));
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .filter_map(|l| {
                l.split('"')
                    .nth(2)?
                    .split_whitespace()
                    .nth(1)?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// Prints the access log (for debugging a test).
    pub(crate) fn dump(&self) {
        std::thread::sleep(Duration::from_millis(200));
        eprintln!(
            "{}",
            std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
        );
    }

    /// Requests nginx logged for paths containing `needle`.
    pub(crate) fn requests_for(&self, needle: &str) -> usize {
        // nginx writes its access log line as each request ends.
        std::thread::sleep(Duration::from_millis(200));
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// moto's S3 server on a free port, with the fixture stores uploaded to bucket `atlas`.
struct Moto {
    port: u16,
    _process: Running,
}

impl Moto {
    fn start() -> Moto {
        let port = free_port();
        let mut child = Command::new(python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the venv runs moto.server");
        wait_for_port(port, "moto (pip install 'moto[server]')", &mut child);
        let moto = Moto {
            port,
            _process: Running(child),
        };
        let script = Path::new(crate::common::REPO).join("tests/remote/s3_upload.py");
        let out = Command::new(python())
            .arg(script)
            .arg(moto.endpoint())
            .arg("atlas")
            .args(["tiny.v3.zarr", "chunky.v3.zarr"].map(fixture))
            .output()
            .expect("the upload script runs");
        assert!(
            out.status.success(),
            "upload to moto failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn options(&self) -> StorageOptions {
        StorageOptions::from_pairs([
            ("endpoint", self.endpoint().as_str()),
            ("allow_http", "true"),
            ("region", "us-east-1"),
            ("aws_access_key_id", "annql"),
            ("aws_secret_access_key", "annql-secret"),
        ])
        .expect("valid S3 options")
    }
}

async fn run_suite(tiny: String, chunky: String, storage: StorageOptions) -> Vec<String> {
    let mut failures = Vec::new();
    for file in files() {
        let mut r = located_runner(tiny.clone(), chunky.clone(), storage.clone());
        if let Err(e) = r.run_file_async(&file).await {
            failures.push(format!("{}: {e}", file.display()));
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_over_http_and_s3() {
    let nginx = Nginx::start();
    let failures = run_suite(
        nginx.url("tiny.v2.zarr"),
        nginx.url("chunky.v2.zarr"),
        StorageOptions::default(),
    )
    .await;
    assert!(failures.is_empty(), "[http] {}", failures.join("\n\n"));

    // Sharded v3 over S3; chunky.v3 has no consolidated metadata, so it is opened by listing.
    let moto = Moto::start();
    let failures = run_suite(
        "s3://atlas/tiny.v3.zarr".into(),
        "s3://atlas/chunky.v3.zarr".into(),
        moto.options(),
    )
    .await;
    assert!(failures.is_empty(), "[s3] {}", failures.join("\n\n"));
}

/// Keys of the X chunks that hold rows `rows` of `chunky` (from anndata's own indptr), and
/// their total size on disk.
fn answer_chunks(rows: std::ops::Range<usize>) -> (Vec<String>, u64) {
    let x = &expected("chunky")["X"];
    let indptr: Vec<u64> = x["indptr"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let per_chunk = 1000; // X/data, X/indices and X/indptr chunks in chunky.v2.zarr
    let (first, last) = (indptr[rows.start], indptr[rows.end] - 1);
    let mut keys = Vec::new();
    for c in first / per_chunk..=last / per_chunk {
        keys.push(format!("X/data/{c}"));
        keys.push(format!("X/indices/{c}"));
    }
    for c in rows.start as u64 / per_chunk..=rows.end as u64 / per_chunk {
        keys.push(format!("X/indptr/{c}"));
    }
    let store = fixture("chunky.v2.zarr");
    let bytes = keys
        .iter()
        .map(|k| std::fs::metadata(store.join(k)).map_or(0, |m| m.len()))
        .sum();
    (keys, bytes)
}

async fn fetched(session: &AnnSession, name: &str, sql: &str) -> (String, u64, u64, u64) {
    let store = session.store(name).expect("attached");
    let fetches = store
        .fetches()
        .expect("a remote store counts fetches")
        .clone();
    let before = fetches.snapshot();
    let batches = session.collect(sql).await.expect("query runs");
    let d = fetches.snapshot().since(&before);
    let answer = annql::engine::datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .map(|t| t.to_string())
        .unwrap_or_default();
    (answer, d.requests, d.bytes, d.cache_hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selective_query_fetches_only_its_chunks_once() {
    let nginx = Nginx::start();
    // 1% of the cells, one gene.
    let sql = "SELECT count(*) AS n, sum(value) AS total FROM chunky.x \
               WHERE obs_id BETWEEN 5000 AND 5099 AND var_id = 7";
    let (_, answer_bytes) = answer_chunks(5000..5100);

    let local = AnnSession::new().expect("session");
    local
        .attach("chunky", fixture("chunky.v2.zarr"))
        .expect("local attach");
    let want = local.collect(sql).await.expect("local query");
    let want = annql::engine::datafusion::arrow::util::pretty::pretty_format_batches(&want)
        .map(|t| t.to_string())
        .unwrap_or_default();

    let store = annql::store::AnnDataStore::open(nginx.url("chunky.v2.zarr")).expect("opens");
    let opened = store.fetches().map(|f| f.requests());
    assert_eq!(opened, Some(1), "open is one request (.zmetadata)");
    assert_eq!(nginx.requests_for("chunky.v2.zarr"), 1);
    let remote = AnnSession::new().expect("session");
    remote
        .attach_store("chunky", std::sync::Arc::new(store))
        .expect("remote attach");
    let (got, requests, bytes, _) = fetched(&remote, "chunky", sql).await;
    assert_eq!(got, want, "same answer as the local store");
    assert!(requests > 0);
    assert!(
        bytes as f64 <= 1.5 * answer_bytes as f64,
        "fetched {bytes} bytes in {requests} requests; the answer's chunks hold {answer_bytes}"
    );
    let (again, requests, bytes, hits) = fetched(&remote, "chunky", sql).await;
    assert_eq!(again, want);
    assert_eq!(
        (requests, bytes),
        (0, 0),
        "the second run is served by the cache"
    );
    assert!(hits > 0);

    // With the cache off, the same query fetches again.
    let uncached = AnnSession::new().expect("session");
    uncached
        .attach_with(
            "chunky",
            nginx.url("chunky.v2.zarr"),
            &StorageOptions::from_pairs([("cache", "off")]).expect("options"),
        )
        .expect("attach");
    let (_, _, first, _) = fetched(&uncached, "chunky", sql).await;
    let (_, _, second, hits) = fetched(&uncached, "chunky", sql).await;
    assert!(
        first > 0 && second > 0 && hits == 0,
        "{first} then {second} bytes, {hits} hits"
    );
}

/// The error a query over `url` ends with, and how long it took.
async fn failing_query(url: &str, options: &[(&str, &str)]) -> (String, Duration) {
    let session = AnnSession::new().expect("session");
    let options = StorageOptions::from_pairs(options.iter().copied()).expect("options");
    session
        .attach_with("chunky", url, &options)
        .unwrap_or_else(|e| panic!("{url}: metadata is served whole, attach works: {e}"));
    let started = Instant::now();
    let result = session
        .collect("SELECT sum(value) FROM chunky.x WHERE obs_id < 3000")
        .await;
    let err = match result {
        Ok(batches) => panic!("{url}: a failing server gave an answer: {batches:?}"),
        Err(e) => e.to_string(),
    };
    (err, started.elapsed())
}

/// How long the failing query takes against a healthy server, on this machine now: the bounds
/// below are budgets from the options plus a multiple of this, so a busy machine does not fail them.
async fn healthy_query(url: &str) -> Duration {
    let session = AnnSession::new().expect("session");
    session.attach("chunky", url).expect("attach");
    let started = Instant::now();
    session
        .collect("SELECT sum(value) FROM chunky.x WHERE obs_id < 3000")
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    started.elapsed()
}

/// The longest a failing read may take: every try's timeout, the retry budget, and slack that
/// scales with how fast this machine answers the same query from a healthy server.
fn budget(options: &[(&str, &str)], healthy: Duration) -> Duration {
    let get = |k: &str| {
        options
            .iter()
            .find(|(key, _)| *key == k)
            .map_or(0, |(_, v)| v.parse::<u64>().expect("a number of seconds"))
    };
    let tries = get("retries") + 1;
    Duration::from_secs(tries * get("timeout") + get("retry_timeout")) + healthy * 20
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_faults_are_retried_then_reported() {
    let nginx = Nginx::start();
    let fast = [("retries", "2"), ("retry_timeout", "10"), ("timeout", "2")];
    let healthy = healthy_query(&nginx.url("chunky.v2.zarr")).await;
    let limit = budget(&fast, healthy);

    // 500s: retried with backoff (three requests for the chunk), then an error naming it.
    let (err, took) = failing_query(&nginx.url("e500/chunky.v2.zarr"), &fast).await;
    assert!(err.contains("chunky.v2.zarr/X/"), "{err}");
    assert!(err.contains("500"), "{err}");
    assert!(took < limit, "{took:?}, limit {limit:?}");
    let tries = nginx.requests_for("e500/chunky.v2.zarr/X/");
    assert!(tries >= 3, "a request and two retries, got {tries}");

    // A closed connection (nginx's 444): retried, then an error.
    let (err, took) = failing_query(&nginx.url("drop/chunky.v2.zarr"), &fast).await;
    assert!(err.contains("chunky.v2.zarr/X/"), "{err}");
    assert!(took < limit, "{took:?}, limit {limit:?}");

    // A body trickling at 100 B/s: the request times out (2 s), retries, then fails; no hang.
    let (err, took) = failing_query(&nginx.url("slow/chunky.v2.zarr"), &fast).await;
    assert!(err.contains("chunky.v2.zarr/X/"), "{err}");
    assert!(took < limit, "{took:?}, limit {limit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_bodies_are_errors() {
    let script = Path::new(crate::common::REPO).join("tests/remote/truncating_server.py");
    let mut child = Command::new(python())
        .arg(script)
        .arg(fixture(""))
        .stdout(Stdio::piped())
        .spawn()
        .expect("the venv runs the truncating server");
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let _server = Running(child);
    let port: u16 = line.trim().parse().expect("the server prints its port");
    let url = format!("http://127.0.0.1:{port}/chunky.v2.zarr");
    let options = [("retries", "1"), ("timeout", "5")];
    let healthy = healthy_query(&Nginx::start().url("chunky.v2.zarr")).await;
    let (err, took) = failing_query(&url, &options).await;
    assert!(err.contains("chunky.v2.zarr/X/"), "{err}");
    let limit = budget(&options, healthy);
    assert!(took < limit, "{took:?}, limit {limit:?}");
}

#[test]
fn unlistable_store_without_consolidated_metadata_is_a_clear_error() {
    let nginx = Nginx::start();
    // chunky.v3.zarr has no consolidated metadata, and an HTTP server cannot list it.
    let err = annql::store::AnnDataStore::open(nginx.url("chunky.v3.zarr"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("chunky.v3.zarr"), "{err}");
    assert!(err.contains("consolidate"), "{err}");
}

/// `ATTACH 's3://bucket/prefix*'`: a glob over object storage lists the bucket (one level) and
/// attaches the matching stores as one collection; HTTP, which has no listing, says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glob_over_s3_attaches_the_stores_it_lists() {
    let moto = Moto::start();
    let script = Path::new(crate::common::REPO).join("tests/remote/s3_upload.py");
    let out = Command::new(python())
        .arg(script)
        .arg(moto.endpoint())
        .arg("coll")
        .args(["tiny.v2.zarr", "tiny.v3.zarr"].map(fixture))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = AnnSession::builder()
        .with_threads(2)
        .with_storage_options(moto.options())
        .build()
        .unwrap();
    s.sql("ATTACH 's3://coll/tiny.*.zarr' AS c")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let one = |sql: &'static str| {
        let s = &s;
        async move {
            let batches = s
                .collect(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            crate::common::rows(&batches)
        }
    };
    let names = one("SELECT dataset FROM c.datasets ORDER BY dataset_id").await;
    assert_eq!(
        names,
        vec![
            serde_json::json!(["tiny_v2"]),
            serde_json::json!(["tiny_v3"])
        ]
    );
    let n_tiny = expected("tiny")["shape"][0].as_f64().unwrap();
    let cells = one("SELECT count(*) FROM c.obs").await;
    assert_eq!(cells[0][0].as_f64(), Some(2.0 * n_tiny));
    let err = s
        .sql("ATTACH 's3://coll/none*.zarr' AS d")
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no store matches"), "{err}");
    // (A session of its own: the S3 options above are not HTTP client options.)
    let plain = AnnSession::builder().with_threads(2).build().unwrap();
    let err = plain
        .sql("ATTACH 'http://127.0.0.1:1/x/*.zarr' AS h")
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("HTTP has no listing"), "{err}");
}
