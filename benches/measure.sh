#!/usr/bin/env bash
# Times one SQL file against an atlas in a cold process: wall time and peak RSS (GNU time),
# plus the chunk reads annql reports (--stats). ${name} placeholders (benches/sql/qN.sql) are
# filled from PARAMS_JSON as benches/run.py does.
# Usage: benches/measure.sh ATLAS SQLFILE [PARAMS_JSON]
set -euo pipefail
atlas=$1; sql=$2; params=${3:-}
bin=${ANNQL_BIN:-target/debug/annql}
tmp=$(mktemp --suffix .sql)
if [[ -n $params ]]; then
  python3 - "$sql" "$params" > "$tmp" <<'PY'
import json, re, sys
lit = lambda v: ", ".join(map(lit, v)) if isinstance(v, list) else "'" + str(v).replace("'", "''") + "'"
p = json.load(open(sys.argv[2]))
print(re.sub(r"\$\{(\w+)\}", lambda m: lit(p[m.group(1)]), open(sys.argv[1]).read()))
PY
else
  cp "$sql" "$tmp"
fi
/usr/bin/time -f "wall %e s, peak RSS %M KB" "$bin" run --stats -d "atlas=$atlas" --format csv "$tmp" > /tmp/annql-measure.csv
echo "rows: $(($(wc -l < /tmp/annql-measure.csv) - 1))"
rm -f "$tmp"
