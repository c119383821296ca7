//===- CudaTest.cpp - the checked CUDA driver layer on a GPU --------------===//
//
// Skipped (with the reason) where no driver or device is present; on the GPU
// machine these load NVRTC output and run it.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Runtime/Cuda.h"
#include "sparsetx/Runtime/Nvrtc.h"

#include "gtest/gtest.h"

#include <numeric>

using namespace sparsetx;

namespace {

#define ASSERT_NO_ERROR(expr)                                                  \
  do {                                                                         \
    if (llvm::Error err = (expr))                                              \
      FAIL() << #expr << ": " << llvm::toString(std::move(err));               \
  } while (false)

template <typename T> T unwrap(llvm::Expected<T> value, const char *what) {
  if (!value) {
    ADD_FAILURE() << what << ": " << llvm::toString(value.takeError());
    return T();
  }
  return std::move(*value);
}

constexpr const char *kVectorAdd = R"cuda(
extern "C" __global__ void vector_add(const float *a, const float *b, float *c,
                                      int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n)
    c[i] = a[i] + b[i];
}
)cuda";

class CudaTest : public ::testing::Test {
protected:
  void SetUp() override {
    if (!cuda::isAvailable())
      GTEST_SKIP() << cuda::unavailableReason();
    llvm::Expected<cuda::Context> ctx = cuda::Context::create(0);
    ASSERT_TRUE(!!ctx) << llvm::toString(ctx.takeError());
    context = std::move(*ctx);
  }

  /// sm_<cc>, with the "a" suffix from sm_90 on (wgmma and friends).
  std::string arch() const {
    int cc = context.getComputeCapability();
    return "sm_" + std::to_string(cc) + (cc >= 90 ? "a" : "");
  }

  llvm::Expected<cuda::Module> vectorAddModule() const {
    nvrtc::CompileOptions options;
    options.arch = arch();
    options.cacheDir = "none";
    llvm::Expected<std::string> ptx =
        nvrtc::compileToPTX(kVectorAdd, "vector_add.cu", options);
    if (!ptx)
      return ptx.takeError();
    return cuda::Module::load(*ptx);
  }

  cuda::Context context;
};

TEST_F(CudaTest, DeviceProperties) {
  EXPECT_FALSE(context.getDeviceName().empty());
  EXPECT_GE(context.getComputeCapability(), 50);
  EXPECT_GT(context.getNumSMs(), 0);
  EXPECT_GE(context.getSharedMemoryPerBlockOptin(), size_t(48 * 1024));
  llvm::Expected<cuda::Context> missing = cuda::Context::create(1 << 20);
  ASSERT_FALSE(!!missing);
  llvm::consumeError(missing.takeError());
  // Creating a context again is harmless (the primary context is shared).
  llvm::Expected<cuda::Context> again = cuda::Context::create(0);
  ASSERT_TRUE(!!again) << llvm::toString(again.takeError());
}

TEST_F(CudaTest, CopyRoundTripAndFill) {
  const size_t n = 1000;
  std::vector<float> host(n);
  std::iota(host.begin(), host.end(), 0.5f);
  cuda::DeviceBuffer buffer =
      unwrap(cuda::DeviceBuffer::allocate(n * sizeof(float)), "allocate");
  ASSERT_NE(buffer.get(), 0u);
  ASSERT_EQ(buffer.size(), n * sizeof(float));
  ASSERT_NO_ERROR(buffer.copyFromHost(host.data(), n * sizeof(float)));
  std::vector<float> back(n, -1);
  ASSERT_NO_ERROR(buffer.copyToHost(back.data(), n * sizeof(float)));
  EXPECT_EQ(back, host);

  // Offsets.
  float patch[2] = {-7, -8};
  ASSERT_NO_ERROR(buffer.copyFromHost(patch, sizeof(patch), 10 * sizeof(float)));
  float readBack[3];
  ASSERT_NO_ERROR(buffer.copyToHost(readBack, sizeof(readBack), 9 * sizeof(float)));
  EXPECT_EQ(readBack[0], host[9]);
  EXPECT_EQ(readBack[1], -7);
  EXPECT_EQ(readBack[2], -8);

  ASSERT_NO_ERROR(buffer.fill(0xFF));
  std::vector<uint8_t> bytes(n * sizeof(float), 0);
  ASSERT_NO_ERROR(buffer.copyToHost(bytes.data(), bytes.size()));
  for (uint8_t b : bytes)
    ASSERT_EQ(b, 0xFF);

  // Out of range is an error, not a device fault.
  llvm::Error outside = buffer.copyToHost(bytes.data(), 8, n * sizeof(float) - 4);
  ASSERT_TRUE(!!outside);
  EXPECT_NE(llvm::toString(std::move(outside)).find("outside a buffer"),
            std::string::npos);

  // Moves transfer ownership.
  cuda::DeviceBuffer moved = std::move(buffer);
  EXPECT_EQ(buffer.get(), 0u);
  EXPECT_EQ(moved.size(), n * sizeof(float));
  cuda::DeviceBuffer empty = unwrap(cuda::DeviceBuffer::allocate(0), "allocate 0");
  EXPECT_EQ(empty.size(), 0u);
}

TEST_F(CudaTest, VectorAdd) {
  cuda::Module module = unwrap(vectorAddModule(), "vector_add module");
  cuda::Function fn = unwrap(module.getFunction("vector_add"), "getFunction");
  ASSERT_NE(fn, nullptr);

  int n = 100003;
  std::vector<float> a(n), b(n), c(n, 0);
  for (int i = 0; i < n; ++i) {
    a[i] = 0.25f * i;
    b[i] = 1.0f - i;
  }
  size_t bytes = n * sizeof(float);
  cuda::DeviceBuffer da = unwrap(cuda::DeviceBuffer::allocate(bytes), "a"),
                     db = unwrap(cuda::DeviceBuffer::allocate(bytes), "b"),
                     dc = unwrap(cuda::DeviceBuffer::allocate(bytes), "c");
  ASSERT_NO_ERROR(da.copyFromHost(a.data(), bytes));
  ASSERT_NO_ERROR(db.copyFromHost(b.data(), bytes));
  ASSERT_NO_ERROR(dc.fill(0xFF)); // Poison: NaNs wherever the kernel misses.
  cuda::DevicePtr pa = da.get(), pb = db.get(), pc = dc.get();
  void *args[] = {&pa, &pb, &pc, &n};
  unsigned block = 256, grid = (n + block - 1) / block;
  ASSERT_NO_ERROR(cuda::launch(fn, {grid, 1, 1}, {block, 1, 1}, 0, nullptr, args));
  ASSERT_NO_ERROR(context.synchronize());
  ASSERT_NO_ERROR(dc.copyToHost(c.data(), bytes));
  for (int i = 0; i < n; ++i)
    ASSERT_EQ(c[i], a[i] + b[i]) << "at " << i;

  // Dynamic shared memory above 48 KiB needs the attribute.
  if (context.getSharedMemoryPerBlockOptin() >= 64 * 1024)
    ASSERT_NO_ERROR(cuda::setMaxDynamicSharedMemory(fn, 64 * 1024));

  // A bad launch is reported by the launch.
  llvm::Error bad =
      cuda::launch(fn, {1, 1, 1}, {4096, 1, 1}, 0, nullptr, args);
  ASSERT_TRUE(!!bad);
  std::string message = llvm::toString(std::move(bad));
  EXPECT_EQ(message.rfind("cuLaunchKernel: CUDA_ERROR_", 0), 0u) << message;

  llvm::Expected<cuda::Function> missing = module.getFunction("no_such_kernel");
  ASSERT_FALSE(!!missing);
  message = llvm::toString(missing.takeError());
  EXPECT_EQ(message.rfind("cuModuleGetFunction: CUDA_ERROR_NOT_FOUND: ", 0), 0u)
      << message;
}

TEST_F(CudaTest, BadPtxCarriesTheJitLog) {
  std::string ptx = ".version 8.0\n"
                    ".target sm_80\n"
                    ".address_size 64\n"
                    ".visible .entry broken()\n"
                    "{\n"
                    "  .reg .b32 %r<2>;\n"
                    "  mov.b32 %r1, %undefined_register;\n"
                    "  ret;\n"
                    "}\n";
  llvm::Expected<cuda::Module> module = cuda::Module::load(ptx);
  ASSERT_FALSE(!!module);
  std::string message = llvm::toString(module.takeError());
  EXPECT_EQ(message.rfind("cuModuleLoadDataEx: CUDA_ERROR_INVALID_PTX: ", 0), 0u)
      << message;
  // The JIT log (ptxas) names the line and the undefined identifier.
  EXPECT_NE(message.find("\n"), std::string::npos) << message;
  EXPECT_NE(message.find("line 7"), std::string::npos) << message;
  EXPECT_NE(message.find("undefined_register"), std::string::npos) << message;
}

TEST_F(CudaTest, TimeRuns) {
  cuda::Module module = unwrap(vectorAddModule(), "vector_add module");
  cuda::Function fn = unwrap(module.getFunction("vector_add"), "getFunction");
  int n = 1 << 24;
  size_t bytes = size_t(n) * sizeof(float);
  cuda::DeviceBuffer da = unwrap(cuda::DeviceBuffer::allocate(bytes), "a"),
                     db = unwrap(cuda::DeviceBuffer::allocate(bytes), "b"),
                     dc = unwrap(cuda::DeviceBuffer::allocate(bytes), "c");
  cuda::DevicePtr pa = da.get(), pb = db.get(), pc = dc.get();
  void *args[] = {&pa, &pb, &pc, &n};
  unsigned block = 256, grid = (n + block - 1) / block;
  int calls = 0;
  llvm::Expected<std::vector<float>> times = cuda::timeRuns(
      [&]() -> llvm::Error {
        ++calls;
        return cuda::launch(fn, {grid, 1, 1}, {block, 1, 1}, 0, nullptr, args);
      },
      /*warmup=*/2, /*repeats=*/5);
  ASSERT_TRUE(!!times) << llvm::toString(times.takeError());
  EXPECT_EQ(calls, 7);
  ASSERT_EQ(times->size(), 5u);
  for (float ms : *times) {
    EXPECT_GT(ms, 0.0f);
    EXPECT_LT(ms, 1000.0f);
  }

  // An error from the body stops the timing and comes back.
  llvm::Expected<std::vector<float>> failed = cuda::timeRuns(
      []() -> llvm::Error {
        return llvm::createStringError(llvm::inconvertibleErrorCode(), "boom");
      },
      0, 3);
  ASSERT_FALSE(!!failed);
  EXPECT_EQ(llvm::toString(failed.takeError()), "boom");
}

// Runs on machines without CUDA: every entry point fails cleanly.
TEST(CudaUnavailable, ErrorsInsteadOfCrashes) {
  if (cuda::isAvailable())
    GTEST_SKIP() << "CUDA is available";
  EXPECT_FALSE(cuda::unavailableReason().empty());
  llvm::Expected<cuda::Context> ctx = cuda::Context::create(0);
  ASSERT_FALSE(!!ctx);
  std::string message = llvm::toString(ctx.takeError());
  EXPECT_EQ(message, "CUDA unavailable: " + cuda::unavailableReason());
  llvm::Expected<cuda::DeviceBuffer> buffer = cuda::DeviceBuffer::allocate(16);
  ASSERT_FALSE(!!buffer);
  llvm::consumeError(buffer.takeError());
  llvm::Expected<cuda::Module> module = cuda::Module::load("garbage");
  ASSERT_FALSE(!!module);
  llvm::consumeError(module.takeError());
}

} // namespace
