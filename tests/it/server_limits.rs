//! The server's limits as clients see them: `max_connections` as configured (SHOW, pg_settings,
//! psql), and the per-query memory limit — sorts over it spill and answer, what cannot spill fails
//! with SQLSTATE 53200, and the scans' decoded blocks count against it.

use std::net::SocketAddr;
use std::process::Command;

use annql_server::config::DEFAULT_QUERY_MEMORY;
use annql_server::{Dataset, Server, ServerConfig};
use tokio_postgres::SimpleQueryMessage;

use crate::common::{fixture, pg_connect};

/// A server over the `chunky` fixture on a free loopback port, without auth.
async fn start(config: ServerConfig) -> SocketAddr {
    let config = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        datasets: vec![Dataset {
            name: "chunky".into(),
            location: fixture("chunky.v2.zarr"),
            options: Default::default(),
        }],
        threads: Some(2),
        ..config
    };
    let server = Server::bind(config).await.expect("server starts");
    let addr = server.local_addr().expect("bound");
    tokio::spawn(server.run());
    addr
}

async fn connect(addr: SocketAddr) -> tokio_postgres::Client {
    pg_connect(addr).await.expect("connect")
}

/// The first column of every row of a simple query.
async fn column(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(String::from),
            _ => None,
        })
        .collect()
}

fn sqlstate<T>(r: &Result<T, tokio_postgres::Error>) -> Option<String> {
    r.as_ref()
        .err()
        .and_then(|e| e.code())
        .map(|c| c.code().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_reports_the_configured_value() {
    let addr = start(ServerConfig {
        max_connections: 7,
        ..ServerConfig::default()
    })
    .await;
    let client = connect(addr).await;
    assert_eq!(column(&client, "SHOW max_connections").await, ["7"]);
    assert_eq!(
        column(
            &client,
            "SELECT setting FROM pg_catalog.pg_settings WHERE name = 'max_connections'"
        )
        .await,
        ["7"]
    );
    let set = client.simple_query("SET max_connections = 100").await;
    assert!(set.is_err(), "max_connections cannot be SET");
    assert_eq!(column(&client, "SHOW max_connections").await, ["7"]);
    // psql, as a user checks it.
    let out = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            &addr.ip().to_string(),
            "-p",
            &addr.port().to_string(),
            "-U",
            "annql",
            "-d",
            "annql",
            "-c",
            "SHOW max_connections",
        ])
        .output()
        .expect("psql runs (it comes from `bash .ci/deps`)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "7",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_query_memory_limit_is_the_default() {
    assert_eq!(
        ServerConfig::default().memory_limit,
        Some(DEFAULT_QUERY_MEMORY)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_memory_limit_sorts_spill_and_the_rest_fail_with_53200() {
    let addr = start(ServerConfig {
        memory_limit: Some(48 << 20),
        ..ServerConfig::default()
    })
    .await;
    let client = connect(addr).await;
    // 8M keys sorted: 64 MiB, more than the limit. The sort (under a window function, so the
    // client gets one row) spills to disk and answers.
    let n = 8_000_000i64;
    let ranked = client
        .query(
            &format!(
                "SELECT CAST(max(r) AS BIGINT), sum(CASE WHEN r = 1 THEN v END) FROM (SELECT v, row_number() \
                 OVER (ORDER BY v DESC) AS r FROM (SELECT value * 7919 % {n} AS v FROM range({n})))"
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("the sort spills instead of failing: {e:?}"));
    let (rows, first): (i64, i64) = (ranked[0].get(0), ranked[0].get(1));
    assert_eq!((rows, first), (n, n - 1));
    // A hash join's build side cannot spill: 53200, not XX000, and the connection goes on.
    let join = client
        .simple_query(&format!(
            "SELECT count(*) FROM range({n}) a JOIN range({n}) b ON a.value = b.value"
        ))
        .await;
    assert_eq!(sqlstate(&join).as_deref(), Some("53200"), "{join:?}");
    assert_eq!(column(&client, "SELECT 1").await, ["1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scans_blocks_count_against_the_limit() {
    let addr = start(ServerConfig {
        memory_limit: Some(1 << 10),
        ..ServerConfig::default()
    })
    .await;
    let client = connect(addr).await;
    let scan = client.simple_query("SELECT * FROM chunky.x").await;
    assert_eq!(sqlstate(&scan).as_deref(), Some("53200"), "{scan:?}");
    let fused = client
        .simple_query(
            "SELECT o.obs_id % 3 AS g, sum(x.value) FROM chunky.x x JOIN chunky.obs o \
             ON x.obs_id = o.obs_id GROUP BY 1",
        )
        .await;
    assert_eq!(sqlstate(&fused).as_deref(), Some("53200"), "{fused:?}");
    // Another connection has a pool of its own: one client's query over the limit does not
    // take memory from another's.
    let other = connect(addr).await;
    assert_eq!(column(&other, "SELECT 2").await, ["2"]);
}
