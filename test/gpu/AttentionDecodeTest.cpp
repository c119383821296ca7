//===- AttentionDecodeTest.cpp - decode vs the forward pass, row by row ---===//
//
// Decode runs one query row per batch-head against a KV cache. For every
// shipped pattern (all causal; dense is dense causal) at n = 1000 and 2048,
// head dims 32 / 64 / 128, bf16 and fp16, 3 batch-heads: fresh random Q, K, V;
// the forward pass over the whole sequence; then for a set of positions t
// (first, last, around block boundaries, random) decode with the cache
// holding K and V rows 0..t and NaN bit patterns (0xFFFF, NaN in both
// formats) in every row past t and in the rows past n of its larger
// capacity, outputs poisoned before each run. O and LSE must match the
// forward's row t and the float64 reference of that row (straight from the
// mask, no blocks or index maps). A single key read past t turns the row
// into NaN.
//
// Also: decode refuses a non-causal pattern, a position outside the plan or
// the cache; and a long dense causal row (n = 16384, timed; n = 20000, more
// parts than the merge has threads) is checked against the reference.
//
// Skipped where no GPU is present.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Analysis/MaskEvaluator.h"
#include "sparsetx/Codegen/AttentionPlan.h"
#include "sparsetx/Runtime/Cuda.h"

#include "AttentionTestUtil.h"

#include "gtest/gtest.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <tuple>

using namespace sparsetx;

namespace {

using namespace sparsetx::testutil;

using Param = std::tuple<std::string, int64_t, int64_t, codegen::ElementType>;

class DecodeFixture {
protected:
  bool setUpContext() {
    if (!cuda::isAvailable())
      return false;
    llvm::Expected<cuda::Context> ctx = cuda::Context::create(0);
    if (!ctx) {
      ADD_FAILURE() << llvm::toString(ctx.takeError());
      return false;
    }
    context = std::move(*ctx);
    return true;
  }

  /// Pattern text -> layout -> decode (and forward) kernels -> loaded plan.
  void makePlan(const std::string &name, const std::string &text, int64_t n,
                int64_t headDim, codegen::ElementType dtype,
                std::unique_ptr<CompiledPattern> &compiled,
                std::optional<AttentionPlan> &plan) {
    PatternCompileOptions options;
    options.seqLen = n;
    options.numHeads = kHeads;
    auto cp = compilePattern(text, name + ".sp", options);
    ASSERT_TRUE(!!cp) << llvm::toString(cp.takeError());
    compiled = std::move(*cp);
    int cc = context.getComputeCapability();
    codegen::CodegenOptions cgOptions;
    cgOptions.headDim = headDim;
    cgOptions.dtype = dtype;
    cgOptions.arch = "sm_" + std::to_string(cc) + (cc >= 90 ? "a" : "");
    cgOptions.backward = false;
    mlir::FailureOr<codegen::GeneratedAttention> generated =
        codegen::generateForward(compiled->pattern, compiled->layout, cgOptions);
    ASSERT_TRUE(succeeded(generated));
    llvm::Expected<AttentionPlan> p = AttentionPlan::compile(*generated);
    ASSERT_TRUE(!!p) << llvm::toString(p.takeError());
    plan.emplace(std::move(*p));
  }

  cuda::Context context;
};

class AttentionDecodeTest : public ::testing::TestWithParam<Param>,
                            protected DecodeFixture {
protected:
  void SetUp() override {
    if (!cuda::isAvailable())
      GTEST_SKIP() << cuda::unavailableReason();
    ASSERT_TRUE(setUpContext());
  }
};

/// float64 attention of one query row `qi` over keys and values k, v
/// ([n, d] of one batch-head): the keys where `bits` is set.
void referenceRow(const double *qi, const double *k, const double *v,
                  int64_t n, int64_t d, const uint8_t *bits, double scale,
                  double *out, double &lse) {
  std::vector<double> scores(n, -std::numeric_limits<double>::infinity());
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    if (!bits[j])
      continue;
    const double *kj = k + j * d;
    double s = 0;
    for (int64_t x = 0; x < d; ++x)
      s += qi[x] * kj[x];
    scores[j] = s * scale;
    mx = std::max(mx, scores[j]);
  }
  std::fill(out, out + d, 0.0);
  if (mx == -std::numeric_limits<double>::infinity()) {
    lse = mx;
    return;
  }
  double sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    if (!bits[j])
      continue;
    double p = std::exp(scores[j] - mx);
    sum += p;
    const double *vj = v + j * d;
    for (int64_t x = 0; x < d; ++x)
      out[x] += p * vj[x];
  }
  for (int64_t x = 0; x < d; ++x)
    out[x] /= sum;
  lse = mx + std::log(sum);
}

/// First, last, around the 64-blocks of positions and of the transposed and
/// gathered orders (periods 128 and 256 of the shipped patterns), and random.
std::vector<int64_t> decodePositions(int64_t n, std::mt19937 &rng) {
  std::set<int64_t> set = {0,       1,       2,       63,      64,
                           65,      127,     128,     129,     255,
                           256,     511,     512,     n / 2,   n - 129,
                           n - 128, n - 65,  n - 64,  n - 63,  n - 2,
                           n - 1};
  std::uniform_int_distribution<int64_t> any(0, n - 1);
  for (int r = 0; r < 5; ++r)
    set.insert(any(rng));
  std::vector<int64_t> positions;
  for (int64_t t : set)
    if (t >= 0 && t < n)
      positions.push_back(t);
  return positions;
}

TEST_P(AttentionDecodeTest, MatchesForwardRowByRow) {
  auto [name, n, headDim, dtype] = GetParam();
  const bool bf16 = dtype == codegen::ElementType::BF16;
  llvm::Expected<std::string> text = patternText(name);
  ASSERT_TRUE(!!text) << llvm::toString(text.takeError());
  std::unique_ptr<CompiledPattern> cp;
  std::optional<AttentionPlan> plan;
  makePlan(name, *text, n, headDim, dtype, cp, plan);
  if (HasFatalFailure())
    return;
  ASSERT_TRUE(plan->getGenerated().hasDecode());
  // Where the GPU has them, the launches overlap their predecessors (as in a
  // model's sampling step): the merge must still see every part.
  plan->setOverlapLaunches(context.getComputeCapability() >= 90);

  mlir::FailureOr<PatternEvaluator> evaluator =
      PatternEvaluator::compile(cp->sourcePattern, Binding(n));
  ASSERT_TRUE(succeeded(evaluator));

  const int64_t bhs = kBatchHeads, d = headDim;
  // A capacity past n: the cache's row stride is not n.
  const int64_t capacity = n + 37;
  const int64_t elems = bhs * n * d, rows = bhs * n;
  const int64_t cacheElems = bhs * capacity * d;
  bool ok = true;
  auto alloc = [&](size_t bytes) {
    return take(cuda::DeviceBuffer::allocate(bytes), ok, "allocate");
  };
  cuda::DeviceBuffer dq = alloc(elems * 2), dk = alloc(elems * 2),
                     dv = alloc(elems * 2), dout = alloc(elems * 2),
                     dlse = alloc(rows * 4), qRow = alloc(bhs * d * 2),
                     kCache = alloc(cacheElems * 2), vCache = alloc(cacheElems * 2),
                     oRow = alloc(bhs * d * 2), lseRow = alloc(bhs * 4),
                     positionBuf = alloc(4), o32Row = alloc(bhs * d * 4);
  ASSERT_TRUE(ok);

  std::random_device device;
  const unsigned seed = device();
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  SCOPED_TRACE("seed " + std::to_string(seed));
  const double scale = 1.0 / std::sqrt(double(d));
  const double tolerance = bf16 ? 2e-2 : 5e-3;
  auto widen = [&](uint16_t h) -> double {
    return bf16 ? fromBF16(h) : fromFP16(h);
  };
  const int64_t heads = evaluator->isPerHead() ? kHeads : 1;
  double worst[4] = {0, 0, 0, 0}; // O vs fwd, O vs ref, LSE vs fwd, LSE vs ref
  int64_t checked = 0;

  for (int64_t layer = 0; layer < evaluator->getNumMasks(); ++layer) {
    SCOPED_TRACE("layer " + std::to_string(layer));
    std::vector<uint16_t> hq(elems), hk(elems), hv(elems);
    std::vector<double> rq(elems), rk(elems), rv(elems);
    auto fill = [&](std::vector<uint16_t> &h, std::vector<double> &r) {
      for (int64_t x = 0; x < elems; ++x) {
        float f = normal(rng);
        h[x] = bf16 ? toBF16(f) : toFP16(f);
        r[x] = widen(h[x]);
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
    ASSERT_NO_ERROR(plan->forward(layer, bhs, dq.get(), dk.get(), dv.get(),
                                  dout.get(), dlse.get()));
    ASSERT_NO_ERROR(context.synchronize());
    std::vector<uint16_t> fwdO(elems);
    std::vector<float> fwdLse(rows);
    ASSERT_NO_ERROR(dout.copyToHost(fwdO.data(), elems * 2));
    ASSERT_NO_ERROR(dlse.copyToHost(fwdLse.data(), rows * 4));

    for (int64_t t : decodePositions(n, rng)) {
      SCOPED_TRACE("position " + std::to_string(t));
      // The cache: rows 0..t, NaN past t (and past n).
      std::vector<uint16_t> hkc(cacheElems, 0xFFFF), hvc(cacheElems, 0xFFFF);
      std::vector<uint16_t> hqRow(bhs * d);
      for (int64_t bh = 0; bh < bhs; ++bh) {
        std::copy_n(hk.begin() + bh * n * d, (t + 1) * d,
                    hkc.begin() + bh * capacity * d);
        std::copy_n(hv.begin() + bh * n * d, (t + 1) * d,
                    hvc.begin() + bh * capacity * d);
        std::copy_n(hq.begin() + (bh * n + t) * d, d, hqRow.begin() + bh * d);
      }
      ASSERT_NO_ERROR(kCache.copyFromHost(hkc.data(), cacheElems * 2));
      ASSERT_NO_ERROR(vCache.copyFromHost(hvc.data(), cacheElems * 2));
      ASSERT_NO_ERROR(qRow.copyFromHost(hqRow.data(), bhs * d * 2));
      ASSERT_NO_ERROR(oRow.fill(0xFF));
      ASSERT_NO_ERROR(lseRow.fill(0xFF));
      // Every other row through decodeAt (the position read on the device,
      // launch shapes fixed for captured decoding).
      if (checked % 2 == 0) {
        ASSERT_NO_ERROR(plan->decode(layer, bhs, t, qRow.get(), kCache.get(),
                                     vCache.get(), capacity, oRow.get(),
                                     lseRow.get()));
      } else {
        SCOPED_TRACE("decodeAt");
        int32_t position = int32_t(t);
        ASSERT_NO_ERROR(positionBuf.copyFromHost(&position, 4));
        ASSERT_NO_ERROR(plan->decodeAt(layer, bhs, positionBuf.get(),
                                       qRow.get(), kCache.get(), vCache.get(),
                                       capacity, oRow.get(), lseRow.get()));
      }
      ASSERT_NO_ERROR(context.synchronize());
      std::vector<uint16_t> ho(bhs * d);
      std::vector<float> hl(bhs);
      ASSERT_NO_ERROR(oRow.copyToHost(ho.data(), bhs * d * 2));
      ASSERT_NO_ERROR(lseRow.copyToHost(hl.data(), bhs * 4));
      if (checked % 2 == 1) {
        // Again with O in fp32, [bhs, d - 8] (a model's token-major rows):
        // the same values before rounding, nothing written past them.
        SCOPED_TRACE("decodeAt, fp32 O");
        const int64_t dim = d - 8;
        ASSERT_NO_ERROR(o32Row.fill(0xFF));
        ASSERT_NO_ERROR(plan->decodeAt(layer, bhs, positionBuf.get(),
                                       qRow.get(), kCache.get(), vCache.get(),
                                       capacity, oRow.get(), lseRow.get(), 0,
                                       nullptr, o32Row.get(), dim));
        ASSERT_NO_ERROR(context.synchronize());
        std::vector<uint32_t> h32(bhs * d);
        ASSERT_NO_ERROR(o32Row.copyToHost(h32.data(), bhs * d * 4));
        for (int64_t bh = 0; bh < bhs; ++bh)
          for (int64_t x = 0; x < dim; ++x) {
            float v;
            std::memcpy(&v, &h32[bh * dim + x], 4);
            double want = widen(ho[bh * d + x]);
            ASSERT_TRUE(std::isfinite(v)) << "bh " << bh << ", dim " << x;
            ASSERT_LE(std::fabs(v - want), tolerance * std::max(1.0, std::fabs(want)))
                << "bh " << bh << ", dim " << x;
          }
        for (int64_t e = bhs * dim; e < bhs * d; ++e)
          ASSERT_EQ(h32[e], 0xFFFFFFFFu) << "written past the rows: " << e;
      }

      std::vector<double> out(bhs * d), outLse(hl.begin(), hl.end());
      std::vector<double> fwd(bhs * d), fwdL(bhs), ref(bhs * d), refL(bhs);
      std::vector<uint8_t> bits(n);
      for (int64_t bh = 0; bh < bhs; ++bh) {
        for (int64_t x = 0; x < d; ++x) {
          out[bh * d + x] = widen(ho[bh * d + x]);
          fwd[bh * d + x] = widen(fwdO[(bh * n + t) * d + x]);
        }
        fwdL[bh] = fwdLse[bh * n + t];
        evaluator->evaluateRow(layer, bh % heads, t, 0, n, bits.data());
        for (int64_t j = t + 1; j < n; ++j)
          ASSERT_EQ(bits[j], 0) << "the pattern attends key " << j
                                << " after query " << t;
        referenceRow(rq.data() + (bh * n + t) * d, rk.data() + bh * n * d,
                     rv.data() + bh * n * d, n, d, bits.data(), scale,
                     ref.data() + bh * d, refL[bh]);
      }
      int64_t bad[4] = {0, 0, 0, 0};
      double err[4] = {relativeError(out, fwd, bad[0]),
                       relativeError(out, ref, bad[1]),
                       relativeError(outLse, fwdL, bad[2]),
                       relativeError(outLse, refL, bad[3])};
      const char *what[4] = {"O vs forward", "O vs reference", "LSE vs forward",
                             "LSE vs reference"};
      for (int c = 0; c < 4; ++c) {
        EXPECT_EQ(bad[c], 0) << what[c] << ": NaN (unwritten or garbage read) "
                             << "or wrongly infinite entries";
        EXPECT_LT(err[c], tolerance) << what[c] << " relative error";
        worst[c] = std::max(worst[c], err[c]);
      }
      ++checked;
      if (HasFailure())
        return;
    }
  }
  std::printf("[ errors ] %s: %lld rows, worst O %.2e (fwd) %.2e (ref), LSE "
              "%.2e (fwd) %.2e (ref)\n",
              caseName(name, n, headDim, dtype).c_str(), (long long)checked,
              worst[0], worst[1], worst[2], worst[3]);
}

std::string paramName(const ::testing::TestParamInfo<Param> &info) {
  auto [name, n, d, dtype] = info.param;
  return caseName(name, n, d, dtype);
}

INSTANTIATE_TEST_SUITE_P(
    Patterns, AttentionDecodeTest,
    ::testing::Combine(::testing::Values("dense", "local", "strided", "fixed",
                                         "fixed_heads", "strided_interleaved"),
                       ::testing::Values(int64_t(1000), int64_t(2048)),
                       ::testing::Values(int64_t(32), int64_t(64), int64_t(128)),
                       ::testing::Values(codegen::ElementType::BF16,
                                         codegen::ElementType::FP16)),
    paramName);

class AttentionDecodeMiscTest : public ::testing::Test, protected DecodeFixture {
protected:
  void SetUp() override {
    if (!cuda::isAvailable())
      GTEST_SKIP() << cuda::unavailableReason();
    ASSERT_TRUE(setUpContext());
  }
};

TEST_F(AttentionDecodeMiscTest, RefusesWhatItCannotDo) {
  bool ok = true;
  auto alloc = [&](size_t bytes) {
    return take(cuda::DeviceBuffer::allocate(bytes), ok, "allocate");
  };
  cuda::DeviceBuffer buf = alloc(1 << 20);
  ASSERT_TRUE(ok);
  const cuda::DevicePtr p = buf.get();
  auto expectError = [](llvm::Error err, llvm::StringRef needle) {
    ASSERT_TRUE(!!err) << "expected an error containing '" << needle.str() << "'";
    std::string text = llvm::toString(std::move(err));
    EXPECT_NE(text.find(needle.str()), std::string::npos) << text;
  };
  {
    // Non-causal: no decode kernels are generated, and decode says why.
    std::unique_ptr<CompiledPattern> cp;
    std::optional<AttentionPlan> plan;
    makePlan("bidirectional", kBidirectional, 256, 64,
             codegen::ElementType::BF16, cp, plan);
    if (HasFatalFailure())
      return;
    EXPECT_FALSE(plan->getGenerated().hasDecode());
    expectError(plan->decode(0, 1, 10, p, p, p, 256, p, p), "is not causal");
  }
  {
    llvm::Expected<std::string> text = patternText("dense");
    ASSERT_TRUE(!!text) << llvm::toString(text.takeError());
    std::unique_ptr<CompiledPattern> cp;
    std::optional<AttentionPlan> plan;
    makePlan("dense", *text, 256, 64, codegen::ElementType::BF16, cp, plan);
    if (HasFatalFailure())
      return;
    expectError(plan->decode(0, 1, 256, p, p, p, 512, p, p),
                "outside the plan's sequence [0, 256)");
    expectError(plan->decode(0, 1, -1, p, p, p, 512, p, p), "outside");
    expectError(plan->decode(0, 1, 100, p, p, p, 100, p, p),
                "past the KV cache's capacity of 100 rows");
    expectError(plan->decode(0, 0, 10, p, p, p, 256, p, p),
                "not a positive multiple");
  }
}

/// A long dense causal row, the case split-K is for: checked against the
/// float64 reference at the last and a middle position, then timed.
TEST_F(AttentionDecodeMiscTest, LongDenseRow) {
  llvm::Expected<std::string> text = patternText("dense");
  ASSERT_TRUE(!!text) << llvm::toString(text.takeError());
  // n = 20000: one batch-head's row takes more parts than the merge's 128
  // threads (it goes through them in chunks), with overlapping launches.
  for (auto [n, d] : {std::pair<int64_t, int64_t>{16384, 64}, {16384, 128},
                      {20000, 64}}) {
    SCOPED_TRACE("n " + std::to_string(n) + ", head dim " + std::to_string(d));
    std::unique_ptr<CompiledPattern> cp;
    std::optional<AttentionPlan> plan;
    makePlan("dense", *text, n, d, codegen::ElementType::BF16, cp, plan);
    if (HasFatalFailure())
      return;
    plan->setOverlapLaunches(n != 16384 && context.getComputeCapability() >= 90);
    for (int64_t bhs : {int64_t(1), int64_t(8), int64_t(32)}) {
      const int64_t elems = bhs * n * d;
      bool ok = true;
      auto alloc = [&](size_t bytes) {
        return take(cuda::DeviceBuffer::allocate(bytes), ok, "allocate");
      };
      cuda::DeviceBuffer kCache = alloc(elems * 2), vCache = alloc(elems * 2),
                         qRow = alloc(bhs * d * 2), oRow = alloc(bhs * d * 2),
                         lseRow = alloc(bhs * 4);
      ASSERT_TRUE(ok);
      std::mt19937 rng(std::random_device{}());
      std::normal_distribution<float> normal(0.0f, 1.0f);
      std::vector<uint16_t> hk(elems), hv(elems), hq(bhs * d);
      for (int64_t x = 0; x < elems; ++x) {
        hk[x] = toBF16(normal(rng));
        hv[x] = toBF16(normal(rng));
      }
      for (auto &h : hq)
        h = toBF16(normal(rng));
      ASSERT_NO_ERROR(kCache.copyFromHost(hk.data(), elems * 2));
      ASSERT_NO_ERROR(vCache.copyFromHost(hv.data(), elems * 2));
      ASSERT_NO_ERROR(qRow.copyFromHost(hq.data(), bhs * d * 2));
      // The reference for the first and the last batch-head.
      std::vector<int64_t> checkedHeads = {0};
      if (bhs > 1)
        checkedHeads.push_back(bhs - 1);
      std::vector<uint8_t> bits(n);
      for (int64_t t : {n / 2 + 17, n - 1}) {
        ASSERT_NO_ERROR(oRow.fill(0xFF));
        ASSERT_NO_ERROR(lseRow.fill(0xFF));
        ASSERT_NO_ERROR(plan->decode(0, bhs, t, qRow.get(), kCache.get(),
                                     vCache.get(), n, oRow.get(), lseRow.get()));
        ASSERT_NO_ERROR(context.synchronize());
        std::vector<uint16_t> ho(bhs * d);
        std::vector<float> hl(bhs);
        ASSERT_NO_ERROR(oRow.copyToHost(ho.data(), bhs * d * 2));
        ASSERT_NO_ERROR(lseRow.copyToHost(hl.data(), bhs * 4));
        std::vector<double> out, outLse, ref, refL;
        for (int64_t bh : checkedHeads) {
          std::vector<double> rq(d), rk(n * d), rv(n * d), o(d);
          for (int64_t x = 0; x < d; ++x)
            rq[x] = fromBF16(hq[bh * d + x]);
          for (int64_t x = 0; x < n * d; ++x) {
            rk[x] = fromBF16(hk[bh * n * d + x]);
            rv[x] = fromBF16(hv[bh * n * d + x]);
          }
          for (int64_t j = 0; j < n; ++j)
            bits[j] = j <= t;
          double l = 0;
          referenceRow(rq.data(), rk.data(), rv.data(), n, d, bits.data(),
                       1.0 / std::sqrt(double(d)), o.data(), l);
          for (int64_t x = 0; x < d; ++x) {
            out.push_back(fromBF16(ho[bh * d + x]));
            ref.push_back(o[x]);
          }
          outLse.push_back(hl[bh]);
          refL.push_back(l);
        }
        int64_t badO = 0, badL = 0;
        double errO = relativeError(out, ref, badO);
        double errL = relativeError(outLse, refL, badL);
        EXPECT_EQ(badO + badL, 0);
        EXPECT_LT(errO, 2e-2);
        EXPECT_LT(errL, 2e-2);
        std::printf("[ errors ] dense n=%lld d=%lld bh=%lld position %lld: O "
                    "%.2e, LSE %.2e\n",
                    (long long)n, (long long)d, (long long)bhs, (long long)t,
                    errO, errL);
      }
      if (n != 16384)
        continue;
      // Timing at the last position: K and V rows 0..n-1 of every batch-head
      // are read once (bh = 1 fits in L2, so it measures L2 and launches).
      auto body = [&]() -> llvm::Error {
        return plan->decode(0, bhs, n - 1, qRow.get(), kCache.get(),
                            vCache.get(), n, oRow.get(), lseRow.get());
      };
      llvm::Expected<std::vector<float>> times = cuda::timeRuns(body, 10, 100);
      ASSERT_TRUE(!!times) << llvm::toString(times.takeError());
      std::vector<float> sorted = *times;
      std::sort(sorted.begin(), sorted.end());
      const double ms = sorted[sorted.size() / 2];
      const double bytes = 2.0 * double(bhs) * double(n) * double(d) * 2.0;
      std::printf("[ timing ] decode dense causal n=%lld d=%lld bf16 bh=%lld: "
                  "%.1f us median, %.0f GB/s of K+V\n",
                  (long long)n, (long long)d, (long long)bhs, ms * 1e3,
                  bytes / (ms * 1e-3) / 1e9);
    }
  }
}

} // namespace
