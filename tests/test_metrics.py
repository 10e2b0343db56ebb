"""PSNR and SSIM agree with scikit-image (data_range=1) and behave as metrics should."""
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from energy_utils import metrics


def test_psnr_and_ssim_match_skimage():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(3, 1, 40, 36, generator=g)
    x = (ref + 0.1 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    p, s = metrics.psnr(x, ref), metrics.ssim(x, ref)
    for i in range(3):
        a, b = x[i, 0].numpy().astype(np.float64), ref[i, 0].numpy().astype(np.float64)
        assert p[i].item() == pytest.approx(peak_signal_noise_ratio(b, a, data_range=1.0), abs=1e-4)
        assert s[i].item() == pytest.approx(structural_similarity(b, a, data_range=1.0), abs=1e-5)


def test_ssim_colour_and_limits():
    g = torch.Generator().manual_seed(1)
    ref = torch.rand(2, 3, 20, 20, generator=g)
    assert torch.allclose(metrics.ssim(ref, ref), torch.ones(2))
    x = ref.flip(-1)
    sk = structural_similarity(ref[0].permute(1, 2, 0).numpy().astype(np.float64),
                               x[0].permute(1, 2, 0).numpy().astype(np.float64), data_range=1.0, channel_axis=-1)
    assert metrics.ssim(x, ref)[0].item() == pytest.approx(sk, abs=1e-5)
    assert metrics.input_psnr(0.1) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9))


def test_frechet_distance_is_zero_for_equal_sets_and_exact_for_shifted_gaussians():
    from energy_utils.metrics import frechet_distance
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20_000, 3, generator=g, dtype=torch.float64)
    assert abs(frechet_distance(a, a)) < 1e-8
    # N(0, I) vs N(m, 4I): ‖m‖² + tr(I + 4I − 2·2I) = ‖m‖² + 3
    b = 2 * torch.randn(20_000, 3, generator=g, dtype=torch.float64) + torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    assert abs(frechet_distance(a, b) - 8.0) < 0.15
    with pytest.raises(ValueError, match="same k"):
        frechet_distance(a, b[:, :2])


def test_nearest_neighbour_distance_finds_copies():
    from energy_utils.metrics import nearest_neighbour_distance
    g = torch.Generator().manual_seed(1)
    ref = torch.rand(50, 1, 4, 4, generator=g)
    x = torch.cat([ref[[7, 3]], ref[[10]] + 0.1])
    d, j = nearest_neighbour_distance(x, ref)
    assert d[:2].max() < 1e-3 and j.tolist()[:2] == [7, 3]
    assert j[2] == 10 and abs(d[2].item() - 0.1) < 1e-5


def test_sliced_wasserstein_is_exact_for_shifted_sets_and_small_for_equal_laws():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 2000, 4, generator=g, dtype=torch.float64)
    shift = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)
    # a pure shift δ: every projection moves by θᵀδ, so SW₂² = E(θᵀδ)² = |δ|²/d
    assert torch.allclose(metrics.sliced_wasserstein2(a, a + shift, 512, g), torch.full((3,), 0.5, dtype=torch.float64), atol=0.03)
    b = torch.randn(3, 2000, 4, generator=g, dtype=torch.float64)
    assert (metrics.sliced_wasserstein2(a, b, 256, g) < 0.1).all()
    with pytest.raises(ValueError, match="equal shape"):
        metrics.sliced_wasserstein2(a, b[:, :10])


def test_posterior_errors_are_small_for_exact_samples_and_large_for_the_prior():
    from energy_utils.densities import benchmark_mixture
    g = torch.Generator().manual_seed(1)
    gm = benchmark_mixture(4, 3, 7)
    A = torch.eye(4, dtype=torch.float64)[:2]
    x = gm.sample(256, g)
    y = x @ A.T + 0.3 * torch.randn(256, 2, generator=g, dtype=torch.float64)
    post = gm.posterior(A, 0.09, y)
    ref, exact = post.sample(400, g), post.sample(400, g)
    good = metrics.posterior_errors(exact, post, x, ref, generator=g)
    prior = gm.sample(256 * 400, g).reshape(256, 400, 4)
    bad = metrics.posterior_errors(prior, post, x, ref, generator=g)
    assert good["mean_err"] < 0.02 and good["cov_err"] < 0.15 and good["mode_tv"] < 0.05
    assert abs(good["cov50"] - 0.5) < 0.05 and abs(good["cov90"] - 0.9) < 0.03     # 1,024 points: SE 0.016 / 0.009
    for k in ("sw2", "mean_err", "cov_err", "mode_tv"):
        assert bad[k] > 3 * good[k], k
    # truths drawn from the prior: the prior's own intervals are calibrated too (wide, but right as often as
    # claimed), so coverage alone cannot tell a posterior from the prior; it is read beside the other errors
    assert abs(bad["cov50"] - 0.5) < 0.05


def test_effective_sample_size_of_independent_and_correlated_chains():
    g = torch.Generator().manual_seed(3)
    iid = torch.randn(400, 20, generator=g)
    assert 0.8 * 8000 < metrics.effective_sample_size(iid) < 1.2 * 8000
    # AR(1) with φ = 0.9: integrated autocorrelation time (1 + φ)/(1 − φ) = 19
    z = torch.randn(4000, 20, generator=g)
    ar = torch.zeros_like(z)
    for t in range(1, z.shape[0]):
        ar[t] = 0.9 * ar[t - 1] + z[t]
    ess = metrics.effective_sample_size(ar[200:])
    assert 3800 * 20 / 19 * 0.7 < ess < 3800 * 20 / 19 * 1.3
    with pytest.raises(ValueError, match="trace"):
        metrics.effective_sample_size(torch.randn(10))


def test_auroc_by_ranks():
    assert metrics.auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert metrics.auroc(torch.tensor([0.0]), torch.tensor([1.0])) == 0.0
    assert metrics.auroc(torch.tensor([1.0, 1.0]), torch.tensor([1.0])) == 0.5
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4000, generator=g) + 1.0, torch.randn(4000, generator=g)
    # two unit Gaussians one apart: AUROC = Φ(1/√2) ≈ 0.760
    assert abs(metrics.auroc(a, b) - 0.760) < 0.02


def test_ratio_of_means_interval_covers_the_true_ratio_and_shrinks_with_n():
    g = torch.Generator().manual_seed(0)
    widths = []
    for n in (100, 1600):
        b = torch.rand(n, generator=g, dtype=torch.float64) + 0.5        # control errors, mean 1
        a = 0.9 * b + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)   # a model 10 % better, paired
        r, lo, hi = metrics.ratio_of_means_ci(a, b, generator=torch.Generator().manual_seed(1))
        assert lo < r < hi and lo < 0.9 < hi and hi < 1.0
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2.5                                  # ~1/√n: 4× narrower for 16× the examples
    with pytest.raises(ValueError, match="paired"):
        metrics.ratio_of_means_ci(torch.ones(3), torch.ones(4))
