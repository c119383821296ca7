//===- PlanKernels.cpp - group components into kernels --------------------===//
//
// Components under one query map share the rows they produce, so they run as
// consecutive segments of one kernel over one online-softmax state; a
// different query map means a different output order, hence a separate
// kernel whose result merges by log-sum-exp. Components that block
// classification found empty get no kernel.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Analysis/PatternLayout.h"
#include "sparsetx/Dialect/SP/Transforms/Passes.h"

#include "mlir/IR/Builders.h"

namespace sparsetx::sp {
#define GEN_PASS_DEF_SPPLANKERNELS
#include "sparsetx/Dialect/SP/Transforms/Passes.h.inc"
} // namespace sparsetx::sp

using namespace mlir;
using namespace sparsetx;
using namespace sparsetx::sp;

namespace {
struct PlanKernelsPass : sparsetx::sp::impl::SPPlanKernelsBase<PlanKernelsPass> {
  void runOnOperation() override {
    Builder b(&getContext());
    for (PatternOp pattern : getOperation().getOps<PatternOp>()) {
      for (MaskOp mask : pattern.getMasks()) {
        std::optional<ArrayAttr> maps = mask.getIndexMaps();
        if (!maps) {
          mask.emitError() << "has no index maps: run sp-choose-index-maps "
                              "first";
          return signalPassFailure();
        }
        std::optional<ArrayAttr> stats = mask.getBlockStats();
        std::vector<std::string> queryMaps;
        SmallVector<bool> nonEmpty;
        for (auto [c, pair] : llvm::enumerate(*maps)) {
          queryMaps.push_back(
              cast<StringAttr>(cast<ArrayAttr>(pair)[0]).getValue().str());
          // Without block classes every component counts as non-empty.
          bool any = true;
          if (stats) {
            auto dict = cast<DictionaryAttr>((*stats)[c]);
            auto full = dict.getAs<IntegerAttr>("full");
            auto partial = dict.getAs<IntegerAttr>("partial");
            any = !full || !partial || full.getInt() + partial.getInt() > 0;
          }
          nonEmpty.push_back(any);
        }
        SmallVector<Attribute> attrs;
        for (const std::vector<unsigned> &group :
             groupByQueryMap(queryMaps, nonEmpty))
          attrs.push_back(b.getDenseI64ArrayAttr(
              SmallVector<int64_t>(group.begin(), group.end())));
        mask.setKernelsAttr(b.getArrayAttr(attrs));
      }
    }
  }
};
} // namespace
