//===- attention_decode.cuh - one query row against a KV cache -*- CUDA -*-===//
//
// Decode (sampling): one new query row per batch-head at `position`, against
// a KV cache [batchHeads, capacity, D] that holds keys and values of rows
// 0..position; rows past `position` hold garbage and are never read. The row
// visits exactly the key blocks its query block's schedule names (every
// segment of the kernel, i.e. every component sharing the query map), with
// the same Variant as the forward kernel: key maps, schedules, predicates.
//
// The host finds the row's mapped query index t (inverse query map) and
// passes its query block qb = t / 64; a kernel whose query map does not cover
// the position (a gather) is not launched. A long row is split over
// gridDim.x CTAs (split-K): the row's key blocks, segment after segment, are
// numbered 0..C-1 and CTA x takes [x C / S, (x + 1) C / S). Each CTA writes a
// normalized fp32 partial O and its LSE, and attentionDecodeMerge combines the
// parts (and the kernels of a mask) by log-sum-exp, exactly like the forward
// merge. A row served by a single CTA writes the final O and LSE directly.
//
// Inside a CTA, M = 1 leaves nothing for the tensor cores: the kernel is
// bandwidth-bound, so it moves K and V rows straight into registers with
// 16-byte loads. A group of D / 8 threads owns one key at a time (8 elements
// per thread); a 64-key block is spread over the 128 / (D / 8) groups, all of
// whose loads are in flight before any arithmetic. Scores are reduced across
// the group with xor shuffles (every lane ends with the bit-identical sum),
// and each group keeps its own online-softmax state (exp2 domain, like the
// forward); the groups are combined through shared memory at the end.
//
// A key is loaded only if it is in range, at or before `position`, and (in a
// partial block) passes the component's predicate; the others are neither
// read nor counted (score -inf, value 0). Full blocks are entirely causal by
// construction, but the `j <= position` test stays: it is what guarantees
// that garbage past the position is never touched.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_KERNELS_ATTENTION_DECODE_CUH
#define SPARSETX_KERNELS_ATTENTION_DECODE_CUH

#include "sparsetx/attention_forward.cuh"

namespace sparsetx {

constexpr int kDecodeThreads = 128;
constexpr int kDecodeMergeThreads = 128;
/// A row split over CTAs gives each at least this many key blocks, so that
/// the merge stays small next to the row's loads.
constexpr int kDecodeMinBlocksPerSplit = 2;

/// How the decode reads K, V and Q: through the read-only path, which is
/// right when nothing writes them during the kernel. A persistent kernel that
/// writes the new rows itself (decode_step.cuh) defines it as "ld.global.cg"
/// (from L2, which is coherent) before including this file.
#ifndef SPARSETX_DECODE_LOAD
#define SPARSETX_DECODE_LOAD "ld.global.nc"
#endif

/// 16 bytes through SPARSETX_DECODE_LOAD.
__device__ __forceinline__ uint4 loadReadOnly16(const void *p) {
  uint4 r;
  asm(SPARSETX_DECODE_LOAD ".v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
}

/// The same, or zeros without touching memory when `valid` is false. The
/// predicate lives inside the asm, so no compiler transformation can turn
/// the load into an unconditional (speculated) one: the cache past the
/// position is never read.
__device__ __forceinline__ uint4 loadReadOnly16If(const void *p, bool valid) {
  uint4 r;
  asm("{\n"
      "  .reg .pred p;\n"
      "  setp.ne.b32 p, %5, 0;\n"
      "  mov.b32 %0, 0;\n"
      "  mov.b32 %1, 0;\n"
      "  mov.b32 %2, 0;\n"
      "  mov.b32 %3, 0;\n"
      "  @p " SPARSETX_DECODE_LOAD ".v4.u32 {%0, %1, %2, %3}, [%4];\n"
      "}\n"
      : "=&r"(r.x), "=&r"(r.y), "=&r"(r.z), "=&r"(r.w)
      : "l"(p), "r"((int)valid));
  return r;
}

/// Eight 16-bit elements (one uint4) to floats.
template <typename Elem>
__device__ __forceinline__ void unpack8(const uint4 &w, float (&f)[8]) {
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    f[2 * e] = toFloat<Elem>((uint16_t)(words[e] & 0xffffu));
    f[2 * e + 1] = toFloat<Elem>((uint16_t)(words[e] >> 16));
  }
}

/// One thread's share of a decode row: 8 dimensions of the query (scaled by
/// scale * log2 e) and of the unnormalized output, and its group's softmax
/// state (identical in every lane of the group).
struct DecodeState {
  float q[8];
  float acc[8];
  float m, l;
};

/// One key block of segment S for the row at `position`.
template <typename V, typename S>
__device__ __forceinline__ void decodeKeyBlock(DecodeState &st,
                                               const uint16_t *k,
                                               const uint16_t *v, int kb,
                                               bool full, int64_t position) {
  using Elem = typename V::Elem;
  constexpr int D = V::kHeadDim;
  constexpr int kGroupSize = D / 8;
  constexpr int kGroups = kDecodeThreads / kGroupSize;
  constexpr int kKeysPerThread = kBlockN / kGroups;
  static_assert(kBlockN % kGroups == 0, "block not divisible among groups");
  const int group = threadIdx.x / kGroupSize;
  const int part = threadIdx.x % kGroupSize;

  // Every load of the block first.
  uint4 kr[kKeysPerThread], vr[kKeysPerThread];
  bool valid[kKeysPerThread];
#pragma unroll
  for (int u = 0; u < kKeysPerThread; ++u) {
    const int64_t t = (int64_t)kb * kBlockN + u * kGroups + group;
    bool ok = t < S::kNumKeys;
    const int64_t j = ok ? S::keyPosition(t) : 0;
    ok = ok && j <= position && (full || S::mask(position, j));
    valid[u] = ok;
    const int64_t row = ok ? j : 0;
    kr[u] = loadReadOnly16If(k + row * D + part * 8, ok);
    vr[u] = loadReadOnly16If(v + row * D + part * 8, ok);
  }

  float s[kKeysPerThread];
#pragma unroll
  for (int u = 0; u < kKeysPerThread; ++u) {
    float kf[8];
    unpack8<Elem>(kr[u], kf);
    float dot = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e)
      dot = fmaf(st.q[e], kf[e], dot);
#pragma unroll
    for (int off = kGroupSize / 2; off >= 1; off /= 2)
      dot += __shfl_xor_sync(0xffffffffu, dot, off);
    s[u] = valid[u] ? dot : negInf();
  }

  float mx = st.m;
#pragma unroll
  for (int u = 0; u < kKeysPerThread; ++u)
    mx = fmaxf(mx, s[u]);
  // As in the forward: a group that has seen no key keeps -inf and
  // subtracts 0, so that exp2(-inf - -inf) never happens.
  const float base = mx == negInf() ? 0.0f : mx;
  const float alpha = fastExp2(st.m - base);
  st.m = mx;
  st.l *= alpha;
#pragma unroll
  for (int e = 0; e < 8; ++e)
    st.acc[e] *= alpha;
#pragma unroll
  for (int u = 0; u < kKeysPerThread; ++u) {
    const float p = fastExp2(s[u] - base);
    st.l += p;
    float vf[8];
    unpack8<Elem>(vr[u], vf);
#pragma unroll
    for (int e = 0; e < 8; ++e)
      st.acc[e] = fmaf(p, vf[e], st.acc[e]);
  }
}

/// Key block kb of segment S for the row at `position` on its way to L2
/// (each in-range key's K and V rows, a 128-byte line per prefetch): what a
/// decode CTA issues before it waits for the previous kernel, so that its
/// loads after the wait hit L2. Rows before the position are written by no
/// kernel of this step; the position's own row may be, and L2 is where that
/// write lands, so a line prefetched early is never stale.
template <typename V, typename S>
__device__ __forceinline__ void decodePrefetchBlock(const uint16_t *k,
                                                    const uint16_t *v, int kb,
                                                    int64_t position) {
  constexpr int D = V::kHeadDim;
  constexpr int kLines = (D * 2 + 127) / 128;
  for (int u = threadIdx.x; u < kBlockN * kLines; u += kDecodeThreads) {
    const int64_t t = (int64_t)kb * kBlockN + u / kLines;
    if (t >= S::kNumKeys)
      break;
    const int64_t j = S::keyPosition(t);
    if (j > position)
      continue;
    const int64_t at = j * D + (u % kLines) * 64;
    asm volatile("prefetch.global.L2 [%0];" ::"l"(k + at));
    asm volatile("prefetch.global.L2 [%0];" ::"l"(v + at));
  }
}

/// The segments of a kernel as one list of key blocks: count() sums their
/// block counts for query block qb, run() visits blocks [first, last) of the
/// concatenation.
template <typename V, typename List>
struct DecodeSegments;
template <typename V>
struct DecodeSegments<V, SegmentList<>> {
  __device__ __forceinline__ static int count(const int32_t *, int) { return 0; }
  __device__ __forceinline__ static void run(DecodeState &, const uint16_t *,
                                             const uint16_t *, const int32_t *,
                                             int, int64_t, int, int) {}
  __device__ __forceinline__ static void prefetch(const uint16_t *,
                                                  const uint16_t *,
                                                  const int32_t *, int, int64_t,
                                                  int, int) {}
};
template <typename V, typename S, typename... Rest>
struct DecodeSegments<V, SegmentList<S, Rest...>> {
  using Next = DecodeSegments<V, SegmentList<Rest...>>;
  __device__ __forceinline__ static int count(const int32_t *tables, int qb) {
    typename S::Schedule schedule(tables, qb);
    const int c = schedule.count();
    return (c > 0 ? c : 0) + Next::count(tables, qb);
  }
  __device__ __forceinline__ static void run(DecodeState &st, const uint16_t *k,
                                             const uint16_t *v,
                                             const int32_t *tables, int qb,
                                             int64_t position, int first,
                                             int last) {
    typename S::Schedule schedule(tables, qb);
    int c = schedule.count();
    c = c > 0 ? c : 0;
    const int from = first > 0 ? first : 0;
    const int to = last < c ? last : c;
    for (int idx = from; idx < to; ++idx) {
      bool full;
      const int kb = schedule.block(idx, full);
      decodeKeyBlock<V, S>(st, k, v, kb, full, position);
    }
    if (last > c)
      Next::run(st, k, v, tables, qb, position, first - c, last - c);
  }
  /// run()'s key rows to L2 (decodePrefetchBlock).
  __device__ __forceinline__ static void prefetch(const uint16_t *k,
                                                  const uint16_t *v,
                                                  const int32_t *tables, int qb,
                                                  int64_t position, int first,
                                                  int last) {
    typename S::Schedule schedule(tables, qb);
    int c = schedule.count();
    c = c > 0 ? c : 0;
    const int from = first > 0 ? first : 0;
    const int to = last < c ? last : c;
    for (int idx = from; idx < to; ++idx) {
      bool full;
      decodePrefetchBlock<V, S>(k, v, schedule.block(idx, full), position);
    }
    if (last > c)
      Next::prefetch(k, v, tables, qb, position, first - c, last - c);
  }
};

/// Where one CTA's share of a decode row goes (see attentionDecodeRow).
struct DecodeRowArgs {
  const uint16_t *q;              // [batchHeads, D]
  const uint16_t *kCache, *vCache; // [batchHeads, capacity, D]
  void *o;                        // final: Elem [batchHeads, D]; else fp32 parts
  float *lse;
  const int32_t *tables;
  float scale;
  int64_t position;               // ignored with positionAt
  int queryBlock;                 // ignored with positionAt
  int64_t capacity, batchHeads;
  int finalOutput;
  const int *positionAt, *queryBlockAt;
  /// The row group (bh = rowGroup * kNumHeads + kHead), this CTA's split and
  /// the most splits the row may take (the launch's grid.x).
  int rowGroup, split, maxSplits;
  /// A kernel of its own that may overlap its predecessor
  /// (cuda::launch with overlap = true): wait for it once the row's tables are read.
  bool waitPrior;
};

/// One CTA's share of one decode row of kernel V: what the decode kernel's
/// CTA (blockIdx.x, blockIdx.y) does, callable from a persistent kernel
/// (decode_step.cuh) that hands out the same work itself. All kDecodeThreads
/// threads of the CTA (threadIdx.x < kDecodeThreads) must call it; it ends
/// with the CTA's threads synchronized, so that it can be called again.
/// Without finalOutput, o and lse are the parts [maxSplits][batchHeads][D]
/// and [maxSplits][batchHeads] (part `split`).
template <typename V>
__device__ __forceinline__ void attentionDecodeRow(const DecodeRowArgs &a) {
  using Elem = typename V::Elem;
  constexpr int D = V::kHeadDim;
  static_assert(D == 32 || D == 64 || D == 128, "head dim must be 32, 64, 128");
  constexpr int kGroupSize = D / 8;
  constexpr int kGroups = kDecodeThreads / kGroupSize;
  __shared__ float groupM[kGroups], groupL[kGroups];
  __shared__ float groupAcc[kGroups][D];

  const int64_t bh = (int64_t)a.rowGroup * V::kNumHeads + V::kHead;
  const int group = threadIdx.x / kGroupSize;
  const int part = threadIdx.x % kGroupSize;
  const uint16_t *k = a.kCache + bh * a.capacity * D;
  const uint16_t *v = a.vCache + bh * a.capacity * D;

  // Position from device memory (captured decode): the query block comes
  // from the kernel's table over positions (-1: no part of that row), and
  // the row takes as many of the launch's CTAs as it has pairs of key
  // blocks; the others (and an out-of-range position) contribute an empty
  // part (O = 0, LSE = -inf), which the merge weighs zero.
  int64_t position = a.position;
  int queryBlock = a.queryBlock;
  int splits = a.maxSplits;
  bool idle = false;
  if (a.positionAt) {
    position = *a.positionAt;
    idle = position < 0 || position >= a.capacity;
    queryBlock = idle ? -1 : a.queryBlockAt[position];
    idle = idle || queryBlock < 0;
  }
  const int total =
      idle ? 0 : DecodeSegments<V, typename V::Segments>::count(a.tables, queryBlock);
  if (a.positionAt)
    splits = min(splits, max(1, (total + kDecodeMinBlocksPerSplit - 1) /
                                    kDecodeMinBlocksPerSplit));
  const int split = a.split;
  const int first = split < splits ? (int)((int64_t)split * total / splits) : 0;
  const int last = split < splits ? (int)((int64_t)(split + 1) * total / splits) : 0;
  // The position and the tables are written by no kernel: the walk above
  // overlaps the previous kernel, and so do the key rows' trips to L2; q and
  // the caches' newest row are read only after the wait.
  if (a.waitPrior) {
    if (first < last)
      DecodeSegments<V, typename V::Segments>::prefetch(k, v, a.tables,
                                                        queryBlock, position,
                                                        first, last);
    waitForPriorGrids();
  }
  DecodeState st;
  {
    float qf[8];
    unpack8<Elem>(loadReadOnly16(a.q + bh * D + part * 8), qf);
    const float scaleLog2 = a.scale * 1.4426950408889634f;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      st.q[e] = qf[e] * scaleLog2;
      st.acc[e] = 0.0f;
    }
  }
  st.m = negInf();
  st.l = 0.0f;
  if (first < last)
    DecodeSegments<V, typename V::Segments>::run(st, k, v, a.tables, queryBlock,
                                                 position, first, last);

  if (part == 0) {
    groupM[group] = st.m;
    groupL[group] = st.l;
  }
#pragma unroll
  for (int e = 0; e < 8; ++e)
    groupAcc[group][part * 8 + e] = st.acc[e];
  __syncthreads();

  const int d = threadIdx.x;
  if (d < D) {
    float m = negInf();
#pragma unroll 8
    for (int g = 0; g < kGroups; ++g)
      m = fmaxf(m, groupM[g]);
    const float base = m == negInf() ? 0.0f : m;
    float l = 0.0f, acc = 0.0f;
#pragma unroll 8
    for (int g = 0; g < kGroups; ++g) {
      const float w = fastExp2(groupM[g] - base);
      l = fmaf(groupL[g], w, l);
      acc = fmaf(groupAcc[g][d], w, acc);
    }
    const bool any = m != negInf() && l > 0.0f;
    const float out = any ? acc / l : 0.0f;
    const float rowLse = any ? (m + fastLog2(l)) * 0.6931471805599453f : negInf();
    if (a.finalOutput) {
      static_cast<uint16_t *>(a.o)[bh * D + d] = fromFloat<Elem>(out);
      if (d == 0)
        a.lse[bh] = rowLse;
    } else {
      const int64_t row = (int64_t)split * a.batchHeads + bh;
      static_cast<float *>(a.o)[row * D + d] = out;
      if (d == 0)
        a.lse[row] = rowLse;
    }
  }
  // The shared state is free again only when every thread has read it.
  __syncthreads();
}

/// L2 loads (ld.global.cg) of a merge's inputs: parts other CTAs wrote in
/// this kernel or an earlier one (the L1 of this SM may hold stale lines of
/// the same workspace from an earlier step).
__device__ __forceinline__ float loadL2(const float *p) {
  float r;
  asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(r) : "l"(p));
  return r;
}

/// Log-sum-exp merge of batch-head bh's parts 0..numParts-1 (oParts
/// [numParts][batchHeads][D], lseParts [numParts][batchHeads]) by one CTA of
/// kDecodeMergeThreads threads, all of which must call it; no parts gives
/// O = 0, LSE = -inf. O goes to o (Elem [batchHeads, D]) or, with o32, in
/// fp32 to the first o32Dim dimensions of row bh of o32 ([batchHeads,
/// o32Dim]: the token-major layout a model's next layer reads); LSE to
/// lse[bh]. Each part's weight, kDecodeMergeThreads parts at a time: every
/// thread loads one LSE (all in flight at once), the block takes their
/// maximum and weights through shared memory, then each thread sums its
/// dimension over those parts (8 loads in flight), rescaling what came
/// before when a row has more parts than threads.
template <typename Elem, int D>
__device__ __forceinline__ void
decodeMergeRow(const float *__restrict__ oParts,
               const float *__restrict__ lseParts, int numParts,
               int64_t batchHeads, int64_t bh, uint16_t *__restrict__ o,
               float *__restrict__ lse, float *__restrict__ o32,
               int64_t o32Dim) {
  static_assert(D <= kDecodeMergeThreads, "one thread per dimension");
  constexpr int kWarps = kDecodeMergeThreads / 32;
  __shared__ float weights[kDecodeMergeThreads];
  __shared__ float warpMax[kWarps], warpSum[kWarps];
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  float m = negInf(), sum = 0.0f, acc = 0.0f;
  for (int p0 = 0; p0 < numParts; p0 += kDecodeMergeThreads) {
    const int p = p0 + t;
    const float x =
        p < numParts ? loadL2(lseParts + (int64_t)p * batchHeads + bh) : negInf();
    float wm = x;
#pragma unroll
    for (int s = 16; s > 0; s >>= 1)
      wm = fmaxf(wm, __shfl_xor_sync(0xffffffffu, wm, s));
    if (lane == 0)
      warpMax[warp] = wm;
    __syncthreads();
    float chunkMax = warpMax[0];
#pragma unroll
    for (int w = 1; w < kWarps; ++w)
      chunkMax = fmaxf(chunkMax, warpMax[w]);
    // Rescale what came before to the new maximum (the same in every thread).
    const float newMax = fmaxf(m, chunkMax);
    const float base = newMax == negInf() ? 0.0f : newMax;
    const float rescale =
        m == negInf() ? 0.0f : fastExp2((m - base) * 1.4426950408889634f);
    // An empty part has LSE = -inf (weight 0) and O = 0, never NaN.
    const float w = fastExp2((x - base) * 1.4426950408889634f);
    weights[t] = w;
    float ws = w;
#pragma unroll
    for (int s = 16; s > 0; s >>= 1)
      ws += __shfl_xor_sync(0xffffffffu, ws, s);
    if (lane == 0)
      warpSum[warp] = ws;
    __syncthreads();
    float chunkSum = 0.0f;
#pragma unroll
    for (int w2 = 0; w2 < kWarps; ++w2)
      chunkSum += warpSum[w2];
    sum = sum * rescale + chunkSum;
    m = newMax;
    if (t < D) {
      const int count = min(kDecodeMergeThreads, numParts - p0);
      float part = 0.0f;
#pragma unroll 8
      for (int q = 0; q < count; ++q)
        part = fmaf(weights[q],
                    loadL2(oParts + ((int64_t)(p0 + q) * batchHeads + bh) * D + t),
                    part);
      acc = acc * rescale + part;
    }
    // weights, warpMax and warpSum are rewritten by the next chunk.
    __syncthreads();
  }
  if (t >= D)
    return;
  const bool any = sum > 0.0f;
  const float out = any ? acc / sum : 0.0f;
  if (o32) {
    if (t < o32Dim)
      o32[bh * o32Dim + t] = out;
  } else {
    o[bh * D + t] = fromFloat<Elem>(out);
  }
  if (t == 0)
    lse[bh] = any ? m + fastLog2(sum) * 0.6931471805599453f : negInf();
}

/// The merge kernel of the batch-heads one mask serves (bh = blockIdx.x *
/// headsPerLaunch + head); grid: batchHeads / headsPerLaunch; block:
/// kDecodeMergeThreads. AttentionPlan launches it only for a mask with no
/// parts at this position (O = 0, LSE = -inf); with parts, the decode
/// kernels merge (attentionDecode's mergeCounters).
template <typename Elem, int D>
__device__ __forceinline__ void
attentionDecodeMerge(const float *__restrict__ oParts,
                     const float *__restrict__ lseParts, int numParts,
                     int64_t batchHeads, int headsPerLaunch, int head,
                     uint16_t *__restrict__ o, float *__restrict__ lse,
                     float *__restrict__ o32, int64_t o32Dim) {
  allowDependentGrids();
  waitForPriorGrids();
  decodeMergeRow<Elem, D>(oParts, lseParts, numParts, batchHeads,
                          (int64_t)blockIdx.x * headsPerLaunch + head, o, lse,
                          o32, o32Dim);
}

/// Decode of one kernel of a mask. Grid: (splits, batchHeads / kNumHeads);
/// block: kDecodeThreads; no dynamic shared memory. q, o: [batchHeads, D];
/// kCache, vCache: [batchHeads, capacity, D]. With finalOutput, o is Elem
/// and lse [batchHeads] (gridDim.x must be 1); otherwise o is this launch's
/// fp32 parts [gridDim.x][batchHeads][D] and lse its [gridDim.x][batchHeads],
/// parts partBase.. of the mask's mergeParts. With mergeCounters (one zeroed
/// unsigned per batch-head), the CTA that writes a batch-head's last part
/// merges them all into mergeO / mergeLse (or o32: decodeMergeRow).
template <typename V>
__device__ __forceinline__ void
attentionDecode(const uint16_t *__restrict__ q, const uint16_t *__restrict__ kCache,
                const uint16_t *__restrict__ vCache, void *__restrict__ o,
                float *__restrict__ lse, const int32_t *__restrict__ tables,
                float scale, int64_t position, int queryBlock, int64_t capacity,
                int64_t batchHeads, int finalOutput, const int *positionAt,
                const int *queryBlockAt, unsigned *mergeCounters,
                int mergeParts, int partBase, uint16_t *mergeO,
                float *mergeLse, float *o32, int64_t o32Dim) {
  DecodeRowArgs a;
  a.q = q;
  a.kCache = kCache;
  a.vCache = vCache;
  a.o = o;
  a.lse = lse;
  a.tables = tables;
  a.scale = scale;
  a.position = position;
  a.queryBlock = queryBlock;
  a.capacity = capacity;
  a.batchHeads = batchHeads;
  a.finalOutput = finalOutput;
  a.positionAt = positionAt;
  a.queryBlockAt = queryBlockAt;
  a.rowGroup = (int)blockIdx.y;
  a.split = (int)blockIdx.x;
  a.maxSplits = (int)gridDim.x;
  a.waitPrior = true;
  allowDependentGrids();
  attentionDecodeRow<V>(a);
  static_assert(kDecodeThreads == kDecodeMergeThreads, "the CTA merges");
  if (!mergeCounters)
    return;
  // The merge, by the CTA that writes a batch-head's last part (a ticket
  // per batch-head over all the mask's launches: mergeParts parts), in the
  // fixed order of the parts, so that results repeat bit for bit whichever
  // CTA it is. The counter goes back to 0 for the next decode.
  __shared__ int isLast;
  const int64_t bh = (int64_t)blockIdx.y * V::kNumHeads + V::kHead;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned ticket = atomicAdd(mergeCounters + bh, 1u);
    isLast = ticket == (unsigned)mergeParts - 1u;
  }
  __syncthreads();
  if (!isLast)
    return;
  __threadfence();
  if (threadIdx.x == 0)
    mergeCounters[bh] = 0u;
  const float *oParts =
      static_cast<const float *>(o) - (int64_t)partBase * batchHeads * V::kHeadDim;
  decodeMergeRow<typename V::Elem, V::kHeadDim>(
      oParts, lse - (int64_t)partBase * batchHeads, mergeParts, batchHeads, bh,
      mergeO, mergeLse, o32, o32Dim);
}

} // namespace sparsetx

#endif // SPARSETX_KERNELS_ATTENTION_DECODE_CUH
