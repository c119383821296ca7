//===- CudaEmitter.cpp - CUDA C++ for a pattern's attention kernels -------===//
//
// The generated source is small: index maps folded to closed forms at the
// pattern's n, each component's mask predicate printed from its sp.mask
// region (only the backward slice of its sp.yield operand), schedule accessors
// with constexpr table offsets, and entry points that instantiate the
// templates of codegen/kernels/. All arithmetic of the predicates goes
// through the helpers of common.cuh so that it wraps and floors exactly like
// the .sp language (Support/IntMath.h) and the CPU evaluator.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Codegen/CudaEmitter.h"

#include "sparsetx/Analysis/IndexMap.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/Diagnostics.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/SmallPtrSet.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"

#include <limits>

using namespace mlir;

namespace sparsetx::codegen {

llvm::StringRef getElementTypeName(ElementType type) {
  return type == ElementType::BF16 ? "bf16" : "fp16";
}

std::optional<ElementType> parseElementType(llvm::StringRef name) {
  if (name == "bf16")
    return ElementType::BF16;
  if (name == "fp16")
    return ElementType::FP16;
  return std::nullopt;
}

size_t GeneratedAttention::maxKernelsPerMask() const {
  size_t most = 0;
  for (const MaskKernels &mask : masks)
    most = std::max(most, mask.kernels.size());
  return most;
}

std::vector<std::string> nvrtcFlags() {
  // -default-device: every function is __device__ unless marked; --std=c++17
  // for the templates; fast-math is not used (the softmax picks its own
  // approximations explicitly).
  return {"--std=c++17", "-default-device", "-lineinfo"};
}

namespace {

std::string i64(int64_t v) {
  // INT64_MIN has no literal form.
  if (v == std::numeric_limits<int64_t>::min())
    return "(-9223372036854775807LL - 1)";
  return std::to_string(v) + "LL";
}

/// Maximal runs of consecutive residues: (first rank, first residue, length).
struct ResidueRun {
  int64_t rank, residue, length;
};
std::vector<ResidueRun> residueRuns(const std::vector<int64_t> &residues) {
  std::vector<ResidueRun> runs;
  for (size_t k = 0; k < residues.size(); ++k) {
    if (!runs.empty() && residues[k] == residues[k - 1] + 1) {
      ++runs.back().length;
      continue;
    }
    runs.push_back({int64_t(k), residues[k], 1});
  }
  return runs;
}

/// The body of `int64_t f(int64_t t)` giving the position of mapped index t
/// (lib/Analysis/IndexMap.cpp's closed forms, constants folded at n).
void emitPositionBody(const IndexMap &map, int64_t n, llvm::raw_ostream &os) {
  int64_t l = map.getPeriod();
  switch (map.getKind()) {
  case IndexMap::Kind::Identity:
    os << "    return t;\n";
    return;
  case IndexMap::Kind::Transpose: {
    // Columns c < rem hold q + 1 positions, the others q.
    int64_t q = n / l, rem = n % l;
    if (rem == 0) {
      os << "    return (t % " << i64(q) << ") * " << i64(l) << " + t / "
         << i64(q) << ";\n";
      return;
    }
    int64_t longPart = rem * (q + 1);
    os << "    if (t < " << i64(longPart) << ")\n      return (t % " << i64(q + 1)
       << ") * " << i64(l) << " + t / " << i64(q + 1) << ";\n";
    if (q == 0) {
      os << "    return 0;\n";
      return;
    }
    os << "    t -= " << i64(longPart) << ";\n    return (t % " << i64(q) << ") * "
       << i64(l) << " + " << i64(rem) << " + t / " << i64(q) << ";\n";
    return;
  }
  case IndexMap::Kind::Gather: {
    const std::vector<int64_t> &res = map.getResidues();
    int64_t m = static_cast<int64_t>(res.size());
    std::vector<ResidueRun> runs = residueRuns(res);
    os << "    const int64_t k = t % " << i64(m) << ";\n";
    os << "    const int64_t base = (t / " << i64(m) << ") * " << i64(l) << ";\n";
    // Rank k in run r stands for residue k + (residue - rank).
    os << "    return base + k + ";
    for (size_t r = 0; r + 1 < runs.size(); ++r)
      os << " + (k < " << i64(runs[r].rank + runs[r].length) << " ? "
         << i64(runs[r].residue - runs[r].rank) << " : ";
    os << i64(runs.back().residue - runs.back().rank);
    for (size_t r = 0; r + 1 < runs.size(); ++r)
      os << ")";
    os << ";\n";
    return;
  }
  }
}

/// A C++ boolean expression over `p`: does the map cover position p?
std::string coversExpr(const IndexMap &map) {
  if (map.getKind() != IndexMap::Kind::Gather)
    return "true";
  std::string r = "(p % " + i64(map.getPeriod()) + ")";
  std::string expr;
  for (const ResidueRun &run : residueRuns(map.getResidues())) {
    if (!expr.empty())
      expr += " || ";
    if (run.length == 1)
      expr += "(" + r + " == " + i64(run.residue) + ")";
    else
      expr += "(" + r + " >= " + i64(run.residue) + " && " + r +
              " <= " + i64(run.residue + run.length - 1) + ")";
  }
  return expr;
}

/// Prints the predicate of one component as the body of
/// `bool mask(int64_t i, int64_t j)`.
class MaskPrinter {
public:
  MaskPrinter(sp::MaskOp mask, std::optional<int64_t> head, llvm::raw_ostream &os)
      : mask(mask), head(head), os(os) {}

  LogicalResult print(unsigned component) {
    Block &body = mask.getBodyBlock();
    names[body.getArgument(0)] = "i";
    names[body.getArgument(1)] = "j";
    if (body.getNumArguments() == 3) {
      names[body.getArgument(2)] = "h";
      os << "    const int64_t h = " << i64(head.value_or(0)) << ";\n";
      os << "    (void)h;\n";
    }
    Value result = mask.getYield().getValues()[component];
    // The backward slice of the component's value, in block order.
    llvm::SmallPtrSet<Operation *, 16> slice;
    llvm::SmallVector<Value> worklist{result};
    while (!worklist.empty()) {
      Value v = worklist.pop_back_val();
      Operation *def = v.getDefiningOp();
      if (!def || !slice.insert(def).second)
        continue;
      for (Value operand : def->getOperands())
        worklist.push_back(operand);
    }
    for (Operation &op : body.without_terminator()) {
      if (!slice.contains(&op))
        continue;
      if (failed(printOp(op)))
        return failure();
    }
    os << "    (void)i;\n    (void)j;\n";
    os << "    return " << name(result) << ";\n";
    return success();
  }

private:
  std::string name(Value v) { return names.lookup(v); }
  bool isBool(Value v) { return v.getType().isSignlessInteger(1); }

  void define(Value v, const std::string &expr) {
    std::string n = "v" + std::to_string(counter++);
    os << "    const " << (isBool(v) ? "bool " : "int64_t ") << n << " = " << expr
       << ";\n";
    names[v] = n;
  }

  LogicalResult unsupported(Operation &op) {
    return op.emitError() << "codegen: '" << op.getName()
                          << "' is not supported in a mask predicate";
  }

  LogicalResult printOp(Operation &op) {
    using namespace mlir::arith;
    bool boolResult = op.getNumResults() == 1 && isBool(op.getResult(0));
    auto operand = [&](unsigned k) { return name(op.getOperand(k)); };
    auto call = [&](llvm::StringRef fn) {
      define(op.getResult(0),
             (fn + "(" + operand(0) + ", " + operand(1) + ")").str());
      return success();
    };
    auto infix = [&](llvm::StringRef sym) {
      define(op.getResult(0), "(" + operand(0) + " " + sym.str() + " " + operand(1) + ")");
      return success();
    };
    // On i1 (true = -1 as a signed value): + - ^ are xor, * and & are and,
    // | is or, signed min is or and signed max is and; unsigned the reverse.
    return llvm::TypeSwitch<Operation *, LogicalResult>(&op)
        .Case([&](ConstantOp c) -> LogicalResult {
          auto attr = dyn_cast<IntegerAttr>(c.getValue());
          if (!attr)
            return unsupported(op);
          // Constants are printed inline, where they are used.
          names[c.getResult()] =
              boolResult ? (attr.getValue().isZero() ? "false" : "true")
                         : i64(attr.getValue().getSExtValue());
          return success();
        })
        .Case([&](AddIOp) { return boolResult ? infix("!=") : call("spAdd"); })
        .Case([&](SubIOp) { return boolResult ? infix("!=") : call("spSub"); })
        .Case([&](MulIOp) { return boolResult ? infix("&&") : call("spMul"); })
        .Case([&](AndIOp) { return boolResult ? infix("&&") : infix("&"); })
        .Case([&](OrIOp) { return boolResult ? infix("||") : infix("|"); })
        .Case([&](XOrIOp) { return boolResult ? infix("!=") : infix("^"); })
        .Case([&](MinSIOp) { return boolResult ? infix("||") : call("spMin"); })
        .Case([&](MaxSIOp) { return boolResult ? infix("&&") : call("spMax"); })
        .Case([&](MinUIOp) -> LogicalResult {
          if (boolResult)
            return infix("&&");
          define(op.getResult(0), "(int64_t)((uint64_t)" + operand(0) +
                                      " < (uint64_t)" + operand(1) + " ? " +
                                      operand(0) + " : " + operand(1) + ")");
          return success();
        })
        .Case([&](MaxUIOp) -> LogicalResult {
          if (boolResult)
            return infix("||");
          define(op.getResult(0), "(int64_t)((uint64_t)" + operand(0) +
                                      " < (uint64_t)" + operand(1) + " ? " +
                                      operand(1) + " : " + operand(0) + ")");
          return success();
        })
        .Case([&](CmpIOp cmp) -> LogicalResult {
          bool operandsBool = isBool(cmp.getLhs());
          std::string a = operand(0), b = operand(1);
          CmpIPredicate p = cmp.getPredicate();
          if (operandsBool) {
            // Signed order on i1 is the reverse of the order of 0 / 1.
            switch (p) {
            case CmpIPredicate::slt: p = CmpIPredicate::ugt; break;
            case CmpIPredicate::sle: p = CmpIPredicate::uge; break;
            case CmpIPredicate::sgt: p = CmpIPredicate::ult; break;
            case CmpIPredicate::sge: p = CmpIPredicate::ule; break;
            default: break;
            }
            a = "(int)" + a;
            b = "(int)" + b;
          }
          bool isUnsigned = !operandsBool &&
                            (p == CmpIPredicate::ult || p == CmpIPredicate::ule ||
                             p == CmpIPredicate::ugt || p == CmpIPredicate::uge);
          if (isUnsigned) {
            a = "(uint64_t)" + a;
            b = "(uint64_t)" + b;
          }
          const char *sym = "==";
          switch (p) {
          case CmpIPredicate::eq: sym = "=="; break;
          case CmpIPredicate::ne: sym = "!="; break;
          case CmpIPredicate::slt: case CmpIPredicate::ult: sym = "<"; break;
          case CmpIPredicate::sle: case CmpIPredicate::ule: sym = "<="; break;
          case CmpIPredicate::sgt: case CmpIPredicate::ugt: sym = ">"; break;
          case CmpIPredicate::sge: case CmpIPredicate::uge: sym = ">="; break;
          }
          define(cmp.getResult(), "(" + a + " " + sym + " " + b + ")");
          return success();
        })
        .Case([&](SelectOp) {
          define(op.getResult(0), "(" + operand(0) + " ? " + operand(1) + " : " +
                                      operand(2) + ")");
          return success();
        })
        .Case([&](ExtUIOp) {
          define(op.getResult(0), "(int64_t)" + operand(0));
          return success();
        })
        .Case([&](ExtSIOp) {
          define(op.getResult(0), "(" + operand(0) + " ? -1LL : 0LL)");
          return success();
        })
        .Case([&](TruncIOp) {
          define(op.getResult(0), "((" + operand(0) + " & 1) != 0)");
          return success();
        })
        .Case([&](math::AbsIOp) {
          define(op.getResult(0),
                 boolResult ? operand(0) : "spAbs(" + operand(0) + ")");
          return success();
        })
        .Case([&](sp::DivOp) { return divide(op, "spFloorDiv"); })
        .Case([&](sp::ModOp) { return divide(op, "spFloorMod"); })
        .Case([&](FloorDivSIOp) {
          return boolResult ? unsupported(op) : divide(op, "spFloorDiv");
        })
        .Case([&](CeilDivSIOp) {
          return boolResult ? unsupported(op) : divide(op, "spCeilDiv");
        })
        .Default([&](Operation *) { return unsupported(op); });
  }

  /// Floor division and modulo need a positive constant divisor (sema and
  /// sp-specialize guarantee it for valid patterns).
  LogicalResult divide(Operation &op, llvm::StringRef fn) {
    IntegerAttr divisor;
    if (auto c = op.getOperand(1).getDefiningOp<arith::ConstantOp>())
      divisor = dyn_cast<IntegerAttr>(c.getValue());
    if (!divisor || divisor.getValue().getSExtValue() <= 0)
      return op.emitError() << "codegen: the divisor must be a positive constant";
    define(op.getResult(0), (fn + "(" + name(op.getOperand(0)) + ", " +
                             i64(divisor.getValue().getSExtValue()) + ")")
                                .str());
    return success();
  }

  sp::MaskOp mask;
  std::optional<int64_t> head;
  llvm::raw_ostream &os;
  llvm::DenseMap<Value, std::string> names;
  unsigned counter = 0;
};

/// Appends `values` to the table data, returning their offset.
FailureOr<int64_t> appendTable(std::vector<int32_t> &tables,
                               llvm::ArrayRef<int64_t> values, Operation *at) {
  int64_t offset = static_cast<int64_t>(tables.size());
  for (int64_t v : values) {
    if (v < 0 || v > std::numeric_limits<int32_t>::max())
      return at->emitError() << "codegen: block table entry " << v
                             << " does not fit in int32";
    tables.push_back(static_cast<int32_t>(v));
  }
  if (tables.size() > size_t(std::numeric_limits<int32_t>::max()))
    return at->emitError() << "codegen: block tables exceed 2^31 entries";
  return offset;
}

FailureOr<int64_t> appendTable(std::vector<int32_t> &tables,
                               llvm::ArrayRef<int32_t> values, Operation *at) {
  std::vector<int64_t> wide(values.begin(), values.end());
  return appendTable(tables, wide, at);
}

} // namespace

namespace {
/// The one architecture whose kernels may use wgmma (sm_90a's feature set;
/// sm_100 dropped it).
bool targetsWgmma(const CodegenOptions &options) {
  return options.arch == "sm_90a";
}
} // namespace

unsigned forwardSharedBytes(const CodegenOptions &options) {
  const int64_t d = options.headDim;
  // attention_forward_wgmma.cuh: Q and per stage K and V as [64][64]
  // swizzled tiles of 8 KiB (d / 64 per row block), three stages at d = 64
  // and two at d = 128, and 1 KiB to align the first tile.
  if (options.forwardWgmma && targetsWgmma(options) && d % 64 == 0) {
    const int64_t stages = d == 64 ? 3 : 2;
    return unsigned((1 + 2 * stages) * 8192 * (d / 64) + 1024);
  }
  // attention_forward.cuh: Q and two stages of K and V, rows padded by 8
  // elements.
  return unsigned((1 + 4) * 64 * (d + 8) * 2);
}

bool allowsBackwardWgmma(const CodegenOptions &options) {
  return options.backwardWgmma && targetsWgmma(options) && options.headDim == 64;
}

unsigned backwardDqSharedBytes(const CodegenOptions &options, bool wgmma) {
  const int64_t d = options.headDim;
  // attention_backward_wgmma.cuh (d = 64): Q, dO and three stages of K and V
  // as 8 KiB swizzled tiles, and 1 KiB to align the first tile.
  if (wgmma && allowsBackwardWgmma(options))
    return unsigned((2 + 2 * 3) * 8192 + 1024);
  // attention_backward.cuh: Q, dO, K, V (rows padded by 8 elements) and
  // two rows of 64 floats.
  return unsigned(4 * 64 * (d + 8) * 2 + 2 * 64 * 4);
}

unsigned backwardDkDvSharedBytes(const CodegenOptions &options, bool wgmma) {
  const int64_t d = options.headDim;
  // attention_backward_wgmma.cuh (d = 64): K, V, two stages of Q and dO and
  // the dS^T tile as 8 KiB swizzled tiles, two stages of LSE and Delta, and
  // 1 KiB to align the first tile.
  if (wgmma && allowsBackwardWgmma(options))
    return unsigned(7 * 8192 + 2 * 2 * 64 * 4 + 1024);
  // attention_backward.cuh: K, V, two stages of Q and dO (rows padded by 8
  // elements), the dS^T tile, two stages of LSE and Delta.
  return unsigned(6 * 64 * (d + 8) * 2 + 64 * (64 + 8) * 2 + 2 * 2 * 64 * 4);
}

/// Whether lists of `blocks` blocks over `lists` non-empty lists take the
/// wgmma backward kernels (CodegenOptions::backwardWgmmaMinBlocks).
static bool listsTakeWgmma(const CodegenOptions &options, int64_t blocks,
                           int64_t lists) {
  if (!allowsBackwardWgmma(options))
    return false;
  return options.backwardWgmmaMinBlocks <= 0 ||
         (lists > 0 && blocks >= options.backwardWgmmaMinBlocks * lists);
}

FailureOr<GeneratedAttention> generateForward(sp::PatternOp pattern,
                                              const PatternLayout &layout,
                                              const CodegenOptions &options) {
  if (options.headDim != 32 && options.headDim != 64 && options.headDim != 128)
    return pattern.emitError() << "codegen: head dim must be 32, 64 or 128, not "
                               << options.headDim;
  if (layout.blockQ != 64 || layout.blockK != 64)
    return pattern.emitError()
           << "codegen: the forward kernel needs 64x64 blocks, but the layout "
              "has "
           << layout.blockQ << "x" << layout.blockK;
  llvm::SmallVector<sp::MaskOp> maskOps = pattern.getMasks();
  if (maskOps.size() != layout.masks.size())
    return pattern.emitError() << "codegen: the layout does not match the pattern";

  GeneratedAttention gen;
  gen.pattern = layout.name.empty() ? pattern.getSymName().str() : layout.name;
  gen.seqLen = layout.seqLen;
  gen.headDim = options.headDim;
  gen.dtype = options.dtype;
  gen.arch = options.arch;
  gen.causal = pattern.getCausal();
  gen.layered = pattern.isLayered();
  gen.blockQ = layout.blockQ;
  gen.blockK = layout.blockK;
  gen.forwardSharedBytes = forwardSharedBytes(options);
  for (const MaskLayout &mask : layout.masks)
    if (mask.head)
      gen.perHead = true;
  if (gen.perHead) {
    std::optional<uint64_t> heads = pattern.getNumHeads();
    if (!heads || *heads == 0)
      return pattern.emitError() << "codegen: a per-head pattern needs num_heads";
    gen.numHeads = static_cast<int64_t>(*heads);
  }

  const int64_t n = layout.seqLen;
  const char *elem = options.dtype == ElementType::BF16 ? "BF16" : "FP16";
  std::string body;
  llvm::raw_string_ostream os(body);
  os << "// Generated by sparsetx codegen: pattern '" << gen.pattern << "', n = " << n
     << ", head dim " << options.headDim << ", " << getElementTypeName(options.dtype)
     << ", " << options.arch << ". Do not edit.\n";
  if (options.forwardWgmma)
    os << "#define SPARSETX_FORWARD_WGMMA_ON 1\n";
  if (allowsBackwardWgmma(options))
    os << "#define SPARSETX_BACKWARD_WGMMA_ON 1\n";
  os << "#include \"sparsetx/attention_forward.cuh\"\n";
  os << "#include \"sparsetx/attention_merge.cuh\"\n";
  if (options.backward)
    os << "#include \"sparsetx/attention_backward.cuh\"\n";
  // Decode samples one position at a time: only causal patterns get it.
  const bool decode = options.decode && gen.causal;
  if (decode)
    os << "#include \"sparsetx/attention_decode.cuh\"\n";
  os << "\n";
  os << "static_assert(sparsetx::forwardKernelSharedBytes<" << options.headDim
     << ">() == " << gen.forwardSharedBytes
     << ", \"the forward kernel's shared memory is what the manifest says\");\n";
  if (options.backward)
    for (bool wgmma : {false, true}) {
      if (wgmma && !allowsBackwardWgmma(options))
        continue;
      const char *b = wgmma ? "true" : "false";
      os << "static_assert(sparsetx::backwardDkDvKernelSharedBytes<"
         << options.headDim << ", " << b
         << ">() == " << backwardDkDvSharedBytes(options, wgmma)
         << ", \"the dK/dV kernels' shared memory is what the manifest says\");\n"
         << "static_assert(sparsetx::backwardDqKernelSharedBytes<"
         << options.headDim << ", " << b
         << ">() == " << backwardDqSharedBytes(options, wgmma)
         << ", \"the dQ kernel's shared memory is what the manifest says\");\n";
    }
  os << "\n";
  os << "namespace sparsetx_gen {\nusing namespace sparsetx;\n\n";

  std::string entries;
  llvm::raw_string_ostream eos(entries);
  // The decode variants in manifest order (masks, then their kernels), for
  // the device-side dispatcher a persistent decoding kernel calls.
  std::vector<std::string> decodeVariants;

  for (auto [m, maskLayout] : llvm::enumerate(layout.masks)) {
    sp::MaskOp maskOp = maskOps[m];
    MaskKernels info;
    info.layer = maskLayout.layer;
    info.head = maskLayout.head;
    if (maskLayout.kernels.empty())
      return maskOp.emitError() << "codegen: mask " << m << " has no kernel";
    const bool partial = maskLayout.kernels.size() > 1;
    const int64_t numHeads = maskLayout.head ? gen.numHeads : 1;
    const int64_t head = maskLayout.head.value_or(0);

    for (auto [k, plan] : llvm::enumerate(maskLayout.kernels)) {
      ForwardKernelInfo kernel;
      kernel.name = llvm::formatv("sparsetx_fwd_{0}_m{1}_k{2}", gen.pattern, m, k);
      kernel.queryMap = plan.queryMap.str();
      kernel.partialOutput = partial;
      BoundIndexMap queryMap(plan.queryMap, n);
      kernel.numQueries = queryMap.size();
      kernel.numQueryBlocks = (kernel.numQueries + 63) / 64;
      std::string prefix = llvm::formatv("M{0}K{1}", m, k);

      std::vector<std::string> segmentNames;
      for (auto [s, c] : llvm::enumerate(plan.components)) {
        const ComponentLayout &comp = maskLayout.components[c];
        if (comp.numQueryBlocks != kernel.numQueryBlocks)
          return maskOp.emitError()
                 << "codegen: component " << c << " has " << comp.numQueryBlocks
                 << " query blocks, its kernel " << kernel.numQueryBlocks;
        SegmentInfo seg;
        seg.component = c;
        seg.keyMap = comp.keyMap.str();
        seg.numKeys = BoundIndexMap(comp.keyMap, n).size();
        seg.rangeSchedule = comp.schedule == ScheduleKind::Range;
        std::string segName = prefix + "S" + std::to_string(s);
        segmentNames.push_back(segName);
        os << "// Mask " << m << ", component " << c << ": query map "
           << kernel.queryMap << ", key map " << seg.keyMap << ", "
           << comp.numFull() << " full and " << comp.numPartial()
           << " partial blocks.\n";
        os << "struct " << segName << " {\n";
        os << "  static constexpr int64_t kNumKeys = " << i64(seg.numKeys) << ";\n";
        if (seg.rangeSchedule) {
          std::vector<int32_t> all;
          for (const auto *arr :
               {&comp.rangeBegin, &comp.rangeEnd, &comp.fullBegin, &comp.fullEnd})
            all.insert(all.end(), arr->begin(), arr->end());
          FailureOr<int64_t> off = appendTable(gen.tables, all, maskOp);
          if (failed(off))
            return failure();
          seg.offsets = {*off};
          os << "  using Schedule = RangeSchedule<" << *off << ", "
             << kernel.numQueryBlocks << ">;\n";
        } else {
          FailureOr<int64_t> fo = appendTable(gen.tables, comp.full.offsets, maskOp);
          if (failed(fo))
            return failure();
          FailureOr<int64_t> fi = appendTable(gen.tables, comp.full.indices, maskOp);
          if (failed(fi))
            return failure();
          FailureOr<int64_t> po =
              appendTable(gen.tables, comp.partial.offsets, maskOp);
          if (failed(po))
            return failure();
          FailureOr<int64_t> pi =
              appendTable(gen.tables, comp.partial.indices, maskOp);
          if (failed(pi))
            return failure();
          seg.offsets = {*fo, *fi, *po, *pi};
          os << "  using Schedule = TableSchedule<" << *fo << ", " << *fi << ", "
             << *po << ", " << *pi << ">;\n";
        }
        if (options.backward) {
          // The transposed tables (by key block) for the dK/dV kernel.
          seg.numKeyBlocks = (seg.numKeys + 63) / 64;
          if (comp.numKeyBlocks != seg.numKeyBlocks ||
              comp.fullByKey.offsets.size() != size_t(seg.numKeyBlocks + 1) ||
              comp.partialByKey.offsets.size() != size_t(seg.numKeyBlocks + 1))
            return maskOp.emitError()
                   << "codegen: component " << c
                   << " has no transposed tables for its " << seg.numKeyBlocks
                   << " key blocks";
          for (const BlockTable *t : {&comp.fullByKey, &comp.partialByKey}) {
            FailureOr<int64_t> to = appendTable(gen.tables, t->offsets, maskOp);
            if (failed(to))
              return failure();
            FailureOr<int64_t> ti = appendTable(gen.tables, t->indices, maskOp);
            if (failed(ti))
              return failure();
            seg.byKeyOffsets.push_back(*to);
            seg.byKeyOffsets.push_back(*ti);
          }
          os << "  using ByKey = TableSchedule<" << seg.byKeyOffsets[0] << ", "
             << seg.byKeyOffsets[1] << ", " << seg.byKeyOffsets[2] << ", "
             << seg.byKeyOffsets[3] << ">;\n";
          // The dK/dV kernels' lists: query blocks per key block that has any.
          seg.backwardWgmma = listsTakeWgmma(
              options, comp.numFull() + comp.numPartial(), comp.numKeyLists());
          seg.backwardDkDvSharedBytes =
              backwardDkDvSharedBytes(options, seg.backwardWgmma);
          os << "  static constexpr bool kBackwardWgmma = "
             << (seg.backwardWgmma ? "true" : "false") << ";\n";
          seg.backwardDkDvName = llvm::formatv("sparsetx_bwd_dkdv_{0}_m{1}_k{2}_s{3}",
                                               gen.pattern, m, k, s);
          seg.backwardDkDvDqName = llvm::formatv(
              "sparsetx_bwd_dkdvq_{0}_m{1}_k{2}_s{3}", gen.pattern, m, k, s);
          seg.backwardReduceName = llvm::formatv(
              "sparsetx_bwd_reduce_{0}_m{1}_k{2}_s{3}", gen.pattern, m, k, s);
        }
        os << "  __device__ __forceinline__ static int64_t keyPosition(int64_t t) {\n";
        emitPositionBody(comp.keyMap, n, os);
        os << "  }\n";
        os << "  __device__ __forceinline__ static bool mask(int64_t i, int64_t j) {\n";
        MaskPrinter printer(maskOp, maskLayout.head, os);
        if (failed(printer.print(c)))
          return failure();
        os << "  }\n};\n\n";
        kernel.segments.push_back(std::move(seg));
      }

      // The query blocks, longest key list (over every segment) first; ties
      // in index order. The grid dispatches them in this order.
      {
        std::vector<int64_t> blocks(size_t(kernel.numQueryBlocks), 0);
        for (const SegmentInfo &seg : kernel.segments)
          for (int64_t qb = 0; qb < kernel.numQueryBlocks; ++qb) {
            if (seg.rangeSchedule) {
              int64_t begin = gen.tables[seg.offsets[0] + qb];
              int64_t end = gen.tables[seg.offsets[0] + kernel.numQueryBlocks + qb];
              blocks[qb] += std::max<int64_t>(0, end - begin);
            } else {
              blocks[qb] += gen.tables[seg.offsets[0] + qb + 1] -
                            gen.tables[seg.offsets[0] + qb];
              blocks[qb] += gen.tables[seg.offsets[2] + qb + 1] -
                            gen.tables[seg.offsets[2] + qb];
            }
          }
        int64_t longest = 0, total = 0, lists = 0;
        for (int64_t b : blocks) {
          longest = std::max(longest, b);
          total += b;
          lists += b > 0;
        }
        if (options.backward) {
          kernel.backwardDqWgmma = listsTakeWgmma(options, total, lists);
          kernel.backwardDqSharedBytes =
              backwardDqSharedBytes(options, kernel.backwardDqWgmma);
        }
        // Even lists (local, the strided band) gain nothing from the sort
        // and keep index order, whose neighbours share K/V blocks.
        bool sorted = options.queryOrder > 0 ||
                      (options.queryOrder == 0 &&
                       4 * longest * kernel.numQueryBlocks > 5 * total);
        if (sorted) {
          std::vector<int32_t> order(size_t(kernel.numQueryBlocks));
          for (int64_t qb = 0; qb < kernel.numQueryBlocks; ++qb)
            order[qb] = int32_t(qb);
          std::stable_sort(order.begin(), order.end(),
                           [&](int32_t a, int32_t b) { return blocks[a] > blocks[b]; });
          FailureOr<int64_t> off = appendTable(gen.tables, order, maskOp);
          if (failed(off))
            return failure();
          kernel.orderOffset = *off;
        }
      }
      os << "struct " << prefix << " {\n";
      os << "  using Elem = " << elem << ";\n";
      os << "  static constexpr int kOrderOffset = " << kernel.orderOffset
         << ";\n";
      os << "  static constexpr int kHeadDim = " << options.headDim << ";\n";
      os << "  static constexpr bool kCausal = " << (gen.causal ? "true" : "false")
         << ";\n";
      os << "  static constexpr int64_t kSeqLen = " << i64(n) << ";\n";
      os << "  static constexpr int64_t kNumQueries = " << i64(kernel.numQueries)
         << ";\n";
      os << "  static constexpr int64_t kNumHeads = " << numHeads << ";\n";
      os << "  static constexpr int64_t kHead = " << head << ";\n";
      os << "  static constexpr bool kPartialOutput = "
         << (partial ? "true" : "false") << ";\n";
      if (options.backward)
        os << "  static constexpr bool kBackwardDqWgmma = "
           << (kernel.backwardDqWgmma ? "true" : "false") << ";\n";
      os << "  // Query map " << kernel.queryMap << ".\n";
      os << "  __device__ __forceinline__ static int64_t queryPosition(int64_t t) {\n";
      emitPositionBody(plan.queryMap, n, os);
      os << "  }\n";
      os << "  using Segments = SegmentList<";
      for (auto [s, segName] : llvm::enumerate(segmentNames))
        os << (s ? ", " : "") << segName;
      os << ">;\n};\n\n";

      eos << "extern \"C\" __global__ void __launch_bounds__(" << kForwardThreads
          << ") " << kernel.name
          << "(const unsigned short *q, const unsigned short *k,\n"
             "    const unsigned short *v, void *o, float *lse, const int *tables,\n"
             "    float scale) {\n"
          << "  sparsetx::attentionForward<sparsetx_gen::" << prefix
          << ">(q, k, v, o, lse, tables, scale);\n}\n\n";
      if (options.backward) {
        kernel.backwardDqName =
            llvm::formatv("sparsetx_bwd_dq_{0}_m{1}_k{2}", gen.pattern, m, k);
        eos << "extern \"C\" __global__ void __launch_bounds__("
            << kBackwardThreads << ", 1) " << kernel.backwardDqName
            << "(const unsigned short *q, const unsigned short *k,\n"
               "    const unsigned short *v, const unsigned short *dO,\n"
               "    const float *lse, const float *delta, float *dqAcc,\n"
               "    const int *tables, float scale) {\n"
            << "  sparsetx::attentionBackwardDq<sparsetx_gen::" << prefix
            << ">(q, k, v, dO, lse, delta, dqAcc, tables, scale);\n}\n\n";
        for (auto [s, seg] : llvm::enumerate(kernel.segments)) {
          eos << "extern \"C\" __global__ void __launch_bounds__("
              << kBackwardThreads << ", 1) " << seg.backwardDkDvName
              << "(const unsigned short *q, const unsigned short *k,\n"
                 "    const unsigned short *v, const unsigned short *dO,\n"
                 "    const float *lse, const float *delta, float *dkAcc,\n"
                 "    float *dvAcc, const int *tables, const int *work,\n"
                 "    int groups, float *partials, float scale) {\n"
              << "  sparsetx::attentionBackwardDkDv<sparsetx_gen::" << prefix
              << ", sparsetx_gen::" << segmentNames[s]
              << ", false>(q, k, v, dO, lse, delta, nullptr, dkAcc, dvAcc, "
                 "tables,\n      work, groups, partials, scale);\n}\n\n";
          eos << "extern \"C\" __global__ void __launch_bounds__("
              << kBackwardThreads << ", 1) " << seg.backwardDkDvDqName
              << "(const unsigned short *q, const unsigned short *k,\n"
                 "    const unsigned short *v, const unsigned short *dO,\n"
                 "    const float *lse, const float *delta, float *dqAcc,\n"
                 "    float *dkAcc, float *dvAcc, const int *tables,\n"
                 "    const int *work, int groups, float *partials,\n"
                 "    float scale) {\n"
              << "  sparsetx::attentionBackwardDkDv<sparsetx_gen::" << prefix
              << ", sparsetx_gen::" << segmentNames[s]
              << ", true>(q, k, v, dO, lse, delta, dqAcc, dkAcc, dvAcc, "
                 "tables,\n      work, groups, partials, scale);\n}\n\n";
          eos << "extern \"C\" __global__ void __launch_bounds__("
              << kBackwardThreads << ") " << seg.backwardReduceName
              << "(const float *partials, const int *items, int groups,\n"
                 "    float *dkAcc, float *dvAcc) {\n"
              << "  sparsetx::attentionBackwardDkDvReduce<sparsetx_gen::" << prefix
              << ", sparsetx_gen::" << segmentNames[s]
              << ">(partials, items, groups, dkAcc, dvAcc);\n}\n\n";
        }
      }
      if (decode) {
        decodeVariants.push_back(prefix);
        kernel.decodeName =
            llvm::formatv("sparsetx_dec_{0}_m{1}_k{2}", gen.pattern, m, k);
        eos << "extern \"C\" __global__ void __launch_bounds__("
            << kDecodeThreads << ") " << kernel.decodeName
            << "(const unsigned short *q, const unsigned short *kCache,\n"
               "    const unsigned short *vCache, void *o, float *lse,\n"
               "    const int *tables, float scale, long long position,\n"
               "    int queryBlock, long long capacity, long long batchHeads,\n"
               "    int finalOutput, const int *positionAt,\n"
               "    const int *queryBlockAt, unsigned *mergeCounters,\n"
               "    int mergeParts, int partBase, unsigned short *mergeO,\n"
               "    float *mergeLse, float *o32, long long o32Dim) {\n"
            << "  sparsetx::attentionDecode<sparsetx_gen::" << prefix
            << ">(q, kCache, vCache, o, lse, tables, scale, position, "
               "queryBlock,\n      capacity, batchHeads, finalOutput, "
               "positionAt, queryBlockAt, mergeCounters,\n      mergeParts, "
               "partBase, mergeO, mergeLse, o32, o32Dim);\n}\n\n";
      }
      info.kernels.push_back(std::move(kernel));
    }

    if (partial) {
      info.mergeName = llvm::formatv("sparsetx_merge_{0}_m{1}", gen.pattern, m);
      std::string mergeStruct = llvm::formatv("M{0}Merge", m);
      os << "struct " << mergeStruct << " {\n";
      os << "  using Elem = " << elem << ";\n";
      os << "  static constexpr int kHeadDim = " << options.headDim << ";\n";
      os << "  static constexpr int64_t kSeqLen = " << i64(n) << ";\n";
      os << "  static constexpr int kNumKernels = " << maskLayout.kernels.size()
         << ";\n";
      os << "  static constexpr int64_t kNumHeads = " << numHeads << ";\n";
      os << "  static constexpr int64_t kHead = " << head << ";\n";
      os << "  __device__ __forceinline__ static bool covers(int k, int64_t p) {\n";
      for (auto [k, plan] : llvm::enumerate(maskLayout.kernels))
        os << "    if (k == " << k << ")\n      return " << coversExpr(plan.queryMap)
           << ";\n";
      os << "    (void)p;\n    return false;\n  }\n};\n\n";
      eos << "extern \"C\" __global__ void __launch_bounds__(" << kMergeThreads
          << ") " << info.mergeName
          << "(const float *oParts, const float *lseParts,\n"
             "    unsigned short *o, float *lse) {\n"
          << "  sparsetx::attentionMerge<sparsetx_gen::" << mergeStruct
          << ">(oParts, lseParts, o, lse);\n}\n\n";
    }
    gen.masks.push_back(std::move(info));
  }
  if (options.backward) {
    gen.backwardPrepareName = "sparsetx_bwd_prepare_" + gen.pattern;
    gen.backwardConvertName = "sparsetx_bwd_convert_" + gen.pattern;
    eos << "extern \"C\" __global__ void __launch_bounds__(" << kBackwardThreads
        << ") " << gen.backwardPrepareName
        << "(const unsigned short *o, const unsigned short *dO,\n"
           "    float *delta, float *dqAcc, float *dkAcc, float *dvAcc,\n"
           "    long long rows) {\n"
        << "  sparsetx::attentionBackwardPrepare<sparsetx::" << elem << ", "
        << options.headDim << ">(o, dO, delta, dqAcc, dkAcc, dvAcc, rows);\n}\n\n";
    eos << "extern \"C\" __global__ void __launch_bounds__("
        << kBackwardConvertThreads << ") " << gen.backwardConvertName
        << "(const float *acc, unsigned short *dq,\n"
           "    unsigned short *dk, unsigned short *dv, long long elems) {\n"
        << "  sparsetx::attentionBackwardConvert<sparsetx::" << elem
        << ">(acc, dq, dk, dv, elems);\n}\n\n";
  }
  if (decode) {
    gen.decodeMergeName = "sparsetx_dec_merge_" + gen.pattern;
    eos << "extern \"C\" __global__ void __launch_bounds__("
        << kDecodeMergeThreads << ") " << gen.decodeMergeName
        << "(const float *oParts, const float *lseParts,\n"
           "    int numParts, long long batchHeads, int headsPerLaunch, int head,\n"
           "    unsigned short *o, float *lse, float *o32, long long o32Dim) {\n"
        << "  sparsetx::attentionDecodeMerge<sparsetx::" << elem << ", "
        << options.headDim
        << ">(oParts, lseParts, numParts, batchHeads,\n      headsPerLaunch, "
           "head, o, lse, o32, o32Dim);\n}\n\n";
  }
  if (decode) {
    // What a persistent kernel (the model's decoding step) calls for one
    // CTA's share of a row of decode kernel `id`: the same work as the
    // kernel's CTA (split, rowGroup).
    os << "/// Decode kernels in manifest order (masks, then their kernels).\n"
       << "constexpr int kNumDecodeKernels = " << decodeVariants.size() << ";\n"
       << "__device__ __noinline__ void decodeRow(int id,\n"
          "    const sparsetx::DecodeRowArgs &a) {\n  switch (id) {\n";
    for (auto [id, variant] : llvm::enumerate(decodeVariants))
      os << "  case " << id << ":\n    sparsetx::attentionDecodeRow<" << variant
         << ">(a);\n    break;\n";
    os << "  default:\n    break;\n  }\n}\n\n";
  }
  os << "} // namespace sparsetx_gen\n\n" << entries;
  gen.source = std::move(body);
  return gen;
}

void printManifestJSON(const GeneratedAttention &gen, llvm::StringRef ptxFile,
                       llvm::raw_ostream &out) {
  llvm::json::OStream j(out, 2);
  // grid.y depends on the batch: "batch_heads" or "batch_heads / H".
  auto grid = [&](int64_t x, llvm::StringRef y) {
    j.attributeObject("grid", [&] {
      j.attribute("x", x);
      j.attribute("y", y);
      j.attribute("z", 1);
    });
  };
  // Kernels indexed by (block, batch group) in grid.x, group fastest.
  auto flatGrid = [&](int64_t x, llvm::StringRef y) {
    j.attributeObject("grid", [&] {
      j.attribute("x", std::to_string(x) + " * (" + y.str() + ")");
      j.attribute("y", 1);
      j.attribute("z", 1);
    });
  };
  auto block = [&](unsigned threads) {
    j.attributeArray("block", [&] {
      j.value(int64_t(threads));
      j.value(1);
      j.value(1);
    });
  };
  j.object([&] {
    j.attribute("format", "sparsetx-attention-manifest");
    j.attribute("version", 1);
    j.attribute("ptx", ptxFile);
    j.attribute("pattern", gen.pattern);
    j.attribute("seq_len", gen.seqLen);
    j.attribute("head_dim", gen.headDim);
    j.attribute("dtype", getElementTypeName(gen.dtype));
    j.attribute("arch", gen.arch);
    j.attribute("causal", gen.causal);
    j.attribute("layered", gen.layered);
    j.attribute("per_head", gen.perHead);
    j.attribute("num_heads", gen.numHeads);
    j.attribute("block_q", gen.blockQ);
    j.attribute("block_k", gen.blockK);
    j.attribute("layout",
                "q, k, v, o: [batch_heads, seq_len, head_dim] contiguous dtype; "
                "lse: [batch_heads, seq_len] fp32, natural log");
    j.attributeObject("forward_args", [&] {
      j.attribute("signature",
                  "(q, k, v, o, lse, tables, float scale); grid.x = query "
                  "blocks * batch groups: CTA x takes query block "
                  "tables[query_block_order + x / groups] (longest first) of "
                  "group x % groups, or, where query_block_order is null, "
                  "query block x % blocks of group x / blocks; o and lse are the "
                  "final outputs, or part `kernel` of the fp32 partial buffers "
                  "o_parts [kernels][batch_heads][seq_len][head_dim] and "
                  "lse_parts [kernels][batch_heads][seq_len] when "
                  "partial_output");
    });
    j.attributeObject("merge_args", [&] {
      j.attribute("signature", "(o_parts, lse_parts, o, lse)");
    });
    if (gen.hasBackward()) {
      j.attributeObject("backward", [&] {
        j.attribute("order",
                    "prepare; per mask of the layer: per kernel, "
                    "backward_dkdv_dq of each component (fast: dQ by fp32 "
                    "reductions, not bit-reproducible), or backward_dq then "
                    "backward_dkdv of each component (deterministic), one "
                    "launch after another; convert");
        j.attribute("workspace",
                    "fp32 acc = dq_acc, dk_acc, dv_acc [batch_heads][seq_len]"
                    "[head_dim] back to back, delta [batch_heads][seq_len]");
        j.attributeObject("prepare", [&] {
          j.attribute("name", gen.backwardPrepareName);
          j.attribute("signature",
                      "(o, d_o, delta, dq_acc, dk_acc, dv_acc, long long rows); "
                      "rows = batch_heads * seq_len");
          j.attribute("grid_x", "ceil(rows / " +
                                    std::to_string(kBackwardPrepareRows) + ")");
          block(kBackwardThreads);
        });
        j.attribute("dq_signature",
                    "(q, k, v, d_o, lse, delta, dq_acc, tables, float scale)");
        j.attribute("dkdv_signature", "(q, k, v, d_o, lse, delta, dk_acc, "
                                      "dv_acc, tables, work, int groups, "
                                      "partials, float scale)");
        j.attribute("dkdv_dq_signature",
                    "(q, k, v, d_o, lse, delta, dq_acc, dk_acc, dv_acc, "
                    "tables, work, int groups, partials, float scale)");
        j.attribute("dkdv_work",
                    "grid x = work items * groups (groups = batch_heads / "
                    "heads per launch; group fastest); work: int32 (key "
                    "block, begin, end, slot) per item, walking [begin, end) "
                    "of the key block's by-key list; slot < 0 adds dK, dV "
                    "into dk_acc, dv_acc, else stores them into partials "
                    "[slot][group][2][64][head_dim] fp32 for backward_reduce");
        j.attribute("reduce_signature",
                    "(partials, items, int groups, dk_acc, dv_acc); items: "
                    "int32 (key block, first slot, parts, 0) per split key "
                    "block; grid x = items * groups; sums the parts in slot "
                    "order");
        j.attributeObject("convert", [&] {
          j.attribute("name", gen.backwardConvertName);
          j.attribute("signature", "(acc, dq, dk, dv, long long elems); elems = "
                                   "batch_heads * seq_len * head_dim");
          j.attribute("grid", "(ceil(elems / " +
                                  std::to_string(2 * kBackwardConvertThreads) +
                                  "), 3)");
          block(kBackwardConvertThreads);
        });
      });
    }
    if (gen.hasDecode()) {
      j.attributeObject("decode", [&] {
        j.attribute("layout",
                    "q, o: [batch_heads, head_dim] dtype; k_cache, v_cache: "
                    "[batch_heads, capacity, head_dim] dtype, rows past "
                    "position never read; lse: [batch_heads] fp32");
        j.attribute("order",
                    "per mask of the layer: per kernel whose query map covers "
                    "position p (mapped index t, query block t / 64) and whose "
                    "row has key blocks, decode with grid (splits, y); with "
                    "more than one part the decode CTAs merge them (the CTA "
                    "that writes a batch-head's last part, merge_counters "
                    "given); the merge kernel only for a mask with no parts "
                    "at the position (O = 0, LSE = -inf)");
        j.attribute("signature",
                    "(q, k_cache, v_cache, o, lse, tables, float scale, long "
                    "long position, int query_block, long long capacity, long "
                    "long batch_heads, int final_output, const int "
                    "*position_at, const int *query_block_at, unsigned "
                    "*merge_counters, int merge_parts, int part_base, "
                    "merge_o, float *merge_lse, float *o32, long long "
                    "o32_dim); final_output: "
                    "o, lse are the outputs (grid.x = 1), else this launch's "
                    "fp32 parts o_parts [splits][batch_heads][head_dim], "
                    "lse_parts [splits][batch_heads]; position_at (device, "
                    "or null): the position is read there and the query "
                    "block from query_block_at[position] (-1: no part), the "
                    "row using min(grid.x, ceil(blocks / 2)) CTAs and the "
                    "rest writing empty parts; merge_counters (one zeroed "
                    "unsigned per batch-head, left zeroed; or null: no "
                    "merge): this launch's parts are parts part_base.. of "
                    "the mask's merge_parts, and the CTA that writes a "
                    "batch-head's last one merges them into merge_o, "
                    "merge_lse (or o32 [batch_heads, o32_dim] in fp32)");
        block(kDecodeThreads);
        j.attributeObject("merge", [&] {
          j.attribute("name", gen.decodeMergeName);
          j.attribute("signature",
                      "(o_parts, lse_parts, int num_parts, long long "
                      "batch_heads, int heads_per_launch, int head, o, lse, "
                      "float *o32, long long o32_dim); o32 (or null): O in "
                      "fp32 [batch_heads, o32_dim] (the first o32_dim "
                      "dimensions) instead of o");
          j.attribute("grid_x", "batch_heads / heads_per_launch");
          block(kDecodeMergeThreads);
        });
      });
    }
    j.attribute("max_kernels_per_mask", int64_t(gen.maxKernelsPerMask()));
    j.attributeArray("masks", [&] {
      for (auto [m, mask] : llvm::enumerate(gen.masks)) {
        j.object([&] {
          j.attribute("index", int64_t(m));
          j.attribute("layer", mask.layer ? llvm::json::Value(*mask.layer)
                                          : llvm::json::Value(nullptr));
          j.attribute("head", mask.head ? llvm::json::Value(*mask.head)
                                        : llvm::json::Value(nullptr));
          int64_t headsPerLaunch = mask.head ? gen.numHeads : 1;
          std::string gridY =
              headsPerLaunch == 1
                  ? std::string("batch_heads")
                  : "batch_heads / " + std::to_string(headsPerLaunch);
          j.attributeArray("kernels", [&] {
            for (const ForwardKernelInfo &k : mask.kernels) {
              j.object([&] {
                j.attribute("name", k.name);
                j.attribute("query_map", k.queryMap);
                j.attribute("num_queries", k.numQueries);
                j.attribute("partial_output", k.partialOutput);
                flatGrid(k.numQueryBlocks, gridY);
                if (k.orderOffset >= 0)
                  j.attribute("query_block_order", k.orderOffset);
                else
                  j.attribute("query_block_order", nullptr);
                block(kForwardThreads);
                j.attribute("shared_bytes", int64_t(gen.forwardSharedBytes));
                if (!k.decodeName.empty())
                  j.attribute("decode", k.decodeName);
                if (!k.backwardDqName.empty())
                  j.attributeObject("backward_dq", [&] {
                    j.attribute("name", k.backwardDqName);
                    flatGrid(k.numQueryBlocks, gridY);
                    block(kBackwardThreads);
                    j.attribute("mma", k.backwardDqWgmma ? "wgmma" : "mma.sync");
                    j.attribute("shared_bytes", int64_t(k.backwardDqSharedBytes));
                  });
                j.attributeArray("components", [&] {
                  for (const SegmentInfo &s : k.segments) {
                    j.object([&] {
                      j.attribute("component", int64_t(s.component));
                      j.attribute("key_map", s.keyMap);
                      j.attribute("num_keys", s.numKeys);
                      j.attribute("schedule", s.rangeSchedule ? "range" : "table");
                      j.attributeArray("table_offsets", [&] {
                        for (int64_t o : s.offsets)
                          j.value(o);
                      });
                      if (!s.backwardDkDvName.empty()) {
                        j.attributeArray("by_key_table_offsets", [&] {
                          for (int64_t o : s.byKeyOffsets)
                            j.value(o);
                        });
                        j.attributeObject("backward_dkdv", [&] {
                          j.attribute("name", s.backwardDkDvName);
                          j.attribute("key_blocks", s.numKeyBlocks);
                          j.attribute("grid_x", "work items * groups");
                          block(kBackwardThreads);
                          j.attribute("mma", s.backwardWgmma ? "wgmma" : "mma.sync");
                          j.attribute("shared_bytes",
                                      int64_t(s.backwardDkDvSharedBytes));
                        });
                        j.attributeObject("backward_dkdv_dq", [&] {
                          j.attribute("name", s.backwardDkDvDqName);
                          j.attribute("key_blocks", s.numKeyBlocks);
                          j.attribute("grid_x", "work items * groups");
                          block(kBackwardThreads);
                          j.attribute("mma", s.backwardWgmma ? "wgmma" : "mma.sync");
                          j.attribute("shared_bytes",
                                      int64_t(s.backwardDkDvSharedBytes));
                        });
                        j.attributeObject("backward_reduce", [&] {
                          j.attribute("name", s.backwardReduceName);
                          block(kBackwardThreads);
                        });
                      }
                    });
                  }
                });
              });
            }
          });
          if (mask.mergeName.empty()) {
            j.attribute("merge", nullptr);
          } else {
            j.attributeObject("merge", [&] {
              j.attribute("name", mask.mergeName);
              grid((gen.seqLen + kMergeRowsPerBlock - 1) / kMergeRowsPerBlock,
                   gridY);
              block(kMergeThreads);
              j.attribute("shared_bytes", 0);
            });
          }
        });
      }
    });
    j.attributeArray("tables", [&] {
      for (int32_t v : gen.tables)
        j.value(v);
    });
  });
  out << "\n";
}

} // namespace sparsetx::codegen
