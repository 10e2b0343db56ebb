"""Image quality metrics, batched in torch: PSNR and SSIM on [0, 1] intensities (``data_range=1`` always explicit).

PSNR(x, r) = 10 log10(R² / mean((x − r)²)) per image.

SSIM follows scikit-image's default ``structural_similarity(x, r, data_range=R)`` (Wang et al. 2004 with a 7×7
uniform window, sample covariances N/(N−1), K1 = 0.01, K2 = 0.03, mean over the valid window positions and over
channels), so numbers are comparable with papers that call skimage; unlike KS2021's demo, the data range is
never left to the float default (which inflates SSIM).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _as_images(x: torch.Tensor, name: str) -> torch.Tensor:
    if not torch.is_tensor(x):
        raise ValueError(f"{name} must be a torch tensor")
    if x.ndim == 2:
        return x[None, None]
    if x.ndim == 3:
        return x[None]
    if x.ndim != 4:
        raise ValueError(f"{name} must be an image (H, W), (C, H, W) or a batch (B, C, H, W); got {tuple(x.shape)}")
    return x


def mse(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image, shape (B,)."""
    x, ref = _as_images(x, "x"), _as_images(ref, "ref")
    if x.shape != ref.shape:
        raise ValueError(f"x and ref must have the same shape, got {tuple(x.shape)} and {tuple(ref.shape)}")
    return (x - ref).pow(2).flatten(1).mean(1)


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, shape (B,)."""
    return 10 * torch.log10(data_range ** 2 / mse(x, ref).clamp_min(1e-20))


def ssim(x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0, win_size: int = 7,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity per image, shape (B,), matching skimage's default settings (see module docstring)."""
    x, ref = _as_images(x, "x").double(), _as_images(ref, "ref").double()
    if x.shape != ref.shape:
        raise ValueError(f"x and ref must have the same shape, got {tuple(x.shape)} and {tuple(ref.shape)}")
    if min(x.shape[-2:]) < win_size or win_size % 2 == 0:
        raise ValueError(f"win_size must be odd and at most the image side ({tuple(x.shape[-2:])}); got {win_size}")
    B, C, H, W = x.shape
    a, b = x.reshape(B * C, 1, H, W), ref.reshape(B * C, 1, H, W)
    pool = lambda t: F.avg_pool2d(t, win_size, stride=1)       # valid positions = skimage's cropped mean
    n = win_size ** 2
    cov_norm = n / (n - 1)
    ux, uy = pool(a), pool(b)
    vx = cov_norm * (pool(a * a) - ux * ux)
    vy = cov_norm * (pool(b * b) - uy * uy)
    vxy = cov_norm * (pool(a * b) - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    return s.reshape(B, C, -1).mean(dim=(1, 2)).to(torch.float32)


def input_psnr(sigma: float, data_range: float = 1.0) -> float:
    """The expected PSNR of a noisy input with std σ: 20 log10(R/σ)."""
    import math

    return 20 * math.log10(data_range / sigma)


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (n, k) (the FID formula):

        ‖μ_a − μ_b‖² + tr(C_a + C_b − 2 (C_a^{½} C_b C_a^{½})^{½}),

    computed in float64 with symmetric square roots (eigendecompositions), so it is ≥ 0 and exactly 0 for
    identical sets. Which feature space it uses (Inception for FID; here a digit classifier's) must be stated
    with the number: values from different feature spaces are not comparable."""
    a, b = feats_a.double().cpu(), feats_b.double().cpu()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (n, k) with the same k, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[0], b.shape[0]) < 2:
        raise ValueError("need at least two feature vectors per set")

    def sqrtm_psd(m):
        w, v = torch.linalg.eigh(0.5 * (m + m.T))
        return (v * w.clamp_min(0).sqrt()) @ v.T

    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = torch.cov(a.T).reshape(a.shape[1], a.shape[1]), torch.cov(b.T).reshape(b.shape[1], b.shape[1])
    ra = sqrtm_psd(ca)
    cross = sqrtm_psd(ra @ cb @ ra)
    return float((mu_a - mu_b).pow(2).sum() + torch.trace(ca + cb - 2 * cross))


def nearest_neighbour_distance(x: torch.Tensor, reference: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """For each x_i, the RMS distance ‖x_i − r_j‖/√d to its nearest reference example and that example's index
    (e.g. a sample's closest training digit: a copy has distance ≈ 0). Returns (distances (n,), indices (n,))."""
    X, R = x.reshape(x.shape[0], -1).float(), reference.reshape(reference.shape[0], -1).float().to(x.device)
    if X.shape[1] != R.shape[1]:
        raise ValueError(f"x and reference have different sizes per example: {X.shape[1]} vs {R.shape[1]}")
    best, idx = [], []
    for i in range(0, len(X), chunk):
        d2 = torch.cdist(X[i:i + chunk], R).pow(2)
        v, j = d2.min(1)
        best.append(v.clamp_min(0).div(X.shape[1]).sqrt())
        idx.append(j)
    return torch.cat(best), torch.cat(idx)


# ------------------------------------------------------------------------------- posterior sample quality
def sliced_wasserstein2(a: torch.Tensor, b: torch.Tensor, n_projections: int = 256,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Sliced Wasserstein-2 distance between equal-size sample sets, per batch row.

        SW₂(a, b) = ( E_θ W₂²(θᵀa, θᵀb) )^{½},   θ uniform on the unit sphere,

    each 1-D W₂² the mean squared difference of the sorted projections. ``a`` and ``b`` are (B, n, d) (B
    problems, n samples each) or (n, d); returns (B,) (or a scalar). The same ``n_projections`` directions are
    used for every row. Two independent draws of the same law give SW₂ > 0 (the Monte Carlo floor, ~ n^{-½}):
    compare a sampler with that floor, measured with the same n."""
    single = a.ndim == 2
    a, b = (a[None], b[None]) if single else (a, b)
    if a.ndim != 3 or a.shape != b.shape:
        raise ValueError(f"a and b must both be (B, n, d) or (n, d) of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    theta = torch.randn(a.shape[-1], n_projections, generator=generator, dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(a.device)
    pa = torch.sort(a.double() @ theta, dim=1).values
    pb = torch.sort(b.double() @ theta, dim=1).values
    sw = (pa - pb).pow(2).mean(dim=(1, 2)).sqrt()
    return sw[0] if single else sw


def credible_interval_coverage(samples: torch.Tensor, truth: torch.Tensor, levels=(0.5, 0.9)) -> dict:
    """How often the central per-coordinate credible intervals of ``samples`` (B, n, d) contain ``truth``
    (B, d): {level: fraction over problems and coordinates}. For a calibrated sampler and truths drawn from the
    prior, the fraction equals the level (up to the finite-n quantile error, measured on exact samples)."""
    if samples.ndim != 3 or truth.shape != (samples.shape[0], samples.shape[2]):
        raise ValueError(f"samples must be (B, n, d) and truth (B, d), got {tuple(samples.shape)} and {tuple(truth.shape)}")
    out = {}
    for lev in levels:
        q = torch.tensor([(1 - lev) / 2, (1 + lev) / 2], dtype=samples.dtype, device=samples.device)
        lo, hi = torch.quantile(samples, q, dim=1)                      # (B, d) each
        out[lev] = ((truth >= lo) & (truth <= hi)).double().mean().item()
    return out


def posterior_errors(samples: torch.Tensor, posterior, truth: torch.Tensor, reference: torch.Tensor,
                     n_projections: int = 256, generator: torch.Generator | None = None) -> dict:
    """Errors of posterior samples (B, n, d) against an exact :class:`~energy_utils.densities.MixturePosterior`:

    * ``sw2``: sliced W₂ to ``reference`` (B, n, d), exact posterior draws; mean over the B problems;
    * ``mean_err``: ‖m̂ − E[x|y]‖² / tr Cov[x|y], mean over problems (Monte Carlo floor ≈ 1/n);
    * ``cov_err``: ‖Ĉ − Cov[x|y]‖_F / ‖Cov[x|y]‖_F, mean over problems;
    * ``mode_tv``: total variation between the posterior component weights w'_k(y) and the fractions of
      samples whose most responsible posterior component is k, mean over problems;
    * ``cov50`` / ``cov90``: coverage of the true signals ``truth`` (B, d) by the 50 % / 90 % central
      per-coordinate intervals of the samples.
    """
    if samples.ndim != 3 or samples.shape != reference.shape:
        raise ValueError(f"samples and reference must be (B, n, d) of equal shape, got {tuple(samples.shape)} "
                         f"and {tuple(reference.shape)}")
    x = samples.double()
    mean, cov = posterior.mean(), posterior.covariance()
    m_hat = x.mean(1)
    dev = x - m_hat[:, None]
    c_hat = dev.transpose(1, 2) @ dev / (x.shape[1] - 1)
    tr = cov.diagonal(dim1=1, dim2=2).sum(1)
    frac = torch.nn.functional.one_hot(posterior.component_log_probs(x).argmax(1), posterior.weights.shape[1])
    cover = credible_interval_coverage(x, truth.double())
    return {"sw2": sliced_wasserstein2(x, reference, n_projections, generator).mean().item(),
            "mean_err": ((m_hat - mean).pow(2).sum(1) / tr).mean().item(),
            "cov_err": ((c_hat - cov).flatten(1).norm(dim=1) / cov.flatten(1).norm(dim=1)).mean().item(),
            "mode_tv": (0.5 * (frac.double().mean(1) - posterior.weights).abs().sum(1)).mean().item(),
            "cov50": cover[0.5], "cov90": cover[0.9]}


def effective_sample_size(trace: torch.Tensor) -> float:
    """ESS of a scalar summary recorded along B parallel chains, ``trace`` (T, B) (T steps, after burn-in).

    The autocorrelation ρ_k is estimated from all chains at once (centred on the overall mean, averaged over
    chains) and summed with Geyer's initial positive sequence: Γ_m = ρ_{2m} + ρ_{2m+1} is added while it is
    positive, so ESS = B·T / (−1 + 2 Σ_m Γ_m). For independent draws ESS ≈ B·T."""
    if trace.ndim != 2 or trace.shape[0] < 4:
        raise ValueError(f"trace must be (T >= 4 steps, B chains), got {tuple(trace.shape)}")
    x = trace.double() - trace.double().mean()
    T, B = x.shape
    var = x.pow(2).mean()
    if var == 0:
        return float("nan")
    f = torch.fft.rfft(x, n=2 * T, dim=0)
    acov = torch.fft.irfft(f * f.conj(), dim=0)[:T].mean(1) / T          # biased estimator, averaged over chains
    rho = (acov / acov[0]).tolist()
    tau = -1.0
    for m in range(0, T // 2 - 1):
        pair = rho[2 * m] + rho[2 * m + 1]
        if pair <= 0:
            break
        tau += 2 * pair
    return B * T / max(tau, 1.0 / (B * T))


def auroc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """Area under the ROC curve of a score that should be higher on ``positive`` than on ``negative``: the
    probability that a random positive outscores a random negative (ties count ½), by ranks."""
    p, n = positive.double().flatten().cpu(), negative.double().flatten().cpu()
    if p.numel() == 0 or n.numel() == 0:
        raise ValueError("need at least one positive and one negative score")
    allv = torch.cat([p, n])
    order = torch.argsort(allv)
    ranks = torch.empty_like(allv)
    ranks[order] = torch.arange(1, allv.numel() + 1, dtype=torch.float64)
    # average ranks over ties
    uniq, inv, counts = torch.unique(allv, return_inverse=True, return_counts=True)
    sums = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inv, ranks)
    ranks = (sums / counts)[inv]
    r_pos = ranks[: p.numel()].sum()
    return float((r_pos - p.numel() * (p.numel() + 1) / 2) / (p.numel() * n.numel()))


def ratio_of_means_ci(a: torch.Tensor, b: torch.Tensor, level: float = 0.95, n_boot: int = 2000,
                      generator: torch.Generator | None = None) -> tuple[float, float, float]:
    """mean(a)/mean(b) and its paired percentile-bootstrap interval at ``level``: ``(ratio, low, high)``.

    ``a``, ``b``: per-example values of two methods on the same examples (e.g. each test image's MSE under a
    model and under a control), shape (N,); the examples are resampled together, so the interval reflects how
    much the ratio depends on which N examples were drawn (not the training seed)."""
    a, b = torch.as_tensor(a, dtype=torch.float64).flatten(), torch.as_tensor(b, dtype=torch.float64).flatten()
    if a.shape != b.shape or a.numel() < 2:
        raise ValueError(f"a and b must hold the same N >= 2 paired values, got {tuple(a.shape)} and {tuple(b.shape)}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if b.mean() <= 0:
        raise ValueError("mean(b) must be positive")
    idx = torch.randint(0, a.numel(), (n_boot, a.numel()), generator=generator)
    boot = a[idx].mean(1) / b[idx].mean(1)
    lo, hi = torch.quantile(boot, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    return float(a.mean() / b.mean()), lo, hi
