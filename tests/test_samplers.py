"""The coarse-to-fine sampler: schedule formulas, per-chain stopping, guards, and correctness with an exact
blind denoiser of a high-dimensional Gaussian (where the true prior is known)."""
import math

import pytest
import torch

from energy_utils import operators as O
from energy_utils import engine
from energy_utils import samplers as S

D, MU, C = 256, 0.3, 0.2          # prior x ~ N(MU·1, C² I) in D dimensions


def blind_gaussian_denoiser(y):
    """Exact posterior mean for N(MU, C²I) with the noise variance estimated blindly from y itself."""
    r = y - MU
    tot = r.flatten(1).pow(2).mean(1).clamp_min(C ** 2 * 1.0001)          # ≈ C² + σ²
    return MU + (C ** 2 / tot).view(-1, *([1] * (y.ndim - 1))) * r


def test_schedule_and_idealised_counts():
    assert engine.step_size(1, 0.01) == pytest.approx(0.01)
    assert engine.step_size(100, 0.01) == pytest.approx(100 / 199)
    assert engine.noise_scale(0.3, 1.0, 2.0) == 0.0                             # beta = 1: no injected noise
    h, b, s = 0.2, 0.5, 0.7                                                # bracket multiplies the difference
    assert engine.noise_scale(h, b, s) == pytest.approx(s * math.sqrt((1 - b * h) ** 2 - (1 - h) ** 2))
    assert [S.idealized_iterations(b) for b in (0.5, 0.1, 0.01)] == [47, 127, 661]
    assert S.idealized_iterations(0.1, fixed_h=True) == 4603
    with pytest.raises(ValueError, match="beta"):
        S.idealized_iterations(0.0)


def test_synthesis_recovers_the_prior_and_counts_nfe():
    g = torch.Generator().manual_seed(0)
    res = S.ks_sample(blind_gaussian_denoiser, (32, 1, 16, 16), beta=0.5, generator=g, disable=True)
    assert all(s == "converged" for s in res.status)
    assert torch.equal(res.nfe, res.n_updates + 1)
    x = res.x.flatten(1)
    assert abs(x.mean().item() - MU) < 0.02
    assert abs(x.std(1).mean().item() - C) < 0.03                         # samples, not the mean
    # chains stop on their own; the idealised law (47) assumes a denoiser that removes all the noise, this
    # full-dimensional Gaussian keeps a fraction C²/(C²+σ²) of it, so ‖f‖ underestimates σ and it stops earlier
    assert 20 <= res.nfe.float().mean().item() <= 60 and res.nfe.min() < res.nfe.max()
    assert res.sigma.max().item() < 0.01
    assert res.sigma_trace.shape == (int(res.nfe.max()), 32)


def test_inverse_problem_is_consistent_and_guards_work():
    g = torch.Generator().manual_seed(1)
    op = O.RandomPixels((1, 16, 16), 0.3, g)
    x = MU + C * torch.randn(4, 1, 16, 16, generator=g)
    xc = op.M_T(x)
    res = S.ks_sample(blind_gaussian_denoiser, operator=op, measurement=xc, beta=0.2, generator=g, disable=True)
    assert all(s == "converged" for s in res.status)
    assert (op.M_T(res.y) - xc).pow(2).mean().sqrt() < 0.02              # data term pins the measured subspace
    capped = S.ks_sample(blind_gaussian_denoiser, (3, 1, 8, 8), beta=0.01, max_iter=5, generator=g, disable=True)
    assert capped.status == ["max_iter"] * 3 and capped.nfe.tolist() == [5, 5, 5]
    explode = lambda y: 10 * y                                              # a broken denoiser
    bad = S.ks_sample(explode, (2, 1, 8, 8), beta=0.5, generator=g, disable=True)
    assert bad.status == ["diverged"] * 2 and bad.nfe.tolist() == [1, 1]


def test_fixed_step_is_much_slower_and_callback_sees_every_iteration():
    g = torch.Generator().manual_seed(2)
    seen = []
    ramp = S.ks_sample(blind_gaussian_denoiser, (4, 1, 16, 16), beta=0.5, generator=g, disable=True,
                       callback=lambda info: seen.append(int(info["active"].sum())))
    fixed = S.ks_sample(blind_gaussian_denoiser, (4, 1, 16, 16), beta=0.5, fixed_h=True, generator=g, disable=True)
    assert len(seen) == int(ramp.nfe.max()) and seen[-1] == 0
    assert fixed.nfe.float().mean() > 8 * ramp.nfe.float().mean()
    mean, std = S.posterior_summary(ramp.x, 2)
    assert mean.shape == (2, 1, 16, 16) and (std >= 0).all()


def test_vector_data_synthesis():
    g = torch.Generator().manual_seed(3)
    res = S.ks_sample(blind_gaussian_denoiser, (8, D), beta=0.5, generator=g, disable=True)
    assert res.x.shape == (8, D) and all(s == "converged" for s in res.status)
    assert abs(res.x.mean().item() - MU) < 0.03


def test_stalled_chain_stops_and_returns_its_best_estimate():
    calls = {"n": 0}

    def breaks_down(y):                       # a good denoiser that starts amplifying after 40 calls
        calls["n"] += 1
        return blind_gaussian_denoiser(y) if calls["n"] <= 40 else y + 0.5 * (y - MU)

    g = torch.Generator().manual_seed(4)
    res = S.ks_sample(breaks_down, (2, 1, 16, 16), beta=0.1, generator=g, disable=True)
    assert res.status == ["stalled"] * 2
    assert torch.isfinite(res.x).all() and res.x.abs().max() < 2       # the estimate before the breakdown
    assert (res.info["sigma_best"] < res.sigma).all()
