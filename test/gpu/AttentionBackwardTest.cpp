//===- AttentionBackwardTest.cpp - generated backward kernels vs float64 --===//
//
// Every shipped pattern (patterns/*.sp) and a non-causal one, n = 1000 and
// 2048, head dims 32 / 64 / 128, bf16 and fp16: the forward kernels run on
// fresh random Q, K, V, then the backward kernels on a fresh random dO with
// dQ, dK, dV poisoned (0xFF bytes are NaN in every format), and the gradients
// are compared with the float64 CPU reference (referenceAttentionBackward,
// straight from the mask) computed from the very inputs the GPU read (the
// values rounded to the element type). Both backward modes are checked: the
// default one (dQ fused into the dK/dV kernels with fp32 reductions) and the
// deterministic one (separate dQ kernel, no atomics). Each runs twice; dK and
// dV must be bit-identical between the runs in both modes, dQ too in the
// deterministic one. Layered patterns are checked layer by layer, per-head
// patterns head by head. The MmaSync cases run the mma.sync kernels on every
// GPU; the Wgmma cases (sm_90 only) the wgmma forward and every dK/dV and dQ
// kernel on wgmma (CodegenOptions::backwardWgmmaMinBlocks = 0) at head dim
// 64, long split lists included; the Default cases the codegen defaults (on
// sm_90a: wgmma for the segments with long lists, mma.sync for the others,
// in one pattern).
//
// Skipped where no GPU is present.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Analysis/MaskEvaluator.h"
#include "sparsetx/Codegen/AttentionPlan.h"
#include "sparsetx/Runtime/Cuda.h"
#include "sparsetx/Runtime/ReferenceAttention.h"

#include "AttentionTestUtil.h"

#include "gtest/gtest.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <tuple>

using namespace sparsetx;

namespace {

using namespace sparsetx::testutil;

/// Which kernels a case asks codegen for.
enum class Kernels { MmaSync, Wgmma, Default };

/// Pattern, n, head dim, element type, kernels.
using Param =
    std::tuple<std::string, int64_t, int64_t, codegen::ElementType, Kernels>;

class AttentionBackwardTest : public ::testing::TestWithParam<Param> {
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

TEST_P(AttentionBackwardTest, MatchesReference) {
  auto [name, n, headDim, dtype, kernels] = GetParam();
  const bool bf16 = dtype == codegen::ElementType::BF16;
  const int cc = context.getComputeCapability();
  const bool wgmma = kernels == Kernels::Wgmma;
  if (wgmma && cc != 90)
    GTEST_SKIP() << "the wgmma kernels need sm_90a (this GPU is sm_" << cc
                 << ")";
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
  cgOptions.backward = true;
  if (kernels != Kernels::Default) {
    cgOptions.forwardWgmma = wgmma;
    cgOptions.backwardWgmma = wgmma;
    cgOptions.backwardWgmmaMinBlocks = 0;
  }
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
                     dlse = alloc(rows * 4), ddo = alloc(elems * 2),
                     ddq = alloc(elems * 2), ddk = alloc(elems * 2),
                     ddv = alloc(elems * 2);
  ASSERT_TRUE(ok);

  std::random_device device;
  const unsigned seed = device();
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  SCOPED_TRACE("seed " + std::to_string(seed));

  for (int64_t layer = 0; layer < evaluator->getNumMasks(); ++layer) {
    SCOPED_TRACE("layer " + std::to_string(layer));
    std::vector<uint16_t> hq(elems), hk(elems), hv(elems), hdo(elems);
    std::vector<double> rq(elems), rk(elems), rv(elems), rdo(elems);
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
    fill(hdo, rdo);
    ASSERT_NO_ERROR(dq.copyFromHost(hq.data(), elems * 2));
    ASSERT_NO_ERROR(dk.copyFromHost(hk.data(), elems * 2));
    ASSERT_NO_ERROR(dv.copyFromHost(hv.data(), elems * 2));
    ASSERT_NO_ERROR(ddo.copyFromHost(hdo.data(), elems * 2));
    ASSERT_NO_ERROR(dout.fill(0xFF));
    ASSERT_NO_ERROR(dlse.fill(0xFF));
    ASSERT_NO_ERROR(plan->forward(layer, kBatchHeads, dq.get(), dk.get(),
                                  dv.get(), dout.get(), dlse.get()));

    const int64_t heads = evaluator->isPerHead() ? kHeads : 1;
    std::vector<std::vector<uint8_t>> bits(heads, std::vector<uint8_t>(n * n));
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < n; ++i)
        evaluator->evaluateRow(layer, h, i, 0, n, bits[h].data() + i * n);
    AttentionShape shape;
    shape.batchHeads = kBatchHeads;
    shape.seqLen = n;
    shape.headDim = headDim;
    std::vector<double> ref[3];
    referenceAttentionBackward(
        shape, rq, rk, rv, rdo,
        [&](int64_t bh, int64_t i, int64_t j) {
          return bits[bh % heads][i * n + j] != 0;
        },
        ref[0], ref[1], ref[2]);

    // Split settings: the plan's own choice, never, and every list cut into
    // parts of at most 3 query blocks (the split path on every pattern).
    struct Mode {
      bool deterministic;
      int64_t split;
    };
    for (Mode mode : {Mode{false, 0}, Mode{false, -1}, Mode{false, 3},
                      Mode{true, 0}, Mode{true, 3}}) {
      const bool deterministic = mode.deterministic;
      SCOPED_TRACE((deterministic ? "deterministic backward, split "
                                  : "fused backward, split ") +
                   std::to_string(mode.split));
      plan->setDeterministicBackward(deterministic);
      plan->setBackwardSplit(mode.split);
      std::vector<uint16_t> grads[2][3];
      for (int run = 0; run < 2; ++run) {
        ASSERT_NO_ERROR(ddq.fill(0xFF));
        ASSERT_NO_ERROR(ddk.fill(0xFF));
        ASSERT_NO_ERROR(ddv.fill(0xFF));
        ASSERT_NO_ERROR(plan->backward(layer, kBatchHeads, dq.get(), dk.get(),
                                       dv.get(), dout.get(), dlse.get(),
                                       ddo.get(), ddq.get(), ddk.get(),
                                       ddv.get()));
        ASSERT_NO_ERROR(context.synchronize());
        cuda::DeviceBuffer *bufs[3] = {&ddq, &ddk, &ddv};
        for (int g = 0; g < 3; ++g) {
          grads[run][g].resize(elems);
          ASSERT_NO_ERROR(bufs[g]->copyToHost(grads[run][g].data(), elems * 2));
        }
      }

      const char *names[3] = {"dQ", "dK", "dV"};
      const double tolerance = bf16 ? 2e-2 : 5e-3;
      double err[3];
      for (int g = 0; g < 3; ++g) {
        std::vector<double> out(elems);
        for (int64_t x = 0; x < elems; ++x)
          out[x] = bf16 ? fromBF16(grads[0][g][x]) : fromFP16(grads[0][g][x]);
        int64_t bad = 0;
        err[g] = relativeError(out, ref[g], bad);
        EXPECT_EQ(bad, 0) << names[g] << " elements unwritten (NaN) or non-finite";
        EXPECT_LT(err[g], tolerance) << "relative error of " << names[g];
        // The fused mode's dQ sums key blocks in whatever order they land.
        if (deterministic || g > 0) {
          EXPECT_TRUE(grads[0][g] == grads[1][g])
              << names[g] << " differs between two runs (not deterministic)";
        }
        if (bad || err[g] >= tolerance) {
          for (int64_t row = 0; row < rows; ++row) {
            double rowErr = 0, rowRef = 0;
            for (int64_t d = 0; d < headDim; ++d) {
              double diff = out[row * headDim + d] - ref[g][row * headDim + d];
              rowErr += std::isnan(diff) ? 1e30 : diff * diff;
              rowRef += ref[g][row * headDim + d] * ref[g][row * headDim + d];
            }
            if (rowErr > tolerance * tolerance * std::max(rowRef, 1e-6) * 4) {
              ADD_FAILURE() << "first bad " << names[g] << " row: bh " << row / n
                            << ", position " << row % n << ": |err|^2 " << rowErr
                            << ", |ref|^2 " << rowRef;
              break;
            }
          }
        }
      }
      const AttentionPlan::BackwardSplitStats stats =
          plan->getBackwardSplitStats();
      if (n == 3000 && (mode.split > 0 || (mode.split == 0 && name == "fixed"))) {
        EXPECT_GT(stats.splitKeyBlocks, 0) << "the long lists were not split";
      }
      if (mode.split < 0) {
        EXPECT_EQ(stats.splitKeyBlocks, 0) << "split although told not to";
      }
      std::printf("[ errors ] %s%s layer %lld %s split %lld (%lld CTAs, %lld "
                  "key blocks in %lld parts): dQ %.2e, dK %.2e, dV %.2e\n",
                  caseName(name, n, headDim, dtype).c_str(),
                  wgmma                          ? " (wgmma)"
                  : kernels == Kernels::Default ? " (default)"
                                                : "",
                  (long long)layer,
                  deterministic ? "deterministic" : "fused",
                  (long long)mode.split, (long long)stats.items,
                  (long long)stats.splitKeyBlocks, (long long)stats.parts,
                  err[0], err[1], err[2]);
    }
  }
}

std::string paramName(const ::testing::TestParamInfo<Param> &info) {
  auto [name, n, d, dtype, kernels] = info.param;
  (void)kernels; // the instantiation's name says it
  return caseName(name, n, d, dtype);
}

INSTANTIATE_TEST_SUITE_P(
    Patterns, AttentionBackwardTest,
    ::testing::Combine(::testing::Values("dense", "local", "strided", "fixed",
                                         "fixed_heads", "strided_interleaved",
                                         "bidirectional"),
                       ::testing::Values(int64_t(1000), int64_t(2048)),
                       ::testing::Values(int64_t(32), int64_t(64), int64_t(128)),
                       ::testing::Values(codegen::ElementType::BF16,
                                         codegen::ElementType::FP16),
                       ::testing::Values(Kernels::MmaSync)),
    paramName);

INSTANTIATE_TEST_SUITE_P(
    Wgmma, AttentionBackwardTest,
    ::testing::Combine(::testing::Values("dense", "local", "strided", "fixed",
                                         "fixed_heads", "strided_interleaved",
                                         "bidirectional"),
                       ::testing::Values(int64_t(1000), int64_t(2048)),
                       ::testing::Values(int64_t(64)),
                       ::testing::Values(codegen::ElementType::BF16,
                                         codegen::ElementType::FP16),
                       ::testing::Values(Kernels::Wgmma)),
    paramName);

// Long by-key lists with n not a multiple of the 64-row block (3000 = 46 x
// 64 + 56): the fixed pattern's summary key blocks are reached by up to 45
// query blocks, which the automatic split cuts up too; D = 128 takes the
// kernel's single-buffered path.
INSTANTIATE_TEST_SUITE_P(
    LongLists, AttentionBackwardTest,
    ::testing::Values(Param{"fixed", 3000, 64, codegen::ElementType::BF16, Kernels::MmaSync},
                      Param{"dense", 3000, 64, codegen::ElementType::FP16, Kernels::MmaSync},
                      Param{"fixed", 3000, 128, codegen::ElementType::FP16, Kernels::MmaSync}),
    paramName);

INSTANTIATE_TEST_SUITE_P(
    WgmmaLongLists, AttentionBackwardTest,
    ::testing::Values(Param{"fixed", 3000, 64, codegen::ElementType::BF16, Kernels::Wgmma},
                      Param{"dense", 3000, 64, codegen::ElementType::FP16, Kernels::Wgmma}),
    paramName);

// The defaults: on sm_90a the fixed pattern's summary columns (long lists)
// take the wgmma dK/dV kernels and its band (short lists) the mma.sync ones;
// strided stays on mma.sync, dense on wgmma; elsewhere all mma.sync. fixed
// at n = 1000 (8 query blocks per summary key block: just wgmma) is also
// gpu-sanitize.sh's case of the mixed defaults.
INSTANTIATE_TEST_SUITE_P(
    Default, AttentionBackwardTest,
    ::testing::Values(Param{"fixed", 2048, 64, codegen::ElementType::BF16, Kernels::Default},
                      Param{"fixed", 1000, 64, codegen::ElementType::FP16, Kernels::Default},
                      Param{"fixed_heads", 3000, 64, codegen::ElementType::FP16, Kernels::Default},
                      Param{"strided", 2048, 64, codegen::ElementType::BF16, Kernels::Default},
                      Param{"dense", 1000, 64, codegen::ElementType::FP16, Kernels::Default},
                      Param{"fixed", 1000, 128, codegen::ElementType::BF16, Kernels::Default}),
    paramName);

} // namespace
