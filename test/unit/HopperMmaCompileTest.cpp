//===- HopperMmaCompileTest.cpp - hopper.cuh through NVRTC and ptxas ------===//
//
// The wgmma building blocks can only run on an sm_90 GPU
// (test/gpu/HopperMmaTest.cpp); here, without one, the same test kernels are
// compiled for sm_90a with the embedded headers, the PTX is checked for the
// instructions and descriptor encodings the header promises, and ptxas (where
// found) must accept it without serializing the wgmmas. hopper.cuh's own
// static_asserts (swizzle permutation, descriptor encodings, fragment
// coordinates) run in every compile. Including the header for sm_80 or plain
// sm_90 must stay harmless.
//
//===----------------------------------------------------------------------===//

#include "HopperMmaKernels.h"

#include "sparsetx/Codegen/CudaEmitter.h"
#include "sparsetx/Runtime/Nvrtc.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include "gtest/gtest.h"

using namespace sparsetx;

namespace {

llvm::Expected<std::string> compile(llvm::StringRef source, llvm::StringRef arch) {
  nvrtc::CompileOptions options;
  options.arch = arch.str();
  options.cacheDir = "none";
  return nvrtc::compileToPTX(source, "hopper_mma_test.cu", options,
                             codegen::kernelHeaders());
}

size_t countOf(llvm::StringRef text, llvm::StringRef needle) {
  size_t n = 0;
  for (size_t pos = text.find(needle); pos != llvm::StringRef::npos;
       pos = text.find(needle, pos + needle.size()))
    ++n;
  return n;
}

/// The body of .entry `name` in `ptx` ("" if absent).
llvm::StringRef entryBody(llvm::StringRef ptx, llvm::StringRef name) {
  size_t start = ptx.find((".entry " + name + "(").str());
  if (start == llvm::StringRef::npos)
    return "";
  size_t end = ptx.find(".entry ", start + 1);
  return ptx.slice(start, end);
}

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

/// Runs `ptxas -v -arch=<arch>` on `ptx`; returns its exit status and puts
/// its output (resource usage, advisories) into `log`. -1 without ptxas.
int runPtxas(const std::string &ptx, llvm::StringRef arch, std::string &log) {
  std::string ptxas = ptxasPath();
  if (ptxas.empty())
    return -1;
  llvm::SmallString<128> ptxFile, cubinFile, logFile;
  int fd;
  if (llvm::sys::fs::createTemporaryFile("sparsetx-hopper", "ptx", fd, ptxFile)) {
    log = "no temporary file";
    return 1;
  }
  {
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
    os << ptx;
  }
  llvm::sys::fs::createTemporaryFile("sparsetx-hopper", "cubin", cubinFile);
  llvm::sys::fs::createTemporaryFile("sparsetx-hopper", "log", logFile);
  std::string archArg = "-arch=" + arch.str();
  llvm::StringRef args[] = {ptxas, "-v", archArg, ptxFile, "-o", cubinFile};
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, logFile.str(),
                                                logFile.str()};
  std::string errorMessage;
  int rc = llvm::sys::ExecuteAndWait(ptxas, args, std::nullopt, redirects, 0, 0,
                                     &errorMessage);
  if (llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> buffer =
          llvm::MemoryBuffer::getFile(logFile))
    log = (*buffer)->getBuffer().str();
  log += errorMessage;
  uint64_t cubinSize = 0;
  llvm::sys::fs::file_size(cubinFile, cubinSize);
  if (rc == 0 && cubinSize == 0) {
    log += "\nptxas wrote an empty cubin";
    rc = 1;
  }
  llvm::sys::fs::remove(ptxFile);
  llvm::sys::fs::remove(cubinFile);
  llvm::sys::fs::remove(logFile);
  return rc;
}

/// True when ptxas printed a numbered advisory "(Cdddd)".
bool hasPtxasAdvisory(llvm::StringRef log) {
  for (size_t pos = log.find("(C"); pos != llvm::StringRef::npos;
       pos = log.find("(C", pos + 2)) {
    llvm::StringRef code = log.substr(pos + 2, 5);
    if (code.size() == 5 && code.back() == ')' &&
        llvm::all_of(code.drop_back(), llvm::isDigit))
      return true;
  }
  return false;
}

TEST(HopperMmaCompile, TestKernelsHaveTheWgmmas) {
  llvm::Expected<std::string> ptx =
      compile(test::kHopperMmaKernelSource, "sm_90a");
  ASSERT_TRUE(!!ptx) << llvm::toString(ptx.takeError());
  EXPECT_NE(ptx->find(".target sm_90a"), std::string::npos);
  for (const char *name : test::kHopperMmaKernelNames)
    EXPECT_FALSE(entryBody(*ptx, name).empty()) << name << " missing";

  // Per element type: 4 k-steps in ss, rs, pv and tt, 8 in fused.
  EXPECT_EQ(countOf(*ptx, "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16"),
            24u);
  EXPECT_EQ(countOf(*ptx, "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16"),
            24u);
  EXPECT_EQ(countOf(*ptx, "wgmma.mma_async"), 48u);
  // One fence, commit and wait per product.
  EXPECT_EQ(countOf(*ptx, "wgmma.fence.sync.aligned;"), 12u);
  EXPECT_EQ(countOf(*ptx, "wgmma.commit_group.sync.aligned;"), 12u);
  EXPECT_EQ(countOf(*ptx, "wgmma.wait_group.sync.aligned 0;"), 12u);
  EXPECT_EQ(countOf(*ptx, "fence.proxy.async.shared::cta;"), 10u);

  for (llvm::StringRef type : {"bf16", "fp16"}) {
    std::string t = type.str();
    // S = Q K^T: both operands K-major (imm-trans-a 0, imm-trans-b 0); the
    // first k-step's scale-d comes from a predicate.
    llvm::StringRef ss = entryBody(*ptx, "hopper_ss_" + t);
    EXPECT_EQ(countOf(ss, ", p, 1, 1, 0, 0;"), 4u) << ss.str();
    // A from registers: a brace list of four registers, no imm-trans-a.
    llvm::StringRef rs = entryBody(*ptx, "hopper_rs_" + t);
    EXPECT_EQ(countOf(rs, ", p, 1, 1, 0;"), 4u) << rs.str();
    EXPECT_EQ(countOf(rs, "ldmatrix.sync.aligned.m8n8.x4.shared.b16"), 4u) << rs.str();
    // O = P V: B MN-major (imm-trans-b 1).
    llvm::StringRef pv = entryBody(*ptx, "hopper_pv_" + t);
    EXPECT_EQ(countOf(pv, ", p, 1, 1, 1;"), 4u) << pv.str();
    llvm::StringRef fused = entryBody(*ptx, "hopper_fused_" + t);
    EXPECT_EQ(countOf(fused, ", p, 1, 1, 0, 0;"), 4u) << fused.str();
    EXPECT_EQ(countOf(fused, ", p, 1, 1, 1;"), 4u) << fused.str();
    // A^T C: both operands MN-major (imm-trans-a 1, imm-trans-b 1).
    llvm::StringRef tt = entryBody(*ptx, "hopper_tt_" + t);
    EXPECT_EQ(countOf(tt, ", p, 1, 1, 1, 1;"), 4u) << tt.str();
    // P's registers are packed from S's accumulators.
    EXPECT_EQ(countOf(fused, type == "bf16" ? "cvt.rn.bf16x2.f32"
                                            : "cvt.rn.f16x2.f32"),
              16u)
        << fused.str();
  }

  // The descriptors' constant bits (swizzle mode 1 | SBO | LBO) or'ed onto
  // the run-time start address: 0x4000004000010000 for the K-major tiles
  // (SBO 1024 >> 4 = 64, LBO 1) and 0x4000004002000000 for the MN-major V
  // tile (LBO 8192 >> 4 = 512). NVRTC folds them into one 64-bit constant,
  // or splits the LBO off into the 32-bit half of the address computation.
  auto hasDescriptor = [](llvm::StringRef body, llvm::StringRef whole,
                          llvm::StringRef lbo) {
    return body.contains(whole) ||
           (body.contains("4611686293305294848") && body.contains(lbo));
  };
  for (llvm::StringRef name :
       {"hopper_ss_bf16", "hopper_rs_bf16", "hopper_fused_bf16",
        "hopper_ss_fp16", "hopper_rs_fp16", "hopper_fused_fp16"})
    EXPECT_TRUE(hasDescriptor(entryBody(*ptx, name), "4611686293305360384",
                              "65536"))
        << name.str() << ": K-major descriptor\n"
        << entryBody(*ptx, name).str();
  for (llvm::StringRef name :
       {"hopper_pv_bf16", "hopper_fused_bf16", "hopper_tt_bf16",
        "hopper_pv_fp16", "hopper_fused_fp16", "hopper_tt_fp16"})
    EXPECT_TRUE(hasDescriptor(entryBody(*ptx, name), "4611686293338849280",
                              "33554432"))
        << name.str() << ": MN-major descriptor\n"
        << entryBody(*ptx, name).str();
}

TEST(HopperMmaCompile, PtxasAcceptsTheTestKernels) {
  llvm::Expected<std::string> ptx =
      compile(test::kHopperMmaKernelSource, "sm_90a");
  ASSERT_TRUE(!!ptx) << llvm::toString(ptx.takeError());
  std::string log;
  int rc = runPtxas(*ptx, "sm_90a", log);
  if (rc == -1)
    GTEST_SKIP() << "ptxas not found";
  ASSERT_EQ(rc, 0) << log;
  // Numbered ptxas advisories ("(C7515) ... wgmma.mma_async instructions
  // are serialized ...", "(C7519) warpgroup.arrive is injected ... to allow
  // use of registers in GMMA") mean it could not prove the wgmma register
  // operands safe and added waits: a missing fence, or an accumulator
  // touched between wgmmas. (Seen with `s[0] += 1` between two k-steps.)
  EXPECT_FALSE(hasPtxasAdvisory(log)) << log;
  EXPECT_EQ(log.find("warning"), std::string::npos) << log;
  // No spills: 32 accumulators, 16 A registers and the descriptors fit.
  EXPECT_GT(countOf(log, "bytes spill stores"), 0u) << log;
  EXPECT_EQ(countOf(log, "bytes spill stores"),
            countOf(log, " 0 bytes spill stores"))
      << log;
}

/// The wgmma section exists only for sm_90a; the layout and descriptor
/// functions (and their static_asserts) everywhere.
TEST(HopperMmaCompile, HarmlessForOtherArchitectures) {
  struct Case {
    const char *arch;
    int hasWgmma;
  } cases[] = {{"sm_80", 0}, {"sm_90", 0}, {"sm_90a", 1}};
  for (const Case &c : cases) {
    std::string source =
        "#include \"sparsetx/hopper.cuh\"\n"
        "static_assert(SPARSETX_HAS_WGMMA == " +
        std::to_string(c.hasWgmma) +
        ", \"wgmma section\");\n"
        "extern \"C\" __global__ void layout(unsigned *out) {\n"
        "  unsigned t = threadIdx.x;\n"
        "  out[t] = sparsetx::sw128Offset(t / 8, t % 8) +\n"
        "           (unsigned)sparsetx::wgmmaDescSw128KMajor(t * 1024);\n"
        "}\n";
    llvm::Expected<std::string> ptx = compile(source, c.arch);
    ASSERT_TRUE(!!ptx) << c.arch << ": " << llvm::toString(ptx.takeError());
    EXPECT_EQ(ptx->find("wgmma"), std::string::npos) << c.arch;
    std::string log;
    int rc = runPtxas(*ptx, c.arch, log);
    EXPECT_TRUE(rc == -1 || rc == 0) << c.arch << ": " << log;
  }
  // The test kernels themselves need sm_90a: for sm_90 the wgmma helpers do
  // not exist, a compile error rather than PTX the driver would reject.
  llvm::Expected<std::string> ptx =
      compile(test::kHopperMmaKernelSource, "sm_90");
  ASSERT_FALSE(!!ptx);
  EXPECT_NE(llvm::toString(ptx.takeError()).find("wgmmaFence"),
            std::string::npos);
}

} // namespace
