"""Evaluation rounds end to end on the tiny models: held-out prompts only, an evaluation project with the
source's rubric and people, blind pairs that no export can take, results from people's judgments, the
leaderboard, the report command, and who may see what."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client

from evaluation import services
from evaluation.models import EvaluationRound
from generation import runner
from labeling import snapshots
from labeling.consensus import ConsensusRules
from labeling.models import Judgment, Membership, Pair, Project

pytestmark = pytest.mark.django_db(transaction=True)


def judge_all(round_: EvaluationRound, annotators, prefer: str) -> None:
    """Every annotator judges every pair of the round, preferring `prefer` (a model reference)."""
    for pair in services.round_pairs(round_):
        choice = "a" if pair.model_a == prefer else "b"
        for user in annotators:
            Judgment.objects.create(pair=pair, annotator=user, choice=choice)


def started(run, user, **kwargs) -> EvaluationRound:
    round_ = services.round_create(user=user, run=run, max_new_tokens=8, **kwargs)
    assert runner.execute(round_.generation_job.pk) == "succeeded", round_.generation_job.error
    round_.refresh_from_db()
    return round_


def test_a_round_on_a_run_uses_only_held_out_prompts_and_says_how_many(tuned_run, admin_user):
    folder = Path(settings.MEDIA_ROOT) / tuned_run.snapshot.directory
    train = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    with (folder / "eval.jsonl").open("a") as file:  # a prompt in both splits must not be evaluated on
        file.write(json.dumps(train[0]) + "\n")
    prompts, overlap = services.held_out_prompts(tuned_run)
    assert overlap == 1 and train[0]["prompt"] not in prompts and len(prompts) == 8
    round_ = services.round_create(user=admin_user, run=tuned_run, max_new_tokens=8)
    assert round_.model_refs == ["base:tiny", f"run:{tuned_run.pk}"]
    assert (
        round_.prompts_note.startswith("8 held-out eval prompts")
        and "1 that were also training" in round_.prompts_note
    )
    assert round_.generation_job.kind == "evaluation" and round_.generation_job.params["temperature"] == 0.0


def test_the_evaluation_project_copies_the_rubric_and_people_and_its_pairs_are_blind(
    project, tuned_run, admin_user, annotator, lead
):
    project.rubric, project.overlap = "Prefer **kind** answers.", 2
    project.criteria = [{"name": "kind", "question": "Which is kinder?"}]
    project.save()
    round_ = started(tuned_run, admin_user)
    evaluation = round_.project
    assert evaluation != project and evaluation.rubric == project.rubric and evaluation.overlap == 2
    assert set(evaluation.memberships.values_list("user__username", "role")) >= {
        ("ann", "annotator"),
        ("leah", "lead"),
        ("root", "lead"),
    }
    job = round_.generation_job
    assert job.batch.evaluation and job.pairs_made > 0
    pairs = Pair.objects.filter(batch=job.batch)
    assert {frozenset((p.model_a, p.model_b)) for p in pairs} == {frozenset(round_.model_refs)}
    # Sides are randomized (and the workbench randomizes left and right again per assignment).
    assert len({p.model_a for p in pairs}) == 2 or pairs.count() < 4
    client = Client()
    client.force_login(annotator)
    page = client.get(f"/projects/{evaluation.slug}/label/").content.decode()
    assert "run:" not in page and "base:tiny" not in page


def test_evaluation_pairs_never_reach_a_training_export(project, tuned_run, admin_user, annotator):
    round_ = started(tuned_run, admin_user, project=project)  # judged in the source project itself
    judge_all(round_, [annotator], prefer=f"run:{tuned_run.pk}")
    relaxed = ConsensusRules(
        min_judgments=1, min_share=0.0, drop_ties=False, drop_both_bad=False, drop_gold=False
    )
    evaluation = round_.generation_job.pairs_made
    preview = snapshots.export_preview(project, rules=relaxed, shape="standard", fmt="jsonl")
    assert preview.dropped["evaluation"] == evaluation
    snapshot = snapshots.snapshot_start(
        project=project,
        user=admin_user,
        rules=relaxed,
        shape="standard",
        fmt="jsonl",
        eval_fraction=0.0,
        in_worker=False,
    )
    assert snapshot.state == "done" and snapshot.dropped["evaluation"] == evaluation
    exported = (Path(settings.MEDIA_ROOT) / snapshot.directory / "train.jsonl").read_text()
    for pair in services.round_pairs(round_):
        assert pair.response_a not in exported or pair.response_a in ("",)
    client = Client()
    client.force_login(admin_user)
    Membership.objects.get_or_create(project=project, user=admin_user, defaults={"role": "lead"})
    page = client.get(f"/projects/{project.slug}/export/").content.decode()
    assert "Blind evaluation pair: never in a training export" in page


def test_results_people_prefer_the_tuned_model(project, tuned_run, admin_user, make_user):
    round_ = started(tuned_run, admin_user)
    people = [make_user(f"p{i}", "annotator") for i in range(3)]
    judge_all(round_, people, prefer=f"run:{tuned_run.pk}")
    results = services.round_results(round_)
    rate = results["win_rate"]
    assert (
        rate.rate == 1.0
        and rate.prompts == round_.generation_job.pairs_made
        and rate.judgments == 3 * rate.prompts
    )
    assert results["sentence"].startswith(f"run {tuned_run.pk} (tuned) preferred on 100% of prompts")
    assert results["alpha"] is None or results["alpha"] >= 0.99  # unanimous
    client = Client()
    client.force_login(admin_user)
    page = client.get(tuned_run.get_absolute_url()).content.decode()
    assert "People&#x27;s verdict" in page or "People's verdict" in page
    assert results["sentence"].replace("'", "&#x27;") in page or results["sentence"] in page


def test_ties_count_half_and_the_leaderboard_and_report_agree(
    project, tuned_run, admin_user, make_user, capsys
):
    round_ = started(tuned_run, admin_user)
    people = [make_user(f"p{i}", "annotator") for i in range(2)]
    for pair in services.round_pairs(round_):
        Judgment.objects.create(pair=pair, annotator=people[0], choice="tie")
        Judgment.objects.create(
            pair=pair, annotator=people[1], choice="a" if pair.model_a == "base:tiny" else "b"
        )
    rate = services.round_results(round_)["win_rate"]
    assert rate.rate == pytest.approx(0.25)  # a tie (0.5) and a loss (0) per prompt
    Membership.objects.get_or_create(project=round_.project, user=admin_user, defaults={"role": "lead"})
    client = Client()
    client.force_login(admin_user)
    board = client.get(f"/evaluation/projects/{round_.project.slug}/leaderboard/").content.decode()
    assert board.index("base:tiny") < board.index(f"run:{tuned_run.pk}")  # the base ranks first
    styled = client.get(f"/evaluation/projects/{round_.project.slug}/leaderboard/?style=1")
    assert styled.status_code == 200 and "Style control" in styled.content.decode()
    call_command("eval_report", round_.project.slug, "--json")
    report = json.loads(capsys.readouterr().out)
    assert report["rounds"][0]["win_rate"]["rate"] == pytest.approx(0.25)
    call_command("eval_report", round_.project.slug)
    assert "preferred on 25% of prompts" in capsys.readouterr().out or "25%" in capsys.readouterr().out


def test_who_may_see_and_start_evaluations(project, other_project, tuned_run, admin_user, annotator, lead):
    round_ = started(tuned_run, admin_user, project=other_project)
    ann, leader = Client(), Client()
    ann.force_login(annotator)
    leader.force_login(lead)
    assert ann.get("/evaluation/").status_code == 403
    assert leader.get("/evaluation/").status_code == 200
    assert leader.get(round_.get_absolute_url()).status_code == 404  # not a lead of that project
    assert leader.get(f"/evaluation/new/?run={tuned_run.pk}").status_code == 403
    assert leader.get(f"/evaluation/projects/{other_project.slug}/leaderboard/").status_code == 404
    Project.objects.filter(pk=other_project.pk)  # unchanged
