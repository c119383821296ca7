//===- ConnectivityTest.cpp - the paper's connectivity check --------------===//
//
// The bitset check against the paper's claims (strided and fixed attention
// connect every j <= i to i in two steps; a local window alone does not) and
// against a brute-force reference that shares none of its code: explicit
// boolean matrices multiplied step by step. Also the step count rules, heads,
// non-causal patterns, errors, and a printed (never asserted) timing at
// n = 4096.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Analysis/Connectivity.h"
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
#include <map>
#include <string>
#include <vector>

using namespace mlir;
using namespace sparsetx;

namespace {

class ConnectivityTest : public test::PatternTest {};

using test::fixed;
using test::fixedHeads;
using test::strided;
using test::stridedInterleaved;

//===----------------------------------------------------------------------===//
// Patterns
//===----------------------------------------------------------------------===//

/// A causal local window i - j < w: one factor.
std::string local(int64_t w) {
  return R"mlir(
sp.pattern @local(w = )mlir" +
         std::to_string(w) + R"mlir() causal {
  sp.mask (%i, %j) {
    %w = sp.param "w"
    %0 = arith.subi %i, %j : i64
    %1 = arith.cmpi slt, %0, %w : i64
    sp.yield %1
  }
}
)mlir";
}

/// `layers` copies of the local window i - j < w, one per layer.
std::string layeredLocal(int64_t w, int64_t layers) {
  std::string text = "sp.pattern @layered_local(w = " + std::to_string(w) +
                     ") causal {\n";
  for (int64_t r = 0; r < layers; ++r)
    text += "  sp.mask layer " + std::to_string(r) + R"mlir( (%i, %j) {
    %w = sp.param "w"
    %0 = arith.subi %i, %j : i64
    %1 = arith.cmpi slt, %0, %w : i64
    sp.yield %1
  }
)mlir";
  return text + "}\n";
}

/// Head 0 a local row, head 1 a strided column: neither head alone connects,
/// their union (strided) does.
const char *const kSplitHeads = R"mlir(
sp.pattern @split_heads(l = 16) causal {
  sp.mask (%i, %j, %h) {
    %l = sp.param "l"
    %c0 = arith.constant 0 : i64
    %c1 = arith.constant 1 : i64
    %0 = arith.subi %i, %j : i64
    %1 = arith.cmpi slt, %0, %l : i64
    %2 = arith.cmpi eq, %h, %c0 : i64
    %3 = arith.andi %2, %1 : i1
    %4 = sp.mod %0, %l
    %5 = arith.cmpi eq, %4, %c0 : i64
    %6 = arith.cmpi eq, %h, %c1 : i64
    %7 = arith.andi %6, %5 : i1
    %8 = arith.ori %3, %7 : i1
    sp.yield %8
  }
}
)mlir";

/// The same after specialization to two heads: one mask per head.
const char *const kSpecializedHeads = R"mlir(
sp.pattern @split_heads(l = 16) causal {
  sp.mask head 0 (%i, %j) {
    %l = sp.param "l"
    %0 = arith.subi %i, %j : i64
    %1 = arith.cmpi slt, %0, %l : i64
    %false = arith.constant false
    %2 = arith.ori %1, %false : i1
    sp.yield %2
  }
  sp.mask head 1 (%i, %j) {
    %l = sp.param "l"
    %c0 = arith.constant 0 : i64
    %0 = arith.subi %i, %j : i64
    %1 = sp.mod %0, %l
    %2 = arith.cmpi eq, %1, %c0 : i64
    sp.yield %2
  }
}
)mlir";

/// Decomposed strided: two disjoint components (row, column && !row).
const char *const kDecomposed = R"mlir(
sp.pattern @strided(l = 8) causal {
  sp.mask (%i, %j) attributes {disjoint} {
    %l = sp.param "l"
    %true = arith.constant true
    %0 = arith.subi %i, %j : i64
    %1 = arith.cmpi slt, %0, %l : i64
    %2 = sp.mod %0, %l
    %c0 = arith.constant 0 : i64
    %3 = arith.cmpi eq, %2, %c0 : i64
    %4 = arith.xori %1, %true : i1
    %5 = arith.andi %3, %4 : i1
    sp.yield %1, %5
  }
}
)mlir";

/// Non-causal band |i - j| < w: one factor.
const char *const kBand = R"mlir(
sp.pattern @band(w = 4) {
  sp.mask (%i, %j) {
    %w = sp.param "w"
    %0 = arith.subi %i, %j : i64
    %1 = math.absi %0 : i64
    %2 = arith.cmpi slt, %1, %w : i64
    sp.yield %2
  }
}
)mlir";

/// Non-causal: the same block of l, or the same column (i - j) % l == 0.
const char *const kBlockColumn = R"mlir(
sp.pattern @block_column(l = 8) {
  sp.mask (%i, %j) {
    %l = sp.param "l"
    %0 = sp.div %i, %l
    %1 = sp.div %j, %l
    %2 = arith.cmpi eq, %0, %1 : i64
    %3 = arith.subi %i, %j : i64
    %4 = sp.mod %3, %l
    %c0 = arith.constant 0 : i64
    %5 = arith.cmpi eq, %4, %c0 : i64
    %6 = arith.ori %2, %5 : i1
    sp.yield %6
  }
}
)mlir";

//===----------------------------------------------------------------------===//
// Brute-force reference
//===----------------------------------------------------------------------===//

using Matrix = std::vector<std::vector<bool>>;

/// The step masks of `pattern` as explicit n x n matrices (union over heads),
/// by layer, from scalar evaluation of each mask.
std::vector<Matrix> referenceMasks(sp::PatternOp pattern, int64_t n,
                                   int64_t numHeads) {
  std::map<int64_t, Matrix> byLayer;
  for (sp::MaskOp mask : pattern.getMasks()) {
    FailureOr<MaskProgram> prog = MaskProgram::compile(mask, Binding(n));
    EXPECT_TRUE(succeeded(prog));
    if (failed(prog))
      return {};
    Matrix &m = byLayer[mask.getLayer().value_or(0)];
    if (m.empty())
      m.assign(n, std::vector<bool>(n, false));
    int64_t heads = prog->isPerHead() ? numHeads : 1;
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j)
          if (prog->evaluate(i, j, h))
            m[i][j] = true;
  }
  std::vector<Matrix> masks;
  for (auto &entry : byLayer)
    masks.push_back(entry.second);
  return masks;
}

/// R_0 = I; R_{s+1} = R_s | M_s * R_s (boolean product); then the first pair
/// (i ascending, then j) with R_p[i][j] false among the required ones.
ConnectivityResult referenceCheck(const std::vector<Matrix> &masks, int64_t n,
                                  int64_t steps, bool causal) {
  Matrix reach(n, std::vector<bool>(n, false));
  for (int64_t a = 0; a < n; ++a)
    reach[a][a] = true;
  for (int64_t s = 0; s < steps; ++s) {
    const Matrix &m = masks[s % masks.size()];
    Matrix next = reach;
    for (int64_t a = 0; a < n; ++a)
      for (int64_t b = 0; b < n; ++b)
        if (m[a][b])
          for (int64_t x = 0; x < n; ++x)
            if (reach[b][x])
              next[a][x] = true;
    reach = std::move(next);
  }
  ConnectivityResult r;
  r.steps = steps;
  r.seqLen = r.checkedSeqLen = n;
  for (int64_t i = 0; i < n && r.connected; ++i)
    for (int64_t j = 0; j < (causal ? i + 1 : n); ++j)
      if (!reach[i][j]) {
        r.connected = false;
        r.witnessQuery = i;
        r.witnessKey = j;
        break;
      }
  return r;
}

void expectSame(const ConnectivityResult &got, const ConnectivityResult &want,
                const std::string &what) {
  EXPECT_EQ(got.connected, want.connected) << what;
  EXPECT_EQ(got.witnessQuery, want.witnessQuery) << what;
  EXPECT_EQ(got.witnessKey, want.witnessKey) << what;
  EXPECT_EQ(got.steps, want.steps) << what;
}

//===----------------------------------------------------------------------===//
// Tests
//===----------------------------------------------------------------------===//

TEST_F(ConnectivityTest, StridedConnectedInTwoSteps) {
  sp::PatternOp p = parse(strided(16));
  ASSERT_TRUE(p);
  EXPECT_EQ(getConnectivitySteps(p), 2);
  FailureOr<ConnectivityResult> r = checkConnectivity(p, 256, 1);
  ASSERT_TRUE(succeeded(r));
  EXPECT_TRUE(r->connected);
  EXPECT_EQ(r->steps, 2);
  EXPECT_EQ(r->witnessQuery, -1);
  EXPECT_EQ(r->witnessKey, -1);
  EXPECT_EQ(r->seqLen, 256);
  EXPECT_EQ(r->checkedSeqLen, 256);
  EXPECT_FALSE(r->truncated);
}

TEST_F(ConnectivityTest, FixedConnectedInTwoSteps) {
  sp::PatternOp p = parse(fixed(16, 4));
  ASSERT_TRUE(p);
  FailureOr<ConnectivityResult> r = checkConnectivity(p, 256, 1);
  ASSERT_TRUE(succeeded(r));
  EXPECT_TRUE(r->connected);
  EXPECT_EQ(r->steps, 2);
}

TEST_F(ConnectivityTest, OneStepIsNotEnoughForStridedOrFixed) {
  // With p forced to 1 each factorized pattern sees only its own mask; the
  // first unreachable pair is the first key outside the union.
  ConnectivityOptions one;
  one.steps = 1;
  sp::PatternOp s = parse(strided(16));
  ASSERT_TRUE(s);
  FailureOr<ConnectivityResult> r = checkConnectivity(s, 256, 1, one);
  ASSERT_TRUE(succeeded(r));
  EXPECT_FALSE(r->connected);
  EXPECT_EQ(r->witnessQuery, 17); // i - j = 17 is neither < 16 nor % 16 == 0
  EXPECT_EQ(r->witnessKey, 0);
  EXPECT_EQ(r->steps, 1);
  sp::PatternOp f = parse(fixed(16, 4));
  ASSERT_TRUE(f);
  r = checkConnectivity(f, 256, 1, one);
  ASSERT_TRUE(succeeded(r));
  EXPECT_FALSE(r->connected);
  EXPECT_EQ(r->witnessQuery, 16); // the next block; key 0 is no summary cell
  EXPECT_EQ(r->witnessKey, 0);
}

TEST_F(ConnectivityTest, LocalWindowIsNotConnected) {
  sp::PatternOp p = parse(local(8));
  ASSERT_TRUE(p);
  EXPECT_EQ(getConnectivitySteps(p), 1);
  FailureOr<ConnectivityResult> r = checkConnectivity(p, 256, 1);
  ASSERT_TRUE(succeeded(r));
  EXPECT_FALSE(r->connected);
  EXPECT_EQ(r->steps, 1);
  EXPECT_EQ(r->witnessQuery, 8); // i = w, j = 0: i - j = w is outside
  EXPECT_EQ(r->witnessKey, 0);
  // Shorter than the window it is dense, hence connected.
  r = checkConnectivity(p, 8, 1);
  ASSERT_TRUE(succeeded(r));
  EXPECT_TRUE(r->connected);
}

TEST_F(ConnectivityTest, StridedInterleavedConnected) {
  sp::PatternOp p = parse(stridedInterleaved(16));
  ASSERT_TRUE(p);
  EXPECT_EQ(getConnectivitySteps(p), 2);
  FailureOr<ConnectivityResult> r = checkConnectivity(p, 256, 1);
  ASSERT_TRUE(succeeded(r));
  EXPECT_TRUE(r->connected);
  EXPECT_EQ(r->steps, 2);
}

TEST_F(ConnectivityTest, ThreeStepPatternFailsWithTwo) {
  // Two layers of i - j < 4 reach distance 6 (3 + 3); n = 10 needs 9, which
  // three steps reach.
  sp::PatternOp two = parse(layeredLocal(4, 2));
  ASSERT_TRUE(two);
  EXPECT_EQ(getConnectivitySteps(two), 2);
  FailureOr<ConnectivityResult> r = checkConnectivity(two, 10, 1);
  ASSERT_TRUE(succeeded(r));
  EXPECT_FALSE(r->connected);
  EXPECT_EQ(r->steps, 2);
  EXPECT_EQ(r->witnessQuery, 7);
  EXPECT_EQ(r->witnessKey, 0);
  // The same masks cycled over three residual blocks connect.
  ConnectivityOptions three;
  three.steps = 3;
  r = checkConnectivity(two, 10, 1, three);
  ASSERT_TRUE(succeeded(r));
  EXPECT_TRUE(r->connected);
  EXPECT_EQ(r->steps, 3);
  // As does a pattern with three such layers.
  sp::PatternOp layers3 = parse(layeredLocal(4, 3));
  ASSERT_TRUE(layers3);
  r = checkConnectivity(layers3, 10, 1);
  ASSERT_TRUE(succeeded(r));
  EXPECT_TRUE(r->connected);
  EXPECT_EQ(r->steps, 3);
  // One step further is out of reach again.
  r = checkConnectivity(layers3, 11, 1);
  ASSERT_TRUE(succeeded(r));
  EXPECT_FALSE(r->connected);
  EXPECT_EQ(r->witnessQuery, 10);
  EXPECT_EQ(r->witnessKey, 0);
}

TEST_F(ConnectivityTest, FixedHeadsConnectedOverHeads) {
  sp::PatternOp p = parse(fixedHeads(16, 4));
  ASSERT_TRUE(p);
  EXPECT_EQ(getConnectivitySteps(p), 2);
  FailureOr<ConnectivityResult> r = checkConnectivity(p, 256, 4);
  ASSERT_TRUE(succeeded(r));
  EXPECT_TRUE(r->connected);
  EXPECT_EQ(r->steps, 2);
}

TEST_F(ConnectivityTest, HeadsAreUnited) {
  // Head 0 alone is a local window, not connected in two steps; with head 1
  // (the strided column) the union is strided and connected.
  sp::PatternOp p = parse(kSplitHeads);
  ASSERT_TRUE(p);
  EXPECT_EQ(getConnectivitySteps(p), 2);
  FailureOr<ConnectivityResult> r = checkConnectivity(p, 256, 1);
  ASSERT_TRUE(succeeded(r));
  EXPECT_FALSE(r->connected);
  EXPECT_EQ(r->witnessQuery, 31); // two windows of 16 reach distance 30
  EXPECT_EQ(r->witnessKey, 0);
  r = checkConnectivity(p, 256, 2);
  ASSERT_TRUE(succeeded(r));
  EXPECT_TRUE(r->connected);

  // After specialization to one mask per head: the same answer.
  sp::PatternOp q = parse(kSpecializedHeads);
  ASSERT_TRUE(q);
  EXPECT_EQ(getConnectivitySteps(q), 2);
  r = checkConnectivity(q, 256, 2);
  ASSERT_TRUE(succeeded(r));
  EXPECT_TRUE(r->connected);
}

TEST_F(ConnectivityTest, DecomposedComponentsCountAsSteps) {
  sp::PatternOp p = parse(kDecomposed);
  ASSERT_TRUE(p);
  EXPECT_EQ(getConnectivitySteps(p), 2);
  FailureOr<ConnectivityResult> r = checkConnectivity(p, 128, 1);
  ASSERT_TRUE(succeeded(r));
  EXPECT_TRUE(r->connected);
}

TEST_F(ConnectivityTest, NonCausal) {
  // Every pair matters, including j > i: the band misses (0, w) first.
  sp::PatternOp band = parse(kBand);
  ASSERT_TRUE(band);
  FailureOr<ConnectivityResult> r = checkConnectivity(band, 64, 1);
  ASSERT_TRUE(succeeded(r));
  EXPECT_FALSE(r->connected);
  EXPECT_EQ(r->witnessQuery, 0);
  EXPECT_EQ(r->witnessKey, 4);
  // Block then column (or column then block) joins any two positions.
  sp::PatternOp bc = parse(kBlockColumn);
  ASSERT_TRUE(bc);
  r = checkConnectivity(bc, 64, 1);
  ASSERT_TRUE(succeeded(r));
  EXPECT_TRUE(r->connected);
  // ... but not in one step: query 0 does not see key 9.
  ConnectivityOptions one;
  one.steps = 1;
  r = checkConnectivity(bc, 64, 1, one);
  ASSERT_TRUE(succeeded(r));
  EXPECT_FALSE(r->connected);
  EXPECT_EQ(r->witnessQuery, 0);
  EXPECT_EQ(r->witnessKey, 9);
}

TEST_F(ConnectivityTest, MatchesBruteForce) {
  struct Case {
    std::string text;
    int64_t numHeads;
  };
  std::vector<Case> cases = {
      {strided(16), 1},         {strided(5), 1},
      {fixed(16, 4), 1},        {fixed(8, 1), 1},
      {fixedHeads(16, 4), 4},   {fixedHeads(16, 4), 1},
      {stridedInterleaved(8), 1}, {local(8), 1},
      {layeredLocal(3, 2), 1},  {kSplitHeads, 1},
      {kSplitHeads, 2},         {kSpecializedHeads, 2},
      {kDecomposed, 1},         {kBand, 1},
      {kBlockColumn, 1}};
  const int64_t n = 64;
  for (const Case &c : cases) {
    sp::PatternOp p = parse(c.text);
    ASSERT_TRUE(p);
    std::vector<Matrix> masks = referenceMasks(p, n, c.numHeads);
    ASSERT_FALSE(masks.empty());
    for (int64_t steps = 1; steps <= 4; ++steps) {
      ConnectivityOptions options;
      options.steps = steps;
      FailureOr<ConnectivityResult> got =
          checkConnectivity(p, n, c.numHeads, options);
      ASSERT_TRUE(succeeded(got));
      std::string what = p.getSymName().str() + " with " +
                         std::to_string(c.numHeads) + " heads, p = " +
                         std::to_string(steps);
      expectSame(*got, referenceCheck(masks, n, steps, p.getCausal()), what);
    }
    // And with the pattern's own p.
    FailureOr<ConnectivityResult> got = checkConnectivity(p, n, c.numHeads);
    ASSERT_TRUE(succeeded(got));
    expectSame(*got,
               referenceCheck(masks, n, getConnectivitySteps(p),
                              p.getCausal()),
               p.getSymName().str() + " at its own p");
  }
}

TEST_F(ConnectivityTest, TruncatedAtMaxSeqLen) {
  sp::PatternOp p = parse(strided(16));
  ASSERT_TRUE(p);
  FailureOr<ConnectivityResult> r = checkConnectivity(p, 10000, 1, 512);
  ASSERT_TRUE(succeeded(r));
  EXPECT_TRUE(r->connected);
  EXPECT_EQ(r->seqLen, 10000);
  EXPECT_EQ(r->checkedSeqLen, 512);
  EXPECT_TRUE(r->truncated);
  // A witness inside the prefix of a causal pattern is a real one.
  sp::PatternOp l = parse(local(8));
  ASSERT_TRUE(l);
  r = checkConnectivity(l, 10000, 1, 512);
  ASSERT_TRUE(succeeded(r));
  EXPECT_FALSE(r->connected);
  EXPECT_EQ(r->witnessQuery, 8);
}

TEST_F(ConnectivityTest, Errors) {
  sp::PatternOp p = parse(strided(16));
  ASSERT_TRUE(p);
  diags.clear();
  EXPECT_TRUE(failed(checkConnectivity(p, 0, 1)));
  ASSERT_EQ(diags.size(), 1u);
  EXPECT_EQ(diags[0], "the sequence length must be positive, but is 0");
  diags.clear();
  EXPECT_TRUE(failed(checkConnectivity(p, 16, 1, 0)));
  ASSERT_EQ(diags.size(), 1u);
  EXPECT_EQ(diags[0], "the checked sequence length must be positive, but is 0");
  diags.clear();
  ConnectivityOptions zero;
  zero.steps = 0;
  EXPECT_TRUE(failed(checkConnectivity(p, 16, 1, zero)));
  ASSERT_EQ(diags.size(), 1u);
  EXPECT_EQ(diags[0], "the step count must be positive, but is 0");

  sp::PatternOp h = parse(fixedHeads(16, 4));
  ASSERT_TRUE(h);
  diags.clear();
  EXPECT_TRUE(failed(checkConnectivity(h, 16, 0)));
  ASSERT_EQ(diags.size(), 1u);
  EXPECT_EQ(diags[0], "the head count must be positive, but is 0");
  // A pattern without per-head masks ignores the head count.
  EXPECT_TRUE(succeeded(checkConnectivity(p, 16, 0)));
}

TEST_F(ConnectivityTest, SpeedAt4096) {
  // Printed, never asserted (DESIGN.md section 7).
  struct Case {
    const char *name;
    std::string text;
    int64_t numHeads;
  };
  std::vector<Case> cases = {{"strided(64)", strided(64), 1},
                             {"fixed(64, 8)", fixed(64, 8), 1},
                             {"strided(16)", strided(16), 1},
                             {"fixed(16, 4)", fixed(16, 4), 1},
                             {"fixed_heads(64, 8) x 8", fixedHeads(64, 8), 8},
                             {"strided_interleaved(64)",
                              stridedInterleaved(64), 1}};
  for (const Case &c : cases) {
    sp::PatternOp p = parse(c.text);
    ASSERT_TRUE(p);
    auto start = std::chrono::steady_clock::now();
    FailureOr<ConnectivityResult> r = checkConnectivity(p, 4096, c.numHeads);
    double ms = std::chrono::duration<double, std::milli>(
                    std::chrono::steady_clock::now() - start)
                    .count();
    ASSERT_TRUE(succeeded(r));
    EXPECT_TRUE(r->connected) << c.name;
    std::printf("connectivity %-24s n = 4096: %s in %.1f ms\n", c.name,
                r->connected ? "connected" : "NOT connected", ms);
  }
}

} // namespace
