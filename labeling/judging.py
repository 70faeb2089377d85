"""Recording judgments: submit once per pair and annotator, change while allowed, progress counts.

A submit locks the annotator's tally row (labeling.assignment.lock_annotator), then the assignment:
a double click, a retried POST or a second tab finds the assignment done and gets the stored judgment.

Annotators choose by position (left / right); `a_on_left` of their assignment maps that back to
the pair's A and B, so the stored choice is about the responses, whatever side they were shown on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from django.core.cache import cache
from django.db import transaction
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


def _store(
    *, assignment_id: int, annotator: Any, project: Project, verdict: Verdict, counted: Tally, now: datetime
) -> tuple[Judgment, bool, bool]:
    """Store the judgment for the annotator's assignment, mark the assignment done and count it on
    `counted` (their locked tally); (judgment, created, whether the assignment was their live lease).
    Refusals raise before anything is written."""
    elsewhere = Judgment.objects.filter(pair=OuterRef("pair"), annotator=annotator)
    locked = (
        Assignment.objects.select_for_update(no_key=True)
        .annotate(judged_elsewhere=Exists(elsewhere))
        .get(pk=assignment_id, annotator=annotator, project=project)
    )
    if locked.state == Assignment.State.DONE:
        return Judgment.objects.get(pair_id=locked.pair_id, annotator=annotator), False, False
    if locked.state == Assignment.State.SKIPPED:
        raise JudgmentRefused("You skipped this pair.")
    # A lease that ran out gave its slot back to the pool: take it again if still free.
    if locked.state == Assignment.State.EXPIRED and not locked.is_gold:
        free = Q(pk=locked.pair_id, taken__lt=project.overlap + F("extra_wanted"))
        if not Pair.objects.filter(free).update(taken=F("taken") + 1):
            raise JudgmentRefused("Your lease on this pair expired and it went to someone else.")
    if locked.judged_elsewhere:  # written around the workbench (admin, an import): that one stands
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
    Assignment.objects.filter(pk=locked.pk).update(state=Assignment.State.DONE, finished_at=now)
    tally.record(counted, judged=1, now=now)
    live = locked.state == Assignment.State.LEASED and locked.expires_at > now
    return judgment, created, live


def submit_judgment(
    *, assignment_id: int, annotator: Any, project: Project, verdict: Verdict
) -> tuple[Judgment, bool]:
    """Store the annotator's judgment for their assignment; (judgment, created).

    Idempotent: a double click, a retried POST or a second tab returns the stored judgment.
    Raises Assignment.DoesNotExist when the assignment is not this annotator's in this project.
    """
    now = timezone.now()
    with transaction.atomic():
        counted = lock_annotator(project, annotator, now=now)
        judgment, created, _ = _store(
            assignment_id=assignment_id, annotator=annotator, project=project, verdict=verdict,
            counted=counted, now=now,
        )  # fmt: skip
    return judgment, created


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
    with transaction.atomic():
        counted = lock_annotator(project, annotator, now=now)
        judgment, _, was_live = _store(
            assignment_id=assignment_id, annotator=annotator, project=project, verdict=verdict,
            counted=counted, now=now,
        )  # fmt: skip
        # Leases are only made under the annotator's lock when they have no live one: if this was it,
        # they now have none, and the lookup can be skipped.
        upcoming = None if was_live else current_lease(project, annotator, now=now)
        upcoming = upcoming or lease_next_pair(project, annotator, now=now)
    if upcoming is None and expire_leases(project):  # stale leases may hold the last slots
        upcoming = claim_next_pair(project, annotator)
    return Turn(judgment, upcoming, counted)


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
