"""The export rule "fill pairs without a human consensus with this judge's label": people's labels first,
judge rows marked in meta and counted in the snapshot, the κ/N bar refused with the judge's numbers,
the probability threshold, and the export page."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.conf import settings
from django.urls import reverse

from evaluation.calibration import export_fill
from evaluation.models import Judge
from labeling import snapshots
from labeling.models import Adjudication, ExportSnapshot
from tests.evaluation.test_judges import people_choose, verdict
from tests.labeling.test_assignment import make_pairs

pytestmark = pytest.mark.django_db(transaction=True)

# (people's votes, the judge's label, its probability) per pair. Pairs 0-7 have a consensus of people
# (the judge agrees on seven, not on pair 0); 8 is split, 9 has one vote, 10 none, 11 none (a tie), 12 none
# (too unsure), 13 is split but a lead settled it.
PLAN = [
    (["a", "a"], "b", 0.99), (["b", "b"], "b", 0.9), (["a", "a"], "a", 0.9), (["b", "b"], "b", 0.8),
    (["a", "a"], "a", 0.85), (["b", "b"], "b", 0.95), (["a", "a"], "a", 0.7), (["b", "b"], "b", 0.9),
    (["a", "b"], "b", 0.9), (["a"], "a", 0.85), ([], "b", 0.81), ([], "tie", 0.95), ([], "a", 0.6),
    (["a", "b"], "b", 0.99),
]  # fmt: skip


def probabilities(label: str, p: float) -> list[float]:
    rest = (1 - p) / 2
    return [p if label == x else rest for x in ("a", "b", "tie")]


@pytest.fixture
def judged(project, make_user):
    project.overlap = 2
    project.save()
    pairs = make_pairs(project, len(PLAN))
    people_choose(project, pairs, [votes or [] for votes, _, _ in PLAN], make_user)
    Adjudication.objects.create(pair=pairs[13], label="a")
    judge = Judge.objects.create(
        project=project, name="tiny judge", model_ref="base:tiny", template="t", state="succeeded"
    )
    for pair, (_, label, p) in zip(pairs, PLAN, strict=True):
        shown = probabilities(label, p)
        verdict(judge, pair, shown, [shown[1], shown[0], shown[2]])  # the same verdict in both orders
    return pairs, judge


def rows(snapshot: ExportSnapshot) -> dict[str, dict]:
    path = Path(settings.MEDIA_ROOT) / snapshot.directory / "train.jsonl"
    return {row["id"]: row for row in map(json.loads, path.read_text().splitlines())}


def test_the_judge_fills_only_what_people_left_unsettled_and_marks_its_rows(project, judged):
    pairs, judge = judged
    fill = export_fill(judge, min_kappa=0.5, min_shared=8, min_probability=0.8)
    assert fill.shared == 9 and fill.kappa > 0.5  # pairs 0-7 and the adjudicated 13
    rules = snapshots.rules_for(project)
    snapshot = snapshots.snapshot_start(
        project=project, user=None, rules=rules, shape="standard", fmt="jsonl", eval_fraction=0.0,
        in_worker=False, fill=fill,
    )  # fmt: skip
    assert snapshot.state == "done", snapshot.message
    got = rows(snapshot)
    ids = {f"pair-{p.pk}": i for i, p in enumerate(pairs)}
    by_index = {ids[key]: row for key, row in got.items()}
    # people's labels first: pair 0 keeps people's A though the judge is sure of B; 13 the lead's label
    assert by_index[0]["chosen"] == "A0" and by_index[0]["meta"]["source"] == "people"
    assert by_index[13]["chosen"] == pairs[13].response_a and by_index[13]["meta"]["judge"] == {}
    # filled: 8 (split), 9 (too few), 10 (no votes); not 11 (a tie, dropped), not 12 (p 0.6 < 0.8)
    filled = sorted(i for i, row in by_index.items() if row["meta"]["source"] == "judge")
    assert filled == [8, 9, 10]
    assert by_index[8]["chosen"] == "B8" and by_index[8]["meta"]["judge"] == {
        "name": "tiny judge",
        "probability": 0.9,
    }
    assert by_index[8]["meta"]["votes"] == {"a": 1, "b": 1, "tie": 0, "both_bad": 0}  # people's votes, kept
    assert sorted(by_index) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13]
    assert snapshot.judge_rows == 3 and snapshot.kept == 12
    assert snapshot.dropped == {"tie": 1, "too_few_votes": 1}
    assert dict(snapshots.rules_in_words(snapshot))["Unsettled pairs"].startswith("filled by the AI judge")
    preview = snapshots.export_preview(project, rules=rules, shape="standard", fill=fill)
    assert (preview.kept, preview.judge_rows) == (12, 3)


def test_people_only_is_the_default_and_its_rows_are_unchanged(project, judged):
    snapshot = snapshots.snapshot_start(
        project=project, user=None, rules=snapshots.rules_for(project), shape="standard", fmt="jsonl",
        eval_fraction=0.0, in_worker=False,
    )  # fmt: skip
    got = rows(snapshot)
    assert len(got) == 9 and snapshot.judge_rows == 0
    assert all("source" not in row["meta"] and "judge" not in row["meta"] for row in got.values())


def test_a_judge_below_the_bar_is_refused_with_its_numbers(judged):
    _, judge = judged
    numbers = r"κ 0\.\d\d with people on 9 shared pairs; the rule asks for at least 0\.5 on at least 20 pairs"
    with pytest.raises(ValueError, match=numbers):
        export_fill(judge, min_kappa=0.5, min_shared=20, min_probability=0.8)
    with pytest.raises(ValueError, match="at least 0.95 on at least 5"):
        export_fill(judge, min_kappa=0.95, min_shared=5, min_probability=0.8)


def test_parquet_files_carry_the_judge_columns(project, judged):
    _, judge = judged
    fill = export_fill(judge, min_kappa=0.5, min_shared=8, min_probability=0.8)
    snapshot = snapshots.snapshot_start(
        project=project, user=None, rules=snapshots.rules_for(project), shape="conversational",
        fmt="parquet", eval_fraction=0.0, in_worker=False, fill=fill,
    )  # fmt: skip
    assert snapshot.state == "done", snapshot.message
    table = pq.read_table(Path(settings.MEDIA_ROOT) / snapshot.directory / "train.parquet")
    meta = table.column("meta").to_pylist()
    assert sum(1 for m in meta if m["source"] == "judge") == 3 == snapshot.judge_rows


def test_the_export_page_offers_the_rule_and_the_snapshot_says_so(client, project, lead, judged):
    _, judge = judged
    client.force_login(lead)
    page = client.get(reverse("labeling:export", args=[project.slug])).content.decode()
    assert "tiny judge" in page and "People only" in page
    data = {
        "min_judgments": 2, "min_share": "2/3", "method": "majority", "min_posterior": 0.8,
        "adjudication_overrides": "on", "shape": "standard", "format": "jsonl", "eval_fraction": 0,
        "include_metadata": "on", "judge": judge.pk, "judge_min_kappa": 0.5, "judge_min_shared": 8,
        "judge_min_probability": 0.8,
    }  # fmt: skip
    preview = client.post(
        reverse("labeling:export-create", args=[project.slug]), {**data, "action": "preview"}
    )
    assert "3 filled by the AI judge" in preview.content.decode()
    refused = client.post(
        reverse("labeling:export-create", args=[project.slug]), {**data, "judge_min_shared": 50}
    )
    assert refused.status_code == 400 and "on at least 50 pairs" in refused.content.decode()
    assert not ExportSnapshot.objects.exists()
    response = client.post(reverse("labeling:export-create", args=[project.slug]), data)
    snapshot = ExportSnapshot.objects.get()
    assert response.status_code == 302 and snapshot.judge_rows == 3
    detail = client.get(snapshot.get_absolute_url()).content.decode()
    assert "filled by the AI judge “tiny judge”" in detail and "3 pairs labelled by the AI judge" in detail
