"""Consensus: from the votes on one pair (and a lead's adjudication) to its exported preference, or to
the reason it is left out; and the label noise of what is kept.

Pure Python: this module must not import Django. The caller gathers, per pair, the choices of the
annotators who count (excluded annotators already left out), the lead's adjudication if any, whether
the pair is gold, and, for the Dawid–Skene method, the pair's posterior over labels.

Order of the rules (the first that applies names the reason a pair is dropped):
1. `gold`: a gold pair while `drop_gold` is on.
2. A lead's adjudication, when `adjudication_overrides` is on, is the label: no vote count or share
   is required (a disputed pair with two votes can be settled by the lead).
3. `too_few_votes`: fewer counted votes than `min_judgments`.
4. majority: `split` when the most-voted label is tied with another or has a share below
   `min_share`; dawid-skene: `low_posterior` when the largest posterior is tied or below
   `min_posterior` (`min_share` is not used: the posterior already weighs each annotator).
5. `tie` / `both_bad`: the label reached (adjudicated or not) is a tie or both-bad and the rules
   drop those.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

LABELS = ("a", "b", "tie", "both_bad")
SIDES = ("a", "b")
METHODS = ("majority", "dawid-skene")

# Stable codes (stored in snapshots, counted in the preview) -> what the preview shows. The last one
# is decided by the export shape (labeling/exporting.py), not by the rules here.
REASONS: dict[str, str] = {
    "gold": "Gold pair",
    "evaluation": "Blind evaluation pair: never in a training export",
    "too_few_votes": "Fewer judgments than the minimum",
    "split": "Split vote: no label reaches the minimum share",
    "low_posterior": "Dawid–Skene posterior below the minimum",
    "tie": "Judged a tie",
    "both_bad": "Both responses judged bad",
    "chat_prompt": "Multi-turn chat prompt: use the conversational shape",
    "chat_response": "Response of several messages: use the conversational shape",
    "tool_calls": "Tool calls or results: Parquet's message columns hold role and content only; use JSONL",
    "tool_calls_hosted": "Tool calls or results: hosted preference fine-tuning takes role and content only",
}

# The largest label smoothing suggested: at 0.5 the cDPO loss no longer depends on the label.
MAX_LABEL_SMOOTHING = 0.49
# Shares are ratios of small integers; a threshold typed as 0.6666666667 should still keep 2 of 3.
_SHARE_TOLERANCE = 1e-9
# Expectation-maximisation rounds at most for the one-coin noise model (measure_disagreement).
_EM_ROUNDS = 10_000
# A share written as a fraction keeps to denominators people type (2/3, 3/4, 4/5, 7/10).
_SHARE_DENOMINATORS = 12


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class ConsensusRules:
    """The export rules. Raises ValueError naming the field when a value is out of range.

    `min_judgments`: counted votes a pair needs (the project's overlap k), an int >= 1.
    `min_share`: the share of counted votes the winning label needs (majority only), in [0, 1].
    `min_posterior`: the posterior probability the winning label needs (dawid-skene), in [0, 1].
    `method`: "majority" or "dawid-skene".
    """

    min_judgments: int = 3
    min_share: float = 2 / 3
    drop_ties: bool = True
    drop_both_bad: bool = True
    adjudication_overrides: bool = True
    drop_gold: bool = False
    method: str = "majority"
    min_posterior: float = 0.8

    def __post_init__(self) -> None:
        if not isinstance(self.min_judgments, int) or isinstance(self.min_judgments, bool):
            raise ValueError(f"min_judgments must be an integer, got {self.min_judgments!r}")
        if self.min_judgments < 1:
            raise ValueError(f"min_judgments must be at least 1, got {self.min_judgments}")
        for name in ("min_share", "min_posterior"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number from 0 to 1, got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("drop_ties", "drop_both_bad", "adjudication_overrides", "drop_gold"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")


@dataclass(frozen=True, slots=True)
class Decision:
    """What the rules made of one pair.

    `label`: the consensus label ("a", "b", "tie", "both_bad"), or None when none was reached
    (too few votes, split, low posterior). `chosen`: "a" or "b" when the label prefers a side.
    `votes`: counted votes per label, every label of LABELS present (zeros included).
    `share`: the share of counted votes for `label` (for the largest label when there is none);
    0.0 without votes. `adjudicated`: a lead's label was used. `posterior`: the Dawid–Skene
    probability of `label` (None under majority, for an adjudicated pair or without a label).
    `kept`: the rules keep the pair, and `reason` is None; otherwise `reason` is a code of REASONS.
    `judge_probability`: set when an AI judge's label filled the pair (`judge_filled`): the judge's
    order-averaged probability of `label`; None for people's decisions.
    A kept tie or both-bad pair may still give no row in an export shape (exporting.drop_reason).
    """

    label: str | None
    chosen: str | None
    votes: dict[str, int] = field(hash=False)
    share: float
    adjudicated: bool
    kept: bool
    reason: str | None
    posterior: float | None = None
    judge_probability: float | None = None

    @property
    def source(self) -> str:
        """Who labelled the pair: "people", or "judge" when an AI judge filled a pair people left
        unsettled (`judge_filled`)."""
        return "people" if self.judge_probability is None else "judge"

    @property
    def rejected(self) -> str | None:
        """The side not chosen, or None when no side is."""
        return None if self.chosen is None else "b" if self.chosen == "a" else "a"

    @property
    def total(self) -> int:
        """The number of counted votes."""
        return sum(self.votes.values())

    @property
    def unanimous(self) -> bool:
        """Every counted vote names the same label (False without votes)."""
        total = self.total
        return total > 0 and max(self.votes.values()) == total


def _count(votes: Sequence[str]) -> dict[str, int]:
    counts = {label: votes.count(label) for label in LABELS}
    if sum(counts.values()) != len(votes):
        unknown = next(vote for vote in votes if vote not in LABELS)
        raise ValueError(f"votes must be among {', '.join(LABELS)}, got {unknown!r}")
    return counts


def _top(scores: Mapping[str, float]) -> tuple[str | None, float]:
    """The label with the largest score and that score; None for the label when it is shared."""
    best = max(scores.values())
    winners = [label for label, score in scores.items() if score == best]
    return (winners[0] if len(winners) == 1 else None), best


def decide(
    votes: Sequence[str],
    *,
    rules: ConsensusRules,
    adjudication: str | None = None,
    is_gold: bool = False,
    posterior: Mapping[str, float] | None = None,
) -> Decision:
    """The decision for one pair under `rules` (see the module docstring for the order of rules).

    `votes`: the counted choices, each one of LABELS. `adjudication`: the lead's final label or None.
    `posterior`: label -> probability for this pair (labels missing count as 0), required when
    `rules.method` is "dawid-skene" and the pair has enough votes. Raises ValueError on a label
    outside LABELS or a missing posterior.
    """
    counts = _count(votes)
    total = len(votes)
    if adjudication is not None and adjudication not in LABELS:
        raise ValueError(f"adjudication must be one of {', '.join(LABELS)}, got {adjudication!r}")
    adjudicated = adjudication is not None and rules.adjudication_overrides
    label: str | None = None
    reason: str | None = None
    probability: float | None = None
    if is_gold and rules.drop_gold:
        reason = "gold"
    elif adjudicated:
        label = adjudication
    elif total < rules.min_judgments:
        reason = "too_few_votes"
    elif rules.method == "majority":
        label, top = _top(counts)
        if label is None or top < rules.min_share * total - _SHARE_TOLERANCE:
            label, reason = None, "split"
    else:
        if posterior is None:
            raise ValueError("posterior is required when method is 'dawid-skene'")
        unknown = set(posterior) - set(LABELS)
        if unknown:
            raise ValueError(f"posterior labels must be among {', '.join(LABELS)}, got {sorted(unknown)}")
        label, probability = _top({name: float(posterior.get(name, 0.0)) for name in LABELS})
        if label is None or probability < rules.min_posterior:
            label, probability, reason = None, None, "low_posterior"
    if label == "tie" and rules.drop_ties:
        reason = "tie"
    elif label == "both_bad" and rules.drop_both_bad:
        reason = "both_bad"
    votes_for = counts[label] if label is not None else max(counts.values())
    share = votes_for / total if total else 0.0
    return Decision(
        label=label,
        chosen=label if label in SIDES else None,
        votes=counts,
        share=share,
        adjudicated=adjudicated,
        kept=reason is None,
        reason=reason,
        posterior=probability,
    )


# The reasons a pair has no human consensus yet: the ones an AI judge may fill (`judge_filled`).
UNSETTLED = ("too_few_votes", "split", "low_posterior")


def judge_filled(
    decision: Decision, *, label: str, probability: float, min_probability: float, rules: ConsensusRules
) -> Decision:
    """An AI judge's label for a pair people left unsettled (its reason one of UNSETTLED), when the
    judge's probability of it is at least `min_probability`; `decision` itself otherwise (people's
    labels always come first: a kept pair, a lead's adjudication, a gold pair are never filled).
    `label` is "a", "b" or "tie" (a tie is then dropped as the rules drop ties). The votes stay those
    people gave; `share` is the judge's probability."""
    if decision.kept or decision.reason not in UNSETTLED or probability < min_probability:
        return decision
    if label not in ("a", "b", "tie"):
        raise ValueError(f"a judge's label must be a, b or tie, got {label!r}")
    reason = "tie" if label == "tie" and rules.drop_ties else None
    return Decision(
        label=label, chosen=label if label in SIDES else None, votes=decision.votes, share=probability,
        adjudicated=False, kept=reason is None, reason=reason, judge_probability=probability,
    )  # fmt: skip


def decide_all(
    votes: Sequence[Sequence[str]],
    *,
    rules: ConsensusRules,
    adjudications: Sequence[str | None] | None = None,
    gold: Sequence[bool] | None = None,
    posteriors: Sequence[Mapping[str, float] | None] | None = None,
) -> list[Decision]:
    """`decide` for many pairs: `votes[i]`, `adjudications[i]`, `gold[i]` and `posteriors[i]` are
    pair i's (each sequence as long as `votes`; None means no adjudication / not gold / no posterior
    for every pair). Decisions come back in the same order.

    Under majority the decision depends only on the vote counts, the adjudication and the gold flag,
    so equal inputs share one Decision (treat decisions as read-only): a project has few distinct
    combinations, which makes 100,000 pairs take a few tens of milliseconds.
    """
    n = len(votes)
    for name, column in (("adjudications", adjudications), ("gold", gold), ("posteriors", posteriors)):
        if column is not None and len(column) != n:
            raise ValueError(f"{name} has {len(column)} items for {n} pairs")
    adjudications = adjudications if adjudications is not None else [None] * n
    gold = gold if gold is not None else [False] * n
    if rules.method == "dawid-skene":
        posteriors = posteriors if posteriors is not None else [None] * n
        return [
            decide(v, rules=rules, adjudication=a, is_gold=g, posterior=p)
            for v, a, g, p in zip(votes, adjudications, gold, posteriors, strict=True)
        ]
    seen: dict[tuple, Decision] = {}
    decisions = []
    for v, a, g in zip(votes, adjudications, gold, strict=True):
        key = (v.count("a"), v.count("b"), v.count("tie"), v.count("both_bad"), len(v), a, bool(g))
        decision = seen.get(key)
        if decision is None:
            decision = seen[key] = decide(v, rules=rules, adjudication=a, is_gold=bool(g))
        decisions.append(decision)
    return decisions


@dataclass(frozen=True, slots=True)
class Disagreement:
    """How noisy the kept pairs that prefer a side are.

    `pairs`: kept pairs with a chosen side. `voted`: those of them with at least one counted vote (a
    pair a lead settled without votes has none). `non_unanimous`: the share of the voted pairs whose
    counted votes were not all the same label; None when no kept pair has votes (a pair settled by
    adjudication alone shows no disagreement, nor agreement). `vote_error`: the estimated chance that
    one annotator picks the worse side of an A/B pair. `label_noise`: the estimated chance that a kept
    pair's chosen side is wrong (adjudicated pairs count as right). 0 and 0.0 (None for
    `non_unanimous`) when `pairs` is 0.
    """

    pairs: int
    voted: int
    non_unanimous: float | None
    vote_error: float
    label_noise: float


def _flip_chance(p: float, n: int, m: int) -> float:
    """The chance that the side with n votes is the worse one, the other side having m votes."""
    if p == 0.0:
        return 0.0 if n > m else 1.0 if n < m else 0.5
    flip = p**n * (1 - p) ** m
    return flip / (flip + (1 - p) ** n * p**m)


class DisagreementCounter:
    """Takes decisions one at a time (while an export streams) and gives `measure_disagreement`'s
    result; it keeps a few histogram cells, whatever the number of pairs."""

    def __init__(self) -> None:
        self._fit: dict[tuple[int, int], int] = {}
        self._kept: dict[tuple[int, int], int] = {}
        self._pairs = 0
        self._voted = 0
        self._non_unanimous = 0

    def add(self, decision: Decision, *, times: int = 1) -> None:
        """Count one pair's decision (kept or dropped), or `times` pairs with this same decision."""
        is_kept = decision.kept and decision.chosen is not None
        if is_kept:
            self._pairs += times
            if decision.total:
                self._voted += times
                self._non_unanimous += times * (not decision.unanimous)
        if decision.adjudicated:
            return
        a, b = decision.votes["a"], decision.votes["b"]
        key = (a, b) if a >= b else (b, a)
        self._fit[key] = self._fit.get(key, 0) + times
        if is_kept:
            key = (decision.votes[decision.chosen], decision.votes[decision.rejected])
            self._kept[key] = self._kept.get(key, 0) + times

    def result(self) -> Disagreement:
        """The disagreement of the decisions added so far (see `measure_disagreement`)."""
        pairs, voted, fit = self._pairs, self._voted, self._fit
        if pairs == 0:
            return Disagreement(pairs=0, voted=0, non_unanimous=None, vote_error=0.0, label_noise=0.0)
        votes = sum((n + m) * count for (n, m), count in fit.items())
        # At p = 1/2 votes carry no information; the cap keeps q defined and the estimate below it.
        cap = 0.5 - 1e-9
        p = min(sum(m * count for (_, m), count in fit.items()) / votes, cap) if votes else 0.0
        # The histogram has a few dozen cells at most, so iterating to convergence costs nothing.
        for _ in range(_EM_ROUNDS if p > 0 else 0):
            expected = 0.0
            for (n, m), count in fit.items():
                q = _flip_chance(p, n, m)
                expected += ((1 - q) * m + q * n) * count
            p, previous = min(expected / votes, cap), p
            if abs(p - previous) < 1e-12:
                break
        noise = sum(_flip_chance(p, n, m) * count for (n, m), count in self._kept.items()) / pairs
        return Disagreement(
            pairs=pairs,
            voted=voted,
            non_unanimous=self._non_unanimous / voted if voted else None,
            vote_error=p,
            label_noise=noise,
        )


def measure_disagreement(decisions: Iterable[Decision]) -> Disagreement:
    """The measured disagreement of the kept A/B pairs among `decisions` (pass every pair's decision,
    dropped ones too: they show how often annotators disagree). `DisagreementCounter` does the same
    one decision at a time.

    The noise estimate is a one-coin Dawid–Skene model: each annotator independently picks the
    worse side of an A/B pair with probability p, both sides being a priori equally likely. For a
    pair with n votes for one side and m for the other (tie and both-bad votes carry no direction
    and are not counted), the chance that the n side is the worse one is
        q(n, m) = p^n (1-p)^m / (p^n (1-p)^m + (1-p)^n p^m).
    p is fitted by expectation–maximisation on every non-adjudicated pair, starting from the mean
    minority share: p <- sum((1 - q) m + q n) / sum(n + m) until it moves less than 1e-12. Fitting
    on dropped pairs too avoids the bias of a kept set that lacks the even splits. `label_noise` is
    the mean of q(votes for chosen, votes for rejected) over the kept A/B pairs, 0 for adjudicated
    ones. The plain mean minority share would understate p (when the majority is wrong, its
    minority is right) and overstate the label noise (k votes outvote one noisy annotator).
    """
    counter = DisagreementCounter()
    for decision in decisions:
        counter.add(decision)
    return counter.result()


def suggest_label_smoothing(decisions: Iterable[Decision] = (), *, noise: float | None = None) -> float:
    """A cDPO `label_smoothing` for the kept pairs: the estimated chance that a kept label is wrong.

    `noise`: the caller's estimate (e.g. Dawid–Skene: the mean over kept pairs of 1 minus the
    posterior of the exported label); when None, `measure_disagreement(decisions).label_noise`.
    Clipped to [0, MAX_LABEL_SMOOTHING] and rounded to 3 decimals (a form value, not a statistic).
    Raises ValueError when `noise` is not a number from 0 to 1.
    """
    if noise is None:
        noise = measure_disagreement(decisions).label_noise
    elif not _is_number(noise) or not 0 <= noise <= 1:
        raise ValueError(f"noise must be a number from 0 to 1, got {noise!r}")
    return round(min(max(float(noise), 0.0), MAX_LABEL_SMOOTHING), 3)


def parse_share(text: str) -> float:
    """A share as people write it: a fraction ("2/3"), a decimal ("0.667", ".5", "1") or a percentage
    ("67%"), from 0 to 1. "2/3" gives exactly 2/3, so that pairs won 2 to 1 meet it; "0.667" means what
    it says (above 2/3). Raises ValueError saying what is wrong, in words for the form."""
    written = text.strip() if isinstance(text, str) else ""
    try:
        if "/" in written:
            top, _, bottom = written.partition("/")
            value = Fraction(top.strip()) / Fraction(bottom.strip())
        elif written.endswith("%"):
            value = Fraction(written[:-1].strip()) / 100
        else:
            value = Fraction(written)
    except (ValueError, ZeroDivisionError):
        raise ValueError(
            f"{written or text!r} is not a share: write a fraction such as 2/3 or a decimal such as 0.667"
        ) from None
    if not 0 <= value <= 1:
        raise ValueError(f"{written} is outside 0 to 1: write a share such as 2/3 or 0.667")
    return float(value)


def share_text(share: float) -> str:
    """A share for people to read: "2/3" when it is (within the rules' tolerance) a fraction with a small
    denominator and no finite decimal, otherwise the shortest decimal that gives it back ("0.667", "0.75",
    "1")."""
    near = Fraction(share).limit_denominator(_SHARE_DENOMINATORS)
    denominator = near.denominator
    for factor in (2, 5):
        while denominator % factor == 0:
            denominator //= factor
    if denominator > 1 and abs(near - Fraction(share)) <= _SHARE_TOLERANCE:
        return f"{near.numerator}/{near.denominator}"
    text = repr(float(share))
    return text.removesuffix(".0")
