//===- Passes.td - sp dialect passes ----------------------*- tablegen -*-===//
//
// The analysis pipeline of DESIGN.md section 2, in order:
//   sp-specialize -> sp-decompose -> sp-choose-index-maps ->
//   sp-classify-blocks -> sp-plan-kernels, with sp-verify anywhere after
//   sp-specialize.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_DIALECT_SP_TRANSFORMS_PASSES_TD
#define SPARSETX_DIALECT_SP_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def SPSpecialize : Pass<"sp-specialize", "::mlir::ModuleOp"> {
  let summary = "Bind the sequence length, head count and parameters; fold";
  let description = [{
    Replaces `sp.param` and `sp.seq_len` by constants, records `seq_len` and
    `num_heads` on the pattern, expands a per-head mask into one mask per head
    (`sp.mask head H (%i, %j)` with `h` replaced by `H`) and folds the masks
    with the canonicalization patterns of `arith` and `sp`.

    ```mlir
    // sparse-opt --sp-specialize="seq-len=1024 define=l=64"
    sp.pattern @local(l = 64) causal attributes {seq_len = 1024 : i64} {
      sp.mask (%i, %j) {
        %c64_i64 = arith.constant 64 : i64
        %0 = arith.subi %i, %j : i64
        %1 = arith.cmpi slt, %0, %c64_i64 : i64
        sp.yield %1
      }
    }
    ```
  }];
  let options = [
    Option<"seqLen", "seq-len", "int64_t", /*default=*/"0",
           "Sequence length n (0: keep the pattern's seq_len, if any)">,
    Option<"numHeads", "num-heads", "int64_t", /*default=*/"0",
           "Head count for per-head masks (0: the pattern's num_heads, else 8)">,
    ListOption<"defines", "define", "std::string",
               "Parameter overrides NAME=VALUE">
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

def SPDecompose : Pass<"sp-decompose", "::mlir::ModuleOp"> {
  let summary = "Split each mask into pairwise disjoint components";
  let description = [{
    Writes the union `A || B || C` yielded by a mask as the disjoint
    components `A`, `B && !A`, `C && !A && !B` (yielded together, the mask
    marked `disjoint`), so that a merged head is an exact sum over its
    components and each component can get its own index maps and blocks.

    ```mlir
    sp.mask (%i, %j) attributes {disjoint} {
      ...
      sp.yield %row, %column_and_not_row
    }
    ```
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

def SPChooseIndexMaps : Pass<"sp-choose-index-maps", "::mlir::ModuleOp"> {
  let summary = "Pick, per component, the query and key index maps";
  let description = [{
    For each component of each (specialized, decomposed) mask, searches the
    family {identity, transpose(d), gather(d, S)} for the query and the key
    map, with d among the divisors and moduli of the component and S the
    residues where the component can be true, and keeps the pair whose blocks
    cost least (computed elements, partial blocks weighted by the mask
    evaluation they need). The search classifies blocks at
    min(n, probe-seq-len). Records `index_maps` on the mask.
  }];
  let options = [
    Option<"blockQ", "block-q", "int64_t", /*default=*/"64", "Query block size">,
    Option<"blockK", "block-k", "int64_t", /*default=*/"64", "Key block size">,
    Option<"probeSeqLen", "probe-seq-len", "int64_t", /*default=*/"16384",
           "Largest n at which candidate maps are compared">
  ];
}

def SPClassifyBlocks : Pass<"sp-classify-blocks", "::mlir::ModuleOp"> {
  let summary = "Classify the blocks of every component as empty, full or partial";
  let description = [{
    Under the chosen index maps, classifies every (query block, key block) of
    every component (abstract interpretation over block ranges, exhaustive
    evaluation only where it cannot decide) and records per component the
    counts, the attended and computed elements and the schedule kind in
    `block_stats`. The tables themselves are what `sparsec --emit=layout`
    prints.
  }];
  let options = [
    Option<"blockQ", "block-q", "int64_t", /*default=*/"64", "Query block size">,
    Option<"blockK", "block-k", "int64_t", /*default=*/"64", "Key block size">
  ];
}

def SPPlanKernels : Pass<"sp-plan-kernels", "::mlir::ModuleOp"> {
  let summary = "Group components into kernels";
  let description = [{
    Components that share a query map fuse into one kernel, as consecutive
    segments over one online-softmax state; components with different query
    maps become separate kernels whose outputs merge by log-sum-exp. Records
    `kernels` on the mask: per kernel, the component indices it runs.
  }];
}

def SPVerify : Pass<"sp-verify", "::mlir::ModuleOp"> {
  let summary = "Check that every query row attends somewhere; check connectivity";
  let description = [{
    Errors on a query row that attends to no key at the pattern's `seq_len`
    (its softmax would be undefined), naming the first such row. Warns when
    the pattern does not connect every key j <= i to query i within its p
    steps (layers, or factors of a merged head), with a witness pair.
  }];
  let options = [
    Option<"maxConnectivitySeqLen", "max-connectivity-seq-len", "int64_t",
           /*default=*/"4096",
           "Largest n at which connectivity is checked (it costs n^2 bits)">
  ];
}

#endif // SPARSETX_DIALECT_SP_TRANSFORMS_PASSES_TD
