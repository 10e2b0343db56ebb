"""Task adaptation of a frozen blind denoiser (notebook 06): the three strategies of the unified-framework seed.

Everything here iterates y_t = y_{t−1} + h d(x, y_{t−1}) from y_0 = observation + σ₀z and is trained, IREM-style,
through the unrolled iterations on the final error ‖y_K − y*‖². The directions d:

* Strategy 2 (explicit task energy on the implicit prior), :class:`energy_utils.hybrid.HybridSource` with
  ``explicit_scale="unit"``: d = βf(y) − α∇_y E_θ(x, y) − γ∇_y E_c(x, y), f(y) = D(y) − y the frozen
  denoiser's residual; :class:`ConvTaskEnergy` / :class:`VectorTaskEnergy` give E_θ = ½‖h_θ(x, y)‖².
  β = 0 is IREM from scratch with the same energy network.
* Strategy 1 (modular conditioning), :class:`ModulatedSource`: d = D(y) + m(x, y) − y with
  :class:`AdditiveModulation` m = M_φ(x) (the seed's form: independent of y, so D(ay) + m ≠ a(D(y) + m)) or
  :class:`EquivariantModulation` m = G_φ(x) ⊙ B_ψ(y, D(y)) with B bias-free (positively homogeneous of degree
  one in y), which keeps D_a(ay, x) = a D_a(y, x) for a > 0.
* Strategy 3 (progressive specialisation): one modulation (adapter) per task over the same frozen denoiser.

:func:`train_solver` trains any of them (resumable through :func:`energy_utils.training.fit`, with a validation
curve and the wall time spent training, validation excluded); :func:`evaluate` runs the deterministic K-step
unroll on held-out pairs. The engine (:func:`energy_utils.engine.iterate`) runs the same sources with
adaptive stopping.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .adaptation_tasks import initial_iterate
from .engine import Evaluation
from .tasks import mse
from .training import EarlyStopping, fit


class ConvTaskEnergy(nn.Module):
    """E_θ(x, y) = ½ Σ_pixels ‖√s m ⊙ (y − x_obs) + h_θ([y, x])‖² / c_out for images (x_obs = x[:, 0],
    m = x[:, 1], the first term broadcast over the c_out channels of h); h a 3-layer SiLU CNN (smooth, so that
    ∇_y E can be differentiated again in training) whose last layer starts at zero, and s = softplus(ŝ) a learned
    weight. The untrained energy is ½ s‖m ⊙ (y − x_obs)‖²: it pulls y towards the observation, so hybrid and
    scratch solvers start from the same informed guess and learn the rest (the cross term makes the gradient
    in θ non-zero at the zero start)."""

    def __init__(self, x_channels: int, width: int = 32, out_channels: int = 8):
        super().__init__()
        self.x_channels, self.width, self.out_channels = x_channels, width, out_channels
        self.net = nn.Sequential(nn.Conv2d(1 + x_channels, width, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(width, out_channels, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.raw_weight = nn.Parameter(torch.tensor(0.5413))   # softplus(0.5413) = 1

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        skip = nn.functional.softplus(self.raw_weight).sqrt() * x[:, 1:2] * (y - x[:, 0:1])
        h = skip + self.net(torch.cat([y, x], dim=1))
        return 0.5 * h.pow(2).flatten(1).sum(1) / self.out_channels

    @property
    def spec(self):
        return {"kind": "conv_energy", "x_channels": self.x_channels, "width": self.width, "out_channels": self.out_channels}


class VectorTaskEnergy(nn.Module):
    """E_θ(x, y) = ½‖√s (y − x) + h_θ([x, y])‖² / d for vectors of length d (x the observation in y's space);
    h a 3-layer SiLU MLP with a zero-initialised last layer, s = softplus(ŝ) learned (see :class:`ConvTaskEnergy`)."""

    def __init__(self, dim: int, hidden: int = 256):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.net = nn.Sequential(nn.Linear(2 * dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.raw_weight = nn.Parameter(torch.tensor(0.5413))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = nn.functional.softplus(self.raw_weight).sqrt() * (y - x) + self.net(torch.cat([x, y], dim=1))
        return 0.5 * h.pow(2).sum(1)

    @property
    def spec(self):
        return {"kind": "vector_energy", "dim": self.dim, "hidden": self.hidden}


class AdditiveModulation(nn.Module):
    """The seed's modulation (§6.1): m = M_φ(x), a bias-free CNN of the task input alone."""

    def __init__(self, x_channels: int, width: int = 32):
        super().__init__()
        self.x_channels, self.width = x_channels, width
        self.net = nn.Sequential(nn.Conv2d(x_channels, width, 3, padding=1, bias=False), nn.ReLU(),
                                 nn.Conv2d(width, width, 3, padding=1, bias=False), nn.ReLU(),
                                 nn.Conv2d(width, 1, 3, padding=1, bias=False))

    def forward(self, y, x, x_hat):
        return self.net(x).expand_as(y)

    @property
    def spec(self):
        return {"kind": "additive", "x_channels": self.x_channels, "width": self.width}


class EquivariantModulation(nn.Module):
    """m = G_φ(x) ⊙ B_ψ([y, D(y)]): B a bias-free ReLU CNN (B(a·) = a B(·) for a > 0), G any CNN of x
    (biases allowed: x is held fixed when y is rescaled). Hence D(ay) + m(ay) = a (D(y) + m(y))."""

    body_bias = False

    def __init__(self, x_channels: int, width: int = 32):
        super().__init__()
        self.x_channels, self.width = x_channels, width
        b = self.body_bias
        self.gain = nn.Sequential(nn.Conv2d(x_channels, width, 3, padding=1), nn.SiLU(),
                                  nn.Conv2d(width, width, 3, padding=1))
        self.body_in = nn.Conv2d(2, width, 3, padding=1, bias=b)
        self.body_out = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, padding=1, bias=b), nn.ReLU(),
                                      nn.Conv2d(width, 1, 3, padding=1, bias=b))

    def forward(self, y, x, x_hat):
        return self.body_out(self.gain(x) * self.body_in(torch.cat([y, x_hat], dim=1)))

    @property
    def spec(self):
        return {"kind": "equivariant", "x_channels": self.x_channels, "width": self.width}


class BiasedModulation(EquivariantModulation):
    """The control for :class:`EquivariantModulation`: the same inputs (x, y, D(y)) and layers, with biases in
    B_ψ (2·width + 1 more parameters), so B(a·) ≠ a B(·) and D_a is no longer scale-equivariant. Comparing the
    two isolates equivariance from "the modulation sees y" (the seed's additive modulation sees x only)."""

    body_bias = True

    @property
    def spec(self):
        return {"kind": "biased", "x_channels": self.x_channels, "width": self.width}


MODULATIONS = {"additive": AdditiveModulation, "equivariant": EquivariantModulation, "biased": BiasedModulation}


def build_module(spec: dict) -> nn.Module:
    """Rebuild a task energy or modulation from its ``spec`` (as stored in checkpoints)."""
    spec = dict(spec)
    kind = spec.pop("kind")
    classes = {"conv_energy": ConvTaskEnergy, "vector_energy": VectorTaskEnergy, **MODULATIONS}
    if kind not in classes:
        raise ValueError(f"unknown module kind {kind!r}; known: {sorted(classes)}")
    return classes[kind](**spec)


class ModulatedSource:
    """Strategy 1/3 direction d = D(y) + m(x, y) − y for a frozen denoiser D and a modulation m (``None``:
    the plain denoiser). ``x`` holds the task inputs of the problems the engine iterates."""

    def __init__(self, denoiser: Callable, modulation: nn.Module | None, x=None):
        self.denoiser, self.modulation, self.x = denoiser, modulation, x

    def adapted(self, y, x, create_graph: bool = False, through_prior: bool = False):
        """D_a(y, x) = D(y) + m(x, y)."""
        with torch.set_grad_enabled(create_graph and through_prior):
            x_hat = self.denoiser(y)
        if self.modulation is None:
            return x_hat
        with torch.set_grad_enabled(create_graph):
            return x_hat + self.modulation(y, x, x_hat)

    def direction(self, x, y, create_graph: bool = False, through_prior: bool = False):
        x_hat = self.adapted(y, x, create_graph, through_prior)
        return x_hat - y, x_hat, None

    def __call__(self, y: torch.Tensor, idx: torch.Tensor) -> Evaluation:
        d, x_hat, _ = self.direction(self.x[idx], y)
        return Evaluation(d.detach(), None, x_hat.detach())


def unroll(source, x, y0, n_steps: int, h: float, create_graph: bool = False, through_prior: bool = False):
    """y_K of y_t = y_{t−1} + h d(x, y_{t−1}), K = ``n_steps``. With ``create_graph`` the result is differentiable
    in the trainable parameters; ``through_prior`` also records the denoiser's graph (the exact unroll gradient;
    without it the denoiser's output is treated as a constant: cheaper, biased)."""
    y = y0
    for _ in range(n_steps):
        d = source.direction(x, y, create_graph=create_graph, through_prior=through_prior)[0]
        y = y + h * d
        if not create_graph:
            y = y.detach()
    return y


@torch.no_grad()
def evaluate(source, x, y_true, n_steps: int, h: float, sigma0: float, seed: int, batch: int = 256):
    """Per-example MSE of the deterministic K-step unroll from y0 = observation + σ₀z (seeded)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, y_true.shape[0], batch):
        xb, yb = x[i:i + batch], y_true[i:i + batch]
        y0 = initial_iterate(xb, sigma0, g)
        yk = unroll(source, xb, y0, n_steps, h)
        out.append(mse(yk, yb))
    return torch.cat(out)


def train_solver(params_owner: nn.Module, source, train, val, *, n_steps: int, batch: int, lr: float,
                 unroll_steps: int, h: float, sigma0: float | Callable[[float], float], seed: int,
                 weights: Callable[[float], tuple[float, float]] | None = None, val_every: int = 25,
                 scratch: Path | None = None, desc: str = "adapt", through_prior: bool = True,
                 freeze_norm: bool = False, clip_grad: float = 1.0, early_stopping: dict | None = None) -> dict:
    """Train the parameters of ``params_owner`` (a task energy, a modulation, or the denoiser itself) through
    ``unroll_steps`` iterations of ``source`` on pairs ``train`` (TaskData), Adam with cosine decay over
    ``n_steps``, or, with ``early_stopping`` (keyword arguments of :class:`~energy_utils.training.EarlyStopping`:
    patience, factor, max_reductions, rel_tol), *to validation convergence*: a constant rate, cut on validation
    plateaus, stopped when the curve has flattened or at ``n_steps`` (a cap), and the weights of the lowest
    validation error restored (``"best_step"``, ``"converged_at"`` when it stopped before the cap). Resumed from
    ``scratch`` with a higher cap, such a run continues exactly as if it had been started with that cap.

    ``sigma0`` is the start noise σ₀, or a function of training progress p ∈ [0, 1) (multi-scale training);
    ``weights(p) -> (α, β)`` sets the hybrid's weights during training (curriculum). ``through_prior``: back-
    propagate through the denoiser too (the exact gradient; the default). ``freeze_norm`` keeps the trained
    module in eval mode (batch-norm statistics fixed, e.g. when fine-tuning a pre-trained denoiser: only its
    weights adapt). Every ``val_every`` steps
    the validation MSE on ``val`` (TaskData, fixed noise) is logged with the training wall time so far
    (validation excluded). Returns the history of :func:`energy_utils.training.fit` plus ``"curve"``:
    [(step, val_mse, train_wall_s)].
    """
    n = len(train)
    start_noise = sigma0 if callable(sigma0) else (lambda p: sigma0)
    clock = {"val_s": 0.0, "t0": None}
    opt = torch.optim.Adam(params_owner.parameters(), lr=lr)
    if early_stopping is None:
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, n_steps) / max(n_steps, 1))))
    else:
        sched = EarlyStopping(opt, params_owner, **early_stopping)

    def sample_batch(step):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(0, n, (batch,), generator=g)
        p = step / max(n_steps, 1)
        return step, p, train.x[idx], train.y[idx], initial_iterate(train.x[idx], start_noise(p), g)

    def loss_fn(model, b):
        step, p, x, y, y0 = b
        model.train(not freeze_norm)
        if clock["t0"] is None:
            clock["t0"] = time.perf_counter()
        if weights is not None:
            source.alpha, source.beta = weights(p)
        extra = {}
        # with early stopping only at multiples of val_every, so that a run resumed to a higher cap continues
        # exactly as one started with that cap (the rate does not depend on n_steps either)
        if step % val_every == 0 or (early_stopping is None and step == n_steps - 1):
            tv = time.perf_counter()
            model.eval()
            if weights is not None:
                source.alpha, source.beta = weights(1.0)
            extra["val_mse"] = evaluate(source, val.x, val.y, unroll_steps, h, start_noise(1.0) if callable(sigma0) else sigma0,
                                        seed=12345).mean().item()
            if weights is not None:
                source.alpha, source.beta = weights(p)
            model.train(not freeze_norm)
            if early_stopping is not None:
                sched.observe(extra["val_mse"])
            clock["val_s"] += time.perf_counter() - tv
            extra["train_wall_s"] = time.perf_counter() - clock["t0"] - clock["val_s"]
        yk = unroll(source, x, y0, unroll_steps, h, create_graph=True, through_prior=through_prior)
        return mse(yk, y).mean(), extra

    hist = fit(params_owner, opt, loss_fn, sample_batch, n_steps, scratch=scratch, scheduler=sched,
               clip_grad=clip_grad, desc=desc, log_every=1, checkpoint_every=max(n_steps // 4, 1))
    if weights is not None:
        source.alpha, source.beta = weights(1.0)
    hist["curve"] = [(s, e["val_mse"], e["train_wall_s"]) for s, e in zip(hist["step"], hist["extra"]) if "val_mse" in e]
    if early_stopping is not None:
        hist["best_step"] = sched.restore_best()
        hist["best_val_mse"] = sched.best_value
    hist.pop("extra")
    hist["loss"] = hist["loss"][:: max(n_steps // 50, 1)]
    hist["step"] = hist["step"][:: max(n_steps // 50, 1)]
    return hist


def curve_mean(curve) -> float:
    """Time-average of a validation curve [(step, error, wall), ...] over its steps (trapezoid rule),
    (1/(s_K − s_0)) ∫ err(s) ds: the area under the curve per step, lower for a model that learns sooner."""
    steps = np.asarray([c[0] for c in curve], dtype=float)
    errs = np.asarray([c[1] for c in curve], dtype=float)
    if len(curve) < 2 or steps[-1] <= steps[0]:
        raise ValueError(f"a validation curve needs at least two points at increasing steps, got {len(curve)}")
    return float(np.sum((errs[1:] + errs[:-1]) / 2 * np.diff(steps)) / (steps[-1] - steps[0]))


def late_improvement(curve, window: int = 200) -> float:
    """How far from flat a validation curve [(step, error, wall), ...] ends: the % by which its error fell over
    its last ``window`` steps, 100·(err(s_K − window) / err(s_K) − 1), with err(s_K − window) the last point at
    or before that step (negative: the error rose, i.e. over-fitting; NaN if the curve is shorter than ``window``)."""
    last_step, last_err = curve[-1][0], curve[-1][1]
    before = [err for step, err, _ in curve if step <= last_step - window]
    return 100 * (before[-1] / last_err - 1) if before else float("nan")


def steps_to_target(curve, target: float):
    """(step, train wall seconds) at which a validation curve first reaches ``target``; (None, None) if never."""
    for step, err, wall in curve:
        if err <= target:
            return step, wall
    return None, None
