#!/usr/bin/env bash
# Runs on a GPU machine: the issue's long-sequence model (3.8M parameters:
# d 256, 4 layers, 4 heads, strided l = 1024, recomputation, batch 1) at
# n = 2^20 .. 2^23, steps timed after warm-up per n, to find the
# largest n that trains on the GPU and its memory (a size that does not fit
# must end with the out-of-memory error, not a crash).
#   bash scripts/gpu-long.sh BIN_DIR DATA_FILE      (logs, JSON to $OUT or out/)
#   SIZES="20 23" picks the exponents; WGMMA_AB=1 runs each size twice, the
#   second time with SPARSETX_WGMMA_FORWARD=0 SPARSETX_WGMMA_BACKWARD=0 (the
#   mma.sync attention kernels instead of the default sm_90a wgmma ones;
#   logs and JSON suffixed -mma-sync).
set -uo pipefail
# shellcheck source=scripts/gpu-common.sh
source "$(dirname "$0")/gpu-common.sh"
bin="${1:?bin dir}"; data="${2:?data file}"
out="${OUT:-out}"
mkdir -p "$out"
variants=("")
[ "${WGMMA_AB:-0}" = 1 ] && variants+=("-mma-sync")
for e in ${SIZES:-20 21 22 23}; do
  n=$((1 << e))
  for v in "${variants[@]}"; do
    log="$out/long-2e$e$v.log"
    wg=1
    [ -n "$v" ] && wg=0
    SPARSETX_WGMMA_FORWARD=$wg SPARSETX_WGMMA_BACKWARD=$wg timeout 300 \
      "$bin/sparsetx-run" --pattern patterns/strided.sp -D l=1024 --data "$data" \
      --device cuda --seq-len "$n" --layers 4 --d-model 256 --heads 4 --recompute --batch 1 \
      --steps 2 --json "$out/long-2e$e$v.json" bench >"$log" 2>&1
    rc=$?
    echo "n = 2^$e$v: rc $rc | $(grep -A1 -E "ms/step" "$log" | tail -n 1) $(grep -E "error" "$log" | head -n 1 | cut -c1-200)"
  done
done
# Every log and JSON in one archive; PACK=0 leaves it to the caller
# (gpu-verify.sh packs its own folder).
[ "${PACK:-1}" = 0 ] || pack_results "$out"
