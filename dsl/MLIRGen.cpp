//===- MLIRGen.cpp - .sp AST to the sp dialect ----------------------------===//
//
// Lowers each checked pattern to an sp.pattern op. Every mask expression
// becomes the body of one sp.mask op; `let` bindings are emitted as SSA values
// at their first use inside each mask (so a let shared by two layers appears
// in both, and one a mask never reads is not emitted there). Parameters stay
// symbolic (sp.param) so that the IR says where each constant came from;
// sp-specialize folds them.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/DSL/MLIRGen.h"
#include "sparsetx/Dialect/SP/IR/SP.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallPtrSet.h"
#include "llvm/Support/Casting.h"

using namespace mlir;
using namespace sparsetx;
using namespace sparsetx::dsl;

namespace {

class Generator {
public:
  explicit Generator(const SourceLocator &locator)
      : locator(locator), builder(locator.getContext()) {}

  OwningOpRef<ModuleOp> generate(const Module &module) {
    Location fileLoc = module.patterns.empty()
                           ? builder.getUnknownLoc()
                           : locator.get(module.patterns.front()->range.Start);
    OwningOpRef<ModuleOp> result = ModuleOp::create(fileLoc);
    builder.setInsertionPointToEnd(result->getBody());
    for (const auto &pattern : module.patterns)
      generatePattern(*pattern);
    if (failed(mlir::verify(*result)))
      return nullptr;
    return result;
  }

private:
  void generatePattern(const PatternDecl &decl) {
    SmallVector<StringRef> names;
    SmallVector<int64_t> values;
    for (const ParamDecl &param : decl.params) {
      names.push_back(param.name);
      values.push_back(param.value);
    }
    auto pattern = sp::PatternOp::create(builder, locator.get(decl.nameRange.Start), decl.name, names, values,
        decl.causal);
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToEnd(&pattern.getBodyBlock());
    current = &decl;
    for (auto [index, expr] : llvm::enumerate(decl.masks)) {
      std::optional<int64_t> layer;
      if (decl.form == MaskForm::Layers)
        layer = index;
      // A layer entry points at its own expression; a heads statement at its
      // keyword, which is where a per-mask diagnostic reads best.
      llvm::SMLoc loc = decl.form == MaskForm::Layers ? expr->getLoc()
                                                      : decl.formRange.Start;
      generateMask(*expr, locator.get(loc), layer,
                   decl.form == MaskForm::PerHead);
    }
  }

  void generateMask(const Expr &expr, Location loc,
                    std::optional<int64_t> layer, bool perHead) {
    auto mask = sp::MaskOp::create(builder, loc, layer, perHead);
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToEnd(&mask.getBodyBlock());
    maskOp = mask;
    letValues.clear();
    paramValues.clear();
    seqLen = nullptr;
    // Emit the lets this mask needs first, in source order, so that
    // generating an expression never recurses into another let's: a chain of
    // long lets would otherwise nest one stack frame per operator of all of
    // them together.
    for (const LetDecl *let : letsUsedBy(expr))
      letValues[let] = generateExpr(*let->init);
    Value result = generateExpr(expr);
    sp::YieldOp::create(builder, loc, result);
  }

  /// Calls fn on every let `expr` names directly (iteratively: expressions
  /// can be a thousand levels deep).
  template <typename Fn>
  static void forEachLetUse(const Expr &expr, Fn fn) {
    SmallVector<const Expr *, 32> stack{&expr};
    while (!stack.empty()) {
      const Expr *e = stack.pop_back_val();
      if (auto *name = llvm::dyn_cast<NameExpr>(e)) {
        if (name->ref == NameExpr::Ref::Let)
          fn(name->let);
      } else if (auto *un = llvm::dyn_cast<UnaryExpr>(e)) {
        stack.push_back(un->operand.get());
      } else if (auto *bin = llvm::dyn_cast<BinaryExpr>(e)) {
        stack.push_back(bin->lhs.get());
        stack.push_back(bin->rhs.get());
      } else if (auto *call = llvm::dyn_cast<CallExpr>(e)) {
        for (const ExprPtr &arg : call->args)
          stack.push_back(arg.get());
      }
    }
  }

  /// The lets `expr` reaches, directly or through other lets, in source
  /// order. A let only names earlier lets, so one backward sweep closes the
  /// set.
  SmallVector<const LetDecl *> letsUsedBy(const Expr &expr) const {
    llvm::SmallPtrSet<const LetDecl *, 16> used;
    forEachLetUse(expr, [&](const LetDecl *let) { used.insert(let); });
    for (auto it = current->lets.rbegin(); it != current->lets.rend(); ++it)
      if (used.count(it->get()))
        forEachLetUse(*(*it)->init,
                      [&](const LetDecl *let) { used.insert(let); });
    SmallVector<const LetDecl *> ordered;
    for (const auto &let : current->lets)
      if (used.count(let.get()))
        ordered.push_back(let.get());
    return ordered;
  }

  Value constantInt(Location loc, int64_t value) {
    return arith::ConstantIntOp::create(builder, loc, builder.getI64Type(),
                                                value);
  }
  Value constantBool(Location loc, bool value) {
    return arith::ConstantIntOp::create(builder, loc, builder.getI1Type(),
                                                value ? 1 : 0);
  }

  Value generateName(const NameExpr &name, Location loc) {
    switch (name.ref) {
    case NameExpr::Ref::Query:
      return maskOp.getQuery();
    case NameExpr::Ref::Key:
      return maskOp.getKey();
    case NameExpr::Ref::Head:
      return maskOp.getHeadArg();
    case NameExpr::Ref::SeqLen:
      if (!seqLen)
        seqLen = sp::SeqLenOp::create(builder, loc, builder.getI64Type());
      return seqLen;
    case NameExpr::Ref::Param: {
      Value &value = paramValues[name.paramIndex];
      if (!value)
        value = sp::ParamOp::create(builder, loc, builder.getI64Type(),
            builder.getStringAttr(current->params[name.paramIndex].name));
      return value;
    }
    case NameExpr::Ref::Let: {
      if (Value value = letValues.lookup(name.let))
        return value;
      Value value = generateExpr(*name.let->init);
      letValues[name.let] = value;
      return value;
    }
    case NameExpr::Ref::Unresolved:
      break;
    }
    llvm_unreachable("MLIRGen on an unchecked name");
  }

  static arith::CmpIPredicate predicate(BinaryOp op) {
    switch (op) {
    case BinaryOp::Eq: return arith::CmpIPredicate::eq;
    case BinaryOp::Ne: return arith::CmpIPredicate::ne;
    case BinaryOp::Lt: return arith::CmpIPredicate::slt;
    case BinaryOp::Le: return arith::CmpIPredicate::sle;
    case BinaryOp::Gt: return arith::CmpIPredicate::sgt;
    case BinaryOp::Ge: return arith::CmpIPredicate::sge;
    default: llvm_unreachable("not a comparison");
    }
  }

  Value generateBinary(const BinaryExpr &bin) {
    Location loc = locator.get(bin.opRange.Start);
    Value lhs = generateExpr(*bin.lhs);
    Value rhs = generateExpr(*bin.rhs);
    switch (bin.op) {
    case BinaryOp::Add: return arith::AddIOp::create(builder, loc, lhs, rhs);
    case BinaryOp::Sub: return arith::SubIOp::create(builder, loc, lhs, rhs);
    case BinaryOp::Mul: return arith::MulIOp::create(builder, loc, lhs, rhs);
    case BinaryOp::Div: return sp::DivOp::create(builder, loc, lhs, rhs);
    case BinaryOp::Mod: return sp::ModOp::create(builder, loc, lhs, rhs);
    case BinaryOp::And: return arith::AndIOp::create(builder, loc, lhs, rhs);
    case BinaryOp::Or: return arith::OrIOp::create(builder, loc, lhs, rhs);
    default:
      return arith::CmpIOp::create(builder, loc, predicate(bin.op), lhs, rhs);
    }
  }

  Value generateExpr(const Expr &expr) {
    Location loc = locator.get(expr.getLoc());
    if (auto *lit = llvm::dyn_cast<IntLitExpr>(&expr))
      return constantInt(loc, lit->value);
    if (auto *lit = llvm::dyn_cast<BoolLitExpr>(&expr))
      return constantBool(loc, lit->value);
    if (auto *name = llvm::dyn_cast<NameExpr>(&expr))
      return generateName(*name, loc);
    if (auto *un = llvm::dyn_cast<UnaryExpr>(&expr)) {
      Location opLoc = locator.get(un->opRange.Start);
      Value operand = generateExpr(*un->operand);
      if (un->op == UnaryOp::Neg)
        return arith::SubIOp::create(builder, opLoc, constantInt(opLoc, 0),
                                             operand);
      return arith::XOrIOp::create(builder, opLoc, operand,
                                           constantBool(opLoc, true));
    }
    if (auto *bin = llvm::dyn_cast<BinaryExpr>(&expr))
      return generateBinary(*bin);
    const auto &call = llvm::cast<CallExpr>(expr);
    Location callLoc = locator.get(call.calleeRange.Start);
    SmallVector<Value, 2> args;
    for (const ExprPtr &arg : call.args)
      args.push_back(generateExpr(*arg));
    switch (call.callee) {
    case Builtin::Min:
      return arith::MinSIOp::create(builder, callLoc, args[0], args[1]);
    case Builtin::Max:
      return arith::MaxSIOp::create(builder, callLoc, args[0], args[1]);
    case Builtin::Abs:
      return math::AbsIOp::create(builder, callLoc, args[0]);
    }
    llvm_unreachable("unknown builtin");
  }

  const SourceLocator &locator;
  OpBuilder builder;
  const PatternDecl *current = nullptr;
  sp::MaskOp maskOp;
  llvm::DenseMap<const LetDecl *, Value> letValues;
  llvm::DenseMap<unsigned, Value> paramValues;
  Value seqLen;
};

} // namespace

OwningOpRef<ModuleOp> sparsetx::dsl::mlirGen(const Module &module,
                                             const SourceLocator &locator) {
  locator.getContext()->loadDialect<sp::SPDialect, arith::ArithDialect,
                                    math::MathDialect>();
  return Generator(locator).generate(module);
}
