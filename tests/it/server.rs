//! `annql serve` with real PostgreSQL clients on loopback.
//!
//! - The sqllogictest suite through the server, with tokio-postgres over both the simple and the
//!   extended protocol: the same expected results as in-process.
//! - `tests/server/run_probes.py`: psql, psycopg, pyodbc + psqlODBC, pgJDBC, SQLAlchemy, raw-wire
//!   abuse, cancel/timeout, the connection limit and a 64-client load, against the `annql`
//!   binary (the clients come from `.ci/deps`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use annql_server::{Dataset, Server, ServerConfig};
use async_trait::async_trait;
use sqllogictest::{DBOutput, DefaultColumnType};
use tokio_postgres::types::Type;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::common::{fixture, pg_connect, python};

/// Starts a server over the fixtures (`tiny`, `chunky`) on a free loopback port, without auth.
async fn start(tiny: &str, chunky: &str) -> SocketAddr {
    start_with(tiny, chunky, None).await
}

/// [`start`], with SCRAM-SHA-256 for `credentials` (user, password) when given.
async fn start_with(tiny: &str, chunky: &str, credentials: Option<(&str, &str)>) -> SocketAddr {
    let config = ServerConfig {
        credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        datasets: [("tiny", tiny), ("chunky", chunky)]
            .into_iter()
            .map(|(name, file)| Dataset {
                name: name.into(),
                location: fixture(file),
                options: Default::default(),
            })
            .collect(),
        threads: Some(2),
        ..ServerConfig::default()
    };
    let server = Server::bind(config).await.expect("server starts");
    let addr = server.local_addr().expect("bound");
    tokio::spawn(server.run());
    addr
}

/// How the driver sends statements.
#[derive(Clone, Copy, Debug)]
enum Protocol {
    Simple,
    Extended,
}

/// A sqllogictest connection: one tokio-postgres client of the server.
struct PgDb {
    client: tokio_postgres::Client,
    protocol: Protocol,
}

fn is_query(sql: &str) -> bool {
    let head = sql.trim_start().to_ascii_uppercase();
    [
        "SELECT", "WITH", "EXPLAIN", "SHOW", "VALUES", "(", "DESCRIBE",
    ]
    .iter()
    .any(|k| head.starts_with(k))
}

/// A value as the in-process driver prints it (Arrow's display), from PostgreSQL's text form.
fn normalize(text: Option<&str>, ty: &Type) -> String {
    match text {
        None => "NULL".into(),
        Some("") => "(empty)".into(),
        Some(s) if *ty == Type::BOOL => match s {
            "t" => "true".into(),
            "f" => "false".into(),
            other => other.into(),
        },
        Some(s) => s.into(),
    }
}

/// A client error shown as the server's message (tokio-postgres' own Display says only
/// "db error"), so `statement error <regex>` records match as they do in-process.
#[derive(Debug)]
struct PgError(tokio_postgres::Error);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write!(f, "{}", db.message()),
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for PgError {}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError(e)
    }
}

#[async_trait]
impl sqllogictest::AsyncDB for PgDb {
    type Error = PgError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        if !is_query(sql) {
            match self.protocol {
                Protocol::Simple => self.client.simple_query(sql).await.map(|_| ())?,
                Protocol::Extended => self.client.execute(sql, &[]).await.map(|_| ())?,
            }
            return Ok(DBOutput::StatementComplete(0));
        }
        // Column types from Describe (the extended protocol), values in text form.
        let statement = self.client.prepare(sql).await?;
        let types: Vec<Type> = statement
            .columns()
            .iter()
            .map(|c| c.type_().clone())
            .collect();
        let mut rows = Vec::new();
        match self.protocol {
            Protocol::Simple => {
                for m in self.client.simple_query(sql).await? {
                    if let SimpleQueryMessage::Row(r) = m {
                        rows.push(
                            (0..r.len())
                                .map(|i| normalize(r.get(i), &types[i]))
                                .collect(),
                        );
                    }
                }
            }
            Protocol::Extended => {
                // Text results over Parse/Bind/Execute: `query_typed_raw` with text format is not
                // offered by tokio-postgres, so read each value through its text-like types.
                for r in self.client.query(&statement, &[]).await? {
                    rows.push(
                        (0..r.len())
                            .map(|i| extended_value(&r, i, &types[i]))
                            .collect(),
                    );
                }
            }
        }
        let mut rows: Vec<Vec<String>> = rows;
        if sql.trim_start().to_ascii_uppercase().starts_with("EXPLAIN") {
            return Ok(crate::slt::explain_output(std::mem::take(&mut rows)));
        }
        let types = types
            .iter()
            .map(|t| match *t {
                Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => DefaultColumnType::FloatingPoint,
                Type::INT2 | Type::INT4 | Type::INT8 => DefaultColumnType::Integer,
                _ => DefaultColumnType::Text,
            })
            .collect();
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "annql-server"
    }
}

/// A binary-format value printed as Arrow prints it.
fn extended_value(row: &tokio_postgres::Row, i: usize, ty: &Type) -> String {
    fn show<T: ToString>(v: Result<Option<T>, tokio_postgres::Error>) -> String {
        match v {
            Ok(Some(v)) => {
                let s = v.to_string();
                if s.is_empty() { "(empty)".into() } else { s }
            }
            Ok(None) => "NULL".into(),
            Err(e) => format!("<{e}>"),
        }
    }
    match *ty {
        Type::BOOL => show(row.try_get::<_, Option<bool>>(i)),
        Type::INT2 => show(row.try_get::<_, Option<i16>>(i)),
        Type::INT4 => show(row.try_get::<_, Option<i32>>(i)),
        Type::INT8 => show(row.try_get::<_, Option<i64>>(i)),
        // Debug keeps the `.0` of integral floats, as Arrow's display does.
        Type::FLOAT4 => show(
            row.try_get::<_, Option<f32>>(i)
                .map(|v| v.map(|v| format!("{v:?}"))),
        ),
        Type::FLOAT8 => show(
            row.try_get::<_, Option<f64>>(i)
                .map(|v| v.map(|v| format!("{v:?}"))),
        ),
        _ => show(row.try_get::<_, Option<String>>(i)),
    }
}

/// The .slt records a read-only server can run: everything up to a `DETACH` (after it, the files
/// check that the dataset is gone, which only the session that detached it can show). `ATTACH` of
/// a dataset the server serves is run as a no-op by the driver below.
fn records(
    file: &PathBuf,
    vars: &[(&str, String)],
) -> Vec<sqllogictest::Record<DefaultColumnType>> {
    let mut text = std::fs::read_to_string(file).unwrap_or_default();
    for (k, v) in vars {
        text = text.replace(&format!("${{{k}}}"), v);
    }
    let parsed = sqllogictest::parse::<DefaultColumnType>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut out = Vec::new();
    for r in parsed {
        if let sqllogictest::Record::Statement { sql, .. } = &r {
            let head = sql.trim_start().to_ascii_uppercase();
            if head.starts_with("DETACH") {
                break;
            }
            if head.starts_with("ATTACH") {
                continue;
            }
        }
        out.push(r);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_through_the_server() {
    let addr = start("tiny.v2.zarr", "chunky.v2.zarr").await;
    let vars = [
        ("TINY", fixture("tiny.v2.zarr").display().to_string()),
        ("CHUNKY", fixture("chunky.v2.zarr").display().to_string()),
    ];
    let mut failures = Vec::new();
    let mut ran = 0;
    for protocol in [Protocol::Simple, Protocol::Extended] {
        for file in crate::slt::files() {
            let mut runner = sqllogictest::Runner::new(move || async move {
                Ok::<_, PgError>(PgDb {
                    client: pg_connect(addr).await?,
                    protocol,
                })
            });
            for record in records(&file, &vars) {
                ran += 1;
                if let Err(e) = runner.run_async(record).await {
                    failures.push(format!("[{protocol:?}] {}: {e}", file.display()));
                }
            }
        }
    }
    assert!(ran > 100, "only {ran} records ran");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_sqlstates() {
    let addr = start("tiny.v2.zarr", "chunky.v2.zarr").await;
    let client = pg_connect(addr).await.expect("connect");
    for (sql, code) in [
        ("SELECT * FROM nope", "42P01"),
        ("SELEC 1", "42601"),
        ("SELECT no_such_column FROM tiny.obs", "42703"),
        ("SELECT 1/0", "22012"),
        ("SELECT no_such_function(1)", "42883"),
        ("INSERT INTO tiny.obs VALUES (1)", "25006"),
        ("FETCH 1 FROM nocursor", "34000"),
    ] {
        let err = client.simple_query(sql).await.err();
        let got = err
            .as_ref()
            .and_then(|e| e.code())
            .map(|c| c.code().to_string());
        assert_eq!(got.as_deref(), Some(code), "{sql}: {err:?}");
    }
    // The connection survives its errors.
    let rows = client
        .query("SELECT count(*) FROM tiny.obs", &[])
        .await
        .expect("query");
    assert_eq!(rows.len(), 1);
}

/// The SQLSTATE of each class of error, chosen by the error's type (not XX000 for everything),
/// and where the error points: `P` in the query, or `p` and `q` inside a pipeline of `aql('…')`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlstates_by_error_type_and_positions() {
    use tokio_postgres::error::ErrorPosition;
    let addr = start("tiny.v2.zarr", "chunky.v2.zarr").await;
    let client = pg_connect(addr).await.expect("connect");
    let db_error = |r: Result<Vec<SimpleQueryMessage>, tokio_postgres::Error>| {
        r.err()
            .and_then(|e| e.as_db_error().cloned())
            .expect("a server error")
    };
    for (sql, code) in [
        // The pipeline language's diagnostics.
        ("SELECT * FROM aql('from tiny |')", "42601"),
        (
            "SELECT * FROM aql('from tiny | where cel_type == \"B cell\"')",
            "42703",
        ),
        ("SELECT * FROM aql('from nosuch | take 1')", "3F000"),
        (
            "SELECT * FROM aql('from tiny | group cell_type | agg n = nosuch()')",
            "42883",
        ),
        // Names SQL could not resolve.
        ("SELECT * FROM tiny.nope", "42P01"),
        ("SELECT nope FROM tiny.obs", "42703"),
        // Not supported; read-only.
        ("FETCH BACKWARD 1 FROM c", "0A000"),
        ("CREATE TABLE t (a int)", "25006"),
        // Building a gene index writes beside the store: refused like any other write.
        ("CREATE GENE INDEX ON tiny", "25006"),
        ("DROP GENE INDEX ON tiny", "25006"),
    ] {
        let e = db_error(client.simple_query(sql).await);
        assert_eq!(e.code().code(), code, "{sql}: {e:?}");
    }

    // SQL errors carry no `P` yet: datafusion-pg-catalog's parser keeps no token locations, so
    // neither sqlparser's errors nor DataFusion's diagnostics have one to give.
    // A pipeline's diagnostic points into the pipeline.
    let pipeline = "from tiny | where cel_type == 1";
    let e = db_error(
        client
            .simple_query(&format!("SELECT * FROM aql('{pipeline}')"))
            .await,
    );
    assert_eq!(
        e.position(),
        Some(&ErrorPosition::Internal {
            position: 19,
            query: pipeline.into()
        }),
        "{e:?}"
    );

    // A statement past its timeout is cancelled.
    client
        .simple_query("SET statement_timeout = 100")
        .await
        .expect("SET");
    let e = db_error(
        client
            .simple_query("SELECT count(*) FROM range(0, 100000000000) t(v) WHERE v % 7 = 3")
            .await,
    );
    assert_eq!(e.code().code(), "57014", "{e:?}");
}

/// A store whose chunk cannot be decoded answers XX001 (data corrupted), not XX000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_is_data_corrupted() {
    let damaged = crate::damage::copy("tiny.v2.zarr");
    std::fs::write(damaged.path.join("obs/n_counts/0"), b"not a chunk at all")
        .expect("damage a chunk");
    let config = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        datasets: vec![Dataset {
            name: "tiny".into(),
            location: damaged.path.clone(),
            options: Default::default(),
        }],
        threads: Some(2),
        ..ServerConfig::default()
    };
    let server = Server::bind(config).await.expect("server starts");
    let addr = server.local_addr().expect("bound");
    tokio::spawn(server.run());
    let client = pg_connect(addr).await.expect("connect");
    let r = client
        .simple_query("SELECT sum(n_counts) FROM tiny.obs")
        .await;
    assert_eq!(sqlstate_of(&r).as_deref(), Some("XX001"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_and_types() {
    let addr = start("tiny.v2.zarr", "chunky.v2.zarr").await;
    let client = pg_connect(addr).await.expect("connect");
    let total: i64 = client
        .query_one("SELECT count(*) FROM tiny.obs", &[])
        .await
        .expect("count")
        .get(0);
    let some: i64 = client
        .query_one("SELECT count(*) FROM tiny.obs WHERE obs_id < $1", &[&3i64])
        .await
        .expect("param")
        .get(0);
    assert_eq!(some, 3.min(total));
    let row = client
        .query_one(
            "SELECT $1::int + 1, $2::text, $3::double precision * 2",
            &[&41i32, &"x", &1.25f64],
        )
        .await
        .expect("typed params");
    // DataFusion widens `int + 1` to bigint (PostgreSQL would keep int).
    assert_eq!(row.get::<_, i64>(0), 42);
    assert_eq!(row.get::<_, &str>(1), "x");
    assert_eq!(row.get::<_, f64>(2), 2.5);
    // information_schema speaks PostgreSQL type names.
    let types: Vec<String> = client
        .query(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = 'tiny' AND table_name = 'obs' AND column_name = 'obs_id'",
            &[],
        )
        .await
        .expect("information_schema")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(types, vec!["bigint".to_string()]);
}

/// The number of `tiny` cells with `n_counts < bound`, from what anndata read back.
fn tiny_cells_below(bound: i64) -> i64 {
    let want = crate::common::expected("tiny");
    want["obs"]["columns"]["n_counts"]["values"]
        .as_array()
        .expect("n_counts values")
        .iter()
        .filter(|v| v.as_i64().is_some_and(|v| v < bound))
        .count() as i64
}

/// The SQLSTATE of a failed statement (None when it did not fail).
fn sqlstate_of<T>(r: &Result<T, tokio_postgres::Error>) -> Option<String> {
    r.as_ref()
        .err()
        .and_then(|e| e.code())
        .map(|c| c.code().to_string())
}

/// The rows of a simple-protocol answer, as text.
pub(crate) fn simple_rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(String::from)).collect())
            }
            _ => None,
        })
        .collect()
}

/// `PREPARE … AS …; EXECUTE …(…)` runs the statement, as PostgreSQL does: parameter types come
/// from the declaration or from where `$n` is used, arguments are converted to them, and unknown
/// names, wrong argument counts and unconvertible arguments are errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_and_execute() {
    let addr = start("tiny.v2.zarr", "chunky.v2.zarr").await;
    let client = pg_connect(addr).await.expect("connect");
    let below = |n: i64| Some(tiny_cells_below(n).to_string());

    // The simple protocol, one statement per query string.
    client
        .simple_query("PREPARE below AS SELECT count(*) FROM tiny.obs WHERE n_counts < $1")
        .await
        .expect("PREPARE");
    let got = client
        .simple_query("EXECUTE below(2000)")
        .await
        .expect("EXECUTE");
    assert_eq!(simple_rows(&got), vec![vec![below(2000)]]);
    assert!(
        got.iter()
            .any(|m| matches!(m, SimpleQueryMessage::CommandComplete(1))),
        "EXECUTE of a query answers with its rows: {got:?}"
    );
    // An untyped literal takes the parameter's type (bigint), as in PostgreSQL.
    let got = client
        .simple_query("EXECUTE below('3000')")
        .await
        .expect("EXECUTE with a quoted argument");
    assert_eq!(simple_rows(&got), vec![vec![below(3000)]]);
    // Several statements in one query string; declared parameter types.
    let got = client
        .simple_query(
            "PREPARE plus(int, text) AS SELECT $1 + 1 AS n, $2 || '!' AS s; EXECUTE plus(41, 'hi')",
        )
        .await
        .expect("PREPARE; EXECUTE");
    assert_eq!(
        simple_rows(&got),
        vec![vec![Some("42".to_string()), Some("hi!".to_string())]]
    );
    // The extended protocol: Describe names the prepared statement's columns.
    let rows = client
        .query("EXECUTE below(1000)", &[])
        .await
        .expect("EXECUTE over the extended protocol");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(0), tiny_cells_below(1000));

    // Errors, with PostgreSQL's SQLSTATEs; the connection survives each.
    for (sql, code) in [
        ("EXECUTE nosuch(1)", "26000"),
        ("EXECUTE below", "42601"),
        ("EXECUTE below(1, 2)", "42601"),
        ("EXECUTE below('many')", "22P02"),
        ("EXECUTE below(2.5)", "42804"),
        (
            "PREPARE below AS SELECT count(*) FROM tiny.obs WHERE n_counts > $1",
            "42P05",
        ),
        ("PREPARE untyped AS SELECT $1", "42P18"),
        ("PREPARE w AS INSERT INTO tiny.obs VALUES (1)", "25006"),
        ("DEALLOCATE nosuch", "26000"),
    ] {
        let r = client.simple_query(sql).await;
        assert_eq!(sqlstate_of(&r).as_deref(), Some(code), "{sql}: {r:?}");
    }
    // DEALLOCATE removes it; DEALLOCATE ALL removes the rest.
    client
        .simple_query("DEALLOCATE below")
        .await
        .expect("DEALLOCATE");
    let r = client.simple_query("EXECUTE below(2000)").await;
    assert_eq!(sqlstate_of(&r).as_deref(), Some("26000"), "{r:?}");
    client
        .simple_query("DEALLOCATE ALL")
        .await
        .expect("DEALLOCATE ALL");
    let r = client.simple_query("EXECUTE plus(1, 'x')").await;
    assert_eq!(sqlstate_of(&r).as_deref(), Some("26000"), "{r:?}");
    // Prepared statements belong to their connection.
    client
        .simple_query("PREPARE mine AS SELECT 1")
        .await
        .expect("PREPARE");
    let other = pg_connect(addr).await.expect("connect");
    let r = other.simple_query("EXECUTE mine").await;
    assert_eq!(sqlstate_of(&r).as_deref(), Some("26000"), "{r:?}");
}

/// psql sends `PREPARE …; EXECUTE …` over the simple protocol and prints the rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_prepare_and_execute() {
    let addr = start("tiny.v2.zarr", "chunky.v2.zarr").await;
    let port = addr.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("psql")
            .args(["-X", "-At", "-h", "127.0.0.1", "-p", &port, "-U", "annql"])
            .args(["-d", "annql", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-c",
                "PREPARE below AS SELECT count(*) FROM tiny.obs WHERE n_counts < $1",
            ])
            .args(["-c", "EXECUTE below(2000)"])
            .args(["-c", "EXECUTE below(4000)"])
            .args(["-c", "EXECUTE nosuch(1)"])
            .output()
            .expect("psql runs")
    })
    .await
    .expect("psql task");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            "PREPARE".to_string(),
            tiny_cells_below(2000).to_string(),
            tiny_cells_below(4000).to_string()
        ],
        "{stderr}"
    );
    assert!(
        stderr.contains("prepared statement \"nosuch\" does not exist"),
        "{stderr}"
    );
}

/// A wrong password is refused with PostgreSQL's message, naming the user of the startup packet
/// (SCRAM clients leave the user out of their first SASL message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_names_the_user() {
    let addr = start_with("tiny.v2.zarr", "chunky.v2.zarr", Some(("alice", "s3cret"))).await;
    let dsn = |password: &str| {
        format!(
            "host={} port={} user=alice password={password} dbname=annql",
            addr.ip(),
            addr.port()
        )
    };
    let err = tokio_postgres::connect(&dsn("wrong"), NoTls)
        .await
        .err()
        .expect("a wrong password is refused");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "28P01");
    assert_eq!(
        db.message(),
        "password authentication failed for user \"alice\""
    );
    // The right one is accepted.
    let (client, connection) = tokio_postgres::connect(&dsn("s3cret"), NoTls)
        .await
        .expect("the right password is accepted");
    tokio::spawn(connection);
    client.simple_query("SELECT 1").await.expect("query");
    // psql prints the server's message.
    let port = addr.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("psql")
            .args([
                "-X",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "alice",
                "-d",
                "annql",
            ])
            .args(["-c", "SELECT 1"])
            .env("PGPASSWORD", "wrong")
            .output()
            .expect("psql runs")
    })
    .await
    .expect("psql task");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("password authentication failed for user \"alice\""),
        "{stderr}"
    );
}

/// A startup packet without a user is refused as PostgreSQL refuses it, also without a password
/// (`--no-auth`), instead of opening a session for the user "".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_without_a_user_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = start("tiny.v2.zarr", "chunky.v2.zarr").await;
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut body = 196_608i32.to_be_bytes().to_vec(); // protocol 3.0
    body.extend_from_slice(b"database\0annql\0\0");
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    socket.write_all(&packet).await.expect("send startup");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        socket.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "the server keeps the connection open");
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(answer.first(), Some(&b'E'), "{text:?}");
    assert!(
        text.contains("28000") && text.contains("no PostgreSQL user name specified"),
        "{text:?}"
    );
}

#[test]
fn real_clients() {
    let root = PathBuf::from(crate::common::REPO);
    let out = Command::new(python())
        .arg(root.join("tests/server/run_probes.py"))
        .args(["--annql", env!("CARGO_BIN_EXE_annql")])
        .args(
            std::env::var("ANNQL_PROBE_ARGS")
                .ok()
                .iter()
                .flat_map(|a| a.split_whitespace().map(String::from).collect::<Vec<_>>()),
        )
        .output()
        .expect("the venv runs the probes (its clients come from `bash .ci/deps`)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "probes failed (missing clients? run `bash .ci/deps`):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("0 FAIL"), "{stdout}");
}

/// Malformed frontend messages (bad, negative and huge lengths, unknown types, truncated
/// messages, a Parse declaring 65535 parameter types it does not carry, a Bind whose fields
/// overrun it) get `FATAL 08P01` and a close, as from PostgreSQL; errors in well-formed
/// messages leave the connection open; a connection opened before still answers
/// (`tests/server/wire_abuse.py` checks each case).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_with_08p01() {
    let addr = start("tiny.v2.zarr", "chunky.v2.zarr").await;
    let root = PathBuf::from(crate::common::REPO);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(root.join("tests/server/wire_abuse.py"))
            .args([addr.port().to_string().as_str(), "annql", "annql"])
            .output()
            .expect("the venv runs wire_abuse.py")
    })
    .await
    .expect("wire_abuse task");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.lines().count() >= 31, "{stdout}");
    // The server answers new connections afterwards.
    let client = pg_connect(addr).await.expect("connect after the abuse");
    client.simple_query("SELECT 1").await.expect("query");
}

/// The short soak (`tests/server/soak.py`): 16 psycopg clients for 60 s (ANNQL_SOAK_SECONDS)
/// on the `tiny` fixture mixing Q1–Q7 (checked against the in-process engine), catalog queries,
/// cancels, statement timeouts, clients that hang up mid-result and reconnects: no unexpected
/// error, every answer right, RSS bounded and back within 100 MB of its start afterwards.
#[test]
fn soak_short() {
    let root = PathBuf::from(crate::common::REPO);
    let seconds = std::env::var("ANNQL_SOAK_SECONDS").unwrap_or_else(|_| "60".into());
    let out = Command::new(python())
        .arg(root.join("tests/server/soak.py"))
        .args(["--annql", env!("CARGO_BIN_EXE_annql")])
        .args(["--clients", "16", "--seconds", &seconds, "--settle", "5"])
        .output()
        .expect("the venv runs soak.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("soak summary:"), "{stdout}");
}

/// Flight SQL with the real Python ADBC driver (`tests/server/flight_probe.py`): password,
/// catalog calls, Q1–Q7 against the in-process answers, dictionaries, prepared statements,
/// read-only refusals, cancel, streaming past the memory limit, TLS and the connection limit.
#[test]
fn flight_sql_clients() {
    let root = PathBuf::from(crate::common::REPO);
    let out = Command::new(python())
        .arg(root.join("tests/server/flight_probe.py"))
        .args(["--annql", env!("CARGO_BIN_EXE_annql")])
        .output()
        .expect("the venv runs the probe (adbc-driver-flightsql comes from `bash .ci/deps`)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "Flight SQL probe failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" PASS, 0 FAIL"), "{stdout}");
}
