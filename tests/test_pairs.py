"""Each notebooks/NN_topic.py source has a paired .ipynb with the same cells and a python3 kernelspec, and the
committed notebooks, results and figure catalog agree with each other."""
import copy
import json
import re

import nbformat
import pytest

from energy_utils import notebooks, paths, reporting

SOURCES = notebooks.notebook_sources()

# Committed notebooks last executed before the runner showed figures inline and wrote normalized notebooks.
# Remove a number here once its notebook has been re-run in the full profile.
NOT_RERUN_SINCE_INLINE_FIGURES: tuple[str, ...] = ()


def rerun_required(sources):
    """``sources`` as pytest params, the ones in NOT_RERUN_SINCE_INLINE_FIGURES marked as expected failures."""
    mark = pytest.mark.xfail(strict=False, reason="committed notebook predates inline figures and normalized "
                                                  "notebooks: re-run it in the full profile")
    return [pytest.param(p, id=p.stem, marks=[mark] if p.name[:2] in NOT_RERUN_SINCE_INLINE_FIGURES else [])
            for p in sources]


def nbval_notebooks() -> list[str]:
    """The notebooks of the Makefile's NBVAL_NOTEBOOKS line."""
    text = (paths.REPO_ROOT / "Makefile").read_text()
    line = re.search(r"^NBVAL_NOTEBOOKS\s*:=(.*)$", text, re.M)
    assert line, "the Makefile has no NBVAL_NOTEBOOKS line"
    return line.group(1).split()


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_pair_in_sync(source):
    assert notebooks.pair_differences(source) == []


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_committed_results_are_full_profile_and_passed(source):
    result_path = paths.REPO_ROOT / "results" / f"{source.stem}.json"
    assert result_path.exists(), f"{result_path.name} missing: run `make run`"
    result = json.loads(result_path.read_text())
    assert result["profile"] == "full"
    assert result["checks"] and all(c["passed"] for c in result["checks"])


def test_catalog_matches_committed_figures_and_results():
    figdir = paths.REPO_ROOT / "figures"
    catalog = json.loads((figdir / "catalog.json").read_text())
    assert catalog == reporting.catalog_from_results(paths.REPO_ROOT), "catalog.json is stale: re-run a notebook"
    for name, entry in catalog.items():
        for key in ("png", "pdf"):
            assert (figdir / entry[key]).exists(), entry[key]
        assert (paths.REPO_ROOT / entry["notebook"]).exists(), entry["notebook"]
        assert entry["profile"] == "full", name
    on_disk = {p.stem for p in figdir.glob("*.png")}
    assert on_disk == set(catalog), f"figures without a catalog entry: {on_disk - set(catalog)}; " \
                                    f"catalog entries without a file: {set(catalog) - on_disk}"
    readme = (figdir / "README.md").read_text()
    assert all(name in readme for name in catalog)


@pytest.mark.parametrize("source", rerun_required(SOURCES))
def test_committed_notebook_shows_every_figure_inline(source):
    result = json.loads((paths.REPO_ROOT / "results" / f"{source.stem}.json").read_text())
    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    shown = notebooks.inline_figures(nb)
    saved = [f["name"] for f in result["figures"]]
    assert saved, "every notebook saves at least one figure"
    assert sorted(shown) == sorted(saved), f"saved {saved}, shown inline {shown}"


@pytest.mark.parametrize("source", rerun_required(SOURCES))
def test_committed_notebook_is_normalized(source):
    """Stable cell ids and no execution timestamps: a re-run with the same results rewrites the same bytes."""
    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    assert nbformat.writes(nb) == nbformat.writes(notebooks.normalize_notebook(copy.deepcopy(nb)))


def test_nbval_notebooks_have_checked_outputs():
    """Every notebook that `make test` hands to nbval has cells marked NBVAL_CHECK_OUTPUT, and the committed
    notebook holds their outputs (a marked cell without outputs would compare nothing)."""
    listed = nbval_notebooks()
    assert "notebooks/01_miyasawa_tweedie.ipynb" in listed
    for name in listed:
        nb = nbformat.read(paths.REPO_ROOT / name, as_version=4)
        marked = [c for c in nb.cells if c.cell_type == "code" and "# NBVAL_CHECK_OUTPUT" in c.source]
        assert marked, f"{name}: no cell is marked # NBVAL_CHECK_OUTPUT"
        for cell in marked:
            assert cell.outputs, f"{name}: the marked cell {cell.source[:60]!r} has no committed output"
            assert not any(o.get("name") == "stderr" for o in cell.outputs), f"{name}: a marked cell writes to stderr"
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and 'PROFILE = "full"' in injected[0].source, f"{name}: nbval must re-run the full profile"
        retrain = [ln for ln in injected[0].source.splitlines() if ln.startswith("RETRAIN")]
        assert retrain in ([], ["RETRAIN = False"]), f"{name}: nbval must load committed weights, not retrain ({retrain})"


def test_retrain_option_parses_all_missing_or_a_list_of_names():
    import argparse
    assert notebooks.retrain_value("missing") == "missing"
    assert notebooks.retrain_value("ts_gru, pde_unet") == ["ts_gru", "pde_unet"]
    with pytest.raises(argparse.ArgumentTypeError, match="names"):
        notebooks.retrain_value(" , ")
