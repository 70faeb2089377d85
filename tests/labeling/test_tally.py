"""Tallies: every way an assignment is finished is counted once, days roll over, recounts agree."""

from __future__ import annotations

import random
from datetime import timedelta
from importlib import import_module
from io import StringIO

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from labeling import judging, tally
from labeling.assignment import claim_next_pair, expire_leases, skip_pair
from labeling.batches import batch_delete
from labeling.judging import JudgmentRefused, Verdict, submit_and_claim_next
from labeling.models import Assignment, Pair, Tally
from tests.labeling.test_assignment import annotators, judge, make_pairs

pytestmark = pytest.mark.django_db


def truth(project, user) -> tuple[int, int]:
    """(judged, skipped) counted from the assignments themselves."""
    mine = Assignment.objects.filter(project=project, annotator=user)
    return mine.filter(state="done").count(), mine.filter(state="skipped").count()


def counted(project, user) -> tuple[int, int]:
    kept = tally.read(project.pk, user.pk)
    return kept.judged, kept.skipped


def submit_and_next(lease: Assignment, choice: str = "left"):
    return submit_and_claim_next(
        assignment_id=lease.pk, annotator=lease.annotator, project=lease.project, verdict=Verdict(choice)
    )


def test_every_way_of_finishing_work_is_counted_once(project, make_user, monkeypatch):
    project.gold_rate = 0.5
    project.save()
    make_pairs(project, 8)
    make_pairs(project, 2, gold="a")
    user, other = annotators(make_user, project, 2)
    monkeypatch.setattr(random, "random", lambda: 0.9)  # regular turns
    first = claim_next_pair(project, user)
    turn = submit_and_next(first)  # the judge request: counted inside the claim of the next pair
    assert counted(project, user) == truth(project, user) == (1, 0)
    if connection.vendor == "postgresql":  # the claim statement returned the tally with the judgment
        assert (turn.counted.judged, turn.counted.skipped) == (1, 0)
    assert submit_and_next(first).upcoming == turn.upcoming  # a retried POST counts nothing
    assert counted(project, user) == (1, 0)

    monkeypatch.setattr(random, "random", lambda: 0.0)  # a gold turn: no claim carries the writes
    gold_turn = submit_and_next(turn.upcoming)
    assert gold_turn.upcoming.is_gold and counted(project, user) == (2, 0)
    judge(gold_turn.upcoming)  # the plain form post
    assert counted(project, user) == (3, 0)

    monkeypatch.setattr(random, "random", lambda: 0.9)
    skipped = claim_next_pair(project, user)
    skip_pair(assignment=skipped, reason="broken")
    skip_pair(assignment=skipped, reason="broken")  # twice: counted once
    with pytest.raises(JudgmentRefused):
        judge(skipped)
    assert counted(project, user) == (3, 1)

    late = claim_next_pair(project, user)  # a lease that ran out, judged after the sweep: reclaimed
    Assignment.objects.filter(pk=late.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert expire_leases(project) == 1
    judge(late)
    assert counted(project, user) == truth(project, user) == (4, 1)
    assert counted(project, other) == (0, 0)
    progress = judging.progress(project, user, has_lease=False)
    assert (progress.total, progress.today) == (4, 4)


def test_the_day_count_restarts_each_day_and_keeps_the_newer_day(project, make_user):
    (user,) = annotators(make_user, project, 1)
    now = timezone.now()
    yesterday, tomorrow = now - timedelta(days=1), now + timedelta(days=1)
    for _ in range(2):
        tally.add(project.pk, user.pk, judged=1, now=yesterday)
    kept = tally.read(project.pk, user.pk)
    assert (tally.judged_today(kept, yesterday), tally.judged_today(kept, now)) == (2, 0)
    tally.add(project.pk, user.pk, judged=1, now=now)
    tally.add(project.pk, user.pk, judged=1, now=yesterday)  # begun before midnight, committed after
    kept = tally.read(project.pk, user.pk)
    assert (kept.judged, kept.day, tally.judged_today(kept, now)) == (4, timezone.localdate(now), 1)
    kept = tally.add(project.pk, user.pk, skipped=1, now=tomorrow)
    assert (kept.judged, kept.skipped, tally.judged_today(kept, tomorrow)) == (4, 1, 0)


def finish_some_work(project, user, *, judged: int, skipped: int) -> None:
    for _ in range(judged):
        judge(claim_next_pair(project, user))
    for _ in range(skipped):
        skip_pair(assignment=claim_next_pair(project, user), reason="cant_judge")


def test_recount_rebuilds_the_tallies_from_the_assignments(project, make_user):
    make_pairs(project, 5)
    user, idle = annotators(make_user, project, 2)
    finish_some_work(project, user, judged=3, skipped=1)
    Tally.objects.filter(annotator=user).update(judged=99, skipped=99, judged_on_day=99)
    Tally.objects.create(project=project, annotator=idle, judged=7, day=timezone.localdate())
    assert tally.recount(project.pk) == 1
    assert counted(project, user) == truth(project, user) == (3, 1)
    assert tally.judged_today(tally.read(project.pk, user.pk)) == 3
    assert counted(project, idle) == (0, 0)


def test_the_migration_counts_the_work_finished_before_it(project, make_user):
    make_pairs(project, 5)
    (user,) = annotators(make_user, project, 1)
    finish_some_work(project, user, judged=2, skipped=1)
    Tally.objects.all().delete()
    import_module("labeling.migrations.0005_tally").count_finished_work(apps, None)
    assert counted(project, user) == (2, 1)
    assert tally.judged_today(tally.read(project.pk, user.pk)) == 2


def test_deleting_a_batch_takes_its_skipped_pairs_out_of_the_tally(project, make_user):
    (kept,), (dropped,) = make_pairs(project, 1), make_pairs(project, 1)
    (user,) = annotators(make_user, project, 1)
    finish_some_work(project, user, judged=1, skipped=1)  # the older pair is claimed first
    assert Assignment.objects.get(pair=dropped).state == "skipped" and counted(project, user) == (1, 1)
    batch_delete(dropped.batch)
    assert not Pair.objects.filter(pk=dropped.pk).exists() and Pair.objects.filter(pk=kept.pk).exists()
    assert counted(project, user) == truth(project, user) == (1, 0)


def test_progress_reads_one_row_however_long_the_history(project, make_user):
    make_pairs(project, 30)
    (user,) = annotators(make_user, project, 1)
    finish_some_work(project, user, judged=25, skipped=2)
    judging.progress(project, user, has_lease=False)  # "left" is counted now and kept for a while
    with CaptureQueriesContext(connection) as queries:
        progress = judging.progress(project, user, has_lease=False)
    assert (progress.today, progress.total, progress.left) == (25, 25, 3)
    assert len(queries) == 1 and 'FROM "labeling_tally"' in queries[0]["sql"]


def test_the_recount_command(project, make_user):
    make_pairs(project, 3)
    (user,) = annotators(make_user, project, 1)
    finish_some_work(project, user, judged=2, skipped=0)
    Tally.objects.update(judged=0)
    out = StringIO()
    call_command("recount_tallies", project.slug, stdout=out)
    assert out.getvalue() == f"{project.slug}: 1 annotator(s) with finished work.\n"
    assert counted(project, user) == (2, 0)
    with pytest.raises(CommandError, match="No project with slug: nope"):
        call_command("recount_tallies", project.slug, "nope")
