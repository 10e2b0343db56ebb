"""One iteration engine for implicit and explicit energies (the unified view of notebook 05).

Denoiser prior sampling (Kadkhodaie & Simoncelli 2021) and IREM's reasoning descent (Du et al. 2022) both run

    y_t = y_{t−1} + h_t d(y_{t−1}) + γ_t z_t,      z_t ~ N(0, I),

with d a descent direction of an energy. They differ in where d comes from (an *energy source*) and in how
h_t, γ_t and the stopping time are chosen (a *schedule*):

* :class:`DenoiserSource` — implicit energy E(y) = −log p_σ(y): d = f(y) = D(y) − y = σ²∇log p_σ(y)
  (Miyasawa), projected for a linear measurement x_c = Mᵀx as d = (I − MMᵀ) f(y) + M(x_c − Mᵀy).
  No energy value; the size of d reveals the noise level, σ̂ = ‖d‖/√N.
* :class:`EnergySource` — explicit energy E_θ(x, y): d = −λ ∇_y E_θ(x, y) by autograd, with its value E.
* :class:`AdaptiveSchedule` — KS2021: h_t = h₀t/(1 + h₀(t−1)), γ_t² = [(1 − βh_t)² − (1 − h_t)²] σ̂_t²,
  stop when σ̂_t < σ_L.
* :class:`FixedSchedule` — IREM: h_t = 1 (the step size λ lives in the source), γ_t = 0, stop after
  ``n_steps`` updates or, optionally, when the energy stabilises, |E_t − E_{t−1}| < tol.

``iterate(source, y0, schedule)`` runs a batch of chains, each stopping on its own. All chains start together
and every running chain is evaluated at every iteration, so the running chains share t (and h_t); a chain that
stops leaves the batch at once and is never evaluated again (a batch costs the sum of its chains' evaluations).
:func:`energy_utils.samplers.ks_sample` *is* the configuration (``DenoiserSource``, ``AdaptiveSchedule``);
with an ``EnergySource`` and a ``FixedSchedule`` the engine takes exactly the test-time steps of
:func:`energy_utils.irem.descend` (which keeps its own loop for training, where it back-propagates through the
unrolled steps). Notebook 05 checks both to the bit. Any source can be combined with any
schedule: that is how notebook 05 gives IREM energies the adaptive step control and noise injection of the
denoiser sampler, and gives denoiser sampling IREM's energy-stabilisation stop.

**Per-chain noise.** With a stochastic schedule, chain b draws z_1, z_2, … from its own ``torch.Generator``
seeded with ``chain_seeds[b]`` (by default :func:`chain_seed` (seed, b)), in blocks of K = ``noise_block``
draws (:class:`ChainNoise`). A chain's trajectory therefore depends on its seed, never on the other chains
of its batch: chain 7 of a batch reruns alone with ``chain_seeds=[result.info["chain_seeds"][7]]`` (bit for bit
as long as the source itself gives each chain the same numbers at any batch size, which elementwise and
per-row operations and the CPU convolutions we use do).

**Cost.** The loop keeps σ̂, the best σ̂, the stop tests and the active set on the device; h_t is one Python
number per iteration; the host learns one boolean per iteration (did a chain stop?), and only when one did
does it gather, write back the stopped chains and shrink the batch. Traces are appended as the per-iteration
vectors already computed and assembled once at the end (``record=False`` skips them).
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm


def step_size(t: torch.Tensor | int, h0: float, fixed_h: bool = False):
    """h_t = h₀ t / (1 + h₀ (t − 1)) (t = 1, 2, …), rising from h₀ towards 1; h₀ when ``fixed_h``."""
    if fixed_h:
        return h0 * torch.ones_like(t, dtype=torch.float64) if torch.is_tensor(t) else h0
    return h0 * t / (1 + h0 * (t - 1))


def noise_scale(h, beta: float, sigma):
    """γ_t = σ_t · sqrt((1 − β h_t)² − (1 − h_t)²): the injected noise that makes the effective noise level
    after the step equal (1 − β h_t) σ_t for an ideal denoiser. β = 1 gives γ = 0."""
    g2 = (1 - beta * h) ** 2 - (1 - h) ** 2
    if torch.is_tensor(g2):
        return sigma * g2.clamp_min(0).sqrt()
    return sigma * math.sqrt(max(g2, 0.0))


# ----------------------------------------------------------------------------------------------------------
# per-chain noise

_MASK64 = (1 << 64) - 1


def chain_seed(seed: int, chain: int) -> int:
    """The seed of chain ``chain`` (0, 1, …) in a run seeded with ``seed``: SplitMix64 of (seed, chain), 63 bits.

    It depends on (seed, chain) only, not on the batch size: chain b of ``ks_sample(..., seed=s)`` reruns alone
    with ``ks_sample(..., chain_seeds=[chain_seed(s, b)])``."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + (int(chain) + 1) * 0xD1B54A32D192ED03) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


class ChainNoise:
    """Independent N(0, I) streams, one per chain: chain b draws from ``torch.Generator(device).manual_seed(seeds[b])``.

    ``draw()`` returns every chain's next single draw (shape (B, *shape); :func:`~energy_utils.samplers.ks_sample`
    takes y₀'s noise from it before the iteration starts). ``next()`` returns every held chain's next draw for
    an update, taken from blocks of K = ``block`` draws, ``torch.randn((K, *shape), generator=G_b)``, refilled
    every K calls: the Python loop over chains runs once per K iterations. Chain b's sequence depends on its
    seed, K, the device and the dtype only. ``keep(mask)`` drops the chains that stopped."""

    def __init__(self, seeds: Sequence[int], shape: Sequence[int], device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32, block: int = 16):
        if int(block) < 1:
            raise ValueError(f"noise_block must be a positive number of draws per refill, got {block}")
        self.seeds = [int(s) for s in seeds]
        self.shape, self.dtype, self.block = tuple(shape), dtype, int(block)
        self.device = torch.device(device if device is not None else "cpu")
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in self.seeds]
        self._buffer: torch.Tensor | None = None
        self._pos = self.block                       # position in the current block; == block: refill first

    def __len__(self) -> int:
        return len(self.generators)

    def draw(self) -> torch.Tensor:
        """One draw per chain, (B, *shape), straight from each generator (call it before the first ``next()``)."""
        if self._pos != self.block:
            raise RuntimeError("draw() must come before the iteration's first next() (a block is in use)")
        if not self.generators:
            return torch.empty((0, *self.shape), device=self.device, dtype=self.dtype)
        return torch.stack([torch.randn(self.shape, generator=g, device=self.device, dtype=self.dtype)
                            for g in self.generators])

    def next(self) -> torch.Tensor:
        """The next draw of every held chain, (b, *shape) (a view into the current block)."""
        if self._pos == self.block:
            n = len(self.generators)
            if self._buffer is None or self._buffer.shape[0] != n:
                self._buffer = torch.empty((n, self.block, *self.shape), device=self.device, dtype=self.dtype)
            for i, g in enumerate(self.generators):
                torch.randn((self.block, *self.shape), generator=g, out=self._buffer[i])
            self._pos = 0
        z = self._buffer[:, self._pos]
        self._pos += 1
        return z

    def keep(self, mask: torch.Tensor) -> None:
        """Keep only the chains where ``mask`` (b,) is True (their streams continue where they were)."""
        flags = mask.tolist()
        if len(flags) != len(self.generators):
            raise ValueError(f"mask has {len(flags)} entries for {len(self.generators)} chains")
        self.generators = [g for g, k in zip(self.generators, flags) if k]
        self.seeds = [s for s, k in zip(self.seeds, flags) if k]
        if self._buffer is not None:
            self._buffer = self._buffer[mask.to(self._buffer.device)]


def make_chain_noise(n: int, shape: Sequence[int], device=None, dtype: torch.dtype = torch.float32, *,
                     seed: int | None = None, chain_seeds: Sequence[int] | torch.Tensor | None = None,
                     generator: torch.Generator | None = None, block: int = 16) -> ChainNoise:
    """The :class:`ChainNoise` of ``n`` chains from at most one of: ``chain_seeds`` (one integer per chain, used
    as given), ``seed`` (chain b gets :func:`chain_seed` (seed, b)), ``generator`` (backward compatibility: the
    seed is one draw of it) or nothing (the seed is one draw of torch's global generator, so
    ``torch.manual_seed`` still makes a run reproducible)."""
    given = [name for name, v in (("seed", seed), ("chain_seeds", chain_seeds), ("generator", generator))
             if v is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of seed, chain_seeds and generator, got {' and '.join(given)}")
    if chain_seeds is not None:
        seeds = chain_seeds.tolist() if torch.is_tensor(chain_seeds) else list(chain_seeds)
        if len(seeds) != n:
            raise ValueError(f"chain_seeds holds {len(seeds)} seeds for {n} chains: give one integer per chain")
    else:
        if seed is None:
            gdev = generator.device if generator is not None else "cpu"
            seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=gdev))
        seeds = [chain_seed(seed, b) for b in range(n)]
    return ChainNoise(seeds, shape, device, dtype, block)


# ----------------------------------------------------------------------------------------------------------
# sources

@dataclass
class Evaluation:
    """What a source returns for a batch of iterates: the direction d(y), the energy (or None), and a clean
    estimate of the solution (the denoiser's x̂(y), or y itself for an explicit energy)."""
    direction: torch.Tensor
    energy: torch.Tensor | None
    estimate: torch.Tensor


@contextlib.contextmanager
def eval_mode(module):
    """Run ``module`` in eval mode when it is an ``nn.Module`` (anything else is left alone) and give every
    submodule back its own ``training`` flag afterwards, also when the body raises."""
    if not isinstance(module, torch.nn.Module):
        yield module
        return
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, flag in flags:
            m.training = flag


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _outside_stacklevel() -> int:
    """``stacklevel`` that makes a warning point at the first caller outside energy_utils and torch (the user's
    ks_sample / iterate call), so that each call site warns once."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE_DIR)
                                 or f"{os.sep}torch{os.sep}" in frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    return level


#: Bounds of the convention check: σ̂₀/σ₀ outside [0.5, 1.5] warns (see :func:`check_denoiser_convention`).
CONVENTION_BOUNDS = (0.5, 1.5)


def check_denoiser_convention(x_hat: torch.Tensor, y: torch.Tensor, sigma0: float,
                              bounds: tuple[float, float] = CONVENTION_BOUNDS) -> float:
    """Compare the denoiser's own first noise estimate σ̂₀ = median over chains of ‖x̂(y₀) − y₀‖/√N with the
    known noise level σ₀ of y₀ = m + σ₀z; warn when σ̂₀/σ₀ lies outside ``bounds`` = [0.5, 1.5]. Returns σ̂₀/σ₀.

    A denoiser must return the clean estimate x̂(y); then σ̂₀² ≈ σ₀² + ‖x̂ − m‖²/N, i.e. σ̂₀/σ₀ ≈ 0.93–1.05 for
    our MNIST denoiser at σ₀ = 1 (a weak denoiser that removes only part of the noise gives less, e.g. 0.67).
    One that returns the residual f(y) = x̂(y) − y gives ‖f(y) − y‖²/N ≈ 4σ₀² + ‖x̂ − 2m‖²/N: a ratio of 2 or a
    little more (1.96–2.2 per chain for the MNIST denoiser: a bound of 2 would miss some, hence 1.5). One that
    returns the noise −f(y) = y − x̂(y) (KS2021's released BF_CNN) gives σ̂₀ ≈ ‖x̂‖/√N, a ratio of about
    0.3–0.5 (0.38 for MNIST). Either way the sampler runs to "stalled", "diverged" or "max_iter".
    The test assumes that σ₀ dominates the image's own contrast (σ₀ ≳ 0.5 for images in [0, 1]; KS2021 uses 1)."""
    n = y.shape[0]
    s = torch.linalg.vector_norm((x_hat - y).reshape(n, -1), dim=1, dtype=torch.float64) / math.sqrt(y[0].numel())
    ratio = float(s.median()) / sigma0
    lo, hi = bounds
    if math.isfinite(ratio) and not lo <= ratio <= hi:
        warnings.warn(
            f"denoiser convention: the first noise estimate σ̂₀ = ‖x̂(y₀) − y₀‖/√N = {ratio * sigma0:.3g} (median over "
            f"{n} chains) is {ratio:.2f} × the initial noise level σ₀ = {sigma0:g} (expected between {lo:g} and "
            f"{hi:g}). The sampler expects denoiser(y) to return the clean estimate x̂(y). "
            + ("A ratio near 2 suggests it returns the residual f(y) = x̂(y) − y: pass "
               "lambda y: y + net(y) instead. " if ratio > 1 else
               "A small ratio suggests it returns the noise −f(y) = y − x̂(y) (as KS2021's released BF_CNN): pass "
               "lambda y: y - net(y) instead. ")
            + "If the denoiser is right, check that sigma0 is the noise level of the first iterate.",
            UserWarning, stacklevel=_outside_stacklevel())
    return ratio


_AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)


def constrain_direction(d: torch.Tensor, y: torch.Tensor, operator=None, measurement: torch.Tensor | None = None,
                        idx: torch.Tensor | None = None) -> torch.Tensor:
    """KS2021's constrained direction (I − MMᵀ) d + M(x_c − Mᵀy): free in the unmeasured subspace, and a full
    step onto the measurement x_c in the measured one (d unchanged without an operator). ``idx`` selects the
    rows of ``measurement`` that belong to the running chains."""
    if operator is None or operator.m == 0:
        return d
    xc = (measurement if idx is None else measurement[idx]).to(y.dtype)
    return d - operator.project(d) + operator.M(xc) - operator.project(y)


class DenoiserSource:
    """Implicit energy of a blind denoiser ``denoiser(y) -> x̂(y)``, optionally constrained by a measurement
    ``measurement`` (B, m) through an operator with orthonormal columns (see :mod:`energy_utils.operators`):

        d(y) = (I − MMᵀ)(x̂(y) − y) + M(x_c − Mᵀy)      (= x̂(y) − y without a measurement).

    The denoiser gives the energy's gradient, not its value. With ``energy_proxy=True`` the source reports
    the one scalar it sees for free, ½σ̂² = ‖d‖²/(2N) (= ½σ⁴‖∇log p_σ‖²/N by Miyasawa): the noise level that
    the sampler drives down, which lets IREM's energy-stabilisation stop run on a denoiser.

    ``sigma0``: the noise level of the first iterate, when known; the first call then checks the denoiser's
    output convention (:func:`check_denoiser_convention`; its ratio σ̂₀/σ₀ is kept in ``sigma0_ratio``).
    ``autocast_dtype`` (``torch.bfloat16`` or ``torch.float16``): run the denoiser's forward under
    ``torch.autocast`` on the iterate's device (CPU or CUDA); its output is cast back to the iterate's dtype, so
    d, σ̂ and the update stay in float32/float64.
    :func:`iterate` evaluates an ``nn.Module`` denoiser in eval mode."""

    def __init__(self, denoiser: Callable, operator=None, measurement: torch.Tensor | None = None,
                 energy_proxy: bool = False, *, sigma0: float | None = None,
                 autocast_dtype: torch.dtype | None = None):
        if (operator is None) != (measurement is None):
            raise ValueError("give both an operator and its measurement x_c = operator.M_T(x), or neither")
        if autocast_dtype is not None and autocast_dtype not in _AUTOCAST_DTYPES:
            raise ValueError(f"autocast_dtype must be None, torch.bfloat16 or torch.float16, got {autocast_dtype}")
        if sigma0 is not None and not sigma0 > 0:
            raise ValueError(f"sigma0 must be the (positive) noise level of the first iterate, got {sigma0}")
        self.denoiser, self.operator, self.measurement = denoiser, operator, measurement
        self.energy_proxy, self.sigma0, self.autocast_dtype = energy_proxy, sigma0, autocast_dtype
        self._checked = sigma0 is None
        self.sigma0_ratio: float | None = None        # σ̂₀/σ₀ of the convention check, once it ran

    @torch.no_grad()
    def __call__(self, y: torch.Tensor, idx: torch.Tensor) -> Evaluation:
        if self.autocast_dtype is None:
            x_hat = self.denoiser(y)
        else:
            with torch.autocast(device_type=y.device.type, dtype=self.autocast_dtype):
                x_hat = self.denoiser(y)
            x_hat = x_hat.to(y.dtype)
        if not self._checked:
            self._checked = True
            self.sigma0_ratio = check_denoiser_convention(x_hat, y, self.sigma0)
        d = constrain_direction(x_hat - y, y, self.operator, self.measurement, idx)
        energy = 0.5 * d.flatten(1).double().pow(2).mean(1) if self.energy_proxy else None
        return Evaluation(d, energy, x_hat)


class EnergySource:
    """Explicit energy ``energy(x, y) -> (B,)``: d = −λ ∇_y E(x, y) (λ = ``scale``), computed by autograd."""

    def __init__(self, energy: Callable, x: torch.Tensor, scale: float = 1.0):
        self.energy, self.x, self.scale = energy, x, scale

    def __call__(self, y: torch.Tensor, idx: torch.Tensor) -> Evaluation:
        with torch.enable_grad():
            yg = y.detach().requires_grad_(True)
            e = self.energy(self.x[idx], yg)
            if e.dim() != 1 or e.shape[0] != y.shape[0]:
                raise ValueError(f"the energy must return one scalar per problem, shape [{y.shape[0]}], got {tuple(e.shape)}")
            (g,) = torch.autograd.grad(e.sum(), yg)
        return Evaluation(-(self.scale * g), e.detach(), y)


# ----------------------------------------------------------------------------------------------------------
# schedules

@dataclass
class Decision:
    """A schedule's answer for the b running chains: each field is a Python number (the same for every chain)
    or a (b,) tensor."""
    h: float | torch.Tensor            # step sizes h_t
    gamma: float | torch.Tensor        # injected-noise std γ_t
    stop: bool | torch.Tensor          # stop at this evaluation (no update)


class AdaptiveSchedule:
    """KS2021's step control: ramped h_t, noise injection from the measured σ̂_t, stop when σ̂_t < σ_L.
    Defaults σ_L = 0.01, h₀ = 0.01, β = 0.5 (synthesis; 0.01 for inverse problems).

    ``tol`` swaps the stop for IREM's energy-stabilisation rule |E_t − E_{t−1}| < tol (after ``min_steps``
    updates), for sources that report an energy.

    A schedule is called as ``schedule(t, sigma, energy, prev_energy) -> Decision`` with t the evaluation count
    (an int: the running chains share it), σ̂_t (b,) in the iterate's dtype, and the energies E_t, E_{t−1} (b,)
    float64 or None."""
    stochastic = True

    def __init__(self, h0: float = 0.01, beta: float = 0.5, sigma_L: float = 0.01, fixed_h: bool = False,
                 tol: float | None = None, min_steps: int = 1):
        if not 0 < beta <= 1 or not 0 < h0 <= 1 or sigma_L <= 0:
            raise ValueError(f"need 0 < beta <= 1, 0 < h0 <= 1, sigma_L > 0; got beta={beta}, h0={h0}, sigma_L={sigma_L}")
        self.h0, self.beta, self.sigma_L, self.fixed_h = h0, beta, sigma_L, fixed_h
        self.tol, self.min_steps = tol, min_steps

    def __call__(self, t, sigma, energy, prev_energy) -> Decision:
        h = step_size(t, self.h0, self.fixed_h)
        stop = sigma < self.sigma_L if self.tol is None else _settled(energy, prev_energy, t, self.tol, self.min_steps)
        return Decision(h, noise_scale(h, self.beta, sigma), stop)


def _settled(energy, prev_energy, t, tol, min_steps):
    """IREM's stop: |E_t − E_{t−1}| < tol once at least ``min_steps`` updates are done (t counts evaluations)."""
    if energy is None:
        raise ValueError("an energy-stabilisation stop needs a source that reports an energy "
                         "(an explicit energy, or DenoiserSource(..., energy_proxy=True))")
    return ((energy - prev_energy).abs() < tol) & (t - 1 >= min_steps) & torch.isfinite(prev_energy)


class FixedSchedule:
    """IREM's descent: constant step ``h`` (1 when the step size λ lives in the source), no noise, stop after
    ``n_steps`` updates, or earlier when |E_t − E_{t−1}| < ``tol`` once ``min_steps`` updates are done (the
    stop needs a source that reports an energy: an explicit energy, or a denoiser with ``energy_proxy``)."""
    stochastic = False

    def __init__(self, n_steps: int, h: float = 1.0, tol: float | None = None, min_steps: int = 1):
        if n_steps < 0:
            raise ValueError("n_steps must be >= 0")
        self.n_steps, self.h, self.tol, self.min_steps = n_steps, h, tol, min_steps

    def __call__(self, t, sigma, energy, prev_energy) -> Decision:
        stop = bool(t - 1 >= self.n_steps)
        if self.tol is not None:
            stop = _settled(energy, prev_energy, t, self.tol, self.min_steps) | stop
        return Decision(float(self.h), 0.0, stop)


# ----------------------------------------------------------------------------------------------------------
# the iteration

STATUSES = ("running", "stopped", "max_iter", "stalled", "diverged")    # status codes 0 … 4
_RUNNING, _STOPPED, _MAX_ITER, _STALLED, _DIVERGED = range(5)


@dataclass
class IterationResult:
    y: torch.Tensor                 # each chain's last iterate
    estimate: torch.Tensor          # the source's clean estimate (at the last evaluation, or the best-σ̂ one)
    n_evals: torch.Tensor           # evaluations of the source per chain (NFE)
    status: list[str]               # "stopped" | "max_iter" | "stalled" | "diverged"
    sigma: torch.Tensor             # (B,) σ̂ at each chain's last evaluation
    sigma_best: torch.Tensor        # (B,) smallest σ̂ each chain reached
    sigma_trace: torch.Tensor       # (T, B) σ̂_t = ‖d‖/√N per evaluation, NaN once stopped ((0, B) unless record)
    h_trace: torch.Tensor           # (T, B) ((0, B) unless record)
    energy_trace: torch.Tensor      # (T, B) energies ((0, B) for a source without one, or unless record)
    iterations: int = 0             # batched evaluations of the source (calls on the active sub-batch)
    wall_time_s: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def n_updates(self) -> torch.Tensor:
        return (self.n_evals - 1).clamp_min(0)


def _status_codes(s, limit, stop, sbest, rebound, capped: bool) -> torch.Tensor:
    """(b,) int8 status codes of one evaluation, in priority order diverged > stopped > stalled > max_iter."""
    code = torch.full(s.shape, _MAX_ITER if capped else _RUNNING, dtype=torch.int8, device=s.device)
    if rebound:
        code = code.masked_fill(s > rebound * sbest, _STALLED)
    stop = stop if torch.is_tensor(stop) else torch.full(s.shape, bool(stop), device=s.device)
    code = code.masked_fill(stop, _STOPPED)
    return code.masked_fill(~(s <= limit), _DIVERGED)


def _assemble(rows: list, segments: list, B: int, device) -> torch.Tensor:
    """(T, B) trace from per-iteration rows (each a number or a (b,) tensor over the chains running then) and
    the segments (first row, end row, chain indices) between two changes of the running set."""
    T = segments[-1][1] if segments else 0
    out = torch.full((T, B), float("nan"), dtype=torch.float64, device=device)
    for a, z, ix in segments:
        vals = rows[a:z]
        if all(torch.is_tensor(v) for v in vals):
            block = torch.stack(vals).to(torch.float64)
        elif not any(torch.is_tensor(v) for v in vals):
            block = torch.tensor(vals, dtype=torch.float64, device=device)[:, None].expand(-1, len(ix))
        else:
            block = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).expand(len(ix)) for v in vals])
        out[a:z, ix] = block
    return out


def _per_chain(v, dtype: torch.dtype, bview: tuple):
    """A schedule's h or γ ready to multiply (b, ...) iterates: a number as it is, a (b,) tensor as (b, 1, …)."""
    if not torch.is_tensor(v):
        return v
    return (v if v.dtype == dtype else v.to(dtype)).view(bview)


def _plain(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` detached and in ``dtype``, without a call when it already is (this runs every iteration)."""
    if x.requires_grad:
        x = x.detach()
    return x if x.dtype == dtype else x.to(dtype)


def iterate(source, y0: torch.Tensor, schedule, *, max_iter: int = 10_000, diverge_sigma: float | None = None,
            rebound: float | None = None, keep_best: bool = False, seed: int | None = None,
            chain_seeds: Sequence[int] | torch.Tensor | None = None, noise: ChainNoise | None = None,
            generator: torch.Generator | None = None, noise_block: int = 16, record: bool = True,
            callback: Callable[[dict], None] | None = None, disable: bool | None = None,
            desc: str = "iterate") -> IterationResult:
    """Run y_t = y_{t−1} + h_t d(y_{t−1}) + γ_t z_t for a batch of chains from ``y0`` (B, ...) until each one's
    schedule stops it, it reaches ``max_iter`` evaluations, it diverges (non-finite, or σ̂ > ``diverge_sigma``),
    or it stalls (σ̂ climbs above ``rebound`` × its smallest σ̂ so far: an imperfect denoiser cannot go below its
    own error floor, and with h_t → 1 the iteration can drift away). A chain that stops is not updated at that
    evaluation and never evaluated again.

    Noise (stochastic schedules only; see :class:`ChainNoise`): chain b draws z_t from its own generator, seeded
    from ``chain_seeds[b]`` (one integer per chain), or from :func:`chain_seed` (``seed``, b), or from one draw
    of ``generator`` (kept for backward compatibility), or from one draw of torch's global generator when none
    is given; or pass a ready ``noise`` (e.g. one whose ``draw()`` gave y₀'s noise, as ``ks_sample`` does).
    ``result.info["chain_seeds"]`` lists the seeds used. ``noise_block``: draws per refill (part of a stream's
    definition: keep it to reproduce a chain).

    ``keep_best``: return each chain's estimate at its smallest σ̂ instead of at its last evaluation (the same
    for a chain stopped by σ̂ < σ_L). ``record``: keep the (T, B) traces of σ̂, h and the energy (cheap: the
    per-iteration vectors are kept and assembled at the end). ``callback(info)`` sees ``{"iteration",
    "active" (B,), "t" (B,), "sigma" (B,), "h" (B,), "energy" (B,) or None, "y" (B, ...)}`` after every
    iteration (building these full-batch views costs a little time per iteration). An ``nn.Module`` denoiser of a
    :class:`DenoiserSource` runs in eval mode (its submodules' flags are restored afterwards)."""
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1 (evaluations per chain), got {max_iter}")
    B, shape = y0.shape[0], tuple(y0.shape)
    N = math.prod(shape[1:])
    sqrt_n = math.sqrt(N)
    device, dtype = y0.device, y0.dtype
    bview = (-1,) + (1,) * (len(shape) - 1)
    dims = tuple(range(1, len(shape)))
    # diverged: σ̂ > limit or σ̂ not finite (the largest finite number as default limit: +inf fails σ̂ ≤ limit)
    limit = torch.finfo(dtype).max if diverge_sigma is None else float(diverge_sigma)
    if schedule.stochastic:
        if noise is None:
            noise = make_chain_noise(B, shape[1:], device, dtype, seed=seed, chain_seeds=chain_seeds,
                                     generator=generator, block=noise_block)
        elif seed is not None or chain_seeds is not None or generator is not None:
            raise ValueError("give the noise either as noise=ChainNoise(...) or by seed/chain_seeds/generator, "
                             "not both")
        if len(noise) != B:
            raise ValueError(f"the noise holds {len(noise)} chains for a batch of {B}")
    seeds_used = list(noise.seeds) if schedule.stochastic else None

    # per-chain results, written when a chain stops
    y = y0.detach().clone()
    est = torch.full_like(y, float("nan"))
    sigma = torch.full((B,), float("nan"), dtype=torch.float64, device=device)
    sigma_best = torch.full((B,), float("inf"), dtype=torch.float64, device=device)
    n_evals = torch.zeros(B, dtype=torch.long, device=device)
    codes = torch.zeros(B, dtype=torch.int8, device=device)
    # the running chains (b of them), compact
    idx = torch.arange(B, device=device)
    ya = y0.detach()
    sbest = torch.full((B,), float("inf"), dtype=dtype, device=device)
    prev_e = torch.full((B,), float("nan"), dtype=torch.float64, device=device)
    est_a = est.clone() if keep_best else None
    b = B
    sig_rows, h_rows, e_rows, segments, seg_start = [], [], [], [], 0
    n_compactions = 0

    t0, it, shown = time.perf_counter(), 0, 0
    bar = tqdm(total=max_iter, desc=desc, disable=disable, leave=False)
    with eval_mode(getattr(source, "denoiser", None)):
        while b > 0:
            it += 1
            idx_ev = idx
            ev = source(ya, idx)
            d = ev.direction.detach() if ev.direction.requires_grad else ev.direction
            s = torch.linalg.vector_norm(d, dim=dims) / sqrt_n                  # σ̂ = ‖d‖/√N, in y's dtype
            e = ev.energy.detach().double() if ev.energy is not None else None
            dec = schedule(it, s, e, prev_e)
            better = s < sbest
            sbest = torch.where(better, s, sbest)
            if keep_best:
                est_a = torch.where(better.view(bview), _plain(ev.estimate, dtype), est_a)
            # a chain goes on while σ̂ ≤ min(rebound · best σ̂, diverge_sigma) (False for NaN) and its schedule goes on
            upper = (sbest * rebound).clamp_max(limit) if rebound else limit
            halt = ~(s <= upper) | dec.stop
            if record:
                sig_rows.append(s)
                h_rows.append(dec.h)
                if e is not None:
                    e_rows.append(e)
            h, gamma = dec.h, dec.gamma
            changed = it >= max_iter or bool(halt.any())        # the one host synchronisation per iteration
            e_ev = e
            if changed:                                         # write back the chains that stop, shrink the batch
                code = _status_codes(s, limit, dec.stop, sbest, rebound, capped=it >= max_iter)
                halted = code != _RUNNING
                hi = idx[halted]
                y[hi] = ya[halted]
                est[hi] = (est_a if keep_best else _plain(ev.estimate, dtype))[halted]
                sigma[hi], sigma_best[hi] = s[halted].double(), sbest[halted].double()
                n_evals[hi], codes[hi] = it, code[halted]
                if record:
                    segments.append((seg_start, it, idx))
                    seg_start = it
                go = ~halted
                idx, ya, d, sbest, prev_e = idx[go], ya[go], d[go], sbest[go], prev_e[go]
                e = e[go] if e is not None else None
                est_a = est_a[go] if keep_best else None
                h = h[go] if torch.is_tensor(h) else h
                gamma = gamma[go] if torch.is_tensor(gamma) else gamma
                if noise is not None:
                    noise.keep(go)
                b = len(idx)
                n_compactions += 1
            if b > 0:
                if e is not None:
                    prev_e = e
                step = ya + _per_chain(h, dtype, bview) * d
                if noise is not None:
                    step = step + _per_chain(gamma, dtype, bview) * noise.next()
                ya = step
            if callback is not None:
                callback(_callback_info(it, B, idx, idx_ev, ya, y, s, sigma, n_evals, dec.h, e_ev))
            if not bar.disable and (changed or it - shown >= 25):
                bar.update(it - shown)
                shown = it
                bar.set_postfix(active=b, sigma=f"{float(s.mean()):.3g}", refresh=False)
    bar.close()
    traces = [_assemble(rows, segments, B, device) if record and rows else
              torch.zeros(0, B, dtype=torch.float64, device=device) for rows in (sig_rows, h_rows, e_rows)]
    return IterationResult(y=y, estimate=est, n_evals=n_evals, status=[STATUSES[c] for c in codes.tolist()],
                           sigma=sigma, sigma_best=sigma_best, sigma_trace=traces[0], h_trace=traces[1],
                           energy_trace=traces[2], iterations=it, wall_time_s=time.perf_counter() - t0,
                           info={"N": N, "max_iter": max_iter, "diverge_sigma": diverge_sigma, "rebound": rebound,
                                 "schedule": type(schedule).__name__, "source": type(source).__name__,
                                 "chain_seeds": seeds_used, "noise_block": noise.block if noise is not None else None,
                                 "compactions": n_compactions, "record": record})


def _callback_info(it, B, idx, idx_ev, ya, y, s, sigma, n_evals, h, energy) -> dict:
    """Full-batch views for a callback: chains evaluated at this iteration are ``idx_ev``, still running ``idx``."""
    device = s.device
    sigma[idx_ev] = s.double()
    y[idx] = ya
    active = torch.zeros(B, dtype=torch.bool, device=device)
    active[idx] = True
    t = n_evals.clone()
    t[idx] = it
    h_row = torch.full((B,), float("nan"), dtype=torch.float64, device=device)
    h_row[idx_ev] = torch.as_tensor(h, dtype=torch.float64, device=device)
    e_row = None
    if energy is not None:
        e_row = torch.full((B,), float("nan"), dtype=torch.float64, device=device)
        e_row[idx_ev] = energy
    return {"iteration": it, "active": active, "t": t, "sigma": sigma.clone(), "h": h_row, "energy": e_row, "y": y}
