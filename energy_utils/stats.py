"""Seed-level statistics: verdicts that compare trained models rest on several training seeds.

A number measured on one trained model mixes the method with the luck of its initialisation and data order.
These helpers summarise one number per *training seed* (not per test example) and compare two arms:

* :func:`seed_interval` — mean and a two-sided t-interval over seeds, mean ± t_{n−1, 1−a/2} · s/√n.
* :func:`compare_arms` — the difference of means with a Welch t-interval (or a paired t-interval when the
  arms share seeds and ``paired=True``) and a verdict that names a winner only when the interval excludes 0;
  otherwise "no measurable difference at this budget".

With fewer than 2 seeds per arm there is no interval and the verdict says so.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _st

NO_DIFFERENCE = "no measurable difference at this budget"


@dataclass
class Interval:
    mean: float
    low: float
    high: float
    n: int
    level: float

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        half = (self.high - self.low) / 2
        return f"{self.mean:.4g} ± {half:.2g} ({self.level:.0%} CI, n={self.n})"


def _values(values, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=float).reshape(-1)
    if v.size == 0:
        raise ValueError(f"{name}: no values (give one number per training seed)")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name}: non-finite values {v.tolist()}")
    return v


def seed_interval(values, level: float = 0.95) -> Interval:
    """Mean over seeds with a t-interval (NaN bounds for a single seed)."""
    v = _values(values, "seed_interval")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if v.size < 2:
        return Interval(float(v.mean()), math.nan, math.nan, 1, level)
    half = _st.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return Interval(float(v.mean()), float(v.mean() - half), float(v.mean() + half), int(v.size), level)


@dataclass
class Comparison:
    """B − A over seeds (``difference``), its interval, and the verdict ("lower is better" unless stated)."""
    name_a: str
    name_b: str
    a: Interval
    b: Interval
    difference: Interval
    verdict: str
    relative: float            # (B − A) / |A|

    def as_dict(self) -> dict:
        d = asdict(self)
        d["a"], d["b"], d["difference"] = self.a.as_dict(), self.b.as_dict(), self.difference.as_dict()
        return d


def compare_arms(a, b, name_a: str = "A", name_b: str = "B", lower_is_better: bool = True, level: float = 0.95,
                 paired: bool = False) -> Comparison:
    """Compare two arms from one number per training seed each (e.g. test MSE of each seed's model).

    Welch's t-interval for mean(b) − mean(a) (``paired=True``: the t-interval of the per-seed differences, for
    arms trained on the same seeds). The verdict names the better arm only when the interval excludes 0."""
    va, vb = _values(a, name_a), _values(b, name_b)
    ia, ib = seed_interval(va, level), seed_interval(vb, level)
    diff = float(vb.mean() - va.mean())
    if paired:
        if va.size != vb.size:
            raise ValueError(f"paired comparison needs as many seeds in both arms, got {va.size} and {vb.size}")
        di = seed_interval(vb - va, level)
    elif va.size < 2 or vb.size < 2:
        di = Interval(diff, math.nan, math.nan, min(va.size, vb.size), level)
    else:
        sa, sb = va.var(ddof=1) / va.size, vb.var(ddof=1) / vb.size
        se = math.sqrt(sa + sb)
        dof = (sa + sb) ** 2 / ((sa ** 2 / (va.size - 1) if va.size > 1 else 0) + (sb ** 2 / (vb.size - 1) if vb.size > 1 else 0)) \
            if se > 0 else va.size + vb.size - 2
        half = _st.t.ppf(0.5 + level / 2, dof) * se
        di = Interval(diff, diff - half, diff + half, int(min(va.size, vb.size)), level)
    if math.isnan(di.low):
        verdict = f"one seed only: {NO_DIFFERENCE}"
    elif di.low > 0 or di.high < 0:
        b_better = (di.high < 0) if lower_is_better else (di.low > 0)
        verdict = f"{name_b if b_better else name_a} better"
    else:
        verdict = NO_DIFFERENCE
    rel = diff / abs(va.mean()) if va.mean() != 0 else math.inf
    return Comparison(name_a, name_b, ia, ib, di, verdict, float(rel))


def compare_to_reference(values, reference: float, lower_is_better: bool = True, level: float = 0.95) -> str:
    """A trained arm (one number per seed) against a deterministic reference (a baseline without training
    randomness): "better" when the arm's seed interval lies wholly on the better side of the reference, "worse"
    when it lies wholly on the other side, else "no measurable difference at this budget" (always so for one seed,
    said in the verdict)."""
    iv = seed_interval(values, level)
    if not math.isfinite(reference):
        raise ValueError(f"the reference must be a finite number, got {reference}")
    if iv.n < 2:
        return f"one seed only: {NO_DIFFERENCE}"
    above, below = iv.low > reference, iv.high < reference
    if above or below:
        return "better" if below == lower_is_better else "worse"
    return NO_DIFFERENCE


def versus_reference(values, reference: float, arm: str, reference_name: str, lower_is_better: bool = True,
                     level: float = 0.95) -> dict:
    """One table row for a trained arm against a deterministic reference: the arm's mean minus the reference,
    its seed interval shifted by the reference (``ci_low``, ``ci_high``) and the verdict of
    :func:`compare_to_reference` worded with the names ("<arm> better", "<reference_name> better", or
    "no measurable difference at this budget")."""
    iv = seed_interval(values, level)
    verdict = compare_to_reference(values, reference, lower_is_better, level)
    verdict = {"better": f"{arm} better", "worse": f"{reference_name} better"}.get(verdict, verdict)
    return {"difference": iv.mean - reference, "ci_low": iv.low - reference, "ci_high": iv.high - reference,
            "verdict": verdict}
