//===- Trainer.h - training, evaluation and sampling of a model -*- C++ -*-===//
//
// The loop around a Transformer: batches drawn from a Dataset by a counter-
// based generator of (seed, step), AdamW with the warmup-cosine schedule and
// gradient clipping, evaluation in bits per byte / per dim, checkpoints that
// resume exactly, and autoregressive sampling with the KV cache.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_MODEL_TRAINER_H
#define SPARSETX_MODEL_TRAINER_H

#include "sparsetx/Model/Checkpoint.h"
#include "sparsetx/Model/Transformer.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace sparsetx::model {

/// Inputs and targets of the sequences `examples` of `split`: input t is
/// the byte before target t (the start token at t = 0).
llvm::Error makeBatch(const data::Dataset &data, data::Split split,
                      llvm::ArrayRef<int64_t> examples, int64_t seqLen,
                      std::vector<int32_t> &inputs,
                      std::vector<int32_t> &targets);

/// The training example of batch entry `b` at 1-based step `step`.
int64_t trainingExample(uint64_t seed, int64_t step, int64_t b,
                        int64_t numExamples);

/// The other ranks of a data-parallel run, as the trainer sees them (one
/// process per GPU, each with a replica of the model; Distributed.h has the
/// NCCL implementation). Every rank makes the same calls in the same order.
class DataParallel {
public:
  virtual ~DataParallel();
  virtual int rank() const = 0;
  virtual int worldSize() const = 0;
  /// The gradients' all-reduce, bucket by bucket during the backward
  /// (GradientReducer.h): starts replacing the n elements of `type` (fp32,
  /// bf16 or fp16) at `data` (backend memory) by their sum over the ranks,
  /// or their mean with `mean`, once the backend's queued work is done, and
  /// returns without waiting (on the GPU the all-reduce runs on a stream of
  /// its own, ordered after the backend's by an event, so the backward goes
  /// on meanwhile). finishAllReduces() waits for every one started.
  virtual llvm::Error startAllReduce(void *data, int64_t n, Precision type,
                                     bool mean) = 0;
  virtual llvm::Error finishAllReduces() = 0;
  /// `data` (backend memory, n floats) := rank 0's.
  virtual llvm::Error broadcastFloats(float *data, int64_t n) = 0;
  /// Host values := their sums over the ranks.
  virtual llvm::Error sumDoubles(llvm::MutableArrayRef<double> values) = 0;
  /// Whether every rank passed the same value.
  virtual llvm::Expected<bool> sameOnAllRanks(uint64_t value) = 0;
};

/// How a data-parallel run averages its gradients (sparsetx-run's
/// --allreduce and --bucket-mb).
struct GradientSync {
  static constexpr int64_t kDefaultBucketBytes = int64_t(25) << 20;
  /// The all-reduce's element type; unset: the backend's precision (bf16
  /// for bf16, fp16 for fp16, whose loss scaling then guards the all-reduce
  /// too, fp32 for fp32). With one rank the gradients stay fp32 whatever is
  /// asked: a sum of one term needs no rounding, so a 1-rank run equals a
  /// 1-GPU run.
  std::optional<Precision> type;
  /// The most bytes (of the all-reduced type) per bucket; 0: one all-reduce
  /// of every gradient after the whole backward (no overlap).
  int64_t bucketBytes = kDefaultBucketBytes;
};

class GradientReducer;

struct StepResult {
  double loss = 0;     ///< mean over the batch, nats per token
  double gradNorm = 0; ///< before clipping (inf when skipped)
  double lr = 0;
  /// fp16: the gradients overflowed at this loss scale, so the parameters
  /// were left as they were and the scale halved.
  bool skipped = false;
  double lossScale = 1;
};

struct EvalResult {
  /// Mean over the evaluated tokens, in bits (per byte for text and audio,
  /// per dim for images).
  double bits = 0;
  int64_t tokens = 0;
};

class Trainer {
public:
  Trainer(Transformer &model, const TrainConfig &config,
          const data::Dataset &data);
  ~Trainer();

  int64_t getStep() const { return step; }
  const TrainConfig &getConfig() const { return config; }

  /// Data parallelism: the global batch (config.batch, which must divide
  /// by the world size) is split over the ranks, rank r taking entries
  /// [r B/N, (r+1) B/N) of each step's examples; the gradients are averaged
  /// over the ranks as `sync` says, in buckets started during the backward
  /// and all waited for before clipping, and the loss reported is the mean
  /// over the ranks. The model must take batches of B/N. Null (the
  /// default): one process does everything.
  llvm::Error setDataParallel(DataParallel *parallel,
                              const GradientSync &sync = {});
  DataParallel *getDataParallel() const { return parallel; }
  /// The buckets and the all-reduce's type (null without data parallelism).
  const GradientReducer *getGradientReducer() const { return reducer.get(); }
  /// The batch entries this rank computes per step.
  int64_t localBatch() const;

  /// One optimizer step on the next batch.
  llvm::Expected<StepResult> trainStep();

  /// Data parallelism: makes the parameters and the optimizer state rank
  /// 0's (at the start and after a restore), and checks that they still
  /// agree (a checksum of the parameters compared over the ranks; an error
  /// naming the step when they differ).
  llvm::Error broadcastState();
  llvm::Error checkReplicasAgree();

  /// Bits per byte/dim over `split`: consecutive windows of n bytes from the
  /// start (text, audio) or whole images, up to `maxTokens` tokens (0: all).
  llvm::Expected<EvalResult> evaluate(data::Split split, int64_t maxTokens);

  /// The state to save (an error if the backend failed since the last
  /// check: nothing broken gets saved), and restoring it (configurations
  /// must match).
  llvm::Expected<Checkpoint> snapshot(const PatternSource &pattern,
                                      const DataSpec &data) const;
  llvm::Error restore(const Checkpoint &checkpoint, llvm::StringRef path);

private:
  Transformer &model;
  TrainConfig config;
  const data::Dataset &data;
  DataParallel *parallel = nullptr;
  std::unique_ptr<GradientReducer> reducer;
  int64_t step = 0;
  /// fp16 loss scaling (the backend's precision decides whether it is on).
  double lossScale = 1;
  int64_t goodSteps = 0;
  Buffer adamM, adamV;
  std::vector<int32_t> inputs, targets;
};

struct SampleOptions {
  int64_t count = 4;
  /// Softmax temperature; 0 picks the most likely byte.
  double temperature = 1.0;
  /// Sample among the k most likely bytes (0: all 256).
  int64_t topK = 0;
  uint64_t seed = 1;
  /// Bytes every sample starts with (text); they are fed, not sampled.
  std::vector<uint8_t> prompt;
  /// Total length of each sample including the prompt (<= n; 0: n).
  int64_t length = 0;
  /// Pick every next token on the host even where the backend can pick
  /// them itself (Transformer::decodeAndPick; the same picks).
  bool pickOnHost = false;
};

/// The byte sampled from `logits` [256] for sample number `sample` at
/// `position` (the temperature, topK and seed of `options`): the most likely
/// where temperature <= 0, else a draw among the topK most likely (0: all)
/// by softmax(logits / temperature), its uniform number hashed from (seed,
/// sample, position). Backend::pickTokens computes the same on a device.
uint8_t pickByte(const float *logits, const SampleOptions &options,
                 uint64_t sample, int64_t position);

/// Samples `count` sequences autoregressively (in batches of at most the
/// model's batch). Deterministic in the seed.
llvm::Expected<std::vector<std::vector<uint8_t>>>
sample(Transformer &model, const SampleOptions &options);

/// Writes samples as what they are: text (one file, samples separated by
/// rules), images (one PNG grid), audio (one 16-bit WAV per sample). Returns
/// the files written.
llvm::Expected<std::vector<std::string>>
writeSamples(const std::vector<std::vector<uint8_t>> &samples,
             const DataSpec &data, llvm::StringRef outDir);

/// A loss-curve picture: training loss (and validation, when given) in bits
/// against the step, with labelled axes. Written atomically.
struct CurvePoint {
  int64_t step;
  double value;
};
llvm::Error writeLossCurve(llvm::StringRef path, llvm::StringRef title,
                           llvm::ArrayRef<CurvePoint> train,
                           llvm::ArrayRef<CurvePoint> valid);

} // namespace sparsetx::model

#endif // SPARSETX_MODEL_TRAINER_H
