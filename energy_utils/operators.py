"""Linear measurement operators with orthonormal columns, batched (one object per operator, deepinv-style).

Every operator is a matrix M (N × m, N = C·H·W) with MᵀM = I_m, so P = M Mᵀ is the orthogonal projector onto
the measured subspace and M x_c is the pseudo-inverse (least-squares) reconstruction from x_c = Mᵀ x:

    M_T(x): images (B, C, H, W) -> measurements (B, m)        x_c = Mᵀ x
    M(v):   measurements (B, m)  -> images (B, C, H, W)       M v
    project(x) = M Mᵀ x

Operators (KS2021 §2 of our reference notes, with two fixes): :class:`NoMeasurement` (synthesis),
:class:`BlockInpainting`, :class:`RandomPixels`, :class:`BlockAverageSR` (block-average super-resolution with
the kernel scaled by 1/s so columns are orthonormal), :class:`SpectralLowPass` ("deblurring": an ideal low-pass
with a *conjugate-symmetric* disc mask and real orthonormal Fourier measurements, so P is an exact projector,
unlike the released code), :class:`CompressiveSensing` (a random orthonormal basis applied block-wise, so it
scales to large images). :func:`tv_reconstruct` is the classical (non-learned) baseline: minimum total
variation subject to Mᵀx = x_c.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class LinearOperator:
    """Base class: subclasses implement ``_M_T(x) -> (B, m)`` and ``_M(v) -> (B, C, H, W)``."""

    name = "operator"

    def __init__(self, shape):
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be (C, H, W) of one image, got {shape}")
        self.shape = shape
        self.N = shape[0] * shape[1] * shape[2]
        self.m = 0

    # public, checked API -------------------------------------------------------------------------------
    def M_T(self, x: torch.Tensor) -> torch.Tensor:
        """Measurements x_c = Mᵀ x, shape (B, m)."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"{self.name}: expected images of shape (B, {', '.join(map(str, self.shape))}), "
                             f"got {tuple(x.shape)}")
        return self._M_T(x)

    def M(self, v: torch.Tensor) -> torch.Tensor:
        """Back-projection M v of measurements (B, m) into image space (B, C, H, W)."""
        if v.ndim != 2 or v.shape[1] != self.m:
            raise ValueError(f"{self.name}: expected measurements of shape (B, {self.m}), got {tuple(v.shape)}")
        return self._M(v)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """P x = M Mᵀ x, the orthogonal projection onto the measured subspace."""
        return self.M(self.M_T(x))

    __call__ = M_T
    forward = M_T
    adjoint = M

    def pseudo_inverse(self, v: torch.Tensor) -> torch.Tensor:
        """M x_c: the minimum-norm image consistent with the measurements (zero in the unmeasured subspace)."""
        return self.M(v)

    def init_mean(self, v: torch.Tensor, value: float = 0.5) -> torch.Tensor:
        """KS2021's initial mean value·(I − MMᵀ)e + M x_c (e the all-ones image)."""
        e = torch.full((v.shape[0], *self.shape), value, dtype=v.dtype, device=v.device)
        return e - self.project(e) + self.M(v)

    @property
    def fraction(self) -> float:
        """m / N, the fraction of dimensions measured."""
        return self.m / self.N

    def to(self, device) -> "LinearOperator":
        for k, v in list(vars(self).items()):
            if torch.is_tensor(v):
                setattr(self, k, v.to(device))
        return self

    def __repr__(self):
        return f"{type(self).__name__}(shape={self.shape}, m={self.m}, fraction={self.fraction:.3f})"


class NoMeasurement(LinearOperator):
    """Synthesis: no measurements (m = 0), P = 0; turns KS2021's Algorithm 2 into Algorithm 1."""

    name = "synthesis"

    def _M_T(self, x):
        return x.new_zeros(x.shape[0], 0)

    def _M(self, v):
        return v.new_zeros(v.shape[0], *self.shape)


class PixelMask(LinearOperator):
    """Keep the pixels where ``mask`` (C, H, W) is True: Mᵀx gathers them, M scatters them back (zeros elsewhere)."""

    name = "pixel mask"

    def __init__(self, mask: torch.Tensor):
        mask = torch.as_tensor(mask, dtype=torch.bool)
        super().__init__(mask.shape)
        self.mask = mask
        self.index = mask.flatten().nonzero().flatten()
        self.m = int(self.index.numel())

    def _M_T(self, x):
        return x.flatten(1).index_select(1, self.index.to(x.device))

    def _M(self, v):
        out = v.new_zeros(v.shape[0], self.N)
        return out.index_copy(1, self.index.to(v.device), v).view(-1, *self.shape)


class BlockInpainting(PixelMask):
    """Missing block: the h × w rectangle with top-left corner (top, left) is unmeasured, in every channel.
    Default: a centred block covering ``hole`` of each side (KS2021's demo: a 20×20 hole in a 60×60 crop)."""

    name = "block inpainting"

    def __init__(self, shape, top: int | None = None, left: int | None = None, h: int | None = None,
                 w: int | None = None, hole: float = 1 / 3):
        C, H, W = shape
        h = h if h is not None else max(1, round(H * hole))
        w = w if w is not None else max(1, round(W * hole))
        top = top if top is not None else (H - h) // 2
        left = left if left is not None else (W - w) // 2
        if not (0 <= top and top + h <= H and 0 <= left and left + w <= W):
            raise ValueError(f"the block ({top}:{top + h}, {left}:{left + w}) does not fit in an image of {H}×{W}")
        mask = torch.ones(C, H, W, dtype=torch.bool)
        mask[:, top:top + h, left:left + w] = False
        super().__init__(mask)
        self.block = (top, left, h, w)


class RandomPixels(PixelMask):
    """Exactly ⌊p N⌋ randomly chosen entries of the (C, H, W) tensor are measured (independently per channel)."""

    name = "random pixels"

    def __init__(self, shape, keep_fraction: float, generator: torch.Generator | None = None):
        if not 0 < keep_fraction <= 1:
            raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
        C, H, W = shape
        N = C * H * W
        keep = torch.randperm(N, generator=generator)[: int(keep_fraction * N)]
        mask = torch.zeros(N, dtype=torch.bool)
        mask[keep] = True
        super().__init__(mask.view(C, H, W))


class BlockAverageSR(LinearOperator):
    """Super-resolution by s×s block averaging: Mᵀx = s · (block mean) = (block sum)/s; M v replicates v/s over
    each block. The 1/s normalisation makes the columns orthonormal; the low-resolution image is Mᵀx / s."""

    name = "block-average super-resolution"

    def __init__(self, shape, factor: int):
        super().__init__(shape)
        C, H, W = self.shape
        if factor < 1 or H % factor or W % factor:
            raise ValueError(f"factor {factor} must divide the image size {H}×{W}; crop the image first")
        self.s = int(factor)
        self.low_shape = (C, H // factor, W // factor)
        self.m = C * (H // factor) * (W // factor)

    def _M_T(self, x):
        return (F.avg_pool2d(x, self.s) * self.s).flatten(1)

    def _M(self, v):
        low = v.view(-1, *self.low_shape) / self.s
        return low.repeat_interleave(self.s, dim=-2).repeat_interleave(self.s, dim=-1)

    def low_resolution(self, v: torch.Tensor) -> torch.Tensor:
        """The block-mean image (B, C, H/s, W/s) from measurements."""
        return v.view(-1, *self.low_shape) / self.s


class SpectralLowPass(LinearOperator):
    """Ideal low-pass ("deblurring"/spectral super-resolution): measure the Fourier coefficients inside the disc
    |f| ≤ f_c (f in cycles/pixel), chosen so that about ``keep_fraction`` of them are kept.

    The disc is conjugate-symmetric, so P = MMᵀ is the exact real projector x ↦ Re IFFT(mask ⊙ FFT x). The
    measurements are real and orthonormal: with the unitary FFT X, one value X_k for each self-conjugate
    frequency and (√2 Re X_k, √2 Im X_k) for one member k of each conjugate pair (k, −k), per channel.
    """

    name = "spectral low-pass"

    def __init__(self, shape, keep_fraction: float):
        super().__init__(shape)
        if not 0 < keep_fraction <= 1:
            raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
        C, H, W = self.shape
        f1 = torch.fft.fftfreq(H, dtype=torch.float64)[:, None]
        f2 = torch.fft.fftfreq(W, dtype=torch.float64)[None, :]
        r = (f1 ** 2 + f2 ** 2).sqrt().flatten()
        n_keep = max(1, int(round(keep_fraction * H * W)))
        self.cutoff = float(r.sort().values[n_keep - 1])
        kept = r <= self.cutoff + 1e-12
        k = torch.arange(H * W)
        k1, k2 = k // W, k % W
        conj = ((-k1) % H) * W + ((-k2) % W)
        if not torch.equal(kept, kept[conj]):
            raise RuntimeError("internal error: the low-pass mask is not conjugate-symmetric")
        self.mask = kept.view(H, W)
        self.self_conj = k[kept & (conj == k)]
        self.pair = k[kept & (k < conj)]
        self.pair_conj = conj[self.pair]
        self.m_per_channel = int(self.self_conj.numel() + 2 * self.pair.numel())
        self.m = C * self.m_per_channel

    def _M_T(self, x):
        X = torch.fft.fft2(x, norm="ortho").flatten(-2)              # (B, C, HW) complex
        a = X[..., self.self_conj.to(x.device)].real
        p = X[..., self.pair.to(x.device)] * math.sqrt(2)
        return torch.cat([a, p.real, p.imag], dim=-1).flatten(1)

    def _M(self, v):
        C, H, W = self.shape
        v = v.view(v.shape[0], C, self.m_per_channel)
        n_sc, n_p = self.self_conj.numel(), self.pair.numel()
        a, b, c = v[..., :n_sc], v[..., n_sc:n_sc + n_p], v[..., n_sc + n_p:]
        ctype = torch.complex128 if v.dtype == torch.float64 else torch.complex64
        X = torch.zeros(v.shape[0], C, H * W, dtype=ctype, device=v.device)
        X[..., self.self_conj.to(v.device)] = a.to(ctype)
        z = torch.complex(b, c) / math.sqrt(2)
        X[..., self.pair.to(v.device)] = z.to(ctype)
        X[..., self.pair_conj.to(v.device)] = z.conj().to(ctype)
        return torch.fft.ifft2(X.view(-1, C, H, W), norm="ortho").real.to(v.dtype)


class CompressiveSensing(LinearOperator):
    """Compressive sensing with a random orthonormal basis, applied block-wise.

    The image (each channel) is cut into non-overlapping bh × bw blocks; every block is measured with the same
    random matrix U (bh·bw × m_b, orthonormal columns from the QR of a Gaussian matrix, m_b = round(p·bh·bw)).
    M = blockdiag(U, …, U) has orthonormal columns and costs O(N·m_b) instead of O(N·m). ``block=None`` uses the
    whole image as one block (the dense operator of KS2021; fine for MNIST, too big for large images).
    """

    name = "compressive sensing"

    def __init__(self, shape, keep_fraction: float, block: int | tuple[int, int] | None = None,
                 generator: torch.Generator | None = None):
        super().__init__(shape)
        if not 0 < keep_fraction <= 1:
            raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
        C, H, W = self.shape
        bh, bw = (H, W) if block is None else ((block, block) if isinstance(block, int) else tuple(block))
        if H % bh or W % bw:
            raise ValueError(f"block {bh}×{bw} must tile the image {H}×{W}; crop the image or change the block")
        self.bh, self.bw = bh, bw
        n_b = bh * bw
        self.m_block = max(1, int(round(keep_fraction * n_b)))
        g = torch.randn(n_b, self.m_block, generator=generator, dtype=torch.float64)
        self.U = torch.linalg.qr(g).Q                                  # (n_b, m_b) float64, UᵀU = I
        self.n_blocks = C * (H // bh) * (W // bw)
        self.m = self.n_blocks * self.m_block

    def _blocks(self, x):
        B, C, H, W = x.shape
        t = x.reshape(B, C, H // self.bh, self.bh, W // self.bw, self.bw).permute(0, 1, 2, 4, 3, 5)
        return t.reshape(B, self.n_blocks, self.bh * self.bw)

    def _M_T(self, x):
        return (self._blocks(x) @ self.U.to(x)).flatten(1)

    def _M(self, v):
        C, H, W = self.shape
        blocks = v.view(v.shape[0], self.n_blocks, self.m_block) @ self.U.to(v).T
        t = blocks.view(-1, C, H // self.bh, W // self.bw, self.bh, self.bw).permute(0, 1, 2, 4, 3, 5)
        return t.reshape(-1, C, H, W)


def orthonormality_errors(op: LinearOperator, n_probe: int = 4, generator: torch.Generator | None = None,
                          dtype=torch.float64) -> dict:
    """Relative errors of MᵀM = I, (MMᵀ)² = MMᵀ and the adjoint identity ⟨Mᵀx, v⟩ = ⟨x, Mv⟩ on random probes."""
    x = torch.randn(n_probe, *op.shape, generator=generator, dtype=dtype)
    v = torch.randn(n_probe, op.m, generator=generator, dtype=dtype)
    rel = lambda a, b: ((a - b).norm() / b.norm().clamp_min(1e-30)).item()
    Px = op.project(x)
    return {"MtM_identity": rel(op.M_T(op.M(v)), v) if op.m else 0.0,
            "projector_idempotent": rel(op.project(Px), Px) if op.m else 0.0,
            "adjoint": abs((op.M_T(x) * v).sum().item() - (x * op.M(v)).sum().item())
            / max((x.norm() * v.norm()).item(), 1e-30)}


def _tv_grad(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Gradient of the smoothed isotropic TV Σ sqrt(|∇x|² + ε²) (forward differences, Neumann boundary)."""
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1))
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    norm = torch.sqrt(dx ** 2 + dy ** 2 + eps ** 2)
    px, py = dx / norm, dy / norm
    div = (px - F.pad(px[..., :, :-1], (1, 0))) + (py - F.pad(py[..., :-1, :], (0, 0, 1, 0)))
    return -div


@torch.no_grad()
def tv_reconstruct(op: LinearOperator, xc: torch.Tensor, n_iter: int = 300, eps_start: float = 0.1,
                   eps_end: float = 0.005, init_value: float = 0.5) -> torch.Tensor:
    """Classical baseline: min_x TV_ε(x) subject to Mᵀx = x_c, by projected gradient descent
    x ← Π(x − (ε/8)·∇TV_ε(x)), Π(x) = x − M(Mᵀx − x_c), with ε decreased geometrically (continuation).
    Starts from KS2021's initial mean; result clamped to [0, 1] after the last projection."""
    x = op.init_mean(xc, init_value)
    for i in range(n_iter):
        eps = eps_start * (eps_end / eps_start) ** (i / max(n_iter - 1, 1))
        x = x - (eps / 8.0) * _tv_grad(x, eps)
        x = x - op.M(op.M_T(x) - xc)
    return x.clamp(0, 1)
