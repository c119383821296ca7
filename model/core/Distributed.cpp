//===- Distributed.cpp - data-parallel training through NCCL --------------===//
//
// Every collective runs on a stream of the communicator's own, ordered after
// the backend's queued work by an event (so one communicator's collectives
// keep one stream and one order). The gradients' buckets are started during
// the backward and waited for after it (startAllReduce, finishAllReduces);
// the other collectives are tiny (the loss, a stop flag, a checksum) or rare
// (the broadcast of the parameters) and are waited for at once. Every wait
// runs under the watchdog, which then knows exactly when a collective is
// pending, so that a hang (a rank that died or stopped) becomes an error
// after the timeout instead of a silent wait.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Distributed.h"

#include "sparsetx/Runtime/Cuda.h"
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
    if (ready)
      cuda::destroyEvent(ready);
    cuda::destroyStream(commStream);
  }

  llvm::Error init(const nccl::UniqueId &id) {
    scratch = backend.allocate(64);
    llvm::Expected<cuda::Stream> st = cuda::createStream();
    if (!st)
      return st.takeError();
    commStream = *st;
    llvm::Expected<cuda::Event> ev = cuda::createEvent();
    if (!ev)
      return ev.takeError();
    ready = *ev;
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

  llvm::Error startAllReduce(void *data, int64_t n, Precision type,
                             bool mean) override {
    if (llvm::Error e = backend.takeError())
      return e;
    // The watchdog times the buckets from the first one's start to the end
    // of finishAllReduces(): a hang anywhere between is caught.
    if (!gradientsPending) {
      watchdog.begin(llvm::formatv("ncclAllReduce of the gradients ({0})",
                                   toString(type)));
      gradientsPending = true;
    }
    if (llvm::Error e = afterBackend())
      return e;
    nccl::DataType t = type == Precision::BF16   ? nccl::DataType::BFloat16
                       : type == Precision::FP16 ? nccl::DataType::Float16
                                                 : nccl::DataType::Float32;
    return comm->allReduce(data, data, static_cast<size_t>(n), t,
                           mean ? nccl::ReduceOp::Avg : nccl::ReduceOp::Sum,
                           commStream);
  }
  llvm::Error finishAllReduces() override {
    if (!gradientsPending)
      return llvm::Error::success();
    llvm::Error e = cuda::synchronizeStream(commStream);
    // The watchdog aborted the communicator: it reports and ends the process.
    while (watchdog.isFiring())
      std::this_thread::sleep_for(std::chrono::seconds(1));
    watchdog.end();
    gradientsPending = false;
    return e;
  }
  llvm::Error broadcastFloats(float *data, int64_t n) override {
    return collective("ncclBroadcast of the parameters", [&] {
      return comm->broadcast(data, data, n, nccl::DataType::Float32, 0,
                             commStream);
    });
  }
  llvm::Error sumDoubles(llvm::MutableArrayRef<double> values) override {
    if (values.size() * 8 > static_cast<size_t>(scratch.bytes()))
      return distError("sumDoubles: too many values");
    if (llvm::Error e = collective("ncclAllReduce of the losses", [&] {
          backend.upload(scratch.data(), values.data(), values.size() * 8);
          return comm->allReduce(scratch.data(), scratch.data(), values.size(),
                                 nccl::DataType::Float64, nccl::ReduceOp::Sum,
                                 commStream);
        }))
      return e;
    backend.download(values.data(), scratch.data(), values.size() * 8);
    return backend.takeError();
  }
  llvm::Expected<bool> sameOnAllRanks(uint64_t value) override {
    // max(v) and max(~v) = ~min(v): equal everywhere iff max == min.
    uint64_t pair[2] = {value, ~value};
    if (llvm::Error e = collective("ncclAllReduce of the checksums", [&] {
          backend.upload(scratch.data(), pair, sizeof pair);
          return comm->allReduce(scratch.data(), scratch.data(), 2,
                                 nccl::DataType::UInt64, nccl::ReduceOp::Max,
                                 commStream);
        }))
      return std::move(e);
    backend.download(pair, scratch.data(), sizeof pair);
    if (llvm::Error e = backend.takeError())
      return std::move(e);
    return pair[0] == ~pair[1];
  }

private:
  /// The communicator's stream waits for the work the backend has queued
  /// so far (the gradients, parameters or values to send).
  llvm::Error afterBackend() {
    if (llvm::Error e = cuda::recordEvent(ready, backend.nativeStream()))
      return e;
    return cuda::waitForEvent(commStream, ready);
  }

  /// Enqueues after the backend's work, then waits for it under the
  /// watchdog.
  llvm::Error collective(llvm::StringRef what,
                         llvm::function_ref<llvm::Error()> enqueue) {
    if (llvm::Error e = backend.takeError())
      return e;
    if (gradientsPending)
      return distError("a collective (" + what +
                       ") was started while the gradients' all-reduce was "
                       "pending; finishAllReduces() comes first");
    watchdog.begin(what.str());
    llvm::Error e = afterBackend();
    if (!e)
      e = enqueue();
    if (!e)
      e = cuda::synchronizeStream(commStream);
    if (!e)
      e = backend.takeError();
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
  /// The collectives' stream, and the event that orders it after the
  /// backend's.
  cuda::Stream commStream = nullptr;
  cuda::Event ready = nullptr;
  /// Gradient buckets were started and not yet waited for.
  bool gradientsPending = false;
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
