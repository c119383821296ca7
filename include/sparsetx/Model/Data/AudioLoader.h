//===- AudioLoader.h - WAV to 8-bit mu-law tokens ---------------*- C++ -*-===//
//
// RIFF/WAVE with PCM 8 (unsigned), 16, 24, 32-bit (signed) or 32-bit IEEE
// float samples (format 1, 3, or 0xFFFE extensible wrapping either), any
// channel count. Channels are averaged to mono, resampled to the target rate
// by linear interpolation, and mu-law (mu = 255) quantized to 8 bits.
//
// Linear interpolation: cheap and exact for rate ratios that are integers
// when upsampling; when downsampling, content above the new Nyquist frequency
// aliases (no low-pass filter), which is harmless for the paper's 12 kHz+
// speech and music but worth knowing.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_MODEL_DATA_AUDIOLOADER_H
#define SPARSETX_MODEL_DATA_AUDIOLOADER_H

#include "sparsetx/Model/Data/Dataset.h"

namespace sparsetx::data {

inline constexpr double kMuLaw = 255.0;

struct WavAudio {
  int64_t sampleRate = 0;
  int64_t channels = 0;       // in the file; samples are already mono
  int64_t bitsPerSample = 0;  // in the file
  std::vector<float> samples; // mono, in [-1, 1]
};

/// Parses a RIFF/WAVE file; every structural error names its offset.
llvm::Expected<WavAudio> decodeWav(llvm::StringRef path,
                                   llvm::ArrayRef<uint8_t> bytes);

/// Linear-interpolation resampling from `fromRate` to `toRate` Hz.
std::vector<float> resampleLinear(llvm::ArrayRef<float> in, int64_t fromRate,
                                  int64_t toRate);

/// mu-law companding of x in [-1, 1] (clamped) to 0..255, and back.
uint8_t muLawEncode(float x);
float muLawDecode(uint8_t q);

/// A WAV file to a dataset of mu-law bytes at `targetRate`, split 90/5/5 %
/// like raw bytes.
llvm::Expected<Dataset> loadWav(llvm::StringRef path, int64_t targetRate);

} // namespace sparsetx::data

#endif // SPARSETX_MODEL_DATA_AUDIOLOADER_H
