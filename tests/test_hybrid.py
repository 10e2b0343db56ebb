"""The corrected hybrid update descends the hybrid energy; the seed's signs climb it."""
import pytest
import torch

from energy_utils import engine
from energy_utils.densities import random_mixture
from energy_utils.hybrid import HybridSource, central_difference_gradient


def setup(seed_signs):
    g = torch.Generator().manual_seed(0)
    gm = random_mixture(3, 4, g)
    sigma2 = 0.2
    centre = torch.randn(1, 4, dtype=torch.float64, generator=g)
    task = lambda x, y: 0.5 * ((y - x) ** 2).sum(1)
    x = centre.expand(64, 4)
    den = lambda y: gm.tweedie_mean(y, sigma2)
    src = HybridSource(den, task, x, alpha=0.7, beta=0.3, sigma2=sigma2, seed_signs=seed_signs)
    energy = lambda y: 0.7 * task(x, y) - 0.3 * gm.log_prob(y, sigma2)
    y = gm.sample_noisy(64, sigma2, g)[1]
    return src, energy, y, sigma2


def test_corrected_update_is_exact_scaled_gradient_descent():
    src, energy, y, sigma2 = setup(False)
    d, _, _ = src.direction(src.x, y)
    yg = y.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(yg).sum(), yg)
    assert torch.allclose(d, -sigma2 * grad, atol=1e-10)
    assert (energy(y + 1e-3 * d) < energy(y)).all()


def test_seed_signs_climb_the_energy():
    src, energy, y, _ = setup(True)
    d, _, _ = src.direction(src.x, y)
    assert (energy(y + 1e-3 * d) > energy(y)).all()


def test_hybrid_source_runs_in_the_engine():
    src, energy, y, _ = setup(False)
    res = engine.iterate(src, y, engine.FixedSchedule(50, h=0.2), disable=True)
    assert (energy(res.y) < energy(y)).float().mean() > 0.95


def test_central_difference_gradient_matches_autograd_and_rejects_bad_input():
    src, energy, y, _ = setup(False)
    yg = y.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(yg).sum(), yg)
    fd = central_difference_gradient(energy, y)
    assert torch.allclose(fd, grad, rtol=1e-7, atol=1e-9)
    with pytest.raises(ValueError, match="batch of vectors"):
        central_difference_gradient(energy, y[0])
    with pytest.raises(ValueError, match="eps"):
        central_difference_gradient(energy, y, eps=0.0)
