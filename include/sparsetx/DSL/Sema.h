//===- Sema.h - semantic checks of .sp patterns -----------------*- C++ -*-===//
//
// Name resolution, types, parameter overrides (-D), constant divisors and the
// structural rules of a pattern (exactly one heads/layers statement, no
// duplicates). Fills in Expr::type and the NameExpr resolution fields.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_DSL_SEMA_H
#define SPARSETX_DSL_SEMA_H

#include "sparsetx/DSL/AST.h"
#include "sparsetx/DSL/Diagnostics.h"

#include "mlir/Support/LogicalResult.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace sparsetx::dsl {

struct SemaOptions {
  /// -D NAME=VALUE in command-line order; a later one wins.
  std::vector<std::pair<std::string, int64_t>> overrides;
  /// --seq-len: when set, `n` is a compile-time constant (so `i % (n / 4)` is
  /// a valid modulus).
  std::optional<int64_t> seqLen;
};

/// Checks every pattern of `module`, reporting every error it finds (not
/// only the first). Returns failure() if there was any error.
mlir::LogicalResult checkModule(Module &module, const SourceLocator &locator,
                                const SemaOptions &options);

} // namespace sparsetx::dsl

#endif // SPARSETX_DSL_SEMA_H
