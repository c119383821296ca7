//===- model_math.cuh - helpers shared by the model's kernels -*- CUDA -*-===//
//
// Included by model_ops.cuh (the backend's kernels) and decode_step.cuh (the
// persistent sampling step), so that both compute the same formulas.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_MODEL_MATH_CUH
#define SPARSETX_MODEL_MATH_CUH

typedef long long i64;
typedef unsigned long long u64;

#define SP_GRID_STRIDE(i, n)                                                   \
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n);            \
       i += (i64)gridDim.x * blockDim.x)

__device__ __forceinline__ float spWarpSum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ float spWarpMax(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float spNegInf() { return __int_as_float(0xff800000); }

__device__ __forceinline__ float spSigmoid(float z) {
  return 1.0f / (1.0f + expf(-z));
}

/// A layer norm's statistics of one row of c values, by one warp (every lane
/// gets them): the mean, then the mean squared deviation (two passes).
__device__ __forceinline__ void spRowStatistics(const float *x, i64 c,
                                                float eps, float &mu,
                                                float &rstd) {
  const int lane = threadIdx.x & 31;
  float sum = 0.0f;
  for (i64 j = lane; j < c; j += 32)
    sum += x[j];
  mu = spWarpSum(sum) / (float)c;
  float var = 0.0f;
  for (i64 j = lane; j < c; j += 32) {
    float d = x[j] - mu;
    var += d * d;
  }
  var = spWarpSum(var) / (float)c;
  rstd = rsqrtf(var + eps);
}

/// Programmatic dependent launch (sm_90 and later; no-ops before, and in a
/// kernel launched without the attribute): a kernel launched to overlap its
/// predecessor (cuda::launch with overlap = true) calls spWaitPrior() before it reads
/// anything an earlier kernel writes or writes anything one reads, and
/// spAllowNext() to let the next such kernel start.
__device__ __forceinline__ void spWaitPrior() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void spAllowNext() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ unsigned short spToHalf(float x, int bf16) {
  unsigned short r;
  if (bf16)
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
  else
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ float spFromHalf(unsigned short x, int bf16) {
  if (bf16)
    return __uint_as_float((unsigned)x << 16);
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
  return f;
}

#endif // SPARSETX_MODEL_MATH_CUH
