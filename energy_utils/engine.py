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

``iterate(source, y0, schedule)`` runs a batch of chains, each with its own t, stopping on its own.
:func:`energy_utils.samplers.ks_sample` *is* the configuration (``DenoiserSource``, ``AdaptiveSchedule``);
with an ``EnergySource`` and a ``FixedSchedule`` the engine takes exactly the test-time steps of
:func:`energy_utils.irem.descend` (which keeps its own loop for training, where it back-propagates through the
unrolled steps). Notebook 05 checks both to the bit. Any source can be combined with any
schedule: that is how notebook 05 gives IREM energies the adaptive step control and noise injection of the
denoiser sampler, and gives denoiser sampling IREM's energy-stabilisation stop.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

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


@dataclass
class Evaluation:
    """What a source returns for a batch of iterates: the direction d(y), the energy (or None), and a clean
    estimate of the solution (the denoiser's x̂(y), or y itself for an explicit energy)."""
    direction: torch.Tensor
    energy: torch.Tensor | None
    estimate: torch.Tensor


class DenoiserSource:
    """Implicit energy of a blind denoiser ``denoiser(y) -> x̂(y)``, optionally constrained by a measurement
    ``measurement`` (B, m) through an operator with orthonormal columns (see :mod:`energy_utils.operators`).

    The denoiser gives the energy's gradient, not its value. With ``energy_proxy=True`` the source reports
    the one scalar it sees for free, ½σ̂² = ‖d‖²/(2N) (= ½σ⁴‖∇log p_σ‖²/N by Miyasawa): the noise level that
    the sampler drives down, which lets IREM's energy-stabilisation stop run on a denoiser."""

    def __init__(self, denoiser: Callable, operator=None, measurement: torch.Tensor | None = None,
                 energy_proxy: bool = False):
        if (operator is None) != (measurement is None):
            raise ValueError("give both an operator and its measurement x_c = operator.M_T(x), or neither")
        self.denoiser, self.operator, self.measurement = denoiser, operator, measurement
        self.energy_proxy = energy_proxy

    @torch.no_grad()
    def __call__(self, y: torch.Tensor, idx: torch.Tensor) -> Evaluation:
        x_hat = self.denoiser(y)
        d = x_hat - y
        if self.operator is not None and self.operator.m > 0:
            xc = self.measurement[idx].to(y.dtype)
            d = d - self.operator.project(d) + self.operator.M(xc) - self.operator.project(y)
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


@dataclass
class Decision:
    h: torch.Tensor        # (b,) step sizes
    gamma: torch.Tensor    # (b,) injected-noise std
    stop: torch.Tensor     # (b,) bool: stop at this evaluation (no update)


class AdaptiveSchedule:
    """KS2021's step control: ramped h_t, noise injection from the measured σ̂_t, stop when σ̂_t < σ_L.
    Defaults σ_L = 0.01, h₀ = 0.01, β = 0.5 (synthesis; 0.01 for inverse problems).

    ``tol`` swaps the stop for IREM's energy-stabilisation rule |E_t − E_{t−1}| < tol (after ``min_steps``
    updates), for sources that report an energy."""
    stochastic = True

    def __init__(self, h0: float = 0.01, beta: float = 0.5, sigma_L: float = 0.01, fixed_h: bool = False,
                 tol: float | None = None, min_steps: int = 1):
        if not 0 < beta <= 1 or not 0 < h0 <= 1 or sigma_L <= 0:
            raise ValueError(f"need 0 < beta <= 1, 0 < h0 <= 1, sigma_L > 0; got beta={beta}, h0={h0}, sigma_L={sigma_L}")
        self.h0, self.beta, self.sigma_L, self.fixed_h = h0, beta, sigma_L, fixed_h
        self.tol, self.min_steps = tol, min_steps

    def __call__(self, t, sigma, energy, prev_energy) -> Decision:
        h = step_size(t.double(), self.h0, self.fixed_h)
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
        stop = t - 1 >= self.n_steps
        if self.tol is not None:
            stop = stop | _settled(energy, prev_energy, t, self.tol, self.min_steps)
        h = torch.full_like(sigma, self.h)
        return Decision(h, torch.zeros_like(sigma), stop)


@dataclass
class IterationResult:
    y: torch.Tensor                 # each chain's last iterate
    estimate: torch.Tensor          # the source's clean estimate (at the last evaluation, or the best-σ̂ one)
    n_evals: torch.Tensor           # evaluations of the source per chain (NFE)
    status: list[str]               # "stopped" | "max_iter" | "stalled" | "diverged"
    sigma: torch.Tensor             # (B,) σ̂ at each chain's last evaluation
    sigma_best: torch.Tensor        # (B,) smallest σ̂ each chain reached
    sigma_trace: torch.Tensor       # (T, B) σ̂_t = ‖d‖/√N per evaluation, NaN once stopped
    h_trace: torch.Tensor           # (T, B)
    energy_trace: torch.Tensor      # (T, B) energies (empty for a source without one)
    iterations: int = 0             # batched evaluations of the source (calls on the active sub-batch)
    wall_time_s: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def n_updates(self) -> torch.Tensor:
        return (self.n_evals - 1).clamp_min(0)


def iterate(source, y0: torch.Tensor, schedule, *, max_iter: int = 10_000, diverge_sigma: float | None = None,
            rebound: float | None = None, keep_best: bool = False, generator: torch.Generator | None = None,
            callback: Callable[[dict], None] | None = None, disable: bool | None = None,
            desc: str = "iterate") -> IterationResult:
    """Run y_t = y_{t−1} + h_t d(y_{t−1}) + γ_t z_t for a batch of chains from ``y0`` (B, ...) until each one's
    schedule stops it, it reaches ``max_iter`` evaluations, it diverges (non-finite, or σ̂ > ``diverge_sigma``),
    or it stalls (σ̂ climbs above ``rebound`` × its smallest σ̂ so far: an imperfect denoiser cannot go below its
    own error floor, and with h_t → 1 the iteration can drift away).

    ``keep_best``: return each chain's estimate at its smallest σ̂ instead of at its last evaluation (the same
    for a chain stopped by σ̂ < σ_L). ``callback(info)`` sees ``{"iteration", "active", "t", "sigma" (B,),
    "h" (B,), "energy", "y"}`` after every iteration."""
    B, shape = y0.shape[0], y0.shape
    N = math.prod(shape[1:])
    device, dtype = y0.device, y0.dtype
    y = y0.detach().clone()
    est = torch.full_like(y, float("nan"))
    sigma = torch.full((B,), float("nan"), dtype=torch.float64, device=device)
    sigma_best = torch.full((B,), float("inf"), dtype=torch.float64, device=device)
    t = torch.zeros(B, dtype=torch.long, device=device)
    prev_e = torch.full((B,), float("nan"), dtype=torch.float64, device=device)
    active = torch.ones(B, dtype=torch.bool, device=device)
    status = ["running"] * B
    sig_rows, h_rows, e_rows = [], [], []

    def randn(n):
        gdev = generator.device if generator is not None else device
        return torch.randn((n, *shape[1:]), generator=generator, device=gdev, dtype=dtype).to(device)

    t0, it = time.perf_counter(), 0
    bar = tqdm(total=max_iter, desc=desc, disable=disable, leave=False)
    while active.any():
        it += 1
        idx = active.nonzero().flatten()
        ya = y[idx]
        ta = t[idx] + 1
        ev = source(ya, idx)
        d = ev.direction
        s = d.flatten(1).double().norm(dim=1) / math.sqrt(N)
        e = ev.energy.double() if ev.energy is not None else None
        dec = schedule(ta, s, e, prev_e[idx])
        t[idx] = ta
        sigma[idx] = s
        better = s < sigma_best[idx]
        sigma_best[idx[better]] = s[better]
        keep = better if keep_best else torch.ones_like(better)
        est[idx[keep]] = ev.estimate.detach()[keep].to(dtype)
        rows_now = {}
        for key, rows, vals in (("sigma", sig_rows, s), ("h", h_rows, dec.h.double()), ("energy", e_rows, e)):
            if vals is None:
                continue
            row = torch.full((B,), float("nan"), dtype=torch.float64, device=device)
            row[idx] = vals.detach()
            rows.append(row)
            rows_now[key] = row
        if e is not None:
            prev_e[idx] = e
        never = torch.zeros_like(s, dtype=torch.bool)
        bad = ~torch.isfinite(s) | ((s > diverge_sigma) if diverge_sigma is not None else never)
        done = dec.stop & ~bad
        stalled = ((s > rebound * sigma_best[idx]) if rebound else never) & ~bad & ~done
        capped = (ta >= max_iter) & ~bad & ~done & ~stalled
        go = ~(bad | done | stalled | capped)
        if go.any():
            gi = go.nonzero().flatten()
            hg = dec.h[gi].to(dtype).view(-1, *([1] * (len(shape) - 1)))
            step = ya[gi] + hg * d[gi].detach()
            if schedule.stochastic:
                step = step + dec.gamma[gi].to(dtype).view_as(hg) * randn(len(gi))
            y[idx[gi]] = step
        for mask, flag in ((bad, "diverged"), (done, "stopped"), (stalled, "stalled"), (capped, "max_iter")):
            for k in idx[mask].tolist():
                status[k] = flag
            active[idx[mask]] = False
        if callback is not None:
            callback({"iteration": it, "active": active.clone(), "t": t.clone(), "sigma": sigma.clone(),
                      "h": rows_now["h"], "energy": rows_now.get("energy"), "y": y})
        bar.update(1)
        bar.set_postfix(active=int(active.sum()), sigma=f"{s.mean().item():.3g}", refresh=False)
    bar.close()
    stack = lambda rows: torch.stack(rows) if rows else torch.zeros(0, B, dtype=torch.float64)
    return IterationResult(y=y, estimate=est, n_evals=t, status=status, sigma=sigma, sigma_best=sigma_best,
                           sigma_trace=stack(sig_rows), h_trace=stack(h_rows), energy_trace=stack(e_rows),
                           iterations=it, wall_time_s=time.perf_counter() - t0,
                           info={"N": N, "max_iter": max_iter, "diverge_sigma": diverge_sigma, "rebound": rebound,
                                 "schedule": type(schedule).__name__, "source": type(source).__name__})
