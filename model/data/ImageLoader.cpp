//===- ImageLoader.cpp - Fashion-MNIST (IDX) and CIFAR-10 (binary) --------===//
//
// Both formats have no checksum, so every size is checked against the file
// length before a byte of payload is trusted: a short download shows up as
// "room for N images", not as a model trained on zeros.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Data/ImageLoader.h"
#include "sparsetx/Model/Data/Gzip.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

using namespace llvm;

namespace sparsetx::data {

namespace {

uint32_t readBigEndian32(ArrayRef<uint8_t> bytes, size_t offset) {
  return (uint32_t(bytes[offset]) << 24) | (uint32_t(bytes[offset + 1]) << 16) |
         (uint32_t(bytes[offset + 2]) << 8) | uint32_t(bytes[offset + 3]);
}

std::string hex32(uint32_t v) {
  std::string s;
  raw_string_ostream os(s);
  os << format_hex(v, 10);
  return s;
}

/// Checks the magic and the header length of an IDX unsigned-byte file of
/// `dims` dimensions; returns the dimension sizes.
Expected<std::vector<uint32_t>> parseIdxHeader(StringRef path,
                                               ArrayRef<uint8_t> bytes,
                                               uint32_t magic, int dims) {
  if (bytes.size() < 4)
    return dataError(path, bytes.size(),
                     "truncated header: the file ends after " +
                         Twine(bytes.size()) +
                         " bytes, before the 4-byte IDX magic");
  uint32_t got = readBigEndian32(bytes, 0);
  if (got != magic)
    return dataError(path, 0,
                     "bad magic " + hex32(got) + ", expected " + hex32(magic) +
                         " (IDX unsigned byte, " + Twine(dims) +
                         (dims == 1 ? " dimension)" : " dimensions)"));
  size_t header = 4 + 4 * dims;
  if (bytes.size() < header)
    return dataError(path, bytes.size(),
                     "truncated header: the file ends after " +
                         Twine(bytes.size()) + " bytes, an IDX header with " +
                         Twine(dims) +
                         (dims == 1 ? " dimension" : " dimensions") +
                         " needs " + Twine(header));
  std::vector<uint32_t> sizes;
  for (int i = 0; i < dims; ++i)
    sizes.push_back(readBigEndian32(bytes, 4 + 4 * i));
  return sizes;
}

/// The payload after a header must hold exactly `count` items of `itemBytes`.
Error checkPayload(StringRef path, ArrayRef<uint8_t> bytes, size_t header,
                   uint64_t count, uint64_t itemBytes, StringRef what) {
  uint64_t payload = bytes.size() - header;
  uint64_t need = count * itemBytes;
  if (payload < need)
    return dataError(path, 4,
                     "expected " + Twine(count) + " " + what +
                         " but the file has room for " +
                         Twine(payload / itemBytes));
  if (payload > need)
    return dataError(path, header + need,
                     Twine(payload - need) + " trailing bytes after " +
                         Twine(count) + " " + what);
  return Error::success();
}

Error checkLabels(StringRef path, ArrayRef<uint8_t> labels, size_t first,
                  size_t stride) {
  for (size_t i = 0; i < labels.size(); ++i)
    if (labels[i] > 9)
      return dataError(path, first + i * stride,
                       "label " + Twine(unsigned(labels[i])) +
                           " out of range 0..9");
  return Error::success();
}

/// The IDX file `dir/name.gz`, or `dir/name` when there is no .gz.
std::string findIdx(StringRef dir, StringRef name) {
  SmallString<256> gz(dir);
  sys::path::append(gz, name + ".gz");
  if (sys::fs::exists(gz))
    return gz.str().str();
  SmallString<256> plain(dir);
  sys::path::append(plain, name);
  if (sys::fs::exists(plain))
    return plain.str().str();
  return gz.str().str(); // reading it reports "cannot read"
}

Expected<ImageSet> loadIdxPair(StringRef dir, StringRef prefix) {
  std::string imagesPath = findIdx(dir, (prefix + "-images-idx3-ubyte").str());
  std::string labelsPath = findIdx(dir, (prefix + "-labels-idx1-ubyte").str());
  Expected<std::vector<uint8_t>> imageBytes = readMaybeGzip(imagesPath);
  if (!imageBytes)
    return imageBytes.takeError();
  Expected<ImageSet> images = parseIdxImages(imagesPath, *imageBytes);
  if (!images)
    return images.takeError();
  Expected<std::vector<uint8_t>> labelBytes = readMaybeGzip(labelsPath);
  if (!labelBytes)
    return labelBytes.takeError();
  Expected<std::vector<uint8_t>> labels =
      parseIdxLabels(labelsPath, *labelBytes);
  if (!labels)
    return labels.takeError();
  if (static_cast<int64_t>(labels->size()) != images->count)
    return dataError(labelsPath, 4,
                     Twine(labels->size()) + " labels but " + imagesPath +
                         " has " + Twine(images->count) + " images");
  images->labels = std::move(*labels);
  return images;
}

/// Train minus its last validCount images, those, and test.
Expected<Dataset> makeImageDataset(StringRef source, StringRef trainPath,
                                   ImageSet train, StringRef testPath,
                                   ImageSet test, ImageLoadOptions options,
                                   uint64_t countOffset) {
  if (test.height != train.height || test.width != train.width ||
      test.channels != train.channels)
    return dataError(testPath, 8,
                     "images are " + Twine(test.height) + "x" +
                         Twine(test.width) + "x" + Twine(test.channels) +
                         " but the training images are " + Twine(train.height) +
                         "x" + Twine(train.width) + "x" +
                         Twine(train.channels));
  if (options.validCount < 0 || options.validCount >= train.count)
    return dataError(trainPath, countOffset,
                     Twine(train.count) +
                         " training images leave none for "
                         "training after " +
                         Twine(options.validCount) + " for validation");
  int64_t imageBytes = train.height * train.width * train.channels;
  int64_t keep = train.count - options.validCount;
  auto cut = train.pixels.begin() + keep * imageBytes;
  std::vector<uint8_t> trainPixels(train.pixels.begin(), cut);
  std::vector<uint8_t> validPixels(cut, train.pixels.end());
  std::vector<uint8_t> trainLabels, validLabels;
  if (!train.labels.empty()) {
    trainLabels.assign(train.labels.begin(), train.labels.begin() + keep);
    validLabels.assign(train.labels.begin() + keep, train.labels.end());
  }
  DataInfo info;
  info.kind = DataKind::Image;
  info.height = train.height;
  info.width = train.width;
  info.channels = train.channels;
  info.source = source.str();
  Dataset ds(std::move(info), std::move(trainPixels), std::move(validPixels),
             std::move(test.pixels));
  ds.setLabels(Split::Train, std::move(trainLabels));
  ds.setLabels(Split::Valid, std::move(validLabels));
  ds.setLabels(Split::Test, std::move(test.labels));
  return ds;
}

} // namespace

Expected<ImageSet> parseIdxImages(StringRef path, ArrayRef<uint8_t> bytes) {
  Expected<std::vector<uint32_t>> dims =
      parseIdxHeader(path, bytes, kIdxImagesMagic, 3);
  if (!dims)
    return dims.takeError();
  uint32_t count = (*dims)[0], rows = (*dims)[1], cols = (*dims)[2];
  if (count == 0)
    return dataError(path, 4, "zero images");
  if (rows == 0 || cols == 0)
    return dataError(path, rows == 0 ? 8 : 12,
                     "zero-sized images (" + Twine(rows) + "x" + Twine(cols) +
                         ")");
  if (Error err =
          checkPayload(path, bytes, 16, count, uint64_t(rows) * cols, "images"))
    return std::move(err);
  ImageSet set;
  set.count = count;
  set.height = rows;
  set.width = cols;
  set.channels = 1;
  set.pixels.assign(bytes.begin() + 16, bytes.end());
  return set;
}

Expected<std::vector<uint8_t>> parseIdxLabels(StringRef path,
                                              ArrayRef<uint8_t> bytes) {
  Expected<std::vector<uint32_t>> dims =
      parseIdxHeader(path, bytes, kIdxLabelsMagic, 1);
  if (!dims)
    return dims.takeError();
  uint32_t count = (*dims)[0];
  if (count == 0)
    return dataError(path, 4, "zero labels");
  if (Error err = checkPayload(path, bytes, 8, count, 1, "labels"))
    return std::move(err);
  if (Error err = checkLabels(path, bytes.drop_front(8), 8, 1))
    return std::move(err);
  return std::vector<uint8_t>(bytes.begin() + 8, bytes.end());
}

void planarToInterleaved(ArrayRef<uint8_t> planar, int64_t height,
                         int64_t width, int64_t channels, uint8_t *out) {
  int64_t plane = height * width;
  for (int64_t p = 0; p < plane; ++p)
    for (int64_t c = 0; c < channels; ++c)
      out[p * channels + c] = planar[c * plane + p];
}

Expected<ImageSet> parseCifarBatch(StringRef path, ArrayRef<uint8_t> bytes) {
  if (bytes.empty())
    return dataError(path, 0, "empty file");
  size_t whole = bytes.size() / kCifarRecordBytes;
  size_t rest = bytes.size() % kCifarRecordBytes;
  if (rest != 0)
    return dataError(path, whole * kCifarRecordBytes,
                     "file size " + Twine(bytes.size()) +
                         " is not a multiple of 3073 (1 label byte + 3072 "
                         "image bytes): the last record has only " +
                         Twine(rest) + " bytes");
  ImageSet set;
  set.count = whole;
  set.height = set.width = kCifarSide;
  set.channels = 3;
  set.pixels.resize(whole * kCifarImageBytes);
  set.labels.resize(whole);
  for (size_t i = 0; i < whole; ++i) {
    ArrayRef<uint8_t> record =
        bytes.slice(i * kCifarRecordBytes, kCifarRecordBytes);
    if (record[0] > 9)
      return dataError(path, i * kCifarRecordBytes,
                       "label " + Twine(unsigned(record[0])) +
                           " out of range 0..9");
    set.labels[i] = record[0];
    planarToInterleaved(record.drop_front(1), kCifarSide, kCifarSide, 3,
                        set.pixels.data() + i * kCifarImageBytes);
  }
  return set;
}

Expected<Dataset> loadFashionMnist(StringRef dir, ImageLoadOptions options) {
  Expected<ImageSet> train = loadIdxPair(dir, "train");
  if (!train)
    return train.takeError();
  Expected<ImageSet> test = loadIdxPair(dir, "t10k");
  if (!test)
    return test.takeError();
  return makeImageDataset(dir, findIdx(dir, "train-images-idx3-ubyte"),
                          std::move(*train),
                          findIdx(dir, "t10k-images-idx3-ubyte"),
                          std::move(*test), options, /*countOffset=*/4);
}

Expected<Dataset> loadCifar10(StringRef dir, ImageLoadOptions options) {
  auto readBatch = [&](StringRef name) -> Expected<ImageSet> {
    SmallString<256> path(dir);
    sys::path::append(path, name);
    Expected<std::vector<uint8_t>> bytes = readFileBytes(path);
    if (!bytes)
      return bytes.takeError();
    return parseCifarBatch(path, *bytes);
  };
  ImageSet train;
  train.height = train.width = kCifarSide;
  train.channels = 3;
  for (int b = 1; b <= 5; ++b) {
    Expected<ImageSet> batch =
        readBatch(("data_batch_" + Twine(b) + ".bin").str());
    if (!batch)
      return batch.takeError();
    train.count += batch->count;
    train.pixels.insert(train.pixels.end(), batch->pixels.begin(),
                        batch->pixels.end());
    train.labels.insert(train.labels.end(), batch->labels.begin(),
                        batch->labels.end());
  }
  Expected<ImageSet> test = readBatch("test_batch.bin");
  if (!test)
    return test.takeError();
  SmallString<256> lastTrain(dir), testPath(dir);
  sys::path::append(lastTrain, "data_batch_5.bin");
  sys::path::append(testPath, "test_batch.bin");
  return makeImageDataset(dir, lastTrain, std::move(train), testPath,
                          std::move(*test), options, /*countOffset=*/0);
}

} // namespace sparsetx::data
