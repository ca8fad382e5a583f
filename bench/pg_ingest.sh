#!/usr/bin/env bash
# Ingest into PostgreSQL with 1 and 2 workers beside the SQLite ingest of the same dataset, in
# one run on one machine, plus the embedding-format comparison (bytea vs real[]) that chose
# the store's column type. Starts a throw-away PostgreSQL 15 cluster (tests/pg_cluster.sh).
# Each worker prints how its time split between embedding and the database (claim, insert,
# commit): the per-batch database overhead.
# Usage: bench/pg_ingest.sh [DATASET=$NEARLABEL_DATASETS/neu-surface-defects] [WORKERS=2]
#   (after scripts/setup.sh; on a 2-core machine 2 workers share the cores: no speed-up is
#   expected, the point is that they divide the work without loss or duplication)
set -euo pipefail
cd "$(dirname "$0")/.."
export NEARLABEL_MODELS=${NEARLABEL_MODELS:-$(cd ../shared/models && pwd)}
export NEARLABEL_DATASETS=${NEARLABEL_DATASETS:-$(cd ../shared/datasets && pwd)}
DATASET=${1:-$NEARLABEL_DATASETS/neu-surface-defects}
WORKERS=${2:-2}
. tests/pg_cluster.sh
T=$(mktemp -d /tmp/nearlabel-bench.XXXXXX)
chmod 755 "$T"
trap 'pg_cluster_remove; rm -rf "$T"' EXIT
pg_cluster_start "$T/pg" > /dev/null
# Durable like production (the test cluster turns fsync off).
sed -i 's/^fsync = off/fsync = on/' "$PG_DATA/postgresql.conf"
pg_cluster_restart
psql() { "$PG_BIN/psql" -qAt "$@"; }
n=$(find "$DATASET" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' -o -iname '*.bmp' \) | wc -l)
echo "dataset: $DATASET ($n images), $(nproc) cores"

rate() {  # rate NAME SECONDS ROWS
  printf "  %-24s %6.1f s  %7.1f images/s\n" "$1" "$2" "$(echo "$3 / $2" | bc -l)"
}
s=$(date +%s.%N)
build/nearlabel ingest "$T/s.db" "$DATASET" > "$T/sqlite.out"
e=$(date +%s.%N)
rows=$(build/nearlabel sql "$T/s.db" "SELECT count(*) FROM items" | tail -1)
echo "baseline:"
rate "SQLite, 1 process" "$(echo "$e - $s" | bc)" "$rows"

for w in 1 "$WORKERS"; do
  psql "$PG_URI" -c "CREATE DATABASE w$w" 2> /dev/null
  uri="postgresql://nearlabel@127.0.0.1:$PG_PORT/w$w"
  build/nearlabel init "$uri" > /dev/null
  s=$(date +%s.%N)
  for i in $(seq "$w"); do
    build/nearlabel ingest "$uri" "$DATASET" > "$T/w$w.$i.out" 2>&1 &
  done
  wait
  e=$(date +%s.%N)
  rows=$(psql "$uri" -c "SELECT count(*) FROM items")
  dup=$(psql "$uri" -c "SELECT count(*) - count(DISTINCT sha256) FROM items")
  echo "PostgreSQL, $w worker(s) (rows $rows, duplicates $dup):"
  rate "wall clock" "$(echo "$e - $s" | bc)" "$rows"
  grep -h "job '" "$T"/w$w.*.out | sed 's/^ */    /'
done
echo
build/pg_embedding_format "$PG_URI" 20000 1280 2>&1 | grep -v NOTICE
