"""Denoiser networks: bias-free CNN (Mohan et al. 2020) and UNet (2-D, or 1-D with ``signal_dim=1``), their biased
twins, bias-free MLP (and twin), a recurrent (GRU) denoiser for sequences, a small classifier.

Convention used everywhere in the companion: **a denoiser returns the clean estimate** x̂(y), never the noise.
The denoiser residual is f(y) = x̂(y) − y = σ² ∇_y log p_σ(y) (Miyasawa/Tweedie). The CNNs are trained with an
internal residual connection (x̂(y) = y − body(y), like DnCNN) but only the clean estimate leaves ``forward``.
(KS2021's released BF_CNN returns the noise −f(y); Mohan et al.'s DnCNN returns x̂(y) as we do.)

Bias-free means: no additive constant anywhere, so with ReLU and the batch-norm statistics frozen (eval mode)

    D(α y) = α D(y)  for every α > 0,   and   D(y) = J_D(y) · y   (Euler: locally linear, no net bias).

Build a network from a plain dict with :func:`build` (the dict is what checkpoints store in ``meta["spec"]``),
e.g. ``build({"kind": "cnn", "bias_free": True, "depth": 8, "width": 32, "channels": 1})``.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class BFBatchNorm2d(nn.Module):
    """Bias-free batch norm: x / sd · γ per channel, with no mean subtraction and no shift β.

    Training: sd_c = sqrt(Var_batch[x_c] + eps) over (N, H, W) (biased variance); the running sd is an EMA with
    ``momentum``. Eval: the running sd is a fixed divisor, so the layer is linear and positively homogeneous.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.register_buffer("running_sd", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            sd = torch.sqrt(x.var(dim=(0, 2, 3), unbiased=False, keepdim=True) + self.eps)
            with torch.no_grad():
                self.running_sd.mul_(1 - self.momentum).add_(self.momentum * sd.flatten())
        else:
            sd = self.running_sd.view(1, -1, 1, 1)
        return x / sd * self.weight.view(1, -1, 1, 1)


def _check_signal_dim(signal_dim: int) -> int:
    if signal_dim not in (1, 2):
        raise ValueError(f"signal_dim must be 2 (images) or 1 (signals held as (B, C, 1, L)), got {signal_dim!r}")
    return signal_dim


def _conv_factory(signal_dim: int, bias: bool):
    """conv(c_in, c_out, dilation): 3×3 convolutions for images, 1×3 along the last axis for 1-D signals; zero
    padding keeps the size."""
    if signal_dim == 2:
        return lambda a, b, d: nn.Conv2d(a, b, 3, padding=d, dilation=d, bias=bias)
    return lambda a, b, d: nn.Conv2d(a, b, (1, 3), padding=(0, d), dilation=(1, d), bias=bias)


def _check_input(y: torch.Tensor, channels: int, signal_dim: int) -> None:
    if signal_dim == 2 and (y.ndim != 4 or y.shape[1] != channels):
        raise ValueError(f"expected images of shape (B, {channels}, H, W), got {tuple(y.shape)}")
    if signal_dim == 1 and (y.ndim != 4 or y.shape[1] != channels or y.shape[2] != 1):
        raise ValueError(f"expected 1-D signals held as (B, {channels}, 1, L), got {tuple(y.shape)}; "
                         f"reshape a (B, {channels}, L) batch with y[:, :, None, :]")


class DenoiserCNN(nn.Module):
    """DnCNN-style blind denoiser returning the clean estimate x̂(y) = y − body(y).

    body = conv+ReLU, (depth−2) × [conv, BN, ReLU], conv; 3×3 kernels, ``width`` channels, zero padding; the
    middle convolutions may be dilated (``dilations``, one per middle layer; default all 1, receptive field
    2·depth+1; dilations keep the network bias-free and widen its receptive field at no cost). ``bias_free=True``: convolutions without bias and :class:`BFBatchNorm2d`; ``False``: the
    biased twin with identical architecture (conv biases, standard ``nn.BatchNorm2d``).

    ``signal_dim=1``: 1-D signals (time series, trajectories) held as images of height one, (B, C, 1, L), so
    that the package's image-shaped operators apply unchanged; the kernels are then 1×3 (dilated along the
    time axis only), i.e. ordinary 1-D convolutions.
    """

    def __init__(self, channels: int = 1, depth: int = 8, width: int = 32, bias_free: bool = True,
                 dilations: list[int] | None = None, signal_dim: int = 2):
        super().__init__()
        if depth < 2 or width < 1 or channels < 1:
            raise ValueError(f"need depth >= 2, width >= 1, channels >= 1; got {depth}, {width}, {channels}")
        dilations = list(dilations) if dilations is not None else [1] * (depth - 2)
        if len(dilations) != depth - 2 or any(d < 1 for d in dilations):
            raise ValueError(f"dilations must list {depth - 2} positive ints (one per middle layer), got {dilations}")
        self.channels, self.depth, self.width, self.bias_free = channels, depth, width, bias_free
        self.dilations, self.signal_dim = dilations, _check_signal_dim(signal_dim)
        bias = not bias_free
        conv = _conv_factory(signal_dim, bias)
        layers: list[nn.Module] = [conv(channels, width, 1), nn.ReLU(inplace=True)]
        for d in dilations:
            norm = BFBatchNorm2d(width) if bias_free else nn.BatchNorm2d(width)
            layers += [conv(width, width, d), norm, nn.ReLU(inplace=True)]
        layers.append(conv(width, channels, 1))
        self.body = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal convolutions; BN scales ~ N(0, 2/(9·width)) clipped to ±0.025 (DnCNN/Mohan init), so
        the initial residual is small and the network starts close to the identity."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (BFBatchNorm2d, nn.BatchNorm2d)):
                with torch.no_grad():
                    m.weight.normal_(0, math.sqrt(2.0 / 9.0 / self.width)).clamp_(-0.025, 0.025)
                    if getattr(m, "bias", None) is not None:
                        m.bias.zero_()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        _check_input(y, self.channels, self.signal_dim)
        return y - self.body(y)

    @property
    def receptive_field(self) -> int:
        return 1 + 2 * (2 + sum(self.dilations))

    @property
    def spec(self) -> dict:
        spec = {"kind": "cnn", "channels": self.channels, "depth": self.depth, "width": self.width,
                "bias_free": self.bias_free}
        if any(d != 1 for d in self.dilations):
            spec["dilations"] = self.dilations
        if self.signal_dim != 2:
            spec["signal_dim"] = self.signal_dim
        return spec


class DenoiserUNet(nn.Module):
    """Bias-free UNet blind denoiser returning the clean estimate x̂(y) = y − body(y).

    ``body`` has ``len(widths)`` levels: at level ℓ, ``blocks`` × [3×3 conv, BN, ReLU] with ``widths[ℓ]``
    channels; between levels 2×2 average pooling on the way down and nearest-neighbour ×2 upsampling on the
    way up, each decoder level concatenating the encoder's features of the same size (skip connections); a
    final 3×3 conv maps to ``channels``. Every operation is linear or positively homogeneous (conv without
    bias, pooling, upsampling, concatenation, zero padding, ReLU, bias-free BN with frozen statistics), so in
    eval mode D(αy) = αD(y) holds for every α > 0, as for :class:`DenoiserCNN`. Inputs whose sides are not
    multiples of 2^(levels−1) are zero-padded and cropped back. With widths (32, 64, 128) on 28×28 digits the
    coarsest level works at 7×7, so each output pixel sees the whole digit (receptive field 44 pixels, measured).
    ``bias_free=False`` gives the biased twin (conv biases, standard batch norm). ``signal_dim=1``: 1-D signals
    held as (B, C, 1, L), with 1×3 kernels and pooling / upsampling along the time axis only (see
    :class:`DenoiserCNN`).
    """

    def __init__(self, channels: int = 1, widths: tuple[int, ...] | list[int] = (32, 64, 128), blocks: int = 2,
                 bias_free: bool = True, signal_dim: int = 2):
        super().__init__()
        widths = [int(w) for w in widths]
        if channels < 1 or blocks < 1 or len(widths) < 1 or any(w < 1 for w in widths):
            raise ValueError(f"need channels >= 1, blocks >= 1 and positive widths; got {channels}, {blocks}, {widths}")
        self.channels, self.widths, self.blocks, self.bias_free = channels, widths, blocks, bias_free
        self.signal_dim = _check_signal_dim(signal_dim)
        self._pool = (2, 2) if signal_dim == 2 else (1, 2)
        bias = not bias_free
        conv = _conv_factory(signal_dim, bias)

        def stage(c_in, c_out):
            layers = []
            for i in range(blocks):
                norm = BFBatchNorm2d(c_out) if bias_free else nn.BatchNorm2d(c_out)
                layers += [conv(c_in if i == 0 else c_out, c_out, 1), norm, nn.ReLU(inplace=True)]
            return nn.Sequential(*layers)

        self.down = nn.ModuleList([stage(channels if i == 0 else widths[i - 1], w) for i, w in enumerate(widths)])
        self.up = nn.ModuleList([stage(widths[i + 1] + widths[i], widths[i]) for i in range(len(widths) - 1)])
        self.out = conv(widths[0], channels, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal convolutions, unit BN scales, and a zero output layer: the network starts as the
        identity x̂(y) = y (a small residual, as in DnCNN's initialisation)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.zeros_(self.out.weight)

    def body(self, y: torch.Tensor) -> torch.Tensor:
        H, W = y.shape[-2:]
        k = 2 ** (len(self.widths) - 1)
        ph, pw = (-H) % k if self.signal_dim == 2 else 0, (-W) % k
        h = nn.functional.pad(y, (0, pw, 0, ph)) if ph or pw else y
        skips = []
        for i, stage in enumerate(self.down):
            if i > 0:
                h = nn.functional.avg_pool2d(h, self._pool)
            h = stage(h)
            skips.append(h)
        for i in reversed(range(len(self.up))):
            h = nn.functional.interpolate(h, scale_factor=self._pool, mode="nearest")
            h = self.up[i](torch.cat([h, skips[i]], dim=1))
        return self.out(h)[..., :H, :W]

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        _check_input(y, self.channels, self.signal_dim)
        return y - self.body(y)

    @property
    def spec(self) -> dict:
        spec = {"kind": "unet", "channels": self.channels, "widths": list(self.widths), "blocks": self.blocks,
                "bias_free": self.bias_free}
        if self.signal_dim != 2:
            spec["signal_dim"] = self.signal_dim
        return spec


class DenoiserMLP(nn.Module):
    """MLP denoiser for vector data returning the clean estimate x̂ = y − body(input); ReLU activations.

    ``bias_free=True`` (default): no ``Linear`` layer has a bias, so the map is positively homogeneous.
    ``bias_free=False``: the biased twin (identical architecture with biases).
    ``sigma_input=True`` appends the noise std σ to the input (needed in low dimension, where one observation
    cannot reveal its own noise level). A bias-free net is then *jointly* homogeneous, D(αy, ασ) = αD(y, σ): at a
    fixed σ the σ-column acts as a σ-proportional offset. Exact denoisers of priors that are not scale-invariant
    (e.g. a Gaussian mixture) violate this joint homogeneity, which limits how well a bias-free MLP can fit them.
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, sigma_input: bool = False, bias_free: bool = True):
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(f"need dim, hidden, depth >= 1; got {dim}, {hidden}, {depth}")
        self.dim, self.hidden, self.depth, self.sigma_input, self.bias_free = dim, hidden, depth, sigma_input, bias_free
        sizes = [dim + int(sigma_input)] + [hidden] * depth
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b, bias=not bias_free), nn.ReLU()]
        layers.append(nn.Linear(hidden, dim, bias=not bias_free))
        self.body = nn.Sequential(*layers)

    def forward(self, y: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        if y.ndim != 2 or y.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (B, {self.dim}), got {tuple(y.shape)}")
        inp = y
        if self.sigma_input:
            if sigma is None:
                raise ValueError("this MLP was built with sigma_input=True: call it as model(y, sigma)")
            s = torch.as_tensor(sigma, dtype=y.dtype, device=y.device)
            s = s.expand(y.shape[0]) if s.ndim == 0 else s.reshape(-1)
            inp = torch.cat([y, s[:, None]], dim=1)
        elif sigma is not None:
            raise ValueError("this MLP is blind (sigma_input=False); call it as model(y)")
        return y - self.body(inp)

    @property
    def spec(self) -> dict:
        return {"kind": "mlp", "dim": self.dim, "hidden": self.hidden, "depth": self.depth,
                "sigma_input": self.sigma_input, "bias_free": self.bias_free}


class DenoiserGRU(nn.Module):
    """Recurrent blind denoiser for 1-D signals (B, C, 1, L): x̂(y) = y − W·BiGRU(y)_t at every time t.

    A ``layers``-deep bidirectional GRU with ``hidden`` units per direction reads the sequence of C-vectors; a
    linear read-out without bias maps each time step's 2·hidden features to the residual. The unified-framework
    seed (§8.1) suggests recurrent denoisers for sequences. A GRU's gates (σ(W y + U h + b)) are not
    positively homogeneous, so unlike the convolutional nets it is **not** bias-free: D(αy) ≠ αD(y), with or
    without its biases; notebook 07 measures what that costs against the bias-free 1-D UNet.
    """

    def __init__(self, channels: int = 1, hidden: int = 64, layers: int = 2):
        super().__init__()
        if channels < 1 or hidden < 1 or layers < 1:
            raise ValueError(f"need channels, hidden, layers >= 1; got {channels}, {hidden}, {layers}")
        self.channels, self.hidden, self.layers = channels, hidden, layers
        self.rnn = nn.GRU(channels, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.readout = nn.Linear(2 * hidden, channels, bias=False)
        nn.init.zeros_(self.readout.weight)                  # starts as the identity x̂ = y

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        _check_input(y, self.channels, 1)
        seq = y[:, :, 0, :].transpose(1, 2)                   # (B, L, C)
        feats, _ = self.rnn(seq)
        return y - self.readout(feats).transpose(1, 2)[:, :, None, :]

    @property
    def spec(self) -> dict:
        return {"kind": "gru", "channels": self.channels, "hidden": self.hidden, "layers": self.layers}


def BiasFreeMLP(dim: int, hidden: int = 128, depth: int = 3, sigma_input: bool = False) -> DenoiserMLP:
    """The bias-free :class:`DenoiserMLP` (no additive constants anywhere)."""
    return DenoiserMLP(dim, hidden, depth, sigma_input=sigma_input, bias_free=True)


class SmallClassifier(nn.Module):
    """A small (ordinary, biased) CNN classifier for 28×28 digits, used to judge synthesized samples."""

    def __init__(self, n_classes: int = 10, width: int = 16):
        super().__init__()
        self.n_classes, self.width = n_classes, width
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),            # 14×14
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # 7×7
            nn.Flatten(), nn.Linear(2 * width * 49, 64), nn.ReLU(), nn.Linear(64, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self._checked(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 64 activations before the last layer (the feature space of a Fréchet distance), (B, 64)."""
        return self.net[:-1](self._checked(x))

    def _checked(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"expected digits of shape (B, 1, 28, 28), got {tuple(x.shape)}")
        return x

    @property
    def spec(self) -> dict:
        return {"kind": "classifier", "n_classes": self.n_classes, "width": self.width}


def build(spec: dict) -> nn.Module:
    """Instantiate a network from its ``spec`` dict (``model.spec``; stored in checkpoint metadata)."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    table = {"cnn": DenoiserCNN, "unet": DenoiserUNet, "mlp": DenoiserMLP, "gru": DenoiserGRU,
             "classifier": SmallClassifier}
    if kind not in table:
        raise ValueError(f"unknown network kind {kind!r}; spec needs 'kind' in {sorted(table)}")
    return table[kind](**spec)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def has_additive_constants(model: nn.Module) -> bool:
    """True when any layer adds a constant (a bias, a BN shift or BN mean subtraction)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            return True
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return True
    return False
