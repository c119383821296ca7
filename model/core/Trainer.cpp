//===- Trainer.cpp - training, evaluation and sampling of a model ---------===//

#include "sparsetx/Model/Trainer.h"

#include "sparsetx/Model/GradientReducer.h"

#include "sparsetx/Analysis/Picture.h"
#include "sparsetx/Model/Data/AudioLoader.h"
#include "sparsetx/Support/AtomicFile.h"

#include "sparsetx/Support/Hash.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numeric>

using namespace sparsetx;
using namespace sparsetx::model;

namespace {

/// fp16 loss scaling never grows past 2^40 (gradients of order 1e-12 would
/// still reach fp16's normal range; beyond, only overflows follow).
constexpr double kMaxLossScale = 1099511627776.0;

uint64_t hash3(uint64_t a, uint64_t b, uint64_t c) {
  return splitmix64(splitmix64(splitmix64(a) ^ b) ^ c);
}

/// A uniform double in [0, 1) from 53 bits of the hash.
double uniform(uint64_t h) { return static_cast<double>(h >> 11) * 0x1.0p-53; }

llvm::Error trainError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

int64_t exampleLength(const data::Dataset &data, int64_t seqLen) {
  return data.kind() == data::DataKind::Image ? data.info().imageBytes() : seqLen;
}

} // namespace

llvm::Error sparsetx::model::makeBatch(const data::Dataset &data,
                                       data::Split split,
                                       llvm::ArrayRef<int64_t> examples,
                                       int64_t seqLen,
                                       std::vector<int32_t> &inputs,
                                       std::vector<int32_t> &targets) {
  const int64_t n = seqLen;
  inputs.resize(examples.size() * n);
  targets.resize(examples.size() * n);
  for (size_t b = 0; b < examples.size(); ++b) {
    llvm::Expected<llvm::ArrayRef<uint8_t>> bytes =
        data.example(split, examples[b], exampleLength(data, n));
    if (!bytes)
      return bytes.takeError();
    if (static_cast<int64_t>(bytes->size()) != n)
      return trainError(llvm::formatv(
          "{0}: an example has {1} bytes but the model's sequence is {2}",
          data.info().source, bytes->size(), n));
    int32_t *in = inputs.data() + b * n, *out = targets.data() + b * n;
    in[0] = kStartToken;
    for (int64_t t = 0; t < n; ++t) {
      out[t] = (*bytes)[t];
      if (t + 1 < n)
        in[t + 1] = (*bytes)[t];
    }
  }
  return llvm::Error::success();
}

int64_t sparsetx::model::trainingExample(uint64_t seed, int64_t step, int64_t b,
                                         int64_t numExamples) {
  uint64_t h = hash3(seed ^ 0x5eed0da7a, static_cast<uint64_t>(step),
                     static_cast<uint64_t>(b));
  return static_cast<int64_t>(h % static_cast<uint64_t>(numExamples));
}

DataParallel::~DataParallel() = default;

Trainer::Trainer(Transformer &model, const TrainConfig &config,
                 const data::Dataset &data)
    : model(model), config(config), data(data) {
  adamM = model.getBackend().allocateFloats(model.numParams());
  adamV = model.getBackend().allocateFloats(model.numParams());
  if (model.getBackend().precision() == Precision::FP16)
    lossScale = config.lossScale;
}

Trainer::~Trainer() {
  // The model must not call the reducer that goes with this trainer.
  if (reducer)
    model.setGradientHook(nullptr);
}

llvm::Error Trainer::setDataParallel(DataParallel *p, const GradientSync &sync) {
  if (p && config.batch % p->worldSize() != 0)
    return trainError(llvm::formatv(
        "the batch ({0} sequences) does not divide over {1} GPUs: pass a "
        "--batch that is a multiple of --gpus",
        config.batch, p->worldSize()));
  if (sync.bucketBytes < 0)
    return trainError(llvm::formatv(
        "the gradient bucket size must be 0 or more bytes, got {0}",
        sync.bucketBytes));
  model.setGradientHook(nullptr);
  reducer.reset();
  parallel = p;
  if (!p)
    return llvm::Error::success();
  Backend &backend = model.getBackend();
  const Precision type = p->worldSize() == 1
                             ? Precision::FP32
                             : sync.type.value_or(backend.precision());
  const int64_t elementBytes = type == Precision::FP32 ? 4 : 2;
  const int64_t cap =
      sync.bucketBytes == 0
          ? 0
          : std::max<int64_t>(1, sync.bucketBytes / elementBytes);
  llvm::Expected<std::unique_ptr<GradientReducer>> r = GradientReducer::create(
      backend, *p, model.grads(), model.numParams(),
      planGradientBuckets(model.gradientGroups(), cap), type);
  if (!r) {
    parallel = nullptr;
    return r.takeError();
  }
  reducer = std::move(*r);
  model.setGradientHook(reducer.get());
  return llvm::Error::success();
}

int64_t Trainer::localBatch() const {
  return parallel ? config.batch / parallel->worldSize() : config.batch;
}

llvm::Expected<StepResult> Trainer::trainStep() {
  const int64_t n = model.getConfig().seqLen, batch = localBatch();
  // Data parallelism: this rank's slice of the global batch.
  const int64_t first = parallel ? parallel->rank() * batch : 0;
  const int64_t numExamples =
      data.numExamples(data::Split::Train, exampleLength(data, n));
  if (numExamples <= 0)
    return trainError(llvm::formatv(
        "{0}: the training split has no example of {1} bytes",
        data.info().source, exampleLength(data, n)));
  const int64_t s = step + 1;
  std::vector<int64_t> examples(batch);
  for (int64_t b = 0; b < batch; ++b)
    examples[b] = trainingExample(config.seed, s, first + b, numExamples);
  if (llvm::Error e =
          makeBatch(data, data::Split::Train, examples, n, inputs, targets))
    return std::move(e);

  const float scale = static_cast<float>(lossScale);
  // Dropout's masks are a function of the seed and the position in the
  // local batch, so each rank draws its own (rank 0 those of a 1-GPU run).
  uint64_t dropoutSeed = hash3(config.seed, s, 0xd20b0u);
  if (parallel && parallel->rank() > 0)
    dropoutSeed = hash3(dropoutSeed, static_cast<uint64_t>(parallel->rank()),
                        0x7a2bu);
  llvm::Expected<double> loss = model.run(inputs, targets, batch, true,
                                          dropoutSeed, nullptr, scale);
  if (!loss)
    return loss.takeError();
  Backend &backend = model.getBackend();
  if (parallel) {
    // The gradients' buckets were started during the backward: their mean,
    // before the norm is taken and clipped. Then the mean loss over the
    // ranks (each is a mean over as many tokens), so that every rank takes
    // the same decisions.
    if (llvm::Error e = reducer->finish())
      return std::move(e);
    double sum[1] = {*loss};
    if (llvm::Error e = parallel->sumDoubles(sum))
      return std::move(e);
    *loss = sum[0] / parallel->worldSize();
  }
  if (!std::isfinite(*loss))
    return trainError(llvm::formatv("the loss is {0} at step {1}; stopping "
                                    "before the parameters are updated "
                                    "(try a lower --lr)", *loss, s));
  const bool scaling = backend.precision() == Precision::FP16;
  StepResult result;
  result.loss = *loss;
  result.lossScale = scale;
  result.lr = config.learningRate(s);
  // The norm of the scaled gradients, clipped at the scaled bound.
  double norm = backend.clipGradNorm(model.grads(), model.numParams(),
                                     double(config.clipNorm) * scale);
  if (llvm::Error e = backend.takeError())
    return std::move(e);
  if (!std::isfinite(norm)) {
    if (!scaling)
      return trainError(llvm::formatv("the gradient norm is {0} at step {1}",
                                      norm, s));
    // Overflow in fp16: skip the update, halve the scale.
    result.gradNorm = norm;
    result.skipped = true;
    lossScale = std::max(1.0, lossScale / 2);
    goodSteps = 0;
    step = s;
    return result;
  }
  result.gradNorm = norm / scale;
  if (scale != 1.0f)
    backend.scale(model.grads(), 1.0f / scale, model.numParams());
  const int64_t nd = model.numDecayed(), total = model.numParams();
  float lr = static_cast<float>(result.lr);
  backend.adamw(model.params(), model.grads(), adamM.f32(), adamV.f32(), nd, s,
                lr, config.beta1, config.beta2, config.eps, config.weightDecay);
  backend.adamw(model.params() + nd, model.grads() + nd, adamM.f32() + nd,
                adamV.f32() + nd, total - nd, s, lr, config.beta1, config.beta2,
                config.eps, 0.0f);
  if (llvm::Error e = backend.takeError())
    return std::move(e);
  if (scaling && ++goodSteps >= config.lossScaleWindow) {
    lossScale = std::min(lossScale * 2, kMaxLossScale);
    goodSteps = 0;
  }
  step = s;
  return result;
}

llvm::Expected<EvalResult> Trainer::evaluate(data::Split split,
                                             int64_t maxTokens) {
  const int64_t n = model.getConfig().seqLen;
  std::vector<int64_t> all;
  if (data.kind() == data::DataKind::Image) {
    int64_t images = data.numExamples(split, data.info().imageBytes());
    for (int64_t i = 0; i < images; ++i)
      all.push_back(i);
  } else {
    int64_t windows = static_cast<int64_t>(data.tokens(split).size()) / n;
    for (int64_t w = 0; w < windows; ++w)
      all.push_back(w * n);
  }
  if (all.empty())
    return trainError(llvm::formatv(
        "{0}: the {1} split has {2} bytes, less than one sequence of {3}",
        data.info().source, data::toString(split), data.tokens(split).size(),
        n));
  if (maxTokens > 0)
    all.resize(std::min<int64_t>(all.size(), (maxTokens + n - 1) / n));

  // Data parallelism: rank r scores the batches r, r + N, ...; the sums
  // are added over the ranks.
  const size_t ranks = parallel ? parallel->worldSize() : 1,
               rank = parallel ? parallel->rank() : 0;
  const size_t per = model.getMaxBatch();
  double nats = 0;
  int64_t tokens = 0;
  std::vector<float> losses;
  for (size_t begin = rank * per; begin < all.size(); begin += ranks * per) {
    size_t end = std::min(all.size(), begin + per);
    llvm::ArrayRef<int64_t> examples = llvm::ArrayRef(all).slice(begin, end - begin);
    if (llvm::Error e = makeBatch(data, split, examples, n, inputs, targets))
      return std::move(e);
    llvm::Expected<double> loss =
        model.run(inputs, targets, examples.size(), false, 0, &losses);
    if (!loss)
      return loss.takeError();
    for (float l : losses)
      nats += l;
    tokens += static_cast<int64_t>(losses.size());
  }
  if (parallel) {
    double sums[2] = {nats, static_cast<double>(tokens)};
    if (llvm::Error e = parallel->sumDoubles(sums))
      return std::move(e);
    nats = sums[0];
    tokens = static_cast<int64_t>(sums[1]);
  }
  EvalResult result;
  result.tokens = tokens;
  result.bits = nats / tokens / std::log(2.0);
  return result;
}

llvm::Error Trainer::broadcastState() {
  if (!parallel)
    return llvm::Error::success();
  const int64_t total = model.numParams();
  for (float *p : {model.params(), adamM.f32(), adamV.f32()})
    if (llvm::Error e = parallel->broadcastFloats(p, total))
      return e;
  return model.getBackend().takeError();
}

llvm::Error Trainer::checkReplicasAgree() {
  if (!parallel)
    return llvm::Error::success();
  const int64_t total = model.numParams();
  std::vector<uint32_t> words(total);
  Backend &backend = model.getBackend();
  backend.download(words.data(), model.params(), total * 4);
  if (llvm::Error e = backend.takeError())
    return e;
  uint64_t h = kGoldenGamma;
  for (uint32_t w : words)
    h = splitmix64(h ^ w);
  llvm::Expected<bool> same = parallel->sameOnAllRanks(h);
  if (!same)
    return same.takeError();
  if (!*same)
    return trainError(llvm::formatv(
        "the parameters differ across the GPUs at step {0} (checksum "
        "{1:x16} on rank {2}): the replicas diverged; stopping",
        step, h, parallel->rank()));
  return llvm::Error::success();
}

llvm::Expected<Checkpoint> Trainer::snapshot(const PatternSource &pattern,
                                             const DataSpec &dataSpec) const {
  Checkpoint c;
  c.model = model.getConfig();
  c.train = config;
  c.pattern = pattern;
  c.data = dataSpec;
  c.step = step;
  Backend &backend = model.getBackend();
  const int64_t total = model.numParams();
  c.params.resize(total);
  c.adamM.resize(total);
  c.adamV.resize(total);
  backend.download(c.params.data(), model.params(), total * 4);
  backend.download(c.adamM.data(), adamM.data(), total * 4);
  backend.download(c.adamV.data(), adamV.data(), total * 4);
  if (llvm::Error e = backend.takeError())
    return std::move(e);
  if (backend.precision() == Precision::FP16) {
    c.lossScale = lossScale;
    c.lossScaleGoodSteps = goodSteps;
  }
  return c;
}

llvm::Error Trainer::restore(const Checkpoint &c, llvm::StringRef path) {
  const int64_t total = model.numParams();
  if (static_cast<int64_t>(c.params.size()) != total)
    return trainError(llvm::formatv(
        "{0}: holds {1} parameters, the model it describes has {2}", path,
        c.params.size(), total));
  Backend &backend = model.getBackend();
  backend.upload(model.params(), c.params.data(), total * 4);
  backend.upload(adamM.data(), c.adamM.data(), total * 4);
  backend.upload(adamV.data(), c.adamV.data(), total * 4);
  step = c.step;
  if (backend.precision() == Precision::FP16 && c.lossScale >= 1) {
    lossScale = c.lossScale;
    goodSteps = c.lossScaleGoodSteps;
  }
  if (llvm::Error e = backend.takeError())
    return e;
  return llvm::Error::success();
}

//===----------------------------------------------------------------------===//
// Sampling
//===----------------------------------------------------------------------===//

uint8_t sparsetx::model::pickByte(const float *logits, const SampleOptions &options,
                                  uint64_t sample, int64_t position) {
  const uint64_t h =
      hash3(options.seed, sample, static_cast<uint64_t>(position));
  std::array<int, kVocab> order;
  std::iota(order.begin(), order.end(), 0);
  // Most likely first (ties: smaller byte first, so picks are reproducible;
  // NaN ranks as -inf). Backend::pickTokens computes the same on a device.
  auto key = [&](int a) {
    return std::isnan(logits[a]) ? -std::numeric_limits<float>::infinity()
                                 : logits[a];
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return key(a) > key(b); });
  if (options.temperature <= 0)
    return static_cast<uint8_t>(order[0]);
  int64_t k = options.topK > 0 ? std::min<int64_t>(options.topK, kVocab) : kVocab;
  double maxLogit = logits[order[0]];
  std::vector<double> weights(k);
  double sum = 0;
  for (int64_t r = 0; r < k; ++r) {
    weights[r] = std::exp((logits[order[r]] - maxLogit) / options.temperature);
    sum += weights[r];
  }
  double u = uniform(h) * sum;
  for (int64_t r = 0; r < k; ++r) {
    u -= weights[r];
    if (u < 0)
      return static_cast<uint8_t>(order[r]);
  }
  return static_cast<uint8_t>(order[k - 1]);
}

llvm::Expected<std::vector<std::vector<uint8_t>>>
sparsetx::model::sample(Transformer &model, const SampleOptions &options) {
  const int64_t n = model.getConfig().seqLen;
  const int64_t length = options.length > 0 ? options.length : n;
  if (options.count <= 0)
    return trainError("the number of samples must be positive");
  if (length > n)
    return trainError(llvm::formatv(
        "sample length {0} exceeds the model's sequence length {1}", length, n));
  if (static_cast<int64_t>(options.prompt.size()) >= length)
    return trainError(llvm::formatv("the prompt ({0} bytes) leaves no room to "
                                    "sample in {1} positions",
                                    options.prompt.size(), length));
  std::vector<std::vector<uint8_t>> samples(options.count);
  std::vector<float> logits;
  for (int64_t begin = 0; begin < options.count; begin += model.getMaxBatch()) {
    int64_t S = std::min(model.getMaxBatch(), options.count - begin);
    if (llvm::Error e = model.beginDecode(S))
      return std::move(e);
    if (!options.pickOnHost && model.getBackend().picksTokens()) {
      Backend::PickOptions o;
      o.seed = options.seed;
      o.firstSample = begin;
      o.topK = options.topK;
      o.length = length;
      o.temperature = options.temperature;
      std::vector<std::vector<uint8_t>> batch;
      if (llvm::Error e = model.decodeAndPick(o, options.prompt, batch))
        return std::move(e);
      for (int64_t s = 0; s < S; ++s)
        samples[begin + s] = std::move(batch[s]);
      continue;
    }
    std::vector<int32_t> tokens(S, kStartToken);
    for (int64_t t = 0; t < length; ++t) {
      if (llvm::Error e = model.decode(tokens, t, logits))
        return std::move(e);
      for (int64_t s = 0; s < S; ++s) {
        uint8_t next =
            t < static_cast<int64_t>(options.prompt.size())
                ? options.prompt[t]
                : pickByte(logits.data() + s * kVocab, options,
                           static_cast<uint64_t>(begin + s), t);
        samples[begin + s].push_back(next);
        tokens[s] = next;
      }
    }
  }
  return samples;
}

//===----------------------------------------------------------------------===//
// Outputs
//===----------------------------------------------------------------------===//

namespace {

std::vector<uint8_t> wavFile(llvm::ArrayRef<uint8_t> muLaw, int64_t rate) {
  std::vector<uint8_t> out;
  auto u32 = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i)
      out.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  auto u16 = [&](uint16_t v) {
    out.push_back(static_cast<uint8_t>(v));
    out.push_back(static_cast<uint8_t>(v >> 8));
  };
  auto tag = [&](const char *t) { out.insert(out.end(), t, t + 4); };
  uint32_t dataBytes = static_cast<uint32_t>(muLaw.size() * 2);
  tag("RIFF");
  u32(36 + dataBytes);
  tag("WAVE");
  tag("fmt ");
  u32(16);
  u16(1); // PCM
  u16(1); // mono
  u32(static_cast<uint32_t>(rate));
  u32(static_cast<uint32_t>(rate * 2));
  u16(2);
  u16(16);
  tag("data");
  u32(dataBytes);
  for (uint8_t q : muLaw) {
    float x = std::clamp(data::muLawDecode(q), -1.0f, 1.0f);
    u16(static_cast<uint16_t>(static_cast<int16_t>(std::lround(x * 32767.0f))));
  }
  return out;
}

} // namespace

llvm::Expected<std::vector<std::string>>
sparsetx::model::writeSamples(const std::vector<std::vector<uint8_t>> &samples,
                              const DataSpec &data, llvm::StringRef outDir) {
  std::vector<std::string> written;
  auto join = [&](llvm::StringRef name) {
    llvm::SmallString<256> p(outDir);
    llvm::sys::path::append(p, name);
    return std::string(p);
  };
  if (data.kind == data::DataKind::Text) {
    std::string text;
    for (size_t s = 0; s < samples.size(); ++s) {
      text += llvm::formatv("===== sample {0} =====\n", s).str();
      text.append(samples[s].begin(), samples[s].end());
      text += "\n";
    }
    std::string path = join("samples.txt");
    if (llvm::Error e = writeFileAtomically(path, text))
      return std::move(e);
    written.push_back(path);
    return written;
  }
  if (data.kind == data::DataKind::Audio) {
    for (size_t s = 0; s < samples.size(); ++s) {
      std::string path = join(llvm::formatv("sample-{0}.wav", s).str());
      if (llvm::Error e = writeFileAtomically(
              path, wavFile(samples[s], data.sampleRate > 0 ? data.sampleRate
                                                             : 16000)))
        return std::move(e);
      written.push_back(path);
    }
    return written;
  }
  // Images: a grid, each image enlarged so that small ones stay visible.
  const int64_t h = data.imageHeight, w = data.imageWidth,
                c = data.imageChannels;
  const int64_t scale = std::max<int64_t>(1, 112 / std::max(h, w));
  const int64_t cols = static_cast<int64_t>(
      std::ceil(std::sqrt(static_cast<double>(samples.size()))));
  const int64_t rows = (static_cast<int64_t>(samples.size()) + cols - 1) / cols;
  const int64_t gap = 4;
  Image grid(cols * (w * scale + gap) + gap, rows * (h * scale + gap) + gap);
  for (size_t s = 0; s < samples.size(); ++s) {
    int64_t x0 = gap + (s % cols) * (w * scale + gap);
    int64_t y0 = gap + (s / cols) * (h * scale + gap);
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        size_t base = static_cast<size_t>((y * w + x) * c);
        auto channel = [&](int64_t ch) -> uint8_t {
          size_t i = base + (c == 1 ? 0 : ch);
          return i < samples[s].size() ? samples[s][i] : 0;
        };
        Rgb px{channel(0), channel(1), channel(2)};
        grid.fillRect(x0 + x * scale, y0 + y * scale, x0 + (x + 1) * scale,
                      y0 + (y + 1) * scale, px);
      }
  }
  std::string path = join("samples.png"), error;
  if (mlir::failed(writePng(grid, path, error)))
    return trainError(error);
  written.push_back(path);
  return written;
}

llvm::Error sparsetx::model::writeLossCurve(llvm::StringRef path,
                                            llvm::StringRef title,
                                            llvm::ArrayRef<CurvePoint> train,
                                            llvm::ArrayRef<CurvePoint> valid) {
  const int64_t width = 900, height = 540, left = 90, right = 30, top = 50,
                bottom = 70, text = 2;
  Image image(width, height);
  const int64_t plotW = width - left - right, plotH = height - top - bottom;
  int64_t maxStep = 1;
  double lo = INFINITY, hi = -INFINITY;
  for (llvm::ArrayRef<CurvePoint> series : {train, valid})
    for (const CurvePoint &p : series) {
      maxStep = std::max(maxStep, p.step);
      if (std::isfinite(p.value)) {
        lo = std::min(lo, p.value);
        hi = std::max(hi, p.value);
      }
    }
  if (!(lo <= hi)) {
    lo = 0;
    hi = 1;
  }
  // Round the value axis outward to a "nice" tick step.
  double span = std::max(hi - lo, 1e-6);
  double tick = std::pow(10.0, std::floor(std::log10(span / 5)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (span / (tick * m) <= 6) {
      tick *= m;
      break;
    }
  lo = std::floor(lo / tick) * tick;
  hi = std::ceil(hi / tick) * tick;
  if (hi <= lo)
    hi = lo + tick;
  auto px = [&](int64_t step) {
    return left + static_cast<int64_t>(std::llround(double(step) / maxStep * (plotW - 1)));
  };
  auto py = [&](double v) {
    return top + static_cast<int64_t>(std::llround((hi - v) / (hi - lo) * (plotH - 1)));
  };
  // Grid and labels.
  for (double v = lo; v <= hi + tick / 2; v += tick) {
    int64_t y = py(v);
    image.fillRect(left, y, left + plotW, y + 1, colors::kGrid);
    std::string label = llvm::formatv("{0:f2}", v).str();
    drawText(image, left - 8 - textWidth(label, text), y - 7, label, text);
  }
  // Step ticks at 1, 2 or 5 times a power of ten, at most 8 of them.
  int64_t stepTick = 1;
  for (int64_t decade = 1; stepTick * 8 < maxStep; decade *= 10)
    for (int64_t m : {1, 2, 5})
      if (decade * m * 8 >= maxStep) {
        stepTick = decade * m;
        break;
      } else {
        stepTick = decade * 10;
      }
  for (int64_t s = 0; s <= maxStep; s += stepTick) {
    int64_t x = px(s);
    image.fillRect(x, top, x + 1, top + plotH, colors::kGrid);
    std::string label = std::to_string(s);
    drawText(image, x - textWidth(label, text) / 2, top + plotH + 8, label, text);
  }
  image.fillRect(left, top, left + 1, top + plotH, colors::kFrame);
  image.fillRect(left, top + plotH - 1, left + plotW, top + plotH, colors::kFrame);
  drawText(image, left, 14, title, text);
  std::string xLabel = "step";
  drawText(image, left + plotW / 2 - textWidth(xLabel, text) / 2,
           height - 28, xLabel, text);

  auto drawSeries = [&](llvm::ArrayRef<CurvePoint> series, Rgb color,
                        int64_t thickness) {
    for (size_t i = 0; i < series.size(); ++i) {
      if (!std::isfinite(series[i].value))
        continue;
      int64_t x1 = px(series[i].step), y1 = py(series[i].value);
      int64_t x0 = x1, y0 = y1;
      if (i > 0 && std::isfinite(series[i - 1].value)) {
        x0 = px(series[i - 1].step);
        y0 = py(series[i - 1].value);
      }
      int64_t steps = std::max<int64_t>({std::abs(x1 - x0), std::abs(y1 - y0), 1});
      for (int64_t k = 0; k <= steps; ++k) {
        int64_t x = x0 + (x1 - x0) * k / steps, y = y0 + (y1 - y0) * k / steps;
        image.fillRect(x - thickness / 2, y - thickness / 2,
                       x - thickness / 2 + thickness,
                       y - thickness / 2 + thickness, color);
      }
    }
  };
  const Rgb trainColor = colors::kDarkBlue, validColor{220, 110, 30};
  drawSeries(train, trainColor, 2);
  drawSeries(valid, validColor, 3);
  for (const CurvePoint &p : valid)
    if (std::isfinite(p.value))
      image.fillRect(px(p.step) - 4, py(p.value) - 4, px(p.step) + 5,
                     py(p.value) + 5, validColor);
  // Legend.
  int64_t lx = left + plotW - 260, ly = top + 10;
  image.fillRect(lx, ly + 6, lx + 24, ly + 9, trainColor);
  drawText(image, lx + 32, ly, "train (bits)", text);
  if (!valid.empty()) {
    image.fillRect(lx, ly + 30, lx + 24, ly + 34, validColor);
    drawText(image, lx + 32, ly + 24, "valid (bits)", text);
  }
  std::string error;
  if (mlir::failed(writePng(image, path, error)))
    return trainError(error);
  return llvm::Error::success();
}
