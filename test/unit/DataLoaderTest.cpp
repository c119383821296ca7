//===- DataLoaderTest.cpp - the data loaders on files the test writes -----===//
//
// Every loader on small plain and gzip files written here (no installed data
// set needed), the exact splits, CIFAR's planar-to-interleaved conversion,
// WAV decoding of synthesized sines, mu-law error bounds, resampling that
// keeps the frequency, and every error by its exact message.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Model/Data/AudioLoader.h"
#include "sparsetx/Model/Data/Dataset.h"
#include "sparsetx/Model/Data/Gzip.h"
#include "sparsetx/Model/Data/ImageLoader.h"
#include "sparsetx/Model/Data/TextLoader.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <fstream>

using namespace llvm;
using namespace sparsetx::data;

namespace {

constexpr double kPi = 3.14159265358979323846;

class DataTest : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_FALSE(sys::fs::createUniqueDirectory("sparsetx-data", dir_));
  }
  void TearDown() override { sys::fs::remove_directories(dir_); }

  std::string path(StringRef name) {
    SmallString<256> p(dir_);
    sys::path::append(p, name);
    return p.str().str();
  }
  std::string write(StringRef name, const std::vector<uint8_t> &bytes) {
    std::string p = path(name);
    std::ofstream os(p, std::ios::binary);
    os.write(reinterpret_cast<const char *>(bytes.data()), bytes.size());
    return p;
  }

  SmallString<256> dir_;
};

std::vector<uint8_t> gzip(const std::vector<uint8_t> &in) {
  z_stream zs = {};
  EXPECT_EQ(
      deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY),
      Z_OK);
  std::vector<uint8_t> out(deflateBound(&zs, in.size()) + 64);
  zs.next_in = const_cast<Bytef *>(in.data());
  zs.avail_in = in.size();
  zs.next_out = out.data();
  zs.avail_out = out.size();
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

std::vector<uint8_t> iota(size_t n, unsigned mul = 7) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = uint8_t(i * mul + i / 251);
  return v;
}

template <typename T> std::string message(Expected<T> &e) {
  EXPECT_FALSE(static_cast<bool>(e));
  return e ? std::string("<no error>") : toString(e.takeError());
}

std::vector<uint8_t> toVec(ArrayRef<uint8_t> a) { return {a.begin(), a.end()}; }

//===----------------------------------------------------------------------===//
// Raw bytes, gzip, GCIDE
//===----------------------------------------------------------------------===//

TEST_F(DataTest, RawBytesSplit9055) {
  std::vector<uint8_t> bytes = iota(1019);
  Expected<Dataset> ds = loadRawBytes(write("text.txt", bytes));
  ASSERT_TRUE(static_cast<bool>(ds)) << toString(ds.takeError());
  EXPECT_EQ(ds->kind(), DataKind::Text);
  // floor(5%) = 50 each at the end; train keeps the rest.
  ASSERT_EQ(ds->tokens(Split::Train).size(), 919u);
  ASSERT_EQ(ds->tokens(Split::Valid).size(), 50u);
  ASSERT_EQ(ds->tokens(Split::Test).size(), 50u);
  EXPECT_EQ(toVec(ds->tokens(Split::Train)),
            std::vector<uint8_t>(bytes.begin(), bytes.begin() + 919));
  EXPECT_EQ(toVec(ds->tokens(Split::Valid)),
            std::vector<uint8_t>(bytes.begin() + 919, bytes.begin() + 969));
  EXPECT_EQ(toVec(ds->tokens(Split::Test)),
            std::vector<uint8_t>(bytes.begin() + 969, bytes.end()));
  // Windows start at every byte.
  EXPECT_EQ(ds->numExamples(Split::Valid, 10), 41);
  Expected<ArrayRef<uint8_t>> w = ds->example(Split::Valid, 40, 10);
  ASSERT_TRUE(static_cast<bool>(w));
  EXPECT_EQ(toVec(*w),
            std::vector<uint8_t>(bytes.begin() + 959, bytes.begin() + 969));
  Expected<ArrayRef<uint8_t>> bad = ds->example(Split::Valid, 41, 10);
  EXPECT_EQ(message(bad), path("text.txt") +
                              ": valid example 41 of length 10 out of range "
                              "(41 examples)");
}

TEST_F(DataTest, RawBytesEnwik8Convention) {
  Expected<Dataset> ds =
      splitRawBytes("enwik8", std::vector<uint8_t>(100000000, 'a'));
  ASSERT_TRUE(static_cast<bool>(ds));
  EXPECT_EQ(ds->tokens(Split::Train).size(), 90000000u);
  EXPECT_EQ(ds->tokens(Split::Valid).size(), 5000000u);
  EXPECT_EQ(ds->tokens(Split::Test).size(), 5000000u);
}

TEST_F(DataTest, RawBytesTooSmall) {
  std::string empty = write("empty", {});
  Expected<Dataset> e = loadRawBytes(empty);
  EXPECT_EQ(message(e), empty + ": offset 0: empty file");
  std::string small = write("small", iota(19));
  Expected<Dataset> s = loadRawBytes(small);
  EXPECT_EQ(message(s), small + ": offset 0: 19 bytes is too small for a "
                                "90/5/5 split (need at least 20)");
  Expected<Dataset> ok = loadRawBytes(write("twenty", iota(20)));
  ASSERT_TRUE(static_cast<bool>(ok));
  EXPECT_EQ(ok->tokens(Split::Train).size(), 18u);
  Expected<Dataset> missing = loadRawBytes(path("nope"));
  EXPECT_EQ(message(missing).rfind(path("nope") + ": cannot read: ", 0), 0u);
}

TEST_F(DataTest, GzipSingleAndMultiMember) {
  std::vector<uint8_t> a = iota(3000, 3), b = iota(500, 11);
  Expected<Dataset> ds = loadRawBytes(write("a.gz", gzip(a)));
  ASSERT_TRUE(static_cast<bool>(ds)) << toString(ds.takeError());
  EXPECT_EQ(ds->tokens(Split::Train).size(), 2700u);
  EXPECT_EQ(toVec(ds->tokens(Split::Test)),
            std::vector<uint8_t>(a.end() - 150, a.end()));

  std::vector<uint8_t> two = gzip(a), gb = gzip(b);
  two.insert(two.end(), gb.begin(), gb.end());
  two.insert(two.end(), 4, 0); // zero padding after the last member
  Expected<std::vector<uint8_t>> out = gunzip("two.gz", two);
  ASSERT_TRUE(static_cast<bool>(out)) << toString(out.takeError());
  std::vector<uint8_t> ab = a;
  ab.insert(ab.end(), b.begin(), b.end());
  EXPECT_EQ(*out, ab);
}

TEST_F(DataTest, GzipErrors) {
  std::vector<uint8_t> good = gzip(iota(3000, 3));
  Expected<std::vector<uint8_t>> empty = gunzip("e.gz", {});
  EXPECT_EQ(message(empty), "e.gz: offset 0: empty gzip file");
  std::vector<uint8_t> plain = iota(100);
  Expected<std::vector<uint8_t>> notGz = gunzip("p.gz", plain);
  EXPECT_EQ(message(notGz),
            "p.gz: offset 0: not a gzip file (bad magic, expected 0x1f 0x8b)");

  std::vector<uint8_t> truncated(good.begin(), good.end() - 6);
  Expected<std::vector<uint8_t>> t = gunzip("t.gz", truncated);
  EXPECT_EQ(message(t), "t.gz: offset " + std::to_string(truncated.size()) +
                            ": truncated gzip stream (member starting at "
                            "offset 0 does not end)");

  // The first deflate byte after the 10-byte header: BFINAL=1, BTYPE=3.
  std::vector<uint8_t> badBlock = good;
  badBlock[10] = 0x07;
  Expected<std::vector<uint8_t>> bb = gunzip("b.gz", badBlock);
  EXPECT_EQ(message(bb),
            "b.gz: offset 11: corrupt gzip data: invalid block type");

  std::vector<uint8_t> badCrc = good;
  badCrc[good.size() - 8] ^= 0xff;
  Expected<std::vector<uint8_t>> bc = gunzip("c.gz", badCrc);
  EXPECT_EQ(message(bc), "c.gz: offset " + std::to_string(good.size() - 4) +
                             ": corrupt gzip data: incorrect data check");

  std::vector<uint8_t> garbage = good;
  garbage.push_back('x');
  garbage.push_back('y');
  Expected<std::vector<uint8_t>> g = gunzip("g.gz", garbage);
  EXPECT_EQ(message(g), "g.gz: offset " + std::to_string(good.size()) +
                            ": trailing garbage after gzip member (bad magic, "
                            "expected 0x1f 0x8b)");

  // Through a loader, the file name is the one on disk.
  std::string corrupt = write("corrupt.txt.gz", badBlock);
  Expected<Dataset> ds = loadRawBytes(corrupt);
  EXPECT_EQ(message(ds),
            corrupt + ": offset 11: corrupt gzip data: invalid block type");
}

TEST_F(DataTest, GcideFromDictzipLikeFile) {
  // A two-member gzip stands in for dictzip (which is gzip plus a header
  // field zlib skips).
  std::vector<uint8_t> a = iota(4000, 5), b = iota(1000, 13);
  std::vector<uint8_t> dz = gzip(a), gb = gzip(b);
  dz.insert(dz.end(), gb.begin(), gb.end());
  Expected<Dataset> ds = loadGcide(write("gcide.dict.dz", dz));
  ASSERT_TRUE(static_cast<bool>(ds)) << toString(ds.takeError());
  EXPECT_EQ(ds->tokens(Split::Train).size(), 4500u);
  EXPECT_EQ(ds->tokens(Split::Valid).size(), 250u);
  EXPECT_EQ(toVec(ds->tokens(Split::Test)),
            std::vector<uint8_t>(b.end() - 250, b.end()));
}

TEST_F(DataTest, InstalledGcideIfPresent) {
  if (!sys::fs::exists(kDefaultGcidePath))
    GTEST_SKIP() << "dict-gcide is not installed";
  Expected<Dataset> ds = loadGcide();
  ASSERT_TRUE(static_cast<bool>(ds)) << toString(ds.takeError());
  size_t total = ds->tokens(Split::Train).size() +
                 ds->tokens(Split::Valid).size() +
                 ds->tokens(Split::Test).size();
  EXPECT_GT(total, 10000000u);
  EXPECT_EQ(ds->tokens(Split::Valid).size(), total / 20);
}

//===----------------------------------------------------------------------===//
// Fashion-MNIST IDX
//===----------------------------------------------------------------------===//

void put32(std::vector<uint8_t> &v, uint32_t x) {
  v.push_back(x >> 24);
  v.push_back(x >> 16);
  v.push_back(x >> 8);
  v.push_back(x);
}

std::vector<uint8_t> idxImages(uint32_t count, uint32_t rows, uint32_t cols,
                               const std::vector<uint8_t> &pixels) {
  std::vector<uint8_t> v;
  put32(v, 0x803);
  put32(v, count);
  put32(v, rows);
  put32(v, cols);
  v.insert(v.end(), pixels.begin(), pixels.end());
  return v;
}

std::vector<uint8_t> idxLabels(const std::vector<uint8_t> &labels) {
  std::vector<uint8_t> v;
  put32(v, 0x801);
  put32(v, labels.size());
  v.insert(v.end(), labels.begin(), labels.end());
  return v;
}

void checkFashion(const Dataset &ds, const std::vector<uint8_t> &train,
                  const std::vector<uint8_t> &test) {
  // 7 training images of 3x2: 5 train, 2 valid; 3 test images.
  EXPECT_EQ(ds.kind(), DataKind::Image);
  EXPECT_EQ(ds.info().height, 3);
  EXPECT_EQ(ds.info().width, 2);
  EXPECT_EQ(ds.info().channels, 1);
  EXPECT_EQ(toVec(ds.tokens(Split::Train)),
            std::vector<uint8_t>(train.begin(), train.begin() + 30));
  EXPECT_EQ(toVec(ds.tokens(Split::Valid)),
            std::vector<uint8_t>(train.begin() + 30, train.end()));
  EXPECT_EQ(toVec(ds.tokens(Split::Test)), test);
  EXPECT_EQ(toVec(ds.labels(Split::Train)),
            (std::vector<uint8_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(toVec(ds.labels(Split::Valid)), (std::vector<uint8_t>{5, 6}));
  EXPECT_EQ(toVec(ds.labels(Split::Test)), (std::vector<uint8_t>{9, 8, 7}));
  EXPECT_EQ(ds.numExamples(Split::Train, 6), 5);
  Expected<ArrayRef<uint8_t>> img = ds.example(Split::Valid, 1, 6);
  ASSERT_TRUE(static_cast<bool>(img));
  EXPECT_EQ(toVec(*img), std::vector<uint8_t>(train.begin() + 36, train.end()));
  Expected<ArrayRef<uint8_t>> wrong = ds.example(Split::Train, 0, 5);
  EXPECT_NE(message(wrong).find("an image example is 6 bytes (3x2x1), not 5"),
            std::string::npos);
}

TEST_F(DataTest, FashionMnistPlainAndGzip) {
  std::vector<uint8_t> train = iota(7 * 6), test = iota(3 * 6, 29);
  ImageLoadOptions opts;
  opts.validCount = 2;
  for (bool gz : {false, true}) {
    auto put = [&](StringRef name, std::vector<uint8_t> bytes) {
      write(gz ? (name + ".gz").str() : name.str(), gz ? gzip(bytes) : bytes);
    };
    put("train-images-idx3-ubyte", idxImages(7, 3, 2, train));
    put("train-labels-idx1-ubyte", idxLabels({0, 1, 2, 3, 4, 5, 6}));
    put("t10k-images-idx3-ubyte", idxImages(3, 3, 2, test));
    put("t10k-labels-idx1-ubyte", idxLabels({9, 8, 7}));
    Expected<Dataset> ds = loadFashionMnist(dir_, opts);
    ASSERT_TRUE(static_cast<bool>(ds)) << toString(ds.takeError());
    checkFashion(*ds, train, test);
  }
}

TEST_F(DataTest, IdxErrors) {
  std::vector<uint8_t> bad = idxImages(1, 2, 2, iota(4));
  bad[3] = 0x02;
  Expected<ImageSet> m = parseIdxImages("x.idx", bad);
  EXPECT_EQ(message(m), "x.idx: offset 0: bad magic 0x00000802, expected "
                        "0x00000803 (IDX unsigned byte, 3 dimensions)");
  Expected<ImageSet> tiny = parseIdxImages("x.idx", {0, 0});
  EXPECT_EQ(message(tiny), "x.idx: offset 2: truncated header: the file ends "
                           "after 2 bytes, before the 4-byte IDX magic");
  std::vector<uint8_t> hdr = idxImages(1, 2, 2, {});
  hdr.resize(10);
  Expected<ImageSet> h = parseIdxImages("x.idx", hdr);
  EXPECT_EQ(message(h), "x.idx: offset 10: truncated header: the file ends "
                        "after 10 bytes, an IDX header with 3 dimensions "
                        "needs 16");
  Expected<ImageSet> zero = parseIdxImages("x.idx", idxImages(2, 0, 2, {}));
  EXPECT_EQ(message(zero), "x.idx: offset 8: zero-sized images (0x2)");
  Expected<ImageSet> trailing =
      parseIdxImages("x.idx", idxImages(2, 2, 2, iota(11)));
  EXPECT_EQ(message(trailing),
            "x.idx: offset 24: 3 trailing bytes after 2 images");

  // The example of the brief, at full Fashion-MNIST size.
  std::vector<uint8_t> big = idxImages(60000, 28, 28, {});
  big.resize(16 + 59999 * 784 + 783);
  Expected<ImageSet> room =
      parseIdxImages("data/train-images-idx3-ubyte.gz", big);
  EXPECT_EQ(message(room), "data/train-images-idx3-ubyte.gz: offset 4: "
                           "expected 60000 images but the file has room for "
                           "59999");

  std::vector<uint8_t> labels = idxLabels({1, 2, 12});
  Expected<std::vector<uint8_t>> l = parseIdxLabels("l.idx", labels);
  EXPECT_EQ(message(l), "l.idx: offset 10: label 12 out of range 0..9");
  Expected<std::vector<uint8_t>> lm =
      parseIdxLabels("l.idx", idxImages(1, 1, 1, {0}));
  EXPECT_EQ(message(lm), "l.idx: offset 0: bad magic 0x00000803, expected "
                         "0x00000801 (IDX unsigned byte, 1 dimension)");
  std::vector<uint8_t> shortLabels = idxLabels({1, 2, 3});
  shortLabels.pop_back();
  Expected<std::vector<uint8_t>> sl = parseIdxLabels("l.idx", shortLabels);
  EXPECT_EQ(message(sl),
            "l.idx: offset 4: expected 3 labels but the file has room for 2");
}

TEST_F(DataTest, FashionMnistFileErrors) {
  ImageLoadOptions opts;
  opts.validCount = 2;
  write("train-images-idx3-ubyte.gz", gzip(idxImages(7, 3, 2, iota(41))));
  write("train-labels-idx1-ubyte", idxLabels({0, 1, 2, 3, 4, 5, 6}));
  write("t10k-images-idx3-ubyte", idxImages(3, 3, 2, iota(18)));
  write("t10k-labels-idx1-ubyte", idxLabels({9, 8, 7}));
  Expected<Dataset> t = loadFashionMnist(dir_, opts);
  EXPECT_EQ(message(t), path("train-images-idx3-ubyte.gz") +
                            ": offset 4: expected 7 images but the file has "
                            "room for 6");

  write("train-images-idx3-ubyte.gz", gzip(idxImages(7, 3, 2, iota(42))));
  write("train-labels-idx1-ubyte", idxLabels({0, 1, 2, 3, 4, 5}));
  Expected<Dataset> lc = loadFashionMnist(dir_, opts);
  EXPECT_EQ(message(lc), path("train-labels-idx1-ubyte") +
                             ": offset 4: 6 "
                             "labels but " +
                             path("train-images-idx3-ubyte.gz") +
                             " has 7 images");

  write("train-labels-idx1-ubyte", idxLabels({0, 1, 2, 3, 4, 5, 6}));
  write("t10k-images-idx3-ubyte", idxImages(3, 2, 3, iota(18)));
  Expected<Dataset> dims = loadFashionMnist(dir_, opts);
  EXPECT_EQ(message(dims), path("t10k-images-idx3-ubyte") +
                               ": offset 8: images are 2x3x1 but the training "
                               "images are 3x2x1");

  write("t10k-images-idx3-ubyte", idxImages(3, 3, 2, iota(18)));
  opts.validCount = 7;
  Expected<Dataset> v = loadFashionMnist(dir_, opts);
  EXPECT_EQ(message(v), path("train-images-idx3-ubyte.gz") +
                            ": offset 4: 7 training images leave none for "
                            "training after 7 for validation");
  opts.validCount = 2;
  ASSERT_TRUE(static_cast<bool>(loadFashionMnist(dir_, opts)));
}

TEST_F(DataTest, InstalledFashionMnistIfPresent) {
  if (!sys::fs::exists(kDefaultFashionMnistDir))
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  Expected<Dataset> ds = loadFashionMnist();
  ASSERT_TRUE(static_cast<bool>(ds)) << toString(ds.takeError());
  EXPECT_EQ(ds->numExamples(Split::Train, 784), 55000);
  EXPECT_EQ(ds->numExamples(Split::Valid, 784), 5000);
  EXPECT_EQ(ds->numExamples(Split::Test, 784), 10000);
}

//===----------------------------------------------------------------------===//
// CIFAR-10
//===----------------------------------------------------------------------===//

/// A record whose channel c, pixel p holds (c * 85 + p * 3 + seed) mod 256.
std::vector<uint8_t> cifarRecord(uint8_t label, int seed) {
  std::vector<uint8_t> r(kCifarRecordBytes);
  r[0] = label;
  for (int c = 0; c < 3; ++c)
    for (int p = 0; p < 1024; ++p)
      r[1 + c * 1024 + p] = uint8_t(c * 85 + p * 3 + seed);
  return r;
}

TEST_F(DataTest, CifarRasterInterleaved) {
  std::vector<uint8_t> batch = cifarRecord(3, 0), second = cifarRecord(9, 17);
  batch.insert(batch.end(), second.begin(), second.end());
  Expected<ImageSet> set = parseCifarBatch("b.bin", batch);
  ASSERT_TRUE(static_cast<bool>(set)) << toString(set.takeError());
  ASSERT_EQ(set->count, 2);
  EXPECT_EQ(set->labels, (std::vector<uint8_t>{3, 9}));
  for (int i = 0; i < 2; ++i)
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x)
        for (int c = 0; c < 3; ++c) {
          uint8_t want = uint8_t(c * 85 + (y * 32 + x) * 3 + (i ? 17 : 0));
          ASSERT_EQ(set->pixels[i * 3072 + (y * 32 + x) * 3 + c], want)
              << i << " " << y << " " << x << " " << c;
        }
}

TEST_F(DataTest, CifarDirectorySplits) {
  ImageLoadOptions opts;
  opts.validCount = 3;
  for (int b = 1; b <= 5; ++b) {
    std::vector<uint8_t> batch = cifarRecord(b, b),
                         r2 = cifarRecord(b, 100 + b);
    batch.insert(batch.end(), r2.begin(), r2.end());
    write("data_batch_" + std::to_string(b) + ".bin", batch);
  }
  write("test_batch.bin", cifarRecord(0, 50));
  Expected<Dataset> ds = loadCifar10(dir_, opts);
  ASSERT_TRUE(static_cast<bool>(ds)) << toString(ds.takeError());
  EXPECT_EQ(ds->info().height, 32);
  EXPECT_EQ(ds->info().channels, 3);
  EXPECT_EQ(ds->numExamples(Split::Train, 3072), 7);
  EXPECT_EQ(ds->numExamples(Split::Valid, 3072), 3);
  EXPECT_EQ(ds->numExamples(Split::Test, 3072), 1);
  EXPECT_EQ(toVec(ds->labels(Split::Valid)), (std::vector<uint8_t>{4, 5, 5}));
  // Valid image 0 is batch 4's second record (seed 104): pixel (0,1), G.
  Expected<ArrayRef<uint8_t>> img = ds->example(Split::Valid, 0, 3072);
  ASSERT_TRUE(static_cast<bool>(img));
  EXPECT_EQ((*img)[1 * 3 + 1], uint8_t(85 + 3 + 104));
}

TEST_F(DataTest, CifarErrors) {
  std::vector<uint8_t> batch = cifarRecord(1, 0), r2 = cifarRecord(2, 0);
  batch.insert(batch.end(), r2.begin(), r2.end());
  batch.insert(batch.end(), 5, 0);
  Expected<ImageSet> partial = parseCifarBatch("b.bin", batch);
  EXPECT_EQ(message(partial),
            "b.bin: offset 6146: file size 6151 is not a multiple of 3073 (1 "
            "label byte + 3072 image bytes): the last record has only 5 bytes");
  batch.resize(6146);
  batch[3073] = 10;
  Expected<ImageSet> label = parseCifarBatch("b.bin", batch);
  EXPECT_EQ(message(label), "b.bin: offset 3073: label 10 out of range 0..9");
  Expected<ImageSet> empty = parseCifarBatch("b.bin", {});
  EXPECT_EQ(message(empty), "b.bin: offset 0: empty file");
  Expected<Dataset> missing = loadCifar10(dir_);
  EXPECT_EQ(
      message(missing).rfind(path("data_batch_1.bin") + ": cannot read: ", 0),
      0u);
}

//===----------------------------------------------------------------------===//
// WAV
//===----------------------------------------------------------------------===//

void put16le(std::vector<uint8_t> &v, uint32_t x) {
  v.push_back(x);
  v.push_back(x >> 8);
}
void put32le(std::vector<uint8_t> &v, uint32_t x) {
  put16le(v, x);
  put16le(v, x >> 16);
}
void putTag(std::vector<uint8_t> &v, const char *tag) {
  v.insert(v.end(), tag, tag + 4);
}

struct WavSpec {
  uint16_t code = 1, channels = 1, bits = 16;
  uint32_t rate = 16000;
  bool extensible = false;
  bool extraChunk = false; // a LIST chunk of odd size before fmt
  bool dataFirst = false;
  bool noFmt = false, noData = false;
};

/// frames[i][c] in [-1, 1], encoded as the spec says.
std::vector<uint8_t> makeWav(const WavSpec &s,
                             const std::vector<std::vector<double>> &frames) {
  std::vector<uint8_t> fmt, data;
  putTag(fmt, "fmt ");
  put32le(fmt, s.extensible ? 40 : 16);
  put16le(fmt, s.extensible ? 0xFFFE : s.code);
  put16le(fmt, s.channels);
  put32le(fmt, s.rate);
  put32le(fmt, s.rate * s.channels * (s.bits / 8));
  put16le(fmt, s.channels * (s.bits / 8));
  put16le(fmt, s.bits);
  if (s.extensible) {
    put16le(fmt, 22);
    put16le(fmt, s.bits);
    put32le(fmt, 0);
    put16le(fmt, s.code);
    const uint8_t guidTail[14] = {0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80,
                                  0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71};
    fmt.insert(fmt.end(), guidTail, guidTail + 14);
  }
  std::vector<uint8_t> samples;
  for (const auto &f : frames)
    for (double x : f) {
      if (s.code == 3) {
        float v = float(x);
        uint32_t u;
        std::memcpy(&u, &v, 4);
        put32le(samples, u);
      } else if (s.bits == 8) {
        samples.push_back(
            uint8_t(std::lround(std::clamp(x * 128 + 128, 0.0, 255.0))));
      } else if (s.bits == 16) {
        put16le(samples, uint16_t(int16_t(std::lround(
                             std::clamp(x * 32768, -32768.0, 32767.0)))));
      } else if (s.bits == 24) {
        uint32_t v = uint32_t(int32_t(
            std::lround(std::clamp(x * 8388608, -8388608.0, 8388607.0))));
        samples.push_back(v);
        samples.push_back(v >> 8);
        samples.push_back(v >> 16);
      } else {
        put32le(samples, uint32_t(int32_t(std::llround(std::clamp(
                             x * 2147483648.0, -2147483648.0, 2147483647.0)))));
      }
    }
  putTag(data, "data");
  put32le(data, samples.size());
  data.insert(data.end(), samples.begin(), samples.end());
  if (samples.size() & 1)
    data.push_back(0);

  std::vector<uint8_t> body;
  putTag(body, "WAVE");
  if (s.extraChunk) {
    putTag(body, "LIST");
    put32le(body, 5);
    body.insert(body.end(), {'I', 'N', 'F', 'O', 'x', 0});
  }
  if (s.dataFirst && !s.noData)
    body.insert(body.end(), data.begin(), data.end());
  if (!s.noFmt)
    body.insert(body.end(), fmt.begin(), fmt.end());
  if (!s.dataFirst && !s.noData)
    body.insert(body.end(), data.begin(), data.end());
  std::vector<uint8_t> wav;
  putTag(wav, "RIFF");
  put32le(wav, body.size());
  wav.insert(wav.end(), body.begin(), body.end());
  return wav;
}

std::vector<std::vector<double>> sine(double freq, double rate, size_t n,
                                      int channels, double amp = 0.8) {
  std::vector<std::vector<double>> frames(n);
  for (size_t i = 0; i < n; ++i) {
    double v = amp * std::sin(2 * kPi * freq * i / rate);
    for (int c = 0; c < channels; ++c)
      frames[i].push_back(c == 0 ? v : -0.5 * v);
  }
  return frames;
}

/// Sign changes per second.
double crossingsPerSecond(ArrayRef<float> x, double rate) {
  int count = 0;
  for (size_t i = 1; i < x.size(); ++i)
    if ((x[i - 1] < 0) != (x[i] < 0))
      ++count;
  return count * rate / double(x.size());
}

TEST_F(DataTest, WavDecodeEveryFormat) {
  struct Case {
    uint16_t code, bits;
    bool extensible;
    double tol;
  } cases[] = {{1, 8, false, 1.0 / 128 + 1e-6},
               {1, 16, false, 1.0 / 32768 + 1e-6},
               {1, 24, false, 1e-6},
               {1, 32, false, 1e-6},
               {3, 32, false, 1e-6},
               {1, 16, true, 1.0 / 32768 + 1e-6},
               {3, 32, true, 1e-6}};
  for (const Case &c : cases) {
    WavSpec s;
    s.code = c.code;
    s.bits = c.bits;
    s.extensible = c.extensible;
    s.extraChunk = true;
    auto frames = sine(440, 16000, 1601, 1);
    Expected<WavAudio> a = decodeWav("s.wav", makeWav(s, frames));
    ASSERT_TRUE(static_cast<bool>(a)) << toString(a.takeError());
    EXPECT_EQ(a->sampleRate, 16000);
    EXPECT_EQ(a->bitsPerSample, c.bits);
    ASSERT_EQ(a->samples.size(), frames.size());
    for (size_t i = 0; i < frames.size(); ++i)
      ASSERT_NEAR(a->samples[i], frames[i][0], c.tol)
          << "code " << c.code << " bits " << c.bits << " sample " << i;
  }
}

TEST_F(DataTest, WavStereoMixAndChunkOrder) {
  for (uint16_t bits : {8, 16}) {
    WavSpec s;
    s.bits = bits;
    s.channels = 2;
    s.dataFirst = true; // 'fmt ' after 'data' is legal
    auto frames = sine(300, 16000, 800, 2);
    Expected<WavAudio> a = decodeWav("st.wav", makeWav(s, frames));
    ASSERT_TRUE(static_cast<bool>(a)) << toString(a.takeError());
    EXPECT_EQ(a->channels, 2);
    double tol = bits == 8 ? 1.0 / 128 : 1.0 / 32768;
    for (size_t i = 0; i < frames.size(); ++i)
      ASSERT_NEAR(a->samples[i], 0.5 * (frames[i][0] + frames[i][1]), tol);
  }
}

TEST_F(DataTest, MuLawRoundTripBound) {
  EXPECT_EQ(muLawEncode(-1.0f), 0);
  EXPECT_EQ(muLawEncode(1.0f), 255);
  EXPECT_EQ(muLawEncode(2.0f), 255); // clamped
  uint8_t prev = 0;
  for (int i = -10000; i <= 10000; ++i) {
    double x = i / 10000.0;
    uint8_t q = muLawEncode(float(x));
    ASSERT_GE(q, prev); // monotone
    prev = q;
    // Half a quantization step in the companded domain (1/255), mapped back
    // through the slope of the inverse.
    double bound =
        (1.0 / 255) * (1 + kMuLaw * std::fabs(x)) * std::log1p(kMuLaw) / kMuLaw;
    ASSERT_LE(std::fabs(muLawDecode(q) - x), bound * 1.02 + 1e-6) << x;
  }
  for (int q = 0; q < 256; ++q)
    ASSERT_EQ(muLawEncode(muLawDecode(uint8_t(q))), q);
}

TEST_F(DataTest, ResampleKeepsFrequency) {
  std::vector<float> x;
  for (int i = 0; i < 16000; ++i)
    x.push_back(float(0.8 * std::sin(2 * kPi * 440.3 * i / 16000)));
  EXPECT_NEAR(crossingsPerSecond(x, 16000), 880.6, 2);
  for (int64_t rate : {8000, 11025, 22050, 44100}) {
    std::vector<float> y = resampleLinear(x, 16000, rate);
    EXPECT_EQ(int64_t(y.size()), 15999 * rate / 16000 + 1);
    EXPECT_NEAR(crossingsPerSecond(y, rate), 880.6, 2) << rate;
  }
  // Exact at the input sample times when upsampling by an integer.
  std::vector<float> up = resampleLinear(x, 16000, 48000);
  for (int i = 0; i < 100; ++i)
    ASSERT_EQ(up[3 * i], x[i]);
  EXPECT_FLOAT_EQ(up[1], x[0] + (x[1] - x[0]) / 3);
}

TEST_F(DataTest, WavDatasetMuLaw) {
  WavSpec s;
  s.rate = 16000;
  s.channels = 2;
  auto frames = sine(440, 16000, 16000, 2);
  std::string p = write("tone.wav", makeWav(s, frames));
  Expected<Dataset> ds = loadWav(p, 8000);
  ASSERT_TRUE(static_cast<bool>(ds)) << toString(ds.takeError());
  EXPECT_EQ(ds->kind(), DataKind::Audio);
  EXPECT_EQ(ds->info().sampleRate, 8000);
  size_t total = 15999 * 8000 / 16000 + 1; // 8000
  EXPECT_EQ(ds->tokens(Split::Train).size(), total - 2 * (total / 20));
  EXPECT_EQ(ds->tokens(Split::Test).size(), total / 20);
  // Decoded tokens stay near the mixed sine (amplitude 0.2) and keep 440 Hz.
  std::vector<float> back;
  for (uint8_t q : ds->tokens(Split::Train))
    back.push_back(muLawDecode(q));
  for (size_t i = 0; i < back.size(); ++i) {
    double want = 0.25 * 0.8 * std::sin(2 * kPi * 440 * (2.0 * i) / 16000);
    ASSERT_NEAR(back[i], want, 0.01) << i;
  }
  EXPECT_NEAR(crossingsPerSecond(back, 8000), 880, 2);
}

TEST_F(DataTest, WavErrors) {
  auto frames = sine(440, 16000, 10, 1);
  std::vector<uint8_t> good = makeWav(WavSpec{}, frames);
  // Layout: RIFF 0, WAVE 8, 'fmt ' 12 (code 20, channels 22, rate 24,
  // align 32, bits 34), 'data' 36 (20 bytes of samples from 44).
  ASSERT_EQ(good.size(), 64u);
  auto err = [](std::vector<uint8_t> bytes) {
    Expected<WavAudio> a = decodeWav("a.wav", bytes);
    return message(a);
  };
  EXPECT_EQ(err({'R', 'I', 'F', 'F', 0, 0, 0, 0}),
            "a.wav: offset 8: truncated RIFF header: the file ends after 8 "
            "bytes, a WAV header needs 12");
  std::vector<uint8_t> b = good;
  b[0] = 'X';
  b[3] = 0;
  EXPECT_EQ(err(b), "a.wav: offset 0: bad magic 'XIF\\x00', expected 'RIFF'");
  b = good;
  b[8] = 'A';
  EXPECT_EQ(err(b), "a.wav: offset 8: bad form type 'AAVE', expected 'WAVE'");
  WavSpec noFmt;
  noFmt.noFmt = true;
  std::vector<uint8_t> nf = makeWav(noFmt, frames);
  EXPECT_EQ(err(nf), "a.wav: offset " + std::to_string(nf.size()) +
                         ": no 'fmt ' chunk in the file");
  WavSpec noData;
  noData.noData = true;
  noData.extraChunk = true;
  std::vector<uint8_t> nd = makeWav(noData, frames);
  EXPECT_EQ(err(nd), "a.wav: offset " + std::to_string(nd.size()) +
                         ": no 'data' chunk in the file");
  b = good;
  b[20] = 2; // Microsoft ADPCM
  EXPECT_EQ(err(b), "a.wav: offset 20: unsupported format code 0x0002 "
                    "(supported: 0x0001 PCM, 0x0003 IEEE float, 0xfffe "
                    "extensible of either)");
  WavSpec ext;
  ext.extensible = true;
  ext.code = 0x11; // IMA ADPCM inside extensible
  EXPECT_EQ(err(makeWav(ext, frames)),
            "a.wav: offset 44: unsupported format code 0x0011 (supported: "
            "0x0001 PCM, 0x0003 IEEE float, 0xfffe extensible of either)");
  b = good;
  b[34] = 12;
  EXPECT_EQ(err(b), "a.wav: offset 34: unsupported 12-bit PCM samples "
                    "(supported: 8, 16, 24, 32)");
  b = good;
  b[32] = 4;
  EXPECT_EQ(err(b), "a.wav: offset 32: block align 4, expected 2 for 1 "
                    "channels of 16 bits");
  b = good;
  b[22] = 0;
  EXPECT_EQ(err(b), "a.wav: offset 22: zero channels");
  b = good;
  b[40] = 21; // data size odd: not whole 2-byte frames (pad byte follows)
  b.push_back(0);
  EXPECT_EQ(err(b), "a.wav: offset 36: data chunk of 21 bytes is not a whole "
                    "number of 2-byte frames");
  b = good;
  b.resize(50); // payload cut short
  EXPECT_EQ(err(b), "a.wav: offset 36: chunk 'data' declares 20 bytes but "
                    "only 6 remain");
  b = good;
  b.insert(b.end(), {'L', 'I', 'S'});
  EXPECT_EQ(err(b), "a.wav: offset 64: truncated chunk header: 3 bytes left, "
                    "a chunk header needs 8");
  b = good;
  b.erase(b.begin() + 34, b.begin() + 36); // drop bitsPerSample
  b[16] = 14;
  EXPECT_EQ(err(b), "a.wav: offset 12: 'fmt ' chunk of 14 bytes is too small "
                    "(needs 16)");
  b = good;
  b[24] = b[25] = 0;
  EXPECT_EQ(err(b), "a.wav: offset 24: zero sample rate");
  std::string missing = path("none.wav");
  Expected<Dataset> m = loadWav(missing, 8000);
  EXPECT_EQ(message(m).rfind(missing + ": cannot read: ", 0), 0u);
}

} // namespace
