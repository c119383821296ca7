//===- ReferenceAttention.h - the CPU oracle of attention -------*- C++ -*-===//
//
// Masked softmax attention computed on the CPU in float64 straight from a
// mask predicate (every pair evaluated: no blocks, no index maps), so it is
// independent of everything the compiler decides. It is the oracle of the GPU
// kernel tests and of the CPU backend's attention.
//
// Layout: q, k, v, o are [batchHeads, n, d] row-major; lse is [batchHeads, n]
// (natural log of the softmax denominator of scaled scores, -inf for a row
// that attends nothing).
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_RUNTIME_REFERENCEATTENTION_H
#define SPARSETX_RUNTIME_REFERENCEATTENTION_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLFunctionalExtras.h"

#include <cstdint>
#include <vector>

namespace sparsetx {

/// attends(bh, i, j): does query i attend to key j in batch-head bh.
using AttendsFn = llvm::function_ref<bool(int64_t bh, int64_t i, int64_t j)>;

struct AttentionShape {
  int64_t batchHeads = 1, seqLen = 0, headDim = 0;
  /// Scores are scale * q . k (default 1/sqrt(d) when <= 0).
  double scale = 0;
  double effectiveScale() const;
};

/// Forward: o and lse, sized by the call.
void referenceAttentionForward(const AttentionShape &shape,
                               llvm::ArrayRef<double> q, llvm::ArrayRef<double> k,
                               llvm::ArrayRef<double> v, AttendsFn attends,
                               std::vector<double> &o, std::vector<double> &lse);

/// Backward: given dO, the gradients dQ, dK, dV.
void referenceAttentionBackward(const AttentionShape &shape,
                                llvm::ArrayRef<double> q,
                                llvm::ArrayRef<double> k,
                                llvm::ArrayRef<double> v,
                                llvm::ArrayRef<double> dO, AttendsFn attends,
                                std::vector<double> &dQ,
                                std::vector<double> &dK,
                                std::vector<double> &dV);

} // namespace sparsetx

#endif // SPARSETX_RUNTIME_REFERENCEATTENTION_H
