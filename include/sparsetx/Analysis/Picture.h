//===- Picture.h - attention patterns as pictures ---------------*- C++ -*-===//
//
// Pictures of a pattern in the style of the paper's Figure 3: the n x n
// attention matrix (row i = query, column j = key) with attended cells in
// blue, several matrices side by side with a caption under each. Two kinds
// of panel:
//  - the mask itself, for small n (one cell per (i, j), scaled up so that the
//    panel is about 512 px, with thin lines every `gridPeriod` cells so that
//    the stride and block structure can be read off);
//  - the block map, for any n: one pixel per (query block, key block) of a
//    component under its index maps (empty white, full dark blue, partial
//    light blue), which is what the kernels actually walk.
// Captions use a built-in 5x7 bitmap font, so the pictures need nothing but
// libpng, and PNGs are written atomically (temporary file, fsync, rename).
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_ANALYSIS_PICTURE_H
#define SPARSETX_ANALYSIS_PICTURE_H

#include "mlir/Support/LLVM.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sparsetx {

class MaskProgram;
struct ComponentLayout;

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Rgb &o) const {
    return r == o.r && g == o.g && b == o.b;
  }
  bool operator!=(const Rgb &o) const { return !(*this == o); }
};

/// The palette (Figure 3's blues on white).
namespace colors {
inline constexpr Rgb kBackground{255, 255, 255};
/// Attended cells; full blocks.
inline constexpr Rgb kDarkBlue{31, 78, 145};
/// A second mask overlaid on the first (e.g. layer 1, or the strided
/// column); partial blocks.
inline constexpr Rgb kLightBlue{140, 185, 230};
/// Grid lines over unattended cells.
inline constexpr Rgb kGrid{208, 208, 208};
/// The frame around each panel.
inline constexpr Rgb kFrame{96, 96, 96};
inline constexpr Rgb kText{0, 0, 0};
} // namespace colors

/// An 8-bit RGB image, rows top to bottom, 3 bytes per pixel.
struct Image {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> rgb;

  Image() = default;
  Image(int64_t width, int64_t height, Rgb fill = colors::kBackground);

  Rgb at(int64_t x, int64_t y) const {
    const uint8_t *p = &rgb[static_cast<size_t>((y * width + x) * 3)];
    return {p[0], p[1], p[2]};
  }
  void set(int64_t x, int64_t y, Rgb c) {
    uint8_t *p = &rgb[static_cast<size_t>((y * width + x) * 3)];
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
  }
  /// Fills [x0, x1) x [y0, y1), clipped to the image.
  void fillRect(int64_t x0, int64_t y0, int64_t x1, int64_t y1, Rgb c);
  /// Copies `src` with its top-left corner at (x, y), clipped.
  void blit(const Image &src, int64_t x, int64_t y);
};

//===----------------------------------------------------------------------===//
// Mask pictures
//===----------------------------------------------------------------------===//

/// Largest n a mask picture is drawn for (one pixel per cell at least).
inline constexpr int64_t kMaxMaskPictureSeqLen = 1024;

/// The side of one (i, j) cell in pixels: max(1, 512 / n).
int64_t maskCellSize(int64_t n);

/// One mask drawn into a picture: `program` in head `head`, in `color`.
struct MaskLayer {
  const MaskProgram *program = nullptr;
  int64_t head = 0;
  Rgb color = colors::kDarkBlue;
};

/// The n x n picture of one or more masks: cell (i, j) occupies pixels
/// [j * c, (j + 1) * c) x [i * c, (i + 1) * c), c = maskCellSize(n), and has
/// the color of the first layer that attends (i, j), else the background.
/// When c >= 4 and gridPeriod > 0, the first pixel row of every cell row i
/// with i % gridPeriod == 0 (i > 0), and likewise the first pixel column of
/// every cell column, is a grid line: kGrid over the background, the cell's
/// color lightened a third of the way to white over attended cells.
/// Fails with `error` set when n is not in [1, kMaxMaskPictureSeqLen] (draw
/// the block map instead) or a layer has no program.
mlir::FailureOr<Image> renderMask(llvm::ArrayRef<MaskLayer> layers, int64_t n,
                                  int64_t gridPeriod, std::string &error);

/// One mask in kDarkBlue.
mlir::FailureOr<Image> renderMask(const MaskProgram &program, int64_t n,
                                  int64_t head, int64_t gridPeriod,
                                  std::string &error);

/// The grid-line color drawn over a cell of color `cell`.
Rgb gridColor(Rgb cell);

//===----------------------------------------------------------------------===//
// Block maps
//===----------------------------------------------------------------------===//

/// Block classes as in classifyBlocksExhaustively: 0 empty, 1 full, 2 partial.
enum BlockClass : uint8_t { kEmptyBlock = 0, kFullBlock = 1, kPartialBlock = 2 };

/// The class of every block of `layout`, row-major over
/// numQueryBlocks x numKeyBlocks, from its full and partial tables.
std::vector<uint8_t> blockClasses(const ComponentLayout &layout);

/// The block map of one or more layouts (several: the maximum class per
/// block, over a grid as large as the largest layout; meaningful when they
/// share index maps). One pixel per block when the grid fits in `maxSide`
/// pixels per side; larger grids are downsampled by the smallest integer
/// factor f that fits, each pixel showing the maximum class of the f x f
/// blocks it covers (so a partial block anywhere shows as partial, and a
/// single full block among empty ones still shows). Smaller grids are scaled
/// up by max(1, min(512, maxSide) / max(rows, cols)) px per block, with 1 px
/// lines (gridColor) on the top and left edge of every block but the first
/// row and column once blocks are at least 4 px.
Image renderBlockMap(llvm::ArrayRef<const ComponentLayout *> layouts,
                     int64_t maxSide = 1024);
Image renderBlockMap(const ComponentLayout &layout, int64_t maxSide = 1024);

/// Maps a grid of classes (row-major, rows x cols) to an image as described
/// for renderBlockMap.
Image renderBlockClasses(llvm::ArrayRef<uint8_t> classes, int64_t rows,
                         int64_t cols, int64_t maxSide = 1024);

//===----------------------------------------------------------------------===//
// Text and composition
//===----------------------------------------------------------------------===//

/// Glyphs are 5 x 7 pixels on a 6-pixel advance, printable ASCII (others
/// draw as '?'); `scale` multiplies every pixel. '\n' starts a new line,
/// 9 * scale pixels lower.
int64_t textWidth(llvm::StringRef text, int64_t scale);
int64_t textHeight(llvm::StringRef text, int64_t scale);
/// Draws `text` with its top-left corner at (x, y), clipped to the image.
void drawText(Image &image, int64_t x, int64_t y, llvm::StringRef text,
              int64_t scale, Rgb color = colors::kText);

struct Panel {
  Image image;
  std::string caption;
};

struct ComposeOptions {
  /// White space around and between panels.
  int64_t margin = 16;
  /// Caption glyph scale (2: 10 x 14 px letters).
  int64_t textScale = 2;
  /// A 1 px frame around each panel (drawn outside the panel's pixels).
  bool frame = true;
};

/// Panels left to right, tops aligned, each framed, its caption centered
/// under it. Every panel gets a column as wide as the wider of its framed
/// image and its caption, with `margin` pixels around and between columns;
/// the image is centered in its column, and all captions share one band
/// margin / 2 pixels under the tallest framed image (see layoutPanels for
/// the exact positions).
Image composePanels(llvm::ArrayRef<Panel> panels,
                    const ComposeOptions &options = {});

/// Where composePanels put panel k's image (top-left pixel) and caption band
/// (its top row), for tests and for callers that annotate the picture.
struct PanelPlacement {
  int64_t imageX, imageY, captionY, columnX, columnWidth;
};
std::vector<PanelPlacement> layoutPanels(llvm::ArrayRef<Panel> panels,
                                         const ComposeOptions &options = {});

//===----------------------------------------------------------------------===//
// Files
//===----------------------------------------------------------------------===//

/// Writes `image` to `path` as an 8-bit RGB PNG, atomically: the PNG is
/// encoded in memory, written to a new file in the same directory, flushed
/// with fsync and renamed over `path`, so `path` holds either its old
/// contents or the complete new picture. On failure nothing is left behind
/// and `error` names the path and the reason, one of
///   cannot write 'P': the image is empty
///   cannot write 'P': the image is W x H pixels but has B bytes of RGB
///   cannot encode 'P' as PNG: <libpng's message>
///   cannot create a temporary file for 'P': <strerror>
///   cannot write 'P': <strerror>            (writing or syncing the data)
///   cannot replace 'P': <strerror>          (the final rename)
mlir::LogicalResult writePng(const Image &image, llvm::StringRef path,
                             std::string &error);

/// Reads an 8-bit RGB(A) or gray PNG back as RGB (for tests and tools).
mlir::FailureOr<Image> readPng(llvm::StringRef path, std::string &error);

} // namespace sparsetx

#endif // SPARSETX_ANALYSIS_PICTURE_H
