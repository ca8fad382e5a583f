#!/usr/bin/env bash
# The Python module against the CLI, in the same run:
#   1. classify N images (make_image_variants of caltech-101) from Python, as a whole process
#      (`import nearlabel; open; classify(paths)`), versus `nearlabel classify STORE DIR --out
#      results.csv`, alternating, medians of REPS;
#   2. two Python threads classifying at once versus the same two calls one after the other,
#      and how much a pure-Python loop in the main thread runs while another thread classifies
#      (the GIL is released: near its idle rate);
#   3. vectors() of a ROWS-row store (bench/scale_store copies of a 16-d store made with the
#      test model, tests/make_tiny_model.cc): open + vectors() once the segment exists, against
#      reading the same vectors with Python's sqlite3 + numpy.frombuffer.
# Usage: bench/python_module.sh [BUILD_DIR] [N] [REPS] [ROWS]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=$(cd "${1:-build}" && pwd)
N=${2:-1000}
REPS=${3:-3}
ROWS=${4:-1000000}
DATA=${NEARLABEL_DATASETS:-$(cd ../shared/datasets && pwd)}
export NEARLABEL_MODELS=${NEARLABEL_MODELS:-$(cd ../shared/models && pwd)}
export PYTHONPATH=$BUILD/python
PY=/usr/bin/python3
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
NL="$BUILD/nearlabel"

"$BUILD/make_image_variants" "$DATA/caltech-101" "$T/new" "$N" > /dev/null
"$NL" ingest "$T/store.db" "$DATA/caltech-101" > /dev/null
cat "$T"/new/*/* > /dev/null
find "$T/new" -type f | sort > "$T/paths.txt"
printf 'python_module: %d images against a %s-row store (caltech-101), default model; %s; %d cores\n' \
  "$N" "$("$NL" sql "$T/store.db" "SELECT count(*) FROM items" | tail -1)" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(nproc)"

cat > "$T/classify.py" << 'EOF'
import sys, nearlabel
paths = open(sys.argv[2]).read().split()
results = nearlabel.open(sys.argv[1]).classify(paths)
assert len(results) == len(paths) and all(r.label for r in results)
EOF
for rep in $(seq "$REPS"); do
  /usr/bin/time -f '%e %M' -o "$T/t" "$NL" classify "$T/store.db" "$T/new" --out "$T/r.csv" 2> /dev/null
  tail -1 "$T/t" >> "$T/cli"
  /usr/bin/time -f '%e %M' -o "$T/t" "$PY" "$T/classify.py" "$T/store.db" "$T/paths.txt"
  tail -1 "$T/t" >> "$T/py"
  printf '  rep %d: CLI %s s, Python %s s\n' "$rep" "$(tail -1 "$T/cli" | cut -d' ' -f1)" \
    "$(tail -1 "$T/py" | cut -d' ' -f1)"
done
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
cli_s=$(cut -d' ' -f1 "$T/cli" | median); py_s=$(cut -d' ' -f1 "$T/py" | median)
printf '  classify %d images, whole process: CLI classify DIR --out %.2f s (baseline), Python %.2f s: %.2fx the CLI time (target <= 1.1x); peak RSS CLI %d MB, Python %d MB\n' \
  "$N" "$cli_s" "$py_s" "$(echo "$py_s / $cli_s" | bc -l)" \
  "$(( $(cut -d' ' -f2 "$T/cli" | median) / 1024 ))" "$(( $(cut -d' ' -f2 "$T/py" | median) / 1024 ))"

"$PY" - "$T/store.db" "$T/paths.txt" << 'EOF'
import sys, threading, time, nearlabel
col = nearlabel.open(sys.argv[1])
paths = open(sys.argv[2]).read().split()[:200]
col.classify(paths[:16]); col.classify(paths[0])  # embedders made, pages warm
def run():
    return [r.label for r in col.classify(paths)]
t0 = time.perf_counter(); a = run(); b = run(); sequential = time.perf_counter() - t0
out = [None, None]
def work(i): out[i] = run()
threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
t0 = time.perf_counter()
for t in threads: t.start()
for t in threads: t.join()
concurrent = time.perf_counter() - t0
assert out[0] == a and out[1] == b
def spin(seconds):
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end: n += 1
    return n
idle = spin(1.0)
done = threading.Event()
th = threading.Thread(target=lambda: (run(), done.set())); th.start()
t0 = time.perf_counter(); n = 0
while not done.is_set(): n += 1
busy_rate = n / (time.perf_counter() - t0)
th.join()
print(f"  two threads x {len(paths)} images: concurrently {concurrent:.2f} s wall, one after the other "
      f"{sequential:.2f} s (same answers); a Python loop ran at {100 * busy_rate / idle:.0f}% of its "
      f"idle rate while another thread classified (GIL released)")
EOF

# 3. vectors() at scale: a 16-d source store, copied to ROWS rows.
"$BUILD/make_tiny_model" "$T"
mkdir -p "$T/fm"; for c in "$DATA"/fashion-mnist/*/; do mkdir -p "$T/fm/$(basename "$c")"; ls "$c" | head -20 | while read -r f; do cp "$c/$f" "$T/fm/$(basename "$c")/"; done; done
"$NL" --models "$T" ingest "$T/tiny.db" "$T/fm" --model tiny-test > /dev/null
"$BUILD/scale_store" make "$T/tiny.db" "$T/big.db" "$ROWS" > /dev/null
"$NL" --models "$T" search "$T/big.db" "$(find "$T/fm" -name '*.png' | sed -n 1p)" --exact > /dev/null  # writes the segment
"$PY" - "$T/big.db" "$T" << 'EOF'
import sqlite3, sys, time, numpy as np, nearlabel
store, models = sys.argv[1], sys.argv[2]
times = []
for _ in range(5):
    t0 = time.perf_counter()
    col = nearlabel.open(store, models=[models]); v = col.vectors(); ids = col.ids()
    times.append(time.perf_counter() - t0)
t0 = time.perf_counter()
rows = sqlite3.connect(store).execute("SELECT id, embedding FROM items ORDER BY id").fetchall()
want = np.stack([np.frombuffer(b, "<f4") for _, b in rows])
sqlite_s = time.perf_counter() - t0
assert np.array_equal(v, want) and np.array_equal(ids, [i for i, _ in rows])
print(f"  vectors() of {v.shape[0]:,} rows x {v.shape[1]} dims: open + vectors() + ids() "
      f"{1000 * sorted(times)[2]:.1f} ms median of 5 (target < 100 ms), no copy; sqlite3 + "
      f"numpy.frombuffer {sqlite_s:.2f} s (baseline), equal row for row")
EOF
