//===- attention_forward.cuh - block-sparse attention forward -*- CUDA -*-===//
//
// FlashAttention-2 style forward pass over the blocks a pattern's layout
// names. One CTA owns one block of 64 *mapped* query indices of one batch-head
// (4 warps x 16 rows); it walks the key blocks of every segment (component)
// of its kernel in turn, keeping one online-softmax state in registers, so the
// components of a kernel sum exactly (they are disjoint). Only the generated
// `Variant` differs between patterns: index maps, schedules, mask predicates.
//
// Numerics: Q.K^T and P.V on tensor cores (mma.sync m16n8k16, bf16 / fp16 in,
// fp32 accumulate); scores are scaled by scale * log2(e) so the softmax uses
// exp2; the running max of a row that has seen no key is -inf, and such rows
// use 0 as the subtraction point so that no inf - inf arises. A row that ends
// with no attended key writes O = 0 and LSE = -inf, which is also the neutral
// element of the log-sum-exp merge of several kernels.
//
// Memory: K and V rows are gathered row by row with cp.async (each row is D
// contiguous elements, whatever the key map), double-buffered so that the
// next block's loads overlap this block's math. Shared-memory rows are padded
// by 16 bytes, which makes every ldmatrix phase conflict-free for D = 32, 64,
// 128.
//
// Variant (generated, see codegen/CudaEmitter.cpp):
//   using Elem = BF16 | FP16;  kHeadDim; kCausal; kSeqLen; kNumQueries (mapped
//   query indices); kNumHeads, kHead (batch-head = batch group * kNumHeads +
//   kHead); kOrderOffset (the query blocks, longest key list first, in the
//   tables: see queryBlockOfCta); kPartialOutput (O in fp32 for a later merge, else Elem);
//   queryPosition(t); using Segments = SegmentList<...>.
// Segment: kNumKeys; keyPosition(t); using Schedule = RangeSchedule<...> |
//   TableSchedule<...>; mask(i, j) (the component's predicate, without the
//   causal condition, which the kernel adds).
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_KERNELS_ATTENTION_FORWARD_CUH
#define SPARSETX_KERNELS_ATTENTION_FORWARD_CUH

#include "sparsetx/common.cuh"

namespace sparsetx {

constexpr int kBlockM = 64;  // mapped query indices per CTA
constexpr int kBlockN = 64;  // mapped key indices per block
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kPad = 8;      // elements of padding per shared-memory row

template <typename... S>
struct SegmentList {};

/// Analytic schedule: per query block, key blocks [begin, end), of which
/// [fullBegin, fullEnd) are full. Table data: begin[], end[], fullBegin[],
/// fullEnd[], each kNumQueryBlocks long, from kOffset.
template <int kOffset, int kNumQueryBlocks>
struct RangeSchedule {
  int begin, end, fullBegin, fullEnd;
  __device__ __forceinline__ RangeSchedule(const int32_t *tables, int qb) {
    begin = tables[kOffset + qb];
    end = tables[kOffset + kNumQueryBlocks + qb];
    fullBegin = tables[kOffset + 2 * kNumQueryBlocks + qb];
    fullEnd = tables[kOffset + 3 * kNumQueryBlocks + qb];
  }
  __device__ __forceinline__ int count() const { return end - begin; }
  __device__ __forceinline__ int block(int idx, bool &full) const {
    int kb = begin + idx;
    full = kb >= fullBegin && kb < fullEnd;
    return kb;
  }
};

/// CSR schedule: full blocks first, then partial ones. Offsets arrays have
/// kNumQueryBlocks + 1 entries.
template <int kFullOffsets, int kFullIndices, int kPartialOffsets,
          int kPartialIndices>
struct TableSchedule {
  const int32_t *tables;
  int fullStart, fullCount, partialStart, partialCount;
  __device__ __forceinline__ TableSchedule(const int32_t *t, int qb) : tables(t) {
    fullStart = t[kFullOffsets + qb];
    fullCount = t[kFullOffsets + qb + 1] - fullStart;
    partialStart = t[kPartialOffsets + qb];
    partialCount = t[kPartialOffsets + qb + 1] - partialStart;
  }
  __device__ __forceinline__ int count() const { return fullCount + partialCount; }
  __device__ __forceinline__ int block(int idx, bool &full) const {
    full = idx < fullCount;
    return full ? tables[kFullIndices + fullStart + idx]
                : tables[kPartialIndices + partialStart + idx - fullCount];
  }
};

/// Shared memory of the forward kernel in bytes: Q and two stages of K and V.
template <int D>
constexpr int forwardSharedBytes() {
  return (1 + 4) * kBlockM * (D + kPad) * 2;
}

/// Per-thread state of the forward pass: rows g and g + 8 of the warp's 16.
template <int D>
struct ForwardState {
  uint32_t q[D / 16][4];  // Q fragments (A operand), loaded once
  float o[D / 8][4];      // O accumulator (C layout of m16n8)
  float m[2];             // running max of scaled scores (log2 domain)
  float l[2];             // running sum of exp2 (this thread's columns only)
  int64_t position[2];    // query positions of the two rows
};

/// Gathers 64 rows of `src` (rows of D elements at mapped indices
/// [firstIndex, firstIndex + 64) under `Position`) into shared `dst`;
/// indices at or past `count` are zero-filled.
template <int D, typename PositionFn>
__device__ __forceinline__ void loadRows(uint16_t *dst, const uint16_t *src,
                                         int64_t firstIndex, int64_t count,
                                         PositionFn position) {
  constexpr int kChunks = D / 8; // 16-byte chunks per row
  constexpr int kPerThread = kBlockM * kChunks / kThreads;
  static_assert(kBlockM * kChunks % kThreads == 0, "tile not divisible");
  int tid = threadIdx.x;
#pragma unroll
  for (int it = 0; it < kPerThread; ++it) {
    int idx = it * kThreads + tid;
    int row = idx / kChunks, chunk = idx % kChunks;
    int64_t t = firstIndex + row;
    bool valid = t < count;
    int64_t p = valid ? position(t) : 0;
    cpAsync16(smemAddress(dst + row * (D + kPad) + chunk * 8),
              src + p * D + chunk * 8, valid);
  }
}

template <typename V, typename S>
__device__ __forceinline__ void loadKeyBlock(uint16_t *sk, uint16_t *sv,
                                             const uint16_t *k, const uint16_t *v,
                                             int kb) {
  constexpr int D = V::kHeadDim;
  auto position = [](int64_t t) { return S::keyPosition(t); };
  loadRows<D>(sk, k, (int64_t)kb * kBlockN, S::kNumKeys, position);
  loadRows<D>(sv, v, (int64_t)kb * kBlockN, S::kNumKeys, position);
}

/// Which pairs of a tile of rows x kColumns columns are attended, as bit
/// 4 nt + 2 r + c for the accumulator value of row g + 8 r of the warp's 16
/// and column firstColumn + offset + 8 nt + 2 t4 + c (the m16n8 layout, which
/// wgmma's accumulators share). Columns are the mapped indices of the keys of
/// segment S (kColumnsAreKeys) or of the queries of kernel V; the thread's
/// two rows are at positions rowPosition. The tile is columns offset..
/// offset + kColumns - 1 of the 64-column block at firstColumn: a column past
/// the map's end (only in a block that runs past it) is never attended, and
/// a full block evaluates no predicate.
template <typename V, typename S, bool kColumnsAreKeys, int kColumns = 64>
__device__ __forceinline__ uint32_t maskBits(int64_t firstColumn, int offset,
                                             bool full,
                                             const int64_t (&rowPosition)[2]) {
  static_assert(kColumns % 8 == 0 && kColumns <= 64, "at most 32 bits");
  constexpr int64_t kCount = kColumnsAreKeys ? S::kNumKeys : V::kNumQueries;
  const int t4 = threadIdx.x % 4;
  const bool pastEnd = firstColumn + 64 > kCount;
  uint32_t bits = 0;
#pragma unroll
  for (int nt = 0; nt < kColumns / 8; ++nt) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int64_t t = firstColumn + offset + nt * 8 + t4 * 2 + c;
      const bool inRange = t < kCount;
      int64_t column = 0;
      if (!full && inRange)
        column = kColumnsAreKeys ? S::keyPosition(t) : V::queryPosition(t);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        bool ok = inRange || !pastEnd;
        if (!full && ok) {
          const int64_t i = kColumnsAreKeys ? rowPosition[r] : column;
          const int64_t j = kColumnsAreKeys ? column : rowPosition[r];
          ok = S::mask(i, j) && (!V::kCausal || j <= i);
        }
        bits |= (ok ? 1u : 0u) << (nt * 4 + r * 2 + c);
      }
    }
  }
  return bits;
}

/// One key block: S = Q K^T, mask, online softmax, O += P V.
template <typename V, typename S>
__device__ __forceinline__ void processKeyBlock(ForwardState<V::kHeadDim> &st,
                                                const uint16_t *sk,
                                                const uint16_t *sv, int kb,
                                                bool full, float scaleLog2) {
  using Elem = typename V::Elem;
  constexpr int D = V::kHeadDim;
  constexpr int kStride = D + kPad;
  const int lane = threadIdx.x % 32;
  const int t4 = lane % 4;
  const int mat = lane / 8, r8 = lane % 8;

  float s[kBlockN / 8][4];
  zeroFill(s);

  // S = Q K^T: K rows are keys with d contiguous, i.e. the "col" B operand.
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
    for (int np = 0; np < kBlockN / 16; ++np) {
      uint32_t b[4];
      int key = (2 * np + mat / 2) * 8 + r8;
      int d = kk * 16 + (mat % 2) * 8;
      ldmatrixX4(b, smemAddress(sk + key * kStride + d));
      mma16816<Elem>(s[2 * np], st.q[kk], b[0], b[1]);
      mma16816<Elem>(s[2 * np + 1], st.q[kk], b[2], b[3]);
    }
  }

#pragma unroll
  for (int nt = 0; nt < kBlockN / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      s[nt][e] *= scaleLog2;

  // Full blocks skip the predicate; only a block that runs past the mapped
  // keys (the last one, when kNumKeys % 64 != 0) needs the bounds check.
  const int64_t firstKey = (int64_t)kb * kBlockN;
  const bool pastEnd = firstKey + kBlockN > S::kNumKeys;
  if (!full || pastEnd) {
#pragma unroll
    for (int nt = 0; nt < kBlockN / 8; ++nt) {
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        int64_t t = firstKey + nt * 8 + t4 * 2 + c;
        bool inRange = t < S::kNumKeys;
        int64_t j = inRange ? S::keyPosition(t) : 0;
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          bool ok = inRange;
          if (!full && ok) {
            int64_t i = st.position[r];
            ok = S::mask(i, j) && (!V::kCausal || j <= i);
          }
          if (!ok)
            s[nt][2 * r + c] = negInf();
        }
      }
    }
  }

  // Online softmax, per row: new max over the quad that shares the row.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float mx = st.m[r];
#pragma unroll
    for (int nt = 0; nt < kBlockN / 8; ++nt)
      mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    // A row with no key so far keeps -inf; subtract 0 instead so that
    // exp2(-inf - -inf) never happens: masked scores still give 0.
    float base = mx == negInf() ? 0.0f : mx;
    float alpha = fastExp2(st.m[r] - base);
    st.m[r] = mx;
    float sum = 0.0f;
#pragma unroll
    for (int nt = 0; nt < kBlockN / 8; ++nt) {
      s[nt][2 * r] = fastExp2(s[nt][2 * r] - base);
      s[nt][2 * r + 1] = fastExp2(s[nt][2 * r + 1] - base);
      sum += s[nt][2 * r] + s[nt][2 * r + 1];
    }
    st.l[r] = st.l[r] * alpha + sum;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      st.o[dt][2 * r] *= alpha;
      st.o[dt][2 * r + 1] *= alpha;
    }
  }

  // O += P V: the C fragments of two adjacent score tiles are exactly the A
  // fragment of one k16 step; V (keys x d, d contiguous) is read transposed.
#pragma unroll
  for (int kk = 0; kk < kBlockN / 16; ++kk) {
    uint32_t a[4];
    a[0] = packPair<Elem>(s[2 * kk][0], s[2 * kk][1]);
    a[1] = packPair<Elem>(s[2 * kk][2], s[2 * kk][3]);
    a[2] = packPair<Elem>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    a[3] = packPair<Elem>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t b[4];
      int key = kk * 16 + (mat % 2) * 8 + r8;
      int d = (2 * dp + mat / 2) * 8;
      ldmatrixX4Trans(b, smemAddress(sv + key * kStride + d));
      mma16816<Elem>(st.o[2 * dp], a, b[0], b[1]);
      mma16816<Elem>(st.o[2 * dp + 1], a, b[2], b[3]);
    }
  }
}

/// All key blocks of segment S for query block qb, double-buffered.
template <typename V, typename S>
__device__ __forceinline__ void runSegment(ForwardState<V::kHeadDim> &st,
                                           uint16_t *sk, uint16_t *sv,
                                           const uint16_t *k, const uint16_t *v,
                                           const int32_t *tables, int qb,
                                           float scaleLog2) {
  constexpr int kTile = kBlockN * (V::kHeadDim + kPad);
  typename S::Schedule schedule(tables, qb);
  const int count = schedule.count();
  if (count <= 0)
    return;
  bool full;
  int kb = schedule.block(0, full);
  loadKeyBlock<V, S>(sk, sv, k, v, kb);
  cpAsyncCommit();
  for (int idx = 0; idx < count; ++idx) {
    const int stage = idx & 1;
    bool nextFull = false;
    int next = 0;
    if (idx + 1 < count) {
      next = schedule.block(idx + 1, nextFull);
      loadKeyBlock<V, S>(sk + (stage ^ 1) * kTile, sv + (stage ^ 1) * kTile, k,
                         v, next);
      cpAsyncCommit();
      cpAsyncWait<1>();
    } else {
      cpAsyncWait<0>();
    }
    __syncthreads();
    processKeyBlock<V, S>(st, sk + stage * kTile, sv + stage * kTile, kb, full,
                          scaleLog2);
    // The next iteration refills this stage.
    __syncthreads();
    kb = next;
    full = nextFull;
  }
}

template <typename V, typename List>
struct SegmentLoop;
template <typename V>
struct SegmentLoop<V, SegmentList<>> {
  __device__ __forceinline__ static void run(ForwardState<V::kHeadDim> &,
                                             uint16_t *, uint16_t *,
                                             const uint16_t *, const uint16_t *,
                                             const int32_t *, int, float) {}
};
template <typename V, typename S, typename... Rest>
struct SegmentLoop<V, SegmentList<S, Rest...>> {
  __device__ __forceinline__ static void
  run(ForwardState<V::kHeadDim> &st, uint16_t *sk, uint16_t *sv,
      const uint16_t *k, const uint16_t *v, const int32_t *tables, int qb,
      float scaleLog2) {
    runSegment<V, S>(st, sk, sv, k, v, tables, qb, scaleLog2);
    SegmentLoop<V, SegmentList<Rest...>>::run(st, sk, sv, k, v, tables, qb,
                                              scaleLog2);
  }
};

/// The forward pass of one kernel of a mask. Grid: (query blocks, batch-heads
/// / kNumHeads); block: kThreads; dynamic shared memory:
/// forwardSharedBytes<D>(). `o`/`lse` receive the rows at the positions the
/// query map covers: O as Elem, or fp32 when the kernel's output is merged.
/// The query block and batch group of this CTA. Grid: query blocks x batch
/// groups in one dimension, group fastest; the query blocks in the order of
/// the generated table at V::kOrderOffset (longest key list first), so that
/// the hardware, which dispatches CTAs in index order, starts the longest
/// ones first across every batch-head and the short ones fill the tail.
/// kOrderOffset < 0 (even lists): index order, query blocks fastest.
template <typename V>
__device__ __forceinline__ void queryBlockOfCta(const int32_t *tables, int &qb,
                                                int64_t &group) {
  constexpr unsigned kBlocks = unsigned((V::kNumQueries + kBlockM - 1) / kBlockM);
  if constexpr (V::kOrderOffset < 0) {
    qb = int(blockIdx.x % kBlocks);
    group = blockIdx.x / kBlocks;
  } else {
    const unsigned groups = gridDim.x / kBlocks;
    group = blockIdx.x % groups;
    qb = tables[V::kOrderOffset + blockIdx.x / groups];
  }
}

template <typename V>
__device__ __forceinline__ void
attentionForwardMma(const uint16_t *__restrict__ q, const uint16_t *__restrict__ k,
                    const uint16_t *__restrict__ v, void *__restrict__ o,
                    float *__restrict__ lse, const int32_t *__restrict__ tables,
                    float scale) {
  using Elem = typename V::Elem;
  constexpr int D = V::kHeadDim;
  static_assert(D == 32 || D == 64 || D == 128, "head dim must be 32, 64, 128");
  constexpr int kStride = D + kPad;
  constexpr int kTile = kBlockN * kStride;
  extern __shared__ __align__(128) uint16_t smem[];
  uint16_t *sq = smem;
  uint16_t *sk = sq + kBlockM * kStride;
  uint16_t *sv = sk + 2 * kTile;

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

  loadRows<D>(sq, q, (int64_t)qb * kBlockM, V::kNumQueries,
              [](int64_t t) { return V::queryPosition(t); });
  cpAsyncCommit();

  ForwardState<D> st;
  int64_t rowIndex[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    rowIndex[r] = (int64_t)qb * kBlockM + warp * 16 + g + 8 * r;
    int64_t clamped = rowIndex[r] < V::kNumQueries ? rowIndex[r] : V::kNumQueries - 1;
    st.position[r] = V::queryPosition(clamped);
    st.m[r] = negInf();
    st.l[r] = 0.0f;
  }
  zeroFill(st.o);

  cpAsyncWait<0>();
  __syncthreads();
  {
    const int row = warp * 16 + lane % 16;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      ldmatrixX4(st.q[kk], smemAddress(sq + row * kStride + kk * 16 + (lane / 16) * 8));
  }

  SegmentLoop<V, typename V::Segments>::run(st, sk, sv, k, v, tables, qb,
                                            scaleLog2);

  // Finish: the row sums are spread over the quad.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = st.l[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const bool any = st.m[r] != negInf() && l > 0.0f;
    const float inv = any ? 1.0f / l : 0.0f;
    // Natural-log LSE of the unscaled-by-log2e scores.
    const float rowLse = any ? (st.m[r] + fastLog2(l)) * 0.6931471805599453f : negInf();
    if (rowIndex[r] >= V::kNumQueries)
      continue;
    const int64_t p = st.position[r];
    const int64_t rowOffset = (bh * V::kSeqLen + p) * D;
    if (V::kPartialOutput) {
      float *out = static_cast<float *>(o) + rowOffset;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        float2 val = make_float2(st.o[dt][2 * r] * inv, st.o[dt][2 * r + 1] * inv);
        *reinterpret_cast<float2 *>(out + dt * 8 + t4 * 2) = val;
      }
    } else {
      uint16_t *out = static_cast<uint16_t *>(o) + rowOffset;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt)
        *reinterpret_cast<uint32_t *>(out + dt * 8 + t4 * 2) =
            packPair<Elem>(st.o[dt][2 * r] * inv, st.o[dt][2 * r + 1] * inv);
    }
    if (t4 == 0)
      lse[bh * V::kSeqLen + p] = rowLse;
  }
}

} // namespace sparsetx

// --- The kernel a generated entry runs ---------------------------------------
// On sm_90a, head dims 64 and 128 take the wgmma kernel
// (attention_forward_wgmma.cuh) when the generated source defines
// SPARSETX_FORWARD_WGMMA_ON (CodegenOptions::forwardWgmma, on by default
// since it passed its GPU tests on an H100); head dim 32, every other
// architecture and any other source that includes this header take the
// mma.sync kernel above.

#include "sparsetx/attention_forward_wgmma.cuh"

#if SPARSETX_HAS_WGMMA && defined(SPARSETX_FORWARD_WGMMA_ON)
#define SPARSETX_FORWARD_WGMMA 1
#else
#define SPARSETX_FORWARD_WGMMA 0
#endif

namespace sparsetx {

/// Dynamic shared memory of the forward kernel attentionForward<V> runs for
/// head dim D (the generated source checks the emitter's figure against it).
template <int D>
constexpr int forwardKernelSharedBytes() {
#if SPARSETX_FORWARD_WGMMA
  if constexpr (D % 64 == 0)
    return forwardWgmmaSharedBytes<D>();
#endif
  return forwardSharedBytes<D>();
}

/// The forward pass of one kernel of a mask (see attentionForwardMma for the
/// grid, block and outputs; dynamic shared memory
/// forwardKernelSharedBytes<D>()).
template <typename V>
__device__ __forceinline__ void
attentionForward(const uint16_t *__restrict__ q, const uint16_t *__restrict__ k,
                 const uint16_t *__restrict__ v, void *__restrict__ o,
                 float *__restrict__ lse, const int32_t *__restrict__ tables,
                 float scale) {
#if SPARSETX_FORWARD_WGMMA
  if constexpr (V::kHeadDim % 64 == 0)
    attentionForwardWgmma<V>(q, k, v, o, lse, tables, scale);
  else
#endif
    attentionForwardMma<V>(q, k, v, o, lse, tables, scale);
}

} // namespace sparsetx

#endif // SPARSETX_KERNELS_ATTENTION_FORWARD_CUH
