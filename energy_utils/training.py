"""A small, resumable training loop shared by every model in the companion.

``fit`` runs ``n_steps`` optimizer steps of ``loss_fn(model, batch)`` on batches drawn by
``sample_batch(step)``, shows tqdm progress, stops with a clear error on a non-finite loss, and (when given a
``scratch`` folder) saves model, optimizer, history and RNG state every ``checkpoint_every`` steps so that an
interrupted run resumes where it stopped. With ``validate`` it also records a validation curve, and with a
:class:`PlateauLR` scheduler it trains *until that curve flattens* instead of for a fixed budget.

The same call runs data-parallel under ``torchrun --nproc_per_node N`` (see :mod:`energy_utils.distributed`)
and, optionally, with the forward pass and loss under bf16 autocast.
"""
from __future__ import annotations

import contextlib
import math
import shutil
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from . import distributed


class DivergenceError(FloatingPointError):
    """The training loss became NaN or infinite."""


def _rng_state():
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _autocast(device: torch.device, dtype):
    """Autocast to ``dtype`` on ``device``'s type, or nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _wrap_data_parallel(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in DistributedDataParallel on this process' device (checked, not moved: the caller's batches
    are made on the device the model is on)."""
    from torch.nn.parallel import DistributedDataParallel

    p = next(model.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    if dev.type == "cuda":
        want = distributed.local_device()
        if dev != want:
            raise ValueError(f"rank {distributed.rank()} holds its model on {dev}, but each torchrun process trains on "
                             f"its own GPU ({want}); call energy_utils.distributed.setup() before building the model "
                             f"(then .to('cuda') picks {want})")
        return DistributedDataParallel(model, device_ids=[dev.index])
    return DistributedDataParallel(model)


def fit(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable, sample_batch: Callable[[int], object],
        n_steps: int, *, scratch: Path | None = None, checkpoint_every: int = 500, scheduler=None,
        clip_grad: float | None = None, desc: str = "train", log_every: int = 10,
        max_time_s: float | None = None, validate: Callable | None = None, validate_every: int = 500,
        autocast_dtype: torch.dtype | None = None, shard_batch: Callable | None = None,
        settings: dict | None = None) -> dict:
    """Train and return ``{"step": [...], "loss": [...], "val": [...], "wall_time_s": float, "resumed_from": int}``.

    ``loss_fn(model, batch)`` returns a scalar loss, or ``(loss, extra)`` with a dict of floats to log.
    ``max_time_s`` (optional) stops early once that much training wall time has passed (this call's time, so a
    resumed run gets a fresh allowance); the history then holds ``"stopped_at"`` (the number of steps done).
    ``validate(model) -> {"val_loss": float, ...}`` runs (in eval mode, without gradients) every
    ``validate_every`` steps; each result enters ``history["val"]`` with its step and the training wall time.
    A scheduler with an ``observe(value)`` method (:class:`PlateauLR`) receives the first metric and ends the
    training when its ``done`` becomes true (``history["converged_at"]``).

    ``settings`` (optional, e.g. the loss weights and learning rate) are stored in ``scratch``'s state; resuming
    from a state saved with other settings is refused, so that a changed recipe does not silently continue a
    model trained on another loss (states saved without settings are resumed as before).

    **Mixed precision.** ``autocast_dtype=torch.bfloat16`` runs ``loss_fn`` (forward pass and loss) under
    ``torch.autocast``: matrix products and convolutions in bf16, reductions and normalisations in float32
    (autocast's own op lists). The parameters, their gradients, the optimizer state, ``backward`` (outside the
    autocast region) and the loss value (cast to float32 before the NaN guard and ``backward``) stay float32, as
    does ``validate``. The energy models' scores and the A-DSM / A-CSM residuals are computed in float32 by
    :mod:`energy_utils.score_losses` (the energy is summed in float32 before ∇_yU and ∂U/∂log v are taken).
    bf16 needs no loss scaling; float16 is refused.

    **Several processes.** Under ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` > 1 in the environment, or a
    process group already initialised) every process calls ``fit`` with the same arguments; ``fit`` joins the
    process group (:func:`energy_utils.distributed.setup`: gloo for a CPU model, nccl for CUDA) and wraps the
    model in ``DistributedDataParallel``, so ``loss_fn`` must call the model (its ``forward``), not other methods.
    ``sample_batch(step)`` must return the same *global* batch on every process (as a generator seeded by the
    step, or one seeded alike on every process, does); each process keeps rows ``rank::N`` of it
    (``shard_batch(batch, rank, N)``, default :func:`energy_utils.distributed.shard`; the global batch must be
    divisible by N), so N processes take the same optimizer step as one process on the global batch, up to
    float rounding. Randomness drawn *inside* ``loss_fn`` is not split: put it in the batch for that
    equivalence. The logged loss and extras are averaged over the processes, so the history is the global
    batch's on every process. Rank 0 alone shows progress, writes ``scratch`` (each process' RNG state is kept,
    so a run resumed with the same N continues identically), runs ``validate`` and decides when ``max_time_s``
    has passed; its validation metrics, its stop decision and its learning rates are sent to the other
    processes each step, so all of them stop together and time-based schedules cannot drift apart.
    """
    if n_steps < 0:
        raise ValueError("n_steps must be >= 0")
    if autocast_dtype not in (None, torch.bfloat16):
        raise ValueError(f"autocast_dtype must be None or torch.bfloat16 (float16 would need loss scaling), "
                         f"got {autocast_dtype}")
    history = {"step": [], "loss": [], "extra": [], "val": [], "wall_time_s": 0.0, "resumed_from": 0}
    start = 0
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    if distributed.setup("nccl" if device.type == "cuda" else "gloo"):
        rank, world = distributed.rank(), distributed.world_size()
    else:
        rank, world = 0, 1
    main = rank == 0
    split = shard_batch or distributed.shard
    state_path = Path(scratch) / "train_state.pt" if scratch is not None else None
    if state_path is not None and state_path.exists():
        saved = torch.load(state_path, map_location="cpu", weights_only=False)
        if settings is not None and saved.get("settings") not in (None, settings):
            raise ValueError(f"{state_path} was trained with settings {saved['settings']}, this run asks for "
                             f"{settings}: delete that file to start afresh, or resume with its settings")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved.get("scheduler") is not None:
            scheduler.load_state_dict(saved["scheduler"])
        history = saved["history"]
        history.setdefault("val", [])
        history.pop("stopped_at", None)
        if not getattr(scheduler, "done", False):
            history.pop("converged_at", None)     # e.g. a finished training resumed for a final annealing
        start = saved["step"]
        history["resumed_from"] = start
        per_rank = saved.get("rng_ranks")
        _set_rng_state(per_rank[rank] if per_rank is not None and len(per_rank) == world else saved["rng"])
    net = _wrap_data_parallel(model) if world > 1 else model      # what loss_fn receives

    def save(step):
        # every process calls save at the same steps: rank 0 gathers their RNG states and writes the file
        if state_path is None:
            return
        rngs = distributed.gather_to_main(_rng_state()) if world > 1 else None
        if main:
            state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = state_path.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else None,
                        "history": history, "step": step, "rng": _rng_state(), "settings": settings,
                        **({"rng_ranks": rngs, "world_size": world} if world > 1 else {})}, tmp)
            tmp.replace(state_path)
        distributed.barrier()

    def run_validation(step):
        metrics = None
        if main:
            model.eval()
            with torch.no_grad():
                metrics = {k: float(v) for k, v in validate(model).items()}
        if world > 1:
            metrics = distributed.from_main(metrics)
        net.train()
        history["val"].append({"step": step, "wall_time_s": time.perf_counter() - t0, **metrics})
        if hasattr(scheduler, "observe"):
            scheduler.observe(next(iter(metrics.values())))
        return metrics

    def sync_from_main(stop: bool) -> bool:
        # rank 0's stop decision and learning rates, on every process
        t = torch.tensor([float(stop)] + [g["lr"] for g in optimizer.param_groups], dtype=torch.float64,
                         device=distributed.comm_device())
        torch.distributed.broadcast(t, src=0)
        values = t.tolist()
        for g, lr in zip(optimizer.param_groups, values[1:]):
            g["lr"] = lr
        return values[0] > 0

    if getattr(scheduler, "done", False):
        n_steps = start
    net.train()
    t0 = time.perf_counter() - history["wall_time_s"]
    t_call = time.perf_counter()
    if validate is not None and start == 0 and n_steps > 0 and not history["val"]:
        run_validation(0)
    if world > 1:
        sync_from_main(False)
    bar = tqdm(range(start, n_steps), desc=desc, initial=start, total=n_steps, leave=False, disable=not main)
    for step in bar:
        batch = sample_batch(step)
        if world > 1:
            batch = split(batch, rank, world)
        with _autocast(device, autocast_dtype):
            out = loss_fn(net, batch)
        loss, extra = (out if isinstance(out, tuple) else (out, {}))
        if autocast_dtype is not None:
            loss = loss.float()
        shown = distributed.mean_over_processes(loss) if world > 1 else loss
        if not torch.isfinite(shown):
            save(step)
            raise DivergenceError(f"{desc}: loss became {shown.item()} at step {step}; lower the learning rate or "
                                  f"check the data (last good state saved in {state_path})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if step % log_every == 0 or step == n_steps - 1:
            extra = {k: float(v) for k, v in extra.items()}
            if world > 1 and extra:
                means = distributed.mean_over_processes(torch.tensor(list(extra.values()), dtype=torch.float64))
                extra = dict(zip(extra, means.tolist()))
            history["step"].append(step)
            history["loss"].append(shown.item())
            history["extra"].append(extra)
            bar.set_postfix(loss=f"{shown.item():.4g}", refresh=False)
        history["wall_time_s"] = time.perf_counter() - t0
        if validate is not None and ((step + 1) % validate_every == 0 or step == n_steps - 1):
            metrics = run_validation(step + 1)
            bar.set_postfix(loss=f"{shown.item():.4g}", val=f"{next(iter(metrics.values())):.4g}", refresh=False)
            if getattr(scheduler, "done", False):
                history["converged_at"] = step + 1
                history["stopped_at"] = step + 1
                break
        if getattr(scheduler, "done", False) and "converged_at" not in history:
            # a scheduler told of validations by the caller (EarlyStopping.observe inside loss_fn) ends here
            history["converged_at"] = history["stopped_at"] = step + 1
            break
        if (step + 1) % checkpoint_every == 0:
            save(step + 1)
        stop = max_time_s is not None and time.perf_counter() - t_call >= max_time_s and step + 1 < n_steps
        if world > 1:
            stop = sync_from_main(stop)
        if stop:
            history["stopped_at"] = step + 1
            break
    history["wall_time_s"] = time.perf_counter() - t0
    save(history.get("stopped_at", n_steps))
    model.eval()
    return history


def restore_training_state(store: Path, work: Path) -> bool:
    """Before :func:`fit` resumes from ``work`` (its ``scratch/train_state.pt``): copy the committed state ``store``
    there, unless this machine's ``work`` is newer. Returns whether it copied. With :func:`keep_training_state`
    a training continues across sessions whose scratch folders do not survive."""
    store, work = Path(store), Path(work)
    if store == work or not store.exists() or (work.exists() and work.stat().st_mtime >= store.stat().st_mtime):
        return False
    work.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(store, work)
    return True


def keep_training_state(work: Path, store: Path) -> None:
    """After :func:`fit`: copy its resumable state ``work`` to the committed place ``store`` (see
    :func:`restore_training_state`)."""
    work, store = Path(work), Path(store)
    if store != work and work.exists():
        store.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work, store)


class PlateauLR:
    """Train until the validation curve flattens: keep the learning rate while the validation metric improves,
    multiply it by ``factor`` after ``patience`` validations without a relative improvement of ``rel_tol`` over
    the best value, and report ``done`` after ``max_reductions`` such cuts (the curve has flattened at the
    smallest rate). A linear warm-up over ``warmup`` steps. ``step()`` once per optimizer step;
    ``observe(value)`` after each validation (:func:`fit` calls both).

    ``anneal_at`` (optional): from that step on, no more cuts; the rate reached there, r, follows a cosine to
    ``anneal_floor``·r over ``anneal_steps`` steps, lr(n) = r (f + (1 − f) ½(1 + cos(π min(1, (n − a)/S)))), and
    stays there (a final annealing phase for a training that a time budget ends before the plateau rule has cut
    the rate; the caller's step cap ends it, ``done`` stays the plateau rule's).

    ``anneal_when_flat``: the same cosine as a last phase of a training the plateau rule ends: when the rule
    would report ``done`` (the curve flat at the smallest rate), ``anneal_at`` becomes that step and ``done``
    waits until the ``anneal_steps`` of the cosine are over (the weights then settle instead of wandering at a
    constant rate). A state saved by a finished training without it anneals from its last step when resumed."""

    def __init__(self, optimizer, patience: int = 4, factor: float = 0.5, max_reductions: int = 3,
                 rel_tol: float = 0.005, warmup: int = 100, anneal_at: int | None = None, anneal_steps: int = 1000,
                 anneal_floor: float = 0.02, anneal_when_flat: bool = False):
        if not 0 < factor < 1 or patience < 1 or max_reductions < 0:
            raise ValueError(f"need 0 < factor < 1, patience >= 1, max_reductions >= 0; got {factor}, {patience}, "
                             f"{max_reductions}")
        if (anneal_at is not None or anneal_when_flat) and (
                (anneal_at or 0) < 0 or anneal_steps < 1 or not 0 < anneal_floor <= 1):
            raise ValueError(f"need anneal_at >= 0, anneal_steps >= 1, 0 < anneal_floor <= 1; got {anneal_at}, "
                             f"{anneal_steps}, {anneal_floor}")
        if anneal_at is not None and anneal_when_flat:
            raise ValueError("give anneal_at (a fixed step) or anneal_when_flat (when the plateau rule ends), not both")
        self.optimizer, self.patience, self.factor = optimizer, patience, factor
        self.max_reductions, self.rel_tol, self.warmup = max_reductions, rel_tol, warmup
        self.anneal_at, self.anneal_steps, self.anneal_floor = anneal_at, anneal_steps, anneal_floor
        self.anneal_when_flat = anneal_when_flat
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.count, self.best, self.bad, self.reductions = 0, float("inf"), 0, 0
        self._apply()

    @property
    def flat(self) -> bool:
        """The plateau rule's verdict: ``max_reductions`` cuts done and the curve flat again."""
        return self.reductions > self.max_reductions

    @property
    def done(self) -> bool:
        if not self.anneal_when_flat:
            return self.flat
        return self.flat and self.anneal_at is not None and self.count >= self.anneal_at + self.anneal_steps

    def _anneal_if_flat(self):
        if self.anneal_when_flat and self.flat and self.anneal_at is None:
            self.anneal_at = self.count

    @property
    def annealing(self) -> bool:
        return self.anneal_at is not None and self.count >= self.anneal_at

    @property
    def scale(self) -> float:
        s = self.factor ** min(self.reductions, self.max_reductions) * min(1.0, (self.count + 1) / self.warmup)
        if self.annealing:
            frac = min(1.0, (self.count - self.anneal_at) / self.anneal_steps)
            s *= self.anneal_floor + (1 - self.anneal_floor) * 0.5 * (1 + math.cos(math.pi * frac))
        return s

    def _apply(self):
        for g, b in zip(self.optimizer.param_groups, self.base):
            g["lr"] = b * self.scale

    def step(self):
        self.count += 1
        self._apply()

    def observe(self, value: float):
        if value < self.best * (1 - self.rel_tol):
            self.best, self.bad = value, 0
        elif not self.annealing:
            self.bad += 1
            if self.bad >= self.patience:
                self.reductions, self.bad = self.reductions + 1, 0
        self._anneal_if_flat()
        self._apply()

    def state_dict(self):
        keys = ("count", "best", "bad", "reductions") + (("anneal_at",) if self.anneal_when_flat else ())
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state):
        for k, v in state.items():
            setattr(self, k, v)
        self._anneal_if_flat()
        self._apply()


class EarlyStopping(PlateauLR):
    """:class:`PlateauLR` that also keeps a copy of ``module``'s weights at its lowest validation value, for
    early stopping: train at a constant rate, halve it after ``patience`` validations without a relative
    improvement of ``rel_tol``, stop after ``max_reductions`` cuts (or at the caller's step cap), then
    :meth:`restore_best`. The copy travels in ``state_dict`` so a resumed training keeps it."""

    def __init__(self, optimizer, module: torch.nn.Module, **plateau):
        super().__init__(optimizer, **{"warmup": 1, **plateau})
        self.module = module
        self.best_value, self.best_count, self.best_state = float("inf"), None, None

    def observe(self, value: float):
        if value < self.best_value:
            self.best_value, self.best_count = value, self.count
            self.best_state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        super().observe(value)

    def restore_best(self) -> int:
        """Load the weights of the best validation into ``module``; returns the optimizer step they come from."""
        if self.best_state is None:
            raise RuntimeError("EarlyStopping.restore_best: no validation was observed (call observe first)")
        self.module.load_state_dict(self.best_state)
        return self.best_count

    def state_dict(self):
        return {**super().state_dict(), "best_value": self.best_value, "best_count": self.best_count,
                "best_state": self.best_state}


class BudgetCosineLR:
    """Linear warm-up then cosine decay to ``final_frac``·lr over whichever runs out first: ``n_steps`` steps
    or ``max_time_s`` seconds of wall time (progress = max of the two fractions), so a time-bounded ``fit``
    still ends with an annealed learning rate. Call ``step()`` once per optimizer step."""

    def __init__(self, optimizer, n_steps: int, max_time_s: float | None = None, warmup: int = 100,
                 final_frac: float = 0.02):
        self.optimizer, self.n_steps, self.max_time_s = optimizer, max(1, n_steps), max_time_s
        self.warmup, self.final_frac = warmup, final_frac
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.count, self.elapsed, self._t = 0, 0.0, time.perf_counter()
        self._apply()

    def progress(self) -> float:
        p = self.count / self.n_steps
        if self.max_time_s:
            p = max(p, self.elapsed / self.max_time_s)
        return min(1.0, p)

    def _apply(self):
        import math
        p = self.progress()
        f = self.final_frac + (1 - self.final_frac) * 0.5 * (1 + math.cos(math.pi * p))
        if self.count < self.warmup:
            f *= (self.count + 1) / self.warmup
        for g, b in zip(self.optimizer.param_groups, self.base):
            g["lr"] = b * f

    def step(self):
        now = time.perf_counter()
        self.elapsed += now - self._t
        self._t = now
        self.count += 1
        self._apply()

    def state_dict(self):
        return {"count": self.count, "elapsed": self.elapsed}

    def load_state_dict(self, state):
        self.count, self.elapsed = state["count"], state["elapsed"]
        self._t = time.perf_counter()
        self._apply()
