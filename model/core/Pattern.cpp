//===- Pattern.cpp - a .sp pattern bound to a model's n and heads ---------===//

#include "sparsetx/Model/Pattern.h"

#include "sparsetx/Analysis/MaskEvaluator.h"
#include "sparsetx/Codegen/AttentionPlan.h"

#include "llvm/Support/FormatVariadic.h"

using namespace sparsetx;
using namespace sparsetx::model;

AttentionPattern::~AttentionPattern() = default;

llvm::Expected<std::unique_ptr<AttentionPattern>>
AttentionPattern::load(const PatternSource &source, int64_t seqLen,
                       int64_t numHeads, bool requireCausal) {
  auto error = [&](const llvm::Twine &message) {
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   source.path + ": " + message);
  };
  if (seqLen <= 0 || seqLen > (int64_t(1) << 30))
    return error("sequence length " + llvm::Twine(seqLen) +
                 " is out of range (1 .. 2^30)");
  if (numHeads <= 0)
    return error("head count " + llvm::Twine(numHeads) + " must be positive");

  PatternCompileOptions options;
  options.seqLen = seqLen;
  options.numHeads = numHeads;
  options.defines = source.defines;
  options.patternName = source.name;
  llvm::Expected<std::unique_ptr<CompiledPattern>> compiled =
      compilePattern(source.text, source.path, options);
  if (!compiled)
    return compiled.takeError();

  std::unique_ptr<AttentionPattern> result(new AttentionPattern());
  result->source = source;
  result->seqLen = seqLen;
  result->numHeads = numHeads;
  sp::PatternOp pattern = (*compiled)->sourcePattern;
  result->name = pattern.getSymName().str();
  for (auto [nameAttr, value] :
       llvm::zip(pattern.getParamNames(), pattern.getParamValues()))
    result->params.emplace_back(
        llvm::cast<mlir::StringAttr>(nameAttr).getValue().str(), value);

  // The masks of the front end's pattern (per-head masks still read `h`),
  // evaluated exactly at n.
  mlir::FailureOr<PatternEvaluator> evaluator =
      PatternEvaluator::compile(pattern, Binding(seqLen));
  if (mlir::failed(evaluator))
    return error("cannot evaluate the masks of pattern '" + result->name + "'");
  result->perHead = evaluator->isPerHead();
  result->numLayerMasks = evaluator->getNumMasks();
  int64_t heads = result->perHead ? numHeads : 1;
  for (int64_t m = 0; m < result->numLayerMasks; ++m) {
    const MaskProgram &mask = evaluator->getMask(m);
    std::vector<RowSparsity> perHead;
    for (int64_t h = 0; h < heads; ++h) {
      // A causal pattern's rows stop at the diagonal; any other is evaluated
      // over all keys so that a later key is seen (and rejected below).
      perHead.push_back(RowSparsity::fromRows(
          seqLen,
          [&](int64_t i, int64_t count, uint8_t *out) {
            mask.evaluateRow(i, h, 0, count, out);
          },
          evaluator->isCausal()));
      if (!requireCausal)
        continue;
      const RowSparsity &rows = perHead.back();
      for (int64_t i = 0; i < seqLen; ++i) {
        llvm::ArrayRef<int32_t> keys = rows.keys(i);
        if (keys.empty() || keys.back() <= i)
          continue;
        return error(llvm::formatv(
            "pattern '{0}' is not causal: query {1} attends key {2}{3}{4}; an "
            "autoregressive model must not see later positions (declare "
            "`causal;` or mask j <= i)",
            result->name, i, keys.back(),
            result->numLayerMasks > 1 ? llvm::formatv(" in layer {0}", m).str()
                                      : std::string(),
            result->perHead ? llvm::formatv(" in head {0}", h).str()
                            : std::string()));
      }
    }
    result->rows.push_back(std::move(perHead));
  }
  result->compiled = std::move(*compiled);
  return std::move(result);
}

std::optional<int64_t> AttentionPattern::getParam(llvm::StringRef param) const {
  for (const auto &[key, value] : params)
    if (key == param)
      return value;
  return std::nullopt;
}

llvm::SmallVector<const RowSparsity *, 8>
AttentionPattern::layerMasks(int64_t layer) const {
  const std::vector<RowSparsity> &masks = rows[layer % numLayerMasks];
  llvm::SmallVector<const RowSparsity *, 8> result;
  for (const RowSparsity &m : masks)
    result.push_back(&m);
  return result;
}

int64_t AttentionPattern::pairsOfLayer(int64_t layer) const {
  const std::vector<RowSparsity> &masks = rows[layer % numLayerMasks];
  int64_t pairs = 0;
  for (const RowSparsity &m : masks)
    pairs += m.numPairs();
  return masks.size() == 1 ? pairs * numHeads : pairs;
}
