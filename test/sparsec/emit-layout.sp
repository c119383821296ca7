// --emit=layout: JSON with the maps, classes, schedule or tables, kernels.
// RUN: sparsec %s --seq-len 300 --emit=layout | FileCheck %s

// Fixed attention at l = 64, c = 16, n = 300 (not a multiple of the block).
// CHECK: {"pattern":"fixed","seq_len":300,"causal":true,"params":{"l":64,"c":16},"block_q":64,"block_k":64,"masks":[
// CHECK-SAME: {"components":[
// CHECK-SAME: {"index":0,"query_map":"identity","key_map":"identity","query_blocks":5,"key_blocks":5,"empty_blocks":20,"full_blocks":0,"partial_blocks":5,"useful_pairs":9310,"computed_pairs":18320,
// CHECK-SAME: "schedule":{"kind":"range","begin":[0,1,2,3,4],"end":[1,2,3,4,5],"full_begin":[0,1,2,3,4],"full_end":[0,1,2,3,4]}}
// CHECK-SAME: {"index":1,"query_map":"identity","key_map":"gather(64, 48..63)","query_blocks":5,"key_blocks":1,
// CHECK-SAME: "kernels":[{"query_map":"identity","components":[0,1]}]}]
// CHECK-SAME: "totals":{"useful_pairs":18270,

// Block sizes and parameters change the maps the search picks.
// RUN: sparsec %s --seq-len 256 -D l=16 -D c=4 --block-q 16 --block-k 16 --emit=layout | FileCheck %s --check-prefix=SMALL
// SMALL: "key_map":"gather(16, 12..15)"

// Tables too large for the limit are an error at the mask, not an
// allocation failure.
// RUN: not sparsec %s --seq-len 1048576 --emit=layout --table-limit-mib 16 -o %t.json 2>&1 | FileCheck %s --check-prefix=LIMIT
// LIMIT: emit-layout.sp:[[@LINE+6]]:3: error: the block tables of this pattern need more than 16 MiB at n = 1048576; use larger blocks or a smaller n

pattern fixed(l = 64, c = 16) {
  causal;
  let block   = i / l == j / l;
  let summary = j % l >= l - c;
  heads = block || summary;
}
