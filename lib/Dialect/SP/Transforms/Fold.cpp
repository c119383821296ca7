//===- Fold.cpp - fold the masks of a pattern -----------------------------===//

#include "sparsetx/Dialect/SP/Transforms/Fold.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Rewrite/FrozenRewritePatternSet.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

using namespace mlir;

LogicalResult sparsetx::sp::foldMasks(PatternOp pattern) {
  MLIRContext *context = pattern.getContext();
  RewritePatternSet patterns(context);
  for (Dialect *dialect : context->getLoadedDialects())
    dialect->getCanonicalizationPatterns(patterns);
  for (RegisteredOperationName op : context->getRegisteredOperations())
    op.getCanonicalizationPatterns(patterns, context);
  FrozenRewritePatternSet frozen(std::move(patterns));
  for (MaskOp mask : pattern.getMasks())
    if (failed(applyPatternsGreedily(mask.getBody(), frozen)))
      return mask.emitError("folding the mask did not converge");
  return success();
}
