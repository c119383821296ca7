// strided_interleaved.sp: one factor per residual block (paper section 5.1,
// equation 2): residual block r uses entry r % 2, so two consecutive blocks
// together connect every pair j <= i.
pattern strided_interleaved(l = 128) {
  causal;
  layers = [i - j < l, (i - j) % l == 0];   // residual block r uses entry r % 2
}
