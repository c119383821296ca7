//===- Ops.h - CPU reference ops of the model backend -----------------------===//
//
// The fp32 CPU backend of the model (DESIGN.md section 4): every op the
// transformer needs, forward and backward, over plain row-major pointers.
// It is the oracle the GPU kernels are tested against and the backend of a
// machine with no GPU, so each op favours obvious numerics over speed; only
// the GEMM goes through OpenBLAS when it is available.
//
// Conventions (llm.c style):
//  - sizes are int64_t element counts, matrices are row-major and dense;
//  - backward functions ACCUMULATE (+=) into gradient buffers, so a tensor
//    used twice (residual stream, tied weights) gets the sum; callers zero
//    gradients once per step;
//  - a null gradient pointer means "not needed" and is skipped;
//  - preconditions (ids in range, shapes) are asserted, never exit()ed;
//  - parallelism (llvm::parallelFor) only splits work so that every output
//    element is written by exactly one task in a fixed order: results are
//    bitwise identical for any thread count.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_MODEL_CPU_OPS_H
#define SPARSETX_MODEL_CPU_OPS_H

#include <cstdint>

namespace sparsetx::cpu {

//===----------------------------------------------------------------------===//
// Matmul (Matmul.cpp)
//===----------------------------------------------------------------------===//

/// Whether the GEMM is served by CBLAS (OpenBLAS) in this build.
bool haveBlas();

/// Threads of the BLAS library's own pool (no-op without BLAS).
void setGemmThreads(int threads);

/// General row-major GEMM: C = alpha * op(A) * op(B) + beta * C, where op(A)
/// is m x k and op(B) is k x n. lda/ldb/ldc are row strides of the stored
/// matrices (as in CBLAS row-major).
void sgemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k,
           float alpha, const float *a, int64_t lda, const float *b,
           int64_t ldb, float beta, float *c, int64_t ldc);

/// C[m x n] (+)= A[m x k] * B, where B is stored n x k when transB (the
/// linear-layer layout, C = A * B^T) and k x n otherwise. With accumulate,
/// C is added to instead of overwritten.
void matmulForward(float *c, const float *a, const float *b, int64_t m,
                   int64_t n, int64_t k, bool transB, bool accumulate = false);

/// Gradients of matmulForward: dA[m x k] += dC * op(B)^T and dB (stored like
/// B) += gradient. Either of dA, dB may be null.
void matmulBackward(float *da, float *db, const float *dc, const float *a,
                    const float *b, int64_t m, int64_t n, int64_t k,
                    bool transB);

//===----------------------------------------------------------------------===//
// LayerNorm (LayerNorm.cpp)
//===----------------------------------------------------------------------===//

inline constexpr float kLayerNormEps = 1e-5f;

/// out[r] = (x[r] - mean) * rstd * weight + bias over rows of c channels;
/// mean[rows] and rstd[rows] are saved for backward (may be null in eval).
void layerNormForward(float *out, float *mean, float *rstd, const float *inp,
                      const float *weight, const float *bias, int64_t rows,
                      int64_t c, float eps = kLayerNormEps);

void layerNormBackward(float *dinp, float *dweight, float *dbias,
                       const float *dout, const float *inp,
                       const float *weight, const float *mean,
                       const float *rstd, int64_t rows, int64_t c);

//===----------------------------------------------------------------------===//
// GELU, x * sigmoid(1.702 x) (Gelu.cpp)
//===----------------------------------------------------------------------===//

inline constexpr float kGeluAlpha = 1.702f;

void geluForward(float *out, const float *inp, int64_t n);
void geluBackward(float *dinp, const float *inp, const float *dout, int64_t n);

//===----------------------------------------------------------------------===//
// Bias add (BiasAdd.cpp)
//===----------------------------------------------------------------------===//

/// x[r, j] += bias[j], in place over rows x c.
void biasAddForward(float *x, const float *bias, int64_t rows, int64_t c);
/// dbias[j] += sum_r dout[r, j]. (The input gradient is dout itself.)
void biasAddBackward(float *dbias, const float *dout, int64_t rows, int64_t c);

//===----------------------------------------------------------------------===//
// Embedding lookup (Embedding.cpp)
//===----------------------------------------------------------------------===//

/// out[i] = table[ids[i]] for n tokens, rows of c; ids in [0, vocab).
void embeddingForward(float *out, const int32_t *ids, const float *table,
                      int64_t n, int64_t c, int64_t vocab);
/// dtable[ids[i]] += dout[i] (scatter-add, deterministic order).
void embeddingBackward(float *dtable, const int32_t *ids, const float *dout,
                       int64_t n, int64_t c, int64_t vocab);

//===----------------------------------------------------------------------===//
// Fused softmax cross-entropy (CrossEntropy.cpp)
//===----------------------------------------------------------------------===//

/// For rows x vocab logits and targets in [0, vocab): losses[r] (nats, may
/// be null) and, if dlogits is non-null, dlogits = (softmax - onehot) *
/// dlossScale (dlossScale = 1/rows for the mean loss; dlogits is
/// overwritten, not accumulated, as it is the start of backward; it may be
/// logits itself: each row is read whole before it is written). Returns
/// the mean loss in nats (accumulated in double).
double softmaxCrossEntropy(float *losses, float *dlogits, const float *logits,
                           const int32_t *targets, int64_t rows, int64_t vocab,
                           float dlossScale);

//===----------------------------------------------------------------------===//
// Residual add (Residual.cpp)
//===----------------------------------------------------------------------===//

void residualForward(float *out, const float *a, const float *b, int64_t n);
/// da += dout, db += dout (either may be null).
void residualBackward(float *da, float *db, const float *dout, int64_t n);

//===----------------------------------------------------------------------===//
// Dropout (Dropout.cpp)
//===----------------------------------------------------------------------===//

/// Keep decision of element `index` under `seed`: a counter-based hash, so
/// the mask is a pure function of (seed, index) and recomputation in
/// backward, or a resumed run, reproduces it without storing it.
bool dropoutKeep(uint64_t seed, uint64_t index, float p);

/// out[i] = keep(seed, offset + i) ? inp[i] / (1 - p) : 0. p in [0, 1).
void dropoutForward(float *out, const float *inp, int64_t n, float p,
                    uint64_t seed, uint64_t offset = 0);
/// dinp += mask * dout / (1 - p), same (seed, offset) as forward.
void dropoutBackward(float *dinp, const float *dout, int64_t n, float p,
                     uint64_t seed, uint64_t offset = 0);

//===----------------------------------------------------------------------===//
// AdamW and gradient clipping (AdamW.cpp)
//===----------------------------------------------------------------------===//

struct AdamWConfig {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weightDecay = 0.01f;
};

/// One AdamW step over a flat array of n parameters. step is 1-based (the
/// bias corrections use it). Weight decay is decoupled: p -= lr * (mhat /
/// (sqrt(vhat) + eps) + wd * p).
void adamwStep(float *params, const float *grads, float *m, float *v,
               int64_t n, int64_t step, const AdamWConfig &config);

/// Global L2 norm of grads (double, fixed-order reduction). If it exceeds
/// maxNorm (> 0), grads are scaled by maxNorm / norm. Returns the norm
/// before clipping (for logging).
double clipGradNorm(float *grads, int64_t n, double maxNorm);

} // namespace sparsetx::cpu

#endif // SPARSETX_MODEL_CPU_OPS_H
