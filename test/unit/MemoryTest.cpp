//===- MemoryTest.cpp - what training holds, byte for byte ----------------===//
//
// The issue's long-sequence model (d = 256, 4 layers, 4 heads, strided,
// recomputation, batch 1) at a small n on the CPU backend: the most bytes
// its buffers (Backend::allocate) held at once during a training step must
// equal the formula below, term by term, so that a change which adds a
// buffer (or makes one larger) fails here and has to say why in the
// formula. The per-token term is what decides the longest sequence that
// fits (docs/model.md, "Memory").
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Backend.h"
#include "sparsetx/Model/Config.h"
#include "sparsetx/Model/Trainer.h"
#include "sparsetx/Model/Transformer.h"

#include "ModelTestUtil.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

using namespace sparsetx;
using namespace sparsetx::model;

namespace {

constexpr const char *kStrided = R"(pattern strided(l = 64) {
  causal;
  let row    = i - j < l;
  let column = (i - j) % l == 0;
  heads = row || column;
})";

/// The FF branch runs over chunks of rows once its intermediate [rows, 4d]
/// exceeds this many floats.
constexpr int64_t kFeedForwardChunkElements =
    Transformer::kFeedForwardChunkElements;

/// The bytes of every buffer of a recomputing model that scale with the
/// number of tokens R = batch x n, per token (fp32 = 4 bytes). The
/// comments say which buffers; Transformer::allocate says why each lives
/// where it does.
int64_t recomputeBytesPerToken(const ModelConfig &c) {
  const int64_t d = c.dModel, dqk = c.qkDim(), H = c.numHeads,
                L = c.numLayers;
  int64_t floats = 0;
  floats += (L + 1) * d;       // xs: the residual stream's checkpoints
  floats += 2 * dqk + 4 * d;   // one Acts set: q, k, v, o, h, ln2 (ln1
                               // lives in ln2, then is made again in o)
  floats += 4 + H;             // its mean1, rstd1, mean2, rstd2, lse
  floats += 2;                 // meanf, rstdf (lnf lives in ln1)
  floats += 1;                 // losses (the logits and their gradient, in
                               // place, live in h: 256 <= d)
  floats += 2 * d;             // tmp, dx (the backward's other temporaries
                               // live in dead activations: layerBackward)
  int64_t bytes = 4 * floats;
  bytes += 2 * 4; // ids, targetIds (int32)
  bytes += 2 * 4; // rowIds, colIds (int32, per position; batch 1)
  return bytes;
}

/// The FF branch's three [rows, 4d] buffers (f1, g, and dG; dF1 lives in
/// g) of one chunk of rows: a constant once R x 4d exceeds the chunk size.
int64_t feedForwardBytes(const ModelConfig &c, int64_t tokens) {
  int64_t rows = tokens;
  if (tokens * c.ffDim() > kFeedForwardChunkElements)
    rows = std::max<int64_t>(1, kFeedForwardChunkElements / c.ffDim());
  return 3 * rows * c.ffDim() * 4;
}

ModelConfig longSequenceShape(int64_t n) {
  ModelConfig c;
  c.seqLen = n;
  c.dModel = 256;
  c.numLayers = 4;
  c.numHeads = 4;
  c.recompute = true;
  c.embedStride = 64; // the pattern's l (text: attention embeddings)
  return c;
}

TEST(Memory, LongSequenceTrainingStepHoldsWhatTheFormulaSays) {
  const int64_t n = 4096;
  ModelConfig c = longSequenceShape(n);
  PatternSource source;
  source.text = kStrided;
  source.path = "strided.sp";
  auto pattern = AttentionPattern::load(source, n, c.numHeads);
  ASSERT_TRUE(bool(pattern)) << llvm::toString(pattern.takeError());
  std::unique_ptr<Backend> backend = createCpuBackend();
  EXPECT_EQ(backend->liveBufferBytes(), 0);
  EXPECT_EQ(backend->peakBufferBytes(), 0);

  data::Dataset data = test::syntheticText(8 * n);
  auto model = Transformer::create(*backend, c, **pattern, 1);
  ASSERT_TRUE(bool(model)) << llvm::toString(model.takeError());
  (*model)->initialize(1);
  TrainConfig t;
  t.steps = 2;
  t.batch = 1;
  t.warmupSteps = 1;
  t.evalEvery = 0;
  int64_t atStart = 0;
  {
    Trainer trainer(**model, t, data);
    atStart = backend->liveBufferBytes();
    for (int step = 0; step < 2; ++step) {
      llvm::Expected<StepResult> r = trainer.trainStep();
      ASSERT_TRUE(bool(r)) << llvm::toString(r.takeError());
      EXPECT_TRUE(std::isfinite(r->loss));
    }
    // Nothing allocated during the steps is left over, and nothing was
    // allocated during them beyond what the model and trainer hold.
    EXPECT_EQ(backend->liveBufferBytes(), atStart);
  }

  const int64_t P = (*model)->numParams();
  const int64_t perToken = recomputeBytesPerToken(c);
  const int64_t expected = 4 * 4 * P // parameters, gradients, Adam's m, v
                           + feedForwardBytes(c, n) + perToken * n;
  EXPECT_EQ(backend->peakBufferBytes(), expected)
      << "the peak is " << backend->peakBufferBytes() - expected
      << " bytes off the formula";
  EXPECT_EQ(atStart, expected);
  std::printf("n = %lld, %lld parameters: peak %lld bytes = 16 x parameters "
              "+ %lld (FF chunk) + %lld bytes per token (%.2f KiB)\n",
              (long long)n, (long long)P,
              (long long)backend->peakBufferBytes(),
              (long long)feedForwardBytes(c, n), (long long)perToken,
              perToken / 1024.0);

  // The model's buffers go with it.
  model->reset();
  EXPECT_EQ(backend->liveBufferBytes(), 0);
  EXPECT_EQ(backend->peakBufferBytes(), expected);
  backend->resetPeakBufferBytes();
  EXPECT_EQ(backend->peakBufferBytes(), 0);
}

// The model keeps the logits' gradient where the logits were: the
// cross-entropy in place gives the losses, mean and gradient of separate
// buffers bit for bit.
TEST(Memory, CrossEntropyInPlaceEqualsSeparateBuffers) {
  std::unique_ptr<Backend> backend = createCpuBackend();
  const int64_t rows = 37;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  std::vector<float> logits(rows * kVocab), lossesA(rows), lossesB(rows),
      grad(rows * kVocab);
  std::vector<int32_t> targets(rows);
  for (float &x : logits)
    x = normal(rng);
  for (int32_t &t : targets)
    t = static_cast<int32_t>(rng() % kVocab);
  std::vector<float> inPlace = logits;
  double a = backend->softmaxCrossEntropy(lossesA.data(), grad.data(),
                                          logits.data(), targets.data(), rows,
                                          kVocab, 0.5f);
  double b = backend->softmaxCrossEntropy(lossesB.data(), inPlace.data(),
                                          inPlace.data(), targets.data(), rows,
                                          kVocab, 0.5f);
  EXPECT_EQ(a, b);
  EXPECT_EQ(lossesA, lossesB);
  EXPECT_EQ(grad, inPlace);
}

} // namespace
