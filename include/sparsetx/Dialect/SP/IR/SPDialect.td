//===- SPDialect.td - the sp dialect ----------------------*- tablegen -*-===//
//
// The sp dialect holds attention patterns of the .sp language: which key j a
// query i attends to, per layer and per head. It is the input of every
// analysis pass (specialize, decompose, index maps, block classes, kernel
// plans) and is lowered into kernel plans, never into executable IR.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_DIALECT_SP_IR_SPDIALECT_TD
#define SPARSETX_DIALECT_SP_IR_SPDIALECT_TD

include "mlir/IR/OpBase.td"

def SP_Dialect : Dialect {
  let name = "sp";
  let cppNamespace = "::sparsetx::sp";
  let summary = "Sparse attention patterns";
  let description = [{
    A pattern (`sp.pattern`) binds integer parameters and holds one or more
    masks (`sp.mask`). A mask is a region over the query position `%i`, the
    key position `%j` and optionally the head index `%h` (all `i64`) that
    yields an `i1`: whether query `i` attends to key `j`. Mask bodies use the
    `arith` dialect for integer arithmetic and comparisons, `math.absi`, and
    this dialect's floor division and modulo (`sp.div`, `sp.mod`), parameter
    references (`sp.param`) and the sequence length (`sp.seq_len`).

    ```mlir
    sp.pattern @strided(l = 128) causal {
      sp.mask (%i, %j) {
        %l = sp.param "l"
        %0 = arith.subi %i, %j : i64
        %1 = arith.cmpi slt, %0, %l : i64
        %2 = sp.mod %0, %l
        %c0 = arith.constant 0 : i64
        %3 = arith.cmpi eq, %2, %c0 : i64
        %4 = arith.ori %1, %3 : i1
        sp.yield %4
      }
    }
    ```
  }];
  let hasConstantMaterializer = 1;
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect"];
}

class SP_Op<string mnemonic, list<Trait> traits = []>
    : Op<SP_Dialect, mnemonic, traits>;

#endif // SPARSETX_DIALECT_SP_IR_SPDIALECT_TD
