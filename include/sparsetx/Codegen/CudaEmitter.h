//===- CudaEmitter.h - CUDA C++ for a pattern's attention kernels -*- C++ -*-===//
//
// From a specialized, decomposed sp.pattern and its PatternLayout, emits the
// CUDA C++ that instantiates the hand-written kernel templates of
// codegen/kernels/ (embedded in the library, see KernelSources.h): per mask
// and kernel a `Variant` struct (index maps as closed-form device functions,
// each component's schedule and mask predicate) and `extern "C"` entry points,
// plus the int32 table data those kernels read and a manifest describing how
// to launch them: the forward pass, its merge, and the backward pass.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_CODEGEN_CUDAEMITTER_H
#define SPARSETX_CODEGEN_CUDAEMITTER_H

#include "sparsetx/Analysis/PatternLayout.h"
#include "sparsetx/Dialect/SP/IR/SP.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sparsetx::codegen {

enum class ElementType { BF16, FP16 };

llvm::StringRef getElementTypeName(ElementType type); // "bf16" / "fp16"
std::optional<ElementType> parseElementType(llvm::StringRef name);

struct CodegenOptions {
  int64_t headDim = 64;          // 32, 64 or 128
  ElementType dtype = ElementType::BF16;
  std::string arch = "sm_90a";   // recorded in the manifest; NVRTC's target
  /// Also emit the backward kernels (dQ, dK, dV).
  bool backward = true;
  /// Also emit the decode kernels (one query row against a KV cache); only
  /// causal patterns get them.
  bool decode = true;
  /// Dispatch order of the forward and dQ kernels' query blocks: 0 (auto)
  /// sorts them longest key list first where the lists' lengths vary (the
  /// longest over 1.25 x the mean, as in causal patterns), else keeps index
  /// order; 1 always sorts; -1 never does.
  int queryOrder = 0;
  /// On sm_90a, the forward kernels of head dims 64 and 128 use wgmma
  /// (attention_forward_wgmma.cuh) instead of the mma.sync kernel every
  /// architecture has (measured on an H100: 1.04-1.57x the mma.sync forward on
  /// every shipped pattern, docs/benchmarks.md).
  bool forwardWgmma = true;
  /// On sm_90a, the backward's dK/dV kernels (with the fused dQ or without)
  /// and the deterministic mode's dQ kernel of head dim 64 may use wgmma
  /// (attention_backward_wgmma.cuh): a segment's dK/dV kernels do where its
  /// by-key lists average at least backwardWgmmaMinBlocks blocks, a kernel's
  /// dQ kernel where its query blocks' lists (every segment) do. Short lists
  /// (the strided and local bands, 1.5 to 5 blocks) run faster on mma.sync,
  /// long ones (dense, the fixed pattern's summary columns) on wgmma.
  bool backwardWgmma = true;
  /// 0: every dK/dV and dQ kernel of head dim 64 on wgmma (backwardWgmma).
  int64_t backwardWgmmaMinBlocks = 8;
};

/// Dynamic shared memory of the dK/dV kernels and of the deterministic
/// mode's dQ kernel `options` select (the generated source asserts the
/// kernel templates agree).
/// `wgmma`: for the wgmma kernels (which `options` must allow: sm_90a, head
/// dim 64), else the mma.sync ones.
unsigned backwardDkDvSharedBytes(const CodegenOptions &options, bool wgmma);
unsigned backwardDqSharedBytes(const CodegenOptions &options, bool wgmma);
/// Whether `options` allow the wgmma backward kernels at all (backwardWgmma,
/// sm_90a, head dim 64); which kernels take them depends on their lists.
bool allowsBackwardWgmma(const CodegenOptions &options);

/// Dynamic shared memory of the forward kernels `options` select (the
/// generated source asserts the kernel templates agree).
unsigned forwardSharedBytes(const CodegenOptions &options);

/// Threads per CTA and rows per merge CTA of the kernel templates.
constexpr unsigned kForwardThreads = 128;
constexpr unsigned kMergeThreads = 128;
constexpr unsigned kMergeRowsPerBlock = 4;
/// The backward kernels (attention_backward.cuh).
constexpr unsigned kBackwardThreads = 128;
constexpr unsigned kBackwardPrepareRows = 4;
constexpr unsigned kBackwardConvertThreads = 256;
/// The decode kernels (attention_decode.cuh): per kernel plan one CTA per
/// split of a row, and the log-sum-exp merge of the parts, one CTA per row.
constexpr unsigned kDecodeThreads = 128;
constexpr unsigned kDecodeMergeThreads = 128;
/// Decode splits a row over CTAs of at least this many key blocks each (as
/// attention_decode.cuh's kDecodeMinBlocksPerSplit).
constexpr int64_t kDecodeMinBlocksPerSplit = 2;

/// Where one component's schedule lives in the table data (int32 offsets).
struct SegmentInfo {
  unsigned component = 0;
  std::string keyMap;
  int64_t numKeys = 0;
  bool rangeSchedule = true;
  /// Range: begin/end/fullBegin/fullEnd arrays start at offsets[0] (each
  /// numQueryBlocks long). Table: full offsets, full indices, partial
  /// offsets, partial indices.
  std::vector<int64_t> offsets;
  /// Backward: key blocks (grid.x of the dK/dV kernel), the transposed
  /// tables (full offsets, full indices, partial offsets, partial indices,
  /// by key block) and the dK/dV entry point of this segment.
  int64_t numKeyBlocks = 0;
  std::vector<int64_t> byKeyOffsets;
  std::string backwardDkDvName; // sparsetx_bwd_dkdv_<pattern>_m<m>_k<k>_s<s>
  /// The same with dQ fused in (fp32 reductions into dq_acc; the fast
  /// default, not bit-reproducible): sparsetx_bwd_dkdvq_<...>.
  std::string backwardDkDvDqName;
  /// Adds the parts of the key blocks whose query lists the runtime split
  /// over several CTAs (fixed order): sparsetx_bwd_reduce_<...>.
  std::string backwardReduceName;
  /// The dK/dV kernels run on wgmma (CodegenOptions::backwardWgmma and the
  /// segment's lists), and their dynamic shared memory.
  bool backwardWgmma = false;
  unsigned backwardDkDvSharedBytes = 0;
};

struct ForwardKernelInfo {
  std::string name;         // sparsetx_fwd_<pattern>_m<mask>_k<kernel>
  std::string queryMap;
  int64_t numQueries = 0;   // mapped query indices
  int64_t numQueryBlocks = 0; // grid.x = numQueryBlocks * batch groups
  /// Table offset of the query blocks in dispatch order (longest key list
  /// first): CTA x of the forward and dQ kernels takes query block
  /// tables[orderOffset + x / groups] of batch group x % groups. -1: index
  /// order, query block x % numQueryBlocks of batch group x / numQueryBlocks.
  int64_t orderOffset = -1;
  /// Writes fp32 O and LSE into partial buffer `kernel` for the merge
  /// (several kernels), else the final O (element type) and LSE.
  bool partialOutput = false;
  std::vector<SegmentInfo> segments;
  std::string backwardDqName; // sparsetx_bwd_dq_<pattern>_m<mask>_k<kernel>
  /// The dQ kernel runs on wgmma, and its dynamic shared memory.
  bool backwardDqWgmma = false;
  unsigned backwardDqSharedBytes = 0;
  std::string decodeName;     // sparsetx_dec_<pattern>_m<mask>_k<kernel>
};

struct MaskKernels {
  std::optional<int64_t> layer, head;
  std::vector<ForwardKernelInfo> kernels;
  std::string mergeName;    // empty unless kernels.size() > 1
};

/// Everything generated for one pattern at one n, head dim and dtype.
struct GeneratedAttention {
  std::string pattern;
  int64_t seqLen = 0;
  int64_t headDim = 0;
  ElementType dtype = ElementType::BF16;
  std::string arch;
  bool causal = false;
  /// Per-head masks: the pattern's head count; grid.y = batchHeads / numHeads
  /// and mask `head` serves batch-heads bh with bh % numHeads == head. 1 for
  /// patterns without per-head masks.
  int64_t numHeads = 1;
  bool perHead = false, layered = false;
  int64_t blockQ = 64, blockK = 64;
  unsigned forwardSharedBytes = 0;
  /// Backward kernels (empty names when not generated): Delta and zeroed
  /// accumulators, fp32 -> element conversion (the dQ and dK/dV kernels'
  /// shared memory is per kernel and segment).
  std::string backwardPrepareName, backwardConvertName;
  bool hasBackward() const { return !backwardPrepareName.empty(); }
  /// Decode: the merge of the split parts (one per pattern; the per-kernel
  /// entry points are ForwardKernelInfo::decodeName). Empty when not
  /// generated (not asked for, or the pattern is not causal).
  std::string decodeMergeName;
  bool hasDecode() const { return !decodeMergeName.empty(); }
  std::vector<int32_t> tables;
  std::vector<MaskKernels> masks;
  std::string source;       // the CUDA C++ (includes the embedded headers)

  /// The most kernels any mask runs (the partial buffers a merge needs).
  size_t maxKernelsPerMask() const;
};

/// Generates the forward kernels of `pattern` (specialized at layout.seqLen,
/// decomposed) with `layout` = computeLayout(pattern). Errors (unsupported
/// options or ops) are emitted as diagnostics at the pattern or the op.
mlir::FailureOr<GeneratedAttention>
generateForward(sp::PatternOp pattern, const PatternLayout &layout,
                const CodegenOptions &options);

/// The manifest (`sparsec -o x.ptx` writes it as x.ptx.json): kernel names,
/// launch shapes, shared memory, masks, tables.
void printManifestJSON(const GeneratedAttention &generated,
                       llvm::StringRef ptxFile, llvm::raw_ostream &os);

/// The embedded kernel headers, as (include name, contents) for NVRTC:
/// "sparsetx/common.cuh", "sparsetx/attention_forward.cuh", ...
const std::vector<std::pair<std::string, std::string>> &kernelHeaders();

/// NVRTC flags the generated source expects (beyond --gpu-architecture).
std::vector<std::string> nvrtcFlags();

} // namespace sparsetx::codegen

#endif // SPARSETX_CODEGEN_CUDAEMITTER_H
