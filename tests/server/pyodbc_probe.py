"""What an ODBC BI tool does through psqlODBC: connect, browse catalog (SQLTables/SQLColumns),
parameterized query, type info. Usage: pyodbc_probe.py 'DSN=...;[extra]'"""
import os, sys, pyodbc
conn_str = sys.argv[1]
results = []
def check(name, fn):
    try:
        out = fn()
        results.append((name, "OK", repr(out)[:140]))
    except Exception as e:
        results.append((name, "FAIL", f"{type(e).__name__}: {str(e).strip()[:220]}"))

# PROBE_ERROR_SQL replaces the statement that must fail (run_probes.py sets it to a statement that
# succeeds, to show that the check then FAILs).
ERROR_SQL = os.environ.get("PROBE_ERROR_SQL")


def expect_error(cur, sql, sqlstate):
    """The SQLSTATE `sql` fails with, which must be `sqlstate`; no error is a failure."""
    sql = ERROR_SQL or sql
    try:
        cur.execute(sql)
    except pyodbc.Error as e:
        if e.args[0] != sqlstate:
            raise AssertionError(f"SQLSTATE {e.args[0]}, expected {sqlstate}: {e}") from e
        return e.args[0]
    raise AssertionError(f"no error from {sql!r} (expected {sqlstate})")
try:
    cn = pyodbc.connect(conn_str, autocommit=True, timeout=10)
except Exception as e:
    print("connect | FAIL |", e); sys.exit(1)
results.append(("connect", "OK", ""))
check("SQL_DBMS_NAME/VER", lambda: (cn.getinfo(pyodbc.SQL_DBMS_NAME), cn.getinfo(pyodbc.SQL_DBMS_VER)))
check("SQL_DRIVER_NAME/VER", lambda: (cn.getinfo(pyodbc.SQL_DRIVER_NAME), cn.getinfo(pyodbc.SQL_DRIVER_VER)))
cur = cn.cursor()
check("SQLTables(schema=pbmc)", lambda: [(r.table_schem, r.table_name, r.table_type) for r in cur.tables(schema="pbmc")])
check("SQLTables(all TABLE)", lambda: sorted({(r.table_schem, r.table_name) for r in cur.tables(tableType="TABLE")})[:6])
check("SQLColumns(pbmc.obs)", lambda: [(r.column_name, r.type_name, r.data_type) for r in cur.columns(table="obs", schema="pbmc")])
check("SQLPrimaryKeys(obs)", lambda: [tuple(r) for r in cur.primaryKeys(table="obs", schema="pbmc")])
check("SQLStatistics(obs)", lambda: len(cur.statistics(table="obs", schema="pbmc").fetchall()))
check("SQLGetTypeInfo", lambda: len(cur.getTypeInfo().fetchall()))
check("plain select", lambda: cur.execute("SELECT obs_name, n_genes, n_counts FROM pbmc.obs ORDER BY obs_name").fetchall())
check("param (?) text", lambda: cur.execute("SELECT count(*) FROM pbmc.obs WHERE bulk_labels = ?", "CD56+ NK").fetchone()[0])
check("param (?) int", lambda: cur.execute("SELECT count(*) FROM pbmc.obs WHERE n_genes > ?", 700).fetchone()[0])
check("param (?) float", lambda: cur.execute("SELECT count(*) FROM pbmc.obs WHERE n_counts > ?", 2000.5).fetchone()[0])
check("describe result cols", lambda: [(d[0], d[1].__name__) for d in cur.execute("SELECT * FROM pbmc.var").description])
check("group by", lambda: cur.execute("SELECT bulk_labels, avg(n_counts) FROM pbmc.obs GROUP BY bulk_labels ORDER BY 1").fetchall())
check("error then reuse", lambda: (expect_error(cur, "SELECT * FROM nope", "42P01"), cur.execute("SELECT 1").fetchone()[0]))
check("many rows fetch", lambda: len(cur.execute(sys.argv[2] if len(sys.argv) > 2 else "SELECT generate_series(1,5000)").fetchall()))

for r in results:
    print(" | ".join(r))
