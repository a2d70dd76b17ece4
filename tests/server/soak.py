"""Soak test of `annql serve`: many concurrent PostgreSQL clients for a while, then memory.

N clients (psycopg, one thread each) loop until the time is up, each step one of:
- Q1-Q7 (benches/sql/qN.sql on the dataset, parameters derived as the bench anchors derive them),
  the answer compared with the in-process engine's (`annql run -f ndjson`, run before the load);
- catalog queries psql, psycopg, SQLAlchemy, pgJDBC/DBeaver and psqlODBC send, compared with the
  server's own answer before the load;
- a cancel (CancelRequest) of a statement that cannot finish in time: SQLSTATE 57014 expected;
- a statement timeout on the same: 57014 expected, then the connection answers again;
- a client that disconnects mid-result: a raw socket asks for a large result, reads a little and
  hangs up (with a TCP reset half of the time);
- a reconnect (a new session), so sessions are opened and dropped all along.
Any other error, any wrong answer, a dead server, an RSS above --max-peak-mb or an RSS more than
--final-slack-mb above its start once every client has left fails the run (exit status 1).

Short form (CI, through tests/it/server.rs::soak_short):
    python3 tests/server/soak.py --annql target/debug/annql --clients 16 --seconds 60
Long form (closing note):
    python3 tests/server/soak.py --annql target/debug/annql \
        --dataset /work/data/atlas-s.zarr --clients 64 --seconds 600
"""
import argparse
import collections
import json
import math
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from decimal import Decimal

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SQL_DIR = os.path.join(ROOT, "benches", "sql")
MARKERS = ["CD3E", "CD4", "CD8A", "MS4A1", "CD14", "LYZ", "NKG7", "GNLY", "FCGR3A", "PPBP"]
USER = "annql"

# A statement that cannot finish within any cancel delay or timeout used here (10^12 rows), so
# its only correct outcome is 57014; it produces batches all along, as a long scan does.
ENDLESS = "SELECT count(*) FROM generate_series(1, 1000000000000) AS t(i) WHERE i % 7 = 3"
# A result large enough that the server is still sending it when the client hangs up.
BIG_RESULT = "SELECT i, i * 2 AS j, 'padding-padding-padding' AS s FROM generate_series(1, 50000000) AS t(i)"

# What clients send on connect and when browsing (answers must not change under load).
CATALOG = [
    "SELECT version()",
    "SELECT current_schema(), current_database(), current_user",
    "SHOW search_path",
    "SHOW transaction_isolation",
    "SHOW standard_conforming_strings",
    "SELECT pg_catalog.version()",
    "SELECT n.nspname FROM pg_catalog.pg_namespace n ORDER BY 1",
    "SELECT table_schema, table_name FROM information_schema.tables "
    "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2",
    "SELECT column_name, data_type FROM information_schema.columns "
    "WHERE table_schema = 'atlas' AND table_name = 'obs' ORDER BY ordinal_position",
    "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'atlas' ORDER BY 2",
    # psql's \dt atlas.*
    "SELECT n.nspname as \"Schema\", c.relname as \"Name\", "
    "CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' "
    "WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN 'foreign table' "
    "WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as \"Type\", "
    "pg_catalog.pg_get_userbyid(c.relowner) as \"Owner\" "
    "FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r','p','') AND c.relname OPERATOR(pg_catalog.~) '^(.*)$' COLLATE pg_catalog.default "
    "AND n.nspname OPERATOR(pg_catalog.~) '^(atlas)$' COLLATE pg_catalog.default ORDER BY 1,2",
    # DBeaver / pgJDBC
    "SELECT typname, oid FROM pg_catalog.pg_type WHERE typname IN ('int4', 'int8', 'text', 'float8') ORDER BY 1",
    "SELECT name, setting FROM pg_catalog.pg_settings WHERE name = 'max_index_keys'",
]

failures = []
lock = threading.Lock()
counts = collections.Counter()


def fail(kind, what, detail):
    with lock:
        failures.append((kind, what[:80], str(detail)[:300]))


def count(kind):
    with lock:
        counts[kind] += 1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid, field="VmRSS"):
    """The process's resident memory (VmRSS), or its anonymous part alone (RssAnon)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def sql_literal(v):
    if isinstance(v, (list, tuple)):
        return ", ".join(sql_literal(x) for x in v)
    return "'" + str(v).replace("'", "''") + "'"


def render(q, params):
    import re
    with open(os.path.join(SQL_DIR, f"{q}.sql")) as f:
        text = f.read()
    text = "\n".join(line for line in text.splitlines() if not line.startswith("--")).strip().rstrip(";")
    return re.sub(r"\$\{(\w+)\}", lambda m: sql_literal(params[m.group(1)]), text)


def in_process(annql, dataset, sql):
    """The rows of `sql` from the in-process engine (`annql run`), as lists in column order."""
    p = subprocess.run([annql, "run", "-d", f"atlas={dataset}", "-f", "ndjson", f"--command={sql}"],
                       capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"annql run failed on {sql[:80]}: {p.stderr[-500:]}")
    return [list(json.loads(line).values()) for line in p.stdout.splitlines() if line.strip()]


def derive_params(annql, dataset):
    """The bench parameters, derived from obs as ../shared/bench/anchors/common.py does."""
    markers = {r[0] for r in in_process(
        annql, dataset, f"SELECT var_name FROM atlas.var WHERE var_name IN ({sql_literal(MARKERS)})")}
    ct = in_process(annql, dataset, "SELECT cell_type, count(*) FROM atlas.obs GROUP BY 1")
    ct.sort(key=lambda r: (-r[1], r[0]))
    donors = in_process(annql, dataset, "SELECT donor_id, count(*) FROM atlas.obs GROUP BY 1")
    donors.sort(key=lambda r: (r[1], r[0]))
    return {
        "q2_gene": "CD3E",
        "q4_tissue": "lung",
        "markers": [m for m in MARKERS if m in markers],
        "q6_cell_type": ct[min(2, len(ct) - 1)][0],
        "q7_gene": "MS4A1",
        "q7_donor": donors[len(donors) // 2][0],
    }


def normal(rows):
    """Rows sorted by their non-float values, values as Python numbers/strings."""
    def value(v):
        return float(v) if isinstance(v, Decimal) else v
    rows = [[value(v) for v in r] for r in rows]
    return sorted(rows, key=lambda r: [str(v) for v in r if not isinstance(v, float)])


def same(got, want):
    """Equal rows, floats to a relative 1e-6 (parallel sums may add in another order)."""
    got, want = normal(got), normal(want)
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        if len(g) != len(w):
            return False
        for a, b in zip(g, w):
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
                if not math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9):
                    return False
            elif a != b:
                return False
    return True


class Server:
    def __init__(self, annql, dataset, max_connections, log):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [annql, "serve", f"atlas={dataset}", "--listen", f"127.0.0.1:{self.port}", "--no-auth",
             "--max-connections", str(max_connections)],
            stdout=log, stderr=log)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited at start")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def dsn(self):
        return f"host=127.0.0.1 port={self.port} dbname=annql user={USER} connect_timeout=30"


def startup_packet():
    params = b"user\0" + USER.encode() + b"\0database\0annql\0\0"
    return struct.pack("!II", 8 + len(params), 196608) + params


def disconnect_mid_result(port):
    """Asks for a large result over a raw socket, reads some of it, hangs up."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s.sendall(startup_packet())
        got = b""
        while b"Z\0\0\0\x05" not in got:  # ReadyForQuery
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError(f"closed during startup: {got[:200]!r}")
            got += chunk
        q = BIG_RESULT.encode() + b"\0"
        s.sendall(b"Q" + struct.pack("!I", 4 + len(q)) + q)
        want = random.randint(1, 64) * 16384
        seen = 0
        while seen < want:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("the server closed before the client hung up")
            if seen == 0 and chunk[:1] == b"E":
                raise RuntimeError(f"error instead of rows: {chunk[:200]!r}")
            seen += len(chunk)
        if random.random() < 0.5:  # a reset instead of an orderly close
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        s.close()


def expect_57014(conn, sql, what):
    try:
        conn.execute(sql).fetchall()
        fail(what, sql, "finished instead of 57014")
    except psycopg.errors.QueryCanceled:
        count(what)
    except psycopg.Error as e:
        fail(what, sql, f"{e.sqlstate}: {e}")


def client(srv, deadline, queries, catalog, weights, seed):
    rnd = random.Random(seed)
    kinds, w = zip(*weights.items())
    conn = None
    while time.time() < deadline:
        kind = rnd.choices(kinds, w)[0]
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(srv.dsn(), autocommit=True)
            if kind == "query":
                name, sql, want = rnd.choice(queries)
                got = conn.execute(sql).fetchall()
                if same([list(r) for r in got], want):
                    count(name)
                else:
                    fail("wrong answer", name, f"{len(got)} rows vs {len(want)}: {got[:3]} vs {want[:3]}")
            elif kind == "catalog":
                sql, want = rnd.choice(catalog)
                got = [list(r) for r in conn.execute(sql).fetchall()]
                if same(got, want):
                    count("catalog")
                else:
                    fail("wrong catalog answer", sql, f"{got[:3]} vs {want[:3]}")
            elif kind == "cancel":
                # A cancel that arrives before the statement has started cancels nothing (as in
                # PostgreSQL), so keep cancelling, as a user presses Ctrl-C again, until it ends.
                done = threading.Event()

                def cancel(delay=rnd.uniform(0.05, 0.5)):
                    while not done.wait(delay):
                        conn.cancel()
                        delay = 0.5

                canceller = threading.Thread(target=cancel)
                canceller.start()
                try:
                    expect_57014(conn, ENDLESS, "cancel")
                finally:
                    done.set()
                    canceller.join()
            elif kind == "timeout":
                conn.execute(f"SET statement_timeout = '{rnd.randint(50, 400)}ms'")
                expect_57014(conn, ENDLESS, "statement timeout")
                conn.execute("RESET statement_timeout")
                if conn.execute("SELECT 1").fetchone() != (1,):
                    fail("timeout", "SELECT 1 after", "wrong answer")
            elif kind == "disconnect":
                disconnect_mid_result(srv.port)
                count("disconnect mid-result")
            elif kind == "reconnect":
                conn.close()
                conn = None
                count("reconnect")
        except Exception as e:  # noqa: BLE001 - every unexpected error is a failure of the run
            fail(f"error in {kind}", kind, f"{type(e).__name__}: {e}")
            if conn is not None:
                conn.close()
            conn = None
    if conn is not None:
        conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--annql", default=os.path.join(ROOT, "target", "debug", "annql"))
    ap.add_argument("--dataset", default=os.path.join(ROOT, "tests", "fixtures", "data", "tiny.v2.zarr"))
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--settle", type=float, default=10, help="seconds to wait after the clients leave")
    ap.add_argument("--grace", type=float, default=300, help="seconds a statement may run past the end")
    ap.add_argument("--final-slack-mb", type=float, default=100)
    ap.add_argument("--max-peak-mb", type=float, default=1536)
    ap.add_argument("--queries", default="q1,q2,q3,q4,q5,q6,q7", help="which of Q1-Q7 the clients run")
    ap.add_argument("--log", default=None, help="the server's log (default: a temporary file)")
    a = ap.parse_args()

    t0 = time.time()
    params = derive_params(a.annql, a.dataset)
    queries = []
    for q in a.queries.split(","):
        sql = render(q, params)
        queries.append((q, sql, in_process(a.annql, a.dataset, sql)))
    print(f"references: {len(queries)} queries in process, {time.time() - t0:.0f} s; params {params}", flush=True)

    log = open(a.log, "w") if a.log else __import__("tempfile").NamedTemporaryFile("w+", suffix=".log", delete=False)
    # Room for the clients, their cancel requests and the hung-up sockets the server has not reaped yet.
    srv = Server(a.annql, a.dataset, a.clients * 2 + 8, log)
    pid = srv.proc.pid
    time.sleep(1.0)
    cold_rss = rss_mb(pid)
    # One serial pass first (the catalog references, each query once): the start the final RSS
    # is held to includes the binary's code those statements page in (file-backed, ~40 MB of a
    # debug build), not only what the idle server had touched.
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        catalog = [(sql, [list(r) for r in c.execute(sql).fetchall()]) for sql in CATALOG]
        for name, sql, want in queries:
            if not same([list(r) for r in c.execute(sql).fetchall()], want):
                fail("wrong answer", name, "serial pass before the load")
    time.sleep(1.0)
    start_rss, start_anon = rss_mb(pid), rss_mb(pid, "RssAnon")

    samples = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                samples.append((time.time(), rss_mb(pid)))
            except OSError:
                return
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    weights = {"query": 50, "catalog": 20, "cancel": 5, "timeout": 5, "disconnect": 5, "reconnect": 5}
    began = time.time()
    deadline = began + a.seconds
    threads = [threading.Thread(target=client, args=(srv, deadline, queries, catalog, weights, i), daemon=True)
               for i in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        # A statement still running this long after the end is a hang: fail instead of waiting.
        t.join(max(0.0, deadline + a.grace - time.time()))
    hung = sum(t.is_alive() for t in threads)
    if hung:
        fail("hang", f"{hung} clients", f"still in a statement {a.grace:.0f} s after the end")
    ran = time.time() - began
    time.sleep(a.settle)
    final_rss = rss_mb(pid) if srv.proc.poll() is None else float("nan")
    final_anon = rss_mb(pid, "RssAnon") if srv.proc.poll() is None else float("nan")
    stop.set()
    sampler.join()
    alive = srv.proc.poll() is None
    peak = max((r for _, r in samples), default=0.0)
    srv.proc.terminate()
    try:
        srv.proc.wait(10)
    except subprocess.TimeoutExpired:
        srv.proc.kill()

    total = sum(counts.values())
    timeline = []
    for i in range(0, len(samples), max(1, len(samples) // 20)):
        timeline.append(f"{samples[i][0] - began:.0f}s:{samples[i][1]:.0f}")
    print(f"rss timeline (MB): {' '.join(timeline)}")
    print(f"steps: {dict(sorted(counts.items()))}")
    for f in failures[:30]:
        print("FAIL", " | ".join(f))
    checks = [
        ("server alive", alive),
        ("no unexpected errors or wrong answers", not failures),
        (f"peak RSS <= {a.max_peak_mb:.0f} MB", peak <= a.max_peak_mb),
        (f"final RSS within {a.final_slack_mb:.0f} MB of start", final_rss - start_rss <= a.final_slack_mb),
        ("every kind of step ran", all(counts[k] > 0 for k in
                                       ["catalog", "cancel", "statement timeout", "disconnect mid-result", "reconnect"])
         and all(counts[q] > 0 for q, _, _ in queries)),
    ]
    summary = {
        "clients": a.clients, "minutes": round(ran / 60, 2), "steps": total, "errors": len(failures),
        "cold_rss_mb": round(cold_rss), "start_rss_mb": round(start_rss), "peak_rss_mb": round(peak),
        "final_rss_mb": round(final_rss), "start_anon_mb": round(start_anon), "final_anon_mb": round(final_anon),
        "dataset": a.dataset,
    }
    for name, ok in checks:
        print(f"soak: {name} | {'OK' if ok else 'FAIL'}")
    print("soak summary: " + json.dumps(summary), flush=True)
    sys.exit(0 if all(ok for _, ok in checks) else 1)


if __name__ == "__main__":
    main()
