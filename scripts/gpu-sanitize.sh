#!/usr/bin/env bash
# Runs on the GPU machine (called by gpu-run.sh, or alone): compute-sanitizer
# memcheck, racecheck and synccheck over one small case of each kernel
# family: forward (with its merge), backward, decode (split rows and their
# merge). Fails on any report, and unless each tool reports the bug planted
# for it in sanitizer-control (the negative controls). Takes a minute or two: the kernels are cached
# by NVRTC from the test run before, and the cases are n = 1000, D = 64.
#   scripts/gpu-sanitize.sh [bin dir]     (default: the bundle's bin/)
# Logs go to $OUT (or out/) as sanitize-<tool>-<test>.log.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-}"
if [ -z "$bin" ]; then
  if [ -d "$here/bin" ]; then bin="$here/bin"; else bin="$here/../.gpu/bin"; fi
fi
out="${OUT:-out}"
mkdir -p "$out"
cs="$(command -v compute-sanitizer || true)"
for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
  [ -n "$cs" ] || { [ -x "$c" ] && cs="$c"; }
done
if [ -z "$cs" ]; then
  echo "gpu-sanitize: compute-sanitizer not found (PATH, /usr/local/cuda/bin)" >&2
  exit 1
fi
echo "gpu-sanitize: $cs ($("$cs" --version | tail -n 1))"

# binary:gtest filter. strided runs two kernels and the merge (transposed
# maps); fixed_heads decodes per-head masks with gathered keys and split rows.
# LongLists: dK/dV work items split over CTAs and their ordered reduce.
# CudaModelTest: the few-row linear layers (split k, a ticket per tile) and
# the model's bf16 attention decoding through decodeAt (device position).
# The forward and backward filters match the Wgmma/ instances (the sm_90a
# wgmma kernels) of the same cases too, which skip on other GPUs, and the
# backward's Default/ one (fixed at n = 1000: its band on the mma.sync dK/dV
# kernels, its summary columns on the wgmma ones, the sm_90a defaults).
cases=(
  "AttentionForwardTest:*strided_n1000_d64_bf16"
  "AttentionBackwardTest:*fixed_n1000_d64_fp16:LongLists/*fixed_n3000_d64_bf16"
  "AttentionDecodeTest:*strided_n1000_d64_bf16:*fixed_heads_n1000_d64_fp16"
  "CudaModelTest:OpsTest.FusedLinear:Cuda/AttentionTest.MatchesCpu/3"
)
status=0
# Negative controls first: each tool must report a bug planted for it
# (test/gpu/SanitizerControl.cpp), else a clean run below proves nothing.
control() { # tool mode -> 0 if the tool reported the planted bug
  local tool="$1" mode="$2" log="$out/sanitize-$1-control-$2.log" extra=() rc summary
  [ "$tool" = racecheck ] && extra=(--racecheck-report all)
  timeout 60 "$cs" --tool "$tool" "${extra[@]}" --error-exitcode 97 --print-limit 5 \
    "$bin/sanitizer-control" "$mode" >"$log" 2>&1
  rc=$?
  summary="$(grep -E "(ERROR|RACECHECK) SUMMARY" "$log" | tail -n 1)"
  printf '%-9s %-22s rc %-3s  %s\n' "$tool" "control: $mode" "$rc" "$summary"
  [ "$rc" -eq 97 ] && grep -qE "SUMMARY: [1-9]|\([1-9][0-9]* errors|, [1-9][0-9]* warnings" "$log"
}
if [ ! -x "$bin/sanitizer-control" ]; then
  echo "gpu-sanitize: $bin/sanitizer-control missing" >&2
  status=1
else
  control memcheck oob || { echo "gpu-sanitize: memcheck missed the planted bug"; status=1; }
  control racecheck race || { echo "gpu-sanitize: racecheck missed the planted bug"; status=1; }
  control synccheck barrier || { echo "gpu-sanitize: synccheck missed the planted bug"; status=1; }
fi

for tool in memcheck racecheck synccheck; do
  for c in "${cases[@]}"; do
    test="${c%%:*}"
    filter="${c#*:}"
    [ -x "$bin/$test" ] || { echo "gpu-sanitize: $bin/$test missing" >&2; status=1; continue; }
    log="$out/sanitize-$tool-$test.log"
    start=$SECONDS
    extra=()
    [ "$tool" = racecheck ] && extra=(--racecheck-report all)
    "$cs" --tool "$tool" "${extra[@]}" --error-exitcode 97 --print-limit 20 \
      "$bin/$test" --gtest_filter="$filter" --gtest_brief=1 >"$log" 2>&1
    rc=$?
    summary="$(grep -E "(ERROR|RACECHECK) SUMMARY" "$log" | tail -n 1)"
    printf '%-9s %-22s rc %-3s %3ss  %s\n' "$tool" "$test" "$rc" "$((SECONDS - start))" "$summary"
    # A test that was skipped or matched nothing checks nothing.
    if [ "$rc" -ne 0 ] || [ -z "$summary" ] || ! grep -qE "PASSED  \] [1-9]" "$log" ||
       grep -q "SKIPPED" "$log" ||
       grep -qE "SUMMARY: [1-9]|\(([1-9][0-9]*) errors|, [1-9][0-9]* warnings" "$log"; then
      echo "gpu-sanitize: $tool on $test ($filter) reported problems:"
      grep -E "=========|FAILED|Failure" "$log" | head -n 40
      status=1
    fi
  done
done
[ "$status" -eq 0 ] && echo "gpu-sanitize: memcheck, racecheck, synccheck clean" || echo "gpu-sanitize: FAILED"
exit $status
