"""Loaders of the papers' released weights (energy_utils.pretrained), tested on random state dicts of the released
layouts written to a temporary data directory; one test uses the real files when ENERGY_DATA_DIR holds them."""
import hashlib
import os

import pytest
import torch
import torch.nn.functional as F

from energy_utils import data, pretrained
from energy_utils.metrics import psnr

MOHAN_BF = "mohan2020_dncnn/bias_free/0-10"
MOHAN_BIASED = "mohan2020_dncnn/bias/0-10"
KS_GRAY = "ks2021_bf_cnn/BSD400_gray"


def random_state(name: str, seed: int = 0) -> dict:
    """A state dict with the exact keys and shapes of release ``name``, filled with random values that make every
    term matter: non-zero biases and BN means (biased net), running variances / sds spread over (0.5, 2)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in pretrained.RELEASES[name].build().state_dict().items():
        if v.dtype == torch.long:                              # num_batches_tracked
            state[k] = torch.tensor(int(torch.randint(0, 1000, (1,), generator=g)))
        elif k.endswith("running_var") or k.startswith("running_sd"):
            state[k] = 0.5 + 1.5 * torch.rand(v.shape, generator=g)
        elif k.startswith("gammas") or (k.startswith("bn_layer_list") and k.endswith("weight")):
            state[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif v.ndim == 4:                                      # convolution weights, He-scaled
            fan_in = v.shape[1] * v.shape[2] * v.shape[3]
            state[k] = torch.randn(v.shape, generator=g) * (2.0 / fan_in) ** 0.5
        else:                                                  # conv biases, BN bias and running_mean
            state[k] = 0.1 * torch.randn(v.shape, generator=g)
    return state


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These 20-layer nets run on tiny inputs, where a second thread only adds synchronisation cost."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """An empty data directory with a ``pretrained/`` folder, selected through ENERGY_DATA_DIR."""
    (tmp_path / "pretrained").mkdir()
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    return tmp_path


def write_release(root, name: str, state: dict, checksum: str | None = None):
    """Save ``state`` where release ``name`` lives and list its SHA-256 (or ``checksum``) in SHA256SUMS, in the
    real file's format ``<hex>  ./<relative path>``."""
    path = root / "pretrained" / pretrained.RELEASES[name].relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    with open(root / "pretrained" / "SHA256SUMS", "a") as f:
        f.write(f"{checksum or sha256(path)}  ./{pretrained.RELEASES[name].relpath}\n")
    return path


def image(shape=(2, 1, 20, 24), seed=1):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


# -- exact loading -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(pretrained.RELEASES))
def test_every_release_loads_exactly(data_root, name):
    state = random_state(name)
    write_release(data_root, name, state)
    model = pretrained.load(name)
    assert not model.training
    inner = model.net if isinstance(model, pretrained.CleanFromResidual) else model
    loaded = inner.state_dict()
    assert set(loaded) == set(state)
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k
    c = pretrained.RELEASES[name].build().channels
    with torch.no_grad():
        assert model(image((1, c, 12, 12))).shape == (1, c, 12, 12)


def test_available_and_absent_files(data_root, monkeypatch, capsys):
    assert pretrained.available() == []
    write_release(data_root, MOHAN_BF, random_state(MOHAN_BF))
    assert pretrained.available() == [MOHAN_BF]
    with pytest.raises(pretrained.PretrainedUnavailable, match="0-30.pt"):
        pretrained.load("mohan2020_dncnn/bias_free/0-30")
    assert pretrained.try_load("mohan2020_dncnn/bias_free/0-30") is None
    assert "skipping" in capsys.readouterr().out
    with pytest.raises(KeyError, match="unknown released model"):
        pretrained.load("mohan2020_dncnn/bias_free/0-20")
    monkeypatch.delenv(data.DATA_ENV)
    assert pretrained.available() == []
    assert pretrained.try_load(MOHAN_BF) is None
    assert data.DATA_ENV in capsys.readouterr().out


# -- clear errors ------------------------------------------------------------------------------------------------


def test_missing_key_names_file_and_key(data_root):
    state = random_state(MOHAN_BF)
    del state["bn_layer_list.7.running_var"]
    path = write_release(data_root, MOHAN_BF, state)
    with pytest.raises(pretrained.StateDictMismatch) as err:
        pretrained.load(MOHAN_BF)
    msg = str(err.value)
    assert str(path) in msg and "missing keys" in msg and "bn_layer_list.7.running_var" in msg
    assert "unexpected" not in msg


def test_unexpected_key_names_file_and_key(data_root):
    state = random_state(MOHAN_BF)
    state["hidden_layer_list.0.bias"] = torch.zeros(64)          # a bias in the bias-free file
    path = write_release(data_root, MOHAN_BF, state)
    with pytest.raises(pretrained.StateDictMismatch) as err:
        pretrained.load(MOHAN_BF)
    msg = str(err.value)
    assert str(path) in msg and "unexpected keys" in msg and "hidden_layer_list.0.bias" in msg
    assert "missing" not in msg


def test_wrong_shape_names_file_key_and_shapes(data_root):
    state = random_state(KS_GRAY)
    state["conv_layers.0.weight"] = torch.zeros(64, 3, 3, 3)       # a colour first layer in the grey file
    path = write_release(data_root, KS_GRAY, state)
    with pytest.raises(pretrained.StateDictMismatch) as err:
        pretrained.load(KS_GRAY)
    msg = str(err.value)
    assert str(path) in msg and "conv_layers.0.weight" in msg
    assert "(64, 3, 3, 3)" in msg and "(64, 1, 3, 3)" in msg


def test_checksum_mismatch_names_file(data_root):
    path = write_release(data_root, MOHAN_BIASED, random_state(MOHAN_BIASED), checksum="0" * 64)
    with pytest.raises(pretrained.ChecksumMismatch) as err:
        pretrained.load(MOHAN_BIASED)
    assert str(path) in str(err.value) and "0" * 64 in str(err.value)


def test_file_changed_after_checksum_is_rejected(data_root):
    path = write_release(data_root, MOHAN_BIASED, random_state(MOHAN_BIASED))
    torch.save(random_state(MOHAN_BIASED, seed=5), path)          # same layout, other values
    with pytest.raises(pretrained.ChecksumMismatch, match="differs"):
        pretrained.load(MOHAN_BIASED)


def test_file_absent_from_checksum_list_is_rejected(data_root):
    write_release(data_root, MOHAN_BF, random_state(MOHAN_BF))
    path = data_root / "pretrained" / pretrained.RELEASES[MOHAN_BIASED].relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_state(MOHAN_BIASED), path)
    with pytest.raises(pretrained.ChecksumMismatch, match="no entry"):
        pretrained.load(MOHAN_BIASED)


# -- what the networks compute -----------------------------------------------------------------------------------


def reference_mohan(state: dict, y: torch.Tensor, bias_free: bool, eps: float = 1e-5) -> torch.Tensor:
    """Mohan et al.'s DnCNN written out from the README with functional ops: the clean estimate y − body(y)."""
    b = (lambda k: None) if bias_free else (lambda k: state[k])
    h = F.relu(F.conv2d(y, state["first_layer.weight"], b("first_layer.bias"), padding=1))
    for i in range(18):
        h = F.conv2d(h, state[f"hidden_layer_list.{i}.weight"], b(f"hidden_layer_list.{i}.bias"), padding=1)
        w, rv = state[f"bn_layer_list.{i}.weight"].view(1, -1, 1, 1), state[f"bn_layer_list.{i}.running_var"].view(1, -1, 1, 1)
        if bias_free:
            h = w * h / (rv.sqrt() + eps)
        else:
            rm, bb = (state[f"bn_layer_list.{i}.{k}"].view(1, -1, 1, 1) for k in ("running_mean", "bias"))
            h = w * (h - rm) / (rv + eps).sqrt() + bb
        h = F.relu(h)
    return y - F.conv2d(h, state["last_layer.weight"], b("last_layer.bias"), padding=1)


def reference_ks_residual(state: dict, y: torch.Tensor) -> torch.Tensor:
    """KS2021's BF_CNN written out from the README: the residual f(y) (eval mode)."""
    h = F.relu(F.conv2d(y, state["conv_layers.0.weight"], padding=1))
    for l in range(1, 19):
        h = F.conv2d(h, state[f"conv_layers.{l}.weight"], padding=1)
        h = F.relu(h / state[f"running_sd.{l - 1}"] * state[f"gammas.{l - 1}"])
    return F.conv2d(h, state["conv_layers.19.weight"], padding=1)


@pytest.mark.parametrize("name", [MOHAN_BF, MOHAN_BIASED])
def test_mohan_matches_the_readme_formula(data_root, name):
    state = random_state(name)
    bias_free = "bias_free" in name
    if bias_free:   # tiny variances make "eps after the square root" differ from sqrt(var + eps) by a factor ~3
        state["bn_layer_list.0.running_var"][:8] = 1e-11
    write_release(data_root, name, state)
    y = image()
    with torch.no_grad():
        out = pretrained.load(name)(y)
        ref = reference_mohan(state, y, bias_free)
        # float32 rounding scales with the output (~3e4 here, because of the tiny variances), and its last bits
        # differ between CPU types: tolerances are relative to the output's largest value
        scale = float(ref.abs().max())
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-6 * scale)
        if bias_free:   # the other eps placement gives a visibly different output: the test can tell them apart
            assert (reference_mohan(state, y, True, eps=0.0) - ref).abs().max() > 0.1 * scale


def test_ks_wrapper_returns_y_minus_residual(data_root):
    state = random_state(KS_GRAY)
    write_release(data_root, KS_GRAY, state)
    model = pretrained.load(KS_GRAY)
    assert isinstance(model, pretrained.CleanFromResidual) and isinstance(model.net, pretrained.KSBFCNN)
    y = image()
    with torch.no_grad():
        f = model.net(y)
        torch.testing.assert_close(f, reference_ks_residual(state, y), rtol=1e-4, atol=1e-5)
        assert torch.equal(model(y), y - f)
        assert (model(y) - y).abs().max() > 1e-3          # the residual is not trivially zero


@pytest.mark.parametrize("name", list(pretrained.RELEASES))
def test_scale_equivariance_only_for_bias_free(data_root, name):
    write_release(data_root, name, random_state(name, seed=3))
    model = pretrained.load(name)
    c = pretrained.RELEASES[name].build().channels
    y = image((2, c, 16, 16), seed=4)
    with torch.no_grad():
        base = model(y)
        for alpha in (0.37, 3.3):                           # not powers of two: rounding is not exact
            rel = ((model(alpha * y) - alpha * base).norm() / (alpha * base).norm()).item()
            if "/bias/" in name:
                assert rel > 1e-2, (name, alpha, rel)
            else:
                assert rel < 1e-5, (name, alpha, rel)


def test_batch_norms_in_training_mode():
    x = 3.0 + 2.0 * torch.randn(4, 5, 6, 7, generator=torch.Generator().manual_seed(0))
    bn = pretrained.MohanBFBatchNorm2d(5).train()
    bn.weight.data = torch.linspace(0.5, 1.5, 5)
    var = x.transpose(0, 1).reshape(5, -1).var(dim=1)       # unbiased
    torch.testing.assert_close(bn(x), x / (var.sqrt() + 1e-5).view(1, -1, 1, 1) * bn.weight.view(1, -1, 1, 1))
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * var)
    net = pretrained.KSBFCNN(channels=1, depth=3, width=5).train()
    sd = torch.sqrt(x.var(dim=(0, 2, 3), keepdim=True, unbiased=False) + 1e-5)
    out = pretrained.ks_bf_batch_norm(x, net.running_sd[0], net.gammas[0], training=True)
    torch.testing.assert_close(out, x / sd)
    torch.testing.assert_close(net.running_sd[0].data, 0.9 + 0.1 * sd)


# -- the real files, when present --------------------------------------------------------------------------------


def test_real_released_weights_denoise():
    if not os.environ.get(data.DATA_ENV) or not pretrained.available():
        pytest.skip("released weights not found under ENERGY_DATA_DIR/pretrained")
    names = pretrained.available()
    gray = data.center_crop(data.load_image_set("Set12", limit=1).images[0], 64)[None]
    colour = data.center_crop(data.load_image_set("Set5", limit=1).images[0], 64)[None]
    for name in names:
        model = pretrained.load(name)
        x = colour if pretrained.RELEASES[name].build().channels == 3 else gray
        sigma = min(25.0, pretrained.RELEASES[name].sigma_range_255[1]) / 255   # inside the training range
        y = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            gain = (psnr(model(y).clamp(0, 1), x) - psnr(y, x)).item()
        assert gain > 3.0, (name, sigma * 255, gain)
