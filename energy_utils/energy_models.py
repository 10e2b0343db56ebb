"""Energies U_θ(y, Σ) ≈ −log p(y | Σ) conditioned on a pixel- or Fourier-diagonal noise covariance.

Every network here has the inner-product form of dual score matching (Guth et al. 2025; Zilberstein et al. 2026)

    U_θ(y, Σ) = ½ ⟨y, s_θ(y, Σ)⟩,

and Σ enters every block as a multiplicative gain, h ← SiLU(Norm(h) ⊙ (1 + A_ℓ(e_Σ))): a spatial gain map for
pixel-diagonal Σ (the variance map is embedded by a small conv net and resized to each block), one gain per
channel for Fourier-diagonal Σ (the spectrum is embedded and globally pooled).

Σ is embedded through its **log-variances**, not the variances: training variances span ~10 decades, where
raw values (or sinusoids of them, as in the released code) cannot separate 1e-9 from 1e-6; in log coordinates a
multiplicative change of noise level is an O(1) additive change, and the autograd leaf log v gives directly the
scale-free covariance score v ∂U/∂v = ∂U/∂log v that A-CSM regresses, with no 1/v blow-up in float32.

:func:`energy_and_scores` returns U, ∇_yU and ∂U/∂log v from **one** autograd call; the denoiser is
D(y) = y − Σ∇_yU (anisotropic Miyasawa/Tweedie). :class:`MixtureEnergy` is the exact energy −log p(y|Σ) of a
Gaussian mixture, with the same interface, used as the oracle.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .controls import GaussianPrior
from .covariances import DiagCov, symmetrize_spectrum
from .networks import count_parameters  # noqa: F401  (re-exported: energies are networks too)

LOGVAR_SCALE = 8.0   # log-variances are divided by this before embedding (ln 1e3 ≈ 6.9)


class EnergyModel(nn.Module):
    """Base class: subclasses implement ``s_theta(y, cov)``; the energy is ½⟨y, s_θ⟩ per sample, (B,)."""

    def s_theta(self, y: torch.Tensor, cov: DiagCov) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, y: torch.Tensor, cov: DiagCov) -> torch.Tensor:
        return 0.5 * (y * self.s_theta(y, cov)).flatten(1).sum(1)

    energy = forward


class Scores(NamedTuple):
    energy: torch.Tensor        # (B,)
    grad_y: torch.Tensor        # ∇_y U, shape of y
    grad_logvar: torch.Tensor | None   # ∂U/∂log v = v ∂U/∂v, shape of the variance map (None if not asked)


def energy_and_scores(model: nn.Module, y: torch.Tensor, cov: DiagCov, create_graph: bool = False,
                      cov_score: bool = True) -> Scores:
    """U, ∇_yU and (optionally) ∂U/∂log v from one ``torch.autograd.grad`` call.

    ``create_graph=True`` keeps the graph so a loss on the scores can be backpropagated (training).
    The raw covariance score is ∇_vU = grad_logvar / v. A model with its own ``scores(y, cov, create_graph,
    cov_score)`` method (e.g. :class:`GaussianResidualEnergy`, whose base has closed-form scores) computes them.
    """
    if callable(getattr(model, "scores", None)):
        return model.scores(y, cov, create_graph, cov_score)
    y = y.detach().requires_grad_(True) if not y.requires_grad else y
    if cov_score:
        cov = cov.requires_grad_()
    with torch.enable_grad():
        u = model(y, cov)
        if u.dtype in (torch.float16, torch.bfloat16):     # a reduced-precision energy (autocast): use it in float32
            u = u.float()
        inputs = (y, cov.log_var) if cov_score else (y,)
        grads = torch.autograd.grad(u.sum(), inputs, create_graph=create_graph)
    if not create_graph:
        u = u.detach()
    return Scores(u, grads[0], grads[1] if cov_score else None)


def _basis_order(fourier: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A row order with the pixel-type Σ first: ``(order, inverse, n_pixel)``, so ``x[order][:n_pixel]`` are the
    pixel rows, ``x[order][n_pixel:]`` the Fourier rows and ``x[order][inverse]`` is ``x`` again. The networks
    run each basis' Σ-embedding only on its own rows (computing both on every row and selecting one doubles
    the Σ-branch's cost, which the covariance score of A-CSM backpropagates through twice)."""
    pix, four = (~fourier).nonzero()[:, 0], fourier.nonzero()[:, 0]
    order = torch.cat([pix, four])
    return order, torch.argsort(order), pix.numel()


def denoise(model: nn.Module, y: torch.Tensor, cov: DiagCov) -> torch.Tensor:
    """D(y, Σ) = y − Σ ∇_y U(y, Σ), the MMSE estimate E[x | y, Σ] for the true energy."""
    g = energy_and_scores(model, y, cov, cov_score=False).grad_y
    return (y - cov.apply(g)).detach()


# ---------------------------------------------------------------------------------------------------------
# Vectors: a gain-modulated residual MLP
# ---------------------------------------------------------------------------------------------------------
class _CovEmbedMLP(nn.Module):
    """log-variances (B, d) → embedding (B, E); one instance per basis (pixel / Fourier)."""

    def __init__(self, d: int, emb: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d + 1, emb), nn.SiLU(), nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))

    def forward(self, lv: torch.Tensor) -> torch.Tensor:
        z = lv / LOGVAR_SCALE
        return self.net(torch.cat([z, z.mean(1, keepdim=True)], 1))


class VectorEnergy(EnergyModel):
    """U_θ(y, Σ) = ½⟨y, s_θ⟩ on R^d, u = P y, P = (σ_d² I + Σ)^{−½}, r = ‖u‖/√d, and

        s_θ = P (u + g/r + 2a u/(d r²)),   so   U_θ = ½‖u‖² + ½⟨u, g⟩/r + a,

    with (g, a) = trunk(u, log r, e_Σ) ∈ R^d × R. P is an input preconditioning (EDM's c_in, in Σ's basis) so
    the trunk sees O(1) inputs at every noise level; the ``u`` term starts the energy at the Gaussian
    ½ yᵀ(σ_d²I + Σ)⁻¹y. The 1/r factors matter: a bounded s forces U(0, Σ) = ½⟨0, s⟩ = 0 for every Σ, while
    −log p(0 | Σ) varies with Σ, so no normalised energy of that form exists when y = 0 lies among the data
    (d = 2 here). The paper's UNet escapes through normalisation layers and because 0 is far from the typical
    set in high dimension; the û-aligned term 2a u/(d r²) is the explicit version (a Σ-dependent offset in
    U is then one scalar output, not a direction the network must align with u). Trunk: residual blocks
    h ← h + W₂ SiLU(LN(W₁h) ⊙ (1 + A_ℓ e_Σ)).
    """

    def __init__(self, d: int, width: int = 128, depth: int = 3, emb: int = 64, data_var: float = 1.0):
        super().__init__()
        self.d, self.data_var = d, data_var
        self.embed = nn.ModuleDict({"pixel": _CovEmbedMLP(d, emb), "fourier": _CovEmbedMLP(d, emb)})
        self.inp = nn.Linear(d + 1, width)
        self.lin1 = nn.ModuleList([nn.Linear(width, width) for _ in range(depth)])
        self.lin2 = nn.ModuleList([nn.Linear(width, width) for _ in range(depth)])
        self.norm = nn.ModuleList([nn.LayerNorm(width, elementwise_affine=False) for _ in range(depth)])
        self.gain = nn.ModuleList([nn.Linear(emb, width) for _ in range(depth + 1)])
        self.out = nn.Linear(width, d + 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def embedding(self, cov: DiagCov) -> torch.Tensor:
        """e_Σ (B, E): each row embedded by its own basis' MLP (pixel or Fourier)."""
        lv = cov.symmetrized_log_var()
        order, inverse, n = _basis_order(cov.fourier)
        lv = lv[order]
        return torch.cat([self.embed["pixel"](lv[:n]), self.embed["fourier"](lv[n:])])[inverse]

    def s_theta(self, y, cov):
        if y.ndim != 2 or y.shape[1] != self.d:
            raise ValueError(f"VectorEnergy expects y of shape (B, {self.d}), got {tuple(y.shape)}")
        lv = cov.symmetrized_log_var()
        pre = (self.data_var + lv.exp()).rsqrt()
        u = cov.apply_multiplier(y, pre)
        r = (u.pow(2).mean(1, keepdim=True) + 1e-6).sqrt()
        e = self.embedding(cov)
        h = self.inp(torch.cat([u, r.log()], 1)) * (1 + self.gain[0](e))
        for lin1, lin2, norm, gain in zip(self.lin1, self.lin2, self.norm, self.gain[1:]):
            h = h + lin2(F.silu(norm(lin1(h)) * (1 + gain(e))))
        out = self.out(F.silu(h))
        g, a = out[:, :-1], out[:, -1:]
        # ½⟨u, (g + 2a·u/(r d))/r⟩ = ½⟨u, g⟩/r + a: the û-aligned part carries offsets directly.
        g = g + 2 * a * u / (r * self.d)
        return cov.apply_multiplier(u + g / r, pre)


# ---------------------------------------------------------------------------------------------------------
# Images: a small gain-modulated UNet
# ---------------------------------------------------------------------------------------------------------
class _SpatialEmbed(nn.Module):
    """log-variance map (B, 1, H, W) → embedding map (B, E, H, W): a 3×3 conv then a 1×1 conv (cheap: the
    covariance score backpropagates through it)."""

    def __init__(self, emb: int, padding_mode: str = "replicate"):
        super().__init__()
        self.c1 = nn.Conv2d(1, emb, 3, padding=1, padding_mode=padding_mode)
        self.c2 = nn.Conv2d(emb, emb, 1)

    def forward(self, lv):
        z = lv / LOGVAR_SCALE
        return self.c2(F.silu(self.c1(z))) + z.mean((2, 3), keepdim=True)


class _GainConv(nn.Module):
    """conv → GroupNorm → ⊙(1 + A e_Σ) → SiLU, with the gain map (pixel Σ) or per-channel gain (Fourier Σ).

    The batch is ordered pixel rows first (:func:`_basis_order`): ``e_map`` holds the gain-embedding maps of the
    first ``len(e_map)`` rows, ``e_vec`` the per-channel embeddings of the remaining (Fourier) rows."""

    def __init__(self, cin: int, cout: int, emb: int, k: int = 3, groups: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2)
        self.norm = nn.GroupNorm(min(groups, cout), cout)
        self.gain = nn.Conv2d(emb, cout, 1)

    def forward(self, x, e_map, e_vec):
        z = self.norm(self.conv(x))
        n = e_map.shape[0]
        # an empty part still enters the graph, so every parameter gets a (zero) gradient, never None
        return F.silu(torch.cat([z[:n] * (1 + self.gain(e_map)), z[n:] * (1 + self.gain(e_vec))]))


class _Block(nn.Module):
    """Residual block of two gain-modulated 3×3 convs."""

    def __init__(self, cin: int, cout: int, emb: int):
        super().__init__()
        self.g1 = _GainConv(cin, cout, emb)
        self.g2 = _GainConv(cout, cout, emb)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, e_map, e_vec):
        return self.skip(x) + self.g2(self.g1(x, e_map, e_vec), e_map, e_vec)


class ImageEnergy(EnergyModel):
    """U_θ(y, Σ) = ½⟨y, s_θ⟩ for (B, C, H, W) images; s_θ = P(u + g_θ(u, Σ)), u = P y, P = (σ_d² + Σ)^{−½}
    (with ``bounded``: s_θ = P(u + c g_θ), c = σ_d P, so the network's share of the denoiser stays bounded as Σ grows).

    ``a(y, Σ)`` is an offset head: the term 2a·u/‖u‖² adds exactly a to U (½⟨u, 2a u/‖u‖²⟩ = a), with
    a = 8C Σ_i φ(log v_i / 8) + w·pool(h_mid): a per-coordinate function of the log-variances, the shape of the
    ½ log det Σ that a normalised energy must carry, plus a global image term. A-DSM cannot see a Σ-only
    offset (its gradient in y is 0; here up to the relative 1e-3/‖u‖² that keeps the term finite at u = 0),
    so in a single-SM model φ stays at its zero initialisation; A-CSM trains it. Without this head, our short CPU trainings learn no Σ-dependent offset at all (the U-Net would have
    to output g ∝ u·log v through its normalised layers).

    g_θ is a small 3-level UNet sized for a CPU: one gain-modulated conv at full resolution, a residual block
    at H/2, two at H/4, a block on the way up at H/2 and one gain-modulated conv at full resolution again
    (average-pool down, nearest up, skip concatenations). Pixel-type Σ: the log-variance map goes through a
    conv embedding and is average-pooled to each level: a spatial gain map. Fourier-type Σ: the log-spectrum
    (circular padding: the unshifted FFT grid is periodic) goes through its own embedding and is globally
    pooled: one gain per channel. Each embedding is computed only on the rows of its basis (the rows are
    reordered pixel-first inside ``s_theta`` and restored at the end).

    ``pixel_gain="pooled"`` globally pools the pixel-Σ embedding too (one gain per channel, as for Fourier Σ; Σ then
    reaches the network spatially only through u = P y): a leaner Σ path, which is what A-CSM's covariance score
    differentiates twice (``scripts/bench_acsm.py`` measures the training-step cost of both; same parameters).
    """

    PIXEL_GAINS = ("map", "pooled")

    def __init__(self, channels: int = 1, widths=(16, 32, 48), emb: int = 32, data_var: float = 0.25,
                 identity: bool = True, bounded: bool = False, pixel_gain: str = "map"):
        super().__init__()
        if pixel_gain not in self.PIXEL_GAINS:
            raise ValueError(f"pixel_gain must be one of {self.PIXEL_GAINS}, got {pixel_gain!r}")
        self.pixel_gain = pixel_gain
        w1, w2, w3 = widths
        self.data_var = data_var
        self.identity = identity      # False: s_θ = P(g + offset), no ½⟨u, u⟩ term (U ≡ 0 at initialisation)
        # True: the network's term is ½⟨u, c g⟩ with c = σ_d P = σ_d(σ_d² + Σ)^{−½} (EDM's bounded c_out): its share
        # of the denoiser, Σ∇_y½⟨u, c g⟩ = ΣP c ∇_u(·) = σ_d Σ(σ_d² + Σ)⁻¹ ∇_u(·), stays below σ_d |∇_u(·)| at
        # every noise level, where with c = 1 it grows like √v (network errors amplified ~3× at v = 10)
        self.bounded = bounded
        self.embed_pix = _SpatialEmbed(emb, "replicate")
        self.embed_four = _SpatialEmbed(emb, "circular")
        self.inp = _GainConv(channels, w1, emb)
        self.down = _Block(w1, w2, emb)
        self.mid1 = _Block(w2, w3, emb)
        self.mid2 = _Block(w3, w3, emb)
        self.up = _Block(w3 + w2, w2, emb)
        self.fin = _GainConv(w2 + w1, w1, emb)
        self.out = nn.Conv2d(w1, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        # offset head a(y, Σ) = Σ_i φ_basis(log v_i) + w·pool(h_mid): per-coordinate log-variance terms (the
        # shape of ½ log det) plus a global image term; zero-initialised.
        self.phi = nn.ModuleDict({b: nn.Sequential(nn.Conv2d(1, 16, 1), nn.SiLU(), nn.Conv2d(16, 1, 1))
                                  for b in ("pixel", "fourier")})
        self.a_img = nn.Linear(w3, 1)
        for m in (self.phi["pixel"][2], self.phi["fourier"][2], self.a_img):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def s_theta(self, y, cov):
        if y.ndim != 4:
            raise ValueError(f"ImageEnergy expects y of shape (B, C, H, W), got {tuple(y.shape)}")
        lv = cov.symmetrized_log_var()
        pre = (self.data_var + lv.exp()).rsqrt()
        u = cov.apply_multiplier(y, pre)
        # pixel-Σ rows first (n of them): each Σ-embedding runs only on the rows of its own basis
        order, inverse, n = _basis_order(cov.fourier)
        lvo, uo = lv[order], u[order]
        e1 = self.embed_pix(lvo[:n])                                  # (n, E, H, W) gain maps
        e_four = self.embed_four(lvo[n:]).mean((2, 3), keepdim=True)   # (B − n, E, 1, 1) per-channel gains
        if self.pixel_gain == "pooled":
            e1 = e2 = e3 = e1.mean((2, 3), keepdim=True)               # (n, E, 1, 1) per-channel gains
        else:
            e2 = F.avg_pool2d(e1, 2, ceil_mode=True)
            e3 = F.avg_pool2d(e2, 2, ceil_mode=True)
        h1 = self.inp(uo, e1, e_four)
        h2 = self.down(F.avg_pool2d(h1, 2, ceil_mode=True), e2, e_four)
        h3 = self.mid1(F.avg_pool2d(h2, 2, ceil_mode=True), e3, e_four)
        h3 = self.mid2(h3, e3, e_four)
        h = self.up(torch.cat([F.interpolate(h3, size=h2.shape[-2:], mode="nearest"), h2], 1), e2, e_four)
        h = self.fin(torch.cat([F.interpolate(h, size=h1.shape[-2:], mode="nearest"), h1], 1), e1, e_four)
        z = lvo / LOGVAR_SCALE
        phi = torch.cat([self.phi["pixel"](z[:n]), self.phi["fourier"](z[n:])])
        a = LOGVAR_SCALE * y.shape[1] * phi.flatten(1).sum(1) + self.a_img(h3.mean((2, 3)))[:, 0]
        g, a = self.out(h)[inverse], a[inverse]                        # back to the caller's row order
        # ½⟨u, 2a·u/‖u‖²⟩ = a: the offset enters U = ½⟨y, s_θ⟩ through a û-aligned term (singular only at y = 0)
        u2 = u.pow(2).flatten(1).sum(1).view(-1, 1, 1, 1) + 1e-3
        if self.bounded:
            g = cov.apply_multiplier(g, self.data_var ** 0.5 * pre)          # c g, c = σ_d P
        return cov.apply_multiplier((u if self.identity else 0) + g + 2 * a.view(-1, 1, 1, 1) * u / u2, pre)

    def denoiser_forward(self, y, cov):
        """The same backbone used as a plain denoiser, D = y − Σ s_θ (one forward, no autograd): the cost
        baseline for ∇_yU."""
        return y - cov.apply(self.s_theta(y, cov))


# ---------------------------------------------------------------------------------------------------------
# A learned residual on the Gaussian (linear-MMSE) control
# ---------------------------------------------------------------------------------------------------------
def _unique_rows(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(first, which)`` for the distinct rows of ``key`` (B, n): ``key[first]`` are the distinct rows and
    ``key[i] == key[first][which[i]]`` for every i."""
    rows, which = torch.unique(key, dim=0, return_inverse=True)
    first = torch.full((rows.shape[0],), key.shape[0], dtype=torch.long, device=key.device)
    return first.scatter_reduce(0, which, torch.arange(key.shape[0], device=key.device), reduce="amin"), which


def _solve_by_group(L_u: torch.Tensor, which: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z_i = M_{which[i]}⁻¹ t_i for Cholesky factors ``L_u`` (U, k, k) of U distinct matrices and right-hand sides
    ``t`` (B, k): the rows sharing a factor are solved together, so no (B, k, k) copy of the factors is made (a
    sampler's batch of 256 sharing one Σ would copy 268 MB at k = 512). Differentiable (out-of-place)."""
    if L_u.shape[0] == t.shape[0]:           # every row its own Σ: the gather is as large as L_u itself
        return torch.cholesky_solve(t.unsqueeze(-1), L_u[which]).squeeze(-1)
    z = torch.zeros_like(t)
    for u in range(L_u.shape[0]):
        rows = (which == u).nonzero().squeeze(1)
        z = z.index_put((rows,), torch.cholesky_solve(t[rows].T, L_u[u]).T)
    return z


def _on_fourier_rows(x, f, pixel_value, fourier_fn):
    """``pixel_value`` with the rows whose flag ``f`` is set replaced by ``fourier_fn(x[rows], rows)``: each row of
    a :class:`GaussianBase` batch is pixel- or Fourier-diagonal, and the FFTs run on the Fourier rows only."""
    rows = f.view(-1).nonzero().squeeze(1)
    if rows.numel() == 0:
        return pixel_value
    return pixel_value.index_copy(0, rows, fourier_fn(x[rows], rows))


def _abs2_in_basis(x, f):
    """|B x|²: x² for pixel rows, |unitary DFT of x|² for Fourier rows."""
    def fourier(xr, rows):
        fx = torch.fft.fft2(xr, norm="ortho")
        return fx.real.pow(2) + fx.imag.pow(2)
    return _on_fourier_rows(x, f, x.pow(2), fourier)


def _apply_inv(x, d_inv, f):
    """D⁻¹ x for x (B, n, H, W), D diagonal in each row's basis with inverse eigenvalues ``d_inv``."""
    return _on_fourier_rows(x, f, x * d_inv, lambda xr, rows: torch.fft.ifft2(
        torch.fft.fft2(xr, norm="ortho") * d_inv[rows], norm="ortho").real)


class _SigmaFactors(NamedTuple):
    """The Σ-only factors of :class:`GaussianBase` for one batch of Σ (see ``GaussianBase._sigma_factors``)."""
    key: torch.Tensor
    token: tuple
    which: torch.Tensor
    L_u: torch.Tensor
    logdet_u: torch.Tensor
    diag_u: torch.Tensor | None


class GaussianBase(nn.Module):
    """The exact energy of a Gaussian prior N(μ, C_k) seen through noise of covariance Σ, for images (B, 1, H, W):

        U_G(y, Σ) = −log N(y; μ, C_k + Σ) = ½ rᵀ(C_k + Σ)⁻¹r + ½ log det(C_k + Σ) + (d/2) log 2π,   r = y − μ,

    with C_k = W Wᵀ + ψ I the probabilistic-PCA fit of the training examples (Tipping & Bishop 1999): the top k
    principal directions, W = Q_k (Λ_k − ψ)^{½}, and ψ the mean of the other d − k eigenvalues (k = d − 1 makes it
    the full sample covariance). ∇_yU_G = (C_k + Σ)⁻¹r, so y − Σ∇_yU_G = μ + C_k(C_k + Σ)⁻¹r is the linear-MMSE
    denoiser of that Gaussian, and U_G is normalised for every Σ.

    Cost: with D = Σ + ψI (diagonal in Σ's own basis, eigenvalues e_j ≥ ψ > 0), Woodbury gives
    (D + WWᵀ)⁻¹ = D⁻¹ − D⁻¹W M⁻¹ WᵀD⁻¹ and log det(D + WWᵀ) = Σ_j log e_j + log det M, M = I_k + WᵀD⁻¹W, so
    a batch costs O(U k² d + B k d) for U distinct Σ among its B rows (M is factorised once per distinct Σ), not
    O(B d³); ψ bounds the condition number of M by 1 + ‖W‖²/ψ, so float32 is enough.
    The Σ-only factors (L_u, log det, the diagonal of (C_k + Σ)⁻¹) of the last call are kept and reused when the
    next call has the same Σ bit for bit, as a predictor–corrector step's two evaluations do.
    The scores are closed-form (no autograd): ∇_yU_G = α = (C_k + Σ)⁻¹r and, with B = I (pixel Σ) or the unitary
    DFT (Fourier Σ),  ∂U_G/∂log v_j = ½ v_j ([B(C_k + Σ)⁻¹Bᴴ]_jj − |(Bα)_j|²)."""

    def __init__(self, shape: tuple[int, int, int], rank: int):
        super().__init__()
        C, H, W = shape
        if C != 1:
            raise ValueError(f"GaussianBase handles one-channel images (1, H, W) (variance maps are per pixel), got {shape}")
        if not 1 <= rank < H * W:
            raise ValueError(f"rank must be in [1, {H * W - 1}], got {rank}")
        self.shape, self.rank, self.d = tuple(shape), rank, H * W
        self.register_buffer("mean", torch.zeros(1, H, W))
        self.register_buffer("factor", torch.zeros(rank, H, W))      # the k columns of W, as images
        self.register_buffer("psi", torch.ones(()))

    def fit(self, x: torch.Tensor, ridge: float = 1e-4) -> "GaussianBase":
        """Set μ, W and ψ from clean examples x (N, 1, H, W): the eigendecomposition of the Gaussian control's
        covariance (:meth:`energy_utils.controls.GaussianPrior.fit`, sample covariance + ridge·I)."""
        if x[0].numel() != self.d:
            raise ValueError(f"examples have {x[0].numel()} pixels, the base expects {self.d}")
        prior = GaussianPrior.fit(x, ridge)
        evals, evecs = torch.linalg.eigh(prior.cov)
        evals, evecs = evals.flip(0), evecs.flip(1)
        psi = evals[self.rank:].mean()
        w = evecs[:, :self.rank] * (evals[:self.rank] - psi).clamp_min(0).sqrt()
        self.mean.copy_(prior.mean.reshape(self.mean.shape).float())
        self.factor.copy_(w.T.reshape(self.factor.shape).float())
        self.psi.fill_(float(psi))
        return self

    def covariance(self) -> torch.Tensor:
        """C_k = W Wᵀ + ψ I as a dense (d, d) float64 matrix (for tests and the controls)."""
        w = self.factor.reshape(self.rank, -1).double()
        return w.T @ w + self.psi.double() * torch.eye(self.d, dtype=torch.float64, device=w.device)

    def _check(self, y: torch.Tensor, cov: DiagCov) -> None:
        if y.ndim != 4 or tuple(y.shape[1:]) != self.shape:
            raise ValueError(f"GaussianBase expects y of shape (B, {', '.join(map(str, self.shape))}), got {tuple(y.shape)}")
        if cov.batch_size != y.shape[0]:
            raise ValueError(f"{y.shape[0]} examples but {cov.batch_size} covariances")

    def _terms(self, y: torch.Tensor, cov: DiagCov, cov_score: bool):
        self._check(y, cov)
        dims = (-2, -1)
        B, k = y.shape[0], self.rank
        v = cov.var.to(y.dtype)
        four = cov.fourier.view(-1, 1, 1, 1)
        e = torch.where(four, symmetrize_spectrum(v, dims), v) + self.psi          # eigenvalues of D = Σ + ψI
        inv = 1.0 / e                                                              # (B, 1, H, W)

        f = self._sigma_factors(e, inv, four, cov_score)
        w_flat = self.factor.to(y.dtype).reshape(k, -1)
        r = y - self.mean.to(y.dtype)
        dr = _apply_inv(r, inv, four)                                                # D⁻¹r
        t = torch.einsum("kd,bd->bk", w_flat, dr.reshape(B, -1))
        z = _solve_by_group(f.L_u, f.which, t)                                      # M⁻¹WᵀD⁻¹r
        alpha = dr - _apply_inv(torch.einsum("kd,bk->bd", w_flat, z).reshape(r.shape), inv, four)   # (C_k + Σ)⁻¹ r
        energy = 0.5 * (r * alpha).flatten(1).sum(1) + 0.5 * f.logdet_u[f.which] + 0.5 * self.d * math.log(2 * math.pi)
        grad_logvar = None
        if cov_score:
            grad_logvar = 0.5 * v * (f.diag_u[f.which] - _abs2_in_basis(alpha, four))
        return energy, alpha, grad_logvar

    CACHE_MAX_DISTINCT = 64      # Σ-factors of at most this many distinct Σ are kept for the next call

    def _sigma_factors(self, e, inv, four, need_diag) -> "_SigmaFactors":
        """What depends on Σ only: the row → distinct-Σ index ``which``, and per distinct Σ the Cholesky factor L_u
        of M = I + WᵀD⁻¹W, log det(C_k + Σ) and, when ``need_diag``, diag[B(C_k + Σ)⁻¹Bᴴ] = D⁻¹ − |B D⁻¹W L⁻ᵀ|²
        summed over the k columns. A sampler evaluates the energy twice at one Σ (predictor, then corrector), so the
        factors of the last Σ seen without a graph are kept and reused when the next call's Σ is bit-identical
        (same values, dtype and device, same base buffers): the reuse returns exactly what a recomputation would."""
        key = torch.cat([e.detach().flatten(1), four.detach().flatten(1).to(e.dtype)], 1)
        token = (self.factor._version, self.psi._version, self.factor.data_ptr(), self.psi.data_ptr())
        cache = getattr(self, "_factor_cache", None)
        if (cache is not None and not e.requires_grad and cache.token == token and cache.key.dtype == key.dtype
                and cache.key.device == key.device and cache.key.shape == key.shape and torch.equal(cache.key, key)
                and (cache.diag_u is not None or not need_diag)):
            return cache
        first, which = _unique_rows(key)
        e_u, inv_u, four_u = e[first], inv[first], four[first]
        k, U = self.rank, first.numel()
        w = self.factor.to(e.dtype)
        dw = _apply_inv(w.unsqueeze(0).expand(U, -1, -1, -1), inv_u, four_u)       # D⁻¹W per distinct Σ, (U, k, H, W)
        w_flat, dw_flat = w.reshape(k, -1), dw.reshape(U, k, -1)
        M = torch.eye(k, dtype=e.dtype, device=e.device) + torch.einsum("kd,bld->bkl", w_flat, dw_flat)
        L_u = torch.linalg.cholesky(0.5 * (M + M.transpose(1, 2)))
        logdet_u = e_u.log().flatten(1).sum(1) + 2 * L_u.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        diag_u = None
        if need_diag:
            yt = torch.linalg.solve_triangular(L_u, dw_flat, upper=False)          # L⁻¹WᵀD⁻¹ (k × d): Y = D⁻¹W L⁻ᵀ
            diag_u = inv_u - _abs2_in_basis(yt.reshape(U, k, *self.shape[1:]), four_u).sum(1, keepdim=True)
        f = _SigmaFactors(key, token, which, L_u, logdet_u, diag_u)
        if not e.requires_grad and U <= self.CACHE_MAX_DISTINCT:
            self._factor_cache = f
        return f

    def energy(self, y: torch.Tensor, cov: DiagCov) -> torch.Tensor:
        """U_G(y, Σ) per example, (B,)."""
        return self._terms(y, cov, cov_score=False)[0]

    def scores(self, y: torch.Tensor, cov: DiagCov, create_graph: bool = False, cov_score: bool = True) -> Scores:
        """U_G, ∇_yU_G and ∂U_G/∂log v in closed form. The base has no parameters, so without ``create_graph``
        they are computed without a graph; with it they stay differentiable in y and Σ (a sampler such as DPS
        differentiates the denoiser y − Σ∇_yU through them)."""
        if create_graph:
            u, g, h = self._terms(y, cov, cov_score)
        else:
            with torch.no_grad():
                u, g, h = self._terms(y.detach(), cov.detach(), cov_score)
        return Scores(u, g, None if h is None else h.to(cov.log_var.dtype))


class SigmaOffset(nn.Module):
    """A Σ-only energy term c_ω(Σ) = 8 Σ_i h_ω(z, basis)_i, z = log v / 8: a sum over the variance coordinates of a
    small CNN of the log-variance map and fixed coordinate maps (pixel basis: row, column, radius, replicate
    padding; Fourier basis: |frequency| per axis and radius, circular padding, the spectrum's grid being
    periodic), one CNN per basis, zero at initialisation.

    Why: A-DSM fixes U only up to an additive c(Σ), since ∇_y c = 0; A-CSM is what fixes c(Σ). This head gives
    that Σ-only part its own parameters, so that A-CSM can be trained on it alone, the y-dependence of U (the
    denoiser) frozen: notebook 08 measures that ~98 % of an A-DSM-trained MNIST energy's A-CSM error is such a
    y-independent offset. Its scores: ∇_y c = 0 and ∂c/∂log v by autograd. (The last layer's bias adds a constant
    to U that no loss sees and the anchor constant absorbs: it stays at its zero initialisation.)"""

    def __init__(self, map_shape: tuple[int, int, int] = (1, 28, 28), width: int = 16, k: int = 3):
        super().__init__()
        if len(map_shape) != 3 or map_shape[0] != 1:
            raise ValueError(f"SigmaOffset handles one variance map (1, H, W), got {tuple(map_shape)}")
        H, W = map_shape[1:]
        self.map_shape = tuple(map_shape)
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
        fy, fx = torch.meshgrid(2 * torch.fft.fftfreq(H).abs(), 2 * torch.fft.fftfreq(W).abs(), indexing="ij")
        self.register_buffer("coords_pixel", torch.stack([yy, xx, (yy ** 2 + xx ** 2).sqrt()])[None])
        self.register_buffer("coords_fourier", torch.stack([fy, fx, (fy ** 2 + fx ** 2).sqrt()])[None])

        def cnn(padding_mode):
            last = nn.Conv2d(width, 1, 1)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            return nn.Sequential(nn.Conv2d(4, width, k, padding=k // 2, padding_mode=padding_mode), nn.SiLU(),
                                 nn.Conv2d(width, width, k, padding=k // 2, padding_mode=padding_mode), nn.SiLU(),
                                 last)

        self.nets = nn.ModuleDict({"pixel": cnn("replicate"), "fourier": cnn("circular")})

    def forward(self, cov: DiagCov) -> torch.Tensor:
        """c_ω(Σ) per covariance, shape (B,)."""
        if tuple(cov.map_shape) != self.map_shape:
            raise ValueError(f"SigmaOffset expects variance maps {self.map_shape}, got {tuple(cov.map_shape)}")
        z = cov.symmetrized_log_var() / LOGVAR_SCALE
        order, inverse, n = _basis_order(cov.fourier)
        zo = z[order]
        parts = [self.nets[b](torch.cat([zb, coords.to(zb.dtype).expand(zb.shape[0], -1, -1, -1)], 1)).flatten(1).sum(1)
                 for b, zb, coords in (("pixel", zo[:n], self.coords_pixel), ("fourier", zo[n:], self.coords_fourier))]
        return LOGVAR_SCALE * torch.cat(parts)[inverse]

    def grad_logvar(self, cov: DiagCov, create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(c_ω(Σ), ∂c_ω/∂log v) by autograd; with ``create_graph`` both stay differentiable (training)."""
        leaf = cov.requires_grad_()
        with torch.enable_grad():
            c = self(leaf)
            g, = torch.autograd.grad(c.sum(), leaf.log_var, create_graph=create_graph)
        return (c if create_graph else c.detach()), g


class GaussianResidualEnergy(EnergyModel):
    """U(y, Σ) = U_G(y, Σ) + U_θ(y, Σ): a Gaussian prior's exact energy (:class:`GaussianBase`, PCA of rank
    ``rank`` fitted on the training examples) plus a learned residual U_θ (an :class:`ImageEnergy` built with
    ``identity=False``, so U_θ ≡ 0 at initialisation).

    At initialisation the model *is* that Gaussian: its denoiser is the linear-MMSE estimate and its normalising
    constant is exact for every Σ. Training (A-DSM, A-CSM) adds what the data have beyond their mean and
    covariance, so the model starts at the Gaussian control and is compared with it at every Σ.

    ``offset=True`` adds a Σ-only term c_ω(Σ) (:class:`SigmaOffset`, zero at initialisation): U = U_G + U_θ + c_ω."""

    def __init__(self, shape=(1, 28, 28), rank: int = 256, net_kwargs: dict | None = None, offset: bool = False):
        super().__init__()
        kw = dict(net_kwargs or {})
        kw["identity"] = False
        self.net = ImageEnergy(**kw)
        self.base = GaussianBase(tuple(shape), rank)
        self.offset = SigmaOffset(tuple(shape)) if offset else None

    @classmethod
    def from_data(cls, x: torch.Tensor, rank: int = 256, net_kwargs: dict | None = None,
                  ridge: float = 1e-4, offset: bool = False) -> "GaussianResidualEnergy":
        """The model with its base fitted on the clean training examples ``x`` (N, 1, H, W)."""
        model = cls(tuple(x.shape[1:]), rank, net_kwargs, offset)
        model.base.fit(x, ridge)
        return model

    def forward(self, y, cov):
        u = self.net(y, cov) + self.base.energy(y, cov).to(y.dtype)
        return u if self.offset is None else u + self.offset(cov).to(y.dtype)

    def scores(self, y, cov, create_graph: bool = False, cov_score: bool = True) -> Scores:
        """The residual network's scores (autograd, :func:`energy_and_scores`) plus the base's (closed form,
        differentiable in y and Σ when ``create_graph``) plus, with an offset head, ∂c_ω/∂log v. The network's
        scores keep their graph only when something needs it: one of its parameters, y or log v requires grad
        (so a training stage with the network frozen, e.g. A-CSM on the offset head alone, does not
        differentiate it twice)."""
        net_graph = create_graph and (y.requires_grad or cov.log_var.requires_grad
                                      or any(p.requires_grad for p in self.net.parameters()))
        net = energy_and_scores(self.net, y, cov, net_graph, cov_score)
        base = self.base.scores(y, cov, create_graph, cov_score)
        energy = net.energy + base.energy.to(net.energy.dtype)
        grad_logvar = None if not cov_score else net.grad_logvar + base.grad_logvar.to(net.grad_logvar.dtype)
        if self.offset is not None:
            if cov_score:
                c, g = self.offset.grad_logvar(cov, create_graph)
                grad_logvar = grad_logvar + g.to(grad_logvar.dtype)
            else:
                with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
                    c = self.offset(cov)
            energy = energy + c.to(energy.dtype)
        return Scores(energy, net.grad_y + base.grad_y.to(net.grad_y.dtype), grad_logvar)

    energy = forward

    def s_theta(self, y, cov):  # pragma: no cover - the energy is not of the inner-product form
        raise NotImplementedError("GaussianResidualEnergy: use energy_and_scores (U is not ½⟨y, s_θ⟩ here)")


# ---------------------------------------------------------------------------------------------------------
# The exact oracle
# ---------------------------------------------------------------------------------------------------------
class MixtureEnergy(nn.Module):
    """U*(y, Σ) = −log p(y | Σ) of a :class:`~energy_utils.densities.GaussianMixture`, exact and differentiable
    in y and in log v (Σ is built as a dense matrix from the DiagCov, so keep d small: d ≤ a few hundred).
    Images are flattened channel-major, so one variance map shared by C channels is kron(I_C, Σ_map)."""

    def __init__(self, mixture, offset: float = 0.0):
        super().__init__()
        self.mixture = mixture
        self.offset = offset

    def forward(self, y, cov: DiagCov):
        from .densities import NoiseCov

        C = cov.channels(y)
        mat = cov.to(dtype=torch.float64).dense(C)
        mat = 0.5 * (mat + mat.transpose(1, 2))
        yf = y.reshape(y.shape[0], -1).double()
        lp = self.mixture.log_prob(yf, NoiseCov("full", mat))
        return (-lp + self.offset).to(y.dtype)

    energy = forward


def build_model(kind: str, **kwargs) -> EnergyModel:
    """Rebuild a model from checkpoint metadata: ``kind`` 'vector' or 'image'."""
    if kind == "vector":
        return VectorEnergy(**kwargs)
    if kind == "image":
        return ImageEnergy(**kwargs)
    if kind == "image_gaussian_residual":
        return GaussianResidualEnergy(**kwargs)
    raise ValueError(f"unknown model kind {kind!r}; use 'vector', 'image' or 'image_gaussian_residual'")

