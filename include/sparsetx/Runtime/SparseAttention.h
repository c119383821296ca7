//===- SparseAttention.h - masked attention over per-row key lists -*- C++ -*-===//
//
// The one CPU attention of the project. A mask is turned into the list of
// keys each query row attends (RowSparsity, with its transpose), and softmax
// attention runs over exactly those pairs, forward, backward and one-row
// decode, for float (the CPU backend of the model) and double (the float64
// oracle of the GPU kernel tests, ReferenceAttention.h).
//
// Tensors are strided views, so the same code reads the GPU tests'
// [batchHeads, n, d] arrays and the model's token-major [batch, n, heads, d]
// projections without copies: element (b, h, i, t) of a view lives at
// data[b * batchStride + h * headStride + i * rowStride + t].
//
// Determinism: every output element is a sum in a fixed order (dQ over the
// row's keys, dK and dV over the column's queries, both ascending), computed
// by one thread, so results do not depend on the thread count.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_RUNTIME_SPARSEATTENTION_H
#define SPARSETX_RUNTIME_SPARSEATTENTION_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLFunctionalExtras.h"

#include <cstdint>
#include <vector>

namespace sparsetx {

/// The keys every query row attends at sequence length n (ascending), and the
/// queries every key is attended by (the transpose, ascending).
class RowSparsity {
public:
  RowSparsity() = default;

  /// From a pair predicate, evaluated for every j < n of every row (or only
  /// j <= i when `causal`).
  static RowSparsity
  fromPredicate(int64_t n, llvm::function_ref<bool(int64_t i, int64_t j)> attends,
                bool causal = false);
  /// From a row evaluator: row(i, count, out) sets out[j] (0 or 1) for
  /// j in [0, count); count is n, or i + 1 when `causal`.
  static RowSparsity
  fromRows(int64_t n,
           llvm::function_ref<void(int64_t i, int64_t count, uint8_t *out)> row,
           bool causal = false);

  int64_t seqLen() const { return n; }
  int64_t numPairs() const { return static_cast<int64_t>(rowKeys.size()); }
  llvm::ArrayRef<int32_t> keys(int64_t i) const {
    return llvm::ArrayRef<int32_t>(rowKeys).slice(rowStart[i],
                                                  rowStart[i + 1] - rowStart[i]);
  }
  llvm::ArrayRef<int32_t> queries(int64_t j) const {
    return llvm::ArrayRef<int32_t>(colQueries)
        .slice(colStart[j], colStart[j + 1] - colStart[j]);
  }
  /// The longest row.
  int64_t maxKeys() const { return maxRow; }
  /// The lists whole (CSR): row i's keys are allRowKeys()[rowOffsets()[i] ..
  /// rowOffsets()[i + 1]), key j's queries likewise; for uploading.
  llvm::ArrayRef<int64_t> rowOffsets() const { return rowStart; }
  llvm::ArrayRef<int32_t> allRowKeys() const { return rowKeys; }
  llvm::ArrayRef<int64_t> colOffsets() const { return colStart; }
  llvm::ArrayRef<int32_t> allColQueries() const { return colQueries; }

private:
  void finish();

  int64_t n = 0, maxRow = 0;
  std::vector<int64_t> rowStart, colStart;
  std::vector<int32_t> rowKeys, colQueries;
};

/// A strided [batch, heads, n, d] view (see the file comment).
template <typename T> struct HeadView {
  T *data = nullptr;
  int64_t batchStride = 0, headStride = 0, rowStride = 0;

  T *row(int64_t b, int64_t h, int64_t i) const {
    return data + b * batchStride + h * headStride + i * rowStride;
  }
  /// A contiguous [batch * heads, n, d] array (heads = 1 per batch entry).
  static HeadView contiguous(T *data, int64_t n, int64_t d) {
    return {data, n * d, 0, d};
  }
  /// The model's token-major [batch, n, heads, d] array.
  static HeadView tokenMajor(T *data, int64_t n, int64_t heads, int64_t d) {
    return {data, n * heads * d, d, heads * d};
  }
};

struct SparseAttentionShape {
  int64_t batch = 1, heads = 1, seqLen = 0;
  /// Width of q and k rows, and of v and o rows.
  int64_t qkDim = 0, vDim = 0;
  /// Scores are scale * q . k.
  double scale = 1.0;
};

/// The mask of head h is masks[h] (masks.size() == heads) or masks[0] for
/// every head (masks.size() == 1). Each mask's seqLen() must be shape.seqLen.
using HeadMasks = llvm::ArrayRef<const RowSparsity *>;

/// o = softmax(scale q k^T, masked) v; lse[(b * heads + h) * n + i] = natural
/// log of the row's softmax denominator (-inf, and o = 0, for a row that
/// attends nothing). lse may be null.
template <typename T>
void sparseAttentionForward(const SparseAttentionShape &shape, HeadMasks masks,
                            HeadView<const T> q, HeadView<const T> k,
                            HeadView<const T> v, HeadView<T> o, T *lse);

/// Gradients (overwritten) from dO and the forward's lse: P is recomputed, no
/// attention matrix is stored. dQ, dK, dV may not alias the inputs.
template <typename T>
void sparseAttentionBackward(const SparseAttentionShape &shape, HeadMasks masks,
                             HeadView<const T> q, HeadView<const T> k,
                             HeadView<const T> v, const T *lse,
                             HeadView<const T> dO, HeadView<T> dQ,
                             HeadView<T> dK, HeadView<T> dV);

/// One query row per (batch, head) at `position` against cached keys and
/// values (rows 0..position of kCache/vCache are read, nothing beyond): the
/// forward's row `position`, for sampling. q and o are views whose row index
/// is ignored (one row each).
template <typename T>
void sparseAttentionDecode(const SparseAttentionShape &shape, HeadMasks masks,
                           int64_t position, HeadView<const T> q,
                           HeadView<const T> kCache, HeadView<const T> vCache,
                           HeadView<T> o);

} // namespace sparsetx

#endif // SPARSETX_RUNTIME_SPARSEATTENTION_H
