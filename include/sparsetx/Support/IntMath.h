//===- IntMath.h - integer semantics of the .sp language --------*- C++ -*-===//
//
// The .sp language computes in 64-bit integers with floor division and floor
// modulo (like Python), so that (i - j) % l is in [0, l) for every i and j.
// Every component (sema's constant folder, the sp dialect's folders, the mask
// evaluator, generated kernels) must agree on these definitions.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_SUPPORT_INTMATH_H
#define SPARSETX_SUPPORT_INTMATH_H

#include <cstdint>

namespace sparsetx {

/// floor(a / b) for b > 0.
inline int64_t floorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b) < 0)
    --q;
  return q;
}

/// a - b * floor(a / b) for b > 0: always in [0, b).
inline int64_t floorMod(int64_t a, int64_t b) {
  int64_t r = a % b;
  if (r < 0)
    r += b;
  return r;
}

} // namespace sparsetx

#endif // SPARSETX_SUPPORT_INTMATH_H
