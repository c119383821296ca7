// RUN: sparse-opt %s --sp-specialize --sp-decompose --sp-verify --sp-choose-index-maps --sp-classify-blocks --sp-plan-kernels | FileCheck %s

// The whole analysis pipeline on fixed attention (l = 64, c = 8, n = 2048):
// the block component in order, the summary cells gathered, both reading
// queries in order, so one kernel runs both as segments of one softmax.
// CHECK-LABEL: sp.pattern @fixed
// CHECK-SAME: seq_len = 2048
// CHECK: sp.mask (%i, %j) attributes {
// CHECK-SAME: block_stats = [{computed = 131072 : i64, empty = 992 : i64, full = 0 : i64, partial = 32 : i64, schedule = "range", useful = 66560 : i64}, {computed = {{[0-9]+}} : i64, {{.*}} schedule = "range", useful = {{[0-9]+}} : i64}]
// CHECK-SAME: disjoint
// CHECK-SAME: index_maps = {{\[\[}}"identity", "identity"], ["identity", "gather(64, 56..63)"]]
// CHECK-SAME: kernels = [array<i64: 0, 1>]
// CHECK: sp.yield %{{.*}}, %{{.*}}
sp.pattern @fixed(l = 64, c = 8) causal attributes {seq_len = 2048 : i64} {
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
