"""Each notebooks/NN_topic.py source has a paired .ipynb with the same cells and a python3 kernelspec, and the
committed notebooks, results and figure catalog agree with each other."""
import json

import pytest

from energy_utils import notebooks, paths

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


def test_catalog_lists_existing_figures():
    catalog = json.loads((paths.REPO_ROOT / "figures" / "catalog.json").read_text())
    for name, entry in catalog.items():
        for key in ("png", "pdf"):
            assert (paths.REPO_ROOT / "figures" / entry[key]).exists(), entry[key]
        assert (paths.REPO_ROOT / entry["notebook"]).exists(), entry["notebook"]
    readme = (paths.REPO_ROOT / "figures" / "README.md").read_text()
    assert all(name in readme for name in catalog)
