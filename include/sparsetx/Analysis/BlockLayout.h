//===- BlockLayout.h - block classes and schedules of a component -*- C++ -*-===//
//
// Under a query map and a key map, the (query block, key block) grid of one
// mask component: which blocks are empty (skipped), full (computed without
// evaluating the mask) or partial (the mask is evaluated per element), and
// the schedule a kernel walks. Classification recurses over ranges of key
// blocks with the abstract interpreter and evaluates exhaustively only the
// single blocks it cannot decide, so time and memory grow with the non-empty
// blocks, never with n^2.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_ANALYSIS_BLOCKLAYOUT_H
#define SPARSETX_ANALYSIS_BLOCKLAYOUT_H

#include "sparsetx/Analysis/AbstractMask.h"
#include "sparsetx/Analysis/IndexMap.h"
#include "sparsetx/Analysis/MaskEvaluator.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sparsetx {

struct BlockLayoutOptions {
  int64_t blockQ = 64;
  int64_t blockK = 64;
  /// The head whose layout this is (per-head masks); ignored otherwise.
  int64_t head = 0;
  /// Tables larger than this are an error, not an allocation failure.
  int64_t memoryLimitBytes = int64_t(8) << 30;
};

/// Compressed rows: row r owns entries [offsets[r], offsets[r + 1]).
struct BlockTable {
  std::vector<int64_t> offsets;
  std::vector<int32_t> indices;
  int64_t size() const { return static_cast<int64_t>(indices.size()); }
};

/// How a kernel finds the key blocks of a query block.
enum class ScheduleKind {
  /// Every query block's non-empty key blocks are one contiguous range
  /// [begin, end) whose full blocks are one contiguous sub-range [fullBegin,
  /// fullEnd): four numbers per query block, no lookup tables.
  Range,
  /// Anything else: the CSR tables.
  Table
};

struct ComponentLayout {
  IndexMap queryMap, keyMap;
  int64_t seqLen = 0, blockQ = 0, blockK = 0;
  int64_t numQueryBlocks = 0, numKeyBlocks = 0;

  /// By query block (forward pass), full and partial apart, key blocks
  /// ascending within each row.
  BlockTable full, partial;
  /// By key block (backward pass dK, dV): the transposes of full and partial.
  BlockTable fullByKey, partialByKey;

  ScheduleKind schedule = ScheduleKind::Table;
  /// For ScheduleKind::Range, per query block.
  std::vector<int32_t> rangeBegin, rangeEnd, fullBegin, fullEnd;

  /// Attended (query, key) pairs of the component.
  int64_t usefulPairs = 0;
  /// Pairs inside non-empty blocks (clipped at the ends of the mapped ranges):
  /// what a kernel computes.
  int64_t computedPairs = 0;

  /// Cost of the classification (diagnostics): questions put to the abstract
  /// interpreter, and (query, key) pairs evaluated concretely.
  int64_t abstractQueries = 0;
  int64_t evaluatedPairs = 0;

  int64_t numFull() const { return full.size(); }
  int64_t numPartial() const { return partial.size(); }
  int64_t numEmpty() const {
    return numQueryBlocks * numKeyBlocks - numFull() - numPartial();
  }
  double workEfficiency() const {
    return computedPairs ? double(usefulPairs) / double(computedPairs) : 1.0;
  }
  /// Key blocks that some query block reaches: the backward's dK/dV work
  /// lists (from the by-key tables).
  int64_t numKeyLists() const {
    int64_t lists = 0;
    for (int64_t kb = 0; kb + 1 < int64_t(fullByKey.offsets.size()) &&
                         kb + 1 < int64_t(partialByKey.offsets.size());
         ++kb)
      lists += fullByKey.offsets[kb + 1] > fullByKey.offsets[kb] ||
               partialByKey.offsets[kb + 1] > partialByKey.offsets[kb];
    return lists;
  }
  /// Mean length of those lists (query blocks per reached key block; 0 when
  /// none): what decides whether the dK/dV kernels take wgmma
  /// (CodegenOptions::backwardWgmmaMinBlocks).
  double meanKeyListLength() const {
    int64_t lists = numKeyLists();
    return lists ? double(numFull() + numPartial()) / double(lists) : 0.0;
  }
};

/// Classifies every block of the component that `program` and `abstract`
/// (compiled from the same component) describe. Fails with `error` set when
/// the tables would exceed options.memoryLimitBytes.
mlir::FailureOr<ComponentLayout>
classifyBlocks(const MaskProgram &program, const AbstractMask &abstract,
               const IndexMap &queryMap, const IndexMap &keyMap,
               int64_t seqLen, const BlockLayoutOptions &options,
               std::string &error);

/// Brute force: the class of every block by evaluating every pair (for tests
/// and small n). 0 = empty, 1 = full, 2 = partial; row-major.
std::vector<uint8_t> classifyBlocksExhaustively(const MaskProgram &program,
                                                const IndexMap &queryMap,
                                                const IndexMap &keyMap,
                                                int64_t seqLen,
                                                const BlockLayoutOptions &options);

} // namespace sparsetx

#endif // SPARSETX_ANALYSIS_BLOCKLAYOUT_H
