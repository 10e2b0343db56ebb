"""Where things live: the repository, committed data, and the output folders of a run.

Outputs of the ``full`` profile go to the repository itself (``figures/``, ``results/``), because they are
the citable, committed results. Any other profile writes under ``build/<profile>/`` so a smoke run never
overwrites a committed result. ``ENERGY_OUTPUT_DIR`` overrides both (the tests point it at a temporary folder).
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"            # small data and checkpoints we made (committed)
CHECKPOINT_DIR = DATA_DIR / "checkpoints"
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
BUILD_DIR = REPO_ROOT / "build"          # ignored by git

OUTPUT_ENV = "ENERGY_OUTPUT_DIR"


def output_root(profile: str) -> Path:
    """Folder that receives ``figures/`` and ``results/`` for a run in ``profile``."""
    override = os.environ.get(OUTPUT_ENV)
    if override:
        return Path(override).resolve()
    if profile == "full":
        return REPO_ROOT
    return BUILD_DIR / profile


def figures_dir(profile: str) -> Path:
    return output_root(profile) / "figures"


def results_dir(profile: str) -> Path:
    return output_root(profile) / "results"


def runs_dir(profile: str) -> Path:
    """Where long, resumable experiment runs keep their per-chunk results: ``data/runs/`` (committed) for the
    ``full`` profile, ``<output root>/runs/`` for any other."""
    return DATA_DIR / "runs" if profile == "full" else output_root(profile) / "runs"


def scratch_dir(profile: str, name: str) -> Path:
    """An ignored folder for a run's intermediate files (resumable training checkpoints, caches)."""
    path = BUILD_DIR / "scratch" / profile / name
    path.mkdir(parents=True, exist_ok=True)
    return path
