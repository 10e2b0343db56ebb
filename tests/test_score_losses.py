"""A-DSM, A-CSM and normalisation against the exact Gaussian-mixture energy."""
import math

import pytest
import torch

from energy_utils.covariances import CovFamily, DiagCov
from energy_utils.densities import random_mixture
from energy_utils.energy_models import MixtureEnergy, VectorEnergy, energy_and_scores
from energy_utils.score_losses import (acsm_loss, acsm_target, adsm_loss, bits_per_dim, exact_density_errors,
                                       log_prob, log_ratio, normalization_constant, normalization_constants,
                                       score_matching_loss)

F64 = torch.float64
N = 12000


def draws(basis, C=2, n=N, seed=0):
    """Exact energy and scores at y = x + ε for an image-shaped mixture (C channels share a 2×2 variance map)."""
    gm = random_mixture(3, 4 * C, torch.Generator().manual_seed(10), spread=1.0, scale=0.5)
    g = torch.Generator().manual_seed(seed)
    cov = CovFamily(var_min=1e-2, var_max=1e1).sample(n, (1, 2, 2), g, F64)
    cov = DiagCov(cov.log_var, torch.full((n,), basis == "fourier"))
    cov = DiagCov(cov.symmetrized_log_var(), cov.fourier)
    x = gm.sample(n, g).reshape(n, C, 2, 2)
    eps = cov.sample(C, g)
    sc = energy_and_scores(MixtureEnergy(gm), x + eps, cov)
    return gm, cov, x, eps, sc


def slope(pred, target):
    p, t = pred.flatten(), target.flatten()
    b = p @ t / (p @ p)
    se = torch.sqrt((t - b * p).pow(2).mean() / (p @ p))
    return b.item(), se.item()


@pytest.mark.parametrize("basis", ["pixel", "fourier"])
def test_exact_scores_are_the_conditional_means_of_both_targets(basis):
    """E[target | y] = exact score ⇔ least-squares slope of the target on the exact score is 1."""
    _, cov, _, eps, sc = draws(basis)
    b, se = slope(sc.grad_logvar, acsm_target(eps, cov))
    assert abs(b - 1) < 4 * se + 1e-3
    b, se = slope(cov.apply(sc.grad_y, 0.5), cov.whiten(eps))
    assert abs(b - 1) < 4 * se + 1e-3


def test_channel_mean_target_is_off_by_the_channel_count():
    _, cov, _, eps, sc = draws("pixel", C=2)
    b, se = slope(sc.grad_logvar, 0.5 * (1 - cov.whitened_energy(eps) / 2))
    assert abs(b - 0.5) < 4 * se + 1e-3


@pytest.mark.parametrize("basis", ["pixel", "fourier"])
def test_losses_are_minimised_by_the_exact_energy(basis):
    """Scaling the exact scores away from 1 raises the expected A-DSM and A-CSM losses."""
    _, cov, _, eps, sc = draws(basis, n=6000, seed=1)
    base_dsm = adsm_loss(sc.grad_y, eps, cov).mean()
    base_csm = acsm_loss(sc.grad_logvar, eps, cov).mean()
    for a in (0.8, 1.2):
        assert adsm_loss(a * sc.grad_y, eps, cov).mean() > base_dsm
        assert acsm_loss(a * sc.grad_logvar, eps, cov).mean() > base_csm


def test_dsm_is_blind_to_sigma_dependent_offsets_and_csm_is_not():
    gm = random_mixture(3, 4, torch.Generator().manual_seed(2))

    class Shifted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.exact = MixtureEnergy(gm)

        def forward(self, y, cov):
            return self.exact(y, cov) + 0.7 * cov.log_var.sum(1)      # U* + f(Σ)

    g = torch.Generator().manual_seed(3)
    cov = CovFamily(var_min=1e-2, var_max=1e1).sample(3000, (4,), g, F64)
    x = gm.sample(3000, g)
    eps = cov.sample(1, g)
    e0 = energy_and_scores(MixtureEnergy(gm), x + eps, cov)
    e1 = energy_and_scores(Shifted(), x + eps, cov)
    assert torch.allclose(adsm_loss(e0.grad_y, eps, cov), adsm_loss(e1.grad_y, eps, cov), atol=1e-10)
    assert acsm_loss(e1.grad_logvar, eps, cov).mean() > 1.5 * acsm_loss(e0.grad_logvar, eps, cov).mean()


def test_acsm_target_has_mean_zero_and_loss_scalings():
    g = torch.Generator().manual_seed(4)
    cov = CovFamily().sample(20000, (1, 4, 4), g, F64)
    eps = cov.sample(3, g)
    t = acsm_target(eps, cov)
    assert t.shape == (20000, 1, 4, 4)
    assert t.mean().abs() < 0.02
    d = eps[0].numel()
    r = torch.ones_like(t)
    assert torch.allclose(acsm_loss(t + r, eps, cov), torch.full((20000,), 16 / d**2, dtype=F64))
    assert torch.allclose(adsm_loss(cov.apply(eps, -1.0), eps, cov), torch.zeros(20000, dtype=F64), atol=1e-10)


def test_training_loss_backpropagates_through_both_scores():
    torch.manual_seed(0)
    model = VectorEnergy(4, width=16, depth=1, emb=8)
    torch.nn.init.normal_(model.out.weight, std=0.1)          # (zero-initialised output: nothing upstream moves)
    g = torch.Generator().manual_seed(5)
    cov = CovFamily().sample(32, (4,), g)
    x = torch.randn(32, 4, generator=g)
    loss, extra = score_matching_loss(model, x, cov, dual=True, generator=g)
    loss.backward()
    emb_grad = sum(p.grad.abs().sum() for p in model.embed.parameters() if p.grad is not None)
    assert set(extra) == {"dsm", "csm"} and emb_grad > 0
    loss1, extra1 = score_matching_loss(model, x, cov, dual=False, generator=g)
    assert set(extra1) == {"dsm"}
    with pytest.raises(ValueError, match="covariances"):
        score_matching_loss(model, x[:3], cov)


def test_normalisation_recovers_the_exact_density_up_to_anchor_bias():
    gm = random_mixture(3, 4, torch.Generator().manual_seed(6), spread=1.0, scale=0.5)
    shifted = MixtureEnergy(gm, offset=4.2)                    # −log p + 4.2
    g = torch.Generator().manual_seed(7)
    x = gm.sample(4000, g)
    c = normalization_constant(shifted, x, anchor_var=1e4, generator=g)
    assert abs(c["c"] + 4.2) < 5e-3 and abs(c["c_paper"] + 4.2) < 0.1
    assert c["stderr"] < c["stderr_paper"]
    both = normalization_constants(shifted, x[:1000], anchor_var=1e4, generator=g)
    cov = CovFamily(var_min=1e-2, var_max=1e1).sample(200, (4,), g, F64)
    y = gm.sample(200, g) + cov.sample(1, g)
    lp = log_prob(shifted, y, cov, both)
    assert (lp - gm.log_prob(y, _noise(cov))).abs().max() < 0.02
    err = exact_density_errors(shifted, MixtureEnergy(gm), gm, cov[:4], both, n_y=100, generator=g)
    # (pairs may mix bases, whose anchors carry independent Monte-Carlo errors)
    assert err["offset"].abs().max() < 0.01 and err["ratio"].abs().max() < 1e-3


def _noise(cov):
    from energy_utils.densities import NoiseCov
    M = cov.dense()
    return NoiseCov.full(0.5 * (M + M.transpose(1, 2)))


def test_log_ratio_cancels_the_constant_and_bits_per_dim():
    gm = random_mixture(2, 3, torch.Generator().manual_seed(8))
    g = torch.Generator().manual_seed(9)
    c1 = CovFamily(p_fourier=0.0).sample(10, (3,), g, F64)
    c2 = CovFamily(p_fourier=0.0).sample(10, (3,), g, F64)
    y = torch.randn(10, 3, generator=g, dtype=F64)
    r = log_ratio(MixtureEnergy(gm, offset=9.0), y, c1, c2)
    assert torch.allclose(r, gm.log_prob(y, _noise(c1)) - gm.log_prob(y, _noise(c2)), atol=1e-10)
    assert torch.allclose(bits_per_dim(torch.tensor([-784 * math.log(2)]), 784), torch.tensor([9.0]))


def test_posterior_log_ratio_matches_the_exact_posterior():
    """Prior = mixture smoothed by Σ₀ (so p_θ(x|Σ₀) is exact); the posterior ratio needs no constant."""
    from energy_utils.score_losses import posterior_log_ratio

    gm = random_mixture(3, 4, torch.Generator().manual_seed(11), spread=1.0, scale=0.5)
    g = torch.Generator().manual_seed(12)
    prior = DiagCov.isotropic(0.05, (4,), "pixel", F64).expand_batch(20)
    noise = CovFamily(var_min=1e-2, var_max=1.0, p_fourier=0.5).sample(20, (4,), g, F64)
    x1, x2, y = (torch.randn(20, 4, generator=g, dtype=F64) for _ in range(3))
    r = posterior_log_ratio(MixtureEnergy(gm, offset=3.0), x1, x2, y, noise, prior)
    ref = (gm.log_prob(x1, _noise(prior)) - noise.gaussian_nll(y - x1)) - (gm.log_prob(x2, _noise(prior)) - noise.gaussian_nll(y - x2))
    assert torch.allclose(r, ref, atol=1e-10)


class _Quadratic(torch.nn.Module):
    """U = ½ yᵀ(aI + Σ)⁻¹y: the energy of N(0, aI + Σ) without its log-normaliser (a parameter-free model)."""

    def __init__(self, a):
        super().__init__()
        self.a = a
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, y, cov):
        shifted = DiagCov((self.a + cov.var).log(), cov.fourier)
        return 0.5 * shifted.quadratic(y) + 0 * self.dummy


@pytest.mark.parametrize("basis", ["pixel", "fourier"])
def test_gaussian_logdet_offset_makes_the_gaussian_energy_exact(basis):
    """For Gaussian data N(0, aI) the quadratic energy plus ½ log det(aI + Σ) is −log p + d/2 log 2π exactly."""
    from energy_utils.score_losses import GaussianLogdetOffset

    d, a = 6, 0.8
    g = torch.Generator().manual_seed(20)
    cov = CovFamily(var_min=1e-2, var_max=1e1, p_fourier=float(basis == "fourier")).sample(40, (d,), g, F64)
    y = torch.randn(40, d, generator=g, dtype=F64)
    for data_cov in (a, a * torch.eye(d, dtype=F64)):
        u = GaussianLogdetOffset(_Quadratic(a), data_cov)(y, cov)
        exact = DiagCov((a + cov.var).log(), cov.fourier).gaussian_nll(y)
        assert torch.allclose(u + 0.5 * d * math.log(2 * math.pi), exact, atol=1e-9)
    sc = energy_and_scores(GaussianLogdetOffset(_Quadratic(a), a), y, cov)
    assert sc.grad_logvar is not None and torch.isfinite(sc.grad_logvar).all()


def test_importance_log_z_recovers_a_known_normaliser_and_reports_the_ess():
    from energy_utils.score_losses import importance_log_z

    d, a, n = 4, 0.5, 20000
    g = torch.Generator().manual_seed(21)
    cov = DiagCov.isotropic(1.0, (d,), "pixel", F64)
    model = _Quadratic(a)                           # ∫exp(−U) = (2π(a + 1))^{d/2}
    exact = 0.5 * d * math.log(2 * math.pi * (a + 1.0))
    for scale in (1.0, 1.3):                        # proposal N(0, s²(a+1)I): exact, then too wide
        var_q = scale**2 * (a + 1.0)
        y = math.sqrt(var_q) * torch.randn(n, d, generator=g, dtype=F64)
        log_q = -0.5 * (y.pow(2).sum(1) / var_q + d * math.log(2 * math.pi * var_q))
        est = importance_log_z(model, cov, y, log_q)
        assert abs(est["log_z"] - exact) < 4 * est["stderr"] + 1e-9
        assert (est["ess_fraction"] > 0.999) == (scale == 1.0)
    # with the constant, a normalised model gives 0
    est = importance_log_z(model, cov, y, log_q, c=exact)
    assert abs(est["log_z"]) < 4 * est["stderr"]


def test_noise_entropy_excess_is_the_mutual_information_for_gaussian_data():
    """x ~ N(0, s²I), y = x + ε, ε ~ N(0, tI): the exact density gives E[excess] = I(x; y) = d/2 log(1 + s²/t) ≥ 0;
    a model that integrates to e^5 (log p + 5) loses 5 nats and falls below the bound 0."""
    from energy_utils.score_losses import noise_entropy_excess

    d, s2, t, n = 5, 2.0, 1.5, 20000
    g = torch.Generator().manual_seed(22)
    x = math.sqrt(s2) * torch.randn(n, d, generator=g, dtype=F64)
    cov = DiagCov.isotropic(t, (d,), "pixel", F64).expand_batch(n)

    def exact(y, c):
        return -DiagCov.isotropic(s2 + t, (d,), "pixel", F64).expand_batch(y.shape[0]).gaussian_nll(y)

    ex = noise_entropy_excess(exact, x, cov, g)
    mi = 0.5 * d * math.log(1 + s2 / t)
    se = ex.std().item() / math.sqrt(n)
    assert abs(ex.mean().item() - mi) < 4 * se and se < 0.02
    bad = noise_entropy_excess(lambda y, c: exact(y, c) + 5.0, x, cov, g)
    assert abs(bad.mean().item() - (mi - 5.0)) < 4 * se and bad.mean().item() < -2.5


@pytest.mark.parametrize("basis", ["pixel", "fourier"])
def test_adsm_floor_reweights_to_the_floored_whitening_of_the_denoising_error(basis):
    from energy_utils.score_losses import adsm_loss
    g = torch.Generator().manual_seed(0)
    fam = CovFamily(var_min=1e-3, var_max=10.0)
    cov = fam.sample(3, (1, 4, 4), g, torch.float64)
    cov = DiagCov(cov.log_var, torch.full((3,), basis == "fourier"))
    if basis == "fourier":      # a real operator needs a conjugate-symmetric spectrum
        from energy_utils.covariances import symmetrize_spectrum
        cov = DiagCov(symmetrize_spectrum(cov.log_var, (-2, -1)), cov.fourier)
    eps, grad = cov.sample(1, g), torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    err = (cov.apply(grad) - eps).reshape(3, -1)                      # x − D = Σ∇U − ε
    S = cov.dense(1)
    for c in (0.0, 0.05):
        W = torch.linalg.inv(S + c * torch.eye(16, dtype=torch.float64))
        expected = torch.einsum("bi,bij,bj->b", err, W, err) / 16
        assert torch.allclose(adsm_loss(grad, eps, cov, floor=c), expected, atol=1e-10)
    with pytest.raises(ValueError, match="floor"):
        adsm_loss(grad, eps, cov, floor=-1.0)
