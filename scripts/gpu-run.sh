#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, with .gpu/ carried: every
# GPU test binary, then the benchmark with its peers (PyTorch SDPA and
# FlexAttention) in the same run. Logs and JSON go to $OUT (or out/).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
status=0
[ "${1:-}" = "--bench-only" ] && tests=() || tests=(.gpu/bin/*Test)
for t in "${tests[@]}"; do
  [ -x "$t" ] || continue
  echo "== $t"
  "$t" --gtest_brief=1 2>&1 | tee "$out/$(basename "$t").log" | tail -n 30
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
if [ "${1:-}" != "--tests-only" ]; then
  if [ -x .gpu/bin/attention-bench ]; then
    .gpu/bin/attention-bench --out "$out/sparsetx.json" 2>&1 | tee "$out/sparsetx.txt" | tail -n 40
  fi
  PYTHONUNBUFFERED=1 python3 bench/peers.py --out "$out/peers.json" 2>&1 | tee "$out/peers.txt" | tail -n 40
fi
exit $status
