//===- MaskDag.cpp - an sp.mask region as a folded, value-numbered DAG ----===//
//
// Builds a MaskDag: one walk over the mask region that binds parameters and
// the sequence length, maps each op (i1 ops included) onto the opcode set,
// folds constants, applies identities and value-numbers, then a backward
// sweep that keeps only what the result reaches.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Analysis/MaskDag.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/Diagnostics.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/MathExtras.h"

#include <limits>
#include <map>

using namespace mlir;
using namespace sparsetx;
using namespace sparsetx::sp;

namespace {

/// The value-numbered DAG under construction, with the value of each SSA value
/// of the region.
class DagBuilder {
public:
  DagBuilder(MaskOp mask, const Binding &binding,
             std::optional<unsigned> component, MaskDag::Options options)
      : mask(mask), pattern(mask->getParentOfType<PatternOp>()),
        binding(binding), component(component), options(options) {}

  FailureOr<MaskDag> run();

private:
  using Val = MaskDag::Operand;
  using Node = MaskDag::Node;

  Val node(int64_t index) { return Val{false, index}; }
  Val constant(int64_t v) { return Val{true, v}; }
  /// Folds, simplifies and value-numbers `op` over `operands`. `isBool` tells
  /// the identities what "all ones" is.
  Val emit(MaskOpcode op, std::array<Val, 3> operands, bool isBool,
           int64_t divisor = 0);
  std::optional<Val> simplify(MaskOpcode op, std::array<Val, 3> &ops,
                              bool isBool);
  LogicalResult compileOp(Operation &op);
  LogicalResult compileDivision(Operation &op, MaskOpcode opcode);
  InFlightDiagnostic unsupported(Operation &op) {
    return op.emitError() << "cannot evaluate '" << op.getName()
                          << "' in a mask";
  }

  MaskOp mask;
  PatternOp pattern;
  const Binding &binding;
  std::optional<unsigned> component;
  MaskDag::Options options;
  std::optional<int64_t> usedSeqLen;
  std::vector<Node> nodes;
  std::map<std::array<int64_t, 8>, int64_t> valueNumbers;
  llvm::DenseMap<Value, Val> values;
};

} // namespace

std::optional<DagBuilder::Val>
DagBuilder::simplify(MaskOpcode op, std::array<Val, 3> &ops, bool isBool) {
  const Val &a = ops[0], &b = ops[1];
  const int64_t allOnes = isBool ? 1 : -1;
  switch (op) {
  case MaskOpcode::Add:
    if (b.isConstant(0))
      return a;
    break;
  case MaskOpcode::Sub:
    if (b.isConstant(0))
      return a;
    if (a == b)
      return constant(0);
    break;
  case MaskOpcode::Mul:
    if (b.isConstant(1))
      return a;
    if (b.isConstant(0))
      return constant(0);
    break;
  case MaskOpcode::And:
    if (b.isConstant(0))
      return constant(0);
    if (b.isConstant(allOnes) || a == b)
      return a;
    break;
  case MaskOpcode::Or:
    if (b.isConstant(allOnes))
      return constant(allOnes);
    if (b.isConstant(0) || a == b)
      return a;
    break;
  case MaskOpcode::Xor:
    if (b.isConstant(0))
      return a;
    if (a == b)
      return constant(0);
    break;
  case MaskOpcode::MinS:
  case MaskOpcode::MaxS:
  case MaskOpcode::MinU:
  case MaskOpcode::MaxU:
    if (a == b)
      return a;
    break;
  case MaskOpcode::Eq:
  case MaskOpcode::Sle:
  case MaskOpcode::Ule:
    if (a == b)
      return constant(1);
    break;
  case MaskOpcode::Ne:
  case MaskOpcode::Slt:
  case MaskOpcode::Ult:
    if (a == b)
      return constant(0);
    break;
  case MaskOpcode::Select:
    if (a.isConst)
      return a.value ? ops[1] : ops[2];
    if (ops[1] == ops[2])
      return ops[1];
    if (isBool && ops[1].isConstant(1) && ops[2].isConstant(0))
      return a;
    break;
  default:
    break;
  }
  return std::nullopt;
}

DagBuilder::Val DagBuilder::emit(MaskOpcode op, std::array<Val, 3> operands,
                                 bool isBool, int64_t divisor) {
  unsigned arity = numOperands(op);
  for (unsigned k = arity; k < 3; ++k)
    operands[k] = constant(0);
  if (llvm::all_of(llvm::ArrayRef(operands).take_front(arity),
                   [](const Val &v) { return v.isConst; })) {
    return constant(evaluateMaskOpcode(op, operands[0].value, operands[1].value,
                                       operands[2].value, divisor));
  }
  // Constants second, so that the identities below see them there and CSE
  // sees one form of a commutative operation.
  if (isCommutative(op) &&
      (operands[0].isConst ||
       (!operands[1].isConst && operands[1].value < operands[0].value)))
    std::swap(operands[0], operands[1]);
  if (std::optional<Val> v = simplify(op, operands, isBool))
    return *v;
  // x & (2^k - 1) is x mod 2^k: the division rules keep it affine where the
  // bitwise rules could only bound it.
  if (options.lowBitMaskAsModulo && op == MaskOpcode::And && !isBool &&
      operands[1].isConst && operands[1].value > 0 &&
      operands[1].value < std::numeric_limits<int64_t>::max() &&
      llvm::isPowerOf2_64(static_cast<uint64_t>(operands[1].value) + 1))
    return emit(MaskOpcode::FloorMod, {operands[0]}, false,
                operands[1].value + 1);

  std::array<int64_t, 8> key = {static_cast<int64_t>(op), divisor};
  uint8_t deps = 0;
  for (unsigned k = 0; k < 3; ++k) {
    key[2 + 2 * k] = operands[k].isConst;
    key[3 + 2 * k] = operands[k].value;
    if (!operands[k].isConst)
      deps |= nodes[operands[k].value].deps;
  }
  auto [it, inserted] =
      valueNumbers.try_emplace(key, static_cast<int64_t>(nodes.size()));
  if (inserted) {
    Node n;
    n.op = op;
    n.divisor = divisor;
    n.operands = operands;
    n.deps = deps;
    nodes.push_back(n);
  }
  return node(it->second);
}

LogicalResult DagBuilder::compileDivision(Operation &op, MaskOpcode opcode) {
  Val lhs = values.lookup(op.getOperand(0));
  Val rhs = values.lookup(op.getOperand(1));
  if (!rhs.isConst || rhs.value <= 0) {
    InFlightDiagnostic diag = op.emitError()
                              << "the divisor of '" << op.getName()
                              << "' must be a positive constant after binding "
                                 "parameters";
    if (rhs.isConst)
      diag << ", but is " << rhs.value;
    else
      diag << ", but depends on the query, key or head";
    return diag;
  }
  Val result;
  if (rhs.value == 1) {
    bool isQuotient = opcode == MaskOpcode::FloorDiv ||
                      opcode == MaskOpcode::CeilDiv ||
                      opcode == MaskOpcode::TruncDiv;
    result = isQuotient ? lhs : constant(0);
  } else {
    result = emit(opcode, {lhs}, /*isBool=*/false, rhs.value);
  }
  values[op.getResult(0)] = result;
  return success();
}

LogicalResult DagBuilder::compileOp(Operation &op) {
  // Every value of a mask is an i64 or an i1.
  auto isSupportedType = [](Type t) {
    return t.isSignlessInteger(64) || t.isSignlessInteger(1);
  };
  for (Type t :
       llvm::concat<const Type>(op.getOperandTypes(), op.getResultTypes())) {
    if (!isSupportedType(t)) {
      InFlightDiagnostic diag = unsupported(op);
      diag.attachNote() << "only i64 and i1 values are supported, but it uses "
                        << t;
      return diag;
    }
  }
  if (op.getNumRegions() != 0 || op.getNumResults() != 1)
    return unsupported(op);

  bool isBool = op.getResult(0).getType().isSignlessInteger(1);
  bool operandsBool =
      op.getNumOperands() > 0 &&
      op.getOperand(op.getNumOperands() - 1).getType().isSignlessInteger(1);
  auto operand = [&](unsigned k) { return values.lookup(op.getOperand(k)); };
  auto binary = [&](MaskOpcode i64Op, MaskOpcode i1Op) -> LogicalResult {
    values[op.getResult(0)] =
        emit(isBool ? i1Op : i64Op, {operand(0), operand(1)}, isBool);
    return success();
  };

  using namespace mlir::arith;
  return llvm::TypeSwitch<Operation *, LogicalResult>(&op)
      .Case([&](ConstantOp c) -> LogicalResult {
        auto attr = dyn_cast<IntegerAttr>(c.getValue());
        if (!attr)
          return unsupported(op);
        values[c.getResult()] = constant(
            isBool ? static_cast<int64_t>(attr.getValue().getZExtValue())
                   : attr.getValue().getSExtValue());
        return success();
      })
      // On i1, + and - are xor, * is and; signed min is or and signed max is
      // and (true is -1 as a signed i1), unsigned min/max the reverse.
      .Case([&](AddIOp) { return binary(MaskOpcode::Add, MaskOpcode::Xor); })
      .Case([&](SubIOp) { return binary(MaskOpcode::Sub, MaskOpcode::Xor); })
      .Case([&](MulIOp) { return binary(MaskOpcode::Mul, MaskOpcode::And); })
      .Case([&](AndIOp) { return binary(MaskOpcode::And, MaskOpcode::And); })
      .Case([&](OrIOp) { return binary(MaskOpcode::Or, MaskOpcode::Or); })
      .Case([&](XOrIOp) { return binary(MaskOpcode::Xor, MaskOpcode::Xor); })
      .Case([&](MinSIOp) { return binary(MaskOpcode::MinS, MaskOpcode::Or); })
      .Case([&](MaxSIOp) { return binary(MaskOpcode::MaxS, MaskOpcode::And); })
      .Case([&](MinUIOp) { return binary(MaskOpcode::MinU, MaskOpcode::And); })
      .Case([&](MaxUIOp) { return binary(MaskOpcode::MaxU, MaskOpcode::Or); })
      .Case([&](CmpIOp cmp) -> LogicalResult {
        Val a = operand(0), b = operand(1);
        CmpIPredicate p = cmp.getPredicate();
        // Signed order on i1 (true = -1) is the reverse of the unsigned
        // order of the 0/1 encoding.
        if (operandsBool) {
          switch (p) {
          case CmpIPredicate::slt:
            p = CmpIPredicate::ugt;
            break;
          case CmpIPredicate::sle:
            p = CmpIPredicate::uge;
            break;
          case CmpIPredicate::sgt:
            p = CmpIPredicate::ult;
            break;
          case CmpIPredicate::sge:
            p = CmpIPredicate::ule;
            break;
          default:
            break;
          }
        }
        MaskOpcode opcode = MaskOpcode::Eq;
        switch (p) {
        case CmpIPredicate::eq:
          opcode = MaskOpcode::Eq;
          break;
        case CmpIPredicate::ne:
          opcode = MaskOpcode::Ne;
          break;
        case CmpIPredicate::slt:
          opcode = MaskOpcode::Slt;
          break;
        case CmpIPredicate::sle:
          opcode = MaskOpcode::Sle;
          break;
        case CmpIPredicate::sgt:
          opcode = MaskOpcode::Slt;
          std::swap(a, b);
          break;
        case CmpIPredicate::sge:
          opcode = MaskOpcode::Sle;
          std::swap(a, b);
          break;
        case CmpIPredicate::ult:
          opcode = MaskOpcode::Ult;
          break;
        case CmpIPredicate::ule:
          opcode = MaskOpcode::Ule;
          break;
        case CmpIPredicate::ugt:
          opcode = MaskOpcode::Ult;
          std::swap(a, b);
          break;
        case CmpIPredicate::uge:
          opcode = MaskOpcode::Ule;
          std::swap(a, b);
          break;
        }
        values[cmp.getResult()] = emit(opcode, {a, b}, /*isBool=*/true);
        return success();
      })
      .Case([&](SelectOp s) -> LogicalResult {
        values[s.getResult()] = emit(
            MaskOpcode::Select, {operand(0), operand(1), operand(2)}, isBool);
        return success();
      })
      .Case([&](ExtUIOp) -> LogicalResult {
        values[op.getResult(0)] = operand(0); // 0/1 already
        return success();
      })
      .Case([&](ExtSIOp) -> LogicalResult {
        values[op.getResult(0)] =
            emit(MaskOpcode::Sub, {constant(0), operand(0)}, /*isBool=*/false);
        return success();
      })
      .Case([&](TruncIOp) -> LogicalResult {
        values[op.getResult(0)] =
            emit(MaskOpcode::And, {operand(0), constant(1)}, /*isBool=*/false);
        return success();
      })
      .Case([&](math::AbsIOp) -> LogicalResult {
        // On i1, |true| = |-1| wraps to -1 = true: the identity.
        values[op.getResult(0)] =
            isBool ? operand(0) : emit(MaskOpcode::Abs, {operand(0)}, false);
        return success();
      })
      .Case(
          [&](sp::DivOp) { return compileDivision(op, MaskOpcode::FloorDiv); })
      .Case(
          [&](sp::ModOp) { return compileDivision(op, MaskOpcode::FloorMod); })
      .Case([&](FloorDivSIOp) {
        return isBool ? unsupported(op)
                      : compileDivision(op, MaskOpcode::FloorDiv);
      })
      .Case([&](CeilDivSIOp) {
        return isBool ? unsupported(op)
                      : compileDivision(op, MaskOpcode::CeilDiv);
      })
      .Case([&](DivSIOp) {
        return isBool ? unsupported(op)
                      : compileDivision(op, MaskOpcode::TruncDiv);
      })
      .Case([&](RemSIOp) {
        return isBool ? unsupported(op)
                      : compileDivision(op, MaskOpcode::TruncRem);
      })
      .Case([&](sp::ParamOp p) -> LogicalResult {
        std::optional<int64_t> v = pattern.getParam(p.getName());
        if (!v)
          return p.emitError()
                 << "'" << p.getName() << "' is not a parameter of pattern @"
                 << pattern.getSymName();
        values[p.getResult()] = constant(*v);
        return success();
      })
      .Case([&](sp::SeqLenOp s) -> LogicalResult {
        std::optional<int64_t> n = binding.seqLen;
        if (!n)
          n = pattern.getSeqLen();
        if (!n)
          return s.emitError() << "the mask uses the sequence length 'n'; "
                                  "bind it (--seq-len)";
        usedSeqLen = *n;
        values[s.getResult()] = constant(*n);
        return success();
      })
      .Default([&](Operation *) { return unsupported(op); });
}

FailureOr<MaskDag> DagBuilder::run() {
  if (!pattern)
    return mask.emitError() << "the mask is not inside an 'sp.pattern'";
  Block &block = mask.getBodyBlock();
  YieldOp yield = mask.getYield();
  if (!yield)
    return mask.emitError() << "the mask does not end with 'sp.yield'";

  static constexpr uint8_t argDeps[MaskDag::kNumArgs] = {
      MaskDag::DependsOnQuery, MaskDag::DependsOnKey, MaskDag::DependsOnHead};
  for (unsigned k = 0; k < MaskDag::kNumArgs; ++k) {
    Node arg;
    arg.isArg = true;
    arg.deps = argDeps[k];
    nodes.push_back(arg);
    if (k < block.getNumArguments())
      values[block.getArgument(k)] = node(k);
  }
  for (Operation &op : block.without_terminator())
    if (failed(compileOp(op)))
      return failure();
  // The mask is the union of the yielded components; a DAG may also be built
  // for one component alone.
  OperandRange yielded = yield.getValues();
  Val result;
  if (component) {
    if (*component >= yielded.size())
      return mask.emitError()
             << "the mask has " << yielded.size()
             << " components; there is no component #" << *component;
    result = values.lookup(yielded[*component]);
  } else {
    result = values.lookup(yielded.front());
    for (Value v : yielded.drop_front())
      result = emit(MaskOpcode::Or, {result, values.lookup(v), constant(0)},
                    /*isBool=*/true);
  }

  // Dead-code elimination: mark what the result reaches. Operands precede
  // their users, so one backward sweep suffices.
  std::vector<bool> live(nodes.size(), false);
  if (!result.isConst)
    live[result.value] = true;
  for (size_t n = nodes.size(); n-- > 0;)
    if (live[n] && !nodes[n].isArg)
      for (unsigned k = 0, e = numOperands(nodes[n].op); k < e; ++k)
        if (!nodes[n].operands[k].isConst)
          live[nodes[n].operands[k].value] = true;

  // Keep the arguments and the live nodes, in order, renumbered.
  MaskDag dag;
  dag.seqLen = usedSeqLen;
  std::vector<int64_t> index(nodes.size(), -1);
  auto renumber = [&](Val v) {
    if (!v.isConst)
      v.value = index[v.value];
    return v;
  };
  for (size_t n = 0; n < nodes.size(); ++n) {
    if (n < MaskDag::kNumArgs) {
      dag.argUsed[n] = live[n];
    } else if (!live[n]) {
      continue;
    }
    index[n] = static_cast<int64_t>(dag.nodes.size());
    Node nd = nodes[n];
    for (Val &v : nd.operands)
      v = renumber(v);
    dag.nodes.push_back(nd);
  }
  dag.result = renumber(result);
  return dag;
}

FailureOr<MaskDag> MaskDag::build(MaskOp mask, const Binding &binding,
                                  std::optional<unsigned> component,
                                  Options options) {
  return DagBuilder(mask, binding, component, options).run();
}
