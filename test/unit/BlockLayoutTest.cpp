//===- BlockLayoutTest.cpp - block classification against brute force ----===//
//
// classifyBlocks (abstract interpretation with exhaustive fallback) must
// agree exactly with brute force: the class of every block, the count of
// attended pairs, the transposed tables and the Range schedule, for the
// shipped patterns (decomposed into disjoint components as sp-decompose
// writes them) and for random masks, at small n that is not a multiple of the
// block size, under every index map family. Also: the work efficiency of the
// paper's patterns under their good maps, the speed at n = 2^20 (printed,
// not asserted), the memory limit, determinism, and the strided row
// evaluation of MaskProgram.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Analysis/AbstractMask.h"
#include "sparsetx/Analysis/BlockLayout.h"
#include "sparsetx/Analysis/IndexMap.h"
#include "sparsetx/Analysis/MaskEvaluator.h"
#include "sparsetx/Dialect/SP/IR/SP.h"

#include "TestUtil.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "llvm/Support/Parallel.h"
#include "llvm/Support/Threading.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace mlir;
using namespace sparsetx;

namespace {

//===----------------------------------------------------------------------===//
// Fixture
//===----------------------------------------------------------------------===//

class BlockLayoutTest : public test::PatternTest {};

/// A component compiled both ways.
struct Compiled {
  MaskProgram program;
  AbstractMask abstract;
};

bool compileComponent(sp::MaskOp mask, int64_t n,
                      std::optional<unsigned> component, Compiled &out) {
  FailureOr<MaskProgram> prog =
      MaskProgram::compile(mask, Binding(n), component);
  if (failed(prog))
    return false;
  FailureOr<AbstractMask> abs =
      AbstractMask::compile(mask, Binding(n), component);
  if (failed(abs))
    return false;
  out.program = std::move(*prog);
  out.abstract = std::move(*abs);
  return true;
}

//===----------------------------------------------------------------------===//
// The shipped patterns, decomposed (A || B = A + (B && !A))
//===----------------------------------------------------------------------===//

std::string stridedText(int64_t l) {
  return R"mlir(
sp.pattern @strided(l = )mlir" +
         std::to_string(l) + R"mlir() causal {
  sp.mask (%i, %j) attributes {disjoint} {
    %l = sp.param "l"
    %0 = arith.subi %i, %j : i64
    %row = arith.cmpi slt, %0, %l : i64
    %1 = sp.mod %0, %l
    %c0 = arith.constant 0 : i64
    %col = arith.cmpi eq, %1, %c0 : i64
    %true = arith.constant true
    %notrow = arith.xori %row, %true : i1
    %colonly = arith.andi %col, %notrow : i1
    sp.yield %row, %colonly
  }
}
)mlir";
}

std::string fixedText(int64_t l, int64_t c) {
  return "\nsp.pattern @fixed(l = " + std::to_string(l) +
         ", c = " + std::to_string(c) + R"mlir() causal {
  sp.mask (%i, %j) attributes {disjoint} {
    %l = sp.param "l"
    %c = sp.param "c"
    %0 = sp.div %i, %l
    %1 = sp.div %j, %l
    %block = arith.cmpi eq, %0, %1 : i64
    %2 = sp.mod %j, %l
    %3 = arith.subi %l, %c : i64
    %summary = arith.cmpi sge, %2, %3 : i64
    %true = arith.constant true
    %notblock = arith.xori %block, %true : i1
    %sonly = arith.andi %summary, %notblock : i1
    sp.yield %block, %sonly
  }
}
)mlir";
}

const char *const kLocal5 = R"mlir(
sp.pattern @local(w = 5) causal {
  sp.mask (%i, %j) {
    %w = sp.param "w"
    %0 = arith.subi %i, %j : i64
    %1 = arith.cmpi slt, %0, %w : i64
    sp.yield %1
  }
}
)mlir";

const char *const kDense = R"mlir(
sp.pattern @dense() causal {
  sp.mask (%i, %j) {
    %true = arith.constant true
    sp.yield %true
  }
}
)mlir";

/// fixed_heads with l = 16, c = 4: four heads whose summaries tile a block.
const char *const kFixedHeads = R"mlir(
sp.pattern @fixed_heads(l = 16, c = 4) causal {
  sp.mask (%i, %j, %h) attributes {disjoint} {
    %l = sp.param "l"
    %c = sp.param "c"
    %0 = sp.div %i, %l
    %1 = sp.div %j, %l
    %block = arith.cmpi eq, %0, %1 : i64
    %3 = sp.mod %j, %l
    %one = arith.constant 1 : i64
    %4 = arith.addi %h, %one : i64
    %5 = arith.muli %c, %4 : i64
    %6 = arith.subi %l, %5 : i64
    %7 = arith.cmpi sge, %3, %6 : i64
    %8 = arith.muli %c, %h : i64
    %9 = arith.subi %l, %8 : i64
    %10 = arith.cmpi slt, %3, %9 : i64
    %summary = arith.andi %7, %10 : i1
    %true = arith.constant true
    %notblock = arith.xori %block, %true : i1
    %sonly = arith.andi %summary, %notblock : i1
    sp.yield %block, %sonly
  }
}
)mlir";

/// Not causal: a symmetric window plus every 6th key, both directions.
const char *const kBidirectional = R"mlir(
sp.pattern @bidirectional(w = 2, s = 6) {
  sp.mask (%i, %j) attributes {disjoint} {
    %w = sp.param "w"
    %s = sp.param "s"
    %0 = arith.subi %i, %j : i64
    %1 = math.absi %0 : i64
    %near = arith.cmpi sle, %1, %w : i64
    %2 = sp.mod %j, %s
    %c0 = arith.constant 0 : i64
    %global = arith.cmpi eq, %2, %c0 : i64
    %true = arith.constant true
    %notnear = arith.xori %near, %true : i1
    %gonly = arith.andi %global, %notnear : i1
    sp.yield %near, %gonly
  }
}
)mlir";

//===----------------------------------------------------------------------===//
// Brute force and the checks
//===----------------------------------------------------------------------===//

/// The component's truth table on [0, n)^2 for one head.
struct Truth {
  int64_t n = 0;
  std::vector<uint8_t> bits;
  int64_t count = 0;

  Truth(const MaskProgram &prog, int64_t n, int64_t head) : n(n) {
    bits.resize(static_cast<size_t>(n * n));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        count += bits[i * n + j] = prog.evaluate(i, j, head);
  }
  bool at(int64_t i, int64_t j) const { return bits[i * n + j]; }

  /// The residues mod d of the rows (queries) or columns (keys) where the
  /// component is true somewhere.
  std::vector<int64_t> residues(int64_t d, bool ofQueries) const {
    std::set<int64_t> s;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        if (at(i, j))
          s.insert((ofQueries ? i : j) % d);
    return {s.begin(), s.end()};
  }
};

/// Every map of the families over the given periods for one side: identity,
/// transpose(d), and gather(d, S) with S the residues that side needs (when
/// there are any), plus, with `superset`, S with one extra residue.
std::vector<IndexMap> mapFamily(const Truth &truth,
                                const std::vector<int64_t> &periods,
                                bool ofQueries, bool superset,
                                std::mt19937_64 &rng) {
  std::vector<IndexMap> maps = {IndexMap::identity()};
  for (int64_t d : periods) {
    if (d < 1)
      continue;
    maps.push_back(IndexMap::transpose(d));
    std::vector<int64_t> s = truth.residues(d, ofQueries);
    if (s.empty())
      continue;
    maps.push_back(IndexMap::gather(d, s));
    if (superset && static_cast<int64_t>(s.size()) < d) {
      std::set<int64_t> more(s.begin(), s.end());
      while (static_cast<int64_t>(more.size()) == static_cast<int64_t>(s.size()))
        more.insert(static_cast<int64_t>(rng() % d));
      maps.push_back(IndexMap::gather(d, {more.begin(), more.end()}));
    }
  }
  return maps;
}

/// Classes 0/1/2 of a layout's tables, row-major; checks that the rows are
/// ascending and that no block is both full and partial.
std::vector<uint8_t> classesOf(const ComponentLayout &layout) {
  int64_t nq = layout.numQueryBlocks, nk = layout.numKeyBlocks;
  std::vector<uint8_t> classes(static_cast<size_t>(nq * nk), 0);
  auto fill = [&](const BlockTable &t, uint8_t cls) {
    EXPECT_EQ(static_cast<int64_t>(t.offsets.size()), nq + 1);
    if (static_cast<int64_t>(t.offsets.size()) != nq + 1)
      return;
    EXPECT_EQ(t.offsets.front(), 0);
    EXPECT_EQ(t.offsets.back(), t.size());
    for (int64_t qb = 0; qb < nq; ++qb)
      for (int64_t e = t.offsets[qb]; e < t.offsets[qb + 1]; ++e) {
        int32_t kb = t.indices[e];
        ASSERT_TRUE(kb >= 0 && kb < nk);
        if (e > t.offsets[qb]) {
          EXPECT_LT(t.indices[e - 1], kb) << "row " << qb << " not ascending";
        }
        EXPECT_EQ(classes[qb * nk + kb], 0) << "block listed twice";
        classes[qb * nk + kb] = cls;
      }
  };
  fill(layout.full, 1);
  fill(layout.partial, 2);
  return classes;
}

/// The by-key table must list, for each key block, the query blocks of the
/// class, ascending.
void checkTranspose(const std::vector<uint8_t> &classes, uint8_t cls,
                    const BlockTable &byKey, int64_t nq, int64_t nk) {
  ASSERT_EQ(static_cast<int64_t>(byKey.offsets.size()), nk + 1);
  EXPECT_EQ(byKey.offsets.front(), 0);
  EXPECT_EQ(byKey.offsets.back(), byKey.size());
  for (int64_t kb = 0; kb < nk; ++kb) {
    std::vector<int32_t> expected, got;
    for (int64_t qb = 0; qb < nq; ++qb)
      if (classes[qb * nk + kb] == cls)
        expected.push_back(static_cast<int32_t>(qb));
    for (int64_t e = byKey.offsets[kb]; e < byKey.offsets[kb + 1]; ++e)
      got.push_back(byKey.indices[e]);
    ASSERT_EQ(got, expected) << "transposed table, key block " << kb;
  }
}

/// The schedule is Range exactly when every row allows it, and then its
/// numbers describe the rows.
void checkSchedule(const ComponentLayout &layout,
                   const std::vector<uint8_t> &classes) {
  int64_t nq = layout.numQueryBlocks, nk = layout.numKeyBlocks;
  bool allow = true;
  for (int64_t qb = 0; qb < nq && allow; ++qb) {
    int64_t lo = nk, hi = -1, flo = nk, fhi = -1, cnt = 0, fcnt = 0;
    for (int64_t kb = 0; kb < nk; ++kb) {
      uint8_t c = classes[qb * nk + kb];
      if (c) {
        lo = std::min(lo, kb), hi = std::max(hi, kb), ++cnt;
        if (c == 1)
          flo = std::min(flo, kb), fhi = std::max(fhi, kb), ++fcnt;
      }
    }
    if (cnt && hi - lo + 1 != cnt)
      allow = false;
    if (fcnt && fhi - flo + 1 != fcnt)
      allow = false;
  }
  ASSERT_EQ(layout.schedule == ScheduleKind::Range, allow);
  if (!allow)
    return;
  ASSERT_EQ(static_cast<int64_t>(layout.rangeBegin.size()), nq);
  ASSERT_EQ(static_cast<int64_t>(layout.rangeEnd.size()), nq);
  ASSERT_EQ(static_cast<int64_t>(layout.fullBegin.size()), nq);
  ASSERT_EQ(static_cast<int64_t>(layout.fullEnd.size()), nq);
  for (int64_t qb = 0; qb < nq; ++qb) {
    int32_t b = layout.rangeBegin[qb], e = layout.rangeEnd[qb];
    int32_t fb = layout.fullBegin[qb], fe = layout.fullEnd[qb];
    ASSERT_LE(b, e);
    ASSERT_LE(fb, fe);
    if (fb < fe) {
      ASSERT_LE(b, fb);
      ASSERT_LE(fe, e);
    }
    for (int64_t kb = 0; kb < nk; ++kb) {
      uint8_t c = classes[qb * nk + kb];
      bool inRange = kb >= b && kb < e, inFull = kb >= fb && kb < fe;
      ASSERT_EQ(c != 0, inRange) << "qb " << qb << " kb " << kb;
      ASSERT_EQ(c == 1, inFull) << "qb " << qb << " kb " << kb;
    }
  }
}

struct Counters {
  int64_t configs = 0, blocks = 0, abstractQueries = 0, evaluatedPairs = 0,
          pairs = 0;
};

/// The core check: classifyBlocks == brute force, exactly.
void checkExact(const Compiled &c, const Truth &truth, const IndexMap &qm,
                const IndexMap &km, int64_t bq, int64_t bk, int64_t head,
                Counters &counters) {
  SCOPED_TRACE("maps " + qm.str() + " / " + km.str() + ", n = " +
               std::to_string(truth.n) + ", blocks " + std::to_string(bq) +
               "x" + std::to_string(bk) + ", head " + std::to_string(head));
  int64_t n = truth.n;
  BlockLayoutOptions options;
  options.blockQ = bq;
  options.blockK = bk;
  options.head = head;
  std::string error;
  FailureOr<ComponentLayout> layout =
      classifyBlocks(c.program, c.abstract, qm, km, n, options, error);
  ASSERT_TRUE(succeeded(layout)) << error;

  // Reference classes straight from the truth table.
  BoundIndexMap q(qm, n), k(km, n);
  int64_t nq = (q.size() + bq - 1) / bq, nk = (k.size() + bk - 1) / bk;
  ASSERT_EQ(layout->numQueryBlocks, nq);
  ASSERT_EQ(layout->numKeyBlocks, nk);
  std::vector<uint8_t> expected(static_cast<size_t>(nq * nk));
  int64_t mappedCount = 0, computed = 0;
  for (int64_t qb = 0; qb < nq; ++qb)
    for (int64_t kb = 0; kb < nk; ++kb) {
      int64_t cnt = 0, area = 0;
      for (int64_t t = qb * bq; t < std::min(q.size(), (qb + 1) * bq); ++t)
        for (int64_t s = kb * bk; s < std::min(k.size(), (kb + 1) * bk);
             ++s, ++area)
          cnt += truth.at(q.position(t), k.position(s));
      expected[qb * nk + kb] = cnt == 0 ? 0 : cnt == area ? 1 : 2;
      mappedCount += cnt;
      if (cnt)
        computed += area;
    }
  // The maps must not drop attended pairs (the gathers' residue sets).
  ASSERT_EQ(mappedCount, truth.count) << "the test's maps drop pairs";

  std::vector<uint8_t> exhaustive =
      classifyBlocksExhaustively(c.program, qm, km, n, options);
  ASSERT_EQ(exhaustive, expected) << "classifyBlocksExhaustively";

  std::vector<uint8_t> got = classesOf(*layout);
  for (int64_t qb = 0; qb < nq; ++qb)
    for (int64_t kb = 0; kb < nk; ++kb)
      ASSERT_EQ(int(got[qb * nk + kb]), int(expected[qb * nk + kb]))
          << "block (" << qb << ", " << kb << ")";
  EXPECT_EQ(layout->usefulPairs, truth.count);
  EXPECT_EQ(layout->computedPairs, computed);
  EXPECT_EQ(layout->numEmpty() + layout->numFull() + layout->numPartial(),
            nq * nk);
  checkTranspose(expected, 1, layout->fullByKey, nq, nk);
  checkTranspose(expected, 2, layout->partialByKey, nq, nk);
  checkSchedule(*layout, expected);

  ++counters.configs;
  counters.blocks += nq * nk;
  counters.abstractQueries += layout->abstractQueries;
  counters.evaluatedPairs += layout->evaluatedPairs;
  counters.pairs += n * n;
}

struct BlockShape {
  int64_t q, k;
};
const BlockShape kShapes[] = {{8, 8}, {16, 8}, {4, 16}};
const int64_t kSeqLens[] = {37, 100, 129};

/// Every component of the pattern's first mask under every map pair, every
/// small n, every block shape (and every head in [0, numHeads)).
void checkPattern(BlockLayoutTest &, sp::PatternOp pattern,
                  const std::vector<int64_t> &periods, int64_t numHeads,
                  Counters &counters) {
  ASSERT_TRUE(pattern);
  sp::MaskOp mask = pattern.getMasks()[0];
  unsigned numComponents = mask.getNumComponents();
  std::mt19937_64 rng(7);
  for (int64_t n : kSeqLens) {
    for (unsigned comp = 0; comp < numComponents; ++comp) {
      Compiled c;
      ASSERT_TRUE(compileComponent(mask, n, comp, c));
      for (int64_t h = 0; h < numHeads; ++h) {
        SCOPED_TRACE("@" + pattern.getSymName().str() + " component " +
                     std::to_string(comp));
        Truth truth(c.program, n, h);
        std::vector<IndexMap> qmaps =
            mapFamily(truth, periods, /*ofQueries=*/true, false, rng);
        std::vector<IndexMap> kmaps =
            mapFamily(truth, periods, /*ofQueries=*/false, false, rng);
        for (const IndexMap &qm : qmaps)
          for (const IndexMap &km : kmaps)
            for (BlockShape s : kShapes) {
              checkExact(c, truth, qm, km, s.q, s.k, h, counters);
              if (::testing::Test::HasFatalFailure())
                return;
            }
      }
    }
  }
}

void printCounters(const char *what, const Counters &c) {
  std::printf("[ exact    ] %s: %lld configurations, %lld blocks, %lld "
              "abstract queries, %lld of %lld pairs evaluated concretely\n",
              what, static_cast<long long>(c.configs),
              static_cast<long long>(c.blocks),
              static_cast<long long>(c.abstractQueries),
              static_cast<long long>(c.evaluatedPairs),
              static_cast<long long>(c.pairs));
}

TEST_F(BlockLayoutTest, ExactStrided) {
  Counters counters;
  for (int64_t l = 8; l <= 16; ++l) {
    checkPattern(*this, parse(stridedText(l)), {l}, 1, counters);
    if (HasFatalFailure())
      return;
  }
  printCounters("strided l = 8..16", counters);
}

TEST_F(BlockLayoutTest, ExactFixed) {
  Counters counters;
  checkPattern(*this, parse(fixedText(16, 4)), {16}, 1, counters);
  checkPattern(*this, parse(fixedText(8, 3)), {8}, 1, counters);
  printCounters("fixed", counters);
}

TEST_F(BlockLayoutTest, ExactLocalDenseHeadsBidirectional) {
  Counters counters;
  checkPattern(*this, parse(kLocal5), {5}, 1, counters);
  checkPattern(*this, parse(kDense), {4}, 1, counters);
  checkPattern(*this, parse(kFixedHeads), {16}, 4, counters);
  checkPattern(*this, parse(kBidirectional), {6, 5}, 1, counters);
  printCounters("local, dense, fixed_heads, bidirectional", counters);
}

//===----------------------------------------------------------------------===//
// Random masks
//===----------------------------------------------------------------------===//

/// Random mask expressions printed as sp text, biased toward the shapes
/// patterns have (differences and quotients of positions compared with small
/// constants) but with wrapping arithmetic, negative values and big constants
/// mixed in.
class RandomMask {
public:
  RandomMask(uint64_t seed, bool perHead) : rng(seed), perHead(perHead) {}

  std::string body;
  std::set<int64_t> periods;

  std::string genBool(int depth) {
    unsigned pick = depth <= 0 ? 0 : pickIn(10);
    switch (pick) {
    case 0:
    case 1:
    case 2:
    case 3: {
      static const char *const preds[] = {"eq",  "ne",  "slt", "sle", "sgt",
                                          "sge", "slt", "sle", "ult", "uge"};
      std::string a = genInt(depth - 1), b = genSmallOrInt(depth - 1);
      return line(std::string("arith.cmpi ") + preds[pickIn(10)] + ", " + a +
                  ", " + b + " : i64");
    }
    case 4:
      return binary("arith.andi", genBool(depth - 1), genBool(depth - 1),
                    "i1");
    case 5:
      return binary("arith.ori", genBool(depth - 1), genBool(depth - 1),
                    "i1");
    case 6:
      return binary("arith.xori", genBool(depth - 1), genBool(depth - 1),
                    "i1");
    case 7:
      return binary("arith.xori", genBool(depth - 1),
                    line("arith.constant true"), "i1");
    case 8: {
      std::string c = genBool(depth - 1), t = genBool(depth - 1),
                  f = genBool(depth - 1);
      return line("arith.select " + c + ", " + t + ", " + f + " : i1");
    }
    default:
      return pickIn(4) == 0
                 ? line(pickIn(2) ? "arith.constant true"
                                  : "arith.constant false")
                 : genBool(0);
    }
  }

  std::string genInt(int depth) {
    if (depth <= 0 || pickIn(4) == 0)
      return genLeaf();
    switch (pickIn(12)) {
    case 0:
    case 1:
      return binary("arith.subi", genInt(depth - 1), genInt(depth - 1),
                    "i64");
    case 2:
      return binary("arith.addi", genInt(depth - 1), genSmallOrInt(depth - 1),
                    "i64");
    case 3:
      return binary("arith.muli", genInt(depth - 1), constant(smallConst()),
                    "i64");
    case 4:
    case 5:
      return division("sp.div", depth);
    case 6:
    case 7:
      return division("sp.mod", depth);
    case 8:
      return binary(pickIn(2) ? "arith.minsi" : "arith.maxsi",
                    genInt(depth - 1), genInt(depth - 1), "i64");
    case 9: {
      std::string a = genInt(depth - 1);
      return line("math.absi " + a + " : i64");
    }
    case 10: {
      std::string c = genBool(depth - 1), t = genInt(depth - 1),
                  f = genInt(depth - 1);
      return line("arith.select " + c + ", " + t + ", " + f + " : i64");
    }
    default:
      return division(pickIn(2) ? "arith.floordivsi" : "arith.remsi", depth);
    }
  }

private:
  unsigned pickIn(unsigned n) { return static_cast<unsigned>(rng() % n); }

  int64_t smallConst() { return static_cast<int64_t>(pickIn(41)) - 20; }

  std::string constant(int64_t v) {
    return line("arith.constant " + std::to_string(v) + " : i64");
  }

  std::string genSmallOrInt(int depth) {
    return pickIn(2) ? constant(smallConst()) : genInt(depth);
  }

  std::string genLeaf() {
    switch (pickIn(perHead ? 9 : 8)) {
    case 0:
    case 1:
      return "%i";
    case 2:
    case 3:
      return "%j";
    case 4: {
      std::string d = binary("arith.subi", "%i", "%j", "i64");
      return d;
    }
    case 5:
      return line("sp.param \"l\"");
    case 6:
      if (pickIn(4) == 0) {
        static const int64_t big[] = {int64_t(1) << 40, -(int64_t(1) << 62),
                                      std::numeric_limits<int64_t>::max(),
                                      std::numeric_limits<int64_t>::min()};
        return constant(big[pickIn(4)]);
      }
      return constant(smallConst());
    case 7:
      return constant(smallConst());
    default:
      return "%h";
    }
  }

  std::string division(const char *op, int depth) {
    std::string a = genInt(depth - 1);
    static const int64_t divisors[] = {2, 3, 4, 5, 7, 8, 16};
    int64_t d = pickIn(4) == 0 ? 6 : divisors[pickIn(7)];
    std::string dv = d == 6 ? line("sp.param \"l\"") : constant(d);
    if (periods.size() < 2 || periods.count(d))
      periods.insert(d);
    std::string name = line(std::string(op) + " " + a + ", " + dv +
                            (op[0] == 'a' ? " : i64" : ""));
    return name;
  }

  std::string line(const std::string &rhs) {
    std::string name = "%v" + std::to_string(counter++);
    body += "    " + name + " = " + rhs + "\n";
    return name;
  }
  std::string binary(const std::string &op, const std::string &a,
                     const std::string &b, const std::string &type) {
    return line(op + " " + a + ", " + b + " : " + type);
  }

  std::mt19937_64 rng;
  bool perHead;
  unsigned counter = 0;
};

TEST_F(BlockLayoutTest, ExactRandomMasks) {
  constexpr int kMasks = 300;
  std::mt19937_64 rng(99);
  Counters counters;
  int64_t nonTrivial = 0;
  for (int m = 0; m < kMasks; ++m) {
    bool perHead = m % 5 == 0;
    bool causal = m % 3 != 2;
    RandomMask gen(5000 + m, perHead);
    std::string a = gen.genBool(1 + m % 4);
    std::string b = gen.genBool(1 + (m / 4) % 4);
    // Decomposed as sp-decompose writes A || B.
    gen.body += "    %t = arith.constant true\n    %na = arith.xori " + a +
                ", %t : i1\n    %bna = arith.andi " + b + ", %na : i1\n";
    std::ostringstream text;
    text << "sp.pattern @random(l = 6)" << (causal ? " causal" : "")
         << " {\n  sp.mask (%i, %j" << (perHead ? ", %h" : "")
         << ") attributes {disjoint} {\n"
         << gen.body << "    sp.yield " << a << ", %bna\n  }\n}\n";
    SCOPED_TRACE(text.str());
    sp::PatternOp p = parse(text.str());
    ASSERT_TRUE(p);
    sp::MaskOp mask = p.getMasks()[0];
    std::vector<int64_t> periods(gen.periods.begin(), gen.periods.end());

    int64_t n = kSeqLens[rng() % 3];
    BlockShape shape = kShapes[rng() % 3];
    int64_t head = perHead ? static_cast<int64_t>(rng() % 3) : 0;
    for (unsigned comp = 0; comp < 2; ++comp) {
      Compiled c;
      ASSERT_TRUE(compileComponent(mask, n, comp, c))
          << (diags.empty() ? "" : diags.back());
      Truth truth(c.program, n, head);
      if (truth.count != 0 && truth.count != n * n)
        ++nonTrivial;
      std::vector<IndexMap> qmaps =
          mapFamily(truth, periods, true, /*superset=*/true, rng);
      std::vector<IndexMap> kmaps =
          mapFamily(truth, periods, false, /*superset=*/true, rng);
      // Identity / identity always, then a random sample of the pairs.
      std::vector<std::pair<size_t, size_t>> pairs = {{0, 0}};
      for (size_t x = 0; x < qmaps.size(); ++x)
        for (size_t y = 0; y < kmaps.size(); ++y)
          if ((x || y) && rng() % 2 == 0)
            pairs.push_back({x, y});
      for (auto [x, y] : pairs) {
        checkExact(c, truth, qmaps[x], kmaps[y], shape.q, shape.k, head,
                   counters);
        if (HasFatalFailure())
          return;
      }
    }
    modules.clear();
  }
  printCounters("random masks", counters);
  std::printf("[ exact    ] %lld of %d random components neither empty nor "
              "full\n",
              static_cast<long long>(nonTrivial), 2 * kMasks);
  EXPECT_GT(nonTrivial, kMasks / 2);
}

//===----------------------------------------------------------------------===//
// Decomposition
//===----------------------------------------------------------------------===//

TEST_F(BlockLayoutTest, DecompositionIsExact) {
  struct Case {
    std::string text;
    std::vector<IndexMap> qmaps, kmaps; // per component
    int64_t heads;
  };
  std::vector<Case> cases = {
      {stridedText(8),
       {IndexMap::identity(), IndexMap::transpose(8)},
       {IndexMap::identity(), IndexMap::transpose(8)},
       1},
      {stridedText(11),
       {IndexMap::identity(), IndexMap::transpose(11)},
       {IndexMap::identity(), IndexMap::transpose(11)},
       1},
      {fixedText(16, 4),
       {IndexMap::identity(), IndexMap::identity()},
       {IndexMap::identity(), IndexMap::gather(16, {12, 13, 14, 15})},
       1},
      {kFixedHeads,
       {IndexMap::identity(), IndexMap::identity()},
       {IndexMap::identity(), IndexMap::identity()},
       4},
      {kBidirectional,
       {IndexMap::identity(), IndexMap::identity()},
       {IndexMap::identity(), IndexMap::gather(6, {0})},
       1},
  };
  for (const Case &cs : cases) {
    sp::PatternOp p = parse(cs.text);
    ASSERT_TRUE(p);
    SCOPED_TRACE("@" + p.getSymName().str());
    sp::MaskOp mask = p.getMasks()[0];
    for (int64_t n : kSeqLens) {
      FailureOr<MaskProgram> unionProg =
          MaskProgram::compile(mask, Binding(n));
      ASSERT_TRUE(succeeded(unionProg));
      Compiled comps[2];
      ASSERT_TRUE(compileComponent(mask, n, 0u, comps[0]));
      ASSERT_TRUE(compileComponent(mask, n, 1u, comps[1]));
      for (int64_t h = 0; h < cs.heads; ++h) {
        int64_t unionCount = 0;
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < n; ++j) {
            bool a = comps[0].program.evaluate(i, j, h);
            bool b = comps[1].program.evaluate(i, j, h);
            ASSERT_FALSE(a && b) << "components overlap at (" << i << ", "
                                 << j << ")";
            ASSERT_EQ(a || b, unionProg->evaluate(i, j, h));
            unionCount += a || b;
          }
        int64_t sum = 0;
        for (unsigned k = 0; k < 2; ++k) {
          BlockLayoutOptions options;
          options.blockQ = 8;
          options.blockK = 8;
          options.head = h;
          std::string error;
          FailureOr<ComponentLayout> layout =
              classifyBlocks(comps[k].program, comps[k].abstract,
                             cs.qmaps[k], cs.kmaps[k], n, options, error);
          ASSERT_TRUE(succeeded(layout)) << error;
          sum += layout->usefulPairs;
        }
        EXPECT_EQ(sum, unionCount) << "n = " << n << ", head " << h;
      }
    }
  }
}

//===----------------------------------------------------------------------===//
// Efficiency and speed of the paper's patterns under their good maps
//===----------------------------------------------------------------------===//

struct Plan {
  unsigned component;
  IndexMap qmap, kmap;
};

struct Measured {
  int64_t useful = 0, computed = 0, full = 0, partial = 0, queries = 0,
          pairs = 0;
  double seconds = 0;
  bool allRange = true;
};

/// Lays out every component of the pattern's mask under its planned maps.
Measured layOut(sp::MaskOp mask, const std::vector<Plan> &plans, int64_t n,
                int64_t block, const char *name, bool verbose,
                bool checkCount) {
  Measured total;
  for (const Plan &plan : plans) {
    Compiled c;
    EXPECT_TRUE(compileComponent(mask, n, plan.component, c));
    BlockLayoutOptions options;
    options.blockQ = options.blockK = block;
    std::string error;
    auto start = std::chrono::steady_clock::now();
    FailureOr<ComponentLayout> layout =
        classifyBlocks(c.program, c.abstract, plan.qmap, plan.kmap, n,
                       options, error);
    double seconds = std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - start)
                         .count();
    EXPECT_TRUE(succeeded(layout)) << error;
    if (failed(layout))
      return total;
    if (checkCount) {
      // The useful pairs by brute force over whole rows.
      std::vector<uint8_t> row(static_cast<size_t>(n));
      int64_t count = 0;
      for (int64_t i = 0; i < n; ++i) {
        c.program.evaluateRow(i, 0, 0, n, row.data());
        for (int64_t j = 0; j < n; ++j)
          count += row[j];
      }
      EXPECT_EQ(layout->usefulPairs, count)
          << name << " component " << plan.component;
    }
    if (verbose)
      std::printf("[ layout   ] %-8s n = %-8lld %-22s / %-22s %8lld full "
                  "%7lld partial  eff %.3f  %s  %6lld abstract queries, "
                  "%10lld pairs evaluated, %.3f s\n",
                  name, static_cast<long long>(n), plan.qmap.str().c_str(),
                  plan.kmap.str().c_str(),
                  static_cast<long long>(layout->numFull()),
                  static_cast<long long>(layout->numPartial()),
                  layout->workEfficiency(),
                  layout->schedule == ScheduleKind::Range ? "range" : "table",
                  static_cast<long long>(layout->abstractQueries),
                  static_cast<long long>(layout->evaluatedPairs), seconds);
    total.useful += layout->usefulPairs;
    total.computed += layout->computedPairs;
    total.full += layout->numFull();
    total.partial += layout->numPartial();
    total.queries += layout->abstractQueries;
    total.pairs += layout->evaluatedPairs;
    total.seconds += seconds;
    total.allRange &= layout->schedule == ScheduleKind::Range;
  }
  return total;
}

const std::vector<Plan> &stridedGood() {
  static const std::vector<Plan> plans = {
      {0, IndexMap::identity(), IndexMap::identity()},
      {1, IndexMap::transpose(128), IndexMap::transpose(128)}};
  return plans;
}
std::vector<int64_t> range(int64_t lo, int64_t hi) {
  std::vector<int64_t> v;
  for (int64_t x = lo; x <= hi; ++x)
    v.push_back(x);
  return v;
}
const std::vector<Plan> &fixedGood() {
  static const std::vector<Plan> plans = {
      {0, IndexMap::identity(), IndexMap::identity()},
      {1, IndexMap::identity(), IndexMap::gather(128, range(96, 127))}};
  return plans;
}
const std::vector<Plan> &identityPlans() {
  static const std::vector<Plan> plans = {
      {0, IndexMap::identity(), IndexMap::identity()},
      {1, IndexMap::identity(), IndexMap::identity()}};
  return plans;
}

double efficiency(const Measured &m) {
  return m.computed ? double(m.useful) / double(m.computed) : 1.0;
}

TEST_F(BlockLayoutTest, WorkEfficiencyAt16384) {
  constexpr int64_t n = 16384;
  sp::PatternOp strided = parse(stridedText(128));
  sp::PatternOp fixed = parse(fixedText(128, 32));
  ASSERT_TRUE(strided && fixed);
  Measured s = layOut(strided.getMasks()[0], stridedGood(), n, 64, "strided",
                      true, true);
  Measured f = layOut(fixed.getMasks()[0], fixedGood(), n, 64, "fixed", true,
                      true);
  Measured si = layOut(strided.getMasks()[0], identityPlans(), n, 64,
                       "strided", true, false);
  Measured fi = layOut(fixed.getMasks()[0], identityPlans(), n, 64, "fixed",
                       true, false);
  std::printf("[ effic.   ] n = 16384, 64x64 blocks: strided %.3f (identity "
              "maps %.3f), fixed %.3f (identity maps %.3f)\n",
              efficiency(s), efficiency(si), efficiency(f), efficiency(fi));
  EXPECT_EQ(s.useful, si.useful);
  EXPECT_EQ(f.useful, fi.useful);
  EXPECT_GE(efficiency(f), 0.9);
  EXPECT_GE(efficiency(s), 0.6);
  EXPECT_TRUE(s.allRange);
  EXPECT_TRUE(f.allRange);
}

TEST_F(BlockLayoutTest, SpeedAtOneMillion) {
  constexpr int64_t n = int64_t(1) << 20;
  sp::PatternOp strided = parse(stridedText(128));
  sp::PatternOp fixed = parse(fixedText(128, 32));
  ASSERT_TRUE(strided && fixed);
  Measured s = layOut(strided.getMasks()[0], stridedGood(), n, 64, "strided",
                      true, false);
  Measured f = layOut(fixed.getMasks()[0], fixedGood(), n, 64, "fixed", true,
                      false);
  std::printf("[ speed    ] n = 1048576, 64x64 blocks, %u threads: strided "
              "%.3f s (eff %.3f), fixed %.3f s (eff %.3f), total %.3f s\n",
              llvm::parallel::strategy.compute_thread_count(), s.seconds,
              efficiency(s), f.seconds, efficiency(f), s.seconds + f.seconds);
  // The exact counts in closed form: strided rows attend to min(i + 1, 128)
  // keys in the row component and to floor(i / 128) more in the column;
  // fixed rows to (i % 128) + 1 in their block and to 32 summary cells of
  // every earlier block.
  int64_t stridedCount = 0, fixedCount = 0;
  for (int64_t i = 0; i < n; ++i) {
    stridedCount += std::min<int64_t>(i + 1, 128) + (i >= 128 ? i / 128 : 0);
    fixedCount += i % 128 + 1 + 32 * (i / 128);
  }
  EXPECT_EQ(s.useful, stridedCount);
  EXPECT_EQ(f.useful, fixedCount);
}

//===----------------------------------------------------------------------===//
// Memory limit, determinism, edge cases
//===----------------------------------------------------------------------===//

TEST_F(BlockLayoutTest, MemoryLimit) {
  sp::PatternOp strided = parse(stridedText(128));
  ASSERT_TRUE(strided);
  constexpr int64_t n = 65536;
  Compiled c;
  ASSERT_TRUE(compileComponent(strided.getMasks()[0], n, 1u, c));
  BlockLayoutOptions options;
  options.blockQ = options.blockK = 8;
  options.memoryLimitBytes = int64_t(1) << 20;
  std::string error;
  // transpose(128) at 8x8 blocks: 128 columns of 64 blocks, the k-th query
  // block of a column with k + 1 non-empty key blocks: 266240 entries of 8
  // bytes (forward and transposed), over 1 MiB.
  FailureOr<ComponentLayout> layout =
      classifyBlocks(c.program, c.abstract, IndexMap::transpose(128),
                     IndexMap::transpose(128), n, options, error);
  ASSERT_TRUE(failed(layout));
  EXPECT_EQ(error, "the block tables of this pattern need more than 1 MiB at "
                   "n = 65536; use larger blocks or a smaller n");

  // The offsets alone are over a limit this small.
  options.memoryLimitBytes = 1000;
  error.clear();
  layout = classifyBlocks(c.program, c.abstract, IndexMap::identity(),
                          IndexMap::identity(), n, options, error);
  ASSERT_TRUE(failed(layout));
  EXPECT_EQ(error, "the block tables of this pattern need more than 1000 "
                   "bytes at n = 65536; use larger blocks or a smaller n");

  // With room enough the same layout succeeds.
  options.memoryLimitBytes = int64_t(64) << 20;
  error.clear();
  layout = classifyBlocks(c.program, c.abstract, IndexMap::transpose(128),
                          IndexMap::transpose(128), n, options, error);
  ASSERT_TRUE(succeeded(layout)) << error;
}

TEST_F(BlockLayoutTest, DeterministicAcrossThreadCounts) {
  sp::PatternOp fixed = parse(fixedText(128, 32));
  ASSERT_TRUE(fixed);
  constexpr int64_t n = 20000; // not a multiple of the block size
  auto run = [&](unsigned comp, const IndexMap &qm, const IndexMap &km) {
    Compiled c;
    EXPECT_TRUE(compileComponent(fixed.getMasks()[0], n, comp, c));
    BlockLayoutOptions options;
    options.blockQ = 32;
    options.blockK = 64;
    std::string error;
    FailureOr<ComponentLayout> layout =
        classifyBlocks(c.program, c.abstract, qm, km, n, options, error);
    EXPECT_TRUE(succeeded(layout)) << error;
    return layout;
  };
  llvm::ThreadPoolStrategy saved = llvm::parallel::strategy;
  for (const Plan &plan : fixedGood()) {
    llvm::parallel::strategy = saved;
    FailureOr<ComponentLayout> a = run(plan.component, plan.qmap, plan.kmap);
    llvm::parallel::strategy = llvm::hardware_concurrency(1);
    FailureOr<ComponentLayout> b = run(plan.component, plan.qmap, plan.kmap);
    ASSERT_TRUE(succeeded(a) && succeeded(b));
    EXPECT_EQ(a->full.offsets, b->full.offsets);
    EXPECT_EQ(a->full.indices, b->full.indices);
    EXPECT_EQ(a->partial.offsets, b->partial.offsets);
    EXPECT_EQ(a->partial.indices, b->partial.indices);
    EXPECT_EQ(a->fullByKey.indices, b->fullByKey.indices);
    EXPECT_EQ(a->partialByKey.indices, b->partialByKey.indices);
    EXPECT_EQ(a->usefulPairs, b->usefulPairs);
    EXPECT_EQ(a->computedPairs, b->computedPairs);
    EXPECT_EQ(a->abstractQueries, b->abstractQueries);
    EXPECT_EQ(a->evaluatedPairs, b->evaluatedPairs);
    EXPECT_EQ(a->rangeBegin, b->rangeBegin);
    EXPECT_EQ(a->fullEnd, b->fullEnd);
  }
  llvm::parallel::strategy = saved;
}

TEST_F(BlockLayoutTest, EmptyMappedRanges) {
  // A gather that keeps no position at this n, and n = 0.
  sp::PatternOp fixed = parse(fixedText(16, 4));
  ASSERT_TRUE(fixed);
  Compiled c;
  ASSERT_TRUE(compileComponent(fixed.getMasks()[0], 10, 1u, c));
  BlockLayoutOptions options;
  options.blockQ = options.blockK = 8;
  std::string error;
  FailureOr<ComponentLayout> layout =
      classifyBlocks(c.program, c.abstract, IndexMap::identity(),
                     IndexMap::gather(16, {12, 13, 14, 15}), 10, options,
                     error);
  ASSERT_TRUE(succeeded(layout)) << error;
  EXPECT_EQ(layout->numQueryBlocks, 2);
  EXPECT_EQ(layout->numKeyBlocks, 0);
  EXPECT_EQ(layout->usefulPairs, 0);
  EXPECT_EQ(layout->schedule, ScheduleKind::Range);
  ASSERT_EQ(layout->rangeBegin.size(), 2u);
  EXPECT_EQ(layout->rangeBegin[1], layout->rangeEnd[1]);

  layout = classifyBlocks(c.program, c.abstract, IndexMap::identity(),
                          IndexMap::identity(), 0, options, error);
  ASSERT_TRUE(succeeded(layout)) << error;
  EXPECT_EQ(layout->numQueryBlocks, 0);
  EXPECT_EQ(layout->numEmpty(), 0);

  options.blockK = 0;
  layout = classifyBlocks(c.program, c.abstract, IndexMap::identity(),
                          IndexMap::identity(), 10, options, error);
  ASSERT_TRUE(failed(layout));
  EXPECT_EQ(error, "block sizes must be positive, but are 8x0");
}

//===----------------------------------------------------------------------===//
// MaskProgram's strided rows
//===----------------------------------------------------------------------===//

TEST_F(BlockLayoutTest, StridedRowsMatchEvaluate) {
  std::mt19937_64 rng(3);
  int64_t checked = 0;
  for (int m = 0; m < 60; ++m) {
    bool perHead = m % 4 == 0, causal = m % 2 == 0;
    RandomMask gen(9000 + m, perHead);
    std::string a = gen.genBool(1 + m % 5);
    std::ostringstream text;
    text << "sp.pattern @r(l = 6)" << (causal ? " causal" : "")
         << " {\n  sp.mask (%i, %j" << (perHead ? ", %h" : "") << ") {\n"
         << gen.body << "    sp.yield " << a << "\n  }\n}\n";
    sp::PatternOp p = parse(text.str());
    ASSERT_TRUE(p);
    FailureOr<MaskProgram> prog =
        MaskProgram::compile(p.getMasks()[0], Binding(1000));
    ASSERT_TRUE(succeeded(prog));
    std::vector<uint8_t> row(700);
    for (int s = 0; s < 20; ++s) {
      static const int64_t strides[] = {1, 2, 3, 7, 64, 128, 1000};
      int64_t stride = strides[rng() % 7];
      int64_t i = static_cast<int64_t>(rng() % 3000) - 500;
      int64_t h = perHead ? static_cast<int64_t>(rng() % 4) : 0;
      int64_t jBegin = s % 3 == 0 ? i - static_cast<int64_t>(rng() % 2000)
                                  : static_cast<int64_t>(rng() % 3000) - 500;
      int64_t count = 1 + static_cast<int64_t>(rng() % 700);
      prog->evaluateRow(i, h, jBegin, stride, count, row.data());
      for (int64_t k = 0; k < count; ++k, ++checked)
        ASSERT_EQ(row[k] != 0, prog->evaluate(i, jBegin + k * stride, h))
            << "i = " << i << ", jBegin = " << jBegin << ", stride = "
            << stride << ", k = " << k << "\n"
            << text.str();
    }
    modules.clear();
  }
  std::printf("[ strided  ] %lld strided row entries checked\n",
              static_cast<long long>(checked));
}

} // namespace
