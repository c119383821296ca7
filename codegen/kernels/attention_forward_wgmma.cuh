//===- attention_forward_wgmma.cuh - the forward pass on wgmma --*- CUDA -*-===//
//
// The sm_90a forward kernel for head dims 64 and 128: the same CTA (one
// warpgroup, 64 mapped query indices), tables, schedules, masks and online
// softmax as attention_forward.cuh's mma.sync kernel, with both products on
// wgmma (hopper.cuh, whose pieces test/gpu/HopperMmaTest.cpp checks):
//
//   S = Q K^T   wgmma m64n64k16, Q and K from 128B-swizzled shared tiles
//               (K-major), D / 16 k-steps;
//   O += P V    wgmma m64n64k16, P from registers (the accumulator of S is
//               the A fragment, register for register), V from shared
//               memory (MN-major), 4 k-steps per 64 columns of D.
//
// Rows of D elements are split into D / 64 tiles of [64 rows][64 columns]
// (tile h: columns 64h .. 64h + 63); K and V rows are gathered by the key
// map with cp.async into the swizzled tiles, wgmmaStages<D>() deep.
//
// Pipelining (FlashAttention-3's intra-warpgroup overlap): S of key block i
// is issued before P V of block i - 1, and block i's softmax runs while that
// P V is still in the tensor cores; the stage of block i - 1 is refilled
// (with block i - 1 + stages) only after its P V retired.
//
// Accumulator layout (hopper.cuh): thread t of warp w holds, for each
// 8-column group j, d[4j + 2r + c] = row 16w + t/4 + 8r, column 8j + 2(t%4)
// + c: the mma.sync m16n8 layout the mma.sync kernel uses, so the rows
// (ForwardState::position, m, l) and the mask code read the same.
//
// attention_forward.cuh includes this header after the pieces both kernels
// share (block sizes, schedules, queryBlockOfCta); it is not included alone.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_KERNELS_ATTENTION_FORWARD_WGMMA_CUH
#define SPARSETX_KERNELS_ATTENTION_FORWARD_WGMMA_CUH

#include "sparsetx/hopper.cuh"

namespace sparsetx {

/// K/V stages of the wgmma forward kernel: loads run kStages - 1 key blocks
/// ahead (a stage is refilled once P V of its block retired). Three at D =
/// 64 (57 KiB: three CTAs per SM), two at D = 128 (81 KiB, two per SM).
template <int D>
constexpr int wgmmaStages() {
  return D == 64 ? 3 : 2;
}

/// Shared memory of the wgmma forward kernel in bytes: Q and kWgmmaStages
/// stages of K and V as 64-column swizzled tiles, and 1 KiB to align the
/// first tile (the dynamic window is only 16-byte aligned).
template <int D>
constexpr int forwardWgmmaSharedBytes() {
  return (1 + 2 * wgmmaStages<D>()) * int(sw128TileBytes(kBlockM)) * (D / 64) +
         int(kSw128TileAlign);
}

#if SPARSETX_HAS_WGMMA

template <int D>
struct WgmmaForwardState {
  float o[D / 64][32]; // O accumulator, one wgmma accumulator per 64 columns
  float m[2];          // running max of scaled scores (log2 domain)
  float l[2];          // running sum of exp2 (this thread's columns only)
  int64_t position[2]; // query positions of the thread's two rows
};

/// Gathers 64 rows of `src` (rows of D elements at mapped indices
/// [firstIndex, firstIndex + 64) under `position`) into the D / 64 swizzled
/// tiles at shared address `tiles`; indices at or past `count` are
/// zero-filled.
template <int D, typename PositionFn>
__device__ __forceinline__ void sw128LoadRows(uint32_t tiles,
                                              const uint16_t *src,
                                              int64_t firstIndex, int64_t count,
                                              PositionFn position) {
  constexpr int kChunks = D / 8; // 16-byte chunks per row
  constexpr int kPerThread = kBlockM * kChunks / kThreads;
  static_assert(kBlockM * kChunks % kThreads == 0, "tile not divisible");
  const int tid = threadIdx.x;
#pragma unroll
  for (int it = 0; it < kPerThread; ++it) {
    const int idx = it * kThreads + tid;
    const int row = idx / kChunks, chunk = idx % kChunks;
    const int64_t t = firstIndex + row;
    const bool valid = t < count;
    const int64_t p = valid ? position(t) : 0;
    cpAsync16(tiles + (chunk / 8) * sw128TileBytes(kBlockM) +
                  sw128Offset(row, chunk % 8),
              src + p * D + chunk * 8, valid);
  }
}

/// Shared addresses of the tiles: Q, then per stage K and V.
template <int D>
struct WgmmaTiles {
  static constexpr uint32_t kRowTiles = sw128TileBytes(kBlockM) * (D / 64);
  uint32_t q;
  __device__ __forceinline__ uint32_t k(int stage) const {
    return q + kRowTiles * (1 + 2 * stage);
  }
  __device__ __forceinline__ uint32_t v(int stage) const {
    return q + kRowTiles * (2 + 2 * stage);
  }
};

/// acc = A B^T (accumulate false) or acc += A B^T over K = 64 kTiles, with
/// A and B^T as rows of K-major [64][64] swizzled tiles (kTiles of them,
/// 8 KiB apart, at shared addresses a and b): S = Q K^T, dP = dO V^T, ...
template <typename Elem, int kTiles = 1>
__device__ __forceinline__ void wgmmaTilesKMajor(float (&acc)[32], uint32_t a,
                                                 uint32_t b, bool accumulate) {
#pragma unroll
  for (int h = 0; h < kTiles; ++h)
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
      const uint32_t tile = h * sw128TileBytes(64);
      const uint32_t step = ks * kWgmmaKStepBytesKMajor;
      wgmmaM64N64K16SS<Elem, 0>(
          acc, wgmmaDescAdvance(wgmmaDescSw128KMajor(a + tile), step),
          wgmmaDescAdvance(wgmmaDescSw128KMajor(b + tile), step),
          accumulate || h > 0 || ks > 0);
    }
}

/// acc += A B with A (64 x 64) as the A fragments `a` of its four k-slices
/// and B an MN-major [64][64] swizzled tile (its rows are K) at shared
/// address b: O += P V, dV += P^T dO, ...
template <typename Elem>
__device__ __forceinline__ void wgmmaRegTileMNMajor(float (&acc)[32],
                                                    const uint32_t (&a)[4][4],
                                                    uint32_t b) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
    wgmmaM64N64K16RS<Elem, 1>(
        acc, a[kk],
        wgmmaDescAdvance(wgmmaDescSw128MNMajor<64>(b),
                         kk * kWgmmaKStepBytesMNMajor),
        true);
}

/// Issues the cp.async copies of key block kb of segment S: its K rows into
/// the tiles at kTiles, its V rows into those at vTiles.
template <typename V, typename S>
__device__ __forceinline__ void wgmmaLoadKeyBlock(uint32_t kTiles, uint32_t vTiles,
                                                  const uint16_t *k,
                                                  const uint16_t *v, int kb) {
  constexpr int D = V::kHeadDim;
  auto position = [](int64_t t) { return S::keyPosition(t); };
  sw128LoadRows<D>(kTiles, k, (int64_t)kb * kBlockN, S::kNumKeys, position);
  sw128LoadRows<D>(vTiles, v, (int64_t)kb * kBlockN, S::kNumKeys, position);
}

/// The prologue of a pipelined walk: `load(i)` for the first kStages
/// entries (stage i), one cp.async commit group each, and an empty group
/// where the walk is shorter, so that entry idx's group is always group idx
/// and the waits can count uniformly.
template <int kStages, typename Load>
__device__ __forceinline__ void wgmmaLoadFirstBlocks(int count, Load load) {
#pragma unroll
  for (int i = 0; i < kStages; ++i) {
    if (i < count)
      load(i);
    cpAsyncCommit();
  }
}

/// x = XA XB^T and y = YA YB^T over K = 64 (K-major [64][64] tiles at the
/// shared addresses given), issued as one commit group: S and dP of the
/// backward kernels.
template <typename Elem>
__device__ __forceinline__ void wgmmaIssuePair(float (&x)[32], uint32_t xa,
                                               uint32_t xb, float (&y)[32],
                                               uint32_t ya, uint32_t yb) {
  wgmmaFenceOperand(x);
  wgmmaFenceOperand(y);
  wgmmaFence();
  wgmmaTilesKMajor<Elem>(x, xa, xb, false);
  wgmmaTilesKMajor<Elem>(y, ya, yb, false);
  wgmmaCommit();
}

/// Issues S = Q K^T for the key tiles at `kTiles` (one commit group).
template <typename V>
__device__ __forceinline__ void wgmmaIssueScores(float (&s)[32], uint32_t qTiles,
                                                 uint32_t kTiles) {
  wgmmaFenceOperand(s);
  wgmmaFence();
  wgmmaTilesKMajor<typename V::Elem, V::kHeadDim / 64>(s, qTiles, kTiles, false);
  wgmmaCommit();
}

/// Issues O += P V for the value tiles at `vTiles` (one commit group); `p`
/// holds P's A fragments, which must stay untouched until the group retires.
template <typename V>
__device__ __forceinline__ void wgmmaIssueValues(WgmmaForwardState<V::kHeadDim> &st,
                                                 uint32_t (&p)[4][4],
                                                 uint32_t vTiles) {
  constexpr int D = V::kHeadDim;
#pragma unroll
  for (int h = 0; h < D / 64; ++h)
    wgmmaFenceOperand(st.o[h]);
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
    wgmmaFenceOperand(p[kk]);
  wgmmaFence();
#pragma unroll
  for (int h = 0; h < D / 64; ++h)
    wgmmaRegTileMNMajor<typename V::Elem>(st.o[h], p,
                                          vTiles + h * sw128TileBytes(64));
  wgmmaCommit();
}

/// Masks the scores of key block kb (scaled to the log2 domain first),
/// updates the running max and sum and leaves P = exp2(S - max) in `s` and
/// the factor O must be rescaled by in `alpha` (the caller applies it once
/// no P V is in flight).
template <typename V, typename S>
__device__ __forceinline__ void wgmmaSoftmax(WgmmaForwardState<V::kHeadDim> &st,
                                             float (&s)[32], float (&alpha)[2],
                                             int kb, bool full, float scaleLog2) {
#pragma unroll
  for (int i = 0; i < 32; ++i)
    s[i] *= scaleLog2;
  // Full blocks skip the predicate; only a block that runs past the mapped
  // keys (the last one, when kNumKeys % 64 != 0) needs the bounds check.
  const int64_t firstKey = (int64_t)kb * kBlockN;
  if (!full || firstKey + kBlockN > S::kNumKeys) {
    const uint32_t bits = maskBits<V, S, true>(firstKey, 0, full, st.position);
#pragma unroll
    for (int e = 0; e < 32; ++e)
      if (!((bits >> e) & 1u))
        s[e] = negInf();
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float mx = st.m[r];
#pragma unroll
    for (int nt = 0; nt < kBlockN / 8; ++nt)
      mx = fmaxf(mx, fmaxf(s[4 * nt + 2 * r], s[4 * nt + 2 * r + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    // A row with no key so far keeps -inf; subtract 0 instead so that
    // exp2(-inf - -inf) never happens: masked scores still give 0.
    const float base = mx == negInf() ? 0.0f : mx;
    alpha[r] = fastExp2(st.m[r] - base);
    st.m[r] = mx;
    float sum = 0.0f;
#pragma unroll
    for (int nt = 0; nt < kBlockN / 8; ++nt) {
      s[4 * nt + 2 * r] = fastExp2(s[4 * nt + 2 * r] - base);
      s[4 * nt + 2 * r + 1] = fastExp2(s[4 * nt + 2 * r + 1] - base);
      sum += s[4 * nt + 2 * r] + s[4 * nt + 2 * r + 1];
    }
    st.l[r] = st.l[r] * alpha[r] + sum;
  }
}

/// O *= alpha per row, then P's A fragments from `s` into `p` (neither O nor
/// the old `p` may be in flight).
template <typename V>
__device__ __forceinline__ void wgmmaRescaleAndPack(WgmmaForwardState<V::kHeadDim> &st,
                                                   const float (&s)[32],
                                                   const float (&alpha)[2],
                                                   uint32_t (&p)[4][4]) {
#pragma unroll
  for (int h = 0; h < V::kHeadDim / 64; ++h)
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        st.o[h][4 * nt + 2 * r] *= alpha[r];
        st.o[h][4 * nt + 2 * r + 1] *= alpha[r];
      }
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
    wgmmaAccToA<typename V::Elem>(s, kk, p[kk]);
}

/// Waits until the loads of key block g (the kernel's g-th, counted over
/// all its segments: commit group g after Q's) have landed and makes them
/// visible to wgmma. The prologue commits groups 0 .. kStages - 1; every
/// block g >= 1 commits the refill of block g - 1 + kStages once P V of
/// block g - 1 retired, after its wait, so at block g >= 1, kStages + g - 1
/// groups exist.
template <int D>
__device__ __forceinline__ void wgmmaWaitForBlock(int g) {
  constexpr int kStages = wgmmaStages<D>();
  if (g == 0)
    cpAsyncWait<kStages - 1>();
  else
    cpAsyncWait<kStages - 2>();
  fenceProxyAsyncShared();
  __syncthreads();
}

/// What the key-block walk carries from block to block, across segments:
/// P of the last block (its P V not yet issued) and the tiles.
template <int D>
struct WgmmaWalk {
  WgmmaForwardState<D> st;
  WgmmaTiles<D> tiles;
  uint32_t p[4][4];
  const uint16_t *k, *v;
  float scaleLog2;
};

/// The schedules of a kernel's segments for one query block, chained: the
/// wgmma forward walks their key blocks as one sequence (block g of the
/// kernel in stage g % kStages), so the loads run kStages - 1 blocks ahead
/// across segment boundaries too, and P V of a segment's last block
/// overlaps the next segment's first scores and softmax (a pattern like
/// fixed has a short local segment, 1.5 blocks on average, before its long
/// summary one: a pipeline per segment restarted twice per query block).
template <typename V, typename List>
struct WgmmaSegmentChain;
template <typename V>
struct WgmmaSegmentChain<V, SegmentList<>> {
  __device__ __forceinline__ WgmmaSegmentChain(const int32_t *, int) {}
  __device__ __forceinline__ int total() const { return 0; }
  __device__ __forceinline__ void load(WgmmaWalk<V::kHeadDim> &, int, int) const {}
  template <typename Head>
  __device__ __forceinline__ void run(WgmmaWalk<V::kHeadDim> &, const Head &,
                                      int, int) const {}
};
template <typename V, typename S, typename... Rest>
struct WgmmaSegmentChain<V, SegmentList<S, Rest...>> {
  typename S::Schedule schedule;
  int count;
  WgmmaSegmentChain<V, SegmentList<Rest...>> rest;

  __device__ __forceinline__ WgmmaSegmentChain(const int32_t *tables, int qb)
      : schedule(tables, qb), rest(tables, qb) {
    const int c = schedule.count();
    count = c > 0 ? c : 0;
  }
  __device__ __forceinline__ int total() const { return count + rest.total(); }

  /// Issues the cp.async copies of block g (counted from this segment's
  /// first) into stage `stage`.
  __device__ __forceinline__ void load(WgmmaWalk<V::kHeadDim> &w, int g,
                                       int stage) const {
    if (g < count) {
      bool full;
      wgmmaLoadKeyBlock<V, S>(w.tiles.k(stage), w.tiles.v(stage), w.k, w.v,
                              schedule.block(g, full));
    } else {
      rest.load(w, g - count, stage);
    }
  }

  /// This segment's blocks, the kernel's first + 0 .. count - 1 (of `total`),
  /// then the rest's. FlashAttention-3's intra-warpgroup overlap: block g
  /// issues S = Q K^T and then P V of block g - 1, waits for the scores
  /// only, runs its softmax while that P V is in the tensor cores, then
  /// retires P V, rescales O and refills block g - 1's stage with block
  /// g - 1 + kStages (of whichever segment: `head` is the whole chain).
  template <typename Head>
  __device__ __forceinline__ void run(WgmmaWalk<V::kHeadDim> &w, const Head &head,
                                      int first, int total) const {
    constexpr int D = V::kHeadDim;
    constexpr int kStages = wgmmaStages<D>();
    for (int idx = 0; idx < count; ++idx) {
      const int g = first + idx;
      bool full;
      const int kb = schedule.block(idx, full);
      float s[32], alpha[2];
      wgmmaWaitForBlock<D>(g);
      wgmmaIssueScores<V>(s, w.tiles.q, w.tiles.k(g % kStages));
      // (Block 0 has no P V before it: an empty group in its place keeps
      // the waits below the same on every path, which ptxas needs to keep
      // the wgmmas asynchronous.)
      if (g > 0)
        wgmmaIssueValues<V>(w.st, w.p, w.tiles.v((g - 1) % kStages));
      else
        wgmmaCommit();
      // The scores' group is the older of the two in flight.
      wgmmaWait<1>();
      wgmmaFenceOperand(s);
      wgmmaSoftmax<V, S>(w.st, s, alpha, kb, full, w.scaleLog2);
      wgmmaWait<0>();
#pragma unroll
      for (int h = 0; h < D / 64; ++h)
        wgmmaFenceOperand(w.st.o[h]);
      wgmmaRescaleAndPack<V>(w.st, s, alpha, w.p);
      if (g > 0) {
        // Every warp's P V of block g - 1 has retired: refill its stage.
        __syncthreads();
        const int refill = g - 1 + kStages;
        if (refill < total)
          head.load(w, refill, (g - 1) % kStages);
        cpAsyncCommit();
      }
    }
    rest.run(w, head, first + count, total);
  }
};

/// The forward pass of one kernel of a mask on wgmma: attentionForward's
/// contract (grid, block, outputs), dynamic shared memory
/// forwardWgmmaSharedBytes<D>().
template <typename V>
__device__ __forceinline__ void
attentionForwardWgmma(const uint16_t *__restrict__ q,
                      const uint16_t *__restrict__ k,
                      const uint16_t *__restrict__ v, void *__restrict__ o,
                      float *__restrict__ lse,
                      const int32_t *__restrict__ tables, float scale) {
  using Elem = typename V::Elem;
  constexpr int D = V::kHeadDim;
  static_assert(D == 64 || D == 128, "the wgmma kernel takes head dims 64, 128");
  extern __shared__ __align__(128) uint16_t smem[];
  WgmmaTiles<D> tiles;
  tiles.q = sw128AlignUp(smemAddress(smem));

  int qb;
  int64_t group;
  queryBlockOfCta<V>(tables, qb, group);
  const int64_t bh = group * V::kNumHeads + V::kHead;
  const int64_t headOffset = bh * V::kSeqLen * D;
  q += headOffset;
  k += headOffset;
  v += headOffset;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t4 = lane % 4;
  const float scaleLog2 = scale * 1.4426950408889634f;

  sw128LoadRows<D>(tiles.q, q, (int64_t)qb * kBlockM, V::kNumQueries,
                   [](int64_t t) { return V::queryPosition(t); });
  cpAsyncCommit();

  WgmmaWalk<D> w;
  w.tiles = tiles;
  w.k = k;
  w.v = v;
  w.scaleLog2 = scaleLog2;
  WgmmaForwardState<D> &st = w.st;
  int64_t rowIndex[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    rowIndex[r] = (int64_t)qb * kBlockM + warp * 16 + g + 8 * r;
    const int64_t clamped =
        rowIndex[r] < V::kNumQueries ? rowIndex[r] : V::kNumQueries - 1;
    st.position[r] = V::queryPosition(clamped);
    st.m[r] = negInf();
    st.l[r] = 0.0f;
  }
  zeroFill(st.o);

  // Prologue: the first kStages key blocks of the chain behind Q's group:
  // the first block's wait covers Q too (groups retire in order).
  const WgmmaSegmentChain<V, typename V::Segments> chain(tables, qb);
  const int total = chain.total();
  constexpr int kStages = wgmmaStages<D>();
  wgmmaLoadFirstBlocks<kStages>(total, [&](int i) { chain.load(w, i, i); });
  chain.run(w, chain, 0, total);
  if (total > 0) {
    wgmmaIssueValues<V>(st, w.p, tiles.v((total - 1) % kStages));
    wgmmaWait<0>();
#pragma unroll
    for (int h = 0; h < D / 64; ++h)
      wgmmaFenceOperand(st.o[h]);
  }
  // Nothing may be in flight at exit (Q's copy where no key block ran).
  cpAsyncWait<0>();

  // Finish: the row sums are spread over the quad.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = st.l[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const bool any = st.m[r] != negInf() && l > 0.0f;
    const float inv = any ? 1.0f / l : 0.0f;
    // Natural-log LSE of the unscaled-by-log2e scores.
    const float rowLse =
        any ? (st.m[r] + fastLog2(l)) * 0.6931471805599453f : negInf();
    if (rowIndex[r] >= V::kNumQueries)
      continue;
    const int64_t pos = st.position[r];
    const int64_t rowOffset = (bh * V::kSeqLen + pos) * D;
#pragma unroll
    for (int h = 0; h < D / 64; ++h)
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        const int col = 64 * h + 8 * nt + 2 * t4;
        const float lo = st.o[h][4 * nt + 2 * r] * inv;
        const float hi = st.o[h][4 * nt + 2 * r + 1] * inv;
        if (V::kPartialOutput)
          *reinterpret_cast<float2 *>(static_cast<float *>(o) + rowOffset + col) =
              make_float2(lo, hi);
        else
          *reinterpret_cast<uint32_t *>(static_cast<uint16_t *>(o) + rowOffset +
                                        col) = packPair<Elem>(lo, hi);
      }
    if (t4 == 0)
      lse[bh * V::kSeqLen + pos] = rowLse;
  }
}

#endif // SPARSETX_HAS_WGMMA

} // namespace sparsetx

#endif // SPARSETX_KERNELS_ATTENTION_FORWARD_WGMMA_CUH
