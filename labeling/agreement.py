"""Agreement between raters, annotator reliability and model strengths, from plain data (no Django).

Ratings are `(item, rater, label)` triples (hashable ids, labels from a finite set, a `None` label is
missing), any number of raters per item. Every function also takes a `Ratings`, the same triples coded
as parallel integer arrays: code once (`Ratings.from_triples`, or `Ratings.from_arrays` for numpy
columns, which is what large inputs should use) and pass it to several functions. A rater who rates one
item twice is an error (`ValueError`), as in a reliability matrix.

Numbers that are undefined (no item with two ratings, one category in use so chance agreement is 1)
come back as `None`, as scikit-learn's `cohen_kappa_score` returns `nan` for them.

Statistics that read an order (ordinal and interval alpha, weighted kappa) take the categories in
their order as `values=` and raise ValueError without it: labels are never sorted for them, since an
alphabetical order is seldom the scale's ("a_clearly" < "a_slightly" < "b_clearly" < "b_slightly" <
"tie" is not A-clearly < ... < B-clearly). Functions on value counts read the columns' order.

Sources: Cohen (1960) and Cohen (1968) for weighted kappa; Fleiss (1971); Krippendorff (2011),
"Computing Krippendorff's Alpha-Reliability"; Efron (1979) for the percentile bootstrap over items;
Dawid & Skene (1979); Bradley & Terry (1952), and
Chiang et al. (2024), "Chatbot Arena", for the leaderboard's scale and bootstrap. The dashboard's
aggregate over judgments is in `labeling/review_stats.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import sparse, special, stats

Level = Literal["nominal", "ordinal", "interval"]
LEVELS = ("nominal", "ordinal", "interval")
# crowd-kit's floor for probabilities in Dawid-Skene, kept so that the two agree to 1e-6.
_EPS = 1e-10


@dataclass(frozen=True, eq=False)
class Ratings:
    """Ratings coded as parallel arrays, one entry per rating.

    `item`, `rater`, `label`: shape (J,) int64 codes into `items` (N ids), `raters` (R ids) and `labels`
    (V values, sorted when they sort). Build it with `from_triples` or `from_arrays`, which validate;
    the constructor trusts its arguments.
    """

    item: np.ndarray
    rater: np.ndarray
    label: np.ndarray
    items: np.ndarray
    raters: tuple
    labels: tuple

    @classmethod
    def from_triples(cls, triples: Iterable[tuple[Hashable, Hashable, Hashable]]) -> Ratings:
        """Code `(item, rater, label)` triples; a `None` label is missing and dropped.

        Raises ValueError when a rater rates an item twice."""
        rows = [t for t in triples if t[2] is not None]
        item, items = _factorize([t[0] for t in rows])
        rater, raters = _factorize([t[1] for t in rows])
        label, labels = _factorize([t[2] for t in rows])
        ids = np.empty(len(items), dtype=object)
        ids[:] = items
        return cls._checked(item, rater, label, ids, raters, labels)

    @classmethod
    def from_arrays(cls, item: np.ndarray, rater: np.ndarray, label: np.ndarray) -> Ratings:
        """Code three parallel arrays of shape (J,) (sortable values: ints or strings).

        Raises ValueError when their lengths differ or a rater rates an item twice."""
        columns = [np.asarray(a) for a in (item, rater, label)]
        if len({len(a) for a in columns}) != 1:
            raise ValueError("item, rater and label must have the same length")
        (items, item), (raters, rater), (labels, label) = (np.unique(a, return_inverse=True) for a in columns)
        return cls._checked(item, rater, label, items, tuple(raters.tolist()), tuple(labels.tolist()))

    @classmethod
    def _checked(cls, item, rater, label, items, raters, labels) -> Ratings:
        item, rater, label = (np.asarray(a, dtype=np.int64).reshape(-1) for a in (item, rater, label))
        key = np.sort(item * max(len(raters), 1) + rater)
        if len(key) > 1 and (key[1:] == key[:-1]).any():
            raise ValueError("a rater rated the same item more than once")
        return cls(item, rater, label, items, raters, labels)

    def __len__(self) -> int:
        return len(self.item)

    def counts(self) -> np.ndarray:
        """Value counts: shape (N, V), how many raters gave item i the value v."""
        n, v = len(self.items), len(self.labels)
        return np.bincount(self.item * v + self.label, minlength=n * v).reshape(n, v)


def _factorize(values: Sequence) -> tuple[np.ndarray, tuple]:
    """Codes for `values` and the distinct values in code order: sorted, or first seen if unsortable."""
    try:
        order = sorted(set(values))
    except TypeError:
        order = list(dict.fromkeys(values))
    index = {v: i for i, v in enumerate(order)}
    return np.fromiter((index[v] for v in values), np.int64, len(values)), tuple(order)


def as_ratings(ratings: Ratings | Iterable[tuple[Hashable, Hashable, Hashable]]) -> Ratings:
    """`ratings` coded (unchanged when it already is)."""
    return ratings if isinstance(ratings, Ratings) else Ratings.from_triples(ratings)


def _none_if_nan(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# Agreement from value counts (N items x V values); the public functions below code and count first.


def percent_agreement_from_counts(counts: np.ndarray) -> float | None:
    """Mean over items with 2+ ratings of the share of agreeing rater pairs (Fleiss 1971, P-bar)."""
    c = np.asarray(counts, dtype=np.float64)
    m = c.sum(1)
    keep = m >= 2
    if not keep.any():
        return None
    c, m = c[keep], m[keep]
    return float(((c * (c - 1)).sum(1) / (m * (m - 1))).mean())


def fleiss_kappa_from_counts(counts: np.ndarray) -> float | None:
    """Fleiss' kappa (Fleiss 1971) over items with 2+ ratings; see `fleiss_kappa`."""
    c = np.asarray(counts, dtype=np.float64)
    c = c[c.sum(1) >= 2]
    p_bar = percent_agreement_from_counts(c)
    if p_bar is None:
        return None
    p_e = ((c.sum(0) / c.sum()) ** 2).sum()
    return None if p_e >= 1 else float((p_bar - p_e) / (1 - p_e))


def coincidences(counts: np.ndarray) -> np.ndarray:
    """Krippendorff's coincidence matrix o, shape (V, V), from value counts (N, V).

    o_ck = sum over items u with m_u >= 2 of (n_uc n_uk - [c = k] n_uc) / (m_u - 1) (Krippendorff 2011,
    eq. for o_ck); items rated once are not pairable and add nothing."""
    c = np.asarray(counts, dtype=np.float64)
    m = c.sum(1)
    c, m = c[m >= 2], m[m >= 2]
    w = c / (m - 1)[:, None]
    return c.T @ w - np.diag(w.sum(0))


def item_coincidences(counts: np.ndarray) -> np.ndarray:
    """Each item's share of the coincidence matrix, shape (N, V, V): the terms of `coincidences`' sum,
    zero for items rated fewer than twice."""
    c = np.asarray(counts, dtype=np.float64)
    m = c.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (c[:, :, None] * c[:, None, :] - c[:, :, None] * np.eye(c.shape[1])) / (m - 1)[:, None, None]
    out[m < 2] = 0
    return out


def _distances(level: Level, n_v: np.ndarray, values: Sequence) -> np.ndarray:
    """Squared distances delta^2 between values, shape (..., V, V) for n_v of shape (..., V).

    As in Krippendorff (2011) and the `krippendorff` package: nominal 0/1; ordinal the squared count of
    pairable values from c to k, minus half of both ends; interval the squared difference of values."""
    size = n_v.shape[-1]
    if level == "nominal":
        return 1.0 - np.eye(size)
    if level == "interval":
        v = np.asarray(values, dtype=np.float64)
        return (v[:, None] - v[None, :]) ** 2
    cum = np.concatenate([np.zeros(n_v.shape[:-1] + (1,)), np.cumsum(n_v, axis=-1)], axis=-1)
    i = np.arange(size)
    lo, hi = np.minimum.outer(i, i), np.maximum.outer(i, i)
    between = cum[..., hi + 1] - cum[..., lo]
    return (between - (n_v[..., :, None] + n_v[..., None, :]) / 2) ** 2


def alpha_from_coincidences(o: np.ndarray, *, level: Level = "nominal", values: Sequence = ()) -> np.ndarray:
    """Krippendorff's alpha = 1 - D_o / D_e for coincidence matrices o of shape (..., V, V).

    Expected coincidences e_ck = (n_c n_k - [c = k] n_c) / (n - 1) (Krippendorff 2011). `values`: the
    numbers behind the V columns (interval only). Shape (...); nan where D_e = 0 or nothing is pairable."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    if level == "interval" and len(values) != o.shape[-1]:
        raise ValueError("the interval level needs the number behind every value")
    n_v = o.sum(-2)
    n = n_v.sum(-1)
    size = n_v.shape[-1]
    e = (n_v[..., :, None] * n_v[..., None, :] - n_v[..., :, None] * np.eye(size)) / (n - 1)[..., None, None]
    d = _distances(level, n_v, values)
    d_o, d_e = (o * d).sum((-2, -1)), (e * d).sum((-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((d_e > 0) & (n > 1), 1 - d_o / d_e, np.nan)


def alpha_from_counts(counts: np.ndarray, *, level: Level = "nominal", values: Sequence = ()) -> float | None:
    """Krippendorff's alpha from value counts (N, V); `None` when undefined. See `krippendorff_alpha`."""
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] < 2:
        return None
    return _none_if_nan(alpha_from_coincidences(coincidences(counts), level=level, values=values).item())


def _pattern_resamples(counts: np.ndarray, *, n: int, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The items rated twice or more as distinct rows of counts ("patterns", shape (P, V)) and `n`
    bootstrap resamples of those items as pattern counts, shape (n, P); `None` when no item has two
    ratings.

    Resampling the N items with replacement is the same as drawing how often each pattern is taken from
    a multinomial with the patterns' frequencies: few patterns when V and the raters per item are small,
    so every statistic below costs O(n P V^2) instead of O(n N). The same `seed` gives the same
    resamples to every `bootstrap_*` function, so their intervals describe the same resampled data."""
    c = np.asarray(counts, dtype=np.int64)
    if c.ndim != 2:
        return None
    c = c[c.sum(1) >= 2]
    if len(c) == 0:
        return None
    patterns, freq = _distinct_rows(c)
    return patterns, np.random.default_rng(seed).multinomial(len(c), freq / len(c), size=n)


def bootstrap_alpha(
    counts: np.ndarray,
    *,
    measure: Level = "nominal",
    values: Sequence = (),
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval (Efron 1979) of Krippendorff's alpha, resampling items, vectorized.

    counts: value counts (N, V), columns in the scale's order for the ordinal level. Items rated fewer
    than twice carry no information about agreement and are left out first; the resamples are those of
    `_pattern_resamples`. Alpha is linear in the items' coincidences, so a resample's coincidence matrix
    is its pattern counts times the patterns' (Krippendorff 2011). Resamples where alpha is undefined are
    dropped; `None` when none is left. `measure` is the level of measurement (`values`: the numbers
    behind the columns, for the interval level); `level` the interval's coverage. Raises ValueError for
    a level outside (0, 1)."""
    _check_level(level)
    resamples = _pattern_resamples(counts, n=n, seed=seed)
    if resamples is None or resamples[0].shape[1] < 2:
        return None
    patterns, weights = resamples
    o = np.einsum("bp,pvw->bvw", weights, item_coincidences(patterns))
    return _percentile(alpha_from_coincidences(o, level=measure, values=values), level)


def _pair_shares(patterns: np.ndarray) -> np.ndarray:
    """Each row's share of agreeing rater pairs, sum_v n_v (n_v - 1) / (m (m - 1)), shape (P,)."""
    c = patterns.astype(np.float64)
    m = c.sum(1)
    return (c * (c - 1)).sum(1) / (m * (m - 1))


def bootstrap_percent_agreement(
    counts: np.ndarray, *, n: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of percent agreement (Fleiss 1971's P-bar, see `percent_agreement`),
    resampling items as `bootstrap_alpha` does (the same resamples for the same `seed`).

    counts: value counts (N, V). A resample's P-bar is its pattern counts times the patterns' shares of
    agreeing pairs, over the N items. `None` when no item has two ratings. Raises ValueError for a
    level outside (0, 1)."""
    _check_level(level)
    resamples = _pattern_resamples(counts, n=n, seed=seed)
    if resamples is None:
        return None
    patterns, weights = resamples
    return _percentile(weights @ _pair_shares(patterns) / weights.sum(1), level)


def bootstrap_fleiss_kappa(
    counts: np.ndarray, *, n: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of Fleiss' kappa (see `fleiss_kappa`), resampling items as
    `bootstrap_alpha` does (the same resamples for the same `seed`).

    counts: value counts (N, V). Per resample, P-bar as in `bootstrap_percent_agreement` and
    P_e = sum_j p_j^2 from its pattern counts times the patterns' counts (Fleiss 1971). Resamples with
    one category in use (P_e = 1: kappa undefined) are dropped; `None` when none is left. Raises
    ValueError for a level outside (0, 1)."""
    _check_level(level)
    resamples = _pattern_resamples(counts, n=n, seed=seed)
    if resamples is None:
        return None
    patterns, weights = resamples
    p_bar = weights @ _pair_shares(patterns) / weights.sum(1)
    totals = (weights @ patterns).astype(np.float64)
    p_e = ((totals / totals.sum(1, keepdims=True)) ** 2).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappas = np.where(p_e < 1, (p_bar - p_e) / (1 - p_e), np.nan)
    return _percentile(kappas, level)


def _distinct_rows(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a non-negative int matrix (P, V) and how often each occurs (P,).

    Each row is read as one number in base max + 1 (a 1-D unique is far faster than `axis=0`)."""
    base = int(c.max()) + 1
    if base ** c.shape[1] >= 2**62:
        return np.unique(c, axis=0, return_counts=True)
    key = c @ (base ** np.arange(c.shape[1], dtype=np.int64))
    _, first, freq = np.unique(key, return_index=True, return_counts=True)
    return c[first], freq


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, not {level}")


def _percentile(draws: np.ndarray, level: float) -> tuple[float, float] | None:
    draws = np.asarray(draws, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if len(draws) == 0:
        return None
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


# The public functions on ratings.


def percent_agreement(ratings: Ratings | Iterable[tuple]) -> float | None:
    """Pairwise percent agreement: over items with 2+ ratings, the mean share of rater pairs on an item
    that gave the same label (each item weighs the same; Fleiss 1971's P-bar). In [0, 1]; `None` when no
    item has two ratings."""
    return percent_agreement_from_counts(as_ratings(ratings).counts())


def fleiss_kappa(ratings: Ratings | Iterable[tuple]) -> float | None:
    """Fleiss' kappa (Fleiss 1971): (P-bar - P_e) / (1 - P_e).

    Where every item has the same number m >= 2 of ratings this is statsmodels' `fleiss_kappa` on the
    items x categories table. Otherwise items rated once are left out, P-bar is the mean over items of
    each item's share of agreeing pairs (n_ij (n_ij - 1) / (m_i (m_i - 1)), so unequal m_i are allowed)
    and P_e = sum_j p_j^2 with p_j the share of category j among those items' ratings. `None` when no
    item has two ratings or only one category is used (P_e = 1)."""
    return fleiss_kappa_from_counts(as_ratings(ratings).counts())


def _order(statistic: str, values: Sequence | None) -> tuple:
    """`values` as a tuple; ValueError naming `statistic` when there are none, or a category repeats."""
    if values is None:
        raise ValueError(
            f"{statistic} needs values=: the categories in their order, e.g. values=['low', 'medium', "
            "'high']. Labels are never sorted for you: their alphabetical order is seldom the scale's."
        )
    domain = tuple(values)
    if len(set(domain)) != len(domain):
        raise ValueError("values name a category twice")
    return domain


def _positions(r: Ratings, domain: tuple) -> np.ndarray:
    """Position in `domain` of each of r's labels (by label code), shape (V,); ValueError for a label
    that `domain` lacks."""
    position = {v: i for i, v in enumerate(domain)}
    missing = [label for label in r.labels if label not in position]
    if missing:
        raise ValueError(f"labels missing from values: {missing[:5]!r}")
    return np.array([position[label] for label in r.labels], dtype=np.int64)


def krippendorff_alpha(
    ratings: Ratings | Iterable[tuple], *, level: Level = "nominal", values: Sequence | None = None
) -> float | None:
    """Krippendorff's alpha (Krippendorff 2011) at a level of measurement, missing ratings allowed.

    `values`: the value domain in its order: required at the ordinal level (the order of the labels,
    e.g. ["a_clearly", "a_slightly", "tie", "b_slightly", "b_clearly"]) and the interval level (numeric
    labels: the numbers), optional at the nominal level (where order does not matter). Equal to
    `krippendorff.alpha(reliability_data, level_of_measurement=level, value_domain=values)` on the
    raters x items matrix with nan for missing ratings. O(J log J) to code triples, O(J) from a
    `Ratings`. `None` when undefined: no item with two ratings, or one value among the pairable ratings
    (D_e = 0). Raises ValueError for an unknown level, no `values` at the ordinal or interval level
    (labels are not sorted for you), a label missing from `values`, a category named twice, or
    non-numeric values at the interval level."""
    r = as_ratings(ratings)
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    counts = r.counts()
    if level == "nominal" and values is None:
        return alpha_from_counts(counts, level=level)
    domain = _order(f"{level} alpha", values)
    remap = np.zeros((len(r.labels), len(domain)), dtype=np.int64)
    remap[np.arange(len(r.labels)), _positions(r, domain)] = 1
    if level == "interval":
        try:
            domain = tuple(float(v) for v in domain)
        except (TypeError, ValueError) as error:
            raise ValueError("the interval level needs numeric values") from error
    return alpha_from_counts(counts @ remap, level=level, values=domain)


def cohen_kappa(
    ratings: Ratings | Iterable[tuple],
    rater_a: Hashable,
    rater_b: Hashable,
    *,
    weights: Literal["linear", "quadratic"] | None = None,
    values: Sequence | None = None,
) -> float | None:
    """Cohen's kappa (Cohen 1960; weighted: Cohen 1968) of two raters on the items both rated.

    `values`: the categories in their order; required with `weights` (a weight counts the steps between
    two labels' positions in `values`), optional without. Equal to scikit-learn's
    `cohen_kappa_score(y1, y2, labels=values, weights=weights)` on those items (without `values`: on the
    labels the two raters used). `None` where scikit-learn gives nan (no shared item, or chance agreement
    is 1: both raters gave one and the same label throughout) and when either rater has no ratings.
    Raises ValueError for unknown weights, weights without `values`, a label missing from `values` or a
    category named twice."""
    if weights not in (None, "linear", "quadratic"):
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', not {weights!r}")
    r = as_ratings(ratings)
    domain = order = None
    if weights is not None or values is not None:
        domain = _order(f"{weights} weighted kappa" if weights else "kappa", values)
        order = _positions(r, domain)
    if rater_a not in r.raters or rater_b not in r.raters:
        return None
    given = []
    for rater in (rater_a, rater_b):
        mine = r.rater == r.raters.index(rater)
        column = np.full(len(r.items), -1)
        column[r.item[mine]] = r.label[mine]
        given.append(column)
    both = (given[0] >= 0) & (given[1] >= 0)
    y1, y2 = given[0][both], given[1][both]
    if len(y1) == 0:
        return None
    if order is None:
        present = np.unique(np.concatenate([y1, y2]))
        y1, y2 = np.searchsorted(present, y1), np.searchsorted(present, y2)
        k = len(present)
    else:
        y1, y2, k = order[y1], order[y2], len(domain)
    cm = np.bincount(y1 * k + y2, minlength=k * k).reshape(k, k)
    return _none_if_nan(kappa_from_confusion(cm, weights=weights).item())


def kappa_from_confusion(cm: np.ndarray, *, weights: str | None = None) -> np.ndarray:
    """Cohen's kappa from confusion matrices of shape (..., k, k) (rows: rater a; rows and columns in
    the categories' order, which the weights read); nan where undefined (no rating, or chance agreement
    1: both raters gave one and the same category throughout).

    kappa = 1 - sum(w * observed) / sum(w * expected), expected = outer(row sums, column sums) / n,
    w = 1 - I, or |i - j| (linear), or (i - j)^2 (quadratic) (Cohen 1968; as scikit-learn)."""
    cm = np.asarray(cm, dtype=np.float64)
    k = cm.shape[-1]
    total = cm.sum((-2, -1))
    i = np.arange(k, dtype=np.float64)
    w = {None: 1 - np.eye(k), "linear": np.abs(i[:, None] - i), "quadratic": (i[:, None] - i) ** 2}[weights]
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = cm.sum(-1)[..., :, None] * cm.sum(-2)[..., None, :] / total[..., None, None]
        observed_d, expected_d = (w * cm).sum((-2, -1)), (w * expected).sum((-2, -1))
        return np.where((total > 0) & (expected_d > 0), 1 - observed_d / expected_d, np.nan)


def bootstrap_ci(
    ratings: Ratings | Iterable[tuple],
    statistic: Callable[[Ratings], float | None],
    *,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic`, resampling items with replacement (Efron 1979).

    Each resample draws N items (all the items that have ratings) with replacement and keeps all of
    their ratings; an item drawn twice becomes two items (resampled items get ids 0..N-1, raters and
    labels keep theirs). `statistic` takes a `Ratings`; resamples where it returns `None` or nan are
    dropped. Cost: n calls of `statistic` (for alpha on large data use `bootstrap_alpha`, vectorized).
    Raises ValueError when `statistic` is undefined on every resample, or for a level outside (0, 1)."""
    _check_level(level)
    r = as_ratings(ratings)
    order = np.argsort(r.item, kind="stable")
    rater, label = r.rater[order], r.label[order]
    size = np.bincount(r.item, minlength=len(r.items))
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    n_items = len(r.items)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n):
        pick = rng.integers(n_items, size=n_items)
        sizes = size[pick]
        ends = np.cumsum(sizes)
        rows = np.arange(ends[-1] if n_items else 0) - np.repeat(ends - sizes - start[pick], sizes)
        sample = Ratings(
            np.repeat(np.arange(n_items), sizes),
            rater[rows],
            label[rows],
            np.arange(n_items),
            r.raters,
            r.labels,
        )
        value = statistic(sample)
        draws.append(np.nan if value is None else value)
    interval = _percentile(np.array(draws), level)
    if interval is None:
        raise ValueError("the statistic is undefined on every resample")
    return interval


def binomial_p(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Two-sided exact binomial test of k successes in n trials against p = 1/2, vectorized.

    The same as `scipy.stats.binomtest(k, n, 0.5).pvalue`: for p = 1/2 the outcomes as unlikely as k are
    the two tails beyond min(k, n - k), so p = min(1, 2 P(X <= min(k, n - k))). nan where n = 0."""
    k, n = np.asarray(k), np.asarray(n)
    with np.errstate(invalid="ignore"):
        p = np.minimum(1.0, 2 * stats.binom.cdf(np.minimum(k, n - k), n, 0.5))
    return np.where(n > 0, p, np.nan)


# Dawid-Skene


@dataclass(frozen=True, eq=False)
class DawidSkeneResult:
    """A fitted Dawid-Skene model (Dawid & Skene 1979).

    labels (K,): the labels in use; items (N,), raters (R,): ids. posterior (N, K): each item's
    distribution of the true label. prior (K,): class shares. confusion (R, K, K): confusion[r, t, g] is
    the probability that rater r gives label g when the true label is t (rows sum to 1). accuracy (R,):
    the mean posterior probability of the labels each rater gave (the expected share of their labels
    that are right). iterations: EM steps run; converged: stopped by `tol`, not by `n_iter`."""

    labels: tuple
    items: np.ndarray
    raters: tuple
    posterior: np.ndarray
    prior: np.ndarray
    confusion: np.ndarray
    accuracy: np.ndarray
    iterations: int
    converged: bool

    @property
    def item_labels(self) -> list:
        """The most probable label of each item (the first label in `labels` order on a tie)."""
        return [self.labels[i] for i in self.posterior.argmax(1)]

    @property
    def label_noise(self) -> float:
        """Estimated label noise: 1 - mean over items of the largest posterior probability, i.e. the
        expected share of items whose most probable label is wrong, under the model."""
        return float(1 - self.posterior.max(1).mean())


def dawid_skene(
    ratings: Ratings | Iterable[tuple], *, n_iter: int = 100, tol: float = 1e-5
) -> DawidSkeneResult:
    """Dawid & Skene (1979) by EM, as crowd-kit's `DawidSkene(n_iter, tol)` computes it.

    Starts from majority-vote shares per item, then repeats: E-step (posterior of each item's label
    from the prior and the raters' confusion matrices, in logs), prior = mean posterior, M-step
    (confusion rows from posterior-weighted counts, floored at 1e-10 for labels the rater used), until
    the evidence lower bound per rating gains less than `tol` or after `n_iter` steps. Each step is
    two sparse products over the J ratings (about 4 ms for J = 100,000). Raises ValueError when there
    are no ratings."""
    r = as_ratings(ratings)
    if len(r) == 0:
        raise ValueError("no ratings")
    used_labels, label = np.unique(r.label, return_inverse=True)
    n, k, n_raters = len(r.items), len(used_labels), len(r.raters)
    cell = r.rater * k + label
    incidence = sparse.csr_matrix((np.ones(len(r)), (r.item, cell)), shape=(n, n_raters * k))
    incidence_t = incidence.T.tocsr()
    used = np.bincount(cell, minlength=n_raters * k) > 0
    per_item = np.bincount(r.item, minlength=n).astype(np.float64)

    def m_step(weighted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Confusion [rater, given, true] (normalized over given) from posterior-weighted counts of
        (rater, given) rows, and its logs by row (0 for rows never used, which no rating reads)."""
        counts = np.where(used[:, None], np.maximum(weighted, _EPS), 0.0).reshape(n_raters, k, k)
        errors = counts / counts.sum(1, keepdims=True)
        return errors, np.log(np.where(used[:, None], errors.reshape(-1, k), 1.0))

    # Posteriors are kept as (K, N): numpy reduces over a short last axis slowly.
    post = np.bincount(label * n + r.item, minlength=k * n).reshape(k, n) / np.maximum(per_item, 1)
    prior = post.mean(1)
    errors, log_errors = m_step(incidence_t @ post.T)
    loss, converged, step = -np.inf, False, 0
    for step in range(1, n_iter + 1):  # noqa: B007 (the count of steps is reported)
        scores = np.ascontiguousarray((incidence @ log_errors).T) + np.log(np.maximum(prior, _EPS))[:, None]
        scores -= scores.max(0)
        post = np.exp(scores)
        total = post.sum(0)
        post /= total
        prior = post.mean(1)
        weighted = incidence_t @ post.T
        errors, log_errors = m_step(weighted)
        # crowd-kit's stopping rule: the evidence lower bound per rating, E[log joint] + entropy. The
        # entropy's logs come from the scores (log post = scores - log total, and each item's posterior
        # sums to 1); crowd-kit floors posteriors at 1e-10 first, which moves this by < 1e-8.
        joint = (weighted * log_errors).sum() + (post @ per_item) @ np.log(np.maximum(prior, _EPS))
        entropy = np.log(total).sum() - np.einsum("kn,kn->", post, scores)
        new_loss = (joint + entropy) / len(r)
        if new_loss - loss < tol:
            converged = True
            break
        loss = new_loss
    post = post.T
    accuracy = np.bincount(r.rater, weights=post[r.item, label], minlength=n_raters) / np.maximum(
        np.bincount(r.rater, minlength=n_raters), 1
    )
    return DawidSkeneResult(
        labels=tuple(r.labels[i] for i in used_labels),
        items=r.items,
        raters=r.raters,
        posterior=post,
        prior=prior,
        confusion=errors.transpose(0, 2, 1),
        accuracy=accuracy,
        iterations=step,
        converged=converged,
    )


# Bradley-Terry and the leaderboard

TIES = ("half", "ignore")
ELO_SCALE, ELO_BASE = 400 / math.log(10), 1000.0


def _battle_cells(
    battles: Iterable[tuple[Hashable, Hashable, str]], ties: str
) -> tuple[tuple, np.ndarray, np.ndarray, np.ndarray]:
    """Models (sorted) and, per battle, the codes of x and y and the outcome (0: x, 1: y, 2: tie)."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, not {ties!r}")
    rows = list(battles)
    outcome_code = {"x": 0, "y": 1, "tie": 2}
    if any(o not in outcome_code for _, _, o in rows):
        raise ValueError("an outcome is not 'x', 'y' or 'tie'")
    rows = [row for row in rows if row[0] != row[1] and (ties == "half" or row[2] != "tie")]
    models = tuple(_factorize([m for x, y, _ in rows for m in (x, y)])[1])
    index = {m: i for i, m in enumerate(models)}
    x = np.fromiter((index[row[0]] for row in rows), np.int64, len(rows))
    y = np.fromiter((index[row[1]] for row in rows), np.int64, len(rows))
    outcome = np.fromiter((outcome_code[row[2]] for row in rows), np.int64, len(rows))
    return models, x, y, outcome


def _cell_wins(cells: np.ndarray, n_models: int) -> np.ndarray:
    """What one battle of each cell (x * M + y) * 3 + outcome adds to the win matrix: shape (C, M, M)."""
    x, y, outcome = cells // 3 // n_models, cells // 3 % n_models, cells % 3
    out = np.zeros((len(cells), n_models, n_models))
    rows = np.arange(len(cells))
    winner, loser = np.where(outcome == 1, y, x), np.where(outcome == 1, x, y)
    out[rows, winner, loser] += np.where(outcome == 2, 0.5, 1.0)
    out[rows, loser, winner] += np.where(outcome == 2, 0.5, 0.0)
    return out


def win_matrix(x: np.ndarray, y: np.ndarray, outcome: np.ndarray, n_models: int) -> np.ndarray:
    """wins[i, j]: how often model i beat j, a tie counting half to each; shape (M, M).

    x, y: shape (B,) model codes; outcome: 0 when x won, 1 when y won, 2 for a tie."""
    cells, count = np.unique((x * n_models + y) * 3 + outcome, return_counts=True)
    return np.einsum("c,cij->ij", count.astype(np.float64), _cell_wins(cells, n_models))


def fit_bradley_terry(wins: np.ndarray, *, penalty: float = 1e-4, max_iter: int = 100) -> np.ndarray:
    """Log-strengths theta of the Bradley & Terry (1952) model, P(i beats j) = sigmoid(theta_i - theta_j).

    wins: shape (..., M, M), fractional wins allowed; fits every leading index at once. Maximizes
    sum wins_ij log sigmoid(theta_i - theta_j) - penalty * |theta|^2 by Newton's method (steps capped at
    2 in the max norm). The small ridge keeps the estimate finite when a model never wins or never
    loses, and centers it: sum theta = 0 at the optimum. Returns shape (..., M)."""
    wins = np.asarray(wins, dtype=np.float64)
    games = wins + np.swapaxes(wins, -1, -2)
    size = wins.shape[-1]
    theta = np.zeros(wins.shape[:-1])
    for _ in range(max_iter):
        p = special.expit(theta[..., :, None] - theta[..., None, :])
        grad = (wins - games * p).sum(-1) - 2 * penalty * theta
        w = games * p * (1 - p)
        hess = -w + (w.sum(-1) + 2 * penalty)[..., None] * np.eye(size)
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        largest = np.abs(step).max(-1, keepdims=True)
        theta = theta + step * np.minimum(1.0, 2.0 / np.maximum(largest, 1e-300))
        if largest.max() < 1e-8:  # the mean direction, held by the ridge alone, is noisy below that
            break
    return theta - theta.mean(-1, keepdims=True)


def to_elo(theta: np.ndarray) -> np.ndarray:
    """Log-strengths to the Elo-like scale Chatbot Arena publishes: 1000 + 400 log10(e) theta, so a
    400-point gap means 10:1 odds and the models' mean log-strength sits at 1000."""
    return ELO_BASE + ELO_SCALE * np.asarray(theta)


def bradley_terry(
    battles: Iterable[tuple[Hashable, Hashable, str]], *, ties: str = "half", penalty: float = 1e-4
) -> dict[Hashable, float]:
    """Bradley-Terry ratings of the models in `battles`, (model_x, model_y, outcome "x" | "y" | "tie").

    Maximum likelihood (with a 1e-4 ridge, see `fit_bradley_terry`); ties="half" counts a tie as half a
    win for each side (as Chatbot Arena does), "ignore" drops ties; battles of a model with itself are
    dropped. Returns {model: rating} on the Elo-like scale of `to_elo` (mean 1000)."""
    models, x, y, outcome = _battle_cells(battles, ties)
    if not models:
        return {}
    ratings = to_elo(fit_bradley_terry(win_matrix(x, y, outcome, len(models)), penalty=penalty))
    return {m: float(v) for m, v in zip(models, ratings, strict=True)}


def leaderboard_coded(
    models: Sequence,
    x: np.ndarray,
    y: np.ndarray,
    outcome: np.ndarray,
    *,
    n_boot: int,
    seed: int,
    level: float,
) -> dict:
    """`leaderboard` from coded battles: x, y shape (B,) int indexes into `models` (x != y), outcome
    (B,) 0 when x won, 1 when y won, 2 for a tie (counted half to each)."""
    size = len(models)
    # Resampling battles with replacement is drawing how often each (x, y, outcome) cell comes up.
    cells, freq = np.unique((x * size + y) * 3 + outcome, return_counts=True)
    per_cell = _cell_wins(cells, size)
    wins = np.einsum("c,cij->ij", freq.astype(np.float64), per_cell)
    rating = to_elo(fit_bradley_terry(wins))
    lo = hi = np.full(size, np.nan)
    if n_boot > 0:
        draws = np.random.default_rng(seed).multinomial(len(x), freq / len(x), size=n_boot)
        boot = to_elo(fit_bradley_terry(np.einsum("bc,cij->bij", draws.astype(np.float64), per_cell)))
        lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0)
    ties = np.zeros((size, size))
    np.add.at(ties, (x[outcome == 2], y[outcome == 2]), 1)
    ties += ties.T
    decisive = wins - ties / 2
    games = wins + wins.T
    order = np.argsort(-rating, kind="stable")
    rows = [
        {
            "model": models[i],
            "rating": float(rating[i]),
            "low": _none_if_nan(lo[i]),
            "high": _none_if_nan(hi[i]),
            "battles": int(games[i].sum()),
            "wins": int(decisive[i].sum()),
            "losses": int(decisive[:, i].sum()),
            "ties": int(ties[i].sum()),
        }
        for i in order
    ]
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = wins / games
    return {
        "scale": "Elo-like: 1000 + 400*log10(e)*theta, theta the Bradley-Terry log-strength, mean 1000",
        "models": rows,
        "win_rate": {
            "models": [models[i] for i in order],
            "rate": [[_none_if_nan(rate[i, j]) for j in order] for i in order],
            "battles": [[int(games[i, j]) for j in order] for i in order],
        },
    }


def leaderboard(
    battles: Iterable[tuple[Hashable, Hashable, str]],
    *,
    ties: str = "half",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict | None:
    """A model leaderboard as Chatbot Arena publishes it (Chiang et al. 2024), as JSON-ready data.

    {"scale": str, "models": [{"model", "rating", "low", "high", "battles", "wins", "losses", "ties"}]
    best first, "win_rate": {"models": [...] in that order, "rate": [[row beats column: (wins + ties/2)
    / battles, or None without battles]], "battles": [[count]]}}. Ratings as `bradley_terry`; low/high
    the percentile bootstrap interval over `n_boot` resamples of the battles. `None` with fewer than two
    models."""
    _check_level(level)
    models, x, y, outcome = _battle_cells(battles, ties)
    if len(models) < 2:
        return None
    return leaderboard_coded(models, x, y, outcome, n_boot=n_boot, seed=seed, level=level)
