"""The supervised regression reference learns E[x | y] and refuses bad input."""
import pytest
import torch

from energy_utils import networks
from energy_utils.regression import back_project, train_regression


def _data(n, g):
    # images that are a random multiple of one fixed pattern: E[x | y] is easy to learn from a masked view
    pattern = torch.linspace(0, 1, 64).reshape(1, 1, 8, 8)
    return torch.rand(n, 1, 1, 1, generator=g) * pattern


def test_regression_training_lowers_the_validation_error():
    g = torch.Generator().manual_seed(0)
    A = torch.eye(64)[::2]                                   # every other pixel observed
    torch.manual_seed(0)
    net = networks.DenoiserUNet(1, widths=(8, 8), blocks=1, bias_free=False)
    hist = train_regression(net, A, 0.05, _data(256, g), _data(32, g), 60, batch_size=8, lr=3e-3,
                            validate_every=20, plateau=dict(warmup=10))
    vals = [v["val_loss"] for v in hist["val"]]
    assert len(vals) >= 2 and vals[-1] < 0.5 * vals[0]


def test_back_projection_and_bad_input():
    A = torch.eye(64)[:10]
    y = torch.arange(10.0)[None]
    img = back_project(A, y, (1, 8, 8))
    assert img.shape == (1, 1, 8, 8) and img.flatten()[:10].tolist() == list(range(10)) and img.flatten()[10:].abs().sum() == 0
    net = networks.DenoiserUNet(1, widths=(8,), blocks=1, bias_free=False)
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(ValueError, match="must be an"):
        train_regression(net, torch.eye(10), 0.1, x, x, 1)
    with pytest.raises(ValueError, match="images"):
        train_regression(net, A, 0.1, x.flatten(1), x, 1)
