#!/usr/bin/env bash
# Builds, here, what the GPU machine needs for the model (issue 6) and copies
# it into .gpu-model/ (git-ignored), which a device call carries:
# bin/CudaModelTest, bin/AttentionDecodeTest and bin/sparsetx-run (stripped;
# LLVM/MLIR linked statically), the GCIDE dictionary and Fashion-MNIST (the
# GPU machine has no Debian packages; IMAGES=0 leaves Fashion-MNIST out), and
# gpu-model.sh, which runs the tests, training and the benchmarks there
# (scripts/table2-gpu.sh: the pattern comparison).
# SANITIZE=1 adds the kernel tests and negative controls gpu-sanitize.sh runs
# (bash .gpu-model/gpu-sanitize.sh there).
#   scripts/gpu-model-bundle.sh && (device) bash .gpu-model/gpu-model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-.gpu-model}"
./scripts/bootstrap.sh >/dev/null
ninja -C build CudaModelTest AttentionDecodeTest sparsetx-run >/dev/null
rm -rf "$dest" && mkdir -p "$dest/bin" "$dest/data"
strip -o "$dest/bin/CudaModelTest" build/unittests/CudaModelTest
strip -o "$dest/bin/AttentionDecodeTest" build/unittests/AttentionDecodeTest
strip -o "$dest/bin/sparsetx-run" build/bin/sparsetx-run
cp /usr/share/dictd/gcide.dict.dz "$dest/data/"
[ "${IMAGES:-1}" = 0 ] || cp -r /usr/share/datasets/fashion-mnist "$dest/data/"
cp scripts/gpu-model.sh "$dest/"
if [ "${SANITIZE:-0}" = 1 ]; then
  extra=(AttentionForwardTest AttentionBackwardTest sanitizer-control)
  ninja -C build "${extra[@]}" >/dev/null
  for t in "${extra[@]}"; do
    strip -o "$dest/bin/$t" "$(find build/unittests build/bin -maxdepth 1 -type f -name "$t" | head -n 1)"
  done
  cp scripts/gpu-sanitize.sh "$dest/"
fi
du -sh "$dest"
