//===- Dataset.h - byte-token datasets with train/valid/test splits -*- C++
//-*-===//
//
// Every data set of the paper is a stream of byte tokens (0..255): text as
// raw bytes, images as their bytes in raster order with the channels
// interleaved (row, column, channel), audio as 8-bit mu-law samples. A
// Dataset holds the three splits and says what kind of data they are, so the
// model can pick its positional embeddings (row/column/channel for images,
// attention row/column for text and audio).
//
// Random access: for images an example is one whole image (examples do not
// overlap); for text and audio an example of length L is the window of L
// bytes starting at any byte offset.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_MODEL_DATA_DATASET_H
#define SPARSETX_MODEL_DATA_DATASET_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace sparsetx::data {

enum class DataKind { Text, Image, Audio };
enum class Split { Train = 0, Valid = 1, Test = 2 };

llvm::StringRef toString(DataKind kind);
llvm::StringRef toString(Split split);

struct DataInfo {
  DataKind kind = DataKind::Text;
  /// Images only.
  int64_t height = 0, width = 0, channels = 0;
  /// Audio only: the rate after resampling, in Hz.
  int64_t sampleRate = 0;
  /// Where the data came from (a file or a directory), for messages.
  std::string source;

  /// Bytes of one image (height * width * channels); 0 for text and audio.
  int64_t imageBytes() const { return height * width * channels; }
};

class Dataset {
public:
  Dataset() = default;
  Dataset(DataInfo info, std::vector<uint8_t> train, std::vector<uint8_t> valid,
          std::vector<uint8_t> test);

  const DataInfo &info() const { return info_; }
  DataKind kind() const { return info_.kind; }

  /// The whole token stream of a split.
  llvm::ArrayRef<uint8_t> tokens(Split split) const {
    return splits_[static_cast<int>(split)];
  }

  /// Image class labels, one per image of the split (empty for text, audio).
  llvm::ArrayRef<uint8_t> labels(Split split) const {
    return labels_[static_cast<int>(split)];
  }
  void setLabels(Split split, std::vector<uint8_t> labels) {
    labels_[static_cast<int>(split)] = std::move(labels);
  }

  /// How many examples of `length` bytes the split offers: images, the
  /// number of images (length must be imageBytes()); text and audio, the
  /// number of windows (tokens - length + 1, or 0).
  int64_t numExamples(Split split, int64_t length) const;

  /// Example `index` of `length` bytes; an error names what is out of range.
  llvm::Expected<llvm::ArrayRef<uint8_t>> example(Split split, int64_t index,
                                                  int64_t length) const;

private:
  DataInfo info_;
  std::array<std::vector<uint8_t>, 3> splits_;
  std::array<std::vector<uint8_t>, 3> labels_;
};

/// The error every loader returns: "<path>: offset <offset>: <message>".
llvm::Error dataError(llvm::StringRef path, uint64_t offset,
                      const llvm::Twine &message);

/// Reads a whole file; an error names the file and the system's reason.
llvm::Expected<std::vector<uint8_t>> readFileBytes(llvm::StringRef path);

} // namespace sparsetx::data

#endif // SPARSETX_MODEL_DATA_DATASET_H
