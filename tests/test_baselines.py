"""Baselines (energy_utils.baselines): shapes, PonderNet's halting distribution, equivariance, training."""
import pytest
import torch

from energy_utils import baselines as bl
from energy_utils import tasks


@pytest.mark.parametrize("method", bl.METHODS)
@pytest.mark.parametrize("task_name", ["inverse", "shortest_path"])
def test_shapes_and_finite_loss(method, task_name):
    torch.manual_seed(0)
    task = tasks.make_task(task_name, n=3) if task_name == "inverse" else tasks.make_task(task_name)
    m = bl.make_baseline(method, task, hidden=16)
    p = task.sample(4, "train", torch.Generator().manual_seed(0))
    assert m.predict(p.x).shape == p.y.shape
    loss, _ = m.loss(p.x, p.y)
    assert torch.isfinite(loss)
    loss.backward()


def test_unknown_method_and_bad_input():
    task = tasks.make_task("addition", n=3)
    with pytest.raises(ValueError, match="unknown baseline"):
        bl.make_baseline("transformer", task)
    with pytest.raises(ValueError, match="expected x"):
        bl.make_baseline("feedforward", task).predict(torch.randn(2, 5))


def test_ponder_halting_distribution():
    torch.manual_seed(0)
    task = tasks.make_task("addition", n=3)
    m = bl.PonderNet(task, hidden=16, n_steps=6)
    p = task.sample(8)
    ys, halt = m.unroll(p.x)
    assert ys.shape == (6, 8, 9) and halt.shape == (6, 8)
    assert torch.all(halt >= 0) and torch.allclose(halt.sum(0), torch.ones(8))
    y, steps = m.predict(p.x, return_steps=True)
    assert ((steps >= 1) & (steps <= 6)).all()
    assert torch.allclose(y, ys[steps - 1, torch.arange(8)])
    with pytest.raises(ValueError, match="prior_p"):
        bl.PonderNet(task, prior_p=1.5)


def test_graph_feedforward_is_permutation_equivariant():
    torch.manual_seed(0)
    m = bl.FeedForward(tasks.make_task("components"), hidden=8)
    x = (torch.rand(2, 7, 7) > 0.7).float()
    perm = torch.randperm(7)
    out, outp = m.predict(x), m.predict(x[:, perm][:, :, perm])
    assert torch.allclose(out[:, perm][:, :, perm], outp, atol=1e-5)


def test_feedforward_training_reduces_loss():
    torch.manual_seed(0)
    task = tasks.make_task("addition", n=3)
    m = bl.FeedForward(task, hidden=32)
    hist = bl.train_baseline(m, task, n_iters=100, batch=32, lr=3e-3)
    assert sum(hist["loss"][-3:]) < 0.3 * sum(hist["loss"][:3])
