#!/usr/bin/env python3
"""Bytes a one-gene question fetches from an indexed store over loopback HTTP (issue #21).

Serves the directory holding STORE and its gene index (STORE.annql-index, built by `annql index`)
with nginx, runs `annql run` on `ATTACH 'http://…/STORE' AS atlas (index 'http://…/STORE.annql-index')`
and a query on one gene (every cell, zeros included), in a fresh process, and reads nginx's
access log: bytes sent for the copy (its `indices`/`data` chunks, shard indexes, `indptr`), for the
source's matrix entries, and in all; beside the gene's column as stored (cell ids and values,
4 bytes each, from the copy's `indptr`).

  .venv/bin/python benches/index_remote.py --annql /work/target-bf/bench-fast/annql \
      --store /work/data/atlas-m.zarr --gene MS4A1 --out ../bench-results/index-remote-m.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time

import anndata as ad
import zarr

from remote import free_port  # noqa: F401  (same directory)

LINE = re.compile(r'"GET (\S+) [^"]*" (\d+) (\d+)')


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--annql", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--gene", default="MS4A1")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    store = os.path.abspath(a.store)
    root, name = os.path.dirname(store), os.path.basename(store)
    sidecar = store + ".annql-index"
    if not os.path.exists(sidecar):
        raise SystemExit(f"no index at {sidecar}: run `annql index {store}` first")
    var = ad.io.read_elem(zarr.open_group(store, mode="r")["var"])
    gene = int((var.index == a.gene).nonzero()[0][0])
    indptr = zarr.open_group(sidecar, mode="r")["X/indptr"][gene:gene + 2]
    column = int(indptr[1] - indptr[0]) * 8
    with tempfile.TemporaryDirectory() as work:
        port = free_port()
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""daemon off; worker_processes 2; pid {work}/nginx.pid; error_log {work}/error.log;
events {{ worker_connections 256; }}
http {{ access_log {work}/access.log; client_body_temp_path {work}/b; proxy_temp_path {work}/p;
  fastcgi_temp_path {work}/f; uwsgi_temp_path {work}/u; scgi_temp_path {work}/s;
  server {{ listen 127.0.0.1:{port}; root {root}; }} }}
""")
        nginx = subprocess.Popen(["/usr/sbin/nginx", "-p", work, "-c", conf], stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            url = f"http://127.0.0.1:{port}/{name}"
            sql = (f"ATTACH '{url}' AS atlas (index '{url}.annql-index');\n"
                   "SELECT o.cell_type, avg(d.value) FROM atlas.x_dense d JOIN atlas.obs o USING (obs_id) "
                   f"JOIN atlas.var v USING (var_id) WHERE v.var_name = '{a.gene}' GROUP BY 1;\n")
            qf = os.path.join(work, "q.sql")
            with open(qf, "w") as f:
                f.write(sql)
            t = time.time()
            p = subprocess.run([a.annql, "run", "--format", "csv", qf], capture_output=True, text=True)
            wall = time.time() - t
            if p.returncode != 0:
                raise SystemExit(p.stderr)
            time.sleep(0.5)
            sent = {"copy_entries": 0, "copy_all": 0, "source_entries": 0, "source_all": 0}
            for line in open(os.path.join(work, "access.log")):
                m = LINE.search(line)
                if not m:
                    continue
                path, size = m.group(1), int(m.group(3))
                if ".annql-index/" in path:
                    sent["copy_all"] += size
                    if "/X/data/" in path or "/X/indices/" in path:
                        sent["copy_entries"] += size
                else:
                    sent["source_all"] += size
                    if "/X/data/" in path or "/X/indices/" in path:
                        sent["source_entries"] += size
        finally:
            nginx.terminate()
    result = {"store": store, "gene": a.gene, "column_bytes": column, "wall_s": round(wall, 2), **sent,
              "copy_over_column": round(sent["copy_all"] / column, 2),
              "copy_allowance_used": sent["copy_all"] - 1.5 * column}
    print(json.dumps(result, indent=1))
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
