#!/usr/bin/env python3
"""compare_runs.py: is a change slower? Alternating runs of two bench_models binaries, same machine.

    bench/compare_runs.py OLD_BENCH NEW_BENCH [--runs 5] [-- bench_models arguments...]

Runs OLD, NEW, OLD, NEW, ... (--runs each, alternating, so drift in the machine's speed hits both
alike), collects every case's median_ms from bench_models' JSON lines, and prints per case the median
over the runs for each binary and their ratio new/old. Exit status 1 when a case is slower by more
than --tolerance (default 3%), 0 otherwise. Build both binaries with the same flags (bench_models of
the previous commit in a git worktree, say).
"""
import argparse
import json
import statistics
import subprocess
import sys


def run(binary, args):
    out = subprocess.run([binary] + args, check=True, capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{"):
            r = json.loads(line)
            rows[r["case"]] = float(r["median_ms"])
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tolerance", type=float, default=0.03)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    a = ap.parse_args(argv[:cut])
    extra = argv[cut + 1:]  # for bench_models
    old, new = {}, {}
    for i in range(a.runs):
        for label, binary, into in (("old", a.old, old), ("new", a.new, new)):
            for k, v in run(binary, extra).items():
                into.setdefault(k, []).append(v)
            print(f"run {i + 1}/{a.runs} {label} done", file=sys.stderr, flush=True)
    slower = 0
    print(f"| case | old median ms | new median ms | new/old |")
    print(f"|---|---|---|---|")
    for k in sorted(set(old) & set(new)):
        mo, mn = statistics.median(old[k]), statistics.median(new[k])
        ratio = mn / mo
        slower += ratio > 1 + a.tolerance
        print(f"| {k} | {mo:.2f} | {mn:.2f} | {ratio:.3f} |")
    return 1 if slower else 0


if __name__ == "__main__":
    sys.exit(main())
