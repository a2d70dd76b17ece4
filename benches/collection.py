#!/usr/bin/env python3
"""Q1-Q7 over a collection (an atlas split into stores by benches/split_atlas.py) vs the store.

For each query, annql answers it in fresh processes over the collection (`ATTACH 'DIR/part*'`) and
over the unsplit store, --runs processes each (the sides alternating), each process running the
statement --repeat times; reported: the first statement's time (annql's --stats line: attaching is
not in it) and the median of the later, warm ones, the ratios collection / store of both (medians
over the processes), and peak RSS. The answers must be the same (sorted CSV).
Attaching is timed apart: a process that attaches and answers `SELECT count(*) FROM
atlas.datasets` (for --attach-only globs, e.g. 200 small stores, only that).

The store is attached with `(index 'off')`: the split parts have no gene index, so both sides
read their CSR matrices (a store's index is reported by benches/index_build.py).

  python3 benches/collection.py --store /work/data/atlas-m.zarr --parts '/work/data/atlas-m-20/part*' \
      --params /work/data/bench-m/params.json --bin /work/target-bf/bench-fast/annql --runs 3
  python3 benches/collection.py --attach-only '/tmp/coll/parts200/part*' --bin ...
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

HERE = os.path.dirname(os.path.abspath(__file__))


def sql_of(q: str, params: dict) -> str:
    lit = lambda v: ", ".join(map(lit, v)) if isinstance(v, list) else "'" + str(v).replace("'", "''") + "'"
    text = open(os.path.join(HERE, "sql", f"{q}.sql")).read()
    text = "\n".join(l for l in text.splitlines() if not l.startswith("--"))
    return re.sub(r"\$\{(\w+)\}", lambda m: lit(params[m.group(1)]), text).strip().rstrip(";")


def run(bin_: str, attach: str, sql: str, threads: int | None, repeat: int = 1) -> dict:
    """One process: attach, then `sql` `repeat` times; the first statement time, the median of
    the others (warm), wall, peak RSS and the answer."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(attach + ";\n" + (sql + ";\n") * repeat)
        script = f.name
    cmd = ["/usr/bin/time", "-f", "TIME %e %M", bin_, "run", "--stats", "--format", "csv", script]
    if threads:
        cmd[4:4] = ["--threads", str(threads)]
    out = script + ".csv"
    with open(out, "w") as stdout:
        p = subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True)
    os.unlink(script)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    times = [float(m) for m in re.findall(r"^-- \S+: ([0-9.]+)s", p.stderr, re.M)]
    wall, rss = re.search(r"^TIME ([0-9.]+) ([0-9]+)", p.stderr, re.M).groups()
    # The first statement's answer (each prints the same lines), sorted and hashed by coreutils:
    # Q3's answer on atlas-m is tens of millions of lines.
    lines = int(subprocess.run(["wc", "-l", out], capture_output=True, text=True).stdout.split()[0])
    digest = subprocess.run(f"head -n {lines // repeat} {out} | LC_ALL=C sort | sha256sum",
                            shell=True, capture_output=True, text=True).stdout.split()[0]
    os.unlink(out)
    first = [str(lines // repeat), digest]
    return {"statement_s": times[1], "warm_s": statistics.median(times[2:]) if repeat > 1 else None,
            "attach_s": times[0], "wall_s": float(wall), "rss_mb": int(rss) / 1024,
            "answer": first}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store")
    ap.add_argument("--parts", help="the collection's glob")
    ap.add_argument("--params")
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "debug", "annql"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--repeat", type=int, default=4,
                    help="statements per process: the first, then warm ones (median reported)")
    ap.add_argument("--queries", default="q1,q2,q3,q4,q5,q6,q7")
    ap.add_argument("--attach-only", action="append", default=[], help="a glob: time attaching it")
    ap.add_argument("--out")
    a = ap.parse_args()
    report: dict = {"attach": [], "queries": []}
    probe = "SELECT count(*) FROM atlas.datasets"
    for glob in a.attach_only + ([a.parts] if a.parts else []):
        runs = [run(a.bin, f"ATTACH '{glob}' AS atlas", probe, a.threads) for _ in range(a.runs)]
        for r in runs:
            r["datasets"] = subprocess.run(
                [a.bin, "run", "--format", "csv", "-c", f"ATTACH '{glob}' AS atlas", "-c", probe],
                capture_output=True, text=True).stdout.split()[-1]
        n = runs[0]["datasets"]
        row = {"glob": glob, "datasets": n, "attach_s": statistics.median(r["attach_s"] for r in runs),
               "wall_s": statistics.median(r["wall_s"] for r in runs),
               "rss_mb": max(r["rss_mb"] for r in runs)}
        report["attach"].append(row)
        print(f"attach {glob}: {n} datasets, ATTACH {row['attach_s']:.3f} s "
              f"(process {row['wall_s']:.2f} s, peak {row['rss_mb']:.0f} MB)", flush=True)
    if a.store and a.parts:
        params = json.load(open(a.params))
        sides = {"collection": f"ATTACH '{a.parts}' AS atlas",
                 "store": f"ATTACH '{a.store}' AS atlas (index 'off')"}
        print("| query | store s (first) | collection s (first) | ratio | store s (warm) | "
              "collection s (warm) | ratio | store RSS MB | collection RSS MB |")
        print("|---|---|---|---|---|---|---|---|---|")
        for q in a.queries.split(","):
            sql = sql_of(q, params)
            got = {}
            runs = {side: [] for side in sides}
            # The two sides alternate, so that the machine's drift (page cache) falls on both.
            for _ in range(a.runs):
                for side, attach in sides.items():
                    runs[side].append(run(a.bin, attach, sql, a.threads, repeat=a.repeat))
            for side, rs in runs.items():
                got[side] = {"statement_s": statistics.median(r["statement_s"] for r in rs),
                             "warm_s": statistics.median(r["warm_s"] for r in rs),
                             "runs_s": [r["statement_s"] for r in rs],
                             "rss_mb": max(r["rss_mb"] for r in rs), "answer": rs[0]["answer"]}
            same = got["collection"]["answer"] == got["store"]["answer"]
            if not same:
                sys.exit(f"{q}: the collection's answer differs from the store's")
            ratio = got["collection"]["statement_s"] / max(got["store"]["statement_s"], 1e-9)
            warm = got["collection"]["warm_s"] / max(got["store"]["warm_s"], 1e-9)
            row = {"query": q, "rows": int(got["store"]["answer"][0]) - 1, "ratio": ratio, "warm_ratio": warm,
                   **{f"{s}_{k}": v for s, d in got.items() for k, v in d.items() if k != "answer"}}
            report["queries"].append(row)
            print(f"| {q} | {got['store']['statement_s']:.3f} | {got['collection']['statement_s']:.3f} | "
                  f"{ratio:.2f} | {got['store']['warm_s']:.3f} | {got['collection']['warm_s']:.3f} | "
                  f"{warm:.2f} | {got['store']['rss_mb']:.0f} | {got['collection']['rss_mb']:.0f} |",
                  flush=True)
    if a.out:
        json.dump(report, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
