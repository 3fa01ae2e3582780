"""gen_fixtures_conv.py: PyTorch reference values for conv2d, max_pool2d, global_avg_pool,
linear, flatten and concat_channels.

Run with Debian's torch:  /usr/bin/python3 tests/torch/gen_fixtures_conv.py
Writes tests/fixtures/ops_conv.safetensors (committed, so the C++ tests never need torch).
Tensor names are "<case>.<what>": inputs (x, w, b, ...), the forward output y, a random
upstream gradient dy and the gradients dx, dw, db of L = sum(y * dy). "<case>.cfg" holds
the integer settings (conv: [stride, padding]; max pool: [kernel, stride, padding]).
Inputs are float32 values; the op itself runs in float64 so the references are exact
to float32 rounding (our float32 error is then measured against the true value).
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

torch.manual_seed(20261124)
out = {}


def leaf(t):
    return t.float().double().requires_grad_(True)  # float32 values, float64 maths


def put(case, **tensors):
    for k, v in tensors.items():
        out[f"{case}.{k}"] = v.detach() if v.dtype == torch.int64 else v.detach().float()


# ---- conv2d: (x shape, w shape, stride, padding, bias) ----
convs = [
    ((2, 3, 7, 5), (4, 3, 3, 3), 1, 1, True),
    ((2, 3, 7, 5), (4, 3, 3, 3), 2, 0, False),
    ((2, 3, 7, 5), (4, 3, 1, 1), 1, 0, True),   # pointwise: no im2col
    ((2, 3, 7, 5), (4, 3, 1, 1), 2, 0, True),   # ResNet downsample shortcut
    ((2, 3, 11, 9), (4, 3, 7, 7), 2, 3, True),  # ResNet conv1 shape
    ((3, 5, 6, 6), (2, 5, 3, 3), 2, 1, True),
]
for i, (xs, ws, stride, pad, bias) in enumerate(convs):
    x, w = leaf(torch.randn(xs)), leaf(torch.randn(ws) * 0.3)
    b = leaf(torch.randn(ws[0])) if bias else None
    y = F.conv2d(x, w, b, stride=stride, padding=pad)
    dy = torch.randn_like(y).float().double()
    y.backward(dy)
    put(f"conv{i}", x=x, w=w, y=y, dy=dy, dx=x.grad, dw=w.grad, cfg=torch.tensor([stride, pad]))
    if bias:
        put(f"conv{i}", b=b, db=b.grad)

# ---- max_pool2d: (x, kernel, stride, padding) ----
ties = torch.round(torch.randn(2, 3, 7, 5) * 1.5)  # small integers: many equal maxima in a window
pools = [
    (torch.randn(2, 3, 7, 5), 3, 2, 1),  # the ResNet stem pool
    (torch.randn(2, 3, 8, 6), 2, 2, 0),
    (ties, 3, 1, 1),                     # overlapping windows + ties: first max wins
    (ties, 2, 1, 0),
]
for i, (xv, k, s, p) in enumerate(pools):
    x = leaf(xv)
    y = F.max_pool2d(x, k, s, p)
    dy = torch.randn_like(y).float().double()
    y.backward(dy)
    put(f"maxpool{i}", x=x, y=y, dy=dy, dx=x.grad, cfg=torch.tensor([k, s, p]))

# ---- global average pool ----
x = leaf(torch.randn(2, 3, 7, 5))
y = F.adaptive_avg_pool2d(x, 1).flatten(1)
dy = torch.randn_like(y).float().double()
y.backward(dy)
put("gap", x=x, y=y, dy=dy, dx=x.grad)

# ---- linear ----
for i, (n, fin, fout, bias) in enumerate([(5, 7, 4, True), (3, 6, 2, False)]):
    x, w = leaf(torch.randn(n, fin)), leaf(torch.randn(fout, fin) * 0.5)
    b = leaf(torch.randn(fout)) if bias else None
    y = F.linear(x, w, b)
    dy = torch.randn_like(y).float().double()
    y.backward(dy)
    put(f"linear{i}", x=x, w=w, y=y, dy=dy, dx=x.grad, dw=w.grad)
    if bias:
        put(f"linear{i}", b=b, db=b.grad)

# ---- flatten(1) and concat along channels ----
x = leaf(torch.randn(2, 3, 4, 5))
y = torch.flatten(x, 1)
dy = torch.randn_like(y).float().double()
y.backward(dy)
put("flatten", x=x, y=y, dy=dy, dx=x.grad)

a, b, c = leaf(torch.randn(2, 3, 4, 5)), leaf(torch.randn(2, 2, 4, 5)), leaf(torch.randn(2, 1, 4, 5))
y = torch.cat([a, b, c], dim=1)
dy = torch.randn_like(y).float().double()
y.backward(dy)
put("concat", a=a, b=b, c=c, y=y, dy=dy, da=a.grad, db=b.grad, dc=c.grad)

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "ops_conv.safetensors")
st.save(path, out, metadata={"generator": "tests/torch/gen_fixtures_conv.py", "torch": torch.__version__})
print(f"wrote {len(out)} tensors to {os.path.normpath(path)} ({os.path.getsize(path)} bytes)")
