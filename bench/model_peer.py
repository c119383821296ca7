#!/usr/bin/env python3
"""The PyTorch peer of sparsetx's whole model (issue 6): training and sampling.

The same Sparse Transformer as model/core/Transformer.cpp, in PyTorch:

    x_0     = E_token[input] + E_row[t / s] + E_column[t % s]   (attention
              embeddings; s = the pattern's l, sqrt(n) for dense)
    h       = x_l + dropout(W_o attention(LN(x_l)) + b_o)        (pre-LN
    x_{l+1} = h   + dropout(W_2 gelu(W_1 LN(h) + b_1) + b_2)       blocks)
    logits  = W_out LN(x_L) + b_out,   cross-entropy over 256 bytes

gelu(x) = x * sigmoid(1.702 x), FF width 4d, q/k/v d wide, scale
1/sqrt(d/heads), one merged mask for every head and layer (what fixed.sp and
strided.sp declare with `heads = ...`), the paper's initialization (so the
loss starts at exactly ln 256), inputs = the start token 256 then the bytes.
Attention is FlexAttention (torch.compile'd flex_attention over a BlockMask of
the pattern), matrices under bf16 autocast (residual stream, layernorm and the
loss in fp32), fused AdamW (beta 0.9/0.95, eps 1e-8, weight decay 0.01 on the
weight matrices only) after gradient-norm clipping at 1.0 (as sparsetx's
trainer does), and optional activation checkpointing of every residual block
(torch.utils.checkpoint, use_reentrant=False: only each block's input is kept,
the paper's recomputation).

A training step is forward + backward + clipping + optimizer step, timed with
CUDA events; the figure is the median of the timed steps after the warm-up
steps (which include compilation). Peak memory is
torch.cuda.max_memory_allocated over the timed steps (parameters, gradients,
Adam state, activations, block mask).

    python3 bench/model_peer.py --preset enwik8 --batch 2 [--checkpoint]
    python3 bench/model_peer.py --preset long                # n = 1,048,576
    python3 bench/model_peer.py --preset long --sweep-n      # largest n that fits
    python3 bench/model_peer.py --preset enwik8 --sample 12288

--sample N times autoregressive sampling of N tokens at batch 1 with a KV
cache and dense decoding: every step attends (scaled_dot_product_attention, or
--decode-attn matmul) over the whole cache prefix with the pattern's row as a
boolean mask, so the result is the model's own attention computed densely: the
dense-attention decode reference of issue 6. Each step is one CUDA graph
replay (graphs captured per 1024-key bucket of the cache length;
--no-cuda-graph runs eagerly over the exact prefix).

Out of memory is reported, not raised: the JSON row says "OOM at n=...".
"""
import argparse
import gc
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

VOCAB = 256          # output bytes
START_TOKEN = 256    # the input vocabulary adds the start token
INPUT_VOCAB = VOCAB + 1

PRESETS = {
    # model/core/Config.cpp "enwik8": section 7.2 of the paper.
    "enwik8": dict(seq_len=12288, layers=30, d_model=512, heads=8, pattern="fixed",
                   l=128, c=32, dropout=0.4, checkpoint=False, batch=2),
    # Issue 6's long-sequence model: 3.8M parameters, strided l = 1024.
    "long": dict(seq_len=1 << 20, layers=4, d_model=256, heads=4, pattern="strided",
                 l=1024, c=32, dropout=0.0, checkpoint=True, batch=1),
    # model/core/Config.cpp "tiny" (a smoke test on the GPU).
    "tiny": dict(seq_len=256, layers=4, d_model=128, heads=4, pattern="fixed",
                 l=128, c=32, dropout=0.0, checkpoint=False, batch=16),
}


# ---------------------------------------------------------------------------
# Patterns: patterns/*.sp as FlexAttention mask_mods (b, h, q = i, kv = j).
# ---------------------------------------------------------------------------

def mask_mod(pattern, l=128, c=32):
    """The merged mask of patterns/<pattern>.sp (causal included)."""
    if pattern == "dense":        # dense.sp: causal; heads = true;
        return lambda b, h, q, k: q >= k
    if pattern == "strided":      # strided.sp: i - j < l || (i - j) % l == 0
        return lambda b, h, q, k: (q >= k) & (((q - k) < l) | ((q - k) % l == 0))
    if pattern == "fixed":        # fixed.sp: i / l == j / l || j % l >= l - c
        return lambda b, h, q, k: (q >= k) & (((q // l) == (k // l)) | ((k % l) >= l - c))
    raise ValueError(f"unknown pattern {pattern!r} (fixed, strided, dense)")


# Masks that are a function of i - j alone: their block structure follows from
# the block diagonal offset, so the BlockMask is built without evaluating the
# n x n mask (which at n = 2^20 is 10^12 elements).
TRANSLATION_INVARIANT = {"dense", "strided"}


def embed_stride(pattern, l, n):
    """sparsetx-run's chooseEmbedStride: the pattern's l, else sqrt(n)."""
    if pattern in ("fixed", "strided"):
        return min(l, n)
    return max(1, int(math.sqrt(n)))


def block_classes_by_offset(mod, nb, block, device):
    """(partial, full) bools over block offsets m = q_block - kv_block in
    [0, nb): block pair (qb, kb) covers every i - j in m*block +- (block-1)."""
    m = torch.arange(nb, device=device).view(nb, 1)
    r = torch.arange(-(block - 1), block, device=device).view(1, -1)
    delta = m * block + r
    base = nb * block + block           # keeps q and k non-negative
    vals = mod(0, 0, base + delta, torch.full_like(delta, base))
    anyv, allv = vals.any(-1), vals.all(-1)
    return anyv & ~allv, allv


def _ordered(selected, out_idx, out_num, row0):
    rows = selected.shape[0]
    out_num[row0:row0 + rows] = selected.sum(-1, dtype=torch.int32)
    # Stable sort of "not selected" puts the selected kv blocks first, ascending.
    out_idx[row0:row0 + rows] = torch.sort((~selected).to(torch.int8), dim=-1,
                                           stable=True).indices.to(torch.int32)


def build_block_mask(pattern, mod, n, block=128, device="cuda"):
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask
    if pattern not in TRANSLATION_INVARIANT:
        # fixed: let FlexAttention evaluate the mask (compiled past 64K, where
        # the eager n x n evaluation would not fit).
        return create_block_mask(mod, B=None, H=None, Q_LEN=n, KV_LEN=n, device=device,
                                 BLOCK_SIZE=block, _compile=n > 65536)
    nb = (n + block - 1) // block
    partial, full = block_classes_by_offset(mod, nb, block, device)
    kv_num = torch.empty(nb, dtype=torch.int32, device=device)
    kv_idx = torch.empty(nb, nb, dtype=torch.int32, device=device)
    full_num = torch.empty_like(kv_num)
    full_idx = torch.empty_like(kv_idx)
    kb = torch.arange(nb, device=device)
    chunk = max(1, (1 << 24) // nb)
    for q0 in range(0, nb, chunk):
        qb = torch.arange(q0, min(nb, q0 + chunk), device=device)
        off = qb.view(-1, 1) - kb.view(1, -1)
        valid = off >= 0
        offc = off.clamp(0, nb - 1)
        _ordered(valid & partial[offc], kv_idx, kv_num, q0)
        _ordered(valid & full[offc], full_idx, full_num, q0)
        del off, valid, offc
    view = lambda t: t.view(1, 1, *t.shape)
    try:
        return BlockMask.from_kv_blocks(view(kv_num), view(kv_idx), view(full_num),
                                        view(full_idx), BLOCK_SIZE=block, mask_mod=mod,
                                        seq_lengths=(n, n))
    except TypeError:  # older signature without seq_lengths
        return BlockMask.from_kv_blocks(view(kv_num), view(kv_idx), view(full_num),
                                        view(full_idx), BLOCK_SIZE=block, mask_mod=mod)


def attended_pairs(pattern, mod, n, device):
    """Attended (query, key) pairs of one head, or None where too costly."""
    if pattern in TRANSLATION_INVARIANT:
        delta = torch.arange(n, device=device, dtype=torch.int64)
        base = torch.full_like(delta, n)
        keep = mod(0, 0, base + delta, base)
        return int(((n - delta) * keep).sum().item())
    if n > 65536:
        return None
    q = torch.arange(n, device=device).view(n, 1)
    total = 0
    for k0 in range(0, n, 4096):
        k = torch.arange(k0, min(n, k0 + 4096), device=device).view(1, -1)
        total += int(mod(0, 0, q, k).sum().item())
    return total


# ---------------------------------------------------------------------------
# The model.
# ---------------------------------------------------------------------------

def gelu(x):
    return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    def __init__(self, d, heads, dropout, ff_mult=4):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1 = nn.LayerNorm(d)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d) for _ in range(4))
        self.ln2 = nn.LayerNorm(d)
        self.w1 = nn.Linear(d, ff_mult * d)
        self.w2 = nn.Linear(ff_mult * d, d)

    def forward(self, x, block_mask, attn):
        B, T, d = x.shape
        H = self.heads
        h = self.ln1(x)
        split = lambda t: t.view(B, T, H, d // H).transpose(1, 2)
        q, k, v = split(self.wq(h)), split(self.wk(h)), split(self.wv(h))
        o = attn(q, k, v, block_mask=block_mask)           # [B, H, T, d/H]
        o = o.transpose(1, 2).reshape(B, T, d)
        x = x + F.dropout(self.wo(o), self.dropout, self.training)
        f = self.w2(gelu(self.w1(self.ln2(x))))
        return x + F.dropout(f, self.dropout, self.training)


class SparseTransformer(nn.Module):
    def __init__(self, seq_len, layers, d_model, heads, stride, dropout=0.0,
                 checkpoint=False):
        super().__init__()
        self.n, self.d, self.stride, self.checkpoint = seq_len, d_model, stride, checkpoint
        self.blocks = nn.ModuleList(Block(d_model, heads, dropout) for _ in range(layers))
        self.tok = nn.Embedding(INPUT_VOCAB, d_model)
        self.row = nn.Embedding((seq_len + stride - 1) // stride, d_model)
        self.col = nn.Embedding(min(stride, seq_len), d_model)
        self.lnf = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, VOCAB)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """Section 6 / Transformer::initialize: N(0, 0.125/sqrt(fan_in)),
        W_o and W_2 further / sqrt(2 L), embeddings N(0, 0.125/sqrt(d)),
        W_out zero, biases zero, gains one."""
        fan = lambda m: 0.125 / math.sqrt(m.in_features)
        res = 1.0 / math.sqrt(2.0 * len(self.blocks))
        for blk in self.blocks:
            for lin in (blk.wq, blk.wk, blk.wv, blk.wo, blk.w1, blk.w2):
                std = fan(lin) * (res if lin in (blk.wo, blk.w2) else 1.0)
                lin.weight.normal_(0.0, std)
                lin.bias.zero_()
            for ln in (blk.ln1, blk.ln2):
                ln.weight.fill_(1.0)
                ln.bias.zero_()
        for emb in (self.tok, self.row, self.col):
            emb.weight.normal_(0.0, 0.125 / math.sqrt(self.d))
        self.out.weight.zero_()
        self.out.bias.zero_()
        self.lnf.weight.fill_(1.0)
        self.lnf.bias.zero_()

    def positions(self, t):
        return self.row(t // self.stride) + self.col(t % self.stride)

    def forward(self, inputs, targets, block_mask, attn):
        logits = self.logits(inputs, block_mask, attn)
        return F.cross_entropy(logits.reshape(-1, VOCAB).float(), targets.reshape(-1))

    def logits(self, inputs, block_mask, attn):
        n = inputs.shape[1]
        x = self.tok(inputs) + self.positions(torch.arange(n, device=inputs.device))
        for blk in self.blocks:
            if self.checkpoint and self.training:
                x = torch.utils.checkpoint.checkpoint(blk, x, block_mask, attn,
                                                      use_reentrant=False)
            else:
                x = blk(x, block_mask, attn)
        return self.out(self.lnf(x))

    def param_groups(self, weight_decay):
        decayed = [m.weight for b in self.blocks
                   for m in (b.wq, b.wk, b.wv, b.wo, b.w1, b.w2)] + [self.out.weight]
        ids = {id(p) for p in decayed}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": decayed, "weight_decay": weight_decay},
                {"params": rest, "weight_decay": 0.0}]


def matmul_params(cfg):
    d, L = cfg["d_model"], cfg["layers"]
    return L * (4 * d * d + 2 * 4 * d * d) + d * VOCAB


def step_flops(cfg, pairs, batch):
    """Model FLOPs of one training step (recomputation not counted)."""
    n, d = cfg["seq_len"], cfg["d_model"]
    f = 6.0 * matmul_params(cfg) * batch * n
    if pairs is not None:
        # q.k and p.v: 4 flops per pair per head dim, backward 2.5x forward.
        f += 3.5 * 4.0 * pairs * d * cfg["layers"] * batch
    return f


# ---------------------------------------------------------------------------
# Training benchmark.
# ---------------------------------------------------------------------------

def is_oom(e):
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def free_cuda():
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def train_bench(cfg, args, attn):
    n, batch, dev = cfg["seq_len"], cfg["batch"], "cuda"
    row = {k: cfg[k] for k in ("seq_len", "layers", "d_model", "heads", "pattern", "l", "c",
                               "dropout", "checkpoint", "batch")}
    row.update(kind="train", status="ok", clip=not args.no_clip)
    try:
        _train(cfg, args, attn, row)
    except Exception as e:  # noqa: BLE001
        if not is_oom(e):
            raise
        row.update(status="OOM", error=f"OOM at n={n}: {str(e).splitlines()[0][:300]}",
                   peak_gib=torch.cuda.max_memory_allocated() / 2**30)
        e = None
    free_cuda()   # after _train's frame (model, optimizer, activations) is gone
    return row


def _train(cfg, args, attn, row):
    n, batch, dev = cfg["seq_len"], cfg["batch"], "cuda"
    torch.manual_seed(args.seed)
    torch.cuda.reset_peak_memory_stats()
    mod = mask_mod(cfg["pattern"], cfg["l"], cfg["c"])
    t0 = time.perf_counter()
    block_mask = build_block_mask(cfg["pattern"], mod, n, device=dev)
    torch.cuda.synchronize()
    row["block_mask_s"] = time.perf_counter() - t0
    row["block_mask_gib"] = torch.cuda.max_memory_allocated() / 2**30
    stride = args.embed_stride or embed_stride(cfg["pattern"], cfg["l"], n)
    row["embed_stride"] = stride
    model = SparseTransformer(n, cfg["layers"], cfg["d_model"], cfg["heads"], stride,
                              cfg["dropout"], cfg["checkpoint"]).to(dev)
    model.train()
    row["params"] = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.param_groups(0.01), lr=3.5e-4, betas=(0.9, 0.95),
                            eps=1e-8, fused=True)
    params = [p for p in model.parameters()]
    data = torch.randint(0, VOCAB, (batch, n), device=dev)
    inputs = torch.cat([torch.full((batch, 1), START_TOKEN, device=dev), data[:, :-1]], 1)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(inputs, data, block_mask, attn)
        loss.backward()
        if not args.no_clip:
            torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    t0 = time.perf_counter()
    first = None
    for i in range(args.warmup):
        loss = step()
        if i == 0:
            first = float(loss.item())   # also ends the compile of step 1
            row["first_step_s"] = time.perf_counter() - t0
    torch.cuda.synchronize()
    row["warmup_s"] = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for _ in range(args.steps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        losses.append(step())
        b.record()
        times.append((a, b))
    torch.cuda.synchronize()
    ms = [a.elapsed_time(b) for a, b in times]
    med = statistics.median(ms) if ms else float("nan")
    pairs = attended_pairs(cfg["pattern"], mod, n, dev)
    row.update(
        ms_per_step=med, ms_all=ms, tokens_per_s=batch * n / (med / 1e3),
        peak_gib=torch.cuda.max_memory_allocated() / 2**30,
        attended_pairs_per_head=pairs,
        model_tflops=step_flops(cfg, pairs, batch) / (med / 1e3) / 1e12,
        loss_first=first, loss_last=float(losses[-1].item()) if losses else None)
    if first is not None:
        row["loss_first_expected"] = math.log(VOCAB)


# ---------------------------------------------------------------------------
# Sampling benchmark: batch 1, KV cache, dense attention decode.
# ---------------------------------------------------------------------------

class Decoder:
    """One decode step of the model in bf16 over static buffers, so that a
    step can be captured as a CUDA graph: feeds self.tok at self.pos, writes
    the KV caches, samples the next byte (Gumbel-max, temperature 1) into
    self.tok and advances self.pos."""

    def __init__(self, model, cfg, attn_kind, dtype=torch.bfloat16):
        dev = next(model.parameters()).device
        self.m = model.to(dtype).eval()
        self.n, self.H = cfg["seq_len"], cfg["heads"]
        self.hd = cfg["d_model"] // cfg["heads"]
        self.mod = mask_mod(cfg["pattern"], cfg["l"], cfg["c"])
        self.attn_kind = attn_kind
        shape = (1, self.H, self.n, self.hd)
        self.kc = [torch.zeros(shape, dtype=dtype, device=dev) for _ in self.m.blocks]
        self.vc = [torch.zeros(shape, dtype=dtype, device=dev) for _ in self.m.blocks]
        self.logits = torch.zeros((1, VOCAB), dtype=torch.float32, device=dev)
        self.tok = torch.full((1,), START_TOKEN, dtype=torch.long, device=dev)
        self.pos = torch.zeros((1,), dtype=torch.long, device=dev)
        self.ar = torch.arange(self.n, device=dev)
        self.out = torch.zeros((1,), dtype=torch.long, device=dev)

    def reset(self):
        self.tok.fill_(START_TOKEN)
        self.pos.zero_()

    @torch.no_grad()
    def step(self, length):
        """Attends over cache[:length] (length >= pos + 1)."""
        m, H, hd = self.m, self.H, self.hd
        x = m.tok(self.tok) + m.positions(self.pos)                 # [1, d]
        keys = self.ar[:length]
        allowed = self.mod(0, 0, self.pos, keys).view(1, 1, 1, length)
        for blk, kc, vc in zip(m.blocks, self.kc, self.vc):
            h = blk.ln1(x)
            q = blk.wq(h).view(1, H, 1, hd)
            kc.index_copy_(2, self.pos, blk.wk(h).view(1, H, 1, hd))
            vc.index_copy_(2, self.pos, blk.wv(h).view(1, H, 1, hd))
            K, V = kc[:, :, :length], vc[:, :, :length]
            if self.attn_kind == "sdpa":
                o = F.scaled_dot_product_attention(q, K, V, attn_mask=allowed)
            else:
                s = (q @ K.transpose(-1, -2)).float() * (1.0 / math.sqrt(hd))
                p = torch.softmax(s.masked_fill(~allowed, float("-inf")), -1)
                o = p.to(V.dtype) @ V
            x = x + blk.wo(o.reshape(1, -1))
            x = x + blk.w2(gelu(blk.w1(blk.ln2(x))))
        logits = m.out(m.lnf(x)).float()
        self.logits.copy_(logits)
        u = torch.rand_like(logits).clamp_(1e-20, 1.0)
        nxt = torch.argmax(logits - torch.log(-torch.log(u)), -1)
        self.out.copy_(nxt)
        self.tok.copy_(nxt)
        self.pos.add_(1)


def sample_bench(cfg, args):
    n, dev = cfg["seq_len"], "cuda"
    N = args.sample
    row = {k: cfg[k] for k in ("seq_len", "layers", "d_model", "heads", "pattern", "l", "c")}
    row.update(kind="sample", status="ok", batch=1, tokens=N, decode_attn=args.decode_attn,
               cuda_graph=not args.no_cuda_graph, bucket=args.bucket)
    if N > n:
        sys.exit(f"--sample {N}: at most --seq-len = {n} tokens (positions are embedded)")
    try:
        torch.manual_seed(args.seed)
        stride = args.embed_stride or embed_stride(cfg["pattern"], cfg["l"], n)
        model = SparseTransformer(n, cfg["layers"], cfg["d_model"], cfg["heads"], stride).to(dev)
        row["params"] = sum(p.numel() for p in model.parameters())
        dec = Decoder(model, cfg, args.decode_attn)
        bucket = args.bucket
        lengths = lambda t: min(n, (t // bucket + 1) * bucket)   # cache length for position t
        if args.no_cuda_graph:
            run = lambda t: dec.step(t + 1)
        else:
            t0 = time.perf_counter()
            graphs = {}
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for L in sorted({lengths(t) for t in range(N)}):
                    for _ in range(2):
                        dec.step(L)            # warm-up (also loads kernels)
                    dec.reset()
                    g = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(g, stream=side):
                        dec.step(L)
                    graphs[L] = g
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            row["graphs"] = len(graphs)
            row["capture_s"] = time.perf_counter() - t0
            run = lambda t: graphs[lengths(t)].replay()
        # Warm-up of the timed path, then the timed decode of N tokens.
        dec.reset()
        for t in range(min(N, 8)):
            run(t)
        dec.reset()
        for c in dec.kc + dec.vc:
            c.zero_()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        w0 = time.perf_counter()
        a.record()
        for t in range(N):
            run(t)
        b.record()
        torch.cuda.synchronize()
        sec = a.elapsed_time(b) / 1e3
        row.update(seconds=sec, wall_s=time.perf_counter() - w0, tokens_per_s=N / sec,
                   ms_per_token=1e3 * sec / N, final_pos=int(dec.pos.item()),
                   peak_gib=torch.cuda.max_memory_allocated() / 2**30)
        if row["final_pos"] != N:
            row["status"] = f"wrong final position {row['final_pos']}"
    except Exception as e:  # noqa: BLE001
        if not is_oom(e):
            raise
        row.update(status="OOM", error=f"OOM at n={n}: {str(e).splitlines()[0][:300]}")
        e = None
    free_cuda()
    return row


# ---------------------------------------------------------------------------
# Driver.
# ---------------------------------------------------------------------------

def print_table(rows):
    print(f"{'kind':<6} {'pattern':<8} {'n':>9} {'L':>3} {'d':>4} {'H':>2} {'B':>2} "
          f"{'ckpt':>4} {'params':>11} {'ms/step':>9} {'tokens/s':>10} {'peak GiB':>8}  status")
    for r in rows:
        if r["kind"] == "train":
            ms = f"{r['ms_per_step']:9.1f}" if "ms_per_step" in r else f"{'-':>9}"
            tps = f"{r['tokens_per_s']:10.0f}" if "tokens_per_s" in r else f"{'-':>10}"
            ck = "yes" if r["checkpoint"] else "no"
            B = r["batch"]
        else:
            ms = f"{r['ms_per_token']:9.3f}" if "ms_per_token" in r else f"{'-':>9}"
            tps = f"{r['tokens_per_s']:10.0f}" if "tokens_per_s" in r else f"{'-':>10}"
            ck, B = "-", 1
        pk = f"{r['peak_gib']:8.2f}" if "peak_gib" in r else f"{'-':>8}"
        print(f"{r['kind']:<6} {r['pattern']:<8} {r['seq_len']:>9} {r['layers']:>3} "
              f"{r['d_model']:>4} {r['heads']:>2} {B:>2} {ck:>4} {r.get('params', 0):>11,} "
              f"{ms} {tps} {pk}  {r['status'] if r['status'] == 'ok' else r.get('error', r['status'])}")
    print("(sample rows: ms/step is ms per token)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="enwik8")
    ap.add_argument("--seq-len", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--d-model", type=int)
    ap.add_argument("--heads", type=int)
    ap.add_argument("--pattern", choices=["fixed", "strided", "dense"])
    ap.add_argument("--l", type=int)
    ap.add_argument("--c", type=int)
    ap.add_argument("--dropout", type=float)
    ap.add_argument("--embed-stride", type=int, default=0,
                    help="attention-embedding width (default: the pattern's l, sqrt(n) for dense)")
    ck = ap.add_mutually_exclusive_group()
    ck.add_argument("--checkpoint", dest="checkpoint", action="store_true", default=None,
                    help="activation checkpointing of every residual block")
    ck.add_argument("--no-checkpoint", dest="checkpoint", action="store_false")
    ap.add_argument("--no-clip", action="store_true", help="skip gradient-norm clipping")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (>= 1)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sweep-n", action="store_true",
                    help="double n from --seq-len (1M for long) until out of memory")
    ap.add_argument("--sweep-max", type=int, default=1 << 25)
    ap.add_argument("--sample", type=int, default=0,
                    help="time sampling of N tokens at batch 1 instead of training")
    ap.add_argument("--decode-attn", choices=["sdpa", "matmul"], default="sdpa")
    ap.add_argument("--bucket", type=int, default=1024,
                    help="cache-length granularity of the captured decode graphs")
    ap.add_argument("--no-cuda-graph", action="store_true")
    ap.add_argument("--out", default="model_peer.json")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("model_peer.py: no CUDA device")
    if args.warmup < 1:
        ap.error("--warmup must be at least 1 (the first step compiles)")

    cfg = dict(PRESETS[args.preset])
    for key in ("seq_len", "batch", "layers", "d_model", "heads", "pattern", "l", "c",
                "dropout", "checkpoint"):
        v = getattr(args, key)
        if v is not None:
            cfg[key] = v
    if cfg["d_model"] % cfg["heads"]:
        ap.error("d_model must be a multiple of heads")
    if cfg["seq_len"] % 128:
        ap.error("seq_len must be a multiple of 128 (FlexAttention's block)")

    # Each sequence length is a new specialization of the compiled
    # flex_attention; keep Dynamo from falling back to the unfused version.
    torch._dynamo.config.recompile_limit = 1024
    torch._dynamo.config.accumulated_recompile_limit = 4096
    from torch.nn.attention.flex_attention import flex_attention
    attn = torch.compile(flex_attention, dynamic=False)

    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "argv": sys.argv if argv is None else argv, "preset": args.preset,
            "steps": args.steps, "warmup": args.warmup,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    rows = []

    def save():
        with open(args.out, "w") as f:
            json.dump({**meta, "results": rows}, f, indent=1)

    if args.sample:
        rows.append(sample_bench(cfg, args))
    elif args.sweep_n:
        n = cfg["seq_len"]
        largest = None
        while n <= args.sweep_max:
            r = train_bench({**cfg, "seq_len": n}, args, attn)
            rows.append(r)
            save()
            print_table([r])
            if r["status"] != "ok":
                break
            largest = r
            n *= 2
        meta["largest_n"] = largest["seq_len"] if largest else None
        meta["largest_n_peak_gib"] = largest["peak_gib"] if largest else None
        meta["first_oom"] = rows[-1].get("error") if rows and rows[-1]["status"] != "ok" else None
    else:
        rows.append(train_bench(cfg, args, attn))
    save()
    print_table(rows)
    if args.sweep_n:
        print(f"largest n that trains: {meta['largest_n']} "
              f"(peak {meta['largest_n_peak_gib']} GiB); {meta['first_oom']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
