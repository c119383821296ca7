//===- attention_backward.cuh - block-sparse attention backward -*- CUDA -*-===//
//
// FlashAttention-2 style backward pass over the blocks a pattern's layout
// names. Nothing of the attention matrix is stored: P is recomputed from Q,
// K and the final (merged) log-sum-exp the forward pass saved,
//   P = exp(scale * Q K^T - LSE),  dV = P^T dO,  dP = dO V^T,
//   dS = P * (dP - Delta),  Delta_i = rowsum(dO_i * O_i),
//   dQ = scale * dS K,  dK = scale * dS^T Q.
// Kernels, launched in this order on one stream:
//  - attentionBackwardPrepare: Delta (fp32) and zeroed fp32 accumulators
//    dQacc, dKacc, dVacc [batchHeads, n, D] (one warp per row);
//  - per kernel of each mask, either
//    - fast (default): attentionBackwardDkDv<V, S, true> for each segment S:
//      one CTA per (work item, batch group), 4 warps x 16 keys. A work item
//      is a block of 64 *mapped* keys of S and a range [begin, end) of the
//      query blocks that reach it (the transposed tables fullByKey /
//      partialByKey): the whole list, or, where the host split a long list
//      over several CTAs, one part of it. The CTA walks its range; a whole
//      list adds dK, dV into the accumulators at the positions the key map
//      covers, a part stores them (fp32) into a workspace slot, and
//      attentionBackwardDkDvReduce, launched right after, adds the parts of
//      each split key block in slot order. Per query block the CTA puts dS^T
//      in shared memory and adds dS K into dQacc with fp32 reductions
//      (red.global.add): 5 products per attended pair. The items come
//      longest first and the batch group varies fastest in grid.x, so the
//      hardware's in-order dispatch starts the longest walks first;
//    - deterministic: attentionBackwardDq<V> (one CTA per block of 64 mapped
//      queries, walking the forward schedule of every segment; recomputes S
//      and dP, adds dQ into dQacc), then attentionBackwardDkDv<V, S, false>
//      for each segment: 7 products per pair, no atomics anywhere;
//  - attentionBackwardConvert: the accumulators to the element type.
// dK and dV are deterministic in both modes: within a launch every CTA that
// adds into the accumulators owns distinct key rows (index maps are
// injective; a split key block's parts only store into their own slots and
// one reduce CTA adds them in a fixed order), and the launches of a mask run
// one after another, each adding into the fp32 accumulators with plain
// read-modify-write. The fast mode's dQ sums the key blocks' contributions
// in the order the reductions land, so its last bits can vary between runs.
//
// Full blocks skip the mask; partial blocks apply mask(i, j) && causal.
// Masked or out-of-range pairs get P = 0 directly (never exp of -inf - -inf).
// All products run on tensor cores (mma.sync m16n8k16, fp32 accumulate);
// operands in shared memory are read with ldmatrix (plain for the "col"
// operand, .trans for the k-major one). The dK/dV kernel keeps its warp's K
// and V rows in registers for D <= 64 and double-buffers Q, dO, LSE and Delta
// (cp.async); at D = 128 the 128 dK/dV accumulator registers leave room for
// neither, so K, V stay in shared memory and each query block is loaded just
// before its use. Score tiles (kSub columns at once): 64 / 32 / 16 for D =
// 32 / 64 / 128 in the dK/dV kernel, 64 / 32 / 16 in the dQ kernel.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_KERNELS_ATTENTION_BACKWARD_CUH
#define SPARSETX_KERNELS_ATTENTION_BACKWARD_CUH

#include "sparsetx/attention_forward.cuh"

namespace sparsetx {

constexpr int kBwdThreads = 128;
constexpr int kBwdPrepareRows = 4; // one warp per row
constexpr int kBwdConvertThreads = 256;

/// Width of the score tile a warp holds at once in the dK/dV kernel (64
/// queries at once where K and V fit in registers, narrower at D = 128 to
/// stay within the register budget with the dK and dV accumulators).
template <int D>
constexpr int backwardSubTile() {
  return D == 128 ? 16 : D == 64 ? 32 : 64;
}

/// Width of the score tile of the deterministic dQ kernel.
template <int D>
constexpr int backwardDqSubTile() {
  return D == 128 ? 16 : D == 64 ? 32 : 64;
}

/// The dK/dV kernel keeps its warp's 16 rows of K and V as mma A fragments
/// in registers (read from shared memory once) for D <= 64; at D = 128 the
/// dK/dV accumulators alone take 128 registers and K, V stay in shared
/// memory.
template <int D>
constexpr bool backwardKVInRegisters() {
  return D <= 64;
}

/// Row stride (elements) of the dS tile the fused dK/dV/dQ kernel shares
/// between its warps: 64 queries plus the 16-byte pad.
constexpr int kDsStride = 64 + kPad;

/// Shared memory of the dQ kernel: four 64-row tiles (Q, dO, K, V).
template <int D>
constexpr int backwardSharedBytes() {
  return 4 * 64 * (D + kPad) * 2 + 2 * 64 * 4;
}

/// Shared memory of the dK/dV kernels: K, V, two stages of Q and dO, the dS
/// tile (used by the fused dQ variant), two stages of LSE and Delta.
template <int D>
constexpr int backwardDkDvSharedBytes() {
  return 6 * 64 * (D + kPad) * 2 + 64 * kDsStride * 2 + 2 * 2 * 64 * 4;
}

constexpr float kLog2e = 1.4426950408889634f;

/// Delta = rowsum(dO * O) and zeroed accumulators. Grid: ceil(rows /
/// kBwdPrepareRows); block: 128; rows = batchHeads * n.
template <typename Elem, int D>
__device__ __forceinline__ void
attentionBackwardPrepare(const uint16_t *__restrict__ o,
                         const uint16_t *__restrict__ dO,
                         float *__restrict__ delta, float *__restrict__ dqAcc,
                         float *__restrict__ dkAcc, float *__restrict__ dvAcc,
                         int64_t rows) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = (int64_t)blockIdx.x * kBwdPrepareRows + warp;
  if (row >= rows)
    return;
  float acc = 0.0f;
#pragma unroll
  for (int d = lane; d < D; d += 32) {
    const int64_t x = row * D + d;
    acc += toFloat<Elem>(o[x]) * toFloat<Elem>(dO[x]);
    dqAcc[x] = 0.0f;
    dkAcc[x] = 0.0f;
    dvAcc[x] = 0.0f;
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2)
    acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0)
    delta[row] = acc;
}

/// fp32 accumulators to the element type. Grid: (ceil(elems / 2 /
/// kBwdConvertThreads), 3); block: kBwdConvertThreads; blockIdx.y picks dQ,
/// dK, dV. `acc` is dQacc, dKacc, dVacc back to back (each `elems` long).
template <typename Elem>
__device__ __forceinline__ void
attentionBackwardConvert(const float *__restrict__ acc, uint16_t *__restrict__ dq,
                         uint16_t *__restrict__ dk, uint16_t *__restrict__ dv,
                         int64_t elems) {
  const int64_t pair = (int64_t)blockIdx.x * kBwdConvertThreads + threadIdx.x;
  if (2 * pair >= elems)
    return;
  const int which = blockIdx.y;
  uint16_t *out = which == 0 ? dq : which == 1 ? dk : dv;
  float2 val = *reinterpret_cast<const float2 *>(acc + which * elems + 2 * pair);
  *reinterpret_cast<uint32_t *>(out + 2 * pair) = packPair<Elem>(val.x, val.y);
}

/// 16 x 16 A fragment (rows `row0`.., k columns `col0`..) from a row-major
/// shared tile.
template <int kStride>
__device__ __forceinline__ void loadA(uint32_t (&a)[4], const uint16_t *tile,
                                     int row0, int col0) {
  const int lane = threadIdx.x % 32;
  ldmatrixX4(a, smemAddress(tile + (row0 + lane % 16) * kStride + col0 +
                            (lane / 16) * 8));
}

/// acc[kN/8] += A(16 x D, rows of `a` tile from row aRow0) * B^T where B is
/// the kN x D row-major tile `b` from row bRow0 (the "col" operand: Q K^T).
template <typename Elem, int D, int kN>
__device__ __forceinline__ void mmaABt(float (&acc)[kN / 8][4],
                                       const uint16_t *a, int aRow0,
                                       const uint16_t *b, int bRow0) {
  constexpr int kStride = D + kPad;
  const int lane = threadIdx.x % 32;
  const int mat = lane / 8, r8 = lane % 8;
  // Only two k steps in flight: the fragments of a fully unrolled loop would
  // all be live at once (acc indices do not depend on kk).
#pragma unroll 2
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t af[4];
    loadA<kStride>(af, a, aRow0, kk * 16);
#pragma unroll
    for (int np = 0; np < kN / 16; ++np) {
      uint32_t bf[4];
      const int row = bRow0 + (2 * np + mat / 2) * 8 + r8;
      const int d = kk * 16 + (mat % 2) * 8;
      ldmatrixX4(bf, smemAddress(b + row * kStride + d));
      mma16816<Elem>(acc[2 * np], af, bf[0], bf[1]);
      mma16816<Elem>(acc[2 * np + 1], af, bf[2], bf[3]);
    }
  }
}

/// out[D/8] += P(16 x kK, C fragments `p`) * B where B is the kK x D
/// row-major tile `b` from row bRow0 (read transposed: P V, P^T dO, ...).
template <typename Elem, int D, int kK>
__device__ __forceinline__ void mmaPB(float (&out)[D / 8][4],
                                      const float (&p)[kK / 8][4],
                                      const uint16_t *b, int bRow0) {
  constexpr int kStride = D + kPad;
  const int lane = threadIdx.x % 32;
  const int mat = lane / 8, r8 = lane % 8;
#pragma unroll
  for (int kk = 0; kk < kK / 16; ++kk) {
    uint32_t a[4];
    a[0] = packPair<Elem>(p[2 * kk][0], p[2 * kk][1]);
    a[1] = packPair<Elem>(p[2 * kk][2], p[2 * kk][3]);
    a[2] = packPair<Elem>(p[2 * kk + 1][0], p[2 * kk + 1][1]);
    a[3] = packPair<Elem>(p[2 * kk + 1][2], p[2 * kk + 1][3]);
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t bf[4];
      const int row = bRow0 + kk * 16 + (mat % 2) * 8 + r8;
      const int d = (2 * dp + mat / 2) * 8;
      ldmatrixX4Trans(bf, smemAddress(b + row * kStride + d));
      mma16816<Elem>(out[2 * dp], a, bf[0], bf[1]);
      mma16816<Elem>(out[2 * dp + 1], a, bf[2], bf[3]);
    }
  }
}

/// Adds the C fragments `acc` (scaled) into rows of a fp32 [*, D] buffer:
/// rows g and g + 8 of the warp's 16 at `rowOffset[r]` (< 0: skip).
template <int D>
__device__ __forceinline__ void addRows(float *__restrict__ dst,
                                        const float (&acc)[D / 8][4],
                                        const int64_t (&rowOffset)[2],
                                        float scale) {
  const int t4 = threadIdx.x % 4;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (rowOffset[r] < 0)
      continue;
    float *out = dst + rowOffset[r];
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      float2 *ptr = reinterpret_cast<float2 *>(out + dt * 8 + t4 * 2);
      float2 cur = *ptr;
      cur.x += acc[dt][2 * r] * scale;
      cur.y += acc[dt][2 * r + 1] * scale;
      *ptr = cur;
    }
  }
}

/// acc[kN/8] += A * B^T with A the warp's 16 x D rows held as A fragments
/// `a` (registers) and B the kN x D row-major tile `b` from row bRow0.
template <typename Elem, int D, int kN>
__device__ __forceinline__ void mmaRegABt(float (&acc)[kN / 8][4],
                                          const uint32_t (&a)[D / 16][4],
                                          const uint16_t *b, int bRow0) {
  constexpr int kStride = D + kPad;
  const int lane = threadIdx.x % 32;
  const int mat = lane / 8, r8 = lane % 8;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
    for (int np = 0; np < kN / 16; ++np) {
      uint32_t bf[4];
      const int row = bRow0 + (2 * np + mat / 2) * 8 + r8;
      const int d = kk * 16 + (mat % 2) * 8;
      ldmatrixX4(bf, smemAddress(b + row * kStride + d));
      mma16816<Elem>(acc[2 * np], a[kk], bf[0], bf[1]);
      mma16816<Elem>(acc[2 * np + 1], a[kk], bf[2], bf[3]);
    }
  }
}

/// Fused dQ of one query block: dQ(64 queries) += scale * dS K with dS^T
/// (64 keys x 64 queries, Elem) in shared `sds` and K (64 keys x D) in `sk`.
/// Warp w owns queries 16w..16w+15, sums over all 64 keys on the tensor
/// cores, and adds its rows into dqAcc with fp32 reductions (several key
/// blocks add into the same rows concurrently).
template <typename V>
__device__ __forceinline__ void backwardDqFromDs(float *__restrict__ dqAcc,
                                                 const uint16_t *sds,
                                                 const uint16_t *sk,
                                                 int64_t firstQuery, int64_t bh,
                                                 float scale) {
  using Elem = typename V::Elem;
  constexpr int D = V::kHeadDim;
  constexpr int kStride = D + kPad;
  // Output columns per pass: at most 32 fp32 accumulators per thread, 16
  // at D = 128 where the dK/dV accumulators take 128 registers.
  constexpr int kChunk = D == 128 ? 32 : D;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int mat = lane / 8, r8 = lane % 8;
  const int g = lane / 4, t4 = lane % 4;
  int64_t rowOffset[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t t = firstQuery + warp * 16 + g + 8 * r;
    rowOffset[r] =
        t < V::kNumQueries ? (bh * V::kSeqLen + V::queryPosition(t)) * D : -1;
  }
#pragma unroll 1
  for (int chunk = 0; chunk < D / kChunk; ++chunk) {
    float acc[kChunk / 8][4];
    zeroFill(acc);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      // A = dS (queries x keys) read transposed from dS^T (keys x queries).
      uint32_t a[4];
      ldmatrixX4Trans(a, smemAddress(sds + (kk * 16 + (mat / 2) * 8 + r8) * kDsStride +
                                     warp * 16 + (mat % 2) * 8));
#pragma unroll
      for (int dp = 0; dp < kChunk / 16; ++dp) {
        uint32_t bf[4];
        const int row = kk * 16 + (mat % 2) * 8 + r8;
        const int d = chunk * kChunk + (2 * dp + mat / 2) * 8;
        ldmatrixX4Trans(bf, smemAddress(sk + row * kStride + d));
        mma16816<Elem>(acc[2 * dp], a, bf[0], bf[1]);
        mma16816<Elem>(acc[2 * dp + 1], a, bf[2], bf[3]);
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if (rowOffset[r] < 0)
        continue;
      float *out = dqAcc + rowOffset[r] + chunk * kChunk + t4 * 2;
#pragma unroll
      for (int dt = 0; dt < kChunk / 8; ++dt)
        redAddF32x2(out + dt * 8, acc[dt][2 * r] * scale,
                    acc[dt][2 * r + 1] * scale);
    }
  }
}

/// dK, dV of one segment S of kernel V, and with kFuseDq also its dQ
/// contribution. Grid: (key blocks of S, batch-heads / kNumHeads); block:
/// kBwdThreads; dynamic shared memory: backwardDkDvSharedBytes<D>().
///
/// The query blocks that reach the key block are walked with their Q, dO,
/// LSE and Delta double-buffered (cp.async: the next block loads while this
/// one computes; one barrier per block). kFuseDq: each block's dS^T goes to
/// shared memory and the CTA adds dS K into dqAcc with fp32 reductions, which
/// saves the dQ kernel's recomputation of S and dP (5 products per pair
/// instead of 7) but makes dQ's rounding depend on the order the key blocks
/// land in (not bit-reproducible); without it dqAcc is untouched (the dQ
/// kernel computes it deterministically).
template <typename V, typename S, bool kFuseDq>
__device__ __forceinline__ void
attentionBackwardDkDvMma(const uint16_t *__restrict__ q, const uint16_t *__restrict__ k,
                      const uint16_t *__restrict__ v, const uint16_t *__restrict__ dO,
                      const float *__restrict__ lse, const float *__restrict__ delta,
                      float *__restrict__ dqAcc, float *__restrict__ dkAcc,
                      float *__restrict__ dvAcc, const int32_t *__restrict__ tables,
                      const int32_t *__restrict__ work, int groups,
                      float *__restrict__ partials, float scale) {
  using Elem = typename V::Elem;
  constexpr int D = V::kHeadDim;
  static_assert(D == 32 || D == 64 || D == 128, "head dim must be 32, 64, 128");
  constexpr int kStride = D + kPad;
  constexpr int kTile = 64 * kStride;
  constexpr int kSub = backwardSubTile<D>();
  constexpr bool kRegKV = backwardKVInRegisters<D>();
  // At D = 128 the prefetch's address arithmetic does not fit beside the
  // 128 accumulator registers: load each block just before its use.
  constexpr bool kDoubleBuffer = D <= 64;
  extern __shared__ __align__(128) uint16_t smem[];
  uint16_t *sk = smem;
  uint16_t *sv = sk + kTile;
  uint16_t *sq = sv + kTile;       // two stages
  uint16_t *sdo = sq + 2 * kTile;  // two stages
  uint16_t *sds = sdo + 2 * kTile; // 64 keys x kDsStride
  float *slse = reinterpret_cast<float *>(sds + 64 * kDsStride); // two stages
  float *sdelta = slse + 2 * 64;                                 // two stages

  // Work item (key block, [begin, end) of its query list, partial slot),
  // batch group fastest so that the items' order (longest first) is the
  // dispatch order across the whole grid.
  // (The slot and the group are read again at the end: nothing of the item
  // stays live through the loop but the key block and the list's end.)
  const int32_t *item = work + 4 * (blockIdx.x / unsigned(groups));
  const int kb = item[0], begin = item[1], end = item[2];
  const int64_t bh =
      (int64_t)(blockIdx.x % unsigned(groups)) * V::kNumHeads + V::kHead;
  const int64_t headOffset = bh * V::kSeqLen * D;
  q += headOffset;
  k += headOffset;
  v += headOffset;
  dO += headOffset;
  lse += bh * V::kSeqLen;
  delta += bh * V::kSeqLen;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t4 = lane % 4;
  const float scaleLog2 = scale * kLog2e;
  auto queryPosition = [](int64_t t) { return V::queryPosition(t); };

  // Q, dO, LSE and Delta of query block qb into stage `stage` (one group).
  auto loadQueryBlock = [&](int qb, int stage) {
    const int64_t firstQuery = (int64_t)qb * 64;
    loadRows<D>(sq + stage * kTile, q, firstQuery, V::kNumQueries, queryPosition);
    loadRows<D>(sdo + stage * kTile, dO, firstQuery, V::kNumQueries,
                queryPosition);
    const int row = threadIdx.x % 64;
    const int64_t t = firstQuery + row;
    const bool valid = t < V::kNumQueries;
    const int64_t p = valid ? V::queryPosition(t) : 0;
    // Threads 0-63 fetch LSE, 64-127 Delta; rows past the end read 0.
    if (threadIdx.x < 64)
      cpAsync4(smemAddress(slse + stage * 64 + row), lse + p, valid);
    else
      cpAsync4(smemAddress(sdelta + stage * 64 + row), delta + p, valid);
    cpAsyncCommit();
  };

  loadKeyBlock<V, S>(sk, sv, k, v, kb);
  cpAsyncCommit();

  int64_t keyPos[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t t = (int64_t)kb * 64 + warp * 16 + g + 8 * r;
    keyPos[r] = S::keyPosition(t < S::kNumKeys ? t : S::kNumKeys - 1);
  }
  float dk[D / 8][4], dv[D / 8][4];
  zeroFill(dk);
  zeroFill(dv);

  typename S::ByKey schedule(tables, kb);
  // Stage idx & 1 holds list entry idx.
  if (kDoubleBuffer && begin < end) {
    bool full;
    loadQueryBlock(schedule.block(begin, full), begin & 1);
  }
  constexpr int kKvFrags = kRegKV ? D / 16 : 1;
  uint32_t kf[kKvFrags][4], vf[kKvFrags][4];
  if (kRegKV) {
    cpAsyncWait<0>();
    __syncthreads();
    const int row = warp * 16 + lane % 16;
#pragma unroll
    for (int kk = 0; kk < kKvFrags; ++kk) {
      ldmatrixX4(kf[kk], smemAddress(sk + row * kStride + kk * 16 + (lane / 16) * 8));
      ldmatrixX4(vf[kk], smemAddress(sv + row * kStride + kk * 16 + (lane / 16) * 8));
    }
  }

  for (int idx = begin; idx < end; ++idx) {
    const int stage = idx & 1;
    bool full;
    const int qb = schedule.block(idx, full);
    const int64_t firstQuery = (int64_t)qb * 64;
    if constexpr (kDoubleBuffer) {
      // This stage has landed, and every warp is done with the other stage
      // (and with the dS tile) of the previous block: refill it.
      cpAsyncWait<0>();
      __syncthreads();
      if (idx + 1 < end) {
        bool nextFull;
        loadQueryBlock(schedule.block(idx + 1, nextFull), stage ^ 1);
      }
    } else {
      // Every warp is done with the previous block (and the dS tile).
      __syncthreads();
      loadQueryBlock(qb, stage);
      cpAsyncWait<0>();
      __syncthreads();
    }
    const uint16_t *cq = sq + stage * kTile;
    const uint16_t *cdo = sdo + stage * kTile;
    const float *clse = slse + stage * 64;
    const float *cdelta = sdelta + stage * 64;

#pragma unroll 1
    for (int sub = 0; sub < 64 / kSub; ++sub) {
      // Which pairs are attended, as bits (nt, r, c) -> nt * 4 + r * 2 + c:
      // evaluated before the products so that the predicate's 64-bit
      // temporaries are dead while the accumulators are live.
      const uint32_t okBits =
          maskBits<V, S, false, kSub>(firstQuery, sub * kSub, full, keyPos);

      // S^T = K Q^T: this warp's 16 keys x kSub queries.
      float p[kSub / 8][4];
      zeroFill(p);
      if constexpr (kRegKV)
        mmaRegABt<Elem, D, kSub>(p, kf, cq, sub * kSub);
      else
        mmaABt<Elem, D, kSub>(p, sk, warp * 16, cq, sub * kSub);

      // P^T = exp(S^T * scale - LSE) on attended pairs, else 0.
#pragma unroll
      for (int nt = 0; nt < kSub / 8; ++nt)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const float lse2 = clse[sub * kSub + nt * 8 + t4 * 2 + c] * kLog2e;
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            float &x = p[nt][2 * r + c];
            x = (okBits >> (nt * 4 + r * 2 + c)) & 1u
                    ? fastExp2(x * scaleLog2 - lse2)
                    : 0.0f;
          }
        }

      // dV += P^T dO.
      mmaPB<Elem, D, kSub>(dv, p, cdo, sub * kSub);

      // dP^T = V dO^T, then dS^T = P^T * (dP^T - Delta).
      float ds[kSub / 8][4];
      zeroFill(ds);
      if constexpr (kRegKV)
        mmaRegABt<Elem, D, kSub>(ds, vf, cdo, sub * kSub);
      else
        mmaABt<Elem, D, kSub>(ds, sv, warp * 16, cdo, sub * kSub);
#pragma unroll
      for (int nt = 0; nt < kSub / 8; ++nt)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const float dl = cdelta[sub * kSub + nt * 8 + t4 * 2 + c];
#pragma unroll
          for (int r = 0; r < 2; ++r)
            ds[nt][2 * r + c] = p[nt][2 * r + c] * (ds[nt][2 * r + c] - dl);
        }

      if constexpr (kFuseDq) {
        // dS^T rows (keys) of this warp into the shared tile, as elements.
#pragma unroll
        for (int nt = 0; nt < kSub / 8; ++nt)
#pragma unroll
          for (int r = 0; r < 2; ++r)
            *reinterpret_cast<uint32_t *>(
                sds + (warp * 16 + g + 8 * r) * kDsStride + sub * kSub +
                nt * 8 + t4 * 2) = packPair<Elem>(ds[nt][2 * r], ds[nt][2 * r + 1]);
      }

      // dK += dS^T Q (scaled at the end).
      mmaPB<Elem, D, kSub>(dk, ds, cq, sub * kSub);
    }

    if constexpr (kFuseDq) {
      __syncthreads(); // the dS tile is complete
      backwardDqFromDs<V>(dqAcc, sds, sk, firstQuery, bh, scale);
    }
  }
  cpAsyncWait<0>(); // no schedule: the K, V loads are still owed
  int64_t rowOffset[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t t = (int64_t)kb * 64 + warp * 16 + g + 8 * r;
    rowOffset[r] = t < S::kNumKeys ? (bh * V::kSeqLen + keyPos[r]) * D : -1;
  }
  const int slot = work[4 * (blockIdx.x / unsigned(groups)) + 3];
  if (slot < 0) {
    addRows<D>(dkAcc, dk, rowOffset, scale);
    addRows<D>(dvAcc, dv, rowOffset, 1.0f);
    return;
  }
  // One part of a split key block: plain stores of the scaled dK and dV of
  // all 64 rows into the slot; attentionBackwardDkDvReduce adds the parts.
  const int group = int(blockIdx.x % unsigned(groups));
  float *part = partials + ((int64_t)slot * groups + group) * 2 * 64 * D;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = warp * 16 + g + 8 * r;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      const int col = dt * 8 + t4 * 2;
      *reinterpret_cast<float2 *>(part + row * D + col) =
          make_float2(dk[dt][2 * r] * scale, dk[dt][2 * r + 1] * scale);
      *reinterpret_cast<float2 *>(part + 64 * D + row * D + col) =
          make_float2(dv[dt][2 * r], dv[dt][2 * r + 1]);
    }
  }
}

/// The parts of the split key blocks of segment S into dkAcc, dvAcc, in
/// slot order (fixed: bit-identical between runs). Grid: split key blocks x
/// batch groups (group fastest); block: kBwdThreads. `items`: per split key
/// block (key block, first slot, parts, unused).
template <typename V, typename S>
__device__ __forceinline__ void
attentionBackwardDkDvReduce(const float *__restrict__ partials,
                            const int32_t *__restrict__ items, int groups,
                            float *__restrict__ dkAcc, float *__restrict__ dvAcc) {
  constexpr int D = V::kHeadDim;
  constexpr int kVecs = 64 * D / 4; // float4 per 64 x D matrix
  const int group = int(blockIdx.x % unsigned(groups));
  const int32_t *item = items + 4 * (blockIdx.x / unsigned(groups));
  const int kb = item[0], firstSlot = item[1], parts = item[2];
  const int64_t bh = (int64_t)group * V::kNumHeads + V::kHead;
#pragma unroll 1
  for (int e = threadIdx.x; e < 2 * kVecs; e += kBwdThreads) {
    const int which = e / kVecs, x = e % kVecs;
    const int row = x / (D / 4), col = (x % (D / 4)) * 4;
    const int64_t t = (int64_t)kb * 64 + row;
    if (t >= S::kNumKeys)
      continue;
    float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 1
    for (int p = 0; p < parts; ++p) {
      const float4 val = *reinterpret_cast<const float4 *>(
          partials + ((int64_t)(firstSlot + p) * groups + group) * 2 * 64 * D +
          which * 64 * D + row * D + col);
      sum.x += val.x;
      sum.y += val.y;
      sum.z += val.z;
      sum.w += val.w;
    }
    float *dst = (which ? dvAcc : dkAcc) +
                 (bh * V::kSeqLen + S::keyPosition(t)) * D + col;
    float4 cur = *reinterpret_cast<float4 *>(dst);
    cur.x += sum.x;
    cur.y += sum.y;
    cur.z += sum.z;
    cur.w += sum.w;
    *reinterpret_cast<float4 *>(dst) = cur;
  }
}

/// dQ of the query blocks of segment S (one segment of the dQ kernel).
template <typename V, typename S>
__device__ __forceinline__ void
backwardDqSegment(float (&dq)[V::kHeadDim / 8][4], const uint16_t *sq,
                  const uint16_t *sdo, uint16_t *sk, uint16_t *sv,
                  const uint16_t *k, const uint16_t *v, const int32_t *tables,
                  int qb, const int64_t (&position)[2], const float (&lse2)[2],
                  const float (&dl)[2], float scaleLog2) {
  using Elem = typename V::Elem;
  constexpr int D = V::kHeadDim;
  constexpr int kSub = backwardDqSubTile<D>();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int t4 = lane % 4;
  typename S::Schedule schedule(tables, qb);
  const int count = schedule.count();
  for (int idx = 0; idx < count; ++idx) {
    bool full;
    const int kb = schedule.block(idx, full);
    const int64_t firstKey = (int64_t)kb * kBlockN;
    __syncthreads();
    loadKeyBlock<V, S>(sk, sv, k, v, kb);
    cpAsyncCommit();
    cpAsyncWait<0>();
    __syncthreads();
#pragma unroll 1
    for (int sub = 0; sub < 64 / kSub; ++sub) {
      const uint32_t okBits =
          maskBits<V, S, true, kSub>(firstKey, sub * kSub, full, position);
      float p[kSub / 8][4];
      zeroFill(p);
      mmaABt<Elem, D, kSub>(p, sq, warp * 16, sk, sub * kSub);
#pragma unroll
      for (int nt = 0; nt < kSub / 8; ++nt)
#pragma unroll
        for (int r = 0; r < 2; ++r)
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            float &x = p[nt][2 * r + c];
            x = (okBits >> (nt * 4 + r * 2 + c)) & 1u
                    ? fastExp2(x * scaleLog2 - lse2[r])
                    : 0.0f;
          }
      // dP = dO V^T, dS = P * (dP - Delta).
      float ds[kSub / 8][4];
      zeroFill(ds);
      mmaABt<Elem, D, kSub>(ds, sdo, warp * 16, sv, sub * kSub);
#pragma unroll
      for (int nt = 0; nt < kSub / 8; ++nt)
#pragma unroll
        for (int r = 0; r < 2; ++r)
#pragma unroll
          for (int c = 0; c < 2; ++c)
            ds[nt][2 * r + c] = p[nt][2 * r + c] * (ds[nt][2 * r + c] - dl[r]);
      // dQ += dS K.
      mmaPB<Elem, D, kSub>(dq, ds, sk, sub * kSub);
    }
  }
}

template <typename V, typename List>
struct DqSegmentLoop;
template <typename V>
struct DqSegmentLoop<V, SegmentList<>> {
  template <typename... Args>
  __device__ __forceinline__ static void run(Args &&...) {}
};
template <typename V, typename S, typename... Rest>
struct DqSegmentLoop<V, SegmentList<S, Rest...>> {
  __device__ __forceinline__ static void
  run(float (&dq)[V::kHeadDim / 8][4], const uint16_t *sq, const uint16_t *sdo,
      uint16_t *sk, uint16_t *sv, const uint16_t *k, const uint16_t *v,
      const int32_t *tables, int qb, const int64_t (&position)[2],
      const float (&lse2)[2], const float (&dl)[2], float scaleLog2) {
    backwardDqSegment<V, S>(dq, sq, sdo, sk, sv, k, v, tables, qb, position,
                            lse2, dl, scaleLog2);
    DqSegmentLoop<V, SegmentList<Rest...>>::run(dq, sq, sdo, sk, sv, k, v,
                                                tables, qb, position, lse2, dl,
                                                scaleLog2);
  }
};

/// dQ of one kernel of a mask. Grid: query blocks x batch groups
/// (batch-heads / kNumHeads), ordered as the forward's (queryBlockOfCta); block: kBwdThreads; dynamic shared memory:
/// backwardSharedBytes<D>().
template <typename V>
__device__ __forceinline__ void
attentionBackwardDqMma(const uint16_t *__restrict__ q, const uint16_t *__restrict__ k,
                    const uint16_t *__restrict__ v, const uint16_t *__restrict__ dO,
                    const float *__restrict__ lse, const float *__restrict__ delta,
                    float *__restrict__ dqAcc, const int32_t *__restrict__ tables,
                    float scale) {
  constexpr int D = V::kHeadDim;
  static_assert(D == 32 || D == 64 || D == 128, "head dim must be 32, 64, 128");
  constexpr int kTile = 64 * (D + kPad);
  extern __shared__ __align__(128) uint16_t smem[];
  uint16_t *sk = smem;
  uint16_t *sv = sk + kTile;
  uint16_t *sq = sv + kTile;
  uint16_t *sdo = sq + kTile;

  int qb;
  int64_t group;
  queryBlockOfCta<V>(tables, qb, group);
  const int64_t bh = group * V::kNumHeads + V::kHead;
  const int64_t headOffset = bh * V::kSeqLen * D;
  q += headOffset;
  k += headOffset;
  v += headOffset;
  dO += headOffset;
  lse += bh * V::kSeqLen;
  delta += bh * V::kSeqLen;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4;

  auto queryPosition = [](int64_t t) { return V::queryPosition(t); };
  loadRows<D>(sq, q, (int64_t)qb * kBlockM, V::kNumQueries, queryPosition);
  loadRows<D>(sdo, dO, (int64_t)qb * kBlockM, V::kNumQueries, queryPosition);
  cpAsyncCommit();

  int64_t position[2], rowOffset[2];
  float lse2[2], dl[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t t = (int64_t)qb * kBlockM + warp * 16 + g + 8 * r;
    const bool valid = t < V::kNumQueries;
    position[r] = V::queryPosition(valid ? t : V::kNumQueries - 1);
    rowOffset[r] = valid ? (bh * V::kSeqLen + position[r]) * D : -1;
    lse2[r] = lse[position[r]] * kLog2e;
    dl[r] = delta[position[r]];
  }
  float dq[D / 8][4];
  zeroFill(dq);

  DqSegmentLoop<V, typename V::Segments>::run(dq, sq, sdo, sk, sv, k, v, tables,
                                              qb, position, lse2, dl,
                                              scale * kLog2e);
  cpAsyncWait<0>();
  addRows<D>(dqAcc, dq, rowOffset, scale);
}

} // namespace sparsetx

// --- The dK/dV and dQ kernels a generated entry runs --------------------------
// On sm_90a, head dim 64 may take the wgmma kernels
// (attention_backward_wgmma.cuh) when the generated source defines
// SPARSETX_BACKWARD_WGMMA_ON (CodegenOptions::backwardWgmma): a segment's
// dK/dV kernels where its S::kBackwardWgmma says so, a kernel's dQ kernel
// where its V::kBackwardDqWgmma does (the emitter picks them by the lists'
// lengths); everything else takes the mma.sync kernels above.

#include "sparsetx/attention_backward_wgmma.cuh"

#if SPARSETX_HAS_WGMMA && defined(SPARSETX_BACKWARD_WGMMA_ON)
#define SPARSETX_BACKWARD_WGMMA 1
#else
#define SPARSETX_BACKWARD_WGMMA 0
#endif

namespace sparsetx {

/// Dynamic shared memory of the dQ kernel attentionBackwardDq<V> runs for
/// head dim D, on wgmma or not (the generated source checks the emitter's
/// figures).
template <int D, bool kWgmma>
constexpr int backwardDqKernelSharedBytes() {
#if SPARSETX_BACKWARD_WGMMA
  if constexpr (D == 64 && kWgmma)
    return backwardDqWgmmaSharedBytes<D>();
#endif
  return backwardSharedBytes<D>();
}

/// dQ of one kernel of a mask, deterministic mode (see attentionBackwardDqMma
/// for the grid, block and output; dynamic shared memory
/// backwardDqKernelSharedBytes<D, V::kBackwardDqWgmma>()).
template <typename V>
__device__ __forceinline__ void
attentionBackwardDq(const uint16_t *__restrict__ q, const uint16_t *__restrict__ k,
                    const uint16_t *__restrict__ v, const uint16_t *__restrict__ dO,
                    const float *__restrict__ lse, const float *__restrict__ delta,
                    float *__restrict__ dqAcc, const int32_t *__restrict__ tables,
                    float scale) {
#if SPARSETX_BACKWARD_WGMMA
  if constexpr (V::kHeadDim == 64 && V::kBackwardDqWgmma)
    attentionBackwardDqWgmma<V>(q, k, v, dO, lse, delta, dqAcc, tables, scale);
  else
#endif
    attentionBackwardDqMma<V>(q, k, v, dO, lse, delta, dqAcc, tables, scale);
}

/// Dynamic shared memory of the dK/dV kernels attentionBackwardDkDv<V, S, *>
/// runs for head dim D, on wgmma or not (the generated source checks the
/// emitter's figures).
template <int D, bool kWgmma>
constexpr int backwardDkDvKernelSharedBytes() {
#if SPARSETX_BACKWARD_WGMMA
  if constexpr (D == 64 && kWgmma)
    return backwardDkDvWgmmaSharedBytes<D>();
#endif
  return backwardDkDvSharedBytes<D>();
}

/// dK, dV of one segment S of kernel V, and with kFuseDq its dQ
/// contribution (see attentionBackwardDkDvMma for the grid, block and
/// outputs; dynamic shared memory backwardDkDvKernelSharedBytes<D,
/// S::kBackwardWgmma>()).
template <typename V, typename S, bool kFuseDq>
__device__ __forceinline__ void
attentionBackwardDkDv(const uint16_t *__restrict__ q, const uint16_t *__restrict__ k,
                      const uint16_t *__restrict__ v, const uint16_t *__restrict__ dO,
                      const float *__restrict__ lse, const float *__restrict__ delta,
                      float *__restrict__ dqAcc, float *__restrict__ dkAcc,
                      float *__restrict__ dvAcc, const int32_t *__restrict__ tables,
                      const int32_t *__restrict__ work, int groups,
                      float *__restrict__ partials, float scale) {
#if SPARSETX_BACKWARD_WGMMA
  if constexpr (V::kHeadDim == 64 && S::kBackwardWgmma)
    attentionBackwardDkDvWgmma<V, S, kFuseDq>(q, k, v, dO, lse, delta, dqAcc,
                                              dkAcc, dvAcc, tables, work, groups,
                                              partials, scale);
  else
#endif
    attentionBackwardDkDvMma<V, S, kFuseDq>(q, k, v, dO, lse, delta, dqAcc,
                                            dkAcc, dvAcc, tables, work, groups,
                                            partials, scale);
}

} // namespace sparsetx

#endif // SPARSETX_KERNELS_ATTENTION_BACKWARD_CUH
