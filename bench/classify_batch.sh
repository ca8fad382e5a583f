#!/usr/bin/env bash
# Batch classify against its baseline, in the same run: `classify STORE DIR --out results.csv`
# over N images (make_image_variants of a shared dataset, plus a few planted bad files) versus
# `ingest` of the same images with the same model (the pipeline's own rate: read, decode,
# embed, store). Prints both rates, their ratio, peak RSS, and the result file's accounting
# (one row per image, every problem a row). Runs alternate; medians of REPS.
# Usage: bench/classify_batch.sh [BUILD_DIR] [N] [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
N=${2:-10000}
REPS=${3:-3}
DATA=${NEARLABEL_DATASETS:-$(cd ../shared/datasets && pwd)}
export NEARLABEL_MODELS=${NEARLABEL_MODELS:-$(cd ../shared/models && pwd)}
MODEL=${MODEL:-mobilenetv2-12-int8}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
NL="$BUILD/nearlabel"

"$BUILD/make_image_variants" "$DATA/caltech-101" "$T/new" "$N" > /dev/null
printf 'truncated' > "$T/new/bad-1.jpg"; head -c 2000 "$(find "$T/new" -name '*.jpg' | sed -n 1p)" > "$T/new/bad-2.jpg"
images=$(find "$T/new" -type f | wc -l)
"$NL" ingest "$T/store.db" "$DATA/caltech-101" --model "$MODEL" > /dev/null
cat "$T"/new/*/* > /dev/null  # warm the page cache for both commands alike
printf 'classify_batch: %s, %d image files (%d planted bad) against a %s-row store (caltech-101); %s; %d cores\n' \
  "$MODEL" "$images" 2 "$("$NL" sql "$T/store.db" "SELECT count(*) FROM items" | tail -1)" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(nproc)"

run() {  # run NAME CMD...: appends "seconds peak_kb" to $T/NAME
  local name=$1; shift
  /usr/bin/time -f '%e %M' -o "$T/t" "$@" > "$T/$name.out" 2> "$T/$name.err" || true
  tail -1 "$T/t" >> "$T/$name"  # (time's first line may be "Command exited with ...")
}
for rep in $(seq "$REPS"); do
  rm -f "$T/ingest.db"*
  run ingest "$NL" ingest "$T/ingest.db" "$T/new" --model "$MODEL"
  run classify "$NL" classify "$T/store.db" "$T/new" --out "$T/results.csv"
  printf '  rep %d: ingest %s s, classify %s s\n' "$rep" "$(tail -1 "$T/ingest" | cut -d' ' -f1)" \
    "$(tail -1 "$T/classify" | cut -d' ' -f1)"
done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ing_s=$(cut -d' ' -f1 "$T/ingest" | median); cls_s=$(cut -d' ' -f1 "$T/classify" | median)
ing_kb=$(cut -d' ' -f2 "$T/ingest" | median); cls_kb=$(cut -d' ' -f2 "$T/classify" | median)
/usr/bin/python3 - "$T/results.csv" "$images" "$ing_s" "$cls_s" "$ing_kb" "$cls_kb" "$T/ingest.out" << 'EOF'
import csv, re, sys
path, images, ing_s, cls_s, ing_kb, cls_kb, ingest_out = sys.argv[1:]
rows = list(csv.DictReader(open(path, newline='')))
errors = [r for r in rows if r['error']]
images, ing_s, cls_s = int(images), float(ing_s), float(cls_s)
print(f"  results.csv: {len(rows)} rows for {images} image files: {len(rows) - len(errors)} labelled, "
      f"{len(errors)} problems ({'; '.join(sorted(set(r['error'][:40] for r in errors)))})")
stored = int(re.search(r'(\d+) inserted', open(ingest_out).read()).group(1))
print(f"  ingest (baseline):  {ing_s:7.1f} s, {images / ing_s:6.1f} images/s ({stored} stored), peak RSS {int(ing_kb) / 1024:6.1f} MiB")
print(f"  classify DIR --out: {cls_s:7.1f} s, {images / cls_s:6.1f} images/s, peak RSS {int(cls_kb) / 1024:6.1f} MiB")
print(f"  classify / ingest throughput: {ing_s / cls_s:.2f}x (target >= 0.9x; RSS target <= 500 MiB)")
EOF
