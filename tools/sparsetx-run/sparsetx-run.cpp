//===- sparsetx-run.cpp - train, evaluate, sample and show a Sparse Transformer ===//
//
//   sparsetx-run --pattern P.sp [options] train    trains (or --resume-s) a
//                                                   model, writing metrics, a
//                                                   loss curve, checkpoints
//                                                   and samples into --out
//   sparsetx-run [--out DIR | --checkpoint F] eval  bits per byte/dim on the
//                                                   valid and test splits
//   sparsetx-run [--out DIR | --checkpoint F] sample  text, PNG or WAV samples
//   sparsetx-run --pattern P.sp show               the pattern as a picture
//   sparsetx-run --pattern P.sp [options] bench    training step time,
//                                                   tokens/s and memory
//
// Every error names what is wrong and where (file:line:col in .sp files,
// path and offset in data and checkpoint files) and exits with status 1; no
// output file is ever replaced by a partial one.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Analysis/PatternPicture.h"
#include "sparsetx/Codegen/AttentionPlan.h"
#include "sparsetx/Model/Backend.h"
#include "sparsetx/Model/Checkpoint.h"
#include "sparsetx/Model/Config.h"
#include "sparsetx/Model/Cpu/Ops.h"
#include "sparsetx/Model/Data/AudioLoader.h"
#include "sparsetx/Model/Data/ImageLoader.h"
#include "sparsetx/Model/Data/TextLoader.h"
#include "sparsetx/Model/Distributed.h"
#include "sparsetx/Model/GradientReducer.h"
#include "sparsetx/Model/Trainer.h"
#include "sparsetx/Model/Transformer.h"
#include "sparsetx/Runtime/Cuda.h"
#include "sparsetx/Runtime/Nccl.h"
#include "sparsetx/Support/AtomicFile.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Parallel.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Threading.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <optional>
#include <unistd.h>

using namespace sparsetx;
using namespace sparsetx::model;
namespace cl = llvm::cl;

namespace {

cl::OptionCategory category("sparsetx-run options");

cl::opt<std::string> command(cl::Positional, cl::desc("<train|eval|sample|show|bench>"),
                             cl::Required, cl::cat(category));
cl::opt<std::string> patternFile("pattern", cl::desc("The attention pattern (.sp)"),
                                 cl::value_desc("file"), cl::cat(category));
cl::list<std::string> defines("D", cl::desc("Override a pattern parameter (-D l=28)"),
                              cl::value_desc("NAME=VALUE"), cl::Prefix,
                              cl::ZeroOrMore, cl::cat(category));
cl::opt<std::string> patternName("pattern-name",
                                 cl::desc("Which pattern of a file with several"),
                                 cl::cat(category));
cl::opt<std::string> presetName("preset",
                                cl::desc("tiny (default), enwik8, cifar10, imagenet64"),
                                cl::init("tiny"), cl::cat(category));
cl::opt<std::string> dataSource(
    "data",
    cl::desc("gcide (default), fashion-mnist, or a path: a raw byte file "
             "(enwik8, any text), a CIFAR-10 or Fashion-MNIST directory, a .wav"),
    cl::init("gcide"), cl::cat(category));
cl::opt<std::string> outDir("out", cl::desc("Run directory (default runs/<pattern>-<preset>)"),
                            cl::value_desc("dir"), cl::cat(category));
cl::opt<bool> resume("resume", cl::desc("Continue training from <out>/checkpoint.bin"),
                     cl::cat(category));
cl::opt<std::string> checkpointFile(
    "checkpoint", cl::desc("Checkpoint for eval/sample (default <out>/checkpoint.bin)"),
    cl::value_desc("file"), cl::cat(category));
cl::opt<std::string> precisionName(
    "precision",
    cl::desc("fp32, bf16 or fp16 (default: bf16 on cuda, fp32 on cpu)"),
    cl::cat(category));
cl::opt<bool> deterministic(
    "deterministic",
    cl::desc("Bit-reproducible GPU attention backward (slower)"),
    cl::cat(category));
cl::opt<double> lossScaleOpt("loss-scale",
                             cl::desc("fp16: the first loss scale (65536)"),
                             cl::cat(category));
cl::opt<std::string> benchJson("json",
                               cl::desc("bench: also write the figures as JSON"),
                               cl::cat(category));
cl::opt<std::string> device("device", cl::desc("cpu, cuda or auto (default: cuda when there is a GPU)"),
                            cl::init("auto"), cl::cat(category));
cl::opt<std::string> metricsFormat("metrics", cl::desc("csv (default) or jsonl"),
                                   cl::init("csv"), cl::cat(category));

// Overrides of the preset.
cl::opt<int64_t> steps("steps", cl::desc("Training steps"), cl::cat(category));
cl::opt<int64_t> seqLen("seq-len", cl::desc("Sequence length n (text, audio)"),
                        cl::cat(category));
cl::opt<int64_t> batch("batch", cl::desc("Sequences per step"), cl::cat(category));
cl::opt<double> lr("lr", cl::desc("Peak learning rate"), cl::cat(category));
cl::opt<int64_t> warmup("warmup", cl::desc("Warmup steps"), cl::cat(category));
cl::opt<uint64_t> seed("seed", cl::desc("Seed of initialization, data order, dropout"),
                       cl::cat(category));
cl::opt<int64_t> layers("layers", cl::desc("Residual blocks"), cl::cat(category));
cl::opt<int64_t> dModel("d-model", cl::desc("Model width d"), cl::cat(category));
cl::opt<int64_t> heads("heads", cl::desc("Attention heads"), cl::cat(category));
cl::opt<double> dropout("dropout", cl::desc("Residual dropout"), cl::cat(category));
cl::opt<bool> recompute("recompute", cl::desc("Recompute attention and FF in backward"),
                        cl::cat(category));
cl::opt<int64_t> embedStride("embed-stride",
                             cl::desc("Width of the attention embeddings' matrix "
                                      "(default: the pattern's l, else sqrt(n))"),
                             cl::cat(category));
cl::opt<int64_t> evalEvery("eval-every", cl::desc("Evaluate every N steps"),
                           cl::cat(category));
cl::opt<int64_t> evalTokens("eval-tokens",
                            cl::desc("Validation tokens per evaluation (eval: 0 = all)"),
                            cl::cat(category));
cl::opt<int64_t> saveEvery("save-every", cl::desc("Checkpoint every N steps"),
                           cl::cat(category));
// Several GPUs (train and bench).
cl::opt<int> gpus("gpus",
                  cl::desc("Train on N GPUs of this host, one process each "
                           "(data parallel through NCCL)"),
                  cl::cat(category));
cl::opt<double> ncclTimeout(
    "nccl-timeout",
    cl::desc("Seconds a collective may wait for the other GPUs before every "
             "rank stops with an error (default 300)"),
    cl::init(300.0), cl::cat(category));
cl::opt<int64_t> checkEvery(
    "check-every",
    cl::desc("Compare the parameters across GPUs every N steps (0: never)"),
    cl::init(100), cl::cat(category));
cl::opt<std::string> allreduceType(
    "allreduce",
    cl::desc("Element type of the gradients' all-reduce: fp32, bf16 or fp16 "
             "(default: the --precision)"),
    cl::cat(category));
cl::opt<std::string> bucketMb(
    "bucket-mb",
    cl::desc("MiB of gradients per all-reduce, started during the backward "
             "(default 25; 0: one all-reduce after the backward)"),
    cl::cat(category));
// Set by the process that spawns the ranks of --gpus N.
cl::opt<int> rankOpt("rank", cl::Hidden, cl::init(-1), cl::cat(category));
cl::opt<int> worldOpt("world", cl::Hidden, cl::init(0), cl::cat(category));

cl::opt<int64_t> threads("threads", cl::desc("Worker threads (default: all cores)"),
                         cl::init(0), cl::cat(category));

// Sampling.
cl::opt<int64_t> sampleCount("samples", cl::desc("Samples to draw (sample; "
                                                 "train draws them at the end)"),
                             cl::init(-1), cl::cat(category));
cl::opt<double> temperature("temperature", cl::desc("Sampling temperature"),
                            cl::init(1.0), cl::cat(category));
cl::opt<int64_t> topK("top-k", cl::desc("Sample among the k most likely bytes"),
                      cl::init(0), cl::cat(category));
cl::opt<std::string> prompt("prompt", cl::desc("Text every sample starts with"),
                            cl::cat(category));
cl::opt<int64_t> sampleLength("length", cl::desc("Sample length (default n)"),
                              cl::init(0), cl::cat(category));

volatile std::sig_atomic_t interrupted = 0;
void onInterrupt(int) { interrupted = 1; }

/// This process's place in a data-parallel run (Distributed.h).
struct ParallelRun {
  bool enabled = false;
  int rank = 0, world = 1, device = 0;
  /// How the ranks were started, for messages: "--gpus N" or the variables.
  std::string how;
  std::unique_ptr<RankSupervisor> supervisor; // rank 0 of --gpus N
  std::unique_ptr<DataParallel> dp;
  GradientSync sync; // --allreduce, --bucket-mb
};
ParallelRun parallelRun;
std::vector<std::string> commandLine; // argv[1..], for spawned ranks

std::string rankPrefix() {
  return parallelRun.enabled && parallelRun.rank > 0
             ? "rank " + std::to_string(parallelRun.rank) + ": "
             : "";
}

[[noreturn]] void die(const llvm::Twine &message) {
  llvm::WithColor::error(llvm::errs(), "sparsetx-run")
      << rankPrefix() << message << "\n";
  if (parallelRun.supervisor)
    parallelRun.supervisor->killRanks();
  // With other ranks, no destructors: a communicator whose peers are gone
  // may not come apart cleanly.
  if (parallelRun.enabled)
    std::_Exit(1);
  std::exit(1);
}

template <typename T> T orDie(llvm::Expected<T> value) {
  if (!value)
    die(llvm::toString(value.takeError()));
  return std::move(*value);
}

void orDie(llvm::Error error) {
  if (error)
    die(llvm::toString(std::move(error)));
}

//===----------------------------------------------------------------------===//
// Data and pattern
//===----------------------------------------------------------------------===//

struct LoadedData {
  data::Dataset dataset;
  DataSpec spec;
};

llvm::Expected<LoadedData> loadData(llvm::StringRef source, int64_t audioRate) {
  LoadedData result;
  result.spec.source = source.str();
  // Paths are saved absolute, so that a run resumes from any directory.
  if (source != "gcide" && source != "fashion-mnist") {
    llvm::SmallString<256> absolute(source);
    if (!llvm::sys::fs::make_absolute(absolute))
      result.spec.source = std::string(absolute);
  }
  llvm::Expected<data::Dataset> dataset = [&]() -> llvm::Expected<data::Dataset> {
    if (source == "gcide") {
      if (!llvm::sys::fs::exists(data::kDefaultGcidePath))
        return llvm::createStringError(
            llvm::inconvertibleErrorCode(),
            "the GCIDE dictionary is not installed (%s is missing): install "
            "Debian's dict-gcide (scripts/bootstrap.sh does) or pass --data FILE",
            data::kDefaultGcidePath);
      return data::loadGcide();
    }
    if (source == "fashion-mnist") {
      if (!llvm::sys::fs::is_directory(data::kDefaultFashionMnistDir))
        return llvm::createStringError(
            llvm::inconvertibleErrorCode(),
            "Fashion-MNIST is not installed (%s is missing): install Debian's "
            "dataset-fashion-mnist (scripts/bootstrap.sh does) or pass --data DIR",
            data::kDefaultFashionMnistDir);
      return data::loadFashionMnist();
    }
    if (llvm::sys::fs::is_directory(source)) {
      llvm::SmallString<256> cifar(source);
      llvm::sys::path::append(cifar, "data_batch_1.bin");
      if (llvm::sys::fs::exists(cifar))
        return data::loadCifar10(source);
      return data::loadFashionMnist(source);
    }
    if (!llvm::sys::fs::exists(source))
      return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                     "%s: no such file or directory",
                                     source.str().c_str());
    // A copy of the GCIDE dictionary elsewhere (the GPU machine has none).
    if (llvm::StringRef(source).ends_with(".dict.dz"))
      return data::loadGcide(source);
    if (llvm::StringRef(source).ends_with_insensitive(".wav"))
      return data::loadWav(source, audioRate);
    return data::loadRawBytes(source);
  }();
  if (!dataset)
    return dataset.takeError();
  result.dataset = std::move(*dataset);
  const data::DataInfo &info = result.dataset.info();
  result.spec.kind = info.kind;
  result.spec.imageHeight = info.height;
  result.spec.imageWidth = info.width;
  result.spec.imageChannels = info.channels;
  result.spec.sampleRate = info.sampleRate;
  return result;
}

llvm::Expected<PatternSource> readPattern() {
  if (patternFile.empty())
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "no pattern: pass --pattern FILE.sp");
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> file =
      llvm::MemoryBuffer::getFile(patternFile);
  if (!file)
    return llvm::createStringError(file.getError(), "cannot read '%s': %s",
                                   patternFile.c_str(),
                                   file.getError().message().c_str());
  PatternSource source;
  source.text = (*file)->getBuffer().str();
  source.path = patternFile;
  source.name = patternName;
  for (const std::string &define : defines) {
    size_t eq = define.find('=');
    int64_t value = 0;
    if (eq == std::string::npos || eq == 0 ||
        llvm::StringRef(define).substr(eq + 1).getAsInteger(10, value))
      return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                     "-D expects NAME=INTEGER, got '%s'",
                                     define.c_str());
    source.defines.emplace_back(define.substr(0, eq), value);
  }
  return source;
}

std::string defaultOutDir() {
  std::string stem = llvm::sys::path::stem(patternFile).str();
  if (stem.empty())
    stem = "run";
  return "runs/" + stem + "-" + presetName;
}

std::string joinPath(llvm::StringRef dir, llvm::StringRef name) {
  llvm::SmallString<256> p(dir);
  llvm::sys::path::append(p, name);
  return std::string(p);
}

std::unique_ptr<Backend> makeBackend() {
  if (device != "cpu" && device != "cuda" && device != "auto")
    die("--device must be cpu, cuda or auto, got '" + device + "'");
  bool gpu = device == "cuda" || (device == "auto" && cuda::isAvailable());
  std::optional<Precision> precision =
      precisionName.empty() ? std::optional<Precision>(gpu ? Precision::BF16
                                                           : Precision::FP32)
                            : parsePrecision(precisionName);
  if (!precision)
    die("--precision must be fp32, bf16 or fp16, got '" + precisionName + "'");
  if (!gpu) {
    if (*precision != Precision::FP32)
      die("--precision " + toString(*precision).str() +
          " needs the GPU (--device cuda); the CPU backend computes in fp32");
    return createCpuBackend();
  }
  if (device == "cuda" && !cuda::isAvailable())
    die("--device cuda: " + cuda::unavailableReason());
  CudaBackendOptions options;
  options.device = parallelRun.device;
  options.precision = *precision;
  options.deterministic = deterministic;
  llvm::Expected<std::unique_ptr<Backend>> backend = createCudaBackend(options);
  if (!backend)
    die("--device cuda: " + llvm::toString(backend.takeError()));
  return std::move(*backend);
}

//===----------------------------------------------------------------------===//
// Several GPUs
//===----------------------------------------------------------------------===//

std::optional<int> intFromEnv(const char *name) {
  const char *v = std::getenv(name);
  int value = 0;
  if (!v || !*v)
    return std::nullopt;
  if (llvm::StringRef(v).trim().getAsInteger(10, value))
    die(llvm::Twine(name) + " must be an integer, got '" + v + "'");
  return value;
}

/// --allreduce and --bucket-mb, checked.
GradientSync parseGradientSync() {
  GradientSync sync;
  if (allreduceType.getNumOccurrences()) {
    sync.type = parsePrecision(allreduceType);
    if (!sync.type)
      die("--allreduce must be fp32, bf16 or fp16, got '" + allreduceType +
          "'");
  }
  if (bucketMb.getNumOccurrences()) {
    double mb = 0;
    if (llvm::StringRef(bucketMb).trim().getAsDouble(mb) || !std::isfinite(mb) ||
        mb < 0)
      die("--bucket-mb must be a number of MiB, 0 or more (0: one all-reduce "
          "after the backward), got '" + bucketMb + "'");
    sync.bucketBytes = static_cast<int64_t>(std::llround(mb * (1 << 20)));
    if (mb > 0 && sync.bucketBytes == 0)
      sync.bucketBytes = 1;
  }
  return sync;
}

/// Works out this process's rank from --gpus, the hidden --rank/--world of
/// a spawned rank, or a launcher's variables (SPARSETX_WORLD_SIZE, or
/// mpirun's OMPI_COMM_WORLD_SIZE together with SPARSETX_NCCL_ID_FILE); checks
/// what a run on several GPUs needs (the CUDA backend, a batch that divides,
/// the GPUs, NCCL); then starts the other ranks or meets them. Nothing to do
/// without any of those.
void prepareParallel(int64_t globalBatch, bool batchFromCheckpoint) {
  ParallelRun &p = parallelRun;
  p.sync = parseGradientSync();
  const char *idFile = std::getenv("SPARSETX_NCCL_ID_FILE");
  bool launcher = std::getenv("SPARSETX_WORLD_SIZE") ||
                  (std::getenv("OMPI_COMM_WORLD_SIZE") && idFile);
  if (rankOpt.getNumOccurrences()) {
    p.rank = rankOpt;
    p.world = worldOpt;
    p.how = "--gpus " + std::to_string(p.world);
  } else if (launcher) {
    if (gpus.getNumOccurrences())
      die("--gpus starts the ranks itself; it cannot be combined with a "
          "launcher's SPARSETX_WORLD_SIZE");
    p.world = intFromEnv("SPARSETX_WORLD_SIZE")
                  .value_or(intFromEnv("OMPI_COMM_WORLD_SIZE").value_or(0));
    std::optional<int> rank = intFromEnv("SPARSETX_RANK");
    if (!rank)
      rank = intFromEnv("OMPI_COMM_WORLD_RANK");
    if (!rank)
      die("SPARSETX_WORLD_SIZE is set but SPARSETX_RANK (or mpirun's "
          "OMPI_COMM_WORLD_RANK) is not: every rank needs its number");
    p.rank = *rank;
    std::optional<int> local = intFromEnv("SPARSETX_LOCAL_RANK");
    if (!local)
      local = intFromEnv("OMPI_COMM_WORLD_LOCAL_RANK");
    p.how = "SPARSETX_WORLD_SIZE=" + std::to_string(p.world);
    if (p.world > 1 && (!idFile || !*idFile))
      die("SPARSETX_WORLD_SIZE=" + std::to_string(p.world) +
          " needs SPARSETX_NCCL_ID_FILE: a path all ranks can read, where "
          "rank 0 writes NCCL's bootstrap id");
    p.device = local.value_or(p.rank);
    if (p.world >= 1 && (p.rank < 0 || p.rank >= p.world))
      die(llvm::formatv("SPARSETX_RANK={0} is not a rank of "
                        "SPARSETX_WORLD_SIZE={1} (0 to {2})",
                        p.rank, p.world, p.world - 1));
  } else if (gpus.getNumOccurrences()) {
    p.world = gpus;
    p.how = "--gpus " + std::to_string(p.world);
  } else {
    if (allreduceType.getNumOccurrences())
      die("--allreduce is for runs on several GPUs (--gpus)");
    if (bucketMb.getNumOccurrences())
      die("--bucket-mb is for runs on several GPUs (--gpus)");
    return;
  }
  if (p.world < 1)
    die(p.how + ": the number of GPUs must be at least 1");
  if (!launcher)
    p.device = p.rank;
  p.enabled = true;
  if (device == "cpu")
    die(p.how + " runs one process per GPU and needs the CUDA backend; it "
                "cannot be combined with --device cpu");
  if (globalBatch % p.world != 0)
    die(llvm::formatv("{0} of {1} sequences does not divide over {2} GPUs "
                      "(each takes an equal share): use a batch that is a "
                      "multiple of {2}",
                      batchFromCheckpoint ? "the checkpoint's batch"
                                          : "the batch (--batch)",
                      globalBatch, p.world));
  std::string why;
  int present = nccl::cudaDeviceCount(&why);
  std::string have = llvm::formatv("this machine has {0} GPU{1}{2}", present,
                                   present == 1 ? "" : "s",
                                   why.empty() ? "" : " (" + why + ")");
  if (!launcher && p.world > present)
    die(llvm::formatv("{0} asks for more GPUs than there are: {1}", p.how,
                      have));
  if (p.device >= present)
    die(llvm::formatv("{0}: rank {1} needs GPU {2}, but {3}", p.how, p.rank,
                      p.device, have));
  if (!nccl::isAvailable())
    die(p.how + ": NCCL is needed: " + nccl::unavailableReason());

  if (rankOpt.getNumOccurrences()) {
    // A spawned rank: the id comes from rank 0 in the environment.
    exitWithParent(p.rank);
    const char *hex = std::getenv(kSpawnIdVariable);
    if (!hex)
      die("--rank is for the ranks that --gpus starts (no NCCL id in the "
          "environment)");
    return;
  }
  if (launcher) {
    if (p.rank == 0) {
      nccl::UniqueId id = orDie(nccl::createUniqueId());
      if (p.world > 1)
        orDie(writeIdFile(idFile, id));
      ::setenv(kSpawnIdVariable, id.toHex().c_str(), 1);
    } else {
      nccl::UniqueId id = orDie(waitForIdFile(idFile, ncclTimeout));
      ::setenv(kSpawnIdVariable, id.toHex().c_str(), 1);
    }
    return;
  }
  // --gpus N: this process is rank 0 and starts the others.
  nccl::UniqueId id = orDie(nccl::createUniqueId());
  ::setenv(kSpawnIdVariable, id.toHex().c_str(), 1);
  std::vector<pid_t> pids = orDie(spawnRanks(commandLine, p.world, id));
  p.supervisor = std::make_unique<RankSupervisor>(
      std::move(pids), [](const std::string &failure) {
        llvm::errs() << "sparsetx-run: error: " << failure
                     << "; stopping every rank\n";
        parallelRun.supervisor->killRanks();
        std::_Exit(1);
      });
}

/// Joins the other ranks once the model exists: the communicator, the
/// trainer's hook, and rank 0's parameters and optimizer state everywhere.
void joinParallel(Trainer &trainer, Backend &backend) {
  ParallelRun &p = parallelRun;
  if (!p.enabled)
    return;
  nccl::UniqueId id =
      orDie(nccl::UniqueId::fromHex(std::getenv(kSpawnIdVariable)));
  p.dp = orDie(createNcclDataParallel(
      backend, id, p.rank, p.world, ncclTimeout,
      [](const std::string &reason) {
        llvm::errs() << "sparsetx-run: error: rank " << parallelRun.rank
                     << ": " << reason << "\n";
        if (parallelRun.supervisor)
          parallelRun.supervisor->killRanks();
      }));
  orDie(trainer.setDataParallel(p.dp.get(), p.sync));
  orDie(trainer.broadcastState());
  if (p.rank == 0) {
    const GradientReducer &r = *trainer.getGradientReducer();
    size_t buckets = r.getBuckets().size();
    llvm::errs() << llvm::formatv(
        "data parallel: {0} GPU{1} through NCCL {2}, {3} sequence{4} each "
        "per step; gradients averaged in {5}, {6}\n",
        p.world, p.world == 1 ? "" : "s", nccl::version(),
        trainer.localBatch(), trainer.localBatch() == 1 ? "" : "s",
        toString(r.getType()),
        buckets == 1 ? std::string("in one all-reduce after the backward")
                     : llvm::formatv("in {0} buckets started during the "
                                     "backward",
                                     buckets)
                           .str());
  }
}

bool isRankZero() { return parallelRun.rank == 0; }

/// Whether any rank asks to stop (Ctrl-C reaches them all, a kill one).
bool anyRankInterrupted() {
  if (!parallelRun.dp)
    return interrupted;
  double flag[1] = {interrupted ? 1.0 : 0.0};
  orDie(parallelRun.dp->sumDoubles(flag));
  return flag[0] > 0;
}

/// After the last collective: every rank leaves the communicator; rank 0
/// later waits for the ranks it started.
void leaveParallel() { parallelRun.dp.reset(); }

void waitForRanks() {
  if (parallelRun.supervisor) {
    std::string failure = parallelRun.supervisor->waitRanks();
    if (!failure.empty())
      die(failure);
  }
}

//===----------------------------------------------------------------------===//
// Configuration of a new run
//===----------------------------------------------------------------------===//

template <typename T, typename U>
void override(const cl::opt<T> &option, U &field) {
  if (option.getNumOccurrences())
    field = static_cast<U>(option.getValue());
}

std::pair<ModelConfig, TrainConfig> configure(const Preset &preset,
                                              const LoadedData &data) {
  ModelConfig m = preset.model;
  TrainConfig t = preset.train;
  override(seqLen, m.seqLen);
  override(layers, m.numLayers);
  override(dModel, m.dModel);
  override(heads, m.numHeads);
  override(dropout, m.dropout);
  if (recompute.getNumOccurrences())
    m.recompute = recompute;
  override(steps, t.steps);
  override(batch, t.batch);
  override(lr, t.lr);
  override(warmup, t.warmupSteps);
  override(seed, t.seed);
  override(evalEvery, t.evalEvery);
  override(evalTokens, t.evalTokens);
  override(saveEvery, t.saveEvery);
  override(lossScaleOpt, t.lossScale);
  m.kind = data.spec.kind;
  if (m.kind == data::DataKind::Image && preset.imageBatch > 0 &&
      !batch.getNumOccurrences())
    t.batch = preset.imageBatch;
  if (m.kind == data::DataKind::Image) {
    if (seqLen.getNumOccurrences() && seqLen != data.dataset.info().imageBytes())
      die(llvm::formatv("--seq-len {0}: an image model's sequence is one whole "
                        "image of {1} bytes", seqLen.getValue(),
                        data.dataset.info().imageBytes()));
    m.seqLen = data.dataset.info().imageBytes();
    m.imageHeight = data.spec.imageHeight;
    m.imageWidth = data.spec.imageWidth;
    m.imageChannels = data.spec.imageChannels;
  }
  return {m, t};
}

/// The attention embeddings' width: --embed-stride, else the pattern's `l`
/// (its stride), else sqrt(n).
int64_t chooseEmbedStride(const AttentionPattern &pattern, int64_t n) {
  if (embedStride.getNumOccurrences()) {
    if (embedStride <= 0)
      die("--embed-stride must be positive");
    return embedStride;
  }
  for (const char *name : {"l", "stride"})
    if (std::optional<int64_t> l = pattern.getParam(name); l && *l > 0)
      return std::min(*l, n);
  return std::max<int64_t>(1, static_cast<int64_t>(std::sqrt(double(n))));
}

//===----------------------------------------------------------------------===//
// Metrics
//===----------------------------------------------------------------------===//

struct MetricRow {
  int64_t step = 0;
  double lossBits = 0, lr = 0, gradNorm = 0, tokensPerSecond = 0, elapsed = 0;
  std::optional<double> validBits;
};

class Metrics {
public:
  Metrics(std::string dir, bool jsonl) : dir(std::move(dir)), jsonl(jsonl) {}

  std::string path() const {
    return joinPath(dir, jsonl ? "metrics.jsonl" : "metrics.csv");
  }

  /// Reads the rows of a previous run up to `step` (a resumed run continues
  /// the file; rows after the checkpoint are dropped).
  void load(int64_t upToStep) {
    llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> file =
        llvm::MemoryBuffer::getFile(path());
    if (!file)
      return;
    llvm::SmallVector<llvm::StringRef> lines;
    (*file)->getBuffer().split(lines, '\n', -1, false);
    for (llvm::StringRef line : lines) {
      MetricRow row;
      if (jsonl) {
        llvm::Expected<llvm::json::Value> v = llvm::json::parse(line);
        if (!v) {
          llvm::consumeError(v.takeError());
          continue;
        }
        const llvm::json::Object *o = v->getAsObject();
        if (!o || !o->getInteger("step"))
          continue;
        row.step = *o->getInteger("step");
        row.lossBits = o->getNumber("loss_bits").value_or(NAN);
        row.lr = o->getNumber("lr").value_or(0);
        row.gradNorm = o->getNumber("grad_norm").value_or(0);
        row.tokensPerSecond = o->getNumber("tokens_per_s").value_or(0);
        row.elapsed = o->getNumber("elapsed_s").value_or(0);
        if (std::optional<double> vb = o->getNumber("valid_bits"))
          row.validBits = *vb;
      } else {
        llvm::SmallVector<llvm::StringRef> f;
        line.split(f, ',');
        if (f.size() != 7 || f[0].getAsInteger(10, row.step))
          continue; // the header
        auto num = [](llvm::StringRef s) {
          double d = NAN;
          s.getAsDouble(d);
          return d;
        };
        row.lossBits = num(f[1]);
        row.lr = num(f[2]);
        row.gradNorm = num(f[3]);
        row.tokensPerSecond = num(f[4]);
        row.elapsed = num(f[5]);
        if (!f[6].empty())
          row.validBits = num(f[6]);
      }
      if (row.step <= upToStep)
        rows.push_back(row);
    }
  }

  void add(const MetricRow &row) { rows.push_back(row); }
  const std::vector<MetricRow> &getRows() const { return rows; }
  double elapsedSoFar() const { return rows.empty() ? 0 : rows.back().elapsed; }

  llvm::Error write() const {
    std::string out;
    llvm::raw_string_ostream os(out);
    if (!jsonl)
      os << "step,loss_bits,lr,grad_norm,tokens_per_s,elapsed_s,valid_bits\n";
    for (const MetricRow &r : rows) {
      if (jsonl) {
        llvm::json::Object o{{"step", r.step},
                             {"loss_bits", r.lossBits},
                             {"lr", r.lr},
                             {"grad_norm", r.gradNorm},
                             {"tokens_per_s", r.tokensPerSecond},
                             {"elapsed_s", r.elapsed}};
        if (r.validBits)
          o["valid_bits"] = *r.validBits;
        os << llvm::json::Value(std::move(o)) << "\n";
      } else {
        os << llvm::formatv("{0},{1:f5},{2:e},{3:f4},{4:f1},{5:f2},", r.step,
                            r.lossBits, r.lr, r.gradNorm, r.tokensPerSecond,
                            r.elapsed);
        if (r.validBits)
          os << llvm::formatv("{0:f5}", *r.validBits);
        os << "\n";
      }
    }
    return writeFileAtomically(path(), out);
  }

  llvm::Error plot(llvm::StringRef title) const {
    std::vector<CurvePoint> train, valid;
    for (const MetricRow &r : rows) {
      train.push_back({r.step, r.lossBits});
      if (r.validBits)
        valid.push_back({r.step, *r.validBits});
    }
    return writeLossCurve(joinPath(dir, "loss.png"), title, train, valid);
  }

private:
  std::string dir;
  bool jsonl;
  std::vector<MetricRow> rows;
};

std::string formatDuration(double seconds) {
  int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600)
    return llvm::formatv("{0}:{1:02}:{2:02}", s / 3600, (s / 60) % 60, s % 60);
  return llvm::formatv("{0}:{1:02}", s / 60, s % 60);
}

const char *unitOf(data::DataKind kind) {
  return kind == data::DataKind::Image ? "bits/dim" : "bits/byte";
}

//===----------------------------------------------------------------------===//
// Commands
//===----------------------------------------------------------------------===//

struct Session {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<AttentionPattern> pattern;
  std::unique_ptr<Transformer> model;
  std::unique_ptr<Trainer> trainer;
  LoadedData data;
  PatternSource patternSource;
  ModelConfig modelConfig;
  TrainConfig trainConfig;
};

void buildModel(Session &s, int64_t maxBatch) {
  s.model = orDie(Transformer::create(*s.backend, s.modelConfig, *s.pattern, maxBatch));
  s.trainer = std::make_unique<Trainer>(*s.model, s.trainConfig, s.data.dataset);
}

/// The session a loaded checkpoint describes (eval, sample, resume); the
/// data, if needed, is loaded by the caller.
void openSession(Session &s, const Checkpoint &c, llvm::StringRef path,
                 int64_t maxBatch) {
  s.modelConfig = c.model;
  s.trainConfig = c.train;
  s.patternSource = c.pattern;
  s.backend = makeBackend();
  s.pattern = orDie(AttentionPattern::load(c.pattern, c.model.seqLen, c.model.numHeads));
  buildModel(s, maxBatch > 0 ? maxBatch : c.train.batch);
  orDie(s.trainer->restore(c, path));
}

void printModelSummary(const Session &s) {
  const ModelConfig &m = s.modelConfig;
  int64_t pairs = 0;
  for (int64_t l = 0; l < m.numLayers; ++l)
    pairs += s.pattern->pairsOfLayer(l);
  double dense = double(m.numLayers) * m.numHeads * m.seqLen * (m.seqLen + 1) / 2;
  llvm::errs() << llvm::formatv(
      "model: {0} layers, d = {1}, {2} heads, FF {3}d{4}, n = {5}, {6} "
      "parameters; pattern '{7}' attends {8:f1}% of the causal pairs; "
      "backend {9}\n",
      m.numLayers, m.dModel, m.numHeads, m.ffMultiplier,
      m.halfQK ? ", half-size q/k" : "", m.seqLen, s.model->numParams(),
      s.pattern->getName(), 100.0 * pairs / dense, s.backend->description());
}

/// A new run from the preset, the data, the pattern and the overrides: the
/// backend, the model (initialized) and its trainer (train, bench).
void newSession(Session &s) {
  Preset preset = orDie(findPreset(presetName));
  s.data = orDie(loadData(dataSource, 16000));
  s.patternSource = orDie(readPattern());
  auto [m, t] = configure(preset, s.data);
  orDie(t.validate());
  s.pattern = orDie(AttentionPattern::load(s.patternSource, m.seqLen, m.numHeads));
  prepareParallel(t.batch, /*batchFromCheckpoint=*/false);
  s.backend = makeBackend();
  if (m.kind != data::DataKind::Image)
    m.embedStride = chooseEmbedStride(*s.pattern, m.seqLen);
  s.modelConfig = m;
  s.trainConfig = t;
  buildModel(s, t.batch / parallelRun.world);
  s.model->initialize(t.seed);
}

int runTrain() {
  Session s;
  std::string dir = outDir.empty() ? defaultOutDir() : outDir.getValue();
  if (std::error_code ec = llvm::sys::fs::create_directories(dir))
    die("cannot create the run directory '" + dir + "': " + ec.message());
  std::string ckptPath = joinPath(dir, "checkpoint.bin");
  bool jsonl = metricsFormat == "jsonl";
  if (!jsonl && metricsFormat != "csv")
    die("--metrics must be csv or jsonl, got '" + metricsFormat + "'");

  if (resume) {
    if (!llvm::sys::fs::exists(ckptPath))
      die("--resume: there is no checkpoint at '" + ckptPath + "'");
    Checkpoint c = orDie(loadCheckpoint(ckptPath));
    s.data = orDie(loadData(c.data.source, c.data.sampleRate));
    // A longer run may be asked for; nothing else may change.
    if (steps.getNumOccurrences())
      c.train.steps = steps;
    // The checkpoint holds no rank state: any number of GPUs resumes it.
    prepareParallel(c.train.batch, /*batchFromCheckpoint=*/true);
    openSession(s, c, ckptPath, c.train.batch / parallelRun.world);
    if (isRankZero())
      llvm::errs() << "resuming " << ckptPath << " at step " << c.step
                   << " of " << c.train.steps << "\n";
  } else {
    newSession(s);
  }
  joinParallel(*s.trainer, *s.backend);
  if (isRankZero())
    printModelSummary(s);
  const data::DataInfo &info = s.data.dataset.info();
  if (isRankZero())
    llvm::errs() << llvm::formatv(
        "data: {0} ({1}), train {2} / valid {3} / test {4} bytes\n",
        info.source, data::toString(info.kind),
        s.data.dataset.tokens(data::Split::Train).size(),
        s.data.dataset.tokens(data::Split::Valid).size(),
        s.data.dataset.tokens(data::Split::Test).size());

  // Checkpoints, metrics, the loss curve and samples: rank 0 only.
  const bool writer = isRankZero();
  Metrics metrics(dir, jsonl);
  if (resume && writer)
    metrics.load(s.trainer->getStep());
  std::signal(SIGINT, onInterrupt);
  std::signal(SIGTERM, onInterrupt);

  const TrainConfig &t = s.trainConfig;
  const int64_t tokensPerStep = t.batch * s.modelConfig.seqLen;
  const bool tty = ::isatty(2) && writer;
  const char *unit = unitOf(s.modelConfig.kind);
  auto start = std::chrono::steady_clock::now();
  double elapsedBefore = metrics.elapsedSoFar();
  int64_t firstStep = s.trainer->getStep();
  auto save = [&]() {
    if (!writer)
      return;
    orDie(saveCheckpoint(ckptPath, orDie(s.trainer->snapshot(s.patternSource, s.data.spec))));
    orDie(metrics.write());
    orDie(metrics.plot(llvm::formatv("{0} on {1}: loss ({2})",
                                     s.pattern->getName(), info.source, unit).str()));
  };
  double lastLoss = NAN;
  bool stopping = false;
  while (s.trainer->getStep() < t.steps && !stopping) {
    StepResult r = orDie(s.trainer->trainStep());
    int64_t step = s.trainer->getStep();
    if (checkEvery > 0 && step % checkEvery == 0)
      orDie(s.trainer->checkReplicasAgree());
    double seconds = std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - start).count();
    MetricRow row;
    row.step = step;
    row.lossBits = r.loss / std::log(2.0);
    row.lr = r.lr;
    row.gradNorm = r.gradNorm;
    row.tokensPerSecond = (step - firstStep) * tokensPerStep / std::max(seconds, 1e-9);
    row.elapsed = elapsedBefore + seconds;
    lastLoss = row.lossBits;
    bool evalNow = (t.evalEvery > 0 && step % t.evalEvery == 0) || step == t.steps;
    if (evalNow) {
      EvalResult e = orDie(s.trainer->evaluate(data::Split::Valid, t.evalTokens));
      row.validBits = e.bits;
    }
    metrics.add(row);
    double eta = (t.steps - step) * seconds / std::max<int64_t>(1, step - firstStep);
    std::string line = llvm::formatv(
        "step {0}/{1} loss {2:f3} ({3:f3} {4}){5} | {6:f0} tok/s | {7} elapsed, "
        "ETA {8}",
        step, t.steps, r.loss, row.lossBits, unit,
        row.validBits ? llvm::formatv(" (valid {0:f3})", *row.validBits).str()
                      : std::string(),
        row.tokensPerSecond, formatDuration(row.elapsed), formatDuration(eta));
    if (tty) {
      int64_t width = 24, filled = width * step / t.steps;
      llvm::errs() << "\r[" << std::string(filled, '#')
                   << std::string(width - filled, '.') << "] " << line << "\x1b[K";
      if (evalNow)
        llvm::errs() << "\n";
    } else if (writer &&
               (evalNow || step % std::max<int64_t>(1, t.steps / 20) == 0 ||
                step == firstStep + 1)) {
      llvm::errs() << line << "\n";
    }
    if ((t.saveEvery > 0 && step % t.saveEvery == 0) || step == t.steps)
      save();
    // Every rank stops at the same step (a signal may reach only some).
    stopping = anyRankInterrupted();
  }
  leaveParallel();
  if (tty)
    llvm::errs() << "\n";
  if (stopping) {
    save();
    if (!writer) // an agreed stop, not a failure of this rank
      return 0;
    llvm::errs() << "interrupted: saved step " << s.trainer->getStep() << " to "
                 << ckptPath << " (continue with --resume)\n";
    waitForRanks();
    return 130;
  }
  if (s.trainer->getStep() == firstStep)
    save();
  if (!writer)
    return 0;
  llvm::errs() << llvm::formatv("trained {0} steps: final training loss {1:f3} "
                                "{2}; checkpoint {3}, metrics {4}, loss curve "
                                "{5}\n",
                                s.trainer->getStep(), lastLoss, unit, ckptPath,
                                metrics.path(), joinPath(dir, "loss.png"));

  // A sample of what the model learned.
  int64_t count = sampleCount >= 0 ? sampleCount.getValue()
                                   : (s.modelConfig.kind == data::DataKind::Image ? 16 : 2);
  if (count > 0) {
    SampleOptions o;
    o.count = count;
    o.temperature = temperature;
    o.topK = topK;
    o.seed = t.seed;
    o.length = sampleLength;
    o.prompt.assign(prompt.begin(), prompt.end());
    std::vector<std::vector<uint8_t>> samples = orDie(sample(*s.model, o));
    std::vector<std::string> files = orDie(writeSamples(samples, s.data.spec, dir));
    for (const std::string &f : files)
      llvm::errs() << "wrote " << f << "\n";
    if (s.modelConfig.kind == data::DataKind::Text) {
      llvm::outs() << "----- sample -----\n";
      llvm::outs().write(reinterpret_cast<const char *>(samples[0].data()),
                         samples[0].size());
      llvm::outs() << "\n------------------\n";
    }
  }
  waitForRanks();
  return 0;
}

std::string checkpointPath() {
  if (!checkpointFile.empty())
    return checkpointFile;
  std::string dir = outDir.empty() ? defaultOutDir() : outDir.getValue();
  return joinPath(dir, "checkpoint.bin");
}

int runEval() {
  Session s;
  std::string path = checkpointPath();
  Checkpoint c = orDie(loadCheckpoint(path));
  s.data = orDie(loadData(dataSource.getNumOccurrences() ? dataSource.getValue()
                                                          : c.data.source,
                          c.data.sampleRate));
  openSession(s, c, path, batch.getNumOccurrences() ? batch.getValue() : 0);
  int64_t limit = evalTokens.getNumOccurrences() ? evalTokens.getValue() : 0;
  const char *unit = unitOf(s.modelConfig.kind);
  llvm::outs() << llvm::formatv("{0} at step {1} on {2}:\n", path, c.step,
                                s.data.dataset.info().source);
  for (data::Split split : {data::Split::Valid, data::Split::Test}) {
    EvalResult e = orDie(s.trainer->evaluate(split, limit));
    llvm::outs() << llvm::formatv("  {0,-5} {1:f4} {2} over {3} tokens\n",
                                  data::toString(split), e.bits, unit, e.tokens);
  }
  return 0;
}

int runSample() {
  Session s;
  std::string path = checkpointPath();
  int64_t count = sampleCount >= 0 ? sampleCount.getValue() : 4;
  Checkpoint c = orDie(loadCheckpoint(path));
  openSession(s, c, path, std::max<int64_t>(1, count));
  SampleOptions o;
  o.count = count;
  o.temperature = temperature;
  o.topK = topK;
  o.seed = seed.getNumOccurrences() ? seed.getValue() : c.train.seed;
  o.length = sampleLength;
  o.prompt.assign(prompt.begin(), prompt.end());
  if (!o.prompt.empty() && c.data.kind != data::DataKind::Text)
    die("--prompt is for text models");
  auto sampleStart = std::chrono::steady_clock::now();
  std::vector<std::vector<uint8_t>> samples = orDie(sample(*s.model, o));
  double sampleSeconds = std::chrono::duration<double>(
                             std::chrono::steady_clock::now() - sampleStart)
                             .count();
  int64_t sampled = 0;
  for (const auto &smp : samples)
    sampled += static_cast<int64_t>(smp.size());
  llvm::errs() << llvm::formatv(
      "sampled {0} x {1} tokens in {2:f2} s: {3:f0} tokens/s ({4}; each "
      "step: {5})\n",
      samples.size(), samples.empty() ? 0 : samples[0].size(), sampleSeconds,
      sampled / std::max(sampleSeconds, 1e-9), s.backend->description(),
      s.model->decodeMethod());
  std::string dir = outDir.empty() ? std::string(llvm::sys::path::parent_path(path))
                                   : outDir.getValue();
  if (dir.empty())
    dir = ".";
  if (std::error_code ec = llvm::sys::fs::create_directories(dir))
    die("cannot create '" + dir + "': " + ec.message());
  for (const std::string &f : orDie(writeSamples(samples, c.data, dir)))
    llvm::errs() << "wrote " << f << "\n";
  if (c.data.kind == data::DataKind::Text)
    for (const auto &sample : samples) {
      llvm::outs().write(reinterpret_cast<const char *>(sample.data()), sample.size());
      llvm::outs() << "\n";
    }
  return 0;
}

/// Training throughput: warm-up steps, then the median of timed steps (each
/// ends with the device idle), tokens/s and memory; a table and, with
/// --json, a JSON object.
int runBench() {
  Session s;
  newSession(s);
  const ModelConfig &m = s.modelConfig;
  const TrainConfig &t = s.trainConfig;
  joinParallel(*s.trainer, *s.backend);
  const bool writer = isRankZero();
  if (writer)
    printModelSummary(s);
  const int64_t timed = steps.getNumOccurrences() ? steps.getValue() : 10;
  const int64_t warm = 3;
  std::vector<double> ms;
  for (int64_t i = 0; i < warm + timed; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    StepResult r = orDie(s.trainer->trainStep());
    s.backend->synchronize();
    orDie(s.backend->takeError());
    double elapsed = std::chrono::duration<double, std::milli>(
                         std::chrono::steady_clock::now() - t0).count();
    if (i >= warm)
      ms.push_back(elapsed);
    if (writer)
      llvm::errs() << llvm::formatv("step {0}: {1:f1} ms, loss {2:f3}{3}\n",
                                    i + 1, elapsed, r.loss,
                                    r.skipped ? " (skipped: fp16 overflow)"
                                              : "");
  }
  leaveParallel();
  if (!writer)
    return 0;
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  double median = sorted[sorted.size() / 2];
  if (sorted.size() % 2 == 0)
    median = (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]) / 2;
  const int64_t tokens = t.batch * m.seqLen;
  double tokPerSec = tokens / (median / 1000.0);
  double gib = double(1 << 30);
  llvm::outs() << llvm::formatv(
      "{0,-10} {1,5} {2,8} {3,6} {4,12} {5,12} {6,14} {7,14}\n", "backend",
      "gpus", "n", "batch", "ms/step", "tokens/s", "buffers GiB",
      "device GiB");
  llvm::outs() << llvm::formatv(
      "{0,-10} {1,5} {2,8} {3,6} {4,12:f1} {5,12:f0} {6,14:f2} {7,14:f2}\n",
      s.backend->name().str() + "/" + toString(s.backend->precision()).str(),
      parallelRun.world, m.seqLen, t.batch, median, tokPerSec,
      s.backend->peakBufferBytes() / gib, s.backend->deviceBytesInUse() / gib);
  if (!benchJson.empty()) {
    llvm::json::Array times;
    for (double x : ms)
      times.push_back(x);
    llvm::json::Object o{
        {"backend", s.backend->description()},
        {"precision", toString(s.backend->precision())},
        {"pattern", s.pattern->getName()},
        {"layers", m.numLayers},
        {"d_model", m.dModel},
        {"heads", m.numHeads},
        {"seq_len", m.seqLen},
        {"batch", t.batch},
        {"gpus", parallelRun.world},
        {"allreduce", s.trainer->getGradientReducer()
                          ? llvm::json::Value(toString(
                                s.trainer->getGradientReducer()->getType()))
                          : llvm::json::Value(nullptr)},
        {"bucket_mb",
         parallelRun.enabled
             ? llvm::json::Value(double(parallelRun.sync.bucketBytes) /
                                 (1 << 20))
             : llvm::json::Value(nullptr)},
        {"gradient_buckets",
         s.trainer->getGradientReducer()
             ? int64_t(s.trainer->getGradientReducer()->getBuckets().size())
             : int64_t(0)},
        {"recompute", m.recompute},
        {"parameters", s.model->numParams()},
        {"ms_per_step_median", median},
        {"tokens_per_second", tokPerSec},
        {"peak_buffer_bytes", s.backend->peakBufferBytes()},
        {"device_bytes_in_use", s.backend->deviceBytesInUse()},
        {"step_ms", std::move(times)}};
    std::string text;
    llvm::raw_string_ostream os(text);
    os << llvm::formatv("{0:2}", llvm::json::Value(std::move(o))) << "\n";
    orDie(writeFileAtomically(benchJson, text));
  }
  waitForRanks();
  return 0;
}

int runShow() {
  PatternSource source = orDie(readPattern());
  Preset preset = orDie(findPreset(presetName));
  int64_t n = seqLen.getNumOccurrences() ? seqLen.getValue() : preset.model.seqLen;
  int64_t h = heads.getNumOccurrences() ? heads.getValue() : preset.model.numHeads;
  PatternCompileOptions options;
  options.seqLen = n;
  options.numHeads = h;
  options.defines = source.defines;
  options.patternName = source.name;
  std::unique_ptr<CompiledPattern> compiled =
      orDie(compilePattern(source.text, source.path, options));
  std::string error;
  mlir::FailureOr<Image> image =
      renderPattern(compiled->pattern, compiled->layout, error);
  if (mlir::failed(image))
    die(error);
  std::string dir = outDir.empty() ? defaultOutDir() : outDir.getValue();
  if (std::error_code ec = llvm::sys::fs::create_directories(dir))
    die("cannot create '" + dir + "': " + ec.message());
  std::string path = joinPath(dir, "pattern.png");
  if (mlir::failed(writePng(*image, path, error)))
    die(error);
  std::unique_ptr<AttentionPattern> pattern =
      orDie(AttentionPattern::load(source, n, h, /*requireCausal=*/false));
  double dense = double(h) * n * (n + 1) / 2;
  llvm::outs() << llvm::formatv("pattern '{0}' at n = {1}, {2} heads: ",
                                pattern->getName(), n, h);
  for (int64_t l = 0; l < pattern->getNumLayerMasks(); ++l)
    llvm::outs() << llvm::formatv("{0}{1:f2}% of the causal pairs{2}", l ? ", " : "",
                                  100.0 * pattern->pairsOfLayer(l) / dense,
                                  pattern->getNumLayerMasks() > 1
                                      ? llvm::formatv(" (layer {0})", l).str()
                                      : std::string());
  llvm::outs() << "\nwrote " << path << " (" << image->width << " x "
               << image->height << ")\n";
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv,
      "sparsetx-run: train, evaluate, sample and show a Sparse Transformer\n\n"
      "  sparsetx-run --pattern patterns/fixed.sp train      (tiny preset, GCIDE)\n"
      "  sparsetx-run --pattern patterns/strided.sp -D l=28 --data fashion-mnist train\n"
      "  sparsetx-run --out runs/fixed-tiny eval | sample\n"
      "  sparsetx-run --pattern patterns/fixed.sp --seq-len 1024 show\n");
  commandLine.assign(argv + 1, argv + argc);
  if ((gpus.getNumOccurrences() || rankOpt.getNumOccurrences()) &&
      command != "train" && command != "bench")
    die("--gpus is for train and bench (eval and sample run on one GPU)");
  if (threads.getNumOccurrences()) {
    if (threads <= 0)
      die("--threads must be positive");
    llvm::parallel::strategy = llvm::hardware_concurrency(threads);
    cpu::setGemmThreads(static_cast<int>(threads));
  }
  if (command == "train")
    return runTrain();
  if (command == "eval")
    return runEval();
  if (command == "sample")
    return runSample();
  if (command == "show")
    return runShow();
  if (command == "bench")
    return runBench();
  die("unknown command '" + command +
      "' (expected train, eval, sample, show or bench)");
}
