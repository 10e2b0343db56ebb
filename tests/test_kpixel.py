"""The k-pixel runner: masks, resumable chunked stores, summaries and the NFE-to-equal-error interpolation."""
import json

import pandas as pd
import pytest
import torch

from energy_utils import kpixel


def test_mask_reveals_exactly_k_pixels_and_is_seeded():
    m = kpixel.kpixel_mask(100, seed=0)
    assert m.shape == (1, 28, 28) and int(m.sum()) == 100
    assert torch.equal(m, kpixel.kpixel_mask(100, seed=0))
    assert not torch.equal(m, kpixel.kpixel_mask(100, seed=1))
    with pytest.raises(ValueError, match="revealed pixels"):
        kpixel.kpixel_mask(0)


def test_run_chunk_rejects_unknown_k_and_methods():
    x, labels = torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long)
    st = kpixel.KPixelSettings(n_levels=3, chunk=2)
    with pytest.raises(ValueError, match="unknown k"):
        kpixel.run_chunk({}, None, None, x, labels, 77, 0, st)
    with pytest.raises(ValueError, match="unknown k-pixel methods"):
        kpixel.run_chunk({}, None, None, x, labels, 50, 0, st, methods=["magic"])


def _fake_chunk(calls):
    def run_chunk(energies, gauss, classifier, x, labels, k, index, settings, disable=None):
        calls.append((k, index))
        return [{"k": k, "chunk": index, "digit": index * settings.chunk + i, "method": m, "label": 0,
                 "pred": (index + i + (m == "geometric PC (dual)")) % 2, "psnr": 10.0, "nfe": 5.0, "converged": True,
                 "wall_s": 0.1} for i in range(x.shape[0]) for m in ("geometric PC (dual)", "energy-guided (dual)")]
    return run_chunk


def test_run_resumes_from_the_store_and_ignores_other_settings(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(kpixel, "run_chunk", _fake_chunk(calls))
    net = torch.nn.Linear(1, 1)
    st = kpixel.KPixelSettings(n_levels=3, chunk=2)
    store = tmp_path / "store.jsonl"
    args = dict(energies={"dual": net}, models={"dual": "a"}, gauss=None, classifier=None,
                images=torch.zeros(8, 1, 28, 28), labels=torch.zeros(8, dtype=torch.long), settings=st, ks=(50, 100),
                log=lambda *a: None)
    rows = kpixel.run(store, n_digits=3, **args)
    assert calls == [(50, 0), (100, 0), (50, 1), (100, 1)]
    assert sorted(rows["digit"].unique()) == [0, 1, 2]          # the second chunk holds digits 2 and 3; 3 is cut
    calls.clear()
    again = kpixel.run(store, n_digits=4, **args)
    assert calls == [] and len(again) == 2 * 2 * 4
    calls.clear()
    kpixel.run(store, n_digits=2, **{**args, "settings": kpixel.KPixelSettings(n_levels=4, chunk=2)})
    assert calls == [(50, 0), (100, 0)]                         # other settings: their own chunks
    assert len(kpixel.read_store(store, st, {"dual": "a"})) == 16
    assert kpixel.read_store(store, st, {"dual": "b"}).empty    # other models: none
    assert sorted(kpixel.read_store(store, st, {"dual": "a"}, n_digits=3)["digit"].unique()) == [0, 1, 2]
    calls.clear()
    kpixel.run(store, n_digits=8, max_time_s=-1.0, **args)
    assert calls == []                                          # no chunk starts once the budget is spent
    said = []
    kpixel.run(store, n_digits=8, max_time_s=0, **{**args, "log": said.append})
    assert calls == [] and said and "lacks chunk 2 of k = 50" in said[0]    # budget 0: read, say what is missing
    store.write_text(store.read_text() + "{not json\n")
    with pytest.raises(ValueError, match="not a JSON line"):
        kpixel.read_store(store)


def test_summary_and_paired_difference():
    rows = pd.DataFrame([{"k": 50, "digit": i, "method": m, "label": 1, "pred": p, "psnr": 1.0, "nfe": n,
                          "wall_s": 0.1}
                         for i in range(10)
                         for m, p, n in (("geometric PC (dual)", int(i < 6), 10), ("energy-guided (dual)", int(i < 8), 10))])
    s = kpixel.summarize(rows).set_index("method")
    assert s.loc["geometric PC (dual)", "error %"] == pytest.approx(40.0)
    assert s.loc["energy-guided (dual)", "error %"] == pytest.approx(20.0)
    assert s.loc["energy-guided (dual)", "− geometric PC (dual) (pp)"] == pytest.approx(-20.0)
    assert 0.0 <= s.loc["energy-guided (dual)", "error 95% low"] <= 20.0
    with pytest.raises(ValueError, match="no k-pixel rows"):
        kpixel.summarize(pd.DataFrame())


def test_paired_claims_difference_and_the_two_energies_verdict():
    """The target's paired error difference per k; dual vs single never gets a digit-level verdict (one seed each)."""
    wrong = {"geometric PC (dual)": lambda i: i < 12, "energy-guided (dual)": lambda i: i < 2,
             "energy-guided (single)": lambda i: i < 12, "Gaussian control": lambda i: i < 2}
    rows = pd.DataFrame([{"k": 50, "digit": i, "method": m, "label": 1, "pred": 1 - int(w(i))}
                         for i in range(20) for m, w in wrong.items()])
    c = kpixel.paired_claims(rows)
    assert set(c) == {f"k=50: energy-guided (dual) below {o}" for o in wrong if o != "energy-guided (dual)"}
    geo = c["k=50: energy-guided (dual) below geometric PC (dual)"]
    assert geo["difference_pp"] == pytest.approx(-50.0) and geo["high"] < 0 and geo["digits"] == 20
    assert "better" in geo["verdict"]
    single = c["k=50: energy-guided (dual) below energy-guided (single)"]
    assert "better" in single["digit_verdict"] and "one training seed" in single["verdict"]
    gauss = c["k=50: energy-guided (dual) below Gaussian control"]
    assert gauss["difference_pp"] == 0.0


def test_nfe_to_match_interpolates_in_log_nfe():
    summary = pd.DataFrame([
        {"k": 50, "method": "geometric PC (dual)", "error %": 40.0, "nfe": 100.0},
        {"k": 50, "method": "geometric PC ×3 (dual)", "error %": 20.0, "nfe": 300.0},
        {"k": 50, "method": "geometric PC ×10 (dual)", "error %": 10.0, "nfe": 1000.0},
        {"k": 50, "method": "energy-guided (dual)", "error %": 30.0, "nfe": 100.0},
        {"k": 100, "method": "geometric PC (dual)", "error %": 40.0, "nfe": 100.0},
        {"k": 100, "method": "energy-guided (dual)", "error %": 5.0, "nfe": 100.0}])
    m = kpixel.nfe_to_match(summary).set_index("k")
    assert m.loc[50, "geometric NFE at equal error"] == pytest.approx(300 ** 0.5 * 100 ** 0.5)   # halfway in log
    assert m.loc[50, "reached"] and not m.loc[100, "reached"]


def test_committed_store_holds_whole_chunks_of_every_method():
    from energy_utils.paths import runs_dir
    store = runs_dir("full") / kpixel.STORE_NAME
    if not store.exists():
        pytest.skip("no committed k-pixel store yet")
    for line in store.read_text().splitlines():
        rec = json.loads(line)
        head, rows = rec["chunk_header"], rec["rows"]
        settings = kpixel.KPixelSettings(**head["settings"])
        digits = {r["digit"] for r in rows}
        assert digits == set(range(head["chunk"] * settings.chunk, (head["chunk"] + 1) * settings.chunk))
        assert {r["method"] for r in rows} == set(kpixel.METHODS) and len(rows) == len(digits) * len(kpixel.METHODS)
        assert all(r["k"] == head["k"] for r in rows)


def test_default_models_name_the_committed_weights_by_checksum():
    """Chunks carry the checksums of the energies and the classifier, so retrained weights never mix with old chunks."""
    from energy_utils import checkpoints, recipes
    models = kpixel.default_models("joint")
    assert set(models) == {"dual", "single", "classifier"}
    assert models["dual"]["name"] == recipes.MNIST_ENERGY_RECIPES["dual"]
    for entry in models.values():
        assert entry["sha256"] == checkpoints.committed_sha256(entry["name"])[:16]
    with pytest.raises(KeyError, match="RETRAIN"):
        checkpoints.committed_sha256("no_such_model")
    offset = kpixel.default_models()                            # notebook 08's pair: another dual, the same single
    assert offset["dual"]["name"] == recipes.MNIST_OFFSET_ENERGY_RECIPES["dual"] != models["dual"]["name"]
    assert offset["single"] == models["single"] and offset["dual"]["sha256"] != models["dual"]["sha256"]
    with pytest.raises(ValueError, match="unknown energy pair"):
        kpixel.default_models("plain")


def test_store_run_on_the_committed_weights_writes_headers_with_checksums_and_hardware(tmp_path):
    """The command-line path (``python -m energy_utils.kpixel run``) end to end on one digit with a 2-level
    schedule: every k and method gets a row, and the chunk headers name the weights and the machine."""
    st = kpixel.KPixelSettings(n_levels=2, chunk=1)
    store = tmp_path / "store.jsonl"
    rows = kpixel.store_run(store, 1, torch.device("cpu"), settings=st, log=lambda *a: None, disable=True)
    assert len(rows) == len(kpixel.K_INIT_VAR) * len(kpixel.METHODS)
    heads = [json.loads(line)["chunk_header"] for line in store.read_text().splitlines()]
    assert all(h["models"] == kpixel.default_models() and h["hardware"] for h in heads)
    assert kpixel.read_store(store, st, kpixel.default_models()).shape[0] == len(rows)
