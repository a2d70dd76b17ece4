"""`annql serve --flight-sql` with the real Python ADBC Flight SQL driver, on loopback.

Each check prints `PASS name` or `FAIL name: detail`, and the run ends with `N PASS, M FAIL`
(exit status 1 on any failure). Checks:
- a password: basic authentication at the handshake, then the bearer token; a wrong password
  and no password are refused (gRPC code Unauthenticated: the checks match the gRPC code the
  driver quotes, e.g. "(PermissionDenied; Prepare)", which ADBC itself calls UNAUTHORIZED);
- the catalog calls ADBC makes: get_objects (catalog, schemas, tables), get_table_schema,
  get_table_types, get_info;
- Q1-Q7 (benches/sql/qN.sql, parameters derived as the bench anchors derive them) equal to the
  in-process engine's answers (`annql run -f ndjson`);
- categorical columns arrive with a dictionary type (obs columns and Q3's grouping keys);
- a parameterised prepared statement (`?` parameters), executed with two bindings;
- statements that would write are refused (PermissionDenied, SQLSTATE 25006);
- a cancelled query (ADBC's cancel, from another thread) fails at the client, and the server
  stops working on it within 2 s (its CPU time stops growing);
- a result larger than the server's memory limit streams through (client reads batch by batch;
  the server's resident memory stays far below the result's size);
- TLS with the server's certificate (and plaintext refused on the TLS port);
- the connection limit (`--max-connections`) counts Flight sessions.

    .venv/bin/python tests/server/flight_probe.py --annql target/debug/annql
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import adbc_driver_flightsql.dbapi as flight
import adbc_driver_manager
import pyarrow as pa

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import soak  # noqa: E402  (render, in_process, derive_params, same, free_port, rss_mb)

ROOT = os.path.dirname(os.path.dirname(HERE))
USER = "annql"
PASSWORD = "flight-probe-password"
ENDLESS = "SELECT count(*) FROM generate_series(1, 1000000000000) AS t(i) WHERE i % 7 = 3"
BIG_ROWS = 20_000_000
BIG = (f"SELECT i, i * 2 AS j, 'padding-padding-padding' AS s "
       f"FROM generate_series(1, {BIG_ROWS}) AS t(i)")

results = []


def report(name, ok, detail=""):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {name}" + (f": {str(detail)[:400]}" if detail and not ok
                                                   or isinstance(detail, Measured) else ""), flush=True)


class Measured(str):
    """A detail printed on PASS too (a measurement the docs quote)."""


class Server:
    """`annql serve` with Flight SQL on a free loopback port."""

    def __init__(self, annql, dataset, extra=(), memory_limit=None):
        self.pg_port, self.port = soak.free_port(), soak.free_port()
        args = [annql]
        if memory_limit:
            args += ["--memory-limit", memory_limit]
        args += ["serve", f"atlas={dataset}", "--listen", f"127.0.0.1:{self.pg_port}",
                 "--flight-sql", f"127.0.0.1:{self.port}", "--user", USER, *extra]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"server exited at start: {self.log.read()[-2000:]!r}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def connect(self, password=PASSWORD, user=USER, scheme="grpc", extra=None):
        kwargs = {"username": user, "password": password} if password is not None else {}
        kwargs.update(extra or {})
        return flight.connect(f"{scheme}://127.0.0.1:{self.port}", db_kwargs=kwargs, autocommit=True)

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def query(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetch_arrow_table()


def rows(table):
    return [list(r.values()) for r in table.to_pylist()]


def refused(what, fn, *needles):
    try:
        fn()
    except Exception as e:  # the driver's error, whatever its class: its text is checked
        text = str(e)
        report(what, all(n in text for n in needles), text)
        return
    report(what, False, "no error")


def check_auth(srv):
    with srv.connect() as conn:
        report("auth: password accepted", rows(query(conn, "SELECT 1 AS one")) == [[1]])
    refused("auth: wrong password refused",
            lambda: query(srv.connect(password="wrong"), "SELECT 1"),
            "(Unauthenticated;", "password authentication failed")
    refused("auth: no password refused",
            lambda: query(srv.connect(password=None), "SELECT 1"), "(Unauthenticated;")


def check_catalog(conn, annql, dataset):
    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    listed = {(c["catalog_name"], s["db_schema_name"], t["table_name"], t["table_type"])
              for c in objects for s in c["catalog_db_schemas"] or [] for t in s["db_schema_tables"] or []}
    want = {(r[0], r[1]) for r in soak.in_process(
        annql, dataset, "SELECT table_schema, table_name FROM information_schema.tables "
                        "WHERE table_schema = 'atlas'")}
    got = {(s, t) for c, s, t, _ in listed if s == "atlas"}
    report("catalog: get_objects lists the dataset's tables", got == want and len(want) > 3,
           f"{sorted(got)} vs {sorted(want)}")
    report("catalog: one catalog, no pg_catalog", {c for c, *_ in listed} == {"annql"}
           and not any(s in ("pg_catalog", "information_schema") for _, s, _, _ in listed), listed)
    schema = conn.adbc_get_table_schema("obs", catalog_filter="annql", db_schema_filter="atlas")
    direct = query(conn, "SELECT * FROM atlas.obs LIMIT 0").schema
    report("catalog: get_table_schema is the table's Arrow schema",
           schema.names == direct.names and pa.types.is_dictionary(schema.field("cell_type").type),
           f"{schema} vs {direct}")
    types = conn.adbc_get_table_types()
    report("catalog: table types", "TABLE" in types, types)
    info = conn.adbc_get_info()
    report("catalog: SqlInfo names the server", info.get("vendor_name") == "annql", info)


def check_queries(conn, annql, dataset):
    params = soak.derive_params(annql, dataset)
    for q in ["q1", "q2", "q3", "q4", "q5", "q6", "q7"]:
        sql = soak.render(q, params)
        want = soak.in_process(annql, dataset, sql)
        table = query(conn, sql)
        got = rows(table)
        report(f"{q}: equal to in-process ({len(want)} rows)", soak.same(got, want) and len(want) > 0,
               f"{soak.normal(got)[:3]} vs {soak.normal(want)[:3]}")
        if q == "q3":
            keys = [table.schema.field(n).type for n in ("donor_id", "cell_type")]
            report("q3: grouping keys arrive as dictionaries", all(pa.types.is_dictionary(t) for t in keys), keys)
    t = query(conn, "SELECT cell_type, tissue FROM atlas.obs")
    report("categoricals arrive with a dictionary type",
           all(pa.types.is_dictionary(f.type) for f in t.schema) and t.num_rows > 0, t.schema)
    want = soak.in_process(annql, dataset, "SELECT cell_type, count(*) FROM atlas.obs GROUP BY 1")
    got = rows(query(conn, "SELECT cell_type, count(*) FROM atlas.obs GROUP BY 1"))
    report("categorical values decode to the in-process labels", soak.same(got, want), f"{got} vs {want}")


def check_prepared(conn, annql, dataset):
    sql = "SELECT count(*) AS n FROM atlas.obs WHERE n_genes > ? AND cell_type <> ?"
    with conn.cursor() as cur:
        for bound in [(100, "B cell"), (1000, "T cell")]:
            want = soak.in_process(annql, dataset, sql.replace("?", "{}").format(
                bound[0], soak.sql_literal(bound[1])))
            cur.execute(sql, bound)
            got = rows(cur.fetch_arrow_table())
            report(f"prepared: parameters {bound}", got == want, f"{got} vs {want}")
    refused("prepared: a missing parameter is an error",
            lambda: query(conn, "SELECT count(*) FROM atlas.obs WHERE n_genes > ?"), "parameter")


def check_read_only(conn):
    refused("read-only: CREATE TABLE refused",
            lambda: query(conn, "CREATE TABLE t AS SELECT 1"), "(PermissionDenied;", "25006")
    refused("read-only: CREATE GENE INDEX refused",
            lambda: query(conn, "CREATE GENE INDEX ON atlas"), "(PermissionDenied;", "25006")
    refused("errors: bad SQL names the SQLSTATE",
            lambda: query(conn, "SELECT nope FROM atlas.obs"), "(InvalidArgument;", "42703")


def check_cancel(srv, conn):
    outcome = {}
    cur = conn.cursor()

    def run():
        start = time.time()
        try:
            cur.execute(ENDLESS)
            cur.fetch_arrow_table()
            outcome["error"] = None
        except Exception as e:  # the cancel's error, whatever the driver calls it
            outcome["error"] = str(e)
        outcome["seconds"] = time.time() - start

    t = threading.Thread(target=run)
    t.start()
    time.sleep(1.5)
    busy_from = srv.cpu_seconds()
    time.sleep(1.0)
    busy = srv.cpu_seconds() - busy_from
    cur.adbc_cancel()
    cancelled_at = time.time()
    t.join(30)
    returned = time.time() - cancelled_at
    # Busy at all (on a loaded machine, e.g. CI running other tests, the server may get a small
    # share of a core): the stop is judged against what it used while running.
    report("cancel: the query was running (server busy)", busy >= 0.05,
           Measured(f"{busy:.2f} CPU-s in 1 s"))
    report("cancel: the client gets an error", not t.is_alive() and outcome.get("error"), outcome)
    time.sleep(max(0.0, 2.0 - (time.time() - cancelled_at)))
    idle_from = srv.cpu_seconds()
    time.sleep(1.0)
    idle = srv.cpu_seconds() - idle_from
    report("cancel: the server stopped within 2 s", idle <= max(0.02, min(0.2, busy / 4)),
           Measured(f"{idle:.2f} CPU-s in the second after (client returned in {returned:.2f} s)"))
    cur.close()
    report("cancel: the session answers after", rows(query(conn, "SELECT 2 AS two")) == [[2]])


def check_streaming(annql, dataset):
    srv = Server(annql, dataset, ["--password", PASSWORD], memory_limit="32MB")
    try:
        with srv.connect() as conn, conn.cursor() as cur:
            base = soak.rss_mb(srv.proc.pid)
            cur.execute(BIG)
            reader = cur.fetch_record_batch()
            n, nbytes, peak = 0, 0, 0.0
            for batch in reader:
                n += batch.num_rows
                nbytes += batch.nbytes
                peak = max(peak, soak.rss_mb(srv.proc.pid))
            report(f"streaming: {BIG_ROWS} rows ({nbytes / 2**20:.0f} MiB) through a 32 MB limit",
                   n == BIG_ROWS and nbytes > 32 * 2**20, f"{n} rows")
            report("streaming: the server's memory stays far below the result",
                   peak - base < nbytes / 2**20 / 3,
                   Measured(f"RSS {base:.0f} -> peak {peak:.0f} MiB for a {nbytes / 2**20:.0f} MiB result"))
    finally:
        srv.stop()


def check_tls(annql, dataset):
    if not shutil.which("openssl"):
        report("tls: openssl available", False, "openssl not found")
        return
    with tempfile.TemporaryDirectory() as d:
        crt, key = os.path.join(d, "server.crt"), os.path.join(d, "server.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", crt, "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       check=True, capture_output=True)
        srv = Server(annql, dataset, ["--password", PASSWORD, "--tls-cert", crt, "--tls-key", key])
        try:
            with open(crt) as f:
                root = f.read()
            opts = {"adbc.flight.sql.client_option.tls_root_certs": root}
            with srv.connect(scheme="grpc+tls", extra=opts) as conn:
                report("tls: a query over TLS", rows(query(conn, "SELECT 3 AS three")) == [[3]])
            refused("tls: plaintext refused on the TLS port",
                    lambda: query(srv.connect(), "SELECT 1"), "(Unavailable;")
        finally:
            srv.stop()


def check_limit(annql, dataset):
    srv = Server(annql, dataset, ["--password", PASSWORD, "--max-connections", "2"])
    try:
        a, b = srv.connect(), srv.connect()
        ok = rows(query(a, "SELECT 1 AS x")) == [[1]] and rows(query(b, "SELECT 1 AS x")) == [[1]]
        report("limit: two sessions within --max-connections 2", ok)
        refused("limit: a third session is refused",
                lambda: query(srv.connect(), "SELECT 1"), "(ResourceExhausted;", "too many clients")
        a.close()
        b.close()
    finally:
        srv.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--annql", required=True)
    ap.add_argument("--dataset", default=os.path.join(ROOT, "tests", "fixtures", "data", "tiny.v2.zarr"))
    a = ap.parse_args()
    srv = Server(a.annql, a.dataset, ["--password", PASSWORD])
    try:
        check_auth(srv)
        with srv.connect() as conn:
            check_catalog(conn, a.annql, a.dataset)
            check_queries(conn, a.annql, a.dataset)
            check_prepared(conn, a.annql, a.dataset)
            check_read_only(conn)
            check_cancel(srv, conn)
    finally:
        srv.stop()
    check_streaming(a.annql, a.dataset)
    check_tls(a.annql, a.dataset)
    check_limit(a.annql, a.dataset)
    failed = results.count(False)
    print(f"{results.count(True)} PASS, {failed} FAIL")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    try:
        main()
    except adbc_driver_manager.Error as e:
        print(f"FAIL unexpected driver error: {e}")
        sys.exit(1)
