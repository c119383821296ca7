//===- MaskEvaluator.h - evaluate sp masks at positions ---------*- C++ -*-===//
//
// The predicate evaluator of the sp dialect: compiles one `sp.mask` region,
// with its parameters (and, where used, the sequence length) bound, into a
// flat register program, and answers "does query i attend to key j (in head
// h)" for concrete positions. It is the ground truth that the analytic passes
// are checked against: exhaustive block classification, the empty-row check,
// the CPU reference attention, sparsec's pattern pictures.
//
// Two evaluation modes share one compiled program:
//  - evaluate(i, j, h): one pair, a scalar interpreter over every instruction;
//  - evaluateRow(i, h, jBegin, [jStride,] count, out): a run of keys of one
//    query row (consecutive, or jStride apart).
//    Values that depend only on i and h are computed once per row; the rest
//    run one instruction at a time over lanes of up to 256 keys, so that the
//    dispatch cost is amortized and each instruction is a tight loop the C++
//    compiler vectorizes. Division and modulo by the (always constant)
//    divisor use shifts or multiply-high magic numbers, never a hardware
//    divide.
//
// Semantics are those of the .sp language (include/sparsetx/Support/IntMath.h):
// 64-bit integers that wrap on overflow, floor division and floor modulo by
// positive divisors, and the pattern's `causal` flag applied on top of the
// mask (mask && j <= i).
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_ANALYSIS_MASKEVALUATOR_H
#define SPARSETX_ANALYSIS_MASKEVALUATOR_H

#include "sparsetx/Dialect/SP/IR/SP.h"

#include "mlir/Support/LLVM.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <optional>
#include <vector>

namespace sparsetx {

/// What a mask is compiled for. Parameter values are read from the enclosing
/// `sp.pattern`'s attributes (rebind them with PatternOp::setParam).
struct Binding {
  /// The sequence length `n`. When unset, the pattern's `seq_len` attribute
  /// (set by sp-specialize) is used; a mask that reads `sp.seq_len` with
  /// neither is an error.
  std::optional<int64_t> seqLen;

  Binding() = default;
  explicit Binding(std::optional<int64_t> seqLen) : seqLen(seqLen) {}
};

namespace detail {
struct MaskInstr;
} // namespace detail

/// One `sp.mask` region compiled for a binding. Cheap to copy; immutable
/// after compile(), so one program may be evaluated from many threads.
class MaskProgram {
public:
  /// Lanes processed per instruction in evaluateRow(); also the granularity at
  /// which callers may want to chunk long rows (any count is accepted).
  static constexpr int64_t kLanes = 256;

  /// Compiles `mask`. On failure an error has been emitted at the offending
  /// operation: an op or type the evaluator does not support, `sp.seq_len`
  /// with no n bound, or a divisor that is not a positive constant after
  /// binding the parameters.
  /// `component` selects one operand of the mask's sp.yield (a component
  /// after sp-decompose); by default the program computes their union.
  static mlir::FailureOr<MaskProgram>
  compile(sp::MaskOp mask, const Binding &binding = {},
          std::optional<unsigned> component = std::nullopt);

  /// Does query `i` attend to key `j` in head `h`? Includes the pattern's
  /// causal flag. `h` is ignored unless the mask is per-head.
  bool evaluate(int64_t i, int64_t j, int64_t h = 0) const;

  /// out[k] = evaluate(i, jBegin + k, h) (0 or 1) for k in [0, count).
  void evaluateRow(int64_t i, int64_t h, int64_t jBegin, int64_t count,
                   uint8_t *out) const;

  /// Strided form: out[k] = evaluate(i, jBegin + k * jStride, h) (0 or 1) for
  /// k in [0, count), jStride >= 1 (the runs of a transposed key map).
  void evaluateRow(int64_t i, int64_t h, int64_t jBegin, int64_t jStride,
                   int64_t count, uint8_t *out) const;

  bool isCausal() const { return causal; }
  bool isPerHead() const { return perHead; }
  /// The mask's layer index, if the pattern is layered.
  std::optional<int64_t> getLayer() const { return layer; }
  /// The sequence length the program was compiled for, if the mask uses it.
  std::optional<int64_t> getSeqLen() const { return seqLen; }
  /// Instructions left after folding, CSE and dead-code elimination.
  size_t getNumInstructions() const;

  /// A readable listing of the program (for debugging and tests).
  void print(llvm::raw_ostream &os) const;

  MaskProgram();
  MaskProgram(const MaskProgram &);
  MaskProgram(MaskProgram &&) noexcept;
  MaskProgram &operator=(const MaskProgram &);
  MaskProgram &operator=(MaskProgram &&) noexcept;
  ~MaskProgram();

private:
  friend class MaskCompiler;

  /// Register file of the scalar program: [0] = i, [1] = j, [2] = h, then the
  /// constant pool, then one register per instruction result.
  std::vector<int64_t> scalarInit;
  /// Every live instruction in order, over scalar registers.
  std::vector<detail::MaskInstr> scalarCode;
  /// The instructions that depend on i and h but not on j, over scalar
  /// registers; run once per evaluateRow call.
  std::vector<detail::MaskInstr> uniformCode;
  /// The instructions that depend on j: their results live in vector
  /// registers (allocated with reuse), their operands are vector or scalar
  /// registers as recorded in each instruction's kernel.
  std::vector<detail::MaskInstr> varyingCode;
  unsigned numVectorRegs = 0;
  /// Vector register that holds j (jBegin + lane), if any code reads j.
  std::optional<unsigned> keyVectorReg;
  /// The yielded value: scalar register `resultReg`, or vector register
  /// `resultVectorReg` when it depends on j.
  unsigned resultReg = 0;
  std::optional<unsigned> resultVectorReg;

  bool causal = false;
  bool perHead = false;
  std::optional<int64_t> layer;
  std::optional<int64_t> seqLen;
};

/// Every mask of an `sp.pattern`, compiled: answers attention queries for any
/// residual block (layer) and head.
class PatternEvaluator {
public:
  /// Compiles every mask of `pattern`; fails (with diagnostics emitted) if any
  /// mask does.
  static mlir::FailureOr<PatternEvaluator> compile(sp::PatternOp pattern,
                                                   const Binding &binding = {});

  /// Number of distinct masks: the layer count of a layered pattern, else 1.
  int64_t getNumMasks() const { return static_cast<int64_t>(masks.size()); }
  bool isLayered() const { return layered; }
  /// True if any mask reads the head index.
  bool isPerHead() const { return perHead; }
  bool isCausal() const { return causal; }

  /// The mask that residual block `layer` uses (entry layer % getNumMasks()).
  const MaskProgram &getMask(int64_t layer) const;

  /// Does query i attend to key j in head `head` of residual block `layer`?
  bool attends(int64_t layer, int64_t head, int64_t i, int64_t j) const {
    return getMask(layer).evaluate(i, j, head);
  }
  /// Batched form of attends() over keys [jBegin, jBegin + count).
  void evaluateRow(int64_t layer, int64_t head, int64_t i, int64_t jBegin,
                   int64_t count, uint8_t *out) const {
    getMask(layer).evaluateRow(i, head, jBegin, count, out);
  }

private:
  llvm::SmallVector<MaskProgram, 2> masks;
  bool layered = false;
  bool perHead = false;
  bool causal = false;
};

/// Checks that, at sequence length `n`, every query row of every mask (and of
/// every head in [0, numHeads) for per-head masks) attends to at least one key
/// in [0, n): a row with none has an undefined softmax. Emits, at the mask of
/// the first offending row,
///   query row i = 7 in head 2 of layer 1 attends to no key at n = 1024
///   (its softmax would be undefined)
/// (the head and layer parts only where they apply), once per mask. Searches
/// each row outward from the diagonal, so typical patterns cost O(n).
mlir::LogicalResult verifyNoEmptyRows(sp::PatternOp pattern, int64_t n,
                                      int64_t numHeads);

} // namespace sparsetx

#endif // SPARSETX_ANALYSIS_MASKEVALUATOR_H
