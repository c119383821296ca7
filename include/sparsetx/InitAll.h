//===- InitAll.h - register every sparsetx dialect and pass -----*- C++ -*-===//
//
// One place that every tool calls, so that sparsec, sparse-opt and the tests
// see the same dialects and passes.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_INITALL_H
#define SPARSETX_INITALL_H

#include "sparsetx/Dialect/SP/IR/SP.h"
#include "sparsetx/Dialect/SP/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Transforms/Passes.h"

namespace sparsetx {

inline void registerAllDialects(mlir::DialectRegistry &registry) {
  registry.insert<sp::SPDialect, mlir::arith::ArithDialect,
                  mlir::math::MathDialect>();
}

inline void registerAllPasses() {
  sp::registerSPPasses();
  // Upstream passes the lit tests use (canonicalize, cse, ...).
  mlir::registerTransformsPasses();
}

} // namespace sparsetx

#endif // SPARSETX_INITALL_H
