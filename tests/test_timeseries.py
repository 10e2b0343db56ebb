"""Time series for notebook 07 (energy_utils.timeseries): loaders, split, windows, tasks, baselines, metrics."""

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.stats import norm

from energy_utils import timeseries as ts

LENGTHS = {"sunspots": 309, "co2": 526, "elnino": 732, "nile": 100}
PERIODS = {"sunspots": 11, "co2": 12, "elnino": 12, "nile": 1}


def as_window(values) -> torch.Tensor:
    v = torch.as_tensor(np.asarray(values), dtype=torch.float32)
    return v.reshape(-1, 1, 1, v.shape[-1])


# ---------------------------------------------------------------------------------------------------- data

@pytest.mark.parametrize("name", ts.KNOWN_SERIES)
def test_loaders_give_finite_values_and_the_documented_period(name):
    s = ts.load_series(name)
    assert s.name == name and len(s) == LENGTHS[name] and s.period == PERIODS[name]
    assert s.values.dtype == np.float64 and s.values.ndim == 1 and np.isfinite(s.values).all()
    assert s.unit_of_time in ("year", "month") and "statsmodels" in s.source


def test_loader_details_and_unknown_name():
    from statsmodels.api import datasets

    table = datasets.elnino.load_pandas().data
    elnino = ts.load_series("elnino").values
    assert np.array_equal(elnino[:12], table.iloc[0, 1:].to_numpy())          # 1950, Jan..Dec
    assert elnino[12] == table.iloc[1]["JAN"] and elnino[-1] == table.iloc[-1]["DEC"]
    weekly = datasets.co2.load_pandas().data["co2"]
    april_1958 = weekly["1958-04-01":"1958-04-30"]                           # four complete weeks, no NaN
    assert len(april_1958) == 4 and not april_1958.isna().any()
    assert ts.load_series("co2").values[1] == pytest.approx(april_1958.mean())
    with pytest.raises(ValueError, match="known series: sunspots, co2, elnino, nile"):
        ts.load_series("airline")


# ---------------------------------------------------------------------------------------------------- split

def test_split_is_contiguous_in_time_order_without_overlap():
    parts = ts.split_in_time(np.arange(100.0), 0.7, 0.1)
    assert [len(p) for p in parts] == [70, 10, 20]
    assert np.array_equal(np.concatenate(parts), np.arange(100.0))
    assert parts.train.max() < parts.val.min() and parts.val.max() < parts.test.min()
    s = ts.load_series("sunspots")
    train, val, test = ts.split_in_time(s)
    assert (len(train), len(val), len(test)) == (216, 30, 63)
    assert np.array_equal(np.concatenate([train, val, test]), s.values)
    for bad in [(0.0, 0.1), (0.7, 0.3), (1.2, 0.0), (0.7, -0.1)]:
        with pytest.raises(ValueError, match="train_fraction"):
            ts.split_in_time(np.arange(100.0), *bad)


def test_normalisation_uses_training_statistics_only():
    rng = np.random.default_rng(0)
    values = rng.normal(5.0, 2.0, 200)
    split = ts.split_in_time(values)
    normed, stats = ts.normalise(split)
    assert stats["mean"] == pytest.approx(split.train.mean()) and stats["std"] == pytest.approx(split.train.std())
    assert normed.train.mean() == pytest.approx(0, abs=1e-12) and normed.train.std() == pytest.approx(1)
    np.testing.assert_allclose(normed.test, (split.test - stats["mean"]) / stats["std"])
    # changing the future leaves the statistics unchanged
    shifted = ts.SeriesSplit(split.train, split.val + 100, split.test * 10)
    assert ts.normalise(shifted)[1] == stats
    np.testing.assert_allclose(ts.denormalise(normed.val, stats), split.val)
    with pytest.raises(ValueError, match="constant"):
        ts.normalise(ts.SeriesSplit(np.ones(10), np.ones(2), np.ones(3)))


# ---------------------------------------------------------------------------------------------------- windows

def test_make_windows_shape_content_and_short_series():
    v = np.arange(20.0)
    w = ts.make_windows(v, length=8, stride=3)
    assert w.shape == (5, 1, 1, 8) and w.dtype == torch.float32 and ts.n_windows(20, 8, 3) == 5
    for i in range(5):
        assert torch.equal(w[i, 0, 0], torch.arange(3 * i, 3 * i + 8, dtype=torch.float32))
    assert ts.make_windows(v, length=32).shape == (0, 1, 1, 32)
    with pytest.raises(ValueError, match="positive"):
        ts.make_windows(v, length=8, stride=0)


def test_split_windows_counts_training_and_test_windows():
    counts = ts.window_counts(["elnino", "nile"], length=32)
    assert counts["elnino"] == {"train": 481, "val": 42, "test": 116}
    assert counts["nile"] == {"train": 39, "val": 0, "test": 0}
    x, stats = ts.training_windows(["elnino", "nile"], length=32, stride=4)
    assert x.shape[1:] == (1, 1, 32) and x.dtype == torch.float32
    assert [stats[n]["n_windows"] for n in ("elnino", "nile")] == [ts.n_windows(512, 32, 4), ts.n_windows(70, 32, 4)]
    assert len(x) == stats["elnino"]["n_windows"] + stats["nile"]["n_windows"]
    # test windows lie in the test part and are normalised with the training statistics
    split = ts.split_in_time(ts.load_series("elnino"))
    test = ts.test_windows("elnino", length=32, stride=1)
    assert len(test) == 116
    expected = (split.test[:32] - split.train.mean()) / split.train.std()
    np.testing.assert_allclose(test[0, 0, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(test[-1, 0, 0].numpy(), (split.test[-32:] - split.train.mean()) / split.train.std(),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="fewer than length 64"):
        ts.test_windows("nile", length=64)


# ---------------------------------------------------------------------------------------------------- tasks

def test_missing_stretch_mask_shape_gap_and_determinism():
    m = ts.missing_stretch_mask(50, 64, 10, torch.Generator().manual_seed(0))
    assert m.shape == (50, 1, 1, 64) and m.dtype == torch.bool
    missing = ~m[:, 0, 0]
    assert (missing.sum(1) == 10).all()
    assert m[:, 0, 0, 0].all() and m[:, 0, 0, -1].all()                      # never touches either end
    first = missing.int().argmax(1)
    for b in range(50):                                                       # contiguous
        assert missing[b, first[b]:first[b] + 10].all()
    assert len(set(first.tolist())) > 10                                      # positions vary
    assert torch.equal(m, ts.missing_stretch_mask(50, 64, 10, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="gap"):
        ts.missing_stretch_mask(4, 16, 15)


def test_forecast_mask():
    m = ts.forecast_mask(64, 12)
    assert m.shape == (1, 1, 64) and m.dtype == torch.bool
    assert m[..., :52].all() and not m[..., 52:].any()
    with pytest.raises(ValueError, match="horizon"):
        ts.forecast_mask(16, 16)


def test_anomaly_labels_match_the_changed_windows():
    x = torch.randn(40, 1, 1, 64, generator=torch.Generator().manual_seed(0))
    y, labels = ts.inject_anomalies(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and labels.shape == (40,) and labels.dtype == torch.bool
    assert labels.sum() == 20
    changed = (y != x)[:, 0, 0]
    assert torch.equal(changed.any(1), labels)
    kinds = set()
    for b in torch.nonzero(labels).flatten():
        delta = (y - x)[b, 0, 0][changed[b]]
        if changed[b].sum() == 1:                                             # a spike of ±4
            kinds.add("spike")
            assert delta.abs().item() == pytest.approx(4.0, abs=1e-5)
        else:                                                                 # a level shift of ±2 over L/4 steps
            kinds.add("level_shift")
            idx = torch.nonzero(changed[b]).flatten()
            assert len(idx) == 16 and idx[-1] - idx[0] == 15
            assert torch.allclose(delta, delta[0].expand_as(delta)) and delta[0].abs().item() == pytest.approx(2.0)
    assert kinds == {"spike", "level_shift"}
    y2, labels2 = ts.inject_anomalies(x, torch.Generator().manual_seed(1))
    assert torch.equal(y, y2) and torch.equal(labels, labels2)
    y3, _ = ts.inject_anomalies(x, torch.Generator().manual_seed(2), fraction=1.0, kinds=("spike",), spike_size=3.0)
    assert ((y3 != x).sum(dim=(1, 2, 3)) == 1).all()
    with pytest.raises(ValueError, match="kinds"):
        ts.inject_anomalies(x, kinds=("drift",))


# ---------------------------------------------------------------------------------------------------- baselines

def test_interpolation_is_exact_on_what_it_can_represent():
    t = np.arange(32.0)
    mask = ts.missing_stretch_mask(3, 32, 8, torch.Generator().manual_seed(0))
    line = as_window(np.stack([2 * t - 1, -0.5 * t, np.full(32, 3.0)]))
    out = ts.interpolate_missing(line, mask, "linear")
    assert torch.allclose(out, line, atol=1e-4)
    cubic = as_window(((t - 10) ** 3 / 1000 - (t - 16) ** 2 / 50)[None])
    out = ts.interpolate_missing(cubic, mask[:1], "cubic")
    assert torch.allclose(out, cubic, atol=1e-4)
    noisy = torch.randn(3, 1, 1, 32)
    for kind in ("linear", "cubic"):                                          # observed values kept exactly
        out = ts.interpolate_missing(noisy, mask, kind)
        assert torch.equal(out[mask], noisy[mask])
    with pytest.raises(ValueError, match="kind"):
        ts.interpolate_missing(noisy, mask, "quadratic")


def test_seasonal_naive_is_exact_on_a_periodic_series():
    t = np.arange(64)
    periodic = as_window(np.stack([np.sin(2 * np.pi * t / 12) + 0.3 * np.cos(4 * np.pi * t / 12),
                                   (t % 12 == 3).astype(float)]))
    for mask in [ts.forecast_mask(64, 30), ts.missing_stretch_mask(2, 64, 20, torch.Generator().manual_seed(0))]:
        out = ts.seasonal_naive(periodic, mask, 12)
        assert torch.allclose(out, periodic, atol=1e-6)
    walk = torch.cumsum(torch.randn(2, 1, 1, 64, generator=torch.Generator().manual_seed(0)), dim=-1)
    out = ts.seasonal_naive(walk, ts.forecast_mask(64, 10), 1)                # naive: the last observed value
    assert torch.equal(out[..., 54:], walk[..., 53:54].expand(2, 1, 1, 10))
    assert torch.equal(out[..., :54], walk[..., :54])


def _ar1_windows(n, L, phi=0.8, seed=0):
    rng = np.random.default_rng(seed)
    y = np.zeros((n, L + 50))
    for t in range(1, L + 50):
        y[:, t] = phi * y[:, t - 1] + rng.standard_normal(n)
    return as_window(y[:, 50:])


def test_sarimax_forecast_on_ar1_and_sinusoid():
    L, h = 128, 8
    ar = _ar1_windows(3, L)
    mask = ts.forecast_mask(L, h)
    mean, sd, models = ts.sarimax_forecast(ar, mask, period=1)
    assert models == ["SARIMAX(1, 0, 0)+c"] * 3
    assert mean.shape == sd.shape == ar.shape and torch.isfinite(mean).all() and torch.isfinite(sd).all()
    assert torch.equal(mean[..., :L - h], ar[..., :L - h]) and (sd[..., :L - h] == 0).all()
    assert (sd[..., L - h:] > 0).all() and (sd[..., L - h:].diff(dim=-1) >= -1e-4).all()   # sd grows with h
    # the AR(1) forecast with the true φ = 0.8 around the sample mean of the prefix
    mu = ar[..., :L - h].mean(-1, keepdim=True)
    oracle = mu + (ar[..., L - h - 1:L - h] - mu) * 0.8 ** torch.arange(1, h + 1)
    assert (mean[..., L - h:] - oracle).abs().max() < 0.35
    assert ((mean - ar).abs() <= 4 * sd + 1e-6).all()
    t = np.arange(64)
    rng = np.random.default_rng(1)
    sinus = as_window(np.sin(2 * np.pi * t / 12) + 0.05 * rng.standard_normal(64))
    r = ts.sarimax_forecast(sinus, ts.forecast_mask(64, 12), period=12)
    assert r.models == ["SARIMAX(1, 0, 0)x(0, 1, 1, 12)+c"]
    assert ts.mae(r.mean, sinus, ts.forecast_mask(64, 12)).item() < 0.15
    with pytest.raises(ValueError, match="forecast mask"):
        ts.sarimax_forecast(ar, ts.missing_stretch_mask(3, L, 5, torch.Generator().manual_seed(0)))


def test_sarimax_falls_back_instead_of_crashing(monkeypatch):
    const = torch.full((1, 1, 1, 32), 2.5)
    r = ts.sarimax_forecast(const, ts.forecast_mask(32, 4), period=1)
    assert r.models == ["naive"] and torch.allclose(r.mean, const) and (r.sd == 0).all()

    import statsmodels.tsa.statespace.sarimax as sarimax_module

    real = sarimax_module.SARIMAX

    def seasonal_fails(y, order, seasonal_order, trend):
        if seasonal_order[3] > 1:
            raise np.linalg.LinAlgError("simulated failure")
        return real(y, order=order, seasonal_order=seasonal_order, trend=trend)

    monkeypatch.setattr(sarimax_module, "SARIMAX", seasonal_fails)
    sinus = as_window(np.sin(2 * np.pi * np.arange(48) / 12))
    r = ts.sarimax_forecast(sinus, ts.forecast_mask(48, 6), period=12)
    assert r.models == ["SARIMAX(1, 0, 0)+c"] and torch.isfinite(r.mean).all()

    def always_fails(*args, **kwargs):
        raise ValueError("simulated failure")

    monkeypatch.setattr(sarimax_module, "SARIMAX", always_fails)
    r = ts.sarimax_forecast(sinus, ts.forecast_mask(48, 6), period=12)
    assert r.models == ["naive"] and torch.allclose(r.mean[..., 42:], sinus[..., 41:42].expand(1, 1, 1, 6))
    assert (r.sd[..., 42:] > 0).all()


def test_kalman_impute_on_sinusoid_and_constant_window():
    L = 64
    t = np.arange(L)
    rng = np.random.default_rng(0)
    sinus = as_window(np.stack([np.sin(2 * np.pi * t / 12 + phase) + 0.05 * rng.standard_normal(L)
                                for phase in (0.0, 1.0)]))
    mask = ts.missing_stretch_mask(2, L, 10, torch.Generator().manual_seed(3))
    mean, sd, models = ts.kalman_impute(sinus, mask, period=12)
    assert models == ["UC(llevel+freq_seasonal(12,2))"] * 2
    assert torch.isfinite(mean).all() and torch.isfinite(sd).all()
    assert torch.equal(mean[mask], sinus[mask]) and (sd[mask] == 0).all() and (sd[~mask] > 0).all()
    assert (ts.mae(mean, sinus, mask) < 0.15).all()
    assert ts.kalman_impute(sinus[:1], mask[:1]).models == ["UC(llevel)"]     # no period: local level only

    const = torch.full((1, 1, 1, L), -1.0)
    r = ts.kalman_impute(const, mask[:1], period=12)
    assert r.models == ["linear+bridge"] and torch.allclose(r.mean, const) and (r.sd == 0).all()


def test_bridge_fallback_sd():
    y = np.array([0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    obs = np.array([True, True, False, False, False, True, True, False])
    mean, sd = ts._bridge_fallback(y, obs)
    sigma = np.std(np.diff(y[obs]))
    np.testing.assert_allclose(mean[2:5], [0.75, 0.5, 0.25])
    np.testing.assert_allclose(sd[2:5], sigma * np.sqrt([1 * 3 / 4, 2 * 2 / 4, 3 * 1 / 4]))
    assert sd[7] == pytest.approx(sigma) and (sd[obs] == 0).all()


# ---------------------------------------------------------------------------------------------------- metrics

def test_mae_rmse_and_coverage_use_the_missing_positions_only():
    ref = torch.zeros(2, 1, 1, 8)
    x = torch.tensor([1.0, 1, 1, 1, 3, -3, 100, 100]).expand(2, 1, 1, 8).clone()
    mask = torch.tensor([True, True, True, True, False, False, True, True]).reshape(1, 1, 8)
    assert torch.allclose(ts.mae(x, ref, mask), torch.tensor([3.0, 3.0]))
    assert torch.allclose(ts.rmse(x, ref, mask), torch.tensor([3.0, 3.0]))
    assert torch.isnan(ts.mae(x, ref, torch.ones(1, 1, 8, dtype=torch.bool))).all()
    lo, hi = x - 1, x + 1
    assert torch.allclose(ts.interval_coverage(lo, hi, ref, mask), torch.zeros(2))
    assert torch.allclose(ts.interval_coverage(lo, hi, x, mask), torch.ones(2))
    with pytest.raises(ValueError, match="same shape"):
        ts.mae(x, ref[:1], mask)
    with pytest.raises(ValueError, match="mask"):
        ts.mae(x, ref, torch.ones(8, dtype=torch.bool))


def test_crps_gaussian_matches_numerical_integration():
    for mu, s, y in [(0.0, 1.0, 0.3), (1.5, 0.4, -0.2), (-2.0, 3.0, 4.0)]:
        f_left = lambda z: norm.cdf(z, mu, s) ** 2
        f_right = lambda z: (norm.cdf(z, mu, s) - 1) ** 2
        lo, hi = min(mu, y) - 12 * s, max(mu, y) + 12 * s
        numeric = integrate.quad(f_left, lo, y, epsabs=1e-10)[0] + integrate.quad(f_right, y, hi, epsabs=1e-10)[0]
        closed = ts.crps_gaussian(torch.tensor(mu, dtype=torch.float64), torch.tensor(s, dtype=torch.float64),
                                  torch.tensor(y, dtype=torch.float64))
        assert closed.item() == pytest.approx(numeric, rel=1e-6)
    point = ts.crps_gaussian(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([-0.5]))
    assert point.item() == pytest.approx(1.5)


def test_crps_ensemble_matches_gaussian_and_pairwise_definition():
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor([[0.0, 1.0, -1.0]], dtype=torch.float64)
    sd = torch.tensor([[1.0, 0.5, 2.0]], dtype=torch.float64)
    truth = torch.tensor([[0.2, 2.0, -4.0]], dtype=torch.float64)
    samples = mean + sd * torch.randn(20000, 1, 3, generator=g, dtype=torch.float64)
    exact = ts.crps_gaussian(mean, sd, truth)
    for fair in (False, True):
        assert torch.allclose(ts.crps_ensemble(samples, truth, fair=fair), exact, rtol=0.02)
    small = torch.randn(7, 2, 3, generator=g, dtype=torch.float64)
    y = torch.randn(2, 3, generator=g, dtype=torch.float64)
    pair = (small[:, None] - small[None]).abs().sum((0, 1))
    skill = (small - y).abs().mean(0)
    assert torch.allclose(ts.crps_ensemble(small, y), skill - pair / (2 * 49))
    assert torch.allclose(ts.crps_ensemble(small, y, fair=True), skill - pair / (2 * 42))
    assert torch.allclose(ts.crps_ensemble(small[:1], y), (small[0] - y).abs())   # one member: absolute error


def test_gaussian_interval_coverage():
    mean, sd = torch.zeros(1, 1, 1, 4000), torch.full((1, 1, 1, 4000), 2.0)
    truth = 2.0 * torch.randn(1, 1, 1, 4000, generator=torch.Generator().manual_seed(0))
    lo, hi = ts.gaussian_interval(mean, sd, 0.9)
    assert hi[0, 0, 0, 0].item() == pytest.approx(2.0 * 1.6448536, rel=1e-6)
    assert ts.interval_coverage(lo, hi, truth).item() == pytest.approx(0.9, abs=0.02)
