//===- Picture.cpp - attention patterns as pictures -----------------------===//
//
// Mask pictures, block maps, captions and PNG files (see Picture.h). The
// mask is evaluated a row at a time with the evaluator's row mode; block maps
// are read from a layout's CSR tables, never from the mask, so a map at
// n = 1M costs what the layout costs.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Analysis/Picture.h"
#include "sparsetx/Support/AtomicFile.h"
#include "sparsetx/Analysis/BlockLayout.h"
#include "sparsetx/Analysis/MaskEvaluator.h"

#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/Twine.h"

#include <png.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace mlir;
using namespace sparsetx;

//===----------------------------------------------------------------------===//
// Image
//===----------------------------------------------------------------------===//

Image::Image(int64_t width, int64_t height, Rgb fill)
    : width(width), height(height) {
  rgb.resize(static_cast<size_t>(width * height * 3));
  for (size_t k = 0; k < rgb.size(); k += 3) {
    rgb[k] = fill.r;
    rgb[k + 1] = fill.g;
    rgb[k + 2] = fill.b;
  }
}

void Image::fillRect(int64_t x0, int64_t y0, int64_t x1, int64_t y1, Rgb c) {
  x0 = std::max<int64_t>(x0, 0);
  y0 = std::max<int64_t>(y0, 0);
  x1 = std::min(x1, width);
  y1 = std::min(y1, height);
  for (int64_t y = y0; y < y1; ++y)
    for (int64_t x = x0; x < x1; ++x)
      set(x, y, c);
}

void Image::blit(const Image &src, int64_t x, int64_t y) {
  for (int64_t sy = 0; sy < src.height; ++sy) {
    int64_t ty = y + sy;
    if (ty < 0 || ty >= height)
      continue;
    for (int64_t sx = 0; sx < src.width; ++sx) {
      int64_t tx = x + sx;
      if (tx >= 0 && tx < width)
        set(tx, ty, src.at(sx, sy));
    }
  }
}

//===----------------------------------------------------------------------===//
// Cells with grid lines (shared by mask pictures and block maps)
//===----------------------------------------------------------------------===//

Rgb sparsetx::gridColor(Rgb cell) {
  if (cell == colors::kBackground)
    return colors::kGrid;
  // A third of the way to white: the line stays visible inside a dark run of
  // attended cells without breaking it up.
  auto lighten = [](uint8_t v) {
    return static_cast<uint8_t>(v + (255 - v) / 3);
  };
  return {lighten(cell.r), lighten(cell.g), lighten(cell.b)};
}

namespace {

/// Paints cell (row, col) of side `cell` px, with the grid line on its top
/// (left) edge when `lineTop` (`lineLeft`).
void paintCell(Image &image, int64_t row, int64_t col, int64_t cell, Rgb c,
               bool lineTop, bool lineLeft) {
  int64_t x0 = col * cell, y0 = row * cell;
  image.fillRect(x0, y0, x0 + cell, y0 + cell, c);
  if (!lineTop && !lineLeft)
    return;
  Rgb line = gridColor(c);
  if (lineTop)
    image.fillRect(x0, y0, x0 + cell, y0 + 1, line);
  if (lineLeft)
    image.fillRect(x0, y0, x0 + 1, y0 + cell, line);
}

} // namespace

//===----------------------------------------------------------------------===//
// Mask pictures
//===----------------------------------------------------------------------===//

int64_t sparsetx::maskCellSize(int64_t n) {
  return std::max<int64_t>(1, 512 / std::max<int64_t>(n, 1));
}

FailureOr<Image> sparsetx::renderMask(ArrayRef<MaskLayer> layers, int64_t n,
                                      int64_t gridPeriod, std::string &error) {
  if (n < 1 || n > kMaxMaskPictureSeqLen) {
    error = "cannot draw the mask at n = " + std::to_string(n) +
            ": a mask picture needs 1 <= n <= " +
            std::to_string(kMaxMaskPictureSeqLen) +
            " (draw the block map instead)";
    return failure();
  }
  for (const MaskLayer &layer : layers)
    if (!layer.program) {
      error = "cannot draw the mask: a layer has no mask program";
      return failure();
    }
  int64_t cell = maskCellSize(n);
  bool grid = gridPeriod > 0 && cell >= 4;
  Image image(n * cell, n * cell);
  // color[j]: index of the first layer attending (i, j), or -1.
  std::vector<int> first(static_cast<size_t>(n));
  std::vector<uint8_t> row(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    std::fill(first.begin(), first.end(), -1);
    for (size_t k = layers.size(); k-- > 0;) {
      layers[k].program->evaluateRow(i, layers[k].head, 0, n, row.data());
      for (int64_t j = 0; j < n; ++j)
        if (row[j])
          first[j] = static_cast<int>(k);
    }
    for (int64_t j = 0; j < n; ++j) {
      Rgb c = first[j] < 0 ? colors::kBackground : layers[first[j]].color;
      paintCell(image, i, j, cell, c, grid && i > 0 && i % gridPeriod == 0,
                grid && j > 0 && j % gridPeriod == 0);
    }
  }
  return image;
}

FailureOr<Image> sparsetx::renderMask(const MaskProgram &program, int64_t n,
                                      int64_t head, int64_t gridPeriod,
                                      std::string &error) {
  MaskLayer layer;
  layer.program = &program;
  layer.head = head;
  return renderMask(ArrayRef<MaskLayer>(layer), n, gridPeriod, error);
}

//===----------------------------------------------------------------------===//
// Block maps
//===----------------------------------------------------------------------===//

std::vector<uint8_t> sparsetx::blockClasses(const ComponentLayout &layout) {
  int64_t rows = layout.numQueryBlocks, cols = layout.numKeyBlocks;
  std::vector<uint8_t> classes(static_cast<size_t>(rows * cols), kEmptyBlock);
  auto mark = [&](const BlockTable &table, uint8_t cls) {
    int64_t tableRows = static_cast<int64_t>(table.offsets.size()) - 1;
    for (int64_t r = 0; r < std::min(rows, tableRows); ++r)
      for (int64_t e = table.offsets[r]; e < table.offsets[r + 1]; ++e) {
        int64_t c = table.indices[e];
        if (c >= 0 && c < cols)
          classes[r * cols + c] = cls;
      }
  };
  mark(layout.full, kFullBlock);
  mark(layout.partial, kPartialBlock);
  return classes;
}

Image sparsetx::renderBlockClasses(ArrayRef<uint8_t> classes, int64_t rows,
                                   int64_t cols, int64_t maxSide) {
  if (rows <= 0 || cols <= 0)
    return Image(1, 1);
  maxSide = std::max<int64_t>(1, maxSide);
  int64_t side = std::max(rows, cols);
  // Downsample by f (one pixel per f x f blocks) or scale up by `cell`.
  int64_t f = (side + maxSide - 1) / maxSide;
  int64_t cell = f > 1 ? 1 : std::max<int64_t>(1, std::min<int64_t>(512, maxSide) / side);
  int64_t outRows = (rows + f - 1) / f, outCols = (cols + f - 1) / f;
  std::vector<uint8_t> down(static_cast<size_t>(outRows * outCols), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      uint8_t &d = down[(r / f) * outCols + c / f];
      d = std::max(d, classes[r * cols + c]);
    }
  bool grid = cell >= 4;
  Image image(outCols * cell, outRows * cell);
  for (int64_t r = 0; r < outRows; ++r)
    for (int64_t c = 0; c < outCols; ++c) {
      uint8_t cls = down[r * outCols + c];
      Rgb color = cls == kFullBlock      ? colors::kDarkBlue
                  : cls == kPartialBlock ? colors::kLightBlue
                                         : colors::kBackground;
      paintCell(image, r, c, cell, color, grid && r > 0, grid && c > 0);
    }
  return image;
}

Image sparsetx::renderBlockMap(ArrayRef<const ComponentLayout *> layouts,
                               int64_t maxSide) {
  int64_t rows = 0, cols = 0;
  for (const ComponentLayout *layout : layouts) {
    rows = std::max(rows, layout->numQueryBlocks);
    cols = std::max(cols, layout->numKeyBlocks);
  }
  std::vector<uint8_t> merged(static_cast<size_t>(rows * cols), kEmptyBlock);
  for (const ComponentLayout *layout : layouts) {
    std::vector<uint8_t> classes = blockClasses(*layout);
    for (int64_t r = 0; r < layout->numQueryBlocks; ++r)
      for (int64_t c = 0; c < layout->numKeyBlocks; ++c) {
        uint8_t &m = merged[r * cols + c];
        m = std::max(m, classes[r * layout->numKeyBlocks + c]);
      }
  }
  return renderBlockClasses(merged, rows, cols, maxSide);
}

Image sparsetx::renderBlockMap(const ComponentLayout &layout,
                               int64_t maxSide) {
  const ComponentLayout *one = &layout;
  return renderBlockMap(ArrayRef<const ComponentLayout *>(one), maxSide);
}

//===----------------------------------------------------------------------===//
// Text: the classic 5x7 character-LCD glyphs, ASCII 32..126, five columns
// per glyph, bit 0 at the top.
//===----------------------------------------------------------------------===//

namespace {

constexpr uint8_t kFont[95][5] = {
    {0x00, 0x00, 0x00, 0x00, 0x00}, // ' '
    {0x00, 0x00, 0x5F, 0x00, 0x00}, // !
    {0x00, 0x07, 0x00, 0x07, 0x00}, // "
    {0x14, 0x7F, 0x14, 0x7F, 0x14}, // #
    {0x24, 0x2A, 0x7F, 0x2A, 0x12}, // $
    {0x23, 0x13, 0x08, 0x64, 0x62}, // %
    {0x36, 0x49, 0x55, 0x22, 0x50}, // &
    {0x00, 0x05, 0x03, 0x00, 0x00}, // '
    {0x00, 0x1C, 0x22, 0x41, 0x00}, // (
    {0x00, 0x41, 0x22, 0x1C, 0x00}, // )
    {0x14, 0x08, 0x3E, 0x08, 0x14}, // *
    {0x08, 0x08, 0x3E, 0x08, 0x08}, // +
    {0x00, 0x50, 0x30, 0x00, 0x00}, // ,
    {0x08, 0x08, 0x08, 0x08, 0x08}, // -
    {0x00, 0x60, 0x60, 0x00, 0x00}, // .
    {0x20, 0x10, 0x08, 0x04, 0x02}, // /
    {0x3E, 0x51, 0x49, 0x45, 0x3E}, // 0
    {0x00, 0x42, 0x7F, 0x40, 0x00}, // 1
    {0x42, 0x61, 0x51, 0x49, 0x46}, // 2
    {0x21, 0x41, 0x45, 0x4B, 0x31}, // 3
    {0x18, 0x14, 0x12, 0x7F, 0x10}, // 4
    {0x27, 0x45, 0x45, 0x45, 0x39}, // 5
    {0x3C, 0x4A, 0x49, 0x49, 0x30}, // 6
    {0x01, 0x71, 0x09, 0x05, 0x03}, // 7
    {0x36, 0x49, 0x49, 0x49, 0x36}, // 8
    {0x06, 0x49, 0x49, 0x29, 0x1E}, // 9
    {0x00, 0x36, 0x36, 0x00, 0x00}, // :
    {0x00, 0x56, 0x36, 0x00, 0x00}, // ;
    {0x08, 0x14, 0x22, 0x41, 0x00}, // <
    {0x14, 0x14, 0x14, 0x14, 0x14}, // =
    {0x00, 0x41, 0x22, 0x14, 0x08}, // >
    {0x02, 0x01, 0x51, 0x09, 0x06}, // ?
    {0x32, 0x49, 0x79, 0x41, 0x3E}, // @
    {0x7E, 0x11, 0x11, 0x11, 0x7E}, // A
    {0x7F, 0x49, 0x49, 0x49, 0x36}, // B
    {0x3E, 0x41, 0x41, 0x41, 0x22}, // C
    {0x7F, 0x41, 0x41, 0x22, 0x1C}, // D
    {0x7F, 0x49, 0x49, 0x49, 0x41}, // E
    {0x7F, 0x09, 0x09, 0x09, 0x01}, // F
    {0x3E, 0x41, 0x49, 0x49, 0x7A}, // G
    {0x7F, 0x08, 0x08, 0x08, 0x7F}, // H
    {0x00, 0x41, 0x7F, 0x41, 0x00}, // I
    {0x20, 0x40, 0x41, 0x3F, 0x01}, // J
    {0x7F, 0x08, 0x14, 0x22, 0x41}, // K
    {0x7F, 0x40, 0x40, 0x40, 0x40}, // L
    {0x7F, 0x02, 0x0C, 0x02, 0x7F}, // M
    {0x7F, 0x04, 0x08, 0x10, 0x7F}, // N
    {0x3E, 0x41, 0x41, 0x41, 0x3E}, // O
    {0x7F, 0x09, 0x09, 0x09, 0x06}, // P
    {0x3E, 0x41, 0x51, 0x21, 0x5E}, // Q
    {0x7F, 0x09, 0x19, 0x29, 0x46}, // R
    {0x46, 0x49, 0x49, 0x49, 0x31}, // S
    {0x01, 0x01, 0x7F, 0x01, 0x01}, // T
    {0x3F, 0x40, 0x40, 0x40, 0x3F}, // U
    {0x1F, 0x20, 0x40, 0x20, 0x1F}, // V
    {0x3F, 0x40, 0x38, 0x40, 0x3F}, // W
    {0x63, 0x14, 0x08, 0x14, 0x63}, // X
    {0x07, 0x08, 0x70, 0x08, 0x07}, // Y
    {0x61, 0x51, 0x49, 0x45, 0x43}, // Z
    {0x00, 0x7F, 0x41, 0x41, 0x00}, // [
    {0x02, 0x04, 0x08, 0x10, 0x20}, // backslash
    {0x00, 0x41, 0x41, 0x7F, 0x00}, // ]
    {0x04, 0x02, 0x01, 0x02, 0x04}, // ^
    {0x40, 0x40, 0x40, 0x40, 0x40}, // _
    {0x00, 0x01, 0x02, 0x04, 0x00}, // `
    {0x20, 0x54, 0x54, 0x54, 0x78}, // a
    {0x7F, 0x48, 0x44, 0x44, 0x38}, // b
    {0x38, 0x44, 0x44, 0x44, 0x20}, // c
    {0x38, 0x44, 0x44, 0x48, 0x7F}, // d
    {0x38, 0x54, 0x54, 0x54, 0x18}, // e
    {0x08, 0x7E, 0x09, 0x01, 0x02}, // f
    {0x0C, 0x52, 0x52, 0x52, 0x3E}, // g
    {0x7F, 0x08, 0x04, 0x04, 0x78}, // h
    {0x00, 0x44, 0x7D, 0x40, 0x00}, // i
    {0x20, 0x40, 0x44, 0x3D, 0x00}, // j
    {0x7F, 0x10, 0x28, 0x44, 0x00}, // k
    {0x00, 0x41, 0x7F, 0x40, 0x00}, // l
    {0x7C, 0x04, 0x18, 0x04, 0x78}, // m
    {0x7C, 0x08, 0x04, 0x04, 0x78}, // n
    {0x38, 0x44, 0x44, 0x44, 0x38}, // o
    {0x7C, 0x14, 0x14, 0x14, 0x08}, // p
    {0x08, 0x14, 0x14, 0x18, 0x7C}, // q
    {0x7C, 0x08, 0x04, 0x04, 0x08}, // r
    {0x48, 0x54, 0x54, 0x54, 0x20}, // s
    {0x04, 0x3F, 0x44, 0x40, 0x20}, // t
    {0x3C, 0x40, 0x40, 0x20, 0x7C}, // u
    {0x1C, 0x20, 0x40, 0x20, 0x1C}, // v
    {0x3C, 0x40, 0x30, 0x40, 0x3C}, // w
    {0x44, 0x28, 0x10, 0x28, 0x44}, // x
    {0x0C, 0x50, 0x50, 0x50, 0x3C}, // y
    {0x44, 0x64, 0x54, 0x4C, 0x44}, // z
    {0x00, 0x08, 0x36, 0x41, 0x00}, // {
    {0x00, 0x00, 0x7F, 0x00, 0x00}, // |
    {0x00, 0x41, 0x36, 0x08, 0x00}, // }
    {0x08, 0x04, 0x08, 0x10, 0x08}, // ~
};

constexpr int64_t kGlyphWidth = 5, kGlyphHeight = 7, kAdvance = 6,
                  kLineAdvance = 9;

const uint8_t *glyph(char c) {
  unsigned char u = static_cast<unsigned char>(c);
  if (u < 32 || u > 126)
    u = '?';
  return kFont[u - 32];
}

} // namespace

int64_t sparsetx::textWidth(StringRef text, int64_t scale) {
  SmallVector<StringRef> lines;
  text.split(lines, '\n');
  int64_t widest = 0;
  for (StringRef line : lines)
    if (!line.empty())
      widest = std::max(
          widest, (static_cast<int64_t>(line.size()) * kAdvance - 1) * scale);
  return widest;
}

int64_t sparsetx::textHeight(StringRef text, int64_t scale) {
  if (text.empty())
    return 0;
  int64_t lines = 1 + static_cast<int64_t>(text.count('\n'));
  return ((lines - 1) * kLineAdvance + kGlyphHeight) * scale;
}

void sparsetx::drawText(Image &image, int64_t x, int64_t y, StringRef text,
                        int64_t scale, Rgb color) {
  int64_t cx = x, cy = y;
  for (char c : text) {
    if (c == '\n') {
      cx = x;
      cy += kLineAdvance * scale;
      continue;
    }
    const uint8_t *g = glyph(c);
    for (int64_t col = 0; col < kGlyphWidth; ++col)
      for (int64_t r = 0; r < kGlyphHeight; ++r)
        if (g[col] >> r & 1)
          image.fillRect(cx + col * scale, cy + r * scale,
                         cx + (col + 1) * scale, cy + (r + 1) * scale, color);
    cx += kAdvance * scale;
  }
}

//===----------------------------------------------------------------------===//
// Composition
//===----------------------------------------------------------------------===//

std::vector<PanelPlacement>
sparsetx::layoutPanels(ArrayRef<Panel> panels, const ComposeOptions &options) {
  int64_t border = options.frame ? 1 : 0;
  int64_t tallest = 0;
  for (const Panel &p : panels)
    tallest = std::max(tallest, p.image.height + 2 * border);
  // Captions share one band under the tallest panel, so they line up.
  int64_t captionY = options.margin + tallest + options.margin / 2;
  std::vector<PanelPlacement> placements;
  int64_t x = options.margin;
  for (const Panel &p : panels) {
    int64_t framed = p.image.width + 2 * border;
    int64_t width =
        std::max(framed, textWidth(p.caption, options.textScale));
    PanelPlacement place;
    place.columnX = x;
    place.columnWidth = width;
    place.imageX = x + (width - framed) / 2 + border;
    place.imageY = options.margin + border;
    place.captionY = captionY;
    placements.push_back(place);
    x += width + options.margin;
  }
  return placements;
}

Image sparsetx::composePanels(ArrayRef<Panel> panels,
                              const ComposeOptions &options) {
  std::vector<PanelPlacement> places = layoutPanels(panels, options);
  int64_t width = options.margin, captionBand = 0;
  for (size_t k = 0; k < panels.size(); ++k) {
    width = places[k].columnX + places[k].columnWidth + options.margin;
    captionBand = std::max(captionBand,
                           textHeight(panels[k].caption, options.textScale));
  }
  int64_t captionY =
      places.empty() ? options.margin : places.front().captionY;
  int64_t height = captionY + captionBand + options.margin;
  Image out(std::max<int64_t>(width, 1), std::max<int64_t>(height, 1));
  for (size_t k = 0; k < panels.size(); ++k) {
    const Panel &p = panels[k];
    const PanelPlacement &at = places[k];
    if (options.frame)
      out.fillRect(at.imageX - 1, at.imageY - 1, at.imageX + p.image.width + 1,
                   at.imageY + p.image.height + 1, colors::kFrame);
    out.blit(p.image, at.imageX, at.imageY);
    int64_t textX =
        at.columnX +
        (at.columnWidth - textWidth(p.caption, options.textScale)) / 2;
    drawText(out, textX, at.captionY, p.caption, options.textScale);
  }
  return out;
}

//===----------------------------------------------------------------------===//
// PNG files
//===----------------------------------------------------------------------===//

namespace {

std::string quoted(StringRef path) { return ("'" + path + "'").str(); }

} // namespace

LogicalResult sparsetx::writePng(const Image &image, StringRef path,
                                 std::string &error) {
  if (image.width <= 0 || image.height <= 0) {
    error = "cannot write " + quoted(path) + ": the image is empty";
    return failure();
  }
  size_t expected = static_cast<size_t>(image.width * image.height * 3);
  if (image.rgb.size() != expected) {
    error = "cannot write " + quoted(path) + ": the image is " +
            std::to_string(image.width) + " x " +
            std::to_string(image.height) + " pixels but has " +
            std::to_string(image.rgb.size()) + " bytes of RGB";
    return failure();
  }

  // Encode in memory first: libpng's own IO reports only "Write Error", and
  // we want the errno of the failing call, plus nothing on disk if encoding
  // fails.
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.width);
  png.height = static_cast<png_uint_32>(image.height);
  png.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  auto encodeError = [&]() {
    error = "cannot encode " + quoted(path) + " as PNG: " + png.message;
    png_image_free(&png);
    return failure();
  };
  if (!png_image_write_to_memory(&png, nullptr, &size, 0, image.rgb.data(),
                                 0, nullptr))
    return encodeError();
  std::vector<uint8_t> bytes(size);
  if (!png_image_write_to_memory(&png, bytes.data(), &size, 0,
                                 image.rgb.data(), 0, nullptr))
    return encodeError();
  bytes.resize(size);

  if (llvm::Error err = writeFileAtomically(path, bytes)) {
    error = llvm::toString(std::move(err));
    return failure();
  }
  return success();
}

FailureOr<Image> sparsetx::readPng(StringRef path, std::string &error) {
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  std::string file = path.str();
  if (!png_image_begin_read_from_file(&png, file.c_str())) {
    error = "cannot read " + quoted(path) + ": " + png.message;
    png_image_free(&png);
    return failure();
  }
  png.format = PNG_FORMAT_RGB;
  Image image(png.width, png.height);
  if (!png_image_finish_read(&png, nullptr, image.rgb.data(), 0, nullptr)) {
    error = "cannot read " + quoted(path) + ": " + png.message;
    png_image_free(&png);
    return failure();
  }
  return image;
}
