//===- Sema.cpp - semantic checks of .sp patterns -------------------------===//
//
// Resolves names, checks int/bool types, applies -D overrides and proves that
// every divisor is a positive compile-time constant. Every error is reported
// (not only the first), and one mistake gives one diagnostic: an expression
// already reported has type Error, which silences the checks above it, and a
// redefined let is kept out of name resolution.
//
// Alongside the type, each integer expression gets a ConstInfo: its value
// after parameter binding when it is a compile-time constant, or the first
// builtin (i, j, h, n) it depends on. Divisor diagnostics quote that builtin
// or the parameter values that made the divisor non-positive. Constants fold
// with the language's floor division / modulo (sparsetx/Support/IntMath.h)
// and signed overflow in a constant is an error, since every later stage
// (folders, evaluator, kernels) would otherwise have to agree on a wrap.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/DSL/Sema.h"
#include "sparsetx/Support/IntMath.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/Casting.h"
#include "llvm/Support/Compiler.h"
#include "llvm/Support/MathExtras.h"

#include <limits>
#include <string>

using namespace sparsetx::dsl;
using llvm::cast;
using llvm::SMLoc;
using llvm::StringRef;
using llvm::Twine;

namespace {

/// A builtin a non-constant integer depends on.
enum class Dep { Query, Key, Head, SeqLen };

/// What sema knows of an integer expression's value after parameter binding.
struct ConstInfo {
  enum class Kind {
    Const,   ///< value is known
    Dynamic, ///< depends on `dep` (i, j, h, or n without --seq-len)
    Invalid  ///< not an integer, or an error was already reported
  };
  Kind kind = Kind::Invalid;
  int64_t value = 0;
  /// Const: the parameters (indices, first use first) and whether n went into
  /// the value, to explain a bad divisor.
  llvm::SmallVector<unsigned, 2> params;
  bool usesSeqLen = false;
  /// Dynamic: the builtin, and the let it came through (if any).
  Dep dep = Dep::Query;
  StringRef viaLet;

  bool isConst() const { return kind == Kind::Const; }

  static ConstInfo constant(int64_t value) {
    ConstInfo info;
    info.kind = Kind::Const;
    info.value = value;
    return info;
  }
  static ConstInfo dynamic(Dep dep) {
    ConstInfo info;
    info.kind = Kind::Dynamic;
    info.dep = dep;
    return info;
  }
  /// A constant computed from `a` (and `b`), keeping their provenance.
  static ConstInfo derived(int64_t value, const ConstInfo &a,
                           const ConstInfo *b = nullptr) {
    ConstInfo info = constant(value);
    info.params = a.params;
    info.usesSeqLen = a.usesSeqLen;
    if (b) {
      for (unsigned p : b->params)
        if (!llvm::is_contained(info.params, p))
          info.params.push_back(p);
      info.usesSeqLen |= b->usesSeqLen;
    }
    return info;
  }
  /// The result of an operation of `a` and `b` when not both are constant.
  static ConstInfo nonConst(const ConstInfo &a, const ConstInfo &b) {
    if (a.kind == Kind::Invalid || b.kind == Kind::Invalid)
      return ConstInfo();
    return a.kind == Kind::Dynamic ? a : b;
  }
};

StringRef describeBuiltin(StringRef name) {
  if (name == "i")
    return "the query position";
  if (name == "j")
    return "the key position";
  if (name == "n")
    return "the sequence length";
  if (name == "h")
    return "the head index";
  return "";
}

bool isBuiltinName(StringRef name) { return !describeBuiltin(name).empty(); }

StringRef depName(Dep dep) {
  switch (dep) {
  case Dep::Query:
    return "i";
  case Dep::Key:
    return "j";
  case Dep::Head:
    return "h";
  case Dep::SeqLen:
    return "n";
  }
  return "";
}

/// "boolean" / "an integer", for "but the left operand is ...".
StringRef describeType(Type type) {
  return type == Type::Bool ? "boolean" : "an integer";
}

bool isArithmetic(BinaryOp op) {
  return op == BinaryOp::Add || op == BinaryOp::Sub || op == BinaryOp::Mul ||
         op == BinaryOp::Div || op == BinaryOp::Mod;
}
bool isLogical(BinaryOp op) {
  return op == BinaryOp::And || op == BinaryOp::Or;
}

//===----------------------------------------------------------------------===//
// Module-level state
//===----------------------------------------------------------------------===//

class Sema {
public:
  Sema(Module &module, const SourceLocator &locator, const SemaOptions &options)
      : module(module), locator(locator), options(options) {}

  mlir::LogicalResult check();

  mlir::InFlightDiagnostic error(SMLoc loc) {
    hadError = true;
    return locator.emitError(loc);
  }
  mlir::InFlightDiagnostic warning(SMLoc loc) {
    return locator.emitWarning(loc);
  }
  mlir::Location getLoc(SMLoc loc) const { return locator.get(loc); }
  const SemaOptions &getOptions() const { return options; }

private:
  void applyOverrides();
  void checkPatternNames();

  Module &module;
  const SourceLocator &locator;
  const SemaOptions &options;
  bool hadError = false;
};

//===----------------------------------------------------------------------===//
// One pattern
//===----------------------------------------------------------------------===//

class PatternChecker {
public:
  PatternChecker(PatternDecl &pattern, Sema &sema)
      : pattern(pattern), sema(sema) {}

  void check();

private:
  struct LetState {
    LetDecl *decl = nullptr;
    /// A redefinition (of a builtin, a parameter or an earlier let): reported,
    /// and never the target of a name.
    bool bad = false;
    Type type = Type::Unknown;
    ConstInfo info;
  };

  void checkParams();
  void checkStatements();
  void declareLets();
  void checkMask(Expr &mask);

  // checkExpr and checkBinary recurse once per tree level; everything that
  // builds a diagnostic stays out of line so that their frames stay small
  // (expressions may be kMaxDepth = 1000 levels deep).
  Type checkExpr(Expr &expr, ConstInfo &info);
  Type checkBinary(BinaryExpr &expr, ConstInfo &info);
  LLVM_ATTRIBUTE_NOINLINE Type checkName(NameExpr &expr, ConstInfo &info);
  LLVM_ATTRIBUTE_NOINLINE Type checkUnary(UnaryExpr &expr, ConstInfo &info);
  LLVM_ATTRIBUTE_NOINLINE Type checkCall(CallExpr &expr, ConstInfo &info);
  /// Types of the operands of a binary operator; false after an error.
  LLVM_ATTRIBUTE_NOINLINE bool checkOperandTypes(BinaryExpr &expr, Type lhs,
                                                 Type rhs);
  /// Folds an arithmetic operator of two constants (or reports overflow).
  LLVM_ATTRIBUTE_NOINLINE void foldArithmetic(BinaryExpr &expr,
                                              const ConstInfo &lhs,
                                              const ConstInfo &rhs,
                                              ConstInfo &info);
  /// Reports a divisor that is not a positive constant; true when it is one.
  LLVM_ATTRIBUTE_NOINLINE bool checkDivisor(BinaryExpr &expr,
                                            const ConstInfo &divisor);
  LLVM_ATTRIBUTE_NOINLINE void reportOverflow(SMLoc loc) {
    sema.error(loc) << "integer overflow in a constant expression";
  }

  LetState *findLet(StringRef name);
  std::string suggestName(StringRef name, SMLoc use);
  std::string describeParams(const ConstInfo &info);

  PatternDecl &pattern;
  Sema &sema;
  std::vector<LetState> lets;
  /// Whether `h` names the head index (some `heads[h] = ...` statement).
  bool headDefined = false;
  /// The let whose initializer is being checked (for LetDecl::usesHead).
  LetState *currentLet = nullptr;
};

} // namespace

void PatternChecker::check() {
  headDefined = pattern.form == MaskForm::PerHead ||
                llvm::any_of(pattern.extraAttention, [](const auto &stmt) {
                  return stmt.form == MaskForm::PerHead;
                });
  checkParams();
  checkStatements();
  declareLets();

  for (LetState &let : lets) {
    currentLet = &let;
    let.type = checkExpr(*let.decl->init, let.info);
    currentLet = nullptr;
  }
  for (ExprPtr &mask : pattern.masks)
    checkMask(*mask);
  for (auto &stmt : pattern.extraAttention)
    for (ExprPtr &mask : stmt.masks)
      checkMask(*mask);

  for (LetState &let : lets)
    if (!let.bad && let.decl->uses == 0)
      sema.warning(let.decl->nameRange.Start)
          << "'" << let.decl->name << "' is never used";
}

void PatternChecker::checkParams() {
  llvm::StringMap<const ParamDecl *> seen;
  for (const ParamDecl &param : pattern.params) {
    if (isBuiltinName(param.name)) {
      sema.error(param.nameRange.Start)
          << "parameter '" << param.name << "' redefines the builtin '"
          << param.name << "' (" << describeBuiltin(param.name) << ")";
      continue;
    }
    auto [it, inserted] = seen.try_emplace(param.name, &param);
    if (!inserted) {
      auto diag = sema.error(param.nameRange.Start)
                  << "duplicate parameter '" << param.name << "'";
      diag.attachNote(sema.getLoc(it->second->nameRange.Start))
          << "previously defined here";
    }
  }
}

void PatternChecker::checkStatements() {
  for (llvm::SMRange range : pattern.extraCausal) {
    auto diag = sema.error(range.Start) << "duplicate 'causal'";
    diag.attachNote(sema.getLoc(pattern.causalRange.Start))
        << "previously given here";
  }
  for (const auto &stmt : pattern.extraAttention) {
    auto diag = sema.error(stmt.formRange.Start)
                << "pattern '" << pattern.name
                << "' already defines its attention; a pattern has exactly "
                   "one 'heads', 'heads[h]' or 'layers' statement";
    diag.attachNote(sema.getLoc(pattern.formRange.Start))
        << "attention defined here";
  }
  if (pattern.form == MaskForm::None)
    sema.error(pattern.nameRange.Start)
        << "pattern '" << pattern.name
        << "' defines no attention: add 'heads = ...;', 'heads[h] = ...;' or "
           "'layers = [...];'";
}

void PatternChecker::declareLets() {
  llvm::StringMap<const LetDecl *> seen;
  for (auto &decl : pattern.lets) {
    LetState state;
    state.decl = decl.get();
    StringRef name = decl->name;
    SMLoc loc = decl->nameRange.Start;
    if (isBuiltinName(name)) {
      sema.error(loc) << "let '" << name << "' redefines the builtin '" << name
                      << "' (" << describeBuiltin(name) << ")";
      state.bad = true;
    } else if (const ParamDecl *param = pattern.findParam(name)) {
      auto diag = sema.error(loc)
                  << "let '" << name << "' redefines the parameter '" << name
                  << "'";
      diag.attachNote(sema.getLoc(param->nameRange.Start))
          << "parameter '" << name << "' is defined here";
      state.bad = true;
    } else {
      auto [it, inserted] = seen.try_emplace(name, decl.get());
      if (!inserted) {
        auto diag = sema.error(loc) << "duplicate let '" << name << "'";
        diag.attachNote(sema.getLoc(it->second->nameRange.Start))
            << "previously defined here";
        state.bad = true;
      }
    }
    lets.push_back(std::move(state));
  }
}

void PatternChecker::checkMask(Expr &mask) {
  ConstInfo info;
  if (checkExpr(mask, info) == Type::Int)
    sema.error(mask.getLoc()) << "the attention mask must be a boolean "
                                 "expression, but this is an integer "
                                 "expression";
}

PatternChecker::LetState *PatternChecker::findLet(StringRef name) {
  for (LetState &let : lets)
    if (!let.bad && let.decl->name == name)
      return &let;
  return nullptr;
}

std::string PatternChecker::suggestName(StringRef name, SMLoc use) {
  llvm::SmallVector<StringRef, 16> candidates = {"i", "j", "n"};
  if (headDefined)
    candidates.push_back("h");
  for (const ParamDecl &param : pattern.params)
    candidates.push_back(param.name);
  for (const LetState &let : lets)
    if (!let.bad &&
        let.decl->init->getRange().End.getPointer() <= use.getPointer())
      candidates.push_back(let.decl->name);
  candidates.push_back("true");
  candidates.push_back("false");

  // At most 2 edits, and fewer edits than the name has characters (so that
  // an unknown `k` does not suggest `i`).
  unsigned bestDistance = std::min<unsigned>(3, name.size());
  StringRef best;
  for (StringRef candidate : candidates) {
    unsigned distance = name.edit_distance(candidate, /*AllowReplacements=*/
                                           true, /*MaxEditDistance=*/2);
    if (distance < bestDistance) {
      bestDistance = distance;
      best = candidate;
    }
  }
  if (best.empty())
    return "";
  // The misspelled use was most likely meant for this let: count it, so that
  // the let is not also reported as never used.
  if (LetState *let = findLet(best))
    ++let->decl->uses;
  return ("; did you mean '" + best + "'?").str();
}

Type PatternChecker::checkExpr(Expr &expr, ConstInfo &info) {
  info = ConstInfo();
  Type type = Type::Error;
  switch (expr.getKind()) {
  case Expr::Kind::IntLit:
    info = ConstInfo::constant(cast<IntLitExpr>(expr).value);
    type = Type::Int;
    break;
  case Expr::Kind::BoolLit:
    type = Type::Bool;
    break;
  case Expr::Kind::Name:
    type = checkName(cast<NameExpr>(expr), info);
    break;
  case Expr::Kind::Unary:
    type = checkUnary(cast<UnaryExpr>(expr), info);
    break;
  case Expr::Kind::Binary:
    type = checkBinary(cast<BinaryExpr>(expr), info);
    break;
  case Expr::Kind::Call:
    type = checkCall(cast<CallExpr>(expr), info);
    break;
  }
  if (type != Type::Int)
    info = ConstInfo();
  expr.type = type;
  return type;
}

Type PatternChecker::checkName(NameExpr &expr, ConstInfo &info) {
  StringRef name = expr.name;
  if (name == "i") {
    expr.ref = NameExpr::Ref::Query;
    info = ConstInfo::dynamic(Dep::Query);
    return Type::Int;
  }
  if (name == "j") {
    expr.ref = NameExpr::Ref::Key;
    info = ConstInfo::dynamic(Dep::Key);
    return Type::Int;
  }
  if (name == "n") {
    expr.ref = NameExpr::Ref::SeqLen;
    if (auto seqLen = sema.getOptions().seqLen) {
      info = ConstInfo::constant(*seqLen);
      info.usesSeqLen = true;
    } else {
      info = ConstInfo::dynamic(Dep::SeqLen);
    }
    return Type::Int;
  }
  if (name == "h") {
    if (!headDefined) {
      sema.error(expr.getLoc()) << "the head index 'h' is only defined in a "
                                   "pattern with 'heads[h] = ...'";
      return Type::Error;
    }
    expr.ref = NameExpr::Ref::Head;
    info = ConstInfo::dynamic(Dep::Head);
    if (currentLet)
      currentLet->decl->usesHead = true;
    return Type::Int;
  }
  for (auto [index, param] : llvm::enumerate(pattern.params)) {
    if (param.name != name)
      continue;
    expr.ref = NameExpr::Ref::Param;
    expr.paramIndex = index;
    info = ConstInfo::constant(param.value);
    info.params.push_back(index);
    return Type::Int;
  }
  if (LetState *let = findLet(name)) {
    // Counted even when misplaced, so that the let is not also "never used".
    ++let->decl->uses;
    if (expr.getLoc().getPointer() <
        let->decl->init->getRange().End.getPointer()) {
      auto diag = sema.error(expr.getLoc())
                  << "'" << name << "' is used before its definition";
      diag.attachNote(sema.getLoc(let->decl->nameRange.Start))
          << "'" << name << "' is defined here";
      return Type::Error;
    }
    expr.ref = NameExpr::Ref::Let;
    expr.let = let->decl;
    if (let->decl->usesHead && currentLet)
      currentLet->decl->usesHead = true;
    info = let->info;
    if (info.kind == ConstInfo::Kind::Dynamic)
      info.viaLet = let->decl->name;
    return let->type;
  }
  sema.error(expr.getLoc())
      << "unknown name '" << name << "'" << suggestName(name, expr.getLoc());
  return Type::Error;
}

Type PatternChecker::checkUnary(UnaryExpr &expr, ConstInfo &info) {
  ConstInfo operandInfo;
  Type operand = checkExpr(*expr.operand, operandInfo);
  if (operand == Type::Error)
    return Type::Error;
  if (expr.op == UnaryOp::Not) {
    if (operand != Type::Bool) {
      sema.error(expr.opRange.Start) << "operator '!' expects a boolean "
                                        "operand, but the operand is an "
                                        "integer";
      return Type::Error;
    }
    return Type::Bool;
  }
  if (operand != Type::Int) {
    sema.error(expr.opRange.Start)
        << "operator '-' expects an integer operand, but the operand is "
           "boolean";
    return Type::Error;
  }
  if (operandInfo.isConst()) {
    if (operandInfo.value == std::numeric_limits<int64_t>::min()) {
      reportOverflow(expr.opRange.Start);
      return Type::Int; // info stays Invalid: no follow-on divisor error
    }
    info = ConstInfo::derived(-operandInfo.value, operandInfo);
  } else {
    info = operandInfo;
  }
  return Type::Int;
}

std::string PatternChecker::describeParams(const ConstInfo &info) {
  std::string text;
  llvm::raw_string_ostream os(text);
  llvm::ListSeparator sep;
  for (unsigned index : info.params)
    os << sep << pattern.params[index].name << " = "
       << pattern.params[index].value;
  if (info.usesSeqLen)
    os << sep << "n = " << *sema.getOptions().seqLen;
  if (text.empty())
    return "";
  return " (" + text + ")";
}

bool PatternChecker::checkDivisor(BinaryExpr &expr, const ConstInfo &divisor) {
  StringRef op = toString(expr.op);
  switch (divisor.kind) {
  case ConstInfo::Kind::Invalid:
    return false;
  case ConstInfo::Kind::Dynamic: {
    auto diag = sema.error(expr.rhs->getLoc());
    diag << "the divisor of '" << op
         << "' must be a positive compile-time constant, but it depends on "
         << describeBuiltin(depName(divisor.dep)) << " '"
         << depName(divisor.dep) << "'";
    if (!divisor.viaLet.empty())
      diag << " through '" << divisor.viaLet << "'";
    if (divisor.dep == Dep::SeqLen)
      diag << " (pass --seq-len to fix n)";
    return false;
  }
  case ConstInfo::Kind::Const:
    if (divisor.value > 0)
      return true;
    sema.error(expr.rhs->getLoc())
        << "the divisor of '" << op << "' must be positive, but it is "
        << divisor.value << describeParams(divisor);
    return false;
  }
  return false;
}

bool PatternChecker::checkOperandTypes(BinaryExpr &expr, Type lhs, Type rhs) {
  StringRef op = toString(expr.op);
  SMLoc opLoc = expr.opRange.Start;
  if (expr.op == BinaryOp::Eq || expr.op == BinaryOp::Ne) {
    if (lhs == Type::Error || rhs == Type::Error)
      return false;
    if (lhs == rhs)
      return true;
    sema.error(opLoc) << "operator '" << op
                      << "' expects operands of the same type, but the left "
                         "operand is "
                      << describeType(lhs) << " and the right operand is "
                      << describeType(rhs);
    return false;
  }

  // The operand type every other operator needs; the wrong one is the other.
  Type want = isLogical(expr.op) ? Type::Bool : Type::Int;
  Type wrong = want == Type::Bool ? Type::Int : Type::Bool;
  bool lhsWrong = lhs == wrong, rhsWrong = rhs == wrong;
  if (lhsWrong || rhsWrong) {
    auto diag = sema.error(opLoc);
    diag << "operator '" << op << "' expects "
         << (want == Type::Bool ? "boolean" : "integer") << " operands, but ";
    if (lhsWrong && rhsWrong)
      diag << "both operands are "
           << (wrong == Type::Bool ? "boolean" : "integers");
    else
      diag << "the " << (lhsWrong ? "left" : "right") << " operand is "
           << describeType(wrong);
  }
  return !lhsWrong && !rhsWrong && lhs != Type::Error && rhs != Type::Error;
}

void PatternChecker::foldArithmetic(BinaryExpr &expr, const ConstInfo &lhs,
                                    const ConstInfo &rhs, ConstInfo &info) {
  if (!lhs.isConst() || !rhs.isConst()) {
    info = ConstInfo::nonConst(lhs, rhs);
    return;
  }
  int64_t a = lhs.value, b = rhs.value, result = 0;
  bool overflow = false;
  switch (expr.op) {
  case BinaryOp::Add:
    overflow = llvm::AddOverflow(a, b, result);
    break;
  case BinaryOp::Sub:
    overflow = llvm::SubOverflow(a, b, result);
    break;
  case BinaryOp::Mul:
    overflow = llvm::MulOverflow(a, b, result);
    break;
  case BinaryOp::Div:
    result = sparsetx::floorDiv(a, b); // b > 0: cannot overflow
    break;
  case BinaryOp::Mod:
    result = sparsetx::floorMod(a, b);
    break;
  default:
    assert(false && "not an arithmetic operator");
    break;
  }
  if (overflow) {
    reportOverflow(expr.opRange.Start);
    return; // info stays Invalid: reported once
  }
  info = ConstInfo::derived(result, lhs, &rhs);
}

Type PatternChecker::checkBinary(BinaryExpr &expr, ConstInfo &info) {
  ConstInfo lhsInfo, rhsInfo;
  Type lhs = checkExpr(*expr.lhs, lhsInfo);
  Type rhs = checkExpr(*expr.rhs, rhsInfo);
  bool typesOk = checkOperandTypes(expr, lhs, rhs);

  bool divisorOk = true;
  if ((expr.op == BinaryOp::Div || expr.op == BinaryOp::Mod) &&
      rhs == Type::Int)
    divisorOk = checkDivisor(expr, rhsInfo);

  if (!typesOk)
    return Type::Error;
  if (!isArithmetic(expr.op))
    return Type::Bool;
  if (divisorOk)
    foldArithmetic(expr, lhsInfo, rhsInfo, info);
  return Type::Int;
}

Type PatternChecker::checkCall(CallExpr &expr, ConstInfo &info) {
  StringRef name = toString(expr.callee);
  llvm::SmallVector<ConstInfo, 2> argInfo(expr.args.size());
  llvm::SmallVector<Type, 2> argTypes;
  for (auto [arg, argI] : llvm::zip(expr.args, argInfo))
    argTypes.push_back(checkExpr(*arg, argI));

  bool anyError = llvm::is_contained(argTypes, Type::Error);
  bool anyBool = llvm::is_contained(argTypes, Type::Bool);
  if (anyBool) {
    auto diag = sema.error(expr.calleeRange.Start);
    if (expr.args.size() == 1) {
      diag << "'" << name
           << "' expects an integer argument, but the argument is boolean";
    } else {
      diag << "'" << name << "' expects integer arguments, but ";
      if (argTypes[0] == Type::Bool && argTypes[1] == Type::Bool)
        diag << "both arguments are boolean";
      else
        diag << "the " << (argTypes[0] == Type::Bool ? "first" : "second")
             << " argument is boolean";
    }
  }
  if (anyBool || anyError)
    return Type::Error;

  if (!llvm::all_of(argInfo, [](const ConstInfo &i) { return i.isConst(); })) {
    info = argInfo.size() == 1 ? argInfo[0]
                               : ConstInfo::nonConst(argInfo[0], argInfo[1]);
    return Type::Int;
  }
  switch (expr.callee) {
  case Builtin::Min:
    info = ConstInfo::derived(std::min(argInfo[0].value, argInfo[1].value),
                              argInfo[0], &argInfo[1]);
    break;
  case Builtin::Max:
    info = ConstInfo::derived(std::max(argInfo[0].value, argInfo[1].value),
                              argInfo[0], &argInfo[1]);
    break;
  case Builtin::Abs:
    if (argInfo[0].value == std::numeric_limits<int64_t>::min()) {
      reportOverflow(expr.calleeRange.Start);
      break;
    }
    info = ConstInfo::derived(argInfo[0].value < 0 ? -argInfo[0].value
                                                   : argInfo[0].value,
                              argInfo[0]);
    break;
  }
  return Type::Int;
}

//===----------------------------------------------------------------------===//
// Module
//===----------------------------------------------------------------------===//

void Sema::applyOverrides() {
  for (const auto &[name, value] : options.overrides) {
    bool found = false;
    for (auto &pattern : module.patterns) {
      for (ParamDecl &param : pattern->params) {
        if (param.name != name)
          continue;
        param.value = value;
        param.overridden = true;
        found = true;
        break; // a duplicate parameter is an error reported later
      }
    }
    if (found)
      continue;
    auto diag = error(SMLoc()) << "unknown parameter '" << name << "' in -D "
                               << name << "=" << value;
    for (const auto &pattern : module.patterns) {
      auto &note = diag.attachNote(getLoc(pattern->nameRange.Start));
      note << "pattern '" << pattern->name << "' has ";
      if (pattern->params.empty()) {
        note << "no parameters";
        continue;
      }
      note << "parameters: ";
      llvm::ListSeparator sep;
      for (const ParamDecl &param : pattern->params)
        note << StringRef(sep) << param.name;
    }
  }
}

void Sema::checkPatternNames() {
  llvm::StringMap<const PatternDecl *> seen;
  for (const auto &pattern : module.patterns) {
    auto [it, inserted] = seen.try_emplace(pattern->name, pattern.get());
    if (inserted)
      continue;
    auto diag = error(pattern->nameRange.Start)
                << "duplicate pattern '" << pattern->name << "'";
    diag.attachNote(getLoc(it->second->nameRange.Start))
        << "previously defined here";
  }
}

mlir::LogicalResult Sema::check() {
  applyOverrides();
  checkPatternNames();
  for (auto &pattern : module.patterns)
    PatternChecker(*pattern, *this).check();
  return mlir::failure(hadError);
}

mlir::LogicalResult sparsetx::dsl::checkModule(Module &module,
                                               const SourceLocator &locator,
                                               const SemaOptions &options) {
  return Sema(module, locator, options).check();
}
