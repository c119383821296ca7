//===- MaskDag.h - an sp.mask region as a value-numbered DAG -*- C++ -*-===//
//
// The front half that every compiled form of a mask shares (the mask
// evaluator's register program, the abstract interpreter's program): walks an
// `sp.mask` region, binds the pattern's parameters and the sequence length,
// rewrites i1 operations into the i64/0-1 opcode set, folds constant
// subexpressions with the language's semantics (IntMath.h, wrapping), applies
// algebraic identities, merges common subexpressions and drops dead code.
// What is left is a list of nodes in dependence order (operands precede their
// users), each operand a constant or an earlier node.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_ANALYSIS_MASKDAG_H
#define SPARSETX_ANALYSIS_MASKDAG_H

#include "sparsetx/Analysis/MaskEvaluator.h"
#include "sparsetx/Dialect/SP/IR/SP.h"
#include "sparsetx/Support/IntMath.h"

#include "mlir/Support/LLVM.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <vector>

namespace sparsetx {

/// The operations of a compiled mask. Every value is an int64_t: i64 values
/// as themselves, i1 values as 0 or 1 (signed i1 operations are rewritten
/// into unsigned ones when the DAG is built).
enum class MaskOpcode : uint8_t {
  // Binary: a OP b. Comparisons yield 0 or 1; gt/ge are lt/le swapped.
  Add,
  Sub,
  Mul,
  And,
  Or,
  Xor,
  MinS,
  MaxS,
  MinU,
  MaxU,
  Eq,
  Ne,
  Slt,
  Sle,
  Ult,
  Ule,
  // a ? b : c.
  Select,
  // Unary.
  Abs,
  // a OP divisor, for a constant divisor > 1.
  FloorDiv,
  FloorMod,
  CeilDiv,
  TruncDiv,
  TruncRem,
};

inline unsigned numOperands(MaskOpcode op) {
  switch (op) {
  case MaskOpcode::Select:
    return 3;
  case MaskOpcode::Abs:
  case MaskOpcode::FloorDiv:
  case MaskOpcode::FloorMod:
  case MaskOpcode::CeilDiv:
  case MaskOpcode::TruncDiv:
  case MaskOpcode::TruncRem:
    return 1;
  default:
    return 2;
  }
}

inline bool isCommutative(MaskOpcode op) {
  switch (op) {
  case MaskOpcode::Add:
  case MaskOpcode::Mul:
  case MaskOpcode::And:
  case MaskOpcode::Or:
  case MaskOpcode::Xor:
  case MaskOpcode::MinS:
  case MaskOpcode::MaxS:
  case MaskOpcode::MinU:
  case MaskOpcode::MaxU:
  case MaskOpcode::Eq:
  case MaskOpcode::Ne:
    return true;
  default:
    return false;
  }
}

/// The concrete semantics of one operation (IntMath.h; wrapping arithmetic):
/// what constant folding computes. `d` is the divisor (> 1) of the division
/// opcodes, ignored otherwise.
inline int64_t evaluateMaskOpcode(MaskOpcode op, int64_t a, int64_t b,
                                  int64_t c, int64_t d) {
  auto wrap = [](uint64_t v) { return static_cast<int64_t>(v); };
  auto u64 = [](int64_t v) { return static_cast<uint64_t>(v); };
  switch (op) {
  case MaskOpcode::Add:
    return wrap(u64(a) + u64(b));
  case MaskOpcode::Sub:
    return wrap(u64(a) - u64(b));
  case MaskOpcode::Mul:
    return wrap(u64(a) * u64(b));
  case MaskOpcode::And:
    return a & b;
  case MaskOpcode::Or:
    return a | b;
  case MaskOpcode::Xor:
    return a ^ b;
  case MaskOpcode::MinS:
    return std::min(a, b);
  case MaskOpcode::MaxS:
    return std::max(a, b);
  case MaskOpcode::MinU:
    return u64(a) < u64(b) ? a : b;
  case MaskOpcode::MaxU:
    return u64(a) < u64(b) ? b : a;
  case MaskOpcode::Eq:
    return a == b;
  case MaskOpcode::Ne:
    return a != b;
  case MaskOpcode::Slt:
    return a < b;
  case MaskOpcode::Sle:
    return a <= b;
  case MaskOpcode::Ult:
    return u64(a) < u64(b);
  case MaskOpcode::Ule:
    return u64(a) <= u64(b);
  case MaskOpcode::Select:
    return a ? b : c;
  case MaskOpcode::Abs:
    return a < 0 ? wrap(0 - u64(a)) : a; // |INT64_MIN| wraps
  case MaskOpcode::FloorDiv:
    return floorDiv(a, d);
  case MaskOpcode::FloorMod:
    return floorMod(a, d);
  case MaskOpcode::CeilDiv:
    return floorDiv(a, d) + (floorMod(a, d) != 0);
  case MaskOpcode::TruncDiv:
    return a / d;
  case MaskOpcode::TruncRem:
    return a % d;
  }
  return 0;
}

/// One mask (or one component of it) as a folded, simplified, value-numbered,
/// dead-code-free DAG.
class MaskDag {
public:
  /// An operand: a constant, or the index of a node.
  struct Operand {
    bool isConst = true;
    int64_t value = 0; // the constant, or the node index
    bool operator==(const Operand &o) const {
      return isConst == o.isConst && value == o.value;
    }
    bool isConstant(int64_t v) const { return isConst && value == v; }
  };

  /// Which of the arguments a node's value depends on.
  enum Dependence : uint8_t {
    DependsOnQuery = 1,
    DependsOnKey = 2,
    DependsOnHead = 4,
  };

  struct Node {
    MaskOpcode op = MaskOpcode::Add;
    /// The divisor (> 1) of a division opcode; 0 otherwise.
    int64_t divisor = 0;
    /// numOperands(op) operands; the rest are the constant 0.
    std::array<Operand, 3> operands{};
    /// The arguments i, j, h are nodes 0, 1, 2 (op and operands unused).
    bool isArg = false;
    /// A mask of Dependence bits.
    uint8_t deps = 0;
    bool dependsOnKey() const { return deps & DependsOnKey; }
  };

  static constexpr unsigned kQueryNode = 0, kKeyNode = 1, kHeadNode = 2;
  static constexpr unsigned kNumArgs = 3;

  struct Options {
    /// Rewrite x & (2^k - 1) on i64 into x floor-mod 2^k (the same value):
    /// the abstract interpreter keeps a modulo affine where it could only
    /// bound a bitwise and.
    bool lowBitMaskAsModulo = false;
  };

  /// Builds the DAG of `mask`, with `binding` (and the enclosing pattern's
  /// parameters) bound. `component` selects one operand of the mask's
  /// sp.yield; by default the result is their union. On failure an error has
  /// been emitted at the offending operation (see MaskProgram::compile).
  static mlir::FailureOr<MaskDag>
  build(sp::MaskOp mask, const Binding &binding,
        std::optional<unsigned> component, Options options);
  static mlir::FailureOr<MaskDag>
  build(sp::MaskOp mask, const Binding &binding,
        std::optional<unsigned> component = std::nullopt) {
    return build(mask, binding, component, Options{});
  }

  /// Nodes 0, 1, 2 are the arguments i, j, h; the rest are the live
  /// operations in dependence order (operands precede their users).
  std::vector<Node> nodes;
  /// Whether argument node k (i, j, h) is read by a live node or is the
  /// result.
  std::array<bool, kNumArgs> argUsed{};
  /// The mask's value.
  Operand result;
  /// The sequence length, if the mask reads it.
  std::optional<int64_t> seqLen;
};

} // namespace sparsetx

#endif // SPARSETX_ANALYSIS_MASKDAG_H
