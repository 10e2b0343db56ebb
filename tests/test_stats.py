"""Seed-level intervals and verdicts: a winner is named only when the interval excludes no difference."""
import math

import numpy as np
import pytest

from energy_utils import stats


def test_t_interval_matches_the_textbook_formula_and_covers_at_its_level():
    v = [1.0, 2.0, 4.0]
    iv = stats.seed_interval(v)
    half = 4.302652729911275 * np.std(v, ddof=1) / math.sqrt(3)      # t_{2, 0.975}
    assert iv.mean == pytest.approx(7 / 3) and iv.high - iv.mean == pytest.approx(half)
    rng = np.random.default_rng(0)
    cover = np.mean([(lambda i: i.low <= 0 <= i.high)(stats.seed_interval(rng.normal(size=3))) for _ in range(4000)])
    assert 0.93 < cover < 0.97
    assert math.isnan(stats.seed_interval([3.0]).low)


def test_verdicts_name_a_winner_only_when_the_interval_excludes_zero():
    clear = stats.compare_arms([1.0, 1.1, 0.9], [2.0, 2.1, 1.9], "hybrid", "scratch")
    assert clear.verdict == "hybrid better" and clear.difference.low > 0
    higher = stats.compare_arms([1.0, 1.1, 0.9], [2.0, 2.1, 1.9], "a", "b", lower_is_better=False)
    assert higher.verdict == "b better"
    noisy = stats.compare_arms([1.0, 2.0, 0.5], [1.2, 0.4, 2.1])
    assert noisy.verdict == stats.NO_DIFFERENCE and noisy.difference.low < 0 < noisy.difference.high
    one = stats.compare_arms([1.0], [2.0])
    assert "one seed only" in one.verdict
    paired = stats.compare_arms([1.0, 2.0, 3.0], [1.1, 2.1, 3.1], paired=True)
    assert paired.verdict == "A better"         # the same shift on every seed is measurable when paired
    assert stats.compare_arms([1.0, 2.0, 3.0], [1.1, 2.1, 3.1]).verdict == stats.NO_DIFFERENCE


def test_clear_errors():
    with pytest.raises(ValueError, match="no values"):
        stats.seed_interval([])
    with pytest.raises(ValueError, match="non-finite"):
        stats.compare_arms([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="as many seeds"):
        stats.compare_arms([1.0, 2.0], [1.0, 2.0, 3.0], paired=True)


def test_compare_to_reference_needs_the_whole_interval_on_one_side():
    from energy_utils.stats import NO_DIFFERENCE, compare_to_reference
    assert compare_to_reference([1.0, 1.1, 0.9], 2.0) == "better"
    assert compare_to_reference([1.0, 1.1, 0.9], 2.0, lower_is_better=False) == "worse"
    assert compare_to_reference([1.0, 3.0, 2.0], 2.0) == NO_DIFFERENCE
    assert compare_to_reference([1.0], 2.0).startswith("one seed only")


def test_versus_reference_shifts_the_interval_and_names_the_winner():
    from energy_utils.stats import NO_DIFFERENCE, seed_interval, versus_reference
    vals = [1.0, 1.1, 0.9]
    row = versus_reference(vals, 2.0, "hybrid", "ridge")
    iv = seed_interval(vals)
    assert row["difference"] == iv.mean - 2.0
    assert (row["ci_low"], row["ci_high"]) == (iv.low - 2.0, iv.high - 2.0)
    assert row["verdict"] == "hybrid better"
    assert versus_reference(vals, 0.5, "hybrid", "ridge")["verdict"] == "ridge better"
    assert versus_reference([1.0, 3.0, 2.0], 2.0, "hybrid", "ridge")["verdict"] == NO_DIFFERENCE
