"""Results JSON, checks and citable figures: the one place a notebook reports what it measured.

A notebook creates one :class:`Report`, records its key numbers, tables and checks while it runs, saves
figures through :meth:`Report.save_figure`, and ends with :meth:`Report.finish`, which writes
``results/NN_topic.json`` and raises if a check failed (so papermill marks the run as failed).

Every figure is saved as PNG and PDF under ``figures/`` with a stable name and deterministic bytes; its caption
is stored in the notebook's results JSON. Inside a Jupyter kernel (papermill, nbval, Jupyter) the report also
shows what it records: each saved figure inline (an ``image/png`` output whose metadata names the figure) and
each table as a rendered DataFrame (once: not again when the cell itself ends with it). Creating a :class:`Report` applies the common figure style
(:mod:`energy_utils.style`). The figure catalog (``figures/catalog.json`` and ``figures/README.md``, which readers
open) is rebuilt from all results JSONs whenever a notebook writes its own, so it never holds stale entries
and needs no shared mutable state between notebooks.
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import math
import operator
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import paths, style
from .runtime import check_profile, describe_hardware

_COMPARISONS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq}
# How Report.table shows a long table in a notebook (the results JSON keeps every row).
TABLE_DISPLAY_OPTIONS = ("display.max_rows", 40, "display.min_rows", 20, "display.max_columns", 30)


def in_kernel() -> bool:
    """True inside a Jupyter kernel (papermill, nbval, Jupyter), False in a plain Python process or script run."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


_tables_to_show: list = []   # tables Report.table recorded in the running cell, shown when the cell ends


def show_recorded_tables(result=None) -> None:
    """IPython ``post_run_cell`` hook: display, as DataFrames, the tables recorded in the cell that just ran.

    A table that is the cell's own result (``report.table("t", df)`` ... ``df`` on the cell's last line) is
    skipped, because IPython has just shown it; so is a table recorded twice. Registered by :meth:`Report.table`.
    """
    import pandas as pd
    from IPython.display import display

    cell_result = getattr(result, "result", None)
    pending, shown = list(_tables_to_show), []
    _tables_to_show.clear()
    for rows in pending:
        if rows is cell_result or any(rows is s for s in shown):
            continue
        shown.append(rows)
        with pd.option_context(*TABLE_DISPLAY_OPTIONS):
            display(as_frame(rows))


def _show_tables_when_the_cell_ends() -> None:
    from IPython import get_ipython

    events = get_ipython().events
    if show_recorded_tables not in events.callbacks["post_run_cell"]:
        events.register("post_run_cell", show_recorded_tables)


def as_frame(rows: Any):
    """A table as a pandas DataFrame: a DataFrame as is, a list of dicts row by row, a dict of columns or of
    scalars (one row)."""
    import pandas as pd

    if isinstance(rows, pd.DataFrame):
        return rows
    if isinstance(rows, dict) and not all(isinstance(v, (list, tuple, np.ndarray)) for v in rows.values()):
        return pd.DataFrame([rows])
    return pd.DataFrame(rows)


def to_jsonable(obj: Any) -> Any:
    """Convert numpy / torch / pandas values into plain JSON types (non-finite floats become None)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "to_dict") and hasattr(obj, "columns"):  # pandas DataFrame
        return to_jsonable(obj.to_dict(orient="records"))
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


class CheckFailed(AssertionError):
    """Raised by :meth:`Report.finish` when at least one check did not pass."""


class Report:
    """Collects a notebook's numbers, checks and figures, and writes ``results/<name>.json``."""

    def __init__(self, name: str, profile: str, seed: int, device: torch.device | str, parameters: dict | None = None):
        check_profile(profile)
        self.name = name
        self.profile = profile
        self.seed = seed
        self.device = torch.device(device)
        self.parameters = dict(parameters or {})
        self.values: dict[str, Any] = {}
        self.tables: dict[str, Any] = {}
        self.checks: list[dict] = []
        self.data_sources: dict[str, str] = {}
        self.figures: list[dict] = []   # {"name", "caption"}
        self._t0 = time.perf_counter()
        self.started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        style.apply()

    # -- recording -------------------------------------------------------------------------------------
    def record_data(self, role: str, source: str) -> None:
        """Say which data a result used, e.g. ``record_data("test images", "Set12 (ENERGY_DATA_DIR)")``."""
        self.data_sources[role] = source

    def value(self, key: str, value: Any) -> Any:
        """Record one key number (or small structure) under ``values``; returns it for chaining."""
        self.values[key] = to_jsonable(value)
        return value

    def table(self, key: str, rows: Any, show: bool = True) -> Any:
        """Record a table (a DataFrame or a list of dicts) under ``tables``.

        Inside a kernel the table is also displayed as a DataFrame at the end of the cell (after its other
        outputs), unless the cell's last expression is this same object, which IPython shows anyway; see
        :func:`show_recorded_tables`. ``show=False`` records only (e.g. when the cell shows its own view)."""
        self.tables[key] = to_jsonable(rows)
        if show and in_kernel():
            _show_tables_when_the_cell_ends()
            _tables_to_show.append(rows)
        return rows

    @staticmethod
    def _judge(name, value, threshold, comparison, note, verdict_key):
        """The entry {name, value, threshold, comparison, <verdict_key>, note} of ``value <comparison> threshold``
        (NaN never passes), its verdict and its printed line's tail."""
        if comparison not in _COMPARISONS:
            raise ValueError(f"comparison must be one of {sorted(_COMPARISONS)}, got {comparison!r}")
        v = float(value)
        passed = math.isfinite(v) and bool(_COMPARISONS[comparison](v, float(threshold)))
        entry = {"name": name, "value": to_jsonable(v), "threshold": to_jsonable(threshold),
                 "comparison": comparison, verdict_key: passed}
        if note:
            entry["note"] = note
        line = f"{name}: {v:.4g} {comparison} {threshold:.4g}" + (f"  ({note})" if note else "")
        return entry, passed, line

    def check(self, name: str, value: float, threshold: float, comparison: str = "<=", note: str = "") -> bool:
        """Record the check ``value <comparison> threshold``; NaN never passes. Returns whether it passed."""
        entry, passed, line = self._judge(name, value, threshold, comparison, note, "passed")
        self.checks = [c for c in self.checks if c["name"] != name] + [entry]
        print(f"[{'PASS' if passed else 'FAIL'}] {line}")
        return passed

    def check_or_record(self, asserted: bool, name: str, value: float, threshold: float, comparison: str = "<=",
                        note: str = "", key: str = "claims_not_asserted") -> bool:
        """A claim written before the final run for models that are not final yet: :meth:`check` when
        ``asserted`` (e.g. the checkpoints say ``converged=True``); otherwise the same comparison is evaluated and
        recorded with its verdict in the list ``values[key]`` (name, value, threshold, comparison, passes_now,
        note) and printed as NOT ASSERTED, so that it can neither fail the notebook nor pass silently.
        Returns whether the claim holds now."""
        if asserted:
            return self.check(name, value, threshold, comparison, note)
        entry, passed, line = self._judge(name, value, threshold, comparison, note, "passes_now")
        self.values[key] = [c for c in self.values.get(key, []) if c["name"] != name] + [entry]
        print(f"[NOT ASSERTED: {'passes' if passed else 'FAILS'} now] {line}")
        return passed

    # -- figures ---------------------------------------------------------------------------------------
    def save_figure(self, fig, name: str, caption: str, dpi: int = style.SAVE_DPI) -> Path:
        """Save ``fig`` as ``figures/<name>.png`` and ``.pdf`` (same bytes for the same figure) and add it to the
        figure catalog. Inside a kernel, also display it inline (at ``style.FIGURE_DPI``; the output's metadata
        holds ``{"figure": name}``) and close it, so the notebook shows each saved figure exactly once."""
        if not name.startswith(self.name.split("_")[0] + "_"):
            raise ValueError(f"figure name {name!r} must start with the notebook number, e.g. {self.name.split('_')[0]}_...")
        out = paths.figures_dir(self.profile)
        out.mkdir(parents=True, exist_ok=True)
        png = out / f"{name}.png"
        fig.savefig(png, dpi=dpi, bbox_inches="tight", metadata=style.PNG_METADATA)
        fig.savefig(out / f"{name}.pdf", bbox_inches="tight", metadata=style.PDF_METADATA)
        self.figures = [f for f in self.figures if f["name"] != name] + [{"name": name, "caption": caption}]
        if in_kernel():
            import matplotlib.pyplot as plt
            from IPython.display import Image, display

            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=style.FIGURE_DPI, bbox_inches="tight", metadata=style.PNG_METADATA)
            display(Image(data=buf.getvalue(), format="png"), metadata={"figure": name})
            plt.close(fig)   # else the inline backend would show it a second time at the end of the cell
        return png

    # -- output ----------------------------------------------------------------------------------------
    def as_dict(self) -> dict:
        return {
            "notebook": self.name,
            "profile": self.profile,
            "seed": self.seed,
            "device": str(self.device),
            "hardware": describe_hardware(self.device),
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "started": self.started,
            "wall_time_s": round(time.perf_counter() - self._t0, 2),
            "parameters": to_jsonable(self.parameters),
            "data": self.data_sources,
            "values": self.values,
            "tables": self.tables,
            "figures": self.figures,
            "checks": self.checks,
        }

    def write(self) -> Path:
        out = paths.results_dir(self.profile)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{self.name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=2, allow_nan=False) + "\n")
        tmp.replace(path)
        rebuild_catalog(paths.output_root(self.profile))
        return path

    def finish(self) -> Path:
        """Write the results JSON, print a summary, and raise :class:`CheckFailed` if any check failed."""
        path = self.write()
        failed = [c for c in self.checks if not c["passed"]]
        print(f"wrote {path} ({len(self.checks)} checks, {len(failed)} failed, profile={self.profile})")
        if not self.checks:
            raise CheckFailed(f"{self.name}: no checks were recorded; every notebook must check something")
        if failed:
            lines = [f"  {c['name']}: {c['value']} {c['comparison']} {c['threshold']}" for c in failed]
            raise CheckFailed(f"{self.name}: {len(failed)} check(s) failed:\n" + "\n".join(lines))
        return path


def catalog_from_results(root: Path) -> dict:
    """The figure catalog that ``root/results/*.json`` describe: {name: {png, pdf, caption, notebook, profile}}."""
    catalog = {}
    for result in sorted((root / "results").glob("*.json")):
        data = json.loads(result.read_text())
        for fig in data.get("figures", []):
            catalog[fig["name"]] = {"png": f"{fig['name']}.png", "pdf": f"{fig['name']}.pdf", "caption": fig["caption"],
                                    "notebook": f"notebooks/{data['notebook']}.ipynb", "profile": data["profile"]}
    return dict(sorted(catalog.items()))


def rebuild_catalog(root: Path) -> dict:
    """Write ``root/figures/catalog.json`` and ``root/figures/README.md`` from every ``root/results/*.json``."""
    catalog = catalog_from_results(root)
    figdir = root / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    (figdir / "catalog.json").write_text(json.dumps(catalog, indent=2) + "\n")
    lines = ["# Figure catalog", "",
             "Every citable figure, as `figures/<name>.png` and `.pdf`, with the notebook that makes it and the",
             "profile of the run that made it. Rebuilt from `results/*.json` by the notebooks (`make run`); do not edit.", "",
             "| figure | caption | notebook | profile |", "|---|---|---|---|"]
    for key, e in catalog.items():
        cap = e["caption"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| [{key}]({e['png']}) ([pdf]({e['pdf']})) | {cap} | "
                     f"[{Path(e['notebook']).stem}](../{e['notebook']}) | {e['profile']} |")
    (figdir / "README.md").write_text("\n".join(lines) + "\n")
    return catalog
