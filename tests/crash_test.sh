#!/usr/bin/env bash
# Crash test: kills `nearlabel ingest` and `nearlabel index build` with SIGKILL at random
# moments, re-runs until each finishes, and checks what a user would lose:
#   - one row per image (no loss, no duplicate), same rows as a clean ingest
#   - every embedding byte-equal to the clean ingest's
#   - the index consistent with the table (covers every row, recall@10 = 1 against exact)
#   - PRAGMA integrity_check = ok, after every kill and at the end
#   - the vector segment (STORE.vectors): searches killed while it is built or caught up
#     leave a store whose next search answers as an exact scan of the table
# Usage: crash_test.sh NEARLABEL [KILLS=12] [SEED]   (KILLS: kills of ingest; each round also
#   kills up to 3 index builds)
# Needs NEARLABEL_DATASETS / NEARLABEL_MODELS (skipped when unset). Prints the figures:
#   crash: K kills (I in ingest, X in index build) over R rounds, 0 lost, 0 duplicated ...
set -u
NL=${1:?usage: crash_test.sh NEARLABEL [KILLS] [SEED]}
KILLS=${2:-12}
RANDOM=${3:-$$}
DATA=${NEARLABEL_DATASETS:-}
if [ -z "$DATA" ] || [ -z "${NEARLABEL_MODELS:-}" ]; then
  echo "crash_test: NEARLABEL_DATASETS / NEARLABEL_MODELS unset: skipped"; exit 77  # CTest SKIP_RETURN_CODE
fi
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
PY=/usr/bin/python3
fail=0
bad() { fail=$((fail+1)); echo "FAIL - $1"; }

# 150 images: 25 of each neu-surface-defects class (one byte-identical pair: 149 contents).
for c in "$DATA"/neu-surface-defects/*/; do
  n=$(basename "$c"); mkdir -p "$T/data/$n"
  ls "$c" | tail -25 | while read -r f; do cp "$c/$f" "$T/data/$n/"; done
done
# The first 60 of them, ingested and indexed before the killed runs so that every killed
# ingest also has an index to keep up to date.
mkdir -p "$T/head"
ls "$T"/data/*/* | head -60 | while read -r f; do
  n=$(basename "$(dirname "$f")"); mkdir -p "$T/head/$n"; cp "$f" "$T/head/$n/"
done

# The clean ingest, in the same order as the rounds (first 60, then all), so sources agree.
# Uncentred stores (--centre off): a centred store keeps its rows uncentred until an ingest
# completes and rewrites them on the new mean, so a killed store's rows are not the clean
# store's bytes; the rewrite is one transaction, which tests/audit_test.sh and the unit tests
# cover.
"$NL" ingest "$T/ref.db" "$T/head" --batch 8 --centre off > /dev/null 2>&1 &&
  "$NL" ingest "$T/ref.db" "$T/data" --batch 8 > /dev/null 2>&1 || { echo "crash_test: clean ingest failed"; exit 1; }
start=$(date +%s.%N)
"$NL" ingest "$T/time.db" "$T/data" --batch 8 --centre off > /dev/null 2>&1
dur_ms=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%d", (e - s) * 1000 }')
start=$(date +%s.%N)
"$NL" index build "$T/time.db" --m 16 --ef-construction 400 > /dev/null 2>&1
ix_ms=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%d", (e - s) * 1000 + 1 }')
expected=$("$NL" sql "$T/ref.db" "SELECT count(*) FROM items" | tail -1)

# Checks a store against the clean ingest; $2 = "final" also wants every row and the index.
check_store() {
  "$PY" - "$1" "$T/ref.db" "$2" 2>&1 <<'EOF'
import sqlite3, sys
db, ref, final = sys.argv[1], sys.argv[2], sys.argv[3] == "final"
c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
ok = c.execute("PRAGMA integrity_check").fetchone()[0]
if ok != "ok": sys.exit(f"integrity_check: {ok}")
n, shas = c.execute("SELECT count(*), count(DISTINCT sha256) FROM items").fetchone()
if n != shas: sys.exit(f"{n} rows for {shas} contents: duplicated rows")
c.execute("ATTACH ? AS ref", (f"file:{ref}?mode=ro",))
diff = c.execute("""SELECT count(*) FROM items a JOIN ref.items b USING (sha256)
                    WHERE a.embedding <> b.embedding OR a.source <> b.source
                       OR a.metadata <> b.metadata""").fetchone()[0]
if diff: sys.exit(f"{diff} rows differ from the clean ingest (embedding, source or metadata)")
extra = c.execute("SELECT count(*) FROM items WHERE sha256 NOT IN (SELECT sha256 FROM ref.items)").fetchone()[0]
if extra: sys.exit(f"{extra} rows the clean ingest does not have")
if final:
    want = c.execute("SELECT count(*) FROM ref.items").fetchone()[0]
    if n != want: sys.exit(f"{n} rows, the clean ingest has {want}: rows lost")
EOF
}
# The index covers the table: index check reads it (catching up what it lacks) and finds
# every exact neighbour.
check_index() {
  "$NL" index check "$1" --k 10 --sample 40 > "$T/ic" 2>&1 || { cat "$T/ic"; return 1; }
  grep -q 'recall@10 = 1.0000' "$T/ic" || { cat "$T/ic"; return 1; }
}

# Runs "$@" in the background and kills it after a random delay in [0, max_ms); returns 0 if
# it was killed while running, 1 if it had finished.
kill_at_random() {
  local max_ms=$1; shift
  "$@" > "$T/run.log" 2>&1 &
  local pid=$!
  local ms=$(( (RANDOM * 32768 + RANDOM) % max_ms ))
  sleep "$(awk -v m="$ms" 'BEGIN { printf "%.3f", m / 1000 }')"
  if kill -9 $pid 2>/dev/null; then
    wait $pid 2>/dev/null
    return 0
  fi
  wait $pid
  local rc=$?
  [ $rc -eq 0 ] || { bad "run ended with rc $rc: $*"; cat "$T/run.log"; }
  return 1
}

# KILLS kills of ingest; index builds are killed up to 3 times per round besides.
kills=0; ingest_kills=0; index_kills=0; segment_kills=0; rounds=0
while [ $ingest_kills -lt "$KILLS" ] && [ $fail -eq 0 ]; do
  rounds=$((rounds+1))
  db="$T/r$rounds.db"
  # m 16: with m 8 some builds leave a node that no walk reaches (recall@10 0.991-0.997 on
  # this data in 4 of 11 clean builds on an AVX2 machine, even at ef 1000, killed or not): the
  # graph's approximation, which would hide what this test asks, that the index holds the table.
  "$NL" ingest "$db" "$T/head" --batch 8 --centre off --index --m 16 --ef-construction 200 \
    > /dev/null 2>&1 ||
    { bad "round $rounds: ingest of the first 60 failed"; break; }
  # 1. Ingest killed at random moments until a run completes.
  while kill_at_random "$dur_ms" "$NL" ingest "$db" "$T/data" --batch 8; do
    kills=$((kills+1)); ingest_kills=$((ingest_kills+1))
    msg=$(check_store "$db" partial) || { bad "after ingest kill $kills: $msg"; break 2; }
  done
  msg=$(check_store "$db" final) || { bad "round $rounds, ingest finished: $msg"; break; }
  check_index "$db" || { bad "round $rounds: index inconsistent with the table after ingest"; break; }
  # 2. Index build (build + atomic save) killed at random moments until a run completes.
  round_index_kills=0
  while [ $round_index_kills -lt 3 ] && kill_at_random "$ix_ms" "$NL" index build "$db" --m 16 --ef-construction 400; do
    kills=$((kills+1)); index_kills=$((index_kills+1)); round_index_kills=$((round_index_kills+1))
    "$NL" search "$db" "$(ls "$T"/data/crazing/* | head -1)" --k 3 > "$T/s" 2>&1 ||
      { bad "after index-build kill $kills the store does not answer"; cat "$T/s"; break 2; }
  done
  check_index "$db" || { bad "round $rounds: index inconsistent after the index builds"; break; }
  msg=$(check_store "$db" final) || { bad "round $rounds, end: $msg"; break; }
  # 3. (After the store checks: this phase deletes rows.) Searches killed while the segment is written (from scratch, then caught up after more
  # rows arrive): the next search answers as --exact does.
  q="$(ls "$T"/data/pitted_surface/* | head -1)"
  for seg_kill in 1 2 3; do
    [ $seg_kill -eq 2 ] && rm -f "$db.vectors"
    [ $seg_kill -eq 3 ] && "$NL" delete "$db" --where "id % 5 = 0" > /dev/null 2>&1
    if kill_at_random 300 "$NL" search "$db" "$q" --k 5; then
      kills=$((kills+1)); segment_kills=$((segment_kills+1))
    fi
    "$NL" --json search "$db" "$q" --k 5 > "$T/sa" 2>&1 && "$NL" --json search "$db" "$q" --k 5 --exact > "$T/sb" 2>&1 ||
      { bad "after a segment kill the store does not answer"; cat "$T/sa"; break 2; }
    "$PY" -c 'import json,sys; a,b=(json.load(open(f))[0]["neighbors"] for f in sys.argv[1:]); sys.exit([n["id"] for n in a]!=[n["id"] for n in b])' "$T/sa" "$T/sb" ||
      { bad "after a segment kill the answer differs from --exact"; break 2; }
  done
  echo "round $rounds: $ingest_kills ingest kills, $index_kills index-build kills so far; $expected rows, embeddings equal, index recall 1"
done

echo "crash: $kills kills ($ingest_kills in ingest, $index_kills in index build, $segment_kills in searches writing the segment) over $rounds rounds" \
     "of $expected images (clean ingest ${dur_ms} ms, index build ${ix_ms} ms); $([ $fail -eq 0 ] && echo '0 lost, 0 duplicated, 0 differing embeddings, integrity ok' || echo "$fail failures")"
[ $fail -eq 0 ]
