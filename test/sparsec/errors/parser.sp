// Syntax errors: the first one stops the parse.
// RUN: sparsec %s --split-input-file --verify-diagnostics

// expected-error @+1 {{expected 'pattern'}}
let x = 1;

// -----

// expected-error @+1 {{expected a pattern name after 'pattern', but 'heads' is a keyword}}
pattern heads() {
}

// -----

// expected-error @+1 {{expected '(' after the pattern name}}
pattern p {
  heads = true;
}

// -----

// expected-error @+1 {{expected '=' and a default value after parameter 'l'}}
pattern p(l) {
  heads = true;
}

// -----

// expected-error @+1 {{expected an integer default value for parameter 'l'}}
pattern p(l = c) {
  heads = true;
}

// -----

// expected-error @+1 {{expected ',' or ')' after a parameter}}
pattern p(l = 1 c = 2) {
  heads = true;
}

// -----

// expected-error @+1 {{expected '{' to begin the body of pattern 'p'}}
pattern p() heads = true;

// -----

pattern p() {
  // expected-error @+1 {{expected a statement ('causal', 'let', 'heads' or 'layers') or '}'}}
  head = true;
}

// -----

// A missing ';' is reported right after the statement, not at the next
// token.
pattern p() {
  // expected-error @+1 {{expected ';' after 'causal'}}
  causal
  heads = true;
}

// -----

pattern p() {
  // expected-error @+1 {{expected a name after 'let', but 'max' is a keyword}}
  let max = 1;
  heads = true;
}

// -----

pattern p() {
  // expected-error @+1 {{expected '=' after 'let near'}}
  let near i - j < 4;
  heads = near;
}

// -----

pattern p() {
  // expected-error @+1 {{expected ';' after the let statement}}
  let near = i - j < 4
  heads = near;
}

// -----

pattern p() {
  // expected-error @+1 {{expected ';' after the heads statement; did you mean '=='?}}
  heads = i % 2 = 0;
}

// -----

pattern p() {
  // expected-error @+1 {{expected 'h' as the head index}}
  heads[k] = true;
}

// -----

pattern p() {
  // expected-error @+1 {{expected ']' after the head index 'h'}}
  heads[h = true;
}

// -----

pattern p() {
  // expected-error @+1 {{expected '=' after 'heads[h]'}}
  heads[h] true;
}

// -----

pattern p() {
  // expected-error @+1 {{expected '=' or '[h]' after 'heads'}}
  heads == true;
}

// -----

pattern p() {
  // expected-error @+1 {{expected '[' to begin the list of layer masks}}
  layers = i < j;
}

// -----

pattern p() {
  // expected-error @+1 {{expected expression}}
  layers = [];
}

// -----

pattern p() {
  // expected-error @+1 {{expected ',' or ']' in the list of layer masks}}
  layers = [i < j; true];
}

// -----

pattern p() {
  // expected-error @+1 {{expected expression}}
  heads = i < ;
}

// -----

pattern p(l = 4) {
  // expected-error @+1 {{comparisons cannot be chained; combine them with '&&'}}
  heads = 0 <= i - j < l;
}

// -----

pattern p() {
  // expected-note @+2 {{to match this '('}}
  // expected-error @+1 {{expected ')'}}
  heads = (i < j;
}

// -----

pattern p() {
  // expected-error @+1 {{'min' takes 2 arguments, but 1 was given}}
  heads = min(i) < j;
}

// -----

pattern p() {
  // expected-error @+1 {{'abs' takes 1 argument, but more were given}}
  heads = abs(i, j) < 4;
}

// -----

pattern p() {
  // expected-error @+1 {{expected '(' after 'max'}}
  heads = max < j;
}

// -----

pattern p() {
  heads = true;
// expected-error @+1 {{expected '}' at the end of pattern 'p'}}
