//===- Connectivity.cpp - can every key reach every query? ----------------===//
//
// The connectivity check of the paper's section 4.2 over bitsets: each
// query's reach set (the keys whose information has arrived at it) is a row of
// n bits; one attention step ORs, into each row, the rows of the positions it
// attends. The attended positions of each row come from the mask evaluator's
// row mode, packed into bits once per mask and reused by every step that uses
// that mask. See Connectivity.h for the semantics of steps and heads.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Analysis/Connectivity.h"
#include "sparsetx/Analysis/MaskEvaluator.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallVector.h"

#include <algorithm>
#include <map>
#include <vector>

using namespace mlir;
using namespace sparsetx;
using namespace sparsetx::sp;

namespace {

/// The number of top-level `||` disjuncts of an i1 value: the leaves of the
/// tree of arith.ori ops rooted at it (a worklist, since long chains of
/// unions would otherwise recurse deeply).
int64_t countDisjuncts(Value value) {
  int64_t count = 0;
  SmallVector<Value> worklist{value};
  while (!worklist.empty()) {
    Value v = worklist.pop_back_val();
    if (auto ori = v.getDefiningOp<arith::OrIOp>()) {
      worklist.push_back(ori.getRhs());
      worklist.push_back(ori.getLhs());
      continue;
    }
    ++count;
  }
  return count;
}

/// The factor count of one mask: its components after sp-decompose, else the
/// disjuncts of its single yielded value.
int64_t countFactors(MaskOp mask) {
  YieldOp yield = mask.getYield();
  if (!yield || yield.getValues().empty())
    return 1;
  if (yield.getValues().size() > 1)
    return static_cast<int64_t>(yield.getValues().size());
  return std::max<int64_t>(1, countDisjuncts(yield.getValues()[0]));
}

/// The masks of a pattern by layer (one group for an unlayered pattern); a
/// group holds one shared mask or one mask per head (after sp-specialize).
std::vector<SmallVector<MaskOp, 1>> groupByLayer(PatternOp pattern) {
  std::map<int64_t, SmallVector<MaskOp, 1>> byLayer;
  for (MaskOp mask : pattern.getMasks())
    byLayer[mask.getLayer().value_or(0)].push_back(mask);
  std::vector<SmallVector<MaskOp, 1>> groups;
  for (auto &entry : byLayer)
    groups.push_back(std::move(entry.second));
  return groups;
}

/// One step's mask at m positions: the union over the heads of one layer,
/// compiled for sequence length n.
struct StepMask {
  /// (program, head) pairs whose union is the step's mask.
  std::vector<std::pair<const MaskProgram *, int64_t>> parts;
  std::vector<MaskProgram> programs;
};

/// rows[a * words + w]: bit b of word w is set iff a attends b (in some
/// head). Built with the evaluator's row mode; a causal pattern only
/// evaluates keys [0, a].
void buildRows(const StepMask &step, int64_t m, int64_t words, bool causal,
               std::vector<uint64_t> &rows) {
  rows.assign(static_cast<size_t>(m * words), 0);
  std::vector<uint8_t> buf(static_cast<size_t>(m));
  for (int64_t a = 0; a < m; ++a) {
    int64_t len = causal ? a + 1 : m;
    uint64_t *row = rows.data() + a * words;
    for (auto [program, head] : step.parts) {
      program->evaluateRow(a, head, 0, len, buf.data());
      for (int64_t w = 0; w * 64 < len; ++w) {
        int64_t begin = w * 64, end = std::min(len, begin + 64);
        uint64_t bits = 0;
        for (int64_t k = begin; k < end; ++k)
          bits |= uint64_t(buf[k] & 1) << (k - begin);
        row[w] |= bits;
      }
    }
  }
}

} // namespace

int64_t sparsetx::getConnectivitySteps(PatternOp pattern) {
  if (pattern.isLayered())
    return std::max<int64_t>(1, groupByLayer(pattern).size());
  int64_t steps = 1;
  for (MaskOp mask : pattern.getMasks())
    steps = std::max(steps, countFactors(mask));
  return steps;
}

FailureOr<ConnectivityResult>
sparsetx::checkConnectivity(PatternOp pattern, int64_t n, int64_t numHeads,
                            const ConnectivityOptions &options) {
  if (n <= 0)
    return pattern.emitError()
           << "the sequence length must be positive, but is " << n;
  if (options.maxSeqLen <= 0)
    return pattern.emitError()
           << "the checked sequence length must be positive, but is "
           << options.maxSeqLen;
  if (options.steps && *options.steps <= 0)
    return pattern.emitError()
           << "the step count must be positive, but is " << *options.steps;

  ConnectivityResult result;
  result.seqLen = n;
  result.checkedSeqLen = std::min(n, options.maxSeqLen);
  result.truncated = result.checkedSeqLen < n;
  result.steps = options.steps ? *options.steps : getConnectivitySteps(pattern);
  const bool causal = pattern.getCausal();
  const int64_t m = result.checkedSeqLen;
  const int64_t words = (m + 63) / 64;

  // Compile every layer's masks for the real n (masks that read `n` mean
  // what they mean there); the check looks at the prefix [0, m).
  std::vector<SmallVector<MaskOp, 1>> groups = groupByLayer(pattern);
  std::vector<StepMask> steps(groups.size());
  bool ok = true;
  for (size_t g = 0; g < groups.size(); ++g) {
    steps[g].programs.reserve(groups[g].size());
    for (MaskOp mask : groups[g]) {
      FailureOr<MaskProgram> program = MaskProgram::compile(mask, Binding(n));
      if (failed(program)) {
        ok = false;
        continue;
      }
      if (program->isPerHead() && numHeads <= 0) {
        mask.emitError() << "the head count must be positive, but is "
                         << numHeads;
        ok = false;
        continue;
      }
      steps[g].programs.push_back(std::move(*program));
    }
    for (const MaskProgram &program : steps[g].programs) {
      // A per-head mask contributes every head; a shared mask, or one
      // specialized to a head, contributes itself.
      int64_t heads = program.isPerHead() ? numHeads : 1;
      for (int64_t h = 0; h < heads; ++h)
        steps[g].parts.push_back({&program, h});
    }
  }
  if (!ok)
    return failure();
  if (groups.empty())
    return pattern.emitError() << "the pattern has no mask";

  // reach[a]: positions whose information has reached a. Before any step,
  // only a itself.
  std::vector<uint64_t> reach(static_cast<size_t>(m * words), 0);
  std::vector<uint64_t> next(reach.size(), 0);
  for (int64_t a = 0; a < m; ++a)
    reach[a * words + a / 64] = uint64_t(1) << (a % 64);

  std::vector<uint64_t> rows;
  int64_t rowsOf = -1; // the group `rows` was built for
  const int64_t numGroups = static_cast<int64_t>(groups.size());
  for (int64_t s = 0; s < result.steps; ++s) {
    int64_t g = s % numGroups;
    if (g != rowsOf) {
      buildRows(steps[g], m, words, causal, rows);
      rowsOf = g;
    }
    const bool last = s + 1 == result.steps;
    for (int64_t a = 0; a < m; ++a) {
      const uint64_t *attended = rows.data() + a * words;
      uint64_t *out = next.data() + a * words;
      const uint64_t *own = reach.data() + a * words;
      // Under a causal mask every reach set of a row b <= a lies in [0, b],
      // so only the words up to a's can change.
      int64_t span = causal ? a / 64 + 1 : words;
      if (s == 0) {
        // reach is the identity: the step's reach is the row plus a itself.
        for (int64_t w = 0; w < span; ++w)
          out[w] = attended[w] | own[w];
      } else {
        std::copy(own, own + span, out);
        for (int64_t w = 0; w < span; ++w) {
          for (uint64_t bits = attended[w]; bits; bits &= bits - 1) {
            int64_t b = w * 64 + __builtin_ctzll(bits);
            const uint64_t *from = reach.data() + b * words;
            int64_t fromSpan = causal ? b / 64 + 1 : words;
            for (int64_t v = 0; v < fromSpan; ++v)
              out[v] |= from[v];
          }
        }
      }
      if (!last)
        continue;
      // The final reach of a is complete: a must see every key it needs
      // (j <= a for causal patterns, every j otherwise).
      int64_t need = causal ? a + 1 : m;
      for (int64_t w = 0; w * 64 < need; ++w) {
        int64_t bitsHere = std::min<int64_t>(64, need - w * 64);
        uint64_t want = bitsHere == 64 ? ~uint64_t(0)
                                       : (uint64_t(1) << bitsHere) - 1;
        uint64_t missing = want & ~out[w];
        if (missing) {
          result.connected = false;
          result.witnessQuery = a;
          result.witnessKey = w * 64 + __builtin_ctzll(missing);
          return result;
        }
      }
    }
    reach.swap(next);
  }
  return result;
}
