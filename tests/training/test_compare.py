"""training.compare: the before/after change in preference share and its paired bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from training.compare import ShareChange, share_change

# 40 held-out pairs: 10 preferred before and after, 2 only before, 18 only after, 10 neither.
BEFORE = [True] * 10 + [True] * 2 + [False] * 18 + [False] * 10
AFTER = [True] * 10 + [False] * 2 + [True] * 18 + [False] * 10


def test_the_change_and_its_cells_on_fixed_numbers() -> None:
    result = share_change(BEFORE, AFTER)
    assert (result.pairs, result.before, result.after) == (40, 0.3, 0.7)
    assert result.change == pytest.approx(0.4)
    assert (result.both, result.lost, result.gained, result.neither) == (10, 2, 18, 10)
    assert result.measurable and result.low > 0.2 and result.high < 0.6
    assert result.words() == (
        "Better: held-out preference share 0.30 → 0.70 (+0.40, 95% CI "
        f"{result.low:+.2f} to {result.high:+.2f}, 40 pairs)."
    )
    assert share_change(BEFORE, AFTER) == result  # a seed gives the same interval every time


def test_the_interval_equals_scipys_paired_percentile_bootstrap() -> None:
    ours = share_change(BEFORE, AFTER, resamples=20_000)
    theirs = stats.bootstrap(
        (np.array(BEFORE, float), np.array(AFTER, float)),
        lambda b, a, axis=-1: a.mean(axis=axis) - b.mean(axis=axis),
        paired=True,
        vectorized=True,
        method="percentile",
        n_resamples=20_000,
        random_state=1,
    ).confidence_interval
    # Two Monte Carlo estimates of the same quantiles: they agree within a step of 1/40.
    assert ours.low == pytest.approx(theirs.low, abs=0.026)
    assert ours.high == pytest.approx(theirs.high, abs=0.026)


def test_no_measurable_change_is_said_in_words() -> None:
    # The run: 1 of 6 held-out pairs preferred before and after.
    same = [True, False, False, False, False, False]
    result = share_change(same, same)
    assert (result.change, result.low, result.high) == (0.0, 0.0, 0.0) and not result.measurable
    assert result.words().startswith("No measurable change: held-out preference share 0.17 → 0.17 (+0.00")
    # A small change on a few pairs: the interval straddles zero.
    small = share_change([True, False, False] + [False] * 7, [False, True, True] + [False] * 7)
    assert small.low < 0 < small.high and "No measurable change" in small.words()
    one = share_change([False] * 10, [True] + [False] * 9)  # one gain in ten: the interval reaches zero
    assert one.low == 0 and not one.measurable
    worse = share_change([True] * 30, [False] * 30)
    assert worse.measurable and worse.words().startswith("Worse: held-out preference share 1.00 → 0.00")


def test_it_round_trips_through_json_and_refuses_bad_input() -> None:
    result = share_change(BEFORE, AFTER)
    assert ShareChange.from_dict(result.to_dict()) == result
    assert result.to_dict()["measurable"] is True
    with pytest.raises(ValueError, match="one before and one after"):
        share_change([True], [True, False])
    with pytest.raises(ValueError, match="one before and one after"):
        share_change([], [])
    with pytest.raises(ValueError, match="level"):
        share_change([True], [True], level=1.5)
