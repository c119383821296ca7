//===- Lexer.cpp - lexer of the .sp language ------------------------------===//
//
// A hand-written lexer over the SourceMgr buffer. The buffer may contain any
// bytes (the fuzzer feeds it garbage), so every read goes through peek(),
// which never looks past the end, and a NUL byte is an ordinary bad character.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/DSL/Lexer.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/Format.h"

#include <limits>
#include <string>

using namespace sparsetx::dsl;
using llvm::StringRef;

bool Token::isKeyword() const {
  switch (kind) {
#define TOK_KEYWORD(SPELLING)                                                  \
  case kw_##SPELLING:                                                          \
    return true;
#include "sparsetx/DSL/Token.def"
  default:
    return false;
  }
}

int64_t Token::getIntegerValue() const {
  uint64_t value = 0;
  // The lexer only forms `integer` tokens whose value fits.
  if (spelling.getAsInteger(10, value) ||
      value > uint64_t(std::numeric_limits<int64_t>::max()))
    return 0;
  return int64_t(value);
}

StringRef Token::getKindName(Kind kind) {
  switch (kind) {
  case eof:
    return "end of file";
  case error:
    return "error";
  case identifier:
    return "identifier";
  case integer:
    return "integer";
#define TOK_PUNCTUATION(NAME, SPELLING)                                        \
  case NAME:                                                                   \
    return "'" SPELLING "'";
#define TOK_KEYWORD(SPELLING)                                                  \
  case kw_##SPELLING:                                                          \
    return "'" #SPELLING "'";
#include "sparsetx/DSL/Token.def"
  }
  return "token";
}

StringRef Token::getFixedSpelling(Kind kind) {
  switch (kind) {
#define TOK_PUNCTUATION(NAME, SPELLING)                                        \
  case NAME:                                                                   \
    return SPELLING;
#define TOK_KEYWORD(SPELLING)                                                  \
  case kw_##SPELLING:                                                          \
    return #SPELLING;
#include "sparsetx/DSL/Token.def"
  default:
    return "";
  }
}

Lexer::Lexer(const SourceLocator &locator, unsigned bufferId)
    : locator(locator) {
  StringRef buffer =
      locator.getSourceMgr().getMemoryBuffer(bufferId)->getBuffer();
  curPtr = buffer.begin();
  bufferEnd = buffer.end();
}

Token Lexer::emitError(const char *tokStart, const llvm::Twine &msg) {
  locator.emitError(llvm::SMLoc::getFromPointer(tokStart)) << msg.str();
  return formToken(Token::error, tokStart);
}

void Lexer::skipLineComment() {
  while (curPtr != bufferEnd && *curPtr != '\n')
    ++curPtr;
}

Token Lexer::lexIdentifier(const char *tokStart) {
  while (curPtr != bufferEnd && (llvm::isAlnum(*curPtr) || *curPtr == '_'))
    ++curPtr;
  StringRef text(tokStart, curPtr - tokStart);
  Token::Kind kind = llvm::StringSwitch<Token::Kind>(text)
#define TOK_KEYWORD(SPELLING) .Case(#SPELLING, Token::kw_##SPELLING)
#include "sparsetx/DSL/Token.def"
                         .Default(Token::identifier);
  return formToken(kind, tokStart);
}

Token Lexer::lexNumber(const char *tokStart) {
  while (curPtr != bufferEnd && llvm::isDigit(*curPtr))
    ++curPtr;
  StringRef text(tokStart, curPtr - tokStart);
  uint64_t value = 0;
  // getAsInteger fails on uint64_t overflow; both cases are out of range.
  if (text.getAsInteger(10, value) ||
      value > uint64_t(std::numeric_limits<int64_t>::max()))
    return emitError(tokStart, "integer literal '" + text +
                                   "' is out of range for a 64-bit integer");
  return formToken(Token::integer, tokStart);
}

/// 'c' for a printable character, '\xNN' otherwise.
static std::string describeChar(char c) {
  std::string text = "'";
  if (llvm::isPrint(c)) {
    text += c;
  } else {
    text += "\\x";
    text += llvm::hexdigit((unsigned char)c >> 4);
    text += llvm::hexdigit((unsigned char)c & 0xF);
  }
  text += "'";
  return text;
}

Token Lexer::lexToken() {
  while (true) {
    const char *tokStart = curPtr;
    if (curPtr == bufferEnd)
      return formToken(Token::eof, tokStart);

    char c = *curPtr++;
    switch (c) {
    case ' ':
    case '\t':
    case '\n':
    case '\r':
    case '\v':
    case '\f':
      continue;
    case '(':
      return formToken(Token::l_paren, tokStart);
    case ')':
      return formToken(Token::r_paren, tokStart);
    case '{':
      return formToken(Token::l_brace, tokStart);
    case '}':
      return formToken(Token::r_brace, tokStart);
    case '[':
      return formToken(Token::l_square, tokStart);
    case ']':
      return formToken(Token::r_square, tokStart);
    case ',':
      return formToken(Token::comma, tokStart);
    case ';':
      return formToken(Token::semi, tokStart);
    case '+':
      return formToken(Token::plus, tokStart);
    case '-':
      return formToken(Token::minus, tokStart);
    case '*':
      return formToken(Token::star, tokStart);
    case '%':
      return formToken(Token::percent, tokStart);
    case '/':
      if (peek() == '/') {
        skipLineComment();
        continue;
      }
      return formToken(Token::slash, tokStart);
    case '=':
      if (peek() == '=') {
        ++curPtr;
        return formToken(Token::equal_equal, tokStart);
      }
      return formToken(Token::equal, tokStart);
    case '!':
      if (peek() == '=') {
        ++curPtr;
        return formToken(Token::bang_equal, tokStart);
      }
      return formToken(Token::bang, tokStart);
    case '<':
      if (peek() == '=') {
        ++curPtr;
        return formToken(Token::less_equal, tokStart);
      }
      return formToken(Token::less, tokStart);
    case '>':
      if (peek() == '=') {
        ++curPtr;
        return formToken(Token::greater_equal, tokStart);
      }
      return formToken(Token::greater, tokStart);
    case '&':
      if (peek() == '&') {
        ++curPtr;
        return formToken(Token::amp_amp, tokStart);
      }
      return emitError(tokStart,
                       "unexpected character '&'; did you mean '&&'?");
    case '|':
      if (peek() == '|') {
        ++curPtr;
        return formToken(Token::pipe_pipe, tokStart);
      }
      return emitError(tokStart,
                       "unexpected character '|'; did you mean '||'?");
    default:
      if (llvm::isAlpha(c) || c == '_')
        return lexIdentifier(tokStart);
      if (llvm::isDigit(c))
        return lexNumber(tokStart);
      return emitError(tokStart, "unexpected character " + describeChar(c));
    }
  }
}
