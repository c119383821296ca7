#!/usr/bin/env bash
# Runs on the GPU machine with the bundle of scripts/gpu-bundle.sh carried
# (.gpu/): Nsight Compute on the attention kernels of one or more cases of
# attention-bench, to see what bounds them (the fixed pattern's forward runs
# at about 274 TF/s on wgmma where dense reaches 387: docs/benchmarks.md,
# "Session 12"). For each case it profiles one launch of each of the
# forward, dK/dV (fused dQ) and merge/prepare/convert kernels after the
# warm-up, with the clocks left alone (METHOD.md), and prints a table per
# kernel: duration, tensor-pipe and issue utilization, achieved occupancy,
# L2 and DRAM throughput, and the top warp stall reasons. The report goes
# to ncu-CASE.ncu-rep (ncu --import opens it), its raw page to the .csv.
#   bash scripts/gpu-ncu-attention.sh [CASE...]   (default fixed/16384/64
#                                                  dense/16384/64)
#   BENCH_ARGS passes options to attention-bench (e.g.
#   "--wgmma-forward=false"); KERNELS is the ncu kernel-name regex (default
#   sparsetx_(fwd|bwd_dkdvq)_); out: $OUT (or out/) ncu-CASE.{ncu-rep,csv,txt}.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
bin=.gpu/bin
out="${OUT:-out}"
mkdir -p "$out"
command -v ncu >/dev/null || { echo "gpu-ncu-attention: ncu is not on the PATH" >&2; exit 2; }
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(fixed/16384/64 dense/16384/64)
metrics=gpu__time_duration.sum,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_issued.avg.pct_of_peak_sustained_active,sm__warps_active.avg.pct_of_peak_sustained_active,lts__t_sectors.avg.pct_of_peak_sustained_elapsed,dram__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size,launch__registers_per_thread,launch__shared_mem_per_block_dynamic
status=0
for c in "${cases[@]}"; do
  name=${c//\//-}
  echo "== $c"
  # One launch of each matching kernel, after the bench's first 20 (its
  # warm-up), so that the caches and clocks are in their steady state.
  # shellcheck disable=SC2086
  timeout 300 ncu --clock-control none --target-processes all \
    --kernel-name "regex:${KERNELS:-sparsetx_(fwd|bwd_dkdvq)_}" --launch-skip 20 --launch-count 4 \
    --metrics "$metrics" --section WarpStateStats -f -o "$out/ncu-$name" \
    "$bin/attention-bench" --quick --case "$c" ${BENCH_ARGS:-} --out "$out/bench-$name.json" \
    > "$out/ncu-$name.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || { echo "ncu: rc $rc"; tail -n 5 "$out/ncu-$name.log"; status=1; continue; }
  ncu --import "$out/ncu-$name.ncu-rep" --csv --page raw > "$out/ncu-$name.csv" 2>> "$out/ncu-$name.log" ||
    { echo "ncu --import failed"; status=1; continue; }
  python3 - "$out/ncu-$name.csv" <<'EOF' | tee "$out/ncu-$name.txt"
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if r]
# ncu's CSV: a header row of metric names, a row of units, then a row per kernel.
start = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
head, units, data = rows[start], rows[start + 1], rows[start + 2:]
col = {n: i for i, n in enumerate(head)}
want = ["gpu__time_duration.sum", "sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active",
        "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
        "sm__inst_issued.avg.pct_of_peak_sustained_active", "sm__warps_active.avg.pct_of_peak_sustained_active",
        "lts__t_sectors.avg.pct_of_peak_sustained_elapsed", "dram__throughput.avg.pct_of_peak_sustained_elapsed",
        "launch__grid_size", "launch__registers_per_thread", "launch__shared_mem_per_block_dynamic"]
short = ["time", "gmma%", "hmma%", "issue%", "warps%", "L2%", "dram%", "grid", "regs", "smem"]
print("kernel".ljust(40), *(s.rjust(8) for s in short))
for r in data:
    vals = [r[col[w]] if w in col else "-" for w in want]
    print(r[col["Kernel Name"]][:40].ljust(40), *(v[:8].rjust(8) for v in vals))
    def number(text):
        try:
            return float(text.replace(",", ""))
        except ValueError:
            return None
    stalls = sorted(((number(r[i]), n) for n, i in col.items()
                     if "issue_stalled_" in n and i < len(r) and number(r[i]) is not None),
                    reverse=True)[:5]
    if stalls:
        print("  top stalls:", ", ".join(f"{n.split('stalled_')[-1]} {v:.3g}" for v, n in stalls))
EOF
done
exit $status
