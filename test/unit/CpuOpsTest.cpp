//===- CpuOpsTest.cpp - CPU reference ops of the model backend -------------===//
//
// Every backward is checked against central finite differences of a random
// scalar loss L = sum_i w_i * out_i (accumulated in double); every forward
// against a straightforward reference. Sizes are small so the O(n) forward
// evaluations per gradient stay cheap. Gradient errors are measured
// norm-wise, ||fd - analytic|| / max(||fd||, ||analytic||), which is robust
// to individual near-zero components where fp32 rounding dominates.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Cpu/Ops.h"

#include "gtest/gtest.h"

#include <cmath>
#include <functional>
#include <random>
#include <vector>

using namespace sparsetx::cpu;

namespace {

using Vec = std::vector<float>;

constexpr float kEps = 1e-3f;
constexpr double kGradTol = 1e-3;

Vec randomVec(size_t n, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  Vec v(n);
  for (float &x : v)
    x = dist(rng);
  return v;
}

double dot(const Vec &w, const Vec &out) {
  double acc = 0.0;
  for (size_t i = 0; i < w.size(); ++i)
    acc += static_cast<double>(w[i]) * out[i];
  return acc;
}

/// Norm-wise relative error between the central-difference gradient of
/// `loss` with respect to x and `analytic`.
double gradError(const std::function<double()> &loss, Vec &x,
                 const Vec &analytic) {
  double diff = 0.0, nFd = 0.0, nAn = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    float saved = x[i];
    x[i] = saved + kEps;
    double lp = loss();
    x[i] = saved - kEps;
    double lm = loss();
    x[i] = saved;
    double fd = (lp - lm) / (2.0 * kEps);
    diff += (fd - analytic[i]) * (fd - analytic[i]);
    nFd += fd * fd;
    nAn += static_cast<double>(analytic[i]) * analytic[i];
  }
  double denom = std::max(std::sqrt(std::max(nFd, nAn)), 1e-12);
  return std::sqrt(diff) / denom;
}

//===----------------------------------------------------------------------===//
// Matmul
//===----------------------------------------------------------------------===//

Vec naiveMatmul(const Vec &a, const Vec &b, int64_t m, int64_t n, int64_t k,
                bool transB) {
  Vec c(m * n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0.0;
      for (int64_t p = 0; p < k; ++p)
        acc += static_cast<double>(a[i * k + p]) *
               (transB ? b[j * k + p] : b[p * n + j]);
      c[i * n + j] = static_cast<float>(acc);
    }
  return c;
}

class MatmulTest : public ::testing::TestWithParam<bool> {};

TEST_P(MatmulTest, ForwardMatchesTripleLoop) {
  bool transB = GetParam();
  int64_t m = 7, n = 5, k = 9;
  Vec a = randomVec(m * k, 1), b = randomVec(n * k, 2);
  Vec c(m * n, 123.0f);
  matmulForward(c.data(), a.data(), b.data(), m, n, k, transB);
  Vec ref = naiveMatmul(a, b, m, n, k, transB);
  for (size_t i = 0; i < c.size(); ++i)
    EXPECT_NEAR(c[i], ref[i], 1e-5f) << i;
  // accumulate: C += A op(B).
  matmulForward(c.data(), a.data(), b.data(), m, n, k, transB,
                /*accumulate=*/true);
  for (size_t i = 0; i < c.size(); ++i)
    EXPECT_NEAR(c[i], 2.0f * ref[i], 2e-5f) << i;
}

TEST_P(MatmulTest, BackwardMatchesFiniteDifferences) {
  bool transB = GetParam();
  int64_t m = 3, n = 4, k = 5;
  Vec a = randomVec(m * k, 3), b = randomVec(n * k, 4);
  Vec w = randomVec(m * n, 5);
  Vec c(m * n);
  auto loss = [&] {
    matmulForward(c.data(), a.data(), b.data(), m, n, k, transB);
    return dot(w, c);
  };
  Vec da(m * k, 0.0f), db(n * k, 0.0f);
  matmulBackward(da.data(), db.data(), w.data(), a.data(), b.data(), m, n, k,
                 transB);
  EXPECT_LT(gradError(loss, a, da), kGradTol);
  EXPECT_LT(gradError(loss, b, db), kGradTol);
  // Backward accumulates: a second call doubles the gradients.
  Vec da2 = da;
  matmulBackward(da2.data(), nullptr, w.data(), a.data(), b.data(), m, n, k,
                 transB);
  for (size_t i = 0; i < da.size(); ++i)
    EXPECT_NEAR(da2[i], 2.0f * da[i], 1e-5f);
}

INSTANTIATE_TEST_SUITE_P(CpuOps, MatmulTest, ::testing::Bool());

//===----------------------------------------------------------------------===//
// LayerNorm
//===----------------------------------------------------------------------===//

TEST(CpuOpsTest, LayerNormForwardNormalizes) {
  int64_t rows = 4, c = 64;
  Vec x = randomVec(rows * c, 6, -3.0f, 5.0f);
  Vec wt(c, 1.0f), bs(c, 0.0f), y(rows * c), mean(rows), rstd(rows);
  layerNormForward(y.data(), mean.data(), rstd.data(), x.data(), wt.data(),
                   bs.data(), rows, c);
  for (int64_t r = 0; r < rows; ++r) {
    double mu = 0.0, var = 0.0, xmu = 0.0;
    for (int64_t j = 0; j < c; ++j) {
      mu += y[r * c + j];
      xmu += x[r * c + j];
    }
    mu /= c;
    for (int64_t j = 0; j < c; ++j)
      var += (y[r * c + j] - mu) * (y[r * c + j] - mu);
    var /= c;
    EXPECT_NEAR(mu, 0.0, 1e-5);
    EXPECT_NEAR(var, 1.0, 1e-3); // eps = 1e-5 shrinks it slightly
    EXPECT_NEAR(mean[r], xmu / c, 1e-5);
  }
}

TEST(CpuOpsTest, LayerNormBackwardMatchesFiniteDifferences) {
  int64_t rows = 3, c = 8;
  Vec x = randomVec(rows * c, 7, -2.0f, 2.0f), wt = randomVec(c, 8),
      bs = randomVec(c, 9), w = randomVec(rows * c, 10);
  Vec y(rows * c), mean(rows), rstd(rows);
  auto loss = [&] {
    layerNormForward(y.data(), mean.data(), rstd.data(), x.data(), wt.data(),
                     bs.data(), rows, c);
    return dot(w, y);
  };
  loss();
  Vec dx(rows * c, 0.0f), dw(c, 0.0f), db(c, 0.0f);
  layerNormBackward(dx.data(), dw.data(), db.data(), w.data(), x.data(),
                    wt.data(), mean.data(), rstd.data(), rows, c);
  EXPECT_LT(gradError(loss, x, dx), kGradTol);
  EXPECT_LT(gradError(loss, wt, dw), kGradTol);
  EXPECT_LT(gradError(loss, bs, db), kGradTol);
}

//===----------------------------------------------------------------------===//
// GELU, bias, residual
//===----------------------------------------------------------------------===//

TEST(CpuOpsTest, GeluForwardAndBackward) {
  int64_t n = 40;
  Vec x = randomVec(n, 11, -4.0f, 4.0f), w = randomVec(n, 12), y(n);
  geluForward(y.data(), x.data(), n);
  for (int64_t i = 0; i < n; ++i)
    EXPECT_NEAR(y[i], x[i] / (1.0 + std::exp(-1.702 * x[i])), 1e-6);
  // Saturation: no NaN for huge magnitudes.
  Vec big = {-1e4f, 1e4f}, ybig(2);
  geluForward(ybig.data(), big.data(), 2);
  EXPECT_EQ(ybig[0], -0.0f);
  EXPECT_EQ(ybig[1], 1e4f);
  auto loss = [&] {
    geluForward(y.data(), x.data(), n);
    return dot(w, y);
  };
  Vec dx(n, 0.0f);
  geluBackward(dx.data(), x.data(), w.data(), n);
  EXPECT_LT(gradError(loss, x, dx), kGradTol);
}

TEST(CpuOpsTest, BiasAddForwardAndBackward) {
  int64_t rows = 5, c = 6;
  Vec x0 = randomVec(rows * c, 13), bias = randomVec(c, 14),
      w = randomVec(rows * c, 15);
  Vec y = x0;
  biasAddForward(y.data(), bias.data(), rows, c);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < c; ++j)
      EXPECT_FLOAT_EQ(y[r * c + j], x0[r * c + j] + bias[j]);
  auto loss = [&] {
    y = x0;
    biasAddForward(y.data(), bias.data(), rows, c);
    return dot(w, y);
  };
  Vec db(c, 0.0f);
  biasAddBackward(db.data(), w.data(), rows, c);
  EXPECT_LT(gradError(loss, bias, db), kGradTol);
}

TEST(CpuOpsTest, ResidualForwardAndBackward) {
  int64_t n = 17;
  Vec a = randomVec(n, 16), b = randomVec(n, 17), w = randomVec(n, 18), y(n);
  auto loss = [&] {
    residualForward(y.data(), a.data(), b.data(), n);
    return dot(w, y);
  };
  loss();
  for (int64_t i = 0; i < n; ++i)
    EXPECT_FLOAT_EQ(y[i], a[i] + b[i]);
  Vec da(n, 0.0f), db(n, 0.0f);
  residualBackward(da.data(), db.data(), w.data(), n);
  EXPECT_LT(gradError(loss, a, da), kGradTol);
  EXPECT_LT(gradError(loss, b, db), kGradTol);
}

//===----------------------------------------------------------------------===//
// Embedding
//===----------------------------------------------------------------------===//

TEST(CpuOpsTest, EmbeddingForwardAndScatterAddBackward) {
  int64_t vocab = 5, c = 20, n = 7;
  std::vector<int32_t> ids = {3, 0, 3, 4, 1, 3, 0}; // repeats: scatter-add
  Vec table = randomVec(vocab * c, 19), w = randomVec(n * c, 20), y(n * c);
  auto loss = [&] {
    embeddingForward(y.data(), ids.data(), table.data(), n, c, vocab);
    return dot(w, y);
  };
  loss();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < c; ++j)
      EXPECT_EQ(y[i * c + j], table[ids[i] * c + j]);
  Vec dt(vocab * c, 0.0f);
  embeddingBackward(dt.data(), ids.data(), w.data(), n, c, vocab);
  EXPECT_LT(gradError(loss, table, dt), kGradTol);
  // Row 2 is never looked up: its gradient is exactly zero.
  for (int64_t j = 0; j < c; ++j)
    EXPECT_EQ(dt[2 * c + j], 0.0f);
}

//===----------------------------------------------------------------------===//
// Softmax cross-entropy
//===----------------------------------------------------------------------===//

TEST(CpuOpsTest, CrossEntropyForwardMatchesLogSumExp) {
  int64_t rows = 4, vocab = 11;
  Vec z = randomVec(rows * vocab, 21, -5.0f, 5.0f);
  // A row of huge logits must not overflow.
  for (int64_t j = 0; j < vocab; ++j)
    z[3 * vocab + j] += 1000.0f;
  std::vector<int32_t> t = {0, 5, 10, 7};
  Vec losses(rows);
  double mean = softmaxCrossEntropy(losses.data(), nullptr, z.data(),
                                    t.data(), rows, vocab, 1.0f / rows);
  double refMean = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    double mx = -1e30, s = 0.0;
    for (int64_t j = 0; j < vocab; ++j)
      mx = std::max(mx, static_cast<double>(z[r * vocab + j]));
    for (int64_t j = 0; j < vocab; ++j)
      s += std::exp(z[r * vocab + j] - mx);
    double ref = mx + std::log(s) - z[r * vocab + t[r]];
    EXPECT_TRUE(std::isfinite(losses[r]));
    EXPECT_NEAR(losses[r], ref, 1e-4) << r;
    refMean += ref / rows;
  }
  EXPECT_NEAR(mean, refMean, 1e-4);
  // Uniform logits: loss is log(vocab).
  Vec zero(vocab, 0.0f);
  int32_t t0 = 2;
  EXPECT_NEAR(softmaxCrossEntropy(nullptr, nullptr, zero.data(), &t0, 1,
                                  vocab, 1.0f),
              std::log(double(vocab)), 1e-6);
}

TEST(CpuOpsTest, CrossEntropyBackwardMatchesFiniteDifferences) {
  int64_t rows = 3, vocab = 7;
  Vec z = randomVec(rows * vocab, 22, -2.0f, 2.0f);
  std::vector<int32_t> t = {1, 6, 0};
  Vec dz(rows * vocab, 99.0f); // overwritten, not accumulated
  softmaxCrossEntropy(nullptr, dz.data(), z.data(), t.data(), rows, vocab,
                      1.0f / rows);
  auto loss = [&] {
    return softmaxCrossEntropy(nullptr, nullptr, z.data(), t.data(), rows,
                               vocab, 1.0f / rows);
  };
  EXPECT_LT(gradError(loss, z, dz), kGradTol);
  // Each row of dlogits sums to zero.
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0.0;
    for (int64_t j = 0; j < vocab; ++j)
      s += dz[r * vocab + j];
    EXPECT_NEAR(s, 0.0, 1e-6);
  }
}

//===----------------------------------------------------------------------===//
// Dropout
//===----------------------------------------------------------------------===//

TEST(CpuOpsTest, DropoutIsDeterministicAndKeepsRate) {
  int64_t n = 1 << 20;
  float p = 0.1f;
  Vec x(n, 1.0f), y1(n), y2(n);
  dropoutForward(y1.data(), x.data(), n, p, /*seed=*/42);
  dropoutForward(y2.data(), x.data(), n, p, /*seed=*/42);
  EXPECT_EQ(y1, y2);
  int64_t kept = 0;
  double sum = 0.0;
  for (float v : y1) {
    kept += v != 0.0f;
    sum += v;
  }
  double rate = double(kept) / n;
  EXPECT_NEAR(rate, 1.0 - p, 3e-3);
  EXPECT_NEAR(sum / n, 1.0, 5e-3); // inverted dropout preserves the mean
  // A slice with an offset reproduces the same mask (recomputation/resume).
  int64_t off = 1000, len = 5000;
  Vec ys(len);
  dropoutForward(ys.data(), x.data(), len, p, 42, off);
  for (int64_t i = 0; i < len; ++i)
    ASSERT_EQ(ys[i], y1[off + i]);
  // Another seed gives another mask.
  dropoutForward(y2.data(), x.data(), n, p, /*seed=*/43);
  EXPECT_NE(y1, y2);
  // p = 0 is the identity.
  dropoutForward(y2.data(), x.data(), n, 0.0f, 7);
  EXPECT_EQ(y2, x);
}

TEST(CpuOpsTest, DropoutBackwardMatchesFiniteDifferences) {
  int64_t n = 64;
  float p = 0.25f;
  Vec x = randomVec(n, 23), w = randomVec(n, 24), y(n);
  auto loss = [&] {
    dropoutForward(y.data(), x.data(), n, p, 5, 77);
    return dot(w, y);
  };
  Vec dx(n, 0.0f);
  dropoutBackward(dx.data(), w.data(), n, p, 5, 77);
  EXPECT_LT(gradError(loss, x, dx), kGradTol);
}

//===----------------------------------------------------------------------===//
// AdamW and clipping
//===----------------------------------------------------------------------===//

TEST(CpuOpsTest, AdamWMatchesHandComputedSteps) {
  AdamWConfig cfg;
  cfg.lr = 0.1f;
  cfg.beta1 = 0.9f;
  cfg.beta2 = 0.95f;
  cfg.eps = 1e-8f;
  cfg.weightDecay = 0.01f;
  Vec p = {1.0f, -2.0f, 0.5f}, g = {0.5f, 0.0f, -1.0f};
  Vec m(3, 0.0f), v(3, 0.0f);
  adamwStep(p.data(), g.data(), m.data(), v.data(), 3, 1, cfg);
  // Step 1: mhat = g, vhat = g^2, so the Adam update is sign(g) (g != 0).
  EXPECT_NEAR(m[0], 0.05f, 1e-7);
  EXPECT_NEAR(v[0], 0.0125f, 1e-7);
  EXPECT_NEAR(p[0], 1.0 - 0.1 * (1.0 + 0.01 * 1.0), 1e-6);
  EXPECT_NEAR(p[1], -2.0 - 0.1 * (0.01 * -2.0), 1e-6); // decay only
  EXPECT_NEAR(p[2], 0.5 - 0.1 * (-1.0 + 0.01 * 0.5), 1e-6);
  // Step 2 with g = {0.5, 0, -1} again, by hand in double.
  double m0 = 0.9 * 0.05 + 0.1 * 0.5, v0 = 0.95 * 0.0125 + 0.05 * 0.25;
  double mhat = m0 / (1 - 0.81), vhat = v0 / (1 - 0.9025);
  double p0 = p[0];
  double expect = p0 - 0.1 * (mhat / (std::sqrt(vhat) + 1e-8) + 0.01 * p0);
  adamwStep(p.data(), g.data(), m.data(), v.data(), 3, 2, cfg);
  EXPECT_NEAR(p[0], expect, 1e-6);
}

TEST(CpuOpsTest, ClipGradNorm) {
  Vec g = {3.0f, 4.0f};
  EXPECT_DOUBLE_EQ(clipGradNorm(g.data(), 2, 1.0), 5.0);
  EXPECT_NEAR(g[0], 0.6f, 1e-6);
  EXPECT_NEAR(g[1], 0.8f, 1e-6);
  // Below the threshold: untouched, the norm is still reported.
  Vec h = {0.3f, 0.4f};
  EXPECT_NEAR(clipGradNorm(h.data(), 2, 1.0), 0.5, 1e-7);
  EXPECT_EQ(h[0], 0.3f);
  // Many chunks: the reduction matches a serial double sum.
  int64_t n = 100000;
  Vec big = randomVec(n, 25);
  double ref = 0.0;
  for (float x : big)
    ref += double(x) * x;
  EXPECT_NEAR(clipGradNorm(big.data(), n, 0.0), std::sqrt(ref), 1e-9);
}

} // namespace
