"""The papers' released denoiser weights, read from ``<data dir>/pretrained/`` (never copied into the repository).

Two families, described in ``<data dir>/pretrained/README.md`` and checksummed in ``SHA256SUMS`` beside it:

* ``mohan2020_dncnn/{bias,bias_free}/{0-10,0-30,0-55,0-100}``: Mohan et al. (ICLR 2020)'s DnCNN, the original
  (``bias``) and its bias-free version (``bias_free``), trained on σ ∈ [0, range]/255. Network:
  :class:`MohanDnCNN`; it returns the clean estimate y − body(y), like ours.
* ``ks2021_bf_cnn/{BSD400_gray,BSD300_color}``: Kadkhodaie & Simoncelli (NeurIPS 2021)'s BF_CNN, trained on
  σ ∈ [0, 100]/255. Network: :class:`KSBFCNN`, which returns the *residual* (the predicted noise y − x̂(y));
  :func:`load` wraps it in :class:`CleanFromResidual`, the one place where that residual becomes our interface.

Every model returned by :func:`load` is in eval mode and returns the clean estimate x̂(y) (the convention of
:mod:`energy_utils.networks`). Before loading, :func:`load` checks the file's SHA-256 against ``SHA256SUMS`` and
the state dict's key names and shapes against the network, and raises :class:`ChecksumMismatch` or
:class:`StateDictMismatch` naming the file and what differs. When the data directory or a file is absent it
raises :class:`PretrainedUnavailable` (a ``FileNotFoundError``); :func:`try_load` turns that into ``None`` and a
printed line, so notebooks say what they skip instead of failing. :func:`available` lists the names present.

Usage::

    from energy_utils import pretrained
    pretrained.available()                       # e.g. ['mohan2020_dncnn/bias/0-10', ...]
    bf = pretrained.try_load("mohan2020_dncnn/bias_free/0-10")   # None (and a message) when absent
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import data
from .checkpoints import sha256

PRETRAINED_SUBDIR = "pretrained"
CHECKSUM_FILE = "SHA256SUMS"


class PretrainedUnavailable(FileNotFoundError):
    """The data directory, the ``pretrained`` folder, a weight file or ``SHA256SUMS`` is absent."""


class ChecksumMismatch(ValueError):
    """A weight file's SHA-256 differs from (or is missing in) ``SHA256SUMS``."""


class StateDictMismatch(ValueError):
    """A weight file's key names or tensor shapes differ from those of the network built to hold them."""


# -- batch norms -------------------------------------------------------------------------------------------------


class MohanBFBatchNorm2d(nn.Module):
    """Mohan et al.'s bias-free batch norm (``models/BFBatchNorm2d.py`` of ``bias_free_denoising``).

    Eval:     y_c = weight_c · x_c / (sqrt(running_var_c) + eps)       (eps added after the square root)
    Training: y_c = weight_c · x_c / (sqrt(Var_batch[x_c]) + eps), with the unbiased variance over (N, H, W),
              and running_var ← (1 − momentum) running_var + momentum Var_batch.
    No mean subtraction and no additive bias. ``running_mean``, ``bias`` and ``num_batches_tracked`` are
    stored in the released files (the original subclasses ``nn.BatchNorm2d``) and are kept here as buffers
    only so the files load strictly; they never enter the computation.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))               # unused
        self.register_buffer("running_mean", torch.zeros(num_features))       # unused
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))  # unused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            var = x.transpose(0, 1).reshape(x.shape[1], -1).var(dim=1)        # unbiased, as in the original
            with torch.no_grad():
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * var)
        else:
            var = self.running_var
        sd = var.sqrt() + self.eps
        return x / sd.view(1, -1, 1, 1) * self.weight.view(1, -1, 1, 1)


def ks_bf_batch_norm(x: torch.Tensor, running_sd: torch.Tensor, gamma: torch.Tensor, training: bool) -> torch.Tensor:
    """The bias-free batch norm of Kadkhodaie & Simoncelli's BF_CNN, for one layer: x / sd · γ per channel.

    Eval: sd = ``running_sd`` (shape (1, C, 1, 1)), no eps. Training: sd = sqrt(Var_batch[x] + 1e-5) with the
    biased variance over (N, H, W), and ``running_sd`` ← 0.9 running_sd + 0.1 sd (in place). No mean, no shift.
    The tensors live in :class:`KSBFCNN`'s parameter lists, so the state-dict keys are those of the released
    files (``running_sd.l``, ``gammas.l``).
    """
    if training:
        sd = torch.sqrt(x.var(dim=(0, 2, 3), keepdim=True, unbiased=False) + 1e-5)
        with torch.no_grad():
            running_sd.mul_(0.9).add_(0.1 * sd)
    else:
        sd = running_sd
    return x / sd * gamma


# -- networks ----------------------------------------------------------------------------------------------------


class MohanDnCNN(nn.Module):
    """Mohan et al. (2020)'s DnCNN, returning the clean estimate x̂(y) = y − body(y).

    body(y) = last(ReLU(BN_18(conv_18(… ReLU(BN_1(conv_1(ReLU(first(y))))) …)))): 3×3 convolutions with
    padding 1, ``width`` channels, ``depth`` layers in all (depth − 2 hidden ones, each followed by a batch
    norm and a ReLU). ``bias_free=False`` is the original DnCNN (conv biases and ``nn.BatchNorm2d``: mean
    subtraction, running variance, affine weight and bias); ``bias_free=True`` is the bias-free version
    (no conv biases, :class:`MohanBFBatchNorm2d`), which in eval mode satisfies D(αy) = αD(y) for α > 0.
    Parameter names match the released files (``first_layer``, ``hidden_layer_list.i``, ``bn_layer_list.i``,
    ``last_layer``).
    """

    def __init__(self, bias_free: bool, channels: int = 1, depth: int = 20, width: int = 64):
        super().__init__()
        if depth < 2 or width < 1 or channels < 1:
            raise ValueError(f"need depth >= 2, width >= 1, channels >= 1; got {depth}, {width}, {channels}")
        self.bias_free, self.channels, self.depth, self.width = bias_free, channels, depth, width
        bias = not bias_free
        self.first_layer = nn.Conv2d(channels, width, 3, padding=1, bias=bias)
        self.hidden_layer_list = nn.ModuleList(
            [nn.Conv2d(width, width, 3, padding=1, bias=bias) for _ in range(depth - 2)])
        self.bn_layer_list = nn.ModuleList(
            [MohanBFBatchNorm2d(width) if bias_free else nn.BatchNorm2d(width) for _ in range(depth - 2)])
        self.last_layer = nn.Conv2d(width, channels, 3, padding=1, bias=bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if y.ndim != 4 or y.shape[1] != self.channels:
            raise ValueError(f"expected images of shape (B, {self.channels}, H, W), got {tuple(y.shape)}")
        h = torch.relu(self.first_layer(y))
        for conv, bn in zip(self.hidden_layer_list, self.bn_layer_list):
            h = torch.relu(bn(conv(h)))
        return y - self.last_layer(h)


class KSBFCNN(nn.Module):
    """Kadkhodaie & Simoncelli (2021)'s BF_CNN, returning the **residual** f(y) = y − x̂(y) (the predicted noise).

    f(y) = conv_{depth−1}(ReLU(BN_{depth−2}(conv_{depth−2}(… ReLU(BN_1(conv_1(ReLU(conv_0(y))))) …)))), with
    3×3 bias-free convolutions, padding 1, ``width`` kernels, and the bias-free batch norm of
    :func:`ks_bf_batch_norm` after each hidden convolution (x / running_sd · γ in eval mode). Positively
    homogeneous in eval mode. Use :class:`CleanFromResidual` (as :func:`load` does) to get x̂(y) = y − f(y).
    ``running_sd`` is a list of non-trainable parameters, as in the original, so the keys are ``running_sd.l``.
    """

    def __init__(self, channels: int = 1, depth: int = 20, width: int = 64):
        super().__init__()
        if depth < 2 or width < 1 or channels < 1:
            raise ValueError(f"need depth >= 2, width >= 1, channels >= 1; got {depth}, {width}, {channels}")
        self.channels, self.depth, self.width = channels, depth, width
        convs = [nn.Conv2d(channels, width, 3, padding=1, bias=False)]
        convs += [nn.Conv2d(width, width, 3, padding=1, bias=False) for _ in range(depth - 2)]
        convs.append(nn.Conv2d(width, channels, 3, padding=1, bias=False))
        self.conv_layers = nn.ModuleList(convs)
        self.running_sd = nn.ParameterList(
            [nn.Parameter(torch.ones(1, width, 1, 1), requires_grad=False) for _ in range(depth - 2)])
        self.gammas = nn.ParameterList([nn.Parameter(torch.ones(1, width, 1, 1)) for _ in range(depth - 2)])

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if y.ndim != 4 or y.shape[1] != self.channels:
            raise ValueError(f"expected images of shape (B, {self.channels}, H, W), got {tuple(y.shape)}")
        h = torch.relu(self.conv_layers[0](y))
        for l in range(1, self.depth - 1):
            h = self.conv_layers[l](h)
            h = torch.relu(ks_bf_batch_norm(h, self.running_sd[l - 1], self.gammas[l - 1], self.training))
        return self.conv_layers[-1](h)


class CleanFromResidual(nn.Module):
    """Adapts a network f that returns the residual (predicted noise) to our interface: x̂(y) = y − f(y).

    The wrapped network is ``self.net`` (its state-dict keys gain the prefix ``net.``)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y - self.net(y)


# -- the catalogue -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    """One released weight file: its path under ``pretrained/``, how to build its network, what it is."""
    relpath: str
    build: Callable[[], nn.Module]       # the network whose state dict the file holds
    returns_residual: bool               # True: wrap in CleanFromResidual
    sigma_range_255: tuple[float, float]
    description: str


def _mohan(kind: str, rng: str) -> Release:
    bf = kind == "bias_free"
    lo, hi = (float(v) for v in rng.split("-"))
    return Release(f"mohan2020_dncnn/{kind}/{rng}.pt", lambda: MohanDnCNN(bias_free=bf), False, (lo, hi),
                   f"Mohan et al. 2020 {'bias-free' if bf else 'original'} DnCNN (20×64), trained on "
                   f"σ ∈ [{lo:g}, {hi:g}]/255, BSD400 greyscale")


RELEASES: dict[str, Release] = {
    **{f"mohan2020_dncnn/{k}/{r}": _mohan(k, r) for k in ("bias", "bias_free") for r in ("0-10", "0-30", "0-55", "0-100")},
    "ks2021_bf_cnn/BSD400_gray": Release("ks2021_bf_cnn/BSD400_gray.pt", lambda: KSBFCNN(channels=1), True,
                                         (0.0, 100.0), "Kadkhodaie & Simoncelli 2021 BF_CNN (20×64), greyscale, "
                                         "trained on σ ∈ [0, 100]/255, BSD400"),
    "ks2021_bf_cnn/BSD300_color": Release("ks2021_bf_cnn/BSD300_color.pt", lambda: KSBFCNN(channels=3), True,
                                          (0.0, 100.0), "Kadkhodaie & Simoncelli 2021 BF_CNN (20×64), colour, "
                                          "trained on σ ∈ [0, 100]/255, BSD300"),
}


def mohan_name(bias_free: bool, rng: str) -> str:
    """The catalogue name of a Mohan et al. DnCNN, e.g. ``mohan_name(True, "0-10")``."""
    return f"mohan2020_dncnn/{'bias_free' if bias_free else 'bias'}/{rng}"


def pretrained_dir() -> Path | None:
    """``<ENERGY_DATA_DIR>/pretrained``, or None when the data directory is unset."""
    root = data.data_dir()
    return None if root is None else root / PRETRAINED_SUBDIR


def available() -> list[str]:
    """Names (keys of :data:`RELEASES`) whose weight file exists in the data directory (no checksum check)."""
    folder = pretrained_dir()
    if folder is None:
        return []
    return [name for name, rel in RELEASES.items() if (folder / rel.relpath).is_file()]


# -- checked loading ---------------------------------------------------------------------------------------------


def read_checksums(path: Path) -> dict[str, str]:
    """Parse a ``sha256sum``-style file into {path relative to its folder (no leading ``./``): hex digest}."""
    sums = {}
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        digest, _, name = line.strip().partition(" ")
        name = name.strip().lstrip("*")
        while name.startswith("./"):
            name = name[2:]
        sums[name] = digest.lower()
    return sums




def verify_checksum(path: Path, checksum_file: Path) -> str:
    """Check ``path``'s SHA-256 against its line in ``checksum_file`` (paths there are relative to the checksum
    file's folder). Returns the digest; raises :class:`ChecksumMismatch` naming the file."""
    path, checksum_file = Path(path), Path(checksum_file)
    if not checksum_file.is_file():
        raise PretrainedUnavailable(f"{checksum_file} is missing: cannot verify {path}")
    rel = path.resolve().relative_to(checksum_file.resolve().parent).as_posix()
    expected = read_checksums(checksum_file).get(rel)
    if expected is None:
        raise ChecksumMismatch(f"{path}: no entry {rel!r} in {checksum_file}")
    actual = sha256(path)
    if actual != expected:
        raise ChecksumMismatch(f"{path}: SHA-256 {actual} differs from {expected} listed in {checksum_file} "
                               f"(file corrupted or replaced)")
    return actual


def check_state_dict(state: dict, model: nn.Module, source: str | Path) -> None:
    """Raise :class:`StateDictMismatch` naming ``source`` unless ``state`` has exactly the keys and shapes of
    ``model.state_dict()``."""
    if not isinstance(state, dict):
        raise StateDictMismatch(f"{source}: expected a state dict (a dict of tensors), found {type(state).__name__}")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs network {tuple(expected[k].shape)}"
              for k in expected if k in state and tuple(getattr(state[k], "shape", ())) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if shapes:
            parts.append(f"mismatched shapes [{'; '.join(shapes)}]")
        raise StateDictMismatch(f"{source}: state dict does not match {type(model).__name__}: " + "; ".join(parts))


def load_checked(model: nn.Module, path: Path, checksum_file: Path) -> nn.Module:
    """Verify ``path``'s checksum, check its keys and shapes against ``model``, load it strictly; eval mode."""
    verify_checksum(path, checksum_file)
    state = torch.load(path, map_location="cpu", weights_only=True)
    check_state_dict(state, model, path)
    model.load_state_dict(state, strict=True)
    return model.eval()


def load(name: str, device: torch.device | str = "cpu") -> nn.Module:
    """The released network ``name`` (a key of :data:`RELEASES`), checked and loaded, in eval mode, returning
    the clean estimate x̂(y). Raises :class:`PretrainedUnavailable` when the file is absent."""
    if name not in RELEASES:
        raise KeyError(f"unknown released model {name!r}; choose one of {sorted(RELEASES)}")
    rel = RELEASES[name]
    folder = pretrained_dir()
    if folder is None:
        raise PretrainedUnavailable(f"{name}: {data.DATA_ENV} is unset, so <data dir>/{PRETRAINED_SUBDIR}/"
                                    f"{rel.relpath} cannot be found")
    path = folder / rel.relpath
    if not path.is_file():
        raise PretrainedUnavailable(f"{name}: {path} not found")
    net = load_checked(rel.build(), path, folder / CHECKSUM_FILE)
    model = CleanFromResidual(net) if rel.returns_residual else net
    return model.to(device).eval()


def try_load(name: str, device: torch.device | str = "cpu", verbose: bool = True) -> nn.Module | None:
    """Like :func:`load`, but returns None (printing why) when the weights are absent. A corrupted or
    mismatched file still raises."""
    try:
        return load(name, device)
    except PretrainedUnavailable as err:
        if verbose:
            print(f"skipping released model: {err}")
        return None
