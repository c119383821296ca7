// -D overrides and --seq-len reach sema's constant checks.
// RUN: sparsec %s -D l=0 --verify-diagnostics
// RUN: sparsec %s -D l=8 --seq-len 64 | FileCheck %s --check-prefix=OK
// RUN: not sparsec %s -D x=5 2>&1 | FileCheck %s --check-prefix=UNKNOWN

// The -D error has no source location; the notes point at each pattern.
// UNKNOWN: error: unknown parameter 'x' in -D x=5
// UNKNOWN: overrides.sp:[[@LINE+3]]:9: note: pattern 'strided' has parameters: l
// OK: sp.pattern @strided
// OK-SAME: l = 8
pattern strided(l = 128) {
  causal;
  let row = i - j < l;
  // expected-error @+1 {{the divisor of '%' must be positive, but it is 0 (l = 0)}}
  let column = (i - j) % l == 0;
  heads = row || column;
}
