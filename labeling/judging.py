"""Recording judgments: submit once per pair and annotator, change while allowed, progress counts.

Annotators choose by position (left / right); `a_on_left` of their assignment maps that back to
the pair's A and B, so the stored choice is about the responses, whatever side they were shown on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q
from django.utils import timezone

from labeling.models import Assignment, Choice, Judgment, Pair, Project

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


def judgment_submit(
    *, assignment_id: int, annotator: Any, project: Project, verdict: Verdict
) -> tuple[Judgment, bool]:
    """Store the annotator's judgment for their assignment; (judgment, created).

    Idempotent: a double click, a retried POST or a second tab returns the stored judgment.
    Raises Assignment.DoesNotExist when the assignment is not this annotator's in this project.
    """
    now = timezone.now()
    with transaction.atomic():
        # of=self: lock the assignment row only, never the project row it joins.
        locked = (
            Assignment.objects.select_for_update(of=("self",))
            .select_related("project")
            .get(pk=assignment_id, annotator=annotator, project=project)
        )
        if locked.state == Assignment.State.DONE:
            return Judgment.objects.get(pair_id=locked.pair_id, annotator_id=locked.annotator_id), False
        if locked.state == Assignment.State.SKIPPED:
            raise JudgmentRefused("You skipped this pair.")
        if locked.state == Assignment.State.EXPIRED and not locked.is_gold:
            # The lease ran out and its slot went back to the pool: take it again if still free.
            reclaimed = Pair.objects.filter(pk=locked.pair_id, taken__lt=locked.project.overlap).update(
                taken=F("taken") + 1
            )
            if not reclaimed:
                raise JudgmentRefused("Your lease on this pair expired and it went to someone else.")
        # Under the assignment's lock nobody else can judge this (pair, annotator) through the
        # workbench; an existing judgment can only come from elsewhere (admin, an older import).
        judgment = Judgment.objects.filter(pair_id=locked.pair_id, annotator_id=locked.annotator_id).first()
        created = judgment is None
        if created:
            judgment = Judgment.objects.create(
                pair_id=locked.pair_id,
                annotator_id=locked.annotator_id,
                assignment=locked,
                a_on_left=locked.a_on_left,
                is_gold=locked.is_gold,
                seconds_spent=(now - locked.leased_at).total_seconds(),
                active_seconds=verdict.active_seconds,
                **verdict.for_pair(locked.a_on_left),
            )
        locked.state, locked.finished_at = Assignment.State.DONE, now
        locked.save(update_fields=["state", "finished_at"])
    return judgment, created


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


def progress_for(project: Project, user: Any, *, has_lease: bool) -> Progress:
    """Judged today and in total by this user in this project, and the pairs still open to them.

    "Left" needs a scan of the project's open pairs, so it is recounted at most every
    LEFT_REFRESH_SECONDS per user and process; in between it goes down as the user judges and skips.
    """
    midnight = timezone.make_aware(datetime.combine(timezone.localdate(), time.min))
    finished = (Assignment.State.DONE, Assignment.State.SKIPPED)
    done = Q(state=Assignment.State.DONE)
    counts = Assignment.objects.filter(project=project, annotator=user, state__in=finished).aggregate(
        total=Count("id", filter=done),
        today=Count("id", filter=done & Q(finished_at__gte=midnight)),
        finished=Count("id"),
    )
    key = f"prefstudio:left:{project.pk}:{user.pk}"
    counted = cache.get(key)
    if counted is None:
        counted = (_open_to(project, user) + int(has_lease), counts["finished"])
        cache.set(key, counted, LEFT_REFRESH_SECONDS)
    left_then, finished_then = counted
    left = max(0, left_then - (counts["finished"] - finished_then))
    return Progress(today=counts["today"], total=counts["total"], left=left)


def _open_to(project: Project, user: Any) -> int:
    """Pairs this user could still be handed: open slots they have not seen (and unseen gold)."""
    seen = Assignment.objects.filter(pair=OuterRef("pk"), annotator=user)
    open_to_user = Q(gold="", taken__lt=project.overlap)
    if project.gold_rate:
        open_to_user |= ~Q(gold="")
    return Pair.objects.filter(project=project).filter(open_to_user).exclude(Exists(seen)).count()


def recent_judgments(project: Project, user: Any, *, limit: int = 20) -> list[Judgment]:
    return list(
        Judgment.objects.filter(annotator=user, pair__project=project)
        .select_related("pair")
        .order_by("-created_at")[:limit]
    )
