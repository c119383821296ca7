//===- PatternLayout.cpp - index maps, blocks and kernels of a pattern ----===//
//
// The index-map search is a real search with a cost model, not a special
// case for the paper's patterns: the candidate periods are the divisors and
// moduli of the mask, the gather residue sets are derived by abstract
// interpretation (a residue is dropped only when the component is provably
// false for every key with that residue, at the full n, so the gather is
// exact), and every candidate pair is classified at a probe length and priced
// by the elements a kernel would compute.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Analysis/PatternLayout.h"

#include "mlir/IR/Matchers.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/JSON.h"

#include <algorithm>

using namespace mlir;
using namespace sparsetx;
using namespace sparsetx::sp;

namespace {

/// A partial block evaluates the mask per element on top of the attention
/// math; this weight prices that against a full block's elements.
constexpr double kPartialWeight = 0.25;
/// Every query row a kernel covers costs a softmax finalization and an output
/// row write even when it attends nothing; priced as this many elements. It
/// also breaks ties toward maps that skip queries which never attend.
constexpr double kRowWeight = 16;
/// At most this many distinct periods are searched per component.
constexpr size_t kMaxPeriods = 4;

LogicalResult requireSpecialized(MaskOp mask, int64_t &n) {
  auto pattern = mask->getParentOfType<PatternOp>();
  std::optional<int64_t> seqLen = pattern.getSeqLen();
  if (!seqLen)
    return mask.emitError()
           << "the pattern has no sequence length: run sp-specialize with "
              "seq-len (sparsec --seq-len) first";
  if (mask.isPerHead())
    return mask.emitError() << "the mask still takes the head index: run "
                               "sp-specialize first";
  bool symbolic = false;
  mask.walk([&](Operation *op) {
    symbolic |= isa<ParamOp, SeqLenOp>(op);
  });
  if (symbolic)
    return mask.emitError() << "the mask still reads parameters or n: run "
                               "sp-specialize first";
  n = *seqLen;
  return success();
}

/// Constant divisors and moduli of the mask: the periods its structure
/// repeats with.
SmallVector<int64_t> candidatePeriods(MaskOp mask, int64_t n) {
  llvm::SetVector<int64_t> periods;
  mask.walk([&](Operation *op) {
    if (!isa<DivOp, ModOp, arith::FloorDivSIOp, arith::RemSIOp,
             arith::DivSIOp, arith::CeilDivSIOp>(op))
      return;
    APInt d;
    if (matchPattern(op->getOperand(1), m_ConstantInt(&d)) &&
        d.getSExtValue() > 1 && d.getSExtValue() < n)
      periods.insert(d.getSExtValue());
  });
  SmallVector<int64_t> result(periods.begin(), periods.end());
  if (result.size() > kMaxPeriods)
    result.resize(kMaxPeriods);
  return result;
}

/// Residues r of period d for which some pair with (query ? i : j) % d == r
/// may be attended: a superset, exact for the gather to drop the others.
std::vector<int64_t> liveResidues(const AbstractMask &abstract, int64_t n,
                                  int64_t d, bool query) {
  PositionBox all{1, {0, n - 1}, Interval::point(0)};
  std::vector<int64_t> residues;
  for (int64_t r = 0; r < d && r < n; ++r) {
    PositionBox some{d, {0, (n - 1 - r) / d}, Interval::point(r)};
    Tri t = query ? abstract.evaluate(some, all) : abstract.evaluate(all, some);
    if (t != Tri::False)
      residues.push_back(r);
  }
  return residues;
}

} // namespace

FailureOr<std::pair<IndexMap, IndexMap>>
sparsetx::chooseIndexMaps(MaskOp mask, unsigned component,
                          const LayoutOptions &options,
                          std::vector<MapCandidate> *tried) {
  int64_t n;
  if (failed(requireSpecialized(mask, n)))
    return failure();
  int64_t probe = std::min(n, options.probeSeqLen);
  FailureOr<AbstractMask> full = AbstractMask::compile(mask, Binding(n), component);
  FailureOr<MaskProgram> program = MaskProgram::compile(mask, Binding(n), component);
  if (failed(full) || failed(program))
    return failure();

  std::vector<IndexMap> queryMaps{IndexMap::identity()};
  std::vector<IndexMap> keyMaps{IndexMap::identity()};
  std::vector<int64_t> periodOf{1};
  std::vector<int64_t> keyPeriodOf{1};
  for (int64_t d : candidatePeriods(mask, n)) {
    queryMaps.push_back(IndexMap::transpose(d));
    periodOf.push_back(d);
    keyMaps.push_back(IndexMap::transpose(d));
    keyPeriodOf.push_back(d);
    std::vector<int64_t> q = liveResidues(*full, n, d, /*query=*/true);
    if (!q.empty() && int64_t(q.size()) < d) {
      queryMaps.push_back(IndexMap::gather(d, q));
      periodOf.push_back(d);
    }
    std::vector<int64_t> k = liveResidues(*full, n, d, /*query=*/false);
    if (!k.empty() && int64_t(k.size()) < d) {
      keyMaps.push_back(IndexMap::gather(d, k));
      keyPeriodOf.push_back(d);
    }
  }

  BlockLayoutOptions blockOptions;
  blockOptions.blockQ = options.blockQ;
  blockOptions.blockK = options.blockK;
  blockOptions.memoryLimitBytes = options.memoryLimitBytes;
  std::vector<MapCandidate> candidates;
  for (size_t a = 0; a < queryMaps.size(); ++a) {
    for (size_t b = 0; b < keyMaps.size(); ++b) {
      // Mixing two different periods never lines blocks up; skip those.
      if (periodOf[a] != 1 && keyPeriodOf[b] != 1 &&
          periodOf[a] != keyPeriodOf[b])
        continue;
      std::string error;
      FailureOr<ComponentLayout> layout =
          classifyBlocks(*program, *full, queryMaps[a], keyMaps[b], probe,
                         blockOptions, error);
      if (failed(layout))
        continue; // too large at the probe length: not a contender
      MapCandidate c;
      c.queryMap = queryMaps[a];
      c.keyMap = keyMaps[b];
      c.computedPairs = layout->computedPairs;
      c.usefulPairs = layout->usefulPairs;
      c.partialBlocks = layout->numPartial();
      c.cost = double(layout->computedPairs) +
               kPartialWeight * double(layout->numPartial()) *
                   double(options.blockQ * options.blockK) +
               kRowWeight * double(layout->numQueryBlocks * options.blockQ);
      candidates.push_back(std::move(c));
    }
  }
  if (candidates.empty())
    return mask.emitError() << "no index map of component #" << component
                            << " fits the memory limit";
  // Stable: among equal costs the simpler (earlier) maps win.
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const MapCandidate &x, const MapCandidate &y) {
                     return x.cost < y.cost;
                   });
  std::pair<IndexMap, IndexMap> best{candidates.front().queryMap,
                                     candidates.front().keyMap};
  if (tried)
    *tried = std::move(candidates);
  return best;
}

FailureOr<std::vector<std::pair<IndexMap, IndexMap>>>
sparsetx::getOrChooseIndexMaps(MaskOp mask, const LayoutOptions &options) {
  std::vector<std::pair<IndexMap, IndexMap>> maps;
  if (std::optional<ArrayAttr> recorded = mask.getIndexMaps()) {
    for (Attribute pair : *recorded) {
      auto arr = cast<ArrayAttr>(pair);
      std::string error;
      FailureOr<IndexMap> q =
          IndexMap::parse(cast<StringAttr>(arr[0]).getValue(), error);
      if (failed(q))
        return mask.emitError() << error;
      FailureOr<IndexMap> k =
          IndexMap::parse(cast<StringAttr>(arr[1]).getValue(), error);
      if (failed(k))
        return mask.emitError() << error;
      maps.emplace_back(*q, *k);
    }
    return maps;
  }
  for (unsigned c = 0, e = mask.getNumComponents(); c < e; ++c) {
    auto best = chooseIndexMaps(mask, c, options);
    if (failed(best))
      return failure();
    maps.push_back(*best);
  }
  return maps;
}

std::vector<std::vector<unsigned>>
sparsetx::groupByQueryMap(llvm::ArrayRef<std::string> queryMaps,
                          llvm::ArrayRef<bool> nonEmpty) {
  std::vector<std::vector<unsigned>> groups;
  std::vector<llvm::StringRef> keys;
  for (unsigned c = 0; c < queryMaps.size(); ++c) {
    if (!nonEmpty[c])
      continue; // attends to nothing: no kernel work at all
    auto it = llvm::find(keys, llvm::StringRef(queryMaps[c]));
    if (it == keys.end()) {
      keys.push_back(queryMaps[c]);
      groups.emplace_back();
      it = std::prev(keys.end());
    }
    groups[it - keys.begin()].push_back(c);
  }
  return groups;
}

std::vector<KernelPlan>
sparsetx::planKernels(const std::vector<ComponentLayout> &components) {
  std::vector<std::string> maps;
  llvm::SmallVector<bool> nonEmpty;
  for (const ComponentLayout &c : components) {
    maps.push_back(c.queryMap.str());
    nonEmpty.push_back(c.numFull() + c.numPartial() > 0);
  }
  std::vector<KernelPlan> kernels;
  for (std::vector<unsigned> &group : groupByQueryMap(maps, nonEmpty))
    kernels.push_back({components[group.front()].queryMap, std::move(group)});
  return kernels;
}

FailureOr<PatternLayout> sparsetx::computeLayout(PatternOp pattern,
                                                 const LayoutOptions &options) {
  PatternLayout result;
  result.name = pattern.getSymName().str();
  result.blockQ = options.blockQ;
  result.blockK = options.blockK;
  for (MaskOp mask : pattern.getMasks()) {
    int64_t n;
    if (failed(requireSpecialized(mask, n)))
      return failure();
    result.seqLen = n;
    auto maps = getOrChooseIndexMaps(mask, options);
    if (failed(maps))
      return failure();
    MaskLayout maskLayout;
    maskLayout.layer = mask.getLayer();
    maskLayout.head = mask.getHead();
    BlockLayoutOptions blockOptions;
    blockOptions.blockQ = options.blockQ;
    blockOptions.blockK = options.blockK;
    blockOptions.memoryLimitBytes = options.memoryLimitBytes;
    for (auto [c, pair] : llvm::enumerate(*maps)) {
      FailureOr<MaskProgram> program =
          MaskProgram::compile(mask, Binding(n), unsigned(c));
      FailureOr<AbstractMask> abstract =
          AbstractMask::compile(mask, Binding(n), unsigned(c));
      if (failed(program) || failed(abstract))
        return failure();
      std::string error;
      FailureOr<ComponentLayout> layout = classifyBlocks(
          *program, *abstract, pair.first, pair.second, n, blockOptions, error);
      if (failed(layout))
        return mask.emitError() << error;
      maskLayout.components.push_back(std::move(*layout));
    }
    maskLayout.kernels = planKernels(maskLayout.components);
    result.masks.push_back(std::move(maskLayout));
  }
  return result;
}

//===----------------------------------------------------------------------===//
// Printing
//===----------------------------------------------------------------------===//

namespace {

void writeArray(llvm::json::OStream &j, llvm::StringRef key,
                llvm::ArrayRef<int64_t> values) {
  j.attributeArray(key, [&] {
    for (int64_t v : values)
      j.value(v);
  });
}
void writeArray(llvm::json::OStream &j, llvm::StringRef key,
                llvm::ArrayRef<int32_t> values) {
  j.attributeArray(key, [&] {
    for (int32_t v : values)
      j.value(int64_t(v));
  });
}

void writeTable(llvm::json::OStream &j, llvm::StringRef key,
                const BlockTable &table) {
  j.attributeObject(key, [&] {
    writeArray(j, "offsets", table.offsets);
    writeArray(j, "indices", table.indices);
  });
}

std::string maskName(const MaskLayout &m) {
  std::string s;
  if (m.layer)
    s += "layer " + std::to_string(*m.layer);
  if (m.head)
    s += (s.empty() ? "" : " ") + std::string("head ") + std::to_string(*m.head);
  return s.empty() ? "all heads" : s;
}

int64_t attendablePairs(int64_t n, bool causal) {
  return causal ? n * (n + 1) / 2 : n * n;
}

} // namespace

void sparsetx::printLayoutJSON(const PatternLayout &layout, PatternOp pattern,
                               llvm::raw_ostream &os) {
  llvm::json::OStream j(os, /*IndentSize=*/0);
  j.object([&] {
    j.attribute("pattern", layout.name);
    j.attribute("seq_len", layout.seqLen);
    j.attribute("causal", pattern.getCausal());
    if (std::optional<int64_t> h = pattern.getNumHeads())
      j.attribute("num_heads", *h);
    j.attributeObject("params", [&] {
      for (auto [name, value] :
           llvm::zip(pattern.getParamNames(), pattern.getParamValues()))
        j.attribute(cast<StringAttr>(name).getValue(), value);
    });
    j.attribute("block_q", layout.blockQ);
    j.attribute("block_k", layout.blockK);
    int64_t useful = 0, computed = 0;
    j.attributeArray("masks", [&] {
      for (const MaskLayout &m : layout.masks) {
        j.object([&] {
          if (m.layer)
            j.attribute("layer", *m.layer);
          if (m.head)
            j.attribute("head", *m.head);
          j.attributeArray("components", [&] {
            for (auto [c, comp] : llvm::enumerate(m.components)) {
              useful += comp.usefulPairs;
              computed += comp.computedPairs;
              j.object([&] {
                j.attribute("index", int64_t(c));
                j.attribute("query_map", comp.queryMap.str());
                j.attribute("key_map", comp.keyMap.str());
                j.attribute("query_blocks", comp.numQueryBlocks);
                j.attribute("key_blocks", comp.numKeyBlocks);
                j.attribute("empty_blocks", comp.numEmpty());
                j.attribute("full_blocks", comp.numFull());
                j.attribute("partial_blocks", comp.numPartial());
                j.attribute("useful_pairs", comp.usefulPairs);
                j.attribute("computed_pairs", comp.computedPairs);
                j.attribute("work_efficiency", comp.workEfficiency());
                if (comp.schedule == ScheduleKind::Range) {
                  j.attributeObject("schedule", [&] {
                    j.attribute("kind", "range");
                    writeArray(j, "begin", comp.rangeBegin);
                    writeArray(j, "end", comp.rangeEnd);
                    writeArray(j, "full_begin", comp.fullBegin);
                    writeArray(j, "full_end", comp.fullEnd);
                  });
                } else {
                  j.attributeObject("schedule", [&] {
                    j.attribute("kind", "table");
                    writeTable(j, "full", comp.full);
                    writeTable(j, "partial", comp.partial);
                    writeTable(j, "full_by_key", comp.fullByKey);
                    writeTable(j, "partial_by_key", comp.partialByKey);
                  });
                }
              });
            }
          });
          j.attributeArray("kernels", [&] {
            for (const KernelPlan &k : m.kernels)
              j.object([&] {
                j.attribute("query_map", k.queryMap.str());
                j.attributeArray("components", [&] {
                  for (unsigned c : k.components)
                    j.value(int64_t(c));
                });
              });
          });
        });
      }
    });
    j.attributeObject("totals", [&] {
      j.attribute("useful_pairs", useful);
      j.attribute("computed_pairs", computed);
      j.attribute("work_efficiency",
                  computed ? double(useful) / double(computed) : 1.0);
    });
  });
  os << "\n";
}

void sparsetx::printLayoutStats(const PatternLayout &layout, PatternOp pattern,
                                llvm::raw_ostream &os) {
  int64_t n = layout.seqLen;
  os << "pattern " << layout.name << " at n = " << n << ", blocks "
     << layout.blockQ << "x" << layout.blockK
     << (pattern.getCausal() ? ", causal" : "") << "\n";
  os << llvm::format("%-22s %-18s %-24s %9s %9s %9s %9s %8s %10s %7s\n",
                     "mask", "query map", "key map", "blocks", "empty", "full",
                     "partial", "density", "efficiency", "by key");
  int64_t useful = 0, computed = 0, full = 0, partial = 0, empty = 0;
  for (const MaskLayout &m : layout.masks) {
    int64_t maskUseful = 0;
    for (auto [c, comp] : llvm::enumerate(m.components)) {
      std::string name = maskName(m) + " #" + std::to_string(c);
      double density = double(comp.usefulPairs) /
                       double(attendablePairs(n, pattern.getCausal()));
      os << llvm::format("%-22s %-18s %-24s %9lld %9lld %9lld %9lld %7.4f%% "
                         "%10.4f %7.1f\n",
                         name.c_str(), comp.queryMap.str().c_str(),
                         comp.keyMap.str().c_str(),
                         (long long)(comp.numQueryBlocks * comp.numKeyBlocks),
                         (long long)comp.numEmpty(), (long long)comp.numFull(),
                         (long long)comp.numPartial(), 100 * density,
                         comp.workEfficiency(), comp.meanKeyListLength());
      useful += comp.usefulPairs;
      computed += comp.computedPairs;
      full += comp.numFull();
      partial += comp.numPartial();
      empty += comp.numEmpty();
      maskUseful += comp.usefulPairs;
    }
    os << "  " << maskName(m) << ": " << m.kernels.size() << " kernel"
       << (m.kernels.size() == 1 ? "" : "s") << ", density "
       << llvm::format("%.4f%%", 100.0 * double(maskUseful) /
                                     double(attendablePairs(n, pattern.getCausal())))
       << " of the " << (pattern.getCausal() ? "causal " : "") << "pairs\n";
  }
  os << llvm::format("%-66s %9s %9lld %9lld %9lld %8s %10.4f\n", "total", "",
                     (long long)empty, (long long)full, (long long)partial, "",
                     computed ? double(useful) / double(computed) : 1.0);
  os << "useful pairs " << useful << ", computed pairs " << computed << "\n";
}
