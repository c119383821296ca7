//===- Cuda.h - the CUDA driver API, checked ---------------------*- C++ -*-===//
//
// A thin, checked layer over the CUDA driver API. libcuda is loaded with
// dlopen at first use, so every sparsetx binary starts (and the GPU tests skip
// themselves) on machines without a driver; nothing links the CUDA runtime.
// Every failing call becomes an llvm::Error naming the call and the CUDA error
// (e.g. "cuModuleLoadData: CUDA_ERROR_INVALID_PTX: a PTX JIT compilation
// failed" plus the JIT log where there is one).
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_RUNTIME_CUDA_H
#define SPARSETX_RUNTIME_CUDA_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace sparsetx::cuda {

/// Opaque driver handles (CUdeviceptr, CUfunction, CUstream, CUevent).
using DevicePtr = uint64_t;
using Function = void *;
using Stream = void *;

/// True when libcuda.so.1 loads and at least one device is present. Cheap
/// after the first call.
bool isAvailable();
/// Why isAvailable() is false ("libcuda.so.1 not found", "no CUDA device").
std::string unavailableReason();

/// The primary context of one device, made current on the calling thread.
class Context {
public:
  static llvm::Expected<Context> create(int device = 0);
  std::string getDeviceName() const { return name; }
  /// e.g. 90 for sm_90.
  int getComputeCapability() const { return computeCapability; }
  int getNumSMs() const { return numSMs; }
  size_t getSharedMemoryPerBlockOptin() const { return sharedOptin; }
  llvm::Error synchronize();

private:
  int device = 0;
  std::string name;
  int computeCapability = 0, numSMs = 0;
  size_t sharedOptin = 0;
};

/// Streaming multiprocessors of the current context's device (needs a
/// current context, e.g. from Context::create).
llvm::Expected<int> currentDeviceMultiprocessorCount();

/// Device memory, freed on destruction.
/// Raw device memory for callers that manage their own (the model's caching
/// allocator). allocateRaw(0) gives 0; freeRaw(0) does nothing.
llvm::Expected<DevicePtr> allocateRaw(size_t bytes);
void freeRaw(DevicePtr ptr);
/// Synchronous copies between host and device.
llvm::Error copyToDevice(DevicePtr dst, const void *src, size_t bytes);
llvm::Error copyToHost(void *dst, DevicePtr src, size_t bytes);
/// Enqueued on `stream`: a device-to-device copy, and `count` 32-bit words
/// set to `value`.
llvm::Error copyOnDevice(DevicePtr dst, DevicePtr src, size_t bytes,
                         Stream stream = nullptr);
llvm::Error fill32(DevicePtr dst, uint32_t value, size_t count,
                   Stream stream = nullptr);
/// Enqueued on `stream`: a host-to-device copy (`src` must stay valid until
/// the copy has run; pageable memory makes the call wait for it).
llvm::Error copyToDeviceAsync(DevicePtr dst, const void *src, size_t bytes,
                              Stream stream);

/// A stream of the current context, ordered with the legacy default stream.
llvm::Expected<Stream> createStream();
void destroyStream(Stream stream);
llvm::Error synchronizeStream(Stream stream);

/// CUDA graphs: the work enqueued on `stream` between beginCapture and
/// endCapture is recorded (not run) and instantiated; Graph::launch replays
/// it with the same arguments (pointers, so current memory contents). The
/// legacy default stream cannot be captured.
class Graph {
public:
  Graph() = default;
  Graph(Graph &&o) noexcept;
  Graph &operator=(Graph &&o) noexcept;
  Graph(const Graph &) = delete;
  Graph &operator=(const Graph &) = delete;
  ~Graph();
  llvm::Error launch(Stream stream) const;

private:
  friend llvm::Expected<Graph> endCapture(Stream stream);
  void *exec = nullptr;
};
llvm::Error beginCapture(Stream stream);
llvm::Expected<Graph> endCapture(Stream stream);

/// CUDA events, for timing work on a stream and ordering streams.
using Event = void *;
llvm::Expected<Event> createEvent();
void destroyEvent(Event event);
llvm::Error recordEvent(Event event, Stream stream = nullptr);
/// Milliseconds between two recorded events; waits for `end`.
llvm::Expected<float> elapsedMs(Event start, Event end);
/// Work enqueued on `stream` after this call waits until the work before
/// `event`'s latest record has run (on whichever stream it was recorded):
/// the ordering of one stream after another without the host waiting. A
/// later record of `event` does not affect waits already enqueued.
llvm::Error waitForEvent(Stream stream, Event event);

/// Free and total bytes of the current device.
llvm::Expected<std::pair<size_t, size_t>> memoryInfo();

class DeviceBuffer {
public:
  static llvm::Expected<DeviceBuffer> allocate(size_t bytes);
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer &&o) noexcept;
  DeviceBuffer &operator=(DeviceBuffer &&o) noexcept;
  ~DeviceBuffer();

  DevicePtr get() const { return ptr; }
  size_t size() const { return bytes; }
  llvm::Error copyFromHost(const void *src, size_t count, size_t offset = 0);
  llvm::Error copyToHost(void *dst, size_t count, size_t offset = 0) const;
  /// Sets every byte (e.g. 0xFF to poison outputs before a run).
  llvm::Error fill(uint8_t byte);

private:
  DevicePtr ptr = 0;
  size_t bytes = 0;
};

/// A loaded PTX or cubin module.
class Module {
public:
  /// JIT-loads PTX (or loads a cubin); the error carries the JIT log.
  static llvm::Expected<Module> load(llvm::StringRef image);
  Module() = default;
  Module(Module &&o) noexcept;
  Module &operator=(Module &&o) noexcept;
  ~Module();

  llvm::Expected<Function> getFunction(llvm::StringRef name) const;

private:
  void *handle = nullptr;
};

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

/// Sets the function's dynamic shared memory limit (needed above 48 KiB).
llvm::Error setMaxDynamicSharedMemory(Function fn, int bytes);

/// Launches `fn`; `args` are pointers to each kernel argument, in order.
/// Checks the launch; does not synchronize.
/// With `overlap` (programmatic dependent launch, sm_90 and later; callers
/// pass false before that) the kernel may start before the stream's previous
/// kernel ends: it must execute griddepcontrol.wait before it reads anything
/// an earlier kernel of the stream writes, and before it writes anything
/// they read; what it does before (load weights, walk tables) overlaps its
/// predecessor's tail. Its griddepcontrol.launch_dependents lets the next
/// such kernel start early.
llvm::Error launch(Function fn, Dim3 grid, Dim3 block, unsigned sharedBytes,
                   Stream stream, llvm::ArrayRef<void *> args,
                   bool overlap = false);

/// The same as a cooperative launch: every CTA of the grid is resident at
/// once (or the launch fails), so that they may wait for each other.
llvm::Error launchCooperative(Function fn, Dim3 grid, Dim3 block,
                              unsigned sharedBytes, Stream stream,
                              llvm::ArrayRef<void *> args);

/// How many CTAs of `fn` with this block size and dynamic shared memory fit
/// on one SM at once.
llvm::Expected<int> maxActiveBlocksPerSM(Function fn, int blockThreads,
                                         unsigned sharedBytes);

/// Times `body` (which enqueues work on the default stream) with CUDA events:
/// `warmup` untimed runs, then `repeats` timed ones; returns each run's
/// milliseconds.
llvm::Expected<std::vector<float>>
timeRuns(llvm::function_ref<llvm::Error()> body, int warmup, int repeats);

} // namespace sparsetx::cuda

#endif // SPARSETX_RUNTIME_CUDA_H
