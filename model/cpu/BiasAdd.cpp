//===- BiasAdd.cpp - row broadcast bias, forward and backward --------------===//
//
// Kept apart from the GEMM so that the GEMM stays a plain BLAS call (CBLAS
// has no bias epilogue; the GPU path fuses it in cuBLASLt instead). The
// bias gradient reduces over rows: one task per column, rows in order, so
// the sum is the same for any thread count.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Cpu/Ops.h"

#include "sparsetx/Support/Parallel.h"

namespace sparsetx::cpu {

void biasAddForward(float *x, const float *bias, int64_t rows, int64_t c) {
  sparsetx::parallelForRows(0, static_cast<size_t>(rows), [&](size_t r) {
    float *row = x + r * c;
    for (int64_t j = 0; j < c; ++j)
      row[j] += bias[j];
  });
}

void biasAddBackward(float *dbias, const float *dout, int64_t rows,
                     int64_t c) {
  sparsetx::parallelForRows(0, static_cast<size_t>(c), [&](size_t j) {
    double acc = 0.0;
    for (int64_t r = 0; r < rows; ++r)
      acc += dout[r * c + j];
    dbias[j] += static_cast<float>(acc);
  });
}

} // namespace sparsetx::cpu
