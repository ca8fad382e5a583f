# Helpers shared by the shell tests (sourced).

# wait_for_rows NEARLABEL STORE N [TENTHS=600]: waits until STORE holds at least N rows (an
# ingest running in the background has committed that far), polling every 0.1 s.
wait_for_rows() {
  local nl=$1 db=$2 want=$3 tries=${4:-600} n i
  for i in $(seq 1 "$tries"); do
    n=$("$nl" sql "$db" "SELECT count(*) FROM items" 2>/dev/null | tail -1)
    [ -n "$n" ] && [ "$n" -ge "$want" ] 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
