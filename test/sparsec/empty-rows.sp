// With --seq-len, a query row that attends to no key is an error naming the
// first such row (its softmax would be undefined). Without --seq-len there is
// no n to check at.

// RUN: sparsec %s --split-input-file --verify-diagnostics --seq-len 1024
// RUN: sparsec %s --split-input-file > /dev/null

pattern summary_only(l = 128, c = 32) {
  causal;
  // expected-error @+1 {{query row i = 0 attends to no key at n = 1024 (its softmax would be undefined)}}
  heads = j % l >= l - c;
}

// -----

pattern head_gap(l = 16) {
  causal;
  // Head 2 sees only keys with j % l == 9; query rows 0..8 reach none.
  // expected-error @+1 {{query row i = 0 in head 2 attends to no key at n = 1024 (its softmax would be undefined)}}
  heads[h] = h != 2 && i == j || h == 2 && j % l == 9;
}

// -----

pattern tail(w = 4) {
  // Not causal: row i attends to keys i + 1 .. i + w, so the last row has none.
  // expected-error @+1 {{query row i = 1023 of layer 1 attends to no key at n = 1024 (its softmax would be undefined)}}
  layers = [i == j, j > i && j - i <= w];
}

// -----

// The paper's patterns have no empty row.
pattern fine(l = 128, c = 32) {
  causal;
  layers = [i / l == j / l || j % l >= l - c, i - j < l || (i - j) % l == 0];
}
