#!/usr/bin/env bash
# Runs on the GPU machine from the repository root with .gpu-model/ carried
# (scripts/gpu-model-bundle.sh): the CUDA backend's tests, a short training
# run per precision, and the training-throughput benchmarks of sparsetx and of
# the PyTorch FlexAttention peer (bench/model_peer.py) in the same run. Logs
# and JSON go to $OUT (or out/).
#   bash .gpu-model/gpu-model.sh [--tests-only | --bench-only | --train |
#                                 --sample [length]]
#   (--train: the tests, then the tiny model trained in fp32 and bf16;
#    --sample: the tests, then sampling speed of the enwik8 model, batch 1:
#    the step's ops captured (default) and launched one by one, the fused
#    step (SPARSETX_FUSED_DECODE=1) with its phase profile, a per-op profile)
#   BIN=DIR, DATA=FILE: the binaries and the training data, instead of the
#   bundle's bin/ and GCIDE dictionary;
#   WGMMA_AB=1 also runs the enwik8 benchmarks with the mma.sync attention
#   kernels instead of the default sm_90a wgmma ones
#   (SPARSETX_WGMMA_FORWARD/BACKWARD=0; suffix -mma-sync); LONG=0 and
#   SAMPLE=0 leave the long-sequence and sampling runs out of the benchmarks;
#   GTEST_FILTER works for the tests; DECODE_TESTS=0 skips AttentionDecodeTest;
#   SAMPLE_PRECISIONS (default "bf16 fp32"), PEER=0, NOGRAPHS=0, FUSED=0 and
#   PROFILE=0 trim --sample; NCU=1 adds Nsight Compute on the fused step,
#   NCU_OPS=1 per-kernel times of two op-by-op steps; TESTS=0 skips the tests;
#   OVERLAP=0 leaves out the run with SPARSETX_OVERLAP_LAUNCHES=0, CHAIN=0
#   the one with SPARSETX_LINEAR_CHAIN=1;
#   OVERLAP_STRESS=N repeats the decoding tests N times with overlapping
#   launches; AB=N samples bf16 N times with each bin/sparsetx-run-NAME
#   (stripped sparsetx-run builds to compare with, copied there by hand) and
#   with this build, in turn, in the same call; AB_ENV="NAME=VALUE ..." samples
#   bf16 AB_N (default 3) times with those variables and without, in turn.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.." || exit 1
# shellcheck source=scripts/gpu-common.sh
source scripts/gpu-common.sh
bin="${BIN:-$here/bin}"
data="${DATA:-$here/data/gcide.dict.dz}"
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
  # The lines worth reading without the logs (sampled text is binary).
  grep -a -E "tokens/s|PASSED|FAILED|ms/step" "$out/$name.log" | cut -c1-400 |
    sed "s|^|$name: |" >>"$out/summary.txt"
  # A sample's digest, so that runs of different builds can be compared.
  local f
  f="$(grep -a '^wrote ' "$out/$name.log" | head -n 1 | cut -c7-)"
  [ -z "$f" ] || [ ! -f "$f" ] || echo "$name: sample md5 $(md5sum <"$f" | cut -c1-16)" >>"$out/summary.txt"
  [ $rc -eq 0 ] || { echo "!! $name failed ($rc)"; status=1; }
}
if [ "$mode" != "--bench-only" ] && [ "${TESTS:-1}" = 1 ]; then
  run CudaModelTest timeout 400 "$bin/CudaModelTest" --gtest_brief=1
  [ "${DECODE_TESTS:-1}" = 0 ] || run AttentionDecodeTest timeout 300 "$bin/AttentionDecodeTest" --gtest_brief=1
  [ "${OVERLAP_STRESS:-0}" = 0 ] || SPARSETX_OVERLAP_LAUNCHES=1 \
    run CudaModelTest-overlap-stress timeout 400 "$bin/CudaModelTest" --gtest_brief=1 \
      --gtest_filter='CudaModel.DecodeMatches*:PackedLinear*' --gtest_repeat="$OVERLAP_STRESS"
  export NCCL_NVLS_ENABLE=0
  run nccl-one-rank bash test/gpu/nccl-one-rank.sh "$bin/sparsetx-run" patterns "$data"
fi
if [ "$mode" = "--train" ]; then
  for p in fp32 bf16; do
    run "train-tiny-$p" "$bin/sparsetx-run" --pattern patterns/fixed.sp \
      --data "$data" --device cuda --precision "$p" --out "$out/tiny-$p" train
  done
fi
if [ "$mode" = "--sample" ]; then
  length="${2:-2048}"
  common=(--preset enwik8 --pattern patterns/fixed.sp --data "$data" --device cuda)
  run sample-enwik8-setup timeout 100 "$bin/sparsetx-run" "${common[@]}" --batch 1 --steps 1 \
    --samples 0 --eval-tokens 12288 --out "$out/enwik8-run" train
  sample=(--device cuda --out "$out/enwik8-run" --samples 1 --length "$length" sample)
  for p in ${SAMPLE_PRECISIONS:-bf16 fp32}; do
    run "sample-enwik8-$p" timeout 150 "$bin/sparsetx-run" --precision "$p" "${sample[@]}"
  done
  if [ "${AB:-0}" != 0 ]; then
    for i in $(seq "$AB"); do
      for other in "$bin"/sparsetx-run-*; do
        [ -x "$other" ] || continue
        run "sample-enwik8-bf16-${other##*/sparsetx-run-}-$i" timeout 150 "$other" "${sample[@]}"
      done
      run "sample-enwik8-bf16-this-$i" timeout 150 "$bin/sparsetx-run" "${sample[@]}"
    done
  fi
  # AB_ENV="NAME=VALUE ...": samples bf16 AB_N (default 3) times with those
  # variables set and without, in turn, in the same call.
  if [ -n "${AB_ENV:-}" ]; then
    for i in $(seq "${AB_N:-3}"); do
      run "sample-enwik8-bf16-base-$i" timeout 150 "$bin/sparsetx-run" "${sample[@]}"
      # shellcheck disable=SC2086
      run "sample-enwik8-bf16-env-$i" timeout 150 env $AB_ENV "$bin/sparsetx-run" "${sample[@]}"
    done
  fi
  [ "${OVERLAP:-1}" = 0 ] || SPARSETX_OVERLAP_LAUNCHES=0 \
    run sample-enwik8-bf16-no-overlap timeout 150 "$bin/sparsetx-run" "${sample[@]}"
  [ "${CHAIN:-1}" = 0 ] || SPARSETX_LINEAR_CHAIN=1 \
    run sample-enwik8-bf16-chain timeout 150 "$bin/sparsetx-run" "${sample[@]}"
  [ "${NOGRAPHS:-1}" = 0 ] || SPARSETX_CUDA_GRAPHS=0 \
    run sample-enwik8-bf16-nographs timeout 150 "$bin/sparsetx-run" "${sample[@]}"
  # The fused step (one persistent kernel, SPARSETX_FUSED_DECODE=1), after a
  # short run that puts its NVRTC compilation into the cache, with its
  # per-phase profile.
  if [ "${FUSED:-1}" = 1 ]; then
    SPARSETX_FUSED_DECODE=1 run sample-enwik8-fused-warmup timeout 150 \
      "$bin/sparsetx-run" --device cuda --out "$out/enwik8-run" --samples 1 --length 64 sample
    SPARSETX_FUSED_DECODE=1 run sample-enwik8-bf16-fused timeout 150 \
      "$bin/sparsetx-run" "${sample[@]}"
    SPARSETX_FUSED_DECODE=1 SPARSETX_PROFILE=1 run sample-enwik8-fused-profile timeout 150 \
      "$bin/sparsetx-run" --device cuda --out "$out/enwik8-run" --samples 1 --length 2048 sample
  fi
  # NCU=1: Nsight Compute on one step kernel (throughput, memory, stalls),
  # where ncu is installed; the application is replayed, since the kernel
  # is a cooperative launch that other launches depend on.
  if [ "${NCU:-0}" = 1 ] && command -v ncu >/dev/null; then
    SPARSETX_FUSED_DECODE=1 run sample-enwik8-fused-ncu timeout 300 ncu \
      --kernel-name sp_decode_step --launch-skip 8 --launch-count 1 \
      --replay-mode application --section SpeedOfLight \
      --section MemoryWorkloadAnalysis --section WarpStateStats \
      --section Occupancy "$bin/sparsetx-run" --device cuda \
      --out "$out/enwik8-run" --samples 1 --length 16 sample
  fi
  # NCU_OPS=1: every kernel of two decoding steps, launched one by one, timed
  # by Nsight Compute (gpu__time_duration), summed per kernel name.
  if [ "${NCU_OPS:-0}" = 1 ] && command -v ncu >/dev/null; then
    SPARSETX_CUDA_GRAPHS=0 run sample-enwik8-ncu-ops timeout 300 ncu --clock-control none \
      --launch-skip 3000 --launch-count "${NCU_OPS_COUNT:-430}" --csv --page raw \
      --metrics gpu__time_duration.sum "$bin/sparsetx-run" --device cuda \
      --out "$out/enwik8-run" --samples 1 --length 40 sample
    python3 scripts/ncu-summary.py "$out/sample-enwik8-ncu-ops.log" | tee "$out/ncu-ops-summary.txt"
  fi
  # The peer in the same run: PyTorch, dense attention over a KV cache, CUDA
  # graphs (bench/model_peer.py --sample).
  [ "${PEER:-1}" = 0 ] || run peer-sample-enwik8 timeout 200 python3 bench/model_peer.py \
    --preset enwik8 --sample "$length" --out "$out/peer-sample-enwik8.json"
  [ "${PROFILE:-1}" = 0 ] || SPARSETX_CUDA_GRAPHS=0 SPARSETX_PROFILE=1 run sample-enwik8-profile timeout 120 \
    "$bin/sparsetx-run" --device cuda --out "$out/enwik8-run" --samples 1 --length 512 sample
  # The captured step's GPU time per token against the wall clock's.
  [ "${PROFILE:-1}" = 0 ] || SPARSETX_PROFILE=1 run sample-enwik8-profile-replay timeout 120 \
    "$bin/sparsetx-run" --device cuda --out "$out/enwik8-run" --samples 1 --length 4096 sample
  rm -f "$out/enwik8-run/checkpoint.bin"
fi
if [ "$mode" != "--tests-only" ] && [ "$mode" != "--train" ] && [ "$mode" != "--sample" ]; then
  # The enwik8 model (preset: dropout 0.4, clipping, recompute), batch 2,
  # ours and the PyTorch FlexAttention peer in the same run.
  common=(--preset enwik8 --pattern patterns/fixed.sp --data "$data" --device cuda --batch 2)
  run bench-enwik8-recompute timeout 150 "$bin/sparsetx-run" "${common[@]}" --steps 8 \
    --json "$out/enwik8-recompute.json" bench
  run bench-enwik8 timeout 150 "$bin/sparsetx-run" "${common[@]}" --steps 8 --recompute=false \
    --json "$out/enwik8.json" bench
  if [ "${WGMMA_AB:-0}" = 1 ]; then
    export SPARSETX_WGMMA_FORWARD=0 SPARSETX_WGMMA_BACKWARD=0
    run bench-enwik8-recompute-mma-sync timeout 150 "$bin/sparsetx-run" "${common[@]}" --steps 8 \
      --json "$out/enwik8-recompute-mma-sync.json" bench
    run bench-enwik8-mma-sync timeout 150 "$bin/sparsetx-run" "${common[@]}" --steps 8 \
      --recompute=false --json "$out/enwik8-mma-sync.json" bench
    unset SPARSETX_WGMMA_FORWARD SPARSETX_WGMMA_BACKWARD
  fi
  run peer-enwik8 timeout 200 python3 bench/model_peer.py --preset enwik8 --batch 2 \
    --steps 6 --warmup 3 --out "$out/peer-enwik8.json"
  run peer-enwik8-ckpt timeout 200 python3 bench/model_peer.py --preset enwik8 --batch 2 \
    --steps 6 --warmup 3 --checkpoint --out "$out/peer-enwik8-ckpt.json"
  # Long sequences: the issue's 3.8M-parameter model (d 256, 4 layers, 4
  # heads, strided l = 1024, recompute) at n = 2^20, batch 1.
  [ "${LONG:-1}" = 0 ] || run bench-long-1m timeout 200 "$bin/sparsetx-run" --pattern patterns/strided.sp -D l=1024 \
    --data "$data" --device cuda --seq-len 1048576 --layers 4 --d-model 256 --heads 4 \
    --recompute --batch 1 --steps 3 --json "$out/long-1m.json" bench
  # Sampling speed: one step makes a checkpoint; batch 1, 1024 bytes.
  if [ "${SAMPLE:-1}" = 1 ]; then
    run sample-enwik8-setup timeout 100 "$bin/sparsetx-run" "${common[@]}" --batch 1 --steps 1 \
      --samples 0 --eval-tokens 12288 --out "$out/enwik8-run" train
    run sample-enwik8 timeout 100 "$bin/sparsetx-run" --device cuda --out "$out/enwik8-run" \
      --samples 1 --length 1024 sample
    rm -f "$out/enwik8-run/checkpoint.bin"
  fi
fi
# Every log and JSON in one archive; PACK=0 leaves it to the caller
# (gpu-verify.sh packs its own folder).
[ "${PACK:-1}" = 0 ] || pack_results "$out"
exit $status
