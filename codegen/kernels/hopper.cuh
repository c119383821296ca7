//===- hopper.cuh - wgmma building blocks for sm_90a --------------*- CUDA -*-===//
//
// The pieces a FlashAttention-3 style kernel is made of, tested on their own
// (test/gpu/HopperMmaTest.cpp) before any generated kernel uses them:
//
//   - the 128-byte swizzled shared-memory tile of 16-bit elements whose rows
//     are 64 elements (128 bytes) long, filled with cp.async;
//   - the wgmma matrix descriptor of such a tile, K-major (Q, K for S = Q K^T)
//     and MN-major (V stored [keys][D] for O = P V), and its advance along K;
//   - wgmma.mma_async m64n64k16 with fp32 accumulators, A from shared memory
//     or from registers, and the fences around it;
//   - the accumulator and A-register fragment layouts, and the accumulator ->
//     A-fragment conversion that feeds P = softmax(S) to P V from registers.
//
// PTX ISA references are to "9.7.15 Asynchronous Warpgroup Level Matrix
// Multiply-Accumulate Instructions" (PTX ISA 8.x/9.x), written "ISA" below.
//
// The layout and descriptor functions are plain integer arithmetic and
// compile for any architecture. Everything that emits wgmma or
// fence.proxy.async exists only where the compiler targets sm_90a (the "a"
// feature set: wgmma is not part of sm_90, and sm_100 dropped it), so this
// header may be included by kernels compiled for sm_80; using a wgmma helper
// there is a compile error, not a bad PTX.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_KERNELS_HOPPER_CUH
#define SPARSETX_KERNELS_HOPPER_CUH

#include "sparsetx/common.cuh"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 &&                          \
    defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SPARSETX_HAS_WGMMA 1
#else
#define SPARSETX_HAS_WGMMA 0
#endif

namespace sparsetx {

// --- The 128-byte swizzled tile ----------------------------------------------
// A tile is kRows rows of 64 16-bit elements; row r occupies bytes
// [128 r, 128 r + 128) and holds its eight 16-byte chunks (8 elements each) in
// swizzled order: chunk c of row r is stored at chunk slot c ^ (r % 8). Eight
// rows (1024 bytes) form one swizzle atom. This is the layout the hardware
// calls "128B swizzling" (ISA "Shared Memory Matrix Layout", CuTe
// Swizzle<3,4,3> on byte addresses: address bits [4,7) ^= bits [7,10)), and it
// is the same for K-major and MN-major operands: only the descriptor says
// which dimension runs along the 128-byte rows.
//
// The hardware applies the XOR to address bits, not to offsets within the
// tile, so a tile must start on a 1024-byte boundary for the offsets below to
// agree with it (ISA "Matrix Descriptor Format": the base offset field is 0
// exactly when the repeating pattern starts on a 1024-byte boundary; we never
// set it). The swizzle also makes ldmatrix / cp.async of 8 consecutive rows'
// same chunk hit 8 different bank groups.

constexpr uint32_t kSw128RowBytes = 128;
constexpr uint32_t kSw128AtomBytes = 1024;
/// Every tile starts on this boundary.
constexpr uint32_t kSw128TileAlign = 1024;

/// Byte offset, within a tile, of the 16-byte chunk `chunk` (0..7, elements
/// 8 chunk .. 8 chunk + 7) of row `row`.
__host__ __device__ constexpr uint32_t sw128Offset(uint32_t row,
                                                   uint32_t chunk) {
  return row * kSw128RowBytes + ((chunk ^ (row & 7u)) << 4);
}

/// Byte offset of the 16-bit element (row, col), col in 0..63.
__host__ __device__ constexpr uint32_t sw128ElementOffset(uint32_t row,
                                                          uint32_t col) {
  return sw128Offset(row, col >> 3) + ((col & 7u) << 1);
}

/// Bytes of a [rows][64] tile of 16-bit elements.
__host__ __device__ constexpr uint32_t sw128TileBytes(uint32_t rows) {
  return rows * kSw128RowBytes;
}

/// The shared address rounded up to the next tile boundary (the dynamic
/// shared window is only guaranteed 16-byte alignment: reserve 1 KiB more).
__device__ __forceinline__ uint32_t sw128AlignUp(uint32_t smemAddr) {
  return (smemAddr + kSw128TileAlign - 1) & ~(kSw128TileAlign - 1);
}

namespace hopper_detail {
/// True when sw128Offset maps one atom's 64 chunks one-to-one onto its 1024
/// bytes (checked at compile time below).
constexpr bool sw128AtomIsPermutation() {
  bool seen[64] = {};
  for (uint32_t row = 0; row < 8; ++row)
    for (uint32_t chunk = 0; chunk < 8; ++chunk) {
      uint32_t offset = sw128Offset(row, chunk);
      if (offset >= kSw128AtomBytes || (offset & 15u) || seen[offset >> 4])
        return false;
      seen[offset >> 4] = true;
    }
  return true;
}
} // namespace hopper_detail
static_assert(hopper_detail::sw128AtomIsPermutation(),
              "the 128B swizzle must permute the chunks of an atom");
// Row 1's chunk 0 sits in slot 1, row 7's chunk 2 in slot 5 (2 ^ 7).
static_assert(sw128Offset(1, 0) == 128 + 16 && sw128Offset(7, 2) == 7 * 128 + 80,
              "128B swizzle: chunk slot = chunk ^ (row % 8)");
static_assert(sw128Offset(9, 3) == 9 * 128 + ((3 ^ 1) << 4),
              "the pattern repeats every 8 rows");

/// Issues the cp.async copies of a [kRows][64] tile of 16-bit elements from
/// global memory (row stride `ld` elements, 16-byte aligned rows) into the
/// swizzled tile at shared address `tile`; the kThreads threads of the
/// caller (tid in [0, kThreads)) share the kRows * 8 chunks. The caller
/// commits, waits, and (before wgmma reads the tile) calls
/// fenceProxyAsyncShared() and synchronizes.
template <int kRows, int kThreads>
__device__ __forceinline__ void sw128LoadTileAsync(uint32_t tile,
                                                   const uint16_t *src,
                                                   int64_t ld, int tid) {
  static_assert((kRows * 8) % kThreads == 0, "whole chunks per thread");
#pragma unroll
  for (int j = 0; j < kRows * 8 / kThreads; ++j) {
    int i = tid + j * kThreads;
    int row = i >> 3, chunk = i & 7;
    cpAsync16(tile + sw128Offset(row, chunk), src + row * ld + chunk * 8,
              true);
  }
}

// --- The wgmma matrix descriptor ---------------------------------------------
// 64 bits (ISA "Matrix Descriptor Format"):
//   bits  0-13  start address        (addr & 0x3FFFF) >> 4
//   bits 16-29  leading byte offset  (LBO) >> 4
//   bits 32-45  stride byte offset   (SBO) >> 4
//   bits 49-51  base offset          0: our tiles start on 1024-byte
//                                    boundaries, where the 128B pattern
//                                    repeats
//   bits 62-63  swizzle mode         1 = 128-byte swizzle
//
// What LBO and SBO mean depends on the major-ness (ISA "Leading/Stride
// Dimension Byte Offset", "Canonical Layouts", in 16-byte units T):
//
//   K-major, 128B:  ((8,m),(T,2k)) : ((8T,SBO),(1,T))
//     rows (M or N) are the 128-byte rows; 8 rows at 128 bytes, then the next
//     8-row group at SBO = 1024 bytes. LBO is "not used, assumed to be 1" for
//     swizzled K-major layouts; we encode 1 as CUTLASS does.
//     One k16 step covers 32 bytes of each row.
//
//   MN-major, 128B: ((T,8,m),(8,k)) : ((1,T,LBO),(8T,SBO))
//     the 128-byte rows run along M or N (64 elements), rows are K indices:
//     8 K-rows at 128 bytes, then the next 8 at SBO = 1024 bytes; LBO is the
//     step to the next 64 columns of M or N. For n64 there is no next block,
//     so LBO is unused; we point it at where a second [kRows][64] tile
//     (columns 64..127) would follow.
//     One k16 step covers 16 rows = 2 atoms = 2048 bytes.
//
// Advancing along K: the descriptor's start address moves and everything else
// stays. The hardware swizzles absolute address bits, so a start address 32
// bytes into a 1024-aligned K-major tile addresses the chunks (2 ks, 2 ks + 1)
// of every row exactly as sw128Offset stores them (this is what CUTLASS's
// descriptor iterator and FlashAttention-3 do); the base offset stays 0
// because the pattern still starts at the 1024-aligned tile.

constexpr uint64_t kWgmmaSwizzle128B = 1ull << 62;

__host__ __device__ constexpr uint64_t wgmmaDescEncode(uint32_t bytes) {
  return (uint64_t)((bytes & 0x3FFFFu) >> 4);
}

/// A 128B-swizzled descriptor with explicit byte offsets.
__host__ __device__ constexpr uint64_t wgmmaDescSw128(uint32_t startAddr,
                                                     uint32_t lboBytes,
                                                     uint32_t sboBytes) {
  return wgmmaDescEncode(startAddr) | (wgmmaDescEncode(lboBytes) << 16) |
         (wgmmaDescEncode(sboBytes) << 32) | kWgmmaSwizzle128B;
}

/// The descriptor of a K-major [rows][64] tile at shared address `tile`
/// (1024-aligned): A = Q [queries][D], or B = K [keys][D] with imm-trans-b 0.
__host__ __device__ constexpr uint64_t wgmmaDescSw128KMajor(uint32_t tile) {
  return wgmmaDescSw128(tile, /*lboBytes=*/16, /*sboBytes=*/kSw128AtomBytes);
}

/// The descriptor of an MN-major [kRows][64] tile (rows are K): B = V
/// [keys][D] with imm-trans-b 1.
template <int kRows>
__host__ __device__ constexpr uint64_t wgmmaDescSw128MNMajor(uint32_t tile) {
  return wgmmaDescSw128(tile, /*lboBytes=*/sw128TileBytes(kRows),
                        /*sboBytes=*/kSw128AtomBytes);
}

/// Start-address bytes of one k16 step.
constexpr uint32_t kWgmmaKStepBytesKMajor = 16 * 2;
constexpr uint32_t kWgmmaKStepBytesMNMajor = 16 * kSw128RowBytes;

/// The descriptor `bytes` further along K (a multiple of 16; keeps the
/// address inside the tile so the 14-bit field cannot carry).
__host__ __device__ constexpr uint64_t wgmmaDescAdvance(uint64_t desc,
                                                       uint32_t bytes) {
  return desc + (bytes >> 4);
}

// The encodings the tests and docs/kernels.md rely on.
static_assert(wgmmaDescSw128KMajor(0x400) ==
                  ((1ull << 62) | (64ull << 32) | (1ull << 16) | 0x40),
              "K-major: SBO 1024 (64), LBO 1 (assumed), 128B swizzle");
static_assert(wgmmaDescSw128MNMajor<64>(0x2000) ==
                  ((1ull << 62) | (64ull << 32) | (512ull << 16) | 0x200),
              "MN-major: SBO 1024 (64), LBO 8192 (512), 128B swizzle");
static_assert(wgmmaDescAdvance(wgmmaDescSw128KMajor(0x400),
                               3 * kWgmmaKStepBytesKMajor) ==
                  wgmmaDescSw128KMajor(0x400) + 6,
              "K-major k16 step: +2 in the start-address field");
static_assert(wgmmaDescAdvance(wgmmaDescSw128MNMajor<64>(0x2000),
                               kWgmmaKStepBytesMNMajor) ==
                  wgmmaDescSw128MNMajor<64>(0x2000) + 128,
              "MN-major k16 step: 16 rows, +128 in the start-address field");
static_assert(wgmmaDescEncode(0x40000) == 0, "the address field wraps at 256K");

// --- Fragment layouts ----------------------------------------------------------
// Thread t of the warpgroup (t = threadIdx.x % 128), warp w = t / 32,
// lane l = t % 32, g = l / 4, q = l % 4.
//
// Accumulator D of m64nNk16, f32 (ISA Figure "WGMMA .m64nNk16 register
// fragment layout for accumulator matrix D"; CuTe CLayout_64xN =
// ((4,8,4),(2,2,N/8)) : ((128,1,16),(64,8,512)) over the column-major 64xN
// tile): N/2 floats per thread; warp w owns rows 16w .. 16w + 15 and, within
// the warp, each 8-column group j is an mma.sync m16n8 C fragment:
//   d[4j + 0], d[4j + 1]: row 16w + g,     columns 8j + 2q, 8j + 2q + 1
//   d[4j + 2], d[4j + 3]: row 16w + g + 8, the same columns
//
// A in registers, m64nNk16, 16-bit (ISA Figure "WGMMA .m64nNk16 register
// fragment layout for matrix A"; CuTe ALayout_64x16 =
// ((4,8,4),(2,2,2)) : ((128,1,16),(64,8,512))): four 32-bit registers of two
// elements each (low half first), the mma.sync m16n8k16 A fragment of the
// warp's 16 rows:
//   a[0]: row 16w + g,     columns 2q, 2q + 1
//   a[1]: row 16w + g + 8, columns 2q, 2q + 1
//   a[2]: row 16w + g,     columns 2q + 8, 2q + 9
//   a[3]: row 16w + g + 8, columns 2q + 8, 2q + 9
//
// The two agree: the accumulator values d[8s .. 8s + 7] are the A fragment
// of columns 16s .. 16s + 15, register for register (wgmmaAccToA).

/// Row of accumulator value i (0 .. N/2 - 1) held by warpgroup thread t.
__host__ __device__ constexpr int wgmmaAccRow(int t, int i) {
  return 16 * (t / 32) + (t % 32) / 4 + 8 * ((i >> 1) & 1);
}
/// Column of accumulator value i held by warpgroup thread t.
__host__ __device__ constexpr int wgmmaAccCol(int t, int i) {
  return 8 * (i >> 2) + 2 * (t % 4) + (i & 1);
}
/// Row of A element e (0..7: register e / 2, low half when e is even) of a
/// 64x16 k-slice held by warpgroup thread t.
__host__ __device__ constexpr int wgmmaARow(int t, int e) {
  return 16 * (t / 32) + (t % 32) / 4 + 8 * ((e >> 1) & 1);
}
/// Column (0..15, within the k-slice) of A element e held by thread t.
__host__ __device__ constexpr int wgmmaACol(int t, int e) {
  return 2 * (t % 4) + (e & 1) + 8 * (e >> 2);
}
static_assert(wgmmaAccRow(37, 2) == 16 + 1 + 8 && wgmmaAccCol(37, 5) == 8 + 2 + 1,
              "thread 37 = warp 1, g 1, q 1");
static_assert(wgmmaARow(127, 7) == 48 + 7 + 8 && wgmmaACol(127, 7) == 6 + 1 + 8,
              "thread 127 = warp 3, g 7, q 3");

/// The A fragment (k-slice s: columns 16s .. 16s + 15) of a 64xN f32
/// accumulator, rounded to Elem: P's registers for P V, no data movement.
template <typename Elem, int kCount>
__device__ __forceinline__ void wgmmaAccToA(const float (&d)[kCount], int s,
                                            uint32_t (&a)[4]) {
#pragma unroll
  for (int r = 0; r < 4; ++r)
    a[r] = packPair<Elem>(d[8 * s + 2 * r], d[8 * s + 2 * r + 1]);
}

/// The A fragment of k-slice s (columns 16s .. 16s + 15) of a swizzled
/// [64][64] tile, the calling warp's 16 rows, with one ldmatrix.x4: lanes
/// 0-15 address rows 0-15 of the first 8 columns (registers 0 and 1), lanes
/// 16-31 the same rows of the next 8 (registers 2 and 3).
__device__ __forceinline__ void wgmmaLoadAFromSw128(uint32_t tile, int s,
                                                    uint32_t (&a)[4]) {
  int t = threadIdx.x % 128;
  int lane = t % 32;
  int row = 16 * (t / 32) + (lane & 15);
  ldmatrixX4(a, tile + sw128Offset(row, 2 * s + (lane >> 4)));
}

#if SPARSETX_HAS_WGMMA

// --- Ordering ---------------------------------------------------------------
// wgmma reads its shared operands through the async proxy (ISA "Async
// Proxy"); tiles written by the generic proxy (st.shared, stmatrix,
// non-bulk cp.async) need fenceProxyAsyncShared() by each writing
// thread after its writes are complete, then a barrier, before any wgmma
// reads them. The accumulator and register-A operands need wgmmaFence()
// after the last ordinary write to them and before the first wgmma that
// reads them (ISA: "wgmma.fence must be used ... before the first
// wgmma.mma_async and between a register access by a thread in the warpgroup
// and any wgmma.mma_async instruction that accesses the same registers").
// Results may be read only after wgmmaCommit() and wgmmaWait<N>() have
// retired the group that wrote them; wgmmaFenceOperand() keeps the compiler
// from moving ordinary uses of the accumulators across those asm statements
// (the asm only names the registers where the wgmma itself is issued).

__device__ __forceinline__ void fenceProxyAsyncShared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

__device__ __forceinline__ void wgmmaFence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}

__device__ __forceinline__ void wgmmaCommit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

/// Waits until at most N committed groups are pending.
template <int N>
__device__ __forceinline__ void wgmmaWait() {
  static_assert(N >= 0 && N <= 7, "wgmma.wait_group takes 0..7");
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

template <int kCount>
__device__ __forceinline__ void wgmmaFenceOperand(float (&d)[kCount]) {
#pragma unroll
  for (int i = 0; i < kCount; ++i)
    asm volatile("" : "+f"(d[i])::"memory");
}
template <int kCount>
__device__ __forceinline__ void wgmmaFenceOperand(uint32_t (&r)[kCount]) {
#pragma unroll
  for (int i = 0; i < kCount; ++i)
    asm volatile("" : "+r"(r[i])::"memory");
}

/// Waits for every wgmma group this thread issued, then fences the
/// accumulators they wrote, so that what follows reads their results.
template <typename... Acc>
__device__ __forceinline__ void wgmmaWaitAll(Acc &...acc) {
  wgmmaWait<0>();
  (wgmmaFenceOperand(acc), ...);
}

// --- wgmma.mma_async m64n64k16, f32 accumulators -------------------------------
// d (32 floats, the layout above) = A[64x16] * B[16x64] + (accumulate ? d : 0).
// `accumulate` is the instruction's scale-d predicate: false on a product's
// first k-step makes d's old contents irrelevant (no zeroing needed).
// imm-scale-a/b are 1 (no negation). A is K-major (imm-trans-a 0);
// kTransB 0: B is K-major, the tile holds B^T as [N][K] rows (K for
// S = Q K^T); kTransB 1: B is MN-major, the tile holds B as [K][N] rows
// (V [keys][D] for O = P V). The transpose exists for .f16/.bf16 operands in
// shared memory only (ISA wgmma.mma_async).

#define SPARSETX_WGMMA_D32                                                     \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "    \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, "     \
  "%30, %31}"
#define SPARSETX_WGMMA_D32_OPERANDS(d)                                         \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),      \
      "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]),             \
      "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),         \
      "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),         \
      "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]),         \
      "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),         \
      "+f"(d[31])

/// A and B from shared memory (descriptors). kTransA 1: A is MN-major, the
/// tile holds A as [K][M] rows (dS^T [keys][queries] for dQ = dS K), with a
/// wgmmaDescSw128MNMajor descriptor.
template <typename Elem, int kTransB, int kTransA = 0>
__device__ __forceinline__ void wgmmaM64N64K16SS(float (&d)[32],
                                                 uint64_t descA,
                                                 uint64_t descB,
                                                 bool accumulate) {
  static_assert(kTransB == 0 || kTransB == 1, "imm-trans-b is 0 or 1");
  static_assert(kTransA == 0 || kTransA == 1, "imm-trans-a is 0 or 1");
  if (Elem::kIsBF16)
    asm volatile("{\n"
                 ".reg .pred p;\n"
                 "setp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " //
                 SPARSETX_WGMMA_D32 ", %32, %33, p, 1, 1, %35, %36;\n"
                 "}\n"
                 : SPARSETX_WGMMA_D32_OPERANDS(d)
                 : "l"(descA), "l"(descB), "r"((int)accumulate), "n"(kTransA),
                   "n"(kTransB));
  else
    asm volatile("{\n"
                 ".reg .pred p;\n"
                 "setp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 " //
                 SPARSETX_WGMMA_D32 ", %32, %33, p, 1, 1, %35, %36;\n"
                 "}\n"
                 : SPARSETX_WGMMA_D32_OPERANDS(d)
                 : "l"(descA), "l"(descB), "r"((int)accumulate), "n"(kTransA),
                   "n"(kTransB));
}

/// A from registers (the fragment above), B from shared memory. The A
/// registers must keep their values until the wgmma has completed
/// (wgmmaWait); a register that is written between wgmmas needs wgmmaFence.
template <typename Elem, int kTransB>
__device__ __forceinline__ void wgmmaM64N64K16RS(float (&d)[32],
                                                 const uint32_t (&a)[4],
                                                 uint64_t descB,
                                                 bool accumulate) {
  static_assert(kTransB == 0 || kTransB == 1, "imm-trans-b is 0 or 1");
  if (Elem::kIsBF16)
    asm volatile("{\n"
                 ".reg .pred p;\n"
                 "setp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " //
                 SPARSETX_WGMMA_D32 ", {%32, %33, %34, %35}, %36, p, 1, 1, "
                 "%38;\n"
                 "}\n"
                 : SPARSETX_WGMMA_D32_OPERANDS(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(descB),
                   "r"((int)accumulate), "n"(kTransB));
  else
    asm volatile("{\n"
                 ".reg .pred p;\n"
                 "setp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 " //
                 SPARSETX_WGMMA_D32 ", {%32, %33, %34, %35}, %36, p, 1, 1, "
                 "%38;\n"
                 "}\n"
                 : SPARSETX_WGMMA_D32_OPERANDS(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(descB),
                   "r"((int)accumulate), "n"(kTransB));
}

#undef SPARSETX_WGMMA_D32
#undef SPARSETX_WGMMA_D32_OPERANDS

#endif // SPARSETX_HAS_WGMMA

} // namespace sparsetx

#endif // SPARSETX_KERNELS_HOPPER_CUH
