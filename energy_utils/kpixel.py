"""The MNIST k-pixel experiment (the A-CSM paper's §6.3 item 4), run in resumable chunks of digits.

k of the 784 pixels of a test digit are revealed (one random pixel set per k, observation variance 10⁻⁷, as the
paper), the others are sampled from a prior, and the sample is classified: the classification error of the
samples measures how well a sampler fills in a digit from few pixels. The samplers compared (one sample per digit):

* ``geometric PC (dual)`` and its longer runs ``geometric PC ×3 (dual)``, ``geometric PC ×10 (dual)``: the
  predictor–corrector sampler (:func:`posterior_samplers.pc_sample`) along a geometric variance path from 100 to
  s_end = 10⁻⁴, with ``n_levels`` × 1, 3, 10 levels (≈ 2 NFE per level). Their errors against NFE give the NFE
  the geometric schedule needs to reach the energy-guided schedule's error;
* ``energy-guided (dual)``: the paper's schedule (:func:`posterior_samplers.energy_guided_sample`: each unobserved
  variance lowered by γ·v|∂U/∂v|v, γ = 0.06 its MNIST value), from the paper's initial variance of the missing
  pixels (:data:`K_INIT_VAR`) to s_end within ``n_levels`` steps;
* ``energy-guided (single)``: the same on the A-DSM-only energy, whose covariance score carries an arbitrary
  Σ-offset: the control without normalization;
* ``Gaussian control``: a draw from the exact posterior of a Gaussian fitted to the training digits.

Temperature 0.5 and one corrector per level for every energy sampler (the paper's energy-guided T).

**Chunks.** Digits are processed in chunks of ``chunk`` consecutive test digits; every chunk's noise is seeded by
(seed, k, chunk index) alone, so a chunk's result does not depend on which chunks ran before or in which session.
:func:`run` appends each finished chunk (one JSON line per digit and method) to a store and skips the chunks the
store already holds for the same settings, so a run of ≥ 1,000 digits per k can span several sessions. A chunk
is written whole or not at all.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import metrics
from . import posterior_samplers as ps
from .controls import GaussianPrior
from .densities import GaussianMixture
from .runtime import describe_hardware
from .stats import seed_interval

SHAPE = (1, 28, 28)
K_INIT_VAR = {50: 4.0, 100: 1.0, 150: 1.0, 300: 0.25}     # k → the paper's initial variance of the missing pixels
PAPER_ERROR_PERCENT = {50: (46.13, 34.48), 100: (9.77, 7.63), 150: (4.12, 1.88), 300: (1.03, 1.21)}  # geometric, EG
S_END = 1e-4                  # the MNIST energies' smallest training variance
OBS_VAR = 1e-7                # the revealed pixels' variance (the paper's)
GEOMETRIC_MULTIPLIERS = (1, 3, 10)
STORE_NAME = "10_kpixel.jsonl"
CLASSIFIER = "03_mnist_classifier"      # the committed classifier of notebook 03 that labels the samples
METHODS = ("Gaussian control", *(f"geometric PC ×{m} (dual)" if m != 1 else "geometric PC (dual)"
                                 for m in GEOMETRIC_MULTIPLIERS),
           "energy-guided (dual)", "energy-guided (single)")


@dataclass(frozen=True)
class KPixelSettings:
    """What a chunk's result depends on (besides the models, named in the store by ``models``)."""
    n_levels: int = 100           # levels of the 1× geometric path; steps of the energy-guided schedule
    chunk: int = 32               # digits per chunk
    seed: int = 0
    gamma: float = 0.06
    snr: float = 0.1
    temperature: float = 0.5
    sigma_max: float = 10.0       # the geometric path starts at variance sigma_max²

    def __post_init__(self):
        if self.n_levels < 2 or self.chunk < 1:
            raise ValueError(f"need n_levels ≥ 2 and chunk ≥ 1, got {self.n_levels}, {self.chunk}")

    def key(self) -> dict:
        return asdict(self)


def kpixel_mask(k: int, seed: int = 0) -> torch.Tensor:
    """The revealed pixels for ``k``: a (1, 28, 28) boolean map with exactly k True entries, from a generator
    seeded by seed + k (the same set for every digit)."""
    if not 1 <= k < 784:
        raise ValueError(f"k must be in [1, 783] revealed pixels, got {k}")
    perm = torch.randperm(784, generator=torch.Generator().manual_seed(seed + k))[:k]
    mask = torch.zeros(784, dtype=torch.bool)
    mask[perm] = True
    return mask.reshape(SHAPE)


def _chunk_seed(settings: KPixelSettings, k: int, index: int) -> int:
    return 1_000_003 * settings.seed + 1009 * k + index


def run_chunk(energies: dict, gauss: GaussianMixture, classifier, x: torch.Tensor, labels: torch.Tensor, k: int,
              index: int, settings: KPixelSettings, methods=METHODS, disable: bool | None = None) -> list[dict]:
    """Every method of ``methods`` on the digits ``x`` (n, 1, 28, 28) in [0, 1] with ``labels`` (n,), chunk
    ``index`` of task ``k``: one row per digit and method with the classifier's prediction, the PSNR of the
    [0, 1]-clipped sample, the NFE and the wall time per digit. ``energies`` = {"dual": model, "single": model}
    (energy models on ``x``'s device), ``gauss`` the Gaussian control (a one-component mixture in d = 784)."""
    if k not in K_INIT_VAR:
        raise ValueError(f"unknown k = {k}: the paper's settings are k ∈ {sorted(K_INIT_VAR)}")
    if x.ndim != 4 or tuple(x.shape[1:]) != SHAPE or labels.shape != (x.shape[0],):
        raise ValueError(f"need x (n, 1, 28, 28) and labels (n,), got {tuple(x.shape)} and {tuple(labels.shape)}")
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown k-pixel methods {sorted(unknown)}; choose from {METHODS}")
    device = x.device
    n, s0, seed = x.shape[0], K_INIT_VAR[k], _chunk_seed(settings, k, index)
    mask_img = kpixel_mask(k, settings.seed).to(device)
    y_full = torch.where(mask_img, x, torch.zeros_like(x))
    L = settings.n_levels
    min_rel = 1 - math.exp(-math.log(s0 / S_END) / (L - 1))      # reaches s_end within L steps

    def geometric(mult):
        return lambda: ps.pc_sample(ps.EnergyPrior(energies["dual"]), y_full, mask_img, OBS_VAR,
                                    ps.geometric_path(settings.sigma_max ** 2, S_END, mult * L), n_corrector=1,
                                    snr=settings.snr, temperature=settings.temperature,
                                    generator=torch.Generator(device="cpu").manual_seed(seed + 1), disable=disable,
                                    desc=f"geometric ×{mult} k={k}")

    def guided(arm):
        return lambda: ps.energy_guided_sample(
            ps.EnergyPrior(energies[arm]), y_full, mask_img, OBS_VAR, s0, S_END, gamma=settings.gamma,
            min_rel_step=min_rel, max_rel_step=max(0.5, min_rel), max_steps=L, n_corrector=1,
            temperature=settings.temperature, generator=torch.Generator(device="cpu").manual_seed(seed + 1),
            disable=disable, desc=f"energy-guided {arm} k={k}")

    def gaussian():
        flat = mask_img.flatten().cpu()
        A = torch.eye(784, dtype=torch.float64)[flat]
        xs = gauss.posterior(A, OBS_VAR, x.double().flatten(1).cpu()[:, flat]).sample(
            1, torch.Generator().manual_seed(seed + 2))[:, 0]
        return xs.reshape(n, *SHAPE).to(x.dtype).to(device), {"nfe": 0}

    runs = {"Gaussian control": gaussian, "energy-guided (dual)": guided("dual"),
            "energy-guided (single)": guided("single")}
    for mult in GEOMETRIC_MULTIPLIERS:
        runs[f"geometric PC ×{mult} (dual)" if mult != 1 else "geometric PC (dual)"] = geometric(mult)
    rows = []
    for name in methods:
        t0 = time.perf_counter()
        try:
            xs, info = runs[name]()
        except ps.SamplerDivergence as err:
            rows += [{"k": k, "chunk": index, "digit": index * settings.chunk + i, "method": name,
                      "label": int(labels[i]), "diverged": str(err)} for i in range(n)]
            continue
        wall = (time.perf_counter() - t0) / n
        xs = xs.clamp(0, 1)
        with torch.no_grad():
            pred = classifier(xs.float()).argmax(1).cpu()
        psnr = metrics.psnr(xs.cpu(), x.cpu())
        rows += [{"k": k, "chunk": index, "digit": index * settings.chunk + i, "method": name,
                  "label": int(labels[i]), "pred": int(pred[i]), "psnr": float(psnr[i]), "nfe": float(info["nfe"]),
                  "converged": bool(info.get("converged", True)), "wall_s": wall} for i in range(n)]
    return rows


def read_store(path: Path, settings: KPixelSettings | None = None, models: dict | None = None,
               n_digits: int | None = None) -> pd.DataFrame:
    """The rows of a store (JSON lines: one header object per chunk, {"chunk_header": ..., "rows": [...]}),
    restricted to chunks run with ``settings`` and ``models`` (:func:`default_models`) and to the first
    ``n_digits`` test digits when given. Empty frame if the file is absent."""
    path = Path(path)
    rows = []
    if path.exists():
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no} is not a JSON line ({err}); delete that line to re-run its chunk")
            head = rec["chunk_header"]
            if settings is not None and head["settings"] != settings.key():
                continue
            if models is not None and head["models"] != models:
                continue
            rows += rec["rows"]
    rows = pd.DataFrame(rows)
    if n_digits is not None and not rows.empty:
        rows = rows[rows["digit"] < n_digits].reset_index(drop=True)
    return rows


def run(store: Path, energies: dict, models: dict, gauss: GaussianMixture, classifier, images: torch.Tensor,
        labels: torch.Tensor, n_digits: int, settings: KPixelSettings, ks=tuple(K_INIT_VAR),
        max_time_s: float | None = None, log=print, disable: bool | None = None) -> pd.DataFrame:
    """Run every chunk of the first ``n_digits`` digits for every k that ``store`` lacks (chunk 0 of every k,
    then chunk 1, ...), appending each finished chunk; no new chunk starts after ``max_time_s`` seconds.
    ``models`` names the weights (energies and classifier, :func:`default_models`) in each chunk's header;
    chunks of other weights are ignored.
    Returns the store's rows for these settings and models and the first ``n_digits`` digits."""
    store = Path(store)
    store.parent.mkdir(parents=True, exist_ok=True)
    if n_digits > images.shape[0]:
        raise ValueError(f"{n_digits} digits asked for, {images.shape[0]} available")
    done = read_store(store, settings, models)
    have = set() if done.empty else set(zip(done["k"], done["chunk"]))
    n_chunks = math.ceil(n_digits / settings.chunk)
    t0 = time.perf_counter()
    device = next(next(iter(energies.values())).parameters()).device
    for index in range(n_chunks):
        for k in ks:
            if (k, index) in have:
                continue
            if max_time_s is not None and time.perf_counter() - t0 >= max_time_s:
                log(f"k-pixel: no time left to extend the store (budget {max_time_s:.0f} s); it lacks chunk {index} "
                    f"of k = {k} and later ones of the first {n_digits} digits, which are left out")
                return read_store(store, settings, models, n_digits)
            lo, hi = index * settings.chunk, (index + 1) * settings.chunk
            t1 = time.perf_counter()
            rows = run_chunk(energies, gauss, classifier, images[lo:hi].to(device), labels[lo:hi], k, index,
                             settings, disable=disable)
            header = {"settings": settings.key(), "models": models, "k": k, "chunk": index,
                      "wall_s": time.perf_counter() - t1, "torch": torch.__version__,
                      "hardware": describe_hardware(device)}
            with store.open("a") as f:
                f.write(json.dumps({"chunk_header": header, "rows": rows}) + "\n")
            log(f"k-pixel: chunk {index} of k = {k} ({hi - lo} digits) in {time.perf_counter() - t1:.0f} s")
    return read_store(store, settings, models, n_digits)


def summarize(rows: pd.DataFrame, reference: str = "geometric PC (dual)") -> pd.DataFrame:
    """Per k and method: digits, classification error % with a 95 % t-interval over digits (clipped to
    [0, 100]), PSNR, NFE and wall
    time per digit, and the paired difference of error (method − ``reference``, percentage points) on the same
    digits with its 95 % interval."""
    if rows.empty:
        raise ValueError("no k-pixel rows to summarise: run energy_utils.kpixel.run first")
    rows = rows[rows.get("diverged").isna()] if "diverged" in rows else rows
    rows = rows.assign(error=(rows["pred"] != rows["label"]).astype(float) * 100)
    out = []
    for (k, method), sub in rows.groupby(["k", "method"], sort=True):
        iv = seed_interval(sub["error"].to_numpy())
        row = {"k": k, "method": method, "digits": len(sub), "error %": iv.mean,
               "error 95% low": max(iv.low, 0.0), "error 95% high": min(iv.high, 100.0), "psnr": sub["psnr"].mean(), "nfe": sub["nfe"].mean(),
               "wall s/digit": sub["wall_s"].mean()}
        ref = rows[(rows["k"] == k) & (rows["method"] == reference)].set_index("digit")["error"]
        both = sub.set_index("digit")["error"].align(ref, join="inner")
        if method != reference and len(both[0]) > 1:
            d = seed_interval((both[0] - both[1]).to_numpy())
            row.update({f"− {reference} (pp)": d.mean, "diff 95% low": d.low, "diff 95% high": d.high})
        out.append(row)
    return pd.DataFrame(out)


def paired_claims(rows: pd.DataFrame, target: str = "energy-guided (dual)",
                  others=("geometric PC (dual)", "energy-guided (single)", "Gaussian control")) -> dict:
    """The paper's k-pixel claims per k: ``target``'s classification error below each of ``others`` on the same
    digits, as {"k=K: target below other": {"difference_pp", "low", "high", "verdict", "digit_verdict", "digits"}}
    (paired 95 % t-interval over digits, :func:`stats.compare_arms`; difference = target − other). ``verdict`` of a
    comparison between two energies (the single's schedule) says no measurable difference whatever the digits say:
    each energy is one training seed; the digit-level verdict is kept beside it."""
    from . import stats
    err = rows.assign(error=100.0 * (rows["pred"] != rows["label"])).pivot_table(
        index=["k", "digit"], columns="method", values="error")
    claims = {}
    for k, sub in err.groupby("k"):
        for other in others:
            c = stats.compare_arms(sub[other], sub[target], other, target, paired=True)
            two_trained_models = other == "energy-guided (single)"
            claims[f"k={k}: {target} below {other}"] = {
                "difference_pp": c.difference.mean, "low": c.difference.low, "high": c.difference.high,
                "verdict": f"one training seed per energy: {stats.NO_DIFFERENCE}" if two_trained_models else c.verdict,
                "digit_verdict": c.verdict, "digits": len(sub)}
    return claims


def nfe_to_match(summary: pd.DataFrame, target: str = "energy-guided (dual)") -> pd.DataFrame:
    """Per k: the target's error and NFE, and the NFE at which the geometric schedule's error (linear in log NFE
    between its runs ×1, ×3, ×10) first reaches the target's error; NaN (with ``reached`` False) when even its
    longest run stays above it."""
    out = []
    for k, sub in summary.groupby("k"):
        geo = sub[sub["method"].str.startswith("geometric PC")].sort_values("nfe")
        tgt = sub[sub["method"] == target]
        if geo.empty or tgt.empty:
            continue
        e_t = float(tgt["error %"].iloc[0])
        nfe, err = geo["nfe"].to_numpy(), geo["error %"].to_numpy()
        match = math.nan
        for i in range(len(nfe)):
            if err[i] <= e_t:
                if i == 0:
                    match = nfe[0]
                else:                      # interpolate in log NFE between the last run above and this one
                    f = (err[i - 1] - e_t) / (err[i - 1] - err[i])
                    match = float(np.exp(np.log(nfe[i - 1]) + f * (np.log(nfe[i]) - np.log(nfe[i - 1]))))
                break
        out.append({"k": k, f"{target} error %": e_t, f"{target} NFE": float(tgt["nfe"].iloc[0]),
                    "geometric NFE at equal error": match, "reached": not math.isnan(match),
                    "geometric NFE / energy-guided NFE": match / float(tgt["nfe"].iloc[0])})
    return pd.DataFrame(out)


def main(argv=None):
    """``python -m energy_utils.kpixel run --digits 1000 [--hours H] [--pair offset|joint]``: extend the committed
    store of the full profile (``data/runs/10_kpixel.jsonl``) with the chunks it lacks, on an MNIST energy pair
    (``recipes.MNIST_ENERGY_PAIRS``) and notebook 03's classifier. Chunks of both pairs can share the store: each is read
    only with its own weights."""
    import argparse

    from . import recipes
    from .paths import runs_dir
    from .runtime import configure_threads, pick_device

    p = argparse.ArgumentParser(prog="python -m energy_utils.kpixel")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="extend the k-pixel store")
    r.add_argument("--digits", type=int, default=1024)
    r.add_argument("--hours", type=float, default=None, help="start no chunk after this many hours")
    r.add_argument("--threads", type=int, default=None)
    r.add_argument("--device", default="auto")
    r.add_argument("--store", default=str(runs_dir("full") / STORE_NAME))
    r.add_argument("--pair", default=None, choices=sorted(recipes.MNIST_ENERGY_PAIRS),
                   help=f"default: {recipes.MNIST_CURRENT_PAIR} (recipes.MNIST_CURRENT_PAIR)")
    a = p.parse_args(argv)
    configure_threads(a.threads)
    device = pick_device(a.device)
    store_run(Path(a.store), a.digits, device, None if a.hours is None else a.hours * 3600, pair=a.pair)



def default_models(pair: str | None = None) -> dict:
    """The committed weights a chunk depends on: the MNIST energies of ``pair`` (``recipes.MNIST_ENERGY_PAIRS``; None:
    ``recipes.MNIST_CURRENT_PAIR``, the pair notebooks 08-10 evaluate) and notebook 03's classifier, each as {"name", "sha256"} (the first 16 hex digits of the manifest's checksum,
    which loading verifies). Written in every chunk's header and matched when the store is read, so chunks run
    with weights retrained under the same name are never mixed with older ones."""
    from . import recipes
    from .checkpoints import committed_sha256
    pair = recipes.MNIST_CURRENT_PAIR if pair is None else pair
    if pair not in recipes.MNIST_ENERGY_PAIRS:
        raise ValueError(f"unknown energy pair {pair!r}; choose one of {sorted(recipes.MNIST_ENERGY_PAIRS)}")
    names = {arm: recipes.MNIST_ENERGY_PAIRS[pair][arm] for arm in ("dual", "single")}
    names["classifier"] = CLASSIFIER
    return {role: {"name": name, "sha256": committed_sha256(name)[:16]} for role, name in names.items()}


def store_run(store: Path, n_digits: int, device, max_time_s=None, settings: KPixelSettings = KPixelSettings(),
              log=print, disable: bool | None = None, pair: str | None = None) -> pd.DataFrame:
    """:func:`run` on the committed MNIST energies, notebook 03's classifier, the Gaussian control of the training
    digits (``data.load_mnist("fit")``, full sample covariance + 10⁻⁴ I) and the test digits."""
    from . import denoisers
    from .data import load_mnist
    from .energy_training import load_energy_model

    models = default_models(pair)
    energies = {arm: load_energy_model(models[arm]["name"], "full", device)[0] for arm in ("dual", "single")}
    classifier, _ = denoisers.load_denoiser(models["classifier"]["name"], "full", device)
    fit, test = load_mnist("fit"), load_mnist("test")
    gauss = gaussian_control(fit.images)
    return run(store, energies, models, gauss, classifier, test.images, test.labels, n_digits, settings,
               max_time_s=max_time_s, log=log, disable=disable)


def gaussian_control(images: torch.Tensor) -> GaussianMixture:
    """N(mean, sample covariance + 10⁻⁴ I) of the digits ``images`` (N, 1, 28, 28)
    (:meth:`energy_utils.controls.GaussianPrior.fit`), as a one-component mixture."""
    prior = GaussianPrior.fit(images, ridge=1e-4)
    return GaussianMixture([1.0], prior.mean[None], prior.cov[None])


if __name__ == "__main__":
    main()
