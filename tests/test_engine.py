"""The unified engine reproduces the Kadkhodaie–Simoncelli sampler and IREM's descent step for step."""
import pytest
import torch

from energy_utils import engine, irem, operators, samplers


class ShrinkDenoiser(torch.nn.Module):
    """A blind 'denoiser' with a learnable-free closed form: pulls y towards 0.5 by a factor depending on ‖y−0.5‖."""

    def forward(self, y):
        c = y - 0.5
        return 0.5 + c * (0.3 / (0.3 + c.flatten(1).pow(2).mean(1).sqrt())).view(-1, *[1] * (y.dim() - 1))


def ks_initial_state(shape, seed, operator=None, measurement=None):
    g = torch.Generator().manual_seed(seed)
    mean = torch.full(shape, 0.5) if operator is None else operator.init_mean(measurement, 0.5)
    return mean + torch.randn(shape, generator=g), g


@pytest.mark.parametrize("inverse", [False, True])
def test_engine_matches_ks_sample_bitwise(inverse):
    shape = (6, 1, 8, 8)
    den = ShrinkDenoiser()
    op = meas = None
    if inverse:
        op = operators.RandomPixels(shape[1:], 0.3, torch.Generator().manual_seed(1))
        meas = op.M_T(torch.rand(shape, generator=torch.Generator().manual_seed(2)))
    beta = 0.01 if inverse else 0.5
    ref = samplers.ks_sample(den, None if inverse else shape, operator=op, measurement=meas, beta=beta,
                             generator=torch.Generator().manual_seed(7), disable=True)
    y0, g = ks_initial_state(shape, 7, op, meas)
    src = engine.DenoiserSource(den, op, meas)
    res = engine.iterate(src, y0, engine.AdaptiveSchedule(beta=beta), max_iter=ref.info["max_iter"],
                         diverge_sigma=ref.info["diverge_sigma"], generator=g, disable=True)
    assert torch.equal(res.n_evals, ref.nfe)
    assert torch.equal(res.y, ref.y) and torch.equal(res.estimate, ref.x)
    assert all(s == "stopped" for s in res.status) and all(s == "converged" for s in ref.status)


class QuadraticEnergy(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.A = torch.nn.Linear(d, d, bias=False)

    def forward(self, x, y):
        return 0.5 * ((self.A(y) - x) ** 2).sum(1)


@pytest.mark.parametrize("tol", [None, 1e-4])
def test_engine_matches_irem_descend(tol):
    torch.manual_seed(0)
    E = QuadraticEnergy(5)
    x = torch.randn(8, 5)
    y0 = torch.randn(8, 5)
    ref = irem.descend(E, x, y0, step_size=0.1, n_steps=40, tol=tol)
    res = engine.iterate(engine.EnergySource(E, x, scale=0.1), y0, engine.FixedSchedule(40, tol=tol), disable=True)
    assert torch.equal(res.n_updates, ref.steps)
    if tol is None:
        assert torch.equal(res.y, ref.y)
        assert torch.allclose(res.energy_trace, ref.energies.double(), rtol=1e-6)
    else:
        assert torch.allclose(res.y, ref.y, atol=1e-6)


def test_schedules_cross_over_and_guard():
    torch.manual_seed(0)
    E = QuadraticEnergy(5)
    x = torch.randn(4, 5)
    res = engine.iterate(engine.EnergySource(E, x, scale=0.1), torch.randn(4, 5),
                         engine.AdaptiveSchedule(beta=0.5, sigma_L=1e-3), generator=torch.Generator().manual_seed(0),
                         max_iter=50, disable=True)
    assert res.n_evals.max() <= 50 and set(res.status) <= {"stopped", "max_iter"}
    den = engine.DenoiserSource(ShrinkDenoiser(), energy_proxy=True)
    res = engine.iterate(den, torch.rand(3, 1, 4, 4), engine.FixedSchedule(500, h=0.5, tol=1e-6), disable=True)
    assert (res.n_updates < 500).all()
    with pytest.raises(ValueError, match="energy"):
        engine.iterate(engine.DenoiserSource(ShrinkDenoiser()), torch.rand(2, 1, 4, 4),
                       engine.FixedSchedule(5, tol=1e-3), disable=True)
    with pytest.raises(ValueError, match="operator"):
        engine.DenoiserSource(ShrinkDenoiser(), operator=operators.NoMeasurement((1, 4, 4)))


def test_engine_matches_ks_sample_with_per_chain_seeds():
    """ks_sample(seed=s) is iterate(noise) with y₀'s noise taken as the first draw of each chain's stream."""
    shape = (5, 1, 8, 8)
    ref = samplers.ks_sample(ShrinkDenoiser(), shape, seed=3, disable=True)
    noise = engine.make_chain_noise(shape[0], shape[1:], seed=3)
    assert noise.seeds == ref.info["chain_seeds"] == [engine.chain_seed(3, b) for b in range(shape[0])]
    y0 = 0.5 + noise.draw()
    res = engine.iterate(engine.DenoiserSource(ShrinkDenoiser()), y0, engine.AdaptiveSchedule(beta=0.5),
                         max_iter=ref.info["max_iter"], diverge_sigma=ref.info["diverge_sigma"], rebound=3.0,
                         keep_best=True, noise=noise, disable=True)
    assert torch.equal(res.n_evals, ref.nfe) and torch.equal(res.y, ref.y) and torch.equal(res.estimate, ref.x)


def test_chain_seed_is_pinned_and_distinct():
    # the derivation is part of every stored result's reproducibility: changing it must be deliberate
    assert engine.chain_seed(0, 0) == 4685109482889842056
    seeds = {engine.chain_seed(s, b) for s in range(4) for b in range(64)}
    assert len(seeds) == 256 and all(0 <= s < 2 ** 63 for s in seeds)


def test_chain_noise_streams_do_not_depend_on_the_other_chains():
    three = engine.ChainNoise([5, 6, 7], (2, 3), block=4)
    alone = engine.ChainNoise([6], (2, 3), block=4)
    assert torch.equal(three.draw()[1], alone.draw()[0])
    pos = 1
    for k in range(11):                                     # crosses block boundaries, and a compaction
        assert torch.equal(three.next()[pos], alone.next()[0])
        if k == 5:
            three.keep(torch.tensor([False, True, True]))
            pos = 0
    assert three.seeds == [6, 7]
    other = engine.ChainNoise([8], (2, 3), block=4)
    assert not torch.allclose(other.draw(), engine.ChainNoise([6], (2, 3), block=4).draw())
    with pytest.raises(ValueError, match="at most one"):
        engine.make_chain_noise(2, (3,), seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="one integer per chain"):
        engine.make_chain_noise(2, (3,), chain_seeds=[1, 2, 3])


def test_stopped_chains_leave_the_batch_and_traces_are_optional():
    """A batch costs the sum of its chains' evaluations; record=False changes nothing but the traces."""
    sizes = []

    def counting(y):
        sizes.append(y.shape[0])
        return ShrinkDenoiser()(y)

    y0 = 0.5 + torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    run = lambda **kw: engine.iterate(engine.DenoiserSource(counting), y0, engine.AdaptiveSchedule(beta=0.5), seed=1,
                                      keep_best=True, rebound=3.0, disable=True, **kw)
    res = run()
    assert sum(sizes) == int(res.n_evals.sum()) and len(sizes) == res.iterations
    assert sizes[0] == 6 and sizes[-1] < 6 and sizes == sorted(sizes, reverse=True)
    T = res.sigma_trace
    assert T.shape == (res.iterations, 6) and res.h_trace.shape == T.shape
    for b in range(6):
        n = int(res.n_evals[b])
        assert torch.isfinite(T[:n, b]).all() and torch.isnan(T[n:, b]).all()
        assert T[n - 1, b] == res.sigma[b] and T[:n, b].min() == res.sigma_best[b]
        assert torch.allclose(res.h_trace[:n, b], engine.step_size(torch.arange(1, n + 1).double(), 0.01))
    seen = []
    lean = run(record=False, callback=lambda info: seen.append(info))
    assert torch.equal(lean.y, res.y) and torch.equal(lean.estimate, res.estimate)
    assert torch.equal(lean.n_evals, res.n_evals) and lean.status == res.status
    assert lean.sigma_trace.shape == (0, 6) and lean.h_trace.shape == (0, 6)
    assert len(seen) == res.iterations and not seen[-1]["active"].any()
    assert torch.equal(seen[-1]["t"], res.n_evals) and torch.equal(seen[-1]["sigma"], res.sigma)


def test_non_finite_direction_diverges_without_a_limit():
    res = engine.iterate(engine.DenoiserSource(lambda y: y + float("inf")), torch.rand(3, 1, 4, 4),
                         engine.AdaptiveSchedule(), seed=0, rebound=3.0, disable=True)
    assert res.status == ["diverged"] * 3 and res.n_evals.tolist() == [1, 1, 1]
