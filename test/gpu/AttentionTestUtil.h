//===- AttentionTestUtil.h - shared helpers of the attention GPU tests -----===//
//
// Patterns (the shipped ones and a non-causal one), host conversions to the
// 16-bit formats, error plumbing and the relative-error measure used by
// AttentionForwardTest and AttentionBackwardTest.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_TEST_GPU_ATTENTIONTESTUTIL_H
#define SPARSETX_TEST_GPU_ATTENTIONTESTUTIL_H

#include "sparsetx/Codegen/CudaEmitter.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include "gtest/gtest.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

namespace sparsetx::testutil {

constexpr int64_t kBatchHeads = 3;
/// Per-head patterns run with 3 heads, so kBatchHeads is one batch of them.
constexpr int64_t kHeads = 3;

/// Non-causal: a symmetric window plus global summary columns (a gather key
/// map) and a symmetric stride (a transpose), so keys after the query matter.
inline constexpr const char *kBidirectional = R"sp(
pattern bidirectional(w = 80, l = 128) {
  let window = abs(i - j) < w;
  let summary = j % l >= l - 8;
  let column = (i - j) % l == 0;
  heads = window || summary || column;
}
)sp";

inline std::string patternsDir() {
  if (const char *env = std::getenv("SPARSETX_PATTERNS_DIR"))
    return env;
  if (llvm::sys::fs::is_directory(SPARSETX_SOURCE_PATTERNS_DIR))
    return SPARSETX_SOURCE_PATTERNS_DIR;
  return "patterns";
}

inline llvm::Expected<std::string> patternText(const std::string &name) {
  if (name == "bidirectional")
    return std::string(kBidirectional);
  llvm::SmallString<128> path(patternsDir());
  llvm::sys::path::append(path, name + ".sp");
  auto buffer = llvm::MemoryBuffer::getFile(path);
  if (!buffer)
    return llvm::createStringError(buffer.getError(), "cannot read " + path);
  return (*buffer)->getBuffer().str();
}

// Host conversions to the 16-bit formats (round to nearest even), so that the
// reference sees exactly the values the GPU reads.
inline uint16_t toBF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float fromBF16(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t toFP16(float f) {
  _Float16 h = static_cast<_Float16>(f);
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}
inline float fromFP16(uint16_t bits) {
  _Float16 h;
  std::memcpy(&h, &bits, 2);
  return static_cast<float>(h);
}

inline std::string caseName(const std::string &name, int64_t n, int64_t d,
                      codegen::ElementType dtype) {
  return name + "_n" + std::to_string(n) + "_d" + std::to_string(d) + "_" +
         codegen::getElementTypeName(dtype).str();
}

template <typename T>
T take(llvm::Expected<T> value, bool &ok, const char *what) {
  if (!value) {
    ADD_FAILURE() << what << ": " << llvm::toString(value.takeError());
    ok = false;
    return T();
  }
  return std::move(*value);
}

#define ASSERT_NO_ERROR(expr)                                                  \
  do {                                                                         \
    if (llvm::Error err = (expr))                                              \
      FAIL() << #expr << ": " << llvm::toString(std::move(err));               \
  } while (false)

/// ||a - b|| / ||b|| over finite entries; matching -inf counts as equal, a
/// NaN anywhere (an unwritten, poisoned element) or a lone inf fails.
inline double relativeError(llvm::ArrayRef<double> out, llvm::ArrayRef<double> ref,
                     int64_t &bad) {
  double num = 0, den = 0;
  bad = 0;
  for (size_t x = 0; x < out.size(); ++x) {
    if (std::isnan(out[x]) || std::isinf(out[x]) != std::isinf(ref[x]) ||
        (std::isinf(ref[x]) && out[x] != ref[x])) {
      ++bad;
      continue;
    }
    if (std::isinf(ref[x]))
      continue;
    num += (out[x] - ref[x]) * (out[x] - ref[x]);
    den += ref[x] * ref[x];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

} // namespace sparsetx::testutil

#endif // SPARSETX_TEST_GPU_ATTENTIONTESTUTIL_H
