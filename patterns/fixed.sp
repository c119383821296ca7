// fixed.sp: text (paper section 4.3, Figure 3c). Each position attends to its
// own block of l positions and to the last c cells of every block, which
// summarize the blocks for the positions after them.
pattern fixed(l = 128, c = 32) {
  causal;
  let block   = i / l == j / l;     // A(1): the same block of l positions
  let summary = j % l >= l - c;     // A(2): the last c cells of every block
  heads = block || summary;
}
