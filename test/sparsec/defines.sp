// -D overrides a parameter's default; the later of two wins; the prefix form
// -Dl=... works too; an override reaches the AST as well as the IR.

// RUN: sparsec %s -D l=64 | FileCheck %s --check-prefix=ONE
// ONE: sp.pattern @p(l = 64, c = 8)

// RUN: sparsec %s -D l=64 -Dc=-2 -D l=512 | FileCheck %s --check-prefix=TWO
// TWO: sp.pattern @p(l = 512, c = -2)

// RUN: sparsec %s -D c=3 --emit=ast | FileCheck %s --check-prefix=AST
// AST: pattern 'p' (l = 128, c = 3 [-D])

// RUN: not sparsec %s -D x=1 2>&1 | FileCheck %s --check-prefix=UNKNOWN
// UNKNOWN: sparsec: error: unknown parameter 'x' in -D x=1
// UNKNOWN-NEXT: defines.sp:[[@LINE+8]]:9: note: pattern 'p' has parameters: l, c

// RUN: not sparsec %s -D l 2>&1 | FileCheck %s --check-prefix=NOEQ
// NOEQ: sparsec: error: -D expects NAME=VALUE, but got 'l'

// RUN: not sparsec %s -D l=12x 2>&1 | FileCheck %s --check-prefix=NOTINT
// NOTINT: sparsec: error: -D l=12x: '12x' is not a 64-bit integer

pattern p(l = 128, c = 8) {
  causal;
  heads = i / l == j / l || j % l >= l - c;
}
