#!/usr/bin/env python3
"""Times building a gene index (docs/index.md) two ways on one store, each in a fresh process under
/usr/bin/time -v (wall time, peak RSS):

  annql       `annql index STORE --memory MEM --out TMP` (out of core, within MEM)
  in-memory   anndata.read_zarr(STORE).X.tocsc() written with anndata's write_elem (the route a
              user has today: the whole matrix in memory, twice)

  python3 benches/index_build.py --annql /work/target-bf/bench-fast/annql --store /work/data/atlas-m.zarr \
      --memory 1GiB --out ../bench-results/index-m.json

Run it with the project's venv (.venv/bin/python) for anndata. Sidecars and copies go to a
temporary directory next to the store (same disk) and are removed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

IN_MEMORY = """
import sys, anndata as ad, zarr
a = ad.read_zarr(sys.argv[1])
csc = a.X.tocsc()
g = zarr.open_group(sys.argv[2], mode="w", zarr_format=3)
ad.io.write_elem(g, "X", csc)
print(csc.nnz)
"""


def timed(cmd: list[str]) -> dict:
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (.*)", p.stderr).group(1)
    parts = [float(x) for x in wall.split(":")]
    seconds = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(rss_kb / 1024, 1), "stdout": p.stdout.strip()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--annql", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--memory", default="1GiB")
    ap.add_argument("--skip-in-memory", action="store_true")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    store = os.path.abspath(a.store)
    tmp = tempfile.mkdtemp(prefix=".index-bench-", dir=os.path.dirname(store))
    try:
        result = {"store": store, "memory": a.memory}
        result["annql"] = timed([a.annql, "index", store, "--memory", a.memory,
                                 "--out", os.path.join(tmp, "x.annql-index")])
        print("annql", result["annql"], flush=True)
        if not a.skip_in_memory:
            result["in_memory"] = timed([sys.executable, "-c", IN_MEMORY, store, os.path.join(tmp, "x.zarr")])
            print("in-memory", result["in_memory"], flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
