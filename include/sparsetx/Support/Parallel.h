//===- Parallel.h - coarse-grained parallel loops ---------------*- C++ -*-===//
//
// llvm::parallelFor splits any range into up to 1024 tasks, which for the
// model's many small loops (a few thousand rows, or a few hundred thousand
// elements) costs more in task spawning than the work itself. This variant
// makes at most four contiguous chunks per thread, none smaller than `grain`
// items, and runs inline when there is only one. Each index is still visited
// exactly once, so results are the same as a serial loop's.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_SUPPORT_PARALLEL_H
#define SPARSETX_SUPPORT_PARALLEL_H

#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/Support/Parallel.h"

#include <algorithm>
#include <cstddef>

namespace sparsetx {

inline void parallelFor(size_t begin, size_t end,
                        llvm::function_ref<void(size_t)> fn,
                        size_t grain = 1) {
  if (end <= begin)
    return;
  const size_t items = end - begin;
  const size_t threads = std::max<size_t>(
      1, llvm::parallel::strategy.compute_thread_count());
  const size_t chunks = std::min(threads * 4, (items + grain - 1) / std::max<size_t>(grain, 1));
  if (chunks <= 1 || threads == 1) {
    for (size_t i = begin; i < end; ++i)
      fn(i);
    return;
  }
  const size_t size = (items + chunks - 1) / chunks;
  llvm::parallelFor(0, chunks, [&](size_t c) {
    size_t lo = begin + c * size, hi = std::min(end, lo + size);
    for (size_t i = lo; i < hi; ++i)
      fn(i);
  });
}

/// Elementwise loops: chunks of at least 8192 elements.
inline void parallelForElements(size_t begin, size_t end,
                                llvm::function_ref<void(size_t)> fn) {
  parallelFor(begin, end, fn, 8192);
}

/// Loops over rows (or columns) of at least a few hundred elements each.
inline void parallelForRows(size_t begin, size_t end,
                            llvm::function_ref<void(size_t)> fn) {
  parallelFor(begin, end, fn, 16);
}

} // namespace sparsetx

#endif // SPARSETX_SUPPORT_PARALLEL_H
