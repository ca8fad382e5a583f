#!/usr/bin/env bash
# End-to-end tests of the data audit, embedding options and calibrated confidence on a small
# copy of neu-surface-defects: planted byte-identical and re-encoded copies in a query set are
# all found by `audit --queries`; labels moved to the wrong class come first among the label
# findings; the HTML report has a thumbnail for every finding; the store records its
# embedding options and refuses rows made otherwise; eval prints the calibration error and
# classify a calibrated confidence.
# Usage: audit_test.sh path/to/nearlabel path/to/make_test_images
set -u
NL=${1:?usage: audit_test.sh NEARLABEL_BINARY MAKE_TEST_IMAGES}
MKIMG=${2:?usage: audit_test.sh NEARLABEL_BINARY MAKE_TEST_IMAGES}
DATA=${NEARLABEL_DATASETS:-}
if [ -z "$DATA" ] || [ -z "${NEARLABEL_MODELS:-}" ]; then
  echo "audit_test: NEARLABEL_DATASETS / NEARLABEL_MODELS unset: skipped"; exit 77
fi
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok()   { pass=$((pass+1)); echo "ok   - $1"; }
bad()  { fail=$((fail+1)); echo "FAIL - $1"; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }
py() { /usr/bin/python3 -c "$1"; }

# The store: 15 images of each class; the queries: 2 byte-identical copies and 3 re-encoded
# copies (JPEG quality 95 through OpenCV, and a PNG of the same pixels) of stored images,
# beside 12 images the store does not hold.
SRC="$DATA/neu-surface-defects"
for c in "$SRC"/*/; do
  name=$(basename "$c"); mkdir -p "$T/store/$name" "$T/queries/$name"
  ls "$c" | sort | tail -15 | while read -r f; do cp "$c/$f" "$T/store/$name/"; done
  ls "$c" | sort | head -2 | while read -r f; do cp "$c/$f" "$T/queries/$name/"; done
done
planted=()
i=0
for f in $(ls "$T"/store/*/*.jpg | sort | awk 'NR % 17 == 3' | head -5); do
  cls=$(basename "$(dirname "$f")")
  if [ $i -lt 2 ]; then
    cp "$f" "$T/queries/$cls/identical_$i.jpg"; planted+=("identical_$i.jpg")
  else
    mkdir -p "$T/variants_$i"
    "$MKIMG" "$f" "$T/variants_$i" > /dev/null 2>&1 || { echo "audit_test: make_test_images failed"; exit 1; }
    if [ $i -lt 4 ]; then
      cp "$T/variants_$i/rgb.jpg" "$T/queries/$cls/reencoded_$i.jpg"; planted+=("reencoded_$i.jpg")
    else
      cp "$T/variants_$i/deep16.png" "$T/queries/$cls/png_$i.png"; planted+=("png_$i.png")
    fi
  fi
  i=$((i+1))
done

"$NL" ingest "$T/s.db" "$T/store" > "$T/ingest" 2>&1
check "ingest with the card's embedding options centres the new store" \
  "grep -q 'centred 90 rows on their mean' '$T/ingest'"
"$NL" info "$T/s.db" > "$T/info" 2>&1
check "info shows the recorded embedding options" \
  "grep -q 'embedding    {\"centre\":true,\"flip_average\":true,\"power\":0.5,\"resize\":\"direct\"}; rows centred' '$T/info'"
"$NL" ingest "$T/s.db" "$T/store" --flip-average off > "$T/mismatch" 2>&1; rc=$?
check "ingest with other options is refused (exit 1) with what differs" \
  "[ $rc -eq 1 ] && grep -q 'not comparable' '$T/mismatch'"
check "... and the store still holds its 90 rows" \
  "[ \"\$(\"$NL\" sql '$T/s.db' 'SELECT count(*) FROM items' | tail -1)\" = 90 ]"

# 1. Leakage: every planted copy is found, the fresh images are not.
"$NL" --json audit "$T/s.db" --queries "$T/queries" > "$T/leak.json" 2> "$T/leak.err"; rc=$?
check "audit --queries exits 0" "[ $rc -eq 0 ]"
for p in "${planted[@]}"; do
  check "audit --queries finds the planted copy $p" \
    "py 'import json,sys; l=json.load(open(\"$T/leak.json\"))[\"leakage\"][\"leaked\"]; sys.exit(0 if any(x[\"query\"].endswith(\"/$p\") for x in l) else 1)'"
done
check "the byte-identical copies are reported as identical, the others as near" \
  "py 'import json,sys; k=json.load(open(\"$T/leak.json\"))[\"leakage\"]; sys.exit(0 if k[\"identical\"]==2 and k[\"near\"]>=3 else 1)'"
check "no query the store does not hold is called a copy" \
  "py 'import json,sys; l=json.load(open(\"$T/leak.json\"))[\"leakage\"][\"leaked\"]; sys.exit(0 if len(l)==5 else 1)'"
# The re-encoded copies' distances, for bench/README's note on --near.
py "import json; l=json.load(open('$T/leak.json'))['leakage']['leaked']; print('audit_test: planted copy distances', sorted(round(x['distance'],5) for x in l))"

# 2. Label errors: three images moved to another class's folder come first.
cp -r "$T/store" "$T/noisy"
moved=()
for pair in "crazing:inclusion" "patches:scratches" "pitted_surface:crazing"; do
  from=${pair%%:*}; to=${pair##*:}
  f=$(ls "$T/noisy/$from" | sort | sed -n 4p)
  mv "$T/noisy/$from/$f" "$T/noisy/$to/$f"; moved+=("$f")
done
"$NL" ingest "$T/n.db" "$T/noisy" > /dev/null 2>&1
"$NL" --json audit "$T/n.db" > "$T/labels.json" 2>&1
for f in "${moved[@]}"; do
  check "audit ranks the mislabelled $f among the first 6 label findings" \
    "py 'import json,sys; l=json.load(open(\"$T/labels.json\"))[\"label_issues\"][:6]; sys.exit(0 if any(x[\"source\"].endswith(\"/$f\") for x in l) else 1)'"
done
"$NL" audit "$T/n.db" --show 3 > "$T/labels.txt" 2>&1
check "audit text lists label errors, near duplicates and outliers" \
  "grep -q '^likely label errors' '$T/labels.txt' && grep -q '^near-duplicate groups' '$T/labels.txt' && grep -q '^outliers' '$T/labels.txt'"

# 3. The HTML report: a thumbnail for every finding.
"$NL" audit "$T/s.db" --queries "$T/queries" --report "$T/audit.html" > /dev/null 2>&1
check "the audit report has the 5 leaked queries, each with two thumbnails" \
  "py 'import re,sys; h=open(\"$T/audit.html\").read(); f=re.findall(r\"data-kind=\\\"leak\\\"><div class=\\\"imgs\\\">(.*?)</div></div>\", h); sys.exit(0 if len(f)==5 and all(x.count(\"data:image/jpeg\")==2 for x in f) else 1)'"

# 4. Bad input: clear errors, nothing written.
"$NL" audit "$T/missing.db" > "$T/err1" 2>&1; rc=$?
check "audit of a missing store fails (exit 1) and says so" "[ $rc -eq 1 ] && grep -q 'no store at' '$T/err1'"
"$NL" audit "$T/s.db" --near 2 > "$T/err2" 2>&1; rc=$?
check "audit --near outside [0, 1] is refused" "[ $rc -ne 0 ] && grep -q 'near' '$T/err2'"
"$NL" audit "$T/s.db" --label nosuchfield > "$T/err3" 2>&1; rc=$?
check "audit of a field no row has fails with the field's name" "[ $rc -eq 1 ] && grep -q nosuchfield '$T/err3'"

# 5. Calibrated confidence.
"$NL" eval "$T/s.db" -k 5 > "$T/eval" 2>&1
check "eval prints the expected calibration error before and after" \
  "grep -qE '^confidence: expected calibration error [0-9.]+ as the vote.s share, [0-9.]+ calibrated' '$T/eval'"
img=$(ls "$T"/queries/scratches/*.jpg | head -1)
"$NL" classify "$T/s.db" "$img" > "$T/cls" 2>&1
check "classify says its confidence is calibrated" "grep -q 'calibrated, k=5' '$T/cls'"
check "the fitted calibration is cached in the store" \
  "[ \"\$(\"$NL\" sql '$T/s.db' \"SELECT count(*) FROM collection WHERE key LIKE 'calibration-cache/%'\" | tail -1)\" = 1 ]"
"$NL" --json classify "$T/s.db" "$img" --confidence vote > "$T/vote.json" 2>&1
check "classify --confidence vote gives the vote's share" \
  "py 'import json,sys; r=json.load(open(\"$T/vote.json\"))[0]; sys.exit(0 if not r[\"confidence_calibrated\"] and r[\"confidence\"]==r[\"vote_share\"] else 1)'"

echo "audit_test: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
