"""IREM's reasoning tasks (Du et al. 2022), generated on the fly, with the trivial baselines that frame them.

Every task returns a :class:`Problem` ``(x, y, info)``: the input ``x``, the answer ``y`` and per-problem
extras (e.g. the condition number of a matrix to invert). Generators follow the released IREM code
(``dataset.py``, ``graph_dataset.py``) as described in ``shared/reference/irem.md`` §2:

Continuous (matrices of side ``n``, default 20 as in the paper, flattened to n² values):

* ``addition``  x = [A, B], A, B ~ U(−1, 1)^{n×n} (harder: U(−2.5, 2.5));  y = A + B.
* ``inverse``   A = R + Rᵀ + r·I with R = U Uᵀ, U ~ U(−1, 1)^{n×n}, r = 0.5 (harder: 0.1);  x = A, y = A⁻¹.
* ``lowrank``   R = U Vᵀ / s + 0.1·N(0, 1), U, V ~ N(0, 1)^{n×n/2}, s = 20 (harder: 5), x = R ⊙ M with a
  Bernoulli(½) mask M (missing entries are 0), y = R.  For n ≠ 20, s is multiplied by √(rank/10) so the
  per-entry variance matches the 20×20 generator.

Graph (fully connected, one scalar per ordered pair (i, j) including i = j; dense [B, N, N] tensors):

* ``edge_copy``      x_ij ~ U(−1, 1);  y = x  (the code's ``identity`` task).
* ``components``     x_ij = 1[u_ij > 0.95] (then symmetrised);  y_ij = 1 if i and j share a connected component.
* ``shortest_path``  x_ij = u_ij + u_ji, u ~ U(0, 1), x_ii = 0;  y = all-pairs shortest path lengths.

Splits: ``"train"`` and ``"same"`` draw from the training distribution; ``"harder"`` from the harder one.
For graphs ``"train"`` draws one node count uniformly from 2–10 per batch (the code draws it per graph and
batches with PyG; one count per batch keeps dense tensors), ``"same"`` uses 10 nodes and ``"harder"`` 15.

Trivial baselines (:func:`trivial_baselines`): predict zero; copy the observed entries (completion); predict
the base rate / mean target at the test size (components, shortest path), estimated from an independent
sample of the generator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

SPLITS = ("train", "same", "harder")


@dataclass
class Problem:
    """A batch of problems: inputs ``x``, answers ``y`` and per-problem extras in ``info``."""
    x: torch.Tensor
    y: torch.Tensor
    info: dict = field(default_factory=dict)

    def __len__(self):
        return self.x.shape[0]

    def to(self, device):
        return Problem(self.x.to(device), self.y.to(device), {k: v.to(device) if torch.is_tensor(v) else v
                                                               for k, v in self.info.items()})

    def subset(self, idx):
        return Problem(self.x[idx], self.y[idx], {k: v[idx] if torch.is_tensor(v) else v for k, v in self.info.items()})


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {SPLITS}")
    return split


def _uniform(shape, low, high, gen):
    return low + (high - low) * torch.rand(shape, generator=gen)


class Task:
    """Base class: ``sample(batch, split, generator)`` returns a :class:`Problem`."""
    name: str = ""
    kind: str = ""  # "vector" or "graph"

    def sample(self, batch: int, split: str = "train", generator: torch.Generator | None = None) -> Problem:
        _check_split(split)
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        return self._sample(batch, split, generator)

    def _sample(self, batch, split, gen):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"


# --------------------------------------------------------------------------------------------------------
# continuous tasks
# --------------------------------------------------------------------------------------------------------
class MatrixTask(Task):
    kind = "vector"

    def __init__(self, n: int = 20):
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"matrix side n must be an integer >= 2, got {n!r}")
        self.n = n

    @property
    def y_dim(self) -> int:
        return self.n * self.n

    @property
    def x_dim(self) -> int:
        return self.n * self.n


class Addition(MatrixTask):
    name = "addition"

    @property
    def x_dim(self):
        return 2 * self.n * self.n

    def _sample(self, batch, split, gen):
        a = 2.5 if split == "harder" else 1.0
        x = _uniform((batch, 2, self.n * self.n), -a, a, gen)
        return Problem(x.reshape(batch, -1), x.sum(1), {})


class Inverse(MatrixTask):
    name = "inverse"

    def _sample(self, batch, split, gen):
        ridge = 0.1 if split == "harder" else 0.5
        u = _uniform((batch, self.n, self.n), -1.0, 1.0, gen).double()
        r = u @ u.transpose(1, 2)
        a = r + r.transpose(1, 2) + ridge * torch.eye(self.n, dtype=torch.float64)
        inv = torch.linalg.inv(a)
        ev = torch.linalg.eigvalsh(a)  # A is symmetric positive definite
        cond = ev[:, -1] / ev[:, 0]
        return Problem(a.reshape(batch, -1).float(), inv.reshape(batch, -1).float(), {"cond": cond.float()})


class LowRank(MatrixTask):
    name = "lowrank"

    @property
    def rank(self):
        return max(1, self.n // 2)

    def _sample(self, batch, split, gen):
        scale = (5.0 if split == "harder" else 20.0) * math.sqrt(self.rank / 10.0)
        u = torch.randn((batch, self.n, self.rank), generator=gen)
        v = torch.randn((batch, self.n, self.rank), generator=gen)
        r = u @ v.transpose(1, 2) / scale + 0.1 * torch.randn((batch, self.n, self.n), generator=gen)
        mask = torch.rand((batch, self.n, self.n), generator=gen) < 0.5
        x = torch.where(mask, r, torch.zeros_like(r))
        return Problem(x.reshape(batch, -1), r.reshape(batch, -1), {"mask": mask.reshape(batch, -1)})


# --------------------------------------------------------------------------------------------------------
# graph tasks
# --------------------------------------------------------------------------------------------------------
class GraphTask(Task):
    kind = "graph"

    def __init__(self, train_nodes=(2, 10), same_nodes: int = 10, harder_nodes: int = 15):
        lo, hi = train_nodes
        if not (1 <= lo <= hi) or same_nodes < 1 or harder_nodes < 1:
            raise ValueError(f"bad node counts: train {train_nodes}, same {same_nodes}, harder {harder_nodes}")
        self.train_nodes, self.same_nodes, self.harder_nodes = (lo, hi), same_nodes, harder_nodes

    def nodes_for(self, split: str, gen=None) -> int:
        _check_split(split)
        if split == "same":
            return self.same_nodes
        if split == "harder":
            return self.harder_nodes
        lo, hi = self.train_nodes
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    def _sample(self, batch, split, gen):
        return self.sample_nodes(batch, self.nodes_for(split, gen), gen)

    def sample_nodes(self, batch: int, n_nodes: int, generator: torch.Generator | None = None) -> Problem:
        """``batch`` graphs with exactly ``n_nodes`` nodes."""
        if n_nodes < 1:
            raise ValueError(f"n_nodes must be >= 1, got {n_nodes}")
        return self._graphs(batch, n_nodes, generator)

    def _graphs(self, batch, n, gen):  # pragma: no cover - abstract
        raise NotImplementedError


class EdgeCopy(GraphTask):
    name = "edge_copy"

    def _graphs(self, batch, n, gen):
        x = _uniform((batch, n, n), -1.0, 1.0, gen)
        return Problem(x, x.clone(), {"n_nodes": n})


def connected_components(adj: torch.Tensor) -> torch.Tensor:
    """Same-component indicator C_ij ∈ {0, 1} of undirected graphs ``adj`` [B, N, N] (diagonal 1).

    Transitive closure by repeated squaring of (A ∨ Aᵀ ∨ I): ⌈log₂ N⌉ boolean matrix products.
    """
    n = adj.shape[-1]
    reach = (adj > 0) | (adj > 0).transpose(-1, -2) | torch.eye(n, dtype=torch.bool, device=adj.device)
    for _ in range(max(1, math.ceil(math.log2(max(n, 2))))):
        r = reach.float()
        reach = (r @ r) > 0
    return reach.float()


def shortest_paths(w: torch.Tensor) -> torch.Tensor:
    """All-pairs shortest path lengths of complete weighted graphs ``w`` [B, N, N] (Floyd–Warshall, batched)."""
    d = w.clone()
    for k in range(w.shape[-1]):
        d = torch.minimum(d, d[:, :, k:k + 1] + d[:, k:k + 1, :])
    return d


class Components(GraphTask):
    name = "components"

    def _graphs(self, batch, n, gen):
        adj = (torch.rand((batch, n, n), generator=gen) > 0.95).float()
        return Problem(adj, connected_components(adj), {"n_nodes": n})


class ShortestPath(GraphTask):
    name = "shortest_path"

    def _graphs(self, batch, n, gen):
        u = torch.rand((batch, n, n), generator=gen)
        w = (u + u.transpose(1, 2)) * (1 - torch.eye(n))
        return Problem(w, shortest_paths(w), {"n_nodes": n})


# --------------------------------------------------------------------------------------------------------
# registry and trivial baselines
# --------------------------------------------------------------------------------------------------------
TASKS = {"addition": Addition, "inverse": Inverse, "lowrank": LowRank,
         "edge_copy": EdgeCopy, "components": Components, "shortest_path": ShortestPath}
CONTINUOUS = ("addition", "inverse", "lowrank")
GRAPH = ("edge_copy", "components", "shortest_path")


def make_task(name: str, **kwargs) -> Task:
    """Build a task by name, e.g. ``make_task("inverse", n=10)`` or ``make_task("components")``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    return TASKS[name](**kwargs)


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-problem mean squared error over all answer entries, shape [B]."""
    return (pred - target).pow(2).flatten(1).mean(1)


def _reference_constant(task: GraphTask, split: str, n_ref: int, seed: int = 12345) -> float:
    gen = torch.Generator().manual_seed(seed)
    return float(task.sample(n_ref, split, gen).y.mean())


def trivial_baselines(task: Task, problem: Problem, split: str, n_ref: int = 2000) -> dict[str, torch.Tensor]:
    """Predictions of the trivial baselines for ``problem``: ``{name: y_hat}`` (same shape as ``problem.y``).

    * every task: ``zero`` (predict 0);
    * ``lowrank``: ``copy_observed`` (observed entries copied, 0 elsewhere, i.e. ŷ = x);
    * ``components`` / ``shortest_path``: ``base_rate`` / ``mean`` (constant = mean target at this size,
      from an independent sample of ``n_ref`` graphs of the generator).
    """
    _check_split(split)
    out = {"zero": torch.zeros_like(problem.y)}
    if task.name == "lowrank":
        out["copy_observed"] = problem.x.clone()
    if task.name in ("components", "shortest_path"):
        if split == "train":
            raise ValueError("graph trivial baselines need a fixed size: use split 'same' or 'harder'")
        c = _reference_constant(task, split, n_ref)
        out["base_rate" if task.name == "components" else "mean"] = torch.full_like(problem.y, c)
    return out


def accuracy(task: Task, pred: torch.Tensor, target: torch.Tensor, tol: float = 0.1) -> torch.Tensor:
    """Per-problem accuracy [B]: components → fraction of entries with (ŷ > ½) = y; real-valued tasks →
    fraction of entries with |ŷ − y| < ``tol``."""
    if task.name == "components":
        hit = (pred > 0.5) == (target > 0.5)
    else:
        hit = (pred - target).abs() < tol
    return hit.float().flatten(1).mean(1)


def difficulty(problem: Problem) -> torch.Tensor | None:
    """A per-problem difficulty score when the task has a natural one (log10 condition number for inverse)."""
    if "cond" in problem.info:
        return problem.info["cond"].log10()
    return None
