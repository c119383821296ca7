//===- Distributed.cpp - data-parallel training through NCCL --------------===//
//
// The collectives of a data-parallel step are few and large (the gradients,
// once a step) or tiny (the loss, a stop flag, a checksum), so each one is
// enqueued on the backend's stream and waited for at once: the watchdog then
// knows exactly when a collective is pending, and a hang (a rank that died
// or stopped) becomes an error after the timeout instead of a silent wait.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Distributed.h"

#include "sparsetx/Support/AtomicFile.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char **environ;

using namespace sparsetx;
using namespace sparsetx::model;

namespace {

llvm::Error distError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message.str());
}

double now() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// Polls the communicator's asynchronous error and the age of the pending
/// collective; on either, reports, aborts and exits.
class Watchdog {
public:
  Watchdog(int rank, double timeout, FatalHandler onFatal)
      : rank(rank), timeout(timeout), onFatal(std::move(onFatal)) {
    thread = std::thread([this] { loop(); });
  }
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stopping = true;
    }
    wake.notify_all();
    thread.join();
  }
  void setCommunicator(nccl::Communicator *c) { comm.store(c); }
  /// Marks the start and the end of a wait on the other ranks.
  void begin(std::string what) {
    std::lock_guard<std::mutex> lock(mutex);
    pending = std::move(what);
    since = now();
  }
  void end() {
    std::lock_guard<std::mutex> lock(mutex);
    pending.clear();
  }
  /// Whether the watchdog is ending the process (the collective the main
  /// thread waited on returns with an error then, which it must not report).
  bool isFiring() const { return firing.load(); }

private:
  void loop() {
    std::unique_lock<std::mutex> lock(mutex);
    while (!stopping) {
      wake.wait_for(lock, std::chrono::milliseconds(200));
      if (stopping)
        return;
      std::string reason;
      if (nccl::Communicator *c = comm.load())
        if (llvm::Error e = c->asyncError())
          reason = llvm::formatv("NCCL failed{0}: {1} (another rank probably "
                                 "died)",
                                 pending.empty() ? "" : " during " + pending,
                                 llvm::toString(std::move(e)));
      if (reason.empty() && !pending.empty() && now() - since > timeout)
        reason = llvm::formatv(
            "{0} did not complete within {1} s (--nccl-timeout): another rank "
            "died, hangs or is much slower; stopping every rank",
            pending, timeout);
      if (!reason.empty()) {
        lock.unlock();
        fatal(reason);
      }
    }
  }

  [[noreturn]] void fatal(const std::string &reason) {
    firing = true;
    if (onFatal)
      onFatal(reason);
    // ncclCommAbort lets the kernels that wait on a dead peer return; if it
    // hangs itself, the alarm ends the process.
    alarm(30);
    if (nccl::Communicator *c = comm.load())
      c->abort();
    std::_Exit(1);
  }

  int rank;
  double timeout;
  FatalHandler onFatal;
  std::atomic<nccl::Communicator *> comm{nullptr};
  std::atomic<bool> firing{false};
  std::mutex mutex;
  std::condition_variable wake;
  bool stopping = false;
  std::string pending;
  double since = 0;
  std::thread thread;
};

class NcclDataParallel final : public DataParallel {
public:
  NcclDataParallel(Backend &backend, int rank, int world, double timeout,
                   FatalHandler onFatal)
      : backend(backend), rankId(rank), world(world),
        watchdog(rank, timeout, std::move(onFatal)) {}
  ~NcclDataParallel() override {
    watchdog.setCommunicator(nullptr);
    comm.reset();
  }

  llvm::Error init(const nccl::UniqueId &id) {
    scratch = backend.allocate(64);
    watchdog.begin(llvm::formatv("joining the NCCL communicator of {0} ranks "
                                 "(ncclCommInitRank)",
                                 world));
    llvm::Expected<std::unique_ptr<nccl::Communicator>> c =
        nccl::Communicator::create(id, rankId, world);
    watchdog.end();
    if (!c)
      return c.takeError();
    comm = std::move(*c);
    watchdog.setCommunicator(comm.get());
    return backend.takeError();
  }

  int rank() const override { return rankId; }
  int worldSize() const override { return world; }

  llvm::Error averageFloats(float *data, int64_t n) override {
    return collective("ncclAllReduce of the gradients", [&] {
      return comm->allReduce(data, data, n, nccl::DataType::Float32,
                             nccl::ReduceOp::Avg);
    });
  }
  llvm::Error broadcastFloats(float *data, int64_t n) override {
    return collective("ncclBroadcast of the parameters", [&] {
      return comm->broadcast(data, data, n, nccl::DataType::Float32, 0);
    });
  }
  llvm::Error sumDoubles(llvm::MutableArrayRef<double> values) override {
    if (values.size() * 8 > static_cast<size_t>(scratch.bytes()))
      return distError("sumDoubles: too many values");
    backend.upload(scratch.data(), values.data(), values.size() * 8);
    if (llvm::Error e = collective("ncclAllReduce of the losses", [&] {
          return comm->allReduce(scratch.data(), scratch.data(), values.size(),
                                 nccl::DataType::Float64, nccl::ReduceOp::Sum);
        }))
      return e;
    backend.download(values.data(), scratch.data(), values.size() * 8);
    return backend.takeError();
  }
  llvm::Expected<bool> sameOnAllRanks(uint64_t value) override {
    // max(v) and max(~v) = ~min(v): equal everywhere iff max == min.
    uint64_t pair[2] = {value, ~value};
    backend.upload(scratch.data(), pair, sizeof pair);
    if (llvm::Error e = collective("ncclAllReduce of the checksums", [&] {
          return comm->allReduce(scratch.data(), scratch.data(), 2,
                                 nccl::DataType::UInt64, nccl::ReduceOp::Max);
        }))
      return std::move(e);
    backend.download(pair, scratch.data(), sizeof pair);
    if (llvm::Error e = backend.takeError())
      return std::move(e);
    return pair[0] == ~pair[1];
  }

private:
  /// Enqueues, then waits for the device under the watchdog.
  llvm::Error collective(llvm::StringRef what,
                         llvm::function_ref<llvm::Error()> enqueue) {
    if (llvm::Error e = backend.takeError())
      return e;
    watchdog.begin(what.str());
    llvm::Error e = enqueue();
    if (!e) {
      backend.synchronize();
      e = backend.takeError();
    }
    // The watchdog aborted the communicator: it reports and ends the process.
    while (watchdog.isFiring())
      std::this_thread::sleep_for(std::chrono::seconds(1));
    watchdog.end();
    return e;
  }

  Backend &backend;
  int rankId, world;
  Watchdog watchdog;
  std::unique_ptr<nccl::Communicator> comm;
  Buffer scratch;
};

} // namespace

llvm::Expected<std::unique_ptr<DataParallel>>
sparsetx::model::createNcclDataParallel(Backend &backend,
                                        const nccl::UniqueId &id, int rank,
                                        int worldSize, double timeoutSeconds,
                                        FatalHandler onFatal) {
  if (backend.name() != "cuda")
    return distError("data parallelism needs the CUDA backend, not '" +
                     backend.name() + "'");
  auto parallel = std::make_unique<NcclDataParallel>(
      backend, rank, worldSize, timeoutSeconds, std::move(onFatal));
  if (llvm::Error e = parallel->init(id))
    return std::move(e);
  return std::unique_ptr<DataParallel>(std::move(parallel));
}

//===----------------------------------------------------------------------===//
// The id file of launcher-started ranks
//===----------------------------------------------------------------------===//

llvm::Error sparsetx::model::writeIdFile(llvm::StringRef path,
                                         const nccl::UniqueId &id) {
  return writeFileAtomically(path, id.toHex() + "\n");
}

llvm::Expected<nccl::UniqueId>
sparsetx::model::waitForIdFile(llvm::StringRef path, double timeoutSeconds) {
  const double start = now();
  while (true) {
    if (llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> file =
            llvm::MemoryBuffer::getFile(path)) {
      llvm::Expected<nccl::UniqueId> id =
          nccl::UniqueId::fromHex((*file)->getBuffer());
      if (!id)
        return distError(path + ": " + llvm::toString(id.takeError()));
      return id;
    }
    if (now() - start > timeoutSeconds)
      return distError(llvm::formatv(
          "{0}: rank 0 did not write the NCCL id file within {1} s "
          "(--nccl-timeout); is rank 0 running, and is the path shared?",
          path, timeoutSeconds));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

//===----------------------------------------------------------------------===//
// Spawned ranks
//===----------------------------------------------------------------------===//

llvm::Expected<std::vector<pid_t>>
sparsetx::model::spawnRanks(llvm::ArrayRef<std::string> args, int worldSize,
                            const nccl::UniqueId &id) {
  char exe[4096];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len <= 0)
    return distError(llvm::formatv("cannot find this program (/proc/self/exe): "
                                   "{0}",
                                   std::strerror(errno)));
  exe[len] = 0;
  // The environment, with the id and this process's pid.
  std::vector<std::string> env;
  for (char **e = environ; *e; ++e)
    if (!llvm::StringRef(*e).starts_with(std::string(kSpawnIdVariable) + "=") &&
        !llvm::StringRef(*e).starts_with("SPARSETX_LAUNCHER_PID="))
      env.push_back(*e);
  env.push_back(std::string(kSpawnIdVariable) + "=" + id.toHex());
  env.push_back("SPARSETX_LAUNCHER_PID=" + std::to_string(getpid()));
  std::vector<char *> envp;
  for (std::string &e : env)
    envp.push_back(e.data());
  envp.push_back(nullptr);

  std::vector<pid_t> pids;
  for (int r = 1; r < worldSize; ++r) {
    std::vector<std::string> argv{exe};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back("--rank=" + std::to_string(r));
    argv.push_back("--world=" + std::to_string(worldSize));
    std::vector<char *> argp;
    for (std::string &a : argv)
      argp.push_back(a.data());
    argp.push_back(nullptr);
    pid_t pid = 0;
    if (int err = posix_spawn(&pid, exe, nullptr, nullptr, argp.data(),
                              envp.data())) {
      for (pid_t p : pids)
        kill(p, SIGKILL);
      return distError(llvm::formatv("cannot start rank {0} ({1}): {2}", r,
                                     exe, std::strerror(err)));
    }
    pids.push_back(pid);
  }
  return pids;
}

struct RankSupervisor::Impl {
  std::vector<pid_t> pids;
  std::vector<bool> reaped;
  std::function<void(const std::string &)> onFailure;
  std::mutex mutex;
  std::atomic<bool> stop{false};
  std::string firstFailure;
  std::thread thread;

  /// Reaps rank `i` if it ended (blocking or not); returns a failure line.
  std::string reap(size_t i, bool block) {
    int status = 0;
    pid_t r = waitpid(pids[i], &status, block ? 0 : WNOHANG);
    if (r != pids[i])
      return "";
    reaped[i] = true;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
      return "";
    std::string how =
        WIFEXITED(status)
            ? llvm::formatv("exited with status {0}", WEXITSTATUS(status)).str()
            : llvm::formatv("was killed by signal {0} ({1})", WTERMSIG(status),
                            strsignal(WTERMSIG(status)))
                  .str();
    return llvm::formatv("rank {0} (pid {1}) {2}", i + 1, pids[i], how);
  }

  void loop() {
    while (!stop.load()) {
      std::string failure;
      {
        std::lock_guard<std::mutex> lock(mutex);
        for (size_t i = 0; i < pids.size() && failure.empty(); ++i)
          if (!reaped[i])
            failure = reap(i, false);
      }
      if (!failure.empty()) {
        firstFailure = failure;
        onFailure(failure);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
};

RankSupervisor::RankSupervisor(std::vector<pid_t> pids,
                               std::function<void(const std::string &)> onFailure)
    : impl(std::make_unique<Impl>()) {
  impl->pids = std::move(pids);
  impl->reaped.assign(impl->pids.size(), false);
  impl->onFailure = std::move(onFailure);
  impl->thread = std::thread([this] { impl->loop(); });
}

RankSupervisor::~RankSupervisor() {
  impl->stop = true;
  if (impl->thread.joinable())
    impl->thread.join();
}

void RankSupervisor::killRanks() {
  // No lock: called from the failure path too, which may hold it.
  for (size_t i = 0; i < impl->pids.size(); ++i)
    if (!impl->reaped[i])
      kill(impl->pids[i], SIGKILL);
}

std::string RankSupervisor::waitRanks() {
  impl->stop = true;
  if (impl->thread.joinable())
    impl->thread.join();
  std::string failure = impl->firstFailure;
  for (size_t i = 0; i < impl->pids.size(); ++i)
    if (!impl->reaped[i]) {
      std::string f = impl->reap(i, true);
      if (failure.empty())
        failure = f;
    }
  return failure;
}

namespace {
char parentDiedMessage[160];
size_t parentDiedLength = 0;
void onParentDied(int) {
  ssize_t ignored = write(2, parentDiedMessage, parentDiedLength);
  (void)ignored;
  _exit(1);
}
} // namespace

void sparsetx::model::exitWithParent(int rank) {
  parentDiedLength = static_cast<size_t>(std::snprintf(
      parentDiedMessage, sizeof parentDiedMessage,
      "sparsetx-run: error: rank %d: rank 0, which started it, has died; "
      "stopping\n",
      rank));
  std::signal(SIGUSR2, onParentDied);
  prctl(PR_SET_PDEATHSIG, SIGUSR2);
  // The parent may have died before prctl.
  if (const char *p = std::getenv("SPARSETX_LAUNCHER_PID"))
    if (std::atoi(p) != getppid())
      onParentDied(0);
}
