"""Run the numbered notebooks headless with papermill, and keep each ``.py``/``.ipynb`` pair in sync.

Each notebook lives as a jupytext ``py:percent`` source ``notebooks/NN_topic.py`` (what we edit and review)
paired with ``notebooks/NN_topic.ipynb`` (what readers open; it carries the outputs of the last full-profile
run). Command line::

    python -m energy_utils.notebooks run --profile full [01 03 ...]   # execute (full: rewrites notebooks/*.ipynb)
    python -m energy_utils.notebooks run --profile smoke               # outputs under build/smoke/
    python -m energy_utils.notebooks check                             # every pair in sync?

Pitfalls designed out: the kernel is named explicitly (``python3``) and must be this environment's
interpreter; the working directory is explicit (``notebooks/``); injected parameter names are checked against
the notebook's ``parameters`` cell (papermill itself only warns on a typo); notebooks run one at a time;
tqdm is throttled so logs stay readable.

Reproducible files: every executed notebook is written through :func:`normalize_notebook`, which gives each cell
an id derived from its type and source (the same on every run) and drops the execution timestamps, durations
and temporary paths that papermill and nbclient record. A re-run that computes the same numbers therefore
rewrites the same bytes, and ``git diff`` shows only what changed.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import paths

KERNEL = "python3"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": KERNEL}
REQUIRED_PARAMETERS = ("PROFILE", "SEED", "DEVICE", "RETRAIN")
# Execution records that change on every run although the results do not (see normalize_notebook).
VOLATILE_NOTEBOOK_METADATA = ("start_time", "end_time", "duration", "input_path", "output_path")   # metadata.papermill
VOLATILE_CELL_METADATA = ("start_time", "end_time", "duration")                                    # cell.metadata.papermill


def notebook_sources(selection: list[str] | None = None) -> list[Path]:
    """The ``notebooks/NN_*.py`` sources, sorted; ``selection`` filters by number prefix (e.g. ["01", "03"])."""
    sources = sorted(paths.NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
    if selection:
        unknown = [s for s in selection if not any(p.name.startswith(s) for p in sources)]
        if unknown:
            raise ValueError(f"no notebook matches {unknown}; have {[p.stem for p in sources]}")
        sources = [p for p in sources if any(p.name.startswith(s) for s in selection)]
    return sources


def read_source(py_path: Path):
    """The notebook object of a ``py:percent`` source, with the ``python3`` kernelspec."""
    import jupytext

    nb = jupytext.read(py_path, fmt="py:percent")
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
    return nb


def parameter_names(nb) -> set[str]:
    """Names assigned in the cell tagged ``parameters`` (exactly one such cell is required)."""
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"expected exactly one cell tagged 'parameters', found {len(cells)}")
    names = set()
    for node in ast.parse(cells[0].source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for t in targets:
            if isinstance(t, ast.Name):
                names.add(t.id)
    return names


def check_parameters(nb, parameters: dict, where: str = "") -> None:
    names = parameter_names(nb)
    missing = [p for p in REQUIRED_PARAMETERS if p not in names]
    if missing:
        raise ValueError(f"{where}: the parameters cell must define {missing}")
    unknown = sorted(set(parameters) - names)
    if unknown:
        raise ValueError(f"{where}: unknown parameter(s) {unknown}; the parameters cell defines {sorted(names)}")


def check_kernel() -> None:
    """Fail early when the ``python3`` kernel would start another interpreter than this environment's."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(KERNEL)
    exe = spec.argv[0]
    if exe in ("python", "python3", "{python}"):
        return  # resolved by jupyter_client to the current interpreter
    found = shutil.which(exe) or exe
    if Path(found).resolve().parent != Path(sys.executable).resolve().parent:
        raise RuntimeError(f"the '{KERNEL}' kernelspec in {spec.resource_dir} runs {exe}, not this environment's "
                           f"{sys.executable}; remove that kernelspec or run `{sys.executable} -m ipykernel install "
                           f"--user --name {KERNEL}`")


def execute(py_path: Path, output_path: Path, parameters: dict, timeout: int | None = None,
            log_output: bool = False):
    """Execute one notebook source with papermill and write the executed, normalized ``.ipynb`` to
    ``output_path`` (see :func:`normalize_notebook`); returns the notebook."""
    import nbformat
    import papermill

    py_path = Path(py_path)
    nb = read_source(py_path)
    check_parameters(nb, parameters, where=py_path.name)
    check_kernel()
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    env_before = {k: os.environ.get(k) for k in ("TQDM_MININTERVAL", "MPLBACKEND", "PYTHONWARNINGS")}
    os.environ.setdefault("TQDM_MININTERVAL", "15")   # a progress line every 15 s, not a flood
    os.environ.setdefault("MPLBACKEND", "Agg")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / (py_path.stem + ".ipynb")
        nbformat.write(nb, src)
        try:
            papermill.execute_notebook(str(src), str(output_path), parameters=parameters, kernel_name=KERNEL,
                                       language="python", cwd=str(paths.NOTEBOOK_DIR), progress_bar=False,
                                       log_output=log_output, execution_timeout=timeout,
                                       request_save_on_cell_execute=True)
            return write_normalized(output_path)
        finally:
            for k, v in env_before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def stable_cell_id(cell_type: str, source: str, taken: set[str]) -> str:
    """A cell id that depends only on the cell's type and source (a counter tells identical cells apart)."""
    base = hashlib.sha1(f"{cell_type}\n{source}".encode()).hexdigest()[:12]
    cell_id, n = base, 1
    while cell_id in taken:
        n += 1
        cell_id = f"{base}-{n}"
    taken.add(cell_id)
    return cell_id


def normalize_notebook(nb):
    """Make an executed notebook's file depend only on its cells and outputs (modifies ``nb`` and returns it).

    Cell ids become :func:`stable_cell_id` (jupytext and papermill draw random ones); papermill's start/end
    times, durations and temporary input/output paths and nbclient's ``execution`` timestamps are removed.
    Outputs, execution counts, tags, parameters and each cell's papermill status are kept.
    """
    pm = nb.metadata.get("papermill")
    if pm is not None:
        for key in VOLATILE_NOTEBOOK_METADATA:
            pm.pop(key, None)
    taken: set[str] = set()
    for cell in nb.cells:
        cell["id"] = stable_cell_id(cell.cell_type, cell.source, taken)
        cell.metadata.pop("execution", None)
        cell_pm = cell.metadata.get("papermill")
        if cell_pm is not None:
            for key in VOLATILE_CELL_METADATA:
                cell_pm.pop(key, None)
    return nb


def write_normalized(path: Path):
    """Rewrite the notebook file at ``path`` through :func:`normalize_notebook`; returns the notebook."""
    import nbformat

    nb = normalize_notebook(nbformat.read(path, as_version=4))
    nbformat.write(nb, path)
    return nb


def inline_figures(nb) -> list[str]:
    """Names of the figures shown inline by ``Report.save_figure`` (``image/png`` outputs tagged with a figure
    name), in output order."""
    return [out.get("metadata", {}).get("figure") for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells
            if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]


def pair_differences(py_path: Path) -> list[str]:
    """Differences between a source and its paired ``.ipynb`` (cell types and sources; outputs ignored)."""
    import nbformat

    ipynb = py_path.with_suffix(".ipynb")
    if not ipynb.exists():
        return [f"{ipynb.name} is missing: run `make run` (or `python -m energy_utils.notebooks run --profile full {py_path.name[:2]}`)"]
    a, b = _cells(read_source(py_path)), _cells(nbformat.read(ipynb, as_version=4))
    problems = []
    if len(a) != len(b):
        problems.append(f"{py_path.name} has {len(a)} cells, {ipynb.name} has {len(b)}")
    for i, (ca, cb) in enumerate(zip(a, b)):
        if ca != cb:
            problems.append(f"cell {i} differs ({ca[0]}): {ca[1][:60]!r} vs {cb[1][:60]!r}")
            break
    kernel = nbformat.read(ipynb, as_version=4).metadata.get("kernelspec", {}).get("name")
    if kernel != KERNEL:
        problems.append(f"{ipynb.name} kernelspec is {kernel!r}, expected {KERNEL!r}")
    return problems


def run_all(profile: str, selection: list[str] | None = None, extra: dict | None = None) -> None:
    """Execute notebooks one at a time. Full profile: the executed notebook replaces ``notebooks/NN.ipynb``."""
    for py in notebook_sources(selection):
        params = {"PROFILE": profile, **(extra or {})}
        out = py.with_suffix(".ipynb") if profile == "full" else paths.BUILD_DIR / profile / "notebooks" / f"{py.stem}.ipynb"
        t0 = time.perf_counter()
        print(f"=== {py.stem} ({profile}) -> {out.relative_to(paths.REPO_ROOT)}", flush=True)
        if profile == "full":  # execute into a temporary file so a failed run never clobbers the committed notebook
            tmp_out = paths.BUILD_DIR / "full" / "notebooks" / f"{py.stem}.ipynb"
            execute(py, tmp_out, params, log_output=True)
            shutil.copyfile(tmp_out, out)
        else:
            execute(py, out, params, log_output=True)
        print(f"=== {py.stem} done in {time.perf_counter() - t0:.0f} s", flush=True)


def retrain_value(text):
    """The RETRAIN parameter from the command line: 'missing', or a comma-separated list of model names."""
    if text == "missing":
        return text
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("--retrain takes no value (retrain all), 'missing', or names 'a,b'")
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m energy_utils.notebooks")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="execute notebooks with papermill")
    run.add_argument("--profile", default="full", choices=["smoke", "full"])
    run.add_argument("--retrain", nargs="?", const=True, default=False, type=retrain_value,
                     help="pass RETRAIN=True (train from scratch); '--retrain missing' trains only the models "
                          "without a committed checkpoint (notebooks 04 and 06); '--retrain a,b' passes the list "
                          "['a', 'b'] (notebook 07: retrain only those recipes)")
    run.add_argument("notebooks", nargs="*", help="number prefixes, e.g. 01 03 (default: all)")
    sub.add_parser("check", help="check that every .py/.ipynb pair is in sync")
    args = parser.parse_args(argv)
    if args.cmd == "run":
        run_all(args.profile, args.notebooks or None, {"RETRAIN": args.retrain} if args.retrain else None)
    else:
        bad = {py.name: d for py in notebook_sources() if (d := pair_differences(py))}
        for name, diffs in bad.items():
            print(name, *diffs, sep="\n  ")
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
