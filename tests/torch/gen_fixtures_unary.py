"""gen_fixtures_unary.py: PyTorch reference values for the formula-defined ops of
kernels/common/unary_ops.def (one entry of UNARY below per line there).

Run with Debian's torch:  /usr/bin/python3 tests/torch/gen_fixtures_unary.py
Writes tests/fixtures/ops_unary.safetensors (committed, so the C++ tests never need torch):
"<op>.x", "<op>.y" = op(x), "<op>.dy" (a random upstream gradient), "<op>.dx" = dL/dx, computed
in float64 from float32 inputs (x and dy are exact float32 values), stored as float32.
tests/engine/test_unary_ops.cpp requires these four entries for every op of the list.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

# The PyTorch function of each op of unary_ops.def.
UNARY = {
    "gelu": lambda x: F.gelu(x),  # approximate="none": the erf form
}

torch.manual_seed(4321)
out = {}
inf, nan = float("inf"), float("nan")
edges = [0.0, -0.0, 30.0, -30.0, 1e-30, -1e-30, 8.0, -8.0, inf, -inf, nan]
for name, fn in UNARY.items():
    x = torch.cat([torch.randn(250) * 3, torch.tensor(edges)]).float().double().requires_grad_(True)
    dy = torch.randn_like(x).float().double()
    y = fn(x)
    y.backward(dy)
    out.update({f"{name}.x": x, f"{name}.y": y, f"{name}.dy": dy, f"{name}.dx": x.grad})

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "ops_unary.safetensors")
st.save(path, out, metadata={"generator": "tests/torch/gen_fixtures_unary.py", "torch": torch.__version__})
print(f"wrote {path}: {len(UNARY)} ops")
