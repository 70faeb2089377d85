"""The Review dashboard's numbers for one project, from its judgments as numpy arrays (no Django).

`JudgmentTable` holds one entry per judgment; `project_report` turns it into plain JSON-ready data:
headline agreement (with and without the raters a lead excluded from consensus), the same per
criterion, the annotator table, pairwise Cohen's kappa, agreement per day, the disagreement queue,
Dawid-Skene posterior vs majority, the audit of imported labels and the model leaderboard. The
statistics themselves are in `labeling/agreement.py`.

Conventions, the same everywhere below:
- Judgments are in stored A/B order, not as shown; `a_on_left` says where A was shown.
- Gold pairs (shown to every annotator whatever the overlap) are left out of every agreement number
  (headline, criteria, per-day, kappa matrix, agreement with others, split and Dawid-Skene queues);
  they give gold accuracy, and count in position/length bias, Dawid-Skene fitting, audit and leaderboard.
- "Without excluded" drops the excluded raters' judgments; they still get their own annotator row,
  measured against the others (whose majority and Dawid-Skene posterior do not include them).
- A majority is a unique plurality of the votes; a tie for the most votes is no majority.
- The ordinal scale (when strength is on) is A-clearly < A-slightly < tie < B-slightly < B-clearly;
  "both bad" is not on it, and neither is an A/B choice without a strength: both are missing there
  (counted in `strength_missing`) rather than guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np

from labeling import agreement

CHOICES = ("a", "b", "tie", "both_bad")
CRITERION_LABELS = ("a", "b", "tie")
SCALE = ("a_clearly", "a_slightly", "tie", "b_slightly", "b_clearly")
BIAS_P = 0.01  # a rater's left (or longer) rate is flagged below this p-value

FIELDS = (
    "item", "rater", "choice", "strength", "a_on_left", "len_a", "len_b", "gold", "seconds", "day",
    "criteria", "model_a", "model_b", "original_label",
)  # fmt: skip
_DTYPES: dict[str, Any] = {
    "item": np.int64, "rater": np.int64, "choice": str, "strength": str, "a_on_left": bool,
    "len_a": np.int64, "len_b": np.int64, "gold": str, "seconds": np.float64, "day": "datetime64[D]",
    "model_a": str, "model_b": str, "original_label": str,
}  # fmt: skip
_DEFAULTS: dict[str, Any] = {
    "strength": "", "a_on_left": True, "len_a": 0, "len_b": 0, "gold": "", "seconds": np.nan,
    "day": None, "model_a": "", "model_b": "", "original_label": "",
}  # fmt: skip


@dataclass(frozen=True, eq=False)
class JudgmentTable:
    """A project's judgments as parallel arrays, shape (J,) each.

    item, rater: int64 pair and user ids. choice: "a" | "b" | "tie" | "both_bad". strength: "" |
    "slightly" | "clearly". a_on_left: bool. len_a, len_b: characters of each response. gold: the pair's
    gold answer "a" | "b" | "tie", or "". seconds: float, the judgment's wall time (from the pair being
    handed out to the verdict, by the server's clock: Judgment.seconds_spent), nan when unknown.
    day: datetime64[D], NaT when unknown. criteria: {name: str array "a" | "b" | "tie" | ""
    (unanswered)}. model_a, model_b: str, "" unknown. original_label: "a" | "b" (the side an imported
    dataset called chosen) or "".
    Arrays are converted to these dtypes; raises ValueError for unequal lengths or an unknown choice."""

    item: np.ndarray
    rater: np.ndarray
    choice: np.ndarray
    strength: np.ndarray
    a_on_left: np.ndarray
    len_a: np.ndarray
    len_b: np.ndarray
    gold: np.ndarray
    seconds: np.ndarray
    day: np.ndarray
    criteria: dict[str, np.ndarray]
    model_a: np.ndarray
    model_b: np.ndarray
    original_label: np.ndarray

    def __post_init__(self) -> None:
        for name, dtype in _DTYPES.items():
            object.__setattr__(self, name, _column(getattr(self, name), dtype))
        criteria = {str(name): _column(answers, str) for name, answers in self.criteria.items()}
        object.__setattr__(self, "criteria", criteria)
        lengths = {len(getattr(self, name)) for name in _DTYPES} | {len(c) for c in criteria.values()}
        if len(lengths) > 1:
            raise ValueError("the columns of a JudgmentTable must have the same length")
        if not np.isin(self.choice, CHOICES).all():
            raise ValueError(f"a choice is not one of {CHOICES}")

    def __len__(self) -> int:
        return len(self.item)

    @classmethod
    def from_rows(
        cls, rows: Iterable[Mapping[str, Any] | Sequence[Any]], *, criteria: Sequence[str] | None = None
    ) -> JudgmentTable:
        """A table from rows: dicts keyed by field name, or tuples in `FIELDS` order (a prefix of at
        least item, rater, choice), such as a `values_list` query returns. Missing fields and None take
        defaults: strength "", a_on_left True, lengths 0, gold "", seconds nan, day NaT, no criteria,
        models "", original_label "". Days may be `date`s, `datetime`s (their date is taken), ISO
        strings or datetime64. A row's criteria is a dict {name: "a" | "b" | "tie"}; names missing from
        a row are unanswered there. `criteria`: the criterion names to keep (the project's, even if no
        row answers one); by default every name that a row answers. About 0.4 s for 100,000 rows.
        Raises ValueError for an unknown field or a row without item, rater and choice."""
        size = len(FIELDS)
        records = [row if type(row) is tuple and len(row) == size else _full_row(row) for row in rows]
        columns = dict(zip(FIELDS, zip(*records, strict=True), strict=False)) if records else {}
        if any(None in columns.get(name, ()) for name in ("item", "rater", "choice")):
            raise ValueError("every row needs item, rater and choice")
        answers = [answer or {} for answer in columns.pop("criteria", ())]
        if criteria is None:
            criteria = sorted({name for answer in answers for name in answer})
        table = {name: _with_defaults(columns.get(name, ()), _DEFAULTS.get(name)) for name in _DTYPES}
        table["day"] = _days(table["day"])
        return cls(**table, criteria={name: [answer.get(name) for answer in answers] for name in criteria})


_EPOCH = date(1970, 1, 1).toordinal()


def _full_row(row: Mapping[str, Any] | Sequence[Any]) -> tuple:
    """A row as a tuple of every field in `FIELDS` order, defaults filled in."""
    defaults = [_DEFAULTS.get(name) for name in FIELDS]
    if isinstance(row, Mapping):
        if unknown := set(row) - set(FIELDS):
            raise ValueError(f"unknown fields {sorted(unknown)}")
        return tuple(row.get(name, default) for name, default in zip(FIELDS, defaults, strict=True))
    return (*row, *defaults[len(row) :])


def _with_defaults(values: Sequence[Any], default: Any) -> list[Any]:
    """`values` with None replaced by `default` (None when there is none: then the value is required)."""
    if default is None or None not in values:
        return list(values)
    return [default if v is None else v for v in values]


def _column(values: Any, dtype: Any) -> np.ndarray:
    """One column as a 1-D array of `dtype`; None becomes "" in text columns."""
    if dtype is str and not isinstance(values, np.ndarray):
        values = ["" if v is None else v for v in values]
    return np.asarray(values, dtype=dtype).reshape(-1)


def _days(values: list[Any]) -> np.ndarray:
    """Days as datetime64[D]; `date`s (and `datetime`s) by their ordinal, far faster than numpy's own
    conversion of Python dates. None is NaT."""
    if not {type(v) for v in values} <= {date, datetime, type(None)}:
        return np.asarray(values, dtype="datetime64[D]")
    days = np.fromiter((0 if v is None else v.toordinal() - _EPOCH for v in values), np.int64, len(values))
    out = days.astype("datetime64[D]")
    out[[v is None for v in values]] = np.datetime64("NaT")
    return out


@dataclass(frozen=True, eq=False)
class _Coded:
    """The table's columns as codes: items 0..N-1 (ids in `items`), raters 0..R-1, choices 0..3."""

    items: np.ndarray
    item: np.ndarray
    raters: np.ndarray
    rater: np.ndarray
    choice: np.ndarray
    gold_item: np.ndarray  # (N,) the pair is gold
    gold: np.ndarray  # (J,) the judged pair is gold

    @classmethod
    def of(cls, table: JudgmentTable) -> _Coded:
        items, item = np.unique(table.item, return_inverse=True)
        raters, rater = np.unique(table.rater, return_inverse=True)
        gold_item = np.zeros(len(items), dtype=bool)
        gold_item[item] = table.gold != ""
        return cls(items, item, raters, rater, _codes(table.choice, CHOICES), gold_item, gold_item[item])

    def counts(self, labels: np.ndarray, mask: np.ndarray, size: int) -> np.ndarray:
        """Value counts (N, size) of the judgments in `mask` whose label code is >= 0."""
        mask = mask & (labels >= 0)
        n = len(self.items)
        return np.bincount(self.item[mask] * size + labels[mask], minlength=n * size).reshape(n, size)


def _codes(values: np.ndarray, vocabulary: Sequence[str]) -> np.ndarray:
    """Index of each value in `vocabulary`, -1 when absent."""
    out = np.full(len(values), -1, dtype=np.int64)
    for i, word in enumerate(vocabulary):
        out[values == word] = i
    return out


def _scale(table: JudgmentTable) -> np.ndarray:
    """Ordinal position 0..4 of each judgment on SCALE, -1 where missing (both bad, no strength)."""
    side = np.where(table.choice == "a", -1, np.where(table.choice == "b", 1, 0))
    step = np.where(table.strength == "clearly", 2, np.where(table.strength == "slightly", 1, 0))
    pos = 2 + side * step
    missing = (table.choice == "both_bad") | ((side != 0) & (step == 0))
    return np.where(missing, -1, pos)


def _num(x: Any) -> float | None:
    """A JSON number: a float, or None for None and nan."""
    return None if x is None or not np.isfinite(x) else float(x)


def _majority(counts: np.ndarray) -> np.ndarray:
    """Per row of counts (N, V): the index of the unique largest count, -1 on a tie or no votes."""
    top = counts.max(1, initial=0)
    unique = ((counts == top[:, None]).sum(1) == 1) & (top > 0)
    return np.where(unique, counts.argmax(1), -1)


def _votes(row: np.ndarray, labels: Sequence[str]) -> dict[str, int]:
    return {label: int(n) for label, n in zip(labels, row, strict=True)}


def _with_interval(value: float | None, interval: tuple[float, float] | None) -> dict:
    """{"value", "low", "high"}, None where undefined (the interval only with a value)."""
    low, high = (interval or (None, None)) if value is not None else (None, None)
    return {"value": value, "low": low, "high": high}


def _alpha_with_interval(
    counts: np.ndarray, measure: agreement.Level, *, n_boot: int, seed: int, level: float
) -> dict:
    """{"value", "low", "high"}: alpha and its percentile bootstrap interval (None where undefined).
    counts: value counts with the columns in the scale's order (SCALE for the ordinal level)."""
    value = agreement.alpha_from_counts(counts, level=measure)
    interval = None
    if value is not None and n_boot > 0:
        interval = agreement.bootstrap_alpha(counts, measure=measure, n=n_boot, seed=seed, level=level)
    return _with_interval(value, interval)


def _agreement_block(counts: np.ndarray, *, n_boot: int, seed: int, level: float) -> dict[str, Any]:
    """Nominal alpha, Fleiss' kappa and percent agreement of value counts, each {"value", "low", "high"}
    with its percentile bootstrap interval over items (the same resamples for all three)."""
    boot = {"n": n_boot, "seed": seed, "level": level}
    kappa = agreement.fleiss_kappa_from_counts(counts)
    share = agreement.percent_agreement_from_counts(counts)
    kappa_interval = share_interval = None
    if n_boot > 0:
        kappa_interval = agreement.bootstrap_fleiss_kappa(counts, **boot) if kappa is not None else None
        share_interval = agreement.bootstrap_percent_agreement(counts, **boot) if share is not None else None
    return {
        "items_compared": int((counts.sum(1) >= 2).sum()),
        "alpha": _alpha_with_interval(counts, "nominal", n_boot=n_boot, seed=seed, level=level),
        "fleiss_kappa": _with_interval(kappa, kappa_interval),
        "percent_agreement": _with_interval(share, share_interval),
    }


def _headline(
    table: JudgmentTable, coded: _Coded, mask: np.ndarray, *, overlap: int, use_strength: bool, boot: dict
) -> dict[str, Any]:
    """Counts and agreement of the judgments in `mask` (see `project_report`)."""
    plain = mask & ~coded.gold
    counts = coded.counts(coded.choice, plain, len(CHOICES))
    judged = counts.sum(1)
    pairs, complete = int((judged > 0).sum()), int((judged >= overlap).sum())
    out = {
        "pairs": pairs,
        "complete_pairs": complete,
        "progress": complete / pairs if pairs else None,
        "gold_pairs": len(np.unique(coded.item[mask & coded.gold])),
        "judgments": int(mask.sum()),
        "gold_judgments": int((mask & coded.gold).sum()),
        "annotators": len(np.unique(coded.rater[mask])),
        **_agreement_block(counts, **boot),
        "alpha_ordinal": None,
        "strength_missing": None,
    }
    if use_strength:
        scale = _scale(table)
        out["alpha_ordinal"] = _alpha_with_interval(coded.counts(scale, plain, len(SCALE)), "ordinal", **boot)
        out["strength_missing"] = int((plain & np.isin(table.choice, ("a", "b")) & (scale < 0)).sum())
    return out


def _criterion(answers: np.ndarray, coded: _Coded, mask: np.ndarray, boot: dict) -> dict[str, Any]:
    """Agreement on one criterion among the non-gold judgments in `mask` that answered it."""
    labels = _codes(answers, CRITERION_LABELS)
    plain = mask & ~coded.gold & (labels >= 0)
    counts = coded.counts(labels, plain, len(CRITERION_LABELS))
    return {"judgments": int(plain.sum()), **_agreement_block(counts, **boot)}


def _dawid_skene(coded: _Coded, keep: np.ndarray) -> agreement.DawidSkeneResult | None:
    """Dawid-Skene over the judgments in `keep` (gold pairs included); its item ids are item codes."""
    if not keep.any():
        return None
    items, item = np.unique(coded.item[keep], return_inverse=True)
    raters, rater = np.unique(coded.rater[keep], return_inverse=True)
    ratings = agreement.Ratings(item, rater, coded.choice[keep], items, tuple(raters.tolist()), CHOICES)
    return agreement.dawid_skene(ratings)


def _posterior_by_item(ds: agreement.DawidSkeneResult | None, n_items: int) -> np.ndarray:
    """(N, 4) posterior over CHOICES per item code; nan rows for items the model did not see."""
    out = np.full((n_items, len(CHOICES)), np.nan)
    if ds is not None:
        full = np.zeros((len(ds.items), len(CHOICES)))
        full[:, [CHOICES.index(label) for label in ds.labels]] = ds.posterior
        out[ds.items.astype(np.int64)] = full
    return out


def annotator_stats(
    table: JudgmentTable, *, excluded: frozenset[int] | set[int] = frozenset()
) -> list[dict[str, Any]]:
    """One row per rater in the table (sorted by id), as JSON-ready dicts:

    - rater (id), excluded (bool), judgments (count), median_seconds: the median of their judgments'
      wall time, `seconds` (pauses included; None when none is known);
    - agreement: the share of their non-gold judgments equal to the majority of the other raters on
      that pair (leave-one-out; excluded raters never count among the others), over `agreement_n`
      judgments: those where the others have a unique plurality (no other vote, or a tie for the most
      votes, leaves the judgment unscored);
    - gold_accuracy over `gold_n` judgments of gold pairs (choice equal to the gold answer);
    - left_rate: over their A/B decisions (`left_n`; tie and both-bad pick no side), the share that
      chose the response shown on the left; `left_p` the two-sided exact binomial p-value against 1/2;
      `position_bias` when left_p < 0.01;
    - longer_rate: over A/B decisions between responses of different lengths (`longer_n`), the share
      that chose the longer one; `longer_p`, `length_bias` likewise;
    - tie_rate, both_bad_rate: shares of all their judgments;
    - ds_accuracy: the mean Dawid-Skene posterior probability of the labels they gave (the expected
      share of their labels that are right), from a model fitted without the excluded raters (gold
      pairs included); None when it saw none of their pairs.
    Rates and p-values are None where their count is 0."""
    coded = _Coded.of(table)
    keep = ~np.isin(table.rater, list(excluded))
    return _annotator_rows(table, coded, keep, _dawid_skene(coded, keep))


def _annotator_rows(
    table: JudgmentTable, coded: _Coded, keep: np.ndarray, ds: agreement.DawidSkeneResult | None
) -> list[dict[str, Any]]:
    """`annotator_stats` with the table coded and the excluded raters' judgments out of `keep`."""
    n_raters = len(coded.raters)

    def per_rater(mask: np.ndarray) -> np.ndarray:
        return np.bincount(coded.rater[mask], minlength=n_raters)

    # Leave-one-out: the included votes on the pair, less this judgment's own when it is one of them.
    plain = ~coded.gold
    others = coded.counts(coded.choice, keep & plain, len(CHOICES))[coded.item]
    others[np.arange(len(table)), coded.choice] -= keep & plain
    verdict = _majority(others)
    scored = plain & (verdict >= 0)

    on_a = table.choice == "a"
    sided = on_a | (table.choice == "b")
    differ = sided & (table.len_a != table.len_b)
    gold = table.gold != ""
    posterior = _posterior_by_item(ds, len(coded.items))[coded.item, coded.choice]
    seen = np.isfinite(posterior)
    n = {
        "judgments": per_rater(np.ones(len(table), dtype=bool)),
        "agreement_n": per_rater(scored),
        "agree": per_rater(scored & (verdict == coded.choice)),
        "gold_n": per_rater(gold),
        "gold_ok": per_rater(gold & (table.choice == table.gold)),
        "left_n": per_rater(sided),
        "left": per_rater(sided & (on_a == table.a_on_left)),
        "longer_n": per_rater(differ),
        "longer": per_rater(differ & (on_a == (table.len_a > table.len_b))),
        "tie": per_rater(table.choice == "tie"),
        "both_bad": per_rater(table.choice == "both_bad"),
        "ds_n": per_rater(seen),
    }
    ds_sum = np.bincount(coded.rater[seen], weights=posterior[seen], minlength=n_raters)
    left_p = agreement.binomial_p(n["left"], n["left_n"])
    longer_p = agreement.binomial_p(n["longer"], n["longer_n"])
    medians = _group_medians(coded.rater, table.seconds, n_raters)
    left_out = np.zeros(n_raters, dtype=bool)
    left_out[coded.rater[~keep]] = True

    def share(part: float, whole: int) -> float | None:
        return float(part) / int(whole) if whole else None

    return [
        {
            "rater": int(rater_id),
            "excluded": bool(left_out[r]),
            "judgments": int(n["judgments"][r]),
            "median_seconds": _num(medians[r]),
            "agreement": share(n["agree"][r], n["agreement_n"][r]),
            "agreement_n": int(n["agreement_n"][r]),
            "gold_accuracy": share(n["gold_ok"][r], n["gold_n"][r]),
            "gold_n": int(n["gold_n"][r]),
            "left_rate": share(n["left"][r], n["left_n"][r]),
            "left_n": int(n["left_n"][r]),
            "left_p": _num(left_p[r]),
            "position_bias": bool(left_p[r] < BIAS_P),
            "longer_rate": share(n["longer"][r], n["longer_n"][r]),
            "longer_n": int(n["longer_n"][r]),
            "longer_p": _num(longer_p[r]),
            "length_bias": bool(longer_p[r] < BIAS_P),
            "tie_rate": share(n["tie"][r], n["judgments"][r]),
            "both_bad_rate": share(n["both_bad"][r], n["judgments"][r]),
            "ds_accuracy": share(ds_sum[r], n["ds_n"][r]),
        }
        for r, rater_id in enumerate(coded.raters)
    ]


def _group_medians(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of the finite `values` of each group 0..n_groups-1, shape (n_groups,); nan for none."""
    ok = np.isfinite(values)
    order = np.lexsort((values[ok], group[ok]))
    group, values = group[ok][order], values[ok][order]
    size = np.bincount(group, minlength=n_groups)
    start = np.cumsum(size) - size
    has = size > 0
    out = np.full(n_groups, np.nan)
    out[has] = (values[start[has] + (size[has] - 1) // 2] + values[start[has] + size[has] // 2]) / 2
    return out


def _kappa_matrix(coded: _Coded, *, min_shared: int) -> dict[str, Any]:
    """Cohen's kappa of every two raters (excluded ones too) over the non-gold pairs both judged.

    All the judgments of a pair, taken two at a time, fill the raters' confusion matrices at once;
    kappa where two raters share at least `min_shared` pairs and it is defined, else None with the
    reason in `undefined`: "too_few_shared", or "no_variation" (both chose one and the same label on
    every shared pair: chance agreement is 1, so kappa is 0/0). None on the diagonal, in both."""
    n_raters, v = len(coded.raters), len(CHOICES)
    plain = ~coded.gold
    order = np.argsort(coded.item[plain], kind="stable")
    item, rater, label = (a[plain][order] for a in (coded.item, coded.rater, coded.choice))
    position = np.arange(len(item))
    later = np.searchsorted(item, item, side="right") - 1 - position  # judgments of the pair after this
    first = np.repeat(position, later)
    second = first + 1 + np.arange(len(first)) - np.repeat(np.cumsum(later) - later, later)
    ra, rb, la, lb = rater[first], rater[second], label[first], label[second]
    cells = np.concatenate(
        [((ra * n_raters + rb) * v + la) * v + lb, ((rb * n_raters + ra) * v + lb) * v + la]
    )
    cm = np.bincount(cells, minlength=n_raters * n_raters * v * v).reshape(n_raters, n_raters, v, v)
    shared = cm.sum((2, 3))
    kappa = agreement.kappa_from_confusion(cm)
    off_diagonal = ~np.eye(n_raters, dtype=bool)
    enough = shared >= max(min_shared, 1)
    reason = np.where(~enough, "too_few_shared", np.where(np.isfinite(kappa), "", "no_variation"))

    def cell(i: int, j: int) -> tuple[float | None, str | None]:
        if not off_diagonal[i, j]:
            return None, None
        return (_num(kappa[i, j]), None) if reason[i, j] == "" else (None, str(reason[i, j]))

    cells_ = [[cell(i, j) for j in range(n_raters)] for i in range(n_raters)]
    return {
        "raters": [int(r) for r in coded.raters],
        "matrix": [[value for value, _ in row] for row in cells_],
        "undefined": [[why for _, why in row] for row in cells_],
        "shared": shared.astype(int).tolist(),
    }


def _over_time(table: JudgmentTable, coded: _Coded, counts: np.ndarray, plain: np.ndarray) -> list[dict]:
    """Agreement of the non-gold pairs with 2+ judgments grouped by the day of their last judgment."""
    never = np.iinfo(np.int64).min  # NaT's integer value, so a known day always wins the max
    last = np.full(len(coded.items), never)
    np.maximum.at(last, coded.item[plain], table.day.astype(np.int64)[plain])
    usable = (counts.sum(1) >= 2) & (last != never)
    days, day = np.unique(last[usable], return_inverse=True)
    c = counts[usable]
    items = np.bincount(day, minlength=len(days))
    # Sums per day of each item's coincidences and of each item's share of agreeing pairs.
    v = c.shape[1]
    per_item = agreement.item_coincidences(c).reshape(len(c), v * v)
    o = np.stack([np.bincount(day, weights=cell, minlength=len(days)) for cell in per_item.T], axis=-1)
    alphas = agreement.alpha_from_coincidences(o.reshape(len(days), v, v))
    m = c.sum(1)
    shares = np.bincount(day, weights=(c * (c - 1)).sum(1) / (m * (m - 1)), minlength=len(days))
    return [
        {"day": str(np.datetime64(int(d), "D")), "items": int(n), "percent_agreement": float(share / n),
         "alpha": _num(a)}
        for d, n, share, a in zip(days, items, shares, alphas, strict=True)
    ]  # fmt: skip


def _split_items(coded: _Coded, counts: np.ndarray, *, limit: int) -> dict[str, Any]:
    """Non-gold pairs with 2+ votes that are not unanimous, most split first: the smallest share of the
    largest side, then more votes, then pair id."""
    judged = counts.sum(1)
    top = counts.max(1, initial=0)
    split = np.flatnonzero(~coded.gold_item & (judged >= 2) & (top < judged))
    split = split[np.lexsort((coded.items[split], -judged[split], top[split] / judged[split]))]
    rows = [
        {"item": int(coded.items[i]), "votes": _votes(counts[i], CHOICES), "n": int(judged[i]),
         "top_share": float(top[i] / judged[i])}
        for i in split[:limit]
    ]  # fmt: skip
    return {"total": len(split), "items": rows}


def _ds_section(
    ds: agreement.DawidSkeneResult | None, coded: _Coded, counts: np.ndarray, *, limit: int
) -> dict:
    """The Dawid-Skene summary and the non-gold pairs where its most probable label is not the majority."""
    if ds is None:
        return {"labels": [], "prior": {}, "label_noise": None, "iterations": 0, "converged": False,
                "confusion": [], "disagreements": {"total": 0, "items": []}}  # fmt: skip
    posterior = _posterior_by_item(ds, len(coded.items))
    majority = _majority(counts)
    best = np.where(np.isfinite(posterior[:, 0]), np.nan_to_num(posterior).argmax(1), -1)
    differ = np.flatnonzero(~coded.gold_item & (majority >= 0) & (best >= 0) & (best != majority))
    rows = [
        {"item": int(coded.items[i]), "majority": CHOICES[majority[i]], "posterior_label": CHOICES[best[i]],
         "posterior": float(posterior[i, best[i]]), "votes": _votes(counts[i], CHOICES)}
        for i in differ[:limit]
    ]  # fmt: skip
    return {
        "labels": list(ds.labels),
        "prior": {label: float(p) for label, p in zip(ds.labels, ds.prior, strict=True)},
        "label_noise": ds.label_noise,
        "iterations": ds.iterations,
        "converged": ds.converged,
        "confusion": [
            {"rater": int(coded.raters[r]), "matrix": ds.confusion[i].tolist()}
            for i, r in enumerate(ds.raters)
        ],
        "disagreements": {"total": len(differ), "items": rows},
    }


def _audit(table: JudgmentTable, coded: _Coded, counts: np.ndarray, *, limit: int) -> dict[str, Any] | None:
    """How the majority of the included votes compares with an imported dataset's chosen side."""
    original = np.full(len(coded.items), "", dtype=table.original_label.dtype)
    original[coded.item] = table.original_label
    judged = counts.sum(1)
    audited = np.isin(original, ("a", "b")) & (judged > 0)
    if not audited.any():
        return None
    majority = _majority(counts)
    chosen = np.where(original == "a", 0, 1)
    verdict = np.select(
        [majority < 0, majority == chosen, majority == 1 - chosen, majority == 2],
        ["none", "chosen", "rejected", "tie"],
        "both_bad",
    )
    decided = audited & (majority >= 0)
    agree = int((decided & (verdict == "chosen")).sum())
    against = np.flatnonzero(decided & (verdict != "chosen"))
    rejected_share = counts[against, 1 - chosen[against]] / judged[against]
    against = against[np.lexsort((coded.items[against], -judged[against], -rejected_share))]
    return {
        "pairs": int(audited.sum()),
        "with_majority": int(decided.sum()),
        "agree": agree,
        "agree_rate": agree / int(decided.sum()) if decided.any() else None,
        "majority": {
            k: int((decided & (verdict == k)).sum()) for k in ("chosen", "rejected", "tie", "both_bad")
        },
        "no_majority": int((audited & (majority < 0)).sum()),
        "disagreements": {
            "total": len(against),
            "items": [
                {
                    "item": int(coded.items[i]),
                    "original_label": str(original[i]),
                    "majority": CHOICES[majority[i]],
                    "votes": _votes(counts[i], CHOICES),
                }
                for i in against[:limit]
            ],  # fmt: skip
        },
    }


def _leaderboard(
    table: JudgmentTable, coded: _Coded, keep: np.ndarray, *, n_boot: int, seed: int, level: float
) -> dict | None:
    """Bradley-Terry leaderboard with each included judgment of two named, different models a battle."""
    # Model names belong to the pair: code them once per pair (sorting strings is the slow part).
    some = np.zeros(len(coded.items), dtype=np.int64)
    some[coded.item] = np.arange(len(table))
    names, codes = np.unique(np.concatenate([table.model_a[some], table.model_b[some]]), return_inverse=True)
    x, y = codes[: len(some)][coded.item], codes[len(some) :][coded.item]
    battle = keep & (names[x] != "") & (names[y] != "") & (x != y)
    if not battle.any():
        return None
    models, xy = np.unique(np.concatenate([x[battle], y[battle]]), return_inverse=True)
    if len(models) < 2:
        return None
    choice = coded.choice[battle]
    outcome = np.where(choice == 0, 0, np.where(choice == 1, 1, 2))  # tie and both bad: a tie, as Arena
    return agreement.leaderboard_coded(
        names[models].tolist(),
        xy[: battle.sum()],
        xy[battle.sum() :],
        outcome,
        n_boot=n_boot,
        seed=seed,
        level=level,
    )


def project_report(
    table: JudgmentTable,
    *,
    excluded: frozenset[int] | set[int] = frozenset(),
    overlap: int = 3,
    use_strength: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    min_shared: int = 10,
    list_limit: int = 100,
) -> dict[str, Any]:
    """Everything the Review page and `agreement_report` show for one project, as JSON-ready data.

    `excluded`: rater ids left out of consensus; `overlap`: judgments that make a pair complete;
    `use_strength`: add ordinal alpha on the strength scale; `n_boot` resamples for every bootstrap
    interval (alpha, Fleiss' kappa, percent agreement: vectorized over patterns of votes, see
    `agreement.bootstrap_alpha`; leaderboard: over battle cells), `seed`, `level` their coverage;
    `min_shared` pairs two raters must share for a kappa; `list_limit` caps every list of pairs (each
    gives its `total`). Keys:

    - settings: the arguments (excluded as a sorted list);
    - headline: {"without_excluded": H, "with_excluded": H}, H = {pairs (non-gold pairs judged),
      complete_pairs (with >= overlap judgments), progress (complete / pairs), gold_pairs, judgments
      (all, gold included), gold_judgments, annotators (with a judgment), items_compared (non-gold pairs
      with 2+ judgments), alpha, fleiss_kappa and percent_agreement (each {value, low, high}: the
      statistic and its percentile bootstrap interval over pairs, nominal over a/b/tie/both_bad),
      alpha_ordinal {value, low, high} (on SCALE, in its order) and strength_missing (None unless
      use_strength)}; agreement over non-gold pairs only;
    - criteria: {name: {"without_excluded": C, "with_excluded": C}}, C = {judgments (non-gold, answered),
      items_compared, alpha, fleiss_kappa, percent_agreement (each {value, low, high})} over a/b/tie;
    - annotators: `annotator_stats` rows;
    - cohen_kappa: {raters: [ids], matrix: R x R kappas (None where undefined), undefined: R x R why a
      kappa is None: "too_few_shared" (under min_shared shared pairs) or "no_variation" (both chose one
      and the same label on every shared pair), None where defined and on the diagonal, shared: R x R
      counts of shared non-gold pairs};
    - over_time: [{day "YYYY-MM-DD", items, percent_agreement, alpha}] by the day of each non-gold
      pair's last included judgment, pairs with 2+ included judgments;
    - disagreements: {total, items: [{item, votes {a, b, tie, both_bad}, n, top_share}]} (split pairs);
    - dawid_skene: {labels, prior {label: p}, label_noise (1 - mean max posterior), iterations,
      converged, confusion [{rater, matrix (true x given over labels)}], disagreements {total, items:
      [{item, majority, posterior_label, posterior, votes}]}} (fitted without excluded raters);
    - audit: None when no pair has an original_label, else over the pairs that have one and an included
      vote (gold too): {pairs, with_majority, agree (majority = the dataset's chosen side), agree_rate,
      majority {chosen, rejected, tie, both_bad}, no_majority, disagreements {total, items: [{item,
      original_label, majority, votes}]} (most votes for the rejected side first)};
    - leaderboard: None (fewer than two models), or `agreement.leaderboard`'s dict, every included
      judgment of a pair with two different model names a battle (tie and both bad count as a tie).
    Except for counts, every statistic is None where undefined; `n_boot=0` leaves every low/high None.
    About 0.3-0.5 s for 100,000 judgments with n_boot=1000 on these 2-core machines (bench/agreement.py).
    Raises ValueError for a level outside (0, 1)."""
    coded = _Coded.of(table)
    keep = ~np.isin(table.rater, list(excluded))
    everyone = np.ones(len(table), dtype=bool)
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, not {level}")
    boot = {"n_boot": n_boot, "seed": seed, "level": level}

    def both_ways(compute) -> dict[str, Any]:
        without = compute(keep)
        return {"without_excluded": without, "with_excluded": compute(everyone) if (~keep).any() else without}

    plain = keep & ~coded.gold
    counts = coded.counts(coded.choice, plain, len(CHOICES))
    all_counts = coded.counts(coded.choice, keep, len(CHOICES))
    ds = _dawid_skene(coded, keep)
    return {
        "settings": {
            "excluded": sorted(int(r) for r in excluded),
            "overlap": overlap,
            "use_strength": use_strength,
            "n_boot": n_boot,
            "seed": seed,
            "level": level,
            "min_shared": min_shared,
            "list_limit": list_limit,
        },
        "headline": both_ways(
            lambda mask: _headline(table, coded, mask, overlap=overlap, use_strength=use_strength, boot=boot)
        ),
        "criteria": {
            name: both_ways(lambda mask, answers=answers: _criterion(answers, coded, mask, boot))
            for name, answers in table.criteria.items()
        },
        "annotators": _annotator_rows(table, coded, keep, ds),
        "cohen_kappa": _kappa_matrix(coded, min_shared=min_shared),
        "over_time": _over_time(table, coded, counts, plain),
        "disagreements": _split_items(coded, counts, limit=list_limit),
        "dawid_skene": _ds_section(ds, coded, counts, limit=list_limit),
        "audit": _audit(table, coded, all_counts, limit=list_limit),
        "leaderboard": _leaderboard(table, coded, keep, **boot),
    }
