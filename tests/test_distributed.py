"""training.fit across processes (torchrun, DistributedDataParallel, gloo on the CPU) and with bf16 autocast.

The two-process test launches this file as the worker script:
``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/test_distributed.py OUT_DIR``.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from energy_utils import distributed, training
from energy_utils.covariances import CovFamily, DiagCov
from energy_utils.energy_models import ImageEnergy, VectorEnergy
from energy_utils.score_losses import score_matching_loss
from energy_utils.tasks import Problem

GLOBAL_BATCH = 8
# rank 0 of 2 gets rows 0, 2, 4, 6 (three Fourier-type Σ), rank 1 rows 1, 3, 5, 7 (pixel-type only): the energy
# networks' Fourier branch then runs on an empty part on rank 1, and DDP must still see every parameter used.
FOURIER_ROWS = torch.tensor([True, False, True, False, False, False, True, False])


# ------------------------------------------------------------------------------------------ shared problems
def energy_problem(kind: str):
    """(model, loss_fn, sample_batch): A-DSM + A-CSM on a small energy network, the noise drawn in the batch."""
    torch.manual_seed(0)
    if kind == "vector":
        model, shape = VectorEnergy(4, width=16, depth=1, emb=8), (4,)
        torch.nn.init.normal_(model.out.weight, std=0.1)
    else:
        model, shape = ImageEnergy(1, widths=(8, 8, 8), emb=4), (1, 8, 8)
        torch.nn.init.normal_(model.out.weight, std=0.1)
    fam = CovFamily(var_min=1e-2, var_max=10.0)

    def sample_batch(step):
        g = torch.Generator().manual_seed(1000 + step)
        x = torch.randn(GLOBAL_BATCH, *shape, generator=g)
        cov = fam.sample(GLOBAL_BATCH, shape, g)
        cov = DiagCov(cov.log_var, FOURIER_ROWS)
        return x, cov, cov.sample(1, g)

    def loss_fn(m, batch):
        x, cov, eps = batch
        return score_matching_loss(m, x, cov, dual=True, eps=eps)

    return model, loss_fn, sample_batch


def regression_problem(fail_at: int | None = None):
    """(model, optimizer, scheduler, loss_fn, sample_batch, validate): an MLP regression whose loss draws
    noise from the global RNG (so a resumed run must restore each process' RNG), Adam, PlateauLR, validation."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    sched = training.PlateauLR(opt, patience=1, factor=0.5, max_reductions=5, warmup=2, rel_tol=0.5)
    w = torch.tensor([[1.0], [-2.0], [0.5]])
    xv = torch.randn(32, 3, generator=torch.Generator().manual_seed(7))

    def sample_batch(step):
        x = torch.randn(GLOBAL_BATCH, 3, generator=torch.Generator().manual_seed(step))
        return x, x @ w

    def loss_fn(m, batch):
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt("simulated kill")
        calls.append(1)
        x, y = batch
        noisy = x + 0.1 * torch.randn(x.shape)
        loss = (m(noisy) - y).pow(2).mean()
        return loss, {"half": loss.detach() / 2}

    calls = []
    validate = lambda m: {"val_loss": (m(xv) - xv @ w).pow(2).mean().item()}
    return model, opt, sched, loss_fn, sample_batch, validate


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------ the worker
def worker(out_dir: Path):
    """Runs in each torchrun process; writes its results to out_dir/rank{r}.pt."""
    torch.set_num_threads(1)
    assert distributed.setup() and distributed.world_size() == 2
    rank = distributed.rank()
    saves, real_save = [], torch.save

    def recording_save(obj, f, *args, **kwargs):
        saves.append(str(f))
        return real_save(obj, f, *args, **kwargs)

    torch.save = recording_save
    res = {}
    for kind in ("vector", "image"):                                   # (a) one step, 2 processes
        model, loss_fn, sample_batch = energy_problem(kind)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        hist = training.fit(model, opt, loss_fn, sample_batch, 1, log_every=1)
        res[kind] = {"params": params(model), "loss": hist["loss"], "extra": hist["extra"]}

    run = {}
    for name, fail_at in (("uninterrupted", None), ("interrupted", 5)):   # (b) resume
        scratch = out_dir / name
        model, opt, sched, loss_fn, sample_batch, validate = regression_problem(fail_at)
        torch.manual_seed(100 + rank)                                      # a different RNG stream per process
        kwargs = dict(scratch=scratch, checkpoint_every=3, scheduler=sched, clip_grad=1.0, log_every=1,
                      validate=validate, validate_every=2)
        try:
            hist = training.fit(model, opt, loss_fn, sample_batch, 8, **kwargs)
        except KeyboardInterrupt:
            # the "restarted job": fresh objects, another RNG state; everything must come from the checkpoint
            model, opt, sched, loss_fn, sample_batch, validate = regression_problem()
            torch.manual_seed(999)
            kwargs.update(scheduler=sched, validate=validate)
            hist = training.fit(model, opt, loss_fn, sample_batch, 8, **kwargs)
        run[name] = {"params": params(model), "history": hist, "lr": opt.param_groups[0]["lr"]}
    res["resume"] = run

    model, opt, sched, loss_fn, sample_batch, validate = regression_problem()   # max_time_s: rank 0 decides
    res["timed"] = training.fit(model, opt, loss_fn, sample_batch, 50, max_time_s=0.0)
    torch.save = real_save
    res["state_saves"] = [s for s in saves if "train_state" in s]
    torch.save(res, out_dir / f"rank{rank}.pt")


# ------------------------------------------------------------------------------------------ tests
@pytest.fixture
def one_thread():
    """These steps are tiny: one torch thread is faster than two on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_shard_splits_every_tensor_by_rows():
    x = torch.arange(12.0).reshape(6, 2)
    cov = DiagCov(torch.zeros(6, 2), torch.tensor([True, False] * 3))
    prob = Problem(x, x.sum(1), {"mask": torch.arange(6), "name": "task"})
    part = distributed.shard((x, [x[:, 0]], {"cov": cov, "p": prob, "scale": torch.tensor(2.0)}), 1, 3)
    assert torch.equal(part[0], x[[1, 4]]) and torch.equal(part[1][0], x[[1, 4], 0])
    assert torch.equal(part[2]["cov"].fourier, torch.tensor([False, True]))
    assert torch.equal(part[2]["p"].y, x[[1, 4]].sum(1)) and torch.equal(part[2]["p"].info["mask"], torch.tensor([1, 4]))
    assert part[2]["p"].info["name"] == "task" and part[2]["scale"].item() == 2.0
    assert distributed.shard(x, 0, 1) is x
    with pytest.raises(ValueError, match="divisible"):
        distributed.shard(torch.zeros(7, 2), 0, 2)


def test_single_process_needs_no_process_group():
    assert not distributed.setup() and distributed.world_size() == 1 and distributed.is_main()


def test_two_processes_match_one_and_resume_identically(tmp_path, one_thread):
    """(a) one step on 2 gloo processes = one step of a single process on the same global batch (A-DSM + A-CSM,
    double backward through DDP); (b) a run killed after its step-3 checkpoint and resumed by fresh objects ends
    exactly where an uninterrupted run does (weights, losses, validation curve, learning rate); rank 0 alone
    writes the training state; rank 0's max_time_s decision stops both processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ENERGY_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__, str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]

    for kind in ("vector", "image"):
        model, loss_fn, sample_batch = energy_problem(kind)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        before = params(model)
        hist = training.fit(model, opt, loss_fn, sample_batch, 1, log_every=1)
        single = params(model)
        moved = max((single[k] - before[k]).abs().max().item() for k in single)
        assert moved > 1e-3                                          # the step did change the weights
        for r in ranks:
            assert r[kind]["loss"][0] == pytest.approx(hist["loss"][0], rel=1e-5)
            assert r[kind]["extra"][0]["csm"] == pytest.approx(hist["extra"][0]["csm"], rel=1e-5)
            for k in single:                  # the same update, up to float32 rounding of sums in another order
                assert (r[kind]["params"][k] - single[k]).abs().max().item() <= 1e-5 * moved, (kind, k)
        assert all(torch.equal(ranks[0][kind]["params"][k], ranks[1][kind]["params"][k]) for k in single)

    for r in ranks:
        full, resumed = r["resume"]["uninterrupted"], r["resume"]["interrupted"]
        assert resumed["history"]["resumed_from"] == 3 and full["history"]["resumed_from"] == 0
        assert resumed["history"]["loss"] == full["history"]["loss"] and len(full["history"]["loss"]) == 8
        assert resumed["history"]["extra"] == full["history"]["extra"]
        assert [v["val_loss"] for v in resumed["history"]["val"]] == [v["val_loss"] for v in full["history"]["val"]]
        assert resumed["lr"] == full["lr"]
        for k in full["params"]:
            assert torch.equal(resumed["params"][k], full["params"][k]), k
        assert r["timed"]["stopped_at"] == 1
    assert ranks[0]["resume"]["uninterrupted"]["history"]["loss"] == ranks[1]["resume"]["uninterrupted"]["history"]["loss"]
    assert ranks[0]["state_saves"] and not ranks[1]["state_saves"]


def test_bf16_autocast_trains_an_energy_model(one_thread):
    """A-DSM + A-CSM under bf16 autocast: the linear layers run in bf16, the loss and the weights stay float32,
    the loss falls (data far from the network's initial Gaussian energy) and tracks a float32 run."""
    fam = CovFamily(var_min=1e-2, var_max=1.0)

    def sample_batch(step):
        g = torch.Generator().manual_seed(step)
        x = 2.0 + 0.3 * torch.randn(64, 4, generator=g)
        cov = fam.sample(64, (4,), g)
        return x, cov, cov.sample(1, g)

    def loss_fn(m, batch):
        return score_matching_loss(m, batch[0], batch[1], eps=batch[2])

    curves, seen = {}, []
    for dtype in (None, torch.bfloat16):
        torch.manual_seed(0)
        model = VectorEnergy(4, width=32, depth=2, emb=8)
        model.inp.register_forward_hook(lambda m, i, o: seen.append((dtype, o.dtype)))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        curves[dtype] = training.fit(model, opt, loss_fn, sample_batch, 80, log_every=1, autocast_dtype=dtype)["loss"]
    assert {d for t, d in seen if t is not None} == {torch.bfloat16} and {d for t, d in seen if t is None} == {torch.float32}
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    mean = lambda v: sum(v) / len(v)
    first, last = mean(curves[torch.bfloat16][:10]), mean(curves[torch.bfloat16][-10:])
    assert last < 0.8 * first, (first, last)
    assert abs(last - mean(curves[None][-10:])) < 0.05 * last
    with pytest.raises(ValueError, match="bfloat16"):
        training.fit(model, opt, loss_fn, sample_batch, 1, autocast_dtype=torch.float16)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
