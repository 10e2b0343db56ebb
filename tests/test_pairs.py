"""Each notebooks/NN_topic.py source has a paired .ipynb with the same cells and a python3 kernelspec, and the
committed notebooks, results and figure catalog agree with each other."""
import json

import pytest

from energy_utils import notebooks, paths, reporting

SOURCES = notebooks.notebook_sources()


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
