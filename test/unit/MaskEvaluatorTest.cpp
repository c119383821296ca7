//===- MaskEvaluatorTest.cpp - the mask evaluator against oracles ---------===//
//
// The evaluator is the ground truth for block classification and the CPU
// reference, so it is checked against oracles that share none of its code:
// hand-written C++ lambdas for the paper's patterns, and a recursive
// evaluator of random expression trees that are printed as sp dialect text
// and parsed back. Also: exact diagnostics, the empty-row check, and a
// printed (never asserted) speed measurement.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Analysis/MaskEvaluator.h"
#include "sparsetx/Dialect/SP/IR/SP.h"
#include "sparsetx/Support/IntMath.h"

#include "TestUtil.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using namespace mlir;
using namespace sparsetx;

namespace {

//===----------------------------------------------------------------------===//
// Fixture: a context, parsing, captured diagnostics
//===----------------------------------------------------------------------===//

class MaskEvaluatorTest : public ::testing::Test {
protected:
  MaskEvaluatorTest() {
    context.loadDialect<sp::SPDialect, arith::ArithDialect,
                        math::MathDialect>();
    handler = std::make_unique<ScopedDiagnosticHandler>(
        &context, [this](Diagnostic &diag) {
          Captured c;
          c.message = diag.str();
          if (auto loc = dyn_cast<FileLineColLoc>(diag.getLocation()))
            c.line = loc.getLine();
          diags.push_back(c);
          return success();
        });
  }

  /// Parses `text` (which must verify) and returns its first pattern.
  sp::PatternOp parse(const std::string &text) {
    modules.push_back(parseSourceString<ModuleOp>(text, &context, "test.mlir"));
    if (!modules.back()) {
      ADD_FAILURE() << "failed to parse:\n"
                    << text << "\n"
                    << (diags.empty() ? "" : diags.back().message);
      return {};
    }
    auto patterns = modules.back()->getOps<sp::PatternOp>();
    EXPECT_FALSE(patterns.empty());
    return patterns.empty() ? sp::PatternOp() : *patterns.begin();
  }

  struct Captured {
    std::string message;
    unsigned line = 0;
  };

  MLIRContext context;
  std::unique_ptr<ScopedDiagnosticHandler> handler;
  std::vector<Captured> diags;
  std::vector<OwningOpRef<ModuleOp>> modules;
};

//===----------------------------------------------------------------------===//
// The paper's patterns
//===----------------------------------------------------------------------===//

const std::string kStrided = test::strided(128);
const std::string kFixed = test::fixed(128, 32);
const std::string kFixedHeads = test::fixedHeads(128, 16);

const std::string kStridedInterleaved = test::stridedInterleaved(128);

using Oracle = std::function<bool(int64_t i, int64_t j, int64_t h)>;

// Hand-written from the paper (section 4.3; eq. 2 for the interleaved form).
bool stridedRef(int64_t i, int64_t j) {
  return j <= i && (i - j < 128 || (i - j) % 128 == 0);
}
bool fixedRef(int64_t i, int64_t j) {
  return j <= i && (i / 128 == j / 128 || j % 128 >= 128 - 32);
}
bool fixedHeadsRef(int64_t i, int64_t j, int64_t h) {
  const int64_t l = 128, c = 16;
  return j <= i && (i / l == j / l ||
                    (j % l >= l - c * (h + 1) && j % l < l - c * h));
}

/// evaluate() equals the oracle on [0, n)^2 (every head), and evaluateRow
/// equals evaluate() on whole rows and on ragged sub-ranges.
void checkAgainst(const MaskProgram &prog, const Oracle &ref, int64_t n,
                  int64_t numHeads) {
  std::vector<uint8_t> row(static_cast<size_t>(n));
  std::mt19937_64 rng(42);
  for (int64_t h = 0; h < numHeads; ++h) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j)
        ASSERT_EQ(prog.evaluate(i, j, h), ref(i, j, h))
            << "i = " << i << ", j = " << j << ", h = " << h;
      prog.evaluateRow(i, h, 0, n, row.data());
      for (int64_t j = 0; j < n; ++j)
        ASSERT_EQ(row[j], prog.evaluate(i, j, h) ? 1 : 0)
            << "row: i = " << i << ", j = " << j << ", h = " << h;
      int64_t begin = static_cast<int64_t>(rng() % n);
      int64_t count = static_cast<int64_t>(rng() % (n - begin)) + 1;
      prog.evaluateRow(i, h, begin, count, row.data());
      for (int64_t k = 0; k < count; ++k)
        ASSERT_EQ(row[k], prog.evaluate(i, begin + k, h) ? 1 : 0)
            << "sub-row: i = " << i << ", j = " << begin + k;
    }
  }
}

TEST_F(MaskEvaluatorTest, Strided) {
  sp::PatternOp p = parse(kStrided);
  ASSERT_TRUE(p);
  FailureOr<MaskProgram> prog = MaskProgram::compile(p.getMasks()[0]);
  ASSERT_TRUE(succeeded(prog));
  EXPECT_TRUE(prog->isCausal());
  EXPECT_FALSE(prog->isPerHead());
  checkAgainst(*prog, [](int64_t i, int64_t j, int64_t) {
    return stridedRef(i, j);
  }, 300, 1);
}

TEST_F(MaskEvaluatorTest, Fixed) {
  sp::PatternOp p = parse(kFixed);
  ASSERT_TRUE(p);
  FailureOr<MaskProgram> prog = MaskProgram::compile(p.getMasks()[0]);
  ASSERT_TRUE(succeeded(prog));
  checkAgainst(*prog, [](int64_t i, int64_t j, int64_t) {
    return fixedRef(i, j);
  }, 300, 1);
}

TEST_F(MaskEvaluatorTest, FixedHeads) {
  sp::PatternOp p = parse(kFixedHeads);
  ASSERT_TRUE(p);
  FailureOr<MaskProgram> prog = MaskProgram::compile(p.getMasks()[0]);
  ASSERT_TRUE(succeeded(prog));
  EXPECT_TRUE(prog->isPerHead());
  checkAgainst(*prog, fixedHeadsRef, 300, 8);
}

TEST_F(MaskEvaluatorTest, StridedInterleaved) {
  sp::PatternOp p = parse(kStridedInterleaved);
  ASSERT_TRUE(p);
  FailureOr<PatternEvaluator> eval = PatternEvaluator::compile(p);
  ASSERT_TRUE(succeeded(eval));
  EXPECT_TRUE(eval->isLayered());
  EXPECT_TRUE(eval->isCausal());
  EXPECT_FALSE(eval->isPerHead());
  ASSERT_EQ(eval->getNumMasks(), 2);
  Oracle layer0 = [](int64_t i, int64_t j, int64_t) {
    return j <= i && i - j < 128;
  };
  Oracle layer1 = [](int64_t i, int64_t j, int64_t) {
    return j <= i && (i - j) % 128 == 0;
  };
  checkAgainst(eval->getMask(0), layer0, 300, 1);
  checkAgainst(eval->getMask(1), layer1, 300, 1);
  // Residual block r uses mask r % 2; the union of both layers is strided.
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t i = 0; i < 300; ++i)
      for (int64_t j = 0; j < 300; ++j)
        ASSERT_EQ(eval->attends(r, 0, i, j),
                  r % 2 == 0 ? layer0(i, j, 0) : layer1(i, j, 0));
  for (int64_t i = 0; i < 300; ++i)
    for (int64_t j = 0; j < 300; ++j)
      ASSERT_EQ(eval->attends(0, 0, i, j) || eval->attends(1, 0, i, j),
                stridedRef(i, j));
}

TEST_F(MaskEvaluatorTest, PatternEvaluatorPerHead) {
  sp::PatternOp p = parse(kFixedHeads);
  ASSERT_TRUE(p);
  FailureOr<PatternEvaluator> eval = PatternEvaluator::compile(p);
  ASSERT_TRUE(succeeded(eval));
  EXPECT_FALSE(eval->isLayered());
  EXPECT_TRUE(eval->isPerHead());
  std::vector<uint8_t> row(300);
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t h = 0; h < 8; ++h)
      for (int64_t i = 0; i < 300; i += 7) {
        eval->evaluateRow(r, h, i, 0, 300, row.data());
        for (int64_t j = 0; j < 300; ++j) {
          ASSERT_EQ(eval->attends(r, h, i, j), fixedHeadsRef(i, j, h));
          ASSERT_EQ(row[j] != 0, fixedHeadsRef(i, j, h));
        }
      }
}

TEST_F(MaskEvaluatorTest, FoldsParametersAndConstants) {
  // l - c, (h + 1) * c etc. fold or stay per-row; i / l is computed once per
  // row. The listing is for humans, but the instruction count is a property:
  // fixed needs i/l, j/l, ==, j%l, >=, || and nothing else.
  sp::PatternOp p = parse(kFixed);
  ASSERT_TRUE(p);
  FailureOr<MaskProgram> prog = MaskProgram::compile(p.getMasks()[0]);
  ASSERT_TRUE(succeeded(prog));
  std::string listing;
  llvm::raw_string_ostream os(listing);
  prog->print(os);
  EXPECT_EQ(prog->getNumInstructions(), 6u) << listing;
  std::printf("%s", listing.c_str());
}

TEST_F(MaskEvaluatorTest, ManyLiveValues) {
  // 24 key-dependent values live at once: more vector registers than
  // evaluateRow keeps on the stack. Attends iff some k in [0, 24) has
  // (j * (k + 1) + i) % 7 == k % 7.
  constexpr int kValues = 24;
  std::ostringstream text;
  text << "sp.pattern @wide() {\n  sp.mask (%i, %j) {\n"
       << "    %c7 = arith.constant 7 : i64\n";
  for (int k = 0; k < kValues; ++k)
    text << "    %m" << k << " = arith.constant " << k + 1 << " : i64\n"
         << "    %p" << k << " = arith.muli %j, %m" << k << " : i64\n"
         << "    %v" << k << " = arith.addi %p" << k << ", %i : i64\n";
  for (int k = 0; k < kValues; ++k)
    text << "    %r" << k << " = sp.mod %v" << k << ", %c7\n"
         << "    %t" << k << " = arith.constant " << k % 7 << " : i64\n"
         << "    %b" << k << " = arith.cmpi eq, %r" << k << ", %t" << k
         << " : i64\n";
  text << "    %o0 = arith.ori %b0, %b1 : i1\n";
  for (int k = 2; k < kValues; ++k)
    text << "    %o" << k - 1 << " = arith.ori %o" << k - 2 << ", %b" << k
         << " : i1\n";
  text << "    sp.yield %o" << kValues - 2 << "\n  }\n}\n";
  sp::PatternOp p = parse(text.str());
  ASSERT_TRUE(p);
  FailureOr<MaskProgram> prog = MaskProgram::compile(p.getMasks()[0]);
  ASSERT_TRUE(succeeded(prog));
  checkAgainst(*prog, [](int64_t i, int64_t j, int64_t) {
    for (int64_t k = 0; k < kValues; ++k)
      if (floorMod(j * (k + 1) + i, 7) == k % 7)
        return true;
    return false;
  }, 300, 1);
}

//===----------------------------------------------------------------------===//
// Random expression trees against a recursive oracle
//===----------------------------------------------------------------------===//

/// A random mask expression. The oracle below evaluates it directly with C++
/// operators (floorDiv / floorMod from IntMath.h for sp.div / sp.mod, native
/// 128-bit / and % for the truncating and ceiling divisions) and shares no
/// code with the evaluator.
struct Expr {
  enum Kind {
    // Integers.
    I, J, H, N, Const, Param, Add, Sub, Mul, FloorDiv, FloorMod,
    ArithFloorDiv, CeilDiv, TruncDiv, TruncRem, Min, Max, MinU, MaxU, Abs,
    SelectInt, ExtU, ExtS,
    // Booleans.
    BoolConst, Cmp, CmpBool, And, Or, Xor, Not, SelectBool, BoolArith, Trunc,
  };
  Kind kind;
  int64_t value = 0;       // constant; divisor; predicate index
  std::string name;        // param name; divisor param name; bool arith op
  bool divisorIsParam = false;
  std::vector<int> kids;
};

using ParamList = std::vector<std::pair<std::string, int64_t>>;
/// The random patterns' parameters, and those usable as divisors.
const ParamList &allParams() {
  static const ParamList params = {
      {"l", 128}, {"d", 7}, {"a", -5}, {"big", int64_t(1) << 40}, {"z", 0}};
  return params;
}
const ParamList &positiveParams() {
  static const ParamList params = {
      {"l", 128}, {"d", 7}, {"big", int64_t(1) << 40}};
  return params;
}

const char *const kPredicates[] = {"eq",  "ne",  "slt", "sle", "sgt",
                                   "sge", "ult", "ule", "ugt", "uge"};
const char *const kBoolArith[] = {"addi",  "subi",  "muli", "minsi",
                                  "maxsi", "minui", "maxui"};

class TreeGen {
public:
  TreeGen(uint64_t seed, bool perHead) : rng(seed), perHead(perHead) {}

  std::vector<Expr> pool;
  bool usesN = false;

  int genBool(int depth) {
    unsigned pick = depth <= 0 ? 0 : pickIn(12);
    switch (pick) {
    case 0:
    case 1:
    case 2:
    case 3:
      return add({Expr::Cmp, int64_t(pickIn(10)), "", false,
                  {genInt(depth - 1), genInt(depth - 1)}});
    case 4:
      return depth <= 1 || pickIn(3) != 0
                 ? add({Expr::BoolConst, int64_t(pickIn(2))})
                 : add({Expr::CmpBool, int64_t(pickIn(10)), "", false,
                        {genBool(depth - 1), genBool(depth - 1)}});
    case 5:
      return add({Expr::And, 0, "", false,
                  {genBool(depth - 1), genBool(depth - 1)}});
    case 6:
      return add({Expr::Or, 0, "", false,
                  {genBool(depth - 1), genBool(depth - 1)}});
    case 7:
      return add({Expr::Xor, 0, "", false,
                  {genBool(depth - 1), genBool(depth - 1)}});
    case 8:
      return add({Expr::Not, 0, "", false, {genBool(depth - 1)}});
    case 9:
      return add({Expr::SelectBool, 0, "", false,
                  {genBool(depth - 1), genBool(depth - 1),
                   genBool(depth - 1)}});
    case 10:
      return add({Expr::BoolArith, int64_t(pickIn(7)), "", false,
                  {genBool(depth - 1), genBool(depth - 1)}});
    default:
      return add({Expr::Trunc, 0, "", false, {genInt(depth - 1)}});
    }
  }

  int genInt(int depth) {
    if (depth <= 0 || pickIn(5) == 0)
      return genLeaf();
    unsigned pick = pickIn(20);
    auto bin = [&](Expr::Kind k) {
      return add({k, 0, "", false, {genInt(depth - 1), genInt(depth - 1)}});
    };
    switch (pick) {
    case 0:
    case 1:
      return bin(Expr::Add);
    case 2:
    case 3:
      return bin(Expr::Sub);
    case 4:
      return bin(Expr::Mul);
    case 5:
    case 6:
      return genDivision(Expr::FloorDiv, depth);
    case 7:
    case 8:
      return genDivision(Expr::FloorMod, depth);
    case 9:
      return genDivision(Expr::Kind(Expr::ArithFloorDiv + pickIn(4)), depth);
    case 10:
      return bin(Expr::Min);
    case 11:
      return bin(Expr::Max);
    case 12:
      return bin(pickIn(2) ? Expr::MinU : Expr::MaxU);
    case 13:
      return add({Expr::Abs, 0, "", false, {genInt(depth - 1)}});
    case 14:
      return add({Expr::SelectInt, 0, "", false,
                  {genBool(depth - 1), genInt(depth - 1), genInt(depth - 1)}});
    case 15:
      return add({pickIn(2) ? Expr::ExtU : Expr::ExtS, 0, "", false,
                  {genBool(depth - 1)}});
    default:
      return bin(pickIn(2) ? Expr::Add : Expr::Sub);
    }
  }

private:
  unsigned pickIn(unsigned n) { return static_cast<unsigned>(rng() % n); }
  int add(Expr e) {
    pool.push_back(std::move(e));
    return static_cast<int>(pool.size()) - 1;
  }

  int genLeaf() {
    switch (pickIn(perHead ? 10 : 9)) {
    case 0:
    case 1:
    case 2:
      return add({Expr::I});
    case 3:
    case 4:
    case 5:
      return add({Expr::J});
    case 6:
      if (pickIn(3) == 0) {
        usesN = true;
        return add({Expr::N});
      }
      [[fallthrough]];
    case 7: {
      const ParamList &all = allParams();
      const auto &p = all[pickIn(static_cast<unsigned>(all.size()))];
      return add({Expr::Param, 0, p.first});
    }
    case 8:
      return add({Expr::Const, randomConstant()});
    default:
      return add({Expr::H});
    }
  }

  int64_t randomConstant() {
    static const int64_t kSpecial[] = {0,
                                       1,
                                       -1,
                                       2,
                                       3,
                                       -7,
                                       128,
                                       -128,
                                       int64_t(1) << 40,
                                       std::numeric_limits<int64_t>::max(),
                                       std::numeric_limits<int64_t>::min()};
    if (pickIn(3) == 0)
      return kSpecial[pickIn(sizeof(kSpecial) / sizeof(kSpecial[0]))];
    return static_cast<int64_t>(pickIn(2001)) - 1000;
  }

  int genDivision(Expr::Kind kind, int depth) {
    Expr e{kind};
    e.kids = {genInt(depth - 1)};
    if (pickIn(4) == 0) {
      const ParamList &pos = positiveParams();
      const auto &p = pos[pickIn(static_cast<unsigned>(pos.size()))];
      e.divisorIsParam = true;
      e.name = p.first;
      e.value = p.second;
    } else {
      static const int64_t kDivisors[] = {1,
                                          2,
                                          3,
                                          5,
                                          7,
                                          10,
                                          64,
                                          100,
                                          127,
                                          128,
                                          1000,
                                          (int64_t(1) << 33) + 1,
                                          std::numeric_limits<int64_t>::max()};
      e.value = pickIn(3) == 0 ? static_cast<int64_t>(pickIn(300)) + 1
                               : kDivisors[pickIn(sizeof(kDivisors) /
                                                  sizeof(kDivisors[0]))];
    }
    return add(std::move(e));
  }

  std::mt19937_64 rng;
  bool perHead;
};

/// Prints an expression tree as the body of an sp.mask.
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
    case Expr::FloorDiv:
    case Expr::FloorMod: {
      std::string a = kid(0), d = divisor(e);
      const char *op = e.kind == Expr::FloorDiv ? "sp.div " : "sp.mod ";
      return line(op + a + ", " + d);
    }
    case Expr::ArithFloorDiv:
    case Expr::CeilDiv:
    case Expr::TruncDiv:
    case Expr::TruncRem: {
      static const char *const names[] = {"arith.floordivsi", "arith.ceildivsi",
                                          "arith.divsi", "arith.remsi"};
      std::string a = kid(0), d = divisor(e);
      return binary(names[e.kind - Expr::ArithFloorDiv], a, d, "i64");
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
      return line(std::string(e.kind == Expr::ExtU ? "arith.extui "
                                                   : "arith.extsi ") +
                  a + " : i1 to i64");
    }
    case Expr::BoolConst:
      return line(std::string("arith.constant ") +
                  (e.value ? "true" : "false"));
    case Expr::Cmp:
    case Expr::CmpBool: {
      std::string a = kid(0), b = kid(1);
      return line(std::string("arith.cmpi ") + kPredicates[e.value] + ", " +
                  a + ", " + b + " : " +
                  (e.kind == Expr::Cmp ? "i64" : "i1"));
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
    case Expr::BoolArith:
      return binary(std::string("arith.") + kBoolArith[e.value], kid(0),
                    kid(1), "i1");
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
  std::string divisor(const Expr &e) {
    if (e.divisorIsParam)
      return line("sp.param \"" + e.name + "\"");
    return line("arith.constant " + std::to_string(e.value) + " : i64");
  }

  const std::vector<Expr> &pool;
  unsigned counter = 0;
};

/// The oracle: direct recursive evaluation with C++ operators. Integers wrap
/// (computed as uint64_t); booleans are 0/1, and as signed i1 values true is
/// -1.
struct TreeOracle {
  const std::vector<Expr> &pool;
  int64_t i, j, h, n;

  static int64_t wrapU(uint64_t v) { return static_cast<int64_t>(v); }
  static int64_t paramValue(const std::string &name) {
    for (const auto &p : allParams())
      if (p.first == name)
        return p.second;
    ADD_FAILURE() << "unknown param " << name;
    return 0;
  }

  int64_t evalInt(int id) const {
    const Expr &e = pool[id];
    auto k = [&](unsigned x) { return evalInt(e.kids[x]); };
    auto b = [&](unsigned x) { return evalBool(e.kids[x]); };
    switch (e.kind) {
    case Expr::I:
      return i;
    case Expr::J:
      return j;
    case Expr::H:
      return h;
    case Expr::N:
      return n;
    case Expr::Const:
      return e.value;
    case Expr::Param:
      return paramValue(e.name);
    case Expr::Add:
      return wrapU(uint64_t(k(0)) + uint64_t(k(1)));
    case Expr::Sub:
      return wrapU(uint64_t(k(0)) - uint64_t(k(1)));
    case Expr::Mul:
      return wrapU(uint64_t(k(0)) * uint64_t(k(1)));
    case Expr::FloorDiv:
    case Expr::ArithFloorDiv:
      return floorDiv(k(0), e.value);
    case Expr::FloorMod:
      return floorMod(k(0), e.value);
    case Expr::CeilDiv: {
      __int128 a = k(0), d = e.value;
      __int128 q = a / d; // truncates toward zero
      if (a % d != 0 && a > 0)
        ++q;
      return static_cast<int64_t>(q);
    }
    case Expr::TruncDiv:
      return static_cast<int64_t>(static_cast<__int128>(k(0)) / e.value);
    case Expr::TruncRem:
      return static_cast<int64_t>(static_cast<__int128>(k(0)) % e.value);
    case Expr::Min:
      return std::min(k(0), k(1));
    case Expr::Max:
      return std::max(k(0), k(1));
    case Expr::MinU:
      return wrapU(std::min(uint64_t(k(0)), uint64_t(k(1))));
    case Expr::MaxU:
      return wrapU(std::max(uint64_t(k(0)), uint64_t(k(1))));
    case Expr::Abs: {
      int64_t a = k(0);
      return a == std::numeric_limits<int64_t>::min() ? a : (a < 0 ? -a : a);
    }
    case Expr::SelectInt: {
      bool c = b(0);
      return c ? k(1) : k(2);
    }
    case Expr::ExtU:
      return b(0) ? 1 : 0;
    case Expr::ExtS:
      return b(0) ? -1 : 0;
    default:
      ADD_FAILURE() << "not an integer expression";
      return 0;
    }
  }

  static bool compare(int pred, int64_t a, int64_t b) {
    uint64_t ua = uint64_t(a), ub = uint64_t(b);
    switch (pred) {
    case 0: return a == b;
    case 1: return a != b;
    case 2: return a < b;
    case 3: return a <= b;
    case 4: return a > b;
    case 5: return a >= b;
    case 6: return ua < ub;
    case 7: return ua <= ub;
    case 8: return ua > ub;
    default: return ua >= ub;
    }
  }

  bool evalBool(int id) const {
    const Expr &e = pool[id];
    auto k = [&](unsigned x) { return evalInt(e.kids[x]); };
    auto b = [&](unsigned x) { return evalBool(e.kids[x]); };
    switch (e.kind) {
    case Expr::BoolConst:
      return e.value != 0;
    case Expr::Cmp:
      return compare(static_cast<int>(e.value), k(0), k(1));
    case Expr::CmpBool: {
      // Signed predicates see true as -1, unsigned ones as 1.
      bool x = b(0), y = b(1);
      bool isSigned = e.value >= 2 && e.value <= 5;
      int64_t a = x ? (isSigned ? -1 : 1) : 0;
      int64_t c = y ? (isSigned ? -1 : 1) : 0;
      return compare(static_cast<int>(e.value), a, c);
    }
    case Expr::And:
      return b(0) && b(1);
    case Expr::Or:
      return b(0) || b(1);
    case Expr::Xor:
      return b(0) != b(1);
    case Expr::Not:
      return !b(0);
    case Expr::SelectBool: {
      bool c = b(0);
      return c ? b(1) : b(2);
    }
    case Expr::BoolArith: {
      // i1 arithmetic: 1-bit two's complement values, signed true = -1.
      int x = b(0), y = b(1);
      int sx = -x, sy = -y;
      switch (e.value) {
      case 0: return ((x + y) & 1) != 0;   // addi
      case 1: return ((x - y) & 1) != 0;   // subi
      case 2: return (x * y) != 0;         // muli
      case 3: return std::min(sx, sy) != 0; // minsi
      case 4: return std::max(sx, sy) != 0; // maxsi
      case 5: return std::min(x, y) != 0;   // minui
      default: return std::max(x, y) != 0;  // maxui
      }
    }
    case Expr::Trunc:
      return (k(0) & 1) != 0;
    default:
      ADD_FAILURE() << "not a boolean expression";
      return false;
    }
  }
};

TEST_F(MaskEvaluatorTest, RandomTreesAgainstOracle) {
  constexpr int kTrees = 400;
  constexpr int64_t kSeqLen = 777;
  std::mt19937_64 rng(2024);
  int64_t pairs = 0;
  for (int t = 0; t < kTrees; ++t) {
    bool perHead = t % 3 == 0;
    bool causal = t % 4 == 1;
    TreeGen gen(1000 + t, perHead);
    int root = gen.genBool(1 + t % 6);
    TreePrinter printer(gen.pool);
    std::string result = printer.print(root);
    std::ostringstream text;
    text << "sp.pattern @random(";
    const ParamList &params = allParams();
    for (size_t k = 0; k < params.size(); ++k)
      text << (k ? ", " : "") << params[k].first << " = " << params[k].second;
    text << ")" << (causal ? " causal" : "") << " {\n  sp.mask (%i, %j"
         << (perHead ? ", %h" : "") << ") {\n"
         << printer.body << "    sp.yield " << result << "\n  }\n}\n";
    SCOPED_TRACE(text.str());

    sp::PatternOp p = parse(text.str());
    ASSERT_TRUE(p);
    FailureOr<MaskProgram> prog =
        MaskProgram::compile(p.getMasks()[0], Binding(kSeqLen));
    ASSERT_TRUE(succeeded(prog)) << (diags.empty() ? "" : diags.back().message);

    auto oracle = [&](int64_t i, int64_t j, int64_t h) {
      TreeOracle o{gen.pool, i, j, h, kSeqLen};
      return (!causal || j <= i) && o.evalBool(root);
    };
    auto position = [&]() -> int64_t {
      switch (rng() % 8) {
      case 0:
        return static_cast<int64_t>(rng()); // anywhere in 64 bits
      case 1:
        return -static_cast<int64_t>(rng() % 1000);
      default:
        return static_cast<int64_t>(rng() % 2000);
      }
    };
    for (int s = 0; s < 200; ++s) {
      int64_t i = position(), j = position(), h = perHead ? rng() % 8 : 0;
      ASSERT_EQ(prog->evaluate(i, j, h), oracle(i, j, h))
          << "i = " << i << ", j = " << j << ", h = " << h;
      ++pairs;
    }
    // Rows, crossing lane-chunk boundaries and the causal diagonal.
    std::vector<uint8_t> row(600);
    for (int s = 0; s < 4; ++s) {
      int64_t i = position(), h = perHead ? rng() % 8 : 0;
      int64_t jBegin =
          s % 2 ? i - static_cast<int64_t>(rng() % 600) : position();
      int64_t count = 1 + static_cast<int64_t>(rng() % 600);
      prog->evaluateRow(i, h, jBegin, count, row.data());
      for (int64_t k = 0; k < count; ++k) {
        int64_t j = static_cast<int64_t>(uint64_t(jBegin) + uint64_t(k));
        ASSERT_EQ(row[k] != 0, oracle(i, j, h))
            << "row: i = " << i << ", j = " << j << ", h = " << h;
        ++pairs;
      }
    }
    // Free the module: hundreds of them add up.
    modules.clear();
  }
  std::printf("[ random   ] %d trees, %lld (i, j, h) checked\n", kTrees,
              static_cast<long long>(pairs));
}

//===----------------------------------------------------------------------===//
// Diagnostics
//===----------------------------------------------------------------------===//

TEST_F(MaskEvaluatorTest, UnsupportedOp) {
  sp::PatternOp p = parse(R"mlir(
sp.pattern @p() {
  sp.mask (%i, %j) {
    %0 = arith.shli %i, %j : i64
    %1 = arith.cmpi eq, %0, %j : i64
    sp.yield %1
  }
})mlir");
  ASSERT_TRUE(p);
  EXPECT_TRUE(failed(MaskProgram::compile(p.getMasks()[0])));
  ASSERT_EQ(diags.size(), 1u);
  EXPECT_EQ(diags[0].message, "cannot evaluate 'arith.shli' in a mask");
  EXPECT_EQ(diags[0].line, 4u);
}

TEST_F(MaskEvaluatorTest, UnsupportedType) {
  sp::PatternOp p = parse(R"mlir(
sp.pattern @p() {
  sp.mask (%i, %j) {
    %0 = arith.trunci %i : i64 to i32
    %1 = arith.extsi %0 : i32 to i64
    %2 = arith.cmpi eq, %1, %j : i64
    sp.yield %2
  }
})mlir");
  ASSERT_TRUE(p);
  EXPECT_TRUE(failed(MaskProgram::compile(p.getMasks()[0])));
  ASSERT_EQ(diags.size(), 1u);
  EXPECT_EQ(diags[0].message, "cannot evaluate 'arith.trunci' in a mask");
  EXPECT_EQ(diags[0].line, 4u);
}

TEST_F(MaskEvaluatorTest, SeqLenUnbound) {
  const char *text = R"mlir(
sp.pattern @p() {
  sp.mask (%i, %j) {
    %n = sp.seq_len
    %0 = arith.addi %i, %j : i64
    %1 = arith.cmpi slt, %0, %n : i64
    sp.yield %1
  }
})mlir";
  sp::PatternOp p = parse(text);
  ASSERT_TRUE(p);
  EXPECT_TRUE(failed(MaskProgram::compile(p.getMasks()[0])));
  ASSERT_EQ(diags.size(), 1u);
  EXPECT_EQ(diags[0].message,
            "the mask uses the sequence length 'n'; bind it (--seq-len)");
  EXPECT_EQ(diags[0].line, 4u);

  // Bound through the Binding, or through the pattern's seq_len attribute.
  FailureOr<MaskProgram> prog =
      MaskProgram::compile(p.getMasks()[0], Binding(100));
  ASSERT_TRUE(succeeded(prog));
  EXPECT_EQ(prog->getSeqLen(), std::optional<int64_t>(100));
  EXPECT_TRUE(prog->evaluate(60, 39));
  EXPECT_FALSE(prog->evaluate(60, 40));
  p.setSeqLenAttr(IntegerAttr::get(IntegerType::get(&context, 64), 50));
  prog = MaskProgram::compile(p.getMasks()[0]);
  ASSERT_TRUE(succeeded(prog));
  EXPECT_TRUE(prog->evaluate(30, 19));
  EXPECT_FALSE(prog->evaluate(30, 20));
}

TEST_F(MaskEvaluatorTest, DivisorNotPositiveAfterBinding) {
  // The verifier rejects a constant 0 divisor; a parameter bound to 0 gets
  // through it and must be caught here.
  sp::PatternOp p = parse(R"mlir(
sp.pattern @p(l = 0) {
  sp.mask (%i, %j) {
    %l = sp.param "l"
    %0 = sp.mod %i, %l
    %1 = arith.cmpi eq, %0, %j : i64
    sp.yield %1
  }
})mlir");
  ASSERT_TRUE(p);
  EXPECT_TRUE(failed(MaskProgram::compile(p.getMasks()[0])));
  ASSERT_EQ(diags.size(), 1u);
  EXPECT_EQ(diags[0].message,
            "the divisor of 'sp.mod' must be a positive constant after "
            "binding parameters, but is 0");
  EXPECT_EQ(diags[0].line, 5u);

  diags.clear();
  ASSERT_TRUE(p.setParam("l", -3));
  EXPECT_TRUE(failed(MaskProgram::compile(p.getMasks()[0])));
  ASSERT_EQ(diags.size(), 1u);
  EXPECT_EQ(diags[0].message,
            "the divisor of 'sp.mod' must be a positive constant after "
            "binding parameters, but is -3");

  ASSERT_TRUE(p.setParam("l", 5));
  EXPECT_TRUE(succeeded(MaskProgram::compile(p.getMasks()[0])));
}

TEST_F(MaskEvaluatorTest, DivisorNotConstant) {
  sp::PatternOp p = parse(R"mlir(
sp.pattern @p() {
  sp.mask (%i, %j) {
    %0 = sp.div %i, %j
    %c0 = arith.constant 0 : i64
    %1 = arith.cmpi eq, %0, %c0 : i64
    sp.yield %1
  }
})mlir");
  ASSERT_TRUE(p);
  EXPECT_TRUE(failed(MaskProgram::compile(p.getMasks()[0])));
  ASSERT_EQ(diags.size(), 1u);
  EXPECT_EQ(diags[0].message,
            "the divisor of 'sp.div' must be a positive constant after "
            "binding parameters, but depends on the query, key or head");
}

//===----------------------------------------------------------------------===//
// Empty rows
//===----------------------------------------------------------------------===//

TEST_F(MaskEvaluatorTest, EmptyRowCausal) {
  // j % 128 >= 96 under causal: rows 0..95 see no key.
  sp::PatternOp p = parse(R"mlir(
sp.pattern @summary_only(l = 128) causal {
  sp.mask (%i, %j) {
    %l = sp.param "l"
    %0 = sp.mod %j, %l
    %c96 = arith.constant 96 : i64
    %1 = arith.cmpi sge, %0, %c96 : i64
    sp.yield %1
  }
})mlir");
  ASSERT_TRUE(p);
  EXPECT_TRUE(failed(verifyNoEmptyRows(p, 1024, 1)));
  ASSERT_EQ(diags.size(), 1u);
  EXPECT_EQ(diags[0].message, "query row i = 0 attends to no key at n = 1024 "
                              "(its softmax would be undefined)");
  EXPECT_EQ(diags[0].line, 3u); // the sp.mask
}

TEST_F(MaskEvaluatorTest, EmptyRowInOneHead) {
  // Head 2 drops every key of row 7; other heads and rows keep theirs.
  sp::PatternOp p = parse(R"mlir(
sp.pattern @holes() causal {
  sp.mask (%i, %j, %h) {
    %c2 = arith.constant 2 : i64
    %c7 = arith.constant 7 : i64
    %0 = arith.cmpi ne, %h, %c2 : i64
    %1 = arith.cmpi ne, %i, %c7 : i64
    %2 = arith.ori %0, %1 : i1
    sp.yield %2
  }
})mlir");
  ASSERT_TRUE(p);
  EXPECT_TRUE(succeeded(verifyNoEmptyRows(p, 1024, 2)));
  EXPECT_TRUE(diags.empty());
  EXPECT_TRUE(failed(verifyNoEmptyRows(p, 1024, 4)));
  ASSERT_EQ(diags.size(), 1u);
  EXPECT_EQ(diags[0].message,
            "query row i = 7 in head 2 attends to no key at n = 1024 "
            "(its softmax would be undefined)");
  diags.clear();
  // At n = 7 the row does not exist.
  EXPECT_TRUE(succeeded(verifyNoEmptyRows(p, 7, 4)));
  EXPECT_TRUE(diags.empty());
}

TEST_F(MaskEvaluatorTest, EmptyRowInLayerNonCausal) {
  // Layer 1 attends only to later keys: the last row has none, which the
  // upward search must find (and only there).
  sp::PatternOp p = parse(R"mlir(
sp.pattern @lookahead() {
  sp.mask layer 0 (%i, %j) {
    %0 = arith.cmpi sle, %j, %i : i64
    sp.yield %0
  }
  sp.mask layer 1 (%i, %j) {
    %0 = arith.cmpi sgt, %j, %i : i64
    sp.yield %0
  }
})mlir");
  ASSERT_TRUE(p);
  EXPECT_TRUE(failed(verifyNoEmptyRows(p, 5000, 1)));
  ASSERT_EQ(diags.size(), 1u);
  EXPECT_EQ(diags[0].message,
            "query row i = 4999 of layer 1 attends to no key at n = 5000 "
            "(its softmax would be undefined)");
  EXPECT_EQ(diags[0].line, 7u);
}

TEST_F(MaskEvaluatorTest, EmptyRowFarKeyNonCausal) {
  // Row i attends only to key n - 1 - i: a single key far from the diagonal
  // for most rows. No row is empty.
  sp::PatternOp p = parse(R"mlir(
sp.pattern @mirror() {
  sp.mask (%i, %j) {
    %n = sp.seq_len
    %c1 = arith.constant 1 : i64
    %0 = arith.subi %n, %c1 : i64
    %1 = arith.subi %0, %i : i64
    %2 = arith.cmpi eq, %j, %1 : i64
    sp.yield %2
  }
})mlir");
  ASSERT_TRUE(p);
  EXPECT_TRUE(succeeded(verifyNoEmptyRows(p, 3000, 1)));
  EXPECT_TRUE(diags.empty());
}

TEST_F(MaskEvaluatorTest, NoEmptyRowsInPaperPatterns) {
  for (const char *text : {kStrided.c_str(), kFixed.c_str(), kFixedHeads.c_str(),
                           kStridedInterleaved.c_str()}) {
    sp::PatternOp p = parse(text);
    ASSERT_TRUE(p);
    EXPECT_TRUE(succeeded(verifyNoEmptyRows(p, 4096, 8))) << text;
  }
  EXPECT_TRUE(diags.empty()) << diags.front().message;
}

TEST_F(MaskEvaluatorTest, EmptyRowBadArguments) {
  sp::PatternOp p = parse(kFixedHeads);
  ASSERT_TRUE(p);
  EXPECT_TRUE(failed(verifyNoEmptyRows(p, 0, 8)));
  ASSERT_EQ(diags.size(), 1u);
  EXPECT_EQ(diags[0].message, "the sequence length must be positive, but is 0");
  diags.clear();
  EXPECT_TRUE(failed(verifyNoEmptyRows(p, 64, 0)));
  ASSERT_EQ(diags.size(), 1u);
  EXPECT_EQ(diags[0].message, "the head count must be positive, but is 0");
}

//===----------------------------------------------------------------------===//
// Speed (printed, not asserted)
//===----------------------------------------------------------------------===//

std::string withoutCausal(std::string text) {
  size_t at = text.find(" causal {");
  if (at != std::string::npos)
    text.replace(at, 9, " {");
  return text;
}

TEST_F(MaskEvaluatorTest, Speed) {
  using Clock = std::chrono::steady_clock;
  struct Case {
    const char *name;
    std::string text;
  };
  std::vector<Case> cases = {{"strided", kStrided},
                             {"fixed", kFixed},
                             {"fixed_heads", kFixedHeads},
                             {"strided (no causal)", withoutCausal(kStrided)},
                             {"fixed (no causal)", withoutCausal(kFixed)}};
  constexpr int64_t kSide = 1024; // 1M pairs
  std::vector<uint8_t> row(kSide);
  for (const Case &c : cases) {
    sp::PatternOp p = parse(c.text);
    ASSERT_TRUE(p);
    FailureOr<MaskProgram> prog = MaskProgram::compile(p.getMasks()[0]);
    ASSERT_TRUE(succeeded(prog));
    uint64_t sink = 0;
    auto time = [&](auto &&body) {
      double best = 1e30;
      for (int rep = 0; rep < 5; ++rep) {
        auto t0 = Clock::now();
        body();
        double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0)
                        .count();
        best = std::min(best, ns);
      }
      return best / double(kSide * kSide);
    };
    // Whole rows of 1024 keys, offset so that rows are not all causal-trivial.
    double rows = time([&] {
      for (int64_t i = 0; i < kSide; ++i) {
        prog->evaluateRow(i + kSide, 3, kSide / 2, kSide, row.data());
        sink += row[i % kSide];
      }
    });
    // 64x64 blocks, the shape exhaustive block classification asks for.
    double blocks = time([&] {
      for (int64_t qb = 0; qb < kSide; qb += 64)
        for (int64_t kb = 0; kb < kSide; kb += 64)
          for (int64_t i = qb; i < qb + 64; ++i) {
            prog->evaluateRow(i, 3, kb, 64, row.data());
            sink += row[0];
          }
    });
    double scalar = time([&] {
      for (int64_t i = 0; i < kSide; ++i)
        for (int64_t j = 0; j < kSide; ++j)
          sink += prog->evaluate(i + kSide, j + kSide / 2, 3);
    });
    std::printf("[ speed    ] %-20s evaluateRow(1024 keys): %.3f ns/pair, "
                "64x64 blocks: %.3f ns/pair, evaluate(): %.2f ns/pair "
                "(%zu instructions, sink %llu)\n",
                c.name, rows, blocks, scalar, prog->getNumInstructions(),
                static_cast<unsigned long long>(sink % 10));
  }

  // The empty-row check at a long sequence: O(n) for these patterns.
  for (const std::string &text : {kStrided, kFixed}) {
    sp::PatternOp p = parse(text);
    ASSERT_TRUE(p);
    constexpr int64_t kN = 1 << 20;
    auto t0 = Clock::now();
    EXPECT_TRUE(succeeded(verifyNoEmptyRows(p, kN, 1)));
    double ms =
        std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    std::printf("[ speed    ] verifyNoEmptyRows(@%s, n = %lld): %.1f ms\n",
                p.getSymName().str().c_str(), static_cast<long long>(kN), ms);
  }
}

} // namespace
