//===- ReferenceAttentionTest.cpp - the CPU attention oracle --------------===//
//
// The oracle is checked against a second, differently written formula (a
// dense score matrix with -inf for masked pairs, softmax in long double without
// max subtraction), and its backward against central finite differences.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Runtime/ReferenceAttention.h"

#include "gtest/gtest.h"

#include <cmath>
#include <limits>
#include <random>

using namespace sparsetx;

namespace {

std::vector<double> randomVector(size_t size, std::mt19937_64 &rng) {
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<double> v(size);
  for (double &x : v)
    x = dist(rng);
  return v;
}

bool causal(int64_t, int64_t i, int64_t j) { return j <= i; }

/// Sparse Transformer "strided" with l = 3, plus a head-dependent twist so
/// that the two batch-heads see different masks.
bool strided(int64_t bh, int64_t i, int64_t j) {
  if (j > i)
    return false;
  if (bh == 1 && j == 0 && i > 0)
    return false;
  return i - j < 3 || (i - j) % 3 == 0;
}

/// Dense masked softmax in long double, written as formulas over a whole score
/// matrix rather than per-row running statistics.
void naiveForward(const AttentionShape &shape, const std::vector<double> &q,
                  const std::vector<double> &k, const std::vector<double> &v,
                  AttendsFn attends, std::vector<long double> &o,
                  std::vector<long double> &lse) {
  int64_t bhs = shape.batchHeads, n = shape.seqLen, d = shape.headDim;
  long double scale = 1.0L / std::sqrt((long double)d);
  if (shape.scale > 0)
    scale = shape.scale;
  o.assign(bhs * n * d, 0);
  lse.assign(bhs * n, 0);
  for (int64_t bh = 0; bh < bhs; ++bh) {
    std::vector<long double> s(n * n);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        long double acc = 0;
        for (int64_t t = 0; t < d; ++t)
          acc += (long double)q[(bh * n + i) * d + t] * k[(bh * n + j) * d + t];
        s[i * n + j] = attends(bh, i, j)
                           ? scale * acc
                           : -std::numeric_limits<long double>::infinity();
      }
    for (int64_t i = 0; i < n; ++i) {
      long double z = 0;
      for (int64_t j = 0; j < n; ++j)
        z += std::exp(s[i * n + j]); // exp(-inf) = 0
      lse[bh * n + i] = std::log(z); // log(0) = -inf
      for (int64_t t = 0; t < d; ++t) {
        long double acc = 0;
        for (int64_t j = 0; j < n; ++j)
          if (z > 0)
            acc += std::exp(s[i * n + j]) / z * v[(bh * n + j) * d + t];
        o[(bh * n + i) * d + t] = acc;
      }
    }
  }
}

void expectForwardMatchesNaive(const AttentionShape &shape, AttendsFn attends,
                               uint64_t seed) {
  std::mt19937_64 rng(seed);
  size_t size = shape.batchHeads * shape.seqLen * shape.headDim;
  std::vector<double> q = randomVector(size, rng), k = randomVector(size, rng),
                      v = randomVector(size, rng);
  std::vector<double> o, lse;
  referenceAttentionForward(shape, q, k, v, attends, o, lse);
  std::vector<long double> naiveO, naiveLse;
  naiveForward(shape, q, k, v, attends, naiveO, naiveLse);
  ASSERT_EQ(o.size(), size);
  ASSERT_EQ(lse.size(), size_t(shape.batchHeads * shape.seqLen));
  for (size_t x = 0; x < size; ++x)
    EXPECT_NEAR(o[x], (double)naiveO[x], 1e-13) << "o[" << x << "]";
  for (size_t x = 0; x < lse.size(); ++x) {
    if (std::isinf(naiveLse[x]))
      EXPECT_EQ(lse[x], (double)naiveLse[x]) << "lse[" << x << "]";
    else
      EXPECT_NEAR(lse[x], (double)naiveLse[x], 1e-13) << "lse[" << x << "]";
  }
}

TEST(ReferenceAttention, ForwardMatchesDenseSoftmax) {
  expectForwardMatchesNaive({2, 9, 5, 0}, causal, 1);
  expectForwardMatchesNaive({2, 9, 5, 0}, strided, 2);
  expectForwardMatchesNaive({1, 6, 3, 0.7},
                            [](int64_t, int64_t, int64_t) { return true; }, 3);
}

TEST(ReferenceAttention, LargeScoresDoNotOverflow) {
  // Scores near 1000: exp overflows without the max subtraction.
  AttentionShape shape{1, 4, 2, 500.0};
  std::vector<double> q = {1, 1, 1, 0.5, 0.5, 1, 1, 1};
  std::vector<double> k = q, v = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<double> o, lse;
  referenceAttentionForward(shape, q, k, v, causal, o, lse);
  for (double x : o)
    EXPECT_TRUE(std::isfinite(x));
  for (double x : lse)
    EXPECT_TRUE(std::isfinite(x));
  // Row 0 attends only key 0.
  EXPECT_DOUBLE_EQ(o[0], 1);
  EXPECT_DOUBLE_EQ(o[1], 2);
  EXPECT_DOUBLE_EQ(lse[0], 500.0 * 2);
}

TEST(ReferenceAttention, FullyMaskedRow) {
  AttentionShape shape{1, 5, 3, 0};
  auto attends = [](int64_t, int64_t i, int64_t j) {
    return i != 2 && j <= i;
  };
  expectForwardMatchesNaive(shape, attends, 4);

  std::mt19937_64 rng(5);
  std::vector<double> q = randomVector(15, rng), k = randomVector(15, rng),
                      v = randomVector(15, rng), dO = randomVector(15, rng);
  std::vector<double> o, lse;
  referenceAttentionForward(shape, q, k, v, attends, o, lse);
  EXPECT_EQ(lse[2], -std::numeric_limits<double>::infinity());
  for (int t = 0; t < 3; ++t)
    EXPECT_EQ(o[2 * 3 + t], 0.0);
  EXPECT_TRUE(std::isfinite(lse[3]));

  std::vector<double> dQ, dK, dV;
  referenceAttentionBackward(shape, q, k, v, dO, attends, dQ, dK, dV);
  for (int t = 0; t < 3; ++t)
    EXPECT_EQ(dQ[2 * 3 + t], 0.0);
  for (double x : dK)
    EXPECT_TRUE(std::isfinite(x));
}

TEST(ReferenceAttention, DefaultScale) {
  AttentionShape shape{1, 6, 4, 0};
  EXPECT_DOUBLE_EQ(shape.effectiveScale(), 0.5);
  shape.scale = -1;
  EXPECT_DOUBLE_EQ(shape.effectiveScale(), 0.5);
  shape.scale = 0.25;
  EXPECT_DOUBLE_EQ(shape.effectiveScale(), 0.25);

  std::mt19937_64 rng(6);
  std::vector<double> q = randomVector(24, rng), k = randomVector(24, rng),
                      v = randomVector(24, rng);
  std::vector<double> oDefault, lseDefault, oExplicit, lseExplicit, oOther,
      lseOther;
  referenceAttentionForward({1, 6, 4, 0}, q, k, v, causal, oDefault,
                            lseDefault);
  referenceAttentionForward({1, 6, 4, 0.5}, q, k, v, causal, oExplicit,
                            lseExplicit);
  referenceAttentionForward({1, 6, 4, 1.0}, q, k, v, causal, oOther, lseOther);
  EXPECT_EQ(oDefault, oExplicit);
  EXPECT_EQ(lseDefault, lseExplicit);
  EXPECT_NE(lseDefault, lseOther);
}

/// L = sum(o * w): dL/do = w, so the backward with dO = w gives dL/dq etc.
double loss(const AttentionShape &shape, const std::vector<double> &q,
            const std::vector<double> &k, const std::vector<double> &v,
            const std::vector<double> &w, AttendsFn attends) {
  std::vector<double> o, lse;
  referenceAttentionForward(shape, q, k, v, attends, o, lse);
  double l = 0;
  for (size_t x = 0; x < o.size(); ++x)
    l += o[x] * w[x];
  return l;
}

void expectBackwardMatchesFiniteDifferences(AttendsFn attends, uint64_t seed) {
  AttentionShape shape{2, 7, 4, 0};
  std::mt19937_64 rng(seed);
  size_t size = 2 * 7 * 4;
  std::vector<double> q = randomVector(size, rng), k = randomVector(size, rng),
                      v = randomVector(size, rng), w = randomVector(size, rng);
  std::vector<double> dQ, dK, dV;
  referenceAttentionBackward(shape, q, k, v, w, attends, dQ, dK, dV);

  const double h = 1e-5;
  auto check = [&](std::vector<double> &input, const std::vector<double> &grad,
                   const char *what) {
    double maxErr = 0, maxGrad = 0;
    for (size_t x = 0; x < size; ++x) {
      double saved = input[x];
      input[x] = saved + h;
      double plus = loss(shape, q, k, v, w, attends);
      input[x] = saved - h;
      double minus = loss(shape, q, k, v, w, attends);
      input[x] = saved;
      double fd = (plus - minus) / (2 * h);
      // Relative to the gradient's scale, so entries that are ~0 (keys no
      // query attends, masked-out rows) do not divide by zero.
      EXPECT_LT(std::abs(fd - grad[x]), 1e-6 * std::max(1e-2, std::abs(grad[x])))
          << what << "[" << x << "]: finite difference " << fd << ", backward "
          << grad[x];
      maxErr = std::max(maxErr, std::abs(fd - grad[x]));
      maxGrad = std::max(maxGrad, std::abs(grad[x]));
    }
    EXPECT_GT(maxGrad, 1e-3) << what << " is trivially zero";
    EXPECT_LT(maxErr / maxGrad, 1e-6) << what;
  };
  check(q, dQ, "dQ");
  check(k, dK, "dK");
  check(v, dV, "dV");
}

TEST(ReferenceAttention, BackwardMatchesFiniteDifferencesCausal) {
  expectBackwardMatchesFiniteDifferences(causal, 7);
}

TEST(ReferenceAttention, BackwardMatchesFiniteDifferencesStrided) {
  expectBackwardMatchesFiniteDifferences(strided, 8);
}

TEST(ReferenceAttention, DeterministicAndSerialPredicate) {
  // The predicate is called from the calling thread only (it may be a
  // stateful interpreter), and repeated runs agree bit for bit.
  AttentionShape shape{3, 33, 8, 0};
  std::mt19937_64 rng(9);
  size_t size = 3 * 33 * 8;
  std::vector<double> q = randomVector(size, rng), k = randomVector(size, rng),
                      v = randomVector(size, rng), dO = randomVector(size, rng);
  int64_t calls = 0;
  auto counting = [&](int64_t bh, int64_t i, int64_t j) {
    ++calls; // A data race here would show up under TSan and in the count.
    return strided(bh, i, j);
  };
  std::vector<double> o1, lse1, o2, lse2;
  referenceAttentionForward(shape, q, k, v, counting, o1, lse1);
  EXPECT_EQ(calls, 3 * 33 * 33);
  referenceAttentionForward(shape, q, k, v, counting, o2, lse2);
  EXPECT_EQ(o1, o2);
  EXPECT_EQ(lse1, lse2);
  std::vector<double> dQ1, dK1, dV1, dQ2, dK2, dV2;
  referenceAttentionBackward(shape, q, k, v, dO, counting, dQ1, dK1, dV1);
  referenceAttentionBackward(shape, q, k, v, dO, counting, dQ2, dK2, dV2);
  EXPECT_EQ(dQ1, dQ2);
  EXPECT_EQ(dK1, dK2);
  EXPECT_EQ(dV1, dV2);
}

} // namespace
