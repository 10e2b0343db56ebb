"""Tasks for task-adapted denoisers (notebook 06): a task input x, an answer y, and a frozen prior over y.

Image tasks (MNIST digits, y of shape (B, 1, 28, 28) in [0, 1]) share one rendering of the task input, so
that one adapter can serve several tasks: x has :data:`X_CHANNELS` = 12 channels of 28×28,

    x[:, 0]    the observed or degraded image (in the answer's pixel grid),
    x[:, 1]    where x[:, 0] is informative (1) or not (0),
    x[:, 2:12] the class label as one-hot planes (all zero when the task gives no label).

* ``completion`` — class-conditional completion: the top ``rows`` rows are observed (rows drawn from
  [8, 20] per digit unless fixed) and the label is given; x[:, 0] is the masked digit.
* ``deblur`` — a Gaussian blur (std 1.5 px, 9×9 kernel, zero padding) plus noise of std 0.02. The
  degradation is *not* given to the solver: it is learned from pairs.
* ``superres`` — 4× average pooling, nearest-neighbour upsampling back to 28×28, noise of std 0.02.

The continuous non-image task (``signal``) works on 1-D signals of length 64 (y of shape (B, 64)):
sums of three sinusoids with random frequencies (0.5–4 cycles per window), amplitudes (0.15–0.45) and
phases; x = 4× average pooling upsampled back to 64 samples plus noise of std 0.02 (learned from pairs).

Every task starts its solvers from ``y0 = x[:, 0] + σ₀ z`` (:func:`initial_iterate`): the degraded
observation, made noisy so that the frozen blind denoiser sees the kind of input it was trained on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

X_CHANNELS = 12
IMAGE_TASKS = ("completion", "deblur", "superres")
SIGNAL_LENGTH = 64
BLUR_STD, NOISE_STD, FACTOR = 1.5, 0.02, 4


def _check_images(images: torch.Tensor):
    if images.ndim != 4 or images.shape[1:] != (1, 28, 28):
        raise ValueError(f"expected digits of shape (B, 1, 28, 28), got {tuple(images.shape)}")


def blur_kernel(std: float = BLUR_STD, size: int = 9) -> torch.Tensor:
    """Normalised 2-D Gaussian kernel (1, 1, size, size)."""
    r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    k = torch.exp(-0.5 * (r / std) ** 2)
    k2 = torch.outer(k, k)
    return (k2 / k2.sum())[None, None]


def _noise(shape, std, generator, device):
    return std * torch.randn(shape, generator=generator).to(device)


def render(observed: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """The 12-channel task input [observed, mask, one-hot label planes]."""
    B = observed.shape[0]
    planes = torch.zeros(B, 10, 28, 28, device=observed.device, dtype=observed.dtype)
    if labels is not None:
        planes[torch.arange(B), labels.long().to(observed.device)] = 1.0
    return torch.cat([observed, mask.expand_as(observed).to(observed.dtype), planes], dim=1)


def degrade(name: str, images: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator,
            rows: int | torch.Tensor | None = None) -> torch.Tensor:
    """Task input x (B, 12, 28, 28) for clean digits ``images`` (B, 1, 28, 28) under task ``name``."""
    _check_images(images)
    B, device = images.shape[0], images.device
    if name == "completion":
        if labels is None:
            raise ValueError("completion is class-conditional: give the labels")
        if rows is None:
            rows = torch.randint(8, 21, (B,), generator=generator)
        rows = torch.as_tensor(rows).expand(B).to(device)
        mask = (torch.arange(28, device=device)[None, :] < rows[:, None]).float()[:, None, :, None].expand(B, 1, 28, 28)
        return render(images * mask, mask, labels)
    if name not in IMAGE_TASKS:
        raise ValueError(f"unknown image task {name!r}; choose from {IMAGE_TASKS}")
    obs = forward_model(name)(images)
    obs = obs + _noise(obs.shape, NOISE_STD, generator, device)
    return render(obs, torch.ones_like(obs))


def forward_model(name: str):
    """The noise-free linear degradation of ``deblur``, ``superres`` or ``signal`` as a function of the answers
    (the observation is this plus noise of std :data:`NOISE_STD`). The solvers never see it: they learn the task from
    pairs; it serves the known-operator linear-MMSE control."""
    if name == "deblur":
        return lambda y: F.conv2d(y, blur_kernel().to(y.device, y.dtype), padding=4)
    if name == "superres":
        return lambda y: F.interpolate(F.avg_pool2d(y, FACTOR), scale_factor=FACTOR, mode="nearest")
    if name == "signal":
        return lambda y: F.interpolate(F.avg_pool1d(y[:, None], FACTOR), scale_factor=FACTOR, mode="nearest")[:, 0]
    raise ValueError(f"no linear forward model for task {name!r}; choose from ('deblur', 'superres', 'signal')"
                     + (" (completion is a mask with a given label)" if name == "completion" else ""))


def input_features(x: torch.Tensor) -> torch.Tensor:
    """The task input as one flat vector per problem, without the rendering's redundancy (the ridge-map control's
    features): for images the observation and mask pixels and the label one-hot (its planes are constant, so one
    pixel of each), 2·784 + 10 entries; signals as they are."""
    if x.ndim == 2:
        return x
    if x.ndim != 4 or x.shape[1] != X_CHANNELS:
        raise ValueError(f"expected task inputs of shape (B, {X_CHANNELS}, H, W) or signals (B, length), got {tuple(x.shape)}")
    return torch.cat([x[:, :2].flatten(1), x[:, 2:, 0, 0]], dim=1)


def completion_constraint(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """E_c(x, y) = ½‖m ⊙ (y − x_obs)‖²: agreement with the observed pixels (known exactly, not learned)."""
    return 0.5 * ((x[:, 1:2] * (y - x[:, 0:1])) ** 2).flatten(1).sum(1)


def make_signals(n: int, generator: torch.Generator, length: int = SIGNAL_LENGTH) -> torch.Tensor:
    """n signals (n, length): sums of three sinusoids, 0.5–4 cycles per window, amplitudes 0.15–0.45."""
    t = torch.arange(length, dtype=torch.float32) / length
    f = 0.5 + 3.5 * torch.rand(n, 3, 1, generator=generator)
    a = 0.15 + 0.3 * torch.rand(n, 3, 1, generator=generator)
    phi = 2 * math.pi * torch.rand(n, 3, 1, generator=generator)
    return (a * torch.sin(2 * math.pi * f * t + phi)).sum(1)


def degrade_signal(y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """x = upsample(avg_pool_4(y)) + 0.02 z, same length as y."""
    if y.ndim != 2:
        raise ValueError(f"expected signals of shape (B, length), got {tuple(y.shape)}")
    obs = forward_model("signal")(y)
    return obs + _noise(obs.shape, NOISE_STD, generator, y.device)


def initial_iterate(x: torch.Tensor, sigma0: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """y0 = observation + σ₀ z (the observation is x[:, :1] for images, x itself for signals)."""
    obs = x[:, 0:1] if x.ndim == 4 else x
    z = torch.randn(obs.shape, generator=generator).to(obs.device) if generator is not None else torch.randn_like(obs)
    return obs + sigma0 * z


@dataclass
class TaskData:
    """Pairs (x, y) of one task: inputs x, answers y, optional labels, and where the answers came from."""
    name: str
    x: torch.Tensor
    y: torch.Tensor
    source: str

    def __len__(self):
        return self.y.shape[0]

    def subset(self, n: int) -> "TaskData":
        if n > len(self):
            raise ValueError(f"asked for {n} pairs of {self.name}, only {len(self)} available")
        return TaskData(self.name, self.x[:n], self.y[:n], self.source)

    def to(self, device):
        return TaskData(self.name, self.x.to(device), self.y.to(device), self.source)


def make_image_task(name: str, images: torch.Tensor, labels: torch.Tensor, seed: int, source: str,
                    rows=None) -> TaskData:
    """Degrade a fixed set of digits once (seeded) into task pairs."""
    g = torch.Generator().manual_seed(seed)
    return TaskData(name, degrade(name, images, labels, g, rows), images, source)


def make_signal_task(n: int, seed: int) -> TaskData:
    g = torch.Generator().manual_seed(seed)
    y = make_signals(n, g)
    return TaskData("signal", degrade_signal(y, g), y, f"synthetic sinusoid sums (seed {seed})")
