"""What a notebook run leaves behind is readable and reproducible: one figure style, figures and tables shown
in the notebook, figure files and executed notebooks with the same bytes when the results are the same."""
import copy
import json
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from energy_utils import notebooks, reporting, style  # noqa: E402

VOLATILE_KEYS = {"start_time", "end_time", "duration", "input_path", "output_path", "execution"}


def volatile_fields(node, where="") -> list[str]:
    """Every key of ``VOLATILE_KEYS`` anywhere in a notebook's (or cell's) metadata, with its location."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in VOLATILE_KEYS:
                found.append(f"{where}/{key}")
            found += volatile_fields(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += volatile_fields(value, f"{where}[{i}]")
    return found


def notebook_metadata(nb) -> dict:
    return {"notebook": nb.metadata, "cells": [c.metadata for c in nb.cells]}


def a_figure():
    fig, axes = plt.subplots(1, 2, figsize=(6, 2.5))
    axes[0].plot(np.arange(10) ** 2, label="σ̂_t")
    axes[0].legend()
    axes[0].set_yscale("log")
    axes[1].imshow(np.random.default_rng(0).random((8, 8)))
    axes[1].set_title("‖x̂ − y‖² / N")
    return fig


def test_report_applies_the_common_style(output_dir):
    matplotlib.rcParams["axes.prop_cycle"] = matplotlib.cycler(color=["red", "green"])
    matplotlib.rcParams["font.size"] = 5.0
    reporting.Report("96_style", "smoke", 0, "cpu")
    import seaborn

    assert matplotlib.rcParams["axes.prop_cycle"].by_key()["color"] == seaborn.color_palette("colorblind").as_hex()
    assert matplotlib.rcParams["font.size"] == style.rc_params()["font.size"] >= 9
    assert matplotlib.rcParams["svg.hashsalt"] == "energy_utils"


def test_saving_the_same_figure_twice_gives_the_same_bytes(output_dir):
    rep = reporting.Report("96_bytes", "smoke", 0, "cpu")
    fig = a_figure()
    png = rep.save_figure(fig, "96_pair", "two panels")
    first = {ext: png.with_suffix(ext).read_bytes() for ext in (".png", ".pdf")}
    rep.save_figure(fig, "96_pair", "two panels")
    second = {ext: png.with_suffix(ext).read_bytes() for ext in (".png", ".pdf")}
    assert first == second
    assert b"CreationDate" not in first[".pdf"]
    assert b"Software" not in first[".png"]
    # a new figure object drawn the same way also gives the same files
    rep.save_figure(a_figure(), "96_pair", "two panels")
    assert {ext: png.with_suffix(ext).read_bytes() for ext in (".png", ".pdf")} == first
    plt.close("all")


def test_outside_a_kernel_nothing_is_displayed_and_figures_stay_open(output_dir, capsys):
    assert not reporting.in_kernel()
    rep = reporting.Report("96_quiet", "smoke", 0, "cpu")
    rep.table("t", [{"a": 1, "b": 2.5}])
    fig = a_figure()
    rep.save_figure(fig, "96_quiet", "a figure")
    assert capsys.readouterr().out == ""
    assert plt.fignum_exists(fig.number)
    plt.close(fig)


def test_in_a_kernel_tables_and_figures_are_displayed(output_dir, monkeypatch):
    import pandas as pd

    shown = []
    monkeypatch.setattr(reporting, "in_kernel", lambda: True)
    monkeypatch.setattr(reporting, "_show_tables_when_the_cell_ends", lambda: None)   # no IPython shell here
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append((obj, kw)))
    rep = reporting.Report("96_shown", "smoke", 0, "cpu")
    rows = [{"method": "irem", "mse": 0.123456789}, {"method": "ff", "mse": 0.5}]
    own = pd.DataFrame({"a": [1.0, 2.0]})
    rep.table("t", rows)
    rep.table("own", own)
    rep.table("hidden", [{"b": 1}], show=False)
    assert shown == [], "tables are shown when the cell ends"
    # the cell ends with `own` as its last expression: IPython shows that one, the report shows the other
    reporting.show_recorded_tables(SimpleNamespace(result=own))
    assert len(shown) == 1
    frame, _ = shown[0]
    assert list(frame.columns) == ["method", "mse"] and len(frame) == 2 and frame.mse.iloc[0] == 0.123456789
    assert rep.tables["t"] == rows   # the results JSON keeps the rows as recorded
    reporting.show_recorded_tables(SimpleNamespace(result=None))
    assert len(shown) == 1, "each recorded table is shown once"
    fig = a_figure()
    rep.save_figure(fig, "96_shown", "a figure")
    image, kw = shown[1]
    assert kw["metadata"] == {"figure": "96_shown"}
    assert image.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number), "a displayed figure is closed, so the inline backend cannot show it twice"
    assert len(shown) == 2


def test_as_frame_accepts_the_table_shapes_notebooks_record():
    import pandas as pd

    df = pd.DataFrame({"a": [1, 2]})
    assert reporting.as_frame(df) is df
    assert reporting.as_frame([{"a": 1}, {"a": 2}]).shape == (2, 1)
    assert reporting.as_frame({"a": [1, 2], "b": [3, 4]}).shape == (2, 2)
    assert reporting.as_frame({"a": 1, "b": 2.0}).shape == (1, 2)


def papermill_like_notebook(seed: int):
    """A notebook as papermill leaves it: random ids, timestamps and temporary paths in the metadata."""
    rng = np.random.default_rng(seed)
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"start_time": f"2026-11-23T09:0{seed}:00", "end_time": "2026-11-23T09:10:00",
                                "duration": 60.0 + seed, "input_path": f"/tmp/tmp{seed}/x.ipynb",
                                "output_path": "/somewhere/x.ipynb", "parameters": {"PROFILE": "full"},
                                "exception": None, "version": "2.7.0"}
    sources = [("markdown", "# title"), ("code", "x = 1"), ("code", "print(x)"), ("code", "x = 1")]
    for cell_type, source in sources:
        cell = nbformat.v4.new_code_cell(source) if cell_type == "code" else nbformat.v4.new_markdown_cell(source)
        cell["id"] = f"{rng.integers(1 << 30):08x}"
        cell.metadata["papermill"] = {"start_time": f"t{seed}", "end_time": f"t{seed}", "duration": 0.1 * seed,
                                      "exception": False, "status": "completed"}
        if cell_type == "code":
            cell.metadata["execution"] = {"iopub.status.busy": f"2026-11-23T09:0{seed}:01"}
        nb.cells.append(cell)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    return nb


def test_normalize_notebook_is_stable_and_drops_timestamps():
    a = notebooks.normalize_notebook(papermill_like_notebook(1))
    b = notebooks.normalize_notebook(papermill_like_notebook(2))
    assert nbformat.writes(a) == nbformat.writes(b), "two runs with the same cells and outputs give the same file"
    assert nbformat.writes(notebooks.normalize_notebook(copy.deepcopy(a))) == nbformat.writes(a)
    assert volatile_fields(notebook_metadata(a)) == []
    ids = [c["id"] for c in a.cells]
    assert len(set(ids)) == len(ids), ids                        # two identical "x = 1" cells, distinct ids
    assert a.metadata.papermill["parameters"] == {"PROFILE": "full"}
    assert a.cells[2].metadata.papermill == {"exception": False, "status": "completed"}
    assert a.cells[2].outputs[0]["text"] == "1\n"
    nbformat.validate(a)
    # a cell's id follows its source, not its position: inserting a cell leaves the other ids alone
    c = papermill_like_notebook(3)
    c.cells.insert(1, nbformat.v4.new_markdown_cell("inserted"))
    c = notebooks.normalize_notebook(c)
    assert [cell["id"] for cell in c.cells if cell.source != "inserted"] == ids


@pytest.mark.parametrize("source", notebooks.notebook_sources(), ids=lambda p: p.stem)
def test_normalizing_a_committed_notebook_twice_gives_the_same_json(source):
    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    once = notebooks.normalize_notebook(copy.deepcopy(nb))
    twice = notebooks.normalize_notebook(copy.deepcopy(once))
    assert nbformat.writes(once) == nbformat.writes(twice)
    assert volatile_fields(notebook_metadata(once)) == []
    assert json.loads(nbformat.writes(once))["cells"][-1]["outputs"] == json.loads(nbformat.writes(nb))["cells"][-1]["outputs"]
