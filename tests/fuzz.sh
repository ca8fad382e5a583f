#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan) into build-asan/ (the sanitizer build the
# unit and integration tests run from too), makes each one's seed corpus
# from the shared datasets and models, replays the crash regressions in fuzz/regressions/, then
# fuzzes every target for a bounded time. Prints one line per target:
#   fuzz: TARGET: N runs in S s (R/s), corpus C files, 0 crashes
# Usage: tests/fuzz.sh [SECONDS_PER_TARGET=60] [TARGET...]
#   NEARLABEL_FUZZ_RUNS=N fuzzes each target for N executions instead (the documented runs).
# Needs NEARLABEL_DATASETS and NEARLABEL_MODELS (as the other tests) and build/nearlabel (to
# make the small store the HTTP target serves). Findings are kept in build-asan/fuzz-findings/.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(label_json manifest vector_text model_card image_decode http_request)
DATA=${NEARLABEL_DATASETS:?set NEARLABEL_DATASETS}
: "${NEARLABEL_MODELS:?set NEARLABEL_MODELS}"
NL=build/nearlabel
B=${NEARLABEL_ASAN_BUILD:-build-asan}

if ! grep -q 'NEARLABEL_FUZZ:BOOL=ON' $B/CMakeCache.txt 2> /dev/null; then
  rm -rf $B  # a gcc sanitizer build from before: reconfigure with clang
  CC=clang CXX=clang++ cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNEARLABEL_FUZZ=ON > /dev/null
fi
cmake --build $B -j"${NEARLABEL_JOBS:-2}" --target fuzzers

# ---- seed corpora, from the shared data (never committed) ----
S=$B/fuzz-seeds
if [ ! -f $S/.done-2 ]; then  # -2: the deep-nesting and oversized-request seeds
  set +o pipefail  # `ls | head` ends ls early
  rm -rf $S; mkdir -p $S/{label_json,manifest,vector_text,model_card,image_decode,http_request}
  ls "$DATA"/magnetic-tile-aihub/*/라벨링데이터/*/*/*.json | head -40 | while read -r f; do cp "$f" $S/label_json/; done
  for d in "$DATA"/*/MANIFEST.tsv; do head -30 "$d" > "$S/manifest/$(basename "$(dirname "$d")").tsv"; done
  cp models/*.card.json $S/model_card/
  for c in casting/ok_front neu-surface-defects/scratches cifar-10/cat caltech-101/Faces; do
    ls "$DATA/$c" 2>/dev/null | head -5 | while read -r f; do cp "$DATA/$c/$f" "$S/image_decode/${c//\//_}_$f"; done
  done
  ls "$DATA"/fashion-mnist/*/*.png | head -10 | while read -r f; do cp "$f" $S/image_decode/; done
  # A small store for the HTTP target: 2 images of each neu-surface-defects class.
  rm -rf $B/fuzz-data; mkdir -p $B/fuzz-data
  for c in "$DATA"/neu-surface-defects/*/; do
    n=$(basename "$c"); mkdir -p "$B/fuzz-data/$n"
    ls "$c" | head -2 | while read -r f; do cp "$c/$f" "$B/fuzz-data/$n/"; done
  done
  rm -f $B/fuzz-store.db*
  $NL ingest $B/fuzz-store.db $B/fuzz-data > /dev/null
  # Real vectors as to_vector text (the first 16 dimensions of stored embeddings, and one whole).
  $NL sql $B/fuzz-store.db "SELECT from_vector(embedding) FROM items LIMIT 1" | tail -1 > $S/vector_text/whole
  for i in 1 2 3 4 5; do
    $NL sql $B/fuzz-store.db "SELECT from_vector(embedding) FROM items WHERE id = $i" | tail -1 |
      cut -d, -f1-16 | sed 's/$/]/' > $S/vector_text/v$i
  done
  printf '[1, 2.5, -3e-2]' > $S/vector_text/small
  /usr/bin/python3 - "$S/http_request" "$(ls "$DATA"/fashion-mnist/sandal/*.png | head -1)" <<'EOF'
import sys
out, png = sys.argv[1], open(sys.argv[2], 'rb').read()
def req(name, head, body=b''):
    open(f'{out}/{name}', 'wb').write(head.encode() + b'\r\n' + body)
def form(fields, boundary='XyZ'):
    b = b''
    for k, v, fn in fields:
        disp = f'form-data; name="{k}"' + (f'; filename="{fn}"' if fn else '')
        b += f'--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n'.encode() + v + b'\r\n'
    return b + f'--{boundary}--\r\n'.encode()
req('root', 'GET / HTTP/1.1\r\nHost: x\r\n')
req('health', 'GET /healthz HTTP/1.1\r\nHost: x\r\n')
req('stats', 'GET /v1/stats HTTP/1.1\r\nHost: x\r\n')
req('items', 'GET /v1/items?label=scratches&offset=1&limit=3 HTTP/1.1\r\nHost: x\r\n')
req('item', 'GET /v1/items/3 HTTP/1.1\r\nHost: x\r\n')
req('thumb', 'GET /v1/items/2/thumbnail HTTP/1.1\r\nHost: x\r\n')
req('delete', 'DELETE /v1/items/5 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz-token\r\n')
b = form([('image', png, 'a b.png'), ('k', b'3', None), ('vote', b'weighted', None)])
req('classify', f'POST /v1/classify?within=label%3Dscratches HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {len(b)}\r\n', b)
req('search_raw', f'POST /v1/search?k=2 HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(png)}\r\n', png)
b = form([('image', png, 'x.png'), ('label', b'sandal', None), ('metadata', b'{"part":"p1"}', None)])
req('add', f'POST /v1/items HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz-token\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {len(b)}\r\n', b)
# Round 2: metadata nested past the limit, a NUL in within, a chunked body, an oversized
# request line and header block (the server's command line: what a client controls most).
deep = b'{"a":' * 5000 + b'1' + b'}' * 5000
b = form([('image', png, 'x.png'), ('label', b'sandal', None), ('metadata', deep, None)])
req('add_deep', f'POST /v1/items HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz-token\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {len(b)}\r\n', b)
req('within_nul', f'POST /v1/search?within=label%3Dx%00y HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(png)}\r\n', png)
chunks = b''.join(b'%x\r\n' % len(png[i:i + 700]) + png[i:i + 700] + b'\r\n' for i in range(0, len(png), 700)) + b'0\r\n\r\n'
req('chunked', 'POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n', chunks)
req('long_line', 'GET /v1/items?label=' + 'x' * 100000 + ' HTTP/1.1\r\nHost: x\r\n')
req('many_headers', 'GET /healthz HTTP/1.1\r\nHost: x\r\n' + ''.join(f'X-{i}: {"y" * 40}\r\n' for i in range(2000)))
EOF
  # Deep nesting for the JSON parsers (SQLite's own limit is 1,000; ours is 200).
  /usr/bin/python3 - "$S" <<'EOF'
import sys
s = sys.argv[1]
for n in (199, 201, 5000, 40000):
    inner = '{"a":' * n + '1' + '}' * n
    open(f'{s}/label_json/deep{n}.json', 'w').write('{"images":[{"file_name":"x.jpg"}],"annotations":[{"attributes":{"n":%s}}]}' % inner)
    open(f'{s}/manifest/deep{n}.jsonl', 'w').write('{"path":"a.jpg","label":"x"}\n{"path":"b.jpg","m":%s}\n' % inner)
    open(f'{s}/model_card/deep{n}.card.json', 'w').write('{"name":"x","m":%s}' % inner)
EOF
  touch $S/.done-2
  set -o pipefail
fi

# The HTTP target writes to its store: give every run a fresh copy.
export NEARLABEL_FUZZ_STORE=$B/fuzz-run.db
fresh_store() { rm -f $B/fuzz-run.db*; cp $B/fuzz-store.db $B/fuzz-run.db; }

# ONNX Runtime's own process-lifetime allocations are not leaks of ours (see the file).
export LSAN_OPTIONS="suppressions=$PWD/fuzz/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
limit=(-max_total_time="$SECS")
[ -n "${NEARLABEL_FUZZ_RUNS:-}" ] && limit=(-runs="$NEARLABEL_FUZZ_RUNS")

status=0
for t in "${TARGETS[@]}"; do
  bin=$B/${t}_fuzzer
  mkdir -p $B/fuzz-corpus/$t $B/fuzz-findings/$t
  if [ "$t" = http_request ]; then fresh_store; fi
  # 1. Every input that once crashed a target still passes.
  if [ -d fuzz/regressions/$t ] && [ -n "$(ls fuzz/regressions/$t)" ]; then
    if ! $bin fuzz/regressions/$t/* > $B/fuzz-findings/$t/regressions.log 2>&1; then
      echo "fuzz: $t: a regression input fails again (see $B/fuzz-findings/$t/regressions.log)"
      status=1; continue
    fi
  fi
  # 2. Bounded fuzzing. -rss_limit_mb: a decompression bomb that got through would show here.
  log=$B/fuzz-findings/$t/last-run.log
  set +e
  start=$(date +%s)
  $bin "${limit[@]}" -timeout=20 -rss_limit_mb=2560 -max_len=262144 -print_final_stats=1 \
    -artifact_prefix=$B/fuzz-findings/$t/ $B/fuzz-corpus/$t $S/$t > "$log" 2>&1
  rc=$?
  set -e
  took=$(( $(date +%s) - start ))
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  secs=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  files=$(ls $B/fuzz-corpus/$t | wc -l)
  if [ $rc -ne 0 ]; then
    echo "fuzz: $t: CRASH after $runs runs (rc $rc); input and log in $B/fuzz-findings/$t/"
    grep -m3 -E 'ERROR|SUMMARY|runtime error' "$log" || true
    status=1
  else
    echo "fuzz: $t: $runs runs in $took s ($secs/s), corpus $files files, 0 crashes"
  fi
done
exit $status
