//===- KernelSources.cpp - the kernel templates, embedded -----------------===//
//
// The .cuh templates of codegen/kernels/ compiled into the library as string
// literals (KernelSources.inc is generated at build time), handed to NVRTC as
// in-memory headers: a carried binary needs no source tree.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Codegen/CudaEmitter.h"

namespace sparsetx::codegen {

const std::vector<std::pair<std::string, std::string>> &kernelHeaders() {
  static const std::vector<std::pair<std::string, std::string>> headers = {
#include "KernelSources.inc"
  };
  return headers;
}

} // namespace sparsetx::codegen
