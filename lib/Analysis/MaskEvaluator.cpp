//===- MaskEvaluator.cpp - evaluate sp masks on concrete positions --------===//
//
// Compiles an `sp.mask` region into a register program and runs it, one pair
// at a time (a scalar interpreter) or over a run of keys of one query row
// (one instruction at a time over vectors of lanes). Compilation folds
// parameters, the sequence length and every constant subexpression, applies
// a few algebraic identities, merges common subexpressions and drops dead
// code, then splits what remains into row-uniform code (depends on i and h
// only) and varying code (depends on j). Division by the constant divisor
// becomes a shift or a multiply-high by a magic number.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Analysis/MaskEvaluator.h"
#include "sparsetx/Analysis/MaskDag.h"
#include "sparsetx/Support/IntMath.h"

#include "mlir/IR/Diagnostics.h"
#include "llvm/Support/MathExtras.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <memory>

using namespace mlir;
using namespace sparsetx;
using namespace sparsetx::sp;

//===----------------------------------------------------------------------===//
// Instructions and their semantics
//===----------------------------------------------------------------------===//

namespace sparsetx::detail {

// Every value is held in an int64_t: i64 values as themselves, i1 values as 0
// or 1 (so bitwise and/or/xor and unsigned comparisons on i1 need no special
// case; signed i1 operations are rewritten into unsigned ones by MaskDag).
using Opcode = MaskOpcode;

/// A constant positive divisor, prepared for division without a hardware
/// divide. Floor division of a by d: with s = a >> 63 (0 or -1), a ^ s is a
/// non-negative 63-bit value (a itself, or -a - 1 for negative a), and
/// floor(a / d) = s ^ ((a ^ s) /u d). The unsigned division of a 63-bit value
/// by a d that is not a power of two is a multiply-high by
/// m = floor(2^(63 + L) / d) + 1 and a shift by L - 1, L = ceil(log2(d))
/// (Granlund and Montgomery 1994, theorem 4.2 with N = 63; m < 2^64).
struct Divisor {
  int64_t value = 1;
  uint64_t magic = 0;
  unsigned shift = 0;
  bool pow2 = true;
};

struct MaskInstr;
using Kernel = void (*)(const MaskInstr &, int64_t *vregs,
                        const int64_t *sregs, unsigned count);

struct MaskInstr {
  Opcode op = Opcode::Add;
  /// Register numbers. In scalar code all are scalar registers; in varying
  /// code dst is a vector register and each operand is a vector or a scalar
  /// register as `vectorOperands` says (bit k for operand k).
  unsigned dst = 0, a = 0, b = 0, c = 0;
  uint8_t vectorOperands = 0;
  Divisor div;
  /// The vector kernel (varying code only).
  Kernel kernel = nullptr;
};

} // namespace sparsetx::detail

using namespace sparsetx::detail;

namespace {

constexpr unsigned kLanes = static_cast<unsigned>(MaskProgram::kLanes);

// Arithmetic wraps: compute in uint64_t, where overflow is defined.
inline int64_t wrap(uint64_t v) { return static_cast<int64_t>(v); }
inline uint64_t u(int64_t v) { return static_cast<uint64_t>(v); }

#define SPARSETX_BINARY_FN(NAME, EXPR)                                         \
  struct NAME {                                                                \
    static int64_t apply(int64_t a, int64_t b) { return EXPR; }                \
  };
SPARSETX_BINARY_FN(AddFn, wrap(u(a) + u(b)))
SPARSETX_BINARY_FN(SubFn, wrap(u(a) - u(b)))
SPARSETX_BINARY_FN(MulFn, wrap(u(a) * u(b)))
SPARSETX_BINARY_FN(AndFn, a &b)
SPARSETX_BINARY_FN(OrFn, a | b)
SPARSETX_BINARY_FN(XorFn, a ^ b)
SPARSETX_BINARY_FN(MinSFn, a < b ? a : b)
SPARSETX_BINARY_FN(MaxSFn, a < b ? b : a)
SPARSETX_BINARY_FN(MinUFn, u(a) < u(b) ? a : b)
SPARSETX_BINARY_FN(MaxUFn, u(a) < u(b) ? b : a)
SPARSETX_BINARY_FN(EqFn, int64_t(a == b))
SPARSETX_BINARY_FN(NeFn, int64_t(a != b))
SPARSETX_BINARY_FN(SltFn, int64_t(a < b))
SPARSETX_BINARY_FN(SleFn, int64_t(a <= b))
SPARSETX_BINARY_FN(UltFn, int64_t(u(a) < u(b)))
SPARSETX_BINARY_FN(UleFn, int64_t(u(a) <= u(b)))
#undef SPARSETX_BINARY_FN

#define SPARSETX_BINARY_OPS(X)                                                 \
  X(Add, AddFn)                                                                \
  X(Sub, SubFn)                                                                \
  X(Mul, MulFn)                                                                \
  X(And, AndFn)                                                                \
  X(Or, OrFn)                                                                  \
  X(Xor, XorFn)                                                                \
  X(MinS, MinSFn)                                                              \
  X(MaxS, MaxSFn)                                                              \
  X(MinU, MinUFn)                                                              \
  X(MaxU, MaxUFn)                                                              \
  X(Eq, EqFn)                                                                  \
  X(Ne, NeFn)                                                                  \
  X(Slt, SltFn)                                                                \
  X(Sle, SleFn)                                                                \
  X(Ult, UltFn)                                                                \
  X(Ule, UleFn)

#define SPARSETX_DIV_OPS(X)                                                    \
  X(FloorDiv)                                                                  \
  X(FloorMod)                                                                  \
  X(CeilDiv)                                                                   \
  X(TruncDiv)                                                                  \
  X(TruncRem)

struct AbsFn {
  // math.absi of INT64_MIN is INT64_MIN (it wraps).
  static int64_t apply(int64_t a) { return a < 0 ? wrap(0 - u(a)) : a; }
};

inline int64_t select(int64_t cond, int64_t t, int64_t f) {
  // Branch-free so that the lane loop vectorizes; cond is 0 or 1.
  return f ^ ((t ^ f) & -cond);
}

Divisor makeDivisor(int64_t d) {
  assert(d > 1 && "divisors 1 and below are handled at compile");
  Divisor div;
  div.value = d;
  if (llvm::isPowerOf2_64(static_cast<uint64_t>(d))) {
    div.pow2 = true;
    div.shift = llvm::Log2_64(static_cast<uint64_t>(d));
    return div;
  }
  unsigned l = llvm::Log2_64_Ceil(static_cast<uint64_t>(d));
  unsigned __int128 m = (static_cast<unsigned __int128>(1) << (63 + l)) /
                            static_cast<uint64_t>(d) +
                        1;
  div.pow2 = false;
  div.magic = static_cast<uint64_t>(m);
  div.shift = l - 1;
  return div;
}

template <bool Pow2> inline int64_t floorDivBy(const Divisor &d, int64_t a) {
  if constexpr (Pow2) {
    return a >> d.shift; // arithmetic shift: floor division
  } else {
    int64_t s = a >> 63;
    uint64_t n = u(a ^ s);
    uint64_t q = static_cast<uint64_t>(
                     (static_cast<unsigned __int128>(n) * d.magic) >> 64) >>
                 d.shift;
    return static_cast<int64_t>(q) ^ s;
  }
}

template <Opcode Op, bool Pow2>
inline int64_t divApply(const Divisor &d, int64_t a) {
  if constexpr (Op == Opcode::FloorMod && Pow2)
    return a & (d.value - 1);
  int64_t q = floorDivBy<Pow2>(d, a);
  if constexpr (Op == Opcode::FloorDiv)
    return q;
  int64_t r = wrap(u(a) - u(q) * u(d.value)); // floor remainder, in [0, d)
  if constexpr (Op == Opcode::FloorMod)
    return r;
  if constexpr (Op == Opcode::CeilDiv)
    return q + (r != 0);
  // Truncation rounds toward zero: one above the floor for a negative a that
  // d does not divide. q + 1 cannot overflow since d > 1.
  int64_t t = q + (a < 0 && r != 0);
  if constexpr (Op == Opcode::TruncDiv)
    return t;
  return wrap(u(a) - u(t) * u(d.value)); // TruncRem
}

/// Scalar semantics of one instruction; the single definition that folding,
/// the scalar interpreter and (through the same functors) the vector kernels
/// share.
int64_t applyOp(const MaskInstr &in, int64_t a, int64_t b, int64_t c) {
  switch (in.op) {
#define SPARSETX_CASE(OP, FN)                                                  \
  case Opcode::OP:                                                             \
    return FN::apply(a, b);
    SPARSETX_BINARY_OPS(SPARSETX_CASE)
#undef SPARSETX_CASE
  case Opcode::Select:
    return a ? b : c;
  case Opcode::Abs:
    return AbsFn::apply(a);
#define SPARSETX_CASE(OP)                                                      \
  case Opcode::OP:                                                             \
    return in.div.pow2 ? divApply<Opcode::OP, true>(in.div, a)                 \
                       : divApply<Opcode::OP, false>(in.div, a);
    SPARSETX_DIV_OPS(SPARSETX_CASE)
#undef SPARSETX_CASE
  }
  llvm_unreachable("unknown mask opcode");
}

//===----------------------------------------------------------------------===//
// Vector kernels
//===----------------------------------------------------------------------===//

// The lane loops compare and select 64-bit integers, which baseline x86-64
// (SSE2) cannot do in vector registers; GCC's function multiversioning adds an
// AVX2 clone of each loop, picked once at load time, and keeps the baseline
// one for older machines. Elsewhere (e.g. AArch64, whose baseline vector ISA
// has 64-bit compares) the plain loops vectorize as they are.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&         \
    defined(__linux__)
#define SPARSETX_LANE_LOOP __attribute__((target_clones("avx2", "default")))
#else
#define SPARSETX_LANE_LOOP
#endif

/// An operand of a lane loop: a vector register or a broadcast scalar. The
/// scalar is copied into a local so the loop does not reload it (stores to the
/// destination lanes could alias the register file as far as C++ knows).
template <bool IsVector> struct Src {
  const int64_t *p = nullptr;
  int64_t s = 0;
  Src(unsigned reg, const int64_t *v, const int64_t *sregs) {
    if constexpr (IsVector)
      p = v + static_cast<size_t>(reg) * kLanes;
    else
      s = sregs[reg];
  }
  int64_t operator[](unsigned k) const {
    if constexpr (IsVector)
      return p[k];
    else
      return s;
  }
};

inline int64_t *dstOf(const MaskInstr &in, int64_t *v) {
  return v + static_cast<size_t>(in.dst) * kLanes;
}

template <typename Fn, bool AV, bool BV>
SPARSETX_LANE_LOOP void binaryKernel(const MaskInstr &in, int64_t *v,
                                     const int64_t *s, unsigned count) {
  Src<AV> a(in.a, v, s);
  Src<BV> b(in.b, v, s);
  int64_t *d = dstOf(in, v);
  for (unsigned k = 0; k < count; ++k)
    d[k] = Fn::apply(a[k], b[k]);
}

template <bool CV, bool TV, bool FV>
SPARSETX_LANE_LOOP void selectKernel(const MaskInstr &in, int64_t *v,
                                     const int64_t *s, unsigned count) {
  Src<CV> c(in.a, v, s);
  Src<TV> t(in.b, v, s);
  Src<FV> f(in.c, v, s);
  int64_t *d = dstOf(in, v);
  for (unsigned k = 0; k < count; ++k)
    d[k] = select(c[k], t[k], f[k]);
}

SPARSETX_LANE_LOOP void absKernel(const MaskInstr &in, int64_t *v,
                                  const int64_t *, unsigned count) {
  const int64_t *a = v + static_cast<size_t>(in.a) * kLanes;
  int64_t *d = dstOf(in, v);
  for (unsigned k = 0; k < count; ++k)
    d[k] = AbsFn::apply(a[k]);
}

template <Opcode Op, bool Pow2>
SPARSETX_LANE_LOOP void divKernel(const MaskInstr &in, int64_t *v,
                                  const int64_t *, unsigned count) {
  const Divisor div = in.div;
  const int64_t *a = v + static_cast<size_t>(in.a) * kLanes;
  int64_t *d = dstOf(in, v);
  for (unsigned k = 0; k < count; ++k)
    d[k] = divApply<Op, Pow2>(div, a[k]);
}

template <typename Fn> Kernel pickBinary(uint8_t vec) {
  switch (vec & 3) {
  case 3:
    return &binaryKernel<Fn, true, true>;
  case 1:
    return &binaryKernel<Fn, true, false>;
  case 2:
    return &binaryKernel<Fn, false, true>;
  }
  llvm_unreachable("a varying instruction has a vector operand");
}

Kernel pickSelect(uint8_t vec) {
  switch (vec & 7) {
#define SPARSETX_CASE(N)                                                       \
  case N:                                                                      \
    return &selectKernel<(N & 1) != 0, (N & 2) != 0, (N & 4) != 0>;
    SPARSETX_CASE(1)
    SPARSETX_CASE(2)
    SPARSETX_CASE(3)
    SPARSETX_CASE(4)
    SPARSETX_CASE(5)
    SPARSETX_CASE(6)
    SPARSETX_CASE(7)
#undef SPARSETX_CASE
  }
  llvm_unreachable("a varying instruction has a vector operand");
}

Kernel pickKernel(const MaskInstr &in) {
  switch (in.op) {
#define SPARSETX_CASE(OP, FN)                                                  \
  case Opcode::OP:                                                             \
    return pickBinary<FN>(in.vectorOperands);
    SPARSETX_BINARY_OPS(SPARSETX_CASE)
#undef SPARSETX_CASE
  case Opcode::Select:
    return pickSelect(in.vectorOperands);
  case Opcode::Abs:
    return &absKernel;
#define SPARSETX_CASE(OP)                                                      \
  case Opcode::OP:                                                             \
    return in.div.pow2 ? &divKernel<Opcode::OP, true>                          \
                       : &divKernel<Opcode::OP, false>;
    SPARSETX_DIV_OPS(SPARSETX_CASE)
#undef SPARSETX_CASE
  }
  llvm_unreachable("unknown mask opcode");
}

const char *opcodeName(Opcode op) {
  switch (op) {
#define SPARSETX_CASE(OP, FN)                                                  \
  case Opcode::OP:                                                             \
    return #OP;
    SPARSETX_BINARY_OPS(SPARSETX_CASE)
#undef SPARSETX_CASE
  case Opcode::Select:
    return "Select";
  case Opcode::Abs:
    return "Abs";
#define SPARSETX_CASE(OP)                                                      \
  case Opcode::OP:                                                             \
    return #OP;
    SPARSETX_DIV_OPS(SPARSETX_CASE)
#undef SPARSETX_CASE
  }
  return "?";
}

/// j = jBegin + k for the lanes of one chunk (wrapping).
SPARSETX_LANE_LOOP void fillKeys(int64_t *key, uint64_t j0, unsigned count) {
  for (unsigned k = 0; k < count; ++k)
    key[k] = wrap(j0 + k);
}

SPARSETX_LANE_LOOP void fillKeysStrided(int64_t *key, uint64_t j0,
                                        uint64_t stride, unsigned count) {
  for (unsigned k = 0; k < count; ++k)
    key[k] = wrap(j0 + k * stride);
}

/// Narrows a lane vector of 0/1 values to the caller's bytes.
SPARSETX_LANE_LOOP void storeMask(uint8_t *out, const int64_t *v,
                                  unsigned count) {
  for (unsigned k = 0; k < count; ++k)
    out[k] = static_cast<uint8_t>(v[k]);
}

} // namespace

//===----------------------------------------------------------------------===//
// Compilation
//===----------------------------------------------------------------------===//

namespace sparsetx {

/// Lowers a mask's DAG (MaskDag) to a MaskProgram: register assignment, and
/// the split into row-uniform and varying code.
class MaskCompiler {
public:
  MaskCompiler(MaskOp mask, const Binding &binding,
               std::optional<unsigned> component)
      : mask(mask), binding(binding), component(component) {}

  FailureOr<MaskProgram> run();

private:
  using Val = MaskDag::Operand;
  using Node = MaskDag::Node;
  static constexpr int64_t kKeyNode = MaskDag::kKeyNode;

  MaskOp mask;
  const Binding &binding;
  std::optional<unsigned> component;
};

} // namespace sparsetx

FailureOr<MaskProgram> MaskCompiler::run() {
  FailureOr<MaskDag> built = MaskDag::build(mask, binding, component);
  if (failed(built))
    return failure();
  const std::vector<Node> &nodes = built->nodes;
  const Val &result = built->result;
  PatternOp pattern = mask->getParentOfType<PatternOp>();

  MaskProgram prog;
  prog.causal = pattern.getCausal();
  prog.perHead = mask.isPerHead();
  prog.layer = mask.getLayer();
  prog.seqLen = built->seqLen;

  // Scalar registers: i, j, h, the constant pool, then one per live node.
  prog.scalarInit.assign(3, 0);
  // Not a DenseMap: INT64_MAX and INT64_MIN are its reserved keys.
  std::map<int64_t, unsigned> constantRegs;
  auto constantReg = [&](int64_t v) {
    auto [it, inserted] = constantRegs.try_emplace(
        v, static_cast<unsigned>(prog.scalarInit.size()));
    if (inserted)
      prog.scalarInit.push_back(v);
    return it->second;
  };
  std::vector<unsigned> scalarReg(nodes.size(), 0);
  for (unsigned k = 0; k < 3; ++k)
    scalarReg[k] = k;
  auto regOf = [&](const Val &v) {
    return v.isConst ? constantReg(v.value) : scalarReg[v.value];
  };
  std::vector<size_t> order; // live non-argument nodes in program order
  for (size_t n = 3; n < nodes.size(); ++n) {
    order.push_back(n);
    for (unsigned k = 0, e = numOperands(nodes[n].op); k < e; ++k)
      if (nodes[n].operands[k].isConst)
        constantReg(nodes[n].operands[k].value);
  }
  prog.resultReg = result.isConst ? constantReg(result.value) : 0;
  for (size_t n : order)
    scalarReg[n] = static_cast<unsigned>(prog.scalarInit.size()),
    prog.scalarInit.push_back(0);
  if (!result.isConst)
    prog.resultReg = scalarReg[result.value];

  // Vector registers for the values that depend on j, reused once dead.
  std::vector<size_t> lastUse(nodes.size(), 0);
  for (size_t pos = 0; pos < order.size(); ++pos) {
    const Node &nd = nodes[order[pos]];
    for (unsigned k = 0, e = numOperands(nd.op); k < e; ++k)
      if (!nd.operands[k].isConst)
        lastUse[nd.operands[k].value] = pos;
  }
  if (!result.isConst)
    lastUse[result.value] = SIZE_MAX;
  std::vector<unsigned> vectorReg(nodes.size(), 0);
  std::vector<unsigned> freeRegs;
  auto allocate = [&]() {
    if (!freeRegs.empty()) {
      unsigned r = freeRegs.back();
      freeRegs.pop_back();
      return r;
    }
    return prog.numVectorRegs++;
  };
  if (built->argUsed[kKeyNode]) {
    vectorReg[kKeyNode] = allocate();
    prog.keyVectorReg = vectorReg[kKeyNode];
  }

  for (size_t pos = 0; pos < order.size(); ++pos) {
    size_t n = order[pos];
    const Node &nd = nodes[n];
    MaskInstr in;
    in.op = nd.op;
    if (numOperands(nd.op) == 1 && nd.op != Opcode::Abs)
      in.div = makeDivisor(nd.divisor);
    unsigned arity = numOperands(nd.op);
    std::array<unsigned, 3> sregs = {0, 0, 0};
    for (unsigned k = 0; k < arity; ++k)
      sregs[k] = regOf(nd.operands[k]);
    in.dst = scalarReg[n];
    in.a = sregs[0];
    in.b = sregs[1];
    in.c = sregs[2];
    prog.scalarCode.push_back(in);
    if (!nd.dependsOnKey()) {
      prog.uniformCode.push_back(in);
      continue;
    }

    MaskInstr vin = in;
    std::array<unsigned *, 3> slots = {&vin.a, &vin.b, &vin.c};
    for (unsigned k = 0; k < arity; ++k) {
      const Val &v = nd.operands[k];
      if (!v.isConst && nodes[v.value].dependsOnKey()) {
        *slots[k] = vectorReg[v.value];
        vin.vectorOperands |= 1u << k;
      }
    }
    // Free the operands that die here before allocating the result, so the
    // result may reuse one of their registers (the kernels are elementwise).
    for (unsigned k = 0; k < arity; ++k) {
      const Val &v = nd.operands[k];
      if (v.isConst || !nodes[v.value].dependsOnKey() ||
          lastUse[v.value] != pos)
        continue;
      bool seen = false;
      for (unsigned q = 0; q < k; ++q)
        seen |= nd.operands[q] == v;
      if (!seen)
        freeRegs.push_back(vectorReg[v.value]);
    }
    vectorReg[n] = allocate();
    vin.dst = vectorReg[n];
    vin.kernel = pickKernel(vin);
    prog.varyingCode.push_back(vin);
  }
  if (!result.isConst && nodes[result.value].dependsOnKey())
    prog.resultVectorReg = vectorReg[result.value];
  return prog;
}

//===----------------------------------------------------------------------===//
// MaskProgram
//===----------------------------------------------------------------------===//

MaskProgram::MaskProgram() = default;
MaskProgram::MaskProgram(const MaskProgram &) = default;
MaskProgram::MaskProgram(MaskProgram &&) noexcept = default;
MaskProgram &MaskProgram::operator=(const MaskProgram &) = default;
MaskProgram &MaskProgram::operator=(MaskProgram &&) noexcept = default;
MaskProgram::~MaskProgram() = default;

FailureOr<MaskProgram> MaskProgram::compile(MaskOp mask,
                                            const Binding &binding,
                                            std::optional<unsigned> component) {
  return MaskCompiler(mask, binding, component).run();
}

size_t MaskProgram::getNumInstructions() const { return scalarCode.size(); }

namespace {
/// Scalar registers for one evaluation; the program's registers are few, so
/// they normally live on the stack.
using ScalarFile = llvm::SmallVector<int64_t, 64>;
} // namespace

bool MaskProgram::evaluate(int64_t i, int64_t j, int64_t h) const {
  if (causal && j > i)
    return false;
  ScalarFile s(scalarInit.begin(), scalarInit.end());
  s[0] = i;
  s[1] = j;
  s[2] = h;
  for (const MaskInstr &in : scalarCode)
    s[in.dst] = applyOp(in, s[in.a], s[in.b], s[in.c]);
  return s[resultReg] & 1;
}

void MaskProgram::evaluateRow(int64_t i, int64_t h, int64_t jBegin,
                              int64_t count, uint8_t *out) const {
  evaluateRow(i, h, jBegin, /*jStride=*/1, count, out);
}

void MaskProgram::evaluateRow(int64_t i, int64_t h, int64_t jBegin,
                              int64_t jStride, int64_t count,
                              uint8_t *out) const {
  assert(jStride >= 1 && "the key stride must be positive");
  if (count <= 0)
    return;
  // Under `causal`, keys past the diagonal are masked: evaluate only the
  // keys jBegin + k * jStride <= i. (Unsigned difference: exact for any
  // i >= jBegin.)
  int64_t active = count;
  if (causal) {
    if (jBegin > i) {
      active = 0;
    } else {
      uint64_t steps = (u(i) - u(jBegin)) / u(jStride);
      active = steps >= u(count) ? count : static_cast<int64_t>(steps + 1);
    }
    std::memset(out + active, 0, static_cast<size_t>(count - active));
  }
  if (active == 0)
    return;

  ScalarFile s(scalarInit.begin(), scalarInit.end());
  s[0] = i;
  s[2] = h;
  for (const MaskInstr &in : uniformCode)
    s[in.dst] = applyOp(in, s[in.a], s[in.b], s[in.c]);
  if (!resultVectorReg) {
    std::memset(out, static_cast<int>(s[resultReg] & 1),
                static_cast<size_t>(active));
    return;
  }

  // The vector register file: on the stack for the usual handful of live
  // values, on the heap for big masks.
  constexpr unsigned kStackRegs = 16;
  alignas(64) int64_t stackRegs[kStackRegs * kLanes];
  std::unique_ptr<int64_t[]> heapRegs;
  int64_t *v = stackRegs;
  if (numVectorRegs > kStackRegs) {
    heapRegs.reset(new int64_t[static_cast<size_t>(numVectorRegs) * kLanes]);
    v = heapRegs.get();
  }
  const int64_t *result = v + static_cast<size_t>(*resultVectorReg) * kLanes;
  for (int64_t base = 0; base < active; base += kLanes) {
    unsigned m =
        static_cast<unsigned>(std::min<int64_t>(kLanes, active - base));
    if (keyVectorReg) {
      int64_t *key = v + static_cast<size_t>(*keyVectorReg) * kLanes;
      if (jStride == 1)
        fillKeys(key, u(jBegin) + u(base), m);
      else
        fillKeysStrided(key, u(jBegin) + u(base) * u(jStride), u(jStride), m);
    }
    for (const MaskInstr &in : varyingCode)
      in.kernel(in, v, s.data(), m);
    storeMask(out + base, result, m);
  }
}

void MaskProgram::print(llvm::raw_ostream &os) const {
  auto reg = [&](unsigned r) {
    static const char *const args[] = {"i", "j", "h"};
    if (r < 3)
      os << args[r];
    else
      os << 'r' << r;
  };
  os << "mask program";
  if (layer)
    os << " (layer " << *layer << ')';
  os << (causal ? ", causal" : "") << (perHead ? ", per head" : "") << ":\n";
  for (unsigned r = 3; r < scalarInit.size(); ++r) {
    bool isConst = llvm::none_of(scalarCode, [&](const MaskInstr &in) {
      return in.dst == r;
    });
    if (isConst)
      os << "  r" << r << " = " << scalarInit[r] << '\n';
  }
  for (const MaskInstr &in : scalarCode) {
    bool uniform = llvm::any_of(uniformCode, [&](const MaskInstr &u) {
      return u.dst == in.dst;
    });
    os << "  ";
    reg(in.dst);
    os << " = " << opcodeName(in.op) << ' ';
    reg(in.a);
    unsigned arity = numOperands(in.op);
    if (arity > 1)
      os << ", ", reg(in.b);
    if (arity > 2)
      os << ", ", reg(in.c);
    if (arity == 1 && in.op != Opcode::Abs)
      os << ", " << in.div.value;
    os << (uniform ? "    // per row" : "") << '\n';
  }
  os << "  yield ";
  reg(resultReg);
  os << '\n';
}

//===----------------------------------------------------------------------===//
// PatternEvaluator
//===----------------------------------------------------------------------===//

FailureOr<PatternEvaluator> PatternEvaluator::compile(PatternOp pattern,
                                                      const Binding &binding) {
  PatternEvaluator eval;
  eval.layered = pattern.isLayered();
  eval.causal = pattern.getCausal();
  bool ok = true;
  for (MaskOp mask : pattern.getMasks()) {
    FailureOr<MaskProgram> prog = MaskProgram::compile(mask, binding);
    if (failed(prog)) {
      ok = false; // keep going: report every mask's errors at once
      continue;
    }
    eval.perHead |= prog->isPerHead();
    eval.masks.push_back(std::move(*prog));
  }
  if (!ok)
    return failure();
  if (eval.masks.empty())
    return pattern.emitError() << "the pattern has no mask";
  return eval;
}

const MaskProgram &PatternEvaluator::getMask(int64_t layer) const {
  return masks[static_cast<size_t>(floorMod(layer, getNumMasks()))];
}

//===----------------------------------------------------------------------===//
// Empty rows
//===----------------------------------------------------------------------===//

namespace {

/// Does row i attend to any key in [0, n)? Looks outward from the diagonal in
/// chunks that double in width, since nearly every pattern attends to j = i or
/// a key close to it; a row is only scanned in full when it is (nearly) empty.
bool rowAttendsAny(const MaskProgram &prog, int64_t i, int64_t h, int64_t n) {
  constexpr int64_t kFirstChunk = 32, kMaxChunk = 4096;
  uint8_t buf[kMaxChunk];
  auto any = [&](int64_t count) {
    return std::memchr(buf, 1, static_cast<size_t>(count)) != nullptr;
  };
  int64_t width = kFirstChunk;
  for (int64_t hi = i; hi >= 0; width = std::min(2 * width, kMaxChunk)) {
    int64_t lo = std::max<int64_t>(0, hi - width + 1);
    prog.evaluateRow(i, h, lo, hi - lo + 1, buf);
    if (any(hi - lo + 1))
      return true;
    hi = lo - 1;
  }
  if (prog.isCausal())
    return false;
  width = kFirstChunk;
  for (int64_t lo = i + 1; lo < n; width = std::min(2 * width, kMaxChunk)) {
    int64_t count = std::min(width, n - lo);
    prog.evaluateRow(i, h, lo, count, buf);
    if (any(count))
      return true;
    lo += count;
  }
  return false;
}

} // namespace

LogicalResult sparsetx::verifyNoEmptyRows(PatternOp pattern, int64_t n,
                                          int64_t numHeads) {
  if (n <= 0)
    return pattern.emitError()
           << "the sequence length must be positive, but is " << n;
  bool ok = true;
  for (MaskOp mask : pattern.getMasks()) {
    FailureOr<MaskProgram> prog = MaskProgram::compile(mask, Binding(n));
    if (failed(prog)) {
      ok = false;
      continue;
    }
    if (prog->isPerHead() && numHeads <= 0) {
      mask.emitError() << "the head count must be positive, but is "
                       << numHeads;
      ok = false;
      continue;
    }
    int64_t heads = prog->isPerHead() ? numHeads : 1;
    for (int64_t h = 0; h < heads; ++h) {
      std::optional<int64_t> empty;
      for (int64_t i = 0; i < n && !empty; ++i)
        if (!rowAttendsAny(*prog, i, h, n))
          empty = i;
      if (!empty)
        continue;
      InFlightDiagnostic diag = mask.emitError()
                                << "query row i = " << *empty;
      if (prog->isPerHead())
        diag << " in head " << h;
      else if (std::optional<int64_t> head = mask.getHead())
        diag << " in head " << *head;
      if (std::optional<int64_t> layer = mask.getLayer())
        diag << " of layer " << *layer;
      diag << " attends to no key at n = " << n
           << " (its softmax would be undefined)";
      ok = false;
      break; // one report per mask
    }
  }
  return success(ok);
}
