#!/usr/bin/env python
"""Export benchmark: annql writing AnnData beside anndata's own routes, in the same run.

Tasks on an atlas (default atlas-m, 500k cells, made by ../shared/datagen/make_atlas.py):
  subset-h5ad   one donor's cells, all genes, to .h5ad
  subset-zarr3  the same, to zarr v3
  pseudobulk    donor × cell type sums of layers/counts as an AnnData (scanpy.get.aggregate layout)
Systems: `annql` (the bench-fast binary's `annql export`), `anndata-lazy` and `anndata-mem`
(benches/export_anndata.py). Every run is a fresh process under /usr/bin/time -v: wall time and
peak RSS. Each output is then checked against anndata-mem's (same cells, genes and values).

    python3 benches/export.py --atlas ../data/atlas-m.zarr --out-dir ../data/export-bench \
        --annql target/bench-fast/annql --python ../venv-bench/bin/python --json ../bench-results/export-m.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = ["subset-h5ad", "subset-zarr3", "pseudobulk"]
EXT = {"subset-h5ad": "h5ad", "subset-zarr3": "zarr", "pseudobulk": "h5ad"}


def annql_cmd(annql, task, atlas, out, donor):
    if task == "pseudobulk":
        return [annql, "export", atlas, "--aggregate", "sum", "--by", "donor_id,cell_type",
                "--layer", "counts", "-o", out]
    fmt = ["--format", "zarr3"] if task == "subset-zarr3" else []
    return [annql, "export", atlas, "--obs", f"donor_id = '{donor}'", "-o", out, *fmt]


def anndata_cmd(python, route, task, atlas, out, donor):
    return [python, os.path.join(HERE, "export_anndata.py"), route, task, atlas, out,
            "--donor", donor]


def timed(cmd):
    """Runs cmd under /usr/bin/time -v: (wall seconds, peak RSS bytes)."""
    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1)) * 1024
    cpu = sum(float(re.search(rf"{k} time \(seconds\): ([\d.]+)", p.stderr).group(1)) for k in ("User", "System"))
    return wall, rss, cpu


def remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def median_donor(python, atlas):
    code = ("import zarr, anndata as ad, sys; g = zarr.open_group(sys.argv[1], mode='r');"
            "o = ad.io.read_elem(g['obs']); vc = o['donor_id'].astype(str).value_counts();"
            "vc = vc.sort_index().sort_values(kind='stable'); print(vc.index[len(vc) // 2], vc.iloc[len(vc) // 2])")
    out = subprocess.run([python, "-c", code, atlas], capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1])


CHECK = r"""
import sys, json, numpy as np, anndata as ad, scipy.sparse as sp
def load(p):
    return ad.read_h5ad(p) if p.endswith(".h5ad") else ad.read_zarr(p)
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.shape == b.shape, (a.shape, b.shape)
assert list(a.obs_names) == list(b.obs_names), "obs names differ"
assert list(a.var_names) == list(b.var_names), "var names differ"
for key in sorted(set(a.layers) | ({"X"} if a.X is not None else set())):
    x = a.X if key == "X" else a.layers[key]
    y = b.X if key == "X" else b.layers[key]
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    y = y.toarray() if sp.issparse(y) else np.asarray(y)
    assert np.allclose(x, y, rtol=1e-6, atol=1e-6), f"{key} differs"
print("equal", a.shape)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--atlas", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--annql", default="target/bench-fast/annql")
    ap.add_argument("--python", default=sys.executable, help="a Python with anndata[lazy], dask, scanpy")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--systems", default="annql,anndata-lazy,anndata-mem")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--donor")
    ap.add_argument("--json")
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    donor, n_cells = (a.donor, None) if a.donor else median_donor(a.python, a.atlas)
    print(f"atlas {a.atlas}; donor {donor} ({n_cells} cells)", flush=True)
    results = {"atlas": a.atlas, "donor": donor, "donor_cells": n_cells, "runs": {}}
    for task in a.tasks.split(","):
        for system in a.systems.split(","):
            out = os.path.join(a.out_dir, f"{task}.{system}.{EXT[task]}")
            if system == "annql":
                cmd = annql_cmd(a.annql, task, a.atlas, out, donor)
            else:
                cmd = anndata_cmd(a.python, system.split("-")[1], task, a.atlas, out, donor)
            runs = []
            for _ in range(a.runs):
                remove(out)
                runs.append(timed(cmd))
            wall = sorted(r[0] for r in runs)[len(runs) // 2]
            rss = max(r[1] for r in runs)
            cpu = sorted(r[2] for r in runs)[len(runs) // 2]
            results["runs"][f"{task}/{system}"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 1),
                                                    "peak_rss_mib": round(rss / 2**20)}
            print(f"{task:13} {system:13} {wall:8.2f} s wall {cpu:8.1f} s cpu {rss / 2**20:8.0f} MiB", flush=True)
        ref = os.path.join(a.out_dir, f"{task}.anndata-mem.{EXT[task]}")
        for system in a.systems.split(","):
            out = os.path.join(a.out_dir, f"{task}.{system}.{EXT[task]}")
            if system != "anndata-mem" and os.path.exists(ref):
                check = subprocess.run([a.python, "-c", CHECK, out, ref], capture_output=True, text=True)
                verdict = check.stdout.strip() or check.stderr.strip().splitlines()[-1]
                results["runs"][f"{task}/{system}"]["check_vs_anndata_mem"] = verdict
                print(f"  {system} vs anndata-mem: {verdict}", flush=True)
        for system in a.systems.split(","):
            key = f"{task}/{system}"
            if system != "annql" and f"{task}/annql" in results["runs"]:
                ours = results["runs"][f"{task}/annql"]["wall_s"]
                results["runs"][key]["annql_speedup"] = round(results["runs"][key]["wall_s"] / ours, 2)
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
