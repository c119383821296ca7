//===- Connectivity.h - can every key reach every query? -------*- C++ -*-===//
//
// The paper's criterion for factorized attention (section 4.2): with p
// attention steps, information from every position j <= i must be able to
// reach position i. A sparse pattern that fails it can never let some query
// see some earlier token, however deep the network is stacked in groups of
// p blocks; sp-verify reports that as a warning with the first pair that
// cannot be reached.
//
// Steps. A step is one attention operation: position a attends b (in the
// mask of the step) and information flows from b to a. Residual connections
// keep what a position already holds, so every step also keeps a's own
// reach: "within p steps" includes shorter paths.
//  - Layered pattern with N masks: p = N, step s uses the mask of layer
//    s % N (residual block s).
//  - One mask for every block: p = the number of components of its sp.yield
//    if there are several (after sp-decompose), else the number of top-level
//    `||` disjuncts of the yielded value (arith.ori chains), at least 1; every
//    step uses the whole mask. This is the number of factors A(1)..A(p) the
//    merged head unites.
//  - Heads: the outputs of all heads are concatenated and mixed by the output
//    projection, so a step may use any head: the mask of a step is the union
//    over heads [0, numHeads) (per-head masks) or over the head-specialized
//    masks of the layer (after sp-specialize).
//
// Cost. Reach sets are bitsets of n bits per query, grown step by step by
// OR-ing the sets of the attended keys: O(n^2 / 64) words of memory (two
// generations of reach sets plus the mask's rows: 6 MiB at n = 4096) and
// O(p * attended pairs * n / 64) word operations. Both are quadratic in n, so
// the check runs at min(n, maxSeqLen) and says so in the result.
//
// Checking a prefix. The pattern is evaluated at its real length n (so masks
// reading `n` mean what they mean at n), restricted to positions
// [0, checkedSeqLen). For a causal pattern every path from j to i stays in
// [j, i], so the answer for those pairs is exact. For a non-causal pattern a
// path may leave the prefix; paths through positions >= checkedSeqLen are not
// counted, so an "unconnected" answer at a truncated length may be spurious
// (`truncated` says when the check was cut short).
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_ANALYSIS_CONNECTIVITY_H
#define SPARSETX_ANALYSIS_CONNECTIVITY_H

#include "sparsetx/Dialect/SP/IR/SP.h"

#include "mlir/Support/LLVM.h"

#include <cstdint>
#include <optional>

namespace sparsetx {

struct ConnectivityOptions {
  /// The check runs at min(n, maxSeqLen): it costs O(n^2) bits.
  int64_t maxSeqLen = 4096;
  /// Overrides the pattern's step count p (layered patterns then cycle
  /// through their masks: step s uses layer s % N).
  std::optional<int64_t> steps;
};

struct ConnectivityResult {
  /// Every required pair (j <= i for causal patterns, every pair otherwise)
  /// with i, j < checkedSeqLen is reached within `steps` steps.
  bool connected = true;
  /// When not connected: the first pair not reached, smallest i, then
  /// smallest j. -1 when connected.
  int64_t witnessQuery = -1, witnessKey = -1;
  /// The p that was checked.
  int64_t steps = 0;
  /// The sequence length the pattern was evaluated at, and the prefix
  /// [0, checkedSeqLen) of positions that was checked.
  int64_t seqLen = 0, checkedSeqLen = 0;
  /// checkedSeqLen < seqLen: positions from checkedSeqLen on were not
  /// checked. For a causal pattern a witness found in the prefix is still a
  /// real one; for a non-causal pattern it may be spurious (see above).
  bool truncated = false;
};

/// p for `pattern` as described above (N for a layered pattern, else the
/// component or `||` disjunct count of the mask, at least 1).
int64_t getConnectivitySteps(sp::PatternOp pattern);

/// Checks connectivity of `pattern` at sequence length `n` with `numHeads`
/// heads (used by per-head masks). Fails, with an error emitted at the
/// pattern, when n, numHeads (for a per-head pattern), maxSeqLen or steps is
/// not positive, or when a mask does not compile.
mlir::FailureOr<ConnectivityResult>
checkConnectivity(sp::PatternOp pattern, int64_t n, int64_t numHeads,
                  const ConnectivityOptions &options);

inline mlir::FailureOr<ConnectivityResult>
checkConnectivity(sp::PatternOp pattern, int64_t n, int64_t numHeads,
                  int64_t maxSeqLen = 4096) {
  ConnectivityOptions options;
  options.maxSeqLen = maxSeqLen;
  return checkConnectivity(pattern, n, numHeads, options);
}

} // namespace sparsetx

#endif // SPARSETX_ANALYSIS_CONNECTIVITY_H
