"""Coarse-to-fine stochastic gradient ascent with the prior implicit in a blind denoiser (Kadkhodaie & Simoncelli 2021).

One batched function, :func:`ks_sample`, covers synthesis (Algorithm 1) and linear inverse problems
(Algorithm 2). It is the configuration (``DenoiserSource``, ``AdaptiveSchedule``) of the unified iteration
:func:`energy_utils.engine.iterate`, plus the initial draw and KS2021's defaults. With f(y) = D(y) − y the
denoiser residual (= σ² ∇ log p_σ(y), Miyasawa) and an operator M with orthonormal columns (``operator=None``:
synthesis, M = 0), each chain b iterates, with its own t, h_t, σ_t:

    h_t  = h₀ t / (1 + h₀ (t − 1))                        (ramped step; ``fixed_h=True``: h_t = h₀)
    d_t  = (I − MMᵀ) f(y_{t−1}) + M (x_c − Mᵀ y_{t−1})   (= f(y_{t−1}) for synthesis)
    σ_t² = ‖d_t‖² / N
    γ_t² = [(1 − β h_t)² − (1 − h_t)²] σ_t²              (the bracket multiplies the *difference* by σ_t²)
    y_t  = y_{t−1} + h_t d_t + γ_t z_t,   z_t ~ N(0, I)

from y₀ ~ N(0.5 (I − MMᵀ)e + M x_c, σ₀² I), until σ_t < σ_L, with β = 0.5 for synthesis and β = 0.01 for
inverse problems unless given (KS2021's values). Chain b draws y₀'s noise and every z_t from its own
generator (seeded from (seed, b)), so its samples do not depend on the other chains of the batch. A chain
stops on its own (converged, ``max_iter`` reached, stalled: σ_t rebounding far above its minimum, or diverged:
σ_t > ``diverge_sigma`` or non-finite) and is no longer evaluated, so a batch costs the sum of its chains'
iterations. The output is the clean estimate x̂(y) = y + f(y) of the evaluation with the smallest σ_t, for a
converged chain its last one (KS2021's code ends with one extra denoising pass; we reuse the evaluation whose σ_t
fell below σ_L, so the NFE of a chain is exactly its number of evaluations: ``n_updates + 1``).

Under the idealised law σ_t = (1 − β h_t) σ_{t−1} (an ideal denoiser), :func:`idealized_iterations` gives the
count T with σ_T < σ_L: 47 / 127 / 661 for β = 0.5 / 0.1 / 0.01 with σ₀ = 1, σ_L = 0.01, h₀ = 0.01, and
919 / 4603 / 46050 with a fixed step h₀. Our ``nfe`` is directly comparable to that T.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .engine import AdaptiveSchedule, DenoiserSource, iterate, make_chain_noise, step_size
from .hybrid import HybridSource
from .operators import LinearOperator, NoMeasurement


def idealized_iterations(beta: float, sigma0: float = 1.0, sigma_L: float = 0.01, h0: float = 0.01,
                         fixed_h: bool = False, max_iter: int = 10_000_000) -> int:
    """Iterations T of the idealised law σ_t = (1 − β h_t) σ_{t−1} until σ_T < σ_L (exact iteration, no noise)."""
    _check(sigma0, sigma_L, h0, beta)
    sigma, t = sigma0, 0
    while sigma >= sigma_L:
        t += 1
        sigma *= 1 - beta * step_size(t, h0, fixed_h)
        if t >= max_iter:
            raise RuntimeError(f"the idealised law did not reach σ_L within {max_iter} iterations")
    return t


def _check(sigma0, sigma_L, h0, beta):
    if not 0 < beta <= 1:
        raise ValueError(f"beta must be in (0, 1] (beta = 1: no injected noise), got {beta}")
    if not 0 < h0 <= 1:
        raise ValueError(f"h0 must be in (0, 1], got {h0}")
    if not 0 < sigma_L < sigma0:
        raise ValueError(f"need 0 < sigma_L < sigma0, got sigma_L={sigma_L}, sigma0={sigma0}")


@dataclass
class SampleResult:
    """Output of :func:`ks_sample` (all per-chain tensors have a leading dimension B)."""
    x: torch.Tensor                  # clean estimate x̂(y) at each chain's evaluation with the smallest σ_t
    y: torch.Tensor                  # each chain's last iterate (noisy, σ ≈ σ_L)
    nfe: torch.Tensor                # denoiser evaluations per chain (= n_updates + 1)
    n_updates: torch.Tensor          # updates y_{t-1} -> y_t per chain
    sigma: torch.Tensor              # last effective noise level σ_t per chain
    status: list[str]                # "converged" | "max_iter" | "stalled" | "diverged" per chain
    sigma_trace: torch.Tensor        # (T_max, B): σ_t per evaluation, NaN once a chain stopped ((0, B) unless record)
    h_trace: torch.Tensor            # (T_max, B): h_t used at that evaluation ((0, B) unless record)
    batched_calls: int = 0           # forward calls of the denoiser on (sub-)batches
    wall_time_s: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def converged(self) -> torch.Tensor:
        return torch.tensor([s == "converged" for s in self.status])


#: KS2021's β: 0.5 for synthesis, 0.01 for inverse problems (the default of ks_sample by mode).
BETA_SYNTHESIS, BETA_INVERSE = 0.5, 0.01
#: The denoiser-convention check runs when σ₀ is at least this (below, the image's own contrast dominates σ̂₀).
CONVENTION_CHECK_MIN_SIGMA0 = 0.5


def ks_sample(denoiser: Callable[[torch.Tensor], torch.Tensor], shape: tuple | None = None, *,
              operator: LinearOperator | None = None, measurement: torch.Tensor | None = None,
              sigma0: float = 1.0, sigma_L: float = 0.01, h0: float = 0.01, beta: float | None = None,
              fixed_h: bool = False, init_value: float = 0.5, max_iter: int | None = None,
              diverge_sigma: float | None = None, rebound: float | None = 3.0,
              seed: int | None = None, chain_seeds: Sequence[int] | torch.Tensor | None = None,
              generator: torch.Generator | None = None, noise_block: int = 16,
              autocast_dtype: torch.dtype | None = None, record: bool = True,
              task_energy: Callable | None = None, task_inputs=None, task_weight: float = 1.0,
              task_scale: str = "sigma2",
              callback: Callable[[dict], None] | None = None, disable: bool | None = None,
              desc: str = "ks_sample") -> SampleResult:
    """Sample B chains with the prior implicit in the blind denoiser ``denoiser(y) -> x̂(y)`` (see module doc).

    Synthesis: give ``shape`` = (B, C, H, W) (or (B, d)) and no operator. Inverse problem: give ``operator``
    (a :class:`~energy_utils.operators.LinearOperator`) and ``measurement`` x_c = Mᵀx of shape (B, m); B chains
    run, one per row (repeat rows for several posterior samples per measurement). Defaults σ₀ = 1, σ_L = 0.01,
    h₀ = 0.01 and β by mode, KS2021's values: β = 0.5 for synthesis, β = 0.01 when an operator with
    measurements is given (``result.info["beta"]`` and ``["beta_rule"]`` say which was used). ``max_iter``
    defaults to 3× the idealised count + 100; ``diverge_sigma`` to 2σ₀. ``rebound``: a chain whose σ_t climbs
    above ``rebound`` × its smallest σ so far has stalled (an imperfect denoiser cannot take it below its own
    error floor and, once h_t → 1, the iteration can drift away); it stops with status "stalled". Every chain
    returns the clean estimate x̂ of its evaluation with the smallest σ_t (for a converged chain: its last one).

    Noise: chain b has its own stream (its y₀ noise, then z_1, z_2, …; see :class:`~energy_utils.engine.ChainNoise`)
    from the seed :func:`~energy_utils.engine.chain_seed` (``seed``, b), or ``chain_seeds[b]`` when given, so its
    result does not depend on the rest of the batch; ``result.info["chain_seeds"]`` lists them (rerun chain 7
    alone with ``chain_seeds=result.info["chain_seeds"][7:8]`` and, for an inverse problem,
    ``measurement[7:8]``). With neither, the seed is one draw of torch's global generator. ``generator``
    (backward compatibility) keeps the former initial draw, y₀ = mean + σ₀·randn(shape, generator) over the whole
    batch, then takes the chain seeds from one draw of it: the iterations are per chain, y₀ is not.

    Guards: the denoiser (an ``nn.Module``) runs in eval mode, its submodules' modes restored afterwards; the
    first evaluation warns when the denoiser's noise estimate σ̂₀ = ‖x̂(y₀) − y₀‖/√N is not within
    [0.5, 1.5] σ₀, the mark of a denoiser that returns the residual f(y) (σ̂₀ ≈ 2σ₀) or the noise −f(y)
    (σ̂₀ ≈ ‖x̂‖/√N) instead of x̂(y) (:func:`~energy_utils.engine.check_denoiser_convention`; run when
    σ₀ ≥ 0.5, ``result.info["sigma0_ratio"]`` = σ̂₀/σ₀). ``autocast_dtype`` (``torch.bfloat16``): the
    denoiser's forward runs under ``torch.autocast`` (CPU or CUDA); σ̂ and the update stay in float32/float64.
    ``record=False`` skips the σ/h traces.

    Task energy (the hybrid of notebook 06, :mod:`energy_utils.hybrid`): ``task_energy(x, y) -> (B,)`` with
    ``task_inputs`` x (one row per chain, or None) adds −σ̂²·``task_weight``·∇_y E_task to the denoiser residual,
    d = f(y) − σ̂² α ∇E_task (the sign-corrected descent direction; ``task_scale="sigma2"``), or −α∇E_task
    (``task_scale="unit"``: the task energy annealed like a likelihood whose variance is the current σ̂², so its
    weight relative to the prior grows as σ̂ falls and the task acts as a hard constraint at the end), before the
    measurement constraint; the convention check and ``autocast_dtype`` then do not apply. ``callback(info)`` is called after every iteration with
    ``{"iteration", "active" (B,) bool, "t", "sigma", "h" (B,), "energy", "y" (B, ...)}``.
    """
    if operator is not None and measurement is None:
        raise ValueError("an operator needs its measurement x_c = operator.M_T(x) (shape (B, m))")
    if operator is None and measurement is not None:
        raise ValueError("a measurement was given without its operator")
    inverse = operator is not None and operator.m > 0
    if beta is None:
        beta = BETA_INVERSE if inverse else BETA_SYNTHESIS
        beta_rule = (f"default for inverse problems (KS2021: {BETA_INVERSE})" if inverse else
                     f"default for synthesis (KS2021: {BETA_SYNTHESIS})")
    else:
        beta_rule = "given"
    _check(sigma0, sigma_L, h0, beta)
    if operator is None:
        if shape is None:
            raise ValueError("give the batch shape, e.g. shape=(16, 1, 28, 28), for synthesis")
        shape = tuple(shape)
        operator = NoMeasurement(shape[1:]) if len(shape) == 4 else None
        B = shape[0]
        device = _device_of(denoiser)
        measurement = torch.zeros(B, 0, device=device)
    else:
        if measurement.ndim != 2 or measurement.shape[1] != operator.m:
            raise ValueError(f"measurement must have shape (B, {operator.m}), got {tuple(measurement.shape)}")
        B = measurement.shape[0]
        shape = (B, *operator.shape)
        device = measurement.device
    max_iter = max_iter or 3 * idealized_iterations(beta, sigma0, sigma_L, h0, fixed_h) + 100
    diverge_sigma = diverge_sigma if diverge_sigma is not None else 2.0 * sigma0
    N = math.prod(shape[1:])
    dtype = measurement.dtype if measurement.is_floating_point() else torch.float32

    # y0 ~ N(0.5 (I - MM^T) e + M x_c, sigma0^2 I)
    if operator is None:                                   # vector data, synthesis
        mean = torch.full(shape, init_value, dtype=dtype, device=device)
    else:
        mean = operator.init_mean(measurement.to(dtype), init_value)
    if generator is not None:                              # former draw: y0 from the generator, then the chain seeds
        if seed is not None or chain_seeds is not None:
            raise ValueError("give at most one of seed, chain_seeds and generator")
        gdev = generator.device
        y0 = mean + sigma0 * torch.randn(shape, generator=generator, device=gdev, dtype=dtype).to(device)
        noise = make_chain_noise(B, shape[1:], device, dtype, generator=generator, block=noise_block)
    else:                                                  # per chain: y0's noise is the first draw of each stream
        noise = make_chain_noise(B, shape[1:], device, dtype, seed=seed, chain_seeds=chain_seeds, block=noise_block)
        y0 = mean + sigma0 * noise.draw()
    if task_energy is None:
        source = DenoiserSource(denoiser, operator if inverse else None, measurement if inverse else None,
                                sigma0=sigma0 if sigma0 >= CONVENTION_CHECK_MIN_SIGMA0 else None,
                                autocast_dtype=autocast_dtype)
    else:
        if task_inputs is not None and len(task_inputs) != B:
            raise ValueError(f"task_inputs must have one row per chain ({B}), got {len(task_inputs)}")
        source = HybridSource(denoiser, task_energy, task_inputs, alpha=task_weight, beta=1.0, explicit_scale=task_scale,
                              operator=operator if inverse else None, measurement=measurement if inverse else None)
    with torch.no_grad():
        r = iterate(source, y0, AdaptiveSchedule(h0, beta, sigma_L, fixed_h), max_iter=max_iter,
                    diverge_sigma=diverge_sigma, rebound=rebound, keep_best=True, noise=noise, record=record,
                    callback=callback, disable=disable, desc=desc)
    return SampleResult(x=r.estimate, y=r.y, nfe=r.n_evals.clone(), n_updates=r.n_updates, sigma=r.sigma.float(),
                        status=["converged" if st == "stopped" else st for st in r.status],
                        sigma_trace=r.sigma_trace, h_trace=r.h_trace, batched_calls=r.iterations,
                        wall_time_s=r.wall_time_s,
                        info={"mode": "inverse problem" if inverse else "synthesis", "beta": beta,
                              "beta_rule": beta_rule, "h0": h0, "sigma0": sigma0, "sigma_L": sigma_L,
                              "fixed_h": fixed_h, "max_iter": max_iter, "diverge_sigma": diverge_sigma,
                              "rebound": rebound, "N": N, "sigma_best": r.sigma_best.float(),
                              "chain_seeds": r.info["chain_seeds"], "noise_block": noise_block,
                              "noise": "legacy generator (batch-wide y0)" if generator is not None else "per chain",
                              "autocast_dtype": autocast_dtype, "sigma0_ratio": getattr(source, "sigma0_ratio", None),
                              "task_weight": task_weight if task_energy is not None else None,
                              "task_scale": task_scale if task_energy is not None else None})


def _device_of(denoiser) -> torch.device:
    try:
        return next(denoiser.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def posterior_summary(x: torch.Tensor, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and per-pixel std over groups of ``n_samples`` consecutive chains (measurement rows repeated with
    ``repeat_interleave(n_samples, 0)``): returns (mean, std), each (B / n_samples, ...)."""
    if x.shape[0] % n_samples:
        raise ValueError(f"batch of {x.shape[0]} is not a multiple of n_samples={n_samples}")
    g = x.view(-1, n_samples, *x.shape[1:])
    return g.mean(1), g.std(1, unbiased=n_samples > 1)


def posterior_mean_mse_estimate(x: torch.Tensor, n_samples: int, clean: torch.Tensor) -> torch.Tensor:
    """Per-image MSE of the *exact* posterior mean E[x|y], estimated from ``n_samples`` ≥ 2 posterior samples.

    For k samples drawn independently from p(x|y), with mean x̄_k,

        E‖x̄_k − x‖²/N = ‖E[x|y] − x‖²/N + tr Cov[x|y] / (kN),

    so the average of k samples is worse than the posterior mean by the posterior variance over k. Subtracting
    the unbiased sample variance (averaged over pixels) divided by k gives an unbiased estimate of the first term
    (the MMSE-type error a k → ∞ average would reach). It is exact only for independent samples from p(x|y);
    clamped at 1e-12. ``x``: chains grouped as in :func:`posterior_summary`; ``clean``: (B / n_samples, ...).
    Returns (B / n_samples,)."""
    if n_samples < 2:
        raise ValueError("posterior_mean_mse_estimate needs n_samples >= 2 to estimate the posterior variance")
    mean, std = posterior_summary(x, n_samples)
    if clean.shape != mean.shape:
        raise ValueError(f"clean images {tuple(clean.shape)} do not match the {tuple(mean.shape)} posterior means")
    mse_k = (mean - clean).pow(2).flatten(1).mean(1)
    return (mse_k - std.pow(2).flatten(1).mean(1) / n_samples).clamp_min(1e-12)
