#!/usr/bin/env python
"""anndata's own routes for the export benchmark (benches/export.py), one task per process.

    export_anndata.py ROUTE TASK ATLAS OUT [--donor D]

ROUTE: `lazy` (anndata.experimental.read_lazy / read_elem_lazy, dask threaded scheduler) or
`mem` (ad.read_zarr, everything in memory). TASK:
- `subset-h5ad`, `subset-zarr3`: one donor's cells, all genes, written with write_h5ad /
  write_zarr (zarr format 3);
- `pseudobulk`: the donor × cell type sums of layers/counts as an AnnData laid out as
  scanpy.get.aggregate returns it (obs = groups, var = the atlas's var, layer `sum`), written
  with write_h5ad. `mem` calls scanpy.get.aggregate itself; `lazy` sums CSR row blocks per group
  with an indicator matrix in dask's map_blocks (the anchors' Q3 route) and builds the same
  AnnData.
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import scipy.sparse as sp
import zarr

import anndata as ad

CHUNK_ROWS = 20_000


def subset_lazy(atlas, donor):
    adata = ad.experimental.read_lazy(zarr.open_group(atlas, mode="r"))
    mask = (adata.obs["donor_id"].to_numpy() == donor)
    return adata[mask].to_memory()


def subset_mem(atlas, donor):
    adata = ad.read_zarr(atlas)
    return adata[(adata.obs["donor_id"] == donor).to_numpy()].copy()


def pseudobulk_mem(atlas):
    import scanpy as sc
    adata = ad.read_zarr(atlas)
    return sc.get.aggregate(adata, by=["donor_id", "cell_type"], func="sum", layer="counts")


def pseudobulk_lazy(atlas):
    import dask
    import dask.array as da
    dask.config.set(scheduler="threads")
    store = zarr.open_group(atlas, mode="r")
    adata = ad.experimental.read_lazy(store)
    obs = adata.obs[["donor_id", "cell_type"]].to_memory()
    var = adata.var.to_memory()
    counts = ad.experimental.read_elem_lazy(store["layers/counts"], chunks=(CHUNK_ROWS, -1))
    g = obs.groupby(["donor_id", "cell_type"], observed=True)
    codes = g.ngroup().to_numpy()
    keys = g.size().index.to_frame(index=False)
    n_groups = len(keys)
    codes_da = da.from_array(codes.reshape(-1, 1), chunks=(counts.chunks[0], 1))

    def part(b, c):
        c = c.ravel()
        ind = sp.csr_matrix((np.ones(len(c)), (c, np.arange(len(c)))), shape=(n_groups, len(c)))
        return np.asarray((ind @ b).todense()).reshape(1, -1)

    parts = da.map_blocks(part, counts, codes_da, dtype=np.float64, meta=np.empty((0, 0)),
                          chunks=((1,) * counts.numblocks[0], (n_groups * counts.shape[1],)))
    sums = parts.sum(axis=0).compute().reshape(n_groups, counts.shape[1])
    names = (keys["donor_id"].astype(str) + "_" + keys["cell_type"].astype(str)).to_numpy()
    obs_out = pd.DataFrame({k: pd.Categorical(keys[k].astype(str)) for k in keys}, index=names)
    return ad.AnnData(obs=obs_out, var=var, layers={"sum": sums})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("route", choices=["lazy", "mem"])
    ap.add_argument("task", choices=["subset-h5ad", "subset-zarr3", "pseudobulk"])
    ap.add_argument("atlas")
    ap.add_argument("out")
    ap.add_argument("--donor")
    a = ap.parse_args()
    if a.task == "pseudobulk":
        result = pseudobulk_lazy(a.atlas) if a.route == "lazy" else pseudobulk_mem(a.atlas)
        result.write_h5ad(a.out)
        return
    result = subset_lazy(a.atlas, a.donor) if a.route == "lazy" else subset_mem(a.atlas, a.donor)
    if a.task == "subset-h5ad":
        result.write_h5ad(a.out)
    else:
        ad.settings.zarr_write_format = 3
        result.write_zarr(a.out)


if __name__ == "__main__":
    main()
