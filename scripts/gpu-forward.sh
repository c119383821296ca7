#!/usr/bin/env bash
# Runs on the GPU machine with the bundle of scripts/gpu-bundle.sh carried
# (.gpu/): the forward kernels' correctness (AttentionForwardTest, whose
# Wgmma cases run the sm_90a wgmma kernel), then the forward timed both ways
# in one run (the default mma.sync kernel, then --wgmma-forward), then the
# PyTorch peers (SDPA, FlexAttention) on the same cases, then the backward
# tests and compute-sanitizer. Logs and JSON go to $OUT (or out/).
#   bash scripts/gpu-forward.sh            (CASES="fixed/16384/64 ..." to choose)
set -uo pipefail
cd "$(dirname "$0")/.."
bin=.gpu/bin
out="${OUT:-out}"
mkdir -p "$out"
cases="${CASES:-fixed/16384/64 strided/16384/64 dense/16384/64 local/16384/64 fixed/12288/64 fixed/16384/128 dense/16384/128 strided/3072/64}"
args=()
for c in $cases; do args+=(--case "$c"); done
status=0
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
step() { # name, command...: runs it, keeps its log, reports its status
  local name="$1"; shift
  echo "== $name"
  "$@" > "$out/$name.log" 2>&1
  local rc=$?
  tail -n "${TAIL:-25}" "$out/$name.log"
  echo "== $name: rc $rc"
  [ $rc -eq 0 ] || status=1
}
step forward-tests "$bin/AttentionForwardTest" --gtest_brief=1
step hopper-tests "$bin/HopperMmaTest" --gtest_brief=1
step bench-mma-sync "$bin/attention-bench" --out "$out/sparsetx-mma-sync.json" "${args[@]}"
step bench-wgmma "$bin/attention-bench" --wgmma-forward --out "$out/sparsetx-wgmma.json" "${args[@]}"
[ "${PEERS:-1}" = 1 ] && PYTHONUNBUFFERED=1 step peers python3 bench/peers.py --out "$out/peers.json" "${args[@]}"
[ "${BACKWARD:-1}" = 1 ] && step backward-tests "$bin/AttentionBackwardTest" --gtest_brief=1
[ "${SANITIZE:-1}" = 1 ] && step sanitize bash .gpu/gpu-sanitize.sh "$bin"
exit $status
