//===- Diagnostics.h - source locations for .sp diagnostics -----*- C++ -*-===//
//
// The front end reports through MLIR's diagnostic engine so that sparsec's
// errors look like every MLIR tool's (file:line:col, caret, notes) and lit
// tests can check them with --verify-diagnostics. SourceLocator turns an
// SMLoc in the SourceMgr buffer into the FileLineColLoc MLIR prints.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_DSL_DIAGNOSTICS_H
#define SPARSETX_DSL_DIAGNOSTICS_H

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Location.h"
#include "llvm/Support/SMLoc.h"
#include "llvm/Support/SourceMgr.h"

namespace sparsetx::dsl {

class SourceLocator {
public:
  SourceLocator(const llvm::SourceMgr &sourceMgr, mlir::MLIRContext *context)
      : sourceMgr(sourceMgr), context(context) {}

  /// file:line:col of `loc`; UnknownLoc for an invalid SMLoc.
  mlir::Location get(llvm::SMLoc loc) const;

  mlir::InFlightDiagnostic emitError(llvm::SMLoc loc) const {
    return mlir::emitError(get(loc));
  }
  mlir::InFlightDiagnostic emitWarning(llvm::SMLoc loc) const {
    return mlir::emitWarning(get(loc));
  }

  mlir::MLIRContext *getContext() const { return context; }
  const llvm::SourceMgr &getSourceMgr() const { return sourceMgr; }

private:
  const llvm::SourceMgr &sourceMgr;
  mlir::MLIRContext *context;
};

} // namespace sparsetx::dsl

#endif // SPARSETX_DSL_DIAGNOSTICS_H
