//===- Specialize.cpp - bind n, heads and parameters ----------------------===//
//
// After this pass a pattern's masks are closed: every parameter and n is a
// constant, and a per-head mask has become one mask per head. Everything
// downstream (decomposition, index maps, block classes) works per concrete
// mask, so the head index must be a constant there.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Dialect/SP/Transforms/Fold.h"
#include "sparsetx/Dialect/SP/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/StringSet.h"

namespace sparsetx::sp {
#define GEN_PASS_DEF_SPSPECIALIZE
#include "sparsetx/Dialect/SP/Transforms/Passes.h.inc"
} // namespace sparsetx::sp

using namespace mlir;
using namespace sparsetx::sp;

namespace {

/// Replaces the per-head `mask` by `numHeads` masks, head H with h := H.
void expandHeads(MaskOp mask, int64_t numHeads) {
  OpBuilder builder(mask);
  for (int64_t head = 0; head < numHeads; ++head) {
    auto copy = MaskOp::create(builder, mask.getLoc(), mask.getLayer(),
                               /*perHead=*/false);
    copy.setHeadAttr(builder.getI64IntegerAttr(head));
    Block &from = mask.getBodyBlock();
    Block &to = copy.getBodyBlock();
    OpBuilder inner = OpBuilder::atBlockBegin(&to);
    IRMapping mapping;
    mapping.map(from.getArgument(0), to.getArgument(0));
    mapping.map(from.getArgument(1), to.getArgument(1));
    mapping.map(from.getArgument(2),
                arith::ConstantIntOp::create(inner, mask.getLoc(),
                                             inner.getI64Type(), head)
                    .getResult());
    for (Operation &op : from)
      inner.clone(op, mapping);
  }
  mask.erase();
}

struct SpecializePass : sparsetx::sp::impl::SPSpecializeBase<SpecializePass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<std::pair<std::string, int64_t>> overrides;
    for (const std::string &define : defines) {
      auto [name, value] = StringRef(define).split('=');
      int64_t parsed;
      if (name.empty() || value.size() + name.size() == define.size() ||
          value.trim().getAsInteger(10, parsed)) {
        module.emitError() << "invalid define '" << define
                           << "': expected NAME=VALUE with an integer VALUE";
        return signalPassFailure();
      }
      overrides.emplace_back(name.trim().str(), parsed);
    }
    llvm::StringSet<> used;
    for (PatternOp pattern : module.getOps<PatternOp>())
      for (auto &[name, value] : overrides)
        if (pattern.setParam(name, value))
          used.insert(name);
    for (auto &[name, value] : overrides)
      if (!used.contains(name)) {
        module.emitError() << "no pattern has a parameter named '" << name
                           << "'";
        return signalPassFailure();
      }
    for (PatternOp pattern : module.getOps<PatternOp>())
      if (failed(specialize(pattern)))
        return signalPassFailure();
  }

  LogicalResult specialize(PatternOp pattern) {
    Builder b(pattern.getContext());
    std::optional<int64_t> n = pattern.getSeqLen();
    if (seqLen < 0)
      return pattern.emitError() << "seq-len must be positive, but is " << seqLen;
    if (seqLen > 0)
      n = seqLen;
    if (n)
      pattern.setSeqLenAttr(b.getI64IntegerAttr(*n));

    bool perHead = llvm::any_of(pattern.getMasks(),
                                [](MaskOp m) { return m.isPerHead(); });
    if (numHeads < 0)
      return pattern.emitError() << "num-heads must be positive, but is "
                                 << numHeads;
    int64_t heads = numHeads > 0 ? int64_t(numHeads)
                                 : pattern.getNumHeads().value_or(kDefaultNumHeads);
    if (perHead || numHeads > 0)
      pattern.setNumHeadsAttr(b.getI64IntegerAttr(heads));
    for (MaskOp mask : pattern.getMasks())
      if (mask.isPerHead())
        expandHeads(mask, heads);

    pattern.walk([&](ParamOp param) {
      OpBuilder builder(param);
      // The verifier guarantees the parameter exists.
      int64_t value = *pattern.getParam(param.getName());
      param.replaceAllUsesWith(arith::ConstantIntOp::create(
                                   builder, param.getLoc(),
                                   builder.getI64Type(), value)
                                   .getResult());
      param.erase();
    });
    pattern.walk([&](SeqLenOp op) {
      if (!n)
        return;
      OpBuilder builder(op);
      op.replaceAllUsesWith(arith::ConstantIntOp::create(
                                builder, op.getLoc(), builder.getI64Type(), *n)
                                .getResult());
      op.erase();
    });
    return foldMasks(pattern);
  }
};

} // namespace
