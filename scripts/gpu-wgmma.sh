#!/usr/bin/env bash
# Runs on the GPU machine with the bundle of scripts/gpu-bundle.sh carried
# (.gpu/): the sm_90a wgmma kernels' correctness and speed in one call.
#   1. AttentionForwardTest and AttentionBackwardTest (their Wgmma cases run
#      the wgmma forward and every dK/dV and dQ kernel on wgmma, the Default
#      cases the codegen defaults; the others the mma.sync ones) and
#      HopperMmaTest;
#   2. attention-bench several ways on the same cases: mma-sync (both
#      switches off), wgmma-fwd (the wgmma forward, mma.sync backward),
#      wgmma (every kernel on wgmma: --wgmma-backward-min-blocks=0) and
#      default (the wgmma forward, the backward on wgmma where the lists
#      are long);
#   3. the PyTorch peers (SDPA, FlexAttention) on the same cases, and each
#      of the three beside them (bench/compare.py, compare-*.txt);
#   4. compute-sanitizer (gpu-sanitize.sh; its filters match the Wgmma
#      instances of its cases too).
# Logs and JSON go to $OUT (or out/); each step's last lines are printed.
#   bash scripts/gpu-wgmma.sh     (CASES="fixed/16384/64 ..."; PEERS=0,
#                                  TESTS=0, SANITIZE=0 skip steps;
#                                  TEST_FILTER='Wgmma*' runs only the wgmma
#                                  instances of the two attention tests;
#                                  BUILDS picks among "mma-sync wgmma-fwd
#                                  wgmma default" (default all four; ""
#                                  none), or NAME: bin/attention-bench-NAME
#                                  (another build, copied there by hand)
#                                  with its defaults; REPEAT=N runs the
#                                  builds N times in turn;
#                                  SHARDS (default 8) processes run each
#                                  test binary's cases at once;
#                                  STEP_TIMEOUT (s, default 420) bounds each
#                                  step so one slow step cannot eat the call)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
bin=.gpu/bin
out="${OUT:-out}"
mkdir -p "$out"
cases="${CASES:-fixed/16384/64 strided/16384/64 dense/16384/64 local/16384/64 fixed/12288/64 fixed/16384/128 dense/16384/128 strided/3072/64}"
args=()
for c in $cases; do args+=(--case "$c"); done
status=0
# A misspelt build stops the script before any device time is spent on it.
for build in ${BUILDS-mma-sync wgmma-fwd wgmma default}; do
  case "$build" in
    mma-sync | wgmma-fwd | wgmma | default) ;;
    *) [ -x "$bin/attention-bench-$build" ] ||
      { echo "gpu-wgmma: unknown build '$build' in BUILDS (known: mma-sync wgmma-fwd wgmma default, or NAME with $bin/attention-bench-NAME)" >&2; exit 2; } ;;
  esac
done
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
step() { # name, command...: runs it, keeps its log, reports its status
  local name="$1"; shift
  echo "== $name"
  timeout "${STEP_TIMEOUT:-420}" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  tail -n "${TAIL:-25}" "$out/$name.log"
  # Sharded tests interleave their output: the failed cases, wherever they are.
  grep -a -E "^\[  FAILED  \] [A-Za-z]" "$out/$name.log" | sort -u | head -n 30
  echo "== $name: rc $rc"
  [ $rc -eq 0 ] || status=1
}
# shellcheck source=scripts/gpu-common.sh
source scripts/gpu-common.sh
export -f sharded
if [ "${TESTS:-1}" = 1 ]; then
  step forward-tests bash -c 'sharded "$@"' sharded "$bin/AttentionForwardTest" --gtest_brief=1 --gtest_filter="${TEST_FILTER:-*}"
  step backward-tests bash -c 'sharded "$@"' sharded "$bin/AttentionBackwardTest" --gtest_brief=1 --gtest_filter="${TEST_FILTER:-*}"
  step hopper-tests "$bin/HopperMmaTest" --gtest_brief=1
fi
# REPEAT=N runs the builds N times in turn (suffix -2, -3, ...), so that
# builds are compared over the same drift of the clocks.
for ((r = 1; r <= ${REPEAT:-1}; r++)); do
  suffix=""
  [ "$r" -gt 1 ] && suffix="-$r"
  for build in ${BUILDS-mma-sync wgmma-fwd wgmma default}; do
    case "$build" in
      mma-sync) flags=(--wgmma-forward=false --wgmma-backward=false) ;;
      wgmma-fwd) flags=(--wgmma-backward=false) ;;
      wgmma) flags=(--wgmma-backward-min-blocks=0) ;;
      *) flags=() ;;
    esac
    b="$bin/attention-bench"
    [ -x "$bin/attention-bench-$build" ] && b="$bin/attention-bench-$build"
    step "bench-$build$suffix" "$b" "${flags[@]}" --out "$out/sparsetx-$build$suffix.json" "${args[@]}"
  done
done
if [ "${PEERS:-1}" = 1 ]; then
  PYTHONUNBUFFERED=1 step peers python3 bench/peers.py --out "$out/peers.json" "${args[@]}"
fi
# Each build of the kernels beside the peers (bench/compare.py).
if [ -f "$out/peers.json" ]; then
  for k in ${BUILDS-mma-sync wgmma-fwd wgmma default}; do
    [ -f "$out/sparsetx-$k.json" ] || continue
    echo "== compare: $k"
    python3 bench/compare.py "$out/sparsetx-$k.json" "$out/peers.json" | tee "$out/compare-$k.txt"
  done
fi
if [ "${SANITIZE:-1}" = 1 ]; then
  step sanitize bash .gpu/gpu-sanitize.sh "$bin"
fi
# Every log and JSON in one archive; PACK=0 leaves it to the caller
# (gpu-verify.sh packs its own folder).
[ "${PACK:-1}" = 0 ] || pack_results "$out"
exit $status
