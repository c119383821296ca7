// RUN: sparsec %s --emit=ast | FileCheck %s

// The checked tree: names resolved to their kind, each node typed and located.

// CHECK:      pattern 'p' (l = 128) causal <[[@LINE+16]]:9>
// CHECK-NEXT:   let near : bool <[[@LINE+17]]:7>
// CHECK-NEXT:     binary '<' : bool
// CHECK-NEXT:       call 'abs' : int
// CHECK-NEXT:         binary '-' : int
// CHECK-NEXT:           name 'i' query : int
// CHECK-NEXT:           name 'j' key : int
// CHECK-NEXT:       name 'l' param : int
// CHECK-NEXT:   heads <[[@LINE+11]]:3>
// CHECK-NEXT:     binary '||' : bool
// CHECK-NEXT:       name 'near' let : bool
// CHECK-NEXT:       binary '==' : bool
// CHECK-NEXT:         unary '-' : int
// CHECK-NEXT:           name 'j' key : int
// CHECK-NEXT:         name 'n' seq-len : int

pattern p(l = 128) {
  causal;
  let near = abs(i - j) < l;
  heads = near || -j == n;
}
