"""Training of the energies U_θ(y, Σ) of :mod:`energy_utils.energy_models` with A-DSM, or A-DSM + A-CSM
(:mod:`energy_utils.score_losses`), through :func:`energy_utils.training.fit`: resumable, validated, and run
until the validation curve flattens (:class:`~energy_utils.training.PlateauLR`). The energy counterpart of
:func:`energy_utils.denoisers.train_blind_denoiser`.

* :func:`train_energy_model`: the training (clean examples, Σ ~ a :class:`~energy_utils.covariances.CovFamily`,
  ε ~ N(0, Σ), all drawn in the batch from a generator seeded by the step, so a resumed run continues
  identically and several processes split the same global batch).
* :func:`energy_validation`: a validation callable on fixed held-out examples with fixed Σ and noise draws.
* :func:`load_energy_model`: rebuild a checkpoint saved with ``meta["kind"]`` and ``meta["kwargs"]``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import checkpoints
from .covariances import CovFamily, DiagCov
from .energy_models import build_model, denoise, energy_and_scores
from .score_losses import acsm_loss, adsm_loss, score_matching_loss
from .training import BudgetCosineLR, PlateauLR, fit


def _map_shape(x: torch.Tensor) -> tuple[int, ...]:
    """The variance-map shape of a batch of signals: (d,) for vectors (B, d), (1, H, W) for images (B, C, H, W)."""
    if x.ndim == 2:
        return (x.shape[1],)
    if x.ndim == 4:
        return (1, *x.shape[2:])
    raise ValueError(f"energy training needs vectors (N, d) or images (N, C, H, W); got shape {tuple(x.shape)}")


def train_energy_model(model: nn.Module, data: torch.Tensor | Callable, cov_family: CovFamily, n_steps: int,
                       batch_size: int = 32, lr: float = 2e-3, *, dual: bool = True, csm_weight: float = 1.0,
                       seed: int = 0, scratch: Path | None = None, clip_grad: float | None = 1.0,
                       desc: str = "energy", checkpoint_every: int = 500, log_every: int = 10,
                       validate: Callable | None = None, validate_every: int = 500, plateau: dict | None = None,
                       max_time_s: float | None = None, dsm_floor: float = 0.0) -> dict:
    """Train an energy U_θ(y, Σ) with Adam on the A-DSM loss, plus ``csm_weight`` × the A-CSM loss when ``dual``:

        L(θ) = E_{x, Σ ~ p(Σ), ε ~ N(0, Σ)} [ (1/d) ‖Σ^{½}∇_yU_θ(x + ε, Σ) − Σ^{−½}ε‖²
                                              + λ·[dual] (1/d²) Σ_i (v_i ∂U_θ/∂v_i − ½ Σ_c (1 − ε̃²_{c,i}))² ],

    λ = ``csm_weight`` (λ = d weights A-CSM by 1/d instead of 1/d²), as computed by
    :func:`energy_utils.score_losses.score_matching_loss`; ``dsm_floor`` c > 0 replaces the whitening Σ^{−½} of
    the first term by (Σ + cI)^{−½} (:func:`energy_utils.score_losses.adsm_loss`).

    ``data``: clean examples, vectors (N, d) or images (N, C, H, W), sampled uniformly with replacement, or a
    callable ``data(batch_size, generator) -> clean batch`` (e.g. a Gaussian mixture's ``sample``). Each batch
    is (x, Σ, ε): the examples, ``cov_family.sample`` and ε ~ N(0, Σ), all drawn from a generator seeded by
    (``seed``, step), so that a run resumed from ``scratch`` sees the same batches and noise, and two models
    trained with the same ``seed`` (single and dual) see the same batches. Gradients clipped to ``clip_grad``.

    Schedule: with ``plateau`` (keyword arguments of :class:`~energy_utils.training.PlateauLR`; needs
    ``validate``), the learning rate is halved whenever the first metric of ``validate`` stops improving and the
    training ends when it has flattened (``n_steps`` is then only a cap); without it, a linear warm-up then a
    cosine decay to 2% of ``lr`` over ``n_steps`` (:class:`~energy_utils.training.BudgetCosineLR`, by steps).
    ``validate(model) -> {"val_loss": ..., ...}`` (e.g. :func:`energy_validation`) runs every
    ``validate_every`` steps; ``max_time_s`` bounds this call's wall time (resume later with the same
    ``scratch``). Returns the history of :func:`energy_utils.training.fit` (its ``extra`` holds the "dsm" and,
    when dual, "csm" terms).
    """
    if csm_weight < 0:
        raise ValueError(f"csm_weight must be >= 0, got {csm_weight}")
    if isinstance(data, torch.Tensor):
        map_shape = _map_shape(data)
        if data.shape[0] == 0:
            raise ValueError("data holds no examples")
    elif not callable(data):
        raise TypeError(f"data must be a tensor of clean examples or a callable (batch_size, generator) -> batch, "
                        f"got {type(data).__name__}")
    p = next(model.parameters())
    device, dtype = p.device, p.dtype
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    if plateau is not None:
        if validate is None:
            raise ValueError("plateau training needs a validate callable (e.g. energy_validation) to watch")
        scheduler = PlateauLR(optimizer, **plateau)
    else:
        scheduler = BudgetCosineLR(optimizer, n_steps, warmup=min(100, max(1, n_steps // 10)))

    def sample_batch(step):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        if isinstance(data, torch.Tensor):
            x = data[torch.randint(0, data.shape[0], (batch_size,), generator=g)]
        else:
            x = data(batch_size, g)
        x = x.to(dtype=dtype)
        cov = cov_family.sample(batch_size, _map_shape(x), g, dtype)
        eps = cov.sample(cov.channels(x), g)
        return x.to(device), cov.to(device=device), eps.to(device)

    def loss_fn(m, batch):
        x, cov, eps = batch
        return score_matching_loss(m, x, cov, dual=dual, csm_weight=csm_weight, eps=eps, dsm_floor=dsm_floor)

    return fit(model, optimizer, loss_fn, sample_batch, n_steps, scratch=scratch, scheduler=scheduler,
               clip_grad=clip_grad, desc=desc, checkpoint_every=checkpoint_every, log_every=log_every,
               validate=validate, validate_every=validate_every, max_time_s=max_time_s,
               settings={"dual": dual, "csm_weight": float(csm_weight), "dsm_floor": float(dsm_floor),
                         "batch_size": batch_size, "lr": lr, "seed": seed})


def energy_validation(x_val: torch.Tensor, cov_family: CovFamily, fixed_covs: dict[str, DiagCov] | None = None,
                      seed: int = 0, dsm_floor: float = 0.0) -> Callable[[nn.Module], dict]:
    """A validation callable for :func:`train_energy_model` on held-out clean examples ``x_val``.

    Σ_j ~ ``cov_family`` (one per example) and ε_j ~ N(0, Σ_j) are drawn **once** here (generator ``seed``), so
    the values are comparable across training steps and between models. ``validate(model)`` returns, in order:

    * ``val_loss``: the mean A-DSM loss (1/d)‖Σ^{½}∇_yU − Σ^{−½}ε‖² on these draws (the metric PlateauLR
      watches; the same for single and dual models, so their curves are comparable); with ``dsm_floor`` c > 0
      it is the floored loss the model is trained on (:func:`energy_utils.score_losses.adsm_loss`) and the
      paper's unfloored loss is reported beside it as ``val_loss_paper``;
    * ``val_csm``: the mean A-CSM loss (1/d²) Σ_i (v_i ∂U/∂v_i − ½Σ_c(1 − ε̃²_{c,i}))² on the same draws
      (unweighted; what the dual model also fits, and what the single model does not);
    * ``val_mse@<name>``: for each fixed covariance of ``fixed_covs`` (one Σ, batch 1, shared by all examples;
      its own fixed noise draw), the MSE per coordinate of the denoiser D(y) = y − Σ∇_yU against x.

    Every call is one batch of ``len(x_val)`` examples: keep it small (e.g. 128 digits).
    """
    x = x_val.detach().float().cpu()
    map_shape = _map_shape(x)
    C = 1 if x.ndim == 2 else x.shape[1]
    g = torch.Generator().manual_seed(seed)
    cov = cov_family.sample(x.shape[0], map_shape, g)
    eps = cov.sample(C, g)
    fixed = {}
    for name, c in (fixed_covs or {}).items():
        if c.batch_size != 1 or c.map_shape != map_shape:
            raise ValueError(f"fixed covariance {name!r} must be one Σ with variance map {map_shape}; "
                             f"got {c.batch_size} of {c.map_shape}")
        cn = c.to(dtype=torch.float32, device=torch.device("cpu")).expand_batch(x.shape[0])
        fixed[name] = (cn, cn.sample(C, g))

    def validate(model):
        p = next(model.parameters())
        dev, dt = p.device, p.dtype
        xs, e, cv = x.to(dev, dt), eps.to(dev, dt), cov.to(dt, dev)
        sc = energy_and_scores(model, xs + e, cv, cov_score=True)
        out = {"val_loss": adsm_loss(sc.grad_y, e, cv, dsm_floor).mean().item()}
        if dsm_floor > 0:
            out["val_loss_paper"] = adsm_loss(sc.grad_y, e, cv).mean().item()
        out["val_csm"] = acsm_loss(sc.grad_logvar, e, cv).mean().item()
        for name, (cn, en) in fixed.items():
            cn = cn.to(dt, dev)
            out[f"val_mse@{name}"] = (denoise(model, xs + en.to(dev, dt), cn) - xs).pow(2).mean().item()
        return out

    return validate


def load_energy_model(name: str, profile: str = "full", device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild and load an energy checkpoint whose meta holds ``kind`` ('vector' / 'image') and the model's
    ``kwargs`` (:func:`energy_utils.energy_models.build_model`); returns (model in eval mode, meta)."""
    ck = checkpoints.load_checkpoint(name, profile)
    meta = ck["meta"]
    if "kind" not in meta or "kwargs" not in meta:
        raise KeyError(f"checkpoint {name!r} has no 'kind' / 'kwargs' in its metadata; it is not an energy model")
    model = build_model(meta["kind"], **meta["kwargs"])
    model.load_state_dict(ck["state_dict"])
    return model.to(device).eval(), meta
