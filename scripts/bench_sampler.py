"""Benchmark of energy_utils.samplers.ks_sample (printed, never asserted).

1. Sampler overhead: wall time of a run divided by the time spent inside the denoiser, and the issue's stricter
   definition wall / (number of batched calls × one forward at the full batch). Goal: ≤ 1.10.
2. Throughput: one batched run of B chains vs B single-chain runs (the single-chain runs are timed on a subset
   and extrapolated, which the output says).

Uses the committed MNIST denoiser of notebook 03 (data/checkpoints/03_bf_cnn_mnist.pt) when present, else a
randomly initialised network of the same shape (then the chains do not converge; capped by --max-iter).

    python scripts/bench_sampler.py [--batch 64] [--beta 0.5] [--singles 8] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from energy_utils import checkpoints, denoisers, networks, runtime
from energy_utils.samplers import ks_sample


class Timed(torch.nn.Module):
    """Wraps a denoiser and accumulates the time spent in its forward calls."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seconds, self.calls = model, 0.0, 0

    def forward(self, y):
        t0 = time.perf_counter()
        out = self.model(y)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--singles", type=int, default=8, help="single-chain runs actually timed (extrapolated to --batch)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-iter", type=int, default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    threads = runtime.configure_threads(args.threads)
    device = runtime.pick_device(args.device)
    if checkpoints.has_checkpoint("03_bf_cnn_mnist", "full"):
        model, _ = denoisers.load_denoiser("03_bf_cnn_mnist", "full", device)
        which = "committed 03_bf_cnn_mnist"
    else:
        torch.manual_seed(0)
        model = networks.DenoiserCNN(1, 10, 32).to(device).eval()
        which = "random DenoiserCNN(10 x 32) (no committed weights found)"
    print(f"device {runtime.describe_hardware(device)}, torch threads {threads}; denoiser: {which}")
    B, shape = args.batch, (args.batch, 1, 28, 28)

    # one forward at the full batch
    y = torch.rand(shape, device=device)
    with torch.no_grad():
        for _ in range(3):
            model(y)
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            model(y)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    t_fwd = statistics.median(times)
    print(f"one forward, batch {B}: {t_fwd * 1e3:.2f} ms (median of 10)")

    timed = Timed(model)
    g = torch.Generator(device="cpu").manual_seed(0)
    t0 = time.perf_counter()
    res = ks_sample(timed, shape, beta=args.beta, generator=g, max_iter=args.max_iter, disable=True)
    wall = time.perf_counter() - t0
    print(f"batched run: {B} chains, beta={args.beta}: wall {wall:.2f} s, {res.batched_calls} batched calls, "
          f"NFE per chain mean {res.nfe.float().mean():.1f} (min {int(res.nfe.min())}, max {int(res.nfe.max())}), "
          f"converged {res.status.count('converged')}/{B}")
    print(f"  overhead = wall / time inside the denoiser            = {wall / timed.seconds:.3f}  (goal <= 1.10)")
    print(f"  overhead = wall / (batched calls x full-batch forward) = {wall / (res.batched_calls * t_fwd):.3f}  "
          f"(chains that stopped shrink later batches, so this can fall below 1)")

    n = min(args.singles, B)
    t0 = time.perf_counter()
    single_nfe = 0
    for i in range(n):
        gi = torch.Generator(device="cpu").manual_seed(100 + i)
        r = ks_sample(model, (1, 1, 28, 28), beta=args.beta, generator=gi, max_iter=args.max_iter, disable=True)
        single_nfe += int(r.nfe.sum())
    single = time.perf_counter() - t0
    est = single / n * B
    print(f"single-chain runs: {n} timed ({single:.2f} s, {single_nfe / n:.1f} NFE each), extrapolated to {B}: "
          f"{est:.2f} s")
    print(f"  throughput: batched {B / wall:.2f} chains/s vs single {n / single:.2f} chains/s "
          f"-> speed-up {est / wall:.2f}x")


if __name__ == "__main__":
    main()
