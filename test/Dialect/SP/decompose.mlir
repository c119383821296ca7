// RUN: sparse-opt %s --sp-decompose | FileCheck %s

// A || B || C becomes the disjoint components A, B && !A, C && !(A || B)
// (folded: !(i == j) is i != j).

// CHECK-LABEL: sp.pattern @three()
// CHECK:         sp.mask (%i, %j) attributes {disjoint} {
// CHECK-DAG:       %[[TRUE:.*]] = arith.constant true
// CHECK-DAG:       %[[A:.*]] = arith.cmpi eq, %i, %j : i64
// CHECK-DAG:       %[[B:.*]] = arith.cmpi slt, %i, %j : i64
// CHECK-DAG:       %[[C:.*]] = arith.cmpi sgt, %i, %{{.*}} : i64
// CHECK:           %[[NA:.*]] = arith.cmpi ne, %i, %j : i64
// CHECK:           %[[B1:.*]] = arith.andi %[[B]], %[[NA]] : i1
// CHECK:           %[[AB:.*]] = arith.ori %[[A]], %[[B]] : i1
// CHECK:           %[[NAB:.*]] = arith.xori %[[AB]], %[[TRUE]] : i1
// CHECK:           %[[C1:.*]] = arith.andi %[[C]], %[[NAB]] : i1
// CHECK:           sp.yield %[[A]], %[[B1]], %[[C1]]
sp.pattern @three() {
  sp.mask (%i, %j) {
    %c7 = arith.constant 7 : i64
    %a = arith.cmpi eq, %i, %j : i64
    %b = arith.cmpi slt, %i, %j : i64
    %c = arith.cmpi sgt, %i, %c7 : i64
    %0 = arith.ori %a, %b : i1
    %1 = arith.ori %0, %c : i1
    sp.yield %1
  }
}

// A mask without a union is one component; a repeated disjunct counts once.
// CHECK-LABEL: sp.pattern @single()
// CHECK:         sp.mask (%i, %j) attributes {disjoint} {
// CHECK-NEXT:      %[[A:.*]] = arith.cmpi eq, %i, %j : i64
// CHECK-NEXT:      sp.yield %[[A]]
sp.pattern @single() {
  sp.mask (%i, %j) {
    %a = arith.cmpi eq, %i, %j : i64
    %0 = arith.ori %a, %a : i1
    sp.yield %0
  }
}

// Layered masks decompose one by one.
// CHECK-LABEL: sp.pattern @layers()
// CHECK:         sp.mask layer 0 (%i, %j) attributes {disjoint}
// CHECK:           sp.yield %{{.*}}, %{{.*}}
// CHECK:         sp.mask layer 1 (%i, %j) attributes {disjoint}
sp.pattern @layers() {
  sp.mask layer 0 (%i, %j) {
    %a = arith.cmpi eq, %i, %j : i64
    %b = arith.cmpi slt, %i, %j : i64
    %0 = arith.ori %a, %b : i1
    sp.yield %0
  }
  sp.mask layer 1 (%i, %j) {
    %a = arith.cmpi sge, %i, %j : i64
    sp.yield %a
  }
}
