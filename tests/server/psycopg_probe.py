"""Exercise the protocol features BI-style Python clients use. Usage: psycopg_probe.py DSN"""
import os, sys, psycopg
dsn = sys.argv[1]
results = []
def check(name, fn):
    try:
        out = fn()
        results.append((name, "OK", repr(out)[:120]))
    except Exception as e:
        results.append((name, "FAIL", f"{type(e).__name__}: {str(e).strip()[:200]}"))

# PROBE_ERROR_SQL replaces every statement that must fail (run_probes.py sets it to a statement
# that succeeds, to show that these checks then FAIL).
ERROR_SQL = os.environ.get("PROBE_ERROR_SQL")


def expect_error(conn, sql, sqlstate):
    """The error `sql` raises, which must carry `sqlstate`; no error is a failure."""
    sql = ERROR_SQL or sql
    try:
        conn.execute(sql)
    except psycopg.Error as e:
        if not conn.autocommit:
            conn.rollback()
        if e.sqlstate != sqlstate:
            raise AssertionError(f"SQLSTATE {e.sqlstate}, expected {sqlstate}: {e}") from e
        return f"{e.sqlstate}: {str(e).strip()[:80]}"
    raise AssertionError(f"no error from {sql!r} (expected {sqlstate})")

def _pipeline(conn):
    with conn.pipeline():
        cs = [conn.execute("SELECT %s::int", [i]) for i in range(3)]
    return [c.fetchone()[0] for c in cs]

with psycopg.connect(dsn, application_name="psycopg-probe", autocommit=True) as conn:
    check("server_version", lambda: conn.info.server_version)
    check("version()", lambda: conn.execute("SELECT version()").fetchone()[0][:40])
    check("current_schema()", lambda: conn.execute("SELECT current_schema()").fetchone())
    check("SHOW search_path", lambda: conn.execute("SHOW search_path").fetchone())
    check("SET statement_timeout", lambda: conn.execute("SET statement_timeout = '5s'").statusmessage)
    check("simple count", lambda: conn.execute("SELECT count(*) FROM pbmc.obs").fetchone())
    # psycopg3 sends parameters with the extended protocol (Parse/Bind/Execute)
    check("param text", lambda: conn.execute("SELECT obs_name FROM pbmc.obs WHERE bulk_labels = %s ORDER BY obs_name", ["CD56+ NK"]).fetchall())
    check("param int", lambda: conn.execute("SELECT count(*) FROM pbmc.obs WHERE n_genes > %s", [700]).fetchone())
    check("param float", lambda: conn.execute("SELECT count(*) FROM pbmc.obs WHERE n_counts > %s", [2000.0]).fetchone())
    check("param in select list", lambda: conn.execute("SELECT %s::int + 1", [41]).fetchone())
    check("prepared x3 (prepare=True)", lambda: [conn.execute("SELECT n_genes FROM pbmc.obs WHERE obs_name = %s", [c], prepare=True).fetchone() for c in ("AAACGCACCTATGG-7", "AAACGGCTAGCAAA-2", "AAAGCCTGGCTAAC-1")])
    check("binary results", lambda: conn.cursor(binary=True).execute("SELECT n_genes, n_counts, bulk_labels FROM pbmc.obs ORDER BY obs_name").fetchall())
    check("information_schema.tables", lambda: conn.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog','information_schema') ORDER BY 1,2").fetchall())
    check("information_schema.columns", lambda: conn.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema='pbmc' AND table_name='obs' ORDER BY ordinal_position").fetchall())
    check("pg_class/pg_namespace join", lambda: conn.execute("SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid=c.relnamespace WHERE n.nspname='pbmc' ORDER BY 2").fetchall())
    check("syntax error is an error, connection survives", lambda: (expect_error(conn, "SELEC 1", "42601"), conn.execute("SELECT 1").fetchone()))
    check("unknown table error", lambda: expect_error(conn, "SELECT * FROM nope", "42P01"))

with psycopg.connect(dsn, application_name="psycopg-probe-tx") as conn:  # autocommit off -> BEGIN
    def named_cursor():
        with conn.cursor(name="c1") as cur:  # DECLARE c1 CURSOR ... / FETCH FORWARD n
            cur.itersize = 1000
            cur.execute("SELECT obs_id, var_id FROM pbmc.x WHERE obs_id < 7 ORDER BY obs_id, var_id LIMIT 5000")
            n = sum(1 for _ in cur)
        return n
    import os
    if not os.environ.get("SKIP_NAMED_CURSOR"):
        check("server-side named cursor 5000 rows", named_cursor)
    else:
        results.append(("server-side named cursor 5000 rows", "SKIPPED", "segfaults psycopg: Describe(portal) of a DECLAREd cursor returns NoData"))
    check("rollback", lambda: conn.rollback())
    check("pipeline mode", lambda: _pipeline(conn))

for r in results:
    print(" | ".join(r))
