#!/usr/bin/env bash
# bench/scale.sh [ROWS...]: the collection engine on synthetic stores of 10k, 100k and 1M rows
# (d = 1280: noisy unit-length copies of neu-surface-defects' real mobilenetv2-12-int8
# vectors), against an earlier nearlabel and LanceDB on the same vectors and queries:
#   - open time, first answer in process, steady queries/s exact and indexed (bench/scale_store)
#   - `nearlabel classify STORE photo.jpg` as a whole process: wall time and peak RSS, median of
#     5, through the index and --exact
#   - `nearlabel serve STORE`: seconds from start to the first classify answered
#   - BASELINE_NEARLABEL=path: the same commands of an earlier build (format 2: run on a copy of
#     each store without the change log), which loads every vector before answering
#   - LanceDB 0.31.0 (npm, bench/lancedb): open, first answer, flat and IVF-PQ queries/s and
#     recall@10 on the same queries; whole-process time of one query. LANCEDB=0 skips it;
#     IVF-PQ only up to LANCEDB_IVF_MAX_ROWS (100000: its build took 503 s there)
# SCALE_DIR (default /tmp/nearlabel-scale) keeps the stores between runs; 1M rows take ~19 GB
# there (store, segment, index, LanceDB) and ~9 minutes to index on 2 cores the first time.
# Warm page cache: every figure is the second or later run of its command.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=("${@:-10000 100000 1000000}")
read -r -a ROWS <<< "${ROWS[*]}"
NL=$PWD/build/nearlabel
SS=$PWD/build/scale_store
DIR=${SCALE_DIR:-/tmp/nearlabel-scale}
DATA=${NEARLABEL_DATASETS:?set NEARLABEL_DATASETS (the shared datasets)}
: "${NEARLABEL_MODELS:?set NEARLABEL_MODELS (the shared models)}"
mkdir -p "$DIR"
IMG=$(ls "$DATA"/neu-surface-defects/crazing/* | sed -n 1p)
[ -f "$DIR/src.db" ] || "$NL" ingest "$DIR/src.db" "$DATA/neu-surface-defects" > /dev/null

# median_of N CMD...: runs CMD N times under /usr/bin/time; prints "WALL_S PEAK_MB" medians.
median_of() {
  local n=$1; shift
  local walls=() rss=()
  for _ in $(seq "$n"); do
    /usr/bin/time -f '%e %M' -o "$DIR/time" "$@" > /dev/null 2>&1 || true
    read -r w m < "$DIR/time"
    walls+=("$w"); rss+=("$m")
  done
  local mid=$(( n / 2 ))
  echo "$(printf '%s\n' "${walls[@]}" | sort -g | sed -n "$((mid + 1))p")" \
       "$(( $(printf '%s\n' "${rss[@]}" | sort -g | sed -n "$((mid + 1))p") / 1024 ))"
}

# first_answer_s BINARY STORE: seconds from `serve` starting to its first classify answered.
first_answer_s() {
  local t0 url=""
  t0=$(date +%s.%N)
  "$1" serve "$2" --port 0 > "$DIR/serve.out" 2> "$DIR/serve.err" &
  local pid=$!
  while [ -z "$url" ] && kill -0 $pid 2> /dev/null; do
    url=$(grep -o 'http://[^/]*' "$DIR/serve.out" 2> /dev/null | sed -n 1p || true)
    sleep 0.02
  done
  until curl -sf -F image=@"$IMG" "$url/v1/classify" > /dev/null 2>&1; do
    kill -0 $pid 2> /dev/null || { echo "serve died: $(tail -1 "$DIR/serve.err")"; return; }
    sleep 0.02
  done
  awk -v s="$t0" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }'
  kill $pid; wait $pid 2> /dev/null || true
}

# A copy of STORE an earlier nearlabel reads: format 2, no change log (same rows and index).
format2_copy() {
  cp "$1" "$2"
  /usr/bin/python3 - "$2" << 'EOF'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
for t in ("items_log_insert", "items_log_delete", "items_log_update"):
    c.execute(f"DROP TRIGGER IF EXISTS {t}")
c.execute("DROP TABLE IF EXISTS changes")
c.execute("DELETE FROM sqlite_sequence WHERE name = 'changes'")
c.execute("PRAGMA user_version = 2")
c.commit()
EOF
}

echo "bench/scale: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), d = 1280"
for n in "${ROWS[@]}"; do
  db="$DIR/s$n.db"
  if [ ! -f "$db" ]; then
    "$SS" make "$DIR/src.db" "$db" "$n"
  fi
  if ! "$NL" sql "$db" "SELECT value FROM collection WHERE key = 'index.file'" | grep -q hnsw; then
    /usr/bin/time -f "index build: %e s, peak RSS %M KB" "$NL" index build "$db" > /dev/null
  fi
  "$NL" classify "$db" "$IMG" > /dev/null 2>&1  # the first open writes the segment
  # Warm page cache for our files (this machine's disk reads ~44 MB/s: a cold 1M-row index
  # walk waits on ~1,000 random reads).
  cat "$db.vectors" "$db".hnsw-* > /dev/null
  echo "== $n rows"
  "$SS" measure "$db" --queries $(( n >= 1000000 ? 50 : 200 )) --dump "$DIR/q$n"
  read -r w m <<< "$(median_of 5 "$NL" classify "$db" "$IMG")"
  echo "nearlabel classify, index:  ${w} s wall, ${m} MB peak RSS (whole process, median of 5)"
  read -r w m <<< "$(median_of 5 "$NL" classify "$db" "$IMG" --exact)"
  echo "nearlabel classify --exact: ${w} s wall, ${m} MB peak RSS"
  echo "nearlabel serve: first classify answered $(first_answer_s "$NL" "$db") s after start"
  if [ -n "${BASELINE_NEARLABEL:-}" ]; then
    old="$DIR/s$n-format2.db"
    [ -f "$old" ] || format2_copy "$db" "$old"
    runs=$(( n >= 1000000 ? 3 : 5 ))
    read -r w m <<< "$(median_of $runs "$BASELINE_NEARLABEL" classify "$old" "$IMG")"
    echo "baseline classify, index:   ${w} s wall, ${m} MB peak RSS (median of $runs)"
    read -r w m <<< "$(median_of $runs "$BASELINE_NEARLABEL" classify "$old" "$IMG" --exact)"
    echo "baseline classify --exact:  ${w} s wall, ${m} MB peak RSS"
    echo "baseline serve: first classify answered $(first_answer_s "$BASELINE_NEARLABEL" "$old") s after start"
  fi
  if [ "${LANCEDB:-1}" != 0 ]; then
    [ -d bench/lancedb/node_modules/@lancedb ] ||
      npm ci --prefix bench/lancedb --no-audit --no-fund --loglevel=error > /dev/null
    lance="$DIR/lance$n"
    # IVF-PQ's build grows past an hour by 1M rows on 2 cores: flat only above this.
    ivf=$([ "$n" -le "${LANCEDB_IVF_MAX_ROWS:-100000}" ] && echo ivf || echo flat)
    [ -d "$lance/v.lance" ] || node bench/lancedb/scale.mjs load "$lance" "$db.vectors" $ivf 2> /dev/null
    node bench/lancedb/scale.mjs measure "$lance" "$DIR/q$n.queries" "$DIR/q$n.exact" 2> /dev/null
    modes=$([ $ivf = ivf ] && echo "ivf flat" || echo flat)
    for mode in $modes; do
      read -r w m <<< "$(median_of 3 node bench/lancedb/scale.mjs once "$lance" "$DIR/q$n.queries" $mode)"
      echo "lancedb one $mode query:  ${w} s wall, ${m} MB peak RSS (whole node process, median of 3)"
    done
  fi
done
