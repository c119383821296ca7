//===- GradientReducer.h - the gradients' all-reduce, in buckets -*- C++ -*-===//
//
// Data parallelism averages the gradients over the ranks after every
// backward. Waiting for the whole backward and then reducing everything at
// once leaves the network idle during the backward and the GPU idle during
// the all-reduce; instead the gradients go in buckets as soon as they are
// final: backward runs from the top block down and a block's weights serve
// only that block, so block l's gradients are final once its backward is
// enqueued (Transformer::gradientGroups, GradientHook). Consecutive blocks
// share a bucket up to a size (fewer, larger all-reduces run closer to the
// link's bandwidth); the embeddings and the output, final only at the end,
// go last.
//
// In fp32 the all-reduce averages the gradients in place. In bf16 or fp16
// (the paper averages half-precision gradients: half the bytes) each bucket
// is first converted into a 16-bit copy already divided by the world size,
// so that the sum of the ranks' shares stays within fp16's range whenever
// every share does, and the sum is widened back into the fp32 gradients at
// the end. An fp32 gradient beyond fp16's range becomes inf in the copy,
// and every rank's sum with it: the trainer's overflow check then skips the
// step on every rank, as fp16 loss scaling expects.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_MODEL_GRADIENTREDUCER_H
#define SPARSETX_MODEL_GRADIENTREDUCER_H

#include "sparsetx/Model/Trainer.h"

#include <memory>
#include <vector>

namespace sparsetx::model {

/// Gradient groups that go to the ranks together, once group `lastGroup`
/// (and so every group before it) is final.
struct GradientBucket {
  int64_t firstGroup = 0, lastGroup = 0;
  /// Ascending, adjacent ranges merged.
  std::vector<GradRange> ranges;
  int64_t count() const;
};

/// Consecutive groups (in the order backward finalizes them) into buckets of
/// at most `capElements` gradients each; a group larger than that is a
/// bucket of its own, and capElements <= 0 makes one bucket of everything
/// (reduced after the whole backward: no overlap).
std::vector<GradientBucket>
planGradientBuckets(llvm::ArrayRef<std::vector<GradRange>> groups,
                    int64_t capElements);

/// Drives the buckets of one model's gradients through a DataParallel: the
/// model calls gradientsReady() during backward (set it as the model's
/// GradientHook), the trainer calls finish() after, which leaves the mean
/// over the ranks in the gradients.
class GradientReducer final : public GradientHook {
public:
  /// `grads`: the flat gradient buffer (backend memory) of `total` floats;
  /// the buckets must cover it exactly (an error says where not). `type`:
  /// the all-reduce's element type.
  static llvm::Expected<std::unique_ptr<GradientReducer>>
  create(Backend &backend, DataParallel &parallel, float *grads, int64_t total,
         std::vector<GradientBucket> buckets, Precision type);

  llvm::Error gradientsReady(int64_t group) override;
  /// Waits for every bucket (all must have been started).
  llvm::Error finish();

  Precision getType() const { return type; }
  const std::vector<GradientBucket> &getBuckets() const { return buckets; }

private:
  GradientReducer(Backend &backend, DataParallel &parallel, float *grads,
                  int64_t total, std::vector<GradientBucket> buckets,
                  Precision type)
      : backend(backend), parallel(parallel), grads(grads), total(total),
        buckets(std::move(buckets)), type(type) {}
  llvm::Error start(const GradientBucket &bucket);
  uint16_t *half() const { return static_cast<uint16_t *>(halfBuf.data()); }

  Backend &backend;
  DataParallel &parallel;
  float *grads;
  int64_t total;
  std::vector<GradientBucket> buckets;
  Precision type;
  /// The 16-bit copy, laid out as the gradients (bf16, fp16).
  Buffer halfBuf;
  int64_t nextGroup = 0;
  size_t nextBucket = 0;
};

} // namespace sparsetx::model

#endif // SPARSETX_MODEL_GRADIENTREDUCER_H
