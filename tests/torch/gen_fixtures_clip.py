"""gen_fixtures_clip.py: fixtures for clip_grad_norm (engine/optim/clip_grad.h).

Run with Debian's torch: /usr/bin/python3 tests/torch/gen_fixtures_clip.py
Writes (small, committed, so the tests never need torch) tests/fixtures/clip_grad.safetensors:
  "<case>.g<j>" for j = 0..3: the gradients before clipping (g3 absent: that parameter has none);
  "<case>.max_norm", "<case>.norm": max_norm and the total norm torch.nn.utils.clip_grad_norm_
  returns; "<case>.out<j>": the gradients after it. Cases: "clip" (max_norm half the norm),
  "keep" (twice the norm), "one" (max_norm 1), "large" (values ~1e3: the sum of squares in float32
  would lose digits), "nan" and "inf" (a non-finite gradient).
  "traj.w0", "traj.b0", then "traj.step<k>.w|b" and "traj.norm<k>" for k = 1..6: Adam (lr 0.05)
  on the fixed problem g = a (p - c) + 0.1 p^3 with the gradients clipped to norm 0.5 before each
  step (the problem's a and c are "traj.a_w|a_b|c_w|c_b").
"""
import os

import numpy as np
import torch

import st

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures")
SHAPES = [(16, 3, 3, 3), (1000,), (7,), (5,)]


def clip_case(name, grads, max_norm, out):
    params = [torch.zeros(s, requires_grad=True) for s in SHAPES]
    for j, g in enumerate(grads):
        if g is not None:
            params[j].grad = g.clone()
            out[f"{name}.g{j}"] = g
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    out[f"{name}.max_norm"] = torch.tensor(float(max_norm))
    out[f"{name}.norm"] = norm
    for j, p in enumerate(params):
        if p.grad is not None:
            out[f"{name}.out{j}"] = p.grad


def main():
    torch.manual_seed(7)
    out = {}
    base = [torch.randn(s) * 0.3 for s in SHAPES[:3]] + [None]
    norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in base if g is not None)))
    clip_case("clip", base, 0.5 * norm, out)
    clip_case("keep", base, 2.0 * norm, out)
    clip_case("one", base, 1.0, out)
    clip_case("large", [torch.randn(s) * 1e3 + 2e3 for s in SHAPES[:3]] + [None], 100.0, out)
    nan = [g.clone() for g in base[:3]] + [None]
    nan[1][17] = float("nan")
    clip_case("nan", nan, 1.0, out)
    inf = [g.clone() for g in base[:3]] + [None]
    inf[2][3] = float("-inf")
    clip_case("inf", inf, 1.0, out)

    # A short Adam run with clipping before each step.
    a_w, c_w = torch.rand(3, 4) * 2, torch.randn(3, 4)
    a_b, c_b = torch.rand(5) * 2, torch.randn(5)
    w, b = torch.randn(3, 4, requires_grad=True), torch.randn(5, requires_grad=True)
    out.update({"traj.a_w": a_w, "traj.c_w": c_w, "traj.a_b": a_b, "traj.c_b": c_b,
                "traj.w0": w.detach().clone(), "traj.b0": b.detach().clone()})
    opt = torch.optim.Adam([w, b], lr=0.05)
    for k in range(1, 7):
        with torch.no_grad():
            w.grad = a_w * (w - c_w) + 0.1 * (w * w * w)
            b.grad = a_b * (b - c_b) + 0.1 * (b * b * b)
        out[f"traj.norm{k}"] = torch.nn.utils.clip_grad_norm_([w, b], 0.5)
        opt.step()
        out[f"traj.step{k}.w"] = w.detach().clone()
        out[f"traj.step{k}.b"] = b.detach().clone()
    st.save(os.path.join(OUT, "clip_grad.safetensors"), out, {"torch": torch.__version__})


if __name__ == "__main__":
    main()
