#!/usr/bin/env python3
"""Per-gene means of raw.X over the CD14+ monocytes of the demo, as anndata computes them.

examples/subset_matrix.rs selects the same cells with annql, takes raw.X as a sprs CSR matrix,
computes the means with sprs and checks them against these values.

Run from the repository root: python3 examples/data/make_subset_matrix_expected.py
Writes examples/data/subset_matrix.expected.json: {"cells": n, "genes": [...], "means": [...]}.
"""
import json
from pathlib import Path

import anndata as ad
import numpy as np

HERE = Path(__file__).resolve().parent
a = ad.read_zarr(HERE / "pbmc68k_reduced.zarr")
mask = (a.obs["bulk_labels"] == "CD14+ Monocyte").values
raw = a.raw.X[mask]
means = np.asarray(raw.mean(axis=0), dtype=np.float64).ravel()
out = {
    "dtype": str(a.raw.X.dtype),
    "cells": int(mask.sum()),
    "genes": [str(g) for g in a.raw.var_names],
    "means": [float(m) for m in means],
}
with open(HERE / "subset_matrix.expected.json", "w") as f:
    json.dump(out, f, separators=(",", ":"))
print(out["dtype"], out["cells"], len(out["genes"]))
