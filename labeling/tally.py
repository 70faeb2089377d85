"""Running counts of each annotator's finished assignments per project (models.Tally).

Every service that marks an assignment done or skipped counts it on its annotator's tally in the same
transaction: progress then costs one row however long the annotator's history grows. The services
lock the row first (`lock`); it is also the annotator's lock in the project (one annotator's tabs
take turns), so the values read under it are the row's until the transaction ends. `recount`
rebuilds tallies from the assignments.
"""

from __future__ import annotations

from datetime import date, datetime, time

from django.db import transaction
from django.db.models import Count, F, Q, QuerySet
from django.db.models.functions import Greatest
from django.utils import timezone

from labeling.models import Assignment, Tally

_DONE, _SKIPPED = Assignment.State.DONE, Assignment.State.SKIPPED


def lock(project_id: int, annotator_id: int, *, now: datetime) -> Tally:
    """The annotator's tally in the project, locked until the transaction ends (made when missing).
    Call it inside a transaction; taking it again in the same transaction does not wait."""
    row, _ = Tally.objects.select_for_update().get_or_create(
        project_id=project_id, annotator_id=annotator_id, defaults={"day": timezone.localdate(now)}
    )
    return row


def record(locked: Tally, *, judged: int = 0, skipped: int = 0, now: datetime) -> Tally:
    """Count `judged` done and `skipped` skipped assignments finished at `now` on a row this transaction
    has locked (`lock`); the row, updated. `judged_on_day` restarts when the day changes; work finished
    by a transaction that began before midnight, after a newer day was counted, leaves that day alone."""
    day = timezone.localdate(now)
    locked.judged += judged
    locked.skipped += skipped
    if locked.day == day:
        locked.judged_on_day += judged
    elif locked.day < day:
        locked.day, locked.judged_on_day = day, judged
    locked.save(update_fields=["judged", "skipped", "day", "judged_on_day"])
    return locked


def add(project_id: int, annotator_id: int, *, judged: int = 0, skipped: int = 0, now: datetime) -> Tally:
    """`record` on the annotator's row, locking it first; the tally after."""
    with transaction.atomic():
        return record(lock(project_id, annotator_id, now=now), judged=judged, skipped=skipped, now=now)


def read(project_id: int, annotator_id: int) -> Tally:
    """The annotator's tally in the project (zeros when they have finished nothing there yet)."""
    row = Tally.objects.filter(project_id=project_id, annotator_id=annotator_id).first()
    return row or Tally(day=date.min)


def judged_today(tally: Tally, now: datetime | None = None) -> int:
    """Assignments done on the local day of `now` (today when None)."""
    return tally.judged_on_day if tally.day == timezone.localdate(now) else 0


def forget(assignments: QuerySet[Assignment]) -> None:
    """Take `assignments` (a queryset about to be deleted) out of their annotators' tallies.

    `judged_on_day` is left as it is: it only ever shows one day's work.
    """
    finished = assignments.filter(state__in=[_DONE, _SKIPPED]).values("project_id", "annotator_id")
    done, skips = Count("id", filter=Q(state=_DONE)), Count("id", filter=Q(state=_SKIPPED))
    for row in finished.annotate(done=done, skips=skips).order_by("project_id", "annotator_id"):
        Tally.objects.filter(project_id=row["project_id"], annotator_id=row["annotator_id"]).update(
            judged=Greatest(F("judged") - row["done"], 0), skipped=Greatest(F("skipped") - row["skips"], 0)
        )


def recount(project_id: int, now: datetime | None = None) -> int:
    """Rebuild the project's tallies from its assignments; the number of annotators counted.

    For repairs and for data written around the workbench (fixtures, bulk loads): run it while nobody
    judges in the project, since work finished during the recount may be counted from the old rows.
    """
    now = now or timezone.now()
    today = timezone.localdate(now)
    midnight = timezone.make_aware(datetime.combine(today, time.min))
    finished = Assignment.objects.filter(project_id=project_id, state__in=[_DONE, _SKIPPED])
    counts = (
        finished.values("annotator_id")
        .order_by("annotator_id")
        .annotate(
            judged=Count("id", filter=Q(state=_DONE)),
            skipped=Count("id", filter=Q(state=_SKIPPED)),
            judged_on_day=Count("id", filter=Q(state=_DONE, finished_at__gte=midnight)),
        )
    )
    with transaction.atomic():
        Tally.objects.filter(project_id=project_id).update(judged=0, skipped=0, judged_on_day=0)
        Tally.objects.bulk_create(
            [Tally(project_id=project_id, day=today, **row) for row in counts],
            update_conflicts=True,
            unique_fields=["project", "annotator"],
            update_fields=["judged", "skipped", "day", "judged_on_day"],
            batch_size=5000,
        )
        return Tally.objects.filter(project_id=project_id).exclude(judged=0, skipped=0).count()
