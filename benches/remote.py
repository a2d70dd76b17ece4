#!/usr/bin/env python3
"""The same queries on the same atlas, local and over loopback HTTP (issue #8).

Starts nginx (Debian's, as the tests do) over the data dir's parent, then runs each query with
`annql run --stats` on the local store and on its http:// URL, each run a fresh process (so the
chunk cache starts empty), and reports wall time, peak RSS, and the requests / bytes the store
read (local) or fetched (HTTP). Answers of the two must be identical.

  python3 benches/remote.py --data ../data/bench-m --queries q7,q3 --out ../bench-results/remote-m.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import REPO, render_sql  # noqa: E402

ANNQL = os.path.join(REPO, "target", "debug", "annql")
STATS = re.compile(
    r"-- .*?: ([\d.]+)s, (\d+) requests, (\d+) bytes, (\d+) chunks read"
    r"(?:; fetched (\d+) requests, (\d+) bytes; cache (\d+) hits, (\d+) bytes)?")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(root: str, workdir: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off; worker_processes 2; pid {workdir}/nginx.pid; error_log {workdir}/error.log;
events {{ worker_connections 256; }}
http {{ access_log off; client_body_temp_path {workdir}/b; proxy_temp_path {workdir}/p;
  fastcgi_temp_path {workdir}/f; uwsgi_temp_path {workdir}/u; scgi_temp_path {workdir}/s;
  sendfile on; keepalive_requests 100000;
  server {{ listen 127.0.0.1:{port}; root {root}; }} }}
""")
    proc = subprocess.Popen(["/usr/sbin/nginx", "-p", workdir, "-c", conf], stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    raise SystemExit("nginx did not start")


def run_once(binary: str, location: str, sql: str, out_csv: str) -> dict:
    # The SQL goes in a file: it starts with a `--` comment, which would read as a flag.
    query_file = out_csv + ".sql"
    with open(query_file, "w") as f:
        f.write(sql)
    cmd = [binary, "run", "--stats", "-d", f"atlas={location}", "--format", "csv", "-o", out_csv, query_file]
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, _, rusage = os.wait4(proc.pid, 0)
    wall = time.time() - started
    err = proc.stderr.read() if proc.stderr else ""
    m = STATS.search(err)
    if not m:
        raise SystemExit(f"annql failed on {location}:\n{err}")
    g = [int(x) if x and x.isdigit() else x for x in m.groups()]
    return {
        "wall_s": round(wall, 3),
        "peak_rss_mb": round(rusage.ru_maxrss / 1024, 1),
        "read_requests": g[1], "read_bytes": g[2], "chunks": g[3],
        "fetch_requests": g[4] or 0, "fetched_bytes": g[5] or 0,
        "cache_hits": g[6] or 0,
    }


def sorted_digest(path: str) -> str:
    """The digest of a result's sorted lines, computed by `sort` in a child process: holding a
    large answer in this process would inflate the next run's peak RSS, which Linux carries
    from the forked parent into the child's `ru_maxrss`."""
    sort = subprocess.run(f"LC_ALL=C sort {path} | sha256sum", shell=True, check=True,
                          capture_output=True, text=True)
    return sort.stdout.split()[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="data dir with atlas.zarr and params.json")
    ap.add_argument("--queries", default="q7,q3")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--out")
    ap.add_argument("--binary", default=ANNQL,
                    help="annql binary (default: the debug build; run.py's is target/bench-fast/annql)")
    a = ap.parse_args()
    data = os.path.abspath(a.data)
    store = os.path.realpath(os.path.join(data, "atlas.zarr"))
    params = json.load(open(os.path.join(data, "params.json")))
    work = tempfile.mkdtemp(prefix="annql-remote-")
    nginx, port = start_nginx(os.path.dirname(store), work)
    url = f"http://127.0.0.1:{port}/{os.path.basename(store)}"
    results = []
    try:
        for q in a.queries.split(","):
            sql = render_sql(q, params)
            answers = {}
            for kind, loc in (("local", store), ("http", url)):
                out = os.path.join(work, f"{q}-{kind}.csv")
                runs = [run_once(a.binary, loc, sql, out) for _ in range(a.runs)]
                best = min(runs, key=lambda r: r["wall_s"])
                answers[kind] = sorted_digest(out)
                results.append({"query": q, "store": kind, **best})
                print(json.dumps(results[-1]), flush=True)
            if answers["local"] != answers["http"]:
                raise SystemExit(f"{q}: the HTTP answer differs from the local one")
    finally:
        nginx.terminate()
    print("\n| query | store | wall s | peak RSS MB | requests | bytes | chunks |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        req = r["fetch_requests"] if r["store"] == "http" else r["read_requests"]
        byt = r["fetched_bytes"] if r["store"] == "http" else r["read_bytes"]
        print(f"| {r['query']} | {r['store']} | {r['wall_s']} | {r['peak_rss_mb']} | {req} | {byt} | {r['chunks']} |")
    if a.out:
        json.dump(results, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
