//===- PatternPicture.h - a pattern as a picture (sparsec --emit=png) -*- C++ -*-===//
//
// The paper's Figure 3 for any pattern: one panel per distinct mask (layer /
// head). Up to kMaxMaskPictureSeqLen positions the panel is the n x n mask
// itself (query rows, key columns); beyond, one panel per component showing
// its block map under its index maps, downsampled from the block tables (so
// memory follows the non-empty blocks, never n^2).
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_ANALYSIS_PATTERNPICTURE_H
#define SPARSETX_ANALYSIS_PATTERNPICTURE_H

#include "sparsetx/Analysis/PatternLayout.h"
#include "sparsetx/Analysis/Picture.h"

namespace sparsetx {


/// `pattern` specialized and decomposed, `layout` its layout.
mlir::FailureOr<Image> renderPattern(sp::PatternOp pattern,
                                     const PatternLayout &layout,
                                     std::string &error);

} // namespace sparsetx

#endif // SPARSETX_ANALYSIS_PATTERNPICTURE_H
