//===- Backend.h - the ops the Sparse Transformer runs on -------*- C++ -*-===//
//
// One model code path over a backend interface: the model (Transformer.h)
// never touches numbers itself, it allocates buffers and calls these ops. The
// CPU backend (fp32, threads, OpenBLAS) is the reference and the backend of a
// machine with no GPU; a CUDA backend implements the same interface with
// device pointers (the pointers below are then device addresses, which the
// model only offsets and passes back).
//
// Conventions: row-major matrices; `rows x c` activations; forward ops write
// their outputs; backward ops ACCUMULATE (+=) into gradient buffers, so that
// a tensor used twice sums its gradients (as model/cpu Ops.h).
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_MODEL_BACKEND_H
#define SPARSETX_MODEL_BACKEND_H

#include "sparsetx/Model/Pattern.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sparsetx::codegen {
struct GeneratedAttention;
} // namespace sparsetx::codegen

namespace sparsetx::model {

class Backend;

/// Memory owned by a backend (host or device), zero-filled at allocation.
/// Move-only; released by its backend.
class Buffer {
public:
  Buffer() = default;
  Buffer(Backend *owner, void *ptr, int64_t bytes)
      : owner(owner), ptr(ptr), size(bytes) {}
  Buffer(Buffer &&other) noexcept { *this = std::move(other); }
  Buffer &operator=(Buffer &&other) noexcept;
  Buffer(const Buffer &) = delete;
  Buffer &operator=(const Buffer &) = delete;
  ~Buffer() { reset(); }

  void reset();
  float *f32() const { return static_cast<float *>(ptr); }
  int32_t *i32() const { return static_cast<int32_t *>(ptr); }
  void *data() const { return ptr; }
  int64_t bytes() const { return size; }

private:
  Backend *owner = nullptr;
  void *ptr = nullptr;
  int64_t size = 0;
};

/// The shapes of one attention call: q and k are [batch, n, heads, qkDim],
/// v and o [batch, n, heads, vDim] (the projections' token-major layout), lse
/// [batch, heads, n] (natural log of each row's softmax denominator).
struct AttentionDims {
  int64_t batch = 1, heads = 1, seqLen = 0, qkDim = 0, vDim = 0;
};

/// Decoding: a linear layer's output written as 16-bit rows (the backend's
/// precision) straight into an attention op's buffers (AttentionOp::
/// decodeInputs, Backend::LinearOut::half) instead of fp32 rows: column j of
/// row s goes to element ((s * heads + j / width) * capacity + p) * stride +
/// j % width of `data`, p = *position (one int32 in the backend's memory;
/// nothing is written for p outside [0, capacity)) or 0 where position is
/// null. The columns width..stride-1 of each head's row are not written.
struct HalfRows {
  void *data = nullptr;
  int64_t heads = 1, width = 0, stride = 0, capacity = 1;
  const int32_t *position = nullptr;
};

/// A pattern's attention prepared for one backend and shape.
class AttentionOp {
public:
  virtual ~AttentionOp();
  /// Residual block `layer` picks its mask (layered patterns) and each head's
  /// (per-head patterns). Scale 1/sqrt(qkDim).
  virtual void forward(int64_t layer, int64_t batch, const float *q,
                       const float *k, const float *v, float *o,
                       float *lse) = 0;
  /// dQ, dK, dV are overwritten; P is recomputed from lse; o is the
  /// forward's output (for the rows' dO . o).
  virtual void backward(int64_t layer, int64_t batch, const float *q,
                        const float *k, const float *v, const float *o,
                        const float *lse, const float *dO, float *dQ,
                        float *dK, float *dV) = 0;
  /// Sampling. beginDecode sizes the op's own KV caches (residual blocks
  /// 0..layers-1, `batch` sequences of seqLen rows); decode allocates
  /// nothing.
  /// decode appends one new row per batch entry (k, v: [batch, heads, dim])
  /// to block `layer`'s cache at the position held in `position` (one int32
  /// in this backend's memory, so that captured work serves every position)
  /// and attends q ([batch, heads, qkDim]) to the cache's rows 0..position:
  /// o = [batch, heads, vDim]. Positions run 0, 1, ... per layer (0 starts a
  /// new sequence) and must be below seqLen (checked by the caller).
  virtual void beginDecode(int64_t batch, int64_t layers) = 0;
  virtual void decode(int64_t layer, int64_t batch, const int32_t *position,
                      const float *q, const float *k, const float *v,
                      float *o) = 0;
  /// Where the projections may write decode's inputs themselves (fusedLinear
  /// with LinearOut::half): q, k and v of block `layer` at the position held
  /// in `position`, as 16-bit rows in this op's own buffers (k and v in its
  /// caches), zeros already in place of any padding. False where the op
  /// takes fp32 rows only (the default). When the projections wrote them,
  /// decode(layer, batch, position, nullptr, nullptr, nullptr, o) attends.
  virtual bool decodeInputs(int64_t layer, int64_t batch,
                            const int32_t *position, HalfRows (&qkv)[3]) {
    return false;
  }
};

/// The arithmetic of a backend: fp32 throughout, or mixed precision as the
/// paper's section 5.6 (fp32 master weights, optimizer and reductions;
/// matrix products and attention with bf16 or fp16 inputs and fp32
/// accumulation).
enum class Precision { FP32, BF16, FP16 };
llvm::StringRef toString(Precision precision);
std::optional<Precision> parsePrecision(llvm::StringRef name);

class Backend {
public:
  virtual ~Backend();
  virtual llvm::StringRef name() const = 0;
  virtual Precision precision() const { return Precision::FP32; }
  /// One line for logs: the backend, its device and arithmetic.
  virtual std::string description() const { return name().str(); }
  /// The bytes of the buffers allocate() handed out that are alive now, and
  /// the most they were at once (since the backend was made or the last
  /// resetPeakBufferBytes()): what the model, the optimizer and the gradient
  /// all-reduce hold, counted as asked (allocate's `bytes`) on every backend.
  /// Not in it: an op's own scratch (the CUDA attention's 16-bit copies and
  /// workspaces, GEMM workspaces), which deviceBytesInUse() includes.
  int64_t liveBufferBytes() const { return bufferBytesLive; }
  int64_t peakBufferBytes() const { return bufferBytesPeak; }
  void resetPeakBufferBytes() { bufferBytesPeak = bufferBytesLive; }
  /// The device memory in use now by everything (0 where not known).
  virtual int64_t deviceBytesInUse() const { return 0; }
  /// The first error of an asynchronous backend (a failed launch or
  /// allocation); the ops after it did nothing. Checked by the trainer after
  /// every step, before anything is saved.
  virtual llvm::Error takeError() { return llvm::Error::success(); }

  // Memory.
  Buffer allocate(int64_t bytes) {
    void *ptr = allocateRaw(bytes);
    if (ptr) {
      bufferBytesLive += bytes;
      bufferBytesPeak = std::max(bufferBytesPeak, bufferBytesLive);
    }
    return Buffer(this, ptr, bytes);
  }
  Buffer allocateFloats(int64_t count) { return allocate(count * 4); }
  virtual void upload(void *dst, const void *src, int64_t bytes) = 0;
  virtual void download(void *dst, const void *src, int64_t bytes) = 0;
  virtual void copy(void *dst, const void *src, int64_t bytes) = 0;
  virtual void fill(float *x, float value, int64_t n) = 0;
  /// y += x.
  virtual void accumulate(float *y, const float *x, int64_t n) = 0;
  /// x *= s.
  virtual void scale(float *x, float s, int64_t n) = 0;
  /// Waits for queued work (a no-op on the CPU).
  virtual void synchronize() {}

  /// Captured work (CUDA graphs): the ops called between beginCapture() and
  /// endCapture() are recorded, not run, and replay() runs them again with
  /// the same arguments (so pointers: the memory's current contents). For
  /// work repeated with only memory contents changing (one sampling step;
  /// the decode position lives in memory). beginCapture() returns false
  /// where the backend cannot capture (the CPU; SPARSETX_CUDA_GRAPHS=0), and
  /// the caller runs the ops itself. Nothing may be allocated, freed,
  /// uploaded or downloaded while capturing: endCapture() then fails.
  class CapturedWork {
  public:
    virtual ~CapturedWork();
    virtual void replay() = 0;
  };
  virtual bool beginCapture() { return false; }
  virtual llvm::Expected<std::unique_ptr<CapturedWork>> endCapture();

  // Dense ops; shapes as in model/cpu Ops.h.
  /// c[m, n] (+)= a[m, k] b (b is [k, n], or [n, k] when transB), plus
  /// bias[n] on every row when bias is not null (fused where the backend
  /// can).
  virtual void matmul(float *c, const float *a, const float *b, int64_t m,
                      int64_t n, int64_t k, bool transB, bool accumulate,
                      const float *bias) = 0;
  /// Decoding's linear layers, fused where the backend can (a sampling step
  /// has a few rows and is bound by launches): for each output,
  /// c (+)= act(norm(a) b + bias) with a [m, k], b [k, n] (n per output),
  /// norm a layer norm with fusion.lnWeight/lnBias (none when null) and act
  /// GELU when fusion.gelu (then not accumulate). The fusion's scratch
  /// buffers (lnOut [m, k], lnMean, lnRstd [m], preGelu [m, n]) serve the
  /// unfused composition; their contents afterwards are unspecified.
  struct LinearOut {
    float *c = nullptr;
    const float *b = nullptr, *bias = nullptr;
    int64_t n = 0;
    /// packLinear's copy of b, or null (then b is read).
    const void *packed = nullptr;
    /// Where data is set: the output goes there as 16-bit rows (not
    /// accumulating), and c is scratch for it ([m, n] fp32, its contents
    /// afterwards unspecified). Only backends whose attention ops hand out
    /// HalfRows (AttentionOp::decodeInputs) take it.
    HalfRows half;
  };
  struct LinearFusion {
    const float *lnWeight = nullptr, *lnBias = nullptr;
    float *lnOut = nullptr, *lnMean = nullptr, *lnRstd = nullptr;
    bool gelu = false;
    float *preGelu = nullptr;
  };
  virtual void fusedLinear(llvm::ArrayRef<LinearOut> outs, const float *a,
                           int64_t m, int64_t k, bool accumulate,
                           const LinearFusion &fusion);
  /// One fusedLinear call of a chain.
  struct LinearStage {
    llvm::SmallVector<LinearOut, 3> outs;
    const float *a = nullptr;
    int64_t m = 0, k = 0;
    bool accumulate = false;
    LinearFusion fusion;
  };
  /// fusedLinear for each stage in order, where a stage may read what the
  /// ones before it wrote: decoding's linear layers between two attentions
  /// (W_o, W1, W2, then the next block's q/k/v). A backend may run the
  /// chain as one launch; the results are those of the calls in order.
  /// True where it did (the default makes the calls: false).
  virtual bool fusedLinearChain(llvm::ArrayRef<LinearStage> stages);
  /// Decoding reads every weight matrix once per step: a backend may keep a
  /// copy of b [k, n] in the layout and element type its fusedLinear reads
  /// fastest (the CUDA backend: [n, k], in the precision's 16-bit type, or
  /// fp32 in fp32, what the training GEMMs round their operands to).
  /// packedLinearBytes(k, n) is the copy's size, 0 where the backend keeps
  /// none (then LinearOut::packed stays null); packLinear(dst, b, k, n)
  /// writes it, 256-byte aligned dst. The caller remakes it when b changes.
  virtual int64_t packedLinearBytes(int64_t k, int64_t n) const { return 0; }
  /// Called only where packedLinearBytes(k, n) > 0.
  virtual void packLinear(void *, const float *, int64_t, int64_t) {}
  /// da (+)= dc b^T, db += a^T dc (or their transB forms); da may be null.
  virtual void matmulBackward(float *da, bool accumulateDa, float *db,
                              const float *dc, const float *a, const float *b,
                              int64_t m, int64_t n, int64_t k, bool transB) = 0;
  virtual void layerNormForward(float *out, float *mean, float *rstd,
                                const float *inp, const float *weight,
                                const float *bias, int64_t rows, int64_t c) = 0;
  /// dinp += ..., dweight += ..., dbias += ...
  virtual void layerNormBackward(float *dinp, float *dweight, float *dbias,
                                 const float *dout, const float *inp,
                                 const float *weight, const float *mean,
                                 const float *rstd, int64_t rows, int64_t c) = 0;
  virtual void geluForward(float *out, const float *inp, int64_t n) = 0;
  /// dinp += gelu'(inp) * dout.
  virtual void geluBackward(float *dinp, const float *inp, const float *dout,
                            int64_t n) = 0;
  /// x[r, :] += bias.
  virtual void biasAddForward(float *x, const float *bias, int64_t rows,
                              int64_t c) = 0;
  /// dbias += column sums of dout.
  virtual void biasAddBackward(float *dbias, const float *dout, int64_t rows,
                               int64_t c) = 0;
  /// out[r, :] (+)= table[ids[r], :] with ids < vocab (checked by the caller).
  virtual void embeddingForward(float *out, const int32_t *ids,
                                const float *table, int64_t rows, int64_t c,
                                int64_t vocab, bool accumulate) = 0;
  /// dtable[ids[r], :] += dout[r, :].
  virtual void embeddingBackward(float *dtable, const int32_t *ids,
                                 const float *dout, int64_t rows, int64_t c,
                                 int64_t vocab) = 0;
  /// Per-row losses (nats) into `losses` (may be null), the gradient of
  /// dlossScale * sum(losses) into dlogits (may be null; may be `logits`
  /// itself: the gradient then overwrites the logits); returns the mean.
  virtual double softmaxCrossEntropy(float *losses, float *dlogits,
                                     const float *logits,
                                     const int32_t *targets, int64_t rows,
                                     int64_t vocab, float dlossScale) = 0;
  /// out = inp with elements dropped with probability p (kept ones scaled by
  /// 1/(1-p)); the decision is a hash of (seed, index).
  virtual void dropoutForward(float *out, const float *inp, int64_t n, float p,
                              uint64_t seed) = 0;
  /// dinp += dout where kept, scaled.
  virtual void dropoutBackward(float *dinp, const float *dout, int64_t n,
                               float p, uint64_t seed) = 0;
  /// out = x + dropout(branch) (as dropoutForward with `p` and `seed`; p may
  /// be 0): the end of a residual block in one pass.
  virtual void residualDropout(float *out, const float *x, const float *branch,
                               int64_t n, float p, uint64_t seed) = 0;
  /// One AdamW step over n parameters (step is 1-based).
  virtual void adamw(float *params, const float *grads, float *m, float *v,
                     int64_t n, int64_t step, float lr, float beta1,
                     float beta2, float eps, float weightDecay) = 0;
  /// The L2 norm of grads; scales them to maxNorm when it is larger (> 0).
  virtual double clipGradNorm(float *grads, int64_t n, double maxNorm) = 0;

  /// The gradients' all-reduce in 16 bits (GradientReducer.h): out[i] =
  /// x[i] * s rounded to `type` (bf16 or fp16: to nearest even, inf beyond
  /// the format's range, NaN stays NaN), and back, x[i] = float(in[i]) * s.
  /// The default goes through the host (download, convert, upload).
  virtual void convertToHalf(uint16_t *out, const float *x, int64_t n, float s,
                             Precision type);
  virtual void convertFromHalf(float *x, const uint16_t *in, int64_t n,
                               float s, Precision type);
  /// The CUstream this backend enqueues its work on, so that others' work
  /// (the NCCL all-reduce on a stream of its own) can be ordered after it
  /// through an event; null where ops are done when they return (the CPU).
  virtual void *nativeStream() const { return nullptr; }

  /// The pattern's attention for this backend.
  virtual llvm::Expected<std::unique_ptr<AttentionOp>>
  prepareAttention(const AttentionPattern &pattern,
                   const AttentionDims &dims) = 0;

  /// Decoding's whole step as one piece of work, where the backend can fuse
  /// it (the CUDA backend: one persistent kernel per step, see
  /// docs/model.md). The model describes itself in the backend's memory:
  /// every pointer below is a backend buffer. The step computes what
  /// Transformer::decodeStep's ops compute: x = tokens' embeddings +
  /// posTable[position]; per layer x += Wo attn(LN1(x) Wq/Wk/Wv) (appending
  /// k, v to `attention`'s caches at the position) and x += W2 gelu(LN2(x)
  /// W1); logits = LNf(x) Wout + bout. ids holds the batch's tokens, then
  /// its positions (equal).
  struct DecodeLayer {
    const float *ln1W, *ln1B, *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo, *ln2W,
        *ln2B, *w1, *b1, *w2, *b2;
  };
  struct DecodeModel {
    int64_t batch = 0, dModel = 0, qkDim = 0, ffDim = 0, heads = 0,
            seqLen = 0, vocab = 0;
    std::vector<DecodeLayer> layers;
    const float *tokTable = nullptr, *posTable = nullptr;
    const float *lnfW = nullptr, *lnfB = nullptr, *wout = nullptr,
                *bout = nullptr;
    const int32_t *ids = nullptr;
    float *x = nullptr, *logits = nullptr;
  };
  class DecodeStep {
  public:
    virtual ~DecodeStep();
    /// Enqueues one step.
    virtual void run() = 0;
    /// What runs it, for logs ("one persistent kernel per step: 264 CTAs
    /// ...").
    virtual std::string description() const = 0;
  };
  /// Null (no error) where the backend has no fused step for this model or
  /// attention: the caller runs the ops. attention.beginDecode must have
  /// been called for the model's batch and layers.
  virtual llvm::Expected<std::unique_ptr<DecodeStep>>
  createDecodeStep(AttentionOp &attention, const DecodeModel &model);

  /// Sampling's picks made by the backend, so that no token crosses to the
  /// host per step (Transformer::decodeAndPick). For each sequence s of a
  /// decoding batch S, after a step at position t = ids[S + s]: the next
  /// token is prompt[t] while t < promptLength, else the most likely byte
  /// of logits [S, 256] (temperature <= 0), else a draw among the topK most
  /// likely (0: all) with probabilities softmax(logits / temperature) and
  /// the uniform number from hash (seed, firstSample + s, t); exactly what
  /// the host's picks compute (Trainer.cpp). It becomes ids[s], ids[S + s]
  /// becomes t + 1, and history[s * historyStride + t] records it (for
  /// t < length). The options live in backend memory (PickOptions), so that
  /// captured work serves every sampling call.
  struct PickOptions {
    uint64_t seed = 0;
    int64_t firstSample = 0, topK = 0, promptLength = 0, length = 0;
    double temperature = 1.0;
  };
  struct PickTokens {
    const float *logits = nullptr;
    int32_t *ids = nullptr, *history = nullptr;
    const int32_t *prompt = nullptr;
    const PickOptions *options = nullptr;
    int64_t batch = 0, historyStride = 0;
  };
  virtual bool picksTokens() const { return false; }
  /// Called only where picksTokens().
  virtual void pickTokens(const PickTokens &) {}

protected:
  friend class Buffer;
  virtual void *allocateRaw(int64_t bytes) = 0;
  virtual void release(void *ptr, int64_t bytes) = 0;

private:
  /// Buffer::reset() takes its bytes off (Buffers with memory only).
  int64_t bufferBytesLive = 0, bufferBytesPeak = 0;
};

/// fp32 on the host: threads (llvm::parallelFor), OpenBLAS GEMMs, the
/// project's CPU sparse attention over the pattern's per-row key lists.
std::unique_ptr<Backend> createCpuBackend();

struct CudaBackendOptions {
  int device = 0;
  Precision precision = Precision::BF16;
  /// Bit-reproducible attention backward (no atomics; slower).
  bool deterministic = false;
  /// The bf16/fp16 attention runs over groups of (batch entry, head) pairs
  /// whose 16-bit [n, D] copies of q, k, v, o, dO, dQ, dK and dV take at
  /// most this many bytes each (one group of all of them where they fit;
  /// at least one pair, or one batch entry of a per-head pattern):
  /// its scratch, those copies and the generated kernels' fp32 workspaces,
  /// then scales with one group instead of batch x heads (long sequences:
  /// docs/model.md, "Memory"). The results are the same per group.
  int64_t attentionGroupBytes = int64_t(1) << 30;
};

/// The environment variables the CUDA backend reads, checked (no GPU
/// needed): SPARSETX_PROFILE=0|1 (GPU time per op at exit),
/// SPARSETX_CUDA_GRAPHS=0|1 (sampling replays a captured step; default 1),
/// SPARSETX_FUSED_DECODE=0|1 (1: sampling runs each step as one persistent
/// kernel where the model allows; default 0, the captured ops, which are
/// faster today: docs/model.md),
/// SPARSETX_OVERLAP_LAUNCHES=0|1 (1: a sampling step's kernels start before
/// their predecessors end, sm_90 and later; default 1: docs/model.md),
/// SPARSETX_LINEAR_CHAIN=0|1 (1: a sampling step's linear layers between
/// two attentions run as one launch, Backend::fusedLinearChain; default 0,
/// the separate launches, which are faster today: docs/model.md),
/// SPARSETX_WGMMA_FORWARD=0|1 (1: on sm_90a the attention forward of head
/// dims 64 and 128 runs on the wgmma kernel, CodegenOptions::forwardWgmma;
/// default 1: docs/kernels.md),
/// SPARSETX_WGMMA_BACKWARD=0|1 (1: likewise the dK/dV and dQ kernels of
/// head dim 64 with long lists, CodegenOptions::backwardWgmma; default 1),
/// SPARSETX_BF16_GEMM=convert|fast|tf32 (how bf16 GEMMs take fp32 operands;
/// default fast). A bad value is an error naming the variable and value.
struct CudaEnvironment {
  bool profile = false, graphs = true, fusedDecode = false,
       overlapLaunches = true, linearChain = false, wgmmaForward = true,
       wgmmaBackward = true;
  std::string bf16Gemm = "fast";
};
llvm::Expected<CudaEnvironment> readCudaEnvironment();

/// The GPU: cuBLASLt GEMMs, NVRTC-compiled elementwise kernels, the
/// generated attention kernels (bf16/fp16) or an exact fp32 attention, a
/// caching allocator. Fails when there is no usable GPU, with the reason.
llvm::Expected<std::unique_ptr<Backend>>
createCudaBackend(const CudaBackendOptions &options);

/// The CUDA backend's own kernels (kernels/model_ops.cuh) through NVRTC for
/// `arch` ("sm_80", "sm_90a", ...): PTX, or NVRTC's log. Needs no GPU.
llvm::Expected<std::string> compileCudaBackendKernels(llvm::StringRef arch);

/// The fused decoding step (kernels/decode_step.cuh) with a pattern's
/// generated attention (decode kernels on) through NVRTC for the
/// generation's arch: PTX, or NVRTC's log. Needs no GPU.
llvm::Expected<std::string>
compileDecodeStepKernel(const codegen::GeneratedAttention &generated);

} // namespace sparsetx::model

#endif // SPARSETX_MODEL_BACKEND_H
