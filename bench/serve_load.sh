#!/usr/bin/env bash
# Load run of `nearlabel serve`: POST /v1/classify for SECONDS at CLIENTS concurrent clients on
# loopback (bench/serve_load.cc), and the baseline in the same script: the same image answered
# by `nearlabel classify` as a one-off command (process start, model load, answer).
# Usage: bench/serve_load.sh STORE IMAGE [SECONDS=30] [CLIENTS=8]   (after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${1:?usage: serve_load.sh STORE IMAGE [SECONDS] [CLIENTS]}
IMAGE=${2:?usage: serve_load.sh STORE IMAGE [SECONDS] [CLIENTS]}
SECONDS_=${3:-30}
CLIENTS=${4:-8}
export NEARLABEL_MODELS=${NEARLABEL_MODELS:-../shared/models}
OUT=$(mktemp)
build/nearlabel serve "$STORE" --port 0 > "$OUT" &
PID=$!
trap 'kill $PID 2> /dev/null; rm -f "$OUT"' EXIT
for _ in $(seq 200); do grep -q http "$OUT" && break; sleep 0.1; done
URL=$(grep -o 'http://[^/]*' "$OUT")
echo "server: $(cat "$OUT")"
curl -s "$URL/v1/stats" | head -c 200; echo
build/serve_load "$URL" "$IMAGE" --seconds "$SECONDS_" --clients "$CLIENTS"
best=999999
for _ in 1 2 3 4 5; do
  s=$(date +%s%N)
  build/nearlabel classify "$STORE" "$IMAGE" > /dev/null
  ms=$(( ($(date +%s%N) - s) / 1000000 ))
  [ "$ms" -lt "$best" ] && best=$ms
done
echo "baseline: nearlabel classify as a one-off command: best of 5 = $best ms per image"
