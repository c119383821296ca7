//===- Decompose.cpp - masks as sums of disjoint components ---------------===//
//
// A merged head attends to a union of factors. Attention over a union is not
// the sum of attention over its parts unless the parts are disjoint: a pair
// in two factors would be counted twice in the softmax. Writing A || B || C
// as A, B && !A, C && !(A || B) makes the parts disjoint, so each can be its
// own kernel segment under its own index maps and the results add up exactly.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Dialect/SP/Transforms/Fold.h"
#include "sparsetx/Dialect/SP/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/SetVector.h"

namespace sparsetx::sp {
#define GEN_PASS_DEF_SPDECOMPOSE
#include "sparsetx/Dialect/SP/Transforms/Passes.h.inc"
} // namespace sparsetx::sp

using namespace mlir;
using namespace sparsetx::sp;

namespace {

/// The leaves of the `arith.ori` tree rooted at `value`, left to right.
void collectDisjuncts(Value value, llvm::SetVector<Value> &out) {
  if (auto orOp = value.getDefiningOp<arith::OrIOp>()) {
    collectDisjuncts(orOp.getLhs(), out);
    collectDisjuncts(orOp.getRhs(), out);
    return;
  }
  out.insert(value);
}

void decompose(MaskOp mask) {
  YieldOp yield = mask.getYield();
  llvm::SetVector<Value> disjuncts;
  for (Value v : yield.getValues())
    collectDisjuncts(v, disjuncts);
  OpBuilder b(yield);
  Location loc = mask.getLoc();
  SmallVector<Value> components;
  Value covered; // the union of the disjuncts so far
  Value trueValue;
  for (Value d : disjuncts) {
    if (!covered) {
      components.push_back(d);
      covered = d;
      continue;
    }
    if (!trueValue)
      trueValue = arith::ConstantIntOp::create(b, loc, b.getI1Type(), 1);
    Value notCovered = arith::XOrIOp::create(b, loc, covered, trueValue);
    components.push_back(arith::AndIOp::create(b, loc, d, notCovered));
    covered = arith::OrIOp::create(b, loc, covered, d);
  }
  yield->setOperands(components);
  mask.setDisjoint(true);
}

struct DecomposePass : sparsetx::sp::impl::SPDecomposeBase<DecomposePass> {
  void runOnOperation() override {
    for (PatternOp pattern : getOperation().getOps<PatternOp>()) {
      for (MaskOp mask : pattern.getMasks())
        if (!mask.getDisjoint())
          decompose(mask);
      if (failed(foldMasks(pattern)))
        return signalPassFailure();
    }
  }
};

} // namespace
