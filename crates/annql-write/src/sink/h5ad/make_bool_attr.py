"""Writes bool_attr.h5: two groups, `false` and `true`, each holding only the scalar attribute
`ordered` as h5py stores a numpy bool (an HDF5 enum of int8, FALSE=0 / TRUE=1).

hdf5-pure's attribute values cannot express an enum, so the h5ad sink copies one of these
groups (with `File::copy_from`) to make a categorical group whose `ordered` attribute is the
bool anndata writes. Latest-format object headers (`libver="latest"`) are what `copy_from`
accepts. Run with the project's Python: `.venv/bin/python make_bool_attr.py`.
"""

import h5py
import numpy as np

with h5py.File("bool_attr.h5", "w", libver="latest") as f:
    f.create_group("false").attrs["ordered"] = np.False_
    f.create_group("true").attrs["ordered"] = np.True_
