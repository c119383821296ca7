//===- Gzip.cpp - gzip / dictzip decompression with zlib ------------------===//
//
// inflate with windowBits 16 + MAX_WBITS accepts exactly gzip (not zlib or
// raw deflate), so a mislabelled file fails at offset 0 instead of producing
// garbage. After each member's end, inflateReset starts the next member at
// the first unconsumed byte; trailing zero bytes (tape-style padding some
// tools add) are accepted, anything else must be another gzip member.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Data/Gzip.h"
#include "sparsetx/Model/Data/Dataset.h"

#include <zlib.h>

#include <algorithm>
#include <cstdint>

using namespace llvm;

namespace sparsetx::data {

bool isGzipPath(StringRef path) {
  return path.ends_with(".gz") || path.ends_with(".dz");
}

Expected<std::vector<uint8_t>> gunzip(StringRef path,
                                      ArrayRef<uint8_t> compressed) {
  if (compressed.empty())
    return dataError(path, 0, "empty gzip file");
  if (compressed.size() < 2 || compressed[0] != 0x1f || compressed[1] != 0x8b)
    return dataError(path, 0,
                     "not a gzip file (bad magic, expected 0x1f 0x8b)");

  z_stream zs = {};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
    return dataError(path, 0, "zlib inflateInit2 failed");

  std::vector<uint8_t> out;
  std::vector<uint8_t> chunk(1 << 16);
  size_t pos = 0; // offset of the first unconsumed compressed byte
  const size_t total = compressed.size();
  zs.next_in = const_cast<Bytef *>(compressed.data());
  zs.avail_in = static_cast<uInt>(std::min<size_t>(total, UINT32_MAX));
  size_t memberStart = 0;
  while (true) {
    zs.next_out = chunk.data();
    zs.avail_out = static_cast<uInt>(chunk.size());
    int rc = inflate(&zs, Z_NO_FLUSH);
    out.insert(out.end(), chunk.data(),
               chunk.data() + (chunk.size() - zs.avail_out));
    pos = static_cast<size_t>(zs.next_in - compressed.data());
    // Feed more input when more than 4 GiB (never for these data sets).
    if (zs.avail_in == 0 && pos < total) {
      zs.avail_in =
          static_cast<uInt>(std::min<size_t>(total - pos, UINT32_MAX));
    }
    if (rc == Z_STREAM_END) {
      // Skip zero padding; anything else must start another member.
      size_t next = pos;
      while (next < total && compressed[next] == 0)
        ++next;
      if (next == total)
        break;
      if (next + 1 >= total || compressed[next] != 0x1f ||
          compressed[next + 1] != 0x8b) {
        inflateEnd(&zs);
        return dataError(path, next,
                         "trailing garbage after gzip member (bad magic, "
                         "expected 0x1f 0x8b)");
      }
      inflateReset(&zs);
      zs.next_in = const_cast<Bytef *>(compressed.data() + next);
      zs.avail_in =
          static_cast<uInt>(std::min<size_t>(total - next, UINT32_MAX));
      memberStart = next;
      continue;
    }
    if (rc == Z_OK)
      continue;
    if (rc == Z_BUF_ERROR && zs.avail_in == 0 && pos == total) {
      inflateEnd(&zs);
      return dataError(path, total,
                       "truncated gzip stream (member starting at offset " +
                           Twine(memberStart) + " does not end)");
    }
    std::string msg = zs.msg ? zs.msg : "error " + std::to_string(rc);
    inflateEnd(&zs);
    return dataError(path, pos, "corrupt gzip data: " + msg);
  }
  inflateEnd(&zs);
  return out;
}

Expected<std::vector<uint8_t>> readMaybeGzip(StringRef path) {
  Expected<std::vector<uint8_t>> bytes = readFileBytes(path);
  if (!bytes || !isGzipPath(path))
    return bytes;
  return gunzip(path, *bytes);
}

} // namespace sparsetx::data
