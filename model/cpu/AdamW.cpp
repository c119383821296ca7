//===- AdamW.cpp - AdamW update and global-norm gradient clipping ----------===//
//
// The optimizer runs over one flat fp32 master-parameter array so that the
// model needs a single call per step. Weight decay is decoupled (Loshchilov
// & Hutter): it shrinks the weight directly, scaled by lr, instead of being
// added to the gradient where Adam's normalization would cancel it. Bias
// corrections 1 - beta^t are computed in double so that they stay exact
// over long runs. Clipping is a separate function because the norm is also
// what the training loop logs, and it must run before the update; its
// reduction is chunked with a fixed chunk size and summed in chunk order.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Cpu/Ops.h"

#include "sparsetx/Support/Parallel.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <vector>

namespace sparsetx::cpu {

void adamwStep(float *params, const float *grads, float *m, float *v,
               int64_t n, int64_t step, const AdamWConfig &config) {
  assert(step >= 1 && "AdamW step is 1-based");
  float c1 = static_cast<float>(
      1.0 - std::pow(static_cast<double>(config.beta1), double(step)));
  float c2 = static_cast<float>(
      1.0 - std::pow(static_cast<double>(config.beta2), double(step)));
  sparsetx::parallelForElements(0, static_cast<size_t>(n), [&](size_t i) {
    float g = grads[i];
    float mi = config.beta1 * m[i] + (1.0f - config.beta1) * g;
    float vi = config.beta2 * v[i] + (1.0f - config.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float mhat = mi / c1;
    float vhat = vi / c2;
    params[i] -= config.lr * (mhat / (std::sqrt(vhat) + config.eps) +
                              config.weightDecay * params[i]);
  });
}

double clipGradNorm(float *grads, int64_t n, double maxNorm) {
  constexpr int64_t kChunk = 1 << 14;
  int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
  sparsetx::parallelFor(0, static_cast<size_t>(chunks), [&](size_t c) {
    int64_t b = static_cast<int64_t>(c) * kChunk;
    int64_t e = std::min(n, b + kChunk);
    double acc = 0.0;
    for (int64_t i = b; i < e; ++i)
      acc += static_cast<double>(grads[i]) * grads[i];
    partial[c] = acc;
  });
  double sumSq = 0.0;
  for (double p : partial)
    sumSq += p;
  double norm = std::sqrt(sumSq);
  if (maxNorm > 0.0 && norm > maxNorm) {
    float scale = static_cast<float>(maxNorm / norm);
    sparsetx::parallelForElements(0, static_cast<size_t>(n),
                      [&](size_t i) { grads[i] *= scale; });
  }
  return norm;
}

} // namespace sparsetx::cpu
