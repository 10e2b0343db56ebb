"""The baselines IREM is compared with (Du et al. 2022, released code ``models.py`` / ``graph_models.py``).

Every model maps a problem x to an answer ŷ of the task's shape, built on one of two backbones: an MLP on flat
vectors (continuous tasks) or :class:`energy_utils.irem.DenseMPNN` on fully connected graphs (graph tasks).

* :class:`FeedForward`            ŷ = f(x), one pass.
* :class:`Recurrent`              LSTM: h_t = LSTM(enc(x), h_{t−1}) for t = 1 … N with the same input each step,
  ŷ = W h_N (per edge for graphs).
* :class:`PonderNet`              y_t, λ_t = g([x, y_{t−1}]) (y_0 = 0), halting distribution
  p_t = λ_t ∏_{s<t}(1 − λ_s) (the last step takes the remaining mass); loss Σ_t p_t ‖y_t − y*‖²/d
  + β·KL(p ‖ Geometric(λ_p)) (Banino et al. 2021). The released IREM code averages the step losses uniformly
  and crashes (undefined ``pad_to``); ours weights by p_t as PonderNet does. At test time it halts at the
  first step whose cumulative halting probability reaches ½.
* :class:`IterativeFeedForward`   residual refinement y_{t+1} = y_t + f([y_t, x]) from y_0 ~ U(−1, 1), loss on y_N,
  back-propagated through all steps.

All models expose ``loss(x, y) -> (scalar, extras)`` and ``predict(x, n_steps=None) -> ŷ``.
"""
from __future__ import annotations

import torch
from torch import nn

from .irem import DenseMPNN, init_answer
from .tasks import Task, mse

METHODS = ("feedforward", "recurrent", "pondernet", "iterative")


class MLP(nn.Module):
    """``depth`` hidden layers of ``hidden`` units with activation ``act`` (ReLU by default), then a linear head."""

    def __init__(self, d_in: int, d_out: int, hidden: int = 256, depth: int = 2, act=nn.ReLU):
        super().__init__()
        layers, d = [], d_in
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), act()]
            d = hidden
        layers.append(nn.Linear(d, d_out))
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z)


class _Base(nn.Module):
    """Shared plumbing: the task's kind decides the backbone and how x and y are joined."""

    def __init__(self, task: Task):
        super().__init__()
        if task.kind not in ("vector", "graph"):
            raise ValueError(f"unsupported task kind {task.kind!r}")
        self.kind = task.kind
        self.x_dim = getattr(task, "x_dim", None)
        self.y_dim = getattr(task, "y_dim", None)

    def _backbone(self, with_y: bool, extra_out: int, hidden: int, act=nn.ReLU) -> nn.Module:
        if self.kind == "vector":
            return MLP(self.x_dim + (self.y_dim if with_y else 0), self.y_dim + extra_out, hidden, act=act)
        return DenseMPNN(1 + int(with_y), 1 + extra_out, hidden)

    def _join(self, x, y=None):
        if self.kind == "vector":
            return x if y is None else torch.cat([y, x], dim=-1)
        return x[..., None] if y is None else torch.stack([x, y], dim=-1)

    def _split(self, out):
        """Backbone output → (answer, extra channel or None)."""
        if self.kind == "vector":
            return out[:, : self.y_dim], (out[:, self.y_dim] if out.shape[1] > self.y_dim else None)
        return out[..., 0], (out[..., 1].mean((1, 2)) if out.shape[-1] > 1 else None)

    def _check(self, x):
        if self.kind == "vector" and (x.dim() != 2 or x.shape[1] != self.x_dim):
            raise ValueError(f"expected x of shape [B, {self.x_dim}], got {tuple(x.shape)}")
        if self.kind == "graph" and (x.dim() != 3 or x.shape[1] != x.shape[2]):
            raise ValueError(f"expected graph inputs [B, N, N], got {tuple(x.shape)}")


class FeedForward(_Base):
    """ŷ = f(x): an MLP (3×512 ReLU in the code; we use ``depth`` 2) or a DenseMPNN decoding per edge."""

    def __init__(self, task: Task, hidden: int = 256):
        super().__init__(task)
        self.f = self._backbone(False, 0, hidden)

    def predict(self, x, n_steps=None):
        self._check(x)
        return self._split(self.f(self._join(x)))[0]

    def loss(self, x, y):
        return mse(self.predict(x), y).mean(), {}


class Recurrent(_Base):
    """LSTM baseline: enc(x) is fed at every one of ``n_steps`` steps; the answer is read from the last state."""

    def __init__(self, task: Task, hidden: int = 128, n_steps: int = 5):
        super().__init__(task)
        self.n_steps, self.hidden = n_steps, hidden
        if self.kind == "vector":
            self.enc = nn.Sequential(nn.Linear(self.x_dim, hidden), nn.ReLU())
            self.out = nn.Linear(hidden, self.y_dim)
        else:
            self.enc = DenseMPNN(1, hidden, hidden)
            self.out = nn.Linear(hidden, 1)
        self.cell = nn.LSTMCell(hidden, hidden)

    def predict(self, x, n_steps=None):
        self._check(x)
        z = self.enc(self._join(x))
        lead = z.shape[:-1]
        z = z.reshape(-1, self.hidden)
        h = c = torch.zeros_like(z)
        for _ in range(n_steps or self.n_steps):
            h, c = self.cell(z, (h, c))
        o = self.out(h).reshape(*lead, -1)
        return o if self.kind == "vector" else o[..., 0]

    def loss(self, x, y):
        return mse(self.predict(x), y).mean(), {}


class PonderNet(_Base):
    """Step network with a halting head; halting-weighted loss plus β·KL to a geometric prior (p = 1/N)."""

    def __init__(self, task: Task, hidden: int = 256, n_steps: int = 5, beta: float = 0.01, prior_p: float | None = None):
        super().__init__(task)
        self.n_steps, self.beta = n_steps, beta
        self.prior_p = prior_p if prior_p is not None else 1.0 / n_steps
        if not 0 < self.prior_p < 1:
            raise ValueError(f"prior_p must lie in (0, 1), got {self.prior_p}")
        self.g = self._backbone(True, 1, hidden)

    def unroll(self, x, n_steps=None):
        """Answers y_1 … y_T [T, ...] and the halting distribution p [T, B] (sums to 1 over t)."""
        self._check(x)
        n = n_steps or self.n_steps
        y = torch.zeros(x.shape[0], *(x.shape[1:] if self.kind == "graph" else (self.y_dim,)), device=x.device)
        ys, lams = [], []
        for _ in range(n):
            y, logit = self._split(self.g(self._join(x, y)))
            ys.append(y)
            lams.append(torch.sigmoid(logit))
        lam = torch.stack(lams)
        lam = torch.cat([lam[:-1], torch.ones_like(lam[-1:])])  # the last step halts with what is left
        survive = torch.cumprod(torch.cat([torch.ones_like(lam[:1]), 1 - lam[:-1]]), 0)
        return torch.stack(ys), lam * survive

    def loss(self, x, y):
        ys, p = self.unroll(x)
        t = torch.arange(1, p.shape[0] + 1, device=p.device, dtype=p.dtype)
        prior = self.prior_p * (1 - self.prior_p) ** (t - 1)
        prior = prior / prior.sum()  # truncated geometric over the N steps
        rec = (p * torch.stack([mse(yt, y) for yt in ys])).sum(0).mean()
        kl = (p * (torch.log(p.clamp_min(1e-12)) - torch.log(prior[:, None]))).sum(0).mean()
        return rec + self.beta * kl, {"kl": float(kl.detach()), "expected_steps": float((p * t[:, None]).sum(0).mean().detach())}

    def predict(self, x, n_steps=None, return_steps: bool = False):
        ys, p = self.unroll(x, n_steps)
        halt = (p.cumsum(0) >= 0.5).float().argmax(0)  # first step with cumulative mass >= 1/2
        idx = halt.view(1, -1, *([1] * (ys.dim() - 2))).expand(1, *ys.shape[1:])
        y = ys.gather(0, idx)[0]
        return (y, halt + 1) if return_steps else y


class IterativeFeedForward(_Base):
    """Residual refinement y_{t+1} = y_t + f([y_t, x]) (swish MLP / DenseMPNN) from y_0 ~ U(−1, 1)."""

    def __init__(self, task: Task, hidden: int = 256, n_steps: int = 5):
        super().__init__(task)
        self.n_steps = n_steps
        self.f = self._backbone(True, 0, hidden, act=nn.SiLU)
        self.generator: torch.Generator | None = None

    def predict(self, x, n_steps=None, y0=None):
        self._check(x)
        like = x if self.kind == "graph" else x.new_empty(x.shape[0], self.y_dim)
        y = init_answer(like, self.generator) if y0 is None else y0
        for _ in range(n_steps or self.n_steps):
            y = y + self._split(self.f(self._join(x, y)))[0]
        return y

    def loss(self, x, y):
        return mse(self.predict(x), y).mean(), {}


_CLASSES = {"feedforward": FeedForward, "recurrent": Recurrent, "pondernet": PonderNet, "iterative": IterativeFeedForward}


def make_baseline(method: str, task: Task, **kwargs) -> nn.Module:
    """Build a baseline by name: one of ``METHODS``."""
    if method not in _CLASSES:
        raise ValueError(f"unknown baseline {method!r}; choose one of {METHODS}")
    return _CLASSES[method](task, **kwargs)


def train_baseline(model: nn.Module, task: Task, *, n_iters: int, batch: int, lr: float = 1e-3, seed: int = 0,
                   device="cpu", scratch=None, desc: str = "baseline") -> dict:
    """Adam on ``model.loss`` for ``n_iters`` steps of ``batch`` fresh problems (via ``training.fit``)."""
    from .training import fit

    gen = torch.Generator().manual_seed(seed)
    if hasattr(model, "generator"):
        model.generator = gen
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    hist = fit(model, opt, lambda m, p: m.loss(p.x, p.y), lambda step: task.sample(batch, "train", gen).to(device),
               n_iters, scratch=scratch, desc=desc, log_every=max(1, n_iters // 100))
    return hist
