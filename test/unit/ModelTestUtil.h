//===- ModelTestUtil.h - shared pieces of the model's tests -----*- C++ -*-===//
//
// Used by the CPU model tests (ModelTest, DataParallelTest) and the GPU model
// test (test/gpu/CudaModelTest.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_TEST_MODELTESTUTIL_H
#define SPARSETX_TEST_MODELTESTUTIL_H

#include "sparsetx/Model/Data/Dataset.h"

#include <cstdint>
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

} // namespace sparsetx::model::test

#endif // SPARSETX_TEST_MODELTESTUTIL_H
