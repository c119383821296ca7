#!/usr/bin/env bash
# Runs on a machine with 2+ GPUs from the repository root with the bundle of
# scripts/gpu-dist-bundle.sh carried (default .gpu-dist/; the script finds its
# own directory): the 1-rank NCCL test and the 16-bit conversion kernels;
# enwik8-shaped throughput on 1 and 2 GPUs with the gradients all-reduced in
# fp32 and bf16, after the backward (--bucket-mb 0) and in buckets overlapped
# with it; tiny-model training on 1 GPU, --gpus 1 and --gpus 2 (losses
# compared, bucketing and repeat determinism checked); launcher-started
# ranks, resume on 1 GPU, and the kill/hang tests.
# $OUT (or out/) gets summary.txt, summary.json, the bench JSON files and
# logs.tar.gz; the runs live in /tmp/gd. NVLink multicast stays off:
# NCCL_NVLS_ENABLE=0 for every process. GD_BUDGET (seconds, default 540)
# bounds the whole; sections are skipped once the time left is short.
# GD_SECTIONS (default "1 2 3 4") picks sections, e.g. for a second call.
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
json="$out/facts.jsonl" # one JSON object per line, merged into summary.json
: >"$json"
trap 'tar -C "$out" -czf "$final/logs.tar.gz" --exclude="*.bin" . 2>/dev/null' EXIT
say() { echo "$*" | tee -a "$log"; }
fact() { echo "$1" >>"$json"; } # a JSON object
rc() { # status, log: says it, and the log's end when it failed
  say "  rc=$1"; [ "$1" = 0 ] || tail -n 6 "$2" | tee -a "$log"; }
budget="${GD_BUDGET:-540}"
have() { [ $((budget - SECONDS)) -ge "$1" ] || { say "(skipped: ${SECONDS} s used)"; false; }; }
sections=" ${GD_SECTIONS:-1 2 3 4} "
section() { [[ "$sections" == *" $1 "* ]]; }
nvidia-smi --query-gpu=index,name,driver_version --format=csv | tee -a "$log"
nvidia-smi topo -m 2>&1 | head -5 | tee -a "$log"
# NCCL: where the driver image has it.
if ! ldconfig -p | grep -q libnccl.so.2 && [ ! -e /usr/local/cuda/lib/libnccl.so.2 ] &&
   [ ! -e /usr/local/cuda/lib64/libnccl.so.2 ]; then
  lib="$(find /usr /opt -name 'libnccl.so.2' 2>/dev/null | head -n 1)"
  [ -n "$lib" ] && export SPARSETX_NCCL_LIBRARY="$lib"
fi
say "NCCL library: ${SPARSETX_NCCL_LIBRARY:-default search}"

if section 1; then
say "== 1. test/gpu/nccl-one-rank.sh (fp32: a 1-rank run equals the 1-GPU run)"
timeout 100 bash test/gpu/nccl-one-rank.sh "$bin" patterns "$data" 2>&1 | tail -n 30 | tee "$out/one-rank.log" | tee -a "$log"
verdict=$(grep -m1 -oE "^(PASS|FAIL|skipped)" "$out/one-rank.log" || echo "no verdict")
fact "{\"one_rank_test\": \"$verdict\"}"
if [ -x "$here/bin/CudaModelTest" ]; then
  say "== 1b. the 16-bit gradient conversions against the CPU"
  timeout 60 "$here/bin/CudaModelTest" --gtest_filter='OpsTest.GradientsToAndFrom16Bits' \
    >"$out/conversions.log" 2>&1; r=$?; rc $r "$out/conversions.log"
  tail -n 3 "$out/conversions.log" | tee -a "$log"
  fact "{\"conversion_kernels_rc\": $r}"
fi
fi

if section 2; then
say "== 2. throughput: enwik8 shape, 6 layers, bf16, 10 timed steps"
big=(--pattern patterns/fixed.sp --data "$data" --preset enwik8 --layers 6
     --device cuda --steps 10)
bench() { # name, timeout, arguments...
  local name=$1 limit=$2; shift 2
  have $((limit + 10)) || return 0
  timeout "$limit" "$bin" "${big[@]}" "$@" --json "$final/bench-$name.json" bench \
    >"$out/bench-$name.log" 2>&1; local r=$?
  say "  $name ($*): rc=$r"
  grep -E "^data parallel" "$out/bench-$name.log" | tee -a "$log"
  tail -n 1 "$out/bench-$name.log" | tee -a "$log"
}
bench 1gpu-b4 60 --batch 4
bench 2gpu-b8-fp32-after 60 --batch 8 --gpus 2 --allreduce fp32 --bucket-mb 0
bench 2gpu-b8-fp32-overlap 60 --batch 8 --gpus 2 --allreduce fp32
bench 2gpu-b8-bf16-after 60 --batch 8 --gpus 2 --allreduce bf16 --bucket-mb 0
bench 2gpu-b8-bf16-overlap 60 --batch 8 --gpus 2 --allreduce bf16
bench 2gpu-b8-bf16-overlap4 60 --batch 8 --gpus 2 --allreduce bf16 --bucket-mb 4
bench 2gpu-b4-bf16-overlap 60 --batch 4 --gpus 2 --allreduce bf16
python3 - "$final" <<'PY' 2>&1 | tee -a "$log"
import glob, json, os, sys
final = sys.argv[1]
runs = {}
for f in sorted(glob.glob(f"{final}/bench-*.json")):
    try:
        runs[os.path.basename(f)[6:-5]] = json.load(open(f))
    except Exception as e:
        print("unreadable", f, e)
one = runs.get("1gpu-b4")
print(f"{'run':24} {'ms/step':>9} {'tokens/s':>11} {'buckets':>8} {'scaling':>8}")
for name, r in runs.items():
    eff = ""
    if one and r.get("gpus", 1) > 1 and r["batch"] == 2 * one["batch"]:
        eff = f"{100 * r['tokens_per_second'] / (r['gpus'] * one['tokens_per_second']):.1f}%"
    print(f"{name:24} {r['ms_per_step_median']:9.1f} {r['tokens_per_second']:11.0f} "
          f"{r.get('gradient_buckets', 0):8} {eff:>8}")
json.dump({k: {x: r.get(x) for x in ("gpus", "batch", "allreduce", "bucket_mb",
                                         "gradient_buckets", "ms_per_step_median",
                                         "tokens_per_second", "parameters")}
           for k, r in runs.items()}, open("/tmp/gd/bench-table.json", "w"))
PY
fi

tiny=(--pattern patterns/fixed.sp --data "$data" --preset tiny --device cuda
      --precision fp32 --deterministic --steps 50 --batch 16 --eval-every 25
      --eval-tokens 16384 --samples 0 --metrics jsonl --check-every 10)
if section 3; then
say "== 3. tiny, fp32, --deterministic, 50 steps, batch 16"
trun() { # name, timeout, arguments...
  local name=$1 limit=$2; shift 2
  have $((limit + 10)) || return 0
  timeout "$limit" "$bin" "${tiny[@]}" "$@" --out "$out/$name" train >"$out/tiny-$name.log" 2>&1
  local r=$?; say "  $name ($*): rc=$r"; [ $r = 0 ] || tail -n 6 "$out/tiny-$name.log" | tee -a "$log"
  grep -E "^data parallel" "$out/tiny-$name.log" | tee -a "$log"
}
trun t1 45
trun tg1 45 --gpus 1
NCCL_DEBUG=INFO trun tg2 60 --gpus 2 --bucket-mb 0
grep -E "NCCL INFO (Channel 00|Connected all|comm 0x.*rank 0 nRanks)|P2P|SHM" "$out/tiny-tg2.log" | head -n 6 | tee -a "$log"
trun tg2o 60 --gpus 2 --bucket-mb 0.02
trun tg2o-again 60 --gpus 2 --bucket-mb 0.02
trun tg2b 60 --gpus 2 --bucket-mb 0.02 --allreduce bf16
# bf16 arithmetic: one rank keeps its gradients fp32 (nothing to add), so
# --gpus 1 must still equal one GPU bit for bit.
trun t1-bf16 45 --precision bf16
trun tg1-bf16 45 --precision bf16 --gpus 1
python3 - "$out" <<'PY' 2>&1 | tee -a "$log"
import json, sys
out = sys.argv[1]
def rows(d):
    try:
        return [json.loads(l) for l in open(f"{out}/{d}/metrics.jsonl")]
    except Exception:
        return []
def same(a, b):
    keys = ("loss_bits", "grad_norm", "valid_bits")
    return len(a) == len(b) > 0 and all(x.get(k) == y.get(k) for x, y in zip(a, b) for k in keys)
def maxdiff(a, b):
    return max((abs(x["loss_bits"] - y["loss_bits"]) for x, y in zip(a, b)), default=None)
r = {d: rows(d) for d in ("t1", "tg1", "tg2", "tg2o", "tg2o-again", "tg2b",
                          "t1-bf16", "tg1-bf16")}
facts = {
    "rows": {d: len(v) for d, v in r.items()},
    "1gpu_vs_gpus1_identical": same(r["t1"], r["tg1"]),
    "1gpu_vs_gpus1_identical_bf16": same(r["t1-bf16"], r["tg1-bf16"]),
    "gpus2_overlap_vs_after_identical": same(r["tg2"], r["tg2o"]),
    "gpus2_overlap_repeats_identical": same(r["tg2o"], r["tg2o-again"]),
    "max_loss_diff_1gpu_vs_gpus2_fp32": maxdiff(r["t1"], r["tg2o"]),
    "max_loss_diff_1gpu_vs_gpus2_bf16_allreduce": maxdiff(r["t1"], r["tg2b"]),
    "max_loss_diff_fp32_vs_bf16_allreduce": maxdiff(r["tg2o"], r["tg2b"]),
}
for k, v in facts.items():
    print(f"{k}: {v}")
for name in ("t1", "tg2o", "tg2b"):
    for x in r[name]:
        if x["step"] in (1, 25, 50):
            print(f"  {name:5} step {x['step']:3d}: {x['loss_bits']:.6f} bits, valid {x.get('valid_bits', '')}")
open(f"{out}/tiny-facts.json", "w").write(json.dumps(facts))
PY
cmp "$out/t1/checkpoint.bin" "$out/tg1/checkpoint.bin" && say "checkpoints 1 GPU == --gpus 1"
have 60 && {
say "2 ranks started by a launcher (SPARSETX_WORLD_SIZE=2, an id file), vs --gpus 2 --bucket-mb 0.02:"
rm -f "$out/ncclid"
for r in 1 0; do
  SPARSETX_WORLD_SIZE=2 SPARSETX_RANK=$r SPARSETX_NCCL_ID_FILE="$out/ncclid" \
    timeout 45 "$bin" "${tiny[@]}" --bucket-mb 0.02 --out "$out/te" train >"$out/tiny-env$r.log" 2>&1 &
done
wait
if [ -s "$out/te/metrics.jsonl" ] && [ -s "$out/tg2o/metrics.jsonl" ] &&
   cmp <(sed -E 's/"(elapsed_s|tokens_per_s)":[^,}]*,?//g' "$out/te/metrics.jsonl") \
       <(sed -E 's/"(elapsed_s|tokens_per_s)":[^,}]*,?//g' "$out/tg2o/metrics.jsonl"); then
  say "launcher-started ranks == --gpus 2, step for step"; fact '{"launcher_equals_gpus2": true}'
else
  say "launcher-started ranks differ from --gpus 2:"; fact '{"launcher_equals_gpus2": false}'
  tail -n 3 "$out/tiny-env0.log" "$out/tiny-env1.log" | tee -a "$log"
fi
}
have 40 && {
say "resume the 2-GPU run's checkpoint on 1 GPU for 10 more steps:"
timeout 30 "$bin" --out "$out/tg2o" --resume --steps 60 --device cuda --precision fp32 --deterministic --samples 0 train 2>&1 | tail -n 2 | tee -a "$log"
}
fi

if section 4; then
say "== 4. kill tests (--gpus 2, --nccl-timeout 10, gradients in bf16 buckets)"
long=("${tiny[@]}" --steps 100000 --eval-every 0 --save-every 0 --nccl-timeout 10 --gpus 2
      --allreduce bf16 --bucket-mb 0.02)
kill_test() { # name, signal, which (child|parent)
  "$bin" "${long[@]}" --out "$out/k-$1" train >"$out/kill-$1.log" 2>&1 &
  local parent=$!
  for i in $(seq 1 60); do grep -q "^step " "$out/kill-$1.log" && break; sleep 0.5; done
  local child=""
  for p in /proc/[0-9]*; do
    [ "$(awk '{print $4}' "$p/stat" 2>/dev/null)" = "$parent" ] && child="${p#/proc/}" && break
  done
  if [ -z "$child" ]; then
    say "kill $1: no rank 1 to be found (did the run start?)"; tail -n 3 "$out/kill-$1.log" | tee -a "$log"
    fact "{\"kill_$1\": \"not run: no rank 1\"}"; kill -9 "$parent" 2>/dev/null; return
  fi
  local victim=$child; [ "$3" = parent ] && victim=$parent
  local t0; t0=$(date +%s.%N)
  kill -"$2" "$victim"
  (sleep 40; kill -9 "$parent" "$child" 2>/dev/null) & local guard=$!
  wait "$parent"; local rc=$?
  kill "$guard" 2>/dev/null
  local waited=0
  while kill -0 "$child" 2>/dev/null && [ $waited -lt 60 ]; do sleep 0.5; waited=$((waited+1)); done
  local t1; t1=$(date +%s.%N)
  local secs; secs=$(python3 -c "print(round($t1-$t0,1))")
  local alive; alive=$(kill -0 "$child" 2>/dev/null && echo true || echo false)
  say "kill $1 (SIG$2 to the $3): rank 0 rc=$rc, every rank gone after $secs s; child alive: $alive"
  fact "{\"kill_$1\": {\"rc\": $rc, \"seconds\": $secs, \"child_alive\": $alive}}"
  grep -E "error" "$out/kill-$1.log" | tail -n 3 | tee -a "$log"
  kill -9 "$child" 2>/dev/null
}
have 50 && kill_test dead-child KILL child
have 40 && kill_test hung-child STOP child
have 30 && kill_test dead-parent KILL parent
fi

python3 - "$out" "$final" <<'PY'
import json, os, sys
out, final = sys.argv[1:3]
summary = {}
for line in open(f"{out}/facts.jsonl"):
    line = line.strip()
    if line:
        summary.update(json.loads(line))
for name, key in (("bench-table.json", "bench"), ("tiny-facts.json", "tiny")):
    try:
        summary[key] = json.load(open(f"{out}/{name}"))
    except Exception:
        summary[key] = None
json.dump(summary, open(f"{final}/summary.json", "w"), indent=2)
PY
say "done after ${SECONDS} s"
