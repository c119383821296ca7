//===- decode_step.cuh - a sampling step as one persistent kernel -*- CUDA -*-===//
//
// Sampling computes one position per step for a few sequences: every op of
// the step has a handful of rows, so a step is a chain of a few hundred tiny
// dependent kernels, each bound by its launch and a couple of memory round
// trips, not by its work. This kernel runs the whole step instead, every CTA
// resident at once (a cooperative launch), with a grid-wide barrier between
// the phases that depend on each other:
//
//   embed:  x = token embedding + position embeddings
//   per layer l:
//     qkv:  q, k, v = LN1(x) [Wq Wk Wv] + b; k, v appended to the layer's
//           caches at the position, q to 16 bits
//     attn: the pattern's generated decode (sparsetx_gen::decodeRow), one
//           CTA's share of a row per work item, fp32 parts with their LSE
//     wo:   x += merge(parts) Wo + bo (the log-sum-exp merge is done by the
//           CTA that needs those dimensions)
//     w1:   g = gelu(LN2(x) W1 + b1)
//     w2:   x += g W2 + b2
//   logits = LNf(x) Wout + bout
//
// The linear layers are split over CTAs by 32 output columns and 64 input
// rows (an item); the weights of a CTA's first item of the next phase are
// loaded into registers before it waits at the barrier. Items of a column
// tile add up in a fixed order in the CTA that finishes last (a ticket per
// tile), which also applies the epilogue: results repeat bit for bit.
//
// Everything one CTA writes and another reads during the kernel is read
// from L2 (ld.global.cg): L1 is not coherent between SMs. The generated
// decode is compiled with SPARSETX_DECODE_LOAD = "ld.global.cg" for the same
// reason (it reads the k, v rows and q this kernel has just written).
//
// Compiled by NVRTC after the pattern's generated source (decode kernels
// on), which defines sparsetx_gen::decodeRow and includes common.cuh.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_DECODE_STEP_CUH
#define SPARSETX_DECODE_STEP_CUH

#include "sparsetx/model_math.cuh"

namespace sparsetx_step {

constexpr int kThreads = 128; // sparsetx::kDecodeThreads: decodeRow's CTA
constexpr int kMaxRows = 8;   // sequences per step
constexpr int kMergeBatch = 8; // parts loaded at once by the merge
/// A linear item's weights (all k rows of w columns) in shared memory.
constexpr int kWeightBytes = 64 * 1024;

/// Host mirrors: model/core/CudaBackend.cpp (same field order and sizes).
struct StepLayer {
  const float *ln1W, *ln1B, *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo, *ln2W,
      *ln2B, *w1, *b1, *w2, *b2;
  unsigned short *kCache, *vCache; // [S * H, n, D]
  unsigned short *q16;             // [S * H, D]
  float *oParts, *lseParts;        // [numParts][S * H][D], [numParts][S * H]
  i64 workBegin, workEnd, numParts;
};
struct StepWork {
  const int *queryBlockAt;
  int kernelId, rowGroups, splits, partBase, headsPerLaunch, head;
};
struct Step {
  i64 S, d, dqk, ff, H, D, n, vocab, layers;
  const int *ids; // tokens [S], then positions [S]
  const float *tokTable, *posTable;
  const StepLayer *layer;
  const StepWork *work;
  const float *lnfW, *lnfB, *wout, *bout;
  float *x, *g, *logits, *attn; // attn: the merged attention output [S, d]
  unsigned *tickets;            // [S * H], zero between layers
  unsigned long long *barrier;
  const int *tables;
  /// With profiling: CTA 0's clock (ns) at the start and as it leaves each
  /// barrier, and at its end; else null.
  unsigned long long *timing;
  float eps, scale;
  int bf16, pad;
};

__device__ __forceinline__ unsigned long long globalNanoseconds() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}

/// Waits until every CTA has arrived here as often as this one. The counter
/// is zeroed before each launch; `target` counts this CTA's arrivals. Thread
/// 0 fences this CTA's writes (made visible by the __syncthreads before),
/// arrives, polls from L2 and fences again before releasing the CTA.
__device__ __forceinline__ void gridSync(unsigned long long *counter,
                                         unsigned long long &target,
                                         unsigned long long *timing) {
  __syncthreads();
  target += gridDim.x;
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(counter, 1ull);
    while (*(volatile unsigned long long *)counter < target) {
    }
    __threadfence();
    if (timing && blockIdx.x == 0)
      timing[target / gridDim.x] = globalNanoseconds();
  }
  __syncthreads();
}

enum Epilogue { kStore, kGelu, kResidual, kQuery, kKey, kValue };
enum Input { kNormX, kHidden, kAttention };

struct LinearOut {
  float *c;
  const float *w, *bias;
  i64 n;
  int epilogue;
  i64 firstTile;
};
/// One linear phase: outs[*] (+)= in W + b over m = S rows, k inputs. An
/// item is `w` output columns over all k rows (k * w * 4 <= kWeightBytes).
struct Linear {
  LinearOut out[3];
  int outs;
  i64 k, tiles;
  int w;
  int input;
  const float *lnW, *lnB; // kNormX
};

__device__ __forceinline__ int outOf(const Linear &L, i64 tile) {
  int o = 0;
  while (o + 1 < L.outs && tile >= L.out[o + 1].firstTile)
    ++o;
  return o;
}

/// Starts copying item `item`'s weights ([k][w] floats) into `weights`
/// (cp.async, 16 bytes each; columns past n are zeros). The host checks that
/// every weight matrix and n are multiples of 4 floats.
__device__ __forceinline__ void prefetchWeights(const Linear &L, i64 item,
                                                float *weights) {
  const LinearOut &o = L.out[outOf(L, item)];
  const i64 col0 = (item - o.firstTile) * L.w;
  const int chunks = L.w / 4;
  for (i64 e = threadIdx.x; e < L.k * chunks; e += kThreads) {
    const i64 j = e / chunks, c = col0 + (e % chunks) * 4;
    const bool ok = c < o.n;
    const float *src = ok ? o.w + j * o.n + c : o.w;
    const unsigned dst = (unsigned)__cvta_generic_to_shared(weights + e * 4);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
                 :
                 : "r"(dst), "l"(src), "r"(ok ? 16 : 0)
                 : "memory");
  }
  asm volatile("cp.async.commit_group;" ::: "memory");
}

__device__ __forceinline__ void waitWeights() {
  asm volatile("cp.async.wait_all;" ::: "memory");
}

/// dst[0, count) = src[0, count) (count and both pointers multiples of 4
/// floats), src read from L2: 16-byte loads, eight per thread in flight at a
/// time (a loop of single loads would wait for each in turn).
__device__ __forceinline__ void loadRows(float *dst, const float *src,
                                         i64 count) {
  const float4 *s4 = reinterpret_cast<const float4 *>(src);
  float4 *d4 = reinterpret_cast<float4 *>(dst);
  const i64 n4 = count / 4;
  for (i64 base = threadIdx.x; base < n4; base += kThreads * 8) {
    float4 v[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) {
      const i64 e = base + (i64)u * kThreads;
      if (e < n4)
        v[u] = __ldcg(s4 + e);
    }
#pragma unroll
    for (int u = 0; u < 8; ++u) {
      const i64 e = base + (i64)u * kThreads;
      if (e < n4)
        d4[e] = v[u];
    }
  }
}

/// Applies output o's epilogue to v (bias added) at row r, column col.
__device__ __forceinline__ void epilogue(const Step &p, const StepLayer *L,
                                         const LinearOut &o, i64 r, i64 col,
                                         float v) {
  if (col >= o.n)
    return;
  v += o.bias[col];
  const i64 position = p.ids[p.S + r];
  switch (o.epilogue) {
  case kStore:
    o.c[r * o.n + col] = v;
    break;
  case kGelu:
    o.c[r * o.n + col] = v * spSigmoid(1.702f * v);
    break;
  case kResidual:
    o.c[r * o.n + col] = __ldcg(o.c + r * o.n + col) + v;
    break;
  case kQuery: {
    const i64 head = o.n / p.H, bh = r * p.H + col / head;
    L->q16[bh * p.D + col % head] = spToHalf(v, p.bf16);
    break;
  }
  case kKey:
  case kValue: {
    const i64 head = o.n / p.H, bh = r * p.H + col / head;
    unsigned short *cache = o.epilogue == kKey ? L->kCache : L->vCache;
    cache[(bh * p.n + position) * p.D + col % head] = spToHalf(v, p.bf16);
    break;
  }
  }
}

/// One linear phase, its weights already on their way into `weights` (item
/// blockIdx.x, started by the phase before). After the barrier: the input
/// rows into `in` ([S][k]), then each thread sums its column over every
/// (128 / w)-th row, the row groups are added in order, and the epilogue
/// writes. At the end the next linear's weights start loading.
__device__ __noinline__ void linearPhase(const Step &p, const StepLayer *L,
                                         const Linear &lin, const Linear *next,
                                         float *weights, float *in,
                                         float *red,
                                         unsigned long long &target) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  gridSync(p.barrier, target, p.timing);
  __shared__ float stats[kMaxRows][2];
  const i64 k = lin.k;
  if (blockIdx.x < lin.tiles) {
    // The input rows.
    const float *src = lin.input == kNormX ? p.x
                       : lin.input == kHidden ? p.g
                                              : p.attn;
    loadRows(in, src, p.S * k);
    __syncthreads();
    if (lin.input == kNormX) {
      for (i64 r = warp; r < p.S; r += kThreads / 32) {
        float mu, rstd;
        spRowStatistics(in + r * k, k, p.eps, mu, rstd);
        if (lane == 0) {
          stats[r][0] = mu;
          stats[r][1] = rstd;
        }
      }
      __syncthreads();
      // The gains and biases: eight of each per thread in flight at once.
      for (i64 base = threadIdx.x; base < p.S * k; base += kThreads * 8) {
        float g[8], b[8];
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          const i64 e = base + (i64)u * kThreads;
          g[u] = e < p.S * k ? __ldg(lin.lnW + e % k) : 0.0f;
          b[u] = e < p.S * k ? __ldg(lin.lnB + e % k) : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          const i64 e = base + (i64)u * kThreads;
          if (e < p.S * k) {
            const i64 r = e / k;
            in[e] = (in[e] - stats[r][0]) * stats[r][1] * g[u] + b[u];
          }
        }
      }
    }
    const int w = lin.w, groups = kThreads / w;
    const int c = threadIdx.x % w, group = threadIdx.x / w;
    for (i64 item = blockIdx.x; item < lin.tiles; item += gridDim.x) {
      if (item != blockIdx.x) {
        __syncthreads(); // every thread is done with the previous weights
        prefetchWeights(lin, item, weights);
      }
      waitWeights();
      __syncthreads();
      float acc[kMaxRows];
#pragma unroll
      for (int r = 0; r < kMaxRows; ++r)
        acc[r] = 0.0f;
#pragma unroll 4
      for (i64 j = group; j < k; j += groups) {
        const float wv = weights[j * w + c];
#pragma unroll
        for (int r = 0; r < kMaxRows; ++r)
          if (r < p.S)
            acc[r] = fmaf(in[r * k + j], wv, acc[r]);
      }
#pragma unroll
      for (int r = 0; r < kMaxRows; ++r)
        if (r < p.S)
          red[(r * groups + group) * w + c] = acc[r];
      __syncthreads();
      const LinearOut &o = lin.out[outOf(lin, item)];
      const i64 col0 = (item - o.firstTile) * w;
      for (i64 e = threadIdx.x; e < p.S * w; e += kThreads) {
        const i64 r = e / w, cc = e % w;
        float v = 0.0f;
        for (int g = 0; g < groups; ++g)
          v += red[(r * groups + g) * w + cc];
        epilogue(p, L, o, r, col0 + cc, v);
      }
    }
  }
  __syncthreads(); // the weights buffer is free
  if (next && blockIdx.x < next->tiles)
    prefetchWeights(*next, blockIdx.x, weights);
}

/// Splits a linear into items of w columns over all k rows.
__device__ __forceinline__ void setTiles(Linear &lin) {
  lin.w = lin.k * 32 * 4 <= kWeightBytes ? 32
          : lin.k * 16 * 4 <= kWeightBytes ? 16
                                           : 8;
  i64 tiles = 0;
  for (int o = 0; o < lin.outs; ++o) {
    lin.out[o].firstTile = tiles;
    tiles += (lin.out[o].n + lin.w - 1) / lin.w;
  }
  lin.tiles = tiles;
}

__device__ __forceinline__ LinearOut out(float *c, const float *w,
                                         const float *bias, i64 n,
                                         int epilogue) {
  LinearOut o;
  o.c = c;
  o.w = w;
  o.bias = bias;
  o.n = n;
  o.epilogue = epilogue;
  o.firstTile = 0;
  return o;
}

/// The last CTA to finish a part of batch-head bh merges its parts (log-sum-
/// exp, in part order) into p.attn: thread t takes dimension t % D of parts
/// t / D, t / D + 128 / D, ..., and the part groups combine in order.
__device__ __forceinline__ void mergeRow(const Step &p, const StepLayer &L,
                                         i64 bh) {
  __shared__ float mM[kThreads], mL[kThreads], mAcc[kThreads];
  const i64 D = p.D, groups = kThreads / D, BH = p.S * p.H;
  const i64 dd = threadIdx.x % D, group = threadIdx.x / D;
  float m = spNegInf(), l = 0.0f, acc = 0.0f;
  for (i64 p0 = group; p0 < L.numParts; p0 += groups * kMergeBatch) {
    float lse[kMergeBatch], o[kMergeBatch];
#pragma unroll
    for (int u = 0; u < kMergeBatch; ++u) {
      const i64 part = p0 + u * groups;
      const bool ok = part < L.numParts;
      lse[u] = ok ? __ldcg(L.lseParts + part * BH + bh) : spNegInf();
      o[u] = ok ? __ldcg(L.oParts + (part * BH + bh) * D + dd) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kMergeBatch; ++u) {
      // LSE in natural log; an empty part has -inf and weighs zero.
      const float s = lse[u] * 1.4426950408889634f;
      const float mx = fmaxf(m, s);
      const float base = mx == spNegInf() ? 0.0f : mx;
      const float a = exp2f(m - base), wt = exp2f(s - base);
      l = l * a + wt;
      acc = acc * a + wt * o[u];
      m = mx;
    }
  }
  mM[threadIdx.x] = m;
  mL[threadIdx.x] = l;
  mAcc[threadIdx.x] = acc;
  __syncthreads();
  const i64 vHead = p.d / p.H;
  if (threadIdx.x < vHead) {
    float mx = spNegInf();
    for (i64 g = 0; g < groups; ++g)
      mx = fmaxf(mx, mM[g * D + dd]);
    const float base = mx == spNegInf() ? 0.0f : mx;
    float sum = 0.0f, total = 0.0f;
    for (i64 g = 0; g < groups; ++g) {
      const float a = exp2f(mM[g * D + dd] - base);
      sum = fmaf(mL[g * D + dd], a, sum);
      total = fmaf(mAcc[g * D + dd], a, total);
    }
    const i64 r = bh / p.H, h = bh % p.H;
    p.attn[r * p.d + h * vHead + dd] = sum > 0.0f ? total / sum : 0.0f;
  }
  __syncthreads();
}

__device__ __noinline__ void attentionPhase(const Step &p, const StepLayer &L,
                                            unsigned long long &target) {
  gridSync(p.barrier, target, p.timing);
  __shared__ int isLast;
  sparsetx::DecodeRowArgs a;
  a.q = L.q16;
  a.kCache = L.kCache;
  a.vCache = L.vCache;
  a.tables = p.tables;
  a.scale = p.scale;
  a.position = 0;
  a.queryBlock = 0;
  a.capacity = p.n;
  a.batchHeads = p.S * p.H;
  a.finalOutput = 0;
  a.positionAt = p.ids + p.S;
  a.waitPrior = false; // one cooperative launch: its barriers order the phases
  i64 items = 0;
  for (i64 w = L.workBegin; w < L.workEnd; ++w)
    items += (i64)p.work[w].rowGroups * p.work[w].splits;
  for (i64 item = blockIdx.x; item < items; item += gridDim.x) {
    i64 w = L.workBegin, rest = item;
    while (rest >= (i64)p.work[w].rowGroups * p.work[w].splits) {
      rest -= (i64)p.work[w].rowGroups * p.work[w].splits;
      ++w;
    }
    const StepWork &work = p.work[w];
    a.o = L.oParts + (i64)work.partBase * a.batchHeads * p.D;
    a.lse = L.lseParts + (i64)work.partBase * a.batchHeads;
    a.queryBlockAt = work.queryBlockAt;
    a.rowGroup = (int)(rest / work.splits);
    a.split = (int)(rest % work.splits);
    a.maxSplits = work.splits;
    sparsetx_gen::decodeRow(work.kernelId, a);
    // Every part of this batch-head written: the last one merges them.
    const i64 bh = (i64)a.rowGroup * work.headsPerLaunch + work.head;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned expected = 0;
      for (i64 e = L.workBegin; e < L.workEnd; ++e)
        if (p.work[e].headsPerLaunch == 1 || p.work[e].head == bh % p.H)
          expected += (unsigned)p.work[e].splits;
      isLast = atomicAdd(p.tickets + bh, 1u) == expected - 1;
    }
    __syncthreads();
    if (isLast) {
      __threadfence();
      mergeRow(p, L, bh);
      if (threadIdx.x == 0)
        p.tickets[bh] = 0; // the next use is after barriers
    }
  }
}

} // namespace sparsetx_step

/// One decoding step (see the file comment). Cooperative launch: grid = the
/// CTAs that fit at once, block = kThreads, dynamic shared memory
/// kWeightBytes + S * max(d, ff) floats; *p.barrier zeroed before.
extern "C" __global__ void __launch_bounds__(sparsetx_step::kThreads)
sp_decode_step(sparsetx_step::Step p) {
  using namespace sparsetx_step;
  extern __shared__ float4 dynamic[];
  float *weights = reinterpret_cast<float *>(dynamic);
  float *in = weights + kWeightBytes / 4;
  __shared__ float red[kThreads * kMaxRows];
  unsigned long long target = 0;
  if (p.timing && blockIdx.x == 0 && threadIdx.x == 0)
    p.timing[0] = globalNanoseconds();

  auto layerLinears = [&](i64 l, Linear (&lin)[4]) {
    const StepLayer *L = p.layer + l;
    lin[0].outs = 3;
    lin[0].out[0] = out(nullptr, L->wq, L->bq, p.dqk, kQuery);
    lin[0].out[1] = out(nullptr, L->wk, L->bk, p.dqk, kKey);
    lin[0].out[2] = out(nullptr, L->wv, L->bv, p.d, kValue);
    lin[0].k = p.d;
    lin[0].input = kNormX;
    lin[0].lnW = L->ln1W;
    lin[0].lnB = L->ln1B;
    lin[1].outs = 1;
    lin[1].out[0] = out(p.x, L->wo, L->bo, p.d, kResidual);
    lin[1].k = p.d;
    lin[1].input = kAttention;
    lin[1].lnW = lin[1].lnB = nullptr;
    lin[2].outs = 1;
    lin[2].out[0] = out(p.g, L->w1, L->b1, p.ff, kGelu);
    lin[2].k = p.d;
    lin[2].input = kNormX;
    lin[2].lnW = L->ln2W;
    lin[2].lnB = L->ln2B;
    lin[3].outs = 1;
    lin[3].out[0] = out(p.x, L->w2, L->b2, p.d, kResidual);
    lin[3].k = p.ff;
    lin[3].input = kHidden;
    lin[3].lnW = lin[3].lnB = nullptr;
    for (Linear &x : lin)
      setTiles(x);
  };
  Linear head;
  head.outs = 1;
  head.out[0] = out(p.logits, p.wout, p.bout, p.vocab, kStore);
  head.k = p.d;
  head.input = kNormX;
  head.lnW = p.lnfW;
  head.lnB = p.lnfB;
  setTiles(head);

  Linear cur[4], nxt[4];
  layerLinears(0, cur);
  if (blockIdx.x < cur[0].tiles)
    prefetchWeights(cur[0], blockIdx.x, weights);

  // x = token embedding + the position's embeddings.
  SP_GRID_STRIDE(e, p.S * p.d) {
    const i64 r = e / p.d, c = e % p.d;
    p.x[e] = p.tokTable[(i64)p.ids[r] * p.d + c] +
             p.posTable[(i64)p.ids[p.S + r] * p.d + c];
  }

  for (i64 l = 0; l < p.layers; ++l) {
    const StepLayer *L = p.layer + l;
    const bool last = l + 1 == p.layers;
    if (!last)
      layerLinears(l + 1, nxt);
    linearPhase(p, L, cur[0], &cur[1], weights, in, red, target);
    attentionPhase(p, *L, target);
    linearPhase(p, L, cur[1], &cur[2], weights, in, red, target);
    linearPhase(p, L, cur[2], &cur[3], weights, in, red, target);
    linearPhase(p, L, cur[3], last ? &head : &nxt[0], weights, in, red, target);
    if (!last)
      for (int i = 0; i < 4; ++i)
        cur[i] = nxt[i];
  }
  linearPhase(p, nullptr, head, nullptr, weights, in, red, target);
  if (p.timing && blockIdx.x == 0 && threadIdx.x == 0)
    p.timing[target / gridDim.x + 1] = globalNanoseconds();
}

#endif // SPARSETX_DECODE_STEP_CUH
