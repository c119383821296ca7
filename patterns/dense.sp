// dense.sp: full causal attention (every key up to the query). The baseline
// that each sparse pattern is measured against (the paper's Table 2 "Dense").
pattern dense() {
  causal;
  heads = true;
}
