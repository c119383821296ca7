# lit configuration of sparsetx: .mlir tests drive sparse-opt, .sp tests drive
# sparsec. Paths come from lit.site.cfg.py.

import os

import lit.formats
from lit.llvm import llvm_config
from lit.llvm.subst import ToolSubst

config.name = "sparsetx"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".sp", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.sparsetx_obj_root, "test")
config.excludes = ["Inputs", "CMakeLists.txt", "lit.cfg.py", "unit"]

config.environment["FILECHECK_OPTS"] = "--enable-var-scope --dump-input=fail"
import sys
config.substitutions.append(("%python", sys.executable))
config.substitutions.append(("%patterns", os.path.join(config.sparsetx_src_root, "patterns")))

llvm_config.use_default_substitutions()
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)
llvm_config.add_tool_substitutions(
    [ToolSubst(t, unresolved="fatal") for t in ["sparsec", "sparse-opt", "sparsetx-run"]],
    [config.sparsetx_tools_dir])
llvm_config.add_tool_substitutions(
    [ToolSubst("attention-bench", unresolved="fatal")], [config.sparsetx_bench_dir])

# ptxas validates the PTX that sparsec writes (CUDA_PATH, else /usr/local/cuda).
_cuda = os.environ.get("CUDA_PATH") or os.environ.get("CUDA_HOME") or "/usr/local/cuda"
_ptxas = os.path.join(_cuda, "bin", "ptxas")
if os.path.exists(_ptxas):
    config.available_features.add("ptxas")
    config.substitutions.append(("%ptxas", _ptxas))
