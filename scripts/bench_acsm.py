"""Cost of A-CSM and of energy gradients (printed, never asserted).

1. One training step with A-DSM + A-CSM over one with A-DSM alone (goal ≤ 1.15×): both use one
   ``torch.autograd.grad`` call with ``create_graph=True`` (the dual step asks it for ∂U/∂log v too) and one
   ``backward``.
2. ∇_yU (a forward and a backward pass of the energy) over a plain denoiser forward of the same backbone
   (D = y − Σ s_θ(y, Σ) under ``no_grad``), at inference.

Models: notebook 08's MNIST ``ImageEnergy`` (batch 32, 28×28) and its mixture ``VectorEnergy`` (d = 16, batch 256).
Run: ``ENERGY_THREADS=1 .venv/bin/python scripts/bench_acsm.py`` (the numbers depend on the machine and its load).
"""
from __future__ import annotations

import statistics
import time

import torch

from energy_utils.covariances import CovFamily
from energy_utils.energy_models import ImageEnergy, VectorEnergy, energy_and_scores
from energy_utils.runtime import configure_threads, describe_hardware, pick_device
from energy_utils.score_losses import score_matching_loss


def timeit(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def bench(name, model, x, cov, repeats):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)

    def step(dual):
        def run():
            loss, _ = score_matching_loss(model, x, cov, dual=dual, generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    t_single = timeit(step(False), repeats)
    t_dual = timeit(step(True), repeats)
    y = x + cov.sample(1 if x.ndim == 2 else x.shape[1], g).to(x.device)

    def grad_y():
        energy_and_scores(model, y, cov, cov_score=False)

    def grad_both():
        energy_and_scores(model, y, cov, cov_score=True)

    @torch.no_grad()
    def plain():
        y - cov.apply(model.s_theta(y, cov))

    t_plain, t_gy, t_both = timeit(plain, repeats), timeit(grad_y, repeats), timeit(grad_both, repeats)
    print(f"\n{name}  ({sum(p.numel() for p in model.parameters()):,} parameters, batch {x.shape[0]})")
    print(f"  training step, A-DSM only        : {1e3 * t_single:8.1f} ms")
    print(f"  training step, A-DSM + A-CSM     : {1e3 * t_dual:8.1f} ms   ratio {t_dual / t_single:.2f}x (goal <= 1.15x)")
    print(f"  plain denoiser forward (no grad) : {1e3 * t_plain:8.1f} ms")
    print(f"  grad_y U (forward + backward)    : {1e3 * t_gy:8.1f} ms   ratio {t_gy / t_plain:.2f}x over the plain forward")
    print(f"  grad_y U and dU/dlog v, one call : {1e3 * t_both:8.1f} ms   ratio {t_both / t_gy:.2f}x over grad_y alone")


def main():
    configure_threads()
    device = pick_device("auto")
    print(f"device: {describe_hardware(device)}; torch {torch.__version__}")
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    fam = CovFamily(var_min=1e-4, var_max=1e3)
    img = ImageEnergy().to(device)
    torch.nn.init.normal_(img.out.weight, std=0.01)
    x = torch.rand(32, 1, 28, 28, generator=g).to(device)
    bench("MNIST ImageEnergy", img, x, fam.sample(32, (1, 28, 28), g).to(device=device), repeats=8)
    vec = VectorEnergy(16, width=128).to(device)
    torch.nn.init.normal_(vec.out.weight, std=0.01)
    x = torch.randn(256, 16, generator=g).to(device)
    bench("mixture VectorEnergy d=16", vec, x, fam.sample(256, (16,), g).to(device=device), repeats=20)


if __name__ == "__main__":
    main()
