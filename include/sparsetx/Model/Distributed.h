//===- Distributed.h - data-parallel training through NCCL ------*- C++ -*-===//
//
// One process per GPU, each with a replica of the model (Trainer.h's
// DataParallel says what the trainer asks of the others):
//  - NcclDataParallel: the collectives on a stream of their own, ordered
//    after the CUDA backend's stream by an event (the gradients' buckets run
//    there while the backward goes on), each waited for under a watchdog
//    thread that polls ncclCommGetAsyncError and, when a collective fails or
//    does not complete within the timeout (a rank died or hangs), reports
//    it, aborts the communicator (ncclCommAbort) and ends the process with
//    status 1;
//  - the launch: a process that starts N-1 copies of itself (same arguments
//    plus the hidden --rank/--world options, the bootstrap id in the
//    environment) and supervises them, or ranks started by a launcher
//    (mpirun, a batch system) that meet through an id file.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_MODEL_DISTRIBUTED_H
#define SPARSETX_MODEL_DISTRIBUTED_H

#include "sparsetx/Model/Trainer.h"
#include "sparsetx/Runtime/Nccl.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <functional>
#include <memory>
#include <string>
#include <sys/types.h>
#include <vector>

namespace sparsetx::model {

/// Called by the watchdog, on its thread, with the reason, before it aborts
/// the communicator and ends the process (status 1): reports the error and
/// stops what the process started (the ranks it spawned).
using FatalHandler = std::function<void(const std::string &reason)>;

/// Joins the communicator of `worldSize` ranks as `rank` (ncclCommInitRank,
/// on the backend's current device) and returns the trainer's view of it.
/// Every collective, and the initialization, must complete within
/// `timeoutSeconds`.
llvm::Expected<std::unique_ptr<DataParallel>>
createNcclDataParallel(Backend &backend, const nccl::UniqueId &id, int rank,
                       int worldSize, double timeoutSeconds,
                       FatalHandler onFatal);

/// Rank 0 of a launcher-started run writes the bootstrap id to `path`
/// (atomically); the other ranks wait for it, up to `timeoutSeconds`.
llvm::Error writeIdFile(llvm::StringRef path, const nccl::UniqueId &id);
llvm::Expected<nccl::UniqueId> waitForIdFile(llvm::StringRef path,
                                             double timeoutSeconds);

/// The environment variable that carries the id to spawned ranks.
inline constexpr const char *kSpawnIdVariable = "SPARSETX_NCCL_ID";

/// Ranks 1..worldSize-1 of a one-host run: /proc/self/exe with `args`
/// (argv[1..]) plus `--rank=R --world=N`, and the id in the environment.
/// Returns their process ids, in rank order.
llvm::Expected<std::vector<pid_t>> spawnRanks(llvm::ArrayRef<std::string> args,
                                              int worldSize,
                                              const nccl::UniqueId &id);

/// Watches spawned ranks from a thread: when one exits with a non-zero
/// status or is killed, calls `onFailure` with a line naming it (the
/// handler stops the rest and ends the process). killRanks sends SIGKILL to
/// those not yet reaped; waitRanks waits for all of them (after training)
/// and returns the first failure's line, or "".
class RankSupervisor {
public:
  RankSupervisor(std::vector<pid_t> pids,
                 std::function<void(const std::string &)> onFailure);
  ~RankSupervisor();
  void killRanks();
  std::string waitRanks();

private:
  struct Impl;
  std::unique_ptr<Impl> impl;
};

/// In a spawned rank: ends this process with status 1 and a message when its
/// parent (rank 0) dies (PR_SET_PDEATHSIG).
void exitWithParent(int rank);

} // namespace sparsetx::model

#endif // SPARSETX_MODEL_DISTRIBUTED_H
