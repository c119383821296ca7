// Divisors and moduli must be positive compile-time constants.
// RUN: sparsec %s --split-input-file --verify-diagnostics

pattern p() {
  // expected-error @+1 {{the divisor of '%' must be a positive compile-time constant, but it depends on the query position 'i'}}
  heads = j % i == 0;
}

// -----

pattern p() {
  let w = j + 1;
  // expected-error @+1 {{the divisor of '/' must be a positive compile-time constant, but it depends on the key position 'j' through 'w'}}
  heads = i / w == 0;
}

// -----

pattern p(l = 4) {
  // expected-error @+1 {{the divisor of '%' must be a positive compile-time constant, but it depends on the head index 'h'}}
  heads[h] = i % (l * h + 1) == 0;
}

// -----

pattern p() {
  // expected-error @+1 {{the divisor of '%' must be a positive compile-time constant, but it depends on the sequence length 'n' (pass --seq-len to fix n)}}
  heads = i % (n / 4) == 0;
}

// -----

pattern p(l = 16, c = 4) {
  let w = l - 4 * c;
  // expected-error @+1 {{the divisor of '/' must be positive, but it is 0 (l = 16, c = 4)}}
  heads = i / w == j / w;
}

// -----

pattern p() {
  // expected-error @+1 {{the divisor of '%' must be positive, but it is -2}}
  heads = i % -2 == 0;
}

// -----

pattern p() {
  // expected-error @+1 {{integer overflow in a constant expression}}
  heads = i < 9223372036854775807 + 1;
}
