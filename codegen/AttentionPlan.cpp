//===- AttentionPlan.cpp - a pattern's attention kernels, runnable --------===//
//
// Launch shapes come from the generated description, never from constants
// repeated here: grid (query blocks, batchHeads / heads per launch), 128
// threads, the forward kernel's dynamic shared memory (above 48 KiB for head
// dim 128, hence the opt-in). Masks with several kernels write fp32 partial
// outputs to a workspace the merge reads; it is allocated once per batch size
// and reused.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Codegen/AttentionPlan.h"

#include "sparsetx/DSL/AST.h"
#include "sparsetx/DSL/MLIRGen.h"
#include "sparsetx/DSL/Parser.h"
#include "sparsetx/DSL/Sema.h"
#include "sparsetx/Dialect/SP/Transforms/Passes.h"
#include "sparsetx/InitAll.h"
#include "sparsetx/Runtime/Nvrtc.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"

#include <algorithm>
#include <cmath>
#include <functional>

using namespace mlir;

namespace sparsetx {

namespace {
llvm::Error makeError(const llvm::Twine &message) {
  return llvm::make_error<llvm::StringError>(message, llvm::inconvertibleErrorCode());
}
} // namespace

llvm::Expected<std::unique_ptr<CompiledPattern>>
compilePattern(llvm::StringRef text, llvm::StringRef bufferName,
               const PatternCompileOptions &options) {
  if (options.seqLen <= 0)
    return makeError("compilePattern needs a positive sequence length");
  auto result = std::make_unique<CompiledPattern>();
  DialectRegistry registry;
  registerAllDialects(registry);
  result->context = std::make_unique<MLIRContext>(registry);
  MLIRContext &context = *result->context;
  context.loadAllAvailableDialects();
  context.printOpOnDiagnostic(false);

  llvm::SourceMgr sourceMgr;
  unsigned bufferId = sourceMgr.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(text, bufferName), llvm::SMLoc());
  std::string diagnostics;
  llvm::raw_string_ostream diagOS(diagnostics);
  SourceMgrDiagnosticHandler handler(sourceMgr, &context, diagOS);
  auto fail = [&](llvm::StringRef what) {
    return makeError(what + ": " + llvm::StringRef(diagnostics).rtrim());
  };

  dsl::SourceLocator locator(sourceMgr, &context);
  dsl::SemaOptions sema;
  sema.seqLen = options.seqLen;
  sema.overrides = options.defines;
  std::unique_ptr<dsl::Module> ast = dsl::parseModule(locator, bufferId);
  if (!ast || failed(dsl::checkModule(*ast, locator, sema)))
    return fail("cannot parse " + bufferName.str());
  if (!options.patternName.empty()) {
    auto it = llvm::find_if(ast->patterns, [&](const auto &p) {
      return p->name == options.patternName;
    });
    if (it == ast->patterns.end())
      return makeError("no pattern named '" + options.patternName + "' in " +
                       bufferName);
    auto selected = std::move(*it);
    ast->patterns.clear();
    ast->patterns.push_back(std::move(selected));
  }
  if (ast->patterns.size() != 1)
    return makeError(bufferName + " has " + llvm::Twine(ast->patterns.size()) +
                     " patterns; pick one with patternName");
  result->source = dsl::mlirGen(*ast, locator);
  if (!result->source)
    return fail("cannot lower " + bufferName.str());
  Builder b(&context);
  for (auto pattern : result->source->getBody()->getOps<sp::PatternOp>()) {
    if (options.numHeads > 0)
      pattern.setNumHeadsAttr(b.getI64IntegerAttr(options.numHeads));
    pattern.setSeqLenAttr(b.getI64IntegerAttr(options.seqLen));
    result->sourcePattern = pattern;
  }

  result->specialized = result->source->clone();
  PassManager pm(&context);
  sp::SPSpecializeOptions specialize;
  specialize.seqLen = options.seqLen;
  specialize.numHeads = options.numHeads;
  pm.addPass(sp::createSPSpecialize(specialize));
  pm.addPass(sp::createSPVerify());
  pm.addPass(sp::createSPDecompose());
  if (failed(pm.run(*result->specialized)))
    return fail("cannot specialize " + bufferName.str());
  result->pattern =
      *result->specialized->getBody()->getOps<sp::PatternOp>().begin();
  FailureOr<PatternLayout> layout = computeLayout(result->pattern, LayoutOptions());
  if (failed(layout))
    return fail("cannot lay out " + bufferName.str());
  result->layout = std::move(*layout);
  return std::move(result);
}

llvm::Expected<AttentionPlan>
AttentionPlan::compile(codegen::GeneratedAttention generated) {
  nvrtc::CompileOptions options;
  options.arch = generated.arch;
  options.flags = codegen::nvrtcFlags();
  llvm::Expected<std::string> ptx =
      nvrtc::compileToPTX(generated.source, generated.pattern + ".cu", options,
                          codegen::kernelHeaders());
  if (!ptx)
    return ptx.takeError();
  return load(std::move(generated), *ptx);
}

llvm::Expected<AttentionPlan>
AttentionPlan::load(codegen::GeneratedAttention generated, llvm::StringRef ptx) {
  AttentionPlan plan;
  plan.gen = std::move(generated);
  llvm::Expected<cuda::Module> module = cuda::Module::load(ptx);
  if (!module)
    return module.takeError();
  plan.module = std::move(*module);
  for (const codegen::MaskKernels &mask : plan.gen.masks) {
    MaskFunctions fns;
    for (const codegen::ForwardKernelInfo &kernel : mask.kernels) {
      llvm::Expected<cuda::Function> fn = plan.module.getFunction(kernel.name);
      if (!fn)
        return fn.takeError();
      if (llvm::Error err = cuda::setMaxDynamicSharedMemory(
              *fn, int(plan.gen.forwardSharedBytes)))
        return std::move(err);
      fns.kernels.push_back(*fn);
    }
    for (const codegen::ForwardKernelInfo &kernel : mask.kernels) {
      if (kernel.backwardDqName.empty())
        continue;
      auto get = [&](const std::string &name,
                     unsigned sharedBytes) -> llvm::Expected<cuda::Function> {
        llvm::Expected<cuda::Function> fn = plan.module.getFunction(name);
        if (!fn)
          return fn.takeError();
        if (llvm::Error err =
                cuda::setMaxDynamicSharedMemory(*fn, int(sharedBytes)))
          return std::move(err);
        return *fn;
      };
      llvm::Expected<cuda::Function> dq =
          get(kernel.backwardDqName, kernel.backwardDqSharedBytes);
      if (!dq)
        return dq.takeError();
      fns.dq.push_back(*dq);
      fns.dkdv.emplace_back();
      fns.dkdvdq.emplace_back();
      fns.reduce.emplace_back();
      for (const codegen::SegmentInfo &seg : kernel.segments) {
        llvm::Expected<cuda::Function> fn =
            get(seg.backwardDkDvName, seg.backwardDkDvSharedBytes);
        if (!fn)
          return fn.takeError();
        fns.dkdv.back().push_back(*fn);
        llvm::Expected<cuda::Function> fused =
            get(seg.backwardDkDvDqName, seg.backwardDkDvSharedBytes);
        if (!fused)
          return fused.takeError();
        fns.dkdvdq.back().push_back(*fused);
        llvm::Expected<cuda::Function> reduce =
            plan.module.getFunction(seg.backwardReduceName);
        if (!reduce)
          return reduce.takeError();
        fns.reduce.back().push_back(*reduce);
      }
    }
    for (const codegen::ForwardKernelInfo &kernel : mask.kernels) {
      if (kernel.decodeName.empty())
        continue;
      llvm::Expected<cuda::Function> fn = plan.module.getFunction(kernel.decodeName);
      if (!fn)
        return fn.takeError();
      fns.decode.push_back(*fn);
      std::string error;
      FailureOr<IndexMap> map = IndexMap::parse(kernel.queryMap, error);
      if (failed(map))
        return makeError("kernel " + kernel.name + ": bad query map '" +
                         kernel.queryMap + "': " + error);
      fns.queryMaps.emplace_back(*map, plan.gen.seqLen);
    }
    if (!fns.decode.empty() && fns.decode.size() != mask.kernels.size())
      return makeError("pattern '" + plan.gen.pattern +
                       "': decode kernels generated for some kernels only");
    if (!mask.mergeName.empty()) {
      llvm::Expected<cuda::Function> fn = plan.module.getFunction(mask.mergeName);
      if (!fn)
        return fn.takeError();
      fns.merge = *fn;
    }
    plan.functions.push_back(fns);
  }
  if (plan.gen.hasBackward()) {
    llvm::Expected<cuda::Function> prepare =
        plan.module.getFunction(plan.gen.backwardPrepareName);
    if (!prepare)
      return prepare.takeError();
    plan.backwardPrepare = *prepare;
    llvm::Expected<cuda::Function> convert =
        plan.module.getFunction(plan.gen.backwardConvertName);
    if (!convert)
      return convert.takeError();
    plan.backwardConvert = *convert;
  }
  if (plan.gen.hasDecode()) {
    llvm::Expected<cuda::Function> merge =
        plan.module.getFunction(plan.gen.decodeMergeName);
    if (!merge)
      return merge.takeError();
    plan.decodeMerge = *merge;
  }
  if (plan.gen.hasDecode() || plan.gen.hasBackward()) {
    llvm::Expected<int> sms = cuda::currentDeviceMultiprocessorCount();
    if (!sms)
      return sms.takeError();
    plan.numSMs = *sms;
  }
  // Never a null pointer, even for a pattern without tables.
  size_t bytes = std::max<size_t>(4, plan.gen.tables.size() * sizeof(int32_t));
  llvm::Expected<cuda::DeviceBuffer> tables = cuda::DeviceBuffer::allocate(bytes);
  if (!tables)
    return tables.takeError();
  plan.tables = std::move(*tables);
  if (!plan.gen.tables.empty())
    if (llvm::Error err = plan.tables.copyFromHost(
            plan.gen.tables.data(), plan.gen.tables.size() * sizeof(int32_t)))
      return std::move(err);
  return std::move(plan);
}

std::vector<size_t> AttentionPlan::masksOfLayer(int64_t layer) const {
  std::vector<size_t> result;
  if (gen.layered) {
    int64_t count = static_cast<int64_t>(gen.masks.size());
    result.push_back(static_cast<size_t>(((layer % count) + count) % count));
    return result;
  }
  for (size_t m = 0; m < gen.masks.size(); ++m)
    result.push_back(m);
  return result;
}

llvm::Error AttentionPlan::reserveWorkspace(int64_t batchHeads) {
  if (batchHeads <= workspaceBatchHeads)
    return llvm::Error::success();
  size_t parts = gen.maxKernelsPerMask();
  size_t rows = parts * size_t(batchHeads) * size_t(gen.seqLen);
  llvm::Expected<cuda::DeviceBuffer> buffer = cuda::DeviceBuffer::allocate(
      rows * size_t(gen.headDim + 1) * sizeof(float));
  if (!buffer)
    return buffer.takeError();
  workspace = std::move(*buffer);
  workspaceBatchHeads = batchHeads;
  return llvm::Error::success();
}

llvm::Error AttentionPlan::forward(int64_t layer, int64_t batchHeads,
                                   cuda::DevicePtr q, cuda::DevicePtr k,
                                   cuda::DevicePtr v, cuda::DevicePtr o,
                                   cuda::DevicePtr lse, double scale,
                                   cuda::Stream stream) {
  for (size_t mask : masksOfLayer(layer))
    if (llvm::Error err =
            forwardMask(mask, batchHeads, q, k, v, o, lse, scale, stream))
      return err;
  return llvm::Error::success();
}

llvm::Error AttentionPlan::forwardMask(size_t maskIndex, int64_t batchHeads,
                                       cuda::DevicePtr q, cuda::DevicePtr k,
                                       cuda::DevicePtr v, cuda::DevicePtr o,
                                       cuda::DevicePtr lse, double scale,
                                       cuda::Stream stream) {
  if (maskIndex >= gen.masks.size())
    return makeError("mask " + llvm::Twine(maskIndex) + " out of range");
  const codegen::MaskKernels &mask = gen.masks[maskIndex];
  const MaskFunctions &fns = functions[maskIndex];
  int64_t headsPerLaunch = mask.head ? gen.numHeads : 1;
  if (batchHeads <= 0 || batchHeads % headsPerLaunch != 0)
    return makeError("batchHeads = " + llvm::Twine(batchHeads) +
                     " is not a positive multiple of the pattern's " +
                     llvm::Twine(headsPerLaunch) + " heads");
  float scaleArg = float(scale > 0 ? scale : 1.0 / std::sqrt(double(gen.headDim)));
  unsigned gridY = unsigned(batchHeads / headsPerLaunch);
  cuda::DevicePtr tablePtr = tables.get();

  cuda::DevicePtr oParts = 0, lseParts = 0;
  size_t partRows = size_t(batchHeads) * size_t(gen.seqLen);
  if (mask.kernels.size() > 1) {
    if (llvm::Error err = reserveWorkspace(batchHeads))
      return err;
    oParts = workspace.get();
    lseParts = oParts + mask.kernels.size() * partRows * gen.headDim * sizeof(float);
  }
  for (size_t kIdx = 0; kIdx < mask.kernels.size(); ++kIdx) {
    const codegen::ForwardKernelInfo &kernel = mask.kernels[kIdx];
    cuda::DevicePtr out = o, outLse = lse;
    if (kernel.partialOutput) {
      out = oParts + kIdx * partRows * gen.headDim * sizeof(float);
      outLse = lseParts + kIdx * partRows * sizeof(float);
    }
    void *args[] = {&q, &k, &v, &out, &outLse, &tablePtr, &scaleArg};
    cuda::Dim3 grid{unsigned(kernel.numQueryBlocks) * gridY, 1, 1};
    cuda::Dim3 block{codegen::kForwardThreads, 1, 1};
    if (llvm::Error err = cuda::launch(fns.kernels[kIdx], grid, block,
                                       gen.forwardSharedBytes, stream, args))
      return err;
  }
  if (fns.merge) {
    void *args[] = {&oParts, &lseParts, &o, &lse};
    cuda::Dim3 grid{unsigned((gen.seqLen + codegen::kMergeRowsPerBlock - 1) /
                             codegen::kMergeRowsPerBlock),
                    gridY, 1};
    cuda::Dim3 block{codegen::kMergeThreads, 1, 1};
    if (llvm::Error err = cuda::launch(fns.merge, grid, block, 0, stream, args))
      return err;
  }
  return llvm::Error::success();
}

llvm::Error AttentionPlan::reserveBackwardWorkspace(int64_t batchHeads) {
  if (batchHeads <= backwardBatchHeads)
    return llvm::Error::success();
  size_t rows = size_t(batchHeads) * size_t(gen.seqLen);
  llvm::Expected<cuda::DeviceBuffer> buffer = cuda::DeviceBuffer::allocate(
      rows * size_t(3 * gen.headDim + 1) * sizeof(float));
  if (!buffer)
    return buffer.takeError();
  backwardWorkspace = std::move(*buffer);
  backwardBatchHeads = batchHeads;
  return llvm::Error::success();
}

namespace {

/// Estimated makespan, in query-block steps, of dK/dV work items (lengths in
/// dispatch order, each run `groups` times back to back) greedily placed on
/// `slots` concurrent CTAs. A CTA costs one step beside its blocks (loading
/// K and V, writing dK and dV), a part of a split key block one more (its
/// partial store and the reduce's read).
double estimateMakespan(llvm::ArrayRef<int64_t> lengths, bool split,
                        int64_t groups, int64_t slots) {
  std::vector<double> heap(size_t(std::max<int64_t>(slots, 1)), 0.0);
  std::make_heap(heap.begin(), heap.end(), std::greater<double>());
  double makespan = 0;
  for (int64_t len : lengths) {
    const double cost = double(len) + 1.0 + (split ? 1.0 : 0.0);
    for (int64_t g = 0; g < groups; ++g) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<double>());
      heap.back() += cost;
      makespan = std::max(makespan, heap.back());
      std::push_heap(heap.begin(), heap.end(), std::greater<double>());
    }
  }
  return makespan;
}

/// Lengths of the items when every list longer than `chunk` is cut into
/// ceil(count / chunk) near-equal parts, longest first.
std::vector<int64_t> itemLengths(llvm::ArrayRef<int64_t> counts, int64_t chunk) {
  std::vector<int64_t> lengths;
  for (int64_t c : counts) {
    if (c == 0)
      continue;
    const int64_t parts = c > chunk ? (c + chunk - 1) / chunk : 1;
    for (int64_t p = 0; p < parts; ++p)
      lengths.push_back((p + 1) * c / parts - p * c / parts);
  }
  std::stable_sort(lengths.begin(), lengths.end(), std::greater<int64_t>());
  return lengths;
}

/// The longest list a CTA walks (lists longer are split), by `setting`
/// (AttentionPlan::setBackwardSplit) or, for 0, the candidate with the lowest
/// estimated makespan: the largest whose estimate is within 2% of the best,
/// and none at all unless that saves 5%.
int64_t chooseChunk(llvm::ArrayRef<int64_t> counts, int64_t groups,
                    int64_t slots, int64_t setting) {
  const int64_t longest =
      counts.empty() ? 0 : *std::max_element(counts.begin(), counts.end());
  if (setting < 0 || longest <= 2)
    return std::max<int64_t>(longest, 1);
  if (setting > 0)
    return setting;
  const double unsplit =
      estimateMakespan(itemLengths(counts, longest), false, groups, slots);
  std::vector<std::pair<int64_t, double>> candidates;
  double best = unsplit;
  for (int64_t k = 2; k <= 32; ++k) {
    const int64_t chunk = std::max<int64_t>(2, (longest + k - 1) / k);
    if (!candidates.empty() && candidates.back().first == chunk)
      continue;
    const double est =
        estimateMakespan(itemLengths(counts, chunk), true, groups, slots);
    candidates.push_back({chunk, est});
    best = std::min(best, est);
    if (chunk == 2)
      break;
  }
  for (const auto &[chunk, est] : candidates) // largest chunk first
    if (est <= best * 1.02)
      return est <= 0.95 * unsplit ? chunk : longest;
  return longest;
}

} // namespace

llvm::Error AttentionPlan::planBackwardWork(int64_t batchHeads) {
  if (batchHeads == backwardWorkBatchHeads)
    return llvm::Error::success();
  // Two dK/dV CTAs fit an SM at every head dim (registers: 128 threads of
  // 182-254; shared memory 41-112 KiB).
  const int64_t slots = 2 * int64_t(std::max(numSMs, 1));
  std::vector<int32_t> table;
  int64_t partialFloats = 0;
  backwardWork.assign(gen.masks.size(), {});
  for (size_t m = 0; m < gen.masks.size(); ++m) {
    const codegen::MaskKernels &mask = gen.masks[m];
    const int64_t groups = batchHeads / (mask.head ? gen.numHeads : 1);
    for (const codegen::ForwardKernelInfo &kernel : mask.kernels) {
      backwardWork[m].emplace_back();
      for (const codegen::SegmentInfo &seg : kernel.segments) {
        SegmentWork w;
        // By key block: full offsets, full indices, partial offsets,
        // partial indices.
        std::vector<int64_t> counts(size_t(seg.numKeyBlocks), 0);
        if (seg.byKeyOffsets.size() == 4)
          for (int64_t kb = 0; kb < seg.numKeyBlocks; ++kb)
            for (int t : {0, 2})
              counts[kb] += gen.tables[seg.byKeyOffsets[t] + kb + 1] -
                            gen.tables[seg.byKeyOffsets[t] + kb];
        const int64_t chunk = chooseChunk(counts, groups, slots, backwardSplit);
        w.maxBlocksPerCta = chunk;
        struct Item {
          int32_t kb, begin, end, slot;
        };
        std::vector<Item> items;
        std::vector<int32_t> reduce;
        for (int64_t kb = 0; kb < seg.numKeyBlocks; ++kb) {
          const int64_t c = counts[kb];
          if (c == 0)
            continue; // nothing reaches it: its gradients stay zero
          const int64_t parts = c > chunk ? (c + chunk - 1) / chunk : 1;
          if (parts > 1)
            reduce.insert(reduce.end(), {int32_t(kb), int32_t(w.numSlots),
                                         int32_t(parts), 0});
          for (int64_t p = 0; p < parts; ++p)
            items.push_back({int32_t(kb), int32_t(p * c / parts),
                             int32_t((p + 1) * c / parts),
                             parts > 1 ? int32_t(w.numSlots + p) : -1});
          if (parts > 1)
            w.numSlots += parts;
        }
        // Longest first: the order the grid dispatches them in.
        std::stable_sort(items.begin(), items.end(),
                         [](const Item &a, const Item &b) {
                           return a.end - a.begin > b.end - b.begin;
                         });
        w.workOffset = int64_t(table.size());
        w.numItems = int64_t(items.size());
        for (const Item &it : items)
          table.insert(table.end(), {it.kb, it.begin, it.end, it.slot});
        w.reduceOffset = int64_t(table.size());
        w.numReduce = int64_t(reduce.size() / 4);
        table.insert(table.end(), reduce.begin(), reduce.end());
        partialFloats = std::max(partialFloats,
                                 w.numSlots * groups * 2 * 64 * gen.headDim);
        backwardWork[m].back().push_back(w);
      }
    }
  }
  llvm::Expected<cuda::DeviceBuffer> buffer = cuda::DeviceBuffer::allocate(
      std::max<size_t>(16, table.size() * sizeof(int32_t)));
  if (!buffer)
    return buffer.takeError();
  if (!table.empty())
    if (llvm::Error err =
            buffer->copyFromHost(table.data(), table.size() * sizeof(int32_t)))
      return err;
  backwardWorkTable = std::move(*buffer);
  if (size_t(partialFloats) * sizeof(float) > backwardPartials.size()) {
    llvm::Expected<cuda::DeviceBuffer> partials =
        cuda::DeviceBuffer::allocate(size_t(partialFloats) * sizeof(float));
    if (!partials)
      return partials.takeError();
    backwardPartials = std::move(*partials);
  }
  backwardWorkBatchHeads = batchHeads;
  return llvm::Error::success();
}

llvm::Error AttentionPlan::backward(int64_t layer, int64_t batchHeads,
                                    cuda::DevicePtr q, cuda::DevicePtr k,
                                    cuda::DevicePtr v, cuda::DevicePtr o,
                                    cuda::DevicePtr lse, cuda::DevicePtr dO,
                                    cuda::DevicePtr dQ, cuda::DevicePtr dK,
                                    cuda::DevicePtr dV, double scale,
                                    cuda::Stream stream) {
  if (!gen.hasBackward())
    return makeError("the plan of '" + gen.pattern +
                     "' was generated without backward kernels");
  std::vector<size_t> masks = masksOfLayer(layer);
  for (size_t maskIndex : masks) {
    int64_t headsPerLaunch = gen.masks[maskIndex].head ? gen.numHeads : 1;
    if (batchHeads <= 0 || batchHeads % headsPerLaunch != 0)
      return makeError("batchHeads = " + llvm::Twine(batchHeads) +
                       " is not a positive multiple of the pattern's " +
                       llvm::Twine(headsPerLaunch) + " heads");
  }
  if (llvm::Error err = reserveBackwardWorkspace(batchHeads))
    return err;
  if (llvm::Error err = planBackwardWork(batchHeads))
    return err;
  float scaleArg = float(scale > 0 ? scale : 1.0 / std::sqrt(double(gen.headDim)));
  long long rows = (long long)batchHeads * gen.seqLen;
  long long elems = rows * gen.headDim;
  cuda::DevicePtr acc = backwardWorkspace.get();
  cuda::DevicePtr dqAcc = acc;
  cuda::DevicePtr dkAcc = dqAcc + size_t(elems) * sizeof(float);
  cuda::DevicePtr dvAcc = dkAcc + size_t(elems) * sizeof(float);
  cuda::DevicePtr delta = dvAcc + size_t(elems) * sizeof(float);
  cuda::DevicePtr tablePtr = tables.get();
  cuda::Dim3 block{codegen::kBackwardThreads, 1, 1};

  {
    void *args[] = {&o, &dO, &delta, &dqAcc, &dkAcc, &dvAcc, &rows};
    cuda::Dim3 grid{unsigned((rows + codegen::kBackwardPrepareRows - 1) /
                             codegen::kBackwardPrepareRows),
                    1, 1};
    if (llvm::Error err = cuda::launch(backwardPrepare, grid, block, 0, stream, args))
      return err;
  }
  cuda::DevicePtr partials = backwardPartials.get();
  splitStats = BackwardSplitStats();
  for (size_t maskIndex : masks) {
    const codegen::MaskKernels &mask = gen.masks[maskIndex];
    const MaskFunctions &fns = functions[maskIndex];
    int64_t headsPerLaunch = mask.head ? gen.numHeads : 1;
    unsigned gridY = unsigned(batchHeads / headsPerLaunch);
    int groups = int(gridY);
    for (size_t kIdx = 0; kIdx < mask.kernels.size(); ++kIdx) {
      const codegen::ForwardKernelInfo &kernel = mask.kernels[kIdx];
      if (deterministicBackward) {
        void *args[] = {&q, &k, &v, &dO, &lse, &delta, &dqAcc, &tablePtr, &scaleArg};
        cuda::Dim3 grid{unsigned(kernel.numQueryBlocks) * gridY, 1, 1};
        if (llvm::Error err = cuda::launch(fns.dq[kIdx], grid, block,
                                           kernel.backwardDqSharedBytes, stream, args))
          return err;
      }
      for (size_t s = 0; s < kernel.segments.size(); ++s) {
        const SegmentWork &w = backwardWork[maskIndex][kIdx][s];
        if (w.numItems == 0)
          continue;
        splitStats.items += w.numItems;
        splitStats.splitKeyBlocks += w.numReduce;
        splitStats.parts += w.numSlots;
        splitStats.maxBlocksPerCta =
            std::max(splitStats.maxBlocksPerCta, w.maxBlocksPerCta);
        cuda::DevicePtr work =
            backwardWorkTable.get() + size_t(w.workOffset) * sizeof(int32_t);
        cuda::Dim3 grid{unsigned(w.numItems) * gridY, 1, 1};
        if (deterministicBackward) {
          void *args[] = {&q,     &k,        &v,    &dO,     &lse,
                          &delta, &dkAcc,    &dvAcc, &tablePtr, &work,
                          &groups, &partials, &scaleArg};
          if (llvm::Error err =
                  cuda::launch(fns.dkdv[kIdx][s], grid, block,
                               kernel.segments[s].backwardDkDvSharedBytes,
                               stream, args))
            return err;
        } else {
          void *args[] = {&q,     &k,     &v,     &dO,       &lse,
                          &delta, &dqAcc, &dkAcc, &dvAcc,    &tablePtr,
                          &work,  &groups, &partials, &scaleArg};
          if (llvm::Error err =
                  cuda::launch(fns.dkdvdq[kIdx][s], grid, block,
                               kernel.segments[s].backwardDkDvSharedBytes,
                               stream, args))
            return err;
        }
        if (w.numReduce == 0)
          continue;
        // The parts of the split key blocks, before the next launch reuses
        // the slots or adds into the same rows.
        cuda::DevicePtr items =
            backwardWorkTable.get() + size_t(w.reduceOffset) * sizeof(int32_t);
        void *args[] = {&partials, &items, &groups, &dkAcc, &dvAcc};
        cuda::Dim3 rgrid{unsigned(w.numReduce) * gridY, 1, 1};
        if (llvm::Error err =
                cuda::launch(fns.reduce[kIdx][s], rgrid, block, 0, stream, args))
          return err;
      }
    }
  }
  {
    void *args[] = {&acc, &dQ, &dK, &dV, &elems};
    cuda::Dim3 grid{unsigned((elems / 2 + codegen::kBackwardConvertThreads - 1) /
                             codegen::kBackwardConvertThreads),
                    3, 1};
    cuda::Dim3 cblock{codegen::kBackwardConvertThreads, 1, 1};
    if (llvm::Error err = cuda::launch(backwardConvert, grid, cblock, 0, stream, args))
      return err;
  }
  return llvm::Error::success();
}

int64_t AttentionPlan::rowKeyBlocks(size_t maskIndex, size_t kernelIndex,
                                    int64_t queryBlock) const {
  const codegen::ForwardKernelInfo &kernel = gen.masks[maskIndex].kernels[kernelIndex];
  const std::vector<int32_t> &t = gen.tables;
  int64_t blocks = 0;
  for (const codegen::SegmentInfo &seg : kernel.segments) {
    if (seg.rangeSchedule) {
      // begin[], end[], fullBegin[], fullEnd[], numQueryBlocks each.
      int64_t begin = t[seg.offsets[0] + queryBlock];
      int64_t end = t[seg.offsets[0] + kernel.numQueryBlocks + queryBlock];
      blocks += std::max<int64_t>(0, end - begin);
    } else {
      // Full offsets, full indices, partial offsets, partial indices.
      blocks += t[seg.offsets[0] + queryBlock + 1] - t[seg.offsets[0] + queryBlock];
      blocks += t[seg.offsets[2] + queryBlock + 1] - t[seg.offsets[2] + queryBlock];
    }
  }
  return blocks;
}

llvm::Error AttentionPlan::reserveDecodeWorkspace(size_t floats) {
  if (floats * sizeof(float) <= decodeWorkspace.size())
    return llvm::Error::success();
  llvm::Expected<cuda::DeviceBuffer> buffer =
      cuda::DeviceBuffer::allocate(floats * sizeof(float));
  if (!buffer)
    return buffer.takeError();
  decodeWorkspace = std::move(*buffer);
  return llvm::Error::success();
}

llvm::Error AttentionPlan::decode(int64_t layer, int64_t batchHeads,
                                  int64_t position, cuda::DevicePtr q,
                                  cuda::DevicePtr kCache, cuda::DevicePtr vCache,
                                  int64_t capacity, cuda::DevicePtr o,
                                  cuda::DevicePtr lse, double scale,
                                  cuda::Stream stream) {
  if (position < 0 || position >= gen.seqLen)
    return makeError("decode: position " + llvm::Twine(position) +
                     " is outside the plan's sequence [0, " +
                     llvm::Twine(gen.seqLen) + ")");
  if (capacity <= position)
    return makeError("decode: position " + llvm::Twine(position) +
                     " is past the KV cache's capacity of " +
                     llvm::Twine(capacity) + " rows");
  return decodeImpl(layer, batchHeads, position, 0, q, kCache, vCache,
                    capacity, o, lse, scale, stream, 0, 0);
}

llvm::Error AttentionPlan::decodeAt(int64_t layer, int64_t batchHeads,
                                    cuda::DevicePtr position, cuda::DevicePtr q,
                                    cuda::DevicePtr kCache,
                                    cuda::DevicePtr vCache, int64_t capacity,
                                    cuda::DevicePtr o, cuda::DevicePtr lse,
                                    double scale, cuda::Stream stream,
                                    cuda::DevicePtr o32, int64_t o32Dim) {
  if (!position)
    return makeError("decode: no device position given");
  if (o32 && (o32Dim < 1 || o32Dim > gen.headDim))
    return makeError("decode: o32Dim = " + llvm::Twine(o32Dim) +
                     " is outside [1, " + llvm::Twine(gen.headDim) + "]");
  return decodeImpl(layer, batchHeads, -1, position, q, kCache, vCache,
                    capacity, o, lse, scale, stream, o32, o32Dim);
}

llvm::Error AttentionPlan::buildDecodeTables() {
  if (!decodeTables.empty())
    return llvm::Error::success();
  // Per mask and kernel: the query block of every position (-1 where the
  // kernel's query map drops it or its row has no key blocks there), and the
  // most key blocks any row has.
  std::vector<int32_t> table;
  std::vector<std::vector<DecodeTable>> built(gen.masks.size());
  for (size_t m = 0; m < gen.masks.size(); ++m) {
    const codegen::MaskKernels &mask = gen.masks[m];
    for (size_t k = 0; k < mask.kernels.size(); ++k) {
      DecodeTable entry;
      entry.offset = int64_t(table.size());
      std::vector<int64_t> blocksOf(size_t(mask.kernels[k].numQueryBlocks), -1);
      for (int64_t p = 0; p < gen.seqLen; ++p) {
        int64_t t = functions[m].queryMaps[k].index(p);
        int32_t queryBlock = -1;
        if (t >= 0) {
          int64_t qb = t / gen.blockQ;
          int64_t &blocks = blocksOf[size_t(qb)];
          if (blocks < 0)
            blocks = rowKeyBlocks(m, k, qb);
          if (blocks > 0)
            queryBlock = int32_t(qb);
          entry.maxBlocks = std::max(entry.maxBlocks, blocks);
        }
        table.push_back(queryBlock);
      }
      built[m].push_back(entry);
    }
  }
  llvm::Expected<cuda::DeviceBuffer> buffer =
      cuda::DeviceBuffer::allocate(std::max<size_t>(1, table.size()) * 4);
  if (!buffer)
    return buffer.takeError();
  if (!table.empty())
    if (llvm::Error err = buffer->copyFromHost(table.data(), table.size() * 4))
      return err;
  decodeTableBuffer = std::move(*buffer);
  decodeTables = std::move(built);
  return llvm::Error::success();
}

llvm::Error AttentionPlan::planDecode(
    int64_t layer, int64_t batchHeads, int64_t position, bool onDevice,
    int64_t targetCtas, std::vector<size_t> &masks,
    std::vector<std::vector<DecodeLaunch>> &launches,
    std::vector<int64_t> &parts) {
  if (!gen.causal)
    return makeError("decode: pattern '" + gen.pattern +
                     "' is not causal; decode samples one position at a time "
                     "and needs a causal pattern (row i attends no key j > i)");
  if (!gen.hasDecode())
    return makeError("decode: the plan of '" + gen.pattern +
                     "' was generated without decode kernels");
  masks = masksOfLayer(layer);
  for (size_t maskIndex : masks) {
    int64_t headsPerLaunch = gen.masks[maskIndex].head ? gen.numHeads : 1;
    if (batchHeads <= 0 || batchHeads % headsPerLaunch != 0)
      return makeError("decode: batchHeads = " + llvm::Twine(batchHeads) +
                       " is not a positive multiple of the pattern's " +
                       llvm::Twine(headsPerLaunch) + " heads");
  }
  if (onDevice)
    if (llvm::Error err = buildDecodeTables())
      return err;
  // With the position on the device, the launches are those of the longest
  // row of each kernel, whatever the position (their shapes never change).
  const int64_t minBlocks = codegen::kDecodeMinBlocksPerSplit;
  launches.assign(masks.size(), {});
  parts.assign(masks.size(), 0);
  for (auto [m, maskIndex] : llvm::enumerate(masks)) {
    const codegen::MaskKernels &mask = gen.masks[maskIndex];
    const MaskFunctions &fns = functions[maskIndex];
    const int64_t rows = batchHeads / (mask.head ? gen.numHeads : 1);
    for (size_t kIdx = 0; kIdx < mask.kernels.size(); ++kIdx) {
      int64_t queryBlock = 0, blocks = 0;
      if (onDevice) {
        blocks = decodeTables[maskIndex][kIdx].maxBlocks;
      } else {
        // A gather query map may not cover the position: that kernel has no
        // part of this row.
        int64_t t = fns.queryMaps[kIdx].index(position);
        if (t < 0)
          continue;
        queryBlock = t / gen.blockQ;
        blocks = rowKeyBlocks(maskIndex, kIdx, queryBlock);
      }
      if (blocks <= 0)
        continue;
      int64_t splits = targetCtas / rows;
      splits = std::min(splits, (blocks + minBlocks - 1) / minBlocks);
      splits = std::max<int64_t>(splits, 1);
      launches[m].push_back({kIdx, int(queryBlock), splits});
      parts[m] += splits;
    }
  }
  return llvm::Error::success();
}

llvm::Expected<std::vector<AttentionPlan::DecodeWork>>
AttentionPlan::decodeWork(int64_t layer, int64_t batchHeads,
                          int64_t targetCtas, int64_t &numParts) {
  std::vector<size_t> masks;
  std::vector<std::vector<DecodeLaunch>> launches;
  std::vector<int64_t> parts;
  if (llvm::Error err = planDecode(layer, batchHeads, -1, true, targetCtas,
                                   masks, launches, parts))
    return std::move(err);
  // decodeRow's ids: every mask's kernels in order.
  std::vector<int> firstId(gen.masks.size() + 1, 0);
  for (size_t m = 0; m < gen.masks.size(); ++m)
    firstId[m + 1] = firstId[m] + int(gen.masks[m].kernels.size());
  std::vector<DecodeWork> work;
  numParts = 0;
  for (auto [m, maskIndex] : llvm::enumerate(masks)) {
    const int64_t rows =
        batchHeads / (gen.masks[maskIndex].head ? gen.numHeads : 1);
    int64_t partBase = 0;
    for (const DecodeLaunch &l : launches[m]) {
      DecodeWork w;
      w.kernelId = firstId[maskIndex] + int(l.kernel);
      w.rowGroups = rows;
      w.splits = int(l.splits);
      w.partBase = int(partBase);
      w.headsPerLaunch = gen.masks[maskIndex].head ? int(gen.numHeads) : 1;
      w.head = int(gen.masks[maskIndex].head.value_or(0));
      w.queryBlockAt = decodeTableBuffer.get() +
                       size_t(decodeTables[maskIndex][l.kernel].offset) * 4;
      work.push_back(w);
      partBase += l.splits;
    }
    numParts = std::max(numParts, partBase);
  }
  return work;
}

llvm::Error AttentionPlan::launchDecode(cuda::Function fn, cuda::Dim3 grid,
                                        cuda::Dim3 block, cuda::Stream stream,
                                        llvm::ArrayRef<void *> args) const {
  return cuda::launch(fn, grid, block, 0, stream, args, overlapLaunches);
}

llvm::Error AttentionPlan::decodeImpl(int64_t layer, int64_t batchHeads,
                                      int64_t position,
                                      cuda::DevicePtr devicePosition,
                                      cuda::DevicePtr q, cuda::DevicePtr kCache,
                                      cuda::DevicePtr vCache, int64_t capacity,
                                      cuda::DevicePtr o, cuda::DevicePtr lse,
                                      double scale, cuda::Stream stream,
                                      cuda::DevicePtr o32, int64_t o32Dim) {
  const bool onDevice = devicePosition != 0;
  // About four CTAs per SM (what the D = 128 kernel fits at 128 registers),
  // rounded down so that a launch never spills into a second, nearly empty
  // wave; but at least two key blocks per CTA, so that the merge stays small
  // next to the row's loads.
  std::vector<size_t> masks;
  std::vector<std::vector<DecodeLaunch>> launches;
  std::vector<int64_t> parts;
  if (llvm::Error err =
          planDecode(layer, batchHeads, position, onDevice,
                     4 * int64_t(std::max(numSMs, 1)), masks, launches, parts))
    return err;
  float scaleArg = float(scale > 0 ? scale : 1.0 / std::sqrt(double(gen.headDim)));
  cuda::DevicePtr tablePtr = tables.get();
  long long positionArg = position, capacityArg = capacity,
            batchHeadsArg = batchHeads;
  cuda::Dim3 block{codegen::kDecodeThreads, 1, 1};
  // Plan every mask's launches first: the workspace is sized once, before
  // anything is enqueued (reallocating it under running kernels would not do).
  // (With o32 every mask goes through the merge, which writes it.)
  int64_t mostParts = 0;
  for (int64_t p : parts)
    if (p != 1 || o32)
      mostParts = std::max(mostParts, p);
  // Masks share the parts: they serve different batch-heads (per-head) or
  // run alone (layers).
  const size_t partRows = size_t(mostParts) * size_t(batchHeads);
  if (llvm::Error err = reserveDecodeWorkspace(
          std::max<size_t>(1, partRows * size_t(gen.headDim + 1))))
    return err;
  const cuda::DevicePtr oParts = decodeWorkspace.get();
  const cuda::DevicePtr lseParts = oParts + partRows * gen.headDim * sizeof(float);
  // One merge ticket per batch-head (zeroed here once; the merging CTA
  // leaves it zeroed again).
  if (decodeCounters.size() < size_t(batchHeads) * 4) {
    decodeCounters = cuda::DeviceBuffer();
    llvm::Expected<cuda::DeviceBuffer> counters =
        cuda::DeviceBuffer::allocate(size_t(batchHeads) * 4);
    if (!counters)
      return counters.takeError();
    if (llvm::Error err = counters->fill(0))
      return err;
    decodeCounters = std::move(*counters);
  }

  for (auto [m, maskIndex] : llvm::enumerate(masks)) {
    const codegen::MaskKernels &mask = gen.masks[maskIndex];
    const MaskFunctions &fns = functions[maskIndex];
    const int64_t headsPerLaunch = mask.head ? gen.numHeads : 1;
    const int64_t rows = batchHeads / headsPerLaunch;
    // One part: its kernel writes the outputs; else parts, merged by the
    // CTA that writes a batch-head's last one; no parts at all: the merge
    // kernel writes O = 0, LSE = -inf.
    const bool direct = parts[m] == 1 && !o32;
    int64_t partBase = 0;
    for (const DecodeLaunch &l : launches[m]) {
      cuda::DevicePtr out = o, outLse = lse;
      int finalOutput = direct ? 1 : 0;
      if (!direct) {
        out = oParts + size_t(partBase) * batchHeads * gen.headDim * sizeof(float);
        outLse = lseParts + size_t(partBase) * batchHeads * sizeof(float);
      }
      int queryBlock = l.queryBlock;
      cuda::DevicePtr positionAt = devicePosition, queryBlockAt = 0;
      if (onDevice)
        queryBlockAt = decodeTableBuffer.get() +
                       size_t(decodeTables[maskIndex][l.kernel].offset) * 4;
      cuda::DevicePtr counters = direct ? 0 : decodeCounters.get();
      int mergeParts = int(parts[m]), partBaseArg = int(partBase);
      long long o32DimArg = o32Dim;
      void *args[] = {&q,          &kCache,      &vCache,        &out,
                      &outLse,     &tablePtr,    &scaleArg,      &positionArg,
                      &queryBlock, &capacityArg, &batchHeadsArg, &finalOutput,
                      &positionAt, &queryBlockAt, &counters,     &mergeParts,
                      &partBaseArg, &o,          &lse,           &o32,
                      &o32DimArg};
      cuda::Dim3 grid{unsigned(l.splits), unsigned(rows), 1};
      if (llvm::Error err = launchDecode(fns.decode[l.kernel], grid, block,
                                         stream, args))
        return err;
      partBase += l.splits;
    }
    if (parts[m] == 0) {
      cuda::DevicePtr oPartsArg = oParts, lsePartsArg = lseParts;
      int numParts = int(parts[m]), headsArg = int(headsPerLaunch),
          head = int(mask.head.value_or(0));
      long long o32DimArg = o32Dim;
      void *args[] = {&oPartsArg, &lsePartsArg, &numParts, &batchHeadsArg,
                      &headsArg,  &head,        &o,        &lse,
                      &o32,       &o32DimArg};
      cuda::Dim3 grid{unsigned(rows), 1, 1};
      cuda::Dim3 mblock{codegen::kDecodeMergeThreads, 1, 1};
      if (llvm::Error err = launchDecode(decodeMerge, grid, mblock, stream, args))
        return err;
    }
  }
  return llvm::Error::success();
}

} // namespace sparsetx
