#!/usr/bin/env python3
"""Sums Nsight Compute's --csv --page raw gpu__time_duration per kernel name.

  python3 scripts/ncu-summary.py ncu.log   (the log may hold other lines)
"""
import csv
import sys
from collections import defaultdict


def main():
    lines = open(sys.argv[1], errors="replace").read().splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
    if start is None:
        sys.exit("no ncu CSV table in " + sys.argv[1])
    rows = list(csv.reader(l for l in lines[start:] if l.startswith('"')))
    head = rows[0]
    name_col = head.index("Kernel Name")
    time_col = head.index("gpu__time_duration.sum")
    total = defaultdict(float)
    count = defaultdict(int)
    unit = rows[1][time_col] if len(rows) > 1 else ""
    for r in rows[2:] if unit and not unit[0].isdigit() else rows[1:]:
        try:
            t = float(r[time_col].replace(",", ""))
        except ValueError:
            continue
        name = r[name_col].split("(")[0]
        total[name] += t
        count[name] += 1
    all_t = sum(total.values())
    print(f"{'kernel':<40} {'launches':>8} {'total':>12} {'mean':>10}  ({unit})")
    for name in sorted(total, key=total.get, reverse=True):
        print(f"{name:<40} {count[name]:>8} {total[name]:>12.1f} {total[name]/count[name]:>10.2f}")
    print(f"{'all':<40} {sum(count.values()):>8} {all_t:>12.1f}")


if __name__ == "__main__":
    main()
