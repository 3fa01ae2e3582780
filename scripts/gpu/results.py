"""results.py: the results.jsonl of scripts/gpu_check.sh: annotate rows as they arrive, and summarise.

  <program> | python3 results.py annotate --phase PHASE   # rows -> $NIMBUS_RESULTS, all lines -> stdout
  python3 results.py summary results.jsonl                # the markdown table of docs/gpu-results.md

One JSON object per line: one case (a kernel problem, a model step, a ceiling) run by one
implementation in one precision. Fields written by the programs (bench/cuda --case, bench_models
--device cuda, bench/torch/gpu_reference.py, scripts/gpu/ceilings.py, cuda_status --nccl):
  case, impl (nimbus_vN / nimbus / cudnn / cublas / torch_eager / torch_compile / torch), precision
  (fp32 / tf32 / bf16), ok, rel_err (against a float64 reference on sampled outputs), median_ms,
  p10_ms, p90_ms, flops, bytes (the fewest bytes that must move), layers (and, for a case stopped at
  its --deadline-s, layers_total and partial: true), nimbus_ms (ours: = median_ms;
  others: null), reference and reference_ms (for ours: the library reference timed in the same
  process; for a reference row: itself); model rows add launches_per_step, host_waits_per_step,
  peak_mem_bytes and ops (per-op device time).
Added here: phase, commit, date, gpu (nvidia-smi's name), sm_clock_mhz (read as the row arrives).
"""
import argparse
import datetime
import json
import os
import subprocess
import sys


def sm_clock():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,name", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        clock, name = [s.strip() for s in out.split(",", 1)]
        return int(clock), name
    except Exception:
        return None, None


def annotate(phase):
    path = os.environ.get("NIMBUS_RESULTS", "results.jsonl")
    commit = os.environ.get("NIMBUS_COMMIT", "unknown")
    with open(path, "a") as sink:
        for line in sys.stdin:
            text = line.strip()
            row = None
            if text.startswith("{"):
                try:
                    row = json.loads(text)
                except json.JSONDecodeError:
                    row = None
            if row is None:
                print(line, end="", flush=True)
                continue
            clock, name = sm_clock()
            row.update(phase=phase, commit=commit, gpu=name, sm_clock_mhz=clock,
                       date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            short = {k: row.get(k) for k in ("case", "impl", "precision", "ok", "median_ms", "rel_err")}
            print("  row:", json.dumps(short), flush=True)


def fmt(ms):
    if ms is None:
        return "-"
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def summary(path):
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    if not rows:
        print("no results")
        return 1
    first = rows[0]
    print(f"GPU: {first.get('gpu')}, commit {first.get('commit')}, {first.get('date')}\n")

    ceil = {r["case"]: r for r in rows if (r.get("case") or "").startswith("ceiling_")}
    bw = ceil.get("ceiling_copy", {}).get("tb_per_s")
    tf = ceil.get("ceiling_bf16_gemm", {}).get("tflops")
    if bw or tf:
        print(f"Ceilings measured: copy {bw or 0:.2f} TB/s (read + write), bf16 GEMM {tf or 0:.0f} TFLOP/s\n")

    def best(case, impl_prefix, precision=None, ok_only=True):
        c = [r for r in rows if r.get("case") == case and r.get("impl", "").startswith(impl_prefix)
             and (precision is None or r.get("precision") == precision) and (r.get("ok") or not ok_only)
             and r.get("median_ms") is not None]
        return min(c, key=lambda r: r["median_ms"]) if c else None

    kernel_cases = [c for c in dict.fromkeys(r.get("case") for r in rows if r.get("phase") == "kernels") if c]
    if kernel_cases:
        print("Kernels (ms, median). Per precision: our best version [its TFLOP/s], the library (cuDNN for convs,")
        print("cuBLAS for GEMM) and PyTorch; 'ours/lib' is the library's time over ours (1 = as fast), 'ours/best'")
        print("the faster of the library and PyTorch over ours (PyTorch's cuDNN can pick faster algorithms than our")
        print("legacy-API call of it).\n")
        print("| case | precision | ours (best version) | lib | torch | ours/lib | ours/best |")
        print("|---|---|---|---|---|---|---|")
        for case in kernel_cases:
            for p in ("fp32", "tf32", "bf16"):
                ours = best(case, "nimbus", p)
                lib = best(case, "cudnn", p) or best(case, "cublas", p)
                tor = best(case, "torch_eager", p)
                if not (ours or lib or tor):
                    continue
                o = ours["median_ms"] if ours else None
                tfl = f" [{ours['flops'] / o / 1e9:.1f}]" if ours and ours.get("flops") else ""
                name = f"{fmt(o)} ({ours['impl']}){tfl}" if ours else "-"
                ratio = f"{lib['median_ms'] / o:.3f}" if (lib and o) else "-"
                # A case stopped at --deadline-s timed its first layers only: ours and the library over the
                # same ones (the ratio holds), PyTorch over all of them (not comparable).
                part = next((r for r in (ours, lib) if r and r.get("partial")), None)
                label = f"{case} (partial: {part.get('layers')} of {part.get('layers_total')} layers)" if part else case
                torch_ms = "n/c" if part and tor else (fmt(tor["median_ms"]) if tor else "-")
                refs = [r["median_ms"] for r in (lib, None if part else tor) if r]
                best_ratio = f"{min(refs) / o:.3f}" if (refs and o) else "-"
                print(f"| {label} | {p} | {name} | {fmt(lib['median_ms']) if lib else '-'} | {torch_ms} | {ratio} | "
                      f"{best_ratio} |")
        bad = [r for r in rows if r.get("phase") == "kernels" and not r.get("ok") and not r.get("unsupported")]
        for r in bad:
            # A row the time budget skipped is not a failure of what it would have measured.
            what = "NOT RUN" if str(r.get("note", "")).startswith("skipped") else "FAILED"
            print(f"\n{what}: {r.get('case')} {r.get('impl')} {r.get('precision')}: rel_err {r.get('rel_err')} "
                  f"{r.get('note', '')}")
        print()

    mem = [r for r in rows if r.get("phase") == "memory" and r.get("case") == "memory_bound"]
    if mem:
        print("Memory-bound kernels: GB/s of the least traffic each must move, against a device-to-device copy of the")
        print("same traffic in the same run ('fraction' = copy time / kernel time; #15's target >= 0.7)\n")
        print("| op | shape | ms | GB/s | copy GB/s | fraction |")
        print("|---|---|---|---|---|---|")
        for r in mem:
            if r.get("ok") is False:  # the case threw: its row names the error instead of a time
                print(f"| {r.get('op')} | FAILED: {r.get('error', '?')} | - | - | - | - |")
                continue
            f = r.get("fraction")
            mark = "" if f is None or f >= 0.7 else " (below 0.7)"
            n0 = lambda v: "-" if v is None else f"{v:.0f}"  # the bench writes null for a non-finite number
            print(f"| {r.get('op')} | {r.get('shape')} | {fmt(r.get('ms'))} | {n0(r.get('gbs'))} | "
                  f"{n0(r.get('copy_gbs'))} | {'-' if f is None else f'{f:.2f}'}{mark} |")
        print()

    dist = [r for r in rows if r.get("phase") == "distributed" and r.get("impl") == "nccl"]
    if dist:
        print("Distributed: NCCL all-reduce at world size 1 (ms, median; a copy's fixed cost, not a link)\n")
        print("| bytes | ranks | median ms | p10 | p90 | one-rank sum and mean exact |")
        print("|---|---|---|---|---|---|")
        for r in dist:
            print(f"| {r.get('bytes')} | {r.get('ranks')} | {fmt(r.get('median_ms'))} | {fmt(r.get('p10_ms'))} | "
                  f"{fmt(r.get('p90_ms'))} | {'yes' if r.get('ok') else 'NO'} |")
        print()
    # The comparisons (compare_checkpoints.py, compare_csv.py, raster_diff): two runs that must agree.
    checks = [r for r in rows if "bound_max" in r]
    if checks:
        print("Checks: runs that must agree (two MPI ranks against one; an app on the GPU against the CPU)\n")
        for r in checks:
            diff = r.get("max_rel_diff", r.get("max_abs_diff"))
            kind = "relative" if "max_rel_diff" in r else "absolute"
            verdict = "ok" if r.get("ok") else "FAILED " + "; ".join(r.get("problems") or [])
            print(f"- {r.get('case')}: largest {kind} difference {diff if diff is None else f'{diff:.3g}'} "
                  f"(bound {r.get('bound_max')}): {verdict}")
        print()

    # (gpu_reference.py --smoke adds a self-test row of its time guards: not a model)
    model_cases = [c for c in dict.fromkeys(r.get("case") for r in rows
                                            if r.get("phase") == "models" and r.get("impl") != "selftest") if c]
    if model_cases:
        print("Models (ms per step, median; launches / host waits per step; peak reserved GiB)\n")
        print("| case | nimbus (its precision) | torch fp32 | torch TF32 | torch bf16 | torch.compile bf16 | nimbus launches / waits "
              "| torch bf16 launches / waits | peak GiB nimbus / torch fp32 |")
        print("|---|---|---|---|---|---|---|---|---|")
        gib = lambda r: f"{r['peak_mem_bytes'] / 2**30:.1f}" if r and r.get("peak_mem_bytes") else "-"
        lw = lambda r: f"{r.get('launches_per_step')} / {r.get('host_waits_per_step')}" if r else "-"
        for case in model_cases:
            ours = best(case, "nimbus")
            t = {p: best(case, "torch_eager", p) for p in ("fp32", "tf32", "bf16")}
            comp = best(case, "torch_compile")
            # Ours runs in the precision its row says (TF32 by default on the GPU): set it beside torch's same.
            kern = f" ({ours.get('precision', '?')}, {ours['conv_kernels']})" if ours and ours.get("conv_kernels") else (
                f" ({ours.get('precision', '?')})" if ours else "")
            if ours and ours.get("bn_fold") is not None and case.startswith("resnet50_train"):
                kern = kern[:-1] + (", BN stats in the conv epilogue)" if ours["bn_fold"] else ", BN stats apart)")
                if ours.get("bn_prologue"):
                    kern = kern[:-1] + ", BN + ReLU in the next conv's prologue)"
            print(f"| {case} | {fmt(ours['median_ms']) if ours else '-'}{kern} | "
                  + " | ".join(fmt(t[p]["median_ms"]) if t[p] else "-" for p in t)
                  + f" | {fmt(comp['median_ms']) if comp else '-'} | {lw(ours)} | {lw(t['bf16'])} | "
                  f"{gib(ours)} / {gib(t['fp32'])} |")
        for case in model_cases:
            ours = best(case, "nimbus")
            if ours and ours.get("ops"):
                total = sum(o["ms"] for o in ours["ops"])
                top = ", ".join(f"{o['name']} {o['ms']:.1f} ms ({o['calls']})" for o in ours["ops"][:6])
                print(f"\n{case}, nimbus per-op device time (top 6 of {total:.1f} ms): {top}")
        print()
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("annotate")
    a.add_argument("--phase", required=True)
    s = sub.add_parser("summary")
    s.add_argument("path")
    args = ap.parse_args()
    if args.cmd == "annotate":
        annotate(args.phase)
        return 0
    return summary(args.path)


if __name__ == "__main__":
    sys.exit(main())
