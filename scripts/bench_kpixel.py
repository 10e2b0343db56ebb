"""Cost of the k-pixel samplers of notebook 10 per digit and NFE (printed, never asserted).

The energy-guided schedule gives every chain its own Σ, so the rank-512 Gaussian base of the MNIST energies
factorises a 512 × 512 system per chain at every evaluation; its predictor and corrector evaluate at the same Σ,
and ``GaussianBase`` reuses the factors of the last Σ when the next call repeats it bit for bit. This script times
the first ``steps`` steps of the notebook's energy-guided run (32 chains, k = 100, a 100-step schedule, the
committed dual energy; in those steps every chain still has its own Σ) with that reuse and with it switched off
(``GaussianBase.CACHE_MAX_DISTINCT = 0``), checks that both give the same samples bit for bit, and times geometric PC
(every chain shares Σ) for comparison.

    python scripts/bench_kpixel.py [--threads 2] [--steps 20]
    from scripts.bench_kpixel import rows                   # [{"metric", "setting", "ours", "goal"}, ...]
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from energy_utils import kpixel, runtime
from energy_utils import posterior_samplers as ps
from energy_utils.data import load_mnist
from energy_utils.energy_models import GaussianBase
from energy_utils.energy_training import load_energy_model


def _time(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def rows(device: str = "auto", threads: int = 2, steps: int = 20, chains: int = 32, k: int = 100,
         levels: int = 100) -> list[dict]:
    torch.set_num_threads(threads)
    dev = runtime.pick_device(device)
    name = kpixel.default_models()["dual"]["name"]
    model, _ = load_energy_model(name, "full", dev)
    x = load_mnist("test").images[:chains].to(dev)
    mask = kpixel.kpixel_mask(k).to(dev)
    y = torch.where(mask, x, torch.zeros_like(x))
    prior = ps.EnergyPrior(model)
    s0 = kpixel.K_INIT_VAR[k]
    min_rel = 1 - math.exp(-math.log(s0 / kpixel.S_END) / (levels - 1))      # the notebook's schedule, cut at ``steps``

    def guided():
        return ps.energy_guided_sample(prior, y, mask, kpixel.OBS_VAR, s0, kpixel.S_END, gamma=0.06,
                                       min_rel_step=min_rel, max_rel_step=max(0.5, min_rel), max_steps=steps,
                                       n_corrector=1, temperature=0.5,
                                       generator=torch.Generator().manual_seed(0), disable=True)

    def geometric():
        return ps.pc_sample(prior, y, mask, kpixel.OBS_VAR, ps.geometric_path(100.0, kpixel.S_END, levels)[:steps],
                            n_corrector=1, snr=0.1, temperature=0.5, generator=torch.Generator().manual_seed(0),
                            disable=True)

    guided()                                                           # warm-up
    (x_on, info_on), t_on = _time(guided)
    saved = GaussianBase.CACHE_MAX_DISTINCT
    GaussianBase.CACHE_MAX_DISTINCT = 0
    try:
        model.base._factor_cache = None
        (x_off, info_off), t_off = _time(guided)
    finally:
        GaussianBase.CACHE_MAX_DISTINCT = saved
    (_, info_geo), t_geo = _time(geometric)
    same = bool(torch.equal(x_on, x_off))
    per = lambda t, info: 1e3 * t / (chains * info["nfe"])             # ms per digit and NFE
    hw = runtime.describe_hardware(dev)
    setting = f"{chains} chains, k = {k}, first {steps} of {levels} steps, {threads} threads, {hw}, {name}"
    return [
        {"metric": "energy-guided k-pixel step: ms per digit and NFE, Σ-factor reuse on",
         "setting": f"{setting}; samples bit-identical to reuse off: {same}",
         "ours": round(per(t_on, info_on), 2), "goal": f"reuse off: {per(t_off, info_off):.2f}"},
        {"metric": "geometric PC k-pixel step: ms per digit and NFE (chains share Σ)",
         "setting": setting, "ours": round(per(t_geo, info_geo), 2), "goal": "reference for the row above"},
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    for row in rows(args.device, args.threads, args.steps):
        print(f"{row['metric']}: {row['ours']} ({row['goal']})\n    {row['setting']}")


if __name__ == "__main__":
    main()
