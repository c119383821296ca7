//===- IndexMapTest.cpp - index maps against their definitions ------------===//

#include "sparsetx/Analysis/IndexMap.h"

#include "gtest/gtest.h"

#include <set>

using namespace sparsetx;

namespace {

/// The definition of each map: the positions it keeps, in mapped order.
std::vector<int64_t> reference(const IndexMap &map, int64_t n) {
  std::vector<int64_t> order;
  int64_t l = map.getPeriod();
  switch (map.getKind()) {
  case IndexMap::Kind::Identity:
    for (int64_t p = 0; p < n; ++p)
      order.push_back(p);
    break;
  case IndexMap::Kind::Transpose:
    for (int64_t c = 0; c < l; ++c)
      for (int64_t p = c; p < n; p += l)
        order.push_back(p);
    break;
  case IndexMap::Kind::Gather: {
    std::set<int64_t> keep(map.getResidues().begin(), map.getResidues().end());
    for (int64_t p = 0; p < n; ++p)
      if (keep.count(p % l))
        order.push_back(p);
    break;
  }
  }
  return order;
}

std::vector<IndexMap> someMaps() {
  return {IndexMap::identity(),      IndexMap::transpose(1),
          IndexMap::transpose(7),    IndexMap::transpose(16),
          IndexMap::gather(8, {0}),  IndexMap::gather(8, {2, 3, 4, 7}),
          IndexMap::gather(16, {12, 13, 14, 15}), IndexMap::gather(5, {0, 1, 2, 3, 4})};
}

TEST(IndexMap, PositionsIndicesAndRunsMatchTheDefinition) {
  for (const IndexMap &map : someMaps()) {
    for (int64_t n : {1, 2, 5, 16, 37, 64, 100, 129}) {
      SCOPED_TRACE(map.str() + " n=" + std::to_string(n));
      std::vector<int64_t> order = reference(map, n);
      BoundIndexMap bound(map, n);
      ASSERT_EQ(bound.size(), static_cast<int64_t>(order.size()));
      std::vector<int64_t> inverse(n, -1);
      for (int64_t t = 0; t < bound.size(); ++t) {
        ASSERT_EQ(bound.position(t), order[t]);
        inverse[order[t]] = t;
      }
      for (int64_t p = 0; p < n; ++p)
        ASSERT_EQ(bound.index(p), inverse[p]) << "p=" << p;
      // Every sub-range: its runs enumerate exactly its positions, and its
      // box contains each of them.
      for (int64_t t0 = 0; t0 < bound.size(); t0 += 3) {
        for (int64_t t1 = t0 + 1; t1 <= bound.size(); t1 += 5) {
          std::vector<int64_t> seen;
          int64_t expectT = t0;
          bound.forEachRun(t0, t1, [&](int64_t p, int64_t stride, int64_t count,
                                       int64_t t) {
            ASSERT_EQ(t, expectT);
            ASSERT_GT(count, 0);
            for (int64_t k = 0; k < count; ++k)
              seen.push_back(p + k * stride);
            expectT += count;
          });
          ASSERT_EQ(seen, std::vector<int64_t>(order.begin() + t0, order.begin() + t1));
          PositionBox box = bound.box(t0, t1);
          for (int64_t p : seen) {
            bool covered = false;
            for (int64_t u = box.u.lo; u <= box.u.hi && !covered; ++u) {
              int64_t v = p - box.stride * u;
              covered = v >= box.v.lo && v <= box.v.hi;
            }
            ASSERT_TRUE(covered) << "position " << p << " outside the box of ["
                                 << t0 << ", " << t1 << ")";
          }
        }
      }
    }
  }
}

TEST(IndexMap, BoxesAreExactWithinOneColumnOrPeriod) {
  BoundIndexMap t(IndexMap::transpose(128), 16384);
  PositionBox box = t.box(128, 192); // column 1, rows 0..63
  EXPECT_EQ(box.stride, 128);
  EXPECT_EQ(box.u, (Interval{0, 63}));
  EXPECT_EQ(box.v, Interval::point(1));
  BoundIndexMap g(IndexMap::gather(128, {96, 97, 98, 99}), 1024);
  box = g.box(4, 8); // period 1, all four residues
  EXPECT_EQ(box.u, Interval::point(1));
  EXPECT_EQ(box.v, (Interval{96, 99}));
}

TEST(IndexMap, PrintsAndParses) {
  for (const IndexMap &map : someMaps()) {
    std::string error;
    auto parsed = IndexMap::parse(map.str(), error);
    ASSERT_TRUE(mlir::succeeded(parsed)) << error;
    EXPECT_EQ(*parsed, map);
  }
  EXPECT_EQ(IndexMap::gather(128, {0, 96, 97, 98}).str(), "gather(128, 0, 96..98)");
  std::string error;
  EXPECT_TRUE(mlir::failed(IndexMap::parse("gather(8, 9)", error)));
  EXPECT_EQ(error, "invalid index map 'gather(8, 9)': residues must lie in [0, 8)");
  EXPECT_TRUE(mlir::failed(IndexMap::parse("transpose(0)", error)));
  EXPECT_EQ(error, "invalid index map 'transpose(0)': the period must be a positive integer");
  EXPECT_TRUE(mlir::failed(IndexMap::parse("rotate(3)", error)));
  EXPECT_EQ(error, "invalid index map 'rotate(3)': expected identity, transpose(L) or gather(L, residues)");
  EXPECT_TRUE(mlir::failed(IndexMap::parse("gather(8, 1, 1)", error)));
  EXPECT_EQ(error, "invalid index map 'gather(8, 1, 1)': a residue is listed twice");
}

} // namespace
