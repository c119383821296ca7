//===- Checkpoint.h - everything a run needs to continue exactly -*- C++ -*-===//
//
// A checkpoint holds the model and training configurations, the pattern's
// source, where the data came from, the step, the random state (every random
// choice of a run is a counter-based function of the seed and the step: data
// order, dropout), the parameters and Adam's moments. Resuming from it
// reproduces an uninterrupted run bit for bit on the CPU.
//
// File format (little-endian):
//   "SPTXCKPT"  u32 version  u32 section count
//   sections:   char[4] tag  u64 length  payload  u32 CRC-32 of the payload
//     META  JSON text     PARM, ADAM, ADAV  float32 arrays
// Written atomically (temporary file, fsync, rename). Reading checks the
// magic, version, every length against the file, every CRC and the metadata;
// errors read "<path>: offset N: <what is wrong>".
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_MODEL_CHECKPOINT_H
#define SPARSETX_MODEL_CHECKPOINT_H

#include "sparsetx/Model/Config.h"
#include "sparsetx/Model/Pattern.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sparsetx::model {

inline constexpr uint32_t kCheckpointVersion = 1;

/// Where the training data came from, so that eval and sample can reload it
/// and write samples of the right kind.
struct DataSpec {
  /// "gcide", "fashion-mnist", or a path (a raw byte file, a CIFAR-10
  /// directory, a WAV file).
  std::string source;
  data::DataKind kind = data::DataKind::Text;
  int64_t imageHeight = 0, imageWidth = 0, imageChannels = 0, sampleRate = 0;
};

struct Checkpoint {
  ModelConfig model;
  TrainConfig train;
  PatternSource pattern;
  DataSpec data;
  /// Steps completed.
  int64_t step = 0;
  /// fp16 loss scaling's state (0: none yet; the configured first scale).
  double lossScale = 0;
  int64_t lossScaleGoodSteps = 0;
  std::vector<float> params, adamM, adamV;
};

llvm::Error saveCheckpoint(llvm::StringRef path, const Checkpoint &checkpoint);
llvm::Expected<Checkpoint> loadCheckpoint(llvm::StringRef path);

} // namespace sparsetx::model

#endif // SPARSETX_MODEL_CHECKPOINT_H
