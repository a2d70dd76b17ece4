#!/usr/bin/env bash
# Two builds of annql on the same queries: wall time and peak RSS of each run, the binaries
# alternating in ABBA order (so neither always runs right after the other's large free, which
# on a 2-core VM moves a 0.16 s query by ~40 %), one uncounted warm-up each, then the medians.
# For a change that must not move performance (closing notes of refactors).
#
#   benches/compare_builds.sh BEFORE_BIN AFTER_BIN ATLAS N QUERY.sql...
#   e.g. the SQL of run.py: python3 benches/run.py --size s --print-sql q3 > /tmp/q3.sql
set -euo pipefail
before=$1 after=$2 data=$3 n=$4
shift 4
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for sql in "$@"; do
  q=$(basename "$sql" .sql)
  for bin in "$before" "$after"; do
    "$bin" run -d "atlas=$data" --format arrow -o "$out/o.arrow" "$sql" >/dev/null
  done
  for i in $(seq 1 "$n"); do
    if [ $((i % 2)) = 1 ]; then order="before after"; else order="after before"; fi
    for which in $order; do
      /usr/bin/time -f "%e %M" -o "$out/t" "${!which}" run -d "atlas=$data" --format arrow \
        -o "$out/o.arrow" "$sql" >/dev/null
      echo "$q $which $(cat "$out/t")" >>"$out/runs"
    done
  done
done
python3 - "$out/runs" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    q, which, secs, kb = line.split()
    runs.setdefault(q, {}).setdefault(which, []).append((float(secs), int(kb)))
for q, r in runs.items():
    b, a = (statistics.median(s for s, _ in r[w]) for w in ("before", "after"))
    bm, am = (max(k for _, k in r[w]) / 1024 for w in ("before", "after"))
    print(f"{q}: before {b:.3f} s, after {a:.3f} s ({(a / b - 1) * 100:+.1f} %); "
          f"peak RSS {bm:.0f} / {am:.0f} MB; {len(r['before'])} runs each")
PY
