"""IREM task generators (energy_utils.tasks): definitions, splits, trivial baselines."""
import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import connected_components as scipy_cc
from scipy.sparse.csgraph import floyd_warshall

from energy_utils import tasks


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_registry_and_bad_inputs():
    assert set(tasks.TASKS) == set(tasks.CONTINUOUS) | set(tasks.GRAPH)
    with pytest.raises(ValueError, match="unknown task"):
        tasks.make_task("sudoku")
    t = tasks.make_task("addition")
    with pytest.raises(ValueError, match="unknown split"):
        t.sample(4, "ood")
    with pytest.raises(ValueError, match="batch"):
        t.sample(0)
    with pytest.raises(ValueError, match="matrix side"):
        tasks.make_task("inverse", n=1)


def test_addition_sum_and_ranges():
    t = tasks.make_task("addition", n=5)
    p = t.sample(100, "same", gen())
    assert p.x.shape == (100, 50) and p.y.shape == (100, 25)
    assert torch.allclose(p.y, p.x[:, :25] + p.x[:, 25:])
    assert p.x.abs().max() <= 1.0
    h = t.sample(500, "harder", gen())
    assert 1.0 < h.x.abs().max() <= 2.5


def test_inverse_is_the_inverse_and_harder_is_worse_conditioned():
    t = tasks.make_task("inverse", n=6)
    p, h = t.sample(300, "same", gen()), t.sample(300, "harder", gen())
    a = p.x.reshape(-1, 6, 6).double()
    assert torch.allclose(a, a.transpose(1, 2))
    eye = torch.eye(6, dtype=torch.float64).expand(300, 6, 6)
    assert (a @ p.y.reshape(-1, 6, 6).double() - eye).abs().max() < 1e-3
    assert h.info["cond"].median() > 2 * p.info["cond"].median()
    assert torch.allclose(tasks.difficulty(p), p.info["cond"].log10())


def test_lowrank_mask_and_copy_observed_baseline():
    t = tasks.make_task("lowrank", n=20)
    p = t.sample(2000, "same", gen())
    m = p.info["mask"]
    assert torch.equal(p.x[m], p.y[m]) and (p.x[~m] == 0).all()
    base = tasks.trivial_baselines(t, p, "same")
    zero, copy = (tasks.mse(base[k], p.y).mean() for k in ("zero", "copy_observed"))
    assert abs(copy / zero - 0.5) < 0.03          # half the entries are observed
    assert abs(zero - 0.0349) < 0.002             # the reference's 20x20 number


def test_components_match_scipy():
    t = tasks.make_task("components")
    p = t.sample_nodes(20, 12, gen(3))
    for b in range(20):
        _, lab = scipy_cc(p.x[b].numpy(), directed=False)
        same = (lab[:, None] == lab[None, :]).astype(np.float32)
        assert np.array_equal(same, p.y[b].numpy())


def test_shortest_paths_match_scipy():
    t = tasks.make_task("shortest_path")
    p = t.sample_nodes(10, 9, gen(4))
    assert torch.allclose(p.x, p.x.transpose(1, 2)) and (p.x.diagonal(dim1=1, dim2=2) == 0).all()
    for b in range(10):
        assert np.allclose(floyd_warshall(p.x[b].numpy().astype(np.float64)), p.y[b].numpy(), atol=1e-5)


def test_graph_split_sizes():
    t = tasks.make_task("edge_copy")
    g = gen(5)
    sizes = {t.sample(2, "train", g).x.shape[1] for _ in range(200)}
    assert sizes == set(range(2, 11))
    assert t.sample(3, "same").x.shape == (3, 10, 10)
    assert t.sample(3, "harder").x.shape == (3, 15, 15)
    p = t.sample(3, "same")
    assert torch.equal(p.x, p.y)


def test_graph_trivial_baselines():
    t = tasks.make_task("components")
    p = t.sample(500, "same", gen(6))
    base = tasks.trivial_baselines(t, p, "same")
    assert set(base) == {"zero", "base_rate"}
    rate = float(base["base_rate"][0, 0, 0])
    assert 0.25 < rate < 0.35                     # ~0.30 at 10 nodes (reference)
    assert tasks.mse(base["base_rate"], p.y).mean() < tasks.mse(base["zero"], p.y).mean()
    with pytest.raises(ValueError, match="fixed size"):
        tasks.trivial_baselines(t, p, "train")
    acc = tasks.accuracy(t, p.y, p.y)
    assert torch.all(acc == 1)
