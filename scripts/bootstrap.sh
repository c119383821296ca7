#!/usr/bin/env bash
# Installs what sparsetx needs on Debian 12 (apt-get; the CUDA Toolkit is
# expected under /usr/local/cuda or $CUDAToolkit_ROOT), with the default data
# sets (dict-gcide: text, dataset-fashion-mnist: images), and builds it in
# build/.
# Safe to run again: packages already present are not fetched twice and the
# build is incremental.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  cmake ninja-build g++ python3
  llvm-22-dev libmlir-22-dev mlir-22-tools llvm-22-tools
  libzstd-dev libz3-dev libedit-dev
  libfmt-dev libgtest-dev libpng-dev zlib1g-dev libopenblas-dev
  dict-gcide dataset-fashion-mnist
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "bootstrap: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

build_type="${SPARSETX_BUILD_TYPE:-Release}"
if [ ! -f build/build.ninja ]; then
  cmake -G Ninja -B build -DCMAKE_BUILD_TYPE="$build_type" .
fi
cmake --build build
