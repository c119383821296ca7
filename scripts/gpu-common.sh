# shellcheck shell=bash
# Helpers the GPU scripts share (sourced, not run): gpu-wgmma.sh,
# gpu-verify.sh, gpu-model.sh and gpu-long.sh.

# sharded BINARY GTEST_ARGS...: SHARDS (default 8) processes of a gtest
# binary at once, each a shard of its cases (NVRTC compiles on the CPU, so
# the cases' kernels build in parallel; the disk cache's entries are renamed
# into place, safe between processes); each shard bounded by STEP_TIMEOUT
# (default 420 s). Fails if any shard does.
sharded() {
  local b="$1"; shift
  local pids=() i rc=0
  for ((i = 0; i < ${SHARDS:-8}; i++)); do
    GTEST_TOTAL_SHARDS=${SHARDS:-8} GTEST_SHARD_INDEX=$i timeout "${STEP_TIMEOUT:-420}" "$b" "$@" &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || rc=1; done
  return $rc
}

# pack_results DIR [ARCHIVE]: every file under DIR (but an earlier
# results.tgz) into ARCHIVE (default DIR/results.tgz), written whole or not
# at all: a device call brings back only so many files from $OUT, so one
# archive keeps every log and JSON.
pack_results() {
  local dir="$1" archive="${2:-$1/results.tgz}" tmp
  tmp=$(mktemp /tmp/gpu-pack.XXXXXX) || return 1
  if tar czf "$tmp" -C "$dir" --exclude=./results.tgz . 2>/dev/null; then
    mv "$tmp" "$archive"
  else
    rm -f "$tmp"
    return 1
  fi
}
