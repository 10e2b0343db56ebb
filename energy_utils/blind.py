"""Blind estimation of the measurement's covariance by scanning an energy over candidate Σ(θ).

For an observation y = x + n with n ~ N(0, Σ(θ)) and θ unknown (a box side, a number of masked rows, a noise
level), the maximum-likelihood estimate is

    θ̂ = argmax_θ log p(y | Σ(θ)) = argmin_θ U(y, Σ(θ)),

which needs U to be −log p(y | Σ) up to a constant that does *not* depend on Σ: a normalized energy (A-DSM +
A-CSM) has one; an energy trained by A-DSM alone has an arbitrary Σ-dependent offset, so its argmin can land
anywhere. The energies compared here are callables ``energy(y, cov) -> (B,)``:

* :func:`model_energy` for a trained energy model (no gradient, batched);
* :func:`pixel_gaussian_energy`, the **per-pixel Gaussian control** (no network: independent pixels with the
  training digits' means m_i and variances s_i², so U = Σ_i (y_i − m_i)²/(2(s_i² + v_i)) + ½ log 2π(s_i² + v_i));
* :func:`gaussian_energy`, the full-covariance Gaussian control N(μ, C + Σ) (one Cholesky per candidate Σ).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .covariances import DiagCov
from .densities import GaussianMixture, NoiseCov


def model_energy(model: torch.nn.Module, batch_size: int = 256) -> Callable:
    """U_θ(y, Σ) of an :mod:`~energy_utils.energy_models` model as a callable (evaluated without a graph)."""
    @torch.no_grad()
    def energy(y: torch.Tensor, cov: DiagCov) -> torch.Tensor:
        return torch.cat([model(y[i:i + batch_size], cov[i:i + batch_size]).double()
                          for i in range(0, y.shape[0], batch_size)])
    return energy


def pixel_gaussian_energy(mean: torch.Tensor, var: torch.Tensor) -> Callable:
    """The per-pixel Gaussian control's −log p(y | Σ): pixels independent, N(m_i, s_i² + v_i), for a
    pixel-diagonal Σ = diag(v) (the variance map is shared by the channels). ``mean`` and ``var`` have the
    shape of one signal."""
    if mean.shape != var.shape or torch.any(var < 0):
        raise ValueError("mean and var must have the shape of one signal, with var >= 0")

    def energy(y: torch.Tensor, cov: DiagCov) -> torch.Tensor:
        if bool(cov.fourier.any()):
            raise ValueError("the per-pixel Gaussian control takes pixel-diagonal covariances only")
        v = cov.var.to(torch.float64)                          # (B, 1, H, W) or (B, d)
        s = var.to(torch.float64).to(y.device) + v
        r = y.double() - mean.to(torch.float64).to(y.device)
        return (0.5 * r.pow(2) / s + 0.5 * torch.log(2 * math.pi * s)).flatten(1).sum(1)
    return energy


def gaussian_energy(mean: torch.Tensor, cov_matrix: torch.Tensor) -> Callable:
    """The full Gaussian control −log N(y; μ, C + Σ) for pixel-diagonal Σ; ``mean`` (d,), ``cov_matrix``
    (d, d). A Σ shared by the whole batch costs one Cholesky; per-row Σ are grouped by their distinct maps."""
    gm = GaussianMixture(torch.ones(1, dtype=torch.float64), mean.reshape(1, -1).double(),
                         cov_matrix.double()[None])

    def energy(y: torch.Tensor, cov: DiagCov) -> torch.Tensor:
        if bool(cov.fourier.any()):
            raise ValueError("the Gaussian control here takes pixel-diagonal covariances only")
        v = cov.var.to(torch.float64).flatten(1)
        if v.shape[0] == 1:
            v = v.expand(y.shape[0], -1)
        yf = y.double().flatten(1).cpu()
        out = torch.empty(y.shape[0], dtype=torch.float64)
        uniq, inv = torch.unique(v.cpu(), dim=0, return_inverse=True)
        for j in range(uniq.shape[0]):
            rows = (inv == j).nonzero()[:, 0]
            out[rows] = -gm.log_prob(yf[rows], NoiseCov.diagonal(uniq[j]))
        return out.to(y.device)
    return energy


def scan(energy: Callable, y: torch.Tensor, covs: Sequence[DiagCov]) -> torch.Tensor:
    """U(y, Σ_k) for every candidate Σ_k (each a DiagCov of batch 1 or B): (B, K)."""
    out = []
    for cov in covs:
        c = cov.expand_batch(y.shape[0]) if cov.batch_size == 1 else cov
        out.append(energy(y, c.to(dtype=y.dtype, device=y.device)).double().cpu())
    return torch.stack(out, 1)


def estimate(energy: Callable, y: torch.Tensor, candidates: Sequence, make_cov: Callable) -> tuple[torch.Tensor, torch.Tensor]:
    """θ̂ = argmin over ``candidates`` of U(y, make_cov(θ)); returns (θ̂ per row (B,), the energies (B, K))."""
    if len(candidates) < 2:
        raise ValueError("need at least two candidates to choose from")
    U = scan(energy, y, [make_cov(c) for c in candidates])
    if not torch.isfinite(U).all():
        raise FloatingPointError("a candidate covariance gave a non-finite energy")
    return torch.as_tensor(candidates)[U.argmin(1)], U
