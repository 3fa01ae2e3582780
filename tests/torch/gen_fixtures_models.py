"""gen_fixtures_models.py: PyTorch references for models/ (ResNet, DSen2-CR, checkpoints).

Run with Debian's torch + torchvision:
    /usr/bin/python3 tests/torch/gen_fixtures_models.py              # writes tests/fixtures/models_*
    /usr/bin/python3 tests/torch/gen_fixtures_models.py --check CKPT # loads a nimbus checkpoint into torch

Fixtures (committed, so the C++ tests never need torch):
  models_resnet50_names.txt        torchvision resnet50 (13-ch conv1, 10 classes) state_dict: "name d0,d1,.." per line
  models_<net>.safetensors         PyTorch tensors only (no metadata): what nimbus must load by inference
  models_<net>_expected.safetensors  outputs on the real fixture tiles (+ training-step references)
ResNets are torchvision's own modules (BasicBlock / Bottleneck, ResNet._make_layer); only the stage
widths are made configurable (torchvision hard-codes 64), so names are exactly torchvision's.
Batch-norm statistics are non-trivial: accumulated over the real tiles in train mode, then perturbed.
input_norm (classifier normalisation, reflectance = clip(DN, 0, 10000) / 10000, then (x - mean) / std)
is stored as input_norm.mean / input_norm.std next to the weights; torch drops those two keys
before load_state_dict(strict=True) and applies the normalisation by hand (normalize_dn below).
"""
import argparse
import glob
import json
import os
import struct
import sys

import numpy as np
import rasterio
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.resnet import BasicBlock, Bottleneck

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import st  # noqa: E402
from dsen2cr_torch import DSen2CR  # noqa: E402

FIX = os.path.join(HERE, "..", "fixtures")
REAL = os.path.join(HERE, "..", "..", "..", "shared", "fixtures", "real")
EUROSAT_GLOB = "eurosat_ms/*/data/Euro_MS_Test_red/test/*/*.tif"
CLASSES = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
           "Residential", "River", "SeaLake"]
TRIPLETS = ["ROIs1970_fall_139_p839", "ROIs2017_winter_112_p797"]  # sen12ms_cr/xufangchn+GLF-CR/data/{s1,...}
CROP = (96, 96, 64)  # x0, y0, size of the DSen2-CR crops


# ---------------------------------------------------------------------------- models
class ResNetW(torchvision.models.ResNet):
    """torchvision.models.ResNet with stage widths width * (1, 2, 4, 8) and in_channels inputs."""

    def __init__(self, block, layers, width=64, in_channels=13, num_classes=10):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


# ---------------------------------------------------------------------------- data
def read(path):
    with rasterio.open(path) as f:
        return f.read().astype(np.float32)  # (C, H, W)


def eurosat_tiles():
    paths = sorted(glob.glob(os.path.join(REAL, EUROSAT_GLOB)))
    assert len(paths) == 20, paths
    rel = [os.path.relpath(p, REAL) for p in paths]
    labels = [CLASSES.index(os.path.basename(os.path.dirname(p))) for p in paths]
    return rel, torch.from_numpy(np.stack([read(p) for p in paths])), torch.tensor(labels)


def normalize_dn(dn, mean, std):
    return ((dn.clamp(0, 10000) / 10000) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def s2_norm(dn):  # data/normalize.h: clip to [0, 10000], / 2000
    return np.clip(dn, 0, 10000) / 2000


def s1_norm(db):  # VV clip [-25, 0], VH clip [-32.5, 0], 2 (x - min) / (0 - min); no NaN in these files
    assert not np.isnan(db).any()
    out = np.empty_like(db)
    for c, lo in enumerate((-25.0, -32.5)):
        out[c] = 2 * (np.clip(db[c], lo, 0) - lo) / (0 - lo)
    return out


def triplet_crops(size=CROP[2]):
    x0, y0 = CROP[0], CROP[1]
    s2, s1, tgt = [], [], []
    base = os.path.join(REAL, "sen12ms_cr", "xufangchn+GLF-CR", "data")
    for name in TRIPLETS:
        cut = lambda a: a[:, y0:y0 + size, x0:x0 + size]  # noqa: E731
        s2.append(s2_norm(cut(read(f"{base}/s2_cloudy/{name}.tif"))))
        s1.append(s1_norm(cut(read(f"{base}/s1/{name}.tif"))))
        tgt.append(s2_norm(cut(read(f"{base}/s2_cloudfree/{name}.tif"))))
    f = lambda v: torch.from_numpy(np.stack(v).astype(np.float32))  # noqa: E731
    return f(s2), f(s1), f(tgt)


# ---------------------------------------------------------------------------- helpers
def sd_tensors(model):
    return {k: v for k, v in model.state_dict().items()}


def nontrivial_bn(model, x):
    """BN running stats = cumulative averages over the tiles (train mode), then perturbed; affine randomised."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 4):
            model(x[i:i + 4])
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.add_(0.1 * torch.randn(c))
                m.running_var.mul_(torch.empty(c).uniform_(0.7, 1.4))
                m.weight.copy_(torch.empty(c).uniform_(0.6, 1.4))
                m.bias.copy_(0.2 * torch.randn(c))
                m.momentum = 0.1
                m.num_batches_tracked.fill_(1234)
    model.eval()


def band_stats(dn):
    r = dn.clamp(0, 10000) / 10000
    return r.mean(dim=(0, 2, 3)), r.std(dim=(0, 2, 3))


# ---------------------------------------------------------------------------- generation
def gen_names():
    m = torchvision.models.resnet50(num_classes=10)
    m.conv1 = nn.Conv2d(13, 64, kernel_size=7, stride=2, padding=3, bias=False)
    with open(os.path.join(FIX, "models_resnet50_names.txt"), "w") as f:
        for k, v in m.state_dict().items():
            f.write(f"{k} {','.join(str(d) for d in v.shape)}\n")
    print("resnet50 params", sum(p.numel() for p in m.parameters()))


def gen_resnet(tag, block, layers, width, rel, dn, mean, std):
    torch.manual_seed(sum(map(ord, tag)))  # deterministic (str hash is salted)
    m = ResNetW(block, layers, width)
    x = normalize_dn(dn, mean, std)
    nontrivial_bn(m, x)
    with torch.no_grad():  # logits of a few units: probabilities far from 0/1 so that 1e-4 means something
        logits = m(x)
        m.fc.weight.mul_(2.0 / logits.std().item())
        logits = m(x)
        probs = F.softmax(logits, 1)
    tensors = sd_tensors(m)
    tensors["input_norm.mean"], tensors["input_norm.std"] = mean, std
    st.save(os.path.join(FIX, f"models_{tag}.safetensors"), tensors)
    st.save(os.path.join(FIX, f"models_{tag}_expected.safetensors"), {"logits": logits, "probs": probs},
            {"tiles": json.dumps(rel)})
    print(tag, "params", sum(p.numel() for p in m.parameters()), "max prob", probs.max().item(),
          "min prob", probs.min().item())


def gen_dsen2cr(tag, B, Fe, sar, s2, s1):
    torch.manual_seed(sum(map(ord, tag)))  # deterministic (str hash is salted)
    m = DSen2CR(B, Fe, sar).eval()
    with torch.no_grad():
        out = m(s2, s1 if sar else None)
    st.save(os.path.join(FIX, f"models_{tag}.safetensors"), sd_tensors(m))
    st.save(os.path.join(FIX, f"models_{tag}_expected.safetensors"), {"out": out},
            {"triplets": json.dumps(TRIPLETS), "crop": json.dumps(list(CROP))})
    print(tag, "params", sum(p.numel() for p in m.parameters()), "|out - s2| mean", (out - s2).abs().mean().item())


def gen_train_resnet(rel, dn, labels, mean, std):
    """llm.c style: one step of a tiny ResNet (train-mode BN): loss, every gradient, BN buffers, Adam result."""
    torch.manual_seed(7)
    m = ResNetW(BasicBlock, [1, 1, 1, 1], 4)
    x = normalize_dn(dn[:4], mean, std)
    nontrivial_bn(m, normalize_dn(dn, mean, std))
    tensors = sd_tensors(m)
    tensors["input_norm.mean"], tensors["input_norm.std"] = mean, std
    st.save(os.path.join(FIX, "models_train_resnet.safetensors"), {k: v.clone() for k, v in tensors.items()})
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    loss = F.cross_entropy(m(x), labels[:4])
    loss.backward()
    exp = {"loss": loss.detach(), "labels": labels[:4]}
    for k, p in m.named_parameters():
        exp["grad." + k] = p.grad
    opt.step()
    for k, v in m.state_dict().items():
        exp["after." + k] = v  # parameters after one Adam step, BN buffers after one training forward
    st.save(os.path.join(FIX, "models_train_resnet_expected.safetensors"), exp, {"tiles": json.dumps(rel[:4])})
    print("train_resnet loss", loss.item())


def gen_train_dsen2cr(s2, s1, tgt):
    torch.manual_seed(8)
    m = DSen2CR(1, 8, True)
    c = 32  # the first 32x32 of each crop
    s2, s1, tgt = s2[..., :c, :c], s1[..., :c, :c], tgt[..., :c, :c]
    st.save(os.path.join(FIX, "models_train_dsen2cr.safetensors"), {k: v.clone() for k, v in sd_tensors(m).items()})
    loss = (m(s2, s1) - tgt).abs().mean()
    loss.backward()
    exp = {"loss": loss.detach()}
    for k, p in m.named_parameters():
        exp["grad." + k] = p.grad
    st.save(os.path.join(FIX, "models_train_dsen2cr_expected.safetensors"), exp,
            {"triplets": json.dumps(TRIPLETS), "crop": json.dumps([CROP[0], CROP[1], c])})
    print("train_dsen2cr loss", loss.item())


# ---------------------------------------------------------------------------- checker
def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    dt = {"F32": np.float32, "I64": np.int64, "F64": np.float64}
    out = {}
    for k, v in header.items():
        b, e = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(data[b:e], dtype=dt[v["dtype"]]).reshape(v["shape"]).copy())
    return out, meta


def check(path):
    """Loads a nimbus checkpoint into the torch model of its config with strict name matching."""
    tensors, meta = read_safetensors(path)
    cfg = json.loads(meta["model"])
    weights = {k: v for k, v in tensors.items() if not k.startswith(("optim.", "input_norm."))}
    if cfg["arch"] == "resnet":
        block = Bottleneck if cfg["block"] == "bottleneck" else BasicBlock
        m = ResNetW(block, cfg["blocks"], cfg["width"], cfg["in_channels"], cfg["classes"])
        weights = {k: v.long() if k.endswith("num_batches_tracked") else v for k, v in weights.items()}
    else:
        m = DSen2CR(cfg["blocks"], cfg["features"], cfg["sar"])
    res = m.load_state_dict(weights, strict=True)
    print(f"{path}: {cfg} -> strict load_state_dict OK ({len(weights)} tensors, {res})")
    m.eval()
    if cfg["arch"] == "resnet" and cfg["in_channels"] == 13:
        rel, dn, _ = eurosat_tiles()
        with torch.no_grad():
            p = F.softmax(m(normalize_dn(dn[:4], tensors["input_norm.mean"], tensors["input_norm.std"])), 1)
        print("probabilities of the first 4 EuroSAT tiles:\n", p.numpy().round(6))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", help="a nimbus checkpoint to load into torch (strict)")
    args = ap.parse_args()
    if args.check:
        check(args.check)
        return
    torch.set_num_threads(1)
    gen_names()
    rel, dn, labels = eurosat_tiles()
    mean, std = band_stats(dn)  # stand-in for the training-set statistics
    gen_resnet("resnet_bottleneck", Bottleneck, [1, 1, 1, 1], 8, rel, dn, mean, std)
    gen_resnet("resnet_basic", BasicBlock, [2, 1, 1, 2], 8, rel, dn, mean, std)
    s2, s1, tgt = triplet_crops()
    gen_dsen2cr("dsen2cr_sar", 2, 16, True, s2, s1)
    gen_dsen2cr("dsen2cr_nosar", 1, 8, False, s2, s1)
    gen_train_resnet(rel, dn, labels, mean, std)
    gen_train_dsen2cr(s2, s1, tgt)


if __name__ == "__main__":
    main()
