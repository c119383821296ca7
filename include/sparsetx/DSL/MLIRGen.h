//===- MLIRGen.h - .sp AST to the sp dialect --------------------*- C++ -*-===//
//
// Emits one sp.pattern per checked PatternDecl into a builtin module. `let`
// bindings become SSA values, emitted once per mask where they are used.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_DSL_MLIRGEN_H
#define SPARSETX_DSL_MLIRGEN_H

#include "sparsetx/DSL/AST.h"
#include "sparsetx/DSL/Diagnostics.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace sparsetx::dsl {

/// `module` must have passed checkModule. Returns null after an error.
mlir::OwningOpRef<mlir::ModuleOp> mlirGen(const Module &module,
                                          const SourceLocator &locator);

} // namespace sparsetx::dsl

#endif // SPARSETX_DSL_MLIRGEN_H
