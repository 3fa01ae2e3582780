"""compare_csv.py: two CSV outputs of one program (e.g. classify on the GPU and on the CPU), row by row.

  python3 compare_csv.py A B --case NAME --max D [--key COLUMN]

Rows are matched by --key (default: the first column); both files must have the same header and the
same keys. Numeric cells are compared by absolute difference (the largest must be at most --max);
other cells (a predicted class name) must be equal. A class index or name that changes counts too: in
fp32 the two devices' probabilities differ by about 1e-6, so only a near tie could swap two classes.
Prints one results row (JSON) for scripts/gpu/results.py and exits 0 when it holds, 1 when not, on NaN,
or when the files do not match up. Standard library only.
"""
import argparse
import csv
import json
import math
import sys


def read(path, key):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path} is empty")
    header, body = rows[0], rows[1:]
    key = key or header[0]
    if key not in header:
        raise ValueError(f"{path} has no column {key!r}")
    k = header.index(key)
    return header, {r[k]: r for r in body}


def number(cell):
    try:
        return float(cell)
    except ValueError:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--case", required=True)
    ap.add_argument("--max", type=float, required=True, help="largest absolute difference of a numeric cell")
    ap.add_argument("--key", default=None, help="the column that names a row (default: the first)")
    args = ap.parse_args()
    problems = []
    try:
        ha, a = read(args.a, args.key)
        hb, b = read(args.b, args.key)
    except (OSError, ValueError) as e:
        print(f"compare_csv: {e}", file=sys.stderr)
        return 1
    if ha != hb:
        problems.append("the headers differ")
    if set(a) != set(b):
        problems.append(f"{len(set(a) ^ set(b))} rows are in one file only")
    worst, where, text_differ, cells = 0.0, "", 0, 0
    for name in sorted(set(a) & set(b)):
        if not len(a[name]) == len(b[name]) == len(ha):
            problems.append(f"{name}: {len(a[name])} and {len(b[name])} cells for {len(ha)} columns")
            continue
        for col, x, y in zip(ha, a[name], b[name]):
            u, v = number(x), number(y)
            if u is None or v is None:
                text_differ += x != y
                continue
            cells += 1
            if not (math.isfinite(u) and math.isfinite(v)):
                problems.append(f"{name} {col}: a value that is not finite")
                continue
            if abs(u - v) > worst:
                worst, where = abs(u - v), f"{name} {col}"
    if not a:
        problems.append(f"{args.a} has no rows")
    if text_differ:
        problems.append(f"{text_differ} text cells differ")
    ok = not problems and worst <= args.max
    print(json.dumps({"case": args.case, "impl": "nimbus", "ok": ok, "max_abs_diff": worst, "bound_max": args.max,
                      "at": where, "rows": len(a), "numeric_cells": cells, "text_cells_differing": text_differ,
                      "problems": problems[:5]}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
