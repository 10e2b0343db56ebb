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
