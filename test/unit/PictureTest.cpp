//===- PictureTest.cpp - pattern pictures and PNG files -------------------===//
//
// Exact pixels of mask pictures and block maps (block maps from hand-made
// layouts, so these tests do not depend on the classifier), captions, PNG
// round trips through libpng's reader, and the atomic writer's failures:
// exact messages and an existing picture left untouched. Writes a Figure 3
// style sample to $SPARSETX_PICTURE_DIR (or the test temp directory).
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Analysis/BlockLayout.h"
#include "sparsetx/Analysis/MaskEvaluator.h"
#include "sparsetx/Analysis/Picture.h"
#include "sparsetx/Dialect/SP/IR/SP.h"

#include "TestUtil.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>
#include <png.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace mlir;
using namespace sparsetx;

namespace {

class PictureTest : public test::PatternTest {
protected:
  /// The mask of `layer` of the first pattern in `text`, compiled.
  MaskProgram compile(const std::string &text, unsigned layer = 0) {
    sp::PatternOp p = parse(text);
    EXPECT_TRUE(p);
    FailureOr<MaskProgram> prog = MaskProgram::compile(p.getMasks()[layer]);
    EXPECT_TRUE(succeeded(prog));
    return succeeded(prog) ? *prog : MaskProgram();
  }

  /// A fresh directory for this test's files.
  std::string makeDir() {
    std::string base = ::testing::TempDir();
    if (!base.empty() && base.back() == '/')
      base.pop_back();
    std::string tmpl = base + "/picture-test-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    EXPECT_NE(::mkdtemp(buf.data()), nullptr);
    return std::string(buf.data());
  }

};

/// Both factors of strided(l) as two layers, so each can get its own color.
std::string stridedFactors(int64_t l) { return test::stridedInterleaved(l); }

/// Both factors of fixed(l, c) as two layers.
std::string fixedFactors(int64_t l, int64_t c) {
  return R"mlir(
sp.pattern @fixed(l = )mlir" +
         std::to_string(l) + ", c = " + std::to_string(c) + R"mlir() causal {
  sp.mask layer 0 (%i, %j) {
    %l = sp.param "l"
    %0 = sp.div %i, %l
    %1 = sp.div %j, %l
    %2 = arith.cmpi eq, %0, %1 : i64
    sp.yield %2
  }
  sp.mask layer 1 (%i, %j) {
    %l = sp.param "l"
    %c = sp.param "c"
    %3 = sp.mod %j, %l
    %4 = arith.subi %l, %c : i64
    %5 = arith.cmpi sge, %3, %4 : i64
    sp.yield %5
  }
}
)mlir";
}

const char *const kFull = R"mlir(
sp.pattern @full() causal {
  sp.mask (%i, %j) {
    %true = arith.constant true
    sp.yield %true
  }
}
)mlir";

/// Per-head: head h attends keys j with j % 4 == h (and j <= i).
const char *const kPerHead = R"mlir(
sp.pattern @per_head() causal {
  sp.mask (%i, %j, %h) {
    %c4 = arith.constant 4 : i64
    %0 = sp.mod %j, %c4
    %1 = arith.cmpi eq, %0, %h : i64
    sp.yield %1
  }
}
)mlir";

bool stridedRef(int64_t i, int64_t j, int64_t l) {
  return j <= i && (i - j < l || (i - j) % l == 0);
}

//===----------------------------------------------------------------------===//
// Mask pictures
//===----------------------------------------------------------------------===//

TEST_F(PictureTest, MaskPixelsExact) {
  // strided(4) at n = 8: 64 px cells, grid lines every 4 cells.
  MaskProgram row = compile(stridedFactors(4), 0);
  MaskProgram column = compile(stridedFactors(4), 1);
  std::vector<MaskLayer> layers(2);
  layers[0].program = &row;
  layers[1].program = &column;
  layers[1].color = colors::kLightBlue;
  std::string error;
  FailureOr<Image> img = renderMask(layers, 8, 4, error);
  ASSERT_TRUE(succeeded(img)) << error;
  EXPECT_EQ(maskCellSize(8), 64);
  ASSERT_EQ(img->width, 512);
  ASSERT_EQ(img->height, 512);
  for (int64_t i = 0; i < 8; ++i)
    for (int64_t j = 0; j < 8; ++j) {
      Rgb cell = j > i          ? colors::kBackground
                 : i - j < 4     ? colors::kDarkBlue
                 : (i - j) % 4 == 0 ? colors::kLightBlue
                                    : colors::kBackground;
      int64_t x0 = j * 64, y0 = i * 64;
      // Interior and far corner: the cell's color.
      EXPECT_EQ(img->at(x0 + 32, y0 + 32), cell) << i << ", " << j;
      EXPECT_EQ(img->at(x0 + 63, y0 + 63), cell) << i << ", " << j;
      // Top edge: a grid line on rows 4 (not 0); left edge: on column 4.
      Rgb top = i == 4 ? gridColor(cell) : cell;
      Rgb left = j == 4 ? gridColor(cell) : cell;
      EXPECT_EQ(img->at(x0 + 32, y0), top) << i << ", " << j;
      EXPECT_EQ(img->at(x0, y0 + 32), left) << i << ", " << j;
    }
  // The line colors themselves.
  EXPECT_EQ(gridColor(colors::kBackground), colors::kGrid);
  EXPECT_EQ(gridColor(colors::kDarkBlue), (Rgb{31 + 74, 78 + 59, 145 + 36}));
  // (4, 0) is in the strided column: light blue, with the row's line on top.
  EXPECT_EQ(img->at(10, 4 * 64), gridColor(colors::kLightBlue));
}

TEST_F(PictureTest, MaskOnePixelPerCell) {
  // n = 300: cells of 1 px, no grid lines whatever the period.
  MaskProgram row = compile(stridedFactors(16), 0);
  MaskProgram column = compile(stridedFactors(16), 1);
  std::vector<MaskLayer> layers(2);
  layers[0].program = &row;
  layers[1].program = &column;
  std::string error;
  FailureOr<Image> img = renderMask(layers, 300, 16, error);
  ASSERT_TRUE(succeeded(img)) << error;
  EXPECT_EQ(maskCellSize(300), 1);
  ASSERT_EQ(img->width, 300);
  ASSERT_EQ(img->height, 300);
  for (int64_t i = 0; i < 300; ++i)
    for (int64_t j = 0; j < 300; ++j)
      ASSERT_EQ(img->at(j, i), stridedRef(i, j, 16) ? colors::kDarkBlue
                                                     : colors::kBackground)
          << i << ", " << j;
}

TEST_F(PictureTest, MaskPerHead) {
  MaskProgram prog = compile(kPerHead);
  std::string error;
  for (int64_t h = 0; h < 4; ++h) {
    FailureOr<Image> img = renderMask(prog, 16, h, 0, error);
    ASSERT_TRUE(succeeded(img)) << error;
    ASSERT_EQ(img->width, 16 * 32);
    for (int64_t i = 0; i < 16; ++i)
      for (int64_t j = 0; j < 16; ++j)
        ASSERT_EQ(img->at(j * 32, i * 32),
                  j <= i && j % 4 == h ? colors::kDarkBlue
                                       : colors::kBackground)
            << "head " << h << ": " << i << ", " << j;
  }
}

TEST_F(PictureTest, MaskErrors) {
  MaskProgram prog = compile(kFull);
  std::string error;
  EXPECT_TRUE(failed(renderMask(prog, 2000, 0, 0, error)));
  EXPECT_EQ(error, "cannot draw the mask at n = 2000: a mask picture needs "
                   "1 <= n <= 1024 (draw the block map instead)");
  EXPECT_TRUE(failed(renderMask(prog, 0, 0, 0, error)));
  EXPECT_EQ(error, "cannot draw the mask at n = 0: a mask picture needs "
                   "1 <= n <= 1024 (draw the block map instead)");
  MaskLayer none;
  EXPECT_TRUE(failed(renderMask(ArrayRef<MaskLayer>(none), 8, 0, error)));
  EXPECT_EQ(error, "cannot draw the mask: a layer has no mask program");
}

//===----------------------------------------------------------------------===//
// Block maps
//===----------------------------------------------------------------------===//

/// A layout by hand: rows of (key block, class) pairs.
ComponentLayout makeLayout(int64_t rows, int64_t cols,
                           const std::vector<std::vector<std::pair<int, int>>>
                               &entries) {
  ComponentLayout layout;
  layout.numQueryBlocks = rows;
  layout.numKeyBlocks = cols;
  layout.blockQ = layout.blockK = 64;
  layout.seqLen = rows * 64;
  layout.full.offsets.push_back(0);
  layout.partial.offsets.push_back(0);
  for (int64_t r = 0; r < rows; ++r) {
    if (r < static_cast<int64_t>(entries.size()))
      for (auto [col, cls] : entries[r])
        (cls == kFullBlock ? layout.full : layout.partial)
            .indices.push_back(col);
    layout.full.offsets.push_back(layout.full.size());
    layout.partial.offsets.push_back(layout.partial.size());
  }
  return layout;
}

TEST_F(PictureTest, BlockMapSmallIsScaledUp) {
  // 4 x 4 blocks: full diagonal, partial (3, 0) and (2, 1).
  ComponentLayout layout = makeLayout(
      4, 4,
      {{{0, kFullBlock}},
       {{1, kFullBlock}},
       {{1, kPartialBlock}, {2, kFullBlock}},
       {{0, kPartialBlock}, {3, kFullBlock}}});
  std::vector<uint8_t> classes = blockClasses(layout);
  std::vector<uint8_t> want = {1, 0, 0, 0, 0, 1, 0, 0,
                               0, 2, 1, 0, 2, 0, 0, 1};
  EXPECT_EQ(classes, want);
  Image img = renderBlockMap(layout);
  ASSERT_EQ(img.width, 512); // 128 px per block
  ASSERT_EQ(img.height, 512);
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t c = 0; c < 4; ++c) {
      uint8_t cls = want[r * 4 + c];
      Rgb color = cls == 1   ? colors::kDarkBlue
                  : cls == 2 ? colors::kLightBlue
                             : colors::kBackground;
      EXPECT_EQ(img.at(c * 128 + 64, r * 128 + 64), color) << r << ", " << c;
      // Lines between blocks.
      if (r > 0) {
        EXPECT_EQ(img.at(c * 128 + 64, r * 128), gridColor(color));
      }
      if (c > 0) {
        EXPECT_EQ(img.at(c * 128, r * 128 + 64), gridColor(color));
      }
    }
}

TEST_F(PictureTest, BlockMapOnePixelPerBlock) {
  // 600 x 700 blocks fit in 1024: one pixel each, no lines.
  ComponentLayout layout = makeLayout(600, 700, {{{5, kFullBlock}},
                                                 {{0, kPartialBlock}}});
  Image img = renderBlockMap(layout);
  ASSERT_EQ(img.width, 700);
  ASSERT_EQ(img.height, 600);
  EXPECT_EQ(img.at(5, 0), colors::kDarkBlue);
  EXPECT_EQ(img.at(0, 1), colors::kLightBlue);
  EXPECT_EQ(img.at(4, 0), colors::kBackground);
  EXPECT_EQ(img.at(699, 599), colors::kBackground);
}

TEST_F(PictureTest, BlockMapDownsampled) {
  // 3000 x 3000 blocks: factor 3, 1000 x 1000 pixels, each the max class of
  // its 3 x 3 blocks.
  const int64_t n = 3000;
  std::vector<uint8_t> classes(static_cast<size_t>(n * n), kEmptyBlock);
  classes[0 * n + 0] = kPartialBlock; // pixel (0, 0): partial beats full
  classes[1 * n + 1] = kFullBlock;
  classes[5 * n + 4] = kFullBlock; // pixel (1, 1): one full among empties
  classes[(n - 1) * n + 0] = kFullBlock; // pixel (0, 999)
  Image img = renderBlockClasses(classes, n, n);
  ASSERT_EQ(img.width, 1000);
  ASSERT_EQ(img.height, 1000);
  EXPECT_EQ(img.at(0, 0), colors::kLightBlue);
  EXPECT_EQ(img.at(1, 1), colors::kDarkBlue);
  EXPECT_EQ(img.at(0, 999), colors::kDarkBlue);
  EXPECT_EQ(img.at(2, 2), colors::kBackground);
  // A smaller limit: 3000 blocks in at most 500 px is factor 6.
  Image small = renderBlockClasses(classes, n, n, 500);
  EXPECT_EQ(small.width, 500);
  EXPECT_EQ(small.at(0, 0), colors::kLightBlue);
}

TEST_F(PictureTest, BlockMapOfSeveralLayouts) {
  ComponentLayout a = makeLayout(2, 2, {{{0, kFullBlock}}, {}});
  ComponentLayout b =
      makeLayout(2, 2, {{{0, kPartialBlock}}, {{1, kFullBlock}}});
  Image img = renderBlockMap({&a, &b});
  ASSERT_EQ(img.width, 512);
  EXPECT_EQ(img.at(128, 128), colors::kLightBlue); // max(full, partial)
  EXPECT_EQ(img.at(256 + 128, 256 + 128), colors::kDarkBlue);
  EXPECT_EQ(img.at(256 + 128, 128), colors::kBackground);
}

//===----------------------------------------------------------------------===//
// Text and panels
//===----------------------------------------------------------------------===//

TEST_F(PictureTest, TextGlyphs) {
  EXPECT_EQ(textWidth("layer 0", 1), 7 * 6 - 1);
  EXPECT_EQ(textWidth("layer 0", 2), (7 * 6 - 1) * 2);
  EXPECT_EQ(textWidth("ab\nlonger", 1), 6 * 6 - 1);
  EXPECT_EQ(textHeight("x", 2), 14);
  EXPECT_EQ(textHeight("x\ny", 1), 9 + 7);
  EXPECT_EQ(textWidth("", 1), 0);
  EXPECT_EQ(textHeight("", 1), 0);

  // '1' is {0x00, 0x42, 0x7F, 0x40, 0x00}: a full stem in column 2, a foot
  // across row 6, a flag at (1, 1).
  Image img(12, 10);
  drawText(img, 1, 1, "1", 1);
  for (int64_t r = 0; r < 7; ++r)
    EXPECT_EQ(img.at(1 + 2, 1 + r), colors::kText) << r;
  EXPECT_EQ(img.at(1 + 1, 1 + 1), colors::kText);
  EXPECT_EQ(img.at(1 + 1, 1 + 6), colors::kText);
  EXPECT_EQ(img.at(1 + 3, 1 + 6), colors::kText);
  EXPECT_EQ(img.at(1 + 0, 1 + 6), colors::kBackground);
  EXPECT_EQ(img.at(1 + 1, 1 + 0), colors::kBackground);
  // Scale 2 doubles every pixel; text is clipped at the edges.
  Image big(30, 20);
  drawText(big, 0, 0, "1", 2);
  EXPECT_EQ(big.at(4, 0), colors::kText);
  EXPECT_EQ(big.at(5, 13), colors::kText);
  EXPECT_EQ(big.at(3, 0), colors::kBackground);
  Image clip(3, 3);
  drawText(clip, -2, -2, "W", 3); // must not crash
}

TEST_F(PictureTest, ComposePanelsWithCaptions) {
  Image a(64, 64, colors::kDarkBlue), b(32, 48, colors::kLightBlue);
  std::vector<Panel> panels = {{a, "layer 0"},
                               {b, "component 1: transpose(128) / "
                                   "transpose(128)"}};
  ComposeOptions options;
  Image out = composePanels(panels, options);
  std::vector<PanelPlacement> at = layoutPanels(panels, options);
  ASSERT_EQ(at.size(), 2u);

  // Panel 0: column as wide as the framed image (66 > caption's 82? no:
  // the caption is wider), image centered in it.
  int64_t cap0 = textWidth("layer 0", 2);
  EXPECT_EQ(at[0].columnX, 16);
  EXPECT_EQ(at[0].columnWidth, std::max<int64_t>(66, cap0));
  EXPECT_EQ(at[0].imageY, 17);
  EXPECT_EQ(at[0].captionY, 16 + 66 + 8);
  EXPECT_EQ(out.at(at[0].imageX, at[0].imageY), colors::kDarkBlue);
  EXPECT_EQ(out.at(at[0].imageX + 63, at[0].imageY + 63), colors::kDarkBlue);
  EXPECT_EQ(out.at(at[0].imageX - 1, at[0].imageY), colors::kFrame);
  EXPECT_EQ(out.at(at[0].imageX + 64, at[0].imageY + 64), colors::kFrame);
  EXPECT_EQ(out.at(at[1].imageX + 5, at[1].imageY + 5), colors::kLightBlue);
  EXPECT_EQ(out.at(at[1].imageX - 1, at[1].imageY + 5), colors::kFrame);
  EXPECT_EQ(at[1].columnWidth,
            textWidth("component 1: transpose(128) / transpose(128)", 2));
  EXPECT_EQ(out.width, at[1].columnX + at[1].columnWidth + 16);
  EXPECT_EQ(out.height, at[0].captionY + 14 + 16);

  // Each caption band holds text pixels under its own column, and only
  // there; nothing but white lies between the panels and the band.
  for (size_t k = 0; k < 2; ++k) {
    int64_t inside = 0;
    for (int64_t y = at[k].captionY; y < at[k].captionY + 14; ++y)
      for (int64_t x = at[k].columnX;
           x < at[k].columnX + at[k].columnWidth; ++x)
        inside += out.at(x, y) == colors::kText;
    EXPECT_GT(inside, 50) << "caption " << k;
  }
  for (int64_t y = 0; y < out.height; ++y)
    for (int64_t x = 0; x < out.width; ++x) {
      if (out.at(x, y) != colors::kText)
        continue;
      EXPECT_GE(y, at[0].captionY);
      EXPECT_LT(y, at[0].captionY + 14);
    }
}

//===----------------------------------------------------------------------===//
// PNG files
//===----------------------------------------------------------------------===//

Image noise(int64_t w, int64_t h, unsigned seed) {
  Image img(w, h);
  std::mt19937 rng(seed);
  for (uint8_t &v : img.rgb)
    v = static_cast<uint8_t>(rng());
  return img;
}

/// Reads `path` with libpng's simplified API directly (not readPng).
bool readWithLibpng(const std::string &path, Image &out) {
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&png, path.c_str()))
    return false;
  png.format = PNG_FORMAT_RGB;
  out = Image(png.width, png.height);
  if (!png_image_finish_read(&png, nullptr, out.rgb.data(), 0, nullptr)) {
    png_image_free(&png);
    return false;
  }
  return true;
}

std::string slurp(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> listDir(const std::string &dir) {
  std::vector<std::string> names;
  if (DIR *d = ::opendir(dir.c_str())) {
    while (dirent *e = ::readdir(d))
      if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, ".."))
        names.push_back(e->d_name);
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

TEST_F(PictureTest, PngRoundTrip) {
  std::string dir = makeDir();
  std::string path = dir + "/mask.png";
  MaskProgram prog = compile(stridedFactors(4), 1);
  std::string error;
  FailureOr<Image> img = renderMask(prog, 12, 0, 4, error);
  ASSERT_TRUE(succeeded(img)) << error;
  ASSERT_TRUE(succeeded(writePng(*img, path, error))) << error;
  Image back;
  ASSERT_TRUE(readWithLibpng(path, back));
  EXPECT_EQ(back.width, img->width);
  EXPECT_EQ(back.height, img->height);
  EXPECT_EQ(back.rgb, img->rgb);
  // Random pixels survive too, and readPng agrees; overwriting replaces.
  Image rnd = noise(37, 23, 1);
  ASSERT_TRUE(succeeded(writePng(rnd, path, error))) << error;
  FailureOr<Image> again = readPng(path, error);
  ASSERT_TRUE(succeeded(again)) << error;
  EXPECT_EQ(again->width, 37);
  EXPECT_EQ(again->height, 23);
  EXPECT_EQ(again->rgb, rnd.rgb);
  EXPECT_EQ(listDir(dir), std::vector<std::string>{"mask.png"});
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_NE(st.st_mode & S_IRUSR, 0u);
}

TEST_F(PictureTest, PngErrors) {
  std::string error;
  Image img(4, 4);
  EXPECT_TRUE(failed(writePng(img, "/nonexistent-sparsetx-dir/x.png", error)));
  EXPECT_EQ(error, "cannot create a temporary file for "
                   "'/nonexistent-sparsetx-dir/x.png': No such file or "
                   "directory");

  std::string dir = makeDir();
  EXPECT_TRUE(failed(writePng(Image(), dir + "/e.png", error)));
  EXPECT_EQ(error, "cannot write '" + dir + "/e.png': the image is empty");
  Image bad(4, 4);
  bad.rgb.pop_back();
  EXPECT_TRUE(failed(writePng(bad, dir + "/b.png", error)));
  EXPECT_EQ(error, "cannot write '" + dir +
                       "/b.png': the image is 4 x 4 pixels but has 47 bytes "
                       "of RGB");
  EXPECT_TRUE(listDir(dir).empty());

  // The target is a directory: the rename fails, the directory stays, no
  // temporary file is left.
  std::string sub = dir + "/taken.png";
  ASSERT_EQ(::mkdir(sub.c_str(), 0755), 0);
  std::string inner = sub + "/keep";
  std::ofstream(inner) << "x";
  EXPECT_TRUE(failed(writePng(img, sub, error)));
  EXPECT_EQ(error, "cannot replace '" + sub + "': Is a directory");
  EXPECT_EQ(listDir(dir), std::vector<std::string>{"taken.png"});
  EXPECT_EQ(slurp(inner), "x");
}

TEST_F(PictureTest, FailedWriteLeavesOldFile) {
  // A good picture, then a write that fails half way (the file size limit
  // makes write() fail with EFBIG once the new file passes 1000 bytes): the
  // good picture must survive byte for byte and no temporary file remain.
  std::string dir = makeDir();
  std::string path = dir + "/keep.png";
  std::string error;
  Image good = noise(8, 8, 2);
  ASSERT_TRUE(succeeded(writePng(good, path, error))) << error;
  std::string before = slurp(path);

  struct rlimit old;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  struct rlimit limited = old;
  limited.rlim_cur = 1000;
  void (*oldHandler)(int) = std::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limited), 0);
  LogicalResult result = writePng(noise(64, 64, 3), path, error);
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, oldHandler);

  EXPECT_TRUE(failed(result));
  EXPECT_EQ(error, "cannot write '" + path + "': File too large");
  EXPECT_EQ(slurp(path), before);
  EXPECT_EQ(listDir(dir), std::vector<std::string>{"keep.png"});
  Image back;
  ASSERT_TRUE(readWithLibpng(path, back));
  EXPECT_EQ(back.rgb, good.rgb);
}

//===----------------------------------------------------------------------===//
// A Figure 3 style sample
//===----------------------------------------------------------------------===//

TEST_F(PictureTest, Figure3Sample) {
  const int64_t n = 48, l = 8, c = 2;
  MaskProgram full = compile(kFull);
  MaskProgram row = compile(stridedFactors(l), 0);
  MaskProgram column = compile(stridedFactors(l), 1);
  MaskProgram block = compile(fixedFactors(l, c), 0);
  MaskProgram summary = compile(fixedFactors(l, c), 1);
  auto two = [](const MaskProgram &a, const MaskProgram &b) {
    std::vector<MaskLayer> layers(2);
    layers[0].program = &a;
    layers[1].program = &b;
    layers[1].color = colors::kLightBlue;
    return layers;
  };
  std::string error;
  FailureOr<Image> fullImg = renderMask(full, n, 0, l, error);
  FailureOr<Image> stridedImg = renderMask(two(row, column), n, l, error);
  FailureOr<Image> fixedImg = renderMask(two(block, summary), n, l, error);
  ASSERT_TRUE(succeeded(fullImg) && succeeded(stridedImg) &&
              succeeded(fixedImg))
      << error;

  // The strided column under transpose(8) at n = 4096 with 64 x 64 blocks,
  // by hand: mapped indices of one column are contiguous (512 per column),
  // so the column is a causal band inside each of the 8 diagonal column
  // blocks-of-8: full below the diagonal of each, partial on it.
  const int64_t blocks = 64, perColumn = 8;
  std::vector<std::vector<std::pair<int, int>>> entries(blocks);
  for (int r = 0; r < blocks; ++r) {
    int first = r / perColumn * perColumn;
    for (int k = first; k < r; ++k)
      entries[r].push_back({k, kFullBlock});
    entries[r].push_back({r, kPartialBlock});
  }
  ComponentLayout layout = makeLayout(blocks, blocks, entries);
  Image blockMap = renderBlockMap(layout);

  std::vector<Panel> panels = {
      {*fullImg, "(a) Transformer"},
      {*stridedImg, "(b) strided, l = 8"},
      {*fixedImg, "(c) fixed, l = 8, c = 2"},
      {blockMap, "component 1: transpose(8) / transpose(8)"}};
  Image out = composePanels(panels);
  const char *env = std::getenv("SPARSETX_PICTURE_DIR");
  std::string dir = env ? env : makeDir();
  std::string path = dir + "/figure3.png";
  ASSERT_TRUE(succeeded(writePng(out, path, error))) << error;
  std::printf("wrote %s (%lld x %lld)\n", path.c_str(),
              static_cast<long long>(out.width),
              static_cast<long long>(out.height));
  Image back;
  ASSERT_TRUE(readWithLibpng(path, back));
  EXPECT_EQ(back.rgb, out.rgb);
}

} // namespace
