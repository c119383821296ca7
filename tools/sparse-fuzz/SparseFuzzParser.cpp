//===- SparseFuzzParser.cpp - libFuzzer target of the .sp front end -------===//
//
// Feeds arbitrary bytes through the whole front end: lexer, parser, sema (with
// --seq-len set, so that `n` folds) and, when sema accepts the input, MLIRGen
// and the sp dialect's verifier. Diagnostics are swallowed: rejecting garbage
// is the expected outcome. Crashes, sanitizer reports, and IR that fails to
// verify after sema accepted the pattern (sema and the dialect disagree on
// what a valid pattern is) are bugs; the last one calls abort().
//
// Build and run: docs/fuzzing.md.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/DSL/Diagnostics.h"
#include "sparsetx/DSL/MLIRGen.h"
#include "sparsetx/DSL/Parser.h"
#include "sparsetx/DSL/Sema.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <cstdlib>

using namespace sparsetx::dsl;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  // One context per input: no state (interned names, dialects) leaks from one
  // input to the next, so every crash reproduces from its file alone.
  mlir::MLIRContext context(mlir::MLIRContext::Threading::DISABLED);
  // SPARSE_FUZZ_VERBOSE=1 prints the diagnostics and how far the input got,
  // to see what a reproducer exercises.
  static const bool verbose = getenv("SPARSE_FUZZ_VERBOSE") != nullptr;
  unsigned errors = 0;
  mlir::ScopedDiagnosticHandler handler(&context, [&](mlir::Diagnostic &diag) {
    if (diag.getSeverity() == mlir::DiagnosticSeverity::Error)
      ++errors;
    if (verbose)
      llvm::errs() << diag.getLocation() << ": "
                   << (diag.getSeverity() == mlir::DiagnosticSeverity::Error
                           ? "error: "
                           : "")
                   << diag << "\n";
    return mlir::success();
  });

  llvm::SourceMgr sourceMgr;
  unsigned bufferId = sourceMgr.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(
          llvm::StringRef(reinterpret_cast<const char *>(data), size),
          "fuzz.sp"),
      llvm::SMLoc());
  SourceLocator locator(sourceMgr, &context);

  std::unique_ptr<Module> module = parseModule(locator, bufferId);
  if (!module) {
    if (verbose)
      llvm::errs() << "sparse-fuzz: syntax error\n";
    return 0;
  }

  SemaOptions options;
  options.seqLen = 256;
  // Exercise the override path too, where it cannot fail: an unknown -D name
  // is an error that would hide the rest of the pipeline.
  if (llvm::any_of(module->patterns,
                   [](const auto &pattern) { return pattern->findParam("l"); }))
    options.overrides.emplace_back("l", 16);
  if (mlir::failed(checkModule(*module, locator, options))) {
    if (verbose)
      llvm::errs() << "sparse-fuzz: sema error\n";
    return 0;
  }

  // Sema accepted the pattern: MLIRGen must produce verified IR.
  errors = 0;
  mlir::OwningOpRef<mlir::ModuleOp> ir = mlirGen(*module, locator);
  if (!ir || errors != 0 || mlir::failed(mlir::verify(*ir))) {
    llvm::errs() << "sparse-fuzz: sema accepted the input but MLIRGen or the "
                    "verifier rejected it\n";
    abort();
  }
  if (verbose)
    llvm::errs() << "sparse-fuzz: accepted, IR verified\n";
  return 0;
}
