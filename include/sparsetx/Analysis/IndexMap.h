//===- IndexMap.h - orderings of query and key positions --------*- C++ -*-===//
//
// A component of a pattern is computed in blocks of consecutive *mapped*
// indices, not of consecutive positions. The index map says which positions a
// mapped index stands for. Three families (DESIGN.md section 2):
//
//  - identity:         mapped index t is position t.
//  - transpose(l):     the sequence viewed as an [ceil(n/l), l] matrix
//                      (row p / l, column p % l) walked column by column: all
//                      positions with p % l == 0 first (in order), then those
//                      with p % l == 1, ... A strided column `(i - j) % l == 0`
//                      becomes a block-diagonal causal band (paper section 5.5).
//  - gather(l, S):     only the positions with p % l in the residue set S, in
//                      order, packed densely; the others are never attended by
//                      the component. Fixed attention's summary cells
//                      (`j % l >= l - c`) become one dense range.
//
// Every mapped range of indices [t0, t1) is covered by a PositionBox
// {stride * u + v : u in U, v in V}, exact when the range lies in one column
// (transpose) or one period (gather), an over-approximation otherwise; the
// abstract interpreter reasons over such boxes.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_ANALYSIS_INDEXMAP_H
#define SPARSETX_ANALYSIS_INDEXMAP_H

#include "mlir/Support/LLVM.h"
#include "llvm/ADT/StringRef.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace sparsetx {

/// A closed integer interval [lo, hi], lo <= hi.
struct Interval {
  int64_t lo = 0, hi = 0;
  static Interval point(int64_t v) { return {v, v}; }
  bool isPoint() const { return lo == hi; }
  bool operator==(const Interval &o) const { return lo == o.lo && hi == o.hi; }
};

/// The set {stride * u + v : u in u, v in v} (a superset of the positions a
/// mapped range stands for). stride >= 1; for stride == 1, u holds the
/// positions and v is [0, 0].
struct PositionBox {
  int64_t stride = 1;
  Interval u, v;
};

class IndexMap {
public:
  enum class Kind { Identity, Transpose, Gather };

  static IndexMap identity() { return IndexMap(); }
  static IndexMap transpose(int64_t period);
  /// `residues` must be non-empty, sorted, unique, each in [0, period).
  static IndexMap gather(int64_t period, std::vector<int64_t> residues);

  /// Parses the form str() prints: "identity", "transpose(128)",
  /// "gather(128, 96..127)", "gather(8, 0, 3, 5..7)". Returns failure and sets
  /// `error` on malformed text.
  static mlir::FailureOr<IndexMap> parse(llvm::StringRef text, std::string &error);

  Kind getKind() const { return kind; }
  int64_t getPeriod() const { return period; }
  const std::vector<int64_t> &getResidues() const { return residues; }
  std::string str() const;
  bool operator==(const IndexMap &o) const {
    return kind == o.kind && period == o.period && residues == o.residues;
  }

private:
  Kind kind = Kind::Identity;
  int64_t period = 1;
  std::vector<int64_t> residues;
};

/// An IndexMap at a sequence length n: position <-> mapped index in O(1)
/// (gather: O(1) after an O(period) table).
class BoundIndexMap {
public:
  BoundIndexMap(const IndexMap &map, int64_t n);

  const IndexMap &getMap() const { return map; }
  int64_t getSeqLen() const { return n; }
  /// Number of mapped indices: n, or for a gather the positions it keeps.
  int64_t size() const { return numMapped; }
  /// The position mapped index t (0 <= t < size()) stands for.
  int64_t position(int64_t t) const;
  /// The mapped index of position p, or -1 if a gather drops p.
  int64_t index(int64_t p) const;
  /// A box covering the positions of mapped indices [t0, t1), t0 < t1.
  PositionBox box(int64_t t0, int64_t t1) const;
  /// Splits mapped [t0, t1) into runs of positions with a constant stride:
  /// calls fn(firstPosition, stride, count, firstMappedIndex) per run, in
  /// order. Identity gives one run of stride 1; transpose one run per column;
  /// gather one run per contiguous residue range per period.
  template <typename Fn>
  void forEachRun(int64_t t0, int64_t t1, Fn fn) const;

private:
  IndexMap map;
  int64_t n;
  int64_t numMapped;
  /// transpose: column c holds mapped indices [colStart[c], colStart[c + 1]).
  std::vector<int64_t> colStart;
  /// gather: rank[r] = index of residue r in the set, or -1.
  std::vector<int64_t> rank;
};

template <typename Fn>
void BoundIndexMap::forEachRun(int64_t t0, int64_t t1, Fn fn) const {
  if (t0 >= t1)
    return;
  int64_t l = map.getPeriod();
  switch (map.getKind()) {
  case IndexMap::Kind::Identity:
    fn(t0, int64_t(1), t1 - t0, t0);
    return;
  case IndexMap::Kind::Transpose:
    // Runs are the pieces of columns: consecutive mapped indices in one
    // column are positions l apart.
    for (int64_t t = t0; t < t1;) {
      int64_t p = position(t);
      int64_t c = p % l;
      int64_t columnEnd =
          (c + 1 < l && c + 1 < getSeqLen()) ? index(c + 1) : numMapped;
      int64_t end = std::min(t1, columnEnd);
      fn(p, l, end - t, t);
      t = end;
    }
    return;
  case IndexMap::Kind::Gather: {
    // Runs are maximal sets of consecutive residues within one period.
    const std::vector<int64_t> &res = map.getResidues();
    int64_t m = static_cast<int64_t>(res.size());
    for (int64_t t = t0; t < t1;) {
      int64_t k = t % m;
      int64_t e = k;
      while (e + 1 < m && res[e + 1] == res[e] + 1 && t + (e + 1 - k) < t1)
        ++e;
      int64_t count = e - k + 1;
      fn(position(t), int64_t(1), count, t);
      t += count;
    }
    return;
  }
  }
}

} // namespace sparsetx

#endif // SPARSETX_ANALYSIS_INDEXMAP_H
