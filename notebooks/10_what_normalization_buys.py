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
# # 10 · What normalization buys: MALA, blind estimation, energy-guided schedules, likelihoods
#
# **Claims checked** (Zilberstein, Segarra, Simoncelli & Guth, ICML 2026; `../shared/reference/acsm.md`
# §5.2–§5.4 and §6.3): a normalized energy U_θ(y, Σ) = −log p(y | Σ) + const, with one constant for every Σ,
#
# 1. makes Metropolis-adjusted Langevin (MALA) possible, removing the step-size bias of unadjusted Langevin;
# 2. estimates the measurement's covariance blindly (a box size, masked rows, a noise level) by
#    θ̂ = argmin_θ U_θ(y, Σ(θ)), which an energy trained by A-DSM alone cannot (its offset depends on Σ);
# 3. lets the covariance schedule of a posterior sampler be steered by the energy itself (Σ decreased by its
#    covariance score), which the paper finds more accurate than a geometric schedule on the k-pixel MNIST task;
# 4. scores data above corrupted and out-of-distribution inputs.
#
# Each claim is set against a control without normalization: the A-DSM-only ("single") energy trained on the
# same data, and where possible a Gaussian prior fitted to the same data (it is normalized by construction, so
# it separates "normalization" from "a good model"). On Gaussian mixtures (section 1) the exact answer is known.
#
# **Where a claim is about normalization and where it is not.** At a *fixed* Σ every Metropolis ratio and every
# ranking of inputs uses U only up to a constant, so the single model can do them as well as the dual one; only
# comparisons *across* Σ (blind estimation, a posterior over the noise level) need the constant to be the same
# for every Σ. The sections below test both kinds and say which is which.

# %% tags=["parameters"]
import os

PROFILE = os.environ.get("PROFILE", "smoke")
SEED = 0
DEVICE = "auto"
RETRAIN = False           # this notebook trains nothing: it loads notebook 08's energies
KPIXEL_EXTEND_HOURS = 0.0  # full profile: hours to spend extending the k-pixel store (0: read the committed store)

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from energy_utils import blind, metrics, recipes
from energy_utils import posterior_samplers as ps
from energy_utils.covariances import DiagCov, box_var, half_var
from energy_utils.data import extract_patches, load_image_set, load_mnist
from energy_utils.densities import GaussianMixture, NoiseCov, benchmark_mixture
from energy_utils.energy_training import load_energy_model
from energy_utils.reporting import Report
from energy_utils.runtime import configure_threads, pick_device, pick_profile, seed_everything

configure_threads()
gen = seed_everything(SEED)
device = pick_device(DEVICE)
cfg = pick_profile({
    "smoke": dict(n_y=2, n_per=32, n_steps=40, steps=[0.003, 0.03, 0.3], sigma_grid=9, n_blind=6, n_lik=32),
    "full": dict(n_y=8, n_per=200, n_steps=400, steps=[0.001, 0.003, 0.01, 0.03, 0.1, 0.3], sigma_grid=25,
                 n_blind=100, n_lik=500),
}, PROFILE)
report = Report("10_what_normalization_buys", PROFILE, SEED, device,
                parameters={"RETRAIN": RETRAIN, "KPIXEL_EXTEND_HOURS": KPIXEL_EXTEND_HOURS, **cfg})
print(report.parameters, device)

# %% [markdown]
# ## 1 · MALA against unadjusted Langevin on exact posteriors
#
# The d = 16 mixture of notebook 08 (6 components), its first 8 coordinates observed with noise variance 0.1,
# prior smoothed by s = 10⁻³ (the smallest variance the learned energies were trained on; the exact reference is
# the posterior of that smoothed prior). Chains **start at exact posterior draws**, so what we see is the
# stationary error of each chain, not its mixing from a bad start: ULA (x ← x − h∇V + √(2h)ξ) is biased by
# O(h); MALA (the same proposal, accepted with the Metropolis–Hastings ratio, which uses V = U + misfit at a
# fixed Σ) is exact at every h, but pays with acceptance, i.e. with its effective sample size per evaluation
# (ESS/NFE, of the first unobserved coordinate, Geyer's initial positive sequence over the second half).
# Priors: the exact score, and the learned dual and single energies of notebook 08 (for them the "exact"
# reference measures the model's error too).

# %%
S_END = 1e-3
NV = 0.1
models, metas = {}, {}
for arm in ("dual", "single"):
    m, metas[arm] = load_energy_model(f"08_gm_d16_{arm}", "full", device)
    models[arm] = m.double()
spec = metas["dual"]["mixture"]
mix = benchmark_mixture(spec["d"], spec["K"], spec["seed"])
mix_s = mix.smoothed(S_END)
priors = {"exact": ps.MixturePrior(mix), "dual": ps.EnergyPrior(models["dual"]), "single": ps.EnergyPrior(models["single"])}
A = torch.eye(16, dtype=torch.float64)[:8]
g1 = torch.Generator().manual_seed(SEED + 1)
n_y, n_per = cfg["n_y"], cfg["n_per"]
x_true = mix_s.sample(n_y, g1)
y = x_true @ A.T + math.sqrt(NV) * torch.randn(n_y, 8, generator=g1, dtype=torch.float64)
post = mix_s.posterior(A, NV, y)
ref, ref2, start = post.sample(n_per, g1), post.sample(n_per, g1), post.sample(n_per, g1)
floor = metrics.sliced_wasserstein2(ref2, ref, 256, torch.Generator().manual_seed(SEED)).mean().item()
lik = ps.LinearGaussianLikelihood(A, y.repeat_interleave(n_per, 0), NV)

rows = []
for prior_name, prior in priors.items():
    for h in cfg["steps"]:
        for mala in (False, True):
            trace = []
            fn = ps.mala_sample if mala else ps.langevin_sample
            try:
                x, info = fn(prior, lik, start.reshape(-1, 16).clone(), step=h, n_steps=cfg["n_steps"],
                             prior_var=S_END, generator=torch.Generator().manual_seed(SEED + 2),
                             callback=lambda d: trace.append(d["x"][:, 8].clone()), disable=True)
            except ps.SamplerDivergence:
                rows.append({"prior": prior_name, "step": h, "sampler": "MALA" if mala else "ULA", "diverged": True})
                continue
            xs = x.reshape(n_y, n_per, 16)
            err = metrics.posterior_errors(xs, post, x_true, ref, 256, torch.Generator().manual_seed(SEED))
            tr = torch.stack(trace[len(trace) // 2:])
            rows.append({"prior": prior_name, "step": h, "sampler": "MALA" if mala else "ULA", "diverged": False,
                         "sw2_ratio": err["sw2"] / floor, "cov_err": err["cov_err"], "mode_tv": err["mode_tv"],
                         "acceptance": info.get("acceptance", 1.0),
                         "ess_per_nfe": metrics.effective_sample_size(tr) / (tr.shape[0] * tr.shape[1])})
mala_table = pd.DataFrame(rows)
report.table("mala_vs_ula", mala_table, show=False)
mala_table.pivot_table(index=["prior", "step"], columns="sampler",
                       values=["sw2_ratio", "cov_err", "acceptance", "ess_per_nfe"]).round(3)

# %%
fig, axes = plt.subplots(1, 3, figsize=(7.0, 2.5))
for prior_name, ls in zip(priors, ("-", "--", ":")):
    for s, col in (("ULA", "C3"), ("MALA", "C0")):
        sub = mala_table[(mala_table.prior == prior_name) & (mala_table.sampler == s) & ~mala_table.diverged.astype(bool)]
        axes[0].plot(sub.step, sub.sw2_ratio, ls, marker="o", ms=3, color=col, label=f"{s}, {prior_name}")
        axes[2].plot(sub.step, sub.ess_per_nfe, ls, marker="o", ms=3, color=col)
        if s == "MALA":
            axes[1].plot(sub.step, sub.acceptance, ls, marker="o", ms=3, color=col, label=prior_name)
axes[0].axhline(1, color="k", lw=0.7)
for ax, t in zip(axes, ("SW₂ / MC floor", "MALA acceptance", "ESS per NFE")):
    ax.set_xscale("log"); ax.set_xlabel("step h"); ax.set_title(t, fontsize=9)
axes[0].set_yscale("log")
axes[0].legend(fontsize=6)
fig.tight_layout()
report.save_figure(fig, "10_mala_bias_vs_step", "d = 16 mixture posterior (mask, σ_n² = 0.1), chains started at exact "
                   "draws: stationary error of ULA and MALA against the step size (SW2 relative to the Monte Carlo "
                   "floor), MALA's acceptance and the ESS per evaluation, for the exact score and the learned energies")

# %% [markdown]
# **The constant cancels at a fixed Σ.** MALA needs U only up to a constant that is the same at x and at the
# proposal, i.e. at one Σ. So it runs as well on the single (A-DSM-only) energy, whose offset depends on Σ, as on
# the dual one, and adding any function c(Σ) to the exact energy changes nothing: we check that the chain is
# *identical* (same seed) with U and with U + c(Σ).

# %%
class OffsetPrior:
    """The exact prior's energy plus an arbitrary function of the variance, c(Σ) = 37 + 5 log v."""

    def __init__(self, prior):
        self.prior = prior

    def energy_and_grad(self, x, var, create_graph=False):
        u, g = self.prior.energy_and_grad(x, var, create_graph)
        return u + 37.0 + 5.0 * math.log(float(var)), g


runs = [ps.mala_sample(p, lik, start.reshape(-1, 16).clone(), step=0.01, n_steps=50, prior_var=S_END,
                       generator=torch.Generator().manual_seed(SEED + 3), disable=True)[0]
        for p in (priors["exact"], OffsetPrior(priors["exact"]))]
same = torch.equal(runs[0], runs[1])
report.value("mala_invariant_to_a_sigma_offset_at_fixed_sigma", same)
report.check("MALA at a fixed Σ gives the identical chain with U and U + c(Σ)", float(same), 1.0, ">=")

# %% [markdown]
# **Across Σ it does not cancel.** The posterior over the noise level of an isotropic observation,
# p(σ² | y) ∝ p(y | σ²I) on a log grid (flat prior on log σ²), needs U(y, σ²I) to carry −log p(y | σ²) with the
# *same* constant at every σ². We compute it exactly (mixture), with the dual and the single energies, and with
# a Gaussian fitted to the mixture (normalized, but the wrong shape), for data observed at σ² ∈ {0.01, 0.1, 1}.

# %%
sig_grid = torch.logspace(-3, 1, cfg["sigma_grid"], dtype=torch.float64)
gauss_gm = mix.moment_matched()
noise_rows, curves = [], {}
g2 = torch.Generator().manual_seed(SEED + 4)
x_n = mix.sample(64 if PROFILE == "full" else 16, g2)
for s_true in (0.01, 0.1, 1.0):
    yn = x_n + math.sqrt(s_true) * torch.randn(x_n.shape, generator=g2, dtype=torch.float64)
    Us = {"exact": torch.stack([-mix.log_prob(yn, NoiseCov.isotropic(float(v))) for v in sig_grid], 1),
          "Gaussian": torch.stack([-gauss_gm.log_prob(yn, NoiseCov.isotropic(float(v))) for v in sig_grid], 1)}
    for arm in ("dual", "single"):
        Us[arm] = torch.stack([priors[arm].energy_and_grad(yn, float(v))[0].detach() for v in sig_grid], 1)
    post_exact = torch.softmax(-Us["exact"], 1)
    for name, U in Us.items():
        p = torch.softmax(-U, 1)
        est = sig_grid[U.argmin(1)]
        noise_rows.append({"true σ²": s_true, "energy": name,
                           "TV to the exact p(σ²|y)": 0.5 * (p - post_exact).abs().sum(1).mean().item(),
                           "median σ̂² / σ²": (est / s_true).median().item(),
                           "hit rate (nearest grid point)": (est == sig_grid[(sig_grid.log() - math.log(s_true)).abs().argmin()]).double().mean().item()})
        curves[(s_true, name)] = p.mean(0)
noise_table = report.table("noise_level_posterior", noise_rows)

# %% [markdown]
# ## 2 · Blind estimation on MNIST
#
# y = x + n with n ~ N(0, Σ(θ)) and θ unknown, θ̂ = argmin over a candidate grid of U(y, Σ(θ)) — the paper's
# blind box-size and noise-level experiments (reference §5.4; it shows one image per case). Ours, on
# `n_blind` test digits per setting:
#
# * box side s ∈ {6, 10, 14, 18}, inside variance v ∈ {1, 0.1, 0.01}, outside 10⁻⁴ (known), candidates
#   s' ∈ {2, 4, …, 28};
# * a half mask: the top k ∈ {7, 14, 21} rows at variance 0.1, the rest 10⁻⁴, candidates k' ∈ {0, …, 28};
# * the noise level of an isotropic observation, σ² ∈ {0.01, 0.1, 1}, candidates a 25-point log grid on
#   [10⁻³, 10] (it holds the true values).
#
# Energies: the dual and single MNIST energies of notebook 08 (`recipes.MNIST_ENERGY_PAIRS[MN_PAIR]`, the
# "offset" pair: a learned, bounded residual on a rank-512 PCA Gaussian of the training digits, trained with A-DSM
# and fine-tuned with A-DSM (single); the dual is that single plus a Σ-only offset head c(Σ) trained by A-DSM +
# A-CSM at λ = 4 with the rest frozen, so both have the same y-score and differ only in how their energy moves
# with Σ, which is what a blind scan reads; at initialisation they equal the full Gaussian control up to its
# rank), the **per-pixel Gaussian control** (no network: independent pixels with the training digits' means and
# variances) and the full Gaussian control N(μ, C + Σ). The previous run of this notebook used the "joint" pair
# (the same start fine-tuned with and without A-CSM jointly, λ = 4); its numbers are quoted where they differ.
# Reported: hit rate (θ̂ = θ) and median |θ̂ − θ|.

# %%
MN_PAIR = recipes.MNIST_CURRENT_PAIR   # notebook 08's current pair: "offset" (recipes.MNIST_ENERGY_PAIRS)
mn = {arm: load_energy_model(recipes.MNIST_ENERGY_PAIRS[MN_PAIR][arm], "full", device) for arm in ("dual", "single")}
report.table("mnist_energies", [recipes.budget_row(recipes.MNIST_ENERGY_PAIRS[MN_PAIR][arm]) for arm in mn])
fit, test = load_mnist("fit"), load_mnist("test")
report.record_data("training digits (controls)", fit.source)
report.record_data("test digits", test.source)
Xf = fit.images.double().flatten(1)
pix_mean, pix_var = fit.images.double().mean(0), fit.images.double().var(0)
full_cov = torch.cov(Xf.T) + 1e-4 * torch.eye(784, dtype=torch.float64)
ENERGIES = {"dual": blind.model_energy(mn["dual"][0]), "single": blind.model_energy(mn["single"][0]),
            "per-pixel Gaussian": blind.pixel_gaussian_energy(pix_mean, pix_var),
            "Gaussian": blind.gaussian_energy(Xf.mean(0), full_cov)}
SHAPE = (1, 28, 28)
nb = cfg["n_blind"]
xb = test.images[-nb:].to(device)
g3 = torch.Generator().manual_seed(SEED + 5)


def one(v):
    return torch.tensor([float(v)], dtype=torch.float64)


def box_cov(s, vin, vout=1e-4):
    return DiagCov.from_var(box_var(SHAPE, torch.tensor([int(s)]), one(vin), one(vout))).to(torch.float32, device)


def half_cov(k, vin, vout=1e-4):
    return DiagCov.from_var(half_var(SHAPE, torch.tensor([int(k)]), one(vin), one(vout))).to(torch.float32, device)


def iso_cov(v):
    return DiagCov.isotropic(float(v), SHAPE, device=device)


settings = ([("box side", s, v, lambda c, v=v: box_cov(c, v), list(range(2, 29, 2)), lambda s, v: box_cov(s, v))
             for s in (6, 10, 14, 18) for v in (1.0, 0.1, 0.01)]
            + [("half rows", k, 0.1, lambda c: half_cov(c, 0.1), list(range(0, 29)), lambda k, v: half_cov(k, v))
               for k in (7, 14, 21)]
            + [("noise level", v, v, iso_cov, [float(t) for t in torch.logspace(-3, 1, 25)], lambda v, _: iso_cov(v))
               for v in (0.01, 0.1, 1.0)])
blind_rows = []
for kind, theta, vin, make_cov, cands, true_cov in settings:
    cov_t = true_cov(theta, vin).expand_batch(nb)
    yb = xb + cov_t.sample(1, g3).to(device)
    for name, energy in ENERGIES.items():
        est, _ = blind.estimate(energy, yb, cands, make_cov)
        err = (est.double() - theta).abs() if kind != "noise level" else (est.double().log10() - math.log10(theta)).abs()
        blind_rows.append({"parameter": kind, "true": theta, "inside var": vin, "energy": name,
                           "hit rate": (err < 1e-6).double().mean().item(), "median |error|": err.median().item(),
                           "unit": "decades" if kind == "noise level" else ("rows" if kind == "half rows" else "pixels")})
blind_table = pd.DataFrame(blind_rows)
report.table("blind_estimation", blind_table, show=False)
blind_table.pivot_table(index=["parameter", "true", "inside var"], columns="energy", values="hit rate").round(2)

# %% [markdown]
# Hit rates (fraction of digits whose θ̂ is exactly the true value); the per-row medians of |θ̂ − θ| are in the
# results JSON (`blind_estimation`). The paper reports one CelebA image per case (box 14: dual ŝ = 14, single
# ≈ 27; noise level σ = 2: σ̂ = 1.70, the nearest grid point), so hit rates over 100 digits have no published
# counterpart.
#
# **Reading (full run; notebook 08's offset pair, one training seed).** Dual and single here are the same network
# with the same y-score; the dual adds only the Σ-only head c(Σ), trained by A-CSM with everything else frozen. So
# this table isolates what the normalization buys, with nothing else changed. At moderate and high contrast (inside
# variance 0.1 or 1 against 10⁻⁴ outside) the dual finds the box side, the number of noisy rows and the noise level
# in 95–100 % of digits, level with the full Gaussian control (89–100 %) and ahead of the per-pixel Gaussian
# (0.44–0.98 on box sides). At low contrast (inside variance 0.01) no energy is reliable: the dual's hit rates on
# box sides 6 / 10 / 14 / 18 are 0.23 / 0.20 / 0.56 / 0.82 against the full Gaussian's 0.21 / 0.45 / 0.58 / 0.80,
# and 0.79 against 0.86 on the noise level 0.01; its mean hit rate over all settings is 0.85 against the Gaussian's
# 0.86. The single (the same network without c(Σ)) works only where the contrast is large: box sides at v = 1
# (0.98–1.00) and the rows (0.98–1.00); it never finds the noise level, misses every box side at v = 0.01 and all
# but the largest at v = 0.1 (0.00–0.03; side 18: 0.74), picking too large a Σ (median errors up to 16 pixels,
# 0.5–0.8 decades), although its Gaussian base carries an exact log-det: the learned residual's Σ-dependent offset,
# which A-DSM leaves free, drifts (notebook 08). **The head alone takes the mean hit rate from 0.43 to 0.85** (one
# training seed: a large difference, observed, not a seed-level verdict): the
# paper's A-CSM ablation on MNIST in its cleanest form, against controls; the covariance term is what makes the
# blind scan work for the learned energy, and at this budget the dual matches the full Gaussian control's exact
# log-det overall, ahead of it on box sides at v = 0.1 (0.95–0.98 against 0.89–0.95) and behind it at the lowest
# contrast on box side 10 (0.20 against 0.45) and the smallest noise level. The jointly fine-tuned dual of this
# notebook's previous run (a different y-score as well) had a mean of 0.87, 0.34 / 0.53 / 0.77 / 0.84 on the
# low-contrast box sides and 0.56 on the noise level 0.01; earlier duals (the unbounded rank-512, the rank-256 λ =
# 28) 0.23–0.96 on low-contrast sides: one seed per energy, so observations, not a verdict.

# %% [markdown]
# ## 3 · The energy-guided covariance schedule on the k-pixel MNIST task
#
# The paper's experiment (reference §6.3 item 4): k ∈ {50, 100, 150, 300} of the 784 pixels revealed (one
# random set per k, noise variance 10⁻⁷), the rest sampled; the samples are classified and the classification
# error compared. Geometric PC (σ from 10 to 0.01) against the energy-guided schedule (§5.3: each unobserved
# variance decreased by γ·v|∂U/∂v|v, so the model decides where to remove noise first), with shared noise and
# the **same NFE** (≈ 2 per level, `kp_levels` = 100 levels: ≈ 200); then geometric PC with 3× and 10× as many
# levels, to find the NFE at which the geometric schedule reaches the energy-guided error. The paper runs 498
# outer iterations with 5 correctors (~3,000 NFE) on 2,816 digits per k; we use one corrector per level,
# temperature 0.5 for every sampler (the paper's energy-guided T), γ = 0.06 (its MNIST value) and a minimum
# relative step so that the schedule reaches s_end = 10⁻⁴ within its steps. The single (A-DSM-only) energy's
# covariance score carries its arbitrary Σ-offset, so the energy-guided schedule on it is the control without
# normalization; the Gaussian control's posterior samples give the error of a linear prior.
#
# **Scale and the store.** The energy-guided schedule gives every chain its own Σ, so the rank-512 Gaussian base
# of the energies factorises a 512 × 512 system per digit and evaluation: 9.5 ms per digit and NFE on two threads
# of an Intel Xeon, 8× a geometric PC step (1.2 ms), whose chains share Σ. A predictor and its corrector evaluate
# at the same Σ, so the base reuses the factors of the last Σ when it repeats bit for bit: 6.1 ms (5×; measured
# by `scripts/bench_kpixel.py`, bit-identical samples). A chunk of 32 digits of one k takes ≈ 3 minutes for the six
# samplers there (≈ 7 minutes on the AMD EPYC machines before the reuse), so the issue's ≥ 1,000 digits per k
# are hours of CPU, more than a session holds (minutes on a GPU): the joint pair's 1,024 digits per k took ≈ 7.0
# hours (128 chunks: 1.1 h on the AMD EPYC machines, 5.9 h on the Intel Xeon, over four sessions), and the offset
# pair's are being built the same way (3.4–4.7 min per chunk on the Xeon; the first table below says how many digits
# per k it holds now). The runs are therefore made in chunks by `energy_utils.kpixel`
# (`python -m energy_utils.kpixel run --digits 1024 --hours H --pair offset`)
# and appended to a committed store, `data/runs/10_kpixel.jsonl`; each chunk's noise depends on (seed, k, chunk)
# only, so the store does not depend on how many sessions built it (the last bits of the arithmetic, hence single
# samples, can differ between CPU types), and each chunk's header names the weights by checksum and the machine.
# The full profile reads that store (and extends it for `KPIXEL_EXTEND_HOURS` hours when that is set); the smoke
# profile computes a fresh store of `kp_digits` digits with a short schedule. The table below states how many digits the store holds per k.

# %%
from IPython.display import display

from energy_utils import denoisers, kpixel
from energy_utils.paths import runs_dir

kp_cfg = pick_profile({"smoke": dict(kp_digits=4, kp_levels=6, kp_chunk=4),
                       "full": dict(kp_digits=1024, kp_levels=100, kp_chunk=32)}, PROFILE)
report.value("kpixel_settings", kp_cfg)
kp_settings = kpixel.KPixelSettings(n_levels=kp_cfg["kp_levels"], chunk=kp_cfg["kp_chunk"], seed=SEED)
kp_store = runs_dir(PROFILE) / kpixel.STORE_NAME
if PROFILE != "full":
    kp_store.unlink(missing_ok=True)                   # smoke: always computed afresh
clf, _ = denoisers.load_denoiser(kpixel.CLASSIFIER, "full", device)
extend_s = (KPIXEL_EXTEND_HOURS * 3600 if PROFILE == "full" else None)
kp_rows = kpixel.run(kp_store, {arm: m[0] for arm, m in mn.items()}, kpixel.default_models(MN_PAIR),
                     kpixel.gaussian_control(fit.images), clf, test.images, test.labels, kp_cfg["kp_digits"],
                     kp_settings, max_time_s=extend_s)
report.record_data("k-pixel store", f"{'data/runs/' if PROFILE == 'full' else 'this run: '}{kp_store.name}, "
                   f"{len(kp_rows)} rows (digit × method × k), chunks of {kp_settings.chunk} MNIST test digits")
kp_table = kpixel.summarize(kp_rows)
kp_table["paper geometric %"] = kp_table.k.map(lambda k: kpixel.PAPER_ERROR_PERCENT[k][0])
kp_table["paper energy-guided %"] = kp_table.k.map(lambda k: kpixel.PAPER_ERROR_PERCENT[k][1])
with torch.no_grad():
    n_kp = int(kp_table["digits"].max())
    clean_err = 100 * (clf(test.images[:n_kp].float().to(device)).argmax(1).cpu() != test.labels[:n_kp]).double().mean().item()
report.value("classifier_clean_error_percent", clean_err)
report.table("kpixel", kp_table, show=False)
kp_match = kpixel.nfe_to_match(kp_table)
report.table("kpixel_nfe_to_equal_error", kp_match, show=False)
print(f"{kp_table.groupby('k')['digits'].min().to_dict()} digits per k; classifier error on the clean digits {clean_err:.1f} %")
display(kp_table.pivot_table(index="k", columns="method", values="error %").round(1))
display(kp_match.round(2))
KP_COLUMNS = ["digits", "error %", "error 95% low", "error 95% high", "− geometric PC (dual) (pp)", "diff 95% low",
              "diff 95% high", "psnr", "nfe", "wall s/digit"]
kp_table.set_index(["k", "method"])[KP_COLUMNS].round(2)

# %% [markdown]
# **Reading this table (the offset pair).** The store holds the first 192 test digits per k at k = 50 and 100 and
# 160 at k = 150 and 300 for this pair so far (22 of its 128 chunks; the rest is being built, see the README), so
# its intervals are 2.3–2.5 times as wide as the joint pair's below. In this pair the geometric sampler runs on the
# dual, whose y-score is the single's, and **the energy-guided schedules on the dual and on the single differ only
# by the Σ-only head c(Σ)**: they give the same error within 0.6 points at every k (dual minus single −0.5 [−3.6,
# +2.6], −0.5 [−1.6, +0.5], −0.6 [−2.8, +1.5] and exactly 0 at k = 300, where the two schedules are right and wrong
# on the same digits). So the normalization does not change what the schedule achieves here; the single's schedule,
# steered by a covariance score that is off by the drift of its offset, is as good. The schedule itself: the
# energy-guided error is 41.7 / 17.2 / 13.8 / 5.0 % at k = 50 / 100 / 150 / 300 against geometric PC's 45.8 / 22.9 /
# 15.6 / 3.8 % at the same NFE (differences −4.2 [−10.5, +2.2], −5.7 [−11.0, −0.4], −1.9 [−7.0, +3.2], +1.2 [−0.5,
# +3.0] points): ahead with an interval that excludes 0 only at k = 100, and there barely. Three and ten times the
# geometric NFE give 37.0 / 17.2 / 13.1 / 3.8 % and 34.4 / 16.1 / 15.0 / 7.5 %, so "the NFE geometric PC needs to
# reach the energy-guided error" (1.7×, 3.0×, 2.3×, 1×) rests on differences inside the intervals; the ×10 run's 7.5
# % at k = 300, worse than ×1 (+3.8 [+0.3, +7.2]), shows how noisy 160 digits are at errors of a few percent. The
# energy samplers beat the Gaussian control (56.8 / 30.7 / 18.8 / 6.9 %) at k = 50 and 100 (energy-guided dual 15.1
# [7.0, 23.3] and 13.5 [6.7, 20.4] points below it) and tie with it at k = 150 and 300. As a check of the store: the
# methods both pairs share (the same single and the same Gaussian control, same noise) agree digit for digit on the
# chunks that both pairs built on the Intel Xeon, and on the joint pair's first chunks, built on AMD EPYC machines,
# the Gaussian control's ill-conditioned posterior draw (revealed pixels at variance 10⁻⁷) differs in the last bits
# and flips 0–16 % of its classifications per chunk (the energy-guided single's do not move):
# `kpixel_pairs_same_prediction_shared_methods`.

# %% [markdown]
# **The joint pair's complete store.** The store also holds all 1,024 digits per k for the previous pair (the
# joint dual, `08_mnist_energy_gres512btft_dual`, and the same single), read here without re-running (each chunk
# is read only with the weights named in its header). Its energy-guided (single) and Gaussian-control rows are the
# same computation as the offset pair's (same weights, same noise), so on the digits both pairs hold their
# predictions should agree, up to the last bits of CPU arithmetic (some joint chunks ran on AMD EPYC machines).

# %%
joint_rows = kpixel.read_store(kp_store, kp_settings, kpixel.default_models("joint"), kp_cfg["kp_digits"])
if joint_rows.empty:
    print("the store holds no chunk of the joint pair for these settings (the smoke profile computes its own store "
          "for the current pair only)")
else:
    joint_table = kpixel.summarize(joint_rows)
    report.table("kpixel_joint_pair", joint_table, show=False)
    report.table("kpixel_joint_pair_nfe_to_equal_error", kpixel.nfe_to_match(joint_table), show=False)
    shared = ["k", "digit", "method"]
    both = kp_rows.merge(joint_rows, on=shared, suffixes=("", " joint"))
    both = both[both.method.isin(["energy-guided (single)", "Gaussian control"])]
    same_pred = both.groupby("method").apply(lambda b: float((b.pred == b["pred joint"]).mean()), include_groups=False)
    report.value("kpixel_pairs_same_prediction_shared_methods", {**same_pred.to_dict(), "rows": len(both)})
    print(f"{joint_table.groupby('k')['digits'].min().to_dict()} digits per k; methods both pairs share, fraction of "
          f"identical predictions on {len(both)} digit × k rows: {same_pred.round(3).to_dict()}")
    display(joint_table.pivot_table(index="k", columns="method", values="error %").round(1))
    display(joint_table.set_index(["k", "method"])[KP_COLUMNS].round(2))

# %% [markdown]
# **Reading the joint pair's table** (the store's 1,024 test digits per k, 32 chunks of 32; one training seed per
# energy, the jointly fine-tuned energies of notebook 08; the classifier errs on 3.1 % of these clean digits). With
# paired 95 % intervals over the digits, **the energy-guided schedule is ahead of the geometric one at equal NFE (≈
# 200) only at k = 50, by 2.8 points, and only just**: 40.0 / 21.7 / 19.8 / 7.9 % against 42.9 / 22.4 / 19.9 / 7.6 %
# at k = 50 / 100 / 150 / 300 (differences −2.8 [−5.6, −0.04], −0.7 [−3.2, +1.9], −0.1 [−2.4, +2.2], +0.3 [−1.1,
# +1.7] points). The k = 50 interval excludes 0 by 0.04 points, and it is one of the twelve
# `kpixel_claims_joint_pair` below, so we read it as a small gain at the hardest k, not a firm one, and for this one
# trained energy; at k ≥ 100 no difference is measurable. The gain is the schedule's, not the normalization's: the
# same schedule on the single (A-DSM-only) energy is as far ahead at k = 50 (39.8 %, −3.0 [−5.9, −0.2] against
# geometric PC) and level with the dual at every k (20.3 / 18.8 / 7.0 % at k ≥ 100; dual minus single +0.2 / +1.4 /
# +1.0 / +0.9 points; only the k = 300 interval over digits, [+0.002, +1.76], excludes 0, barely and in the single's
# favour, which with one training seed per energy is no measurable difference between the energies). Three times the
# geometric NFE buys about as much (39.7 / 19.3 / 17.6 / 7.1 %: −3.1 [−6.4, +0.1], −3.0 [−5.7, −0.4], −2.3 [−4.7,
# +0.0], −0.5 [−1.9, +0.9] points against 1×), ten times a little more at k = 50 (37.6 / 20.6 / 17.6 / 7.0 %: −5.3
# [−8.4, −2.2] at k = 50, intervals containing 0 at the other k). The "NFE the geometric schedule needs to reach the
# energy-guided error" (`kpixel_joint_pair_nfe_to_equal_error` in the results: 2.7×, 1.3×, 1.0×, 1×) interpolates between runs whose errors differ by little
# more than their intervals; read it as "about 3× at k = 50, none at k ≥ 100". The energy samplers beat the Gaussian
# control (52.2 / 29.1 / 22.6 / 7.8 %) at k = 50, 100 and 150 (energy-guided dual 12.2 [8.4, 16.0], 7.4 [4.4, 10.4]
# and 2.7 [0.2, 5.3] points below it; geometric PC 9.4, 6.7 and 2.6), and tie with it at k = 300 (−0.1 [−1.5,
# +1.3]). PSNR (not the paper's measure) ranks ×10 geometric highest at every k (13.9 / 15.5 / 16.3 / 19.9 dB), the
# energy-guided samples next (single 13.7 / 15.4 / 16.3 / 19.6, dual 13.6 / 15.1 / 15.9 / 19.2 dB, with ×3 geometric
# among them), and geometric 1× and the Gaussian control last (13.1 / 14.7 / 15.5 / 18.4 and 12.8 / 14.2 / 15.3 /
# 18.9 dB). How the gap moved as the store grew: 48 and 64 digits per k had the energy-guided schedule ahead by
# 2.5–11 points, 320 (288 at k = 300) by −1.6 / −3.1 / −0.3 / +1.7, ≈ 700 by −3.3 / −0.9 / +0.9 / +0.6, the 1,024
# here by −2.8 / −0.7 / −0.1 / +0.3. The paper (2,816 digits, ≈ 3,000 NFE) reports 46.1 / 9.8 / 4.1 / 1.0 %
# geometric against 34.5 / 7.6 / 1.9 / 1.2 % energy-guided: its direction at k = 50 holds here, its size does not
# (11.6 points there, 2.8 [0.04, 5.6] here), its smaller gains at k = 100 and 150 (2.1, 2.2 points) are not
# measurable here, and our errors at k ≥ 100 are 2–11 times the paper's. Two departures from the paper put this run
# out of family, neither about the schedule: (1) the k-pixel masks are scattered single pixels with variance far
# below that of their neighbours, a pixel-diagonal Σ outside our training family (centred boxes and half masks,
# `recipes.MNIST_COV_FAMILY`); the paper's MNIST model for this experiment was trained on grids of up to 784 boxes
# with independent variances (reference §4, "autoregressive" models). (2) The revealed pixels sit at variance 10⁻⁷
# as in the paper, below our smallest training variance 10⁻⁴. An energy trained on the paper's grid family, which
# might close the gap in error at k ≥ 100, is still to come.

# %% [markdown]
# ## 4 · Likelihoods: do test digits score above corrupted and out-of-distribution inputs?
#
# Score = log p(y | Σ₀) at Σ₀ = 10⁻²·I evaluated at the inputs themselves (−U for the energies; the controls'
# exact log-density), for 500 test digits against: the same digits with Gaussian noise of std 0.3 added
# ("noisy"), inverted digits (1 − x), uniform noise images, 28×28 natural-image patches, and two near-OOD
# sets, digits shifted by 4 pixels and rotated by 90°. AUROC = P(score of a test digit > score of the other
# input). At one Σ₀ the constant does not matter (the single energy ranks like a normalized one would); this is
# a test of the model's *shape*, with the Gaussian controls as the bar.
#
# **Reading (full run, table `auroc` below the code).** Every model, learned or Gaussian, separates test digits
# from noisy, inverted and uniform-noise inputs perfectly (AUROC 1.00) and from natural patches nearly so
# (0.98–0.99). The near-OOD sets are the test: shifted digits 0.98–0.99 for all four, rotated digits 0.83–0.89, and
# the learned energies do not beat the full Gaussian control on either (0.983 / 0.877 against 0.989 / 0.891). Dual
# and single give the same AUROC on every set, as they must: at one Σ₀ the dual is the single plus the constant
# c(Σ₀) (checked below). The jointly fine-tuned dual had 0.984 / 0.870 in this notebook's previous run, earlier duals
# up to 0.924 on rotated digits: one seed per energy and 500 digits per set, so at this budget the learned
# log-density adds nothing measurable to the Gaussian's for out-of-distribution detection.

# %%
nl = cfg["n_lik"]
g4 = torch.Generator().manual_seed(SEED + 6)
x_in = test.images[:nl].double()
natural = load_image_set("Set68", gray=True, limit=20)
report.record_data("natural patches", natural.source)
patches = extract_patches(natural.images, 28, 28, max_patches=nl, generator=g4).double()
OOD = {"noisy (std 0.3)": x_in + 0.3 * torch.randn(x_in.shape, generator=g4, dtype=torch.float64),
       "inverted": 1 - x_in,
       "uniform noise": torch.rand(x_in.shape, generator=g4, dtype=torch.float64),
       "natural patches": patches,
       "shifted 4 px": torch.roll(x_in, shifts=(4, 4), dims=(-2, -1)),
       "rotated 90°": torch.rot90(x_in, 1, dims=(-2, -1))}
cov0 = iso_cov(1e-2)
scores = {name: {"test": -energy(x_in.float().to(device), cov0.expand_batch(nl)).double().cpu()}
          for name, energy in ENERGIES.items()}
for name, energy in ENERGIES.items():
    for o, xo in OOD.items():
        scores[name][o] = -energy(xo.float().to(device), cov0.expand_batch(xo.shape[0])).double().cpu()
auroc_rows = [{"energy": name, **{o: metrics.auroc(s["test"], s[o]) for o in OOD}} for name, s in scores.items()]
auroc_table = report.table("auroc", auroc_rows)

# %%
fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.6))
for ax, name in zip(axes, ("dual", "Gaussian")):
    allv = torch.cat(list(scores[name].values()))
    lo, hi = allv.quantile(0.01).item(), allv.quantile(0.99).item()
    bins = np.linspace(lo, hi, 40)
    for k, v in scores[name].items():
        ax.hist(v.clamp(lo, hi).numpy() / 784, bins=bins / 784, histtype="step", label=k, density=True)
    ax.set_title(f"{name}: log p(y | 10⁻² I) per pixel", fontsize=8)
    ax.set_xlabel("nats / pixel")
axes[0].legend(fontsize=6)
fig.tight_layout()
report.save_figure(fig, "10_likelihood_histograms", "Log-density per pixel at Σ0 = 0.01·I of test digits and of "
                   "corrupted / out-of-distribution inputs, under the dual MNIST energy and the Gaussian control")

# %% [markdown]
# ## Checks (written before the full run)
#
# * MALA's Metropolis ratio is exact: started at exact posterior draws, MALA on the exact score stays within
#   1.5× the Monte Carlo floor at **every** step size; ULA at the largest step is biased (SW₂ ratio > 2); MALA's
#   acceptance falls with the step.
# * At a fixed Σ the chain with U + c(Σ) is identical (above).
# * The exact energy recovers the noise level (median σ̂²/σ² within a factor 2) — a check of the scan itself
#   (at σ² ≥ 0.1 since the first full run; see the note at the check).
# * The per-pixel Gaussian control finds the box side in ≥ 90 % of digits when the inside and outside variances
#   differ by 10⁴ (v = 1; the issue measured 98 %): the easy settings are easy, so the hard ones are the test.
# * Every control AUROC against uniform noise is above 0.9 (a sanity check of the likelihood pipeline).
# * At Σ₀ the offset dual, the single plus a Σ-only c(Σ), gives the single's AUROC on every set (within 10⁻³).
#
# * The energy-guided schedule on the dual energy reaches s_end within its NFE budget at every k.
#
# Recorded with paired 95 % intervals over the digits (`kpixel_claims` for the current pair on the digits its store
# holds so far, `kpixel_claims_joint_pair` for the joint pair's 1,024), not asserted: at each k, the
# energy-guided schedule on the dual energy below geometric PC at equal NFE, below the same schedule on the single
# energy, and below the Gaussian control in classification error (the paper's claims; written before the first run
# on the chunked store).
#
# The comparisons of the learned energies (dual vs single vs controls, energy-guided vs geometric) are
# recorded, not asserted: both
# MNIST energies are one training seed each and have not converged (notebook 08), so any difference between
# them reads "no measurable difference at this budget" unless it is large and consistent across settings.

# %%
ex = mala_table[(mala_table.prior == "exact") & ~mala_table.diverged.astype(bool)]
h_max = max(cfg["steps"])
mala_tol = 1.5 if PROFILE == "full" else 3.0
report.check(f"MALA on the exact score within {mala_tol}× the MC floor at every step (max SW₂ ratio)",
             ex[ex.sampler == "MALA"].sw2_ratio.max(), mala_tol)
ula_big = mala_table[(mala_table.prior == "exact") & (mala_table.sampler == "ULA") & (mala_table.step == h_max)]
ula_diverged = bool(ula_big.diverged.any())
report.check("ULA on the exact score is biased at the largest step (SW₂ ratio > 2; a divergence counts as 10⁶)",
             1e6 if ula_diverged else ula_big.sw2_ratio.max(), 2.0, ">",
             note="ULA diverged at this step" if ula_diverged else "")
acc = ex[ex.sampler == "MALA"].set_index("step").acceptance
report.check("MALA acceptance falls with the step (largest-step minus smallest-step acceptance)",
             acc[h_max] - acc[min(cfg["steps"])], 0.0, "<")
nt = pd.DataFrame(noise_rows)
# Changed after the first full run: the check asked for every σ² ∈ {0.01, 0.1, 1}; at σ² = 0.01 the exact ML
# estimate itself has median σ̂²/σ² = 0.46 (d = 16, component variances ≥ 0.027 absorb part of so small a
# noise), a property of the estimator, not of the scan. Both values are kept in the results.
ratios = nt[nt.energy == "exact"].set_index("true σ²")["median σ̂² / σ²"]
report.value("noise_level_check_original", {"threshold": "worst over σ² ∈ {0.01, 0.1, 1} within a factor 2",
                                            "value": float(ratios.apply(lambda r: abs(math.log(r))).max())})
report.check("the exact energy recovers the noise level at σ² ≥ 0.1 (worst median σ̂²/σ² within a factor 2; "
             "was: every σ², see the note)", ratios[ratios.index >= 0.1].apply(lambda r: abs(math.log(r))).max(), math.log(2))
bt = blind_table
pp = bt[(bt.parameter == "box side") & (bt["inside var"] == 1.0) & (bt.energy == "per-pixel Gaussian")]["hit rate"].mean()
report.check("per-pixel Gaussian control finds the box side at v_in/v_out = 10⁴ (hit rate, mean over sides)",
             pp, 0.9 if PROFILE == "full" else 0.5, ">=")
eg = kp_rows[kp_rows.method == "energy-guided (dual)"]
report.check("the energy-guided schedule (dual) reaches s_end within its steps for every digit and k (fraction)",
             float(eg.converged.astype(bool).mean()) if len(eg) else 0.0, 1.0, ">=")
report.value("kpixel_error_percent", kp_table.pivot_table(index="k", columns="method", values="error %").to_dict())
# The paper's claims, with paired 95 % intervals over digits (one training seed per energy): recorded, not asserted.
# Written before the first run on the chunked store (2026-12-03). Changed after the 1,024-digit run (2026-12-05),
# whose digit-level interval for dual vs single at k = 300 excluded 0: that pair compares two trained models with one
# training seed each, so its verdict is "no measurable difference" whatever the digits say; the digit-level verdict
# is kept beside it (`digit_verdict`). The schedule and control pairs compare samplers on one energy: digits decide.
report.value("kpixel_claims", kpixel.paired_claims(kp_rows))    # the current pair, on the digits stored so far
if not joint_rows.empty:
    report.value("kpixel_claims_joint_pair", kpixel.paired_claims(joint_rows))
at = pd.DataFrame(auroc_rows).set_index("energy")
report.check("Gaussian controls: AUROC against uniform noise > 0.9 (min of the two)",
             at.loc[["per-pixel Gaussian", "Gaussian"], "uniform noise"].min(), 0.9, ">")
if MN_PAIR == "offset":        # the dual is the single plus c(Σ): at one Σ₀ it must rank every input the same way
    report.check("at a fixed Σ₀ the offset dual ranks inputs as its single does (max |AUROC dual − single| over the "
                 "sets)", float((at.loc["dual"] - at.loc["single"]).abs().max()), 1e-3, "<=",
                 note="by construction up to float32 rounding of near-ties: a check of the y-independence of c(Σ)")
report.value("learned_vs_controls", {
    "blind_hit_rate_mean": bt.groupby("energy")["hit rate"].mean().to_dict(),
    "noise_posterior_tv_mean": nt.groupby("energy")["TV to the exact p(σ²|y)"].mean().to_dict(),
    "auroc_mean": at.mean(axis=1).to_dict()})

# %%
report.finish()
