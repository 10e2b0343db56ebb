"""Posterior samplers for linear inverse problems with a (normalised) energy prior, and the baselines they meet.

**Prior interface.** A prior is any object with

    energy_and_grad(x, var, create_graph=False) -> (U (B,), ∇_x U (shape of x))

where ``var`` is the per-coordinate noise variance (Σ diagonal in the coordinate basis; a float, or a tensor
broadcastable to x) and U(x, Σ) = −log p_Σ(x) up to one constant, p_Σ = p₀ * N(0, Σ) (the prior smoothed by
Gaussian noise of covariance Σ). One call is one network evaluation (one forward + one backward: one "NFE").
``create_graph=True`` keeps the graph so that ∇_xU can itself be differentiated (DPS). Adapters:
:class:`MixturePrior` (exact, a :class:`~energy_utils.densities.GaussianMixture`) and :class:`EnergyPrior`
(a trained :mod:`energy_utils.energy_models` model). The isotropic denoiser of the baselines is derived from the
same object by Tweedie/Miyasawa, D(x, σ²) = x − σ²∇_xU(x, σ²I) (:func:`tweedie_denoise`), so the energy
sampler and DPS / RED-Diff / DAPS share one backbone, as in the paper's baselines (brief §6.2).

**Samplers.** Every sampler is a plain function on a batch of B independent chains (one per measurement row:
repeat rows for several samples per measurement), vectors (B, d) first, images (B, C, H, W) through the same
code (A acts on the flattened signal). Each returns ``(x, info)`` with ``info["nfe"]`` (prior evaluations)
and ``info["wall_s"]``, shows tqdm progress (``disable``), calls ``callback(dict)`` after each step, and stops
with :class:`SamplerDivergence` (a ``FloatingPointError``) when an iterate or energy becomes non-finite or an
iterate becomes larger than ``diverge`` in absolute value (energies are not bounded: a chain far from the data
legitimately has a huge finite potential, e.g. ‖Ax − y‖²/2σ² at small σ).

* :func:`pc_sample`: the paper's posterior predictor–corrector along a diagonal covariance path (brief §5.1),
  with ULA or MALA correctors (§5.2), for coordinate-mask measurements;
* :func:`energy_guided_sample`: the same for noiseless masks along the energy-guided covariance schedule
  (§5.3), each coordinate's variance lowered by its covariance score ∂U/∂Σ (priors with
  ``energy_grad_and_var_grad``);
* :func:`annealed_sample`: annealed Langevin or MALA along an isotropic path, for any A (the energy sampler
  where the mask predictor–corrector does not apply);
* :func:`mala_sample` / :func:`langevin_sample`: MALA / ULA on the exact posterior energy
  U(x, Σ_tiny) + ‖y − Ax‖²/(2σ_n²) for a general matrix A (the reference, and its unadjusted counterpart);
* :func:`dps_sample`, :func:`red_diff_sample`, :func:`daps_sample`: the baselines of §6.2 on y = Ax + n.

Measurements with a general A are :class:`LinearGaussianLikelihood` objects (A an (m, d) matrix, y (B, m),
σ_n² > 0); :func:`mask_likelihood` builds the one of a coordinate mask.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch
from tqdm.auto import tqdm

from .covariances import DiagCov
from .densities import GaussianMixture, NoiseCov
from .energy_models import energy_and_scores

__all__ = ["MixturePrior", "EnergyPrior", "LinearGaussianLikelihood", "mask_likelihood", "SamplerDivergence",
           "geometric_path", "tweedie_denoise", "evaluate_posterior", "pc_sample", "energy_guided_sample",
           "annealed_sample", "mala_sample", "langevin_sample", "dps_sample",
           "red_diff_sample", "daps_sample"]


class SamplerDivergence(FloatingPointError):
    """An iterate or an energy became non-finite or exceeded the divergence bound."""


# ---------------------------------------------------------------------------------------------------------
# Priors
# ---------------------------------------------------------------------------------------------------------
def _is_scalar(var) -> bool:
    return isinstance(var, (int, float)) or (torch.is_tensor(var) and var.ndim == 0)


def _check_var(var) -> None:
    v = torch.as_tensor(var)
    if not torch.all(v > 0) or not torch.all(torch.isfinite(v)):
        raise ValueError(f"noise variances must be positive and finite, got min {v.min().item():.3g}")


class MixturePrior:
    """The exact smoothed energy U(x, Σ) = −log p_Σ(x) of a Gaussian mixture (Σ = diag(var)).

    Images are flattened channel-major. A ``var`` without batch dimension (a float, a (d,) map or a map whose
    leading dimension is 1) is one Σ for the whole batch, which is much cheaper than B different ones."""

    def __init__(self, mixture: GaussianMixture):
        self.mixture = mixture

    @property
    def dim(self) -> int:
        return self.mixture.dim

    def _noise_cov(self, x: torch.Tensor, var):
        """(flattened x, NoiseCov of var, map shape of var as (1 or B, ...) aligned with x, or None if scalar)."""
        B = x.shape[0]
        xf = x.reshape(B, -1).to(self.mixture.dtype)
        if xf.shape[1] != self.mixture.dim:
            raise ValueError(f"the mixture is {self.mixture.dim}-dimensional, x has {xf.shape[1]} coordinates per sample")
        _check_var(var)
        if _is_scalar(var):
            return xf, NoiseCov.isotropic(float(var), self.mixture.dtype), None
        v = torch.as_tensor(var, dtype=self.mixture.dtype, device=xf.device)
        shared = v.ndim < x.ndim or v.shape[0] == 1
        vshape = (1,) * (x.ndim - v.ndim) + tuple(v.shape) if v.ndim < x.ndim else tuple(v.shape)
        v = torch.broadcast_to(v, (1 if shared else B, *x.shape[1:])).reshape(1 if shared else B, -1)
        return xf, NoiseCov("diagonal", v[0] if shared else v), vshape

    def energy_and_grad(self, x: torch.Tensor, var, create_graph: bool = False):
        xf, cov, _ = self._noise_cov(x, var)
        with torch.set_grad_enabled(create_graph or torch.is_grad_enabled()):
            log_terms, a, _ = self.mixture._terms(xf, cov)
            u = -torch.logsumexp(log_terms, dim=1)
            g = (torch.softmax(log_terms, dim=1)[..., None] * a).sum(1)
        if not create_graph:
            u, g = u.detach(), g.detach()
        return u.to(x.dtype), g.reshape(x.shape).to(x.dtype)

    def energy_grad_and_var_grad(self, x: torch.Tensor, var):
        """(U (B,), ∇_xU, ∂U/∂v): also the covariance score, the derivative of U with respect to each entry of
        the variance map, per chain. Exact: with r_k the component responsibilities, S_k = C_k + Σ and
        a_k = S_k⁻¹(x − μ_k), ∂U/∂v_i = ½ Σ_k r_k [(S_k⁻¹)_ii − a_{k,i}²] (the derivative of −log N(x; μ_k, S_k)
        in Σ_ii). The result has shape (B, *map): the map of ``var`` aligned with x (a (d,) or (1, d) map gives
        (B, d); a map shared by the channels, (1, H, W) or (1, 1, H, W), gives (B, 1, H, W): the derivative
        with respect to a shared variance sums over the coordinates that share it); a float ``var`` gives one
        entry per coordinate of x (the derivative in each diagonal entry, at Σ = var·I). Same cost as
        :meth:`energy_and_grad` plus the diagonal of S_k⁻¹ (one NFE)."""
        xf, cov, vshape = self._noise_cov(x, var)
        B = x.shape[0]
        with torch.no_grad():
            log_terms, a, s_inv = self.mixture._terms(xf, cov)
            u = -torch.logsumexp(log_terms, dim=1)
            r = torch.softmax(log_terms, dim=1)[..., None]                  # (B, K, 1)
            g = (r * a).sum(1)
            dv = 0.5 * (r * (s_inv().diagonal(dim1=-2, dim2=-1) - a * a)).sum(1)   # (B, d)
        dv = dv.reshape(x.shape)
        if vshape is not None:                                              # sum over the broadcast dimensions
            dims = tuple(j for j in range(1, x.ndim) if vshape[j] == 1 and x.shape[j] != 1)
            if dims:
                dv = dv.sum(dims, keepdim=True)
        return u.to(x.dtype), g.reshape(x.shape).to(x.dtype), dv.reshape(B, *dv.shape[1:]).to(x.dtype)


class EnergyPrior:
    """A trained energy model (``energy_models``: U_θ(y, Σ) from ``model(y, DiagCov)``) as a prior.

    ``var`` is broadcast to the variance map of the model: (B, d) for vectors, (B, 1, H, W) for images (one
    variance per pixel shared by the channels, as the models expect). The model runs in its own dtype; U and
    ∇U come back in x's dtype."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        p = next(model.parameters(), None)
        self.dtype = p.dtype if p is not None else torch.float32

    def _var_map(self, x: torch.Tensor, var) -> torch.Tensor:
        _check_var(var)
        B = x.shape[0]
        map_shape = (B, *x.shape[1:]) if x.ndim == 2 else (B, 1, *x.shape[2:])
        v = torch.as_tensor(var, dtype=self.dtype, device=x.device)
        try:
            v = torch.broadcast_to(v, map_shape)
        except RuntimeError:
            raise ValueError(f"the variance map {tuple(v.shape)} does not broadcast to the model's map {map_shape} "
                             "(image variances are shared by the channels)") from None
        return v.contiguous()

    def energy_and_grad(self, x: torch.Tensor, var, create_graph: bool = False):
        v = self._var_map(x, var)
        xm = x.to(self.dtype)
        if not create_graph:
            xm = xm.detach()
        s = energy_and_scores(self.model, xm, DiagCov.from_var(v), create_graph=create_graph,
                              cov_score=False)
        return s.energy.to(x.dtype), s.grad_y.to(x.dtype)

    def energy_grad_and_var_grad(self, x: torch.Tensor, var):
        """(U (B,), ∇_xU, ∂U/∂v) from one autograd call (one NFE): ∂U/∂v = (∂U/∂log v)/v, the covariance score of
        :func:`~energy_utils.energy_models.energy_and_scores`, in the shape of the model's variance map, (B, d)
        for vectors, (B, 1, H, W) for images (one variance per pixel shared by the channels, so the derivative
        is with respect to that shared variance)."""
        v = self._var_map(x, var)
        s = energy_and_scores(self.model, x.to(self.dtype).detach(), DiagCov.from_var(v), cov_score=True)
        dv = s.grad_logvar.detach() / v
        return s.energy.to(x.dtype), s.grad_y.detach().to(x.dtype), dv.to(x.dtype)


def tweedie_denoise(prior, x: torch.Tensor, sigma2: float, create_graph: bool = False):
    """D(x, σ²) = x − σ² ∇_xU(x, σ²I), the MMSE denoiser of the prior's own energy (Miyasawa/Tweedie).
    Returns (D, U, ∇_xU); one NFE."""
    u, g = prior.energy_and_grad(x, sigma2, create_graph=create_graph)
    return x - sigma2 * g, u, g


# ---------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------
class LinearGaussianLikelihood:
    """y = A x + n, n ~ N(0, σ_n² I_m): A an (m, d) matrix acting on flattened signals, y (B, m), one row per chain.

    ``energy(x)`` returns V(x) = ‖y − Ax‖²/(2σ_n²) (B,) and ∇V = Aᵀ(Ax − y)/σ_n² (shape of x)."""

    def __init__(self, A: torch.Tensor, y: torch.Tensor, noise_var: float):
        if not torch.is_tensor(A) or A.ndim != 2:
            raise ValueError(f"A must be an (m, d) matrix tensor, got {type(A).__name__} "
                             f"{tuple(A.shape) if torch.is_tensor(A) else ''}")
        if not torch.is_tensor(y) or y.ndim != 2 or y.shape[1] != A.shape[0]:
            raise ValueError(f"y must have shape (B, {A.shape[0]}) for an {tuple(A.shape)} operator, "
                             f"got {tuple(y.shape) if torch.is_tensor(y) else type(y).__name__}")
        noise_var = float(noise_var)
        if not noise_var > 0 or not math.isfinite(noise_var):
            raise ValueError(f"noise_var must be positive and finite, got {noise_var}")
        self.A, self.y, self.noise_var = A.to(y.dtype), y, noise_var

    @property
    def batch_size(self) -> int:
        return self.y.shape[0]

    @property
    def dim(self) -> int:
        return self.A.shape[1]

    def check(self, x: torch.Tensor) -> None:
        if x.shape[0] != self.batch_size or x[0].numel() != self.dim:
            raise ValueError(f"x must hold {self.batch_size} signals of {self.dim} coordinates (one per row of y), "
                             f"got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1) @ self.A.T

    def adjoint(self, r: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return (r @ self.A).reshape(like.shape)

    def energy(self, x: torch.Tensor):
        r = self.forward(x) - self.y
        return 0.5 * r.pow(2).sum(1) / self.noise_var, self.adjoint(r, x) / self.noise_var

    def pinv(self) -> torch.Tensor:
        """A⁺y, (B, d) (reshape for images)."""
        return self.y @ torch.linalg.pinv(self.A).T


def mask_likelihood(mask: torch.Tensor, y_obs: torch.Tensor, noise_var: float) -> LinearGaussianLikelihood:
    """The likelihood of a coordinate mask: A the rows of I_d where ``mask`` (d,) is True, y = y_obs[:, mask]."""
    mask = torch.as_tensor(mask, dtype=torch.bool).reshape(-1)
    if y_obs.ndim != 2 or y_obs.shape[1] != mask.numel():
        raise ValueError(f"y_obs must have shape (B, {mask.numel()}), got {tuple(y_obs.shape)}")
    A = torch.eye(mask.numel(), dtype=y_obs.dtype, device=y_obs.device)[mask.to(y_obs.device)]
    return LinearGaussianLikelihood(A, y_obs[:, mask.to(y_obs.device)], noise_var)


# ---------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------
def geometric_path(begin: float, end: float, n: int, dtype=torch.float64) -> torch.Tensor:
    """n values from ``begin`` down to ``end``, geometrically spaced (both included)."""
    if n < 2:
        raise ValueError(f"a path needs at least 2 levels, got {n}")
    if not 0 < end < begin:
        raise ValueError(f"need 0 < end < begin, got begin={begin}, end={end}")
    return torch.logspace(math.log10(begin), math.log10(end), n, dtype=dtype)


def _guard(name: str, step: int, diverge: float, x: torch.Tensor, *energies: torch.Tensor) -> None:
    """Stop a sampler whose iterate ``x`` or whose ``energies`` are non-finite, or whose iterate exceeds
    ``diverge`` in absolute value (energies only need to be finite)."""
    for t in (x, *energies):
        if not torch.isfinite(t).all():
            raise SamplerDivergence(f"{name}: non-finite value at step {step} (lower the step size / snr, or check the prior)")
    if x.abs().max() > diverge:
        raise SamplerDivergence(f"{name}: |x| {x.abs().max().item():.3g} > diverge={diverge:g} at step {step} "
                                "(lower the step size / snr, or raise diverge if such values are expected)")


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    gdev = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=gdev).to(like.device)


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-chain (B,) quantity shaped to broadcast against x."""
    return v.view(-1, *([1] * (x.ndim - 1)))


def _sqnorm(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).pow(2).sum(1)


def _sigma_schedule(sigma_max: float, sigma_min: float, n_levels: int, dtype) -> torch.Tensor:
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    return geometric_path(sigma_max, sigma_min, n_levels, dtype=dtype)


def _check_lik(lik, x_shape=None) -> LinearGaussianLikelihood:
    if not isinstance(lik, LinearGaussianLikelihood):
        raise TypeError("pass the measurement as a LinearGaussianLikelihood(A, y, noise_var) (or mask_likelihood)")
    return lik


def _signal_shape(lik: LinearGaussianLikelihood, shape) -> tuple[int, ...]:
    shape = (lik.batch_size, lik.dim) if shape is None else tuple(shape)
    if shape[0] != lik.batch_size or math.prod(shape[1:]) != lik.dim:
        raise ValueError(f"shape {shape} must be (B={lik.batch_size}, ...) with {lik.dim} coordinates per signal")
    return shape


def _check_mask_measurement(y_obs, mask) -> None:
    """The checks shared by the coordinate-mask samplers: y_obs a float (B, ...) tensor, mask (at most one
    signal's dimensions) broadcastable to one signal, observing some coordinates and not all."""
    if not torch.is_tensor(y_obs) or y_obs.ndim < 2:
        raise ValueError(f"y_obs must be a (B, d) or (B, C, H, W) tensor, got "
                         f"{tuple(y_obs.shape) if torch.is_tensor(y_obs) else type(y_obs).__name__}")
    if not y_obs.is_floating_point():
        raise ValueError("y_obs must be a floating-point tensor")
    mask = torch.as_tensor(mask, dtype=torch.bool, device=y_obs.device)
    try:
        if mask.ndim > y_obs.ndim - 1:
            raise RuntimeError
        full = torch.broadcast_to(mask, y_obs.shape[1:])
    except RuntimeError:
        raise ValueError(f"mask {tuple(mask.shape)} does not broadcast to one signal of shape {tuple(y_obs.shape[1:])}") from None
    if not full.any() or full.all():
        raise ValueError("the mask must observe some coordinates and leave some unobserved")


# ---------------------------------------------------------------------------------------------------------
# The paper's posterior predictor–corrector (coordinate masks)
# ---------------------------------------------------------------------------------------------------------
def pc_sample(prior, y_obs: torch.Tensor, mask: torch.Tensor, obs_var: float, var_path, *, n_corrector: int = 1,
              snr: float = 0.15, temperature: float = 1.0, mala: bool = False, eps_rule: str = "auto",
              eps_cap: float = 1.0, x_init: torch.Tensor | None = None,
              generator: torch.Generator | None = None, callback: Callable[[dict], None] | None = None,
              disable: bool | None = None, diverge: float = 1e8, desc: str = "pc_sample"):
    """Posterior sampling for a coordinate mask, y = x[mask] + n, n ~ N(0, σ_n²), along a diagonal covariance path.

    ``y_obs`` (B, ...) holds the measurement at the observed coordinates (other entries are ignored), ``mask``
    (broadcastable to one signal) is True where observed, ``obs_var`` = σ_n² > 0 (use a tiny value, e.g. 1e-14 as
    the released code, for a noiseless mask), ``var_path`` the decreasing variances s_0 > … > s_{N−1} of the
    unobserved coordinates (e.g. :func:`geometric_path`\\ (s_begin, s_end, N)).

    **Path and target.** Level t uses Σ_t = diag(τ_t on observed, s_t on unobserved), τ_t = min(s_t, σ_n²), and
    targets

        π_t(z) ∝ p_{Σ_t}(z) · N(y; z_obs, (σ_n² − τ_t) I).

    While s_t ≥ σ_n² (phase 1, the paper's sampler: observed variance fixed, 1e-14 in the released code) the
    likelihood factor is a point mass, so z_obs = y exactly and only the unobserved coordinates move; π_t is the
    law of z = x + N(0, Σ_t) given z_obs = y, the conditional that reads y as an observation with variance σ_n².
    Once s_t < σ_n² (phase 2, only when σ_n² > s_end) Σ_t = s_t I and the observed coordinates are released with
    the remaining likelihood variance σ_n² − s_t. Since y ⊥ z_{t+1} | z_t along the forward noising
    x → z_{t+1} → z_t → y, p(z_{t+1} | z_t, y) = p(z_{t+1} | z_t): the unconditional reverse step is the right
    predictor in both phases, and π_{N−1} → p(x | y) as s_end → 0 (an O(s_end) error). If σ_n² ≤ s_end the
    observed coordinates stay at y (their exact posterior spread is below √s_end); the released sampler is that
    case.

    **Updates.** Predictor (ΔΣ_t = Σ_t − Σ_{t+1}, zero on coordinates that stay clamped, so its noise touches
    only the coordinates whose variance decreases):

        z ← z − ΔΣ_t ∇_zU(z, Σ_t) + ΔΣ_t^{½} ξ.

    Corrector (``n_corrector`` steps at Σ_{t+1} on the energy V_t = U(·, Σ_{t+1}) + ‖y − z_obs‖²/(2(σ_n² − τ)),
    the second term only in phase 2), C_ε = ε·(mask of the moving coordinates):

        ε = min(2 (snr ‖ξ‖ / ‖∇V‖_moving)², eps_cap / L_t),  ‖ξ‖ = √(number n of moving coordinates),
        z' = z − C_ε ∇V(z) + √(2T) C_ε^{½} ξ,

    with L_t = 1/min(Σ_{t+1} on moving coordinates) [+ 1/(σ_n² − τ) in phase 2], an upper bound on the
    curvature of V for *any* prior (−∇² log p_Σ ⪯ Σ⁻¹). ``eps_rule="batch"`` pools ‖∇V‖ over the chains (mean
    of the per-chain norms), as the released code does; ``"chain"`` takes it per chain. ``"auto"`` (default):
    batch for ULA, chain for MALA (a pooled step couples the chains, so "batch" is refused with ``mala=True``).
    Per chain, in low dimension ‖∇V‖² fluctuates like a χ² with n degrees of freedom, so the snr rule gives a
    few chains per level huge steps: without the cap we saw |z| ≈ 750 at σ ≈ 7 (d = 4); with the cap, ULA
    still inflated the posterior variances by ~40 % (MALA's acceptance removes that; pooled ULA was within 4 %).
    ``eps_cap=math.inf`` removes the cap.

    ``mala=True`` accepts z' with probability min(1, α), the paper's §5.2 acceptance

        log α = [V(z) − V(z')]/T + log q(z | z') − log q(z' | z),
        log q(z' | z) = −‖z' − z + ε(z)∇V(z)‖² / (4T ε(z)) − (n/2) log ε(z),

    with ε recomputed at z' for the reverse move. The −(n/2) log ε term (n moving coordinates) is the proposal's
    normaliser; the released code omits it, which biases the chain whenever ε(z') ≠ ε(z). ε is per chain (the
    released code pools the norms over the batch, which couples the chains).

    **Cost.** Evaluations at (z, Σ_t) are reused: NFE = 1 + (N − 1)(1 + ``n_corrector``) for both correctors
    (a MALA step evaluates only its proposal). The released code counts (N − 2)(1 + n) and two per MALA step.

    Initialisation: z_obs = y, z_unobs = x_init + √s_0 ξ (x_init defaults to 0). Returns (z, info) with z the
    sample at Σ_{N−1} (not denoised), info: nfe, wall_s, n_levels, phase2_from (first level with s < σ_n², or
    None), acceptance (MALA: mean acceptance rate over all corrector steps; per chain in ``acceptance_per_chain``),
    eps_mean (mean corrector step per level).
    """
    t0 = time.perf_counter()
    _check_mask_measurement(y_obs, mask)
    mask = torch.broadcast_to(torch.as_tensor(mask, dtype=torch.bool, device=y_obs.device), y_obs.shape[1:])[None]
    obs_var = float(obs_var)
    if not obs_var > 0 or not math.isfinite(obs_var):
        raise ValueError(f"obs_var must be positive and finite (use a tiny value such as 1e-14 for a noiseless mask), got {obs_var}")
    s = torch.as_tensor(var_path, dtype=torch.float64).reshape(-1)
    if s.numel() < 2:
        raise ValueError(f"var_path needs at least 2 levels, got {s.numel()}")
    if not torch.all(s > 0) or not torch.all(s[1:] < s[:-1]):
        raise ValueError("var_path must be positive and strictly decreasing")
    if not isinstance(mala, bool):
        raise ValueError(f"mala must be True or False, got {mala!r}")
    if n_corrector < 0 or int(n_corrector) != n_corrector:
        raise ValueError(f"n_corrector must be a non-negative integer, got {n_corrector}")
    if eps_rule not in ("auto", "chain", "batch"):
        raise ValueError(f"eps_rule must be 'auto', 'chain' or 'batch', got {eps_rule!r}")
    if eps_rule == "auto":
        eps_rule = "chain" if mala else "batch"
    if mala and eps_rule == "batch":
        raise ValueError("mala=True needs per-chain step sizes (eps_rule='chain'): a pooled step couples the chains")
    if not eps_cap > 0:
        raise ValueError(f"eps_cap must be positive (math.inf disables the cap), got {eps_cap}")
    if not snr > 0 or not temperature > 0:
        raise ValueError(f"snr and temperature must be positive, got snr={snr}, temperature={temperature}")
    if x_init is not None and x_init.shape != y_obs.shape:
        raise ValueError(f"x_init must have the shape of y_obs {tuple(y_obs.shape)}, got {tuple(x_init.shape)}")

    dtype, B, N = y_obs.dtype, y_obs.shape[0], s.numel()
    s_list = s.tolist()
    tau = [min(v, obs_var) for v in s_list]
    maskf = mask.to(dtype)

    def var_map(t):            # Σ_t as a (1, ...) map, shared by the chains
        return torch.where(mask, torch.tensor(tau[t], dtype=dtype), torch.tensor(s_list[t], dtype=dtype))

    def moving(t):             # coordinates that the corrector at level t updates
        return torch.ones_like(maskf) if s_list[t] < obs_var else 1 - maskf

    def lik_var(t):
        return obs_var - tau[t]                                         # 0 in phase 1 (point mass)

    def evaluate(z, t):
        u, g = prior.energy_and_grad(z, var_map(t))
        lv = lik_var(t)
        if lv > 0:
            r = (z - y_obs) * maskf
            v, gv = u + 0.5 * _sqnorm(r) / lv, g + r / lv
        else:
            v, gv = u, g
        return u, g, v, gv

    base = torch.zeros_like(y_obs) if x_init is None else x_init.to(dtype)
    z = torch.where(mask, y_obs, base + math.sqrt(s_list[0]) * _randn(y_obs, generator))
    u, g, v, gv = evaluate(z, 0)
    nfe = 1
    accepted = torch.zeros(B, dtype=dtype, device=y_obs.device)
    n_mh = 0
    eps_mean = []
    phase2 = next((t for t in range(N) if s_list[t] < obs_var), None)
    bar = tqdm(range(N - 1), desc=desc, disable=disable, leave=False)
    for t in bar:
        # predictor: reverse step from Σ_t to Σ_{t+1}
        dS = var_map(t) - var_map(t + 1)
        z = z - dS * g + dS.sqrt() * _randn(z, generator)
        u, g, v, gv = evaluate(z, t + 1)
        nfe += 1
        _guard(desc, t, diverge, z, v)
        mv = moving(t + 1)
        n_mv = mv.sum().item()
        curv = 1 / torch.where(mv > 0, var_map(t + 1), math.inf).min().item() + (1 / lik_var(t + 1) if lik_var(t + 1) > 0 else 0)
        cap = eps_cap / curv

        def step_size(grad):
            if eps_rule == "chain":
                eps = 2 * (snr ** 2) * n_mv / _sqnorm(grad * mv).clamp_min(1e-300)        # (B,)
            else:
                eps = (2 * (snr ** 2) * n_mv / _sqnorm(grad * mv).sqrt().mean().pow(2).clamp_min(1e-300)).expand(B)
            return eps.clamp(max=cap)

        eps_level = []
        for _ in range(n_corrector):
            eps = step_size(gv)
            eps_level.append(eps.mean().item())
            C = _bcast(eps, z) * mv
            xi = _randn(z, generator)
            z_new = z - C * gv + math.sqrt(2 * temperature) * C.sqrt() * xi
            u_n, g_n, v_n, gv_n = evaluate(z_new, t + 1)
            nfe += 1
            _guard(desc, t, diverge, z_new, v_n)
            if mala:
                eps_n = step_size(gv_n)
                C_n = _bcast(eps_n, z) * mv
                fwd = -_sqnorm((z_new - z + C * gv) * mv) / (4 * temperature * eps) - 0.5 * n_mv * eps.log()
                bwd = -_sqnorm((z - z_new + C_n * gv_n) * mv) / (4 * temperature * eps_n) - 0.5 * n_mv * eps_n.log()
                log_alpha = (v - v_n) / temperature + bwd - fwd
                acc = torch.log(torch.rand(B, generator=generator, dtype=dtype,
                                           device=generator.device if generator is not None else z.device)
                                ).to(z.device) < log_alpha
                accepted += acc.to(dtype)
                n_mh += 1
                a = _bcast(acc, z)
                z = torch.where(a, z_new, z)
                u, v = torch.where(acc, u_n, u), torch.where(acc, v_n, v)
                g, gv = torch.where(a, g_n, g), torch.where(a, gv_n, gv)
            else:
                z, u, g, v, gv = z_new, u_n, g_n, v_n, gv_n
        eps_mean.append(sum(eps_level) / len(eps_level) if eps_level else float("nan"))
        if callback is not None:
            callback({"level": t + 1, "z": z, "var": var_map(t + 1), "energy": v, "nfe": nfe})
    bar.close()
    acc_chain = accepted / n_mh if (mala and n_mh) else None
    info = {"nfe": nfe, "wall_s": time.perf_counter() - t0, "n_levels": N, "phase2_from": phase2,
            "acceptance": acc_chain.mean().item() if acc_chain is not None else None,
            "acceptance_per_chain": acc_chain, "eps_mean": eps_mean, "mala": mala, "n_corrector": n_corrector,
            "eps_rule": eps_rule, "eps_cap": eps_cap}
    return z, info


# ---------------------------------------------------------------------------------------------------------
# The paper's energy-guided covariance schedule (coordinate masks)
# ---------------------------------------------------------------------------------------------------------
def energy_guided_sample(prior, y_obs: torch.Tensor, mask: torch.Tensor, obs_var: float, s_begin: float,
                         s_end: float, *, gamma: float = 2.5e-2, cov_grad: str = "abs", grad_clip: float | None = None,
                         max_rel_step: float = 0.5, min_rel_step: float = 0.0, max_steps: int = 5000,
                         n_corrector: int = 0, corrector_step: float = 1.0, temperature: float = 1.0,
                         mala: bool = False, x_init: torch.Tensor | None = None,
                         generator: torch.Generator | None = None, callback: Callable[[dict], None] | None = None,
                         disable: bool | None = None, diverge: float = 1e8, desc: str = "energy_guided_sample"):
    """Posterior sampling for a noiseless coordinate mask along a covariance path chosen by the energy itself
    (the paper's energy-guided adaptive schedule, brief §5.3; the MNIST k-pixel experiment of §6.3 item 4).

    Arguments as in :func:`pc_sample`: ``y_obs`` (B, ...) the measurement at the observed coordinates (other
    entries ignored), ``mask`` True where observed (broadcastable to one signal; an image mask identical across
    the channels is reduced to one (1, H, W) map, the variance map the energy models take), ``obs_var`` the
    variance of the observed coordinates (tiny: the released sampler uses 0, our priors need > 0). Only
    ``obs_var ≤ s_end`` is supported (the observed coordinates stay exactly at y; for a noisy mask use
    :func:`pc_sample`, whose phase 2 releases them). The prior must provide
    ``energy_grad_and_var_grad(x, var) -> (U, ∇_xU, ∂U/∂v)`` (:class:`MixturePrior`, :class:`EnergyPrior`).

    **Schedule.** Σ_t = diag(v_t) with v_t = ``obs_var`` on the observed coordinates and, on the unobserved
    ones, v_0 = ``s_begin`` and, with g_t = ∂U/∂v (z_t, Σ_t) the covariance score (per entry of the variance
    map, per chain),

        ΔΣ_t = clip(γ · v_t ⊙ |g_t| ⊙ v_t / n_share,  min_rel_step · v_t,  max_rel_step · v_t),
        v_{t+1} = max(v_t − ΔΣ_t, s_end),   then ΔΣ_t ← v_t − v_{t+1}

    (γ = ``gamma``; n_share the number of signal coordinates that share one variance: C for an image map
    shared by C channels, 1 for vectors). The natural-gradient form Σ∇_ΣUΣ of §5.3 with the released code's
    |·|: each coordinate of each chain loses variance at its own rate, set by how strongly the energy reacts
    to its variance. The schedule stops when every unobserved variance of every chain is at ``s_end``
    (``info["converged"]``) or after ``max_steps`` steps (``converged`` False; the sample is then at the
    variances in ``info["var"]``).

    **Updates.** Predictor (a reverse step with the per-coordinate matrix step ΔΣ_t, zero on the observed and on
    the finished coordinates), then ``n_corrector`` Langevin steps at Σ_{t+1} with preconditioner
    C = η ΔΣ_t (η = ``corrector_step``, T = ``temperature``), as in §5.3:

        z ← z − ΔΣ_t ∇_zU(z, Σ_t) + ΔΣ_t^{½} ξ,
        z' = z − C ∇_zU(z, Σ_{t+1}) + √(2T) C^{½} ξ.

    ``mala=True`` accepts z' with probability min(1, α), log α = [U(z) − U(z')]/T + log q(z | z') −
    log q(z' | z), log q(z' | z) = −‖C^{−½}(z' − z + C∇U(z))‖²/(4T) over the moving coordinates (the §5.2
    acceptance; C does not depend on z within a step, so the proposal normalisers cancel). T = 1 targets
    p(z | Σ_{t+1}); the MNIST runs used T = 0.5 (the law ∝ p² at each level).

    **Target and accuracy.** The end state is a draw of z = x + N(0, Σ_end) given z_obs = y (for
    ``obs_var`` → 0, the posterior of x smoothed by s_end on the unobserved coordinates, an O(s_end) error, as in
    :func:`pc_sample`). A deterministic covariance path makes the predictor a discretised reverse diffusion;
    here the path depends on the iterate (ΔΣ_t is computed from z_t), which the reverse-diffusion argument does
    not cover: MALA correctors make every level exact given its Σ, the schedule itself is a heuristic. Near
    the end, once v falls below a coordinate's conditional variance under p, v ∂U/∂v → 0 like v (the noise is
    no longer identifiable from one draw), so v then falls only like 1/(γ k t): ``min_rel_step`` > 0 (e.g.
    0.01–0.02) bounds the number of steps by ln(s_begin/s_end)/(−ln(1 − min_rel_step)); the default 0 is the
    reference rule. With one variance per coordinate the score is a one-draw estimate and the chains drift
    toward states where it is small (on a 4-d Gaussian, mean |v ∂U/∂v| fell from 0.47 to ≈ 0.15 within 50
    steps), so the early decrease is slower than γ/2 per step.

    **Departures from the released code** (``adaptive_sampler`` / ``dual_sampler``, brief §5.3, §10 item 7):

    * |∂U/∂Σ|: the released code writes sign(g)·clamp(g, ±50) = |clamp(g, ±50)|, so Σ only decreases wherever
      the score is large in either direction. ``cov_grad="abs"`` (default) keeps that rule (the §6.3 MNIST
      numbers were obtained with it). ``cov_grad="positive"`` is the signed natural-gradient descent
      Σ ← Σ − γΣ∇_ΣUΣ on U(z, ·) — toward the noise level actually present in z, the blind-estimation rule of
      §5.4 — with the would-be increases (∂U/∂v < 0: z noisier than Σ says) set to zero: a negative ΔΣ has no
      square root for the predictor noise, so the signed rule cannot be used as written.
    * Clipping: the released clamp of g at ±50 is in units of 1/variance, so it caps the relative decrease
      ΔΣ/v at 50γv: it slows the schedule at small v and its effect depends on the data's scale. Here the
      *relative* decrease is capped, ΔΣ ≤ ``max_rel_step`` · v (scale-free); ``grad_clip=50.0`` adds the
      released raw clamp of |g|. The MNIST sampler's ``clip_grad_norm_`` on a plain tensor is a no-op, so no norm clipping is
      done (none is intended to be reproduced).
    * The floor is ``s_end`` (released: 1e-9) and the last step of each coordinate lands on it exactly; the loop
      runs until all unobserved variances reach it (released: a fixed number of iterations).
    * n_share: for an image map shared by C channels ∂U/∂v sums over the channels (brief §10 item 3), so the
      step is divided by C, making the per-pixel rate independent of C (C = 1 for MNIST: no change there).
    * Initialisation z_unobs = x_init + √s_begin ξ (x_init = 0 by default, as :func:`pc_sample`), a draw at
      level 0; the released MNIST code starts from the zeroed pixels.
    * NFE: one prior call gives U, ∇_zU and ∂U/∂Σ (one forward + backward), and the evaluation at
      (z, Σ_{t+1}) after the predictor is reused for the next step's schedule, so
      NFE = 1 + n_steps·(1 + ``n_corrector``) (a MALA step evaluates only its proposal).

    Returns (z, info): z the sample at the final variances (not denoised), observed coordinates exactly y;
    info: nfe, wall_s, n_steps, converged, var (the final variance map, (B, *map)), var_trace and
    var_max_trace (mean and max over chains and unobserved coordinates of v, from v_0: n_steps + 1 values),
    acceptance (MALA: mean over all corrector steps; per chain in acceptance_per_chain), and the settings.
    """
    t0 = time.perf_counter()
    if not callable(getattr(prior, "energy_grad_and_var_grad", None)):
        raise TypeError("the energy-guided schedule needs the covariance score: the prior must provide "
                        "energy_grad_and_var_grad(x, var) -> (U, ∇_xU, ∂U/∂v) (MixturePrior, EnergyPrior)")
    _check_mask_measurement(y_obs, mask)
    mask = torch.as_tensor(mask, dtype=torch.bool, device=y_obs.device)
    full = torch.broadcast_to(mask, y_obs.shape[1:])
    mask = mask.reshape((1,) * (y_obs.ndim - 1 - mask.ndim) + tuple(mask.shape))
    if y_obs.ndim > 2 and mask.shape[0] > 1 and bool((mask == mask[:1]).all()):
        mask = mask[:1]                                    # one map shared by the channels
    obs_var, s_begin, s_end = float(obs_var), float(s_begin), float(s_end)
    if not obs_var > 0 or not math.isfinite(obs_var):
        raise ValueError(f"obs_var must be positive and finite (a tiny value such as 1e-10 for a noiseless mask), got {obs_var}")
    if not (0 < s_end < s_begin and math.isfinite(s_begin)):
        raise ValueError(f"need 0 < s_end < s_begin < inf, got s_begin={s_begin}, s_end={s_end}")
    if obs_var > s_end:
        raise ValueError(f"obs_var={obs_var:g} > s_end={s_end:g}: the energy-guided sampler keeps the observed coordinates "
                         "at y (noiseless masks); use pc_sample for a noisy mask")
    if not gamma > 0 or not math.isfinite(gamma):
        raise ValueError(f"gamma must be positive and finite, got {gamma}")
    if cov_grad not in ("abs", "positive"):
        raise ValueError(f"cov_grad must be 'abs' (the released rule) or 'positive', got {cov_grad!r}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be None or positive, got {grad_clip}")
    if not 0 < max_rel_step <= 1 or not 0 <= min_rel_step <= max_rel_step:
        raise ValueError(f"need 0 < max_rel_step <= 1 and 0 <= min_rel_step <= max_rel_step, got {max_rel_step}, {min_rel_step}")
    if isinstance(max_steps, bool) or int(max_steps) != max_steps or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps}")
    if n_corrector < 0 or int(n_corrector) != n_corrector:
        raise ValueError(f"n_corrector must be a non-negative integer, got {n_corrector}")
    if not isinstance(mala, bool):
        raise ValueError(f"mala must be True or False, got {mala!r}")
    if not corrector_step > 0 or not temperature > 0:
        raise ValueError(f"corrector_step and temperature must be positive, got {corrector_step}, {temperature}")
    if x_init is not None and x_init.shape != y_obs.shape:
        raise ValueError(f"x_init must have the shape of y_obs {tuple(y_obs.shape)}, got {tuple(x_init.shape)}")

    dtype, B, max_steps = y_obs.dtype, y_obs.shape[0], int(max_steps)
    n_share = y_obs[0].numel() // mask.numel()
    unobs = (~mask)[None].expand(B, *mask.shape)                              # (B, *map)
    obs_x = full[None]
    var = torch.where(unobs, torch.tensor(s_begin, dtype=dtype), torch.tensor(obs_var, dtype=dtype))

    def evaluate(z, v):
        u, g, dv = prior.energy_grad_and_var_grad(z, v)
        if dv.shape != v.shape:
            raise ValueError(f"the prior's covariance score has shape {tuple(dv.shape)}, expected the variance map's "
                             f"{tuple(v.shape)} (image variance maps are shared by the channels: give a (H, W) mask)")
        return u, g, dv

    def rand_unif():
        return torch.rand(B, generator=generator, dtype=dtype,
                          device=generator.device if generator is not None else y_obs.device).to(y_obs.device)

    base = torch.zeros_like(y_obs) if x_init is None else x_init.to(dtype)
    z = torch.where(obs_x, y_obs, base + math.sqrt(s_begin) * _randn(y_obs, generator))
    u, g, dv = evaluate(z, var)
    _guard(desc, 0, diverge, z, u)
    nfe, n_steps, n_mh = 1, 0, 0
    accepted = torch.zeros(B, dtype=dtype, device=y_obs.device)
    var_trace, var_max_trace = [s_begin], [s_begin]
    bar = tqdm(total=max_steps, desc=desc, disable=disable, leave=False)
    while n_steps < max_steps and bool((var[unobs] > s_end).any()):
        # schedule: the covariance score of the current iterate sets each coordinate's decrease
        a = dv.abs() if cov_grad == "abs" else dv.clamp_min(0)
        if grad_clip is not None:
            a = a.clamp(max=grad_clip)
        dS = torch.minimum(torch.maximum(gamma * var * a * var / n_share, min_rel_step * var), max_rel_step * var)
        var_new = torch.where(unobs, (var - dS).clamp_min(s_end), var)
        dS = var - var_new                                     # lands on s_end; 0 on observed / finished entries
        # predictor: reverse step from Σ_t to Σ_{t+1} with the matrix step ΔΣ_t
        z = torch.where(obs_x, z, z - dS * g + dS.sqrt() * _randn(z, generator))
        var = var_new
        u, g, dv = evaluate(z, var)
        nfe += 1
        _guard(desc, n_steps, diverge, z, u)
        # correctors at Σ_{t+1}, preconditioned by η ΔΣ_t
        C = torch.broadcast_to(corrector_step * dS, z.shape)
        moving = C > 0
        C_safe = torch.where(moving, C, 1.0)
        for _ in range(n_corrector):
            z_new = torch.where(moving, z - C * g + math.sqrt(2 * temperature) * C.sqrt() * _randn(z, generator), z)
            u_n, g_n, dv_n = evaluate(z_new, var)
            nfe += 1
            _guard(desc, n_steps, diverge, z_new, u_n)
            if mala:
                def log_q(to, frm, grad):
                    r = torch.where(moving, (to - frm + C * grad).pow(2) / C_safe, 0.0)
                    return -r.reshape(B, -1).sum(1) / (4 * temperature)
                log_alpha = (u - u_n) / temperature + log_q(z, z_new, g_n) - log_q(z_new, z, g)
                acc = rand_unif().log() < log_alpha
                accepted += acc.to(dtype)
                n_mh += 1
                ax, av = _bcast(acc, z), _bcast(acc, dv)
                z, u = torch.where(ax, z_new, z), torch.where(acc, u_n, u)
                g, dv = torch.where(ax, g_n, g), torch.where(av, dv_n, dv)
            else:
                z, u, g, dv = z_new, u_n, g_n, dv_n
        n_steps += 1
        vu = var[unobs]
        var_trace.append(vu.mean().item())
        var_max_trace.append(vu.max().item())
        bar.update(1)
        if callback is not None:
            callback({"step": n_steps, "z": z, "var": var, "delta_var": dS, "energy": u, "nfe": nfe})
    bar.close()
    acc_chain = accepted / n_mh if (mala and n_mh) else None
    info = {"nfe": nfe, "wall_s": time.perf_counter() - t0, "n_steps": n_steps,
            "converged": not bool((var[unobs] > s_end).any()), "var": var, "var_trace": var_trace,
            "var_max_trace": var_max_trace,
            "acceptance": acc_chain.mean().item() if acc_chain is not None else None,
            "acceptance_per_chain": acc_chain, "mala": mala, "n_corrector": n_corrector, "gamma": gamma,
            "cov_grad": cov_grad, "grad_clip": grad_clip, "max_rel_step": max_rel_step,
            "min_rel_step": min_rel_step, "s_begin": s_begin, "s_end": s_end, "obs_var": obs_var}
    return z, info


# ---------------------------------------------------------------------------------------------------------
# Reference chains on the exact posterior energy
# ---------------------------------------------------------------------------------------------------------
def evaluate_posterior(prior, lik: LinearGaussianLikelihood, x: torch.Tensor, prior_var):
    """V(x) = U(x, Σ) + ‖y − Ax‖²/(2σ_n²) and ∇V (one NFE): the posterior energy that the chains sample."""
    u, g = prior.energy_and_grad(x, prior_var)
    v, gv = lik.energy(x)
    return u + v, g + gv


def _posterior_chain(prior, lik, x0, step, n_steps, prior_var, temperature, adjust, adapt_steps, target_accept,
                     generator, callback, disable, diverge, desc):
    t0 = time.perf_counter()
    lik = _check_lik(lik)
    if not torch.is_tensor(x0) or not x0.is_floating_point():
        raise ValueError("x0 must be a floating-point tensor of starting points (B, d) or (B, C, H, W)")
    lik.check(x0)
    callable_step = callable(step)
    if callable_step:             # a rule h(∇V at x0) -> (B,) (annealed_sample's snr rule); no extra evaluation
        V0, G0 = evaluate_posterior(prior, lik, x0, prior_var)
        step = step(G0)
    step = torch.as_tensor(step, dtype=x0.dtype, device=x0.device)
    if step.ndim > 1 or (step.ndim == 1 and step.shape[0] != x0.shape[0]):
        raise ValueError(f"step must be a float or one per chain ({x0.shape[0]},), got {tuple(step.shape)}")
    if not torch.all(step > 0):
        raise ValueError("step must be positive")
    if not prior_var > 0 or not temperature > 0:
        raise ValueError(f"prior_var and temperature must be positive, got {prior_var}, {temperature}")
    if n_steps < 1 or adapt_steps < 0:
        raise ValueError(f"need n_steps >= 1 and adapt_steps >= 0, got {n_steps}, {adapt_steps}")
    if not adjust and adapt_steps:
        raise ValueError("step adaptation needs the Metropolis acceptance (mala_sample)")
    B = x0.shape[0]
    log_h = step.expand(B).log().clone()

    def evaluate(x):
        return evaluate_posterior(prior, lik, x, prior_var)

    x = x0.clone()
    V, G = (V0, G0) if callable_step else evaluate(x)
    nfe, accepted, n_kept = 1, torch.zeros(B, dtype=x.dtype, device=x.device), 0
    bar = tqdm(range(adapt_steps + n_steps), desc=desc, disable=disable, leave=False)
    for k in bar:
        h = _bcast(log_h.exp(), x)
        x_new = x - h * G + torch.sqrt(2 * temperature * h) * _randn(x, generator)
        V_n, G_n = evaluate(x_new)
        nfe += 1
        _guard(desc, k, diverge, x_new, V_n)
        if adjust:
            fwd = -_sqnorm(x_new - x + h * G) / (4 * temperature * log_h.exp())
            bwd = -_sqnorm(x - x_new + h * G_n) / (4 * temperature * log_h.exp())
            log_alpha = (V - V_n) / temperature + bwd - fwd
            u01 = torch.rand(B, generator=generator, dtype=x.dtype,
                             device=generator.device if generator is not None else x.device).to(x.device)
            acc = u01.log() < log_alpha
            if k < adapt_steps:           # Robbins–Monro on log h toward the target acceptance, then frozen
                log_h += (torch.exp(log_alpha.clamp(max=0)) - target_accept) * (1.0 / math.sqrt(k + 1))
            else:
                accepted += acc.to(x.dtype)
                n_kept += 1
            a = _bcast(acc, x)
            x, V, G = torch.where(a, x_new, x), torch.where(acc, V_n, V), torch.where(a, G_n, G)
        else:
            x, V, G = x_new, V_n, G_n
        if callback is not None:
            callback({"step": k, "x": x, "energy": V, "step_size": log_h.exp(), "adapting": k < adapt_steps})
    bar.close()
    info = {"nfe": nfe, "wall_s": time.perf_counter() - t0, "step": log_h.exp(), "prior_var": prior_var}
    if adjust:
        info["acceptance"] = (accepted / max(n_kept, 1)).mean().item()
        info["acceptance_per_chain"] = accepted / max(n_kept, 1)
    return x, info


def mala_sample(prior, lik: LinearGaussianLikelihood, x0: torch.Tensor, *, step, n_steps: int,
                prior_var: float = 1e-6, temperature: float = 1.0, adapt_steps: int = 0, target_accept: float = 0.574,
                generator: torch.Generator | None = None, callback: Callable[[dict], None] | None = None,
                disable: bool | None = None, diverge: float = 1e8, desc: str = "mala_sample"):
    """MALA on the exact posterior p(x | y) ∝ p_{Σ}(x) N(y; Ax, σ_n² I), Σ = ``prior_var``·I tiny (the reference).

    With V(x) = U(x, Σ) + ‖y − Ax‖²/(2σ_n²), step h (a float or one per chain) and temperature T:

        x' = x − h ∇V(x) + √(2Th) ξ,
        log α = [V(x) − V(x')]/T + log q(x | x') − log q(x' | x),   log q(x'|x) = −‖x' − x + h∇V(x)‖²/(4Th),

    accepted with probability min(1, α). ``adapt_steps`` > 0 first runs that many steps adapting each chain's
    log h by Robbins–Monro toward ``target_accept`` (not part of the returned statistics); h is then frozen,
    so the remaining ``n_steps`` are an exact MALA chain. Returns (x, info) with the final state of each chain,
    info: nfe (= 1 + adapt_steps + n_steps), wall_s, step (B,), acceptance (mean over the non-adapting steps),
    acceptance_per_chain. The stationary law is exact up to the O(prior_var) smoothing of the prior.
    """
    return _posterior_chain(prior, lik, x0, step, n_steps, prior_var, temperature, True, adapt_steps, target_accept,
                            generator, callback, disable, diverge, desc)


def langevin_sample(prior, lik: LinearGaussianLikelihood, x0: torch.Tensor, *, step, n_steps: int,
                    prior_var: float = 1e-6, temperature: float = 1.0, generator: torch.Generator | None = None,
                    callback: Callable[[dict], None] | None = None, disable: bool | None = None,
                    diverge: float = 1e8, desc: str = "langevin_sample"):
    """ULA, the unadjusted x ← x − h∇V(x) + √(2Th) ξ on the energy of :func:`mala_sample` (same arguments).

    Its stationary law is biased by O(h): for a Gaussian target of variance s² along an eigen-direction it is
    s²/(1 − h/(2s²)), and it diverges for h ≥ 2s²."""
    return _posterior_chain(prior, lik, x0, step, n_steps, prior_var, temperature, False, 0, 0.574,
                            generator, callback, disable, diverge, desc)


def annealed_sample(prior, lik: LinearGaussianLikelihood, var_path, shape=None, *, n_steps: int = 5, mala: bool = False,
                    snr: float = 0.15, step_scale: float | None = None, adapt_steps: int = 0,
                    target_accept: float = 0.574,
                    x_init: torch.Tensor | None = None, generator: torch.Generator | None = None,
                    callback: Callable[[dict], None] | None = None, disable: bool | None = None,
                    diverge: float = 1e8, desc: str = "annealed_sample"):
    """Annealed Langevin (``mala=False``) or annealed MALA along an isotropic path Σ_t = s_t I, for any A.

    The energy sampler for a general operator (a random projection, a blur), where the coordinate-mask
    predictor–corrector of :func:`pc_sample` does not apply. Level t targets

        π_t(x) ∝ p_{s_t}(x) · N(y; Ax, (σ_n² + s_t ‖A‖²) I),

    the noise-annealed likelihood of Jalal et al. (2021): at large s_t both factors are broad, and
    π_{N−1} → p(x | y) as s_end → 0 (an O(s_end) error, the smoothing of the prior). At each level
    ``n_steps`` Langevin steps x ← x − h∇V_t(x) + √(2h) ξ (the chains of :func:`langevin_sample` /
    :func:`mala_sample`) with the step of the snr rule of annealed Langevin (Song & Ermon 2019), set from the
    gradient at the start of the level: h_t = 2 (snr ‖ξ‖ / ‖∇V_t‖)², ‖ξ‖ = √d, with ‖∇V_t‖ pooled over the
    chains (mean of their norms) for ULA and per chain for MALA. (The curvature bound 1/s_t +
    ‖A‖²/(σ_n² + s_t‖A‖²), safe for any prior, makes the steps of the last levels far too small to mix.) With
    ``mala=True`` each step is Metropolis-adjusted (exact for π_t at fixed t; the constant of U cancels since
    s_t is fixed within a level) and, when ``adapt_steps`` > 0, each level first adapts every chain's step
    toward ``target_accept`` for that many extra steps (counted in the NFE). Chains start at x_init + √s_0 ξ
    (x_init = A⁺y by default), reshaped to ``shape`` ((B, d) by default; (B, C, H, W) for image energies).
    Returns (x, info) with info: nfe = N (1 + n_steps + adapt_steps) (each level re-evaluates its starting
    point at the new s_t), wall_s, acceptance (MALA: the mean over levels of the per-level acceptance),
    acceptance_per_level, step_per_level (mean h). ULA's stationary law is biased by O(h) (see
    :func:`langevin_sample`); MALA removes that bias.
    """
    t0 = time.perf_counter()
    lik = _check_lik(lik)
    s = torch.as_tensor(var_path, dtype=torch.float64).reshape(-1)
    if s.numel() < 1 or not torch.all(s > 0) or not torch.all(s[1:] < s[:-1]):
        raise ValueError("var_path must be a non-empty, positive, strictly decreasing sequence of variances")
    if n_steps < 1 or adapt_steps < 0 or int(n_steps) != n_steps:
        raise ValueError(f"need an integer n_steps >= 1 and adapt_steps >= 0, got {n_steps}, {adapt_steps}")
    if not snr > 0:
        raise ValueError(f"snr must be positive, got {snr}")
    if adapt_steps and not mala:
        raise ValueError("step adaptation needs the Metropolis acceptance (mala=True)")
    dtype = lik.y.dtype
    a_norm2 = torch.linalg.matrix_norm(lik.A, ord=2).item() ** 2
    shape = _signal_shape(lik, shape)
    base = (lik.pinv() if x_init is None else x_init.to(dtype)).reshape(shape)
    x = base + math.sqrt(s[0].item()) * _randn(base, generator)
    nfe, acc_levels, step_levels = 0, [], []
    for t, st in enumerate(tqdm(s.tolist(), desc=desc, disable=disable, leave=False)):
        lik_t = LinearGaussianLikelihood(lik.A, lik.y, lik.noise_var + st * a_norm2)
        if step_scale is not None:          # h ∝ s_t (Song & Ermon's annealed Langevin), capped by the likelihood
            h = step_scale / (1 / st + a_norm2 / lik_t.noise_var)
        else:
            def h(grad):
                norms = _sqnorm(grad).sqrt().clamp_min(1e-150)
                norms = norms if mala else norms.mean().expand_as(norms)
                return 2 * snr**2 * lik.dim / norms.pow(2)
        x, inf = _posterior_chain(prior, lik_t, x, h, n_steps, st, 1.0, mala, adapt_steps if mala else 0,
                                  target_accept, generator, None, True, diverge, desc)
        nfe += inf["nfe"]
        step_levels.append(inf["step"].mean().item())
        if mala:
            acc_levels.append(inf["acceptance"])
        if callback is not None:
            callback({"level": t, "x": x, "var": st, "nfe": nfe})
    return x, {"nfe": nfe, "wall_s": time.perf_counter() - t0, "n_levels": s.numel(), "mala": mala,
               "acceptance": sum(acc_levels) / len(acc_levels) if acc_levels else None,
               "acceptance_per_level": acc_levels, "step_per_level": step_levels}


# ---------------------------------------------------------------------------------------------------------
# Baselines (brief §6.2), on the isotropic Tweedie denoiser of the same prior
# ---------------------------------------------------------------------------------------------------------
def _init_noise(lik, shape, sigma_max, x_init, generator, dtype, device):
    base = torch.zeros(shape, dtype=dtype, device=device) if x_init is None else x_init.to(dtype).reshape(shape)
    return base + sigma_max * _randn(base, generator)


def dps_sample(prior, lik: LinearGaussianLikelihood, shape=None, *, sigma_max: float = 25.0, sigma_min: float = 1e-2,
               n_levels: int = 1000, zeta: float = 0.05, x_init: torch.Tensor | None = None,
               generator: torch.Generator | None = None, callback: Callable[[dict], None] | None = None,
               disable: bool | None = None, diverge: float = 1e8, desc: str = "dps_sample"):
    """DPS (Chung et al. 2023) as in the paper's baselines: the reverse-diffusion predictor plus a gradient step
    on the data misfit of the Tweedie estimate, along σ geometric from ``sigma_max`` to ``sigma_min``:

        x̂₀ = D(x, σ_t²) = x − σ_t² ∇U(x, σ_t²),
        x ← x − (σ_t² − σ_{t+1}²) ∇U(x, σ_t²) + (σ_t² − σ_{t+1}²)^{½} ξ − ζ ∇_x ‖y − A x̂₀(x)‖²,

    with the misfit gradient taken at the pre-step x (backpropagated through the denoiser: a second backward
    pass through ∇U). ζ = 0.05 is the paper's pixel-task value (0.01 for its frequency tasks); it is a step on
    an unnormalised squared error, so its effective rate on the measured subspace is ≈ 2ζ‖A‖², independent of
    the data scale and of σ_n (which DPS ignores); keep 2ζ‖A‖² < 1. Chains start at x_init + σ_max ξ (x_init
    = 0 by default; σ_max = 25 ≫ the scale of [0, 1] or unit-variance data).

    Returns (x at σ_min, info) with info: nfe = ``n_levels − 1`` (one denoiser evaluation, with its
    vector–Jacobian product, per transition), wall_s, sigmas.
    """
    t0 = time.perf_counter()
    lik = _check_lik(lik)
    shape = _signal_shape(lik, shape)
    if not zeta >= 0:
        raise ValueError(f"zeta must be >= 0, got {zeta}")
    sig = _sigma_schedule(sigma_max, sigma_min, n_levels, lik.y.dtype).tolist()
    x = _init_noise(lik, shape, sigma_max, x_init, generator, lik.y.dtype, lik.y.device)
    nfe = 0
    for t in tqdm(range(n_levels - 1), desc=desc, disable=disable, leave=False):
        s2, s2n = sig[t] ** 2, sig[t + 1] ** 2
        xr = x.detach().requires_grad_(True)
        with torch.enable_grad():
            d0, _, g = tweedie_denoise(prior, xr, s2, create_graph=zeta > 0)
            if zeta > 0:
                misfit = (lik.y - lik.forward(d0)).pow(2).sum()
                grad_misfit = torch.autograd.grad(misfit, xr)[0]
            else:
                grad_misfit = torch.zeros_like(x)
        nfe += 1
        x = (x - (s2 - s2n) * g.detach() + math.sqrt(s2 - s2n) * _randn(x, generator) - zeta * grad_misfit).detach()
        _guard(desc, t, diverge, x)
        if callback is not None:
            callback({"level": t + 1, "x": x, "sigma": sig[t + 1], "x0_hat": d0.detach(), "nfe": nfe})
    return x, {"nfe": nfe, "wall_s": time.perf_counter() - t0, "sigmas": sig}


def red_diff_sample(prior, lik: LinearGaussianLikelihood, shape=None, *, sigma_max: float = 25.0,
                    sigma_min: float = 1e-2, n_levels: int = 1000, lr: float = 0.1, betas=(0.9, 0.99),
                    reg_weight: float = 2.0, mu_init: torch.Tensor | None = None,
                    generator: torch.Generator | None = None, callback: Callable[[dict], None] | None = None,
                    disable: bool | None = None, diverge: float = 1e8, desc: str = "red_diff_sample"):
    """RED-Diff (Mardani et al. 2024) as in the paper's baselines: Adam on a point estimate μ, with, at each
    level σ_t (geometric from ``sigma_max`` down to ``sigma_min``), ξ ~ N(0, I), x_t = μ + σ_t ξ,
    ε̂ = (x_t − D(x_t, σ_t²))/σ_t = σ_t ∇U(x_t, σ_t²) and the loss

        L(μ) = reg_weight · σ_t · ⟨stopgrad(ε̂ − ξ), μ⟩ + ½ ‖y − Aμ‖²,

    i.e. the gradient reg_weight·σ_t(ε̂ − ξ) + Aᵀ(Aμ − y) fed to Adam(lr, betas) (the paper: reg_weight 2,
    lr 0.1, betas (0.9, 0.99); lr is a per-coordinate step in data units, sensible for [0, 1] or unit-scale
    data). As in the paper's loss the misfit is not divided by σ_n². μ starts at A⁺y (``mu_init`` to override).
    No backpropagation through the prior: nfe = ``n_levels``. Returns (μ, info)."""
    t0 = time.perf_counter()
    lik = _check_lik(lik)
    shape = _signal_shape(lik, shape)
    if not lr > 0 or not reg_weight >= 0 or len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ValueError(f"need lr > 0, reg_weight >= 0 and betas in [0, 1), got {lr}, {reg_weight}, {betas}")
    sig = _sigma_schedule(sigma_max, sigma_min, n_levels, lik.y.dtype).tolist()
    mu = (lik.pinv().reshape(shape) if mu_init is None else mu_init.to(lik.y.dtype).reshape(shape)).clone()
    mu.requires_grad_(True)
    opt = torch.optim.Adam([mu], lr=lr, betas=tuple(betas))
    nfe = 0
    for t in tqdm(range(n_levels), desc=desc, disable=disable, leave=False):
        s = sig[t]
        xi = _randn(mu, generator)
        with torch.no_grad():
            _, _, g = tweedie_denoise(prior, mu.detach() + s * xi, s * s)
            eps_hat = s * g
            grad = reg_weight * s * (eps_hat - xi) + lik.adjoint(lik.forward(mu.detach()) - lik.y, mu)
        nfe += 1
        opt.zero_grad(set_to_none=True)
        mu.grad = grad
        opt.step()
        _guard(desc, t, diverge, mu.detach())
        if callback is not None:
            callback({"level": t, "x": mu.detach(), "sigma": s, "nfe": nfe})
    return mu.detach(), {"nfe": nfe, "wall_s": time.perf_counter() - t0, "sigmas": sig}


def daps_sample(prior, lik: LinearGaussianLikelihood, shape=None, *, sigma_max: float = 25.0, sigma_min: float = 1e-2,
                n_levels: int = 1000, n_ode: int = 5, n_langevin: int = 100, lr=2e-6, lr_min_ratio: float = 0.01,
                x_init: torch.Tensor | None = None, generator: torch.Generator | None = None,
                callback: Callable[[dict], None] | None = None, disable: bool | None = None,
                diverge: float = 1e8, desc: str = "daps_sample"):
    """DAPS (Zhang et al. 2025) as in the paper's baselines. At each level σ_t (geometric from ``sigma_max`` to
    ``sigma_min``):

    1. x̂₀ = ODE(x_t): ``n_ode`` Euler steps of the probability-flow ODE dx/dσ = (x − D(x, σ²))/σ on a geometric
       grid from σ_t to σ_min, the last one to σ = 0 (which returns D);
    2. ``n_langevin`` Langevin steps from x₀ = x̂₀ on
       W(x₀) = ‖Ax₀ − y‖²/(2σ_n²) + ‖x₀ − x̂₀‖²/(2σ_t²):   x₀ ← x₀ − η_t ∇W(x₀) + √(2η_t) ξ;
    3. x_{t+1} = x₀ + σ_{t+1} ξ (the last level returns x₀).

    η_t = lr · (lr_min_ratio + (1 − lr_min_ratio)(1 − t/(N − 1))): linearly annealed from lr to lr·lr_min_ratio
    (our reading of "annealed"). The paper's lr = 2e-6 was set for its images and σ_n; it barely moves x₀ when
    ‖A‖²/σ_n² is O(1)–O(100) (unit-scale vectors: DAPS then stays near the unconditional sample), so
    ``lr="auto"`` sets η_t = ramp_t · 0.5/L_t, L_t = ‖A‖²/σ_n² + 1/σ_t² the Lipschitz constant of ∇W (a
    quarter of the stability limit 2/L_t at the start, ramp_t as above). The
    Langevin part costs no network evaluation: nfe = ``n_levels · n_ode``. Returns (x₀, info)."""
    t0 = time.perf_counter()
    lik = _check_lik(lik)
    shape = _signal_shape(lik, shape)
    auto = isinstance(lr, str)
    if auto and lr != "auto":
        raise ValueError(f"lr must be a positive float or 'auto', got {lr!r}")
    if not auto and not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if n_ode < 1 or n_langevin < 0 or not 0 < lr_min_ratio <= 1:
        raise ValueError(f"need n_ode >= 1, n_langevin >= 0 and 0 < lr_min_ratio <= 1, got {n_ode}, {n_langevin}, {lr_min_ratio}")
    sig = _sigma_schedule(sigma_max, sigma_min, n_levels, lik.y.dtype).tolist()
    a_norm2 = torch.linalg.matrix_norm(lik.A, ord=2).item() ** 2
    x = _init_noise(lik, shape, sigma_max, x_init, generator, lik.y.dtype, lik.y.device)
    nfe = 0
    x0 = x
    for t in tqdm(range(n_levels), desc=desc, disable=disable, leave=False):
        s = sig[t]
        # 1. probability-flow ODE to σ = 0
        grid = (geometric_path(s, sigma_min, n_ode).tolist() if s > sigma_min * (1 + 1e-9) and n_ode > 1
                else [s] * n_ode)
        grid = grid + [0.0]
        xh = x
        for j in range(n_ode):
            d, _, _ = tweedie_denoise(prior, xh, grid[j] ** 2)
            nfe += 1
            xh = xh + (grid[j + 1] - grid[j]) * (xh - d) / grid[j]
        _guard(desc, t, diverge, xh)
        # 2. Langevin on the local posterior around x̂₀
        ramp = lr_min_ratio + (1 - lr_min_ratio) * (1 - t / max(n_levels - 1, 1))
        eta = ramp * (0.5 / (a_norm2 / lik.noise_var + 1 / s ** 2) if auto else lr)
        x0 = xh.clone()
        for _ in range(n_langevin):
            _, gl = lik.energy(x0)
            x0 = x0 - eta * (gl + (x0 - xh) / s ** 2) + math.sqrt(2 * eta) * _randn(x0, generator)
        _guard(desc, t, diverge, x0)
        # 3. re-noise to the next level
        if t < n_levels - 1:
            x = x0 + sig[t + 1] * _randn(x0, generator)
        if callback is not None:
            callback({"level": t, "x": x, "x0": x0, "x0_hat": xh, "sigma": s, "eta": eta, "nfe": nfe})
    return x0, {"nfe": nfe, "wall_s": time.perf_counter() - t0, "sigmas": sig, "lr": lr}
