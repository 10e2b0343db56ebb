"""The hybrid energy of task-adapted denoisers, with the update's signs derived rather than copied.

The unified-framework seed (§5.2) combines a learned task energy, the implicit energy of a frozen blind
denoiser and constraints,

    E(y) = α E_task(x, y) + β E_implicit(y) + γ E_constraints(x, y),     E_implicit(y) = −log p_σ(y),

and writes the update as d_t = α∇E_task − β f(y) + γ∇E_constraints, y_t = y_{t−1} + h_t d_t + γ_t z_t.
With f(y) = D(y) − y = σ²∇log p_σ(y) = −σ²∇E_implicit (Miyasawa), that d_t is +σ²-weighted *ascent* on
every term. The descent direction is its opposite:

    d_t = −∇E·σ̂² = β f(y) − σ̂² (α ∇E_task + γ ∇E_constraints),      σ̂² = ‖f(y)‖²/N,

i.e. the denoiser residual plus the explicit gradients scaled by the noise variance the denoiser reports (the
same σ² that turns a score into a residual), so h_t ∈ (0, 1] keeps KS2021's meaning. :class:`HybridSource`
plugs this direction into :func:`energy_utils.engine.iterate`; ``seed_signs=True`` reproduces the seed's form
so that notebooks can show it climbs the energy.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .engine import Evaluation


class HybridSource:
    """Engine source for E = α E_task + β E_implicit + γ E_constraints (see module doc).

    ``task_energy(x, y)`` and ``constraint_energy(x, y)`` return one scalar per problem (B,); ``denoiser(y)``
    returns x̂(y). The reported energy is the explicit part α E_task + γ E_constraints (the implicit part has
    no value, only a gradient). σ̂² is the denoiser's own estimate ‖f‖²/N (floored at ``noise_floor`` so the
    explicit terms keep acting once the denoiser sees no noise), or ``sigma2`` when the noise level is known;
    with the exact σ², d = −σ²∇E exactly, so a small enough step always lowers E.
    """

    def __init__(self, denoiser: Callable, task_energy: Callable | None, x, alpha: float = 1.0, beta: float = 1.0,
                 gamma: float = 0.0, constraint_energy: Callable | None = None, noise_floor: float = 1e-4,
                 sigma2: float | None = None, seed_signs: bool = False):
        if alpha < 0 or beta < 0 or gamma < 0:
            raise ValueError(f"weights must be non-negative, got alpha={alpha}, beta={beta}, gamma={gamma}")
        if task_energy is None and alpha > 0:
            raise ValueError("alpha > 0 needs a task_energy")
        if constraint_energy is None and gamma > 0:
            raise ValueError("gamma > 0 needs a constraint_energy")
        self.denoiser, self.task_energy, self.constraint_energy = denoiser, task_energy, constraint_energy
        self.x, self.alpha, self.beta, self.gamma = x, alpha, beta, gamma
        self.noise_floor, self.sigma2, self.seed_signs = noise_floor, sigma2, seed_signs

    def explicit(self, x, y, create_graph: bool = False):
        """(α E_task + γ E_constraints, its gradient in y); zeros when both weights vanish."""
        with torch.enable_grad():
            yg = y if y.requires_grad else y.detach().requires_grad_(True)
            e = torch.zeros(y.shape[0], device=y.device, dtype=y.dtype)
            if self.alpha > 0:
                e = e + self.alpha * self.task_energy(x, yg)
            if self.gamma > 0:
                e = e + self.gamma * self.constraint_energy(x, yg)
            if not e.requires_grad:
                return e, torch.zeros_like(y)
            (g,) = torch.autograd.grad(e.sum(), yg, create_graph=create_graph)
        return e, g

    def direction(self, x, y, create_graph: bool = False):
        """(d, x̂, explicit energy) for iterates y; differentiable w.r.t. the task energy's parameters when
        ``create_graph`` (training through unrolled iterations)."""
        with torch.set_grad_enabled(create_graph):
            x_hat = self.denoiser(y)
        f = x_hat - y
        N = math.prod(y.shape[1:])
        if self.sigma2 is not None:   # a known noise level (e.g. a non-blind exact denoiser)
            s2 = torch.full((y.shape[0],) + (1,) * (y.dim() - 1), float(self.sigma2), dtype=y.dtype, device=y.device)
        else:
            s2 = (f.detach().flatten(1).pow(2).sum(1) / N).clamp_min(self.noise_floor).view(-1, *[1] * (y.dim() - 1))
        e, g = self.explicit(x, y, create_graph)
        if self.seed_signs:
            d = s2 * g - self.beta * f          # the seed's α∇E_task − βf + γ∇E_c, scaled like ours
        else:
            d = self.beta * f - s2 * g
        return d, x_hat, e

    def __call__(self, y: torch.Tensor, idx: torch.Tensor) -> Evaluation:
        x = self.x[idx] if self.x is not None else None
        d, x_hat, e = self.direction(x, y)
        return Evaluation(d.detach(), e.detach(), x_hat.detach())
