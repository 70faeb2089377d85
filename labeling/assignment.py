"""Handing pairs to annotators: overlap k, leases, gold items, randomized sides.

`next_assignment` is the one concurrency-critical query of the app. On PostgreSQL it claims a pair
row with `FOR UPDATE SKIP LOCKED` in one short transaction, so hundreds of annotators asking at
once never take the same slot, and it never locks more than the rows it hands out.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from labeling.models import Assignment, Pair, Project

_SWEEP_LOCK_SPACE = 0x5EED_0000_0000  # single-key advisory locks; per-user locks use the two-key form
CLAIM_ATTEMPTS = 50
# Leases last minutes, so sweeping expired ones on every claim is wasted work; a claim that finds
# nothing sweeps at once anyway.
SWEEP_EVERY = 10.0
_last_sweep: dict[int, float] = {}


def _is_postgres() -> bool:
    return connection.vendor == "postgresql"


def _lock_user(project: Project, user: Any) -> None:
    """Serialize one user's requests in this project (two tabs must not lease two pairs)."""
    if _is_postgres():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [project.pk, user.pk])


def expire_leases(project: Project, *, now: Any = None) -> int:
    """Return the slots of leases past their time to the pool; the number expired.

    Runs inside the caller's transaction. One sweeper per project at a time (others skip it).
    """
    now = now or timezone.now()
    if _is_postgres():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_SWEEP_LOCK_SPACE + project.pk])
            if not cursor.fetchone()[0]:
                return 0
    stale = list(
        Assignment.objects.filter(project=project, state=Assignment.State.LEASED, expires_at__lt=now)
        .select_for_update(skip_locked=True)
        .values_list("id", "pair_id", "is_gold")
    )
    if not stale:
        return 0
    Assignment.objects.filter(id__in=[s[0] for s in stale]).update(
        state=Assignment.State.EXPIRED, finished_at=now
    )
    for pair_id, count in sorted(Counter(pair for _, pair, gold in stale if not gold).items()):
        Pair.objects.filter(pk=pair_id).update(taken=F("taken") - count)
    return len(stale)


def current_lease(project: Project, user: Any, *, now: Any = None) -> Assignment | None:
    """The user's unexpired lease in this project, if any."""
    return (
        Assignment.objects.filter(
            project=project,
            annotator=user,
            state=Assignment.State.LEASED,
            expires_at__gt=now or timezone.now(),
        )
        .select_related("pair")
        .first()
    )


def _unseen(project: Project, user: Any):
    seen = Assignment.objects.filter(pair=OuterRef("pk"), annotator=user)
    return Pair.objects.filter(project=project).exclude(Exists(seen))


def _claim_open_pair(project: Project, user: Any) -> Pair | None:
    """Lock the best open pair for this user, skipping pairs other claims hold right now."""
    open_pairs = _unseen(project, user).filter(gold="", taken__lt=project.overlap).order_by("-taken", "id")
    for attempt in range(CLAIM_ATTEMPTS):
        # no_key: other transactions' foreign-key checks on this pair (their assignments) need not wait.
        pair = open_pairs.select_for_update(skip_locked=True, of=("self",), no_key=True).first()
        if pair is not None or not open_pairs.exists():
            return pair
        # Open pairs exist but other claims hold them all for a moment. Waiting on their locks
        # instead (plain FOR UPDATE) can deadlock: rows failing the re-check stay locked.
        time.sleep(0.002 * (attempt + 1))
    return None


def next_assignment(project: Project, user: Any, *, rng: random.Random | None = None) -> Assignment | None:
    """The pair this user should judge now, leased to them; None when nothing is left for them.

    Returns the user's open lease again if they have one (reload-safe). Otherwise, at the project's
    gold rate, a gold pair they have not seen; else the regular pair closest to its k judgments
    (then the oldest) that they have not seen and that has a free slot.
    """
    rng = rng or random
    now = timezone.now()
    with transaction.atomic():
        _lock_user(project, user)
        lease = current_lease(project, user, now=now)
        if lease is not None:
            return lease
        if time.monotonic() - _last_sweep.get(project.pk, float("-inf")) >= SWEEP_EVERY:
            _last_sweep[project.pk] = time.monotonic()
            expire_leases(project, now=now)
        pair, gold = None, False
        if project.gold_rate and rng.random() < project.gold_rate:
            # Gold pairs measure each annotator against a known answer: not capped by k.
            pair = _unseen(project, user).exclude(gold="").order_by("id").first()
            gold = pair is not None
        if pair is None:
            pair = _claim_open_pair(project, user)
            if pair is None and expire_leases(project, now=now):  # stale leases may hold the last slots
                pair = _claim_open_pair(project, user)
            if pair is None:
                return None
            Pair.objects.filter(pk=pair.pk).update(taken=F("taken") + 1)
        return Assignment.objects.create(
            project=project,
            pair=pair,
            annotator=user,
            a_on_left=rng.random() < 0.5,
            is_gold=gold,
            leased_at=now,
            expires_at=now + timedelta(minutes=project.lease_minutes),
        )


def assignment_skip(*, assignment: Assignment, reason: str) -> None:
    """The annotator passes on this pair: its slot goes back to the pool, and they never get it again."""
    with transaction.atomic():
        locked = Assignment.objects.select_for_update().get(pk=assignment.pk)
        if locked.state != Assignment.State.LEASED:
            return
        locked.state, locked.skip_reason, locked.finished_at = (
            Assignment.State.SKIPPED,
            reason,
            timezone.now(),
        )
        locked.save(update_fields=["state", "skip_reason", "finished_at"])
        if not locked.is_gold:
            Pair.objects.filter(pk=locked.pair_id).update(taken=F("taken") - 1)
