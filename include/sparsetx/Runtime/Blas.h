//===- Blas.h - row-major fp32 GEMMs through cuBLASLt -----------*- C++ -*-===//
//
// cuBLASLt loaded with dlopen (like the driver, Cuda.cpp): binaries start on
// machines without it, and a CPU-only run never pays for loading it. Matrices
// are row-major in device memory: C is fp32; A and B are fp32 (an exact fp32
// GEMM) or both bf16 or both fp16 (tensor cores, fp32 accumulation: the
// model's mixed-precision modes). Every call is checked; errors name the
// call and cuBLAS's status.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_RUNTIME_BLAS_H
#define SPARSETX_RUNTIME_BLAS_H

#include "sparsetx/Runtime/Cuda.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <memory>

namespace sparsetx::cuda {

/// The element type of A and B and the arithmetic: exact fp32; fp32 operands
/// that cuBLAS may round to bf16 or tf32 inside the GEMM; bf16 or fp16
/// operands. Accumulation is fp32 in every mode.
enum class GemmMode { FP32, FP32FastBF16, FP32FastTF32, BF16, FP16 };

class Blas {
public:
  /// Needs a current context (Context::create). `workspaceBytes` of device
  /// memory are reserved for the GEMMs.
  static llvm::Expected<std::unique_ptr<Blas>>
  create(size_t workspaceBytes = size_t(32) << 20);
  ~Blas();

  /// C[m, n] = alpha op(A) op(B) + beta C, row-major, C fp32: A is [m, k]
  /// ([k, m] when transA), B is [k, n] ([n, k] when transB), of the mode's
  /// element type.
  /// With `bias` (fp32, n values, 0 for none) the epilogue adds bias[j] to
  /// every row's column j. Enqueued on `stream`.
  llvm::Error gemm(DevicePtr c, DevicePtr a, DevicePtr b, int64_t m, int64_t n,
                   int64_t k, bool transA, bool transB, float alpha,
                   float beta, GemmMode mode, DevicePtr bias = 0,
                   Stream stream = nullptr);

  struct Impl;

private:
  Blas() = default;
  std::unique_ptr<Impl> impl;
};

} // namespace sparsetx::cuda

#endif // SPARSETX_RUNTIME_BLAS_H
