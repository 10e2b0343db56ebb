"""Every benchmark in one table (``make bench``; printed, never asserted).

Imports each ``scripts/bench_*.py``, calls its ``rows()`` (a list of dicts with keys ``metric``, ``setting``,
``ours``, ``goal``) and prints one markdown table: metric | setting | ours | goal / reference. A script without
``rows()`` is skipped with a note; progress notes go to stderr, the table to stdout.

    .venv/bin/python scripts/bench.py [acsm sampler ...]     # all scripts, or only those named
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = (("metric", "metric"), ("setting", "setting"), ("ours", "ours"), ("goal", "goal / reference"))


def load(path: Path):
    """Import a script by path (its ``main()`` does not run: scripts guard it with ``__name__``)."""
    spec = importlib.util.spec_from_file_location(f"bench_scripts.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict]) -> str:
    """Markdown table of the rows (missing keys print as an empty cell)."""
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r.get(key, "")) for key, _ in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("only", nargs="*", help="benchmark names (bench_NAME.py); default: all")
    args = ap.parse_args(argv)
    rows = []
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem[len("bench_"):]
        if args.only and name not in args.only:
            continue
        module = load(path)
        if not callable(getattr(module, "rows", None)):
            print(f"note: {path.name} has no rows(); skipped (run it directly for its output)", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        got = module.rows()
        print(f"{path.name}: {len(got)} rows in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        rows += got
    print(table(rows))


if __name__ == "__main__":
    main()
