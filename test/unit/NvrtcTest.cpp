//===- NvrtcTest.cpp - CUDA C++ to PTX and the on-disk cache --------------===//
//
// NVRTC needs no GPU, so these run everywhere the toolkit is. Where ptxas is
// found, the PTX is also assembled for its target to prove it is valid.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Runtime/Nvrtc.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include "gtest/gtest.h"

using namespace sparsetx;

namespace {

constexpr const char *kBf16Kernel = R"cuda(
#include <cuda_bf16.h>
extern "C" __global__ void scale_bf16(__nv_bfloat16 *x, float s, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n)
    x[i] = __float2bfloat16(__bfloat162float(x[i]) * s);
}
)cuda";

/// A fresh cache directory per test, removed afterwards.
class NvrtcTest : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_FALSE(
        llvm::sys::fs::createUniqueDirectory("sparsetx-nvrtc-test", cacheDir));
  }
  void TearDown() override { llvm::sys::fs::remove_directories(cacheDir); }

  nvrtc::CompileOptions options(llvm::StringRef arch) const {
    nvrtc::CompileOptions o;
    o.arch = arch.str();
    o.cacheDir = std::string(cacheDir);
    return o;
  }

  std::vector<std::string> cacheEntries() const {
    std::vector<std::string> entries;
    std::error_code ec;
    for (llvm::sys::fs::directory_iterator it(cacheDir, ec), end;
         it != end && !ec; it.increment(ec))
      entries.push_back(it->path());
    return entries;
  }

  llvm::SmallString<128> cacheDir;
};

std::string ptxasPath() {
  for (const char *var : {"CUDA_PATH", "CUDA_HOME"})
    if (std::optional<std::string> root = llvm::sys::Process::GetEnv(var))
      if (llvm::sys::fs::can_execute(*root + "/bin/ptxas"))
        return *root + "/bin/ptxas";
  if (llvm::sys::fs::can_execute("/usr/local/cuda/bin/ptxas"))
    return "/usr/local/cuda/bin/ptxas";
  if (llvm::ErrorOr<std::string> p = llvm::sys::findProgramByName("ptxas"))
    return *p;
  return "";
}

/// Assembles `ptx` for `arch` with ptxas; skips (returns true) without ptxas.
::testing::AssertionResult assemblesWithPtxas(const std::string &ptx,
                                              llvm::StringRef arch) {
  std::string ptxas = ptxasPath();
  if (ptxas.empty())
    return ::testing::AssertionSuccess() << "ptxas not found";
  llvm::SmallString<128> ptxFile, cubinFile;
  int fd;
  if (llvm::sys::fs::createTemporaryFile("sparsetx-nvrtc", "ptx", fd, ptxFile))
    return ::testing::AssertionFailure() << "no temporary file";
  {
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
    os << ptx;
  }
  llvm::sys::fs::createTemporaryFile("sparsetx-nvrtc", "cubin", cubinFile);
  std::string archArg = "-arch=" + arch.str();
  std::string errorMessage;
  llvm::StringRef args[] = {ptxas, archArg, ptxFile, "-o", cubinFile};
  int rc = llvm::sys::ExecuteAndWait(ptxas, args, std::nullopt, {}, 0, 0,
                                     &errorMessage);
  uint64_t cubinSize = 0;
  llvm::sys::fs::file_size(cubinFile, cubinSize);
  llvm::sys::fs::remove(ptxFile);
  llvm::sys::fs::remove(cubinFile);
  if (rc != 0)
    return ::testing::AssertionFailure()
           << "ptxas " << archArg << " failed (" << rc << ") " << errorMessage
           << "\n"
           << ptx;
  if (cubinSize == 0)
    return ::testing::AssertionFailure() << "ptxas wrote an empty cubin";
  return ::testing::AssertionSuccess();
}

TEST(Nvrtc, Version) {
  std::string v = nvrtc::version();
  EXPECT_NE(v, "unknown");
  EXPECT_NE(v.find('.'), std::string::npos) << v;
}

TEST_F(NvrtcTest, Bf16KernelForSm80AndSm90a) {
  for (llvm::StringRef arch : {"sm_80", "sm_90a"}) {
    llvm::Expected<std::string> ptx =
        nvrtc::compileToPTX(kBf16Kernel, "scale.cu", options(arch));
    ASSERT_TRUE(!!ptx) << llvm::toString(ptx.takeError());
    EXPECT_NE(ptx->find(".target " + arch.str()), std::string::npos) << *ptx;
    EXPECT_NE(ptx->find(".entry scale_bf16"), std::string::npos) << *ptx;
    EXPECT_TRUE(assemblesWithPtxas(*ptx, arch));
  }
  // One entry per architecture.
  EXPECT_EQ(cacheEntries().size(), 2u);
}

TEST_F(NvrtcTest, SecondCompileHitsTheCache) {
  nvrtc::CompileOptions o = options("sm_90a");
  EXPECT_EQ(nvrtc::resolveCacheDir(o), std::string(cacheDir));
  nvrtc::CacheStats before = nvrtc::getCacheStats();
  llvm::Expected<std::string> first =
      nvrtc::compileToPTX(kBf16Kernel, "scale.cu", o);
  ASSERT_TRUE(!!first) << llvm::toString(first.takeError());
  nvrtc::CacheStats afterFirst = nvrtc::getCacheStats();
  EXPECT_EQ(afterFirst.compiles, before.compiles + 1);
  EXPECT_EQ(afterFirst.hits, before.hits);

  std::vector<std::string> entries = cacheEntries();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(llvm::sys::path::extension(entries[0]), ".ptx");
  // The key is a SHA-256 in hex.
  EXPECT_EQ(llvm::sys::path::stem(entries[0]).size(), 64u);

  llvm::Expected<std::string> second =
      nvrtc::compileToPTX(kBf16Kernel, "scale.cu", o);
  ASSERT_TRUE(!!second) << llvm::toString(second.takeError());
  nvrtc::CacheStats afterSecond = nvrtc::getCacheStats();
  EXPECT_EQ(afterSecond.compiles, afterFirst.compiles);
  EXPECT_EQ(afterSecond.hits, afterFirst.hits + 1);
  EXPECT_EQ(*first, *second);

  // Any change to the options is a different key.
  o.flags.push_back("-DUNUSED=1");
  llvm::Expected<std::string> third =
      nvrtc::compileToPTX(kBf16Kernel, "scale.cu", o);
  ASSERT_TRUE(!!third) << llvm::toString(third.takeError());
  EXPECT_EQ(nvrtc::getCacheStats().compiles, afterSecond.compiles + 1);
  EXPECT_EQ(cacheEntries().size(), 2u);
}

TEST_F(NvrtcTest, CorruptCacheEntryIsRecompiled) {
  nvrtc::CompileOptions o = options("sm_80");
  llvm::Expected<std::string> first =
      nvrtc::compileToPTX(kBf16Kernel, "scale.cu", o);
  ASSERT_TRUE(!!first) << llvm::toString(first.takeError());
  std::vector<std::string> entries = cacheEntries();
  ASSERT_EQ(entries.size(), 1u);
  {
    // Truncated: what a crash halfway through a non-atomic write would leave.
    std::error_code ec;
    llvm::raw_fd_ostream os(entries[0], ec);
    ASSERT_FALSE(ec);
    os << first->substr(0, first->size() / 2);
  }
  nvrtc::CacheStats before = nvrtc::getCacheStats();
  llvm::Expected<std::string> second =
      nvrtc::compileToPTX(kBf16Kernel, "scale.cu", o);
  ASSERT_TRUE(!!second) << llvm::toString(second.takeError());
  EXPECT_EQ(*second, *first);
  EXPECT_EQ(nvrtc::getCacheStats().compiles, before.compiles + 1);
  EXPECT_EQ(nvrtc::getCacheStats().hits, before.hits);

  // ... and the rewritten entry is good again.
  llvm::Expected<std::string> third =
      nvrtc::compileToPTX(kBf16Kernel, "scale.cu", o);
  ASSERT_TRUE(!!third) << llvm::toString(third.takeError());
  EXPECT_EQ(nvrtc::getCacheStats().hits, before.hits + 1);
  EXPECT_EQ(cacheEntries().size(), 1u) << "temporary files left behind";
}

TEST_F(NvrtcTest, CacheDisabled) {
  nvrtc::CompileOptions o = options("sm_80");
  o.cacheDir = "none";
  EXPECT_EQ(nvrtc::resolveCacheDir(o), "");
  nvrtc::CacheStats before = nvrtc::getCacheStats();
  for (int r = 0; r < 2; ++r) {
    llvm::Expected<std::string> ptx =
        nvrtc::compileToPTX(kBf16Kernel, "scale.cu", o);
    ASSERT_TRUE(!!ptx) << llvm::toString(ptx.takeError());
  }
  EXPECT_EQ(nvrtc::getCacheStats().compiles, before.compiles + 2);
  EXPECT_TRUE(cacheEntries().empty());
}

TEST_F(NvrtcTest, SyntaxErrorCarriesTheLog) {
  const char *bad = "extern \"C\" __global__ void k(float *x) {\n"
                    "  x[0] = 1.0f;\n"
                    "  x[1] = 2.0f +;\n"
                    "}\n";
  llvm::Expected<std::string> ptx =
      nvrtc::compileToPTX(bad, "bad.cu", options("sm_90a"));
  ASSERT_FALSE(!!ptx);
  std::string message = llvm::toString(ptx.takeError());
  EXPECT_EQ(message.rfind("nvrtc: compiling bad.cu failed:\n", 0), 0u)
      << message;
  EXPECT_NE(message.find("bad.cu(3)"), std::string::npos) << message;
  EXPECT_NE(message.find("error"), std::string::npos) << message;
  EXPECT_TRUE(cacheEntries().empty());
}

TEST_F(NvrtcTest, InMemoryHeader) {
  const char *source = "#include \"params.h\"\n"
                       "extern \"C\" __global__ void fill(int *x) {\n"
                       "  x[threadIdx.x] = kMagic;\n"
                       "}\n";
  std::vector<std::pair<std::string, std::string>> headers = {
      {"params.h", "constexpr int kMagic = 12345;\n"}};
  llvm::Expected<std::string> ptx =
      nvrtc::compileToPTX(source, "fill.cu", options("sm_80"), headers);
  ASSERT_TRUE(!!ptx) << llvm::toString(ptx.takeError());
  EXPECT_NE(ptx->find("12345"), std::string::npos) << *ptx;
  EXPECT_TRUE(assemblesWithPtxas(*ptx, "sm_80"));

  // A different header is a different key, not a stale hit.
  headers[0].second = "constexpr int kMagic = 54321;\n";
  llvm::Expected<std::string> other =
      nvrtc::compileToPTX(source, "fill.cu", options("sm_80"), headers);
  ASSERT_TRUE(!!other) << llvm::toString(other.takeError());
  EXPECT_NE(other->find("54321"), std::string::npos) << *other;

  // Without the header, the include fails with the log.
  llvm::Expected<std::string> missing =
      nvrtc::compileToPTX(source, "fill.cu", options("sm_80"));
  ASSERT_FALSE(!!missing);
  std::string message = llvm::toString(missing.takeError());
  EXPECT_NE(message.find("params.h"), std::string::npos) << message;
}

TEST_F(NvrtcTest, IncludeDirFilesAreInTheKey) {
  llvm::SmallString<128> includeDir(cacheDir);
  llvm::sys::path::append(includeDir, "inc");
  ASSERT_FALSE(llvm::sys::fs::create_directories(includeDir));
  llvm::SmallString<128> header(includeDir);
  llvm::sys::path::append(header, "value.h");
  auto writeHeader = [&](llvm::StringRef text) {
    std::error_code ec;
    llvm::raw_fd_ostream os(header, ec);
    os << text;
  };
  writeHeader("#define VALUE 777\n");
  const char *source = "#include \"value.h\"\n"
                       "extern \"C\" __global__ void k(int *x) { *x = VALUE; }\n";
  nvrtc::CompileOptions o = options("sm_80");
  o.cacheDir = std::string(cacheDir) + "/cache";
  o.includeDirs.push_back(std::string(includeDir));
  llvm::Expected<std::string> first = nvrtc::compileToPTX(source, "k.cu", o);
  ASSERT_TRUE(!!first) << llvm::toString(first.takeError());
  EXPECT_NE(first->find("777"), std::string::npos);
  // A longer file: a different size, whatever the clock's resolution.
  writeHeader("#define VALUE 8888888\n");
  llvm::Expected<std::string> second = nvrtc::compileToPTX(source, "k.cu", o);
  ASSERT_TRUE(!!second) << llvm::toString(second.takeError());
  EXPECT_NE(second->find("8888888"), std::string::npos) << *second;
}

TEST_F(NvrtcTest, BadArchitecture) {
  llvm::Expected<std::string> ptx =
      nvrtc::compileToPTX(kBf16Kernel, "scale.cu", options("volta"));
  ASSERT_FALSE(!!ptx);
  EXPECT_NE(llvm::toString(ptx.takeError()).find("volta"), std::string::npos);
}

} // namespace
