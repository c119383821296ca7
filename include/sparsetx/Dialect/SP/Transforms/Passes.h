//===- Passes.h - sp dialect passes -----------------------------*- C++ -*-===//

#ifndef SPARSETX_DIALECT_SP_TRANSFORMS_PASSES_H
#define SPARSETX_DIALECT_SP_TRANSFORMS_PASSES_H

#include "sparsetx/Dialect/SP/IR/SP.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

namespace sparsetx::sp {

#define GEN_PASS_DECL
#include "sparsetx/Dialect/SP/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "sparsetx/Dialect/SP/Transforms/Passes.h.inc"

} // namespace sparsetx::sp

#endif // SPARSETX_DIALECT_SP_TRANSFORMS_PASSES_H
