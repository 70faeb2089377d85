"""Handing pairs to annotators: overlap k, leases, gold items, randomized sides.

`claim_next_pair` is the one concurrency-critical operation of the app. A pair goes to at most k
annotators at once because every claim raises the pair's `taken` in the statement that picks it, and
it picks with `FOR NO KEY UPDATE SKIP LOCKED`: hundreds of annotators asking at once never wait on each
other and never take the same slot. One annotator's requests take turns on their tally row
(`lock_annotator`), so two tabs never lease two pairs. Everything here is the ORM but `CLAIM`, the one
statement the ORM cannot write (row locks that skip, inside a choice between subqueries). On
PostgreSQL the same statement also writes the lease, so a claim is one round trip.

A project may order its fresh pairs by an AI judge (`Project.queue_order`): the evaluation app ranks
them (`set_queue_ranks`), and the claim then starts the fresh pair ranked first instead of the oldest.
Ranks change only that ORDER BY: what a claim may take, and so k and the leases, never depends on them.
"""

from __future__ import annotations

import random
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import cache
from itertools import pairwise
from operator import itemgetter
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from labeling import tally
from labeling.access import project_changed
from labeling.models import Assignment, Pair, Project, Tally

CLAIM_ATTEMPTS = 50
# Leases last minutes, so sweeping expired ones on every claim is wasted work; a claim that finds
# nothing sweeps at once anyway.
SWEEP_EVERY = 10.0
_last_sweep: dict[int, float] = {}
# How many pairs of each number of judgments (1 to k - 1) a claim looks at before it starts a fresh
# pair. The pairs an annotator has judged stay open until others judge them too: an annotator far ahead
# of the rest would otherwise pass over their whole lead on every claim.
CLAIM_WINDOW = 64

# What the workbench needs of a lease and of its pair; the pair's other fields stay deferred.
LEASE_FIELDS = ("id", "project_id", "pair_id", "annotator_id", "state", "a_on_left", "is_gold", "leased_at",
                "expires_at")  # fmt: skip
PAIR_SHOWN = ("id", "project_id", "prompt", "response_a", "response_b", "gold", "rendered")


def lock_annotator(project: Project, user: Any, *, now: datetime) -> Tally:
    """Serialize one annotator's requests in this project (two tabs must not lease two pairs) until the
    transaction ends, by locking their tally row; its values, which only the lock holder changes."""
    return tally.lock(project.pk, user.pk, now=now)


def _unseen(user: Any) -> Exists:
    """The pair was never handed to `user` (assignment_once_per_annotator makes it a single probe)."""
    return ~Exists(Assignment.objects.filter(pair=OuterRef("pk"), annotator=user))


def _open(project: Project, user: Any) -> Q:
    """A regular pair with a free slot (k plus what a lead asked for on top) that `user` has not seen."""
    return Q(project=project, gold="", taken__lt=project.overlap + F("extra_wanted")) & Q(_unseen(user))


# The claim, in the order its choices are tried: a pair a lead sent back for more judgments (index
# pair_sent_back); else the pair closest to its k judgments, then the oldest (index pair_claim_order),
# among the CLAIM_WINDOW oldest pairs at each count of judgments from k - 1 down to 1; else the oldest
# fresh pair, or where an AI judge orders the project's queue the fresh pair ranked first (`{first}`:
# queue_rank, then id; index pair_fresh_rank); else any open pair (scanning them all, the same order
# among pairs with as many judgments). COALESCE runs each choice only if those before it found nothing,
# each stops at its first pair, and each re-checks `taken` on the row it locks (a row lock re-reads the
# row's newest version). Rows other claims hold are skipped, not waited on: waiting (plain FOR UPDATE)
# can deadlock, since rows failing the re-check stay locked. The chosen pair's `taken` goes up by one in
# the same statement. Parameters: project, k, user. The counts and the window are written in, so that
# PostgreSQL's plan for a prepared statement walks the indexes as the text says. SQLite, which has no
# row locks and serializes writers, runs it without the lock clauses.
_UNSEEN = (
    "NOT EXISTS (SELECT 1 FROM labeling_assignment s WHERE s.pair_id = p.id AND s.annotator_id = %(user)s "
    # OFFSET keeps PostgreSQL from planning this as an anti join walking the user's whole history.
    "LIMIT 1 OFFSET 0)"
)
_SENT_BACK = (
    "(SELECT p.id FROM labeling_pair p WHERE p.project_id = %(project)s AND p.extra_wanted > 0 "
    "AND p.gold = '' AND p.taken < %(k)s + p.extra_wanted AND {unseen} ORDER BY p.id LIMIT 1{lock})"
)
_NEAR = (  # one per count of judgments, `taken`, from k - 1 down to 1
    "(SELECT p.id FROM (SELECT id FROM labeling_pair WHERE project_id = %(project)s AND gold = '' "
    "AND taken = {taken} ORDER BY id LIMIT {window}) AS near JOIN labeling_pair p ON p.id = near.id "
    "WHERE p.taken < %(k)s + p.extra_wanted AND {unseen} ORDER BY p.id LIMIT 1{lock})"
)
_FRESH = (
    "(SELECT p.id FROM labeling_pair p WHERE p.project_id = %(project)s AND p.gold = '' AND p.taken = 0 "
    "AND {unseen} ORDER BY {first} LIMIT 1{lock})"
)
_ANY = (
    "(SELECT p.id FROM labeling_pair p WHERE p.project_id = %(project)s AND p.gold = '' "
    "AND p.taken < %(k)s + p.extra_wanted AND {unseen} ORDER BY p.taken DESC, {first} LIMIT 1{lock})"
)
_TAKE = "UPDATE labeling_pair SET taken = taken + 1 WHERE id = COALESCE({choices}, NULL) RETURNING {shown}"
# On PostgreSQL the claim writes the lease too (one round trip instead of two): the claimed pair's
# row goes into a new leased assignment, and the statement returns the pair's shown fields with the
# lease's id. Further parameters: a_on_left, now, expires. Every column of labeling_assignment is
# written out (test_claim_writes_the_lease_as_the_orm_would compares the row with an ORM-made one).
CLAIM = (
    "WITH claimed AS (" + _TAKE + "), leased AS ("
    "INSERT INTO labeling_assignment (project_id, pair_id, annotator_id, state, a_on_left, is_gold, "
    "leased_at, expires_at, finished_at, skip_reason) SELECT project_id, id, %(user)s, 'leased', "
    "%(a_on_left)s, false, %(now)s, %(expires)s, NULL, '' FROM claimed RETURNING id, pair_id) "
    "SELECT claimed.*, leased.id AS lease_id FROM claimed JOIN leased ON leased.pair_id = claimed.id"
)


@cache
def _claim_sql(overlap: int, window: int, postgresql: bool, ranked: bool) -> str:
    """CLAIM for a project with overlap k (its text differs only in the counts it walks), taking fresh
    pairs in their queue rank's order when `ranked`, else oldest first. Elsewhere (SQLite: no row locks,
    no writes inside WITH) only the pair is taken; the caller writes the lease."""
    parts = {
        "unseen": _UNSEEN,
        "lock": " FOR NO KEY UPDATE OF p SKIP LOCKED" if postgresql else "",
        "first": "p.queue_rank, p.id" if ranked else "p.id",
    }
    near = [_NEAR.format(taken=taken, window=window, **parts) for taken in range(overlap - 1, 0, -1)]
    choices = [_SENT_BACK.format(**parts), *near, _FRESH.format(**parts), _ANY.format(**parts)]
    return (CLAIM if postgresql else _TAKE).format(choices=", ".join(choices), shown=", ".join(PAIR_SHOWN))


def _claim(project: Project, user: Any, *, a_on_left: bool, now: datetime) -> Assignment | None:
    """Claim the best open pair for this user and lease it to them (CLAIM); None when none is open to them."""
    postgresql = connection.vendor == "postgresql"
    ranked = project.queue_order != Project.QueueOrder.OLDEST
    statement = _claim_sql(project.overlap, CLAIM_WINDOW, postgresql, ranked)
    expires = now + timedelta(minutes=project.lease_minutes)
    params = {"project": project.pk, "k": project.overlap, "user": user.pk}
    if postgresql:
        params.update(a_on_left=a_on_left, now=now, expires=expires)
    for attempt in range(CLAIM_ATTEMPTS):
        if claimed := list(Pair.objects.raw(statement, params)):
            pair = claimed[0]
            lease = Assignment(project=project, pair=pair, annotator=user, a_on_left=a_on_left, leased_at=now,
                               expires_at=expires)  # fmt: skip
            if not postgresql:
                lease.save(force_insert=True)
                return lease
            lease.pk, lease._state.adding, lease._state.db = pair.lease_id, False, connection.alias
            return lease
        if not Pair.objects.filter(_open(project, user)).exists():
            return None
        # Open pairs exist but other claims hold them all for a moment.
        time.sleep(0.002 * (attempt + 1))
    return None


# A ranking rewrites every pair whose rank changes, and claims skip the rows it holds: in one transaction,
# re-ranking 100,000 pairs held nearly every fresh pair for seconds (claims stalled up to 9 s). So it goes
# RANK_CHUNK pairs at a time, in id order, each chunk its own short transaction.
RANK_CHUNK = 2000
# One chunk of a ranking (PostgreSQL): the project's pairs with ids in [lo, hi) get their given rank, or 0
# when not given, written only where it changes. The rows are locked in id order before they are
# written, as expire_leases updates pairs, so that a ranking and a sweep never wait on each other in a
# circle. Parameters: project, lo, hi, and ids and ranks (two arrays of the same length).
RANK = (
    "WITH given AS (SELECT * FROM unnest(%(ids)s::bigint[], %(ranks)s::integer[]) AS g(id, rank)), "
    "changed AS MATERIALIZED (SELECT p.id, COALESCE(g.rank, 0) AS rank FROM labeling_pair p "
    "LEFT JOIN given g ON g.id = p.id WHERE p.project_id = %(project)s AND p.id >= %(lo)s AND p.id < %(hi)s "
    "AND p.queue_rank <> COALESCE(g.rank, 0) ORDER BY p.id FOR NO KEY UPDATE OF p) "
    "UPDATE labeling_pair p SET queue_rank = changed.rank FROM changed WHERE p.id = changed.id"
)
# The same elsewhere (SQLite), once the chunk's pairs are unranked. Parameters: rank, id, project.
RANK_ONE = "UPDATE labeling_pair SET queue_rank = %s WHERE id = %s AND project_id = %s"
# Rankings of one project take turns on a session advisory lock (key: this number and the project's id).
RANK_LOCK = 28
MAX_RANK = 2**31 - 1  # the queue_rank column's largest value
_LAST_ID = 2**63 - 1  # the id column's largest value


def set_queue_ranks(project: Project, ranks: Mapping[int, int], *, ranked_by: str) -> int:
    """Rank the project's pairs for its queue (pair id -> rank, 1 served first) and unrank all others (0:
    served before every ranked pair); the number of its pairs ranked.

    `ranked_by` says which judge ranked them and when, for the project page; it is stored once every rank
    is written (cut to the column's length), and only while some pair is ranked. Ids of pairs not in the
    project (a pair deleted since it was judged) are passed over. The ranks are written RANK_CHUNK pairs
    at a time, each chunk in its own transaction, so claims meanwhile take the pairs the chunk at hand
    does not hold. A claim may then see some pairs at their new ranks and some at their old ones, as it
    may after a ranking that failed halfway: ranks only choose which fresh pair comes next, never whether
    a pair may be taken. Inside a caller's transaction the ranking is all or nothing, but its chunks hold
    their rows until that transaction ends. Rankings of one project take turns.
    Raises ValueError, before writing anything, for a rank below 1 or beyond MAX_RANK.
    """
    limit = Project._meta.get_field("queue_ranked_by").max_length
    ranked_by = ranked_by if len(ranked_by) <= limit else ranked_by[: limit - 1] + "…"
    given = sorted((int(pk), int(rank)) for pk, rank in ranks.items())
    if (bad := next((rank for _, rank in given if not 1 <= rank <= MAX_RANK), None)) is not None:
        raise ValueError(f"Queue ranks run from 1 to {MAX_RANK}; got {bad}.")
    pair_ids = list(Pair.objects.filter(project=project).order_by("id").values_list("id", flat=True))
    known = set(pair_ids)
    ranked = sum(pk in known for pk, _ in given)
    # Chunks of RANK_CHUNK of today's pairs; the last one also holds any pair imported meanwhile.
    bounds = [0, *pair_ids[RANK_CHUNK::RANK_CHUNK], _LAST_ID]
    # Every statement under the lock is in an atomic block, so that even inside a caller's transaction a
    # failed one leaves the connection able to release the lock.
    with _ranking(project):
        start = 0
        for lo, hi in pairwise(bounds):
            end = bisect_left(given, hi, lo=start, key=itemgetter(0))
            _rank_chunk(project, given[start:end], lo=lo, hi=hi)
            start = end
        with transaction.atomic():
            project.queue_ranked_by = ranked_by if ranked else ""
            Project.objects.filter(pk=project.pk).update(queue_ranked_by=project.queue_ranked_by)
            project_changed(Project, project)  # the cached project (labeling.access) names the old ranking
    return ranked


def clear_queue_ranks(project: Project) -> None:
    """Unrank all the project's pairs: its queue serves the oldest fresh pair first, whatever its order."""
    set_queue_ranks(project, {}, ranked_by="")


@contextmanager
def _ranking(project: Project) -> Iterator[None]:
    """Hold the project's ranking lock (PostgreSQL; SQLite writes one at a time anyway)."""
    if connection.vendor != "postgresql":
        yield
        return
    key = {"key": RANK_LOCK, "project": project.pk}
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%(key)s::integer, %(project)s::integer)", key)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%(key)s::integer, %(project)s::integer)", key)


def _rank_chunk(project: Project, given: list[tuple[int, int]], *, lo: int, hi: int) -> None:
    """Give the project's pairs with ids in [lo, hi) their rank in `given` ((id, rank), ids in that
    range), and 0 to the others, in one transaction."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            ids, values = [pk for pk, _ in given], [rank for _, rank in given]
            with connection.cursor() as cursor:
                cursor.execute(RANK, {"project": project.pk, "lo": lo, "hi": hi, "ids": ids, "ranks": values})
            return
        Pair.objects.filter(project=project, id__gte=lo, id__lt=hi).exclude(queue_rank=0).update(queue_rank=0)
        # A short statement a pair: bulk_update's CASE took 3 to 4 times as long (60,000 ranks: 23 s).
        with connection.cursor() as cursor:
            cursor.executemany(RANK_ONE, [(rank, pk, project.pk) for pk, rank in given])


def expire_leases(project: Project, *, now: datetime | None = None) -> int:
    """Return the slots of leases past their time to the pool; the number expired.

    Its own short transaction (a savepoint inside another): leases other sweeps hold are skipped, and
    pairs are updated in id order, so concurrent sweeps never wait on each other in a circle.
    """
    now = now or timezone.now()
    with transaction.atomic():
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


def sweep_now_and_then(project: Project) -> None:
    """`expire_leases` at most every SWEEP_EVERY seconds per project and process. Callers run it before
    their own transaction, so that a sweep never holds rows while it waits on their locks."""
    if time.monotonic() - _last_sweep.get(project.pk, float("-inf")) >= SWEEP_EVERY:
        _last_sweep[project.pk] = time.monotonic()
        expire_leases(project)


def current_lease(project: Project, user: Any, *, now: datetime | None = None) -> Assignment | None:
    """The user's unexpired lease in this project, if any, with the pair's shown fields."""
    lease = (
        Assignment.objects.filter(
            project=project,
            annotator=user,
            state=Assignment.State.LEASED,
            expires_at__gt=now or timezone.now(),
        )
        .select_related("pair")
        .only(*LEASE_FIELDS, *(f"pair__{name}" for name in PAIR_SHOWN))
        .first()
    )
    if lease is not None:
        lease.project, lease.annotator = project, user
    return lease


def _gold_pair(project: Project, user: Any) -> Pair | None:
    """A gold pair this user has not seen, oldest first."""
    unseen_gold = Pair.objects.filter(project=project).exclude(gold="").filter(_unseen(user))
    return unseen_gold.only(*PAIR_SHOWN).order_by("id").first()


def lease_next_pair(
    project: Project, user: Any, *, rng: random.Random | None = None, now: datetime
) -> Assignment | None:
    """A new lease for this user on the pair they should judge now; None when nothing is left for them.

    For a caller in a transaction holding `lock_annotator(project, user)` whose user has no live lease.
    At the project's gold rate, a gold pair they have not seen (gold pairs measure each annotator
    against a known answer: not capped by k); else the regular pair CLAIM picks; else, when no regular
    pair is left, an unseen gold pair. The pair is rendered by the caller once the transaction is over
    (labeling.display.rendered): a slow render must not hold the pair's row.
    """
    rng = rng or random
    a_on_left = rng.random() < 0.5
    gold_turn = bool(project.gold_rate) and rng.random() < project.gold_rate
    gold = _gold_pair(project, user) if gold_turn else None
    if gold is None and (lease := _claim(project, user, a_on_left=a_on_left, now=now)):
        return lease
    if gold is None and project.gold_rate and not gold_turn:
        gold = _gold_pair(project, user)
    if gold is None:
        return None
    return Assignment.objects.create(
        project=project,
        pair=gold,
        annotator=user,
        a_on_left=a_on_left,
        is_gold=True,
        leased_at=now,
        expires_at=now + timedelta(minutes=project.lease_minutes),
    )


def claim_next_pair(project: Project, user: Any, *, rng: random.Random | None = None) -> Assignment | None:
    """The pair this user should judge now, leased to them; None when nothing is left for them.

    Returns the user's open lease again if they have one (reload-safe); else `lease_next_pair`. When
    nothing is left, leases past their time are returned to the pool and the claim is tried once more.
    """
    sweep_now_and_then(project)
    for last_try in (False, True):
        now = timezone.now()
        with transaction.atomic():
            lock_annotator(project, user, now=now)
            lease = current_lease(project, user, now=now) or lease_next_pair(project, user, rng=rng, now=now)
        if lease is not None or last_try or not expire_leases(project):
            return lease
    return None


def skip_pair(*, assignment: Assignment, reason: str) -> None:
    """The annotator passes on this pair: its slot goes back to the pool, and they never get it again."""
    now = timezone.now()
    with transaction.atomic():
        counted = tally.lock(assignment.project_id, assignment.annotator_id, now=now)  # as claims do
        locked = Assignment.objects.select_for_update(no_key=True).get(pk=assignment.pk)
        if locked.state != Assignment.State.LEASED:
            return
        locked.state, locked.skip_reason, locked.finished_at = Assignment.State.SKIPPED, reason, now
        locked.save(update_fields=["state", "skip_reason", "finished_at"])
        tally.record(counted, skipped=1, now=now)
        if not locked.is_gold:
            Pair.objects.filter(pk=locked.pair_id).update(taken=F("taken") - 1)
