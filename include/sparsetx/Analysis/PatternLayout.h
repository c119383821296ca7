//===- PatternLayout.h - index maps, blocks and kernels of a pattern -*- C++ -*-===//
//
// The compiler's knowledge of a specialized, decomposed pattern at one
// sequence length: per mask (layer / head) and per component, the chosen
// index maps and the block layout, and the kernels the components group
// into. The sp passes record summaries of it on the IR; sparsec prints it as
// JSON, tables and pictures; codegen instantiates kernels from it.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_ANALYSIS_PATTERNLAYOUT_H
#define SPARSETX_ANALYSIS_PATTERNLAYOUT_H

#include "sparsetx/Analysis/BlockLayout.h"
#include "sparsetx/Dialect/SP/IR/SP.h"

#include "llvm/Support/raw_ostream.h"

#include <optional>
#include <string>
#include <vector>

namespace sparsetx {

struct LayoutOptions {
  int64_t blockQ = 64;
  int64_t blockK = 64;
  /// Candidate maps are compared by classifying at min(n, probeSeqLen).
  int64_t probeSeqLen = 16384;
  int64_t memoryLimitBytes = int64_t(8) << 30;
};

/// One candidate of the index-map search and what it would cost.
struct MapCandidate {
  IndexMap queryMap, keyMap;
  double cost = 0;
  int64_t computedPairs = 0, usefulPairs = 0, partialBlocks = 0;
};

/// Components sharing a query map: one kernel, one online softmax.
struct KernelPlan {
  IndexMap queryMap;
  std::vector<unsigned> components;
};

struct MaskLayout {
  std::optional<int64_t> layer, head;
  std::vector<ComponentLayout> components;
  std::vector<KernelPlan> kernels;
};

struct PatternLayout {
  std::string name;
  int64_t seqLen = 0;
  int64_t blockQ = 0, blockK = 0;
  std::vector<MaskLayout> masks;
};

/// Searches the index maps of component `component` of `mask` (specialized:
/// constants only, n in the pattern's seq_len). Returns the cheapest pair;
/// fills `tried` with every candidate considered, cheapest first.
mlir::FailureOr<std::pair<IndexMap, IndexMap>>
chooseIndexMaps(sp::MaskOp mask, unsigned component,
                const LayoutOptions &options,
                std::vector<MapCandidate> *tried = nullptr);

/// The index maps recorded on `mask` by sp-choose-index-maps, or, for a mask
/// without them, the result of the search.
mlir::FailureOr<std::vector<std::pair<IndexMap, IndexMap>>>
getOrChooseIndexMaps(sp::MaskOp mask, const LayoutOptions &options);

/// Kernel grouping: the indices of the components with `nonEmpty` set, grouped
/// by equal query map (in order of first appearance). Shared by
/// sp-plan-kernels (which sees maps as strings) and planKernels.
std::vector<std::vector<unsigned>>
groupByQueryMap(llvm::ArrayRef<std::string> queryMaps,
                llvm::ArrayRef<bool> nonEmpty);

/// Groups the non-empty components by query map, in component order.
std::vector<KernelPlan> planKernels(const std::vector<ComponentLayout> &components);

/// The full layout of a specialized, decomposed pattern with a seq_len.
/// Errors are emitted as diagnostics at the offending op.
mlir::FailureOr<PatternLayout> computeLayout(sp::PatternOp pattern,
                                             const LayoutOptions &options);

/// `sparsec --emit=layout`: the layout as JSON.
void printLayoutJSON(const PatternLayout &layout, sp::PatternOp pattern,
                     llvm::raw_ostream &os);
/// `sparsec --emit=stats`: a table per component and in total.
void printLayoutStats(const PatternLayout &layout, sp::PatternOp pattern,
                      llvm::raw_ostream &os);

} // namespace sparsetx

#endif // SPARSETX_ANALYSIS_PATTERNLAYOUT_H
