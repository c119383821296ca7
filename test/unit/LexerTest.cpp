//===- LexerTest.cpp - tokens of the .sp language -------------------------===//
//
// Every token kind, comments, maximal munch, locations, and the two lexical
// errors (bad character, integer literal above INT64_MAX) with their exact
// text and position.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/DSL/Lexer.h"

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

namespace {

class LexerTest : public ::testing::Test {
protected:
  LexerTest()
      : handler(&context, [this](mlir::Diagnostic &diag) {
          std::string text;
          llvm::raw_string_ostream os(text);
          if (auto loc =
                  llvm::dyn_cast<mlir::FileLineColLoc>(diag.getLocation()))
            os << loc.getLine() << ":" << loc.getColumn() << ": ";
          os << diag.str();
          diags.push_back(text);
          return mlir::success();
        }) {}

  /// Lexes `source` to the end (eof included, or the first error token).
  std::vector<Token> lex(llvm::StringRef source) {
    unsigned id = sourceMgr.AddNewSourceBuffer(
        llvm::MemoryBuffer::getMemBufferCopy(source, "lex.sp"), llvm::SMLoc());
    Lexer lexer(locator, id);
    std::vector<Token> tokens;
    do {
      tokens.push_back(lexer.lexToken());
    } while (!tokens.back().isAny(Token::eof, Token::error));
    return tokens;
  }

  std::vector<Token::Kind> kinds(llvm::StringRef source) {
    std::vector<Token::Kind> result;
    for (const Token &tok : lex(source))
      result.push_back(tok.getKind());
    return result;
  }

  std::pair<unsigned, unsigned> lineCol(const Token &tok) {
    return sourceMgr.getLineAndColumn(tok.getLoc());
  }

  mlir::MLIRContext context;
  llvm::SourceMgr sourceMgr;
  SourceLocator locator{sourceMgr, &context};
  std::vector<std::string> diags;
  mlir::ScopedDiagnosticHandler handler;
};

using K = Token::Kind;

TEST_F(LexerTest, Punctuation) {
  std::vector<Token> tokens =
      lex("( ) { } [ ] , ; = + - * / % ! && || == != < <= > >=");
  std::vector<K> expected = {
      K::l_paren,    K::r_paren,   K::l_brace,       K::r_brace,    K::l_square,
      K::r_square,   K::comma,     K::semi,          K::equal,      K::plus,
      K::minus,      K::star,      K::slash,         K::percent,    K::bang,
      K::amp_amp,    K::pipe_pipe, K::equal_equal,   K::bang_equal, K::less,
      K::less_equal, K::greater,   K::greater_equal, K::eof};
  ASSERT_EQ(tokens.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(tokens[i].getKind(), expected[i]) << "token " << i;
    if (i + 1 < expected.size()) {
      EXPECT_EQ(tokens[i].getSpelling(), Token::getFixedSpelling(expected[i]));
    }
  }
  EXPECT_TRUE(diags.empty());
}

TEST_F(LexerTest, MaximalMunch) {
  EXPECT_EQ(
      kinds("<=<>=>!==!"),
      (std::vector<K>{K::less_equal, K::less, K::greater_equal, K::greater,
                      K::bang_equal, K::equal, K::bang, K::eof}));
  EXPECT_EQ(kinds("a==b"), (std::vector<K>{K::identifier, K::equal_equal,
                                           K::identifier, K::eof}));
  EXPECT_EQ(kinds("&&&&||||"),
            (std::vector<K>{K::amp_amp, K::amp_amp, K::pipe_pipe, K::pipe_pipe,
                            K::eof}));
}

TEST_F(LexerTest, KeywordsAndIdentifiers) {
  std::vector<Token> tokens =
      lex("pattern let causal heads layers true false min max abs "
          "i j n h row _x x1 patterns Let minimum");
  std::vector<K> expected = {
      K::kw_pattern, K::kw_let,     K::kw_causal,  K::kw_heads,   K::kw_layers,
      K::kw_true,    K::kw_false,   K::kw_min,     K::kw_max,     K::kw_abs,
      K::identifier, K::identifier, K::identifier, K::identifier, K::identifier,
      K::identifier, K::identifier, K::identifier, K::identifier, K::identifier,
      K::eof};
  ASSERT_EQ(tokens.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i)
    EXPECT_EQ(tokens[i].getKind(), expected[i]) << "token " << i;
  EXPECT_TRUE(tokens[0].isKeyword());
  EXPECT_FALSE(tokens[10].isKeyword());
  EXPECT_EQ(tokens[15].getSpelling(), "_x");
  EXPECT_EQ(tokens[16].getSpelling(), "x1");
}

TEST_F(LexerTest, Integers) {
  std::vector<Token> tokens = lex("0 128 007 9223372036854775807");
  ASSERT_EQ(tokens.size(), 5u);
  EXPECT_EQ(tokens[0].getIntegerValue(), 0);
  EXPECT_EQ(tokens[1].getIntegerValue(), 128);
  EXPECT_EQ(tokens[2].getIntegerValue(), 7);
  EXPECT_EQ(tokens[3].getKind(), K::integer);
  EXPECT_EQ(tokens[3].getIntegerValue(), INT64_MAX);
  EXPECT_TRUE(diags.empty());
  // A digit run ends the literal; letters start a new token.
  EXPECT_EQ(kinds("12ab"), (std::vector<K>{K::integer, K::identifier, K::eof}));
}

TEST_F(LexerTest, IntegerOutOfRange) {
  std::vector<Token> tokens = lex("x = 9223372036854775808;");
  ASSERT_EQ(tokens.size(), 3u);
  EXPECT_EQ(tokens[2].getKind(), K::error);
  EXPECT_EQ(tokens[2].getSpelling(), "9223372036854775808");
  EXPECT_EQ(diags, (std::vector<std::string>{
                       "1:5: integer literal '9223372036854775808' is out of "
                       "range for a 64-bit integer"}));
  diags.clear();
  // Beyond uint64_t as well.
  tokens = lex("\n  123456789012345678901234567890");
  EXPECT_EQ(tokens.back().getKind(), K::error);
  EXPECT_EQ(diags, (std::vector<std::string>{
                       "2:3: integer literal '123456789012345678901234567890' "
                       "is out of range for a 64-bit integer"}));
}

TEST_F(LexerTest, Comments) {
  std::vector<Token> tokens =
      lex("a // comment ( ) && 99999999999999999999 #\n b// last");
  ASSERT_EQ(tokens.size(), 3u);
  EXPECT_EQ(tokens[0].getSpelling(), "a");
  EXPECT_EQ(tokens[1].getSpelling(), "b");
  EXPECT_EQ(lineCol(tokens[1]), std::make_pair(2u, 2u));
  EXPECT_EQ(tokens[2].getKind(), K::eof);
  EXPECT_TRUE(diags.empty());
  // A single slash is division; two separated slashes are two divisions.
  EXPECT_EQ(kinds("a / / b"), (std::vector<K>{K::identifier, K::slash, K::slash,
                                              K::identifier, K::eof}));
  EXPECT_EQ(kinds("//"), (std::vector<K>{K::eof}));
  EXPECT_EQ(kinds(""), (std::vector<K>{K::eof}));
}

TEST_F(LexerTest, Locations) {
  std::vector<Token> tokens = lex("pattern p(\n  l = 12)\n\t{ }");
  ASSERT_EQ(tokens.size(), 10u);
  EXPECT_EQ(lineCol(tokens[0]), std::make_pair(1u, 1u));  // pattern
  EXPECT_EQ(lineCol(tokens[1]), std::make_pair(1u, 9u));  // p
  EXPECT_EQ(lineCol(tokens[2]), std::make_pair(1u, 10u)); // (
  EXPECT_EQ(lineCol(tokens[3]), std::make_pair(2u, 3u));  // l
  EXPECT_EQ(lineCol(tokens[4]), std::make_pair(2u, 5u));  // =
  EXPECT_EQ(lineCol(tokens[5]), std::make_pair(2u, 7u));  // 12
  EXPECT_EQ(
      tokens[5].getEndLoc().getPointer() - tokens[5].getLoc().getPointer(), 2);
  EXPECT_EQ(lineCol(tokens[6]), std::make_pair(2u, 9u)); // )
  EXPECT_EQ(lineCol(tokens[7]), std::make_pair(3u, 2u)); // {
  EXPECT_EQ(lineCol(tokens[8]), std::make_pair(3u, 4u)); // }
  EXPECT_EQ(lineCol(tokens[9]), std::make_pair(3u, 5u)); // eof
  // The locator turns an SMLoc into file:line:col of the buffer.
  auto loc = llvm::cast<mlir::FileLineColLoc>(locator.get(tokens[3].getLoc()));
  EXPECT_EQ(loc.getFilename().getValue(), "lex.sp");
  EXPECT_EQ(loc.getLine(), 2u);
  EXPECT_EQ(loc.getColumn(), 3u);
  EXPECT_TRUE(llvm::isa<mlir::UnknownLoc>(locator.get(llvm::SMLoc())));
}

TEST_F(LexerTest, EofRepeats) {
  unsigned id = sourceMgr.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBufferCopy("x", "lex.sp"), llvm::SMLoc());
  Lexer lexer(locator, id);
  EXPECT_EQ(lexer.lexToken().getKind(), K::identifier);
  EXPECT_EQ(lexer.lexToken().getKind(), K::eof);
  EXPECT_EQ(lexer.lexToken().getKind(), K::eof);
}

TEST_F(LexerTest, BadCharacters) {
  EXPECT_EQ(kinds("a # b"), (std::vector<K>{K::identifier, K::error}));
  EXPECT_EQ(kinds("$"), (std::vector<K>{K::error}));
  EXPECT_EQ(kinds("\x01"), (std::vector<K>{K::error}));
  EXPECT_EQ(kinds(llvm::StringRef("a\0b", 3)),
            (std::vector<K>{K::identifier, K::error}));
  EXPECT_EQ(kinds("\xC3\xA9"), (std::vector<K>{K::error}));
  EXPECT_EQ(diags, (std::vector<std::string>{
                       "1:3: unexpected character '#'",
                       "1:1: unexpected character '$'",
                       "1:1: unexpected character '\\x01'",
                       "1:2: unexpected character '\\x00'",
                       "1:1: unexpected character '\\xC3'",
                   }));
}

TEST_F(LexerTest, LoneAmpersandAndPipe) {
  EXPECT_EQ(kinds("a & b"), (std::vector<K>{K::identifier, K::error}));
  EXPECT_EQ(kinds("a | b"), (std::vector<K>{K::identifier, K::error}));
  EXPECT_EQ(kinds("&"), (std::vector<K>{K::error}));
  EXPECT_EQ(diags, (std::vector<std::string>{
                       "1:3: unexpected character '&'; did you mean '&&'?",
                       "1:3: unexpected character '|'; did you mean '||'?",
                       "1:1: unexpected character '&'; did you mean '&&'?",
                   }));
}

TEST_F(LexerTest, KindNames) {
  EXPECT_EQ(Token::getKindName(K::l_paren), "'('");
  EXPECT_EQ(Token::getKindName(K::greater_equal), "'>='");
  EXPECT_EQ(Token::getKindName(K::kw_pattern), "'pattern'");
  EXPECT_EQ(Token::getKindName(K::identifier), "identifier");
  EXPECT_EQ(Token::getKindName(K::integer), "integer");
  EXPECT_EQ(Token::getKindName(K::eof), "end of file");
  EXPECT_EQ(Token::getFixedSpelling(K::kw_abs), "abs");
  EXPECT_EQ(Token::getFixedSpelling(K::identifier), "");
}

} // namespace
