//===- Nvrtc.h - CUDA C++ to PTX with an on-disk cache ----------*- C++ -*-===//
//
// NVRTC runs without a GPU, so sparsec compiles kernels to PTX on any machine
// with the CUDA Toolkit. Results are cached on disk under a key hashing the
// source, the options, the target architecture and the NVRTC version, so a
// second compile of the same kernel is a file read. Errors carry the NVRTC
// log.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_RUNTIME_NVRTC_H
#define SPARSETX_RUNTIME_NVRTC_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sparsetx::nvrtc {

struct CompileOptions {
  /// "sm_80", "sm_90a", ...
  std::string arch = "sm_90a";
  /// Extra NVRTC options ("-DFOO=1", "--use_fast_math", ...).
  std::vector<std::string> flags;
  /// Directories for #include "..." (sparsetx's kernel headers are embedded
  /// and need none).
  std::vector<std::string> includeDirs;
  /// Cache directory; empty: $SPARSETX_CACHE_DIR, else $XDG_CACHE_HOME/sparsetx,
  /// else ~/.cache/sparsetx. "none" disables the cache.
  std::string cacheDir;
};

/// NVRTC's version, e.g. "13.0".
std::string version();

/// Compiles `source` (named `name` in diagnostics) to PTX. Headers given in
/// `headers` (name -> contents) are visible to #include "name".
llvm::Expected<std::string>
compileToPTX(llvm::StringRef source, llvm::StringRef name,
             const CompileOptions &options,
             llvm::ArrayRef<std::pair<std::string, std::string>> headers = {});

/// The cache directory `options` select ("" when caching is off).
std::string resolveCacheDir(const CompileOptions &options);

/// Process-wide counters: compiles answered from the cache, NVRTC runs.
struct CacheStats {
  uint64_t hits = 0, compiles = 0;
};
CacheStats getCacheStats();

} // namespace sparsetx::nvrtc

#endif // SPARSETX_RUNTIME_NVRTC_H
