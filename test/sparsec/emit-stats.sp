// The compiler's block statistics for the paper's two patterns. The index-map
// search finds the paper's section 5.5 layouts on its own: the strided column
// as a transposed band, fixed attention's summary cells gathered densely.
// "by key" is the mean number of query blocks that reach a reached key
// block (the dK/dV kernels' list length, which picks wgmma or mma.sync).

// RUN: sparsec %s --pattern fixed --seq-len 16384 --emit=stats | FileCheck %s --check-prefix=FIXED
// FIXED:      pattern fixed at n = 16384, blocks 64x64, causal
// FIXED:      mask query map key map blocks empty full partial density efficiency by key
// FIXED-NEXT: all heads #0 identity identity 65536 65152 128 256 0.7873% 0.6719 1.5
// FIXED-NEXT: all heads #1 identity gather(128, 96..127) 16384 8192 8064 128 24.8032% 0.9922 128.0
// FIXED-NEXT:   all heads: 1 kernel, density 25.5905% of the causal pairs
// FIXED-NEXT: total 73344 8192 384 0.9778

// RUN: sparsec %s --pattern strided --seq-len 16384 --emit=stats | FileCheck %s --check-prefix=STRIDED
// STRIDED:      all heads #0 identity identity 65536 64771 255 510 1.5563% 0.6667 3.0
// STRIDED-NEXT: all heads #1 transpose(128) transpose(128) 65536 65152 128 256 0.7751% 0.6615 1.5
// STRIDED-NEXT:   all heads: 2 kernels
// STRIDED-NEXT: total 129923 383 766 0.6649

// Block sizes are options and n need not be a multiple of them.
// RUN: sparsec %s --pattern fixed --seq-len 1000 --block-q 128 --block-k 32 --emit=stats | FileCheck %s --check-prefix=BLOCKS
// BLOCKS: pattern fixed at n = 1000, blocks 128x32, causal
// BLOCKS: all heads #0 identity identity 256 {{.*}}

// RUN: not sparsec %s --pattern fixed --emit=stats 2>&1 | FileCheck %s --check-prefix=NOSEQ
// NOSEQ: sparsec: error: --emit=stats needs a sequence length (--seq-len N)
// RUN: not sparsec %s --seq-len 64 --emit=layout 2>&1 | FileCheck %s --check-prefix=TWO
// TWO: sparsec: error: --emit=layout takes one pattern, but the file has 2; pick one with --pattern
// RUN: not sparsec %s --seq-len 64 --block-k 0 --emit=stats 2>&1 | FileCheck %s --check-prefix=BLOCK0
// BLOCK0: sparsec: error: block sizes must be positive, but are 64x0

pattern fixed(l = 128, c = 32) {
  causal;
  let block   = i / l == j / l;
  let summary = j % l >= l - c;
  heads = block || summary;
}

pattern strided(l = 128) {
  causal;
  let row    = i - j < l;
  let column = (i - j) % l == 0;
  heads = row || column;
}
