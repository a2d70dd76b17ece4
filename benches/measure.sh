#!/usr/bin/env bash
# Times one SQL file against an atlas in a cold process: wall time and peak RSS (GNU time),
# plus the chunk reads annql reports (--stats). Usage: benches/measure.sh ATLAS SQLFILE [DONOR]
set -euo pipefail
atlas=$1; sql=$2; donor=${3:-D06}
bin=${ANNQL_BIN:-target/release/annql}
tmp=$(mktemp); sed "s/\${DONOR}/$donor/g" "$sql" > "$tmp"
/usr/bin/time -f "wall %e s, peak RSS %M KB" "$bin" run --stats -d "atlas=$atlas" --format csv "$tmp" > /tmp/annql-measure.csv
echo "rows: $(($(wc -l < /tmp/annql-measure.csv) - 1))"
rm -f "$tmp"
