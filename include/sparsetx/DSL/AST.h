//===- AST.h - abstract syntax of the .sp language --------------*- C++ -*-===//
//
// The parser builds these nodes; sema resolves names, checks types and fills
// in `type` and the resolution fields; MLIRGen walks the checked tree. Every
// node keeps its source range (SMRange into the llvm::SourceMgr buffer) so that
// each diagnostic can point at the exact text with a caret.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_DSL_AST_H
#define SPARSETX_DSL_AST_H

#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/SMLoc.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace llvm {
class SourceMgr;
} // namespace llvm

namespace sparsetx::dsl {

/// The two types of the language. `Error` marks an expression sema already
/// reported, so that one mistake produces one diagnostic.
enum class Type { Unknown, Int, Bool, Error };
llvm::StringRef toString(Type type);

struct LetDecl;

//===----------------------------------------------------------------------===//
// Expressions
//===----------------------------------------------------------------------===//

class Expr {
public:
  enum class Kind { IntLit, BoolLit, Name, Unary, Binary, Call };

  virtual ~Expr() = default;
  Kind getKind() const { return kind; }
  llvm::SMRange getRange() const { return range; }
  llvm::SMLoc getLoc() const { return range.Start; }

  /// Set by sema.
  Type type = Type::Unknown;

protected:
  Expr(Kind kind, llvm::SMRange range) : kind(kind), range(range) {}

private:
  Kind kind;
  llvm::SMRange range;
};
using ExprPtr = std::unique_ptr<Expr>;

class IntLitExpr : public Expr {
public:
  IntLitExpr(llvm::SMRange range, int64_t value)
      : Expr(Kind::IntLit, range), value(value) {}
  static bool classof(const Expr *e) { return e->getKind() == Kind::IntLit; }
  int64_t value;
};

class BoolLitExpr : public Expr {
public:
  BoolLitExpr(llvm::SMRange range, bool value)
      : Expr(Kind::BoolLit, range), value(value) {}
  static bool classof(const Expr *e) { return e->getKind() == Kind::BoolLit; }
  bool value;
};

/// A use of a name. Sema resolves it to one of the builtins (i, j, n, h), a
/// parameter or a let binding.
class NameExpr : public Expr {
public:
  enum class Ref { Unresolved, Query, Key, SeqLen, Head, Param, Let };

  NameExpr(llvm::SMRange range, llvm::StringRef name)
      : Expr(Kind::Name, range), name(name) {}
  static bool classof(const Expr *e) { return e->getKind() == Kind::Name; }

  llvm::StringRef name;
  Ref ref = Ref::Unresolved;
  /// Index into PatternDecl::params when ref == Param.
  unsigned paramIndex = 0;
  /// The binding when ref == Let.
  const LetDecl *let = nullptr;
};

enum class UnaryOp { Neg, Not };
llvm::StringRef toString(UnaryOp op);

class UnaryExpr : public Expr {
public:
  UnaryExpr(llvm::SMRange range, UnaryOp op, llvm::SMRange opRange,
            ExprPtr operand)
      : Expr(Kind::Unary, range), op(op), opRange(opRange),
        operand(std::move(operand)) {}
  static bool classof(const Expr *e) { return e->getKind() == Kind::Unary; }

  UnaryOp op;
  llvm::SMRange opRange;
  ExprPtr operand;
};

enum class BinaryOp {
  Add, Sub, Mul, Div, Mod,
  Eq, Ne, Lt, Le, Gt, Ge,
  And, Or
};
llvm::StringRef toString(BinaryOp op);

class BinaryExpr : public Expr {
public:
  BinaryExpr(llvm::SMRange range, BinaryOp op, llvm::SMRange opRange,
             ExprPtr lhs, ExprPtr rhs)
      : Expr(Kind::Binary, range), op(op), opRange(opRange),
        lhs(std::move(lhs)), rhs(std::move(rhs)) {}
  static bool classof(const Expr *e) { return e->getKind() == Kind::Binary; }

  BinaryOp op;
  llvm::SMRange opRange;
  ExprPtr lhs, rhs;
};

enum class Builtin { Min, Max, Abs };
llvm::StringRef toString(Builtin fn);

class CallExpr : public Expr {
public:
  CallExpr(llvm::SMRange range, Builtin callee, llvm::SMRange calleeRange,
           std::vector<ExprPtr> args)
      : Expr(Kind::Call, range), callee(callee), calleeRange(calleeRange),
        args(std::move(args)) {}
  static bool classof(const Expr *e) { return e->getKind() == Kind::Call; }

  Builtin callee;
  llvm::SMRange calleeRange;
  std::vector<ExprPtr> args;
};

//===----------------------------------------------------------------------===//
// Declarations
//===----------------------------------------------------------------------===//

struct ParamDecl {
  llvm::StringRef name;
  llvm::SMRange nameRange;
  /// The default from the source; sema replaces it by a -D override.
  int64_t value = 0;
  llvm::SMRange valueRange;
  bool overridden = false;
};

struct LetDecl {
  llvm::StringRef name;
  llvm::SMRange nameRange;
  ExprPtr init;
  /// Set by sema: number of uses, and whether the value depends on h.
  unsigned uses = 0;
  bool usesHead = false;
};

/// How a pattern composes its masks.
enum class MaskForm {
  None,    ///< not given (an error sema reports)
  Heads,   ///< heads = EXPR;        one mask, every head the same
  PerHead, ///< heads[h] = EXPR;     one mask of (i, j, h)
  Layers   ///< layers = [E0, ...];  residual block r uses entry r % N
};

struct PatternDecl {
  llvm::StringRef name;
  llvm::SMRange nameRange;
  /// The `pattern` keyword through the closing brace.
  llvm::SMRange range;
  std::vector<ParamDecl> params;
  bool causal = false;
  llvm::SMRange causalRange;
  std::vector<std::unique_ptr<LetDecl>> lets;
  MaskForm form = MaskForm::None;
  /// The `heads` / `layers` keyword of the statement that set `form`.
  llvm::SMRange formRange;
  /// One expression for Heads and PerHead, one per layer for Layers.
  std::vector<ExprPtr> masks;

  /// Statements that may appear once but were repeated. The parser keeps
  /// them (it reports only syntax errors) so that sema can report every
  /// duplicate and still check the repeated masks; MLIRGen ignores them
  /// (sema fails when any is present).
  struct ExtraAttention {
    MaskForm form;
    llvm::SMRange formRange;
    std::vector<ExprPtr> masks;
  };
  /// The `causal` keyword of every `causal;` after the first.
  std::vector<llvm::SMRange> extraCausal;
  /// Every heads / heads[h] / layers statement after the first.
  std::vector<ExtraAttention> extraAttention;

  const ParamDecl *findParam(llvm::StringRef name) const;
};

struct Module {
  std::vector<std::unique_ptr<PatternDecl>> patterns;

  const PatternDecl *findPattern(llvm::StringRef name) const;
};

/// Prints the tree (for `sparsec --emit=ast`), with line:col of each node.
void dump(const Module &module, const llvm::SourceMgr &sourceMgr,
          llvm::raw_ostream &os);

} // namespace sparsetx::dsl

#endif // SPARSETX_DSL_AST_H
