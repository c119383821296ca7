//===- Dataset.cpp - byte-token datasets ----------------------------------===//
//
// The split container, its random access, and the error and file helpers
// every loader shares.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Data/Dataset.h"

#include "llvm/Support/MemoryBuffer.h"

using namespace llvm;

namespace sparsetx::data {

StringRef toString(DataKind kind) {
  switch (kind) {
  case DataKind::Text:
    return "text";
  case DataKind::Image:
    return "image";
  case DataKind::Audio:
    return "audio";
  }
  return "unknown";
}

StringRef toString(Split split) {
  switch (split) {
  case Split::Train:
    return "train";
  case Split::Valid:
    return "valid";
  case Split::Test:
    return "test";
  }
  return "unknown";
}

Dataset::Dataset(DataInfo info, std::vector<uint8_t> train,
                 std::vector<uint8_t> valid, std::vector<uint8_t> test)
    : info_(std::move(info)) {
  splits_[0] = std::move(train);
  splits_[1] = std::move(valid);
  splits_[2] = std::move(test);
}

int64_t Dataset::numExamples(Split split, int64_t length) const {
  int64_t n = static_cast<int64_t>(tokens(split).size());
  if (length <= 0)
    return 0;
  if (info_.kind == DataKind::Image)
    return length == info_.imageBytes() ? n / length : 0;
  return n >= length ? n - length + 1 : 0;
}

Expected<ArrayRef<uint8_t>> Dataset::example(Split split, int64_t index,
                                             int64_t length) const {
  ArrayRef<uint8_t> all = tokens(split);
  if (info_.kind == DataKind::Image && length != info_.imageBytes())
    return createStringError(
        inconvertibleErrorCode(),
        "%s: an image example is %lld bytes (%lldx%lldx%lld), not %lld",
        info_.source.c_str(), (long long)info_.imageBytes(),
        (long long)info_.height, (long long)info_.width,
        (long long)info_.channels, (long long)length);
  int64_t count = numExamples(split, length);
  if (length <= 0 || index < 0 || index >= count)
    return createStringError(
        inconvertibleErrorCode(),
        "%s: %s example %lld of length %lld out of range (%lld examples)",
        info_.source.c_str(), toString(split).str().c_str(), (long long)index,
        (long long)length, (long long)count);
  int64_t start = info_.kind == DataKind::Image ? index * length : index;
  return all.slice(start, length);
}

Error dataError(StringRef path, uint64_t offset, const Twine &message) {
  return createStringError(
      inconvertibleErrorCode(),
      (path + ": offset " + Twine(offset) + ": " + message).str());
}

Expected<std::vector<uint8_t>> readFileBytes(StringRef path) {
  ErrorOr<std::unique_ptr<MemoryBuffer>> buf =
      MemoryBuffer::getFile(path, /*IsText=*/false,
                            /*RequiresNullTerminator=*/false);
  if (!buf)
    return createStringError(buf.getError(), "%s: cannot read: %s",
                             path.str().c_str(),
                             buf.getError().message().c_str());
  StringRef data = (*buf)->getBuffer();
  return std::vector<uint8_t>(data.bytes_begin(), data.bytes_end());
}

} // namespace sparsetx::data
