#!/usr/bin/env bash
# Load run of `nearlabel serve`: POST /v1/classify for SECONDS at CLIENTS concurrent clients on
# loopback (bench/serve_load.cc), and the baseline in the same script: the same image answered
# by `nearlabel classify` as a one-off command (process start, model load, answer). Then the
# hostile clients of bench/serve_hostile.py (a 1 GB chunked body, 20 slow sockets for 30 s,
# 64 keep-alive connections at 100 classify/s for 60 s); BASELINE_NEARLABEL=path/to/another
# build runs those against it too, in the same script (e.g. the cpp-httplib server).
# Usage: bench/serve_load.sh STORE IMAGE [SECONDS=30] [CLIENTS=8]   (after scripts/setup.sh)
# HOSTILE=0 skips the hostile clients.
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${1:?usage: serve_load.sh STORE IMAGE [SECONDS] [CLIENTS]}
IMAGE=${2:?usage: serve_load.sh STORE IMAGE [SECONDS] [CLIENTS]}
SECONDS_=${3:-30}
CLIENTS=${4:-8}
export NEARLABEL_MODELS=${NEARLABEL_MODELS:-../shared/models}
OUT=$(mktemp)
PID=
start() {  # start BINARY: serves $STORE on a free port; sets PID and URL
  "$1" serve "$STORE" --port 0 > "$OUT" &
  PID=$!
  for _ in $(seq 200); do grep -q http "$OUT" && break; sleep 0.1; done
  URL=$(grep -o 'http://[^/]*' "$OUT")
  echo "server: $(cat "$OUT")"
}
trap '[ -n "$PID" ] && kill $PID 2> /dev/null; rm -f "$OUT"' EXIT
start build/nearlabel
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
[ "${HOSTILE:-1}" = 1 ] || exit 0
hostile() {  # the hostile clients against the server at $URL ($PID)
  /usr/bin/python3 bench/serve_hostile.py "$URL" "$PID" "$IMAGE"
  echo "pool: 64 keep-alive connections at 100 classify/s for 60 s:"
  build/serve_load "$URL" "$IMAGE" --seconds 60 --clients 64 --rate 100 || true
}
echo "hostile clients against this build:"
hostile
kill "$PID"; wait "$PID" 2> /dev/null || true; PID=
if [ -n "${BASELINE_NEARLABEL:-}" ]; then
  echo "the same hostile clients against the baseline build $BASELINE_NEARLABEL:"
  start "$BASELINE_NEARLABEL"
  hostile
fi
