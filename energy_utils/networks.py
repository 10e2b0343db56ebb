"""Denoiser networks: bias-free CNN (Mohan et al. 2020) and UNet, their biased twins, bias-free MLP (and twin), a small classifier.

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


class DenoiserCNN(nn.Module):
    """DnCNN-style blind denoiser returning the clean estimate x̂(y) = y − body(y).

    body = conv+ReLU, (depth−2) × [conv, BN, ReLU], conv; 3×3 kernels, ``width`` channels, zero padding; the
    middle convolutions may be dilated (``dilations``, one per middle layer; default all 1, receptive field
    2·depth+1; dilations keep the network bias-free and widen its receptive field at no cost). ``bias_free=True``: convolutions without bias and :class:`BFBatchNorm2d`; ``False``: the
    biased twin with identical architecture (conv biases, standard ``nn.BatchNorm2d``).
    """

    def __init__(self, channels: int = 1, depth: int = 8, width: int = 32, bias_free: bool = True,
                 dilations: list[int] | None = None):
        super().__init__()
        if depth < 2 or width < 1 or channels < 1:
            raise ValueError(f"need depth >= 2, width >= 1, channels >= 1; got {depth}, {width}, {channels}")
        dilations = list(dilations) if dilations is not None else [1] * (depth - 2)
        if len(dilations) != depth - 2 or any(d < 1 for d in dilations):
            raise ValueError(f"dilations must list {depth - 2} positive ints (one per middle layer), got {dilations}")
        self.channels, self.depth, self.width, self.bias_free = channels, depth, width, bias_free
        self.dilations = dilations
        bias = not bias_free
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1, bias=bias), nn.ReLU(inplace=True)]
        for d in dilations:
            norm = BFBatchNorm2d(width) if bias_free else nn.BatchNorm2d(width)
            layers += [nn.Conv2d(width, width, 3, padding=d, dilation=d, bias=bias), norm, nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, channels, 3, padding=1, bias=bias))
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
        if y.ndim != 4 or y.shape[1] != self.channels:
            raise ValueError(f"expected images of shape (B, {self.channels}, H, W), got {tuple(y.shape)}")
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
    ``bias_free=False`` gives the biased twin (conv biases, standard batch norm).
    """

    def __init__(self, channels: int = 1, widths: tuple[int, ...] | list[int] = (32, 64, 128), blocks: int = 2,
                 bias_free: bool = True):
        super().__init__()
        widths = [int(w) for w in widths]
        if channels < 1 or blocks < 1 or len(widths) < 1 or any(w < 1 for w in widths):
            raise ValueError(f"need channels >= 1, blocks >= 1 and positive widths; got {channels}, {blocks}, {widths}")
        self.channels, self.widths, self.blocks, self.bias_free = channels, widths, blocks, bias_free
        bias = not bias_free

        def stage(c_in, c_out):
            layers = []
            for i in range(blocks):
                norm = BFBatchNorm2d(c_out) if bias_free else nn.BatchNorm2d(c_out)
                layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=bias), norm, nn.ReLU(inplace=True)]
            return nn.Sequential(*layers)

        self.down = nn.ModuleList([stage(channels if i == 0 else widths[i - 1], w) for i, w in enumerate(widths)])
        self.up = nn.ModuleList([stage(widths[i + 1] + widths[i], widths[i]) for i in range(len(widths) - 1)])
        self.out = nn.Conv2d(widths[0], channels, 3, padding=1, bias=bias)
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
        ph, pw = (-H) % k, (-W) % k
        h = nn.functional.pad(y, (0, pw, 0, ph)) if ph or pw else y
        skips = []
        for i, stage in enumerate(self.down):
            if i > 0:
                h = nn.functional.avg_pool2d(h, 2)
            h = stage(h)
            skips.append(h)
        for i in reversed(range(len(self.up))):
            h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")
            h = self.up[i](torch.cat([h, skips[i]], dim=1))
        return self.out(h)[..., :H, :W]

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if y.ndim != 4 or y.shape[1] != self.channels:
            raise ValueError(f"expected images of shape (B, {self.channels}, H, W), got {tuple(y.shape)}")
        return y - self.body(y)

    @property
    def spec(self) -> dict:
        return {"kind": "unet", "channels": self.channels, "widths": list(self.widths), "blocks": self.blocks,
                "bias_free": self.bias_free}


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
    table = {"cnn": DenoiserCNN, "unet": DenoiserUNet, "mlp": DenoiserMLP, "classifier": SmallClassifier}
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
