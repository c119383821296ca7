//===- BlockLayout.cpp - block classes and schedules of a component -------===//
//
// For every query block, the key blocks are classified by recursive bisection
// of the key-block range with the abstract interpreter: a range it decides
// False is empty, True is full, and an undecided range is halved. A single
// block that stays undecided is counted exactly: its (query rows x keys)
// rectangle is split further in a quadtree, again asking the abstract
// interpreter about each piece, and only the pieces it cannot decide (down to
// kLeafPairs pairs) are evaluated with the concrete MaskProgram, over the runs
// of key positions that the key map's forEachRun yields (strided rows for a
// transposed key map). Consecutive query blocks usually differ little, so a
// row starts from the previous row's runs of classes, asking about each run
// and searching a run that changed from its ends before bisecting it. The
// work grows with the boundary of the pattern in the block grid, never with
// n^2.
//
// Rows are recorded as runs of consecutive key blocks (a band or a prefix of
// full blocks is one run however long), from which the CSR tables and their
// transposes are written in one parallel pass each.
//
// Query blocks are classified in parallel, in a fixed number of chunks whose
// results are concatenated in order, so the tables (and the cost counters)
// are the same for any thread count. The size of the tables is checked
// against the memory limit as entries are appended; the outcome depends only
// on the total, so it is deterministic too.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Analysis/BlockLayout.h"

#include "llvm/Support/Parallel.h"

#include <algorithm>
#include <atomic>
#include <cassert>
#include <limits>
#include <numeric>

using namespace mlir;
using namespace sparsetx;

namespace {

/// Pieces of an undecided block of at most this many pairs are evaluated
/// concretely rather than split again.
constexpr int64_t kLeafPairs = 512;
/// Query blocks are classified in chunks of consecutive rows, at most this
/// many (scheduled dynamically over the threads), each of at least
/// kMinChunkRows rows where there are that many (rows after the first of a
/// chunk start from the previous row's classes).
constexpr int64_t kMaxChunks = 128;
constexpr int64_t kMinChunkRows = 32;
/// Bytes per table entry: its index in the forward and the transposed table.
constexpr int64_t kBytesPerEntry = 2 * sizeof(int32_t);
/// Bytes per run of entries while the tables are built.
constexpr int64_t kBytesPerRun = 2 * sizeof(int32_t);

/// "N MiB" when the limit is a whole number of MiB, else KiB or bytes.
std::string formatBytes(int64_t bytes) {
  constexpr int64_t kKiB = 1024, kMiB = kKiB * 1024;
  if (bytes >= kMiB && bytes % kMiB == 0)
    return std::to_string(bytes / kMiB) + " MiB";
  if (bytes >= kKiB && bytes % kKiB == 0)
    return std::to_string(bytes / kKiB) + " KiB";
  return std::to_string(bytes) + " bytes";
}

/// The block grid over the mapped query and key ranges.
struct Grid {
  BoundIndexMap query, key;
  int64_t numQuery, numKey; // mapped sizes
  int64_t blockQ, blockK;
  int64_t numQueryBlocks, numKeyBlocks;

  Grid(const IndexMap &queryMap, const IndexMap &keyMap, int64_t n,
       int64_t blockQ, int64_t blockK)
      : query(queryMap, n), key(keyMap, n), numQuery(query.size()),
        numKey(key.size()), blockQ(blockQ), blockK(blockK),
        numQueryBlocks((numQuery + blockQ - 1) / blockQ),
        numKeyBlocks((numKey + blockK - 1) / blockK) {}

  int64_t queryBegin(int64_t qb) const { return qb * blockQ; }
  int64_t queryEnd(int64_t qb) const {
    return std::min(numQuery, (qb + 1) * blockQ);
  }
  int64_t keyBegin(int64_t kb) const { return kb * blockK; }
  int64_t keyEnd(int64_t kb) const {
    return std::min(numKey, (kb + 1) * blockK);
  }
};

/// A run of key positions: count keys from `first`, `stride` apart.
struct KeyRun {
  int64_t first, stride, count;
};

/// Consecutive key blocks [begin, end) of one class in one row.
struct BlockRun {
  int32_t begin, end;
};

/// Rows of one class as runs: row r owns runs [runOffsets[r],
/// runOffsets[r + 1]) (ascending, disjoint, not adjacent) and entries
/// [entryOffsets[r], entryOffsets[r + 1]) of the table they expand to.
struct RunTable {
  std::vector<int64_t> runOffsets, entryOffsets;
  std::vector<BlockRun> runs;
};

/// What a chunk of query blocks produced.
struct Chunk {
  std::vector<BlockRun> full, partial;
  int64_t useful = 0, computed = 0, queries = 0, pairs = 0;
};

/// Classifies the key blocks of query blocks; one per chunk of query blocks
/// (not shared between threads).
class RowClassifier {
public:
  RowClassifier(const MaskProgram &program, const AbstractMask &abstract,
                const Grid &grid, int64_t head, Chunk &chunk)
      : program(program), abstract(abstract), grid(grid), head(head),
        chunk(chunk), rowBuffer(static_cast<size_t>(grid.blockK)) {}

  /// Appends query block qb's runs of full and of partial key blocks
  /// (ascending) to the chunk. Consecutive calls (qb, qb + 1, ...) start from
  /// the previous row's runs of classes.
  void classify(int64_t qb) {
    t0 = grid.queryBegin(qb);
    t1 = grid.queryEnd(qb);
    queryBox = grid.query.box(t0, t1);
    rowFull0 = chunk.full.size();
    rowPartial0 = chunk.partial.size();
    fullEntries = partialEntries = 0;
    if (grid.numKeyBlocks > 0) {
      if (previousRow == qb - 1 && !classRuns.empty()) {
        // Most patterns move little from one query block to the next: ask
        // about the previous row's runs first; a run whose answer is no
        // longer uniform is searched from its ends, where its boundaries
        // most likely moved.
        previousClassRuns.swap(classRuns);
        for (const ClassRun &r : previousClassRuns)
          classifyNear(r.begin, r.end);
      } else {
        classifyRange(0, grid.numKeyBlocks);
      }
    }
    recordClassRuns();
    previousRow = qb;
  }

  /// The current row's runs and entries.
  size_t numFullRuns() const { return chunk.full.size() - rowFull0; }
  size_t numPartialRuns() const { return chunk.partial.size() - rowPartial0; }
  int64_t fullEntries = 0, partialEntries = 0;

private:
  Tri ask(const PositionBox &q, const PositionBox &k) {
    ++chunk.queries;
    return abstract.evaluate(q, k, head);
  }

  void addRun(std::vector<BlockRun> &runs, size_t rowStart, int64_t kb0,
              int64_t kb1) {
    if (runs.size() > rowStart && runs.back().end == kb0)
      runs.back().end = static_cast<int32_t>(kb1);
    else
      runs.push_back({static_cast<int32_t>(kb0), static_cast<int32_t>(kb1)});
  }

  /// A range of key blocks the abstract interpreter decided as a whole.
  void emitDecided(int64_t kb0, int64_t kb1, Tri t) {
    if (t != Tri::True)
      return;
    int64_t area = (t1 - t0) * (grid.keyEnd(kb1 - 1) - grid.keyBegin(kb0));
    addRun(chunk.full, rowFull0, kb0, kb1);
    fullEntries += kb1 - kb0;
    chunk.useful += area;
    chunk.computed += area;
  }

  /// Key blocks [kb0, kb1) of the current query block, kb0 < kb1.
  void classifyRange(int64_t kb0, int64_t kb1) {
    int64_t s0 = grid.keyBegin(kb0), s1 = grid.keyEnd(kb1 - 1);
    Tri t = ask(queryBox, grid.key.box(s0, s1));
    if (t != Tri::Unknown) {
      emitDecided(kb0, kb1, t);
      return;
    }
    if (kb1 - kb0 > 1) {
      int64_t mid = kb0 + (kb1 - kb0) / 2;
      classifyRange(kb0, mid);
      classifyRange(mid, kb1);
      return;
    }
    // One block the abstract interpreter cannot decide as a whole: count its
    // pairs exactly.
    int64_t area = (t1 - t0) * (s1 - s0);
    int64_t count = countSplit(t0, t1, s0, s1);
    if (count == 0)
      return;
    if (count == area) {
      addRun(chunk.full, rowFull0, kb0, kb0 + 1);
      ++fullEntries;
    } else {
      addRun(chunk.partial, rowPartial0, kb0, kb0 + 1);
      ++partialEntries;
    }
    chunk.useful += count;
    chunk.computed += area;
  }

  /// Like classifyRange, for a range whose boundaries, if any, likely lie
  /// near its ends: peels a block off each end before bisecting the middle.
  void classifyNear(int64_t kb0, int64_t kb1) {
    if (kb1 - kb0 <= 2) {
      classifyRange(kb0, kb1);
      return;
    }
    Tri t =
        ask(queryBox, grid.key.box(grid.keyBegin(kb0), grid.keyEnd(kb1 - 1)));
    if (t != Tri::Unknown) {
      emitDecided(kb0, kb1, t);
      return;
    }
    classifyRange(kb0, kb0 + 1);
    classifyRange(kb0 + 1, kb1 - 1);
    classifyRange(kb1 - 1, kb1);
  }

  /// The current row's maximal runs of one class (empty, full, partial),
  /// covering every key block.
  void recordClassRuns() {
    classRuns.clear();
    auto push = [&](int64_t b, int64_t e, int cls) {
      if (b >= e)
        return;
      if (!classRuns.empty() && classRuns.back().cls == cls)
        classRuns.back().end = e;
      else
        classRuns.push_back({b, e, cls});
    };
    size_t f = rowFull0, p = rowPartial0;
    const std::vector<BlockRun> &full = chunk.full, &partial = chunk.partial;
    int64_t kb = 0;
    while (f < full.size() || p < partial.size()) {
      bool isFull = p >= partial.size() ||
                    (f < full.size() && full[f].begin < partial[p].begin);
      BlockRun r = isFull ? full[f++] : partial[p++];
      push(kb, r.begin, 0);
      push(r.begin, r.end, isFull ? 1 : 2);
      kb = r.end;
    }
    push(kb, grid.numKeyBlocks, 0);
  }

  /// True pairs in query indices [a0, a1) x key indices [b0, b1), a piece of
  /// one block that the abstract interpreter left undecided.
  int64_t countSplit(int64_t a0, int64_t a1, int64_t b0, int64_t b1) {
    int64_t rows = a1 - a0, cols = b1 - b0;
    if (rows * cols <= kLeafPairs)
      return countConcrete(a0, a1, b0, b1);
    // Halve the longer side (both when they are close); ask about each
    // piece.
    int64_t am = rows >= 2 && 2 * rows >= cols ? a0 + rows / 2 : a1;
    int64_t bm = cols >= 2 && 2 * cols >= rows ? b0 + cols / 2 : b1;
    int64_t total = 0;
    int64_t as[3] = {a0, am, a1}, bs[3] = {b0, bm, b1};
    for (int x = 0; x < 2; ++x) {
      if (as[x] == as[x + 1])
        continue;
      PositionBox q = grid.query.box(as[x], as[x + 1]);
      for (int y = 0; y < 2; ++y) {
        if (bs[y] == bs[y + 1])
          continue;
        Tri t = ask(q, grid.key.box(bs[y], bs[y + 1]));
        if (t == Tri::True)
          total += (as[x + 1] - as[x]) * (bs[y + 1] - bs[y]);
        else if (t == Tri::Unknown)
          total += countSplit(as[x], as[x + 1], bs[y], bs[y + 1]);
      }
    }
    return total;
  }

  /// True pairs by concrete evaluation, one (strided) row per key run.
  int64_t countConcrete(int64_t a0, int64_t a1, int64_t b0, int64_t b1) {
    keyRuns.clear();
    grid.key.forEachRun(b0, b1, [&](int64_t first, int64_t stride,
                                    int64_t count, int64_t) {
      keyRuns.push_back({first, stride, count});
    });
    chunk.pairs += (a1 - a0) * (b1 - b0);
    int64_t total = 0;
    uint8_t *buf = rowBuffer.data();
    for (int64_t t = a0; t < a1; ++t) {
      int64_t i = grid.query.position(t);
      for (const KeyRun &r : keyRuns) {
        program.evaluateRow(i, head, r.first, r.stride, r.count, buf);
        int64_t sum = 0;
        for (int64_t k = 0; k < r.count; ++k)
          sum += buf[k];
        total += sum;
      }
    }
    return total;
  }

  const MaskProgram &program;
  const AbstractMask &abstract;
  const Grid &grid;
  int64_t head;
  Chunk &chunk;
  std::vector<uint8_t> rowBuffer;
  std::vector<KeyRun> keyRuns;

  /// Runs of one class (0 empty, 1 full, 2 partial) over key blocks
  /// [begin, end) of a row.
  struct ClassRun {
    int64_t begin, end;
    int cls;
  };
  std::vector<ClassRun> classRuns, previousClassRuns;
  int64_t previousRow = -2;

  // The current query block.
  int64_t t0 = 0, t1 = 0;
  PositionBox queryBox;
  size_t rowFull0 = 0, rowPartial0 = 0;
};

/// Splits [0, count) into at most `parts` ranges for parallel tasks.
std::pair<int64_t, int64_t> partOf(int64_t count, int64_t parts,
                                   size_t part) {
  return {count * int64_t(part) / parts, count * int64_t(part + 1) / parts};
}

/// The CSR table the runs expand to, written in parallel over rows.
BlockTable expandRuns(const RunTable &t, int64_t numRows) {
  BlockTable table;
  table.offsets = t.entryOffsets;
  table.indices.resize(static_cast<size_t>(t.entryOffsets[numRows]));
  int64_t numTasks = std::min<int64_t>(numRows, 64);
  llvm::parallelFor(0, static_cast<size_t>(numTasks), [&](size_t task) {
    auto [r0, r1] = partOf(numRows, numTasks, task);
    int32_t *out = table.indices.data() + t.entryOffsets[r0];
    for (int64_t e = t.runOffsets[r0]; e < t.runOffsets[r1]; ++e)
      for (int32_t c = t.runs[e].begin; c < t.runs[e].end; ++c)
        *out++ = c;
  });
  return table;
}

/// The transpose (by column, rows ascending) of the table the runs expand
/// to. The counts come from a difference array over the runs; the entries
/// are written in parallel over ranges of columns, each task finding its
/// runs in every row by binary search, so that the tasks share nothing.
BlockTable transposeRuns(const RunTable &t, int64_t numRows,
                         int64_t numCols) {
  BlockTable result;
  result.offsets.assign(static_cast<size_t>(numCols + 1), 0);
  if (numCols == 0)
    return result;
  std::vector<int64_t> diff(static_cast<size_t>(numCols + 1), 0);
  for (const BlockRun &r : t.runs)
    ++diff[r.begin], --diff[r.end];
  int64_t running = 0;
  for (int64_t c = 0; c < numCols; ++c)
    result.offsets[c + 1] = result.offsets[c] + (running += diff[c]);
  result.indices.resize(static_cast<size_t>(result.offsets[numCols]));

  int64_t numTasks = std::min<int64_t>(numCols, 64);
  llvm::parallelFor(0, static_cast<size_t>(numTasks), [&](size_t task) {
    auto [c0, c1] = partOf(numCols, numTasks, task);
    std::vector<int64_t> next(result.offsets.begin() + c0,
                              result.offsets.begin() + c1);
    int64_t *nx = next.data() - c0;
    int32_t *out = result.indices.data();
    for (int64_t r = 0; r < numRows; ++r) {
      const BlockRun *begin = t.runs.data() + t.runOffsets[r];
      const BlockRun *end = t.runs.data() + t.runOffsets[r + 1];
      if (begin == end || end[-1].end <= c0 || begin->begin >= c1)
        continue;
      // The first run that ends after c0 (runs are disjoint and sorted).
      const BlockRun *run =
          begin->end > c0
              ? begin
              : std::upper_bound(begin, end, c0,
                                 [](int64_t c, const BlockRun &x) {
                                   return c < x.end;
                                 });
      for (; run != end && run->begin < c1; ++run) {
        int64_t b = std::max<int64_t>(run->begin, c0);
        int64_t e = std::min<int64_t>(run->end, c1);
        for (int64_t c = b; c < e; ++c)
          out[nx[c]++] = static_cast<int32_t>(r);
      }
    }
  });
  return result;
}

/// Fills the Range schedule if every query block's key blocks allow it.
void detectRange(ComponentLayout &layout, const RunTable &full,
                 const RunTable &partial) {
  int64_t nq = layout.numQueryBlocks;
  std::vector<int32_t> rb(nq), re(nq), fb(nq), fe(nq);
  for (int64_t qb = 0; qb < nq; ++qb) {
    int64_t nf = full.runOffsets[qb + 1] - full.runOffsets[qb];
    int64_t np = partial.runOffsets[qb + 1] - partial.runOffsets[qb];
    if (nf > 1)
      return; // partial (or empty) blocks between full ones
    const BlockRun *f = full.runs.data() + full.runOffsets[qb];
    const BlockRun *p = partial.runs.data() + partial.runOffsets[qb];
    if (nf + np == 0) {
      rb[qb] = re[qb] = fb[qb] = fe[qb] = 0;
      continue;
    }
    int64_t lo = std::numeric_limits<int64_t>::max(), hi = -1;
    if (nf)
      lo = std::min<int64_t>(lo, f->begin), hi = std::max<int64_t>(hi, f->end);
    if (np)
      lo = std::min<int64_t>(lo, p[0].begin),
      hi = std::max<int64_t>(hi, p[np - 1].end);
    int64_t entries = (full.entryOffsets[qb + 1] - full.entryOffsets[qb]) +
                      (partial.entryOffsets[qb + 1] - partial.entryOffsets[qb]);
    if (hi - lo != entries)
      return; // a gap among the non-empty blocks
    rb[qb] = static_cast<int32_t>(lo);
    re[qb] = static_cast<int32_t>(hi);
    fb[qb] = nf ? f->begin : static_cast<int32_t>(lo);
    fe[qb] = nf ? f->end : static_cast<int32_t>(lo);
  }
  layout.schedule = ScheduleKind::Range;
  layout.rangeBegin = std::move(rb);
  layout.rangeEnd = std::move(re);
  layout.fullBegin = std::move(fb);
  layout.fullEnd = std::move(fe);
}

} // namespace

FailureOr<ComponentLayout>
sparsetx::classifyBlocks(const MaskProgram &program,
                         const AbstractMask &abstract,
                         const IndexMap &queryMap, const IndexMap &keyMap,
                         int64_t seqLen, const BlockLayoutOptions &options,
                         std::string &error) {
  if (options.blockQ <= 0 || options.blockK <= 0) {
    error = "block sizes must be positive, but are " +
            std::to_string(options.blockQ) + "x" +
            std::to_string(options.blockK);
    return failure();
  }
  if (seqLen < 0) {
    error = "the sequence length must not be negative, but is " +
            std::to_string(seqLen);
    return failure();
  }
  Grid grid(queryMap, keyMap, seqLen, options.blockQ, options.blockK);
  const int64_t nq = grid.numQueryBlocks, nk = grid.numKeyBlocks;

  auto memoryError = [&]() {
    error = "the block tables of this pattern need more than " +
            formatBytes(options.memoryLimitBytes) +
            " at n = " + std::to_string(seqLen) +
            "; use larger blocks or a smaller n";
    return failure();
  };
  // What does not depend on the entries: the offsets of the four tables, the
  // per-row bookkeeping while they are built and the Range schedule's four
  // numbers per query block.
  const int64_t fixedBytes = 2 * int64_t(sizeof(int64_t)) * (nq + 1) +
                             2 * int64_t(sizeof(int64_t)) * (nk + 1) +
                             4 * int64_t(sizeof(int64_t)) * (nq + 1) +
                             4 * int64_t(sizeof(int32_t)) * nq;
  if (nq > std::numeric_limits<int32_t>::max() ||
      nk > std::numeric_limits<int32_t>::max() ||
      fixedBytes > options.memoryLimitBytes)
    return memoryError();
  const int64_t budget = options.memoryLimitBytes - fixedBytes;

  ComponentLayout layout;
  layout.queryMap = queryMap;
  layout.keyMap = keyMap;
  layout.seqLen = seqLen;
  layout.blockQ = options.blockQ;
  layout.blockK = options.blockK;
  layout.numQueryBlocks = nq;
  layout.numKeyBlocks = nk;

  // Per row: runs and entries of each class, for the offsets.
  RunTable full, partial;
  full.runOffsets.assign(static_cast<size_t>(nq + 1), 0);
  full.entryOffsets.assign(static_cast<size_t>(nq + 1), 0);
  partial.runOffsets.assign(static_cast<size_t>(nq + 1), 0);
  partial.entryOffsets.assign(static_cast<size_t>(nq + 1), 0);

  const int64_t numChunks =
      std::clamp<int64_t>(nq / kMinChunkRows, std::min<int64_t>(nq, 1),
                          kMaxChunks);
  std::vector<Chunk> chunks(static_cast<size_t>(numChunks));
  std::atomic<int64_t> usedBytes{0};
  std::atomic<bool> overLimit{false};
  llvm::parallelFor(0, static_cast<size_t>(numChunks), [&](size_t c) {
    auto [qb0, qb1] = partOf(nq, numChunks, c);
    Chunk &chunk = chunks[c];
    RowClassifier rows(program, abstract, grid, options.head, chunk);
    for (int64_t qb = qb0; qb < qb1; ++qb) {
      if (overLimit.load(std::memory_order_relaxed))
        return;
      rows.classify(qb);
      // Counts at qb + 1: prefix sums follow.
      full.runOffsets[qb + 1] = static_cast<int64_t>(rows.numFullRuns());
      full.entryOffsets[qb + 1] = rows.fullEntries;
      partial.runOffsets[qb + 1] = static_cast<int64_t>(rows.numPartialRuns());
      partial.entryOffsets[qb + 1] = rows.partialEntries;
      int64_t bytes =
          kBytesPerEntry * (rows.fullEntries + rows.partialEntries) +
          kBytesPerRun *
              static_cast<int64_t>(rows.numFullRuns() + rows.numPartialRuns());
      if (usedBytes.fetch_add(bytes, std::memory_order_relaxed) + bytes >
          budget) {
        overLimit.store(true, std::memory_order_relaxed);
        return;
      }
    }
  });
  if (overLimit.load())
    return memoryError();

  for (RunTable *t : {&full, &partial}) {
    std::partial_sum(t->runOffsets.begin(), t->runOffsets.end(),
                     t->runOffsets.begin());
    std::partial_sum(t->entryOffsets.begin(), t->entryOffsets.end(),
                     t->entryOffsets.begin());
  }
  full.runs.reserve(static_cast<size_t>(full.runOffsets[nq]));
  partial.runs.reserve(static_cast<size_t>(partial.runOffsets[nq]));
  for (Chunk &chunk : chunks) {
    full.runs.insert(full.runs.end(), chunk.full.begin(), chunk.full.end());
    partial.runs.insert(partial.runs.end(), chunk.partial.begin(),
                        chunk.partial.end());
    chunk.full = std::vector<BlockRun>();
    chunk.partial = std::vector<BlockRun>();
    layout.usefulPairs += chunk.useful;
    layout.computedPairs += chunk.computed;
    layout.abstractQueries += chunk.queries;
    layout.evaluatedPairs += chunk.pairs;
  }

  layout.full = expandRuns(full, nq);
  layout.partial = expandRuns(partial, nq);
  layout.fullByKey = transposeRuns(full, nq, nk);
  layout.partialByKey = transposeRuns(partial, nq, nk);
  detectRange(layout, full, partial);
  return layout;
}

std::vector<uint8_t> sparsetx::classifyBlocksExhaustively(
    const MaskProgram &program, const IndexMap &queryMap,
    const IndexMap &keyMap, int64_t seqLen,
    const BlockLayoutOptions &options) {
  assert(options.blockQ > 0 && options.blockK > 0 && "bad block sizes");
  Grid grid(queryMap, keyMap, seqLen, options.blockQ, options.blockK);
  std::vector<uint8_t> classes(
      static_cast<size_t>(grid.numQueryBlocks * grid.numKeyBlocks), 0);
  for (int64_t qb = 0; qb < grid.numQueryBlocks; ++qb) {
    for (int64_t kb = 0; kb < grid.numKeyBlocks; ++kb) {
      int64_t count = 0, area = 0;
      for (int64_t t = grid.queryBegin(qb); t < grid.queryEnd(qb); ++t) {
        int64_t i = grid.query.position(t);
        for (int64_t s = grid.keyBegin(kb); s < grid.keyEnd(kb); ++s) {
          count += program.evaluate(i, grid.key.position(s), options.head);
          ++area;
        }
      }
      classes[qb * grid.numKeyBlocks + kb] =
          count == 0 ? 0 : (count == area ? 1 : 2);
    }
  }
  return classes;
}
