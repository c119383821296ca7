//===- SanitizerControl.cpp - kernels with a known bug, for the sanitizer -===//
//
// The negative controls of scripts/gpu-sanitize.sh: each mode launches a
// kernel with one deliberate bug that compute-sanitizer must report, so that
// a clean sanitizer run means something (the tool is attached, it sees the
// NVRTC-compiled modules, the script reads its verdict right).
//   sanitizer-control oob      memcheck: a write just past a buffer's end
//   sanitizer-control race     racecheck: shared memory read across warps
//                              without a barrier
//   sanitizer-control barrier  synccheck: the warps of a block wait at two
//                              different __syncthreads() of an if / else
// (compute-sanitizer 2025.3 on an H100 does not report a __syncthreads()
// that only some warps reach while the others exit, nor a __syncwarp()
// after half of the warp exited: from sm_70 on those barriers complete.)
// Without the sanitizer the bugs are harmless (the write lands in the
// allocation's padding, the barrier completes) and the program exits 0; it
// is not a test.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Runtime/Cuda.h"
#include "sparsetx/Runtime/Nvrtc.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <string>

using namespace sparsetx;

namespace {

constexpr const char *kSource = R"cuda(
extern "C" __global__ void oob(float *p, int n) {
  p[n + threadIdx.x] = 1.0f;
}
extern "C" __global__ void race(float *out) {
  __shared__ float s[128];
  s[threadIdx.x] = (float)threadIdx.x;
  out[threadIdx.x] = s[(threadIdx.x + 32) % 128];
}
extern "C" __global__ void barrier(float *out) {
  if (threadIdx.x < 32) {
    out[threadIdx.x] = 1.0f;
    __syncthreads();
  } else {
    out[threadIdx.x] = 2.0f;
    __syncthreads();
  }
}
)cuda";

int fail(llvm::Error err) {
  std::fprintf(stderr, "sanitizer-control: %s\n",
               llvm::toString(std::move(err)).c_str());
  return 1;
}

} // namespace

int main(int argc, char **argv) {
  const std::string modes[] = {"oob", "race", "barrier"};
  if (argc != 2 || std::find(std::begin(modes), std::end(modes), argv[1]) ==
                       std::end(modes)) {
    std::fprintf(stderr,
                 "usage: sanitizer-control oob|race|barrier\n");
    return 2;
  }
  llvm::Expected<cuda::Context> context = cuda::Context::create(0);
  if (!context)
    return fail(context.takeError());
  int cc = context->getComputeCapability();
  nvrtc::CompileOptions options;
  options.arch = "sm_" + std::to_string(cc) + (cc >= 90 ? "a" : "");
  options.cacheDir = "none";
  llvm::Expected<std::string> ptx =
      nvrtc::compileToPTX(kSource, "sanitizer_control.cu", options);
  if (!ptx)
    return fail(ptx.takeError());
  llvm::Expected<cuda::Module> module = cuda::Module::load(*ptx);
  if (!module)
    return fail(module.takeError());
  llvm::Expected<cuda::Function> fn = module->getFunction(argv[1]);
  if (!fn)
    return fail(fn.takeError());
  const int n = 1000;
  llvm::Expected<cuda::DeviceBuffer> buffer =
      cuda::DeviceBuffer::allocate(n * sizeof(float));
  if (!buffer)
    return fail(buffer.takeError());
  cuda::DevicePtr p = buffer->get();
  int count = n;
  void *oobArgs[] = {&p, &count};
  void *outArgs[] = {&p};
  bool isOob = !std::strcmp(argv[1], "oob");
  if (llvm::Error err = cuda::launch(*fn, {1, 1, 1}, {isOob ? 32u : 128u, 1, 1}, 0,
                                     nullptr, isOob ? llvm::ArrayRef<void *>(oobArgs)
                                                    : llvm::ArrayRef<void *>(outArgs)))
    return fail(std::move(err));
  if (llvm::Error err = context->synchronize())
    return fail(std::move(err));
  std::printf("sanitizer-control %s: ran\n", argv[1]);
  return 0;
}
