//===- ChooseIndexMaps.cpp - record the index maps of each component ------===//

#include "sparsetx/Analysis/PatternLayout.h"
#include "sparsetx/Dialect/SP/Transforms/Passes.h"

#include "mlir/IR/Builders.h"

namespace sparsetx::sp {
#define GEN_PASS_DEF_SPCHOOSEINDEXMAPS
#include "sparsetx/Dialect/SP/Transforms/Passes.h.inc"
} // namespace sparsetx::sp

using namespace mlir;
using namespace sparsetx;
using namespace sparsetx::sp;

namespace {
struct ChooseIndexMapsPass : sparsetx::sp::impl::SPChooseIndexMapsBase<ChooseIndexMapsPass> {
  using Base::Base;
  void runOnOperation() override {
    LayoutOptions options;
    options.blockQ = blockQ;
    options.blockK = blockK;
    options.probeSeqLen = probeSeqLen;
    Builder b(&getContext());
    for (PatternOp pattern : getOperation().getOps<PatternOp>()) {
      for (MaskOp mask : pattern.getMasks()) {
        SmallVector<Attribute> pairs;
        for (unsigned c = 0, e = mask.getNumComponents(); c < e; ++c) {
          auto best = chooseIndexMaps(mask, c, options);
          if (failed(best))
            return signalPassFailure();
          pairs.push_back(b.getStrArrayAttr(
              {best->first.str(), best->second.str()}));
        }
        mask.setIndexMapsAttr(b.getArrayAttr(pairs));
      }
    }
  }
};
} // namespace
