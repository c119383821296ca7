//===- Embedding.cpp - token embedding lookup, forward and backward --------===//
//
// Forward copies rows; backward is a scatter-add where several tokens may
// hit the same row. To stay deterministic without atomics, the work is split
// by column: each task owns a column slice of the whole table and walks the
// tokens in order, so every dtable element is written by one task, in token
// order, whatever the thread count.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Cpu/Ops.h"

#include "sparsetx/Support/Parallel.h"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace sparsetx::cpu {

void embeddingForward(float *out, const int32_t *ids, const float *table,
                      int64_t n, int64_t c, int64_t vocab) {
  (void)vocab;
  sparsetx::parallelForRows(0, static_cast<size_t>(n), [&](size_t i) {
    assert(ids[i] >= 0 && ids[i] < vocab && "token id out of range");
    std::memcpy(out + i * c, table + static_cast<int64_t>(ids[i]) * c,
                sizeof(float) * c);
  });
}

void embeddingBackward(float *dtable, const int32_t *ids, const float *dout,
                       int64_t n, int64_t c, int64_t vocab) {
  (void)vocab;
  constexpr int64_t kColumnSlice = 16;
  int64_t slices = (c + kColumnSlice - 1) / kColumnSlice;
  sparsetx::parallelFor(0, static_cast<size_t>(slices), [&](size_t s) {
    int64_t j0 = static_cast<int64_t>(s) * kColumnSlice;
    int64_t j1 = std::min(c, j0 + kColumnSlice);
    for (int64_t i = 0; i < n; ++i) {
      assert(ids[i] >= 0 && ids[i] < vocab && "token id out of range");
      float *drow = dtable + static_cast<int64_t>(ids[i]) * c;
      const float *g = dout + i * c;
      for (int64_t j = j0; j < j1; ++j)
        drow[j] += g[j];
    }
  });
}

} // namespace sparsetx::cpu
