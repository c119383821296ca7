//===- CudaModelTest.cpp - the CUDA backend against the CPU backend -------===//
//
// Every op of the CUDA backend on fresh random inputs against the CPU
// backend (the finite-difference-tested reference), outputs poisoned first;
// the attention in fp32 (exact) and bf16/fp16 (tensor cores); decoding
// against the forward pass; 20 training steps against the CPU's losses
// (fp32 1e-4, bf16 2e-2); fp16 loss scaling through a forced overflow;
// sampling reproducible in its seed. Skips without a GPU.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Backend.h"
#include "sparsetx/Model/Trainer.h"
#include "sparsetx/Model/Transformer.h"
#include "sparsetx/Runtime/Cuda.h"
#include "sparsetx/Support/Half.h"

#include "../unit/ModelTestUtil.h"

#include "llvm/ADT/ScopeExit.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>

using namespace sparsetx;
using namespace sparsetx::model;

namespace {

constexpr const char *kFixed = R"(pattern fixed(l = 8, c = 2) {
  causal;
  heads = i / l == j / l || j % l >= l - c;
})";
constexpr const char *kPerHead = R"(pattern per_head(l = 8) {
  causal;
  heads[h] = i - j < l * (h + 1) || (i - j) % l == 0;
})";
constexpr const char *kLayered = R"(pattern interleaved(l = 8) {
  causal;
  layers = [i - j < l, (i - j) % l == 0];
})";

#define SKIP_WITHOUT_GPU()                                                     \
  if (!cuda::isAvailable())                                                    \
  GTEST_SKIP() << "no GPU: " << cuda::unavailableReason()

std::unique_ptr<Backend> gpu(Precision precision = Precision::FP32) {
  CudaBackendOptions o;
  o.precision = precision;
  auto b = createCudaBackend(o);
  if (!b) {
    ADD_FAILURE() << llvm::toString(b.takeError());
    return nullptr;
  }
  return std::move(*b);
}

std::unique_ptr<AttentionPattern> loadPattern(const char *text, int64_t n,
                                              int64_t heads) {
  PatternSource s;
  s.text = text;
  s.path = "test.sp";
  auto p = AttentionPattern::load(s, n, heads);
  if (!p) {
    ADD_FAILURE() << llvm::toString(p.takeError());
    return nullptr;
  }
  return std::move(*p);
}

std::vector<float> randoms(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> x(n);
  for (float &v : x)
    v = normal(rng);
  return x;
}

/// The same host data in both backends' memory.
struct Pair {
  Buffer cpu, gpu;
  int64_t count = 0;
  float *c() const { return cpu.f32(); }
  float *g() const { return gpu.f32(); }
};

class OpsTest : public ::testing::Test {
protected:
  void SetUp() override {
    SKIP_WITHOUT_GPU();
    cpuBackend = createCpuBackend();
    gpuBackend = gpu();
    ASSERT_TRUE(gpuBackend);
  }
  Pair make(const std::vector<float> &host) {
    Pair p;
    p.count = static_cast<int64_t>(host.size());
    p.cpu = cpuBackend->allocateFloats(p.count);
    p.gpu = gpuBackend->allocateFloats(p.count);
    cpuBackend->upload(p.c(), host.data(), p.count * 4);
    gpuBackend->upload(p.g(), host.data(), p.count * 4);
    return p;
  }
  Pair random(int64_t n, uint32_t seed, float scale = 1.0f) {
    return make(randoms(n, seed, scale));
  }
  /// An output both sides start as NaN (poisoned), or as the same values.
  Pair poisoned(int64_t n) { return make(std::vector<float>(n, NAN)); }
  Pair ints(const std::vector<int32_t> &host) {
    std::vector<float> bits(host.size());
    std::memcpy(bits.data(), host.data(), host.size() * 4);
    return make(bits);
  }
  /// max |gpu - cpu| / max |cpu| <= tol (and no NaN).
  void expectClose(const Pair &p, double tol, const char *what) {
    std::vector<float> a(p.count), b(p.count);
    cpuBackend->download(a.data(), p.c(), p.count * 4);
    gpuBackend->download(b.data(), p.g(), p.count * 4);
    ASSERT_FALSE(bool(gpuBackend->takeError())) << what;
    double diff = 0, mag = 1e-30;
    for (int64_t i = 0; i < p.count; ++i) {
      ASSERT_TRUE(std::isfinite(b[i])) << what << " [" << i << "]";
      diff = std::max(diff, double(std::fabs(a[i] - b[i])));
      mag = std::max(mag, double(std::fabs(a[i])));
    }
    EXPECT_LE(diff / mag, tol) << what << ": max diff " << diff << ", max "
                               << mag;
  }
  void expectEqual(const Pair &p, const char *what) {
    std::vector<float> a(p.count), b(p.count);
    cpuBackend->download(a.data(), p.c(), p.count * 4);
    gpuBackend->download(b.data(), p.g(), p.count * 4);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), p.count * 4)) << what;
  }
  std::unique_ptr<Backend> cpuBackend, gpuBackend;
};

TEST_F(OpsTest, Matmuls) {
  const int64_t m = 67, n = 45, k = 129;
  // The bias fused into the GEMM (16-byte aligned) and added apart (not).
  Pair biases = random(n + 1, 7);
  for (bool transB : {false, true})
    for (bool acc : {false, true})
      for (int biasCase = 0; biasCase < 3; ++biasCase) {
        Pair a = random(m * k, 1), b = random(k * n, 2), c = random(m * n, 3);
        if (!acc)
          c = poisoned(m * n);
        const float *bc = biasCase == 0 ? nullptr : biases.c() + (biasCase - 1);
        const float *bg = biasCase == 0 ? nullptr : biases.g() + (biasCase - 1);
        cpuBackend->matmul(c.c(), a.c(), b.c(), m, n, k, transB, acc, bc);
        gpuBackend->matmul(c.g(), a.g(), b.g(), m, n, k, transB, acc, bg);
        expectClose(c, 1e-5, transB ? "matmul transB" : "matmul");
      }
  for (bool transB : {false, true})
    for (bool acc : {false, true}) {
      Pair a = random(m * k, 1), b = random(k * n, 2);
      // Backward: da (+)= dc op(b)^T, db += ...
      Pair dc = random(m * n, 4), da = random(m * k, 5), db = random(k * n, 6);
      cpuBackend->matmulBackward(da.c(), acc, db.c(), dc.c(), a.c(), b.c(), m,
                                 n, k, transB);
      gpuBackend->matmulBackward(da.g(), acc, db.g(), dc.g(), a.g(), b.g(), m,
                                 n, k, transB);
      expectClose(da, 1e-5, "matmulBackward da");
      expectClose(db, 1e-5, "matmulBackward db");
    }
}

// Decoding's fused linear layers (sp_linear_small up to 8 rows, the ops'
// composition beyond) against the CPU's composition: layer norm in, three
// outputs sharing it, GELU out, residual accumulation; k not a multiple of
// the kernel's 8 warps, outputs not multiples of its 32 columns.
TEST_F(OpsTest, FusedLinear) {
  using Out = Backend::LinearOut;
  for (auto [m, k] : {std::pair<int64_t, int64_t>{1, 77}, {3, 77}, {8, 200},
                      {9, 77}, {8, 1100}}) {
    SCOPED_TRACE("m = " + std::to_string(m) + ", k = " + std::to_string(k));
    const int64_t n[3] = {45, 32, 100};
    Pair a = random(m * k, 31), lnW = random(k, 32), lnB = random(k, 33);
    Pair lnOut = poisoned(m * k), mean = poisoned(m), rstd = poisoned(m),
         pre = poisoned(m * 100);
    std::vector<Pair> b, bias, c;
    for (int i = 0; i < 3; ++i) {
      b.push_back(random(k * n[i], 40 + i, 0.1f));
      bias.push_back(random(n[i], 50 + i));
      c.push_back(random(m * n[i], 60 + i));
    }
    auto fusion = [&](bool onGpu, bool withNorm, bool gelu) {
      Backend::LinearFusion f;
      if (withNorm) {
        f.lnWeight = onGpu ? lnW.g() : lnW.c();
        f.lnBias = onGpu ? lnB.g() : lnB.c();
      }
      f.lnOut = onGpu ? lnOut.g() : lnOut.c();
      f.lnMean = onGpu ? mean.g() : mean.c();
      f.lnRstd = onGpu ? rstd.g() : rstd.c();
      f.gelu = gelu;
      f.preGelu = onGpu ? pre.g() : pre.c();
      return f;
    };
    auto outs = [&](bool onGpu, int count) {
      std::vector<Out> o;
      for (int i = 0; i < count; ++i)
        o.push_back({onGpu ? c[i].g() : c[i].c(), onGpu ? b[i].g() : b[i].c(),
                     onGpu ? bias[i].g() : bias[i].c(), n[i]});
      return o;
    };
    // Normalized input, three outputs, overwritten.
    for (int i = 0; i < 3; ++i)
      c[i] = poisoned(m * n[i]);
    cpuBackend->fusedLinear(outs(false, 3), a.c(), m, k, false,
                            fusion(false, true, false));
    gpuBackend->fusedLinear(outs(true, 3), a.g(), m, k, false,
                            fusion(true, true, false));
    for (int i = 0; i < 3; ++i)
      expectClose(c[i], 1e-5, "layer norm + linear");
    // Plain input, accumulated (the residual addition).
    cpuBackend->fusedLinear(outs(false, 1), a.c(), m, k, true,
                            fusion(false, false, false));
    gpuBackend->fusedLinear(outs(true, 1), a.g(), m, k, true,
                            fusion(true, false, false));
    expectClose(c[0], 1e-5, "linear, accumulated");
    // Layer norm, GELU.
    c[2] = poisoned(m * n[2]);
    std::vector<Out> o2c = {outs(false, 3)[2]}, o2g = {outs(true, 3)[2]};
    cpuBackend->fusedLinear(o2c, a.c(), m, k, false, fusion(false, true, true));
    gpuBackend->fusedLinear(o2g, a.g(), m, k, false, fusion(true, true, true));
    expectClose(c[2], 1e-5, "layer norm + linear + GELU");
  }
}

// Decoding's linear layers on packed weights (packLinear: [n, k] in the
// precision's element type; sp_gemv) against the CPU's composition over the
// same weights rounded to that type: fp32 accumulation is all that differs.
// k up to the kernel's 64 KiB of rows (8 x 2048), one not a multiple of its
// chunk; outputs not multiples of its 4 columns per CTA; outputs poisoned.
TEST(PackedLinearTest, MatchesTheCpuOnRoundedWeights) {
  SKIP_WITHOUT_GPU();
  using Out = Backend::LinearOut;
  for (Precision precision : {Precision::FP32, Precision::BF16, Precision::FP16}) {
    SCOPED_TRACE(toString(precision).str());
    std::unique_ptr<Backend> g = gpu(precision), c = createCpuBackend();
    ASSERT_TRUE(g);
    auto round = [&](float x) {
      return precision == Precision::BF16   ? bf16ToFloat(floatToBF16(x))
             : precision == Precision::FP16 ? fp16ToFloat(floatToFP16(x))
                                            : x;
    };
    for (auto [m, k] : {std::pair<int64_t, int64_t>{1, 512}, {3, 520},
                        {8, 2048}, {2, 2056}}) {
      SCOPED_TRACE("m = " + std::to_string(m) + ", k = " + std::to_string(k));
      const int64_t n[3] = {45, 32, 101};
      ASSERT_GT(g->packedLinearBytes(k, n[0]), 0);
      auto both = [&](const std::vector<float> &host, Buffer &cb, Buffer &gb) {
        cb = c->allocateFloats(int64_t(host.size()));
        gb = g->allocateFloats(int64_t(host.size()));
        c->upload(cb.data(), host.data(), host.size() * 4);
        g->upload(gb.data(), host.data(), host.size() * 4);
      };
      Buffer aC, aG, lnWC, lnWG, lnBC, lnBG;
      both(randoms(m * k, 31), aC, aG);
      both(randoms(k, 32), lnWC, lnWG);
      both(randoms(k, 33), lnBC, lnBG);
      Buffer bC[3], bG[3], biasC[3], biasG[3], outC[3], outG[3], packed[3];
      for (int i = 0; i < 3; ++i) {
        std::vector<float> b = randoms(k * n[i], 40 + i, 0.1f), rounded = b;
        for (float &x : rounded)
          x = round(x);
        // The CPU gets the rounded weights, the GPU the fp32 ones to pack.
        bC[i] = c->allocateFloats(k * n[i]);
        c->upload(bC[i].data(), rounded.data(), rounded.size() * 4);
        bG[i] = g->allocateFloats(k * n[i]);
        g->upload(bG[i].data(), b.data(), b.size() * 4);
        packed[i] = g->allocate(g->packedLinearBytes(k, n[i]));
        g->packLinear(packed[i].data(), bG[i].f32(), k, n[i]);
        both(randoms(n[i], 50 + i), biasC[i], biasG[i]);
      }
      auto run = [&](int outs, bool accumulate, bool norm, bool gelu,
                     const char *what) {
        std::vector<std::vector<float>> start(3);
        for (int i = 0; i < outs; ++i) {
          // Accumulating: the same start on both; else NaN (poison).
          start[i] = accumulate ? randoms(m * n[i], 60 + i)
                                : std::vector<float>(m * n[i], NAN);
          both(start[i], outC[i], outG[i]);
        }
        std::vector<Out> oc, og;
        for (int i = 0; i < outs; ++i) {
          oc.push_back({outC[i].f32(), bC[i].f32(), biasC[i].f32(), n[i]});
          og.push_back({outG[i].f32(), bG[i].f32(), biasG[i].f32(), n[i],
                        packed[i].data()});
        }
        Backend::LinearFusion fc, fg;
        Buffer scratch = c->allocateFloats(m * (k + 2) + m * 101);
        if (norm) {
          fc.lnWeight = lnWC.f32();
          fc.lnBias = lnBC.f32();
          fg.lnWeight = lnWG.f32();
          fg.lnBias = lnBG.f32();
        }
        fc.lnOut = scratch.f32();
        fc.lnMean = scratch.f32() + m * k;
        fc.lnRstd = scratch.f32() + m * k + m;
        fc.gelu = fg.gelu = gelu;
        fc.preGelu = scratch.f32() + m * (k + 2);
        c->fusedLinear(oc, aC.f32(), m, k, accumulate, fc);
        g->fusedLinear(og, aG.f32(), m, k, accumulate, fg);
        for (int i = 0; i < outs; ++i) {
          std::vector<float> want(m * n[i]), got(m * n[i]);
          c->download(want.data(), outC[i].f32(), want.size() * 4);
          g->download(got.data(), outG[i].f32(), got.size() * 4);
          if (llvm::Error e = g->takeError())
            FAIL() << what << ": " << llvm::toString(std::move(e));
          double diff = 0, mag = 1e-30;
          for (size_t e = 0; e < got.size(); ++e) {
            ASSERT_TRUE(std::isfinite(got[e])) << what << " out " << i << " [" << e << "]";
            diff = std::max(diff, double(std::fabs(want[e] - got[e])));
            mag = std::max(mag, double(std::fabs(want[e])));
          }
          EXPECT_LE(diff / mag, 1e-5) << what << " out " << i;
        }
      };
      run(3, false, true, false, "layer norm + three outputs");
      run(1, true, false, false, "accumulated");
      run(1, false, true, true, "layer norm + GELU");
    }
  }
}

// Decoding's projections write q, k, v as 16-bit rows straight into the
// attention's buffers (Backend::HalfRows: head-major rows at the position
// held in device memory). Against the CPU's fp32 rows converted on the host:
// packed weights (sp_gemv) for 1 and 3 rows, unpacked (sp_linear_small) for
// 2, and 9 rows (the ops, then sp_rows_to_half); a null position (row 0 of
// capacity 1) and positions outside the capacity, which write nothing. Every
// element not written must keep its poison.
TEST(PackedLinearTest, WritesHalfRowsAtThePosition) {
  SKIP_WITHOUT_GPU();
  using Out = Backend::LinearOut;
  for (Precision precision : {Precision::BF16, Precision::FP16}) {
    SCOPED_TRACE(toString(precision).str());
    std::unique_ptr<Backend> g = gpu(precision), c = createCpuBackend();
    ASSERT_TRUE(g);
    const bool bf16 = precision == Precision::BF16;
    auto round = [&](float x) {
      return bf16 ? bf16ToFloat(floatToBF16(x)) : fp16ToFloat(floatToFP16(x));
    };
    const int64_t k = 256, heads = 3, width[2] = {20, 32}, stride = 32,
                  capacity[2] = {1, 5};
    for (auto [m, packedWeights] : {std::pair<int64_t, bool>{1, true},
                                    {3, true}, {2, false}, {9, true}}) {
      for (int32_t at : {3, -1, 5}) {
        SCOPED_TRACE("m = " + std::to_string(m) + (packedWeights ? " packed" : "") +
                     ", position " + std::to_string(at));
        std::vector<float> a = randoms(m * k, 71), lnW = randoms(k, 72),
                           lnB = randoms(k, 73);
        Buffer aC = c->allocateFloats(m * k), aG = g->allocateFloats(m * k),
               lnWC = c->allocateFloats(k), lnWG = g->allocateFloats(k),
               lnBC = c->allocateFloats(k), lnBG = g->allocateFloats(k);
        c->upload(aC.data(), a.data(), a.size() * 4);
        g->upload(aG.data(), a.data(), a.size() * 4);
        c->upload(lnWC.data(), lnW.data(), k * 4);
        g->upload(lnWG.data(), lnW.data(), k * 4);
        c->upload(lnBC.data(), lnB.data(), k * 4);
        g->upload(lnBG.data(), lnB.data(), k * 4);
        Buffer position = g->allocate(4);
        g->upload(position.data(), &at, 4);
        Buffer bC[2], bG[2], biasC[2], biasG[2], outC[2], outG[2], packed[2],
            dst[2];
        std::vector<Out> oc, og;
        std::vector<uint16_t> poison[2];
        for (int i = 0; i < 2; ++i) {
          const int64_t n = heads * width[i];
          std::vector<float> b = randoms(k * n, 80 + i, 0.1f), rounded = b,
                             bias = randoms(n, 90 + i);
          for (float &x : rounded)
            x = round(x);
          bC[i] = c->allocateFloats(k * n);
          c->upload(bC[i].data(), rounded.data(), rounded.size() * 4);
          bG[i] = g->allocateFloats(k * n);
          // Unpacked weights are rounded by the kernel's arithmetic, not
          // here: give it the rounded ones so both sides agree.
          g->upload(bG[i].data(), (packedWeights ? b : rounded).data(),
                    b.size() * 4);
          biasC[i] = c->allocateFloats(n);
          c->upload(biasC[i].data(), bias.data(), n * 4);
          biasG[i] = g->allocateFloats(n);
          g->upload(biasG[i].data(), bias.data(), n * 4);
          outC[i] = c->allocateFloats(m * n);
          outG[i] = g->allocateFloats(m * n);
          poison[i].assign(size_t(m * heads * capacity[i] * stride), 0xffffu);
          dst[i] = g->allocate(int64_t(poison[i].size()) * 2);
          g->upload(dst[i].data(), poison[i].data(), poison[i].size() * 2);
          Out gout{outG[i].f32(), bG[i].f32(), biasG[i].f32(), n};
          if (packedWeights) {
            packed[i] = g->allocate(g->packedLinearBytes(k, n));
            g->packLinear(packed[i].data(), bG[i].f32(), k, n);
            gout.packed = packed[i].data();
          }
          gout.half = {dst[i].data(), heads, width[i], stride, capacity[i],
                       i == 0 ? nullptr : position.i32()};
          og.push_back(gout);
          oc.push_back({outC[i].f32(), bC[i].f32(), biasC[i].f32(), n});
        }
        Buffer scratch = c->allocateFloats(m * (k + 2)),
               gScratch = g->allocateFloats(m * (k + 2) + m * 96);
        Backend::LinearFusion fc, fg;
        fc.lnWeight = lnWC.f32();
        fc.lnBias = lnBC.f32();
        fc.lnOut = scratch.f32();
        fc.lnMean = scratch.f32() + m * k;
        fc.lnRstd = scratch.f32() + m * k + m;
        fg.lnWeight = lnWG.f32();
        fg.lnBias = lnBG.f32();
        fg.lnOut = gScratch.f32();
        fg.lnMean = gScratch.f32() + m * k;
        fg.lnRstd = gScratch.f32() + m * k + m;
        c->fusedLinear(oc, aC.f32(), m, k, false, fc);
        g->fusedLinear(og, aG.f32(), m, k, false, fg);
        for (int i = 0; i < 2; ++i) {
          const int64_t n = heads * width[i];
          std::vector<float> want(m * n);
          c->download(want.data(), outC[i].f32(), want.size() * 4);
          std::vector<uint16_t> got(poison[i].size());
          g->download(got.data(), dst[i].data(), got.size() * 2);
          if (llvm::Error e = g->takeError())
            FAIL() << llvm::toString(std::move(e));
          const int64_t row = i == 0 ? 0 : at;
          const bool writes = row >= 0 && row < capacity[i];
          std::vector<bool> written(got.size(), false);
          double diff = 0, mag = 1e-30;
          for (int64_t s = 0; s < m && writes; ++s)
            for (int64_t j = 0; j < n; ++j) {
              const int64_t h = j / width[i], t = j % width[i];
              const size_t e =
                  size_t(((s * heads + h) * capacity[i] + row) * stride + t);
              written[e] = true;
              const float x = bf16 ? bf16ToFloat(got[e]) : fp16ToFloat(got[e]);
              ASSERT_TRUE(std::isfinite(x)) << "out " << i << " row " << s
                                            << " column " << j;
              diff = std::max(diff, double(std::fabs(x - want[s * n + j])));
              mag = std::max(mag, double(std::fabs(want[s * n + j])));
            }
          EXPECT_LE(diff / mag, bf16 ? 2e-2 : 5e-3) << "out " << i;
          for (size_t e = 0; e < got.size(); ++e) {
            if (!written[e]) {
              ASSERT_EQ(got[e], 0xffffu) << "out " << i << ": element " << e
                                         << " written";
            }
          }
        }
      }
    }
  }
}

// Decoding's chain of linear layers between two attentions
// (Backend::fusedLinearChain: W_o, W1 + GELU, W2, the next q/k/v) as one
// launch (sp_gemv_chain, grid-wide barriers between the stages) equals the
// fusedLinear calls in order bit for bit: each stage reads what the one
// before wrote (x in place, the FF hidden rows), the last writes three
// outputs of 4096 columns each (more CTAs than the SMs hold at once, so warps
// take several columns), one of them as 16-bit rows. Outputs poisoned; run
// twice, so that the barrier's counters are back at zero after a launch.
TEST(PackedLinearTest, ChainEqualsTheCallsInOrder) {
  SKIP_WITHOUT_GPU();
  using Out = Backend::LinearOut;
  using Stage = Backend::LinearStage;
  // The chain is opt-in (SPARSETX_LINEAR_CHAIN=1): on for these backends.
  std::string saved;
  if (const char *v = std::getenv("SPARSETX_LINEAR_CHAIN"))
    saved = v;
  setenv("SPARSETX_LINEAR_CHAIN", "1", 1);
  llvm::scope_exit restore([&] {
    if (saved.empty())
      unsetenv("SPARSETX_LINEAR_CHAIN");
    else
      setenv("SPARSETX_LINEAR_CHAIN", saved.c_str(), 1);
  });
  for (Precision precision : {Precision::FP32, Precision::BF16, Precision::FP16}) {
    SCOPED_TRACE(toString(precision).str());
    std::unique_ptr<Backend> g = gpu(precision);
    ASSERT_TRUE(g);
    for (int64_t m : {1, 3, 8}) {
      SCOPED_TRACE("m = " + std::to_string(m));
      const int64_t d = 256, ff = 1024, wide = 4096;
      auto upload = [&](const std::vector<float> &host) {
        Buffer b = g->allocateFloats(int64_t(host.size()));
        g->upload(b.data(), host.data(), host.size() * 4);
        return b;
      };
      // Weights [k, n] packed, biases, layer norms.
      std::vector<Buffer> keep;
      uint32_t seed = 300;
      auto weight = [&](int64_t k, int64_t n) {
        keep.push_back(upload(randoms(k * n, seed++, 0.1f)));
        Buffer packed = g->allocate(g->packedLinearBytes(k, n));
        g->packLinear(packed.data(), keep.back().f32(), k, n);
        keep.push_back(std::move(packed));
        return std::pair<const float *, const void *>(
            keep[keep.size() - 2].f32(), keep.back().data());
      };
      auto vec = [&](int64_t n) {
        keep.push_back(upload(randoms(n, seed++)));
        return keep.back().f32();
      };
      auto wo = weight(d, d), w1 = weight(d, ff), w2 = weight(ff, d);
      std::pair<const float *, const void *> wqkv[3] = {
          weight(d, wide), weight(d, wide), weight(d, wide)};
      const float *bo = vec(d), *b1 = vec(ff), *b2 = vec(d),
                  *bqkv[3] = {vec(wide), vec(wide), vec(wide)};
      const float *ln2W = vec(d), *ln2B = vec(d), *ln1W = vec(d),
                  *ln1B = vec(d);
      Buffer o = upload(randoms(m * d, 401));
      const std::vector<float> x0 = randoms(m * d, 402);
      const bool half = precision != Precision::FP32;
      const int64_t heads = 64, width = wide / heads;
      // One run's buffers: x (starts at x0), the hidden rows, three outputs
      // and the 16-bit rows (all poisoned).
      struct Run {
        Buffer x, hidden, out[3], rows;
      };
      auto run = [&](bool chained) {
        Run r;
        r.x = upload(x0);
        r.hidden = upload(std::vector<float>(m * ff, NAN));
        for (Buffer &b : r.out)
          b = upload(std::vector<float>(m * wide, NAN));
        std::vector<uint16_t> poison(size_t(m * wide), 0xffffu);
        r.rows = g->allocate(m * wide * 2);
        g->upload(r.rows.data(), poison.data(), poison.size() * 2);
        Backend::LinearFusion ff1, ln1;
        ff1.lnWeight = ln2W;
        ff1.lnBias = ln2B;
        ff1.gelu = true;
        ln1.lnWeight = ln1W;
        ln1.lnBias = ln1B;
        Out q{r.out[0].f32(), wqkv[0].first, bqkv[0], wide, wqkv[0].second},
            k{r.out[1].f32(), wqkv[1].first, bqkv[1], wide, wqkv[1].second},
            v{r.out[2].f32(), wqkv[2].first, bqkv[2], wide, wqkv[2].second};
        if (half)
          v.half = {r.rows.data(), heads, width, width, 1, nullptr};
        Stage stages[] = {
            {{Out{r.x.f32(), wo.first, bo, d, wo.second}}, o.f32(), m, d, true,
             {}},
            {{Out{r.hidden.f32(), w1.first, b1, ff, w1.second}}, r.x.f32(), m,
             d, false, ff1},
            {{Out{r.x.f32(), w2.first, b2, d, w2.second}}, r.hidden.f32(), m,
             ff, true, {}},
            {{q, k, v}, r.x.f32(), m, d, false, ln1}};
        if (chained) {
          EXPECT_TRUE(g->fusedLinearChain(stages)) << "not one launch";
        } else {
          for (const Stage &s : stages)
            g->fusedLinear(s.outs, s.a, s.m, s.k, s.accumulate, s.fusion);
        }
        return r;
      };
      auto bits = [&](const Buffer &b, int64_t bytes) {
        std::vector<uint8_t> host(size_t(bytes), 0);
        g->download(host.data(), b.data(), host.size());
        return host;
      };
      Run want = run(false);
      for (int repeat = 0; repeat < 2; ++repeat) {
        SCOPED_TRACE("launch " + std::to_string(repeat + 1));
        Run got = run(true);
        EXPECT_EQ(bits(got.x, m * d * 4), bits(want.x, m * d * 4)) << "x";
        EXPECT_EQ(bits(got.hidden, m * ff * 4), bits(want.hidden, m * ff * 4))
            << "hidden rows";
        for (int i = 0; i < (half ? 2 : 3); ++i)
          EXPECT_EQ(bits(got.out[i], m * wide * 4), bits(want.out[i], m * wide * 4))
              << "output " << i;
        if (half) {
          EXPECT_EQ(bits(got.rows, m * wide * 2), bits(want.rows, m * wide * 2))
              << "16-bit rows";
        }
        if (llvm::Error e = g->takeError())
          FAIL() << llvm::toString(std::move(e));
      }
      // Not a run that wrote nothing: x moved, and every output is finite.
      std::vector<float> x(size_t(m * d)), q(size_t(m * wide));
      g->download(x.data(), want.x.data(), x.size() * 4);
      g->download(q.data(), want.out[0].data(), q.size() * 4);
      EXPECT_NE(x, x0);
      for (float e : q)
        ASSERT_TRUE(std::isfinite(e));
    }
  }
}

// sp_pick_tokens against the host's pickByte, byte for byte: random logits
// and rows with ties, NaN, -inf and +inf; greedy, full and top-k draws;
// positions inside the prompt, past the length (no history written) and
// sequence numbers offset by firstSample. Poisoned history elsewhere stays.
TEST(CudaModel, PickTokensEqualsTheHostPicks) {
  SKIP_WITHOUT_GPU();
  std::unique_ptr<Backend> g = gpu(Precision::BF16);
  ASSERT_TRUE(g && g->picksTokens());
  const int64_t S = 96, stride = 8;
  std::vector<float> logits = randoms(S * kVocab, 123, 3.0f);
  for (int64_t v = 0; v < kVocab; ++v) {
    logits[0 * kVocab + v] = 0.5f;                        // all tied
    logits[1 * kVocab + v] = v % 3 ? NAN : float(v % 7);  // NaN and ties
    logits[2 * kVocab + v] = v % 2 ? -INFINITY : 0.25f * float(v % 5);
    logits[3 * kVocab + v] = v == 17 ? INFINITY : 1.0f;
  }
  const std::vector<int32_t> prompt = {'x', 'y', 'z'};
  Buffer logitsG = g->allocateFloats(S * kVocab), ids = g->allocate(2 * S * 4),
         history = g->allocate(S * stride * 4), promptG = g->allocate(3 * 4),
         optionsG = g->allocate(sizeof(Backend::PickOptions));
  g->upload(logitsG.data(), logits.data(), logits.size() * 4);
  g->upload(promptG.data(), prompt.data(), prompt.size() * 4);
  for (auto [temperature, topK] :
       {std::pair<double, int64_t>{1.0, 0}, {0.8, 5}, {0.0, 0}, {1.5, 300}}) {
    SCOPED_TRACE("temperature " + std::to_string(temperature) + ", top-k " +
                 std::to_string(topK));
    Backend::PickOptions o;
    o.seed = 77;
    o.firstSample = 5;
    o.topK = topK;
    o.promptLength = 3;
    o.length = 7;
    o.temperature = temperature;
    g->upload(optionsG.data(), &o, sizeof o);
    std::vector<int32_t> hostIds(2 * S), hostHistory(S * stride, -1);
    for (int64_t s = 0; s < S; ++s) {
      hostIds[s] = 1000; // the last input: overwritten
      hostIds[S + s] = int32_t(s % stride);
    }
    g->upload(ids.data(), hostIds.data(), hostIds.size() * 4);
    g->upload(history.data(), hostHistory.data(), hostHistory.size() * 4);
    Backend::PickTokens p;
    p.logits = logitsG.f32();
    p.ids = ids.i32();
    p.history = history.i32();
    p.prompt = promptG.i32();
    p.options = static_cast<const Backend::PickOptions *>(optionsG.data());
    p.batch = S;
    p.historyStride = stride;
    g->pickTokens(p);
    std::vector<int32_t> gotIds(2 * S), gotHistory(S * stride);
    g->download(gotIds.data(), ids.data(), gotIds.size() * 4);
    g->download(gotHistory.data(), history.data(), gotHistory.size() * 4);
    if (llvm::Error e = g->takeError())
      FAIL() << llvm::toString(std::move(e));
    SampleOptions so;
    so.seed = o.seed;
    so.topK = topK;
    so.temperature = temperature;
    for (int64_t s = 0; s < S; ++s) {
      const int64_t t = s % stride;
      const int32_t want =
          t < 3 ? prompt[t]
                : pickByte(logits.data() + s * kVocab, so, uint64_t(5 + s), t);
      EXPECT_EQ(gotIds[s], want) << "sequence " << s;
      EXPECT_EQ(gotIds[S + s], t + 1) << "sequence " << s;
      for (int64_t u = 0; u < stride; ++u)
        EXPECT_EQ(gotHistory[s * stride + u], u == t && t < 7 ? want : -1)
            << "sequence " << s << ", history " << u;
    }
  }
}

TEST_F(OpsTest, Elementwise) {
  const int64_t rows = 77, c = 300, n = rows * c;
  Pair x = random(n, 11), w = random(c, 12), bias = random(c, 13);
  Pair out = poisoned(n), mean = poisoned(rows), rstd = poisoned(rows);
  cpuBackend->layerNormForward(out.c(), mean.c(), rstd.c(), x.c(), w.c(),
                               bias.c(), rows, c);
  gpuBackend->layerNormForward(out.g(), mean.g(), rstd.g(), x.g(), w.g(),
                               bias.g(), rows, c);
  expectClose(out, 1e-5, "layerNorm out");
  expectClose(mean, 1e-5, "layerNorm mean");
  expectClose(rstd, 1e-5, "layerNorm rstd");
  Pair dout = random(n, 14), dx = random(n, 15), dw = random(c, 16),
       db = random(c, 17);
  cpuBackend->layerNormBackward(dx.c(), dw.c(), db.c(), dout.c(), x.c(), w.c(),
                                mean.c(), rstd.c(), rows, c);
  gpuBackend->layerNormBackward(dx.g(), dw.g(), db.g(), dout.g(), x.g(), w.g(),
                                mean.g(), rstd.g(), rows, c);
  expectClose(dx, 1e-5, "layerNorm dx");
  expectClose(dw, 1e-5, "layerNorm dweight");
  expectClose(db, 1e-5, "layerNorm dbias");

  Pair g = poisoned(n);
  cpuBackend->geluForward(g.c(), x.c(), n);
  gpuBackend->geluForward(g.g(), x.g(), n);
  expectClose(g, 1e-6, "gelu");
  Pair dg = random(n, 18);
  cpuBackend->geluBackward(dg.c(), x.c(), dout.c(), n);
  gpuBackend->geluBackward(dg.g(), x.g(), dout.g(), n);
  expectClose(dg, 1e-6, "gelu backward");

  Pair y = random(n, 19), dbias = random(c, 20);
  cpuBackend->biasAddForward(y.c(), bias.c(), rows, c);
  gpuBackend->biasAddForward(y.g(), bias.g(), rows, c);
  expectClose(y, 1e-7, "bias add");
  cpuBackend->biasAddBackward(dbias.c(), dout.c(), rows, c);
  gpuBackend->biasAddBackward(dbias.g(), dout.g(), rows, c);
  expectClose(dbias, 1e-5, "bias backward");

  Pair acc = random(n, 21);
  cpuBackend->accumulate(acc.c(), x.c(), n);
  gpuBackend->accumulate(acc.g(), x.g(), n);
  cpuBackend->scale(acc.c(), 0.37f, n);
  gpuBackend->scale(acc.g(), 0.37f, n);
  expectEqual(acc, "accumulate, scale");
  Pair filled = poisoned(n), copied = poisoned(n);
  cpuBackend->fill(filled.c(), 2.5f, n);
  gpuBackend->fill(filled.g(), 2.5f, n);
  expectEqual(filled, "fill");
  cpuBackend->copy(copied.c(), x.c(), n * 4);
  gpuBackend->copy(copied.g(), x.g(), n * 4);
  expectEqual(copied, "copy");

  // Dropout: the same elements dropped, bit for bit.
  Pair dropped = poisoned(n), ddrop = random(n, 22);
  cpuBackend->dropoutForward(dropped.c(), x.c(), n, 0.3f, 99);
  gpuBackend->dropoutForward(dropped.g(), x.g(), n, 0.3f, 99);
  expectEqual(dropped, "dropout");
  cpuBackend->dropoutBackward(ddrop.c(), dout.c(), n, 0.3f, 99);
  gpuBackend->dropoutBackward(ddrop.g(), dout.g(), n, 0.3f, 99);
  expectClose(ddrop, 1e-7, "dropout backward"); // the GPU fuses to an FMA
  for (float p : {0.0f, 0.3f}) {
    Pair res = poisoned(n);
    cpuBackend->residualDropout(res.c(), x.c(), dout.c(), n, p, 98);
    gpuBackend->residualDropout(res.g(), x.g(), dout.g(), n, p, 98);
    expectClose(res, 1e-7, "residual dropout");
  }
}

// The gradients' 16-bit conversions of the data-parallel all-reduce: bit
// for bit the CPU's, overflow to inf (fp16), NaN and subnormals included.
TEST_F(OpsTest, GradientsToAndFrom16Bits) {
  const int64_t n = 100003;
  std::vector<float> host = randoms(n, 31);
  for (int64_t i = 0; i < n; ++i)
    host[i] *= std::exp2(float(i % 61) - 30.0f);
  host[0] = 1e6f;
  host[1] = -65520.0f;
  host[2] = NAN;
  host[3] = INFINITY;
  host[4] = 0x1.0p-20f;
  Pair x = make(host);
  for (Precision type : {Precision::BF16, Precision::FP16}) {
    for (float s : {1.0f, 0.5f, 1.0f / 3.0f}) {
      Pair half = poisoned((n + 1) / 2), back = poisoned(n);
      auto *hc = reinterpret_cast<uint16_t *>(half.c());
      auto *hg = reinterpret_cast<uint16_t *>(half.g());
      cpuBackend->convertToHalf(hc, x.c(), n, s, type);
      gpuBackend->convertToHalf(hg, x.g(), n, s, type);
      std::vector<uint16_t> a(n), b(n);
      cpuBackend->download(a.data(), hc, n * 2);
      gpuBackend->download(b.data(), hg, n * 2);
      ASSERT_FALSE(bool(gpuBackend->takeError()));
      int64_t differ = 0;
      for (int64_t i = 0; i < n; ++i) {
        bool nan = type == Precision::BF16
                       ? std::isnan(bf16ToFloat(a[i])) && std::isnan(bf16ToFloat(b[i]))
                       : std::isnan(fp16ToFloat(a[i])) && std::isnan(fp16ToFloat(b[i]));
        differ += a[i] != b[i] && !nan;
      }
      EXPECT_EQ(differ, 0) << toString(type).str() << " scale " << s;
      cpuBackend->convertFromHalf(back.c(), hc, n, 3.0f, type);
      gpuBackend->convertFromHalf(back.g(), hg, n, 3.0f, type);
      std::vector<float> fa(n), fb(n);
      cpuBackend->download(fa.data(), back.c(), n * 4);
      gpuBackend->download(fb.data(), back.g(), n * 4);
      differ = 0;
      for (int64_t i = 0; i < n; ++i)
        differ += !(fa[i] == fb[i] || (std::isnan(fa[i]) && std::isnan(fb[i])));
      EXPECT_EQ(differ, 0) << toString(type).str() << " back, scale " << s;
    }
  }
}

TEST_F(OpsTest, EmbeddingsLossOptimizer) {
  const int64_t rows = 150, c = 40, vocab = 257;
  std::vector<int32_t> idHost(rows);
  std::mt19937 rng(5);
  for (int32_t &id : idHost)
    id = static_cast<int32_t>(rng() % 20); // repeats: the backward sums
  Pair ids = ints(idHost), table = random(vocab * c, 31);
  for (bool accumulate : {false, true}) {
    Pair out = accumulate ? random(rows * c, 32) : poisoned(rows * c);
    const int32_t *ic = reinterpret_cast<const int32_t *>(ids.c()),
                  *ig = reinterpret_cast<const int32_t *>(ids.g());
    cpuBackend->embeddingForward(out.c(), ic, table.c(), rows, c, vocab,
                                 accumulate);
    gpuBackend->embeddingForward(out.g(), ig, table.g(), rows, c, vocab,
                                 accumulate);
    expectEqual(out, "embedding");
  }
  Pair dtable = random(vocab * c, 33), dout = random(rows * c, 34);
  cpuBackend->embeddingBackward(dtable.c(),
                                reinterpret_cast<const int32_t *>(ids.c()),
                                dout.c(), rows, c, vocab);
  gpuBackend->embeddingBackward(dtable.g(),
                                reinterpret_cast<const int32_t *>(ids.g()),
                                dout.g(), rows, c, vocab);
  expectClose(dtable, 1e-6, "embedding backward");

  // Cross-entropy over 256 bytes.
  const int64_t V = 256;
  std::vector<int32_t> targetHost(rows);
  for (int32_t &t : targetHost)
    t = static_cast<int32_t>(rng() % V);
  Pair targets = ints(targetHost), logits = random(rows * V, 35, 3.0f);
  Pair losses = poisoned(rows), dlogits = poisoned(rows * V);
  double lc = cpuBackend->softmaxCrossEntropy(
      losses.c(), dlogits.c(), logits.c(),
      reinterpret_cast<const int32_t *>(targets.c()), rows, V, 0.5f);
  double lg = gpuBackend->softmaxCrossEntropy(
      losses.g(), dlogits.g(), logits.g(),
      reinterpret_cast<const int32_t *>(targets.g()), rows, V, 0.5f);
  EXPECT_NEAR(lg, lc, 1e-5 * lc);
  expectClose(losses, 1e-5, "cross-entropy losses");
  expectClose(dlogits, 1e-5, "cross-entropy dlogits");

  // AdamW and clipping.
  const int64_t P = 10007;
  Pair params = random(P, 41), grads = random(P, 42, 0.1f),
       m = random(P, 43, 0.01f), v = make(std::vector<float>(P, 0.02f));
  for (int64_t step = 1; step <= 3; ++step) {
    cpuBackend->adamw(params.c(), grads.c(), m.c(), v.c(), P, step, 1e-3f, 0.9f,
                      0.95f, 1e-8f, 0.01f);
    gpuBackend->adamw(params.g(), grads.g(), m.g(), v.g(), P, step, 1e-3f, 0.9f,
                      0.95f, 1e-8f, 0.01f);
  }
  expectClose(params, 1e-6, "adamw params");
  expectClose(m, 1e-6, "adamw m");
  expectClose(v, 1e-6, "adamw v");
  double nc = cpuBackend->clipGradNorm(grads.c(), P, 1.0);
  double ng = gpuBackend->clipGradNorm(grads.g(), P, 1.0);
  EXPECT_NEAR(ng, nc, 1e-9 * nc);
  EXPECT_GT(nc, 1.0); // so that the clip scaled
  expectClose(grads, 1e-6, "clipped grads");
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

struct AttentionCase {
  const char *pattern;
  Precision precision;
  int64_t n, heads, qkDim, vDim;
  double tol;
};

class AttentionTest : public OpsTest,
                      public ::testing::WithParamInterface<AttentionCase> {};

TEST_P(AttentionTest, MatchesCpu) {
  const AttentionCase &ac = GetParam();
  if (ac.precision != Precision::FP32)
    gpuBackend = gpu(ac.precision);
  ASSERT_TRUE(gpuBackend);
  auto pattern = loadPattern(ac.pattern, ac.n, ac.heads);
  ASSERT_TRUE(pattern);
  AttentionDims dims;
  dims.batch = 2;
  dims.heads = ac.heads;
  dims.seqLen = ac.n;
  dims.qkDim = ac.qkDim;
  dims.vDim = ac.vDim;
  auto opC = cpuBackend->prepareAttention(*pattern, dims);
  auto opG = gpuBackend->prepareAttention(*pattern, dims);
  ASSERT_TRUE(bool(opC) && bool(opG))
      << (opG ? "" : llvm::toString(opG.takeError()));
  const int64_t B = 2, rowsQK = B * ac.n * ac.heads * ac.qkDim,
                rowsV = B * ac.n * ac.heads * ac.vDim;
  for (int64_t layer : {0, 1}) {
    uint32_t seed = 100 + 10 * layer;
    Pair q = random(rowsQK, seed), k = random(rowsQK, seed + 1),
         v = random(rowsV, seed + 2), o = poisoned(rowsV),
         lse = poisoned(B * ac.heads * ac.n);
    (*opC)->forward(layer, B, q.c(), k.c(), v.c(), o.c(), lse.c());
    (*opG)->forward(layer, B, q.g(), k.g(), v.g(), o.g(), lse.g());
    expectClose(o, ac.tol, "attention o");
    expectClose(lse, ac.tol, "attention lse");
    Pair dO = random(rowsV, seed + 3), dQ = poisoned(rowsQK),
         dK = poisoned(rowsQK), dV = poisoned(rowsV);
    (*opC)->backward(layer, B, q.c(), k.c(), v.c(), o.c(), lse.c(), dO.c(),
                     dQ.c(), dK.c(), dV.c());
    (*opG)->backward(layer, B, q.g(), k.g(), v.g(), o.g(), lse.g(), dO.g(),
                     dQ.g(), dK.g(), dV.g());
    expectClose(dQ, ac.tol * 2, "attention dQ");
    expectClose(dK, ac.tol * 2, "attention dK");
    expectClose(dV, ac.tol * 2, "attention dV");
    // Decode row by row against the forward's rows: each step appends k and
    // v's row t to the op's caches and reads the position from device
    // memory.
    const int64_t rowQK = ac.heads * ac.qkDim, rowV = ac.heads * ac.vDim;
    std::vector<float> qHost(rowsQK), kHost(rowsQK), vHost(rowsV), oHost(rowsV);
    cpuBackend->download(qHost.data(), q.c(), rowsQK * 4);
    cpuBackend->download(kHost.data(), k.c(), rowsQK * 4);
    cpuBackend->download(vHost.data(), v.c(), rowsV * 4);
    cpuBackend->download(oHost.data(), o.c(), rowsV * 4);
    Buffer qRow = gpuBackend->allocateFloats(B * rowQK),
           kRow = gpuBackend->allocateFloats(B * rowQK),
           vRow = gpuBackend->allocateFloats(B * rowV),
           oRow = gpuBackend->allocateFloats(B * rowV),
           position = gpuBackend->allocate(4);
    (*opG)->beginDecode(B, 2);
    double diff = 0, mag = 1e-30;
    for (int64_t t = 0; t < ac.n; ++t) {
      for (int64_t b = 0; b < B; ++b) {
        int64_t at = (b * ac.n + t);
        gpuBackend->upload(qRow.f32() + b * rowQK, qHost.data() + at * rowQK,
                           rowQK * 4);
        gpuBackend->upload(kRow.f32() + b * rowQK, kHost.data() + at * rowQK,
                           rowQK * 4);
        gpuBackend->upload(vRow.f32() + b * rowV, vHost.data() + at * rowV,
                           rowV * 4);
      }
      int32_t pos = int32_t(t);
      gpuBackend->upload(position.data(), &pos, 4);
      std::vector<float> poison(B * rowV, std::nanf(""));
      gpuBackend->upload(oRow.f32(), poison.data(), B * rowV * 4);
      (*opG)->decode(layer, B, position.i32(), qRow.f32(), kRow.f32(),
                     vRow.f32(), oRow.f32());
      std::vector<float> got(B * rowV);
      gpuBackend->download(got.data(), oRow.f32(), B * rowV * 4);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t e = 0; e < rowV; ++e) {
          float want = oHost[(b * ac.n + t) * rowV + e];
          float g = got[b * rowV + e];
          diff = std::max(diff, std::isfinite(g) ? double(std::fabs(g - want))
                                                 : HUGE_VAL);
          mag = std::max(mag, double(std::fabs(want)));
        }
    }
    ASSERT_FALSE(bool(gpuBackend->takeError()));
    EXPECT_LE(diff / mag, ac.tol) << "decode, layer " << layer;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cuda, AttentionTest,
    ::testing::Values(
        AttentionCase{kFixed, Precision::FP32, 45, 2, 8, 16, 1e-5},
        AttentionCase{kPerHead, Precision::FP32, 45, 2, 16, 16, 1e-5},
        AttentionCase{kLayered, Precision::FP32, 45, 3, 8, 8, 1e-5},
        AttentionCase{kFixed, Precision::BF16, 200, 2, 32, 64, 2e-2},
        AttentionCase{kPerHead, Precision::BF16, 130, 2, 64, 64, 2e-2},
        AttentionCase{kLayered, Precision::FP16, 200, 2, 16, 32, 5e-3},
        AttentionCase{kFixed, Precision::FP16, 150, 4, 128, 128, 5e-3}));

// Long sequences: the bf16 attention over groups of (batch entry, head)
// pairs (CudaBackendOptions::attentionGroupBytes; one pair per group for
// merged and layered patterns, one batch entry for per-head ones) against
// one call over all of them: the forward bit for bit (each pair's rows are
// computed alike either way), the gradients within bf16's rounding (the
// kernels may split a key block's dK/dV work differently for a smaller
// group, which changes the order of its sums).
TEST(CudaModel, AttentionInGroupsMatchesOneCall) {
  SKIP_WITHOUT_GPU();
  struct Case {
    const char *pattern;
    int64_t heads;
  };
  for (Case c : {Case{kFixed, 4}, Case{kPerHead, 2}, Case{kLayered, 2}}) {
    SCOPED_TRACE(c.pattern);
    const int64_t B = 2, H = c.heads, n = 200, dqk = 32, dv = 64;
    auto pattern = loadPattern(c.pattern, n, H);
    ASSERT_TRUE(pattern);
    AttentionDims dims;
    dims.batch = B;
    dims.heads = H;
    dims.seqLen = n;
    dims.qkDim = dqk;
    dims.vDim = dv;
    const int64_t sizeQK = B * n * H * dqk, sizeV = B * n * H * dv;
    std::vector<float> q = randoms(sizeQK, 1), k = randoms(sizeQK, 2),
                       v = randoms(sizeV, 3), dO = randoms(sizeV, 4);
    // o, lse, dQ, dK, dV of layers 0 and 1.
    auto run = [&](int64_t groupBytes) {
      std::vector<std::vector<float>> out;
      CudaBackendOptions o;
      o.precision = Precision::BF16;
      o.deterministic = true;
      o.attentionGroupBytes = groupBytes;
      auto b = createCudaBackend(o);
      if (!b) {
        ADD_FAILURE() << llvm::toString(b.takeError());
        return out;
      }
      Backend &g = **b;
      auto op = g.prepareAttention(*pattern, dims);
      if (!op) {
        ADD_FAILURE() << llvm::toString(op.takeError());
        return out;
      }
      auto put = [&](const std::vector<float> &host) {
        Buffer buf = g.allocateFloats(int64_t(host.size()));
        g.upload(buf.data(), host.data(), int64_t(host.size()) * 4);
        return buf;
      };
      Buffer qb = put(q), kb = put(k), vb = put(v), dOb = put(dO),
             ob = put(std::vector<float>(sizeV, NAN)),
             lse = put(std::vector<float>(B * H * n, NAN)),
             dQ = put(std::vector<float>(sizeQK, NAN)),
             dK = put(std::vector<float>(sizeQK, NAN)),
             dV = put(std::vector<float>(sizeV, NAN));
      for (int64_t layer : {0, 1}) {
        (*op)->forward(layer, B, qb.f32(), kb.f32(), vb.f32(), ob.f32(),
                       lse.f32());
        (*op)->backward(layer, B, qb.f32(), kb.f32(), vb.f32(), ob.f32(),
                        lse.f32(), dOb.f32(), dQ.f32(), dK.f32(), dV.f32());
        for (Buffer *x : {&ob, &lse, &dQ, &dK, &dV}) {
          out.emplace_back(x->bytes() / 4);
          g.download(out.back().data(), x->data(), x->bytes());
        }
      }
      if (llvm::Error e = g.takeError())
        ADD_FAILURE() << llvm::toString(std::move(e));
      return out;
    };
    std::vector<std::vector<float>> whole = run(int64_t(1) << 30),
                                    grouped = run(1);
    ASSERT_EQ(whole.size(), 10u);
    ASSERT_EQ(grouped.size(), 10u);
    const char *names[] = {"o", "lse", "dQ", "dK", "dV"};
    for (size_t i = 0; i < whole.size(); ++i) {
      SCOPED_TRACE(std::string(names[i % 5]) + ", layer " +
                   std::to_string(i / 5));
      if (i % 5 < 2) {
        EXPECT_EQ(whole[i], grouped[i]);
        continue;
      }
      double diff = 0, mag = 1e-30;
      for (size_t e = 0; e < whole[i].size(); ++e) {
        ASSERT_TRUE(std::isfinite(grouped[i][e])) << e;
        diff = std::max(diff, double(std::fabs(whole[i][e] - grouped[i][e])));
        mag = std::max(mag, double(std::fabs(whole[i][e])));
      }
      EXPECT_LE(diff / mag, 2e-2);
    }
  }
}

//===----------------------------------------------------------------------===//
// Training
//===----------------------------------------------------------------------===//

data::Dataset textData(int64_t bytes) { return test::syntheticText(bytes); }

struct Run {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<AttentionPattern> pattern;
  std::unique_ptr<Transformer> model;
  std::unique_ptr<Trainer> trainer;
};

ModelConfig modelConfig(int64_t n) {
  ModelConfig c;
  c.seqLen = n;
  c.dModel = 64;
  c.numLayers = 2;
  c.numHeads = 2;
  c.embedStride = 8;
  c.dropout = 0.1f;
  return c;
}

TrainConfig trainConfig() {
  TrainConfig t;
  t.steps = 20;
  t.batch = 4;
  t.lr = 3e-3f;
  t.warmupSteps = 4;
  t.seed = 3;
  return t;
}

std::unique_ptr<Run> makeRun(std::unique_ptr<Backend> backend,
                             const data::Dataset &d, const TrainConfig &t,
                             const char *text = kFixed, int64_t n = 64) {
  auto r = std::make_unique<Run>();
  r->backend = std::move(backend);
  r->pattern = loadPattern(text, n, 2);
  auto m = Transformer::create(*r->backend, modelConfig(n), *r->pattern, t.batch);
  if (!m) {
    ADD_FAILURE() << llvm::toString(m.takeError());
    return nullptr;
  }
  r->model = std::move(*m);
  r->model->initialize(t.seed);
  r->trainer = std::make_unique<Trainer>(*r->model, t, d);
  return r;
}

std::vector<double> train(Run &r, int64_t steps) {
  std::vector<double> losses;
  for (int64_t s = 0; s < steps; ++s) {
    auto result = r.trainer->trainStep();
    if (!result) {
      ADD_FAILURE() << llvm::toString(result.takeError());
      break;
    }
    losses.push_back(result->loss);
  }
  return losses;
}

class TrainingTest : public ::testing::TestWithParam<Precision> {};

TEST_P(TrainingTest, TwentyStepsMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  Precision precision = GetParam();
  double tol = precision == Precision::FP32 ? 1e-4 : 2e-2;
  data::Dataset d = textData(20000);
  for (const char *text : {kFixed, kLayered}) {
    auto cpuRun = makeRun(createCpuBackend(), d, trainConfig(), text);
    auto gpuRun = makeRun(gpu(precision), d, trainConfig(), text);
    ASSERT_TRUE(cpuRun && gpuRun);
    std::vector<double> lc = train(*cpuRun, 20), lg = train(*gpuRun, 20);
    ASSERT_EQ(lc.size(), lg.size());
    for (size_t s = 0; s < lc.size(); ++s)
      EXPECT_NEAR(lg[s], lc[s], tol * lc[s]) << "step " << s + 1;
    EXPECT_LT(lc.back(), lc.front() - 0.5); // it learned something
    // Evaluation agrees too.
    auto ec = cpuRun->trainer->evaluate(data::Split::Valid, 0);
    auto eg = gpuRun->trainer->evaluate(data::Split::Valid, 0);
    ASSERT_TRUE(ec && eg);
    EXPECT_NEAR(eg->bits, ec->bits, tol * ec->bits);
  }
}

INSTANTIATE_TEST_SUITE_P(Cuda, TrainingTest,
                         ::testing::Values(Precision::FP32, Precision::BF16),
                         [](const auto &info) {
                           return toString(info.param).str();
                         });

// No atomics: fp32 training (and bf16 with the deterministic attention
// backward) repeats itself bit for bit.
TEST(CudaTraining, RepeatsBitForBit) {
  SKIP_WITHOUT_GPU();
  data::Dataset d = textData(20000);
  for (Precision precision : {Precision::FP32, Precision::BF16}) {
    std::vector<std::vector<double>> losses;
    std::vector<std::vector<float>> params;
    for (int run = 0; run < 2; ++run) {
      CudaBackendOptions o;
      o.precision = precision;
      o.deterministic = true;
      auto b = createCudaBackend(o);
      ASSERT_TRUE(bool(b)) << llvm::toString(b.takeError());
      auto r = makeRun(std::move(*b), d, trainConfig());
      ASSERT_TRUE(r);
      losses.push_back(train(*r, 12));
      params.emplace_back(r->model->numParams());
      r->backend->download(params.back().data(), r->model->params(),
                           params.back().size() * 4);
    }
    EXPECT_EQ(losses[0], losses[1]) << toString(precision).str();
    EXPECT_EQ(params[0], params[1]) << toString(precision).str();
  }
}

TEST(CudaTraining, Fp16LossScalingSurvivesOverflow) {
  SKIP_WITHOUT_GPU();
  data::Dataset d = textData(20000);
  TrainConfig t = trainConfig();
  // dlogits * 2^30 / 256 tokens exceeds fp16's 65504: the first backward
  // GEMM's operand overflows.
  t.lossScale = std::ldexp(1.0f, 30);
  t.lossScaleWindow = 5;
  auto r = makeRun(gpu(Precision::FP16), d, t);
  ASSERT_TRUE(r);
  const int64_t P = r->model->numParams();
  std::vector<float> before(P), after(P);
  r->backend->download(before.data(), r->model->params(), P * 4);
  auto first = r->trainer->trainStep();
  ASSERT_TRUE(bool(first)) << llvm::toString(first.takeError());
  EXPECT_TRUE(first->skipped);
  EXPECT_EQ(first->lossScale, std::ldexp(1.0, 30));
  r->backend->download(after.data(), r->model->params(), P * 4);
  EXPECT_EQ(0, std::memcmp(before.data(), after.data(), P * 4))
      << "a skipped step changed the parameters";
  int skipped = 1, good = 0;
  double lastScale = first->lossScale, lastLoss = 0;
  for (int s = 0; s < 60; ++s) {
    auto res = r->trainer->trainStep();
    ASSERT_TRUE(bool(res)) << llvm::toString(res.takeError());
    EXPECT_LE(res->lossScale, lastScale * 2);
    lastScale = res->lossScale;
    (res->skipped ? skipped : good) += 1;
    if (!res->skipped)
      lastLoss = res->loss;
  }
  EXPECT_GT(good, 30);
  EXPECT_GE(skipped, 2);
  r->backend->download(after.data(), r->model->params(), P * 4);
  for (float x : after)
    ASSERT_TRUE(std::isfinite(x));
  EXPECT_LT(lastLoss, std::log(256.0) - 0.5);
}

TEST(CudaModel, DecodeMatchesForwardAndSamplingIsReproducible) {
  SKIP_WITHOUT_GPU();
  data::Dataset d = textData(20000);
  for (Precision precision : {Precision::FP32, Precision::BF16}) {
    for (const char *text : {kFixed, kPerHead, kLayered}) {
      auto r = makeRun(gpu(precision), d, trainConfig(), text);
      ASSERT_TRUE(r);
      train(*r, 10);
      const int64_t n = 64, B = 2;
      std::vector<int32_t> inputs(B * n), targets(B * n);
      std::mt19937 rng(4);
      for (int64_t e = 0; e < B * n; ++e) {
        targets[e] = static_cast<int32_t>(rng() % 256);
        inputs[e] = e % n == 0 ? kStartToken : targets[e - 1];
      }
      std::vector<float> tokenLosses;
      ASSERT_TRUE(bool(r->model->run(inputs, targets, B, false, 0, &tokenLosses)));
      ASSERT_FALSE(bool(r->model->beginDecode(B)));
      std::vector<float> logits;
      std::vector<std::vector<float>> first;
      double tol = precision == Precision::FP32 ? 1e-4 : 2e-2;
      for (int64_t t = 0; t < n; ++t) {
        ASSERT_FALSE(bool(r->model->decode({inputs[t], inputs[n + t]}, t, logits)));
        first.push_back(logits);
        for (int64_t b = 0; b < B; ++b) {
          const float *z = logits.data() + b * kVocab;
          double mx = *std::max_element(z, z + kVocab), sum = 0;
          for (int64_t v = 0; v < kVocab; ++v)
            sum += std::exp(z[v] - mx);
          double nll = std::log(sum) + mx - z[targets[b * n + t]];
          EXPECT_NEAR(nll, tokenLosses[b * n + t], tol * nll) << t;
        }
      }
      // Again: position 0 ran op by op above, the rest from the captured
      // step (CUDA graph); now every position replays it. Bit for bit.
      ASSERT_FALSE(bool(r->model->beginDecode(B)));
      for (int64_t t = 0; t < n; ++t) {
        ASSERT_FALSE(bool(r->model->decode({inputs[t], inputs[n + t]}, t, logits)));
        ASSERT_EQ(0, std::memcmp(logits.data(), first[t].data(),
                                 logits.size() * 4))
            << "second sequence, position " << t;
      }
      SampleOptions o;
      o.count = 3;
      o.seed = 5;
      o.prompt = {'t', 'h'};
      auto s1 = sample(*r->model, o), s2 = sample(*r->model, o);
      ASSERT_TRUE(s1 && s2);
      EXPECT_EQ(*s1, *s2);
      EXPECT_EQ((*s1)[0].size(), size_t(n));
      EXPECT_NE(r->model->decodeMethod().find("tokens picked by the backend"),
                std::string::npos);
      // The GPU's picks (sp_pick_tokens) are the host's.
      o.pickOnHost = true;
      auto s3 = sample(*r->model, o);
      ASSERT_TRUE(bool(s3));
      EXPECT_EQ(*s1, *s3);
    }
  }
}

// The fused decoding step (one persistent kernel, kernels/decode_step.cuh)
// computes what the step's ops compute: the same logits within the
// precision's tolerance at every position, for merged, per-head and layered
// patterns, batches 1 and 3, full and half-size q/k (head dims 64 and 32:
// zero padding), d = 128 (several input slices per linear layer, so the
// ticket-ordered sums run). Both models are trained identically first
// (deterministic backends). decodeMethod() shows which path ran.
TEST(CudaModel, FusedDecodeStepMatchesTheOps) {
  SKIP_WITHOUT_GPU();
  data::Dataset d = textData(20000);
  const int64_t n = 64;
  for (Precision precision : {Precision::BF16, Precision::FP16}) {
    const double tol = precision == Precision::BF16 ? 2e-2 : 5e-3;
    for (const char *text : {kFixed, kPerHead, kLayered}) {
      for (bool halfQK : {false, true}) {
        std::unique_ptr<::Run> runs[2];
        for (int fused = 0; fused < 2; ++fused) {
          setenv("SPARSETX_FUSED_DECODE", fused ? "1" : "0", 1);
          CudaBackendOptions o;
          o.precision = precision;
          o.deterministic = true;
          auto b = createCudaBackend(o);
          ASSERT_TRUE(bool(b)) << llvm::toString(b.takeError());
          auto r = std::make_unique<::Run>();
          r->backend = std::move(*b);
          r->pattern = loadPattern(text, n, 2);
          ModelConfig c = modelConfig(n);
          c.dModel = 128;
          c.halfQK = halfQK;
          auto m = Transformer::create(*r->backend, c, *r->pattern, 4);
          ASSERT_TRUE(bool(m)) << llvm::toString(m.takeError());
          r->model = std::move(*m);
          r->model->initialize(7);
          r->trainer = std::make_unique<Trainer>(*r->model, trainConfig(), d);
          train(*r, 5);
          runs[fused] = std::move(r);
        }
        unsetenv("SPARSETX_FUSED_DECODE");
        for (int64_t B : {1, 3}) {
          std::vector<int32_t> inputs(B * n);
          std::mt19937 rng(11 + B);
          for (int64_t e = 0; e < B * n; ++e)
            inputs[e] = e % n == 0 ? kStartToken : int32_t(rng() % 256);
          for (auto &r : runs)
            ASSERT_FALSE(bool(r->model->beginDecode(B)));
          EXPECT_EQ(runs[0]->model->decodeMethod().find("persistent"),
                    std::string::npos);
          EXPECT_NE(runs[1]->model->decodeMethod().find("persistent kernel"),
                    std::string::npos)
              << runs[1]->model->decodeMethod();
          std::vector<float> ops, fused;
          for (int64_t t = 0; t < n; ++t) {
            std::vector<int32_t> tokens;
            for (int64_t b = 0; b < B; ++b)
              tokens.push_back(inputs[b * n + t]);
            ASSERT_FALSE(bool(runs[0]->model->decode(tokens, t, ops)));
            ASSERT_FALSE(bool(runs[1]->model->decode(tokens, t, fused)));
            ASSERT_EQ(ops.size(), fused.size());
            double mag = 1, diff = 0;
            for (size_t e = 0; e < ops.size(); ++e) {
              mag = std::max(mag, std::fabs(double(ops[e])));
              diff = std::max(diff, std::fabs(double(fused[e]) - ops[e]));
            }
            ASSERT_LE(diff / mag, tol)
                << toString(precision).str() << ", half q/k " << halfQK << ", B "
                << B << ", position " << t;
          }
        }
      }
    }
  }
}

TEST(CudaModel, CheckpointsMoveBetweenBackends) {
  SKIP_WITHOUT_GPU();
  data::Dataset d = textData(20000);
  auto g = makeRun(gpu(Precision::FP32), d, trainConfig());
  ASSERT_TRUE(g);
  train(*g, 8);
  PatternSource ps;
  ps.text = kFixed;
  ps.path = "test.sp";
  DataSpec spec;
  spec.source = "synthetic.txt";
  auto c = g->trainer->snapshot(ps, spec);
  ASSERT_TRUE(bool(c)) << llvm::toString(c.takeError());
  auto cpuRun = makeRun(createCpuBackend(), d, trainConfig());
  ASSERT_FALSE(bool(cpuRun->trainer->restore(*c, "memory")));
  auto eg = g->trainer->evaluate(data::Split::Valid, 0);
  auto ec = cpuRun->trainer->evaluate(data::Split::Valid, 0);
  ASSERT_TRUE(eg && ec);
  EXPECT_NEAR(eg->bits, ec->bits, 1e-4 * ec->bits);
  // Both continue alike.
  std::vector<double> lg = train(*g, 5), lc = train(*cpuRun, 5);
  for (size_t s = 0; s < lc.size(); ++s)
    EXPECT_NEAR(lg[s], lc[s], 1e-4 * lc[s]);
}

TEST(CudaModel, OutOfMemoryIsAnError) {
  SKIP_WITHOUT_GPU();
  auto backend = gpu();
  ASSERT_TRUE(backend);
  Buffer huge = backend->allocate(int64_t(1) << 50); // 1 PiB
  EXPECT_EQ(huge.data(), nullptr);
  std::string text = llvm::toString(backend->takeError());
  EXPECT_NE(text.find("out of GPU memory: 1125899906842624 bytes could not be "
                      "allocated"),
            std::string::npos)
      << text;
}

} // namespace
