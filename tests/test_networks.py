"""Bias-free networks: exact scale equivariance, D(y) = J y, the biased twin breaks both; training helpers."""
import math

import pytest
import torch

from energy_utils import denoisers, networks


def _trained_stats(model, shape, steps=3):
    """Run a few training-mode forwards so running statistics are not the trivial initial ones."""
    model.train()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(steps):
            model(torch.rand(shape, generator=g) + 0.3 * torch.randn(shape, generator=g))
    return model.eval()


def test_bias_free_cnn_is_scale_equivariant_and_biased_twin_is_not():
    torch.manual_seed(0)
    shape = (4, 1, 16, 16)
    bf = _trained_stats(networks.DenoiserCNN(depth=5, width=8, bias_free=True), shape)
    bi = _trained_stats(networks.DenoiserCNN(depth=5, width=8, bias_free=False), shape)
    with torch.no_grad():  # give the biased twin non-trivial biases, as training would
        for m in bi.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.bias.normal_(0, 0.1)
    y = torch.rand(shape, dtype=torch.float32)
    e_bf = denoisers.scale_equivariance_error(bf.double(), y.double(), alphas=(0.1, 3.0, 40.0))
    e_bi = denoisers.scale_equivariance_error(bi.double(), y.double(), alphas=(0.1, 3.0, 40.0))
    assert max(e_bf.values()) < 1e-12
    assert min(e_bi.values()) > 1e-3
    assert not networks.has_additive_constants(bf) and networks.has_additive_constants(bi)


def test_bias_free_network_is_locally_linear_without_offset():
    torch.manual_seed(0)
    model = _trained_stats(networks.DenoiserCNN(depth=4, width=6), (2, 1, 8, 8)).double()
    y = torch.rand(1, 8, 8, dtype=torch.float64)
    J = denoisers.jacobian(model, y)
    assert J.shape == (64, 64)
    out = model(y[None]).reshape(-1)
    assert torch.allclose(J @ y.reshape(-1), out, atol=1e-10)       # D(y) = A_y y, no net bias
    assert denoisers.effective_dimension(torch.eye(5)).item() == pytest.approx(5.0)
    assert denoisers.symmetry_error(torch.eye(3)).item() == 0.0


def test_bias_free_batchnorm_has_no_shift_and_uses_running_sd_in_eval():
    bn = networks.BFBatchNorm2d(3)
    x = torch.randn(8, 3, 5, 5) * 2 + 1
    bn.train()
    out = bn(x)
    sd = torch.sqrt(x.var(dim=(0, 2, 3), unbiased=False) + bn.eps)
    assert torch.allclose(out, x / sd.view(1, -1, 1, 1), atol=1e-6)  # no mean subtraction
    assert torch.allclose(bn.running_sd, 0.9 + 0.1 * sd, atol=1e-6)
    bn.eval()
    assert torch.allclose(bn(2 * x), 2 * bn(x))


def test_mlp_homogeneity_with_sigma_input_and_clear_errors():
    torch.manual_seed(0)
    mlp = networks.BiasFreeMLP(2, hidden=16, depth=2, sigma_input=True).double()
    y = torch.randn(10, 2, dtype=torch.float64)
    s = torch.rand(10, dtype=torch.float64)
    assert torch.allclose(mlp(3 * y, 3 * s), 3 * mlp(y, s))
    with pytest.raises(ValueError, match="sigma"):
        mlp(y)
    with pytest.raises(ValueError, match="shape"):
        networks.DenoiserCNN()(torch.rand(2, 3, 8, 8))


def test_build_round_trip_and_blind_training_reduces_loss(tmp_path):
    torch.manual_seed(0)
    model = networks.DenoiserCNN(depth=3, width=8)
    clone = networks.build(model.spec)
    assert isinstance(clone, networks.DenoiserCNN) and clone.spec == model.spec
    g = torch.Generator().manual_seed(0)
    data = torch.rand(64, 1, 1, 1, generator=g).expand(64, 1, 12, 12).contiguous()   # flat patches: smoothing wins
    hist = denoisers.train_blind_denoiser(model, data, (0.05, 0.3), n_steps=60, batch_size=16, lr=3e-3,
                                          scratch=tmp_path / "s", desc="test")
    assert hist["loss"][-1] < 0.6 * hist["loss"][0]
    # resumable: a finished run restarts at its end without training again
    again = denoisers.train_blind_denoiser(model, data, (0.05, 0.3), n_steps=60, batch_size=16, lr=3e-3,
                                           scratch=tmp_path / "s")
    assert again["resumed_from"] == 60


def test_evaluate_denoiser_identity_gives_input_psnr():
    ident = networks.DenoiserCNN(depth=2, width=1)
    with torch.no_grad():
        for p in ident.parameters():
            p.zero_()
    imgs = torch.full((3, 1, 32, 32), 0.5)
    rows = denoisers.evaluate_denoiser(ident, imgs, [0.05], clamp=False)
    assert rows[0]["psnr"] == pytest.approx(rows[0]["psnr_in"])
    assert rows[0]["psnr_in"] == pytest.approx(26.02, abs=0.3)


def test_evaluate_denoiser_takes_a_function_of_y_and_sigma_and_a_shared_noise_draw():
    imgs = torch.rand(4, 1, 16, 16)
    z = torch.randn(imgs.shape)
    seen = []

    def oracle(y, s):            # knows the noise: returns the clean images exactly
        seen.append(s)
        return y - s * z

    rows = denoisers.evaluate_denoiser(oracle, imgs, [0.1, 0.2], noise=z, clamp=False)
    assert seen == [0.1, 0.2]
    assert all(r["psnr"] > 100 and r["rmse"] < 1e-5 for r in rows)
    assert rows[1]["psnr_in"] == pytest.approx(rows[0]["psnr_in"] - 20 * math.log10(2), abs=1e-3)   # same z, σ doubled
    assert rows[0]["psnr_se"] is not None
    with pytest.raises(ValueError, match="noise must have the images' shape"):
        denoisers.evaluate_denoiser(oracle, imgs, [0.1], noise=z[:2])


def test_biased_mlp_twin_breaks_homogeneity():
    torch.manual_seed(0)
    twin = networks.DenoiserMLP(2, hidden=16, depth=2, sigma_input=True, bias_free=False).double()
    with torch.no_grad():
        for m in twin.modules():
            if isinstance(m, torch.nn.Linear):
                m.bias.normal_(0, 0.5)
    y, s = torch.randn(10, 2, dtype=torch.float64), torch.rand(10, dtype=torch.float64)
    assert not torch.allclose(twin(3 * y, 3 * s), 3 * twin(y, s))
    assert networks.build(twin.spec).spec == twin.spec


def test_dilated_bias_free_cnn_keeps_equivariance_and_widens_receptive_field():
    torch.manual_seed(0)
    net = _trained_stats(networks.DenoiserCNN(depth=5, width=8, dilations=[1, 2, 4]), (2, 1, 24, 24)).double()
    assert net.receptive_field == 1 + 2 * (2 + 7)
    y = torch.rand(2, 1, 24, 24, dtype=torch.float64)
    assert max(denoisers.scale_equivariance_error(net, y, alphas=(0.3, 7.0)).values()) < 1e-12
    assert networks.build(net.spec).dilations == [1, 2, 4]
    with pytest.raises(ValueError, match="dilations"):
        networks.DenoiserCNN(depth=4, dilations=[1])


def _randomise_norms(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, networks.BFBatchNorm2d):
                m.running_sd.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
            if isinstance(m, torch.nn.Conv2d) and m is getattr(model, "out", None):
                m.weight.normal_(0, 0.1)     # the UNet's output layer starts at zero (identity denoiser)


@pytest.mark.parametrize("shape", [(3, 1, 28, 28), (2, 1, 30, 27)])
def test_bias_free_unet_is_scale_equivariant_at_random_alpha(shape):
    torch.manual_seed(0)
    model = networks.DenoiserUNet(1, (8, 16, 16), blocks=1)
    _randomise_norms(model)
    model.eval()
    assert not networks.has_additive_constants(model)
    y = torch.rand(shape, dtype=torch.float64)
    model = model.double()
    alphas = (torch.rand(6, generator=torch.Generator().manual_seed(1)) * 2.7 + 0.3).tolist()  # in [0.3, 3]
    assert not any(math.log2(a).is_integer() for a in alphas)
    errs = denoisers.scale_equivariance_error(model, y, alphas)
    assert max(errs.values()) < 1e-12, errs
    # the biased twin is not equivariant
    twin = networks.DenoiserUNet(1, (8, 16, 16), blocks=1, bias_free=False).double()
    with torch.no_grad():
        for m in twin.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.bias.normal_(0, 0.1)
        twin.out.weight.normal_(0, 0.1)
    twin.eval()
    assert max(denoisers.scale_equivariance_error(twin, y, alphas).values()) > 1e-3
    assert model(y).shape == y.shape


def test_unet_sees_the_whole_digit_and_round_trips_through_build():
    torch.manual_seed(0)
    model = networks.DenoiserUNet(1, (8, 16, 32), blocks=2)
    _randomise_norms(model)
    model.eval()
    y = torch.rand(1, 1, 28, 28, requires_grad=True)
    model(y)[0, 0, 4, 4].backward()       # MNIST digits lie in the central 20×20 box: one corner of the box
    assert y.grad[0, 0, 23, 23].abs() > 0    # depends on the opposite corner
    y.grad = None
    model(y)[0, 0, 14, 14].backward()     # and the centre pixel on every pixel of the image
    assert (y.grad[0, 0].abs() > 0).all()
    clone = networks.build(model.spec)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    assert torch.equal(clone(y.detach()), model(y.detach()))
    with pytest.raises(ValueError, match="expected images of shape"):
        model(torch.rand(2, 3, 28, 28))


@pytest.mark.parametrize("kind", ["cnn", "unet"])
def test_one_dimensional_networks_are_bias_free_local_in_time_and_round_trip(kind):
    """signal_dim=1: (B, C, 1, L) signals, 1×3 kernels; scale-equivariant at a random α; an impulse at time t
    only reaches times within the receptive field (the CNN) and never leaks across channels' batch rows."""
    torch.manual_seed(0)
    spec = ({"kind": "cnn", "channels": 2, "depth": 4, "width": 8, "bias_free": True, "signal_dim": 1} if kind == "cnn" else
            {"kind": "unet", "channels": 2, "widths": [8, 16], "blocks": 1, "bias_free": True, "signal_dim": 1})
    net = networks.build(spec)
    if kind == "unet":
        torch.nn.init.normal_(net.out.weight, std=0.1)
    net.eval()
    assert net.spec == spec and not networks.has_additive_constants(net)
    y = torch.randn(3, 2, 1, 30)
    alpha = float(torch.empty(()).uniform_(0.2, 5.0))
    assert torch.allclose(net(alpha * y), alpha * net(y), atol=1e-5)
    if kind == "cnn":
        e = torch.zeros(1, 2, 1, 30)
        e[0, 0, 0, 15] = 1.0
        reach = (net(e) - e).abs().sum(dim=(0, 1, 2)) > 0
        assert reach.nonzero().min() >= 15 - 4 and reach.nonzero().max() <= 15 + 4
    with pytest.raises(ValueError, match=r"\(B, 2, 1, L\)"):
        net(torch.randn(3, 2, 2, 30))
    with pytest.raises(ValueError, match="signal_dim"):
        networks.DenoiserCNN(signal_dim=3)


def test_gru_denoiser_starts_as_identity_round_trips_and_is_not_scale_equivariant():
    torch.manual_seed(0)
    net = networks.build({"kind": "gru", "channels": 2, "hidden": 8, "layers": 1})
    y = torch.randn(3, 2, 1, 20)
    assert torch.equal(net(y), y)
    torch.nn.init.normal_(net.readout.weight, std=0.3)
    assert net.spec == {"kind": "gru", "channels": 2, "hidden": 8, "layers": 1}
    assert not torch.allclose(net(3.0 * y), 3.0 * net(y), atol=1e-3)
    with pytest.raises(ValueError, match="1-D signals"):
        net(torch.randn(3, 2, 20))


def test_inverse_variance_weighted_training_reports_the_weighted_validation_loss():
    """With inverse_variance_weighting the validation loss is the mean of MSE/σ² (the training objective)."""
    torch.manual_seed(0)
    x = torch.rand(32, 1, 8, 8)
    m = networks.DenoiserCNN(depth=3, width=4)
    h = denoisers.train_blind_denoiser(m, x, (0.05, 0.2), 2, 4, seed=0, inverse_variance_weighting=True,
                                       val_data=x[:8], val_sigmas=[0.05, 0.2], validate_every=2,
                                       checkpoint_every=10**9)
    v = h["val"][-1]
    expected = (v["val_mse@0.05"] / 0.05 ** 2 + v["val_mse@0.2"] / 0.2 ** 2) / 2
    assert v["val_loss"] == pytest.approx(expected)


def test_divergence_is_exact_for_diagonal_linear_maps_and_tweedie_consistency_detects_overconfidence():
    from energy_utils import controls
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 1, 4, 4, generator=g)
    y = torch.randn(3, 1, 4, 4, generator=g)
    div = denoisers.divergence(lambda v: a * v, y, step=1e-3, probes=2)
    assert torch.allclose(div, a.flatten(1).sum(1).double(), atol=1e-4)
    with pytest.raises(ValueError, match="probes"):
        denoisers.divergence(lambda v: v, y, 1e-3, probes=0)
    # a Gaussian prior's exact denoiser is self-consistent on its own samples (ρ ≈ 1) ...
    d = 8
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    prior = controls.GaussianPrior(torch.zeros(d, dtype=torch.float64), A @ A.T / d + 0.05 * torch.eye(d, dtype=torch.float64))
    x = prior.sample(4000, g).float()
    sigma = 0.5
    exact = lambda v: prior.denoise(v, sigma ** 2)
    assert abs(denoisers.tweedie_consistency(exact, x, sigma)["ratio"] - 1) < 0.05
    # ... and a denoiser that shrinks twice as hard claims less uncertainty than its real error (ρ > 1)
    shrunk = lambda v: prior.mean.float() + 0.5 * (exact(v) - prior.mean.float())
    assert denoisers.tweedie_consistency(shrunk, x, sigma)["ratio"] > 1.5
    with pytest.raises(ValueError, match="sigma must be > 0"):
        denoisers.tweedie_consistency(exact, x, 0.0)
