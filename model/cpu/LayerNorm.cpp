//===- LayerNorm.cpp - layer normalization, forward and backward -----------===//
//
// Pre-activation blocks normalize every residual read, so layernorm runs
// twice per block. Mean and variance are accumulated in double (a row of
// the residual stream can carry a large common offset, and the fp32
// two-pass form still loses digits when c is large); mean and rstd are saved
// so backward needs no second pass over statistics. Backward is the usual
// closed form dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w.
// dweight/dbias are reductions over rows, so they are split by column (one
// task per column, rows in order) to stay deterministic.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Cpu/Ops.h"

#include "sparsetx/Support/Parallel.h"

#include <cmath>

namespace sparsetx::cpu {

void layerNormForward(float *out, float *mean, float *rstd, const float *inp,
                      const float *weight, const float *bias, int64_t rows,
                      int64_t c, float eps) {
  sparsetx::parallelForRows(0, static_cast<size_t>(rows), [&](size_t r) {
    const float *x = inp + r * c;
    double sum = 0.0;
    for (int64_t j = 0; j < c; ++j)
      sum += x[j];
    double mu = sum / c;
    double var = 0.0;
    for (int64_t j = 0; j < c; ++j) {
      double d = x[j] - mu;
      var += d * d;
    }
    var /= c;
    float s = static_cast<float>(1.0 / std::sqrt(var + eps));
    float m = static_cast<float>(mu);
    float *y = out + r * c;
    for (int64_t j = 0; j < c; ++j)
      y[j] = (x[j] - m) * s * weight[j] + bias[j];
    if (mean)
      mean[r] = m;
    if (rstd)
      rstd[r] = s;
  });
}

void layerNormBackward(float *dinp, float *dweight, float *dbias,
                       const float *dout, const float *inp,
                       const float *weight, const float *mean,
                       const float *rstd, int64_t rows, int64_t c) {
  if (dinp) {
    sparsetx::parallelForRows(0, static_cast<size_t>(rows), [&](size_t r) {
      const float *x = inp + r * c;
      const float *dy = dout + r * c;
      float m = mean[r], s = rstd[r];
      double gMean = 0.0, gxMean = 0.0;
      for (int64_t j = 0; j < c; ++j) {
        double g = static_cast<double>(dy[j]) * weight[j];
        gMean += g;
        gxMean += g * ((x[j] - m) * s);
      }
      gMean /= c;
      gxMean /= c;
      float *dx = dinp + r * c;
      for (int64_t j = 0; j < c; ++j) {
        double g = static_cast<double>(dy[j]) * weight[j];
        double xhat = (x[j] - m) * s;
        dx[j] += static_cast<float>(s * (g - gMean - xhat * gxMean));
      }
    });
  }
  if (!dweight && !dbias)
    return;
  sparsetx::parallelForRows(0, static_cast<size_t>(c), [&](size_t j) {
    double dw = 0.0, db = 0.0;
    for (int64_t r = 0; r < rows; ++r) {
      float dy = dout[r * c + j];
      dw += static_cast<double>(dy) * ((inp[r * c + j] - mean[r]) * rstd[r]);
      db += dy;
    }
    if (dweight)
      dweight[j] += static_cast<float>(dw);
    if (dbias)
      dbias[j] += static_cast<float>(db);
  });
}

} // namespace sparsetx::cpu
