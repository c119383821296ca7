//===- AbstractMask.h - decide a mask over whole blocks ---------*- C++ -*-===//
//
// The abstract interpreter behind block classification: given a box of query
// positions and a box of key positions (see IndexMap.h), decides whether a
// mask component is true for every pair, false for every pair, or neither
// (Unknown, also the answer when the reasoning is not precise enough).
// Values are affine forms over the four box variables (query u, v and key
// u, v) with interval ranges; floor division and modulo by a constant stay
// exact when the remainder's range fits in one period, which is what makes
// `(i - j) % l == 0` decidable on transposed blocks and `i / l == j / l` on
// aligned ones. Soundness (True/False only when it holds for every pair) is
// the contract; precision is what keeps exhaustive evaluation rare.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_ANALYSIS_ABSTRACTMASK_H
#define SPARSETX_ANALYSIS_ABSTRACTMASK_H

#include "sparsetx/Analysis/IndexMap.h"
#include "sparsetx/Analysis/MaskEvaluator.h"
#include "sparsetx/Dialect/SP/IR/SP.h"

#include <memory>
#include <optional>

namespace sparsetx {

enum class Tri : uint8_t { False, True, Unknown };

class AbstractMask {
public:
  /// Compiles component `component` of `mask` (operand `component` of its
  /// sp.yield; std::nullopt for the union of all operands). The pattern's
  /// causal flag is included, as in MaskProgram. Fails with a diagnostic on
  /// what MaskProgram::compile rejects.
  static mlir::FailureOr<AbstractMask>
  compile(sp::MaskOp mask, const Binding &binding,
          std::optional<unsigned> component = std::nullopt);

  /// The mask's value over every (i, j) with i in `query`, j in `key`, at
  /// head `head` (ignored unless the mask is per-head).
  Tri evaluate(const PositionBox &query, const PositionBox &key,
               int64_t head = 0) const;

  AbstractMask();
  AbstractMask(AbstractMask &&) noexcept;
  AbstractMask &operator=(AbstractMask &&) noexcept;
  ~AbstractMask();

private:
  struct Impl;
  std::unique_ptr<Impl> impl;
};

} // namespace sparsetx

#endif // SPARSETX_ANALYSIS_ABSTRACTMASK_H
