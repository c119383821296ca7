// RUN: sparse-opt %s --sp-specialize="seq-len=1024 num-heads=2 define=l=64" | FileCheck %s
// RUN: not sparse-opt %s --sp-specialize="define=nosuch=1" 2>&1 | FileCheck %s --check-prefix=UNKNOWN

// Parameters (with -D style overrides) and n become constants, and the mask
// folds: l = 64 makes `l - c` the constant 48.

// CHECK-LABEL: sp.pattern @fixed(l = 64, c = 16) causal attributes {num_heads = 2 : i64, seq_len = 1024 : i64} {
// CHECK-NEXT:    sp.mask (%i, %j) {
// CHECK-DAG:       %[[C48:.*]] = arith.constant 48 : i64
// CHECK-DAG:       %[[C64:.*]] = arith.constant 64 : i64
// CHECK:           %[[M:.*]] = sp.mod %j, %[[C64]]
// CHECK:           arith.cmpi sge, %[[M]], %[[C48]] : i64
// CHECK-NOT:       sp.param
// UNKNOWN: error: no pattern has a parameter named 'nosuch'
sp.pattern @fixed(l = 128, c = 16) causal {
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

// A per-head mask becomes one mask per head with h replaced by the head
// index; `n` folds to the sequence length.

// CHECK-LABEL: sp.pattern @heads() attributes {num_heads = 2 : i64, seq_len = 1024 : i64} {
// CHECK-NEXT:    sp.mask head 0 (%i, %j) {
// CHECK-DAG:       %[[C512:.*]] = arith.constant 512 : i64
// CHECK-DAG:       %[[C0:.*]] = arith.constant 0 : i64
// CHECK:           %[[D:.*]] = sp.div %i, %[[C512]]
// CHECK-NEXT:      %[[E:.*]] = arith.cmpi eq, %[[D]], %[[C0]] : i64
// CHECK-NEXT:      sp.yield %[[E]]
// CHECK:         sp.mask head 1 (%i, %j) {
// CHECK:           %[[C1:.*]] = arith.constant 1 : i64
// CHECK:           arith.cmpi eq, %{{.*}}, %[[C1]] : i64
sp.pattern @heads() {
  sp.mask (%i, %j, %h) {
    %n = sp.seq_len
    %c2 = arith.constant 2 : i64
    %half = sp.div %n, %c2
    %0 = sp.div %i, %half
    %1 = arith.cmpi eq, %0, %h : i64
    sp.yield %1
  }
}
