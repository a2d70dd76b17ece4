//! Flight SQL with arrow-flight's own Rust client, for what the ADBC probe
//! (`tests/server/flight_probe.py`, run by `server::flight_sql_clients`) cannot reach: token
//! lifetime, the `CancelFlightInfo` action, connection slots freed by `CloseSession`, and the
//! metadata calls JDBC makes beyond ADBC's.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use annql::server::{Dataset, Server, ServerConfig};
use arrow::array::{RecordBatch, StringArray};
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetExportedKeys, CommandGetPrimaryKeys, CommandGetXdbcTypeInfo};
use arrow_flight::{Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus};
use futures::StreamExt;
use prost::Message;
use tonic::transport::Channel;

use crate::common::fixture;

const USER: &str = "annql";
const PASSWORD: &str = "flight-test";
/// A query that cannot end by itself in any test's time.
const ENDLESS: &str =
    "SELECT count(*) FROM generate_series(1, 1000000000000) AS t(i) WHERE i % 7 = 3";

/// A server over the `tiny` fixture with Flight SQL on a free loopback port; its Flight address.
async fn start(configure: impl FnOnce(&mut ServerConfig)) -> SocketAddr {
    let mut config = ServerConfig {
        credentials: Some((USER.into(), PASSWORD.into())),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        flight_sql: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        datasets: vec![Dataset {
            name: "atlas".into(),
            location: fixture("tiny.v2.zarr"),
            options: Default::default(),
        }],
        threads: Some(2),
        ..ServerConfig::default()
    };
    configure(&mut config);
    let server = Server::bind(config).await.expect("server starts");
    let addr = server
        .flight_sql_addr()
        .expect("Flight SQL configured")
        .expect("bound");
    tokio::spawn(server.run());
    addr
}

async fn client(addr: SocketAddr) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("a URL")
        .connect()
        .await
        .expect("connects");
    FlightSqlServiceClient::new(channel)
}

async fn logged_in(addr: SocketAddr) -> FlightSqlServiceClient<Channel> {
    let mut c = client(addr).await;
    c.handshake(USER, PASSWORD)
        .await
        .expect("the password is accepted");
    c
}

/// The rows `sql` answers (all batches), or the error's text.
async fn rows(c: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Result<usize, String> {
    let info = c
        .execute(sql.into(), None)
        .await
        .map_err(|e| e.to_string())?;
    let mut n = 0;
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.ok_or("no ticket")?;
        let mut batches = c.do_get(ticket).await.map_err(|e| e.to_string())?;
        while let Some(b) = batches.next().await {
            n += b.map_err(|e| e.to_string())?.num_rows();
        }
    }
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_ends_when_idle_past_its_timeout() {
    let addr = start(|c| c.idle_timeout = Some(Duration::from_secs(1))).await;
    let mut c = logged_in(addr).await;
    assert_eq!(rows(&mut c, "SELECT 1").await, Ok(1));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let expired = rows(&mut c, "SELECT 1").await;
    assert!(
        matches!(&expired, Err(e) if e.contains("idle past its timeout")),
        "{expired:?}"
    );
    // Authenticating again (a new client: arrow-flight's would send its stale token in place of
    // the password).
    let mut c = logged_in(addr).await;
    assert_eq!(rows(&mut c, "SELECT 1").await, Ok(1));

    let mut stranger = client(addr).await;
    stranger.set_token("0123456789abcdef".into());
    let refused = rows(&mut stranger, "SELECT 1").await;
    assert!(
        matches!(&refused, Err(e) if e.contains("unknown or expired token")),
        "{refused:?}"
    );
    let wrong = client(addr).await.handshake(USER, "wrong").await;
    assert!(
        matches!(&wrong, Err(e) if e.to_string().contains("password authentication failed")),
        "{wrong:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_flight_info_stops_a_running_query() {
    let addr = start(|_| {}).await;
    let mut c = logged_in(addr).await;
    let info = c.execute(ENDLESS.into(), None).await.expect("planned");
    let ticket = info.endpoint[0].ticket.clone().expect("a ticket");
    let mut batches = c.do_get(ticket).await.expect("started");
    let reader = tokio::spawn(async move {
        let next = batches.next().await;
        (Instant::now(), next.map(|b| b.map(|b| b.num_rows())))
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!reader.is_finished(), "the query runs until cancelled");
    let request = CancelFlightInfoRequest {
        info: Some(info.clone()),
    };
    let cancelled_at = Instant::now();
    let mut results = c
        .do_action(Action {
            r#type: "CancelFlightInfo".into(),
            body: request.encode_to_vec().into(),
        })
        .await
        .expect("the action is taken");
    let result = results.next().await.expect("one result").expect("no error");
    let result = CancelFlightInfoResult::decode(&*result.body).expect("a CancelFlightInfoResult");
    assert_eq!(result.status, CancelStatus::Cancelled as i32);
    let (ended, outcome) = tokio::time::timeout(Duration::from_secs(2), reader)
        .await
        .expect("the stream ends within 2 s")
        .expect("the reader task");
    assert!(ended - cancelled_at < Duration::from_secs(2));
    assert!(
        matches!(&outcome, Some(Err(e)) if e.to_string().contains("canceling statement")),
        "{outcome:?}"
    );
    // The run is gone: cancelling it again says so.
    let again = CancelFlightInfoRequest { info: Some(info) };
    let mut results = c
        .do_action(Action {
            r#type: "CancelFlightInfo".into(),
            body: again.encode_to_vec().into(),
        })
        .await
        .expect("the action is taken");
    let result = results.next().await.expect("one result").expect("no error");
    let result = CancelFlightInfoResult::decode(&*result.body).expect("a CancelFlightInfoResult");
    assert_eq!(result.status, CancelStatus::NotCancellable as i32);
    assert_eq!(
        rows(&mut c, "SELECT 1").await,
        Ok(1),
        "the session answers after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_session_frees_a_connection_slot() {
    let addr = start(|c| c.max_connections = 1).await;
    let mut first = logged_in(addr).await;
    let full = client(addr).await.handshake(USER, PASSWORD).await;
    assert!(
        matches!(&full, Err(e) if e.to_string().contains("too many clients")),
        "{full:?}"
    );
    let mut closed = first
        .do_action(Action {
            r#type: "CloseSession".into(),
            body: Default::default(),
        })
        .await
        .expect("CloseSession is taken");
    assert!(closed.next().await.is_some_and(|r| r.is_ok()));
    let mut second = logged_in(addr).await;
    assert_eq!(rows(&mut second, "SELECT 1").await, Ok(1));
    let gone = rows(&mut first, "SELECT 1").await;
    assert!(matches!(&gone, Err(e) if e.contains("token")), "{gone:?}");
}

/// The rows of a catalog call's `FlightInfo`.
async fn info_rows(
    c: &mut FlightSqlServiceClient<Channel>,
    info: arrow_flight::FlightInfo,
) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let mut batches = c
            .do_get(endpoint.ticket.expect("a ticket"))
            .await
            .expect("do_get");
        while let Some(b) = batches.next().await {
            out.push(b.expect("a batch"));
        }
    }
    out
}

/// What JDBC's `DatabaseMetaData` asks beyond ADBC: type info and (empty) key listings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_metadata_calls_answer() {
    let addr = start(|_| {}).await;
    let mut c = logged_in(addr).await;
    let info = c
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .expect("type info");
    let batches = info_rows(&mut c, info).await;
    let names: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let names = b
                .column_by_name("type_name")
                .expect("type_name")
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("text");
            names.iter().flatten().map(String::from).collect::<Vec<_>>()
        })
        .collect();
    for t in ["BIGINT", "DOUBLE", "VARCHAR", "BOOLEAN"] {
        assert!(names.iter().any(|n| n == t), "{t} in {names:?}");
    }
    let keys = c
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: Some("atlas".into()),
            table: "obs".into(),
        })
        .await
        .expect("primary keys");
    let batches = info_rows(&mut c, keys).await;
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    let exported = c
        .get_exported_keys(CommandGetExportedKeys {
            catalog: None,
            db_schema: Some("atlas".into()),
            table: "obs".into(),
        })
        .await
        .expect("exported keys");
    let schema = exported.clone().try_decode_schema().expect("a schema");
    assert!(
        schema.field_with_name("fk_table_name").is_ok(),
        "{schema:?}"
    );
    assert_eq!(
        info_rows(&mut c, exported)
            .await
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>(),
        0
    );
}
