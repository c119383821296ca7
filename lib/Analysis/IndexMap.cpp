//===- IndexMap.cpp - orderings of query and key positions ----------------===//
//
// Position <-> mapped index for the identity, transpose and gather maps, and
// the boxes the abstract interpreter reasons over. All O(1) per call: the
// transpose's columns hold ceil(n / l) or floor(n / l) positions (the first
// n % l columns one more), so a column's start has a closed form.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Analysis/IndexMap.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cassert>

using namespace mlir;
using namespace sparsetx;

IndexMap IndexMap::transpose(int64_t period) {
  assert(period > 0 && "transpose period must be positive");
  IndexMap map;
  map.kind = Kind::Transpose;
  map.period = period;
  return map;
}

IndexMap IndexMap::gather(int64_t period, std::vector<int64_t> residues) {
  assert(period > 0 && !residues.empty() && "bad gather");
  assert(std::is_sorted(residues.begin(), residues.end()) &&
         std::adjacent_find(residues.begin(), residues.end()) ==
             residues.end() &&
         residues.front() >= 0 && residues.back() < period && "bad residues");
  IndexMap map;
  map.kind = Kind::Gather;
  map.period = period;
  map.residues = std::move(residues);
  return map;
}

std::string IndexMap::str() const {
  switch (kind) {
  case Kind::Identity:
    return "identity";
  case Kind::Transpose:
    return "transpose(" + std::to_string(period) + ")";
  case Kind::Gather:
    break;
  }
  std::string text;
  llvm::raw_string_ostream os(text);
  os << "gather(" << period;
  // Runs of consecutive residues print as lo..hi.
  for (size_t k = 0; k < residues.size();) {
    size_t e = k;
    while (e + 1 < residues.size() && residues[e + 1] == residues[e] + 1)
      ++e;
    os << ", " << residues[k];
    if (e > k)
      os << ".." << residues[e];
    k = e + 1;
  }
  os << ")";
  return text;
}

FailureOr<IndexMap> IndexMap::parse(llvm::StringRef text, std::string &error) {
  text = text.trim();
  if (text == "identity")
    return identity();
  llvm::StringRef whole = text;
  auto fail = [&](const llvm::Twine &why) -> FailureOr<IndexMap> {
    error = ("invalid index map '" + whole + "': " + why).str();
    return failure();
  };
  llvm::StringRef body;
  bool isTranspose = text.consume_front("transpose(");
  bool isGather = !isTranspose && text.consume_front("gather(");
  if ((!isTranspose && !isGather) || !text.consume_back(")"))
    return fail("expected identity, transpose(L) or gather(L, residues)");
  body = text;
  llvm::SmallVector<llvm::StringRef> parts;
  body.split(parts, ',');
  int64_t period;
  if (parts.empty() || parts[0].trim().getAsInteger(10, period) || period <= 0)
    return fail("the period must be a positive integer");
  if (isTranspose) {
    if (parts.size() != 1)
      return fail("transpose takes one argument");
    return transpose(period);
  }
  if (parts.size() < 2)
    return fail("gather needs at least one residue");
  std::vector<int64_t> residues;
  for (llvm::StringRef part : llvm::ArrayRef(parts).drop_front()) {
    part = part.trim();
    auto [loText, hiText] = part.split("..");
    int64_t lo, hi;
    if (loText.getAsInteger(10, lo))
      return fail("'" + part + "' is not a residue or a range lo..hi");
    hi = lo;
    if (!hiText.empty() && hiText.getAsInteger(10, hi))
      return fail("'" + part + "' is not a residue or a range lo..hi");
    if (lo < 0 || hi >= period || lo > hi)
      return fail("residues must lie in [0, " + llvm::Twine(period) + ")");
    for (int64_t r = lo; r <= hi; ++r)
      residues.push_back(r);
  }
  std::sort(residues.begin(), residues.end());
  if (std::adjacent_find(residues.begin(), residues.end()) != residues.end())
    return fail("a residue is listed twice");
  return gather(period, std::move(residues));
}

//===----------------------------------------------------------------------===//
// BoundIndexMap
//===----------------------------------------------------------------------===//

BoundIndexMap::BoundIndexMap(const IndexMap &map, int64_t n) : map(map), n(n) {
  switch (map.getKind()) {
  case IndexMap::Kind::Identity:
  case IndexMap::Kind::Transpose:
    numMapped = n;
    break;
  case IndexMap::Kind::Gather: {
    int64_t l = map.getPeriod();
    const std::vector<int64_t> &res = map.getResidues();
    rank.assign(l, -1);
    for (auto [k, r] : llvm::enumerate(res))
      rank[r] = k;
    int64_t tail = n % l;
    numMapped = (n / l) * static_cast<int64_t>(res.size()) +
                (std::lower_bound(res.begin(), res.end(), tail) - res.begin());
    break;
  }
  }
}

namespace {
/// Closed forms of the transpose: q full rows, the first `rem` columns one
/// longer.
struct TransposeShape {
  int64_t l, q, rem;
  TransposeShape(int64_t n, int64_t l) : l(l), q(n / l), rem(n % l) {}
  int64_t columnStart(int64_t c) const {
    return c < rem ? c * (q + 1) : rem * (q + 1) + (c - rem) * q;
  }
  int64_t columnLength(int64_t c) const { return c < rem ? q + 1 : q; }
  /// (column, row) of mapped index t.
  std::pair<int64_t, int64_t> locate(int64_t t) const {
    int64_t longPart = rem * (q + 1);
    if (t < longPart)
      return {t / (q + 1), t % (q + 1)};
    t -= longPart;
    return {rem + t / q, t % q};
  }
};
} // namespace

int64_t BoundIndexMap::position(int64_t t) const {
  assert(t >= 0 && t < numMapped && "mapped index out of range");
  switch (map.getKind()) {
  case IndexMap::Kind::Identity:
    return t;
  case IndexMap::Kind::Transpose: {
    TransposeShape shape(n, map.getPeriod());
    auto [c, r] = shape.locate(t);
    return r * map.getPeriod() + c;
  }
  case IndexMap::Kind::Gather: {
    int64_t m = map.getResidues().size();
    return (t / m) * map.getPeriod() + map.getResidues()[t % m];
  }
  }
  llvm_unreachable("unknown index map");
}

int64_t BoundIndexMap::index(int64_t p) const {
  assert(p >= 0 && p < n && "position out of range");
  int64_t l = map.getPeriod();
  switch (map.getKind()) {
  case IndexMap::Kind::Identity:
    return p;
  case IndexMap::Kind::Transpose:
    return TransposeShape(n, l).columnStart(p % l) + p / l;
  case IndexMap::Kind::Gather: {
    int64_t k = rank[p % l];
    return k < 0 ? -1 : (p / l) * int64_t(map.getResidues().size()) + k;
  }
  }
  llvm_unreachable("unknown index map");
}

PositionBox BoundIndexMap::box(int64_t t0, int64_t t1) const {
  assert(0 <= t0 && t0 < t1 && t1 <= numMapped && "bad mapped range");
  PositionBox box;
  int64_t l = map.getPeriod();
  switch (map.getKind()) {
  case IndexMap::Kind::Identity:
    box.stride = 1;
    box.u = {t0, t1 - 1};
    box.v = Interval::point(0);
    return box;
  case IndexMap::Kind::Transpose: {
    TransposeShape shape(n, l);
    auto [c0, r0] = shape.locate(t0);
    auto [c1, r1] = shape.locate(t1 - 1);
    box.stride = l;
    if (c0 == c1) {
      box.u = {r0, r1};
    } else {
      // Several columns: later columns start at row 0, and no column is
      // longer than the first.
      box.u = {0, shape.columnLength(c0) - 1};
    }
    box.v = {c0, c1};
    return box;
  }
  case IndexMap::Kind::Gather: {
    const std::vector<int64_t> &res = map.getResidues();
    int64_t m = res.size();
    int64_t u0 = t0 / m, u1 = (t1 - 1) / m;
    box.stride = l;
    box.u = {u0, u1};
    if (u0 == u1)
      box.v = {res[t0 % m], res[(t1 - 1) % m]};
    else
      box.v = {res.front(), res.back()};
    return box;
  }
  }
  llvm_unreachable("unknown index map");
}
