"""Recording judgments: submit once per pair and annotator, change while allowed, progress counts.

Annotators choose by position (left / right); `a_on_left` of their assignment maps that back to
the pair's A and B, so the stored choice is about the responses, whatever side they were shown on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from labeling import tally
from labeling.assignment import next_assignment_locked
from labeling.models import Assignment, Choice, Judgment, Pair, Project, Tally
from prefstudio import sql

SIDES = ("left", "right")


class JudgmentRefused(Exception):
    """The judgment cannot be stored (the lease went to someone else, or the pair was skipped)."""


def to_pair_choice(position: str, a_on_left: bool) -> str:
    """'left' / 'right' as shown -> 'a' / 'b' of the pair; 'tie' and 'both_bad' pass through."""
    if position not in SIDES:
        return position
    return Choice.A if (position == "left") == a_on_left else Choice.B


def to_position(choice: str, a_on_left: bool) -> str:
    """The inverse of `to_pair_choice`: where the chosen response was shown."""
    if choice not in (Choice.A, Choice.B):
        return choice
    return "left" if (choice == Choice.A) == a_on_left else "right"


@dataclass(frozen=True)
class Verdict:
    """What an annotator said, in positions as they saw them."""

    choice: str
    strength: str = ""
    criteria: dict[str, str] | None = None
    rationale: str = ""
    active_seconds: float | None = None

    def for_pair(self, a_on_left: bool) -> dict[str, Any]:
        return {
            "choice": to_pair_choice(self.choice, a_on_left),
            "strength": self.strength if self.choice in SIDES else "",
            "criteria": {k: to_pair_choice(v, a_on_left) for k, v in (self.criteria or {}).items()},
            "rationale": self.rationale,
        }


_LOCKED_FIELDS = ("pair_id", "state", "a_on_left", "is_gold", "leased_at", "expires_at")
_LOCK_ASSIGNMENT = (
    f"SELECT {sql.columns(Assignment, _LOCKED_FIELDS)} FROM {Assignment._meta.db_table} "
    "WHERE id = %s AND annotator_id = %s AND project_id = %s"
)
# PostgreSQL, inside judgment_submit_and_next: the per-user lock, then the assignment's, in one statement.
_LOCK_USER_AND_ASSIGNMENT = (
    f"SELECT {sql.columns(Assignment, _LOCKED_FIELDS, 'a')} "
    f"FROM (SELECT pg_advisory_xact_lock(%s, %s)) AS u, {Assignment._meta.db_table} a "
    "WHERE a.id = %s AND a.annotator_id = %s AND a.project_id = %s FOR NO KEY UPDATE OF a"
)
_RECLAIM = f"UPDATE {Pair._meta.db_table} SET taken = taken + 1 WHERE id = %s AND taken < %s + extra_wanted"
_FINISH = (
    f"UPDATE {Assignment._meta.db_table} SET state = '{Assignment.State.DONE.value}', finished_at = %s "
    "WHERE id = %s"
)


def judgment_submit(
    *, assignment_id: int, annotator: Any, project: Project, verdict: Verdict
) -> tuple[Judgment, bool]:
    """Store the annotator's judgment for their assignment; (judgment, created).

    Idempotent: a double click, a retried POST or a second tab returns the stored judgment.
    Raises Assignment.DoesNotExist when the assignment is not this annotator's in this project.
    """
    with transaction.atomic():
        submission = _submit(
            assignment_id=assignment_id, annotator=annotator, project=project, verdict=verdict
        )
        return submission.settle()


@dataclass
class _Submission:
    """A judgment being stored: on PostgreSQL `rider` may hold its writes until a later statement of
    the transaction carries them; `settle` finishes either way. `counted`: the annotator's tally after
    this judgment, where the statement that counted it returned it."""

    judgment: Judgment
    created: bool
    was_live_lease: bool  # the assignment was the annotator's live lease until now
    rider: sql.Rider | None = None
    counted: Tally | None = None

    def settle(self) -> tuple[Judgment, bool]:
        """(judgment, created), once its writes are sent."""
        if self.rider is not None:
            judgment_id, *counted = self.rider.send()
            self.counted = tally.load(counted)
            if judgment_id is None:  # stored before, from elsewhere
                self.judgment = Judgment.objects.get(
                    pair_id=self.judgment.pair_id, annotator_id=self.judgment.annotator_id
                )
            else:
                self.judgment.pk, self.judgment._state.adding, self.created = judgment_id, False, True
            self.rider = None
        return self.judgment, self.created


def _submit(
    *,
    assignment_id: int,
    annotator: Any,
    project: Project,
    verdict: Verdict,
    now: Any = None,
    lock_user_first: bool = False,
    ride: bool = False,
) -> _Submission:
    """Lock the assignment and store the judgment; refusals raise before anything is written.

    `lock_user_first`: take `lock_user` before the assignment's row lock (the order next_assignment uses).
    `ride` (PostgreSQL, the assignment is the live lease): leave the writes to a rider.
    """
    now = now or timezone.now()
    # The hot path of the workbench: statements written out (prefstudio/sql.py), portable but for
    # PostgreSQL's locks, and on PostgreSQL folded together where that saves a round trip.
    postgres = sql.is_postgres()
    if postgres and lock_user_first:
        row = sql.fetchone(
            _LOCK_USER_AND_ASSIGNMENT, [project.pk, annotator.pk, assignment_id, annotator.pk, project.pk]
        )
    else:  # SQLite has no row or advisory locks: its writers are serialized anyway
        lock = " FOR NO KEY UPDATE" if postgres else ""
        row = sql.fetchone(_LOCK_ASSIGNMENT + lock, [assignment_id, annotator.pk, project.pk])
    if row is None:
        raise Assignment.DoesNotExist
    locked = sql.load(Assignment, _LOCKED_FIELDS, row)
    if locked.state == Assignment.State.DONE:
        judgment = Judgment.objects.get(pair_id=locked.pair_id, annotator_id=annotator.pk)
        return _Submission(judgment, created=False, was_live_lease=False)
    if locked.state == Assignment.State.SKIPPED:
        raise JudgmentRefused("You skipped this pair.")
    # A lease that ran out gave its slot back to the pool: take it again if still free.
    expired = locked.state == Assignment.State.EXPIRED and not locked.is_gold
    if expired and not sql.execute(_RECLAIM, [locked.pair_id, project.overlap]):
        raise JudgmentRefused("Your lease on this pair expired and it went to someone else.")
    # Under the assignment's lock nobody else can judge this (pair, annotator) through the
    # workbench; an existing judgment can only come from elsewhere (admin, an older import).
    judgment = Judgment(
        pair_id=locked.pair_id,
        annotator_id=annotator.pk,
        assignment_id=assignment_id,
        a_on_left=locked.a_on_left,
        is_gold=locked.is_gold,
        seconds_spent=(now - locked.leased_at).total_seconds(),
        active_seconds=verdict.active_seconds,
        created_at=now,
        updated_at=now,
        **verdict.for_pair(locked.a_on_left),
    )
    live = locked.state == Assignment.State.LEASED and locked.expires_at > now
    finish = [sql.param(Assignment, "finished_at", now), assignment_id]
    count = tally.add_params(project.pk, annotator.pk, judged=1, now=now)
    if postgres and ride and live:
        # Marking the assignment done, storing the judgment and counting it ride in the claim of the
        # next pair. Only for a live lease: the lease sweep that may run first leaves it alone (it
        # expires leases older than the same `now`).
        insert, params = sql.insert_statement(
            Judgment, sql.new_values(judgment), on_conflict=("pair_id", "annotator_id")
        )
        rider = sql.Rider(
            f"finished AS ({_FINISH}), judgment AS ({insert} RETURNING id), "
            f"counted AS ({tally.ADD_RETURNING})",
            [*finish, *params, *count],
            select=["(SELECT id FROM judgment)", *(f"(SELECT {f} FROM counted)" for f in tally.FIELDS)],
        )
        return _Submission(judgment, created=False, was_live_lease=True, rider=rider)
    # On PostgreSQL the assignment is marked done and counted by the statement that stores the judgment.
    counted = None
    if postgres:
        with_ = (f"WITH finished AS ({_FINISH}), counted AS ({tally.ADD_RETURNING}) ", [*finish, *count])
        created = sql.add(judgment, on_conflict=("pair_id", "annotator_id"), with_=with_)
    else:
        created = sql.add(judgment, on_conflict=("pair_id", "annotator_id"))
        sql.execute(_FINISH, finish)
        counted = tally.load(sql.fetchone(tally.ADD_RETURNING, count))
    if not created:
        judgment = Judgment.objects.get(pair_id=locked.pair_id, annotator_id=annotator.pk)
    return _Submission(judgment, created=created, was_live_lease=live, counted=counted)


class Turn(NamedTuple):
    """One judge request's outcome: the stored judgment, the next lease (None: nothing left), and the
    annotator's tally after it where the statements returned it (None: read it when needed)."""

    judgment: Judgment
    upcoming: Assignment | None
    counted: Tally | None


def judgment_submit_and_next(
    *, assignment_id: int, annotator: Any, project: Project, verdict: Verdict
) -> Turn:
    """`judgment_submit`, then `next_assignment` for the same annotator, in one transaction: the
    workbench's judge request commits once. Raises as `judgment_submit` does, storing nothing.

    On PostgreSQL the judgment's writes travel in the statement that claims the next pair.
    """
    now = timezone.now()
    with transaction.atomic():
        submission = _submit(  # the user lock first, as in next_assignment
            assignment_id=assignment_id,
            annotator=annotator,
            project=project,
            verdict=verdict,
            now=now,
            lock_user_first=True,
            ride=True,
        )
        # Leases are only made under lock_user when the user has no live one: if this was it, the
        # user now has none, and the lookup can be skipped.
        upcoming = next_assignment_locked(
            project, annotator, no_lease=submission.was_live_lease, now=now, rider=submission.rider
        )
        judgment, _ = submission.settle()
    return Turn(judgment, upcoming, submission.counted)


def judgment_change(*, judgment: Judgment, verdict: Verdict) -> Judgment:
    """Replace the annotator's answer on a judgment they made (shown sides stay as they were)."""
    for field, value in verdict.for_pair(judgment.a_on_left).items():
        setattr(judgment, field, value)
    judgment.save(update_fields=["choice", "strength", "criteria", "rationale", "updated_at"])
    return judgment


@dataclass(frozen=True)
class Progress:
    today: int
    total: int
    left: int


LEFT_REFRESH_SECONDS = 30
_OPEN_IN_PROJECT = f"SELECT COUNT(*) FROM {Pair._meta.db_table} p WHERE p.project_id = %s AND ({{open}})"
_OPEN_SEEN_BY_USER = (
    f"SELECT COUNT(*) FROM {Assignment._meta.db_table} a JOIN {Pair._meta.db_table} p ON p.id = a.pair_id "
    "WHERE a.project_id = %s AND a.annotator_id = %s AND ({open})"
)


def progress_for(project: Project, user: Any, *, has_lease: bool, counted: Tally | None = None) -> Progress:
    """Judged today and in total by this user in this project, and the pairs still open to them.

    From the user's tally (`counted`, when the caller has it already). "Left" is recounted at most
    every LEFT_REFRESH_SECONDS per user and process; in between it goes down as the user judges and skips.
    """
    if counted is None:
        counted = tally.read(project.pk, user.pk)
    finished = counted.judged + counted.skipped
    key = f"prefstudio:left:{project.pk}:{user.pk}"
    then = cache.get(key)
    if then is None:
        then = (_open_to(project, user) + int(has_lease), finished)
        cache.set(key, then, LEFT_REFRESH_SECONDS)
    left_then, finished_then = then
    left = max(0, left_then - (finished - finished_then))
    return Progress(today=tally.judged_today(counted), total=counted.judged, left=left)


def _open_to(project: Project, user: Any) -> int:
    """Pairs this user could still be handed: open slots they have not seen (and unseen gold).

    Counted as the project's open pairs (one scan per project and process every LEFT_REFRESH_SECONDS)
    less the open ones among the user's own assignments, so a recount costs the size of the user's
    history rather than a scan of the project per user.
    """
    open_pair = "p.gold = '' AND p.taken < %s + p.extra_wanted" + (
        " OR p.gold <> ''" if project.gold_rate else ""
    )
    key = f"prefstudio:open:{project.pk}:{project.overlap}:{bool(project.gold_rate)}"
    in_project = cache.get(key)
    if in_project is None:
        in_project = sql.fetchone(_OPEN_IN_PROJECT.format(open=open_pair), [project.pk, project.overlap])[0]
        cache.set(key, in_project, LEFT_REFRESH_SECONDS)
    seen = sql.fetchone(_OPEN_SEEN_BY_USER.format(open=open_pair), [project.pk, user.pk, project.overlap])[0]
    return max(0, in_project - seen)


def recent_judgments(project: Project, user: Any, *, limit: int = 20) -> list[Judgment]:
    return list(
        Judgment.objects.filter(annotator=user, pair__project=project)
        .select_related("pair")
        .order_by("-created_at")[:limit]
    )
