"""Where the time of `make run` goes: each notebook's last full-profile wall time (from committed weights) and
the training time recorded in its committed checkpoints (what `RETRAIN=True` costs on the same hardware).

Read from the committed files only (``results/*.json`` and the checkpoints' metadata), so it costs nothing;
``python scripts/bench_walltimes.py`` prints the rows, ``scripts/bench.py`` puts them in the one bench table.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TIME_KEYS = ("train_time_s", "train_wall_s", "wall_time_s", "seconds")     # as the notebooks recorded them


def training_seconds() -> dict[str, tuple[float, int, int]]:
    """{notebook prefix: (recorded training seconds, checkpoints with a time, checkpoints)}."""
    out = defaultdict(lambda: [0.0, 0, 0])
    for path in sorted((ROOT / "data" / "checkpoints").glob("*.pt")):
        meta = torch.load(path, map_location="cpu", weights_only=False).get("meta", {})
        entry = out[path.name[:2]]
        entry[2] += 1
        secs = next((meta[k] for k in TIME_KEYS if isinstance(meta.get(k), (int, float))), None)
        if secs is not None:
            entry[0] += float(secs)
            entry[1] += 1
    return {k: tuple(v) for k, v in out.items()}


def rows() -> list[dict]:
    train = training_seconds()
    out = []
    for path in sorted((ROOT / "results").glob("[0-9][0-9]_*.json")):
        res = json.loads(path.read_text())
        nb = path.stem
        retrain = bool(res.get("parameters", {}).get("RETRAIN"))
        out.append({"metric": f"`make run` wall time, {nb}", "setting": f"full profile, {res.get('hardware')}"
                    + (" (this run retrained)" if retrain else ", from committed weights"),
                    "ours": f"{res.get('wall_time_s', float('nan')) / 60:.1f} min", "goal": "reference"})
        secs, timed, total = train.get(nb[:2], (0.0, 0, 0))
        if total:
            out.append({"metric": f"training time recorded in the checkpoints, {nb}",
                        "setting": f"{timed} of {total} checkpoints carry a time (RETRAIN=True adds at least this)",
                        "ours": f"{secs / 60:.1f} min", "goal": "reference"})
    return out


if __name__ == "__main__":
    for r in rows():
        print(" | ".join(str(r[k]) for k in ("metric", "setting", "ours", "goal")), file=sys.stdout)
