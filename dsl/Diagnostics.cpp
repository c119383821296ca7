//===- Diagnostics.cpp - source locations for .sp diagnostics -------------===//
//
// Maps an SMLoc of the SourceMgr buffer to the FileLineColLoc that MLIR's
// diagnostic handlers print (and that SourceMgrDiagnosticHandler maps back to
// the buffer to draw the caret).
//
//===----------------------------------------------------------------------===//

#include "sparsetx/DSL/Diagnostics.h"

#include "mlir/IR/BuiltinAttributes.h"

using namespace sparsetx::dsl;

mlir::Location SourceLocator::get(llvm::SMLoc loc) const {
  if (!loc.isValid())
    return mlir::UnknownLoc::get(context);
  unsigned bufferId = sourceMgr.FindBufferContainingLoc(loc);
  if (bufferId == 0)
    return mlir::UnknownLoc::get(context);
  auto [line, column] = sourceMgr.getLineAndColumn(loc, bufferId);
  llvm::StringRef file =
      sourceMgr.getMemoryBuffer(bufferId)->getBufferIdentifier();
  return mlir::FileLineColLoc::get(context, file, line, column);
}
