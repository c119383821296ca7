//===- SPOps.td - sp dialect operations -------------------*- tablegen -*-===//
//
// Operations of the sp dialect. Masks are regions rather than expression trees
// of custom ops so that arith's folders and canonicalizations apply directly
// once parameters are bound.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_DIALECT_SP_IR_SPOPS_TD
#define SPARSETX_DIALECT_SP_IR_SPOPS_TD

include "sparsetx/Dialect/SP/IR/SPDialect.td"
include "mlir/IR/OpAsmInterface.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"

//===----------------------------------------------------------------------===//
// sp.pattern
//===----------------------------------------------------------------------===//

def SP_PatternOp : SP_Op<"pattern", [
    Symbol, IsolatedFromAbove, SingleBlock, NoTerminator]> {
  let summary = "An attention pattern with its parameters";
  let description = [{
    A named attention pattern. `params` are compile-time integers, printed as
    `(name = value, ...)` in declaration order. `causal` additionally requires
    `j <= i` of every mask. The body holds `sp.mask` ops: either exactly one
    without a layer index (every residual block uses it), or one per layer,
    `layer 0` to `layer N-1` in order (residual block `r` uses entry `r % N`).

    `seq_len` and `num_heads`, when present, bind the sequence length `n` and
    the head count (set by `sp-specialize`, or by `sparsec --seq-len/--heads`).

    ```mlir
    sp.pattern @fixed(l = 128, c = 32) causal {
      sp.mask (%i, %j) { ... }
    }
    sp.pattern @interleaved(l = 128) causal {
      sp.mask layer 0 (%i, %j) { ... }
      sp.mask layer 1 (%i, %j) { ... }
    }
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name,
                       StrArrayAttr:$param_names,
                       DenseI64ArrayAttr:$param_values,
                       UnitAttr:$causal,
                       OptionalAttr<I64Attr>:$seq_len,
                       OptionalAttr<I64Attr>:$num_heads);
  let regions = (region SizedRegion<1>:$body);
  let hasCustomAssemblyFormat = 1;
  let hasVerifier = 1;
  let skipDefaultBuilders = 1;
  let builders = [
    OpBuilder<(ins "::llvm::StringRef":$name,
                   "::llvm::ArrayRef<::llvm::StringRef>":$paramNames,
                   "::llvm::ArrayRef<int64_t>":$paramValues,
                   "bool":$causal)>
  ];
  let extraClassDeclaration = [{
    /// The value bound to parameter `name`, if the pattern has one.
    std::optional<int64_t> getParam(::llvm::StringRef name);
    /// Rebinds an existing parameter; returns false if there is none.
    bool setParam(::llvm::StringRef name, int64_t value);
    /// The masks in layer order.
    ::llvm::SmallVector<MaskOp> getMasks();
    /// True when the pattern gives each layer its own mask.
    bool isLayered();
    ::mlir::Block &getBodyBlock() { return getBody().front(); }
  }];
}

//===----------------------------------------------------------------------===//
// sp.mask
//===----------------------------------------------------------------------===//

def SP_MaskOp : SP_Op<"mask", [
    HasParent<"PatternOp">, IsolatedFromAbove, SingleBlock,
    DeclareOpInterfaceMethods<OpAsmOpInterface,
                              ["getAsmBlockArgumentNames"]>]> {
  let summary = "Which keys each query attends to";
  let description = [{
    The region takes the query position `%i`, the key position `%j` and, for a
    per-head mask, the head index `%h` (all `i64`, in that order) and yields
    an `i1` per component (see `sp.yield`). `layer N` marks the mask of
    layer `N` of a layered pattern; `head H` a mask that `sp-specialize` made
    for head `H` of a per-head pattern (the head index is then a constant and
    the region takes only `%i, %j`). `disjoint` says the yielded components
    are pairwise disjoint (set by `sp-decompose`); `index_maps` holds, per
    component, the `[query map, key map]` pair chosen by
    `sp-choose-index-maps`, e.g. `["identity", "gather(128, 96..127)"]`;
    `block_stats` the block classes per component (`sp-classify-blocks`) and
    `kernels` the component indices each kernel runs (`sp-plan-kernels`). The
    region is isolated from above (parameters are read with `sp.param`), so
    folding materializes constants inside the mask and masks can be
    transformed independently.

    ```mlir
    sp.mask (%i, %j, %h) {
      %l = sp.param "l"
      %0 = sp.div %i, %l
      ...
      sp.yield %5
    }
    ```
  }];
  let arguments = (ins OptionalAttr<I64Attr>:$layer,
                       OptionalAttr<I64Attr>:$head,
                       UnitAttr:$disjoint,
                       OptionalAttr<ArrayAttr>:$index_maps,
                       OptionalAttr<ArrayAttr>:$block_stats,
                       OptionalAttr<ArrayAttr>:$kernels);
  let regions = (region SizedRegion<1>:$body);
  let hasCustomAssemblyFormat = 1;
  let hasRegionVerifier = 1;
  let skipDefaultBuilders = 1;
  let builders = [
    // Creates the mask with an entry block holding i, j (and h if perHead).
    OpBuilder<(ins "std::optional<int64_t>":$layer, "bool":$perHead)>
  ];
  let extraClassDeclaration = [{
    ::mlir::Block &getBodyBlock() { return getBody().front(); }
    ::mlir::BlockArgument getQuery() { return getBodyBlock().getArgument(0); }
    ::mlir::BlockArgument getKey() { return getBodyBlock().getArgument(1); }
    bool isPerHead() { return getBodyBlock().getNumArguments() == 3; }
    ::mlir::BlockArgument getHeadArg() { return getBodyBlock().getArgument(2); }
    YieldOp getYield();
    unsigned getNumComponents();
  }];
}

def SP_YieldOp : SP_Op<"yield", [Pure, Terminator, HasParent<"MaskOp">]> {
  let summary = "The mask value of a (query, key[, head]) triple";
  let description = [{
    Yields one `i1` per component: the mask is the union of the components.
    Before `sp-decompose` there is one; after it, the components of a mask
    marked `disjoint` are pairwise disjoint, so the mask is their exact sum
    and each component can be computed by its own kernel segment.

    ```mlir
    sp.yield %row, %column_not_row
    ```
  }];
  let arguments = (ins Variadic<I1>:$values);
  let assemblyFormat = "$values attr-dict";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Values inside a mask
//===----------------------------------------------------------------------===//

def SP_ParamOp : SP_Op<"param", [Pure,
    DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmResultNames"]>]> {
  let summary = "The value of a pattern parameter";
  let description = [{
    Reads the parameter `name` of the enclosing `sp.pattern`. `sp-specialize`
    replaces it by a constant.

    ```mlir
    %l = sp.param "l"
    ```
  }];
  let arguments = (ins StrAttr:$name);
  let results = (outs I64:$result);
  let assemblyFormat = "$name attr-dict";
  let hasVerifier = 1;
}

def SP_SeqLenOp : SP_Op<"seq_len", [Pure,
    DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmResultNames"]>]> {
  let summary = "The sequence length n";
  let description = [{
    The sequence length `n` the pattern is used at. `sp-specialize` replaces it
    by a constant.

    ```mlir
    %n = sp.seq_len
    ```
  }];
  let results = (outs I64:$result);
  let assemblyFormat = "attr-dict";
}

class SP_FloorOp<string mnemonic, string what> : SP_Op<mnemonic, [Pure]> {
  let summary = "Floor " # what # " by a positive divisor";
  let arguments = (ins I64:$lhs, I64:$rhs);
  let results = (outs I64:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict";
  let hasVerifier = 1;
  let hasFolder = 1;
}

def SP_DivOp : SP_FloorOp<"div", "division"> {
  let description = [{
    `lhs / rhs` rounded toward negative infinity (Python's `//`). The divisor
    must be positive; a constant divisor that is not is rejected.

    ```mlir
    %0 = sp.div %i, %l
    ```
  }];
}

def SP_ModOp : SP_FloorOp<"mod", "modulo"> {
  let description = [{
    `lhs - rhs * floor(lhs / rhs)`: the result has the sign of the divisor
    (Python's `%`), so `(i - j) % l` is in `[0, l)` for any `i - j`. The
    divisor must be positive; a constant divisor that is not is rejected.

    ```mlir
    %0 = sp.mod %d, %l
    ```
  }];
}

#endif // SPARSETX_DIALECT_SP_IR_SPOPS_TD
