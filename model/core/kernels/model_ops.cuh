//===- model_ops.cuh - the model's elementwise and fp32 attention kernels -===//
//
// Compiled once per CUDA backend by NVRTC (for the device's architecture) and
// launched by model/core/CudaBackend.cpp. Every formula matches the CPU ops of
// model/cpu (Ops.h): the GPU backend is checked against them.
//
// Layouts: row-major matrices; attention tensors token-major [batch, n,
// heads, dim]; lse [batch, heads, n]. Indices are 64-bit.
//
// Reductions whose order would otherwise depend on scheduling (column sums of
// bias and layer-norm gradients, the gradient norm, the loss) are written as
// per-block partials and summed in a fixed order, so that a training step is
// reproducible (no atomics anywhere).
//
//===----------------------------------------------------------------------===//

#include "sparsetx/model_math.cuh"

// --- Elementwise ------------------------------------------------------------

extern "C" __global__ void sp_accumulate(float *y, const float *x, i64 n) {
  SP_GRID_STRIDE(i, n) y[i] += x[i];
}

extern "C" __global__ void sp_scale(float *x, float s, i64 n) {
  SP_GRID_STRIDE(i, n) x[i] *= s;
}

extern "C" __global__ void sp_gelu_forward(float *out, const float *inp,
                                           i64 n) {
  SP_GRID_STRIDE(i, n) {
    float x = inp[i];
    out[i] = x * spSigmoid(1.702f * x);
  }
}

extern "C" __global__ void sp_gelu_backward(float *dinp, const float *inp,
                                            const float *dout, i64 n) {
  SP_GRID_STRIDE(i, n) {
    float x = inp[i];
    float s = spSigmoid(1.702f * x);
    dinp[i] += dout[i] * (s + 1.702f * x * s * (1.0f - s));
  }
}

extern "C" __global__ void sp_bias_add(float *x, const float *bias, i64 rows,
                                       i64 c) {
  SP_GRID_STRIDE(i, rows * c) x[i] += bias[i % c];
}

/// out[r, :] (+)= table[ids[r], :].
extern "C" __global__ void sp_embedding_forward(float *out, const int *ids,
                                                const float *table, i64 rows,
                                                i64 c, int accumulate) {
  SP_GRID_STRIDE(i, rows * c) {
    i64 r = i / c, t = i - r * c;
    float v = table[(i64)ids[r] * c + t];
    out[i] = accumulate ? out[i] + v : v;
  }
}

/// The embedding gradient without atomics, in two passes. Pass 1: the rows
/// are cut into groups; block (group, column tile) walks its group's rows in
/// order and thread t adds dout[r, col] into partial[group][ids[r]][col]
/// (zeroed first; each thread owns its column, so the order is fixed).
/// Pass 2 adds the groups in order into dtable. Work and traffic are
/// O(rows x c + groups x vocab x c), whatever the vocabulary.
extern "C" __global__ void sp_embedding_backward_partial(
    float *partial, const int *ids, const float *dout, i64 rows, i64 c,
    i64 vocab, i64 rowsPerGroup) {
  const i64 g = blockIdx.x;
  const i64 col = (i64)blockIdx.y * blockDim.x + threadIdx.x;
  if (col >= c)
    return;
  const i64 begin = g * rowsPerGroup;
  const i64 end = begin + rowsPerGroup < rows ? begin + rowsPerGroup : rows;
  float *slice = partial + g * vocab * c + col;
  for (i64 r = begin; r < end; ++r)
    slice[(i64)ids[r] * c] += dout[r * c + col];
}

extern "C" __global__ void sp_embedding_backward_reduce(float *dtable,
                                                        const float *partial,
                                                        i64 groups, i64 vocab,
                                                        i64 c) {
  SP_GRID_STRIDE(e, vocab * c) {
    float acc = 0.0f;
    for (i64 g = 0; g < groups; ++g)
      acc += partial[g * vocab * c + e];
    dtable[e] += acc;
  }
}

__device__ __forceinline__ u64 spSplitmix64(u64 x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
/// The CPU's dropoutKeep, bit for bit.
__device__ __forceinline__ bool spDropoutKeep(u64 seedHash, u64 index, float p) {
  u64 h = spSplitmix64(seedHash + index * 0x9E3779B97F4A7C15ull);
  float u = (float)(h >> 40) * (1.0f / 16777216.0f);
  return u >= p;
}

/// seedHash = splitmix64(seed), computed once on the host.
extern "C" __global__ void sp_dropout_forward(float *out, const float *inp,
                                              i64 n, float p, u64 seedHash) {
  float scale = 1.0f / (1.0f - p);
  SP_GRID_STRIDE(i, n) out[i] = spDropoutKeep(seedHash, i, p) ? inp[i] * scale : 0.0f;
}

extern "C" __global__ void sp_dropout_backward(float *dinp, const float *dout,
                                               i64 n, float p, u64 seedHash) {
  float scale = 1.0f / (1.0f - p);
  SP_GRID_STRIDE(i, n) if (spDropoutKeep(seedHash, i, p)) dinp[i] += dout[i] * scale;
}

/// out = x + dropout(branch); p = 0 keeps every element unscaled.
extern "C" __global__ void sp_residual_dropout(float *out, const float *x,
                                               const float *branch, i64 n,
                                               float p, u64 seedHash) {
  float scale = 1.0f / (1.0f - p);
  SP_GRID_STRIDE(i, n) {
    float b = branch[i];
    if (p > 0.0f)
      b = spDropoutKeep(seedHash, i, p) ? b * scale : 0.0f;
    out[i] = x[i] + b;
  }
}

/// c1 = 1 - beta1^step, c2 = 1 - beta2^step (host, as the CPU computes them).
extern "C" __global__ void sp_adamw(float *params, const float *grads, float *m,
                                    float *v, i64 n, float lr, float beta1,
                                    float beta2, float eps, float weightDecay,
                                    float c1, float c2) {
  SP_GRID_STRIDE(i, n) {
    float g = grads[i];
    float mi = beta1 * m[i] + (1.0f - beta1) * g;
    float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float mhat = mi / c1, vhat = vi / c2;
    params[i] -= lr * (mhat / (sqrtf(vhat) + eps) + weightDecay * params[i]);
  }
}

/// partial[block] = sum of squares of the block's grid-stride elements, in
/// double (summed on the host in block order).
extern "C" __global__ void sp_sum_squares(double *partial, const float *x,
                                          i64 n) {
  __shared__ double warpSums[32];
  double acc = 0.0;
  SP_GRID_STRIDE(i, n) acc += (double)x[i] * x[i];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    acc += __shfl_xor_sync(0xffffffffu, acc, o);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0)
    warpSums[warp] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0.0;
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w)
      s += warpSums[w];
    partial[blockIdx.x] = s;
  }
}

// --- Decoding's linear layers (a few rows) ----------------------------------

#define SP_LINEAR_MAX_ROWS 8
#define SP_LINEAR_MAX_OUTS 3
#define SP_LINEAR_WARPS 8
#define SP_LINEAR_ROWS_PER_WARP 8
/// With the layer norm, m * k <= SP_LINEAR_MAX_NORM (the rows in shared memory).
#define SP_LINEAR_MAX_NORM 4096

struct SpLinearOut {
  float *c;
  const float *b, *bias;
  i64 n;
  /// The first column tile (32 columns) of this output in the grid.
  i64 firstTile;
};
struct SpLinear {
  SpLinearOut out[SP_LINEAR_MAX_OUTS];
  int outs;
  const float *a, *lnWeight, *lnBias;
  float eps;
  i64 m, k;
  int accumulate, gelu;
  /// Split-K: gridDim.y slices of rowsPerSplit rows of b (a multiple of 8,
  /// at most 8 * SP_LINEAR_ROWS_PER_WARP);
  /// partials [gridDim.y][m][tiles * 32] and one zeroed counter per tile
  /// (left zeroed again).
  i64 rowsPerSplit;
  float *partials;
  unsigned *counters;
};

/// c (+)= act(norm(a) b + bias) for m <= 8 rows, a few outputs sharing a:
/// CTA (x, y) takes 32 columns (one output's column tile x) and slice y of
/// the k rows; its 8 warps take every eighth row of the slice (lane =
/// column). The warps' sums are added in a fixed order, then the slices'
/// by the CTA that finishes a tile last (a ticket per tile), also in a fixed
/// order: results repeat bit for bit. With the layer norm every CTA loads
/// the rows (m * k <= SP_LINEAR_MAX_NORM) and normalizes its slice itself:
/// no separate launch.
extern "C" __global__ void __launch_bounds__(256)
sp_linear_small(SpLinear p) {
  __shared__ float rowsIn[SP_LINEAR_MAX_NORM];
  __shared__ float part[SP_LINEAR_WARPS][SP_LINEAR_MAX_ROWS][33];
  __shared__ float stats[SP_LINEAR_MAX_ROWS][2];
  __shared__ int isLast;
  const int lane = threadIdx.x, warp = threadIdx.y;
  const i64 tile = blockIdx.x;
  int o = 0;
  while (o + 1 < p.outs && tile >= p.out[o + 1].firstTile)
    ++o;
  const SpLinearOut out = p.out[o];
  const i64 m = p.m, k = p.k, n = out.n;
  const i64 kBegin = (i64)blockIdx.y * p.rowsPerSplit;
  const i64 kEnd = min(k, kBegin + p.rowsPerSplit);
  const i64 col = (tile - out.firstTile) * 32 + lane;
  // The slice's weights first (at most 8 rows per warp: rowsPerSplit <= 64),
  // all loads in flight at once, while the statistics are computed.
  float wv[SP_LINEAR_ROWS_PER_WARP];
#pragma unroll
  for (int u = 0; u < SP_LINEAR_ROWS_PER_WARP; ++u) {
    const i64 j = kBegin + warp + u * SP_LINEAR_WARPS;
    wv[u] = col < n && j < kEnd ? __ldg(out.b + j * n + col) : 0.0f;
  }
  const float *x = p.a;
  if (p.lnWeight) {
    // The rows into shared memory (all loads at once), then warp r < m: the
    // statistics of row r, as sp_layernorm_forward.
#pragma unroll 4
    for (i64 e = warp * 32 + lane; e < m * k; e += 32 * SP_LINEAR_WARPS)
      rowsIn[e] = p.a[e];
    __syncthreads();
    x = rowsIn;
    if (warp < m) {
      float mu, rstd;
      spRowStatistics(rowsIn + warp * k, k, p.eps, mu, rstd);
      if (lane == 0) {
        stats[warp][0] = mu;
        stats[warp][1] = rstd;
      }
    }
    __syncthreads();
  }
  float acc[SP_LINEAR_MAX_ROWS];
#pragma unroll
  for (int r = 0; r < SP_LINEAR_MAX_ROWS; ++r)
    acc[r] = 0.0f;
#pragma unroll
  for (int u = 0; u < SP_LINEAR_ROWS_PER_WARP; ++u) {
    const i64 j = kBegin + warp + u * SP_LINEAR_WARPS;
    if (j < kEnd) {
      float g = 1.0f, h = 0.0f;
      if (p.lnWeight) {
        g = p.lnWeight[j];
        h = p.lnBias[j];
      }
#pragma unroll
      for (int r = 0; r < SP_LINEAR_MAX_ROWS; ++r)
        if (r < m) {
          float xv = x[r * k + j];
          if (p.lnWeight)
            xv = (xv - stats[r][0]) * stats[r][1] * g + h;
          acc[r] = fmaf(xv, wv[u], acc[r]);
        }
    }
  }
#pragma unroll
  for (int r = 0; r < SP_LINEAR_MAX_ROWS; ++r)
    part[warp][r][lane] = acc[r];
  __syncthreads();
  // Warp r < m sums row r over the warps.
  float v = 0.0f;
  if (warp < m) {
#pragma unroll
    for (int w = 0; w < SP_LINEAR_WARPS; ++w)
      v += part[w][warp][lane];
  }
  if (gridDim.y > 1) {
    const i64 width = (i64)gridDim.x * 32, gcol = tile * 32 + lane;
    if (warp < m)
      p.partials[((i64)blockIdx.y * m + warp) * width + gcol] = v;
    __threadfence();
    __syncthreads();
    if (warp == 0 && lane == 0) {
      unsigned ticket = atomicAdd(&p.counters[tile], 1u);
      isLast = ticket == gridDim.y - 1;
    }
    __syncthreads();
    if (!isLast)
      return;
    __threadfence();
    if (warp < m) {
      v = 0.0f;
#pragma unroll 8
      for (unsigned y = 0; y < gridDim.y; ++y)
        v += __ldcg(p.partials + ((i64)y * m + warp) * width + gcol);
    }
    if (warp == 0 && lane == 0)
      p.counters[tile] = 0;
  }
  if (warp >= m || col >= n)
    return;
  if (out.bias)
    v += out.bias[col];
  if (p.gelu)
    v = v * spSigmoid(1.702f * v);
  float *c = out.c + (i64)warp * n + col;
  *c = p.accumulate ? *c + v : v;
}

// --- Decoding's linear layers on packed weights ------------------------------

/// Where column j of row s goes in 16-bit rows (Backend.h HalfRows), at row
/// `at` of the capacity.
__device__ __forceinline__ i64 spHalfRowIndex(i64 s, i64 j, i64 at, i64 heads,
                                              i64 width, i64 stride,
                                              i64 capacity) {
  const i64 h = j / width;
  return ((s * heads + h) * capacity + at) * stride + (j - h * width);
}

#define SP_GEMV_WARPS 4
/// The rows in shared memory: m * k <= SP_GEMV_MAX_INPUT floats (64 KiB).
#define SP_GEMV_MAX_INPUT 16384

struct SpGemvOut {
  float *c;
  /// sp_pack_linear's copy of b: [n, k], element type per the kernel.
  const void *w;
  const float *bias;
  i64 n;
  /// The first column of this output among the launch's columns.
  i64 firstCol;
  /// Non-null: the output goes there as 16-bit rows instead of c (Backend.h
  /// HalfRows: heads, width, stride, capacity, the row at *position or 0).
  unsigned short *half;
  i64 heads, width, stride, capacity;
  const int *position;
};
struct SpGemv {
  SpGemvOut out[SP_LINEAR_MAX_OUTS];
  int outs;
  const float *a, *lnWeight, *lnBias;
  float eps;
  i64 m, k;
  int accumulate, gelu, bf16;
};

/// b [k, n] (fp32) to w [n, k]: fp32 (type 0), bf16 (1) or fp16 (2), so
/// that one output column's weights are contiguous.
extern "C" __global__ void sp_pack_linear(void *w, const float *b, i64 k,
                                          i64 n, int type) {
  SP_GRID_STRIDE(i, k * n) {
    const i64 col = i / k, j = i - col * k;
    const float x = b[j * n + col];
    if (type == 0)
      static_cast<float *>(w)[i] = x;
    else
      static_cast<unsigned short *>(w)[i] = spToHalf(x, type == 1);
  }
}

/// 16 bytes of weights through the read-only path, or zeros.
__device__ __forceinline__ uint4 spLoadWeights16(const char *p, bool valid) {
  uint4 r = make_uint4(0u, 0u, 0u, 0u);
  if (valid)
    r = __ldg(reinterpret_cast<const uint4 *>(p));
  return r;
}

/// sp_gemv_f32 / sp_gemv_h16: c (+)= act(norm(a) b + bias) like
/// sp_linear_small, on weights packed by sp_pack_linear. Warp w of CTA x
/// takes output column 4x + w, whole (all k): its lanes take 16 bytes of
/// the column's weights at a time (a chunk: 8 loads per lane, all in flight
/// at once), and a warp sum adds them up in a fixed order (bit-repeatable).
/// The first chunk and the bias are loaded before spWaitPrior (nothing
/// writes parameters while sampling), so that they overlap the previous
/// kernel; then the rows go to shared memory, normalized there by the CTA
/// itself.
/// Needs k * sizeof(element) % 16 == 0, 16-byte aligned a and w,
/// m <= SP_LINEAR_MAX_ROWS, m * k <= SP_GEMV_MAX_INPUT.
/// The pieces below are shared with sp_gemv_chain, which runs several such
/// layers in one launch.
#define SP_GEMV_LOADS 8 // 16-byte loads per lane per chunk

/// The columns of all of p's outputs.
__device__ __forceinline__ i64 spGemvColumns(const SpGemv &p) {
  return p.out[p.outs - 1].firstCol + p.out[p.outs - 1].n;
}

/// Where global column `col` of p is: its output and its column there
/// (local >= out.n: no column, the warp computes zeros and writes nothing).
struct SpGemvColumn {
  int o;
  i64 local;
  bool valid;
};
__device__ __forceinline__ SpGemvColumn spGemvFind(const SpGemv &p, i64 col) {
  int o = 0;
  while (o + 1 < p.outs && col >= p.out[o + 1].firstCol)
    ++o;
  SpGemvColumn c;
  c.o = o;
  c.local = col - p.out[o].firstCol;
  c.valid = c.local < p.out[o].n;
  return c;
}

/// Chunk `c0` of column c's weights (each lane's 8 loads) into wv.
template <int kElemBytes>
__device__ __forceinline__ void spGemvLoadChunk(const SpGemv &p,
                                                const SpGemvColumn &c, i64 c0,
                                                uint4 (&wv)[SP_GEMV_LOADS]) {
  constexpr int kVec = 16 / kElemBytes;
  const int lane = threadIdx.x & 31;
  const char *w = static_cast<const char *>(p.out[c.o].w) +
                  (c.valid ? c.local : 0) * p.k * kElemBytes;
#pragma unroll
  for (int u = 0; u < SP_GEMV_LOADS; ++u) {
    const i64 e = c0 + ((i64)u * 32 + lane) * kVec;
    wv[u] = spLoadWeights16(w + e * kElemBytes, c.valid && e < p.k);
  }
}

/// Column c's bias (0 without one).
__device__ __forceinline__ float spGemvBias(const SpGemv &p,
                                            const SpGemvColumn &c) {
  const SpGemvOut &out = p.out[c.o];
  return c.valid && out.bias ? __ldg(out.bias + c.local) : 0.0f;
}

/// What column c's lane-th row adds to (the residual stream) when p
/// accumulates, else 0; through L2, since another CTA of the same launch
/// may have written it (sp_gemv_chain).
__device__ __forceinline__ float spGemvPrevious(const SpGemv &p,
                                                const SpGemvColumn &c) {
  const int lane = threadIdx.x & 31;
  const SpGemvOut &out = p.out[c.o];
  return c.valid && lane < p.m && p.accumulate && !out.half
             ? __ldcg(out.c + (i64)lane * out.n + c.local)
             : 0.0f;
}

/// The rows of p into xs (shared, m * k floats), layer-normalized there when
/// p has a layer norm. All the CTA's threads; ends synchronized.
__device__ __forceinline__ void spGemvRows(const SpGemv &p, float *xs) {
  __shared__ float stats[SP_LINEAR_MAX_ROWS][2];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const i64 m = p.m, k = p.k;
  // 4 loads per thread in flight; through L2 (see spGemvPrevious).
#pragma unroll 4
  for (i64 e = (i64)threadIdx.x * 4; e < m * k; e += (i64)blockDim.x * 4)
    *reinterpret_cast<float4 *>(xs + e) =
        __ldcg(reinterpret_cast<const float4 *>(p.a + e));
  __syncthreads();
  if (!p.lnWeight)
    return;
  for (i64 r = warp; r < m; r += blockDim.x >> 5) {
    float mu, rstd;
    spRowStatistics(xs + r * k, k, p.eps, mu, rstd);
    if (lane == 0) {
      stats[r][0] = mu;
      stats[r][1] = rstd;
    }
  }
  __syncthreads();
  // 4 columns per thread at a time: their weights and biases loaded
  // together, then every row's entries normalized.
  for (i64 j0 = threadIdx.x; j0 < k; j0 += 4 * (i64)blockDim.x) {
    float g[4], h[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const i64 j = j0 + (i64)u * blockDim.x;
      g[u] = j < k ? p.lnWeight[j] : 0.0f;
      h[u] = j < k ? p.lnBias[j] : 0.0f;
    }
    for (i64 r = 0; r < m; ++r) {
      const float mu = stats[r][0], rstd = stats[r][1];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const i64 j = j0 + (i64)u * blockDim.x;
        if (j < k)
          xs[r * k + j] = (xs[r * k + j] - mu) * rstd * g[u] + h[u];
      }
    }
  }
  __syncthreads();
}

/// Column c of p by the calling warp, whose lanes hold the column's first
/// chunk in wv (spGemvLoadChunk at 0), its bias and, in lane r < m, what row
/// r adds to (spGemvPrevious): the dot products with the rows in xs, the
/// fixed-order warp sum, the epilogue and the write.
template <int kElemBytes>
__device__ __forceinline__ void spGemvColumnDot(const SpGemv &p,
                                                const float *xs,
                                                const SpGemvColumn &c,
                                                uint4 (&wv)[SP_GEMV_LOADS],
                                                float bias, float prev) {
  constexpr int kVec = 16 / kElemBytes; // elements per 16-byte load
  constexpr int kChunk = 32 * kVec * SP_GEMV_LOADS;
  const int lane = threadIdx.x & 31;
  const i64 m = p.m, k = p.k;
  float acc[SP_LINEAR_MAX_ROWS];
#pragma unroll
  for (int r = 0; r < SP_LINEAR_MAX_ROWS; ++r)
    acc[r] = 0.0f;
  for (i64 c0 = 0; c0 < k; c0 += kChunk) {
    if (c0 > 0)
      spGemvLoadChunk<kElemBytes>(p, c, c0, wv);
#pragma unroll
    for (int u = 0; u < SP_GEMV_LOADS; ++u) {
      const i64 e = c0 + ((i64)u * 32 + lane) * kVec;
      if (e >= k)
        break;
      float f[kVec];
      if (kElemBytes == 4) {
        f[0] = __uint_as_float(wv[u].x);
        f[1] = __uint_as_float(wv[u].y);
        f[2] = __uint_as_float(wv[u].z);
        f[3] = __uint_as_float(wv[u].w);
      } else {
        const unsigned words[4] = {wv[u].x, wv[u].y, wv[u].z, wv[u].w};
#pragma unroll
        for (int h = 0; h < 4; ++h) {
          f[2 * h] = spFromHalf((unsigned short)(words[h] & 0xffffu), p.bf16);
          f[2 * h + 1] = spFromHalf((unsigned short)(words[h] >> 16), p.bf16);
        }
      }
#pragma unroll
      for (int r = 0; r < SP_LINEAR_MAX_ROWS; ++r)
        if (r < m) {
          const float4 *x = reinterpret_cast<const float4 *>(xs + r * k + e);
#pragma unroll
          for (int v = 0; v < kVec / 4; ++v) {
            const float4 xv = x[v];
            acc[r] = fmaf(xv.x, f[4 * v], acc[r]);
            acc[r] = fmaf(xv.y, f[4 * v + 1], acc[r]);
            acc[r] = fmaf(xv.z, f[4 * v + 2], acc[r]);
            acc[r] = fmaf(xv.w, f[4 * v + 3], acc[r]);
          }
        }
    }
  }
  float v = 0.0f;
#pragma unroll
  for (int r = 0; r < SP_LINEAR_MAX_ROWS; ++r)
    if (r < m) {
      const float s = spWarpSum(acc[r]);
      if (lane == r)
        v = s;
    }
  if (!c.valid || lane >= m)
    return;
  const SpGemvOut &out = p.out[c.o];
  v += bias;
  if (p.gelu)
    v = v * spSigmoid(1.702f * v);
  if (out.half) {
    const i64 at = out.position ? *out.position : 0;
    if (at >= 0 && at < out.capacity)
      out.half[spHalfRowIndex(lane, c.local, at, out.heads, out.width,
                              out.stride, out.capacity)] = spToHalf(v, p.bf16);
    return;
  }
  out.c[(i64)lane * out.n + c.local] = p.accumulate ? prev + v : v;
}

template <int kElemBytes>
__device__ __forceinline__ void spGemv(const SpGemv &p) {
  extern __shared__ float4 gemvShared[];
  float *xs = reinterpret_cast<float *>(gemvShared);
  const int warp = threadIdx.x >> 5;
  const SpGemvColumn c =
      spGemvFind(p, (i64)blockIdx.x * SP_GEMV_WARPS + warp);
  uint4 wv[SP_GEMV_LOADS];
  spGemvLoadChunk<kElemBytes>(p, c, 0, wv);
  const float bias = spGemvBias(p, c);
  spAllowNext();
  spWaitPrior();
  // What the output adds to, loaded now: its round trip overlaps the rows'.
  const float prev = spGemvPrevious(p, c);
  spGemvRows(p, xs);
  spGemvColumnDot<kElemBytes>(p, xs, c, wv, bias, prev);
}

extern "C" __global__ void __launch_bounds__(SP_GEMV_WARPS * 32)
sp_gemv_f32(SpGemv p) {
  spGemv<4>(p);
}
extern "C" __global__ void __launch_bounds__(SP_GEMV_WARPS * 32)
sp_gemv_h16(SpGemv p) {
  spGemv<2>(p);
}

// --- A chain of packed linear layers in one launch ---------------------------
//
// Decoding's linear layers between two attentions (W_o, W1, W2 of one block,
// then the next block's q/k/v or the logits) each read what the one before
// wrote. sp_gemv_chain runs them as stages of one launch with a grid-wide
// barrier between stages, instead of one launch each: a barrier is an atomic
// and a poll in L2, a kernel boundary a drain, a launch and a ramp. Every
// column is computed exactly as by sp_gemv (same warp, same order), so the
// results are the same bit for bit. Opt-in (SPARSETX_LINEAR_CHAIN=1): on an
// H200 the separate launches, overlapping each other, were faster (1,619
// against 1,344 tokens/s for the enwik8 model; docs/benchmarks.md).
//
// The barrier needs every CTA of the grid resident at once: the host sizes
// the grid to what the SMs hold at once (occupancy), and when the launch
// overlaps its predecessor, no later kernel can take an SM before every CTA
// of this grid has started (each CTA allows dependents at its start, and
// dependents launch only once all have). Warps take columns grid-stride, so
// a smaller grid still covers every stage.

#define SP_CHAIN_MAX_STAGES 4

struct SpGemvChain {
  SpGemv stage[SP_CHAIN_MAX_STAGES];
  int stages;
  /// Two zeroed counters (arrivals, exits), zero again when the launch ends.
  unsigned *barrier;
};

/// Arrive at the chain's barrier and wait until `target` arrivals (all CTAs
/// of `stage` stages). The CTA's writes before it are visible to every
/// CTA after it (fence, release/acquire through L2).
__device__ __forceinline__ void spGridBarrier(unsigned *counter,
                                              unsigned target) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(counter, 1u);
    unsigned seen;
    do {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];"
                   : "=r"(seen)
                   : "l"(counter)
                   : "memory");
    } while (seen < target);
    __threadfence();
  }
  __syncthreads();
}

template <int kElemBytes>
__device__ __forceinline__ void spGemvChain(const SpGemvChain &p) {
  extern __shared__ float4 gemvShared[];
  float *xs = reinterpret_cast<float *>(gemvShared);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const i64 first = (i64)blockIdx.x * SP_GEMV_WARPS + warp,
            warps = (i64)gridDim.x * SP_GEMV_WARPS;
  // The later stages' first columns on their way to L2 now (128-byte lines,
  // a lane each), so that the loads after each barrier hit L2.
  for (int s = 1; s < p.stages; ++s) {
    const SpGemv &g = p.stage[s];
    const SpGemvColumn c = spGemvFind(g, first);
    const i64 bytes = g.k * kElemBytes;
    if (c.valid)
      for (i64 at = (i64)lane * 128; at < bytes; at += 32 * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(
            static_cast<const char *>(g.out[c.o].w) + c.local * bytes + at));
  }
  uint4 wv[SP_GEMV_LOADS];
  SpGemvColumn c = spGemvFind(p.stage[0], first);
  spGemvLoadChunk<kElemBytes>(p.stage[0], c, 0, wv);
  float bias = spGemvBias(p.stage[0], c);
  spAllowNext();
  spWaitPrior();
  for (int s = 0; s < p.stages; ++s) {
    const SpGemv &g = p.stage[s];
    if (s > 0) {
      // This stage's first column in flight while the barrier waits.
      c = spGemvFind(g, first);
      spGemvLoadChunk<kElemBytes>(g, c, 0, wv);
      bias = spGemvBias(g, c);
      spGridBarrier(p.barrier, (unsigned)s * gridDim.x);
    }
    const i64 cols = spGemvColumns(g);
    if ((i64)blockIdx.x * SP_GEMV_WARPS >= cols)
      continue; // no column for any warp of this CTA
    float prev = spGemvPrevious(g, c);
    spGemvRows(g, xs);
    for (i64 col = first; col < cols; col += warps) {
      if (col != first) {
        c = spGemvFind(g, col);
        spGemvLoadChunk<kElemBytes>(g, c, 0, wv);
        bias = spGemvBias(g, c);
        prev = spGemvPrevious(g, c);
      }
      spGemvColumnDot<kElemBytes>(g, xs, c, wv, bias, prev);
    }
    // xs is the next stage's.
    __syncthreads();
  }
  // The last CTA out resets the counters for the next launch: every CTA has
  // passed every barrier by then.
  if (p.stages > 1 && threadIdx.x == 0 &&
      atomicAdd(p.barrier + 1, 1u) == gridDim.x - 1) {
    p.barrier[0] = 0u;
    p.barrier[1] = 0u;
  }
}

extern "C" __global__ void __launch_bounds__(SP_GEMV_WARPS * 32)
sp_gemv_chain_f32(SpGemvChain p) {
  spGemvChain<4>(p);
}
extern "C" __global__ void __launch_bounds__(SP_GEMV_WARPS * 32)
sp_gemv_chain_h16(SpGemvChain p) {
  spGemvChain<2>(p);
}

// --- Layer norm (one warp per row) ------------------------------------------

extern "C" __global__ void sp_layernorm_forward(float *out, float *mean,
                                                float *rstd, const float *inp,
                                                const float *weight,
                                                const float *bias, i64 rows,
                                                i64 c, float eps) {
  i64 r = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (r >= rows)
    return;
  const float *x = inp + r * c;
  float mu, s;
  spRowStatistics(x, c, eps, mu, s);
  float *y = out + r * c;
  for (i64 j = lane; j < c; j += 32)
    y[j] = (x[j] - mu) * s * weight[j] + bias[j];
  if (lane == 0) {
    if (mean)
      mean[r] = mu;
    if (rstd)
      rstd[r] = s;
  }
}

extern "C" __global__ void sp_layernorm_backward_input(
    float *dinp, const float *dout, const float *inp, const float *weight,
    const float *mean, const float *rstd, i64 rows, i64 c) {
  i64 r = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (r >= rows)
    return;
  const float *x = inp + r * c, *dy = dout + r * c;
  float m = mean[r], s = rstd[r];
  float gMean = 0.0f, gxMean = 0.0f;
  for (i64 j = lane; j < c; j += 32) {
    float g = dy[j] * weight[j];
    gMean += g;
    gxMean += g * ((x[j] - m) * s);
  }
  gMean = spWarpSum(gMean) / (float)c;
  gxMean = spWarpSum(gxMean) / (float)c;
  float *dx = dinp + r * c;
  for (i64 j = lane; j < c; j += 32) {
    float g = dy[j] * weight[j];
    float xhat = (x[j] - m) * s;
    dx[j] += s * (g - gMean - xhat * gxMean);
  }
}

// --- Column sums (bias and layer-norm parameter gradients) ------------------
//
// Blocks of 32 x 8 threads: blockIdx.x picks 32 columns, blockIdx.y a chunk
// of `rowsPerChunk` rows. partial[which][chunk][col] holds the chunk's sum of
// dout (which 0) and, for layer norm, of dout * xhat (which 1); a second
// kernel adds the chunks in order into the gradients.

extern "C" __global__ void sp_column_partials(float *partial, const float *dout,
                                              const float *inp,
                                              const float *mean,
                                              const float *rstd, i64 rows,
                                              i64 c, i64 rowsPerChunk) {
  __shared__ float sums[2][8][33];
  i64 col = (i64)blockIdx.x * 32 + threadIdx.x;
  i64 chunk = blockIdx.y;
  i64 begin = chunk * rowsPerChunk;
  i64 end = begin + rowsPerChunk < rows ? begin + rowsPerChunk : rows;
  float db = 0.0f, dw = 0.0f;
  if (col < c) {
    for (i64 r = begin + threadIdx.y; r < end; r += 8) {
      float dy = dout[r * c + col];
      db += dy;
      if (inp)
        dw += dy * ((inp[r * c + col] - mean[r]) * rstd[r]);
    }
  }
  sums[0][threadIdx.y][threadIdx.x] = db;
  sums[1][threadIdx.y][threadIdx.x] = dw;
  __syncthreads();
  if (threadIdx.y == 0 && col < c) {
    float b = 0.0f, w = 0.0f;
    for (int y = 0; y < 8; ++y) {
      b += sums[0][y][threadIdx.x];
      w += sums[1][y][threadIdx.x];
    }
    i64 chunks = gridDim.y;
    partial[chunk * c + col] = b;
    if (inp)
      partial[(chunks + chunk) * c + col] = w;
  }
}

/// dbias[col] += sum over chunks of partial[0]; dweight likewise of
/// partial[1] (either may be null).
extern "C" __global__ void sp_column_reduce(float *dbias, float *dweight,
                                            const float *partial, i64 chunks,
                                            i64 c) {
  SP_GRID_STRIDE(col, c) {
    if (dbias) {
      float b = 0.0f;
      for (i64 k = 0; k < chunks; ++k)
        b += partial[k * c + col];
      dbias[col] += b;
    }
    if (dweight) {
      float w = 0.0f;
      for (i64 k = 0; k < chunks; ++k)
        w += partial[(chunks + k) * c + col];
      dweight[col] += w;
    }
  }
}

// --- Softmax cross-entropy (one block per row) ------------------------------

extern "C" __global__ void sp_softmax_cross_entropy(float *losses,
                                                    float *dlogits,
                                                    const float *logits,
                                                    const int *targets,
                                                    i64 vocab, float dscale) {
  __shared__ float red[32];
  i64 r = blockIdx.x;
  const float *z = logits + r * vocab;
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5,
      warps = blockDim.x >> 5;
  float mx = spNegInf();
  for (i64 j = threadIdx.x; j < vocab; j += blockDim.x)
    mx = fmaxf(mx, z[j]);
  mx = spWarpMax(mx);
  if (lane == 0)
    red[warp] = mx;
  __syncthreads();
  mx = red[0];
  for (int w = 1; w < warps; ++w)
    mx = fmaxf(mx, red[w]);
  __syncthreads();
  float sum = 0.0f;
  for (i64 j = threadIdx.x; j < vocab; j += blockDim.x)
    sum += expf(z[j] - mx);
  // The target's logit, read before the barrier below: dlogits may be
  // logits itself (in place), and after the barrier other threads overwrite
  // the row (each thread only its own elements, read just before).
  int t = targets[r];
  float zt = z[t];
  sum = spWarpSum(sum);
  if (lane == 0)
    red[warp] = sum;
  __syncthreads();
  sum = 0.0f;
  for (int w = 0; w < warps; ++w)
    sum += red[w];
  float logSum = logf(sum);
  if (threadIdx.x == 0)
    losses[r] = logSum - (zt - mx);
  if (dlogits) {
    float *dz = dlogits + r * vocab;
    for (i64 j = threadIdx.x; j < vocab; j += blockDim.x) {
      float p = expf(z[j] - mx - logSum);
      dz[j] = (p - (j == t ? 1.0f : 0.0f)) * dscale;
    }
  }
}

// --- fp32 sparse attention over per-row key lists ---------------------------
//
// The fp32 mode's attention: the CPU attention (SparseAttention.cpp) on the
// GPU, exact to fp32 rounding, for validation and small models; the bf16 and
// fp16 modes run the generated tensor-core kernels instead. One warp per
// (batch, head, row); lanes take 32 keys (or queries) at a time and compute
// their dot products whole, then share the weights by shuffles and
// accumulate output columns lane-strided.

/// A mask's CSR lists: keys of each row, queries of each key (ascending).
struct SpMask {
  const i64 *rowStart;
  const int *rowKeys;
  const i64 *colStart;
  const int *colQueries;
};

#define SP_MAX_DIM_PER_LANE 8 // dims up to 256

struct SpAttnShape {
  i64 batch, heads, n, qkDim, vDim;
  float scale;
  int maskPerHead; // masks[h] when set, else masks[0]
};

__device__ __forceinline__ i64 spTok(const SpAttnShape &s, i64 b, i64 i,
                                     i64 h, i64 dim) {
  return ((b * s.n + i) * s.heads + h) * dim;
}

/// Softmax attention of one query row over `keys[0..count)`: key j's row of
/// k at kBase + j * kStride, of v at vBase + j * vStride. Writes o (vDim) and
/// returns lse (natural log; -inf for an empty row, whose o is 0). `qs` is
/// the warp's shared copy of the query row.
__device__ float spAttendRow(const SpAttnShape &s, const float *qs,
                             const int *keys, i64 count, const float *kBase,
                             i64 kStride, const float *vBase, i64 vStride,
                             float *o) {
  int lane = threadIdx.x & 31;
  float m = spNegInf(), l = 0.0f;
  float acc[SP_MAX_DIM_PER_LANE];
#pragma unroll
  for (int u = 0; u < SP_MAX_DIM_PER_LANE; ++u)
    acc[u] = 0.0f;
  for (i64 base = 0; base < count; base += 32) {
    i64 idx = base + lane;
    float sc = spNegInf();
    int key = 0;
    if (idx < count) {
      key = keys[idx];
      const float *kr = kBase + (i64)key * kStride;
      float dot = 0.0f;
      for (i64 t = 0; t < s.qkDim; ++t)
        dot += qs[t] * kr[t];
      sc = dot * s.scale;
    }
    float mNew = fmaxf(m, spWarpMax(sc));
    float corr = expf(m - mNew); // m = -inf at the start: 0
    float p = idx < count ? expf(sc - mNew) : 0.0f;
    l = l * corr + spWarpSum(p);
#pragma unroll
    for (int u = 0; u < SP_MAX_DIM_PER_LANE; ++u)
      acc[u] *= corr;
    int valid = (int)(count - base < 32 ? count - base : 32);
    for (int jj = 0; jj < valid; ++jj) {
      float pj = __shfl_sync(0xffffffffu, p, jj);
      int kj = __shfl_sync(0xffffffffu, key, jj);
      const float *vr = vBase + (i64)kj * vStride;
#pragma unroll
      for (int u = 0; u < SP_MAX_DIM_PER_LANE; ++u) {
        i64 t = lane + 32 * u;
        if (t < s.vDim)
          acc[u] += pj * vr[t];
      }
    }
    m = mNew;
  }
  float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
  for (int u = 0; u < SP_MAX_DIM_PER_LANE; ++u) {
    i64 t = lane + 32 * u;
    if (t < s.vDim)
      o[t] = acc[u] * inv;
  }
  return l > 0.0f ? m + logf(l) : spNegInf();
}

/// Loads row `qr` into the warp's shared slot.
__device__ __forceinline__ float *spLoadQuery(float *smem, const float *qr,
                                              i64 dim) {
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float *qs = smem + warp * dim;
  for (i64 t = lane; t < dim; t += 32)
    qs[t] = qr[t];
  __syncwarp();
  return qs;
}

/// One warp per (batch, head, row); dynamic shared memory: warps * qkDim
/// floats.
extern "C" __global__ void sp_attention_forward(SpAttnShape s,
                                                const SpMask *masks,
                                                const float *q, const float *k,
                                                const float *v, float *o,
                                                float *lse) {
  extern __shared__ float smem[];
  i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= s.batch * s.heads * s.n)
    return;
  i64 i = row % s.n, bh = row / s.n, h = bh % s.heads, b = bh / s.heads;
  const SpMask mask = masks[s.maskPerHead ? h : 0];
  const float *qs = spLoadQuery(smem, q + spTok(s, b, i, h, s.qkDim), s.qkDim);
  i64 start = mask.rowStart[i], count = mask.rowStart[i + 1] - start;
  float out = spAttendRow(s, qs, mask.rowKeys + start, count,
                          k + spTok(s, b, 0, h, s.qkDim), s.heads * s.qkDim,
                          v + spTok(s, b, 0, h, s.vDim), s.heads * s.vDim,
                          o + spTok(s, b, i, h, s.vDim));
  if ((threadIdx.x & 31) == 0 && lse)
    lse[bh * s.n + i] = out;
}

/// Row *position against caches [batch, n, heads, dim] (rows 0..position
/// written): q and o are [batch, heads, dim]. One warp per (batch, head). A
/// position outside [0, n) leaves o untouched (the host checks it).
extern "C" __global__ void sp_attention_decode(SpAttnShape s,
                                               const SpMask *masks,
                                               const int *positionAt,
                                               const float *q,
                                               const float *kCache,
                                               const float *vCache, float *o) {
  extern __shared__ float smem[];
  i64 bh = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const i64 position = *positionAt;
  if (bh >= s.batch * s.heads || position < 0 || position >= s.n)
    return;
  i64 h = bh % s.heads, b = bh / s.heads;
  const SpMask mask = masks[s.maskPerHead ? h : 0];
  const float *qs = spLoadQuery(smem, q + bh * s.qkDim, s.qkDim);
  i64 start = mask.rowStart[position],
      count = mask.rowStart[position + 1] - start;
  spAttendRow(s, qs, mask.rowKeys + start, count,
              kCache + spTok(s, b, 0, h, s.qkDim), s.heads * s.qkDim,
              vCache + spTok(s, b, 0, h, s.vDim), s.heads * s.vDim,
              o + bh * s.vDim);
}

/// Backward, part 1: per query row, Delta = dO . O (stored for part 2) and
/// dQ = scale * sum_j P_ij (dO . v_j - Delta) k_j (overwritten).
extern "C" __global__ void sp_attention_backward_dq(
    SpAttnShape s, const SpMask *masks, const float *q, const float *k,
    const float *v, const float *o, const float *lse, const float *dO,
    float *dQ, float *delta) {
  extern __shared__ float smem[];
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + warp;
  if (row >= s.batch * s.heads * s.n)
    return;
  i64 i = row % s.n, bh = row / s.n, h = bh % s.heads, b = bh / s.heads;
  const SpMask mask = masks[s.maskPerHead ? h : 0];
  // Shared per warp: q row, then dO row.
  float *qs = smem + warp * (s.qkDim + s.vDim);
  float *dos = qs + s.qkDim;
  const float *qr = q + spTok(s, b, i, h, s.qkDim);
  const float *dor = dO + spTok(s, b, i, h, s.vDim);
  const float *orow = o + spTok(s, b, i, h, s.vDim);
  float dd = 0.0f;
  for (i64 t = lane; t < s.qkDim; t += 32)
    qs[t] = qr[t];
  for (i64 t = lane; t < s.vDim; t += 32) {
    dos[t] = dor[t];
    dd += dor[t] * orow[t];
  }
  dd = spWarpSum(dd);
  __syncwarp();
  if (lane == 0)
    delta[bh * s.n + i] = dd;
  float rowLse = lse[bh * s.n + i];
  i64 start = mask.rowStart[i], count = mask.rowStart[i + 1] - start;
  const int *keys = mask.rowKeys + start;
  const float *kBase = k + spTok(s, b, 0, h, s.qkDim);
  const float *vBase = v + spTok(s, b, 0, h, s.vDim);
  i64 kStride = s.heads * s.qkDim, vStride = s.heads * s.vDim;
  float acc[SP_MAX_DIM_PER_LANE];
#pragma unroll
  for (int u = 0; u < SP_MAX_DIM_PER_LANE; ++u)
    acc[u] = 0.0f;
  for (i64 base = 0; base < count; base += 32) {
    i64 idx = base + lane;
    float ds = 0.0f;
    int key = 0;
    if (idx < count) {
      key = keys[idx];
      const float *kr = kBase + (i64)key * kStride;
      const float *vr = vBase + (i64)key * vStride;
      float dot = 0.0f, dp = 0.0f;
      for (i64 t = 0; t < s.qkDim; ++t)
        dot += qs[t] * kr[t];
      for (i64 t = 0; t < s.vDim; ++t)
        dp += dos[t] * vr[t];
      float p = expf(dot * s.scale - rowLse);
      ds = p * (dp - dd);
    }
    int valid = (int)(count - base < 32 ? count - base : 32);
    for (int jj = 0; jj < valid; ++jj) {
      float dsj = __shfl_sync(0xffffffffu, ds, jj);
      int kj = __shfl_sync(0xffffffffu, key, jj);
      const float *kr = kBase + (i64)kj * kStride;
#pragma unroll
      for (int u = 0; u < SP_MAX_DIM_PER_LANE; ++u) {
        i64 t = lane + 32 * u;
        if (t < s.qkDim)
          acc[u] += dsj * kr[t];
      }
    }
  }
  float *dq = dQ + spTok(s, b, i, h, s.qkDim);
#pragma unroll
  for (int u = 0; u < SP_MAX_DIM_PER_LANE; ++u) {
    i64 t = lane + 32 * u;
    if (t < s.qkDim)
      dq[t] = acc[u] * s.scale;
  }
}

/// Backward, part 2: per key row j over the queries that attend it,
/// dV_j = sum_i P_ij dO_i and dK_j = scale * sum_i P_ij (dO_i . v_j -
/// Delta_i) q_i (overwritten).
extern "C" __global__ void sp_attention_backward_dkdv(
    SpAttnShape s, const SpMask *masks, const float *q, const float *k,
    const float *v, const float *lse, const float *dO, const float *delta,
    float *dK, float *dV) {
  extern __shared__ float smem[];
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + warp;
  if (row >= s.batch * s.heads * s.n)
    return;
  i64 j = row % s.n, bh = row / s.n, h = bh % s.heads, b = bh / s.heads;
  const SpMask mask = masks[s.maskPerHead ? h : 0];
  float *ks = smem + warp * (s.qkDim + s.vDim);
  float *vs = ks + s.qkDim;
  const float *kr = k + spTok(s, b, j, h, s.qkDim);
  const float *vr = v + spTok(s, b, j, h, s.vDim);
  for (i64 t = lane; t < s.qkDim; t += 32)
    ks[t] = kr[t];
  for (i64 t = lane; t < s.vDim; t += 32)
    vs[t] = vr[t];
  __syncwarp();
  i64 start = mask.colStart[j], count = mask.colStart[j + 1] - start;
  const int *queries = mask.colQueries + start;
  const float *qBase = q + spTok(s, b, 0, h, s.qkDim);
  const float *doBase = dO + spTok(s, b, 0, h, s.vDim);
  i64 qStride = s.heads * s.qkDim, vStride = s.heads * s.vDim;
  float accK[SP_MAX_DIM_PER_LANE], accV[SP_MAX_DIM_PER_LANE];
#pragma unroll
  for (int u = 0; u < SP_MAX_DIM_PER_LANE; ++u)
    accK[u] = accV[u] = 0.0f;
  for (i64 base = 0; base < count; base += 32) {
    i64 idx = base + lane;
    float p = 0.0f, ds = 0.0f;
    int qi = 0;
    if (idx < count) {
      qi = queries[idx];
      const float *qr = qBase + (i64)qi * qStride;
      const float *dor = doBase + (i64)qi * vStride;
      float dot = 0.0f, dp = 0.0f;
      for (i64 t = 0; t < s.qkDim; ++t)
        dot += qr[t] * ks[t];
      for (i64 t = 0; t < s.vDim; ++t)
        dp += dor[t] * vs[t];
      p = expf(dot * s.scale - lse[bh * s.n + qi]);
      ds = p * (dp - delta[bh * s.n + qi]);
    }
    int valid = (int)(count - base < 32 ? count - base : 32);
    for (int ii = 0; ii < valid; ++ii) {
      float pi = __shfl_sync(0xffffffffu, p, ii);
      float dsi = __shfl_sync(0xffffffffu, ds, ii);
      int q2 = __shfl_sync(0xffffffffu, qi, ii);
      const float *qr = qBase + (i64)q2 * qStride;
      const float *dor = doBase + (i64)q2 * vStride;
#pragma unroll
      for (int u = 0; u < SP_MAX_DIM_PER_LANE; ++u) {
        i64 t = lane + 32 * u;
        if (t < s.qkDim)
          accK[u] += dsi * qr[t];
        if (t < s.vDim)
          accV[u] += pi * dor[t];
      }
    }
  }
  float *dk = dK + spTok(s, b, j, h, s.qkDim);
  float *dv = dV + spTok(s, b, j, h, s.vDim);
#pragma unroll
  for (int u = 0; u < SP_MAX_DIM_PER_LANE; ++u) {
    i64 t = lane + 32 * u;
    if (t < s.qkDim)
      dk[t] = accK[u] * s.scale;
    if (t < s.vDim)
      dv[t] = accV[u];
  }
}

// --- Layout conversions for the tensor-core attention -----------------------
//
// The generated kernels take [batch * heads, n, D] arrays of 16-bit elements
// (D = 32, 64 or 128); the model's projections are token-major fp32 [batch,
// n, heads, dim] with dim <= D (the half-size q/k are zero-padded, which
// leaves every dot product unchanged).

/// 16-bit copies of fp32 GEMM operands (a value beyond the format's range
/// becomes inf, which fp16 loss scaling detects).
extern "C" __global__ void sp_to_half(unsigned short *dst, const float *src,
                                      i64 n, int bf16) {
  SP_GRID_STRIDE(i, n) dst[i] = spToHalf(src[i], bf16);
}

// --- Gradients in 16 bits (the data-parallel all-reduce) --------------------
// The scale is applied in fp32 before rounding (1/world, so that the ranks'
// sum cannot overflow fp16 where each addend fits) and after widening; an
// fp32 gradient beyond fp16's range becomes inf, which the trainer's overflow
// check sees. The CPU backend's toHalfOnHost/fromHalfOnHost are the same.

extern "C" __global__ void sp_scale_to_half(unsigned short *dst,
                                            const float *src, float s, i64 n,
                                            int bf16) {
  SP_GRID_STRIDE(i, n) dst[i] = spToHalf(__fmul_rn(src[i], s), bf16);
}

extern "C" __global__ void sp_scale_from_half(float *dst,
                                              const unsigned short *src,
                                              float s, i64 n, int bf16) {
  SP_GRID_STRIDE(i, n) dst[i] = __fmul_rn(spFromHalf(src[i], bf16), s);
}

/// dst[(b*heads + h), i, t] = t < dim ? src[b, i, h, t] : 0 for rows i in
/// [rowBegin, rowBegin + rows) of sequences of length n (both sides).
// `heads` of the rows' `rowHeads` (src points at the first one's columns):
// the attention runs over groups of heads where the copies of all of them
// would be too large (CudaTensorAttention).
extern "C" __global__ void sp_pack_heads(unsigned short *dst, const float *src,
                                         i64 batch, i64 heads, i64 rowHeads,
                                         i64 n, i64 rowBegin, i64 rows,
                                         i64 dim, i64 D, int bf16) {
  SP_GRID_STRIDE(e, batch * heads * rows * D) {
    i64 t = e % D, r = e / D;
    i64 i = rowBegin + r % rows, bh = r / rows;
    i64 h = bh % heads, b = bh / heads;
    float x = t < dim ? src[((b * n + i) * rowHeads + h) * dim + t] : 0.0f;
    dst[(bh * n + i) * D + t] = spToHalf(x, bf16);
  }
}

/// Decoding: rows [m, n] fp32 to 16-bit rows in an attention op's buffer
/// (Backend.h HalfRows; the row at *position), for the projections that
/// sp_gemv cannot take. Overlaps the kernel that wrote the rows.
extern "C" __global__ void sp_rows_to_half(unsigned short *dst,
                                           const float *rows,
                                           const int *position, i64 m, i64 n,
                                           i64 heads, i64 width, i64 stride,
                                           i64 capacity, int bf16) {
  spAllowNext();
  spWaitPrior();
  const i64 at = position ? *position : 0;
  if (at < 0 || at >= capacity)
    return;
  SP_GRID_STRIDE(e, m * n) {
    const i64 s = e / n, j = e - s * n;
    dst[spHalfRowIndex(s, j, at, heads, width, stride, capacity)] =
        spToHalf(rows[e], bf16);
  }
}

/// Backend::PickOptions / PickTokens.
struct SpPickOptions {
  unsigned long long seed;
  i64 firstSample, topK, promptLength, length;
  double temperature;
};
struct SpPick {
  const float *logits;
  int *ids, *history;
  const int *prompt;
  const SpPickOptions *options;
  i64 batch, historyStride;
};

/// Sampling: sequence blockIdx.x's next token (Backend::pickTokens), the
/// host's pick (Trainer.cpp) step for step: bytes ranked by logit, larger
/// first, ties (and NaN, ranked as -inf) to the smaller byte; the weights
/// exp((logit - max) / temperature) in double, summed in rank order by one
/// thread, and the draw walked in the same order. Block: 256 threads.
extern "C" __global__ void __launch_bounds__(256) sp_pick_tokens(SpPick p) {
  __shared__ float key[256];
  __shared__ int order[256];
  __shared__ double weight[256];
  const SpPickOptions o = *p.options;
  const i64 s = blockIdx.x;
  const int v = threadIdx.x;
  const int t = p.ids[p.batch + s];
  const float z = p.logits[s * 256 + v];
  key[v] = z != z ? spNegInf() : z;
  __syncthreads();
  int rank = 0;
  const float mine = key[v];
  for (int u = 0; u < 256; ++u) {
    const float other = key[u];
    rank += other > mine || (other == mine && u < v);
  }
  order[rank] = v;
  __syncthreads();
  const bool sampled = t >= o.promptLength && o.temperature > 0;
  const int k = o.topK > 0 && o.topK < 256 ? (int)o.topK : 256;
  if (sampled && v < k) {
    const double top = (double)p.logits[s * 256 + order[0]];
    weight[v] = exp(((double)p.logits[s * 256 + order[v]] - top) / o.temperature);
  }
  __syncthreads();
  if (v != 0)
    return;
  int next = order[0];
  if (t < o.promptLength) {
    next = p.prompt[t];
  } else if (sampled) {
    double sum = 0;
    for (int r = 0; r < k; ++r)
      sum += weight[r];
    const unsigned long long h = spSplitmix64(
        spSplitmix64(spSplitmix64(o.seed) ^ (unsigned long long)(o.firstSample + s)) ^
        (unsigned long long)t);
    double u = (double)(h >> 11) * 0x1.0p-53 * sum;
    next = order[k - 1];
    for (int r = 0; r < k; ++r) {
      u -= weight[r];
      if (u < 0) {
        next = order[r];
        break;
      }
    }
  }
  if (t >= 0 && t < o.length)
    p.history[s * p.historyStride + t] = next;
  p.ids[s] = next;
  p.ids[p.batch + s] = t + 1;
}

/// Decoding: row *position of cache [b, n, rowElems] from rows [b, rowElems].
extern "C" __global__ void sp_append_row_at(float *cache, const float *rows,
                                            const int *positionAt, i64 batch,
                                            i64 n, i64 rowElems) {
  const i64 position = *positionAt;
  if (position < 0 || position >= n)
    return;
  SP_GRID_STRIDE(e, batch * rowElems) {
    i64 b = e / rowElems, t = e % rowElems;
    cache[(b * n + position) * rowElems + t] = rows[e];
  }
}

/// dst[b, i, h, t] = src[(b*heads + h), i, t] for t < dim (overwrites).
// Into `heads` of the rows' `rowHeads` (dst points at the first one's
// columns), as sp_pack_heads.
extern "C" __global__ void sp_unpack_heads(float *dst,
                                           const unsigned short *src,
                                           i64 batch, i64 heads, i64 rowHeads,
                                           i64 n, i64 dim, i64 D, int bf16) {
  SP_GRID_STRIDE(e, batch * n * heads * dim) {
    i64 t = e % dim, r = e / dim;
    i64 h = r % heads, bi = r / heads;
    i64 i = bi % n, b = bi / n;
    dst[((b * n + i) * rowHeads + h) * dim + t] =
        spFromHalf(src[((b * heads + h) * n + i) * D + t], bf16);
  }
}
