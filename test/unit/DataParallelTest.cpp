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

} // namespace
