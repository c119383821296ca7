// strided.sp: images and audio (paper section 4.3, Figure 3b). One factor
// attends to the previous l positions, the other to every l-th position back,
// so with l = sqrt(n) every query reaches every earlier key in two steps.
pattern strided(l = 128) {
  causal;                           // every mask also requires j <= i
  let row    = i - j < l;           // A(1): the previous l positions
  let column = (i - j) % l == 0;    // A(2): every l-th position back
  heads = row || column;            // merged head: each head attends to the union
}
