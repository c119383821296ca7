//===- Dropout.cpp - counter-based dropout, forward and backward -----------===//
//
// The mask is never stored: keep(i) is a pure function of (seed, index),
// the splitmix64 finalizer of seed + index * golden ratio. Recomputation of
// a block in backward, a resumed run, and the GPU kernel (same hash) all
// reproduce the same mask, and elements are independent of thread
// scheduling. The top 24 bits give a uniform in [0, 1) exact in fp32.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Cpu/Ops.h"
#include "sparsetx/Support/Hash.h"

#include "sparsetx/Support/Parallel.h"

#include <cassert>

namespace sparsetx::cpu {

bool dropoutKeep(uint64_t seed, uint64_t index, float p) {
  uint64_t h = splitmix64(splitmix64(seed) + index * kGoldenGamma);
  float u = static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
  return u >= p;
}

void dropoutForward(float *out, const float *inp, int64_t n, float p,
                    uint64_t seed, uint64_t offset) {
  assert(p >= 0.0f && p < 1.0f && "dropout probability out of range");
  float scale = 1.0f / (1.0f - p);
  sparsetx::parallelForElements(0, static_cast<size_t>(n), [&](size_t i) {
    out[i] = dropoutKeep(seed, offset + i, p) ? inp[i] * scale : 0.0f;
  });
}

void dropoutBackward(float *dinp, const float *dout, int64_t n, float p,
                     uint64_t seed, uint64_t offset) {
  assert(p >= 0.0f && p < 1.0f && "dropout probability out of range");
  float scale = 1.0f / (1.0f - p);
  sparsetx::parallelForElements(0, static_cast<size_t>(n), [&](size_t i) {
    if (dropoutKeep(seed, offset + i, p))
      dinp[i] += dout[i] * scale;
  });
}

} // namespace sparsetx::cpu
