#!/usr/bin/env bash
# Builds, here, what a several-GPU machine needs for data-parallel training
# (issue 7) and copies it into a git-ignored directory directly under the
# repository root (default .gpu-dist/), which a device call carries:
# bin/sparsetx-run and bin/CudaModelTest (stripped; LLVM/MLIR linked
# statically), the GCIDE dictionary, and gpu-dist.sh, which runs there the
# 1-rank test, the 16-bit conversion kernels, the 1- vs 2-GPU throughput in
# fp32 and bf16 with and without overlap, the training comparisons and the
# kill tests.
#   scripts/gpu-dist-bundle.sh [DIR] && (device) bash DIR/gpu-dist.sh
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-.gpu-dist}"
ninja -C build -j2 sparsetx-run CudaModelTest >/dev/null
rm -rf "$dest" && mkdir -p "$dest/bin" "$dest/data"
strip -o "$dest/bin/sparsetx-run" build/bin/sparsetx-run
strip -o "$dest/bin/CudaModelTest" build/unittests/CudaModelTest
cp /usr/share/dictd/gcide.dict.dz "$dest/data/"
cp scripts/gpu-dist.sh "$dest/"
du -sh "$dest"
