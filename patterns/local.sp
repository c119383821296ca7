// local.sp: a sliding window over the previous w positions (including the
// query itself). Alone it cannot see further back than w; the paper's strided
// and fixed patterns add a second factor for that.
pattern local(w = 256) {
  causal;
  heads = i - j < w;
}
