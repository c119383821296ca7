//===- AbstractMask.cpp - decide a mask over whole blocks -----------------===//
//
// An abstract interpreter of one compiled `sp.mask` component over a pair of
// position boxes. The region is compiled once (parameters and the sequence
// length bound, constants folded, common subexpressions merged, dead code
// dropped) into a flat register program; each evaluate() call runs it over
// abstract values in a register file on the stack.
//
// The abstract value of an integer is a reduced product of two facts that
// hold at every point of the box:
//   v = a0*x0 + a1*x1 + a2*x2 + a3*x3 + e,  e in [elo, ehi]   (affine form)
//   v in [lo, hi]                                              (interval)
// over the box variables x0 = query u, x1 = query v, x2 = key u, x3 = key v.
// The form is exact when elo == ehi; e absorbs what affinity loses (a floor
// quotient's rounding, a non-linear operand), so a value stays partly
// relational instead of collapsing to an interval. Booleans are integers in
// [0, 1]: [1, 1] is true, [0, 0] false, [0, 1] unknown (three-valued logic).
//
// Soundness against 64-bit wrapping: every value is computed in 128-bit
// arithmetic (with overflow checks where even that could overflow) and, if
// its mathematical range leaves i64, becomes the full i64 range with no form.
// A value whose range is a single point is that constant, and an operation
// whose operands are all points is evaluated with the concrete semantics
// (wrapping included), so a 1 x 1 box is always decided exactly.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Analysis/AbstractMask.h"
#include "sparsetx/Analysis/MaskDag.h"
#include "sparsetx/Support/IntMath.h"

#include "mlir/IR/Diagnostics.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <vector>

using namespace mlir;
using namespace sparsetx;
using namespace sparsetx::sp;

namespace {

using i128 = __int128;

constexpr int64_t kI64Min = std::numeric_limits<int64_t>::min();
constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();
constexpr unsigned kNumVars = 4;

//===----------------------------------------------------------------------===//
// Opcodes
//===----------------------------------------------------------------------===//

// The mask's operations (MaskDag.h): i1 values are held as 0 or 1.
using Op = MaskOpcode;

//===----------------------------------------------------------------------===//
// The abstract domain
//===----------------------------------------------------------------------===//

/// See the file comment. At every point x of the box the value v (which did
/// not wrap) satisfies v - a . x in [elo, ehi] and v in [lo, hi], lo <= hi.
/// Without variables (all a_k zero) [elo, ehi] is [lo, hi]; a point
/// (lo == hi) has no variables.
struct AVal {
  int64_t a[kNumVars];
  int64_t elo, ehi;
  int64_t lo, hi;

  bool isPoint() const { return lo == hi; }
  bool hasVars() const { return (a[0] | a[1] | a[2] | a[3]) != 0; }
};

AVal point(int64_t v) { return AVal{{0, 0, 0, 0}, v, v, v, v}; }
AVal top() { return AVal{{0, 0, 0, 0}, kI64Min, kI64Max, kI64Min, kI64Max}; }
AVal interval(int64_t lo, int64_t hi) {
  return AVal{{0, 0, 0, 0}, lo, hi, lo, hi};
}

/// The box variables' ranges for one call. Variables that are points are
/// folded into the forms' constants, so a nonzero coefficient always belongs
/// to a variable of nonzero width.
struct Vars {
  int64_t lo[kNumVars], hi[kNumVars];
};

/// An intermediate result in 128 bits, before it is checked against i64.
struct Wide {
  i128 a[kNumVars] = {0, 0, 0, 0};
  i128 elo = 0, ehi = 0;
  bool formOk = false;
  i128 lo = 0, hi = 0;
  bool rangeOk = false;
};

inline i128 min128(i128 x, i128 y) { return x < y ? x : y; }
inline i128 max128(i128 x, i128 y) { return x < y ? y : x; }

/// floor(x / d), ceil(x / d) for d > 0 in 128 bits.
inline i128 floorDiv128(i128 x, i128 d) {
  i128 q = x / d;
  return (x % d < 0) ? q - 1 : q;
}
inline i128 ceilDiv128(i128 x, i128 d) {
  i128 q = x / d;
  return (x % d > 0) ? q + 1 : q;
}

/// The range of a*x + [elo, ehi] over the box; false if 128 bits overflow
/// (only possible with coefficients and bounds near the ends of i64).
bool formRange(const i128 *a, i128 elo, i128 ehi, const Vars &vars, i128 &lo,
               i128 &hi) {
  lo = elo;
  hi = ehi;
  for (unsigned k = 0; k < kNumVars; ++k) {
    if (a[k] == 0)
      continue;
    i128 p, q;
    if (__builtin_mul_overflow(a[k], static_cast<i128>(vars.lo[k]), &p) ||
        __builtin_mul_overflow(a[k], static_cast<i128>(vars.hi[k]), &q))
      return false;
    if (a[k] < 0)
      std::swap(p, q);
    if (__builtin_add_overflow(lo, p, &lo) ||
        __builtin_add_overflow(hi, q, &hi))
      return false;
  }
  return true;
}

inline bool fitsI64(i128 v) { return v >= kI64Min && v <= kI64Max; }

/// The abstract value of a 128-bit intermediate: the intersection of what its
/// form and its interval say, or the full range if that leaves i64 (the
/// concrete value may have wrapped).
AVal finish(const Wide &w, const Vars &vars) {
  i128 lo = w.lo, hi = w.hi;
  bool have = w.rangeOk;
  if (w.formOk) {
    i128 flo, fhi;
    if (formRange(w.a, w.elo, w.ehi, vars, flo, fhi)) {
      if (have) {
        lo = max128(lo, flo);
        hi = min128(hi, fhi);
      } else {
        lo = flo;
        hi = fhi;
        have = true;
      }
    }
  }
  if (!have || lo > hi || !fitsI64(lo) || !fitsI64(hi))
    return top();
  if (lo == hi)
    return point(static_cast<int64_t>(lo));
  bool keep = w.formOk && fitsI64(w.elo) && fitsI64(w.ehi);
  bool anyVar = false;
  for (unsigned k = 0; k < kNumVars && keep; ++k) {
    keep = fitsI64(w.a[k]);
    anyVar |= w.a[k] != 0;
  }
  if (!keep || !anyVar)
    return interval(static_cast<int64_t>(lo), static_cast<int64_t>(hi));
  AVal r;
  for (unsigned k = 0; k < kNumVars; ++k)
    r.a[k] = static_cast<int64_t>(w.a[k]);
  r.elo = static_cast<int64_t>(w.elo);
  r.ehi = static_cast<int64_t>(w.ehi);
  r.lo = static_cast<int64_t>(lo);
  r.hi = static_cast<int64_t>(hi);
  return r;
}

Wide widen(const AVal &x) {
  Wide w;
  for (unsigned k = 0; k < kNumVars; ++k)
    w.a[k] = x.a[k];
  w.elo = x.elo;
  w.ehi = x.ehi;
  w.formOk = true;
  w.lo = x.lo;
  w.hi = x.hi;
  w.rangeOk = true;
  return w;
}

/// x + sign * y exactly (in 128 bits, which cannot overflow here).
Wide addWide(const AVal &x, const AVal &y, bool subtract) {
  Wide w;
  w.formOk = w.rangeOk = true;
  if (!subtract) {
    for (unsigned k = 0; k < kNumVars; ++k)
      w.a[k] = static_cast<i128>(x.a[k]) + y.a[k];
    w.elo = static_cast<i128>(x.elo) + y.elo;
    w.ehi = static_cast<i128>(x.ehi) + y.ehi;
    w.lo = static_cast<i128>(x.lo) + y.lo;
    w.hi = static_cast<i128>(x.hi) + y.hi;
  } else {
    for (unsigned k = 0; k < kNumVars; ++k)
      w.a[k] = static_cast<i128>(x.a[k]) - y.a[k];
    w.elo = static_cast<i128>(x.elo) - y.ehi;
    w.ehi = static_cast<i128>(x.ehi) - y.elo;
    w.lo = static_cast<i128>(x.lo) - y.hi;
    w.hi = static_cast<i128>(x.hi) - y.lo;
  }
  return w;
}

/// The range of the mathematical difference x - y (not wrapped): what every
/// comparison, min and max decides from. Uses the forms, so that a variable
/// on both sides cancels.
void diffRange(const AVal &x, const AVal &y, const Vars &vars, i128 &lo,
               i128 &hi, Wide *form = nullptr) {
  Wide w = addWide(x, y, /*subtract=*/true);
  lo = w.lo;
  hi = w.hi;
  i128 flo, fhi;
  if ((x.hasVars() || y.hasVars()) &&
      formRange(w.a, w.elo, w.ehi, vars, flo, fhi)) {
    lo = max128(lo, flo);
    hi = min128(hi, fhi);
  }
  if (form)
    *form = w;
}

bool sameForm(const AVal &x, const AVal &y) {
  return x.a[0] == y.a[0] && x.a[1] == y.a[1] && x.a[2] == y.a[2] &&
         x.a[3] == y.a[3];
}

/// x * k for a constant k.
AVal scale(const AVal &x, int64_t k, const Vars &vars) {
  Wide w;
  w.formOk = w.rangeOk = true;
  for (unsigned j = 0; j < kNumVars; ++j)
    w.a[j] = static_cast<i128>(x.a[j]) * k;
  i128 e0 = static_cast<i128>(x.elo) * k, e1 = static_cast<i128>(x.ehi) * k;
  i128 r0 = static_cast<i128>(x.lo) * k, r1 = static_cast<i128>(x.hi) * k;
  w.elo = min128(e0, e1);
  w.ehi = max128(e0, e1);
  w.lo = min128(r0, r1);
  w.hi = max128(r0, r1);
  return finish(w, vars);
}

AVal mul(const AVal &x, const AVal &y, const Vars &vars) {
  if (y.isPoint())
    return scale(x, y.lo, vars);
  if (x.isPoint())
    return scale(y, x.lo, vars);
  i128 p[4] = {static_cast<i128>(x.lo) * y.lo, static_cast<i128>(x.lo) * y.hi,
               static_cast<i128>(x.hi) * y.lo, static_cast<i128>(x.hi) * y.hi};
  Wide w;
  w.rangeOk = true;
  w.lo = min128(min128(p[0], p[1]), min128(p[2], p[3]));
  w.hi = max128(max128(p[0], p[1]), max128(p[2], p[3]));
  return finish(w, vars);
}

enum class Round { Floor, Ceil };

inline i128 roundDiv(i128 x, i128 d, Round r) {
  return r == Round::Floor ? floorDiv128(x, d) : ceilDiv128(x, d);
}

/// Splits x's form as d * (q . vars) + H with H = r . vars + e, |r_k| < d,
/// and returns the window range [m1, m2] of round(H / d). Tries truncated,
/// floor and ceiling residues and keeps the narrowest window range (exact
/// when m1 == m2). Returns false if H's range overflows.
bool splitForm(const AVal &x, int64_t d, Round round, const Vars &vars,
               i128 q[kNumVars], i128 r[kNumVars], i128 &m1, i128 &m2) {
  bool found = false;
  for (int scheme = 0; scheme < 3; ++scheme) {
    i128 qs[kNumVars], rs[kNumVars];
    bool differs = scheme == 0;
    for (unsigned k = 0; k < kNumVars; ++k) {
      int64_t a = x.a[k];
      int64_t qt = a / d, rt = a % d; // truncated
      if (scheme == 1 && rt < 0)      // floor residues in [0, d)
        --qt, rt += d, differs = true;
      if (scheme == 2 && rt > 0) // ceiling residues in (-d, 0]
        ++qt, rt -= d, differs = true;
      qs[k] = qt;
      rs[k] = rt;
    }
    if (!differs)
      continue;
    i128 hlo, hhi;
    if (!formRange(rs, x.elo, x.ehi, vars, hlo, hhi))
      continue;
    i128 w1 = roundDiv(hlo, d, round), w2 = roundDiv(hhi, d, round);
    if (!found || w2 - w1 < m2 - m1) {
      found = true;
      m1 = w1;
      m2 = w2;
      std::copy(qs, qs + kNumVars, q);
      std::copy(rs, rs + kNumVars, r);
    }
    if (m1 == m2)
      break;
  }
  return found;
}

/// round(x / d) for a constant d > 1.
AVal divide(const AVal &x, int64_t d, Round round, const Vars &vars) {
  i128 qlo = roundDiv(x.lo, d, round), qhi = roundDiv(x.hi, d, round);
  if (qlo == qhi)
    return point(static_cast<int64_t>(qlo));
  Wide w;
  w.rangeOk = true;
  w.lo = qlo;
  w.hi = qhi;
  i128 q[kNumVars], r[kNumVars], m1, m2;
  if (x.hasVars() && splitForm(x, d, round, vars, q, r, m1, m2)) {
    // x / d = q . vars + round(H / d), round(H / d) in [m1, m2].
    std::copy(q, q + kNumVars, w.a);
    w.elo = m1;
    w.ehi = m2;
    w.formOk = true;
  }
  return finish(w, vars);
}

/// x - d * round(x / d) for a constant d > 1: the floor modulo (in [0, d)) or
/// the remainder of ceiling division (in (-d, 0]).
AVal remainder(const AVal &x, int64_t d, Round round, const Vars &vars) {
  i128 qlo = roundDiv(x.lo, d, round), qhi = roundDiv(x.hi, d, round);
  Wide w;
  if (qlo == qhi) {
    // One window: x - d * m, with x's whole form.
    w = widen(x);
    i128 shift = qlo * d;
    w.elo -= shift;
    w.ehi -= shift;
    w.lo -= shift;
    w.hi -= shift;
    return finish(w, vars);
  }
  w.rangeOk = true;
  w.lo = round == Round::Floor ? 0 : -(d - 1);
  w.hi = round == Round::Floor ? d - 1 : 0;
  i128 q[kNumVars], r[kNumVars], m1, m2;
  if (x.hasVars() && splitForm(x, d, round, vars, q, r, m1, m2)) {
    // x - d * round(x / d) = H - d * round(H / d), round(H / d) in [m1, m2].
    std::copy(r, r + kNumVars, w.a);
    w.elo = static_cast<i128>(x.elo) - m2 * d;
    w.ehi = static_cast<i128>(x.ehi) - m1 * d;
    w.formOk = true;
  }
  return finish(w, vars);
}

AVal negate(const AVal &x, const Vars &vars) {
  return finish(addWide(point(0), x, /*subtract=*/true), vars);
}

/// Signs: 1 if every value is >= 0, -1 if every value is < 0, 0 if mixed.
inline int signClass(const AVal &x) {
  return x.lo >= 0 ? 1 : (x.hi < 0 ? -1 : 0);
}

/// Smallest 2^k - 1 >= v, for v >= 0.
inline int64_t lowMask(int64_t v) {
  uint64_t m = static_cast<uint64_t>(v);
  m |= m >> 1;
  m |= m >> 2;
  m |= m >> 4;
  m |= m >> 8;
  m |= m >> 16;
  m |= m >> 32;
  return static_cast<int64_t>(m);
}

AVal hull(const AVal &x, const AVal &y) {
  AVal r = interval(std::min(x.lo, y.lo), std::max(x.hi, y.hi));
  if (sameForm(x, y) && x.hasVars()) {
    std::copy(x.a, x.a + kNumVars, r.a);
    r.elo = std::min(x.elo, y.elo);
    r.ehi = std::max(x.ehi, y.ehi);
  }
  return r;
}

/// Signed min or max, exact when one operand dominates the other.
AVal minMax(const AVal &x, const AVal &y, bool isMax, const Vars &vars) {
  i128 dlo, dhi;
  diffRange(x, y, vars, dlo, dhi);
  if (dhi <= 0)
    return isMax ? y : x;
  if (dlo >= 0)
    return isMax ? x : y;
  AVal r = isMax ? interval(std::max(x.lo, y.lo), std::max(x.hi, y.hi))
                 : interval(std::min(x.lo, y.lo), std::min(x.hi, y.hi));
  if (sameForm(x, y) && x.hasVars()) {
    // min(f + ex, f + ey) = f + min(ex, ey).
    std::copy(x.a, x.a + kNumVars, r.a);
    r.elo = isMax ? std::max(x.elo, y.elo) : std::min(x.elo, y.elo);
    r.ehi = isMax ? std::max(x.ehi, y.ehi) : std::min(x.ehi, y.ehi);
  }
  return r;
}

AVal boolean(bool canBeFalse, bool canBeTrue) {
  if (!canBeFalse)
    return point(1);
  if (!canBeTrue)
    return point(0);
  return interval(0, 1);
}

inline i128 gcd128(i128 x, i128 y) {
  x = x < 0 ? -x : x;
  y = y < 0 ? -y : y;
  while (y != 0) {
    i128 t = x % y;
    x = y;
    y = t;
  }
  return x;
}

/// Signed comparison x < y (strict) or x <= y, from the range of x - y.
AVal compareSigned(const AVal &x, const AVal &y, bool strict,
                   const Vars &vars) {
  i128 dlo, dhi;
  diffRange(x, y, vars, dlo, dhi);
  if (strict)
    return boolean(/*canBeFalse=*/dhi >= 0, /*canBeTrue=*/dlo < 0);
  return boolean(/*canBeFalse=*/dhi > 0, /*canBeTrue=*/dlo <= 0);
}

AVal compareEq(const AVal &x, const AVal &y, bool negated, const Vars &vars) {
  i128 dlo, dhi;
  Wide w;
  diffRange(x, y, vars, dlo, dhi, &w);
  bool canBeEqual = dlo <= 0 && dhi >= 0;
  bool canDiffer = !(dlo == 0 && dhi == 0);
  if (canBeEqual && w.elo == w.ehi) {
    // x - y = sum c_k x_k + e exactly: zero needs gcd(c) to divide e.
    i128 g = 0;
    for (unsigned k = 0; k < kNumVars; ++k)
      g = gcd128(g, w.a[k]);
    if (g > 1 && w.elo % g != 0)
      canBeEqual = false;
  }
  if (negated)
    return boolean(/*canBeFalse=*/canBeEqual, /*canBeTrue=*/canDiffer);
  return boolean(/*canBeFalse=*/canDiffer, /*canBeTrue=*/canBeEqual);
}

/// Unsigned x < y or x <= y: the signed order where both have one sign, a
/// negative value (>= 2^63 unsigned) above every non-negative one.
AVal compareUnsigned(const AVal &x, const AVal &y, bool strict,
                     const Vars &vars) {
  int sx = signClass(x), sy = signClass(y);
  if (sx != 0 && sx == sy)
    return compareSigned(x, y, strict, vars);
  if (sx == 1 && sy == -1)
    return point(1);
  if (sx == -1 && sy == 1)
    return point(0);
  return interval(0, 1);
}

AVal minMaxUnsigned(const AVal &x, const AVal &y, bool isMax,
                    const Vars &vars) {
  int sx = signClass(x), sy = signClass(y);
  if (sx != 0 && sx == sy)
    return minMax(x, y, isMax, vars);
  if (sx == 1 && sy == -1)
    return isMax ? y : x;
  if (sx == -1 && sy == 1)
    return isMax ? x : y;
  return hull(x, y);
}

AVal bitwise(Op op, const AVal &x, const AVal &y) {
  bool xNonNeg = x.lo >= 0, yNonNeg = y.lo >= 0;
  switch (op) {
  case Op::And:
    // The result's bits are a subset of each non-negative operand's.
    if (xNonNeg && yNonNeg)
      return interval(0, std::min(x.hi, y.hi));
    if (xNonNeg)
      return interval(0, x.hi);
    if (yNonNeg)
      return interval(0, y.hi);
    return top();
  case Op::Or:
    if (xNonNeg && yNonNeg)
      return interval(std::max(x.lo, y.lo), lowMask(std::max(x.hi, y.hi)));
    return top();
  default: // Xor
    if (xNonNeg && yNonNeg)
      return interval(0, lowMask(std::max(x.hi, y.hi)));
    return top();
  }
}

//===----------------------------------------------------------------------===//
// The compiled program
//===----------------------------------------------------------------------===//

struct Instr {
  Op op = Op::Add;
  uint32_t dst = 0, a = 0, b = 0, c = 0;
  int64_t divisor = 0;
};

/// One abstract operation over the register file.
AVal apply(const Instr &in, const AVal *regs, const Vars &vars) {
  const AVal &x = regs[in.a];
  unsigned arity = numOperands(in.op);
  const AVal &y = regs[arity > 1 ? in.b : in.a];
  const AVal &z = regs[arity > 2 ? in.c : in.a];
  if (x.isPoint() && y.isPoint() && z.isPoint())
    return point(evaluateMaskOpcode(in.op, x.lo, y.lo, z.lo, in.divisor));
  int64_t d = in.divisor;
  switch (in.op) {
  case Op::Add:
    return finish(addWide(x, y, false), vars);
  case Op::Sub:
    return finish(addWide(x, y, true), vars);
  case Op::Mul:
    return mul(x, y, vars);
  case Op::And:
  case Op::Or:
  case Op::Xor:
    return bitwise(in.op, x, y);
  case Op::MinS:
    return minMax(x, y, false, vars);
  case Op::MaxS:
    return minMax(x, y, true, vars);
  case Op::MinU:
    return minMaxUnsigned(x, y, false, vars);
  case Op::MaxU:
    return minMaxUnsigned(x, y, true, vars);
  case Op::Eq:
    return compareEq(x, y, false, vars);
  case Op::Ne:
    return compareEq(x, y, true, vars);
  case Op::Slt:
    return compareSigned(x, y, true, vars);
  case Op::Sle:
    return compareSigned(x, y, false, vars);
  case Op::Ult:
    return compareUnsigned(x, y, true, vars);
  case Op::Ule:
    return compareUnsigned(x, y, false, vars);
  case Op::Select:
    if (x.isPoint())
      return x.lo ? y : z;
    return hull(y, z);
  case Op::Abs:
    if (x.lo >= 0)
      return x;
    if (x.hi <= 0)
      return negate(x, vars); // full range if x may be INT64_MIN
    if (x.lo == kI64Min)
      return top(); // |INT64_MIN| wraps to INT64_MIN
    return interval(0, std::max(-x.lo, x.hi));
  case Op::FloorDiv:
    return divide(x, d, Round::Floor, vars);
  case Op::FloorMod:
    return remainder(x, d, Round::Floor, vars);
  case Op::CeilDiv:
    return divide(x, d, Round::Ceil, vars);
  case Op::TruncDiv:
    if (x.lo >= 0)
      return divide(x, d, Round::Floor, vars);
    if (x.hi <= 0)
      return divide(x, d, Round::Ceil, vars);
    return interval(x.lo / d, x.hi / d); // truncation is monotone
  case Op::TruncRem:
    if (x.lo >= 0)
      return remainder(x, d, Round::Floor, vars);
    if (x.hi <= 0)
      return remainder(x, d, Round::Ceil, vars);
    // The remainder has the dividend's sign and a smaller magnitude.
    return interval(std::max(x.lo, -(d - 1)), std::min(x.hi, d - 1));
  }
  return top();
}

} // namespace

//===----------------------------------------------------------------------===//
// Compilation
//===----------------------------------------------------------------------===//

namespace {
struct Program {
  /// Registers: [0] = i, [1] = j, [2] = h, then the constants, then one per
  /// instruction result.
  std::vector<int64_t> constants; // registers 3 .. 3 + constants.size()
  std::vector<Instr> code;
  uint32_t numRegs = 3;
  uint32_t resultReg = 0;
  bool causal = false;
};

/// Lowers a mask's DAG (MaskDag, built with x & (2^k - 1) as a modulo) to
/// the register program.
class AbstractCompiler {
public:
  explicit AbstractCompiler(const MaskDag &dag) : dag(dag) {}

  void run(Program &impl);

private:
  using Val = MaskDag::Operand;
  using Node = MaskDag::Node;

  const MaskDag &dag;
};

void AbstractCompiler::run(Program &impl) {
  const std::vector<Node> &nodes = dag.nodes;
  const Val &result = dag.result;

  std::map<int64_t, uint32_t> constantRegs;
  auto constantReg = [&](int64_t v) {
    auto [it, inserted] = constantRegs.try_emplace(
        v, static_cast<uint32_t>(3 + impl.constants.size()));
    if (inserted)
      impl.constants.push_back(v);
    return it->second;
  };
  std::vector<size_t> order;
  for (size_t n = 3; n < nodes.size(); ++n) {
    order.push_back(n);
    for (unsigned k = 0, e = numOperands(nodes[n].op); k < e; ++k)
      if (nodes[n].operands[k].isConst)
        constantReg(nodes[n].operands[k].value);
  }
  if (result.isConst)
    constantReg(result.value);
  std::vector<uint32_t> reg(nodes.size(), 0);
  for (unsigned k = 0; k < 3; ++k)
    reg[k] = k;
  uint32_t next = static_cast<uint32_t>(3 + impl.constants.size());
  for (size_t n : order)
    reg[n] = next++;
  impl.numRegs = next;
  auto regOf = [&](const Val &v) {
    return v.isConst ? constantRegs.at(v.value)
                     : reg[static_cast<size_t>(v.value)];
  };
  for (size_t n : order) {
    const Node &nd = nodes[n];
    Instr in;
    in.op = nd.op;
    in.divisor = nd.divisor;
    in.dst = reg[n];
    unsigned arity = numOperands(nd.op);
    in.a = regOf(nd.operands[0]);
    in.b = arity > 1 ? regOf(nd.operands[1]) : in.a;
    in.c = arity > 2 ? regOf(nd.operands[2]) : in.a;
    impl.code.push_back(in);
  }
  impl.resultReg = regOf(result);
}

} // namespace

//===----------------------------------------------------------------------===//
// AbstractMask
//===----------------------------------------------------------------------===//

struct AbstractMask::Impl : Program {};

AbstractMask::AbstractMask() = default;
AbstractMask::AbstractMask(AbstractMask &&) noexcept = default;
AbstractMask &AbstractMask::operator=(AbstractMask &&) noexcept = default;
AbstractMask::~AbstractMask() = default;

FailureOr<AbstractMask>
AbstractMask::compile(MaskOp mask, const Binding &binding,
                      std::optional<unsigned> component) {
  // MaskDag is the judge of what a mask may contain (and reports it), as for
  // MaskProgram.
  MaskDag::Options options;
  options.lowBitMaskAsModulo = true;
  FailureOr<MaskDag> dag = MaskDag::build(mask, binding, component, options);
  if (failed(dag))
    return failure();
  AbstractMask result;
  result.impl = std::make_unique<Impl>();
  AbstractCompiler(*dag).run(*result.impl);
  result.impl->causal = mask->getParentOfType<PatternOp>().getCausal();
  return result;
}

namespace {

/// The abstract value of stride * u + v over a box, with point variables
/// folded into the constant.
AVal position(const PositionBox &box, unsigned uVar, unsigned vVar,
              const Vars &vars) {
  Wide w;
  w.formOk = true;
  i128 e = 0;
  if (box.u.isPoint())
    e += static_cast<i128>(box.stride) * box.u.lo;
  else
    w.a[uVar] = box.stride;
  if (box.v.isPoint())
    e += box.v.lo;
  else
    w.a[vVar] = 1;
  w.elo = w.ehi = e;
  return finish(w, vars);
}

} // namespace

Tri AbstractMask::evaluate(const PositionBox &query, const PositionBox &key,
                           int64_t head) const {
  assert(impl && "evaluate() on an AbstractMask that was not compiled");
  const Impl &p = *impl;
  Vars vars;
  const Interval *ranges[kNumVars] = {&query.u, &query.v, &key.u, &key.v};
  for (unsigned k = 0; k < kNumVars; ++k) {
    vars.lo[k] = std::min(ranges[k]->lo, ranges[k]->hi);
    vars.hi[k] = std::max(ranges[k]->lo, ranges[k]->hi);
  }

  // The register file: on the stack unless the mask is very large.
  constexpr uint32_t kStackRegs = 64;
  AVal stackRegs[kStackRegs];
  std::unique_ptr<AVal[]> heapRegs;
  AVal *regs = stackRegs;
  if (p.numRegs > kStackRegs) {
    heapRegs.reset(new AVal[p.numRegs]);
    regs = heapRegs.get();
  }
  regs[0] = position(query, 0, 1, vars);
  regs[1] = position(key, 2, 3, vars);
  regs[2] = point(head);

  // Under `causal`, pairs past the diagonal are masked: a box entirely
  // above it needs no further work.
  std::optional<AVal> diagonal;
  if (p.causal) {
    diagonal = compareSigned(regs[1], regs[0], /*strict=*/false, vars);
    if (diagonal->hi == 0)
      return Tri::False;
  }
  for (size_t k = 0; k < p.constants.size(); ++k)
    regs[3 + k] = point(p.constants[k]);
  for (const Instr &in : p.code)
    regs[in.dst] = apply(in, regs, vars);

  const AVal &r = regs[p.resultReg];
  Tri result =
      r.isPoint() ? ((r.lo & 1) ? Tri::True : Tri::False) : Tri::Unknown;
  if (result == Tri::True && diagonal && diagonal->lo == 0)
    result = Tri::Unknown; // some pairs are past the diagonal
  return result;
}
