//===- Nccl.h - NCCL collectives, checked ------------------------*- C++ -*-===//
//
// A thin, checked layer over NCCL for data-parallel training. libnccl.so.2 is
// loaded with dlopen at first use (as libcuda and cuBLASLt are), so every
// binary starts on a machine without NCCL and reports why it is missing. A
// failing call becomes an llvm::Error naming the call and NCCL's error
// string, plus NCCL's last error message where it has one (e.g.
// "ncclCommInitRank: unhandled system error (run with NCCL_DEBUG=INFO for
// details): ...").
//
// Collectives are enqueued on a CUDA stream of the current context (the
// legacy default stream by default, the one the CUDA backend uses), so they
// order themselves after the backend's work.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_RUNTIME_NCCL_H
#define SPARSETX_RUNTIME_NCCL_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <array>
#include <atomic>
#include <cstddef>
#include <memory>
#include <string>

namespace sparsetx::nccl {

/// True when libnccl.so.2 loads and has every entry point used here.
bool isAvailable();
/// Why isAvailable() is false ("libnccl.so.2 not found (...)").
std::string unavailableReason();
/// NCCL's version as "2.28.9" (empty when unavailable).
std::string version();

/// CUDA devices the driver sees (0 with the reason in `why` when there is no
/// driver or device).
int cudaDeviceCount(std::string *why = nullptr);

/// The bootstrap handle rank 0 creates and every rank passes to
/// Communicator::create (ncclUniqueId: 128 opaque bytes).
struct UniqueId {
  std::array<char, 128> bytes{};
  /// 256 hexadecimal digits, for files and environment variables.
  std::string toHex() const;
  static llvm::Expected<UniqueId> fromHex(llvm::StringRef hex);
};
llvm::Expected<UniqueId> createUniqueId();

/// BFloat16 and Float16 (the gradients' 16-bit all-reduce) need NCCL 2.10+
/// for BFloat16; every partial sum of the ring is rounded to the type.
enum class DataType { Float32, Float64, UInt64, BFloat16, Float16 };
enum class ReduceOp { Sum, Avg, Max, Min };

/// One rank's member of a communicator over `worldSize` ranks, on the
/// current CUDA context's device. Destroyed (ncclCommDestroy) with the
/// object unless aborted.
class Communicator {
public:
  /// ncclCommInitRank: blocks until every rank has joined.
  static llvm::Expected<std::unique_ptr<Communicator>>
  create(const UniqueId &id, int rank, int worldSize);
  ~Communicator();
  Communicator(const Communicator &) = delete;
  Communicator &operator=(const Communicator &) = delete;

  int getRank() const { return rank; }
  int getWorldSize() const { return worldSize; }

  /// In place when send == recv. Device pointers; `stream` a CUstream (null:
  /// the legacy default stream). Enqueued, not waited for.
  llvm::Error allReduce(const void *send, void *recv, size_t count,
                        DataType type, ReduceOp op, void *stream = nullptr);
  llvm::Error broadcast(const void *send, void *recv, size_t count,
                        DataType type, int root, void *stream = nullptr);

  /// ncclCommGetAsyncError: success, or the error a collective ran into
  /// (a peer that died, a network failure). Safe from another thread.
  llvm::Error asyncError();
  /// ncclCommAbort: stops the communicator's pending work so that waiting
  /// calls return; the communicator is unusable afterwards. Safe from
  /// another thread (the watchdog's way out of a hang).
  void abort();
  bool isAborted() const { return aborted.load(); }

private:
  Communicator(void *comm, int rank, int worldSize)
      : comm(comm), rank(rank), worldSize(worldSize) {}
  void *comm = nullptr;
  int rank = 0, worldSize = 1;
  std::atomic<bool> aborted{false};
};

} // namespace sparsetx::nccl

#endif // SPARSETX_RUNTIME_NCCL_H
