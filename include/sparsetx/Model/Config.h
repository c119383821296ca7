//===- Config.h - model and training configurations, presets ----*- C++ -*-===//
//
// What a run is: the model's shape (paper section 5), the optimizer and
// schedule (section 6), and the named presets (a CPU-sized `tiny`, and the
// paper's enwik8, cifar10 and imagenet64 models). Both configurations are
// saved in checkpoints as JSON and read back with every field checked.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_MODEL_CONFIG_H
#define SPARSETX_MODEL_CONFIG_H

#include "sparsetx/Model/Data/Dataset.h"

#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sparsetx::model {

/// Byte tokens: 256 outputs; the inputs add a start token (position 0 of
/// every sequence sees it, so the first byte is predicted too).
inline constexpr int64_t kVocab = 256;
inline constexpr int32_t kStartToken = 256;
inline constexpr int64_t kInputVocab = kVocab + 1;

struct ModelConfig {
  int64_t seqLen = 512;
  int64_t dModel = 256;
  int64_t numLayers = 4;
  int64_t numHeads = 4;
  /// Feed-forward width in units of d: 4 (the paper's default) or 2 (its
  /// half-size network).
  int64_t ffMultiplier = 4;
  /// Half-size query and key projections (d/2 wide).
  bool halfQK = false;
  /// Dropout at the end of each residual addition (attention and FF).
  float dropout = 0.0f;
  /// Keep only each residual block's input; recompute attention and FF in
  /// backward (paper section 5.4).
  bool recompute = false;

  /// Positional embeddings: images use data embeddings (row, column and
  /// channel of each byte), text and audio attention embeddings (row and
  /// column in a matrix of width embedStride).
  data::DataKind kind = data::DataKind::Text;
  int64_t imageHeight = 0, imageWidth = 0, imageChannels = 0;
  int64_t embedStride = 0;

  int64_t ffDim() const { return ffMultiplier * dModel; }
  int64_t qkDim() const { return halfQK ? dModel / 2 : dModel; }
  int64_t headQKDim() const { return qkDim() / numHeads; }
  int64_t headVDim() const { return dModel / numHeads; }

  /// Checks every field and their consistency; the message names the field.
  llvm::Error validate() const;
  llvm::json::Value toJSON() const;
  static llvm::Expected<ModelConfig> fromJSON(const llvm::json::Value &value);
};

struct TrainConfig {
  int64_t steps = 600;
  int64_t batch = 8;
  float lr = 1e-3f;
  /// Linear warmup from 0 over this many steps, then cosine decay to 0 at
  /// `steps`.
  int64_t warmupSteps = 50;
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  /// Decoupled (AdamW) decay of the weight matrices; biases, gains and
  /// embeddings are not decayed.
  float weightDecay = 0.01f;
  float clipNorm = 1.0f;
  uint64_t seed = 1;
  /// Every how many steps to evaluate on `evalTokens` validation tokens and
  /// to write a checkpoint (0: only at the end).
  int64_t evalEvery = 100;
  int64_t evalTokens = 65536;
  int64_t saveEvery = 100;
  /// fp16 dynamic loss scaling (the paper's section 5.6): the first scale;
  /// a step whose gradients overflow is skipped and halves it, and it
  /// doubles after `lossScaleWindow` good steps in a row.
  float lossScale = 65536.0f;
  int64_t lossScaleWindow = 1000;

  /// The learning rate of 1-based step `step`.
  double learningRate(int64_t step) const;

  llvm::Error validate() const;
  llvm::json::Value toJSON() const;
  static llvm::Expected<TrainConfig> fromJSON(const llvm::json::Value &value);
};

struct Preset {
  std::string name;
  std::string description;
  ModelConfig model;
  TrainConfig train;
  /// The batch of image runs, whose sequences (one image) are longer than
  /// the preset's text sequences (0: train.batch).
  int64_t imageBatch = 0;
};

/// tiny, enwik8, cifar10, imagenet64.
const std::vector<Preset> &presets();
/// The preset called `name`, or an error listing the known ones.
llvm::Expected<Preset> findPreset(llvm::StringRef name);

} // namespace sparsetx::model

#endif // SPARSETX_MODEL_CONFIG_H
