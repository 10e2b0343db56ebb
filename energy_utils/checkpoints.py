"""Committed trained weights under ``data/checkpoints/`` with a SHA-256 manifest (``data/MANIFEST.json``).

``save_checkpoint`` writes ``<name>.pt`` (state dict + the metadata needed to rebuild the model) and records
its checksum; ``load_checkpoint`` verifies the checksum and fails with a clear message when the file is
missing or altered. Full-profile notebooks write here; other profiles write to an ignored folder.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from . import paths

MANIFEST = paths.DATA_DIR / "MANIFEST.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_dir(profile: str) -> Path:
    """Where a profile's trained weights go: ``data/checkpoints`` for full, an ignored folder otherwise."""
    path = paths.CHECKPOINT_DIR if profile == "full" else paths.BUILD_DIR / "checkpoints" / profile
    path.mkdir(parents=True, exist_ok=True)
    return path


def training_state_path(name: str, profile: str) -> Path:
    """Where model ``name``'s resumable training state is kept between sessions: ``data/train_state/<name>.pt``
    (committed) for the full profile, the ignored scratch folder otherwise (see
    :func:`energy_utils.training.restore_training_state`)."""
    if profile == "full":
        return paths.DATA_DIR / "train_state" / f"{name}.pt"
    return paths.scratch_dir(profile, name) / "train_state.pt"


def _read_manifest(manifest: Path) -> dict:
    return json.loads(manifest.read_text()) if manifest.exists() else {}


def save_checkpoint(name: str, state_dict: dict, meta: dict, profile: str) -> Path:
    """Save ``{"state_dict", "meta"}`` as ``<name>.pt`` for ``profile``; full-profile files enter the manifest
    with their checksum, size and the scalar part of ``meta`` (curves and histories stay in the file)."""
    folder = checkpoint_dir(profile)
    path = folder / f"{name}.pt"
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}, "meta": meta}, tmp)
    tmp.replace(path)
    if profile == "full":
        manifest = _read_manifest(MANIFEST)
        summary = {k: v for k, v in meta.items() if k == "spec" or isinstance(v, (str, int, float, bool))}
        manifest[f"checkpoints/{name}.pt"] = {"sha256": sha256(path), "bytes": path.stat().st_size,
                                               "meta": summary}
        MANIFEST.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
    return path


def load_checkpoint(name: str, profile: str = "full", map_location="cpu") -> dict:
    """Load ``<name>.pt`` (verified against the manifest for committed weights). Returns ``{"state_dict", "meta"}``."""
    path = checkpoint_dir(profile) / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint {path} not found. Train it by running its notebook with RETRAIN=True "
            f"(profile {profile!r}), e.g. `make run` or papermill with -p RETRAIN True")
    if profile == "full":
        entry = _read_manifest(MANIFEST).get(f"checkpoints/{name}.pt")
        if entry is None:
            raise KeyError(f"{path} is not listed in {MANIFEST}; save it with save_checkpoint(..., profile='full')")
        digest = sha256(path)
        if digest != entry["sha256"]:
            raise ValueError(f"checksum mismatch for {path}: manifest {entry['sha256'][:12]}…, file {digest[:12]}…; "
                             f"the file was altered or is a Git LFS pointer; retrain with RETRAIN=True")
    return torch.load(path, map_location=map_location, weights_only=False)


def committed_sha256(name: str) -> str:
    """The SHA-256 the manifest records for the committed checkpoint ``name`` (what :func:`load_checkpoint`
    verifies the file against): results computed from it can name the exact weights they came from."""
    entry = _read_manifest(MANIFEST).get(f"checkpoints/{name}.pt")
    if entry is None:
        raise KeyError(f"checkpoints/{name}.pt is not listed in {MANIFEST}; train it with RETRAIN=True (full profile)")
    return entry["sha256"]


def has_checkpoint(name: str, profile: str = "full") -> bool:
    return (checkpoint_dir(profile) / f"{name}.pt").exists()


RETRAIN_CHOICES = (False, True, "missing")


def check_retrain(retrain):
    """Return a notebook's ``RETRAIN`` parameter, or raise if it is not one of :data:`RETRAIN_CHOICES`."""
    if retrain not in RETRAIN_CHOICES:
        raise ValueError(f"RETRAIN must be one of {RETRAIN_CHOICES}, got {retrain!r}")
    return retrain


def should_train(name: str, retrain, step_cap: int | None = None) -> bool:
    """A notebook's ``RETRAIN`` parameter applied to one model: False loads the committed full-profile weights,
    True trains, ``"missing"`` trains only when ``name`` has no committed full-profile checkpoint (the same
    weights as a full retraining when each model is seeded on its own). For a model trained with early stopping
    under a step cap, ``"missing"`` with ``step_cap`` also trains (resumes) a committed model that was stopped by
    a lower cap before its validation curve flattened (its meta: ``cap`` < ``step_cap``, ``converged_at`` None)."""
    check_retrain(retrain)
    if retrain != "missing":
        return retrain
    if not has_checkpoint(name, "full"):
        return True
    if step_cap is None:
        return False
    meta = load_checkpoint(name, "full")["meta"]
    return meta.get("converged_at") is None and meta.get("cap", step_cap) < step_cap


def verify_manifest() -> list[str]:
    """Return a list of problems (missing files, checksum mismatches, unlisted checkpoints); empty when all is well."""
    problems = []
    manifest = _read_manifest(MANIFEST)
    for rel, entry in manifest.items():
        path = paths.DATA_DIR / rel
        if not path.exists():
            problems.append(f"{rel}: listed in the manifest but missing")
        elif sha256(path) != entry["sha256"]:
            problems.append(f"{rel}: checksum mismatch")
    for path in sorted(paths.CHECKPOINT_DIR.glob("*.pt")):
        rel = f"checkpoints/{path.name}"
        if rel not in manifest:
            problems.append(f"{rel}: not in the manifest")
    return problems
