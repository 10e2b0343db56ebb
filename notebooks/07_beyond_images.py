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
# # 07 · Beyond images: time series, trajectories and PDE fields
#
# **The claim** (unified-framework seed, §8): the machinery of notebooks 02–06 — a blind denoiser's implicit
# prior, sampled with the coarse-to-fine iteration of KS2021 and constrained by linear measurements, plus task
# energies added through the (sign-corrected) hybrid update of notebook 06 — carries over to sequential data
# (§8.1), robotics and control (§8.3) and scientific computing (§8.4). The seed gives no experiment and no
# number; this notebook runs one per domain, each on real or physically generated data, with the strongest
# simple baselines of that domain beside the denoiser prior.
#
# | domain | data | tasks | baselines and controls | metrics |
# |---|---|---|---|---|
# | 1 · time series | four real series bundled with statsmodels (sunspots, Mauna Loa CO₂, El Niño SST, Nile), split in time | imputation of a missing stretch, forecasting, anomaly detection | linear / cubic interpolation, seasonal naive, SARIMAX, Kalman smoother, the Gaussian (linear-MMSE) prior of the training windows, simple anomaly scores | MAE, RMSE, CRPS, 90 % interval coverage, AUROC |
# | 2 · trajectories | planner demonstrations (grid Dijkstra + smoothing) of a 2-D point robot among circular obstacles | goal-conditioned completion (start and goal as a linear measurement), obstacle avoidance (a task energy through the hybrid) | straight line, trajectory optimisation without a prior (smoothness + obstacle energy), the Gaussian prior | success, collision rate, path length and smoothness vs the planner |
# | 3 · PDE fields | space–time solutions of 1-D viscous Burgers from our pseudo-spectral solver (tested against the exact Cole–Hopf solution) | reconstruction from sparse sensors, super-resolution from coarse averages, each with the conservation law ∫u dx = const as extra linear measurements | cubic interpolation, Gaussian-process regression, the Gaussian prior of the training fields | relative L2 error, PDE residual |
#
# The fourth domain of the seed, **molecular design (§8.2)**, is left out: it needs molecular descriptors of
# real compounds, and no dependency of this project ships any (scikit-learn's and statsmodels' bundled datasets
# hold none; QM9, ZINC and their kin are downloads, which the project does not do).
#
# **Common pieces.** Every domain uses the same code: a bias-free network from `energy_utils.networks` (the 1-D
# UNet, `signal_dim=1`, holds a signal as a (C, 1, L) image so that every operator of `energy_utils.operators`
# applies unchanged; the 2-D UNet for fields), blind training over a noise range
# (`denoisers.train_blind_denoiser`, validation curve watched, learning rate halved on plateaus, each example's
# squared error weighted by 1/σ²: in our first training, with plain MSE, the large noise levels dominated the
# loss and every denoiser ended *worse than the identity* at σ = 0.05 — e.g. the 1-D UNet's validation MSE was
# 0.010 there against the identity's 0.0025 and the Gaussian denoiser's 0.0023), the projected
# sampler `samplers.ks_sample`, and for obstacles its `task_energy` argument, which adds the hybrid direction
# d = f(y) − σ̂²α∇E_task of notebook 06 before the measurement constraint. Physical constraints become
# measurements through `operators.LinearConstraints` (any constraint vectors, orthonormalised). Each trained
# model is trained with **3 seeds**; tables give the seed mean with a 95 % t-interval over seeds.
#
# **Reading the verdicts.** The seed's claim is stated per domain as *holds* (the denoiser prior beats the
# best baseline with a seed interval that excludes a tie), *does not hold* (a baseline wins the same way), or
# *no measurable difference at this budget*.

# %% tags=["parameters"]
import os

PROFILE = os.environ.get("PROFILE", "smoke")
SEED = 0
DEVICE = "cpu"     # small networks: the CPU is the target; "auto" picks CUDA when present
RETRAIN = False    # full profile: True trains every model (3 seeds each) and writes the committed weights;
                   # a list of recipe names (e.g. ["ts_unet"]) retrains only those

# %%
import hashlib
import json
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from energy_utils import controls, denoisers, networks, operators, samplers
from energy_utils import timeseries as ts
from energy_utils.metrics import auroc
from energy_utils.paths import scratch_dir
from energy_utils.reporting import Report
from energy_utils.runtime import configure_threads, pick_device, pick_profile, seed_everything
from energy_utils.stats import NO_DIFFERENCE, compare_arms, compare_to_reference, seed_interval

configure_threads()
seed_everything(SEED)
device = pick_device(DEVICE)
cfg = pick_profile({
    "smoke": dict(seeds=[0], ts_stride=8, ts_samples=4, n_demos=1000, n_traj=24, traj_samples=2, n_pde_train=300,
                  n_pde=6, pde_samples=2, pde_select=4, tiny_steps=8),
    "full": dict(seeds=[0, 1, 2], ts_stride=2, ts_samples=12, n_demos=4000, n_traj=200, traj_samples=4, n_pde_train=3000,
                 n_pde=40, pde_samples=2, pde_select=20, tiny_steps=0),
}, PROFILE)
# the training recipes of the committed weights (RETRAIN=True in the full profile reproduces them)
TRAIN = {
    "ts_unet": dict(spec={"kind": "unet", "channels": 1, "widths": [32, 64, 128], "blocks": 2, "bias_free": True,
                          "signal_dim": 1}, sigma_range=(0.01, 1.0), steps=4000, batch=64, lr=1e-3, minutes=4),
    "ts_gru": dict(spec={"kind": "gru", "channels": 1, "hidden": 48, "layers": 2}, sigma_range=(0.01, 1.0),
                   steps=20000, batch=64, lr=1e-3, minutes=10),
    "traj_unet": dict(spec={"kind": "unet", "channels": 2, "widths": [32, 64, 128], "blocks": 2, "bias_free": True,
                            "signal_dim": 1}, sigma_range=(0.005, 0.5), steps=20000, batch=64, lr=1e-3, minutes=10),
    "pde_unet": dict(spec={"kind": "unet", "channels": 1, "widths": [16, 32, 64], "blocks": 2, "bias_free": True},
                     sigma_range=(0.01, 1.0), steps=20000, batch=16, lr=1e-3, minutes=12),
}
PLATEAU = dict(patience=4, factor=0.5, max_reductions=3, rel_tol=0.005, warmup=100)
SAMPLER = dict(sigma0=1.0, sigma_L=0.01, h0=0.05, beta=0.1)   # β raised from KS2021's 0.01 (idealised law at h₀ = 0.05: ≈ 520 → 75 iterations)
report = Report("07_beyond_images", PROFILE, SEED, device,
                parameters={"cfg": cfg, "train": TRAIN, "plateau": PLATEAU, "sampler": SAMPLER, "RETRAIN": RETRAIN})
if isinstance(RETRAIN, (list, tuple)) and not set(RETRAIN) <= set(TRAIN):
    raise ValueError(f"RETRAIN lists unknown recipes {sorted(set(RETRAIN) - set(TRAIN))}; known: {sorted(TRAIN)}")
if RETRAIN and PROFILE != "full":
    raise ValueError("RETRAIN writes the committed weights: use it with PROFILE='full' (smoke trains tiny models itself)")
SEEDS = cfg["seeds"]
print(device, "| seeds:", SEEDS)


def trained_denoiser(name, recipe, train_x, val_x, seed):
    """The network of ``recipe`` trained on ``train_x`` (blind, σ uniform in the recipe's range, each example's
    squared error weighted by 1/σ² so that every noise level counts alike) with training seed ``seed`` — trained now (RETRAIN, full profile) or loaded from the committed weights. Its training record
    (steps, wall time, final validation loss, whether the curve flattened) comes back in the metadata."""
    full_name = f"07_{name}_s{seed}"
    # the resumable scratch state is tied to this exact recipe: a changed recipe never resumes a stale run
    tag = hashlib.sha1(json.dumps({**recipe, "plateau": PLATEAU}, sort_keys=True).encode()).hexdigest()[:8]
    if RETRAIN is True or isinstance(RETRAIN, (list, tuple)) and name in RETRAIN:
        torch.manual_seed(seed)
        model = networks.build(recipe["spec"]).to(device)
        h = denoisers.train_blind_denoiser(
            model, train_x.to(device), recipe["sigma_range"], recipe["steps"], recipe["batch"], recipe["lr"],
            seed=seed, augment=False, inverse_variance_weighting=True, scratch=scratch_dir(PROFILE, f"{full_name}_{tag}"),
            val_data=val_x, validate_every=100, plateau=PLATEAU, max_time_s=60 * recipe["minutes"], desc=full_name)
        steps = h.get("stopped_at", h["step"][-1] + 1)
        denoisers.save_denoiser(full_name, model, {
            "sigma_range": recipe["sigma_range"], "steps": int(steps), "wall_time_s": h["wall_time_s"],
            "converged": "converged_at" in h, "final_val_loss": h["val"][-1]["val_loss"] if h["val"] else None,
            "recipe_tag": tag, "objective": "mean ((D(x + σz) − x)/σ)²",
            "val_curve": [(v["step"], v["val_loss"]) for v in h["val"]], "seed": seed}, PROFILE)
    model, meta = denoisers.load_denoiser(full_name, "full", device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, meta


def tiny_training_run(recipe, train_x, val_x):
    """Smoke profile: a few steps of the same recipe on a fresh network, to exercise the training code; the
    loss must be finite and the validation loss recorded."""
    torch.manual_seed(SEED)
    model = networks.build(recipe["spec"]).to(device)
    h = denoisers.train_blind_denoiser(model, train_x.to(device), recipe["sigma_range"], cfg["tiny_steps"], 8,
                                       recipe["lr"], seed=SEED, augment=False, inverse_variance_weighting=True,
                                       val_data=val_x[:16],
                                       validate_every=cfg["tiny_steps"], desc="tiny", checkpoint_every=10**9)
    return h


@torch.no_grad()
def denoising_mse(den, x, sigma, seed=0):
    """MSE of den(x + σz) against x, one fixed noise draw (seed)."""
    g = torch.Generator().manual_seed(seed)
    y = x + sigma * torch.randn(x.shape, generator=g)
    return (den(y.to(device)).cpu() - x).pow(2).mean().item()


LABELS = {"ts_unet": "bias-free 1-D UNet", "ts_gru": "GRU", "traj_unet": "bias-free 1-D UNet",
          "pde_unet": "bias-free UNet"}


def domain_denoisers(domain, recipes, train_x, val_x, sigmas):
    """The Gaussian (linear-MMSE) control fitted to ``train_x``, the trained models of each recipe (one per seed;
    in the smoke profile also a few training steps of a fresh one) and their denoising MSE on the held-out
    ``val_x`` at each σ beside the identity's and the Gaussian's, recorded as ``<domain>_denoising_val_mse``."""
    gauss = controls.GaussianPrior.fit(train_x)
    models = {r: [trained_denoiser(r, TRAIN[r], train_x, val_x, s) for s in SEEDS] for r in recipes}
    for r in recipes if cfg["tiny_steps"] else []:
        h = tiny_training_run(TRAIN[r], train_x, val_x)
        report.check(f"smoke: a few training steps of {r} run with a finite loss", float(np.isfinite(h["loss"]).all()),
                     1, ">=")
    rows = []
    for s in sigmas:
        row = {"σ": s, "identity (σ²)": s * s,
               "Gaussian (linear MMSE)": denoising_mse(lambda y: gauss.denoise(y.cpu(), s * s).to(y), val_x, s)}
        for r in recipes:
            row[LABELS[r]] = seed_cell([denoising_mse(m, val_x, s) for m, _ in models[r]], 5)
        rows.append(row)
    return gauss, models, report.table(f"{domain}_denoising_val_mse", pd.DataFrame(rows))


def seed_cell(values, digits=3):
    """'mean [low, high]' over training seeds (the mean alone for one seed; '—' for a value that does not apply)."""
    if not np.isfinite(values).all():
        return "—"
    iv = seed_interval(values)
    if iv.n < 2:
        return f"{iv.mean:.{digits}f}"
    return f"{iv.mean:.{digits}f} [{iv.low:.{digits}f}, {iv.high:.{digits}f}]"


def verdict_against(prior_values, baseline_value, lower_is_better=True):
    """The seed's claim for the prior against a deterministic baseline (`stats.compare_to_reference`): 'holds'
    when the prior's seed interval lies wholly on the better side, 'does not hold' when wholly on the worse side."""
    v = compare_to_reference(prior_values, baseline_value, lower_is_better)
    return {"better": "holds", "worse": "does not hold"}.get(v, v)

# %% [markdown]
# ## 1 · Time series
#
# **Data.** Four series bundled with statsmodels (`energy_utils.timeseries`): yearly sunspot numbers (309
# values, cycle ≈ 11 years), Mauna Loa CO₂ (weekly, gaps filled linearly, averaged into 526 monthly values),
# El Niño sea-surface temperatures (732 monthly values) and the Nile's yearly flow (100 values). Each is split
# in time — the first 70 % for training, the next 10 % for validation, the last 20 % for testing — and
# normalised with its training mean and standard deviation only. Windows of L = 32 steps (at L = 64 the short
# series have no test window at all): every window of the training and validation parts (stride 1), every
# second window of the test parts (stride 2 in the full profile, to fit the sampling budget). A window's level carries little information and CO₂'s trend
# puts its test part ≈ 3 training standard deviations above anything seen in training, so every window is
# **centred** — on its own mean for training, on the mean of its observed values at test time — for every
# method (the classical baselines are shift-equivariant, so this changes nothing for them).
#
# **Denoisers.** The seed suggests recurrent networks for sequences. We train both a bidirectional GRU
# (`DenoiserGRU`, 2 layers × 48 units per direction; not bias-free: its gates are not homogeneous) and the
# bias-free 1-D UNet, 3 seeds each, on the same windows and noise range σ ∈ [0.01, 1], and keep the one with the
# lower validation loss; both sit beside the Gaussian (linear-MMSE) denoiser of the training windows.

# %%
TS_L = 32
TS_NAMES = ["sunspots", "co2", "elnino", "nile"]
TS_TEST = ["sunspots", "co2", "elnino"]                 # nile's test part (20 years) is shorter than a window


def centre(w, mask=None):
    """Subtract each window's mean (over the observed steps when a mask is given); returns (centred, offset)."""
    if mask is None:
        off = w.mean(-1, keepdim=True)
    else:
        m = mask.expand_as(w).float()
        off = (w * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True)
    return w - off, off


ts_windows = {n: ts.split_windows(n, TS_L) for n in TS_NAMES}
ts_train = centre(torch.cat([ts_windows[n].train for n in TS_NAMES]))[0]
ts_val = centre(torch.cat([ts_windows[n].val for n in TS_NAMES]))[0]
ts_test = {n: ts_windows[n].test[::cfg["ts_stride"]] for n in TS_TEST}
ts_periods = {n: ts_windows[n].period for n in TS_NAMES}
for n in TS_NAMES:
    report.record_data(f"time series: {n}", ts.load_series(n).source)
ts_counts = pd.DataFrame([{"series": n, "period": ts_periods[n], "train windows": len(ts_windows[n].train),
                           "val windows": len(ts_windows[n].val), "test windows": len(ts_test.get(n, []))}
                          for n in TS_NAMES])
report.table("ts_windows", ts_counts)

TS_SIGMAS = [0.05, 0.1, 0.3, 0.6, 1.0]
gauss_ts, ts_models, ts_denoise = domain_denoisers("ts", ["ts_unet", "ts_gru"], ts_train, ts_val, TS_SIGMAS)
val_loss = {arch: [meta["final_val_loss"] for _, meta in ts_models[arch]] for arch in ts_models}
ts_arch_cmp = compare_arms(val_loss["ts_unet"], val_loss["ts_gru"], "1-D UNet", "GRU")
TS_ARCH = "ts_unet" if np.mean(val_loss["ts_unet"]) <= np.mean(val_loss["ts_gru"]) else "ts_gru"
report.value("ts_architecture", {"kept": TS_ARCH, "comparison": ts_arch_cmp.as_dict(),
                                 "training": {a: [{k: m[k] for k in ("steps", "wall_time_s", "converged")}
                                                  for _, m in ts_models[a]] for a in ts_models}})
print(f"validation loss (mean MSE/σ² over 8 noise levels): UNet {np.mean(val_loss['ts_unet']):.4f}, "
      f"GRU {np.mean(val_loss['ts_gru']):.4f} → keep {TS_ARCH}; {ts_arch_cmp.verdict}")

# %%
fig, ax = plt.subplots(1, 2, figsize=(11, 3.4))
for arch, label in (("ts_unet", "bias-free 1-D UNet"), ("ts_gru", "GRU")):
    for i, (_, meta) in enumerate(ts_models[arch]):
        st, vl = zip(*meta["val_curve"]) if meta.get("val_curve") else ([], [])
        ax[0].plot(st, vl, color="C0" if arch == "ts_unet" else "C1", alpha=0.8, label=label if i == 0 else None)
ax[0].set(xlabel="training step", ylabel="validation loss (mean MSE/σ²)", yscale="log",
          title="training curves (3 seeds each)")
ax[0].legend()
d = ts_denoise.copy()
for col, c in (("identity (σ²)", "0.6"), ("Gaussian (linear MMSE)", "C2")):
    ax[1].plot(d["σ"], d[col], "o-", color=c, label=col)
for arch, label, c in (("ts_gru", "GRU", "C1"), ("ts_unet", "bias-free 1-D UNet", "C0")):
    ax[1].plot(TS_SIGMAS, [np.mean([denoising_mse(m, ts_val, s) for m, _ in ts_models[arch]]) for s in TS_SIGMAS],
               "o-", color=c, label=label)
ax[1].set(xscale="log", yscale="log", xlabel="noise σ", ylabel="validation MSE", title="denoising held-out windows")
ax[1].legend(fontsize=8)
fig.tight_layout()
report.save_figure(fig, "07_ts_denoisers", "Time-series denoisers: validation curves of the bias-free 1-D UNet and "
                   "the GRU (3 seeds each) and denoising error on held-out windows against the identity and the "
                   "Gaussian (linear-MMSE) denoiser of the training windows.")

# %% [markdown]
# **Tasks** on every test window (pooled over the three series with test windows; the per-series numbers are in
# the results file):
#
# - *imputation*: one missing stretch of 8 steps at a random position (never at an end);
# - *forecasting*: the last 8 steps missing (8 years of sunspots, 8 months of CO₂ and SST);
# - *anomaly detection*: half the windows get a spike (±4 training sd at one step) or a level shift (±2 over 8
#   steps); the score must rank corrupted windows above clean ones (AUROC).
#
# The prior's answers are posterior samples of the projected sampler (12 chains per window, σ₀ = 1, σ_L = 0.01,
# h₀ = 0.05, β = 0.1), each made consistent with the observations (the observed steps are the observations);
# the point estimate is their mean, the 90 % interval their 5–95 % quantiles, the CRPS the fair ensemble CRPS.
# The Gaussian control conditions the Gaussian of the training windows on the observed steps (exact mean and
# standard deviation); SARIMAX and the Kalman smoother give a mean and a predictive standard deviation; the
# interpolations and seasonal naive are point forecasts (their CRPS is their MAE).

# %%
TS_GAP, TS_HORIZON = 8, 8


def group_by_mask(masks):
    """[(mask (1, 1, L), indices)] for each distinct observation mask in a batch of masks (B, 1, 1, L)."""
    groups = {}
    for i, m in enumerate(masks):
        groups.setdefault(m.flatten().numpy().tobytes(), []).append(i)
    return [(masks[idx[0]], torch.tensor(idx)) for idx in groups.values()]


def prior_posterior_samples(den, x, masks, n_samples, seed, sampler=SAMPLER, nfe=None):
    """n_samples posterior samples (S, B, 1, 1, L) of the projected sampler for windows x with observation masks
    (B, 1, 1, L), in the windows' units: centred on the observed mean, sampled, made consistent with the
    observations, shifted back. ``nfe``: a list that receives each chain's denoiser evaluations."""
    xcen, off = centre(x, masks)
    out = torch.empty(n_samples, *x.shape)
    for k, (m, idx) in enumerate(group_by_mask(masks)):
        op = operators.PixelMask(m)
        xc = op.M_T(xcen[idx]).repeat_interleave(n_samples, 0).to(device)
        r = samplers.ks_sample(den, operator=op, measurement=xc, seed=seed * 10_000 + k, disable=True, **sampler)
        est = op.make_consistent(r.x, xc).cpu()
        out[:, idx] = est.view(len(idx), n_samples, *x.shape[1:]).transpose(0, 1)
        if nfe is not None:
            nfe.extend(r.nfe.tolist())
    return out + off


def gaussian_posterior(x, masks):
    """Exact mean and sd of the Gaussian control conditioned on the observed steps, per window."""
    xcen, off = centre(x, masks)
    mean, sd = torch.empty_like(x), torch.empty_like(x)
    for m, idx in group_by_mask(masks):
        op = operators.PixelMask(m)
        mean[idx] = gauss_ts.posterior_mean(op, op.M_T(xcen[idx])).float()
        sd[idx] = gauss_ts.posterior_cov(op).diagonal().clamp_min(0).sqrt().float().view(1, *x.shape[1:])
    return mean + off, sd


def score_rows(task, series, method, x, truth, masks, mean=None, sd=None, samples=None):
    """MAE, RMSE, CRPS and 90 % interval coverage over the missing steps (masks: True = observed), averaged
    over windows."""
    miss = ~masks.expand_as(truth)
    row = {"task": task, "series": series, "method": method,
           "MAE": ts.mae(x, truth, masks).mean().item(), "RMSE": ts.rmse(x, truth, masks).mean().item()}
    if samples is not None:
        crps = ts.crps_ensemble(samples, truth, fair=True)
        lo, hi = samples.quantile(0.05, dim=0), samples.quantile(0.95, dim=0)
    elif sd is not None:
        crps = ts.crps_gaussian(mean, sd, truth)
        lo, hi = ts.gaussian_interval(mean, sd, 0.9)
    else:
        crps, lo, hi = (x - truth).abs(), None, None
    row["CRPS"] = crps[miss].mean().item()
    row["cover90"] = ts.interval_coverage(lo, hi, truth, masks).mean().item() if lo is not None else float("nan")
    return row


g_ts = torch.Generator().manual_seed(SEED)
ts_rows, ts_prior_examples = [], {}
t0 = time.perf_counter()
for name, w in ts_test.items():
    B, period = len(w), ts_periods[name]
    tasks = {"imputation": ts.missing_stretch_mask(B, TS_L, TS_GAP, g_ts),
             "forecast": ts.forecast_mask(TS_L, TS_HORIZON).expand(B, 1, 1, TS_L).clone()}
    for task, masks in tasks.items():
        if task == "imputation":
            for kind in ("linear", "cubic"):
                ts_rows.append(score_rows(task, name, f"{kind} interpolation", ts.interpolate_missing(w, masks, kind), w, masks))
            kal = ts.kalman_impute(w, masks, period)
            ts_rows.append(score_rows(task, name, "Kalman smoother", kal.mean, w, masks, kal.mean, kal.sd))
        else:
            ts_rows.append(score_rows(task, name, "seasonal naive", ts.seasonal_naive(w, masks, period), w, masks))
            sar = ts.sarimax_forecast(w, masks, period)
            ts_rows.append(score_rows(task, name, "SARIMAX", sar.mean, w, masks, sar.mean, sar.sd))
        gm, gsd = gaussian_posterior(w, masks)
        ts_rows.append(score_rows(task, name, "Gaussian prior (control)", gm, w, masks, gm, gsd))
        for s, (den, _) in zip(SEEDS, ts_models[TS_ARCH]):
            nfe = []
            smp = prior_posterior_samples(den, w, masks, cfg["ts_samples"], seed=s, nfe=nfe)
            row = score_rows(task, name, "denoiser prior", smp.mean(0), w, masks, samples=smp)
            ts_rows.append({**row, "seed": s, "NFE": float(np.mean(nfe)),
                            "sample sd": smp.std(0)[~masks.expand_as(w)].mean().item()})
            if s == SEEDS[0]:
                ts_prior_examples[(name, task)] = (w, masks, smp)
ts_long = pd.DataFrame(ts_rows)
report.table("ts_tasks_per_series", ts_long, show=False)
print(f"time-series tasks: {time.perf_counter() - t0:.0f} s")

# %%
# NBVAL_CHECK_OUTPUT
def pooled(df, task, method, metric):
    """Window-weighted mean over series of one method's metric (one value per seed for the prior)."""
    d = df[(df.task == task) & (df.method == method)].copy()
    d["n"] = d.series.map({n: len(w) for n, w in ts_test.items()})
    if "seed" in d and d.seed.notna().any():
        return [np.average(g[metric], weights=g.n) for _, g in d.groupby("seed")]
    return [np.average(d[metric], weights=d.n)]


ts_table, ts_verdicts = [], {}
for task in ("imputation", "forecast"):
    methods = list(dict.fromkeys(ts_long[ts_long.task == task].method))
    for method in methods:
        ts_table.append({"task": task, "method": method,
                         **{m: seed_cell(pooled(ts_long, task, method, m), 3) for m in ("MAE", "RMSE", "CRPS", "cover90")}})
    base = [m for m in methods if m != "denoiser prior"]
    for metric in ("MAE", "CRPS"):
        best = min(base, key=lambda m: pooled(ts_long, task, m, metric)[0])
        ts_verdicts[f"{task}: prior vs best baseline ({best}) by {metric}"] = verdict_against(
            pooled(ts_long, task, "denoiser prior", metric), pooled(ts_long, task, best, metric)[0])
ts_table = report.table("ts_tasks", pd.DataFrame(ts_table))
# %% [markdown]
# **Anomaly detection.** The denoiser's residual f(y) = D(y) − y is, by Miyasawa, σ²∇log p(y): large where
# the window is improbable. Scores per window: the largest |f(y)_t| of the clean-trained prior, and the
# denoiser's global noise estimate σ̂ = ‖f(y)‖/√L (the seed's suggestion); against the same residual of the
# Gaussian denoiser (σ = 0.1), the largest deviation from a 5-step moving median, and the largest first difference.

# %%
# NBVAL_CHECK_OUTPUT
g_an = torch.Generator().manual_seed(SEED + 1)
clean = centre(torch.cat(list(ts_test.values())))[0]
corrupted, labels = ts.inject_anomalies(clean, g_an, fraction=0.5)
corrupted = centre(corrupted)[0]


def moving_median_score(w, k=5):
    pad = torch.nn.functional.pad(w[:, 0, 0], (k // 2, k // 2), mode="replicate")
    med = pad.unfold(-1, k, 1).median(-1).values
    return (w[:, 0, 0] - med).abs().amax(-1)


with torch.no_grad():
    an_scores = {"max |first difference|": (corrupted[..., 1:] - corrupted[..., :-1]).abs().flatten(1).amax(1),
                 "max |y − moving median(5)|": moving_median_score(corrupted),
                 "Gaussian denoiser max |f(y)|": (gauss_ts.denoise(corrupted, 0.01).float() - corrupted).abs().flatten(1).amax(1)}
    prior_scores = {"denoiser prior max |f(y)|": [], "denoiser prior σ̂": []}
    for den, _ in ts_models[TS_ARCH]:
        f = den(corrupted.to(device)).cpu() - corrupted
        prior_scores["denoiser prior max |f(y)|"].append(f.abs().flatten(1).amax(1))
        prior_scores["denoiser prior σ̂"].append(f.flatten(1).norm(dim=1) / TS_L ** 0.5)
an_rows = [{"score": k, "AUROC": f"{auroc(v[labels], v[~labels]):.3f}"} for k, v in an_scores.items()]
an_prior = {k: [auroc(v[labels], v[~labels]) for v in vs] for k, vs in prior_scores.items()}
an_rows += [{"score": k, "AUROC": seed_cell(v)} for k, v in an_prior.items()]
report.table("ts_anomaly_auroc", pd.DataFrame(an_rows))
best_an = max(an_scores, key=lambda k: auroc(an_scores[k][labels], an_scores[k][~labels]))
ts_verdicts[f"anomaly detection: prior max |f(y)| vs best simple score ({best_an}) by AUROC"] = verdict_against(
    an_prior["denoiser prior max |f(y)|"], auroc(an_scores[best_an][labels], an_scores[best_an][~labels]),
    lower_is_better=False)
report.value("ts_verdicts", ts_verdicts)
for k, v in ts_verdicts.items():
    print(f"- {k}: {v}")

# %%
fig, axes = plt.subplots(2, 3, figsize=(12, 5.2), sharex=True)
for col, name in enumerate(ts_test):
    for row, task in enumerate(("imputation", "forecast")):
        w, masks, smp = ts_prior_examples[(name, task)]
        i = len(w) // 2
        ax, t = axes[row, col], np.arange(TS_L)
        obs = masks[i].flatten().numpy()
        lo, hi = smp[:, i].flatten(1).quantile(0.05, 0), smp[:, i].flatten(1).quantile(0.95, 0)
        ax.fill_between(t, lo.numpy(), hi.numpy(), color="C0", alpha=0.25, label="prior 5–95 % quantiles")
        ax.plot(t, smp[:, i].mean(0).flatten().numpy(), color="C0", label="prior mean")
        ax.plot(t, w[i].flatten().numpy(), color="k", lw=1, label="truth")
        ax.plot(t[obs], w[i].flatten().numpy()[obs], "k.", ms=4, label="observed")
        ax.set_title(f"{name} · {task}", fontsize=10)
axes[0, 0].legend(fontsize=7)
for ax in axes[1]:
    ax.set_xlabel("time step in window")
fig.tight_layout()
report.save_figure(fig, "07_ts_examples", "Denoiser-prior imputation (top) and forecasting (bottom) on one test "
                   "window of each series: posterior mean and the 5–95 % quantiles of 12 samples (seed 0; they cover less than "
                   "90 % of the truths, see below), truth and observed steps.")

# %% [markdown]
# **Why are the prior's intervals too narrow?** A candidate cause, written down before this run: the sampler's β.
# Each step removes the fraction h_t of the noise and injects γ_t² = [(1 − βh_t)² − (1 − h_t)²] σ_t², so that
# the effective noise level shrinks by (1 − βh_t); the smaller β, the more noise is re-injected and the more
# the chain explores. KS2021 sample with β = 0.01 (their larger β give samples closer to a MAP-like ascent); we
# raised it to 0.1 to cut the evaluations of the idealised law (at our h₀ = 0.05) from ≈ 520 to ≈ 75. The check: the forecasts again at β = 0.01 (same
# models, windows and chain seeds), 90 % coverage and CRPS per training seed, compared with β = 0.1 paired over
# the training seeds. If coverage does not rise, β is not the cause (the learned prior, or the sampler's other
# settings, such as where its chains stop, remain). The β = 0.1 arm is the forecasts of the table above (their
# evaluations and spread were recorded there).

# %%
SAMPLER_KS = {**SAMPLER, "beta": 0.01}
beta_rows, t0 = [], time.perf_counter()
for name, w in ts_test.items():
    masks = ts.forecast_mask(TS_L, TS_HORIZON).expand(len(w), 1, 1, TS_L).clone()
    for s, (den, _) in zip(SEEDS, ts_models[TS_ARCH]):
        nfe = []
        smp = prior_posterior_samples(den, w, masks, cfg["ts_samples"], seed=s, sampler=SAMPLER_KS, nfe=nfe)
        row = score_rows("forecast", name, "β = 0.01", smp.mean(0), w, masks, samples=smp)
        beta_rows.append({**row, "seed": s, "beta": 0.01, "NFE": float(np.mean(nfe)),
                          "sample sd": smp.std(0)[~masks.expand_as(w)].mean().item()})
beta_long = pd.DataFrame(beta_rows)
report.table("ts_forecast_beta_per_series", beta_long, show=False)
beta_table, beta_seed = [], {}
for beta, df, method in ((SAMPLER["beta"], ts_long, "denoiser prior"), (0.01, beta_long, "β = 0.01")):
    per_seed = {m: pooled(df, "forecast", method, m) for m in ("MAE", "CRPS", "cover90", "sample sd", "NFE")}
    beta_seed[beta] = per_seed
    beta_table.append({"sampler": f"β = {beta:g}", **{m: seed_cell(v, 3 if m != "NFE" else 0) for m, v in per_seed.items()}})
report.table("ts_forecast_beta", pd.DataFrame(beta_table))
beta_cmp = {m: compare_arms(beta_seed[SAMPLER["beta"]][m], beta_seed[0.01][m], f"β = {SAMPLER['beta']:g}", "β = 0.01",
                            lower_is_better=(m != "cover90"), paired=True) for m in ("cover90", "CRPS")}
report.value("ts_forecast_beta_comparison", {m: c.as_dict() for m, c in beta_cmp.items()})
for m, c in beta_cmp.items():
    print(f"{m}: β = 0.01 − β = {SAMPLER['beta']:g} = {c.difference.mean:+.3f} "
          f"[{c.difference.low:+.3f}, {c.difference.high:+.3f}] → {c.verdict}")
print(f"β study: {time.perf_counter() - t0:.0f} s")

# %% [markdown]
# **Where the narrow intervals come from.** Three more candidates, each with a measurement that separates it
# from the others (written before this run; the comparisons are recorded, two checks below can fail):
#
# 1. *The series.* Coverage per series, beside the controls: if the shortfall sits in the series whose test
#    part lies outside its training part (the split is in time), it is a prior that is confident where it has
#    no data, not a sampler that collapses everywhere. The shift is measured directly: the test windows' median
#    spread over time and trend slope against the training windows'.
# 2. *The sampler itself.* The same projected sampler with an **exact** prior: windows drawn from the Gaussian
#    of the training windows, the Gaussian's own blind denoiser (`controls.GaussianPrior.blind_denoiser`: the
#    exact posterior mean, σ̂ by maximum marginal likelihood), and as reference exact posterior samples of the
#    same ensemble size (12), whose 5–95 % sample quantiles cover less than 90 % by however much 12 samples
#    fall short (measured here, not assumed). What the sampler loses against them is its own share. (A scratch run before this one, 32 samples per window,
#    gave a spread ratio of 0.86 and 0.79 coverage at β = 0.1.)
# 3. *The denoiser's confidence.* For the MMSE denoiser, Cov[x | y] = σ²∂D/∂y (second-order Tweedie), so on data
#    from its prior E‖D(y) − x‖² = σ² E[div D(y)] (`denoisers.tweedie_consistency`, div by Hutchinson probes):
#    the ratio ρ of its real error to the error it implies is 1 for a calibrated denoiser, ρ > 1 where it is
#    overconfident — and a sampler driven by an overconfident denoiser draws too narrow posteriors. ρ on the
#    validation windows (in distribution) and on each test series, at small noise (σ = 0.05, 0.1, 0.3), for the
#    kept networks and, as a diagnostic chosen after seeing the above, the bias-free UNets (whose forecasts are
#    added to the per-series table; the kept architecture stays the one the validation loss chose).

# %%
OTHER_ARCH = "ts_unet" if TS_ARCH == "ts_gru" else "ts_gru"
diag_rows, t0 = [], time.perf_counter()
for name, w in ts_test.items():
    masks = ts.forecast_mask(TS_L, TS_HORIZON).expand(len(w), 1, 1, TS_L).clone()
    for s, (den, _) in zip(SEEDS, ts_models[OTHER_ARCH]):
        smp = prior_posterior_samples(den, w, masks, cfg["ts_samples"], seed=s)
        diag_rows.append({**score_rows("forecast", name, f"denoiser prior ({LABELS[OTHER_ARCH]})", smp.mean(0), w,
                                       masks, samples=smp), "seed": s})
fc = pd.concat([ts_long[ts_long.task == "forecast"], pd.DataFrame(diag_rows)])
fc = fc.replace({"method": {"denoiser prior": f"denoiser prior ({LABELS[TS_ARCH]}, kept)"}})
by_series = []
for name in ts_test:
    for method in dict.fromkeys(fc.method):
        d = fc[(fc.series == name) & (fc.method == method)]
        by_series.append({"series": name, "method": method, **{m: seed_cell(d[m].to_numpy(), 3) for m in ("MAE", "CRPS", "cover90")}})
report.table("ts_forecast_by_series", pd.DataFrame(by_series))


def window_stats(w):
    """Median spread over time and median least-squares slope per step of windows (B, 1, 1, L)."""
    x = w.flatten(1) - w.flatten(1).mean(1, keepdim=True)
    t = torch.arange(TS_L, dtype=x.dtype) - (TS_L - 1) / 2
    return x.std(1), (x * t).sum(1) / (t * t).sum()


shift_rows = []
for name in ts_test:
    sd_tr, sl_tr = window_stats(ts_windows[name].train)
    sd_te, sl_te = window_stats(ts_windows[name].test)
    shift_rows.append({"series": name, "spread: train median": f"{sd_tr.median():.3f}",
                       "spread: test median": f"{sd_te.median():.3f}",
                       "spread: test median's training percentile": f"{(sd_tr < sd_te.median()).float().mean() * 100:.0f}",
                       "slope: train median": f"{sl_tr.median():+.4f}", "slope: test median": f"{sl_te.median():+.4f}",
                       "slope: test median's training percentile": f"{(sl_tr < sl_te.median()).float().mean() * 100:.0f}"})
report.table("ts_distribution_shift", pd.DataFrame(shift_rows))
print(f"per-series diagnosis: {time.perf_counter() - t0:.0f} s")

# %%
t0 = time.perf_counter()
g_ex = torch.Generator().manual_seed(SEED + 7)
N_EXACT = 64
x_ex = gauss_ts.sample(N_EXACT, g_ex).float().view(N_EXACT, 1, 1, TS_L)
op_fc = operators.PixelMask(ts.forecast_mask(TS_L, TS_HORIZON).view(1, 1, TS_L))
blind_gauss = gauss_ts.blind_denoiser()
K = cfg["ts_samples"]
xc_ex = op_fc.M_T(x_ex).repeat_interleave(K, 0)
post_sd = gauss_ts.posterior_cov(op_fc).diagonal().clamp_min(0).sqrt().float().view(1, 1, 1, TS_L)


def ensemble_scores(samples, label, nfe=float("nan")):
    """Coverage of the 5–95 % sample quantiles, fair CRPS and sample spread relative to the exact posterior sd,
    over the forecast steps of the synthetic windows."""
    lo, hi = samples.quantile(0.05, 0), samples.quantile(0.95, 0)
    miss = ~ts.forecast_mask(TS_L, TS_HORIZON).view(1, 1, 1, TS_L).expand_as(x_ex)
    return {"samples": label, "cover90": ((x_ex >= lo) & (x_ex <= hi))[miss].float().mean().item(),
            "CRPS": ts.crps_ensemble(samples, x_ex, fair=True)[miss].mean().item(),
            "spread / exact sd": (samples.std(0) / post_sd.expand_as(x_ex))[miss].mean().item(), "NFE": nfe}


exact = gauss_ts.posterior_sample(op_fc, op_fc.M_T(x_ex), n=K, generator=g_ex).float()
exact_rows = [ensemble_scores(exact.view(N_EXACT, K, 1, 1, TS_L).transpose(0, 1), f"exact posterior ({K} per window)")]
for beta, sampler in ((SAMPLER["beta"], SAMPLER), (0.01, SAMPLER_KS)):
    r = samplers.ks_sample(blind_gauss, operator=op_fc, measurement=xc_ex, seed=SEED + 8, disable=True, **sampler)
    smp = op_fc.make_consistent(r.x, xc_ex).view(N_EXACT, K, 1, 1, TS_L).transpose(0, 1)
    exact_rows.append(ensemble_scores(smp, f"projected sampler, β = {beta:g}", r.nfe.float().mean().item()))
exact_table = pd.DataFrame(exact_rows)
report.table("ts_sampler_with_exact_prior", exact_table.round(3))
loss_vs_exact = exact_rows[0]["cover90"] - exact_rows[1]["cover90"]
report.check("the projected sampler with an exact (Gaussian) prior covers within 0.15 of exact posterior samples "
             "of the same ensemble size (β as used above; coverage lost)", loss_vs_exact, 0.15, "<=")
print(f"sampler with an exact prior: {time.perf_counter() - t0:.0f} s")

# %%
t0 = time.perf_counter()
TWEEDIE_SIGMAS = [0.05, 0.1, 0.3]
x_gs = gauss_ts.sample(256, g_ex).float().view(256, 1, 1, TS_L)
rho_self = denoisers.tweedie_consistency(lambda y: gauss_ts.denoise(y, 0.1 ** 2), x_gs, 0.1)["ratio"]
report.check("Tweedie consistency: the Gaussian's exact denoiser on its own samples has ρ within 0.1 of 1 (σ = 0.1)",
             abs(rho_self - 1), 0.1, "<=")
tw_sets = {f"validation · {n}": centre(ts_windows[n].val)[0] for n in TS_NAMES if len(ts_windows[n].val)}
tw_sets |= {f"test · {n}": centre(w)[0] for n, w in ts_test.items()}
tw_rows = []
for set_name, xw in tw_sets.items():
    for label, dens in ((f"{LABELS[TS_ARCH]} (kept)", [d for d, _ in ts_models[TS_ARCH]]),
                        (LABELS[OTHER_ARCH], [d for d, _ in ts_models[OTHER_ARCH]]), ("Gaussian (σ known)", None)):
        row = {"windows": f"{set_name} ({len(xw)})", "denoiser": label}
        for sigma in TWEEDIE_SIGMAS:
            if dens is None:
                dens_s = [lambda y, s2=sigma ** 2: gauss_ts.denoise(y.cpu(), s2).to(y)]
            else:
                dens_s = dens
            rhos = [denoisers.tweedie_consistency(lambda y, d=d: d(y.to(device)).cpu(), xw, sigma, seed=SEED)["ratio"]
                    for d in dens_s]
            row[f"ρ at σ = {sigma:g}"] = seed_cell(rhos, 2)
        tw_rows.append(row)
report.table("ts_tweedie_consistency", pd.DataFrame(tw_rows))
print(f"Tweedie consistency: {time.perf_counter() - t0:.0f} s")

# %% [markdown]
# **What these measurements say** (full run, 3 training seeds):
#
# - *Twelve samples cannot make a 90 % interval.* Exact posterior samples, 12 per window, put only 0.71 of the
#   truths inside their 5–95 % sample quantiles: with 12 samples those quantiles lie inside the 5th and 95th
#   percentiles. The yardstick for the prior's 0.36 is therefore ≈ 0.71, not 0.90 (the Gaussian and Kalman
#   columns, computed from exact Gaussian quantiles, are not directly comparable with the ensembles).
# - *The sampler's own share is small.* With the exact prior the projected sampler covers 0.68 (β = 0.1) and
#   0.67 (β = 0.01) against the exact samples' 0.71, its spread 0.87 of the exact posterior sd (check: at most
#   0.15 lost; 0.03 lost). It reaches σ_L in 42 / 58 evaluations where the idealised law needs 75 / 522 at
#   these settings: its noise estimate ‖d‖/√N undershoots the true noise by about √(1 − E div D/N)
#   (E‖D(y) − y‖² = σ²(N − E div D) for an MMSE denoiser), which matters at N = 32 — yet costs little coverage.
#   (A scratch run that replaced the estimate by a divergence-corrected one, or by the measured residual, moved
#   coverage by less than 0.05.)
# - *The shortfall sits in the shifted series.* El Niño, whose test windows look like its training windows
#   (spread at the 37th training percentile, slope at the 53rd), covers 0.61 [0.34, 0.88], in line with the
#   yardstick and the controls. Sunspots (test cycles larger than every training window: 100th percentile)
#   covers 0.04 and CO₂ (spread at the 96th percentile, steeper trend at the 83rd) 0.11: the prior has learned
#   each series well enough to be sure of it, and the test period left what it learned.
# - *The kept GRU is overconfident off its training data; the bias-free UNet much less.* In distribution, ρ is
#   0.7–2.8 for both networks. On sunspots' test windows the GRU's error is 50× (σ = 0.05) and 14× (σ = 0.1)
#   what its Jacobian implies, the bias-free UNet's 1.7× and 1.3× (the Gaussian's 1.4–1.7×): the GRU, not
#   bias-free, does not carry its behaviour to signals larger than those it saw (Mohan et al.'s argument for
#   bias-free networks). Its sunspot forecasts cover 0.04, the UNet's 0.37 [0.30, 0.44] with a better CRPS (0.685
#   vs 0.936; Gaussian control 0.776). On CO₂ neither network is overconfident by ρ (0.9–1.2) and both cover
#   little: a steeper trend than in training is a shift that a local denoising check does not see.
#
# So the narrow intervals are mostly the learned prior meeting a test period outside its training data (most
# severe for the GRU on sunspots), plus the ensemble size; the sampler and its β contribute little. The kept
# architecture stays the GRU (chosen by validation loss before any of this; no sunspot window is in the
# validation split); the UNet's better sunspot forecasts were found afterwards and are a diagnostic, not a
# re-selection.

# %% [markdown]
# ## 2 · Trajectories: a motion prior from demonstrations, goals as measurements, obstacles as a task energy
#
# **Data.** A scene is a 2-D point robot's start and goal on opposite sides of the unit square and four circular
# obstacles (radius 0.08–0.15) between them (`energy_utils.trajectories`); the straight line hits an obstacle in
# about 70 % of scenes. The demonstrations are the planner's paths: Dijkstra on a 64 × 64 occupancy grid with
# the obstacles inflated by 0.02, line-of-sight shortcutting, resampling to T = 32 waypoints equally spaced in
# arc length and collision-checked smoothing. A trajectory is a (2, 1, 32) signal (x and y as two channels),
# so the 1-D UNet and the operators apply unchanged. The denoiser sees trajectories only, never the obstacles.
#
# **Tasks** on new scenes: (a) *goal-conditioned completion*: start and goal are a linear measurement (the first
# and last waypoint, 4 numbers); the prior fills in the path; (b) *obstacle avoidance*: the same, plus the
# scene's obstacle energy E_obs = Σ_points Σ_k max(0, r_k + 0.02 − ‖p − c_k‖)² as a task energy through the
# hybrid direction of notebook 06 (sign-corrected) inside the projected sampler. We use its annealed form
# d = f(y) − α∇E_obs (`task_scale="unit"`: E_obs enters like a likelihood whose variance is the current σ̂²).
# In the σ²-scaled form d = f(y) − σ̂²α∇E_obs the obstacles' weight relative to the prior stays fixed while the
# prior's score grows as σ̂ → 0, so the prior pulls paths back into obstacles at the end unless α is so large
# that the first steps explode (seen in our first trial); the annealed form is gentle early and a hard
# constraint late. The weight α is chosen on separate validation scenes among {0.3, 1, 3} by success rate.
#
# **Baselines.** The straight line; *trajectory optimisation without a prior* (CHOMP-style preconditioned descent
# on ½Σ‖x_{t+1} − x_t‖² + 10·E_obs with the obstacle margin annealed, start and goal fixed —
# `trajectories.optimise_trajectory`, the classical answer to this task); the Gaussian prior of the
# demonstrations conditioned on start and goal (its mean). A last arm hands the hybrid's samples to the same
# trajectory optimisation as initialisations (no margin continuation: the sample fixes the way around the
# obstacles). The planner's own path is the reference for length and
# smoothness. A trajectory succeeds when no segment enters an obstacle (exact segment–circle distance) and it
# ends at start and goal.

# %%
from energy_utils import trajectories as tj

TRAJ_T = 32
g_tr = torch.Generator().manual_seed(SEED + 100)
t0 = time.perf_counter()
demo_scenes = tj.random_scenes(cfg["n_demos"] + 400, g_tr)
demos, demo_ok = tj.plan(demo_scenes, TRAJ_T, disable=True)
report.check("planner: the demonstrations are collision-free with exact endpoints (fraction of scenes)",
             tj.success(demos, demo_scenes)[demo_ok].float().mean().item(), 1.0, ">=")
demos = demos[demo_ok]
traj_train, traj_val = demos[:-400], demos[-400:]
report.record_data("trajectories", f"{len(demos)} planner demonstrations on random scenes (generator seed {SEED + 100}; "
                   f"{int((~demo_ok).sum())} scenes without a plan dropped)")
print(f"{len(demos)} demonstrations planned in {time.perf_counter() - t0:.0f} s")

gauss_traj, traj_models, _ = domain_denoisers("traj", ["traj_unet"], traj_train, traj_val, [0.02, 0.05, 0.1, 0.2, 0.5])
traj_models = traj_models["traj_unet"]

# %%
# NBVAL_CHECK_OUTPUT
endpoint_mask = torch.zeros(2, 1, TRAJ_T, dtype=torch.bool)
endpoint_mask[..., 0] = endpoint_mask[..., -1] = True
endpoint_op = operators.PixelMask(endpoint_mask)


def endpoint_measurement(scenes):
    """x_c = Mᵀx for start and goal: the first and last waypoint of each scene's path, (B, 4)."""
    return endpoint_op.M_T(tj.straight_line(scenes, TRAJ_T))


def prior_paths(den, scenes, n_samples, seed, alpha=0.0):
    """n_samples paths per scene (scene-major, (B·S, 2, 1, T)) from the projected sampler with start and goal
    measured; with alpha > 0 the obstacle energy enters through the hybrid direction."""
    rep = torch.arange(len(scenes)).repeat_interleave(n_samples)
    sc = scenes[rep]
    xc = endpoint_measurement(sc).to(device)
    kw = dict(operator=endpoint_op, measurement=xc, seed=seed, disable=True, init_value=0.5,
              **{**SAMPLER, "sigma0": 0.5})
    if alpha > 0:
        kw.update(task_energy=lambda i, y: tj.obstacle_energy(y, sc[i.cpu()].to(y.device)),
                  task_inputs=torch.arange(len(sc)), task_weight=alpha, task_scale="unit")
    r = samplers.ks_sample(den, **kw)
    return endpoint_op.make_consistent(r.x, xc).cpu(), sc


def path_metrics(paths, scenes, reference):
    ok = tj.success(paths, scenes)
    return {"success": ok.float().mean().item(), "collision": tj.collides(paths, scenes).float().mean().item(),
            "length / planner": (tj.path_length(paths) / tj.path_length(reference)).mean().item(),
            "smoothness / planner": (tj.smoothness(paths) / tj.smoothness(reference).clamp_min(1e-6)).median().item()}


val_scenes = tj.random_scenes(max(16, cfg["n_traj"] // 4), g_tr)
test_scenes = tj.random_scenes(cfg["n_traj"], g_tr)
test_ref, test_ok = tj.plan(test_scenes, TRAJ_T, disable=True)
test_scenes, test_ref = test_scenes[test_ok], test_ref[test_ok]
S_TR = cfg["traj_samples"]
ALPHAS = [0.3, 1.0, 3.0]
alpha_rows = []
for a in ALPHAS:
    paths, sc = prior_paths(traj_models[0][0], val_scenes, S_TR, seed=SEED, alpha=a)
    alpha_rows.append({"α": a, "validation success": tj.success(paths, sc).float().mean().item()})
ALPHA = max(alpha_rows, key=lambda r: r["validation success"])["α"]
report.table("traj_alpha_validation", pd.DataFrame(alpha_rows), show=False)
print("obstacle weight chosen on validation scenes (seed-0 model):", ALPHA, alpha_rows)

ref_rep = test_ref.repeat_interleave(S_TR, 0)
traj_rows = [{"method": "planner (reference)", **path_metrics(test_ref, test_scenes, test_ref)},
             {"method": "straight line", **path_metrics(tj.straight_line(test_scenes, TRAJ_T), test_scenes, test_ref)}]
opt_paths, _ = tj.optimise_trajectory(test_scenes, TRAJ_T, generator=torch.Generator().manual_seed(SEED), disable=True)
traj_rows.append({"method": "trajectory optimisation (no prior)", **path_metrics(opt_paths, test_scenes, test_ref)})
g_mean = gauss_traj.posterior_mean(endpoint_op, endpoint_measurement(test_scenes)).float()
traj_rows.append({"method": "Gaussian prior mean (control)", **path_metrics(g_mean, test_scenes, test_ref)})
traj_seed_rows, traj_examples = [], {}
for s, (den, _) in zip(SEEDS, traj_models):
    for label, a in (("denoiser prior, start + goal", 0.0), (f"hybrid: prior + obstacle energy (α = {ALPHA:g})", ALPHA)):
        paths, sc = prior_paths(den, test_scenes, S_TR, seed=s, alpha=a)
        traj_seed_rows.append({"method": label, "seed": s, **path_metrics(paths, sc, ref_rep)})
        if s == SEEDS[0]:
            traj_examples[label] = paths
        if a > 0:      # the hybrid's samples as initialisations of the same trajectory optimisation
            refined, _ = tj.optimise_trajectory(sc, TRAJ_T, init=paths, margin_start=tj.MARGIN, disable=True)
            traj_seed_rows.append({"method": "hybrid samples refined by trajectory optimisation", "seed": s,
                                   **path_metrics(refined, sc, ref_rep)})
tsr = pd.DataFrame(traj_seed_rows)
report.table("traj_per_seed", tsr, show=False)
for label, d in tsr.groupby("method", sort=False):
    traj_rows.append({"method": label, **{k: seed_cell(d[k].values) for k in
                                          ("success", "collision", "length / planner", "smoothness / planner")}})
traj_table = report.table("traj_tasks", pd.DataFrame(traj_rows))

hyb = tsr[tsr.method.str.startswith("hybrid:")]
plain = tsr[tsr.method == "denoiser prior, start + goal"]
opt_success = traj_rows[2]["success"]
traj_verdicts = {
    "obstacle avoidance: hybrid vs trajectory optimisation without a prior (success rate)":
        verdict_against(hyb.success.values, opt_success, lower_is_better=False),
    "obstacle avoidance: hybrid vs straight line (success rate)":
        verdict_against(hyb.success.values, traj_rows[1]["success"], lower_is_better=False),
    "obstacle avoidance: trajectory optimisation started from hybrid samples vs from the straight line (success rate)":
        verdict_against(tsr[tsr.method == "hybrid samples refined by trajectory optimisation"].success.values,
                        opt_success, lower_is_better=False),
    "completion: prior paths as smooth as the planner's (median smoothness ratio within [0.5, 2])":
        bool(0.5 <= plain["smoothness / planner"].mean() <= 2.0),
}
report.check("hybrid: the obstacle energy lowers the collision rate of the prior's paths (for every training seed; "
             "difference hybrid − prior)", float((hyb.collision.values - plain.collision.values).max()), 0.0, "<")
report.value("traj_verdicts", traj_verdicts)
for k, v in traj_verdicts.items():
    print(f"- {k}: {v}")

# %%
fig, axes = plt.subplots(2, 4, figsize=(12, 6.2))
for j, ax in enumerate(axes.flat):
    k = j % len(test_scenes)
    for c, r in zip(test_scenes.centres[k], test_scenes.radii[k]):
        ax.add_patch(plt.Circle(c.tolist(), r.item(), color="0.75"))
    P = lambda p: (p[0, 0].numpy(), p[1, 0].numpy())
    ax.plot(*P(test_ref[k]), "k-", lw=2, label="planner")
    ax.plot(*P(opt_paths[k]), "C2--", lw=1.2, label="traj. optimisation")
    for i in range(S_TR):
        for label, c in (("denoiser prior, start + goal", "C1"), (f"hybrid: prior + obstacle energy (α = {ALPHA:g})", "C0")):
            ax.plot(*P(traj_examples[label][k * S_TR + i]), color=c, lw=0.9, alpha=0.8,
                    label=("prior" if c == "C1" else "hybrid") if i == 0 else None)
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", xticks=[], yticks=[])
axes[0, 0].legend(fontsize=7, loc="lower left")
fig.suptitle("test scenes: planner, trajectory optimisation, prior samples (start + goal) and hybrid samples", fontsize=10)
fig.tight_layout()
report.save_figure(fig, "07_trajectories", "Goal-conditioned trajectories on eight test scenes: the planner's path, "
                   "trajectory optimisation without a prior, samples of the demonstration prior conditioned on start "
                   "and goal (orange) and of the hybrid with the obstacle energy (blue), training seed 0.")

# %% [markdown]
# ## 3 · PDE fields: viscous Burgers from sparse sensors and from coarse averages, with conservation as a measurement
#
# **Data.** u_t + u u_x = ν u_xx on the periodic interval [0, 2π), ν = 0.02, t ∈ [0, 1]: random smooth initial
# conditions (Fourier modes 1–4, fluctuation RMS 0.5, random mean) steepen into fronts. Our pseudo-spectral
# solver (`energy_utils.pde`: ETDRK4, 2/3 dealiasing, 512 points) is checked below against the exact Cole–Hopf
# solution; a field is the solution's cell averages on a 32 × 32 (time × space) grid — 32 × 32 rather than 64 × 64
# to fit three 2-D denoiser trainings and their sampling in the CPU budget. Fronts are then one or two cells
# wide. 3,000 training fields, 200 validation fields, test fields from another seed.
#
# **Physics as measurements.** Periodic Burgers conserves ∫u dx, so every row of a field has the same mean:
# the 31 linear constraints mean(u(t_i, ·)) − mean(u(t_0, ·)) = 0 hold for every solution, whatever its data.
# They enter the sampler as extra measurements beside the sensors or the coarse averages
# (`operators.LinearConstraints`, dropping constraints that the other measurements already imply).
#
# **Tasks.** (a) *Sparse sensors*: 10 % of the space–time grid (a fixed random sensor layout, 102 values);
# (b) *super-resolution*: 4 × 4 block averages (8 × 8 values) → 32 × 32. **Baselines**: cubic interpolation
# (Clough–Tocher on the sensors in physical coordinates, periodic in x; cubic splines through the block centres
# for super-resolution), Gaussian-process regression (scikit-learn, anisotropic RBF, periodic in x, fitted per
# field by marginal likelihood), and the Gaussian prior of the training fields conditioned on the same
# measurements. **Metrics**: relative L2 error ‖û − u‖/‖u‖ and the PDE residual of the reconstruction
# (RMS of u_t + u u_x − ν u_xx by finite differences; relative to that of the true field, whose own residual is the
# discretisation floor).
#
# **Sampler.** KS2021 solve inverse problems with β = 0.01; this notebook uses β = 0.1 elsewhere (fewer
# evaluations). Here β is chosen per task between the two on validation fields (the seed-0 network, one chain per
# field; `pde_beta_selection`), and the test table shows both, the verdicts using the chosen one. This choice was
# added after the previous run lost the sensor task at β = 0.1 and a scratch run on 20 *test* fields gave 0.073
# at β = 0.01 against 0.150 at β = 0.1 (0.075 at 0.003, 0.084 at 0.03); so that the test fields do not pick
# their own setting, the choice is made on validation fields.

# %%
from energy_utils import pde

x_ch = torch.linspace(0, 2 * np.pi, 129)[:-1].double()
t_ch = torch.linspace(0, 1, 9).double()
u_exact = pde.cole_hopf_solution(x_ch[None, :], t_ch[:, None], 0.1, 1.2)
u_num = pde.burgers_solve(u_exact[:1], 0.1, 1.0, 9)[0]
report.check("solver: relative L2 error against the exact Cole–Hopf solution (ν = 0.1, 128 points, t ≤ 1)",
             ((u_num - u_exact).norm() / u_exact.norm()).item(), 1e-5)

PDE_N = 32
t0 = time.perf_counter()
pde_all, pde_grid = pde.burgers_fields(cfg["n_pde_train"] + 200, SEED + 200, nx=PDE_N, nt=PDE_N, return_grid=True)
pde_train, pde_val = pde_all[:-200], pde_all[-200:]
pde_test = pde.burgers_fields(cfg["n_pde"], SEED + 300, nx=PDE_N, nt=PDE_N)
report.record_data("PDE fields", f"viscous Burgers (ν = {pde_grid.nu}, T = {pde_grid.T}) from energy_utils.pde, "
                   f"{PDE_N}×{PDE_N} cell averages; {len(pde_train)} training / 200 validation fields (seed "
                   f"{SEED + 200}), {len(pde_test)} test fields (seed {SEED + 300})")
print(f"{len(pde_all) + len(pde_test)} fields solved in {time.perf_counter() - t0:.1f} s")

gauss_pde, pde_models, _ = domain_denoisers("pde", ["pde_unet"], pde_train, pde_val, [0.02, 0.05, 0.1, 0.3, 1.0])
pde_models = pde_models["pde_unet"]

# %%
shape = (1, PDE_N, PDE_N)
sensor_op = operators.RandomPixels(shape, 0.1, torch.Generator().manual_seed(SEED + 400))
sensor_mask = sensor_op.mask
F = 4
sensor_vecs = controls.operator_matrix(sensor_op)                        # (N, 102): the sensors' unit vectors
block_vecs = controls.operator_matrix(operators.BlockAverageSR(shape, F))  # (N, 64): the 4 × 4 blocks
row_means = torch.eye(PDE_N, dtype=torch.float64)[:, None, :, None].expand(PDE_N, 1, PDE_N, PDE_N) / PDE_N
row_diff = (row_means[1:] - row_means[:1]).flatten(1).T                  # (N, 31): mean(row t) − mean(row 0)
PDE_TASKS = {
    "sensors": operators.LinearConstraints(shape, sensor_vecs),
    "sensors + conservation": operators.LinearConstraints(shape, torch.cat([sensor_vecs, row_diff], 1),
                                                          drop_dependent=True),
    "4× super-resolution": operators.LinearConstraints(shape, block_vecs),
    "4× super-resolution + conservation": operators.LinearConstraints(shape, torch.cat([block_vecs, row_diff], 1),
                                                                      drop_dependent=True),
}
report.value("pde_measurements", {k: {"given": op.k, "independent (kept)": op.m} for k, op in PDE_TASKS.items()})


def pde_prior(den, op, fields, n_samples, seed, beta=SAMPLER["beta"]):
    """Posterior mean of n_samples projected-sampler chains per field, made consistent with the measurements."""
    xc = op.measurements(op.constraint_values(fields)).repeat_interleave(n_samples, 0).to(device)
    r = samplers.ks_sample(den, operator=op, measurement=xc, seed=seed, disable=True, **{**SAMPLER, "beta": beta})
    est = op.make_consistent(r.x, xc).cpu()
    return est.view(len(fields), n_samples, *fields.shape[1:]).mean(1)


def relative_l2(rec, truth):
    return ((rec - truth).flatten(1).norm(dim=1) / truth.flatten(1).norm(dim=1)).mean().item()


def pde_scores(task, method, rec, truth, seed=None):
    rel = relative_l2(rec, truth)
    res = (pde.residual_norm(rec.double(), pde_grid) / pde.residual_norm(truth.double(), pde_grid)).median().item()
    drift = (pde.row_means(rec) - pde.row_means(rec)[:, :1]).abs().amax(1).mean().item()
    return {"task": task, "method": method, "seed": seed, "relative L2": rel, "residual / truth's": res,
            "row-mean drift": drift}


# the sampler's β per task, chosen on validation fields (seed-0 network, one chain per field)
t0 = time.perf_counter()
PDE_BETAS = (SAMPLER["beta"], 0.01)
sel_rows = []
for task in ("sensors", "4× super-resolution"):
    for beta in PDE_BETAS:
        rec = pde_prior(pde_models[0][0], PDE_TASKS[task], pde_val[:cfg["pde_select"]], 1, seed=SEED + 500, beta=beta)
        sel_rows.append({"task": task, "β": beta, "relative L2 (validation)": relative_l2(rec, pde_val[:cfg["pde_select"]])})
pde_select = pd.DataFrame(sel_rows)
PDE_BETA = {task: float(d.loc[d["relative L2 (validation)"].idxmin(), "β"]) for task, d in pde_select.groupby("task")}
report.table("pde_beta_selection", pde_select.round(4))
report.value("pde_beta", PDE_BETA)
print(f"β chosen on {cfg['pde_select']} validation fields: {PDE_BETA} ({time.perf_counter() - t0:.0f} s)")

t0 = time.perf_counter()
pde_rows, pde_examples = [], {}
coarse = pde.block_means(pde_test[:, 0], F)
baselines = {
    "sensors": {"cubic interpolation": pde.cubic_interpolation(pde_test.shape, sensor_mask[0], pde_test, grid=pde_grid),
                "Gaussian-process regression": pde.gp_regression(pde_test.shape, sensor_mask[0], pde_test)},
    "4× super-resolution": {"cubic-spline upsampling": pde.upsample_cubic(coarse, F)[:, None].float(),
                            "Gaussian-process regression": pde.gp_upsample(coarse, F)[:, None].float()},
}
print(f"classical baselines: {time.perf_counter() - t0:.0f} s")
for task, op in PDE_TASKS.items():
    base_task = task.replace(" + conservation", "")
    if task == base_task:
        for method, rec in baselines[task].items():
            pde_rows.append(pde_scores(task, method, rec.float(), pde_test))
            pde_examples[(task, method)] = rec
    xc = op.measurements(op.constraint_values(pde_test))
    g_rec = gauss_pde.posterior_mean(op, xc).float()
    pde_rows.append(pde_scores(task, "Gaussian prior (control)", g_rec, pde_test))
    for beta in PDE_BETAS:
        method = "denoiser prior" if beta == PDE_BETA[base_task] else f"denoiser prior (β = {beta:g}, not chosen)"
        for s, (den, _) in zip(SEEDS, pde_models):
            rec = pde_prior(den, op, pde_test, cfg["pde_samples"], seed=s, beta=beta)
            pde_rows.append(pde_scores(task, method, rec, pde_test, seed=s))
            if s == SEEDS[0]:
                pde_examples[(task, method)] = rec
print(f"PDE tasks: {time.perf_counter() - t0:.0f} s")
pde_long = pd.DataFrame(pde_rows)
report.table("pde_per_seed", pde_long, show=False)
pde_table = []
for (task, method), d in pde_long.groupby(["task", "method"], sort=False):
    pde_table.append({"task": task, "method": method, **{k: seed_cell(d[k].values, 3 if k != "row-mean drift" else 5)
                                                           for k in ("relative L2", "residual / truth's", "row-mean drift")}})
pde_table = report.table("pde_tasks", pd.DataFrame(pde_table))

pde_verdicts = {}
for task in ("sensors", "4× super-resolution"):
    base = pde_long[(pde_long.task == task) & ~pde_long.method.str.startswith("denoiser prior")]
    best = base.loc[base["relative L2"].idxmin()]
    for variant in (task, f"{task} + conservation"):
        prior = pde_long[(pde_long.task == variant) & (pde_long.method == "denoiser prior")]["relative L2"].values
        pde_verdicts[f"{variant}: prior vs best baseline ({best.method}) by relative L2"] = verdict_against(prior, best["relative L2"])
    with_c = pde_long[(pde_long.task == f"{task} + conservation") & (pde_long.method == "denoiser prior")]["relative L2"].values
    without = pde_long[(pde_long.task == task) & (pde_long.method == "denoiser prior")]["relative L2"].values
    pde_verdicts[f"{task}: conservation as a measurement helps the prior (paired over seeds)"] = (
        compare_arms(without, with_c, "without", "with conservation", paired=True).verdict if len(SEEDS) > 1
        else f"one seed only: {NO_DIFFERENCE}")
report.value("pde_verdicts", pde_verdicts)
for k, v in pde_verdicts.items():
    print(f"- {k}: {v}")

# %%
show = [("truth", None), ("sensors", "cubic interpolation"), ("sensors", "Gaussian-process regression"),
        ("sensors + conservation", "denoiser prior"), ("4× super-resolution", "cubic-spline upsampling"),
        ("4× super-resolution", "Gaussian-process regression"), ("4× super-resolution + conservation", "denoiser prior")]
fig, axes = plt.subplots(2, len(show), figsize=(13, 4.2))
for r in range(2):
    k = r * (len(pde_test) // 2)
    lim = pde_test[k].abs().max().item()
    for c, (task, method) in enumerate(show):
        img = pde_test[k, 0] if method is None else pde_examples[(task, method)][k].reshape(PDE_N, PDE_N)
        axes[r, c].imshow(img.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower", aspect="auto")
        axes[r, c].set(xticks=[], yticks=[])
        if r == 0:
            axes[r, c].set_title("truth" if method is None else f"{task.replace(' + conservation', ' + cons.')}\n{method}",
                                 fontsize=7.5)
    axes[r, 0].set_ylabel("time →")
fig.tight_layout()
report.save_figure(fig, "07_pde_fields", "Burgers fields (space →, time ↑) on two test cases: truth; from 10 % "
                   "sensors by cubic interpolation, GP regression and the denoiser prior with conservation; from "
                   "4 × 4 block averages by cubic splines, GP regression and the denoiser prior with conservation "
                   "(training seed 0).")

# %% [markdown]
# ## Summary: the seed's claim, domain by domain
#
# Each verdict compares the denoiser prior's seed interval (3 training seeds in the full profile) with the best
# classical baseline or control of the same task, measured above; "holds" and "does not hold" need the whole
# interval on one side.
#
# **What the full run found** (CPU, 2 threads, AMD EPYC, 10 min of evaluation from the committed weights). Every
# network was trained until the plateau rule stopped it (validation every 100 steps; the rate halved after 4
# checks without a 0.5 % gain, stopped at the fourth plateau): the 1-D UNets in 2.7–3.1 k steps (2 min each),
# the GRUs in 5.1–6.8 k (5–7 min), the trajectory UNets in 4.6–4.8 k (3.5 min) and the PDE UNets in 4.0–4.7 k
# (6–7 min). (The previous run's GRU, trajectory and PDE models had stopped at a 4-min or 4,000-step cap with
# their curves still falling; this run retrained exactly those, on 2026-12-03, with the caps raised to 10–12 min
# and 20,000 steps, none reached.)
#
# - *Time series — ties with the best classical baseline on every task.* The GRU edged the bias-free 1-D UNet on
#   the validation loss (0.260 vs 0.292 mean MSE/σ², no measurable difference over seeds) and was kept; on
#   held-out windows it beats the Gaussian denoiser at σ = 0.1–0.6 and ties or loses to it at σ = 0.05 and 1.
#   Forecasting 8 steps: MAE 0.365 [0.308, 0.421] vs seasonal naive 0.366; CRPS 0.299 [0.249, 0.348] vs the
#   Gaussian control's 0.336 (the previous, under-trained GRUs gave 0.289 and a "holds"; the better-trained
#   ones are further apart between seeds, so it is a tie now). Imputation ties the Kalman smoother (MAE 0.308 vs
#   0.309). The prior's 5–95 % sample intervals cover 33–36 % of the truths (Kalman 78 %, Gaussian 70–74 %), so
#   what it gains in CRPS comes from its mean, not its spread. Why, measured: 12 exact posterior samples cover
#   only 0.71 themselves (the ensemble is too small for 5–95 % quantiles); the sampler with an exact prior loses
#   0.03 more (β does not matter: 0.34 vs 0.36 at β = 0.01 and 0.1); the rest is two series whose test period
#   left their training range — sunspots (larger cycles; coverage 0.04, where the GRU's error is 50× what its
#   Jacobian implies, against 1.7× for the bias-free UNet, whose sunspot forecasts cover 0.37) and CO₂ (steeper
#   trend; 0.11) — while El Niño, unshifted, covers 0.61, with the controls. Anomaly AUROC 0.987 ties the
#   Gaussian denoiser's residual (0.996).
# - *Trajectories — the mechanism works, the classical optimiser is better.* The obstacle energy through the
#   hybrid raises the prior's success from 0.23 to 0.79 [0.69, 0.88] (straight line 0.28), below trajectory
#   optimisation without a prior (0.955): does not hold, now clearly (the under-trained models' interval,
#   [0.63, 0.91], had touched 0.955 and flipped between "does not hold" and a tie under float round-off).
#   Started from the hybrid's samples, trajectory optimisation reaches 0.968 [0.953, 0.983]: no measurable
#   difference from the optimiser alone. The prior's paths are 4–16 % longer than the planner's and far rougher
#   (median squared-second-difference ratio 77 for completion, 231 with the obstacle energy: the sampler stops at
#   σ_L = 0.01, which is large against a 32-point path in the unit square).
# - *PDE fields — holds for super-resolution, does not hold for sparse sensors.* From 4 × 4 block averages the
#   prior reconstructs with relative L2 0.111 [0.089, 0.134] vs 0.170 for the Gaussian control and 0.19 for cubic
#   splines and GP regression, with a PDE residual closer to the truth's (1.4× vs 2.4×). From 10 % sensors it
#   still loses to the Gaussian control (0.052), but half as badly as before: with β = 0.01, which 20 validation
#   fields chose for this task (0.077 vs 0.142 at β = 0.1), the test error is 0.070 [0.063, 0.077] (at β = 0.1:
#   0.142 [0.121, 0.162], the previous run's answer), level with GP regression (0.073) and far below cubic
#   interpolation (0.172). For super-resolution the validation fields kept β = 0.1 (0.136 vs 0.160; on the test
#   fields 0.111 vs 0.115, a tie). So the sensor loss was mostly the sampler's setting, not the prior; what is left
#   (0.070 vs 0.052) is the prior's. Conservation as a measurement helps with sensors (0.066 vs 0.070, paired over
#   seeds) and makes no measurable difference for super-resolution, where the block averages already fix most of
#   it (7 of the 31 constraints are implied).

# %%
# NBVAL_CHECK_OUTPUT
summary = ([{"domain": "time series", "comparison": k, "verdict": v} for k, v in ts_verdicts.items()]
           + [{"domain": "trajectories", "comparison": k, "verdict": v} for k, v in traj_verdicts.items()]
           + [{"domain": "PDE fields", "comparison": k, "verdict": v} for k, v in pde_verdicts.items()])
report.table("verdicts", pd.DataFrame(summary))

# %%
report.finish()
