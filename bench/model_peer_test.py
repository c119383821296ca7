#!/usr/bin/env python3
"""CPU checks of bench/model_peer.py (needs torch; no GPU).

    python3 bench/model_peer_test.py

- the mask_mods are the masks of patterns/{fixed,strided,dense}.sp, checked
  against the .sp definitions written out in plain Python;
- the BlockMask built from block offsets (strided, dense) classifies every
  block pair exactly as brute force does (empty / partial / full), and the
  fixed pattern's create_block_mask likewise;
- the model through flex_attention equals the model through a dense-mask
  SDPA reference, and starts at a loss of exactly ln 256 (W_out = 0);
- KV-cache decoding (both decode attentions) reproduces the full forward's
  logits at every position.
"""
import math
import os
import sys
import unittest

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_peer as mp  # noqa: E402


def sp_reference(pattern, i, j, l, c):
    """patterns/*.sp, literally (integer division and remainder on i >= j)."""
    if j > i:                                  # causal;
        return False
    if pattern == "dense":
        return True
    if pattern == "strided":
        return i - j < l or (i - j) % l == 0
    if pattern == "fixed":
        return i // l == j // l or j % l >= l - c
    raise ValueError(pattern)


def dense_mask(mod, n):
    q = torch.arange(n).view(n, 1)
    k = torch.arange(n).view(1, n)
    return mod(0, 0, q, k)


def block_sets(bm, nb):
    """{(qb, kb): 'partial' | 'full'} from a BlockMask's kv tensors."""
    out = {}
    for num, idx, tag in ((bm.kv_num_blocks, bm.kv_indices, "partial"),
                          (bm.full_kv_num_blocks, bm.full_kv_indices, "full")):
        if num is None:
            continue
        for qb in range(nb):
            for t in range(int(num[0, 0, qb])):
                key = (qb, int(idx[0, 0, qb, t]))
                assert key not in out, f"block {key} listed twice"
                out[key] = tag
    return out


class PeerTest(unittest.TestCase):
    CASES = [("dense", 128, 3), ("strided", 8, 3), ("strided", 16, 3), ("strided", 24, 3),
             ("fixed", 8, 3), ("fixed", 16, 4), ("fixed", 24, 5)]

    def test_masks_are_the_sp_patterns(self):
        n = 96
        for pattern, l, c in self.CASES:
            got = dense_mask(mp.mask_mod(pattern, l, c), n)
            for i in range(n):
                for j in range(n):
                    self.assertEqual(bool(got[i, j]), sp_reference(pattern, i, j, l, c),
                                     f"{pattern} l={l} c={c} i={i} j={j}")

    def test_block_masks_classify_blocks_exactly(self):
        for n, block in ((128, 16), (256, 32), (192, 16)):
            nb = n // block
            for pattern, l, c in self.CASES:
                mod = mp.mask_mod(pattern, l, c)
                bm = mp.build_block_mask(pattern, mod, n, block=block, device="cpu")
                got = block_sets(bm, nb)
                m = dense_mask(mod, n).view(nb, block, nb, block).permute(0, 2, 1, 3)
                for qb in range(nb):
                    for kb in range(nb):
                        t = m[qb, kb]
                        want = "full" if bool(t.all()) else "partial" if bool(t.any()) else None
                        self.assertEqual(got.get((qb, kb)), want,
                                         f"{pattern} l={l} n={n} block ({qb},{kb})")
                # Indices of each row ascend (FlexAttention's order).
                for qb in range(nb):
                    k = int(bm.kv_num_blocks[0, 0, qb])
                    row = bm.kv_indices[0, 0, qb, :k].tolist()
                    self.assertEqual(row, sorted(row))

    def test_attended_pairs(self):
        n = 192
        for pattern, l, c in self.CASES:
            mod = mp.mask_mod(pattern, l, c)
            self.assertEqual(mp.attended_pairs(pattern, mod, n, "cpu"),
                             int(dense_mask(mod, n).sum()))

    def _model(self, pattern, l, c, n, layers=2, d=32, heads=4):
        torch.manual_seed(0)
        stride = mp.embed_stride(pattern, l, n)
        model = mp.SparseTransformer(n, layers, d, heads, stride)
        # Non-zero W_out and biases so that the comparisons see everything.
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        return model

    def test_init_loss_is_ln_256(self):
        n = 64
        model = mp.SparseTransformer(n, 2, 32, 4, 8)
        mod = mp.mask_mod("fixed", 8, 2)
        bm = mp.build_block_mask("fixed", mod, n, block=16, device="cpu")
        from torch.nn.attention.flex_attention import flex_attention
        x = torch.randint(0, 256, (2, n))
        with torch.no_grad():   # FlexAttention has no backward on the CPU
            loss = model(x, x, bm, flex_attention)
        self.assertAlmostEqual(float(loss), math.log(256), places=5)
        n_params = sum(p.numel() for p in model.parameters())
        d, L, ff = 32, 2, 128
        expect = L * (4 * (d * d + d) + d * ff + ff + ff * d + d + 4 * d) \
            + 257 * d + (n // 8) * d + 8 * d + d * 256 + 256 + 2 * d
        self.assertEqual(n_params, expect)

    def test_flex_model_matches_dense_reference(self):
        from torch.nn.attention.flex_attention import flex_attention
        n = 128
        for pattern, l, c in (("fixed", 16, 4), ("strided", 16, 0), ("dense", 16, 0)):
            model = self._model(pattern, l, c, n)
            mod = mp.mask_mod(pattern, l, c)
            bm = mp.build_block_mask(pattern, mod, n, block=32, device="cpu")
            allowed = dense_mask(mod, n)

            def dense_attn(q, k, v, block_mask=None):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)

            x = torch.randint(0, 257, (2, n))
            y = torch.randint(0, 256, (2, n))
            with torch.no_grad():   # FlexAttention has no backward on the CPU
                got = model.logits(x, bm, flex_attention)
                want = model.logits(x, None, dense_attn)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
            # Checkpointing changes nothing in the gradients (through the
            # dense reference attention: FlexAttention's backward is GPU-only).
            model.train()
            model.checkpoint = False
            model.zero_grad()
            model(x, y, None, dense_attn).backward()
            g0 = [p.grad.clone() for p in model.parameters()]
            model.checkpoint = True
            model.zero_grad()
            model(x, y, None, dense_attn).backward()
            for a, b in zip(g0, (p.grad for p in model.parameters())):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    def test_decode_matches_forward(self):
        from torch.nn.attention.flex_attention import flex_attention
        n = 64
        for pattern, l, c in (("fixed", 8, 3), ("strided", 8, 0), ("dense", 8, 0)):
            for kind in ("sdpa", "matmul"):
                model = self._model(pattern, l, c, n)
                mod = mp.mask_mod(pattern, l, c)
                bm = mp.build_block_mask(pattern, mod, n, block=16, device="cpu")
                x = torch.randint(0, 256, (1, n))
                x[0, 0] = mp.START_TOKEN
                with torch.no_grad():
                    want = model.logits(x, bm, flex_attention)[0]
                cfg = dict(seq_len=n, layers=2, d_model=32, heads=4, pattern=pattern,
                           l=l, c=c)
                dec = mp.Decoder(model, cfg, kind, dtype=torch.float32)
                bucket = 16
                for t in range(n):
                    dec.tok.fill_(int(x[0, t]))
                    dec.step(min(n, (t // bucket + 1) * bucket))
                    torch.testing.assert_close(dec.logits[0], want[t], rtol=1e-4, atol=1e-4,
                                               msg=lambda m: f"{pattern} {kind} t={t}: {m}")
                self.assertEqual(int(dec.pos), n)


if __name__ == "__main__":
    unittest.main()
