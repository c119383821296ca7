#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, with the bundle carried
# (scripts/gpu-bundle.sh writes .gpu/: bin/ and a copy of these scripts):
# every GPU test binary, then compute-sanitizer (memcheck, racecheck,
# synccheck) on small cases (gpu-sanitize.sh), then the benchmark with its
# peers (PyTorch SDPA and FlexAttention) in the same run. Logs and JSON go to
# $OUT (or out/).
#   bash .gpu/gpu-run.sh [--tests-only | --bench-only | --no-sanitize]
#   GPU_TEST_FILTER='AttentionDecodeTest' restricts the test binaries (a regex).
#   BENCH_ARGS / PEERS_ARGS: extra arguments of attention-bench / peers.py
#   (e.g. '--case fixed/16384/64'). peers.py is the bundle's copy when it has
#   one (so that a bundle carries its own), else bench/peers.py.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# The bundle's own bin/ when run from it, else .gpu/bin of the checkout.
if [ -d "$here/bin" ]; then bin="$here/bin"; else bin="$here/../.gpu/bin"; fi
cd "$here/.."
out="${OUT:-out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
status=0
mode="${1:-}"
[ "$mode" = "--bench-only" ] && tests=() || tests=("$bin"/*Test)
for t in "${tests[@]}"; do
  [ -x "$t" ] || continue
  [[ "$(basename "$t")" =~ ${GPU_TEST_FILTER:-.} ]] || continue
  echo "== $t"
  "$t" --gtest_brief=1 2>&1 | tee "$out/$(basename "$t").log" | tail -n 30
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
if [ "$mode" != "--bench-only" ] && [ "$mode" != "--no-sanitize" ]; then
  echo "== compute-sanitizer"
  bash "$here/gpu-sanitize.sh" "$bin" || status=1
fi
if [ "$mode" != "--tests-only" ]; then
  if [ -x "$bin/attention-bench" ]; then
    # shellcheck disable=SC2086
    "$bin/attention-bench" --out "$out/sparsetx.json" ${BENCH_ARGS:-} 2>&1 | tee "$out/sparsetx.txt" | tail -n 60
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  fi
  peers="bench/peers.py"
  [ -f "$here/peers.py" ] && peers="$here/peers.py"
  # shellcheck disable=SC2086
  PYTHONUNBUFFERED=1 python3 "$peers" --out "$out/peers.json" ${PEERS_ARGS:-} 2>&1 | tee "$out/peers.txt" | tail -n 60
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
exit $status
