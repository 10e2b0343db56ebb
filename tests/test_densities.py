"""The Gaussian-mixture ground truth: exact identities against independent computations."""

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from energy_utils.densities import GaussianMixture, NoiseCov, random_mixture


@pytest.fixture
def gm():
    return random_mixture(3, 2, torch.Generator().manual_seed(1))


COVS = [0.3, NoiseCov.diagonal([0.2, 0.5]), NoiseCov.full([[0.3, 0.1], [0.1, 0.4]])]


def test_log_prob_matches_scipy(gm):
    y = torch.randn(7, 2, dtype=torch.float64)
    cov = NoiseCov.full([[0.3, 0.1], [0.1, 0.4]])
    ref = sum(w * multivariate_normal(m.numpy(), (c + cov.value).numpy()).pdf(y.numpy())
              for w, m, c in zip(gm.weights, gm.means, gm.covs))
    assert np.allclose(gm.log_prob(y, cov).numpy(), np.log(ref), atol=1e-12)


@pytest.mark.parametrize("cov", COVS, ids=["iso", "diag", "full"])
def test_tweedie_equals_component_posterior_mean(gm, cov):
    y = 2 * torch.randn(50, 2, dtype=torch.float64)
    assert torch.allclose(gm.tweedie_mean(y, cov), gm.posterior_mean(y, cov), atol=1e-12)


@pytest.mark.parametrize("fn", ["log_prob", "score", "posterior_mean", "covariance_score"])
@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "full"])
def test_batched_covariances_match_one_at_a_time(gm, fn, kind):
    y = torch.randn(4, 2, dtype=torch.float64)
    v = torch.rand(4, 2, dtype=torch.float64) + 0.1
    make = {"isotropic": lambda v: NoiseCov.isotropic(v[..., 0]), "diagonal": NoiseCov.diagonal,
            "full": lambda v: NoiseCov.full(torch.diag_embed(v) + 0.05)}[kind]
    batched = getattr(gm, fn)(y, make(v))
    single = torch.cat([getattr(gm, fn)(y[i:i + 1], make(v[i])) for i in range(4)])
    assert torch.allclose(batched, single, atol=1e-12)


def test_score_and_covariance_score_against_finite_differences(gm):
    y = torch.randn(6, 2, dtype=torch.float64)
    cov = NoiseCov.diagonal([0.2, 0.5])
    eps = 1e-6
    for i in range(2):
        e = torch.zeros(2, dtype=torch.float64); e[i] = eps
        fd = (gm.log_prob(y + e, cov) - gm.log_prob(y - e, cov)) / (2 * eps)
        assert torch.allclose(fd, gm.score(y, cov)[:, i], atol=1e-7)
        fd_v = (gm.log_prob(y, NoiseCov.diagonal(cov.value + e)) - gm.log_prob(y, NoiseCov.diagonal(cov.value - e))) / (2 * eps)
        assert torch.allclose(fd_v, gm.variance_score(y, cov)[:, i], atol=1e-7)


def test_heat_equation_analytic(gm):
    """∂p/∂Σ = ½ ∇²p  ⇔  ∇_Σ log p = ½ (∇² log p + s sᵀ)."""
    y = torch.randn(5, 2, dtype=torch.float64)
    cov = NoiseCov.full([[0.3, 0.1], [0.1, 0.4]])
    s = gm.score(y, cov)
    lhs = gm.covariance_score(y, cov)
    rhs = 0.5 * (gm.hessian_log_prob(y, cov) + s[:, :, None] * s[:, None, :])
    assert torch.allclose(lhs, rhs, atol=1e-12)


def test_samples_have_the_mixture_moments():
    gm = GaussianMixture([0.25, 0.75], [[-1.0], [2.0]], [[[0.04]], [[0.09]]])
    x = gm.sample(200_000, torch.Generator().manual_seed(0))
    mean = 0.25 * -1 + 0.75 * 2
    var = 0.25 * (0.04 + 1) + 0.75 * (0.09 + 4) - mean**2
    assert abs(x.mean().item() - mean) < 0.01 and abs(x.var().item() - var) < 0.02


@pytest.mark.parametrize("bad, message", [
    (lambda: NoiseCov.isotropic(-1.0), "positive"),
    (lambda: NoiseCov.diagonal([0.1, 0.0]), "positive"),
    (lambda: NoiseCov.full([[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
    (lambda: NoiseCov.full([[1.0, 2.0], [2.0, 1.0]]), "positive definite"),
    (lambda: GaussianMixture([0.5, 0.5], [[0.0, 0.0]]), "weights"),
])
def test_bad_input_gets_a_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        bad()


def test_shape_mismatch_is_reported(gm):
    with pytest.raises(ValueError, match=r"shape \(B, 2\)"):
        gm.score(torch.zeros(3, 5), 0.1)
    with pytest.raises(ValueError, match="3-dimensional"):
        gm.score(torch.zeros(3, 2), NoiseCov.diagonal([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="holds 4"):
        gm.score(torch.zeros(3, 2), NoiseCov.isotropic(torch.ones(4)))


def test_low_rank_mixture_matches_dense_and_batched_isotropic():
    g = torch.Generator().manual_seed(3)
    low = random_mixture(3, 6, g, rank=2)
    dense = GaussianMixture(low.weights, low.means, low.covs + 0.0)
    y = torch.randn(5, 6, dtype=torch.float64)
    s2 = torch.rand(5, dtype=torch.float64) + 0.1
    for cov in [0.3, NoiseCov.isotropic(s2)]:
        full = NoiseCov.full(0.3 * torch.eye(6, dtype=torch.float64)) if isinstance(cov, float) else \
            NoiseCov.full(s2[:, None, None] * torch.eye(6, dtype=torch.float64))
        for fn in ("log_prob", "score", "posterior_mean", "covariance_score"):
            a, b, c = getattr(low, fn)(y, cov), getattr(dense, fn)(y, cov), getattr(dense, fn)(y, full)
            assert torch.allclose(a, b, atol=1e-10) and torch.allclose(a, c, atol=1e-10), fn


def test_smoothed_and_moment_matched_mixtures():
    from energy_utils.densities import NoiseCov, benchmark_mixture
    gm = benchmark_mixture(3, 4, 11)
    y = gm.sample(5, torch.Generator().manual_seed(0))
    # smoothing by s is adding isotropic noise of variance s
    assert torch.allclose(gm.smoothed(0.3).log_prob(y), gm.log_prob(y, NoiseCov.isotropic(0.3)))
    g = gm.moment_matched()
    x = gm.sample(200_000, torch.Generator().manual_seed(1))
    assert g.n_components == 1
    assert torch.allclose(g.means[0], x.mean(0), atol=0.02)
    assert torch.allclose(g.covs[0], torch.cov(x.T), atol=0.03)
