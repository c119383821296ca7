//===- SP.h - the sp dialect ------------------------------------*- C++ -*-===//
//
// Dialect and operation classes of the sp dialect (attention patterns).
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_DIALECT_SP_IR_SP_H
#define SPARSETX_DIALECT_SP_IR_SP_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "sparsetx/Dialect/SP/IR/SPOpsDialect.h.inc"

namespace sparsetx::sp {
/// The head count of a per-head pattern when neither the command line nor
/// the pattern gives one (the paper's models use 8 heads).
inline constexpr int64_t kDefaultNumHeads = 8;

class MaskOp;
class YieldOp;
} // namespace sparsetx::sp

#define GET_OP_CLASSES
#include "sparsetx/Dialect/SP/IR/SPOps.h.inc"

#endif // SPARSETX_DIALECT_SP_IR_SP_H
