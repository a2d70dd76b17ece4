#!/usr/bin/env python
"""atlas-l: the shared atlas model at a size bigger than this machine's memory, as zarr v3 sharded.

`../shared/datagen/make_atlas.py` holds the model (cell types, tissues, donors, burst counts,
markers) and writes through anndata's sparse `append`, which keeps the first block's index dtype:
scipy makes that int32, and past 2**31 stored entries the `indptr` would wrap. This script reuses
the model's functions block by block and writes the two matrices itself, with an int64 `indptr`
from the start and whole shards per write (a sharded array appended to piecemeal would rewrite
its last shard on every block); obs, var, obsm and uns go through `anndata.io.write_elem`, so
everything but the matrices' arrays is written by anndata, and the result is checked by reading it
back with anndata (`--check`).

  python3 benches/make_atlas_l.py --cells 3000000 --out /work/data/atlas-l.zarr   # ~3.6e9 entries per matrix

Memory is O(block) for the matrices plus O(cells) for obs/obsm (~2 GB at 3M cells).
The content for given (--cells, --genes, --seed) is what make_atlas.py would draw: same streams,
same blocks; only the storage differs (zarr v3, sharded, Blosc lz4 + shuffle as atlas-m's v2).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATAGEN = os.path.join(HERE, "..", "..", "shared", "datagen", "make_atlas.py")

CHUNK = 1 << 20        # entries per inner chunk (4 MiB of float32)
SHARD = 16 * CHUNK     # entries per shard file


def load_model(path: str):
    spec = importlib.util.spec_from_file_location("make_atlas", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class ShardedAppender:
    """A 1-D zarr v3 array grown by whole shards: values are buffered until a shard fills."""

    def __init__(self, group, name: str, dtype, codecs):
        self.array = group.create_array(name, shape=(0,), dtype=dtype, chunks=(CHUNK,), shards=(SHARD,),
                                        compressors=codecs, fill_value=0)
        self.parts: list[np.ndarray] = []
        self.buffered = 0
        self.written = 0

    def append(self, values: np.ndarray) -> None:
        self.parts.append(values)
        self.buffered += values.size
        if self.buffered >= SHARD:
            self._flush(whole_shards_only=True)

    def finish(self) -> int:
        self._flush(whole_shards_only=False)
        return self.written

    def _flush(self, whole_shards_only: bool) -> None:
        if not self.parts:
            return
        buf = np.concatenate(self.parts)
        n = (buf.size // SHARD) * SHARD if whole_shards_only else buf.size
        if n == 0:
            return
        self.array.resize((self.written + n,))
        self.array[self.written:self.written + n] = buf[:n]
        self.written += n
        rest = buf[n:]
        self.parts = [rest] if rest.size else []
        self.buffered = rest.size


def write_csr_group(parent, name: str, codecs):
    g = parent.create_group(name)
    return g, ShardedAppender(g, "data", np.float32, codecs), ShardedAppender(g, "indices", np.int32, codecs)


def finish_csr_group(g, data: ShardedAppender, indices: ShardedAppender, indptr: np.ndarray, shape, codecs):
    n_data, n_indices = data.finish(), indices.finish()
    assert n_data == n_indices == int(indptr[-1]), (n_data, n_indices, indptr[-1])
    g.create_array("indptr", data=indptr, chunks=(CHUNK,), shards=(SHARD,), compressors=codecs)
    g.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": list(shape)})


def check(path: str, n_cells: int, n_genes: int, nnz: int) -> None:
    """Read the store back with anndata (lazily: the matrices do not fit in memory)."""
    import anndata as ad
    import zarr
    root = zarr.open_group(path, mode="r")
    adata = ad.AnnData(obs=ad.io.read_elem(root["obs"]), var=ad.io.read_elem(root["var"]))
    assert adata.shape == (n_cells, n_genes), adata.shape
    for key in ("X", "layers/counts"):
        m = ad.io.sparse_dataset(root[key])
        assert m.shape == (n_cells, n_genes), (key, m.shape)
        assert m.format == "csr", key
        ip = root[key]["indptr"]
        assert ip.dtype == np.int64 and int(ip[-1]) == nnz, (key, ip.dtype, ip[-1])
        tail = m[n_cells - 3:]
        assert tail.nnz == int(ip[-1] - ip[n_cells - 3]), key
    print(f"[check] anndata reads {path}: {adata.shape}, {nnz:,} entries per matrix, int64 indptr")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=3_000_000)
    ap.add_argument("--genes", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--datagen", default=DEFAULT_DATAGEN, help="the shared model (make_atlas.py)")
    ap.add_argument("--check-only", action="store_true", help="only read an existing store back")
    a = ap.parse_args()
    if a.check_only:
        info = json.load(open(a.out.rstrip("/") + ".info.json"))
        check(a.out, info["cells"], info["genes"], info["nnz"])
        return

    import anndata as ad
    import zarr
    from zarr.codecs import BloscCodec

    m = load_model(a.datagen)
    N, G, seed = a.cells, a.genes, a.seed
    t0 = time.perf_counter()
    var, alias, cdf_mt, mt_idx = m.make_genes(G, seed)
    obs, ctype, libsize, mito = m.make_cells(N, G, seed)

    tmp = a.out.rstrip("/") + ".partial"
    for p in (tmp,):
        if os.path.exists(p):
            shutil.rmtree(p)
    ad.settings.zarr_write_format = 3
    root = zarr.open_group(tmp, mode="w", zarr_format=3)
    codecs = [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]
    ad.io.write_elem(root, "layers", {})
    xg, x_data, x_idx = write_csr_group(root, "X", codecs)
    cg, c_data, c_idx = write_csr_group(root["layers"], "counts", codecs)

    indptr = np.zeros(N + 1, np.int64)
    n_cells_g = np.zeros(G, np.int64)
    sum_g = np.zeros(G, np.float64)
    n_genes = np.empty(N, np.int32)
    total = np.empty(N, np.float32)
    pct_mito = np.empty(N, np.float32)
    nnz = 0
    for b, lo in enumerate(range(0, N, m.BLOCK)):
        hi = min(lo + m.BLOCK, N)
        cnt, x, n_genes[lo:hi], total[lo:hi], pct_mito[lo:hi] = m.make_block(
            b, seed, ctype[lo:hi], libsize[lo:hi], mito[lo:hi], G, alias, cdf_mt, mt_idx)
        n_cells_g += np.bincount(cnt.indices, minlength=G)
        sum_g += np.bincount(cnt.indices, weights=cnt.data, minlength=G)
        indptr[lo + 1:hi + 1] = nnz + cnt.indptr[1:].astype(np.int64)
        nnz += cnt.nnz
        c_data.append(cnt.data)
        c_idx.append(cnt.indices.astype(np.int32))
        x_data.append(x.data)
        x_idx.append(x.indices.astype(np.int32))
        if b % 20 == 0:
            print(f"  block {b}: {hi}/{N} cells, nnz so far {nnz:,} ({time.perf_counter() - t0:.0f}s)", flush=True)
    finish_csr_group(xg, x_data, x_idx, indptr, (N, G), codecs)
    finish_csr_group(cg, c_data, c_idx, indptr, (N, G), codecs)

    obs["n_genes"] = n_genes
    obs["total_counts"] = total
    obs["pct_mito"] = pct_mito
    obs = obs[["cell_type", "tissue", "donor_id", "sex", "disease", "assay", "age", "n_genes",
               "total_counts", "pct_mito", "is_primary_data", "sample_note", "batch"]]
    var["n_cells"] = n_cells_g
    var["mean_counts"] = (sum_g / N).astype(np.float32)
    umap, pca = m.make_embeddings(ctype, seed)
    uns = {
        "title": f"Synthetic multi-tissue atlas ({N} cells, seed {seed})",
        "schema_version": "5.2.0",
        "generator": {"name": "make_atlas_l.py", "seed": seed,
                      "params": {"cells": N, "genes": G, "block": m.BLOCK, "p_burst": m.P_BURST,
                                 "mean_libsize": m.MEAN_LIBSIZE}},
        "cell_type_colors": np.array(m.COLORS[: len(m.CELL_TYPES)], dtype=object),
        "default_embedding": "X_umap",
    }
    ad.io.write_elem(root, "obs", obs)
    ad.io.write_elem(root, "var", var)
    ad.io.write_elem(root, "obsm", {"X_umap": umap, "X_pca": pca})
    ad.io.write_elem(root, "varm", {})
    ad.io.write_elem(root, "obsp", {})
    ad.io.write_elem(root, "varp", {})
    ad.io.write_elem(root, "uns", uns)
    root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
    zarr.consolidate_metadata(tmp)
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    os.rename(tmp, a.out)
    gen_s = time.perf_counter() - t0

    size = int(subprocess.check_output(["du", "-sb", a.out]).split()[0])
    info = {"out": a.out, "format": "zarr", "zarr_format": 3, "sharded": True, "cells": N, "genes": G,
            "seed": seed, "nnz": nnz, "density": nnz / (N * G), "bytes_on_disk": size,
            "seconds": round(gen_s, 1), "X_chunks": {"inner": CHUNK, "shard": SHARD},
            "X_dtypes": {"data": "float32", "indices": "int32", "indptr": "int64"},
            "X_compressor": "blosc lz4 clevel 5 shuffle"}
    print(json.dumps(info, indent=1))
    with open(a.out.rstrip("/") + ".info.json", "w") as f:
        json.dump(info, f, indent=1)
    check(a.out, N, G, nnz)


if __name__ == "__main__":
    sys.exit(main())
