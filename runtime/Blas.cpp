//===- Blas.cpp - row-major fp32 GEMMs through cuBLASLt -------------------===//
//
// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, so B goes
// first. A shape's descriptors and the heuristic's algorithm are made once
// and cached (the model runs the same few shapes every step); the key holds
// the operands' alignments, which the algorithm may rely on.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Runtime/Blas.h"

#include "llvm/ADT/Twine.h"

#include <cublasLt.h>
#include <dlfcn.h>

#include <map>
#include <string>
#include <tuple>

using namespace sparsetx;
using namespace sparsetx::cuda;

namespace {

#define SPARSETX_CUBLASLT_FUNCTIONS(X)                                         \
  X(create, cublasLtCreate)                                                    \
  X(destroy, cublasLtDestroy)                                                  \
  X(getStatusName, cublasLtGetStatusName)                                      \
  X(getStatusString, cublasLtGetStatusString)                                  \
  X(descCreate, cublasLtMatmulDescCreate)                                      \
  X(descDestroy, cublasLtMatmulDescDestroy)                                    \
  X(descSetAttribute, cublasLtMatmulDescSetAttribute)                          \
  X(layoutCreate, cublasLtMatrixLayoutCreate)                                  \
  X(layoutDestroy, cublasLtMatrixLayoutDestroy)                                \
  X(prefCreate, cublasLtMatmulPreferenceCreate)                                \
  X(prefDestroy, cublasLtMatmulPreferenceDestroy)                              \
  X(prefSetAttribute, cublasLtMatmulPreferenceSetAttribute)                    \
  X(heuristic, cublasLtMatmulAlgoGetHeuristic)                                 \
  X(matmul, cublasLtMatmul)

struct Lt {
#define SPARSETX_DECLARE(member, symbol) decltype(&::symbol) member = nullptr;
  SPARSETX_CUBLASLT_FUNCTIONS(SPARSETX_DECLARE)
#undef SPARSETX_DECLARE
  std::string unavailableReason;
};

Lt loadLt() {
  Lt lt;
  void *lib = nullptr;
  std::string why;
  for (const char *name :
       {"libcublasLt.so.13", "/usr/local/cuda/lib64/libcublasLt.so.13",
        "libcublasLt.so"}) {
    lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib)
      break;
    if (const char *e = dlerror())
      why = e;
  }
  if (!lib) {
    lt.unavailableReason = "libcublasLt.so.13 not found (" + why + ")";
    return lt;
  }
#define SPARSETX_RESOLVE(member, symbol)                                       \
  lt.member = reinterpret_cast<decltype(lt.member)>(dlsym(lib, #symbol));      \
  if (!lt.member) {                                                            \
    lt.unavailableReason = "libcublasLt has no " #symbol;                      \
    return lt;                                                                 \
  }
  SPARSETX_CUBLASLT_FUNCTIONS(SPARSETX_RESOLVE)
#undef SPARSETX_RESOLVE
  return lt;
}

const Lt &lt() {
  static const Lt instance = loadLt();
  return instance;
}

llvm::Error blasError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 message.str());
}

llvm::Error check(cublasStatus_t status, llvm::StringRef call,
                  const llvm::Twine &detail = "") {
  if (status == CUBLAS_STATUS_SUCCESS)
    return llvm::Error::success();
  return blasError(call + ": " + lt().getStatusName(status) + ": " +
                   lt().getStatusString(status) + detail);
}

/// The largest of 16, 8, 4, 2 bytes dividing `ptr`.
unsigned alignmentOf(DevicePtr ptr) {
  for (unsigned a : {16u, 8u, 4u})
    if (ptr % a == 0)
      return a;
  return 2;
}

struct Key {
  int64_t m, n, k;
  bool transA, transB;
  GemmMode mode;
  bool bias;
  unsigned alignA, alignB, alignC;
  bool operator<(const Key &o) const {
    return std::tie(m, n, k, transA, transB, mode, bias, alignA, alignB, alignC) <
           std::tie(o.m, o.n, o.k, o.transA, o.transB, o.mode, o.bias, o.alignA,
                    o.alignB, o.alignC);
  }
};

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t first = nullptr, second = nullptr, out = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

} // namespace

struct Blas::Impl {
  cublasLtHandle_t handle = nullptr;
  DeviceBuffer workspace;
  std::map<Key, Plan> plans;
  ~Impl() {
    for (auto &[key, plan] : plans) {
      if (plan.desc)
        lt().descDestroy(plan.desc);
      for (cublasLtMatrixLayout_t l : {plan.first, plan.second, plan.out})
        if (l)
          lt().layoutDestroy(l);
    }
    if (handle)
      lt().destroy(handle);
  }
  llvm::Expected<const Plan *> plan(const Key &key);
};

Blas::~Blas() = default;

llvm::Expected<std::unique_ptr<Blas>> Blas::create(size_t workspaceBytes) {
  if (!lt().unavailableReason.empty())
    return blasError("cuBLASLt unavailable: " + lt().unavailableReason);
  std::unique_ptr<Blas> blas(new Blas());
  blas->impl = std::make_unique<Impl>();
  if (llvm::Error e = check(lt().create(&blas->impl->handle), "cublasLtCreate"))
    return std::move(e);
  llvm::Expected<DeviceBuffer> ws = DeviceBuffer::allocate(workspaceBytes);
  if (!ws)
    return ws.takeError();
  blas->impl->workspace = std::move(*ws);
  return std::move(blas);
}

llvm::Expected<const Plan *> Blas::Impl::plan(const Key &key) {
  auto it = plans.find(key);
  if (it != plans.end())
    return &it->second;
  Plan p;
  // Stored in the map at once so that ~Impl frees whatever was made.
  Plan &stored = plans[key] = p;
  auto fail = [&](llvm::Error e) -> llvm::Expected<const Plan *> {
    if (stored.desc)
      lt().descDestroy(stored.desc);
    for (cublasLtMatrixLayout_t l : {stored.first, stored.second, stored.out})
      if (l)
        lt().layoutDestroy(l);
    plans.erase(key);
    return std::move(e);
  };
  cudaDataType_t inType = key.mode == GemmMode::BF16   ? CUDA_R_16BF
                          : key.mode == GemmMode::FP16 ? CUDA_R_16F
                                                       : CUDA_R_32F;
  cublasComputeType_t compute =
      key.mode == GemmMode::FP32FastBF16   ? CUBLAS_COMPUTE_32F_FAST_16BF
      : key.mode == GemmMode::FP32FastTF32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                           : CUBLAS_COMPUTE_32F;
  if (llvm::Error e = check(lt().descCreate(&stored.desc, compute, CUDA_R_32F),
                            "cublasLtMatmulDescCreate"))
    return fail(std::move(e));
  // Column-major: first operand op(B)^T (n x k), second op(A)^T (k x m).
  cublasOperation_t opFirst = key.transB ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t opSecond = key.transA ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (llvm::Error e = check(lt().descSetAttribute(stored.desc,
                                                  CUBLASLT_MATMUL_DESC_TRANSA,
                                                  &opFirst, sizeof(opFirst)),
                            "cublasLtMatmulDescSetAttribute(TRANSA)"))
    return fail(std::move(e));
  if (llvm::Error e = check(lt().descSetAttribute(stored.desc,
                                                  CUBLASLT_MATMUL_DESC_TRANSB,
                                                  &opSecond, sizeof(opSecond)),
                            "cublasLtMatmulDescSetAttribute(TRANSB)"))
    return fail(std::move(e));
  if (key.bias) {
    // Column-major D is n x m: its rows are the row-major columns.
    cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    cudaDataType_t biasType = CUDA_R_32F;
    if (llvm::Error e = check(lt().descSetAttribute(stored.desc,
                                                    CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                    &epilogue, sizeof(epilogue)),
                              "cublasLtMatmulDescSetAttribute(EPILOGUE)"))
      return fail(std::move(e));
    if (llvm::Error e = check(
            lt().descSetAttribute(stored.desc,
                                  CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                  &biasType, sizeof(biasType)),
            "cublasLtMatmulDescSetAttribute(BIAS_DATA_TYPE)"))
      return fail(std::move(e));
  }
  // Stored shapes (column-major rows x cols, ld).
  uint64_t fr = key.transB ? key.k : key.n, fc = key.transB ? key.n : key.k;
  uint64_t sr = key.transA ? key.m : key.k, sc = key.transA ? key.k : key.m;
  if (llvm::Error e = check(lt().layoutCreate(&stored.first, inType, fr, fc,
                                              static_cast<int64_t>(fr)),
                            "cublasLtMatrixLayoutCreate"))
    return fail(std::move(e));
  if (llvm::Error e = check(lt().layoutCreate(&stored.second, inType, sr,
                                              sc, static_cast<int64_t>(sr)),
                            "cublasLtMatrixLayoutCreate"))
    return fail(std::move(e));
  if (llvm::Error e = check(lt().layoutCreate(&stored.out, CUDA_R_32F, key.n,
                                              key.m, key.n),
                            "cublasLtMatrixLayoutCreate"))
    return fail(std::move(e));

  cublasLtMatmulPreference_t pref = nullptr;
  if (llvm::Error e = check(lt().prefCreate(&pref),
                            "cublasLtMatmulPreferenceCreate"))
    return fail(std::move(e));
  uint64_t wsBytes = workspace.size();
  uint32_t alignFirst = key.alignB, alignSecond = key.alignA,
           alignOut = key.alignC;
  cublasStatus_t status = lt().prefSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsBytes, sizeof(wsBytes));
  // No in-place split-K reduction: its order is not fixed, and the model's
  // training steps are to be reproducible.
  uint32_t reductions = CUBLASLT_REDUCTION_SCHEME_MASK &
                        ~uint32_t(CUBLASLT_REDUCTION_SCHEME_INPLACE);
  if (status == CUBLAS_STATUS_SUCCESS)
    status = lt().prefSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                   &reductions, sizeof(reductions));
  if (status == CUBLAS_STATUS_SUCCESS)
    status = lt().prefSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                   &alignFirst, sizeof(alignFirst));
  if (status == CUBLAS_STATUS_SUCCESS)
    status = lt().prefSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                   &alignSecond, sizeof(alignSecond));
  if (status == CUBLAS_STATUS_SUCCESS)
    status = lt().prefSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                   &alignOut, sizeof(alignOut));
  if (status == CUBLAS_STATUS_SUCCESS)
    status = lt().prefSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                   &alignOut, sizeof(alignOut));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (status == CUBLAS_STATUS_SUCCESS)
    status = lt().heuristic(handle, stored.desc, stored.first, stored.second,
                            stored.out, stored.out, pref, 1, &result, &found);
  lt().prefDestroy(pref);
  if (llvm::Error e = check(status, "cublasLtMatmulAlgoGetHeuristic"))
    return fail(std::move(e));
  if (found == 0)
    return fail(blasError(llvm::Twine("cublasLtMatmulAlgoGetHeuristic: no "
                                      "algorithm for a ") +
                          llvm::Twine(key.m) + " x " + llvm::Twine(key.n) +
                          " x " + llvm::Twine(key.k) + " GEMM"));
  stored.algo = result.algo;
  return &stored;
}

llvm::Error Blas::gemm(DevicePtr c, DevicePtr a, DevicePtr b, int64_t m,
                       int64_t n, int64_t k, bool transA, bool transB,
                       float alpha, float beta, GemmMode mode,
                       DevicePtr bias, Stream stream) {
  if (m <= 0 || n <= 0)
    return llvm::Error::success();
  if (k <= 0)
    return blasError("Blas::gemm: inner dimension " + llvm::Twine(k));
  Key key{m,    n, k, transA, transB, mode, bias != 0, alignmentOf(a),
          alignmentOf(b), alignmentOf(c)};
  llvm::Expected<const Plan *> p = impl->plan(key);
  if (!p)
    return p.takeError();
  const Plan &plan = **p;
  if (bias) {
    const void *ptr = reinterpret_cast<const void *>(bias);
    if (llvm::Error e = check(lt().descSetAttribute(plan.desc,
                                                    CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                    &ptr, sizeof(ptr)),
                              "cublasLtMatmulDescSetAttribute(BIAS_POINTER)"))
      return e;
  }
  return check(
      lt().matmul(impl->handle, plan.desc, &alpha,
                  reinterpret_cast<const void *>(b), plan.first,
                  reinterpret_cast<const void *>(a), plan.second, &beta,
                  reinterpret_cast<void *>(c), plan.out,
                  reinterpret_cast<void *>(c), plan.out, &plan.algo,
                  reinterpret_cast<void *>(impl->workspace.get()),
                  impl->workspace.size(), static_cast<cudaStream_t>(stream)),
      "cublasLtMatmul",
      " (" + llvm::Twine(m) + " x " + llvm::Twine(n) + " x " + llvm::Twine(k) +
          ")");
}
