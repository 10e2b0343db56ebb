"""Named background trainings: a sitting trains, saves a checkpoint with its validation curve, and resumes."""
import pytest
import torch

from energy_utils import checkpoints, denoisers, networks, recipes
from energy_utils.energy_models import ImageEnergy
from energy_utils.energy_training import load_energy_model


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


def test_natural_unet_recipe_trains_on_bsd400_patches_validates_on_set12_and_stays_bias_free():
    torch.set_num_threads(1)
    scratch = recipes.paths.scratch_dir("smoke", "03_bf_unet_natural")
    for f in scratch.glob("*"):
        f.unlink()
    model, meta = recipes.train("03_bf_unet_natural", "smoke", "cpu")
    assert isinstance(model, networks.DenoiserUNet) and meta["steps"] == recipes.SMOKE_STEPS
    assert "BSD400" in meta["data"]["train"] and "Set12" in meta["data"]["validation"]
    assert meta["batch"] == recipes.NATURAL_UNET_TRAIN["batch"]      # the full profile's batch, for budget_row
    assert len(meta["val"]) >= 2 and all(k.startswith("val_") or k in ("step", "wall_time_s") for k in meta["val"][-1])
    y = torch.rand(2, 1, 40, 40)
    with torch.no_grad():
        assert torch.allclose(model(3 * y), 3 * model(y), rtol=1e-4, atol=1e-5)


def test_energy_recipe_sitting_saves_a_loadable_energy_and_a_second_sitting_resumes():
    torch.set_num_threads(1)
    name = "08_mnist_energy_dual"
    scratch = recipes.paths.scratch_dir("smoke", name)
    for f in scratch.glob("*"):
        f.unlink()
    model, meta = recipes.train(name, "smoke", "cpu", max_time_s=1e-9)      # stops after its first step
    assert isinstance(model, ImageEnergy) and not model.training
    assert meta["steps"] == 1 and meta["converged"] is False and [v["step"] for v in meta["val"]] == [0]
    assert meta["dual"] is True and meta["csm_weight"] == recipes.MNIST_CSM_WEIGHT and meta["batch"] == 32
    assert {"val_loss", "val_csm", "val_mse@box14@1", "val_mse@iso@0.1"} <= set(meta["val"][0])
    ck = checkpoints.load_checkpoint(name, "smoke")
    loaded = ImageEnergy(**ck["meta"]["kwargs"])                             # as notebook 08 reloads its energies
    loaded.load_state_dict(ck["state_dict"])
    g = torch.Generator().manual_seed(0)
    x = recipes.data.load_mnist("val").images[:4]
    cov = recipes.MNIST_COV_FAMILY.sample(4, (1, 28, 28), g)
    assert torch.isfinite(loaded(x + cov.sample(1, g), cov)).all()
    model2, meta2 = recipes.train(name, "smoke", "cpu")                      # resumes at step 1, ends the budget
    assert meta2["steps"] == recipes.SMOKE_STEPS and [v["step"] for v in meta2["val"]] == [0, 8, 16, 24]
    assert torch.load(scratch / "train_state.pt", weights_only=False)["history"]["resumed_from"] == 1
    again, m = load_energy_model(name, "smoke")
    assert m["steps"] == recipes.SMOKE_STEPS and m["kind"] == "image" and m["cov_family"]["var_min"] == 1e-4
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model2.state_dict().values()))
    with pytest.raises(KeyError, match="spec"):
        denoisers.load_denoiser(name, "smoke")                               # an energy is not a denoiser


@pytest.mark.parametrize("name, rank, bounded, base_split", [
    ("08_mnist_energy_gres_dual", recipes.MNIST_GAUSSIAN_RANK, False, "fit"),
    ("08_mnist_energy_gres512bt_dual", recipes.MNIST_GAUSSIAN_RANK_512, True, "train")])
def test_gaussian_residual_energy_recipe_saves_a_model_that_reloads_with_its_base(name, rank, bounded, base_split):
    from energy_utils.energy_models import GaussianResidualEnergy
    torch.set_num_threads(1)
    for f in recipes.paths.scratch_dir("smoke", name).glob("*"):
        f.unlink()
    model, meta = recipes.train(name, "smoke", "cpu", max_time_s=1e-9)      # stops after its first step
    assert meta["kind"] == "image_gaussian_residual" and meta["kwargs"]["rank"] == rank
    assert model.net.bounded is bounded and meta["kwargs"]["net_kwargs"].get("bounded", False) is bounded
    assert meta["dsm_floor"] == recipes.MNIST_RESIDUAL_DSM_FLOOR > 0                # trained on the floored A-DSM
    assert meta["val"][0]["val_loss"] < meta["val"][0]["val_loss_paper"]            # ... and watched with it
    again, m = load_energy_model(name, "smoke")
    assert isinstance(again, GaussianResidualEnergy) and m["steps"] == 1 and again.net.bounded is bounded
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    digits = recipes.data.load_mnist(base_split)
    assert torch.allclose(again.base.mean, digits.images.mean(0), atol=1e-5)     # the base was fitted on its split
    assert m["data"]["Gaussian base"] == digits.source and m["data"]["train"] == recipes.data.load_mnist("fit").source


def test_annealed_energy_recipes_record_where_their_annealing_starts():
    for name in [*recipes.MNIST_BOUNDED_JOINT_ENERGY_RECIPES.values(), *recipes.MNIST_RANK512_ENERGY_RECIPES.values()]:
        anneal = recipes.get(name).model_meta(None)["anneal"]
        assert anneal["steps"] == recipes.MNIST_ENERGY_ANNEAL_STEPS and anneal["at"] > 0
        assert f"until step {anneal['at']:,}, then a cosine annealing" in recipes.get(name).summary
    for name in recipes.MNIST_ENERGY_RECIPES.values():          # fine-tuned: one annealing from their start
        assert recipes.get(name).model_meta(None)["anneal"] == {"at": 0, "steps": recipes.MNIST_ENERGY_ANNEAL_STEPS}
        assert "in one cosine annealing" in recipes.get(name).summary
    assert recipes.get("08_mnist_energy_gres_dual").model_meta(None)["anneal"] is None


def test_fine_tuning_recipe_starts_from_its_checkpoint_and_says_so():
    recipe = recipes.get("08_mnist_energy_gres512btft_dual")
    meta = recipe.model_meta(None)
    start = meta["init_from"]
    assert start == "08_mnist_energy_gres512bt_single" and meta["dual"] and meta["anneal"]["at"] == 0
    assert f"started from the trained {start}" in recipe.summary and "in one cosine annealing" in recipe.summary
    model = recipe.build()
    trained, _ = load_energy_model(start, "full")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values()))
    assert recipes.get(start).model_meta(None)["init_from"] is None


def test_fine_tuned_duals_differ_from_their_fair_single_arm_only_by_the_acsm_weight():
    single = recipes.get(recipes.MNIST_ENERGY_RECIPES["single"]).model_meta(None)
    assert recipes.MNIST_ENERGY_RECIPES["dual"] in recipes.MNIST_FINETUNED_DUAL_RECIPES.values()
    for lam, name in recipes.MNIST_FINETUNED_DUAL_RECIPES.items():
        meta = recipes.get(name).model_meta(None)
        assert meta["dual"] and not single["dual"] and meta["csm_weight"] == lam
        assert f"A-CSM weighted λ = {lam:g}" in recipes.get(name).summary
        for key in ("init_from", "anneal", "kwargs", "batch", "dsm_floor"):
            assert meta[key] == single[key], key
        trained = checkpoints.load_checkpoint(name)["meta"]          # committed, with the single arm's steps
        assert trained["steps"] == checkpoints.load_checkpoint(recipes.MNIST_ENERGY_RECIPES["single"])["meta"]["steps"]


def test_seed_recipes_differ_from_the_current_pair_only_by_their_training_seed():
    for seed, names in recipes.MNIST_ENERGY_SEED_RECIPES.items():
        for arm, name in names.items():
            meta = recipes.get(name).model_meta(None)
            current = recipes.get(recipes.MNIST_ENERGY_RECIPES[arm]).model_meta(None)
            assert meta["seed"] == seed and {**meta, "seed": 0} == current
            assert ("training seed" in recipes.get(name).summary) == (seed != 0)
            assert checkpoints.load_checkpoint(name)["meta"]["steps"] == recipes.MNIST_ENERGY_ANNEAL_STEPS


def test_offset_duals_start_from_the_single_of_their_seed_and_train_one_annealing():
    for seed, names in recipes.MNIST_OFFSET_SEED_RECIPES.items():
        assert names["single"] == recipes.MNIST_ENERGY_SEED_RECIPES[seed]["single"]
        meta = recipes.get(names["dual"]).model_meta(None)
        assert meta["init_from"] == names["single"] and meta["seed"] == seed and meta["dual"]
        assert meta["kwargs"]["offset"] is True and meta["anneal"] == {"at": 0, "steps": recipes.MNIST_ENERGY_ANNEAL_STEPS}
        trained = checkpoints.load_checkpoint(names["dual"])["meta"]                 # committed
        assert trained["steps"] == recipes.MNIST_ENERGY_ANNEAL_STEPS and trained["init_from"] == names["single"]
    assert recipes.MNIST_OFFSET_ENERGY_RECIPES == recipes.MNIST_OFFSET_SEED_RECIPES[0]


def test_training_budget_adds_the_start_of_a_fine_tuned_model():
    start = recipes.training_budget("08_mnist_energy_gres512bt_single")
    tuned = recipes.training_budget("08_mnist_energy_gres512btft_dual")
    own = checkpoints.load_checkpoint("08_mnist_energy_gres512btft_dual")["meta"]
    assert start["chain"] == ["08_mnist_energy_gres512bt_single"] and start["steps"] > 0
    assert tuned["chain"] == start["chain"] + ["08_mnist_energy_gres512btft_dual"]
    assert tuned["steps"] == start["steps"] + own["steps"]
    assert tuned["wall_time_s"] == pytest.approx(start["wall_time_s"] + own["wall_time_s"])
    row = recipes.budget_row("08_mnist_energy_gres512btft_dual")
    assert row["fine-tuned from"] == "08_mnist_energy_gres512bt_single" and row["steps in all"] == tuned["steps"]
    assert row["hours in all"] == round(tuned["wall_time_s"] / 3600, 2) and row["converged"] == own["converged"]


def test_validation_curve_of_a_fine_tuned_model_continues_its_start():
    start = recipes.validation_curve("08_mnist_energy_gres512bt_single")
    curve = recipes.validation_curve("08_mnist_energy_gres512btft_dual")
    own = checkpoints.load_checkpoint("08_mnist_energy_gres512btft_dual")["meta"]["val"]
    steps = [v["step"] for v in curve]
    assert curve[: len(start)] == start and steps == sorted(steps) and len(set(steps)) == len(steps)
    assert curve[-1]["step"] == recipes.training_budget("08_mnist_energy_gres512btft_dual")["steps"]
    assert curve[-1]["val_loss"] == own[-1]["val_loss"] and len(curve) == len(start) + len(own) - 1   # own step 0 = start's end


def test_offset_recipe_trains_the_offset_head_alone_from_its_trained_start_and_reloads():
    """``offset_only``: the fine-tuned single plus a SigmaOffset head, the head the only trainable part (so the
    denoiser stays the single's), recorded in the metadata so that the checkpoint rebuilds with its head."""
    torch.set_num_threads(1)
    name = "08_mnist_energy_gres512btfto_dual"
    for f in recipes.paths.scratch_dir("smoke", name).glob("*"):
        f.unlink()
    start, _ = load_energy_model("08_mnist_energy_gres512btft_single", "full")
    model, meta = recipes.train(name, "smoke", "cpu", max_time_s=1e-9)      # stops after its first step
    assert meta["kwargs"]["offset"] is True and meta["dual"] and meta["init_from"] == "08_mnist_energy_gres512btft_single"
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith("offset.") for n in trained)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in start.state_dict().items())   # everything else is the start's
    assert torch.count_nonzero(model.offset.nets["pixel"][-1].weight) > 0          # the head moved
    again, m = load_energy_model(name, "smoke")
    assert again.offset is not None and m["steps"] == 1
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), state.values()))
    with pytest.raises(ValueError, match="init_from and dual"):
        recipes._mnist_energy_recipe(False, True, 512, offset_only=True, init_from="08_mnist_energy_gres512btft_single")
