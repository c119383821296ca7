//===- AtomicFile.h - replace a file only with a complete one ---*- C++ -*-===//
//
// Outputs people keep (checkpoints, pictures, samples) are written to a new
// temporary file beside the target, fsynced, renamed over the target, and the
// directory fsynced: a crash or a failed write leaves the previous good file,
// never a half-written one.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_SUPPORT_ATOMICFILE_H
#define SPARSETX_SUPPORT_ATOMICFILE_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>

namespace sparsetx {

/// Writes `bytes` to `path` durably and atomically. The error names the path
/// and the system's reason; on failure no temporary file is left behind.
llvm::Error writeFileAtomically(llvm::StringRef path,
                                llvm::ArrayRef<uint8_t> bytes);

inline llvm::Error writeFileAtomically(llvm::StringRef path,
                                       llvm::StringRef text) {
  return writeFileAtomically(
      path, llvm::ArrayRef<uint8_t>(
                reinterpret_cast<const uint8_t *>(text.data()), text.size()));
}

} // namespace sparsetx

#endif // SPARSETX_SUPPORT_ATOMICFILE_H
