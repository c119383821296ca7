// RUN: sparse-opt %s | sparse-opt | FileCheck %s
// RUN: sparse-opt %s --mlir-print-op-generic | sparse-opt | FileCheck %s

// The custom syntax prints and parses back to the same IR, generic form too.

// CHECK-LABEL: sp.pattern @strided(l = 128) causal {
// CHECK-NEXT:    sp.mask (%i, %j) {
// CHECK-NEXT:      %l = sp.param "l"
// CHECK-NEXT:      %[[D:.*]] = arith.subi %i, %j : i64
// CHECK-NEXT:      %[[ROW:.*]] = arith.cmpi slt, %[[D]], %l : i64
// CHECK-NEXT:      %[[M:.*]] = sp.mod %[[D]], %l
// CHECK:           %[[COL:.*]] = arith.cmpi eq, %[[M]], %{{.*}} : i64
// CHECK-NEXT:      %[[U:.*]] = arith.ori %[[ROW]], %[[COL]] : i1
// CHECK-NEXT:      sp.yield %[[U]]
// CHECK-NEXT:    }
// CHECK-NEXT:  }
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

// Per-head masks name their third argument %h; no parameters prints `()`;
// a non-causal pattern has no keyword; bound n and head count are attributes.
// CHECK-LABEL: sp.pattern @per_head() attributes {num_heads = 4 : i64, seq_len = 1024 : i64} {
// CHECK-NEXT:    sp.mask (%i, %j, %h) {
// CHECK-NEXT:      %n = sp.seq_len
// CHECK-NEXT:      %[[Q:.*]] = sp.div %i, %n
// CHECK-NEXT:      %[[A:.*]] = math.absi %h : i64
// CHECK-NEXT:      %[[C:.*]] = arith.cmpi sge, %[[Q]], %[[A]] : i64
// CHECK-NEXT:      sp.yield %[[C]]
sp.pattern @per_head() attributes {seq_len = 1024 : i64, num_heads = 4 : i64} {
  sp.mask (%a, %b, %c) {
    %n = sp.seq_len
    %0 = sp.div %a, %n
    %1 = math.absi %c : i64
    %2 = arith.cmpi sge, %0, %1 : i64
    sp.yield %2
  }
}

// Layered patterns keep their layer indices in order.
// CHECK-LABEL: sp.pattern @layers(l = 8, m = -3) causal {
// CHECK-NEXT:    sp.mask layer 0 (%i, %j) {
// CHECK:         sp.mask layer 1 (%i, %j) {
sp.pattern @layers(l = 8, m = -3) causal {
  sp.mask layer 0 (%i, %j) {
    %true = arith.constant true
    sp.yield %true
  }
  sp.mask layer 1 (%i, %j) {
    %0 = arith.cmpi eq, %i, %j : i64
    sp.yield %0
  }
}

// After specialization and decomposition: a mask per head, components
// yielded together, the chosen index maps recorded.
// CHECK-LABEL: sp.pattern @specialized() causal attributes {num_heads = 2 : i64, seq_len = 256 : i64} {
// CHECK-NEXT:    sp.mask head 0 (%i, %j) attributes {disjoint, index_maps = {{\[\[}}"identity", "identity"], ["transpose(16)", "transpose(16)"]]} {
// CHECK:           sp.yield %{{.*}}, %{{.*}}
// CHECK:         sp.mask head 1 (%i, %j) {
sp.pattern @specialized() causal attributes {seq_len = 256 : i64, num_heads = 2 : i64} {
  sp.mask head 0 (%i, %j) attributes {disjoint, index_maps = [["identity", "identity"], ["transpose(16)", "transpose(16)"]]} {
    %0 = arith.cmpi eq, %i, %j : i64
    %true = arith.constant true
    %1 = arith.xori %0, %true : i1
    sp.yield %0, %1
  }
  sp.mask head 1 (%i, %j) {
    %0 = arith.cmpi eq, %i, %j : i64
    sp.yield %0
  }
}
