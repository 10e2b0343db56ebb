"""Training, evaluation and analysis of blind denoisers (networks in :mod:`energy_utils.networks`).

Convention: a denoiser D returns the clean estimate x̂(y); its residual f(y) = D(y) − y = σ² ∇ log p_σ(y).

* :func:`train_blind_denoiser`: y = x + σ z with σ ~ U[σ_min, σ_max] drawn per example, loss
  mean ‖D(y) − x‖² (MSE), through :func:`energy_utils.training.fit` (tqdm, NaN guard, resumable).
* :func:`evaluate_denoiser`: PSNR/SSIM of clamp(D(y), 0, 1) over a set of noise levels (Mohan et al.'s protocol),
  for a network or any f(y, σ).
* :func:`jacobian`, :func:`effective_dimension`, :func:`symmetry_error`, :func:`scale_equivariance_error`:
  the local linear analysis D(y) = A_y y of bias-free networks.
* :func:`divergence`, :func:`tweedie_consistency`: does a denoiser's own uncertainty σ² div D (second-order
  Tweedie) match its real error on given data? (> 1: overconfident there.)
* :func:`save_denoiser` / :func:`load_denoiser`: checkpoints that rebuild their network from ``meta["spec"]``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import checkpoints, networks
from .metrics import psnr, ssim
from .training import PlateauLR, fit


def add_noise(x: torch.Tensor, sigma, generator: torch.Generator | None = None) -> torch.Tensor:
    """y = x + σ z, z ~ N(0, I); σ a float or one value per example (shape (B,))."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.ndim == 1:
        if s.shape[0] != x.shape[0]:
            raise ValueError(f"got {s.shape[0]} noise levels for a batch of {x.shape[0]}")
        s = s.view(-1, *([1] * (x.ndim - 1)))
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype,
                    device=generator.device if generator is not None else x.device).to(x.device)
    return x + s * z


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random dihedral transform (flip + rot90) for the whole image batch."""
    k = int(torch.randint(0, 4, (1,), generator=generator))
    x = torch.rot90(x, k, dims=(-2, -1))
    if int(torch.randint(0, 2, (1,), generator=generator)):
        x = x.flip(-1)
    return x


def train_blind_denoiser(model: nn.Module, data: torch.Tensor | Callable, sigma_range: tuple[float, float],
                         n_steps: int, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
                         scratch: Path | None = None, augment: bool = True, final_lr_fraction: float = 0.05,
                         clip_grad: float | None = 1.0, desc: str = "denoiser", checkpoint_every: int = 250,
                         inverse_variance_weighting: bool = False, sigma_power: float = 1.0,
                         val_data: torch.Tensor | None = None, val_sigmas=None, validate_every: int = 250,
                         plateau: dict | None = None, max_time_s: float | None = None) -> dict:
    """Blind training: each example gets its own σ ~ U[σ_min, σ_max]; loss = mean (D(x + σz) − x)².

    ``data`` is a tensor of clean examples (patches (N, C, H, W) or vectors (N, d)), sampled uniformly with
    replacement (with random flips/rotations for images when ``augment``), or a callable
    ``data(batch_size, generator) -> clean batch`` (e.g. a Gaussian-mixture sampler). Networks with
    ``sigma_input=True`` receive σ as their second argument. Adam with a cosine learning-rate decay to
    ``final_lr_fraction``·lr. Batches are drawn from a generator seeded by (seed, step), so an interrupted run
    resumed from ``scratch`` sees the same batches. ``inverse_variance_weighting`` uses mean ((D(y) − x)/σ)²
    instead, which balances the noise levels (every σ then contributes a residual error of order one).
    ``sigma_power`` p draws σ = σ_min + (σ_max − σ_min)·u^p, u ~ U[0, 1]: p = 1 is uniform, p = 2 puts more
    examples at small σ (where a sampler must end; cf. the "quadratic" σ draw of the lab's later code).

    Validation (``val_data``, clean held-out examples): every ``validate_every`` steps, the MSE of D on
    ``val_data`` + σz for each σ of ``val_sigmas`` (default 8 levels evenly spaced in (σ_min, σ_max], one fixed
    noise draw), logged as ``val_loss`` (their mean: the training objective on held-out data) and
    ``val_mse@σ`` (with ``inverse_variance_weighting``, ``val_loss`` is the mean of MSE/σ², the weighted
    objective). ``plateau`` (keyword arguments of :class:`~energy_utils.training.PlateauLR`) replaces the
    cosine decay: the learning rate is halved whenever ``val_loss`` stops improving and training ends when it
    has flattened (``n_steps`` is then only a cap). ``max_time_s`` bounds this call's wall time (resume later).
    Returns the history of :func:`energy_utils.training.fit`.
    """
    lo, hi = map(float, sigma_range)
    if not 0 <= lo <= hi or hi <= 0:
        raise ValueError(f"sigma_range must satisfy 0 <= lo <= hi, hi > 0; got {sigma_range}")
    if isinstance(data, torch.Tensor) and data.ndim not in (2, 4):
        raise ValueError(f"data must be patches (N, C, H, W) or vectors (N, d); got {tuple(data.shape)}")
    device = next(model.parameters()).device
    sigma_input = getattr(model, "sigma_input", False)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    if plateau is not None:
        if val_data is None:
            raise ValueError("plateau training needs val_data (held-out clean examples) to watch")
        scheduler = PlateauLR(optimizer, **plateau)
    else:
        decay = lambda s: final_lr_fraction + (1 - final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * min(s, n_steps) / max(n_steps, 1)))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, decay)
    validate = None
    if val_data is not None:
        sigmas = [float(v) for v in (val_sigmas if val_sigmas is not None else torch.linspace(lo, hi, 9)[1:].tolist())]
        g = torch.Generator().manual_seed(seed + 7919)
        val_x = val_data.to(device=device, dtype=torch.float32)
        val_z = torch.randn(val_x.shape, generator=g).to(val_x)

        def validate(m):
            out = {}
            for sg in sigmas:
                ys = val_x + sg * val_z
                pred = torch.cat([(m(ys[i:i + 256], torch.full((len(ys[i:i + 256]),), sg).to(ys)) if sigma_input
                                   else m(ys[i:i + 256])) for i in range(0, len(ys), 256)])
                out[f"val_mse@{sg:.3g}"] = (pred - val_x).pow(2).mean().item()
            if inverse_variance_weighting:           # the training objective: each level's MSE / σ²
                loss = sum(v / max(sg, 1e-3) ** 2 for sg, v in zip(sigmas, out.values())) / len(out)
            else:
                loss = sum(out.values()) / len(out)
            return {"val_loss": loss, **out}

    def sample_batch(step):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        if callable(data) and not isinstance(data, torch.Tensor):
            x = data(batch_size, g)
        else:
            idx = torch.randint(0, data.shape[0], (batch_size,), generator=g)
            x = data[idx]
            if augment and x.ndim == 4:
                x = _augment(x, g)
        x = x.to(device=device, dtype=torch.float32)
        sig = lo + (hi - lo) * torch.rand(batch_size, generator=g) ** sigma_power
        y = add_noise(x, sig.to(x), g)
        return x, y, sig.to(x)

    def loss_fn(m, batch):
        x, y, sig = batch
        out = m(y, sig) if sigma_input else m(y)
        err = out - x
        if inverse_variance_weighting:
            err = err / sig.clamp_min(1e-3).view(-1, *([1] * (x.ndim - 1)))
        return err.pow(2).mean()

    return fit(model, optimizer, loss_fn, sample_batch, n_steps, scratch=scratch, scheduler=scheduler,
               clip_grad=clip_grad, desc=desc, checkpoint_every=checkpoint_every, validate=validate,
               validate_every=validate_every, max_time_s=max_time_s)


@torch.no_grad()
def evaluate_denoiser(denoiser: nn.Module | Callable, images: torch.Tensor, sigmas, seed: int = 0,
                      clamp: bool = True, noise: torch.Tensor | None = None) -> list[dict]:
    """PSNR/SSIM (data_range 1) of x̂ = D(y), y = x + σz, over ``images`` (B, C, H, W) for each σ in ``sigmas``.

    ``denoiser``: a network called as D(y) (evaluated in eval mode; no gradients anywhere), or any function
    f(y, σ) → x̂ (a control that needs the noise level, e.g. a Wiener filter). ``noise``: one draw z of the images'
    shape shared by every σ; without it, one draw per image and σ from a generator seeded by (seed, σ index).
    Either way different denoisers see the same noisy images. ``clamp``: clip x̂ to [0, 1] first (Mohan et al.'s
    protocol). Returns rows {sigma, sigma_255, psnr_in, psnr, psnr_std, psnr_se, ssim, rmse} averaged over
    images (rmse: mean per-image ‖x̂ − x‖/√N; at σ = 0 it measures how much the denoiser changes clean images).
    """
    if isinstance(denoiser, nn.Module):
        network = denoiser.eval()
        images = images.to(next(network.parameters()).device)
        denoiser = lambda y, s: network(y)
    if noise is not None and noise.shape != images.shape:
        raise ValueError(f"noise must have the images' shape {tuple(images.shape)}, got {tuple(noise.shape)}")
    rows = []
    for i, s in enumerate(sigmas):
        if noise is None:
            g = torch.Generator().manual_seed(seed * 7919 + i)
            y = add_noise(images.cpu(), float(s), g).to(images.device)
        else:
            y = images + float(s) * noise.to(images.device)
        out = denoiser(y, float(s))
        if clamp:
            out = out.clamp(0, 1)
        p_in, p_out, s_out = psnr(y, images), psnr(out, images), ssim(out, images)
        n = len(p_out)
        rows.append({"sigma": float(s), "sigma_255": round(float(s) * 255, 3), "psnr_in": p_in.mean().item(),
                     "psnr": p_out.mean().item(), "psnr_std": p_out.std().item() if n > 1 else 0.0,
                     "psnr_se": p_out.std().item() / math.sqrt(n) if n > 1 else None, "ssim": s_out.mean().item(),
                     "rmse": (out - images).pow(2).flatten(1).mean(1).sqrt().mean().item()})
    return rows


def jacobian(model: nn.Module, y: torch.Tensor, chunk_size: int | None = 256) -> torch.Tensor:
    """The Jacobian A_y = ∂D/∂y at one input ``y`` (shape of one example, e.g. (C, H, W)), as an (N, N) matrix
    with N = y.numel(); row i is the adaptive filter that produces output pixel i. Computed in eval mode."""
    from torch.func import jacrev

    model.eval()
    shape = y.shape
    fn = lambda v: model(v.reshape(1, *shape)).reshape(-1)
    return jacrev(fn, chunk_size=chunk_size)(y.reshape(-1).detach()).detach()


def effective_dimension(J: torch.Tensor) -> torch.Tensor:
    """Σ_i s_i² = ‖J‖_F² (the measure of Mohan et al.'s analysis notebook; for a projection it is its rank)."""
    return J.pow(2).sum((-2, -1))


def symmetry_error(J: torch.Tensor) -> torch.Tensor:
    """‖J − Jᵀ‖_F / ‖J‖_F (0 for a symmetric Jacobian, i.e. a gradient field of a scalar energy)."""
    return torch.linalg.matrix_norm(J - J.transpose(-1, -2)) / torch.linalg.matrix_norm(J)


@torch.no_grad()
def scale_equivariance_error(model: nn.Module | Callable, y: torch.Tensor, alphas=(0.25, 0.5, 2.0, 4.0)) -> dict:
    """max over the batch of ‖D(αy) − αD(y)‖ / ‖αD(y)‖ for each α (a module is put in eval mode; any callable
    y -> x̂ works, e.g. a denoiser conditioned on a fixed task input). Bias-free nets: float rounding."""
    if isinstance(model, nn.Module):
        model.eval()
    base = model(y)
    out = {}
    for a in alphas:
        err = (model(a * y) - a * base).flatten(1).norm(dim=1) / (a * base).flatten(1).norm(dim=1).clamp_min(1e-30)
        out[float(a)] = err.max().item()
    return out


@torch.no_grad()
def divergence(model: nn.Module | Callable, y: torch.Tensor, step: float | torch.Tensor, probes: int = 8,
               seed: int = 0) -> torch.Tensor:
    """Hutchinson estimate of div D(y) = tr ∂D/∂y per example, (B,): the mean over ``probes`` Rademacher
    vectors ε of εᵀ[D(y + δε) − D(y − δε)]/(2δ) with δ = ``step`` (a number, or one per example). Exact for a
    linear D with a diagonal matrix; unbiased for any linear D. A module is put in eval mode."""
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    step = torch.as_tensor(step, dtype=y.dtype, device=y.device)
    if torch.any(step <= 0):
        raise ValueError("the finite-difference step must be > 0")
    step = step.reshape(-1, *[1] * (y.dim() - 1)) if step.numel() > 1 else step
    if isinstance(model, nn.Module):
        model.eval()
    g = torch.Generator().manual_seed(seed)
    total = torch.zeros(y.shape[0], dtype=torch.float64, device=y.device)
    for _ in range(probes):
        eps = (torch.randint(0, 2, y.shape, generator=g) * 2 - 1).to(y.device, y.dtype)
        jv = (model(y + step * eps) - model(y - step * eps)) / (2 * step)
        total += (eps * jv).flatten(1).sum(1).double()
    return total / probes


@torch.no_grad()
def tweedie_consistency(model: nn.Module | Callable, x: torch.Tensor, sigma: float, probes: int = 8,
                        seed: int = 0) -> dict:
    """Compare a denoiser's real error on clean data ``x`` with the error it implies about itself.

    For the MMSE denoiser of y = x + σz, Cov[x | y] = σ² ∂D/∂y (second-order Tweedie), so
    E‖D(y) − x‖² = σ² E[div D(y)]: on data from the prior it was trained for, the ratio

        ρ = Σ_b ‖D(y_b) − x_b‖² / Σ_b σ² div D(y_b)

    is 1. ρ > 1 means the denoiser is *overconfident* on ``x`` (its error exceeds the posterior spread its
    Jacobian claims; e.g. data from outside its training distribution), ρ < 1 underconfident. A sampler driven
    by an overconfident denoiser draws too narrow posteriors. One noise draw (seeded), ``probes`` Rademacher
    probes for the divergence (:func:`divergence`, δ = 10⁻³σ). Returns {"ratio", "mse" (B,), "sigma2_div" (B,)},
    both per example summed over coordinates."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if isinstance(model, nn.Module):
        model.eval()
    g = torch.Generator().manual_seed(seed)
    y = x + sigma * torch.randn(x.shape, generator=g).to(x.device, x.dtype)
    mse = (model(y) - x).flatten(1).pow(2).sum(1).double()
    s2div = sigma ** 2 * divergence(model, y, 1e-3 * sigma, probes, seed + 1)
    return {"ratio": (mse.sum() / s2div.sum()).item(), "mse": mse, "sigma2_div": s2div}


def save_denoiser(name: str, model: nn.Module, meta: dict, profile: str) -> Path:
    """Save a network with its ``spec`` so :func:`load_denoiser` can rebuild it."""
    return checkpoints.save_checkpoint(name, model.state_dict(), {"spec": model.spec, **meta}, profile)


def load_denoiser(name: str, profile: str = "full", device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild and load a network saved by :func:`save_denoiser`; returns (model in eval mode, meta)."""
    ck = checkpoints.load_checkpoint(name, profile)
    meta = ck["meta"]
    if "spec" not in meta:
        raise KeyError(f"checkpoint {name!r} has no 'spec' in its metadata; it was not saved by save_denoiser")
    model = networks.build(meta["spec"])
    model.load_state_dict(ck["state_dict"])
    return model.to(device).eval(), meta
