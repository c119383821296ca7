// RUN: sparse-opt %s -canonicalize | FileCheck %s

// sp.div and sp.mod fold with floor semantics (Python's // and %), which differ
// from C's truncation for negative dividends.

// CHECK-LABEL: sp.pattern @fold()
// CHECK:  %[[A:.*]] = arith.constant -3 : i64
// CHECK:  %[[B:.*]] = arith.constant 2 : i64
// CHECK:  arith.cmpi eq, %i, %[[A]]
// CHECK:  arith.cmpi eq, %j, %[[B]]
// CHECK-NOT: sp.div
// CHECK-NOT: sp.mod
sp.pattern @fold() {
  sp.mask (%i, %j) {
    %m7 = arith.constant -7 : i64
    %c3 = arith.constant 3 : i64
    %q = sp.div %m7, %c3
    %r = sp.mod %m7, %c3
    %0 = arith.cmpi eq, %i, %q : i64
    %1 = arith.cmpi eq, %j, %r : i64
    %2 = arith.andi %0, %1 : i1
    sp.yield %2
  }
}

// x / 1 is x and x % 1 is 0 whatever x is.
// CHECK-LABEL: sp.pattern @unit()
// CHECK:  %[[Z:.*]] = arith.constant 0 : i64
// CHECK:  arith.cmpi eq, %i, %[[Z]]
sp.pattern @unit() {
  sp.mask (%i, %j) {
    %c1 = arith.constant 1 : i64
    %q = sp.div %j, %c1
    %r = sp.mod %i, %c1
    %0 = arith.cmpi eq, %q, %j : i64
    %1 = arith.cmpi eq, %i, %r : i64
    %2 = arith.andi %0, %1 : i1
    sp.yield %2
  }
}
