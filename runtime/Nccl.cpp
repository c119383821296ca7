//===- Nccl.cpp - NCCL collectives, checked -------------------------------===//
//
// libnccl.so.2 is opened with dlopen on first use and its entry points are
// resolved with dlsym (the pattern of Cuda.cpp and Blas.cpp): nothing links
// NCCL, so the tools start on the CPU-only CI machine and say why NCCL is
// missing when asked for it. nccl.h gives the types and, through decltype,
// each pointer's type. SPARSETX_NCCL_LIBRARY names the library explicitly
// (e.g. the copy inside PyTorch's nvidia-nccl wheel).
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Runtime/Nccl.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/Twine.h"

#include <cuda.h>
#include <dlfcn.h>
#include <nccl.h>

#include <cstdlib>
#include <vector>

using namespace sparsetx;
using namespace sparsetx::nccl;

namespace {

#define SPARSETX_NCCL_FUNCTIONS(X)                                             \
  X(getVersion, ncclGetVersion)                                                \
  X(getErrorString, ncclGetErrorString)                                        \
  X(getLastError, ncclGetLastError)                                            \
  X(getUniqueId, ncclGetUniqueId)                                              \
  X(commInitRank, ncclCommInitRank)                                            \
  X(commDestroy, ncclCommDestroy)                                              \
  X(commAbort, ncclCommAbort)                                                  \
  X(commGetAsyncError, ncclCommGetAsyncError)                                  \
  X(allReduce, ncclAllReduce)                                                  \
  X(broadcast, ncclBroadcast)

struct Library {
#define SPARSETX_DECLARE(member, symbol) decltype(&::symbol) member = nullptr;
  SPARSETX_NCCL_FUNCTIONS(SPARSETX_DECLARE)
#undef SPARSETX_DECLARE
  std::string unavailableReason;
};

Library loadLibrary() {
  Library l;
  std::vector<std::string> names;
  if (const char *explicitPath = std::getenv("SPARSETX_NCCL_LIBRARY");
      explicitPath && *explicitPath)
    names.push_back(explicitPath);
  for (const char *name :
       {"libnccl.so.2", "/usr/local/cuda/lib/libnccl.so.2",
        "/usr/local/cuda/lib64/libnccl.so.2",
        "/usr/lib/x86_64-linux-gnu/libnccl.so.2"})
    names.push_back(name);
  void *lib = nullptr;
  std::string why;
  for (const std::string &name : names) {
    // Never dlclose'd, like libcuda: communicators may outlive statics.
    lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib)
      break;
    if (const char *e = dlerror(); e && why.empty())
      why = e;
  }
  if (!lib) {
    l.unavailableReason =
        "libnccl.so.2 not found (" + why +
        "; set SPARSETX_NCCL_LIBRARY to its path if it is installed elsewhere)";
    return l;
  }
#define SPARSETX_RESOLVE(member, symbol)                                       \
  l.member = reinterpret_cast<decltype(l.member)>(dlsym(lib, #symbol));        \
  if (!l.member) {                                                             \
    l.unavailableReason = "libnccl.so.2 has no " #symbol " (NCCL older than 2.13?)"; \
    return l;                                                                  \
  }
  SPARSETX_NCCL_FUNCTIONS(SPARSETX_RESOLVE)
#undef SPARSETX_RESOLVE
  return l;
}

const Library &library() {
  static const Library instance = loadLibrary();
  return instance;
}

llvm::Error ncclError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message.str());
}

llvm::Expected<const Library &> getLibrary() {
  const Library &l = library();
  if (!l.unavailableReason.empty())
    return ncclError("NCCL unavailable: " + l.unavailableReason);
  return l;
}

/// "<call>: <ncclGetErrorString>[: <ncclGetLastError>]".
llvm::Error check(ncclResult_t result, llvm::StringRef call,
                  ncclComm_t comm = nullptr) {
  if (result == ncclSuccess)
    return llvm::Error::success();
  const Library &l = library();
  std::string text = call.str() + ": " + l.getErrorString(result);
  if (const char *last = l.getLastError(comm); last && *last)
    text += std::string(": ") + last;
  return ncclError(text);
}

ncclDataType_t toNccl(DataType type) {
  switch (type) {
  case DataType::Float32:
    return ncclFloat32;
  case DataType::Float64:
    return ncclFloat64;
  case DataType::UInt64:
    return ncclUint64;
  case DataType::BFloat16:
    return ncclBfloat16;
  case DataType::Float16:
    return ncclFloat16;
  }
  return ncclFloat32;
}

ncclRedOp_t toNccl(ReduceOp op) {
  switch (op) {
  case ReduceOp::Sum:
    return ncclSum;
  case ReduceOp::Avg:
    return ncclAvg;
  case ReduceOp::Max:
    return ncclMax;
  case ReduceOp::Min:
    return ncclMin;
  }
  return ncclSum;
}

} // namespace

bool nccl::isAvailable() { return library().unavailableReason.empty(); }

std::string nccl::unavailableReason() { return library().unavailableReason; }

std::string nccl::version() {
  if (!isAvailable())
    return "";
  int v = 0;
  if (library().getVersion(&v) != ncclSuccess)
    return "";
  // 2.9 and later: major * 10000 + minor * 100 + patch.
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) +
         "." + std::to_string(v % 100);
}

int nccl::cudaDeviceCount(std::string *why) {
  // The driver's own count, through a separate dlopen handle of the same
  // library that runtime/Cuda.cpp opens (dlopen counts references).
  auto fail = [&](const std::string &reason) {
    if (why)
      *why = reason;
    return 0;
  };
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *e = dlerror();
    return fail(std::string("libcuda.so.1 not found") +
                (e ? std::string(" (") + e + ")" : ""));
  }
  auto init = reinterpret_cast<decltype(&::cuInit)>(dlsym(lib, "cuInit"));
  auto count = reinterpret_cast<decltype(&::cuDeviceGetCount)>(
      dlsym(lib, "cuDeviceGetCount"));
  if (!init || !count)
    return fail("libcuda.so.1 has no cuInit or cuDeviceGetCount");
  if (CUresult r = init(0); r != CUDA_SUCCESS)
    return fail("cuInit failed (CUresult " + std::to_string(int(r)) + ")");
  int n = 0;
  if (CUresult r = count(&n); r != CUDA_SUCCESS)
    return fail("cuDeviceGetCount failed (CUresult " + std::to_string(int(r)) +
                ")");
  if (n == 0)
    return fail("no CUDA device");
  return n;
}

std::string UniqueId::toHex() const {
  return llvm::toHex(
      llvm::StringRef(bytes.data(), bytes.size()), /*LowerCase=*/true);
}

llvm::Expected<UniqueId> UniqueId::fromHex(llvm::StringRef hex) {
  hex = hex.trim();
  std::string raw;
  if (hex.size() != 2 * sizeof(UniqueId::bytes) ||
      !llvm::tryGetFromHex(hex, raw))
    return ncclError("not an NCCL unique id (expected " +
                     llvm::Twine(2 * sizeof(UniqueId::bytes)) +
                     " hexadecimal digits, got " + llvm::Twine(hex.size()) +
                     " characters)");
  UniqueId id;
  std::copy(raw.begin(), raw.end(), id.bytes.begin());
  return id;
}

llvm::Expected<UniqueId> nccl::createUniqueId() {
  llvm::Expected<const Library &> l = getLibrary();
  if (!l)
    return l.takeError();
  static_assert(sizeof(ncclUniqueId) == sizeof(UniqueId::bytes));
  ncclUniqueId raw;
  if (llvm::Error e = check(l->getUniqueId(&raw), "ncclGetUniqueId"))
    return std::move(e);
  UniqueId id;
  std::copy(raw.internal, raw.internal + sizeof(raw.internal), id.bytes.begin());
  return id;
}

llvm::Expected<std::unique_ptr<Communicator>>
Communicator::create(const UniqueId &id, int rank, int worldSize) {
  llvm::Expected<const Library &> l = getLibrary();
  if (!l)
    return l.takeError();
  if (worldSize < 1 || rank < 0 || rank >= worldSize)
    return ncclError("ncclCommInitRank: rank " + llvm::Twine(rank) +
                     " is not in a world of " + llvm::Twine(worldSize));
  ncclUniqueId raw;
  std::copy(id.bytes.begin(), id.bytes.end(), raw.internal);
  ncclComm_t comm = nullptr;
  if (llvm::Error e = check(l->commInitRank(&comm, worldSize, raw, rank),
                            "ncclCommInitRank"))
    return std::move(e);
  return std::unique_ptr<Communicator>(new Communicator(comm, rank, worldSize));
}

Communicator::~Communicator() {
  if (comm && !aborted.load())
    library().commDestroy(static_cast<ncclComm_t>(comm));
}

llvm::Error Communicator::allReduce(const void *send, void *recv, size_t count,
                                    DataType type, ReduceOp op, void *stream) {
  if (aborted.load())
    return ncclError("ncclAllReduce: the communicator was aborted");
  ncclComm_t c = static_cast<ncclComm_t>(comm);
  return check(library().allReduce(send, recv, count, toNccl(type), toNccl(op),
                                   c, static_cast<cudaStream_t>(stream)),
               "ncclAllReduce", c);
}

llvm::Error Communicator::broadcast(const void *send, void *recv, size_t count,
                                    DataType type, int root, void *stream) {
  if (aborted.load())
    return ncclError("ncclBroadcast: the communicator was aborted");
  ncclComm_t c = static_cast<ncclComm_t>(comm);
  return check(library().broadcast(send, recv, count, toNccl(type), root, c,
                                   static_cast<cudaStream_t>(stream)),
               "ncclBroadcast", c);
}

llvm::Error Communicator::asyncError() {
  if (aborted.load())
    return ncclError("the NCCL communicator was aborted");
  ncclComm_t c = static_cast<ncclComm_t>(comm);
  ncclResult_t state = ncclSuccess;
  if (llvm::Error e = check(library().commGetAsyncError(c, &state),
                            "ncclCommGetAsyncError", c))
    return e;
  if (state == ncclSuccess || state == ncclInProgress)
    return llvm::Error::success();
  return check(state, "NCCL (asynchronous error)", c);
}

void Communicator::abort() {
  if (aborted.exchange(true))
    return;
  library().commAbort(static_cast<ncclComm_t>(comm));
}
