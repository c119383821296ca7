#!/usr/bin/env bash
# Runs on the GPU machine from the repository root with the bundle of
# `TRAIN_DATA=1 scripts/gpu-bundle.sh` carried (.gpu/, with a 20 MB excerpt
# of the GCIDE dictionary in .gpu/data): what the opt-in sm_90a wgmma
# kernels and the model still need measured, in order of importance, each
# step started only while the call has time left for it, so that one device
# call brings back the most it can:
#   1. the wgmma kernels against the float64 reference (the Wgmma cases of
#      AttentionForwardTest and AttentionBackwardTest) and HopperMmaTest;
#   2. attention-bench with mma.sync and with wgmma on the issue's cases, and
#      the peers (SDPA, FlexAttention) in the same call (compare-*.txt);
#   3. CudaModelTest (the CUDA backend against the CPU, 20 steps);
#   4. the long-sequence model at n = 2^20 with mma.sync and with wgmma;
#   5. the enwik8 model's training speed with both, and its peer.
# Logs and JSON go to $OUT (or out/); a summary line per step goes to
# $OUT/verify.txt.
#   bash scripts/gpu-verify.sh     (BUDGET: seconds this script may take,
#                                   default 540; a step is skipped when less
#                                   is left than its bound; STEPS="1 2 3"
#                                   picks steps; CASES as in gpu-wgmma.sh)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
bin=.gpu/bin
data=.gpu/data/gcide-20m.gz
out="${OUT:-out}"
mkdir -p "$out"
budget="${BUDGET:-540}"
start=$SECONDS
status=0
left() { echo $((budget - (SECONDS - start))); }
# step NUMBER BOUND NAME COMMAND...: runs COMMAND bounded by BOUND seconds
# (less where less is left) when it is selected and at least BOUND / 2 is left.
step() {
  local number="$1" bound="$2" name="$3"
  shift 3
  [[ " ${STEPS:-1 2 3 4 5} " == *" $number "* ]] || return 0
  local remaining
  remaining=$(left)
  if [ "$remaining" -lt $((bound / 2)) ]; then
    echo "$name: skipped ($remaining s left, needs about $bound)" | tee -a "$out/verify.txt"
    return 0
  fi
  [ "$remaining" -lt "$bound" ] && bound=$remaining
  echo "== $name (at most $bound s)"
  local t0=$SECONDS
  timeout "$bound" "$@"
  local rc=$?
  echo "$name: rc $rc in $((SECONDS - t0)) s" | tee -a "$out/verify.txt"
  [ $rc -eq 0 ] || status=1
}
export OUT="$out"
step 1 200 wgmma-tests env TESTS=1 PEERS=0 SANITIZE=0 BUILDS= TEST_FILTER='Wgmma*' \
  STEP_TIMEOUT=180 TAIL=6 bash scripts/gpu-wgmma.sh
step 2 240 wgmma-bench env TESTS=0 SANITIZE=0 BUILDS="mma-sync wgmma" \
  CASES="${CASES:-fixed/16384/64 strided/16384/64 dense/16384/64 fixed/12288/64 fixed/16384/128}" \
  STEP_TIMEOUT=120 TAIL=12 bash scripts/gpu-wgmma.sh
step 3 100 cuda-model-test bash -c "'$bin/CudaModelTest' --gtest_brief=1 > '$out/CudaModelTest.log' 2>&1; rc=\$?; tail -n 5 '$out/CudaModelTest.log'; exit \$rc"
step 4 120 long-2e20 env SIZES=20 WGMMA_AB=1 bash scripts/gpu-long.sh "$bin" "$data"
step 5 300 enwik8 env BIN="$bin" DATA="$data" TESTS=0 WGMMA_AB=1 LONG=0 SAMPLE=0 \
  bash scripts/gpu-model.sh --bench-only
cat "$out/verify.txt"
exit $status
