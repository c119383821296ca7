//===- AbstractMaskTest.cpp - the block-level abstract interpreter --------===//
//
// AbstractMask decides a mask over whole boxes of positions. Its contract is
// soundness (True only if every pair attends, False only if none does), so
// the main test runs thousands of random masks, printed as sp dialect text
// and parsed back, over random boxes and checks every decision against
// exhaustive evaluation with MaskProgram. Precision is what makes it useful:
// the paper's strided and fixed components must be decided on the blocks of
// the index maps that block classification uses. A speed measurement is
// printed, never asserted.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Analysis/AbstractMask.h"
#include "sparsetx/Analysis/IndexMap.h"
#include "sparsetx/Analysis/MaskEvaluator.h"
#include "sparsetx/Dialect/SP/IR/SP.h"

#include "TestUtil.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using namespace mlir;
using namespace sparsetx;

namespace {

const char *triName(Tri t) {
  return t == Tri::True ? "True" : t == Tri::False ? "False" : "Unknown";
}

std::string boxStr(const PositionBox &b) {
  std::ostringstream os;
  os << "{" << b.stride << " * [" << b.u.lo << ", " << b.u.hi << "] + ["
     << b.v.lo << ", " << b.v.hi << "]}";
  return os.str();
}

/// The positions of a box (wrapping, as the evaluator would see them).
std::vector<int64_t> positions(const PositionBox &b) {
  // Counted loops: a bound may be INT64_MAX.
  std::vector<int64_t> out;
  uint64_t nu = static_cast<uint64_t>(b.u.hi) - static_cast<uint64_t>(b.u.lo);
  uint64_t nv = static_cast<uint64_t>(b.v.hi) - static_cast<uint64_t>(b.v.lo);
  for (uint64_t du = 0; du <= nu; ++du)
    for (uint64_t dv = 0; dv <= nv; ++dv)
      out.push_back(
          static_cast<int64_t>(static_cast<uint64_t>(b.stride) *
                                   (static_cast<uint64_t>(b.u.lo) + du) +
                               static_cast<uint64_t>(b.v.lo) + dv));
  return out;
}

/// The exact answer by evaluating every pair.
Tri exhaustive(const MaskProgram &prog, const PositionBox &q,
               const PositionBox &k, int64_t h = 0) {
  bool any = false, all = true;
  std::vector<int64_t> keys = positions(k);
  for (int64_t i : positions(q))
    for (int64_t j : keys) {
      bool v = prog.evaluate(i, j, h);
      any |= v;
      all &= v;
    }
  return all ? Tri::True : any ? Tri::Unknown : Tri::False;
}

PositionBox identityBox(int64_t begin, int64_t size) {
  return PositionBox{1, {begin, begin + size - 1}, Interval::point(0)};
}

//===----------------------------------------------------------------------===//
// Fixture
//===----------------------------------------------------------------------===//

class AbstractMaskTest : public test::PatternTest {
protected:
  /// The abstract and the concrete program of one component.
  struct Compiled {
    AbstractMask abs;
    MaskProgram prog;
  };
  Compiled compile(sp::MaskOp mask, int64_t n, unsigned component) {
    FailureOr<AbstractMask> abs =
        AbstractMask::compile(mask, Binding(n), component);
    FailureOr<MaskProgram> prog =
        MaskProgram::compile(mask, Binding(n), component);
    EXPECT_TRUE(succeeded(abs) && succeeded(prog))
        << (diags.empty() ? "" : diags.back());
    Compiled c;
    if (succeeded(abs))
      c.abs = std::move(*abs);
    if (succeeded(prog))
      c.prog = std::move(*prog);
    return c;
  }

};

//===----------------------------------------------------------------------===//
// Random masks against exhaustive evaluation
//===----------------------------------------------------------------------===//

/// A random mask expression; printed as sp dialect text. The ground truth is
/// MaskProgram on the parsed mask, so no oracle is needed here.
struct Expr {
  enum Kind {
    I,
    J,
    H,
    N,
    Const,
    Param,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    ArithDiv,
    Min,
    Max,
    MinU,
    MaxU,
    Abs,
    SelectInt,
    ExtU,
    ExtS,
    And64,
    Bitwise,
    BoolConst,
    Cmp,
    CmpBool,
    And,
    Or,
    Xor,
    Not,
    SelectBool,
    Trunc,
  };
  Kind kind;
  int64_t value = 0; // constant; divisor; predicate
  std::string name;  // parameter (also a parameter divisor)
  std::vector<int> kids;
  unsigned arithDivision = 0; // index into kArithDivisions
};

using ParamList = std::vector<std::pair<std::string, int64_t>>;
const ParamList &allParams() {
  static const ParamList params = {
      {"l", 8}, {"d", 3}, {"c", 5}, {"a", -2}, {"big", int64_t(1) << 40}};
  return params;
}

const char *const kPredicates[] = {"eq",  "ne",  "slt", "sle", "sgt",
                                   "sge", "ult", "ule", "ugt", "uge"};
const char *const kArithDivisions[] = {"arith.floordivsi", "arith.ceildivsi",
                                       "arith.divsi", "arith.remsi"};

/// Trees biased towards what masks are made of (differences of positions,
/// scaled, divided and compared), with the rarer operations mixed in.
class TreeGen {
public:
  /// `structured` trees are made of positions (rarely constants) under
  /// +, -, * by a constant, / and %, min, max and abs: the hard cases for
  /// the affine reasoning, where nothing folds away.
  TreeGen(uint64_t seed, bool perHead, bool structured)
      : rng(seed), perHead(perHead), structured(structured) {}
  std::vector<Expr> pool;

  int genBool(int depth) {
    unsigned pick = depth <= 0 ? 0 : pickIn(16);
    switch (pick) {
    case 0:
    case 1:
    case 2:
    case 3:
    case 4:
    case 5:
      return add({Expr::Cmp,
                  int64_t(pickIn(10)),
                  "",
                  {genInt(depth - 1), genInt(depth - 1)}});
    case 6:
    case 7:
      return add({Expr::And, 0, "", {genBool(depth - 1), genBool(depth - 1)}});
    case 8:
    case 9:
      return add({Expr::Or, 0, "", {genBool(depth - 1), genBool(depth - 1)}});
    case 10:
    case 11:
      return add({Expr::Not, 0, "", {genBool(depth - 1)}});
    case 12:
      return add({Expr::Xor, 0, "", {genBool(depth - 1), genBool(depth - 1)}});
    case 13:
      return add(
          {Expr::SelectBool,
           0,
           "",
           {genBool(depth - 1), genBool(depth - 1), genBool(depth - 1)}});
    case 14:
      return pickIn(2) ? add({Expr::Trunc, 0, "", {genInt(depth - 1)}})
                       : add({Expr::CmpBool,
                              int64_t(pickIn(10)),
                              "",
                              {genBool(depth - 1), genBool(depth - 1)}});
    default:
      return add({Expr::BoolConst, int64_t(pickIn(2))});
    }
  }

  int genInt(int depth) {
    if (structured)
      return genStructured(depth);
    if (depth <= 0 || pickIn(4) == 0)
      return genLeaf();
    auto bin = [&](Expr::Kind k) {
      return add({k, 0, "", {genInt(depth - 1), genInt(depth - 1)}});
    };
    switch (pickIn(24)) {
    case 0:
    case 1:
    case 2:
      return bin(Expr::Add);
    case 3:
    case 4:
    case 5:
      return bin(Expr::Sub);
    case 6:
    case 7:
      // Mostly by a constant or a parameter.
      return add({Expr::Mul,
                  0,
                  "",
                  {genInt(depth - 1), pickIn(4) ? genSmall() : genInt(0)}});
    case 8:
    case 9:
    case 10:
      return genDivision(Expr::Div, depth);
    case 11:
    case 12:
    case 13:
      return genDivision(Expr::Mod, depth);
    case 14:
      return genDivision(Expr::ArithDiv, depth);
    case 15:
      return bin(Expr::Min);
    case 16:
      return bin(Expr::Max);
    case 17:
      return bin(pickIn(2) ? Expr::MinU : Expr::MaxU);
    case 18:
      return add({Expr::Abs, 0, "", {genInt(depth - 1)}});
    case 19:
      return add({Expr::SelectInt,
                  0,
                  "",
                  {genBool(depth - 1), genInt(depth - 1), genInt(depth - 1)}});
    case 20:
      return add(
          {pickIn(2) ? Expr::ExtU : Expr::ExtS, 0, "", {genBool(depth - 1)}});
    case 21: {
      static const int64_t kMasks[] = {1, 3, 7, 15, 6};
      return add({Expr::And64, kMasks[pickIn(5)], "", {genInt(depth - 1)}});
    }
    default:
      return bin(pickIn(2) ? Expr::Add : Expr::Sub);
    }
  }

private:
  unsigned pickIn(unsigned n) { return static_cast<unsigned>(rng() % n); }

  int genStructured(int depth) {
    if (depth <= 0 || pickIn(5) == 0) {
      unsigned pick = pickIn(perHead ? 10 : 9);
      if (pick < 4)
        return add({Expr::I});
      if (pick < 8)
        return add({Expr::J});
      if (pick == 8)
        return genSmall();
      return add({Expr::H});
    }
    auto bin = [&](Expr::Kind k) {
      return add({k, 0, "", {genInt(depth - 1), genInt(depth - 1)}});
    };
    switch (pickIn(19)) {
    case 14:
    case 15:
      return genDivision(Expr::ArithDiv, depth);
    case 16: {
      // Branches that differ by a constant keep a common affine part.
      int common = genInt(depth - 1);
      int t = add({Expr::Add, 0, "", {common, genSmall()}});
      int f = add({Expr::Sub, 0, "", {common, genSmall()}});
      return add({Expr::SelectInt, 0, "", {genBool(depth - 1), t, f}});
    }
    case 17: {
      int common = genInt(depth - 1);
      int x = add({Expr::Add, 0, "", {common, genSmall()}});
      int y = add({Expr::Add, 0, "", {common, genInt(0)}});
      return add({pickIn(2) ? Expr::Min : Expr::Max, 0, "", {x, y}});
    }
    case 18:
      return add({Expr::Bitwise,
                  int64_t(pickIn(3)),
                  "",
                  {genInt(depth - 1), genInt(depth - 1)}});
    case 0:
    case 1:
    case 2:
      return bin(Expr::Add);
    case 3:
    case 4:
    case 5:
      return bin(Expr::Sub);
    case 6:
    case 7:
      return add({Expr::Mul, 0, "", {genInt(depth - 1), genSmall()}});
    case 8:
    case 9:
      return genDivision(Expr::Div, depth);
    case 10:
      return genDivision(Expr::Mod, depth);
    case 11:
      return bin(Expr::Min);
    case 12:
      return bin(Expr::Max);
    default:
      return add({Expr::Abs, 0, "", {genInt(depth - 1)}});
    }
  }
  int add(Expr e) {
    pool.push_back(std::move(e));
    return static_cast<int>(pool.size()) - 1;
  }

  int genSmall() {
    if (pickIn(3) == 0) {
      const ParamList &all = allParams();
      return add({Expr::Param, 0, all[pickIn(4)].first}); // not "big"
    }
    return add({Expr::Const, static_cast<int64_t>(pickIn(11)) - 3});
  }

  int genLeaf() {
    switch (pickIn(perHead ? 12 : 10)) {
    case 0:
    case 1:
    case 2:
      return add({Expr::I});
    case 3:
    case 4:
    case 5:
      return add({Expr::J});
    case 6:
      if (pickIn(4) == 0)
        return add({Expr::N});
      [[fallthrough]];
    case 7: {
      const ParamList &all = allParams();
      return add({Expr::Param, 0,
                  all[pickIn(static_cast<unsigned>(all.size()))].first});
    }
    case 8:
    case 9:
      return add({Expr::Const, randomConstant()});
    default:
      return add({Expr::H});
    }
  }

  int64_t randomConstant() {
    static const int64_t kSpecial[] = {0,
                                       1,
                                       -1,
                                       int64_t(1) << 40,
                                       std::numeric_limits<int64_t>::max(),
                                       std::numeric_limits<int64_t>::min()};
    if (pickIn(8) == 0)
      return kSpecial[pickIn(sizeof(kSpecial) / sizeof(kSpecial[0]))];
    return static_cast<int64_t>(pickIn(41)) - 20;
  }

  int genDivision(Expr::Kind kind, int depth) {
    Expr e{kind};
    e.kids = {genInt(depth - 1)};
    if (kind == Expr::ArithDiv)
      e.arithDivision = pickIn(4);
    if (pickIn(4) == 0) {
      static const char *const kDivisorParams[] = {"l", "d", "c"};
      e.name = kDivisorParams[pickIn(3)];
    } else {
      static const int64_t kDivisors[] = {1, 2, 3, 4, 5, 7, 8, 16, 1000};
      e.value = kDivisors[pickIn(sizeof(kDivisors) / sizeof(kDivisors[0]))];
    }
    return add(std::move(e));
  }

  std::mt19937_64 rng;
  bool perHead;
  bool structured;
};

class TreePrinter {
public:
  explicit TreePrinter(const std::vector<Expr> &pool) : pool(pool) {}
  std::string body;

  std::string print(int id) {
    const Expr &e = pool[id];
    auto kid = [&](unsigned k) { return print(e.kids[k]); };
    switch (e.kind) {
    case Expr::I:
      return "%i";
    case Expr::J:
      return "%j";
    case Expr::H:
      return "%h";
    case Expr::N:
      return line("sp.seq_len");
    case Expr::Const:
      return line("arith.constant " + std::to_string(e.value) + " : i64");
    case Expr::Param:
      return line("sp.param \"" + e.name + "\"");
    case Expr::Add:
      return binary("arith.addi", kid(0), kid(1), "i64");
    case Expr::Sub:
      return binary("arith.subi", kid(0), kid(1), "i64");
    case Expr::Mul:
      return binary("arith.muli", kid(0), kid(1), "i64");
    case Expr::Min:
      return binary("arith.minsi", kid(0), kid(1), "i64");
    case Expr::Max:
      return binary("arith.maxsi", kid(0), kid(1), "i64");
    case Expr::MinU:
      return binary("arith.minui", kid(0), kid(1), "i64");
    case Expr::MaxU:
      return binary("arith.maxui", kid(0), kid(1), "i64");
    case Expr::Div:
    case Expr::Mod: {
      std::string a = kid(0), d = divisor(e, e.value);
      return line((e.kind == Expr::Div ? "sp.div " : "sp.mod ") + a + ", " + d);
    }
    case Expr::ArithDiv: {
      std::string a = kid(0), d = divisor(e, e.value);
      return binary(kArithDivisions[e.arithDivision], a, d, "i64");
    }
    case Expr::Abs: {
      std::string a = kid(0);
      return line("math.absi " + a + " : i64");
    }
    case Expr::SelectInt:
    case Expr::SelectBool: {
      std::string c = kid(0), t = kid(1), f = kid(2);
      return line("arith.select " + c + ", " + t + ", " + f + " : " +
                  (e.kind == Expr::SelectInt ? "i64" : "i1"));
    }
    case Expr::ExtU:
    case Expr::ExtS: {
      std::string a = kid(0);
      return line(
          std::string(e.kind == Expr::ExtU ? "arith.extui " : "arith.extsi ") +
          a + " : i1 to i64");
    }
    case Expr::And64: {
      std::string a = kid(0);
      std::string m =
          line("arith.constant " + std::to_string(e.value) + " : i64");
      return binary("arith.andi", a, m, "i64");
    }
    case Expr::Bitwise: {
      static const char *const names[] = {"arith.andi", "arith.ori",
                                          "arith.xori"};
      return binary(names[e.value], kid(0), kid(1), "i64");
    }
    case Expr::BoolConst:
      return line(std::string("arith.constant ") +
                  (e.value ? "true" : "false"));
    case Expr::Cmp:
    case Expr::CmpBool: {
      std::string a = kid(0), b = kid(1);
      return line(std::string("arith.cmpi ") + kPredicates[e.value] + ", " + a +
                  ", " + b + " : " + (e.kind == Expr::Cmp ? "i64" : "i1"));
    }
    case Expr::And:
      return binary("arith.andi", kid(0), kid(1), "i1");
    case Expr::Or:
      return binary("arith.ori", kid(0), kid(1), "i1");
    case Expr::Xor:
      return binary("arith.xori", kid(0), kid(1), "i1");
    case Expr::Not: {
      std::string a = kid(0);
      std::string t = line("arith.constant true");
      return binary("arith.xori", a, t, "i1");
    }
    case Expr::Trunc: {
      std::string a = kid(0);
      return line("arith.trunci " + a + " : i64 to i1");
    }
    }
    return "";
  }

private:
  std::string line(const std::string &rhs) {
    std::string name = "%v" + std::to_string(counter++);
    body += "    " + name + " = " + rhs + "\n";
    return name;
  }
  std::string binary(const std::string &op, const std::string &a,
                     const std::string &b, const std::string &type) {
    return line(op + " " + a + ", " + b + " : " + type);
  }
  std::string divisor(const Expr &e, int64_t d) {
    if (!e.name.empty())
      return line("sp.param \"" + e.name + "\"");
    return line("arith.constant " + std::to_string(d) + " : i64");
  }

  const std::vector<Expr> &pool;
  unsigned counter = 0;
};

/// Random boxes of the shapes block classification produces (identity
/// blocks, single columns of a transpose, periods of a gather, several
/// columns or periods at once) and a few odd ones (negative positions,
/// columns past the stride, positions near the ends of i64).
PositionBox randomBox(std::mt19937_64 &rng) {
  auto pick = [&](int64_t n) { return static_cast<int64_t>(rng() % n); };
  PositionBox b;
  b.stride = 1 + pick(20);
  int64_t base = pick(8) == 0 ? -pick(30) : pick(60);
  switch (pick(6)) {
  case 0: // identity block
    b.stride = 1;
    b.u = {base, base + pick(48)};
    b.v = Interval::point(0);
    break;
  case 1: // one column
  case 2:
    b.u = {base, base + pick(8)};
    b.v = Interval::point(pick(b.stride));
    break;
  case 3: { // several columns / a run of residues
    b.u = {base, base + pick(4)};
    int64_t v0 = pick(b.stride);
    b.v = {v0, std::min(v0 + pick(16), b.stride - 1)};
    break;
  }
  case 4: // a single position or a short run
    b.u = Interval::point(base);
    b.v =
        pick(2) ? Interval::point(pick(b.stride)) : Interval{0, pick(b.stride)};
    break;
  default:
    if (pick(4) == 0) {
      // Near the top of i64: positions that wrap or nearly do.
      int64_t top = std::numeric_limits<int64_t>::max() / b.stride;
      b.u = {top - pick(3), top};
      b.v = {0, pick(3) + 1};
    } else {
      // Columns past the stride (boxes over-approximate, they overlap).
      b.u = {base, base + pick(3)};
      int64_t v0 = pick(3);
      b.v = {v0, v0 + b.stride + pick(4)};
    }
    break;
  }
  return b;
}

TEST_F(AbstractMaskTest, RandomMasksAreSound) {
  constexpr int kMasks = 3000;
  constexpr int kBoxPairs = 30;
  constexpr int64_t kSeqLen = 100;
  std::mt19937_64 rng(7);
  int64_t cases = 0, pairs = 0, pointCases = 0;
  int64_t decided[3] = {0, 0, 0}; // by Tri
  int64_t exactDecidable = 0, exactDecided = 0;
  int64_t programs = 0, nonConstant = 0;
  for (int t = 0; t < kMasks; ++t) {
    bool perHead = t % 3 == 0;
    bool causal = t % 4 == 1;
    bool structured = t % 2 == 1;
    TreeGen gen(5000 + t, perHead, structured);
    int root = gen.genBool(1 + t % 5);
    TreePrinter printer(gen.pool);
    std::string result = printer.print(root);
    // Usually a second component too, to check component selection.
    std::string second;
    if (t % 2 == 0) {
      int other = gen.genBool(2);
      second = printer.print(other);
    }
    std::ostringstream text;
    text << "sp.pattern @random(";
    const ParamList &params = allParams();
    for (size_t k = 0; k < params.size(); ++k)
      text << (k ? ", " : "") << params[k].first << " = " << params[k].second;
    text << ")" << (causal ? " causal" : "") << " {\n  sp.mask (%i, %j"
         << (perHead ? ", %h" : "") << ") {\n"
         << printer.body << "    sp.yield " << result
         << (second.empty() ? "" : ", " + second) << "\n  }\n}\n";
    SCOPED_TRACE(text.str());
    sp::PatternOp p = parse(text.str());
    ASSERT_TRUE(p);

    unsigned numComponents = second.empty() ? 1 : 2;
    for (unsigned comp = 0; comp <= numComponents; ++comp) {
      // comp == numComponents: the union (no component index).
      std::optional<unsigned> index;
      if (comp < numComponents)
        index = comp;
      FailureOr<AbstractMask> abs =
          AbstractMask::compile(p.getMasks()[0], Binding(kSeqLen), index);
      FailureOr<MaskProgram> prog =
          MaskProgram::compile(p.getMasks()[0], Binding(kSeqLen), index);
      ASSERT_TRUE(succeeded(abs) && succeeded(prog))
          << (diags.empty() ? "" : diags.back());
      ++programs;
      nonConstant += prog->getNumInstructions() > 0;
      for (int s = 0; s < kBoxPairs; ++s) {
        PositionBox q = randomBox(rng), k = randomBox(rng);
        if (s % 10 == 0) // same box on both sides: the diagonal
          k = q;
        int64_t h = perHead ? static_cast<int64_t>(rng() % 6) : 0;
        Tri got = abs->evaluate(q, k, h);
        Tri want = exhaustive(*prog, q, k, h);
        ++cases;
        pairs +=
            static_cast<int64_t>(positions(q).size() * positions(k).size());
        ++decided[static_cast<int>(got)];
        if (want != Tri::Unknown) {
          ++exactDecidable;
          exactDecided += got != Tri::Unknown;
        }
        if (got != Tri::Unknown) {
          ASSERT_EQ(got, want) << "query " << boxStr(q) << ", key " << boxStr(k)
                               << ", head " << h;
        }
        // A single pair is always decided, and exactly.
        bool single =
            q.u.isPoint() && q.v.isPoint() && k.u.isPoint() && k.v.isPoint();
        if (single) {
          ++pointCases;
          ASSERT_EQ(got, want) << "query " << boxStr(q) << ", key " << boxStr(k)
                               << ", head " << h;
        }
      }
    }
    modules.clear();
  }
  std::printf("[ random   ] %lld components (%lld not constant)\n",
              static_cast<long long>(programs),
              static_cast<long long>(nonConstant));
  std::printf("[ random   ] %lld box pairs (%lld single pairs), %lld (i, j) "
              "checked; decided True %lld, False %lld, Unknown %lld\n",
              static_cast<long long>(cases), static_cast<long long>(pointCases),
              static_cast<long long>(pairs), static_cast<long long>(decided[1]),
              static_cast<long long>(decided[0]),
              static_cast<long long>(decided[2]));
  std::printf("[ random   ] of %lld box pairs that are all or nothing, %lld "
              "decided (%.1f%%)\n",
              static_cast<long long>(exactDecidable),
              static_cast<long long>(exactDecided),
              100.0 * static_cast<double>(exactDecided) /
                  static_cast<double>(std::max<int64_t>(exactDecidable, 1)));
  // Not vacuous: most random boxes are decided one way or the other.
  EXPECT_GT(decided[0] + decided[1], cases / 2);
}

/// Where exhaustive evaluation says all or nothing, linear masks over boxes
/// are decided: affine forms keep i and j exact through +, -, * by a
/// constant, and comparisons see both sides at once.
TEST_F(AbstractMaskTest, LinearMasksAreExact) {
  sp::PatternOp p = parse(R"mlir(
sp.pattern @linear(w = 37) {
  sp.mask (%i, %j) {
    %w = sp.param "w"
    %c3 = arith.constant 3 : i64
    %c2 = arith.constant 2 : i64
    %0 = arith.muli %i, %c3 : i64
    %1 = arith.muli %j, %c2 : i64
    %2 = arith.subi %0, %1 : i64
    %3 = arith.addi %2, %w : i64
    %4 = arith.subi %3, %i : i64
    %c0 = arith.constant 0 : i64
    %5 = arith.cmpi sge, %4, %c0 : i64
    sp.yield %5
  }
})mlir");
  ASSERT_TRUE(p);
  Compiled c = compile(p.getMasks()[0], 1000, 0);
  std::mt19937_64 rng(3);
  int checked = 0;
  for (int s = 0; s < 3000; ++s) {
    PositionBox q = randomBox(rng), k = randomBox(rng);
    if (q.u.hi > (int64_t(1) << 40) || k.u.hi > (int64_t(1) << 40))
      continue; // no wrapping here: every decision is exact
    Tri want = exhaustive(c.prog, q, k);
    ASSERT_EQ(c.abs.evaluate(q, k), want)
        << "query " << boxStr(q) << ", key " << boxStr(k);
    ++checked;
  }
  EXPECT_GT(checked, 2000);
}

/// Every rounding of every division op, compared with every nearby value,
/// over boxes of both signs that lie in one window or straddle several.
TEST_F(AbstractMaskTest, DivisionsAreSound) {
  static const char *const kOps[] = {"sp.div",           "sp.mod",
                                     "arith.floordivsi", "arith.ceildivsi",
                                     "arith.divsi",      "arith.remsi"};
  static const char *const kPreds[] = {"eq", "sle", "sge"};
  constexpr int64_t kMinC = -8, kMaxC = 8;
  int64_t checked = 0, decided = 0;
  for (const char *op : kOps)
    for (int64_t d : {2, 3, 7}) {
      // x = 3 * i - j + 5: a form with a coefficient that d may or may not
      // divide, compared with each constant c.
      std::ostringstream text;
      text << "sp.pattern @div() {\n  sp.mask (%i, %j) {\n"
           << "    %d = arith.constant " << d << " : i64\n"
           << "    %c3 = arith.constant 3 : i64\n"
           << "    %c5 = arith.constant 5 : i64\n"
           << "    %0 = arith.muli %i, %c3 : i64\n"
           << "    %1 = arith.subi %0, %j : i64\n"
           << "    %x = arith.addi %1, %c5 : i64\n";
      bool isSp = std::string(op).rfind("sp.", 0) == 0;
      text << "    %q = " << op << " %x, %d" << (isSp ? "" : " : i64") << "\n";
      std::vector<std::string> results;
      for (int64_t c = kMinC; c <= kMaxC; ++c) {
        text << "    %k" << c - kMinC << " = arith.constant " << c
             << " : i64\n";
        for (const char *pred : kPreds) {
          std::string name = "%r" + std::to_string(results.size());
          text << "    " << name << " = arith.cmpi " << pred << ", %q, %k"
               << c - kMinC << " : i64\n";
          results.push_back(name);
        }
      }
      text << "    sp.yield ";
      for (size_t k = 0; k < results.size(); ++k)
        text << (k ? ", " : "") << results[k];
      text << "\n  }\n}\n";
      SCOPED_TRACE(text.str());
      sp::PatternOp p = parse(text.str());
      ASSERT_TRUE(p);
      std::mt19937_64 rng(d);
      std::vector<std::pair<PositionBox, PositionBox>> boxes;
      for (int s = 0; s < 60; ++s) {
        auto pick = [&](int64_t n) { return static_cast<int64_t>(rng() % n); };
        int64_t i0 = pick(30) - 15, j0 = pick(30) - 15;
        boxes.push_back({PositionBox{1, {i0, i0 + pick(4)}, {0, 0}},
                         PositionBox{1, {j0, j0 + pick(6)}, {0, 0}}});
      }
      for (unsigned comp = 0; comp < results.size(); ++comp) {
        Compiled c = compile(p.getMasks()[0], 64, comp);
        for (const auto &[q, k] : boxes) {
          Tri got = c.abs.evaluate(q, k);
          ++checked;
          if (got == Tri::Unknown)
            continue;
          ++decided;
          ASSERT_EQ(got, exhaustive(c.prog, q, k))
              << op << " by " << d << ", component " << comp << ", query "
              << boxStr(q) << ", key " << boxStr(k);
        }
      }
      modules.clear();
    }
  std::printf("[ division ] %lld decisions checked of %lld evaluations\n",
              static_cast<long long>(decided), static_cast<long long>(checked));
}

//===----------------------------------------------------------------------===//
// The paper's patterns, as sp-decompose writes their components
//===----------------------------------------------------------------------===//

// Strided: row = i - j < l; column_not_row = (i - j) % l == 0 && !row.
const char *const kStridedComponents = R"mlir(
sp.pattern @strided(l = 128) causal {
  sp.mask (%i, %j) {
    %l = sp.param "l"
    %c0 = arith.constant 0 : i64
    %true = arith.constant true
    %0 = arith.subi %i, %j : i64
    %row = arith.cmpi slt, %0, %l : i64
    %1 = sp.mod %0, %l
    %2 = arith.cmpi eq, %1, %c0 : i64
    %3 = arith.xori %row, %true : i1
    %column = arith.andi %2, %3 : i1
    sp.yield %row, %column
  }
}
)mlir";

// Fixed: block = i / l == j / l; summary_not_block = j % l >= l - c && !block.
const char *const kFixedComponents = R"mlir(
sp.pattern @fixed(l = 128, c = 32) causal {
  sp.mask (%i, %j) {
    %l = sp.param "l"
    %c = sp.param "c"
    %true = arith.constant true
    %0 = sp.div %i, %l
    %1 = sp.div %j, %l
    %block = arith.cmpi eq, %0, %1 : i64
    %2 = sp.mod %j, %l
    %3 = arith.subi %l, %c : i64
    %4 = arith.cmpi sge, %2, %3 : i64
    %5 = arith.xori %block, %true : i1
    %summary = arith.andi %4, %5 : i1
    sp.yield %block, %summary
  }
}
)mlir";

constexpr int64_t kN = 16384;
constexpr int64_t kBlock = 64;
constexpr int64_t kNumBlocks = kN / kBlock;

TEST_F(AbstractMaskTest, FixedBlockOnIdentityBlocks) {
  sp::PatternOp p = parse(kFixedComponents);
  ASSERT_TRUE(p);
  Compiled c = compile(p.getMasks()[0], kN, 0);
  for (int64_t a = 0; a < kNumBlocks; ++a)
    for (int64_t b = 0; b < kNumBlocks; ++b) {
      // 64-blocks a, b lie in 128-periods a / 2, b / 2.
      Tri want = Tri::False;
      if (a == b)
        want = Tri::Unknown; // the causal diagonal
      else if (a / 2 == b / 2 && b < a)
        want = Tri::True;
      Tri got = c.abs.evaluate(identityBox(a * kBlock, kBlock),
                               identityBox(b * kBlock, kBlock));
      ASSERT_EQ(got, want) << "query block " << a << ", key block " << b
                           << ": got " << triName(got);
    }
  // Spot checks against exhaustive evaluation.
  for (int64_t a : {0, 1, 2, 3, 100, 101, 255})
    for (int64_t b : {0, 1, 2, 3, 100, 101, 255})
      EXPECT_EQ(exhaustive(c.prog, identityBox(a * kBlock, kBlock),
                           identityBox(b * kBlock, kBlock)),
                c.abs.evaluate(identityBox(a * kBlock, kBlock),
                               identityBox(b * kBlock, kBlock)));
  // Unaligned blocks that straddle a period boundary stay undecided, but
  // one entirely inside another period is still decided.
  EXPECT_EQ(c.abs.evaluate(identityBox(192, 128), identityBox(160, 64)),
            Tri::Unknown);
  EXPECT_EQ(c.abs.evaluate(identityBox(1024 + 32, 64), identityBox(64, 128)),
            Tri::False);
}

TEST_F(AbstractMaskTest, StridedRowOnIdentityBlocks) {
  sp::PatternOp p = parse(kStridedComponents);
  ASSERT_TRUE(p);
  Compiled c = compile(p.getMasks()[0], kN, 0);
  for (int64_t a = 0; a < kNumBlocks; ++a)
    for (int64_t b = 0; b < kNumBlocks; ++b) {
      // i - j ranges over 64 (a - b) + [-63, 63].
      Tri want = Tri::False;
      if (a == b || a == b + 2)
        want = Tri::Unknown;
      else if (a == b + 1)
        want = Tri::True;
      Tri got = c.abs.evaluate(identityBox(a * kBlock, kBlock),
                               identityBox(b * kBlock, kBlock));
      ASSERT_EQ(got, want) << "query block " << a << ", key block " << b
                           << ": got " << triName(got);
    }
}

TEST_F(AbstractMaskTest, StridedColumnOnTransposedBlocks) {
  sp::PatternOp p = parse(kStridedComponents);
  ASSERT_TRUE(p);
  Compiled c = compile(p.getMasks()[0], kN, 1);
  BoundIndexMap map(IndexMap::transpose(128), kN);
  ASSERT_EQ(map.size(), kN);
  // Mapped block t holds column t / 2, rows 64 * (t % 2) + [0, 63].
  for (int64_t a = 0; a < kNumBlocks; ++a)
    for (int64_t b = 0; b < kNumBlocks; ++b) {
      PositionBox q = map.box(a * kBlock, (a + 1) * kBlock);
      PositionBox k = map.box(b * kBlock, (b + 1) * kBlock);
      ASSERT_EQ(q.stride, 128);
      ASSERT_TRUE(q.v.isPoint());
      Tri want = Tri::False; // different columns, or rows above
      if (a / 2 == b / 2) {
        if (a % 2 == 1 && b % 2 == 0)
          want = Tri::True; // every query row is below every key row
        else if (a == b)
          want = Tri::Unknown; // the diagonal
      }
      Tri got = c.abs.evaluate(q, k);
      ASSERT_EQ(got, want) << "query " << boxStr(q) << ", key " << boxStr(k)
                           << ": got " << triName(got);
    }
  for (int64_t a : {0, 1, 2, 3, 77, 255})
    for (int64_t b : {0, 1, 2, 3, 76, 254}) {
      PositionBox q = map.box(a * kBlock, (a + 1) * kBlock);
      PositionBox k = map.box(b * kBlock, (b + 1) * kBlock);
      EXPECT_EQ(exhaustive(c.prog, q, k), c.abs.evaluate(q, k))
          << "query " << boxStr(q) << ", key " << boxStr(k);
    }

  // A range of many key blocks over columns 10..20 against a query block in
  // column 5 (or 30): no column matches, so the whole range is empty. In
  // column 15 it is undecided.
  PositionBox keys = map.box(10 * 128, 21 * 128);
  EXPECT_EQ(keys.stride, 128);
  EXPECT_EQ(keys.v, (Interval{10, 20}));
  for (int64_t column : {5, 30, 127}) {
    PositionBox q = map.box(column * 128 + 64, column * 128 + 128);
    EXPECT_EQ(c.abs.evaluate(q, keys), Tri::False) << "column " << column;
    EXPECT_EQ(exhaustive(c.prog, q, keys), Tri::False);
  }
  PositionBox q15 = map.box(15 * 128 + 64, 15 * 128 + 128);
  EXPECT_EQ(c.abs.evaluate(q15, keys), Tri::Unknown);
  // Column 0 against columns 1..127 (everything after the first column).
  EXPECT_EQ(c.abs.evaluate(map.box(64, 128), map.box(128, kN)), Tri::False);

  // The row component on transposed blocks: i - j = 128 (row difference), so
  // only the same row is within the window; blocks below are empty.
  Compiled row = compile(p.getMasks()[0], kN, 0);
  EXPECT_EQ(row.abs.evaluate(map.box(64, 128), map.box(0, 64)), Tri::False);
}

TEST_F(AbstractMaskTest, FixedSummaryOnGatheredKeys) {
  sp::PatternOp p = parse(kFixedComponents);
  ASSERT_TRUE(p);
  Compiled c = compile(p.getMasks()[0], kN, 1);
  std::vector<int64_t> residues;
  for (int64_t r = 96; r < 128; ++r)
    residues.push_back(r);
  BoundIndexMap keys(IndexMap::gather(128, residues), kN);
  ASSERT_EQ(keys.size(), kN / 4);
  // Key blocks of 32: exactly one period's summary cells (period K).
  for (int64_t a = 0; a < kNumBlocks; ++a)
    for (int64_t kb = 0; kb < keys.size() / 32; ++kb) {
      PositionBox k = keys.box(kb * 32, (kb + 1) * 32);
      ASSERT_TRUE(k.u.isPoint());
      int64_t period = a / 2;
      Tri want = kb < period ? Tri::True : Tri::False;
      Tri got = c.abs.evaluate(identityBox(a * kBlock, kBlock), k);
      ASSERT_EQ(got, want) << "query block " << a << ", key " << boxStr(k)
                           << ": got " << triName(got);
    }
  // Key blocks of 64 span two periods (u in [2K, 2K + 1], v in [96, 127]):
  // decided wherever both periods are before (True) or after (False) the
  // query's.
  for (int64_t a = 0; a < kNumBlocks; ++a)
    for (int64_t kb = 0; kb < keys.size() / 64; ++kb) {
      PositionBox k = keys.box(kb * 64, (kb + 1) * 64);
      ASSERT_EQ(k.u, (Interval{2 * kb, 2 * kb + 1}));
      int64_t period = a / 2;
      Tri got = c.abs.evaluate(identityBox(a * kBlock, kBlock), k);
      Tri want = got;
      if (2 * kb + 1 < period)
        want = Tri::True;
      else if (2 * kb > period)
        want = Tri::False;
      else if (got != Tri::Unknown)
        want = exhaustive(c.prog, identityBox(a * kBlock, kBlock), k);
      ASSERT_EQ(got, want) << "query block " << a << ", key " << boxStr(k);
    }
  // A long range of key periods (all before the query block) at once.
  PositionBox many = keys.box(0, 32 * 50);
  EXPECT_EQ(many.u, (Interval{0, 49}));
  EXPECT_EQ(c.abs.evaluate(identityBox(51 * 128, 64), many), Tri::True);
  EXPECT_EQ(exhaustive(c.prog, identityBox(51 * 128, 64), many), Tri::True);
  // The block component on the same gathered keys: decided as well.
  Compiled block = compile(p.getMasks()[0], kN, 0);
  EXPECT_EQ(block.abs.evaluate(identityBox(51 * 128, 64), many), Tri::False);
  // Same period: i / l == j / l, but the summary cells lie past the
  // diagonal of all but the last query row.
  EXPECT_EQ(block.abs.evaluate(identityBox(49 * 128 + 64, 64),
                               keys.box(49 * 32, 50 * 32)),
            Tri::Unknown);
}

TEST_F(AbstractMaskTest, HeadsAndUnions) {
  // A per-head mask: head h attends to keys with j % 4 == h (and i - j <= 8).
  sp::PatternOp p = parse(R"mlir(
sp.pattern @heads() {
  sp.mask (%i, %j, %h) {
    %c4 = arith.constant 4 : i64
    %c8 = arith.constant 8 : i64
    %0 = sp.mod %j, %c4
    %1 = arith.cmpi eq, %0, %h : i64
    %2 = arith.subi %i, %j : i64
    %3 = arith.cmpi sle, %2, %c8 : i64
    %4 = arith.andi %1, %3 : i1
    sp.yield %4
  }
})mlir");
  // The same, specialized: head 0 of a pattern whose masks are per head.
  sp::PatternOp specialized = parse(R"mlir(
sp.pattern @specialized() attributes {num_heads = 1 : i64} {
  sp.mask head 0 (%i, %j) {
    %c4 = arith.constant 4 : i64
    %0 = sp.mod %j, %c4
    %c2 = arith.constant 2 : i64
    %1 = arith.cmpi eq, %0, %c2 : i64
    sp.yield %1
  }
})mlir");
  ASSERT_TRUE(p && specialized);
  Compiled perHead = compile(p.getMasks()[0], 64, 0);
  PositionBox q = identityBox(100, 4);                // i in [100, 103]
  PositionBox k{4, {24, 24}, Interval::point(3)};     // j = 99
  PositionBox kWide{4, {24, 25}, Interval::point(3)}; // j in {99, 103}
  EXPECT_EQ(perHead.abs.evaluate(q, k, 3), Tri::True);
  EXPECT_EQ(perHead.abs.evaluate(q, k, 2), Tri::False);
  EXPECT_EQ(perHead.abs.evaluate(q, kWide, 3), Tri::True);
  Compiled fixedHead = compile(specialized.getMasks()[0], 64, 0);
  EXPECT_EQ(fixedHead.abs.evaluate(q, PositionBox{4, {0, 30}, {2, 2}}, 7),
            Tri::True);
  EXPECT_EQ(fixedHead.abs.evaluate(q, PositionBox{4, {0, 30}, {0, 1}}),
            Tri::False);

  // The union of the strided components is the strided pattern.
  sp::PatternOp s = parse(kStridedComponents);
  ASSERT_TRUE(s);
  FailureOr<AbstractMask> all =
      AbstractMask::compile(s.getMasks()[0], Binding(kN));
  ASSERT_TRUE(succeeded(all));
  EXPECT_EQ(all->evaluate(identityBox(128, 64), identityBox(64, 64)),
            Tri::True);
  // i - j in [449, 575] holds one multiple of 128; [385, 511] none.
  EXPECT_EQ(all->evaluate(identityBox(512, 64), identityBox(0, 64)),
            Tri::Unknown);
  EXPECT_EQ(all->evaluate(identityBox(512, 64), identityBox(64, 64)),
            Tri::False);
  EXPECT_EQ(all->evaluate(identityBox(64, 64), identityBox(512, 64)),
            Tri::False);
}

TEST_F(AbstractMaskTest, RejectsWhatTheEvaluatorRejects) {
  sp::PatternOp p = parse(R"mlir(
sp.pattern @p() {
  sp.mask (%i, %j) {
    %0 = arith.shli %i, %j : i64
    %1 = arith.cmpi eq, %0, %j : i64
    sp.yield %1
  }
})mlir");
  ASSERT_TRUE(p);
  EXPECT_TRUE(failed(AbstractMask::compile(p.getMasks()[0], Binding())));
  ASSERT_FALSE(diags.empty());
  EXPECT_EQ(diags.back(), "cannot evaluate 'arith.shli' in a mask");
  diags.clear();
  EXPECT_TRUE(failed(AbstractMask::compile(p.getMasks()[0], Binding(), 3)));
  ASSERT_FALSE(diags.empty());

  sp::PatternOp n = parse(R"mlir(
sp.pattern @n() {
  sp.mask (%i, %j) {
    %n = sp.seq_len
    %0 = arith.cmpi slt, %j, %n : i64
    sp.yield %0
  }
})mlir");
  ASSERT_TRUE(n);
  diags.clear();
  EXPECT_TRUE(failed(AbstractMask::compile(n.getMasks()[0], Binding())));
  EXPECT_FALSE(diags.empty());
  FailureOr<AbstractMask> bound =
      AbstractMask::compile(n.getMasks()[0], Binding(256));
  ASSERT_TRUE(succeeded(bound));
  EXPECT_EQ(bound->evaluate(identityBox(0, 64), identityBox(192, 64)),
            Tri::True);
  EXPECT_EQ(bound->evaluate(identityBox(0, 64), identityBox(224, 64)),
            Tri::Unknown);
}

//===----------------------------------------------------------------------===//
// Speed (printed, not asserted)
//===----------------------------------------------------------------------===//

TEST_F(AbstractMaskTest, Speed) {
  sp::PatternOp fixed = parse(kFixedComponents);
  sp::PatternOp strided = parse(kStridedComponents);
  ASSERT_TRUE(fixed && strided);
  constexpr int64_t n = 1 << 16, blocks = n / kBlock; // 1024 x 1024 blocks
  struct Case {
    const char *name;
    sp::PatternOp pattern;
    unsigned component;
    bool transposed;
  } cases[] = {{"fixed block, identity", fixed, 0, false},
               {"fixed summary, identity", fixed, 1, false},
               {"strided row, identity", strided, 0, false},
               {"strided column, transpose", strided, 1, true}};
  for (Case &cs : cases) {
    Compiled c = compile(cs.pattern.getMasks()[0], n, cs.component);
    BoundIndexMap map(
        cs.transposed ? IndexMap::transpose(128) : IndexMap::identity(), n);
    std::vector<PositionBox> boxes;
    for (int64_t b = 0; b < blocks; ++b)
      boxes.push_back(map.box(b * kBlock, (b + 1) * kBlock));
    // Every block pair, then the lower triangle only: above the diagonal the
    // causal test answers before the program runs.
    for (bool lower : {false, true}) {
      int64_t counts[3] = {0, 0, 0};
      auto start = std::chrono::steady_clock::now();
      for (int64_t a = 0; a < blocks; ++a)
        for (int64_t b = 0; b < (lower ? a + 1 : blocks); ++b)
          ++counts[static_cast<int>(c.abs.evaluate(boxes[a], boxes[b]))];
      double seconds = std::chrono::duration<double>(
                           std::chrono::steady_clock::now() - start)
                           .count();
      double evals = static_cast<double>(counts[0] + counts[1] + counts[2]);
      std::printf("[ speed    ] %-27s %-6s %.0f evaluations in %.3f s: "
                  "%.2e / s (True %lld, False %lld, Unknown %lld)\n",
                  cs.name, lower ? "j <= i" : "all", evals, seconds,
                  evals / seconds, static_cast<long long>(counts[1]),
                  static_cast<long long>(counts[0]),
                  static_cast<long long>(counts[2]));
    }
  }
}

} // namespace
