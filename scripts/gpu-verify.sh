#!/usr/bin/env bash
# Runs on the GPU machine from the repository root with the bundle of
# `TRAIN_DATA=1 scripts/gpu-bundle.sh` carried (.gpu/, with an excerpt of
# the GCIDE dictionary in .gpu/data/gcide.gz): the default kernels (the sm_90a
# wgmma forward; the backward on wgmma where its lists are long) checked and
# timed, in order of importance, each step started only while the call has
# time left for it, so that one device call brings back the most it can:
#   1. AttentionBackwardTest's Default cases (the codegen defaults, wgmma and
#      mma.sync segments in one pattern) and long-list cases against the
#      float64 reference, and AttentionDecodeTest where the bundle has it;
#   2. attention-bench with mma.sync and with the defaults on the issue's
#      cases, and the peers (SDPA, FlexAttention) in the same call
#      (compare-*.txt);
#   3. CudaModelTest (the CUDA backend against the CPU, 20 steps; the
#      defaults);
#   4. the long-sequence model at n = 2^20 (WGMMA_AB=1: with mma.sync too);
#   5. the enwik8 model's training speed, and its peer.
# Work goes to a scratch folder; after every step everything so far is packed
# into $OUT/results.tgz (one file, whatever the call's limit on files), and
# a summary line per step goes to $OUT/verify.txt.
#   bash scripts/gpu-verify.sh     (BUDGET: seconds this script may take,
#                                   default 540; a step is skipped when less
#                                   than half its bound is left; STEPS="1 2 3"
#                                   picks steps; CASES as in gpu-wgmma.sh;
#                                   VERIFY_FILTER: step 1's gtest filter
#                                   instead (STEP1_BOUND its seconds;
#                                   DECODE_TESTS=0 leaves its
#                                   AttentionDecodeTest out);
#                                   BENCH_BUILDS: step 2's builds (gpu-wgmma.sh
#                                   BUILDS; STEP2_BOUND its seconds);
#                                   WGMMA_AB=1 adds the mma.sync runs of
#                                   steps 4 and 5; steps 6-8 below run
#                                   only when named)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
bin=.gpu/bin
data=.gpu/data/gcide.gz
final="${OUT:-out}"
mkdir -p "$final"
work=$(mktemp -d /tmp/gpu-verify.XXXXXX)
budget="${BUDGET:-540}"
start=$SECONDS
status=0
left() { echo $((budget - (SECONDS - start))); }
# shellcheck source=scripts/gpu-common.sh
source scripts/gpu-common.sh
pack() { pack_results "$work" "$final/results.tgz"; cp "$work/verify.txt" "$final/" 2>/dev/null; }
# step NUMBER BOUND NAME COMMAND...: runs COMMAND bounded by BOUND seconds
# (less where less is left) when it is selected and at least BOUND / 2 is left.
step() {
  local number="$1" bound="$2" name="$3"
  shift 3
  [[ " ${STEPS:-1 2 3 4 5} " == *" $number "* ]] || return 0
  local remaining
  remaining=$(left)
  if [ "$remaining" -lt $((bound / 2)) ]; then
    echo "$name: skipped ($remaining s left, needs about $bound)" | tee -a "$work/verify.txt"
    pack
    return 0
  fi
  [ "$remaining" -lt "$bound" ] && bound=$remaining
  echo "== $name (at most $bound s)"
  local t0=$SECONDS
  timeout "$bound" "$@"
  local rc=$?
  echo "$name: rc $rc in $((SECONDS - t0)) s" | tee -a "$work/verify.txt"
  [ $rc -eq 0 ] || status=1
  pack
}
export OUT="$work" PACK=0
export -f sharded
# AttentionDecodeTest in shards too (alone it took more than step 1's
# bound after the attention tests); DECODE_TESTS=0 leaves it out.
tests=(bash -c 'TESTS=1 PEERS=0 SANITIZE=0 BUILDS= TEST_FILTER="${VERIFY_FILTER:-Default*:*LongLists*}" STEP_TIMEOUT=$((${STEP1_BOUND:-150} - 10)) TAIL=6 bash scripts/gpu-wgmma.sh || exit 1
  [ -x .gpu/bin/AttentionDecodeTest ] && [ "${DECODE_TESTS:-1}" = 1 ] || exit 0
  sharded .gpu/bin/AttentionDecodeTest --gtest_brief=1 > "$OUT/AttentionDecodeTest.log" 2>&1; rc=$?
  grep -a -E "^\[  (FAILED|PASSED)  \]" "$OUT/AttentionDecodeTest.log" | sort | uniq -c; exit $rc')
step 1 "${STEP1_BOUND:-150}" default-tests "${tests[@]}"
step 2 "${STEP2_BOUND:-200}" bench env TESTS=0 SANITIZE=0 BUILDS="${BENCH_BUILDS:-mma-sync default}" \
  CASES="${CASES:-fixed/16384/64 strided/16384/64 dense/16384/64 fixed/12288/64 fixed/16384/128 local/16384/64 strided/3072/64}" \
  STEP_TIMEOUT=100 TAIL=12 bash scripts/gpu-wgmma.sh
model_tests=(bash -c 'sharded "$0/CudaModelTest" --gtest_brief=1 > "$OUT/CudaModelTest.log" 2>&1; rc=$?
  grep -a -E "^\[  (FAILED|PASSED)  \]" "$OUT/CudaModelTest.log" | sort | uniq -c; exit $rc' "$bin")
step 3 120 cuda-model-test "${model_tests[@]}"
step 4 60 long-2e20 env SIZES=20 bash scripts/gpu-long.sh "$bin" "$data"
step 5 200 enwik8 env BIN="$bin" DATA="$data" TESTS=0 LONG=0 SAMPLE=0 \
  bash scripts/gpu-model.sh --bench-only
# Steps run only when STEPS names them:
#   6. compute-sanitizer over each kernel family (the full bundle: its
#      negative controls are not in a TRAIN_DATA one);
#   7. sampling speed of the enwik8 model (batch 1, SAMPLE_LENGTH tokens,
#      default 12288) and its peer; AB_ENV as in gpu-model.sh;
#   8. Nsight Compute on the attention kernels (NCU_CASES, default
#      gpu-ncu-attention.sh's).
step 6 240 sanitize bash .gpu/gpu-sanitize.sh "$bin"
step 7 240 sample env BIN="$bin" DATA="$data" TESTS=0 SAMPLE_PRECISIONS=bf16 OVERLAP=0 \
  CHAIN=0 NOGRAPHS=0 FUSED=0 PROFILE=0 bash scripts/gpu-model.sh --sample "${SAMPLE_LENGTH:-12288}"
# shellcheck disable=SC2086
step 8 240 ncu bash scripts/gpu-ncu-attention.sh ${NCU_CASES:-}
cat "$work/verify.txt"
pack
exit $status
