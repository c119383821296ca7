//===- Fold.h - fold the masks of a pattern ---------------------*- C++ -*-===//

#ifndef SPARSETX_DIALECT_SP_TRANSFORMS_FOLD_H
#define SPARSETX_DIALECT_SP_TRANSFORMS_FOLD_H

#include "sparsetx/Dialect/SP/IR/SP.h"

namespace sparsetx::sp {

/// Canonicalizes every mask of `pattern` with the canonicalization patterns
/// and folders of every loaded dialect (arith's and sp's in practice): what
/// `-canonicalize` would do, from inside a pass.
mlir::LogicalResult foldMasks(PatternOp pattern);

} // namespace sparsetx::sp

#endif // SPARSETX_DIALECT_SP_TRANSFORMS_FOLD_H
