//===- DataParallelTest.cpp - the trainer's data-parallel hook on the CPU --===//
//
// The trainer's side of data parallelism (Trainer.h's DataParallel: batch
// sharding, gradient and loss averaging, sharded evaluation, broadcast and
// replica checks; GradientReducer.h: the gradients' buckets, handed over
// during the backward, and the all-reduce in bf16 or fp16) without GPUs or
// NCCL: the ranks are threads of this process, each with its own CPU backend
// and model, and the collectives are done through shared memory in rank
// order (so every rank gets the same bits, as NCCL's do; 16-bit sums are
// rounded to the type after every addition, as NCCL's ring rounds every
// partial sum).
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/GradientReducer.h"
#include "sparsetx/Model/Trainer.h"
#include "sparsetx/Support/Half.h"

#include "ModelTestUtil.h"

#include "gtest/gtest.h"

#include <cmath>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <thread>

using namespace sparsetx;
using namespace sparsetx::model;

namespace {

constexpr const char *kFixed = R"(pattern fixed(l = 4, c = 1) {
  causal;
  heads = i / l == j / l || j % l >= l - c;
})";
constexpr const char *kLayered = R"(pattern interleaved(l = 4) {
  causal;
  layers = [i - j < l, (i - j) % l == 0];
})";

float roundTo(float x, Precision type) {
  return type == Precision::BF16 ? bf16ToFloat(floatToBF16(x))
                                 : fp16ToFloat(floatToFP16(x));
}

data::Dataset textData(int64_t bytes) { return test::syntheticText(bytes); }

/// The ranks' meeting point: each collective publishes every rank's buffer,
/// lets each rank compute its result from all of them in rank order, and
/// waits until all have written.
class ThreadGroup {
public:
  explicit ThreadGroup(int world) : world(world), slots(world) {}
  int size() const { return world; }

  void barrier() {
    std::unique_lock<std::mutex> lock(mutex);
    int64_t gen = generation;
    if (++arrived == world) {
      arrived = 0;
      ++generation;
      cv.notify_all();
    } else {
      cv.wait(lock, [&] { return generation != gen; });
    }
  }
  /// Publishes `p`, then returns every rank's pointer (valid until the
  /// caller's next barrier).
  std::vector<void *> exchange(int rank, void *p) {
    slots[rank] = p;
    barrier();
    return slots;
  }

private:
  int world;
  std::vector<void *> slots;
  std::mutex mutex;
  std::condition_variable cv;
  int arrived = 0;
  int64_t generation = 0;
};

class ThreadRank final : public DataParallel {
public:
  ThreadRank(ThreadGroup &group, int rank) : group(group), id(rank) {}
  int rank() const override { return id; }
  int worldSize() const override { return group.size(); }

  /// Done at once (the CPU backend's work is done when its ops return);
  /// every rank adds the others' values in rank order.
  llvm::Error startAllReduce(void *data, int64_t n, Precision type,
                             bool mean) override {
    calls.push_back({n, type, mean});
    std::vector<void *> all = group.exchange(id, data);
    std::vector<float> sum(n, 0.0f);
    std::vector<uint16_t> half(type == Precision::FP32 ? 0 : n);
    for (int64_t i = 0; i < n; ++i) {
      if (type == Precision::FP32) {
        for (void *p : all)
          sum[i] += static_cast<float *>(p)[i];
        if (mean)
          sum[i] /= static_cast<float>(group.size());
        continue;
      }
      auto widen = [&](void *p) {
        uint16_t h = static_cast<uint16_t *>(p)[i];
        return type == Precision::BF16 ? bf16ToFloat(h) : fp16ToFloat(h);
      };
      float acc = widen(all[0]);
      for (size_t r = 1; r < all.size(); ++r)
        acc = roundTo(acc + widen(all[r]), type);
      if (mean)
        acc = roundTo(acc / static_cast<float>(group.size()), type);
      half[i] = type == Precision::BF16 ? floatToBF16(acc) : floatToFP16(acc);
    }
    group.barrier();
    if (type == Precision::FP32)
      std::memcpy(data, sum.data(), n * 4);
    else
      std::memcpy(data, half.data(), n * 2);
    group.barrier();
    return llvm::Error::success();
  }
  llvm::Error finishAllReduces() override {
    ++finishes;
    return llvm::Error::success();
  }

  struct Call {
    int64_t n;
    Precision type;
    bool mean;
  };
  std::vector<Call> calls;
  int finishes = 0;
  llvm::Error broadcastFloats(float *data, int64_t n) override {
    std::vector<void *> all = group.exchange(id, data);
    std::vector<float> root(static_cast<float *>(all[0]),
                            static_cast<float *>(all[0]) + n);
    group.barrier();
    std::memcpy(data, root.data(), n * 4);
    group.barrier();
    return llvm::Error::success();
  }
  llvm::Error sumDoubles(llvm::MutableArrayRef<double> values) override {
    std::vector<void *> all = group.exchange(id, values.data());
    std::vector<double> sum(values.size(), 0.0);
    for (void *p : all)
      for (size_t i = 0; i < values.size(); ++i)
        sum[i] += static_cast<double *>(p)[i];
    group.barrier();
    std::copy(sum.begin(), sum.end(), values.begin());
    group.barrier();
    return llvm::Error::success();
  }
  llvm::Expected<bool> sameOnAllRanks(uint64_t value) override {
    std::vector<void *> all = group.exchange(id, &value);
    bool same = true;
    for (void *p : all)
      same &= *static_cast<uint64_t *>(p) == value;
    group.barrier();
    return same;
  }

private:
  ThreadGroup &group;
  int id;
};

struct Replica {
  std::unique_ptr<Backend> backend = createCpuBackend();
  std::unique_ptr<AttentionPattern> pattern;
  std::unique_ptr<Transformer> model;
  std::unique_ptr<Trainer> trainer;
  std::vector<double> losses;
  std::vector<StepResult> steps;
  /// The all-reduces the rank started, and the waits for them.
  size_t allReduces = 0;
  int finishes = 0;
  /// The reducer's buckets (the trainer drops them when it detaches).
  std::vector<GradientBucket> buckets;
  std::vector<float> params() const {
    std::vector<float> p(model->numParams());
    backend->download(p.data(), model->params(), p.size() * 4);
    return p;
  }
};

TrainConfig trainConfig() {
  TrainConfig t;
  t.steps = 12;
  t.batch = 4;
  t.lr = 1e-2f;
  t.warmupSteps = 2;
  t.seed = 3;
  return t;
}

/// What differs between the tests' replicas.
struct ReplicaOptions {
  float dropout = 0.0f;
  bool recompute = false;
  int64_t layers = 2;
  const char *pattern = kFixed;
  /// The backend (default: the CPU's).
  std::function<std::unique_ptr<Backend>()> backend;
};

std::unique_ptr<Replica> makeReplica(const data::Dataset &d,
                                     const TrainConfig &t, int world,
                                     const ReplicaOptions &o);
std::unique_ptr<Replica> makeReplica(const data::Dataset &d,
                                     const TrainConfig &t, int world,
                                     float dropout = 0.0f) {
  ReplicaOptions o;
  o.dropout = dropout;
  return makeReplica(d, t, world, o);
}

std::unique_ptr<Replica> makeReplica(const data::Dataset &d,
                                     const TrainConfig &t, int world,
                                     const ReplicaOptions &o) {
  auto r = std::make_unique<Replica>();
  if (o.backend)
    r->backend = o.backend();
  ModelConfig c;
  c.seqLen = 16;
  c.dModel = 16;
  c.numLayers = o.layers;
  c.numHeads = 2;
  c.embedStride = 4;
  c.dropout = o.dropout;
  c.recompute = o.recompute;
  PatternSource ps;
  ps.text = o.pattern;
  ps.path = "test.sp";
  r->pattern = llvm::cantFail(AttentionPattern::load(ps, c.seqLen, c.numHeads));
  r->model = llvm::cantFail(
      Transformer::create(*r->backend, c, *r->pattern, t.batch / world));
  r->model->initialize(t.seed);
  r->trainer = std::make_unique<Trainer>(*r->model, t, d);
  return r;
}

/// Trains `steps` steps on `world` thread ranks; `prepare` runs on each
/// replica before it joins, `body` on each rank after its trainer joined
/// (before the steps).
std::vector<std::unique_ptr<Replica>>
trainOnRanks(const data::Dataset &d, const TrainConfig &t, int world,
             int steps, const ReplicaOptions &options,
             const GradientSync &sync = {},
             std::function<void(Replica &, int)> body = nullptr,
             std::function<void(Replica &, int)> prepare = nullptr);

std::vector<std::unique_ptr<Replica>>
trainOnRanks(const data::Dataset &d, const TrainConfig &t, int world,
             int steps, float dropout = 0.0f,
             std::function<void(Replica &, int)> body = nullptr,
             std::function<void(Replica &, int)> prepare = nullptr) {
  ReplicaOptions o;
  o.dropout = dropout;
  return trainOnRanks(d, t, world, steps, o, {}, std::move(body),
                      std::move(prepare));
}

std::vector<std::unique_ptr<Replica>>
trainOnRanks(const data::Dataset &d, const TrainConfig &t, int world,
             int steps, const ReplicaOptions &options, const GradientSync &sync,
             std::function<void(Replica &, int)> body,
             std::function<void(Replica &, int)> prepare) {
  ThreadGroup group(world);
  std::vector<std::unique_ptr<ThreadRank>> ranks;
  std::vector<std::unique_ptr<Replica>> replicas;
  for (int r = 0; r < world; ++r) {
    ranks.push_back(std::make_unique<ThreadRank>(group, r));
    replicas.push_back(makeReplica(d, t, world, options));
    if (prepare)
      prepare(*replicas.back(), r);
  }
  std::vector<std::thread> threads;
  std::vector<std::string> errors(world);
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      Replica &rep = *replicas[r];
      auto fail = [&](llvm::Error e) {
        if (e && errors[r].empty())
          errors[r] = llvm::toString(std::move(e));
      };
      fail(rep.trainer->setDataParallel(ranks[r].get(), sync));
      fail(rep.trainer->broadcastState());
      if (body)
        body(rep, r);
      for (int s = 0; s < steps; ++s) {
        llvm::Expected<StepResult> res = rep.trainer->trainStep();
        if (!res) {
          fail(res.takeError());
          return;
        }
        rep.losses.push_back(res->loss);
        rep.steps.push_back(*res);
      }
      rep.allReduces = ranks[r]->calls.size();
      rep.finishes = ranks[r]->finishes;
      if (const GradientReducer *g = rep.trainer->getGradientReducer())
        rep.buckets = g->getBuckets();
      fail(rep.trainer->checkReplicasAgree());
      // Detach: the group dies with this function.
      fail(rep.trainer->setDataParallel(nullptr));
    });
  for (std::thread &th : threads)
    th.join();
  for (int r = 0; r < world; ++r)
    EXPECT_EQ(errors[r], "") << "rank " << r;
  return replicas;
}

TEST(DataParallel, OneRankEqualsNoParallelismBitForBit) {
  data::Dataset d = textData(4000);
  TrainConfig t = trainConfig();
  auto alone = makeReplica(d, t, 1, 0.1f);
  for (int s = 0; s < 8; ++s)
    alone->losses.push_back(llvm::cantFail(alone->trainer->trainStep()).loss);
  auto ranks = trainOnRanks(d, t, 1, 8, 0.1f);
  EXPECT_EQ(alone->losses, ranks[0]->losses);
  EXPECT_EQ(alone->params(), ranks[0]->params());
}

TEST(DataParallel, TwoRanksTrainLikeOneProcessWithTheWholeBatch) {
  data::Dataset d = textData(4000);
  TrainConfig t = trainConfig();
  auto alone = makeReplica(d, t, 1);
  for (int s = 0; s < t.steps; ++s)
    alone->losses.push_back(llvm::cantFail(alone->trainer->trainStep()).loss);
  auto ranks = trainOnRanks(d, t, 2, t.steps);
  // Every rank reports the mean loss, and the replicas stay identical.
  EXPECT_EQ(ranks[0]->losses, ranks[1]->losses);
  EXPECT_EQ(ranks[0]->params(), ranks[1]->params());
  // The same examples and the same mean gradient, summed in another order.
  ASSERT_EQ(alone->losses.size(), ranks[0]->losses.size());
  for (size_t s = 0; s < alone->losses.size(); ++s)
    EXPECT_NEAR(alone->losses[s], ranks[0]->losses[s], 1e-4) << "step " << s + 1;
  EXPECT_NEAR(alone->losses[0], ranks[0]->losses[0], 1e-6) << "the first forward";
  EXPECT_LT(ranks[0]->losses.back(), ranks[0]->losses.front() - 0.5);
  std::vector<float> a = alone->params(), b = ranks[0]->params();
  double largest = 0;
  for (size_t i = 0; i < a.size(); ++i)
    largest = std::max(largest, double(std::abs(a[i] - b[i])));
  EXPECT_LT(largest, 1e-3);
}

TEST(DataParallel, EvaluationIsShardedAndSummed) {
  data::Dataset d = textData(4000);
  TrainConfig t = trainConfig();
  auto alone = makeReplica(d, t, 1);
  EvalResult whole = llvm::cantFail(alone->trainer->evaluate(data::Split::Valid, 0));
  std::vector<EvalResult> parts(2);
  trainOnRanks(d, t, 2, 0, 0.0f, [&](Replica &rep, int r) {
    parts[r] = llvm::cantFail(rep.trainer->evaluate(data::Split::Valid, 0));
  });
  for (const EvalResult &e : parts) {
    EXPECT_EQ(e.tokens, whole.tokens);
    EXPECT_NEAR(e.bits, whole.bits, 1e-9);
  }
}

TEST(DataParallel, BroadcastMakesRankZerosStateAndDivergenceIsCaught) {
  data::Dataset d = textData(4000);
  TrainConfig t = trainConfig();
  // Rank 1 starts from other parameters: the broadcast replaces them.
  auto reference = trainOnRanks(d, t, 2, 2);
  auto ranks = trainOnRanks(d, t, 2, 2, 0.0f, nullptr, [](Replica &rep, int r) {
    if (r == 1)
      rep.model->initialize(99);
  });
  EXPECT_EQ(ranks[0]->params(), ranks[1]->params());
  EXPECT_EQ(ranks[1]->params(), reference[1]->params());

  ThreadGroup group(2);
  ThreadRank r0(group, 0), r1(group, 1);
  auto a = makeReplica(d, t, 2), b = makeReplica(d, t, 2);
  b->model->initialize(99); // diverged, and not broadcast
  ASSERT_FALSE(bool(a->trainer->setDataParallel(&r0)));
  ASSERT_FALSE(bool(b->trainer->setDataParallel(&r1)));
  std::string errA, errB;
  std::thread ta([&] {
    llvm::Error e = a->trainer->checkReplicasAgree();
    errA = e ? llvm::toString(std::move(e)) : "";
  });
  std::thread tb([&] {
    llvm::Error e = b->trainer->checkReplicasAgree();
    errB = e ? llvm::toString(std::move(e)) : "";
  });
  ta.join();
  tb.join();
  EXPECT_NE(errA.find("the parameters differ across the GPUs at step 0"),
            std::string::npos)
      << errA;
  EXPECT_NE(errB.find("on rank 1"), std::string::npos) << errB;
}

TEST(DataParallel, TheBatchMustDivide) {
  data::Dataset d = textData(4000);
  TrainConfig t = trainConfig();
  t.batch = 3;
  auto r = makeReplica(d, t, 1);
  ThreadGroup group(2);
  ThreadRank rank(group, 0);
  llvm::Error e = r->trainer->setDataParallel(&rank);
  ASSERT_TRUE(bool(e));
  EXPECT_EQ(llvm::toString(std::move(e)),
            "the batch (3 sequences) does not divide over 2 GPUs: pass a "
            "--batch that is a multiple of --gpus");
}

//===----------------------------------------------------------------------===//
// The gradients' buckets
//===----------------------------------------------------------------------===//

struct LayoutCase {
  const char *name;
  const char *pattern;
  int64_t layers = 2;
  bool recompute = false, image = false, halfQK = false;
};

std::unique_ptr<Transformer> layoutModel(Backend &backend,
                                         const LayoutCase &lc,
                                         std::unique_ptr<AttentionPattern> &pattern,
                                         float dropout = 0.0f) {
  ModelConfig c;
  c.seqLen = 16;
  c.dModel = 16;
  c.numLayers = lc.layers;
  c.numHeads = 2;
  c.embedStride = 4;
  c.recompute = lc.recompute;
  c.halfQK = lc.halfQK;
  c.dropout = dropout;
  if (lc.image) {
    c.kind = data::DataKind::Image;
    c.imageHeight = 2;
    c.imageWidth = 4;
    c.imageChannels = 2;
    c.embedStride = 0;
  }
  PatternSource ps;
  ps.text = lc.pattern;
  ps.path = "test.sp";
  pattern = llvm::cantFail(AttentionPattern::load(ps, c.seqLen, c.numHeads));
  return llvm::cantFail(Transformer::create(backend, c, *pattern, 2));
}

const LayoutCase kLayouts[] = {
    {"fixed, 2 blocks", kFixed},
    {"fixed, 1 block", kFixed, 1},
    {"layered, 3 blocks, recompute", kLayered, 3, true},
    {"layered, 4 blocks", kLayered, 4},
    {"image, half-size q/k, 3 blocks, recompute", kFixed, 3, true, true, true},
};

/// The block a tensor belongs to, read from its name ("layer3.wq": 3), or
/// -1: independent of ParamInfo::layer, which the model fills itself.
int64_t layerOfName(const std::string &name) {
  llvm::StringRef n(name);
  if (!n.consume_front("layer"))
    return -1;
  int64_t l = -1;
  n.consumeInteger(10, l);
  return l;
}

// Every gradient is in exactly one bucket, for any bucket size: the groups
// partition the flat buffer, a block's group holds exactly its tensors (at
// most two ranges: weight matrices, then biases and gains), the buckets take
// consecutive groups, respect their size unless a group alone exceeds it,
// and keep each tensor whole.
TEST(GradientBuckets, CoverEveryGradientOnce) {
  std::unique_ptr<Backend> backend = createCpuBackend();
  for (const LayoutCase &lc : kLayouts) {
    SCOPED_TRACE(lc.name);
    std::unique_ptr<AttentionPattern> pattern;
    auto model = layoutModel(*backend, lc, pattern);
    const int64_t total = model->numParams(), L = lc.layers;
    std::vector<std::vector<GradRange>> groups = model->gradientGroups();
    ASSERT_EQ(static_cast<int64_t>(groups.size()), L + 1);
    for (int64_t g = 0; g < L; ++g)
      EXPECT_EQ(groups[g].size(), 2u) << "group " << g;
    // Each tensor inside one range of the group of its block.
    for (const ParamInfo &p : model->getParamInfo()) {
      int64_t layer = layerOfName(p.name);
      const std::vector<GradRange> &g = groups[layer < 0 ? L : L - 1 - layer];
      int inside = 0;
      for (const GradRange &r : g)
        inside += r.offset <= p.offset && p.offset + p.count() <= r.end();
      EXPECT_EQ(inside, 1) << p.name;
    }
    int64_t smallest = total, largest = 0;
    for (const auto &g : groups) {
      int64_t n = 0;
      for (const GradRange &r : g)
        n += r.count;
      smallest = std::min(smallest, n);
      largest = std::max(largest, n);
    }
    for (int64_t cap : {int64_t(0), int64_t(1), smallest, largest,
                        smallest + largest, 2 * largest + 1, total,
                        int64_t(1) << 40}) {
      SCOPED_TRACE("cap " + std::to_string(cap));
      std::vector<GradientBucket> buckets = planGradientBuckets(groups, cap);
      ASSERT_FALSE(buckets.empty());
      std::vector<int> seen(total, 0);
      for (size_t b = 0; b < buckets.size(); ++b) {
        const GradientBucket &k = buckets[b];
        EXPECT_EQ(k.firstGroup, b == 0 ? 0 : buckets[b - 1].lastGroup + 1);
        EXPECT_LE(k.firstGroup, k.lastGroup);
        if (cap > 0 && k.firstGroup != k.lastGroup) {
          EXPECT_LE(k.count(), cap) << "bucket " << b;
        }
        for (size_t i = 0; i < k.ranges.size(); ++i) {
          const GradRange &r = k.ranges[i];
          EXPECT_GT(r.count, 0);
          if (i > 0) { // sorted, and adjacent ranges merged
            EXPECT_GT(r.offset, k.ranges[i - 1].end());
          }
          for (int64_t e = r.offset; e < r.end(); ++e)
            ++seen[e];
        }
        // A bucket holds its groups' ranges and nothing else.
        int64_t groupsCount = 0;
        for (int64_t g = k.firstGroup; g <= k.lastGroup; ++g)
          for (const GradRange &r : groups[g])
            groupsCount += r.count;
        EXPECT_EQ(k.count(), groupsCount) << "bucket " << b;
      }
      EXPECT_EQ(buckets.back().lastGroup, L);
      int64_t gaps = 0, twice = 0;
      for (int v : seen) {
        gaps += v == 0;
        twice += v > 1;
      }
      EXPECT_EQ(gaps, 0);
      EXPECT_EQ(twice, 0);
      if (cap == 0 || cap >= total) {
        EXPECT_EQ(buckets.size(), 1u);
      }
      if (cap == 1) {
        EXPECT_EQ(static_cast<int64_t>(buckets.size()), L + 1);
      }
      // Every tensor whole in one bucket.
      for (const ParamInfo &p : model->getParamInfo()) {
        int holders = 0;
        for (const GradientBucket &k : buckets)
          for (const GradRange &r : k.ranges)
            holders += r.offset <= p.offset && p.offset + p.count() <= r.end();
        EXPECT_EQ(holders, 1) << p.name;
      }
    }
  }
}

// A reducer refuses buckets that miss or repeat gradients, naming them.
TEST(GradientBuckets, ReducerChecksCoverage) {
  std::unique_ptr<Backend> backend = createCpuBackend();
  Buffer grads = backend->allocateFloats(100);
  ThreadGroup group(1);
  ThreadRank rank(group, 0);
  auto make = [&](std::vector<std::vector<GradRange>> groups) {
    auto r = GradientReducer::create(*backend, rank, grads.f32(), 100,
                                     planGradientBuckets(groups, 0),
                                     Precision::FP32);
    return r ? std::string() : llvm::toString(r.takeError());
  };
  EXPECT_EQ(make({{{0, 60}}, {{60, 40}}}), "");
  EXPECT_EQ(make({{{0, 50}}, {{60, 40}}}),
            "the gradient buckets leave gradients 50 to 59 out");
  EXPECT_EQ(make({{{0, 60}}, {{50, 50}}}),
            "the gradient buckets hold gradient 50 twice");
  EXPECT_EQ(make({{{0, 60}}}), "the gradient buckets cover 60 gradients of 100");
}

/// Copies each group's gradients when the model hands it over.
class RecordingHook final : public GradientHook {
public:
  RecordingHook(Transformer &model) : model(model) {}
  llvm::Error gradientsReady(int64_t group) override {
    order.push_back(group);
    std::vector<float> copy;
    std::vector<std::vector<GradRange>> groups = model.gradientGroups();
    for (const GradRange &r : groups[group]) {
      size_t at = copy.size();
      copy.resize(at + r.count);
      model.getBackend().download(copy.data() + at, model.grads() + r.offset,
                                  r.count * 4);
    }
    copies.push_back(std::move(copy));
    return llvm::Error::success();
  }
  Transformer &model;
  std::vector<int64_t> order;
  std::vector<std::vector<float>> copies;
};

// What makes overlapping safe: a group's gradients, when handed over during
// the backward, are already those the whole backward ends with (with
// recomputation and dropout too), and the groups come in order, once.
TEST(GradientBuckets, GradientsAreFinalWhenHandedOver) {
  data::Dataset d = textData(4000);
  std::unique_ptr<Backend> backend = createCpuBackend();
  for (const LayoutCase &lc : kLayouts) {
    if (lc.image)
      continue; // the text batch below
    for (float dropout : {0.0f, 0.2f}) {
      SCOPED_TRACE(std::string(lc.name) + ", dropout " +
                   std::to_string(dropout));
      std::unique_ptr<AttentionPattern> pattern;
      auto model = layoutModel(*backend, lc, pattern, dropout);
      // Random parameters (the initial output matrix is zero, which would
      // leave every block without a gradient).
      std::vector<float> params(model->numParams());
      std::mt19937 rng(5);
      std::normal_distribution<float> normal(0.0f, 0.3f);
      for (float &p : params)
        p = normal(rng);
      backend->upload(model->params(), params.data(), params.size() * 4);
      RecordingHook hook(*model);
      model->setGradientHook(&hook);
      std::vector<int32_t> in, out;
      ASSERT_FALSE(bool(makeBatch(d, data::Split::Train, {0, 77}, 16, in, out)));
      ASSERT_TRUE(bool(model->run(in, out, 2, true, 9)));
      std::vector<int64_t> expected;
      for (int64_t g = 0; g <= lc.layers; ++g)
        expected.push_back(g);
      EXPECT_EQ(hook.order, expected);
      std::vector<float> final(model->numParams());
      backend->download(final.data(), model->grads(), final.size() * 4);
      std::vector<std::vector<GradRange>> groups = model->gradientGroups();
      for (size_t g = 0; g < hook.copies.size(); ++g) {
        std::vector<float> now;
        for (const GradRange &r : groups[g])
          now.insert(now.end(), final.begin() + r.offset,
                     final.begin() + r.end());
        EXPECT_EQ(hook.copies[g], now) << "group " << g;
        double norm = 0;
        for (float x : now)
          norm += double(x) * x;
        EXPECT_GT(norm, 0) << "group " << g << " has no gradient at all";
      }
      // Evaluation runs no backward and hands nothing over.
      hook.order.clear();
      ASSERT_TRUE(bool(model->run(in, out, 2, false)));
      EXPECT_TRUE(hook.order.empty());
      model->setGradientHook(nullptr);
    }
  }
}

// Buckets started during the backward train exactly as one all-reduce after
// it (the same sums, element by element), with recomputation and a layered
// pattern too; every bucket's ranges are all-reduced once per step.
TEST(DataParallel, OverlappedBucketsEqualOneAllReduceBitForBit) {
  data::Dataset d = textData(4000);
  TrainConfig t = trainConfig();
  for (bool recompute : {false, true}) {
    SCOPED_TRACE(recompute ? "recompute" : "store");
    ReplicaOptions o;
    o.recompute = recompute;
    o.pattern = kLayered;
    o.layers = 3;
    o.dropout = 0.1f;
    GradientSync one, each;
    one.bucketBytes = 0;
    each.bucketBytes = 1; // every group a bucket of its own
    auto a = trainOnRanks(d, t, 2, 6, o, one);
    auto b = trainOnRanks(d, t, 2, 6, o, each);
    EXPECT_EQ(a[0]->losses, b[0]->losses);
    EXPECT_EQ(a[0]->params(), b[0]->params());
    EXPECT_EQ(b[0]->params(), b[1]->params());
    EXPECT_EQ(b[0]->buckets.size(), 4u);
    size_t ranges = 0;
    for (const GradientBucket &k : b[0]->buckets)
      ranges += k.ranges.size();
    EXPECT_EQ(ranges, 8u); // each group's two ranges
    EXPECT_EQ(b[0]->allReduces, ranges * 6);
    EXPECT_EQ(b[0]->finishes, 6);
    EXPECT_EQ(a[0]->allReduces, 6u); // one bucket, one range
  }
}

TEST(DataParallel, BadBucketSizeIsNamed) {
  data::Dataset d = textData(4000);
  auto r = makeReplica(d, trainConfig(), 1);
  ThreadGroup group(1);
  ThreadRank rank(group, 0);
  GradientSync sync;
  sync.bucketBytes = -5;
  llvm::Error e = r->trainer->setDataParallel(&rank, sync);
  ASSERT_TRUE(bool(e));
  EXPECT_EQ(llvm::toString(std::move(e)),
            "the gradient bucket size must be 0 or more bytes, got -5");
  EXPECT_EQ(r->trainer->getDataParallel(), nullptr);
}

//===----------------------------------------------------------------------===//
// 16-bit all-reduce
//===----------------------------------------------------------------------===//

// The conversions round as the GPU does: to nearest even, beyond the range
// to inf, NaN stays NaN; the backend's default (through the host) and the
// CPU backend's own agree bit for bit.
TEST(HalfGradients, ConversionsRoundLikeTheGpu) {
  EXPECT_EQ(floatToBF16(1.0f), 0x3f80);
  EXPECT_EQ(floatToBF16(1.0f + 0x1.0p-8f), 0x3f80);  // a tie: to even
  EXPECT_EQ(floatToBF16(1.0f + 0x1.8p-8f), 0x3f81);  // above the tie: up
  EXPECT_EQ(floatToBF16(std::numeric_limits<float>::max()), 0x7f80); // inf
  EXPECT_TRUE(std::isnan(bf16ToFloat(floatToBF16(std::nanf("")))));
  EXPECT_TRUE(std::isnan(bf16ToFloat(floatToBF16(-std::nanf("")))));
  EXPECT_EQ(floatToFP16(65504.0f), 0x7bff);
  EXPECT_EQ(floatToFP16(65519.0f), 0x7bff); // below the midpoint to inf
  EXPECT_EQ(floatToFP16(65520.0f), 0x7c00); // the midpoint: to inf (even)
  EXPECT_EQ(floatToFP16(-1e6f), 0xfc00);
  EXPECT_EQ(fp16ToFloat(floatToFP16(0x1.0p-24f)), 0x1.0p-24f); // subnormal
  EXPECT_TRUE(std::isnan(fp16ToFloat(floatToFP16(std::nanf("")))));

  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> exponent(-30, 30);
  const int64_t n = 4096;
  std::vector<float> x(n);
  for (float &v : x)
    v = normal(rng) * std::exp2(exponent(rng));
  std::unique_ptr<Backend> cpu = createCpuBackend();
  for (Precision type : {Precision::BF16, Precision::FP16}) {
    for (float s : {1.0f, 0.25f, 1.0f / 3.0f}) {
      std::vector<uint16_t> direct(n), viaHost(n);
      std::vector<float> back(n), backViaHost(n);
      cpu->convertToHalf(direct.data(), x.data(), n, s, type);
      cpu->Backend::convertToHalf(viaHost.data(), x.data(), n, s, type);
      EXPECT_EQ(direct, viaHost);
      cpu->convertFromHalf(back.data(), direct.data(), n, 2.0f, type);
      cpu->Backend::convertFromHalf(backViaHost.data(), direct.data(), n, 2.0f,
                                    type);
      EXPECT_EQ(std::memcmp(back.data(), backViaHost.data(), n * 4), 0);
      for (int64_t i = 0; i < n; ++i) {
        float want = roundTo(x[i] * s, type) * 2.0f;
        ASSERT_TRUE(back[i] == want || (std::isnan(back[i]) && std::isnan(want)))
            << i << ": " << x[i];
      }
    }
  }
}

// The CUDA backend's conversion kernels compile (CI has no GPU to run them;
// test/gpu/CudaModelTest checks them against the CPU).
TEST(HalfGradients, KernelsCompile) {
  for (const char *arch : {"sm_80", "sm_90a"}) {
    llvm::Expected<std::string> ptx = compileCudaBackendKernels(arch);
    ASSERT_TRUE(bool(ptx)) << arch << ": " << llvm::toString(ptx.takeError());
    for (const char *entry : {"sp_scale_to_half", "sp_scale_from_half"})
      EXPECT_NE(ptx->find(std::string(".entry ") + entry), std::string::npos)
          << arch << " lacks " << entry;
  }
}

/// Runs a GradientReducer on `world` thread ranks over `values[r]` (one
/// buffer per rank) in buckets of `cap` gradients; returns every rank's
/// result.
std::vector<std::vector<float>>
reduceOnRanks(const std::vector<std::vector<float>> &values,
              const std::vector<std::vector<GradRange>> &groups, int64_t cap,
              Precision type) {
  const int world = static_cast<int>(values.size());
  const int64_t total = static_cast<int64_t>(values[0].size());
  ThreadGroup group(world);
  std::vector<std::vector<float>> results(world);
  std::vector<std::string> errors(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      std::unique_ptr<Backend> backend = createCpuBackend();
      ThreadRank rank(group, r);
      Buffer grads = backend->allocateFloats(total);
      backend->upload(grads.data(), values[r].data(), total * 4);
      auto reducer = GradientReducer::create(*backend, rank, grads.f32(), total,
                                             planGradientBuckets(groups, cap),
                                             type);
      if (!reducer) {
        errors[r] = llvm::toString(reducer.takeError());
        return;
      }
      llvm::Error e = llvm::Error::success();
      for (int64_t g = 0; g < static_cast<int64_t>(groups.size()) && !e; ++g)
        e = (*reducer)->gradientsReady(g);
      if (!e)
        e = (*reducer)->finish();
      if (e) {
        errors[r] = llvm::toString(std::move(e));
        return;
      }
      results[r].resize(total);
      backend->download(results[r].data(), grads.data(), total * 4);
    });
  for (std::thread &th : threads)
    th.join();
  for (int r = 0; r < world; ++r)
    EXPECT_EQ(errors[r], "") << "rank " << r;
  return results;
}

// The mean over 4 ranks in bf16 and fp16 against float64: within 2e-2
// (bf16) and 5e-3 (fp16) of the magnitude of the addends (the bound of a
// rounded sum; single elements of a cancelling sum cannot be held to their
// own size), identical on every rank. The shares are divided by the world
// size before the sum: four ranks holding 60,000 average to 60,000 in fp16
// (a sum first would be inf), one rank's 1e6 (finite in fp32, beyond fp16)
// makes the fp16 mean inf on every rank (the trainer then skips the step)
// but stays finite in bf16, and an inf reaches every rank in both.
TEST(HalfGradients, MeanOfFourRanksAgainstFloat64) {
  const int world = 4;
  const int64_t total = 10000;
  // Groups as a model's: two ranges each, the last group at the ends.
  std::vector<std::vector<GradRange>> groups;
  for (int64_t g = 0; g < 6; ++g)
    groups.push_back({{g * 800, 800}, {6000 + g * 500, 500}});
  groups.push_back({{4800, 1200}, {9000, 1000}});
  std::vector<std::vector<float>> values(world, std::vector<float>(total));
  for (int r = 0; r < world; ++r) {
    std::mt19937 rng(100 + r);
    std::normal_distribution<float> normal;
    std::uniform_real_distribution<float> exponent(-2, 3);
    for (float &v : values[r])
      v = normal(rng) * std::pow(10.0f, exponent(rng));
    values[r][0] = 60000.0f;
  }
  values[2][1] = 1e6f;
  values[3][2] = std::numeric_limits<float>::infinity();

  for (Precision type : {Precision::BF16, Precision::FP16, Precision::FP32}) {
    SCOPED_TRACE(toString(type).str());
    const double tolerance = type == Precision::BF16   ? 2e-2
                             : type == Precision::FP16 ? 5e-3
                                                       : 1e-6;
    for (int64_t cap : {int64_t(0), int64_t(1500)}) {
      auto results = reduceOnRanks(values, groups, cap, type);
      if (results[0].empty())
        return;
      for (int r = 1; r < world; ++r)
        EXPECT_EQ(std::memcmp(results[r].data(), results[0].data(), total * 4), 0)
            << "rank " << r << " differs from rank 0";
      const std::vector<float> &got = results[0];
      EXPECT_NEAR(got[0], 60000.0, 60000.0 * tolerance);
      double mean1 = 0;
      for (int r = 0; r < world; ++r)
        mean1 += values[r][1] / double(world);
      if (type == Precision::FP16)
        EXPECT_TRUE(std::isinf(got[1])) << got[1];
      else
        EXPECT_NEAR(got[1], mean1, mean1 * tolerance);
      EXPECT_TRUE(std::isinf(got[2])) << got[2];
      int64_t bad = 0;
      double worst = 0;
      for (int64_t i = 3; i < total; ++i) {
        double mean = 0, size = 0;
        for (int r = 0; r < world; ++r) {
          mean += values[r][i];
          size += std::abs(double(values[r][i]));
        }
        mean /= world;
        size /= world;
        double err = std::abs(got[i] - mean) / size;
        worst = std::max(worst, err);
        bad += !(err <= tolerance);
      }
      EXPECT_EQ(bad, 0) << "worst relative error " << worst;
      // Not vacuous: 16 bits do round.
      if (type != Precision::FP32) {
        EXPECT_GT(worst, tolerance / 100);
      }
    }
  }
}

/// The CPU backend saying it computes in fp16 (so the trainer scales the
/// loss and skips steps whose gradients overflow), with a hook on the
/// gradients just before their conversion to 16 bits.
class Fp16LabelledBackend final : public test::ForwardingBackend {
public:
  std::function<void(float *x, int64_t n)> beforeConversion;

  llvm::StringRef name() const override { return "fp16-labelled cpu"; }
  Precision precision() const override { return Precision::FP16; }
  void convertToHalf(uint16_t *out, const float *x, int64_t n, float s,
                     Precision type) override {
    if (beforeConversion)
      beforeConversion(const_cast<float *>(x), n);
    inner->convertToHalf(out, x, n, s, type);
  }
};

struct OverflowRun {
  std::vector<std::vector<StepResult>> results; // [rank][step]
  std::vector<std::vector<bool>> changed;        // parameters changed
  std::vector<std::vector<float>> params;
};

/// 4 fp16 steps on 2 ranks; at step 2 rank 1's first gradient becomes
/// `poke` just before the conversion to 16 bits.
OverflowRun trainWithPoke(Precision allreduce, float poke) {
  data::Dataset d = textData(4000);
  TrainConfig t = trainConfig();
  t.lossScale = 1024.0f;
  t.lossScaleWindow = 1000;
  ReplicaOptions o;
  o.backend = [] { return std::make_unique<Fp16LabelledBackend>(); };
  GradientSync sync;
  sync.type = allreduce;
  sync.bucketBytes = 64; // several buckets
  OverflowRun run;
  run.results.resize(2);
  run.changed.resize(2);
  std::vector<int> steps(2, 0);
  auto reps = trainOnRanks(
      d, t, 2, 0, o, sync,
      [&](Replica &rep, int r) {
        bool poked = false;
        if (r == 1)
          static_cast<Fp16LabelledBackend &>(*rep.backend).beforeConversion =
              [&](float *x, int64_t) {
                if (steps[r] == 1 && !poked) {
                  x[0] = poke;
                  poked = true;
                }
              };
        for (int s = 0; s < 4; ++s) {
          std::vector<float> before = rep.params();
          llvm::Expected<StepResult> res = rep.trainer->trainStep();
          if (!res) {
            ADD_FAILURE() << llvm::toString(res.takeError());
            return;
          }
          run.results[r].push_back(*res);
          run.changed[r].push_back(rep.params() != before);
          steps[r] = s + 1;
        }
        EXPECT_EQ(poked, r == 1) << "rank " << r;
        static_cast<Fp16LabelledBackend &>(*rep.backend).beforeConversion =
            nullptr;
      });
  for (auto &rep : reps)
    run.params.push_back(rep->params());
  return run;
}

// One rank's gradient that is finite in fp32 but beyond fp16 (1e6) turns the
// fp16 all-reduce's mean into inf on every rank: both skip the step, leave
// their parameters alone, halve the loss scale and go on in step; an inf
// does so in the bf16 all-reduce too, while bf16's range takes 1e6.
TEST(HalfGradients, AnFp16OverflowOnOneRankSkipsTheStepOnEvery) {
  struct Case {
    Precision type;
    float poke;
    bool skips;
  } cases[] = {
      {Precision::FP16, 1e6f, true},
      {Precision::FP16, std::numeric_limits<float>::infinity(), true},
      {Precision::BF16, std::numeric_limits<float>::infinity(), true},
      {Precision::BF16, 1e6f, false},
  };
  for (const Case &c : cases) {
    SCOPED_TRACE(toString(c.type).str() + ", " + std::to_string(c.poke));
    OverflowRun run = trainWithPoke(c.type, c.poke);
    for (int r = 0; r < 2; ++r) {
      ASSERT_EQ(run.results[r].size(), 4u);
      for (int s = 0; s < 4; ++s) {
        bool skipped = c.skips && s == 1;
        EXPECT_EQ(run.results[r][s].skipped, skipped)
            << "rank " << r << " step " << s + 1;
        EXPECT_EQ(run.changed[r][s], !skipped)
            << "rank " << r << " step " << s + 1;
      }
      EXPECT_EQ(run.results[r][1].lossScale, 1024.0);
      EXPECT_EQ(run.results[r][2].lossScale, c.skips ? 512.0 : 1024.0);
      EXPECT_EQ(run.results[r][3].lossScale, c.skips ? 512.0 : 1024.0);
    }
    EXPECT_EQ(run.params[0], run.params[1]) << "the replicas diverged";
    for (float p : run.params[0])
      ASSERT_TRUE(std::isfinite(p));
  }
}

} // namespace
