//===- CudaBackend.cpp - the model's ops on the GPU -----------------------===//
//
// The Backend interface on one GPU, all work enqueued on the backend's
// stream (a blocking one: the synchronous host copies, on the legacy default
// stream, order themselves after it; and it can be captured, which the
// legacy stream cannot: sampling replays one captured step per token):
//  - GEMMs through cuBLASLt (runtime/Blas.h): exact fp32, or in the
//    mixed-precision modes the operands rounded to bf16/fp16 (so an fp16
//    overflow shows as inf, which loss scaling detects) and fp32
//    accumulation;
//  - the elementwise ops, reductions and the exact fp32 attention of
//    kernels/model_ops.cuh, compiled by NVRTC for the device (cached on disk);
//  - in bf16/fp16 the pattern's generated tensor-core attention kernels
//    (AttentionPlan), fed by layout conversions;
//  - a caching allocator (buffers of the same size are reused, the driver is
//    asked again only for new sizes, and the cache is emptied and the
//    allocation retried before running out is reported).
// An op that fails records the first error and every op after it does
// nothing; the model and the trainer check takeError() at every step.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Codegen/AttentionPlan.h"
#include "sparsetx/Codegen/CudaEmitter.h"
#include "sparsetx/Model/Backend.h"
#include "sparsetx/Model/Config.h"
#include "sparsetx/Model/Cpu/Ops.h"
#include "sparsetx/Runtime/Blas.h"
#include "sparsetx/Runtime/Cuda.h"
#include "sparsetx/Runtime/Nvrtc.h"
#include "sparsetx/Support/Hash.h"

#include "mlir/IR/Diagnostics.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

using namespace sparsetx;
using namespace sparsetx::model;

namespace {

const std::vector<std::pair<std::string, std::string>> &modelKernelHeaders() {
  static const std::vector<std::pair<std::string, std::string>> headers = {
#include "ModelKernels.inc"
  };
  return headers;
}

llvm::Error backendError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 message.str());
}

cuda::DevicePtr dev(const void *p) { return reinterpret_cast<cuda::DevicePtr>(p); }

/// Mirrors of the kernels' structs (same field order and sizes).
struct SpMask {
  uint64_t rowStart, rowKeys, colStart, colQueries;
};
struct SpAttnShape {
  int64_t batch, heads, n, qkDim, vDim;
  float scale;
  int32_t maskPerHead;
};
static_assert(sizeof(SpAttnShape) == 48, "SpAttnShape must match the kernel");
constexpr int64_t kLinearMaxRows = 8, kLinearMaxOuts = 3, kLinearMaxNorm = 4096;
struct SpLinearOut {
  float *c;
  const float *b, *bias;
  int64_t n, firstTile;
};
struct SpLinear {
  SpLinearOut out[kLinearMaxOuts];
  int32_t outs;
  const float *a, *lnWeight, *lnBias;
  float eps;
  int64_t m, k;
  int32_t accumulate, gelu;
  int64_t rowsPerSplit;
  float *partials;
  unsigned *counters;
};
static_assert(sizeof(SpLinear) == 208, "SpLinear must match the kernel");
constexpr int64_t kGemvWarps = 4, kGemvMaxInput = 16384;
struct SpGemvOut {
  float *c;
  const void *w;
  const float *bias;
  int64_t n, firstCol;
  void *half;
  int64_t heads, width, stride, capacity;
  const int32_t *position;
};
struct SpGemv {
  SpGemvOut out[kLinearMaxOuts];
  int32_t outs;
  const float *a, *lnWeight, *lnBias;
  float eps;
  int64_t m, k;
  int32_t accumulate, gelu, bf16;
};
static_assert(sizeof(SpGemv) == 336, "SpGemv must match the kernel");
constexpr int64_t kChainMaxStages = 4;
struct SpGemvChain {
  SpGemv stage[kChainMaxStages];
  int32_t stages;
  unsigned *barrier;
};
static_assert(sizeof(SpGemvChain) == 1360, "SpGemvChain must match the kernel");

constexpr unsigned kThreads = 256;

class CudaBackend;

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

/// fp32: the exact attention over the pattern's per-row key lists.
class CudaExactAttention final : public AttentionOp {
public:
  CudaExactAttention(CudaBackend &backend, const AttentionPattern &pattern,
                     const AttentionDims &dims)
      : backend(backend), pattern(pattern), dims(dims) {}
  llvm::Error upload();

  void forward(int64_t layer, int64_t batch, const float *q, const float *k,
               const float *v, float *o, float *lse) override;
  void backward(int64_t layer, int64_t batch, const float *q, const float *k,
                const float *v, const float *o, const float *lse,
                const float *dO, float *dQ, float *dK, float *dV) override;
  void beginDecode(int64_t batch, int64_t layers) override;
  void decode(int64_t layer, int64_t batch, const int32_t *position,
              const float *q, const float *k, const float *v,
              float *o) override;

private:
  SpAttnShape shape(int64_t batch) const {
    return {batch,      dims.heads, dims.seqLen, dims.qkDim, dims.vDim,
            static_cast<float>(1.0 / std::sqrt(double(dims.qkDim))),
            pattern.isPerHead() ? 1 : 0};
  }
  cuda::DevicePtr masksOf(int64_t layer) const {
    return maskTable.get() + static_cast<uint64_t>(layer % numLayerMasks) *
                                 maskStride * sizeof(SpMask);
  }

  CudaBackend &backend;
  const AttentionPattern &pattern;
  AttentionDims dims;
  int64_t numLayerMasks = 1, maskStride = 1;
  cuda::DeviceBuffer lists, maskTable, delta;
  /// Decoding: per layer [batch, n, heads, dim] fp32 caches.
  std::vector<cuda::DeviceBuffer> kCaches, vCaches;
};

/// bf16/fp16: the pattern's generated kernels on [batch * heads, n, D]
/// 16-bit copies of the token-major fp32 projections.
class CudaTensorAttention final : public AttentionOp {
public:
  CudaTensorAttention(CudaBackend &backend, const AttentionDims &dims,
                      AttentionPlan plan, int64_t headDim, int64_t groupBytes);
  ~CudaTensorAttention() override;

  void forward(int64_t layer, int64_t batch, const float *q, const float *k,
               const float *v, float *o, float *lse) override;
  void backward(int64_t layer, int64_t batch, const float *q, const float *k,
                const float *v, const float *o, const float *lse,
                const float *dO, float *dQ, float *dK, float *dV) override;
  void beginDecode(int64_t batch, int64_t layers) override;
  void decode(int64_t layer, int64_t batch, const int32_t *position,
              const float *q, const float *k, const float *v,
              float *o) override;
  bool decodeInputs(int64_t layer, int64_t batch, const int32_t *position,
                    HalfRows (&qkv)[3]) override;
  AttentionPlan &getPlan() { return plan; }
  /// The fused decoding step over this op's caches (beginDecode first).
  llvm::Expected<std::unique_ptr<Backend::DecodeStep>>
  createDecodeStep(const Backend::DecodeModel &model);

private:
  /// The 16-bit copies of `batchHeads` (batch entry, head) pairs.
  bool reserve(int64_t batchHeads, bool withBackward);
  double scale() const { return 1.0 / std::sqrt(double(dims.qkDim)); }
  /// How many (batch entry, head) pairs one call of the plan takes for a
  /// batch: all of them where their 16-bit copies fit in groupBytes each,
  /// else whole batch entries, or (merged and layered patterns only: a
  /// per-head pattern's plan takes whole entries) a divisor of the heads,
  /// so that a group is heads [h0, h0 + G) of one entry or entries
  /// [b0, b0 + G / heads), and its rows of the token-major projections
  /// start at one address.
  int64_t groupSize(int64_t batch) const;
  /// Runs `body(bh0, count, entries, heads, offset)` for each group: pairs
  /// bh0 .. bh0 + count - 1 (of `batch` x heads), which are `heads` heads
  /// of `entries` batch entries, starting `offset` head rows into the
  /// token-major [batch, n, heads] rows (in units of one head's columns).
  template <typename Body> void forEachGroup(int64_t batch, Body body) const;

  CudaBackend &backend;
  AttentionDims dims;
  AttentionPlan plan;
  int64_t D;
  /// CudaBackendOptions::attentionGroupBytes; whether a mask is per head.
  int64_t groupBytes;
  bool perHeadMasks = false;
  int64_t reservedBatchHeads = 0;
  bool reservedBackward = false;
  /// 16-bit [group, n, D] (group: groupSize()): q, k, v, o, then dO, dQ,
  /// dK, dV.
  std::vector<cuda::DeviceBuffer> halves;
  // Decoding: per layer 16-bit caches [batch * heads, n, D]; q and o rows
  // (zero padded to D from beginDecode on: only columns below qkDim / vDim
  // are ever written).
  std::vector<cuda::DeviceBuffer> kCache16, vCache16;
  cuda::DeviceBuffer decodeRows, decodeLse;
  int64_t decodeBatch = 0;
};

//===----------------------------------------------------------------------===//
// The backend
//===----------------------------------------------------------------------===//

/// With SPARSETX_PROFILE=1: GPU time per kind of op, from CUDA events around
/// each op (the outermost only), printed to stderr when the backend goes.
class OpProfiler {
public:
  bool enabled() const { return on; }
  void enable(cuda::Stream s) {
    on = true;
    stream = s;
  }
  /// Off while work is captured (events would become graph nodes).
  void pause(bool paused) { this->paused = paused; }
  ~OpProfiler() {
    flush();
    if (on && !totals.empty()) {
      std::vector<std::pair<std::string, std::pair<double, int64_t>>> rows(
          totals.begin(), totals.end());
      std::sort(rows.begin(), rows.end(), [](const auto &a, const auto &b) {
        return a.second.first > b.second.first;
      });
      double all = 0;
      for (auto &r : rows)
        all += r.second.first;
      llvm::errs() << llvm::formatv("{0,-24} {1,12} {2,8} {3,10}\n", "op",
                                    "GPU ms", "%", "calls");
      for (auto &r : rows)
        llvm::errs() << llvm::formatv("{0,-24} {1,12:f2} {2,8:f1} {3,10}\n",
                                      r.first, r.second.first,
                                      100 * r.second.first / all,
                                      r.second.second);
    }
    for (cuda::Event e : pool)
      cuda::destroyEvent(e);
  }
  void begin(const char *label) {
    if (!on || paused || depth++ > 0)
      return;
    current = label;
    start = take();
    if (start)
      llvm::consumeError(cuda::recordEvent(start, stream));
  }
  void end() {
    if (!on || paused || --depth > 0 || !start)
      return;
    cuda::Event stop = take();
    if (!stop)
      return;
    llvm::consumeError(cuda::recordEvent(stop, stream));
    pending.push_back({current, start, stop});
    start = nullptr;
    if (pending.size() >= 4096)
      flush();
  }
  /// Adds up the finished events (waits for them).
  void flush() {
    for (Pending &p : pending) {
      llvm::Expected<float> ms = cuda::elapsedMs(p.start, p.stop);
      if (ms) {
        totals[p.label].first += *ms;
        totals[p.label].second += 1;
      } else {
        llvm::consumeError(ms.takeError());
      }
      pool.push_back(p.start);
      pool.push_back(p.stop);
    }
    pending.clear();
  }

private:
  struct Pending {
    std::string label;
    cuda::Event start, stop;
  };
  cuda::Event take() {
    if (!pool.empty()) {
      cuda::Event e = pool.back();
      pool.pop_back();
      return e;
    }
    llvm::Expected<cuda::Event> e = cuda::createEvent();
    if (!e) {
      llvm::consumeError(e.takeError());
      return nullptr;
    }
    return *e;
  }
  bool on = false, paused = false;
  cuda::Stream stream = nullptr;
  int depth = 0;
  std::string current;
  cuda::Event start = nullptr;
  std::vector<Pending> pending;
  std::vector<cuda::Event> pool;
  std::map<std::string, std::pair<double, int64_t>> totals;
};

/// Brackets one op for the profiler.
class ProfileScope {
public:
  ProfileScope(OpProfiler &p, const char *label) : p(p) { p.begin(label); }
  ~ProfileScope() { p.end(); }

private:
  OpProfiler &p;
};

/// How bf16 mode runs GEMMs on the model's fp32 buffers: operands rounded to
/// bf16 by a kernel first, or fp32 operands with cuBLAS rounding them to
/// bf16 or tf32 inside (SPARSETX_BF16_GEMM=convert|fast|tf32).
enum class Bf16Gemm { Convert, Fast, TF32 };

class CudaBackend final : public Backend {
public:
  static llvm::Expected<std::unique_ptr<CudaBackend>>
  create(const CudaBackendOptions &options);
  ~CudaBackend() override {
    if (stream)
      llvm::consumeError(cuda::synchronizeStream(stream));
    for (auto &[bytes, blocks] : freeBlocks)
      for (cuda::DevicePtr p : blocks)
        cuda::freeRaw(p);
    cuda::destroyStream(stream);
  }

  llvm::StringRef name() const override { return "cuda"; }
  Precision precision() const override { return options.precision; }
  std::string description() const override {
    return llvm::formatv("cuda ({0}, sm_{1}, {2}{3})", context.getDeviceName(),
                         context.getComputeCapability(),
                         toString(options.precision),
                         options.deterministic ? ", deterministic" : "");
  }
  int64_t deviceBytesInUse() const override {
    llvm::Expected<std::pair<size_t, size_t>> info = cuda::memoryInfo();
    if (!info) {
      llvm::consumeError(info.takeError());
      return 0;
    }
    return static_cast<int64_t>(info->second - info->first);
  }

  llvm::Error takeError() override {
    if (firstError.empty())
      return llvm::Error::success();
    return backendError(firstError);
  }
  bool failed() const { return !firstError.empty(); }
  void record(llvm::Error e) {
    if (!e)
      return;
    std::string text = llvm::toString(std::move(e));
    if (firstError.empty())
      firstError = std::move(text);
  }

  // Memory.
  void upload(void *dst, const void *src, int64_t bytes) override {
    ProfileScope scope(profiler, "upload");
    capturedHostCopy |= capturing;
    if (!failed() && bytes > 0)
      record(cuda::copyToDevice(dev(dst), src, bytes));
  }
  void download(void *dst, const void *src, int64_t bytes) override {
    ProfileScope scope(profiler, "download");
    capturedHostCopy |= capturing;
    if (!failed() && bytes > 0)
      record(cuda::copyToHost(dst, dev(src), bytes));
  }
  void copy(void *dst, const void *src, int64_t bytes) override {
    ProfileScope scope(profiler, "copy/fill");
    if (!failed() && bytes > 0)
      record(cuda::copyOnDevice(dev(dst), dev(src), bytes, stream));
  }
  void fill(float *x, float value, int64_t n) override {
    ProfileScope scope(profiler, "copy/fill");
    uint32_t bits;
    std::memcpy(&bits, &value, 4);
    if (!failed() && n > 0)
      record(cuda::fill32(dev(x), bits, n, stream));
  }
  void synchronize() override {
    if (!failed())
      record(context.synchronize());
    profiler.flush();
  }

  bool beginCapture() override;
  llvm::Expected<std::unique_ptr<CapturedWork>> endCapture() override;
  cuda::Stream getStream() const { return stream; }
  int getNumSMs() const { return numSMs; }

  llvm::Expected<std::unique_ptr<DecodeStep>>
  createDecodeStep(AttentionOp &attention, const DecodeModel &model) override;
  /// The tensor-core attention ops alive (createDecodeStep finds its op).
  std::vector<CudaTensorAttention *> tensorAttentions;

  void accumulate(float *y, const float *x, int64_t n) override {
    ProfileScope scope(profiler, "accumulate/scale");
    elementwise(fnAccumulate, n, y, x, n);
  }
  void scale(float *x, float s, int64_t n) override {
    ProfileScope scope(profiler, "accumulate/scale");
    elementwise(fnScale, n, x, s, n);
  }

  void matmul(float *c, const float *a, const float *b, int64_t m, int64_t n,
              int64_t k, bool transB, bool accumulate,
              const float *bias) override {
    ProfileScope scope(profiler, "gemm");
    gemm(c, a, b, m, n, k, false, transB, accumulate ? 1.0f : 0.0f, bias);
  }
  void fusedLinear(llvm::ArrayRef<LinearOut> outs, const float *a, int64_t m,
                   int64_t k, bool accumulate,
                   const LinearFusion &fusion) override {
    // Packed weights (decoding): sp_gemv_*, overlapping the previous kernel.
    if (gemv(outs, a, m, k, accumulate, fusion))
      return;
    // 16-bit rows for the attention (HalfRows) where sp_gemv cannot take
    // the shapes: fp32 rows first, then converted.
    if (llvm::any_of(outs, [](const LinearOut &o) { return o.half.data; })) {
      llvm::SmallVector<LinearOut, 3> rows(outs.begin(), outs.end());
      for (LinearOut &o : rows)
        o.half = HalfRows();
      fusedLinear(rows, a, m, k, accumulate, fusion);
      for (const LinearOut &o : outs)
        if (o.half.data)
          rowsToHalf(o.half, o.c, m, o.n);
      return;
    }
    // A few rows (decoding): one launch of sp_linear_small; else the ops.
    if (m < 1 || m > kLinearMaxRows || k < 1 || outs.empty() ||
        int64_t(outs.size()) > kLinearMaxOuts ||
        (fusion.lnWeight && m * k > kLinearMaxNorm))
      return Backend::fusedLinear(outs, a, m, k, accumulate, fusion);
    ProfileScope scope(profiler, "linear (few rows)");
    SpLinear p{};
    int64_t tiles = 0;
    for (size_t i = 0; i < outs.size(); ++i) {
      p.out[i] = {outs[i].c, outs[i].b, outs[i].bias, outs[i].n, tiles};
      tiles += (outs[i].n + 31) / 32;
    }
    p.outs = int32_t(outs.size());
    p.a = a;
    p.lnWeight = fusion.lnWeight;
    p.lnBias = fusion.lnBias;
    p.eps = cpu::kLayerNormEps;
    p.m = m;
    p.k = k;
    p.accumulate = accumulate ? 1 : 0;
    p.gelu = fusion.gelu ? 1 : 0;
    if (tiles <= 0)
      return;
    // Split k into slices of at most 64 rows (the kernel holds a slice's
    // weights in registers, 8 per thread) and fewer where that gives under
    // about four CTAs per SM: M = 1 is bound by loads in flight.
    int64_t rows = (k * tiles + 4 * numSMs - 1) / (4 * numSMs);
    p.rowsPerSplit = std::clamp<int64_t>((rows + 7) / 8 * 8, 8, 64);
    int64_t splits = (k + p.rowsPerSplit - 1) / p.rowsPerSplit;
    if (splits > 1) {
      size_t counterBytes = static_cast<size_t>(tiles) * 4;
      if (linearCounters.size() < counterBytes) {
        if (!reserve(linearCounters, counterBytes))
          return;
        record(cuda::fill32(linearCounters.get(), 0, linearCounters.size() / 4,
                            stream));
      }
      if (!reserve(linearPartials,
                   static_cast<size_t>(splits * m * tiles * 32) * 4))
        return;
      p.partials = reinterpret_cast<float *>(linearPartials.get());
      p.counters = reinterpret_cast<unsigned *>(linearCounters.get());
    }
    launchKernel(fnLinearSmall,
                 {static_cast<unsigned>(tiles), static_cast<unsigned>(splits)},
                 {32, 8}, 0, p);
  }
  bool picksTokens() const override { return true; }
  void pickTokens(const PickTokens &p) override {
    ProfileScope scope(profiler, "pick tokens");
    static_assert(sizeof(PickTokens) == 56 && sizeof(PickOptions) == 48,
                  "PickTokens/PickOptions must match sp_pick_tokens' SpPick");
    static_assert(kVocab == 256, "sp_pick_tokens ranks 256 bytes");
    if (p.batch > 0)
      launchKernel(fnPickTokens, {static_cast<unsigned>(p.batch)}, {256}, 0,
                   p);
  }
  /// rows [m, n] fp32 into 16-bit rows `h` (the precision's type).
  void rowsToHalf(const HalfRows &h, const float *rows, int64_t m, int64_t n) {
    if (options.precision == Precision::FP32)
      return record(backendError("16-bit rows in an fp32 backend"));
    int32_t bf16 = options.precision == Precision::BF16 ? 1 : 0;
    elementwiseOverlapping(fnRowsToHalf, m * n, h.data, rows, h.position, m,
                           n, h.heads, h.width, h.stride, h.capacity, bf16);
  }
  int64_t packedLinearBytes(int64_t k, int64_t n) const override {
    return k * n * (options.precision == Precision::FP32 ? 4 : 2);
  }
  void packLinear(void *packed, const float *b, int64_t k, int64_t n) override {
    ProfileScope scope(profiler, "pack weights");
    int32_t type = options.precision == Precision::FP32   ? 0
                   : options.precision == Precision::BF16 ? 1
                                                          : 2;
    elementwise(fnPackLinear, k * n, packed, b, k, n, type);
  }
  /// sp_gemv's arguments for fusedLinear on packLinear's weights, where
  /// every output has them and the shapes suit it (false: they do not).
  bool gemvArgs(llvm::ArrayRef<LinearOut> outs, const float *a, int64_t m,
                int64_t k, bool accumulate, const LinearFusion &fusion,
                SpGemv &p) const {
    const int64_t elemBytes = options.precision == Precision::FP32 ? 4 : 2;
    if (m < 1 || m > kLinearMaxRows || k < 1 || (k * elemBytes) % 16 != 0 ||
        m * k > kGemvMaxInput || dev(a) % 16 != 0 || outs.empty() ||
        int64_t(outs.size()) > kLinearMaxOuts)
      return false;
    for (const LinearOut &o : outs)
      if (!o.packed || dev(o.packed) % 16 != 0 || o.n < 1 ||
          (o.half.data && (accumulate || elemBytes != 2)))
        return false;
    p = SpGemv{};
    int64_t cols = 0;
    for (size_t i = 0; i < outs.size(); ++i) {
      const HalfRows &h = outs[i].half;
      p.out[i] = {outs[i].c,  outs[i].packed, outs[i].bias, outs[i].n,
                  cols,       h.data,         h.heads,      h.width,
                  h.stride,   h.capacity,     h.position};
      cols += outs[i].n;
    }
    p.outs = int32_t(outs.size());
    p.a = a;
    p.lnWeight = fusion.lnWeight;
    p.lnBias = fusion.lnBias;
    p.eps = cpu::kLayerNormEps;
    p.m = m;
    p.k = k;
    p.accumulate = accumulate ? 1 : 0;
    p.gelu = fusion.gelu ? 1 : 0;
    p.bf16 = options.precision == Precision::BF16 ? 1 : 0;
    return true;
  }
  static int64_t gemvColumns(const SpGemv &p) {
    return p.out[p.outs - 1].firstCol + p.out[p.outs - 1].n;
  }
  /// fusedLinear through sp_gemv where gemvArgs allows (false: not launched).
  bool gemv(llvm::ArrayRef<LinearOut> outs, const float *a, int64_t m,
            int64_t k, bool accumulate, const LinearFusion &fusion) {
    SpGemv p;
    if (!gemvArgs(outs, a, m, k, accumulate, fusion, p))
      return false;
    if (failed())
      return true;
    ProfileScope scope(profiler, "linear (packed)");
    launchOverlapping(
        options.precision == Precision::FP32 ? fnGemvF32 : fnGemvH16,
        {static_cast<unsigned>((gemvColumns(p) + kGemvWarps - 1) / kGemvWarps)},
        {static_cast<unsigned>(kGemvWarps * 32)},
        static_cast<unsigned>(m * k * 4), p);
    return true;
  }
  bool fusedLinearChain(llvm::ArrayRef<LinearStage> stages) override {
    return chainLinear(stages) || Backend::fusedLinearChain(stages);
  }
  /// The chain as one sp_gemv_chain launch, where every stage suits sp_gemv
  /// (false: not launched).
  bool chainLinear(llvm::ArrayRef<LinearStage> stages) {
    if (!linearChainEnabled || stages.size() < 2 ||
        int64_t(stages.size()) > kChainMaxStages)
      return false;
    SpGemvChain p{};
    int64_t columns = 0, shared = 0;
    for (auto [i, s] : llvm::enumerate(stages)) {
      if (!gemvArgs(s.outs, s.a, s.m, s.k, s.accumulate, s.fusion, p.stage[i]))
        return false;
      columns = std::max(columns, gemvColumns(p.stage[i]));
      shared = std::max(shared, s.m * s.k * 4);
    }
    if (failed())
      return true;
    ProfileScope scope(profiler, "linear chain (packed)");
    cuda::Function fn =
        options.precision == Precision::FP32 ? fnGemvChainF32 : fnGemvChainH16;
    // Every CTA resident at once (the stages' barriers wait for all): no
    // more than the SMs hold at this shared memory size.
    if (chainOccupancy.first != shared) {
      llvm::Expected<int> perSM = cuda::maxActiveBlocksPerSM(
          fn, int(kGemvWarps * 32), static_cast<unsigned>(shared));
      if (!perSM) {
        record(perSM.takeError());
        return true;
      }
      chainOccupancy = {shared, *perSM};
    }
    int64_t resident = int64_t(chainOccupancy.second) * numSMs;
    if (resident < 1)
      return false;
    if (chainBarrier.size() < 256) {
      if (!reserve(chainBarrier, 256))
        return true;
      record(cuda::fill32(chainBarrier.get(), 0, 2, stream));
    }
    p.stages = int32_t(stages.size());
    p.barrier = reinterpret_cast<unsigned *>(chainBarrier.get());
    int64_t grid = std::min((columns + kGemvWarps - 1) / kGemvWarps, resident);
    launchOverlapping(fn, {static_cast<unsigned>(grid)},
                      {static_cast<unsigned>(kGemvWarps * 32)},
                      static_cast<unsigned>(shared), p);
    return true;
  }
  void matmulBackward(float *da, bool accumulateDa, float *db, const float *dc,
                      const float *a, const float *b, int64_t m, int64_t n,
                      int64_t k, bool transB) override {
    ProfileScope scope(profiler, "gemm backward");
    // c[m, n] = a[m, k] op(b).
    if (da) {
      if (transB) // b [n, k]: da = dc b
        gemm(da, dc, b, m, k, n, false, false, accumulateDa ? 1.0f : 0.0f);
      else // b [k, n]: da = dc b^T
        gemm(da, dc, b, m, k, n, false, true, accumulateDa ? 1.0f : 0.0f);
    }
    if (db) {
      if (transB) // db [n, k] += dc^T a
        gemm(db, dc, a, n, k, m, true, false, 1.0f);
      else // db [k, n] += a^T dc
        gemm(db, a, dc, k, n, m, true, false, 1.0f);
    }
  }

  void layerNormForward(float *out, float *mean, float *rstd, const float *inp,
                        const float *weight, const float *bias, int64_t rows,
                        int64_t c) override {
    ProfileScope scope(profiler, "layernorm");
    float eps = cpu::kLayerNormEps;
    rowsKernel(fnLayerNormForward, rows, out, mean, rstd, inp, weight, bias,
               rows, c, eps);
  }
  void layerNormBackward(float *dinp, float *dweight, float *dbias,
                         const float *dout, const float *inp,
                         const float *weight, const float *mean,
                         const float *rstd, int64_t rows, int64_t c) override {
    ProfileScope scope(profiler, "layernorm backward");
    if (dinp)
      rowsKernel(fnLayerNormBackwardInput, rows, dinp, dout, inp, weight, mean,
                 rstd, rows, c);
    if (dweight || dbias)
      columnSums(dbias, dweight, dout, inp, mean, rstd, rows, c);
  }
  void geluForward(float *out, const float *inp, int64_t n) override {
    ProfileScope scope(profiler, "gelu");
    elementwise(fnGeluForward, n, out, inp, n);
  }
  void geluBackward(float *dinp, const float *inp, const float *dout,
                    int64_t n) override {
    ProfileScope scope(profiler, "gelu backward");
    elementwise(fnGeluBackward, n, dinp, inp, dout, n);
  }
  void biasAddForward(float *x, const float *bias, int64_t rows,
                      int64_t c) override {
    ProfileScope scope(profiler, "bias");
    elementwise(fnBiasAdd, rows * c, x, bias, rows, c);
  }
  void biasAddBackward(float *dbias, const float *dout, int64_t rows,
                       int64_t c) override {
    ProfileScope scope(profiler, "bias backward");
    columnSums(dbias, nullptr, dout, nullptr, nullptr, nullptr, rows, c);
  }
  void embeddingForward(float *out, const int32_t *ids, const float *table,
                        int64_t rows, int64_t c, int64_t,
                        bool accumulate) override {
    ProfileScope scope(profiler, "embedding");
    int32_t acc = accumulate ? 1 : 0;
    elementwise(fnEmbeddingForward, rows * c, out, ids, table, rows, c, acc);
  }
  void embeddingBackward(float *dtable, const int32_t *ids, const float *dout,
                         int64_t rows, int64_t c, int64_t vocab) override {
    ProfileScope scope(profiler, "embedding backward");
    if (rows <= 0 || c <= 0 || vocab <= 0)
      return;
    // Groups of at least 256 rows, at most 256 groups and a partial buffer
    // of at most 2^28 floats.
    int64_t groups = std::clamp<int64_t>((rows + 255) / 256, 1, 256);
    groups = std::max<int64_t>(
        1, std::min<int64_t>(groups, (int64_t(1) << 28) / (vocab * c)));
    int64_t rowsPerGroup = (rows + groups - 1) / groups;
    groups = (rows + rowsPerGroup - 1) / rowsPerGroup;
    size_t floats = static_cast<size_t>(groups * vocab * c);
    if (!reserve(embeddingScratch, floats * 4))
      return;
    float *partial = reinterpret_cast<float *>(embeddingScratch.get());
    record(cuda::fill32(embeddingScratch.get(), 0, floats, stream));
    launchKernel(fnEmbeddingBackward,
                 {static_cast<unsigned>(groups),
                  static_cast<unsigned>((c + 127) / 128)},
                 {128}, 0, partial, ids, dout, rows, c, vocab, rowsPerGroup);
    elementwise(fnEmbeddingReduce, vocab * c, dtable,
                static_cast<const float *>(partial), groups, vocab, c);
  }
  double softmaxCrossEntropy(float *losses, float *dlogits, const float *logits,
                             const int32_t *targets, int64_t rows,
                             int64_t vocab, float dlossScale) override {
    ProfileScope scope(profiler, "cross-entropy");
    if (rows <= 0)
      return 0.0;
    float *lossOut = losses;
    if (!lossOut) {
      if (!reserve(lossScratch, rows * 4))
        return std::nan("");
      lossOut = reinterpret_cast<float *>(lossScratch.get());
    }
    launchKernel(fnCrossEntropy, {static_cast<unsigned>(rows)}, {256}, 0,
                 lossOut, dlogits, logits, targets, vocab, dlossScale);
    std::vector<float> host(rows);
    download(host.data(), lossOut, rows * 4);
    if (failed())
      return std::nan("");
    double total = 0.0;
    for (float l : host)
      total += l;
    return total / rows;
  }
  void dropoutForward(float *out, const float *inp, int64_t n, float p,
                      uint64_t seed) override {
    ProfileScope scope(profiler, "dropout");
    uint64_t h = splitmix64(seed);
    elementwise(fnDropoutForward, n, out, inp, n, p, h);
  }
  void dropoutBackward(float *dinp, const float *dout, int64_t n, float p,
                       uint64_t seed) override {
    ProfileScope scope(profiler, "dropout backward");
    uint64_t h = splitmix64(seed);
    elementwise(fnDropoutBackward, n, dinp, dout, n, p, h);
  }
  void residualDropout(float *out, const float *x, const float *branch,
                       int64_t n, float p, uint64_t seed) override {
    ProfileScope scope(profiler, "residual");
    uint64_t h = splitmix64(seed);
    elementwise(fnResidualDropout, n, out, x, branch, n, p, h);
  }
  void adamw(float *params, const float *grads, float *m, float *v, int64_t n,
             int64_t step, float lr, float beta1, float beta2, float eps,
             float weightDecay) override {
    ProfileScope scope(profiler, "adamw");
    float c1 = static_cast<float>(1.0 - std::pow(double(beta1), double(step)));
    float c2 = static_cast<float>(1.0 - std::pow(double(beta2), double(step)));
    elementwise(fnAdamW, n, params, grads, m, v, n, lr, beta1, beta2, eps,
                weightDecay, c1, c2);
  }
  double clipGradNorm(float *grads, int64_t n, double maxNorm) override {
    ProfileScope scope(profiler, "clip");
    if (n <= 0)
      return 0.0;
    unsigned blocks = gridFor(n);
    if (!reserve(normScratch, blocks * 8))
      return std::nan("");
    launchKernel(fnSumSquares, {blocks}, {kThreads}, 0,
                 reinterpret_cast<double *>(normScratch.get()), grads, n);
    std::vector<double> partial(blocks);
    download(partial.data(), reinterpret_cast<void *>(normScratch.get()),
             blocks * 8);
    if (failed())
      return std::nan("");
    double sumSq = 0.0;
    for (double p : partial)
      sumSq += p;
    double norm = std::sqrt(sumSq);
    if (maxNorm > 0.0 && norm > maxNorm && std::isfinite(norm))
      scale(grads, static_cast<float>(maxNorm / norm), n);
    return norm;
  }

  // Gradients in 16 bits for the data-parallel all-reduce (the kernels are
  // looked up at first use: single-GPU runs never need them).
  void convertToHalf(uint16_t *out, const float *x, int64_t n, float s,
                     Precision type) override {
    ProfileScope scope(profiler, "gradients to/from 16 bits");
    if (cuda::Function fn = halfGradientKernel(fnScaleToHalf,
                                               "sp_scale_to_half", type))
      elementwise(fn, n, out, x, s, n, type == Precision::BF16 ? 1 : 0);
  }
  void convertFromHalf(float *x, const uint16_t *in, int64_t n, float s,
                       Precision type) override {
    ProfileScope scope(profiler, "gradients to/from 16 bits");
    if (cuda::Function fn = halfGradientKernel(fnScaleFromHalf,
                                               "sp_scale_from_half", type))
      elementwise(fn, n, x, in, s, n, type == Precision::BF16 ? 1 : 0);
  }
  void *nativeStream() const override { return stream; }
  cuda::Function halfGradientKernel(cuda::Function &fn, const char *name,
                                    Precision type) {
    if (failed())
      return nullptr;
    if (type == Precision::FP32) {
      record(backendError(llvm::Twine(name) +
                          ": fp32 is not a 16-bit format"));
      return nullptr;
    }
    if (!fn) {
      llvm::Expected<cuda::Function> f = module.getFunction(name);
      if (!f) {
        record(f.takeError());
        return nullptr;
      }
      fn = *f;
    }
    return fn;
  }
  cuda::Function fnScaleToHalf = nullptr, fnScaleFromHalf = nullptr;

  llvm::Expected<std::unique_ptr<AttentionOp>>
  prepareAttention(const AttentionPattern &pattern,
                   const AttentionDims &dims) override;

  // For the attention ops.
  template <typename... Args>
  void launchKernel(cuda::Function fn, cuda::Dim3 grid, cuda::Dim3 block,
                    unsigned shared, Args... args) {
    if (failed())
      return;
    void *ptrs[] = {static_cast<void *>(&args)...};
    record(cuda::launch(fn, grid, block, shared, stream, ptrs));
  }
  /// launchKernel for a kernel that calls spWaitPrior before it touches what
  /// earlier kernels write: it may start before its predecessor ends, where
  /// the device and SPARSETX_OVERLAP_LAUNCHES allow.
  template <typename... Args>
  void launchOverlapping(cuda::Function fn, cuda::Dim3 grid, cuda::Dim3 block,
                         unsigned shared, Args... args) {
    if (failed())
      return;
    void *ptrs[] = {static_cast<void *>(&args)...};
    record(cuda::launch(fn, grid, block, shared, stream, ptrs, overlapLaunches));
  }
  template <typename... Args>
  void elementwise(cuda::Function fn, int64_t n, Args... args) {
    if (n > 0)
      launchKernel(fn, {gridFor(n)}, {kThreads}, 0, args...);
  }
  template <typename... Args>
  void elementwiseOverlapping(cuda::Function fn, int64_t n, Args... args) {
    if (n > 0)
      launchOverlapping(fn, {gridFor(n)}, {kThreads}, 0, args...);
  }
  /// Grows `buffer` to at least `bytes`; false (error recorded) on failure.
  bool reserve(cuda::DeviceBuffer &buffer, size_t bytes) {
    if (failed())
      return false;
    if (buffer.size() >= bytes)
      return true;
    allocatedWhileCapturing |= capturing;
    buffer = cuda::DeviceBuffer();
    llvm::Expected<cuda::DeviceBuffer> b = cuda::DeviceBuffer::allocate(bytes);
    if (!b) {
      record(b.takeError());
      return false;
    }
    buffer = std::move(*b);
    return true;
  }
  /// Token-major fp32 [batch, n, rowHeads, dim] rows, `heads` of their
  /// heads from the one src/dst points at, to and from 16-bit
  /// [batch * heads, n, D] (zero padded).
  void pack(void *dst, const float *src, int64_t batch, int64_t heads,
            int64_t rowHeads, int64_t n, int64_t rowBegin, int64_t rows,
            int64_t dim, int64_t D) {
    int32_t bf16 = options.precision == Precision::BF16 ? 1 : 0;
    elementwise(fnPackHeads, batch * heads * rows * D, dst, src, batch, heads,
                rowHeads, n, rowBegin, rows, dim, D, bf16);
  }
  void unpack(float *dst, const void *src, int64_t batch, int64_t heads,
              int64_t rowHeads, int64_t n, int64_t dim, int64_t D) {
    int32_t bf16 = options.precision == Precision::BF16 ? 1 : 0;
    elementwise(fnUnpackHeads, batch * n * heads * dim, dst, src, batch, heads,
                rowHeads, n, dim, D, bf16);
  }

  cuda::Function fnAttnForward = nullptr, fnAttnDecode = nullptr,
                 fnAttnBackwardDq = nullptr, fnAttnBackwardDkDv = nullptr;

protected:
  void *allocateRaw(int64_t bytes) override;
  void release(void *ptr, int64_t bytes) override;

private:
  explicit CudaBackend(const CudaBackendOptions &options) : options(options) {}
  llvm::Error init();
  unsigned gridFor(int64_t n) const {
    int64_t blocks = (n + kThreads - 1) / kThreads;
    return static_cast<unsigned>(std::min<int64_t>(blocks, int64_t(numSMs) * 16));
  }
  template <typename... Args>
  void rowsKernel(cuda::Function fn, int64_t rows, Args... args) {
    // One warp per row, 8 rows per block.
    if (rows > 0)
      launchKernel(fn, {static_cast<unsigned>((rows + 7) / 8)}, {kThreads}, 0,
                   args...);
  }
  void gemm(float *c, const float *a, const float *b, int64_t m, int64_t n,
            int64_t k, bool transA, bool transB, float beta,
            const float *bias = nullptr) {
    if (failed())
      return;
    if (bias && dev(bias) % 16 != 0) {
      // The epilogue reads the bias vector in 16-byte pieces.
      gemm(c, a, b, m, n, k, transA, transB, beta);
      elementwise(fnBiasAdd, m * n, c, bias, m, n);
      return;
    }
    if (options.precision == Precision::FP32 ||
        (options.precision == Precision::BF16 && bf16Gemm != Bf16Gemm::Convert)) {
      cuda::GemmMode mode = options.precision == Precision::FP32
                                ? cuda::GemmMode::FP32
                            : bf16Gemm == Bf16Gemm::Fast ? cuda::GemmMode::FP32FastBF16
                                                         : cuda::GemmMode::FP32FastTF32;
      record(blas->gemm(dev(c), dev(a), dev(b), m, n, k, transA, transB, 1.0f,
                        beta, mode, dev(bias), stream));
      return;
    }
    // Mixed precision: the operands rounded to 16 bits, fp32 accumulation
    // and output.
    int32_t bf16 = options.precision == Precision::BF16 ? 1 : 0;
    if (!reserve(gemmA16, static_cast<size_t>(m * k) * 2) ||
        !reserve(gemmB16, static_cast<size_t>(k * n) * 2))
      return;
    elementwise(fnToHalf, m * k, reinterpret_cast<void *>(gemmA16.get()), a,
                m * k, bf16);
    elementwise(fnToHalf, k * n, reinterpret_cast<void *>(gemmB16.get()), b,
                k * n, bf16);
    if (failed())
      return;
    record(blas->gemm(dev(c), gemmA16.get(), gemmB16.get(), m, n, k, transA,
                      transB, 1.0f, beta,
                      bf16 ? cuda::GemmMode::BF16 : cuda::GemmMode::FP16,
                      dev(bias), stream));
  }
  void columnSums(float *dbias, float *dweight, const float *dout,
                  const float *inp, const float *mean, const float *rstd,
                  int64_t rows, int64_t c) {
    if (rows <= 0 || c <= 0)
      return;
    // About four blocks per SM over (column tiles x row chunks): enough to
    // stream dout at full bandwidth, few enough chunks that the ordered
    // reduce (one thread per column) is short. Many small chunks made the
    // reduce the bottleneck (2 blocks of threads summing hundreds of
    // partials each).
    int64_t tiles = (c + 31) / 32;
    int64_t chunks = std::clamp<int64_t>((4 * numSMs + tiles - 1) / tiles, 1,
                                         (rows + 63) / 64);
    int64_t rowsPerChunk = (rows + chunks - 1) / chunks;
    chunks = (rows + rowsPerChunk - 1) / rowsPerChunk;
    if (!reserve(columnScratch, static_cast<size_t>(2 * chunks * c) * 4))
      return;
    float *partial = reinterpret_cast<float *>(columnScratch.get());
    const float *x = dweight ? inp : nullptr;
    launchKernel(fnColumnPartials,
                 {static_cast<unsigned>((c + 31) / 32),
                  static_cast<unsigned>(chunks)},
                 {32, 8}, 0, partial, dout, x, mean, rstd, rows, c,
                 rowsPerChunk);
    elementwise(fnColumnReduce, c, dbias, dweight,
                static_cast<const float *>(partial), chunks, c);
  }

public:
  OpProfiler profiler;

private:
  Bf16Gemm bf16Gemm = Bf16Gemm::Fast;
  CudaBackendOptions options;
  cuda::Context context;
  cuda::Stream stream = nullptr;
  /// Capturing (beginCapture); what makes the capture unusable.
  bool fusedDecodeEnabled = false;
  bool graphsEnabled = true, capturing = false, allocatedWhileCapturing = false,
       capturedHostCopy = false;
  int numSMs = 1;
  std::unique_ptr<cuda::Blas> blas;
  cuda::Module module;
  cuda::Function fnAccumulate = nullptr, fnScale = nullptr,
                 fnGeluForward = nullptr, fnGeluBackward = nullptr,
                 fnBiasAdd = nullptr, fnEmbeddingForward = nullptr,
                 fnEmbeddingBackward = nullptr, fnDropoutForward = nullptr,
                 fnDropoutBackward = nullptr, fnAdamW = nullptr,
                 fnSumSquares = nullptr, fnLayerNormForward = nullptr,
                 fnLayerNormBackwardInput = nullptr,
                 fnColumnPartials = nullptr, fnColumnReduce = nullptr,
                 fnCrossEntropy = nullptr, fnPackHeads = nullptr,
                 fnUnpackHeads = nullptr, fnToHalf = nullptr,
                 fnResidualDropout = nullptr, fnEmbeddingReduce = nullptr;

public:
  cuda::Function fnAppendRowAt = nullptr, fnLinearSmall = nullptr,
                 fnRowsToHalf = nullptr, fnPickTokens = nullptr, fnGemvF32 = nullptr,
                 fnGemvH16 = nullptr, fnPackLinear = nullptr,
                 fnGemvChainF32 = nullptr, fnGemvChainH16 = nullptr;
  /// Kernels written for it launch overlapping their predecessor (sm_90+,
  /// SPARSETX_OVERLAP_LAUNCHES).
  bool overlapLaunches = false;
  /// fusedLinearChain as one launch (SPARSETX_LINEAR_CHAIN).
  bool linearChainEnabled = false;
  /// The attention forward / dK/dV kernels on wgmma where they apply
  /// (SPARSETX_WGMMA_FORWARD, SPARSETX_WGMMA_BACKWARD; set from the
  /// environment when the backend starts, CudaEnvironment's defaults until).
  bool wgmmaForward = CudaEnvironment().wgmmaForward,
       wgmmaBackward = CudaEnvironment().wgmmaBackward;

private:
  cuda::DeviceBuffer lossScratch, normScratch, columnScratch, gemmA16, gemmB16,
      embeddingScratch, linearPartials, linearCounters;
  /// sp_gemv_chain's barrier counters (zero between launches).
  cuda::DeviceBuffer chainBarrier;
  /// (shared bytes, CTAs per SM) of sp_gemv_chain, last asked.
  std::pair<int64_t, int> chainOccupancy{-1, 0};
  std::string firstError;
  // The caching allocator: free blocks by rounded size.
  std::map<size_t, std::vector<cuda::DevicePtr>> freeBlocks;
  size_t cachedBytes = 0;
};

size_t roundAllocation(size_t bytes) {
  constexpr size_t kSmall = 512, kLarge = size_t(2) << 20;
  if (bytes >= (size_t(1) << 20))
    return (bytes + kLarge - 1) / kLarge * kLarge;
  return (bytes + kSmall - 1) / kSmall * kSmall;
}

void *CudaBackend::allocateRaw(int64_t bytes) {
  if (bytes <= 0 || failed())
    return nullptr;
  allocatedWhileCapturing |= capturing;
  size_t size = roundAllocation(static_cast<size_t>(bytes));
  cuda::DevicePtr ptr = 0;
  auto it = freeBlocks.find(size);
  if (it != freeBlocks.end() && !it->second.empty()) {
    ptr = it->second.back();
    it->second.pop_back();
    cachedBytes -= size;
  } else {
    llvm::Expected<cuda::DevicePtr> p = cuda::allocateRaw(size);
    if (!p) {
      // Give the cached blocks back and try once more.
      llvm::consumeError(p.takeError());
      synchronize();
      for (auto &[bytes, blocks] : freeBlocks)
        for (cuda::DevicePtr b : blocks)
          cuda::freeRaw(b);
      freeBlocks.clear();
      cachedBytes = 0;
      p = cuda::allocateRaw(size);
    }
    if (!p) {
      std::string why = llvm::toString(p.takeError());
      llvm::Expected<std::pair<size_t, size_t>> info = cuda::memoryInfo();
      std::string state;
      if (info)
        state = llvm::formatv(" ({0:F2} GiB of {1:F2} GiB free)",
                              info->first / double(1 << 30),
                              info->second / double(1 << 30));
      else
        llvm::consumeError(info.takeError());
      record(backendError(llvm::formatv("out of GPU memory: {0} bytes could "
                                        "not be allocated{1}: {2}",
                                        size, state, why)));
      return nullptr;
    }
    ptr = *p;
  }
  record(cuda::fill32(ptr, 0, size / 4, stream));
  return reinterpret_cast<void *>(ptr);
}

void CudaBackend::release(void *ptr, int64_t bytes) {
  if (!ptr)
    return;
  allocatedWhileCapturing |= capturing;
  size_t size = roundAllocation(static_cast<size_t>(bytes));
  freeBlocks[size].push_back(dev(ptr));
  cachedBytes += size;
}

llvm::Error CudaBackend::init() {
  llvm::Expected<cuda::Context> ctx = cuda::Context::create(options.device);
  if (!ctx)
    return ctx.takeError();
  context = std::move(*ctx);
  numSMs = std::max(1, context.getNumSMs());
  int cc = context.getComputeCapability();
  if (cc < 80)
    return backendError(llvm::formatv(
        "{0} (sm_{1}) is older than sm_80, which the kernels need",
        context.getDeviceName(), cc));
  llvm::Expected<cuda::Stream> st = cuda::createStream();
  if (!st)
    return st.takeError();
  stream = *st;
  llvm::Expected<CudaEnvironment> env = readCudaEnvironment();
  if (!env)
    return env.takeError();
  if (env->profile)
    profiler.enable(stream);
  graphsEnabled = env->graphs;
  fusedDecodeEnabled = env->fusedDecode;
  overlapLaunches = env->overlapLaunches && cc >= 90;
  linearChainEnabled = env->linearChain;
  wgmmaForward = env->wgmmaForward;
  wgmmaBackward = env->wgmmaBackward;
  bf16Gemm = env->bf16Gemm == "convert" ? Bf16Gemm::Convert
             : env->bf16Gemm == "tf32"  ? Bf16Gemm::TF32
                                        : Bf16Gemm::Fast;
  llvm::Expected<std::unique_ptr<cuda::Blas>> b = cuda::Blas::create();
  if (!b)
    return b.takeError();
  blas = std::move(*b);

  llvm::Expected<std::string> ptx = compileCudaBackendKernels(
      cc == 90 ? "sm_90a" : "sm_" + std::to_string(cc));
  if (!ptx)
    return ptx.takeError();
  llvm::Expected<cuda::Module> mod = cuda::Module::load(*ptx);
  if (!mod)
    return mod.takeError();
  module = std::move(*mod);
  struct Entry {
    cuda::Function *fn;
    const char *name;
  } entries[] = {
      {&fnAccumulate, "sp_accumulate"},
      {&fnScale, "sp_scale"},
      {&fnGeluForward, "sp_gelu_forward"},
      {&fnGeluBackward, "sp_gelu_backward"},
      {&fnBiasAdd, "sp_bias_add"},
      {&fnEmbeddingForward, "sp_embedding_forward"},
      {&fnEmbeddingBackward, "sp_embedding_backward_partial"},
      {&fnEmbeddingReduce, "sp_embedding_backward_reduce"},
      {&fnDropoutForward, "sp_dropout_forward"},
      {&fnDropoutBackward, "sp_dropout_backward"},
      {&fnAdamW, "sp_adamw"},
      {&fnSumSquares, "sp_sum_squares"},
      {&fnLayerNormForward, "sp_layernorm_forward"},
      {&fnLayerNormBackwardInput, "sp_layernorm_backward_input"},
      {&fnColumnPartials, "sp_column_partials"},
      {&fnColumnReduce, "sp_column_reduce"},
      {&fnCrossEntropy, "sp_softmax_cross_entropy"},
      {&fnPackHeads, "sp_pack_heads"},
      {&fnUnpackHeads, "sp_unpack_heads"},
      {&fnToHalf, "sp_to_half"},
      {&fnResidualDropout, "sp_residual_dropout"},
      {&fnAttnForward, "sp_attention_forward"},
      {&fnAttnDecode, "sp_attention_decode"},
      {&fnAttnBackwardDq, "sp_attention_backward_dq"},
      {&fnAttnBackwardDkDv, "sp_attention_backward_dkdv"},
      {&fnAppendRowAt, "sp_append_row_at"},
      {&fnLinearSmall, "sp_linear_small"},
      {&fnRowsToHalf, "sp_rows_to_half"},
      {&fnPickTokens, "sp_pick_tokens"},
      {&fnGemvF32, "sp_gemv_f32"},
      {&fnGemvH16, "sp_gemv_h16"},
      {&fnGemvChainF32, "sp_gemv_chain_f32"},
      {&fnGemvChainH16, "sp_gemv_chain_h16"},
      {&fnPackLinear, "sp_pack_linear"},
  };
  for (Entry &e : entries) {
    llvm::Expected<cuda::Function> fn = module.getFunction(e.name);
    if (!fn)
      return fn.takeError();
    *e.fn = *fn;
  }
  // sp_gemv holds its rows in up to 64 KiB of dynamic shared memory.
  for (cuda::Function fn :
       {fnGemvF32, fnGemvH16, fnGemvChainF32, fnGemvChainH16})
    if (llvm::Error e = cuda::setMaxDynamicSharedMemory(fn, kGemvMaxInput * 4))
      return e;
  return llvm::Error::success();
}

llvm::Expected<std::unique_ptr<CudaBackend>>
CudaBackend::create(const CudaBackendOptions &options) {
  std::unique_ptr<CudaBackend> backend(new CudaBackend(options));
  if (llvm::Error e = backend->init())
    return std::move(e);
  return std::move(backend);
}

/// A captured CUDA graph, replayed on the backend's stream.
class CudaCapturedWork final : public Backend::CapturedWork {
public:
  CudaCapturedWork(CudaBackend &backend, cuda::Graph graph)
      : backend(backend), graph(std::move(graph)) {}
  void replay() override {
    // (SPARSETX_PROFILE=1: the replay's GPU time against the wall clock's
    // tokens/s shows the host's share.)
    ProfileScope scope(backend.profiler, "captured work (replay)");
    if (!backend.failed())
      backend.record(graph.launch(backend.getStream()));
  }

private:
  CudaBackend &backend;
  cuda::Graph graph;
};

bool CudaBackend::beginCapture() {
  if (!graphsEnabled || failed() || capturing)
    return false;
  if (llvm::Error e = cuda::beginCapture(stream)) {
    record(std::move(e));
    return false;
  }
  capturing = true;
  allocatedWhileCapturing = capturedHostCopy = false;
  profiler.pause(true);
  return true;
}

llvm::Expected<std::unique_ptr<Backend::CapturedWork>> CudaBackend::endCapture() {
  if (!capturing)
    return backendError("endCapture without beginCapture");
  capturing = false;
  profiler.pause(false);
  llvm::Expected<cuda::Graph> graph = cuda::endCapture(stream);
  if (!graph) {
    record(graph.takeError());
    return takeError();
  }
  if (failed())
    return takeError();
  if (allocatedWhileCapturing || capturedHostCopy)
    return backendError(llvm::formatv(
        "captured work {0} (a bug: the caller must do that before capturing)",
        allocatedWhileCapturing ? "allocated or freed device memory"
                                : "copied between host and device"));
  return std::make_unique<CudaCapturedWork>(*this, std::move(*graph));
}

llvm::Expected<std::unique_ptr<AttentionOp>>
CudaBackend::prepareAttention(const AttentionPattern &pattern,
                              const AttentionDims &dims) {
  if (dims.seqLen != pattern.getSeqLen() || dims.heads != pattern.getNumHeads())
    return backendError(llvm::formatv(
        "attention of n = {0}, {1} heads from a pattern compiled for n = {2}, "
        "{3} heads",
        dims.seqLen, dims.heads, pattern.getSeqLen(), pattern.getNumHeads()));
  if (options.precision == Precision::FP32) {
    if (std::max(dims.qkDim, dims.vDim) > 32 * 8)
      return backendError(llvm::formatv(
          "head dimension {0}: the fp32 attention supports up to 256",
          std::max(dims.qkDim, dims.vDim)));
    auto op = std::make_unique<CudaExactAttention>(*this, pattern, dims);
    if (llvm::Error e = op->upload())
      return std::move(e);
    return std::move(op);
  }

  int64_t need = std::max(dims.qkDim, dims.vDim), D = 0;
  for (int64_t candidate : {32, 64, 128})
    if (need <= candidate) {
      D = candidate;
      break;
    }
  if (D == 0)
    return backendError(llvm::formatv(
        "head dimension {0}: the {1} attention kernels take head dimensions "
        "up to 128 (use --precision fp32)",
        need, toString(options.precision)));
  const CompiledPattern &compiled = pattern.getCompiled();
  codegen::CodegenOptions cg;
  cg.headDim = D;
  cg.dtype = options.precision == Precision::BF16 ? codegen::ElementType::BF16
                                                   : codegen::ElementType::FP16;
  int cc = context.getComputeCapability();
  cg.arch = cc == 90 ? "sm_90a" : "sm_" + std::to_string(cc);
  cg.forwardWgmma = wgmmaForward;
  cg.backwardWgmma = wgmmaBackward;
  std::string diagnostics;
  mlir::FailureOr<codegen::GeneratedAttention> generated;
  {
    mlir::ScopedDiagnosticHandler handler(
        compiled.context.get(), [&](mlir::Diagnostic &diag) {
          diagnostics += (diagnostics.empty() ? "" : "\n") + diag.str();
          return mlir::success();
        });
    generated = codegen::generateForward(compiled.pattern, compiled.layout, cg);
  }
  if (mlir::failed(generated))
    return backendError("cannot generate the attention kernels of pattern '" +
                        pattern.getName().str() + "': " + diagnostics);
  llvm::Expected<AttentionPlan> plan = AttentionPlan::compile(std::move(*generated));
  if (!plan)
    return plan.takeError();
  plan->setDeterministicBackward(options.deterministic);
  return std::make_unique<CudaTensorAttention>(*this, dims, std::move(*plan), D,
                                               options.attentionGroupBytes);
}

//===----------------------------------------------------------------------===//
// The exact fp32 attention
//===----------------------------------------------------------------------===//

llvm::Error CudaExactAttention::upload() {
  numLayerMasks = pattern.getNumLayerMasks();
  maskStride = pattern.isPerHead() ? pattern.getNumHeads() : 1;
  // Every mask's four arrays back to back (8-byte aligned), then the SpMask
  // table: [layer mask][head or 0].
  std::vector<const RowSparsity *> masks;
  for (int64_t m = 0; m < numLayerMasks; ++m)
    for (const RowSparsity *r : pattern.layerMasks(m))
      masks.push_back(r);
  size_t bytes = 0;
  auto align8 = [](size_t x) { return (x + 7) / 8 * 8; };
  for (const RowSparsity *r : masks)
    bytes += align8(r->rowOffsets().size() * 8) +
             align8(r->allRowKeys().size() * 4) +
             align8(r->colOffsets().size() * 8) +
             align8(r->allColQueries().size() * 4);
  llvm::Expected<cuda::DeviceBuffer> buf = cuda::DeviceBuffer::allocate(bytes);
  if (!buf)
    return buf.takeError();
  lists = std::move(*buf);
  std::vector<SpMask> table;
  size_t offset = 0;
  auto put = [&](const void *data, size_t size) -> llvm::Expected<uint64_t> {
    uint64_t at = lists.get() + offset;
    if (llvm::Error e = lists.copyFromHost(data, size, offset))
      return std::move(e);
    offset += align8(size);
    return at;
  };
  for (const RowSparsity *r : masks) {
    SpMask m;
    llvm::Expected<uint64_t> a = put(r->rowOffsets().data(), r->rowOffsets().size() * 8);
    if (!a)
      return a.takeError();
    m.rowStart = *a;
    a = put(r->allRowKeys().data(), r->allRowKeys().size() * 4);
    if (!a)
      return a.takeError();
    m.rowKeys = *a;
    a = put(r->colOffsets().data(), r->colOffsets().size() * 8);
    if (!a)
      return a.takeError();
    m.colStart = *a;
    a = put(r->allColQueries().data(), r->allColQueries().size() * 4);
    if (!a)
      return a.takeError();
    m.colQueries = *a;
    table.push_back(m);
  }
  llvm::Expected<cuda::DeviceBuffer> t =
      cuda::DeviceBuffer::allocate(table.size() * sizeof(SpMask));
  if (!t)
    return t.takeError();
  maskTable = std::move(*t);
  return maskTable.copyFromHost(table.data(), table.size() * sizeof(SpMask));
}

void CudaExactAttention::forward(int64_t layer, int64_t batch, const float *q,
                                 const float *k, const float *v, float *o,
                                 float *lse) {
  ProfileScope scope(backend.profiler, "attention");
  SpAttnShape s = shape(batch);
  int64_t rows = batch * dims.heads * dims.seqLen;
  uint64_t masks = masksOf(layer);
  backend.launchKernel(backend.fnAttnForward,
                       {static_cast<unsigned>((rows + 3) / 4)}, {128},
                       static_cast<unsigned>(4 * dims.qkDim * 4), s, masks, q,
                       k, v, o, lse);
}

void CudaExactAttention::backward(int64_t layer, int64_t batch, const float *q,
                                  const float *k, const float *v,
                                  const float *o, const float *lse,
                                  const float *dO, float *dQ, float *dK,
                                  float *dV) {
  ProfileScope scope(backend.profiler, "attention backward");
  SpAttnShape s = shape(batch);
  int64_t rows = batch * dims.heads * dims.seqLen;
  if (!backend.reserve(delta, static_cast<size_t>(rows) * 4))
    return;
  float *deltaPtr = reinterpret_cast<float *>(delta.get());
  uint64_t masks = masksOf(layer);
  unsigned shared = static_cast<unsigned>(4 * (dims.qkDim + dims.vDim) * 4);
  cuda::Dim3 grid{static_cast<unsigned>((rows + 3) / 4)};
  backend.launchKernel(backend.fnAttnBackwardDq, grid, {128}, shared, s, masks,
                       q, k, v, o, lse, dO, dQ, deltaPtr);
  backend.launchKernel(backend.fnAttnBackwardDkDv, grid, {128}, shared, s,
                       masks, q, k, v, lse, dO,
                       static_cast<const float *>(deltaPtr), dK, dV);
}

void CudaExactAttention::beginDecode(int64_t batch, int64_t layers) {
  kCaches.resize(layers);
  vCaches.resize(layers);
  const size_t rows = static_cast<size_t>(batch * dims.seqLen * dims.heads);
  for (int64_t l = 0; l < layers; ++l)
    if (!backend.reserve(kCaches[l], rows * dims.qkDim * 4) ||
        !backend.reserve(vCaches[l], rows * dims.vDim * 4))
      return;
}

void CudaExactAttention::decode(int64_t layer, int64_t batch,
                                const int32_t *position, const float *q,
                                const float *k, const float *v, float *o) {
  ProfileScope scope(backend.profiler, "attention decode");
  if (layer >= int64_t(kCaches.size()))
    return backend.record(backendError("attention decode before beginDecode"));
  SpAttnShape s = shape(batch);
  const int64_t n = dims.seqLen;
  float *kc = reinterpret_cast<float *>(kCaches[layer].get()),
        *vc = reinterpret_cast<float *>(vCaches[layer].get());
  backend.elementwise(backend.fnAppendRowAt, batch * dims.heads * dims.qkDim,
                      kc, k, position, batch, n, dims.heads * dims.qkDim);
  backend.elementwise(backend.fnAppendRowAt, batch * dims.heads * dims.vDim, vc,
                      v, position, batch, n, dims.heads * dims.vDim);
  int64_t rows = batch * dims.heads;
  uint64_t masks = masksOf(layer);
  backend.launchKernel(backend.fnAttnDecode,
                       {static_cast<unsigned>((rows + 3) / 4)}, {128},
                       static_cast<unsigned>(4 * dims.qkDim * 4), s, masks,
                       position, q, static_cast<const float *>(kc),
                       static_cast<const float *>(vc), o);
}

//===----------------------------------------------------------------------===//
// The tensor-core attention
//===----------------------------------------------------------------------===//

bool CudaTensorAttention::reserve(int64_t batchHeads, bool withBackward) {
  if (batchHeads <= reservedBatchHeads && (!withBackward || reservedBackward))
    return !backend.failed();
  int64_t bh = std::max(batchHeads, reservedBatchHeads);
  size_t bytes = static_cast<size_t>(bh * dims.seqLen * D) * 2;
  size_t count = withBackward || reservedBackward ? 8 : 4;
  halves.resize(8);
  for (size_t i = 0; i < count; ++i)
    if (!backend.reserve(halves[i], bytes))
      return false;
  reservedBatchHeads = bh;
  reservedBackward = count == 8;
  return true;
}

int64_t CudaTensorAttention::groupSize(int64_t batch) const {
  const int64_t H = dims.heads, all = batch * H;
  const int64_t perPair = dims.seqLen * D * 2; // one 16-bit [n, D] copy
  if (all * perPair <= groupBytes)
    return all;
  int64_t pairs = std::max<int64_t>(1, groupBytes / perPair);
  if (pairs >= H || perHeadMasks)
    return std::max<int64_t>(1, pairs / H) * H;
  while (H % pairs != 0)
    --pairs;
  return pairs;
}

template <typename Body>
void CudaTensorAttention::forEachGroup(int64_t batch, Body body) const {
  const int64_t H = dims.heads, all = batch * H, G = groupSize(batch);
  for (int64_t bh0 = 0; bh0 < all; bh0 += G) {
    const int64_t count = std::min(G, all - bh0);
    // G < H divides H: heads bh0 % H .. of one entry; else whole entries.
    const int64_t heads = std::min(count, H), entries = count / heads;
    body(bh0, count, entries, heads, bh0 / H * dims.seqLen * H + bh0 % H);
  }
}

void CudaTensorAttention::forward(int64_t layer, int64_t batch, const float *q,
                                  const float *k, const float *v, float *o,
                                  float *lse) {
  ProfileScope scope(backend.profiler, "attention");
  if (!reserve(groupSize(batch), false))
    return;
  const int64_t H = dims.heads, n = dims.seqLen, dqk = dims.qkDim,
                dv = dims.vDim;
  auto half = [&](size_t i) { return reinterpret_cast<void *>(halves[i].get()); };
  forEachGroup(batch, [&](int64_t bh0, int64_t count, int64_t entries,
                          int64_t heads, int64_t at) {
    backend.pack(half(0), q + at * dqk, entries, heads, H, n, 0, n, dqk, D);
    backend.pack(half(1), k + at * dqk, entries, heads, H, n, 0, n, dqk, D);
    backend.pack(half(2), v + at * dv, entries, heads, H, n, 0, n, dv, D);
    if (backend.failed())
      return;
    // lse is [batch x heads, n]: the group's rows are consecutive.
    backend.record(plan.forward(layer, count, halves[0].get(),
                                halves[1].get(), halves[2].get(),
                                halves[3].get(), dev(lse + bh0 * n), scale(),
                                backend.getStream()));
    backend.unpack(o + at * dv, half(3), entries, heads, H, n, dv, D);
  });
}

void CudaTensorAttention::backward(int64_t layer, int64_t batch, const float *q,
                                   const float *k, const float *v,
                                   const float *o, const float *lse,
                                   const float *dO, float *dQ, float *dK,
                                   float *dV) {
  ProfileScope scope(backend.profiler, "attention backward");
  if (!reserve(groupSize(batch), true))
    return;
  const int64_t H = dims.heads, n = dims.seqLen, dqk = dims.qkDim,
                dv = dims.vDim;
  auto half = [&](size_t i) { return reinterpret_cast<void *>(halves[i].get()); };
  forEachGroup(batch, [&](int64_t bh0, int64_t count, int64_t entries,
                          int64_t heads, int64_t at) {
    backend.pack(half(0), q + at * dqk, entries, heads, H, n, 0, n, dqk, D);
    backend.pack(half(1), k + at * dqk, entries, heads, H, n, 0, n, dqk, D);
    backend.pack(half(2), v + at * dv, entries, heads, H, n, 0, n, dv, D);
    backend.pack(half(3), o + at * dv, entries, heads, H, n, 0, n, dv, D);
    backend.pack(half(4), dO + at * dv, entries, heads, H, n, 0, n, dv, D);
    if (backend.failed())
      return;
    backend.record(plan.backward(layer, count, halves[0].get(),
                                 halves[1].get(), halves[2].get(),
                                 halves[3].get(), dev(lse + bh0 * n),
                                 halves[4].get(), halves[5].get(),
                                 halves[6].get(), halves[7].get(), scale(),
                                 backend.getStream()));
    backend.unpack(dQ + at * dqk, half(5), entries, heads, H, n, dqk, D);
    backend.unpack(dK + at * dqk, half(6), entries, heads, H, n, dqk, D);
    backend.unpack(dV + at * dv, half(7), entries, heads, H, n, dv, D);
  });
}

void CudaTensorAttention::beginDecode(int64_t batch, int64_t layers) {
  decodeBatch = 0;
  kCache16.resize(layers);
  vCache16.resize(layers);
  const int64_t H = dims.heads, n = dims.seqLen;
  size_t cacheBytes = static_cast<size_t>(batch * H * n * D) * 2;
  for (int64_t l = 0; l < layers; ++l)
    if (!backend.reserve(kCache16[l], cacheBytes) ||
        !backend.reserve(vCache16[l], cacheBytes))
      return;
  if (!backend.reserve(decodeRows, static_cast<size_t>(2 * batch * H * D) * 2) ||
      !backend.reserve(decodeLse, static_cast<size_t>(batch * H) * 4))
    return;
  // The padding of q, k and v rows to D stays zero: nothing writes it.
  if (dims.qkDim < D || dims.vDim < D) {
    cuda::Stream stream = backend.getStream();
    for (int64_t l = 0; l < layers; ++l)
      for (cuda::DeviceBuffer *c : {&kCache16[l], &vCache16[l]})
        backend.record(cuda::fill32(c->get(), 0, cacheBytes / 4, stream));
    backend.record(cuda::fill32(decodeRows.get(), 0,
                                decodeRows.size() / 4, stream));
  }
  if (!backend.failed())
    decodeBatch = batch;
}

bool CudaTensorAttention::decodeInputs(int64_t layer, int64_t batch,
                                       const int32_t *position,
                                       HalfRows (&qkv)[3]) {
  if (layer < 0 || layer >= int64_t(kCache16.size()) || batch < 1 || batch > decodeBatch)
    return false;
  const int64_t H = dims.heads, n = dims.seqLen;
  auto ptr = [](cuda::DevicePtr p) { return reinterpret_cast<void *>(p); };
  qkv[0] = {ptr(decodeRows.get()), H, dims.qkDim, D, 1, nullptr};
  qkv[1] = {ptr(kCache16[layer].get()), H, dims.qkDim, D, n, position};
  qkv[2] = {ptr(vCache16[layer].get()), H, dims.vDim, D, n, position};
  return true;
}

void CudaTensorAttention::decode(int64_t layer, int64_t batch,
                                 const int32_t *position, const float *q,
                                 const float *k, const float *v, float *o) {
  ProfileScope scope(backend.profiler, "attention decode");
  if (layer >= int64_t(kCache16.size()) || batch < 1 || batch > decodeBatch)
    return backend.record(backendError(
        "attention decode before beginDecode (or with a larger batch)"));
  const int64_t H = dims.heads, n = dims.seqLen;
  cuda::DevicePtr q16 = decodeRows.get(),
                  o16 = decodeRows.get() + static_cast<size_t>(batch * H * D) * 2;
  // fp32 rows: the new k and v rows into the caches and q to 16 bits (else
  // the projections wrote them there, decodeInputs).
  if (q || k || v) {
    HalfRows in[3];
    decodeInputs(layer, batch, position, in);
    backend.rowsToHalf(in[0], q, batch, H * dims.qkDim);
    backend.rowsToHalf(in[1], k, batch, H * dims.qkDim);
    backend.rowsToHalf(in[2], v, batch, H * dims.vDim);
  }
  if (backend.failed())
    return;
  // The merge writes o ([batch, heads, vDim] fp32) itself: no unpack.
  backend.record(plan.decodeAt(layer, batch * H, dev(position), q16,
                               kCache16[layer].get(), vCache16[layer].get(), n,
                               o16, decodeLse.get(), scale(),
                               backend.getStream(), dev(o), dims.vDim));
}

//===----------------------------------------------------------------------===//
// Decoding's step as one persistent kernel (kernels/decode_step.cuh)
//===----------------------------------------------------------------------===//

CudaTensorAttention::CudaTensorAttention(CudaBackend &backend,
                                         const AttentionDims &dims,
                                         AttentionPlan plan, int64_t headDim,
                                         int64_t groupBytes)
    : backend(backend), dims(dims), plan(std::move(plan)), D(headDim),
      groupBytes(groupBytes) {
  for (const codegen::MaskKernels &mask : this->plan.getGenerated().masks)
    perHeadMasks |= mask.head.has_value();
  backend.tensorAttentions.push_back(this);
  this->plan.setOverlapLaunches(backend.overlapLaunches);
}

CudaTensorAttention::~CudaTensorAttention() {
  llvm::erase(backend.tensorAttentions, this);
}

/// Mirrors of decode_step.cuh's structs (same field order and sizes).
struct StepLayerArgs {
  const float *ln1W, *ln1B, *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo, *ln2W,
      *ln2B, *w1, *b1, *w2, *b2;
  cuda::DevicePtr kCache, vCache, q16, oParts, lseParts;
  int64_t workBegin, workEnd, numParts;
};
static_assert(sizeof(StepLayerArgs) == 24 * 8, "StepLayer must match the kernel");
struct StepWorkArgs {
  cuda::DevicePtr queryBlockAt;
  int32_t kernelId, rowGroups, splits, partBase, headsPerLaunch, head;
};
static_assert(sizeof(StepWorkArgs) == 32, "StepWork must match the kernel");
struct StepArgs {
  int64_t S, d, dqk, ff, H, D, n, vocab, layers;
  const int32_t *ids;
  const float *tokTable, *posTable;
  cuda::DevicePtr layer, work;
  const float *lnfW, *lnfB, *wout, *bout;
  float *x, *g, *logits, *attn;
  cuda::DevicePtr tickets, barrier, tables, timing;
  float eps, scale;
  int32_t bf16, pad;
};
static_assert(sizeof(StepArgs) == 9 * 8 + 17 * 8 + 16,
              "Step must match the kernel");

/// The kernel's limits (decode_step.cuh): sequences per step, threads per
/// CTA, a linear item's weights in shared memory (all k rows of at least 8
/// columns: k <= 2048); CTAs per SM at most (more only add arrivals at every
/// barrier).
constexpr int64_t kStepMaxRows = 8, kStepThreads = 128,
                  kStepWeightBytes = 64 * 1024, kStepMaxK = 2048,
                  kStepMaxCtasPerSM = 2;

class CudaDecodeStep final : public Backend::DecodeStep {
public:
  CudaDecodeStep(CudaBackend &backend) : backend(backend) {}
  ~CudaDecodeStep() override { printProfile(); }
  void run() override {
    if (backend.failed())
      return;
    // The barrier counts arrivals from zero in every launch.
    backend.record(cuda::fill32(barrier.get(), 0, 2, backend.getStream()));
    if (backend.failed())
      return;
    void *argv[] = {&args};
    backend.record(cuda::launchCooperative(fn, {grid, 1, 1},
                                           {unsigned(kStepThreads), 1, 1},
                                           sharedBytes, backend.getStream(),
                                           argv));
    if (args.timing)
      collectProfile();
  }
  /// Barriers of one step: 5 per layer and the output's.
  int64_t barriers() const { return 5 * args.layers + 1; }
  /// SPARSETX_PROFILE=1: CTA 0's time between leaving consecutive barriers,
  /// i.e. each phase with the wait for the slowest CTA, summed per kind.
  void collectProfile() {
    std::vector<uint64_t> t(size_t(barriers() + 2));
    if (backend.failed())
      return;
    backend.record(cuda::synchronizeStream(backend.getStream()));
    if (backend.failed())
      return;
    backend.record(cuda::copyToHost(t.data(), args.timing, t.size() * 8));
    if (backend.failed())
      return;
    static const char *const kinds[] = {"q/k/v (LN1)", "attention", "Wo",
                                        "W1 (LN2, GELU)", "W2"};
    phaseNs["embedding + launch"] += double(t[1] - t[0]);
    for (int64_t b = 1; b <= barriers(); ++b) {
      const char *kind =
          b == barriers() ? "logits (LNf)" : kinds[(b - 1) % 5];
      phaseNs[kind] += double(t[size_t(b + 1)] - t[size_t(b)]);
    }
    ++profiledSteps;
  }
  void printProfile() {
    if (!profiledSteps)
      return;
    double all = 0;
    for (auto &[kind, ns] : phaseNs)
      all += ns;
    llvm::errs() << llvm::formatv("fused decoding step: {0} steps, {1:f1} us "
                                  "per step (CTA 0's clock)\n",
                                  profiledSteps, all / profiledSteps / 1e3);
    for (auto &[kind, ns] : phaseNs)
      llvm::errs() << llvm::formatv("  {0,-20} {1,8:f1} us/step {2,6:f1}%\n",
                                    kind, ns / profiledSteps / 1e3,
                                    100.0 * ns / all);
  }
  std::string description() const override {
    return llvm::formatv("one persistent kernel per step: {0} CTAs of {1} "
                         "threads, {2} barriers",
                         grid, kStepThreads, barriers());
  }

  CudaBackend &backend;
  cuda::Module module;
  cuda::Function fn = nullptr;
  unsigned grid = 0, sharedBytes = 0;
  StepArgs args{};
  cuda::DeviceBuffer layerTable, workTable, q16, parts, hidden, attn, tickets,
      barrier, timing;
  std::map<std::string, double> phaseNs;
  int64_t profiledSteps = 0;
};

llvm::Expected<std::unique_ptr<Backend::DecodeStep>>
CudaTensorAttention::createDecodeStep(const Backend::DecodeModel &m) {
  const int64_t S = m.batch, H = dims.heads, n = dims.seqLen,
                layers = int64_t(m.layers.size());
  // What the kernel takes (else the ops serve it): a few sequences, widths
  // within its items, weights it can copy 16 bytes at a time.
  auto aligned = [](const float *w) {
    return reinterpret_cast<uintptr_t>(w) % 16 == 0;
  };
  bool fits = S >= 1 && S <= kStepMaxRows && m.heads == H && m.seqLen == n &&
              int64_t(kCache16.size()) >= layers && m.dModel % H == 0 &&
              m.qkDim % H == 0 && std::max(m.dModel, m.ffDim) <= kStepMaxK &&
              m.dModel % 4 == 0 && m.qkDim % 4 == 0 && m.ffDim % 4 == 0 &&
              m.vocab % 4 == 0 && aligned(m.wout);
  for (const Backend::DecodeLayer &w : m.layers)
    fits = fits && aligned(w.wq) && aligned(w.wk) && aligned(w.wv) &&
           aligned(w.wo) && aligned(w.w1) && aligned(w.w2);
  if (!fits)
    return nullptr;
  auto step = std::make_unique<CudaDecodeStep>(backend);

  llvm::Expected<std::string> ptx = compileDecodeStepKernel(plan.getGenerated());
  if (!ptx)
    return ptx.takeError();
  llvm::Expected<cuda::Module> module = cuda::Module::load(*ptx);
  if (!module)
    return module.takeError();
  step->module = std::move(*module);
  llvm::Expected<cuda::Function> fn = step->module.getFunction("sp_decode_step");
  if (!fn)
    return fn.takeError();
  step->fn = *fn;

  // As many CTAs as are resident at once (what a cooperative launch needs),
  // at most kStepMaxCtasPerSM per SM.
  step->sharedBytes =
      unsigned(kStepWeightBytes + S * std::max(m.dModel, m.ffDim) * 4);
  if (step->sharedBytes > 48 * 1024)
    if (llvm::Error e = cuda::setMaxDynamicSharedMemory(step->fn,
                                                        int(step->sharedBytes)))
      return std::move(e);
  llvm::Expected<int> perSM = cuda::maxActiveBlocksPerSM(
      step->fn, int(kStepThreads), step->sharedBytes);
  if (!perSM)
    return perSM.takeError();
  if (*perSM < 1)
    return backendError("the decoding step kernel does not fit on an SM");
  const int64_t grid =
      int64_t(std::min<int64_t>(*perSM, kStepMaxCtasPerSM)) * backend.getNumSMs();
  step->grid = unsigned(grid);

  // The attention's work per layer, its parts (O = 0, LSE = -inf where no
  // item writes) and 16-bit query rows (zero padding past the head's dims).
  const int64_t BH = S * H;
  std::vector<StepWorkArgs> work;
  std::vector<int64_t> layerParts(layers), workBegin(layers), workEnd(layers);
  int64_t totalParts = 0;
  for (int64_t l = 0; l < layers; ++l) {
    int64_t numParts = 0;
    llvm::Expected<std::vector<AttentionPlan::DecodeWork>> w =
        plan.decodeWork(l, BH, grid, numParts);
    if (!w)
      return w.takeError();
    workBegin[l] = int64_t(work.size());
    for (const AttentionPlan::DecodeWork &item : *w)
      work.push_back({item.queryBlockAt, item.kernelId, int32_t(item.rowGroups),
                      item.splits, item.partBase, item.headsPerLaunch,
                      item.head});
    workEnd[l] = int64_t(work.size());
    layerParts[l] = numParts;
    totalParts += numParts;
  }
  const int64_t qkHead = m.qkDim / H, vHead = m.dModel / H;
  size_t partFloats = size_t(std::max<int64_t>(1, totalParts)) * BH * D;
  size_t lseFloats = size_t(std::max<int64_t>(1, totalParts)) * BH;
  if (!backend.reserve(step->parts, (partFloats + lseFloats) * 4) ||
      !backend.reserve(step->q16, size_t(layers * BH * D) * 2))
    return backend.takeError();
  if (llvm::Error e = cuda::fill32(step->parts.get(), 0, partFloats,
                                   backend.getStream()))
    return std::move(e);
  if (llvm::Error e = cuda::fill32(step->parts.get() + partFloats * 4,
                                   0xff800000u, lseFloats, backend.getStream()))
    return std::move(e);
  if (llvm::Error e = step->q16.fill(0))
    return std::move(e);
  // The caches' padding past a head's dims is never written by the step.
  if (qkHead < D || vHead < D)
    for (int64_t l = 0; l < layers; ++l) {
      if (llvm::Error e = kCache16[l].fill(0))
        return std::move(e);
      if (llvm::Error e = vCache16[l].fill(0))
        return std::move(e);
    }

  std::vector<StepLayerArgs> layerArgs(layers);
  int64_t partOffset = 0;
  for (int64_t l = 0; l < layers; ++l) {
    const Backend::DecodeLayer &w = m.layers[l];
    StepLayerArgs &a = layerArgs[l];
    a = {w.ln1W, w.ln1B, w.wq, w.bq, w.wk, w.bk, w.wv, w.bv, w.wo, w.bo, w.ln2W,
         w.ln2B, w.w1, w.b1, w.w2, w.b2};
    a.kCache = kCache16[l].get();
    a.vCache = vCache16[l].get();
    a.q16 = step->q16.get() + size_t(l * BH * D) * 2;
    a.oParts = step->parts.get() + size_t(partOffset * BH * D) * 4;
    a.lseParts = step->parts.get() + (partFloats + size_t(partOffset * BH)) * 4;
    a.workBegin = workBegin[l];
    a.workEnd = workEnd[l];
    a.numParts = layerParts[l];
    partOffset += layerParts[l];
  }

  if (!backend.reserve(step->attn, size_t(S * m.dModel) * 4) ||
      !backend.reserve(step->tickets, size_t(BH) * 4) ||
      !backend.reserve(step->barrier, 8) ||
      !backend.reserve(step->hidden, size_t(S * m.ffDim) * 4) ||
      !backend.reserve(step->layerTable, layerArgs.size() * sizeof(StepLayerArgs)) ||
      !backend.reserve(step->workTable,
                       std::max<size_t>(1, work.size()) * sizeof(StepWorkArgs)))
    return backend.takeError();
  if (llvm::Error e = step->tickets.fill(0))
    return std::move(e);
  if (llvm::Error e = step->layerTable.copyFromHost(
          layerArgs.data(), layerArgs.size() * sizeof(StepLayerArgs)))
    return std::move(e);
  if (!work.empty())
    if (llvm::Error e = step->workTable.copyFromHost(
            work.data(), work.size() * sizeof(StepWorkArgs)))
      return std::move(e);

  StepArgs &a = step->args;
  a.S = S;
  a.d = m.dModel;
  a.dqk = m.qkDim;
  a.ff = m.ffDim;
  a.H = H;
  a.D = D;
  a.n = n;
  a.vocab = m.vocab;
  a.layers = layers;
  a.ids = m.ids;
  a.tokTable = m.tokTable;
  a.posTable = m.posTable;
  a.layer = step->layerTable.get();
  a.work = step->workTable.get();
  a.lnfW = m.lnfW;
  a.lnfB = m.lnfB;
  a.wout = m.wout;
  a.bout = m.bout;
  a.x = m.x;
  a.g = reinterpret_cast<float *>(step->hidden.get());
  a.logits = m.logits;
  a.attn = reinterpret_cast<float *>(step->attn.get());
  a.tickets = step->tickets.get();
  a.barrier = step->barrier.get();
  a.tables = plan.getTables();
  a.eps = cpu::kLayerNormEps;
  a.scale = float(scale());
  a.bf16 = backend.precision() == Precision::BF16 ? 1 : 0;
  if (backend.profiler.enabled()) {
    if (!backend.reserve(step->timing, size_t(step->barriers() + 2) * 8))
      return backend.takeError();
    a.timing = step->timing.get();
  }
  // The tables and fills above went through the default stream or this
  // one: everything is in place before the first step.
  if (llvm::Error e = cuda::synchronizeStream(backend.getStream()))
    return std::move(e);
  return std::unique_ptr<Backend::DecodeStep>(std::move(step));
}

llvm::Expected<std::unique_ptr<Backend::DecodeStep>>
CudaBackend::createDecodeStep(AttentionOp &attention, const DecodeModel &model) {
  if (!fusedDecodeEnabled || failed())
    return nullptr;
  for (CudaTensorAttention *op : tensorAttentions)
    if (op == &attention)
      return op->createDecodeStep(model);
  return nullptr; // the exact fp32 attention: the ops serve it
}

} // namespace

llvm::Expected<CudaEnvironment> sparsetx::model::readCudaEnvironment() {
  CudaEnvironment env;
  auto flag = [](const char *name, bool &out) -> llvm::Error {
    if (const char *v = std::getenv(name)) {
      llvm::StringRef value(v);
      if (value != "0" && value != "1")
        return backendError(llvm::Twine(name) + " must be 0 or 1, got '" +
                            value + "'");
      out = value == "1";
    }
    return llvm::Error::success();
  };
  if (llvm::Error e = flag("SPARSETX_PROFILE", env.profile))
    return std::move(e);
  if (llvm::Error e = flag("SPARSETX_CUDA_GRAPHS", env.graphs))
    return std::move(e);
  if (llvm::Error e = flag("SPARSETX_FUSED_DECODE", env.fusedDecode))
    return std::move(e);
  if (llvm::Error e = flag("SPARSETX_OVERLAP_LAUNCHES", env.overlapLaunches))
    return std::move(e);
  if (llvm::Error e = flag("SPARSETX_LINEAR_CHAIN", env.linearChain))
    return std::move(e);
  if (llvm::Error e = flag("SPARSETX_WGMMA_FORWARD", env.wgmmaForward))
    return std::move(e);
  if (llvm::Error e = flag("SPARSETX_WGMMA_BACKWARD", env.wgmmaBackward))
    return std::move(e);
  if (const char *g = std::getenv("SPARSETX_BF16_GEMM")) {
    llvm::StringRef mode(g);
    if (mode != "convert" && mode != "fast" && mode != "tf32")
      return backendError("SPARSETX_BF16_GEMM must be convert, fast or tf32, "
                          "got '" + mode + "'");
    env.bf16Gemm = mode.str();
  }
  return env;
}

llvm::Expected<std::string>
sparsetx::model::compileCudaBackendKernels(llvm::StringRef arch) {
  nvrtc::CompileOptions compile;
  compile.arch = arch.str();
  compile.flags = {"-std=c++17"};
  return nvrtc::compileToPTX("#include \"sparsetx/model_ops.cuh\"\n",
                             "model_ops.cu", compile, modelKernelHeaders());
}

llvm::Expected<std::string> sparsetx::model::compileDecodeStepKernel(
    const codegen::GeneratedAttention &gen) {
  // The pattern's generated source (its decodeRow) and the step kernel, in
  // one NVRTC compilation (cached on disk like every other).
  std::string source = "#define SPARSETX_DECODE_LOAD \"ld.global.cg\"\n" +
                       gen.source +
                       "\n#include \"sparsetx/decode_step.cuh\"\n";
  std::vector<std::pair<std::string, std::string>> headers =
      codegen::kernelHeaders();
  llvm::append_range(headers, modelKernelHeaders());
  nvrtc::CompileOptions compile;
  compile.arch = gen.arch;
  compile.flags = codegen::nvrtcFlags();
  return nvrtc::compileToPTX(source, gen.pattern + "_decode_step.cu", compile,
                             headers);
}

llvm::Expected<std::unique_ptr<Backend>>
sparsetx::model::createCudaBackend(const CudaBackendOptions &options) {
  llvm::Expected<std::unique_ptr<CudaBackend>> backend =
      CudaBackend::create(options);
  if (!backend)
    return backend.takeError();
  return std::unique_ptr<Backend>(std::move(*backend));
}
