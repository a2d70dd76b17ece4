"""Seeds the fuzz corpora from the committed fixtures and the shared corpus of AnnData files.

Run from the repository root with the project's Python (anndata for the small generated .h5ad):
    .venv/bin/python fuzz/seed.py fuzz/seeds
then minimise each corpus into fuzz/corpus/<target> (see fuzz/README.md). The input formats are
those of crates/annql-store/src/fuzzing.rs.
"""

import io
import json
import os
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "data"
CORPUS = ROOT.parent / "shared" / "corpus" / "anndata-files"

METADATA = {".zgroup", ".zarray", ".zattrs", ".zmetadata", "zarr.json"}
MAX_CHUNK_SEED = 64 << 10
MAX_FILE_SEED = 200 << 10


def stores():
    """(name, {key: bytes}) for every zarr store of the fixtures and the corpus, zipped or not."""
    dirs = sorted(FIXTURES.glob("*.zarr")) + sorted(CORPUS.rglob("*.zarr"))
    for d in dirs:
        if d.is_dir():
            files = {p.relative_to(d).as_posix(): p for p in d.rglob("*") if p.is_file()}
            yield d.name, {k: p.read_bytes() for k, p in files.items() if p.stat().st_size < 1 << 22}
    zips = sorted(FIXTURES.glob("*.zip")) + sorted(CORPUS.rglob("*.zarr.zip"))
    for z in zips:
        with zipfile.ZipFile(z) as archive:
            members = {}
            for info in archive.infolist():
                if not info.is_dir():
                    members[info.filename] = archive.read(info)
        # Archives of a folder nest the store one level down.
        roots = sorted({k.rsplit("/", 1)[0] + "/" if "/" in k else "" for k in members
                        if k.rsplit("/", 1)[-1] in METADATA}, key=lambda r: r.count("/"))
        root = roots[0] if roots else ""
        yield z.name, {k[len(root):]: v for k, v in members.items() if k.startswith(root)}


def entries(store, keep):
    return b"\0".join(k.encode() + b"\n" + v for k, v in sorted(store.items()) if keep(k))


def without_consolidated(store):
    out = dict(store)
    if "zarr.json" in out:
        root = json.loads(out["zarr.json"])
        root.pop("consolidated_metadata", None)
        out["zarr.json"] = json.dumps(root).encode()
    return out


def first_chunks(store):
    """(metadata document, first chunk bytes) of every array in the store."""
    for key, doc in store.items():
        node, _, file = key.rpartition("/")
        prefix = node + "/" if node else ""
        if file == ".zarray":
            meta = json.loads(doc)
            sep = meta.get("dimension_separator") or "."
            chunk = sep.join("0" for _ in meta.get("shape", [])) or "0"
        elif file == "zarr.json":
            meta = json.loads(doc)
            if meta.get("node_type") != "array":
                continue
            enc = meta.get("chunk_key_encoding", {})
            sep = enc.get("configuration", {}).get("separator", "/")
            zeros = ["0"] * len(meta.get("shape", []))
            chunk = sep.join(["c"] + zeros) if enc.get("name", "default") == "default" else (sep.join(zeros) or "0")
        else:
            continue
        data = store.get(prefix + chunk)
        if data is not None and len(data) <= MAX_CHUNK_SEED:
            yield doc, data


def small_h5ad(path):
    """A small AnnData with every element kind annql reads, written by the real anndata."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    x = sp.random(6, 4, density=0.5, format="csr", random_state=0, dtype=np.float32)
    obs = pd.DataFrame(
        {
            "cat": pd.Categorical(["a", "b", "a", "c", "b", "a"]),
            "n": pd.array([1, None, 3, 4, 5, 6], dtype="Int64"),
            "flag": pd.array([True, False, None, True, True, False], dtype="boolean"),
            "s": ["x", "y", "z", "x", "y", "z"],
            "f": rng.normal(size=6),
        },
        index=[f"c{i}" for i in range(6)],
    )
    var = pd.DataFrame(index=[f"g{i}" for i in range(4)])
    a = ad.AnnData(X=x, obs=obs, var=var)
    a.obsm["pca"] = rng.normal(size=(6, 2))
    a.layers["dense"] = x.toarray()
    a.varp["csc"] = sp.csc_matrix(np.eye(4, dtype=np.float64))
    a.uns["scalar"] = 3
    a.uns["name"] = "tiny"
    a.write_h5ad(path, compression="gzip")


def write(out, target, name, data):
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def main(out):
    out = Path(out)
    for name, store in stores():
        tag = name.replace("/", "_")
        v2 = any(k.rsplit("/", 1)[-1] in {".zgroup", ".zarray"} for k in store)
        if v2:
            write(out, "zarr_v2_metadata", tag, entries(store, lambda k: k.rsplit("/", 1)[-1] in {".zgroup", ".zarray", ".zattrs"}))
            if ".zmetadata" in store:
                write(out, "consolidated", tag, entries(store, lambda k: k == ".zmetadata"))
        if "zarr.json" in store:
            bare = without_consolidated(store)
            write(out, "zarr_v3_metadata", tag, entries(bare, lambda k: k.endswith("zarr.json")))
            write(out, "consolidated", tag + ".v3", entries(store, lambda k: k == "zarr.json"))
        for i, (doc, chunk) in enumerate(first_chunks(store)):
            write(out, "chunk", f"{tag}.{i}", doc + b"\0" + chunk)
        # A small archive of the store's metadata and small chunks, stored and deflated.
        for method, suffix in [(zipfile.ZIP_STORED, "stored"), (zipfile.ZIP_DEFLATED, "deflated")]:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", method) as archive:
                for k, v in sorted(store.items()):
                    if len(v) <= 4096:
                        archive.writestr(k, v)
            if buf.tell() <= MAX_FILE_SEED:
                write(out, "zip", f"{tag}.{suffix}.zip", buf.getvalue())
    files = sorted(FIXTURES.glob("*.h5ad")) + sorted(CORPUS.rglob("*.h5ad")) + sorted(CORPUS.rglob("*.h5mu"))
    for f in files:
        if f.stat().st_size <= MAX_FILE_SEED:
            write(out, "hdf5", f.name, f.read_bytes())
    for f in sorted(FIXTURES.glob("*.zip")) + sorted(CORPUS.rglob("*.zarr.zip")):
        if f.stat().st_size <= MAX_FILE_SEED:
            write(out, "zip", f"{f.parent.name}.{f.name}", f.read_bytes())
    generated = out / "hdf5" / "generated.small.h5ad"
    generated.parent.mkdir(parents=True, exist_ok=True)
    small_h5ad(generated)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fuzz/seeds")
