//===- ClassifyBlocks.cpp - record block classes per component ------------===//

#include "sparsetx/Analysis/PatternLayout.h"
#include "sparsetx/Dialect/SP/Transforms/Passes.h"

#include "mlir/IR/Builders.h"

namespace sparsetx::sp {
#define GEN_PASS_DEF_SPCLASSIFYBLOCKS
#include "sparsetx/Dialect/SP/Transforms/Passes.h.inc"
} // namespace sparsetx::sp

using namespace mlir;
using namespace sparsetx;
using namespace sparsetx::sp;

namespace {
struct ClassifyBlocksPass : sparsetx::sp::impl::SPClassifyBlocksBase<ClassifyBlocksPass> {
  using Base::Base;
  void runOnOperation() override {
    LayoutOptions options;
    options.blockQ = blockQ;
    options.blockK = blockK;
    Builder b(&getContext());
    for (PatternOp pattern : getOperation().getOps<PatternOp>()) {
      FailureOr<PatternLayout> layout = computeLayout(pattern, options);
      if (failed(layout))
        return signalPassFailure();
      for (auto [mask, maskLayout] :
           llvm::zip(pattern.getMasks(), layout->masks)) {
        SmallVector<Attribute> maps, stats;
        for (const ComponentLayout &c : maskLayout.components) {
          maps.push_back(
              b.getStrArrayAttr({c.queryMap.str(), c.keyMap.str()}));
          SmallVector<NamedAttribute> fields{
              b.getNamedAttr("empty", b.getI64IntegerAttr(c.numEmpty())),
              b.getNamedAttr("full", b.getI64IntegerAttr(c.numFull())),
              b.getNamedAttr("partial", b.getI64IntegerAttr(c.numPartial())),
              b.getNamedAttr("useful", b.getI64IntegerAttr(c.usefulPairs)),
              b.getNamedAttr("computed", b.getI64IntegerAttr(c.computedPairs)),
              b.getNamedAttr("schedule",
                             b.getStringAttr(c.schedule == ScheduleKind::Range
                                                 ? "range"
                                                 : "table"))};
          stats.push_back(b.getDictionaryAttr(fields));
        }
        mask.setIndexMapsAttr(b.getArrayAttr(maps));
        mask.setBlockStatsAttr(b.getArrayAttr(stats));
      }
    }
  }
};
} // namespace
