#!/usr/bin/env bash
# Peak resident memory of `nearlabel ingest` at 1,000 and at 10,000 images (derived from a
# shared dataset by make_image_variants), against the 1 GiB budget: memory must stay flat as
# the dataset grows, because the pipeline's buffers are bounded.
# Usage: bench/ingest_memory.sh [BUILD_DIR] [SRC_DATASET]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
SRC=${2:-${NEARLABEL_DATASETS:-../shared/datasets}/caltech-101}
export NEARLABEL_MODELS=${NEARLABEL_MODELS:-$(cd ../shared/models && pwd)}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
printf 'ingest_memory: model %s, source %s\n' "${MODEL:-mobilenetv2-12-int8}" "$SRC"
for n in 1000 10000; do
  "$BUILD/make_image_variants" "$SRC" "$T/img$n" "$n" > /dev/null
  /usr/bin/time -f '%M %e' -o "$T/time$n" "$BUILD/nearlabel" ingest "$T/s$n.db" "$T/img$n" \
    --model "${MODEL:-mobilenetv2-12-int8}" > "$T/out$n"
  read -r kb secs < "$T/time$n"
  rows=$("$BUILD/nearlabel" sql "$T/s$n.db" "SELECT count(*) FROM items" | tail -1)
  printf '  %6d images: %5d rows stored, peak RSS %6.1f MiB (budget 1024 MiB), %.1f s, %.1f images/s\n' \
    "$n" "$rows" "$(echo "$kb / 1024" | bc -l)" "$secs" "$(echo "$rows / $secs" | bc -l)"
  rm -rf "$T/img$n"
done
