"""Recording judgments: submit once per pair and annotator, change while allowed, progress counts.

A submit locks the annotator's tally row (labeling.assignment.lock_annotator), then the assignment:
a double click, a retried POST or a second tab finds the assignment done and gets the stored judgment.

Annotators choose by position (left / right); `a_on_left` of their assignment maps that back to
the pair's A and B, so the stored choice is about the responses, whatever side they were shown on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from labeling import tally
from labeling.assignment import (
    claim_next_pair,
    current_lease,
    expire_leases,
    lease_next_pair,
    lock_annotator,
    sweep_now_and_then,
)
from labeling.models import Assignment, Choice, Judgment, Pair, Project, Tally

SIDES = ("left", "right")
T = TypeVar("T")


class JudgmentRefused(Exception):
    """The judgment cannot be stored (the lease went to someone else, or the pair was skipped)."""


class JudgmentConflict(JudgmentRefused):
    """The annotator had already judged this pair with another choice (in another tab, or on a page the
    browser kept): nothing was stored, and `judgment` is the one that stands."""

    def __init__(self, judgment: Judgment) -> None:
        super().__init__("You had already judged this pair otherwise.")
        self.judgment = judgment


class PairSkipped(JudgmentRefused):
    """The annotator had skipped this pair: nothing was stored. `submit_judgment(after_skip=True)`
    judges it after all."""

    def __init__(self, assignment: Assignment) -> None:
        super().__init__("You skipped this pair.")
        self.assignment = assignment


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


def _store(
    *,
    assignment_id: int,
    annotator: Any,
    project: Project,
    verdict: Verdict,
    counted: Tally,
    now: datetime,
    after_skip: bool = False,
    look_elsewhere: bool = False,
) -> tuple[Judgment, bool, bool]:
    """Store the judgment for the annotator's assignment, mark the assignment done and count it on
    `counted` (their locked tally); (judgment, created, whether the assignment was their live lease).

    The same choice again (a double click, a retry) returns the stored judgment; another choice raises
    JudgmentConflict. A skipped pair raises PairSkipped unless `after_skip`; then, like a lease that
    ran out, it takes a slot again if the pair still has one free. Refusals raise before anything is
    written. A judgment of the pair by the annotator written around the workbench (admin, an import)
    stands when `look_elsewhere`; otherwise the insert meets it and raises IntegrityError (see
    `_atomic`)."""
    assignments = Assignment.objects.select_for_update(no_key=True)
    if look_elsewhere:
        elsewhere = Judgment.objects.filter(pair=OuterRef("pair"), annotator=annotator)
        assignments = assignments.annotate(judged_elsewhere=Exists(elsewhere))
    locked = assignments.get(pk=assignment_id, annotator=annotator, project=project)
    if locked.state == Assignment.State.DONE:
        stored = Judgment.objects.get(pair_id=locked.pair_id, annotator=annotator)
        if stored.choice != to_pair_choice(verdict.choice, locked.a_on_left):
            raise JudgmentConflict(stored)
        return stored, False, False
    was_skipped = locked.state == Assignment.State.SKIPPED
    if was_skipped and not after_skip:
        raise PairSkipped(locked)
    # A lease that ran out, or a skip, gave its slot back to the pool: take it again if still free.
    if locked.state in (Assignment.State.EXPIRED, Assignment.State.SKIPPED) and not locked.is_gold:
        free = Q(pk=locked.pair_id, taken__lt=project.overlap + F("extra_wanted"))
        if not Pair.objects.filter(free).update(taken=F("taken") + 1):
            if was_skipped:
                raise JudgmentRefused("This pair has all the judgments it needs now; nothing was stored.")
            raise JudgmentRefused("Your lease on this pair expired and it went to someone else.")
    if look_elsewhere and locked.judged_elsewhere:  # written around the workbench: that one stands
        judgment, created = Judgment.objects.get(pair_id=locked.pair_id, annotator=annotator), False
    else:
        # Under the assignment's lock nobody else judges this (pair, annotator) through the workbench.
        judgment = Judgment.objects.create(
            pair_id=locked.pair_id,
            annotator=annotator,
            assignment_id=locked.pk,
            a_on_left=locked.a_on_left,
            is_gold=locked.is_gold,
            seconds_spent=(now - locked.leased_at).total_seconds(),
            active_seconds=verdict.active_seconds,
            **verdict.for_pair(locked.a_on_left),
        )
        created = True
    Assignment.objects.filter(pk=locked.pk).update(
        state=Assignment.State.DONE, finished_at=now, skip_reason=""
    )
    tally.record(counted, judged=1, skipped=-int(was_skipped), now=now)
    live = locked.state == Assignment.State.LEASED and locked.expires_at > now
    return judgment, created, live


def submit_judgment(
    *, assignment_id: int, annotator: Any, project: Project, verdict: Verdict, after_skip: bool = False
) -> tuple[Judgment, bool]:
    """Store the annotator's judgment for their assignment; (judgment, created).

    Idempotent: a double click, a retried POST or a second tab with the same choice returns the stored
    judgment; another choice raises JudgmentConflict. A skipped pair raises PairSkipped, unless
    `after_skip` (the annotator judges it after all, while it still needs judgments).
    Raises Assignment.DoesNotExist when the assignment is not this annotator's in this project.
    """
    now = timezone.now()

    def store(look_elsewhere: bool) -> tuple[Judgment, bool]:
        counted = lock_annotator(project, annotator, now=now)
        judgment, created, _ = _store(
            assignment_id=assignment_id, annotator=annotator, project=project, verdict=verdict,
            counted=counted, now=now, after_skip=after_skip, look_elsewhere=look_elsewhere,
        )  # fmt: skip
        return judgment, created

    return _atomic(store)


def _atomic(work: Callable[[bool], T]) -> T:
    """`work(look_elsewhere=False)` in a transaction; when it meets a judgment written around the workbench
    (IntegrityError: the transaction rolled back, nothing stored), `work(look_elsewhere=True)` in another.

    Such judgments are rare (admin, imports): looking for one on every submit would cost each judge
    request a subquery, so the unique (pair, annotator) constraint finds them instead, as Django's own
    get_or_create does.
    """
    try:
        with transaction.atomic():
            return work(False)
    except IntegrityError:
        with transaction.atomic():
            return work(True)


class Turn(NamedTuple):
    """One judge request's outcome: the stored judgment, the next lease (None: nothing left), and the
    annotator's tally after it."""

    judgment: Judgment
    upcoming: Assignment | None
    counted: Tally


def submit_and_claim_next(*, assignment_id: int, annotator: Any, project: Project, verdict: Verdict) -> Turn:
    """`submit_judgment`, then `claim_next_pair` for the same annotator, in one transaction: the
    workbench's judge request commits once. Raises as `submit_judgment` does, storing nothing."""
    sweep_now_and_then(project)
    now = timezone.now()

    def store_and_claim(look_elsewhere: bool) -> Turn:
        counted = lock_annotator(project, annotator, now=now)
        judgment, _, was_live = _store(
            assignment_id=assignment_id, annotator=annotator, project=project, verdict=verdict,
            counted=counted, now=now, look_elsewhere=look_elsewhere,
        )  # fmt: skip
        # Leases are only made under the annotator's lock when they have no live one: if this was it,
        # they now have none, and the lookup can be skipped.
        upcoming = None if was_live else current_lease(project, annotator, now=now)
        return Turn(judgment, upcoming or lease_next_pair(project, annotator, now=now), counted)

    turn = _atomic(store_and_claim)
    if turn.upcoming is None and expire_leases(project):  # stale leases may hold the last slots
        turn = turn._replace(upcoming=claim_next_pair(project, annotator))
    return turn


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


def progress(project: Project, user: Any, *, has_lease: bool, counted: Tally | None = None) -> Progress:
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


def _open_pair(project: Project, prefix: str = "") -> Q:
    """A pair (reached through `prefix`) that could still be handed out: a free slot, or gold."""
    free = Q(**{f"{prefix}gold": "", f"{prefix}taken__lt": project.overlap + F(f"{prefix}extra_wanted")})
    return free | ~Q(**{f"{prefix}gold": ""}) if project.gold_rate else free


def _open_to(project: Project, user: Any) -> int:
    """Pairs this user could still be handed: open slots they have not seen (and unseen gold).

    Counted as the project's open pairs (one scan per project and process every LEFT_REFRESH_SECONDS)
    less the open ones among the user's own assignments, so a recount costs the size of the user's
    history rather than a scan of the project per user.
    """
    key = f"prefstudio:open:{project.pk}:{project.overlap}:{bool(project.gold_rate)}"
    in_project = cache.get(key)
    if in_project is None:
        in_project = Pair.objects.filter(_open_pair(project), project=project).count()
        cache.set(key, in_project, LEFT_REFRESH_SECONDS)
    mine = Assignment.objects.filter(_open_pair(project, "pair__"), project=project, annotator=user)
    return max(0, in_project - mine.count())


def recent_judgments(project: Project, user: Any, *, limit: int = 20) -> list[Judgment]:
    return list(
        Judgment.objects.filter(annotator=user, pair__project=project)
        .select_related("pair")
        .order_by("-created_at")[:limit]
    )


def open_after_skip(skipped: Assignment, project: Project) -> bool:
    """Whether the annotator may still judge a pair they skipped: gold pairs always, others while the
    pair has fewer than its k (plus any extra a lead asked for) judgments and leases."""
    return skipped.is_gold or skipped.pair.taken < project.overlap + skipped.pair.extra_wanted


@dataclass(frozen=True)
class RecentItem:
    """A line of "My recent judgments": a judgment, or a skip with whether it can be judged after all."""

    when: datetime
    pair: Pair
    judgment: Judgment | None = None
    skip: Assignment | None = None
    still_open: bool = False

    @property
    def position(self) -> str:
        """The judgment's choice where the annotator saw it ('left', 'right', 'tie', 'both_bad')."""
        return to_position(self.judgment.choice, self.judgment.a_on_left) if self.judgment else ""


def recent_work(project: Project, user: Any, *, limit: int = 20) -> list[RecentItem]:
    """The user's last `limit` judgments and skips in this project, newest first."""
    skips = (
        Assignment.objects.filter(project=project, annotator=user, state=Assignment.State.SKIPPED)
        .select_related("pair")
        .order_by("-finished_at")[:limit]
    )
    items = [
        RecentItem(j.created_at, j.pair, judgment=j) for j in recent_judgments(project, user, limit=limit)
    ]
    items += [
        RecentItem(a.finished_at, a.pair, skip=a, still_open=open_after_skip(a, project)) for a in skips
    ]
    return sorted(items, key=lambda item: item.when, reverse=True)[:limit]
