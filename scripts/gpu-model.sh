#!/usr/bin/env bash
# Runs on the GPU machine from the repository root with .gpu-model/ carried
# (scripts/gpu-model-bundle.sh): the CUDA backend's tests, a short training
# run per precision, and the training-throughput benchmarks of sparsetx and of
# the PyTorch FlexAttention peer (bench/model_peer.py) in the same run. Logs
# and JSON go to $OUT (or out/).
#   bash .gpu-model/gpu-model.sh [--tests-only | --bench-only]
#   GTEST_FILTER works for the tests; MODEL_BENCH='enwik8 long' picks benches.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
bin="$here/bin"
data="$here/data/gcide.dict.dz"
out="${OUT:-out}"
mkdir -p "$out"

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
status=0
mode="${1:-}"
run() { # name, command...
  local name="$1"; shift
  echo "== $name: $*"
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$out/$name.log"
  [ $rc -eq 0 ] || { echo "!! $name failed ($rc)"; status=1; }
}
if [ "$mode" != "--bench-only" ]; then
  run CudaModelTest "$bin/CudaModelTest" --gtest_brief=1
  for p in fp32 bf16; do
    run "train-tiny-$p" "$bin/sparsetx-run" --pattern patterns/fixed.sp \
      --data "$data" --device cuda --precision "$p" --steps 600 \
      --out "$out/tiny-$p" train
  done
fi
if [ "$mode" != "--tests-only" ]; then
  for b in ${MODEL_BENCH:-enwik8}; do
    case "$b" in
    enwik8)
      run bench-enwik8 "$bin/sparsetx-run" --preset enwik8 --pattern patterns/fixed.sp \
        --data "$data" --device cuda --batch 2 --steps 8 --json "$out/enwik8.json" bench
      run bench-enwik8-recompute "$bin/sparsetx-run" --preset enwik8 --pattern patterns/fixed.sp \
        --data "$data" --device cuda --batch 2 --steps 8 --recompute \
        --json "$out/enwik8-recompute.json" bench
      run peer-enwik8 python3 bench/model_peer.py --preset enwik8 --batch 2 \
        --steps 8 --out "$out/peer-enwik8.json"
      run peer-enwik8-ckpt python3 bench/model_peer.py --preset enwik8 --batch 2 \
        --steps 8 --checkpoint --out "$out/peer-enwik8-ckpt.json"
      ;;
    esac
  done
fi
exit $status
