"""Burgers fields: the exact Cole–Hopf solution (checked by finite differences) and the spectral solver against it;
conservation of ∫u dx and the maximum principle; the dataset (shape, determinism, steepening); the PDE residual
(small for solver output, large for noisy or time-shuffled fields); the interpolation and super-resolution
baselines on smooth analytic fields."""
import math

import numpy as np
import pytest
import torch

from energy_utils import pde


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def fields():
    return pde.burgers_fields(16, seed=5, return_grid=True)


def _smooth_field(nt, nx, B=2):
    """Smooth analytic fields in pixel coordinates, periodic in x with period nx: (B, 1, nt, nx) float64."""
    i = torch.arange(nt, dtype=torch.float64)[:, None]
    theta = 2 * math.pi * torch.arange(nx, dtype=torch.float64)[None, :] / nx
    out = [torch.sin(theta + 0.04 * i + b) + 0.4 * torch.cos(2 * theta - 0.03 * i) * torch.exp(-i / (2 * nt))
           for b in range(B)]
    return torch.stack(out)[:, None]


def _random_mask(B, nt, nx, m, seed=0):
    g = _g(seed)
    mask = torch.zeros(B, nt * nx, dtype=torch.bool)
    for b in range(B):
        mask[b, torch.randperm(nt * nx, generator=g)[:m]] = True
    return mask.reshape(B, nt, nx)


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


# --- the exact solution and the solver ----------------------------------------------------------------------------
def test_cole_hopf_formula_satisfies_burgers_by_finite_differences():
    nu, a, h = 0.1, 1.2, 1e-3
    x = torch.rand(200, generator=_g(1), dtype=torch.float64) * 2 * math.pi
    t = torch.rand(200, generator=_g(2), dtype=torch.float64) * 2
    for sign, small in ((1, True), (-1, False)):                   # the opposite sign is *not* a solution
        u = lambda xx, tt: sign * pde.cole_hopf_solution(xx, tt, nu, a)
        u0 = u(x, t)
        u_t = (u(x, t + h) - u(x, t - h)) / (2 * h)
        u_x = (u(x + h, t) - u(x - h, t)) / (2 * h)
        u_xx = (u(x + h, t) - 2 * u0 + u(x - h, t)) / h ** 2
        r = (u_t + u0 * u_x - nu * u_xx).abs().max().item()
        scale = (u0 * u_x).abs().max().item()
        assert (r < 1e-6 * max(1, scale)) if small else (r > 0.1 * scale)
    assert pde.cole_hopf_solution(torch.tensor(1.0), 0.0, nu, a).item() > 0       # u > 0 on (0, π)


@pytest.mark.parametrize("nu,a,n", [(0.1, 1.2, 128), (0.05, 1.05, 256)])
def test_solver_reproduces_cole_hopf(nu, a, n):
    x = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
    t = torch.linspace(0, 1.0, 11, dtype=torch.float64)
    exact = pde.cole_hopf_solution(x[None, :], t[:, None], nu, a)
    assert exact.abs().max() > 0.2                                 # not trivially small
    u = pde.burgers_solve(exact[:1], nu, 1.0, 11)                 # automatic substeps (1 or 2 here)
    assert u.shape == (1, 11, n) and u.dtype == torch.float64
    assert _rel(u[0], exact) <= 1e-6                                # 4e-7 and 2e-7
    assert _rel(pde.burgers_solve(exact[:1], nu, 1.0, 11, substeps=5)[0], exact) <= 1e-7


def test_solver_conserves_the_mean_and_obeys_the_maximum_principle():
    u0 = pde.random_initial_conditions(8, 256, _g(3))
    u = pde.burgers_solve(u0, 0.05, 1.0, 21)
    means = u.mean(-1)
    assert (means - means[:, :1]).abs().max() < 1e-12
    assert torch.all(u.abs().amax((1, 2)) <= u0.abs().amax(1) * (1 + 1e-6))
    assert torch.equal(u[:, 0], u0)


def test_solver_guards_against_blow_up_and_bad_input():
    x = torch.arange(32, dtype=torch.float64) * 2 * math.pi / 32
    with pytest.raises(FloatingPointError, match="NaN"):
        pde.burgers_solve(50 * torch.sin(x)[None], 1e-3, 20.0, 3, substeps=1)
    with pytest.raises(ValueError, match="nu"):
        pde.burgers_solve(torch.sin(x)[None], 0.0, 1.0, 5)
    with pytest.raises(ValueError, match=r"\(B, n\)"):
        pde.burgers_solve(torch.sin(x), 0.1, 1.0, 5)
    with pytest.raises(ValueError, match="substeps"):
        pde.burgers_solve(torch.sin(x)[None], 0.1, 1.0, 5, substeps=0)
    with pytest.raises(ValueError, match="a must be"):
        pde.cole_hopf_solution(x, 0.0, 0.1, 0.9)


# --- dataset ------------------------------------------------------------------------------------------------------
def test_random_initial_conditions_are_deterministic_smooth_and_grid_independent():
    u = pde.random_initial_conditions(6, 512, _g(7))
    assert torch.equal(u, pde.random_initial_conditions(6, 512, _g(7)))
    assert not torch.allclose(u, pde.random_initial_conditions(6, 512, _g(8)))
    assert torch.allclose(u[:, ::8], pde.random_initial_conditions(6, 64, _g(7)), atol=1e-12)
    spec = torch.fft.rfft(u).abs()
    assert spec[:, 5:].max() < 1e-10 * spec.max()                  # modes 1 … 4 plus the mean only
    fluct = u - u.mean(1, keepdim=True)
    assert torch.allclose(fluct.pow(2).mean(1).sqrt(), torch.full((6,), pde.DEFAULT_AMPLITUDE, dtype=torch.float64))
    assert u.mean(1).abs().max() <= pde.DEFAULT_MEAN_RANGE


def test_fields_shape_grid_determinism_and_conservation(fields):
    F, grid = fields
    assert F.shape == (16, 1, 64, 64) and F.dtype == torch.float32
    assert grid == pde.BurgersGrid() and grid.dx == 2 * math.pi / 64 and grid.dt == 1.0 / 63
    assert grid.x.shape == (64,) and grid.t[-1].item() == 1.0
    again = pde.burgers_fields(4, seed=5, batch_size=3)   # a prefix of the larger draw, whatever the batch size
    assert torch.allclose(again, F[:4], atol=1e-6)
    m = pde.row_means(F)
    assert m.shape == (16, 64) and (m - m[:, :1]).abs().max() < 1e-6
    assert pde.row_means(pde.burgers_fields(4, seed=5, sampling="point")).std(1).max() > 1e-5   # aliasing


def test_fields_steepen_into_fronts(fields):
    F, _ = fields
    jump = (F.roll(-1, -1) - F).abs().amax(-1)[:, 0]                # steepest jump per pixel, (B, nt)
    assert (jump[:, -1] / jump[:, 0]).median() > 2                  # ~2.8 here, ~3.3 over 256 fields
    assert jump[:, -1].median() > 0.4


def test_cell_average_is_the_trapezoid_cell_mean():
    x = torch.arange(512, dtype=torch.float64) * 2 * math.pi / 512
    u = torch.stack([torch.cos(3 * x), torch.sin(5 * x) + 0.3])
    c = pde.cell_average(u, 8)
    X, dx = torch.arange(64, dtype=torch.float64) * 2 * math.pi / 64, 2 * math.pi / 64
    exact = torch.stack([torch.cos(3 * X) * math.sin(1.5 * dx) / (1.5 * dx),
                         torch.sin(5 * X) * math.sin(2.5 * dx) / (2.5 * dx) + 0.3])
    assert (c - exact).abs().max() < 1e-3
    assert torch.allclose(c.mean(-1), u.mean(-1), atol=1e-14)


# --- residual -----------------------------------------------------------------------------------------------------
def test_residual_of_the_exact_solution_vanishes_with_the_grid():
    errs = []
    for nx, nt in ((64, 51), (128, 101)):
        grid = pde.BurgersGrid(nx, nt, 1.0, 0.1)
        exact = pde.cole_hopf_solution(grid.x[None, :], grid.t[:, None], 0.1, 1.2)[None, None]
        r = pde.burgers_residual(exact, grid)
        assert r.shape == (1, nt - 2, nx)
        errs.append(pde.residual_norm(exact[:, 0], grid).item())
    assert errs[0] < 2e-3 and 3.5 < errs[0] / errs[1] < 4.5         # second order (1e-3, ratio 3.9)


def test_residual_separates_solutions_from_noisy_and_shuffled_fields(fields):
    F, grid = fields
    clean = pde.residual_norm(F, grid)
    noisy = pde.residual_norm(F + 0.01 * torch.randn(F.shape, generator=_g(4)), grid)
    shuffled = pde.residual_norm(F[:, :, torch.randperm(64, generator=_g(5))], grid)
    assert clean.shape == (16,)
    # the floor of the clean fields is the FD error at fronts 1–2 pixels wide: median 0.1 against 0.46 here
    assert clean.median() < noisy.median() / 3 and torch.all(clean < noisy)
    assert torch.all(clean < shuffled)
    with pytest.raises(ValueError, match="grid"):
        pde.burgers_residual(F[:, :, :32], grid)


# --- baselines ----------------------------------------------------------------------------------------------------
def test_cubic_interpolation_dense_sensors_periodic_and_exact_at_sensors():
    truth = _smooth_field(32, 32)
    mask = _random_mask(2, 32, 32, 400)
    rec = pde.cubic_interpolation(truth.shape, mask, truth)
    assert rec.shape == truth.shape and rec.dtype == torch.float64
    assert _rel(rec, truth) < 2e-2                                  # 0.9 %, most of it in the first/last rows
    assert (rec - truth)[:, 0][mask].abs().max() < 1e-12
    assert (rec - truth)[..., [0, -1]].abs().max() < 0.1            # the wrap-around columns
    packed = torch.stack([truth[b, 0][mask[b]] for b in range(2)])      # values given as (B, m)
    assert torch.allclose(pde.cubic_interpolation(truth.shape, mask, packed), rec)
    shared = pde.cubic_interpolation(truth.shape, mask[0], truth)       # one mask for every field
    assert torch.allclose(shared[0], rec[0])


def test_cubic_interpolation_fills_outside_the_hull_and_prefers_physical_coordinates(fields):
    F, grid = fields
    F = F[:6].double()
    mask = _random_mask(6, 64, 64, 400, seed=2)
    mask[:, :3] = False                                             # no sensor before t_3: outside the hull
    pixel = pde.cubic_interpolation(F.shape, mask, F)
    physical = pde.cubic_interpolation(F.shape, mask, F, grid=grid)
    assert torch.isfinite(pixel).all() and torch.isfinite(physical).all()
    inner = slice(6, -6)
    assert _rel(physical[..., inner, :], F[..., inner, :]) < 0.6 * _rel(pixel[..., inner, :], F[..., inner, :])
    assert (physical - F)[:, 0][mask].abs().max() < 1e-12
    with pytest.raises(ValueError, match="grid"):
        pde.cubic_interpolation((6, 1, 64, 32), mask[..., :32], F[..., :32], grid=grid)


def test_gp_regression_dense_sensors_and_exact_at_sensors():
    truth = _smooth_field(32, 32)
    mask = _random_mask(2, 32, 32, 250, seed=1)
    mean, std = pde.gp_regression(truth.shape, mask, truth, return_std=True)
    assert mean.shape == std.shape == truth.shape
    assert _rel(mean, truth) < 1e-3
    assert (mean - truth)[:, 0][mask].abs().max() < 1e-3
    assert std[:, 0][mask].mean() < std[:, 0][~mask].mean()
    flat = pde.gp_regression(truth[:1].shape, mask[:1], truth[:1], periodic=False)
    assert _rel(flat, truth[:1]) < 1e-3


def test_superresolution_baselines_on_block_means():
    truth = _smooth_field(48, 48)
    coarse = pde.block_means(truth, 3)
    assert coarse.shape == (2, 1, 16, 16)
    assert torch.allclose(coarse[0, 0, 0, 0], truth[0, 0, :3, :3].mean())
    up = pde.upsample_cubic(coarse, 3)
    assert up.shape == truth.shape
    assert torch.allclose(up[..., 1::3, 1::3], coarse, atol=1e-12)   # odd factor: centres are pixels
    assert _rel(up, truth) < 2e-2
    gp = pde.gp_upsample(coarse[:1], 3)
    assert (gp[..., 1::3, 1::3] - coarse[:1]).abs().max() < 1e-3
    assert _rel(gp, truth[:1]) < 2e-2
    x = 2 * math.pi * pde.block_centres(16, 4) / 64                       # even factor, centres between pixels
    wave = torch.from_numpy(np.sin(x))[None, :].expand(16, 16)
    assert torch.allclose(pde.upsample_cubic(wave, 4)[0], torch.sin(2 * math.pi * torch.arange(64.) / 64).double(),
                          atol=1e-3)


def test_baselines_reject_bad_input():
    truth = _smooth_field(16, 16)
    with pytest.raises(ValueError, match="boolean"):
        pde.cubic_interpolation(truth.shape, torch.ones(16, 16), truth)
    with pytest.raises(ValueError, match="mask"):
        pde.cubic_interpolation(truth.shape, torch.ones(8, 16, dtype=torch.bool), truth)
    with pytest.raises(ValueError, match="values"):
        pde.gp_regression(truth.shape, _random_mask(2, 16, 16, 20), torch.zeros(2, 7))
    with pytest.raises(ValueError, match="divisible"):
        pde.block_means(truth, 5)
