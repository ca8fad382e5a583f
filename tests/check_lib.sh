# The test scripts' shared checks (sourced): counters, `check NAME 'SHELL CONDITION'`, and
# `json FILE EXPR` (a Python expression over the parsed JSON `j`). Needs $PY.
pass=0; fail=0
ok()   { pass=$((pass+1)); echo "ok   - $1"; }
bad()  { fail=$((fail+1)); echo "FAIL - $1"; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }
json() { "$PY" -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }
