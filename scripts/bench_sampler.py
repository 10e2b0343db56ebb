"""Overhead of the Kadkhodaie–Simoncelli sampler loop, ``energy_utils.samplers.ks_sample`` (printed, never asserted).

    overhead = wall time of the sampling runs ÷ time spent inside the denoiser's forward during those runs

i.e. wall time per iteration over in-loop forward time per iteration; everything above 1 is the loop's own work
(σ̂, schedule, stop tests, noise, updates, traces). Goals (issue 16): ≤ 1.10 at batch 1, ≤ 1.03 at batch 64.
Both rows run in one process, side by side, with the committed MNIST denoiser of notebook 03
(data/checkpoints/03_bf_cnn_mnist.pt, a 75k-parameter bias-free CNN; a random network of the same shape, capped
at 60 iterations, when the checkpoint is missing), synthesis with KS2021's defaults (β = 0.5, h₀ = 0.01, σ_L = 0.01),
``record=True`` (the default), one torch thread so that the numbers hold while another job uses the other core.

    python scripts/bench_sampler.py [--device auto]        # prints the table
    from scripts.bench_sampler import rows                  # [{"metric", "setting", "ours", "goal"}, ...]
"""
from __future__ import annotations

import argparse
import time

import torch

from energy_utils import checkpoints, denoisers, networks, runtime
from energy_utils.samplers import ks_sample

#: (batch, number of runs, goal on the overhead)
CASES = ((1, 10, 1.10), (64, 1, 1.03))


def _model(device):
    """The committed MNIST denoiser (or a random one of the same shape) and a short description."""
    if checkpoints.has_checkpoint("03_bf_cnn_mnist", "full"):
        model, _ = denoisers.load_denoiser("03_bf_cnn_mnist", "full", device)
        name = "03_bf_cnn_mnist"
    else:
        torch.manual_seed(0)
        model = networks.DenoiserCNN(1, 10, 32).to(device).eval()
        name = "random DenoiserCNN(depth 10, width 32) (no committed weights)"
    n_params = sum(p.numel() for p in model.parameters())
    return model, f"{name} ({n_params / 1e3:.0f}k parameters)", name == "03_bf_cnn_mnist"


def overhead(model, batch: int, n_runs: int, device, max_iter: int | None = None) -> dict:
    """Run ``ks_sample`` ``n_runs`` times at ``batch`` (seeds 0, 1, …) and time the denoiser's forward inside."""
    spent = {"forward": 0.0}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(y):
        sync()
        t0 = time.perf_counter()
        out = model(y)
        sync()
        spent["forward"] += time.perf_counter() - t0
        return out

    ks_sample(model, (batch, 1, 28, 28), seed=1000, max_iter=5, disable=True)       # warm-up (allocations)
    iterations = evaluations = 0
    t0 = time.perf_counter()
    for seed in range(n_runs):
        r = ks_sample(timed, (batch, 1, 28, 28), seed=seed, max_iter=max_iter, disable=True)
        iterations += r.batched_calls
        evaluations += int(r.nfe.sum())
    sync()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "forward_s": spent["forward"], "iterations": iterations, "evaluations": evaluations,
            "ratio": wall / spent["forward"]}


def rows(device: str = "auto", threads: int = 1) -> list[dict]:
    """One row per batch size: {"metric", "setting", "ours", "goal"} (``ours`` the measured overhead ratio)."""
    torch.set_num_threads(threads)
    dev = runtime.pick_device(device)
    model, which, trained = _model(dev)
    out = []
    for batch, n_runs, goal in CASES:
        m = overhead(model, batch, n_runs, dev, max_iter=None if trained else 60)
        its = m["iterations"]
        out.append({
            "metric": "ks_sample overhead: wall per iteration / in-loop denoiser forward",
            "setting": (f"batch {batch}, {threads} thread, {runtime.describe_hardware(dev)}, {which}, MNIST synthesis "
                        f"β=0.5, {n_runs} run{'s' if n_runs > 1 else ''} = {m['iterations']} iterations "
                        f"({m['evaluations']} chain evaluations); forward {1e3 * m['forward_s'] / its:.2f} ms/it, "
                        f"loop {1e3 * (m['wall_s'] - m['forward_s']) / its:.2f} ms/it"),
            "ours": round(m["ratio"], 3),
            "goal": f"<= {goal:.2f}",
        })
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    for row in rows(args.device, args.threads):
        print(f"{row['metric']}: {row['ours']:.3f} (goal {row['goal']})\n    {row['setting']}")


if __name__ == "__main__":
    main()
