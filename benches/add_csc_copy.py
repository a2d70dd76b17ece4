#!/usr/bin/env python3
"""Makes a copy of a zarr AnnData store with a CSC copy of X as layers/X_csc, written by anndata.

  python3 benches/add_csc_copy.py SRC.zarr DST.zarr

The source is never modified: DST holds symlinks to every element of SRC (so it costs only the
new layer on disk), its own `layers` group (symlinks to SRC's layers, plus X_csc) and its own
consolidated metadata. X is read into memory to convert it (atlas-m: ~12 GB peak).
"""
from __future__ import annotations

import os
import shutil
import sys

import anndata as ad
import zarr


def main() -> None:
    src, dst = (os.path.abspath(p) for p in sys.argv[1:3])
    if os.path.exists(dst):
        sys.exit(f"{dst} exists")
    os.makedirs(dst)
    for name in os.listdir(src):
        path = os.path.join(src, name)
        if name == "layers":
            continue
        if os.path.isdir(path):
            os.symlink(path, os.path.join(dst, name))
        elif name != ".zmetadata":
            shutil.copy(path, os.path.join(dst, name))
    layers = os.path.join(dst, "layers")
    os.makedirs(layers)
    src_layers = os.path.join(src, "layers")
    for name in os.listdir(src_layers) if os.path.isdir(src_layers) else []:
        path = os.path.join(src_layers, name)
        if os.path.isdir(path):
            os.symlink(path, os.path.join(layers, name))
        else:
            shutil.copy(path, os.path.join(layers, name))
    root = zarr.open_group(dst, mode="r+", zarr_format=2)
    x = ad.io.read_elem(zarr.open_group(src, mode="r")["X"])
    chunk = zarr.open_array(os.path.join(src, "X", "data"), mode="r").chunks
    group = root.require_group("layers")
    group.attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})
    ad.io.write_elem(group, "X_csc", x.tocsc(), dataset_kwargs={"chunks": chunk})
    zarr.consolidate_metadata(dst, zarr_format=2)
    print(f"{dst}: layers/X_csc ({x.shape[0]} x {x.shape[1]}, {x.nnz} entries, chunks {chunk})")


if __name__ == "__main__":
    main()
