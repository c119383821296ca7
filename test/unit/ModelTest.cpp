//===- ModelTest.cpp - the Sparse Transformer on the CPU backend ----------===//
//
// The CPU attention against the float64 oracle; the whole model's gradient
// against central finite differences (text and image embeddings, merged,
// per-head and layered patterns, dropout, half-size q/k and FF, recompute);
// decoding against the forward pass; configurations, the schedule,
// checkpoints (round trip, corruption, truncation) and exact resume.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Codegen/AttentionPlan.h"
#include "sparsetx/Codegen/CudaEmitter.h"
#include "sparsetx/Model/Backend.h"
#include "sparsetx/Model/Checkpoint.h"
#include "sparsetx/Model/Config.h"
#include "sparsetx/Model/Trainer.h"
#include "sparsetx/Model/Transformer.h"
#include "sparsetx/Runtime/ReferenceAttention.h"
#include "sparsetx/Runtime/SparseAttention.h"

#include "llvm/Support/CRC.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"

#include "ModelTestUtil.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <set>

using namespace sparsetx;
using namespace sparsetx::model;

namespace {

constexpr const char *kFixed = R"(pattern fixed(l = 4, c = 2) {
  causal;
  heads = i / l == j / l || j % l >= l - c;
})";
constexpr const char *kPerHead = R"(pattern per_head(l = 4) {
  causal;
  heads[h] = i - j < l * (h + 1) || (i - j) % l == 0;
})";
constexpr const char *kLayered = R"(pattern interleaved(l = 4) {
  causal;
  layers = [i - j < l, (i - j) % l == 0];
})";

PatternSource source(const char *text, const char *path = "test.sp") {
  PatternSource s;
  s.text = text;
  s.path = path;
  return s;
}

std::unique_ptr<AttentionPattern> loadPattern(const char *text, int64_t n,
                                              int64_t heads) {
  auto p = AttentionPattern::load(source(text), n, heads);
  if (!p) {
    ADD_FAILURE() << llvm::toString(p.takeError());
    return nullptr;
  }
  return std::move(*p);
}

std::string errorText(llvm::Error e) { return llvm::toString(std::move(e)); }

data::Dataset textData(int64_t bytes) { return test::syntheticText(bytes); }

ModelConfig smallConfig(int64_t n = 16) {
  ModelConfig c;
  c.seqLen = n;
  c.dModel = 16;
  c.numLayers = 2;
  c.numHeads = 2;
  c.embedStride = 4;
  return c;
}

/// Every parameter perturbed, so that no gradient is trivially zero (the
/// output matrix starts at zero).
void randomizeParams(Transformer &model, uint32_t seed, float scale = 0.2f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> p(model.numParams());
  model.getBackend().download(p.data(), model.params(), p.size() * 4);
  for (float &x : p)
    x += normal(rng);
  model.getBackend().upload(model.params(), p.data(), p.size() * 4);
}

void randomTokens(int64_t batch, int64_t n, uint32_t seed,
                  std::vector<int32_t> &inputs, std::vector<int32_t> &targets) {
  std::mt19937 rng(seed);
  inputs.resize(batch * n);
  targets.resize(batch * n);
  for (int64_t e = 0; e < batch * n; ++e) {
    targets[e] = static_cast<int32_t>(rng() % kVocab);
    inputs[e] = e % n == 0 ? kStartToken : targets[e - 1];
  }
}

//===----------------------------------------------------------------------===//
// CPU attention
//===----------------------------------------------------------------------===//

TEST(SparseAttention, RowSparsityTranspose) {
  RowSparsity s = RowSparsity::fromPredicate(
      37, [](int64_t i, int64_t j) { return (i * 7 + j * 3) % 5 < 2; });
  int64_t pairs = 0;
  for (int64_t i = 0; i < 37; ++i)
    for (int64_t j = 0; j < 37; ++j) {
      bool in = (i * 7 + j * 3) % 5 < 2;
      pairs += in;
      EXPECT_EQ(llvm::is_contained(s.keys(i), j), in);
      EXPECT_EQ(llvm::is_contained(s.queries(j), i), in);
    }
  EXPECT_EQ(s.numPairs(), pairs);
  RowSparsity causal = RowSparsity::fromPredicate(
      10, [](int64_t, int64_t) { return true; }, /*causal=*/true);
  EXPECT_EQ(causal.numPairs(), 55);
  EXPECT_EQ(causal.maxKeys(), 10);
}

/// fp32 token-major attention with per-head masks against the float64
/// oracle on [bh, n, d] arrays.
TEST(SparseAttention, FloatMatchesFloat64Oracle) {
  const int64_t B = 2, H = 3, n = 45, d = 8;
  std::vector<RowSparsity> masks;
  for (int64_t h = 0; h < H; ++h)
    masks.push_back(RowSparsity::fromPredicate(n, [&](int64_t i, int64_t j) {
      return j <= i && ((i - j) < 3 + h || (i - j) % 5 == 0);
    }));
  std::vector<const RowSparsity *> ptrs;
  for (auto &m : masks)
    ptrs.push_back(&m);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> q(B * n * H * d), k(q.size()), v(q.size()), dO(q.size());
  for (auto *x : {&q, &k, &v, &dO})
    for (float &e : *x)
      e = normal(rng);
  SparseAttentionShape shape{B, H, n, d, d, 1.0 / std::sqrt(double(d))};
  std::vector<float> o(q.size(), NAN), lse(B * H * n, NAN), dQ(q.size(), NAN),
      dK(q.size(), NAN), dV(q.size(), NAN);
  auto view = [&](auto &x) {
    using T = std::remove_reference_t<decltype(x[0])>;
    return HeadView<T>::tokenMajor(x.data(), n, H, d);
  };
  auto cview = [&](const std::vector<float> &x) {
    return HeadView<const float>::tokenMajor(x.data(), n, H, d);
  };
  sparseAttentionForward<float>(shape, ptrs, cview(q), cview(k), cview(v),
                                view(o), lse.data());
  sparseAttentionBackward<float>(shape, ptrs, cview(q), cview(k), cview(v),
                                 lse.data(), cview(dO), view(dQ), view(dK),
                                 view(dV));

  // The oracle on [bh, n, d] copies.
  auto toBhnd = [&](const std::vector<float> &x) {
    std::vector<double> out(x.size());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < n; ++i)
          for (int64_t t = 0; t < d; ++t)
            out[((b * H + h) * n + i) * d + t] = x[((b * n + i) * H + h) * d + t];
    return out;
  };
  AttentionShape ref{B * H, n, d, 0};
  auto attends = [&](int64_t bh, int64_t i, int64_t j) {
    return llvm::is_contained(masks[bh % H].keys(i), j);
  };
  std::vector<double> oRef, lseRef, dQRef, dKRef, dVRef;
  referenceAttentionForward(ref, toBhnd(q), toBhnd(k), toBhnd(v), attends, oRef,
                            lseRef);
  referenceAttentionBackward(ref, toBhnd(q), toBhnd(k), toBhnd(v), toBhnd(dO),
                             attends, dQRef, dKRef, dVRef);
  auto maxRel = [](const std::vector<double> &got, const std::vector<double> &want) {
    double err = 0, scale = 0;
    for (size_t e = 0; e < got.size(); ++e) {
      err = std::max(err, std::abs(got[e] - want[e]));
      scale = std::max(scale, std::abs(want[e]));
    }
    return err / scale;
  };
  EXPECT_LT(maxRel(toBhnd(o), oRef), 1e-5);
  EXPECT_LT(maxRel(toBhnd(dQ), dQRef), 1e-5);
  EXPECT_LT(maxRel(toBhnd(dK), dKRef), 1e-5);
  EXPECT_LT(maxRel(toBhnd(dV), dVRef), 1e-5);
  std::vector<double> lseGot(lse.begin(), lse.end());
  EXPECT_LT(maxRel(lseGot, lseRef), 1e-5);

  // Decode of row i reads only rows 0..i of the cache and equals the forward.
  for (int64_t i : {int64_t(0), int64_t(17), n - 1}) {
    std::vector<float> kc = k, vc = v, qi(B * H * d), oi(B * H * d, NAN);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = i + 1; j < n; ++j)
        for (int64_t t = 0; t < H * d; ++t)
          kc[(b * n + j) * H * d + t] = vc[(b * n + j) * H * d + t] = NAN;
    for (int64_t b = 0; b < B; ++b)
      std::copy_n(&q[(b * n + i) * H * d], H * d, &qi[b * H * d]);
    sparseAttentionDecode<float>(shape, ptrs, i,
                                 HeadView<const float>{qi.data(), H * d, d, 0},
                                 cview(kc), cview(vc),
                                 HeadView<float>{oi.data(), H * d, d, 0});
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < H * d; ++t)
        EXPECT_EQ(oi[b * H * d + t], o[(b * n + i) * H * d + t]) << i;
  }
}

//===----------------------------------------------------------------------===//
// Pattern
//===----------------------------------------------------------------------===//

TEST(AttentionPattern, RejectsNonCausal) {
  auto p = AttentionPattern::load(
      source("pattern look_ahead(l = 4) {\n  heads = i - j < l;\n}\n", "ahead.sp"),
      16, 2);
  ASSERT_FALSE(p);
  EXPECT_EQ(errorText(p.takeError()),
            "ahead.sp: pattern 'look_ahead' is not causal: query 0 attends key "
            "15; an autoregressive model must not see later positions (declare "
            "`causal;` or mask j <= i)");
}

TEST(AttentionPattern, CompilerDiagnosticsAreLocated) {
  auto p = AttentionPattern::load(
      source("pattern bad(l = 4) {\n  causal;\n  heads = i / m == j;\n}\n", "bad.sp"),
      16, 2);
  ASSERT_FALSE(p);
  std::string text = errorText(p.takeError());
  EXPECT_NE(text.find("bad.sp:3:"), std::string::npos) << text;
  EXPECT_NE(text.find("'m'"), std::string::npos) << text;
}

// The pair counts the summary prints come from the compiler's layout; they
// equal the exact key lists' (built lazily, on first use).
TEST(AttentionPattern, PairsFromTheLayoutEqualTheKeyLists) {
  for (const char *text : {kFixed, kPerHead, kLayered})
    for (int64_t n : {16, 77}) {
      auto pattern = loadPattern(text, n, 3);
      ASSERT_TRUE(pattern);
      for (int64_t layer = 0; layer < 4; ++layer) {
        int64_t fromLayout = pattern->pairsOfLayer(layer);
        int64_t fromLists = 0;
        auto masks = pattern->layerMasks(layer);
        for (const RowSparsity *m : masks)
          fromLists += m->numPairs();
        if (masks.size() == 1)
          fromLists *= 3;
        EXPECT_EQ(fromLayout, fromLists) << text << " n=" << n << " layer " << layer;
      }
    }
}

TEST(AttentionPattern, HeadsAndLayers) {
  auto fixed = loadPattern(kFixed, 16, 2);
  auto perHead = loadPattern(kPerHead, 16, 3);
  auto layered = loadPattern(kLayered, 16, 2);
  ASSERT_TRUE(fixed && perHead && layered);
  EXPECT_EQ(fixed->layerMasks(0).size(), 1u);
  EXPECT_EQ(fixed->getParam("l"), 4);
  EXPECT_EQ(perHead->layerMasks(5).size(), 3u);
  EXPECT_EQ(layered->getNumLayerMasks(), 2);
  // Layer 3 uses entry 1: every 4th key back.
  llvm::ArrayRef<int32_t> keys = layered->layerMasks(3)[0]->keys(9);
  EXPECT_EQ(std::vector<int32_t>(keys.begin(), keys.end()),
            (std::vector<int32_t>{1, 5, 9}));
  // Head 2 of the per-head pattern sees 12 positions back.
  EXPECT_EQ(perHead->layerMasks(0)[2]->keys(15).front(), 3);
}

//===----------------------------------------------------------------------===//
// Gradients against finite differences
//===----------------------------------------------------------------------===//

struct GradCase {
  const char *name;
  const char *pattern;
  bool image = false, halfQK = false, recompute = false;
  int64_t ffMultiplier = 4;
  float dropout = 0;
};

class ModelGradient : public ::testing::TestWithParam<GradCase> {};

TEST_P(ModelGradient, MatchesFiniteDifferences) {
  const GradCase &gc = GetParam();
  ModelConfig config = smallConfig(16);
  config.halfQK = gc.halfQK;
  config.recompute = gc.recompute;
  config.ffMultiplier = gc.ffMultiplier;
  config.dropout = gc.dropout;
  if (gc.image) {
    config.kind = data::DataKind::Image;
    config.imageHeight = 2;
    config.imageWidth = 4;
    config.imageChannels = 2;
  }
  auto pattern = loadPattern(gc.pattern, 16, config.numHeads);
  ASSERT_TRUE(pattern);
  std::unique_ptr<Backend> backend = createCpuBackend();
  auto model = Transformer::create(*backend, config, *pattern, 2);
  ASSERT_TRUE(bool(model)) << llvm::toString(model.takeError());
  Transformer &m = **model;
  m.initialize(11);
  randomizeParams(m, 5);
  std::vector<int32_t> inputs, targets;
  randomTokens(2, 16, 9, inputs, targets);
  const uint64_t seed = 1234;

  auto loss = [&]() {
    llvm::Expected<double> l = m.run(inputs, targets, 2, false, seed);
    EXPECT_TRUE(bool(l));
    return *l;
  };
  // Dropout only runs in training: evaluate the training-mode loss (with
  // backward, whose gradients are then ignored) for the differences.
  auto trainLoss = [&]() {
    llvm::Expected<double> l = m.run(inputs, targets, 2, true, seed);
    EXPECT_TRUE(bool(l));
    return *l;
  };
  ASSERT_TRUE(bool(m.run(inputs, targets, 2, true, seed)));
  std::vector<float> grad(m.numParams()), params(m.numParams());
  backend->download(grad.data(), m.grads(), grad.size() * 4);
  backend->download(params.data(), m.params(), params.size() * 4);
  if (gc.dropout == 0) {
    EXPECT_DOUBLE_EQ(loss(), trainLoss());
  }

  // One direction per parameter tensor: its gradient plus as much noise, so
  // that both the gradient's length and its direction are checked.
  std::mt19937 rng(17);
  std::normal_distribution<double> normal;
  int checked = 0;
  for (const ParamInfo &info : m.getParamInfo()) {
    std::vector<double> u(info.count());
    double gnorm = 0, unorm = 0;
    for (int64_t e = 0; e < info.count(); ++e)
      gnorm += double(grad[info.offset + e]) * grad[info.offset + e];
    gnorm = std::sqrt(gnorm);
    if (gnorm == 0) {
      ADD_FAILURE() << info.name << " has a zero gradient";
      continue;
    }
    for (int64_t e = 0; e < info.count(); ++e) {
      u[e] = grad[info.offset + e] / gnorm + normal(rng) / std::sqrt(double(info.count()));
      unorm += u[e] * u[e];
    }
    unorm = std::sqrt(unorm);
    double analytic = 0;
    for (int64_t e = 0; e < info.count(); ++e) {
      u[e] /= unorm;
      analytic += u[e] * grad[info.offset + e];
    }
    const double eps = 1e-2;
    auto at = [&](double t) {
      std::vector<float> p = params;
      for (int64_t e = 0; e < info.count(); ++e)
        p[info.offset + e] = static_cast<float>(params[info.offset + e] + t * u[e]);
      backend->upload(m.params(), p.data(), p.size() * 4);
      return trainLoss();
    };
    // Fourth-order central difference.
    double numeric = (-at(2 * eps) + 8 * at(eps) - 8 * at(-eps) + at(-2 * eps)) /
                     (12 * eps);
    EXPECT_NEAR(numeric, analytic, 2e-2 * std::abs(analytic) + 2e-4)
        << gc.name << ": " << info.name;
    ++checked;
  }
  backend->upload(m.params(), params.data(), params.size() * 4);
  EXPECT_EQ(checked, static_cast<int>(m.getParamInfo().size()));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ModelGradient,
    ::testing::Values(GradCase{"fixed", kFixed},
                      GradCase{"perhead_half", kPerHead, false, true, false, 2},
                      GradCase{"layered_recompute", kLayered, false, false, true},
                      GradCase{"image_dropout", kFixed, true, false, false, 4, 0.25f},
                      GradCase{"dropout_recompute", kPerHead, false, false, true,
                               4, 0.3f}),
    [](const auto &info) { return std::string(info.param.name); });

// Also at d = 256, where recomputation keeps the logits (256 wide) and
// their gradient in the activations (Transformer::allocate).
TEST(Model, RecomputeGivesIdenticalGradients) {
  auto pattern = loadPattern(kFixed, 16, 2);
  std::unique_ptr<Backend> backend = createCpuBackend();
  std::vector<int32_t> inputs, targets;
  randomTokens(2, 16, 4, inputs, targets);
  for (int64_t d : {16, 256}) {
    SCOPED_TRACE("d = " + std::to_string(d));
    std::vector<std::vector<float>> grads, tokenLosses(2);
    std::vector<double> losses;
    for (bool recompute : {false, true}) {
      ModelConfig c = smallConfig();
      c.dModel = d;
      c.recompute = recompute;
      c.dropout = 0.2f;
      auto m = Transformer::create(*backend, c, *pattern, 2);
      ASSERT_TRUE(bool(m));
      (*m)->initialize(3);
      randomizeParams(**m, 8);
      losses.push_back(*(*m)->run(inputs, targets, 2, true, 77,
                                  &tokenLosses[recompute]));
      grads.emplace_back((*m)->numParams());
      backend->download(grads.back().data(), (*m)->grads(),
                        grads.back().size() * 4);
    }
    EXPECT_EQ(losses[0], losses[1]);
    EXPECT_EQ(tokenLosses[0], tokenLosses[1]);
    EXPECT_EQ(grads[0], grads[1]);
  }
}

TEST(Model, InitializationFollowsThePaper) {
  ModelConfig c = smallConfig(64);
  c.dModel = 64;
  c.numLayers = 8;
  auto pattern = loadPattern(kFixed, 64, 2);
  std::unique_ptr<Backend> backend = createCpuBackend();
  auto m = Transformer::create(*backend, c, *pattern, 1);
  ASSERT_TRUE(bool(m));
  (*m)->initialize(42);
  std::vector<float> p((*m)->numParams());
  backend->download(p.data(), (*m)->params(), p.size() * 4);
  for (const ParamInfo &info : (*m)->getParamInfo()) {
    double sum = 0, sq = 0;
    for (int64_t e = 0; e < info.count(); ++e) {
      sum += p[info.offset + e];
      sq += double(p[info.offset + e]) * p[info.offset + e];
    }
    double mean = sum / info.count(), std = std::sqrt(sq / info.count() - mean * mean);
    if (info.isGain) {
      EXPECT_EQ(mean, 1.0) << info.name;
      continue;
    }
    if (info.initStd == 0) {
      EXPECT_EQ(sq, 0.0) << info.name;
      continue;
    }
    EXPECT_NEAR(std, info.initStd, 0.1 * info.initStd) << info.name;
  }
  // W_o and W2 carry 1/sqrt(2 N) more than 0.125/sqrt(fan_in).
  const auto &info = (*m)->getParamInfo();
  auto find = [&](llvm::StringRef name) {
    return *llvm::find_if(info, [&](const ParamInfo &p) { return p.name == name; });
  };
  EXPECT_DOUBLE_EQ(find("layer0.wq").initStd, 0.125 / 8);
  EXPECT_DOUBLE_EQ(find("layer3.wo").initStd, 0.125 / 8 / 4);
  EXPECT_DOUBLE_EQ(find("layer3.w2").initStd, 0.125 / 16 / 4);
  EXPECT_EQ(find("out.w").initStd, 0.0);
}

TEST(Model, DecodeMatchesForward) {
  for (const char *text : {kFixed, kPerHead, kLayered}) {
    auto pattern = loadPattern(text, 16, 2);
    std::unique_ptr<Backend> backend = createCpuBackend();
    auto m = Transformer::create(*backend, smallConfig(), *pattern, 2);
    ASSERT_TRUE(bool(m));
    (*m)->initialize(1);
    randomizeParams(**m, 2);
    std::vector<int32_t> inputs, targets;
    randomTokens(2, 16, 6, inputs, targets);
    std::vector<float> tokenLosses;
    ASSERT_TRUE(bool((*m)->run(inputs, targets, 2, false, 0, &tokenLosses)));
    ASSERT_FALSE(bool((*m)->beginDecode(2)));
    std::vector<float> logits;
    for (int64_t t = 0; t < 16; ++t) {
      ASSERT_FALSE(bool((*m)->decode({inputs[t], inputs[16 + t]}, t, logits)));
      for (int64_t b = 0; b < 2; ++b) {
        const float *z = logits.data() + b * kVocab;
        double mx = *std::max_element(z, z + kVocab), sum = 0;
        for (int64_t v = 0; v < kVocab; ++v)
          sum += std::exp(z[v] - mx);
        double nll = std::log(sum) + mx - z[targets[b * 16 + t]];
        EXPECT_NEAR(nll, tokenLosses[b * 16 + t], 1e-4 * nll) << t;
      }
    }
    // Out of order is an error.
    EXPECT_EQ(errorText((*m)->decode({1, 2}, 3, logits)),
              "decode position 3: expected 16 (positions run 0..15 in order)");
  }
}

/// The CPU backend picking tokens "itself" (Backend::pickTokens' contract
/// on host memory, through pickByte): what decodeAndPick does with the
/// ids, positions, history and prompt is then checked against the host's
/// sampling loop on the same backend.
class PickingBackend final : public test::ForwardingBackend {
public:
  int64_t calls = 0;
  bool picksTokens() const override { return true; }
  void pickTokens(const PickTokens &p) override {
    ++calls;
    const PickOptions &o = *p.options;
    SampleOptions so;
    so.seed = o.seed;
    so.topK = o.topK;
    so.temperature = o.temperature;
    for (int64_t s = 0; s < p.batch; ++s) {
      const int32_t t = p.ids[p.batch + s];
      const int32_t next =
          t < o.promptLength
              ? p.prompt[t]
              : pickByte(p.logits + s * kVocab, so, uint64_t(o.firstSample + s), t);
      if (t < o.length)
        p.history[s * p.historyStride + t] = next;
      p.ids[s] = next;
      p.ids[p.batch + s] = t + 1;
    }
  }
};

// Sampling with the backend's picks (Transformer::decodeAndPick) gives the
// host loop's samples: two batches (the second numbered from 2 for the
// draws), a prompt, temperatures and top-k; one pick per sequence batch and
// position. Misuse has exact errors.
TEST(Model, PicksOnTheBackendEqualTheHostLoop) {
  auto pattern = loadPattern(kFixed, 16, 2);
  PickingBackend picking;
  auto m = Transformer::create(picking, smallConfig(), *pattern, 2);
  ASSERT_TRUE(bool(m));
  (*m)->initialize(1);
  randomizeParams(**m, 2);
  for (auto [temperature, topK] :
       {std::pair<double, int64_t>{1.0, 0}, {0.7, 4}, {0.0, 0}}) {
    SampleOptions o;
    o.count = 3;
    o.seed = 9;
    o.prompt = {'a', 'b'};
    o.length = 12;
    o.temperature = temperature;
    o.topK = topK;
    picking.calls = 0;
    auto device = sample(**m, o);
    ASSERT_TRUE(bool(device)) << llvm::toString(device.takeError());
    EXPECT_EQ(picking.calls, 2 * 12);
    EXPECT_NE((*m)->decodeMethod().find("tokens picked by the backend"),
              std::string::npos);
    o.pickOnHost = true;
    auto host = sample(**m, o);
    ASSERT_TRUE(bool(host));
    EXPECT_EQ(picking.calls, 2 * 12);
    EXPECT_EQ(*device, *host) << "temperature " << temperature;
    ASSERT_EQ((*device)[2].size(), 12u);
    EXPECT_EQ((*device)[2][1], 'b');
  }
  Backend::PickOptions o;
  o.length = 4;
  std::vector<std::vector<uint8_t>> out;
  ASSERT_FALSE(bool((*m)->beginDecode(2)));
  std::vector<float> logits;
  ASSERT_FALSE(bool((*m)->decode({1, 2}, 0, logits)));
  EXPECT_EQ(errorText((*m)->decodeAndPick(o, {}, out)),
            "decodeAndPick() starts at position 0; decoding is at 1");
  ASSERT_FALSE(bool((*m)->beginDecode(2)));
  o.length = 17;
  EXPECT_EQ(errorText((*m)->decodeAndPick(o, {}, out)),
            "sample length 17 is outside 1..16");
  o.length = 4;
  EXPECT_EQ(errorText((*m)->decodeAndPick(o, std::vector<uint8_t>(17, 'x'), out)),
            "the prompt (17 bytes) exceeds the model's sequence length 16");
  std::unique_ptr<Backend> cpu = createCpuBackend();
  auto plain = Transformer::create(*cpu, smallConfig(), *pattern, 2);
  ASSERT_TRUE(bool(plain));
  EXPECT_EQ(errorText((*plain)->decodeAndPick(o, {}, out)),
            "decodeAndPick() before beginDecode()");
  ASSERT_FALSE(bool((*plain)->beginDecode(1)));
  EXPECT_EQ(errorText((*plain)->decodeAndPick(o, {}, out)),
            "cpu does not pick tokens itself");
}

/// The CPU backend with packed decode weights (what the CUDA backend keeps):
/// records every packLinear call and the packed pointers fusedLinear gets,
/// then computes as the CPU does (from b).
class PackingBackend final : public test::ForwardingBackend {
public:
  struct Pack {
    const float *b;
    int64_t k, n;
    const void *dst;
  };
  std::vector<Pack> packs;
  std::vector<const void *> linearPacked;
  int64_t packedLinearBytes(int64_t k, int64_t n) const override {
    return k * n * 2;
  }
  void packLinear(void *dst, const float *b, int64_t k, int64_t n) override {
    packs.push_back({b, k, n, dst});
  }
  void fusedLinear(llvm::ArrayRef<LinearOut> outs, const float *a, int64_t m,
                   int64_t k, bool accumulate,
                   const LinearFusion &fusion) override {
    for (const LinearOut &o : outs)
      linearPacked.push_back(o.packed);
    Backend::fusedLinear(outs, a, m, k, accumulate, fusion);
  }
};

// beginDecode packs every weight matrix (each block's Wq, Wk, Wv, Wo, W1,
// W2, then Wout) with its [k, n] shape into 256-byte aligned, disjoint
// places, again at every beginDecode (into the same places); the decoding
// step hands each linear layer its matrix's copy; results are the CPU's.
TEST(Model, DecodePacksEveryWeightMatrix) {
  auto pattern = loadPattern(kFixed, 16, 2);
  PackingBackend packing;
  std::unique_ptr<Backend> cpu = createCpuBackend();
  const ModelConfig c = smallConfig();
  auto m = Transformer::create(packing, c, *pattern, 2);
  auto ref = Transformer::create(*cpu, c, *pattern, 2);
  ASSERT_TRUE(m && ref);
  for (auto *model : {&**m, &**ref}) {
    model->initialize(1);
    randomizeParams(*model, 2);
  }
  ASSERT_FALSE(bool((*m)->beginDecode(2)));
  ASSERT_FALSE(bool((*ref)->beginDecode(2)));
  const int64_t d = c.dModel, dqk = c.qkDim(), ff = c.ffDim();
  const char *names[] = {"wq", "wk", "wv", "wo", "w1", "w2"};
  const std::pair<int64_t, int64_t> shapes[] = {
      {d, dqk}, {d, dqk}, {d, d}, {d, d}, {d, ff}, {ff, d}};
  auto offsetOf = [&](const std::string &name) {
    for (const ParamInfo &p : (*m)->getParamInfo())
      if (p.name == name)
        return p.offset;
    ADD_FAILURE() << "no parameter " << name;
    return int64_t(-1);
  };
  ASSERT_EQ(packing.packs.size(), size_t(c.numLayers * 6 + 1));
  for (int64_t l = 0; l <= c.numLayers; ++l)
    for (int t = 0; t < (l < c.numLayers ? 6 : 1); ++t) {
      SCOPED_TRACE(llvm::formatv("layer {0}, matrix {1}", l, t).str());
      const PackingBackend::Pack &p = packing.packs[size_t(l * 6 + t)];
      std::string name = l < c.numLayers
                             ? llvm::formatv("layer{0}.{1}", l, names[t]).str()
                             : "out.w";
      EXPECT_EQ(p.b, (*m)->params() + offsetOf(name));
      std::pair<int64_t, int64_t> kn =
          l < c.numLayers ? shapes[t] : std::pair<int64_t, int64_t>{d, kVocab};
      EXPECT_EQ(std::make_pair(p.k, p.n), kn);
      const char *dst = static_cast<const char *>(p.dst);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(dst) % 16, 0u);
      if (l * 6 + t > 0) {
        const PackingBackend::Pack &prev = packing.packs[size_t(l * 6 + t - 1)];
        const char *prevDst = static_cast<const char *>(prev.dst);
        EXPECT_EQ((dst - prevDst) % 256, 0);
        EXPECT_GE(dst - prevDst, prev.k * prev.n * 2);
      }
    }
  std::vector<int32_t> inputs, targets;
  randomTokens(2, 16, 6, inputs, targets);
  std::vector<float> logits, want;
  for (int64_t t = 0; t < 4; ++t) {
    ASSERT_FALSE(bool((*m)->decode({inputs[t], inputs[16 + t]}, t, logits)));
    ASSERT_FALSE(bool((*ref)->decode({inputs[t], inputs[16 + t]}, t, want)));
    EXPECT_EQ(logits, want) << t;
  }
  // Per step: q, k, v, Wo, W1, W2 of each block, then the logits.
  ASSERT_EQ(packing.linearPacked.size(), size_t(4 * (c.numLayers * 6 + 1)));
  for (size_t i = 0; i < size_t(c.numLayers * 6 + 1); ++i)
    EXPECT_EQ(packing.linearPacked[i], packing.packs[i].dst) << i;
  // Again at the next beginDecode (the weights may have been trained), into
  // the same places.
  ASSERT_FALSE(bool((*m)->beginDecode(2)));
  ASSERT_EQ(packing.packs.size(), size_t(2 * (c.numLayers * 6 + 1)));
  for (size_t i = 0; i < size_t(c.numLayers * 6 + 1); ++i)
    EXPECT_EQ(packing.packs[i + c.numLayers * 6 + 1].dst, packing.packs[i].dst);
}

// The CUDA backend's kernels compile (NVRTC needs no GPU) for the targets
// the GPU machine and its predecessors have, and hold every entry point.
TEST(CudaBackend, KernelsCompileForSm80AndSm90a) {
  for (const char *arch : {"sm_80", "sm_90a"}) {
    llvm::Expected<std::string> ptx = compileCudaBackendKernels(arch);
    ASSERT_TRUE(bool(ptx)) << arch << ": " << llvm::toString(ptx.takeError());
    for (const char *entry :
         {"sp_layernorm_forward", "sp_column_partials", "sp_adamw",
          "sp_softmax_cross_entropy", "sp_attention_forward",
          "sp_attention_backward_dq", "sp_attention_backward_dkdv",
          "sp_attention_decode", "sp_pack_heads", "sp_unpack_heads",
          "sp_linear_small", "sp_rows_to_half", "sp_append_row_at",
          "sp_gemv_f32", "sp_gemv_h16", "sp_gemv_chain_f32",
          "sp_gemv_chain_h16", "sp_pack_linear"})
      EXPECT_NE(ptx->find(std::string(".entry ") + entry), std::string::npos)
          << arch << " lacks " << entry;
  }
}

// Which backward kernels codegen puts on wgmma (CodegenOptions::
// backwardWgmmaMinBlocks), against the lists counted here from the forward
// tables: a segment's dK/dV kernels where its blocks average at least 8 per
// key block that any query block reaches, a kernel's dQ kernel where its
// blocks (every segment) average at least 8 per query block that reaches
// any; each with its own shared memory. Only sm_90a at head dim 64 with the
// switch on; 0 puts every one on wgmma.
TEST(Codegen, BackwardWgmmaFollowsTheListLengths) {
  constexpr const char *kPaperFixed = R"(pattern fixed(l = 128, c = 32) {
  causal;
  heads = i / l == j / l || j % l >= l - c;
})";
  int mixedPatterns = 0;
  for (const char *text : {kPaperFixed, kPerHead, kLayered, kFixed}) {
    auto pattern = loadPattern(text, 4096, 4);
    ASSERT_TRUE(pattern);
    const CompiledPattern &compiled = pattern->getCompiled();
    struct Case {
      const char *arch;
      int64_t headDim, minBlocks;
      bool on;
    };
    for (Case c : {Case{"sm_90a", 64, 8, true}, Case{"sm_90a", 64, 0, true},
                   Case{"sm_90a", 64, 8, false}, Case{"sm_80", 64, 8, true},
                   Case{"sm_90a", 128, 8, true}}) {
      codegen::CodegenOptions cg;
      cg.arch = c.arch;
      cg.headDim = c.headDim;
      cg.backwardWgmma = c.on;
      cg.backwardWgmmaMinBlocks = c.minBlocks;
      auto gen = codegen::generateForward(compiled.pattern, compiled.layout, cg);
      ASSERT_TRUE(mlir::succeeded(gen));
      const bool allowed =
          c.on && c.headDim == 64 && llvm::StringRef(c.arch) == "sm_90a";
      bool anyWgmma = false, anySync = false;
      for (auto [m, mask] : llvm::enumerate(gen->masks)) {
        const MaskLayout &layoutMask = compiled.layout.masks[m];
        for (const codegen::ForwardKernelInfo &kernel : mask.kernels) {
          std::map<int64_t, int64_t> perQueryBlock;
          for (const codegen::SegmentInfo &seg : kernel.segments) {
            const ComponentLayout &comp = layoutMask.components[seg.component];
            std::set<int32_t> keyBlocks;
            for (const BlockTable *t : {&comp.full, &comp.partial}) {
              keyBlocks.insert(t->indices.begin(), t->indices.end());
              for (size_t qb = 0; qb + 1 < t->offsets.size(); ++qb)
                perQueryBlock[int64_t(qb)] += t->offsets[qb + 1] - t->offsets[qb];
            }
            const int64_t blocks = comp.full.size() + comp.partial.size();
            const bool expect =
                allowed && (c.minBlocks == 0 ||
                            blocks >= 8 * int64_t(keyBlocks.size()));
            EXPECT_EQ(seg.backwardWgmma, expect)
                << c.arch << " D " << c.headDim << " " << seg.backwardDkDvName
                << ": " << blocks << " blocks over " << keyBlocks.size()
                << " key blocks";
            EXPECT_EQ(seg.backwardDkDvSharedBytes,
                      codegen::backwardDkDvSharedBytes(cg, expect));
            (seg.backwardWgmma ? anyWgmma : anySync) = true;
          }
          int64_t total = 0, lists = 0;
          for (auto [qb, n] : perQueryBlock) {
            total += n;
            lists += n > 0;
          }
          const bool expectDq =
              allowed && (c.minBlocks == 0 || total >= 8 * lists);
          EXPECT_EQ(kernel.backwardDqWgmma, expectDq) << kernel.backwardDqName;
          EXPECT_EQ(kernel.backwardDqSharedBytes,
                    codegen::backwardDqSharedBytes(cg, expectDq));
        }
      }
      if (!allowed) {
        EXPECT_FALSE(anyWgmma) << c.arch << " D " << c.headDim;
      }
      if (allowed && c.minBlocks == 0) {
        EXPECT_FALSE(anySync);
      }
      if (allowed && c.minBlocks == 8 && anyWgmma && anySync)
        ++mixedPatterns;
    }
  }
  // The paper's fixed pattern mixes them: its band (1.5 query blocks per key
  // block) on mma.sync, its summary columns (32) on wgmma.
  EXPECT_GE(mixedPatterns, 1);
}

// The fused decoding step compiles (NVRTC, no GPU) with the generated
// attention of a merged, a per-head and a layered pattern, for sm_80 and
// sm_90a, and calls every decode variant through the generated dispatcher.
TEST(CudaBackend, DecodeStepCompilesForEveryPatternKind) {
  for (const char *text : {kFixed, kPerHead, kLayered}) {
    auto pattern = loadPattern(text, 64, 2);
    ASSERT_TRUE(pattern);
    const CompiledPattern &compiled = pattern->getCompiled();
    for (const char *arch : {"sm_80", "sm_90a"}) {
      codegen::CodegenOptions cg;
      cg.arch = arch;
      cg.backward = false;
      auto gen = codegen::generateForward(compiled.pattern, compiled.layout, cg);
      ASSERT_TRUE(mlir::succeeded(gen));
      size_t kernels = 0;
      for (const codegen::MaskKernels &m : gen->masks)
        kernels += m.kernels.size();
      EXPECT_NE(gen->source.find("constexpr int kNumDecodeKernels = " +
                                 std::to_string(kernels) + ";"),
                std::string::npos);
      llvm::Expected<std::string> ptx = compileDecodeStepKernel(*gen);
      ASSERT_TRUE(bool(ptx)) << arch << ": " << llvm::toString(ptx.takeError());
      EXPECT_NE(ptx->find(".entry sp_decode_step"), std::string::npos) << arch;
      // The decode reads what the step wrote from L2, never through the
      // non-coherent path.
      size_t decodeRow = ptx->find("decodeRow");
      ASSERT_NE(decodeRow, std::string::npos);
      EXPECT_EQ(ptx->find("ld.global.nc.v4", decodeRow), std::string::npos)
          << arch;
    }
  }
}

// The CUDA backend's environment variables are checked without a GPU: every
// accepted value, and a bad one named with the variable.
TEST(CudaBackend, EnvironmentIsChecked) {
  const char *names[] = {"SPARSETX_PROFILE", "SPARSETX_CUDA_GRAPHS",
                         "SPARSETX_BF16_GEMM", "SPARSETX_FUSED_DECODE",
                         "SPARSETX_OVERLAP_LAUNCHES", "SPARSETX_LINEAR_CHAIN",
                         "SPARSETX_WGMMA_FORWARD", "SPARSETX_WGMMA_BACKWARD"};
  for (const char *name : names)
    unsetenv(name);
  llvm::Expected<CudaEnvironment> env = readCudaEnvironment();
  ASSERT_TRUE(bool(env));
  EXPECT_FALSE(env->profile);
  EXPECT_TRUE(env->graphs);
  EXPECT_FALSE(env->fusedDecode);
  EXPECT_TRUE(env->overlapLaunches);
  EXPECT_FALSE(env->linearChain);
  EXPECT_TRUE(env->wgmmaForward);
  EXPECT_TRUE(env->wgmmaBackward);
  EXPECT_EQ(env->bf16Gemm, "fast");
  setenv("SPARSETX_OVERLAP_LAUNCHES", "0", 1);
  env = readCudaEnvironment();
  ASSERT_TRUE(bool(env));
  EXPECT_FALSE(env->overlapLaunches);
  setenv("SPARSETX_OVERLAP_LAUNCHES", "yes", 1);
  EXPECT_EQ(errorText(readCudaEnvironment().takeError()),
            "SPARSETX_OVERLAP_LAUNCHES must be 0 or 1, got 'yes'");
  unsetenv("SPARSETX_OVERLAP_LAUNCHES");
  setenv("SPARSETX_LINEAR_CHAIN", "1", 1);
  env = readCudaEnvironment();
  ASSERT_TRUE(bool(env));
  EXPECT_TRUE(env->linearChain);
  setenv("SPARSETX_LINEAR_CHAIN", "on", 1);
  EXPECT_EQ(errorText(readCudaEnvironment().takeError()),
            "SPARSETX_LINEAR_CHAIN must be 0 or 1, got 'on'");
  unsetenv("SPARSETX_LINEAR_CHAIN");
  setenv("SPARSETX_WGMMA_FORWARD", "0", 1);
  env = readCudaEnvironment();
  ASSERT_TRUE(bool(env));
  EXPECT_FALSE(env->wgmmaForward);
  setenv("SPARSETX_WGMMA_FORWARD", "true", 1);
  EXPECT_EQ(errorText(readCudaEnvironment().takeError()),
            "SPARSETX_WGMMA_FORWARD must be 0 or 1, got 'true'");
  unsetenv("SPARSETX_WGMMA_FORWARD");
  setenv("SPARSETX_WGMMA_BACKWARD", "0", 1);
  env = readCudaEnvironment();
  ASSERT_TRUE(bool(env));
  EXPECT_FALSE(env->wgmmaBackward);
  setenv("SPARSETX_WGMMA_BACKWARD", "-1", 1);
  EXPECT_EQ(errorText(readCudaEnvironment().takeError()),
            "SPARSETX_WGMMA_BACKWARD must be 0 or 1, got '-1'");
  unsetenv("SPARSETX_WGMMA_BACKWARD");
  setenv("SPARSETX_PROFILE", "1", 1);
  setenv("SPARSETX_CUDA_GRAPHS", "0", 1);
  setenv("SPARSETX_FUSED_DECODE", "1", 1);
  for (const char *mode : {"convert", "fast", "tf32"}) {
    setenv("SPARSETX_BF16_GEMM", mode, 1);
    env = readCudaEnvironment();
    ASSERT_TRUE(bool(env)) << mode;
    EXPECT_TRUE(env->profile);
    EXPECT_FALSE(env->graphs);
    EXPECT_TRUE(env->fusedDecode);
    EXPECT_EQ(env->bf16Gemm, mode);
  }
  setenv("SPARSETX_FUSED_DECODE", "2", 1);
  EXPECT_EQ(errorText(readCudaEnvironment().takeError()),
            "SPARSETX_FUSED_DECODE must be 0 or 1, got '2'");
  setenv("SPARSETX_FUSED_DECODE", "1", 1);
  setenv("SPARSETX_CUDA_GRAPHS", "yes", 1);
  EXPECT_EQ(errorText(readCudaEnvironment().takeError()),
            "SPARSETX_CUDA_GRAPHS must be 0 or 1, got 'yes'");
  setenv("SPARSETX_CUDA_GRAPHS", "1", 1);
  setenv("SPARSETX_BF16_GEMM", "bf16", 1);
  EXPECT_EQ(errorText(readCudaEnvironment().takeError()),
            "SPARSETX_BF16_GEMM must be convert, fast or tf32, got 'bf16'");
  setenv("SPARSETX_PROFILE", "on", 1);
  EXPECT_EQ(errorText(readCudaEnvironment().takeError()),
            "SPARSETX_PROFILE must be 0 or 1, got 'on'");
  for (const char *name : names)
    unsetenv(name);
}

// Evaluation runs without dropout: a model with dropout evaluates exactly as
// the same parameters without it (and training with it does not).
TEST(Model, DropoutOnlyInTraining) {
  auto pattern = loadPattern(kFixed, 16, 2);
  std::unique_ptr<Backend> backend = createCpuBackend();
  ModelConfig with = smallConfig(), without = smallConfig();
  with.dropout = 0.3f;
  auto a = Transformer::create(*backend, with, *pattern, 2);
  auto b = Transformer::create(*backend, without, *pattern, 2);
  ASSERT_TRUE(a && b);
  (*a)->initialize(1);
  randomizeParams(**a, 2);
  backend->copy((*b)->params(), (*a)->params(), (*a)->numParams() * 4);
  std::vector<int32_t> inputs, targets;
  randomTokens(2, 16, 6, inputs, targets);
  llvm::Expected<double> evalA = (*a)->run(inputs, targets, 2, false);
  llvm::Expected<double> evalB = (*b)->run(inputs, targets, 2, false);
  llvm::Expected<double> trainA = (*a)->run(inputs, targets, 2, true, 7);
  ASSERT_TRUE(evalA && evalB && trainA);
  EXPECT_EQ(*evalA, *evalB);
  EXPECT_NE(*trainA, *evalA);
}

// Recomputation over chunks of rows (what makes long sequences fit) gives
// the loss and gradients of the whole-batch computation: chunks of 5 rows of
// 2 x 16, the last one partial, with dropout on; also when a step uses only
// part of the allocated batch.
TEST(Model, ChunkedFeedForwardMatchesWhole) {
  auto pattern = loadPattern(kFixed, 16, 2);
  std::unique_ptr<Backend> backend = createCpuBackend();
  ModelConfig c = smallConfig();
  c.recompute = true;
  c.dropout = 0.2f;
  auto whole = Transformer::create(*backend, c, *pattern, 2);
  auto chunked = Transformer::create(*backend, c, *pattern, 2);
  ASSERT_TRUE(whole && chunked);
  EXPECT_EQ((*whole)->getFeedForwardChunkRows(), 32);
  (*chunked)->setFeedForwardChunkRows(5);
  EXPECT_EQ((*chunked)->getFeedForwardChunkRows(), 5);
  (*whole)->initialize(1);
  randomizeParams(**whole, 2);
  const int64_t P = (*whole)->numParams();
  backend->copy((*chunked)->params(), (*whole)->params(), P * 4);
  for (int64_t batch : {2, 1}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    std::vector<int32_t> inputs, targets;
    randomTokens(batch, 16, 6, inputs, targets);
    llvm::Expected<double> a = (*whole)->run(inputs, targets, batch, true, 7);
    llvm::Expected<double> b = (*chunked)->run(inputs, targets, batch, true, 7);
    ASSERT_TRUE(a && b);
    EXPECT_NEAR(*a, *b, 1e-6 * std::fabs(*a));
    std::vector<float> ga(P), gb(P);
    backend->download(ga.data(), (*whole)->grads(), P * 4);
    backend->download(gb.data(), (*chunked)->grads(), P * 4);
    double diff = 0, mag = 0;
    for (int64_t i = 0; i < P; ++i) {
      diff = std::max(diff, double(std::fabs(ga[i] - gb[i])));
      mag = std::max(mag, double(std::fabs(ga[i])));
    }
    EXPECT_GT(mag, 0.0);
    EXPECT_LE(diff, 1e-5 * mag);
  }
}

TEST(Model, TokenErrorsNameTheirPosition) {
  auto pattern = loadPattern(kFixed, 16, 2);
  std::unique_ptr<Backend> backend = createCpuBackend();
  auto m = Transformer::create(*backend, smallConfig(), *pattern, 2);
  ASSERT_TRUE(bool(m));
  std::vector<int32_t> inputs, targets;
  randomTokens(2, 16, 1, inputs, targets);
  inputs[21] = 300;
  EXPECT_EQ(errorText((*m)->run(inputs, targets, 2, false).takeError()),
            "input token 300 at batch 1 position 5 is outside 0..256");
  inputs[21] = 3;
  targets[3] = 256;
  EXPECT_EQ(errorText((*m)->run(inputs, targets, 2, false).takeError()),
            "target token 256 at batch 0 position 3 is outside 0..255");
  EXPECT_EQ(errorText((*m)->run(inputs, targets, 3, false).takeError()),
            "batch 3 is outside 1..2");
}

TEST(Model, MismatchedPatternIsAnError) {
  auto pattern = loadPattern(kFixed, 32, 2);
  std::unique_ptr<Backend> backend = createCpuBackend();
  auto m = Transformer::create(*backend, smallConfig(16), *pattern, 2);
  ASSERT_FALSE(bool(m));
  EXPECT_EQ(errorText(m.takeError()),
            "pattern compiled for n = 32, 2 heads, model has n = 16, 2 heads");
}

//===----------------------------------------------------------------------===//
// Configurations and schedule
//===----------------------------------------------------------------------===//

TEST(Config, Schedule) {
  TrainConfig t;
  t.steps = 110;
  t.warmupSteps = 10;
  t.lr = 1.0f;
  EXPECT_DOUBLE_EQ(t.learningRate(1), 0.1);
  EXPECT_DOUBLE_EQ(t.learningRate(10), 1.0);
  EXPECT_NEAR(t.learningRate(60), 0.5, 1e-12);
  EXPECT_NEAR(t.learningRate(110), 0.0, 1e-12);
  EXPECT_NEAR(t.learningRate(35), 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-12);
}

TEST(Config, ValidationNamesTheField) {
  ModelConfig c = smallConfig();
  c.numHeads = 3;
  EXPECT_EQ(errorText(c.validate()), "d_model = 16 is not a multiple of heads = 3");
  c = smallConfig();
  c.ffMultiplier = 3;
  EXPECT_EQ(errorText(c.validate()),
            "ff_multiplier must be 4 (the paper's FF) or 2 (its half-size FF), got 3");
  c = smallConfig();
  c.kind = data::DataKind::Image;
  c.imageHeight = c.imageWidth = 4;
  c.imageChannels = 3;
  EXPECT_EQ(errorText(c.validate()),
            "seq_len = 16 must be one whole image (4 x 4 x 3 = 48 bytes)");
  c = smallConfig();
  c.embedStride = 0;
  EXPECT_EQ(errorText(c.validate()), "embed_stride must be positive (got 0)");
}

TEST(Config, JsonRoundTripAndPresets) {
  ModelConfig c = smallConfig();
  c.halfQK = true;
  c.dropout = 0.25f;
  llvm::Expected<ModelConfig> back = ModelConfig::fromJSON(c.toJSON());
  ASSERT_TRUE(bool(back));
  EXPECT_EQ(llvm::json::Value(back->toJSON()), llvm::json::Value(c.toJSON()));
  llvm::json::Object o = *c.toJSON().getAsObject();
  o.erase("heads");
  EXPECT_EQ(errorText(ModelConfig::fromJSON(llvm::json::Value(std::move(o))).takeError()),
            "model configuration lacks field 'heads'");
  for (const char *name : {"tiny", "enwik8", "cifar10", "imagenet64"})
    EXPECT_TRUE(bool(findPreset(name))) << name;
  EXPECT_EQ(errorText(findPreset("huge").takeError()),
            "unknown preset 'huge' (known: tiny, enwik8, cifar10, imagenet64)");
  Preset cifar = *findPreset("cifar10");
  EXPECT_EQ(cifar.model.numLayers, 128);
  EXPECT_TRUE(cifar.model.halfQK);
  EXPECT_EQ(cifar.model.ffMultiplier, 2);
}

//===----------------------------------------------------------------------===//
// Data batches, training, checkpoints
//===----------------------------------------------------------------------===//

TEST(Trainer, BatchesShiftByOne) {
  data::Dataset d = textData(1000);
  std::vector<int32_t> in, out;
  ASSERT_FALSE(bool(makeBatch(d, data::Split::Train, {0, 10}, 8, in, out)));
  llvm::ArrayRef<uint8_t> train = d.tokens(data::Split::Train);
  EXPECT_EQ(in[0], kStartToken);
  for (int64_t t = 0; t < 8; ++t) {
    EXPECT_EQ(out[t], train[t]);
    EXPECT_EQ(out[8 + t], train[10 + t]);
    if (t) {
      EXPECT_EQ(in[8 + t], train[10 + t - 1]);
    }
  }
}

class TrainerTest : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_FALSE(llvm::sys::fs::createUniqueDirectory("sparsetx-model", dir));
  }
  void TearDown() override { llvm::sys::fs::remove_directories(dir); }
  std::string path(llvm::StringRef name) { return (dir + "/" + name).str(); }

  llvm::SmallString<128> dir;
};

struct Run {
  std::unique_ptr<Backend> backend = createCpuBackend();
  std::unique_ptr<AttentionPattern> pattern;
  std::unique_ptr<Transformer> model;
  std::unique_ptr<Trainer> trainer;
};

std::unique_ptr<Run> makeRun(const data::Dataset &d, const TrainConfig &t) {
  auto r = std::make_unique<Run>();
  ModelConfig c = smallConfig(16);
  c.dropout = 0.1f;
  r->pattern = loadPattern(kFixed, 16, 2);
  r->model = std::move(*Transformer::create(*r->backend, c, *r->pattern, t.batch));
  r->model->initialize(t.seed);
  r->trainer = std::make_unique<Trainer>(*r->model, t, d);
  return r;
}

TEST_F(TrainerTest, LearnsAndResumesBitForBit) {
  data::Dataset d = textData(4000);
  TrainConfig t;
  t.steps = 40;
  t.batch = 4;
  t.lr = 1e-2f;
  t.warmupSteps = 4;
  t.seed = 9;

  // Uninterrupted.
  auto a = makeRun(d, t);
  std::vector<double> lossesA;
  double before = a->trainer->evaluate(data::Split::Valid, 0)->bits;
  for (int s = 0; s < t.steps; ++s)
    lossesA.push_back(a->trainer->trainStep()->loss);
  double after = a->trainer->evaluate(data::Split::Valid, 0)->bits;
  EXPECT_NEAR(before, 8.0, 0.01); // the zero output layer: uniform over 256
  EXPECT_LT(after, 4.5);          // a 6-word vocabulary is easy

  // Stopped at step 15, saved, loaded into a fresh process-like state.
  auto b = makeRun(d, t);
  std::vector<double> lossesB;
  for (int s = 0; s < 15; ++s)
    lossesB.push_back(b->trainer->trainStep()->loss);
  PatternSource ps = source(kFixed);
  DataSpec spec;
  spec.source = "synthetic.txt";
  ASSERT_FALSE(bool(saveCheckpoint(path("c.bin"), llvm::cantFail(b->trainer->snapshot(ps, spec)))));
  b.reset();
  llvm::Expected<Checkpoint> c = loadCheckpoint(path("c.bin"));
  ASSERT_TRUE(bool(c)) << llvm::toString(c.takeError());
  EXPECT_EQ(c->step, 15);
  EXPECT_EQ(c->pattern.text, kFixed);
  auto r = makeRun(d, c->train);
  r->model->initialize(12345); // overwritten by restore
  ASSERT_FALSE(bool(r->trainer->restore(*c, path("c.bin"))));
  for (int s = 15; s < t.steps; ++s)
    lossesB.push_back(r->trainer->trainStep()->loss);
  ASSERT_EQ(lossesA.size(), lossesB.size());
  for (size_t s = 0; s < lossesA.size(); ++s)
    EXPECT_EQ(lossesA[s], lossesB[s]) << "step " << s + 1;
  std::vector<float> pa(a->model->numParams()), pb(pa.size());
  a->backend->download(pa.data(), a->model->params(), pa.size() * 4);
  r->backend->download(pb.data(), r->model->params(), pb.size() * 4);
  EXPECT_EQ(pa, pb);

  // Sampling is deterministic in its seed.
  SampleOptions o;
  o.count = 3;
  o.seed = 5;
  o.prompt = {'t', 'h'};
  auto s1 = sample(*a->model, o), s2 = sample(*a->model, o);
  ASSERT_TRUE(s1 && s2);
  EXPECT_EQ(*s1, *s2);
  EXPECT_EQ((*s1)[0].size(), 16u);
  EXPECT_EQ((*s1)[2][0], 't');
}

/// The CPU backend saying it computes in fp16, and reporting a non-finite
/// gradient norm (an fp16 overflow) on chosen calls: drives the trainer's
/// loss scaling on any machine.
class OverflowingBackend final : public test::ForwardingBackend {
public:
  explicit OverflowingBackend(std::vector<int> overflowCalls)
      : overflowCalls(std::move(overflowCalls)) {}
  llvm::StringRef name() const override { return "overflowing"; }
  Precision precision() const override { return Precision::FP16; }
  std::vector<double> maxNorms; ///< the bound of every clip call
  int calls = 0;

  double clipGradNorm(float *g, int64_t n, double maxNorm) override {
    maxNorms.push_back(maxNorm);
    if (std::find(overflowCalls.begin(), overflowCalls.end(), calls++) !=
        overflowCalls.end())
      return std::numeric_limits<double>::infinity();
    return inner->clipGradNorm(g, n, maxNorm);
  }

private:
  std::vector<int> overflowCalls;
};

// fp16 loss scaling in the trainer: a step whose gradients overflow is
// skipped (parameters and optimizer state untouched) and halves the scale;
// lossScaleWindow good steps double it; the loss is unscaled and the gradient
// norm reported unscaled; the state is saved in checkpoints and restored.
TEST_F(TrainerTest, Fp16LossScalingSkipsHalvesAndGrows) {
  data::Dataset d = textData(4000);
  TrainConfig t;
  t.steps = 20;
  t.batch = 2;
  t.lossScale = 1024.0f;
  t.lossScaleWindow = 3;
  // Overflow at steps 2 and 3 (calls 1 and 2).
  auto backend = std::make_unique<OverflowingBackend>(std::vector<int>{1, 2});
  OverflowingBackend &b = *backend;
  auto pattern = loadPattern(kFixed, 16, 2);
  auto model = Transformer::create(b, smallConfig(16), *pattern, t.batch);
  ASSERT_TRUE(bool(model));
  (*model)->initialize(t.seed);
  Trainer trainer(**model, t, d);
  const int64_t P = (*model)->numParams();
  std::vector<float> before(P), after(P);

  auto first = trainer.trainStep();
  ASSERT_TRUE(bool(first));
  EXPECT_FALSE(first->skipped);
  EXPECT_EQ(first->lossScale, 1024.0);
  EXPECT_NEAR(first->loss, std::log(256.0), 1e-4); // unscaled
  EXPECT_LT(first->gradNorm, 1e3);                   // unscaled too
  EXPECT_EQ(b.maxNorms.back(), 1024.0 * t.clipNorm); // clipped at scale x 1.0
  for (double expected : {1024.0, 512.0}) {
    b.download(before.data(), (*model)->params(), P * 4);
    auto r = trainer.trainStep();
    ASSERT_TRUE(bool(r));
    EXPECT_TRUE(r->skipped);
    EXPECT_EQ(r->lossScale, expected);
    b.download(after.data(), (*model)->params(), P * 4);
    EXPECT_EQ(before, after) << "a skipped step changed the parameters";
  }
  // 256 after two halvings; three good steps double it.
  std::vector<double> scales;
  for (int s = 0; s < 4; ++s) {
    auto r = trainer.trainStep();
    ASSERT_TRUE(bool(r));
    EXPECT_FALSE(r->skipped);
    scales.push_back(r->lossScale);
  }
  EXPECT_EQ(scales, (std::vector<double>{256, 256, 256, 512}));
  EXPECT_EQ(trainer.getStep(), 7);

  // Saved and restored with the checkpoint (good steps 1 of 3 at 512).
  PatternSource ps = source(kFixed);
  DataSpec spec;
  spec.source = "synthetic.txt";
  ASSERT_FALSE(bool(saveCheckpoint(path("ls.bin"), llvm::cantFail(trainer.snapshot(ps, spec)))));
  llvm::Expected<Checkpoint> c = loadCheckpoint(path("ls.bin"));
  ASSERT_TRUE(bool(c)) << errorText(c.takeError());
  EXPECT_EQ(c->lossScale, 512.0);
  EXPECT_EQ(c->lossScaleGoodSteps, 1);
  OverflowingBackend b2({});
  auto model2 = Transformer::create(b2, smallConfig(16), *pattern, t.batch);
  ASSERT_TRUE(bool(model2));
  Trainer resumed(**model2, c->train, d);
  ASSERT_FALSE(bool(resumed.restore(*c, path("ls.bin"))));
  for (int s = 0; s < 2; ++s) {
    auto r = resumed.trainStep(), o = trainer.trainStep();
    ASSERT_TRUE(r && o);
    EXPECT_EQ(r->lossScale, o->lossScale);
    EXPECT_EQ(r->loss, o->loss);
  }
  EXPECT_EQ(resumed.trainStep()->lossScale, 1024.0);
}

TEST_F(TrainerTest, CheckpointErrors) {
  data::Dataset d = textData(2000);
  TrainConfig t;
  t.batch = 2;
  auto r = makeRun(d, t);
  ASSERT_TRUE(bool(r->trainer->trainStep()));
  DataSpec spec;
  spec.source = "synthetic.txt";
  std::string good = path("good.bin");
  ASSERT_FALSE(bool(saveCheckpoint(good, llvm::cantFail(r->trainer->snapshot(source(kFixed), spec)))));
  auto bytes = *data::readFileBytes(good);

  auto writeBytes = [&](const std::string &name, const std::vector<uint8_t> &b) {
    std::ofstream(path(name), std::ios::binary)
        .write(reinterpret_cast<const char *>(b.data()), b.size());
    return path(name);
  };
  auto loadError = [&](const std::string &p) {
    llvm::Expected<Checkpoint> c = loadCheckpoint(p);
    return c ? std::string("loaded") : errorText(c.takeError());
  };
  // Where the parameter section starts: after the header and META.
  uint64_t metaLen;
  std::memcpy(&metaLen, bytes.data() + 20, 8);
  uint64_t parm = 16 + 4 + 8 + metaLen + 4;

  std::vector<uint8_t> flipped = bytes;
  flipped[parm + 12 + 40] ^= 0x10;
  std::string p = writeBytes("flipped.bin", flipped);
  EXPECT_EQ(loadError(p), p + ": offset " + std::to_string(parm) +
                              ": section 'PARM' is corrupt (CRC-32 mismatch)");

  std::vector<uint8_t> truncated(bytes.begin(), bytes.begin() + parm + 100);
  p = writeBytes("truncated.bin", truncated);
  EXPECT_EQ(loadError(p).substr(0, p.size() + 40),
            (p + ": offset " + std::to_string(parm) + ": truncated: section 'PARM' needs")
                .substr(0, p.size() + 40));

  std::vector<uint8_t> magic = bytes;
  magic[0] = 'X';
  p = writeBytes("magic.bin", magic);
  EXPECT_EQ(loadError(p), p + ": offset 0: not a sparsetx checkpoint (the file "
                              "does not start with \"SPTXCKPT\")");

  std::vector<uint8_t> version = bytes;
  version[8] = 9;
  p = writeBytes("version.bin", version);
  EXPECT_EQ(loadError(p), p + ": offset 8: checkpoint version 9 is not "
                              "supported (this build reads version 1)");

  // A META whose loss-scaling state is impossible (its CRC recomputed, so
  // that the content is what is judged).
  {
    std::string meta(bytes.begin() + 28, bytes.begin() + 28 + metaLen);
    size_t at = meta.find("\"good_steps\": 0");
    ASSERT_NE(at, std::string::npos) << meta;
    meta.replace(at, 15, "\"good_steps\": -3");
    std::vector<uint8_t> bad(bytes.begin(), bytes.begin() + 20);
    uint64_t len = meta.size();
    bad.insert(bad.end(), reinterpret_cast<uint8_t *>(&len),
               reinterpret_cast<uint8_t *>(&len) + 8);
    bad.insert(bad.end(), meta.begin(), meta.end());
    uint32_t crc = llvm::crc32(llvm::ArrayRef<uint8_t>(
        reinterpret_cast<const uint8_t *>(meta.data()), meta.size()));
    bad.insert(bad.end(), reinterpret_cast<uint8_t *>(&crc),
               reinterpret_cast<uint8_t *>(&crc) + 4);
    bad.insert(bad.end(), bytes.begin() + parm, bytes.end());
    p = writeBytes("lossscale.bin", bad);
    EXPECT_EQ(loadError(p), p + ": offset 16: metadata: loss_scale needs a "
                                "scale >= 0 and good_steps >= 0");
  }

  std::vector<uint8_t> extra = bytes;
  extra.push_back(0);
  p = writeBytes("extra.bin", extra);
  EXPECT_EQ(loadError(p), p + ": offset " + std::to_string(bytes.size()) +
                              ": 1 unexpected bytes after the last section");

  // A failed save leaves the good file and no temporary behind.
  ASSERT_FALSE(bool(llvm::sys::fs::create_directory(path("sub"))));
  std::string dirTarget = path("sub");
  EXPECT_TRUE(bool(saveCheckpoint(dirTarget, llvm::cantFail(r->trainer->snapshot(source(kFixed), spec)))));
  std::error_code ec;
  int files = 0;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; it != end && !ec;
       it.increment(ec))
    files += llvm::StringRef(it->path()).contains(".tmp.");
  EXPECT_EQ(files, 0);
  EXPECT_EQ(loadError(good), "loaded");

  // A checkpoint of another model shape is refused by restore.
  llvm::Expected<Checkpoint> c = loadCheckpoint(good);
  ASSERT_TRUE(bool(c));
  c->params.pop_back();
  EXPECT_EQ(errorText(r->trainer->restore(*c, "x.bin")),
            "x.bin: holds " + std::to_string(c->params.size()) +
                " parameters, the model it describes has " +
                std::to_string(r->model->numParams()));
}

} // namespace
