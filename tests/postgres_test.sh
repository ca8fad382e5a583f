#!/usr/bin/env bash
# nearlabel on a real PostgreSQL 15 server: a throw-away cluster (initdb in a temporary
# directory, a free loopback port, removed afterwards) and the cases of the shared-store design:
#   - schema migrations by `init`, clear errors, the password never printed;
#   - three ingest workers on one dataset: exactly one row per image;
#   - a worker killed with SIGKILL mid-run: the others finish, no image lost or doubled;
#   - the store answers classify/eval/sql as the SQLite store of the same images does;
#   - two servers: a POST through one is found by a search on the other within 1 s, a DELETE
#     disappears from both;
#   - the database restarted under running servers: reads go on, writes fail clearly (503),
#     then both recover without a restart.
set -u
NL=${1:?usage: postgres_test.sh NEARLABEL_BINARY}
DATA=${NEARLABEL_DATASETS:-}
if [ -z "$DATA" ] || [ -z "${NEARLABEL_MODELS:-}" ]; then
  echo "postgres_test: NEARLABEL_DATASETS / NEARLABEL_MODELS unset: skipped"; exit 77  # CTest SKIP_RETURN_CODE
fi
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/pg_cluster.sh"
PY=/usr/bin/python3
T=$(mktemp -d /tmp/nearlabel-pg.XXXXXX)
chmod 755 "$T"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null; done
  wait 2> /dev/null
  pg_cluster_remove
  rm -rf "$T"
}
trap cleanup EXIT; [ -n "${KEEP:-}" ] && trap - EXIT
. "$(dirname "$0")/check_lib.sh"
now_ms() { date +%s%3N; }

pg_cluster_start "$T/pg" || { echo "FAIL - could not start PostgreSQL"; exit 1; }
BASE="postgresql://nearlabel:s3cret-pw@127.0.0.1:$PG_PORT"   # trust auth: the password is only
newdb() { "$PG_BIN/psql" -q "$PG_URI" -c "CREATE DATABASE $1" > /dev/null; }   # to test masking
sqlv() { "$PG_BIN/psql" -qAt "postgresql://nearlabel@127.0.0.1:$PG_PORT/$1" -c "$2"; }

# Datasets: 6 x 25 NEU images (small), 6 x 60 (for the kill test).
for n in 25 60; do
  for c in "$DATA"/neu-surface-defects/*/; do
    name=$(basename "$c"); mkdir -p "$T/neu$n/$name"
    ls "$c" | head -$n | while read -r f; do cp "$c/$f" "$T/neu$n/$name/"; done
  done
done
distinct() { find "$1" -type f -exec sha256sum {} + | cut -c1-64 | sort -u | wc -l; }
W="--infer-threads 1"

# 1. Schema, errors, masking.
newdb s1
"$NL" init "$BASE/s1" > "$T/init1" 2>&1
"$NL" init "$BASE/s1" > "$T/init2" 2>&1
check "init applies the migrations, then finds the schema up to date" \
  "grep -q 'schema version 1 (applied 1 migration)' '$T/init1' && grep -q 'up to date' '$T/init2'"
check "the password is masked in what init prints" "grep -q 'nearlabel:\*\*\*@' '$T/init1' && ! grep -q s3cret '$T/init1'"
"$NL" info "postgresql://nearlabel:s3cret-pw@127.0.0.1:1/none" > "$T/e1" 2>&1
check "an unreachable server is a clear error, password masked" \
  "grep -q 'cannot connect to PostgreSQL at postgresql://nearlabel:\*\*\*@127.0.0.1:1/none' '$T/e1' && ! grep -q s3cret '$T/e1'"
newdb empty
"$NL" info "$BASE/empty" > "$T/e2" 2>&1
check "a database without the schema: 'nearlabel init' is suggested" "grep -q 'nearlabel init' '$T/e2'"

# 2. Three workers at once on one dataset.
newdb three
for i in 1 2 3; do
  "$NL" --json $W ingest "$BASE/three" "$T/neu25" --batch 8 --threads 1 > "$T/w$i.json" 2> "$T/w$i.err" &
  PIDS+=($!)
done
wait "${PIDS[@]}"; PIDS=()
rows=$(sqlv three "SELECT count(*) FROM items")
want=$(distinct "$T/neu25")
sum=$("$PY" -c "import json; print(sum(json.load(open('$T/w%d.json' % i))['inserted'] for i in (1,2,3)))")
check "three workers: one row per distinct image ($rows of $want), inserts add up ($sum)" \
  "[ '$rows' = '$want' ] && [ '$sum' = '$want' ]"
check "three workers: every job done, each worker did some" \
  "[ \"\$(sqlv three \"SELECT count(*) FROM ingest_jobs WHERE state <> 'done'\")\" = 0 ] && [ \"\$(sqlv three 'SELECT count(DISTINCT worker) FROM ingest_jobs')\" = 3 ]"
check "no worker printed the password" "! grep -q s3cret $T/w*.json $T/w*.err"
check "ids and change ids are dense and in step" \
  "[ \"\$(sqlv three \"SELECT count(*) = max(change_id) AND count(*) = (SELECT count(*) FROM items) FROM changes WHERE op = 'I'\")\" = t ]"

# 3. One of three workers killed with SIGKILL mid-run.
newdb killed
for i in 1 2 3; do
  "$NL" $W ingest "$BASE/killed" "$T/neu60" --batch 4 --threads 1 > "$T/k$i.out" 2>&1 &
  PIDS+=($!)
done
victim=${PIDS[0]}
for _ in $(seq 600); do
  n=$(sqlv killed "SELECT count(*) FROM ingest_jobs WHERE worker LIKE '%:$victim'" 2> /dev/null || echo 0)
  [ "${n:-0}" -ge 8 ] && break
  sleep 0.05
done
kill -9 "$victim"
wait "${PIDS[1]}"; r1=$?; wait "${PIDS[2]}"; r2=$?
wait "$victim" 2> /dev/null; PIDS=()
rows=$(sqlv killed "SELECT count(*) FROM items")
want=$(distinct "$T/neu60")
check "killed worker had committed some batches before SIGKILL" "[ \"\$(sqlv killed \"SELECT count(*) FROM ingest_jobs WHERE worker LIKE '%:$victim'\")\" -gt 0 ]"
check "after a SIGKILL the others finish: exit 0, one row per image ($rows of $want)" \
  "[ $r1 = 0 ] && [ $r2 = 0 ] && [ '$rows' = '$want' ]"
check "after a SIGKILL: no job left pending, none failed" \
  "[ \"\$(sqlv killed \"SELECT count(*) FROM ingest_jobs WHERE state <> 'done'\")\" = 0 ]"
# Every image's content is stored: compare the stored checksums with the files'.
sqlv killed "SELECT sha256 FROM items ORDER BY 1" > "$T/stored.sha"
find "$T/neu60" -type f -exec sha256sum {} + | cut -c1-64 | sort -u > "$T/files.sha"
check "after a SIGKILL: the stored checksums are exactly the dataset's" "cmp -s '$T/stored.sha' '$T/files.sha'"
"$NL" ingest "$BASE/killed" "$T/neu60" > "$T/again" 2>&1
check "re-running the ingest adds nothing" "grep -q ' 0 inserted' '$T/again'"

# 4. The same answers as a SQLite store of the same images.
# PostgreSQL stores are not centred (RewriteEmbeddings is SQLite's), so neither is this one.
"$NL" ingest "$T/s.db" "$T/neu25" --centre off > "$T/sqlite_ingest.out" 2>&1
"$NL" --json eval "$T/s.db" > "$T/eval_sqlite.json" 2> "$T/eval_sqlite.err"
"$NL" --json eval "$BASE/three" > "$T/eval_pg.json" 2> "$T/eval_pg.err"
check "eval: PostgreSQL and SQLite stores agree" \
  "[ -s '$T/eval_pg.json' ] && [ \"\$(json '$T/eval_pg.json' \"j['accuracy'], j['confusion']\")\" = \"\$(json '$T/eval_sqlite.json' \"j['accuracy'], j['confusion']\")\" ]"
IMG=$(ls "$DATA"/neu-surface-defects/scratches/* | tail -1)   # not in the stores
"$NL" --json classify "$T/s.db" "$IMG" > "$T/c_sqlite.json" 2> "$T/c_sqlite.err"
"$NL" --json classify "$BASE/three" "$IMG" > "$T/c_pg.json" 2> "$T/c_pg.err"
check "classify: same label and neighbours' labels" \
  "[ -s '$T/c_pg.json' ] && [ \"\$(json '$T/c_pg.json' \"j[0]['label'], [n['label'] for n in j[0]['neighbors']]\")\" = \"\$(json '$T/c_sqlite.json' \"j[0]['label'], [n['label'] for n in j[0]['neighbors']]\")\" ]"
"$NL" --json classify "$T/s.db" --reject "$IMG" > "$T/r_sqlite.json" 2> "$T/r_sqlite.err"
"$NL" -v --json classify "$BASE/three" --reject "$IMG" > "$T/r_pg1.json" 2> "$T/r_pg1.err"
"$NL" -v --json classify "$BASE/three" --reject "$IMG" > "$T/r_pg2.json" 2> "$T/r_pg2.err"
reject_of() { json "$1" "j[0]['label'], round(j[0]['reject_threshold'], 4)"; }
check "classify --reject: PostgreSQL calibrates, caches and agrees with SQLite" \
  "[ -s '$T/r_pg2.json' ] && [ \"\$(reject_of '$T/r_pg1.json')\" = \"\$(reject_of '$T/r_sqlite.json')\" ] && [ \"\$(reject_of '$T/r_pg2.json')\" = \"\$(reject_of '$T/r_sqlite.json')\" ] && grep -q 'calibrated (leave-one-out) and cached' '$T/r_pg1.err' && grep -q 'from the store.s cache' '$T/r_pg2.err'"
"$NL" sql "$BASE/three" "SELECT field(metadata, 'label') AS l, count(*) FROM items WHERE metadata->>'label' = 'crazing' GROUP BY 1" > "$T/sql1" 2>&1
check "sql: jsonb operators and field() work" "grep -q 'crazing *25' '$T/sql1'"
"$NL" sql "$BASE/three" "DELETE FROM items" > "$T/sql2" 2>&1
check "sql: read-only unless --write" "grep -q 'read-only' '$T/sql2' && [ \"\$(sqlv three 'SELECT count(*) FROM items')\" -gt 0 ]"
"$NL" classify "$BASE/three" "$IMG" --where "1=1); DELETE FROM items; SELECT (1" > "$T/sql3" 2>&1
check "a --where expression cannot smuggle a second statement" \
  "grep -q 'bad --where' '$T/sql3' && [ \"\$(sqlv three 'SELECT count(*) FROM items')\" -gt 0 ]"

# 5. Two servers on one database.
serve() {  # serve NAME [options]: starts a server on a free port, sets URL_NAME
  local name=$1; shift
  "$NL" serve "$BASE/three" --port 0 "$@" > "$T/serve_$name.out" 2> "$T/serve_$name.err" &
  PIDS+=($!)
  for _ in $(seq 200); do
    u=$(grep -o 'http://[^/]*' "$T/serve_$name.out" 2> /dev/null | head -1)
    [ -n "$u" ] && curl -s -o /dev/null "$u/healthz" && { eval "URL_$name=$u"; return 0; }
    sleep 0.1
  done
  return 1
}
serve A --token t0ken && serve B || bad "servers did not start"
NEW=$(ls "$DATA"/casting/ok_front/* | head -1)
visible_on_b() {  # visible_on_b ID TIMEOUT_MS: polls B's search for ID; prints the ms it took
  local start; start=$(now_ms)
  while [ $(($(now_ms) - start)) -lt "$2" ]; do
    curl -s -F image=@"$3" "$URL_B/v1/search?k=1" | grep -q "\"id\":$1[,}]" && { echo $(($(now_ms) - start)); return 0; }
    sleep 0.02
  done
  return 1
}
code=$(curl -s -o "$T/post.json" -w '%{http_code}' -H 'Authorization: Bearer t0ken' -F image=@"$NEW" -F label=casting "$URL_A/v1/items")
id=$(json "$T/post.json" "j.get('id')")
ms=$(visible_on_b "$id" 1000 "$NEW")
check "a POST through server A (code $code, id $id) is found by a search on B within 1 s (${ms:-never} ms)" \
  "[ '$code' = 201 ] && [ -n '$ms' ]"
mkdir -p "$T/extra/casting"
ls "$DATA"/casting/ok_front/* | sed -n 2,6p | while read -r f; do cp "$f" "$T/extra/casting/"; done
"$NL" $W ingest "$BASE/three" "$T/extra" > "$T/extra.out" 2>&1
check "rows another process ingests reach both servers" \
  "sleep 1.5; [ \"\$(curl -s $URL_A/v1/stats | $PY -c 'import json,sys; print(json.load(sys.stdin)[\"rows\"])')\" = \"\$(sqlv three 'SELECT count(*) FROM items')\" ] && [ \"\$(curl -s $URL_B/v1/stats | $PY -c 'import json,sys; print(json.load(sys.stdin)[\"rows\"])')\" = \"\$(sqlv three 'SELECT count(*) FROM items')\" ]"
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H 'Authorization: Bearer t0ken' "$URL_A/v1/items/$id")
check "a DELETE through A disappears from B" \
  "[ '$code' = 200 ] && sleep 1 && [ \"\$(curl -s -o /dev/null -w '%{http_code}' $URL_B/v1/items/$id)\" = 404 ]"

# 5b. A node with a cache directory, down during 1,000 changes, catches up from the change
# its segment and index hold instead of reloading the table and rebuilding the graph.
serve C --cache "$T/cacheC" || bad "server C did not start"
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2> /dev/null
check "the node cache holds the segment and the index" \
  "ls '$T/cacheC' | grep -q '\.vectors$' && ls '$T/cacheC' | grep -q '\.hnsw-[0-9]*-[0-9]*$'"
for round in 1 2 3 4 5 6 7 8 9 10; do  # 10 x (50 inserted + 50 deleted) = 1,000 changes
  "$NL" sql --write "$BASE/three" "INSERT INTO items (source, sha256, metadata, embedding) SELECT source || '#$round', sha256 || '#$round', metadata, embedding FROM items WHERE source NOT LIKE '%#%' ORDER BY id LIMIT 50" > /dev/null
  [ $round -gt 1 ] && "$NL" sql --write "$BASE/three" "DELETE FROM items WHERE source LIKE '%#$((round - 1))'" > /dev/null
done
"$NL" sql --write "$BASE/three" "DELETE FROM items WHERE source LIKE '%#10'" > /dev/null
t0=$(now_ms)
serve C --cache "$T/cacheC" || bad "server C did not restart"
until curl -sf -F image=@"$IMG" "$URL_C/v1/classify" > "$T/c_cached.json"; do sleep 0.02; done
restart_ms=$(($(now_ms) - t0))
curl -s "$URL_C/v1/stats" > "$T/c_stats.json"
check "restarted after 1,000 changes, it answers caught up in ${restart_ms} ms (< 5,000) from its cache" \
  "[ $restart_ms -lt 5000 ] && [ \"\$(curl -s $URL_C/v1/stats | $PY -c 'import json,sys; j=json.load(sys.stdin); print(j[\"rows\"], j[\"index_rows\"] > 0, j[\"index_lag\"])')\" = \"\$(sqlv three 'SELECT count(*) FROM items') True 500\" ] && ! grep -q 'index built' '$T/serve_C.err'"
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2> /dev/null

# 6. The database restarted (and down for a while) under running servers.
pg_cluster_stop
check "database down: B still answers searches from its rows" \
  "[ \"\$(curl -s -o /dev/null -w '%{http_code}' -F image=@'$IMG' $URL_B/v1/search?k=3)\" = 200 ]"
code=$(curl -s -o "$T/down.json" -w '%{http_code}' -H 'Authorization: Bearer t0ken' -F image=@"$IMG" -F label=x "$URL_A/v1/items")
check "database down: a write is a clear 503 error" \
  "[ '$code' = 503 ] && grep -qi 'PostgreSQL' '$T/down.json' && ! grep -q s3cret '$T/down.json'"
pg_cluster_up
THIRD=$(ls "$DATA"/casting/def_front/* | head -1)
code=000
for _ in $(seq 50); do
  code=$(curl -s -o "$T/post2.json" -w '%{http_code}' -H 'Authorization: Bearer t0ken' -F image=@"$THIRD" -F label=casting "$URL_A/v1/items")
  [ "$code" = 201 ] && break
  sleep 0.2
done
id2=$(json "$T/post2.json" "j.get('id')")
ms=$(visible_on_b "$id2" 10000 "$THIRD")
check "database back: A writes again ($code) and B, reconnected, finds the row (${ms:-never} ms)" \
  "[ '$code' = 201 ] && [ -n '$ms' ]"
check "B logged the lost connection and its recovery" \
  "grep -q 'lost the database connection' '$T/serve_B.err' && grep -q 'connection back' '$T/serve_B.err'"
check "no server printed the password" "! grep -q s3cret $T/serve_*"

# Under a sanitizer build (scripts/test.sh runs this with ThreadSanitizer) every process's
# report lands in one of these files.
check "no sanitizer report from any process" \
  "! grep -l Sanitizer $T/* 2> /dev/null"

echo "postgres_test: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
