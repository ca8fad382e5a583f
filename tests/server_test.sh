#!/usr/bin/env bash
# End-to-end tests of `nearlabel serve` with curl: the API answers as the CLI does (exact and
# through the HNSW index), writes need the token and change nothing without it, every bad
# request gets a JSON error with its status code, and concurrent requests all succeed.
# Usage: server_test.sh path/to/nearlabel
set -u
NL=${1:?usage: server_test.sh NEARLABEL_BINARY}
DATA=${NEARLABEL_DATASETS:-}
if [ -z "$DATA" ] || [ -z "${NEARLABEL_MODELS:-}" ]; then
  echo "server_test: NEARLABEL_DATASETS / NEARLABEL_MODELS unset: skipped"; exit 77  # CTest SKIP_RETURN_CODE
fi
PY=/usr/bin/python3
T=$(mktemp -d)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2> /dev/null; wait 2> /dev/null; rm -rf "$T"; }
trap cleanup EXIT; [ -n "${KEEP:-}" ] && trap - EXIT
. "$(dirname "$0")/check_lib.sh"

# A 120-image store: 20 per class of neu-surface-defects.
mkdir -p "$T/small"
for c in "$DATA"/neu-surface-defects/*/; do
  name=$(basename "$c"); mkdir -p "$T/small/$name"
  ls "$c" | tail -20 | while read -r f; do cp "$c/$f" "$T/small/$name/"; done
done
"$NL" ingest "$T/s.db" "$T/small" > /dev/null 2>&1 || { echo "FAIL - ingest"; exit 1; }
IMG=$(ls "$DATA"/neu-surface-defects/inclusion/* | head -1)   # not in the store

start() {  # start [serve options...]: serves $T/s.db on a free port, sets URL
  "$NL" serve "$T/s.db" --port 0 "$@" > "$T/serve.out" 2> "$T/serve.err" &
  SERVER=$!
  for _ in $(seq 100); do
    URL=$(grep -o 'http://[^/]*' "$T/serve.out" 2> /dev/null | head -1)
    [ -n "$URL" ] && return 0
    sleep 0.1
  done
  echo "server did not start: $(cat "$T/serve.err")"; return 1
}
stop() { kill "$SERVER"; wait "$SERVER"; SERVER=; }
# ids FILE: the neighbour ids of a classify/search answer (CLI --json array or API object).
ids() { json "$1" "' '.join(str(n['id']) for n in (j[0] if isinstance(j, list) else j)['neighbors'])"; }
code() { curl -s -o "$T/body" -w '%{http_code}' "$@"; }

# 1. Read-only server, exact search: the same answer as the CLI.
start || exit 1
"$NL" --json classify "$T/s.db" "$IMG" > "$T/cli.json"
curl -s -F image=@"$IMG" "$URL/v1/classify" > "$T/api.json"
check "classify over HTTP gives the CLI's label" \
  "[ \"\$(json '$T/api.json' \"j['label']\")\" = \"\$(json '$T/cli.json' \"j[0]['label']\")\" ]"
check "classify over HTTP gives the CLI's neighbours, in order" \
  "[ -n \"\$(ids '$T/api.json')\" ] && [ \"\$(ids '$T/api.json')\" = \"\$(ids '$T/cli.json')\" ]"
curl -s -H 'Content-Type: image/jpeg' --data-binary @"$IMG" "$URL/v1/search?k=3" > "$T/raw.json"
check "a raw-body search with k=3 returns 3 neighbours with thumbnails" \
  "[ \"\$(json '$T/raw.json' \"len(j['neighbors'])\")\" = 3 ] && json '$T/raw.json' \"j['neighbors'][0]['thumbnail']\" | grep -q '^/v1/items/[0-9]*/thumbnail$'"
first=$(json "$T/raw.json" "j['neighbors'][0]['id']")
check "a thumbnail is a JPEG" \
  "[ \"\$(code $URL/v1/items/$first/thumbnail)\" = 200 ] && head -c 3 '$T/body' | od -An -tx1 | grep -q 'ff d8 ff'"
"$NL" sql "$T/s.db" --write "DELETE FROM thumbnails WHERE id = $first" > /dev/null
check "a row stored without a thumbnail gets one made from its file" \
  "[ \"\$(code $URL/v1/items/$first/thumbnail)\" = 200 ] && head -c 3 '$T/body' | od -An -tx1 | grep -q 'ff d8 ff'"
curl -s -F image=@"$IMG" -F within=label=crazing "$URL/v1/search" > "$T/within.json"
check "within=label=crazing returns only crazing rows" \
  "[ \"\$(json '$T/within.json' \"sorted(set(n['label'] for n in j['neighbors']))\")\" = \"['crazing']\" ]"
check "stats counts rows and labels" \
  "curl -s $URL/v1/stats > '$T/stats' && [ \"\$(json '$T/stats' \"j['rows'], len(j['labels']), j['writable']\")\" = '120 6 False' ]"
check "healthz" "[ \"\$(code $URL/healthz)\" = 200 ]"

# 2. Bad requests: a status code and a JSON message each.
err() { json "$T/body" "j['error']['message']"; }
check "not an image: 400 and says so" \
  "[ \"\$(code -F image=@'$T/s.db' $URL/v1/classify)\" = 400 ] && err | grep -q 'not an image'"
head -c 2000 "$IMG" > "$T/trunc.jpg"
check "a truncated JPEG: 400, truncated" \
  "[ \"\$(code -F image=@'$T/trunc.jpg' $URL/v1/classify)\" = 400 ] && err | grep -qi 'truncated'"
# A PNG header declaring 30000 x 30000 pixels: refused before anything is allocated.
printf '\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x75\x30\x00\x00\x75\x30\x08\x02\x00\x00\x00\x00\x00\x00\x00' > "$T/bomb.png"
check "a decompression bomb: 413" "[ \"\$(code -F image=@'$T/bomb.png' $URL/v1/classify)\" = 413 ]"
check "an unknown field: 400 naming it" \
  "[ \"\$(code -F image=@'$IMG' -F colour=red $URL/v1/classify)\" = 400 ] && err | grep -q \"unknown field 'colour'\""
check "a bad k: 400" "[ \"\$(code -F image=@'$IMG' '$URL/v1/classify?k=abc')\" = 400 ] && err | grep -q 'k must be an integer'"
check "no image: 400" "[ \"\$(code -X POST $URL/v1/classify)\" = 400 ]"
check "an unknown item: 404" "[ \"\$(code $URL/v1/items/999999)\" = 404 ]"
check "an unknown route: 404 with JSON" "[ \"\$(code $URL/v1/nothing)\" = 404 ] && err | grep -q 'no route'"
check "without a token POST /v1/items is 401" \
  "[ \"\$(code -F image=@'$IMG' -F label=x $URL/v1/items)\" = 401 ]"
check "without a token DELETE is 401" "[ \"\$(code -X DELETE $URL/v1/items/$first)\" = 401 ]"
check "... and nothing changed" "[ \"\$(\"$NL\" sql '$T/s.db' 'SELECT count(*) FROM items' | tail -1)\" = 120 ]"

# 3. Concurrent requests: 8 clients x 5 classify requests, all 200.
for c in $(seq 8); do
  (for _ in $(seq 5); do curl -s -o /dev/null -w '%{http_code}\n' -F image=@"$IMG" "$URL/v1/classify"; done > "$T/conc.$c") &
done
wait_clients() { for _ in $(seq 300); do [ "$(cat "$T"/conc.* 2> /dev/null | wc -l)" -ge 40 ] && return; sleep 0.1; done; }
wait_clients
check "40 concurrent classify requests all succeed" "[ \"\$(cat '$T'/conc.* | grep -c '^200$')\" = 40 ]"
stop

# 4. With a token and an HNSW index: the index answers like the CLI; an added image is found
# by the next search, a deleted one is gone, and the index file catches up on exit.
"$NL" index build "$T/s.db" > /dev/null
"$NL" --json classify "$T/s.db" "$IMG" > "$T/cli_idx.json"
NEARLABEL_TOKEN=t0ken start || exit 1
curl -s -F image=@"$IMG" "$URL/v1/classify" > "$T/api_idx.json"
check "through the index: the CLI's neighbours" \
  "json '$T/api_idx.json' \"j['plan']\" | grep -q HNSW && [ \"\$(ids '$T/api_idx.json')\" = \"\$(ids '$T/cli_idx.json')\" ]"
check "a wrong token is 401" \
  "[ \"\$(code -H 'Authorization: Bearer nope' -F image=@'$IMG' -F label=x $URL/v1/items)\" = 401 ]"
NEW=$(ls "$DATA"/casting/ok_front/* | head -1)
check "with the token an image is added (201)" \
  "[ \"\$(code -H 'Authorization: Bearer t0ken' -F image=@'$NEW' -F label=casting $URL/v1/items)\" = 201 ]"
added=$(json "$T/body" "j['id']")
curl -s -F image=@"$NEW" "$URL/v1/search?k=1" > "$T/found.json"
check "the next search finds it, at distance 0" \
  "[ \"\$(json '$T/found.json' \"j['neighbors'][0]['id'], j['neighbors'][0]['label'], round(j['neighbors'][0]['distance'], 4)\")\" = \"$added casting 0.0\" ]"
check "adding it again is a duplicate (200, same id)" \
  "[ \"\$(code -H 'Authorization: Bearer t0ken' -F image=@'$NEW' -F label=casting $URL/v1/items)\" = 200 ] && [ \"\$(json '$T/body' \"j['id'], j['duplicate']\")\" = \"$added True\" ]"
check "an image without a label is refused (400)" \
  "[ \"\$(code -H 'Authorization: Bearer t0ken' -F image=@'$IMG' $URL/v1/items)\" = 400 ] && err | grep -q 'needs a label'"
check "DELETE with the token removes the row" \
  "[ \"\$(code -X DELETE -H 'Authorization: Bearer t0ken' $URL/v1/items/$first)\" = 200 ] && [ \"\$(code $URL/v1/items/$first)\" = 404 ]"
curl -s -F image=@"$IMG" "$URL/v1/search?k=120" > "$T/after.json"
check "a deleted row is never returned" "! json '$T/after.json' \"[n['id'] for n in j['neighbors']]\" | grep -qw '$first'"
stop
gen_before=$("$NL" sql "$T/s.db" "SELECT value FROM collection WHERE key = 'index.generation'" | tail -1)
"$NL" -v classify "$T/s.db" "$NEW" > "$T/after_cli" 2>&1
check "after the server's writes the next command answers through the index and finds the added row" \
  "grep -q 'HNSW index' '$T/after_cli' && grep -q '^1 *$added .*casting' '$T/after_cli'"
check "on exit the server saved no index over the store's own generation" \
  "[ \"\$(\"$NL\" sql '$T/s.db' \"SELECT value FROM collection WHERE key = 'index.generation'\" | tail -1)\" = '$gen_before' ]"
check "the store holds the added row with its thumbnail" \
  "[ \"\$(\"$NL\" sql '$T/s.db' \"SELECT count(*) FROM thumbnails WHERE id = $added\" | tail -1)\" = 1 ]"

# 5. Hostile clients (round 2): bodies and headers past every limit, slow sockets, bad text.
NEARLABEL_TOKEN=t0ken start --max-upload-mb 2 || exit 1
PORT=${URL##*:}
rss() { awk '/VmHWM/ { print $2 }' "/proc/$SERVER/status"; }  # peak resident memory
before=$(rss)
head -c 300M /dev/zero | curl -s -o "$T/body" -w '%{http_code}' -T - -H 'Content-Type: image/jpeg' \
  -X POST "$URL/v1/classify" > "$T/code"
after=$(rss)
check "a 300 MB chunked body: cut off at the limit, peak RSS grew $(( (after - before) / 1024 )) MB (< 50; was buffered whole)" \
  "[ $(( after - before )) -lt 51200 ] && curl -s '$URL/healthz' | grep -q ok"
head -c 3M /dev/zero | curl -s -o "$T/body" -w '%{http_code}' -T - -H 'Content-Type: image/jpeg' \
  -X POST "$URL/v1/classify" > "$T/code"
check "a chunked body just over the limit gets 413 with a JSON message" \
  "[ \"\$(cat '$T/code')\" = 413 ] && err | grep -q 'passed'"
"$PY" - "$PORT" > "$T/raw" <<'EOF2'
import socket, sys
port = int(sys.argv[1])
def ask(data):
    s = socket.create_connection(('127.0.0.1', port)); s.settimeout(10)
    try: s.sendall(data)
    except OSError: pass
    try: return s.recv(100).split(b'\r\n')[0].decode()
    except OSError as e: return 'error ' + str(e)
print(ask(b'GET /healthz HTTP/1.1\r\nHost: x\r\n' + b''.join(b'X-%d: %s\r\n' % (i, b'y' * 100) for i in range(20000)) + b'\r\n'))
print(ask(b'GET /' + b'a' * (8 << 20) + b' HTTP/1.1\r\nHost: x\r\n\r\n'))
EOF2
check "2 MB of headers: 431; an 8 MB request line: 414 (were read whole)" \
  "sed -n 1p '$T/raw' | grep -q ' 431 ' && sed -n 2p '$T/raw' | grep -q ' 414 '"
"$PY" - "$PORT" > "$T/slow" <<'EOF2'
import socket, sys, time, urllib.request
port = int(sys.argv[1])
slow = []
for _ in range(16):  # idle keep-alive connections after one answered request each
    s = socket.create_connection(('127.0.0.1', port)); s.sendall(b'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'); s.recv(4096); slow.append(s)
for _ in range(30):
    s = socket.create_connection(('127.0.0.1', port)); s.sendall(b'POST /v1/classify HTTP/1.1\r\nHost: x\r\n'); slow.append(s)
lat = []
end = time.time() + 5
while time.time() < end:
    for s in slow[16:]:
        s.sendall(b'X')
    t = time.time(); urllib.request.urlopen('http://127.0.0.1:%d/healthz' % port, timeout=10).read()
    lat.append(time.time() - t); time.sleep(0.1)
lat.sort(); print('%d %.3f' % (len(lat), lat[-1]))
EOF2
read -r n worst < "$T/slow"
check "30 slow sockets and 16 idle keep-alive ones: $n healthz answers, the slowest in ${worst}s (< 1 s; 20 starved 8 threads before)" \
  "[ \"$n\" -ge 20 ] && awk -v w='$worst' 'BEGIN { exit !(w < 1) }'"
check "within=label=x%00 is 400 with a plain message" \
  "[ \"\$(code -F image=@'$IMG' '$URL/v1/search?within=label=x%00')\" = 400 ] && err | grep -q 'without NUL'"
printf 'bad\xff\xfe' > "$T/badlabel"
check "a label that is not UTF-8 is 400" \
  "[ \"\$(code -H 'Authorization: Bearer t0ken' -F image=@'$NEW' -F label='<$T/badlabel' $URL/v1/items)\" = 400 ] && err | grep -q 'UTF-8'"
"$PY" -c "import sys; n=100000; open(sys.argv[1],'w').write('{\"a\":' * n + '1' + '}' * n)" "$T/deepmeta"
check "metadata nested 100,000 deep is 400 and the server lives (it crashed)" \
  "[ \"\$(code -H 'Authorization: Bearer t0ken' -F image=@'$NEW' -F metadata='<$T/deepmeta' $URL/v1/items)\" = 400 ] && err | grep -q 'nested more than 200' && [ \"\$(code $URL/healthz)\" = 200 ]"
"$PY" -c "import sys; open(sys.argv[1],'w').write('{\"label\":\"x\",\"n\":\"' + 'z' * (1100 << 10) + '\"}')" "$T/bigmeta"
check "metadata over 1 MiB is 413 (ingest's limit)" \
  "[ \"\$(code -H 'Authorization: Bearer t0ken' -F image=@'$NEW' -F metadata='<$T/bigmeta' $URL/v1/items)\" = 413 ] && err | grep -q 'over the limit of 1048576'"
curl -s -F image=@"$IMG" "$URL/v1/classify" > "$T/api.json"
check "sources are relative to the store's directory: no server path in any answer" \
  "! grep -q '$T' '$T/api.json' && [ \"\$(json '$T/api.json' \"j['neighbors'][0]['source'].count('/')\")\" = 1 ] && ! curl -s '$URL/v1/items?limit=200' | grep -q '$T'"
curl -s "$URL/metrics" > "$T/metrics"
check "GET /metrics: Prometheus text with requests by route and status, latency, queue, rows, no paths or labels" \
  "grep -q '^nearlabel_http_requests_total{route=\"POST /v1/classify\",status=\"200\"} [1-9]' '$T/metrics' && grep -q '^nearlabel_http_request_duration_seconds_bucket{le=\"+Inf\"}' '$T/metrics' && grep -q '^nearlabel_http_requests_queued 0' '$T/metrics' && grep -q '^nearlabel_rows 1[0-9][0-9]' '$T/metrics' && ! grep -qE 'crazing|$T' '$T/metrics'"
stop
start --show-paths || exit 1
curl -s -F image=@"$IMG" "$URL/v1/classify" > "$T/api.json"
check "serve --show-paths answers the stored paths" "json '$T/api.json' \"j['neighbors'][0]['source']\" | grep -q '^$T/small/'"

# 6. One answer shape: the CLI's JSON and the server's are the same for the same image and
# options (less the server's thumbnail URLs, timing and upload name), where and reject included.
same_json() {  # same_json CLI_FILE API_FILE
  $PY - "$1" "$2" << 'EOF2'
import json, sys
cli = json.load(open(sys.argv[1]))[0]; api = json.load(open(sys.argv[2]))
for n in api['neighbors']: n.pop('thumbnail')
for k in ('ms', 'image'): cli.pop(k, None); api.pop(k, None)
sys.exit(0 if cli == api else 1)
EOF2
}
"$NL" --json classify "$T/s.db" "$IMG" --k 7 --vote distance > "$T/c1.json"
curl -s -F image=@"$IMG" -F k=7 -F vote=distance "$URL/v1/classify" > "$T/a1.json"
check "classify --json and /v1/classify give the same JSON" "same_json '$T/c1.json' '$T/a1.json'"
"$NL" --json classify "$T/s.db" "$IMG" --where "id % 2 = 0" --reject > "$T/c2.json"
curl -s -F image=@"$IMG" -F 'where=id % 2 = 0' -F reject=1 "$URL/v1/classify" > "$T/a2.json"
check "... with where and reject too (thresholds and only even ids)" \
  "same_json '$T/c2.json' '$T/a2.json' && json '$T/a2.json' \"j['reject_threshold'] > 0 and all(n['id'] % 2 == 0 for n in j['neighbors'])\" | grep -q True"
check "a where that writes is 400" \
  "[ \"\$(code -F image=@'$IMG' -F 'where=1); DELETE FROM items; --' $URL/v1/classify)\" = 400 ]"
"$NL" --json search "$T/s.db" "$IMG" --within label=scratches > "$T/c3.json"
curl -s -F image=@"$IMG" -F within=label=scratches "$URL/v1/search" > "$T/a3.json"
check "search --json and /v1/search give the same JSON" "same_json '$T/c3.json' '$T/a3.json'"

# 6b. POST /v1/classify/batch: one result per image in the shared schema, a bad image is its
#     own error and the rest are answered, and the limits hold.
B1=$(ls "$DATA"/neu-surface-defects/scratches/* | head -1); B2=$(ls "$DATA"/neu-surface-defects/patches/* | head -1)
printf 'not an image' > "$T/notes.jpg"
"$NL" --json classify "$T/s.db" "$IMG" "$B1" "$B2" --k 7 --vote distance > "$T/cb.json"
curl -s -F image=@"$IMG" -F image=@"$B1" -F image=@"$T/notes.jpg" -F image=@"$B2" -F k=7 -F vote=distance \
  "$URL/v1/classify/batch" > "$T/ab.json"
check "/v1/classify/batch answers each image as classify --json does, the bad one as an error" \
  "$PY - '$T/cb.json' '$T/ab.json' << 'EOF2'
import json, sys
cli = json.load(open(sys.argv[1])); api = json.load(open(sys.argv[2]))
res = api['results']
assert api['count'] == 4 and api['failed'] == 1, api
assert res[2]['image'] == 'notes.jpg' and res[2]['error']['status'] == 400 and 'not an image' in res[2]['error']['message']
for c, a in zip(cli, [res[0], res[1], res[3]]):
    for n in a['neighbors']: n.pop('thumbnail')
    c.pop('image'); a.pop('image')
    assert c == a, (c, a)
EOF2"
check "a batch over the image limit is 413 and says the limit" \
  "[ \"\$(code \$(for _ in \$(seq 65); do printf -- '-F image=@%s ' '$IMG'; done) $URL/v1/classify/batch)\" = 413 ] && grep -q 'the limit is 64' '$T/body'"
check "a batch with no image is 400, a bad parameter is 400" \
  "[ \"\$(code -F k=3 $URL/v1/classify/batch)\" = 400 ] && [ \"\$(code -F image=@'$IMG' -F k=0 $URL/v1/classify/batch)\" = 400 ]"

# 7. Every reader sees every writer: rows another process ingests reach a running server.
stat_rows() { curl -s "$URL/v1/stats" | $PY -c 'import json,sys; print(json.load(sys.stdin)["rows"])'; }
rows0=$(stat_rows)
mkdir -p "$T/more/pitted"; ls "$DATA"/neu-surface-defects/pitted_surface/* | head -15 | xargs -I{} cp {} "$T/more/pitted/"
"$NL" ingest "$T/s.db" "$T/more" > /dev/null 2>&1
t_end=$(date +%s.%N); seen=0
for _ in $(seq 40); do
  if [ "$(stat_rows)" -gt "$rows0" ]; then
    seen=$($PY -c "import sys; print(round($(date +%s.%N) - $t_end, 3))"); break
  fi
  sleep 0.05
done
MORE=$(ls "$T"/more/pitted/* | head -1)
curl -s -F image=@"$MORE" "$URL/v1/search?k=1" > "$T/more.json"
check "rows another process ingested are served within 1 s (${seen} s; stats and search)" \
  "$PY -c 'import sys; sys.exit(0 if 0 < $seen < 1 else 1)' && json '$T/more.json' \"round(j['neighbors'][0]['distance'], 4), j['neighbors'][0]['label']\" | grep -q '0.0 pitted'"
stop

echo "server_test: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
