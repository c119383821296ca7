// RUN: sparse-opt %s --sp-specialize --sp-decompose --sp-choose-index-maps | FileCheck %s
// RUN: not sparse-opt %s --sp-choose-index-maps 2>&1 | FileCheck %s --check-prefix=UNSPECIALIZED

// The search over {identity, transpose(d), gather(d, S)} finds, for each
// component, the maps under which its blocks are densest.

// Strided (l = 32, n = 4096): the row stays in order; the column (minus the
// row) is a band once both sides are transposed.
// CHECK-LABEL: sp.pattern @strided
// CHECK: index_maps = {{\[\[}}"identity", "identity"], ["transpose(32)", "transpose(32)"]]
// UNSPECIALIZED: error: the mask still reads parameters or n: run sp-specialize first
sp.pattern @strided(l = 32) causal attributes {seq_len = 4096 : i64} {
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

// Fixed (l = 64, c = 8): the summary cells j % 64 >= 56 are gathered into a
// dense range of keys.
// CHECK-LABEL: sp.pattern @fixed
// CHECK: index_maps = {{\[\[}}"identity", "identity"], ["identity", "gather(64, 56..63)"]]
sp.pattern @fixed(l = 64, c = 8) causal attributes {seq_len = 4096 : i64} {
  sp.mask (%i, %j) {
    %l = sp.param "l"
    %c = sp.param "c"
    %0 = sp.div %i, %l
    %1 = sp.div %j, %l
    %2 = arith.cmpi eq, %0, %1 : i64
    %3 = sp.mod %j, %l
    %4 = arith.subi %l, %c : i64
    %5 = arith.cmpi sge, %3, %4 : i64
    %6 = arith.ori %2, %5 : i1
    sp.yield %6
  }
}

// A query-side gather: only every 16th query attends (to every earlier key,
// like the paper's "global" positions), so gathering those queries turns
// mostly-empty partial blocks into full ones.
// CHECK-LABEL: sp.pattern @global_queries
// CHECK: index_maps = {{\[\[}}"gather(16, 0)", "identity"]]
sp.pattern @global_queries() causal attributes {seq_len = 4096 : i64} {
  sp.mask (%i, %j) {
    %c16 = arith.constant 16 : i64
    %c0 = arith.constant 0 : i64
    %0 = sp.mod %i, %c16
    %1 = arith.cmpi eq, %0, %c0 : i64
    sp.yield %1
  }
}
