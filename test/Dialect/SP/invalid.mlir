// RUN: sparse-opt %s -split-input-file -verify-diagnostics

// expected-error @+1 {{'sp.pattern' op has no mask}}
sp.pattern @empty(l = 1) {
}

// -----

// expected-error @+1 {{'sp.pattern' op has two parameters named 'l'}}
sp.pattern @dup(l = 1, l = 2) {
  sp.mask (%i, %j) {
    %t = arith.constant true
    sp.yield %t
  }
}

// -----

sp.pattern @two() {
  sp.mask (%i, %j) {
    %t = arith.constant true
    sp.yield %t
  }
  // expected-error @+1 {{'sp.mask' op is a second mask of a pattern without layers}}
  sp.mask (%i, %j) {
    %t = arith.constant true
    sp.yield %t
  }
}

// -----

sp.pattern @gap() {
  sp.mask layer 0 (%i, %j) {
    %t = arith.constant true
    sp.yield %t
  }
  // expected-error @+1 {{'sp.mask' op has layer index 2 but is entry 1 of the layers}}
  sp.mask layer 2 (%i, %j) {
    %t = arith.constant true
    sp.yield %t
  }
}

// -----

sp.pattern @mixed() {
  sp.mask layer 0 (%i, %j) {
    %t = arith.constant true
    sp.yield %t
  }
  // expected-error @+1 {{'sp.mask' op needs a layer index: the pattern is layered}}
  sp.mask (%i, %j) {
    %t = arith.constant true
    sp.yield %t
  }
}

// -----

sp.pattern @args() {
  // expected-error @+1 {{'sp.mask' op takes (i, j) or (i, j, h), but has 1 arguments}}
  sp.mask (%i) {
    %t = arith.constant true
    sp.yield %t
  }
}

// -----

sp.pattern @param(l = 4) {
  sp.mask (%i, %j) {
    // expected-error @+1 {{'sp.param' op refers to 'k', which is not a parameter of pattern @param}}
    %k = sp.param "k"
    %0 = arith.cmpi eq, %i, %k : i64
    sp.yield %0
  }
}

// -----

sp.pattern @zero() {
  sp.mask (%i, %j) {
    %c0 = arith.constant 0 : i64
    // expected-error @+1 {{'sp.mod' op divisor must be positive, but is 0}}
    %0 = sp.mod %i, %c0
    %1 = arith.cmpi eq, %0, %j : i64
    sp.yield %1
  }
}

// -----

sp.pattern @negative() {
  sp.mask (%i, %j) {
    %c = arith.constant -4 : i64
    // expected-error @+1 {{'sp.div' op divisor must be positive, but is -4}}
    %0 = sp.div %i, %c
    %1 = arith.cmpi eq, %0, %j : i64
    sp.yield %1
  }
}

// -----

// expected-error @+1 {{'sp.pattern' op sequence length must be positive, but is 0}}
sp.pattern @n0() attributes {seq_len = 0 : i64} {
  sp.mask (%i, %j) {
    %t = arith.constant true
    sp.yield %t
  }
}

// -----

sp.pattern @yield_type() {
  sp.mask (%i, %j) {
    // expected-error @+1 {{'sp.yield' op operand #0 must be variadic of 1-bit signless integer, but got 'i64'}}
    "sp.yield"(%i) : (i64) -> ()
  }
}

// -----

// expected-error @+1 {{'sp.mask' op expects parent op 'sp.pattern'}}
sp.mask (%i, %j) {
  %t = arith.constant true
  sp.yield %t
}

// -----

sp.pattern @head_gap() {
  sp.mask head 0 (%i, %j) {
    %t = arith.constant true
    sp.yield %t
  }
  // expected-error @+1 {{'sp.mask' op is for head 2 but follows head 0}}
  sp.mask head 2 (%i, %j) {
    %t = arith.constant true
    sp.yield %t
  }
}

// -----

sp.pattern @head_args() {
  // expected-error @+1 {{'sp.mask' op is specialized to head 0 and so takes (i, j), but has 3 arguments}}
  sp.mask head 0 (%i, %j, %h) {
    %t = arith.constant true
    sp.yield %t
  }
}

// -----

sp.pattern @no_components() {
  sp.mask (%i, %j) {
    // expected-error @+1 {{'sp.yield' op must yield at least one component}}
    sp.yield
  }
}

// -----

sp.pattern @maps() {
  // expected-error @+1 {{'sp.mask' op has 2 index map pairs for 1 components}}
  sp.mask (%i, %j) attributes {index_maps = [["identity", "identity"], ["identity", "identity"]]} {
    %t = arith.constant true
    sp.yield %t
  }
}
