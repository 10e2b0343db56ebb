"""Covariance algebra of energy_utils.covariances against dense computations on small sizes."""
import math

import pytest
import torch

from energy_utils.covariances import (CovFamily, DiagCov, box_kernel, flip_frequencies, gaussian_kernel,
                                      inpainting_var, kernel_spectrum, power_law_spectrum, random_pixel_var,
                                      regularized_inverse_spectrum)

F64 = torch.float64


def make_cov(kind, basis, B=3, seed=0):
    """Vectors (d=8) or images (map 1×4×4), with random conjugate-symmetric spectra for the Fourier basis."""
    g = torch.Generator().manual_seed(seed)
    shape = (8,) if kind == "vector" else (1, 4, 4)
    lv = torch.randn(B, *shape, generator=g, dtype=F64) * 1.5
    cov = DiagCov(lv, torch.full((B,), basis == "fourier"))
    return DiagCov(cov.symmetrized_log_var(), cov.fourier)


CASES = [("vector", "pixel", 1), ("vector", "fourier", 1), ("image", "pixel", 2), ("image", "fourier", 2)]


def signal(cov, C, n=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (cov.batch_size, *cov.map_shape) if cov.log_var.ndim == 2 else (cov.batch_size, C, *cov.map_shape[1:])
    return torch.randn(shape, generator=g, dtype=F64)


@pytest.mark.parametrize("kind,basis,C", CASES)
def test_square_root_squares_to_sigma_and_whitening_inverts(kind, basis, C):
    cov = make_cov(kind, basis)
    x = signal(cov, C)
    assert torch.allclose(cov.apply(cov.apply(x, 0.5), 0.5), cov.apply(x), atol=1e-10)
    assert torch.allclose(cov.whiten(cov.apply(x, 0.5)), x, atol=1e-10)
    assert torch.allclose(cov.apply(cov.apply(x, -1.0)), x, atol=1e-10)


@pytest.mark.parametrize("kind,basis,C", CASES)
def test_dense_matrix_is_symmetric_and_matches_apply(kind, basis, C):
    cov = make_cov(kind, basis)
    M = cov.dense(C)
    assert torch.allclose(M, M.transpose(1, 2), atol=1e-12)
    x = signal(cov, C)
    assert torch.allclose(torch.einsum("bij,bj->bi", M, x.reshape(x.shape[0], -1)), cov.apply(x).reshape(x.shape[0], -1), atol=1e-10)
    # the dense matrix of Σ^½ (same basis, half the log-variances) squares to the dense Σ
    half = DiagCov(0.5 * cov.log_var, cov.fourier).dense(C)
    assert torch.allclose(half @ half, M, atol=1e-9)


@pytest.mark.parametrize("kind,basis,C", CASES)
def test_logdet_matches_dense_slogdet(kind, basis, C):
    cov = make_cov(kind, basis)
    sign, ld = torch.linalg.slogdet(cov.dense(C))
    assert torch.all(sign > 0)
    assert torch.allclose(cov.logdet(C), ld, atol=1e-9)


@pytest.mark.parametrize("kind,basis,C", CASES)
def test_quadratic_form_and_gaussian_nll_match_dense(kind, basis, C):
    cov = make_cov(kind, basis)
    x = signal(cov, C)
    M = cov.dense(C)
    xf = x.reshape(x.shape[0], -1)
    quad = torch.einsum("bi,bi->b", xf, torch.linalg.solve(M, xf))
    assert torch.allclose(cov.quadratic(x), quad, atol=1e-9)
    ref = -torch.distributions.MultivariateNormal(torch.zeros(xf.shape[1], dtype=F64), covariance_matrix=M).log_prob(xf)
    assert torch.allclose(cov.gaussian_nll(x), ref, atol=1e-8)


def test_fourier_eigenvalues_are_the_spectrum():
    cov = make_cov("vector", "fourier", B=1)
    eig = torch.linalg.eigvalsh(cov.dense()[0])
    assert torch.allclose(eig.sort().values, cov.var[0].sort().values, atol=1e-10)


@pytest.mark.parametrize("kind,basis,C", [("vector", "pixel", 1), ("vector", "fourier", 1), ("image", "fourier", 2)])
def test_samples_have_covariance_sigma(kind, basis, C):
    cov = make_cov(kind, basis, B=1, seed=3)
    n = 40000
    eps = cov.expand_batch(n).sample(C, torch.Generator().manual_seed(4)).reshape(n, -1)
    emp = eps.T @ eps / n
    M = cov.dense(C)[0]
    scale = M.diagonal().sqrt()
    err = (emp - M) / (scale[:, None] * scale[None, :])
    assert err.abs().max() < 0.05


def test_mixed_batch_rows_use_their_own_basis():
    pix, four = make_cov("image", "pixel", B=2, seed=5), make_cov("image", "fourier", B=2, seed=6)
    both = DiagCov.cat([pix, four])
    x = torch.cat([signal(pix, 2), signal(four, 2, seed=2)])
    out = both.apply(x, 0.5)
    assert torch.allclose(out[:2], pix.apply(x[:2], 0.5)) and torch.allclose(out[2:], four.apply(x[2:], 0.5))


def test_whitened_energy_sums_channels_sharing_a_variance():
    cov = make_cov("image", "pixel", B=1)
    eps = signal(cov, 3)
    assert torch.allclose(cov.whitened_energy(eps), (eps**2).sum(1, keepdim=True) / cov.var)


def test_blur_as_noise_matches_dense_inverse():
    """y = Hx + σv with a circulant (invertible) blur H ⇒ H⁻¹y = x + noise of covariance σ²H⁻¹H⁻ᵀ."""
    d, sigma2 = 8, 0.3
    k = gaussian_kernel(3, 0.6, ndim=1)
    H = torch.stack([torch.roll(torch.nn.functional.pad(k, (0, d - 3)), i) for i in range(d)], 1)  # circulant
    Hinv = torch.linalg.inv(H)
    dense = sigma2 * Hinv @ Hinv.T
    S = regularized_inverse_spectrum(kernel_spectrum(k, (d,)), sigma2, eps=1e-14)
    cov = DiagCov.from_var(S[None], "fourier")
    assert torch.allclose(cov.dense()[0], dense, rtol=1e-6, atol=1e-8)


def test_sr_spectrum_floor_and_clipping():
    h = kernel_spectrum(box_kernel(4, 2), (8, 8))
    S = regularized_inverse_spectrum(h, 2.0, eps=1e-6, floor=1.0, max_var=50.0)
    assert S.min() >= 2.0 - 1e-12 and S.max() <= 50.0
    assert torch.allclose(S, flip_frequencies(S, (-2, -1)))            # conjugate-symmetric


def test_inpainting_variances():
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = inpainting_var(mask, 1e-4, 1e3)
    assert torch.equal(v, torch.tensor([[1e-4, 1e3], [1e3, 1e-4]], dtype=F64))


def test_training_family_shapes_ranges_and_independent_levels():
    fam = CovFamily(var_min=1e-3, var_max=1e2)
    g = torch.Generator().manual_seed(0)
    cov = fam.sample(400, (1, 8, 8), g)
    assert cov.log_var.shape == (400, 1, 8, 8) and cov.fourier.shape == (400,)
    v = cov.var
    assert v.min() >= 1e-3 * (1 - 1e-5) and v.max() <= 1e2 * (1 + 1e-5)
    assert 0.35 < cov.fourier.float().mean() < 0.65
    four = cov.log_var[cov.fourier]
    assert torch.allclose(four, flip_frequencies(four, (-2, -1)), atol=1e-5)
    pix = v[~cov.fourier].flatten(1)
    ratio = pix.max(1).values / pix.min(1).values
    assert (ratio > 1.01).float().mean() > 0.5       # inside and outside levels differ (not collapsed)
    vec = fam.sample(50, (16,), g)
    assert vec.log_var.shape == (50, 16)


def test_out_of_family_generators():
    g = torch.Generator().manual_seed(0)
    assert random_pixel_var(5, (1, 4, 4), 1e-2, 1e2, g).shape == (5, 1, 4, 4)
    s = power_law_spectrum(5, (1, 8, 8), 1e-2, 1e2, g)
    assert s.shape == (5, 1, 8, 8) and torch.allclose(s, flip_frequencies(s, (-2, -1)))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="variances must be > 0"):
        DiagCov.from_var(torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="shared by all channels"):
        DiagCov(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.bool))
    cov = make_cov("vector", "pixel")
    with pytest.raises(ValueError, match="need x of shape"):
        cov.apply(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="basis"):
        DiagCov.from_var(torch.ones(2, 3), "wavelet")
    assert math.isfinite(cov.logdet().sum().item())


@pytest.mark.parametrize("kind,basis,C", CASES)
def test_logdet_plus_matches_the_dense_determinant(kind, basis, C):
    cov = make_cov(kind, basis)
    d = C * cov.n_coords
    g = torch.Generator().manual_seed(3)
    R = torch.randn(d, d, generator=g, dtype=F64)
    data = R @ R.T / d + 0.1 * torch.eye(d, dtype=F64)
    dense = cov.dense(C)
    for c, M in ((data, data + dense), (0.7, 0.7 * torch.eye(d, dtype=F64) + dense), (0.0, dense)):
        ref = torch.linalg.slogdet(M)[1]
        assert torch.allclose(cov.logdet_plus(c, C), ref, atol=1e-9)
    assert torch.allclose(cov.logdet_plus(0.0, C), cov.logdet(C), atol=1e-10)


def test_logdet_plus_is_differentiable_and_rejects_bad_inputs():
    cov = make_cov("vector", "pixel").requires_grad_()
    data = torch.eye(8, dtype=F64) * 0.5
    cov.logdet_plus(data).sum().backward()
    # ∂/∂log v_i log det(C + diag v) = v_i [(C + Σ)⁻¹]_ii = v_i / (0.5 + v_i) for C = 0.5 I
    v = cov.var.detach()
    assert torch.allclose(cov.log_var.grad, v / (0.5 + v), atol=1e-10)
    with pytest.raises(ValueError, match="must be"):
        cov.logdet_plus(torch.eye(3, dtype=F64))
    with pytest.raises(ValueError, match=">= 0"):
        cov.logdet_plus(-1.0)
