"""seed_demo creates the demo users and project, and running it again changes nothing."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from labeling.management.commands.seed_demo import DEMO_FILES
from labeling.models import ImportBatch, Judgment, Membership, Pair, Project
from labeling.review import review_report


def seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", "--allow-production", stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_seed_is_idempotent_and_prints_the_logins():
    first = seed()
    models = (get_user_model(), Project, Membership, Pair, ImportBatch, Judgment)
    counts = [m.objects.count() for m in models]
    second = seed()
    # 5 demo logins and 5 simulated annotators; the simulated judgments are added once.
    pairs = DEMO_FILES[1].read_text().count("\n") + 40
    assert counts == [m.objects.count() for m in models] == [10, 1, 9, pairs, 2, counts[-1]]
    assert counts[-1] > 3 * (pairs - 40 - 10)  # the concise pairs, but for 10 left open, are judged
    assert "Demo pairs (demo_pairs.jsonl): 40 pairs imported from 40 records." in first
    assert "Demo pairs (demo_pairs.jsonl): 0 pairs imported from 40 records, 40 duplicates skipped." in second
    assert "Demo pairs (concise_pairs.jsonl): 0 pairs imported" in second
    for name in ["admin", "lead", "annotator1", "annotator2", "annotator3"]:
        assert name in first
    assert "password: prefstudio-demo" in first


@pytest.mark.django_db
def test_seeded_roles():
    seed()
    users = {u.username: u for u in get_user_model().objects.all()}
    assert users["admin"].is_superuser and users["admin"].is_staff
    assert users["lead"].has_perm("labeling.review_project") and not users["lead"].is_staff
    assert users["annotator1"].has_perm("labeling.label_pairs")
    assert not users["annotator1"].has_perm("labeling.review_project")
    assert users["annotator2"].check_password("prefstudio-demo")
    demo = Project.objects.get(slug="demo")
    assert demo.memberships.filter(role="annotator", user__username__startswith="annotator").count() == 3
    assert demo.pairs.filter(prompt__0__role__isnull=False).count() >= 5  # chat prompts
    assert demo.pairs.exclude(gold="").count() >= 5
    assert demo.criteria and demo.rubric


@pytest.mark.django_db
def test_refuses_on_a_production_instance(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG is off"):
        call_command("seed_demo")


@pytest.mark.django_db
def test_simulated_judgments_give_review_real_numbers_and_leave_pairs_to_judge():
    seed()
    demo = Project.objects.get(slug="demo")
    assert "simulated" in demo.description
    simulated = get_user_model().objects.filter(username__startswith="sim-")
    assert not any(u.has_usable_password() for u in simulated)  # nobody signs in as them
    report = review_report(demo)
    headline = report["headline"]["without_excluded"]
    assert headline["complete_pairs"] >= 20 and headline["alpha"]["value"] is not None
    assert report["disagreements"]["total"] > 0  # some honest disagreement
    names = dict(simulated.values_list("pk", "username"))
    flagged = [names[row["rater"]] for row in report["annotators"] if row["position_bias"]]
    assert flagged == ["sim-eve"]
    open_pairs = demo.pairs.filter(gold="", taken__lt=demo.overlap).count()
    assert open_pairs >= 20  # left for annotator1..3: curated pairs and concise ones


@pytest.mark.django_db
def test_the_demo_snapshot_prefers_the_direct_answers():
    """The concise pairs' consensus picks the hand-written direct answer over the demo model's own, but for
    the few the simulated annotators got wrong (noise the snapshot measures and the run form smooths)."""
    import json
    from pathlib import Path

    from django.conf import settings

    from labeling.models import ExportSnapshot

    seed()
    snapshot = ExportSnapshot.objects.get(project__slug="demo")
    written = {r["id"]: r for r in map(json.loads, DEMO_FILES[1].read_text().splitlines())}
    folder = Path(settings.MEDIA_ROOT) / snapshot.directory
    rows = [
        json.loads(line) for f in snapshot.files for line in (folder / f["name"]).read_text().splitlines()
    ]
    concise = [r for r in rows if r["id"] in written]
    agree = sum(r["chosen"][0]["content"] == written[r["id"]]["chosen"] for r in concise)
    assert len(concise) > 150 and agree / len(concise) > 0.9
    assert 0 < snapshot.suggested_label_smoothing < 0.15
