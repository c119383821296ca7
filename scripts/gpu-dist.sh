#!/usr/bin/env bash
# Runs on a machine with 2+ GPUs from the repository root with .gpu-dist/
# carried (scripts/gpu-dist-bundle.sh): the 1-rank NCCL test, tiny-model
# training on 1 GPU, on --gpus 1 / 2 and on 2 launcher-started ranks (losses
# compared), enwik8-shaped throughput on 1 and 2 GPUs, and the kill tests.
# $OUT (or out/) gets summary.txt and logs.tar.gz; the runs live in /tmp/gd.
# NVLink multicast stays off: NCCL_NVLS_ENABLE=0 for every process.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 NCCL_DEBUG=WARN
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
bin="$here/bin/sparsetx-run"
data="$here/data/gcide.dict.dz"
final="${OUT:-out}"
out=/tmp/gd
rm -rf "$out" && mkdir -p "$out" "$final"
log="$final/summary.txt"
trap 'tar -C "$out" -czf "$final/logs.tar.gz" --exclude="*.bin" . 2>/dev/null' EXIT
say() { echo "$*" | tee -a "$log"; }
rc() { # status, log: says it, and the log's end when it failed
  say "  rc=$1"; [ "$1" = 0 ] || tail -n 6 "$2" | tee -a "$log"; }
# Sections are skipped once the time left (GD_BUDGET seconds in all) is short.
budget="${GD_BUDGET:-280}"
have() { [ $((budget - SECONDS)) -ge "$1" ] || { say "(skipped: ${SECONDS} s used)"; false; }; }
nvidia-smi --query-gpu=index,name,driver_version --format=csv | tee -a "$log"
nvidia-smi topo -m 2>&1 | head -5 | tee -a "$log"
# NCCL: where the driver image has it.
if ! ldconfig -p | grep -q libnccl.so.2 && [ ! -e /usr/local/cuda/lib/libnccl.so.2 ] &&
   [ ! -e /usr/local/cuda/lib64/libnccl.so.2 ]; then
  lib="$(find /usr /opt -name 'libnccl.so.2' 2>/dev/null | head -n 1)"
  [ -n "$lib" ] && export SPARSETX_NCCL_LIBRARY="$lib"
fi
say "NCCL library: ${SPARSETX_NCCL_LIBRARY:-default search}"

say "== 1. test/gpu/nccl-one-rank.sh"
timeout 100 bash test/gpu/nccl-one-rank.sh "$bin" patterns "$data" 2>&1 | tail -n 30 | tee -a "$log"

tiny=(--pattern patterns/fixed.sp --data "$data" --preset tiny --device cuda
      --precision fp32 --deterministic --steps 50 --batch 16 --eval-every 25
      --eval-tokens 16384 --samples 0 --metrics jsonl --check-every 10)
say "== 2. tiny, 50 steps, batch 16: 1 GPU, --gpus 1, --gpus 2"
timeout 45 "$bin" "${tiny[@]}" --out "$out/t1" train >"$out/tiny-1gpu.log" 2>&1; rc $? "$out/tiny-1gpu.log"
timeout 45 "$bin" "${tiny[@]}" --gpus 1 --out "$out/tg1" train >"$out/tiny-gpus1.log" 2>&1; rc $? "$out/tiny-gpus1.log"
NCCL_DEBUG=INFO timeout 60 "$bin" "${tiny[@]}" --gpus 2 --out "$out/tg2" train >"$out/tiny-gpus2.log" 2>&1; rc $? "$out/tiny-gpus2.log"
grep -E "NCCL INFO (Channel 00|Connected all|comm 0x.*rank 0 nRanks)|P2P|SHM|data parallel" "$out/tiny-gpus2.log" | head -n 8 | tee -a "$log"
python3 - "$out" <<'PY' 2>&1 | tee -a "$log"
import json, sys
out = sys.argv[1]
def rows(d):
    try:
        return [json.loads(l) for l in open(f"{out}/{d}/metrics.jsonl")]
    except Exception as e:
        return []
a, b, c = rows("t1"), rows("tg1"), rows("tg2")
print(f"rows: 1gpu {len(a)}, gpus1 {len(b)}, gpus2 {len(c)}")
same = all(x["loss_bits"] == y["loss_bits"] and x["grad_norm"] == y["grad_norm"] for x, y in zip(a, b)) and len(a) == len(b) > 0
print("1 GPU vs --gpus 1: bit-identical losses and norms:", same)
if a and c:
    d = max(abs(x["loss_bits"] - y["loss_bits"]) for x, y in zip(a, c))
    print(f"1 GPU vs --gpus 2: max |loss difference| {d:.3g} bits")
    for x, y in zip(a, c):
        if x["step"] in (1, 2, 10, 25, 50):
            print(f"  step {x['step']:3d}: 1 GPU {x['loss_bits']:.6f}  2 GPUs {y['loss_bits']:.6f}  valid {x.get('valid_bits', '')} {y.get('valid_bits', '')}  tok/s {x['tokens_per_s']:.0f} {y['tokens_per_s']:.0f}")
PY
cmp "$out/t1/checkpoint.bin" "$out/tg1/checkpoint.bin" && say "checkpoints 1 GPU == --gpus 1"
have 100 && {
say "2 ranks started by a launcher (SPARSETX_WORLD_SIZE=2, an id file):"
rm -f "$out/ncclid"
for r in 1 0; do
  SPARSETX_WORLD_SIZE=2 SPARSETX_RANK=$r SPARSETX_NCCL_ID_FILE="$out/ncclid" \
    timeout 45 "$bin" "${tiny[@]}" --out "$out/te" train >"$out/tiny-env$r.log" 2>&1 &
done
wait
if cmp <(sed -E 's/"(elapsed_s|tokens_per_s)":[^,}]*,?//g' "$out/te/metrics.jsonl") \
       <(sed -E 's/"(elapsed_s|tokens_per_s)":[^,}]*,?//g' "$out/tg2/metrics.jsonl"); then
  say "launcher-started ranks == --gpus 2, step for step"
else
  say "launcher-started ranks differ from --gpus 2:"; tail -n 3 "$out/tiny-env0.log" "$out/tiny-env1.log" | tee -a "$log"
fi
}
have 90 && {
say "resume the 2-GPU run's checkpoint on 1 GPU for 10 more steps:"
timeout 30 "$bin" --out "$out/tg2" --resume --steps 60 --device cuda --precision fp32 --deterministic --samples 0 train 2>&1 | tail -n 2 | tee -a "$log"

}
say "== 3. kill tests (--gpus 2, --nccl-timeout 10)"
long=("${tiny[@]}" --steps 100000 --eval-every 0 --save-every 0 --nccl-timeout 10 --gpus 2)
kill_test() { # name, signal, which (child|parent)
  "$bin" "${long[@]}" --out "$out/k-$1" train >"$out/kill-$1.log" 2>&1 &
  local parent=$!
  for i in $(seq 1 60); do grep -q "^step " "$out/kill-$1.log" && break; sleep 0.5; done
  local child=""
  for p in /proc/[0-9]*; do
    [ "$(awk '{print $4}' "$p/stat" 2>/dev/null)" = "$parent" ] && child="${p#/proc/}" && break
  done
  local victim=$child; [ "$3" = parent ] && victim=$parent
  local t0; t0=$(date +%s.%N)
  kill -"$2" "$victim"
  (sleep 40; kill -9 "$parent" "$child" 2>/dev/null) & local guard=$!
  wait "$parent"; local rc=$?
  kill "$guard" 2>/dev/null
  local waited=0
  while kill -0 "$child" 2>/dev/null && [ $waited -lt 60 ]; do sleep 0.5; waited=$((waited+1)); done
  local t1; t1=$(date +%s.%N)
  say "kill $1 (SIG$2 to the $3): rank 0 rc=$rc, every rank gone after $(python3 -c "print(round($t1-$t0,1))") s; child alive: $(kill -0 "$child" 2>/dev/null && echo yes || echo no)"
  grep -E "error" "$out/kill-$1.log" | tail -n 3 | tee -a "$log"
  kill -9 "$child" 2>/dev/null
}
have 90 && kill_test dead-child KILL child
have 70 && kill_test hung-child STOP child
have 60 && kill_test dead-parent KILL parent
say "== 4. throughput: enwik8 shape, 6 layers, bf16"
big=(--pattern patterns/fixed.sp --data "$data" --preset enwik8 --layers 6
     --device cuda --steps 6)
have 60 && timeout 60 "$bin" "${big[@]}" --batch 4 --json "$final/bench-1gpu-b4.json" bench 2>&1 | tail -n 2 | tee -a "$log"
have 60 && timeout 60 "$bin" "${big[@]}" --batch 8 --gpus 2 --json "$final/bench-2gpu-b8.json" bench 2>&1 | tail -n 2 | tee -a "$log"
have 45 && timeout 45 "$bin" "${big[@]}" --batch 4 --gpus 2 bench 2>&1 | tail -n 2 | tee -a "$log"

say "done"
