// RUN: sparse-opt %s --sp-specialize --sp-decompose --sp-classify-blocks="block-q=16 block-k=16" | FileCheck %s

// Block classes per component under the recorded maps. Local window w = 16 at
// n = 64 with 16 x 16 blocks: 4 diagonal blocks (partial: causal) and 3
// blocks below them (partial: the window edge); the other 9 are empty.
// CHECK-LABEL: sp.pattern @local
// CHECK: block_stats = [{computed = 1792 : i64, empty = 9 : i64, full = 0 : i64, partial = 7 : i64, schedule = "range", useful = 904 : i64}]
sp.pattern @local(w = 16) causal attributes {seq_len = 64 : i64} {
  sp.mask (%i, %j) {
    %w = sp.param "w"
    %0 = arith.subi %i, %j : i64
    %1 = arith.cmpi slt, %0, %w : i64
    sp.yield %1
  }
}

// Dense causal attention: 6 full blocks below the diagonal, 4 partial on it.
// CHECK-LABEL: sp.pattern @dense
// CHECK: block_stats = [{computed = 2560 : i64, empty = 6 : i64, full = 6 : i64, partial = 4 : i64, schedule = "range", useful = 2080 : i64}]
sp.pattern @dense() causal attributes {seq_len = 64 : i64} {
  sp.mask (%i, %j) {
    %true = arith.constant true
    sp.yield %true
  }
}

// n = 50 is not a multiple of the block: the last blocks are clipped.
// CHECK-LABEL: sp.pattern @clipped
// CHECK: block_stats = [{computed = 2500 : i64, empty = 0 : i64, full = 16 : i64, partial = 0 : i64, schedule = "range", useful = 2500 : i64}]
sp.pattern @clipped() attributes {seq_len = 50 : i64} {
  sp.mask (%i, %j) {
    %true = arith.constant true
    sp.yield %true
  }
}
