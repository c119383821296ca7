// The structure of a pattern: names unique, one causal, exactly one
// attention statement.
// RUN: sparsec %s --split-input-file --verify-diagnostics

// expected-note @+1 {{previously defined here}}
pattern p() {
  heads = true;
}
// expected-error @+1 {{duplicate pattern 'p'}}
pattern p() {
  heads = i < j;
}

// -----

pattern p() {
  // expected-note @+1 {{previously given here}}
  causal;
  // expected-error @+1 {{duplicate 'causal'}}
  causal;
  heads = true;
}

// -----

pattern p() {
  // expected-note @+1 {{attention defined here}}
  heads = true;
  // expected-error @+1 {{pattern 'p' already defines its attention; a pattern has exactly one 'heads', 'heads[h]' or 'layers' statement}}
  layers = [i < j];
}

// -----

// expected-error @+1 {{pattern 'p' defines no attention: add 'heads = ...;', 'heads[h] = ...;' or 'layers = [...];'}}
pattern p(l = 4) {
  causal;
  // expected-warning @+1 {{'near' is never used}}
  let near = i - j < l;
}
