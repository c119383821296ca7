//===- AudioLoader.cpp - WAV to 8-bit mu-law tokens -----------------------===//
//
// Chunks are walked from offset 12 to the end of the file (not to the RIFF
// size, which streaming writers leave at 0 or 0xFFFFFFFF); unknown chunks
// (LIST, fact, cue, ...) are skipped with their pad byte. 'fmt ' may follow
// 'data', so both are found first and decoded after.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Data/AudioLoader.h"
#include "sparsetx/Model/Data/TextLoader.h"

#include "llvm/Support/Format.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

using namespace llvm;

namespace sparsetx::data {

namespace {

uint16_t le16(ArrayRef<uint8_t> b, size_t o) {
  return uint16_t(b[o]) | (uint16_t(b[o + 1]) << 8);
}
uint32_t le32(ArrayRef<uint8_t> b, size_t o) {
  return uint32_t(b[o]) | (uint32_t(b[o + 1]) << 8) |
         (uint32_t(b[o + 2]) << 16) | (uint32_t(b[o + 3]) << 24);
}

/// A four-character code for messages, non-printable bytes as \xNN.
std::string fourCC(ArrayRef<uint8_t> b, size_t o) {
  std::string s;
  raw_string_ostream os(s);
  for (size_t i = 0; i < 4; ++i) {
    uint8_t c = b[o + i];
    if (c >= 0x20 && c < 0x7f)
      os << char(c);
    else
      os << "\\x" << format_hex_no_prefix(c, 2);
  }
  return s;
}

std::string hex16(uint32_t v) {
  std::string s;
  raw_string_ostream os(s);
  os << format_hex(v, 6);
  return s;
}

constexpr uint16_t kFormatPcm = 1, kFormatFloat = 3, kFormatExtensible = 0xFFFE;

struct Chunk {
  size_t start = 0; // offset of the chunk header
  size_t size = 0;  // payload bytes
};

} // namespace

Expected<WavAudio> decodeWav(StringRef path, ArrayRef<uint8_t> bytes) {
  const size_t n = bytes.size();
  if (n < 12)
    return dataError(path, n,
                     "truncated RIFF header: the file ends after " + Twine(n) +
                         " bytes, a WAV header needs 12");
  if (std::memcmp(bytes.data(), "RIFF", 4) != 0)
    return dataError(path, 0,
                     "bad magic '" + fourCC(bytes, 0) + "', expected 'RIFF'");
  if (std::memcmp(bytes.data() + 8, "WAVE", 4) != 0)
    return dataError(
        path, 8, "bad form type '" + fourCC(bytes, 8) + "', expected 'WAVE'");

  std::optional<Chunk> fmt, data;
  size_t pos = 12;
  while (pos < n) {
    if (n - pos < 8)
      return dataError(path, pos,
                       "truncated chunk header: " + Twine(n - pos) +
                           " bytes left, a chunk header needs 8");
    size_t size = le32(bytes, pos + 4);
    if (size > n - pos - 8)
      return dataError(path, pos,
                       "chunk '" + fourCC(bytes, pos) + "' declares " +
                           Twine(size) + " bytes but only " +
                           Twine(n - pos - 8) + " remain");
    if (std::memcmp(bytes.data() + pos, "fmt ", 4) == 0 && !fmt)
      fmt = Chunk{pos, size};
    else if (std::memcmp(bytes.data() + pos, "data", 4) == 0 && !data)
      data = Chunk{pos, size};
    pos += 8 + size + (size & 1);
  }
  if (!fmt)
    return dataError(path, n, "no 'fmt ' chunk in the file");
  if (!data)
    return dataError(path, n, "no 'data' chunk in the file");

  size_t f = fmt->start + 8;
  if (fmt->size < 16)
    return dataError(path, fmt->start,
                     "'fmt ' chunk of " + Twine(fmt->size) +
                         " bytes is too small (needs 16)");
  uint16_t code = le16(bytes, f);
  size_t codeOffset = f;
  if (code == kFormatExtensible) {
    if (fmt->size < 40)
      return dataError(path, fmt->start,
                       "extensible 'fmt ' chunk of " + Twine(fmt->size) +
                           " bytes is too small (needs 40)");
    codeOffset = f + 24; // first two bytes of the SubFormat GUID
    code = le16(bytes, codeOffset);
  }
  if (code != kFormatPcm && code != kFormatFloat)
    return dataError(path, codeOffset,
                     "unsupported format code " + hex16(code) +
                         " (supported: 0x0001 PCM, 0x0003 IEEE float, "
                         "0xfffe extensible of either)");
  uint16_t channels = le16(bytes, f + 2);
  uint32_t rate = le32(bytes, f + 4);
  uint16_t blockAlign = le16(bytes, f + 12);
  uint16_t bits = le16(bytes, f + 14);
  if (channels == 0)
    return dataError(path, f + 2, "zero channels");
  if (rate == 0)
    return dataError(path, f + 4, "zero sample rate");
  if (code == kFormatPcm && bits != 8 && bits != 16 && bits != 24 && bits != 32)
    return dataError(path, f + 14,
                     "unsupported " + Twine(bits) +
                         "-bit PCM samples (supported: 8, 16, 24, 32)");
  if (code == kFormatFloat && bits != 32)
    return dataError(path, f + 14,
                     "unsupported " + Twine(bits) +
                         "-bit float samples (supported: 32)");
  uint32_t frameBytes = uint32_t(channels) * (bits / 8);
  if (blockAlign != frameBytes)
    return dataError(path, f + 12,
                     "block align " + Twine(blockAlign) + ", expected " +
                         Twine(frameBytes) + " for " + Twine(channels) +
                         " channels of " + Twine(bits) + " bits");
  if (data->size % frameBytes != 0)
    return dataError(path, data->start,
                     "data chunk of " + Twine(data->size) +
                         " bytes is not a whole number of " +
                         Twine(frameBytes) + "-byte frames");

  WavAudio audio;
  audio.sampleRate = rate;
  audio.channels = channels;
  audio.bitsPerSample = bits;
  size_t frames = data->size / frameBytes;
  audio.samples.resize(frames);
  const uint8_t *p = bytes.data() + data->start + 8;
  const size_t step = bits / 8;
  for (size_t i = 0; i < frames; ++i) {
    double sum = 0;
    for (uint16_t c = 0; c < channels; ++c, p += step) {
      double v;
      if (code == kFormatFloat) {
        float x;
        uint32_t u = uint32_t(p[0]) | (uint32_t(p[1]) << 8) |
                     (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
        std::memcpy(&x, &u, 4);
        v = std::isfinite(x) ? x : 0.0;
      } else if (bits == 8) {
        v = (int(p[0]) - 128) / 128.0; // 8-bit WAV is unsigned
      } else if (bits == 16) {
        v = int16_t(uint16_t(p[0]) | (uint16_t(p[1]) << 8)) / 32768.0;
      } else if (bits == 24) {
        int32_t s = int32_t((uint32_t(p[0]) << 8) | (uint32_t(p[1]) << 16) |
                            (uint32_t(p[2]) << 24)) >>
                    8; // sign-extend through the top byte
        v = s / 8388608.0;
      } else {
        int32_t s = int32_t(uint32_t(p[0]) | (uint32_t(p[1]) << 8) |
                            (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24));
        v = s / 2147483648.0;
      }
      sum += v;
    }
    audio.samples[i] = static_cast<float>(sum / channels);
  }
  return audio;
}

std::vector<float> resampleLinear(ArrayRef<float> in, int64_t fromRate,
                                  int64_t toRate) {
  if (in.empty() || fromRate <= 0 || toRate <= 0)
    return {};
  if (fromRate == toRate)
    return std::vector<float>(in.begin(), in.end());
  // Output sample i sits at input time i * fromRate / toRate, computed in
  // integers so that long files do not drift.
  int64_t last = static_cast<int64_t>(in.size()) - 1;
  int64_t count = last * toRate / fromRate + 1;
  std::vector<float> out(count);
  for (int64_t i = 0; i < count; ++i) {
    int64_t num = i * fromRate;
    int64_t j = num / toRate;
    double frac = double(num % toRate) / double(toRate);
    double a = in[j];
    double b = j < last ? in[j + 1] : in[j];
    out[i] = static_cast<float>(a + (b - a) * frac);
  }
  return out;
}

uint8_t muLawEncode(float x) {
  double v = std::clamp(static_cast<double>(x), -1.0, 1.0);
  double y =
      std::copysign(std::log1p(kMuLaw * std::fabs(v)) / std::log1p(kMuLaw), v);
  long q = std::lround((y + 1.0) * 0.5 * 255.0);
  return static_cast<uint8_t>(std::clamp(q, 0L, 255L));
}

float muLawDecode(uint8_t q) {
  double y = q / 255.0 * 2.0 - 1.0;
  double x =
      std::copysign((std::pow(1.0 + kMuLaw, std::fabs(y)) - 1.0) / kMuLaw, y);
  return static_cast<float>(x);
}

Expected<Dataset> loadWav(StringRef path, int64_t targetRate) {
  if (targetRate <= 0)
    return createStringError(inconvertibleErrorCode(),
                             "%s: target sample rate %lld must be positive",
                             path.str().c_str(), (long long)targetRate);
  Expected<std::vector<uint8_t>> bytes = readFileBytes(path);
  if (!bytes)
    return bytes.takeError();
  Expected<WavAudio> audio = decodeWav(path, *bytes);
  if (!audio)
    return audio.takeError();
  std::vector<float> mono =
      resampleLinear(audio->samples, audio->sampleRate, targetRate);
  std::vector<uint8_t> tokens(mono.size());
  for (size_t i = 0; i < mono.size(); ++i)
    tokens[i] = muLawEncode(mono[i]);
  Expected<Dataset> ds = splitRawBytes(path, std::move(tokens));
  if (!ds)
    return ds.takeError();
  DataInfo info = ds->info();
  info.kind = DataKind::Audio;
  info.sampleRate = targetRate;
  std::vector<uint8_t> train(ds->tokens(Split::Train).begin(),
                             ds->tokens(Split::Train).end());
  std::vector<uint8_t> valid(ds->tokens(Split::Valid).begin(),
                             ds->tokens(Split::Valid).end());
  std::vector<uint8_t> test(ds->tokens(Split::Test).begin(),
                            ds->tokens(Split::Test).end());
  return Dataset(std::move(info), std::move(train), std::move(valid),
                 std::move(test));
}

} // namespace sparsetx::data
