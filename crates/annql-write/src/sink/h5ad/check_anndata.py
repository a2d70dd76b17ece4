"""Reads the .h5ad the sink tests write (argv[1]) with the real anndata and h5py and checks
values, dtypes, categories, `ordered`, the index and the attribute types against what anndata
itself writes. argv[2] is JSON with the expected obs/var names and X. Prints "ok"."""

import json
import sys

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

path, expected = sys.argv[1], json.loads(sys.argv[2])
a = ad.read_h5ad(path)
n_obs, n_vars = len(expected["obs_names"]), len(expected["var_names"])
assert a.shape == (n_obs, n_vars), a.shape
assert list(a.obs_names) == expected["obs_names"]
assert list(a.var_names) == expected["var_names"]
assert list(a.obs.columns) == ["cat", "ocat", "s", "ni", "nb", "b"], list(a.obs.columns)
assert list(a.var.columns) == []

cat, ocat = a.obs["cat"], a.obs["ocat"]
assert isinstance(cat.dtype, pd.CategoricalDtype) and isinstance(ocat.dtype, pd.CategoricalDtype)
assert list(cat.cat.categories) == ["a", "b", "c"] and not cat.cat.ordered
assert list(ocat.cat.categories) == ["lo", "hi"] and ocat.cat.ordered
assert cat.cat.codes.dtype == np.int8
assert list(cat.cat.codes) == [i % 3 if i != 4 else -1 for i in range(n_obs)]
assert list(ocat.cat.codes) == [i % 2 if i != 4 else -1 for i in range(n_obs)]
assert list(a.obs["s"]) == [f"s{i}·é" for i in range(n_obs)]
ni = a.obs["ni"]
assert ni.dtype == pd.Int64Dtype(), ni.dtype
assert [None if pd.isna(v) else int(v) for v in ni] == [
    None if i % 4 == 1 else 7 * i for i in range(n_obs)
]
nb = a.obs["nb"]
assert nb.dtype == pd.BooleanDtype(), nb.dtype
assert [None if pd.isna(v) else bool(v) for v in nb] == [
    None if i % 4 == 1 else i % 3 == 0 for i in range(n_obs)
]
assert a.obs["b"].dtype == np.bool_ and list(a.obs["b"]) == [i % 2 == 0 for i in range(n_obs)]

x = np.array(expected["X"], dtype=np.float32)
assert sp.issparse(a.X) and a.X.format == "csr" and a.X.dtype == np.float32
assert (a.X.toarray() == x).all()
layer = a.layers["L"]
assert sp.issparse(layer) and layer.format == "csc" and layer.dtype == np.float64
assert (layer.toarray() == x.astype(np.float64)).all()
dense = a.layers["D"]
assert isinstance(dense, np.ndarray) and dense.dtype == np.int32 and dense.shape == x.shape
assert (dense == x.astype(np.int32)).all()
pca = a.obsm["pca"]
assert isinstance(pca, np.ndarray) and pca.dtype == np.float64 and pca.shape == (n_obs, 2)
assert (pca.ravel() == np.arange(n_obs * 2) / 2.0).all()

assert a.uns["s"] == "hello" and isinstance(a.uns["s"], str)
# anndata hands 0-d numeric scalars back as Python numbers (as for files it writes).
assert a.uns["n"] == 3 and isinstance(a.uns["n"], int)
assert list(a.uns["arr"]) == ["p", "q"]
assert a.uns["d"]["x"] == 1.5 and isinstance(a.uns["d"]["x"], float)

# Attribute and element types as anndata + h5py write them.
with h5py.File(path, "r") as f:
    # Nothing of the writer's own is left behind (the address probe, placeholders).
    assert set(f) == {"X", "layers", "obs", "obsm", "obsp", "uns", "var", "varm", "varp"}, set(f)
    for name in ["/", "obs", "X", "obs/ocat", "uns/s"]:
        t = f[name].attrs.get_id("encoding-type").get_type()
        assert t.get_class() == h5py.h5t.STRING and t.is_variable_str(), name
        assert t.get_cset() == h5py.h5t.CSET_UTF8, name
    order = f["obs"].attrs["column-order"]
    assert order.dtype == object and list(order) == ["cat", "ocat", "s", "ni", "nb", "b"]
    empty = f["var"].attrs["column-order"]
    assert empty.dtype == np.float64 and empty.shape == (0,), (empty.dtype, empty.shape)
    assert f["X"].attrs["shape"].dtype == np.int64
    for name, want in [("obs/cat", False), ("obs/ocat", True)]:
        ordered = f[name].attrs["ordered"]
        assert isinstance(ordered, np.bool_) and bool(ordered) == want, (name, ordered)
    for name in ["obs/b", "obs/nb/values", "obs/ni/mask"]:
        assert f[name].dtype == np.bool_, (name, f[name].dtype)
    for name in ["obs/_index", "obs/s", "obs/cat/categories", "uns/s"]:
        t = f[name].id.get_type()
        assert t.is_variable_str() and t.get_cset() == h5py.h5t.CSET_UTF8, name
    assert f["uns/s"].shape == () and f["uns/n"].shape == () and f["uns/d/x"].shape == ()
    assert f["uns/n"].dtype == np.int64 and f["uns/d/x"].dtype == np.float64
    assert f["X/indptr"].dtype == np.int64 and f["layers/L/indptr"].dtype == np.int32
    # Dense arrays grew in place a chunk of whole rows at a time, then took their 2-D shape.
    for name, chunks in [("layers/D", (1, n_vars)), ("obsm/pca", (3, 2))]:
        d = f[name]
        assert d.chunks == chunks and d.maxshape == (None, chunks[1]), (name, d.chunks, d.maxshape)
        assert set(d.attrs) == {"encoding-type", "encoding-version"}, (name, set(d.attrs))
    # 1-D numeric and bool arrays grew in place (chunks of 4, the test's chunking), uncompressed.
    for name in ["X/data", "X/indices", "obs/b", "obs/ni/values"]:
        d = f[name]
        assert d.chunks == (4,) and d.maxshape == (None,) and d.compression is None, name
print("ok")
