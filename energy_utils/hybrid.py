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

Two weightings of the explicit terms are offered (``explicit_scale``):

* ``"sigma2"``: d = βf − σ̂²(α∇E_task + γ∇E_c) = −σ̂²∇E, the noise-variance-preconditioned descent above;
* ``"unit"``: d = βf − (α∇E_task + γ∇E_c) = −σ̂²∇E_σ with E_σ = β E_implicit + (α E_task + γ E_c)/σ̂², i.e. the
  explicit terms are annealed by 1/σ̂² like a Gaussian likelihood whose variance is the current noise level.
  With β = 0 this is plain gradient descent on the explicit energy: IREM's update, so the same source runs an
  IREM energy trained from scratch. Notebook 06 trains its task energies in this form.

``balance="gradnorm"`` replaces α, β by the seed's (§7.1) per-problem weights β' = ‖βf‖/(‖βf‖ + ‖α g‖),
α' = ‖α g‖/(‖βf‖ + ‖α g‖) (g the explicit gradient as scaled above).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .engine import Evaluation, constrain_direction


class HybridSource:
    """Engine source for E = α E_task + β E_implicit + γ E_constraints (see module doc).

    ``task_energy(x, y)`` and ``constraint_energy(x, y)`` return one scalar per problem (B,); ``denoiser(y)``
    returns x̂(y) (``None`` for a source without prior, β = 0). The reported energy is the explicit part
    α E_task + γ E_constraints (the implicit part has no value, only a gradient). σ̂² is the denoiser's own
    estimate ‖f‖²/N (floored at ``noise_floor``), or ``sigma2`` when the noise level is known; with the exact σ²
    and ``explicit_scale="sigma2"``, d = −σ²∇E exactly, so a small enough step always lowers E.
    ``x`` holds the task inputs of the problems the engine iterates (indexed by the engine's ``idx``).
    ``operator`` and ``measurement`` (B, m) add hard linear constraints as in the projected sampler of KS2021:
    the direction becomes (I − MMᵀ) d + M(x_c − Mᵀy) (:func:`energy_utils.engine.constrain_direction`), so the
    explicit energies act only in the unmeasured subspace.
    """

    def __init__(self, denoiser: Callable | None, task_energy: Callable | None, x, alpha: float = 1.0,
                 beta: float = 1.0, gamma: float = 0.0, constraint_energy: Callable | None = None,
                 noise_floor: float = 1e-4, sigma2: float | None = None, seed_signs: bool = False,
                 explicit_scale: str = "sigma2", balance: str | None = None, operator=None,
                 measurement: torch.Tensor | None = None):
        if alpha < 0 or beta < 0 or gamma < 0:
            raise ValueError(f"weights must be non-negative, got alpha={alpha}, beta={beta}, gamma={gamma}")
        if task_energy is None and alpha > 0:
            raise ValueError("alpha > 0 needs a task_energy")
        if constraint_energy is None and gamma > 0:
            raise ValueError("gamma > 0 needs a constraint_energy")
        if denoiser is None and (beta > 0 or explicit_scale == "sigma2" and sigma2 is None):
            raise ValueError("without a denoiser use beta=0 and explicit_scale='unit' (or give sigma2)")
        if explicit_scale not in ("sigma2", "unit"):
            raise ValueError(f"explicit_scale must be 'sigma2' or 'unit', got {explicit_scale!r}")
        if balance not in (None, "gradnorm"):
            raise ValueError(f"balance must be None or 'gradnorm', got {balance!r}")
        self.denoiser, self.task_energy, self.constraint_energy = denoiser, task_energy, constraint_energy
        self.x, self.alpha, self.beta, self.gamma = x, alpha, beta, gamma
        self.noise_floor, self.sigma2, self.seed_signs = noise_floor, sigma2, seed_signs
        self.explicit_scale, self.balance = explicit_scale, balance
        if (operator is None) != (measurement is None):
            raise ValueError("give both an operator and its measurement x_c = operator.M_T(x), or neither")
        self.operator, self.measurement = operator, measurement

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

    def direction(self, x, y, create_graph: bool = False, through_prior: bool | None = None):
        """(d, x̂, explicit energy) for iterates y; differentiable w.r.t. the task energy's parameters when
        ``create_graph`` (training through unrolled iterations). ``through_prior=False`` evaluates the frozen
        denoiser without recording its graph (the unroll's gradient then ignores the denoiser's Jacobian:
        a cheaper, truncated gradient); by default it follows ``create_graph``."""
        view = (-1,) + (1,) * (y.dim() - 1)
        if self.denoiser is None:
            x_hat, f = y, torch.zeros_like(y)
        else:
            with torch.set_grad_enabled(create_graph if through_prior is None else through_prior and create_graph):
                x_hat = self.denoiser(y)
            f = x_hat - y
        N = math.prod(y.shape[1:])
        if self.sigma2 is not None:   # a known noise level (e.g. a non-blind exact denoiser)
            s2 = torch.full((y.shape[0],) + view[1:], float(self.sigma2), dtype=y.dtype, device=y.device)
        else:
            s2 = (f.detach().flatten(1).pow(2).sum(1) / N).clamp_min(self.noise_floor).view(view)
        e, g = self.explicit(x, y, create_graph)
        if self.explicit_scale == "sigma2":
            g = s2 * g
        prior = self.beta * f
        if self.balance == "gradnorm":
            a = g.flatten(1).norm(dim=1).detach().view(view)
            b = prior.flatten(1).norm(dim=1).detach().view(view)
            total = a + b + 1e-8
            prior, g = prior * (b / total), g * (a / total)
        d = g - prior if self.seed_signs else prior - g   # the seed's α∇E_task − βf + γ∇E_c, scaled like ours
        return d, x_hat, e

    def __call__(self, y: torch.Tensor, idx: torch.Tensor) -> Evaluation:
        x = self.x[idx] if self.x is not None else None
        d, x_hat, e = self.direction(x, y)
        d = constrain_direction(d.detach(), y, self.operator, self.measurement, idx)
        return Evaluation(d, e.detach(), x_hat.detach())


def central_difference_gradient(energy: Callable, y: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """∇E by central differences, coordinate by coordinate, without autograd (to check an update such as
    d = −σ²∇E independently of the code that computes it):  ∂E/∂y_i ≈ (E(y + ε e_i) − E(y − ε e_i)) / 2ε.

    ``energy`` maps a batch [B, D] to [B]; use float64 (the truncation error is O(ε²), the rounding error
    O(u/ε)). One pair of energy calls per coordinate: meant for small D."""
    if y.ndim != 2:
        raise ValueError(f"central_difference_gradient expects a batch of vectors [B, D], got shape {tuple(y.shape)}")
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    steps = torch.eye(y.shape[1], dtype=y.dtype, device=y.device) * eps
    return torch.stack([(energy(y + e) - energy(y - e)) / (2 * eps) for e in steps], dim=1)
