//===- Verify.cpp - empty rows and connectivity ---------------------------===//
//
// An empty query row is an error: its softmax divides by zero. A pattern
// that does not connect every earlier key to a query within its p steps is
// legal but loses the paper's guarantee (section 4.2) that information can
// flow from any position to any later one, so it is a warning with a witness.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Analysis/Connectivity.h"
#include "sparsetx/Analysis/MaskEvaluator.h"
#include "sparsetx/Dialect/SP/Transforms/Passes.h"

namespace sparsetx::sp {
#define GEN_PASS_DEF_SPVERIFY
#include "sparsetx/Dialect/SP/Transforms/Passes.h.inc"
} // namespace sparsetx::sp

using namespace mlir;
using namespace sparsetx;
using namespace sparsetx::sp;

namespace {

struct VerifyPass : sparsetx::sp::impl::SPVerifyBase<VerifyPass> {
  using Base::Base;
  void runOnOperation() override {
    bool ok = true;
    for (PatternOp pattern : getOperation().getOps<PatternOp>()) {
      std::optional<int64_t> n = pattern.getSeqLen();
      if (!n) {
        pattern.emitError() << "has no sequence length to verify at: run "
                               "sp-specialize with seq-len first";
        ok = false;
        continue;
      }
      int64_t heads = pattern.getNumHeads().value_or(kDefaultNumHeads);
      if (failed(verifyNoEmptyRows(pattern, *n, heads))) {
        ok = false;
        continue;
      }
      FailureOr<ConnectivityResult> result =
          checkConnectivity(pattern, *n, heads, maxConnectivitySeqLen);
      if (failed(result)) {
        ok = false;
        continue;
      }
      if (result->connected)
        continue;
      InFlightDiagnostic diag = pattern.emitWarning()
                                << "pattern '" << pattern.getSymName()
                                << "' does not connect key j = "
                                << result->witnessKey << " to query i = "
                                << result->witnessQuery << " within "
                                << result->steps
                                << (result->steps == 1 ? " step" : " steps");
      if (result->truncated)
        diag << " (checked at n = " << result->checkedSeqLen << ")";
    }
    if (!ok)
      signalPassFailure();
  }
};
} // namespace
