#!/usr/bin/env bash
# The paper's Table 2 at GPU scale (run on the GPU machine with .gpu-model/
# carried and the Fashion-MNIST directory in .gpu-model/data/fashion-mnist):
# 8 layers, d = 256, 8 heads, bf16, 1500 steps of 16 sequences; text n = 1024
# (GCIDE; fixed l = 32 c = 8, strided l = 32, dense), images n = 784
# (Fashion-MNIST; strided l = 28, dense). Same model, steps, data and seed
# per data set. Prints the markdown table (bits per byte/dim on 262,144
# held-out tokens of valid and test).
#   bash scripts/table2-gpu.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
here=.gpu-model
model="--device cuda --layers 8 --d-model 256 --heads 8 --batch 16 --lr 2e-3 --warmup 100 --eval-every 500 --eval-tokens 65536"
SPARSETX_RUN="${SPARSETX_RUN:-$here/bin/sparsetx-run}" \
TEXT_DATA="${TEXT_DATA:-$here/data/gcide.dict.dz}" \
IMAGE_DATA="${IMAGE_DATA:-$here/data/fashion-mnist}" \
STEPS="${STEPS:-1500}" TEXT_L=32 \
TEXT_FLAGS="$model --seq-len 1024" IMAGE_FLAGS="$model" \
  bash scripts/table2.sh "${1:-${OUT:-out}/table2}" 262144
