"""Noise covariances that are diagonal in a known basis, and linear degradations written as such noise.

A linear inverse problem y = Hx + σv becomes a denoising problem after applying a (regularised) inverse H⁺:
H⁺y = x + σH⁺v (exactly when H is invertible), i.e. Gaussian noise of covariance

    Σ = σ² H⁺ H⁺ᵀ    (Σ = σ² H⁻¹H⁻ᵀ for invertible H).

Two families keep Σ cheap (d numbers instead of d²), as in Zilberstein et al. (2026):

* ``pixel``: Σ = diag(v), one variance per coordinate (inpainting: a huge variance on missing pixels);
* ``fourier``: Σ = Fᴴ diag(S) F with F the unitary DFT (stationary noise: blur, block-average "SR").
  S must be conjugate-symmetric (S_k = S_{−k}) so that Σ is a real symmetric matrix.

:class:`DiagCov` holds a batch of such covariances, one per sample, each pixel- or Fourier-diagonal, stored
as **log-variances** (the natural coordinates: variances span 12 decades, and v ∂/∂v = ∂/∂log v is the
scale-free covariance score). Shapes: vectors x (B, d) with a map (B, d) and a 1-D DFT; images x (B, C, H, W)
with a map (B, 1, H, W) shared by the C channels and a 2-D DFT over (H, W). Everything is batched and
differentiable (autograd flows into ``log_var``) and follows the input's device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

BASES = ("pixel", "fourier")


def _fft_dims(map_ndim: int) -> tuple[int, ...]:
    if map_ndim == 2:
        return (-1,)
    if map_ndim == 4:
        return (-2, -1)
    raise ValueError(f"a variance map must have shape (B, d) for vectors or (B, 1, H, W) for images, got ndim {map_ndim}")


def flip_frequencies(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """x[..., −k mod N] along ``dims`` (the frequency k ↦ −k on the unshifted FFT grid)."""
    return torch.roll(torch.flip(x, dims), shifts=(1,) * len(dims), dims=dims)


def symmetrize_spectrum(s: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """½(s_k + s_{−k}): the conjugate-symmetric part of a real spectrum (or log-spectrum)."""
    return 0.5 * (s + flip_frequencies(s, dims))


def fourier_multiply(x: torch.Tensor, mult: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Re(F⁻¹[m ⊙ F x]) with the unitary DFT over ``dims``; the real operator Fᴴ diag(sym(m)) F."""
    xf = torch.fft.fftn(x, dim=dims, norm="ortho")
    return torch.fft.ifftn(xf * mult, dim=dims, norm="ortho").real


@dataclass
class DiagCov:
    """A batch of covariances, Σ_b = diag(v_b) (pixel) or Fᴴ diag(v_b) F (fourier), v_b = exp(log_var_b).

    ``log_var``: (B, d) or (B, 1, H, W); ``fourier``: (B,) bool, True where Σ_b is Fourier-diagonal.
    """
    log_var: torch.Tensor
    fourier: torch.Tensor

    def __post_init__(self):
        if not torch.is_tensor(self.log_var) or not self.log_var.is_floating_point():
            raise ValueError("log_var must be a floating-point tensor of log-variances")
        _fft_dims(self.log_var.ndim)
        if self.log_var.ndim == 4 and self.log_var.shape[1] != 1:
            raise ValueError(f"image variance maps are shared by all channels: shape (B, 1, H, W), got {tuple(self.log_var.shape)}")
        f = torch.as_tensor(self.fourier, device=self.log_var.device)
        if f.ndim == 0:
            f = f.expand(self.log_var.shape[0])
        if f.shape != (self.log_var.shape[0],):
            raise ValueError(f"fourier flags must have shape (B,) = ({self.log_var.shape[0]},), got {tuple(f.shape)}")
        self.fourier = f.bool()
        if not torch.isfinite(self.log_var).all():
            raise ValueError("log-variances must be finite (variances strictly positive and finite)")

    # -- construction ------------------------------------------------------------------------------------
    @classmethod
    def from_var(cls, var, basis: str | torch.Tensor = "pixel") -> "DiagCov":
        """Build from variances (B, d) or (B, 1, H, W); ``basis`` 'pixel', 'fourier' or a (B,) bool tensor."""
        var = torch.as_tensor(var)
        if not var.is_floating_point():
            var = var.double()
        if not torch.all(var > 0):
            raise ValueError(f"variances must be > 0 (got min {var.min().item():.3g}); use a tiny variance for observed pixels")
        return cls(var.log(), _basis_flags(basis, var.shape[0], var.device))

    @classmethod
    def isotropic(cls, var, map_shape: tuple[int, ...], basis: str = "pixel", dtype=torch.float32, device=None) -> "DiagCov":
        """σ²I for each sample: ``var`` a float or (B,) tensor; ``map_shape`` (d,) or (1, H, W)."""
        v = torch.as_tensor(var, dtype=dtype, device=device).reshape(-1)
        if not torch.all(v > 0):
            raise ValueError("isotropic variances must be > 0")
        return cls.from_var(v.reshape(-1, *([1] * len(map_shape))).expand(-1, *map_shape).clone(), basis)

    # -- properties ---------------------------------------------------------------------------------------
    @property
    def var(self) -> torch.Tensor:
        return self.log_var.exp()

    @property
    def batch_size(self) -> int:
        return self.log_var.shape[0]

    @property
    def map_shape(self) -> tuple[int, ...]:
        return tuple(self.log_var.shape[1:])

    @property
    def fft_dims(self) -> tuple[int, ...]:
        return _fft_dims(self.log_var.ndim)

    @property
    def n_coords(self) -> int:
        """Number of variances per sample (d / C for images with C channels)."""
        return math.prod(self.map_shape)

    def to(self, dtype=None, device=None) -> "DiagCov":
        return DiagCov(self.log_var.to(dtype=dtype, device=device), self.fourier.to(device=device or self.fourier.device))

    def detach(self) -> "DiagCov":
        return DiagCov(self.log_var.detach(), self.fourier)

    def requires_grad_(self) -> "DiagCov":
        """A copy whose ``log_var`` is a fresh autograd leaf (for ∂U/∂log v)."""
        return DiagCov(self.log_var.detach().clone().requires_grad_(True), self.fourier)

    def __getitem__(self, idx) -> "DiagCov":
        lv = self.log_var[idx]
        f = self.fourier[idx]
        if lv.ndim == self.log_var.ndim - 1:
            lv, f = lv[None], f[None]
        return DiagCov(lv, f)

    @staticmethod
    def cat(covs: list["DiagCov"]) -> "DiagCov":
        return DiagCov(torch.cat([c.log_var for c in covs]), torch.cat([c.fourier for c in covs]))

    def symmetrized_log_var(self) -> torch.Tensor:
        """log_var with Fourier rows made conjugate-symmetric (what networks should see; autograd splits the
        covariance score evenly between k and −k)."""
        sym = symmetrize_spectrum(self.log_var, self.fft_dims)
        return torch.where(self._rows(self.log_var), sym, self.log_var)

    # -- algebra ------------------------------------------------------------------------------------------
    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        return self.fourier.view(-1, *([1] * (x.ndim - 1)))

    def _check_signal(self, x: torch.Tensor) -> None:
        if x.shape[0] != self.batch_size:
            raise ValueError(f"signal batch {x.shape[0]} does not match the {self.batch_size} covariances")
        if self.log_var.ndim == 2 and (x.ndim != 2 or x.shape[1] != self.map_shape[0]):
            raise ValueError(f"vector covariances of dimension {self.map_shape[0]} need x of shape (B, {self.map_shape[0]}), got {tuple(x.shape)}")
        if self.log_var.ndim == 4 and (x.ndim != 4 or tuple(x.shape[2:]) != self.map_shape[1:]):
            raise ValueError(f"image covariances of size {self.map_shape[1:]} need x of shape (B, C, H, W), got {tuple(x.shape)}")

    def apply_multiplier(self, x: torch.Tensor, mult: torch.Tensor) -> torch.Tensor:
        """Apply the operator with eigenvalues ``mult`` (same shape as the map) in each sample's basis."""
        self._check_signal(x)
        out = x * mult
        if bool(self.fourier.any()):
            fx = fourier_multiply(x, mult, self.fft_dims)
            out = torch.where(self._rows(x), fx, out)
        return out

    def apply(self, x: torch.Tensor, power: float = 1.0) -> torch.Tensor:
        """Σ^p x (p = ½ colours white noise, p = −½ whitens)."""
        return self.apply_multiplier(x, (power * self.log_var).exp())

    def whiten(self, x: torch.Tensor) -> torch.Tensor:
        """Σ^{−½} x."""
        return self.apply(x, -0.5)

    def channels(self, x: torch.Tensor) -> int:
        """How many signal channels share one variance (1 for vectors)."""
        return 1 if x.ndim == 2 else x.shape[1]

    def logdet(self, n_channels: int = 1) -> torch.Tensor:
        """log det Σ per sample, (B,): C · Σ_i log v_i (the eigenvalues are v in either basis)."""
        return n_channels * self.log_var.flatten(1).sum(1)

    def logdet_plus(self, data_cov, n_channels: int = 1) -> torch.Tensor:
        """log det(C + Σ) per sample, (B,), differentiable in ``log_var``.

        ``data_cov``: a number c ≥ 0 (C = cI, in either basis C + Σ has eigenvalues c + v_i, so the result is
        n_channels · Σ_i log(c + v_i)) or a dense (d, d) matrix, d = n_channels · n_coords (Σ is built densely,
        so small d only). ½ log det(C + Σ) is the log-normaliser of N(m, C + Σ), the noisy density of a
        Gaussian prior with covariance C."""
        if not torch.is_tensor(data_cov) or data_cov.ndim == 0:
            c = float(data_cov)
            if c < 0:
                raise ValueError(f"a scalar data covariance must be >= 0, got {c}")
            return n_channels * torch.log(c + self.var).flatten(1).sum(1)
        C = data_cov.to(dtype=self.log_var.dtype, device=self.log_var.device)
        d = n_channels * self.n_coords
        if C.shape != (d, d):
            raise ValueError(f"data_cov must be ({d}, {d}) for {n_channels} channel(s) of {self.n_coords} coordinates, "
                             f"got {tuple(C.shape)}")
        M = C + self.dense(n_channels)
        L = torch.linalg.cholesky(0.5 * (M + M.transpose(1, 2)))      # raises if C + Σ is not positive definite
        return 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)

    def sample(self, n_channels: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        """ε ~ N(0, Σ), one draw per covariance: shape (B, d) or (B, C, H, W)."""
        shape = (self.batch_size, *self.map_shape) if self.log_var.ndim == 2 else \
            (self.batch_size, n_channels, *self.map_shape[1:])
        z = torch.randn(shape, generator=generator, dtype=self.log_var.dtype, device="cpu" if generator is not None else self.log_var.device)
        return self.apply(z.to(self.log_var.device), 0.5)

    def whitened_energy(self, eps: torch.Tensor) -> torch.Tensor:
        """ε̃²_i summed over the channels sharing variance i, shape of the map: ε_i²/v_i (pixel) or
        |(Fε)_k|²/S_k (Fourier), so that εᵀΣ⁻¹ε = Σ_i ε̃²_i."""
        self._check_signal(eps)
        pix = eps.pow(2)
        if bool(self.fourier.any()):
            four = torch.fft.fftn(eps, dim=self.fft_dims, norm="ortho").abs().pow(2)
            pix = torch.where(self._rows(eps), four, pix)
        if eps.ndim == 4:
            pix = pix.sum(1, keepdim=True)
        return pix / self.var

    def quadratic(self, x: torch.Tensor) -> torch.Tensor:
        """xᵀ Σ⁻¹ x per sample, (B,)."""
        return self.whitened_energy(x).flatten(1).sum(1)

    def gaussian_nll(self, x: torch.Tensor) -> torch.Tensor:
        """−log N(x; 0, Σ) per sample, (B,)."""
        d = x[0].numel()
        return 0.5 * (self.quadratic(x) + self.logdet(self.channels(x)) + d * math.log(2 * math.pi))

    def dense(self, n_channels: int = 1) -> torch.Tensor:
        """Σ as dense (B, d, d) matrices (small sizes only: tests and exact references)."""
        if self.log_var.ndim == 2:
            d = self.map_shape[0]
            basis = torch.eye(d, dtype=self.log_var.dtype, device=self.log_var.device)
            cols = self.expand_batch(d).apply(basis.repeat(self.batch_size, 1))   # (B*d, d): Σ e_j
            return cols.reshape(self.batch_size, d, d).transpose(1, 2)
        H, W = self.map_shape[1:]
        d = n_channels * H * W
        basis = torch.eye(d, dtype=self.log_var.dtype, device=self.log_var.device).reshape(d, n_channels, H, W)
        cols = self.expand_batch(d).apply(basis.repeat(self.batch_size, 1, 1, 1))
        return cols.reshape(self.batch_size, d, d).transpose(1, 2)

    def expand_batch(self, n: int) -> "DiagCov":
        """Each covariance repeated n times consecutively (B·n covariances)."""
        return DiagCov(self.log_var.repeat_interleave(n, dim=0), self.fourier.repeat_interleave(n, dim=0))


def _basis_flags(basis, batch: int, device) -> torch.Tensor:
    if isinstance(basis, str):
        if basis not in BASES:
            raise ValueError(f"basis must be one of {BASES} or a (B,) bool tensor, got {basis!r}")
        return torch.full((batch,), basis == "fourier", dtype=torch.bool, device=device)
    return torch.as_tensor(basis, device=device).bool()


# ---------------------------------------------------------------------------------------------------------
# Linear degradations as noise covariances
# ---------------------------------------------------------------------------------------------------------
def inpainting_var(mask: torch.Tensor, noise_var: float, missing_var: float = 1e3) -> torch.Tensor:
    """Pixel variances of y = M⊙x + σv seen as x + noise: σ² on observed pixels (mask 1), a huge
    ``missing_var`` on missing ones (mask 0): the prior alone must fill them."""
    mask = torch.as_tensor(mask)
    if noise_var <= 0 or missing_var <= 0:
        raise ValueError("noise_var and missing_var must be > 0 (use a tiny variance for noiseless observations)")
    return torch.where(mask.bool(), torch.full_like(mask, noise_var, dtype=torch.float64),
                       torch.full_like(mask, missing_var, dtype=torch.float64))


def kernel_spectrum(kernel: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """|Ĥ_k|: magnitude of the DFT of a kernel zero-padded to ``shape`` (circular convolution; the phase,
    i.e. where the kernel sits, does not enter Σ)."""
    k = torch.as_tensor(kernel, dtype=torch.float64)
    if k.ndim != len(shape):
        raise ValueError(f"kernel ndim {k.ndim} does not match shape {shape}")
    if any(a > b for a, b in zip(k.shape, shape)):
        raise ValueError(f"kernel {tuple(k.shape)} larger than the signal {shape}")
    pad = torch.zeros(shape, dtype=torch.float64)
    pad[tuple(slice(0, n) for n in k.shape)] = k
    return torch.fft.fftn(pad).abs()


def gaussian_kernel(size: int, std: float, ndim: int = 2) -> torch.Tensor:
    """A normalised Gaussian kernel of ``size`` taps per axis (the paper's deblurring: 8×8, std 0.8)."""
    if size < 1 or std <= 0:
        raise ValueError("kernel size must be >= 1 and std > 0")
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (t / std) ** 2)
    k = g
    for _ in range(ndim - 1):
        k = k[..., None] * g
    return k / k.sum()


def box_kernel(factor: int, ndim: int = 2) -> torch.Tensor:
    """Block average over ``factor`` taps per axis (the paper's "SR": a 4×4 average, no decimation)."""
    return torch.full((factor,) * ndim, 1.0 / factor**ndim, dtype=torch.float64)


def regularized_inverse_spectrum(h_abs: torch.Tensor, noise_var, eps: float = 1e-6, floor: float = 0.0,
                                 max_var: float | None = None, min_var: float = 1e-12) -> torch.Tensor:
    """Spectrum of Σ = σ² H⁺H⁺ᵀ for the Tikhonov inverse Ĥ⁺ = conj(Ĥ)/(|Ĥ|²+ε):

        S_k = σ² (|Ĥ_k|² / (|Ĥ_k|² + ε)² + floor),

    clipped to [min_var, max_var]. ``floor`` = 1 is the released code's "SR" heuristic (frequencies the
    operator destroys get at least σ²); ``noise_var`` may be a (B,) tensor (one spectrum per sample)."""
    h2 = torch.as_tensor(h_abs, dtype=torch.float64).pow(2)
    nv = torch.as_tensor(noise_var, dtype=torch.float64)
    if torch.any(nv <= 0):
        raise ValueError("noise_var must be > 0")
    base = h2 / (h2 + eps).pow(2) + floor
    s = nv.reshape(-1, *([1] * h2.ndim)) * base if nv.ndim else nv * base
    return s.clamp(min=min_var, max=max_var) if max_var is not None else s.clamp(min=min_var)


# ---------------------------------------------------------------------------------------------------------
# Training distribution over covariances
# ---------------------------------------------------------------------------------------------------------
def log_uniform(n: int, lo: float, hi: float, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
    """n variances log-uniform on [lo, hi]."""
    if not 0 < lo <= hi:
        raise ValueError(f"need 0 < lo <= hi, got lo={lo}, hi={hi}")
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))).to(dtype)


def _grid(map_shape):
    if len(map_shape) == 1:
        return torch.arange(map_shape[0])[None, :], None
    H, W = map_shape[1:]
    return torch.arange(H)[None, :, None], torch.arange(W)[None, None, :]


def box_var(map_shape, sizes: torch.Tensor, v_in: torch.Tensor, v_out: torch.Tensor) -> torch.Tensor:
    """Centred box (a centred block of coordinates for vectors) of side ``sizes`` with variance v_in inside,
    v_out outside; returns (B, *map_shape)."""
    sizes = sizes.reshape(-1)
    B = sizes.shape[0]
    if len(map_shape) == 1:
        n = map_shape[0]
        i, _ = _grid(map_shape)
        start = (n - sizes[:, None]) // 2
        inside = (i >= start) & (i < start + sizes[:, None])
    else:
        H, W = map_shape[1:]
        i, j = _grid(map_shape)
        s = sizes[:, None, None]
        r0, c0 = (H - s) // 2, (W - s) // 2
        inside = ((i >= r0) & (i < r0 + s) & (j >= c0) & (j < c0 + s))[:, None]
    shape = (B, *([1] * len(map_shape)))
    return torch.where(inside, v_in.reshape(shape), v_out.reshape(shape)).to(v_in.dtype)


def half_var(map_shape, rows: torch.Tensor, v_in: torch.Tensor, v_out: torch.Tensor) -> torch.Tensor:
    """"Half" mask: the first ``rows`` rows (first coordinates for vectors) get v_in, the rest v_out."""
    rows = rows.reshape(-1)
    B = rows.shape[0]
    if len(map_shape) == 1:
        i, _ = _grid(map_shape)
        inside = i < rows[:, None]
    else:
        i, _ = _grid(map_shape)
        inside = (i < rows[:, None, None])[:, None].expand(B, 1, *map_shape[1:])
    shape = (B, *([1] * len(map_shape)))
    return torch.where(inside, v_in.reshape(shape), v_out.reshape(shape)).to(v_in.dtype)


@dataclass
class CovFamily:
    """The training distribution p(Σ). Each sample is pixel-diagonal with probability 1 − ``p_fourier``.

    Pixel: ½ centred box (side ~ U{1..n}), ½ half mask (rows ~ U{0..n}); the inside and outside variances
    are drawn *independently* log-uniform on [var_min, var_max] (the released code collapses them to one
    value, making every training Σ isotropic). ``max_log_ratio`` (optional) limits |log v_in − log v_out|.
    Fourier: Gaussian-blur and block-average ("SR") regularised-inverse spectra with σ² log-uniform, clipped
    to [var_min, min(var_max, fourier_clip)], and with probability ``p_flat`` a flat spectrum σ² (isotropic Σ
    written in the Fourier basis). The flat spectra matter: the network embeds the two bases separately, so
    the losses leave one free constant per basis; isotropic Σ up to the anchor in both bases is what lets each
    basis be normalised at its own isotropic anchor (``score_losses.normalization_constants``).
    """
    var_min: float = 1e-4
    var_max: float = 1e3
    p_fourier: float = 0.5
    blur_size: int = 8
    blur_std: float = 0.8
    sr_factor: int = 4
    inv_eps: float = 1e-6
    fourier_clip: float | None = None
    max_log_ratio: float | None = None
    p_flat: float = 1 / 3

    def sample(self, n: int, map_shape: tuple[int, ...], generator: torch.Generator | None = None,
               dtype=torch.float32) -> DiagCov:
        """n covariances (B = n) for signals whose variance map has shape ``map_shape`` ((d,) or (1, H, W))."""
        ndim = 1 if len(map_shape) == 1 else 2
        side = map_shape[0] if ndim == 1 else map_shape[1]
        fourier = torch.rand(n, generator=generator) < self.p_fourier
        v1 = log_uniform(n, self.var_min, self.var_max, generator, torch.float64)
        v2 = log_uniform(n, self.var_min, self.var_max, generator, torch.float64)
        if self.max_log_ratio is not None:
            r = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * self.max_log_ratio
            v2 = (v1.log() + r).exp().clamp(self.var_min, self.var_max)
        sizes = torch.randint(1, side + 1, (n,), generator=generator)
        rows = torch.randint(0, side + 1, (n,), generator=generator)
        use_box = torch.rand(n, generator=generator) < 0.5
        pix = torch.where(use_box.view(-1, *([1] * len(map_shape))),
                          box_var(map_shape, sizes, v1, v2), half_var(map_shape, rows, v1, v2))
        # Fourier spectra: blur or SR, scaled by σ² = v1, clipped.
        spatial = map_shape if ndim == 1 else map_shape[1:]
        hb = kernel_spectrum(gaussian_kernel(min(self.blur_size, min(spatial)), self.blur_std, ndim), spatial)
        hs = kernel_spectrum(box_kernel(min(self.sr_factor, min(spatial)), ndim), spatial)
        top = self.var_max if self.fourier_clip is None else min(self.var_max, self.fourier_clip)
        sb = regularized_inverse_spectrum(hb, v1, self.inv_eps, 0.0, top, self.var_min)
        ss = regularized_inverse_spectrum(hs, v1, self.inv_eps, 1.0, top, self.var_min)
        kind = torch.rand(n, generator=generator).view(-1, *([1] * ndim))
        flat = v1.reshape(-1, *([1] * ndim)).clamp(max=top).expand_as(sb)
        four = torch.where(kind < self.p_flat, flat, torch.where(kind < (1 + self.p_flat) / 2, sb, ss))
        if ndim == 2:
            four = four[:, None]
        var = torch.where(fourier.view(-1, *([1] * len(map_shape))), four, pix)
        return DiagCov(var.log().to(dtype), fourier)


def random_pixel_var(n: int, map_shape, lo: float, hi: float, generator=None) -> torch.Tensor:
    """Out-of-family pixel covariances: every coordinate its own log-uniform variance, (n, *map_shape)."""
    return log_uniform(n * math.prod(map_shape), lo, hi, generator, torch.float64).reshape(n, *map_shape)


def power_law_spectrum(n: int, map_shape, lo: float, hi: float, generator=None) -> torch.Tensor:
    """Out-of-family Fourier covariances: S_k = σ² (1 + |k|)^α, σ² log-uniform on [lo, hi], α ~ U[−2, 2],
    clipped to [lo, hi] (conjugate-symmetric by construction); (n, *map_shape)."""
    spatial = map_shape if len(map_shape) == 1 else map_shape[1:]
    freqs = [torch.fft.fftfreq(s, d=1.0 / s, dtype=torch.float64) for s in spatial]
    grids = torch.meshgrid(*freqs, indexing="ij")
    radius = torch.sqrt(sum(g**2 for g in grids))
    sig = log_uniform(n, lo, hi, generator, torch.float64).reshape(-1, *([1] * len(spatial)))
    alpha = (torch.rand(n, generator=generator, dtype=torch.float64) * 4 - 2).reshape(-1, *([1] * len(spatial)))
    s = (sig * (1 + radius) ** alpha).clamp(lo, hi)
    return s if len(map_shape) == 1 else s[:, None]
