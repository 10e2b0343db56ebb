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


def test_linear_posterior_mean_reduces_to_the_denoiser_and_to_the_orthonormal_measurement(prior):
    g = torch.Generator().manual_seed(5)
    y = torch.randn(4, *SHAPE, generator=g, dtype=torch.float64)
    assert torch.allclose(prior.linear_posterior_mean(torch.eye(D, dtype=torch.float64), y, 0.3),
                          prior.denoise(y, 0.3), atol=1e-10)
    Q, _ = torch.linalg.qr(torch.randn(D, 3, generator=g, dtype=torch.float64))
    xc = torch.randn(4, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(prior.linear_posterior_mean(Q.T, xc, 0.05), prior.posterior_mean(DenseOperator(Q), xc, 0.05),
                          atol=1e-10)
    with pytest.raises(ValueError, match="dense"):
        prior.linear_posterior_mean(torch.eye(D + 1, dtype=torch.float64), y, 0.3)
    with pytest.raises(ValueError, match="must be > 0"):
        prior.linear_posterior_mean(Q.T, xc, 0.0)


def test_linear_matrix_applies_like_its_function_and_rejects_affine_maps():
    g = torch.Generator().manual_seed(6)
    kernel = torch.randn(1, 1, 3, 3, generator=g, dtype=torch.float64)
    blur = lambda v: torch.nn.functional.conv2d(v, kernel, padding=1)   # noqa: E731
    A = controls.linear_matrix(blur, (1, 5, 5))
    x = torch.randn(3, 1, 5, 5, generator=g, dtype=torch.float64)
    assert A.shape == (25, 25)
    assert torch.allclose(x.reshape(3, -1) @ A.T, blur(x).reshape(3, -1))
    with pytest.raises(ValueError, match="not linear"):
        controls.linear_matrix(lambda v: v + 1.0, (1, 5, 5))


def test_ridge_map_recovers_an_affine_map_and_primal_equals_dual():
    g = torch.Generator().manual_seed(7)
    B, c = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(3, dtype=torch.float64, generator=g)
    x = torch.randn(200, 4, generator=g, dtype=torch.float64)
    m = controls.RidgeMap.fit(x, x @ B + c, ridge=1e-8)                     # more pairs than features: primal
    assert torch.allclose(m.W, B, atol=1e-6) and torch.allclose(m(x[:5]), x[:5] @ B + c, atol=1e-6)
    # fewer pairs than features: the dual solve equals the primal formula
    x, y = torch.randn(6, 10, generator=g, dtype=torch.float64), torch.randn(6, 2, generator=g, dtype=torch.float64)
    xc, yc = x - x.mean(0), y - y.mean(0)
    primal = torch.linalg.solve(xc.T @ xc + 0.5 * torch.eye(10, dtype=torch.float64), xc.T @ yc)
    assert torch.allclose(controls.RidgeMap.fit(x, y, 0.5).W, primal, atol=1e-10)
    with pytest.raises(ValueError, match="as many inputs"):
        controls.RidgeMap.fit(x, y[:5], 1.0)
    with pytest.raises(ValueError, match="ridge must be > 0"):
        controls.RidgeMap.fit(x, y, 0.0)


def test_validated_ridge_picks_the_lowest_validation_error():
    g = torch.Generator().manual_seed(8)
    B = torch.randn(20, 20, generator=g, dtype=torch.float64)
    x = torch.randn(300, 20, generator=g, dtype=torch.float64)
    y = x @ B + 3.0 * torch.randn(300, 20, generator=g, dtype=torch.float64)
    best, scores = controls.RidgeMap.fit_validated(x[:30], y[:30], x[200:], y[200:], ridges=(1e-3, 1.0, 10.0, 1e4))
    assert best.ridge == min(scores, key=scores.get)
    assert scores[1e4] > scores[best.ridge]                              # over-regularised: near the mean answer


def test_pseudo_inverse_solution_inverts_full_rank_and_zero_fills_a_mask():
    from energy_utils import operators as O
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64)
    A = O.circular_gaussian_blur((1, 4, 4), 0.6)
    b = x.reshape(3, -1) @ A.T
    assert torch.allclose(controls.pseudo_inverse_solution(A, b, (1, 4, 4)), x, atol=1e-8)
    mask = torch.eye(16, dtype=torch.float64)[::2]                            # every other pixel observed
    rec = controls.pseudo_inverse_solution(mask, x.reshape(3, -1) @ mask.T, (1, 4, 4))
    assert torch.equal(rec.reshape(3, -1)[:, 1::2], torch.zeros(3, 8, dtype=torch.float64))
    assert torch.allclose(rec.reshape(3, -1)[:, ::2], x.reshape(3, -1)[:, ::2])
    # truncation drops the small singular values: the solution has a smaller norm than the exact inverse's
    A8 = O.circular_gaussian_blur((1, 8, 8), 1.5)
    noisy = x.new_zeros(3, 64).normal_(generator=g) * 0.05 + torch.rand(3, 64, generator=g, dtype=torch.float64) @ A8.T
    assert controls.pseudo_inverse_solution(A8, noisy, (1, 8, 8), rcond=0.05).norm() < \
        controls.pseudo_inverse_solution(A8, noisy, (1, 8, 8)).norm()
    with pytest.raises(ValueError, match="rows"):
        controls.pseudo_inverse_solution(A, b[:, :5], (1, 4, 4))


def test_tv_solution_minimises_its_objective_and_beats_the_inverse_on_a_blocky_image():
    from energy_utils import operators as O
    g = torch.Generator().manual_seed(3)
    shape = (1, 12, 12)
    x = torch.zeros(2, *shape, dtype=torch.float64)
    x[0, 0, 2:7, 3:10] = 1.0
    x[1, 0, 5:11, 1:6] = 0.7
    A = O.circular_gaussian_blur(shape, 1.2)
    b = x.reshape(2, -1) @ A.T + 0.02 * torch.randn(2, 144, generator=g, dtype=torch.float64)
    lam = 0.02
    xt = controls.tv_solution(A, b, shape, lam, n_iter=800)

    def objective(z):
        dx, dy = O.image_gradient(z)
        return 0.5 * (z.reshape(2, -1) @ A.T - b).pow(2).sum() + lam * torch.sqrt(dx ** 2 + dy ** 2).sum()

    for _ in range(5):     # a minimiser: no nearby point (random direction) is lower
        assert objective(xt) <= objective(xt + 1e-3 * torch.randn(xt.shape, generator=g, dtype=torch.float64)) + 1e-9
    err = lambda z: (z - x).pow(2).mean().item()
    assert err(xt) < 0.5 * err(controls.pseudo_inverse_solution(A, b, shape))
    # without the TV term it is least squares: a well-conditioned invertible A is inverted on noise-free data
    A_easy = O.circular_gaussian_blur(shape, 0.4)
    x0 = controls.tv_solution(A_easy, x.reshape(2, -1) @ A_easy.T, shape, 0.0, n_iter=300)
    assert err(x0) < 1e-8
    with pytest.raises(ValueError, match="weight"):
        controls.tv_solution(A, b, shape, -1.0)


def test_stationary_gaussian_is_the_dense_posterior_mean_of_its_circulant_prior():
    """The Wiener filter equals GaussianPrior.denoise with the circulant covariance of the fitted spectrum, and
    fitting on many samples of a known stationary Gaussian recovers its spectrum."""
    g = torch.Generator().manual_seed(0)
    H = W = 6
    F = lambda v: torch.fft.fft2(v, norm="ortho")
    freq = torch.fft.fftfreq(H).abs()[:, None] + torch.fft.fftfreq(W).abs()[None]
    P = (1.0 / (0.05 + freq) ** 2)[None].double()                     # symmetric in ω, so samples are real
    z = torch.randn(20000, 1, H, W, generator=g, dtype=torch.float64)
    x = 0.3 + torch.fft.ifft2(P.sqrt() * F(z), norm="ortho").real
    prior = controls.StationaryGaussian.fit(x, ridge=0.0)
    assert abs(prior.mean.item() - 0.3) < 0.05
    assert ((prior.spectrum - P).abs() / P).max() < 0.1
    # dense circulant covariance of the fitted spectrum: C = F⁻¹ diag(P) F, column by column
    eye = torch.eye(H * W, dtype=torch.float64).reshape(H * W, 1, H, W)
    C = torch.fft.ifft2(prior.spectrum * F(eye), norm="ortho").real.reshape(H * W, H * W)
    dense = controls.GaussianPrior(prior.mean.expand(H * W), C, (1, H, W))
    y = x[:5] + 0.5 * torch.randn(5, 1, H, W, generator=g, dtype=torch.float64)
    assert torch.allclose(prior.denoise(y, 0.25), dense.denoise(y, 0.25), atol=1e-8)
    assert torch.allclose(prior.denoise(y, 0.0), y, atol=1e-10)
    with pytest.raises(ValueError, match="fit the spectrum at this size"):
        prior.denoise(torch.zeros(1, 1, 4, 4), 0.1)
    with pytest.raises(ValueError, match="at least two images"):
        controls.StationaryGaussian.fit(torch.zeros(1, 1, 4, 4))


def test_blind_gaussian_denoiser_estimates_the_noise_and_equals_the_known_noise_denoiser(prior):
    g = torch.Generator().manual_seed(5)
    # σ is identifiable where the prior has directions of small variance (as real signals do): rank 4 in 32
    d = 32
    A = torch.randn(d, 4, generator=g, dtype=torch.float64)
    low_rank = controls.GaussianPrior(torch.zeros(d, dtype=torch.float64), A @ A.T + 1e-4 * torch.eye(d, dtype=torch.float64))
    blind = low_rank.blind_denoiser()
    for sigma in (0.05, 0.3, 1.0):
        x = low_rank.sample(400, g)
        y = x + sigma * torch.randn(x.shape, generator=g, dtype=torch.float64)
        out = blind(y)
        s_hat = blind.last_sigma
        # the marginal-likelihood estimate is noisy per signal but centred on σ
        assert abs(s_hat.median().item() / sigma - 1) < 0.1
        # given its σ̂, the output is the exact known-noise posterior mean
        ref = low_rank.denoise(y, s_hat.pow(2))
        assert torch.allclose(out, ref, atol=1e-8)
    blind = prior.blind_denoiser()
    for sigma in (0.3, 1.0):
        x = prior.sample(400, g)
        y = x + sigma * torch.randn(x.shape, generator=g, dtype=torch.float64)
        out = blind(y)
        s_hat = blind.last_sigma
        # given its σ̂, the output is the exact known-noise posterior mean
        ref = prior.denoise(y, s_hat.pow(2))
        assert torch.allclose(out, ref, atol=1e-8)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        prior.blind_denoiser(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="expected signals of shape"):
        blind(torch.zeros(2, 7))
