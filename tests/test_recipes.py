"""Named background trainings: a sitting trains, saves a checkpoint with its validation curve, and resumes."""
import pytest
import torch

from energy_utils import denoisers, networks, recipes


def test_recipe_sitting_saves_a_checkpoint_and_a_second_sitting_resumes(monkeypatch, tmp_path):
    monkeypatch.setenv("ENERGY_THREADS", "1")
    torch.set_num_threads(1)
    scratch = recipes.paths.scratch_dir("smoke", "03_bf_unet_mnist")
    for f in scratch.glob("*"):
        f.unlink()
    model, meta = recipes.train("03_bf_unet_mnist", "smoke", "cpu", max_time_s=1.0)
    assert isinstance(model, networks.DenoiserUNet) and not model.training
    first = meta["steps"]
    assert 0 < first < recipes.SMOKE_STEPS and meta["val"][0]["step"] == 0 and meta["converged"] is False
    assert {"hardware", "wall_time_s", "data", "parameters"} <= set(meta)
    _, meta2 = recipes.train("03_bf_unet_mnist", "smoke", "cpu")          # resumes and finishes the smoke budget
    assert meta2["steps"] == recipes.SMOKE_STEPS and meta2["val"][0]["step"] == 0 and len(meta2["val"]) > len(meta["val"]) - 1
    loaded, m = denoisers.load_denoiser("03_bf_unet_mnist", "smoke")
    assert m["steps"] == recipes.SMOKE_STEPS and loaded.spec == model.spec
    with pytest.raises(KeyError, match="unknown recipe"):
        recipes.get("no_such_recipe")
