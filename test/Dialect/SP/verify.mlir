// RUN: sparse-opt %s --sp-specialize --sp-verify --split-input-file --verify-diagnostics

// A local window alone does not connect j = 0 to i = w in one step.
// expected-warning @+1 {{pattern 'local' does not connect key j = 0 to query i = 16 within 1 step}}
sp.pattern @local(w = 16) causal attributes {seq_len = 256 : i64} {
  sp.mask (%i, %j) {
    %w = sp.param "w"
    %0 = arith.subi %i, %j : i64
    %1 = arith.cmpi slt, %0, %w : i64
    sp.yield %1
  }
}

// -----

// The strided pattern connects everything within its two factors.
sp.pattern @strided(l = 16) causal attributes {seq_len = 256 : i64} {
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

// -----

// Past n = 4096 connectivity is checked on the first 4096 positions.
// expected-warning @+1 {{pattern 'wide' does not connect key j = 0 to query i = 64 within 1 step (checked at n = 4096)}}
sp.pattern @wide() causal attributes {seq_len = 100000 : i64} {
  sp.mask (%i, %j) {
    %c64 = arith.constant 64 : i64
    %0 = arith.subi %i, %j : i64
    %1 = arith.cmpi slt, %0, %c64 : i64
    sp.yield %1
  }
}

// -----

sp.pattern @empty_row() causal attributes {seq_len = 256 : i64} {
  // expected-error @+1 {{query row i = 0 attends to no key at n = 256 (its softmax would be undefined)}}
  sp.mask (%i, %j) {
    %c8 = arith.constant 8 : i64
    %c6 = arith.constant 6 : i64
    %0 = sp.mod %j, %c8
    %1 = arith.cmpi sge, %0, %c6 : i64
    sp.yield %1
  }
}

// -----

// expected-error @+1 {{has no sequence length to verify at: run sp-specialize with seq-len first}}
sp.pattern @no_n() {
  sp.mask (%i, %j) {
    %true = arith.constant true
    sp.yield %true
  }
}
