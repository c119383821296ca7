//===- attention_merge.cuh - log-sum-exp merge of kernel outputs -*- CUDA -*-===//
//
// A mask whose components need different query maps runs one forward kernel
// per map; each writes a normalized partial output O_k (fp32) and its LSE_k
// at the positions its query map covers. The merge is exact:
//   m = max_k LSE_k,  w_k = exp(LSE_k - m),  O = sum_k w_k O_k / sum_k w_k,
//   LSE = m + log(sum_k w_k).
// A position a kernel's query map does not cover (a gather keeps only some
// residues) counts as LSE_k = -inf without reading the buffer, so the partial
// buffers need no pre-fill. Memory-bound: one warp per row, coalesced.
//
// Variant (generated): using Elem; kHeadDim; kSeqLen; kNumKernels; kNumHeads,
// kHead (as in the forward kernel); covers(k, p).
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_KERNELS_ATTENTION_MERGE_CUH
#define SPARSETX_KERNELS_ATTENTION_MERGE_CUH

#include "sparsetx/common.cuh"

namespace sparsetx {

constexpr int kMergeRowsPerBlock = 4; // one warp per row, 128 threads

/// Grid: (ceil(n / kMergeRowsPerBlock), batch-heads / kNumHeads); block: 128.
/// oParts: [kNumKernels][batchHeads][n][D] fp32; lseParts: [kNumKernels]
/// [batchHeads][n]; batchHeads = gridDim.y * kNumHeads.
template <typename M>
__device__ __forceinline__ void
attentionMerge(const float *__restrict__ oParts, const float *__restrict__ lseParts,
               uint16_t *__restrict__ o, float *__restrict__ lse) {
  using Elem = typename M::Elem;
  constexpr int D = M::kHeadDim;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t p = (int64_t)blockIdx.x * kMergeRowsPerBlock + warp;
  if (p >= M::kSeqLen)
    return;
  const int64_t batchHeads = (int64_t)gridDim.y * M::kNumHeads;
  const int64_t bh = (int64_t)blockIdx.y * M::kNumHeads + M::kHead;
  const int64_t row = bh * M::kSeqLen + p;
  const int64_t lseStride = batchHeads * M::kSeqLen;
  const int64_t oStride = lseStride * D;

  float part[M::kNumKernels];
  float m = negInf();
#pragma unroll
  for (int kIdx = 0; kIdx < M::kNumKernels; ++kIdx) {
    part[kIdx] = M::covers(kIdx, p) ? lseParts[kIdx * lseStride + row] : negInf();
    m = fmaxf(m, part[kIdx]);
  }
  float weight[M::kNumKernels];
  float sum = 0.0f;
  const float base = m == negInf() ? 0.0f : m;
#pragma unroll
  for (int kIdx = 0; kIdx < M::kNumKernels; ++kIdx) {
    weight[kIdx] = fastExp2((part[kIdx] - base) * 1.4426950408889634f);
    sum += weight[kIdx];
  }
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  for (int d = lane; d < D; d += 32) {
    float acc = 0.0f;
#pragma unroll
    for (int kIdx = 0; kIdx < M::kNumKernels; ++kIdx)
      if (weight[kIdx] > 0.0f)
        acc += weight[kIdx] * oParts[kIdx * oStride + row * D + d];
    o[row * D + d] = fromFloat<Elem>(acc * inv);
  }
  if (lane == 0)
    lse[row] = sum > 0.0f ? m + fastLog2(sum) * 0.6931471805599453f : negInf();
}

} // namespace sparsetx

#endif // SPARSETX_KERNELS_ATTENTION_MERGE_CUH
