"""Blind estimation by energy scans: the exact energy finds the true Σ; the controls compute the right density."""
import math

import pytest
import torch

from energy_utils import blind
from energy_utils.covariances import DiagCov, box_var
from energy_utils.densities import GaussianMixture, NoiseCov


def _setup(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.rand(1, 6, 6, generator=g, dtype=torch.float64)
    R = torch.randn(36, 36, generator=g, dtype=torch.float64) / 6
    C = 0.05 * (R @ R.T) + 0.02 * torch.eye(36, dtype=torch.float64)
    gm = GaussianMixture([1.0], mean.reshape(1, -1), C[None])
    x = gm.sample(n, g).reshape(n, 1, 6, 6)
    return g, mean, C, gm, x


def box(side, n=1, vin=1.0, vout=1e-4):
    return DiagCov.from_var(box_var((1, 6, 6), torch.full((n,), side), torch.full((n,), vin, dtype=torch.float64),
                                    torch.full((n,), vout, dtype=torch.float64)))


def test_gaussian_controls_match_the_exact_density():
    g, mean, C, gm, x = _setup(8)
    cov = box(4, 8)
    exact = -gm.log_prob(x.flatten(1), NoiseCov.diagonal(cov.var.flatten(1)[0]))
    assert torch.allclose(blind.gaussian_energy(mean.flatten(), C)(x, cov), exact)
    diag = blind.pixel_gaussian_energy(mean[0] * 0 + mean, torch.diagonal(C).reshape(1, 6, 6))
    v = torch.diagonal(C) + cov.var.flatten(1)[0]
    ref = (0.5 * (x.flatten(1) - mean.flatten()) ** 2 / v + 0.5 * torch.log(2 * math.pi * v)).sum(1)
    assert torch.allclose(diag(x, cov), ref)


def test_the_exact_energy_finds_the_box_side():
    g, mean, C, gm, x = _setup(64)
    true = box(4, 64)
    y = x + true.var.sqrt() * torch.randn(x.shape, generator=g, dtype=torch.float64)
    est, U = blind.estimate(blind.gaussian_energy(mean.flatten(), C), y, [2, 4, 6], lambda s: box(s))
    assert U.shape == (64, 3) and (est == 4).double().mean() > 0.9
    with pytest.raises(ValueError, match="two candidates"):
        blind.estimate(blind.gaussian_energy(mean.flatten(), C), y, [4], lambda s: box(s))
    with pytest.raises(ValueError, match="var >= 0"):
        blind.pixel_gaussian_energy(mean, -torch.ones_like(mean))
