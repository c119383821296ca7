//===- common.cuh - device helpers shared by the sparsetx kernels -*- CUDA -*-===//
//
// Compiled by NVRTC with no include path: nothing from the toolkit or the C++
// library is included. Elements travel as 16-bit words and are converted with
// PTX `cvt` instructions, so the same source serves bf16 and fp16 and needs
// neither cuda_bf16.h nor cuda_fp16.h. Everything here needs sm_80 or newer
// (cp.async, ldmatrix, bf16 mma).
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_KERNELS_COMMON_CUH
#define SPARSETX_KERNELS_COMMON_CUH

namespace sparsetx {

typedef int int32_t;
typedef unsigned uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
typedef unsigned short uint16_t;

/// Element types of Q, K, V and O: storage is a 16-bit word either way.
struct BF16 {
  static constexpr bool kIsBF16 = true;
};
struct FP16 {
  static constexpr bool kIsBF16 = false;
};

// --- Programmatic dependent launch (sm_90 and later) ----------------------
// A kernel launched to overlap its predecessor in the stream
// (cuda::launch with overlap = true) may start before that one ends: it waits here
// before it touches anything an earlier kernel writes or reads. Without
// that launch attribute, or before sm_90, both are no-ops.

__device__ __forceinline__ void waitForPriorGrids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
/// Lets the stream's next overlapping kernel start (it waits itself).
__device__ __forceinline__ void allowDependentGrids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// --- .sp integer semantics (include/sparsetx/Support/IntMath.h) -----------
// 64-bit two's-complement arithmetic that wraps, floor division and floor
// modulo by positive divisors. The generated mask predicates call these.

__device__ __forceinline__ int64_t spAdd(int64_t a, int64_t b) {
  return (int64_t)((uint64_t)a + (uint64_t)b);
}
__device__ __forceinline__ int64_t spSub(int64_t a, int64_t b) {
  return (int64_t)((uint64_t)a - (uint64_t)b);
}
__device__ __forceinline__ int64_t spMul(int64_t a, int64_t b) {
  return (int64_t)((uint64_t)a * (uint64_t)b);
}
__device__ __forceinline__ int64_t spFloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b) < 0)
    --q;
  return q;
}
__device__ __forceinline__ int64_t spFloorMod(int64_t a, int64_t b) {
  int64_t r = a % b;
  if (r < 0)
    r += b;
  return r;
}
__device__ __forceinline__ int64_t spCeilDiv(int64_t a, int64_t b) {
  return -spFloorDiv(-a, b);
}
__device__ __forceinline__ int64_t spMin(int64_t a, int64_t b) {
  return a < b ? a : b;
}
__device__ __forceinline__ int64_t spMax(int64_t a, int64_t b) {
  return a < b ? b : a;
}
__device__ __forceinline__ int64_t spAbs(int64_t a) {
  return a < 0 ? (int64_t)(0ull - (uint64_t)a) : a;
}

// --- Numerics ---------------------------------------------------------------

__device__ __forceinline__ float negInf() { return __int_as_float(0xff800000); }

/// 2^x; ex2.approx is exact enough for softmax weights (rel. error ~2^-22)
/// and maps -inf to +0, which masked scores rely on.
__device__ __forceinline__ float fastExp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float fastLog2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

/// Two floats to a packed pair of 16-bit elements (lo in the low half), round
/// to nearest even.
template <typename Elem>
__device__ __forceinline__ uint32_t packPair(float lo, float hi) {
  uint32_t r;
  if (Elem::kIsBF16)
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  else
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

/// One 16-bit element to float.
template <typename Elem>
__device__ __forceinline__ float toFloat(uint16_t x) {
  if (Elem::kIsBF16)
    return __uint_as_float((uint32_t)x << 16);
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
  return f;
}

/// One float to a 16-bit element.
template <typename Elem>
__device__ __forceinline__ uint16_t fromFloat(float x) {
  return (uint16_t)(packPair<Elem>(x, 0.0f) & 0xffffu);
}

// --- Tensor cores and asynchronous copies ------------------------------------

/// D = A * B + D, m16n8k16, fp32 accumulation.
template <typename Elem>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4],
                                         uint32_t b0, uint32_t b1) {
  if (Elem::kIsBF16)
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/// Sets every element of a register array (an accumulator) to 0.
template <int N>
__device__ __forceinline__ void zeroFill(float (&a)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
    a[i] = 0.0f;
}
template <int N, int M>
__device__ __forceinline__ void zeroFill(float (&a)[N][M]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
    zeroFill(a[i]);
}

__device__ __forceinline__ uint32_t smemAddress(const void *p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void ldmatrixX4Trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile(
      "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
      : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
      : "r"(addr));
}

/// 16 bytes global -> shared, bypassing L1; `valid == false` zero-fills the
/// destination without reading (src must still be a legal address).
__device__ __forceinline__ void cpAsync16(uint32_t dst, const void *src,
                                          bool valid) {
  int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst),
               "l"(src), "r"(bytes));
}
/// 4 bytes global -> shared (through L1); `valid == false` zero-fills.
__device__ __forceinline__ void cpAsync4(uint32_t dst, const void *src,
                                         bool valid) {
  int bytes = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst),
               "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int N>
__device__ __forceinline__ void cpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/// *p += a, p[1] += b in global memory, without a result (fp32 `red`):
/// one vector reduction on sm_90, two scalar ones before. The order in which
/// concurrent reductions land is not fixed, so sums of several are not
/// bit-reproducible.
__device__ __forceinline__ void redAddF32x2(float *p, float a, float b) {
#if __CUDA_ARCH__ >= 900
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(p), "f"(a),
               "f"(b)
               : "memory");
#else
  asm volatile("red.global.add.f32 [%0], %1;\n" ::"l"(p), "f"(a) : "memory");
  asm volatile("red.global.add.f32 [%0], %1;\n" ::"l"(p + 1), "f"(b)
               : "memory");
#endif
}

} // namespace sparsetx

#endif // SPARSETX_KERNELS_COMMON_CUH
