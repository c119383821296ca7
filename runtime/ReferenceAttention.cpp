//===- ReferenceAttention.cpp - the CPU oracle of attention ---------------===//
//
// Brute force in float64: every (i, j) pair goes through the mask predicate,
// nothing is blocked or reordered, so the oracle shares no decision with the
// compiler. Rows run in parallel, but the predicate is only ever called from
// the calling thread (it may be a stateful interpreter): each batch-head's mask
// is evaluated serially into a bitmap first. The arithmetic per row is
// sequential, so results do not depend on the thread count.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Runtime/ReferenceAttention.h"

#include "llvm/Support/Parallel.h"

#include <cassert>
#include <cmath>
#include <limits>

using namespace sparsetx;

double AttentionShape::effectiveScale() const {
  return scale > 0 ? scale : 1.0 / std::sqrt(static_cast<double>(headDim));
}

namespace {

/// One batch-head's mask, n x n bits, row-major.
class MaskBits {
public:
  MaskBits(int64_t n) : n(n), words((n * n + 63) / 64, 0) {}

  void fill(int64_t bh, AttendsFn attends) {
    std::fill(words.begin(), words.end(), 0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        if (attends(bh, i, j)) {
          int64_t bit = i * n + j;
          words[bit / 64] |= uint64_t(1) << (bit % 64);
        }
  }

  bool test(int64_t i, int64_t j) const {
    int64_t bit = i * n + j;
    return (words[bit / 64] >> (bit % 64)) & 1;
  }

private:
  int64_t n;
  std::vector<uint64_t> words;
};

double dot(const double *a, const double *b, int64_t d) {
  double s = 0;
  for (int64_t t = 0; t < d; ++t)
    s += a[t] * b[t];
  return s;
}

/// Softmax statistics of one query row: the row maximum of the scaled scores
/// and the log of the denominator (subtracting the max first so that exp never
/// overflows). lse = -inf for a row that attends nothing.
double rowLogSumExp(const MaskBits &mask, int64_t i, int64_t n, int64_t d,
                    double scale, const double *qi, const double *k) {
  double maxScore = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < n; ++j)
    if (mask.test(i, j))
      maxScore = std::max(maxScore, scale * dot(qi, k + j * d, d));
  if (maxScore == -std::numeric_limits<double>::infinity())
    return maxScore;
  double sum = 0;
  for (int64_t j = 0; j < n; ++j)
    if (mask.test(i, j))
      sum += std::exp(scale * dot(qi, k + j * d, d) - maxScore);
  return maxScore + std::log(sum);
}

void checkSizes(const AttentionShape &shape, size_t q, size_t k, size_t v) {
  size_t size = shape.batchHeads * shape.seqLen * shape.headDim;
  (void)size;
  assert(q == size && k == size && v == size && "q, k, v must be [bh, n, d]");
}

} // namespace

void sparsetx::referenceAttentionForward(const AttentionShape &shape,
                                         llvm::ArrayRef<double> q,
                                         llvm::ArrayRef<double> k,
                                         llvm::ArrayRef<double> v,
                                         AttendsFn attends,
                                         std::vector<double> &o,
                                         std::vector<double> &lse) {
  checkSizes(shape, q.size(), k.size(), v.size());
  const int64_t bhs = shape.batchHeads, n = shape.seqLen, d = shape.headDim;
  const double scale = shape.effectiveScale();
  o.assign(bhs * n * d, 0.0);
  lse.assign(bhs * n, 0.0);
  MaskBits mask(n);
  for (int64_t bh = 0; bh < bhs; ++bh) {
    mask.fill(bh, attends);
    const double *qb = q.data() + bh * n * d, *kb = k.data() + bh * n * d,
                 *vb = v.data() + bh * n * d;
    double *ob = o.data() + bh * n * d, *lseb = lse.data() + bh * n;
    llvm::parallelFor(0, n, [&](size_t row) {
      int64_t i = row;
      const double *qi = qb + i * d;
      double rowLse = rowLogSumExp(mask, i, n, d, scale, qi, kb);
      lseb[i] = rowLse;
      double *oi = ob + i * d;
      if (std::isinf(rowLse))
        return; // Attends nothing: o stays 0.
      for (int64_t j = 0; j < n; ++j) {
        if (!mask.test(i, j))
          continue;
        double p = std::exp(scale * dot(qi, kb + j * d, d) - rowLse);
        for (int64_t t = 0; t < d; ++t)
          oi[t] += p * vb[j * d + t];
      }
    });
  }
}

// With P = softmax(S), S = scale * Q K^T (masked), O = P V:
//   dV = P^T dO,  dP = dO V^T,  dS = P * (dP - D) with D_i = rowsum(dO * O)_i,
//   dQ = scale * dS K,  dK = scale * dS^T Q.
// P is recomputed from lse instead of stored (as the GPU kernels do), so memory
// stays O(n d) plus the mask bitmap. dQ is accumulated row by row, dK and dV
// column by column, each by one thread: no atomics, deterministic sums.
void sparsetx::referenceAttentionBackward(
    const AttentionShape &shape, llvm::ArrayRef<double> q,
    llvm::ArrayRef<double> k, llvm::ArrayRef<double> v,
    llvm::ArrayRef<double> dO, AttendsFn attends, std::vector<double> &dQ,
    std::vector<double> &dK, std::vector<double> &dV) {
  checkSizes(shape, q.size(), k.size(), v.size());
  assert(dO.size() == q.size() && "dO must be [bh, n, d]");
  const int64_t bhs = shape.batchHeads, n = shape.seqLen, d = shape.headDim;
  const double scale = shape.effectiveScale();
  dQ.assign(bhs * n * d, 0.0);
  dK.assign(bhs * n * d, 0.0);
  dV.assign(bhs * n * d, 0.0);
  MaskBits mask(n);
  std::vector<double> lse(n), delta(n);
  for (int64_t bh = 0; bh < bhs; ++bh) {
    mask.fill(bh, attends);
    const size_t base = bh * n * d;
    const double *qb = q.data() + base, *kb = k.data() + base,
                 *vb = v.data() + base, *dOb = dO.data() + base;
    double *dQb = dQ.data() + base, *dKb = dK.data() + base,
           *dVb = dV.data() + base;

    // Rows: lse, D_i = sum_j P_ij (dO_i . v_j) = dO_i . O_i, then dQ_i.
    llvm::parallelFor(0, n, [&](size_t row) {
      int64_t i = row;
      const double *qi = qb + i * d, *dOi = dOb + i * d;
      lse[i] = rowLogSumExp(mask, i, n, d, scale, qi, kb);
      delta[i] = 0;
      if (std::isinf(lse[i]))
        return;
      double rowDelta = 0;
      for (int64_t j = 0; j < n; ++j)
        if (mask.test(i, j))
          rowDelta += std::exp(scale * dot(qi, kb + j * d, d) - lse[i]) *
                      dot(dOi, vb + j * d, d);
      delta[i] = rowDelta;
      double *dQi = dQb + i * d;
      for (int64_t j = 0; j < n; ++j) {
        if (!mask.test(i, j))
          continue;
        const double *kj = kb + j * d;
        double p = std::exp(scale * dot(qi, kj, d) - lse[i]);
        double dS = p * (dot(dOi, vb + j * d, d) - rowDelta);
        for (int64_t t = 0; t < d; ++t)
          dQi[t] += scale * dS * kj[t];
      }
    });

    // Columns: dK_j and dV_j.
    llvm::parallelFor(0, n, [&](size_t col) {
      int64_t j = col;
      const double *kj = kb + j * d, *vj = vb + j * d;
      double *dKj = dKb + j * d, *dVj = dVb + j * d;
      for (int64_t i = 0; i < n; ++i) {
        if (!mask.test(i, j))
          continue;
        const double *qi = qb + i * d, *dOi = dOb + i * d;
        double p = std::exp(scale * dot(qi, kj, d) - lse[i]);
        double dS = p * (dot(dOi, vj, d) - delta[i]);
        for (int64_t t = 0; t < d; ++t) {
          dVj[t] += p * dOi[t];
          dKj[t] += scale * dS * qi[t];
        }
      }
    });
  }
}
