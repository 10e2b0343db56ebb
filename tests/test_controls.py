"""The Gaussian (linear-MMSE) control is exact on a Gaussian prior: posterior means, errors, densities, samples."""
import math

import pytest
import torch

from energy_utils import controls
from energy_utils.covariances import DiagCov
from energy_utils.densities import GaussianMixture, NoiseCov

SHAPE = (1, 2, 3)
D = 6


class DenseOperator:
    """A measurement with orthonormal columns given as a dense matrix (test double of energy_utils.operators)."""

    def __init__(self, M):
        self.Mat, self.shape, self.N, self.m = M, SHAPE, M.shape[0], M.shape[1]

    def M_T(self, x):
        return x.reshape(x.shape[0], -1).to(self.Mat.dtype) @ self.Mat

    def M(self, v):
        return (v.to(self.Mat.dtype) @ self.Mat.T).reshape(v.shape[0], *self.shape)

    def project(self, x):
        return self.M(self.M_T(x))


@pytest.fixture
def prior():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(D, D, generator=g, dtype=torch.float64)
    return controls.GaussianPrior(torch.randn(D, generator=g, dtype=torch.float64), A @ A.T / D + 0.1 * torch.eye(D,
                                  dtype=torch.float64), SHAPE)


def test_denoiser_and_density_equal_the_exact_gaussian_posterior(prior):
    g = torch.Generator().manual_seed(1)
    exact = GaussianMixture([1.0], prior.mean[None], prior.cov[None])
    var = torch.exp(torch.randn(4, 1, 2, 3, generator=g, dtype=torch.float64))        # a different Σ per signal
    for basis in ("pixel", "fourier"):
        Sigma = DiagCov.from_var(var, basis)
        dense = Sigma.dense()
        y = torch.randn(4, *SHAPE, generator=g, dtype=torch.float64)
        ours = controls.GaussianPrior.denoise(prior, y, Sigma).reshape(4, -1)
        ref = exact.posterior_mean(y.reshape(4, -1), NoiseCov.full(dense))
        assert torch.allclose(ours, ref, atol=1e-10)
        lp = prior.log_prob(y, Sigma)
        assert torch.allclose(lp, exact.log_prob(y.reshape(4, -1), NoiseCov.full(dense)), atol=1e-9)


def test_expected_error_matches_monte_carlo(prior):
    g = torch.Generator().manual_seed(2)
    n, var = 40_000, 0.5
    x = prior.sample(n, g)
    y = x + math.sqrt(var) * torch.randn(x.shape, generator=g, dtype=torch.float64)
    err = (prior.denoise(y, var) - x).pow(2).reshape(n, -1).mean(1)
    predicted = prior.denoise_mse(var).item()
    assert abs(err.mean().item() - predicted) < 4 * err.std().item() / math.sqrt(n)
    # the identity and the prior mean are worse than the linear-MMSE estimate
    assert predicted < var and predicted < prior.cov.diagonal().mean().item()


def test_measurement_posterior_is_the_conditional_of_the_joint_gaussian(prior):
    g = torch.Generator().manual_seed(3)
    Q, _ = torch.linalg.qr(torch.randn(D, 3, generator=g, dtype=torch.float64))
    op = DenseOperator(Q)
    noise = 0.05
    x = prior.sample(5, g)
    xc = op.M_T(x) + math.sqrt(noise) * torch.randn(5, 3, generator=g, dtype=torch.float64)
    # brute force: the joint of (x, x_c) is Gaussian with cross-covariance C M and marginal MᵀCM + σ²I
    C, M = prior.cov, Q
    Sxx, Sxc, Scc = C, C @ M, M.T @ C @ M + noise * torch.eye(3, dtype=torch.float64)
    ref = prior.mean + (xc - prior.mean @ M) @ torch.linalg.solve(Scc, Sxc.T)
    assert torch.allclose(prior.posterior_mean(op, xc, noise).reshape(5, -1), ref, atol=1e-10)
    ref_cov = Sxx - Sxc @ torch.linalg.solve(Scc, Sxc.T)
    assert torch.allclose(prior.posterior_cov(op, noise), ref_cov, atol=1e-10)
    # exact samples: empirical mean and covariance of many draws for one measurement
    s = prior.posterior_sample(op, xc[:1], noise, n=60_000, generator=g).reshape(60_000, -1)
    assert torch.allclose(s.mean(0), ref[0], atol=0.02)
    assert torch.allclose(torch.cov(s.T), ref_cov, atol=0.02)


def test_prior_mean_fill_keeps_observations_and_uses_the_mean_elsewhere(prior):
    mask = torch.tensor([1.0, 0, 1, 0, 0, 1], dtype=torch.float64)
    Q = torch.eye(D, dtype=torch.float64)[:, mask.bool()]
    op = DenseOperator(Q)
    x = prior.sample(3)
    out = controls.prior_mean_fill(op, op.M_T(x), prior.mean).reshape(3, -1)
    assert torch.allclose(out[:, mask.bool()], x.reshape(3, -1)[:, mask.bool()])
    assert torch.allclose(out[:, ~mask.bool()], prior.mean[~mask.bool()].expand(3, -1))
    # noiseless Gaussian posterior mean also keeps the observed pixels exactly
    pm = prior.posterior_mean(op, op.M_T(x)).reshape(3, -1)
    assert torch.allclose(pm[:, mask.bool()], x.reshape(3, -1)[:, mask.bool()], atol=1e-8)


def test_fit_and_clear_errors():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5000, *SHAPE, generator=g) * 2 + 1
    p = controls.GaussianPrior.fit(x)
    assert torch.allclose(p.mean, torch.ones(D, dtype=torch.float64), atol=0.1)
    assert torch.allclose(p.cov, 4 * torch.eye(D, dtype=torch.float64), atol=0.3)
    with pytest.raises(ValueError, match="expected signals of shape"):
        p.denoise(torch.zeros(2, 6), 0.1)
    with pytest.raises(ValueError, match="must be > 0"):
        p.denoise(torch.zeros(2, *SHAPE), -1.0)
    with pytest.raises(ValueError, match="at least two"):
        controls.GaussianPrior.fit(x[:1])
