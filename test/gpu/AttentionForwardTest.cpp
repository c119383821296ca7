//===- AttentionForwardTest.cpp - generated forward kernels vs float64 ----===//
//
// Every shipped pattern (patterns/*.sp) and a non-causal one, at a sequence
// length that is not a multiple of the block size and at one that is, head
// dims 32 / 64 / 128, bf16 and fp16: the pattern goes through the compiler
// (layout, codegen, NVRTC), its kernels run on fresh random inputs with O and
// LSE poisoned (0xFF bytes are NaN in every format), and the results are
// compared with the float64 CPU reference evaluated straight from the mask
// (no blocks, no index maps). Layered patterns are checked layer by layer,
// per-head patterns head by head (batch-head bh is head bh % heads). The
// Wgmma cases run the sm_90a wgmma kernel (CodegenOptions::forwardWgmma) at
// head dims 64 and 128, also at n = 2100 (33 query blocks, long key lists:
// every stage of its pipeline refilled many times); they skip on other GPUs.
//
// Skipped where no GPU is present. Patterns are read from
// $SPARSETX_PATTERNS_DIR, else the source tree's patterns/, else ./patterns.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Analysis/MaskEvaluator.h"
#include "sparsetx/Codegen/AttentionPlan.h"
#include "sparsetx/Runtime/Cuda.h"
#include "sparsetx/Runtime/ReferenceAttention.h"

#include "AttentionTestUtil.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include "gtest/gtest.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <tuple>

using namespace sparsetx;

namespace {

using namespace sparsetx::testutil;

/// Pattern, n, head dim, element type, wgmma forward.
using Param =
    std::tuple<std::string, int64_t, int64_t, codegen::ElementType, bool>;

class AttentionForwardTest : public ::testing::TestWithParam<Param> {
protected:
  void SetUp() override {
    if (!cuda::isAvailable())
      GTEST_SKIP() << cuda::unavailableReason();
    llvm::Expected<cuda::Context> ctx = cuda::Context::create(0);
    ASSERT_TRUE(!!ctx) << llvm::toString(ctx.takeError());
    context = std::move(*ctx);
  }
  cuda::Context context;
};

TEST_P(AttentionForwardTest, MatchesReference) {
  auto [name, n, headDim, dtype, wgmma] = GetParam();
  const bool bf16 = dtype == codegen::ElementType::BF16;
  const int cc = context.getComputeCapability();
  if (wgmma && cc != 90)
    GTEST_SKIP() << "the wgmma forward kernel needs sm_90a (this GPU is sm_"
                 << cc << ")";
  llvm::Expected<std::string> text = patternText(name);
  ASSERT_TRUE(!!text) << llvm::toString(text.takeError());

  PatternCompileOptions options;
  options.seqLen = n;
  options.numHeads = kHeads;
  auto compiled = compilePattern(*text, name + ".sp", options);
  ASSERT_TRUE(!!compiled) << llvm::toString(compiled.takeError());
  CompiledPattern &cp = **compiled;

  codegen::CodegenOptions cgOptions;
  cgOptions.headDim = headDim;
  cgOptions.dtype = dtype;
  cgOptions.arch = "sm_" + std::to_string(cc) + (cc >= 90 ? "a" : "");
  cgOptions.forwardWgmma = wgmma;
  mlir::FailureOr<codegen::GeneratedAttention> generated =
      codegen::generateForward(cp.pattern, cp.layout, cgOptions);
  ASSERT_TRUE(succeeded(generated));
  llvm::Expected<AttentionPlan> plan = AttentionPlan::compile(*generated);
  ASSERT_TRUE(!!plan) << llvm::toString(plan.takeError());

  mlir::FailureOr<PatternEvaluator> evaluator =
      PatternEvaluator::compile(cp.sourcePattern, Binding(n));
  ASSERT_TRUE(succeeded(evaluator));

  const int64_t elems = kBatchHeads * n * headDim, rows = kBatchHeads * n;
  bool ok = true;
  auto alloc = [&](size_t bytes) {
    return take(cuda::DeviceBuffer::allocate(bytes), ok, "allocate");
  };
  cuda::DeviceBuffer dq = alloc(elems * 2), dk = alloc(elems * 2),
                     dv = alloc(elems * 2), dout = alloc(elems * 2),
                     dlse = alloc(rows * 4);
  ASSERT_TRUE(ok);

  std::random_device device;
  const unsigned seed = device();
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  SCOPED_TRACE("seed " + std::to_string(seed));

  for (int64_t layer = 0; layer < evaluator->getNumMasks(); ++layer) {
    SCOPED_TRACE("layer " + std::to_string(layer));
    // Fresh inputs per run, rounded to the element type; the reference reads
    // the rounded values.
    std::vector<uint16_t> hq(elems), hk(elems), hv(elems);
    std::vector<double> rq(elems), rk(elems), rv(elems);
    auto fill = [&](std::vector<uint16_t> &h, std::vector<double> &r) {
      for (int64_t x = 0; x < elems; ++x) {
        float f = normal(rng);
        h[x] = bf16 ? toBF16(f) : toFP16(f);
        r[x] = bf16 ? fromBF16(h[x]) : fromFP16(h[x]);
      }
    };
    fill(hq, rq);
    fill(hk, rk);
    fill(hv, rv);
    ASSERT_NO_ERROR(dq.copyFromHost(hq.data(), elems * 2));
    ASSERT_NO_ERROR(dk.copyFromHost(hk.data(), elems * 2));
    ASSERT_NO_ERROR(dv.copyFromHost(hv.data(), elems * 2));
    ASSERT_NO_ERROR(dout.fill(0xFF));
    ASSERT_NO_ERROR(dlse.fill(0xFF));

    ASSERT_NO_ERROR(plan->forward(layer, kBatchHeads, dq.get(), dk.get(),
                                  dv.get(), dout.get(), dlse.get()));
    ASSERT_NO_ERROR(context.synchronize());

    std::vector<uint16_t> ho(elems);
    std::vector<float> hlse(rows);
    ASSERT_NO_ERROR(dout.copyToHost(ho.data(), elems * 2));
    ASSERT_NO_ERROR(dlse.copyToHost(hlse.data(), rows * 4));
    std::vector<double> out(elems), outLse(hlse.begin(), hlse.end());
    for (int64_t x = 0; x < elems; ++x)
      out[x] = bf16 ? fromBF16(ho[x]) : fromFP16(ho[x]);

    // The reference mask, evaluated once per head.
    const int64_t heads = evaluator->isPerHead() ? kHeads : 1;
    std::vector<std::vector<uint8_t>> bits(heads, std::vector<uint8_t>(n * n));
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < n; ++i)
        evaluator->evaluateRow(layer, h, i, 0, n, bits[h].data() + i * n);
    AttentionShape shape;
    shape.batchHeads = kBatchHeads;
    shape.seqLen = n;
    shape.headDim = headDim;
    std::vector<double> refO, refLse;
    referenceAttentionForward(
        shape, rq, rk, rv,
        [&](int64_t bh, int64_t i, int64_t j) {
          return bits[bh % heads][i * n + j] != 0;
        },
        refO, refLse);

    int64_t badO = 0, badLse = 0;
    double errO = relativeError(out, refO, badO);
    double errLse = relativeError(outLse, refLse, badLse);
    const double tolerance = bf16 ? 2e-2 : 5e-3;
    std::printf("[ errors ] %s%s layer %lld: O %.2e, LSE %.2e\n",
                caseName(name, n, headDim, dtype).c_str(),
                wgmma ? " (wgmma)" : "", (long long)layer, errO, errLse);
    EXPECT_EQ(badO, 0) << "O elements unwritten (NaN) or non-finite";
    EXPECT_EQ(badLse, 0) << "LSE entries unwritten (NaN) or wrongly infinite";
    EXPECT_LT(errO, tolerance) << "relative error of O";
    EXPECT_LT(errLse, tolerance) << "relative error of LSE";
    if (badO || badLse || errO >= tolerance || errLse >= tolerance) {
      // The first wrong row, to tell a map / schedule bug from numerics.
      for (int64_t row = 0; row < rows; ++row) {
        double rowErr = 0, rowRef = 0;
        for (int64_t d = 0; d < headDim; ++d) {
          double diff = out[row * headDim + d] - refO[row * headDim + d];
          rowErr += std::isnan(diff) ? 1e30 : diff * diff;
          rowRef += refO[row * headDim + d] * refO[row * headDim + d];
        }
        if (rowErr > tolerance * tolerance * std::max(rowRef, 1e-6) * 4 ||
            std::isnan(outLse[row]) ||
            std::abs(outLse[row] - refLse[row]) > 1e-2) {
          ADD_FAILURE() << "first bad row: bh " << row / n << ", i " << row % n
                        << ": lse " << outLse[row] << " vs " << refLse[row]
                        << ", |dO|^2 " << rowErr << ", |O|^2 " << rowRef;
          break;
        }
      }
    }
  }
}

std::string paramName(const ::testing::TestParamInfo<Param> &info) {
  auto [name, n, d, dtype, wgmma] = info.param;
  (void)wgmma; // the instantiation's name says it
  return caseName(name, n, d, dtype);
}

INSTANTIATE_TEST_SUITE_P(
    Patterns, AttentionForwardTest,
    ::testing::Combine(::testing::Values("dense", "local", "strided", "fixed",
                                         "fixed_heads", "strided_interleaved",
                                         "bidirectional"),
                       ::testing::Values(int64_t(1000), int64_t(2048)),
                       ::testing::Values(int64_t(32), int64_t(64), int64_t(128)),
                       ::testing::Values(codegen::ElementType::BF16,
                                         codegen::ElementType::FP16),
                       ::testing::Values(false)),
    paramName);

INSTANTIATE_TEST_SUITE_P(
    Wgmma, AttentionForwardTest,
    ::testing::Combine(::testing::Values("dense", "local", "strided", "fixed",
                                         "fixed_heads", "strided_interleaved",
                                         "bidirectional"),
                       ::testing::Values(int64_t(1000), int64_t(2100)),
                       ::testing::Values(int64_t(64), int64_t(128)),
                       ::testing::Values(codegen::ElementType::BF16,
                                         codegen::ElementType::FP16),
                       ::testing::Values(true)),
    paramName);

} // namespace
