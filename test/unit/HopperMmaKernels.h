//===- HopperMmaKernels.h - test kernels for hopper.cuh ---------*- C++ -*-===//
//
// The CUDA source of the kernels that exercise codegen/kernels/hopper.cuh,
// shared by test/unit/HopperMmaCompileTest.cpp (NVRTC + ptxas, no GPU) and
// test/gpu/HopperMmaTest.cpp (runs them on sm_90 and later).
//
// Each kernel is one CTA of one warpgroup (128 threads) and works on 64x64
// tiles of 16-bit elements, row-major with 64 elements per row in global
// memory. It needs kHopperMmaSharedBytes of dynamic shared memory.
// Parameters: (const uint16_t *a, const uint16_t *b, const uint16_t *c,
// float *s, float *o).
//
//   hopper_ss_<t>:    s = a b^T          a = Q, b = K; A and B from swizzled
//                                        shared memory (descriptors)
//   hopper_rs_<t>:    s = a b^T          the same, A from registers loaded
//                                        with ldmatrix from the swizzled tile
//   hopper_pv_<t>:    o = a c            a = P loaded from global memory
//                                        straight into A registers; c = V
//                                        [keys][D], MN-major (imm-trans-b 1)
//   hopper_fused_<t>: s = a b^T, o = round16(s) c
//                                        the FlashAttention-3 chain: S's
//                                        accumulators become P's A registers
//   hopper_tt_<t>:    s = a^T c          a stored [K][M] (MN-major A,
//                                        imm-trans-a 1), c [K][N] (MN-major
//                                        B): the backward's dQ = dS K with
//                                        dS^T [keys][queries] in shared memory
// with <t> = bf16 or fp16.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_TEST_HOPPERMMAKERNELS_H
#define SPARSETX_TEST_HOPPERMMAKERNELS_H

#include <cstddef>

namespace sparsetx::test {

/// Three 8 KiB tiles plus the slack to align the first to 1024 bytes.
constexpr size_t kHopperMmaSharedBytes = 3 * 64 * 128 + 1024;

constexpr const char *kHopperMmaKernelNames[] = {
    "hopper_ss_bf16", "hopper_rs_bf16", "hopper_pv_bf16", "hopper_fused_bf16",
    "hopper_tt_bf16", "hopper_ss_fp16", "hopper_rs_fp16", "hopper_pv_fp16",
    "hopper_fused_fp16", "hopper_tt_fp16",
};

constexpr const char *kHopperMmaKernelSource = R"cuda(
#include "sparsetx/hopper.cuh"

using namespace sparsetx;

namespace {

enum Mode { kSS, kRS, kPV, kFused, kTT };
constexpr int kThreads = 128;
constexpr uint32_t kTileBytes = sw128TileBytes(64);

/// Stores a 64x64 f32 accumulator to row-major global memory through the
/// documented fragment layout (what the GPU test checks).
__device__ __forceinline__ void storeAcc(float *out, const float (&d)[32]) {
  int t = threadIdx.x;
#pragma unroll
  for (int i = 0; i < 32; ++i)
    out[wgmmaAccRow(t, i) * 64 + wgmmaAccCol(t, i)] = d[i];
}

/// S = Q K^T over the 64 columns of D, four k16 steps; A from shared memory
/// or from the A registers `q` (kFromRegisters).
template <typename Elem, bool kFromRegisters>
__device__ __forceinline__ void qkT(float (&s)[32], uint32_t qTile,
                                    uint32_t kTile, const uint32_t (&q)[4][4]) {
  uint64_t descQ = wgmmaDescSw128KMajor(qTile);
  uint64_t descK = wgmmaDescSw128KMajor(kTile);
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) {
    uint64_t b = wgmmaDescAdvance(descK, ks * kWgmmaKStepBytesKMajor);
    if constexpr (kFromRegisters)
      wgmmaM64N64K16RS<Elem, 0>(s, q[ks], b, ks > 0);
    else
      wgmmaM64N64K16SS<Elem, 0>(
          s, wgmmaDescAdvance(descQ, ks * kWgmmaKStepBytesKMajor), b, ks > 0);
  }
}

/// O = P V over the 64 keys, four k16 steps, P from the A registers `p`.
template <typename Elem>
__device__ __forceinline__ void pv(float (&o)[32], const uint32_t (&p)[4][4],
                                   uint32_t vTile) {
  uint64_t descV = wgmmaDescSw128MNMajor<64>(vTile);
#pragma unroll
  for (int ks = 0; ks < 4; ++ks)
    wgmmaM64N64K16RS<Elem, 1>(
        o, p[ks], wgmmaDescAdvance(descV, ks * kWgmmaKStepBytesMNMajor),
        ks > 0);
}

/// S = A^T C with A and C both stored [K][64] (MN-major), four k16 steps.
template <typename Elem>
__device__ __forceinline__ void tt(float (&s)[32], uint32_t aTile,
                                   uint32_t cTile) {
  uint64_t descA = wgmmaDescSw128MNMajor<64>(aTile);
  uint64_t descC = wgmmaDescSw128MNMajor<64>(cTile);
#pragma unroll
  for (int ks = 0; ks < 4; ++ks)
    wgmmaM64N64K16SS<Elem, 1, 1>(
        s, wgmmaDescAdvance(descA, ks * kWgmmaKStepBytesMNMajor),
        wgmmaDescAdvance(descC, ks * kWgmmaKStepBytesMNMajor), ks > 0);
}

template <typename Elem, Mode kMode>
__device__ __forceinline__ void run(const uint16_t *a, const uint16_t *b,
                                    const uint16_t *c, float *sOut,
                                    float *oOut) {
  extern __shared__ unsigned char smem[];
  int t = threadIdx.x;
  uint32_t aTile = sw128AlignUp(smemAddress(smem));
  uint32_t bTile = aTile + kTileBytes, cTile = bTile + kTileBytes;

  // Global -> swizzled shared memory; wgmma reads through the async proxy,
  // so each thread fences its completed copies before the barrier.
  if constexpr (kMode != kPV)
    sw128LoadTileAsync<64, kThreads>(aTile, a, 64, t);
  if constexpr (kMode != kPV && kMode != kTT)
    sw128LoadTileAsync<64, kThreads>(bTile, b, 64, t);
  if constexpr (kMode == kPV || kMode == kFused || kMode == kTT)
    sw128LoadTileAsync<64, kThreads>(cTile, c, 64, t);
  cpAsyncCommit();
  cpAsyncWait<0>();
  fenceProxyAsyncShared();
  __syncthreads();

  // A registers: ldmatrix from the swizzled Q tile (kRS) or plain loads of P
  // at the coordinates the fragment layout documents (kPV).
  uint32_t frag[4][4] = {};
  if constexpr (kMode == kRS) {
#pragma unroll
    for (int ks = 0; ks < 4; ++ks)
      wgmmaLoadAFromSw128(aTile, ks, frag[ks]);
  }
  if constexpr (kMode == kPV) {
#pragma unroll
    for (int ks = 0; ks < 4; ++ks)
#pragma unroll
      for (int r = 0; r < 4; ++r)
        frag[ks][r] = *reinterpret_cast<const uint32_t *>(
            a + wgmmaARow(t, 2 * r) * 64 + 16 * ks + wgmmaACol(t, 2 * r));
  }

  // NaN-filled accumulators: the first k-step's scale-d = false must ignore
  // them, or the outputs come out NaN.
  float acc[32];
#pragma unroll
  for (int i = 0; i < 32; ++i)
    acc[i] = __int_as_float(0x7fffffff);

  wgmmaFenceOperand(acc);
  wgmmaFenceOperand(frag[0]);
  wgmmaFenceOperand(frag[1]);
  wgmmaFenceOperand(frag[2]);
  wgmmaFenceOperand(frag[3]);
  wgmmaFence();
  if constexpr (kMode == kPV)
    pv<Elem>(acc, frag, cTile);
  else if constexpr (kMode == kTT)
    tt<Elem>(acc, aTile, cTile);
  else
    qkT<Elem, kMode == kRS>(acc, aTile, bTile, frag);
  wgmmaCommit();
  wgmmaWait<0>();
  wgmmaFenceOperand(acc);

  if constexpr (kMode == kPV)
    storeAcc(oOut, acc);
  else
    storeAcc(sOut, acc);

  if constexpr (kMode == kFused) {
    // P = S rounded to 16 bits, straight from the accumulators into A
    // registers, then O = P V.
    uint32_t p[4][4];
#pragma unroll
    for (int ks = 0; ks < 4; ++ks)
      wgmmaAccToA<Elem>(acc, ks, p[ks]);
    float o[32];
#pragma unroll
    for (int i = 0; i < 32; ++i)
      o[i] = __int_as_float(0x7fffffff);
    wgmmaFenceOperand(o);
    wgmmaFenceOperand(p[0]);
    wgmmaFenceOperand(p[1]);
    wgmmaFenceOperand(p[2]);
    wgmmaFenceOperand(p[3]);
    wgmmaFence();
    pv<Elem>(o, p, cTile);
    wgmmaCommit();
    wgmmaWait<0>();
    wgmmaFenceOperand(o);
    storeAcc(oOut, o);
  }
}

} // namespace

#define SPARSETX_HOPPER_TEST_KERNEL(name, Elem, mode)                          \
  extern "C" __global__ void __launch_bounds__(kThreads)                       \
      name(const uint16_t *a, const uint16_t *b, const uint16_t *c,            \
           float *s, float *o) {                                               \
    run<Elem, mode>(a, b, c, s, o);                                            \
  }
SPARSETX_HOPPER_TEST_KERNEL(hopper_ss_bf16, BF16, kSS)
SPARSETX_HOPPER_TEST_KERNEL(hopper_rs_bf16, BF16, kRS)
SPARSETX_HOPPER_TEST_KERNEL(hopper_pv_bf16, BF16, kPV)
SPARSETX_HOPPER_TEST_KERNEL(hopper_fused_bf16, BF16, kFused)
SPARSETX_HOPPER_TEST_KERNEL(hopper_tt_bf16, BF16, kTT)
SPARSETX_HOPPER_TEST_KERNEL(hopper_ss_fp16, FP16, kSS)
SPARSETX_HOPPER_TEST_KERNEL(hopper_rs_fp16, FP16, kRS)
SPARSETX_HOPPER_TEST_KERNEL(hopper_pv_fp16, FP16, kPV)
SPARSETX_HOPPER_TEST_KERNEL(hopper_fused_fp16, FP16, kFused)
SPARSETX_HOPPER_TEST_KERNEL(hopper_tt_fp16, FP16, kTT)
)cuda";

} // namespace sparsetx::test

#endif // SPARSETX_TEST_HOPPERMMAKERNELS_H
