#!/usr/bin/env bash
# Anomaly scoring latency per image, end to end through the CLI (decode, patch map, projection,
# nearest-patch search over the bank), on the shared magnetic-tile data.
# Usage: bench/anomaly_score.sh path/to/nearlabel [N_IMAGES]
# Ingests magnetic-tile into a temporary store, fits the default anomaly model on MT_Free, then
# times `anomaly score` on 1 image and on N+1 images in the same script: the difference / N is
# the per-image cost; the 1-image run is the baseline (process start, store, model, bank load).
set -eu
NL=${1:?usage: anomaly_score.sh NEARLABEL [N]}
N=${2:-40}
DATA=${NEARLABEL_DATASETS:?set NEARLABEL_DATASETS}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
"$NL" ingest "$T/m.db" "$DATA/magnetic-tile" > /dev/null
"$NL" --json anomaly fit "$T/m.db" --normal "field(metadata,'label')='MT_Free'" > "$T/fit.json"
mapfile -t imgs < <(ls -d "$DATA"/magnetic-tile/MT_*/* | head -$((N + 1)))
t() { local s e; s=$(date +%s.%N); "$NL" anomaly score "$T/m.db" "$@" > /dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
one=$(t "${imgs[0]}"); many=$(t "${imgs[@]}")
echo "bank: $(grep -o '"bank_patches": [0-9]*' "$T/fit.json"), $(grep -o '"bank_bytes": [0-9]*' "$T/fit.json")"
echo "anomaly score, 1 image (baseline: start + store + model + bank): $(echo "$one * 1000" | bc) ms"
echo "anomaly score, $((N + 1)) images: $(echo "$many * 1000" | bc) ms"
echo "per additional image: $(echo "scale=1; ($many - $one) * 1000 / $N" | bc) ms (target < 100 ms)"
