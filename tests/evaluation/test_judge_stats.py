"""An AI judge's statistics against independent computations: order averaging by hand, position
inconsistency, Cohen's kappa and the Brier score as scikit-learn computes them, the expected calibration
error by its definition."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, cohen_kappa_score

from evaluation import judge_stats

SHOWN = [[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]
# The same pairs with the sides swapped, columns naming what was shown first: pair 0 still prefers the
# answer A (now shown second), pair 1 prefers whatever is shown first (a position bias).
SWAPPED = [[0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.3, 0.1, 0.6]]


def test_the_two_orders_are_averaged_in_the_pairs_own_labels():
    averaged = judge_stats.order_averaged(SHOWN, SWAPPED)
    np.testing.assert_allclose(averaged[0], [(0.7 + 0.8) / 2, (0.2 + 0.1) / 2, 0.1])
    np.testing.assert_allclose(averaged[1], [(0.6 + 0.3) / 2, (0.3 + 0.6) / 2, 0.1])
    np.testing.assert_allclose(averaged.sum(1), 1.0)


def test_a_judge_that_follows_the_position_is_inconsistent():
    assert judge_stats.position_inconsistent(SHOWN, SWAPPED).tolist() == [False, True, False]


def test_bad_probabilities_are_refused_by_name():
    with pytest.raises(ValueError, match="shown: each row must be probabilities"):
        judge_stats.order_averaged([[0.5, 0.6, 0.0]], [[0.5, 0.5, 0.0]])
    with pytest.raises(ValueError, match="people: 'maybe' is not one of a, b, tie"):
        judge_stats.agreement_with_majority(["a"], ["maybe"])


def test_agreement_and_kappa_equal_scikit_learn_with_an_interval_around_them():
    rng = np.random.default_rng(3)
    people = rng.choice(["a", "b", "tie"], size=300, p=[0.45, 0.45, 0.1])
    judge = np.where(rng.random(300) < 0.75, people, rng.choice(["a", "b", "tie"], size=300))
    result = judge_stats.agreement_with_majority(list(judge), list(people), n_boot=500, seed=1)
    assert result["pairs"] == 300
    assert result["percent"]["value"] == pytest.approx(np.mean(judge == people))
    assert result["kappa"]["value"] == pytest.approx(cohen_kappa_score(judge, people))
    assert result["kappa"]["low"] < result["kappa"]["value"] < result["kappa"]["high"]
    one_label = judge_stats.agreement_with_majority(["a", "a"], ["a", "a"])
    assert one_label["kappa"]["value"] is None and one_label["percent"]["value"] == 1.0


def test_brier_score_equals_scikit_learn_and_ece_its_definition():
    rng = np.random.default_rng(5)
    truth = rng.random(400)
    a_won = (rng.random(400) < truth).astype(int)
    p = np.clip(truth + rng.normal(0, 0.1, 400), 0, 1)
    assert judge_stats.brier_score(p, a_won) == pytest.approx(brier_score_loss(a_won, p))
    # ECE by its definition, binned by hand.
    expected = 0.0
    for b in range(10):
        mine = (np.minimum((p * 10).astype(int), 9)) == b
        if mine.any():
            expected += mine.sum() / 400 * abs(a_won[mine].mean() - p[mine].mean())
    assert judge_stats.expected_calibration_error(p, a_won) == pytest.approx(expected)
    assert judge_stats.expected_calibration_error(p, a_won) < 0.1  # the probabilities are calibrated here
    overconfident = np.where(p > 0.5, 1.0, 0.0)
    assert judge_stats.expected_calibration_error(overconfident, a_won) > 0.15
    bins = judge_stats.reliability_bins(p, a_won)
    assert sum(b["count"] for b in bins) == 400 and all(b["low"] <= b["predicted"] <= b["high"] for b in bins)


def test_the_module_imports_no_django():
    import subprocess
    import sys

    code = "import evaluation.judge_stats, sys; assert not any(m.startswith('django') for m in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
