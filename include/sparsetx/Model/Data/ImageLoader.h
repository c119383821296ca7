//===- ImageLoader.h - Fashion-MNIST (IDX) and CIFAR-10 (binary) -*- C++
//-*-===//
//
// Images become bytes in raster order with interleaved channels, as in the
// paper: byte (r * width + c) * channels + ch. Fashion-MNIST is 28x28x1,
// CIFAR-10 32x32x3 (stored channel-planar on disk, converted here).
//
// Splits: train is the official training set minus its last `validCount`
// images (5000 by default), which become valid; test is the official test
// set (t10k for Fashion-MNIST, test_batch.bin for CIFAR-10).
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_MODEL_DATA_IMAGELOADER_H
#define SPARSETX_MODEL_DATA_IMAGELOADER_H

#include "sparsetx/Model/Data/Dataset.h"

namespace sparsetx::data {

inline constexpr const char *kDefaultFashionMnistDir =
    "/usr/share/datasets/fashion-mnist";

/// IDX magic: two zero bytes, the element type (0x08 = unsigned byte), the
/// number of dimensions.
inline constexpr uint32_t kIdxImagesMagic = 0x00000803;
inline constexpr uint32_t kIdxLabelsMagic = 0x00000801;

inline constexpr int64_t kCifarSide = 32;
inline constexpr int64_t kCifarImageBytes = 32 * 32 * 3;
inline constexpr int64_t kCifarRecordBytes = 1 + kCifarImageBytes;

struct ImageSet {
  int64_t count = 0, height = 0, width = 0, channels = 0;
  std::vector<uint8_t> pixels; // count images, raster order, interleaved
  std::vector<uint8_t> labels; // count labels (may be empty)
};

/// An IDX unsigned-byte image file (magic 0x00000803, dims N x rows x cols).
llvm::Expected<ImageSet> parseIdxImages(llvm::StringRef path,
                                        llvm::ArrayRef<uint8_t> bytes);
/// An IDX unsigned-byte label file (magic 0x00000801, dim N), labels 0..9.
llvm::Expected<std::vector<uint8_t>>
parseIdxLabels(llvm::StringRef path, llvm::ArrayRef<uint8_t> bytes);

/// One CIFAR-10 batch: records of 1 label + 3072 planar bytes (R, G, B
/// planes of 32x32), returned in interleaved raster order.
llvm::Expected<ImageSet> parseCifarBatch(llvm::StringRef path,
                                         llvm::ArrayRef<uint8_t> bytes);

/// Converts channel-planar images (all of channel 0, then 1, ...) to
/// interleaved raster order; `planar` holds one image.
void planarToInterleaved(llvm::ArrayRef<uint8_t> planar, int64_t height,
                         int64_t width, int64_t channels, uint8_t *out);

struct ImageLoadOptions {
  /// Images taken from the end of the training set for validation.
  int64_t validCount = 5000;
};

/// {train,t10k}-{images-idx3,labels-idx1}-ubyte, each as .gz or plain
/// (the .gz is tried first).
llvm::Expected<Dataset>
loadFashionMnist(llvm::StringRef dir = kDefaultFashionMnistDir,
                 ImageLoadOptions options = {});

/// data_batch_1.bin .. data_batch_5.bin and test_batch.bin.
llvm::Expected<Dataset> loadCifar10(llvm::StringRef dir,
                                    ImageLoadOptions options = {});

} // namespace sparsetx::data

#endif // SPARSETX_MODEL_DATA_IMAGELOADER_H
