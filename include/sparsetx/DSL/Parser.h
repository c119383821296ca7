//===- Parser.h - recursive-descent parser of .sp files ---------*- C++ -*-===//
//
// Parses one buffer of a SourceMgr into a Module. Syntax errors are reported
// through the locator's MLIR context; the first one stops the parse.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_DSL_PARSER_H
#define SPARSETX_DSL_PARSER_H

#include "sparsetx/DSL/AST.h"
#include "sparsetx/DSL/Diagnostics.h"

#include <memory>

namespace sparsetx::dsl {

/// Returns nullptr after reporting a syntax error.
std::unique_ptr<Module> parseModule(const SourceLocator &locator,
                                    unsigned bufferId);

} // namespace sparsetx::dsl

#endif // SPARSETX_DSL_PARSER_H
