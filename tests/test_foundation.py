"""Reporting, data loading, checkpoints, training loop and runtime helpers."""
import json
import math

import numpy as np
import pytest
import torch

from energy_utils import checkpoints, data, paths, reporting, runtime, training


def test_report_writes_json_and_raises_on_failed_check(output_dir):
    rep = reporting.Report("99_example", "smoke", 3, "cpu", parameters={"a": np.float32(1.5)})
    rep.value("x", torch.tensor(2.0))
    rep.table("t", [{"a": 1, "b": np.float64(2.5)}])
    assert rep.check("small", 1e-9, 1e-8, "<")
    assert not rep.check("nan never passes", float("nan"), 1.0, "<")
    with pytest.raises(reporting.CheckFailed, match="nan never passes"):
        rep.finish()
    result = json.loads((output_dir / "results" / "99_example.json").read_text())
    assert result["profile"] == "smoke" and result["seed"] == 3 and result["values"]["x"] == 2.0
    assert [c["passed"] for c in result["checks"]] == [True, False]


def test_check_or_record_asserts_final_models_and_records_the_verdict_otherwise(output_dir):
    """Not asserted: a failing claim is recorded with its verdict and does not fail the report; asserted: it
    is an ordinary check and fails it."""
    rep = reporting.Report("96_claims", "smoke", 0, "cpu")
    assert not rep.check_or_record(False, "beats the control", 1.2, 1.0, "<", key="pending")
    assert rep.check_or_record(False, "nan-free", 0.5, 1.0, "<", note="n", key="pending")
    assert [(c["name"], c["passes_now"]) for c in rep.values["pending"]] == [("beats the control", False),
                                                                          ("nan-free", True)]
    assert not rep.check_or_record(False, "nan never passes", float("nan"), 1.0, "<", key="pending")
    with pytest.raises(ValueError, match="comparison"):
        rep.check_or_record(False, "bad", 1.0, 1.0, "=<")
    rep.check("ok", 0, 1, "<")
    rep.finish()                                      # nothing asserted failed
    rep.check_or_record(True, "beats the control", 1.2, 1.0, "<")
    with pytest.raises(reporting.CheckFailed, match="beats the control"):
        rep.finish()


def test_report_without_checks_fails(output_dir):
    with pytest.raises(reporting.CheckFailed, match="no checks"):
        reporting.Report("98_empty", "smoke", 0, "cpu").finish()


def test_save_figure_png_pdf_and_catalog(output_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rep = reporting.Report("97_fig", "smoke", 0, "cpu")
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    rep.save_figure(fig, "97_line", "a line")
    assert (output_dir / "figures" / "97_line.png").exists() and (output_dir / "figures" / "97_line.pdf").exists()
    rep.check("ok", 0, 1, "<")
    rep.finish()
    catalog = json.loads((output_dir / "figures" / "catalog.json").read_text())
    assert catalog["97_line"]["caption"] == "a line"
    assert catalog["97_line"]["notebook"] == "notebooks/97_fig.ipynb"
    assert "97_line" in (output_dir / "figures" / "README.md").read_text()
    # a re-run that no longer makes the figure drops it from the catalog
    rep2 = reporting.Report("97_fig", "smoke", 0, "cpu")
    rep2.check("ok", 0, 1, "<")
    rep2.finish()
    assert "97_line" not in json.loads((output_dir / "figures" / "catalog.json").read_text())
    with pytest.raises(ValueError, match="notebook number"):
        rep.save_figure(fig, "line", "no number")


def test_smoke_outputs_never_go_to_the_repository(monkeypatch):
    monkeypatch.delenv("ENERGY_OUTPUT_DIR", raising=False)
    assert paths.output_root("smoke") == paths.BUILD_DIR / "smoke"
    assert paths.output_root("full") == paths.REPO_ROOT
    with pytest.raises(ValueError, match="unknown PROFILE"):
        runtime.check_profile("fast")


def test_named_generator_gives_one_stream_per_name_whatever_ran_before():
    a = runtime.named_generator(78, "box", "DPS")
    torch.randn(5, generator=runtime.named_generator(78, "box", "PC-MALA"))      # another stream drawn first
    b = runtime.named_generator(78, "box", "DPS")
    assert torch.equal(torch.randn(4, generator=a), torch.randn(4, generator=b))
    assert not torch.equal(torch.randn(4, generator=runtime.named_generator(78, "box", "DPS")),
                           torch.randn(4, generator=runtime.named_generator(78, "pixels", "DPS")))
    assert not torch.equal(torch.randn(4, generator=runtime.named_generator(78, "box", "DPS")),
                           torch.randn(4, generator=runtime.named_generator(80, "box", "DPS")))


def test_seed_everything_is_deterministic():
    runtime.seed_everything(5)
    a = torch.randn(3)
    runtime.seed_everything(5)
    assert torch.equal(a, torch.randn(3))
    with pytest.raises(ValueError):
        runtime.seed_everything(-1)


def test_image_sets_load_or_fall_back(monkeypatch):
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    fallback = data.load_image_set("Set12", limit=2)
    assert "fallback" in fallback.source and fallback.images[0].ndim == 2
    assert 0 <= fallback.images[0].min() and fallback.images[0].max() <= 1
    assert not set(data.FALLBACK_TRAIN) & set(data.FALLBACK_TEST_GRAY)
    colour = data.load_image_set("Set5", limit=1)
    assert colour.images[0].ndim == 3
    with pytest.raises(ValueError, match="unknown image set"):
        data.load_image_set("Set13")
    monkeypatch.setenv(data.DATA_ENV, "/nonexistent/place")
    with pytest.raises(FileNotFoundError, match="ENERGY_DATA_DIR"):
        data.load_image_set("Set12")


def test_standard_sets_when_configured():
    root = data.data_dir()
    if root is None or not (root / "Set12").is_dir():
        pytest.skip("ENERGY_DATA_DIR with Set12 not configured")
    s = data.load_image_set("Set12")
    assert len(s.images) == 12 and "Set12" in s.source


def test_mnist_splits_are_disjoint_without_test_set(monkeypatch):
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    train, test = data.load_mnist("train"), data.load_mnist("test")
    fit, val = data.load_mnist("fit"), data.load_mnist("val")
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (500, 1, 28, 28)
    assert fit.images.shape == (4000, 1, 28, 28) and val.images.shape == (500, 1, 28, 28)
    assert float(train.images.max()) <= 1.0 and "held out" in test.source
    # no test digit appears in any split a model is trained or validated on
    flat = lambda d: {bytes(x.numpy().tobytes()) for x in d.images}
    assert not flat(test) & (flat(train) | flat(fit) | flat(val))
    assert not flat(val) & flat(fit)
    with pytest.raises(ValueError, match="split must be one of"):
        data.load_mnist("training")


def test_mnist_fit_split_is_disjoint_from_the_test_set_when_present():
    if data.data_dir() is None or not (data.data_dir() / "MNIST").is_dir():
        pytest.skip("the 10k MNIST test set is not in ENERGY_DATA_DIR")
    fit, test = data.load_mnist("fit"), data.load_mnist("test")
    assert test.images.shape[0] == 10_000
    assert not {x.numpy().tobytes() for x in fit.images} & {x.numpy().tobytes() for x in test.images}


def test_extract_patches_shapes():
    img = np.random.rand(60, 70).astype(np.float32)
    p = data.extract_patches([img], size=20, stride=10, scales=(1.0, 0.5))
    assert p.shape[1:] == (1, 20, 20)
    assert p.shape[0] == 5 * 6 + 2 * 2


def test_crops_at_each_position_and_of_named_sets(monkeypatch):
    img = np.arange(5 * 7, dtype=np.float32).reshape(5, 7)
    assert torch.equal(data.crop(img, 3, "center")[0], torch.from_numpy(img[1:4, 2:5]))
    assert torch.equal(data.crop(img, 3, "top-left")[0], torch.from_numpy(img[:3, :3]))
    assert torch.equal(data.crop(img, 3, "bottom-right")[0], torch.from_numpy(img[-3:, -3:]))
    rgb = np.random.rand(6, 6, 3).astype(np.float32)
    assert torch.equal(data.center_crop(rgb, 4), torch.from_numpy(rgb[1:5, 1:5]).permute(2, 0, 1))
    with pytest.raises(ValueError, match="unknown crop position"):
        data.crop(img, 3, "middle")
    with pytest.raises(ValueError, match="smaller than the crop"):
        data.crop(img, 6)
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    crops, names, sources = data.set_crops([("Set12", 2), ("Set5", 1)], 16, gray=True)
    assert crops.shape == (3, 1, 16, 16) and names[0].startswith("Set12/") and names[2].startswith("Set5/")
    assert set(sources) == {"Set12", "Set5"} and "grey centre crops 16²" in sources["Set5"]
    colour, _, _ = data.set_crops([("Set5", 1)], 16, gray=False)
    assert colour.shape == (1, 3, 16, 16)


def test_checkpoint_roundtrip_and_missing(monkeypatch):
    model = torch.nn.Linear(3, 2)
    path = checkpoints.save_checkpoint("unit_test_linear", model.state_dict(), {"in": 3}, "smoke")
    loaded = checkpoints.load_checkpoint("unit_test_linear", "smoke")
    assert loaded["meta"] == {"in": 3}
    assert torch.equal(loaded["state_dict"]["weight"], model.weight.detach())
    path.unlink()
    with pytest.raises(FileNotFoundError, match="RETRAIN=True"):
        checkpoints.load_checkpoint("unit_test_linear", "smoke")


def test_should_train_applies_retrain_to_one_model():
    committed, absent = "04_addition_irem_s0", "no_such_model_for_the_test"
    assert checkpoints.has_checkpoint(committed, "full") and not checkpoints.has_checkpoint(absent, "full")
    assert not checkpoints.should_train(committed, False) and not checkpoints.should_train(absent, False)
    assert checkpoints.should_train(committed, True) and checkpoints.should_train(absent, True)
    assert not checkpoints.should_train(committed, "missing") and checkpoints.should_train(absent, "missing")
    with pytest.raises(ValueError, match="RETRAIN must be one of"):
        checkpoints.should_train(committed, "yes")


def test_should_train_missing_resumes_a_model_stopped_by_a_lower_step_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints.paths, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    monkeypatch.setattr(checkpoints, "MANIFEST", tmp_path / "MANIFEST.json")
    capped, flat = "capped_model", "flat_model"
    checkpoints.save_checkpoint(capped, {}, {"cap": 1000, "converged_at": None}, "full")
    checkpoints.save_checkpoint(flat, {}, {"cap": 1000, "converged_at": 700}, "full")
    assert checkpoints.should_train(capped, "missing", step_cap=2000)
    assert not checkpoints.should_train(capped, "missing", step_cap=1000)
    assert not checkpoints.should_train(capped, "missing") and not checkpoints.should_train(capped, False, step_cap=2000)
    assert not checkpoints.should_train(flat, "missing", step_cap=10**6)      # its curve flattened: nothing to resume
    assert checkpoints.should_train("never_trained", "missing", step_cap=10)


def test_fit_learns_resumes_and_guards_divergence(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(256, 2)
    y = x @ torch.tensor([[1.0], [-2.0]])

    def loss_fn(model, batch):
        return ((model(batch[0]) - batch[1]) ** 2).mean()

    def make():
        torch.manual_seed(1)
        m = torch.nn.Linear(2, 1)
        return m, torch.optim.SGD(m.parameters(), lr=0.1)

    m, opt = make()
    hist = training.fit(m, opt, loss_fn, lambda s: (x, y), 60, scratch=None)
    assert hist["loss"][-1] < 0.01 * hist["loss"][0]

    m1, opt1 = make()
    training.fit(m1, opt1, loss_fn, lambda s: (x, y), 30, scratch=tmp_path, checkpoint_every=10)
    m2, opt2 = make()
    h2 = training.fit(m2, opt2, loss_fn, lambda s: (x, y), 60, scratch=tmp_path, checkpoint_every=10)
    assert h2["resumed_from"] == 30
    assert torch.allclose(m2.weight, m.weight, atol=1e-6)   # resumed run ends where the straight run did

    m3, _ = make()
    with pytest.raises(training.DivergenceError, match="step"):
        training.fit(m3, torch.optim.SGD(m3.parameters(), lr=1e3), loss_fn, lambda s: (x * 1e3, y), 50)


def test_plateau_schedule_halves_on_flat_validation_and_ends_training(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = training.PlateauLR(opt, patience=2, factor=0.5, max_reductions=1, warmup=1)
    x = torch.randn(64, 2)
    y = x @ torch.tensor([[1.0], [-2.0]])
    calls = []

    def validate(m):
        calls.append(1)
        return {"val_loss": float((m(x) - y).pow(2).mean()) if len(calls) < 4 else 1.0}  # flat from the 4th call

    hist = training.fit(model, opt, lambda m, b: (m(b[0]) - b[1]).pow(2).mean(), lambda s: (x, y), 1000,
                        scheduler=sched, validate=validate, validate_every=5, scratch=tmp_path)
    assert hist["val"][0]["step"] == 0 and "converged_at" in hist
    assert sched.done and hist["converged_at"] < 1000
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    # a resumed call of a finished training does nothing more
    again = training.fit(model, opt, lambda m, b: (m(b[0]) - b[1]).pow(2).mean(), lambda s: (x, y), 1000,
                         scheduler=training.PlateauLR(opt, patience=2, factor=0.5, max_reductions=1, warmup=1),
                         validate=validate, validate_every=5, scratch=tmp_path)
    assert again["converged_at"] == hist["converged_at"] and len(again["step"]) == len(hist["step"])


def test_plateau_schedule_anneals_by_a_cosine_from_anneal_at_without_further_cuts():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = training.PlateauLR(opt, patience=1, factor=0.5, max_reductions=3, warmup=1, anneal_at=10,
                               anneal_steps=20, anneal_floor=0.02)
    sched.observe(1.0)
    sched.observe(2.0)                                   # one cut before the annealing: the rate is 0.05
    lrs = []
    for _ in range(40):
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
        if sched.count == 15:
            sched.observe(3.0)                           # flat validation while annealing: no cut
    assert lrs[8] == pytest.approx(0.05) and sched.reductions == 1 and not sched.done
    for n in (10, 15, 20, 30):                          # lr(n) = r (f + (1 − f) ½(1 + cos(π (n − a)/S)))
        frac = min(1.0, (n - 10) / 20)
        assert lrs[n - 1] == pytest.approx(0.05 * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac))))
    assert lrs[-1] == pytest.approx(0.05 * 0.02) and all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    opt2 = torch.optim.SGD(model.parameters(), lr=0.1)
    resumed = training.PlateauLR(opt2, patience=1, factor=0.5, max_reductions=3, warmup=1, anneal_at=10,
                                 anneal_steps=20)
    resumed.load_state_dict({"count": 15, "best": 1.0, "bad": 0, "reductions": 1})   # a state saved without annealing
    assert opt2.param_groups[0]["lr"] == pytest.approx(lrs[14])
    with pytest.raises(ValueError, match="anneal"):
        training.PlateauLR(opt, anneal_at=5, anneal_steps=0)


def test_plateau_schedule_anneal_when_flat_adds_a_cosine_after_the_plateau_rule_ends(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    x = torch.randn(64, 2)
    y = x @ torch.tensor([[1.0], [-2.0]])
    validate = lambda m: {"val_loss": 1.0}                        # flat from the start: two cuts, then flat
    loss_fn = lambda m, b: (m(b[0]) - b[1]).pow(2).mean()
    plain = torch.optim.SGD(model.parameters(), lr=0.1)
    ended = training.fit(model, plain, loss_fn, lambda s: (x, y), 1000, validate=validate, validate_every=5,
                         scheduler=training.PlateauLR(plain, patience=1, factor=0.5, max_reductions=1, warmup=1),
                         scratch=tmp_path)
    flat_at = ended["converged_at"]
    assert flat_at == 10                                          # validations at 0, 5, 10: cut at 5, flat at 10
    # resumed with the final annealing: the finished state anneals from its last step and ends anneal_steps later
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = training.PlateauLR(opt, patience=1, factor=0.5, max_reductions=1, warmup=1, anneal_when_flat=True,
                               anneal_steps=20, anneal_floor=0.02)
    hist = training.fit(model, opt, loss_fn, lambda s: (x, y), 1000, validate=validate, validate_every=5,
                        scheduler=sched, scratch=tmp_path)
    assert sched.anneal_at == flat_at and hist["converged_at"] == flat_at + 20 and sched.done
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 * 0.02)
    assert training.PlateauLR(opt, anneal_when_flat=True).state_dict()["anneal_at"] is None
    # from scratch the same: the annealing starts where the plateau rule ends
    model3 = torch.nn.Linear(2, 1)
    opt3 = torch.optim.SGD(model3.parameters(), lr=0.1)
    fresh = training.PlateauLR(opt3, patience=1, factor=0.5, max_reductions=1, warmup=1, anneal_when_flat=True,
                               anneal_steps=20)
    h3 = training.fit(model3, opt3, loss_fn, lambda s: (x, y), 1000, validate=validate, validate_every=5,
                      scheduler=fresh)
    assert fresh.anneal_at == 10 and h3["converged_at"] == 30
    with pytest.raises(ValueError, match="not both"):
        training.PlateauLR(opt, anneal_at=5, anneal_when_flat=True)


def test_hardware_description_names_the_cpu_model_and_threads():
    text = runtime.describe_hardware(torch.device("cpu"))
    assert text.startswith("CPU ") and runtime.cpu_model() in text and f"{torch.get_num_threads()} torch threads" in text
    assert runtime.cpu_model().strip()


def test_nbval_sanitizer_masks_last_digits_and_padding_but_not_verdicts():
    import re
    from pathlib import Path
    from nbval.plugin import get_sanitize_patterns
    patterns = get_sanitize_patterns((Path(__file__).parent / "nbval_sanitize.cfg").read_text())
    assert len(patterns) == 2                           # numbers and padding; no verdict is masked

    def clean(text):
        for regex, replace in patterns:
            text = re.sub(regex, replace, text)
        return text
    assert clean("unroll     0.01891 ± 0.0003   3") == clean("unroll    0.01892 ± 0.00029   3")
    assert clean("[PASS] collision: -0.4913 < 0") == clean("[PASS] collision: -0.5063 < 0")
    assert clean("[PASS] collision: -0.4913 < 0") != clean("[FAIL] collision: 0.0102 < 0")
    assert clean("wins 13 of 18") != clean("wins 12 of 18") and clean("holds") != clean("does not hold")
    border = "hybrid vs trajectory optimisation without a prior (success rate): "
    assert clean(border + "does not hold") != clean(border + "no measurable difference at this budget")
