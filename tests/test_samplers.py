"""The coarse-to-fine sampler: schedule formulas, per-chain stopping, guards, and correctness with an exact
blind denoiser of a high-dimensional Gaussian (where the true prior is known)."""
import math
import warnings

import pytest
import torch
from torch import nn

from energy_utils import operators as O
from energy_utils import engine
from energy_utils import samplers as S

D, MU, C = 256, 0.3, 0.2          # prior x ~ N(MU·1, C² I) in D dimensions


def blind_gaussian_denoiser(y):
    """Exact posterior mean for N(MU, C²I) with the noise variance estimated blindly from y itself."""
    r = y - MU
    tot = r.flatten(1).pow(2).mean(1).clamp_min(C ** 2 * 1.0001)          # ≈ C² + σ²
    return MU + (C ** 2 / tot).view(-1, *([1] * (y.ndim - 1))) * r


def test_schedule_and_idealised_counts():
    assert engine.step_size(1, 0.01) == pytest.approx(0.01)
    assert engine.step_size(100, 0.01) == pytest.approx(100 / 199)
    assert engine.noise_scale(0.3, 1.0, 2.0) == 0.0                             # beta = 1: no injected noise
    h, b, s = 0.2, 0.5, 0.7                                                # bracket multiplies the difference
    assert engine.noise_scale(h, b, s) == pytest.approx(s * math.sqrt((1 - b * h) ** 2 - (1 - h) ** 2))
    assert [S.idealized_iterations(b) for b in (0.5, 0.1, 0.01)] == [47, 127, 661]
    assert S.idealized_iterations(0.1, fixed_h=True) == 4603
    with pytest.raises(ValueError, match="beta"):
        S.idealized_iterations(0.0)


def test_synthesis_recovers_the_prior_and_counts_nfe():
    g = torch.Generator().manual_seed(0)
    res = S.ks_sample(blind_gaussian_denoiser, (32, 1, 16, 16), beta=0.5, generator=g, disable=True)
    assert all(s == "converged" for s in res.status)
    assert torch.equal(res.nfe, res.n_updates + 1)
    x = res.x.flatten(1)
    assert abs(x.mean().item() - MU) < 0.02
    assert abs(x.std(1).mean().item() - C) < 0.03                         # samples, not the mean
    # chains stop on their own; the idealised law (47) assumes a denoiser that removes all the noise, this
    # full-dimensional Gaussian keeps a fraction C²/(C²+σ²) of it, so ‖f‖ underestimates σ and it stops earlier
    assert 20 <= res.nfe.float().mean().item() <= 60 and res.nfe.min() < res.nfe.max()
    assert res.sigma.max().item() < 0.01
    assert res.sigma_trace.shape == (int(res.nfe.max()), 32)


def test_inverse_problem_is_consistent_and_guards_work():
    g = torch.Generator().manual_seed(1)
    op = O.RandomPixels((1, 16, 16), 0.3, g)
    x = MU + C * torch.randn(4, 1, 16, 16, generator=g)
    xc = op.M_T(x)
    res = S.ks_sample(blind_gaussian_denoiser, operator=op, measurement=xc, beta=0.2, generator=g, disable=True)
    assert all(s == "converged" for s in res.status)
    assert (op.M_T(res.y) - xc).pow(2).mean().sqrt() < 0.02              # data term pins the measured subspace
    capped = S.ks_sample(blind_gaussian_denoiser, (3, 1, 8, 8), beta=0.01, max_iter=5, generator=g, disable=True)
    assert capped.status == ["max_iter"] * 3 and capped.nfe.tolist() == [5, 5, 5]
    explode = lambda y: 10 * y                                              # a broken denoiser
    with pytest.warns(UserWarning, match="denoiser convention"):
        bad = S.ks_sample(explode, (2, 1, 8, 8), beta=0.5, generator=g, disable=True)
    assert bad.status == ["diverged"] * 2 and bad.nfe.tolist() == [1, 1]


def test_fixed_step_is_much_slower_and_callback_sees_every_iteration():
    g = torch.Generator().manual_seed(2)
    seen = []
    ramp = S.ks_sample(blind_gaussian_denoiser, (4, 1, 16, 16), beta=0.5, generator=g, disable=True,
                       callback=lambda info: seen.append(int(info["active"].sum())))
    fixed = S.ks_sample(blind_gaussian_denoiser, (4, 1, 16, 16), beta=0.5, fixed_h=True, generator=g, disable=True)
    assert len(seen) == int(ramp.nfe.max()) and seen[-1] == 0
    assert fixed.nfe.float().mean() > 8 * ramp.nfe.float().mean()
    mean, std = S.posterior_summary(ramp.x, 2)
    assert mean.shape == (2, 1, 16, 16) and (std >= 0).all()


def test_vector_data_synthesis():
    g = torch.Generator().manual_seed(3)
    res = S.ks_sample(blind_gaussian_denoiser, (8, D), beta=0.5, generator=g, disable=True)
    assert res.x.shape == (8, D) and all(s == "converged" for s in res.status)
    assert abs(res.x.mean().item() - MU) < 0.03


def test_stalled_chain_stops_and_returns_its_best_estimate():
    calls = {"n": 0}

    def breaks_down(y):                       # a good denoiser that starts amplifying after 40 calls
        calls["n"] += 1
        return blind_gaussian_denoiser(y) if calls["n"] <= 40 else y + 0.5 * (y - MU)

    g = torch.Generator().manual_seed(4)
    res = S.ks_sample(breaks_down, (2, 1, 16, 16), beta=0.1, generator=g, disable=True)
    assert res.status == ["stalled"] * 2
    assert torch.isfinite(res.x).all() and res.x.abs().max() < 2       # the estimate before the breakdown
    assert (res.info["sigma_best"] < res.sigma).all()


def test_a_chain_does_not_depend_on_its_batch():
    """Chain b's noise (y₀'s included) is its own stream: alone, in a batch where the others stop earlier or
    later (or hit max_iter), or at another position, it gives the same x, y, NFE and status, bit for bit."""
    shape = (3, 1, 8, 8)
    free = S.ks_sample(blind_gaussian_denoiser, shape, seed=11, disable=True)
    assert len(set(free.nfe.tolist())) == 3                                # the chains stop at different times
    cap = sorted(free.nfe.tolist())[1]
    batch = S.ks_sample(blind_gaussian_denoiser, shape, seed=11, max_iter=cap, disable=True)
    assert sorted(batch.status) == ["converged", "converged", "max_iter"]
    seeds = batch.info["chain_seeds"]
    assert seeds == [engine.chain_seed(11, b) for b in range(3)]
    for b in range(3):
        alone = S.ks_sample(blind_gaussian_denoiser, (1, 1, 8, 8), chain_seeds=seeds[b:b + 1], max_iter=cap,
                            disable=True)
        assert torch.equal(alone.x[0], batch.x[b]) and torch.equal(alone.y[0], batch.y[b])
        assert int(alone.nfe) == int(batch.nfe[b]) and alone.status[0] == batch.status[b]
    reverse = S.ks_sample(blind_gaussian_denoiser, shape, chain_seeds=seeds[::-1], max_iter=cap, disable=True)
    assert torch.equal(reverse.x.flip(0), batch.x) and reverse.status[::-1] == batch.status
    again = S.ks_sample(blind_gaussian_denoiser, shape, seed=11, max_iter=cap, disable=True)
    other = S.ks_sample(blind_gaussian_denoiser, shape, seed=12, max_iter=cap, disable=True)
    assert torch.equal(again.x, batch.x) and torch.equal(again.nfe, batch.nfe)
    assert (other.x - batch.x).abs().amax(dim=(1, 2, 3)).min() > 0.1      # every chain differs


def test_a_posterior_chain_does_not_depend_on_its_batch():
    g = torch.Generator().manual_seed(5)
    op = O.RandomPixels((1, 8, 8), 0.3, g)
    xc = op.M_T(MU + C * torch.randn(3, 1, 8, 8, generator=g))
    batch = S.ks_sample(blind_gaussian_denoiser, operator=op, measurement=xc, seed=2, disable=True)
    alone = S.ks_sample(blind_gaussian_denoiser, operator=op, measurement=xc[1:2],
                        chain_seeds=batch.info["chain_seeds"][1:2], disable=True)
    assert torch.equal(alone.x[0], batch.x[1]) and int(alone.nfe) == int(batch.nfe[1])


def test_generator_is_still_accepted_and_reproducible():
    run = lambda: S.ks_sample(blind_gaussian_denoiser, (3, 1, 8, 8), generator=torch.Generator().manual_seed(4),
                              disable=True)
    a, b = run(), run()
    assert torch.equal(a.x, b.x) and a.info["chain_seeds"] == b.info["chain_seeds"]
    with pytest.raises(ValueError, match="at most one"):
        S.ks_sample(blind_gaussian_denoiser, (3, 1, 8, 8), seed=1, generator=torch.Generator(), disable=True)


def test_beta_defaults_by_mode():
    """KS2021: β = 0.5 for synthesis, 0.01 for inverse problems; forgetting β must not silently give 0.5."""
    syn = S.ks_sample(blind_gaussian_denoiser, (2, 1, 16, 16), seed=0, disable=True)
    assert syn.info["beta"] == 0.5 and "synthesis" in syn.info["beta_rule"]
    g = torch.Generator().manual_seed(1)
    op = O.RandomPixels((1, 16, 16), 0.3, g)
    xc = op.M_T(MU + C * torch.randn(2, 1, 16, 16, generator=g))
    inv = S.ks_sample(blind_gaussian_denoiser, operator=op, measurement=xc, seed=0, disable=True)
    assert inv.info["beta"] == 0.01 and "inverse" in inv.info["beta_rule"]
    assert inv.info["max_iter"] == 3 * S.idealized_iterations(0.01) + 100
    given = S.ks_sample(blind_gaussian_denoiser, operator=op, measurement=xc, beta=0.5, seed=0, disable=True)
    assert given.info["beta"] == 0.5 and given.info["beta_rule"] == "given"
    assert inv.nfe.float().mean() > 1.5 * given.nfe.float().mean()         # the small β takes smaller steps


def test_denoiser_convention_guard():
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                      # a right denoiser: silent
        ok = S.ks_sample(blind_gaussian_denoiser, (4, 1, 16, 16), seed=0, disable=True)
    assert 0.5 < ok.info["sigma0_ratio"] < 1.5
    residual = lambda y: blind_gaussian_denoiser(y) - y                      # returns f(y)
    noise = lambda y: y - blind_gaussian_denoiser(y)                         # returns −f(y), as KS2021's net
    with pytest.warns(UserWarning, match=r"residual f\(y\)") as caught:
        bad = S.ks_sample(residual, (4, 1, 16, 16), seed=0, disable=True)
    assert sum("denoiser convention" in str(w.message) for w in caught) == 1  # once per run
    assert bad.info["sigma0_ratio"] > 1.5 and not any(s == "converged" for s in bad.status)
    g = torch.Generator().manual_seed(1)
    op = O.RandomPixels((1, 16, 16), 0.3, g)
    xc = op.M_T(MU + C * torch.randn(2, 1, 16, 16, generator=g))
    with pytest.warns(UserWarning, match=r"y - net\(y\)"):               # also with a measurement
        S.ks_sample(noise, operator=op, measurement=xc, seed=0, max_iter=50, disable=True)


class ModeProbe(nn.Module):
    """Records the training flags it is called with; raises after ``fail_after`` calls (to test the restore)."""

    def __init__(self, fail_after=None):
        super().__init__()
        self.inner = nn.Identity()
        self.seen, self.calls, self.fail_after = set(), 0, fail_after

    def forward(self, y):
        self.calls += 1
        self.seen.add((self.training, self.inner.training))
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("boom")
        return blind_gaussian_denoiser(self.inner(y))


def test_denoiser_runs_in_eval_mode_and_modes_are_restored():
    den = ModeProbe()
    den.train()
    den.inner.eval()                                     # a submodule with its own mode (e.g. frozen batch norm)
    S.ks_sample(den, (2, 1, 8, 8), seed=0, disable=True)
    assert den.seen == {(False, False)}
    assert den.training and not den.inner.training      # each module gets its own flag back
    failing = ModeProbe(fail_after=3)
    failing.train()
    with pytest.raises(RuntimeError, match="boom"):
        S.ks_sample(failing, (2, 1, 8, 8), seed=0, disable=True)
    assert failing.calls == 4 and failing.training and failing.inner.training


class ConvGaussian(nn.Module):
    """The exact blind denoiser of N(MU, C²I) with its linear part in a 1×1 convolution (autocast acts on it)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        nn.init.ones_(self.conv.weight)
        self.dtypes = set()

    def forward(self, y):
        r = y - MU
        tot = r.flatten(1).pow(2).mean(1).clamp_min(C ** 2 * 1.0001)
        lin = self.conv(r)
        self.dtypes.add(lin.dtype)
        return MU + (C ** 2 / tot).view(-1, 1, 1, 1) * lin


def test_bf16_autocast_runs_and_stays_close():
    den = ConvGaussian()
    ref = S.ks_sample(den, (8, 1, 16, 16), seed=3, disable=True)
    assert den.dtypes == {torch.float32}
    den.dtypes.clear()
    low = S.ks_sample(den, (8, 1, 16, 16), seed=3, autocast_dtype=torch.bfloat16, disable=True)
    assert den.dtypes == {torch.bfloat16}                                    # the forward ran in bf16 ...
    assert low.x.dtype == torch.float32 and low.info["autocast_dtype"] == torch.bfloat16
    assert all(s == "converged" for s in low.status)
    assert (low.nfe - ref.nfe).abs().max() <= 2
    diff = (low.x - ref.x).abs().max().item()
    assert 0 < diff < 0.02                                                   # ... and changed little
    y = 0.5 + torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    one = engine.DenoiserSource(den, autocast_dtype=torch.bfloat16)(y, torch.arange(4))
    assert torch.allclose(one.estimate, engine.DenoiserSource(den)(y, torch.arange(4)).estimate, atol=1e-2)
    with pytest.raises(ValueError, match="autocast_dtype"):
        engine.DenoiserSource(den, autocast_dtype=torch.int8)


def test_posterior_mean_mse_estimate_removes_the_finite_sample_excess():
    """For exact samples x ~ N(m, s²I) around a posterior mean m, the estimate recovers ‖m − x*‖²/N while the
    mean of k samples carries an extra s²/k."""
    g = torch.Generator().manual_seed(0)
    B, k, N, s = 400, 4, 64, 0.3
    clean = torch.randn(B, N, generator=g)
    m = clean + 0.1 * torch.randn(B, N, generator=g)                     # posterior means, MMSE = 0.01
    samples = (m[:, None] + s * torch.randn(B, k, N, generator=g)).reshape(B * k, N)
    naive = (S.posterior_summary(samples, k)[0] - clean).pow(2).mean().item()
    est = S.posterior_mean_mse_estimate(samples, k, clean).mean().item()
    assert abs(naive - (0.01 + s**2 / k)) < 0.002 and abs(est - 0.01) < 0.002
    with pytest.raises(ValueError, match="n_samples >= 2"):
        S.posterior_mean_mse_estimate(samples, 1, clean)


def test_ks_sample_with_a_task_energy_keeps_the_measurement_and_lowers_the_task_energy():
    """The hybrid inside the projected sampler: a task energy pulling the unmeasured entries towards a target (one
    per chain) lowers that energy for every chain, while the measured entries still converge onto x_c."""
    shape = (1, 1, 12)
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[..., :3] = True
    op = O.PixelMask(mask)
    B = 4
    xc = torch.full((B, 3), 0.25)
    target = torch.linspace(0.5, 1.0, B)
    shrink = lambda y: 0.9 * y                                          # a shrinking "denoiser": σ̂ falls to zero
    energy = lambda t, y: 0.5 * (y - t.view(-1, 1, 1, 1)).pow(2).flatten(1)[:, 3:].sum(1)
    kw = dict(operator=op, measurement=xc, seed=0, disable=True, max_iter=2000)
    plain = S.ks_sample(shrink, **kw)
    task = S.ks_sample(shrink, task_energy=energy, task_inputs=target, task_weight=10.0, **kw)
    assert task.status == ["converged"] * B
    assert (op.M_T(task.y) - xc).abs().max() < 0.05
    assert (energy(target, task.y) < energy(target, plain.y)).all()
    unit = S.ks_sample(shrink, task_energy=energy, task_inputs=target, task_weight=0.5, task_scale="unit", **kw)
    assert unit.info["task_scale"] == "unit" and (op.M_T(unit.y) - xc).abs().max() < 0.05
    assert (energy(target, unit.y) < 0.1 * energy(target, plain.y)).all()      # a hard constraint at the end
    with pytest.raises(ValueError, match="one row per chain"):
        S.ks_sample(shrink, task_energy=energy, task_inputs=target[:2], **kw)
