// fixed_heads.sp: fixed attention where each head reads its own c-wide
// summary sub-block (end of paper section 4.3): with 8 heads and c = l / 8 the
// heads together cover whole blocks, while each stays as sparse as c allows.
pattern fixed_heads(l = 128, c = 16) {
  causal;
  let block = i / l == j / l;
  heads[h] = block || (j % l >= l - c * (h + 1) && j % l < l - c * h);
}
