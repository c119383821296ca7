//===- Parser.cpp - recursive-descent parser of .sp files -----------------===//
//
// One parseX per grammar rule, with the rule in a comment above it. The first
// syntax error stops the whole parse: the language is small enough that
// recovery would mostly produce follow-on noise. Duplicated statements are
// not syntax errors; the parser records them for sema (PatternDecl::extra*).
//
// The grammar (each rule is repeated above its parse function):
//
//   file    ::= pattern+
//   pattern ::= 'pattern' IDENT '(' (param (',' param)*)? ')' '{' stmt* '}'
//   param   ::= IDENT '=' '-'? INT
//   stmt    ::= 'causal' ';'
//             | 'let' IDENT '=' expr ';'
//             | 'heads' '=' expr ';'
//             | 'heads' '[' 'h' ']' '=' expr ';'
//             | 'layers' '=' '[' expr (',' expr)* ','? ']' ';'
//   expr    ::= or
//   or      ::= and ('||' and)*
//   and     ::= cmp ('&&' cmp)*
//   cmp     ::= add (('==' | '!=' | '<' | '<=' | '>' | '>=') add)?
//   add     ::= mul (('+' | '-') mul)*
//   mul     ::= unary (('*' | '/' | '%') unary)*
//   unary   ::= ('-' | '!') unary | primary
//   primary ::= INT | 'true' | 'false' | IDENT | '(' expr ')'
//             | ('min' | 'max') '(' expr ',' expr ')' | 'abs' '(' expr ')'
//
// A parameter default is at least -INT64_MAX: INT64_MIN would need the literal
// 9223372036854775808, which the lexer rejects.
//
// Expressions are bounded so that a hostile input cannot overflow the stack:
// parentheses, unary operators and call arguments nest at most kMaxNesting
// levels (the parser's own recursion), and no expression tree is deeper than
// kMaxDepth operations (the recursion of sema, the dump and MLIRGen; a long
// chain a+b+c+... is a deep left-leaning tree).
//
//===----------------------------------------------------------------------===//

#include "sparsetx/DSL/Parser.h"
#include "sparsetx/DSL/Lexer.h"

#include <algorithm>

using namespace sparsetx::dsl;
using llvm::SMLoc;
using llvm::SMRange;
using llvm::Twine;
using mlir::failure;
using mlir::LogicalResult;
using mlir::success;

namespace {

/// Deepest nesting of parentheses, unary operators and call arguments.
constexpr unsigned kMaxNesting = 256;
/// Deepest expression tree (operations from the root to a leaf).
constexpr unsigned kMaxDepth = 1000;

class Parser {
public:
  Parser(const SourceLocator &locator, unsigned bufferId)
      : locator(locator), lexer(locator, bufferId), curToken(lexer.lexToken()) {
    prevEnd = curToken.getLoc();
  }

  std::unique_ptr<Module> parseFile();

private:
  //===--------------------------------------------------------------------===//
  // Helpers
  //===--------------------------------------------------------------------===//

  void consumeToken() {
    prevEnd = curToken.getEndLoc();
    curToken = lexer.lexToken();
  }

  /// Reports a syntax error, unless the current token is an `error` token:
  /// the lexer already reported that one, and it is the real cause.
  LogicalResult emitError(SMLoc loc, const Twine &msg) {
    if (curToken.isNot(Token::error))
      locator.emitError(loc) << msg.str();
    return failure();
  }
  LogicalResult emitError(const Twine &msg) {
    return emitError(curToken.getLoc(), msg);
  }

  /// Consumes a token of `kind` or reports `msg` at the current token.
  LogicalResult parseToken(Token::Kind kind, const Twine &msg) {
    if (curToken.isNot(kind))
      return emitError(msg);
    consumeToken();
    return success();
  }

  /// "expected ';' after the let statement". Like clang, the caret goes
  /// right after the statement (the next token is often on the next line),
  /// except when the token in the way is a single '=' (a likely '=='): then
  /// it points at the '='.
  LogicalResult parseSemi(llvm::StringRef after) {
    if (curToken.is(Token::semi)) {
      consumeToken();
      return success();
    }
    if (curToken.is(Token::equal))
      return emitError(Twine("expected ';' after ") + after +
                       "; did you mean '=='?");
    return emitError(prevEnd, Twine("expected ';' after ") + after);
  }

  /// Parses a name (identifier); `what` is e.g. "a name after 'let'".
  LogicalResult parseName(llvm::StringRef &name, SMRange &range,
                          const Twine &what) {
    if (curToken.isKeyword())
      return emitError("expected " + what + ", but '" + curToken.getSpelling() +
                       "' is a keyword");
    if (curToken.isNot(Token::identifier))
      return emitError("expected " + what);
    name = curToken.getSpelling();
    range = curToken.getRange();
    consumeToken();
    return success();
  }

  SMRange rangeFrom(SMLoc start) const { return SMRange(start, prevEnd); }

  //===--------------------------------------------------------------------===//
  // Declarations and statements
  //===--------------------------------------------------------------------===//

  std::unique_ptr<PatternDecl> parsePattern();
  LogicalResult parseParam(PatternDecl &pattern);
  LogicalResult parseStatement(PatternDecl &pattern);
  LogicalResult parseCausal(PatternDecl &pattern);
  LogicalResult parseLet(PatternDecl &pattern);
  LogicalResult parseHeads(PatternDecl &pattern);
  LogicalResult parseLayers(PatternDecl &pattern);
  void setAttention(PatternDecl &pattern, MaskForm form, SMRange formRange,
                    std::vector<ExprPtr> masks);

  //===--------------------------------------------------------------------===//
  // Expressions
  //===--------------------------------------------------------------------===//

  ExprPtr parseExpr();
  ExprPtr parseOr();
  ExprPtr parseAnd();
  ExprPtr parseCmp();
  ExprPtr parseAdd();
  ExprPtr parseMul();
  ExprPtr parseUnary();
  ExprPtr parsePrimary();
  ExprPtr parseCall();

  /// Records the depth of a newly built node (1 + its deepest operand) in
  /// lastDepth; null (after an error at `loc`) when it exceeds kMaxDepth.
  ExprPtr withDepth(ExprPtr expr, unsigned depth, SMLoc loc) {
    if (depth > kMaxDepth) {
      (void)emitError(loc, "expression is too deep (more than " +
                               Twine(kMaxDepth) +
                               " nested operations); split it with 'let'");
      return nullptr;
    }
    lastDepth = depth;
    return expr;
  }

  /// Parses the right operand of a left-associative binary operator of
  /// `lhs` (whose depth is lastDepth) and builds the node.
  template <typename ParseOperand>
  ExprPtr parseBinaryRhs(ExprPtr lhs, ParseOperand parseOperand);

  const SourceLocator &locator;
  Lexer lexer;
  Token curToken;
  /// End of the last consumed token: the end of every node's range.
  SMLoc prevEnd;
  unsigned nesting = 0;
  /// Depth of the tree of the node the last parseX returned.
  unsigned lastDepth = 0;
};

/// Increments the nesting depth for the lifetime of a recursive parse step.
struct NestingScope {
  explicit NestingScope(unsigned &depth) : depth(depth) { ++depth; }
  ~NestingScope() { --depth; }
  unsigned &depth;
};

} // namespace

//===----------------------------------------------------------------------===//
// Declarations and statements
//===----------------------------------------------------------------------===//

// file ::= pattern+
std::unique_ptr<Module> Parser::parseFile() {
  auto module = std::make_unique<Module>();
  if (curToken.is(Token::eof)) {
    (void)emitError("expected 'pattern': no pattern in file");
    return nullptr;
  }
  while (curToken.isNot(Token::eof)) {
    if (curToken.isNot(Token::kw_pattern)) {
      (void)emitError("expected 'pattern'");
      return nullptr;
    }
    auto pattern = parsePattern();
    if (!pattern)
      return nullptr;
    module->patterns.push_back(std::move(pattern));
  }
  return module;
}

// pattern ::= 'pattern' IDENT '(' (param (',' param)*)? ')' '{' stmt* '}'
std::unique_ptr<PatternDecl> Parser::parsePattern() {
  auto pattern = std::make_unique<PatternDecl>();
  SMLoc start = curToken.getLoc();
  consumeToken(); // 'pattern'

  if (failed(parseName(pattern->name, pattern->nameRange,
                       "a pattern name after 'pattern'")))
    return nullptr;
  if (failed(parseToken(Token::l_paren, "expected '(' after the pattern name")))
    return nullptr;
  if (curToken.isNot(Token::r_paren)) {
    while (true) {
      if (failed(parseParam(*pattern)))
        return nullptr;
      if (curToken.is(Token::comma)) {
        consumeToken();
        continue;
      }
      if (curToken.is(Token::r_paren))
        break;
      (void)emitError("expected ',' or ')' after a parameter");
      return nullptr;
    }
  }
  consumeToken(); // ')'

  if (failed(parseToken(Token::l_brace,
                        "expected '{' to begin the body of pattern '" +
                            pattern->name + "'")))
    return nullptr;
  while (curToken.isNot(Token::r_brace)) {
    if (failed(parseStatement(*pattern)))
      return nullptr;
  }
  consumeToken(); // '}'
  pattern->range = rangeFrom(start);
  return pattern;
}

// param ::= IDENT '=' '-'? INT
LogicalResult Parser::parseParam(PatternDecl &pattern) {
  ParamDecl param;
  if (failed(parseName(param.name, param.nameRange, "a parameter name")))
    return failure();
  if (failed(parseToken(Token::equal, "expected '=' and a default value "
                                      "after parameter '" +
                                          param.name + "'")))
    return failure();
  SMLoc valueStart = curToken.getLoc();
  bool negative = false;
  if (curToken.is(Token::minus)) {
    negative = true;
    consumeToken();
  }
  if (curToken.isNot(Token::integer))
    return emitError("expected an integer default value for parameter '" +
                     param.name + "'");
  // The lexer bounds literals by INT64_MAX, so negation cannot overflow
  // (INT64_MIN itself is not expressible as a default).
  param.value = curToken.getIntegerValue();
  if (negative)
    param.value = -param.value;
  consumeToken();
  param.valueRange = rangeFrom(valueStart);
  pattern.params.push_back(param);
  return success();
}

// stmt ::= 'causal' ';'
//        | 'let' IDENT '=' expr ';'
//        | 'heads' '=' expr ';'
//        | 'heads' '[' 'h' ']' '=' expr ';'
//        | 'layers' '=' '[' expr (',' expr)* ','? ']' ';'
LogicalResult Parser::parseStatement(PatternDecl &pattern) {
  switch (curToken.getKind()) {
  case Token::kw_causal:
    return parseCausal(pattern);
  case Token::kw_let:
    return parseLet(pattern);
  case Token::kw_heads:
    return parseHeads(pattern);
  case Token::kw_layers:
    return parseLayers(pattern);
  case Token::eof:
    return emitError("expected '}' at the end of pattern '" + pattern.name +
                     "'");
  default:
    return emitError("expected a statement ('causal', 'let', 'heads' or "
                     "'layers') or '}'");
  }
}

// stmt ::= 'causal' ';'
LogicalResult Parser::parseCausal(PatternDecl &pattern) {
  SMRange range = curToken.getRange();
  consumeToken(); // 'causal'
  if (failed(parseSemi("'causal'")))
    return failure();
  if (pattern.causal) {
    pattern.extraCausal.push_back(range);
  } else {
    pattern.causal = true;
    pattern.causalRange = range;
  }
  return success();
}

// stmt ::= 'let' IDENT '=' expr ';'
LogicalResult Parser::parseLet(PatternDecl &pattern) {
  consumeToken(); // 'let'
  auto let = std::make_unique<LetDecl>();
  if (failed(parseName(let->name, let->nameRange, "a name after 'let'")))
    return failure();
  if (failed(parseToken(Token::equal,
                        "expected '=' after 'let " + let->name + "'")))
    return failure();
  let->init = parseExpr();
  if (!let->init)
    return failure();
  if (failed(parseSemi("the let statement")))
    return failure();
  pattern.lets.push_back(std::move(let));
  return success();
}

void Parser::setAttention(PatternDecl &pattern, MaskForm form,
                          SMRange formRange, std::vector<ExprPtr> masks) {
  if (pattern.form == MaskForm::None) {
    pattern.form = form;
    pattern.formRange = formRange;
    pattern.masks = std::move(masks);
    return;
  }
  pattern.extraAttention.push_back({form, formRange, std::move(masks)});
}

// stmt ::= 'heads' '=' expr ';'
//        | 'heads' '[' 'h' ']' '=' expr ';'
LogicalResult Parser::parseHeads(PatternDecl &pattern) {
  SMRange formRange = curToken.getRange();
  consumeToken(); // 'heads'
  MaskForm form = MaskForm::Heads;
  if (curToken.is(Token::l_square)) {
    consumeToken();
    if (curToken.isNot(Token::identifier) || curToken.getSpelling() != "h")
      return emitError("expected 'h' as the head index");
    consumeToken();
    if (failed(parseToken(Token::r_square,
                          "expected ']' after the head index 'h'")))
      return failure();
    if (failed(parseToken(Token::equal, "expected '=' after 'heads[h]'")))
      return failure();
    form = MaskForm::PerHead;
  } else if (failed(parseToken(Token::equal,
                               "expected '=' or '[h]' after 'heads'"))) {
    return failure();
  }
  ExprPtr mask = parseExpr();
  if (!mask)
    return failure();
  if (failed(parseSemi("the heads statement")))
    return failure();
  std::vector<ExprPtr> masks;
  masks.push_back(std::move(mask));
  setAttention(pattern, form, formRange, std::move(masks));
  return success();
}

// stmt ::= 'layers' '=' '[' expr (',' expr)* ','? ']' ';'
LogicalResult Parser::parseLayers(PatternDecl &pattern) {
  SMRange formRange = curToken.getRange();
  consumeToken(); // 'layers'
  if (failed(parseToken(Token::equal, "expected '=' after 'layers'")))
    return failure();
  if (failed(parseToken(Token::l_square,
                        "expected '[' to begin the list of layer masks")))
    return failure();
  std::vector<ExprPtr> masks;
  while (true) {
    ExprPtr mask = parseExpr();
    if (!mask)
      return failure();
    masks.push_back(std::move(mask));
    if (curToken.is(Token::comma)) {
      consumeToken();
      if (curToken.is(Token::r_square))
        break; // trailing comma
      continue;
    }
    if (curToken.is(Token::r_square))
      break;
    return emitError("expected ',' or ']' in the list of layer masks");
  }
  consumeToken(); // ']'
  if (failed(parseSemi("the layers statement")))
    return failure();
  setAttention(pattern, MaskForm::Layers, formRange, std::move(masks));
  return success();
}

//===----------------------------------------------------------------------===//
// Expressions
//===----------------------------------------------------------------------===//

// expr ::= or
ExprPtr Parser::parseExpr() {
  if (nesting >= kMaxNesting) {
    (void)emitError("expression is nested too deeply (more than " +
                    Twine(kMaxNesting) + " levels)");
    return nullptr;
  }
  NestingScope scope(nesting);
  return parseOr();
}

/// The binary operator of a token, for the token kinds of one precedence
/// level.
static std::optional<BinaryOp> getBinaryOp(Token::Kind kind) {
  switch (kind) {
  case Token::pipe_pipe:
    return BinaryOp::Or;
  case Token::amp_amp:
    return BinaryOp::And;
  case Token::equal_equal:
    return BinaryOp::Eq;
  case Token::bang_equal:
    return BinaryOp::Ne;
  case Token::less:
    return BinaryOp::Lt;
  case Token::less_equal:
    return BinaryOp::Le;
  case Token::greater:
    return BinaryOp::Gt;
  case Token::greater_equal:
    return BinaryOp::Ge;
  case Token::plus:
    return BinaryOp::Add;
  case Token::minus:
    return BinaryOp::Sub;
  case Token::star:
    return BinaryOp::Mul;
  case Token::slash:
    return BinaryOp::Div;
  case Token::percent:
    return BinaryOp::Mod;
  default:
    return std::nullopt;
  }
}

static bool isComparison(Token::Kind kind) {
  switch (kind) {
  case Token::equal_equal:
  case Token::bang_equal:
  case Token::less:
  case Token::less_equal:
  case Token::greater:
  case Token::greater_equal:
    return true;
  default:
    return false;
  }
}

template <typename ParseOperand>
ExprPtr Parser::parseBinaryRhs(ExprPtr lhs, ParseOperand parseOperand) {
  BinaryOp op = *getBinaryOp(curToken.getKind());
  SMRange opRange = curToken.getRange();
  unsigned lhsDepth = lastDepth;
  consumeToken();
  ExprPtr rhs = (this->*parseOperand)();
  if (!rhs)
    return nullptr;
  unsigned depth = 1 + std::max(lhsDepth, lastDepth);
  SMRange range(lhs->getRange().Start, rhs->getRange().End);
  return withDepth(std::make_unique<BinaryExpr>(range, op, opRange,
                                                std::move(lhs), std::move(rhs)),
                   depth, opRange.Start);
}

// or ::= and ('||' and)*
ExprPtr Parser::parseOr() {
  ExprPtr lhs = parseAnd();
  while (lhs && curToken.is(Token::pipe_pipe))
    lhs = parseBinaryRhs(std::move(lhs), &Parser::parseAnd);
  return lhs;
}

// and ::= cmp ('&&' cmp)*
ExprPtr Parser::parseAnd() {
  ExprPtr lhs = parseCmp();
  while (lhs && curToken.is(Token::amp_amp))
    lhs = parseBinaryRhs(std::move(lhs), &Parser::parseCmp);
  return lhs;
}

// cmp ::= add (('==' | '!=' | '<' | '<=' | '>' | '>=') add)?
//
// Comparisons do not associate: `a < b < c` would compare a boolean with an
// integer, so a second comparison operator is a syntax error with a hint.
ExprPtr Parser::parseCmp() {
  ExprPtr lhs = parseAdd();
  if (!lhs || !isComparison(curToken.getKind()))
    return lhs;
  ExprPtr cmp = parseBinaryRhs(std::move(lhs), &Parser::parseAdd);
  if (cmp && isComparison(curToken.getKind())) {
    (void)emitError("comparisons cannot be chained; combine them with '&&'");
    return nullptr;
  }
  return cmp;
}

// add ::= mul (('+' | '-') mul)*
ExprPtr Parser::parseAdd() {
  ExprPtr lhs = parseMul();
  while (lhs && curToken.isAny(Token::plus, Token::minus))
    lhs = parseBinaryRhs(std::move(lhs), &Parser::parseMul);
  return lhs;
}

// mul ::= unary (('*' | '/' | '%') unary)*
ExprPtr Parser::parseMul() {
  ExprPtr lhs = parseUnary();
  while (lhs && curToken.isAny(Token::star, Token::slash, Token::percent))
    lhs = parseBinaryRhs(std::move(lhs), &Parser::parseUnary);
  return lhs;
}

// unary ::= ('-' | '!') unary | primary
ExprPtr Parser::parseUnary() {
  if (curToken.isNot(Token::minus) && curToken.isNot(Token::bang))
    return parsePrimary();
  UnaryOp op = curToken.is(Token::minus) ? UnaryOp::Neg : UnaryOp::Not;
  SMRange opRange = curToken.getRange();
  if (nesting >= kMaxNesting) {
    (void)emitError("expression is nested too deeply (more than " +
                    Twine(kMaxNesting) + " levels)");
    return nullptr;
  }
  NestingScope scope(nesting);
  consumeToken();
  ExprPtr operand = parseUnary();
  if (!operand)
    return nullptr;
  SMRange range(opRange.Start, operand->getRange().End);
  return withDepth(
      std::make_unique<UnaryExpr>(range, op, opRange, std::move(operand)),
      1 + lastDepth, opRange.Start);
}

// primary ::= INT | 'true' | 'false' | IDENT | '(' expr ')'
//           | ('min' | 'max') '(' expr ',' expr ')' | 'abs' '(' expr ')'
ExprPtr Parser::parsePrimary() {
  SMRange tokRange = curToken.getRange();
  switch (curToken.getKind()) {
  case Token::integer: {
    int64_t value = curToken.getIntegerValue();
    consumeToken();
    lastDepth = 1;
    return std::make_unique<IntLitExpr>(tokRange, value);
  }
  case Token::kw_true:
  case Token::kw_false: {
    bool value = curToken.is(Token::kw_true);
    consumeToken();
    lastDepth = 1;
    return std::make_unique<BoolLitExpr>(tokRange, value);
  }
  case Token::identifier: {
    llvm::StringRef name = curToken.getSpelling();
    consumeToken();
    lastDepth = 1;
    return std::make_unique<NameExpr>(tokRange, name);
  }
  case Token::l_paren: {
    consumeToken();
    ExprPtr inner = parseExpr();
    if (!inner)
      return nullptr;
    if (curToken.isNot(Token::r_paren)) {
      if (curToken.isNot(Token::error)) {
        auto diag = locator.emitError(curToken.getLoc()) << "expected ')'";
        diag.attachNote(locator.get(tokRange.Start)) << "to match this '('";
      }
      return nullptr;
    }
    consumeToken();
    // Parentheses do not make a node; the inner range keeps the caret on the
    // expression itself.
    return inner;
  }
  case Token::kw_min:
  case Token::kw_max:
  case Token::kw_abs:
    return parseCall();
  default:
    (void)emitError("expected expression");
    return nullptr;
  }
}

// primary ::= ('min' | 'max') '(' expr ',' expr ')' | 'abs' '(' expr ')'
ExprPtr Parser::parseCall() {
  Builtin callee = curToken.is(Token::kw_min)   ? Builtin::Min
                   : curToken.is(Token::kw_max) ? Builtin::Max
                                                : Builtin::Abs;
  llvm::StringRef name = curToken.getSpelling();
  SMRange calleeRange = curToken.getRange();
  unsigned arity = callee == Builtin::Abs ? 1 : 2;
  consumeToken();
  if (failed(parseToken(Token::l_paren, "expected '(' after '" + name + "'")))
    return nullptr;

  std::vector<ExprPtr> args;
  unsigned argDepth = 0;
  while (true) {
    ExprPtr arg = parseExpr();
    if (!arg)
      return nullptr;
    argDepth = std::max(argDepth, lastDepth);
    args.push_back(std::move(arg));
    if (args.size() == arity)
      break;
    if (curToken.is(Token::r_paren)) {
      (void)emitError("'" + name + "' takes 2 arguments, but 1 was given");
      return nullptr;
    }
    if (failed(parseToken(Token::comma, "expected ',' between the arguments "
                                        "of '" +
                                            name + "'")))
      return nullptr;
  }
  if (curToken.is(Token::comma)) {
    (void)emitError("'" + name + "' takes " + Twine(arity) + " argument" +
                    (arity == 1 ? "" : "s") + ", but more were given");
    return nullptr;
  }
  if (failed(parseToken(Token::r_paren,
                        "expected ')' after the arguments of '" + name + "'")))
    return nullptr;
  SMRange range(calleeRange.Start, prevEnd);
  return withDepth(
      std::make_unique<CallExpr>(range, callee, calleeRange, std::move(args)),
      1 + argDepth, calleeRange.Start);
}

std::unique_ptr<Module> sparsetx::dsl::parseModule(const SourceLocator &locator,
                                                   unsigned bufferId) {
  return Parser(locator, bufferId).parseFile();
}
