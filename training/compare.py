"""Before and after a run, honestly: the change in held-out preference share with a bootstrap interval.
Numpy only; no torch and no Django import, so the web app formats results without the engine.

The preference share (`logps/preference_share`) is the fraction of held-out pairs whose chosen response has
the higher mean per-token log-probability under the model. Unlike the implicit rewards (zero for every pair at
step 0, so `rewards/accuracies` starts at 0 by construction), it means the same thing before and after
training, so its change is the fair before/after comparison. Both shares are measured on the same pairs,
so the interval comes from a paired bootstrap over pairs (Efron & Tibshirani 1993, "An Introduction to
the Bootstrap", ch. 13, percentile interval): resample the pairs with replacement, keeping each pair's
before and after outcome together, and take the change of each resample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

RESAMPLES = 10_000
LEVEL = 0.95


@dataclass(frozen=True)
class ShareChange:
    """Held-out preference share before and after, the change and its interval (all fractions in [0, 1],
    the change and interval in [-1, 1])."""

    pairs: int
    before: float
    after: float
    change: float
    low: float
    high: float
    level: float = LEVEL
    # Pairs by outcome: preferred before and after, only before, only after, neither.
    both: int = 0
    lost: int = 0
    gained: int = 0
    neither: int = 0

    @property
    def measurable(self) -> bool:
        """Whether the interval excludes zero."""
        return self.low > 0 or self.high < 0

    @property
    def verdict(self) -> str:
        """ "better", "worse", or "flat" (no measurable change)."""
        if not self.measurable:
            return "flat"
        return "better" if self.change > 0 else "worse"

    def words(self) -> str:
        """One sentence: 'held-out preference share 0.50 → 0.85 (+0.35, 95% CI +0.25 to +0.45)' plus
        'no measurable change' when the interval includes zero."""
        numbers = (
            f"held-out preference share {self.before:.2f} → {self.after:.2f} ({self.change:+.2f}, "
            f"{self.level:.0%} CI {self.low:+.2f} to {self.high:+.2f}, {self.pairs} pairs)"
        )
        if not self.measurable:
            return f"No measurable change: {numbers}."
        direction = "Better" if self.change > 0 else "Worse"
        return f"{direction}: {numbers}."

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "measurable": self.measurable, "verdict": self.verdict, "words": self.words()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShareChange:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def share_change(
    before: Sequence[bool],
    after: Sequence[bool],
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> ShareChange:
    """The change in preference share from `before` to `after` (one outcome per held-out pair, in the same
    order: True where the chosen response is preferred) with a paired percentile bootstrap interval.

    Resampling pairs only moves counts between the four outcome cells (preferred before and after, only
    before, only after, neither), so each resample is one multinomial draw of those counts: the same
    distribution as resampling the pairs one by one, in O(resamples). Deterministic for a `seed`.
    Raises ValueError for sequences of different or zero length, or a level outside (0, 1).
    """
    b, a = np.asarray(before, dtype=bool), np.asarray(after, dtype=bool)
    if b.shape != a.shape or b.ndim != 1 or len(b) == 0:
        raise ValueError(f"need one before and one after outcome per pair; got {b.shape} and {a.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, not {level}")
    n = len(b)
    cells = np.array([(b & a).sum(), (b & ~a).sum(), (~b & a).sum(), (~b & ~a).sum()])
    draws = np.random.default_rng(seed).multinomial(n, cells / n, size=resamples)
    changes = (draws[:, 2] - draws[:, 1]) / n
    low, high = np.quantile(changes, [(1 - level) / 2, (1 + level) / 2])
    return ShareChange(
        pairs=n,
        before=float(b.mean()),
        after=float(a.mean()),
        change=float(a.mean() - b.mean()),
        low=float(low),
        high=float(high),
        level=level,
        both=int(cells[0]),
        lost=int(cells[1]),
        gained=int(cells[2]),
        neither=int(cells[3]),
    )
