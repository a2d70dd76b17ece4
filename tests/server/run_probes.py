"""Runs the real-client probes against `annql serve` on loopback and fails on any FAIL.

The probes in this folder are ../shared/bi-probes adapted to annql's demo tables (pbmc.obs:
obs_name, bulk_labels, n_genes, n_counts; pbmc.x). Each prints `name | OK|FAIL|SKIPPED | detail`.

Usage: python3 tests/server/run_probes.py [--annql target/debug/annql] [--only NAME ...] [--load-seconds 60]
Needs: psql, pgbench, java/javac + /usr/share/java/postgresql.jar, unixODBC + psqlODBC, openssl,
Python psycopg, psycopg2, pyodbc, sqlalchemy (.ci/run installs them).
"""
import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
USER, PASSWORD = "analyst", "s3cret-pw"
JDBC_JAR = "/usr/share/java/postgresql.jar"
failures = []


def report(name, ok, detail=""):
    print(f"{name} | {'OK' if ok else 'FAIL'} | {detail}"[:300], flush=True)
    if not ok:
        failures.append(name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `annql serve` process."""

    def __init__(self, annql, args, env=None):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        cmd = [annql, "serve", f"pbmc={ROOT}/examples/data/pbmc68k_reduced.zarr",
               "--listen", f"127.0.0.1:{self.port}"] + args
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log,
                                     env={**os.environ, **(env or {})})
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {open(self.log.name).read()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def alive(self):
        return self.proc.poll() is None

    def rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0

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


def run(cmd, env=None, timeout=300, cwd=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})},
                       timeout=timeout, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def probe_lines(name, out, err, rc, allowed_fail=()):
    """Reports every `check | STATUS | detail` line of a probe's output."""
    seen = 0
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("|", 2)]
        if len(parts) >= 2 and parts[1] in ("OK", "FAIL", "SKIPPED"):
            seen += 1
            ok = parts[1] == "OK" or parts[0] in allowed_fail
            report(f"{name}: {parts[0]}", ok, parts[2] if len(parts) > 2 else "")
    if seen == 0 or rc != 0:
        report(f"{name}: ran", False, f"rc={rc} {err.strip()[-400:]} {out.strip()[-200:]}")


def dsn(port, extra=""):
    return f"host=127.0.0.1 port={port} dbname=annql user={USER} password={PASSWORD} {extra}".strip()


def make_cert(d):
    key, crt = os.path.join(d, "server.key"), os.path.join(d, "server.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return crt, key


def check_psql(srv, sslmode="disable"):
    rc, out, err = run(["psql", "-X", "-h", "127.0.0.1", "-p", str(srv.port), "-U", USER, "-d", "annql",
                        "-v", "ON_ERROR_STOP=0", "-f", os.path.join(HERE, "psql_df.sql")],
                       env={"PGPASSWORD": PASSWORD, "PGSSLMODE": sslmode})
    errors = [l for l in err.splitlines() if "ERROR" in l or "FATAL" in l]
    expected = ["'annql.public.nope' not found", "found: selec", "divide by zero"]
    unexpected = [e for e in errors if not any(x in e.lower() for x in expected)]
    # the three deliberate errors, with their PostgreSQL-style messages
    for what in ["nope", "SELEC", "zero"]:
        report(f"psql[{sslmode}]: error for {what}", any(what.lower() in e.lower() for e in errors),
               "; ".join(errors)[:200])
    report(f"psql[{sslmode}]: no unexpected errors", not unexpected, "; ".join(unexpected)[:250])
    for needle in ["PostgreSQL 16", "bulk_labels", "obs", "535433", "CD56+ NK", "1024"]:
        report(f"psql[{sslmode}]: output has {needle!r}", needle in out, "")
    if sslmode != "disable":
        rc2, out2, _ = run(["psql", "-X", "-h", "127.0.0.1", "-p", str(srv.port), "-U", USER, "-d", "annql",
                            "-Atc", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"],
                           env={"PGPASSWORD": PASSWORD, "PGSSLMODE": sslmode})
        report(f"psql[{sslmode}]: connection is encrypted", out2.strip() == "t", out2.strip())


def check_psycopg(srv):
    rc, out, err = run([sys.executable, os.path.join(HERE, "psycopg_probe.py"), dsn(srv.port)])
    probe_lines("psycopg", out, err, rc)


def odbc_ini(srv, tmp, declare_fetch, ssl):
    """An odbc.ini with the DSN `annql` for this server."""
    ini = os.path.join(tmp, f"odbc-{declare_fetch}-{ssl}.ini")
    with open(ini, "w") as f:
        f.write(f"""[annql]
Driver               = PostgreSQL Unicode
Servername           = 127.0.0.1
Port                 = {srv.port}
Database             = annql
Username             = {USER}
Password             = {PASSWORD}
SSLmode              = {ssl}
UseServerSidePrepare = 1
UseDeclareFetch      = {declare_fetch}
Fetch                = 100
ReadOnly             = 1
""")
    return ini


def check_pyodbc(srv, tmp, declare_fetch, ssl="disable"):
    ini = odbc_ini(srv, tmp, declare_fetch, ssl)
    rc, out, err = run([sys.executable, os.path.join(HERE, "pyodbc_probe.py"), "DSN=annql",
                        "SELECT obs_id, var_id, value FROM pbmc.x WHERE obs_id < 7"], env={"ODBCINI": ini})
    probe_lines(f"pyodbc[UseDeclareFetch={declare_fetch},ssl={ssl}]", out, err, rc)
    m = re.search(r"many rows fetch \| OK \| (\d+)", out)
    expected = count(srv, "SELECT count(*) FROM pbmc.x WHERE obs_id < 7")
    report(f"pyodbc[UseDeclareFetch={declare_fetch},ssl={ssl}]: every row fetched",
           bool(m) and int(m.group(1)) == expected, f"{m.group(1) if m else None} vs {expected}")


def count(srv, sql):
    import psycopg
    with psycopg.connect(dsn(srv.port)) as c:
        return c.execute(sql).fetchone()[0]


def jdbc_classpath(tmp):
    """The classpath of the compiled Java probes (None, reported, when they cannot be built)."""
    if not os.path.exists(JDBC_JAR):
        report("jdbc: driver jar present", False, JDBC_JAR)
        return None
    if not os.path.exists(os.path.join(tmp, "JdbcProbe.class")):
        for src in ("JdbcProbe.java", "TlsProbe.java"):
            shutil.copy(os.path.join(HERE, src), tmp)
        rc, out, err = run(["javac", "-cp", JDBC_JAR, "JdbcProbe.java", "TlsProbe.java"], cwd=tmp)
        if rc != 0:
            report("jdbc: compile probes", False, err[-300:])
            return None
    return f"{JDBC_JAR}:{tmp}"


def check_jdbc(srv, tmp, ssl=False):
    cp = jdbc_classpath(tmp)
    if cp is None:
        return
    big = "SELECT obs_id, var_id, value FROM pbmc.x WHERE obs_id < 20"
    url = f"jdbc:postgresql://127.0.0.1:{srv.port}/annql" + ("?sslmode=require" if ssl else "")
    if not ssl:
        rc, out, err = run(["java", "-cp", cp, "JdbcProbe", url, USER, PASSWORD, big], cwd=tmp)
        probe_lines("pgjdbc", out, err, rc)
        m = re.search(r"fetchSize=100 paging \(autocommit off\) \| OK \| (\d+)", out)
        expected = count(srv, "SELECT count(*) FROM pbmc.x WHERE obs_id < 20")
        report("pgjdbc: fetchSize paging returns every row", bool(m) and int(m.group(1)) == expected,
               f"{m.group(1) if m else None} vs {expected}")
    else:
        rc, out, err = run(["java", "-cp", cp, "TlsProbe", url, USER, PASSWORD], cwd=tmp)
        report("pgjdbc[tls]: connection is encrypted", out.strip().startswith("pgJDBC: t "), out.strip() + err[-200:])


def check_sqla(srv):
    rc, out, err = run([sys.executable, os.path.join(HERE, "sqla_probe.py"),
                        f"postgresql+psycopg2://{USER}:{PASSWORD}@127.0.0.1:{srv.port}/annql"])
    probe_lines("sqlalchemy", out, err, rc)


def check_describe_cursor(trust):
    rc, out, err = run([sys.executable, os.path.join(HERE, "describe_cursor.py"), str(trust.port), USER, "annql"])
    report("describe portal of a DECLAREd cursor gives RowDescription", "T(nfields=2)" in out, out.strip() + err[-200:])


def check_timeout_cancel(srv):
    rc, out, err = run([sys.executable, os.path.join(HERE, "timeout_cancel.py"), dsn(srv.port)], timeout=600)
    lines = {l.split(":", 1)[0]: l for l in out.splitlines() if ":" in l}
    base = lines.get("baseline slow query (extended)", "")
    m = re.search(r"after ([\d.]+)s", base)
    report("timeout/cancel: baseline query takes > 1.5 s", bool(m) and float(m.group(1)) > 1.5, base)
    for label in ["statement_timeout 300ms, extended protocol", "statement_timeout 300ms, simple protocol",
                  "CancelRequest after 300ms (extended)", "CancelRequest after 300ms (simple)"]:
        line = lines.get(label, "")
        m = re.search(r"after ([\d.]+)s", line)
        ok = "sqlstate=57014" in line and bool(m) and float(m.group(1)) <= 1.3
        report(f"timeout/cancel: {label} stops the scan with 57014 within 1 s of the deadline", ok, line)
    report("timeout/cancel: connection usable afterwards",
           "connection usable afterwards: returned (1,)" in out, out[-200:] + err[-200:])


def check_conn_limit(annql, tmp):
    srv = Server(annql, ["--password", PASSWORD, "--user", USER, "--max-connections", "4"])
    try:
        rc, out, err = run([sys.executable, os.path.join(HERE, "conn_limit.py"), str(srv.port), "5", dsn(srv.port)])
        report("connection limit: 4 open, the 5th refused", "opened 4" in out, out.strip())
        report("connection limit: refusal is FATAL 53300", "too many clients" in out, out.strip())
        report("connection limit: open connections still answer", "still answering: 4" in out, out.strip())
    finally:
        srv.stop()


def check_wire_abuse(srv, label, user=USER, post_auth=True):
    """Each malformed frame gets what PostgreSQL gives it (wire_abuse.py checks each case: FATAL
    08P01 and a close for a broken frame, an ERROR on an open connection for a bad but
    well-formed message); the server neither panics nor stops answering others. On a SCRAM
    server only the pre-authentication cases run (the probe does not authenticate)."""
    args = [sys.executable, os.path.join(HERE, "wire_abuse.py"), str(srv.port), user, "annql"]
    rc, out, err = run(args + ([] if post_auth else ["--pre-auth-only"]), timeout=300)
    probe_lines(f"wire abuse[{label}]", out, err, rc)
    cases = [l for l in out.splitlines() if " | " in l]
    report(f"wire abuse[{label}]: every case ran", len(cases) >= (30 if post_auth else 11), f"{len(cases)} cases")
    import psycopg
    try:
        conn_dsn = dsn(srv.port) if not post_auth else f"host=127.0.0.1 port={srv.port} dbname=annql user={user}"
        with psycopg.connect(conn_dsn, connect_timeout=5) as c:
            answer = c.execute("SELECT 1").fetchone()
    except Exception as e:  # noqa: BLE001
        answer = repr(e)
    report(f"wire abuse[{label}]: server still answers SELECT 1", answer == (1,), str(answer))
    report(f"wire abuse[{label}]: server process alive", srv.alive(), "")
    log = open(srv.log.name).read()
    report(f"wire abuse[{label}]: no panic in the server log", "panicked" not in log,
           log[log.find("panicked") - 200:][:400] if "panicked" in log else "")


def check_error_checks_fail(srv, tmp):
    """The psycopg, pyodbc and pgJDBC checks of an expected error FAIL when the statement does
    not fail (PROBE_ERROR_SQL makes it one that succeeds): they cannot pass by accident."""
    env = {"PROBE_ERROR_SQL": "SELECT 1"}
    rc, out, err = run([sys.executable, os.path.join(HERE, "psycopg_probe.py"), dsn(srv.port)], env=env)
    for name in ["syntax error is an error, connection survives", "unknown table error"]:
        line = next((l for l in out.splitlines() if l.startswith(name + " |")), "")
        report(f"psycopg: '{name}' FAILs when nothing fails", "| FAIL | AssertionError: no error" in line, line + err[-200:])
    ini = odbc_ini(srv, tmp, 0, "disable")
    rc, out, err = run([sys.executable, os.path.join(HERE, "pyodbc_probe.py"), "DSN=annql"],
                       env={"ODBCINI": ini, **env})
    line = next((l for l in out.splitlines() if l.startswith("error then reuse |")), "")
    report("pyodbc: 'error then reuse' FAILs when nothing fails", "| FAIL | AssertionError: no error" in line, line + err[-200:])
    cp = jdbc_classpath(tmp)
    if cp:
        url = f"jdbc:postgresql://127.0.0.1:{srv.port}/annql"
        rc, out, err = run(["java", "-cp", cp, "JdbcProbe", url, USER, PASSWORD], cwd=tmp, env=env)
        line = next((l for l in out.splitlines() if l.startswith("error then reuse |")), "")
        report("pgjdbc: 'error then reuse' FAILs when nothing fails", "| FAIL | Exception: no error" in line, line + err[-200:])


# A query of ~15 s or more on the demo data (a cell's entries joined pairwise, four times over),
# long enough that it is still running well after its client is gone or its cancel arrives.
LONG_QUERY = " UNION ALL ".join(
    ["SELECT count(*) AS n FROM pbmc.x a JOIN pbmc.x b USING (obs_id) "
     "WHERE sin(a.value * b.value) > cos(a.value + b.value)"] * 4)


def cpu_rate(srv, seconds):
    before = srv.cpu_seconds()
    time.sleep(seconds)
    return (srv.cpu_seconds() - before) / seconds


def check_killed_client(srv):
    """A client killed mid-query leaves no running work: the server's CPU use stops."""
    code = (
        "import psycopg,sys\n"
        f"c=psycopg.connect({dsn(srv.port)!r}, autocommit=True)\n"
        f"c.execute({LONG_QUERY!r}).fetchall()\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(1.0)
    busy_rate = cpu_rate(srv, 1.0)
    still_running = p.poll() is None
    p.kill()
    p.wait()
    time.sleep(1.0)
    idle_rate = cpu_rate(srv, 2.0)
    # Relative to what the server got while busy, not to a whole core: on a loaded machine the
    # query may get a fraction of one, and the drop after the kill is what shows the work stopped.
    report("killed client: query was running when killed", busy_rate > 0.15 and still_running,
           f"{busy_rate:.2f} cpu-s/s, client alive: {still_running}")
    report("killed client: no work left running 1 s after", idle_rate < min(0.1, busy_rate / 4),
           f"{idle_rate:.2f} cpu-s/s after kill, {busy_rate:.2f} while running")


def check_cancel_stops_work(srv):
    """A cancelled long query (CancelRequest) stops working, not only answering."""
    import psycopg
    with psycopg.connect(dsn(srv.port), autocommit=True) as c:
        threading.Timer(1.0, c.cancel).start()
        t0 = time.time()
        try:
            c.execute(LONG_QUERY).fetchall()
            outcome = "returned"
        except psycopg.Error as e:
            outcome = f"sqlstate={e.sqlstate}"
        took = time.time() - t0
        time.sleep(1.0)
        idle_rate = cpu_rate(srv, 2.0)
        report("cancel: long query cancelled with 57014 within 1 s", outcome == "sqlstate=57014" and took < 2.0,
               f"{outcome} after {took:.1f}s")
        report("cancel: no work left running 1 s after", idle_rate < 0.1, f"{idle_rate:.2f} cpu-s/s after cancel")
        report("cancel: connection usable afterwards", c.execute("SELECT 1").fetchone() == (1,), "")


def check_load(srv, tmp, seconds, clients=64):
    """pgbench with a script of mixed annql queries; answers checked by a second pass."""
    script = os.path.join(tmp, "mixed.sql")
    with open(script, "w") as f:
        f.write("\\set k random(0, 699)\n"
                "SELECT count(*) FROM pbmc.obs WHERE n_genes > :k;\n"
                "SELECT bulk_labels, count(*), avg(n_counts) FROM pbmc.obs GROUP BY bulk_labels ORDER BY 1;\n"
                "SELECT count(*), sum(value) FROM pbmc.x WHERE obs_id = :k;\n"
                "SELECT o.bulk_labels, avg(x.value) FROM pbmc.x x JOIN pbmc.obs o USING (obs_id) JOIN pbmc.var v USING (var_id) WHERE v.var_name = 'CD3E' GROUP BY 1 ORDER BY 1;\n")
    peak = [0.0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], srv.rss_mb())
            time.sleep(0.5)

    t = threading.Thread(target=sample)
    t.start()
    rc, out, err = run(["pgbench", "-n", "-h", "127.0.0.1", "-p", str(srv.port), "-U", USER, "-c", str(clients),
                        "-j", "4", "-T", str(seconds), "-f", script, "annql"],
                       env={"PGPASSWORD": PASSWORD}, timeout=seconds + 300)
    stop.set()
    t.join()
    failed = re.search(r"number of failed transactions: (\d+)", out)
    done = re.search(r"number of transactions actually processed: (\d+)", out)
    report(f"load: {clients} clients x {seconds} s, 0 errors",
           rc == 0 and failed is not None and int(failed.group(1)) == 0 and done is not None and int(done.group(1)) > 0,
           f"rc={rc} processed={done.group(1) if done else None} failed={failed.group(1) if failed else None} {err.strip()[-200:]}")
    report("load: peak RSS bounded (< 1.5 GB)", peak[0] < 1536, f"peak {peak[0]:.0f} MB")
    print(f"load: {out.strip().splitlines()[-3:] if out.strip() else ''} peak RSS {peak[0]:.0f} MB", flush=True)
    # answers stay right under load: the same aggregate from 16 threads equals the serial answer
    import psycopg
    q = "SELECT bulk_labels, count(*) FROM pbmc.obs GROUP BY 1 ORDER BY 1"
    want = psycopg.connect(dsn(srv.port)).execute(q).fetchall()
    got, errs = [], []

    def one():
        try:
            with psycopg.connect(dsn(srv.port)) as c:
                for _ in range(5):
                    got.append(c.execute(q).fetchall())
        except Exception as e:  # noqa: BLE001
            errs.append(repr(e))

    ts = [threading.Thread(target=one) for _ in range(16)]
    [x.start() for x in ts]
    [x.join() for x in ts]
    report("load: concurrent answers equal the serial answer", not errs and all(g == want for g in got) and len(got) == 80,
           f"{len(got)} answers, errors {errs[:2]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--annql", default=os.path.join(ROOT, "target", "debug", "annql"))
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--load-seconds", type=int, default=60)
    a = ap.parse_args()
    want = lambda n: not a.only or n in a.only  # noqa: E731
    tmp = tempfile.mkdtemp()
    crt, key = make_cert(tmp)
    srv = Server(a.annql, ["--user", USER, "--tls-cert", crt, "--tls-key", key], env={"ANNQL_PASSWORD": PASSWORD})
    trust = Server(a.annql, ["--no-auth"])
    tls_only = Server(a.annql, ["--user", USER, "--password", PASSWORD, "--tls-cert", crt, "--tls-key", key, "--require-tls"])
    try:
        if want("auth"):
            import psycopg
            try:
                psycopg.connect(f"host=127.0.0.1 port={srv.port} dbname=annql user={USER} password=wrong")
                report("auth: wrong password refused", False, "connected")
            except psycopg.OperationalError as e:
                report("auth: wrong password refused", "28P01" in str(e) or "password authentication failed" in str(e).lower(), str(e)[:120])
            with psycopg.connect(dsn(srv.port)) as c:
                report("auth: current_user is the authenticated user", c.execute("SELECT current_user").fetchone()[0] == USER, "")
            try:
                psycopg.connect(dsn(tls_only.port, "sslmode=disable"))
                report("require-tls: plaintext refused", False, "connected")
            except psycopg.OperationalError as e:
                report("require-tls: plaintext refused", "encrypted" in str(e), str(e)[:120])
            with psycopg.connect(dsn(tls_only.port, "sslmode=require")) as c:
                report("require-tls: TLS accepted", c.execute("SELECT ssl FROM pg_stat_ssl").fetchone()[0] is True, "")
            with psycopg.connect(dsn(srv.port)) as c1, psycopg.connect(dsn(srv.port)) as c2:
                c1.execute("SET statement_timeout = '7s'")
                c1.execute("SET datafusion.execution.batch_size = 777")
                report("sessions: SET does not leak",
                       c2.execute("SHOW statement_timeout").fetchone()[0] == "0"
                       and c2.execute("SHOW datafusion.execution.batch_size").fetchone()[0] != "777"
                       and c1.execute("SHOW datafusion.execution.batch_size").fetchone()[0] == "777", "")
        if want("psql"):
            check_psql(srv)
            check_psql(srv, "require")
        if want("psycopg"):
            check_psycopg(srv)
        if want("pyodbc"):
            check_pyodbc(srv, tmp, 0)
            check_pyodbc(srv, tmp, 1)
            check_pyodbc(srv, tmp, 0, "require")
        if want("jdbc"):
            check_jdbc(srv, tmp)
            check_jdbc(srv, tmp, ssl=True)
        if want("errors"):
            check_error_checks_fail(srv, tmp)
        if want("sqlalchemy"):
            check_sqla(srv)
        if want("cursor"):
            check_describe_cursor(trust)
        if want("cancel"):
            check_timeout_cancel(srv)
        if want("killed"):
            check_killed_client(srv)
            check_cancel_stops_work(srv)
        if want("limit"):
            check_conn_limit(a.annql, tmp)
        if want("abuse"):
            check_wire_abuse(srv, "scram", post_auth=False)
            check_wire_abuse(trust, "trust")
        if want("load"):
            check_load(srv, tmp, a.load_seconds)
        report("server survived every probe", srv.alive() and trust.alive(), "")
    finally:
        for s in (srv, trust, tls_only):
            s.stop()
        if failures:
            print(f"--- server log ({srv.log.name}) ---\n" + open(srv.log.name).read()[-3000:])
    print(f"{len(failures)} FAIL")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
