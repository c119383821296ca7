// A file may hold several patterns: all are compiled unless --pattern picks
// one; -D then applies to the patterns that declare the parameter.

// RUN: sparsec %s | FileCheck %s --check-prefix=ALL
// ALL: sp.pattern @wide(w = 512) causal
// ALL: sp.pattern @narrow(w = 16, s = 4)

// RUN: sparsec %s --pattern narrow -D s=8 | FileCheck %s --check-prefix=ONE
// ONE-NOT: @wide
// ONE: sp.pattern @narrow(w = 16, s = 8)
// ONE-NOT: @wide

// RUN: not sparsec %s --pattern wide -D s=8 2>&1 | FileCheck %s --check-prefix=NOS
// NOS: sparsec: error: unknown parameter 's' in -D s=8
// NOS-NEXT: select-pattern.sp:[[@LINE+9]]:9: note: pattern 'wide' has parameters: w

// RUN: not sparsec %s --pattern narow 2>&1 | FileCheck %s --check-prefix=MISSING
// MISSING: sparsec: error: no pattern named 'narow' in {{.*}}select-pattern.sp; it has: wide, narrow

// RUN: sparsec %s -D w=32 | FileCheck %s --check-prefix=BOTH
// BOTH: sp.pattern @wide(w = 32)
// BOTH: sp.pattern @narrow(w = 32, s = 4)

pattern wide(w = 512) {
  causal;
  heads = i - j < w;
}

pattern narrow(w = 16, s = 4) {
  heads = abs(i - j) < w || (i - j) % s == 0;
}
