//===- Cuda.cpp - the CUDA driver API, checked ----------------------------===//
//
// libcuda.so.1 is opened with dlopen on first use and every entry point is
// resolved with dlsym, so nothing links libcuda: binaries start (and list their
// tests) on machines with no driver, and report why CUDA is unavailable
// instead of failing to load. cuda.h is included for its types only. The
// symbols resolved are the versioned ones that cuda.h maps the plain names to
// (cuMemAlloc -> cuMemAlloc_v2, ...), so the ABI is the one the header
// describes; decltype of the header's declaration types each pointer.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Runtime/Cuda.h"

#include <cuda.h>
#include <dlfcn.h>

using namespace sparsetx;
using namespace sparsetx::cuda;

namespace {

// X(member, symbol, name in errors)
#define SPARSETX_CUDA_DRIVER_FUNCTIONS(X)                                      \
  X(init, cuInit, "cuInit")                                                    \
  X(getErrorName, cuGetErrorName, "cuGetErrorName")                            \
  X(getErrorString, cuGetErrorString, "cuGetErrorString")                      \
  X(deviceGetCount, cuDeviceGetCount, "cuDeviceGetCount")                      \
  X(deviceGet, cuDeviceGet, "cuDeviceGet")                                     \
  X(deviceGetName, cuDeviceGetName, "cuDeviceGetName")                         \
  X(deviceGetAttribute, cuDeviceGetAttribute, "cuDeviceGetAttribute")          \
  X(primaryCtxRetain, cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain")    \
  X(ctxSetCurrent, cuCtxSetCurrent, "cuCtxSetCurrent")                         \
  X(ctxSynchronize, cuCtxSynchronize, "cuCtxSynchronize")                      \
  X(ctxGetDevice, cuCtxGetDevice, "cuCtxGetDevice")                            \
  X(memAlloc, cuMemAlloc_v2, "cuMemAlloc")                                     \
  X(memFree, cuMemFree_v2, "cuMemFree")                                        \
  X(memcpyHtoD, cuMemcpyHtoD_v2, "cuMemcpyHtoD")                               \
  X(memcpyDtoH, cuMemcpyDtoH_v2, "cuMemcpyDtoH")                               \
  X(memsetD8, cuMemsetD8_v2, "cuMemsetD8")                                     \
  X(memsetD32Async, cuMemsetD32Async, "cuMemsetD32Async")                      \
  X(memcpyDtoDAsync, cuMemcpyDtoDAsync_v2, "cuMemcpyDtoDAsync")                \
  X(memGetInfo, cuMemGetInfo_v2, "cuMemGetInfo")                               \
  X(moduleLoadDataEx, cuModuleLoadDataEx, "cuModuleLoadDataEx")                \
  X(moduleUnload, cuModuleUnload, "cuModuleUnload")                            \
  X(moduleGetFunction, cuModuleGetFunction, "cuModuleGetFunction")             \
  X(funcSetAttribute, cuFuncSetAttribute, "cuFuncSetAttribute")                \
  X(launchKernel, cuLaunchKernel, "cuLaunchKernel")                            \
  X(launchCooperativeKernel, cuLaunchCooperativeKernel,                        \
    "cuLaunchCooperativeKernel")                                               \
  X(launchKernelEx, cuLaunchKernelEx, "cuLaunchKernelEx")                      \
  X(occupancyMaxActiveBlocks, cuOccupancyMaxActiveBlocksPerMultiprocessor,     \
    "cuOccupancyMaxActiveBlocksPerMultiprocessor")                             \
  X(eventCreate, cuEventCreate, "cuEventCreate")                               \
  X(eventRecord, cuEventRecord, "cuEventRecord")                               \
  X(eventSynchronize, cuEventSynchronize, "cuEventSynchronize")                \
  X(eventElapsedTime, cuEventElapsedTime_v2, "cuEventElapsedTime")             \
  X(eventDestroy, cuEventDestroy_v2, "cuEventDestroy")                        \
  X(memcpyHtoDAsync, cuMemcpyHtoDAsync_v2, "cuMemcpyHtoDAsync")                \
  X(streamCreate, cuStreamCreate, "cuStreamCreate")                            \
  X(streamDestroy, cuStreamDestroy_v2, "cuStreamDestroy")                      \
  X(streamSynchronize, cuStreamSynchronize, "cuStreamSynchronize")             \
  X(streamWaitEvent, cuStreamWaitEvent, "cuStreamWaitEvent")                   \
  X(streamBeginCapture, cuStreamBeginCapture_v2, "cuStreamBeginCapture")       \
  X(streamEndCapture, cuStreamEndCapture, "cuStreamEndCapture")                \
  X(graphInstantiate, cuGraphInstantiateWithFlags,                            \
    "cuGraphInstantiateWithFlags")                                             \
  X(graphLaunch, cuGraphLaunch, "cuGraphLaunch")                               \
  X(graphDestroy, cuGraphDestroy, "cuGraphDestroy")                            \
  X(graphExecDestroy, cuGraphExecDestroy, "cuGraphExecDestroy")

struct Driver {
#define SPARSETX_DECLARE(member, symbol, name)                                 \
  decltype(&::symbol) member = nullptr;
  SPARSETX_CUDA_DRIVER_FUNCTIONS(SPARSETX_DECLARE)
#undef SPARSETX_DECLARE
  /// Empty when the driver loaded, initialized and has a device.
  std::string unavailableReason;
};

std::string errorText(const Driver &d, CUresult result) {
  const char *name = nullptr, *description = nullptr;
  if (d.getErrorName(result, &name) != CUDA_SUCCESS || !name)
    return "CUresult " + std::to_string(static_cast<int>(result)) +
           ": unrecognized error code";
  if (d.getErrorString(result, &description) != CUDA_SUCCESS || !description)
    description = "no description";
  return std::string(name) + ": " + description;
}

Driver loadDriver() {
  Driver d;
  // Never dlclose'd: destructors of static buffers may still call into it.
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *why = dlerror();
    d.unavailableReason =
        std::string("libcuda.so.1 not found") + (why ? std::string(" (") + why + ")" : "");
    return d;
  }
#define SPARSETX_RESOLVE(member, symbol, name)                                 \
  d.member = reinterpret_cast<decltype(d.member)>(dlsym(lib, #symbol));        \
  if (!d.member) {                                                             \
    d.unavailableReason = "libcuda.so.1 has no " #symbol                       \
                          " (driver older than CUDA 13?)";                     \
    return d;                                                                  \
  }
  SPARSETX_CUDA_DRIVER_FUNCTIONS(SPARSETX_RESOLVE)
#undef SPARSETX_RESOLVE

  if (CUresult r = d.init(0); r != CUDA_SUCCESS) {
    d.unavailableReason = "cuInit: " + errorText(d, r);
    return d;
  }
  int count = 0;
  if (CUresult r = d.deviceGetCount(&count); r != CUDA_SUCCESS) {
    d.unavailableReason = "cuDeviceGetCount: " + errorText(d, r);
    return d;
  }
  if (count == 0)
    d.unavailableReason = "no CUDA device";
  return d;
}

const Driver &driver() {
  static const Driver d = loadDriver();
  return d;
}

llvm::Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 message.str());
}

/// "<call>: <CUDA_ERROR_NAME>: <description>[<detail>]".
llvm::Error check(CUresult result, llvm::StringRef call,
                  const llvm::Twine &detail = "") {
  if (result == CUDA_SUCCESS)
    return llvm::Error::success();
  return makeError(call + ": " + errorText(driver(), result) + detail);
}

/// The driver, or the error every entry point returns without one.
llvm::Expected<const Driver &> getDriver() {
  const Driver &d = driver();
  if (!d.unavailableReason.empty())
    return makeError("CUDA unavailable: " + d.unavailableReason);
  return d;
}

} // namespace

bool cuda::isAvailable() { return driver().unavailableReason.empty(); }

std::string cuda::unavailableReason() { return driver().unavailableReason; }

//===----------------------------------------------------------------------===//
// Context
//===----------------------------------------------------------------------===//

llvm::Expected<Context> Context::create(int device) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  int count = 0;
  if (llvm::Error e = check(d->deviceGetCount(&count), "cuDeviceGetCount"))
    return std::move(e);
  if (device < 0 || device >= count)
    return makeError("Context::create: no CUDA device " +
                     llvm::Twine(device) + " (" + llvm::Twine(count) +
                     " present)");
  CUdevice dev;
  if (llvm::Error e = check(d->deviceGet(&dev, device), "cuDeviceGet"))
    return std::move(e);
  // The primary context is retained for the life of the process (never
  // released): it is the one the CUDA runtime, cuBLASLt and PyTorch share, and
  // buffers and modules outlive any one Context value.
  CUcontext ctx;
  if (llvm::Error e =
          check(d->primaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain"))
    return std::move(e);
  if (llvm::Error e = check(d->ctxSetCurrent(ctx), "cuCtxSetCurrent"))
    return std::move(e);

  Context context;
  context.device = device;
  char name[256] = {0};
  if (llvm::Error e =
          check(d->deviceGetName(name, sizeof(name) - 1, dev), "cuDeviceGetName"))
    return std::move(e);
  context.name = name;
  auto attribute = [&](CUdevice_attribute attr, int &value) {
    return check(d->deviceGetAttribute(&value, attr, dev),
                 "cuDeviceGetAttribute");
  };
  int major = 0, minor = 0, smem = 0;
  if (llvm::Error e = llvm::joinErrors(
          llvm::joinErrors(
              attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, major),
              attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, minor)),
          llvm::joinErrors(
              attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
                        context.numSMs),
              attribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                        smem))))
    return std::move(e);
  context.computeCapability = major * 10 + minor;
  context.sharedOptin = static_cast<size_t>(smem);
  return context;
}

llvm::Expected<int> cuda::currentDeviceMultiprocessorCount() {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  CUdevice dev;
  if (llvm::Error e = check(d->ctxGetDevice(&dev), "cuCtxGetDevice"))
    return std::move(e);
  int count = 0;
  if (llvm::Error e = check(d->deviceGetAttribute(
                                &count, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev),
                            "cuDeviceGetAttribute"))
    return std::move(e);
  return count;
}

llvm::Error Context::synchronize() {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  return check(d->ctxSynchronize(), "cuCtxSynchronize");
}

//===----------------------------------------------------------------------===//
// Raw device memory
//===----------------------------------------------------------------------===//

llvm::Expected<DevicePtr> cuda::allocateRaw(size_t bytes) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  if (bytes == 0)
    return DevicePtr(0);
  CUdeviceptr ptr = 0;
  if (llvm::Error e = check(d->memAlloc(&ptr, bytes), "cuMemAlloc",
                            " (" + llvm::Twine(bytes) + " bytes)"))
    return std::move(e);
  return DevicePtr(ptr);
}

void cuda::freeRaw(DevicePtr ptr) {
  if (ptr)
    driver().memFree(ptr);
}

llvm::Error cuda::copyToDevice(DevicePtr dst, const void *src, size_t bytes) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  if (bytes == 0)
    return llvm::Error::success();
  return check(d->memcpyHtoD(dst, src, bytes), "cuMemcpyHtoD");
}

llvm::Error cuda::copyToHost(void *dst, DevicePtr src, size_t bytes) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  if (bytes == 0)
    return llvm::Error::success();
  return check(d->memcpyDtoH(dst, src, bytes), "cuMemcpyDtoH");
}

llvm::Error cuda::copyOnDevice(DevicePtr dst, DevicePtr src, size_t bytes,
                               Stream stream) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  if (bytes == 0 || dst == src)
    return llvm::Error::success();
  return check(d->memcpyDtoDAsync(dst, src, bytes,
                                  static_cast<CUstream>(stream)),
               "cuMemcpyDtoDAsync");
}

llvm::Error cuda::fill32(DevicePtr dst, uint32_t value, size_t count,
                         Stream stream) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  if (count == 0)
    return llvm::Error::success();
  return check(d->memsetD32Async(dst, value, count,
                                 static_cast<CUstream>(stream)),
               "cuMemsetD32Async");
}

llvm::Error cuda::copyToDeviceAsync(DevicePtr dst, const void *src,
                                    size_t bytes, Stream stream) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  if (bytes == 0)
    return llvm::Error::success();
  return check(d->memcpyHtoDAsync(dst, src, bytes, static_cast<CUstream>(stream)),
               "cuMemcpyHtoDAsync");
}

llvm::Expected<cuda::Stream> cuda::createStream() {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  CUstream stream = nullptr;
  // CU_STREAM_DEFAULT: ordered with the legacy default stream, so that the
  // synchronous copies (and work others enqueue there) see this stream's.
  if (llvm::Error e = check(d->streamCreate(&stream, CU_STREAM_DEFAULT),
                            "cuStreamCreate"))
    return std::move(e);
  return static_cast<Stream>(stream);
}

void cuda::destroyStream(Stream stream) {
  if (stream)
    driver().streamDestroy(static_cast<CUstream>(stream));
}

llvm::Error cuda::synchronizeStream(Stream stream) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  return check(d->streamSynchronize(static_cast<CUstream>(stream)),
               "cuStreamSynchronize");
}

llvm::Error cuda::waitForEvent(Stream stream, Event event) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  return check(d->streamWaitEvent(static_cast<CUstream>(stream),
                                  static_cast<CUevent>(event), 0),
               "cuStreamWaitEvent");
}

llvm::Error cuda::beginCapture(Stream stream) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  // Relaxed: other threads' unrelated driver calls (the NCCL watchdog's
  // queries) must not invalidate the capture.
  return check(d->streamBeginCapture(static_cast<CUstream>(stream),
                                     CU_STREAM_CAPTURE_MODE_RELAXED),
               "cuStreamBeginCapture");
}

llvm::Expected<Graph> cuda::endCapture(Stream stream) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  CUgraph graph = nullptr;
  if (llvm::Error e = check(d->streamEndCapture(static_cast<CUstream>(stream), &graph),
                            "cuStreamEndCapture"))
    return std::move(e);
  CUgraphExec exec = nullptr;
  llvm::Error e = check(d->graphInstantiate(&exec, graph, 0),
                        "cuGraphInstantiateWithFlags");
  d->graphDestroy(graph);
  if (e)
    return std::move(e);
  Graph g;
  g.exec = exec;
  return g;
}

Graph::Graph(Graph &&o) noexcept : exec(o.exec) { o.exec = nullptr; }
Graph &Graph::operator=(Graph &&o) noexcept {
  if (this != &o) {
    if (exec)
      driver().graphExecDestroy(static_cast<CUgraphExec>(exec));
    exec = o.exec;
    o.exec = nullptr;
  }
  return *this;
}
Graph::~Graph() {
  if (exec)
    driver().graphExecDestroy(static_cast<CUgraphExec>(exec));
}

llvm::Error Graph::launch(Stream stream) const {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  if (!exec)
    return makeError("cuGraphLaunch: no graph was captured");
  return check(d->graphLaunch(static_cast<CUgraphExec>(exec),
                              static_cast<CUstream>(stream)),
               "cuGraphLaunch");
}

llvm::Expected<cuda::Event> cuda::createEvent() {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  CUevent event = nullptr;
  if (llvm::Error e = check(d->eventCreate(&event, CU_EVENT_DEFAULT),
                            "cuEventCreate"))
    return std::move(e);
  return static_cast<Event>(event);
}

void cuda::destroyEvent(Event event) {
  if (event)
    driver().eventDestroy(static_cast<CUevent>(event));
}

llvm::Error cuda::recordEvent(Event event, Stream stream) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  return check(d->eventRecord(static_cast<CUevent>(event),
                              static_cast<CUstream>(stream)),
               "cuEventRecord");
}

llvm::Expected<float> cuda::elapsedMs(Event start, Event end) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  if (llvm::Error e = check(d->eventSynchronize(static_cast<CUevent>(end)),
                            "cuEventSynchronize"))
    return std::move(e);
  float ms = 0;
  if (llvm::Error e = check(d->eventElapsedTime(&ms, static_cast<CUevent>(start),
                                                static_cast<CUevent>(end)),
                            "cuEventElapsedTime"))
    return std::move(e);
  return ms;
}

llvm::Expected<std::pair<size_t, size_t>> cuda::memoryInfo() {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  size_t freeBytes = 0, totalBytes = 0;
  if (llvm::Error e = check(d->memGetInfo(&freeBytes, &totalBytes),
                            "cuMemGetInfo"))
    return std::move(e);
  return std::make_pair(freeBytes, totalBytes);
}

// DeviceBuffer
//===----------------------------------------------------------------------===//

llvm::Expected<DeviceBuffer> DeviceBuffer::allocate(size_t bytes) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  DeviceBuffer buffer;
  if (bytes == 0)
    return buffer; // cuMemAlloc rejects 0 bytes; an empty buffer is null.
  CUdeviceptr ptr = 0;
  if (llvm::Error e = check(d->memAlloc(&ptr, bytes), "cuMemAlloc",
                            " (" + llvm::Twine(bytes) + " bytes)"))
    return std::move(e);
  buffer.ptr = ptr;
  buffer.bytes = bytes;
  return buffer;
}

DeviceBuffer::DeviceBuffer(DeviceBuffer &&o) noexcept
    : ptr(o.ptr), bytes(o.bytes) {
  o.ptr = 0;
  o.bytes = 0;
}

DeviceBuffer &DeviceBuffer::operator=(DeviceBuffer &&o) noexcept {
  if (this != &o) {
    this->~DeviceBuffer();
    ptr = o.ptr;
    bytes = o.bytes;
    o.ptr = 0;
    o.bytes = 0;
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  // A destructor cannot report; a failing free here means the context is
  // already gone (process teardown) or corrupted by an earlier kernel fault,
  // which the next checked call reports.
  if (ptr)
    driver().memFree(ptr);
  ptr = 0;
  bytes = 0;
}

static llvm::Error checkRange(llvm::StringRef what, size_t offset,
                              size_t count, size_t bytes) {
  if (offset > bytes || count > bytes - offset)
    return makeError("DeviceBuffer::" + what + ": bytes [" +
                     llvm::Twine(offset) + ", " + llvm::Twine(offset + count) +
                     ") outside a buffer of " + llvm::Twine(bytes) + " bytes");
  return llvm::Error::success();
}

llvm::Error DeviceBuffer::copyFromHost(const void *src, size_t count,
                                       size_t offset) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  if (llvm::Error e = checkRange("copyFromHost", offset, count, bytes))
    return e;
  if (count == 0)
    return llvm::Error::success();
  return check(d->memcpyHtoD(ptr + offset, src, count), "cuMemcpyHtoD");
}

llvm::Error DeviceBuffer::copyToHost(void *dst, size_t count,
                                     size_t offset) const {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  if (llvm::Error e = checkRange("copyToHost", offset, count, bytes))
    return e;
  if (count == 0)
    return llvm::Error::success();
  return check(d->memcpyDtoH(dst, ptr + offset, count), "cuMemcpyDtoH");
}

llvm::Error DeviceBuffer::fill(uint8_t byte) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  if (bytes == 0)
    return llvm::Error::success();
  return check(d->memsetD8(ptr, byte, bytes), "cuMemsetD8");
}

//===----------------------------------------------------------------------===//
// Module
//===----------------------------------------------------------------------===//

llvm::Expected<Module> Module::load(llvm::StringRef image) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  // PTX must be NUL-terminated; a cubin does not mind the copy.
  std::string imageCopy = image.str();
  constexpr size_t kLogSize = 1 << 16;
  std::string errorLog(kLogSize, '\0'), infoLog(kLogSize, '\0');
  CUjit_option options[] = {
      CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
      CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES};
  void *values[] = {errorLog.data(), reinterpret_cast<void *>(kLogSize - 1),
                    infoLog.data(), reinterpret_cast<void *>(kLogSize - 1)};
  CUmodule handle = nullptr;
  CUresult r = d->moduleLoadDataEx(&handle, imageCopy.c_str(),
                                   std::size(options), options, values);
  if (r != CUDA_SUCCESS) {
    std::string log = errorLog.c_str();
    if (log.empty())
      log = infoLog.c_str();
    while (!log.empty() && log.back() == '\n')
      log.pop_back();
    return check(r, "cuModuleLoadDataEx", log.empty() ? "" : "\n" + log);
  }
  Module module;
  module.handle = handle;
  return module;
}

Module::Module(Module &&o) noexcept : handle(o.handle) { o.handle = nullptr; }

Module &Module::operator=(Module &&o) noexcept {
  if (this != &o) {
    this->~Module();
    handle = o.handle;
    o.handle = nullptr;
  }
  return *this;
}

Module::~Module() {
  if (handle)
    driver().moduleUnload(static_cast<CUmodule>(handle));
  handle = nullptr;
}

llvm::Expected<Function> Module::getFunction(llvm::StringRef name) const {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  if (!handle)
    return makeError("Module::getFunction: no module loaded");
  CUfunction fn = nullptr;
  std::string nameStr = name.str();
  if (llvm::Error e = check(d->moduleGetFunction(&fn, static_cast<CUmodule>(handle),
                                                 nameStr.c_str()),
                            "cuModuleGetFunction", " (kernel '" + name + "')"))
    return std::move(e);
  return static_cast<Function>(fn);
}

//===----------------------------------------------------------------------===//
// Launching and timing
//===----------------------------------------------------------------------===//

llvm::Error cuda::setMaxDynamicSharedMemory(Function fn, int bytes) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  return check(d->funcSetAttribute(static_cast<CUfunction>(fn),
                                   CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                   bytes),
               "cuFuncSetAttribute",
               " (max dynamic shared memory " + llvm::Twine(bytes) + " bytes)");
}

namespace {
/// " (grid XxYxZ, block XxYxZ, N bytes shared)" for launch errors.
std::string launchShape(cuda::Dim3 grid, cuda::Dim3 block, unsigned sharedBytes) {
  return (" (grid " + llvm::Twine(grid.x) + "x" + llvm::Twine(grid.y) + "x" +
          llvm::Twine(grid.z) + ", block " + llvm::Twine(block.x) + "x" +
          llvm::Twine(block.y) + "x" + llvm::Twine(block.z) + ", " +
          llvm::Twine(sharedBytes) + " bytes shared)")
      .str();
}
} // namespace

llvm::Error cuda::launch(Function fn, Dim3 grid, Dim3 block,
                         unsigned sharedBytes, Stream stream,
                         llvm::ArrayRef<void *> args, bool overlap) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  if (!overlap)
    return check(d->launchKernel(static_cast<CUfunction>(fn), grid.x, grid.y,
                                 grid.z, block.x, block.y, block.z,
                                 sharedBytes, static_cast<CUstream>(stream),
                                 const_cast<void **>(args.data()), nullptr),
                 "cuLaunchKernel", launchShape(grid, block, sharedBytes));
  CUlaunchAttribute attr{};
  attr.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
  attr.value.programmaticStreamSerializationAllowed = 1;
  CUlaunchConfig config{};
  config.gridDimX = grid.x;
  config.gridDimY = grid.y;
  config.gridDimZ = grid.z;
  config.blockDimX = block.x;
  config.blockDimY = block.y;
  config.blockDimZ = block.z;
  config.sharedMemBytes = sharedBytes;
  config.hStream = static_cast<CUstream>(stream);
  config.attrs = &attr;
  config.numAttrs = 1;
  return check(d->launchKernelEx(&config, static_cast<CUfunction>(fn),
                                 const_cast<void **>(args.data()), nullptr),
               "cuLaunchKernelEx", launchShape(grid, block, sharedBytes) +
                                       " (overlapping its predecessor)");
}

llvm::Error cuda::launchCooperative(Function fn, Dim3 grid, Dim3 block,
                                    unsigned sharedBytes, Stream stream,
                                    llvm::ArrayRef<void *> args) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  return check(d->launchCooperativeKernel(
                   static_cast<CUfunction>(fn), grid.x, grid.y, grid.z,
                   block.x, block.y, block.z, sharedBytes,
                   static_cast<CUstream>(stream),
                   const_cast<void **>(args.data())),
               "cuLaunchCooperativeKernel", launchShape(grid, block, sharedBytes));
}

llvm::Expected<int> cuda::maxActiveBlocksPerSM(Function fn, int blockThreads,
                                              unsigned sharedBytes) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  int blocks = 0;
  if (llvm::Error err =
          check(d->occupancyMaxActiveBlocks(&blocks, static_cast<CUfunction>(fn),
                                            blockThreads, sharedBytes),
                "cuOccupancyMaxActiveBlocksPerMultiprocessor"))
    return std::move(err);
  return blocks;
}

namespace {
/// Events destroyed on every path out of timeRuns.
struct Events {
  const Driver &d;
  std::vector<CUevent> events;
  ~Events() {
    for (CUevent e : events)
      d.eventDestroy(e);
  }
};
} // namespace

llvm::Expected<std::vector<float>>
cuda::timeRuns(llvm::function_ref<llvm::Error()> body, int warmup,
               int repeats) {
  llvm::Expected<const Driver &> d = getDriver();
  if (!d)
    return d.takeError();
  if (warmup < 0 || repeats < 0)
    return makeError("timeRuns: negative warmup or repeat count");
  for (int r = 0; r < warmup; ++r)
    if (llvm::Error e = body())
      return std::move(e);
  std::vector<float> times;
  if (repeats == 0)
    return times;

  // repeats + 1 events on stream 0, back to back: run r lies between events r
  // and r + 1, with nothing but the body between them.
  Events events{*d, {}};
  for (int r = 0; r <= repeats; ++r) {
    CUevent event;
    if (llvm::Error e = check(d->eventCreate(&event, CU_EVENT_DEFAULT),
                              "cuEventCreate"))
      return std::move(e);
    events.events.push_back(event);
  }
  if (llvm::Error e =
          check(d->eventRecord(events.events[0], nullptr), "cuEventRecord"))
    return std::move(e);
  for (int r = 0; r < repeats; ++r) {
    if (llvm::Error e = body())
      return std::move(e);
    if (llvm::Error e = check(d->eventRecord(events.events[r + 1], nullptr),
                              "cuEventRecord"))
      return std::move(e);
  }
  if (llvm::Error e = check(d->eventSynchronize(events.events.back()),
                            "cuEventSynchronize"))
    return std::move(e);
  for (int r = 0; r < repeats; ++r) {
    float ms = 0;
    if (llvm::Error e = check(d->eventElapsedTime(&ms, events.events[r],
                                                  events.events[r + 1]),
                              "cuEventElapsedTime"))
      return std::move(e);
    times.push_back(ms);
  }
  return times;
}
