//===- Transformer.h - the Sparse Transformer over a backend ----*- C++ -*-===//
//
// The model of the paper's section 5, written once over the Backend
// interface:
//   x_0     = token embedding + positional embeddings (data embeddings for
//             images, attention embeddings for text and audio)
//   h       = x_l + dropout(attention(norm(x_l)))          (pre-activation
//   x_{l+1} = h   + dropout(ff(norm(h)))                     residual blocks)
//   logits  = norm(x_L) W_out + b_out
// with the attention of block l given by the pattern (merged, per-head, or
// interleaved by layer), FF = W2 gelu(W1 x) with gelu(x) = x sigmoid(1.702 x),
// the paper's initialization (section 6), dropout only at the end of the
// residual additions, and optional recomputation (only each block's input is
// kept; attention and FF are recomputed in backward).
//
// Parameters live in one flat buffer (gradients in another of the same
// layout) so that the optimizer and gradient clipping are single calls: the
// weight matrices first (decayed), then embeddings, biases and gains.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_MODEL_TRANSFORMER_H
#define SPARSETX_MODEL_TRANSFORMER_H

#include "sparsetx/Model/Backend.h"
#include "sparsetx/Model/Config.h"
#include "sparsetx/Model/Pattern.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <memory>
#include <string>
#include <vector>

namespace sparsetx::model {

/// One named parameter tensor inside the flat buffer.
struct ParamInfo {
  std::string name;
  int64_t offset = 0;
  int64_t rows = 0, cols = 0;
  /// Initialization standard deviation (0: zeros, or ones for gains).
  double initStd = 0;
  bool isGain = false;
  /// The residual block it belongs to; -1 for the embeddings and the output
  /// (final layer norm and logits).
  int64_t layer = -1;
  int64_t count() const { return rows * cols; }
};

/// Elements [offset, offset + count) of the flat parameter (or gradient)
/// buffer.
struct GradRange {
  int64_t offset = 0, count = 0;
  int64_t end() const { return offset + count; }
  bool operator==(const GradRange &o) const {
    return offset == o.offset && count == o.count;
  }
};

/// Told during backward when gradients are final (data parallelism starts
/// their all-reduce while the backward goes on: GradientReducer.h).
class GradientHook {
public:
  virtual ~GradientHook();
  /// The gradients of group `group` of Transformer::gradientGroups() are
  /// final: the backend's queued work writes them no more. Called for the
  /// groups 0, 1, ... in order, once per training run(); an error stops the
  /// run.
  virtual llvm::Error gradientsReady(int64_t group) = 0;
};

class Transformer {
public:
  /// Recomputation computes the FF branch over chunks of rows when its
  /// intermediate [rows, ffDim] exceeds this many floats (256 MiB).
  static constexpr int64_t kFeedForwardChunkElements = int64_t(1) << 26;

  /// A model for batches of up to `maxBatch` sequences of config.seqLen.
  /// `pattern` must be compiled for config.seqLen and config.numHeads and
  /// outlive the model.
  static llvm::Expected<std::unique_ptr<Transformer>>
  create(Backend &backend, const ModelConfig &config,
         const AttentionPattern &pattern, int64_t maxBatch);
  ~Transformer();

  const ModelConfig &getConfig() const { return config; }
  Backend &getBackend() const { return backend; }
  int64_t getMaxBatch() const { return maxBatch; }

  int64_t numParams() const { return totalParams; }
  /// Parameters [0, numDecayed()) are the weight matrices (weight decay).
  int64_t numDecayed() const { return decayedParams; }
  const std::vector<ParamInfo> &getParamInfo() const { return paramInfo; }
  /// The flat parameter and gradient buffers (backend memory).
  float *params() const { return paramBuf.f32(); }
  float *grads() const { return gradBuf.f32(); }

  /// The parameters by when backward finalizes their gradients: group g <
  /// numLayers is residual block numLayers-1-g (backward runs from the top,
  /// and a block's weights serve only that block), each as its ranges of
  /// the flat buffer (the weight matrices, then the biases and gains: two
  /// ranges); the last group is everything else (the output's matrix and
  /// bias, the final layer norm and the embeddings), final at the end.
  /// Together the groups cover every parameter once.
  std::vector<std::vector<GradRange>> gradientGroups() const;
  /// Called during training runs' backward (null: nobody; the default).
  void setGradientHook(GradientHook *hook) { gradientHook = hook; }

  /// The paper's initialization: weights N(0, 0.125 / sqrt(fan_in)), the
  /// attention output and second FF matrices further scaled by
  /// 1 / sqrt(2 * layers), embeddings N(0, 0.125 / sqrt(d)), the output
  /// logits' matrix, biases zero, gains one. Deterministic in `seed`.
  void initialize(uint64_t seed);

  /// Runs `batch` sequences: inputs[b * n + t] is the token at position t
  /// (kStartToken or a byte), targets[b * n + t] the byte to predict there.
  /// With `train`, also backward: grads() is overwritten with the gradient of
  /// the mean loss. Dropout (train only) is a function of `dropoutSeed`.
  /// Returns the mean loss in nats; per-token losses into `tokenLosses` if
  /// given. An out-of-range token is an error naming its batch and position.
  /// The gradients are of lossScale times the mean loss (fp16 loss scaling).
  llvm::Expected<double> run(llvm::ArrayRef<int32_t> inputs,
                             llvm::ArrayRef<int32_t> targets, int64_t batch,
                             bool train, uint64_t dropoutSeed = 0,
                             std::vector<float> *tokenLosses = nullptr,
                             float lossScale = 1.0f);

  /// With recomputation, the FF branch runs over chunks of this many rows
  /// (of batch x seqLen) where its intermediate would exceed 256 MiB; this
  /// lowers the chunk (tests; never above what was allocated).
  void setFeedForwardChunkRows(int64_t rows);
  int64_t getFeedForwardChunkRows() const { return ffChunkRows; }

  /// Incremental decoding with a KV cache: beginDecode(batch) resets the
  /// caches; decode(tokens, t) feeds tokens[b] at position t (t = 0, 1, ...
  /// in order) and returns the logits [batch, 256] of the byte at t.
  llvm::Error beginDecode(int64_t batch);
  llvm::Error decode(llvm::ArrayRef<int32_t> tokens, int64_t position,
                     std::vector<float> &logits);
  /// Sampling without the host in the loop, where the backend picks tokens
  /// (Backend::picksTokens): after beginDecode(batch), decodes positions
  /// 0..options.length-1 feeding the start token first, then prompt[t] or
  /// the backend's pick (Backend::pickTokens; options.firstSample numbers
  /// the batch's first sequence for the draws; promptLength is taken from
  /// `prompt`). samples[s] gets the length tokens fed after the start
  /// token: the prompt, then the picks. The host only enqueues work (one
  /// captured step + pick per token where the backend captures) and waits
  /// once at the end.
  llvm::Error decodeAndPick(Backend::PickOptions options,
                            llvm::ArrayRef<uint8_t> prompt,
                            std::vector<std::vector<uint8_t>> &samples);
  /// How decode runs its steps (the fused step's description, "the step's
  /// ops, captured and replayed" or "the step's ops"; "..., tokens picked
  /// by the backend" after decodeAndPick), after beginDecode.
  std::string decodeMethod() const;

private:
  struct Layer;
  struct Acts;
  Transformer(Backend &backend, const ModelConfig &config,
              const AttentionPattern &pattern, int64_t maxBatch);
  void layout();
  llvm::Error allocate();
  Layer layerParams(float *base, int64_t l) const;
  /// The positional embeddings' sum [n, d] into `out`.
  void embedPositions(float *out);
  /// Dropout (rate config.dropout, masks from `seed`) only when `train`.
  /// Without `feedForward`, stops after the FF branch's layer norm (what a
  /// chunked backward needs).
  void layerForward(int64_t l, int64_t batch, Acts &a, uint64_t seed,
                    bool train, bool feedForward = true);
  void layerBackward(int64_t l, int64_t batch, Acts &a, uint64_t seed);

  Backend &backend;
  ModelConfig config;
  const AttentionPattern &pattern;
  int64_t maxBatch;
  std::unique_ptr<AttentionOp> attention;

  std::vector<ParamInfo> paramInfo;
  int64_t totalParams = 0, decayedParams = 0;
  /// Offsets of the tensors, per layer and global.
  std::vector<std::vector<int64_t>> layerOffsets;
  int64_t offTok = 0, offRow = 0, offCol = 0, offChan = 0, offWout = 0,
          offBout = 0, offLnfW = 0, offLnfB = 0;
  int64_t rowTableSize = 0, colTableSize = 0, chanTableSize = 0;
  int64_t ffChunkRows = 0;

  Buffer paramBuf, gradBuf;
  GradientHook *gradientHook = nullptr;
  Buffer ids, targetIds, rowIds, colIds, chanIds;
  std::vector<Buffer> xs;
  std::vector<std::unique_ptr<Acts>> acts;
  Buffer lnf, meanf, rstdf, logits, losses;
  /// Where the final layer norm's output and the logits (then their
  /// gradient) live: lnf and logits, or dead activations (allocate()).
  float *lnfAt = nullptr, *logitsAt = nullptr;
  Buffer tmp, dx, dG;

  // Decoding (the KV caches live in the attention op).
  /// One step over decodeIds (tokens, then positions), logits into
  /// decodeLogits.
  void decodeStep();
  int64_t decodeBatch = 0, decodeNext = 0;
  std::unique_ptr<Acts> decodeActs;
  Buffer decodeX, decodeIds, decodePos, decodeLogits;
  /// The backend's packed copies of the weight matrices (packLinear), made
  /// by every beginDecode: per layer Wq, Wk, Wv, Wo, W1, W2, then Wout;
  /// empty where the backend keeps none.
  Buffer decodeWeights;
  std::vector<const void *> packedWeights;
  /// Packs the weights into decodeWeights (allocated once).
  void packDecodeWeights();
  /// The step captured by the backend (CUDA graph), replayed per token.
  std::unique_ptr<Backend::CapturedWork> decodeGraph;
  /// The backend's fused step (one persistent kernel), where it has one.
  std::unique_ptr<Backend::DecodeStep> decodeFused;
  /// decodeAndPick's buffers (history [maxBatch, n], prompt [n], options)
  /// and its captured step + pick.
  Buffer pickHistory, pickPrompt, pickOptions;
  std::unique_ptr<Backend::CapturedWork> sampleGraph;
  bool pickedOnBackend = false;
  /// The last step's linear layers ran as chains (fusedLinearChain).
  bool linearsChained = false;
};

} // namespace sparsetx::model

#endif // SPARSETX_MODEL_TRANSFORMER_H
