//===- Residual.cpp - residual addition, forward and backward --------------===//
//
// The residual stream H + a(H) + b(H + a(H)): a trivial op, but a separate
// one so that the backend interface has a single place where the GPU path
// can fuse dropout and the add.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Cpu/Ops.h"

#include "sparsetx/Support/Parallel.h"

namespace sparsetx::cpu {

void residualForward(float *out, const float *a, const float *b, int64_t n) {
  sparsetx::parallelForElements(0, static_cast<size_t>(n),
                    [&](size_t i) { out[i] = a[i] + b[i]; });
}

void residualBackward(float *da, float *db, const float *dout, int64_t n) {
  sparsetx::parallelForElements(0, static_cast<size_t>(n), [&](size_t i) {
    if (da)
      da[i] += dout[i];
    if (db)
      db[i] += dout[i];
  });
}

} // namespace sparsetx::cpu
