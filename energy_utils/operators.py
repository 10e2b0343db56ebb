"""Linear measurement operators with orthonormal columns, batched (one object per operator, deepinv-style).

Every operator is a matrix M (N × m, N = C·H·W) with MᵀM = I_m, so P = M Mᵀ is the orthogonal projector onto
the measured subspace and M x_c is the pseudo-inverse (least-squares) reconstruction from x_c = Mᵀ x:

    M_T(x) = A(x):          images (B, C, H, W) -> measurements (B, m)        x_c = Mᵀ x
    M(v)   = A_adjoint(v):  measurements (B, m)  -> images (B, C, H, W)       M v
    pseudo_inverse(v) = A_dagger(v)  (= M v when MᵀM = I)
    project(x) = M Mᵀ x

Operators (KS2021, §2 of our reference notes): :class:`NoMeasurement` (synthesis), :class:`PixelMask` (any
given pixel mask), :class:`BlockInpainting`, :class:`RandomPixels`, :class:`BlockAverageSR` (block-average
super-resolution with the kernel scaled by 1/s so columns are orthonormal), :class:`SpectralLowPass`
("deblurring": an ideal low-pass with a *conjugate-symmetric* frequency set and real orthonormal Fourier
measurements, so P is an exact projector), :class:`CompressiveSensing` (an orthonormal basis, random or given,
applied block-wise so it scales to large images), :class:`LinearConstraints` (any constraint vectors Vᵀx = c,
orthonormalised: observed points plus a conserved total, boundary values…). :func:`tv_reconstruct` is the classical (non-learned)
baseline: minimum total variation subject to Mᵀx = x_c.

One forward model is not of this kind and is given as a dense matrix A instead (for the controls of
:mod:`energy_utils.controls`, which take any dense A): :func:`circular_gaussian_blur`, a zero-phase Gaussian blur
with circular boundary, whose A is symmetric but has no orthonormal columns.

**Explicit and convenient forms.** Each operator can be given exactly: a pixel mask (``RandomPixels(mask=...)``,
``BlockInpainting(box=...)`` or ``BlockInpainting(mask=...)``), a basis (``CompressiveSensing(basis=...)``, its
columns checked orthonormal), a frequency set (``SpectralLowPass(frequencies=...)`` or ``mask=...``). The
convenient forms (``keep_fraction``, a default centred hole) build one of those explicit objects.

**One counting rule.** A ``keep_fraction`` p of n candidate dimensions measures exactly

    m = n_measurements(p, n) = max(1, ⌊p·n + ½⌋)        (round half up; 0.2 · 784 = 156.8 -> 157)

for every operator, p in (0, 1]. The n it applies to is the unit the operator samples: the whole (C, H, W)
tensor for :class:`RandomPixels`, one block for :class:`CompressiveSensing` (the whole image of each channel when
``block=None``), one channel for :class:`SpectralLowPass` (its frequency set is shared by the channels). On a
single-channel image with one block all three measure the same m (157 for p = 0.2 on 28 × 28). The
:class:`SpectralLowPass` keeps exactly that many real dimensions (see its docstring for the tie-break).

**As released.** ``Op.as_released(...)`` builds the operator that the released KS2021 code
(``code/Utils_inverse_prob.py`` of universal_inverse_problem, as summarised in our reference notes) builds,
where it differs from ours:

- ``RandomPixels.as_released``: ⌊p·N⌋ pixels (``int``, not round): 156 instead of 157 at p = 0.2 on 28 × 28.
- ``CompressiveSensing.as_released``: one dense basis over the whole (C, H, W) tensor with ⌊p·N⌋ columns.
- ``BlockInpainting.as_released``: the hole is given by its centre (x0, y0) and has 2⌊h/2⌋ × 2⌊w/2⌋ pixels.
- ``SpectralLowPass.as_released`` -> :class:`ReleasedSpectralLowPass`: a rectangle of frequencies that is not
  conjugate-symmetric, so its M has **no** orthonormal columns and MMᵀ is **not** a projector (eigenvalues
  0, ½ and 1). It is the one operator here without MᵀM = I.

The released pixel operators return the masked full-size image (x ⊙ mask) as measurements; ours return the
kept pixels only. Both have the same projector MMᵀ and back-projection, so sampling is unchanged.
:class:`BlockAverageSR` is the released ``super_resolution`` operator already.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

#: Largest entry of |UᵀU − I| accepted for a given basis U (float32 QR bases reach about 1e-7).
ORTHONORMAL_ATOL = 1e-6


def _check_fraction(keep_fraction, name: str = "keep_fraction",
                    meaning: str = "the fraction of dimensions measured") -> float:
    if isinstance(keep_fraction, bool) or not isinstance(keep_fraction, numbers.Real) \
            or not 0 < keep_fraction <= 1:
        raise ValueError(f"{name} must be a number in (0, 1] ({meaning}), got {keep_fraction!r}")
    return float(keep_fraction)


def n_measurements(keep_fraction: float, n: int) -> int:
    """The counting rule of every operator: m = max(1, ⌊p·n + ½⌋), i.e. p·n rounded half up.

    Ties (p·n exactly k + ½) go up; a tolerance of 1e-9 absorbs the binary error of p, so 0.3 · 5 = 1.5 -> 2
    although the double 0.3 is slightly below 3/10. At least one dimension is measured."""
    p = _check_fraction(keep_fraction)
    return max(1, math.floor(p * int(n) + 0.5 + 1e-9))


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5 + 1e-9)


def _check_shape(shape, who: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"{who}: shape must be (C, H, W) of one image, got {shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{who}: shape must be (C, H, W) of one image, got {shape}")
    return shape


def _as_pixel_mask(mask, shape, who: str) -> torch.Tensor:
    """A boolean (C, H, W) mask from ``mask`` of shape (C, H, W), or (H, W) meaning the same pixels in every
    channel. ``shape`` None: take it from the mask ((H, W) -> one channel)."""
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.is_complex() or not ((mask == 0) | (mask == 1)).all():
            raise ValueError(f"{who}: mask must be boolean (True = measured) or integer 0/1, "
                             f"got dtype {mask.dtype}")
        mask = mask != 0
    mask = mask.cpu()
    if shape is None:
        if mask.ndim == 2:
            mask = mask[None]
        if mask.ndim != 3:
            raise ValueError(f"{who}: mask must have shape (C, H, W) or (H, W), got {tuple(mask.shape)}")
        return mask.clone()
    C, H, W = _check_shape(shape, who)
    if tuple(mask.shape) == (H, W):
        return mask[None].expand(C, H, W).clone()
    if tuple(mask.shape) != (C, H, W):
        raise ValueError(f"{who}: mask has shape {tuple(mask.shape)}, expected (C, H, W) = {(C, H, W)} or "
                         f"(H, W) = {(H, W)} (the same pixels in every channel)")
    return mask.clone()


class LinearOperator:
    """Base class: subclasses implement ``_M_T(x) -> (B, m)`` and ``_M(v) -> (B, C, H, W)``."""

    name = "operator"

    def __init__(self, shape):
        self.shape = _check_shape(shape, self.name)
        self.N = self.shape[0] * self.shape[1] * self.shape[2]
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
    A = M_T                 # deepinv's names
    A_adjoint = M

    def pseudo_inverse(self, v: torch.Tensor) -> torch.Tensor:
        """M x_c: the minimum-norm image consistent with the measurements (zero in the unmeasured subspace)."""
        return self.M(v)

    def A_dagger(self, v: torch.Tensor) -> torch.Tensor:
        """deepinv's name of :meth:`pseudo_inverse`."""
        return self.pseudo_inverse(v)

    def make_consistent(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(I − MMᵀ) x + M x_c: x with its measured part replaced by the measurement x_c = v, the signal closest
        to x (in L2) that satisfies Mᵀx = x_c (e.g. a sampler's final estimate made consistent with the data)."""
        return x - self.project(x) + self.M(v)

    def init_mean(self, v: torch.Tensor, value: float = 0.5) -> torch.Tensor:
        """KS2021's initial mean value·(I − MMᵀ)e + M x_c (e the all-ones image)."""
        e = torch.full((v.shape[0], *self.shape), value, dtype=v.dtype, device=v.device)
        return self.make_consistent(e, v)

    @property
    def fraction(self) -> float:
        """m / N, the fraction of dimensions measured."""
        return self.m / self.N

    def to(self, device) -> "LinearOperator":
        """Move every tensor held by the operator (masks, indices, bases) to ``device``; returns self."""
        for k, v in list(vars(self).items()):
            if torch.is_tensor(v):
                setattr(self, k, v.to(device))
        return self

    def __repr__(self):
        return f"{type(self).__name__}(shape={self.shape}, m={self.m}, fraction={self.fraction:.3f})"


class NoMeasurement(LinearOperator):
    """Synthesis: no measurements (m = 0, M is N × 0), P = 0; turns KS2021's Algorithm 2 into Algorithm 1."""

    name = "synthesis"

    def _M_T(self, x):
        return x.new_zeros(x.shape[0], 0)

    def _M(self, v):
        return v.new_zeros(v.shape[0], *self.shape)


class PixelMask(LinearOperator):
    """Keep the pixels where ``mask`` (C, H, W) is True.

    M = the N × m matrix whose columns are the unit vectors e_i of the kept entries i, in row-major (c, h, w)
    order: Mᵀx gathers them, M v scatters them back (zeros elsewhere), P = diag(mask)."""

    name = "pixel mask"

    def __init__(self, mask: torch.Tensor):
        mask = _as_pixel_mask(mask, None, self.name)
        if not mask.any():
            raise ValueError(f"{self.name}: the mask keeps no pixel; use NoMeasurement for synthesis")
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
    """Missing block: every pixel is measured except an h × w rectangle (the same in every channel).

    M = the columns e_i of all pixels outside the rectangle (a :class:`PixelMask`). Three ways to give the hole:

    - ``box=(top, left, h, w)``: rows top … top+h−1, columns left … left+w−1 (or the same as the positional
      arguments ``top, left, h, w``);
    - ``mask``: the measured pixels (True = measured, shape (C, H, W) or (H, W)); its unmeasured pixels must form
      one rectangle shared by every channel (use :class:`PixelMask` for any other mask);
    - by default: ``h = round(H·hole)``, ``w = round(W·hole)`` (rounded half up, ``hole`` = 1/3), **centred**:
      top = ⌊(H − h)/2⌋, left = ⌊(W − w)/2⌋, like KS2021's demo (a 20 × 20 hole in a 60 × 60 crop). Any of top,
      left, h, w not given takes this default.

    ``block`` (= ``box``) holds (top, left, h, w). KS2021's own parametrisation (centre and even size) is
    :meth:`as_released`.
    """

    name = "block inpainting"

    def __init__(self, shape=None, top: int | None = None, left: int | None = None, h: int | None = None,
                 w: int | None = None, hole: float | None = None, *, box=None, mask=None):
        given = {k: v for k, v in dict(top=top, left=left, h=h, w=w, hole=hole).items() if v is not None}
        if mask is not None:
            if box is not None or given:
                raise ValueError(f"{self.name}: give the hole by mask alone, not together with "
                                 f"{sorted(given) + (['box'] if box is not None else [])}")
            mask = _as_pixel_mask(mask, shape, self.name)
            top, left, h, w = self._box_of(mask)
        else:
            if shape is None:
                raise ValueError(f"{self.name}: give the image shape (C, H, W) (or a mask)")
            C, H, W = _check_shape(shape, self.name)
            if box is not None:
                if given:
                    raise ValueError(f"{self.name}: give the hole either as box=(top, left, h, w) or as "
                                     f"top/left/h/w/hole arguments, not both (got box and {sorted(given)})")
                try:
                    top, left, h, w = (int(b) for b in box)
                except (TypeError, ValueError):
                    raise ValueError(f"{self.name}: box must be four integers (top, left, h, w), "
                                     f"got {box!r}") from None
            else:
                hole = 1 / 3 if hole is None else _check_fraction(hole, "hole", "hole side / image side")
                h = int(h) if h is not None else max(1, _round_half_up(H * hole))
                w = int(w) if w is not None else max(1, _round_half_up(W * hole))
                top = int(top) if top is not None else (H - h) // 2
                left = int(left) if left is not None else (W - w) // 2
            if h < 1 or w < 1 or not (0 <= top and top + h <= H and 0 <= left and left + w <= W):
                raise ValueError(f"{self.name}: the block (rows {top}:{top + h}, columns {left}:{left + w}) "
                                 f"is empty or does not fit in an image of {H}×{W}")
            mask = torch.ones(C, H, W, dtype=torch.bool)
            mask[:, top:top + h, left:left + w] = False
        super().__init__(mask)
        self.block = (top, left, h, w)
        self.box = self.block

    def _box_of(self, mask):
        hole = ~mask
        if not hole.any():
            raise ValueError(f"{self.name}: the mask measures every pixel; there is no hole")
        if not (hole == hole[:1]).all():
            raise ValueError(f"{self.name}: the unmeasured pixels differ between channels; use PixelMask(mask) "
                             "for a mask that is not one rectangle shared by every channel")
        rows = hole[0].any(1).nonzero().flatten()
        cols = hole[0].any(0).nonzero().flatten()
        top, left = int(rows[0]), int(cols[0])
        h, w = int(rows[-1]) - top + 1, int(cols[-1]) - left + 1
        if int(hole[0].sum()) != h * w:
            raise ValueError(f"{self.name}: the unmeasured pixels are not one rectangle (their bounding box "
                             f"{h}×{w} at ({top}, {left}) also holds measured pixels); use PixelMask(mask) "
                             "for an arbitrary mask")
        return top, left, h, w

    @classmethod
    def as_released(cls, shape, x0: int, y0: int, h: int, w: int) -> "BlockInpainting":
        """KS2021's ``inpainting(x_size, x0, y0, h, w)``: a hole of 2⌊h/2⌋ × 2⌊w/2⌋ pixels centred at (x0, y0),
        i.e. rows x0 − ⌊h/2⌋ … x0 + ⌊h/2⌋ − 1 and columns y0 − ⌊w/2⌋ … y0 + ⌊w/2⌋ − 1 (odd h, w lose a pixel).

        Our reference notes give the centre and the even size but not which of x0, y0 indexes rows; we take x0
        as the row (first spatial axis) and y0 as the column. They do not record the demo's (x0, y0) either."""
        h2, w2 = int(h) // 2, int(w) // 2
        if h2 < 1 or w2 < 1:
            raise ValueError(f"{cls.name}: the released hole has 2⌊h/2⌋ × 2⌊w/2⌋ pixels, so h and w must be ≥ 2, "
                             f"got h={h}, w={w}")
        return cls(shape, box=(int(x0) - h2, int(y0) - w2, 2 * h2, 2 * w2))


def _random_pixel_mask(shape, m: int, generator) -> torch.Tensor:
    C, H, W = shape
    keep = torch.randperm(C * H * W, generator=generator)[:m]
    mask = torch.zeros(C * H * W, dtype=torch.bool)
    mask[keep] = True
    return mask.view(C, H, W)


class RandomPixels(PixelMask):
    """Random missing pixels: M = the columns e_i of the kept entries of the (C, H, W) tensor (a
    :class:`PixelMask`).

    - ``RandomPixels(shape, keep_fraction, generator)``: exactly m = n_measurements(p, C·H·W) entries, drawn
      uniformly without replacement over the whole tensor, so each channel gets its own pixel set (as KS2021);
    - ``RandomPixels(mask=mask)``: exactly the entries where ``mask`` is True (shape (C, H, W), or (H, W) for the
      same pixels in every channel; ``shape``, if given, must agree).

    :meth:`as_released` keeps ⌊p·N⌋ entries, the released count.
    """

    name = "random pixels"

    def __init__(self, shape=None, keep_fraction: float | None = None, generator: torch.Generator | None = None,
                 *, mask=None):
        if mask is not None:
            if keep_fraction is not None or generator is not None:
                raise ValueError(f"{self.name}: give either keep_fraction (a random mask) or mask (an explicit "
                                 "one), not both")
            mask = _as_pixel_mask(mask, shape, self.name)
        else:
            if shape is None or keep_fraction is None:
                raise ValueError(f"{self.name}: give shape and keep_fraction, e.g. RandomPixels((1, 28, 28), 0.2), "
                                 "or an explicit mask=")
            shape = _check_shape(shape, self.name)
            mask = _random_pixel_mask(shape, n_measurements(keep_fraction, math.prod(shape)), generator)
        super().__init__(mask)

    @classmethod
    def as_released(cls, shape, keep_fraction: float, generator: torch.Generator | None = None) -> "RandomPixels":
        """KS2021's ``rand_pixels(x_size, p)``: exactly ⌊p·N⌋ entries of the (C, H, W) tensor (``int``, not
        rounded). Same drawing as the convenient form, so its mask is the first ⌊p·N⌋ entries of the same
        permutation (the released code used its own global random state; notes silent on its exact draw)."""
        shape = _check_shape(shape, cls.name)
        p = _check_fraction(keep_fraction)
        m = int(p * math.prod(shape))
        if m < 1:
            raise ValueError(f"{cls.name}: ⌊p·N⌋ = 0 for p = {p} and N = {math.prod(shape)}; raise keep_fraction")
        return cls(mask=_random_pixel_mask(shape, m, generator))


class BlockAverageSR(LinearOperator):
    """Super-resolution by s×s block averaging: Mᵀx = s · (block mean) = (block sum)/s; M v replicates v/s over
    each block. M's columns are the indicator images of the s×s blocks divided by s (orthonormal); the
    low-resolution image is Mᵀx / s. This is KS2021's released ``super_resolution`` operator."""

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


def _fft_grid(H: int, W: int):
    """Flat indices k = k1·W + k2 of the unshifted FFT grid, their conjugates −k and the integer squared radius
    H²W²·|f|² = (|k1|·W)² + (|k2|·H)² (|k1| = min(k1, H − k1)), exact for tie-breaking."""
    k = torch.arange(H * W)
    k1, k2 = k // W, k % W
    conj = ((-k1) % H) * W + ((-k2) % W)
    a1, a2 = torch.minimum(k1, H - k1), torch.minimum(k2, W - k2)
    r2 = (a1 * W) ** 2 + (a2 * H) ** 2
    return k, conj, r2


class SpectralLowPass(LinearOperator):
    """Ideal low-pass ("deblurring", spectral super-resolution): measure a conjugate-symmetric set of Fourier
    coefficients of each channel, as real orthonormal numbers.

    The matrix: with X = FFT2(x, norm="ortho") (unitary) per channel, Mᵀx lists, per channel, X_k for each kept
    self-conjugate frequency (k ≡ −k: the DC and Nyquist ones; X_k is real), then √2 Re X_k and √2 Im X_k for one
    member k of each kept conjugate pair (k, −k), then (at most one) √2 Re X_k of a "half pair" (below). These are
    inner products with orthonormal real images (cosines and sines), so MᵀM = I and, without a half pair,
    P = MMᵀ is the exact real projector x ↦ Re IFFT(mask ⊙ FFT x). m = C · (number of kept frequencies).

    Three ways to give the frequencies (in the unshifted FFT grid, the same for every channel):

    - ``frequencies``: an iterable of integer (k1, k2) (negative values allowed, taken modulo H, W);
    - ``mask``: a boolean (H, W) tensor;
    - ``keep_fraction`` p: the n = n_measurements(p, H·W) frequencies of smallest radius |f| (f in cycles/pixel,
      (k1/H, k2/W) with k signed). Frequencies are taken in conjugate units (a pair (k, −k), or one
      self-conjugate k) ordered by radius; units at equal radius are ordered by the row-major index k1·W + k2 of
      their first member (so (0, ±1) comes before (±1, 0)). Units are taken in this order until the next one
      does not fit in n. If one dimension is then left (the next unit is a pair), only that pair's cosine
      √2 Re X_k is measured (``half_pair`` holds that k):
      the count is then exactly n, MᵀM = I and P is still an orthogonal projector, but on that one pair P keeps
      the cosine and drops the sine instead of being a Fourier multiplier. This happens when n is even and the
      set holds an odd number of self-conjugate frequencies (always the case for odd H and W: only the DC).

    A given set must be conjugate-symmetric (k kept ⇔ −k kept); the released, non-symmetric rectangle is
    :class:`ReleasedSpectralLowPass` (``SpectralLowPass.as_released``). ``mask`` holds the fully kept
    frequencies (without the half pair), ``cutoff`` the largest kept radius in cycles/pixel.
    """

    name = "spectral low-pass"

    def __init__(self, shape, keep_fraction: float | None = None, *, frequencies=None, mask=None):
        super().__init__(shape)
        C, H, W = self.shape
        if sum(a is not None for a in (keep_fraction, frequencies, mask)) != 1:
            raise ValueError(f"{self.name}: give exactly one of keep_fraction, frequencies or mask")
        k, conj, r2 = _fft_grid(H, W)
        half = k[:0]
        if keep_fraction is not None:
            n = n_measurements(keep_fraction, H * W)
            units = torch.unique(torch.minimum(k, conj))                    # sorted first members
            units = units[torch.argsort(r2[units], stable=True)]            # by radius, ties by index
            size = torch.where(conj[units] == units, 1, 2)
            n_take = int((size.cumsum(0) <= n).sum())
            taken = units[:n_take]
            kept = torch.zeros(H * W, dtype=torch.bool)
            kept[taken] = True
            kept[conj[taken]] = True
            if int(size[:n_take].sum()) < n:                                # one dimension left, next is a pair
                half = units[n_take:n_take + 1]
        else:
            if frequencies is not None:
                try:
                    f = torch.as_tensor([(int(a), int(b)) for a, b in frequencies], dtype=torch.long)
                except (TypeError, ValueError):
                    raise ValueError(f"{self.name}: frequencies must be integer pairs (k1, k2), "
                                     f"got {frequencies!r}") from None
                kept = torch.zeros(H * W, dtype=torch.bool)
                if f.numel():
                    kept[(f[:, 0] % H) * W + f[:, 1] % W] = True
            else:
                mask = torch.as_tensor(mask)
                if tuple(mask.shape) != (H, W) or mask.dtype != torch.bool:
                    raise ValueError(f"{self.name}: mask must be a boolean tensor of shape (H, W) = {(H, W)} "
                                     f"(unshifted FFT grid), got {mask.dtype} of shape {tuple(mask.shape)}")
                kept = mask.cpu().flatten().clone()
            if not kept.any():
                raise ValueError(f"{self.name}: no frequency kept; use NoMeasurement for synthesis")
            bad = (kept & ~kept[conj]).nonzero().flatten()
            if bad.numel():
                b = int(bad[0])
                raise ValueError(
                    f"{self.name}: the frequency set is not conjugate-symmetric: ({b // W}, {b % W}) is kept but "
                    f"its conjugate ({(-(b // W)) % H}, {(-(b % W)) % W}) is not ({bad.numel()} such); add the "
                    "conjugates, or use ReleasedSpectralLowPass for the released non-symmetric rectangle")
        self.mask = kept.view(H, W)
        self.self_conj = k[kept & (conj == k)]
        self.pair = k[kept & (k < conj)]
        self.pair_conj = conj[self.pair]
        self.half_pair = half
        self.half_pair_conj = conj[half]
        r = (r2[kept | torch.isin(k, half)].max().double().sqrt() / (H * W)).item()
        self.cutoff = float(r)
        self.m_per_channel = int(self.self_conj.numel() + 2 * self.pair.numel() + half.numel())
        self.m = C * self.m_per_channel

    @classmethod
    def as_released(cls, shape, keep_fraction: float) -> "ReleasedSpectralLowPass":
        """KS2021's released ``spectral_super_resolution``: returns a :class:`ReleasedSpectralLowPass`, which is
        *not* a SpectralLowPass and has no orthonormal columns."""
        return ReleasedSpectralLowPass(shape, keep_fraction)

    def _M_T(self, x):
        X = torch.fft.fft2(x, norm="ortho").flatten(-2)              # (B, C, HW) complex
        a = X[..., self.self_conj.to(x.device)].real
        p = X[..., self.pair.to(x.device)] * math.sqrt(2)
        c = X[..., self.half_pair.to(x.device)].real * math.sqrt(2)
        return torch.cat([a, p.real, p.imag, c], dim=-1).flatten(1)

    def _M(self, v):
        C, H, W = self.shape
        v = v.view(v.shape[0], C, self.m_per_channel)
        n_sc, n_p = self.self_conj.numel(), self.pair.numel()
        a, b, c = v[..., :n_sc], v[..., n_sc:n_sc + n_p], v[..., n_sc + n_p:n_sc + 2 * n_p]
        hp = v[..., n_sc + 2 * n_p:]
        ctype = torch.complex128 if v.dtype == torch.float64 else torch.complex64
        X = torch.zeros(v.shape[0], C, H * W, dtype=ctype, device=v.device)
        X[..., self.self_conj.to(v.device)] = a.to(ctype)
        z = torch.complex(b, c) / math.sqrt(2)
        X[..., self.pair.to(v.device)] = z.to(ctype)
        X[..., self.pair_conj.to(v.device)] = z.conj().to(ctype)
        X[..., self.half_pair.to(v.device)] = (hp / math.sqrt(2)).to(ctype)
        X[..., self.half_pair_conj.to(v.device)] = (hp / math.sqrt(2)).to(ctype)
        return torch.fft.ifft2(X.view(-1, C, H, W), norm="ortho").real.to(v.dtype)


class ReleasedSpectralLowPass(LinearOperator):
    """KS2021's released ``spectral_super_resolution(x_size, p)``, as our reference notes describe it. **Its M has
    no orthonormal columns and MMᵀ is not a projector.**

    Kept frequencies (unshifted FFT grid, every channel): rows [0, x_f) ∪ [H − x_f, H) × columns
    [0, y_f) ∪ [W − y_f, W), with x_f = ⌊round(H·√p)/2⌋ and y_f = ⌊round(H·W·p/x_f)/4⌋ (``round`` as Python's,
    half to even; the notes give the formula, not the rounding of ties). On 60 × 60 with p = 0.2: x_f = y_f = 13,
    26 × 26 = 676 coefficients per channel, 18.8 % of them (``coefficient_fraction``).

    The released Mᵀ returns the complex masked spectrum mask ⊙ FFT2_ortho(x) and M(v) = Re IFFT2_ortho(v). Here
    the measurements are real: per channel the real parts of the K = ``n_coefficients`` kept coefficients, then
    their imaginary parts, so m = 2·C·K (``fraction`` = m/N counts real numbers; the released code's "fraction"
    is ``coefficient_fraction``). M is the exact adjoint of Mᵀ, and M(Mᵀx) is the released Re IFFT(mask ⊙ FFT x).

    How it differs from an orthonormal operator (row −x_f ≡ H − x_f is kept but row x_f is not, same for
    columns):

    - P = MMᵀ is the Fourier multiplier w_k = (mask_k + mask_{−k})/2 ∈ {0, ½, 1}: each kept frequency whose
      conjugate is dropped (``unpaired``; 51 per channel at 60 × 60) puts weight ½ on itself and on its
      conjugate (the notes' "102 unpaired coefficients"). So P² ≠ P: ‖P²x − Px‖/‖Px‖ ≈ 0.099 for white noise
      at 60 × 60 (the notes: "about 0.096").
    - MᵀM ≠ I: the imaginary part of a self-conjugate coefficient is always 0, and the coefficients of a kept
      pair (k, −k) repeat each other.

    :meth:`pseudo_inverse` is the exact least-squares inverse (it doubles the unpaired coefficients), not M v;
    :meth:`init_mean` and :meth:`project` use M as the released sampler does.
    """

    name = "spectral low-pass (as released)"

    def __init__(self, shape, keep_fraction: float):
        super().__init__(shape)
        C, H, W = self.shape
        p = _check_fraction(keep_fraction)
        x_f = round(H * math.sqrt(p)) // 2
        if x_f < 1:
            raise ValueError(f"{self.name}: x_f = ⌊round(H·√p)/2⌋ = 0 for H = {H}, p = {p}; raise keep_fraction")
        y_f = math.floor(round(H * W * p / x_f) / 4)
        if y_f < 1:
            raise ValueError(f"{self.name}: y_f = ⌊round(H·W·p/x_f)/4⌋ = 0 for {H}×{W}, p = {p}; "
                             "raise keep_fraction")
        rows = torch.zeros(H, dtype=torch.bool)
        rows[:x_f] = True
        rows[H - x_f:] = True
        cols = torch.zeros(W, dtype=torch.bool)
        cols[:y_f] = True
        cols[W - y_f:] = True
        self.x_f, self.y_f = x_f, y_f
        self.mask = rows[:, None] & cols[None, :]
        k, conj, _ = _fft_grid(H, W)
        kept = self.mask.flatten()
        self.index = k[kept]
        self.unpaired = (kept & ~kept[conj]).view(H, W)
        self.n_coefficients = C * int(self.index.numel())
        self.m = 2 * self.n_coefficients

    @property
    def coefficient_fraction(self) -> float:
        """Kept complex coefficients / N, the released code's fraction (0.188 at 60 × 60, p = 0.2)."""
        return self.n_coefficients / self.N

    def _M_T(self, x):
        X = torch.fft.fft2(x, norm="ortho").flatten(-2)[..., self.index.to(x.device)]
        return torch.cat([X.real, X.imag], dim=-1).flatten(1)

    def _spectrum(self, v):
        C, H, W = self.shape
        K = self.index.numel()
        v = v.view(v.shape[0], C, 2 * K)
        ctype = torch.complex128 if v.dtype == torch.float64 else torch.complex64
        X = torch.zeros(v.shape[0], C, H * W, dtype=ctype, device=v.device)
        X[..., self.index.to(v.device)] = torch.complex(v[..., :K], v[..., K:]).to(ctype)
        return X.view(-1, C, H, W)

    def _M(self, v):
        return torch.fft.ifft2(self._spectrum(v), norm="ortho").real.to(v.dtype)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """M Mᵀ x = Re IFFT(mask ⊙ FFT x), the released "projection"; it is not idempotent (see the class)."""
        return self.M(self.M_T(x))

    def pseudo_inverse(self, v: torch.Tensor) -> torch.Tensor:
        """The least-squares image (Mᵀ)⁺ v = Re IFFT(c ⊙ V), c = 2 on unpaired kept frequencies, 1 elsewhere.
        Unlike M v it reproduces consistent measurements: Mᵀ (Mᵀ)⁺ Mᵀ x = Mᵀ x."""
        if v.ndim != 2 or v.shape[1] != self.m:
            raise ValueError(f"{self.name}: expected measurements of shape (B, {self.m}), got {tuple(v.shape)}")
        X = self._spectrum(v) * (1 + self.unpaired.to(v.device))
        return torch.fft.ifft2(X, norm="ortho").real.to(v.dtype)


class CompressiveSensing(LinearOperator):
    """Compressive sensing with an orthonormal basis U (n_b × m_b, UᵀU = I), applied block-wise.

    The image is cut into non-overlapping bc × bh × bw blocks (``block``: None = each channel's whole image,
    an int b = b × b, (bh, bw), or (bc, bh, bw) with bc dividing C; (C, H, W) is one block for the whole tensor).
    Every block, flattened row-major (channel, row, column), is measured with the same U:
    M = blockdiag(U, …, U) has orthonormal columns and costs O(N·m_b) instead of O(N·m).

    - ``keep_fraction`` p: U = the Q of the QR decomposition of an n_b × m_b standard Gaussian matrix (float64,
      from ``generator``), m_b = n_measurements(p, n_b);
    - ``basis``: the given U, any n_b × m_b matrix with orthonormal columns (checked to ``ORTHONORMAL_ATOL``),
      n_b = bc·bh·bw; stored as float64.

    ``block=None`` with one channel is the dense operator of KS2021 (fine for MNIST, too big for large images);
    :meth:`as_released` is the released one on any number of channels.
    """

    name = "compressive sensing"

    def __init__(self, shape, keep_fraction: float | None = None, block: int | tuple | None = None,
                 generator: torch.Generator | None = None, *, basis=None):
        super().__init__(shape)
        C, H, W = self.shape
        if block is None:
            bc, bh, bw = 1, H, W
        elif isinstance(block, numbers.Integral):
            bc, bh, bw = 1, int(block), int(block)
        elif len(block) == 2:
            bc, (bh, bw) = 1, (int(b) for b in block)
        elif len(block) == 3:
            bc, bh, bw = (int(b) for b in block)
        else:
            raise ValueError(f"{self.name}: block must be None, an int, (bh, bw) or (bc, bh, bw), got {block!r}")
        if min(bc, bh, bw) < 1 or C % bc or H % bh or W % bw:
            raise ValueError(f"{self.name}: block {bc}×{bh}×{bw} must tile the image {C}×{H}×{W}; crop the image "
                             "or change the block")
        self.bc, self.bh, self.bw = bc, bh, bw
        n_b = bc * bh * bw
        if (keep_fraction is None) == (basis is None):
            raise ValueError(f"{self.name}: give exactly one of keep_fraction (a random basis) or basis")
        if basis is not None:
            if generator is not None:
                raise ValueError(f"{self.name}: a generator is used only to draw a random basis; drop it")
            U = torch.as_tensor(basis).detach().to("cpu", torch.float64)
            if U.ndim != 2 or U.shape[0] != n_b or U.shape[1] < 1:
                raise ValueError(f"{self.name}: basis must have shape (n_b, m_b) with n_b = {n_b} entries per "
                                 f"{bc}×{bh}×{bw} block, got {tuple(U.shape)}; pass block= to match it (e.g. "
                                 f"block={tuple(self.shape)} for one basis over the whole tensor)")
            err = (U.T @ U - torch.eye(U.shape[1], dtype=torch.float64)).abs().max().item()
            if not err <= ORTHONORMAL_ATOL:
                raise ValueError(f"{self.name}: the basis columns are not orthonormal (max |UᵀU − I| = {err:.2e} "
                                 f"> {ORTHONORMAL_ATOL:g}); orthonormalise it, e.g. torch.linalg.qr(basis).Q")
            self.U = U.clone()
        else:
            m_b = n_measurements(keep_fraction, n_b)
            g = torch.randn(n_b, m_b, generator=generator, dtype=torch.float64)
            self.U = torch.linalg.qr(g).Q                                  # (n_b, m_b) float64, UᵀU = I
        self.m_block = int(self.U.shape[1])
        self.block = (bc, bh, bw)
        self.n_blocks = (C // bc) * (H // bh) * (W // bw)
        self.m = self.n_blocks * self.m_block

    @classmethod
    def as_released(cls, shape, keep_fraction: float,
                    generator: torch.Generator | None = None) -> "CompressiveSensing":
        """KS2021's ``random_basis(x_size, p)``: one dense basis over the whole (C, H, W) tensor (vec(x) row-major)
        with ⌊p·N⌋ columns (``int``, not rounded), the Q of the QR of a Gaussian N × ⌊p·N⌋ matrix. The notes are
        silent on the released draw's dtype and random state, so the matrix itself is not reproduced."""
        shape = _check_shape(shape, cls.name)
        p = _check_fraction(keep_fraction)
        N = math.prod(shape)
        m = int(p * N)
        if m < 1:
            raise ValueError(f"{cls.name}: ⌊p·N⌋ = 0 for p = {p} and N = {N}; raise keep_fraction")
        U = torch.linalg.qr(torch.randn(N, m, generator=generator, dtype=torch.float64)).Q
        return cls(shape, block=shape, basis=U)

    def _blocks(self, x):
        B, C, H, W = x.shape
        t = x.reshape(B, C // self.bc, self.bc, H // self.bh, self.bh, W // self.bw, self.bw)
        return t.permute(0, 1, 3, 5, 2, 4, 6).reshape(B, self.n_blocks, self.bc * self.bh * self.bw)

    def _M_T(self, x):
        return (self._blocks(x) @ self.U.to(x)).flatten(1)

    def _M(self, v):
        C, H, W = self.shape
        blocks = v.view(v.shape[0], self.n_blocks, self.m_block) @ self.U.to(v).T
        t = blocks.view(-1, C // self.bc, H // self.bh, W // self.bw, self.bc, self.bh, self.bw)
        return t.permute(0, 1, 4, 2, 5, 3, 6).reshape(-1, C, H, W)


class LinearConstraints(LinearOperator):
    """Any set of linear constraints Vᵀx = c (V an N × k matrix of constraint vectors, rank k), as an operator with
    orthonormal columns: V = M R (thin QR, R upper triangular and invertible), so

        Mᵀx = R⁻ᵀ Vᵀx = R⁻ᵀ c,        MMᵀ = V (VᵀV)⁻¹ Vᵀ  (the projector onto span V).

    It turns physical constraints into measurements for the projected sampler: observed points (columns e_i),
    a conserved total (the all-ones column), fixed boundary values, coarse averages, mixed in one V.
    ``measurements(c)`` maps the constraint values c = Vᵀx (B, k) to x_c = Mᵀx; ``constraint_values(x)`` = Vᵀx.
    Dense: costs O(N·k) per call (fine for signals and fields of a few thousand entries).
    ``vectors`` may be given as (k, C, H, W) constraint images or as the N × k matrix. A constraint implied by
    the others (a rank below k) is an error that names the tolerance, unless ``drop_dependent=True``: then the
    vectors are scanned in order and each one lying in the span of those kept before it (relative residual below
    ``rank_tol``) is dropped (``kept`` lists the indices kept; ``measurements`` reads only their values, which is
    exact for consistent constraint values, e.g. a conservation law that the measured data already imply).
    """

    name = "linear constraints"

    def __init__(self, shape, vectors, rank_tol: float = 1e-8, drop_dependent: bool = False):
        super().__init__(shape)
        V = torch.as_tensor(vectors).detach().to("cpu", torch.float64)
        if V.ndim == 4 and tuple(V.shape[1:]) == self.shape:
            V = V.flatten(1).T
        if V.ndim != 2 or V.shape[0] != self.N or V.shape[1] < 1:
            raise ValueError(f"{self.name}: vectors must be (k, {', '.join(map(str, self.shape))}) constraint images "
                             f"or an ({self.N}, k) matrix with k >= 1, got {tuple(V.shape)}")
        self.k = int(V.shape[1])
        self.kept = torch.arange(self.k)
        if drop_dependent:
            self.kept = _independent_columns(V, rank_tol)
        self.V = V                                     # every given vector (dropped ones included)
        Q, R = torch.linalg.qr(V[:, self.kept])
        d = R.diagonal().abs()
        if not (d > rank_tol * d.max()).all():
            raise ValueError(f"{self.name}: the {V.shape[1]} constraint vectors are linearly dependent (|R_ii| down to "
                             f"{d.min().item():.2e} relative to {d.max().item():.2e}, tolerance {rank_tol:g}); drop "
                             "the redundant ones")
        self.U, self.R = Q, R
        self.m = int(self.kept.numel())

    def _M_T(self, x):
        return x.flatten(1) @ self.U.to(x)

    def _M(self, v):
        return (v @ self.U.to(v).T).view(-1, *self.shape)

    def constraint_values(self, x: torch.Tensor) -> torch.Tensor:
        """c = Vᵀx for every given constraint vector (dropped ones included), (B, k)."""
        return x.flatten(1) @ self.V.to(x)

    def measurements(self, c: torch.Tensor) -> torch.Tensor:
        """x_c = Mᵀx = R⁻ᵀ c from the constraint values c = Vᵀx of every given vector, (B, k)."""
        if c.ndim != 2 or c.shape[1] != self.k:
            raise ValueError(f"{self.name}: expected constraint values of shape (B, {self.k}), got {tuple(c.shape)}")
        c = c[:, self.kept.to(c.device)]
        sol = torch.linalg.solve_triangular(self.R.T.to(c.device), c.to(torch.float64).T, upper=False)
        return sol.T.to(c.dtype)


def _independent_columns(V: torch.Tensor, rank_tol: float) -> torch.Tensor:
    """Indices of the columns of V kept by a greedy scan: column j is kept when its residual after projection on the
    kept columns (Gram–Schmidt, applied twice for stability) exceeds ``rank_tol`` times its norm."""
    basis, kept = [], []
    for j in range(V.shape[1]):
        v = V[:, j]
        r = v.clone()
        if basis:
            Q = torch.stack(basis, 1)
            for _ in range(2):
                r = r - Q @ (Q.T @ r)
        if r.norm() > rank_tol * v.norm().clamp_min(1e-300):
            basis.append(r / r.norm())
            kept.append(j)
    if not kept:
        raise ValueError("linear constraints: every constraint vector is zero")
    return torch.tensor(kept)


def orthonormality_errors(op: LinearOperator, n_probe: int = 4, generator: torch.Generator | None = None,
                          dtype=torch.float64) -> dict:
    """Relative errors of MᵀM = I, (MMᵀ)² = MMᵀ and the adjoint identity ⟨Mᵀx, v⟩ = ⟨x, Mv⟩ on random probes.
    All three are at rounding level for every operator except :class:`ReleasedSpectralLowPass` (adjoint only)."""
    x = torch.randn(n_probe, *op.shape, generator=generator, dtype=dtype)
    v = torch.randn(n_probe, op.m, generator=generator, dtype=dtype)
    rel = lambda a, b: ((a - b).norm() / b.norm().clamp_min(1e-30)).item()
    Px = op.project(x)
    return {"MtM_identity": rel(op.M_T(op.M(v)), v) if op.m else 0.0,
            "projector_idempotent": rel(op.project(Px), Px) if op.m else 0.0,
            "adjoint": abs((op.M_T(x) * v).sum().item() - (x * op.M(v)).sum().item())
            / max((x.norm() * v.norm()).item(), 1e-30)}


def image_gradient(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences of images (..., H, W) along columns and rows, zero at the last column / row
    (Neumann boundary): the ∇ of total variation."""
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1))
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    return dx, dy


def image_divergence(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """div p = −∇ᵀp for fields whose last column (px) and last row (py) are zero, as :func:`image_gradient`
    makes them: ⟨∇x, p⟩ = −⟨x, div p⟩."""
    return (px - F.pad(px[..., :, :-1], (1, 0))) + (py - F.pad(py[..., :-1, :], (0, 0, 1, 0)))


def tv_gradient(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Gradient of the smoothed isotropic TV Σ sqrt(|∇x|² + ε²) of images (..., H, W) (forward differences,
    Neumann boundary): −div(∇x / sqrt(|∇x|² + ε²))."""
    dx, dy = image_gradient(x)
    norm = torch.sqrt(dx ** 2 + dy ** 2 + eps ** 2)
    return -image_divergence(dx / norm, dy / norm)


@torch.no_grad()
def tv_reconstruct(op: LinearOperator, xc: torch.Tensor, n_iter: int = 300, eps_start: float = 0.1,
                   eps_end: float = 0.005, init_value: float = 0.5) -> torch.Tensor:
    """Classical baseline: min_x TV_ε(x) subject to Mᵀx = x_c, by projected gradient descent
    x ← Π(x − (ε/8)·∇TV_ε(x)), Π(x) = x − M(Mᵀx − x_c), with ε decreased geometrically (continuation).
    Starts from KS2021's initial mean; result clamped to [0, 1] after the last projection."""
    x = op.init_mean(xc, init_value)
    for i in range(n_iter):
        eps = eps_start * (eps_end / eps_start) ** (i / max(n_iter - 1, 1))
        x = x - (eps / 8.0) * tv_gradient(x, eps)
        x = x - op.M(op.M_T(x) - xc)
    return x.clamp(0, 1)


def circular_gaussian_blur(shape, std: float) -> torch.Tensor:
    """The dense (d, d) float64 matrix A of a Gaussian blur with circular boundary, d = prod(shape).

    1-D signals, shape (d,): A_ij = k(|i − j|_d) / Σ_r k(r), k(r) = exp(−r² / 2std²), |r|_d = min(r mod d, d − r mod d)
    the circular distance (a symmetric circulant). Images, shape (C, H, W): the same blur along rows and along
    columns of each channel, A = I_C ⊗ A_H ⊗ A_W (the kernel is not truncated). A is symmetric with eigenvalues in
    (0, 1] (the DFT of the kernel), so b = Ax + n is a well-defined but ill-conditioned inverse problem."""
    if not (isinstance(std, numbers.Real) and std > 0):
        raise ValueError(f"std must be a positive number of pixels, got {std!r}")
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise ValueError(f"circular_gaussian_blur: shape must be (d,) for 1-D signals or (C, H, W) for images, got {shape}")

    def one_axis(n: int) -> torch.Tensor:
        r = torch.arange(n, dtype=torch.float64)
        r = torch.minimum(r, n - r)
        row = torch.exp(-0.5 * (r / std) ** 2)
        row = row / row.sum()
        idx = (torch.arange(n)[None, :] - torch.arange(n)[:, None]) % n
        return row[idx]

    if len(shape) == 1:
        return one_axis(shape[0])
    C, H, W = shape
    return torch.kron(torch.eye(C, dtype=torch.float64), torch.kron(one_axis(H), one_axis(W)))
