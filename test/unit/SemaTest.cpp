//===- SemaTest.cpp - semantic checks of .sp patterns ---------------------===//
//
// Every sema diagnostic by exact message, location and notes; -D overrides;
// constant divisors through lets and through n with --seq-len; warnings; and
// the types and name resolutions sema leaves in the tree.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/DSL/Sema.h"
#include "sparsetx/DSL/Parser.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

using namespace sparsetx::dsl;
using Strings = std::vector<std::string>;

namespace {

const char *const kPaperPatterns = R"(// strided.sp
pattern strided(l = 128) {
  causal;                           // every mask also requires j <= i
  let row    = i - j < l;           // A(1): the previous l positions
  let column = (i - j) % l == 0;    // A(2): every l-th position back
  heads = row || column;            // merged head
}

pattern fixed(l = 128, c = 32) {
  causal;
  let block   = i / l == j / l;     // A(1): the same block of l positions
  let summary = j % l >= l - c;     // A(2): the last c cells of every block
  heads = block || summary;
}

pattern fixed_heads(l = 128, c = 16) {
  causal;
  let block = i / l == j / l;
  heads[h] = block || (j % l >= l - c * (h + 1) && j % l < l - c * h);
}

pattern strided_interleaved(l = 128) {
  causal;
  layers = [i - j < l, (i - j) % l == 0];   // residual block r uses entry r % 2
}
)";

/// Calls `fn` on every expression node under `expr`.
void walk(const Expr &expr, const std::function<void(const Expr &)> &fn) {
  fn(expr);
  if (auto *unary = llvm::dyn_cast<UnaryExpr>(&expr))
    walk(*unary->operand, fn);
  if (auto *binary = llvm::dyn_cast<BinaryExpr>(&expr)) {
    walk(*binary->lhs, fn);
    walk(*binary->rhs, fn);
  }
  if (auto *call = llvm::dyn_cast<CallExpr>(&expr))
    for (const ExprPtr &arg : call->args)
      walk(*arg, fn);
}

void walk(const PatternDecl &pattern,
          const std::function<void(const Expr &)> &fn) {
  for (const auto &let : pattern.lets)
    walk(*let->init, fn);
  for (const ExprPtr &mask : pattern.masks)
    walk(*mask, fn);
}

class SemaTest : public ::testing::Test {
protected:
  SemaTest()
      : handler(&context, [this](mlir::Diagnostic &diag) {
          record(diag);
          for (mlir::Diagnostic &note : diag.getNotes())
            record(note);
          return mlir::success();
        }) {}

  void record(mlir::Diagnostic &diag) {
    std::string text;
    llvm::raw_string_ostream os(text);
    if (auto loc = llvm::dyn_cast<mlir::FileLineColLoc>(diag.getLocation()))
      os << loc.getLine() << ":" << loc.getColumn() << ": ";
    switch (diag.getSeverity()) {
    case mlir::DiagnosticSeverity::Error:
      os << "error: ";
      break;
    case mlir::DiagnosticSeverity::Warning:
      os << "warning: ";
      break;
    case mlir::DiagnosticSeverity::Note:
      os << "note: ";
      break;
    case mlir::DiagnosticSeverity::Remark:
      os << "remark: ";
      break;
    }
    os << diag.str();
    diags.push_back(text);
  }

  /// Parses (which must succeed) and checks `source`; `ok` is the result of
  /// checkModule.
  Strings check(llvm::StringRef source, const SemaOptions &options = {}) {
    diags.clear();
    unsigned id = sourceMgr.AddNewSourceBuffer(
        llvm::MemoryBuffer::getMemBufferCopy(source, "sema.sp"), llvm::SMLoc());
    module = parseModule(locator, id);
    EXPECT_TRUE(module) << "parse failed: " << source.str();
    if (!module)
      return diags;
    ok = mlir::succeeded(checkModule(*module, locator, options));
    // Errors and success are consistent.
    bool anyError = llvm::any_of(diags, [](const std::string &d) {
      return d.find("error: ") != std::string::npos;
    });
    EXPECT_EQ(ok, !anyError) << source.str();
    return diags;
  }

  /// check() of a one-pattern file `pattern p(<params>) {\n<body>\n}`.
  Strings checkBody(llvm::StringRef params, llvm::StringRef body,
                    const SemaOptions &options = {}) {
    return check(("pattern p(" + params + ") {\n" + body + "\n}").str(),
                 options);
  }

  mlir::MLIRContext context;
  llvm::SourceMgr sourceMgr;
  SourceLocator locator{sourceMgr, &context};
  Strings diags;
  mlir::ScopedDiagnosticHandler handler;
  std::unique_ptr<Module> module;
  bool ok = false;
};

//===----------------------------------------------------------------------===//
// Clean patterns, types and resolution
//===----------------------------------------------------------------------===//

TEST_F(SemaTest, PaperPatternsCheckCleanly) {
  EXPECT_EQ(check(kPaperPatterns), Strings{});
  EXPECT_TRUE(ok);
  SemaOptions withSeqLen;
  withSeqLen.seqLen = 4096;
  EXPECT_EQ(check(kPaperPatterns, withSeqLen), Strings{});
  EXPECT_TRUE(ok);
}

TEST_F(SemaTest, TypesAndResolution) {
  ASSERT_EQ(check(kPaperPatterns), Strings{});
  for (const auto &pattern : module->patterns)
    walk(*pattern, [](const Expr &expr) {
      EXPECT_TRUE(expr.type == Type::Int || expr.type == Type::Bool);
      if (auto *name = llvm::dyn_cast<NameExpr>(&expr)) {
        EXPECT_NE(name->ref, NameExpr::Ref::Unresolved) << name->name.str();
      }
    });

  const PatternDecl &strided = *module->patterns[0];
  const LetDecl &row = *strided.lets[0];
  EXPECT_EQ(row.init->type, Type::Bool);
  EXPECT_EQ(row.uses, 1u);
  EXPECT_FALSE(row.usesHead);
  const auto &lt = llvm::cast<BinaryExpr>(*row.init);
  EXPECT_EQ(lt.lhs->type, Type::Int);
  const auto &sub = llvm::cast<BinaryExpr>(*lt.lhs);
  EXPECT_EQ(llvm::cast<NameExpr>(*sub.lhs).ref, NameExpr::Ref::Query);
  EXPECT_EQ(llvm::cast<NameExpr>(*sub.rhs).ref, NameExpr::Ref::Key);
  const auto &l = llvm::cast<NameExpr>(*lt.rhs);
  EXPECT_EQ(l.ref, NameExpr::Ref::Param);
  EXPECT_EQ(l.paramIndex, 0u);

  const auto &mask = llvm::cast<BinaryExpr>(*strided.masks[0]);
  EXPECT_EQ(mask.type, Type::Bool);
  const auto &rowUse = llvm::cast<NameExpr>(*mask.lhs);
  EXPECT_EQ(rowUse.ref, NameExpr::Ref::Let);
  EXPECT_EQ(rowUse.let, &row);

  const PatternDecl &fixed = *module->patterns[1];
  const auto &summary = llvm::cast<BinaryExpr>(*fixed.lets[1]->init);
  const auto &c =
      llvm::cast<NameExpr>(*llvm::cast<BinaryExpr>(*summary.rhs).rhs);
  EXPECT_EQ(c.ref, NameExpr::Ref::Param);
  EXPECT_EQ(c.paramIndex, 1u);
}

TEST_F(SemaTest, HeadIndexAndUsesHead) {
  EXPECT_EQ(checkBody("", "  let a = h + 1;\n  let b = a * 2 < j;\n"
                          "  let c = i < j;\n  heads[h] = b && c && n > 0;"),
            Strings{});
  const PatternDecl &p = *module->patterns[0];
  EXPECT_TRUE(p.lets[0]->usesHead);
  EXPECT_TRUE(p.lets[1]->usesHead); // through a
  EXPECT_FALSE(p.lets[2]->usesHead);
  const auto &hUse =
      llvm::cast<NameExpr>(*llvm::cast<BinaryExpr>(*p.lets[0]->init).lhs);
  EXPECT_EQ(hUse.ref, NameExpr::Ref::Head);
}

//===----------------------------------------------------------------------===//
// Parameters and -D
//===----------------------------------------------------------------------===//

TEST_F(SemaTest, DuplicateParameter) {
  EXPECT_EQ(check("pattern p(l = 1, l = 2) { heads = i < l; }"),
            (Strings{"1:18: error: duplicate parameter 'l'",
                     "1:11: note: previously defined here"}));
  EXPECT_FALSE(ok);
}

TEST_F(SemaTest, ParameterNamedLikeBuiltin) {
  EXPECT_EQ(check("pattern p(i = 1, n = 2) { heads = true; }"),
            (Strings{"1:11: error: parameter 'i' redefines the builtin 'i' "
                     "(the query position)",
                     "1:18: error: parameter 'n' redefines the builtin 'n' "
                     "(the sequence length)"}));
}

TEST_F(SemaTest, OverridesApplyToEveryPattern) {
  SemaOptions options;
  options.overrides = {{"l", 1}, {"c", 8}, {"l", 256}};
  EXPECT_EQ(check("pattern a(l = 4, c = 2) { heads = i - j < l + c; }\n"
                  "pattern b(l = 4) { heads = i - j < l; }\n"
                  "pattern d(m = 3) { heads = i - j < m; }",
                  options),
            Strings{});
  EXPECT_EQ(module->patterns[0]->params[0].value, 256); // the later -D wins
  EXPECT_TRUE(module->patterns[0]->params[0].overridden);
  EXPECT_EQ(module->patterns[0]->params[1].value, 8);
  EXPECT_EQ(module->patterns[1]->params[0].value, 256);
  EXPECT_TRUE(module->patterns[1]->params[0].overridden);
  EXPECT_EQ(module->patterns[2]->params[0].value, 3);
  EXPECT_FALSE(module->patterns[2]->params[0].overridden);
}

TEST_F(SemaTest, UnknownOverride) {
  SemaOptions options;
  options.overrides = {{"x", 5}, {"l", 2}};
  EXPECT_EQ(check("pattern strided(l = 128, c = 4) { heads = i < l + c; }\n"
                  "pattern q() { heads = true; }",
                  options),
            (Strings{"error: unknown parameter 'x' in -D x=5",
                     "1:9: note: pattern 'strided' has parameters: l, c",
                     "2:9: note: pattern 'q' has no parameters"}));
  EXPECT_FALSE(ok);
}

TEST_F(SemaTest, OverrideReachesTheDivisorCheck) {
  SemaOptions options;
  options.overrides = {{"l", 0}};
  EXPECT_EQ(checkBody("l = 128", "  heads = (i - j) % l == 0;", options),
            Strings{"2:21: error: the divisor of '%' must be positive, but "
                    "it is 0 (l = 0)"});
}

//===----------------------------------------------------------------------===//
// Structure
//===----------------------------------------------------------------------===//

TEST_F(SemaTest, DuplicatePattern) {
  EXPECT_EQ(check("pattern p() { heads = true; }\n"
                  "pattern p() { heads = false; }"),
            (Strings{"2:9: error: duplicate pattern 'p'",
                     "1:9: note: previously defined here"}));
}

TEST_F(SemaTest, DuplicateCausal) {
  EXPECT_EQ(checkBody("", "  causal;\n  heads = true; causal;"),
            (Strings{"3:17: error: duplicate 'causal'",
                     "2:3: note: previously given here"}));
}

TEST_F(SemaTest, DuplicateAttention) {
  EXPECT_EQ(checkBody("", "  heads = true;\n  heads[h] = h == 0;\n"
                          "  layers = [true, 1];"),
            (Strings{"3:3: error: pattern 'p' already defines its attention; "
                     "a pattern has exactly one 'heads', 'heads[h]' or "
                     "'layers' statement",
                     "2:3: note: attention defined here",
                     "4:3: error: pattern 'p' already defines its attention; "
                     "a pattern has exactly one 'heads', 'heads[h]' or "
                     "'layers' statement",
                     "2:3: note: attention defined here",
                     // The repeated statements are still checked.
                     "4:19: error: the attention mask must be a boolean "
                     "expression, but this is an integer expression"}));
}

TEST_F(SemaTest, NoAttention) {
  EXPECT_EQ(check("pattern empty(l = 1) {\n  causal;\n}"),
            Strings{"1:9: error: pattern 'empty' defines no attention: add "
                    "'heads = ...;', 'heads[h] = ...;' or 'layers = [...];'"});
}

//===----------------------------------------------------------------------===//
// Lets and names
//===----------------------------------------------------------------------===//

TEST_F(SemaTest, DuplicateLet) {
  EXPECT_EQ(checkBody("", "  let a = i < j;\n  let a = true;\n  heads = a;"),
            (Strings{"3:7: error: duplicate let 'a'",
                     "2:7: note: previously defined here"}));
  // The use binds to the first definition.
  const PatternDecl &p = *module->patterns[0];
  EXPECT_EQ(llvm::cast<NameExpr>(*p.masks[0]).let, p.lets[0].get());
}

TEST_F(SemaTest, LetNamedLikeParameterOrBuiltin) {
  EXPECT_EQ(checkBody("l = 4", "  let l = 3;\n  let j = 2;\n"
                               "  heads = i - j < l;"),
            (Strings{"2:7: error: let 'l' redefines the parameter 'l'",
                     "1:11: note: parameter 'l' is defined here",
                     "3:7: error: let 'j' redefines the builtin 'j' (the key "
                     "position)"}));
}

TEST_F(SemaTest, UseBeforeDefinition) {
  EXPECT_EQ(checkBody("", "  heads = near;\n  let near = i - j < 4;"),
            (Strings{"2:11: error: 'near' is used before its definition",
                     "3:7: note: 'near' is defined here"}));
  EXPECT_EQ(checkBody("", "  let x = x + 1 > 0;\n  heads = x;"),
            (Strings{"2:11: error: 'x' is used before its definition",
                     "2:7: note: 'x' is defined here"}));
}

TEST_F(SemaTest, UnknownName) {
  EXPECT_EQ(checkBody("l = 4", "  let row = i - j < l;\n  heads = rwo;"),
            // No "'row' is never used": the typo was meant for it.
            Strings{"3:11: error: unknown name 'rwo'; did you mean 'row'?"});
  EXPECT_EQ(checkBody("l = 4", "  heads = i - j < l2;"),
            Strings{"2:19: error: unknown name 'l2'; did you mean 'l'?"});
  EXPECT_EQ(checkBody("", "  heads = tru;"),
            Strings{"2:11: error: unknown name 'tru'; did you mean 'true'?"});
  EXPECT_EQ(checkBody("", "  heads = i < k;"),
            Strings{"2:15: error: unknown name 'k'"});
  EXPECT_EQ(checkBody("", "  heads = i < width;"),
            Strings{"2:15: error: unknown name 'width'"});
  // A let that is not yet defined is not suggested.
  EXPECT_EQ(checkBody("", "  heads = rwo;\n  let row = true;"),
            (Strings{"2:11: error: unknown name 'rwo'",
                     "3:7: warning: 'row' is never used"}));
}

TEST_F(SemaTest, UnknownNameErrorDoesNotCascade) {
  // One diagnostic: the unknown name; not the comparison, not the mask.
  EXPECT_EQ(checkBody("", "  let d = zz + 1;\n  heads = (i - j) % d == 0 "
                          "&& d < 3;"),
            Strings{"2:11: error: unknown name 'zz'"});
}

TEST_F(SemaTest, UnusedLetIsAWarning) {
  EXPECT_EQ(checkBody("", "  let unused = i < j;\n  let a = 1;\n"
                          "  let b = a + 1;\n  heads = i < b;"),
            Strings{"2:7: warning: 'unused' is never used"});
  EXPECT_TRUE(ok);
}

TEST_F(SemaTest, HeadOutsideHeadsH) {
  EXPECT_EQ(checkBody("", "  let g = h * 2;\n  heads = i < g;"),
            Strings{"2:11: error: the head index 'h' is only defined in a "
                    "pattern with 'heads[h] = ...'"});
  EXPECT_EQ(checkBody("", "  layers = [i < h, true];"),
            Strings{"2:17: error: the head index 'h' is only defined in a "
                    "pattern with 'heads[h] = ...'"});
}

//===----------------------------------------------------------------------===//
// Types
//===----------------------------------------------------------------------===//

TEST_F(SemaTest, ArithmeticNeedsIntegers) {
  EXPECT_EQ(checkBody("", "  heads = i + true < 3;"),
            Strings{"2:13: error: operator '+' expects integer operands, but "
                    "the right operand is boolean"});
  EXPECT_EQ(checkBody("", "  heads = (i < j) * 2 > 0;"),
            Strings{"2:19: error: operator '*' expects integer operands, but "
                    "the left operand is boolean"});
  EXPECT_EQ(checkBody("", "  heads = (i < j) % false == 1;"),
            Strings{"2:19: error: operator '%' expects integer operands, but "
                    "both operands are boolean"});
  EXPECT_EQ(checkBody("", "  heads = -(i < j) < 0;"),
            Strings{"2:11: error: operator '-' expects an integer operand, "
                    "but the operand is boolean"});
  EXPECT_EQ(checkBody("", "  heads = true < 1;"),
            Strings{"2:16: error: operator '<' expects integer operands, but "
                    "the left operand is boolean"});
}

TEST_F(SemaTest, LogicNeedsBooleans) {
  EXPECT_EQ(checkBody("", "  heads = i < j && 1;"),
            Strings{"2:17: error: operator '&&' expects boolean operands, "
                    "but the right operand is an integer"});
  EXPECT_EQ(checkBody("", "  heads = i || j;"),
            Strings{"2:13: error: operator '||' expects boolean operands, "
                    "but both operands are integers"});
  EXPECT_EQ(checkBody("", "  heads = !i;"),
            Strings{"2:11: error: operator '!' expects a boolean operand, "
                    "but the operand is an integer"});
}

TEST_F(SemaTest, EqualityNeedsTheSameType) {
  EXPECT_EQ(checkBody("", "  heads = i == (j < 2);"),
            Strings{"2:13: error: operator '==' expects operands of the same "
                    "type, but the left operand is an integer and the right "
                    "operand is boolean"});
  EXPECT_EQ(checkBody("", "  heads = (i < 1) != (j < 2) && i == j;"),
            Strings{});
}

TEST_F(SemaTest, CallsNeedIntegers) {
  EXPECT_EQ(checkBody("", "  heads = min(i < j, 2) > 0;"),
            Strings{"2:11: error: 'min' expects integer arguments, but the "
                    "first argument is boolean"});
  EXPECT_EQ(checkBody("", "  heads = max(1, true) > 0;"),
            Strings{"2:11: error: 'max' expects integer arguments, but the "
                    "second argument is boolean"});
  EXPECT_EQ(checkBody("", "  heads = abs(false) > 0;"),
            Strings{"2:11: error: 'abs' expects an integer argument, but the "
                    "argument is boolean"});
}

TEST_F(SemaTest, MaskMustBeBoolean) {
  EXPECT_EQ(checkBody("", "  heads = i - j;"),
            Strings{"2:11: error: the attention mask must be a boolean "
                    "expression, but this is an integer expression"});
  EXPECT_EQ(checkBody("", "  let d = i - j;\n  layers = [d < 3, d];"),
            Strings{"3:20: error: the attention mask must be a boolean "
                    "expression, but this is an integer expression"});
}

TEST_F(SemaTest, ReportsEveryError) {
  EXPECT_EQ(check("pattern a() { heads = x; }\n"
                  "pattern b() { heads = 1; }\n"
                  "pattern c() { let y = i % j; heads = y < 1 && true + 1; }"),
            (Strings{"1:23: error: unknown name 'x'",
                     "2:23: error: the attention mask must be a boolean "
                     "expression, but this is an integer expression",
                     "3:27: error: the divisor of '%' must be a positive "
                     "compile-time constant, but it depends on the key "
                     "position 'j'",
                     "3:52: error: operator '+' expects integer operands, but "
                     "the left operand is boolean"}));
}

//===----------------------------------------------------------------------===//
// Divisors and constants
//===----------------------------------------------------------------------===//

TEST_F(SemaTest, DivisorDependsOnBuiltin) {
  EXPECT_EQ(checkBody("", "  heads = j % i == 0;"),
            Strings{"2:15: error: the divisor of '%' must be a positive "
                    "compile-time constant, but it depends on the query "
                    "position 'i'"});
  EXPECT_EQ(checkBody("l = 4", "  heads[h] = i / (l * h + 1) == 0;"),
            Strings{"2:19: error: the divisor of '/' must be a positive "
                    "compile-time constant, but it depends on the head index "
                    "'h'"});
  EXPECT_EQ(checkBody("", "  heads = i % (n / 4) == 0;"),
            Strings{"2:16: error: the divisor of '%' must be a positive "
                    "compile-time constant, but it depends on the sequence "
                    "length 'n' (pass --seq-len to fix n)"});
  EXPECT_EQ(checkBody("", "  let w = j - 1;\n  heads = i % w == 0;"),
            Strings{"3:15: error: the divisor of '%' must be a positive "
                    "compile-time constant, but it depends on the key "
                    "position 'j' through 'w'"});
}

TEST_F(SemaTest, DivisorWithSeqLen) {
  SemaOptions options;
  options.seqLen = 64;
  EXPECT_EQ(checkBody("", "  heads = i % (n / 4) == 0;", options), Strings{});
  EXPECT_EQ(checkBody("", "  let w = n / 128;\n  heads = i % w == 0;", options),
            Strings{"3:15: error: the divisor of '%' must be positive, but "
                    "it is 0 (n = 64)"});
}

TEST_F(SemaTest, DivisorThroughConstantLets) {
  EXPECT_EQ(checkBody("l = 16, c = 4",
                      "  let w = max(l / c, 1) * 2 - abs(-1);\n"
                      "  let v = min(w, 100) % 7;\n"
                      "  heads = i / w == j / (v + 1);"),
            Strings{});
  EXPECT_EQ(
      checkBody("l = 16, c = 4", "  let w = l - 4 * c;\n  heads = i / w == 0;"),
      Strings{"3:15: error: the divisor of '/' must be positive, but "
              "it is 0 (l = 16, c = 4)"});
  EXPECT_EQ(checkBody("", "  heads = i % -2 == 0;"),
            Strings{"2:15: error: the divisor of '%' must be positive, but "
                    "it is -2"});
  EXPECT_EQ(checkBody("", "  heads = i / (7 % 7) == 0;"),
            Strings{"2:16: error: the divisor of '/' must be positive, but "
                    "it is 0"});
}

TEST_F(SemaTest, ConstantFoldingUsesFloorSemantics) {
  // -7 / 2 is -4 and -7 % 2 is 1 (floor), so these divisors are positive;
  // truncating semantics would give -3 + 4 = 1 (ok) and -1 (error).
  EXPECT_EQ(checkBody("", "  heads = i % (-7 / 2 + 5) == 0 && j % (-7 % 2) "
                          "== 0;"),
            Strings{});
}

TEST_F(SemaTest, ConstantOverflow) {
  EXPECT_EQ(checkBody("", "  heads = i < 9223372036854775807 + 1;"),
            Strings{"2:35: error: integer overflow in a constant expression"});
  EXPECT_EQ(checkBody("big = 4611686018427387904", "  heads = i < big * 2;"),
            Strings{"2:19: error: integer overflow in a constant expression"});
  EXPECT_EQ(checkBody("", "  let m = -9223372036854775807 - 1;\n"
                          "  heads = i < abs(m) && j < -m && i % m == 0;"),
            (Strings{"3:15: error: integer overflow in a constant expression",
                     "3:29: error: integer overflow in a constant "
                     "expression",
                     "3:39: error: the divisor of '%' must be positive, but "
                     "it is -9223372036854775808"}));
  // Not constant: wraps at run time like the kernels, no error.
  EXPECT_EQ(checkBody("", "  heads = i * 9223372036854775807 < j;"), Strings{});
}

} // namespace

namespace {

TEST_F(SemaTest, Dump) {
  SemaOptions options;
  options.overrides = {{"l", 64}};
  ASSERT_EQ(check("pattern strided(l = 128, c = -1) {\n"
                  "  causal;\n"
                  "  let row = i - j < l;\n"
                  "  let g = -h;\n"
                  "  heads[h] = row || min(g, c) % 2 == 0 && !true;\n"
                  "}\n",
                  options),
            Strings{});
  std::string text;
  llvm::raw_string_ostream os(text);
  dump(*module, sourceMgr, os);
  EXPECT_EQ(text, R"(pattern 'strided' (l = 64 [-D], c = -1) causal <1:9>
  let row : bool <3:7>
    binary '<' : bool <3:19>
      binary '-' : int <3:15>
        name 'i' query : int <3:13>
        name 'j' key : int <3:17>
      name 'l' param : int <3:21>
  let g : int uses-h <4:7>
    unary '-' : int <4:11>
      name 'h' head : int <4:12>
  heads[h] <5:3>
    binary '||' : bool <5:18>
      name 'row' let : bool <5:14>
      binary '&&' : bool <5:40>
        binary '==' : bool <5:35>
          binary '%' : int <5:31>
            call 'min' : int <5:21>
              name 'g' let : int <5:25>
              name 'c' param : int <5:28>
            int 2 : int <5:33>
          int 0 : int <5:38>
        unary '!' : bool <5:43>
          bool true : bool <5:44>
)");
}

} // namespace
