"""Networks: the full ResNet, the stacked InfoVAE and the generator of K submodels."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from . import maths


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


def trunk(cin: int, w: int, blocks: int = 1) -> nn.Sequential:
    """Stem + first stage (full resolution)."""
    layers = [nn.Conv2d(cin, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
    layers += [BasicBlock(w, w) for _ in range(blocks)]
    return nn.Sequential(*layers)


def head(w: tuple[int, int, int], classes: int, blocks: int = 1) -> nn.Sequential:
    """Stages 2 and 3 (stride 2 each), global average pooling, classifier."""
    layers = [BasicBlock(w[0], w[1], 2)] + [BasicBlock(w[1], w[1]) for _ in range(blocks - 1)]
    layers += [BasicBlock(w[1], w[2], 2)] + [BasicBlock(w[2], w[2]) for _ in range(blocks - 1)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w[2], classes)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """The full model: a ResNet scaled to the data (3 stages, widths w)."""

    def __init__(self, cin: int, classes: int, widths=(32, 64, 128), blocks: int = 1):
        super().__init__()
        self.trunk = trunk(cin, widths[0], blocks)
        self.head = head(widths, classes, blocks)

    def forward(self, x):
        return self.head(self.trunk(x))


class Generator(nn.Module):
    """Fig 3: a one-hot k activates the k-th branch; the trunk is shared by all submodels.
    Submodel k = trunk + branch k, a scaled-down version of the full architecture."""

    def __init__(self, cin: int, classes: int, k: int, widths=(16, 32, 64), blocks: int = 1):
        super().__init__()
        self.k = k
        self.shared = trunk(cin, widths[0], blocks)
        self.branches = nn.ModuleList([head(widths, classes, blocks) for _ in range(k)])

    def forward_all(self, x) -> torch.Tensor:
        """Logits of every submodel: [K, B, classes]."""
        h = self.shared(x)
        return torch.stack([b(h) for b in self.branches])

    def forward(self, x, onehot: torch.Tensor) -> torch.Tensor:
        """Gated by a one-hot [K] (or [B, K]) vector: sum_k delta_k * branch_k(shared(x))."""
        out = self.forward_all(x)
        if onehot.dim() == 1:
            onehot = onehot[None].expand(x.shape[0], -1)
        return torch.einsum("kbc,bk->bc", out, onehot.to(out.dtype))

    def submodel(self, k: int) -> nn.Module:
        return Submodel(self.shared, self.branches[k])


class Submodel(nn.Module):
    def __init__(self, shared: nn.Module, branch: nn.Module):
        super().__init__()
        self.shared = shared
        self.branch = branch

    def forward(self, x):
        return self.branch(self.shared(x))


class VAEStage(nn.Module):
    """One InfoVAE stage: x (flat) -> (mu, logvar) of z -> reconstruction of x."""

    def __init__(self, din: int, hidden: int, dz: int):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(din, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.mu = nn.Linear(hidden, dz)
        self.logvar = nn.Linear(hidden, dz)
        self.dec = nn.Sequential(nn.Linear(dz, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, din))

    def encode(self, x):
        h = self.enc(x)
        return self.mu(h), self.logvar(h).clamp(-10, 10)

    def forward(self, x):
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return z, mu, logvar, self.dec(z)


class SInfoVAE(nn.Module):
    """Stacked InfoVAE (4.1): stage 1 x -> z (dz dims), stage 2 z -> z-bar (2 dims)."""

    def __init__(self, din: int, dz: int = 32, hidden1: int = 512, hidden2: int = 128):
        super().__init__()
        self.s1 = VAEStage(din, hidden1, dz)
        self.s2 = VAEStage(dz, hidden2, 2)

    def losses(self, flat: torch.Tensor, alpha: float, lam: float):
        """Eq 7 for stage 1 on the flattened batch and eq 8 for stage 2, trained stage-wise on the
        (detached) stage-1 mean: (loss 1, loss 2, stage-2 mean, the 2-D point)."""
        z, mu1, lv1, rec1 = self.s1(flat)
        l1 = maths.infovae_loss_eq7(F.mse_loss(rec1, flat, reduction="none").sum(1).mean(), mu1, lv1, z,
                                    alpha, lam)
        zin = mu1.detach()
        zb, mu2, lv2, rec2 = self.s2(zin)
        l2 = maths.infovae_loss_eq7(F.mse_loss(rec2, zin, reduction="none").sum(1).mean(), mu2, lv2, zb,
                                    alpha, lam)
        return l1, l2, mu2

    def point(self, x) -> torch.Tensor:
        """Inference: the 2-D point z-bar (means of both stages)."""
        mu1, _ = self.s1.encode(x.flatten(1))
        mu2, _ = self.s2.encode(mu1)
        return mu2


class ClassSectorSelector(nn.Module):
    """The class-consistent selector (extension to the paper): the full model's class posterior
    p (1xNx1x1, what the edge has already computed) -> the 2-D point sum_c p_c (cos t_c, sin t_c),
    where t_c is the angle given to class c. Its angle falls in the sector of the likely class, so
    eqs 9-12 select that class's submodel."""

    def __init__(self, class_angles):
        super().__init__()
        a = torch.as_tensor(class_angles, dtype=torch.float32)
        self.register_buffer("table", torch.stack([a.cos(), a.sin()], 1))  # [N, 2]

    def forward(self, p):
        return p.flatten(1) @ self.table


class Selector(nn.Module):
    """Exported selector: image -> 2-D point."""

    def __init__(self, vae: SInfoVAE):
        super().__init__()
        self.vae = vae

    def forward(self, x):
        return self.vae.point(x)


def count_flops(model: nn.Module, shape) -> int:
    """Multiply-accumulates of conv and linear layers for one input of `shape` (C, H, W)."""
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def lin_hook(m, inp, out):
        nonlocal total
        total += m.in_features * m.out_features * (out.numel() // m.out_features)

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    model.train(was)
    for h in hooks:
        h.remove()
    return total


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
