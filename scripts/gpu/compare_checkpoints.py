"""compare_checkpoints.py: two safetensors checkpoints, tensor by tensor: the largest relative difference.

  python3 compare_checkpoints.py A B --case NAME --max R [--min R]

For the device script's data-parallel check (scripts/gpu_check.sh, phase distributed): one process
with the global batch (A) against two ranks sharing the GPU (B), the measure tests/apps/test_app_runs.cpp
uses on the CPU: |a - b| / (1e-3 + |b|) over every float32 element of every tensor (weights, optimiser
state). Prints one results row (JSON) and exits 0 when the difference is at most --max (and at least
--min, for a control run that must differ), 1 otherwise or when a tensor is missing, differs in shape or
holds a value that is not finite. Standard library only: the GPU image's python3 has numpy, but CI's
does not need it.
"""
import argparse
import array
import json
import math
import struct
import sys


def load(path):
    """{name: (shape, floats or None)}: the F32 tensors' values; None for another dtype (compared by
    presence and shape only: the checkpoints hold float32 weights and optimiser state)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack_from("<Q", blob, 0)
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info.get("dtype") != "F32":
            out[name] = (tuple(info["shape"]), None)
            continue
        lo, hi = info["data_offsets"]
        values = array.array("f")
        values.frombytes(blob[base + lo:base + hi])
        if sys.byteorder != "little":
            values.byteswap()
        out[name] = (tuple(info["shape"]), values)
    return out


def difference(a, b):
    """(largest relative difference, problems): problems name what makes the comparison fail outright."""
    worst, problems = 0.0, []
    problems += [f"{name} missing in the first" for name in b if name not in a]
    for name, (shape, x) in a.items():
        if name not in b:
            problems.append(f"{name} missing in the second")
            continue
        shape_b, y = b[name]
        if shape != shape_b or (x is None) != (y is None):
            problems.append(f"{name}: shape or dtype differ ({shape} against {shape_b})")
            continue
        if x is None:
            continue
        for u, v in zip(x, y):
            if not (math.isfinite(u) and math.isfinite(v)):
                problems.append(f"{name}: a value that is not finite")
                break
            worst = max(worst, abs(u - v) / (1e-3 + abs(v)))
    return worst, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--case", required=True, help="the results row's case name")
    ap.add_argument("--max", type=float, required=True, help="largest relative difference allowed")
    ap.add_argument("--min", type=float, default=0.0, help="smallest relative difference required (a control)")
    args = ap.parse_args()
    try:
        a, b = load(args.a), load(args.b)
    except (OSError, ValueError, KeyError, struct.error) as e:
        print(f"compare_checkpoints: {e}", file=sys.stderr)
        return 1
    worst, problems = difference(a, b)
    compared = sum(1 for _, x in a.values() if x is not None)
    if not compared:
        problems.append(f"{args.a} holds no float32 tensor")
    ok = not problems and args.min <= worst <= args.max
    print(json.dumps({"case": args.case, "impl": "nimbus", "ok": ok, "max_rel_diff": worst, "bound_max": args.max,
                      "bound_min": args.min, "tensors": compared, "not_float32": len(a) - compared,
                      "problems": problems[:5]}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
