"""Evaluation statistics: coverage by simulation, hand-worked examples, a reference fit (no database)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from evaluation.stats import (
    WinRate,
    arena_leaderboard,
    fit_style_controlled,
    length_difference,
    per_criterion_win_rates,
    win_rate,
)
from labeling import agreement

ROOT = Path(__file__).resolve().parents[2]


# Win rate


def simulate_prompts(rng: np.random.Generator, *, prompts: int, judgments: int, mean: float, tie_rate: float):
    """Scores (prompts, judgments) of X: each prompt has a latent rate q ~ Beta(mean, 1 - mean) (mean
    `mean`, concentration 1: prompts differ a lot); a judgment is a tie (0.5) with probability
    `tie_rate`, else 1 with probability q."""
    q = rng.beta(mean, 1 - mean, size=(prompts, 1))
    u = rng.random((prompts, judgments))
    return np.where(u < tie_rate, 0.5, (rng.random((prompts, judgments)) < q).astype(float))


def test_the_interval_covers_the_true_win_rate_at_its_level():
    """The estimator targets E_prompt[E(score | prompt)] = tie_rate / 2 + (1 - tie_rate) E[q]; latent
    rates are set so that this is exactly 0.62. A bootstrap that resampled judgments instead of
    prompts ignores that a prompt's judgments agree with each other: the check below must catch it."""
    tie_rate, truth = 0.1, 0.62
    mean = (truth - tie_rate / 2) / (1 - tie_rate)
    rng = np.random.default_rng(2026)
    covered, naive_covered, seeds = 0, 0, 200
    for seed in range(seeds):
        scores = simulate_prompts(rng, prompts=60, judgments=3, mean=mean, tie_rate=tie_rate)
        result = win_rate({p: list(row) for p, row in enumerate(scores)}, n_boot=500, seed=seed)
        covered += result.low <= truth <= result.high
        flat = scores.ravel()
        naive = flat[rng.integers(len(flat), size=(500, len(flat)))].mean(1)
        low, high = np.quantile(naive, [0.025, 0.975])
        naive_covered += low <= truth <= high
    coverage, naive_coverage = covered / seeds, naive_covered / seeds
    assert 0.90 <= coverage <= 0.99, coverage  # observed: 0.955
    assert naive_coverage < 0.90, naive_coverage  # observed: 0.86: the check has the power to fail


def test_the_interval_is_the_bootstrap_over_prompts():
    """Drawing how often each prompt mean comes up is resampling prompts: compare with a plain loop."""
    scores = {"a": [1, 1, 1, 0.5], "b": [0], "c": [1, 0], "d": [0.5], "e": [1], "f": [0, 0, 1]}
    means = np.array([np.mean(s) for s in scores.values()])
    rng = np.random.default_rng(1)
    plain = means[rng.integers(len(means), size=(40_000, len(means)))].mean(1)
    result = win_rate(scores, n_boot=40_000, seed=5)
    assert result.low == pytest.approx(np.quantile(plain, 0.025), abs=0.02)
    assert result.high == pytest.approx(np.quantile(plain, 0.975), abs=0.02)
    # Two prompts, means 0 and 1: resamples are 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4.
    assert (win_rate({"a": [0], "b": [1, 1]}).low, win_rate({"a": [0], "b": [1, 1]}).high) == (0.0, 1.0)


def test_ties_count_half_and_every_prompt_weighs_the_same():
    scores = {"p1": [1, 0.5, 0.5, 0], "p2": [0.5], "p3": [1, 1]}
    result = win_rate(scores)
    # Prompt means 1/2, 1/2, 1 -> 2/3 (pooling judgments would give 4.5 / 7).
    assert result.rate == pytest.approx(2 / 3)
    assert (result.prompts, result.judgments, result.ties) == (3, 7, 3)
    # A prompt judged five times counts once: 1 and 0 -> 1/2, not 5/6.
    assert win_rate({"busy": [1] * 5, "quiet": [0]}).rate == pytest.approx(0.5)
    # Prompts without judgments are left out.
    assert win_rate({"busy": [1] * 5, "quiet": [0], "unjudged": []}).prompts == 2


def test_verdicts_follow_the_interval():
    assert win_rate({i: [1, 1, 0.5] for i in range(20)} | {20: [0]}).verdict == "better"
    assert win_rate({i: [0, 0.5] for i in range(20)} | {20: [1]}).verdict == "worse"
    assert win_rate({i: [i % 2] for i in range(40)}).verdict == "no measurable difference"
    # Means 1/2 and 1: a quarter of the resamples are exactly 1/2, so low = 0.5, which is not > 0.5.
    edge = win_rate({"a": [0.5], "b": [1]})
    assert edge.low == 0.5 and edge.verdict == "no measurable difference"
    one = win_rate({"a": [1, 1, 1]})
    assert (one.rate, one.low, one.high, one.verdict) == (1.0, None, None, "too few prompts")
    none = win_rate({})
    assert (none.rate, none.prompts, none.verdict) == (None, 0, "too few prompts")


def test_sentences():
    better = WinRate(0.64, 0.55, 0.72, 0.95, 50, 150, 12, "better")
    assert (
        better.sentence("tuned", "base")
        == "tuned preferred on 64% of prompts (95% CI 55–72%), better than base"
    )
    worse = WinRate(0.36, 0.28, 0.449, 0.9, 50, 150, 12, "worse")
    assert (
        worse.sentence("tuned", "base")
        == "tuned preferred on 36% of prompts (90% CI 28–45%), worse than base"
    )
    even = WinRate(0.51, 0.42, 0.60, 0.95, 50, 150, 12, "no measurable difference")
    assert (
        even.sentence("tuned", "base")
        == "no measurable difference between tuned and base (51% of prompts, 95% CI 42–60%)"
    )
    few = win_rate({"a": [1, 0.5]})
    assert (
        few.sentence("tuned", "base")
        == "too few prompts to compare tuned with base (1 judged; at least 2 needed)"
    )
    real = win_rate({i: [1] for i in range(30)} | {30: [0]})
    assert real.sentence("run 3", "the base").startswith("run 3 preferred on 97% of prompts (95% CI ")
    assert real.sentence("run 3", "the base").endswith("%), better than the base")


def test_to_dict_is_json_ready_and_bad_input_is_refused():
    result = win_rate({"a": [1, 0.5], "b": [0]})
    data = result.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert set(data) == {"rate", "low", "high", "level", "prompts", "judgments", "ties", "verdict"}
    for bad in ({"a": [2]}, {"a": [0.25]}, {"a": [float("nan")]}):
        with pytest.raises(ValueError, match="score"):
            win_rate(bad)
    with pytest.raises(ValueError, match="level"):
        win_rate({"a": [1], "b": [0]}, level=1)
    with pytest.raises(ValueError, match="n_boot"):
        win_rate({"a": [1], "b": [0]}, n_boot=0)


def test_per_criterion_win_rates():
    scores = {"helpful": {"a": [1], "b": [1, 0.5], "c": [0]}, "harmless": {"a": [0], "b": [0.5]}}
    rates = per_criterion_win_rates(scores, n_boot=300, seed=4)
    assert list(rates) == ["helpful", "harmless"]
    assert rates["helpful"] == win_rate(scores["helpful"], n_boot=300, seed=4)
    assert rates["harmless"].rate == pytest.approx(0.25)
    assert rates["harmless"].verdict == "no measurable difference"


# The arena leaderboard


def simulate_battles(
    theta: dict, n: int, *, seed: int, longer: dict | None = None, gamma: float = 0.0, tie_rate: float = 0.1
) -> list[tuple]:
    """Battles with lengths: each model's answer length is lognormal (median 200 characters, times its
    `longer` factor); P(x wins | not a tie) = sigmoid(theta_x - theta_y + gamma * length difference).
    Ties (`tie_rate`) come at random: they pull the fitted coefficients towards 0, so tests that compare
    coefficients with the truth simulate none."""
    rng = np.random.default_rng(seed)
    names = list(theta)
    longer = longer or {}
    out = []
    for _ in range(n):
        i, j = rng.choice(len(names), 2, replace=False)
        x, y = names[i], names[j]
        len_x = rng.lognormal(np.log(200 * longer.get(x, 1)), 0.4)
        len_y = rng.lognormal(np.log(200 * longer.get(y, 1)), 0.4)
        z = theta[x] - theta[y] + gamma * (len_x - len_y) / (len_x + len_y)
        won = rng.random() < 1 / (1 + np.exp(-z))
        outcome = "tie" if rng.random() < tie_rate else ("x" if won else "y")
        out.append((x, y, outcome, round(len_x), round(len_y)))
    return out


def order(board: dict) -> list:
    return [row["model"] for row in board["models"]]


def win_cells(board: dict) -> dict:
    """The win-rate matrix as {(row model, column model): (share, battles)}."""
    matrix = board["win_rate"]
    return {
        (a, b): (matrix["rate"][i][j], matrix["battles"][i][j])
        for i, a in enumerate(matrix["models"])
        for j, b in enumerate(matrix["models"])
    }


def test_arena_leaderboard_recovers_known_strengths():
    theta = {"strong": 0.6, "middle": 0.0, "weak": -0.6}
    battles = simulate_battles(theta, 3000, seed=0, tie_rate=0)
    boards = [arena_leaderboard(battles, style=style, n_boot=200) for style in (False, True)]
    for style, board in zip((False, True), boards, strict=True):
        assert order(board) == ["strong", "middle", "weak"]
        assert board["style_controlled"] is style
        for row in board["models"]:
            truth = agreement.to_elo(theta[row["model"]])  # theta has mean 0, as the ratings do
            assert row["rating"] == pytest.approx(truth, abs=30)  # standard errors are ~9 Elo
            assert row["low"] < row["rating"] < row["high"] and row["note"] is None
    # Lengths have no effect here, and the coefficient's interval says so.
    assert boards[1]["length"]["low"] < 0 < boards[1]["length"]["high"]


def test_style_control_sees_through_a_model_that_wins_by_writing_longer():
    """The model "verbose" writes answers three times as long and is a little weaker than the others (so that
    "not first" is not a coin toss); people prefer the longer answer (gamma 3 per unit of the length
    difference, so +1.5 logits at 3:1)."""
    theta = {"verbose": -0.2, "terse": 0.2, "plain": 0.0}
    battles = simulate_battles(theta, 3000, seed=1, longer={"verbose": 3}, gamma=3.0, tie_rate=0)
    raw = arena_leaderboard(battles, n_boot=200)
    assert order(raw)[0] == "verbose"
    controlled = arena_leaderboard(battles, style=True, n_boot=200)
    assert order(controlled) == ["terse", "plain", "verbose"]
    length = controlled["length"]
    assert 0 < length["low"] < length["elo_per_unit"] < length["high"]
    assert length["low"] < agreement.ELO_SCALE * 3.0 < length["high"]
    assert length["feature"] == "(len_x - len_y) / (len_x + len_y)"
    # The win-rate matrix holds the raw shares, in the controlled order.
    assert controlled["win_rate"]["models"] == order(controlled)
    assert win_cells(controlled) == win_cells(raw) and win_cells(raw)["verbose", "terse"][0] > 0.5


def test_the_style_fit_is_the_penalized_logistic_regression_scikit_learn_finds():
    """Ties as half a win each way: give scikit-learn each tie twice, once per side, at weight 1/2."""
    battles = simulate_battles({"a": 0.5, "b": 0.0, "c": -0.3, "d": 0.1}, 400, seed=3, gamma=1.0)
    battles += [("e", "a", "y", 100, 300)] * 4  # a model that never wins
    models, x, y, outcome = agreement._battle_cells([b[:3] for b in battles], "half")
    lengths = np.array([b[3:] for b in battles], dtype=float)
    feature = length_difference(lengths[:, 0], lengths[:, 1])
    penalty = 0.01
    score = np.array([1.0, 0.0, 0.5])[outcome]
    ours = fit_style_controlled(x, y, score, feature, len(models), penalty=penalty)[0]
    design = np.zeros((len(x), len(models) + 1))
    design[np.arange(len(x)), x], design[np.arange(len(x)), y], design[:, -1] = 1, -1, feature
    reference = LogisticRegression(C=1 / (2 * penalty), fit_intercept=False, tol=1e-12, max_iter=100_000)
    reference.fit(
        np.vstack([design, design]), np.r_[np.ones(len(x)), np.zeros(len(x))], np.r_[score, 1 - score]
    )
    expected = reference.coef_[0]
    expected[:-1] -= expected[:-1].mean()
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_without_length_differences_style_control_is_plain_bradley_terry():
    battles = simulate_battles({"a": 0.4, "b": 0.0, "c": -0.4}, 600, seed=4)
    same_length = [(x, y, o, 50, 50) for x, y, o, _, _ in battles]
    controlled = arena_leaderboard(same_length, style=True, n_boot=0)
    expected = agreement.bradley_terry([b[:3] for b in battles])
    for row in controlled["models"]:
        assert row["rating"] == pytest.approx(expected[row["model"]], abs=1e-6)
    assert controlled["length"]["elo_per_unit"] == pytest.approx(0, abs=1e-9)
    assert controlled["length"]["low"] is None and controlled["models"][0]["low"] is None


def test_without_style_it_is_the_labeling_leaderboard():
    battles = simulate_battles({"a": 0.4, "b": 0.0, "c": -0.4}, 600, seed=5)
    board = arena_leaderboard(battles, n_boot=100, seed=7)
    assert json.loads(json.dumps(board, allow_nan=False)) == board
    assert arena_leaderboard([b[:3] for b in battles], n_boot=100, seed=7) == board  # lengths unused
    expected = agreement.leaderboard([b[:3] for b in battles], n_boot=100, seed=7)
    assert board.pop("style_controlled") is False
    for row in board["models"]:
        assert row.pop("note") is None
    assert board == expected


def test_sparse_models_get_no_interval():
    battles = simulate_battles({"a": 0.3, "b": 0.0, "c": -0.3}, 300, seed=6)
    battles += [("rare", "a", "x", 120, 100), ("b", "rare", "tie", 80, 90), ("rare", "c", "y", 50, 60)]
    battles += [("loser", "a", "y", 100, 100)] * 12 + [("b", "loser", "x", 100, 100)] * 8
    battles += [("champ", "c", "x", 100, 100)] * 12
    for style in (False, True):
        board = arena_leaderboard(battles, style=style, n_boot=100)
        rows = {row["model"]: row for row in board["models"]}
        assert rows["rare"]["battles"] == 3
        assert [rows["rare"][k] for k in ("low", "high", "note")] == [None, None, "few comparisons"]
        assert [rows["loser"][k] for k in ("low", "high", "note")] == [None, None, "never won"]
        assert [rows["champ"][k] for k in ("low", "high", "note")] == [None, None, "never lost"]
        for name in "abc":
            assert rows[name]["note"] is None and rows[name]["low"] < rows[name]["high"]
        assert json.loads(json.dumps(board, allow_nan=False)) == board
    for min_battles, note in ((3, None), (4, "few comparisons")):
        rows = {
            row["model"]: row
            for row in arena_leaderboard(battles, n_boot=20, min_battles=min_battles)["models"]
        }
        assert rows["rare"]["note"] == note and (rows["rare"]["low"] is None) == (note is not None)


def test_arena_leaderboard_refuses_bad_battles():
    assert arena_leaderboard([("a", "a", "x", 1, 2)]) is None
    assert arena_leaderboard([]) is None
    with pytest.raises(ValueError, match="lengths"):
        arena_leaderboard([("a", "b", "x"), ("b", "a", "y")], style=True)
    with pytest.raises(ValueError, match="non-negative"):
        arena_leaderboard([("a", "b", "x", -1, 2), ("b", "a", "y", 3, 2)], style=True)
    with pytest.raises(ValueError, match="battle"):
        arena_leaderboard([("a", "b", "x", 1)])
    with pytest.raises(ValueError, match="outcome"):
        arena_leaderboard([("a", "b", "left", 1, 2)])
    np.testing.assert_allclose(length_difference([200, 0, 50], [100, 0, 50]), [1 / 3, 0, 0])


def test_the_statistics_import_no_django():
    code = (
        "import sys; import evaluation.stats; "
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={"PATH": "/usr/bin:/bin"})
