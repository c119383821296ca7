//===- CrossEntropy.cpp - fused softmax and cross-entropy ------------------===//
//
// Softmax and the loss are fused (as llm.c's fused classifier) so that the
// rows x vocab probabilities are never stored: the gradient of the mean
// loss with respect to the logits is simply (softmax - onehot) * scale and
// overwrites the logits' gradient buffer directly. Each row subtracts its
// max before exp and accumulates the partition sum in double, so the loss
// log(sum exp(z - max)) - (z_t - max) is exact to fp32 rounding even for
// logits of large magnitude. The mean over rows is summed in row order.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Cpu/Ops.h"

#include "sparsetx/Support/Parallel.h"

#include <cassert>
#include <cmath>
#include <vector>

namespace sparsetx::cpu {

double softmaxCrossEntropy(float *losses, float *dlogits, const float *logits,
                           const int32_t *targets, int64_t rows, int64_t vocab,
                           float dlossScale) {
  std::vector<double> rowLoss(static_cast<size_t>(rows));
  sparsetx::parallelForRows(0, static_cast<size_t>(rows), [&](size_t r) {
    const float *z = logits + r * vocab;
    int32_t t = targets[r];
    assert(t >= 0 && t < vocab && "target out of range");
    float maxZ = z[0];
    for (int64_t j = 1; j < vocab; ++j)
      maxZ = z[j] > maxZ ? z[j] : maxZ;
    double sum = 0.0;
    for (int64_t j = 0; j < vocab; ++j)
      sum += std::exp(static_cast<double>(z[j]) - maxZ);
    double logSum = std::log(sum);
    double loss = logSum - (static_cast<double>(z[t]) - maxZ);
    rowLoss[r] = loss;
    if (losses)
      losses[r] = static_cast<float>(loss);
    if (dlogits) {
      float *dz = dlogits + r * vocab;
      for (int64_t j = 0; j < vocab; ++j) {
        double p = std::exp(static_cast<double>(z[j]) - maxZ - logSum);
        dz[j] = static_cast<float>((p - (j == t ? 1.0 : 0.0)) * dlossScale);
      }
    }
  });
  double total = 0.0;
  for (double l : rowLoss)
    total += l;
  return rows ? total / rows : 0.0;
}

} // namespace sparsetx::cpu
