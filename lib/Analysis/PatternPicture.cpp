//===- PatternPicture.cpp - a pattern as a picture ------------------------===//

#include "sparsetx/Analysis/PatternPicture.h"

#include "mlir/IR/Matchers.h"

#include <algorithm>

using namespace mlir;
using namespace sparsetx;
using namespace sparsetx::sp;

namespace {

std::string maskCaption(MaskOp mask) {
  std::string caption;
  if (std::optional<int64_t> layer = mask.getLayer())
    caption = "layer " + std::to_string(*layer);
  if (std::optional<int64_t> head = mask.getHead())
    caption += (caption.empty() ? "" : ", ") + std::string("head ") +
               std::to_string(*head);
  return caption.empty() ? "all heads" : caption;
}

/// The smallest constant divisor or modulus of the mask: grid lines at its
/// multiples make strides and blocks easy to read.
int64_t gridPeriod(MaskOp mask) {
  int64_t best = 0;
  mask.walk([&](Operation *op) {
    if (!isa<DivOp, ModOp>(op))
      return;
    APInt d;
    if (matchPattern(op->getOperand(1), m_ConstantInt(&d)) &&
        d.getSExtValue() > 1 && (best == 0 || d.getSExtValue() < best))
      best = d.getSExtValue();
  });
  return best;
}

/// The block map of a component from its tables, downsampled by an integer
/// factor so that each side has at most `maxSide` pixels; a pixel shows the
/// largest class (partial > full > empty) among the blocks it covers.
Image blockMapFromTables(const ComponentLayout &c, int64_t maxSide) {
  int64_t rows = c.numQueryBlocks, cols = c.numKeyBlocks;
  int64_t factor = std::max<int64_t>(
      1, (std::max(rows, cols) + maxSide - 1) / maxSide);
  int64_t gr = (rows + factor - 1) / factor, gc = (cols + factor - 1) / factor;
  std::vector<uint8_t> grid(gr * gc, kEmptyBlock);
  auto mark = [&](const BlockTable &table, uint8_t cls) {
    for (int64_t q = 0; q + 1 < int64_t(table.offsets.size()); ++q)
      for (int64_t e = table.offsets[q]; e < table.offsets[q + 1]; ++e) {
        uint8_t &cell = grid[(q / factor) * gc + table.indices[e] / factor];
        cell = std::max(cell, cls);
      }
  };
  mark(c.full, kFullBlock);
  mark(c.partial, kPartialBlock);
  return renderBlockClasses(grid, gr, gc, maxSide);
}

} // namespace

FailureOr<Image> sparsetx::renderPattern(PatternOp pattern,
                                         const PatternLayout &layout,
                                         std::string &error) {
  std::vector<Panel> panels;
  int64_t n = layout.seqLen;
  auto masks = pattern.getMasks();
  for (auto [mask, maskLayout] : llvm::zip(masks, layout.masks)) {
    if (n <= kMaxMaskPictureSeqLen) {
      FailureOr<MaskProgram> program = MaskProgram::compile(mask, Binding(n));
      if (failed(program)) {
        error = "cannot evaluate the mask";
        return failure();
      }
      FailureOr<Image> image =
          renderMask(*program, n, mask.getHead().value_or(0),
                     gridPeriod(mask), error);
      if (failed(image))
        return failure();
      panels.push_back({std::move(*image), maskCaption(mask)});
      continue;
    }
    // Block maps: at this n the picture of the mask would be n^2 pixels.
    int64_t maxSide = std::max<int64_t>(
        256, 1024 / std::max<size_t>(1, maskLayout.components.size()));
    for (auto [c, component] : llvm::enumerate(maskLayout.components))
      panels.push_back({blockMapFromTables(component, maxSide),
                        maskCaption(mask) + " #" + std::to_string(c) + ": " +
                            component.queryMap.str() + " / " +
                            component.keyMap.str()});
  }
  if (panels.empty()) {
    error = "the pattern has no mask to draw";
    return failure();
  }
  return composePanels(panels);
}
