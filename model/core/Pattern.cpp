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
  result->evaluator = std::make_unique<PatternEvaluator>(std::move(*evaluator));
  result->rows.resize(result->numLayerMasks);
  // A pattern that declares `causal;` is causal by construction; any other
  // is evaluated now, over all keys, so that a later key is found (and
  // rejected with its position).
  if (requireCausal && !result->evaluator->isCausal()) {
    for (int64_t m = 0; m < result->numLayerMasks; ++m) {
      const std::vector<RowSparsity> &perHead = result->masksOf(m);
      for (size_t h = 0; h < perHead.size(); ++h) {
        const RowSparsity &rows = perHead[h];
        for (int64_t i = 0; i < seqLen; ++i) {
          llvm::ArrayRef<int32_t> keys = rows.keys(i);
          if (keys.empty() || keys.back() <= i)
            continue;
          return error(llvm::formatv(
              "pattern '{0}' is not causal: query {1} attends key {2}{3}{4}; "
              "an autoregressive model must not see later positions (declare "
              "`causal;` or mask j <= i)",
              result->name, i, keys.back(),
              result->numLayerMasks > 1
                  ? llvm::formatv(" in layer {0}", m).str()
                  : std::string(),
              result->perHead ? llvm::formatv(" in head {0}", h).str()
                              : std::string()));
        }
      }
    }
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

const std::vector<RowSparsity> &
AttentionPattern::masksOf(int64_t layerMask) const {
  std::vector<RowSparsity> &lists = rows[layerMask];
  if (!lists.empty())
    return lists;
  const MaskProgram &mask = evaluator->getMask(layerMask);
  int64_t heads = perHead ? numHeads : 1;
  for (int64_t h = 0; h < heads; ++h)
    lists.push_back(RowSparsity::fromRows(
        seqLen,
        [&](int64_t i, int64_t count, uint8_t *out) {
          mask.evaluateRow(i, h, 0, count, out);
        },
        evaluator->isCausal()));
  return lists;
}

llvm::SmallVector<const RowSparsity *, 8>
AttentionPattern::layerMasks(int64_t layer) const {
  llvm::SmallVector<const RowSparsity *, 8> result;
  for (const RowSparsity &m : masksOf(layer % numLayerMasks))
    result.push_back(&m);
  return result;
}

int64_t AttentionPattern::pairsOfLayer(int64_t layer) const {
  // The compiled layout's masks are disjoint components with exact pair
  // counts; a mask without a head serves every head.
  int64_t pairs = 0;
  for (const MaskLayout &mask : compiled->layout.masks) {
    if (mask.layer && *mask.layer != layer % numLayerMasks)
      continue;
    int64_t maskPairs = 0;
    for (const ComponentLayout &c : mask.components)
      maskPairs += c.usefulPairs;
    pairs += mask.head ? maskPairs : maskPairs * numHeads;
  }
  return pairs;
}
