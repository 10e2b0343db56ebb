"""Every numbered notebook runs in the smoke profile, all of its checks pass, it shows every figure it saves,
and the executed notebook is written normalized (stable cell ids, no execution timestamps)."""
import copy
import json

import nbformat

import pytest

from energy_utils import notebooks

SOURCES = notebooks.notebook_sources()


@pytest.mark.notebook
@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_smoke(source, output_dir):
    executed = output_dir / f"{source.stem}.ipynb"
    notebooks.execute(source, executed, {"PROFILE": "smoke"})
    result = json.loads((output_dir / "results" / f"{source.stem}.json").read_text())
    assert result["profile"] == "smoke"
    assert result["checks"], "the notebook recorded no checks"
    failed = [c for c in result["checks"] if not c["passed"]]
    assert not failed, failed
    for key in ("seed", "device", "torch_version", "wall_time_s", "data", "values"):
        assert key in result
    for fig in result["figures"]:
        assert fig["caption"], fig
        for ext in ("png", "pdf"):
            assert (output_dir / "figures" / f"{fig['name']}.{ext}").exists()
    nb = nbformat.read(executed, as_version=4)
    # one inline image per saved figure, each tagged with its figure's name (Report.save_figure displays it)
    assert sorted(notebooks.inline_figures(nb)) == sorted(f["name"] for f in result["figures"])
    assert nbformat.writes(nb) == nbformat.writes(notebooks.normalize_notebook(copy.deepcopy(nb)))
    assert "start_time" not in nb.metadata.papermill and "execution" not in nb.cells[-1].metadata


def test_unknown_parameter_is_rejected(output_dir):
    with pytest.raises(ValueError, match="unknown parameter"):
        notebooks.execute(SOURCES[0], output_dir / "x.ipynb", {"PROFILE": "smoke", "PROFLE": "full"})


def test_every_notebook_has_the_required_parameters():
    for source in SOURCES:
        names = notebooks.parameter_names(notebooks.read_source(source))
        assert set(notebooks.REQUIRED_PARAMETERS) <= names, source.name


def test_report_shows_tables_and_figures_once_in_a_kernel(output_dir, monkeypatch):
    """In a real kernel: a recorded table is displayed unless the cell ends with it; a saved figure is shown
    inline exactly once, tagged with its name (also with the inline backend, which shows open figures)."""
    import nbclient

    monkeypatch.delenv("MPLBACKEND", raising=False)   # the kernel's default: matplotlib-inline
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in [
        "import matplotlib.pyplot as plt, pandas as pd\n"
        "from energy_utils.reporting import Report\n"
        "rep = Report('95_kernel', 'smoke', 0, 'cpu')",
        "own = pd.DataFrame({'a': [1.5, 2.5]})\n"
        "rep.table('listed', [{'x': 1}, {'x': 2}])\n"
        "rep.table('own', own)\n"
        "own",
        "fig, ax = plt.subplots()\n"
        "ax.plot([0, 1])\n"
        "rep.save_figure(fig, '95_line', 'a line')\n"
        "plt.show()",
    ]]
    nbclient.NotebookClient(nb, kernel_name=notebooks.KERNEL, timeout=120).execute()
    tables = [o for o in nb.cells[1].outputs if "text/html" in o.get("data", {})]
    assert [o.output_type for o in tables] == ["execute_result", "display_data"]
    assert ">x<" in tables[1].data["text/html"] and ">a<" in tables[0].data["text/html"]
    assert notebooks.inline_figures(nb) == ["95_line"]
    assert (output_dir / "figures" / "95_line.png").exists()
