// Types: int and bool never mix.
// RUN: sparsec %s --split-input-file --verify-diagnostics

pattern p() {
  // expected-error @+1 {{operator '+' expects integer operands, but the right operand is boolean}}
  heads = i + true < 3;
}

// -----

pattern p() {
  // expected-error @+1 {{operator '<' expects integer operands, but the left operand is boolean}}
  heads = (i < j) < 1;
}

// -----

pattern p() {
  // expected-error @+1 {{operator '-' expects an integer operand, but the operand is boolean}}
  heads = -(i < j) < 0;
}

// -----

pattern p() {
  // expected-error @+1 {{operator '&&' expects boolean operands, but the right operand is an integer}}
  heads = i < j && 1;
}

// -----

pattern p() {
  // expected-error @+1 {{operator '||' expects boolean operands, but both operands are integers}}
  heads = i || j;
}

// -----

pattern p() {
  // expected-error @+1 {{operator '!' expects a boolean operand, but the operand is an integer}}
  heads = !i;
}

// -----

pattern p() {
  // expected-error @+1 {{operator '==' expects operands of the same type, but the left operand is an integer and the right operand is boolean}}
  heads = i == (j < 2);
}

// -----

pattern p() {
  // expected-error @+1 {{'min' expects integer arguments, but the first argument is boolean}}
  heads = min(i < j, 2) > 0;
}

// -----

pattern p() {
  // expected-error @+1 {{'abs' expects an integer argument, but the argument is boolean}}
  heads = abs(false) > 0;
}

// -----

pattern p() {
  // expected-error @+1 {{the attention mask must be a boolean expression, but this is an integer expression}}
  heads = i - j;
}

// -----

pattern p() {
  // expected-error @+1 {{the attention mask must be a boolean expression, but this is an integer expression}}
  layers = [i < j, j % 2];
}
