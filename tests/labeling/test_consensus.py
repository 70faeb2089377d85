"""Tests for labeling.consensus: the export rules case by case, adjudication, Dawid–Skene, validation,
monotonicity as thresholds rise, and the measured label noise."""

from __future__ import annotations

import dataclasses
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labeling.consensus import (
    LABELS,
    MAX_LABEL_SMOOTHING,
    REASONS,
    ConsensusRules,
    Decision,
    Disagreement,
    DisagreementCounter,
    decide,
    decide_all,
    measure_disagreement,
    parse_share,
    share_text,
    suggest_label_smoothing,
)

REPO = Path(__file__).resolve().parents[2]
RULES = ConsensusRules()


def counts(**given: int) -> dict[str, int]:
    return {label: given.get(label, 0) for label in LABELS}


# --- majority, case by case ----------------------------------------------------------------------


def test_unanimous_pair_is_kept() -> None:
    assert decide(["b", "b", "b"], rules=RULES) == Decision(
        label="b",
        chosen="b",
        votes=counts(b=3),
        share=1.0,
        adjudicated=False,
        kept=True,
        reason=None,
        posterior=None,
    )


def test_two_of_three_meets_the_default_share_exactly() -> None:
    decision = decide(["a", "b", "a"], rules=RULES)
    assert (decision.kept, decision.chosen, decision.rejected, decision.share) == (True, "a", "b", 2 / 3)
    assert decision.votes == counts(a=2, b=1)
    assert not decision.unanimous


@pytest.mark.parametrize(
    ("votes", "share"),
    [([], 0.0), (["a"], 1.0), (["a", "b"], 0.5)],
)
def test_fewer_votes_than_k_are_too_few(votes: list[str], share: float) -> None:
    decision = decide(votes, rules=RULES)
    assert (decision.kept, decision.reason, decision.label, decision.chosen) == (
        False,
        "too_few_votes",
        None,
        None,
    )
    assert decision.share == share


def test_min_judgments_is_the_projects_k() -> None:
    assert decide(["a", "a"], rules=ConsensusRules(min_judgments=2)).kept
    assert decide(["a", "a", "a"], rules=ConsensusRules(min_judgments=4)).reason == "too_few_votes"


@pytest.mark.parametrize(
    ("votes", "min_share", "reason"),
    [
        (["a", "b", "tie"], 0.0, "split"),  # three-way tie at the top: no winner at any share
        (["a", "a", "b", "b"], 0.0, "split"),
        (["a", "a", "a", "b", "b"], 2 / 3, "split"),  # 0.6 < 2/3
        (["a", "a", "a", "b", "b"], 0.6, None),
        (["a", "a", "b", "tie", "both_bad"], 0.4, None),  # a plurality is enough when the rules say so
        (["a", "a", "a", "b"], 1.0, "split"),
        (["a", "a", "a"], 1.0, None),
    ],
)
def test_split_votes(votes: list[str], min_share: float, reason: str | None) -> None:
    decision = decide(votes, rules=ConsensusRules(min_judgments=1, min_share=min_share))
    assert decision.reason == reason
    assert decision.kept is (reason is None)
    assert decision.label == (None if reason else "a")
    assert decision.share == max(decision.votes.values()) / len(votes)


def test_a_share_typed_with_rounding_still_keeps_two_of_three() -> None:
    assert decide(["a", "a", "b"], rules=ConsensusRules(min_share=0.6666666667)).kept
    assert not decide(["a", "a", "b"], rules=ConsensusRules(min_share=0.667)).kept


@pytest.mark.parametrize("label", ["tie", "both_bad"])
def test_ties_and_both_bad_are_dropped_unless_the_rules_keep_them(label: str) -> None:
    votes = [label, label, "a"]
    dropped = decide(votes, rules=RULES)
    assert (dropped.kept, dropped.reason, dropped.label, dropped.chosen) == (False, label, label, None)
    keep = ConsensusRules(drop_ties=False, drop_both_bad=False)
    kept = decide(votes, rules=keep)
    assert (kept.kept, kept.reason, kept.label, kept.chosen, kept.rejected) == (True, None, label, None, None)


def test_dropping_ties_does_not_drop_both_bad_and_the_reverse() -> None:
    assert decide(["both_bad"] * 3, rules=ConsensusRules(drop_both_bad=False)).kept
    assert not decide(["both_bad"] * 3, rules=ConsensusRules(drop_ties=False)).kept
    assert decide(["tie"] * 3, rules=ConsensusRules(drop_ties=False)).kept


def test_gold_pairs_are_kept_by_default_and_dropped_on_request() -> None:
    assert decide(["a"] * 3, rules=RULES, is_gold=True).kept
    decision = decide(["a"] * 3, rules=ConsensusRules(drop_gold=True), is_gold=True)
    assert (decision.kept, decision.reason, decision.label) == (False, "gold", None)
    # "gold" is the reason even when another rule would also drop the pair.
    assert (
        decide(["a"], rules=ConsensusRules(drop_gold=True), is_gold=True, adjudication="a").reason == "gold"
    )
    assert decide(["a"], rules=ConsensusRules(drop_gold=True), is_gold=False).reason == "too_few_votes"


def test_votes_may_be_any_sequence() -> None:
    assert decide(("a", "a", "b"), rules=RULES) == decide(["b", "a", "a"], rules=RULES)


# --- adjudication --------------------------------------------------------------------------------


def test_adjudication_overrides_too_few_votes() -> None:
    decision = decide(["b"], rules=RULES, adjudication="a")
    assert (decision.kept, decision.label, decision.chosen, decision.adjudicated) == (True, "a", "a", True)
    assert decision.share == 0.0  # no counted vote agrees with the lead
    assert decision.votes == counts(b=1)


def test_adjudication_overrides_a_split_and_a_majority() -> None:
    assert decide(["a", "b", "tie"], rules=RULES, adjudication="b").chosen == "b"
    decision = decide(["a", "a", "b"], rules=RULES, adjudication="b")
    assert (decision.chosen, decision.share, decision.adjudicated) == ("b", 1 / 3, True)


def test_adjudication_without_votes_is_kept() -> None:
    decision = decide([], rules=RULES, adjudication="a")
    assert (decision.kept, decision.share, decision.total) == (True, 0.0, 0)


@pytest.mark.parametrize("label", ["tie", "both_bad"])
def test_an_adjudicated_tie_or_both_bad_still_obeys_the_drop_rules(label: str) -> None:
    decision = decide(["a", "a", "a"], rules=RULES, adjudication=label)
    assert (decision.kept, decision.reason, decision.label, decision.adjudicated) == (
        False,
        label,
        label,
        True,
    )
    kept = decide(["a"], rules=ConsensusRules(drop_ties=False, drop_both_bad=False), adjudication=label)
    assert (kept.kept, kept.label, kept.chosen) == (True, label, None)


def test_adjudication_is_ignored_when_it_does_not_override() -> None:
    rules = ConsensusRules(adjudication_overrides=False)
    assert decide(["a", "a", "b"], rules=rules, adjudication="b") == decide(["a", "a", "b"], rules=rules)
    decision = decide(["b"], rules=rules, adjudication="a")
    assert (decision.kept, decision.reason, decision.adjudicated) == (False, "too_few_votes", False)


def test_adjudication_overrides_dawid_skene_without_a_posterior() -> None:
    rules = ConsensusRules(method="dawid-skene")
    decision = decide(["a", "b", "b"], rules=rules, adjudication="a")
    assert (decision.kept, decision.chosen, decision.posterior) == (True, "a", None)


# --- Dawid–Skene ---------------------------------------------------------------------------------

DS = ConsensusRules(method="dawid-skene")


def test_dawid_skene_follows_the_posterior_not_the_vote_count() -> None:
    decision = decide(["a", "b", "b"], rules=DS, posterior={"a": 0.9, "b": 0.1})
    assert (decision.kept, decision.label, decision.posterior, decision.share) == (True, "a", 0.9, 1 / 3)


def test_dawid_skene_drops_a_low_posterior() -> None:
    decision = decide(["a", "a", "a"], rules=DS, posterior={"a": 0.7, "b": 0.2, "tie": 0.1})
    assert (decision.kept, decision.reason, decision.label, decision.posterior) == (
        False,
        "low_posterior",
        None,
        None,
    )
    assert decide(["a"] * 3, rules=DS, posterior={"a": 0.8, "b": 0.2}).kept  # at the threshold


def test_dawid_skene_drops_a_tied_posterior_at_any_threshold() -> None:
    rules = ConsensusRules(method="dawid-skene", min_posterior=0.0)
    assert decide(["a", "b", "a"], rules=rules, posterior={"a": 0.5, "b": 0.5}).reason == "low_posterior"


def test_dawid_skene_ignores_min_share_and_keeps_min_judgments() -> None:
    rules = ConsensusRules(method="dawid-skene", min_share=1.0)
    assert decide(["a", "b", "tie"], rules=rules, posterior={"a": 0.95}).chosen == "a"
    # Too few votes is decided before the posterior is looked at: none is needed.
    assert decide(["a"], rules=rules).reason == "too_few_votes"


def test_dawid_skene_ties_and_both_bad_obey_the_drop_rules() -> None:
    assert decide(["tie"] * 3, rules=DS, posterior={"tie": 0.99}).reason == "tie"


def test_dawid_skene_needs_a_posterior() -> None:
    with pytest.raises(ValueError, match="posterior is required"):
        decide(["a", "a", "a"], rules=DS)
    with pytest.raises(ValueError, match="posterior labels"):
        decide(["a", "a", "a"], rules=DS, posterior={"A": 1.0})


# --- errors and validation -----------------------------------------------------------------------


def test_unknown_votes_and_adjudications_are_refused() -> None:
    with pytest.raises(ValueError, match="votes must be among .*'left'"):
        decide(["a", "left", "a"], rules=RULES)
    with pytest.raises(ValueError, match="adjudication must be one of"):
        decide(["a"], rules=RULES, adjudication="A")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("min_judgments", 0),
        ("min_judgments", -3),
        ("min_judgments", 2.5),
        ("min_judgments", True),
        ("min_judgments", "3"),
        ("min_share", -0.01),
        ("min_share", 1.01),
        ("min_share", math.nan),
        ("min_share", "0.5"),
        ("min_share", True),
        ("min_posterior", 1.5),
        ("min_posterior", math.inf),
        ("drop_ties", "yes"),
        ("drop_both_bad", 1),
        ("adjudication_overrides", None),
        ("drop_gold", 0),
        ("method", "mean"),
        ("method", "dawid_skene"),
    ],
)
def test_rules_are_validated_with_the_field_named(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"^{field} must"):
        ConsensusRules(**{field: value})


def test_rules_defaults_normalisation_and_storage() -> None:
    assert dataclasses.asdict(RULES) == {
        "min_judgments": 3,
        "min_share": 2 / 3,
        "drop_ties": True,
        "drop_both_bad": True,
        "adjudication_overrides": True,
        "drop_gold": False,
        "method": "majority",
        "min_posterior": 0.8,
    }
    rules = ConsensusRules(min_share=1, min_posterior=0)
    assert isinstance(rules.min_share, float) and isinstance(rules.min_posterior, float)
    # Stored as JSON in a snapshot and read back.
    assert ConsensusRules(**dataclasses.asdict(rules)) == rules
    with pytest.raises(dataclasses.FrozenInstanceError):
        rules.min_share = 0.5  # type: ignore[misc]


# --- properties ----------------------------------------------------------------------------------

VOTES = st.lists(st.sampled_from(LABELS), max_size=7)
POSTERIOR = st.lists(st.integers(0, 20), min_size=4, max_size=4).map(
    lambda weights: {label: w / (sum(weights) or 1) for label, w in zip(LABELS, weights, strict=True)}
)
PAIRS = st.lists(
    st.tuples(VOTES, st.none() | st.sampled_from(LABELS), st.booleans(), POSTERIOR), min_size=1, max_size=30
)
FLAGS = st.fixed_dictionaries(
    {
        "drop_ties": st.booleans(),
        "drop_both_bad": st.booleans(),
        "adjudication_overrides": st.booleans(),
        "drop_gold": st.booleans(),
        "method": st.sampled_from(["majority", "dawid-skene"]),
    }
)


def kept_labels(pairs: list, rules: ConsensusRules) -> dict[int, str | None]:
    decisions = [decide(v, rules=rules, adjudication=a, is_gold=g, posterior=p) for v, a, g, p in pairs]
    return {i: d.label for i, d in enumerate(decisions) if d.kept}


@settings(max_examples=150, deadline=None)
@given(
    pairs=PAIRS,
    flags=FLAGS,
    judgments=st.lists(st.integers(1, 8), min_size=2, max_size=2).map(sorted),
    shares=st.lists(st.floats(0, 1), min_size=2, max_size=2).map(sorted),
    posteriors=st.lists(st.floats(0, 1), min_size=2, max_size=2).map(sorted),
    rising=st.sampled_from(["min_judgments", "min_share", "min_posterior", "all"]),
)
def test_the_kept_set_only_shrinks_as_thresholds_rise(
    pairs: list, flags: dict, judgments: list[int], shares: list[float], posteriors: list[float], rising: str
) -> None:
    low = {"min_judgments": judgments[0], "min_share": shares[0], "min_posterior": posteriors[0]}
    high = {name: [judgments, shares, posteriors][i][1] for i, name in enumerate(low)}
    if rising != "all":
        high = {**low, rising: high[rising]}
    loose = kept_labels(pairs, ConsensusRules(**flags, **low))
    strict = kept_labels(pairs, ConsensusRules(**flags, **high))
    assert strict.keys() <= loose.keys()
    # A pair kept under both keeps its label: thresholds only decide whether, not what.
    assert all(strict[i] == loose[i] for i in strict)


@settings(max_examples=100, deadline=None)
@given(pairs=PAIRS, flags=FLAGS, min_judgments=st.integers(1, 5), min_share=st.floats(0, 1))
def test_decisions_are_consistent(pairs: list, flags: dict, min_judgments: int, min_share: float) -> None:
    rules = ConsensusRules(**flags, min_judgments=min_judgments, min_share=min_share)
    for votes, adjudication, gold, posterior in pairs:
        d = decide(votes, rules=rules, adjudication=adjudication, is_gold=gold, posterior=posterior)
        assert d.kept is (d.reason is None)
        assert d.reason is None or d.reason in REASONS
        assert d.chosen == (d.label if d.label in ("a", "b") else None)
        assert not d.kept or d.label is not None
        assert d.adjudicated is (adjudication is not None and rules.adjudication_overrides)
        assert d.total == len(votes) and list(d.votes) == list(LABELS)
        assert 0.0 <= d.share <= 1.0


@settings(max_examples=100, deadline=None)
@given(pairs=PAIRS, flags=FLAGS)
def test_decide_all_equals_decide_pair_by_pair(pairs: list, flags: dict) -> None:
    rules = ConsensusRules(**flags)
    votes, adjudications, gold, posteriors = (list(column) for column in zip(*pairs, strict=True))
    expected = [decide(v, rules=rules, adjudication=a, is_gold=g, posterior=p) for v, a, g, p in pairs]
    got = decide_all(votes, rules=rules, adjudications=adjudications, gold=gold, posteriors=posteriors)
    assert got == expected


def test_decide_all_defaults_and_length_checks() -> None:
    votes = [["a", "a", "a"], ["b"], ["tie"] * 3]
    assert decide_all(votes, rules=RULES) == [decide(v, rules=RULES) for v in votes]
    with pytest.raises(ValueError, match="adjudications has 1 items for 3 pairs"):
        decide_all(votes, rules=RULES, adjudications=["a"])
    with pytest.raises(ValueError, match="votes must be among"):
        decide_all([["a", "x", "a"]], rules=RULES)


def test_decide_all_is_fast_enough_for_a_live_preview() -> None:
    rng = random.Random(7)
    votes = [rng.choices(LABELS, weights=[5, 4, 1, 1], k=rng.choice([2, 3, 3, 4])) for _ in range(100_000)]
    adjudications = [rng.choice(LABELS) if rng.random() < 0.02 else None for _ in votes]
    start = time.process_time()
    decisions = decide_all(votes, rules=RULES, adjudications=adjudications)
    elapsed = time.process_time() - start
    assert len(decisions) == 100_000
    # Measured about 0.05-0.1 s of CPU on the 2-core CI machines: a tenfold margin.
    assert elapsed < 1.0


# --- measured disagreement and label smoothing ---------------------------------------------------


def test_unanimous_kept_pairs_measure_no_noise() -> None:
    decisions = [decide(["a"] * 3, rules=RULES), decide(["b"] * 3, rules=RULES), decide(["b"], rules=RULES)]
    assert measure_disagreement(decisions) == Disagreement(
        pairs=2, voted=2, non_unanimous=0.0, vote_error=0.0, label_noise=0.0
    )
    assert suggest_label_smoothing(decisions) == 0.0
    assert measure_disagreement([]) == Disagreement(
        pairs=0, voted=0, non_unanimous=None, vote_error=0.0, label_noise=0.0
    )
    assert suggest_label_smoothing([]) == 0.0


@pytest.mark.parametrize(("unanimous", "two_one"), [(1, 1), (3, 1), (10, 1), (5, 7)])
def test_the_noise_estimate_is_the_one_coin_maximum_likelihood(unanimous: int, two_one: int) -> None:
    # With only 3-0 and 2-1 pairs the likelihood depends on u = p(1-p) alone: P(2-1) = 3u, so the
    # maximum-likelihood p solves 3u = share of 2-1 pairs; the chosen side of a 2-1 pair is wrong
    # with probability p, of a 3-0 pair with p^3 / (p^3 + (1-p)^3).
    decisions = [decide(["a", "a", "a"], rules=RULES)] * unanimous + [
        decide(["b", "a", "b"], rules=RULES)
    ] * two_one
    u = two_one / (3 * (unanimous + two_one))
    p = (1 - math.sqrt(1 - 4 * u)) / 2
    noise = (unanimous * p**3 / (p**3 + (1 - p) ** 3) + two_one * p) / (unanimous + two_one)
    measured = measure_disagreement(decisions)
    assert measured.pairs == measured.voted == unanimous + two_one
    assert measured.non_unanimous == two_one / (unanimous + two_one)
    assert measured.vote_error == pytest.approx(p, abs=1e-9)
    assert measured.label_noise == pytest.approx(noise, abs=1e-9)
    assert suggest_label_smoothing(decisions) == round(noise, 3)


@pytest.mark.parametrize(("error", "k"), [(0.1, 3), (0.25, 3), (0.25, 4), (0.15, 5)])
def test_the_noise_estimate_recovers_simulated_annotators(error: float, k: int) -> None:
    rng = random.Random(11)
    truth, votes = [], []
    for _ in range(4000):
        side = rng.choice("ab")
        truth.append(side)
        votes.append([side if rng.random() >= error else "ab".replace(side, "") for _ in range(k)])
    decisions = decide_all(votes, rules=ConsensusRules(min_judgments=k))
    kept = [(d.chosen, side) for d, side in zip(decisions, truth, strict=True) if d.kept]
    wrong = sum(chosen != side for chosen, side in kept) / len(kept)
    measured = measure_disagreement(decisions)
    assert measured.vote_error == pytest.approx(error, abs=0.02)
    assert measured.label_noise == pytest.approx(wrong, abs=0.015)
    # The naive mean minority share is a worse estimate of the label noise than the model's.
    naive = sum(1 - d.share for d in decisions if d.kept) / len(kept)
    assert abs(measured.label_noise - wrong) < abs(naive - wrong)


def test_adjudicated_pairs_count_as_right_and_do_not_enter_the_fit() -> None:
    plain = [decide(["a", "a", "b"], rules=RULES), decide(["a", "a", "a"], rules=RULES)]
    adjudicated = decide(["a", "b", "b"], rules=RULES, adjudication="a")
    with_lead, without = measure_disagreement([*plain, adjudicated]), measure_disagreement(plain)
    assert with_lead.vote_error == without.vote_error
    assert with_lead.label_noise == pytest.approx(without.label_noise * 2 / 3)
    assert (with_lead.pairs, with_lead.voted, with_lead.non_unanimous) == (3, 3, 2 / 3)


def test_pairs_settled_by_adjudication_alone_are_not_disagreement() -> None:
    # A lead's label on a pair nobody voted on: no votes, so neither agreement nor disagreement.
    settled = [decide([], rules=RULES, adjudication=side) for side in "aba"]
    assert all(d.kept and d.adjudicated and d.total == 0 for d in settled)
    assert measure_disagreement(settled) == Disagreement(
        pairs=3, voted=0, non_unanimous=None, vote_error=0.0, label_noise=0.0
    )
    assert suggest_label_smoothing(settled) == 0.0
    # Beside voted pairs they count as kept (and right) but not in the share of split votes.
    voted = [decide(["a", "a", "a"], rules=RULES), decide(["b", "b", "a"], rules=RULES)]
    measured = measure_disagreement([*settled, *voted])
    assert (measured.pairs, measured.voted, measured.non_unanimous) == (5, 2, 1 / 2)
    assert measured.label_noise == pytest.approx(measure_disagreement(voted).label_noise * 2 / 5)
    counter = DisagreementCounter()
    counter.add(settled[0], times=3)
    counter.add(voted[0])
    assert (counter.result().voted, counter.result().non_unanimous) == (1, 0.0)


def test_dropped_pairs_inform_the_fit_but_are_not_counted() -> None:
    kept = [decide(["a", "a", "a", "a"], rules=ConsensusRules(min_judgments=4))] * 3
    split = [decide(["a", "a", "b", "b"], rules=ConsensusRules(min_judgments=4))] * 3
    assert measure_disagreement(kept).vote_error == 0.0
    measured = measure_disagreement(kept + split)
    assert measured.pairs == 3 and measured.vote_error > 0.1 and measured.label_noise > 0.0


def test_the_counter_streams_what_measure_disagreement_computes() -> None:
    rng = random.Random(3)
    votes = [rng.choices(LABELS, weights=[6, 3, 1, 1], k=rng.choice([2, 3, 4, 5])) for _ in range(3000)]
    adjudications = [rng.choice(LABELS) if rng.random() < 0.05 else None for _ in votes]
    decisions = decide_all(votes, rules=RULES, adjudications=adjudications)
    counter = DisagreementCounter()
    for decision in decisions:
        counter.add(decision)
    assert counter.result() == measure_disagreement(decisions)
    assert counter.result().pairs == sum(d.kept and d.chosen is not None for d in decisions)


def test_suggested_label_smoothing_from_a_given_noise() -> None:
    assert suggest_label_smoothing(noise=0.1234) == 0.123
    assert suggest_label_smoothing(noise=0) == 0.0
    assert suggest_label_smoothing(noise=0.9) == MAX_LABEL_SMOOTHING < 0.5
    for bad in (-0.1, 1.5, math.nan, "0.1", True):
        with pytest.raises(ValueError, match="noise must be"):
            suggest_label_smoothing(noise=bad)  # type: ignore[arg-type]


# --- the minimum share as people write it ---------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "share"),
    [
        ("2/3", 2 / 3),
        (" 2 / 3 ", 2 / 3),
        ("0.667", 0.667),
        (".5", 0.5),
        ("75%", 0.75),
        ("1", 1.0),
        ("0", 0.0),
    ],
)
def test_a_share_is_read_as_written(written: str, share: float) -> None:
    assert parse_share(written) == share


def test_two_thirds_written_as_a_fraction_keeps_pairs_won_2_to_1_and_0_667_does_not() -> None:
    votes = ["a", "a", "b"]
    assert decide(votes, rules=ConsensusRules(min_share=parse_share("2/3"))).kept
    assert decide(votes, rules=ConsensusRules(min_share=parse_share("0.667"))).reason == "split"


@pytest.mark.parametrize(
    ("written", "message"),
    [("3/2", "outside 0 to 1"), ("-0.1", "outside 0 to 1"), ("101%", "outside 0 to 1"),
     ("1/0", "not a share"), ("abc", "not a share"), ("nan", "not a share"), ("", "not a share"),
     ("2//3", "not a share")],
)  # fmt: skip
def test_a_share_that_is_not_one_is_refused_in_words(written: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_share(written)


def test_a_share_is_shown_as_people_write_it() -> None:
    assert [share_text(x) for x in (2 / 3, 1 / 3, 0.6666666667, 0.667, 0.75, 0.5, 1.0, 0.0, 0.8)] == [
        "2/3", "1/3", "2/3", "0.667", "0.75", "0.5", "1", "0", "0.8",
    ]  # fmt: skip
    for written in ("2/3", "0.667", "3/4", "5/7"):
        assert parse_share(share_text(parse_share(written))) == pytest.approx(parse_share(written), abs=1e-9)


# --- purity --------------------------------------------------------------------------------------


def test_module_does_not_import_django() -> None:
    code = "import sys, labeling.consensus; print('django' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False"]
