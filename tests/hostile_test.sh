#!/usr/bin/env bash
# Hostile and unusual input, end to end through the CLI. Each case asserts the error message
# (or that the input is accepted, for the unusual-but-valid ones) and that the store is left
# exactly as it was: same rows, embeddings, metadata and thumbnails (a fingerprint of the
# table contents), or the same bytes where the file must not be touched at all.
# Usage: hostile_test.sh NEARLABEL MAKE_TEST_IMAGES
set -u
. "$(dirname "$0")/lib.sh"
NL=${1:?usage: hostile_test.sh NEARLABEL MAKE_TEST_IMAGES}
MKIMG=${2:?usage: hostile_test.sh NEARLABEL MAKE_TEST_IMAGES}
DATA=${NEARLABEL_DATASETS:-}
if [ -z "$DATA" ] || [ -z "${NEARLABEL_MODELS:-}" ]; then
  echo "hostile_test: NEARLABEL_DATASETS / NEARLABEL_MODELS unset: skipped"; exit 77  # CTest SKIP_RETURN_CODE
fi
T=$(mktemp -d); trap 'chmod -R u+w "$T" 2>/dev/null; rm -rf "$T"' EXIT
PY=/usr/bin/python3
pass=0; fail=0; skip=0
ok()  { pass=$((pass+1)); echo "ok   - $1"; }
bad() { fail=$((fail+1)); echo "FAIL - $1"; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }
has() { grep -qF -- "$2" "$1"; }  # has FILE TEXT: fixed-string match

# Fingerprint of what a store holds (rows, embeddings, metadata, thumbnails, collection info).
fp() {
  "$PY" - "$1" <<'EOF'
import hashlib, sqlite3, sys
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
h = hashlib.sha256()
for q in ("SELECT id, sha256, source, metadata, embedding FROM items ORDER BY id",
          "SELECT id, jpeg FROM thumbnails ORDER BY id",
          # Caches classify and eval keep (calibration, rejection thresholds) are not data.
          "SELECT key, value FROM collection WHERE key NOT LIKE '%-cache/%' ORDER BY key"):
    for row in c.execute(q):
        h.update(repr(row).encode())
print(c.execute("SELECT count(*) FROM items").fetchone()[0], h.hexdigest()[:16])
EOF
}
rows() { "$NL" sql "$1" "SELECT count(*) || ' ' || count(DISTINCT sha256) FROM items" | tail -1; }

# A small store: 5 images of each of 6 neu-surface-defects classes.
for c in "$DATA"/neu-surface-defects/*/; do
  n=$(basename "$c"); mkdir -p "$T/base/$n"
  ls "$c" | head -5 | while read -r f; do cp "$c/$f" "$T/base/$n/"; done
done
"$NL" ingest "$T/s.db" "$T/base" > /dev/null 2>&1 || { echo "hostile_test: base ingest failed"; exit 1; }
FP0=$(fp "$T/s.db")
ref=$(ls "$T"/base/scratches/* | head -1)
mkdir -p "$T/img" && "$MKIMG" "$ref" "$T/img" || { echo "hostile_test: make_test_images failed"; exit 1; }

# Ingests dataset $1 into the store and checks that nothing changed and $2 was reported.
ingest_refused() {
  local name=$1 data=$2 text=$3
  "$NL" ingest "$T/s.db" "$data" > "$T/out" 2>&1; local rc=$?
  check "$name: ingest reports '$text', store unchanged" \
    "[ $rc -le 1 ] && has '$T/out' \"\$text\" && [ \"\$(fp '$T/s.db')\" = '$FP0' ]"
  [ $rc -le 1 ] && has "$T/out" "$text" || cat "$T/out"
}
# A folder dataset holding one stored image (so an ingest has something good to skip) and $@.
bad_dataset() {
  rm -rf "$T/bad"; mkdir -p "$T/bad/scratches"; cp "$ref" "$T/bad/scratches/"
  for f in "$@"; do cp "$f" "$T/bad/scratches/"; done
}

# 1. Empty, truncated and bomb images: classify names the problem; ingest skips them.
for f in empty.jpg:"empty file (0 bytes)" truncated.jpg:"truncated JPEG (no end-of-image marker)" \
         truncated.png:"cannot decode png (corrupt or truncated)" \
         bomb.png:"png declares 30000x30000 pixels, over the limit" \
         bomb.bmp:"bmp declares 30000x30000 pixels, over the limit" \
         bomb.jpg:"jpeg declares 30000x30000 pixels, over the limit"; do
  file=${f%%:*}; text=${f#*:}
  /usr/bin/time -f 'rss %M' -o "$T/rss" "$NL" classify "$T/s.db" "$T/img/$file" > "$T/out" 2>&1; rc=$?
  check "$file: classify exits 1 with '$text'" "[ $rc -eq 1 ] && has '$T/out' \"\$text\""
  bad_dataset "$T/img/$file"
  ingest_refused "$file" "$T/bad" "$file: $text"
done
check "bombs are refused before their pixels are allocated (peak RSS $(grep -o '[0-9]*' "$T/rss" | tail -1) KB < 400 MB)" \
  "[ \$(grep -o '[0-9]*' '$T/rss' | tail -1) -lt 400000 ]"

# 2. Unusual but valid images are accepted and land where their 8-bit RGB twin does.
nn() { "$NL" --json search "$T/s.db" "$1" --k 1 2>/dev/null |
       "$PY" -c 'import json,sys; n=json.load(sys.stdin)[0]["neighbors"][0]; print(n["id"], round(n["distance"], 3))'; }
want=$(nn "$T/img/rgb.jpg")
for f in cmyk.jpg deep16.png; do
  got=$(nn "$T/img/$f")
  check "$f is decoded (nearest neighbour '$got' ~ the RGB twin's '$want')" \
    "[ -n '$got' ] && [ '${got% *}' = '${want% *}' ] && awk -v a='${got#* }' -v b='${want#* }' 'BEGIN { exit !(a - b < 0.05 && b - a < 0.05) }'"
done
"$NL" classify "$T/s.db" "$T/img/tiny1x1.png" > "$T/out" 2>&1; rc=$?
check "a 1x1 image is classified (upscaled like any small image)" "[ $rc -eq 0 ] && has '$T/out' 'label = '"

# 3. Label JSON with wrong types, a 100 MB string, and metadata over 1 MiB.
A="$T/aihub"; mkdir -p "$A/원천데이터/양품/exp1" "$A/라벨링데이터/양품/exp1"
cp "$ref" "$A/원천데이터/양품/exp1/ok.jpg"
lab() { printf '%s' "$2" > "$A/라벨링데이터/양품/exp1/$1.json"; }
lab ok '{"images":[{"file_name":"ok.jpg"}],"annotations":[{"attributes":{"quality":"good"}}]}'
"$NL" ingest "$T/j.db" "$A" > /dev/null 2>&1
FPJ=$(fp "$T/j.db")
lab images_string '{"images":"ok.jpg","annotations":[]}'
lab name_number '{"images":[{"file_name":5}],"annotations":[{}]}'
lab attrs_array '{"images":[{"file_name":"ok.jpg"}],"annotations":[{"attributes":[1,2]}]}'
lab not_object '[{"images":[]}]'
lab syntax '{"images":[{"file_name":"ok.jpg"'
"$PY" -c "import sys; open(sys.argv[1],'w').write('{\"images\":[{\"file_name\":\"ok.jpg\"}],\"annotations\":[{\"attributes\":{\"note\":\"' + 'x'*(100<<20) + '\"}}]}')" "$A/라벨링데이터/양품/exp1/huge.json"
cp "$ref" "$A/원천데이터/양품/exp1/big.jpg"
"$PY" -c "import sys; open(sys.argv[1],'w').write('{\"images\":[{\"file_name\":\"big.jpg\"}],\"annotations\":[{\"attributes\":{\"note\":\"' + 'y'*(2<<20) + '\"}}]}')" "$A/라벨링데이터/양품/exp1/big.json"
"$NL" ingest "$T/j.db" "$A" > "$T/out" 2>&1; rc=$?
for want in "images_string.json: label JSON has no images[0]" \
            "name_number.json: label JSON has no images[0].file_name string" \
            "attrs_array.json: annotations[].attributes is not an object" \
            "not_object.json: label JSON is not an object" \
            "syntax.json: unreadable JSON (syntax error)" \
            "huge.json: file larger than 16777216 bytes" \
            "big.jpg: label metadata of 2097" ; do
  check "label JSON: '$want'" "has '$T/out' \"\$want\""
done
check "label JSON problems leave the store unchanged" "[ $rc -eq 0 ] && [ \"\$(fp '$T/j.db')\" = '$FPJ' ]"
echo '{"name":"x","file":"x.onnx","input":{"width":"224"},"feature":{"dims":1e30}}' > "$T/bad.card.json"
"$NL" ingest "$T/s.db" "$T/base" --model "$T/bad.card.json" > "$T/out" 2>&1; rc=$?
check "a model card with wrong types is refused with the field named, store unchanged" \
  "[ $rc -eq 1 ] && has '$T/out' '\"width\" must be a number' && [ \"\$(fp '$T/s.db')\" = '$FP0' ]"

# 4. File names with spaces, Korean, quotes and newlines, in folders and in a manifest.
W="$T/names"; mkdir -p "$W/cl ass"
cp "$ref" "$W/cl ass/a b.jpg"
cp "$T/img/cmyk.jpg" "$W/cl ass/한국어 '\"q.jpg"
cp "$T/img/deep16.png" "$W/cl ass/new
line.png"
"$NL" ingest "$T/n.db" "$W" > "$T/out" 2>&1; rc=$?
check "odd file names are ingested" "[ $rc -eq 0 ] && has '$T/out' '3 inserted'"
"$NL" --json sql "$T/n.db" "SELECT source, field(metadata, 'label') AS label FROM items ORDER BY source" > "$T/names.json" 2>&1
check "sources and labels come back byte-exact through --json" \
  "$PY - '$T/names.json' '$W' <<'EOF'
import json, sys, os
rows = json.load(open(sys.argv[1])); base = sys.argv[2]
want = sorted(os.path.join(base, 'cl ass', f) for f in os.listdir(os.path.join(base, 'cl ass')))
sys.exit(0 if [r['source'] for r in rows] == want and all(r['label'] == 'cl ass' for r in rows) else 1)
EOF"
printf 'path,label\n"cl ass/a b.jpg","say ""hi"", 안녕"\n"cl ass/new\nline.png",x\n' > "$W/m.csv"
"$NL" ingest "$T/m.db" "$W/m.csv" > "$T/out" 2>&1; rc=$?
"$NL" sql "$T/m.db" "SELECT field(metadata, 'label') FROM items ORDER BY id" > "$T/mlab" 2>&1
check "a CSV manifest with quoted commas, quotes, Korean and a newline in a name" \
  "[ $rc -eq 0 ] && has '$T/out' '2 inserted' && has '$T/mlab' 'say \"hi\", 안녕'"

# 5. Symlink loops in the dataset tree: listed once, no hang, labels from the real folders.
L="$T/loops"; mkdir -p "$L/a" "$L/b"; cp "$ref" "$L/b/"; cp "$(ls "$T"/base/crazing/* | head -1)" "$L/a/"
ln -s .. "$L/a/up"; ln -s ../b "$L/a/to_b"; ln -s "$L/a/self" "$L/a/self"
timeout 60 "$NL" ingest "$T/l.db" "$L" > "$T/out" 2>&1; rc=$?
check "symlink loops: ingest ends and reports them" \
  "[ $rc -eq 0 ] && has '$T/out' 'a/up: symlink to a directory listed already' && has '$T/out' '2 inserted'"
"$NL" sql "$T/l.db" "SELECT field(metadata,'label') || ':' || source FROM items ORDER BY 1" > "$T/out" 2>&1
check "symlink loops: each image keeps its real folder's label" "has '$T/out' 'b:$L/b/' && has '$T/out' 'a:$L/a/'"

# 6. The dataset disappears mid-ingest: rows committed so far stay, the rest is reported.
cp -r "$T/base" "$T/vanish"
"$NL" --backend opencv --infer-threads 1 ingest "$T/v.db" "$T/vanish" --batch 4 > "$T/out" 2>&1 &
pid=$!
wait_for_rows "$NL" "$T/v.db" 4 300
rm -rf "$T/vanish"
wait $pid; rc=$?
n=$(rows "$T/v.db")
check "vanished dataset: ingest finishes, reports missing files, keeps $n rows" \
  "[ $rc -eq 0 ] && has '$T/out' 'no such file' && has '$T/out' 'could not be read' && [ \"${n% *}\" = \"${n#* }\" ] && [ ${n% *} -ge 4 ]"
"$NL" sql "$T/v.db" "PRAGMA integrity_check" > "$T/out" 2>&1
check "vanished dataset: integrity_check ok" "has '$T/out' ok"
cp -r "$T/base" "$T/vanish"; "$NL" ingest "$T/v.db" "$T/vanish" > /dev/null 2>&1
check "vanished dataset: back again, the next run completes with one row per image" "[ \"\$(rows '$T/v.db')\" = '30 30' ]"

# 7. A full disk (a file size limit: SQLite gets EFBIG like ENOSPC): clear error, nothing kept
#    of the failed transaction, the store intact; with room again the ingest completes.
mkdir -p "$T/more/x"; cp "$DATA"/casting/ok_front/$(ls "$DATA"/casting/ok_front | head -1) "$T/more/x/"
ls "$DATA"/casting/def_front | head -40 | while read -r f; do cp "$DATA/casting/def_front/$f" "$T/more/x/"; done
cp "$T/s.db" "$T/full.db"; FPF=$(fp "$T/full.db")
(trap '' XFSZ; ulimit -f 64; exec "$NL" ingest "$T/full.db" "$T/more" --batch 64) > "$T/out" 2>&1; rc=$?
check "full disk: ingest exits 1 with 'cannot write ... rolled back'" \
  "[ $rc -eq 1 ] && has '$T/out' 'cannot write' && has '$T/out' 'rolled back'"
[ $rc -eq 1 ] || cat "$T/out"
check "full disk: the store is unchanged" "[ \"\$(fp '$T/full.db')\" = '$FPF' ]"
"$NL" sql "$T/full.db" "PRAGMA integrity_check" > "$T/out" 2>&1
check "full disk: integrity_check ok" "has '$T/out' ok"
"$NL" ingest "$T/full.db" "$T/more" > /dev/null 2>&1
check "full disk: with room again every image is stored once" "[ \"\$(rows '$T/full.db')\" = '71 71' ]"

# 8. Two writers at once on one store: both finish, one row per image.
("$NL" ingest "$T/two.db" "$T/base" --batch 4 > "$T/o1" 2>&1; echo $? > "$T/rc1") &
("$NL" ingest "$T/two.db" "$T/base" --batch 4 > "$T/o2" 2>&1; echo $? > "$T/rc2") &
wait
check "two writers: both exit 0, one row per image" \
  "[ \$(cat '$T/rc1') -eq 0 ] && [ \$(cat '$T/rc2') -eq 0 ] && [ \"\$(rows '$T/two.db')\" = '30 30' ]"
[ "$(cat "$T/rc1")$(cat "$T/rc2")" = 00 ] || cat "$T/o1" "$T/o2"

# 9. A store of a newer format, a damaged store, something that is not a store: clear
#    message, and the file's bytes are not changed by any command.
cp "$T/s.db" "$T/new.db"
"$PY" -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA user_version=9'); c.commit()" "$T/new.db"
cp "$T/s.db" "$T/hdr.db"; printf 'garbage!garbage!' | dd of="$T/hdr.db" bs=1 seek=0 conv=notrunc 2> /dev/null
cp "$T/s.db" "$T/pages.db"; "$PY" -c "
import sys; f=open(sys.argv[1],'r+b'); f.seek(4096*2); f.write(bytes((i*37)%256 for i in range(4096*4)))" "$T/pages.db"
cp "$ref" "$T/jpeg.db"
for case in new.db:"has store format 9, newer than this nearlabel reads (3); upgrade nearlabel" \
            hdr.db:"is not a nearlabel store" pages.db:"the store file is damaged; nothing was changed" \
            jpeg.db:"is not a nearlabel store"; do
  f=${case%%:*}; text=${case#*:}
  before=$(sha256sum < "$T/$f")
  "$NL" info "$T/$f" > "$T/o_info" 2>&1; r1=$?
  "$NL" search "$T/$f" "$ref" > "$T/o_search" 2>&1; r2=$?
  "$NL" ingest "$T/$f" "$T/base" > "$T/o_ingest" 2>&1; r3=$?
  "$NL" index build "$T/$f" > "$T/o_index" 2>&1; r4=$?
  check "$f: info/search/ingest/index build exit 1 with '$text', file bytes unchanged" \
    "[ $r1$r2$r3$r4 = 1111 ] && has '$T/o_ingest' \"\$text\" && has '$T/o_search' \"\$text\" && [ \"\$(sha256sum < '$T/$f')\" = '$before' ]"
  [ $r1$r2$r3$r4 = 1111 ] || cat "$T/o_info" "$T/o_search" "$T/o_ingest" "$T/o_index"
done
"$NL" index build "$T/none.db" > "$T/out" 2>&1; rc=$?
check "a missing store is not created by a command that needs one" "[ $rc -eq 1 ] && [ ! -e '$T/none.db' ] && has '$T/out' 'no store at'"

# 10. SQL injection through --where, --within and labels: labels are bound parameters,
#     --where runs read-only and as one expression.
inj="x'); DROP TABLE items; --"
mkdir -p "$T/inj/$inj"; cp "$ref" "$T/inj/$inj/"; cp "$(ls "$T"/base/crazing/* | head -1)" "$T/inj/$inj/"
"$NL" ingest "$T/i.db" "$T/inj" > /dev/null 2>&1
FPI=$(fp "$T/i.db")
"$NL" sql "$T/i.db" "SELECT DISTINCT field(metadata,'label') FROM items" > "$T/out" 2>&1
check "a label with quotes and SQL is stored verbatim" "has '$T/out' \"\$inj\""
"$NL" search "$T/i.db" "$ref" --k 2 --within "label=$inj" > "$T/out" 2>&1; rc=$?
check "--within with that label matches it as a value" "[ $rc -eq 0 ] && [ \$(grep -c 'DROP TABLE' '$T/out') -eq 2 ]"
"$NL" search "$T/i.db" "$ref" --k 2 --within "label=x' OR '1'='1" > "$T/out" 2>&1; rc=$?
check "--within \"label=x' OR '1'='1\" matches nothing" "[ $rc -eq 0 ] && has '$T/out' '0 nearest of 0 rows'"
for w in "1=1; DROP TABLE items" "1) ; DELETE FROM items; --" "load_extension('/tmp/x.so')" \
         "writefile('/tmp/pwn', 'x') IS NOT NULL"; do
  "$NL" search "$T/i.db" "$ref" --k 2 --where "$w" > "$T/out" 2>&1; r1=$?
  "$NL" eval "$T/i.db" --where "$w" > "$T/out2" 2>&1; r2=$?
  "$NL" delete "$T/i.db" --where "$w" > "$T/out3" 2>&1; r3=$?
  check "--where \"$w\": search, eval and delete refuse it, store unchanged" \
    "[ $r1$r2$r3 = 111 ] && grep -qE 'bad --where expression|not authorized' '$T/out' && [ \"\$(fp '$T/i.db')\" = '$FPI' ]"
  [ $r1$r2$r3 = 111 ] || cat "$T/out" "$T/out2" "$T/out3"
done
"$NL" sql "$T/i.db" "DROP TABLE items" > "$T/out" 2>&1; rc=$?
check "sql without --write refuses a write" "[ $rc -eq 1 ] && [ \"\$(fp '$T/i.db')\" = '$FPI' ]"

# ---- Round 2 (the outside probe's findings; each failed before its fix) ----
# 11. A long command line (a glob of a few hundred photos): ONNX Runtime's start-up recursed
#     once per byte of /proc/self/cmdline and died with SIGSEGV past ~29 KB.
long=$(printf './%.0s' $(seq 14500))x.jpg
"$NL" classify "$T/s.db" "$long" > "$T/out" 2>&1; rc=$?
check "a 29 KB path: classify exits 1 with a message, no crash (was 139)" "[ $rc -eq 1 ] && has '$T/out' 'x.jpg'"
pad=$(printf './%.0s' $(seq 100))
args=(); for i in $(seq 150); do args+=("$T/base/scratches/$pad$(basename "$ref")"); done
"$NL" classify "$T/s.db" "${args[@]}" > "$T/out" 2>&1; rc=$?
check "150 image paths on a 32 KB command line are all classified" \
  "[ $rc -eq 0 ] && [ \$(grep -c ' = scratches ' '$T/out') -eq 150 ]"

# 12. JSON nested 100,000 deep (200 KB) in a manifest line, an AI Hub label and an SQL
#     argument: each is a reported problem, never a crash; the other items are stored.
deep() { "$PY" -c "import sys; n=int(sys.argv[1]); print('{\"a\":' * n + '1' + '}' * n, end='')" "$1"; }
D="$T/deep"; mkdir -p "$D"; cp "$ref" "$D/ok.jpg"; cp "$(ls "$T"/base/crazing/* | head -1)" "$D/deep.jpg"
{ echo '{"path":"ok.jpg","label":"fine"}'; printf '{"path":"deep.jpg","label":"x","m":%s}\n' "$(deep 100000)"; } > "$D/m.jsonl"
"$NL" ingest "$T/deep.db" "$D/m.jsonl" > "$T/out" 2>&1; rc=$?
check "a manifest line nested 100,000 deep is a problem, the rest is stored (was 139)" \
  "[ $rc -eq 0 ] && has '$T/out' 'm.jsonl:2: JSON nested more than 200 levels' && has '$T/out' '1 inserted'"
A2="$T/aihub2"; mkdir -p "$A2/원천데이터/양품/exp1" "$A2/라벨링데이터/양품/exp1"
cp "$ref" "$A2/원천데이터/양품/exp1/ok.jpg"; cp "$(ls "$T"/base/crazing/* | head -1)" "$A2/원천데이터/양품/exp1/d1.jpg"
cp "$(ls "$T"/base/patches/* | head -1)" "$A2/원천데이터/양품/exp1/d2.jpg"
printf '%s' '{"images":[{"file_name":"ok.jpg"}],"annotations":[{"attributes":{"quality":"good"}}]}' > "$A2/라벨링데이터/양품/exp1/ok.json"
printf '{"images":[{"file_name":"d1.jpg"}],"annotations":[{"attributes":{"n":%s}}]}' "$(deep 100000)" > "$A2/라벨링데이터/양품/exp1/d1.json"
printf '{"images":[{"file_name":"d2.jpg"}],"annotations":[{"attributes":{"n":%s}}]}' "$(deep 2000)" > "$A2/라벨링데이터/양품/exp1/d2.json"
for run in 1 2; do
  "$NL" ingest "$T/deep2.db" "$A2" > "$T/out" 2>&1; rc=$?
  check "AI Hub labels nested 100,000 and 2,000 deep are problems, not an aborted ingest (run $run)" \
    "[ $rc -eq 0 ] && has '$T/out' 'd1.json: JSON nested more than 200' && has '$T/out' 'd2.json: JSON nested more than 200' && [ \"\$(rows '$T/deep2.db')\" = '1 1' ]"
  [ $rc -eq 0 ] || cat "$T/out"
done
echo "SELECT field('$(deep 100000)', 'a')" > "$T/deep.sql"
"$NL" sql "$T/s.db" < "$T/deep.sql" > "$T/out" 2>&1; rc=$?
check "field() of a 100,000-deep object is an SQL error (was 139)" "[ $rc -eq 1 ] && has '$T/out' 'JSON nested more than 200'"

# 13. A stored embedding with one flipped exponent bit, and one holding NaN: left out of every
#     answer with a warning (it was everyone's nearest neighbour), found by `nearlabel check`.
cp "$T/s.db" "$T/flip.db"
"$PY" - "$T/flip.db" <<'EOF2'
import sqlite3, struct, sys
c = sqlite3.connect(sys.argv[1])
for rid, mutate in ((3, lambda v: v[:5] + [struct.unpack('<f', struct.pack('<I', struct.unpack('<I', struct.pack('<f', v[5]))[0] ^ (1 << 30)))[0]] + v[6:]),
                    (7, lambda v: [float('nan')] + v[1:])):
    b = c.execute('SELECT embedding FROM items WHERE id = ?', (rid,)).fetchone()[0]
    v = list(struct.unpack('<%df' % (len(b) // 4), b))
    c.execute('UPDATE items SET embedding = ? WHERE id = ?', (struct.pack('<%df' % len(v), *mutate(v)), rid))
c.commit()
EOF2
"$NL" eval "$T/s.db" > "$T/eval0" 2>&1
"$NL" eval "$T/flip.db" > "$T/out" 2>&1; rc=$?
acc0=$(grep -o 'accuracy = [0-9.]*' "$T/eval0"); acc1=$(grep -o 'accuracy = [0-9.]*' "$T/out")
check "eval with two damaged rows warns and keeps its accuracy ($acc0 -> $acc1, N 30 -> 28)" \
  "[ $rc -eq 0 ] && has '$T/out' '2 stored embeddings are damaged' && has '$T/out' 'N = 28' && [ \"\${acc1#*= }\" \\> 80 ]"
"$NL" --json search "$T/flip.db" "$(ls "$T"/base/crazing/* | tail -1)" --k 30 > "$T/out.json" 2> "$T/err"
got=$("$PY" -c 'import json,sys; print(" ".join(str(n["id"]) for n in json.load(open(sys.argv[1]))[0]["neighbors"]))' "$T/out.json")
check "a damaged row is never a neighbour (28 of 28 rows returned, not 3 or 7)" \
  "[ \$(echo $got | wc -w) -eq 28 ] && ! echo ' $got ' | grep -qE ' (3|7) ' && has '$T/err' 'nearlabel check'"
"$NL" check "$T/flip.db" > "$T/out" 2>&1; rc=$?
check "nearlabel check finds both rows and says what to do (exit 1)" \
  "[ $rc -eq 1 ] && has '$T/out' 'row 3: its length is' && has '$T/out' 'row 7: element 0 is NaN' && has '$T/out' \"id IN (3,7)\""
"$NL" check "$T/s.db" > "$T/out" 2>&1; rc=$?
check "nearlabel check passes a healthy store (exit 0)" "[ $rc -eq 0 ] && has '$T/out' 'every check passed'"

# 14. A store SQLite reports as damaged is refused for writing, nothing written: three bytes
#     of the sha256 UNIQUE index (ingest stored duplicates), an items leaf page.
cp "$T/s.db" "$T/uniq.db"; cp "$T/s.db" "$T/leaf.db"
"$PY" - "$T/uniq.db" "$T/leaf.db" <<'EOF2'
import sqlite3, sys
def page_of(path, sql):
    c = sqlite3.connect(path); c.execute('PRAGMA wal_checkpoint(TRUNCATE)')
    p = c.execute(sql).fetchone()[0]; ps = c.execute('PRAGMA page_size').fetchone()[0]; c.close(); return p, ps
p, ps = page_of(sys.argv[1], "SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_items_1'")
with open(sys.argv[1], 'r+b') as f:
    for off in (100, 300, 500):
        f.seek((p - 1) * ps + ps - off); b = f.read(1); f.seek((p - 1) * ps + ps - off); f.write(bytes([b[0] ^ 0x11]))
p, ps = page_of(sys.argv[2], "SELECT pageno FROM dbstat WHERE name = 'items' AND pagetype = 'leaf' LIMIT 1")
with open(sys.argv[2], 'r+b') as f:
    f.seek((p - 1) * ps + 3); f.write(b'\xff\xff\x00\x07')  # cell count and content start
EOF2
for f in uniq.db leaf.db; do
  before=$(sha256sum < "$T/$f")
  "$NL" ingest "$T/$f" "$T/base" > "$T/out" 2>&1; rc=$?
  check "$f: ingest refuses the damaged store, file bytes unchanged" \
    "[ $rc -eq 1 ] && has '$T/out' 'the store file is damaged; nothing was changed' && [ \"\$(sha256sum < '$T/$f')\" = '$before' ]"
  [ $rc -eq 1 ] || cat "$T/out"
done

# 15. A store on a read-only filesystem opens read-only and creates no -wal/-shm there.
RO="$T/ro"; mkdir -p "$RO"
if mount -t tmpfs -o size=64m nearlabel-ro "$RO" 2> /dev/null; then
  cp "$T/s.db" "$RO/"; mount -o remount,ro "$RO"
  "$NL" info "$RO/s.db" > "$T/o1" 2>&1; r1=$?
  "$NL" classify "$RO/s.db" "$ref" > "$T/o2" 2>&1; r2=$?
  check "a store on a read-only filesystem: info and classify work, no -wal/-shm made" \
    "[ $r1$r2 = 00 ] && has '$T/o1' 'rows         30' && [ \$(ls '$RO' | wc -l) -eq 1 ]"
  [ $r1$r2 = 00 ] || cat "$T/o1" "$T/o2"
  umount "$RO"
else
  skip=$((skip+1)); echo "skip - a store on a read-only filesystem (cannot mount a tmpfs here: skipped)"
fi

# 16. Labels and file names with terminal escape sequences are printed escaped.
E="$T/esc"; esc_label=$'red\e[31mX\e]0;pwn\a'; mkdir -p "$E/$esc_label"; cp "$ref" "$E/$esc_label/a"$'\e'"[2J.jpg"
"$NL" ingest "$T/e.db" "$E" > "$T/out" 2>&1
"$NL" classify "$T/e.db" "$E/$esc_label/a"$'\e'"[2J.jpg" > "$T/out" 2>&1; rc=$?
check "control characters in labels and names are escaped in text output" \
  "[ $rc -eq 0 ] && ! grep -q \$'\\e' '$T/out' && has '$T/out' 'red\\x1b[31mX\\x1b]0;pwn\\x07'"

# 17. A FIFO and /dev/zero given as images: refused at once, nothing read.
mkfifo "$T/fifo.jpg"
/usr/bin/time -f 'rss %M' -o "$T/rss" timeout 20 "$NL" classify "$T/s.db" "$T/fifo.jpg" /dev/zero "$ref" > "$T/out" 2>&1; rc=$?
check "a FIFO and /dev/zero are refused without blocking or reading (peak RSS $(grep -o '[0-9]*' "$T/rss" | tail -1) KB)" \
  "[ $rc -eq 1 ] && has '$T/out' 'is a FIFO, not a file' && has '$T/out' 'is a character device' && has '$T/out' 'label = scratches' && [ \$(grep -o '[0-9]*' '$T/rss' | tail -1) -lt 400000 ]"

check "the base store is unchanged by everything above" "[ \"\$(fp '$T/s.db')\" = '$FP0' ]"
echo "hostile: $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
