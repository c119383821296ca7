//===- Gelu.cpp - GELU as x * sigmoid(1.702 x), forward and backward -------===//
//
// The paper's feed-forward nonlinearity is the sigmoid approximation of
// GELU (not the tanh form nor erf): x * sigmoid(1.702 x). Its derivative is
// s + 1.702 x s (1 - s). The sigmoid is written 1 / (1 + exp(-a x)), which
// saturates cleanly to 0 or 1 in fp32 for large |x| (exp overflows to inf,
// giving exactly 0), so no branch is needed.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Cpu/Ops.h"

#include "sparsetx/Support/Parallel.h"

#include <cmath>

namespace sparsetx::cpu {

static inline float sigmoid(float z) { return 1.0f / (1.0f + std::exp(-z)); }

void geluForward(float *out, const float *inp, int64_t n) {
  sparsetx::parallelForElements(0, static_cast<size_t>(n), [&](size_t i) {
    float x = inp[i];
    out[i] = x * sigmoid(kGeluAlpha * x);
  });
}

void geluBackward(float *dinp, const float *inp, const float *dout,
                  int64_t n) {
  sparsetx::parallelForElements(0, static_cast<size_t>(n), [&](size_t i) {
    float x = inp[i];
    float s = sigmoid(kGeluAlpha * x);
    dinp[i] += dout[i] * (s + kGeluAlpha * x * s * (1.0f - s));
  });
}

} // namespace sparsetx::cpu
