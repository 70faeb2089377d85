"""Statistics of an AI judge measured against people (issue #28), pure (numpy only; no Django).

A judge gives, for each pair, probabilities over ("a", "b", "tie") twice: with the pair shown as written
(A first) and with its sides swapped. These functions average the two orders, count the pairs whose two
orders disagree (position inconsistency), and compare the judge with the human majority: agreement
(percent and Cohen's kappa, with a bootstrap interval over pairs), the Brier score and the expected
calibration error of its probability that A wins, and the reliability diagram's bins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from labeling.agreement import kappa_from_confusion

LABELS = ("a", "b", "tie")
# Column order of a swapped verdict read back in the pair's own labels: its "a" is the pair's B.
_SWAP = [1, 0, 2]


def _probabilities(p: Any, name: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"{name}: shape (pairs, 3) of probabilities of a, b, tie expected, not {p.shape}")
    if np.any(p < 0) or np.any(np.abs(p.sum(1) - 1) > 1e-6):
        raise ValueError(f"{name}: each row must be probabilities (non-negative, summing to 1)")
    return p


def order_averaged(shown: Any, swapped: Any) -> np.ndarray:
    """The judge's verdict per pair, independent of the side it was shown on: shape (N, 3), the mean of
    `shown` (N, 3: P(a), P(b), P(tie) with A shown first) and `swapped` (N, 3, the same pair with B shown
    first, its columns naming what was shown first and second) read back in the pair's labels."""
    shown, swapped = _probabilities(shown, "shown"), _probabilities(swapped, "swapped")
    if shown.shape != swapped.shape:
        raise ValueError(f"shown {shown.shape} and swapped {swapped.shape} must have the same shape")
    return (shown + swapped[:, _SWAP]) / 2


def position_inconsistent(shown: Any, swapped: Any) -> np.ndarray:
    """Per pair (N,), whether the judge's most likely label changes when the sides are swapped (it then
    prefers a position, not an answer). A tie in one order and a side in the other counts as a change."""
    shown, swapped = _probabilities(shown, "shown"), _probabilities(swapped, "swapped")
    return shown.argmax(1) != swapped[:, _SWAP].argmax(1)


def _codes(labels: Sequence[str], name: str) -> np.ndarray:
    index = {label: i for i, label in enumerate(LABELS)}
    try:
        return np.fromiter((index[label] for label in labels), np.int64, len(labels))
    except KeyError as exc:
        raise ValueError(f"{name}: {exc.args[0]!r} is not one of {', '.join(LABELS)}") from None


def agreement_with_majority(
    judge: Sequence[str], people: Sequence[str], *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """How often the judge's label (per pair: "a", "b" or "tie") equals the human majority's, and Cohen's
    kappa (Cohen 1960; equal to scikit-learn's cohen_kappa_score) with percentile bootstrap intervals
    over pairs. {"pairs", "percent": {value, low, high}, "kappa": {value, low, high}}; values None when
    undefined (no pairs; kappa with one label throughout)."""
    if len(judge) != len(people):
        raise ValueError(f"judge has {len(judge)} labels and people {len(people)}: one each per pair")
    x, y = _codes(judge, "judge"), _codes(people, "people")
    n, k = len(x), len(LABELS)
    cell = x * k + y
    empty = {"value": None, "low": None, "high": None}
    if n == 0:
        return {"pairs": 0, "percent": empty, "kappa": dict(empty)}
    cm = np.bincount(cell, minlength=k * k).reshape(k, k)
    draws = np.random.default_rng(seed).multinomial(n, cm.ravel() / n, size=n_boot).reshape(n_boot, k, k)
    out: dict[str, Any] = {"pairs": n}
    for name, value, boot in (
        ("percent", np.trace(cm) / n, np.trace(draws, axis1=1, axis2=2) / n),
        ("kappa", kappa_from_confusion(cm), kappa_from_confusion(draws)),
    ):
        value = float(value)
        boot = boot[~np.isnan(boot)]
        if np.isnan(value):
            out[name] = dict(empty)
            continue
        low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]) if len(boot) else (np.nan, np.nan)
        out[name] = {"value": value, "low": None if np.isnan(low) else float(low),
                     "high": None if np.isnan(high) else float(high)}  # fmt: skip
    return out


def _binary(p_a: Any, a_won: Any) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(p_a, dtype=np.float64), np.asarray(a_won, dtype=np.float64)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError("probabilities and outcomes: two arrays of shape (N,)")
    if np.any((p < 0) | (p > 1)) or np.any((y != 0) & (y != 1)):
        raise ValueError("probabilities in [0, 1] and outcomes 0 or 1")
    return p, y


def brier_score(p_a: Any, a_won: Any) -> float | None:
    """Mean squared error of the judge's probability that A wins against the people's decisive verdict
    (1: A, 0: B), shape (N,) each (Brier 1950; equal to scikit-learn's brier_score_loss). None without
    pairs. Lower is better; 0.25 is a constant 0.5."""
    p, y = _binary(p_a, a_won)
    return float(np.mean((p - y) ** 2)) if len(p) else None


def reliability_bins(p_a: Any, a_won: Any, *, bins: int = 10) -> list[dict[str, Any]]:
    """The reliability diagram's points: the probabilities that A wins cut into `bins` equal-width bins
    over [0, 1] (the last closed); per non-empty bin {low, high, count, predicted (mean probability),
    observed (share of pairs people gave to A)}. A calibrated judge's points lie on the diagonal."""
    p, y = _binary(p_a, a_won)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    rows = []
    for b in range(bins):
        mine = which == b
        if mine.any():
            rows.append({"low": b / bins, "high": (b + 1) / bins, "count": int(mine.sum()),
                         "predicted": float(p[mine].mean()), "observed": float(y[mine].mean())})  # fmt: skip
    return rows


def expected_calibration_error(p_a: Any, a_won: Any, *, bins: int = 10) -> float | None:
    """Expected calibration error (Naeini et al. 2015; Guo et al. 2017) of the probability that A wins:
    sum over the reliability bins of |observed - predicted| weighted by the bin's share of pairs. None
    without pairs; 0 is perfectly calibrated."""
    p, y = _binary(p_a, a_won)
    if not len(p):
        return None
    return float(
        sum(r["count"] * abs(r["observed"] - r["predicted"]) for r in reliability_bins(p, y, bins=bins))
        / len(p)
    )
