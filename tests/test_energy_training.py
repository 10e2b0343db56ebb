"""Energy training through training.fit: the batch carries all randomness, so an interrupted run resumes exactly."""
import pytest
import torch

from energy_utils.covariances import CovFamily, DiagCov
from energy_utils.energy_models import ImageEnergy, VectorEnergy
from energy_utils.energy_training import energy_validation, train_energy_model

FAM = CovFamily(var_min=1e-2, var_max=10.0)
PLATEAU = dict(patience=1, factor=0.5, max_reductions=5, rel_tol=0.5, warmup=2)


def small_image_problem():
    torch.manual_seed(0)
    model = ImageEnergy(1, widths=(8, 8, 8), emb=4)
    torch.nn.init.normal_(model.out.weight, std=0.1)
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    validate = energy_validation(x[:6], FAM, {"iso@0.1": DiagCov.isotropic(0.1, (1, 8, 8))}, seed=3)
    return model, x, validate


def test_a_resumed_energy_training_continues_identically(tmp_path):
    torch.set_num_threads(1)
    kw = dict(dual=True, csm_weight=64.0, validate_every=2, plateau=PLATEAU, checkpoint_every=2)
    model, x, validate = small_image_problem()
    straight = train_energy_model(model, x, FAM, 6, 4, 1e-2, validate=validate, **kw)
    ref = {k: v.clone() for k, v in model.state_dict().items()}
    model, x, validate = small_image_problem()
    first = train_energy_model(model, x, FAM, 6, 4, 1e-2, validate=validate, scratch=tmp_path, max_time_s=1e-9, **kw)
    assert first["stopped_at"] == 1
    model, x, validate = small_image_problem()                   # a fresh process: rebuild, resume from scratch
    resumed = train_energy_model(model, x, FAM, 6, 4, 1e-2, validate=validate, scratch=tmp_path, **kw)
    assert resumed["resumed_from"] == 1
    assert resumed["loss"] == straight["loss"] and resumed["val"][-1]["val_loss"] == straight["val"][-1]["val_loss"]
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    assert list(straight["val"][0])[2:] == ["val_loss", "val_csm", "val_mse@iso@0.1"]
    assert all(set(e) == {"dsm", "csm"} for e in straight["extra"])
    model, x, validate = small_image_problem()                   # a changed loss does not continue this state
    with pytest.raises(ValueError, match="trained with settings .*delete that file"):
        train_energy_model(model, x, FAM, 6, 4, 1e-2, validate=validate, scratch=tmp_path, dsm_floor=1.0, **kw)


def test_a_floored_validation_reports_the_paper_loss_beside_the_watched_one():
    model, x, _ = small_image_problem()
    fixed = {"iso@0.1": DiagCov.isotropic(0.1, (1, 8, 8))}
    plain = energy_validation(x[:6], FAM, fixed, seed=3)(model)
    floored = energy_validation(x[:6], FAM, fixed, seed=3, dsm_floor=1.0)(model)
    assert list(floored) == ["val_loss", "val_loss_paper", "val_csm", "val_mse@iso@0.1"]
    assert floored["val_loss_paper"] == plain["val_loss"] and floored["val_csm"] == plain["val_csm"]
    assert floored["val_loss"] < plain["val_loss"]       # weights v/(v + 1) < 1 on every coordinate


def test_single_and_dual_see_the_same_batches_and_differ_only_by_the_csm_term():
    torch.set_num_threads(1)
    hist = {}
    for dual in (False, True):
        torch.manual_seed(0)
        model = VectorEnergy(4, width=16, depth=1, emb=8)
        data = lambda n, g: 2.0 + 0.3 * torch.randn(n, 4, generator=g, dtype=torch.float64)   # a sampler callable
        hist[dual] = train_energy_model(model, data, FAM, 1, 16, 1e-2, dual=dual, csm_weight=4.0, log_every=1)
    assert hist[True]["extra"][0]["dsm"] == hist[False]["extra"][0]["dsm"]
    assert hist[True]["loss"][0] == pytest.approx(hist[False]["loss"][0] + 4.0 * hist[True]["extra"][0]["csm"])


def test_energy_training_rejects_bad_input():
    model, x, validate = small_image_problem()
    with pytest.raises(ValueError, match="vectors .* or images"):
        train_energy_model(model, x[:, 0], FAM, 1)                            # (N, H, W): no channel axis
    with pytest.raises(ValueError, match="plateau training needs a validate"):
        train_energy_model(model, x, FAM, 1, plateau=PLATEAU)
    with pytest.raises(ValueError, match="fixed covariance"):
        energy_validation(x, FAM, {"wrong": DiagCov.isotropic(0.1, (1, 4, 4))})
