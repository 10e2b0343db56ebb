"""Seeding, device selection and profile handling shared by every notebook."""
from __future__ import annotations

import os
import platform
import random
import zlib

import numpy as np
import torch

PROFILES = ("smoke", "full")


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown PROFILE {profile!r}: use one of {PROFILES}")
    return profile


def pick_profile(settings: dict, profile: str):
    """Return ``settings[profile]`` after checking the profile name, e.g. ``pick_profile({"smoke": 100, "full": 10_000}, PROFILE)``."""
    check_profile(profile)
    if profile not in settings:
        raise KeyError(f"no setting for profile {profile!r}; have {sorted(settings)}")
    return settings[profile]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a torch Generator seeded the same way."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"SEED must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def named_generator(seed: int, *names: str) -> torch.Generator:
    """A CPU generator seeded by ``seed + crc32("/".join(names)) mod 100,003``: one noise stream per named part
    of a run (e.g. a sampler on a task), the same whatever else the run does before it. (Notebooks 04 and 06
    predate it and seed their runs from names in their own ways.)"""
    return torch.Generator().manual_seed(seed + zlib.crc32("/".join(names).encode()) % 100_003)


def pick_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; any other string is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"DEVICE={device!r} was requested but CUDA is not available; use DEVICE='auto' or 'cpu'")
    return dev


def configure_threads(n: int | None = None) -> int:
    """Limit torch's CPU threads (``ENERGY_THREADS`` or ``n``); our machines have 2 cores shared with other jobs."""
    n = n or int(os.environ.get("ENERGY_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else ``platform.processor()``), or "unknown model".
    Results record it because trained models' last digits, and the speed of every run, differ between CPU types."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or "unknown model"


def describe_hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_model()} ({os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads)"
