"""What Superset does through SQLAlchemy's postgresql+psycopg2 dialect. Usage: sqla_probe.py URL"""
import sys
from sqlalchemy import create_engine, inspect, text
url = sys.argv[1]
results = []
def check(name, fn):
    try:
        results.append((name, "OK", repr(fn())[:140]))
    except Exception as e:
        results.append((name, "FAIL", f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"))
import os
if os.environ.get("FAKE_PG_VERSION"):
    from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
    PGDialect_psycopg2._get_server_version_info = lambda self, conn: (16, 6)
eng = create_engine(url, connect_args={"application_name": "sqla-probe"})
check("connect (dialect initialize)", lambda: eng.connect().close())
insp = None
def _insp():
    global insp
    insp = inspect(eng)
    return type(insp).__name__
check("inspect()", _insp)
check("get_schema_names", lambda: insp.get_schema_names())
check("get_table_names(pbmc)", lambda: insp.get_table_names(schema="pbmc"))
check("get_view_names(pbmc)", lambda: insp.get_view_names(schema="pbmc"))
check("get_columns(pbmc.obs)", lambda: [(c["name"], str(c["type"])) for c in insp.get_columns("obs", schema="pbmc")])
check("get_pk_constraint", lambda: insp.get_pk_constraint("obs", schema="pbmc"))
check("get_foreign_keys", lambda: insp.get_foreign_keys("obs", schema="pbmc"))
check("get_indexes", lambda: insp.get_indexes("obs", schema="pbmc"))
def q():
    with eng.connect() as c:
        return c.execute(text("SELECT bulk_labels, count(*) AS n FROM pbmc.obs WHERE n_genes > :m GROUP BY bulk_labels ORDER BY bulk_labels LIMIT 100"), {"m": 600}).fetchall()
check("parameterized aggregate (client-side interpolation)", q)
for r in results:
    print(" | ".join(r))
