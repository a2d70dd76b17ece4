#!/usr/bin/env python3
"""Copies an .h5ad with every array of X rewritten as a contiguous (unchunked, uncompressed)
HDF5 dataset, the layout anndata's own `write_h5ad` uses for in-memory data: the case where the
reader must not pull a whole 1-D dataset into memory to scan it.

  python3 benches/contiguous_h5ad.py SRC.h5ad DST.h5ad
"""
from __future__ import annotations

import sys

import h5py


def main() -> None:
    src, dst = sys.argv[1:3]
    with h5py.File(src, "r") as s, h5py.File(dst, "w") as d:
        for k, v in s.attrs.items():
            d.attrs[k] = v
        for name in s:
            if name != "X":
                s.copy(s[name], d, name=name)
        x = d.create_group("X")
        for k, v in s["X"].attrs.items():
            x.attrs[k] = v
        for part in ("data", "indices", "indptr"):
            x.create_dataset(part, data=s["X"][part][...])  # no chunks, no filters: contiguous
        print(dst, {p: (x[p].shape, x[p].chunks) for p in ("data", "indices", "indptr")})


if __name__ == "__main__":
    main()
