#!/usr/bin/env bash
# Sync latency between two `nearlabel serve` nodes on one PostgreSQL store: 100 images POSTed
# to node A, each timed until node B's GET finds it (bench/sync_latency.cc prints p50/p99 and
# the baseline, B's own GET round trip). Starts a throw-away PostgreSQL 15 cluster.
# Usage: bench/pg_sync_latency.sh [INSERTS=100]   (after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
export NEARLABEL_MODELS=${NEARLABEL_MODELS:-$(cd ../shared/models && pwd)}
export NEARLABEL_DATASETS=${NEARLABEL_DATASETS:-$(cd ../shared/datasets && pwd)}
INSERTS=${1:-100}
. tests/pg_cluster.sh
T=$(mktemp -d /tmp/nearlabel-bench.XXXXXX)
chmod 755 "$T"
PIDS=()
trap 'kill "${PIDS[@]}" 2> /dev/null; wait 2> /dev/null; pg_cluster_remove; rm -rf "$T"' EXIT
pg_cluster_start "$T/pg" > /dev/null
sed -i 's/^fsync = off/fsync = on/' "$PG_DATA/postgresql.conf"
pg_cluster_restart
build/nearlabel ingest "$PG_URI" "$NEARLABEL_DATASETS/neu-surface-defects" > /dev/null
for node in A B; do
  build/nearlabel serve "$PG_URI" --port 0 --token bench > "$T/$node.out" 2> "$T/$node.err" &
  PIDS+=($!)
done
for node in A B; do
  for _ in $(seq 300); do grep -q http "$T/$node.out" && break; sleep 0.1; done
done
A=$(grep -o 'http://[^/]*' "$T/A.out")
B=$(grep -o 'http://[^/]*' "$T/B.out")
echo "store: 900 NEU rows; node A $A, node B $B"
mapfile -t IMAGES < <(ls "$NEARLABEL_DATASETS"/casting/def_front/* | head -"$INSERTS")
build/sync_latency "$A" "$B" bench "${IMAGES[@]}"
