//===- TextLoader.h - raw-byte text sets: enwik8, GCIDE ---------*- C++ -*-===//
//
// Raw bytes are their own tokens. The split follows enwik8: a file of exactly
// 100,000,000 bytes gives 90M train, 5M valid, 5M test; any other file gives
// floor(5%) valid and floor(5%) test at the end and the rest (about 90%) as
// train, so every byte is used and the 100M case is the same rule.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_MODEL_DATA_TEXTLOADER_H
#define SPARSETX_MODEL_DATA_TEXTLOADER_H

#include "sparsetx/Model/Data/Dataset.h"

namespace sparsetx::data {

/// Where Debian's dict-gcide puts the dictionary: the default text set.
inline constexpr const char *kDefaultGcidePath =
    "/usr/share/dictd/gcide.dict.dz";

/// The smallest stream that leaves every split at least one byte.
inline constexpr int64_t kMinRawBytes = 20;

/// Splits `bytes` (read from `path`, named in errors) by the rule above.
llvm::Expected<Dataset> splitRawBytes(llvm::StringRef path,
                                      std::vector<uint8_t> bytes);

/// A raw byte file (enwik8 or any other); .gz/.dz files are decompressed.
llvm::Expected<Dataset> loadRawBytes(llvm::StringRef path);

/// The GCIDE dictionary (dictzip), decompressed then split as raw bytes.
llvm::Expected<Dataset> loadGcide(llvm::StringRef path = kDefaultGcidePath);

} // namespace sparsetx::data

#endif // SPARSETX_MODEL_DATA_TEXTLOADER_H
