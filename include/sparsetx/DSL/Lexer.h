//===- Lexer.h - tokens and lexer of the .sp language -----------*- C++ -*-===//
//
// Tokens are StringRef slices of the SourceMgr buffer (no copies), so a
// token's location is its first character. The lexer reports its own errors
// (a bad character, an integer literal that does not fit in 64 bits) through
// the locator and returns an `error` token; the parser stops at it without a
// second diagnostic.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_DSL_LEXER_H
#define SPARSETX_DSL_LEXER_H

#include "sparsetx/DSL/Diagnostics.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/SMLoc.h"

#include <cstdint>

namespace sparsetx::dsl {

class Token {
public:
  enum Kind {
#define TOK(NAME) NAME,
#include "sparsetx/DSL/Token.def"
  };

  Token(Kind kind, llvm::StringRef spelling) : kind(kind), spelling(spelling) {}

  Kind getKind() const { return kind; }
  bool is(Kind k) const { return kind == k; }
  bool isNot(Kind k) const { return kind != k; }
  template <typename... Kinds> bool isAny(Kinds... ks) const {
    return ((kind == ks) || ...);
  }
  bool isKeyword() const;

  /// The source text of the token (empty for eof).
  llvm::StringRef getSpelling() const { return spelling; }
  llvm::SMLoc getLoc() const {
    return llvm::SMLoc::getFromPointer(spelling.data());
  }
  llvm::SMLoc getEndLoc() const {
    return llvm::SMLoc::getFromPointer(spelling.data() + spelling.size());
  }
  llvm::SMRange getRange() const { return {getLoc(), getEndLoc()}; }

  /// The value of an `integer` token; the lexer already rejected literals
  /// above INT64_MAX.
  int64_t getIntegerValue() const;

  /// A printable name of a kind for messages and tests: "'('", "'pattern'",
  /// "identifier", "integer", "end of file", "error".
  static llvm::StringRef getKindName(Kind kind);
  /// The fixed spelling of a punctuation or keyword kind, "" otherwise.
  static llvm::StringRef getFixedSpelling(Kind kind);

private:
  Kind kind;
  llvm::StringRef spelling;
};

class Lexer {
public:
  Lexer(const SourceLocator &locator, unsigned bufferId);

  /// The next token; `eof` (repeatedly) at the end of the buffer, `error`
  /// after reporting a lexical error.
  Token lexToken();

  const SourceLocator &getLocator() const { return locator; }

private:
  Token formToken(Token::Kind kind, const char *tokStart) {
    return Token(kind, llvm::StringRef(tokStart, curPtr - tokStart));
  }
  /// Reports `msg` at `loc` and returns an error token spanning
  /// [tokStart, curPtr).
  Token emitError(const char *tokStart, const llvm::Twine &msg);
  char peek() const { return curPtr == bufferEnd ? '\0' : *curPtr; }

  Token lexIdentifier(const char *tokStart);
  Token lexNumber(const char *tokStart);
  void skipLineComment();

  const SourceLocator &locator;
  const char *bufferEnd;
  const char *curPtr;
};

} // namespace sparsetx::dsl

#endif // SPARSETX_DSL_LEXER_H
