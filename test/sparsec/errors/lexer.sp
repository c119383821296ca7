// Lexical errors: each stops the parse with a single diagnostic.
// RUN: sparsec %s --split-input-file --verify-diagnostics
// RUN: not sparsec %s 2>&1 | FileCheck %s --check-prefix=CARET

// The printed form: file:line:col, the source line and a caret.
// CARET: lexer.sp:[[@LINE+5]]:13: error: unexpected character '#'
// CARET-NEXT: {{^}}  heads = i # j;
// CARET-NEXT: {{^}}            ^
pattern p() {
  // expected-error @+1 {{unexpected character '#'}}
  heads = i # j;
}

// -----

pattern p() {
  // expected-error @+1 {{unexpected character '&'; did you mean '&&'?}}
  heads = i < j & true;
}

// -----

pattern p() {
  // expected-error @+1 {{unexpected character '|'; did you mean '||'?}}
  heads = i < j | true;
}

// -----

pattern p() {
  // expected-error @+1 {{unexpected character '$'}}
  let $x = 1;
  heads = true;
}

// -----

// The largest literal is INT64_MAX; one more does not fit.
pattern p(a = 9223372036854775807,
  // expected-error @+1 {{integer literal '9223372036854775808' is out of range for a 64-bit integer}}
  b = 9223372036854775808) {
  heads = true;
}

// -----

pattern p() {
  // expected-error @+1 {{integer literal '100000000000000000000' is out of range for a 64-bit integer}}
  heads = i < 100000000000000000000;
}
