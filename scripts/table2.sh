#!/usr/bin/env bash
# The paper's Table 2 at small scale: the same model, data, steps and seed
# with different attention patterns; prints a markdown table of the bits per
# byte/dim each reaches on held-out data, and the training time.
#   scripts/table2.sh [OUT_DIR] [EVAL_TOKENS]
# Runs that already finished in OUT_DIR (default runs/table2) are reused.
# The environment picks the scale (defaults: the tiny preset on the CPU):
#   SPARSETX_RUN   the binary (build/bin/sparsetx-run)
#   TEXT_DATA      text data (gcide), IMAGE_DATA images (fashion-mnist)
#   STEPS          training steps (600)
#   TEXT_FLAGS     flags of every text run, e.g. the model and device
#   IMAGE_FLAGS    flags of every image run
#   TEXT_L         the factorized patterns' l (and c = l/4 for fixed) on text
#                  (default: the patterns' own, l = 128, c = 32)
# GPU scale (docs/model.md): see scripts/table2-gpu.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/table2}"
evalTokens="${2:-262144}"
mkdir -p "$out"
bin="${SPARSETX_RUN:-build/bin/sparsetx-run}"
steps="${STEPS:-600}"
textData="${TEXT_DATA:-gcide}"
imageData="${IMAGE_DATA:-fashion-mnist}"
read -r -a textFlags <<< "${TEXT_FLAGS:-}"
read -r -a imageFlags <<< "${IMAGE_FLAGS:-}"
textFixed=() textStrided=()
if [ -n "${TEXT_L:-}" ]; then
  textFixed=(-D "l=$TEXT_L" -D "c=$((TEXT_L / 4))")
  textStrided=(-D "l=$TEXT_L")
fi

run() { # name data pattern [flags...]
  local name=$1 data=$2 pattern=$3
  shift 3
  if ! grep -q "^$steps," "$out/$name/metrics.csv" 2>/dev/null; then
    "$bin" --pattern "patterns/$pattern.sp" --data "$data" --samples 0 \
      --steps "$steps" --out "$out/$name" "$@" train > /dev/null 2> "$out/$name.log"
  fi
  local seconds valid test
  seconds=$(awk -F, 'END { printf "%.0f", $6 }' "$out/$name/metrics.csv")
  read -r valid test < <("$bin" --out "$out/$name" --eval-tokens "$evalTokens" eval |
    awk '$1 == "valid" { v = $2 } $1 == "test" { t = $2 } END { print v, t }')
  printf '| %s | %s | %s | %s | %s | %d:%02d |\n' "$(basename "$data")" "$pattern" "$*" \
    "$valid" "$test" $((seconds / 60)) $((seconds % 60))
}

echo "| data | pattern | flags | valid | test | training time |"
echo "| --- | --- | --- | --- | --- | --- |"
run text-fixed "$textData" fixed ${textFixed[@]+"${textFixed[@]}"} ${textFlags[@]+"${textFlags[@]}"}
run text-strided "$textData" strided ${textStrided[@]+"${textStrided[@]}"} ${textFlags[@]+"${textFlags[@]}"}
run text-dense "$textData" dense ${textFlags[@]+"${textFlags[@]}"}
run images-strided "$imageData" strided -D l=28 ${imageFlags[@]+"${imageFlags[@]}"}
run images-dense "$imageData" dense ${imageFlags[@]+"${imageFlags[@]}"}
