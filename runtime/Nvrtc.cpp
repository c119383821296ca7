//===- Nvrtc.cpp - CUDA C++ to PTX with an on-disk cache ------------------===//
//
// NVRTC compiles the generated kernels on any machine (no GPU needed). A cache
// entry is <cacheDir>/<sha256>.ptx; the key hashes everything that can change
// the PTX: the NVRTC version, the virtual architecture, every option, the
// source, the in-memory headers and the files under the include directories
// (by path, size and modification time). Entries are written to a temporary
// file and renamed into place, so a concurrent reader sees a whole entry or
// none; each entry ends with a checksum line, so a damaged one is recompiled
// rather than returned.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Runtime/Nvrtc.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/SHA256.h"
#include "llvm/Support/raw_ostream.h"

#include <nvrtc.h>

#include <atomic>

using namespace sparsetx;
using namespace sparsetx::nvrtc;

namespace {

std::atomic<uint64_t> numCacheHits{0}, numCompiles{0};

/// The checksum line that closes every cache entry (a PTX comment, so an entry
/// stays valid PTX for ptxas).
constexpr llvm::StringLiteral kTrailerPrefix = "// sparsetx-nvrtc-cache sha256=";

/// A cache key with files under this many entries in the include directories;
/// above it, walking them costs more than compiling, so the cache is skipped.
constexpr unsigned kMaxIncludeDirFiles = 4096;

std::string sha256Hex(llvm::StringRef data) {
  return llvm::toHex(llvm::SHA256::hash(llvm::arrayRefFromStringRef(data)),
                     /*LowerCase=*/true);
}

/// Hashes a field with its length, so that ("ab", "c") and ("a", "bc") differ.
void addField(llvm::SHA256 &hasher, llvm::StringRef field) {
  uint64_t size = field.size();
  hasher.update(llvm::ArrayRef<uint8_t>(reinterpret_cast<uint8_t *>(&size),
                                        sizeof(size)));
  hasher.update(field);
}

llvm::Error nvrtcError(llvm::StringRef call, nvrtcResult result) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 "%s: %s", call.str().c_str(),
                                 nvrtcGetErrorString(result));
}

/// Toolkit include directory: $CUDA_PATH, $CUDA_HOME, the toolkit found at
/// build time, /usr/local/cuda; the first that has cuda_fp16.h.
std::string toolkitIncludeDir() {
  llvm::SmallVector<std::string, 4> candidates;
  for (const char *var : {"CUDA_PATH", "CUDA_HOME"})
    if (std::optional<std::string> root = llvm::sys::Process::GetEnv(var))
      if (!root->empty())
        candidates.push_back(*root + "/include");
#ifdef SPARSETX_CUDA_INCLUDE_DIR
  candidates.push_back(SPARSETX_CUDA_INCLUDE_DIR);
#endif
  candidates.push_back("/usr/local/cuda/include");
  for (const std::string &dir : candidates)
    if (llvm::sys::fs::exists(dir + "/cuda_fp16.h"))
      return dir;
  return "";
}

/// "sm_90a" -> "compute_90a": PTX is produced for a virtual architecture.
llvm::Expected<std::string> virtualArch(llvm::StringRef arch) {
  llvm::StringRef rest = arch;
  if (!rest.consume_front("sm_") && !rest.consume_front("compute_"))
    rest = "";
  llvm::StringRef digits = rest.take_while(llvm::isDigit);
  llvm::StringRef suffix = rest.drop_front(digits.size());
  if (digits.empty() || !(suffix.empty() || suffix == "a" || suffix == "f"))
    return llvm::createStringError(
        llvm::inconvertibleErrorCode(),
        "nvrtc: unsupported architecture '%s' (expected sm_XX[a|f] or "
        "compute_XX[a|f])",
        arch.str().c_str());
  return ("compute_" + rest).str();
}

/// Adds path, size and mtime of every file under `dir` to the key; false when
/// there are too many files to do that cheaply.
bool hashIncludeDir(llvm::SHA256 &hasher, const std::string &dir,
                    unsigned &numFiles) {
  addField(hasher, dir);
  std::error_code ec;
  for (llvm::sys::fs::recursive_directory_iterator it(dir, ec), end;
       it != end && !ec; it.increment(ec)) {
    llvm::ErrorOr<llvm::sys::fs::basic_file_status> status = it->status();
    if (!status || status->type() != llvm::sys::fs::file_type::regular_file)
      continue;
    if (++numFiles > kMaxIncludeDirFiles)
      return false;
    addField(hasher, it->path());
    addField(hasher, std::to_string(status->getSize()));
    addField(hasher, std::to_string(llvm::sys::toTimeT(
                         status->getLastModificationTime())));
  }
  return true;
}

/// Reads a cache entry; std::nullopt when it is missing or damaged.
std::optional<std::string> readCacheEntry(const std::string &path) {
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> buffer =
      llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                  /*RequiresNullTerminator=*/false);
  if (!buffer)
    return std::nullopt;
  llvm::StringRef contents = (*buffer)->getBuffer();
  if (!contents.consume_back("\n"))
    return std::nullopt;
  size_t trailer = contents.rfind('\n');
  if (trailer == llvm::StringRef::npos)
    return std::nullopt;
  llvm::StringRef ptx = contents.take_front(trailer);
  llvm::StringRef checksum = contents.drop_front(trailer + 1);
  if (!checksum.consume_front(kTrailerPrefix) || checksum != sha256Hex(ptx))
    return std::nullopt;
  return ptx.str();
}

/// Best effort: a cache that cannot be written only costs a recompile.
void writeCacheEntry(const std::string &dir, const std::string &path,
                     llvm::StringRef ptx) {
  if (llvm::sys::fs::create_directories(dir))
    return;
  int fd;
  llvm::SmallString<256> tmpPath;
  if (llvm::sys::fs::createUniqueFile(path + ".%%%%%%%%.tmp", fd, tmpPath))
    return;
  {
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
    os << ptx << "\n" << kTrailerPrefix << sha256Hex(ptx) << "\n";
    os.close();
    if (os.has_error()) {
      os.clear_error();
      llvm::sys::fs::remove(tmpPath);
      return;
    }
  }
  if (llvm::sys::fs::rename(tmpPath, path))
    llvm::sys::fs::remove(tmpPath);
}

/// Owns an nvrtcProgram.
struct Program {
  nvrtcProgram handle = nullptr;
  ~Program() {
    if (handle)
      nvrtcDestroyProgram(&handle);
  }
};

std::string programLog(nvrtcProgram program) {
  size_t size = 0;
  if (nvrtcGetProgramLogSize(program, &size) != NVRTC_SUCCESS || size == 0)
    return "";
  std::string log(size, '\0');
  if (nvrtcGetProgramLog(program, log.data()) != NVRTC_SUCCESS)
    return "";
  while (!log.empty() && (log.back() == '\0' || log.back() == '\n'))
    log.pop_back();
  return log;
}

} // namespace

std::string nvrtc::version() {
  int major = 0, minor = 0;
  if (nvrtcVersion(&major, &minor) != NVRTC_SUCCESS)
    return "unknown";
  return std::to_string(major) + "." + std::to_string(minor);
}

std::string nvrtc::resolveCacheDir(const CompileOptions &options) {
  if (options.cacheDir == "none")
    return "";
  if (!options.cacheDir.empty())
    return options.cacheDir;
  if (std::optional<std::string> dir =
          llvm::sys::Process::GetEnv("SPARSETX_CACHE_DIR");
      dir && !dir->empty())
    return *dir == "none" ? "" : *dir;
  if (std::optional<std::string> xdg =
          llvm::sys::Process::GetEnv("XDG_CACHE_HOME");
      xdg && !xdg->empty())
    return *xdg + "/sparsetx";
  llvm::SmallString<128> home;
  if (!llvm::sys::path::home_directory(home))
    return "";
  llvm::sys::path::append(home, ".cache", "sparsetx");
  return std::string(home);
}

CacheStats nvrtc::getCacheStats() {
  return CacheStats{numCacheHits.load(), numCompiles.load()};
}

llvm::Expected<std::string>
nvrtc::compileToPTX(llvm::StringRef source, llvm::StringRef name,
                    const CompileOptions &options,
                    llvm::ArrayRef<std::pair<std::string, std::string>> headers) {
  llvm::Expected<std::string> arch = virtualArch(options.arch);
  if (!arch)
    return arch.takeError();

  std::vector<std::string> args = {"--gpu-architecture=" + *arch, "-std=c++17",
                                   "-default-device"};
  for (const std::string &dir : options.includeDirs)
    args.push_back("-I" + dir);
  if (std::string toolkit = toolkitIncludeDir(); !toolkit.empty())
    args.push_back("-I" + toolkit);
  args.insert(args.end(), options.flags.begin(), options.flags.end());

  // The key.
  std::string cacheDir = resolveCacheDir(options);
  std::string cachePath;
  if (!cacheDir.empty()) {
    llvm::SHA256 hasher;
    addField(hasher, "sparsetx-nvrtc-cache-v1");
    addField(hasher, version());
    addField(hasher, *arch);
    addField(hasher, name);
    addField(hasher, source);
    for (const std::string &arg : args)
      addField(hasher, arg);
    for (const auto &[headerName, contents] : headers) {
      addField(hasher, headerName);
      addField(hasher, contents);
    }
    unsigned numFiles = 0;
    bool cacheable = true;
    for (const std::string &dir : options.includeDirs)
      cacheable = cacheable && hashIncludeDir(hasher, dir, numFiles);
    if (cacheable) {
      std::array<uint8_t, 32> digest = hasher.final();
      cachePath = cacheDir + "/" + llvm::toHex(digest, /*LowerCase=*/true) +
                  ".ptx";
      if (std::optional<std::string> cached = readCacheEntry(cachePath)) {
        ++numCacheHits;
        return std::move(*cached);
      }
    }
  }

  Program program;
  std::vector<const char *> headerSources, headerNames;
  for (const auto &[headerName, contents] : headers) {
    headerNames.push_back(headerName.c_str());
    headerSources.push_back(contents.c_str());
  }
  std::string sourceStr = source.str(), nameStr = name.str();
  if (nvrtcResult r = nvrtcCreateProgram(
          &program.handle, sourceStr.c_str(), nameStr.c_str(),
          static_cast<int>(headers.size()), headerSources.data(),
          headerNames.data());
      r != NVRTC_SUCCESS)
    return nvrtcError("nvrtcCreateProgram", r);

  std::vector<const char *> argPtrs;
  for (const std::string &arg : args)
    argPtrs.push_back(arg.c_str());
  ++numCompiles;
  nvrtcResult r = nvrtcCompileProgram(
      program.handle, static_cast<int>(argPtrs.size()), argPtrs.data());
  if (r == NVRTC_ERROR_COMPILATION || r == NVRTC_ERROR_INVALID_OPTION) {
    std::string log = programLog(program.handle);
    if (log.empty())
      log = nvrtcGetErrorString(r);
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "nvrtc: compiling %s failed:\n%s",
                                   nameStr.c_str(), log.c_str());
  }
  if (r != NVRTC_SUCCESS)
    return nvrtcError("nvrtcCompileProgram", r);

  size_t size = 0;
  if (nvrtcResult r = nvrtcGetPTXSize(program.handle, &size);
      r != NVRTC_SUCCESS)
    return nvrtcError("nvrtcGetPTXSize", r);
  std::string ptx(size, '\0');
  if (nvrtcResult r = nvrtcGetPTX(program.handle, ptx.data());
      r != NVRTC_SUCCESS)
    return nvrtcError("nvrtcGetPTX", r);
  while (!ptx.empty() && ptx.back() == '\0')
    ptx.pop_back();

  if (!cachePath.empty())
    writeCacheEntry(cacheDir, cachePath, ptx);
  return ptx;
}
