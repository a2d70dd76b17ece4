#!/usr/bin/env python3
"""Convert scanpy's bundled PBMC demo (700 cells x 765 genes) into the zarr store annql ships.

Source: `scanpy/datasets/10x_pbmc68k_reduced.h5ad` from scverse/scanpy (commit f9c9477, 2025-11-07),
copied into the shared corpus (`../shared/corpus/anndata-files/scverse-scanpy/...`). It is a subset of
10x Genomics' "Fresh 68k PBMCs (Donor A)" dataset (CC BY 4.0), reduced by scanpy's authors.

Run from the repository root: python3 examples/data/make_demo.py
Writes examples/data/pbmc68k_reduced.zarr (zarr format 2, consolidated, anndata's defaults): X is
dense (log-normalised, scaled), raw.X is CSR, obs has categoricals (bulk_labels, louvain, phase).
"""
from pathlib import Path

import anndata as ad

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT.parent / "shared/corpus/anndata-files/scverse-scanpy/src/scanpy/datasets/10x_pbmc68k_reduced.h5ad"
OUT = Path(__file__).resolve().parent / "pbmc68k_reduced.zarr"

a = ad.read_h5ad(SRC)
ad.settings.zarr_write_format = 2
a.write_zarr(OUT)
print(OUT, a)
