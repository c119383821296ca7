//===- ParserTest.cpp - syntax of the .sp language ------------------------===//
//
// Precedence and associativity (checked on the tree shape), every statement
// form, source ranges, and every syntax error by exact message and line:col.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/DSL/Parser.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace sparsetx::dsl;
using Strings = std::vector<std::string>;

namespace {

/// The tree as an S-expression: (- (- a b) c).
std::string sexpr(const Expr &expr) {
  switch (expr.getKind()) {
  case Expr::Kind::IntLit:
    return std::to_string(llvm::cast<IntLitExpr>(expr).value);
  case Expr::Kind::BoolLit:
    return llvm::cast<BoolLitExpr>(expr).value ? "true" : "false";
  case Expr::Kind::Name:
    return llvm::cast<NameExpr>(expr).name.str();
  case Expr::Kind::Unary: {
    const auto &unary = llvm::cast<UnaryExpr>(expr);
    return "(" + toString(unary.op).str() + " " + sexpr(*unary.operand) + ")";
  }
  case Expr::Kind::Binary: {
    const auto &binary = llvm::cast<BinaryExpr>(expr);
    return "(" + toString(binary.op).str() + " " + sexpr(*binary.lhs) + " " +
           sexpr(*binary.rhs) + ")";
  }
  case Expr::Kind::Call: {
    const auto &call = llvm::cast<CallExpr>(expr);
    std::string text = "(" + toString(call.callee).str();
    for (const ExprPtr &arg : call.args)
      text += " " + sexpr(*arg);
    return text + ")";
  }
  }
  return "?";
}

class ParserTest : public ::testing::Test {
protected:
  ParserTest()
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

  std::unique_ptr<Module> parse(llvm::StringRef source) {
    unsigned id = sourceMgr.AddNewSourceBuffer(
        llvm::MemoryBuffer::getMemBufferCopy(source, "parse.sp"),
        llvm::SMLoc());
    return parseModule(locator, id);
  }

  /// The S-expression of the mask of `heads = <expr>;`.
  std::string parseMask(llvm::StringRef expr) {
    auto module = parse(("pattern p() { heads = " + expr + "; }").str());
    if (!module)
      return "<error>";
    return sexpr(*module->patterns[0]->masks[0]);
  }

  /// The diagnostics of a pattern whose body is `body` (on line 2).
  Strings bodyErrors(llvm::StringRef body) {
    diags.clear();
    EXPECT_EQ(parse(("pattern p() {\n" + body + "\n}").str()), nullptr)
        << body.str();
    return diags;
  }

  std::pair<unsigned, unsigned> lineCol(llvm::SMLoc loc) {
    return sourceMgr.getLineAndColumn(loc);
  }

  mlir::MLIRContext context;
  llvm::SourceMgr sourceMgr;
  SourceLocator locator{sourceMgr, &context};
  Strings diags;
  mlir::ScopedDiagnosticHandler handler;
};

TEST_F(ParserTest, LeftAssociative) {
  EXPECT_EQ(parseMask("a - b - c"), "(- (- a b) c)");
  EXPECT_EQ(parseMask("a / b / c"), "(/ (/ a b) c)");
  EXPECT_EQ(parseMask("a % b * c"), "(* (% a b) c)");
  EXPECT_EQ(parseMask("a || b || c"), "(|| (|| a b) c)");
  EXPECT_EQ(parseMask("a && b && c"), "(&& (&& a b) c)");
  EXPECT_TRUE(diags.empty());
}

TEST_F(ParserTest, Precedence) {
  EXPECT_EQ(parseMask("!a && b || c"), "(|| (&& (! a) b) c)");
  EXPECT_EQ(parseMask("a || b && c"), "(|| a (&& b c))");
  EXPECT_EQ(parseMask("a + b * c % d"), "(+ a (% (* b c) d))");
  EXPECT_EQ(parseMask("-a * b"), "(* (- a) b)");
  EXPECT_EQ(parseMask("- -a"), "(- (- a))");
  EXPECT_EQ(parseMask("!!a"), "(! (! a))");
  EXPECT_EQ(parseMask("i - j < l"), "(< (- i j) l)");
  EXPECT_EQ(parseMask("(i - j) % l == 0"), "(== (% (- i j) l) 0)");
  EXPECT_EQ(parseMask("a == b && c != d"), "(&& (== a b) (!= c d))");
  EXPECT_EQ(parseMask("a <= b || c >= d && e > f"),
            "(|| (<= a b) (&& (>= c d) (> e f)))");
  EXPECT_EQ(parseMask("a * (b + c)"), "(* a (+ b c))");
  EXPECT_EQ(parseMask("min(a, b + 1) - abs(-c)"),
            "(- (min a (+ b 1)) (abs (- c)))");
  EXPECT_EQ(parseMask("max(min(a, b), 0)"), "(max (min a b) 0)");
  EXPECT_EQ(parseMask("true || !false"), "(|| true (! false))");
  EXPECT_EQ(parseMask("(((a)))"), "a");
  EXPECT_TRUE(diags.empty());
}

TEST_F(ParserTest, PaperPatterns) {
  auto module = parse(R"(// four patterns
pattern strided(l = 128) {
  causal;
  let row    = i - j < l;
  let column = (i - j) % l == 0;
  heads = row || column;
}
pattern fixed(l = 128, c = 32) {
  causal;
  let block   = i / l == j / l;
  let summary = j % l >= l - c;
  heads = block || summary;
}
pattern fixed_heads(l = 128, c = 16) {
  causal;
  let block = i / l == j / l;
  heads[h] = block || (j % l >= l - c * (h + 1) && j % l < l - c * h);
}
pattern strided_interleaved(l = 128) {
  causal;
  layers = [i - j < l, (i - j) % l == 0];
}
)");
  ASSERT_TRUE(module);
  EXPECT_TRUE(diags.empty());
  ASSERT_EQ(module->patterns.size(), 4u);

  const PatternDecl &strided = *module->patterns[0];
  EXPECT_EQ(strided.name, "strided");
  EXPECT_EQ(lineCol(strided.nameRange.Start), std::make_pair(2u, 9u));
  EXPECT_EQ(lineCol(strided.range.Start), std::make_pair(2u, 1u));
  EXPECT_EQ(lineCol(strided.range.End), std::make_pair(7u, 2u));
  ASSERT_EQ(strided.params.size(), 1u);
  EXPECT_EQ(strided.params[0].name, "l");
  EXPECT_EQ(strided.params[0].value, 128);
  EXPECT_FALSE(strided.params[0].overridden);
  EXPECT_TRUE(strided.causal);
  EXPECT_EQ(lineCol(strided.causalRange.Start), std::make_pair(3u, 3u));
  ASSERT_EQ(strided.lets.size(), 2u);
  EXPECT_EQ(strided.lets[0]->name, "row");
  EXPECT_EQ(lineCol(strided.lets[0]->nameRange.Start), std::make_pair(4u, 7u));
  EXPECT_EQ(sexpr(*strided.lets[0]->init), "(< (- i j) l)");
  EXPECT_EQ(sexpr(*strided.lets[1]->init), "(== (% (- i j) l) 0)");
  EXPECT_EQ(strided.form, MaskForm::Heads);
  EXPECT_EQ(lineCol(strided.formRange.Start), std::make_pair(6u, 3u));
  ASSERT_EQ(strided.masks.size(), 1u);
  EXPECT_EQ(sexpr(*strided.masks[0]), "(|| row column)");
  EXPECT_TRUE(strided.extraCausal.empty());
  EXPECT_TRUE(strided.extraAttention.empty());

  const PatternDecl &fixed = *module->patterns[1];
  ASSERT_EQ(fixed.params.size(), 2u);
  EXPECT_EQ(fixed.params[1].name, "c");
  EXPECT_EQ(fixed.params[1].value, 32);

  const PatternDecl &fixedHeads = *module->patterns[2];
  EXPECT_EQ(fixedHeads.form, MaskForm::PerHead);
  EXPECT_EQ(sexpr(*fixedHeads.masks[0]),
            "(|| block (&& (>= (% j l) (- l (* c (+ h 1)))) (< (% j l) (- l "
            "(* c h)))))");

  const PatternDecl &interleaved = *module->patterns[3];
  EXPECT_EQ(interleaved.form, MaskForm::Layers);
  ASSERT_EQ(interleaved.masks.size(), 2u);
  EXPECT_EQ(sexpr(*interleaved.masks[0]), "(< (- i j) l)");
  EXPECT_EQ(sexpr(*interleaved.masks[1]), "(== (% (- i j) l) 0)");

  EXPECT_EQ(module->findPattern("fixed"), module->patterns[1].get());
  EXPECT_EQ(module->findPattern("nope"), nullptr);
  EXPECT_EQ(fixed.findParam("c"), &fixed.params[1]);
  EXPECT_EQ(fixed.findParam("x"), nullptr);
}

TEST_F(ParserTest, ExpressionRanges) {
  auto module = parse("pattern p() { heads = min(a, 2) <= -b; }");
  ASSERT_TRUE(module);
  const auto &cmp = llvm::cast<BinaryExpr>(*module->patterns[0]->masks[0]);
  EXPECT_EQ(lineCol(cmp.getRange().Start), std::make_pair(1u, 23u));
  EXPECT_EQ(lineCol(cmp.getRange().End), std::make_pair(1u, 38u));
  EXPECT_EQ(lineCol(cmp.opRange.Start), std::make_pair(1u, 33u));
  const auto &call = llvm::cast<CallExpr>(*cmp.lhs);
  EXPECT_EQ(lineCol(call.getRange().End), std::make_pair(1u, 32u));
  const auto &neg = llvm::cast<UnaryExpr>(*cmp.rhs);
  EXPECT_EQ(lineCol(neg.getRange().Start), std::make_pair(1u, 36u));
  EXPECT_EQ(lineCol(neg.operand->getLoc()), std::make_pair(1u, 37u));
}

TEST_F(ParserTest, StatementForms) {
  auto module = parse(R"(pattern a(l = -4, m = 0) {
  layers = [true, i < j,];
}
pattern b() { heads[h] = h == 0; }
pattern c() { causal; causal; heads = true; heads[h] = false; layers = [true]; }
)");
  ASSERT_TRUE(module);
  EXPECT_TRUE(diags.empty());
  const PatternDecl &a = *module->patterns[0];
  EXPECT_EQ(a.params[0].value, -4);
  EXPECT_EQ(lineCol(a.params[0].valueRange.Start), std::make_pair(1u, 15u));
  EXPECT_EQ(lineCol(a.params[0].valueRange.End), std::make_pair(1u, 17u));
  EXPECT_EQ(a.params[1].value, 0);
  EXPECT_FALSE(a.causal);
  EXPECT_EQ(a.form, MaskForm::Layers);
  EXPECT_EQ(a.masks.size(), 2u); // the trailing comma adds no entry

  const PatternDecl &b = *module->patterns[1];
  EXPECT_TRUE(b.params.empty());
  EXPECT_EQ(b.form, MaskForm::PerHead);
  EXPECT_EQ(sexpr(*b.masks[0]), "(== h 0)");

  // Repeated statements are not syntax errors: sema reports them.
  const PatternDecl &c = *module->patterns[2];
  EXPECT_TRUE(c.causal);
  ASSERT_EQ(c.extraCausal.size(), 1u);
  EXPECT_EQ(lineCol(c.extraCausal[0].Start), std::make_pair(5u, 23u));
  EXPECT_EQ(c.form, MaskForm::Heads);
  ASSERT_EQ(c.extraAttention.size(), 2u);
  EXPECT_EQ(c.extraAttention[0].form, MaskForm::PerHead);
  EXPECT_EQ(c.extraAttention[1].form, MaskForm::Layers);
  EXPECT_EQ(lineCol(c.extraAttention[1].formRange.Start),
            std::make_pair(5u, 63u));
}

TEST_F(ParserTest, EmptyFile) {
  EXPECT_EQ(parse(""), nullptr);
  EXPECT_EQ(diags,
            Strings{"1:1: error: expected 'pattern': no pattern in file"});
  diags.clear();
  EXPECT_EQ(parse("// nothing\n\n"), nullptr);
  EXPECT_EQ(diags,
            Strings{"3:1: error: expected 'pattern': no pattern in file"});
}

TEST_F(ParserTest, TopLevelErrors) {
  EXPECT_EQ(parse("let x = 1;"), nullptr);
  EXPECT_EQ(parse("pattern p() { heads = true; }\n  heads = false;"), nullptr);
  EXPECT_EQ(parse("pattern (l = 1) {}"), nullptr);
  EXPECT_EQ(parse("pattern min() {}"), nullptr);
  EXPECT_EQ(parse("pattern p {}"), nullptr);
  EXPECT_EQ(parse("pattern p() heads"), nullptr);
  EXPECT_EQ(diags,
            (Strings{
                "1:1: error: expected 'pattern'",
                "2:3: error: expected 'pattern'",
                "1:9: error: expected a pattern name after 'pattern'",
                "1:9: error: expected a pattern name after 'pattern', but "
                "'min' is a keyword",
                "1:11: error: expected '(' after the pattern name",
                "1:13: error: expected '{' to begin the body of pattern 'p'",
            }));
}

TEST_F(ParserTest, ParamErrors) {
  EXPECT_EQ(parse("pattern p(l) {}"), nullptr);
  EXPECT_EQ(parse("pattern p(l = x) {}"), nullptr);
  EXPECT_EQ(parse("pattern p(l = - 1 c = 2) {}"), nullptr);
  EXPECT_EQ(parse("pattern p(,) {}"), nullptr);
  EXPECT_EQ(parse("pattern p(l = 1,) {}"), nullptr);
  EXPECT_EQ(parse("pattern p(heads = 1) {}"), nullptr);
  EXPECT_EQ(parse("pattern p(l = --1) {}"), nullptr);
  EXPECT_EQ(diags,
            (Strings{
                "1:12: error: expected '=' and a default value after "
                "parameter 'l'",
                "1:15: error: expected an integer default value for "
                "parameter 'l'",
                "1:19: error: expected ',' or ')' after a parameter",
                "1:11: error: expected a parameter name",
                "1:17: error: expected a parameter name",
                "1:11: error: expected a parameter name, but 'heads' is a "
                "keyword",
                "1:16: error: expected an integer default value for "
                "parameter 'l'",
            }));
}

TEST_F(ParserTest, StatementErrors) {
  EXPECT_EQ(bodyErrors("  causal"),
            Strings{"2:9: error: expected ';' after 'causal'"});
  EXPECT_EQ(bodyErrors("  foo;"),
            Strings{"2:3: error: expected a statement ('causal', 'let', "
                    "'heads' or 'layers') or '}'"});
  EXPECT_EQ(bodyErrors("  let = 1;"),
            Strings{"2:7: error: expected a name after 'let'"});
  EXPECT_EQ(bodyErrors("  let min = 1;"),
            Strings{"2:7: error: expected a name after 'let', but 'min' is "
                    "a keyword"});
  EXPECT_EQ(bodyErrors("  let x 1;"),
            Strings{"2:9: error: expected '=' after 'let x'"});
  EXPECT_EQ(bodyErrors("  let x = 1"),
            Strings{"2:12: error: expected ';' after the let statement"});
  EXPECT_EQ(bodyErrors("  let x = i = j;"),
            Strings{"2:13: error: expected ';' after the let statement; did "
                    "you mean '=='?"});
  EXPECT_EQ(bodyErrors("  heads = i = j;"),
            Strings{"2:13: error: expected ';' after the heads statement; "
                    "did you mean '=='?"});
  EXPECT_EQ(bodyErrors("  heads = a b;"),
            Strings{"2:12: error: expected ';' after the heads statement"});
  EXPECT_EQ(bodyErrors("  heads[i] = true;"),
            Strings{"2:9: error: expected 'h' as the head index"});
  EXPECT_EQ(bodyErrors("  heads[] = true;"),
            Strings{"2:9: error: expected 'h' as the head index"});
  EXPECT_EQ(bodyErrors("  heads[h = true;"),
            Strings{"2:11: error: expected ']' after the head index 'h'"});
  EXPECT_EQ(bodyErrors("  heads[h] true;"),
            Strings{"2:12: error: expected '=' after 'heads[h]'"});
  EXPECT_EQ(bodyErrors("  heads true;"),
            Strings{"2:9: error: expected '=' or '[h]' after 'heads'"});
  EXPECT_EQ(bodyErrors("  layers [true];"),
            Strings{"2:10: error: expected '=' after 'layers'"});
  EXPECT_EQ(bodyErrors("  layers = true;"),
            Strings{"2:12: error: expected '[' to begin the list of layer "
                    "masks"});
  EXPECT_EQ(bodyErrors("  layers = [];"),
            Strings{"2:13: error: expected expression"});
  EXPECT_EQ(bodyErrors("  layers = [a b];"),
            Strings{"2:15: error: expected ',' or ']' in the list of layer "
                    "masks"});
  EXPECT_EQ(bodyErrors("  layers = [a,,];"),
            Strings{"2:15: error: expected expression"});
  EXPECT_EQ(bodyErrors("  layers = [a]"),
            Strings{"2:15: error: expected ';' after the layers statement"});
}

TEST_F(ParserTest, UnterminatedBody) {
  EXPECT_EQ(parse("pattern p() { causal;"), nullptr);
  EXPECT_EQ(diags,
            Strings{"1:22: error: expected '}' at the end of pattern 'p'"});
}

TEST_F(ParserTest, ExpressionErrors) {
  EXPECT_EQ(bodyErrors("  heads = ;"),
            Strings{"2:11: error: expected expression"});
  EXPECT_EQ(bodyErrors("  heads = a +;"),
            Strings{"2:14: error: expected expression"});
  EXPECT_EQ(bodyErrors("  heads = pattern;"),
            Strings{"2:11: error: expected expression"});
  EXPECT_EQ(bodyErrors("  heads = a < b < c;"),
            Strings{"2:17: error: comparisons cannot be chained; combine "
                    "them with '&&'"});
  EXPECT_EQ(bodyErrors("  heads = a == b != c;"),
            Strings{"2:18: error: comparisons cannot be chained; combine "
                    "them with '&&'"});
  EXPECT_EQ(
      bodyErrors("  heads = (a < b;"),
      (Strings{"2:17: error: expected ')'", "2:11: note: to match this '('"}));
  EXPECT_EQ(bodyErrors("  heads = min(a);"),
            Strings{"2:16: error: 'min' takes 2 arguments, but 1 was given"});
  EXPECT_EQ(bodyErrors("  heads = abs(a, b);"),
            Strings{"2:16: error: 'abs' takes 1 argument, but more were "
                    "given"});
  EXPECT_EQ(bodyErrors("  heads = max(a, b, c);"),
            Strings{"2:19: error: 'max' takes 2 arguments, but more were "
                    "given"});
  EXPECT_EQ(bodyErrors("  heads = min a;"),
            Strings{"2:15: error: expected '(' after 'min'"});
  EXPECT_EQ(bodyErrors("  heads = min(a b);"),
            Strings{"2:17: error: expected ',' between the arguments of "
                    "'min'"});
  EXPECT_EQ(bodyErrors("  heads = max(a, b;"),
            Strings{"2:19: error: expected ')' after the arguments of "
                    "'max'"});
}

TEST_F(ParserTest, LexerErrorStopsTheParse) {
  // One diagnostic: the lexer's; the parser adds nothing at the error token.
  EXPECT_EQ(bodyErrors("  heads = i & j;"),
            Strings{"2:13: error: unexpected character '&'; did you mean "
                    "'&&'?"});
  EXPECT_EQ(bodyErrors("  let x = 99999999999999999999;"),
            Strings{"2:11: error: integer literal '99999999999999999999' is "
                    "out of range for a 64-bit integer"});
  EXPECT_EQ(bodyErrors("  heads = (a @"),
            Strings{"2:14: error: unexpected character '@'"});
}

TEST_F(ParserTest, NestingLimit) {
  std::string ok = std::string(200, '(') + "a" + std::string(200, ')');
  EXPECT_EQ(parseMask(ok), "a");
  EXPECT_EQ(parseMask(std::string(200, '!') + "a").size(), 200 * 4 + 1);
  EXPECT_TRUE(diags.empty());

  std::string deep = std::string(300, '(') + "a" + std::string(300, ')');
  EXPECT_EQ(parseMask(deep), "<error>");
  EXPECT_EQ(parseMask(std::string(300, '-') + "a"), "<error>");
  ASSERT_EQ(diags.size(), 2u);
  EXPECT_NE(diags[0].find("error: expression is nested too deeply (more "
                          "than 256 levels)"),
            std::string::npos);
  EXPECT_NE(diags[1].find("error: expression is nested too deeply (more "
                          "than 256 levels)"),
            std::string::npos);
}

TEST_F(ParserTest, DepthLimit) {
  // A chain of 999 operators is 1000 levels deep: the limit.
  std::string chain = "1";
  for (int k = 0; k < 999; ++k)
    chain += "+1";
  EXPECT_NE(parseMask(chain), "<error>");
  EXPECT_TRUE(diags.empty());
  chain += "+1";
  EXPECT_EQ(parseMask(chain), "<error>");
  // The 1000th '+' is at column 24 + 2 * 999 of line 1.
  EXPECT_EQ(diags, Strings{"1:2022: error: expression is too deep (more than "
                           "1000 nested operations); split it with 'let'"});
  diags.clear();
  // Depth counts through parentheses and calls, not only chains.
  std::string nested = "a";
  for (int k = 0; k < 200; ++k)
    nested = "min(" + nested + " + 1, 2)";
  EXPECT_NE(parseMask(nested), "<error>");
  // 250 levels of nesting (under kMaxNesting), 4 operations each.
  nested = "a";
  for (int k = 0; k < 250; ++k)
    nested = "abs(" + nested + " + 1 + 1 + 1)";
  EXPECT_EQ(parseMask(nested), "<error>");
  ASSERT_EQ(diags.size(), 1u);
  EXPECT_NE(diags[0].find("error: expression is too deep"), std::string::npos);
}

} // namespace
