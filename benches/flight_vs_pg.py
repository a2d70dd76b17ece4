#!/usr/bin/env python3
"""Q3 into a pandas DataFrame: Flight SQL vs the PostgreSQL wire (issue #27).

Starts one `annql serve` with both protocols over STORE, then pulls Q3 (benches/sql/q3.sql, the
pseudobulk: ~11.5M rows on atlas-s) into a pandas DataFrame three ways, each in a fresh client
process so its peak RSS is its own, in one run:
- `flight`: ADBC Flight SQL, `cursor.fetch_df()`;
- `psycopg`: psycopg 3, `cursor.fetchall()` then `pandas.DataFrame(rows, columns=…)`;
- `read_sql`: `pandas.read_sql(sql, psycopg_connection)` (no COPY).
Each client runs --runs times (a warm-up first, not counted); the clock starts after the client's
imports (pandas, the driver) and covers connecting, the query and the transfer into the DataFrame.
The server is the same process throughout, so every path reads warm chunks. Prints and writes JSON: seconds (median), client
peak RSS, rows, and the ratios of the PostgreSQL paths to Flight SQL.

  .venv/bin/python benches/flight_vs_pg.py --annql /work/target-bf/bench-fast/annql \
      --store /work/data/atlas-s.zarr --out ../bench-results/flight-vs-pg-s.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PASSWORD = "bench-password"

CLIENT = r'''
import json, resource, sys, time
kind, port, sql, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
# Imports before the clock starts: the time is the connection, the query and the transfer.
import pandas as pd
if kind == "flight":
    import adbc_driver_flightsql.dbapi as flight
else:
    import psycopg
t0 = time.perf_counter()
if kind == "flight":
    with flight.connect(f"grpc://127.0.0.1:{port}", db_kwargs={"username": "annql", "password": password},
                        autocommit=True) as c:
        cur = c.cursor()
        cur.execute(sql)
        df = cur.fetch_df()
        cur.close()
else:
    with psycopg.connect(f"host=127.0.0.1 port={port} dbname=annql user=annql password={password}") as c:
        if kind == "psycopg":
            cur = c.execute(sql)
            df = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
        else:
            df = pd.read_sql(sql, c)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "rows": len(df), "columns": list(df.columns),
                  "checksum": float(df["sum"].astype(float).sum()),
                  "dtypes": [str(t) for t in df.dtypes],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, proc):
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def q3():
    with open(os.path.join(HERE, "sql", "q3.sql")) as f:
        text = f.read()
    return "\n".join(l for l in text.splitlines() if not l.startswith("--")).strip().rstrip(";")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--annql", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kinds", default="flight,psycopg,read_sql")
    ap.add_argument("--out")
    a = ap.parse_args()
    pg, fl = free_port(), free_port()
    server = subprocess.Popen(
        [a.annql, "serve", f"atlas={a.store}", "--listen", f"127.0.0.1:{pg}",
         "--flight-sql", f"127.0.0.1:{fl}", "--password", PASSWORD, "--memory-limit", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {}
    try:
        wait_for(fl, server)
        sql = q3()
        for kind in a.kinds.split(","):
            port = fl if kind == "flight" else pg
            runs = []
            for i in range(a.runs + 1):
                p = subprocess.run([sys.executable, "-c", CLIENT, kind, str(port), sql, PASSWORD],
                                   capture_output=True, text=True, timeout=3600)
                if p.returncode != 0:
                    raise RuntimeError(f"{kind}: {p.stderr[-1500:]}")
                r = json.loads(p.stdout)
                print(f"{kind} run {i}{' (warm-up)' if i == 0 else ''}: {r['seconds']:.2f} s, "
                      f"{r['rows']} rows, client peak {r['peak_rss_mb']:.0f} MB", flush=True)
                if i > 0:
                    runs.append(r)
            results[kind] = {
                "seconds": statistics.median(r["seconds"] for r in runs),
                "all_seconds": [r["seconds"] for r in runs],
                "client_peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                "rows": runs[0]["rows"],
                "checksum": runs[0]["checksum"],
                "dtypes": dict(zip(runs[0]["columns"], runs[0]["dtypes"])),
            }
        server_peak = 0.0
        with open(f"/proc/{server.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    server_peak = int(line.split()[1]) / 1024
    finally:
        server.terminate()
        server.wait(30)
    if "flight" in results:
        for kind, r in results.items():
            r["ratio_to_flight"] = r["seconds"] / results["flight"]["seconds"]
    # Every path must have pulled the same answer.
    answers = {(r["rows"], round(r["checksum"], 3)) for r in results.values()}
    if len(answers) != 1:
        raise SystemExit(f"the paths disagree: {answers}")
    out = {"store": a.store, "query": "q3", "runs": a.runs, "server_peak_rss_mb": server_peak,
           "results": results}
    print(json.dumps(out, indent=2))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
