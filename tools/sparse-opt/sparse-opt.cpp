//===- sparse-opt.cpp - the mlir-opt of sparsetx --------------------------===//
//
// Every sparsetx dialect and pass registered on top of MlirOptMain; the
// driver of the lit tests of the sp dialect and its passes.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/InitAll.h"

#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  sparsetx::registerAllDialects(registry);
  sparsetx::registerAllPasses();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "sparsetx optimizer driver\n", registry));
}
