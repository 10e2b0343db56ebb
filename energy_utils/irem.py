"""IREM: iterative reasoning as energy minimization (Du, Li, Tenenbaum, Mordatch, ICML 2022).

A learned scalar energy E_θ(x, y) scores a candidate answer y for a problem x. Reasoning is gradient descent
on the answer,

    y_{t+1} = y_t − λ ∇_y E_θ(x, y_t),      y_0 ~ U(−1, 1)  (or a replayed earlier answer),

and training unrolls N such steps and applies an MSE loss to the final iterate only: L(θ) = ‖y_N − y*‖² / d.
There is no contrastive term and no energy regulariser (released code, ``shared/reference/irem.md`` §3).

Pieces:

* :class:`VectorEnergy`  MLP on [y, x] → scalar (continuous tasks; swish activations as in the code).
* :class:`GraphEnergy`   dense message passing on fully connected graphs (one scalar per edge for x and y)
  → a sum of per-edge energies (graph tasks; the code uses PyG GINE layers and a max-pooled head).
* :func:`descend`        the plain descent above, with three gradient modes ("none" at test time; "truncated":
  only the last step carries ∂/∂θ, as the released code; "full": back-propagate through all steps), an
  optional per-problem energy-stabilisation stop |E_t − E_{t−1}| < ε (not in the released code), a callback
  per iterate and the minimum-energy read-out.  Notebook 05 reuses it.
* :class:`ReplayBuffer`  earlier final iterates that later batches continue from (capacity 10,000).
* :func:`train_irem`     the training loop (Adam, :func:`energy_utils.training.fit`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .tasks import Problem, Task, mse
from .training import fit

GRAD_MODES = ("none", "truncated", "full")


# --------------------------------------------------------------------------------------------------------
# energy functions
# --------------------------------------------------------------------------------------------------------
class VectorEnergy(nn.Module):
    """E_θ(x, y) = MLP([y, x]) ∈ ℝ, swish activations, ``depth`` hidden layers of ``hidden`` units.

    The gradient ∇_y E lies in the span of the y-columns of the first layer, so ``hidden`` must be at least
    the answer dimension for the descent to reach every answer (the paper: 512 units for 400-d answers).
    """

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 256, depth: int = 2):
        super().__init__()
        if min(x_dim, y_dim, hidden, depth) < 1:
            raise ValueError("x_dim, y_dim, hidden and depth must be positive")
        self.x_dim, self.y_dim = x_dim, y_dim
        layers, d = [], x_dim + y_dim
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.SiLU()]
            d = hidden
        layers.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.x_dim or y.shape[-1] != self.y_dim:
            raise ValueError(f"VectorEnergy expects x [B, {self.x_dim}] and y [B, {self.y_dim}], "
                             f"got {tuple(x.shape)} and {tuple(y.shape)}")
        return self.net(torch.cat([y, x], dim=-1)).squeeze(-1)


class DenseMPNN(nn.Module):
    """Message passing on fully connected graphs stored densely: edge features e [B, N, N, C_in].

    Nodes start at zero (as in IREM's graph code). Each of ``layers`` rounds computes GINE-style messages
    m_ij = swish(h_j + W_l e_ij), averages them over j and updates h_i ← MLP_l(h_i + mean_j m_ij). The
    per-edge read-out is o_ij = MLP(A h_i + B h_j + C e_ij) ∈ ℝ^{C_out}. Mean aggregation (the code sums)
    keeps feature scales comparable between the 2–10-node training graphs and 15-node test graphs.
    """

    def __init__(self, c_in: int, c_out: int, hidden: int = 32, layers: int = 3):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(c_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.msg = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(layers)])
        self.upd = nn.ModuleList([nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
                                  for _ in range(layers)])
        self.read_i = nn.Linear(hidden, hidden)
        self.read_j = nn.Linear(hidden, hidden, bias=False)
        self.read_e = nn.Linear(hidden, hidden, bias=False)
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, c_out))
        self.hidden = hidden

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        if e.dim() != 4 or e.shape[1] != e.shape[2]:
            raise ValueError(f"DenseMPNN expects edge features [B, N, N, C], got {tuple(e.shape)}")
        e = self.embed(e)
        h = e.new_zeros(e.shape[0], e.shape[1], self.hidden)
        for msg, upd in zip(self.msg, self.upd):
            m = nn.functional.silu(h[:, None, :, :] + msg(e))  # [B, i, j, H]: message from j to i
            h = upd(h + m.mean(2))
        z = self.read_i(h)[:, :, None, :] + self.read_j(h)[:, None, :, :] + self.read_e(e)
        return self.head(z)


class GraphEnergy(nn.Module):
    """E_θ(x, y) = Σ_ij u_θ(x, y)_ij: a :class:`DenseMPNN` on edge features [x_ij, y_ij] with a scalar per edge.

    x and y are [B, N, N]. The released code max-pools node features into one scalar; a sum of per-edge
    terms gives every edge its own gradient signal, which trains far faster on our budget.
    """

    def __init__(self, hidden: int = 32, layers: int = 3):
        super().__init__()
        self.net = DenseMPNN(2, 1, hidden, layers)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.dim() != 3:
            raise ValueError(f"GraphEnergy expects x and y of shape [B, N, N], got {tuple(x.shape)} and {tuple(y.shape)}")
        return self.net(torch.stack([x, y], dim=-1)).squeeze(-1).sum((1, 2))


def make_energy(task: Task, hidden: int | None = None, **kwargs) -> nn.Module:
    """The energy network for ``task``: :class:`VectorEnergy` for matrices, :class:`GraphEnergy` for graphs."""
    if task.kind == "vector":
        return VectorEnergy(task.x_dim, task.y_dim, hidden or 256, **kwargs)
    if task.kind == "graph":
        return GraphEnergy(hidden or 32, **kwargs)
    raise ValueError(f"no energy for task kind {task.kind!r}")


# --------------------------------------------------------------------------------------------------------
# the descent
# --------------------------------------------------------------------------------------------------------
@dataclass
class DescentResult:
    """Output of :func:`descend`.

    ``y``: final iterate (frozen at its stop step for stopped problems); ``energies``: [T+1, B] with E(x, y_t)
    (NaN after a problem stopped; empty when not tracked); ``steps``: [B] gradient steps each problem took;
    ``y_min``: the iterate of lowest energy among y_0 … y_T; ``min_step``: [B] its index t.
    """
    y: torch.Tensor
    energies: torch.Tensor
    steps: torch.Tensor
    y_min: torch.Tensor | None
    min_step: torch.Tensor | None


def init_answer(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """IREM's starting point y_0 ~ U(−1, 1), shaped like ``like`` (drawn on the CPU, moved to its device)."""
    u = torch.rand(like.shape, generator=generator)
    return (2 * u - 1).to(device=like.device, dtype=like.dtype)


def energy_and_grad(energy: Callable, x: torch.Tensor, y: torch.Tensor, create_graph: bool = False):
    """(E(x, y) [B], ∇_y Σ_b E(x_b, y_b)); each problem's energy depends only on its own y_b.

    A ``y`` without autograd history is detached into a fresh leaf first (the caller's tensor is untouched).
    """
    with torch.enable_grad():
        if not y.requires_grad:
            y = y.detach().requires_grad_(True)
        e = energy(x, y)
        if e.dim() != 1 or e.shape[0] != y.shape[0]:
            raise ValueError(f"the energy must return one scalar per problem, shape [{y.shape[0]}], got {tuple(e.shape)}")
        (g,) = torch.autograd.grad(e.sum(), y, create_graph=create_graph)
    return e, g


def descend(energy: Callable, x: torch.Tensor, y0: torch.Tensor, step_size: float, n_steps: int,
            callback: Callable | None = None, *, grad: str = "none", tol: float | None = None, min_steps: int = 1,
            track: bool = True, clamp: float | None = None) -> DescentResult:
    """Run y_{t+1} = y_t − λ ∇_y E(x, y_t) for t = 0 … ``n_steps``−1 from ``y0`` (λ = ``step_size``).

    ``energy(x, y)`` returns one scalar per problem ([B]); x and y are batched along dim 0.
    ``grad``: "none" (no graph to the energy's parameters; test time), "truncated" (steps 1 … N−1 detached,
    only the last step is differentiated, as IREM's released code), "full" (back-propagate through every step).
    ``tol``: per-problem energy-stabilisation stop: a problem that reaches y_t with t ≥ ``min_steps`` and
    |E(y_t) − E(y_{t−1})| < tol stops there (it spent t steps) and its iterate is frozen; the loop ends once
    all problems have stopped.
    ``callback(t, y_t, E_t)`` is called for t = 0 … T with the current iterate and energies [B] (detached).
    ``track``: evaluate E at the final iterate too, record the energy trace and keep the minimum-energy
    read-out (switch off during training to save one forward pass).
    ``clamp``: optional bound |y| ≤ clamp after each step (off by default, as in the code).
    """
    if grad not in GRAD_MODES:
        raise ValueError(f"grad must be one of {GRAD_MODES}, got {grad!r}")
    if n_steps < 0 or (grad != "none" and n_steps < 1):
        raise ValueError(f"n_steps must be >= 1 for training (>= 0 at test time), got {n_steps}")
    if tol is not None and grad != "none":
        raise ValueError("the energy-stabilisation stop (tol) is a test-time rule; use grad='none'")
    if y0.shape[0] != x.shape[0]:
        raise ValueError(f"x and y0 must hold the same number of problems, got {x.shape[0]} and {y0.shape[0]}")
    b = y0.shape[0]
    bshape = (b,) + (1,) * (y0.dim() - 1)
    observing = track or callback is not None or tol is not None
    y = y0.detach()
    active = torch.ones(b, dtype=torch.bool, device=y0.device)
    steps = torch.zeros(b, dtype=torch.long, device=y0.device)
    energies: list[torch.Tensor] = []
    state = {"prev": None, "best_e": None, "best_y": None, "best_t": None}

    def observe(t: int, e: torch.Tensor, y_now: torch.Tensor):
        nonlocal active
        e = e.detach()
        y_now = y_now.detach()
        energies.append(torch.where(active, e, torch.full_like(e, float("nan"))))
        if track:
            if state["best_e"] is None:
                state.update(best_e=e.clone(), best_y=y_now.clone(), best_t=torch.zeros_like(steps))
            else:
                better = active & (e < state["best_e"])
                state["best_e"] = torch.where(better, e, state["best_e"])
                state["best_y"] = torch.where(better.view(bshape), y_now, state["best_y"])
                state["best_t"] = torch.where(better, torch.full_like(steps, t), state["best_t"])
        if callback is not None:
            callback(t, y_now, e)
        if tol is not None and state["prev"] is not None and t >= min_steps:
            active = active & ~((e - state["prev"]).abs() < tol)
        state["prev"] = e

    for t in range(n_steps):
        differentiate = grad == "full" or (grad == "truncated" and t == n_steps - 1)
        if not differentiate:
            y = y.detach()
        e, g = energy_and_grad(energy, x, y, create_graph=differentiate)
        if observing:
            observe(t, e, y)
            if not bool(active.any()):
                break
        y_new = y - step_size * g
        if clamp is not None:
            y_new = y_new.clamp(-clamp, clamp)
        y = torch.where(active.view(bshape), y_new, y) if tol is not None else y_new
        steps = steps + active.long()
        if not torch.isfinite(y.detach()).all():
            raise FloatingPointError(f"the descent diverged at step {t + 1}: lower step_size or clamp the iterate")
    else:
        if observing:
            with torch.no_grad():
                e = energy(x, y.detach())
            observe(n_steps, e, y)
    en = torch.stack(energies) if energies else torch.empty(0, b)
    return DescentResult(y=y, energies=en, steps=steps, y_min=state["best_y"] if track else None,
                         min_step=state["best_t"] if track else None)


def stabilisation_step(energies: torch.Tensor, tol: float, min_steps: int = 1) -> torch.Tensor:
    """The step at which the stop |E_t − E_{t−1}| < ``tol`` (t ≥ ``min_steps``) fires, from a full energy trace.

    ``energies`` [T+1, B] from an unstopped run; returns [B] step counts (T where the rule never fires). This
    post-hoc version equals the steps :func:`descend` takes with the same ``tol``, without re-running it.
    """
    if energies.dim() != 2 or energies.shape[0] < 2:
        raise ValueError(f"energies must be [T+1, B] with T >= 1, got {tuple(energies.shape)}")
    t_max = energies.shape[0] - 1
    diff = (energies[1:] - energies[:-1]).abs()  # row k: |E_{k+1} − E_k|
    fire = diff < tol
    fire[: max(min_steps, 1) - 1] = False
    idx = torch.arange(1, t_max + 1, device=energies.device)[:, None].expand_as(fire)
    first = torch.where(fire, idx, torch.full_like(idx, t_max)).min(0).values
    return first


# --------------------------------------------------------------------------------------------------------
# replay buffer and training
# --------------------------------------------------------------------------------------------------------
class ReplayBuffer:
    """FIFO store of (x, y_last, y*) triples; graphs of different sizes are kept in separate rings.

    IREM (continuous code): once the buffer holds ≥ k items, each step continues k replayed problems from
    their stored iterate next to the fresh ones, and all final iterates are written back.
    """

    def __init__(self, capacity: int = 10_000):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._rings: dict[tuple, dict] = {}

    def __len__(self):
        return sum(r["size"] for r in self._rings.values())

    def count(self, shape) -> int:
        r = self._rings.get(tuple(shape))
        return 0 if r is None else r["size"]

    def add(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> None:
        key = tuple(x.shape[1:])
        x, y, target = (t.detach().cpu() for t in (x, y, target))
        r = self._rings.get(key)
        if r is None:
            r = {"x": torch.empty((self.capacity,) + key), "y": torch.empty((self.capacity,) + tuple(y.shape[1:])),
                 "t": torch.empty((self.capacity,) + tuple(target.shape[1:])), "size": 0, "pos": 0}
            self._rings[key] = r
        n = x.shape[0]
        idx = (r["pos"] + torch.arange(n)) % self.capacity
        r["x"][idx], r["y"][idx], r["t"][idx] = x, y, target
        r["pos"] = int((r["pos"] + n) % self.capacity)
        r["size"] = min(self.capacity, r["size"] + n)

    def sample(self, k: int, shape, generator: torch.Generator | None = None, device=None):
        """``k`` random stored triples whose x has per-item shape ``shape``: (x, y_last, y*)."""
        r = self._rings.get(tuple(shape))
        if r is None or r["size"] < k:
            raise ValueError(f"the buffer holds {0 if r is None else r['size']} items of shape {tuple(shape)}, fewer than {k}")
        idx = torch.randint(0, r["size"], (k,), generator=generator)
        return tuple(r[key][idx].to(device) for key in ("x", "y", "t"))


def irem_loss_fn(step_size: float, n_steps: int, grad: str = "truncated", buffer: ReplayBuffer | None = None,
                 n_replay: int | None = None, generator: torch.Generator | None = None):
    """A ``loss_fn(energy, problem)`` for :func:`energy_utils.training.fit`: L = mean ‖y_N − y*‖²/d.

    The fresh problems start at U(−1, 1); with a ``buffer`` holding enough items of the same shape, ``n_replay``
    (default: as many as fresh) replayed problems continue from their stored iterate. All final iterates are
    written back to the buffer.
    """
    def loss_fn(energy, problem: Problem):
        x, target = problem.x, problem.y
        y0 = init_answer(target, generator)
        k = n_replay if n_replay is not None else x.shape[0]
        replayed = 0
        if buffer is not None and k > 0 and buffer.count(x.shape[1:]) >= max(k, x.shape[0]):
            xr, yr, tr = buffer.sample(k, x.shape[1:], generator, x.device)
            x, y0, target = torch.cat([x, xr]), torch.cat([y0, yr]), torch.cat([target, tr])
            replayed = k
        out = descend(energy, x, y0, step_size, n_steps, grad=grad, track=False)
        per = mse(out.y, target)
        if buffer is not None:
            buffer.add(x, out.y.detach(), target)
        return per.mean(), {"fresh_mse": float(per[: problem.x.shape[0]].detach().mean()), "replayed": replayed}
    return loss_fn


def train_irem(energy: nn.Module, task: Task, *, n_iters: int, batch: int, step_size: float, n_unroll: int,
               grad: str = "truncated", replay: bool = True, n_replay: int | None = None,
               buffer_capacity: int = 10_000, lr: float = 1e-3, seed: int = 0, device="cpu", scratch=None,
               desc: str = "irem") -> dict:
    """Train ``energy`` on ``task`` with Adam for ``n_iters`` steps of ``batch`` fresh problems (+ replay).

    Returns :func:`energy_utils.training.fit`'s history. The released code uses Adam lr 1e-4, batch 512 (+512
    replayed), 10 unrolled steps with λ = 100 and 10,000 iterations; the notebook says what it scales down.
    """
    gen = torch.Generator().manual_seed(seed)
    buffer = ReplayBuffer(buffer_capacity) if replay else None
    loss_fn = irem_loss_fn(step_size, n_unroll, grad, buffer, n_replay, gen)
    opt = torch.optim.Adam(energy.parameters(), lr=lr)
    energy.to(device)
    hist = fit(energy, opt, loss_fn, lambda step: task.sample(batch, "train", gen).to(device), n_iters,
               scratch=scratch, desc=desc, log_every=max(1, n_iters // 100))
    return hist


def trace_descent(energy: Callable, problem: Problem, step_size: float, n_steps: int,
                  generator: torch.Generator | None = None, y0: torch.Tensor | None = None) -> dict:
    """Run :func:`descend` (test time, no stop) from y_0 ~ U(−1, 1) and record, for every t = 0 … T:

    ``mse`` [T+1, B] (‖y_t − y*‖²/d), ``energy`` [T+1, B]; plus ``min_energy_mse`` [B] (the minimum-energy
    read-out), ``min_step`` [B], ``y_min`` (that iterate) and ``final`` (y_T). Post-hoc stopping rules (:func:`stabilisation_step`) can be
    applied to these traces without re-running the descent.
    """
    errs = []
    y0 = init_answer(problem.y, generator) if y0 is None else y0
    out = descend(energy, problem.x, y0, step_size, n_steps, lambda t, y, e: errs.append(mse(y, problem.y)))
    return {"mse": torch.stack(errs), "energy": out.energies, "min_energy_mse": mse(out.y_min, problem.y),
            "min_step": out.min_step, "final": out.y, "y_min": out.y_min}


def energy_spec(task: Task, hidden: int, depth: int = 2) -> dict:
    """The plain dict a checkpoint stores to rebuild an energy with :func:`build_energy`."""
    spec = {"task": task.name, "hidden": hidden}
    if task.kind == "vector":
        spec.update(n=task.n, depth=depth)
    else:
        spec.update(layers=depth)
    return spec


def build_energy(spec: dict) -> nn.Module:
    """Rebuild an energy from :func:`energy_spec`'s dict (e.g. ``checkpoint["meta"]["spec"]``)."""
    from .tasks import make_task

    spec = dict(spec)
    name = spec.pop("task")
    hidden = spec.pop("hidden")
    if "n" in spec:
        task = make_task(name, n=spec.pop("n"))
        return VectorEnergy(task.x_dim, task.y_dim, hidden, spec.pop("depth", 2))
    return GraphEnergy(hidden, spec.pop("layers", 3))


def load_energy(name: str, profile: str = "full", device="cpu") -> tuple[nn.Module, dict]:
    """Rebuild and load an energy checkpoint saved by notebook 04 (e.g. ``"04_inverse_irem_s0"``).

    Returns (energy in eval mode, meta) with ``meta["checkpoint"]`` and ``meta["step_size"]`` (the step λ it was
    trained with; notebook 04 trains every energy with λ = 1 unless its meta says otherwise)."""
    from . import checkpoints

    ck = checkpoints.load_checkpoint(name, profile)
    meta = dict(ck["meta"])
    if "spec" not in meta:
        raise KeyError(f"checkpoint {name!r} has no 'spec' in its metadata; it is not an IREM energy")
    energy = build_energy(meta["spec"])
    energy.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ck["state_dict"].items()})
    meta.setdefault("step_size", 1.0)
    meta["checkpoint"] = name
    return energy.to(device).eval(), meta
