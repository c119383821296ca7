// RUN: sparse-opt %s --sp-plan-kernels | FileCheck %s

// Components sharing a query map fuse into one kernel; a different query map
// is a separate kernel; an empty component gets none.
// CHECK-LABEL: sp.pattern @grouped
// CHECK: kernels = [array<i64: 0, 2>, array<i64: 1>]
sp.pattern @grouped() attributes {seq_len = 64 : i64} {
  sp.mask (%i, %j) attributes {disjoint, index_maps = [["identity", "identity"], ["transpose(8)", "transpose(8)"], ["identity", "gather(8, 7)"]]} {
    %true = arith.constant true
    sp.yield %true, %true, %true
  }
}

// CHECK-LABEL: sp.pattern @empty_component
// CHECK: kernels = [array<i64: 1>]
sp.pattern @empty_component() attributes {seq_len = 64 : i64} {
  sp.mask (%i, %j) attributes {block_stats = [{full = 0 : i64, partial = 0 : i64}, {full = 3 : i64, partial = 1 : i64}], disjoint, index_maps = [["identity", "identity"], ["identity", "identity"]]} {
    %false = arith.constant false
    %true = arith.constant true
    sp.yield %false, %true
  }
}
