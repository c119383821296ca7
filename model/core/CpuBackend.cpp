//===- CpuBackend.cpp - the model's ops on the host, fp32 -----------------===//
//
// Thin: the dense ops are model/cpu (Ops.h, finite-difference tested), the
// attention is the project's CPU sparse attention (SparseAttention.h) over the
// pattern's per-row key lists.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Backend.h"
#include "sparsetx/Model/Cpu/Ops.h"

#include "llvm/Support/ErrorHandling.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Parallel.h"
#include "sparsetx/Support/Half.h"
#include "sparsetx/Support/Parallel.h"

#include <cassert>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

using namespace sparsetx;
using namespace sparsetx::model;

Buffer &Buffer::operator=(Buffer &&other) noexcept {
  if (this != &other) {
    reset();
    owner = other.owner;
    ptr = other.ptr;
    size = other.size;
    other.owner = nullptr;
    other.ptr = nullptr;
    other.size = 0;
  }
  return *this;
}

void Buffer::reset() {
  if (owner && ptr) {
    owner->bufferBytesLive -= size;
    owner->release(ptr, size);
  }
  owner = nullptr;
  ptr = nullptr;
  size = 0;
}

AttentionOp::~AttentionOp() = default;
Backend::~Backend() = default;
Backend::CapturedWork::~CapturedWork() = default;
Backend::DecodeStep::~DecodeStep() = default;

llvm::Expected<std::unique_ptr<Backend::DecodeStep>>
Backend::createDecodeStep(AttentionOp &, const DecodeModel &) {
  return nullptr;
}

void Backend::fusedLinear(llvm::ArrayRef<LinearOut> outs, const float *a,
                          int64_t m, int64_t k, bool accumulate,
                          const LinearFusion &fusion) {
  for ([[maybe_unused]] const LinearOut &out : outs)
    assert(!out.half.data && "the backend's attention hands out no HalfRows");
  const float *in = a;
  if (fusion.lnWeight) {
    layerNormForward(fusion.lnOut, fusion.lnMean, fusion.lnRstd, a,
                     fusion.lnWeight, fusion.lnBias, m, k);
    in = fusion.lnOut;
  }
  for (const LinearOut &out : outs) {
    if (fusion.gelu) {
      matmul(fusion.preGelu, in, out.b, m, out.n, k, false, false, out.bias);
      geluForward(out.c, fusion.preGelu, m * out.n);
    } else {
      matmul(out.c, in, out.b, m, out.n, k, false, accumulate, out.bias);
    }
  }
}

bool Backend::fusedLinearChain(llvm::ArrayRef<LinearStage> stages) {
  for (const LinearStage &s : stages)
    fusedLinear(s.outs, s.a, s.m, s.k, s.accumulate, s.fusion);
  return false;
}

namespace {
/// The conversions of Backend::convertToHalf/convertFromHalf on host memory.
void toHalfOnHost(uint16_t *out, const float *x, int64_t n, float s,
                  Precision type) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = type == Precision::BF16 ? floatToBF16(x[i] * s)
                                     : floatToFP16(x[i] * s);
}
void fromHalfOnHost(float *x, const uint16_t *in, int64_t n, float s,
                    Precision type) {
  for (int64_t i = 0; i < n; ++i)
    x[i] = (type == Precision::BF16 ? bf16ToFloat(in[i]) : fp16ToFloat(in[i])) *
           s;
}
} // namespace

void Backend::convertToHalf(uint16_t *out, const float *x, int64_t n, float s,
                            Precision type) {
  if (type == Precision::FP32)
    llvm::report_fatal_error("convertToHalf: fp32 is not a 16-bit format");
  std::vector<float> host(n);
  std::vector<uint16_t> half(n);
  download(host.data(), x, n * 4);
  toHalfOnHost(half.data(), host.data(), n, s, type);
  upload(out, half.data(), n * 2);
}

void Backend::convertFromHalf(float *x, const uint16_t *in, int64_t n, float s,
                              Precision type) {
  if (type == Precision::FP32)
    llvm::report_fatal_error("convertFromHalf: fp32 is not a 16-bit format");
  std::vector<uint16_t> half(n);
  std::vector<float> host(n);
  download(half.data(), in, n * 2);
  fromHalfOnHost(host.data(), half.data(), n, s, type);
  upload(x, host.data(), n * 4);
}

llvm::Expected<std::unique_ptr<Backend::CapturedWork>> Backend::endCapture() {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 name() + " cannot capture work");
}

llvm::StringRef sparsetx::model::toString(Precision precision) {
  switch (precision) {
  case Precision::FP32:
    return "fp32";
  case Precision::BF16:
    return "bf16";
  case Precision::FP16:
    return "fp16";
  }
  return "fp32";
}

std::optional<Precision> sparsetx::model::parsePrecision(llvm::StringRef name) {
  if (name == "fp32")
    return Precision::FP32;
  if (name == "bf16")
    return Precision::BF16;
  if (name == "fp16")
    return Precision::FP16;
  return std::nullopt;
}

namespace {

class CpuAttention final : public AttentionOp {
public:
  CpuAttention(const AttentionPattern &pattern, const AttentionDims &dims)
      : pattern(pattern), dims(dims) {}

  SparseAttentionShape shape(int64_t batch) const {
    SparseAttentionShape s;
    s.batch = batch;
    s.heads = dims.heads;
    s.seqLen = dims.seqLen;
    s.qkDim = dims.qkDim;
    s.vDim = dims.vDim;
    s.scale = 1.0 / std::sqrt(static_cast<double>(dims.qkDim));
    return s;
  }
  template <typename T> HeadView<T> qk(T *x) const {
    return HeadView<T>::tokenMajor(x, dims.seqLen, dims.heads, dims.qkDim);
  }
  template <typename T> HeadView<T> vo(T *x) const {
    return HeadView<T>::tokenMajor(x, dims.seqLen, dims.heads, dims.vDim);
  }

  void forward(int64_t layer, int64_t batch, const float *q, const float *k,
               const float *v, float *o, float *lse) override {
    sparseAttentionForward<float>(shape(batch), pattern.layerMasks(layer),
                                  qk(q), qk(k), vo(v), vo(o), lse);
  }

  void backward(int64_t layer, int64_t batch, const float *q, const float *k,
                const float *v, const float * /*o*/, const float *lse,
                const float *dO, float *dQ, float *dK, float *dV) override {
    sparseAttentionBackward<float>(shape(batch), pattern.layerMasks(layer),
                                   qk(q), qk(k), vo(v), lse, vo(dO), qk(dQ),
                                   qk(dK), vo(dV));
  }

  void beginDecode(int64_t batch, int64_t layers) override {
    kCache.assign(layers, std::vector<float>(batch * dims.seqLen * dims.heads *
                                             dims.qkDim));
    vCache.assign(layers, std::vector<float>(batch * dims.seqLen * dims.heads *
                                             dims.vDim));
  }

  void decode(int64_t layer, int64_t batch, const int32_t *positionAt,
              const float *q, const float *k, const float *v,
              float *o) override {
    const int64_t position = *positionAt, n = dims.seqLen;
    const int64_t kRow = dims.heads * dims.qkDim, vRow = dims.heads * dims.vDim;
    float *kc = kCache[layer].data(), *vc = vCache[layer].data();
    for (int64_t b = 0; b < batch; ++b) {
      std::copy_n(k + b * kRow, kRow, kc + (b * n + position) * kRow);
      std::copy_n(v + b * vRow, vRow, vc + (b * n + position) * vRow);
    }
    // q and o hold one row per (batch, head): [batch, 1, heads, dim].
    auto row = [&](auto *x, int64_t dim) {
      using T = std::remove_pointer_t<decltype(x)>;
      return HeadView<T>{x, dims.heads * dim, dim, 0};
    };
    sparseAttentionDecode<float>(shape(batch), pattern.layerMasks(layer),
                                 position, row(q, dims.qkDim),
                                 qk(static_cast<const float *>(kc)),
                                 vo(static_cast<const float *>(vc)),
                                 row(o, dims.vDim));
  }

private:
  const AttentionPattern &pattern;
  AttentionDims dims;
  std::vector<std::vector<float>> kCache, vCache;
};

class CpuBackend final : public Backend {
public:
  llvm::StringRef name() const override { return "cpu"; }

  void upload(void *dst, const void *src, int64_t bytes) override {
    std::memcpy(dst, src, bytes);
  }
  void download(void *dst, const void *src, int64_t bytes) override {
    std::memcpy(dst, src, bytes);
  }
  void copy(void *dst, const void *src, int64_t bytes) override {
    std::memmove(dst, src, bytes);
  }
  void fill(float *x, float value, int64_t n) override {
    std::fill(x, x + n, value);
  }
  void accumulate(float *y, const float *x, int64_t n) override {
    cpu::residualForward(y, y, x, n);
  }

  void matmul(float *c, const float *a, const float *b, int64_t m, int64_t n,
              int64_t k, bool transB, bool accumulate,
              const float *bias) override {
    cpu::matmulForward(c, a, b, m, n, k, transB, accumulate);
    if (bias)
      cpu::biasAddForward(c, bias, m, n);
  }
  void matmulBackward(float *da, bool accumulateDa, float *db, const float *dc,
                      const float *a, const float *b, int64_t m, int64_t n,
                      int64_t k, bool transB) override {
    // da = dc b^T ([m, n] x [n, k]) or dc b when b is [n, k].
    if (da)
      cpu::sgemm(false, !transB, m, k, n, 1.0f, dc, n, b, transB ? k : n,
                 accumulateDa ? 1.0f : 0.0f, da, k);
    // db += a^T dc ([k, m] x [m, n]), or dc^T a for the [n, k] form.
    if (db) {
      if (transB)
        cpu::sgemm(true, false, n, k, m, 1.0f, dc, n, a, k, 1.0f, db, k);
      else
        cpu::sgemm(true, false, k, n, m, 1.0f, a, k, dc, n, 1.0f, db, n);
    }
  }
  void layerNormForward(float *out, float *mean, float *rstd, const float *inp,
                        const float *weight, const float *bias, int64_t rows,
                        int64_t c) override {
    cpu::layerNormForward(out, mean, rstd, inp, weight, bias, rows, c);
  }
  void layerNormBackward(float *dinp, float *dweight, float *dbias,
                         const float *dout, const float *inp,
                         const float *weight, const float *mean,
                         const float *rstd, int64_t rows, int64_t c) override {
    cpu::layerNormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd,
                           rows, c);
  }
  std::string description() const override {
    return llvm::formatv("cpu ({0} threads, GEMM {1}, fp32)",
                         llvm::parallel::strategy.compute_thread_count(),
                         cpu::haveBlas() ? "OpenBLAS" : "naive loops");
  }
  void scale(float *x, float s, int64_t n) override {
    sparsetx::parallelForElements(0, static_cast<size_t>(n),
                                  [&](size_t i) { x[i] *= s; });
  }
  void geluForward(float *out, const float *inp, int64_t n) override {
    cpu::geluForward(out, inp, n);
  }
  void geluBackward(float *dinp, const float *inp, const float *dout,
                    int64_t n) override {
    cpu::geluBackward(dinp, inp, dout, n);
  }
  void biasAddForward(float *x, const float *bias, int64_t rows,
                      int64_t c) override {
    cpu::biasAddForward(x, bias, rows, c);
  }
  void biasAddBackward(float *dbias, const float *dout, int64_t rows,
                       int64_t c) override {
    cpu::biasAddBackward(dbias, dout, rows, c);
  }
  void embeddingForward(float *out, const int32_t *ids, const float *table,
                        int64_t rows, int64_t c, int64_t vocab,
                        bool accumulate) override {
    if (!accumulate) {
      cpu::embeddingForward(out, ids, table, rows, c, vocab);
      return;
    }
    sparsetx::parallelForRows(0, static_cast<size_t>(rows), [&](size_t r) {
      const float *src = table + static_cast<int64_t>(ids[r]) * c;
      float *dst = out + r * c;
      for (int64_t t = 0; t < c; ++t)
        dst[t] += src[t];
    });
  }
  void embeddingBackward(float *dtable, const int32_t *ids, const float *dout,
                         int64_t rows, int64_t c, int64_t vocab) override {
    cpu::embeddingBackward(dtable, ids, dout, rows, c, vocab);
  }
  double softmaxCrossEntropy(float *losses, float *dlogits, const float *logits,
                             const int32_t *targets, int64_t rows,
                             int64_t vocab, float dlossScale) override {
    return cpu::softmaxCrossEntropy(losses, dlogits, logits, targets, rows,
                                    vocab, dlossScale);
  }
  void dropoutForward(float *out, const float *inp, int64_t n, float p,
                      uint64_t seed) override {
    cpu::dropoutForward(out, inp, n, p, seed);
  }
  void dropoutBackward(float *dinp, const float *dout, int64_t n, float p,
                       uint64_t seed) override {
    cpu::dropoutBackward(dinp, dout, n, p, seed);
  }
  void residualDropout(float *out, const float *x, const float *branch,
                       int64_t n, float p, uint64_t seed) override {
    const float scale = 1.0f / (1.0f - p);
    sparsetx::parallelForElements(0, static_cast<size_t>(n), [&](size_t i) {
      float b = branch[i];
      if (p > 0)
        b = cpu::dropoutKeep(seed, i, p) ? b * scale : 0.0f;
      out[i] = x[i] + b;
    });
  }
  void adamw(float *params, const float *grads, float *m, float *v, int64_t n,
             int64_t step, float lr, float beta1, float beta2, float eps,
             float weightDecay) override {
    cpu::AdamWConfig config;
    config.lr = lr;
    config.beta1 = beta1;
    config.beta2 = beta2;
    config.eps = eps;
    config.weightDecay = weightDecay;
    cpu::adamwStep(params, grads, m, v, n, step, config);
  }
  void convertToHalf(uint16_t *out, const float *x, int64_t n, float s,
                     Precision type) override {
    if (type == Precision::FP32)
      llvm::report_fatal_error("convertToHalf: fp32 is not a 16-bit format");
    toHalfOnHost(out, x, n, s, type);
  }
  void convertFromHalf(float *x, const uint16_t *in, int64_t n, float s,
                       Precision type) override {
    if (type == Precision::FP32)
      llvm::report_fatal_error("convertFromHalf: fp32 is not a 16-bit format");
    fromHalfOnHost(x, in, n, s, type);
  }
  double clipGradNorm(float *grads, int64_t n, double maxNorm) override {
    return cpu::clipGradNorm(grads, n, maxNorm);
  }

  llvm::Expected<std::unique_ptr<AttentionOp>>
  prepareAttention(const AttentionPattern &pattern,
                   const AttentionDims &dims) override {
    if (dims.seqLen != pattern.getSeqLen() || dims.heads != pattern.getNumHeads())
      return llvm::createStringError(
          llvm::inconvertibleErrorCode(),
          "attention of n = %lld, %lld heads from a pattern compiled for "
          "n = %lld, %lld heads",
          (long long)dims.seqLen, (long long)dims.heads,
          (long long)pattern.getSeqLen(), (long long)pattern.getNumHeads());
    return std::make_unique<CpuAttention>(pattern, dims);
  }

protected:
  void *allocateRaw(int64_t bytes) override {
    if (bytes <= 0)
      return nullptr;
    // 64-byte aligned for vector loads; zero-filled.
    size_t rounded = (static_cast<size_t>(bytes) + 63) / 64 * 64;
    void *p = std::aligned_alloc(64, rounded);
    if (!p)
      llvm::report_bad_alloc_error("sparsetx: out of host memory");
    std::memset(p, 0, rounded);
    return p;
  }
  void release(void *ptr, int64_t) override { std::free(ptr); }
};

} // namespace

std::unique_ptr<Backend> sparsetx::model::createCpuBackend() {
  return std::make_unique<CpuBackend>();
}
