#!/usr/bin/env python3
"""Side-by-side table of sparsetx's kernels and their peers from the JSON that
attention-bench and peers.py wrote in the same GPU run.

    python3 bench/compare.py SPARSETX.json PEERS.json

The SDPA columns take, per case, the fastest of the SDPA backends peers.py
measured (forward and forward+backward chosen apart), and the line ends with
their names (sdpa: FORWARD/FORWARD+BACKWARD backend).
"""
import json
import sys


def main():
    ours = json.load(open(sys.argv[1]))["results"]
    peers = json.load(open(sys.argv[2]))["results"]
    key = lambda r: (r["pattern"], r["n"], r["head_dim"])
    flex = {key(r): r for r in peers if r["peer"] == "flex"}
    # SDPA: the fastest of its backends per case (forward and forward +
    # backward chosen apart), named in the table.
    sdpa, sdpaFb = {}, {}
    for r in peers:
        if not r["peer"].startswith("sdpa-") or "fwd_ms" not in r:
            continue
        if key(r) not in sdpa or r["fwd_ms"] < sdpa[key(r)]["fwd_ms"]:
            sdpa[key(r)] = r
        if "fwd_bwd_ms" in r and (key(r) not in sdpaFb or
                                  r["fwd_bwd_ms"] < sdpaFb[key(r)]["fwd_bwd_ms"]):
            sdpaFb[key(r)] = r
    print(f"{'pattern':<8} {'n':>6} {'D':>4} {'sparsetx ms':>12} {'flex ms':>9} "
          f"{'vs flex':>8} {'sdpa ms':>8} {'vs sdpa':>8} {'TF/s':>7} | fwd+bwd: "
          f"{'sparsetx':>9} {'flex':>8} {'vs flex':>8} {'sdpa':>7} {'vs sdpa':>8}")
    for r in ours:
        if "error" in r:
            print(f"{r['pattern']:<8} {r['n']:>6} {r['head_dim']:>4}  failed: {r['error']}")
            continue
        f = flex.get(key(r))
        s = sdpa.get(key(r))
        sb = sdpaFb.get(key(r))
        fx = f"{f['fwd_ms'] / r['fwd_ms']:.2f}x" if f else "-"
        sx = f"{s['fwd_ms'] / r['fwd_ms']:.2f}" if s else "-"
        line = (f"{r['pattern']:<8} {r['n']:>6} {r['head_dim']:>4} {r['fwd_ms']:>12.3f} "
                f"{f['fwd_ms'] if f else float('nan'):>9.3f} {fx:>8} "
                f"{s['fwd_ms'] if s else float('nan'):>8.3f} {sx:>8} {r['fwd_tflops']:>7.1f}")
        if "fwd_bwd_ms" in r:
            fb = r["fwd_bwd_ms"]
            fbx = f"{f['fwd_bwd_ms'] / fb:.2f}x" if f else "-"
            sbx = f"{sb['fwd_bwd_ms'] / fb:.2f}" if sb else "-"
            line += (f" | {'':9}{fb:>9.3f} {f['fwd_bwd_ms'] if f else float('nan'):>8.3f} "
                     f"{fbx:>8} {sb['fwd_bwd_ms'] if sb else float('nan'):>7.3f} {sbx:>8}")
        if s or sb:
            line += f"  sdpa: {(s or sb)['peer'][5:]}/{(sb or s)['peer'][5:]}"
        print(line)


if __name__ == "__main__":
    main()
