#!/usr/bin/env python3
"""annql's Q1–Q7 on atlases of different sizes with one binary: time and peak RSS per query, and
how time grows against stored entries.

  python3 benches/scale.py --annql /work/target-bf/bench-fast/annql --runs 1 \
      ../data/bench-m ../data/bench-l --out ../bench-results/scale.json

Each DATA dir holds atlas.zarr (with atlas.zarr.info.json: its stored entries) and params.json.
Every run is a fresh process (`/usr/bin/time -v annql run … --format arrow -o /dev/null`);
`--memory-limit` is passed through (default: none, as the benchmark runs use).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import render_sql  # noqa: E402


def run_once(annql: str, atlas: str | None, sql_path: str, extra: list[str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    dataset = ["-d", f"atlas={atlas}"] if atlas else []
    r = subprocess.run(["/usr/bin/time", "-v", annql, "run", *dataset, "--format", "arrow",
                        "-o", "/dev/null", *extra, sql_path], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{sql_path} on {atlas}: {r.stderr[-1500:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return wall, int(m.group(1)) / 1024 if m else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="+")
    ap.add_argument("--annql", required=True)
    ap.add_argument("--queries", default="q1,q2,q3,q4,q5,q6,q7")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--memory-limit", default=None)
    ap.add_argument("--no-index", action="store_true",
                    help="attach with index 'off' (a gene index beside a store is used otherwise)")
    ap.add_argument("--out")
    a = ap.parse_args()
    extra = ["--memory-limit", a.memory_limit] if a.memory_limit else []
    table = {}
    with tempfile.TemporaryDirectory() as work:
        for data in a.data:
            atlas = os.path.realpath(os.path.join(data, "atlas.zarr"))
            info = json.load(open(atlas + ".info.json"))
            params = json.load(open(os.path.join(data, "params.json")))
            rows = {"entries": info["nnz"]}
            for q in a.queries.split(","):
                path = os.path.join(work, f"{q}.sql")
                with open(path, "w") as f:
                    if a.no_index:
                        f.write(f"ATTACH '{atlas}' AS atlas (index 'off');\n")
                    f.write(render_sql(q, params))
                target = None if a.no_index else atlas
                runs = [run_once(a.annql, target, path, extra) for _ in range(a.runs)]
                rows[q] = {"seconds": round(statistics.median(r[0] for r in runs), 2),
                           "peak_rss_mib": round(max(r[1] for r in runs))}
                print(f"{os.path.basename(data)} {q}: {rows[q]}", flush=True)
            table[os.path.basename(os.path.normpath(data))] = rows
    names = list(table)
    if len(names) == 2:
        small, big = table[names[0]], table[names[1]]
        grow = big["entries"] / small["entries"]
        print(f"entries grow {grow:.2f}x from {names[0]} to {names[1]}")
        for q in a.queries.split(","):
            ratio = big[q]["seconds"] / max(small[q]["seconds"], 1e-9)
            print(f"  {q}: {small[q]['seconds']} s -> {big[q]['seconds']} s ({ratio:.2f}x; "
                  f"{'within' if ratio <= grow * 1.05 else 'above'} linear), peak RSS {big[q]['peak_rss_mib']} MiB")
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
