//===- ReferenceAttention.cpp - the CPU oracle of attention ---------------===//
//
// Brute force in float64: every (i, j) pair goes through the mask predicate
// into per-row key lists, nothing is blocked or reordered, so the oracle
// shares no decision with the compiler. The arithmetic is the project's one
// CPU attention (SparseAttention.h) in double.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Runtime/ReferenceAttention.h"

#include "sparsetx/Runtime/SparseAttention.h"

#include <cassert>
#include <cmath>
#include <limits>

using namespace sparsetx;

double AttentionShape::effectiveScale() const {
  return scale > 0 ? scale : 1.0 / std::sqrt(static_cast<double>(headDim));
}

namespace {

void checkSizes(const AttentionShape &shape, size_t q, size_t k, size_t v) {
  size_t size = shape.batchHeads * shape.seqLen * shape.headDim;
  (void)size;
  assert(q == size && k == size && v == size && "q, k, v must be [bh, n, d]");
}

/// The mask of batch-head `bh` as key lists. The predicate is only ever called
/// from the calling thread (it may be a stateful interpreter).
RowSparsity maskOf(const AttentionShape &shape, int64_t bh, AttendsFn attends) {
  return RowSparsity::fromPredicate(
      shape.seqLen, [&](int64_t i, int64_t j) { return attends(bh, i, j); });
}

SparseAttentionShape sliceShape(const AttentionShape &shape) {
  SparseAttentionShape s;
  s.seqLen = shape.seqLen;
  s.qkDim = s.vDim = shape.headDim;
  s.scale = shape.effectiveScale();
  return s;
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
  const int64_t n = shape.seqLen, d = shape.headDim;
  o.assign(shape.batchHeads * n * d, 0.0);
  lse.assign(shape.batchHeads * n, 0.0);
  for (int64_t bh = 0; bh < shape.batchHeads; ++bh) {
    RowSparsity mask = maskOf(shape, bh, attends);
    const RowSparsity *masks[] = {&mask};
    size_t base = bh * n * d;
    sparseAttentionForward<double>(
        sliceShape(shape), masks,
        HeadView<const double>::contiguous(q.data() + base, n, d),
        HeadView<const double>::contiguous(k.data() + base, n, d),
        HeadView<const double>::contiguous(v.data() + base, n, d),
        HeadView<double>::contiguous(o.data() + base, n, d),
        lse.data() + bh * n);
  }
}

void sparsetx::referenceAttentionBackward(
    const AttentionShape &shape, llvm::ArrayRef<double> q,
    llvm::ArrayRef<double> k, llvm::ArrayRef<double> v,
    llvm::ArrayRef<double> dO, AttendsFn attends, std::vector<double> &dQ,
    std::vector<double> &dK, std::vector<double> &dV) {
  checkSizes(shape, q.size(), k.size(), v.size());
  assert(dO.size() == q.size() && "dO must be [bh, n, d]");
  const int64_t n = shape.seqLen, d = shape.headDim;
  dQ.assign(shape.batchHeads * n * d, 0.0);
  dK.assign(shape.batchHeads * n * d, 0.0);
  dV.assign(shape.batchHeads * n * d, 0.0);
  std::vector<double> o(n * d), lse(n);
  for (int64_t bh = 0; bh < shape.batchHeads; ++bh) {
    RowSparsity mask = maskOf(shape, bh, attends);
    const RowSparsity *masks[] = {&mask};
    size_t base = bh * n * d;
    auto in = [&](llvm::ArrayRef<double> x) {
      return HeadView<const double>::contiguous(x.data() + base, n, d);
    };
    auto out = [&](std::vector<double> &x) {
      return HeadView<double>::contiguous(x.data() + base, n, d);
    };
    // P is recomputed from the row statistics, as the GPU kernels do.
    sparseAttentionForward<double>(sliceShape(shape), masks, in(q), in(k),
                                   in(v),
                                   HeadView<double>::contiguous(o.data(), n, d),
                                   lse.data());
    sparseAttentionBackward<double>(sliceShape(shape), masks, in(q), in(k),
                                    in(v), lse.data(), in(dO), out(dQ), out(dK),
                                    out(dV));
  }
}
