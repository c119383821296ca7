//===- GradientReducer.cpp - the gradients' all-reduce, in buckets --------===//

#include "sparsetx/Model/GradientReducer.h"

#include "llvm/Support/FormatVariadic.h"

#include <algorithm>

using namespace sparsetx;
using namespace sparsetx::model;

namespace {

llvm::Error reduceError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

} // namespace

int64_t GradientBucket::count() const {
  int64_t n = 0;
  for (const GradRange &r : ranges)
    n += r.count;
  return n;
}

std::vector<GradientBucket>
sparsetx::model::planGradientBuckets(
    llvm::ArrayRef<std::vector<GradRange>> groups, int64_t capElements) {
  std::vector<GradientBucket> buckets;
  int64_t filled = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    int64_t size = 0;
    for (const GradRange &r : groups[g])
      size += r.count;
    // A new bucket when this group would overflow the current one (a group
    // is never split: its gradients become final together).
    if (buckets.empty() || (capElements > 0 && filled > 0 &&
                            filled + size > capElements)) {
      buckets.emplace_back();
      buckets.back().firstGroup = static_cast<int64_t>(g);
      filled = 0;
    }
    GradientBucket &b = buckets.back();
    b.lastGroup = static_cast<int64_t>(g);
    b.ranges.insert(b.ranges.end(), groups[g].begin(), groups[g].end());
    filled += size;
  }
  for (GradientBucket &b : buckets) {
    std::sort(b.ranges.begin(), b.ranges.end(),
              [](const GradRange &x, const GradRange &y) {
                return x.offset < y.offset;
              });
    std::vector<GradRange> merged;
    for (const GradRange &r : b.ranges) {
      if (r.count == 0)
        continue;
      if (!merged.empty() && merged.back().end() == r.offset)
        merged.back().count += r.count;
      else
        merged.push_back(r);
    }
    b.ranges = std::move(merged);
  }
  return buckets;
}

llvm::Expected<std::unique_ptr<GradientReducer>>
GradientReducer::create(Backend &backend, DataParallel &parallel, float *grads,
                        int64_t total, std::vector<GradientBucket> buckets,
                        Precision type) {
  if (buckets.empty())
    return reduceError("no gradient buckets");
  // Every gradient in exactly one bucket, the buckets in group order.
  std::vector<GradRange> all;
  for (size_t b = 0; b < buckets.size(); ++b) {
    if (buckets[b].firstGroup > buckets[b].lastGroup ||
        (b > 0 && buckets[b].firstGroup != buckets[b - 1].lastGroup + 1) ||
        (b == 0 && buckets[b].firstGroup != 0))
      return reduceError(llvm::formatv(
          "gradient bucket {0} holds groups {1} to {2}, which do not follow "
          "the previous bucket's",
          b, buckets[b].firstGroup, buckets[b].lastGroup));
    all.insert(all.end(), buckets[b].ranges.begin(), buckets[b].ranges.end());
  }
  std::sort(all.begin(), all.end(), [](const GradRange &x, const GradRange &y) {
    return x.offset < y.offset;
  });
  int64_t covered = 0;
  for (const GradRange &r : all) {
    if (r.offset > covered)
      return reduceError(llvm::formatv(
          "the gradient buckets leave gradients {0} to {1} out", covered,
          r.offset - 1));
    if (r.offset < covered)
      return reduceError(llvm::formatv(
          "the gradient buckets hold gradient {0} twice", r.offset));
    covered = r.end();
  }
  if (covered != total)
    return reduceError(llvm::formatv(
        "the gradient buckets cover {0} gradients of {1}", covered, total));

  std::unique_ptr<GradientReducer> reducer(new GradientReducer(
      backend, parallel, grads, total, std::move(buckets), type));
  if (type != Precision::FP32) {
    reducer->halfBuf = backend.allocate(total * 2);
    if (llvm::Error e = backend.takeError())
      return std::move(e);
  }
  return std::move(reducer);
}

llvm::Error GradientReducer::gradientsReady(int64_t group) {
  if (group != nextGroup)
    return reduceError(llvm::formatv(
        "gradient group {0} was handed over when group {1} was due (the "
        "backward hands them over in order, once per step)",
        group, nextGroup));
  ++nextGroup;
  while (nextBucket < buckets.size() &&
         buckets[nextBucket].lastGroup == group)
    if (llvm::Error e = start(buckets[nextBucket++]))
      return e;
  return llvm::Error::success();
}

llvm::Error GradientReducer::start(const GradientBucket &bucket) {
  if (type == Precision::FP32) {
    for (const GradRange &r : bucket.ranges)
      if (llvm::Error e = parallel.startAllReduce(
              grads + r.offset, r.count, Precision::FP32, /*mean=*/true))
        return e;
    return llvm::Error::success();
  }
  // Each rank's share, so that the sum is the mean and fits where the
  // shares do.
  const float share = 1.0f / static_cast<float>(parallel.worldSize());
  for (const GradRange &r : bucket.ranges)
    backend.convertToHalf(half() + r.offset, grads + r.offset, r.count, share,
                          type);
  for (const GradRange &r : bucket.ranges)
    if (llvm::Error e = parallel.startAllReduce(half() + r.offset, r.count,
                                                type, /*mean=*/false))
      return e;
  return llvm::Error::success();
}

llvm::Error GradientReducer::finish() {
  const int64_t groups = buckets.back().lastGroup + 1, handed = nextGroup;
  nextGroup = 0;
  nextBucket = 0;
  if (handed != groups)
    return reduceError(llvm::formatv(
        "the backward handed over {0} of the {1} gradient groups", handed,
        groups));
  if (llvm::Error e = parallel.finishAllReduces())
    return e;
  if (type != Precision::FP32)
    backend.convertFromHalf(grads, half(), total, 1.0f, type);
  return backend.takeError();
}
