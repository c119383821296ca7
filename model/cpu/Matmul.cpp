//===- Matmul.cpp - dense GEMM, forward and backward ------------------------===//
//
// Every linear layer is a GEMM, and on the CPU it dominates the step, so it
// goes to OpenBLAS (cblas_sgemm) when the build found it. The naive loop
// below is both the fallback and the reading of what sgemm means: each
// output element is one task's fp32 dot product, parallel over rows of C.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Cpu/Ops.h"

#include "sparsetx/Support/Parallel.h"

#include <cassert>

#ifdef SPARSETX_HAVE_CBLAS
#include <cblas.h>
#endif

namespace sparsetx::cpu {

void setGemmThreads(int threads) {
#ifdef SPARSETX_HAVE_CBLAS
  openblas_set_num_threads(threads);
#else
  (void)threads;
#endif
}

bool haveBlas() {
#ifdef SPARSETX_HAVE_CBLAS
  return true;
#else
  return false;
#endif
}

void sgemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k,
           float alpha, const float *a, int64_t lda, const float *b,
           int64_t ldb, float beta, float *c, int64_t ldc) {
  if (m == 0 || n == 0)
    return;
#ifdef SPARSETX_HAVE_CBLAS
  cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
              transB ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a,
              static_cast<int>(lda), b, static_cast<int>(ldb), beta, c,
              static_cast<int>(ldc));
#else
  sparsetx::parallelForRows(0, static_cast<size_t>(m), [&](size_t i) {
    float *crow = c + i * ldc;
    for (int64_t j = 0; j < n; ++j) {
      float acc = 0.0f;
      for (int64_t p = 0; p < k; ++p) {
        float av = transA ? a[p * lda + i] : a[i * lda + p];
        float bv = transB ? b[j * ldb + p] : b[p * ldb + j];
        acc += av * bv;
      }
      // beta == 0 must ignore C (it may hold NaN), as BLAS does.
      crow[j] = alpha * acc + (beta == 0.0f ? 0.0f : beta * crow[j]);
    }
  });
#endif
}

void matmulForward(float *c, const float *a, const float *b, int64_t m,
                   int64_t n, int64_t k, bool transB, bool accumulate) {
  sgemm(/*transA=*/false, transB, m, n, k, 1.0f, a, k, b, transB ? k : n,
        accumulate ? 1.0f : 0.0f, c, n);
}

void matmulBackward(float *da, float *db, const float *dc, const float *a,
                    const float *b, int64_t m, int64_t n, int64_t k,
                    bool transB) {
  const int64_t ldb = transB ? k : n;
  // dA[m x k] += dC[m x n] * op(B)^T: op(B)^T is B itself when B is n x k.
  if (da)
    sgemm(false, !transB, m, k, n, 1.0f, dc, n, b, ldb, 1.0f, da, k);
  if (!db)
    return;
  if (transB) // dB[n x k] += dC^T * A
    sgemm(true, false, n, k, m, 1.0f, dc, n, a, k, 1.0f, db, k);
  else // dB[k x n] += A^T * dC
    sgemm(true, false, k, n, m, 1.0f, a, k, dc, n, 1.0f, db, n);
}

} // namespace sparsetx::cpu
