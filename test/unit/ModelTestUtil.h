//===- ModelTestUtil.h - shared pieces of the model's tests -----*- C++ -*-===//
//
// Used by the CPU model tests (ModelTest, DataParallelTest) and the GPU model
// test (test/gpu/CudaModelTest.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_TEST_MODELTESTUTIL_H
#define SPARSETX_TEST_MODELTESTUTIL_H

#include "sparsetx/Model/Backend.h"
#include "sparsetx/Model/Data/Dataset.h"

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <vector>

namespace sparsetx::model::test {

/// Text-like data: a six-word vocabulary repeated at random (there is
/// something to learn), split 80/10/10 into train, valid and test.
inline data::Dataset syntheticText(int64_t bytes, uint32_t seed = 7) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> all(bytes);
  const char *words[] = {"sparse ", "attention ", "the ", "of ", "block ", "\n"};
  size_t k = 0;
  while (k < all.size())
    for (const char *w = words[rng() % 6]; *w && k < all.size(); ++w)
      all[k++] = static_cast<uint8_t>(*w);
  data::DataInfo info;
  info.source = "synthetic.txt";
  int64_t valid = bytes / 10, test = bytes / 10;
  std::vector<uint8_t> tr(all.begin(), all.end() - valid - test),
      va(all.end() - valid - test, all.end() - test),
      te(all.end() - test, all.end());
  return data::Dataset(info, tr, va, te);
}

/// A backend that forwards every op to another (the CPU backend by default):
/// a test overrides what it changes (an overflow, a hook before an op) and
/// inherits the rest. Memory comes from the inner backend.
class ForwardingBackend : public Backend {
public:
  explicit ForwardingBackend(std::unique_ptr<Backend> inner = createCpuBackend())
      : inner(std::move(inner)) {}
  llvm::StringRef name() const override { return inner->name(); }
  Precision precision() const override { return inner->precision(); }
  llvm::Error takeError() override { return inner->takeError(); }
  void upload(void *d, const void *s, int64_t b) override { inner->upload(d, s, b); }
  void download(void *d, const void *s, int64_t b) override { inner->download(d, s, b); }
  void copy(void *d, const void *s, int64_t b) override { inner->copy(d, s, b); }
  void fill(float *x, float v, int64_t n) override { inner->fill(x, v, n); }
  void accumulate(float *y, const float *x, int64_t n) override { inner->accumulate(y, x, n); }
  void scale(float *x, float v, int64_t n) override { inner->scale(x, v, n); }
  void synchronize() override { inner->synchronize(); }
  void matmul(float *c, const float *a, const float *b, int64_t m, int64_t n,
              int64_t k, bool tb, bool acc, const float *bias) override {
    inner->matmul(c, a, b, m, n, k, tb, acc, bias);
  }
  void matmulBackward(float *da, bool accDa, float *db, const float *dc,
                      const float *a, const float *b, int64_t m, int64_t n,
                      int64_t k, bool tb) override {
    inner->matmulBackward(da, accDa, db, dc, a, b, m, n, k, tb);
  }
  void layerNormForward(float *o, float *mu, float *rs, const float *x,
                        const float *w, const float *b, int64_t r,
                        int64_t c) override {
    inner->layerNormForward(o, mu, rs, x, w, b, r, c);
  }
  void layerNormBackward(float *dx, float *dw, float *db, const float *dy,
                         const float *x, const float *w, const float *mu,
                         const float *rs, int64_t r, int64_t c) override {
    inner->layerNormBackward(dx, dw, db, dy, x, w, mu, rs, r, c);
  }
  void geluForward(float *o, const float *x, int64_t n) override { inner->geluForward(o, x, n); }
  void geluBackward(float *dx, const float *x, const float *dy, int64_t n) override {
    inner->geluBackward(dx, x, dy, n);
  }
  void biasAddForward(float *x, const float *b, int64_t r, int64_t c) override {
    inner->biasAddForward(x, b, r, c);
  }
  void biasAddBackward(float *db, const float *dy, int64_t r, int64_t c) override {
    inner->biasAddBackward(db, dy, r, c);
  }
  void embeddingForward(float *o, const int32_t *ids, const float *t, int64_t r,
                        int64_t c, int64_t v, bool acc) override {
    inner->embeddingForward(o, ids, t, r, c, v, acc);
  }
  void embeddingBackward(float *dt, const int32_t *ids, const float *dy,
                         int64_t r, int64_t c, int64_t v) override {
    inner->embeddingBackward(dt, ids, dy, r, c, v);
  }
  double softmaxCrossEntropy(float *l, float *dl, const float *z,
                             const int32_t *t, int64_t r, int64_t v,
                             float s) override {
    return inner->softmaxCrossEntropy(l, dl, z, t, r, v, s);
  }
  void dropoutForward(float *o, const float *x, int64_t n, float p, uint64_t s) override {
    inner->dropoutForward(o, x, n, p, s);
  }
  void dropoutBackward(float *dx, const float *dy, int64_t n, float p, uint64_t s) override {
    inner->dropoutBackward(dx, dy, n, p, s);
  }
  void residualDropout(float *o, const float *x, const float *b, int64_t n,
                       float p, uint64_t s) override {
    inner->residualDropout(o, x, b, n, p, s);
  }
  void adamw(float *p, const float *g, float *m, float *v, int64_t n,
             int64_t step, float lr, float b1, float b2, float eps,
             float wd) override {
    inner->adamw(p, g, m, v, n, step, lr, b1, b2, eps, wd);
  }
  double clipGradNorm(float *g, int64_t n, double maxNorm) override {
    return inner->clipGradNorm(g, n, maxNorm);
  }
  void convertToHalf(uint16_t *out, const float *x, int64_t n, float s,
                     Precision type) override {
    inner->convertToHalf(out, x, n, s, type);
  }
  void convertFromHalf(float *x, const uint16_t *in, int64_t n, float s,
                       Precision type) override {
    inner->convertFromHalf(x, in, n, s, type);
  }
  llvm::Expected<std::unique_ptr<AttentionOp>>
  prepareAttention(const AttentionPattern &p, const AttentionDims &d) override {
    return inner->prepareAttention(p, d);
  }

protected:
  void *allocateRaw(int64_t bytes) override {
    Buffer b = inner->allocate(bytes);
    void *p = b.data();
    if (p)
      owned.emplace(p, std::move(b));
    return p;
  }
  void release(void *p, int64_t) override { owned.erase(p); }

  std::unique_ptr<Backend> inner;

private:
  std::map<void *, Buffer> owned;
};

} // namespace sparsetx::model::test

#endif // SPARSETX_TEST_MODELTESTUTIL_H
