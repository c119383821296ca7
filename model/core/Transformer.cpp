//===- Transformer.cpp - the Sparse Transformer over a backend ------------===//

#include "sparsetx/Model/Transformer.h"

#include "sparsetx/Support/Hash.h"

#include "llvm/Support/FormatVariadic.h"

#include <cassert>
#include <cmath>

using namespace sparsetx;
using namespace sparsetx::model;

namespace {

enum LayerTensor {
  Wq, Wk, Wv, Wo, W1, W2, // decayed
  Ln1W, Ln1B, Bq, Bk, Bv, Bo, Ln2W, Ln2B, B1, B2,
  NumLayerTensors
};

/// Dropout seed of residual block `layer`, site 0 (attention) or 1 (FF).
uint64_t siteSeed(uint64_t seed, int64_t layer, int site) {
  return splitmix64(seed ^ splitmix64(static_cast<uint64_t>(layer * 2 + site + 1)));
}

llvm::Error modelError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

} // namespace

struct Transformer::Layer {
  float *t[NumLayerTensors];
};

/// One residual block's activations. Training's sets leave ln1 empty: the
/// first layer norm's output is needed only by the q/k/v projections (it
/// lives in ln2 until LN2 overwrites it) and by their weight gradients
/// (layerBackward makes it again, in o). Decoding's set has one.
struct Transformer::Acts {
  Buffer ln1, mean1, rstd1, q, k, v, o, lse, h, ln2, mean2, rstd2, f1, g;
};

Transformer::Transformer(Backend &backend, const ModelConfig &config,
                         const AttentionPattern &pattern, int64_t maxBatch)
    : backend(backend), config(config), pattern(pattern), maxBatch(maxBatch) {}

Transformer::~Transformer() = default;

llvm::Expected<std::unique_ptr<Transformer>>
Transformer::create(Backend &backend, const ModelConfig &config,
                    const AttentionPattern &pattern, int64_t maxBatch) {
  if (llvm::Error e = config.validate())
    return std::move(e);
  if (maxBatch <= 0)
    return modelError("batch must be positive");
  if (pattern.getSeqLen() != config.seqLen ||
      pattern.getNumHeads() != config.numHeads)
    return modelError(llvm::formatv(
        "pattern compiled for n = {0}, {1} heads, model has n = {2}, {3} heads",
        pattern.getSeqLen(), pattern.getNumHeads(), config.seqLen,
        config.numHeads));
  std::unique_ptr<Transformer> model(
      new Transformer(backend, config, pattern, maxBatch));
  model->layout();
  if (llvm::Error e = model->allocate())
    return std::move(e);
  return std::move(model);
}

void Transformer::layout() {
  const int64_t d = config.dModel, dqk = config.qkDim(), ff = config.ffDim(),
                L = config.numLayers;
  int64_t currentLayer = -1; // the block whose tensors add() is adding
  auto add = [&](std::string name, int64_t rows, int64_t cols, double std,
                 bool gain = false) {
    ParamInfo p;
    p.layer = currentLayer;
    p.name = std::move(name);
    p.offset = totalParams;
    p.rows = rows;
    p.cols = cols;
    p.initStd = std;
    p.isGain = gain;
    totalParams += p.count();
    paramInfo.push_back(p);
    return p.offset;
  };
  auto fanIn = [](int64_t in) { return 0.125 / std::sqrt(double(in)); };
  const double residualScale = 1.0 / std::sqrt(2.0 * double(L));

  layerOffsets.assign(L, std::vector<int64_t>(NumLayerTensors));
  for (int64_t l = 0; l < L; ++l) {
    auto name = [&](const char *t) { return llvm::formatv("layer{0}.{1}", l, t).str(); };
    std::vector<int64_t> &o = layerOffsets[l];
    currentLayer = l;
    o[Wq] = add(name("wq"), d, dqk, fanIn(d));
    o[Wk] = add(name("wk"), d, dqk, fanIn(d));
    o[Wv] = add(name("wv"), d, d, fanIn(d));
    o[Wo] = add(name("wo"), d, d, fanIn(d) * residualScale);
    o[W1] = add(name("w1"), d, ff, fanIn(d));
    o[W2] = add(name("w2"), ff, d, fanIn(ff) * residualScale);
  }
  currentLayer = -1;
  offWout = add("out.w", d, kVocab, 0.0);
  decayedParams = totalParams;

  const int64_t n = config.seqLen;
  if (config.kind == data::DataKind::Image) {
    rowTableSize = config.imageHeight;
    colTableSize = config.imageWidth;
    chanTableSize = config.imageChannels;
  } else {
    rowTableSize = (n + config.embedStride - 1) / config.embedStride;
    colTableSize = std::min(config.embedStride, n);
    chanTableSize = 0;
  }
  const double embStd = fanIn(d);
  offTok = add("embed.token", kInputVocab, d, embStd);
  offRow = add("embed.row", rowTableSize, d, embStd);
  offCol = add("embed.column", colTableSize, d, embStd);
  if (chanTableSize)
    offChan = add("embed.channel", chanTableSize, d, embStd);
  for (int64_t l = 0; l < L; ++l) {
    auto name = [&](const char *t) { return llvm::formatv("layer{0}.{1}", l, t).str(); };
    std::vector<int64_t> &o = layerOffsets[l];
    currentLayer = l;
    o[Ln1W] = add(name("ln1.gain"), 1, d, 0, true);
    o[Ln1B] = add(name("ln1.bias"), 1, d, 0);
    o[Bq] = add(name("bq"), 1, dqk, 0);
    o[Bk] = add(name("bk"), 1, dqk, 0);
    o[Bv] = add(name("bv"), 1, d, 0);
    o[Bo] = add(name("bo"), 1, d, 0);
    o[Ln2W] = add(name("ln2.gain"), 1, d, 0, true);
    o[Ln2B] = add(name("ln2.bias"), 1, d, 0);
    o[B1] = add(name("b1"), 1, ff, 0);
    o[B2] = add(name("b2"), 1, d, 0);
  }
  currentLayer = -1;
  offLnfW = add("out.ln.gain", 1, d, 0, true);
  offLnfB = add("out.ln.bias", 1, d, 0);
  offBout = add("out.b", 1, kVocab, 0);
}

llvm::Error Transformer::allocate() {
  const int64_t n = config.seqLen, d = config.dModel, dqk = config.qkDim(),
                ff = config.ffDim(), R = maxBatch * n, H = config.numHeads;
  AttentionDims dims;
  dims.batch = maxBatch;
  dims.heads = H;
  dims.seqLen = n;
  dims.qkDim = config.headQKDim();
  dims.vDim = config.headVDim();
  llvm::Expected<std::unique_ptr<AttentionOp>> op =
      backend.prepareAttention(pattern, dims);
  if (!op)
    return op.takeError();
  attention = std::move(*op);

  paramBuf = backend.allocateFloats(totalParams);
  gradBuf = backend.allocateFloats(totalParams);
  ids = backend.allocate(R * 4);
  targetIds = backend.allocate(R * 4);

  // Position ids of the positional embeddings.
  std::vector<int32_t> row(n), col(n), chan(n);
  for (int64_t t = 0; t < n; ++t) {
    if (config.kind == data::DataKind::Image) {
      int64_t pixel = t / config.imageChannels;
      row[t] = static_cast<int32_t>(pixel / config.imageWidth);
      col[t] = static_cast<int32_t>(pixel % config.imageWidth);
      chan[t] = static_cast<int32_t>(t % config.imageChannels);
    } else {
      row[t] = static_cast<int32_t>(t / config.embedStride);
      col[t] = static_cast<int32_t>(t % config.embedStride);
    }
  }
  rowIds = backend.allocate(n * 4);
  colIds = backend.allocate(n * 4);
  backend.upload(rowIds.data(), row.data(), n * 4);
  backend.upload(colIds.data(), col.data(), n * 4);
  if (chanTableSize) {
    chanIds = backend.allocate(n * 4);
    backend.upload(chanIds.data(), chan.data(), n * 4);
  }

  xs.clear();
  for (int64_t l = 0; l <= config.numLayers; ++l)
    xs.push_back(backend.allocateFloats(R * d));
  // Without recomputation every block keeps its activations for backward;
  // with it, one set is reused (recomputed per block in backward), and a
  // large FF intermediate is computed over chunks of rows (forward and
  // backward), so that its four [rows, ffDim] buffers hold one chunk.
  int64_t sets = config.recompute ? 1 : config.numLayers;
  ffChunkRows = R;
  if (config.recompute && R * ff > kFeedForwardChunkElements)
    ffChunkRows = std::max<int64_t>(1, kFeedForwardChunkElements / ff);
  const int64_t ffRows = ffChunkRows;
  acts.clear();
  for (int64_t s = 0; s < sets; ++s) {
    auto a = std::make_unique<Acts>();
    a->mean1 = backend.allocateFloats(R);
    a->rstd1 = backend.allocateFloats(R);
    a->q = backend.allocateFloats(R * dqk);
    a->k = backend.allocateFloats(R * dqk);
    a->v = backend.allocateFloats(R * d);
    a->o = backend.allocateFloats(R * d);
    a->lse = backend.allocateFloats(R * H);
    a->h = backend.allocateFloats(R * d);
    a->ln2 = backend.allocateFloats(R * d);
    a->mean2 = backend.allocateFloats(R);
    a->rstd2 = backend.allocateFloats(R);
    a->f1 = backend.allocateFloats(ffRows * ff);
    a->g = backend.allocateFloats(ffRows * ff);
    acts.push_back(std::move(a));
  }
  // The positional embeddings' sum [n, d] and its gradient have no buffers
  // of their own: run() makes the sum in tmp before the first block writes
  // tmp, and sums the gradient over the batch in tmp after the last block's
  // backward (tmp is [batch x n, d]). Decoding keeps its own copy of the
  // sum (decodePos, made by beginDecode).
  // The head: the logits' gradient overwrites the logits (the cross-entropy
  // reads a row whole before writing it). With recomputation the Acts set
  // holds nothing from the end of the forward (the last block's forward)
  // until the top block is recomputed in backward, which is exactly when
  // the final layer norm's output and the logits live (the head's backward
  // comes first): they go to its o and, where [R, 256] fits in [R, d],
  // its h. Without recomputation every block's Acts are kept for backward,
  // and the head has buffers of its own.
  if (config.recompute) {
    lnfAt = acts[0]->o.f32();
  } else {
    lnf = backend.allocateFloats(R * d);
    lnfAt = lnf.f32();
  }
  if (config.recompute && kVocab <= d) {
    logitsAt = acts[0]->h.f32();
  } else {
    logits = backend.allocateFloats(R * kVocab);
    logitsAt = logits.f32();
  }
  meanf = backend.allocateFloats(R);
  rstdf = backend.allocateFloats(R);
  losses = backend.allocateFloats(R);
  // The backward's temporaries beside dx and dG live in buffers whose
  // values are dead by then (layerBackward says which, and why).
  tmp = backend.allocateFloats(R * d);
  dx = backend.allocateFloats(R * d);
  dG = backend.allocateFloats(ffRows * ff);
  // An asynchronous backend reports a failed allocation here.
  if (llvm::Error e = backend.takeError())
    return e;
  return llvm::Error::success();
}

GradientHook::~GradientHook() = default;

std::vector<std::vector<GradRange>> Transformer::gradientGroups() const {
  const int64_t L = config.numLayers;
  std::vector<std::vector<GradRange>> groups(L + 1);
  for (const ParamInfo &p : paramInfo) {
    std::vector<GradRange> &g = groups[p.layer < 0 ? L : L - 1 - p.layer];
    // Tensors laid out one after the other extend the group's last range.
    if (!g.empty() && g.back().end() == p.offset)
      g.back().count += p.count();
    else
      g.push_back({p.offset, p.count()});
  }
  return groups;
}

Transformer::Layer Transformer::layerParams(float *base, int64_t l) const {
  Layer layer;
  for (int t = 0; t < NumLayerTensors; ++t)
    layer.t[t] = base + layerOffsets[l][t];
  return layer;
}

void Transformer::initialize(uint64_t seed) {
  std::vector<float> host(totalParams, 0.0f);
  for (size_t p = 0; p < paramInfo.size(); ++p) {
    const ParamInfo &info = paramInfo[p];
    float *dst = host.data() + info.offset;
    if (info.isGain) {
      std::fill(dst, dst + info.count(), 1.0f);
      continue;
    }
    if (info.initStd == 0)
      continue;
    // Box-Muller over a counter-based generator: tensor p, element e.
    uint64_t stream = splitmix64(seed ^ splitmix64(p + 1));
    for (int64_t e = 0; e < info.count(); e += 2) {
      uint64_t a = splitmix64(stream + 2 * e), b = splitmix64(stream + 2 * e + 1);
      double u1 = (static_cast<double>(a >> 11) + 1.0) * 0x1.0p-53;
      double u2 = static_cast<double>(b >> 11) * 0x1.0p-53;
      double r = std::sqrt(-2.0 * std::log(u1));
      dst[e] = static_cast<float>(info.initStd * r * std::cos(2 * M_PI * u2));
      if (e + 1 < info.count())
        dst[e + 1] = static_cast<float>(info.initStd * r * std::sin(2 * M_PI * u2));
    }
  }
  backend.upload(paramBuf.data(), host.data(), totalParams * 4);
}

void Transformer::embedPositions(float *out) {
  const int64_t n = config.seqLen, d = config.dModel;
  float *P = params();
  backend.embeddingForward(out, rowIds.i32(), P + offRow, n, d,
                           rowTableSize, false);
  backend.embeddingForward(out, colIds.i32(), P + offCol, n, d,
                           colTableSize, true);
  if (chanTableSize)
    backend.embeddingForward(out, chanIds.i32(), P + offChan, n, d,
                             chanTableSize, true);
}

void Transformer::setFeedForwardChunkRows(int64_t rows) {
  ffChunkRows = std::clamp<int64_t>(rows, 1, ffChunkRows);
}

void Transformer::layerForward(int64_t l, int64_t batch, Acts &a,
                               uint64_t seed, bool train, bool feedForward) {
  const int64_t d = config.dModel, dqk = config.qkDim(), ff = config.ffDim(),
                R = batch * config.seqLen;
  // Dropout only in training.
  const float p = train ? config.dropout : 0.0f;
  Layer w = layerParams(params(), l);
  const float *x = xs[l].f32();
  float *xNext = xs[l + 1].f32();

  // Attention: h = x + dropout(attention(norm(x)) W_o + b_o). norm(x) in
  // ln2, which holds nothing until LN2 below (Acts).
  float *ln1 = a.ln2.f32();
  backend.layerNormForward(ln1, a.mean1.f32(), a.rstd1.f32(), x, w.t[Ln1W],
                           w.t[Ln1B], R, d);
  backend.matmul(a.q.f32(), ln1, w.t[Wq], R, dqk, d, false, false, w.t[Bq]);
  backend.matmul(a.k.f32(), ln1, w.t[Wk], R, dqk, d, false, false, w.t[Bk]);
  backend.matmul(a.v.f32(), ln1, w.t[Wv], R, d, d, false, false, w.t[Bv]);
  attention->forward(l, batch, a.q.f32(), a.k.f32(), a.v.f32(), a.o.f32(),
                     a.lse.f32());
  backend.matmul(tmp.f32(), a.o.f32(), w.t[Wo], R, d, d, false, false,
                 w.t[Bo]);
  backend.residualDropout(a.h.f32(), x, tmp.f32(), R * d, p,
                          siteSeed(seed, l, 0));

  // Feed-forward: x' = h + dropout(W2 gelu(W1 norm(h) + b1) + b2), over
  // chunks of ffChunkRows rows (one chunk unless recomputation made them
  // smaller).
  backend.layerNormForward(a.ln2.f32(), a.mean2.f32(), a.rstd2.f32(),
                           a.h.f32(), w.t[Ln2W], w.t[Ln2B], R, d);
  if (!feedForward)
    return;
  for (int64_t r0 = 0; r0 < R; r0 += ffChunkRows) {
    const int64_t rows = std::min(ffChunkRows, R - r0);
    backend.matmul(a.f1.f32(), a.ln2.f32() + r0 * d, w.t[W1], rows, ff, d,
                   false, false, w.t[B1]);
    backend.geluForward(a.g.f32(), a.f1.f32(), rows * ff);
    backend.matmul(tmp.f32() + r0 * d, a.g.f32(), w.t[W2], rows, d, ff, false,
                   false, w.t[B2]);
  }
  backend.residualDropout(xNext, a.h.f32(), tmp.f32(), R * d, p,
                          siteSeed(seed, l, 1));
}

// dx holds the gradient with respect to x_{l+1} on entry and with respect to
// x_l on exit (the residual path passes it through; the branches add to it).
//
// The temporaries have no buffers of their own; each lives in one whose
// value is dead when it is written. Block l's Acts serve only block l (with
// recomputation they were just recomputed for it; without, they are its
// own), x_{l+1} was last read by block l+1's backward (or the final layer
// norm's), and tmp holds nothing between the ops that use it:
//   FF branch   dBranch (dropout)  tmp
//               dln                x_{l+1}
//               dF1 (per chunk)    g (dead once W2's gradients are taken;
//                                     a chunked backward recomputes it)
//   attention   dBranch (dropout)  tmp
//               dO                 h   (dead after LN2's backward)
//               dQ                 ln2 (dead after the FF branch's backward)
//               dK                 x_{l+1} (dln, dead after LN2's backward)
//               dV                 tmp (dBranch, dead once W_o's and b_o's
//                                       gradients and dO are taken)
//               dln                h   (dO, dead after the attention's
//                                       backward)
//               ln1 (made again)   o   (dead after the attention's backward)
// Every one of them is written whole before it is read (fill, or an op that
// overwrites), so the arithmetic is that of separate buffers, bit for bit.
void Transformer::layerBackward(int64_t l, int64_t batch, Acts &a,
                                uint64_t seed) {
  const int64_t d = config.dModel, dqk = config.qkDim(), ff = config.ffDim(),
                R = batch * config.seqLen;
  const float p = config.dropout; // backward is always training
  Layer w = layerParams(params(), l);
  Layer g = layerParams(grads(), l);
  float *scratch = tmp.f32(), *dlnFF = xs[l + 1].f32(), *dF1 = a.g.f32();

  // Feed-forward branch.
  const float *dBranch = dx.f32();
  if (p > 0) {
    backend.fill(scratch, 0.0f, R * d);
    backend.dropoutBackward(scratch, dx.f32(), R * d, p, siteSeed(seed, l, 1));
    dBranch = scratch;
  }
  backend.biasAddBackward(g.t[B2], dBranch, R, d);
  // Chunked (recomputation, a large FF intermediate): each chunk's f1 and g
  // are recomputed here; the weight gradients add up over the chunks.
  const bool chunked = R > ffChunkRows;
  for (int64_t r0 = 0; r0 < R; r0 += ffChunkRows) {
    const int64_t rows = std::min(ffChunkRows, R - r0);
    const float *ln2 = a.ln2.f32() + r0 * d;
    if (chunked) {
      backend.matmul(a.f1.f32(), ln2, w.t[W1], rows, ff, d, false, false,
                     w.t[B1]);
      backend.geluForward(a.g.f32(), a.f1.f32(), rows * ff);
    }
    backend.matmulBackward(dG.f32(), false, g.t[W2], dBranch + r0 * d,
                           a.g.f32(), w.t[W2], rows, d, ff, false);
    backend.fill(dF1, 0.0f, rows * ff);
    backend.geluBackward(dF1, a.f1.f32(), dG.f32(), rows * ff);
    backend.biasAddBackward(g.t[B1], dF1, rows, ff);
    backend.matmulBackward(dlnFF + r0 * d, false, g.t[W1], dF1, ln2,
                           w.t[W1], rows, ff, d, false);
  }
  backend.layerNormBackward(dx.f32(), g.t[Ln2W], g.t[Ln2B], dlnFF,
                            a.h.f32(), w.t[Ln2W], a.mean2.f32(), a.rstd2.f32(),
                            R, d);

  // Attention branch.
  dBranch = dx.f32();
  if (p > 0) {
    backend.fill(scratch, 0.0f, R * d);
    backend.dropoutBackward(scratch, dx.f32(), R * d, p, siteSeed(seed, l, 0));
    dBranch = scratch;
  }
  float *dO = a.h.f32();
  backend.biasAddBackward(g.t[Bo], dBranch, R, d);
  backend.matmulBackward(dO, false, g.t[Wo], dBranch, a.o.f32(), w.t[Wo],
                         R, d, d, false);
  float *dQ = a.ln2.f32(), *dK = dlnFF, *dV = scratch;
  attention->backward(l, batch, a.q.f32(), a.k.f32(), a.v.f32(), a.o.f32(),
                      a.lse.f32(),
                      dO, dQ, dK, dV);
  backend.biasAddBackward(g.t[Bq], dQ, R, dqk);
  backend.biasAddBackward(g.t[Bk], dK, R, dqk);
  backend.biasAddBackward(g.t[Bv], dV, R, d);
  // norm(x_l) again, in o (dead after the attention's backward): the
  // forward's values (and statistics), bit for bit.
  float *ln1 = a.o.f32();
  backend.layerNormForward(ln1, a.mean1.f32(), a.rstd1.f32(), xs[l].f32(),
                           w.t[Ln1W], w.t[Ln1B], R, d);
  float *dln = a.h.f32();
  backend.matmulBackward(dln, false, g.t[Wq], dQ, ln1, w.t[Wq], R, dqk, d,
                         false);
  backend.matmulBackward(dln, true, g.t[Wk], dK, ln1, w.t[Wk], R, dqk, d,
                         false);
  backend.matmulBackward(dln, true, g.t[Wv], dV, ln1, w.t[Wv], R, d, d,
                         false);
  backend.layerNormBackward(dx.f32(), g.t[Ln1W], g.t[Ln1B], dln,
                            xs[l].f32(), w.t[Ln1W], a.mean1.f32(),
                            a.rstd1.f32(), R, d);
}

llvm::Expected<double> Transformer::run(llvm::ArrayRef<int32_t> inputs,
                                        llvm::ArrayRef<int32_t> targets,
                                        int64_t batch, bool train,
                                        uint64_t dropoutSeed,
                                        std::vector<float> *tokenLosses,
                                        float lossScale) {
  const int64_t n = config.seqLen, d = config.dModel, R = batch * n,
                L = config.numLayers;
  if (batch <= 0 || batch > maxBatch)
    return modelError(llvm::formatv("batch {0} is outside 1..{1}", batch, maxBatch));
  if (static_cast<int64_t>(inputs.size()) != R ||
      static_cast<int64_t>(targets.size()) != R)
    return modelError(llvm::formatv(
        "expected {0} input and target tokens ({1} x {2}), got {3} and {4}", R,
        batch, n, inputs.size(), targets.size()));
  for (int64_t e = 0; e < R; ++e) {
    if (inputs[e] < 0 || inputs[e] >= kInputVocab)
      return modelError(llvm::formatv(
          "input token {0} at batch {1} position {2} is outside 0..{3}",
          inputs[e], e / n, e % n, kInputVocab - 1));
    if (targets[e] < 0 || targets[e] >= kVocab)
      return modelError(llvm::formatv(
          "target token {0} at batch {1} position {2} is outside 0..{3}",
          targets[e], e / n, e % n, kVocab - 1));
  }
  backend.upload(ids.data(), inputs.data(), R * 4);
  backend.upload(targetIds.data(), targets.data(), R * 4);
  float *P = params();

  // Embeddings: x_0[b, t] = token[b, t] + positions[t].
  backend.embeddingForward(xs[0].f32(), ids.i32(), P + offTok, R, d,
                           kInputVocab, false);
  // The positions' sum in tmp, which the first block overwrites.
  float *posSum = tmp.f32();
  embedPositions(posSum);
  for (int64_t b = 0; b < batch; ++b)
    backend.accumulate(xs[0].f32() + b * n * d, posSum, n * d);

  auto actsOf = [&](int64_t l) -> Acts & {
    return *acts[config.recompute || !train ? 0 : l];
  };
  for (int64_t l = 0; l < L; ++l)
    layerForward(l, batch, actsOf(l), dropoutSeed, train);
  // Dropout is only active in training.
  backend.layerNormForward(lnfAt, meanf.f32(), rstdf.f32(), xs[L].f32(),
                           P + offLnfW, P + offLnfB, R, d);
  backend.matmul(logitsAt, lnfAt, P + offWout, R, kVocab, d, false, false,
                 P + offBout);
  double loss = backend.softmaxCrossEntropy(
      losses.f32(), train ? logitsAt : nullptr, logitsAt,
      targetIds.i32(), R, kVocab, lossScale / static_cast<float>(R));
  if (tokenLosses) {
    tokenLosses->resize(R);
    backend.download(tokenLosses->data(), losses.data(), R * 4);
  }
  if (llvm::Error e = backend.takeError())
    return std::move(e);
  if (!train)
    return loss;

  float *G = grads();
  backend.fill(G, 0.0f, totalParams);
  const float *dlogits = logitsAt; // the cross-entropy wrote it in place
  backend.biasAddBackward(G + offBout, dlogits, R, kVocab);
  // dln in tmp (the forward's scratch; free until the blocks' backward).
  float *dln = tmp.f32();
  backend.matmulBackward(dln, false, G + offWout, dlogits, lnfAt,
                         P + offWout, R, kVocab, d, false);
  backend.fill(dx.f32(), 0.0f, R * d);
  backend.layerNormBackward(dx.f32(), G + offLnfW, G + offLnfB, dln,
                            xs[L].f32(), P + offLnfW, meanf.f32(), rstdf.f32(),
                            R, d);
  for (int64_t l = L - 1; l >= 0; --l) {
    if (config.recompute)
      layerForward(l, batch, actsOf(l), dropoutSeed, true,
                   /*feedForward=*/R <= ffChunkRows);
    layerBackward(l, batch, actsOf(l), dropoutSeed);
    // Block l's gradients are final (its weights serve only block l).
    if (gradientHook)
      if (llvm::Error e = gradientHook->gradientsReady(L - 1 - l))
        return std::move(e);
  }
  backend.embeddingBackward(G + offTok, ids.i32(), dx.f32(), R, d, kInputVocab);
  // The positions' gradient summed over the batch, in tmp (free: the
  // blocks' backward is done).
  float *dPos = tmp.f32();
  backend.fill(dPos, 0.0f, n * d);
  for (int64_t b = 0; b < batch; ++b)
    backend.accumulate(dPos, dx.f32() + b * n * d, n * d);
  backend.embeddingBackward(G + offRow, rowIds.i32(), dPos, n, d,
                            rowTableSize);
  backend.embeddingBackward(G + offCol, colIds.i32(), dPos, n, d,
                            colTableSize);
  if (chanTableSize)
    backend.embeddingBackward(G + offChan, chanIds.i32(), dPos, n, d,
                              chanTableSize);
  if (gradientHook)
    if (llvm::Error e = gradientHook->gradientsReady(L))
      return std::move(e);
  if (llvm::Error e = backend.takeError())
    return std::move(e);
  return loss;
}

//===----------------------------------------------------------------------===//
// Decoding
//===----------------------------------------------------------------------===//

llvm::Error Transformer::beginDecode(int64_t batch) {
  const int64_t d = config.dModel, dqk = config.qkDim(), ff = config.ffDim();
  if (batch <= 0)
    return modelError("sample batch must be positive");
  if (batch > maxBatch)
    return modelError(llvm::formatv(
        "sample batch {0} exceeds the model's batch {1}", batch, maxBatch));
  // The positional embeddings' sum [n, d], the step's table (training
  // makes its sum in scratch memory); made once, so that captured steps
  // keep its address.
  if (!decodePos.data())
    decodePos = backend.allocateFloats(config.seqLen * d);
  if (batch != decodeBatch) {
    decodeGraph.reset();
    sampleGraph.reset();
    decodeActs = std::make_unique<Acts>();
    Acts &a = *decodeActs;
    a.ln1 = backend.allocateFloats(batch * d);
    a.mean1 = backend.allocateFloats(batch);
    a.rstd1 = backend.allocateFloats(batch);
    a.q = backend.allocateFloats(batch * dqk);
    a.k = backend.allocateFloats(batch * dqk);
    a.v = backend.allocateFloats(batch * d);
    a.o = backend.allocateFloats(batch * d);
    a.ln2 = backend.allocateFloats(batch * d);
    a.f1 = backend.allocateFloats(batch * ff);
    a.g = backend.allocateFloats(batch * ff);
    decodeX = backend.allocateFloats(batch * d);
    // Its own: training may keep the logits in its activations.
    decodeLogits = backend.allocateFloats(batch * kVocab);
    // The tokens, then each sequence's position (the same).
    decodeIds = backend.allocate(2 * batch * 4);
    attention->beginDecode(batch, config.numLayers);
    decodeBatch = batch;
    decodeFused.reset();
    if (llvm::Error e = backend.takeError())
      return e;
    // The whole step as one piece of work where the backend fuses it.
    Backend::DecodeModel m;
    m.batch = batch;
    m.dModel = d;
    m.qkDim = dqk;
    m.ffDim = ff;
    m.heads = config.numHeads;
    m.seqLen = config.seqLen;
    m.vocab = kVocab;
    float *P = params();
    for (int64_t l = 0; l < config.numLayers; ++l) {
      Layer w = layerParams(P, l);
      m.layers.push_back({w.t[Ln1W], w.t[Ln1B], w.t[Wq], w.t[Bq], w.t[Wk],
                          w.t[Bk], w.t[Wv], w.t[Bv], w.t[Wo], w.t[Bo],
                          w.t[Ln2W], w.t[Ln2B], w.t[W1], w.t[B1], w.t[W2],
                          w.t[B2]});
    }
    m.tokTable = P + offTok;
    m.posTable = decodePos.f32();
    m.lnfW = P + offLnfW;
    m.lnfB = P + offLnfB;
    m.wout = P + offWout;
    m.bout = P + offBout;
    m.ids = decodeIds.i32();
    m.x = decodeX.f32();
    m.logits = decodeLogits.f32();
    llvm::Expected<std::unique_ptr<Backend::DecodeStep>> fused =
        backend.createDecodeStep(*attention, m);
    if (!fused)
      return modelError("preparing the fused decoding step failed "
                        "(SPARSETX_FUSED_DECODE=0 runs the ops): " +
                        llvm::toString(fused.takeError()));
    decodeFused = std::move(*fused);
  }
  // Every time: the weights may have changed (trained) since the last one.
  embedPositions(decodePos.f32());
  packDecodeWeights();
  decodeNext = 0;
  pickedOnBackend = false;
  return backend.takeError();
}

void Transformer::packDecodeWeights() {
  // The weight matrices in the order decodeStep's packed() indexes them:
  // layout() puts every block's Wq, Wk, Wv, Wo, W1, W2, then Wout first
  // among the parameters (the decayed ones), with their [k, n] shapes.
  std::vector<const ParamInfo *> mats;
  for (const ParamInfo &p : paramInfo)
    if (p.offset < decayedParams)
      mats.push_back(&p);
  assert(int64_t(mats.size()) == config.numLayers * (W2 + 1) + 1 &&
         "layout() changed the decayed parameters");
  std::vector<int64_t> offsets;
  int64_t total = 0;
  for (const ParamInfo *p : mats) {
    int64_t bytes = backend.packedLinearBytes(p->rows, p->cols);
    if (bytes <= 0)
      return; // the backend reads b itself
    offsets.push_back(total);
    total += (bytes + 255) / 256 * 256;
  }
  if (decodeWeights.bytes() != total) {
    decodeGraph.reset(); // they hold the old copy's address
    sampleGraph.reset();
    decodeWeights = backend.allocate(total);
  }
  if (!decodeWeights.data())
    return; // the allocation's error is the backend's
  packedWeights.clear();
  for (auto [i, p] : llvm::enumerate(mats)) {
    char *dst = static_cast<char *>(decodeWeights.data()) + offsets[i];
    backend.packLinear(dst, params() + p->offset, p->rows, p->cols);
    packedWeights.push_back(dst);
  }
}

void Transformer::decodeStep() {
  const int64_t n = config.seqLen, d = config.dModel, dqk = config.qkDim(),
                ff = config.ffDim(), S = decodeBatch;
  Acts &a = *decodeActs;
  float *P = params(), *x = decodeX.f32();
  const int32_t *tokens = decodeIds.i32(), *positions = tokens + S;
  // Everything below reads the position from memory (positions), so that a
  // backend can capture the step once and replay it for every position.
  backend.embeddingForward(x, tokens, P + offTok, S, d, kInputVocab, false);
  backend.embeddingForward(x, positions, decodePos.f32(), S, d, n, true);
  // The linear layers through fusedLinear: the layer norms in the
  // projections, GELU in the first FF matrix and the residual additions
  // (x += ..., no dropout when sampling) in the output matrices.
  using Out = Backend::LinearOut;
  auto norm = [&](const float *weight, const float *bias, float *out) {
    Backend::LinearFusion f;
    f.lnWeight = weight;
    f.lnBias = bias;
    f.lnOut = out;
    f.lnMean = a.mean1.f32();
    f.lnRstd = a.rstd1.f32();
    return f;
  };
  // The backend's packed copy of weight matrix `t` of layer l (Wout: l =
  // numLayers, t = 0), or null.
  auto packed = [&](int64_t l, int t) -> const void * {
    size_t i = size_t(l * (W2 + 1) + t);
    return i < packedWeights.size() ? packedWeights[i] : nullptr;
  };
  // Block l's q/k/v projection, written straight into the attention's
  // buffers where it takes them so (its 16-bit caches), else as fp32 rows;
  // inPlace says which for the block whose projection was made last.
  using Stage = Backend::LinearStage;
  bool inPlace = false;
  auto qkv = [&](int64_t l) {
    Layer w = layerParams(P, l);
    Out q{a.q.f32(), w.t[Wq], w.t[Bq], dqk, packed(l, Wq)},
        k{a.k.f32(), w.t[Wk], w.t[Bk], dqk, packed(l, Wk)},
        v{a.v.f32(), w.t[Wv], w.t[Bv], d, packed(l, Wv)};
    HalfRows direct[3];
    inPlace = attention->decodeInputs(l, S, positions, direct);
    if (inPlace) {
      q.half = direct[0];
      k.half = direct[1];
      v.half = direct[2];
    }
    return Stage{{q, k, v}, x, S, d, false, norm(w.t[Ln1W], w.t[Ln1B], a.ln1.f32())};
  };
  Stage first = qkv(0);
  backend.fusedLinear(first.outs, first.a, first.m, first.k, first.accumulate,
                      first.fusion);
  for (int64_t l = 0; l < config.numLayers; ++l) {
    Layer w = layerParams(P, l);
    if (inPlace)
      attention->decode(l, S, positions, nullptr, nullptr, nullptr,
                        a.o.f32());
    else
      attention->decode(l, S, positions, a.q.f32(), a.k.f32(), a.v.f32(),
                        a.o.f32());
    // From this attention to the next (or the logits): one chain, which a
    // backend may run as one launch.
    Backend::LinearFusion ff1 = norm(w.t[Ln2W], w.t[Ln2B], a.ln2.f32());
    ff1.gelu = true;
    ff1.preGelu = a.f1.f32();
    Stage chain[] = {
        {{Out{x, w.t[Wo], w.t[Bo], d, packed(l, Wo)}}, a.o.f32(), S, d, true, {}},
        {{Out{a.g.f32(), w.t[W1], w.t[B1], ff, packed(l, W1)}}, x, S, d, false,
         ff1},
        {{Out{x, w.t[W2], w.t[B2], d, packed(l, W2)}}, a.g.f32(), S, ff, true,
         {}},
        l + 1 < config.numLayers
            ? qkv(l + 1)
            : Stage{{Out{decodeLogits.f32(), P + offWout, P + offBout, kVocab,
                         packed(config.numLayers, 0)}},
                    x, S, d, false,
                    norm(P + offLnfW, P + offLnfB, a.ln1.f32())}};
    linearsChained = backend.fusedLinearChain(chain);
  }
}

std::string Transformer::decodeMethod() const {
  std::string method = decodeFused ? decodeFused->description()
                       : decodeGraph || (pickedOnBackend && sampleGraph)
                           ? "the step's ops, captured and replayed"
                           : "the step's ops";
  if (!decodeFused && linearsChained)
    method += "; the linear layers between attentions chained in one launch";
  if (pickedOnBackend)
    method += "; tokens picked by the backend";
  return method;
}

llvm::Error Transformer::decodeAndPick(Backend::PickOptions options,
                                       llvm::ArrayRef<uint8_t> prompt,
                                       std::vector<std::vector<uint8_t>> &samples) {
  const int64_t n = config.seqLen, S = decodeBatch;
  if (!decodeActs)
    return modelError("decodeAndPick() before beginDecode()");
  if (!backend.picksTokens())
    return modelError(backend.name() + " does not pick tokens itself");
  if (decodeNext != 0)
    return modelError(llvm::formatv(
        "decodeAndPick() starts at position 0; decoding is at {0}", decodeNext));
  if (options.length < 1 || options.length > n)
    return modelError(llvm::formatv("sample length {0} is outside 1..{1}",
                                    options.length, n));
  if (static_cast<int64_t>(prompt.size()) > n)
    return modelError(llvm::formatv("the prompt ({0} bytes) exceeds the "
                                    "model's sequence length {1}",
                                    prompt.size(), n));
  options.promptLength = static_cast<int64_t>(prompt.size());
  // Sized for the largest batch and length once, so that the captured
  // work's addresses hold for every call.
  if (!pickHistory.data()) {
    pickHistory = backend.allocate(maxBatch * n * 4);
    pickPrompt = backend.allocate(n * 4);
    pickOptions = backend.allocate(sizeof(Backend::PickOptions));
  }
  std::vector<int32_t> host(prompt.begin(), prompt.end());
  host.resize(size_t(n), 0);
  backend.upload(pickPrompt.data(), host.data(), n * 4);
  backend.upload(pickOptions.data(), &options, sizeof options);
  std::vector<int32_t> ids(size_t(S), kStartToken);
  ids.resize(size_t(2 * S), 0);
  backend.upload(decodeIds.data(), ids.data(), 2 * S * 4);
  if (llvm::Error e = backend.takeError())
    return e;
  Backend::PickTokens pick;
  pick.logits = decodeLogits.f32();
  pick.ids = decodeIds.i32();
  pick.history = pickHistory.i32();
  pick.prompt = pickPrompt.i32();
  pick.options = static_cast<const Backend::PickOptions *>(pickOptions.data());
  pick.batch = S;
  pick.historyStride = n;
  auto step = [&] {
    if (decodeFused)
      decodeFused->run();
    else
      decodeStep();
    backend.pickTokens(pick);
  };
  pickedOnBackend = true;
  // As decode(): the first step op by op (it sizes every buffer and
  // table), the second captured, then replayed.
  for (int64_t t = 0; t < options.length; ++t) {
    if (!decodeFused && !sampleGraph && t > 0 && backend.beginCapture()) {
      step();
      llvm::Expected<std::unique_ptr<Backend::CapturedWork>> graph =
          backend.endCapture();
      if (!graph)
        return modelError("capturing the sampling step failed "
                          "(SPARSETX_CUDA_GRAPHS=0 runs it op by op): " +
                          llvm::toString(graph.takeError()));
      sampleGraph = std::move(*graph);
    }
    if (sampleGraph && !decodeFused)
      sampleGraph->replay();
    else
      step();
  }
  decodeNext = options.length;
  host.assign(size_t(S * n), 0);
  backend.download(host.data(), pickHistory.data(), S * n * 4);
  if (llvm::Error e = backend.takeError())
    return e;
  samples.assign(size_t(S), {});
  for (int64_t s = 0; s < S; ++s)
    for (int64_t t = 0; t < options.length; ++t)
      samples[s].push_back(static_cast<uint8_t>(host[size_t(s * n + t)]));
  return llvm::Error::success();
}

llvm::Error Transformer::decode(llvm::ArrayRef<int32_t> tokens, int64_t position,
                                std::vector<float> &out) {
  const int64_t n = config.seqLen, S = decodeBatch;
  if (!decodeActs)
    return modelError("decode() before beginDecode()");
  if (position != decodeNext || position >= n)
    return modelError(llvm::formatv(
        "decode position {0}: expected {1} (positions run 0..{2} in order)",
        position, decodeNext, n - 1));
  if (static_cast<int64_t>(tokens.size()) != S)
    return modelError(llvm::formatv("decode expects {0} tokens, got {1}", S,
                                    tokens.size()));
  for (int64_t s = 0; s < S; ++s)
    if (tokens[s] < 0 || tokens[s] >= kInputVocab)
      return modelError(llvm::formatv(
          "input token {0} of sample {1} is outside 0..{2}", tokens[s], s,
          kInputVocab - 1));
  ++decodeNext;
  std::vector<int32_t> ids(tokens.begin(), tokens.end());
  ids.resize(2 * S, static_cast<int32_t>(position));
  backend.upload(decodeIds.data(), ids.data(), 2 * S * 4);
  // The fused step where the backend has one. Else the first step runs op by
  // op (it sizes every buffer and table); the second is captured where the
  // backend can, and replayed from then on.
  if (decodeFused) {
    decodeFused->run();
  } else {
    if (!decodeGraph && position > 0 && backend.beginCapture()) {
      decodeStep();
      llvm::Expected<std::unique_ptr<Backend::CapturedWork>> graph =
          backend.endCapture();
      if (!graph)
        return modelError("capturing the decoding step failed "
                          "(SPARSETX_CUDA_GRAPHS=0 runs it op by op): " +
                          llvm::toString(graph.takeError()));
      decodeGraph = std::move(*graph);
    }
    if (decodeGraph)
      decodeGraph->replay();
    else
      decodeStep();
  }
  out.resize(S * kVocab);
  backend.download(out.data(), decodeLogits.f32(), S * kVocab * 4);
  return backend.takeError();
}
