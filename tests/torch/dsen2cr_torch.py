"""dsen2cr_torch.py: DSen2-CR in PyTorch (reference dsen2cr-sen12mscr.md section 1), the one definition that
tests/torch/gen_fixtures_models.py (the fixtures of models/) and bench/torch/gpu_reference.py (the GPU
timing reference) both build, so the model they measure is the model the fixtures check.
Needs only torch.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class ResBlock(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.conv1 = nn.Conv2d(f, f, 3, padding=1)
        self.conv2 = nn.Conv2d(f, f, 3, padding=1)

    def forward(self, x):
        return x + 0.1 * self.conv2(F.relu(self.conv1(x)))


class DSen2CR(nn.Module):
    """B residual blocks of Fe features; with sar the input is the 13 S2 bands and the 2 S1 bands."""

    def __init__(self, B, Fe, sar=True):
        super().__init__()
        self.sar = sar
        self.head = nn.Conv2d(15 if sar else 13, Fe, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(Fe) for _ in range(B)])
        self.tail = nn.Conv2d(Fe, 13, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=0, mode="fan_in", nonlinearity="relu")  # he_uniform
                nn.init.uniform_(m.bias, -0.05, 0.05)  # non-zero so that bias handling is tested

    def forward(self, s2, s1=None):
        x = torch.cat([s2, s1], 1) if self.sar else s2
        return self.tail(self.blocks(F.relu(self.head(x)))) + s2
