"""Every numbered notebook runs in the smoke profile and all of its checks pass."""
import json

import pytest

from energy_utils import notebooks

SOURCES = notebooks.notebook_sources()


@pytest.mark.notebook
@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_smoke(source, output_dir):
    notebooks.execute(source, output_dir / f"{source.stem}.ipynb", {"PROFILE": "smoke"})
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


def test_unknown_parameter_is_rejected(output_dir):
    with pytest.raises(ValueError, match="unknown parameter"):
        notebooks.execute(SOURCES[0], output_dir / "x.ipynb", {"PROFILE": "smoke", "PROFLE": "full"})


def test_every_notebook_has_the_required_parameters():
    for source in SOURCES:
        names = notebooks.parameter_names(notebooks.read_source(source))
        assert set(notebooks.REQUIRED_PARAMETERS) <= names, source.name
