//===- SPDialect.cpp - the sp dialect -------------------------------------===//
//
// Registers the sp dialect's operations.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Dialect/SP/IR/SP.h"

using namespace mlir;
using namespace sparsetx::sp;

#include "sparsetx/Dialect/SP/IR/SPOpsDialect.cpp.inc"

void SPDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "sparsetx/Dialect/SP/IR/SPOps.cpp.inc"
      >();
}

/// Folders of sp.div and sp.mod produce integer attributes; they become
/// arith constants, like every other constant in a mask.
Operation *SPDialect::materializeConstant(OpBuilder &builder, Attribute value,
                                          Type type, Location loc) {
  auto typed = dyn_cast<TypedAttr>(value);
  if (!typed || !arith::ConstantOp::isBuildableWith(typed, type))
    return nullptr;
  return arith::ConstantOp::create(builder, loc, type, typed);
}
