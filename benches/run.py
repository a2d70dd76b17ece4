#!/usr/bin/env python3
"""Benchmark runner for annql against the anchor systems (issue #9).

For one atlas it runs the queries Q1-Q7 of ../shared/bench/QUERIES.md through annql (the SQL of
benches/sql/qN.sql, parameterised from the atlas's params.json) and through the anchors of
../shared/bench/anchors (DuckDB on Parquet, anndata lazy + dask, anndata in memory) in the same
run, each run a fresh process under /usr/bin/time -v (median wall, peak RSS). It checks every annql
answer against the anchors' answer (canonical CSV via the anchors' common.write_result: identical
checksum, or equal keys and floats within 1e-5 relative), measures the decode floor of the matrix
each query scans (benches/decode_floor.rs) and prints a markdown table; --out gets the JSON.

  python3 benches/run.py --size s --runs 3 --out bench-results/atlas-s.json
  python3 benches/run.py --data /work/data/bench-m --queries q1 --systems annql,duckdb --out /tmp/m.json

Without the anchors' Python packages it creates a venv (default ../venv-bench next to the repo)
from ../shared/bench/anchors/requirements.txt and re-runs itself with it. See benches/README.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(REPO, "..", "shared"))
ANCHORS = os.path.join(SHARED, "bench", "anchors")
MAKE_ATLAS = os.path.join(SHARED, "datagen", "make_atlas.py")
SQL_DIR = os.path.join(REPO, "benches", "sql")
DEFAULT_VENV = os.path.normpath(os.path.join(REPO, "..", "venv-bench"))
DEFAULT_DATA_ROOT = os.path.normpath(os.path.join(REPO, "..", "data"))

ALL_QUERIES = ["q1", "q2", "q3", "q4", "q5", "q6", "q7"]
ANCHOR_SYSTEMS = ["duckdb", "anndata-lazy", "anndata-mem"]
SIZES = {"s": 50_000, "m": 500_000, "l": 3_000_000}
# atlas-l (3M cells, ~3.6e9 entries per matrix: int64 indptr, zarr v3 sharded) has its own writer.
MAKE_ATLAS_L = os.path.join(REPO, "benches", "make_atlas_l.py")
# Matrix each query scans, and whether it is gene-selective (then the floor that matters is the
# matrix's indices alone: every stored gene id must be looked at, only a few values).
SCANS = {
    "q1": None,
    "q2": ("X", True), "q5": ("X", True), "q7": ("X", True),
    "q3": ("layers/counts", False), "q4": ("layers/counts", False), "q6": ("layers/counts", False),
}
# The Cargo profile measured: release code generation without LTO (Cargo.toml explains).
PROFILE = "bench-fast"
RTOL, ATOL = 1e-5, 2e-6   # canonical floats have 6 decimals: allow one unit of rounding


# ---------------------------------------------------------------- environment

def have_anchor_packages() -> bool:
    try:
        import anndata, duckdb, pandas, pyarrow  # noqa: F401, E401
        return True
    except ImportError:
        return False


def ensure_venv(venv: str) -> None:
    """Re-exec this script under a venv with the anchors' requirements (created if missing)."""
    if have_anchor_packages():
        return
    py = os.path.join(venv, "bin", "python")
    if os.path.abspath(sys.executable) == os.path.abspath(py):
        sys.exit(f"{py} lacks the anchors' packages; remove {venv} to recreate it")
    if not os.path.exists(py):
        print(f"[setup] creating venv {venv}", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", venv])
        subprocess.check_call([os.path.join(venv, "bin", "pip"), "install", "-q",
                               "-r", os.path.join(ANCHORS, "requirements.txt"), "psutil"])
    os.execv(py, [py, os.path.abspath(__file__), *sys.argv[1:]])


def load_anchor_modules():
    """The anchors' common.py and run.py (loaded by path: this file is also called run.py)."""
    sys.path.insert(0, ANCHORS)
    import common  # noqa: E402
    spec = importlib.util.spec_from_file_location("anchors_run", os.path.join(ANCHORS, "run.py"))
    anchors_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(anchors_run)
    return common, anchors_run


# ---------------------------------------------------------------- data

def ensure_atlas(data: str, size: str | None, data_root: str, fmt: str = "zarr") -> None:
    """Make sure DATA/atlas.FMT (zarr or h5ad) exists: reuse DATA_ROOT/atlas-SIZE.FMT, or generate it."""
    path = os.path.join(data, f"atlas.{fmt}")
    if os.path.exists(path):
        return
    if size is None:
        sys.exit(f"{path} does not exist (give --size s|m|l to generate it)")
    os.makedirs(data, exist_ok=True)
    shared = os.path.join(data_root, f"atlas-{size}.{fmt}")
    if not os.path.exists(shared):
        print(f"[setup] generating {shared} ({SIZES[size]} cells, {fmt})", flush=True)
        if size == "l":
            if fmt != "zarr":
                sys.exit("atlas-l is written as zarr v3 only")
            subprocess.check_call([sys.executable, MAKE_ATLAS_L, "--cells", str(SIZES[size]), "--out", shared])
        else:
            subprocess.check_call([sys.executable, MAKE_ATLAS, "--cells", str(SIZES[size]), "--format", fmt,
                                   "--out", shared])
    os.symlink(os.path.relpath(shared, data), path)
    if os.path.exists(shared + ".info.json"):
        os.symlink(os.path.relpath(shared + ".info.json", data), path + ".info.json")


def ensure_params(data: str) -> None:
    if not os.path.exists(os.path.join(data, "params.json")):
        subprocess.check_call([sys.executable, os.path.join(ANCHORS, "prepare.py"), "params", "--data", data])


# ---------------------------------------------------------------- annql

def sql_literal(v) -> str:
    """A SQL literal for a parameter: 'text' (quotes doubled), or a comma-separated list of them."""
    if isinstance(v, (list, tuple)):
        return ", ".join(sql_literal(x) for x in v)
    if isinstance(v, (int, float)):
        return repr(v)
    return "'" + str(v).replace("'", "''") + "'"


def render_sql(q: str, params: dict) -> str:
    """benches/sql/qN.sql with every ${name} replaced by the literal of params[name]."""
    with open(os.path.join(SQL_DIR, f"{q}.sql")) as f:
        text = f.read()

    def sub(m):
        if m.group(1) not in params:
            raise KeyError(f"{q}.sql uses ${{{m.group(1)}}}, not in params.json")
        return sql_literal(params[m.group(1)])
    return re.sub(r"\$\{(\w+)\}", sub, text)


def cargo_build(targets: list[str]) -> None:
    print(f"[build] cargo build {' '.join(targets)}", flush=True)
    subprocess.check_call(["cargo", "build", "--quiet", *targets], cwd=REPO)


def timed_run(cmd: list[str], timeout: float, cap_mb: float, group_rss_mb) -> dict:
    """Runs cmd under /usr/bin/time -v in its own process group: exact wall time, peak RSS.

    Like the anchors' timed_run (timeout and RSS cap kill the process group), but the wall time
    is taken when the process exits: the anchors' runner polls every 0.25 s, so its
    process_wall_s is rounded up to a multiple of 0.25 s, too coarse for annql's sub-second runs.
    """
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(["/usr/bin/time", "-v", *cmd], stdout=subprocess.DEVNULL, stderr=err,
                             start_new_session=True)
        killed = {"peak_mb": 0.0}

        def watchdog():  # polls like the anchors' runner (every 0.25 s); p.wait() below times the exit
            while p.poll() is None:
                rss = group_rss_mb(p.pid)
                killed["peak_mb"] = max(killed["peak_mb"], rss)
                reason = ("timeout" if time.perf_counter() - t0 > timeout else "oom" if rss > cap_mb else None)
                if reason:
                    killed["status"] = reason
                    os.killpg(p.pid, signal.SIGKILL)
                    return
                time.sleep(0.25)
        threading.Thread(target=watchdog, daemon=True).start()
        p.wait()
        wall = time.perf_counter() - t0
        err.seek(0)
        stderr = err.read()
    status = killed.get("status") or ("ok" if p.returncode == 0 else "error")
    r = {"status": status, "process_wall_s": round(wall, 4)}
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    r["peak_rss_mb"] = round(int(m.group(1)) / 1024, 1) if m else round(killed["peak_mb"], 1)
    if status == "error":
        r["error"] = "\n".join(l for l in stderr.splitlines() if not l.startswith("\t"))[-1500:]
    elif status != "ok":
        r["note"] = f"killed after {timeout:.0f} s" if status == "timeout" else f"RSS above {cap_mb:.0f} MB"
    return r


def run_annql(q, params, zarr, binary, runs, timeout, cap_mb, work, anchors_run, threads, fmt="arrow"):
    """Runs the query `runs` times in fresh processes; returns the summary and the answer file.

    `fmt` is annql's output format: `arrow` (Arrow IPC, the result as a columnar table, as the
    anchors' query time ends with their result as a DataFrame; it is made CSV outside the timed
    run) or `csv` (the timed run formats the CSV itself)."""
    sql_path = os.path.join(work, f"{q}.sql")
    with open(sql_path, "w") as f:
        f.write(render_sql(q, params))
    out_csv = os.path.join(work, f"annql.{q}.raw.{fmt}")
    cmd = [binary, "run", "-d", f"atlas={zarr}", "--format", fmt, "-o", out_csv, sql_path]
    if threads:
        cmd[2:2] = ["--threads", str(threads)]
    results = []
    for i in range(runs):
        # Untimed: the previous run's answer is removed and the page cache written back, so its
        # write-back (hundreds of MB for Q3) does not spill into this run's time.
        if os.path.exists(out_csv):
            os.remove(out_csv)
        os.sync()
        r = timed_run(cmd, timeout, cap_mb, anchors_run.group_rss_mb)
        results.append(r)
        print(f"{'annql':18s} {q} run{i + 1}: {r['status']:7s} wall {r['process_wall_s']:8.3f} s  "
              f"rss {r['peak_rss_mb'] or 0:8.1f} MB" + (f"  {r.get('note') or r.get('error', '')}"
                                                   if r["status"] != "ok" else ""), flush=True)
        if r["status"] != "ok":
            break
    ok = [r for r in results if r["status"] == "ok"]
    summary = {"status": "ok" if ok else results[-1]["status"], "n_runs": len(ok),
               "cmd": " ".join(cmd)}
    if ok:
        walls = [r["process_wall_s"] for r in ok]
        summary.update({"wall_s": round(statistics.median(walls), 4), "runs_wall_s": walls,
                        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in ok),
                        "peak_rss_mb_max": max(r["peak_rss_mb"] for r in ok)})
    else:
        summary.update({k: results[-1].get(k) for k in ("note", "error")})
    return summary, (out_csv if ok else None)


# ---------------------------------------------------------------- answers

def canonicalise(common, q: str, raw_csv: str, out_csv: str) -> dict:
    """annql's CSV answer -> the anchors' canonical CSV (same columns, rounding, order)."""
    import pandas as pd
    cols, _, ints = common.SCHEMA[q]
    text_cols = {c: str for c in cols if c not in ints and c in ("cell_type", "donor_id", "gene", "barcode")}
    if raw_csv.endswith(".arrow"):
        import pyarrow as pa
        with pa.memory_map(raw_csv) as src:
            table = pa.ipc.open_file(src).read_all()
        # Categorical (dictionary) columns as their strings, like the CSV.
        df = table.to_pandas(strings_to_categorical=False)
        for c in df.columns:
            if isinstance(df[c].dtype, pd.CategoricalDtype):
                df[c] = df[c].astype(str)
    else:
        df = pd.read_csv(raw_csv, dtype=text_cols, keep_default_na=False)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"annql's answer lacks columns {missing} (has {list(df.columns)})")
    return common.write_result(q, df, out_csv)


def reference_answer(anchors_doc: dict, anchors_json: str, q: str):
    """(system, csv path, sha256) of the anchor answer to compare against, or None."""
    res = anchors_doc.get("results", {})
    base = os.path.dirname(os.path.abspath(anchors_json))
    for s in ["anndata-mem", "duckdb", "anndata-lazy", *sorted(res)]:
        r = res.get(s, {}).get(q, {})
        if r.get("status") == "ok" and os.path.exists(os.path.join(base, r["csv"])):
            return s, os.path.join(base, r["csv"]), r["sha256"]
    return None


def check_answer(common, q, annql_csv, canon, ref) -> dict:
    """Canonicalises annql's answer into `canon` and compares it with the reference answer."""
    if ref is None:
        return {"status": "no-reference"}
    system, ref_csv, ref_sha = ref
    try:
        mine = canonicalise(common, q, annql_csv, canon)
    except Exception as e:  # a malformed answer is a failed check, not a crashed run
        return {"status": "FAIL", "reference": system, "why": f"{type(e).__name__}: {e}"}
    out = {"reference": system, "rows": mine["rows"], "sha256": mine["sha256"], "csv": canon}
    if mine["sha256"] == ref_sha:
        return {**out, "status": "OK", "identical_csv": True}
    c = common.compare(q, ref_csv, canon, rtol=RTOL, atol=ATOL)
    return {**out, "status": "OK" if c["agree"] else "FAIL", "identical_csv": False, **c}


# ---------------------------------------------------------------- anchors and floor

def run_anchors(systems, queries, data, runs, timeout, anchors_json) -> dict:
    """The anchors' own run.py, in this run; results merge into anchors_json across invocations."""
    if systems:
        cmd = [sys.executable, os.path.join(ANCHORS, "run.py"), "--data", data, "--systems", ",".join(systems),
               "--queries", ",".join(queries), "--repeats", str(runs), "--timeout", str(timeout),
               "--out", anchors_json]
        print(f"[anchors] {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, check=False)
    if not os.path.exists(anchors_json):
        return {}
    with open(anchors_json) as f:
        return json.load(f)


def decode_floor(binary: str, zarr: str, matrix: str, part: str, threads) -> dict:
    cmd = [binary, zarr, matrix, "--part", part] + (["--threads", str(threads)] if threads else [])
    p = subprocess.run(cmd, capture_output=True, text=True)
    line = [l for l in p.stdout.splitlines() if l.startswith("FLOOR ")]
    if p.returncode != 0 or not line:
        return {"status": "error", "error": (p.stderr or p.stdout)[-800:]}
    print(f"[floor] {p.stdout.splitlines()[0]}", flush=True)
    return {"status": "ok", **json.loads(line[-1][6:])}


def floors_for(queries, binary, zarr, threads) -> dict:
    """Decode floors, each measured once: 'X/all', 'X/indices', 'layers/counts/all'."""
    need = set()
    for q in queries:
        if SCANS[q]:
            matrix, selective = SCANS[q]
            need.add((matrix, "all"))
            if selective:
                need.add((matrix, "indices"))
    return {f"{m}/{p}": decode_floor(binary, zarr, m, p, threads) for m, p in sorted(need)}


def floor_of(q: str, floors: dict):
    """The floor annql's time on q is held against (indices alone for gene-selective queries)."""
    if not SCANS[q]:
        return None
    matrix, selective = SCANS[q]
    f = floors.get(f"{matrix}/{'indices' if selective else 'all'}", {})
    return f.get("seconds") if f.get("status") == "ok" else None


# ---------------------------------------------------------------- report

def fmt_s(x) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def fmt_ratio(a, b) -> str:
    if not (a and b):
        return "–"
    r = a / b
    return f"{r:.1f}×" if r >= 1 else f"{r:.2g}×"


def anchor_cell(r: dict | None) -> str:
    if not r:
        return "–"
    if r.get("status") != "ok":
        return f"**{r.get('status')}**"
    load = f" (+{fmt_s(r['load_s'])} load)" if r.get("load_s", 0) >= 0.5 else ""
    return f"{fmt_s(r['query_s'])} s{load} / {r['peak_rss_mb']:.0f} MB"


def table(doc: dict) -> str:
    anchors = [s for s in doc["anchor_systems"] if any(s in doc["anchors"].get(q, {}) for q in doc["queries"])]
    head = ["query", "annql time", "annql RSS"]
    for s in anchors:
        head += [f"{s} time / RSS", f"{s}/annql"]
    head += ["decode floor", "annql/floor", "answer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for q in doc["queries"]:
        a = doc["annql"].get(q, {})
        t = a.get("wall_s")
        row = [q, f"{fmt_s(t)} s" if t else f"**{a.get('status', '–')}**",
               f"{a['peak_rss_mb']:.0f} MB" if t else "–"]
        for s in anchors:
            r = doc["anchors"].get(q, {}).get(s)
            row += [anchor_cell(r), fmt_ratio(r.get("query_s") if r and r.get("status") == "ok" else None, t)]
        row += [floor_cell(q, doc["floors"]), fmt_ratio(t, floor_of(q, doc["floors"])),
                check_cell(doc["checks"].get(q, {}))]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def floor_cell(q: str, floors: dict) -> str:
    if not SCANS[q]:
        return "–"
    matrix, selective = SCANS[q]
    full = floors.get(f"{matrix}/all", {}).get("seconds")
    if full is None:
        return "–"
    if selective:
        idx = floors.get(f"{matrix}/indices", {}).get("seconds")
        return f"{fmt_s(idx)} s ({matrix} indices; all {fmt_s(full)} s)"
    return f"{fmt_s(full)} s ({matrix})"


def check_cell(c: dict) -> str:
    st = c.get("status", "–")
    if st == "OK":
        return f"OK ({'identical' if c.get('identical_csv') else 'within tol.'} vs {c['reference']})"
    if st == "FAIL":
        return f"**FAIL** vs {c.get('reference')}: {c.get('why')}"
    return st


# ---------------------------------------------------------------- main

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="dataset dir with atlas.zarr, params.json, parquet/ (anchors' layout)")
    ap.add_argument("--size", choices=sorted(SIZES), help="atlas-s (50k cells) or atlas-m (500k); "
                    "data dir DATA_ROOT/bench-SIZE, atlas generated if missing")
    ap.add_argument("--data-root", default=DEFAULT_DATA_ROOT, help=f"for --size (default {DEFAULT_DATA_ROOT})")
    ap.add_argument("--queries", default=",".join(ALL_QUERIES))
    ap.add_argument("--systems", default="annql," + ",".join(ANCHOR_SYSTEMS),
                    help="annql and anchor systems (anchors' one.py names)")
    ap.add_argument("--runs", type=int, default=3, help="runs per (system, query); medians")
    ap.add_argument("--anchor-runs", type=int, default=None, help="runs for the anchors (default --runs)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run")
    ap.add_argument("--mem-cap-mb", type=float, default=18000, help="RSS cap per run")
    ap.add_argument("--annql-format", choices=["arrow", "csv"], default="arrow",
                    help="annql's output: Arrow IPC (default; made CSV for checking outside the timed run, "
                         "as the anchors' time ends with their result in memory) or CSV written by the timed run")
    ap.add_argument("--threads", type=int, default=None, help="annql and floor threads (default all cores)")
    ap.add_argument("--no-floor", action="store_true", help="skip the decode floor")
    ap.add_argument("--no-build", action="store_true",
                    help=f"use the binaries already in target/{PROFILE}")
    ap.add_argument("--annql", default=os.path.join(REPO, "target", PROFILE, "annql"))
    ap.add_argument("--floor-bin", default=os.path.join(REPO, "target", PROFILE, "examples", "decode_floor"))
    ap.add_argument("--venv", default=DEFAULT_VENV, help="venv with the anchors' packages (created if missing)")
    ap.add_argument("--out", help="results JSON; CSVs and anchor results go beside it (required)")
    ap.add_argument("--print-sql", metavar="QN", help="print the rendered SQL of one query and exit")
    ap.add_argument("--store", choices=["zarr", "h5ad", "zarr-csc", "zarr-index"], default="zarr",
                    help="the copy of the atlas annql reads: atlas.zarr; atlas.h5ad (generated if missing; "
                         "pair it with the anchors' anndata-*-h5ad systems); or atlas-csc.zarr, atlas.zarr plus a "
                         "CSC copy of X (benches/add_csc_copy.py, made if missing); or atlas.zarr with its gene index "
                         "(atlas.zarr.annql-index, built by `annql index` if missing; docs/index.md). The decode "
                         "floor stays the zarr copy's")
    a = ap.parse_args()
    if not a.data and not a.size:
        ap.error("give --data DIR or --size s|m")
    if not a.out and not a.print_sql:
        ap.error("--out is required")
    a.data = os.path.abspath(a.data or os.path.join(a.data_root, f"bench-{a.size}"))
    a.queries = a.queries.split(",")
    a.systems = a.systems.split(",")
    bad = [q for q in a.queries if q not in ALL_QUERIES]
    if bad:
        ap.error(f"unknown queries {bad}")
    return a


def main():
    a = parse_args()
    ensure_venv(a.venv)
    common, anchors_run = load_anchor_modules()
    ensure_atlas(a.data, a.size, a.data_root)
    ensure_params(a.data)
    params = common.load_params(a.data)
    if a.print_sql:
        print(render_sql(a.print_sql, params))
        return
    zarr = os.path.realpath(os.path.join(a.data, "atlas.zarr"))
    store = zarr
    if a.store == "h5ad":
        ensure_atlas(a.data, a.size, a.data_root, "h5ad")
        store = os.path.realpath(os.path.join(a.data, "atlas.h5ad"))
    elif a.store == "zarr-csc":
        store = os.path.join(a.data, "atlas-csc.zarr")
        if not os.path.exists(store):
            subprocess.check_call([sys.executable, os.path.join(REPO, "benches", "add_csc_copy.py"), zarr, store])
    elif a.store == "zarr-index":
        if not os.path.exists(zarr + ".annql-index"):
            subprocess.check_call([a.annql, "index", zarr, "--memory", "1GiB"])
    out = os.path.abspath(a.out)
    base = os.path.splitext(out)[0]
    work = base + ".csv"
    os.makedirs(work, exist_ok=True)
    anchors_json = base + ".anchors.json"
    anchor_systems = [s for s in a.systems if s != "annql"]
    floors_needed = not a.no_floor and any(SCANS[q] for q in a.queries)
    if not a.no_build:
        # Always both targets: the example pulls in dev-dependencies, and building without it
        # would unify features differently and rebuild DataFusion.
        cargo_build(["--profile", PROFILE, "--bin", "annql", "--example", "decode_floor"])

    doc = {"command": " ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
           "started": time.strftime("%Y-%m-%d %H:%M:%S"), "data": a.data, "zarr": zarr, "store": store,
           "params": params,
           "queries": a.queries, "anchor_systems": anchor_systems or ANCHOR_SYSTEMS,
           "protocol": {"runs": a.runs, "timeout_s": a.timeout, "annql_time": f"process wall (cold process, {a.annql_format} output)",
                        "anchor_time": "query_s (query only, after load)", "rtol": RTOL, "atol": ATOL},
           "git": git_describe(), "annql": {}, "checks": {}, "floors": {}, "anchors": {}}
    info = zarr + ".info.json"
    if os.path.exists(info):
        doc["data_info"] = json.load(open(info))

    if "annql" in a.systems:
        for q in a.queries:
            summary, _ = run_annql(q, params, store, a.annql, a.runs, a.timeout, a.mem_cap_mb, work,
                                   anchors_run, a.threads, a.annql_format)
            doc["annql"][q] = summary
    anchors_doc = run_anchors(anchor_systems, a.queries, a.data, a.anchor_runs or a.runs, a.timeout, anchors_json)
    for q in a.queries:
        doc["anchors"][q] = {s: r[q] for s, r in anchors_doc.get("results", {}).items() if q in r}
        if doc["annql"].get(q, {}).get("status") == "ok":
            doc["checks"][q] = check_answer(common, q, os.path.join(work, f"annql.{q}.raw.{a.annql_format}"),
                                            os.path.join(work, f"annql.{q}.csv"),
                                            reference_answer(anchors_doc, anchors_json, q))
    if floors_needed:
        doc["floors"] = floors_for(a.queries, a.floor_bin, zarr, a.threads)

    doc["table"] = table(doc)
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"\n## {os.path.basename(store)} ({doc.get('data_info', {}).get('cells', '?')} cells)\n")
    print(doc["table"])
    print(f"\nresults: {out}")


def git_describe() -> str:
    try:
        return subprocess.check_output(["git", "describe", "--always", "--dirty"], cwd=REPO, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


if __name__ == "__main__":
    main()
