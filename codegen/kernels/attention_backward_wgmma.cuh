//===- attention_backward_wgmma.cuh - dK, dV (and dQ) on wgmma --*- CUDA -*-===//
//
// The sm_90a dK/dV kernel for head dim 64: attentionBackwardDkDv's contract
// (work items, grid, accumulators, split parts, the fused dQ's reductions)
// with the five products on wgmma (hopper.cuh). One warpgroup owns the 64
// keys of its item; per query block that reaches them:
//
//   S^T  = K Q^T      wgmma SS (K, Q K-major)         } one commit group;
//   dP^T = V dO^T     wgmma SS (V, dO K-major)        } the mask bits are
//                                                       evaluated meanwhile
//   P^T  = exp2(S^T scale log2e - LSE log2e) where attended, else 0
//   dS^T = P^T (dP^T - Delta)
//   dV  += P^T dO     wgmma RS (P^T from registers, dO MN-major)
//   dK  += dS^T Q     wgmma RS (dS^T from registers, Q MN-major)
//   dQ  += dS K       (kFuseDq) dS^T written to a swizzled shared tile, then
//                     wgmma SS with A transposed (the tile is [keys][queries],
//                     MN-major for A) and K MN-major; the rows go to dqAcc
//                     with fp32 reductions, as the mma.sync kernel's do.
//
// Q, dO, LSE and Delta of the next query block load (cp.async) while this
// one computes, as in the mma.sync kernel. The accumulators' layout (rows
// are keys, 16 per warp; hopper.cuh) is the mma.sync kernel's, so the mask
// bits, the epilogue and the split parts read the same.
//
// The deterministic mode's dQ kernel (attentionBackwardDqWgmma, D = 64) is
// the forward kernel's shape: one warpgroup per 64 mapped queries (Q and dO
// tiles loaded once), the forward's schedule of key blocks with K and V
// loaded three stages deep; per key block S = Q K^T and dP = dO V^T (one
// group), P = exp2(S scale log2e - LSE log2e), dS = P (dP - Delta), and
// dQ += dS K with dS from registers (K MN-major). No atomics: each CTA owns
// its query rows, so dQ is bit-reproducible as before.
//
// attention_backward.cuh includes this header after the pieces both kernels
// share; it is not included alone.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_KERNELS_ATTENTION_BACKWARD_WGMMA_CUH
#define SPARSETX_KERNELS_ATTENTION_BACKWARD_WGMMA_CUH

#include "sparsetx/hopper.cuh"

namespace sparsetx {

/// Shared memory of the wgmma dK/dV kernel (D = 64): K, V, two stages of Q
/// and dO, and the dS^T tile as 8 KiB swizzled tiles, two stages of LSE and
/// Delta, and 1 KiB to align the first tile.
template <int D>
constexpr int backwardDkDvWgmmaSharedBytes() {
  return 7 * int(sw128TileBytes(64)) * (D / 64) + 2 * 2 * 64 * 4 +
         int(kSw128TileAlign);
}

/// K/V stages of the wgmma dQ kernel.
constexpr int kBackwardDqWgmmaStages = 3;

/// Shared memory of the wgmma dQ kernel (D = 64): Q, dO and kStages stages
/// of K and V as 8 KiB swizzled tiles, and 1 KiB to align the first tile.
template <int D>
constexpr int backwardDqWgmmaSharedBytes() {
  return (2 + 2 * kBackwardDqWgmmaStages) * int(sw128TileBytes(64)) * (D / 64) +
         int(kSw128TileAlign);
}

#if SPARSETX_HAS_WGMMA

/// 32 bits into shared memory at a shared address.
__device__ __forceinline__ void storeShared32(uint32_t addr, uint32_t value) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(value) : "memory");
}

template <typename V, typename S, bool kFuseDq>
__device__ __forceinline__ void
attentionBackwardDkDvWgmma(const uint16_t *__restrict__ q,
                           const uint16_t *__restrict__ k,
                           const uint16_t *__restrict__ v,
                           const uint16_t *__restrict__ dO,
                           const float *__restrict__ lse,
                           const float *__restrict__ delta,
                           float *__restrict__ dqAcc, float *__restrict__ dkAcc,
                           float *__restrict__ dvAcc,
                           const int32_t *__restrict__ tables,
                           const int32_t *__restrict__ work, int groups,
                           float *__restrict__ partials, float scale) {
  using Elem = typename V::Elem;
  constexpr int D = V::kHeadDim;
  static_assert(D == 64, "the wgmma dK/dV kernel takes head dim 64");
  constexpr uint32_t kTile = sw128TileBytes(64);
  extern __shared__ __align__(128) uint16_t smem[];
  const uint32_t smemBase = smemAddress(smem);
  const uint32_t base = sw128AlignUp(smemBase);
  const uint32_t sK = base, sV = base + kTile, sQ = base + 2 * kTile, // 2 stages
      sDO = base + 4 * kTile,                                         // 2 stages
      sDS = base + 6 * kTile;
  float *slse = reinterpret_cast<float *>(reinterpret_cast<char *>(smem) +
                                          (base - smemBase) + 7 * kTile);
  float *sdelta = slse + 2 * 64; // two stages each

  // Work item (key block, [begin, end) of its query list, partial slot),
  // batch group fastest (see attentionBackwardDkDvMma).
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
  auto keyPosition = [](int64_t t) { return S::keyPosition(t); };

  // Q, dO, LSE and Delta of query block qb into stage `stage` (one group).
  auto loadQueryBlock = [&](int qb, int stage) {
    const int64_t firstQuery = (int64_t)qb * 64;
    sw128LoadRows<D>(sQ + stage * kTile, q, firstQuery, V::kNumQueries,
                     queryPosition);
    sw128LoadRows<D>(sDO + stage * kTile, dO, firstQuery, V::kNumQueries,
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

  sw128LoadRows<D>(sK, k, (int64_t)kb * 64, S::kNumKeys, keyPosition);
  sw128LoadRows<D>(sV, v, (int64_t)kb * 64, S::kNumKeys, keyPosition);
  cpAsyncCommit();

  int64_t keyPos[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t t = (int64_t)kb * 64 + warp * 16 + g + 8 * r;
    keyPos[r] = S::keyPosition(t < S::kNumKeys ? t : S::kNumKeys - 1);
  }
  float dk[32], dv[32];
  zeroFill(dk);
  zeroFill(dv);

  typename S::ByKey schedule(tables, kb);
  if (begin < end) {
    bool full;
    loadQueryBlock(schedule.block(begin, full), begin & 1);
  }

  for (int idx = begin; idx < end; ++idx) {
    const int stage = idx & 1;
    bool full;
    const int qb = schedule.block(idx, full);
    const int64_t firstQuery = (int64_t)qb * 64;
    // This stage (and K, V) has landed; every warp is done with the other
    // stage and the dS^T tile of the previous block (its wgmmas retired
    // before the barrier): refill the other stage.
    cpAsyncWait<0>();
    fenceProxyAsyncShared();
    __syncthreads();
    if (idx + 1 < end) {
      bool nextFull;
      loadQueryBlock(schedule.block(idx + 1, nextFull), stage ^ 1);
    }
    const uint32_t cq = sQ + stage * kTile, cdo = sDO + stage * kTile;
    const float *clse = slse + stage * 64;
    const float *cdelta = sdelta + stage * 64;

    // S^T = K Q^T and dP^T = V dO^T, one group.
    float s[32], dp[32];
    wgmmaIssuePair<Elem>(s, sK, cq, dp, sV, cdo);
    // Which pairs are attended (rows are keys, columns queries), while the
    // products run.
    const uint32_t okBits = maskBits<V, S, false>(firstQuery, 0, full, keyPos);

    wgmmaWaitAll(s, dp);

    // P^T on attended pairs (else 0), then dS^T = P^T (dP^T - Delta).
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const int col = nt * 8 + t4 * 2 + c;
        const float lse2 = clse[col] * kLog2e;
        const float dl = cdelta[col];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int e = 4 * nt + 2 * r + c;
          const float pv =
              (okBits >> e) & 1u ? fastExp2(s[e] * scaleLog2 - lse2) : 0.0f;
          s[e] = pv;
          dp[e] = pv * (dp[e] - dl);
        }
      }
    uint32_t pa[4][4], dsa[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      wgmmaAccToA<Elem>(s, kk, pa[kk]);
      wgmmaAccToA<Elem>(dp, kk, dsa[kk]);
    }

    // dV += P^T dO, dK += dS^T Q (queries are K: dO, Q MN-major).
    wgmmaFenceOperand(dv);
    wgmmaFenceOperand(dk);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      wgmmaFenceOperand(pa[kk]);
      wgmmaFenceOperand(dsa[kk]);
    }
    wgmmaFence();
    wgmmaRegTileMNMajor<Elem>(dv, pa, cdo);
    wgmmaRegTileMNMajor<Elem>(dk, dsa, cq);
    wgmmaCommit();

    if constexpr (kFuseDq) {
      // dS^T into the shared tile: the pair (row 16w + g + 8r, columns
      // 8nt + 2t4, +1) is register 2 (nt % 2) + r of k-slice nt / 2.
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int r = 0; r < 2; ++r)
          storeShared32(sDS + sw128ElementOffset(warp * 16 + g + 8 * r,
                                                 nt * 8 + t4 * 2),
                        dsa[nt / 2][2 * (nt % 2) + r]);
      fenceProxyAsyncShared();
      __syncthreads(); // the dS^T tile is complete
      // dQ (64 queries x D) = dS K: A = dS read from the [keys][queries]
      // tile (MN-major, transposed), B = K [keys][D] (MN-major).
      float dq[32];
      wgmmaFenceOperand(dq);
      wgmmaFence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        wgmmaM64N64K16SS<Elem, 1, 1>(
            dq,
            wgmmaDescAdvance(wgmmaDescSw128MNMajor<64>(sDS),
                             kk * kWgmmaKStepBytesMNMajor),
            wgmmaDescAdvance(wgmmaDescSw128MNMajor<64>(sK),
                             kk * kWgmmaKStepBytesMNMajor),
            kk > 0);
      wgmmaCommit();
      wgmmaWaitAll(dq);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int64_t t = firstQuery + warp * 16 + g + 8 * r;
        if (t >= V::kNumQueries)
          continue;
        float *out = dqAcc + (bh * V::kSeqLen + V::queryPosition(t)) * D + t4 * 2;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)
          redAddF32x2(out + nt * 8, dq[4 * nt + 2 * r] * scale,
                      dq[4 * nt + 2 * r + 1] * scale);
      }
    } else {
      wgmmaWait<0>();
    }
    wgmmaFenceOperand(dv);
    wgmmaFenceOperand(dk);
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
    // A whole list: this CTA owns the key rows (plain read-modify-write).
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if (rowOffset[r] < 0)
        continue;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        const int64_t x = rowOffset[r] + nt * 8 + t4 * 2;
        float2 *pk = reinterpret_cast<float2 *>(dkAcc + x);
        float2 *pv = reinterpret_cast<float2 *>(dvAcc + x);
        float2 ck = *pk, cv = *pv;
        ck.x += dk[4 * nt + 2 * r] * scale;
        ck.y += dk[4 * nt + 2 * r + 1] * scale;
        cv.x += dv[4 * nt + 2 * r];
        cv.y += dv[4 * nt + 2 * r + 1];
        *pk = ck;
        *pv = cv;
      }
    }
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
    for (int nt = 0; nt < 8; ++nt) {
      const int col = nt * 8 + t4 * 2;
      *reinterpret_cast<float2 *>(part + row * D + col) = make_float2(
          dk[4 * nt + 2 * r] * scale, dk[4 * nt + 2 * r + 1] * scale);
      *reinterpret_cast<float2 *>(part + 64 * D + row * D + col) =
          make_float2(dv[4 * nt + 2 * r], dv[4 * nt + 2 * r + 1]);
    }
  }
}

/// dQ of the query block over the key blocks of segment S (the forward's
/// schedule). Block i's K and V sit in stage i % kStages; a stage is refilled
/// (block i + kStages) once every warp's dQ product of block i retired.
template <typename V, typename S>
__device__ __forceinline__ void
backwardDqSegmentWgmma(float (&dq)[32], uint32_t sQ, uint32_t sDO,
                       uint32_t sStages, const uint16_t *k, const uint16_t *v,
                       const int32_t *tables, int qb,
                       const int64_t (&position)[2], const float (&lse2)[2],
                       const float (&dl)[2], float scaleLog2) {
  using Elem = typename V::Elem;
  constexpr int kStages = kBackwardDqWgmmaStages;
  constexpr uint32_t kTile = sw128TileBytes(64);
  // Stage i: K at sStages + 2 i kTile, V right after it.
  auto load = [&](int stage, int kb) {
    const uint32_t at = sStages + 2 * kTile * stage;
    wgmmaLoadKeyBlock<V, S>(at, at + kTile, k, v, kb);
  };
  typename S::Schedule schedule(tables, qb);
  const int count = schedule.count();
  if (count <= 0)
    return;
  // Block idx's commit group is group idx; at iteration idx, kStages + idx
  // groups exist.
  wgmmaLoadFirstBlocks<kStages>(count, [&](int i) {
    bool full;
    load(i, schedule.block(i, full));
  });
  for (int idx = 0; idx < count; ++idx) {
    const int stage = idx % kStages;
    const uint32_t sK = sStages + 2 * kTile * stage, sV = sK + kTile;
    bool full;
    const int kb = schedule.block(idx, full);
    const int64_t firstKey = (int64_t)kb * kBlockN;
    cpAsyncWait<kStages - 1>();
    fenceProxyAsyncShared();
    __syncthreads();

    // S = Q K^T and dP = dO V^T, one group.
    float s[32], dp[32];
    wgmmaIssuePair<Elem>(s, sQ, sK, dp, sDO, sV);
    // The mask bits (rows are queries, columns keys) while the products run.
    const uint32_t okBits = maskBits<V, S, true>(firstKey, 0, full, position);

    wgmmaWaitAll(s, dp);
#pragma unroll
    for (int e = 0; e < 32; ++e) {
      const int r = (e >> 1) & 1;
      const float pv =
          (okBits >> e) & 1u ? fastExp2(s[e] * scaleLog2 - lse2[r]) : 0.0f;
      dp[e] = pv * (dp[e] - dl[r]);
    }
    uint32_t dsa[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmmaAccToA<Elem>(dp, kk, dsa[kk]);

    // dQ += dS K: the keys are K (K MN-major).
    wgmmaFenceOperand(dq);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmmaFenceOperand(dsa[kk]);
    wgmmaFence();
    wgmmaRegTileMNMajor<Elem>(dq, dsa, sK);
    wgmmaCommit();
    wgmmaWaitAll(dq);
    // Every warp is done with this stage: refill it.
    __syncthreads();
    if (idx + kStages < count) {
      bool nextFull;
      load(stage, schedule.block(idx + kStages, nextFull));
    }
    cpAsyncCommit();
  }
  // The next segment's prologue refills every stage.
  cpAsyncWait<0>();
  __syncthreads();
}

template <typename V, typename List>
struct WgmmaDqSegmentLoop;
template <typename V>
struct WgmmaDqSegmentLoop<V, SegmentList<>> {
  template <typename... Args>
  __device__ __forceinline__ static void run(Args &&...) {}
};
template <typename V, typename S, typename... Rest>
struct WgmmaDqSegmentLoop<V, SegmentList<S, Rest...>> {
  __device__ __forceinline__ static void
  run(float (&dq)[32], uint32_t sQ, uint32_t sDO, uint32_t sStages,
      const uint16_t *k, const uint16_t *v, const int32_t *tables, int qb,
      const int64_t (&position)[2], const float (&lse2)[2],
      const float (&dl)[2], float scaleLog2) {
    backwardDqSegmentWgmma<V, S>(dq, sQ, sDO, sStages, k, v, tables, qb,
                                 position, lse2, dl, scaleLog2);
    WgmmaDqSegmentLoop<V, SegmentList<Rest...>>::run(
        dq, sQ, sDO, sStages, k, v, tables, qb, position, lse2, dl, scaleLog2);
  }
};

/// attentionBackwardDqMma's contract on wgmma (D = 64); dynamic shared
/// memory backwardDqWgmmaSharedBytes<D>().
template <typename V>
__device__ __forceinline__ void
attentionBackwardDqWgmma(const uint16_t *__restrict__ q,
                         const uint16_t *__restrict__ k,
                         const uint16_t *__restrict__ v,
                         const uint16_t *__restrict__ dO,
                         const float *__restrict__ lse,
                         const float *__restrict__ delta,
                         float *__restrict__ dqAcc,
                         const int32_t *__restrict__ tables, float scale) {
  constexpr int D = V::kHeadDim;
  static_assert(D == 64, "the wgmma dQ kernel takes head dim 64");
  constexpr uint32_t kTile = sw128TileBytes(64);
  extern __shared__ __align__(128) uint16_t smem[];
  const uint32_t sQ = sw128AlignUp(smemAddress(smem)), sDO = sQ + kTile,
                 sStages = sQ + 2 * kTile;

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
  const int g = lane / 4, t4 = lane % 4;

  auto queryPosition = [](int64_t t) { return V::queryPosition(t); };
  sw128LoadRows<D>(sQ, q, (int64_t)qb * kBlockM, V::kNumQueries, queryPosition);
  sw128LoadRows<D>(sDO, dO, (int64_t)qb * kBlockM, V::kNumQueries,
                   queryPosition);
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
  float dq[32];
  zeroFill(dq);
  // Q's and dO's group completes before any segment's (groups retire in
  // order); an empty segment list still waits here.
  cpAsyncWait<0>();
  fenceProxyAsyncShared();
  __syncthreads();

  WgmmaDqSegmentLoop<V, typename V::Segments>::run(
      dq, sQ, sDO, sStages, k, v, tables, qb, position, lse2, dl,
      scale * kLog2e);

  // The CTA owns its query rows (plain read-modify-write, as addRows).
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (rowOffset[r] < 0)
      continue;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      float2 *ptr = reinterpret_cast<float2 *>(dqAcc + rowOffset[r] + nt * 8 +
                                               t4 * 2);
      float2 cur = *ptr;
      cur.x += dq[4 * nt + 2 * r] * scale;
      cur.y += dq[4 * nt + 2 * r + 1] * scale;
      *ptr = cur;
    }
  }
}

#endif // SPARSETX_HAS_WGMMA

} // namespace sparsetx

#endif // SPARSETX_KERNELS_ATTENTION_BACKWARD_WGMMA_CUH
