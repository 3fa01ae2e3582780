"""gen_fixtures_norm_loss.py: PyTorch reference values for batch norm, add/mul_scalar, the losses, and
relu, add_relu, add_scaled and the flips and quarter turns of flip_rotate.

Run with Debian's torch:  /usr/bin/python3 tests/torch/gen_fixtures_norm_loss.py
Writes tests/fixtures/ops_norm_loss.safetensors (committed, so the C++ tests never need torch).
Tensor names are "<case>.<what>"; dX is dL/dX for the upstream gradient stored as "<case>.dy"
(losses are 0-d, so they use L = loss and dy = 1).
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

torch.manual_seed(1234)
out = {}


def leaf(t):
    return t.clone().requires_grad_(True)


# ---- batch norm, training: batch statistics, running stats updated (momentum 0.1, unbiased var) ----
x = leaf(torch.randn(3, 4, 5, 6) * 2 + 0.5)
w = leaf(torch.rand(4) + 0.5)
b = leaf(torch.randn(4))
rm0, rv0 = torch.randn(4), torch.rand(4) + 0.5
rm, rv = rm0.clone(), rv0.clone()
y = F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)
dy = torch.randn_like(y)
y.backward(dy)
out.update({"bn_train.x": x, "bn_train.weight": w, "bn_train.bias": b, "bn_train.running_mean0": rm0,
            "bn_train.running_var0": rv0, "bn_train.y": y, "bn_train.dy": dy, "bn_train.dx": x.grad,
            "bn_train.dweight": w.grad, "bn_train.dbias": b.grad, "bn_train.running_mean1": rm,
            "bn_train.running_var1": rv})

# ---- batch norm, eval: running statistics, nothing updated ----
x = leaf(torch.randn(2, 3, 4, 4))
w = leaf(torch.rand(3) + 0.5)
b = leaf(torch.randn(3))
rm, rv = torch.randn(3) * 0.3, torch.rand(3) + 0.5
y = F.batch_norm(x, rm, rv, w, b, training=False, momentum=0.1, eps=1e-5)
dy = torch.randn_like(y)
y.backward(dy)
out.update({"bn_eval.x": x, "bn_eval.weight": w, "bn_eval.bias": b, "bn_eval.running_mean": rm,
            "bn_eval.running_var": rv, "bn_eval.y": y, "bn_eval.dy": dy, "bn_eval.dx": x.grad,
            "bn_eval.dweight": w.grad, "bn_eval.dbias": b.grad})

# ---- add, mul_scalar ----
a, c = leaf(torch.randn(2, 3, 4)), leaf(torch.randn(2, 3, 4))
y = a + c
dy = torch.randn_like(y)
y.backward(dy)
out.update({"add.a": a, "add.b": c, "add.y": y, "add.dy": dy, "add.da": a.grad, "add.db": c.grad})
x = leaf(torch.randn(2, 3, 4))
y = 0.1 * x
dy = torch.randn_like(y)
y.backward(dy)
out.update({"mul_scalar.x": x, "mul_scalar.y": y, "mul_scalar.dy": dy, "mul_scalar.dx": x.grad})

# ---- cross entropy and softmax ----
logits = leaf(torch.randn(6, 5) * 3)
target = torch.tensor([0, 4, 2, 2, 1, 3])
loss = F.cross_entropy(logits, target)
loss.backward()
out.update({"ce.logits": logits, "ce.target": target, "ce.loss": loss, "ce.dlogits": logits.grad,
            "softmax.y": torch.softmax(logits.detach(), dim=1)})
big = torch.tensor([[1000.0, 0.0, -1000.0], [50.0, 50.0, 49.0]])  # overflows a naive exp
out.update({"ce_big.logits": big, "ce_big.target": torch.tensor([1, 2]),
            "ce_big.loss": F.cross_entropy(big, torch.tensor([1, 2])), "softmax_big.y": torch.softmax(big, dim=1)})

# ---- l1, mse (gradients to both arguments); a few exact ties test sign(0) = 0 ----
p, t = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
t[0, 0, 0, :3] = p[0, 0, 0, :3]
for name, fn in (("l1", F.l1_loss), ("mse", F.mse_loss)):
    pp, tt = leaf(p), leaf(t)
    loss = fn(pp, tt)
    loss.backward()
    out.update({f"{name}.pred": pp, f"{name}.target": tt, f"{name}.loss": loss, f"{name}.dpred": pp.grad,
                f"{name}.dtarget": tt.grad})

# ---- CARL, written from the formula in shared/reference/dsen2cr-sen12mscr.md section 2 ----
P = torch.rand(2, 3, 4, 5) * 2
T = torch.rand(2, 3, 4, 5) * 2
I = torch.rand(2, 3, 4, 5) * 2 + 0.5
M = (torch.rand(2, 1, 4, 5) > 0.5).float()
P[0, :, 0, 0] = T[0, :, 0, 0]  # ties: |.| subgradient 0 like torch.sign
P[1, :, 3, 4] = I[1, :, 3, 4]
out.update({"carl.P": P, "carl.T": T, "carl.I": I, "carl.M": M})
for tag, lam in (("carl", 1.0), ("carl_lam", 0.25)):
    PP = leaf(P)
    loss = (M * (PP - T).abs() + (1 - M) * (PP - I).abs()).mean() + lam * (PP - T).abs().mean()
    loss.backward()
    out.update({f"{tag}.lambda": torch.tensor(lam), f"{tag}.loss": loss, f"{tag}.dP": PP.grad})

# The cases below come last, so that the draws above (and the fixtures made from them) stay as they were.

# ---- relu (exact zeros: the gradient there is 0, as torch's threshold_backward gives), add_relu,
# add_scaled (DSen2-CR's residual a + 0.1 b) ----
x = torch.randn(2, 3, 4, 5)
x[0, 0, 0, :4] = torch.tensor([0.0, -0.0, 1e-30, -1e-30])
x = leaf(x)
y = F.relu(x)
dy = torch.randn_like(y)
y.backward(dy)
out.update({"relu.x": x, "relu.y": y, "relu.dy": dy, "relu.dx": x.grad})
a, c = leaf(torch.randn(2, 3, 4, 5)), leaf(torch.randn(2, 3, 4, 5))
y = F.relu(a + c)
dy = torch.randn_like(y)
y.backward(dy)
out.update({"add_relu.a": a, "add_relu.b": c, "add_relu.y": y, "add_relu.dy": dy, "add_relu.da": a.grad,
            "add_relu.db": c.grad})
a, c = leaf(torch.randn(2, 3, 4, 5)), leaf(torch.randn(2, 3, 4, 5))
y = a + 0.1 * c
dy = torch.randn_like(y)
y.backward(dy)
out.update({"add_scaled.a": a, "add_scaled.b": c, "add_scaled.s": torch.tensor(0.1), "add_scaled.y": y,
            "add_scaled.dy": dy, "add_scaled.da": a.grad, "add_scaled.db": c.grad})

# ---- flip_rotate: code = 4 flip + rot (flip 0 none, 1 rows, 2 columns), every code on its own image:
# flip first, then rot counter-clockwise quarter turns, as torch.rot90(dims=(2, 3)) and np.rot90 turn ----
x = torch.randn(12, 2, 5, 5)
ys = []
for code in range(12):
    flip, rot = divmod(code, 4)
    img = x[code:code + 1]
    if flip == 1:
        img = torch.flip(img, dims=(2,))
    elif flip == 2:
        img = torch.flip(img, dims=(3,))
    ys.append(torch.rot90(img, rot, dims=(2, 3)))
out.update({"flip_rotate.x": x, "flip_rotate.codes": torch.arange(12, dtype=torch.float32),
            "flip_rotate.y": torch.cat(ys)})

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "ops_norm_loss.safetensors")
st.save(os.path.normpath(path), out, {"generator": "tests/torch/gen_fixtures_norm_loss.py", "torch": torch.__version__})
print("wrote", os.path.normpath(path), len(out), "tensors")
