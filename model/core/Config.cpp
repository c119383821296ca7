//===- Config.cpp - model and training configurations, presets ------------===//

#include "sparsetx/Model/Config.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>

using namespace sparsetx;
using namespace sparsetx::model;
using llvm::json::Object;
using llvm::json::Value;

namespace {

llvm::Error configError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

llvm::Error positive(llvm::StringRef field, int64_t value) {
  if (value > 0)
    return llvm::Error::success();
  return configError(field + " must be positive (got " + llvm::Twine(value) + ")");
}

/// Reads the fields of a JSON object into typed variables, recording the first
/// missing or mistyped field.
class FieldReader {
public:
  FieldReader(const Value &value, llvm::StringRef what)
      : object(value.getAsObject()), what(what.str()) {
    if (!object)
      fail("is not a JSON object");
  }

  void get(llvm::StringRef key, int64_t &out) {
    if (const Value *v = find(key)) {
      if (std::optional<int64_t> i = v->getAsInteger())
        out = *i;
      else
        fail("field '" + key + "' is not an integer");
    }
  }
  void get(llvm::StringRef key, uint64_t &out) {
    int64_t i = 0;
    get(key, i);
    out = static_cast<uint64_t>(i);
  }
  void get(llvm::StringRef key, float &out) {
    if (const Value *v = find(key)) {
      if (std::optional<double> d = v->getAsNumber())
        out = static_cast<float>(*d);
      else
        fail("field '" + key + "' is not a number");
    }
  }
  void get(llvm::StringRef key, bool &out) {
    if (const Value *v = find(key)) {
      if (std::optional<bool> b = v->getAsBoolean())
        out = *b;
      else
        fail("field '" + key + "' is not a boolean");
    }
  }
  void get(llvm::StringRef key, std::string &out) {
    if (const Value *v = find(key)) {
      if (std::optional<llvm::StringRef> s = v->getAsString())
        out = s->str();
      else
        fail("field '" + key + "' is not a string");
    }
  }
  llvm::Error take() {
    if (message.empty())
      return llvm::Error::success();
    return configError(what + " " + message);
  }

private:
  const Value *find(llvm::StringRef key) {
    if (!object)
      return nullptr;
    const Value *v = object->get(key);
    if (!v)
      fail("lacks field '" + key + "'");
    return v;
  }
  void fail(const llvm::Twine &m) {
    if (message.empty())
      message = m.str();
  }

  const Object *object;
  std::string what, message;
};

} // namespace

//===----------------------------------------------------------------------===//
// ModelConfig
//===----------------------------------------------------------------------===//

llvm::Error ModelConfig::validate() const {
  for (auto [field, value] :
       {std::pair<llvm::StringRef, int64_t>{"seq_len", seqLen},
        {"d_model", dModel},
        {"layers", numLayers},
        {"heads", numHeads}})
    if (llvm::Error e = positive(field, value))
      return e;
  if (ffMultiplier != 2 && ffMultiplier != 4)
    return configError("ff_multiplier must be 4 (the paper's FF) or 2 (its "
                       "half-size FF), got " + llvm::Twine(ffMultiplier));
  if (dModel % numHeads != 0)
    return configError(llvm::formatv("d_model = {0} is not a multiple of "
                                     "heads = {1}", dModel, numHeads));
  if (qkDim() % numHeads != 0)
    return configError(llvm::formatv(
        "the half-size q/k width d_model/2 = {0} is not a multiple of heads = "
        "{1}", qkDim(), numHeads));
  if (!(dropout >= 0.0f && dropout < 1.0f))
    return configError(llvm::formatv("dropout must be in [0, 1), got {0}",
                                     dropout));
  if (kind == data::DataKind::Image) {
    for (auto [field, value] : {std::pair<llvm::StringRef, int64_t>{
                                    "image_height", imageHeight},
                                {"image_width", imageWidth},
                                {"image_channels", imageChannels}})
      if (llvm::Error e = positive(field, value))
        return e;
    if (imageHeight * imageWidth * imageChannels != seqLen)
      return configError(llvm::formatv(
          "seq_len = {0} must be one whole image ({1} x {2} x {3} = {4} bytes)",
          seqLen, imageHeight, imageWidth, imageChannels,
          imageHeight * imageWidth * imageChannels));
  } else if (llvm::Error e = positive("embed_stride", embedStride)) {
    return e;
  }
  return llvm::Error::success();
}

Value ModelConfig::toJSON() const {
  return Object{{"seq_len", seqLen},
                {"d_model", dModel},
                {"layers", numLayers},
                {"heads", numHeads},
                {"ff_multiplier", ffMultiplier},
                {"half_qk", halfQK},
                {"dropout", static_cast<double>(dropout)},
                {"recompute", recompute},
                {"kind", data::toString(kind)},
                {"image_height", imageHeight},
                {"image_width", imageWidth},
                {"image_channels", imageChannels},
                {"embed_stride", embedStride}};
}

llvm::Expected<ModelConfig> ModelConfig::fromJSON(const Value &value) {
  ModelConfig c;
  FieldReader r(value, "model configuration");
  std::string kind;
  r.get("seq_len", c.seqLen);
  r.get("d_model", c.dModel);
  r.get("layers", c.numLayers);
  r.get("heads", c.numHeads);
  r.get("ff_multiplier", c.ffMultiplier);
  r.get("half_qk", c.halfQK);
  r.get("dropout", c.dropout);
  r.get("recompute", c.recompute);
  r.get("kind", kind);
  r.get("image_height", c.imageHeight);
  r.get("image_width", c.imageWidth);
  r.get("image_channels", c.imageChannels);
  r.get("embed_stride", c.embedStride);
  if (llvm::Error e = r.take())
    return std::move(e);
  if (kind == "text")
    c.kind = data::DataKind::Text;
  else if (kind == "image")
    c.kind = data::DataKind::Image;
  else if (kind == "audio")
    c.kind = data::DataKind::Audio;
  else
    return configError("model configuration: unknown data kind '" + kind + "'");
  if (llvm::Error e = c.validate())
    return std::move(e);
  return c;
}

//===----------------------------------------------------------------------===//
// TrainConfig
//===----------------------------------------------------------------------===//

double TrainConfig::learningRate(int64_t step) const {
  if (warmupSteps > 0 && step <= warmupSteps)
    return lr * static_cast<double>(step) / static_cast<double>(warmupSteps);
  int64_t decaySteps = steps - warmupSteps;
  if (decaySteps <= 0)
    return lr;
  double progress =
      std::min(1.0, static_cast<double>(step - warmupSteps) / decaySteps);
  return lr * 0.5 * (1.0 + std::cos(M_PI * progress));
}

llvm::Error TrainConfig::validate() const {
  if (llvm::Error e = positive("steps", steps))
    return e;
  if (llvm::Error e = positive("batch", batch))
    return e;
  if (!(lr > 0.0f) || !std::isfinite(lr))
    return configError("lr must be a positive number");
  if (warmupSteps < 0)
    return configError("warmup must not be negative");
  if (!(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1))
    return configError("Adam betas must be in [0, 1)");
  if (!(eps > 0) || !(weightDecay >= 0) || !(clipNorm >= 0))
    return configError("eps must be positive; weight decay and clip norm "
                       "must not be negative");
  if (evalEvery < 0 || saveEvery < 0 || evalTokens <= 0)
    return configError("eval/save intervals must not be negative and "
                       "eval tokens must be positive");
  if (!(lossScale >= 1.0f) || !std::isfinite(lossScale) || lossScaleWindow < 1)
    return configError("the loss scale must be a finite number >= 1 and its "
                       "growth window at least 1 step");
  return llvm::Error::success();
}

Value TrainConfig::toJSON() const {
  return Object{{"steps", steps},
                {"batch", batch},
                {"lr", static_cast<double>(lr)},
                {"warmup", warmupSteps},
                {"beta1", static_cast<double>(beta1)},
                {"beta2", static_cast<double>(beta2)},
                {"eps", static_cast<double>(eps)},
                {"weight_decay", static_cast<double>(weightDecay)},
                {"clip_norm", static_cast<double>(clipNorm)},
                {"seed", static_cast<int64_t>(seed)},
                {"eval_every", evalEvery},
                {"eval_tokens", evalTokens},
                {"save_every", saveEvery},
                {"loss_scale", static_cast<double>(lossScale)},
                {"loss_scale_window", lossScaleWindow}};
}

llvm::Expected<TrainConfig> TrainConfig::fromJSON(const Value &value) {
  TrainConfig c;
  FieldReader r(value, "training configuration");
  r.get("steps", c.steps);
  r.get("batch", c.batch);
  r.get("lr", c.lr);
  r.get("warmup", c.warmupSteps);
  r.get("beta1", c.beta1);
  r.get("beta2", c.beta2);
  r.get("eps", c.eps);
  r.get("weight_decay", c.weightDecay);
  r.get("clip_norm", c.clipNorm);
  r.get("seed", c.seed);
  r.get("eval_every", c.evalEvery);
  r.get("eval_tokens", c.evalTokens);
  r.get("save_every", c.saveEvery);
  r.get("loss_scale", c.lossScale);
  r.get("loss_scale_window", c.lossScaleWindow);
  if (llvm::Error e = r.take())
    return std::move(e);
  if (llvm::Error e = c.validate())
    return std::move(e);
  return c;
}

//===----------------------------------------------------------------------===//
// Presets
//===----------------------------------------------------------------------===//

const std::vector<Preset> &sparsetx::model::presets() {
  static const std::vector<Preset> all = [] {
    std::vector<Preset> p;
    {
      Preset tiny;
      tiny.name = "tiny";
      tiny.description = "a CPU-sized model: 4 layers, d = 128, 4 heads, "
                         "n = 256 (text) or one image";
      tiny.model.seqLen = 256;
      tiny.model.dModel = 128;
      tiny.model.numLayers = 4;
      tiny.model.numHeads = 4;
      tiny.train.steps = 600;
      tiny.train.batch = 16;
      tiny.imageBatch = 8;
      tiny.train.lr = 6e-3f;
      tiny.train.warmupSteps = 30;
      tiny.train.evalEvery = 200;
      tiny.train.evalTokens = 32768;
      tiny.train.saveEvery = 200;
      p.push_back(tiny);
    }
    {
      // Section 7.2: 30 layers, 8 heads, d = 512, fixed l = 128 c = 32
      // merged, context 12,288, dropout 0.4.
      Preset e;
      e.name = "enwik8";
      e.description = "the paper's enwik8 model: 30 layers, d = 512, 8 heads, "
                      "n = 12288, dropout 0.4 (use patterns/fixed.sp)";
      e.model.seqLen = 12288;
      e.model.dModel = 512;
      e.model.numLayers = 30;
      e.model.numHeads = 8;
      e.model.dropout = 0.4f;
      e.model.recompute = true;
      e.train.steps = 120000;
      e.train.batch = 16;
      e.train.lr = 3.5e-4f;
      e.train.warmupSteps = 5000;
      e.train.evalEvery = 2000;
      e.train.evalTokens = 1 << 20;
      e.train.saveEvery = 2000;
      p.push_back(e);
    }
    {
      // Section 7.1: 128 layers, 2 heads, d = 256, half-size FF and q/k,
      // strided, lr 0.00035, dropout 0.25.
      Preset c;
      c.name = "cifar10";
      c.description = "the paper's CIFAR-10 model: 128 layers, d = 256, 2 "
                      "heads, half-size FF and q/k, dropout 0.25 (use "
                      "patterns/strided.sp -D l=96)";
      c.model.seqLen = 3072;
      c.model.dModel = 256;
      c.model.numLayers = 128;
      c.model.numHeads = 2;
      c.model.ffMultiplier = 2;
      c.model.halfQK = true;
      c.model.dropout = 0.25f;
      c.model.recompute = true;
      c.train.steps = 120000;
      c.train.batch = 16;
      c.train.lr = 3.5e-4f;
      c.train.warmupSteps = 5000;
      c.train.evalEvery = 2000;
      c.train.evalTokens = 1 << 20;
      c.train.saveEvery = 2000;
      p.push_back(c);
    }
    {
      // Section 7.3: 48 layers, 16 heads, d = 512, strided l = 128, dropout
      // 0.01, 64x64x3 images.
      Preset i;
      i.name = "imagenet64";
      i.description = "the paper's ImageNet 64x64 model: 48 layers, d = 512, "
                      "16 heads, dropout 0.01 (use patterns/strided.sp)";
      i.model.seqLen = 12288;
      i.model.dModel = 512;
      i.model.numLayers = 48;
      i.model.numHeads = 16;
      i.model.dropout = 0.01f;
      i.model.recompute = true;
      i.train.steps = 200000;
      i.train.batch = 16;
      i.train.lr = 3.5e-4f;
      i.train.warmupSteps = 5000;
      i.train.evalEvery = 2000;
      i.train.evalTokens = 1 << 20;
      i.train.saveEvery = 2000;
      p.push_back(i);
    }
    return p;
  }();
  return all;
}

llvm::Expected<Preset> sparsetx::model::findPreset(llvm::StringRef name) {
  std::vector<std::string> names;
  for (const Preset &p : presets()) {
    if (p.name == name)
      return p;
    names.push_back(p.name);
  }
  return configError("unknown preset '" + name + "' (known: " +
                     llvm::join(names, ", ") + ")");
}
