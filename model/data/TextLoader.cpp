//===- TextLoader.cpp - raw-byte text sets: enwik8, GCIDE -----------------===//
//
// The enwik8 split is the usual 90M/5M/5M; the same "5% valid, 5% test at
// the end" rule gives it exactly, so other sizes need no special case.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Data/TextLoader.h"
#include "sparsetx/Model/Data/Gzip.h"

using namespace llvm;

namespace sparsetx::data {

Expected<Dataset> splitRawBytes(StringRef path, std::vector<uint8_t> bytes) {
  int64_t n = static_cast<int64_t>(bytes.size());
  if (n == 0)
    return dataError(path, 0, "empty file");
  if (n < kMinRawBytes)
    return dataError(path, 0,
                     Twine(n) +
                         " bytes is too small for a 90/5/5 split "
                         "(need at least " +
                         Twine(kMinRawBytes) + ")");
  int64_t held = n / 20; // 5% each for valid and test
  int64_t train = n - 2 * held;
  std::vector<uint8_t> trainBytes(bytes.begin(), bytes.begin() + train);
  std::vector<uint8_t> validBytes(bytes.begin() + train,
                                  bytes.begin() + train + held);
  std::vector<uint8_t> testBytes(bytes.begin() + train + held, bytes.end());
  DataInfo info;
  info.kind = DataKind::Text;
  info.source = path.str();
  return Dataset(std::move(info), std::move(trainBytes), std::move(validBytes),
                 std::move(testBytes));
}

Expected<Dataset> loadRawBytes(StringRef path) {
  Expected<std::vector<uint8_t>> bytes = readMaybeGzip(path);
  if (!bytes)
    return bytes.takeError();
  return splitRawBytes(path, std::move(*bytes));
}

Expected<Dataset> loadGcide(StringRef path) {
  // dictzip is gzip with an extra header field zlib skips on its own.
  Expected<std::vector<uint8_t>> compressed = readFileBytes(path);
  if (!compressed)
    return compressed.takeError();
  Expected<std::vector<uint8_t>> bytes = gunzip(path, *compressed);
  if (!bytes)
    return bytes.takeError();
  return splitRawBytes(path, std::move(*bytes));
}

} // namespace sparsetx::data
