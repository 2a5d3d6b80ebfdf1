"""The equations of paper section 4, each as a small tested function (torch tensors).

Submodel ids are 0-based: id k is the paper's sector k+1 with midpoint 2pi(k + 1/2)/K.
"""
from __future__ import annotations

import math

import torch

TWO_PI = 2.0 * math.pi


def angle_eq9(z: torch.Tensor) -> torch.Tensor:
    """Eq 9: angle of z = [..., 2] with the x-axis, in (-pi, pi] (the piecewise arctan)."""
    z1, z2 = z[..., 0], z[..., 1]
    safe = torch.where(z1 == 0, torch.ones_like(z1), z1)
    base = torch.atan(z2 / safe)
    theta = torch.where(z1 > 0, base,
            torch.where((z1 < 0) & (z2 >= 0), base + math.pi,
            torch.where(z1 < 0, base - math.pi,
            torch.where(z2 > 0, torch.full_like(z1, math.pi / 2),
            torch.where(z2 < 0, torch.full_like(z1, -math.pi / 2), torch.zeros_like(z1))))))
    return theta


def noisy_angle_eq10(theta: torch.Tensor, noise_std: float = 0.0, generator=None) -> torch.Tensor:
    """Eq 10: (theta + eps) mod 2pi, eps ~ N(0, noise_std^2) during training only."""
    if noise_std > 0:
        theta = theta + noise_std * torch.randn(theta.shape, generator=generator).to(theta.device, theta.dtype)
    t = torch.remainder(theta, TWO_PI)
    return torch.where(t >= TWO_PI, torch.zeros_like(t), t)


def midpoints_eq11(k: int) -> torch.Tensor:
    """Eq 11: zeta_k = 2pi(k + 1/2)/K, k = 0..K-1."""
    return TWO_PI * (torch.arange(k, dtype=torch.float64) + 0.5) / k


def circular_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = torch.remainder(a - b, TWO_PI)
    return torch.minimum(d, TWO_PI - d)


def soft_code_eq12(theta: torch.Tensor, k: int, sigma: float) -> torch.Tensor:
    """Eq 12 on the circular distance: [..., K] codes exp(-d^2 / (2 sigma^2)) in (0, 1]."""
    zeta = midpoints_eq11(k).to(theta.device, theta.dtype)
    d = circular_distance(theta[..., None], zeta)
    return torch.exp(-(d * d) / (2 * sigma * sigma))


def sigma_eq13(k: int, gamma: float, tau: float) -> float:
    """Eq 13: sigma from the overlap ratio gamma and tau."""
    return math.sqrt(-(math.pi ** 2) * (1 + gamma) ** 2 / (2 * k * k * math.log(tau)))


def entropy_eq14(logits: torch.Tensor) -> torch.Tensor:
    """Eq 14: predictive entropy (nats) of softmax(logits) over the last axis."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def uncertainty_code_eq15(entropies: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq 15: [..., K] -> tau at argmin_k H_k, 0 elsewhere."""
    idx = entropies.argmin(-1)
    return torch.nn.functional.one_hot(idx, entropies.shape[-1]).to(entropies.dtype) * tau


def partition_eq16(soft: torch.Tensor, unc: torch.Tensor, tau: float, alpha: float = 0.5) -> torch.Tensor:
    """Eq 16: c = alpha * soft + (1 - alpha) * uncertainty; P(x) = {k : c_k >= tau/2} as a
    boolean mask [..., K]. Never empty: the uncertainty code's tau always qualifies at alpha=1/2;
    for other alphas the argmax of c is added."""
    c = alpha * soft + (1 - alpha) * unc
    mask = c >= tau / 2 - 1e-12
    best = torch.nn.functional.one_hot(c.argmax(-1), c.shape[-1]).bool()
    return mask | best


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(N(mu, exp(logvar)) || N(0, I))."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)).mean()


def mmd_rbf(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Maximum-mean discrepancy with an RBF kernel of bandwidth 2*dim (InfoVAE)."""
    dim = a.shape[1]
    def k(x, y):
        return torch.exp(-torch.cdist(x, y).pow(2) / (2.0 * dim))
    return k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean()


def infovae_loss_eq7(recon_err: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor,
                     alpha: float, lam: float) -> torch.Tensor:
    """-L* of eq 7: reconstruction + (1 - alpha) KL + (alpha + lambda - 1) MMD(q(z) || N(0, I))."""
    prior = torch.randn_like(z)
    return recon_err + (1 - alpha) * kl_standard_normal(mu, logvar) + \
        (alpha + lam - 1) * mmd_rbf(z, prior)
