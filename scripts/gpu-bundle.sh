#!/usr/bin/env bash
# Builds, here, everything the GPU machine needs and copies it, stripped, into
# .gpu/ (git-ignored), which a device call carries: the GPU test binaries, the
# sanitizer's negative controls, the benchmark and sparsec in .gpu/bin, and the scripts that run them there
# (gpu-run.sh, gpu-sanitize.sh). The tools are statically linked against
# LLVM/MLIR; NVRTC and the driver come from the GPU machine's CUDA
# installation.
#   scripts/gpu-bundle.sh [dir] && (device) bash .gpu/gpu-run.sh
#   TRAIN_DATA=1 scripts/gpu-bundle.sh && (device) bash scripts/gpu-verify.sh
#   XZ=1 TRAIN_DATA=1 scripts/gpu-bundle.sh && (device, carrying .gpuz)
#     tar xJf .gpuz/bundle.tar.xz && bash scripts/gpu-verify.sh
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-.gpu}"
./scripts/bootstrap.sh >/dev/null
targets=(sparsec sparsetx-run)
for t in $(ninja -C build -t targets all | sed -n 's/^\(\(Cuda\|Attention\)[A-Za-z]*Test\|HopperMmaTest\|attention-bench\|sanitizer-control\): .*/\1/p' | sort -u); do
  targets+=("$t")
done
ninja -C build "${targets[@]}" >/dev/null
rm -rf "$dest" && mkdir -p "$dest/bin"
for t in "${targets[@]}"; do
  f=$(find build/bin build/unittests build/bench -maxdepth 1 -type f -name "$t" 2>/dev/null | head -n 1)
  [ -n "$f" ] || { echo "gpu-bundle: $t was not built" >&2; exit 1; }
  strip -o "$dest/bin/$t" "$f"
done
cp scripts/gpu-run.sh scripts/gpu-sanitize.sh "$dest/"
# TRAIN_DATA=1: the first TRAIN_DATA_MB (default 20) MB of the GCIDE
# dictionary (gzip, about a third of it; 20 MB has a train split of 18 MB,
# enough for n = 2^23; 10 is plenty for 2^20) as .gpu/data/gcide.gz for the
# model runs of scripts/gpu-verify.sh (the GPU machine has no Debian
# packages), and without the sanitizer's controls and CudaTest, which
# gpu-verify.sh does not run by default, to stay within a call's 64 MiB
# (kept with XZ=1, below).
if [ "${TRAIN_DATA:-0}" = 1 ]; then
  mb="${TRAIN_DATA_MB:-20}"
  [[ "$mb" =~ ^[1-9][0-9]*$ ]] || { echo "gpu-bundle: TRAIN_DATA_MB must be a positive whole number, not '$mb'" >&2; exit 2; }
  mkdir -p "$dest/data"
  # (zcat ends on SIGPIPE when head has its bytes: not a failure here)
  (set +o pipefail; zcat /usr/share/dictd/gcide.dict.dz | head -c $((mb * 1000000)) | gzip -6 >"$dest/data/gcide.gz")
  [ "${XZ:-0}" = 1 ] || rm -f "$dest/bin/sanitizer-control" "$dest/bin/CudaTest"
fi
# EXTRA_BINS="PATH ...": more executables for bin/ (another build of
# attention-bench or sparsetx-run to compare with, named
# attention-bench-NAME / sparsetx-run-NAME: gpu-wgmma.sh's BUILDS and
# gpu-model.sh's AB find them there).
for f in ${EXTRA_BINS:-}; do
  [ -x "$f" ] || { echo "gpu-bundle: EXTRA_BINS: $f is not an executable file" >&2; exit 1; }
  cp "$f" "$dest/bin/"
done
du -sh "$dest"
# XZ=1: the bundle as one xz archive, ${dest}z/bundle.tar.xz (about a quarter
# of the size: carry that folder instead, and unpack it first on the
# device: tar xJf ${dest}z/bundle.tar.xz).
packed="$dest"
if [ "${XZ:-0}" = 1 ]; then
  rm -rf "${dest}z" && mkdir -p "${dest}z"
  tar cf - "$dest" | xz -T0 -6 >"${dest}z/bundle.tar.xz"
  packed="${dest}z"
  du -sh "$packed"
fi
# A device call carries the working tree and the carried paths, 64 MiB in
# all: say so here, not after a call that cannot start.
tree=$(git ls-files -z | xargs -0 cat 2>/dev/null | wc -c)
total=$(( $(du -sb "$packed" | cut -f1) + tree ))
if [ "$total" -gt $((64 * 1024 * 1024)) ]; then
  echo "gpu-bundle: $packed and the working tree hold $((total / 1048576)) MiB, over a device call's 64 MiB (TRAIN_DATA_MB smaller, fewer binaries, or XZ=1)" >&2
  exit 1
fi
echo "gpu-bundle: $((total / 1048576)) MiB with the working tree (a call carries at most 64)"
