"""ceilings.py: the two ceilings every GPU figure is read against, measured on the GPU at hand.

METHOD: datasheet rates are leads; measure once per machine
  - copy: a 2 GiB device-to-device copy (bytes read + bytes written) -> memory bandwidth, TB/s;
  - bf16_gemm: an 8192^3 bf16 matrix product on random data through PyTorch (cuBLAS) -> TFLOP/s.
CUDA events, 3 warm-ups, 20 timed runs, median (and p10/p90). One JSON row each on stdout
(scripts/gpu/results.py's fields). Exit 77 without a CUDA device.
"""
import json
import sys

import torch


def timed(fn, warmup=3, reps=20):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    pick = lambda q: times[min(len(times) - 1, int(q * (len(times) - 1) + 0.5))]
    return pick(0.5), pick(0.1), pick(0.9)


def row(case, precision, ms, p10, p90, flops, nbytes, **extra):
    r = {"case": case, "impl": "torch", "precision": precision, "ok": True, "median_ms": ms, "p10_ms": p10,
         "p90_ms": p90, "reference": "ceiling", "reference_ms": ms, "nimbus_ms": None, "flops": flops,
         "bytes": nbytes, "device": torch.cuda.get_device_name()}
    r.update(extra)
    print(json.dumps(r), flush=True)


def main():
    if not torch.cuda.is_available():
        print("skipped: no CUDA device", file=sys.stderr)
        return 77
    n = 2 << 30  # bytes
    src = torch.rand(n // 4, device="cuda")
    dst = torch.empty_like(src)
    ms, p10, p90 = timed(lambda: dst.copy_(src))
    assert torch.equal(dst[:1000], src[:1000])
    row("ceiling_copy", "fp32", ms, p10, p90, 0, 2 * n, tb_per_s=2 * n / ms / 1e9)
    del src, dst
    m = 8192
    a = torch.randn(m, m, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(m, m, device="cuda", dtype=torch.bfloat16)
    ms, p10, p90 = timed(lambda: a @ b)
    flops = 2.0 * m ** 3
    c = a @ b
    ref = a[:64].double() @ b.double()
    rel = float((c[:64].double() - ref).norm() / ref.norm())
    row("ceiling_bf16_gemm", "bf16", ms, p10, p90, flops, 3 * m * m * 2, tflops=flops / ms / 1e9, rel_err=rel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
