#!/usr/bin/env python3
"""The peers of sparsetx's attention kernels, measured on the GPU.

PyTorch SDPA (its FlashAttention and cuDNN backends, each where it runs) for
dense causal attention and
FlexAttention (torch.compile'd, with a block mask built from the same mask
as the .sp pattern) for every pattern. Forward and forward+backward, bf16,
median of many runs after warm-up, timed with CUDA events
(triton.testing.do_bench). Prints a table and writes JSON.

    python3 bench/peers.py --out peers.json [--quick] [--case NAME/N/D ...]
                           [--no-flex-decode]

Decode (one query row at the last position, batch-heads 8): SDPA against
the full K/V of length position + 1, and FlexAttention's decode path with the
pattern's block mask, for dense, strided, fixed at n = 16384 and fixed at
n = 12288, D = 64.

--case limits the run to the named cases (e.g. --case fixed/16384/64), as
attention-bench's --case does; the JSON is rewritten after every case.
"""
import argparse
import json
import math
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention
from triton.testing import do_bench

# The patterns of the issue, as FlexAttention mask_mods. Each must match the
# .sp file of the same name in patterns/ (the tests of sparsetx check the .sp
# side against its own oracle; here the mask is written out once more).
def mask_mods(l=128, c=32, w=256):
    return {
        "dense": lambda b, h, q, k: q >= k,
        "local": lambda b, h, q, k: (q >= k) & (q - k < w),
        "strided": lambda b, h, q, k: (q >= k) & (((q - k) < l) | ((q - k) % l == 0)),
        "fixed": lambda b, h, q, k: (q >= k) & (((q // l) == (k // l)) | ((k % l) >= l - c)),
    }


def attended_pairs(mod, n, device):
    q = torch.arange(n, device=device).view(n, 1)
    total = 0
    for k0 in range(0, n, 4096):
        k = torch.arange(k0, min(n, k0 + 4096), device=device).view(1, -1)
        total += int(mod(0, 0, q, k).sum().item())
    return total


def timed(fn, quick):
    warmup, rep = (25, 100) if not quick else (5, 20)
    return do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def run_case(name, mod, n, heads, dim, quick, flex, decode=False, flex_decode=True):
    dev = "cuda"
    torch.manual_seed(0)
    shape = (1, heads, n, dim)
    q, k, v = (torch.randn(shape, device=dev, dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    do = torch.randn(shape, device=dev, dtype=torch.bfloat16)
    pairs = attended_pairs(mod, n, dev) * heads
    flops_fwd = 4.0 * pairs * dim
    rows = []

    def record(peer, fwd_ms, fb_ms):
        rows.append({
            "peer": peer, "pattern": name, "n": n, "heads": heads, "head_dim": dim,
            "fwd_ms": fwd_ms, "fwd_bwd_ms": fb_ms,
            "fwd_tflops": flops_fwd / fwd_ms / 1e9,
            "fwd_bwd_tflops": 3.5 * flops_fwd / fb_ms / 1e9,
            "attended_pairs": pairs,
        })

    if name == "dense":
        fwd = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
        def fb():
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            o.backward(do)
        # Every SDPA backend that takes the case: FlashAttention (FA2 in
        # PyTorch) and cuDNN's (FlashAttention-3 class on Hopper, PyTorch's
        # own pick there); compare.py sets each of ours beside the fastest.
        backends = torch.nn.attention.SDPBackend
        for peer, backend in (("sdpa-flash", backends.FLASH_ATTENTION),
                              ("sdpa-cudnn", backends.CUDNN_ATTENTION)):
            try:
                with torch.nn.attention.sdpa_kernel(backend):
                    record(peer, timed(fwd, quick), timed(fb, quick))
            except RuntimeError as e:
                print(f"{peer}: not available here ({str(e).splitlines()[0][:120]})",
                      file=sys.stderr)

    block_mask = create_block_mask(mod, B=None, H=None, Q_LEN=n, KV_LEN=n, device=dev)
    ffwd = lambda: flex(q, k, v, block_mask=block_mask)
    def ffb():
        o = flex(q, k, v, block_mask=block_mask)
        o.backward(do)
    record("flex", timed(ffwd, quick), timed(ffb, quick))

    if decode:
        rows += run_decode(name, mod, n, heads, dim, quick, flex, flex_decode)
    return rows


def run_decode(name, mod, n, heads, dim, quick, flex, flex_decode):
    """Decode peers of AttentionPlan::decode at the last position: one query
    row per batch-head against K/V of length position + 1 (= n). SDPA
    attends every key of the row (the dense row; exact for dense causal);
    FlexAttention's decode path (Q_LEN = 1) takes the pattern's row through
    a block mask of the mask shifted to the position. Latency in us."""
    dev = "cuda"
    torch.manual_seed(1)
    pos = n - 1
    q = torch.randn((1, heads, 1, dim), device=dev, dtype=torch.bfloat16)
    k, v = (torch.randn((1, heads, pos + 1, dim), device=dev, dtype=torch.bfloat16)
            for _ in range(2))
    rows = []

    def rec(peer, us):
        rows.append({"peer": peer, "pattern": name, "n": n, "heads": heads,
                     "head_dim": dim, "decode_position": pos,
                     "decode_batch_heads": heads, "decode_us": us})

    with torch.no_grad():
        sdpa = lambda: F.scaled_dot_product_attention(q, k, v)
        rec("sdpa-decode", timed(sdpa, quick) * 1e3)
        if flex_decode:
            try:
                shifted = lambda b, h, qi, ki: mod(b, h, qi + pos, ki)
                bm = create_block_mask(shifted, B=None, H=None, Q_LEN=1,
                                       KV_LEN=pos + 1, device=dev)
                fdec = lambda: flex(q, k, v, block_mask=bm)
                rec("flex-decode", timed(fdec, quick) * 1e3)
            except Exception as e:  # a peer that cannot run is reported, not fatal
                print(f"flex decode {name}/{n}/{dim}: {type(e).__name__}: {e}",
                      file=sys.stderr)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="peers.json")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--case", action="append", default=[],
                    help="run only NAME/N/D (repeatable)")
    ap.add_argument("--no-flex-decode", action="store_true",
                    help="decode: SDPA only (no FlexAttention compile)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("peers.py: no CUDA device")
    # Every (shape, mask) is a new specialization of the compiled
    # flex_attention; past Dynamo's default recompile limit (8) it would fall
    # back to the unfused implementation and time that instead.
    torch._dynamo.config.recompile_limit = 1024
    torch._dynamo.config.accumulated_recompile_limit = 4096
    flex = torch.compile(flex_attention, dynamic=False)
    cases = []
    for dim in (64, 128):
        for n in (4096, 16384):
            for name, mod in mask_mods().items():
                cases.append((name, mod, n, 8, dim))
    # The paper's settings: enwik8 (fixed, n = 12288) and images (strided,
    # n = 3072 with the stride = one row of 32 pixels x 3 channels).
    cases.append(("fixed", mask_mods()["fixed"], 12288, 8, 64))
    cases.append(("strided", mask_mods(l=96)["strided"], 3072, 8, 64))
    if args.case:
        cases = [c for c in cases if f"{c[0]}/{c[2]}/{c[4]}" in args.case]
    # Decode (as attention-bench): dense, strided, fixed at n = 16384 and
    # fixed at n = 12288, D = 64.
    def decodes(name, n, dim):
        return dim == 64 and ((n == 16384 and name != "local") or
                              (n == 12288 and name == "fixed"))
    results = []
    for case in cases:
        results += run_case(*case, quick=args.quick, flex=flex,
                            decode=decodes(case[0], case[2], case[4]),
                            flex_decode=not args.no_flex_decode)
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "results": results}, f, indent=1)
    print(f"{'peer':<11} {'pattern':<8} {'n':>6} {'D':>4} {'fwd ms':>8} {'fwd+bwd ms':>11} "
          f"{'fwd TF/s':>9} {'f+b TF/s':>9}")
    for r in results:
        if "decode_us" in r:
            continue
        print(f"{r['peer']:<11} {r['pattern']:<8} {r['n']:>6} {r['head_dim']:>4} {r['fwd_ms']:>8.3f} "
              f"{r['fwd_bwd_ms']:>11.3f} {r['fwd_tflops']:>9.1f} {r['fwd_bwd_tflops']:>9.1f}")
    dec = [r for r in results if "decode_us" in r]
    if dec:
        print(f"{'peer':<11} {'pattern':<8} {'n':>6} {'D':>4} {'decode us':>10} (position n - 1, "
              f"batch-heads {dec[0]['decode_batch_heads']})")
        for r in dec:
            print(f"{r['peer']:<11} {r['pattern']:<8} {r['n']:>6} {r['head_dim']:>4} "
                  f"{r['decode_us']:>10.1f}")


if __name__ == "__main__":
    main()
