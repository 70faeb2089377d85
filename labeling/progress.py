"""An annotator's own progress in a project, for their project page: counted from their assignments
with the ORM (the workbench keeps its own running tally for its hot path)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, F, Q
from django.utils import timezone

from labeling.models import Assignment, Pair, Project


@dataclass(frozen=True)
class OwnProgress:
    judged: int
    skipped: int
    left: int  # pairs they could still be handed, counting the one leased to them now


def own_progress(*, project: Project, user: Any) -> OwnProgress:
    mine = Assignment.objects.filter(project=project, annotator=user)
    counts = mine.aggregate(
        judged=Count("id", filter=Q(state=Assignment.State.DONE)),
        skipped=Count("id", filter=Q(state=Assignment.State.SKIPPED)),
        leased=Count("id", filter=Q(state=Assignment.State.LEASED, expires_at__gt=timezone.now())),
    )
    wanted = Q(gold="", taken__lt=F("extra_wanted") + project.overlap)
    if project.gold_rate:
        wanted |= ~Q(gold="")
    unseen = Pair.objects.filter(wanted, project=project).exclude(pk__in=mine.values("pair_id"))
    left = unseen.count() + counts["leased"]
    return OwnProgress(judged=counts["judged"], skipped=counts["skipped"], left=left)
