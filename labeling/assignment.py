"""Handing pairs to annotators: overlap k, leases, gold items, randomized sides.

`next_assignment` is the one concurrency-critical query of the app. On PostgreSQL it claims a pair
row with `FOR NO KEY UPDATE SKIP LOCKED` in one short transaction, so hundreds of annotators asking
at once never take the same slot, and it never locks more than the rows it hands out. It runs on
every judge request, so its statements are written out (prefstudio/sql.py) rather than built by the ORM.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import timedelta
from functools import cache
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from labeling import tally
from labeling.models import Assignment, Pair, Project
from prefstudio import sql

_SWEEP_LOCK_SPACE = 0x5EED_0000_0000  # single-key advisory locks; per-user locks use the two-key form
CLAIM_ATTEMPTS = 50
# Leases last minutes, so sweeping expired ones on every claim is wasted work; a claim that finds
# nothing sweeps at once anyway.
SWEEP_EVERY = 10.0
_last_sweep: dict[int, float] = {}


# What the workbench needs of an assignment and of its pair; the pair's other fields stay deferred.
LEASE_FIELDS = ("id", "project_id", "pair_id", "annotator_id", "state", "a_on_left", "is_gold", "leased_at",
                "expires_at")  # fmt: skip
PAIR_SHOWN = ("id", "project_id", "prompt", "response_a", "response_b", "gold", "rendered")
_ASSIGNMENT_COLUMNS = sql.insert_columns(Assignment)

_A, _P = Assignment._meta.db_table, Pair._meta.db_table
_LEASE = (
    f"SELECT {sql.columns(Assignment, LEASE_FIELDS, 'a')}, {sql.columns(Pair, PAIR_SHOWN, 'p')} "
    f"FROM {_A} a JOIN {_P} p ON p.id = a.pair_id "
    # The state as a literal, so that prepared (generic) plans use the partial index assignment_live_lease.
    f"WHERE a.project_id = %s AND a.annotator_id = %s AND a.state = '{Assignment.State.LEASED.value}' "
    "AND a.expires_at > %s LIMIT 1"
)
_UNSEEN = f"NOT EXISTS (SELECT 1 FROM {_A} s WHERE s.pair_id = p.id AND s.annotator_id = %s)"
# The same test as one index probe per pair looked at. OFFSET keeps PostgreSQL from turning it into an
# anti join, which it may plan as a walk over the annotator's whole history to find the first pair.
_UNSEEN_PROBE = _UNSEEN[:-1] + " LIMIT 1 OFFSET 0)"
# A pair is open while its live claims are below k plus what a lead asked for on top (extra_wanted).
_OPEN = f"p.project_id = %s AND p.gold = '' AND p.taken < %s + p.extra_wanted AND {_UNSEEN}"
# How many pairs of each number of judgments (1 to k - 1) a claim looks at before it starts a fresh
# pair. The pairs an annotator has judged stay open until others judge them too: an annotator far ahead
# of the rest would otherwise pass over their whole lead on every claim.
CLAIM_WINDOW = 64


@cache
def _claim_statement(overlap: int, lock: str, window: int) -> str:
    """Claim the best open pair: first one a lead sent back for more judgments (index pair_sent_back);
    else the closest to its k judgments, then the oldest (index pair_claim_order), among the `window`
    oldest pairs at each count of judgments from k - 1 down to 1; else the oldest fresh pair; else any
    open pair (scanning them all). COALESCE runs each choice only if those before it found nothing;
    each stops at its first pair, and re-checks `taken` on the row it locks (a row lock re-reads the
    row's latest version). Parameters: `_claim_params`."""
    sent_back = (
        f"(SELECT p.id FROM {_P} p WHERE p.project_id = %s AND p.extra_wanted > 0 AND p.gold = '' "
        f"AND p.taken < %s + p.extra_wanted AND {_UNSEEN_PROBE} ORDER BY p.id LIMIT 1{lock}), "
    )
    near = "".join(
        f"(SELECT p.id FROM (SELECT id FROM {_P} WHERE project_id = %s AND gold = '' AND taken = {taken} "
        f"ORDER BY id LIMIT {window}) AS near JOIN {_P} p ON p.id = near.id "
        f"WHERE p.taken < %s + p.extra_wanted AND {_UNSEEN_PROBE} ORDER BY p.id LIMIT 1{lock}), "
        for taken in range(overlap - 1, 0, -1)
    )
    return (
        f"UPDATE {_P} SET taken = taken + 1 WHERE id = COALESCE({sent_back}{near}"
        f"(SELECT p.id FROM {_P} p WHERE p.project_id = %s AND p.gold = '' AND p.taken = 0 "
        f"AND {_UNSEEN_PROBE} ORDER BY p.id LIMIT 1{lock}), "
        f"(SELECT p.id FROM {_P} p WHERE {_OPEN} ORDER BY p.taken DESC, p.id LIMIT 1{lock}), NULL) "
        f"RETURNING {sql.columns(Pair, PAIR_SHOWN)}"
    )


def _claim_params(project: Project, user: Any) -> list[Any]:
    near = [project.pk, project.overlap, user.pk] * (project.overlap - 1)
    return [
        project.pk,
        project.overlap,
        user.pk,
        *near,
        project.pk,
        user.pk,
        project.pk,
        project.overlap,
        user.pk,
    ]


# PostgreSQL: claim the pair and insert the lease in one statement (the lease's values, pair_id aside,
# are parameters; pair_id comes from the claimed row).
_LEASE_COLUMNS = [c for c in _ASSIGNMENT_COLUMNS if c != "pair_id"]


_CLAIMED = f"lease.id, {sql.columns(Pair, PAIR_SHOWN, 'pair')}"


@cache
def _claim_and_lease(overlap: int, window: int) -> tuple[str, str]:
    """(the claim and the lease as WITH clauses, for a rider to carry; the statement sending them alone)."""
    ctes = (
        f"pair AS ({_claim_statement(overlap, ' FOR NO KEY UPDATE OF p SKIP LOCKED', window)}), "
        f"lease AS (INSERT INTO {_A} ({sql.columns(Assignment, _ASSIGNMENT_COLUMNS)}) "
        f"SELECT {', '.join('pair.id' if c == 'pair_id' else '%s' for c in _ASSIGNMENT_COLUMNS)} "
        "FROM pair RETURNING id)"
    )
    return ctes, f"WITH {ctes} SELECT {_CLAIMED} FROM lease, pair"


_ANY_OPEN = f"SELECT 1 FROM {_P} p WHERE {_OPEN} LIMIT 1"
_GOLD = (
    f"SELECT {sql.columns(Pair, PAIR_SHOWN, 'p')} FROM {_P} p "
    f"WHERE p.project_id = %s AND p.gold <> '' AND {_UNSEEN} ORDER BY p.id LIMIT 1"
)


def lock_user(project: Project, user: Any) -> None:
    """Serialize one user's requests in this project (two tabs must not lease two pairs) until the
    transaction ends; taking it again in the same transaction is free."""
    if sql.is_postgres():
        sql.execute("SELECT pg_advisory_xact_lock(%s, %s)", [project.pk, user.pk])


def expire_leases(project: Project, *, now: Any = None) -> int:
    """Return the slots of leases past their time to the pool; the number expired.

    Runs inside the caller's transaction. One sweeper per project at a time (others skip it).
    """
    now = now or timezone.now()
    if sql.is_postgres():
        got = sql.fetchone("SELECT pg_try_advisory_xact_lock(%s)", [_SWEEP_LOCK_SPACE + project.pk])
        if not got[0]:
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
    expires = sql.param(Assignment, "expires_at", now or timezone.now())
    row = sql.fetchone(_LEASE, [project.pk, user.pk, expires])
    if row is None:
        return None
    lease = sql.load(Assignment, LEASE_FIELDS, row[: len(LEASE_FIELDS)])
    lease.pair = sql.load(Pair, PAIR_SHOWN, row[len(LEASE_FIELDS) :])
    lease.project, lease.annotator = project, user
    return lease


def _deal_gold(project: Project, user: Any, lease: Assignment) -> bool:
    """Put a gold pair this user has not seen into `lease`; False if there is none."""
    if (row := sql.fetchone(_GOLD, [project.pk, user.pk])) is None:
        return False
    lease.pair, lease.is_gold = sql.load(Pair, PAIR_SHOWN, row), True
    return True


def _claim(project: Project, user: Any, lease: Assignment, rider: sql.Rider | None = None) -> bool:
    """Claim the best open pair for this user into `lease`, skipping pairs other claims hold right now
    and counting the claim on the pair (`taken + 1`) in the same statement; False if none is open.

    On PostgreSQL the same statement also inserts the lease (`lease.id` is then set), and carries
    `rider` if it has not been sent yet.
    """
    params, claim_params = [project.pk, project.overlap, user.pk], _claim_params(project, user)
    postgres = sql.is_postgres()
    if postgres:
        ctes, claim = _claim_and_lease(project.overlap, CLAIM_WINDOW)
    else:
        claim = _claim_statement(project.overlap, "", CLAIM_WINDOW)
    lease_params = [sql.param(Assignment, c, getattr(lease, c)) for c in _LEASE_COLUMNS] if postgres else []
    for attempt in range(CLAIM_ATTEMPTS):
        if postgres:
            # no key: other transactions' foreign-key checks on this pair need not wait.
            if rider is not None and rider.row is None:
                statement, all_params = rider.carried_by(
                    ctes, claim_params + lease_params, _CLAIMED, "lease CROSS JOIN pair"
                )
                row = rider.take(sql.fetchone(statement, all_params))
                row = None if row[0] is None else row
            else:
                row = sql.fetchone(claim, claim_params + lease_params)
            if row is not None:
                lease.id, lease.pair = row[0], sql.load(Pair, PAIR_SHOWN, row[1:])
                return True
        elif (row := sql.fetchone(claim, claim_params)) is not None:
            lease.pair = sql.load(Pair, PAIR_SHOWN, row)
            return True
        if sql.fetchone(_ANY_OPEN, params) is None:
            return False
        # Open pairs exist but other claims hold them all for a moment. Waiting on their locks
        # instead (plain FOR UPDATE) can deadlock: rows failing the re-check stay locked.
        time.sleep(0.002 * (attempt + 1))
    return False


def next_assignment(project: Project, user: Any, *, rng: random.Random | None = None) -> Assignment | None:
    """The pair this user should judge now, leased to them; None when nothing is left for them.

    Returns the user's open lease again if they have one (reload-safe). Otherwise, at the project's
    gold rate, a gold pair they have not seen; else the regular pair closest to its k judgments
    (then the oldest) that they have not seen and that has a free slot.
    """
    with transaction.atomic():
        lock_user(project, user)
        return next_assignment_locked(project, user, rng=rng)


def next_assignment_locked(
    project: Project,
    user: Any,
    *,
    rng: random.Random | None = None,
    no_lease: bool = False,
    now: Any = None,
    rider: sql.Rider | None = None,
) -> Assignment | None:
    """`next_assignment` for a caller already in a transaction holding `lock_user(project, user)`;
    `no_lease`: the caller knows the user holds no live lease; `rider`: statements the claim may carry
    (the caller sends them if it does not)."""
    rng = rng or random
    now = now or timezone.now()
    lease = None if no_lease else current_lease(project, user, now=now)
    if lease is not None:
        return lease
    if time.monotonic() - _last_sweep.get(project.pk, float("-inf")) >= SWEEP_EVERY:
        _last_sweep[project.pk] = time.monotonic()
        expire_leases(project, now=now)
    lease = Assignment(
        project=project,
        annotator=user,
        a_on_left=rng.random() < 0.5,
        leased_at=now,
        expires_at=now + timedelta(minutes=project.lease_minutes),
    )
    # Gold pairs measure each annotator against a known answer: not capped by k.
    gold_turn = bool(project.gold_rate) and rng.random() < project.gold_rate
    if gold_turn:
        _deal_gold(project, user, lease)
    if not lease.is_gold:
        claimed = _claim(project, user, lease, rider)
        if not claimed and expire_leases(project, now=now):  # stale leases may hold the last slots
            claimed = _claim(project, user, lease)
        if not claimed and not (project.gold_rate and not gold_turn and _deal_gold(project, user, lease)):
            return None  # no regular pair left, nor a gold pair this user has not met
    # The pair is rendered by the caller once this transaction is over (labeling.display.rendered):
    # a slow render must not hold the pair's row, or anyone's judgment waiting on it.
    if lease.id is None:  # PostgreSQL's claim inserted it already
        sql.add(lease)
    lease._state.adding = False
    return lease


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
        tally.add(locked.project_id, locked.annotator_id, skipped=1, now=locked.finished_at)
        if not locked.is_gold:
            Pair.objects.filter(pk=locked.pair_id).update(taken=F("taken") - 1)
