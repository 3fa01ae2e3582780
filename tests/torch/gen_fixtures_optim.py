"""gen_fixtures_optim.py: fixtures for the module, optimiser and layer tests.

Run with Debian's torch: /usr/bin/python3 tests/torch/gen_fixtures_optim.py
Writes (small, committed, so the tests never need torch):
  tests/fixtures/optim.safetensors
    w0 (3,4), b0 (5): initial parameters; a_w, c_w, a_b, c_b: the fixed problem,
    whose gradient is g = a * (p - c) + 0.1 * p^3 (elementwise, computed in float32).
    "<cfg>.step<k>.w|b" for k = 1..10: parameters after k steps, and
    "<cfg>.state.<w|b>.<slot>": the optimiser state after 10 steps.
    SGD / Adam / AdamW configs come from torch.optim; "nadam" from the numpy (float64)
    transcription of Keras 2.x optimizers.Nadam below.
  tests/fixtures/module_names.safetensors
    torch's state_dict of a small nested ResNet-like net (keys in order in the
    metadata "keys", JSON), an input x and the net's outputs in eval and train mode
    and the running stats after the train-mode forward.
"""
import json
import os

import numpy as np
import torch
import torch.nn as nn

import st

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures")
STEPS = 10


def grad_of(p, a, c):
    return a * (p - c) + 0.1 * (p * p * p)


# ---- SGD / Adam with torch.optim ----
# name -> (constructor, lr after step 5 or None, step (0-based) at which b gets no grad or None)
CONFIGS = {
    "sgd": (lambda ps: torch.optim.SGD(ps, lr=0.1), None, None),
    "sgd_momentum_wd": (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01), None, None),
    "sgd_nesterov": (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True), None, None),
    "sgd_dampening": (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.3), 0.02, 3),
    "adam": (lambda ps: torch.optim.Adam(ps, lr=0.01), None, None),
    "adam_wd": (lambda ps: torch.optim.Adam(ps, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1), 0.01, 3),
    "adamw": (lambda ps: torch.optim.AdamW(ps, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1), 0.01, 3),
}
SLOTS = {"sgd": ["momentum_buffer"], "adam": ["exp_avg", "exp_avg_sq"], "adamw": ["exp_avg", "exp_avg_sq"]}


def run_torch(name, make, lr_after5, skip_b_at, init, problem, out):
    w = torch.tensor(init["w0"], requires_grad=True)
    b = torch.tensor(init["b0"], requires_grad=True)
    opt = make([w, b])
    for k in range(STEPS):
        if k == 5 and lr_after5 is not None:
            for g in opt.param_groups:
                g["lr"] = lr_after5
        with torch.no_grad():
            w.grad = grad_of(w, problem["a_w"], problem["c_w"])
            b.grad = None if k == skip_b_at else grad_of(b, problem["a_b"], problem["c_b"])
        opt.step()
        out[f"{name}.step{k + 1}.w"] = w.detach().clone()
        out[f"{name}.step{k + 1}.b"] = b.detach().clone()
    for pname, p in (("w", w), ("b", b)):
        state = opt.state[p]
        for slot in SLOTS[name.split("_")[0]]:
            if name == "sgd":
                continue  # momentum 0: torch keeps no buffer
            out[f"{name}.state.{pname}.{slot}"] = state[slot]
        if "step" in state:
            out[f"{name}.state.{pname}.step"] = state["step"].reshape(())


# ---- Nadam: Keras 2.x optimizers.Nadam.get_updates, transcribed in float64 ----
NADAM = dict(lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-8, schedule_decay=0.004)


def run_nadam(init, problem, out):
    lr, b1, b2, eps, sd = (NADAM[k] for k in ("lr", "beta_1", "beta_2", "epsilon", "schedule_decay"))
    params = {"w": init["w0"].astype(np.float64), "b": init["b0"].astype(np.float64)}
    ms = {k: np.zeros_like(p) for k, p in params.items()}
    vs = {k: np.zeros_like(p) for k, p in params.items()}
    m_schedule = 1.0
    for iterations in range(STEPS):
        t = iterations + 1
        momentum_cache_t = b1 * (1.0 - 0.5 * (0.96 ** (t * sd)))
        momentum_cache_t_1 = b1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * sd)))
        m_schedule_new = m_schedule * momentum_cache_t
        m_schedule_next = m_schedule * momentum_cache_t * momentum_cache_t_1
        m_schedule = m_schedule_new
        for k in params:
            p = params[k]
            g = grad_of(p.astype(np.float32), problem["a_" + k].numpy(), problem["c_" + k].numpy()).astype(np.float64)
            g_prime = g / (1.0 - m_schedule_new)
            m_t = b1 * ms[k] + (1.0 - b1) * g
            m_t_prime = m_t / (1.0 - m_schedule_next)
            v_t = b2 * vs[k] + (1.0 - b2) * np.square(g)
            v_t_prime = v_t / (1.0 - b2 ** t)
            m_t_bar = (1.0 - momentum_cache_t) * g_prime + momentum_cache_t_1 * m_t_prime
            ms[k], vs[k] = m_t, v_t
            params[k] = p - lr * m_t_bar / (np.sqrt(v_t_prime) + eps)
            out[f"nadam.step{t}.{k}"] = params[k]
    for k in params:
        out[f"nadam.state.{k}.m"] = ms[k]
        out[f"nadam.state.{k}.v"] = vs[k]
    out["nadam.state.m_schedule"] = np.array(m_schedule)


def optim_fixture():
    g = torch.Generator().manual_seed(7)
    init = {"w0": torch.randn(3, 4, generator=g).numpy(), "b0": torch.randn(5, generator=g).numpy()}
    problem = {
        "a_w": torch.rand(3, 4, generator=g) + 0.5, "c_w": torch.randn(3, 4, generator=g),
        "a_b": torch.rand(5, generator=g) + 0.5, "c_b": torch.randn(5, generator=g),
    }
    out = {**init, **problem}
    for name, (make, lr5, skip) in CONFIGS.items():
        run_torch(name, make, lr5, skip, init, problem, out)
    run_nadam(init, problem, out)
    st.save(os.path.join(OUT, "optim.safetensors"), out, {"steps": STEPS, "nadam": json.dumps(NADAM)})


# ---- module names: a small nested ResNet-like net ----
class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + (self.downsample(x) if self.downsample is not None else x))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))
        self.layer1 = nn.Sequential(Block(4, 8, 2), Block(8, 8, 1))
        self.fc = nn.Linear(8, 5)
        # Registered after the children, yet state_dict lists them first (own tensors come first).
        self.scale = nn.Parameter(torch.ones(5) * 0.5)
        self.register_buffer("offset", torch.arange(5, dtype=torch.float32))

    def forward(self, x):
        x = self.layer1(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)) * self.scale + self.offset


def module_fixture():
    torch.manual_seed(3)
    net = Net()
    with torch.no_grad():  # non-trivial BN parameters and running stats
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.8, 1.2)
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 3, 16, 16)
    out = dict(sd)
    net.eval()
    with torch.no_grad():
        out["test.x"] = x
        out["test.y_eval"] = net(x)
        net.train()
        out["test.y_train"] = net(x)
    for k, v in net.state_dict().items():
        if "running" in k or "num_batches" in k:
            out["test.after_train." + k] = v.clone()
    st.save(os.path.join(OUT, "module_names.safetensors"), out, {"keys": json.dumps(list(sd.keys()))})
    print("\n".join(f"{k} {tuple(v.shape)}" for k, v in sd.items()))


if __name__ == "__main__":
    optim_fixture()
    module_fixture()
