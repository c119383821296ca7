//===- SparseAttention.cpp - masked attention over per-row key lists ------===//
//
// Rows (forward, decode, dQ) and columns (dK, dV) are independent units of
// work; a parallel loop runs over (batch, head, chunk of rows) so that both
// small batches of long sequences and large batches of short ones keep every
// core busy. Within a unit, the arithmetic is sequential in a fixed order.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Runtime/SparseAttention.h"

#include "sparsetx/Support/Parallel.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>

using namespace sparsetx;

//===----------------------------------------------------------------------===//
// RowSparsity
//===----------------------------------------------------------------------===//

RowSparsity
RowSparsity::fromPredicate(int64_t n,
                           llvm::function_ref<bool(int64_t, int64_t)> attends,
                           bool causal) {
  return fromRows(
      n,
      [&](int64_t i, int64_t count, uint8_t *out) {
        for (int64_t j = 0; j < count; ++j)
          out[j] = attends(i, j) ? 1 : 0;
      },
      causal);
}

RowSparsity RowSparsity::fromRows(
    int64_t n, llvm::function_ref<void(int64_t, int64_t, uint8_t *)> row,
    bool causal) {
  assert(n >= 0 && n <= std::numeric_limits<int32_t>::max() &&
         "sequence length out of range");
  RowSparsity s;
  s.n = n;
  s.rowStart.assign(n + 1, 0);
  std::vector<uint8_t> bits(n);
  for (int64_t i = 0; i < n; ++i) {
    int64_t count = causal ? i + 1 : n;
    row(i, count, bits.data());
    for (int64_t j = 0; j < count; ++j)
      if (bits[j])
        s.rowKeys.push_back(static_cast<int32_t>(j));
    s.rowStart[i + 1] = static_cast<int64_t>(s.rowKeys.size());
  }
  s.finish();
  return s;
}

void RowSparsity::finish() {
  colStart.assign(n + 1, 0);
  maxRow = 0;
  for (int64_t i = 0; i < n; ++i) {
    maxRow = std::max(maxRow, rowStart[i + 1] - rowStart[i]);
    for (int64_t e = rowStart[i]; e < rowStart[i + 1]; ++e)
      ++colStart[rowKeys[e] + 1];
  }
  for (int64_t j = 0; j < n; ++j)
    colStart[j + 1] += colStart[j];
  colQueries.resize(rowKeys.size());
  std::vector<int64_t> fill(colStart.begin(), colStart.end() - 1);
  // Rows ascending, so every column's queries come out ascending.
  for (int64_t i = 0; i < n; ++i)
    for (int64_t e = rowStart[i]; e < rowStart[i + 1]; ++e)
      colQueries[fill[rowKeys[e]]++] = static_cast<int32_t>(i);
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

namespace {

/// a . b in a fixed order: eight interleaved partial sums (which the compiler
/// keeps in one SIMD register), then the tail, then the partials pairwise.
template <typename T> T dot(const T *a, const T *b, int64_t d) {
  T acc[8] = {};
  int64_t t = 0;
  for (; t + 8 <= d; t += 8)
    for (int l = 0; l < 8; ++l)
      acc[l] += a[t + l] * b[t + l];
  for (; t < d; ++t)
    acc[0] += a[t] * b[t];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) +
         ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

template <typename T> constexpr T negInf() {
  return -std::numeric_limits<T>::infinity();
}

const RowSparsity &maskOf(HeadMasks masks, int64_t h) {
  return *masks[masks.size() == 1 ? 0 : h];
}

void checkMasks(const SparseAttentionShape &shape, HeadMasks masks) {
  (void)shape;
  (void)masks;
  assert((masks.size() == 1 || static_cast<int64_t>(masks.size()) == shape.heads) &&
         "one mask, or one per head");
  for ([[maybe_unused]] const RowSparsity *m : masks)
    assert(m && m->seqLen() == shape.seqLen && "mask built for another n");
}

/// Work units: (batch, head, chunk of kChunk rows or columns).
constexpr int64_t kChunk = 32;

template <typename Fn>
void forEachUnit(const SparseAttentionShape &shape, Fn fn) {
  const int64_t chunks = (shape.seqLen + kChunk - 1) / kChunk;
  const int64_t units = shape.batch * shape.heads * chunks;
  sparsetx::parallelFor(0, static_cast<size_t>(units), [&](size_t unit) {
    int64_t u = static_cast<int64_t>(unit);
    int64_t chunk = u % chunks, bh = u / chunks;
    int64_t b = bh / shape.heads, h = bh % shape.heads;
    int64_t begin = chunk * kChunk;
    fn(b, h, begin, std::min(shape.seqLen, begin + kChunk));
  });
}

/// Softmax attention of one query row over `keys`; returns the lse. `scores`
/// has room for keys.size() entries.
template <typename T>
T attendRow(llvm::ArrayRef<int32_t> keys, T scale, int64_t qkDim, int64_t vDim,
            const T *qi, HeadView<const T> k, HeadView<const T> v, int64_t b,
            int64_t h, T *oi, T *scores) {
  std::fill(oi, oi + vDim, T(0));
  if (keys.empty())
    return negInf<T>();
  T maxScore = negInf<T>();
  for (size_t e = 0; e < keys.size(); ++e) {
    scores[e] = scale * dot(qi, k.row(b, h, keys[e]), qkDim);
    maxScore = std::max(maxScore, scores[e]);
  }
  T sum = 0;
  for (size_t e = 0; e < keys.size(); ++e) {
    scores[e] = std::exp(scores[e] - maxScore);
    sum += scores[e];
  }
  T inv = T(1) / sum;
  for (size_t e = 0; e < keys.size(); ++e) {
    const T *vj = v.row(b, h, keys[e]);
    T p = scores[e] * inv;
    for (int64_t t = 0; t < vDim; ++t)
      oi[t] += p * vj[t];
  }
  return maxScore + std::log(sum);
}

} // namespace

template <typename T>
void sparsetx::sparseAttentionForward(const SparseAttentionShape &shape,
                                      HeadMasks masks, HeadView<const T> q,
                                      HeadView<const T> k, HeadView<const T> v,
                                      HeadView<T> o, T *lse) {
  checkMasks(shape, masks);
  const T scale = static_cast<T>(shape.scale);
  forEachUnit(shape, [&](int64_t b, int64_t h, int64_t begin, int64_t end) {
    const RowSparsity &mask = maskOf(masks, h);
    std::vector<T> scores(mask.maxKeys());
    for (int64_t i = begin; i < end; ++i) {
      T rowLse = attendRow<T>(mask.keys(i), scale, shape.qkDim, shape.vDim,
                              q.row(b, h, i), k, v, b, h, o.row(b, h, i),
                              scores.data());
      if (lse)
        lse[(b * shape.heads + h) * shape.seqLen + i] = rowLse;
    }
  });
}

// With P = softmax(S), S = scale q k^T (masked), O = P V:
//   dV = P^T dO,  dP = dO V^T,  dS = P * (dP - D) with D_i = sum_j P_ij dP_ij,
//   dQ = scale dS K,  dK = scale dS^T Q.
// A row pass computes D and dQ; a column pass recomputes P and dS for each of
// its queries and sums dK and dV.
template <typename T>
void sparsetx::sparseAttentionBackward(
    const SparseAttentionShape &shape, HeadMasks masks, HeadView<const T> q,
    HeadView<const T> k, HeadView<const T> v, const T *lse,
    HeadView<const T> dO, HeadView<T> dQ, HeadView<T> dK, HeadView<T> dV) {
  checkMasks(shape, masks);
  const T scale = static_cast<T>(shape.scale);
  const int64_t n = shape.seqLen, dqk = shape.qkDim, dv = shape.vDim;
  std::vector<T> delta(shape.batch * shape.heads * n);

  forEachUnit(shape, [&](int64_t b, int64_t h, int64_t begin, int64_t end) {
    const RowSparsity &mask = maskOf(masks, h);
    const int64_t bh = b * shape.heads + h;
    std::vector<T> p(mask.maxKeys()), dp(mask.maxKeys());
    for (int64_t i = begin; i < end; ++i) {
      llvm::ArrayRef<int32_t> keys = mask.keys(i);
      const T *qi = q.row(b, h, i), *dOi = dO.row(b, h, i);
      T *dQi = dQ.row(b, h, i);
      std::fill(dQi, dQi + dqk, T(0));
      T rowLse = lse[bh * n + i], rowDelta = 0;
      if (std::isinf(rowLse) || keys.empty()) {
        delta[bh * n + i] = 0;
        continue;
      }
      for (size_t e = 0; e < keys.size(); ++e) {
        p[e] = std::exp(scale * dot(qi, k.row(b, h, keys[e]), dqk) - rowLse);
        dp[e] = dot(dOi, v.row(b, h, keys[e]), dv);
        rowDelta += p[e] * dp[e];
      }
      delta[bh * n + i] = rowDelta;
      for (size_t e = 0; e < keys.size(); ++e) {
        T dS = scale * p[e] * (dp[e] - rowDelta);
        const T *kj = k.row(b, h, keys[e]);
        for (int64_t t = 0; t < dqk; ++t)
          dQi[t] += dS * kj[t];
      }
    }
  });

  forEachUnit(shape, [&](int64_t b, int64_t h, int64_t begin, int64_t end) {
    const RowSparsity &mask = maskOf(masks, h);
    const int64_t bh = b * shape.heads + h;
    for (int64_t j = begin; j < end; ++j) {
      const T *kj = k.row(b, h, j), *vj = v.row(b, h, j);
      T *dKj = dK.row(b, h, j), *dVj = dV.row(b, h, j);
      std::fill(dKj, dKj + dqk, T(0));
      std::fill(dVj, dVj + dv, T(0));
      for (int32_t i : mask.queries(j)) {
        T rowLse = lse[bh * n + i];
        if (std::isinf(rowLse))
          continue;
        const T *qi = q.row(b, h, i), *dOi = dO.row(b, h, i);
        T pij = std::exp(scale * dot(qi, kj, dqk) - rowLse);
        T dS = scale * pij * (dot(dOi, vj, dv) - delta[bh * n + i]);
        for (int64_t t = 0; t < dv; ++t)
          dVj[t] += pij * dOi[t];
        for (int64_t t = 0; t < dqk; ++t)
          dKj[t] += dS * qi[t];
      }
    }
  });
}

template <typename T>
void sparsetx::sparseAttentionDecode(const SparseAttentionShape &shape,
                                     HeadMasks masks, int64_t position,
                                     HeadView<const T> q,
                                     HeadView<const T> kCache,
                                     HeadView<const T> vCache, HeadView<T> o) {
  checkMasks(shape, masks);
  assert(position >= 0 && position < shape.seqLen && "position out of range");
  const T scale = static_cast<T>(shape.scale);
  const int64_t units = shape.batch * shape.heads;
  sparsetx::parallelFor(0, static_cast<size_t>(units), [&](size_t unit) {
    int64_t b = static_cast<int64_t>(unit) / shape.heads;
    int64_t h = static_cast<int64_t>(unit) % shape.heads;
    llvm::ArrayRef<int32_t> keys = maskOf(masks, h).keys(position);
    // Keys after the position are not in the cache yet (a causal pattern has
    // none; the caller rejects the others).
    keys = keys.take_while([&](int32_t j) { return j <= position; });
    std::vector<T> scores(keys.size());
    attendRow<T>(keys, scale, shape.qkDim, shape.vDim, q.row(b, h, 0), kCache,
                 vCache, b, h, o.row(b, h, 0), scores.data());
  });
}

#define SPARSETX_INSTANTIATE(T)                                                \
  template void sparsetx::sparseAttentionForward<T>(                           \
      const SparseAttentionShape &, HeadMasks, HeadView<const T>,              \
      HeadView<const T>, HeadView<const T>, HeadView<T>, T *);                 \
  template void sparsetx::sparseAttentionBackward<T>(                          \
      const SparseAttentionShape &, HeadMasks, HeadView<const T>,              \
      HeadView<const T>, HeadView<const T>, const T *, HeadView<const T>,      \
      HeadView<T>, HeadView<T>, HeadView<T>);                                  \
  template void sparsetx::sparseAttentionDecode<T>(                            \
      const SparseAttentionShape &, HeadMasks, int64_t, HeadView<const T>,     \
      HeadView<const T>, HeadView<const T>, HeadView<T>);

SPARSETX_INSTANTIATE(float)
SPARSETX_INSTANTIATE(double)
