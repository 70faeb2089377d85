"""An AI judge measured against the project's people, with the instruments used for people (issue #28):
agreement with the human consensus (percent and Cohen's kappa with bootstrap intervals) beside the
average annotator's leave-one-out agreement, position consistency under swapping, left and longer rates
with their exact binomial tests, per-criterion agreement, the calibration of its probabilities (Brier
score, expected calibration error, reliability bins) and the pairs where it disagrees most confidently.

Gathers from the database; the statistics are evaluation.judge_stats' and labeling.agreement's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from django.db.models.functions import Length

from evaluation import judge_stats
from evaluation.judge_jobs import human_labels
from evaluation.models import Judge, JudgeVerdict
from labeling import agreement
from labeling.models import Judgment, Pair

DISAGREEMENTS = 20
BIAS_P = 0.01  # as for people (labeling.review_stats.BIAS_P)


def _rate(k: int, n: int) -> dict[str, Any]:
    """{"rate", "k", "n", "p", "biased"}: a share with its two-sided exact binomial p-value against 1/2."""
    if not n:
        return {"rate": None, "k": 0, "n": 0, "p": None, "biased": False}
    p = float(agreement.binomial_p(np.array([k]), np.array([n]))[0])
    return {"rate": k / n, "k": int(k), "n": int(n), "p": p, "biased": p < BIAS_P}


def criterion_majorities(project: Any) -> dict[str, dict[int, str]]:
    """Criterion name -> pair id -> the unique plurality of people's per-criterion answers (a, b, tie)
    among the counted judgments (excluded annotators left out)."""
    from labeling.review import excluded_annotators

    names = [c["name"] for c in project.criteria or [] if c.get("name")]
    if not names:
        return {}
    excluded = excluded_annotators(project)
    votes: dict[str, dict[int, dict[str, int]]] = {name: {} for name in names}
    rows = Judgment.objects.filter(pair__project=project).exclude(annotator_id__in=excluded)
    for pair_id, answers in rows.values_list("pair_id", "criteria").iterator():
        for name in names:
            label = (answers or {}).get(name)
            if label in ("a", "b", "tie"):
                counts = votes[name].setdefault(pair_id, {})
                counts[label] = counts.get(label, 0) + 1
    out: dict[str, dict[int, str]] = {}
    for name, by_pair in votes.items():
        out[name] = {}
        for pair_id, counts in by_pair.items():
            best = max(counts.values())
            winners = [label for label, n in counts.items() if n == best]
            if len(winners) == 1:
                out[name][pair_id] = winners[0]
    return out


def judge_calibration(
    judge: Judge,
    *,
    people: Mapping[int, str] | None = None,
    annotators: list[dict[str, Any]] | None = None,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """The judge's calibration section as plain data. `people`: pair id -> human consensus label
    (`human_labels(project)` when None); `annotators`: the Review report's annotator rows (their
    leave-one-out `agreement` over `agreement_n`), for the "as good as a person?" line.

    {"judged", "unparseable", "readable", "inconsistent", "position_consistency", "shared",
     "agreement": judge_stats.agreement_with_majority(...) over pairs where people reached a, b or tie,
     "people_agreement": {"mean", "annotators", "judgments"} or None, "left": _rate, "longer": _rate,
     "criteria": [{"name", "pairs", "percent", "kappa"}], "calibration": {"pairs", "brier", "ece",
     "bins"}, "disagreements": [{"pair_id", "judge", "probability", "people"}]}"""
    project = judge.project
    people = human_labels(project) if people is None else people
    rows = list(
        JudgeVerdict.objects.filter(judge=judge).values_list(
            "pair_id", "label", "probability", "p_a", "p_b", "shown", "swapped", "inconsistent"
        )
    )
    readable = [r for r in rows if r[1]]
    lengths = {pk: (la, lb) for pk, la, lb in (
        Pair.objects.filter(pk__in=[r[0] for r in readable])
        .annotate(la=Length("response_a"), lb=Length("response_b")).values_list("pk", "la", "lb")
    )} if readable else {}  # fmt: skip
    inconsistent = sum(1 for r in readable if r[7])
    # Left: each order on its own, the answer shown first picked (column 0 of a raw row) against the
    # second (column 1); a tie picks no side.
    firsts = [int(np.argmax(row)) for r in readable for row in (r[5], r[6])]
    left = _rate(sum(1 for f in firsts if f == 0), sum(1 for f in firsts if f in (0, 1)))
    sided = [(r[0], r[1]) for r in readable if r[1] in ("a", "b") and lengths[r[0]][0] != lengths[r[0]][1]]
    longer_k = sum(1 for pk, label in sided if (label == "a") == (lengths[pk][0] > lengths[pk][1]))
    shared = [r for r in readable if people.get(r[0]) in judge_stats.LABELS]
    agree = judge_stats.agreement_with_majority(
        [r[1] for r in shared], [people[r[0]] for r in shared], n_boot=n_boot
    )
    decisive = [r for r in shared if people[r[0]] in ("a", "b") and (r[3] + r[4]) > 0]
    p_a = np.array([r[3] / (r[3] + r[4]) for r in decisive])
    a_won = np.array([1.0 if people[r[0]] == "a" else 0.0 for r in decisive])
    criteria = []
    for name, majority in criterion_majorities(project).items():
        both = [r for r in readable if majority.get(r[0]) is not None]
        result = judge_stats.agreement_with_majority(
            [r[1] for r in both], [majority[r[0]] for r in both], n_boot=n_boot
        )
        criteria.append({"name": name, "pairs": result["pairs"], "percent": result["percent"],
                         "kappa": result["kappa"]})  # fmt: skip
    wrong = sorted((r for r in shared if r[1] != people[r[0]]), key=lambda r: (-r[2], r[0]))
    return {
        "judged": len(rows),
        "unparseable": len(rows) - len(readable),
        "readable": len(readable),
        "inconsistent": inconsistent,
        "position_consistency": 1 - inconsistent / len(readable) if readable else None,
        "shared": len(shared),
        "agreement": agree,
        "people_agreement": _people_agreement(annotators),
        "left": left,
        "longer": _rate(longer_k, len(sided)),
        "criteria": criteria,
        "calibration": {
            "pairs": len(decisive),
            "brier": judge_stats.brier_score(p_a, a_won),
            "ece": judge_stats.expected_calibration_error(p_a, a_won),
            "bins": judge_stats.reliability_bins(p_a, a_won) if len(decisive) else [],
        },
        "disagreements": [
            {"pair_id": r[0], "judge": r[1], "probability": r[2], "people": people[r[0]]}
            for r in wrong[:DISAGREEMENTS]
        ],
    }


def _people_agreement(annotators: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The average annotator's leave-one-out agreement with the others' majority (each annotator with a
    scored judgment counts once), with how many annotators and judgments it rests on."""
    scored = [a for a in annotators or [] if a.get("agreement") is not None and not a.get("excluded")]
    if not scored:
        return None
    return {
        "mean": float(np.mean([a["agreement"] for a in scored])),
        "annotators": len(scored),
        "judgments": sum(a["agreement_n"] for a in scored),
    }


def judge_qualifies(calibration: Mapping[str, Any], *, min_kappa: float, min_shared: int) -> bool:
    """Whether a judge may fill pairs in an export: its kappa with people is at least `min_kappa` on at
    least `min_shared` pairs with a human consensus."""
    kappa = calibration["agreement"]["kappa"]["value"]
    return calibration["shared"] >= min_shared and kappa is not None and kappa >= min_kappa


def judge_agreement(judge: Judge) -> dict[str, Any]:
    """Only what the export rule needs of `judge_calibration`: {"shared", "agreement"} (no intervals), so
    that the export page's live preview does not gather lengths, criteria and disagreements each time."""
    people = human_labels(judge.project)
    rows = JudgeVerdict.objects.filter(judge=judge).exclude(label="").values_list("pair_id", "label")
    shared = [(label, people[pk]) for pk, label in rows if people.get(pk) in judge_stats.LABELS]
    agree = judge_stats.agreement_with_majority([j for j, _ in shared], [p for _, p in shared], n_boot=0)
    return {"shared": len(shared), "agreement": agree}


def export_fill(judge: Judge, *, min_kappa: float, min_shared: int, min_probability: float) -> Any:
    """The export rule letting `judge` fill the pairs people left unsettled (labeling.snapshots.
    JudgeFill), after checking the bar: its kappa with people's consensus at least `min_kappa` on at
    least `min_shared` shared pairs. ValueError, with the judge's numbers, when it falls short."""
    from labeling.snapshots import JudgeFill

    if judge.state != Judge.State.SUCCEEDED:
        raise ValueError(f"judge: “{judge.name}” has not finished ({judge.get_state_display().lower()})")
    numbers = judge_agreement(judge)
    kappa = numbers["agreement"]["kappa"]["value"]
    if not judge_qualifies(numbers, min_kappa=min_kappa, min_shared=min_shared):
        measured = "undefined" if kappa is None else f"{kappa:.2f}"
        raise ValueError(
            f"judge: “{judge.name}” has κ {measured} with people on {numbers['shared']} shared pairs; the "
            f"rule asks for at least {min_kappa:g} on at least {min_shared} pairs"
        )
    return JudgeFill(
        judge_id=judge.pk, name=judge.name, min_probability=min_probability, min_kappa=min_kappa,
        min_shared=min_shared, kappa=float(kappa), shared=numbers["shared"],
    )  # fmt: skip
