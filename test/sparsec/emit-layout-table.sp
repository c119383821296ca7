// A component whose key blocks are not one range per query block gets CSR
// tables: full and partial apart, and their transposes by key block.
// RUN: sparsec %s --seq-len 128 --block-q 16 --block-k 16 --emit=layout 2>/dev/null | FileCheck %s
// CHECK: "schedule":{"kind":"table","full":{"offsets":[0,2,4,6,8,10,12,14,16],"indices":[0,4,0,4,0,4,0,4,0,4,0,4,0,4,0,4]},"partial":{"offsets":[0,0,0,0,0,0,0,0,0],"indices":[]},"full_by_key":{"offsets":[0,8,8,8,8,16,16,16,16],"indices":[0,1,2,3,4,5,6,7,0,1,2,3,4,5,6,7]},"partial_by_key":{"offsets":[0,0,0,0,0,0,0,0,0],"indices":[]}}

pattern holes() {
  heads = !(j >= 16 && (j < 64 || j >= 80));
}
