//===- TestUtil.h - setup shared by the analysis unit tests -----*- C++ -*-===//
//
// A fixture that owns an MLIRContext with the sp, arith and math dialects
// loaded, captures every diagnostic's text, and parses sp patterns from
// source text; and the text of paper patterns that several tests parse.
// Header-only; included by the test executables.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_TEST_UNIT_TESTUTIL_H
#define SPARSETX_TEST_UNIT_TESTUTIL_H

#include "sparsetx/Dialect/SP/IR/SP.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sparsetx::test {

class PatternTest : public ::testing::Test {
protected:
  PatternTest() {
    context.loadDialect<sp::SPDialect, mlir::arith::ArithDialect,
                        mlir::math::MathDialect>();
    handler = std::make_unique<mlir::ScopedDiagnosticHandler>(
        &context, [this](mlir::Diagnostic &diag) {
          diags.push_back(diag.str());
          return mlir::success();
        });
  }

  /// Parses `text` (which must verify) and returns its first pattern.
  sp::PatternOp parse(const std::string &text) {
    modules.push_back(
        mlir::parseSourceString<mlir::ModuleOp>(text, &context, "test.mlir"));
    if (!modules.back()) {
      ADD_FAILURE() << "failed to parse:\n"
                    << text << "\n"
                    << (diags.empty() ? "" : diags.back());
      return {};
    }
    auto patterns = modules.back()->getOps<sp::PatternOp>();
    EXPECT_FALSE(patterns.empty());
    return patterns.empty() ? sp::PatternOp() : *patterns.begin();
  }

  mlir::MLIRContext context;
  std::unique_ptr<mlir::ScopedDiagnosticHandler> handler;
  /// The text of every diagnostic emitted, in order.
  std::vector<std::string> diags;
  std::vector<mlir::OwningOpRef<mlir::ModuleOp>> modules;
};

/// fixed_heads(l, c) of DESIGN.md: each head reads its own summary sub-block.
inline std::string fixedHeads(int64_t l, int64_t c) {
  return R"mlir(
sp.pattern @fixed_heads(l = )mlir" +
         std::to_string(l) + ", c = " + std::to_string(c) + R"mlir() causal {
  sp.mask (%i, %j, %h) {
    %l = sp.param "l"
    %c = sp.param "c"
    %0 = sp.div %i, %l
    %1 = sp.div %j, %l
    %2 = arith.cmpi eq, %0, %1 : i64
    %3 = sp.mod %j, %l
    %one = arith.constant 1 : i64
    %4 = arith.addi %h, %one : i64
    %5 = arith.muli %c, %4 : i64
    %6 = arith.subi %l, %5 : i64
    %7 = arith.cmpi sge, %3, %6 : i64
    %8 = arith.muli %c, %h : i64
    %9 = arith.subi %l, %8 : i64
    %10 = arith.cmpi slt, %3, %9 : i64
    %11 = arith.andi %7, %10 : i1
    %12 = arith.ori %2, %11 : i1
    sp.yield %12
  }
}
)mlir";
}

/// strided_interleaved(l): layer 0 the row, layer 1 the column (eq. 2).
inline std::string stridedInterleaved(int64_t l) {
  return R"mlir(
sp.pattern @strided_interleaved(l = )mlir" +
         std::to_string(l) + R"mlir() causal {
  sp.mask layer 0 (%i, %j) {
    %l = sp.param "l"
    %0 = arith.subi %i, %j : i64
    %1 = arith.cmpi slt, %0, %l : i64
    sp.yield %1
  }
  sp.mask layer 1 (%i, %j) {
    %l = sp.param "l"
    %0 = arith.subi %i, %j : i64
    %1 = sp.mod %0, %l
    %c0 = arith.constant 0 : i64
    %2 = arith.cmpi eq, %1, %c0 : i64
    sp.yield %2
  }
}
)mlir";
}

/// strided(l): i - j < l || (i - j) % l == 0 (Figure 3b).
inline std::string strided(int64_t l) {
  return R"mlir(
sp.pattern @strided(l = )mlir" +
         std::to_string(l) + R"mlir() causal {
  sp.mask (%i, %j) {
    %l = sp.param "l"
    %0 = arith.subi %i, %j : i64
    %1 = arith.cmpi slt, %0, %l : i64
    %2 = sp.mod %0, %l
    %c0 = arith.constant 0 : i64
    %3 = arith.cmpi eq, %2, %c0 : i64
    %4 = arith.ori %1, %3 : i1
    sp.yield %4
  }
}
)mlir";
}

/// fixed(l, c): i / l == j / l || j % l >= l - c (Figure 3c).
inline std::string fixed(int64_t l, int64_t c) {
  return R"mlir(
sp.pattern @fixed(l = )mlir" +
         std::to_string(l) + ", c = " + std::to_string(c) + R"mlir() causal {
  sp.mask (%i, %j) {
    %l = sp.param "l"
    %c = sp.param "c"
    %0 = sp.div %i, %l
    %1 = sp.div %j, %l
    %2 = arith.cmpi eq, %0, %1 : i64
    %3 = sp.mod %j, %l
    %4 = arith.subi %l, %c : i64
    %5 = arith.cmpi sge, %3, %4 : i64
    %6 = arith.ori %2, %5 : i1
    sp.yield %6
  }
}
)mlir";
}

} // namespace sparsetx::test

#endif // SPARSETX_TEST_UNIT_TESTUTIL_H
