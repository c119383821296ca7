#!/usr/bin/env bash
# The paper's Table 2 at CPU scale: the same tiny model, data, steps and seed
# with different attention patterns; prints a markdown table of the bits per
# byte/dim each reaches on held-out data, and the training time.
#   scripts/table2.sh [OUT_DIR] [EVAL_TOKENS]
# Runs that already finished in OUT_DIR (default runs/table2) are reused.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/table2}"
evalTokens="${2:-262144}"
mkdir -p "$out"
bin=build/bin/sparsetx-run

run() { # name data pattern [flags...]
  local name=$1 data=$2 pattern=$3
  shift 3
  if ! grep -q "^600," "$out/$name/metrics.csv" 2>/dev/null; then
    "$bin" --pattern "patterns/$pattern.sp" --data "$data" --samples 0 \
      --out "$out/$name" "$@" train > /dev/null 2> "$out/$name.log"
  fi
  local seconds valid test
  seconds=$(awk -F, 'END { printf "%.0f", $6 }' "$out/$name/metrics.csv")
  read -r valid test < <("$bin" --out "$out/$name" --eval-tokens "$evalTokens" eval |
    awk '$1 == "valid" { v = $2 } $1 == "test" { t = $2 } END { print v, t }')
  printf '| %s | %s | %s | %s | %s | %d:%02d |\n' "$data" "$pattern" "$*" \
    "$valid" "$test" $((seconds / 60)) $((seconds % 60))
}

echo "| data | pattern | flags | valid | test | training time |"
echo "| --- | --- | --- | --- | --- | --- |"
run text-fixed gcide fixed
run text-strided gcide strided
run text-dense gcide dense
run images-strided fashion-mnist strided -D l=28
run images-dense fashion-mnist dense
