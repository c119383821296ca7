//===- AttentionPlan.h - a pattern's attention kernels, runnable -*- C++ -*-===//
//
// The driver side of codegen, shared by the GPU tests and the benchmarks:
//  - compilePattern: .sp text -> the specialized, decomposed sp.pattern and its
//    PatternLayout (the pipeline of `sparsec --emit=layout`), plus the
//    unspecialized pattern for the CPU reference (PatternEvaluator);
//  - AttentionPlan: generated kernels compiled by NVRTC and loaded, their
//    int32 tables uploaded, the fp32 merge workspace sized on demand, and
//    forward() launching every kernel (and the merge) of one residual layer.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_CODEGEN_ATTENTIONPLAN_H
#define SPARSETX_CODEGEN_ATTENTIONPLAN_H

#include "sparsetx/Analysis/IndexMap.h"
#include "sparsetx/Analysis/PatternLayout.h"
#include "sparsetx/Codegen/CudaEmitter.h"
#include "sparsetx/Runtime/Cuda.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/Support/Error.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace sparsetx {

struct PatternCompileOptions {
  int64_t seqLen = 0;
  /// Head count of a per-head pattern; 0: the pattern's own, else 8.
  int64_t numHeads = 0;
  /// -D NAME=VALUE overrides.
  std::vector<std::pair<std::string, int64_t>> defines;
  /// The pattern to pick from a file with several; empty: the only one.
  std::string patternName;
};

/// One pattern through the analysis pipeline. Owns its MLIR context.
struct CompiledPattern {
  std::unique_ptr<mlir::MLIRContext> context;
  /// The front end's output at n (masks with `h`, parameters bound by sema):
  /// what PatternEvaluator::compile wants for the reference.
  mlir::OwningOpRef<mlir::ModuleOp> source;
  /// After sp-specialize, sp-verify, sp-decompose.
  mlir::OwningOpRef<mlir::ModuleOp> specialized;
  sp::PatternOp sourcePattern, pattern;
  PatternLayout layout;
};

/// Parses, checks, specializes and lays out `text`. Errors carry the
/// diagnostics (file:line:col).
llvm::Expected<std::unique_ptr<CompiledPattern>>
compilePattern(llvm::StringRef text, llvm::StringRef bufferName,
               const PatternCompileOptions &options);

/// Generated, compiled and loaded forward kernels of one pattern.
class AttentionPlan {
public:
  /// Loads `ptx` (from NVRTC, or a file written by sparsec) for `generated`
  /// and uploads the tables. Needs a current context (cuda::Context::create).
  static llvm::Expected<AttentionPlan> load(codegen::GeneratedAttention generated,
                                            llvm::StringRef ptx);
  /// Compiles generated.source with NVRTC for generated.arch, then load().
  static llvm::Expected<AttentionPlan>
  compile(codegen::GeneratedAttention generated);

  const codegen::GeneratedAttention &getGenerated() const { return gen; }

  /// The masks residual layer `layer` runs: the layer's mask (layered
  /// patterns), every head's mask (per-head patterns), else the one mask.
  std::vector<size_t> masksOfLayer(int64_t layer) const;

  /// Attention of residual layer `layer`: q, k, v, o are [batchHeads, n, D]
  /// of the plan's dtype, lse [batchHeads, n] fp32. scale <= 0 means
  /// 1/sqrt(D). For a per-head pattern batchHeads must be a multiple of the
  /// head count (bh % numHeads is the head). Enqueues on `stream`; does not
  /// synchronize.
  llvm::Error forward(int64_t layer, int64_t batchHeads, cuda::DevicePtr q,
                      cuda::DevicePtr k, cuda::DevicePtr v, cuda::DevicePtr o,
                      cuda::DevicePtr lse, double scale = 0,
                      cuda::Stream stream = nullptr);
  /// The kernels of one mask (and its merge).
  llvm::Error forwardMask(size_t mask, int64_t batchHeads, cuda::DevicePtr q,
                          cuda::DevicePtr k, cuda::DevicePtr v, cuda::DevicePtr o,
                          cuda::DevicePtr lse, double scale = 0,
                          cuda::Stream stream = nullptr);

  /// Gradients of residual layer `layer`'s attention: given q, k, v, the
  /// forward's o and lse (the final, merged ones) and dO, writes dQ, dK, dV
  /// (all [batchHeads, n, D] of the plan's dtype). P is recomputed from the
  /// saved LSE. Positions no mask of the layer attends get zero gradients.
  /// By default dQ is accumulated inside the dK/dV kernels with fp32
  /// reductions (fastest; dQ's last bits can differ between runs); with
  /// setDeterministicBackward(true) a separate dQ kernel recomputes S and dP
  /// and every gradient is bit-identical between runs (no atomics). dK and
  /// dV are deterministic either way. Uses an fp32 workspace of (3 D + 1)
  /// floats per row, reserved on demand. Enqueues on `stream`; does not
  /// synchronize.
  llvm::Error backward(int64_t layer, int64_t batchHeads, cuda::DevicePtr q,
                       cuda::DevicePtr k, cuda::DevicePtr v, cuda::DevicePtr o,
                       cuda::DevicePtr lse, cuda::DevicePtr dO,
                       cuda::DevicePtr dQ, cuda::DevicePtr dK, cuda::DevicePtr dV,
                       double scale = 0, cuda::Stream stream = nullptr);

  /// Bit-reproducible backward (separate dQ kernel, no atomics); slower.
  void setDeterministicBackward(bool on) { deterministicBackward = on; }
  bool isDeterministicBackward() const { return deterministicBackward; }

  /// How the dK/dV kernels share a key block's list of query blocks among
  /// CTAs. 0 (default): per segment, from the lists' lengths, the batch and
  /// the SM count, the split whose estimated makespan is lowest (none unless
  /// it saves at least 5%); < 0: never split; > 0: every list longer than
  /// that many query blocks is split into near-equal parts of at most that
  /// many. The parts of a split key block write fp32 partial dK/dV into a
  /// workspace that a reduce kernel adds up in a fixed order, so the
  /// gradients stay bit-identical between runs (dK, dV always; dQ too in the
  /// deterministic mode).
  void setBackwardSplit(int64_t maxBlocksPerCta) {
    backwardSplit = maxBlocksPerCta;
    backwardWorkBatchHeads = 0;
  }
  /// What the last backward() ran, summed over the layer's segments: dK/dV
  /// CTAs per batch group, key blocks split and their parts.
  struct BackwardSplitStats {
    int64_t items = 0, splitKeyBlocks = 0, parts = 0, maxBlocksPerCta = 0;
  };
  BackwardSplitStats getBackwardSplitStats() const { return splitStats; }

  /// Decode (sampling): attention of one new query row per batch-head at
  /// `position` (the same for every batch-head), residual layer `layer`,
  /// against a KV cache that holds keys and values of rows 0..position.
  /// q, o: [batchHeads, D]; kCache, vCache: [batchHeads, capacity, D], all of
  /// the plan's dtype; lse: [batchHeads] fp32 (natural log). Rows of the
  /// cache past `position` are never read. Gives the forward pass's row
  /// `position`. Only the key blocks of that row are visited; a long row is
  /// split over several CTAs whose parts are merged by log-sum-exp (fp32
  /// workspace of (D + 1) floats per part and batch-head, reserved on
  /// demand). Needs a causal pattern and 0 <= position < min(n, capacity).
  /// scale <= 0 means 1/sqrt(D). Enqueues on `stream`; does not synchronize.
  llvm::Error decode(int64_t layer, int64_t batchHeads, int64_t position,
                     cuda::DevicePtr q, cuda::DevicePtr kCache,
                     cuda::DevicePtr vCache, int64_t capacity, cuda::DevicePtr o,
                     cuda::DevicePtr lse, double scale = 0,
                     cuda::Stream stream = nullptr);

  /// The same with the position read from device memory when the kernels
  /// run (`position`: one int32): every launch has the same shape at every
  /// position (that of the kernel's longest row; a shorter row leaves CTAs
  /// idle), so that captured work (a CUDA graph) serves every position. A
  /// position outside [0, min(n, capacity)) gives O = 0 and LSE = -inf. The
  /// first call builds per kernel a table of query blocks over positions
  /// (4 bytes per position and kernel).
  /// With o32, O goes there in fp32 instead of o: the first o32Dim
  /// dimensions of each batch-head's row, [batchHeads, o32Dim] (what a model
  /// reads next; no conversion launch), always through the merge.
  llvm::Error decodeAt(int64_t layer, int64_t batchHeads,
                       cuda::DevicePtr position, cuda::DevicePtr q,
                       cuda::DevicePtr kCache, cuda::DevicePtr vCache,
                       int64_t capacity, cuda::DevicePtr o, cuda::DevicePtr lse,
                       double scale = 0, cuda::Stream stream = nullptr,
                       cuda::DevicePtr o32 = 0, int64_t o32Dim = 0);

  /// decodeAt's work for a persistent kernel that runs it itself (the
  /// model's decoding step, decode_step.cuh), calling the generated
  /// `sparsetx_gen::decodeRow(kernelId, args)` once per (row group, split) of
  /// each entry with DecodeRowArgs{positionAt, queryBlockAt, maxSplits =
  /// splits, finalOutput = 0} and the parts o + partBase * batchHeads * D,
  /// lse + partBase * batchHeads. Row splits are chosen for `targetCtas`
  /// CTAs. numParts: the parts a batch-head's row has at most; the merge
  /// (log-sum-exp over parts 0..numParts-1 of each batch-head) must find
  /// O = 0, LSE = -inf in the parts no entry writes for that batch-head.
  struct DecodeWork {
    int kernelId = 0;
    int64_t rowGroups = 0; // batchHeads / (the mask's heads per launch)
    int splits = 1, partBase = 0;
    /// Row group r serves batch-head r * headsPerLaunch + head.
    int headsPerLaunch = 1, head = 0;
    cuda::DevicePtr queryBlockAt = 0;
  };
  llvm::Expected<std::vector<DecodeWork>>
  decodeWork(int64_t layer, int64_t batchHeads, int64_t targetCtas,
             int64_t &numParts);
  /// Decode's kernels (the row's parts and the merge) launched to overlap
  /// the stream's previous kernel (cuda::launch with overlap = true: they wait for it
  /// after the row's table walk); only on sm_90 and later, where a model
  /// whose other kernels do the same gains the launch gaps. Off by default.
  void setOverlapLaunches(bool on) { overlapLaunches = on; }

  /// The int32 tables the generated kernels read (DecodeRowArgs::tables).
  cuda::DevicePtr getTables() const { return tables.get(); }

  /// Key blocks that mapped query block `queryBlock` of kernel `kernel` of
  /// mask `mask` visits (every segment); what decode splits.
  int64_t rowKeyBlocks(size_t mask, size_t kernel, int64_t queryBlock) const;

private:
  struct MaskFunctions {
    std::vector<cuda::Function> kernels;
    cuda::Function merge = nullptr;
    /// Backward: per kernel the dQ kernel and per segment the dK/dV kernel
    /// and the dK/dV kernel with dQ fused in.
    std::vector<cuda::Function> dq;
    std::vector<std::vector<cuda::Function>> dkdv, dkdvdq, reduce;
    /// Decode: per kernel the decode kernel and its query map at n (position
    /// -> mapped index).
    std::vector<cuda::Function> decode;
    std::vector<BoundIndexMap> queryMaps;
  };
  llvm::Error reserveDecodeWorkspace(size_t floats);
  /// decode (position >= 0) or decodeAt (devicePosition != 0).
  llvm::Error decodeImpl(int64_t layer, int64_t batchHeads, int64_t position,
                         cuda::DevicePtr devicePosition, cuda::DevicePtr q,
                         cuda::DevicePtr kCache, cuda::DevicePtr vCache,
                         int64_t capacity, cuda::DevicePtr o,
                         cuda::DevicePtr lse, double scale, cuda::Stream stream,
                         cuda::DevicePtr o32, int64_t o32Dim);
  llvm::Error buildDecodeTables();
  /// One of decode's launches: overlapping or not (setOverlapLaunches).
  llvm::Error launchDecode(cuda::Function fn, cuda::Dim3 grid, cuda::Dim3 block,
                           cuda::Stream stream, llvm::ArrayRef<void *> args) const;
  /// decodeImpl's launches: per mask of the layer its (kernel, query block,
  /// splits), and its parts (splits summed); checks the pattern and batch.
  struct DecodeLaunch {
    size_t kernel;
    int queryBlock;
    int64_t splits;
  };
  llvm::Error planDecode(int64_t layer, int64_t batchHeads, int64_t position,
                         bool onDevice, int64_t targetCtas,
                         std::vector<size_t> &masks,
                         std::vector<std::vector<DecodeLaunch>> &launches,
                         std::vector<int64_t> &parts);
  llvm::Error reserveWorkspace(int64_t batchHeads);
  llvm::Error reserveBackwardWorkspace(int64_t batchHeads);
  llvm::Error planBackwardWork(int64_t batchHeads);

  codegen::GeneratedAttention gen;
  cuda::Module module;
  std::vector<MaskFunctions> functions;
  cuda::DeviceBuffer tables;
  /// fp32 partial outputs of masks with several kernels:
  /// O parts [kernels][bh][n][D], then LSE parts [kernels][bh][n].
  cuda::DeviceBuffer workspace;
  int64_t workspaceBatchHeads = 0;
  cuda::Function backwardPrepare = nullptr, backwardConvert = nullptr;
  /// Backward: dQacc, dKacc, dVacc [bh][n][D] fp32, then Delta [bh][n].
  cuda::DeviceBuffer backwardWorkspace;
  int64_t backwardBatchHeads = 0;
  bool deterministicBackward = false;
  /// The dK/dV work of one segment: items (key block, begin, end, slot) and
  /// reduce items (key block, first slot, parts, 0) in backwardWorkTable.
  struct SegmentWork {
    int64_t workOffset = 0, numItems = 0, reduceOffset = 0, numReduce = 0;
    int64_t numSlots = 0, maxBlocksPerCta = 0;
  };
  /// [mask][kernel][segment], for backwardWorkBatchHeads.
  std::vector<std::vector<std::vector<SegmentWork>>> backwardWork;
  cuda::DeviceBuffer backwardWorkTable;
  /// Partial dK, dV of split key blocks: [slot][group][2][64][D] fp32.
  cuda::DeviceBuffer backwardPartials;
  int64_t backwardWorkBatchHeads = 0;
  int64_t backwardSplit = 0;
  BackwardSplitStats splitStats;
  cuda::Function decodeMerge = nullptr;
  /// Decode parts: O [parts][bh][D], then LSE [parts][bh], fp32.
  cuda::DeviceBuffer decodeWorkspace;
  /// decodeAt: per mask and kernel, where its query blocks over positions
  /// start in decodeTableBuffer and its longest row's key blocks.
  struct DecodeTable {
    int64_t offset = 0, maxBlocks = 0;
  };
  std::vector<std::vector<DecodeTable>> decodeTables;
  cuda::DeviceBuffer decodeTableBuffer;
  /// Decode's merge tickets, one per batch-head (zero between decodes).
  cuda::DeviceBuffer decodeCounters;
  /// Decode splits a row into enough CTAs to fill the device.
  int numSMs = 0;
  bool overlapLaunches = false;
};

} // namespace sparsetx

#endif // SPARSETX_CODEGEN_ATTENTIONPLAN_H
