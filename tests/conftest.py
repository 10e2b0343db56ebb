"""Shared test set-up: no test may write into the committed figures/ or results/."""
import os
import tempfile

import pytest

# Anything a test (or nbval's kernel) writes through energy_utils.paths goes to a throw-away folder, unless a
# test points ENERGY_OUTPUT_DIR elsewhere with monkeypatch. Set before the kernels start, so they inherit it.
os.environ.setdefault("ENERGY_OUTPUT_DIR", tempfile.mkdtemp(prefix="energy_test_outputs_"))
os.environ.setdefault("ENERGY_THREADS", "2")
os.environ.setdefault("TQDM_DISABLE", "1")
# nbval's kernels draw with the backend of the papermill runner (energy_utils.notebooks), so the figures they
# save are the ones a full run saves.
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def output_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ENERGY_OUTPUT_DIR", str(tmp_path))
    return tmp_path
