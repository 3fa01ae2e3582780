#!/usr/bin/env python3
"""gpu_reference.py: the PyTorch side of the GPU comparison (docs/gpu-results.md).

What and why
    scripts/gpu_check.sh runs our engine's GPU benchmarks (bench/cuda, bench_models --device cuda) and
    this script on the same GPU machine, in one limited time window. This script times the same work in
    PyTorch (cuDNN / cuBLAS / torch.compile), so every nimbus number in docs/gpu-results.md has a
    reference next to it measured on the same device, the same day.

How to run
    python3 bench/torch/gpu_reference.py kernels [--cases a,b] [--configs fp32,tf32,bf16]
    python3 bench/torch/gpu_reference.py models  [--cases a,b] [--configs fp32,tf32,bf16,compile]
  common options:
    --out FILE         also append every row to FILE (JSON lines)
    --budget S         seconds for the whole subcommand; rows that no longer fit are reported skipped
    --row-timeout S    time guard of one row (defaults: kernels 20 s, ResNet conv sums 45 s, models 45 s)
    --compile-limit S  first (compiling) step of a "compile" row must finish within S s (default 90)
    --smoke            tiny sizes on the CPU (or CUDA if present), rows get "smoke": true; also emits a
                       "smoke_time_guard" row that checks the time guards themselves
    --list             print the case names and exit
  Without CUDA and without --smoke it prints "skipped: no CUDA device" to stderr and exits 77.
  Exit status: 0 if every row is ok, 1 if some row is not (rows are printed either way), 2 on usage errors;
  rows of configs this torch cannot run (torch.compile on torch 1.13) say "unsupported": true and do not
  count as failures.
  On an H200 (torch 2.11) expect roughly: kernels 30-50 s, models without compile 40-70 s, each compile
  row 40-100 s (one subprocess per row, killed at --compile-limit + --row-timeout + 30 s).
  Test here (Debian 12, torch 1.13, CPU):
    /usr/bin/python3 bench/torch/gpu_reference.py kernels --smoke
    /usr/bin/python3 bench/torch/gpu_reference.py models --smoke

Output: one JSON object per line on stdout, flushed row by row; progress goes to stderr.
  common fields
    case, impl ("torch_eager" | "torch_compile"), precision ("fp32" | "tf32" | "bf16"), ok (bool),
    median_ms, p10_ms, p90_ms, reference ("torch_eager_<precision>" | "torch_compile_bf16"),
    reference_ms (= median_ms), nimbus_ms (null: gpu_check.sh fills it), flops, device, config
    (torch / cudnn versions, TF32 flags, memory format, ...), note (only when something is worth saying),
    smoke (only with --smoke). NaN / inf are written as null.
  kernels rows (cases: gemm_4096, dsen2cr_conv3x3_{fwd,dgrad,wgrad}, resnet50_convs_{fwd,dgrad,wgrad})
    rel_err   ||out - ref|| / ||ref|| over ~200 sampled outputs, ref computed in float64 on the device
              from the very same (rounded) inputs; ok needs rel_err <= TOL[precision] and no NaN
    bytes     fewest bytes moved: inputs read once, outputs written once, precision's element size
    runs      timed runs (resnet50_convs_*: per unique geometry)
    resnet50_convs_* rows are sums over the 53 conv layers of torchvision resnet50 (13-channel conv1)
    at 13x64x64, batch 256: each unique geometry is timed once and counted "count" times; p10/p90 are
    the same sums of per-geometry p10/p90. "per_geometry" lists them.
  models rows (cases: resnet50_train_b256_64, resnet50_infer_b256_64, dsen2cr_train_B16F256_b16_128,
  dsen2cr_infer_B16F256_b1_256)
    img_per_s, timed_steps, first_step_ms (the compile for torch_compile), loss (train) ;
    from one extra step under torch.profiler (CPU + CUDA activities):
    launches_per_step (CUDA kernels), copies_per_step (memcpy + memset), host_waits_per_step
    (cudaStreamSynchronize / cudaDeviceSynchronize / cudaEventSynchronize / cudaMemcpy calls inside the
    step), ops (top 12 ops by self CUDA time: [{"name", "ms", "calls"}]); peak_mem_bytes =
    torch.cuda.max_memory_reserved() over the timed steps (peak stats reset after warm-up).

Time guards: every row runs under a soft deadline (timing loops stop early, the row says so in "note")
and a hard one (SIGALRM raises TimeGuard; the row is reported ok=false). torch.compile runs in a child
process that is killed with its whole process group when it overruns. A kernel that never returns cannot
be interrupted from Python: gpu_check.sh's own timeout is the last resort.
Works with torch 1.13 (Debian 12, --smoke only) and torch 2.x; only torch, torchvision and numpy.
"""

import argparse
import contextlib
import gc
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

# DSen2CR: the same definition as the fixtures of models/ (tests/torch/gen_fixtures_models.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "torch"))
from dsen2cr_torch import DSen2CR  # noqa: E402

TOL = {"fp32": 2e-4, "tf32": 5e-3, "bf16": 3e-2}  # max rel_err of a kernel's sampled outputs
N_SAMPLES = 200
KERNEL_CASES = ["gemm_4096", "dsen2cr_conv3x3_fwd", "dsen2cr_conv3x3_dgrad", "dsen2cr_conv3x3_wgrad",
                "resnet50_convs_fwd", "resnet50_convs_dgrad", "resnet50_convs_wgrad"]
MODEL_CASES = ["resnet50_train_b256_64", "resnet50_infer_b256_64", "dsen2cr_train_B16F256_b16_128",
               "dsen2cr_infer_B16F256_b1_256"]
DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ARGS = None  # argparse namespace, set in main()


# ---------------------------------------------------------------------------- output
def log(msg):
    print(f"[gpu_reference] {msg}", file=sys.stderr, flush=True)


def _clean(v):
    """JSON-safe copy: NaN / inf -> None, numpy / torch scalars -> Python."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


ALL_OK = True


def emit(row):
    global ALL_OK
    if ARGS.smoke:
        row["smoke"] = True
    # A row skipped for want of time is no failure (the phase's log says what was not run).
    skipped = str(row.get("note", "")).startswith("skipped")
    ALL_OK = ALL_OK and (bool(row.get("ok")) or bool(row.get("unsupported")) or skipped)
    line = json.dumps(_clean(row))
    print(line, flush=True)
    if ARGS.out:
        with open(ARGS.out, "a") as f:
            f.write(line + "\n")


# ---------------------------------------------------------------------------- time guards
class Unsupported(Exception):
    """This torch cannot run a config (e.g. torch.compile before 2.0): reported, no traceback."""


class TimeGuard(BaseException):
    """Raised by SIGALRM when a hard guard expires (BaseException: library code's `except Exception`
    must not swallow it)."""


_guards = []  # active hard guards: dicts {deadline, what, fired}


def _arm():
    live = [g["deadline"] for g in _guards if not g["fired"]]
    if not live:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return
    signal.setitimer(signal.ITIMER_REAL, max(min(live) - time.monotonic(), 0.001))


def _on_alarm(signum, frame):
    now = time.monotonic()
    due = [g for g in _guards if not g["fired"] and g["deadline"] <= now + 0.005]
    if not due:
        _arm()
        return
    g = min(due, key=lambda g: g["deadline"])
    g["fired"] = True  # fire each guard once, so cleanup code is not interrupted again
    _arm()
    raise TimeGuard(f"time guard: {g['what']} exceeded {g['seconds']:.1f} s")


@contextlib.contextmanager
def hard_guard(seconds, what):
    """Raise TimeGuard in this (main) thread if the block runs longer than `seconds`; nests."""
    g = {"deadline": time.monotonic() + seconds, "seconds": seconds, "what": what, "fired": False}
    _guards.append(g)
    signal.signal(signal.SIGALRM, _on_alarm)
    _arm()
    try:
        yield g
    finally:
        _guards.remove(g)
        _arm()


class Budget:
    """Seconds left for the whole subcommand (--budget; 0 = unlimited)."""

    def __init__(self, seconds):
        self.end = time.monotonic() + seconds if seconds and seconds > 0 else None

    def limit(self, row_timeout):
        if self.end is None:
            return row_timeout
        return min(row_timeout, self.end - time.monotonic())


def run_child(cmd, timeout):
    """Run cmd in its own session; on timeout kill its whole process group. -> (rc, stdout, timed_out)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out, False
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        return p.returncode, out, True


# ---------------------------------------------------------------------------- environment
def sync():
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def free_memory():
    gc.collect()
    if DEV.type == "cuda":
        torch.cuda.empty_cache()


def device_name():
    return torch.cuda.get_device_name() if DEV.type == "cuda" else "cpu"


def _new_tf32_api():
    """torch >= 2.9 has per-backend fp32_precision; mixing it with allow_tf32 raises in some versions,
    so use one API only: the new one where it exists."""
    try:
        torch.backends.cuda.matmul.fp32_precision  # noqa: B018
        torch.backends.cudnn.conv.fp32_precision  # noqa: B018
        return True
    except Exception:
        return False


def set_tf32(matmul, conv):
    if _new_tf32_api():
        torch.backends.cuda.matmul.fp32_precision = "tf32" if matmul else "ieee"
        torch.backends.cudnn.conv.fp32_precision = "tf32" if conv else "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = conv


def tf32_flags():
    try:
        if _new_tf32_api():
            return {"matmul": torch.backends.cuda.matmul.fp32_precision,
                    "cudnn_conv": torch.backends.cudnn.conv.fp32_precision}
        return {"matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}
    except Exception as e:  # reading flags must never cost a row
        return {"error": str(e)[:80]}


def base_config(memory_format, **extra):
    try:
        cudnn = torch.backends.cudnn.version()
    except Exception:
        cudnn = None
    cfg = {"torch": torch.__version__, "torchvision": torchvision.__version__, "cuda": torch.version.cuda,
           "cudnn": cudnn, "cudnn_benchmark": torch.backends.cudnn.benchmark, "tf32": tf32_flags(),
           "memory_format": memory_format}
    cfg.update(extra)
    return cfg


def kernel_base_row(case, prec):
    """Every field of a kernels row, unfilled (what a failed or skipped row reports)."""
    return {"case": case, "impl": "torch_eager", "precision": prec, "ok": False, "rel_err": None,
            "median_ms": None, "p10_ms": None, "p90_ms": None, "reference": f"torch_eager_{prec}",
            "reference_ms": None, "nimbus_ms": None, "flops": None, "bytes": None, "device": device_name(),
            "config": None}


def model_base_row(case, prec, compiled):
    """Every field of a models row, unfilled (what a failed or skipped row reports)."""
    impl = "torch_compile" if compiled else "torch_eager"
    return {"case": case, "impl": impl, "precision": prec, "ok": False, "median_ms": None, "p10_ms": None,
            "p90_ms": None, "img_per_s": None, "reference": f"{impl}_{prec}", "reference_ms": None,
            "nimbus_ms": None, "flops": model_spec(case)["flops"], "launches_per_step": None,
            "copies_per_step": None, "host_waits_per_step": None, "peak_mem_bytes": None, "ops": None,
            "device": device_name(), "config": None}


def precision_setup(prec, models=False):
    """Global flags of a precision. bf16 leaves TF32 at torch's defaults (matmul off, cuDNN on), the same
    as in the torch.compile child, which must not touch the TF32 API at all."""
    torch.backends.cudnn.benchmark = True
    if prec == "fp32":
        set_tf32(False, False)
    elif prec == "tf32":
        set_tf32(True, True)
    elif models:
        set_tf32(False, True)


# ---------------------------------------------------------------------------- timing
class Clock:
    """CUDA events on the GPU, perf_counter on the CPU."""

    def mark(self):
        if DEV.type == "cuda":
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    @staticmethod
    def ms(a, b):
        return a.elapsed_time(b) if DEV.type == "cuda" else (b - a) * 1e3


def measure(fn, warmup, min_runs, target_ms, soft_deadline, max_runs, slow_warmup_ms=None, before_timed=None):
    """Warm-up (synchronised, wall-clock), then timed runs in batches, each run between two events,
    until >= min_runs and >= target_ms in total, max_runs, or the soft deadline.
    -> (timed ms list, warm-up ms list, truncated)."""
    warm = []
    for i in range(warmup):
        if i > 0 and time.monotonic() > soft_deadline:
            break
        t0 = time.perf_counter()
        fn()
        sync()
        warm.append((time.perf_counter() - t0) * 1e3)
        if slow_warmup_ms is not None and i >= 1 and warm[-1] > slow_warmup_ms:
            break
    if before_timed:
        before_timed()
    clock, times, truncated, batch = Clock(), [], False, min_runs
    while True:
        marks = []
        for _ in range(batch):
            if time.monotonic() > soft_deadline and len(times) + len(marks) >= 1:
                truncated = True
                break
            a = clock.mark()
            fn()
            b = clock.mark()
            marks.append((a, b))
        sync()
        times += [clock.ms(a, b) for a, b in marks]
        total = sum(times)
        if truncated or len(times) >= max_runs or (len(times) >= min_runs and total >= target_ms):
            break
        if len(times) < min_runs:
            batch = min_runs - len(times)
        else:
            batch = int(min(max(math.ceil((target_ms - total) / (total / len(times))), 1), max_runs - len(times)))
    return times, warm, truncated


def pct(times):
    a = np.asarray(times, dtype=np.float64)
    return float(np.median(a)), float(np.percentile(a, 10)), float(np.percentile(a, 90))


# ---------------------------------------------------------------------------- kernels: geometry + references
class Conv:
    """One conv layer's geometry: N x C x H x W input, K x C x R x S weight, square stride / padding."""

    def __init__(self, N, C, H, W, K, R, S, stride, pad):
        self.N, self.C, self.H, self.W, self.K, self.R, self.S, self.st, self.p = N, C, H, W, K, R, S, stride, pad
        self.OH = (H + 2 * pad - R) // stride + 1
        self.OW = (W + 2 * pad - S) // stride + 1

    def key(self):
        return (self.N, self.C, self.H, self.W, self.K, self.R, self.S, self.st, self.p)

    def __str__(self):
        return (f"N{self.N} C{self.C} {self.H}x{self.W} K{self.K} {self.R}x{self.S} s{self.st} p{self.p}"
                f" -> {self.OH}x{self.OW}")

    def macs(self):
        return self.N * self.K * self.OH * self.OW * self.C * self.R * self.S

    def nbytes(self, direction, es):
        x, w, y = self.N * self.C * self.H * self.W, self.K * self.C * self.R * self.S, self.N * self.K * self.OH * self.OW
        return es * (x + w + y)  # fwd: x, w -> y; dgrad: dy, w -> dx; wgrad: dy, x -> dw


def _samples(shape, gen):
    """N_SAMPLES random multi-indices into `shape` (on DEV)."""
    numel = int(np.prod(shape))
    flat = torch.randint(0, numel, (N_SAMPLES,), generator=gen)
    idx = []
    for d in reversed(shape):
        idx.append(flat % d)
        flat = flat // d
    return [i.to(DEV) for i in reversed(idx)]


def _taps(out_pos, st, p, R, size):
    """Input coordinates out_pos * st - p + r (samples x R) and their in-range mask."""
    i = out_pos[:, None] * st - p + torch.arange(R, device=DEV)[None, :]
    return i.clamp(0, size - 1), (i >= 0) & (i < size)


def ref_conv_fwd(g, x, w, idx):
    n, k, oy, ox = idx
    iy, my = _taps(oy, g.st, g.p, g.R, g.H)
    ix, mx = _taps(ox, g.st, g.p, g.S, g.W)
    patch = x[n[:, None, None], :, iy[:, :, None], ix[:, None, :]].double()  # (S, R, Sw, C)
    mask = (my[:, :, None] & mx[:, None, :])[..., None]
    wk = w[k].permute(0, 2, 3, 1).double()  # (S, R, Sw, C)
    return (patch * wk * mask).sum((1, 2, 3))


def ref_conv_dgrad(g, dy, w, idx):
    n, c, iy, ix = idx

    def taps(i, R, out):  # output rows oy with oy * st - p + r == i
        t = i[:, None] + g.p - torch.arange(R, device=DEV)[None, :]
        ok = (t >= 0) & (t % g.st == 0) & (t // g.st < out)
        return (t // g.st).clamp(0, out - 1), ok

    oy, my = taps(iy, g.R, g.OH)
    ox, mx = taps(ix, g.S, g.OW)
    dyg = dy[n[:, None, None], :, oy[:, :, None], ox[:, None, :]].double()  # (S, R, Sw, K)
    mask = (my[:, :, None] & mx[:, None, :])[..., None]
    wc = w.permute(1, 2, 3, 0)[c].double()  # (S, R, Sw, K)
    return (dyg * wc * mask).sum((1, 2, 3))


def ref_conv_wgrad(g, dy, x, idx):
    k, c, r, s = idx
    chunk = max(1, (1 << 23) // (g.N * g.OH * g.OW))
    out = []
    for a in range(0, len(k), chunk):
        kk, cc, rr, ss = k[a:a + chunk], c[a:a + chunk], r[a:a + chunk], s[a:a + chunk]
        iy = torch.arange(g.OH, device=DEV)[None, :] * g.st - g.p + rr[:, None]  # (Sc, OH)
        ix = torch.arange(g.OW, device=DEV)[None, :] * g.st - g.p + ss[:, None]
        my, mx = (iy >= 0) & (iy < g.H), (ix >= 0) & (ix < g.W)
        iy, ix = iy.clamp(0, g.H - 1), ix.clamp(0, g.W - 1)
        xg = x[:, cc[:, None, None], iy[:, :, None], ix[:, None, :]].double()  # (N, Sc, OH, OW)
        mask = my[:, :, None] & mx[:, None, :]
        out.append((xg * dy[:, kk].double() * mask).sum((0, 2, 3)))
    return torch.cat(out)


def rel_err(out, ref):
    out, ref = out.double(), ref.double()
    if not bool(torch.isfinite(out).all()):
        return float("nan")
    den = ref.norm().item()
    return (out - ref).norm().item() / (den if den > 0 else 1.0)


def conv_job(g, direction, prec, gen):
    """Tensors + the op to time + a validator for one conv geometry / direction / precision."""
    dt = torch.bfloat16 if prec == "bf16" else torch.float32
    mf = torch.channels_last if prec == "bf16" else torch.contiguous_format
    x = torch.randn(g.N, g.C, g.H, g.W, device=DEV).to(dtype=dt, memory_format=mf)
    w = (torch.randn(g.K, g.C, g.R, g.S, device=DEV) / math.sqrt(g.C * g.R * g.S)).to(dtype=dt, memory_format=mf)
    dy = None
    if direction != "fwd":
        dy = torch.randn(g.N, g.K, g.OH, g.OW, device=DEV).to(dtype=dt, memory_format=mf)
    st, pd = [g.st, g.st], [g.p, g.p]
    res = {}

    def bwd(mask):
        return torch.ops.aten.convolution_backward(dy, x, w, None, st, pd, [1, 1], False, [0, 0], 1, mask)

    if direction == "fwd":
        def op():
            res["y"] = F.conv2d(x, w, None, g.st, g.p)
    elif direction == "dgrad":
        def op():
            res["y"] = bwd([True, False, False])[0]
    else:
        def op():
            res["y"] = bwd([False, True, False])[1]

    def validate():
        y = res["y"]
        idx = _samples(list(y.shape), gen)
        if direction == "fwd":
            ref = ref_conv_fwd(g, x, w, idx)
        elif direction == "dgrad":
            ref = ref_conv_dgrad(g, dy, w, idx)
        else:
            ref = ref_conv_wgrad(g, dy, x, idx)
        return rel_err(y[tuple(idx)], ref)

    return op, validate


def gemm_job(n, prec, gen):
    dt = torch.bfloat16 if prec == "bf16" else torch.float32
    a = torch.randn(n, n, device=DEV).to(dt)
    b = (torch.randn(n, n, device=DEV) / math.sqrt(n)).to(dt)
    res = {}

    def op():
        res["y"] = a @ b

    def validate():
        i, j = _samples([n, n], gen)
        ref = (a[i].double() * b[:, j].t().double()).sum(1)
        return rel_err(res["y"][i, j], ref)

    return op, validate


def resnet50(in_channels=13, num_classes=10):
    """torchvision resnet50 with conv1 replaced by an in_channels-input 7x7/2 conv (as in our models/)."""
    try:
        m = torchvision.models.resnet50(weights=None, num_classes=num_classes)
    except TypeError:  # very old torchvision
        m = torchvision.models.resnet50(pretrained=False, num_classes=num_classes)
    m.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(m.conv1.weight, mode="fan_out", nonlinearity="relu")
    return m


def resnet50_convs(batch, size):
    """Unique conv geometries of resnet50 at 13 x size x size, batch `batch`: [(Conv, count)], 53 layers."""
    model, seen = resnet50().eval(), []

    def hook(mod, inp, out):
        assert mod.groups == 1 and tuple(mod.dilation) == (1, 1), "unexpected conv"
        _, C, H, W = inp[0].shape
        seen.append(Conv(batch, C, H, W, mod.out_channels, *mod.kernel_size, mod.stride[0], mod.padding[0]))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.randn(1, 13, size, size))
    for h in handles:
        h.remove()
    assert len(seen) == 53, f"resnet50 has {len(seen)} convs, expected 53"
    groups = {}
    for g in seen:
        groups.setdefault(g.key(), [g, 0])[1] += 1
    return [tuple(v) for v in groups.values()]


# ---------------------------------------------------------------------------- kernels: rows
def kernel_sizes():
    if ARGS.smoke:
        return {"gemm": 256, "dsen": Conv(2, 16, 32, 32, 16, 3, 3, 1, 1), "rn_batch": 2, "rn_size": 32,
                "warmup": 1, "min_runs": 3, "target_ms": 0.0}
    return {"gemm": 4096, "dsen": Conv(8, 256, 128, 128, 256, 3, 3, 1, 1), "rn_batch": 256, "rn_size": 64,
            "warmup": 3, "min_runs": 10, "target_ms": 100.0}


def kernel_row(case, prec, limit):
    sz = kernel_sizes()
    es = 2 if prec == "bf16" else 4
    mf = "channels_last" if (prec == "bf16" and case != "gemm_4096") else "contiguous"
    row = kernel_base_row(case, prec)
    precision_setup(prec)
    row["config"] = base_config(mf, dtype="bfloat16" if prec == "bf16" else "float32")
    gen = torch.Generator().manual_seed(1234)
    soft = time.monotonic() + 0.8 * limit
    notes = []

    def one(op, validate):
        times, _, trunc = measure(op, sz["warmup"], sz["min_runs"], sz["target_ms"], soft, 1000)
        if trunc:
            notes.append(f"soft time guard: {len(times)} timed runs")
        return pct(times) + (len(times), validate())

    if case == "gemm_4096":
        n = sz["gemm"]
        med, p10, p90, runs, err = one(*gemm_job(n, prec, gen))
        row.update(flops=2 * n ** 3, bytes=3 * n * n * es, runs=runs, shape=[n, n, n])
    elif case.startswith("dsen2cr_conv3x3_"):
        g, direction = sz["dsen"], case.rsplit("_", 1)[1]
        med, p10, p90, runs, err = one(*conv_job(g, direction, prec, gen))
        row.update(flops=2 * g.macs(), bytes=g.nbytes(direction, es), runs=runs, geometry=str(g))
    else:
        direction = case.rsplit("_", 1)[1]
        geoms = resnet50_convs(sz["rn_batch"], sz["rn_size"])
        med = p10 = p90 = 0.0
        err, flops, nbytes, per = 0.0, 0, 0, []
        for i, (g, count) in enumerate(geoms):
            if time.monotonic() > soft:
                raise TimeGuard(f"soft time guard after {i}/{len(geoms)} geometries")
            m, a, b, runs, e = one(*conv_job(g, direction, prec, gen))
            med, p10, p90 = med + count * m, p10 + count * a, p90 + count * b
            err = max(err, e) if math.isfinite(e) and math.isfinite(err) else float("nan")
            flops, nbytes = flops + count * 2 * g.macs(), nbytes + count * g.nbytes(direction, es)
            per.append({"geometry": str(g), "count": count, "median_ms": m, "runs": runs, "rel_err": e})
            free_memory()
        row.update(flops=flops, bytes=nbytes, layers=sum(c for _, c in geoms), unique_geometries=len(geoms),
                   per_geometry=per)
    row.update(median_ms=med, p10_ms=p10, p90_ms=p90, reference_ms=med, rel_err=err,
               ok=bool(math.isfinite(err) and err <= TOL[prec]), tolerance=TOL[prec])
    if not math.isfinite(err):
        notes.append("NaN/inf in output")
    if notes:
        row["note"] = "; ".join(notes)
    return row


def cmd_kernels(cases, configs):
    budget = Budget(ARGS.budget)
    for case in cases:
        for prec in configs:
            default = 45.0 if case.startswith("resnet50_convs") else 20.0
            limit = budget.limit(ARGS.row_timeout or default)
            base = kernel_base_row(case, prec)
            if budget.end is not None and limit < 1.0:
                emit(dict(base, note="skipped: --budget exhausted"))
                continue
            log(f"kernels {case} {prec} (guard {limit:.0f} s)")
            t0 = time.monotonic()
            try:
                with hard_guard(limit, f"{case} {prec}"):
                    row = kernel_row(case, prec, limit)
            except TimeGuard as e:
                row = dict(base, note=str(e))
            except Exception as e:
                traceback.print_exc(file=sys.stderr)
                row = dict(base, note=f"{type(e).__name__}: {str(e)[:300]}")
            row["wall_s"] = round(time.monotonic() - t0, 2)
            emit(row)
            free_memory()


# ---------------------------------------------------------------------------- models
def model_spec(case):
    """-> dict(kind, train, batch, H, B, F, flops per step)."""
    train = "_train_" in case
    if case.startswith("resnet50"):
        batch, H = (2, 32) if ARGS.smoke else (256, 64)
        per_img = (2.111e9 if train else 0.7316e9) * (H / 64) ** 2  # measured at 64x64; ~ H^2 (smoke only)
        return {"kind": "resnet50", "train": train, "batch": batch, "H": H, "flops": per_img * batch}
    B, Fe = (2, 16) if ARGS.smoke else (16, 256)
    batch, H = (2, 32) if ARGS.smoke else ((16, 128) if train else (1, 256))
    fwd = 2 * 9 * H * H * (15 * Fe + 2 * B * Fe * Fe + 13 * Fe)
    per_img = 3 * fwd - 2 * 9 * H * H * 15 * Fe if train else fwd
    return {"kind": "dsen2cr", "train": train, "batch": batch, "H": H, "B": B, "F": Fe, "flops": per_img * batch}


def make_adam(params):
    """Adam(lr=1e-4), fused where this torch / device has it. -> (optimizer, fused)."""
    if DEV.type == "cuda":
        try:
            return torch.optim.Adam(params, lr=1e-4, fused=True), True
        except (TypeError, RuntimeError, ValueError):
            pass
    return torch.optim.Adam(params, lr=1e-4), False


def build_step(spec, prec, compiled):
    """Model, inputs and a step() closure for one case / config. -> (step, check, info)."""
    torch.manual_seed(0)
    cl = prec == "bf16"
    mf = torch.channels_last if cl else torch.contiguous_format
    n, H = spec["batch"], spec["H"]
    if spec["kind"] == "resnet50":
        model = resnet50()
        inputs = [torch.randn(n, 13, H, H, device=DEV).contiguous(memory_format=mf)]
        target = torch.randint(0, 10, (n,), device=DEV)
        loss_fn = F.cross_entropy
    else:
        model = DSen2CR(spec["B"], spec["F"])
        inputs = [torch.randn(n, 13, H, H, device=DEV).contiguous(memory_format=mf),
                  torch.randn(n, 2, H, H, device=DEV).contiguous(memory_format=mf)]
        target = torch.randn(n, 13, H, H, device=DEV).contiguous(memory_format=mf)
        loss_fn = F.l1_loss
    model = model.to(DEV, memory_format=mf)
    model.train(spec["train"])
    net = model
    if compiled:
        if not hasattr(torch, "compile"):
            raise Unsupported(f"torch.compile is not available in torch {torch.__version__}")
        net = torch.compile(model)
    autocast = (lambda: torch.autocast(DEV.type, dtype=torch.bfloat16)) if cl else contextlib.nullcontext
    info = {"memory_format": "channels_last" if cl else "contiguous", "autocast": "bfloat16" if cl else None}
    last = {}
    if spec["train"]:
        opt, fused = make_adam(model.parameters())
        info.update(optimizer="Adam(lr=1e-4)", optimizer_fused=fused)

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(net(*inputs), target)
            loss.backward()
            opt.step()
            last["v"] = loss.detach()
    else:
        def step():
            with torch.no_grad(), autocast():
                last["v"] = net(*inputs)

    def check():  # -> (finite, loss or None)
        v = last["v"]
        finite = bool(torch.isfinite(v).all())
        return finite, (float(v) if spec["train"] else None)

    return step, check, info


def parse_trace(path):
    """Counts from a chrome trace of one profiled step."""
    with open(path) as f:
        doc = json.load(f)
    if isinstance(doc, dict):  # kineto: {"traceEvents": [...]}; older torch: a bare list
        doc = doc.get("traceEvents", [])
    ev = [e for e in doc if isinstance(e, dict) and e.get("ph") == "X"]
    cat = lambda e: str(e.get("cat", "")).lower()  # noqa: E731
    marks = [e for e in ev if e.get("name") == "nimbus_step" and cat(e) == "user_annotation"]
    lo, hi = (marks[0]["ts"], marks[0]["ts"] + marks[0]["dur"]) if marks else (-math.inf, math.inf)
    waits = {"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy"}
    kernels = [e for e in ev if cat(e) == "kernel"]
    agg = {}
    for e in kernels:
        a = agg.setdefault(e.get("name", "?"), [0.0, 0])
        a[0] += e.get("dur", 0) / 1e3
        a[1] += 1
    return {"launches_per_step": len(kernels),
            "copies_per_step": sum(1 for e in ev if "memcpy" in cat(e) or "memset" in cat(e)),
            "host_waits_per_step": sum(1 for e in ev if e.get("name") in waits and lo <= e.get("ts", 0) <= hi),
            "kernel_top": sorted(([k, v[0], v[1]] for k, v in agg.items()), key=lambda t: -t[1])[:12]}


def profile_step(step):
    """One step under torch.profiler -> launches / copies / host waits / top ops; never raises."""
    out = {"launches_per_step": None, "copies_per_step": None, "host_waits_per_step": None, "ops": None}
    try:
        from torch.profiler import ProfilerActivity, profile, record_function
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEV.type == "cuda" else [])
        with profile(activities=acts) as prof:
            with record_function("nimbus_step"):
                step()
            sync()
        kernel_top = []
        try:
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "trace.json")
                prof.export_chrome_trace(path)
                counts = parse_trace(path)
            kernel_top = counts.pop("kernel_top")
            out.update(counts)
        except Exception as e:  # counts stay null, the ops below may still work
            out["note_profiler"] = f"trace parse failed: {type(e).__name__}: {str(e)[:200]}"
        ops = []
        for e in prof.key_averages():
            if e.key == "nimbus_step" or e.key.startswith("ProfilerStep"):
                continue
            if DEV.type == "cuda":
                if "cpu" not in str(getattr(e, "device_type", "cpu")).lower():
                    continue  # kernel rows: their time is already the ops' self CUDA time
                t = getattr(e, "self_device_time_total", None)
                if t is None:
                    t = getattr(e, "self_cuda_time_total", 0)
            else:
                t = e.self_cpu_time_total
            ops.append({"name": e.key[:120], "ms": t / 1e3, "calls": e.count})
        ops = sorted((o for o in ops if o["ms"] > 0), key=lambda o: -o["ms"])[:12]
        if DEV.type == "cuda" and not ops and kernel_top:  # e.g. torch.compile's Triton launches
            ops = [{"name": k[:120], "ms": ms, "calls": c} for k, ms, c in kernel_top]
            out["ops_note"] = "ops are CUDA kernels (no op had self CUDA time)"
        elif DEV.type != "cuda":
            out["ops_note"] = "CPU run: ops by self CPU time; no CUDA launches"
        out["ops"] = ops
    except TimeGuard:
        raise
    except Exception as e:
        out["note_profiler"] = f"profiler failed: {type(e).__name__}: {str(e)[:200]}"
    return out


def model_row(case, prec, compiled, limit, hard_end):
    spec = model_spec(case)
    row = model_base_row(case, prec, compiled)
    del row["config"]  # set last, so it lists what build_step chose
    if not compiled:  # the compile child leaves the TF32 API alone (mixing APIs breaks inductor)
        precision_setup(prec, models=True)
    else:
        torch.backends.cudnn.benchmark = True
    notes = []
    free_memory()
    step, check, info = build_step(spec, prec, compiled)
    smoke = ARGS.smoke
    t0 = time.perf_counter()
    if compiled:
        with hard_guard(ARGS.compile_limit, f"torch.compile first step of {case}"):
            step()
            sync()
    else:
        step()
        sync()
    row["first_step_ms"] = (time.perf_counter() - t0) * 1e3
    soft = hard_end - max(0.2 * limit, 5.0)  # leave time for the profiled step

    def reset_peak():
        if DEV.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

    times, warm, trunc = measure(step, 1 if smoke else 2, 2 if smoke else 5, 0.0 if smoke else 3000.0, soft,
                                 100, slow_warmup_ms=1000.0, before_timed=reset_peak)
    if DEV.type == "cuda":
        row["peak_mem_bytes"] = torch.cuda.max_memory_reserved()
        row["peak_alloc_bytes"] = torch.cuda.max_memory_allocated()
    if trunc:
        notes.append(f"soft time guard: {len(times)} timed steps")
    finite, loss = check()
    med, p10, p90 = pct(times)
    row.update(median_ms=med, p10_ms=p10, p90_ms=p90, reference_ms=med, img_per_s=spec["batch"] / (med / 1e3),
               timed_steps=len(times), warmup_steps=1 + len(warm), loss=loss, ok=finite)
    if not finite:
        notes.append("NaN/inf in " + ("loss" if spec["train"] else "output"))
    prof = profile_step(step)
    if "note_profiler" in prof:
        notes.append(prof.pop("note_profiler"))
    row.update(prof)
    row["config"] = base_config(info.pop("memory_format"), batch=spec["batch"],
                                input=[13, spec["H"], spec["H"]], **info,
                                **({"B": spec["B"], "F": spec["F"]} if spec["kind"] == "dsen2cr" else {}))
    if notes:
        row["note"] = "; ".join(notes)
    return row


def guarded_model_row(case, prec, compiled, limit):
    base = model_base_row(case, prec, compiled)
    base["config"] = base_config("channels_last" if prec == "bf16" else "contiguous")
    try:
        total = limit + (ARGS.compile_limit if compiled else 0.0)
        with hard_guard(total, f"{case} {prec}"):
            row = model_row(case, prec, compiled, limit, time.monotonic() + total)
    except TimeGuard as e:
        row = dict(base, note=str(e))
    except Unsupported as e:
        row = dict(base, note=str(e), unsupported=True)
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        row = dict(base, note=f"{type(e).__name__}: {str(e)[:300]}")
    free_memory()
    return row


def compile_in_child(case, limit, max_s):
    """A torch_compile row computed by a child process (own CUDA context, killable with its compile
    workers). -> list of rows."""
    cmd = [sys.executable, os.path.abspath(__file__), "models", "--cases", case, "--configs", "compile",
           "--_child", "--row-timeout", str(limit), "--compile-limit", str(ARGS.compile_limit)]
    if ARGS.smoke:
        cmd.append("--smoke")
    timeout = min(ARGS.compile_limit + limit + 30.0, max_s)  # + 30 s: interpreter / CUDA start-up
    rc, out, timed_out = run_child(cmd, timeout)
    rows = []
    for line in (out or "").splitlines():
        with contextlib.suppress(ValueError):
            r = json.loads(line)
            if isinstance(r, dict) and "case" in r:
                rows.append(r)
    if rows:
        return rows
    note = f"compile child killed after {timeout:.0f} s" if timed_out else f"compile child exited {rc}, no row"
    return [dict(model_base_row(case, "bf16", True), note=note)]


def cmd_models(cases, configs):
    budget = Budget(ARGS.budget)
    for case in cases:
        for cfg in configs:
            compiled = cfg == "compile"
            prec = "bf16" if compiled else cfg
            limit = budget.limit(ARGS.row_timeout or 45.0)
            if ARGS._child:
                row = guarded_model_row(case, prec, True, limit)
                row.pop("smoke", None)
                print(json.dumps(_clean(row)), flush=True)  # the parent emits it
                continue
            left = budget.end - time.monotonic() if budget.end is not None else math.inf
            if left < 5.0 or (compiled and left < 20.0):
                emit(dict(model_base_row(case, prec, compiled), note="skipped: --budget exhausted"))
                continue
            log(f"models {case} {cfg} (guard {limit:.0f} s{' + compile ' + str(ARGS.compile_limit) if compiled else ''})")
            t0 = time.monotonic()
            rows = compile_in_child(case, limit, left) if compiled else [guarded_model_row(case, prec, False, limit)]
            for r in rows:
                r["wall_s"] = round(time.monotonic() - t0, 2)
                emit(r)


# ---------------------------------------------------------------------------- smoke self-test of the guards
def guard_selftest():
    t0 = time.monotonic()
    fired = False
    try:
        with hard_guard(10.0, "outer"):
            with hard_guard(0.3, "selftest sleep"):
                time.sleep(5)
    except TimeGuard as e:
        fired = "selftest sleep" in str(e)
    in_process = time.monotonic() - t0
    t1 = time.monotonic()
    _, _, killed = run_child([sys.executable, "-c", "import time; time.sleep(30)"], 1.0)
    child = time.monotonic() - t1
    ok = fired and in_process < 2.0 and killed and child < 5.0
    emit({"case": "smoke_time_guard", "impl": "selftest", "precision": None, "ok": ok, "median_ms": None,
          "reference": None, "reference_ms": None, "nimbus_ms": None, "device": device_name(),
          "guard_fired": fired, "guard_s": round(in_process, 3), "child_killed": killed, "child_s": round(child, 3)})


# ---------------------------------------------------------------------------- main
def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["kernels", "models"])
    ap.add_argument("--cases", default="")
    ap.add_argument("--configs", default="")
    ap.add_argument("--out", default="")
    ap.add_argument("--budget", type=float, default=0.0)
    ap.add_argument("--row-timeout", type=float, default=0.0)
    ap.add_argument("--compile-limit", type=float, default=90.0)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    ARGS = ap.parse_args()
    all_cases = KERNEL_CASES if ARGS.what == "kernels" else MODEL_CASES
    all_configs = ["fp32", "tf32", "bf16"] + (["compile"] if ARGS.what == "models" else [])
    if ARGS.list:
        print("\n".join(all_cases))
        return 0
    cases = [c for c in ARGS.cases.split(",") if c] or all_cases
    configs = [c for c in ARGS.configs.split(",") if c] or all_configs
    bad = [c for c in cases if c not in all_cases] + [c for c in configs if c not in all_configs]
    if bad:
        print(f"gpu_reference.py {ARGS.what}: unknown case/config {bad}; cases {all_cases}, configs {all_configs}",
              file=sys.stderr)
        return 2
    if DEV.type != "cuda" and not ARGS.smoke:
        print("skipped: no CUDA device", file=sys.stderr)
        return 77
    log(f"{ARGS.what} on {device_name()}, torch {torch.__version__}{' (smoke)' if ARGS.smoke else ''}")
    t0 = time.monotonic()
    if ARGS.smoke and not ARGS._child:
        guard_selftest()
    (cmd_kernels if ARGS.what == "kernels" else cmd_models)(cases, configs)
    log(f"{ARGS.what} done in {time.monotonic() - t0:.1f} s")
    return 0 if ALL_OK else 1


if __name__ == "__main__":
    sys.exit(main())
