"""statement_timeout and CancelRequest vs a ~2 s query. No-parameter queries go over the simple protocol in psycopg 3."""
import sys, time, threading, psycopg, psycopg.sql
dsn = sys.argv[1]
SLOW = "SELECT count(*) FROM pbmc.x a, pbmc.obs b WHERE a.value * b.n_counts > %s"
def run(label, fn):
    t0 = time.time()
    try:
        r = fn(); print(f"{label}: returned {r} after {time.time()-t0:.1f}s")
    except Exception as e:
        print(f"{label}: {type(e).__name__} sqlstate={getattr(e,'sqlstate',None)} after {time.time()-t0:.1f}s: {str(e).strip()[:90]}")
with psycopg.connect(dsn, autocommit=True) as c:
    run("baseline slow query (extended)", lambda: c.execute(SLOW, [-1]).fetchone())
    c.execute("SET statement_timeout = '300ms'")
    run("statement_timeout 300ms, extended protocol", lambda: c.execute(SLOW, [-1]).fetchone())
    run("statement_timeout 300ms, simple protocol", lambda: c.execute(psycopg.sql.SQL(SLOW.replace("%s", "-1"))).fetchone())
    c.execute("SET statement_timeout = 0")
    threading.Timer(0.3, c.cancel).start()
    run("CancelRequest after 300ms (extended)", lambda: c.execute(SLOW, [-1]).fetchone())
    threading.Timer(0.3, c.cancel).start()
    run("CancelRequest after 300ms (simple)", lambda: c.execute(psycopg.sql.SQL(SLOW.replace("%s", "-1"))).fetchone())
    run("connection usable afterwards", lambda: c.execute("SELECT 1").fetchone())
