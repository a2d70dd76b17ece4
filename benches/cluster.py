#!/usr/bin/env python3
"""annql on a loopback Ballista cluster against annql in one process, on the same cores.

  python3 benches/cluster.py --data ../data/bench-m --annql /work/target-bf/bench-fast/annql \
      --queries q3,q7 --runs 3 --out ../bench-results/cluster-m.json

Modes, each with the query planned in 2 partitions (`--threads 2`):
  * in-process: `taskset -c 0,1 annql run` (the same two cores);
  * 1 executor: `annql scheduler`, one `annql executor --vcores 1` pinned to core 0;
  * 2 executors: two of them, pinned to cores 0 and 1.
The client (`annql run --cluster`) and the scheduler are not pinned. Times are the client's wall
time per run (fresh client process each), medians reported; peak RSS of every process. Bytes
moved between processes come from Ballista's shuffle metrics (`decoded_bytes` of every
ShuffleReaderExec: partitions fetched from another process) of one `EXPLAIN ANALYZE` run, with
the rows the partial aggregation sent (`output_rows` of the stages' shuffle writers).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import render_sql  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def peak_rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Cluster:
    def __init__(self, annql: str, cores: list[int], work: str, memory: str | None):
        self.port = free_port()
        self.procs = [subprocess.Popen([annql, "scheduler", "--bind", f"127.0.0.1:{self.port}"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        wait_port(self.port)
        self.executors = []
        for i, core in enumerate(cores):
            d = os.path.join(work, f"executor-{i}")
            os.makedirs(d, exist_ok=True)
            p = subprocess.Popen(["taskset", "-c", str(core), annql, "executor", "--scheduler",
                                  f"127.0.0.1:{self.port}", "--flight-port", str(free_port()),
                                  "--grpc-port", str(free_port()), "--vcores", "1", "--work-dir", d]
                                 + (["--memory-limit", memory] if memory else []),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs.append(p)
            self.executors.append(p)
        time.sleep(2)

    def rss(self) -> list[float | None]:
        return [peak_rss_mib(p.pid) for p in self.executors]

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def timed(cmd: list[str]) -> tuple[float, float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{cmd}: {r.stderr[-2000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return wall, int(m.group(1)) / 1024 if m else float("nan"), r.stdout


def shuffle_metrics(annql: str, cluster: Cluster, atlas: str, sql: str) -> dict:
    r = subprocess.run([annql, "run", "--cluster", f"df://127.0.0.1:{cluster.port}", "--threads", "2",
                        "-d", f"atlas={atlas}", "--format", "csv", "-c", "EXPLAIN ANALYZE " + sql.strip().rstrip(";")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr[-500:]}
    text = r.stdout
    decoded = sum(int(x) for x in re.findall(r"ShuffleReaderExec:[^\n]*decoded_bytes=(\d+)", text))
    remote = sum(int(x) for x in re.findall(r"remote_partitions=(\d+)", text))
    local = sum(int(x) for x in re.findall(r"local_partitions=(\d+)", text))
    written = [int(x) for x in re.findall(r"ShuffleWriterExec[^\n]*output_rows=(\d+)", text)]
    return {"remote_bytes": decoded, "remote_partitions": remote, "local_partitions": local,
            "shuffle_writer_rows": written}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a bench data dir: atlas.zarr and params.json")
    ap.add_argument("--annql", required=True)
    ap.add_argument("--queries", default="q3,q7")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--executor-memory", default=None,
                    help="each executor's --memory-limit (default: annql's, 2 GiB per vcore)")
    ap.add_argument("--count-only", action="store_true",
                    help="time `SELECT count(*) FROM (query)`: the query computed in full, its answer "
                         "not sent to the client")
    ap.add_argument("--out")
    a = ap.parse_args()
    atlas = os.path.realpath(os.path.join(a.data, "atlas.zarr"))
    params = json.load(open(os.path.join(a.data, "params.json")))
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for q in a.queries.split(","):
            sql = render_sql(q, params)
            if a.count_only:
                body = "\n".join(l for l in sql.splitlines() if not l.lstrip().startswith("--"))
                sql = f"SELECT count(*) AS n FROM ({body.strip().rstrip(';')}) answer;"
            path = os.path.join(work, f"{q}.sql")
            with open(path, "w") as f:
                f.write(sql)
            out = os.path.join(work, "out.arrow")
            row = {}
            timed(["taskset", "-c", "0,1", a.annql, "run", "--threads", "2", "-d", f"atlas={atlas}",
                   "--format", "arrow", "-o", out, path])  # warm-up, as for the cluster
            runs = [timed(["taskset", "-c", "0,1", a.annql, "run", "--threads", "2", "-d", f"atlas={atlas}",
                           "--format", "arrow", "-o", out, path]) for _ in range(a.runs)]
            row["in-process"] = {"seconds": [round(r[0], 2) for r in runs],
                                 "median": round(statistics.median(r[0] for r in runs), 2),
                                 "peak_rss_mib": round(max(r[1] for r in runs))}
            for name, cores in (("1 executor", [0]), ("2 executors", [0, 1])):
                c = Cluster(a.annql, cores, work, a.executor_memory)
                try:
                    cmd = [a.annql, "run", "--cluster", f"df://127.0.0.1:{c.port}", "--threads", "2",
                           "-d", f"atlas={atlas}", "--format", "arrow", "-o", out, path]
                    timed(cmd)  # one warm-up: the executors open the store
                    runs = [timed(cmd) for _ in range(a.runs)]
                    row[name] = {"seconds": [round(r[0], 2) for r in runs],
                                 "median": round(statistics.median(r[0] for r in runs), 2),
                                 "client_peak_rss_mib": round(max(r[1] for r in runs)),
                                 "executor_peak_rss_mib": [round(x) if x else None for x in c.rss()],
                                 "shuffle": shuffle_metrics(a.annql, c, atlas, sql)}
                finally:
                    c.stop()
            one, two, here = row["1 executor"]["median"], row["2 executors"]["median"], row["in-process"]["median"]
            row["speedup_2_vs_1"] = round(one / two, 2)
            row["cluster_vs_in_process"] = round(two / here, 2)
            results[q] = row
            print(json.dumps({q: row}, indent=1), flush=True)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
