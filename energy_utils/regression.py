"""Supervised task-specific reconstruction: the best a regression network gets from the same data.

The posterior samplers of notebook 09 use one prior for every task; a regression network is trained for one
task only, on pairs (y, x) with y = A x + n. It estimates E[x | y] (the MMSE point estimate, the "Palette-like"
reference of the paper's tables, without its diffusion sampling), so it bounds what a point estimate from the
same training digits can reach in PSNR. The network sees the back-projection Aᵀy reshaped as an image and
returns x̂ = Aᵀy − body(Aᵀy) (:class:`~energy_utils.networks.DenoiserUNet` with biases); the loss is the mean
squared error ‖x̂ − x‖², with fresh noise for every batch. Training stops when the validation MSE flattens
(:class:`~energy_utils.training.PlateauLR`).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .training import PlateauLR, fit


def back_project(A: torch.Tensor, y: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Aᵀy as signals of ``shape`` ((C, H, W)): the regression network's input, (B, *shape)."""
    return (y @ A.to(y)).reshape(y.shape[0], *shape)


def train_regression(model: nn.Module, A: torch.Tensor, noise_std: float, train_x: torch.Tensor,
                     val_x: torch.Tensor, n_steps: int, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
                     scratch: Path | None = None, plateau: dict | None = None, validate_every: int = 200,
                     max_time_s: float | None = None, desc: str = "regression") -> dict:
    """Train ``model`` (Aᵀy image → x̂) by MSE on y = A x + σ_n ε, x from ``train_x`` (N, C, H, W), A (m, CHW).

    Batches (and their noise) are drawn from a generator seeded by (seed, step), so a run resumed from
    ``scratch`` sees the same batches; the validation set ``val_x`` gets one fixed noise draw and its MSE is
    ``val_loss``. With ``plateau`` (keyword arguments of PlateauLR) the rate is halved on validation plateaus
    and training ends when the curve is flat (``n_steps`` is then a cap). Returns the history of
    :func:`energy_utils.training.fit`."""
    if train_x.ndim != 4 or val_x.ndim != 4:
        raise ValueError(f"train_x and val_x must be images (N, C, H, W), got {tuple(train_x.shape)}, {tuple(val_x.shape)}")
    shape = tuple(train_x.shape[1:])
    d = train_x[0].numel()
    if A.ndim != 2 or A.shape[1] != d:
        raise ValueError(f"A must be an (m, {d}) matrix for images of shape {shape}, got {tuple(A.shape)}")
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    device = next(model.parameters()).device
    A32 = A.to(device=device, dtype=torch.float32)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = PlateauLR(optimizer, **(plateau or {}))
    g = torch.Generator().manual_seed(seed + 7919)
    vx = val_x.to(device=device, dtype=torch.float32)
    vy = vx.flatten(1) @ A32.T + noise_std * torch.randn(len(vx), A.shape[0], generator=g).to(device)

    def validate(m):
        pred = torch.cat([m(back_project(A32, vy[i:i + 256], shape)) for i in range(0, len(vy), 256)])
        return {"val_loss": (pred - vx).pow(2).mean().item()}

    def sample_batch(step):
        gb = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(0, len(train_x), (batch_size,), generator=gb)
        x = train_x[idx].to(device=device, dtype=torch.float32)
        y = x.flatten(1) @ A32.T + noise_std * torch.randn(batch_size, A.shape[0], generator=gb).to(device)
        return back_project(A32, y, shape), x

    def loss_fn(m, batch):
        inp, x = batch
        return (m(inp) - x).pow(2).mean()

    return fit(model, optimizer, loss_fn, sample_batch, n_steps, scratch=scratch, scheduler=scheduler,
               desc=desc, validate=validate, validate_every=validate_every, checkpoint_every=validate_every,
               max_time_s=max_time_s)
