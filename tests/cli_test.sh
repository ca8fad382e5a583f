#!/usr/bin/env bash
# End-to-end tests of the nearlabel CLI on small copies of the shared datasets:
# idempotent ingest, kill -9 and resume, bad inputs reported per file, model mismatch,
# classify/search/sql/info, exit codes, ONNX Runtime loading and fallback.
# Usage: cli_test.sh path/to/nearlabel [path/to/libfake_onnxruntime_old.so]
set -u
. "$(dirname "$0")/lib.sh"
NL=${1:?usage: cli_test.sh NEARLABEL_BINARY [FAKE_OLD_ORT_LIB]}
FAKE_ORT=${2:-}
DATA=${NEARLABEL_DATASETS:-}
if [ -z "$DATA" ] || [ -z "${NEARLABEL_MODELS:-}" ]; then
  echo "cli_test: NEARLABEL_DATASETS / NEARLABEL_MODELS unset: skipped"; exit 77  # CTest SKIP_RETURN_CODE
fi
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok()   { pass=$((pass+1)); echo "ok   - $1"; }
bad()  { fail=$((fail+1)); echo "FAIL - $1"; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }
rows() { "$NL" sql "$1" "SELECT count(*) || ' ' || count(DISTINCT sha256) FROM items" | tail -1; }

# A 60-image folder dataset: 10 per class of neu-surface-defects.
mkdir -p "$T/small"
for c in "$DATA"/neu-surface-defects/*/; do
  name=$(basename "$c"); mkdir -p "$T/small/$name"
  ls "$c" | tail -10 | while read -r f; do cp "$c/$f" "$T/small/$name/"; done
done

# 1. Ingest, then ingest again: no new rows.
"$NL" ingest "$T/a.db" "$T/small" > "$T/out1" 2>&1; rc=$?
check "first ingest exits 0" "[ $rc -eq 0 ]"
check "first ingest inserts 60" "grep -q '60 inserted' '$T/out1'"
"$NL" ingest "$T/a.db" "$T/small" > "$T/out2" 2>&1
check "second ingest inserts nothing" "grep -q '0 inserted, 60 already stored' '$T/out2'"
check "store holds 60 distinct rows" "[ \"$(rows "$T/a.db")\" = '60 60' ]"

# 2. Classify, search, eval, sql, info.
img=$(ls "$T"/small/scratches/* | head -1)
"$NL" classify "$T/a.db" "$img" --k 3 > "$T/cls" 2>&1
check "classify labels a stored scratch image 'scratches'" "grep -q 'label = scratches' '$T/cls'"
"$NL" --json search "$T/a.db" "$img" --k 2 > "$T/srch" 2>&1
check "search --json puts the image itself first at distance ~0" \
  "/usr/bin/python3 -c 'import json,sys; r=json.load(open(\"$T/srch\"))[0][\"neighbors\"]; sys.exit(0 if len(r)==2 and r[0][\"distance\"]<1e-4 else 1)'"
"$NL" eval "$T/a.db" > "$T/eval" 2>&1
check "eval prints N and accuracy" "grep -qE '^N = 60, correct = [0-9]+, accuracy' '$T/eval'"
"$NL" classify "$T/a.db" "$img" --within label=crazing --k 1 > "$T/within" 2>&1
check "classify --within restricts neighbours" "grep -q 'label = crazing' '$T/within'"
"$NL" info "$T/a.db" > "$T/info" 2>&1
check "info names the model" "grep -q 'mobilenetv2-12-int8' '$T/info'"
echo "SELECT vector_dims(embedding) FROM items LIMIT 1;" | "$NL" sql "$T/a.db" > "$T/sql" 2>&1
check "sql reads statements from stdin" "grep -q '^1280' '$T/sql'"
"$NL" sql "$T/a.db" "DELETE FROM items" > "$T/del" 2>&1; rc=$?
check "sql is read-only by default" "[ $rc -eq 1 ] && [ \"$(rows "$T/a.db")\" = '60 60' ]"

# 3. A different model on the same store is refused, nothing written.
"$NL" ingest "$T/a.db" "$T/small" --model squeezenet1.1 > "$T/mm" 2>&1; rc=$?
check "model mismatch exits 1 with a reason" "[ $rc -eq 1 ] && grep -q 'holds embeddings of model' '$T/mm'"

# 4. Exit codes: usage errors are 2, missing store is 1.
"$NL" eval > /dev/null 2>&1; check "usage error exits 2" "[ $? -eq 2 ]"
"$NL" info "$T/none.db" > /dev/null 2>&1; check "missing store exits 1" "[ $? -eq 1 ]"
"$NL" ingest "$T/never.db" "$T/small" --model no-such-model > /dev/null 2>&1; rc=$?
check "ingest with an unknown model exits 1 and creates no store" "[ $rc -eq 1 ] && [ ! -e '$T/never.db' ]"

# 5. Kill -9 mid-ingest, then resume: exactly one row per image.
mkdir -p "$T/big"
for c in "$DATA"/neu-surface-defects/*/; do
  name=$(basename "$c"); mkdir -p "$T/big/$name"
  ls "$c" | tail -25 | while read -r f; do cp "$c/$f" "$T/big/$name/"; done
done
# The slow backend on one thread keeps the ingest running long enough to be killed mid-way.
"$NL" --backend opencv --infer-threads 1 ingest "$T/k.db" "$T/big" --batch 8 > /dev/null 2>&1 &
pid=$!
wait_for_rows "$NL" "$T/k.db" 16 600
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
before=$(rows "$T/k.db")
check "kill -9 left a partial store (${before% *} of 150 rows)" "[ ${before% *} -ge 16 ] && [ ${before% *} -lt 150 ]"
"$NL" ingest "$T/k.db" "$T/big" --batch 8 > "$T/resume" 2>&1
check "resumed ingest completes with one row per image" "[ \"$(rows "$T/k.db")\" = '150 150' ]"
"$NL" sql "$T/k.db" "PRAGMA integrity_check" > "$T/ic" 2>&1
check "integrity_check ok after the kill" "grep -q '^ok' '$T/ic'"

# 6. Bad inputs: each reported on one line, the rest ingested.
A="$T/aihub/Sample"
for q in 양품 불량; do mkdir -p "$A/원천데이터/$q/exp1" "$A/라벨링데이터/$q/exp1"; done
i=0
for f in $(ls "$DATA"/magnetic-tile-aihub/Sample/라벨링데이터/양품/exp1/*.json | head -4); do
  id=$(basename "$f" .json)
  cp "$f" "$A/라벨링데이터/양품/exp1/"
  cp "$DATA"/magnetic-tile-aihub/Sample/원천데이터/양품/exp1/$id.jpg "$A/원천데이터/양품/exp1/"
done
good=$(ls "$A/원천데이터/양품/exp1/" | head -1)
mk_label() { printf '{"images":[{"id":1,"file_name":"%s"}],"annotations":[{"id":1,"image_id":1,"attributes":{"part":"exp1","quality":"defect"}}]}' "$1" > "$A/라벨링데이터/불량/exp1/$2.json"; }
printf '\xff\xd8\xff\xe0garbage that is no jpeg at all\xff\xd9' > "$A/원천데이터/불량/exp1/corrupt.jpg"; mk_label corrupt.jpg corrupt
/usr/bin/python3 -c "import zlib,struct,sys
def chunk(t,d): return struct.pack('>I',len(d))+t+d+struct.pack('>I',zlib.crc32(t+d)&0xffffffff)
raw=b''.join(b'\x00'+bytes(range(64))*3 for _ in range(64))
png=b'\x89PNG\r\n\x1a\n'+chunk(b'IHDR',struct.pack('>IIBBBBB',64,64,8,2,0,0,0))+chunk(b'IDAT',zlib.compress(raw))+chunk(b'IEND',b'')
open(sys.argv[1],'wb').write(png[:len(png)//2])" "$A/원천데이터/불량/exp1/truncated.png"; mk_label truncated.png truncated
mk_label nowhere.jpg missing
echo "just some notes" > "$A/원천데이터/불량/exp1/notes.txt"; mk_label notes.txt notes
"$NL" ingest "$T/bad.db" "$T/aihub" > "$T/badout" 2>&1; rc=$?
check "ingest with bad inputs exits 0" "[ $rc -eq 0 ]"
check "corrupt JPEG reported" "grep -q 'corrupt.jpg: cannot decode jpeg' '$T/badout'"
check "truncated PNG reported" "grep -q 'truncated.png: cannot decode png' '$T/badout'"
check "label pointing at a missing image reported" "grep -q \"missing.json: label points at a missing image 'nowhere.jpg'\" '$T/badout'"
check "non-image file reported" "grep -q 'notes.txt: not an image' '$T/badout'"
check "the good images were ingested" "[ \"$(rows "$T/bad.db")\" = '4 4' ]"
"$NL" sql "$T/bad.db" "SELECT quality, category1, category2 FROM aihub_labels LIMIT 1" > "$T/view" 2>&1
check "aihub_labels view exposes quality and categories" "grep -q 'good  *양품  *exp1' '$T/view'"

# 7. ONNX Runtime: the default backend, the fallback when the library is missing, an explicit
#    request that cannot be met, a library outside the supported versions, many images at once.
"$NL" -v classify "$T/a.db" "$img" > "$T/ort" 2>&1
check "default backend is onnxruntime and -v prints timings" \
  "grep -q 'on onnxruntime' '$T/ort' && grep -q 'answer (read, decode' '$T/ort'"
ONNXRUNTIME_LIB=/nonexistent/libonnxruntime.so.1 "$NL" classify "$T/a.db" "$img" --k 3 > "$T/fb" 2>&1; rc=$?
check "missing ORT library: one-line notice, OpenCV answers" \
  "[ $rc -eq 0 ] && [ \$(grep -c 'notice: ONNX Runtime not found' '$T/fb') -eq 1 ] && grep -q 'label = scratches' '$T/fb'"
ONNXRUNTIME_LIB=/nonexistent/libonnxruntime.so.1 "$NL" --backend onnxruntime classify "$T/a.db" "$img" > "$T/fb2" 2>&1; rc=$?
check "--backend onnxruntime without the library exits 1" "[ $rc -eq 1 ] && grep -q 'ONNX Runtime library not found' '$T/fb2'"
if [ -n "$FAKE_ORT" ]; then
  ONNXRUNTIME_LIB="$FAKE_ORT" "$NL" classify "$T/a.db" "$img" > "$T/old" 2>&1; rc=$?
  check "ORT 1.2.0 is refused with the supported range" \
    "[ $rc -eq 1 ] && grep -q 'ONNX Runtime 1.2.0 at .* is outside the supported range' '$T/old'"
fi
"$NL" --json classify "$T/a.db" "$T"/small/*/* > "$T/many" 2>&1
check "classify of 60 images at once labels them all" \
  "/usr/bin/python3 -c 'import json,sys; r=json.load(open(\"$T/many\")); sys.exit(0 if len(r)==60 and all(x[\"label\"] for x in r) else 1)'"

# 8. The HNSW index: build, check, search through it (same answer as --exact), delete, and a
#    save killed at every step leaves a usable store.
cp "$T/a.db" "$T/x.db"
"$NL" index build "$T/x.db" --m 8 --ef-construction 64 > "$T/ib" 2>&1; rc=$?
check "index build exits 0 and names the file" "[ $rc -eq 0 ] && grep -q 'index built over 60 rows' '$T/ib' && [ -f '$T/x.db.hnsw-1' ]"
"$NL" index check "$T/x.db" --k 5 > "$T/ic2" 2>&1
check "index check reports recall 1 on 60 rows" "grep -q 'recall@5 = 1.0000' '$T/ic2'"
"$NL" --json search "$T/x.db" "$img" --k 5 > "$T/s_idx" 2>&1
"$NL" --json search "$T/x.db" "$img" --k 5 --exact > "$T/s_ex" 2>&1
ids() { /usr/bin/python3 -c 'import json,sys; print(" ".join(str(n["id"]) for n in json.load(open(sys.argv[1]))[0]["neighbors"]))' "$1"; }
check "search through the index equals --exact" "[ -n \"\$(ids '$T/s_idx')\" ] && [ \"\$(ids '$T/s_idx')\" = \"\$(ids '$T/s_ex')\" ]"
"$NL" -v search "$T/x.db" "$img" --k 3 --within label=crazing > "$T/s_f" 2>&1
check "filtered search returns k rows of the filter through the index" \
  "grep -q 'HNSW index\\|exact scan of the filtered rows' '$T/s_f' && [ \$(grep -c ' crazing ' '$T/s_f') -eq 3 ]"
first=$(ids "$T/s_ex" | cut -d' ' -f1)
"$NL" delete "$T/x.db" --where "id = $first" > "$T/d1" 2>&1; rc=$?
check "delete removes the row and updates the index" "[ $rc -eq 0 ] && grep -q 'deleted 1 rows' '$T/d1' && grep -q 'removed 1 rows' '$T/d1'"
"$NL" --json search "$T/x.db" "$img" --k 5 > "$T/s_d" 2>&1
check "a deleted row is never returned" "! ids '$T/s_d' | grep -qw '$first' && [ \$(ids '$T/s_d' | wc -w) -eq 5 ]"
"$NL" delete "$T/x.db" > /dev/null 2>&1; check "delete without --where is a usage error" "[ $? -eq 2 ]"
"$NL" delete "$T/x.db" --where "1=1; DROP TABLE items" > /dev/null 2>&1; rc=$?
check "delete --where runs no second statement" "[ $rc -eq 1 ] && [ \"\$(rows '$T/x.db')\" = '59 59' ]"
for point in index-save:written index-save:synced index-save:renamed index-save:committed; do
  NEARLABEL_CRASH_POINT=$point "$NL" index build "$T/x.db" > /dev/null 2>&1; rc=$?
  "$NL" index check "$T/x.db" --k 5 > "$T/ck" 2>&1; rc2=$?
  "$NL" --json search "$T/x.db" "$img" --k 5 > "$T/s_k" 2>&1; rc3=$?
  check "killed at $point (rc $rc): the store and its index still answer" \
    "[ $rc -eq 137 ] && [ $rc2 -eq 0 ] && grep -q 'recall@5 = 1.0000' '$T/ck' && [ $rc3 -eq 0 ] && [ \$(ids '$T/s_k' | wc -w) -eq 5 ]"
done
"$NL" index build "$T/x.db" > /dev/null 2>&1
check "the next save removes files left by killed saves" \
  "[ \$(ls -a '$T' | grep -c 'x.db.hnsw-') -eq 1 ]"
truncate -s 1000 "$(ls "$T"/x.db.hnsw-*)"
"$NL" search "$T/x.db" "$img" --k 3 > "$T/s_c" 2>&1; rc=$?
check "a damaged index file: search says so and answers exactly" \
  "[ $rc -eq 0 ] && grep -q 'notice: searching exactly: index file .* \\(checksum\\|damaged\\|truncated\\)' '$T/s_c' && grep -q '3 nearest' '$T/s_c'"
"$NL" ingest "$T/x.db" "$T/small" > "$T/ri" 2>&1
check "the next ingest rebuilds a damaged index" "grep -q 'index: built over 60 rows' '$T/ri'"

# 9. Open set, anomaly mode, patch-aware eval (small: 30 ok / 20 defect castings).
"$NL" eval "$T/a.db" --open-set scratches > "$T/os" 2>&1; rc=$?
check "eval --open-set reports the held-out class's rejection" \
  "[ $rc -eq 0 ] && grep -qE '^scratches +10 +[0-9.]+% +25 ' '$T/os'"
"$NL" classify "$T/a.db" --reject "$img" "$DATA"/casting/ok_front/$(ls "$DATA"/casting/ok_front | head -1) > "$T/rj" 2>&1
check "classify --reject keeps a stored image and calls a casting photo unknown" \
  "grep -q 'label = scratches' '$T/rj' && grep -q 'label = unknown (nearest distance' '$T/rj'"
"$NL" -v classify "$T/a.db" --reject "$img" > "$T/rj2" 2>&1
"$NL" sql "$T/a.db" --write "UPDATE items SET metadata = json_set(metadata, '$.label', 'scratches') WHERE id = 1" > /dev/null
"$NL" -v classify "$T/a.db" --reject "$img" > "$T/rj3" 2>&1
check "classify --reject reuses its cached thresholds, and recalibrates after a relabel" \
  "grep -q 'thresholds from the store.s cache' '$T/rj2' && grep -q 'thresholds calibrated (leave-one-out) and cached' '$T/rj3'"
mkdir -p "$T/cast/ok_front" "$T/cast/def_front"
ls "$DATA"/casting/ok_front | head -60 | while read -r f; do cp "$DATA/casting/ok_front/$f" "$T/cast/ok_front/"; done
ls "$DATA"/casting/def_front | head -20 | while read -r f; do cp "$DATA/casting/def_front/$f" "$T/cast/def_front/"; done
"$NL" ingest "$T/c.db" "$T/cast" > /dev/null 2>&1
"$NL" anomaly score "$T/c.db" "$T/cast/ok_front/$(ls "$T/cast/ok_front" | head -1)" > "$T/an0" 2>&1; rc=$?
check "anomaly score before fit: exit 1, says how to fit" \
  "[ $rc -eq 1 ] && grep -q 'has no anomaly model .default. (fit one with' '$T/an0'"
"$NL" anomaly fit "$T/c.db" --normal "field(metadata,'label')='ok_front'" --holdout 0.5 > "$T/an1" 2>&1; rc=$?
check "anomaly fit on 60 normal images" \
  "[ $rc -eq 0 ] && grep -q 'fitted on 30 normal images' '$T/an1' && grep -q 'kept out    15 more' '$T/an1'"
"$NL" --json anomaly eval "$T/c.db" > "$T/an2" 2>&1; rc=$?
check "anomaly eval: AUROC of held-out normal vs defect castings above chance" \
  "[ $rc -eq 0 ] && /usr/bin/python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j[\"anomalous_images\"]==20 and j[\"normal_images\"]==15 and j[\"auroc\"]>0.6, j[\"auroc\"]' '$T/an2'"
"$NL" anomaly score "$T/c.db" "$T/cast/def_front/$(ls "$T/cast/def_front" | head -1)" --heatmap "$T/heat" > "$T/an3" 2>&1; rc=$?
check "anomaly score writes a verdict and a PNG heat map" \
  "[ $rc -eq 0 ] && grep -qE '(ANOMALOUS|normal) +$T/heat/1-' '$T/an3' && [ \"\$(head -c 4 $T/heat/1-*.png | tail -c 3)\" = PNG ]"
"$NL" anomaly score "$T/c.db" "$T/cast/def_front" --out "$T/an.csv" > /dev/null 2>&1; rc=$?
check "anomaly score DIR --out x.csv: one row per image with score, threshold and verdict" \
  "[ $rc -eq 0 ] && /usr/bin/python3 -c 'import csv,sys; r=list(csv.DictReader(open(sys.argv[1]))); assert len(r)==20 and all(float(x[\"score\"])>0 and x[\"verdict\"] in (\"normal\",\"anomalous\") and not x[\"error\"] for x in r), r[:2]' '$T/an.csv'"
"$NL" --json anomaly fit "$T/c.db" --name graph --bank-search hnsw --normal "field(metadata,'label')='ok_front'" --holdout 0.5 > "$T/an5" 2>&1; rc=$?
d=$(ls "$T/cast/def_front" | head -1)
"$NL" --json anomaly score "$T/c.db" "$T/cast/def_front/$d" > "$T/an6" 2>&1
"$NL" --json anomaly score "$T/c.db" --name graph "$T/cast/def_front/$d" > "$T/an7" 2>&1
check "anomaly fit --bank-search hnsw stores a graph that scores as the scan does (same bank)" \
  "[ $rc -eq 0 ] && grep -q '\"bank_search\": \"hnsw graph (ef 32)\"' '$T/an5' && /usr/bin/python3 -c 'import json,sys; a=json.load(open(sys.argv[1]))[0][\"score\"]; b=json.load(open(sys.argv[2]))[0][\"score\"]; assert b >= a * 0.9999 and b <= a * 1.02, (a, b)' '$T/an6' '$T/an7'"
"$NL" eval "$T/c.db" --patch-normal ok_front --show 0 > "$T/pe" 2>&1; rc=$?
check "eval --patch-normal prints the patch-aware and the global figure" \
  "[ $rc -eq 0 ] && grep -q 'patch-aware (10 most anomalous' '$T/pe' && grep -q '^global 1-NN on the same rows' '$T/pe'"
"$NL" --backend opencv anomaly score "$T/c.db" "$img" > "$T/an4" 2>&1; rc=$?
check "patch features on OpenCV DNN: a clear error" "[ $rc -eq 1 ] && grep -q 'need the ONNX Runtime backend' '$T/an4'"

# The collection engine: segment, delete/re-ingest cycles, crash points.
cp "$T/a.db" "$T/cy.db"
"$NL" index build "$T/cy.db" > /dev/null 2>&1
for cycle in 1 2 3 4 5 6; do
  "$NL" delete "$T/cy.db" --where 1 > /dev/null 2>&1 && "$NL" ingest "$T/cy.db" "$T/small" > /dev/null 2>&1
done
cyc_size=$(stat -c %s "$(ls "$T"/cy.db.hnsw-* | head -1)")
cp "$T/cy.db" "$T/fresh.db"; rm -f "$T/fresh.db.hnsw-"*
"$NL" sql "$T/fresh.db" --write "DELETE FROM collection WHERE key LIKE 'index.%'" > /dev/null
"$NL" index build "$T/fresh.db" > /dev/null 2>&1
fresh_size=$(stat -c %s "$(ls "$T"/fresh.db.hnsw-* | head -1)")
"$NL" index check "$T/cy.db" --k 5 > "$T/cyc" 2>&1
"$NL" info "$T/cy.db" > "$T/cyi" 2>&1
check "6 delete/re-ingest cycles: the index is a fresh build's size ($cyc_size vs $fresh_size bytes), recall 1, no dead entries" \
  "[ $cyc_size -le \$(( fresh_size * 12 / 10 )) ] && grep -q 'recall@5 = 1.0000' '$T/cyc' && grep -q '; 0 of 60 entries are deleted rows' '$T/cyi'"
"$NL" delete "$T/cy.db" --where "id % 4 = 0" > /dev/null 2>&1
"$NL" info "$T/cy.db" > "$T/cyi2" 2>&1
check "info shows the share of deleted entries in the index" "grep -q '15 of 60 entries are deleted rows (25.0 %)' '$T/cyi2' || grep -q 'entries are deleted rows' '$T/cyi2'"
rm -f "$T/cy.db.vectors"
NEARLABEL_CRASH_POINT=segment-write:synced "$NL" search "$T/cy.db" "$img" --k 3 > /dev/null 2>&1; rc=$?
"$NL" --json search "$T/cy.db" "$img" --k 5 > "$T/sg1" 2>&1; rc2=$?
"$NL" --json search "$T/cy.db" "$img" --k 5 --exact > "$T/sg2" 2>&1
check "killed writing the segment (rc $rc): the next search builds it and answers as --exact, no temporary file left" \
  "[ $rc -eq 137 ] && [ $rc2 -eq 0 ] && [ -f '$T/cy.db.vectors' ] && [ \"\$(ids '$T/sg1')\" = \"\$(ids '$T/sg2')\" ] && ! ls -a '$T' | grep -q 'cy.db.vectors.tmp'"
printf '\x55' | dd of="$T/cy.db.vectors" bs=1 seek=5000 conv=notrunc 2> /dev/null
"$NL" check "$T/cy.db" > "$T/chk" 2>&1; rc=$?
check "check reports a damaged segment and what to do" \
  "[ $rc -eq 1 ] && grep -q 'vector segment' '$T/chk' && grep -q 'do not match their checksum' '$T/chk' && grep -q 'rebuilds it' '$T/chk'"
printf 'garbage' | dd of="$T/cy.db.vectors" bs=1 seek=20 conv=notrunc 2> /dev/null
"$NL" search "$T/cy.db" "$img" --k 3 > "$T/sg3" 2>&1; rc=$?
check "a segment with a damaged header is reported and rebuilt" \
  "[ $rc -eq 0 ] && grep -q 'notice: vector segment rebuilt' '$T/sg3' && \"$NL\" check '$T/cy.db' > /dev/null"

echo "cli: $pass passed, $fail failed"
[ $fail -eq 0 ]
