//===- Gzip.h - gzip / dictzip decompression with zlib ----------*- C++ -*-===//
//
// Fashion-MNIST ships as .gz and GCIDE as dictzip (.dz), a gzip file with an
// extra header field for random access; both are read whole. Multi-member
// files (several gzip streams back to back, as `cat a.gz b.gz` or pigz make)
// decompress to the concatenation of their members. Errors give the offset
// into the compressed file where zlib stopped.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_MODEL_DATA_GZIP_H
#define SPARSETX_MODEL_DATA_GZIP_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <vector>

namespace sparsetx::data {

/// Decompresses all gzip members of `compressed`; `path` names it in errors.
llvm::Expected<std::vector<uint8_t>> gunzip(llvm::StringRef path,
                                            llvm::ArrayRef<uint8_t> compressed);

/// Does the path end in .gz or .dz?
bool isGzipPath(llvm::StringRef path);

/// Reads a file, decompressing it when isGzipPath(path).
llvm::Expected<std::vector<uint8_t>> readMaybeGzip(llvm::StringRef path);

} // namespace sparsetx::data

#endif // SPARSETX_MODEL_DATA_GZIP_H
