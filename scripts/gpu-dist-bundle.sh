#!/usr/bin/env bash
# Builds, here, what a several-GPU machine needs for data-parallel training
# (issue 7) and copies it into .gpu-dist/ (git-ignored), which a device call
# carries: bin/sparsetx-run (stripped; LLVM/MLIR linked statically), the
# GCIDE dictionary, and gpu-dist.sh, which runs there the 1-rank test, the
# 1- vs 2-GPU training and throughput comparisons and the kill tests.
#   scripts/gpu-dist-bundle.sh && (device) bash .gpu-dist/gpu-dist.sh
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-.gpu-dist}"
ninja -C build -j2 sparsetx-run >/dev/null
rm -rf "$dest" && mkdir -p "$dest/bin" "$dest/data"
strip -o "$dest/bin/sparsetx-run" build/bin/sparsetx-run
cp /usr/share/dictd/gcide.dict.dz "$dest/data/"
cp scripts/gpu-dist.sh "$dest/"
du -sh "$dest"
