"""A small, resumable training loop shared by every model in the companion.

``fit`` runs ``n_steps`` optimizer steps of ``loss_fn(model, batch)`` on batches drawn by
``sample_batch(step)``, shows tqdm progress, stops with a clear error on a non-finite loss, and (when given a
``scratch`` folder) saves model, optimizer, history and RNG state every ``checkpoint_every`` steps so that an
interrupted run resumes where it stopped. With ``validate`` it also records a validation curve, and with a
:class:`PlateauLR` scheduler it trains *until that curve flattens* instead of for a fixed budget.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm


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


def fit(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable, sample_batch: Callable[[int], object],
        n_steps: int, *, scratch: Path | None = None, checkpoint_every: int = 500, scheduler=None,
        clip_grad: float | None = None, desc: str = "train", log_every: int = 10,
        max_time_s: float | None = None, validate: Callable | None = None, validate_every: int = 500) -> dict:
    """Train and return ``{"step": [...], "loss": [...], "val": [...], "wall_time_s": float, "resumed_from": int}``.

    ``loss_fn(model, batch)`` returns a scalar loss, or ``(loss, extra)`` with a dict of floats to log.
    ``max_time_s`` (optional) stops early once that much training wall time has passed (this call's time, so a
    resumed run gets a fresh allowance); the history then holds ``"stopped_at"`` (the number of steps done).
    ``validate(model) -> {"val_loss": float, ...}`` runs (in eval mode, without gradients) every
    ``validate_every`` steps; each result enters ``history["val"]`` with its step and the training wall time.
    A scheduler with an ``observe(value)`` method (:class:`PlateauLR`) receives the first metric and ends the
    training when its ``done`` becomes true (``history["converged_at"]``).
    """
    if n_steps < 0:
        raise ValueError("n_steps must be >= 0")
    history = {"step": [], "loss": [], "extra": [], "val": [], "wall_time_s": 0.0, "resumed_from": 0}
    start = 0
    state_path = Path(scratch) / "train_state.pt" if scratch is not None else None
    if state_path is not None and state_path.exists():
        saved = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved.get("scheduler") is not None:
            scheduler.load_state_dict(saved["scheduler"])
        history = saved["history"]
        history.setdefault("val", [])
        history.pop("stopped_at", None)
        start = saved["step"]
        history["resumed_from"] = start
        _set_rng_state(saved["rng"])

    def save(step):
        if state_path is None:
            return
        state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "history": history, "step": step, "rng": _rng_state()}, tmp)
        tmp.replace(state_path)

    def run_validation(step):
        model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in validate(model).items()}
        model.train()
        history["val"].append({"step": step, "wall_time_s": time.perf_counter() - t0, **metrics})
        if hasattr(scheduler, "observe"):
            scheduler.observe(next(iter(metrics.values())))
        return metrics

    if getattr(scheduler, "done", False):
        n_steps = start
    model.train()
    t0 = time.perf_counter() - history["wall_time_s"]
    t_call = time.perf_counter()
    if validate is not None and start == 0 and n_steps > 0 and not history["val"]:
        run_validation(0)
    bar = tqdm(range(start, n_steps), desc=desc, initial=start, total=n_steps, leave=False)
    for step in bar:
        batch = sample_batch(step)
        out = loss_fn(model, batch)
        loss, extra = (out if isinstance(out, tuple) else (out, {}))
        if not torch.isfinite(loss):
            save(step)
            raise DivergenceError(f"{desc}: loss became {loss.item()} at step {step}; lower the learning rate or "
                                  f"check the data (last good state saved in {state_path})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if step % log_every == 0 or step == n_steps - 1:
            history["step"].append(step)
            history["loss"].append(loss.item())
            history["extra"].append({k: float(v) for k, v in extra.items()})
            bar.set_postfix(loss=f"{loss.item():.4g}", refresh=False)
        history["wall_time_s"] = time.perf_counter() - t0
        if validate is not None and ((step + 1) % validate_every == 0 or step == n_steps - 1):
            metrics = run_validation(step + 1)
            bar.set_postfix(loss=f"{loss.item():.4g}", val=f"{next(iter(metrics.values())):.4g}", refresh=False)
            if getattr(scheduler, "done", False):
                history["converged_at"] = step + 1
                history["stopped_at"] = step + 1
                break
        if (step + 1) % checkpoint_every == 0:
            save(step + 1)
        if max_time_s is not None and time.perf_counter() - t_call >= max_time_s and step + 1 < n_steps:
            history["stopped_at"] = step + 1
            break
    history["wall_time_s"] = time.perf_counter() - t0
    save(history.get("stopped_at", n_steps))
    model.eval()
    return history


class PlateauLR:
    """Train until the validation curve flattens: keep the learning rate while the validation metric improves,
    multiply it by ``factor`` after ``patience`` validations without a relative improvement of ``rel_tol`` over
    the best value, and report ``done`` after ``max_reductions`` such cuts (the curve has flattened at the
    smallest rate). A linear warm-up over ``warmup`` steps. ``step()`` once per optimizer step;
    ``observe(value)`` after each validation (:func:`fit` calls both)."""

    def __init__(self, optimizer, patience: int = 4, factor: float = 0.5, max_reductions: int = 3,
                 rel_tol: float = 0.005, warmup: int = 100):
        if not 0 < factor < 1 or patience < 1 or max_reductions < 0:
            raise ValueError(f"need 0 < factor < 1, patience >= 1, max_reductions >= 0; got {factor}, {patience}, "
                             f"{max_reductions}")
        self.optimizer, self.patience, self.factor = optimizer, patience, factor
        self.max_reductions, self.rel_tol, self.warmup = max_reductions, rel_tol, warmup
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.count, self.best, self.bad, self.reductions = 0, float("inf"), 0, 0
        self._apply()

    @property
    def done(self) -> bool:
        return self.reductions > self.max_reductions

    @property
    def scale(self) -> float:
        return self.factor ** min(self.reductions, self.max_reductions) * min(1.0, (self.count + 1) / self.warmup)

    def _apply(self):
        for g, b in zip(self.optimizer.param_groups, self.base):
            g["lr"] = b * self.scale

    def step(self):
        self.count += 1
        self._apply()

    def observe(self, value: float):
        if value < self.best * (1 - self.rel_tol):
            self.best, self.bad = value, 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                self.reductions, self.bad = self.reductions + 1, 0
        self._apply()

    def state_dict(self):
        return {k: getattr(self, k) for k in ("count", "best", "bad", "reductions")}

    def load_state_dict(self, state):
        for k, v in state.items():
            setattr(self, k, v)
        self._apply()


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
