"""Task-adaptation pieces of notebook 06: tasks, energies, modulations, the hybrid source's options, training."""
import math
import pytest
import torch

from energy_utils import adaptation as ad
from energy_utils import denoisers
from energy_utils import adaptation_tasks as at
from energy_utils.hybrid import HybridSource
from energy_utils.networks import DenoiserCNN


def digits(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_image_tasks_render_twelve_channels():
    images, labels = digits()
    for name in at.IMAGE_TASKS:
        x = at.degrade(name, images, labels, torch.Generator().manual_seed(0))
        assert x.shape == (6, at.X_CHANNELS, 28, 28)
    x = at.degrade("completion", images, labels, torch.Generator().manual_seed(0), rows=10)
    assert torch.equal(x[:, 0, :10], images[:, 0, :10]) and (x[:, 0, 10:] == 0).all()
    assert torch.equal(x[:, 2:].flatten(2).amax(2).argmax(1), labels)
    assert at.completion_constraint(x, images).abs().max() == 0


def test_tasks_reject_bad_input():
    images, labels = digits()
    with pytest.raises(ValueError, match="unknown image task"):
        at.degrade("denoise", images, labels, torch.Generator())
    with pytest.raises(ValueError, match="give the labels"):
        at.degrade("completion", images, None, torch.Generator())
    with pytest.raises(ValueError, match="28, 28"):
        at.degrade("deblur", torch.zeros(2, 28, 28), None, torch.Generator())
    with pytest.raises(ValueError, match="only 6 available"):
        at.make_image_task("deblur", images, labels, 0, "").subset(7)


def test_untrained_energy_is_the_observation_fit():
    images, labels = digits()
    x = at.degrade("deblur", images, labels, torch.Generator().manual_seed(0))
    E = ad.ConvTaskEnergy(at.X_CHANNELS)
    assert torch.allclose(E(x, images), 0.5 * ((images - x[:, :1]) ** 2).flatten(1).sum(1), rtol=1e-4)
    sig = at.make_signal_task(5, 0)
    V = ad.VectorTaskEnergy(at.SIGNAL_LENGTH)
    assert torch.allclose(V(sig.x, sig.y), 0.5 * ((sig.y - sig.x) ** 2).sum(1), rtol=1e-4)
    assert isinstance(ad.build_module(E.spec), ad.ConvTaskEnergy)


def test_equivariant_modulation_keeps_scale_equivariance_and_additive_breaks_it():
    torch.manual_seed(0)
    den = DenoiserCNN(1, depth=3, width=8).eval()
    images, labels = digits()
    x = at.degrade("superres", images, labels, torch.Generator().manual_seed(0))
    y = at.initial_iterate(x, 0.3, torch.Generator().manual_seed(1))
    alphas = tuple(torch.empty(4).uniform_(0.3, 3.0, generator=torch.Generator().manual_seed(2)).tolist())
    errors = {}
    for kind in ("equivariant", "additive", "biased"):
        m = ad.MODULATIONS[kind](at.X_CHANNELS)
        if kind == "biased":   # PyTorch initialises biases at random: the control is non-equivariant from the start
            assert all(mod.bias is not None for mod in (m.body_in, m.body_out[1], m.body_out[3]))
        src = ad.ModulatedSource(den, m)
        errors[kind] = denoisers.scale_equivariance_error(lambda v: src.adapted(v, x), y, alphas=alphas)
        assert isinstance(ad.build_module(m.spec), type(m))
    assert max(errors["equivariant"].values()) < 1e-5
    assert min(errors["additive"].values()) > 1e-3
    assert min(errors["biased"].values()) > 1e-4
    n_params = {k: sum(p.numel() for p in ad.MODULATIONS[k](at.X_CHANNELS, width=8).parameters()) for k in ("equivariant", "biased")}
    assert n_params["biased"] - n_params["equivariant"] == 2 * 8 + 1


def test_unit_scale_without_prior_is_irem_gradient_descent():
    sig = at.make_signal_task(4, 0)
    V = ad.VectorTaskEnergy(at.SIGNAL_LENGTH)
    src = HybridSource(None, V, sig.x, alpha=1.0, beta=0.0, explicit_scale="unit")
    y = sig.y.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(V(sig.x, y).sum(), y)
    assert torch.allclose(src.direction(sig.x, sig.y)[0], -grad)
    with pytest.raises(ValueError, match="without a denoiser"):
        HybridSource(None, V, sig.x, beta=1.0, explicit_scale="unit")
    with pytest.raises(ValueError, match="explicit_scale"):
        HybridSource(lambda y: y, V, sig.x, explicit_scale="sigma")


def test_gradnorm_balancing_weights_sum_to_one():
    sig = at.make_signal_task(4, 0)
    V = ad.VectorTaskEnergy(at.SIGNAL_LENGTH)
    den = lambda y: 0.5 * y
    src = HybridSource(den, V, sig.x, explicit_scale="unit", balance="gradnorm")
    y = sig.y + 0.3
    d = src.direction(sig.x, y)[0]
    f = den(y) - y
    _, gE = src.explicit(sig.x, y)
    a, b = gE.norm(dim=1, keepdim=True), f.norm(dim=1, keepdim=True)
    assert torch.allclose(d, f * b / (a + b + 1e-8) - gE * a / (a + b + 1e-8), atol=1e-6)


def scratch_signal_solver(hidden=64):
    """A signal task energy trained from scratch (IREM: β = 0) and its source, seeded."""
    torch.manual_seed(0)
    V = ad.VectorTaskEnergy(at.SIGNAL_LENGTH, hidden=hidden)
    return V, HybridSource(None, V, None, beta=0.0, explicit_scale="unit")


def test_training_through_the_unroll_lowers_the_validation_error():
    sig = at.make_signal_task(256, 0)
    val = at.make_signal_task(32, 1)
    V, src = scratch_signal_solver()
    hist = ad.train_solver(V, src, sig, val, n_steps=40, batch=32, lr=3e-3, unroll_steps=4, h=0.5, sigma0=0.2,
                           seed=0, val_every=39)
    assert hist["curve"][-1][1] < 0.9 * hist["curve"][0][1]
    assert ad.steps_to_target(hist["curve"], hist["curve"][-1][1]) [0] == 39
    assert ad.steps_to_target(hist["curve"], -1.0) == (None, None)


def test_fine_tuning_with_frozen_norm_keeps_batch_norm_statistics():
    torch.manual_seed(0)
    den = DenoiserCNN(1, depth=3, width=4)
    images, labels = digits(8)
    task = at.make_image_task("deblur", images, labels, 0, "")
    before = [b.clone() for n, b in den.named_buffers() if "running_sd" in n]
    weights = [w.detach().clone() for w in den.parameters()]
    hist = ad.train_solver(den, ad.ModulatedSource(den, None), task, task.subset(4), n_steps=3, batch=4, lr=1e-3,
                           unroll_steps=2, h=0.5, sigma0=0.2, seed=0, freeze_norm=True)
    after = [b for n, b in den.named_buffers() if "running_sd" in n]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert any(not torch.equal(w0, w1) for w0, w1 in zip(weights, den.parameters()))
    assert len(hist["curve"]) == 2


def test_late_improvement_says_how_far_from_flat_a_curve_ends():
    falling = [(0, 4.0, 0), (100, 2.2, 1), (200, 2.0, 2), (300, 2.0, 3), (400, 1.0, 4)]
    assert ad.late_improvement(falling, window=200) == pytest.approx(100.0)     # 2.0 at step 200 -> 1.0 at 400
    rising = [(0, 1.0, 0), (100, 0.5, 1), (200, 1.0, 2)]
    assert ad.late_improvement(rising, window=100) == pytest.approx(-50.0)      # over-fitting: negative
    assert math.isnan(ad.late_improvement(rising, window=500))


def test_curve_mean_is_the_time_average_of_the_validation_curve():
    flat = [(0, 2.0, 0.0), (10, 2.0, 1.0), (30, 2.0, 2.0)]
    assert ad.curve_mean(flat) == pytest.approx(2.0)
    # linear fall from 4 to 0 over 20 steps, then 0 for 20 steps: area 40 over 40 steps
    assert ad.curve_mean([(0, 4.0, 0), (20, 0.0, 1), (40, 0.0, 2)]) == pytest.approx(1.0)
    # learning sooner gives a smaller mean for the same end point
    assert ad.curve_mean([(0, 4.0, 0), (10, 1.0, 1), (40, 1.0, 2)]) < ad.curve_mean([(0, 4.0, 0), (30, 1.0, 1), (40, 1.0, 2)])
    with pytest.raises(ValueError, match="two points"):
        ad.curve_mean([(0, 1.0, 0.0)])


def test_early_stopping_trains_to_the_plateau_and_restores_the_best_weights():
    # 16 training signals: the scratch energy overfits, so the validation curve turns up and training must stop
    # before the 3,000-step cap with the weights of the lowest validation error
    sig = at.make_signal_task(16, 0)
    val = at.make_signal_task(32, 1)
    V, src = scratch_signal_solver()
    hist = ad.train_solver(V, src, sig, val, n_steps=3000, batch=16, lr=3e-3, unroll_steps=4, h=0.5, sigma0=0.2,
                           seed=0, val_every=10, early_stopping=dict(patience=3, max_reductions=1))
    errors = [c[1] for c in hist["curve"]]
    assert hist["converged_at"] < 3000
    assert hist["best_val_mse"] == min(errors) < errors[-1]
    assert hist["best_step"] == hist["curve"][errors.index(min(errors))][0]
    restored = ad.evaluate(src, val.x, val.y, 4, 0.5, 0.2, seed=12345).mean().item()
    assert restored == pytest.approx(hist["best_val_mse"], rel=1e-6)


def test_early_stopping_resumed_to_a_higher_cap_from_a_kept_state_equals_one_run(tmp_path):
    from energy_utils.training import keep_training_state, restore_training_state
    sig, val = at.make_signal_task(64, 0), at.make_signal_task(16, 1)
    stop = dict(patience=2, max_reductions=3)

    def run(cap, scratch):
        V, src = scratch_signal_solver(hidden=32)
        hist = ad.train_solver(V, src, sig, val, n_steps=cap, batch=16, lr=3e-3, unroll_steps=3, h=0.5, sigma0=0.2,
                               seed=0, val_every=10, scratch=scratch, early_stopping=stop)
        return V, hist

    _, first = run(40, tmp_path / "session1")                 # stopped by the cap: its state is kept ...
    assert first.get("converged_at") is None
    store = tmp_path / "data" / "state.pt"
    keep_training_state(tmp_path / "session1" / "train_state.pt", store)
    assert restore_training_state(store, tmp_path / "session2" / "train_state.pt")      # ... and restored elsewhere
    assert not restore_training_state(store, tmp_path / "session2" / "train_state.pt")  # not over a newer copy
    resumed, hist_resumed = run(90, tmp_path / "session2")
    direct, hist_direct = run(90, None)
    assert [c[:2] for c in hist_resumed["curve"]] == [c[:2] for c in hist_direct["curve"]]
    assert hist_resumed["best_step"] == hist_direct["best_step"]
    for a, b in zip(resumed.state_dict().values(), direct.state_dict().values()):
        assert torch.equal(a, b)


def test_image_degradations_are_their_linear_forward_model_plus_noise():
    images, labels = digits()
    for name in ("deblur", "superres"):
        x = at.degrade(name, images, labels, torch.Generator().manual_seed(0))
        residual = x[:, 0:1] - at.forward_model(name)(images)
        assert abs(residual.std().item() - at.NOISE_STD) < 0.002
    y = at.make_signals(50, torch.Generator().manual_seed(0))
    residual = at.degrade_signal(y, torch.Generator().manual_seed(1)) - at.forward_model("signal")(y)
    assert abs(residual.std().item() - at.NOISE_STD) < 0.002
    with pytest.raises(ValueError, match="completion is a mask"):
        at.forward_model("completion")


def test_input_features_keep_observation_mask_and_label():
    images, labels = digits()
    x = at.degrade("completion", images, labels, torch.Generator().manual_seed(0), rows=10)
    f = at.input_features(x)
    assert f.shape == (6, 2 * 784 + 10)
    assert torch.equal(f[:, :784], x[:, 0].flatten(1)) and torch.equal(f[:, -10:].argmax(1), labels)
    with pytest.raises(ValueError, match="task inputs of shape"):
        at.input_features(x[:, :3])
