//===- Hash.h - the counter-based hash behind every random choice -*- C++ -*-===//
//
// splitmix64's finalizer: a bijective 64-bit mix. Dropout masks, data order,
// initialization and sampling are all functions of it over (seed, counters),
// so they are reproducible under recomputation and resume.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_SUPPORT_HASH_H
#define SPARSETX_SUPPORT_HASH_H

#include <cstdint>

namespace sparsetx {

inline constexpr uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ull;

inline uint64_t splitmix64(uint64_t x) {
  x += kGoldenGamma;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

} // namespace sparsetx

#endif // SPARSETX_SUPPORT_HASH_H
