// Names: parameters, lets, builtins.
// RUN: sparsec %s --split-input-file --verify-diagnostics

// expected-note @+2 {{previously defined here}}
// expected-error @+1 {{duplicate parameter 'l'}}
pattern p(l = 1, l = 2) {
  heads = i - j < l;
}

// -----

// expected-error @+1 {{parameter 'n' redefines the builtin 'n' (the sequence length)}}
pattern p(n = 8) {
  heads = true;
}

// -----

pattern p() {
  // expected-note @+1 {{previously defined here}}
  let near = i - j < 4;
  // expected-error @+1 {{duplicate let 'near'}}
  let near = i - j < 8;
  heads = near;
}

// -----

// expected-note @+1 {{parameter 'l' is defined here}}
pattern p(l = 4) {
  // expected-error @+1 {{let 'l' redefines the parameter 'l'}}
  let l = 8;
  heads = i - j < l;
}

// -----

pattern p() {
  // expected-error @+1 {{let 'j' redefines the builtin 'j' (the key position)}}
  let j = 0;
  heads = i < j;
}

// -----

pattern p() {
  // expected-error @+1 {{'near' is used before its definition}}
  heads = near;
  // expected-note @+1 {{'near' is defined here}}
  let near = i - j < 4;
}

// -----

pattern p(l = 4) {
  let row = i - j < l;
  // expected-error @+1 {{unknown name 'rwo'; did you mean 'row'?}}
  heads = row || rwo;
}

// -----

pattern p() {
  // expected-error @+1 {{unknown name 'width'}}
  heads = i - j < width;
}

// -----

pattern p() {
  // expected-error @+1 {{the head index 'h' is only defined in a pattern with 'heads[h] = ...'}}
  heads = j % 8 == h;
}

// -----

pattern p() {
  // expected-warning @+1 {{'far' is never used}}
  let far = i - j > 64;
  heads = i - j < 4;
}
