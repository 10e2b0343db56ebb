"""IREM pieces (energy_utils.irem): the descent, gradient modes, stopping rule, replay buffer, energies."""
import pytest
import torch
from torch import nn

from energy_utils import irem, tasks


class Quadratic(nn.Module):
    """E(x, y) = ½ a ‖y − x‖² (per problem), with a learnable scalar a."""

    def __init__(self, a=1.0):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(float(a)))

    def forward(self, x, y):
        return 0.5 * self.a * (y - x).pow(2).flatten(1).sum(1)


def test_descend_is_gradient_descent_on_a_quadratic():
    x, y0 = torch.randn(7, 5), torch.randn(7, 5)
    lam = 0.3
    seen = []
    out = irem.descend(Quadratic(), x, y0, lam, 6, lambda t, y, e: seen.append(t))
    assert torch.allclose(out.y - x, (1 - lam) ** 6 * (y0 - x), atol=1e-6)
    assert seen == list(range(7)) and out.energies.shape == (7, 7)
    assert torch.all(out.energies[1:] <= out.energies[:-1])
    assert torch.equal(out.y_min, out.y) and (out.min_step == 6).all()


def test_min_energy_readout_when_the_descent_diverges():
    x, y0 = torch.zeros(4, 3), torch.randn(4, 3)
    out = irem.descend(Quadratic(), x, y0, 2.5, 4)   # |1 − λa| = 1.5 > 1: energy grows
    assert (out.min_step == 0).all() and torch.allclose(out.y_min, y0)


def test_truncated_and_full_gradients_match_the_closed_form():
    torch.manual_seed(0)
    x, y0 = torch.randn(3, 4), torch.randn(3, 4)
    lam, a, n = 0.2, 1.3, 4
    r0 = (y0 - x).pow(2).mean()
    for mode, expect in [("full", 2 * n * (1 - lam * a) ** (2 * n - 1) * (-lam) * r0),
                         ("truncated", -2 * lam * (1 - lam * a) * (1 - lam * a) ** (2 * (n - 1)) * r0)]:
        e = Quadratic(a)
        out = irem.descend(e, x, y0, lam, n, grad=mode, track=False)
        loss = (out.y - x).pow(2).mean()
        loss.backward()
        assert torch.allclose(e.a.grad, expect, rtol=1e-4), mode
    e = Quadratic(a)
    irem.descend(e, x, y0, lam, n, grad="none").y.pow(2).sum()
    assert e.a.grad is None


def test_stabilisation_stop_matches_the_post_hoc_rule():
    torch.manual_seed(1)
    scales = torch.tensor([0.05, 0.2, 0.5, 0.9])

    class Scaled(nn.Module):
        def forward(self, x, y):
            return 0.5 * scales * (y - x).pow(2).sum(1)

    x, y0 = torch.zeros(4, 3), torch.ones(4, 3)
    full = irem.descend(Scaled(), x, y0, 1.0, 60)
    for tol, min_steps in [(1e-3, 1), (1e-2, 3)]:
        stopped = irem.descend(Scaled(), x, y0, 1.0, 60, tol=tol, min_steps=min_steps)
        post = irem.stabilisation_step(full.energies, tol, min_steps)
        assert torch.equal(stopped.steps, post)
        assert stopped.steps[-1] <= stopped.steps[0]      # fast-converging problems stop first
        if min_steps == 1:
            assert stopped.steps[-1] < stopped.steps[0]
        expect = y0 * (1 - scales[:, None]) ** post[:, None].float()
        assert torch.allclose(stopped.y, expect, atol=1e-6)
    with pytest.raises(ValueError, match="test-time"):
        irem.descend(Scaled(), x, y0, 1.0, 5, grad="truncated", tol=1e-3)


def test_replay_buffer_rings_and_fifo():
    buf = irem.ReplayBuffer(capacity=5)
    buf.add(torch.zeros(3, 2, 2), torch.zeros(3, 2, 2), torch.zeros(3, 2, 2))
    buf.add(torch.arange(4.).view(4, 1, 1).expand(4, 3, 3), torch.ones(4, 3, 3), torch.ones(4, 3, 3))
    assert len(buf) == 7 and buf.count((2, 2)) == 3 and buf.count((3, 3)) == 4
    buf.add(10 + torch.arange(3.).view(3, 1, 1).expand(3, 3, 3), torch.ones(3, 3, 3), torch.ones(3, 3, 3))
    assert buf.count((3, 3)) == 5
    g = torch.Generator().manual_seed(0)
    xs = torch.cat([buf.sample(5, (3, 3), g)[0] for _ in range(40)])
    assert set(xs[:, 0, 0].tolist()) == {2.0, 3.0, 10.0, 11.0, 12.0}   # the two oldest were overwritten
    with pytest.raises(ValueError, match="fewer than"):
        buf.sample(4, (2, 2))


def test_energies_shapes_and_graph_permutation_invariance():
    task = tasks.make_task("addition", n=3)
    e = irem.make_energy(task, hidden=16)
    assert e(torch.randn(5, 18), torch.randn(5, 9)).shape == (5,)
    with pytest.raises(ValueError, match="VectorEnergy expects"):
        e(torch.randn(5, 9), torch.randn(5, 9))
    torch.manual_seed(0)
    g = irem.GraphEnergy(hidden=8)
    x, y = torch.randn(2, 6, 6), torch.randn(2, 6, 6)
    perm = torch.randperm(6)
    ex = g(x, y)
    ep = g(x[:, perm][:, :, perm], y[:, perm][:, :, perm])
    assert torch.allclose(ex, ep, atol=1e-5)
    spec = irem.energy_spec(task, 16)
    assert isinstance(irem.build_energy(spec), irem.VectorEnergy)


def test_training_reduces_the_loss_with_replay():
    torch.manual_seed(0)
    task = tasks.make_task("addition", n=3)
    e = irem.make_energy(task, hidden=32)
    hist = irem.train_irem(e, task, n_iters=80, batch=16, step_size=1.0, n_unroll=3, lr=3e-3, seed=0)
    assert sum(hist["loss"][-3:]) < 0.5 * sum(hist["loss"][:3])
    assert any(ex.get("replayed", 0) > 0 for ex in hist["extra"])
