"""Running counts of each annotator's finished assignments per project (models.Tally).

Every statement that marks an assignment done or skipped adds to its annotator's tally in the same
transaction (on PostgreSQL often in the same statement, as a WITH clause): progress then costs one
row however long the annotator's history grows. `recount` rebuilds tallies from the assignments.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

from django.db import transaction
from django.db.models import Count, F, Q
from django.db.models.functions import Greatest
from django.utils import timezone

from labeling.models import Assignment, Tally
from prefstudio import sql

FIELDS = ("judged", "skipped", "day", "judged_on_day")
_T, _A = Tally._meta.db_table, Assignment._meta.db_table
_DONE, _SKIPPED = Assignment.State.DONE.value, Assignment.State.SKIPPED.value

# Adds `judged` and `skipped` to the row. `judged_on_day` restarts when the day changes; a transaction
# that began before midnight and commits after a later one leaves the newer day's count alone.
_ADD = (
    f"INSERT INTO {_T} (project_id, annotator_id, judged, skipped, day, judged_on_day) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (project_id, annotator_id) DO UPDATE SET "
    f"judged = {_T}.judged + excluded.judged, skipped = {_T}.skipped + excluded.skipped, "
    f"judged_on_day = CASE WHEN {_T}.day = excluded.day THEN {_T}.judged_on_day + excluded.judged_on_day "
    f"WHEN {_T}.day > excluded.day THEN {_T}.judged_on_day ELSE excluded.judged_on_day END, "
    f"day = CASE WHEN {_T}.day > excluded.day THEN {_T}.day ELSE excluded.day END"
)
ADD_RETURNING = f"{_ADD} RETURNING {', '.join(FIELDS)}"
_READ = f"SELECT {', '.join(FIELDS)} FROM {_T} WHERE project_id = %s AND annotator_id = %s"
_RECOUNT = (
    f"INSERT INTO {_T} (project_id, annotator_id, judged, skipped, day, judged_on_day) "
    f"SELECT project_id, annotator_id, SUM(CASE WHEN state = '{_DONE}' THEN 1 ELSE 0 END), "
    f"SUM(CASE WHEN state = '{_SKIPPED}' THEN 1 ELSE 0 END), %s, "
    f"SUM(CASE WHEN state = '{_DONE}' AND finished_at >= %s THEN 1 ELSE 0 END) "
    f"FROM {_A} WHERE project_id = %s AND state IN ('{_DONE}', '{_SKIPPED}') "
    "GROUP BY project_id, annotator_id "
    "ON CONFLICT (project_id, annotator_id) DO UPDATE SET judged = excluded.judged, "
    "skipped = excluded.skipped, day = excluded.day, judged_on_day = excluded.judged_on_day"
)


def add_params(
    project_id: int, annotator_id: int, *, judged: int = 0, skipped: int = 0, now: datetime
) -> list[Any]:
    """The parameters of `ADD_RETURNING` (for a caller that sends it inside another statement)."""
    day = sql.param(Tally, "day", timezone.localdate(now))
    return [project_id, annotator_id, judged, skipped, day, judged]


def add(project_id: int, annotator_id: int, *, judged: int = 0, skipped: int = 0, now: datetime) -> Tally:
    """Count `judged` done and `skipped` skipped assignments finished at `now`; the tally after."""
    params = add_params(project_id, annotator_id, judged=judged, skipped=skipped, now=now)
    return load(sql.fetchone(ADD_RETURNING, params))


def load(values: tuple) -> Tally:
    """A tally from the values of `FIELDS` as a statement returned them."""
    return sql.load(Tally, FIELDS, values)


def read(project_id: int, annotator_id: int) -> Tally:
    """The annotator's tally in the project (zeros when they have finished nothing there yet)."""
    row = sql.fetchone(_READ, [project_id, annotator_id])
    return load(row) if row else Tally(day=date.min)


def judged_today(tally: Tally, now: datetime | None = None) -> int:
    """Assignments done on the local day of `now` (today when None)."""
    return tally.judged_on_day if tally.day == timezone.localdate(now) else 0


def forget(assignments: Any) -> None:
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
    with transaction.atomic():
        Tally.objects.filter(project_id=project_id).update(judged=0, skipped=0, judged_on_day=0)
        params = [sql.param(Tally, "day", today), sql.param(Assignment, "finished_at", midnight), project_id]
        sql.execute(_RECOUNT, params)
        return Tally.objects.filter(project_id=project_id).exclude(judged=0, skipped=0).count()
