"""Handing out pairs: overlap k, preference for nearly complete pairs, leases, skips, gold, sides."""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.db.models import Count, F, Q
from django.utils import timezone

import labeling.assignment as assigning
from labeling import judging
from labeling.assignment import claim_next_pair, expire_leases, skip_pair
from labeling.judging import (
    JudgmentConflict,
    JudgmentRefused,
    Verdict,
    submit_and_claim_next,
    submit_judgment,
)
from labeling.models import Assignment, ImportBatch, Judgment, Membership, Pair, Project

LIVE = Q(state__in=[Assignment.State.LEASED, Assignment.State.DONE])


def make_pairs(project: Project, n: int, *, gold: str = "") -> list[Pair]:
    batch = ImportBatch.objects.create(project=project, source_name="t.jsonl", state="done")
    start = Pair.objects.count()
    return Pair.objects.bulk_create(
        Pair(
            project=project, batch=batch, prompt=f"Q{i}", response_a=f"A{i}", response_b=f"B{i}",
            shape="pair", content_hash=f"{i:064d}", gold=gold,
        )
        for i in range(start, start + n)
    )  # fmt: skip


def annotators(make_user, project: Project, n: int) -> list:
    users = []
    for i in range(n):
        user = make_user(f"a{i}", "annotator")
        Membership.objects.create(project=project, user=user)
        users.append(user)
    return users


def judged_by(pair: Pair, user) -> None:
    """`user` judged `pair` (as if earlier, with the workbench under test not involved)."""
    now = timezone.now()
    Assignment.objects.create(
        project=pair.project, pair=pair, annotator=user, state="done", leased_at=now, expires_at=now,
        finished_at=now,
    )  # fmt: skip
    Pair.objects.filter(pk=pair.pk).update(taken=F("taken") + 1)


def submit(assignment: Assignment, verdict: Verdict) -> tuple[Judgment, bool]:
    return submit_judgment(
        assignment_id=assignment.pk,
        annotator=assignment.annotator,
        project=assignment.project,
        verdict=verdict,
    )


def judge(assignment: Assignment, choice: str = "left") -> Judgment:
    return submit(assignment, Verdict(choice=choice))[0]


@pytest.mark.django_db
class TestNextAssignment:
    def test_a_reload_returns_the_same_lease(self, project, make_user):
        make_pairs(project, 3)
        (user,) = annotators(make_user, project, 1)
        first = claim_next_pair(project, user)
        assert first.state == "leased" and first.expires_at > timezone.now()
        assert claim_next_pair(project, user) == first
        assert Assignment.objects.count() == 1

    def test_claim_writes_the_lease_as_the_orm_would(self, project, make_user):
        """On PostgreSQL CLAIM writes the lease itself, every column written out: the row and the object
        handed back equal what Assignment.objects.create makes (a column added later fails here)."""
        p1, p2 = make_pairs(project, 2)
        (user,) = annotators(make_user, project, 1)
        now = timezone.now()
        claimed = assigning._claim(project, user, a_on_left=False, now=now)
        made = Assignment.objects.create(project=project, pair=p2, annotator=user, a_on_left=False,
                                         leased_at=now, expires_at=claimed.expires_at)  # fmt: skip
        assert claimed.pair_id == p1.pk
        assert claimed.expires_at == now + timedelta(minutes=project.lease_minutes)
        columns = [f.attname for f in Assignment._meta.concrete_fields if f.attname not in ("id", "pair_id")]
        stored = Assignment.objects.filter(pk__in=[claimed.pk, made.pk]).order_by("pk").values(*columns)
        assert stored[0] == stored[1] == {c: getattr(made, c) for c in columns}
        assert {c: getattr(claimed, c) for c in columns} == stored[0]
        assert not claimed._state.adding and claimed.pair.prompt == "Q0"
        assert Pair.objects.get(pk=p1.pk).taken == 1

    def test_prefers_pairs_closest_to_complete_then_oldest(self, project, make_user):
        p1, p2, p3 = make_pairs(project, 3)
        u1, u2, u3 = annotators(make_user, project, 3)
        judge(claim_next_pair(project, u1))  # u1 judges p1 (the oldest)
        assert claim_next_pair(project, u2).pair == p1  # p1 has one judgment: finish it first
        assert claim_next_pair(project, u3).pair == p1
        assert Pair.objects.get(pk=p1.pk).taken == 3

    def test_an_annotator_far_ahead_starts_fresh_pairs_and_others_follow_their_trail(
        self, project, make_user, monkeypatch
    ):
        """A claim looks at CLAIM_WINDOW pairs per number of judgments, not at the whole lead of an
        annotator ahead of the rest: past the window it starts the oldest fresh pair, and only when
        none is left does it look at every open pair."""
        monkeypatch.setattr(assigning, "CLAIM_WINDOW", 2)
        p = make_pairs(project, 5)
        leader, follower, other = annotators(make_user, project, 3)
        assert [judge(claim_next_pair(project, leader)).pair for _ in range(3)] == p[:3]
        judged_by(p[4], other)  # in progress too, but past the leader's window of pairs with 1 judgment
        assert claim_next_pair(project, leader).pair == p[3]  # the window holds p0 and p1, both theirs
        judge(claim_next_pair(project, leader))
        assert [judge(claim_next_pair(project, follower)).pair for _ in range(2)] == p[:2]  # the trail
        # No fresh pair is left and the leader's windows hold only their own: all open pairs are looked at.
        assert claim_next_pair(project, leader).pair == p[4]

    def test_never_more_than_k_and_never_twice_to_one_user(self, project, make_user):
        project.overlap = 2
        project.save()
        make_pairs(project, 3)
        users = annotators(make_user, project, 4)
        for _ in range(3):
            for user in users:
                assignment = claim_next_pair(project, user)
                if assignment:
                    judge(assignment)
        per_pair = (
            Assignment.objects.filter(LIVE).values("pair").annotate(n=Count("annotator", distinct=True))
        )
        assert sorted(row["n"] for row in per_pair) == [2, 2, 2]
        assert Judgment.objects.count() == 6
        assert all(claim_next_pair(project, u) is None for u in users)

    def test_a_pair_sent_back_goes_first_to_one_more_annotator_who_has_not_seen_it(self, project, make_user):
        from labeling.review import pair_send_back

        project.overlap = 2
        project.save()
        p1, p2, p3 = make_pairs(project, 3)
        u1, u2, u3, u4 = annotators(make_user, project, 4)
        judged_by(p2, u1)
        judged_by(p2, u2)  # p2 is complete
        assert claim_next_pair(project, u3).pair == p1  # complete pairs are not handed out
        assert pair_send_back(pair=p2) == 1
        # Before the fresh p3 and the half-done p1: the pair a lead is waiting on.
        assert claim_next_pair(project, u4).pair == p2
        assert Pair.objects.get(pk=p2.pk).taken == 3
        judge(Assignment.objects.get(annotator=u4, pair=p2))
        # Its one extra judgment is in: the pair is closed again, and never offered to those who saw it.
        assert claim_next_pair(project, u4).pair != p2
        assert claim_next_pair(project, u1).pair != p2

    def test_skip_returns_the_slot_and_the_pair_never_comes_back(self, project, make_user):
        project.overlap = 1
        project.save()
        (pair,) = make_pairs(project, 1)
        u1, u2 = annotators(make_user, project, 2)
        assignment = claim_next_pair(project, u1)
        assert claim_next_pair(project, u2) is None  # k=1 and the slot is leased
        skip_pair(assignment=assignment, reason="offensive")
        assert Assignment.objects.get(pk=assignment.pk).skip_reason == "offensive"
        assert claim_next_pair(project, u1) is None
        assert claim_next_pair(project, u2).pair == pair

    def test_expired_lease_goes_back_to_the_pool(self, project, make_user):
        project.overlap = 1
        project.save()
        (pair,) = make_pairs(project, 1)
        u1, u2 = annotators(make_user, project, 2)
        stale = claim_next_pair(project, u1)
        Assignment.objects.filter(pk=stale.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        fresh = claim_next_pair(project, u2)
        assert fresh.pair == pair
        assert Assignment.objects.get(pk=stale.pk).state == "expired"
        with pytest.raises(JudgmentRefused, match="went to someone else"):
            judge(stale)
        assert claim_next_pair(project, u1) is None  # the expired user does not get it again

    def test_an_expired_lease_can_still_be_submitted_while_its_slot_is_free(self, project, make_user):
        make_pairs(project, 1)
        (user,) = annotators(make_user, project, 1)
        stale = claim_next_pair(project, user)
        Assignment.objects.filter(pk=stale.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        assert expire_leases(project) == 1 and Pair.objects.get().taken == 0
        judge(stale)
        assert Pair.objects.get().taken == 1 and Assignment.objects.get().state == "done"

    def test_gold_items_mix_in_at_the_rate_and_are_not_capped(self, project, make_user):
        project.overlap, project.gold_rate = 1, 0.5
        project.save()
        make_pairs(project, 40)
        (gold,) = make_pairs(project, 1, gold="a")
        users = annotators(make_user, project, 3)
        for user in users:
            rng = random.Random(1)
            served = []
            while (a := claim_next_pair(project, user, rng=rng)) is not None:
                served.append(a)
                judge(a)
            assert gold.pk in [a.pair_id for a in served]
            assert [a.is_gold for a in served].count(True) == 1
        assert Judgment.objects.filter(pair=gold).count() == 3  # every annotator saw the gold pair
        assert Judgment.objects.get(pair=gold, annotator=users[0]).is_gold

    def test_when_regular_pairs_run_out_unseen_gold_pairs_still_come(self, project, make_user):
        project.gold_rate = 0.01
        project.save()
        make_pairs(project, 2)
        (gold,) = make_pairs(project, 1, gold="b")
        (user,) = annotators(make_user, project, 1)

        class NeverGold(random.Random):
            def random(self) -> float:
                return 0.99  # never the gold turn (and A always on the right)

        served = []
        while (a := claim_next_pair(project, user, rng=NeverGold())) is not None:
            served.append(a.pair_id)
            judge(a)
        assert served[-1] == gold.pk and len(served) == 3

    def test_gold_pairs_are_not_served_when_the_rate_is_zero(self, project, make_user):
        make_pairs(project, 1, gold="b")
        (user,) = annotators(make_user, project, 1)
        assert claim_next_pair(project, user) is None

    def test_sides_are_randomized_and_recorded(self, project, make_user):
        make_pairs(project, 60)
        (user,) = annotators(make_user, project, 1)
        rng = random.Random(7)
        sides = []
        for _ in range(60):
            assignment = claim_next_pair(project, user, rng=rng)
            judgment = judge(assignment, "left")
            sides.append(assignment.a_on_left)
            # "left" means whichever response was shown on the left
            assert judgment.choice == ("a" if assignment.a_on_left else "b")
            assert judgment.a_on_left == assignment.a_on_left
        assert 15 < sides.count(True) < 45

    def test_double_submit_stores_one_judgment(self, project, make_user):
        make_pairs(project, 2)
        (user,) = annotators(make_user, project, 1)
        assignment = claim_next_pair(project, user)
        first, created = submit(assignment, Verdict(choice="left"))
        again, created_again = submit(assignment, Verdict(choice="left"))
        assert created and not created_again and first == again
        assert Judgment.objects.count() == 1 and Judgment.objects.get().seconds_spent >= 0
        with pytest.raises(JudgmentConflict) as conflict:  # another choice is not dropped quietly
            submit(assignment, Verdict(choice="right"))
        assert conflict.value.judgment == first and Judgment.objects.get().choice == first.choice

    def test_submit_and_next_stores_the_judgment_and_leases_the_next_pair(self, project, make_user):
        make_pairs(project, 2)
        (user,) = annotators(make_user, project, 1)
        first = claim_next_pair(project, user)
        judgment, upcoming, _ = submit_and_claim_next(
            assignment_id=first.pk, annotator=user, project=project, verdict=Verdict(choice="tie")
        )
        assert judgment.choice == "tie" and Assignment.objects.get(pk=first.pk).state == "done"
        assert upcoming.pair != first.pair and upcoming.state == "leased"
        assert Assignment.objects.get(pk=upcoming.pk).pair_id == upcoming.pair.pk
        assert claim_next_pair(project, user) == upcoming  # the one lease, reload-safe
        last, none_left, _ = submit_and_claim_next(
            assignment_id=upcoming.pk, annotator=user, project=project, verdict=Verdict(choice="left")
        )
        assert none_left is None and Judgment.objects.count() == 2

    @pytest.mark.parametrize("gold_turn", [False, True], ids=["claim carries the writes", "sent alone"])
    def test_submit_and_next_stores_once_whoever_sends_the_writes(
        self, project, make_user, monkeypatch, gold_turn
    ):
        """On PostgreSQL the judgment's writes travel in the claim of the next pair; on a gold turn no
        claim runs and they go alone. Either way: stored once, counted, and a retry stores nothing."""
        project.gold_rate = 0.5 if gold_turn else 0.0
        project.save()
        make_pairs(project, 3)
        make_pairs(project, 1, gold="a")
        (user,) = annotators(make_user, project, 1)
        monkeypatch.setattr(random, "random", lambda: 0.9)  # the first lease is a regular pair
        first = claim_next_pair(project, user)
        monkeypatch.setattr(random, "random", lambda: 0.0)  # then a gold turn, if the project has gold
        judgment, upcoming, _ = submit_and_claim_next(
            assignment_id=first.pk, annotator=user, project=project, verdict=Verdict(choice="left")
        )
        assert (
            judgment.pk == Judgment.objects.get().pk and Assignment.objects.get(pk=first.pk).state == "done"
        )
        assert upcoming.is_gold is gold_turn and upcoming.pair != first.pair
        progress = judging.progress(project, user, has_lease=True)
        assert (progress.total, progress.today) == (1, 1)
        again, _, _ = submit_and_claim_next(  # a retried POST: the stored judgment, nothing more
            assignment_id=first.pk, annotator=user, project=project, verdict=Verdict(choice="left")
        )
        assert again == judgment and Judgment.objects.count() == 1

    @pytest.mark.parametrize("and_next", [False, True], ids=["submit", "submit and next"])
    def test_a_judgment_written_around_the_workbench_stands(self, project, make_user, and_next):
        """An admin or an import judged the pair for the annotator while their lease was live: submitting
        keeps that judgment, marks the lease done and counts it once; nothing else is written."""
        make_pairs(project, 2)
        (user,) = annotators(make_user, project, 1)
        lease = claim_next_pair(project, user)
        written = Judgment.objects.create(pair=lease.pair, annotator=user, choice="tie")
        if and_next:
            judgment, upcoming, counted = submit_and_claim_next(
                assignment_id=lease.pk, annotator=user, project=project, verdict=Verdict(choice="left")
            )
            assert upcoming.pair != lease.pair and counted.judged == 1
        else:
            judgment, created = submit(lease, Verdict(choice="left"))
            assert not created
        assert judgment == written and Judgment.objects.get().choice == "tie"
        assert Assignment.objects.get(pk=lease.pk).state == "done"
        assert judging.progress(project, user, has_lease=and_next).total == 1
        assert Assignment.objects.filter(state="leased").count() == int(and_next)

    def test_submit_and_next_refused_stores_nothing(self, project, make_user):
        make_pairs(project, 2)
        (user,) = annotators(make_user, project, 1)
        lease = claim_next_pair(project, user)
        skip_pair(assignment=lease, reason="broken")
        with pytest.raises(JudgmentRefused, match="skipped"):
            submit_and_claim_next(
                assignment_id=lease.pk, annotator=user, project=project, verdict=Verdict(choice="left")
            )
        assert not Judgment.objects.exists()
        assert not Assignment.objects.filter(state="leased").exists()  # no lease was taken either

    def test_submit_and_next_for_someone_elses_assignment_is_refused(self, project, make_user):
        make_pairs(project, 2)
        owner, other = annotators(make_user, project, 2)
        lease = claim_next_pair(project, owner)
        with pytest.raises(Assignment.DoesNotExist):
            submit_and_claim_next(
                assignment_id=lease.pk, annotator=other, project=project, verdict=Verdict(choice="left")
            )
        assert not Judgment.objects.exists() and not Assignment.objects.filter(annotator=other).exists()


def run_threads(count: int, target) -> list:
    results, errors = [None] * count, []
    barrier = threading.Barrier(count)

    def work(i: int) -> None:
        try:
            barrier.wait()
            results[i] = target(i)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


@pytest.mark.django_db(transaction=True)
class TestConcurrency:
    """Real threads against PostgreSQL: skip-locked claims, per-user locks, idempotent submits."""

    @pytest.fixture(autouse=True)
    def _postgres_only(self):
        if connection.vendor != "postgresql":
            pytest.skip("concurrency guarantees are PostgreSQL's (select_for_update skip_locked)")

    def test_forty_threads_of_ten_annotators_never_exceed_k(self, make_user):
        project = Project.objects.create(slug="race", name="Race", overlap=3)
        make_pairs(project, 12)
        users = annotators(make_user, project, 10)
        for _round in range(4):
            leases = run_threads(40, lambda i: claim_next_pair(project, users[i % 10]))
            by_user = {}
            for user_index, lease in ((i % 10, lease) for i, lease in enumerate(leases)):
                by_user.setdefault(user_index, set()).add(lease.pk if lease else None)
            assert all(len(ids) == 1 for ids in by_user.values()), (
                by_user
            )  # 4 tabs of one user share one lease
            run_threads(10, lambda i: (a := claim_next_pair(project, users[i])) and judge(a))
        live = Assignment.objects.filter(LIVE).values("pair").annotate(n=Count("annotator", distinct=True))
        assert max(row["n"] for row in live) <= 3
        for pair in Pair.objects.all():
            assert pair.taken == Assignment.objects.filter(LIVE, pair=pair).count()
        duplicated = Assignment.objects.values("pair", "annotator").annotate(n=Count("id")).filter(n__gt=1)
        assert not duplicated.exists()
        assert Judgment.objects.count() == 36  # 12 pairs x k=3, all judged over four rounds

    def test_concurrent_double_submit_stores_one_judgment(self, make_user):
        project = Project.objects.create(slug="dbl", name="Double", overlap=3)
        make_pairs(project, 1)
        (user,) = annotators(make_user, project, 1)
        assignment = claim_next_pair(project, user)
        results = run_threads(8, lambda i: submit(assignment, Verdict(choice="tie")))
        assert [created for _, created in results].count(True) == 1
        assert Judgment.objects.count() == 1

    def test_leases_expiring_under_load_return_their_slots_once(self, make_user):
        project = Project.objects.create(slug="exp", name="Expiry", overlap=2)
        make_pairs(project, 5)
        users = annotators(make_user, project, 10)
        run_threads(10, lambda i: claim_next_pair(project, users[i]))
        Assignment.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
        run_threads(10, lambda i: claim_next_pair(project, users[i]))
        for pair in Pair.objects.all():
            assert pair.taken == Assignment.objects.filter(pair=pair, state="leased").count() <= 2

    def test_annotators_judging_in_many_tabs_keep_every_invariant(self, make_user):
        """The workbench's path: submit and lease the next pair in one transaction, 3 tabs per user."""
        project = Project.objects.create(slug="tabs", name="Tabs", overlap=3)
        make_pairs(project, 20)
        users = annotators(make_user, project, 8)

        def work(i: int) -> None:
            user = users[i % 8]
            lease = claim_next_pair(project, user)
            while lease is not None:  # a tab that submits a lease another tab already judged gets the next
                _, lease, _ = submit_and_claim_next(
                    assignment_id=lease.pk, annotator=user, project=project, verdict=Verdict(choice="left")
                )

        run_threads(24, work)
        assert Judgment.objects.count() == 60  # 20 pairs x k=3, nothing lost, nothing twice
        live = Assignment.objects.filter(LIVE).values("pair").annotate(n=Count("annotator", distinct=True))
        assert max(row["n"] for row in live) == 3
        assert all(p.taken == 3 for p in Pair.objects.all())
        assert not Assignment.objects.filter(state="leased").exists()
        assert not Assignment.objects.filter(state="done", judgment__isnull=True).exists()
