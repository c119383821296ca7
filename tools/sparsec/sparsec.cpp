//===- sparsec.cpp - the sparsetx pattern compiler ------------------------===//
//
// sparsec reads a .sp file and, for now, prints the checked AST or the sp
// dialect. Each later stage (layout, stats, CUDA, PTX) is another --emit kind.
//
// Nothing is written unless the whole compilation succeeds: output goes to a
// buffer first and then replaces the -o file atomically, so a failed run never
// destroys a good earlier output.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Analysis/MaskEvaluator.h"
#include "sparsetx/Codegen/CudaEmitter.h"
#include "sparsetx/Analysis/PatternLayout.h"
#include "sparsetx/Analysis/PatternPicture.h"
#include "sparsetx/Dialect/SP/Transforms/Passes.h"
#include "sparsetx/DSL/AST.h"
#include "sparsetx/DSL/MLIRGen.h"
#include "sparsetx/DSL/Parser.h"
#include "sparsetx/DSL/Sema.h"
#include "sparsetx/Dialect/SP/IR/SP.h"
#include "sparsetx/InitAll.h"
#include "sparsetx/Runtime/Nvrtc.h"

#include "mlir/IR/AsmState.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Support/ToolUtilities.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
using namespace sparsetx;
namespace cl = llvm::cl;

namespace {

enum class EmitKind { AST, MLIR, Plan, Layout, Stats, PNG, CUDA, PTX };

cl::OptionCategory category("sparsec options");

cl::opt<std::string> inputFilename(cl::Positional,
                                   cl::desc("<pattern.sp | - for stdin>"),
                                   cl::Required, cl::cat(category));
cl::opt<std::string> outputFilename("o", cl::desc("Output file (default: stdout)"),
                                    cl::value_desc("file"), cl::init("-"),
                                    cl::cat(category));
cl::opt<EmitKind> emitKind(
    "emit", cl::desc("What to produce"), cl::init(EmitKind::MLIR),
    cl::values(
        clEnumValN(EmitKind::AST, "ast", "the checked syntax tree"),
        clEnumValN(EmitKind::MLIR, "mlir", "the sp dialect"),
        clEnumValN(EmitKind::Plan, "plan",
                   "the sp dialect after the analysis passes (needs --seq-len)"),
        clEnumValN(EmitKind::Layout, "layout",
                   "index maps, block classes, schedules, tables and kernels "
                   "as JSON (needs --seq-len)"),
        clEnumValN(EmitKind::Stats, "stats",
                   "a table of block classes and work efficiency per "
                   "component (needs --seq-len)"),
        clEnumValN(EmitKind::PNG, "png",
                   "the connectivity picture (needs --seq-len and -o)"),
        clEnumValN(EmitKind::CUDA, "cuda",
                   "the generated CUDA C++ of the forward kernels (needs "
                   "--seq-len)"),
        clEnumValN(EmitKind::PTX, "ptx",
                   "the forward kernels compiled by NVRTC, plus <output>.json, "
                   "the manifest (needs --seq-len and -o; the default for "
                   "-o *.ptx)")),
    cl::cat(category));
cl::list<std::string> defines(
    "D", cl::desc("Override a pattern parameter (-D l=256)"),
    cl::value_desc("NAME=VALUE"), cl::Prefix, cl::ZeroOrMore, cl::cat(category));
cl::opt<std::string> patternName(
    "pattern", cl::desc("Compile only the pattern NAME of the file"),
    cl::value_desc("NAME"), cl::cat(category));
cl::opt<int64_t> seqLen(
    "seq-len",
    cl::desc("Sequence length n: binds `n` and checks that every query row "
             "attends to some key"),
    cl::value_desc("N"), cl::init(0), cl::cat(category));
cl::opt<int64_t> numHeads(
    "heads",
    cl::desc("Head count of a per-head pattern (heads[h] = ...; default 8)"),
    cl::value_desc("H"), cl::init(0), cl::cat(category));
cl::opt<int64_t> blockQ("block-q", cl::desc("Query block size (default 64)"),
                        cl::value_desc("B"), cl::init(64), cl::cat(category));
cl::opt<int64_t> blockK("block-k", cl::desc("Key block size (default 64)"),
                        cl::value_desc("B"), cl::init(64), cl::cat(category));
cl::opt<int64_t> tableLimitMiB(
    "table-limit-mib",
    cl::desc("Largest block tables a layout may need, in MiB (default 8192)"),
    cl::value_desc("MiB"), cl::init(8192), cl::cat(category));
cl::opt<std::string> targetArch(
    "arch", cl::desc("GPU architecture of --emit=ptx: sm_80 or sm_90a "
                     "(default sm_90a)"),
    cl::value_desc("sm_XX"), cl::init("sm_90a"), cl::cat(category));
cl::opt<int64_t> headDim(
    "head-dim", cl::desc("Head dimension of the kernels: 32, 64 or 128 "
                         "(default 64)"),
    cl::value_desc("D"), cl::init(64), cl::cat(category));
cl::opt<std::string> elementType(
    "dtype", cl::desc("Element type of Q, K, V, O: bf16 or fp16 (default bf16)"),
    cl::value_desc("bf16|fp16"), cl::init("bf16"), cl::cat(category));
cl::opt<bool> wgmmaForward(
    "wgmma-forward",
    cl::desc("With --arch sm_90a, run the forward kernels of head dims 64 and "
             "128 on wgmma instead of mma.sync (default true; "
             "--wgmma-forward=false keeps mma.sync)"),
    cl::init(true), cl::cat(category));
cl::opt<bool> wgmmaBackward(
    "wgmma-backward",
    cl::desc("With --arch sm_90a, run the dK/dV and deterministic dQ kernels "
             "of head dim 64 whose lists are long enough on wgmma (default "
             "true; --wgmma-backward=false keeps mma.sync)"),
    cl::init(true), cl::cat(category));
cl::opt<int64_t> wgmmaBackwardMinBlocks(
    "wgmma-backward-min-blocks",
    cl::desc("The mean list length (blocks) from which a dK/dV or dQ kernel "
             "takes wgmma; 0: every one (default 8)"),
    cl::value_desc("N"), cl::init(8), cl::cat(category));
cl::opt<bool> verifyDiagnostics(
    "verify-diagnostics",
    cl::desc("Check the diagnostics against expected-* comments in the input"),
    cl::init(false), cl::cat(category));
cl::opt<bool> splitInputFile(
    "split-input-file",
    cl::desc("Compile each chunk between '// -----' lines on its own"),
    cl::init(false), cl::cat(category));


llvm::StringRef emitName() {
  switch (emitKind) {
  case EmitKind::AST: return "ast";
  case EmitKind::MLIR: return "mlir";
  case EmitKind::Plan: return "plan";
  case EmitKind::Layout: return "layout";
  case EmitKind::Stats: return "stats";
  case EmitKind::PNG: return "png";
  case EmitKind::CUDA: return "cuda";
  case EmitKind::PTX: return "ptx";
  }
  llvm_unreachable("unknown emit kind");
}

/// Parses the -D options. Errors have no source location: they name the option.
LogicalResult parseDefines(MLIRContext *context, dsl::SemaOptions &options) {
  for (const std::string &define : defines) {
    size_t eq = define.find('=');
    if (eq == std::string::npos || eq == 0)
      return emitError(UnknownLoc::get(context))
             << "-D expects NAME=VALUE, but got '" << define << "'";
    llvm::StringRef name = llvm::StringRef(define).take_front(eq).trim();
    llvm::StringRef value = llvm::StringRef(define).drop_front(eq + 1).trim();
    int64_t parsed;
    if (value.getAsInteger(10, parsed))
      return emitError(UnknownLoc::get(context))
             << "-D " << define << ": '" << value
             << "' is not a 64-bit integer";
    options.overrides.emplace_back(name.str(), parsed);
  }
  return success();
}

/// Keeps only the pattern --pattern names, if given.
LogicalResult selectPattern(dsl::Module &module, const dsl::SourceLocator &locator,
                            llvm::StringRef bufferName) {
  if (patternName.empty())
    return success();
  auto it = llvm::find_if(module.patterns, [](const auto &pattern) {
    return pattern->name == patternName;
  });
  if (it != module.patterns.end()) {
    auto selected = std::move(*it);
    module.patterns.clear();
    module.patterns.push_back(std::move(selected));
    return success();
  }
  InFlightDiagnostic diag = emitError(UnknownLoc::get(locator.getContext()))
                            << "no pattern named '" << patternName << "' in "
                            << bufferName;
  llvm::SmallVector<std::string> names;
  for (const auto &pattern : module.patterns)
    names.push_back(pattern->name.str());
  if (!names.empty())
    diag << "; it has: " << llvm::join(names, ", ");
  return diag;
}

/// The manifest of --emit=ptx, written next to the PTX as <output>.json.
std::string manifest;

/// Runs the analysis pipeline on the patterns of `module` and prints what
/// --emit asks for.
LogicalResult analyze(ModuleOp module, llvm::raw_ostream &os) {
  MLIRContext *context = module.getContext();
  if (seqLen <= 0)
    return emitError(UnknownLoc::get(context))
           << "--emit=" << emitName() << " needs a sequence length (--seq-len N)";
  if (tableLimitMiB <= 0)
    return emitError(UnknownLoc::get(context))
           << "--table-limit-mib must be positive, but is "
           << int64_t(tableLimitMiB);
  if (blockQ <= 0 || blockK <= 0)
    return emitError(UnknownLoc::get(context))
           << "block sizes must be positive, but are " << int64_t(blockQ) << "x"
           << int64_t(blockK);
  auto patterns = llvm::to_vector(module.getBody()->getOps<sp::PatternOp>());
  bool generatesCode = emitKind == EmitKind::CUDA || emitKind == EmitKind::PTX;
  if ((emitKind == EmitKind::Layout || emitKind == EmitKind::PNG || generatesCode) &&
      patterns.size() != 1) {
    InFlightDiagnostic diag = emitError(UnknownLoc::get(context))
                              << "--emit=" << emitName()
                              << " takes one pattern, but the file has "
                              << patterns.size() << "; pick one with --pattern";
    return diag;
  }
  if (emitKind == EmitKind::PNG && outputFilename == "-")
    return emitError(UnknownLoc::get(context))
           << "--emit=png writes a PNG file: name it with -o";
  if (emitKind == EmitKind::PTX && outputFilename == "-")
    return emitError(UnknownLoc::get(context))
           << "--emit=ptx writes a PTX file and its manifest: name it with -o";
  codegen::CodegenOptions codegenOptions;
  if (generatesCode) {
    if (headDim != 32 && headDim != 64 && headDim != 128)
      return emitError(UnknownLoc::get(context))
             << "--head-dim must be 32, 64 or 128, but is " << int64_t(headDim);
    std::optional<codegen::ElementType> dtype =
        codegen::parseElementType(elementType);
    if (!dtype)
      return emitError(UnknownLoc::get(context))
             << "--dtype must be bf16 or fp16, but is '" << elementType << "'";
    if (targetArch != "sm_80" && targetArch != "sm_90a")
      return emitError(UnknownLoc::get(context))
             << "--arch must be sm_80 or sm_90a, but is '" << targetArch << "'";
    if (wgmmaBackwardMinBlocks < 0)
      return emitError(UnknownLoc::get(context))
             << "--wgmma-backward-min-blocks must be 0 or more, but is "
             << int64_t(wgmmaBackwardMinBlocks);
    if (blockQ != 64 || blockK != 64)
      return emitError(UnknownLoc::get(context))
             << "--emit=" << emitName() << " needs 64x64 blocks, but they are "
             << int64_t(blockQ) << "x" << int64_t(blockK);
    codegenOptions.headDim = headDim;
    codegenOptions.dtype = *dtype;
    codegenOptions.arch = targetArch;
    codegenOptions.forwardWgmma = wgmmaForward;
    codegenOptions.backwardWgmma = wgmmaBackward;
    codegenOptions.backwardWgmmaMinBlocks = wgmmaBackwardMinBlocks;
  }

  PassManager pm(context);
  sp::SPSpecializeOptions specialize;
  specialize.seqLen = seqLen;
  specialize.numHeads = numHeads; // 0: the pattern's, else the default
  pm.addPass(sp::createSPSpecialize(specialize));
  pm.addPass(sp::createSPVerify());
  pm.addPass(sp::createSPDecompose());
  if (emitKind == EmitKind::Plan) {
    sp::SPChooseIndexMapsOptions choose;
    choose.blockQ = blockQ;
    choose.blockK = blockK;
    pm.addPass(sp::createSPChooseIndexMaps(choose));
    sp::SPClassifyBlocksOptions classify;
    classify.blockQ = blockQ;
    classify.blockK = blockK;
    pm.addPass(sp::createSPClassifyBlocks(classify));
    pm.addPass(sp::createSPPlanKernels());
  }
  if (failed(pm.run(module)))
    return failure();
  if (emitKind == EmitKind::Plan) {
    module.print(os);
    os << '\n';
    return success();
  }

  LayoutOptions options;
  options.blockQ = blockQ;
  options.blockK = blockK;
  options.memoryLimitBytes = int64_t(tableLimitMiB) << 20;
  for (sp::PatternOp pattern : patterns) {
    FailureOr<PatternLayout> layout = computeLayout(pattern, options);
    if (failed(layout))
      return failure();
    switch (emitKind) {
    case EmitKind::Layout:
      printLayoutJSON(*layout, pattern, os);
      break;
    case EmitKind::Stats:
      printLayoutStats(*layout, pattern, os);
      break;
    case EmitKind::CUDA:
    case EmitKind::PTX: {
      FailureOr<codegen::GeneratedAttention> generated =
          codegen::generateForward(pattern, *layout, codegenOptions);
      if (failed(generated))
        return failure();
      if (emitKind == EmitKind::CUDA) {
        os << generated->source;
        break;
      }
      nvrtc::CompileOptions nvrtcOptions;
      nvrtcOptions.arch = targetArch;
      nvrtcOptions.flags = codegen::nvrtcFlags();
      llvm::Expected<std::string> ptx = nvrtc::compileToPTX(
          generated->source, generated->pattern + ".cu", nvrtcOptions,
          codegen::kernelHeaders());
      if (!ptx)
        return emitError(UnknownLoc::get(context))
               << "NVRTC failed on the generated source of '"
               << generated->pattern << "': " << llvm::toString(ptx.takeError());
      os << *ptx;
      // main() writes the PTX, then the manifest, each atomically.
      llvm::raw_string_ostream manifestOS(manifest);
      codegen::printManifestJSON(*generated,
                                 llvm::sys::path::filename(outputFilename),
                                 manifestOS);
      break;
    }
    case EmitKind::PNG: {
      // writePng replaces the file atomically itself.
      std::string error;
      FailureOr<Image> image = renderPattern(pattern, *layout, error);
      if (failed(image) || failed(writePng(*image, outputFilename, error)))
        return emitError(UnknownLoc::get(context)) << error;
      break;
    }
    default:
      llvm_unreachable("not an analysis output");
    }
  }
  return success();
}

/// Compiles one buffer (the whole file, or a chunk of it) into `os`.
LogicalResult processBuffer(std::unique_ptr<llvm::MemoryBuffer> buffer,
                            llvm::raw_ostream &os, MLIRContext &context) {
  llvm::SourceMgr sourceMgr;
  llvm::StringRef bufferName = buffer->getBufferIdentifier();
  std::string name = bufferName.str();
  unsigned bufferId = sourceMgr.AddNewSourceBuffer(std::move(buffer), llvm::SMLoc());
  dsl::SourceLocator locator(sourceMgr, &context);

  auto compile = [&]() -> LogicalResult {
    dsl::SemaOptions options;
    if (seqLen > 0)
      options.seqLen = seqLen;
    if (failed(parseDefines(&context, options)))
      return failure();
    std::unique_ptr<dsl::Module> module = dsl::parseModule(locator, bufferId);
    if (!module)
      return failure();
    if (failed(selectPattern(*module, locator, name)) ||
        failed(dsl::checkModule(*module, locator, options)))
      return failure();
    if (emitKind == EmitKind::AST) {
      dsl::dump(*module, sourceMgr, os);
      return success();
    }
    OwningOpRef<ModuleOp> ir = dsl::mlirGen(*module, locator);
    if (!ir)
      return failure();
    Builder b(&context);
    for (auto pattern : ir->getBody()->getOps<sp::PatternOp>()) {
      if (numHeads > 0)
        pattern.setNumHeadsAttr(b.getI64IntegerAttr(numHeads));
      if (seqLen > 0)
        pattern.setSeqLenAttr(b.getI64IntegerAttr(seqLen));
    }
    if (emitKind == EmitKind::MLIR) {
      // The front end's output, checked at n when one is given.
      for (auto pattern : ir->getBody()->getOps<sp::PatternOp>())
        if (seqLen > 0 &&
            failed(verifyNoEmptyRows(pattern, seqLen,
                                     numHeads > 0 ? numHeads : sp::kDefaultNumHeads)))
          return failure();
      ir->print(os);
      os << '\n';
      return success();
    }
    return analyze(*ir, os);
  };
  if (!verifyDiagnostics) {
    SourceMgrDiagnosticHandler handler(sourceMgr, &context);
    // Errors about the command line have no place in the source: print them
    // as the tool's own ("sparsec: error: ...") rather than "<unknown>:0".
    ScopedDiagnosticHandler commandLine(&context, [&](Diagnostic &diag) {
      if (!isa<UnknownLoc>(diag.getLocation()))
        return failure();
      llvm::raw_ostream &err = llvm::errs();
      if (diag.getSeverity() == DiagnosticSeverity::Error)
        llvm::WithColor::error(err, "sparsec") << diag.str() << "\n";
      else
        llvm::WithColor::warning(err, "sparsec") << diag.str() << "\n";
      for (Diagnostic &note : diag.getNotes())
        handler.emitDiagnostic(note.getLocation(), note.str(),
                               DiagnosticSeverity::Note);
      return success();
    });
    return compile();
  }
  SourceMgrDiagnosticVerifierHandler handler(sourceMgr, &context);
  (void)compile();
  return handler.verify();
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions(category);
  cl::SetVersionPrinter([](llvm::raw_ostream &os) {
    os << "sparsec (sparsetx) 0.1, built with LLVM/MLIR " LLVM_VERSION_STRING "\n";
  });
  cl::ParseCommandLineOptions(
      argc, argv,
      "sparsec: the sparsetx attention-pattern compiler\n\n"
      "Reads patterns in the .sp language and lowers them toward block-sparse\n"
      "attention kernels.\n\n"
      "Examples:\n"
      "  sparsec patterns/fixed.sp                     print the sp dialect\n"
      "  sparsec patterns/fixed.sp --emit=ast          print the checked AST\n"
      "  sparsec patterns/strided.sp -D l=256 --seq-len 16384 -o strided.mlir\n"
      "  sparsec lib.sp --pattern fixed --heads 4\n"
      "  sparsec patterns/fixed.sp --seq-len 4096 --emit=cuda\n"
      "  sparsec patterns/fixed.sp --seq-len 4096 --head-dim 128 -o fixed.ptx\n");

  // `-o kernels.ptx` alone asks for PTX.
  if (!emitKind.getNumOccurrences() &&
      llvm::StringRef(outputFilename).ends_with(".ptx"))
    emitKind = EmitKind::PTX;

  if (seqLen < 0 || (seqLen.getNumOccurrences() && seqLen == 0)) {
    llvm::WithColor::error(llvm::errs(), "sparsec")
        << "--seq-len must be positive, but is " << seqLen << "\n";
    return 1;
  }
  if (numHeads < 0 || (numHeads.getNumOccurrences() && numHeads == 0)) {
    llvm::WithColor::error(llvm::errs(), "sparsec")
        << "--heads must be positive, but is " << numHeads << "\n";
    return 1;
  }

  std::string errorMessage;
  std::unique_ptr<llvm::MemoryBuffer> input =
      openInputFile(inputFilename, &errorMessage);
  if (!input) {
    llvm::WithColor::error(llvm::errs(), "sparsec") << errorMessage << "\n";
    return 1;
  }

  DialectRegistry registry;
  registerAllDialects(registry);
  MLIRContext context(registry);
  context.loadAllAvailableDialects();
  // Diagnostics point into the .sp source; a dump of the generic IR would only
  // distract from it.
  context.printOpOnDiagnostic(false);

  std::string output;
  llvm::raw_string_ostream os(output);
  auto process = [&](std::unique_ptr<llvm::MemoryBuffer> chunk,
                     llvm::raw_ostream &out) {
    return processBuffer(std::move(chunk), out, context);
  };
  LogicalResult result =
      splitInputFile
          ? splitAndProcessBuffer(std::move(input), process, os,
                                  kDefaultSplitMarker, kDefaultSplitMarker)
          : process(std::move(input), os);
  if (failed(result))
    return 1;
  if (emitKind == EmitKind::PNG)
    return 0; // already written

  // Only a complete, successful result reaches the output file.
  if (llvm::Error err = llvm::writeToOutput(
          outputFilename, [&](llvm::raw_ostream &out) -> llvm::Error {
            out << output;
            return llvm::Error::success();
          })) {
    llvm::WithColor::error(llvm::errs(), "sparsec")
        << "cannot write '" << outputFilename
        << "': " << llvm::toString(std::move(err)) << "\n";
    return 1;
  }
  if (emitKind == EmitKind::PTX) {
    // The manifest names the PTX; it appears only after the PTX is in place.
    std::string manifestFile = outputFilename + ".json";
    if (llvm::Error err = llvm::writeToOutput(
            manifestFile, [&](llvm::raw_ostream &out) -> llvm::Error {
              out << manifest;
              return llvm::Error::success();
            })) {
      llvm::WithColor::error(llvm::errs(), "sparsec")
          << "cannot write '" << manifestFile
          << "': " << llvm::toString(std::move(err)) << "\n";
      return 1;
    }
  }
  return 0;
}
