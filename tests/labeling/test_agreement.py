"""Agreement statistics against the reference libraries, worked examples and simulations (no database)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import warnings
from fractions import Fraction
from pathlib import Path

import choix
import krippendorff
import numpy as np
import pandas as pd
import pytest
from crowdkit.aggregation import DawidSkene
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss

from labeling import agreement
from labeling.agreement import (
    Ratings,
    bootstrap_alpha,
    bootstrap_ci,
    bootstrap_fleiss_kappa,
    bootstrap_percent_agreement,
    bradley_terry,
    cohen_kappa,
    dawid_skene,
    fleiss_kappa,
    krippendorff_alpha,
    leaderboard,
    percent_agreement,
)
from labeling.review_stats import CHOICES, SCALE, JudgmentTable, annotator_stats, project_report

ROOT = Path(__file__).resolve().parents[2]
# crowd-kit (the Dawid-Skene reference) warns about pandas deprecations it uses.
pytestmark = pytest.mark.filterwarnings("ignore:::crowdkit")
PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def quiet(fn, *args, **kwargs):
    """A reference library's result, nan for its errors on undefined input (and no warnings)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn(*args, **kwargs)
        except (ValueError, ZeroDivisionError):
            return float("nan")


def same(ours: float | None, reference: float, tol: float = 1e-9) -> bool:
    """Our None stands for the reference's nan; otherwise equal to `tol`."""
    if ours is None:
        return not np.isfinite(reference)
    return np.isfinite(reference) and abs(ours - reference) <= tol


@st.composite
def reliability(draw, *, full: bool = False):
    """A raters x items matrix of int labels with nan for missing (none missing when `full`)."""
    n_raters = draw(st.integers(1 if not full else 2, 5))
    n_items = draw(st.integers(1, 10))
    n_labels = draw(st.integers(1, 4))
    cells = st.integers(0, n_labels - 1) if full else st.one_of(st.none(), st.integers(0, n_labels - 1))
    rows = draw(
        st.lists(st.lists(cells, min_size=n_items, max_size=n_items), min_size=n_raters, max_size=n_raters)
    )
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)


def triples(matrix: np.ndarray) -> list[tuple[int, str, int]]:
    return [(u, f"r{c}", int(v)) for (c, u), v in np.ndenumerate(matrix) if not np.isnan(v)]


def domain(matrix: np.ndarray) -> list[int]:
    """The value domain 0..max of a reliability matrix, in order (at least one value)."""
    return list(range(int(np.nanmax(matrix)) + 1)) if not np.isnan(matrix).all() else [0]


# The generic functions against the reference libraries


@PROPERTY
@given(reliability())
def test_alpha_equals_the_krippendorff_package(matrix):
    values = domain(matrix)
    nominal = quiet(krippendorff.alpha, matrix, level_of_measurement="nominal")
    assert same(krippendorff_alpha(triples(matrix)), nominal)
    for level in ("nominal", "ordinal", "interval"):
        reference = quiet(krippendorff.alpha, matrix, level_of_measurement=level, value_domain=values)
        assert same(krippendorff_alpha(triples(matrix), level=level, values=values), reference), level


@PROPERTY
@given(reliability())
def test_cohen_kappa_equals_scikit_learn_on_the_shared_items(matrix):
    if len(matrix) < 2:
        matrix = np.vstack([matrix, matrix])
    both = ~np.isnan(matrix[0]) & ~np.isnan(matrix[1])
    values = domain(matrix)
    for weights in (None, "linear", "quadratic"):
        ours = cohen_kappa(triples(matrix), "r0", "r1", weights=weights, values=values)
        if not both.any():
            assert ours is None
            continue
        y1, y2 = matrix[0][both], matrix[1][both]
        assert same(ours, quiet(cohen_kappa_score, y1, y2, labels=values, weights=weights)), weights
    if both.any():  # unweighted, the labels the two used are enough
        assert same(cohen_kappa(triples(matrix), "r0", "r1"), quiet(cohen_kappa_score, y1, y2))


@PROPERTY
@given(reliability(full=True))
def test_fleiss_kappa_equals_statsmodels_when_every_item_has_the_same_raters(matrix):
    n_labels = int(np.nanmax(matrix)) + 1
    table = np.stack([np.bincount(column.astype(int), minlength=n_labels) for column in matrix.T])
    assert same(fleiss_kappa(triples(matrix)), quiet(statsmodels_fleiss, table))


@PROPERTY
@given(reliability())
def test_percent_agreement_is_the_mean_share_of_agreeing_pairs(matrix):
    shares = []
    for column in matrix.T:
        given_ = column[~np.isnan(column)]
        if len(given_) >= 2:
            pairs = list(itertools.combinations(given_, 2))
            shares.append(sum(a == b for a, b in pairs) / len(pairs))
    ours = percent_agreement(triples(matrix))
    assert ours == pytest.approx(np.mean(shares)) if shares else ours is None


def test_edge_cases_single_category_two_raters_one_item():
    one_category = [(i, r, "a") for i in range(4) for r in ("x", "y")]
    assert krippendorff_alpha(one_category) is None  # no variation: D_e = 0
    assert fleiss_kappa(one_category) is None
    assert cohen_kappa(one_category, "x", "y") is None
    assert percent_agreement(one_category) == 1.0

    one_item = [(0, "x", "a"), (0, "y", "b")]
    assert krippendorff_alpha(one_item) == pytest.approx(
        quiet(krippendorff.alpha, [[0], [1]], level_of_measurement="nominal")
    )
    assert cohen_kappa(one_item, "x", "y") == quiet(cohen_kappa_score, ["a"], ["b"])
    assert percent_agreement(one_item) == 0.0

    alone = [(0, "x", "a"), (1, "y", "b")]  # no item rated twice
    assert (
        krippendorff_alpha(alone) is None and fleiss_kappa(alone) is None and percent_agreement(alone) is None
    )
    assert cohen_kappa(alone, "x", "y") is None and cohen_kappa(alone, "x", "nobody") is None
    assert krippendorff_alpha([]) is None

    a, b = list("aabba"), list("abbaa")
    two_raters = [
        (i, rater, label) for rater, labels in (("x", a), ("y", b)) for i, label in enumerate(labels)
    ]
    assert cohen_kappa(two_raters, "x", "y") == pytest.approx(cohen_kappa_score(a, b))
    with pytest.raises(ValueError, match="more than once"):
        Ratings.from_triples([(0, "x", "a"), (0, "x", "b")])


def test_coded_arrays_give_the_same_numbers_as_triples():
    rng = np.random.default_rng(3)
    item, rater = np.repeat(np.arange(200), 3), np.tile([5, 9, 11], 200)
    label = rng.integers(0, 3, 600)
    coded = Ratings.from_arrays(item, rater, label)
    as_triples = list(zip(item.tolist(), rater.tolist(), label.tolist(), strict=True))
    for level in ("nominal", "ordinal", "interval"):
        assert krippendorff_alpha(coded, level=level, values=[0, 1, 2]) == pytest.approx(
            krippendorff_alpha(as_triples, level=level, values=[0, 1, 2])
        )
    assert cohen_kappa(coded, 5, 9) == pytest.approx(cohen_kappa(as_triples, 5, 9))
    assert cohen_kappa(coded, 5, 9, weights="linear", values=[0, 1, 2]) == pytest.approx(
        cohen_kappa(as_triples, 5, 9, weights="linear", values=[0, 1, 2])
    )


def test_krippendorffs_worked_example_by_hand():
    """Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers, 12
    units, values 1-5, missing data. The coincidence matrix below was tallied unit by unit by hand."""
    rows = {
        "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    }
    data = [(unit, coder, v) for coder, values in rows.items() for unit, v in enumerate(values)]
    third = Fraction(1, 3)
    by_hand = [
        [7, 4 * third, third, third, 0],
        [4 * third, 10, 4 * third, third, 0],
        [third, 4 * third, 8, third, 0],
        [third, third, third, 4, 0],
        [0, 0, 0, 0, 3],
    ]
    counts = Ratings.from_triples(data).counts()
    np.testing.assert_allclose(agreement.coincidences(counts), np.array(by_hand, dtype=float))
    n_v = [sum(row) for row in by_hand]
    assert n_v == [9, 13, 10, 5, 3]
    n = sum(n_v)
    disagree = sum(by_hand[c][k] for c in range(5) for k in range(5) if c != k)
    alpha = 1 - (n - 1) * disagree / (n * n - sum(x * x for x in n_v))  # nominal, the paper's formula
    assert alpha == Fraction(113, 152) and round(float(alpha), 3) == 0.743
    assert krippendorff_alpha(data) == pytest.approx(float(alpha), abs=1e-12)
    one_to_five = [1, 2, 3, 4, 5]
    assert round(krippendorff_alpha(data, level="ordinal", values=one_to_five), 3) == 0.815  # the paper's
    assert round(krippendorff_alpha(data, level="interval", values=one_to_five), 3) == 0.849  # other results
    named = [(u, c, "vlmhx"[v - 1]) for u, c, v in data if v is not None]
    assert krippendorff_alpha(named, level="ordinal", values="vlmhx") == pytest.approx(0.8153875, abs=1e-6)


# The order of ordered categories is given, never guessed

# Two raters on the strength scale (issue 23): sorted alphabetically, "tie" came last and "b_clearly"
# before "b_slightly", and quadratic kappa was 0.434 where the scale's order gives 0.721.
STRENGTH_X = ["a_clearly", "a_slightly", "a_slightly", "a_slightly", "a_clearly", "b_slightly", "b_clearly",
              "b_slightly", "a_slightly"]  # fmt: skip
STRENGTH_Y = ["a_clearly", "a_slightly", "a_slightly", "a_clearly", "tie", "tie", "b_slightly", "b_slightly",
              "a_clearly"]  # fmt: skip


def strength_ratings() -> list[tuple[int, str, str]]:
    return [(i, "x", v) for i, v in enumerate(STRENGTH_X)] + [(i, "y", v) for i, v in enumerate(STRENGTH_Y)]


def positions(labels: list[str], order) -> list[int]:
    return [list(order).index(label) for label in labels]


def test_weighted_kappa_reads_the_scale_in_the_order_given():
    data = strength_ratings()
    # What sorting the labels gave, as scikit-learn computes it on the labels alone.
    assert round(cohen_kappa_score(STRENGTH_X, STRENGTH_Y, weights="quadratic"), 3) == 0.434
    for weights in ("linear", "quadratic"):
        ours = cohen_kappa(data, "x", "y", weights=weights, values=SCALE)
        reference = cohen_kappa_score(STRENGTH_X, STRENGTH_Y, labels=list(SCALE), weights=weights)
        assert ours == pytest.approx(reference, abs=1e-12), weights
        # The same numbers on the scale's positions: only the order counts, not the labels' names.
        assert ours == pytest.approx(
            cohen_kappa_score(positions(STRENGTH_X, SCALE), positions(STRENGTH_Y, SCALE), weights=weights)
        )
    assert round(cohen_kappa(data, "x", "y", weights="quadratic", values=SCALE), 3) == 0.721
    # Given the alphabetical order on purpose, it computes what sorting did.
    alphabetical = sorted(SCALE)
    assert cohen_kappa(data, "x", "y", weights="quadratic", values=alphabetical) == pytest.approx(
        cohen_kappa_score(STRENGTH_X, STRENGTH_Y, weights="quadratic")
    )
    # Unweighted kappa reads no order: the same with or without values.
    assert cohen_kappa(data, "x", "y") == pytest.approx(cohen_kappa_score(STRENGTH_X, STRENGTH_Y))
    assert cohen_kappa(data, "x", "y", values=alphabetical) == pytest.approx(cohen_kappa(data, "x", "y"))


def test_ordinal_alpha_reads_the_scale_in_the_order_given():
    data = strength_ratings()
    for order in (SCALE, sorted(SCALE)):
        matrix = np.array([positions(STRENGTH_X, order), positions(STRENGTH_Y, order)], dtype=float)
        for level in ("nominal", "ordinal"):
            reference = krippendorff.alpha(matrix, level_of_measurement=level, value_domain=list(range(5)))
            assert krippendorff_alpha(data, level=level, values=order) == pytest.approx(reference), level
    right = krippendorff_alpha(data, level="ordinal", values=SCALE)
    assert abs(right - krippendorff_alpha(data, level="ordinal", values=sorted(SCALE))) > 0.1
    # Interval alpha on numbers: the numbers are the values, in their order.
    numbers = [(i, r, {"a_clearly": -2, "a_slightly": -1, "tie": 0, "b_slightly": 1, "b_clearly": 2}[v])
               for i, r, v in data]  # fmt: skip
    matrix = np.array([positions(STRENGTH_X, SCALE), positions(STRENGTH_Y, SCALE)], dtype=float) - 2
    assert krippendorff_alpha(numbers, level="interval", values=[-2, -1, 0, 1, 2]) == pytest.approx(
        krippendorff.alpha(matrix, level_of_measurement="interval")
    )


def test_ordered_statistics_refuse_to_guess_the_order():
    data = strength_ratings()
    for level in ("ordinal", "interval"):
        with pytest.raises(ValueError, match=rf"{level} alpha needs values=.*never sorted"):
            krippendorff_alpha(data, level=level)
    for weights in ("linear", "quadratic"):
        with pytest.raises(ValueError, match=rf"{weights} weighted kappa needs values="):
            cohen_kappa(data, "x", "y", weights=weights)
    with pytest.raises(ValueError, match="labels missing from values: \\['tie'\\]"):
        krippendorff_alpha(data, level="ordinal", values=[v for v in SCALE if v != "tie"])
    with pytest.raises(ValueError, match="labels missing from values"):
        cohen_kappa(data, "x", "y", weights="linear", values=SCALE[:3])
    with pytest.raises(ValueError, match="twice"):
        krippendorff_alpha(data, level="ordinal", values=[*SCALE, "tie"])
    with pytest.raises(ValueError, match="numeric"):
        krippendorff_alpha(data, level="interval", values=SCALE)
    # Nominal alpha and unweighted kappa read no order and need none.
    assert krippendorff_alpha(data) == pytest.approx(krippendorff_alpha(data, values=sorted(SCALE)))


# Bootstrap


def test_bootstrap_interval_is_reproducible_and_covers_the_estimate():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 150)
    data = [
        (i, r, int(truth[i] if rng.random() < 0.75 else rng.integers(0, 3)))
        for i in range(150)
        for r in range(3)
    ]
    first = bootstrap_ci(data, krippendorff_alpha, n=300, seed=1)
    assert first == bootstrap_ci(data, krippendorff_alpha, n=300, seed=1)
    assert first != bootstrap_ci(data, krippendorff_alpha, n=300, seed=2)
    assert first[0] < krippendorff_alpha(data) < first[1]
    narrow = bootstrap_ci(data, krippendorff_alpha, n=300, seed=1, level=0.5)
    assert first[0] < narrow[0] < narrow[1] < first[1]
    with pytest.raises(ValueError, match="undefined"):
        bootstrap_ci([(i, r, "a") for i in range(5) for r in range(2)], krippendorff_alpha, n=20)


def test_vectorized_alpha_bootstrap_matches_resampling_items_one_by_one():
    """Drawing counts of vote patterns from a multinomial is the same bootstrap as resampling items."""
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 4, 400)
    data = [
        (i, r, int(truth[i] if rng.random() < 0.6 else rng.integers(0, 4)))
        for i in range(400)
        for r in range(3)
    ]
    counts = Ratings.from_triples(data).counts()
    for measure in ("nominal", "ordinal"):
        alpha = lambda r, m=measure: krippendorff_alpha(r, level=m, values=[0, 1, 2, 3])  # noqa: E731
        slow = bootstrap_ci(data, alpha, n=800, seed=0)
        fast = bootstrap_alpha(counts, measure=measure, n=4000, seed=0)
        assert fast == pytest.approx(slow, abs=0.012), measure
    assert bootstrap_alpha(np.array([[3, 0], [2, 0]]), n=50) is None  # one value: alpha undefined throughout


def unequal_panels(seed: int, n_items: int = 400) -> list[tuple[int, int, int]]:
    """Items rated by 2 to 5 of 6 raters, 4 labels, each rater right 60% of the time."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, n_items)
    return [
        (i, int(r), int(truth[i] if rng.random() < 0.6 else rng.integers(0, 4)))
        for i in range(n_items)
        for r in rng.choice(6, int(rng.integers(2, 6)), replace=False)
    ]


def test_vectorized_fleiss_and_percent_bootstraps_match_resampling_items_one_by_one():
    """Fleiss' kappa and percent agreement get the same vectorized bootstrap as alpha, with unequal
    numbers of raters per item: the interval agrees with resampling items and recomputing the public
    functions (themselves checked against statsmodels and by hand above)."""
    data = unequal_panels(6)
    counts = Ratings.from_triples(data).counts()
    for fast_fn, statistic in ((bootstrap_fleiss_kappa, fleiss_kappa), (bootstrap_percent_agreement,
                                                                       percent_agreement)):  # fmt: skip
        slow = bootstrap_ci(data, statistic, n=800, seed=0)
        fast = fast_fn(counts, n=4000, seed=0)
        assert fast == pytest.approx(slow, abs=0.012), statistic.__name__
        assert fast[0] < statistic(data) < fast[1]


def test_the_bootstraps_are_reproducible_and_say_when_undefined():
    counts = Ratings.from_triples(unequal_panels(2, n_items=150)).counts()
    for fn in (bootstrap_alpha, bootstrap_fleiss_kappa, bootstrap_percent_agreement):
        first = fn(counts, n=300, seed=1)
        assert first == fn(counts, n=300, seed=1) and first != fn(counts, n=300, seed=2)
        narrow = fn(counts, n=300, seed=1, level=0.5)
        assert first[0] < narrow[0] < narrow[1] < first[1]
        with pytest.raises(ValueError, match="level"):
            fn(counts, n=10, level=1.5)
        assert fn(np.array([[1, 0], [0, 1]]), n=20) is None  # no item rated twice
    low, high = bootstrap_percent_agreement(counts, n=300)
    assert 0 <= low < high <= 1
    one_category = np.array([[3, 0], [2, 0]])
    assert bootstrap_fleiss_kappa(one_category, n=50) is None  # P_e = 1 on every resample
    assert bootstrap_percent_agreement(one_category, n=50) == (1.0, 1.0)


# Position bias, Dawid-Skene, Bradley-Terry


def test_binomial_p_equals_scipy():
    k, n = np.array([0, 1, 3, 5, 7, 12, 50, 0]), np.array([1, 4, 6, 10, 9, 30, 60, 0])
    ours = agreement.binomial_p(k, n)
    for i in range(len(k) - 1):
        assert ours[i] == pytest.approx(binomtest(int(k[i]), int(n[i]), 0.5).pvalue, rel=1e-9)
    assert np.isnan(ours[-1])


def test_position_bias_flags_a_biased_annotator_and_not_a_fair_one():
    rng = np.random.default_rng(7)
    rows = []
    for rater, left_rate in ((1, 0.72), (2, 0.5)):
        for pair in range(300):
            a_on_left = bool(rng.random() < 0.5)
            picks_left = rng.random() < left_rate
            choice = "a" if picks_left == a_on_left else "b"
            rows.append({"item": pair, "rater": rater, "choice": choice, "a_on_left": a_on_left})
    biased, fair = annotator_stats(JudgmentTable.from_rows(rows))
    assert biased["position_bias"] and biased["left_p"] < 0.01 and biased["left_rate"] > 0.6
    assert not fair["position_bias"] and abs(fair["left_rate"] - 0.5) < 0.1


def crowd_data(seed: int, *, n_items: int = 150, n_raters: int = 6, k: int = 3) -> list[tuple[int, str, str]]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n_items)
    skill = rng.uniform(0.35, 0.95, n_raters)
    rows = []
    for item in range(n_items):
        for r in rng.choice(n_raters, 3, replace=False):
            label = truth[item] if rng.random() < skill[r] else rng.integers(0, k)
            rows.append((item, f"w{r}", "abc"[label]))
    return rows


@pytest.mark.parametrize("seed", [0, 1])
def test_dawid_skene_equals_crowd_kit(seed):
    rows = crowd_data(seed)
    reference = DawidSkene(n_iter=100, tol=1e-5)
    probas = reference.fit_predict_proba(pd.DataFrame(rows, columns=["task", "worker", "label"]))
    ours = dawid_skene(rows)
    assert ours.iterations == len(reference.loss_history_)
    np.testing.assert_allclose(ours.posterior, probas.loc[list(ours.items), list(ours.labels)], atol=1e-8)
    for r, worker in enumerate(ours.raters):
        for g, given_ in enumerate(ours.labels):
            if (worker, given_) in reference.errors_.index:  # crowd-kit keeps only labels a worker used
                expected = reference.errors_.loc[(worker, given_), list(ours.labels)].to_numpy(float)
                np.testing.assert_allclose(ours.confusion[r, :, g], expected, atol=1e-8)
    np.testing.assert_allclose(ours.confusion.sum(2), 1)
    assert ours.label_noise == pytest.approx(1 - probas.max(axis=1).mean(), abs=1e-8)


def test_dawid_skene_ranks_a_random_clicker_last():
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 2, 300)
    rows = [
        (i, r, int(truth[i] if (r < 4 and rng.random() < 0.85) else rng.integers(0, 2)))
        for i in range(300)
        for r in range(5)
    ]
    result = dawid_skene(rows)
    assert result.accuracy[4] < 0.65 < result.accuracy[:4].min()
    assert (np.array(result.item_labels) == truth).mean() > 0.95


def simulate_battles(
    theta: np.ndarray, n: int, seed: int, tie_rate: float = 0.0
) -> list[tuple[str, str, str]]:
    """`n` battles between random pairs of models, x winning with probability sigmoid(theta_x - theta_y)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, len(theta), n)
    y = (x + rng.integers(1, len(theta), n)) % len(theta)
    x_wins = rng.random(n) < 1 / (1 + np.exp(theta[y] - theta[x]))
    outcome = np.where(rng.random(n) < tie_rate, "tie", np.where(x_wins, "x", "y"))
    return [(f"m{i}", f"m{j}", str(o)) for i, j, o in zip(x, y, outcome, strict=True)]


def test_bradley_terry_recovers_known_strengths():
    theta = np.array([1.2, 0.6, 0.0, -0.5, -1.3])
    battles = simulate_battles(theta, 20_000, seed=0)
    ratings = bradley_terry(battles)
    recovered = (np.array([ratings[f"m{i}"] for i in range(5)]) - 1000) / agreement.ELO_SCALE
    np.testing.assert_allclose(recovered, theta - theta.mean(), atol=0.1)  # standard errors are ~0.03

    board = leaderboard(battles, n_boot=300, seed=0)
    assert [row["model"] for row in board["models"]] == ["m0", "m1", "m2", "m3", "m4"]
    # The bootstrap's 95% intervals are as wide as the Fisher information says (Bradley-Terry's
    # asymptotic normality), and contain the estimate.
    games = np.zeros((5, 5))
    for x, y, _ in battles:
        games[int(x[1:]), int(y[1:])] += 1
    games += games.T
    p = 1 / (1 + np.exp(recovered[None, :] - recovered[:, None]))
    w = games * p * (1 - p)
    information = np.diag(w.sum(1)) - w
    covariance = np.linalg.inv(information + 1 / 5) - 1 / 5  # its inverse with the ratings' mean fixed
    expected_width = 2 * 1.96 * agreement.ELO_SCALE * np.sqrt(np.diag(covariance))
    for row in board["models"]:
        i = int(row["model"][1:])
        assert row["high"] - row["low"] == pytest.approx(expected_width[i], rel=0.25)
        assert row["low"] < row["rating"] < row["high"]


def test_bradley_terry_is_the_maximum_likelihood_choix_finds():
    """Ties count half: give choix every decisive battle twice and every tie once each way."""
    battles = simulate_battles(np.array([0.8, 0.1, -0.9, 0.0]), 400, seed=3, tie_rate=0.15)
    battles += [("m0", "m3", "x")] * 3  # and a model that never wins
    battles += [("m4", "m0", "y")] * 4
    ours = bradley_terry(battles)
    data = []
    for x, y, outcome in battles:
        i, j = int(x[1:]), int(y[1:])
        data += {"x": [(i, j)] * 2, "y": [(j, i)] * 2, "tie": [(i, j), (j, i)]}[outcome]
    theta = choix.opt_pairwise(5, data, alpha=2e-4, tol=1e-12)  # choix's penalty on doubled data
    expected = agreement.to_elo(theta - theta.mean())
    np.testing.assert_allclose([ours[f"m{i}"] for i in range(5)], expected, atol=1e-4)


def test_leaderboard_win_rates_count_ties_half():
    battles = [("p", "q", "x")] * 3 + [("q", "p", "x")] + [("p", "q", "tie")] * 2 + [("q", "r", "y")]
    board = leaderboard(battles, n_boot=50)
    order = board["win_rate"]["models"]
    rate, games = board["win_rate"]["rate"], board["win_rate"]["battles"]
    p, q, r = order.index("p"), order.index("q"), order.index("r")
    assert rate[p][q] == pytest.approx(4 / 6) and rate[q][p] == pytest.approx(2 / 6)
    assert games[p][q] == 6 and games[p][r] == 0 and rate[p][r] is None and rate[p][p] is None
    row = next(m for m in board["models"] if m["model"] == "p")
    assert (row["wins"], row["losses"], row["ties"], row["battles"]) == (3, 1, 2, 6)
    assert leaderboard([("p", "p", "x")]) is None
    assert bradley_terry(battles, ties="ignore").keys() == {"p", "q", "r"}


# The dashboard aggregate

D1, D2, D3, D5 = "2026-11-01", "2026-11-02", "2026-11-03", "2026-11-05"
PAIRS = {  # item: (len_a, len_b, gold, model_a, model_b, original_label)
    10: (100, 50, "", "m1", "m2", "a"),
    11: (50, 100, "", "m2", "m3", "b"),
    12: (100, 100, "", "m1", "m3", "a"),
    13: (80, 40, "", "m1", "m2", "a"),
    14: (10, 20, "", "", "", ""),
    20: (100, 50, "a", "m2", "m3", ""),
}
VOTES = [  # item, rater, choice, strength, seconds, day, helpful
    (10, 1, "a", "clearly", 10, D1, "a"), (10, 2, "a", "slightly", 12, D1, "a"),
    (10, 3, "a", "clearly", 8, D1, ""),
    (11, 1, "a", "slightly", 20, D1, "b"), (11, 2, "b", "clearly", 14, D1, "b"),
    (11, 3, "a", "clearly", 9, D2, "b"),
    (12, 1, "b", "", 30, D2, "tie"), (12, 2, "b", "clearly", 16, D2, "a"), (12, 3, "tie", "", 7, D2, ""),
    (13, 1, "a", "clearly", None, D3, ""), (13, 2, "b", "slightly", 18, D3, ""),
    (14, 1, "tie", "", 40, D3, ""),
    (20, 1, "a", "clearly", 50, D1, "a"), (20, 2, "b", "slightly", 11, D1, ""),
    (20, 3, "a", "slightly", 6, D1, ""),
    # Rater 4, left out of consensus in the test:
    (10, 4, "b", "", 5, D5, ""), (11, 4, "b", "", 5, D5, ""), (12, 4, "b", "", 5, D5, ""),
    (20, 4, "a", "", 5, D5, ""),
]  # fmt: skip


def hand_table() -> JudgmentTable:
    rows = []
    for item, rater, choice, strength, seconds, day, helpful in VOTES:
        len_a, len_b, gold, model_a, model_b, original = PAIRS[item]
        criteria = {"helpful": helpful} if helpful else {}
        # Tuples in FIELDS order, as labeling/review.py reads them from the database.
        rows.append((item, rater, choice, strength, True, len_a, len_b, gold, seconds, day, criteria,
                     model_a, model_b, original))  # fmt: skip
    return JudgmentTable.from_rows(rows, criteria=["helpful", "harmless"])


def test_project_report_on_a_hand_made_table():
    table = hand_table()
    report = project_report(
        table, excluded={4}, overlap=3, use_strength=True, n_boot=200, min_shared=3, list_limit=2
    )
    assert json.loads(json.dumps(report, allow_nan=False)) == report

    head = report["headline"]["without_excluded"]
    counts = {k: head[k] for k in ("pairs", "complete_pairs", "gold_pairs", "judgments", "gold_judgments",
                                   "annotators", "items_compared", "strength_missing")}  # fmt: skip
    assert counts == dict(pairs=5, complete_pairs=3, gold_pairs=1, judgments=15, gold_judgments=3,
                          annotators=3, items_compared=4, strength_missing=1)  # fmt: skip
    assert head["progress"] == pytest.approx(3 / 5)
    assert head["percent_agreement"]["value"] == pytest.approx(5 / 12)  # items 10-13: 1, 1/3, 1/3, 0
    assert head["fleiss_kappa"]["value"] == pytest.approx(-31 / 816)  # P-bar 5/12, P_e 53/121
    assert head["alpha"]["value"] == pytest.approx(8 / 68)  # o_aa 4, o_ab 2, o_bb 1, o_bt 1; n = 11
    for name in ("alpha", "fleiss_kappa", "percent_agreement"):
        assert head[name]["low"] <= head[name]["value"] <= head[name]["high"], name
    scale = {
        ("a", "clearly"): -2,
        ("a", "slightly"): -1,
        ("tie", ""): 0,
        ("b", "slightly"): 1,
        ("b", "clearly"): 2,
    }
    matrix = np.full((3, 5), np.nan)
    for item, rater, choice, strength, *_ in VOTES:
        if rater != 4 and item < 20 and (choice, strength) in scale:
            matrix[rater - 1, item - 10] = scale[choice, strength]
    assert head["alpha_ordinal"]["value"] == pytest.approx(
        krippendorff.alpha(matrix, level_of_measurement="ordinal")
    )

    everyone = report["headline"]["with_excluded"]
    assert (everyone["judgments"], everyone["annotators"], everyone["complete_pairs"]) == (19, 4, 3)
    assert everyone["percent_agreement"]["value"] == pytest.approx(1 / 3)
    assert everyone["alpha"]["value"] == pytest.approx(-8 / 330)  # n = 14, disagreements 26/3
    assert everyone["strength_missing"] == 4

    helpful = report["criteria"]["helpful"]["without_excluded"]
    assert (helpful["judgments"], helpful["items_compared"]) == (7, 3)
    assert helpful["percent_agreement"]["value"] == pytest.approx(2 / 3)
    assert helpful["alpha"]["value"] == pytest.approx(0.6)
    assert report["criteria"]["harmless"]["without_excluded"]["alpha"]["value"] is None

    rows = {row["rater"]: row for row in report["annotators"]}
    one = rows[1]
    assert (one["judgments"], one["agreement_n"], one["agreement"]) == (6, 2, 0.5)
    assert (one["gold_n"], one["gold_accuracy"]) == (1, 1.0)
    assert (one["left_n"], one["left_rate"]) == (5, 0.8)  # A was on the left every time
    assert one["left_p"] == pytest.approx(binomtest(4, 5).pvalue) and not one["position_bias"]
    assert (one["longer_n"], one["longer_rate"]) == (4, 0.75)  # pair 12's responses are equally long
    assert one["tie_rate"] == pytest.approx(1 / 6) and one["both_bad_rate"] == 0
    assert one["median_seconds"] == 30  # of 10, 20, 30, 40, 50 (one unknown)
    assert (rows[2]["agreement_n"], rows[2]["agreement"], rows[2]["gold_accuracy"]) == (3, 1 / 3, 0.0)
    assert (rows[3]["agreement_n"], rows[3]["agreement"]) == (2, 0.5)
    assert rows[4]["excluded"] and (rows[4]["agreement_n"], rows[4]["agreement"]) == (3, 1 / 3)

    # Dawid-Skene without rater 4, checked against crowd-kit.
    kept = [(item, rater, choice) for item, rater, choice, *_ in VOTES if rater != 4]
    reference = DawidSkene(n_iter=100, tol=1e-5)
    probas = reference.fit_predict_proba(pd.DataFrame(kept, columns=["task", "worker", "label"]))
    for rater in (1, 2, 3, 4):
        mine = [(item, choice) for item, r, choice, *_ in VOTES if r == rater]
        expected = np.mean([probas.loc[item].get(choice, 0.0) for item, choice in mine])
        assert rows[rater]["ds_accuracy"] == pytest.approx(expected, abs=1e-6)
    majority = {10: "a", 11: "a", 12: "b"}  # 13 is tied, 14 has one vote (its own majority)
    majority[14] = "tie"
    differ = sorted(i for i, m in majority.items() if probas.loc[i].idxmax() != m)
    assert sorted(row["item"] for row in report["dawid_skene"]["disagreements"]["items"]) == differ
    assert report["dawid_skene"]["label_noise"] == pytest.approx(1 - probas.max(axis=1).mean(), abs=1e-8)

    kappa = report["cohen_kappa"]
    assert kappa["raters"] == [1, 2, 3, 4]
    votes = {(item, rater): choice for item, rater, choice, *_ in VOTES if item != 20}
    for i, j in itertools.permutations(range(4), 2):
        shared = [item for item in PAIRS if (item, i + 1) in votes and (item, j + 1) in votes]
        assert kappa["shared"][i][j] == len(shared)
        if len(shared) < 3:
            assert kappa["matrix"][i][j] is None
        else:
            a, b = [votes[s, i + 1] for s in shared], [votes[s, j + 1] for s in shared]
            assert same(kappa["matrix"][i][j], quiet(cohen_kappa_score, a, b))
    assert kappa["matrix"][0][0] is None

    days = {d["day"]: d for d in report["over_time"]}
    assert list(days) == [D1, D2, D3]  # rater 4's day is not counted without them
    assert (days[D1]["items"], days[D1]["percent_agreement"], days[D1]["alpha"]) == (1, 1.0, None)
    assert days[D2]["items"] == 2 and days[D2]["alpha"] == pytest.approx(1 / 11)
    assert days[D3]["percent_agreement"] == 0 and days[D3]["alpha"] == pytest.approx(0)

    queue = report["disagreements"]
    assert queue["total"] == 3 and [row["item"] for row in queue["items"]] == [13, 11]
    assert queue["items"][0] == {"item": 13, "votes": {"a": 1, "b": 1, "tie": 0, "both_bad": 0}, "n": 2,
                                 "top_share": 0.5}  # fmt: skip

    audit = report["audit"]
    assert {k: audit[k] for k in ("pairs", "with_majority", "agree", "no_majority")} == dict(
        pairs=4, with_majority=3, agree=1, no_majority=1
    )
    assert audit["majority"] == {"chosen": 1, "rejected": 2, "tie": 0, "both_bad": 0}
    assert [row["item"] for row in audit["disagreements"]["items"]] == [11, 12]

    board = report["leaderboard"]
    battles = []
    for item, rater, choice, *_ in VOTES:
        _, _, _, model_a, model_b, _ = PAIRS[item]
        if rater != 4 and model_a:
            battles.append((model_a, model_b, {"a": "x", "b": "y"}.get(choice, "tie")))
    expected = bradley_terry(battles)
    assert {row["model"]: row["rating"] for row in board["models"]} == pytest.approx(expected)
    m1 = next(row for row in board["models"] if row["model"] == "m1")
    assert (m1["battles"], m1["wins"], m1["losses"], m1["ties"]) == (8, 4, 3, 1)
    order = board["win_rate"]["models"]
    assert board["win_rate"]["rate"][order.index("m1")][order.index("m2")] == pytest.approx(4 / 5)
    assert board["win_rate"]["rate"][order.index("m1")][order.index("m3")] == pytest.approx(1 / 6)


def test_headline_intervals_are_the_bootstraps_of_the_counted_votes():
    """Fleiss' kappa and percent agreement come with intervals, as alpha does, in the headline and per
    criterion: the pure bootstraps on the same vote counts (non-gold pairs, rater 4 left out)."""
    report = project_report(hand_table(), excluded={4}, n_boot=200, seed=5)
    counts = np.zeros((4, len(CHOICES)), dtype=np.int64)
    for item, rater, choice, *_ in VOTES:
        if rater != 4 and item < 14:
            counts[item - 10, CHOICES.index(choice)] += 1
    head = report["headline"]["without_excluded"]
    boot = {"n": 200, "seed": 5}
    assert (head["fleiss_kappa"]["low"], head["fleiss_kappa"]["high"]) == bootstrap_fleiss_kappa(
        counts, **boot
    )
    assert (
        head["percent_agreement"]["low"],
        head["percent_agreement"]["high"],
    ) == bootstrap_percent_agreement(counts, **boot)
    assert (head["alpha"]["low"], head["alpha"]["high"]) == bootstrap_alpha(counts, **boot)
    helpful = report["criteria"]["helpful"]["without_excluded"]
    for name in ("alpha", "fleiss_kappa", "percent_agreement"):
        assert helpful[name]["low"] <= helpful[name]["value"] <= helpful[name]["high"], name
    harmless = report["criteria"]["harmless"]["without_excluded"]  # nobody answered it
    assert (
        harmless["fleiss_kappa"]
        == harmless["percent_agreement"]
        == {"value": None, "low": None, "high": None}
    )


def test_the_kappa_matrix_says_why_a_cell_is_undefined():
    """Two raters who share enough pairs but always chose the same label have no kappa (chance agreement
    is 1): "no_variation", not "too few shared pairs"."""
    rows = [{"item": i, "rater": r, "choice": "a"} for i in range(6) for r in (1, 2)]
    rows += [{"item": i, "rater": 3, "choice": "ab"[i % 2]} for i in range(6)]
    rows += [{"item": i, "rater": 4, "choice": "b"} for i in range(2)]
    kappa = project_report(JudgmentTable.from_rows(rows), n_boot=0, min_shared=3)["cohen_kappa"]
    at = {rater: i for i, rater in enumerate(kappa["raters"])}
    one, two, three, four = (at[r] for r in (1, 2, 3, 4))
    assert kappa["shared"][one][two] == 6 and kappa["matrix"][one][two] is None
    assert kappa["undefined"][one][two] == kappa["undefined"][two][one] == "no_variation"
    assert np.isnan(quiet(cohen_kappa_score, ["a"] * 6, ["a"] * 6))
    assert cohen_kappa([(r["item"], r["rater"], r["choice"]) for r in rows], 1, 2) is None
    assert kappa["shared"][one][four] == 2 and kappa["undefined"][one][four] == "too_few_shared"
    assert kappa["matrix"][one][four] is None
    # One rater without variation beside one with: kappa is defined (0 here), as scikit-learn says.
    assert kappa["undefined"][one][three] is None
    assert kappa["matrix"][one][three] == pytest.approx(cohen_kappa_score(["a"] * 6, list("ababab")))
    assert kappa["matrix"][one][one] is None and kappa["undefined"][one][one] is None


def test_project_report_is_reproducible_and_handles_an_empty_project():
    table = hand_table()
    assert project_report(table, n_boot=100, seed=3) == project_report(table, n_boot=100, seed=3)
    quick = project_report(table, n_boot=0)
    assert quick["headline"]["without_excluded"]["alpha"]["low"] is None
    assert all(row["low"] is None for row in quick["leaderboard"]["models"])
    plain = project_report(table, n_boot=100)
    assert plain["headline"]["with_excluded"] is plain["headline"]["without_excluded"]
    assert plain["headline"]["without_excluded"]["alpha_ordinal"] is None

    empty = project_report(JudgmentTable.from_rows([]), n_boot=10)
    assert json.dumps(empty, allow_nan=False)
    head = empty["headline"]["without_excluded"]
    assert (head["pairs"], head["judgments"], head["alpha"]["value"], head["progress"]) == (0, 0, None, None)
    assert empty["annotators"] == [] and empty["leaderboard"] is None and empty["audit"] is None


def test_judgment_table_rows():
    table = JudgmentTable.from_rows([
        {"item": 1, "rater": 2, "choice": "a", "criteria": {"x": "b"}},
        {"item": 1, "rater": 3, "choice": "both_bad", "seconds": None, "day": "2026-11-30"},
    ])  # fmt: skip
    assert table.day[0] != table.day[0] and str(table.day[1]) == "2026-11-30"  # NaT, then a day
    assert list(table.criteria["x"]) == ["b", ""] and np.isnan(table.seconds).all()
    with pytest.raises(ValueError, match="choice"):
        JudgmentTable.from_rows([(1, 2, "left")])
    with pytest.raises(ValueError, match="unknown fields"):
        JudgmentTable.from_rows([{"item": 1, "rater": 2, "choice": "a", "colour": "red"}])


def test_the_statistics_import_no_django():
    code = (
        "import sys; import labeling.agreement, labeling.review_stats; "
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={"PATH": "/usr/bin:/bin"})
