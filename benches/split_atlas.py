#!/usr/bin/env python
"""Split one atlas store into N AnnData stores: a *collection* that is the same atlas.

annql's collections (`ATTACH 'dir/*' AS coll`) query many stores as one atlas: obs is the
union of the cells, var the union of the genes aligned on the var index, matrices the union with
absent genes counting as zeros (`anndata.concat(adatas, join="outer", fill_value=0)`), datasets
ordered by path. This script makes such a collection from one store written by
../shared/datagen/make_atlas.py, so that every query over the collection has the *same answer*
as over the source, while the parts differ from each other the way real datasets do:

  * parts are contiguous row ranges of uneven sizes (from --seed), named part000.<ext>,
    part001.<ext>, ... so the path order is the source's cell order (obs_id is unchanged);
  * formats cycle through --formats (zarr2, zarr3, h5ad); zarr3 parts are sharded the way
    anndata writes them with `settings.auto_shard_zarr_v3` (inner chunks <= 1 MiB, shards as
    zarr's auto shard shape for the part's full length); --same-format writes every part in
    the source's format (its zarr version for a .zarr, h5ad for a .h5ad);
  * X and layers['counts'] stay CSR with the source dtypes; zarr data/indices chunks are what
    zarr's auto-chunking picks for the part's full length (as make_atlas.py does for the source);
  * genes are permuted in every part but part 0; in every odd part up to 50 genes that have no
    stored entry in that part's cells (in X and in counts) are dropped -- never a marker gene;
  * obs: categorical columns keep only their used categories, in a shuffled order in parts with
    i % 4 != 0; parts with i % 3 == 1 get an extra bool column `qc_flag`, parts with i % 4 == 2
    an extra string column `part_note`; parts with i % 3 == 2 or i % 4 == 3 lack one column the
    benchmark queries do not use (cycling through DROPPABLE); cell_type/donor_id/tissue and the
    obs index (barcodes) are always kept;
  * obsm (X_umap, X_pca) is kept; obsp/varp are written empty; uns is kept without
    cell_type_colors (which follows the source's categories) plus uns['split'].

Memory is bounded: obs, var and obsm are read whole (O(cells)), the matrices by row blocks of
--block-rows cells through anndata.io.sparse_dataset, and each part is written by anndata
(`anndata.io.write_elem` for the first block, `sparse_dataset(...).append` for the rest).
A summary is printed (gene lists left out) and written whole to DIR/split.json.

--check loads the source and the parts fully in memory (small atlases only) and compares
obs names, X and counts (aligned on var names) and the Q1-Q7 answers of
tests/fixtures/collection_answers.py over the source and over the parts' concatenation.

  .venv/bin/python benches/split_atlas.py /tmp/coll/atlas5k.zarr --out /tmp/coll/parts6 --parts 6 --check
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import sys
import time
import warnings

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import zarr
from zarr.core.chunk_grids import _auto_partition, _guess_chunks

import anndata as ad

MARKERS = ["CD3E", "CD4", "CD8A", "MS4A1", "CD14", "LYZ", "NKG7", "GNLY", "FCGR3A", "PPBP"]
KEEP_OBS = {"cell_type", "donor_id", "tissue"}
# obs columns of make_atlas.py the benchmark queries do not use, dropped in turn (one per part)
DROPPABLE = ["sample_note", "batch", "age", "is_primary_data", "pct_mito", "assay", "sex", "disease"]
MATRICES = [("X",), ("layers", "counts")]
FORMATS = {"zarr2": "zarr", "zarr3": "zarr", "h5ad": "h5ad"}
MAX_DROP = 50
SHARD_BYTES = 1_000_000_000       # anndata's target shard size for auto sharding


def seq(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def open_source(path: str):
    """(root group, format name) of a store: 'h5ad', 'zarr2' or 'zarr3'."""
    p = path.rstrip("/")
    if p.endswith(".h5ad") or os.path.isfile(p):
        return h5py.File(p, "r"), "h5ad"
    root = zarr.open_group(p, mode="r")
    return root, f"zarr{root.metadata.zarr_format}"


def part_bounds(n: int, parts: int, seed: int) -> np.ndarray:
    """Row boundaries [0, ..., n] of `parts` contiguous non-empty ranges of uneven sizes."""
    if not 1 <= parts <= n:
        raise SystemExit(f"--parts must be in 1..{n}")
    w = seq(seed, 1).lognormal(0.0, 0.6, parts)
    share = w / w.sum() * (n - parts)
    size = np.floor(share).astype(np.int64)
    rest = n - parts - size.sum()
    size[np.argsort(-(share - size), kind="stable")[:rest]] += 1
    return np.concatenate([[0], np.cumsum(size + 1)])


def plan_part(i: int, obs_cols: list[str]) -> dict:
    drop_obs = []
    if i > 0 and (i % 3 == 2 or i % 4 == 3):
        k = sum(1 for j in range(1, i) if j % 3 == 2 or j % 4 == 3)       # how many dropped before
        cands = [c for c in DROPPABLE if c in obs_cols]
        drop_obs = [cands[k % len(cands)]] if cands else []
    add = (["qc_flag"] if i % 3 == 1 else []) + (["part_note"] if i % 4 == 2 else [])
    return {"drop_obs": drop_obs, "add_obs": add, "shuffle_categories": i % 4 != 0,
            "permute_genes": i > 0, "drop_genes": i % 2 == 1}


def empty_genes(root, lo: int, hi: int, n_genes: int, block: int) -> np.ndarray:
    """Mask of genes without any stored entry in rows [lo, hi) of X and of layers/counts."""
    seen = np.zeros(n_genes, bool)
    for path in MATRICES:
        g = root["/".join(path)]
        ip = g["indptr"][lo:hi + 1]
        for a in range(0, hi - lo, block):
            b = min(a + block, hi - lo)
            seen[g["indices"][int(ip[a]):int(ip[b])]] = True
    return ~seen


def make_obs(obs: pd.DataFrame, lo: int, hi: int, i: int, plan: dict, seed: int) -> pd.DataFrame:
    rng = seq(seed, 3, i)
    o = obs.iloc[lo:hi].copy()
    o = o.drop(columns=plan["drop_obs"])
    for c in o.columns:
        if isinstance(o[c].dtype, pd.CategoricalDtype):
            o[c] = o[c].cat.remove_unused_categories()
            if plan["shuffle_categories"] and len(o[c].cat.categories) > 1:
                o[c] = o[c].cat.reorder_categories(list(rng.permutation(np.asarray(o[c].cat.categories))))
    n = hi - lo
    if "qc_flag" in plan["add_obs"]:
        o["qc_flag"] = rng.random(n) < 0.1
    if "part_note" in plan["add_obs"]:
        o["part_note"] = np.array([f"part{i:03d}/{'ab'[j % 2]}{j % 7}" for j in range(n)], dtype=object)
    return o


def matrix_kwargs(fmt: str, nnz: int, itemsize: int) -> dict:
    """dataset_kwargs for one part's sparse arrays (data, indices; indptr gets the same)."""
    if fmt == "h5ad":
        return {}                                                # h5py chunking, like make_atlas
    if fmt == "zarr2":
        return {"chunks": _guess_chunks((max(nnz, 1),), itemsize)}
    chunks = _guess_chunks((max(nnz, 1),), itemsize, max_bytes=1 << 20)
    with zarr.config.set({"array.target_shard_size_bytes": SHARD_BYTES}), warnings.catch_warnings():
        warnings.simplefilter("ignore")                         # "shard inference is experimental"
        shards, chunks = _auto_partition(array_shape=(max(nnz, 1),), chunk_shape=chunks,
                                         shard_shape="auto", item_size=itemsize)
    return {"chunks": chunks, "shards": shards}


def write_part(src, obs_p, var_p, obsm_p, uns_p, lo, hi, colmap, path, fmt, block) -> dict:
    settings = {"zarr_write_format": 3 if fmt == "zarr3" else 2,
                "auto_shard_zarr_v3": True if fmt == "zarr3" else None}
    with ad.settings.override(**settings):
        if fmt == "h5ad":
            root = h5py.File(path, "w")
        else:
            root = zarr.open_group(path, mode="w", zarr_format=settings["zarr_write_format"])
        ad.io.write_elem(root, "layers", {})
        chunking = {}
        n_out = int((colmap >= 0).sum())
        for mpath in MATRICES:
            sgrp = src["/".join(mpath)]
            ds = ad.io.sparse_dataset(sgrp)
            ip = sgrp["indptr"][lo:hi + 1]
            nnz = int(ip[-1] - ip[0])
            ip_dtype = np.int32 if nnz < np.iinfo(np.int32).max else np.int64
            kw = matrix_kwargs(fmt, nnz, sgrp["data"].dtype.itemsize)
            parent = root if len(mpath) == 1 else root[mpath[0]]
            for a in range(lo, hi, block):
                b = min(a + block, hi)
                m = ds[a:b]
                idx = colmap[m.indices]
                if (idx < 0).any():
                    raise AssertionError("a dropped gene has a stored entry")
                m = sp.csr_matrix((m.data, idx.astype(np.int32), m.indptr.astype(ip_dtype)),
                                  shape=(b - a, n_out))
                if not m.has_sorted_indices:
                    m.sort_indices()
                if a == lo:
                    ad.io.write_elem(parent, mpath[-1], m, dataset_kwargs=kw)
                else:
                    ad.io.sparse_dataset(parent[mpath[-1]]).append(m)
            chunking["/".join(mpath)] = {k: list(v) for k, v in kw.items()} or "h5py"
        ad.io.write_elem(root, "obs", obs_p)
        ad.io.write_elem(root, "var", var_p)
        ad.io.write_elem(root, "obsm", obsm_p)
        for k in ("varm", "obsp", "varp"):
            ad.io.write_elem(root, k, {})
        ad.io.write_elem(root, "uns", uns_p)
        root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        if fmt == "h5ad":
            root.close()
        else:
            with warnings.catch_warnings():                     # "not part of the v3 spec" (anndata does it too)
                warnings.simplefilter("ignore")
                zarr.consolidate_metadata(path)
    return chunking


def clear_out(out: str, overwrite: bool):
    old = [p for p in glob.glob(os.path.join(out, "part*"))
           if re.fullmatch(r"part\d{3,}\.(zarr|h5ad)", os.path.basename(p))]
    if os.path.exists(os.path.join(out, "split.json")):
        old.append(os.path.join(out, "split.json"))
    if old and not overwrite:
        raise SystemExit(f"{out} already holds parts; pass --overwrite to replace them")
    for p in old:
        shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
    os.makedirs(out, exist_ok=True)


def split(args) -> dict:
    t0 = time.perf_counter()
    src, src_fmt = open_source(args.src)
    obs = ad.io.read_elem(src["obs"])
    var = ad.io.read_elem(src["var"])
    obsm = ad.io.read_elem(src["obsm"]) if "obsm" in src else {}
    uns = ad.io.read_elem(src["uns"]) if "uns" in src else {}
    uns.pop("cell_type_colors", None)
    for mpath in MATRICES:
        enc = src["/".join(mpath)].attrs.get("encoding-type")
        if enc != "csr_matrix":
            raise SystemExit(f"{'/'.join(mpath)} is {enc}, expected csr_matrix")
    n, G = len(obs), len(var)
    formats = [src_fmt] if args.same_format else args.formats.split(",")
    for f in formats:
        if f not in FORMATS:
            raise SystemExit(f"unknown format {f!r} (choose from {', '.join(FORMATS)})")
    bounds = part_bounds(n, args.parts, args.seed)
    width = max(3, len(str(args.parts - 1)))
    protected = np.isin(np.asarray(var.index), MARKERS)
    clear_out(args.out, args.overwrite)
    items = []
    for i in range(args.parts):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        fmt = formats[i % len(formats)]
        plan = plan_part(i, list(obs.columns))
        rng = seq(args.seed, 2, i)
        keep = np.arange(G)
        dropped = []
        if plan["drop_genes"]:
            cand = np.flatnonzero(empty_genes(src, lo, hi, G, args.block_rows) & ~protected)
            k = min(len(cand), int(rng.integers(1, MAX_DROP + 1)))
            drop = np.sort(rng.choice(cand, size=k, replace=False)) if k else np.array([], np.int64)
            keep = np.setdiff1d(keep, drop)
            dropped = [str(g) for g in var.index[drop]]
        if plan["permute_genes"]:
            keep = rng.permutation(keep)
        colmap = np.full(G, -1, np.int64)
        colmap[keep] = np.arange(len(keep))
        path = os.path.join(args.out, f"part{i:0{width}d}.{FORMATS[fmt]}")
        obs_p = make_obs(obs, lo, hi, i, plan, args.seed)
        obsm_p = {k: v[lo:hi] for k, v in obsm.items()}
        uns_p = {**uns, "split": {"source": os.path.abspath(args.src), "part": i, "rows": [lo, hi]}}
        t1 = time.perf_counter()
        chunking = write_part(src, obs_p, var.iloc[keep], obsm_p, uns_p, lo, hi, colmap, path, fmt,
                              args.block_rows)
        items.append({"path": path, "format": fmt, "rows": [lo, hi], "cells": hi - lo, "genes": int(len(keep)),
                      "genes_permuted": plan["permute_genes"], "dropped_genes": dropped,
                      "obs_dropped": plan["drop_obs"], "obs_added": plan["add_obs"],
                      "categories_shuffled": plan["shuffle_categories"], "chunking": chunking,
                      "seconds": round(time.perf_counter() - t1, 2)})
    if src_fmt == "h5ad":
        src.close()
    return {"source": os.path.abspath(args.src), "source_format": src_fmt, "out": os.path.abspath(args.out),
            "n_parts": args.parts, "seed": args.seed, "cells": n, "genes": G, "obs_columns": list(obs.columns),
            "formats": sorted({it["format"] for it in items}), "parts": items,
            "seconds": round(time.perf_counter() - t0, 1)}


def check(src: str, paths: list[str]) -> dict:
    """Compare the parts' concatenation with the source: cells, matrices and the Q1-Q7 answers."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
    import collection_answers as ca

    t0 = time.perf_counter()
    a_src, _ = ca.load_concat([src])
    a_col, _ = ca.load_concat(paths)
    problems = []
    if not a_col.obs_names.equals(a_src.obs_names):
        problems.append("obs names differ")
    if set(a_col.var_names) != set(a_src.var_names):
        problems.append("var names differ as sets")
    else:
        sub = a_col[:, a_src.var_names]
        for name, x, y in [("X", sub.X, a_src.X), ("counts", sub.layers["counts"], a_src.layers["counts"])]:
            if x.dtype != y.dtype or (sp.csr_matrix(x) != sp.csr_matrix(y)).nnz:
                problems.append(f"{name} differs")
    for c in sorted(KEEP_OBS):
        if not (a_col.obs[c].astype(str).to_numpy() == a_src.obs[c].astype(str).to_numpy()).all():
            problems.append(f"obs column {c} differs")
    r_src, r_col = ca.answers(a_src), ca.answers(a_col)
    if r_src["params"] != r_col["params"]:
        problems.append(f"params differ: {r_src['params']} vs {r_col['params']}")
    worst, rows = 0.0, {}
    for q, want in r_src["queries"].items():
        got = r_col["queries"][q]
        rows[q] = len(want["rows"])
        if len(got["rows"]) != len(want["rows"]):
            problems.append(f"{q}: {len(got['rows'])} rows vs {len(want['rows'])}")
            continue
        for rg, rw in zip(got["rows"], want["rows"]):
            for vg, vw in zip(rg, rw):
                if isinstance(vw, float):
                    worst = max(worst, abs(vg - vw) / max(abs(vw), 1e-300))
                elif vg != vw or type(vg) is not type(vw):
                    problems.append(f"{q}: row {rg} vs {rw}")
                    break
    if worst > 1e-12:
        problems.append(f"floats differ by up to {worst:.3g} relative")
    return {"agree": not problems, "problems": problems[:20], "rows": rows, "max_rel_diff": worst,
            "collection_obs_dtypes": {c: str(t) for c, t in a_col.obs.dtypes.items()},
            "var_order": "source" if a_col.var_names.equals(a_src.var_names) else
                         ("sorted" if a_col.var_names.is_monotonic_increasing else "other"),
            "seconds": round(time.perf_counter() - t0, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="atlas store (.zarr directory or .h5ad file) written by make_atlas.py")
    ap.add_argument("--out", required=True, help="directory for the parts and split.json")
    ap.add_argument("--parts", type=int, required=True)
    ap.add_argument("--formats", default="zarr2,zarr3,h5ad", help="formats cycled over the parts")
    ap.add_argument("--same-format", action="store_true", help="every part in the source's format")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--block-rows", type=int, default=10_000, help="cells read and appended at a time")
    ap.add_argument("--overwrite", action="store_true", help="replace the parts already in --out")
    ap.add_argument("--check", action="store_true", help="then compare the parts with the source (in memory)")
    ap.add_argument("--check-only", action="store_true", help="only compare (parts from --out/split.json)")
    args = ap.parse_args()
    if args.check_only:
        with open(os.path.join(args.out, "split.json")) as f:
            summary = json.load(f)
    else:
        summary = split(args)
        with open(os.path.join(args.out, "split.json"), "w") as f:
            json.dump(summary, f, indent=1)
        short = {**summary, "parts": [{k: (len(v) if k == "dropped_genes" else v) for k, v in it.items()
                                       if k != "chunking"} for it in summary["parts"]]}
        print(json.dumps(short, indent=None).replace('}, {"path"', '},\n {"path"'))
    if args.check or args.check_only:
        res = check(args.src, [it["path"] for it in summary["parts"]])
        print(json.dumps({"check": res}, indent=1))
        if not res["agree"]:
            sys.exit(1)


if __name__ == "__main__":
    main()
