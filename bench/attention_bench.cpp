//===- attention_bench.cpp - time sparsetx's attention kernels on the GPU -===//
//
// The same cases as bench/peers.py (B = 1, H = 8, bf16; D = 64 and 128;
// n = 4096 and 16384; dense causal, local, strided l = 128, fixed l = 128
// c = 32; the paper's enwik8 and image settings): each pattern is compiled by
// the same path as `sparsec -o kernels.ptx`, run on fresh random inputs, and
// timed with CUDA events (median of many runs after warm-up). Useful TFLOP/s
// count only attended pairs (4 * pairs * D per forward). Prints a table and
// writes JSON; asserts nothing.
//
//   attention-bench [--out FILE] [--quick] [--patterns DIR]
//                   [--case NAME/N/D ...] [--deterministic] [--compile-only]
//                   [--split N] [--split-sweep N,N,...] [--query-order N]
//                   [--wgmma-forward] [--wgmma-backward]
//
// --case limits the run to the named cases (e.g. --case fixed/16384/64);
// --compile-only needs no GPU: it generates and NVRTC-compiles the selected
// cases, which fills the PTX cache ($SPARSETX_CACHE_DIR) a GPU run can reuse;
// --deterministic times the bit-reproducible backward (separate dQ kernel)
// instead of the default one (dQ fused into the dK/dV kernels); --split
// sets the backward's split of long key-block lists (0: the plan's choice)
// and --split-sweep times forward+backward again under other settings;
// --wgmma-forward runs the forward of head dims 64 and 128 on the wgmma
// kernel on sm_90a (the default is the mma.sync kernel everywhere), and
// --wgmma-backward the dK/dV kernels of head dim 64.
// Decode (AttentionPlan::decode, one row at position n - 1, batch-heads 8,
// caches of capacity n; median per call) is timed for dense, strided and
// fixed at n = 16384 and fixed at n = 12288, D = 64.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Codegen/AttentionPlan.h"
#include "sparsetx/Runtime/Cuda.h"
#include "sparsetx/Runtime/Nvrtc.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cstring>
#include <random>

using namespace sparsetx;
namespace cl = llvm::cl;

namespace {

cl::opt<std::string> outFile("out", cl::desc("JSON output"),
                             cl::init("sparsetx-bench.json"));
cl::opt<std::string> patternDir("patterns", cl::desc("Directory of .sp files"),
                                cl::init("patterns"));
cl::opt<bool> quick("quick", cl::desc("Fewer repetitions"), cl::init(false));
cl::list<std::string> onlyCases("case",
                                cl::desc("Run only NAME/N/D (repeatable)"));
cl::opt<bool> compileOnly("compile-only",
                          cl::desc("Only generate and compile (no GPU)"),
                          cl::init(false));
cl::opt<bool> deterministic("deterministic",
                            cl::desc("Time the deterministic backward"),
                            cl::init(false));
cl::opt<int64_t> split("split",
                       cl::desc("Backward split (AttentionPlan::"
                                "setBackwardSplit): 0 auto, -1 never, N > 0 "
                                "at most N query blocks per CTA"),
                       cl::init(0));
cl::opt<int> queryOrder("query-order",
                        cl::desc("Forward/dQ query-block order (CodegenOptions::"
                                 "queryOrder): 0 auto, 1 sorted, -1 index"),
                        cl::init(0));
cl::opt<bool> wgmmaForward("wgmma-forward",
                           cl::desc("On sm_90a, the forward of head dims 64 "
                                    "and 128 on wgmma (CodegenOptions::"
                                    "forwardWgmma; default true)"),
                           cl::init(true));
cl::opt<bool> wgmmaBackward("wgmma-backward",
                            cl::desc("On sm_90a, the dK/dV and dQ kernels of "
                                     "head dim 64 with long lists on wgmma "
                                     "(CodegenOptions::backwardWgmma; default "
                                     "true)"),
                            cl::init(true));
cl::opt<int64_t> wgmmaBackwardMinBlocks(
    "wgmma-backward-min-blocks",
    cl::desc("Mean list length from which a backward kernel takes wgmma; 0: "
             "every one (CodegenOptions::backwardWgmmaMinBlocks; default 8)"),
    cl::init(8));
/// What the run's kernels are, for the table and the JSON.
const char *forwardKernelName() {
  return wgmmaForward ? "wgmma on sm_90a for D 64/128, else mma.sync"
                      : "mma.sync";
}
std::string backwardKernelName() {
  if (!wgmmaBackward)
    return "mma.sync";
  if (wgmmaBackwardMinBlocks <= 0)
    return "wgmma dK/dV and dQ on sm_90a for D 64, else mma.sync";
  return "wgmma dK/dV and dQ on sm_90a for D 64 where lists average >= " +
         std::to_string(wgmmaBackwardMinBlocks) + " blocks, else mma.sync";
}
cl::list<int64_t> splitSweep(
    "split-sweep",
    cl::desc("Also time forward+backward with these split settings"),
    cl::CommaSeparated);

struct Case {
  std::string name, file;
  std::vector<std::pair<std::string, int64_t>> defines;
  int64_t n, headDim;
  /// Also time decode (one row at the last position, batch-heads 8).
  bool decode = false;
};

std::vector<Case> cases() {
  std::vector<Case> all;
  for (int64_t d : {64, 128})
    for (int64_t n : {4096, 16384}) {
      all.push_back({"dense", "dense.sp", {}, n, d});
      all.push_back({"local", "local.sp", {{"w", 256}}, n, d});
      all.push_back({"strided", "strided.sp", {{"l", 128}}, n, d});
      all.push_back({"fixed", "fixed.sp", {{"l", 128}, {"c", 32}}, n, d});
    }
  all.push_back({"fixed", "fixed.sp", {{"l", 128}, {"c", 32}}, 12288, 64});
  all.push_back({"strided", "strided.sp", {{"l", 96}}, 3072, 64});
  // Decode at n = 16384 (dense, strided, fixed) and enwik8's n = 12288.
  for (Case &c : all)
    c.decode = c.headDim == 64 &&
               ((c.n == 16384 && c.name != "local") ||
                (c.n == 12288 && c.name == "fixed"));
  return all;
}

uint16_t toBF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits += 0x7FFF + ((bits >> 16) & 1); // round to nearest even
  return uint16_t(bits >> 16);
}

llvm::Error fillRandom(cuda::DeviceBuffer &buffer, size_t count,
                       std::mt19937_64 &rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<uint16_t> host(count);
  for (uint16_t &x : host)
    x = toBF16(dist(rng));
  return buffer.copyFromHost(host.data(), count * 2);
}

struct Result {
  Case c;
  double fwdMs = 0, tflops = 0, fwdBwdMs = 0, fwdBwdTflops = 0;
  int64_t pairs = 0;
  double efficiency = 0;
  /// Decode: median per-call latency (us) at position n - 1, batch-heads 8,
  /// and the row's attended keys (per batch-head).
  double decodeUs = 0;
  int64_t decodeKeys = 0;
  /// The backward split the plan chose (split setting 0 unless --split).
  AttentionPlan::BackwardSplitStats splitStats;
  /// --split-sweep: (setting, fwd+bwd ms).
  std::vector<std::pair<int64_t, double>> sweep;
  std::string error;
};

llvm::Expected<Result> runCase(const Case &c, std::mt19937_64 &rng) {
  Result r;
  r.c = c;
  llvm::SmallString<256> path(patternDir);
  llvm::sys::path::append(path, c.file);
  auto text = llvm::MemoryBuffer::getFile(path);
  if (!text)
    return llvm::createStringError("cannot read " + std::string(path));
  PatternCompileOptions options;
  options.seqLen = c.n;
  options.defines = c.defines;
  auto compiled = compilePattern((*text)->getBuffer(), path, options);
  if (!compiled)
    return compiled.takeError();
  codegen::CodegenOptions cg;
  cg.headDim = c.headDim;
  cg.queryOrder = queryOrder;
  cg.forwardWgmma = wgmmaForward;
  cg.backwardWgmma = wgmmaBackward;
  cg.backwardWgmmaMinBlocks = wgmmaBackwardMinBlocks;
  auto generated = codegen::generateForward((*compiled)->pattern,
                                            (*compiled)->layout, cg);
  if (mlir::failed(generated))
    return llvm::createStringError("code generation failed for " + c.name);
  if (compileOnly) {
    nvrtc::CompileOptions nvrtcOptions;
    nvrtcOptions.arch = generated->arch;
    nvrtcOptions.flags = codegen::nvrtcFlags();
    auto ptx = nvrtc::compileToPTX(generated->source, generated->pattern + ".cu",
                                   nvrtcOptions, codegen::kernelHeaders());
    if (!ptx)
      return ptx.takeError();
    return r;
  }
  auto plan = AttentionPlan::compile(std::move(*generated));
  if (!plan)
    return plan.takeError();
  plan->setDeterministicBackward(deterministic);
  plan->setBackwardSplit(split);

  const int64_t heads = 8, bh = heads;
  size_t elems = size_t(bh * c.n * c.headDim);
  auto alloc = [&](size_t bytes) { return cuda::DeviceBuffer::allocate(bytes); };
  auto q = alloc(elems * 2), k = alloc(elems * 2), v = alloc(elems * 2),
       o = alloc(elems * 2), lse = alloc(size_t(bh * c.n) * 4),
       dO = alloc(elems * 2), dQ = alloc(elems * 2), dK = alloc(elems * 2),
       dV = alloc(elems * 2);
  for (auto *b : {&q, &k, &v, &o, &lse, &dO, &dQ, &dK, &dV})
    if (!*b)
      return b->takeError();
  for (auto *b : {&*q, &*k, &*v, &*dO})
    if (llvm::Error e = fillRandom(*b, elems, rng))
      return std::move(e);
  auto body = [&]() -> llvm::Error {
    return plan->forward(0, bh, q->get(), k->get(), v->get(), o->get(),
                         lse->get());
  };
  auto times = cuda::timeRuns(body, quick ? 3 : 20, quick ? 10 : 100);
  if (!times)
    return times.takeError();
  std::sort(times->begin(), times->end());
  r.fwdMs = (*times)[times->size() / 2];
  // Forward and backward, as a training step runs them.
  auto step = [&]() -> llvm::Error {
    if (llvm::Error e = body())
      return e;
    return plan->backward(0, bh, q->get(), k->get(), v->get(), o->get(),
                          lse->get(), dO->get(), dQ->get(), dK->get(),
                          dV->get());
  };
  auto stepTimes = cuda::timeRuns(step, quick ? 3 : 10, quick ? 10 : 50);
  if (!stepTimes)
    return stepTimes.takeError();
  std::sort(stepTimes->begin(), stepTimes->end());
  r.fwdBwdMs = (*stepTimes)[stepTimes->size() / 2];
  r.splitStats = plan->getBackwardSplitStats();
  for (int64_t setting : splitSweep) {
    plan->setBackwardSplit(setting);
    auto t = cuda::timeRuns(step, quick ? 3 : 10, quick ? 10 : 50);
    if (!t)
      return t.takeError();
    std::sort(t->begin(), t->end());
    r.sweep.push_back({setting, (*t)[t->size() / 2]});
  }
  plan->setBackwardSplit(split);
  if (c.decode) {
    // One new row at the last position against caches of capacity n (the
    // K and V buffers), q the first batch-heads x D elements of Q.
    const int64_t position = c.n - 1;
    auto dec = [&]() -> llvm::Error {
      return plan->decode(0, bh, position, q->get(), k->get(), v->get(), c.n,
                          o->get(), lse->get());
    };
    auto decTimes = cuda::timeRuns(dec, quick ? 5 : 20, quick ? 20 : 200);
    if (!decTimes)
      return decTimes.takeError();
    std::sort(decTimes->begin(), decTimes->end());
    r.decodeUs = (*decTimes)[decTimes->size() / 2] * 1e3;
  }
  int64_t useful = 0, computed = 0;
  for (const MaskLayout &m : (*compiled)->layout.masks)
    for (const ComponentLayout &comp : m.components) {
      useful += comp.usefulPairs;
      computed += comp.computedPairs;
    }
  r.pairs = useful * heads;
  if (c.decode) {
    // Keys of the last row: the layout's useful pairs of that row are not
    // kept, so count them from the mask as the peers do (causal patterns of
    // bench: dense, strided, fixed).
    const int64_t i = c.n - 1;
    auto define = [&](const char *name, int64_t dflt) {
      for (const auto &[k, v] : c.defines)
        if (k == name)
          return v;
      return dflt;
    };
    const int64_t l = define("l", 128), cc = define("c", 32);
    int64_t keys = 0;
    for (int64_t j = 0; j <= i; ++j) {
      bool on = true;
      if (c.name == "strided")
        on = (i - j) < l || (i - j) % l == 0;
      else if (c.name == "fixed")
        on = i / l == j / l || j % l >= l - cc;
      keys += on;
    }
    r.decodeKeys = keys;
  }
  r.efficiency = computed ? double(useful) / double(computed) : 1.0;
  r.tflops = 4.0 * double(r.pairs) * double(c.headDim) / (r.fwdMs * 1e9);
  // Backward: 2.5x the forward's matrix work (recomputing S, then dV, dP, dS,
  // dQ, dK), so a step is 3.5x, as peers.py counts it.
  r.fwdBwdTflops =
      3.5 * 4.0 * double(r.pairs) * double(c.headDim) / (r.fwdBwdMs * 1e9);
  return r;
}

} // namespace

int main(int argc, char **argv) {
  cl::ParseCommandLineOptions(argc, argv, "sparsetx attention benchmark\n");
  if (wgmmaBackwardMinBlocks < 0) {
    llvm::WithColor::error(llvm::errs(), "attention-bench")
        << "--wgmma-backward-min-blocks must be 0 or more, but is "
        << int64_t(wgmmaBackwardMinBlocks) << "\n";
    return 1;
  }
  if (compileOnly) {
    std::mt19937_64 rng(0);
    int failures = 0;
    for (const Case &c : cases()) {
      std::string key = c.name + "/" + std::to_string(c.n) + "/" +
                        std::to_string(c.headDim);
      if (!onlyCases.empty() &&
          std::find(onlyCases.begin(), onlyCases.end(), key) == onlyCases.end())
        continue;
      if (auto r = runCase(c, rng); !r) {
        llvm::errs() << key << ": " << llvm::toString(r.takeError()) << "\n";
        ++failures;
      } else {
        llvm::outs() << key << ": compiled\n";
      }
    }
    return failures ? 1 : 0;
  }
  if (!cuda::isAvailable()) {
    llvm::WithColor::error(llvm::errs(), "attention-bench")
        << cuda::unavailableReason() << "\n";
    return 1;
  }
  auto context = cuda::Context::create(0);
  if (!context) {
    llvm::WithColor::error(llvm::errs(), "attention-bench")
        << llvm::toString(context.takeError()) << "\n";
    return 1;
  }
  std::mt19937_64 rng(20261123);
  std::vector<Result> results;
  for (const Case &c : cases()) {
    if (!onlyCases.empty()) {
      std::string key = c.name + "/" + std::to_string(c.n) + "/" +
                        std::to_string(c.headDim);
      if (std::find(onlyCases.begin(), onlyCases.end(), key) == onlyCases.end())
        continue;
    }
    auto r = runCase(c, rng);
    if (!r) {
      Result failed;
      failed.c = c;
      failed.error = llvm::toString(r.takeError());
      llvm::errs() << c.name << " n=" << c.n << " D=" << c.headDim << ": "
                   << failed.error << "\n";
      results.push_back(failed);
      continue;
    }
    results.push_back(*r);
  }

  llvm::outs() << "device: " << context->getDeviceName() << "\n";
  llvm::outs() << "forward kernel: "
               << forwardKernelName()
               << "; backward kernels: "
               << backwardKernelName()
               << "\n";
  llvm::outs() << llvm::format("%-8s %6s %4s %10s %10s %12s %10s %11s %10s %s\n",
                               "pattern", "n", "D", "fwd ms", "fwd TF/s",
                               "fwd+bwd ms", "f+b TF/s", "efficiency",
                               "decode us", "bwd split");
  for (const Result &r : results) {
    if (!r.error.empty()) {
      llvm::outs() << llvm::format("%-8s %6lld %4lld  failed\n", r.c.name.c_str(),
                                   (long long)r.c.n, (long long)r.c.headDim);
      continue;
    }
    std::string dec = r.c.decode ? llvm::formatv("{0:F1}", r.decodeUs).str() : "";
    llvm::outs() << llvm::format(
        "%-8s %6lld %4lld %10.3f %10.1f %12.3f %10.1f %11.3f %10s %lld CTAs, "
        "%lld split into %lld\n",
        r.c.name.c_str(), (long long)r.c.n, (long long)r.c.headDim, r.fwdMs,
        r.tflops, r.fwdBwdMs, r.fwdBwdTflops, r.efficiency, dec.c_str(),
        (long long)r.splitStats.items, (long long)r.splitStats.splitKeyBlocks,
        (long long)r.splitStats.parts);
    for (const auto &[setting, ms] : r.sweep)
      llvm::outs() << llvm::format("    split %lld: fwd+bwd %.3f ms\n",
                                   (long long)setting, ms);
  }

  std::error_code ec;
  llvm::raw_fd_ostream os(outFile, ec);
  if (ec) {
    llvm::WithColor::error(llvm::errs(), "attention-bench")
        << "cannot write '" << outFile << "': " << ec.message() << "\n";
    return 1;
  }
  llvm::json::OStream j(os, 1);
  j.object([&] {
    j.attribute("device", context->getDeviceName());
    j.attribute("deterministic_backward", bool(deterministic));
    j.attribute("forward_kernel", forwardKernelName());
    j.attribute("backward_kernel", backwardKernelName());
    j.attributeArray("results", [&] {
      for (const Result &r : results)
        j.object([&] {
          j.attribute("peer", "sparsetx");
          j.attribute("pattern", r.c.name);
          j.attribute("n", r.c.n);
          j.attribute("heads", int64_t(8));
          j.attribute("head_dim", r.c.headDim);
          if (!r.error.empty()) {
            j.attribute("error", r.error);
            return;
          }
          j.attribute("fwd_ms", r.fwdMs);
          j.attribute("fwd_tflops", r.tflops);
          j.attribute("fwd_bwd_ms", r.fwdBwdMs);
          j.attribute("fwd_bwd_tflops", r.fwdBwdTflops);
          j.attribute("attended_pairs", r.pairs);
          j.attribute("work_efficiency", r.efficiency);
          j.attributeObject("backward_split", [&] {
            j.attribute("setting", int64_t(split));
            j.attribute("ctas_per_batch_group", r.splitStats.items);
            j.attribute("split_key_blocks", r.splitStats.splitKeyBlocks);
            j.attribute("parts", r.splitStats.parts);
          });
          if (!r.sweep.empty())
            j.attributeArray("split_sweep", [&] {
              for (const auto &[setting, ms] : r.sweep)
                j.object([&] {
                  j.attribute("setting", setting);
                  j.attribute("fwd_bwd_ms", ms);
                });
            });
          if (r.c.decode) {
            j.attribute("decode_us", r.decodeUs);
            j.attribute("decode_position", r.c.n - 1);
            j.attribute("decode_batch_heads", int64_t(8));
            j.attribute("decode_keys", r.decodeKeys);
          }
        });
    });
  });
  return 0;
}
