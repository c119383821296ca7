//===- Pattern.h - a .sp pattern bound to a model's n and heads -*- C++ -*-===//
//
// The model's view of its attention pattern: the .sp text compiled by the
// project's compiler at the model's sequence length and head count (parsed,
// checked, specialized, verified, laid out: compilePattern), and the exact
// per-row key lists of every residual block's masks, which the CPU backend's
// attention runs over and which decide causality.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_MODEL_PATTERN_H
#define SPARSETX_MODEL_PATTERN_H

#include "sparsetx/Runtime/SparseAttention.h"

#include "llvm/ADT/SmallVector.h"
#include "llvm/Support/Error.h"

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace sparsetx {
struct CompiledPattern;
class PatternEvaluator;
} // namespace sparsetx

namespace sparsetx::model {

/// Where a pattern comes from; saved in checkpoints so that a run can be
/// resumed, evaluated and sampled without the original file.
struct PatternSource {
  std::string text;
  /// The file name, for diagnostics (file:line:col).
  std::string path;
  /// -D NAME=VALUE overrides.
  std::vector<std::pair<std::string, int64_t>> defines;
  /// Which pattern of a file with several; empty: the only one.
  std::string name;
};

class AttentionPattern {
public:
  /// Compiles `source` at `seqLen` for `numHeads` heads. Fails with the
  /// compiler's located diagnostics, or when `requireCausal` and some query
  /// attends a later key (an autoregressive model would see its targets).
  static llvm::Expected<std::unique_ptr<AttentionPattern>>
  load(const PatternSource &source, int64_t seqLen, int64_t numHeads,
       bool requireCausal = true);

  ~AttentionPattern();

  const PatternSource &getSource() const { return source; }
  /// The pattern's name in the .sp file.
  llvm::StringRef getName() const { return name; }
  int64_t getSeqLen() const { return seqLen; }
  int64_t getNumHeads() const { return numHeads; }
  /// Distinct masks over residual blocks (a layered pattern's layer count).
  int64_t getNumLayerMasks() const { return numLayerMasks; }
  bool isPerHead() const { return perHead; }
  /// A parameter's value after -D overrides (e.g. the stride `l`).
  std::optional<int64_t> getParam(llvm::StringRef param) const;

  /// The masks of residual block `layer`: one per head for a per-head
  /// pattern, else one for every head. Evaluated on first use (a causal
  /// pattern's lists are not needed by the GPU's tensor-core attention, and
  /// at long n they are large: n = 2^20 strided holds 3.2 G pairs).
  llvm::SmallVector<const RowSparsity *, 8> layerMasks(int64_t layer) const;
  /// Attended (query, key) pairs of block `layer`, summed over heads (from
  /// the compiler's block layout; no key lists are built).
  int64_t pairsOfLayer(int64_t layer) const;

  /// The compiler's output (specialized pattern and block layout), for the
  /// GPU backend's kernel generation.
  const CompiledPattern &getCompiled() const { return *compiled; }

private:
  AttentionPattern() = default;

  PatternSource source;
  std::string name;
  int64_t seqLen = 0, numHeads = 0, numLayerMasks = 1;
  bool perHead = false;
  std::vector<std::pair<std::string, int64_t>> params;
  /// [layer mask][head or 0], each built on first use.
  mutable std::vector<std::vector<RowSparsity>> rows;
  std::unique_ptr<PatternEvaluator> evaluator;
  std::unique_ptr<CompiledPattern> compiled;
  const std::vector<RowSparsity> &masksOf(int64_t layerMask) const;
};

} // namespace sparsetx::model

#endif // SPARSETX_MODEL_PATTERN_H
