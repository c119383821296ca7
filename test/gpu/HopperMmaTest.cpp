//===- HopperMmaTest.cpp - the wgmma building blocks on an sm_90 GPU ------===//
//
// Runs the kernels of test/unit/HopperMmaKernels.h (one warpgroup, 64x64
// tiles) and compares each product with a float64 product of the same
// 16-bit inputs: S = Q K^T with A from shared memory and from registers,
// O = P V with V stored [keys][D] (imm-trans-b 1), the chained
// S -> P (registers) -> O, and S = A^T C with A stored [K][M] (imm-trans-a
// 1: the backward's dQ = dS K from dS^T in shared memory). Skipped without
// a driver or an sm_90 device.
// hopper.cuh's descriptors, swizzle and fragment layouts must pass here
// before any generated kernel uses them.
//
//===----------------------------------------------------------------------===//

#include "../unit/HopperMmaKernels.h"

#include "sparsetx/Codegen/CudaEmitter.h"
#include "sparsetx/Runtime/Cuda.h"
#include "sparsetx/Runtime/Nvrtc.h"
#include "sparsetx/Support/Half.h"

#include "gtest/gtest.h"

#include <cmath>
#include <random>
#include <sstream>

using namespace sparsetx;

namespace {

#define ASSERT_NO_ERROR(expr)                                                  \
  do {                                                                         \
    if (llvm::Error err = (expr))                                              \
      FAIL() << #expr << ": " << llvm::toString(std::move(err));               \
  } while (false)

constexpr int kDim = 64;
constexpr int kElems = kDim * kDim;

/// Error bound of an fp32-accumulated product, relative to sum_k |a_k b_k|.
/// Products of two bf16 (8-bit significands) or fp16 (11-bit) values are
/// exact in fp32, so only the accumulation rounds: a sum of n = 64 terms in
/// fp32 is off by at most about n * 2^-24 * sum |terms| = 3.8e-6 sum |terms|
/// with round-to-nearest, twice that if the tensor core truncates its
/// intermediate sums (as measured on earlier generations). 1e-5 covers both
/// with margin, and is still far below any layout or descriptor bug, which
/// moves whole terms (errors of order |a_k b_k|, i.e. 1e-2 relative and up).
/// Relative to sum |terms| rather than to |result|, because the inputs have
/// both signs and a result near 0 by cancellation has no relative accuracy
/// to speak of.
constexpr double kRelativeBound = 1e-5;

struct ElemType {
  const char *name;
  uint16_t (*fromFloat)(float);
  float (*toFloat)(uint16_t);
};
const ElemType kBF16 = {"bf16", floatToBF16, bf16ToFloat};
const ElemType kFP16 = {"fp16", floatToFP16, fp16ToFloat};

/// A 64x64 matrix of 16-bit values uniform in [-1, 1] and their floats.
struct Matrix16 {
  std::vector<uint16_t> bits;
  std::vector<double> values;
};
Matrix16 randomMatrix(const ElemType &type, std::mt19937 &rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Matrix16 m;
  m.bits.resize(kElems);
  m.values.resize(kElems);
  for (int i = 0; i < kElems; ++i) {
    m.bits[i] = type.fromFloat(dist(rng));
    m.values[i] = type.toFloat(m.bits[i]);
  }
  return m;
}

/// C[i][j] = sum_k A[i][k] B(k, j) in float64, with B(k, j) = b[j][k] when
/// `bTransposed` (S = Q K^T) and b[k][j] otherwise (O = P V); also
/// sum_k |A[i][k] B(k, j)| for the error bound.
void referenceProduct(const std::vector<double> &a, const std::vector<double> &b,
                      bool bTransposed, std::vector<double> &c,
                      std::vector<double> &absSum) {
  c.assign(kElems, 0.0);
  absSum.assign(kElems, 0.0);
  for (int i = 0; i < kDim; ++i)
    for (int j = 0; j < kDim; ++j)
      for (int k = 0; k < kDim; ++k) {
        double term =
            a[i * kDim + k] * (bTransposed ? b[j * kDim + k] : b[k * kDim + j]);
        c[i * kDim + j] += term;
        absSum[i * kDim + j] += std::fabs(term);
      }
}

/// Every element within the bound (NaN, e.g. a poisoned element the kernel
/// never wrote, fails); the first few misses listed.
::testing::AssertionResult matches(const char *what,
                                   const std::vector<float> &gpu,
                                   const std::vector<double> &ref,
                                   const std::vector<double> &absSum) {
  int misses = 0;
  std::ostringstream os;
  for (int i = 0; i < kElems; ++i) {
    double bound = kRelativeBound * absSum[i] + 1e-30;
    double err = std::fabs((double)gpu[i] - ref[i]);
    if (!(err <= bound)) {
      if (++misses <= 8)
        os << "\n  " << what << "[" << i / kDim << "][" << i % kDim
           << "] = " << gpu[i] << ", expected " << ref[i] << " (bound "
           << bound << ")";
    }
  }
  if (misses == 0)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << misses << " of " << kElems << " elements of " << what
         << " off:" << os.str();
}

class HopperMmaTest : public ::testing::Test {
protected:
  void SetUp() override {
    if (!cuda::isAvailable())
      GTEST_SKIP() << cuda::unavailableReason();
    llvm::Expected<cuda::Context> ctx = cuda::Context::create(0);
    ASSERT_TRUE(!!ctx) << llvm::toString(ctx.takeError());
    context = std::move(*ctx);
    // wgmma is an sm_90a feature: PTX for it loads on compute capability
    // 9.0 only (sm_100 and later have no wgmma).
    if (context.getComputeCapability() != 90)
      GTEST_SKIP() << "wgmma needs an sm_90 device, not sm_"
                   << context.getComputeCapability();

    nvrtc::CompileOptions options;
    options.arch = "sm_90a";
    options.cacheDir = "none";
    llvm::Expected<std::string> ptx =
        nvrtc::compileToPTX(test::kHopperMmaKernelSource, "hopper_mma_test.cu",
                            options, codegen::kernelHeaders());
    ASSERT_TRUE(!!ptx) << llvm::toString(ptx.takeError());
    llvm::Expected<cuda::Module> loaded = cuda::Module::load(*ptx);
    ASSERT_TRUE(!!loaded) << llvm::toString(loaded.takeError());
    module = std::move(*loaded);

    for (cuda::DeviceBuffer *buffer : {&a, &b, &c}) {
      llvm::Expected<cuda::DeviceBuffer> allocated =
          cuda::DeviceBuffer::allocate(kElems * sizeof(uint16_t));
      ASSERT_TRUE(!!allocated) << llvm::toString(allocated.takeError());
      *buffer = std::move(*allocated);
    }
    for (cuda::DeviceBuffer *buffer : {&s, &o}) {
      llvm::Expected<cuda::DeviceBuffer> allocated =
          cuda::DeviceBuffer::allocate(kElems * sizeof(float));
      ASSERT_TRUE(!!allocated) << llvm::toString(allocated.takeError());
      *buffer = std::move(*allocated);
    }
    // Fresh inputs on every run; the seed is printed with any failure.
    seed = std::random_device{}();
    rng.seed(seed);
  }

  /// Uploads the inputs (empty: not used), poisons both outputs with NaN,
  /// runs kernel `name` on one warpgroup, and reads S and O back.
  void run(const std::string &name, const Matrix16 *inA, const Matrix16 *inB,
           const Matrix16 *inC, std::vector<float> &outS,
           std::vector<float> &outO) {
    const std::pair<const Matrix16 *, cuda::DeviceBuffer *> inputs[] = {
        {inA, &a}, {inB, &b}, {inC, &c}};
    for (auto [matrix, buffer] : inputs) {
      if (matrix)
        ASSERT_NO_ERROR(buffer->copyFromHost(matrix->bits.data(),
                                             kElems * sizeof(uint16_t)));
      else
        ASSERT_NO_ERROR(buffer->fill(0));
    }
    ASSERT_NO_ERROR(s.fill(0xFF));
    ASSERT_NO_ERROR(o.fill(0xFF));
    llvm::Expected<cuda::Function> fn = module.getFunction(name);
    ASSERT_TRUE(!!fn) << llvm::toString(fn.takeError());
    cuda::DevicePtr pa = a.get(), pb = b.get(), pc = c.get(), ps = s.get(),
                    po = o.get();
    void *args[] = {&pa, &pb, &pc, &ps, &po};
    ASSERT_NO_ERROR(cuda::launch(*fn, {1, 1, 1}, {128, 1, 1},
                                 test::kHopperMmaSharedBytes, nullptr, args));
    ASSERT_NO_ERROR(context.synchronize());
    outS.assign(kElems, 0.0f);
    outO.assign(kElems, 0.0f);
    ASSERT_NO_ERROR(s.copyToHost(outS.data(), kElems * sizeof(float)));
    ASSERT_NO_ERROR(o.copyToHost(outO.data(), kElems * sizeof(float)));
  }

  /// S = Q K^T through `kernel` (hopper_ss / hopper_rs).
  void checkQKt(const char *kernel) {
    for (const ElemType *type : {&kBF16, &kFP16}) {
      SCOPED_TRACE(std::string(kernel) + "_" + type->name + ", seed " +
                   std::to_string(seed));
      for (int rep = 0; rep < 3; ++rep) {
        Matrix16 q = randomMatrix(*type, rng), k = randomMatrix(*type, rng);
        std::vector<float> gpuS, gpuO;
        run(std::string(kernel) + "_" + type->name, &q, &k, nullptr, gpuS,
            gpuO);
        if (HasFatalFailure())
          return;
        std::vector<double> ref, absSum;
        referenceProduct(q.values, k.values, /*bTransposed=*/true, ref, absSum);
        EXPECT_TRUE(matches("S", gpuS, ref, absSum));
      }
    }
  }

  cuda::Context context;
  cuda::Module module;
  cuda::DeviceBuffer a, b, c, s, o;
  unsigned seed = 0;
  std::mt19937 rng;
};

TEST_F(HopperMmaTest, QKtFromSharedMemory) { checkQKt("hopper_ss"); }

TEST_F(HopperMmaTest, QKtWithAFromRegisters) { checkQKt("hopper_rs"); }

TEST_F(HopperMmaTest, PVWithTransposedB) {
  for (const ElemType *type : {&kBF16, &kFP16}) {
    SCOPED_TRACE(std::string("hopper_pv_") + type->name + ", seed " +
                 std::to_string(seed));
    for (int rep = 0; rep < 3; ++rep) {
      Matrix16 p = randomMatrix(*type, rng), v = randomMatrix(*type, rng);
      std::vector<float> gpuS, gpuO;
      run(std::string("hopper_pv_") + type->name, &p, nullptr, &v, gpuS, gpuO);
      if (HasFatalFailure())
        return;
      std::vector<double> ref, absSum;
      referenceProduct(p.values, v.values, /*bTransposed=*/false, ref, absSum);
      EXPECT_TRUE(matches("O", gpuO, ref, absSum));
    }
  }
}

/// S = A^T C with A stored [K][M]: the transposed-A product the wgmma dK/dV
/// kernel's fused dQ makes from the dS^T tile.
TEST_F(HopperMmaTest, TransposedAFromSharedMemory) {
  for (const ElemType *type : {&kBF16, &kFP16}) {
    SCOPED_TRACE(std::string("hopper_tt_") + type->name + ", seed " +
                 std::to_string(seed));
    for (int rep = 0; rep < 3; ++rep) {
      Matrix16 a = randomMatrix(*type, rng), c = randomMatrix(*type, rng);
      std::vector<float> gpuS, gpuO;
      run(std::string("hopper_tt_") + type->name, &a, nullptr, &c, gpuS, gpuO);
      if (HasFatalFailure())
        return;
      std::vector<double> aT(kElems), ref, absSum;
      for (int k = 0; k < kDim; ++k)
        for (int m = 0; m < kDim; ++m)
          aT[m * kDim + k] = a.values[k * kDim + m];
      referenceProduct(aT, c.values, /*bTransposed=*/false, ref, absSum);
      EXPECT_TRUE(matches("S", gpuS, ref, absSum));
    }
  }
}

/// S = Q K^T, P = S rounded to 16 bits in registers, O = P V: the
/// reference rounds the GPU's own S the way cvt.rn does, so P is exact and
/// O gets the same bound as a single product.
TEST_F(HopperMmaTest, FusedQKtThenPV) {
  for (const ElemType *type : {&kBF16, &kFP16}) {
    SCOPED_TRACE(std::string("hopper_fused_") + type->name + ", seed " +
                 std::to_string(seed));
    for (int rep = 0; rep < 3; ++rep) {
      Matrix16 q = randomMatrix(*type, rng), k = randomMatrix(*type, rng),
               v = randomMatrix(*type, rng);
      std::vector<float> gpuS, gpuO;
      run(std::string("hopper_fused_") + type->name, &q, &k, &v, gpuS, gpuO);
      if (HasFatalFailure())
        return;
      std::vector<double> refS, absS;
      referenceProduct(q.values, k.values, /*bTransposed=*/true, refS, absS);
      EXPECT_TRUE(matches("S", gpuS, refS, absS));
      std::vector<double> p(kElems);
      for (int i = 0; i < kElems; ++i)
        p[i] = type->toFloat(type->fromFloat(gpuS[i]));
      std::vector<double> refO, absO;
      referenceProduct(p, v.values, /*bTransposed=*/false, refO, absO);
      EXPECT_TRUE(matches("O", gpuO, refO, absO));
    }
  }
}

} // namespace
