"""Label what matters first (issue 28): fresh pairs in the order an AI judge ranked them, with k, leases
and never twice to one annotator as they were; ranking in bulk; the setting, its signal and its line."""

from __future__ import annotations

import random

import pytest
from django.db import connection, transaction
from django.db.models import Count
from django.test import Client

import labeling.assignment as assigning
from labeling.assignment import MAX_RANK, claim_next_pair, clear_queue_ranks, set_queue_ranks
from labeling.judging import Verdict, submit_and_claim_next
from labeling.models import Assignment, Judgment, Pair, Project
from labeling.review import pair_send_back
from labeling.signals import queue_order_changed
from tests.labeling import test_assignment as base
from tests.labeling.test_assignment import LIVE, annotators, judge, judged_by, make_pairs, run_threads

UNCERTAIN = Project.QueueOrder.JUDGE_UNCERTAIN


def ordered(project: Project, order: str = UNCERTAIN) -> Project:
    project.queue_order = order
    project.save()
    return project


def ranks_of(project: Project) -> dict[int, int]:
    return dict(Pair.objects.filter(project=project).values_list("id", "queue_rank"))


def served(project: Project, user) -> list[Pair]:
    """The pairs `user` is handed, one after the other, judging each, until none is left."""
    pairs = []
    while lease := claim_next_pair(project, user):
        pairs.append(judge(lease).pair)
    return pairs


@pytest.mark.django_db
class TestClaimOrder:
    def test_fresh_pairs_come_in_rank_order_unranked_first(self, project, make_user):
        ordered(project).overlap = 1
        project.save()
        p = make_pairs(project, 6)
        (user,) = annotators(make_user, project, 1)
        assert set_queue_ranks(project, {p[1].pk: 3, p[2].pk: 1, p[4].pk: 2, p[5].pk: 2}, ranked_by="j") == 4
        # Unranked (the judge has not seen them) first, oldest first; then by rank; a tie goes oldest first.
        assert served(project, user) == [p[0], p[3], p[2], p[4], p[5], p[1]]

    @pytest.mark.parametrize(
        "order", [Project.QueueOrder.JUDGE_UNCERTAIN, Project.QueueOrder.JUDGE_INCONSISTENT]
    )
    def test_both_judge_orders_serve_by_rank_and_oldest_first_ignores_ranks(self, project, make_user, order):
        project.overlap = 1
        project.save()
        p = make_pairs(project, 4)
        first, second = annotators(make_user, project, 2)
        set_queue_ranks(project, {p[0].pk: 4, p[1].pk: 3, p[2].pk: 2, p[3].pk: 1}, ranked_by="j")
        assert claim_next_pair(ordered(project, Project.QueueOrder.OLDEST), first).pair == p[0]
        assert claim_next_pair(ordered(project, order), second).pair == p[3]

    def test_sent_back_and_nearly_complete_pairs_still_come_before_the_first_ranked(self, project, make_user):
        ordered(project).overlap = 2
        project.save()
        p = make_pairs(project, 4)
        u1, u2, u3, u4, u5 = annotators(make_user, project, 5)
        set_queue_ranks(project, {p[0].pk: 9, p[1].pk: 8, p[2].pk: 7, p[3].pk: 1}, ranked_by="j")
        judged_by(p[0], u1)  # one judgment short of k, ranked last
        assert claim_next_pair(project, u2).pair == p[0]
        judged_by(p[1], u1)
        judged_by(p[1], u2)  # complete, then sent back for one more
        assert pair_send_back(pair=p[1]) == 1
        assert claim_next_pair(project, u3).pair == p[1]
        assert claim_next_pair(project, u4).pair == p[3]  # the fresh pair ranked first, before p2
        assert claim_next_pair(project, u5).pair == p[3]  # now one short of k

    def test_a_pair_whose_lease_ended_goes_back_to_its_place_among_fresh_pairs(self, project, make_user):
        ordered(project).overlap = 1
        project.save()
        p = make_pairs(project, 3)
        u1, u2 = annotators(make_user, project, 2)
        set_queue_ranks(project, {p[0].pk: 3, p[1].pk: 1, p[2].pk: 2}, ranked_by="j")
        lease = claim_next_pair(project, u1)
        assert lease.pair == p[1]
        assigning.skip_pair(assignment=lease, reason=Assignment.SkipReason.CANT_JUDGE)
        assert claim_next_pair(project, u2).pair == p[1]  # taken 0 again: first by its rank

    @pytest.mark.parametrize("order", [Project.QueueOrder.OLDEST, UNCERTAIN])
    def test_past_its_windows_and_fresh_pairs_a_claim_takes_open_pairs_by_judgments_then_rank(
        self, project, make_user, monkeypatch, order
    ):
        """The last choice (_ANY): the pair with most judgments, then by rank (oldest first when the
        project orders its queue oldest first)."""
        monkeypatch.setattr(assigning, "CLAIM_WINDOW", 1)
        ordered(project, order)
        p = make_pairs(project, 4)
        leader, other = annotators(make_user, project, 2)
        set_queue_ranks(project, {p[0].pk: 1, p[1].pk: 4, p[2].pk: 3, p[3].pk: 2}, ranked_by="j")
        judged_by(p[0], leader)
        for pair in p[1:]:
            judged_by(pair, other)
        # The leader's window of pairs with one judgment holds p0, theirs; no pair is fresh.
        expected = [p[1], p[2], p[3]] if order == Project.QueueOrder.OLDEST else [p[3], p[2], p[1]]
        assert served(project, leader) == expected

    def test_ranks_never_serve_a_pair_twice_or_beyond_k(self, project, make_user):
        ordered(project).overlap = 2
        project.save()
        pairs = make_pairs(project, 7)
        users = annotators(make_user, project, 5)
        rng = random.Random(7)
        for _ in range(6):
            for user in users:  # the ranks change between claims, with leases out
                set_queue_ranks(
                    project, {q.pk: rng.randint(1, 4) for q in rng.sample(pairs, 4)}, ranked_by="j"
                )
                if lease := claim_next_pair(project, user):
                    judge(lease)
        live = Assignment.objects.filter(LIVE).values("pair").annotate(n=Count("annotator", distinct=True))
        assert sorted(row["n"] for row in live) == [2] * 7
        assert Judgment.objects.count() == 14
        assert all(p.taken == 2 for p in Pair.objects.all())


@pytest.mark.django_db
class TestSetQueueRanks:
    def test_it_ranks_the_given_pairs_and_unranks_every_other(self, project, other_project):
        p = make_pairs(project, 5)
        (foreign,) = make_pairs(other_project, 1)
        set_queue_ranks(project, {p[0].pk: 5, p[1].pk: 4}, ranked_by="first judge")
        set_queue_ranks(other_project, {foreign.pk: 2}, ranked_by="theirs")
        count = set_queue_ranks(
            project, {p[1].pk: 1, p[2].pk: 2, foreign.pk: 1, 10**9: 3}, ranked_by="judge “J” (run 2)"
        )
        assert count == 2  # the other project's pair and an id that is no pair are passed over
        assert ranks_of(project) == {p[0].pk: 0, p[1].pk: 1, p[2].pk: 2, p[3].pk: 0, p[4].pk: 0}
        assert Pair.objects.get(pk=foreign.pk).queue_rank == 2
        project.refresh_from_db()
        assert project.queue_ranked_by == "judge “J” (run 2)"
        assert Project.objects.get(pk=other_project.pk).queue_ranked_by == "theirs"

    def test_clearing_unranks_all_and_forgets_who_ranked(self, project):
        p = make_pairs(project, 3)
        set_queue_ranks(project, {p[0].pk: 1}, ranked_by="j")
        clear_queue_ranks(project)
        assert set(ranks_of(project).values()) == {0} and project.queue_ranked_by == ""
        assert Project.objects.get(pk=project.pk).queue_ranked_by == ""
        assert set_queue_ranks(project, {}, ranked_by="j") == 0
        assert Project.objects.get(pk=project.pk).queue_ranked_by == ""  # nothing ranked: nobody named

    def test_a_long_ranked_by_is_cut_to_fit(self, project):
        (pair,) = make_pairs(project, 1)
        set_queue_ranks(project, {pair.pk: 1}, ranked_by="judge " + "x" * 300)
        stored = Project.objects.get(pk=project.pk).queue_ranked_by
        assert len(stored) == 255 and stored.startswith("judge xx") and stored.endswith("x…")

    @pytest.mark.parametrize("bad", [0, -1, MAX_RANK + 1])
    def test_a_rank_out_of_range_is_refused_before_anything_is_written(self, project, bad):
        p = make_pairs(project, 3)
        set_queue_ranks(project, {p[0].pk: 1}, ranked_by="before")
        with pytest.raises(ValueError, match="Queue ranks run from 1"):
            set_queue_ranks(project, {p[1].pk: 2, p[2].pk: bad}, ranked_by="after")
        assert ranks_of(project) == {p[0].pk: 1, p[1].pk: 0, p[2].pk: 0}
        assert Project.objects.get(pk=project.pk).queue_ranked_by == "before"

    def test_many_chunks_rank_exactly_as_one(self, project, monkeypatch):
        pairs = make_pairs(project, 23)
        rng = random.Random(3)
        ranks = {p.pk: rng.randint(1, 9) for p in rng.sample(pairs, 15)}
        set_queue_ranks(project, {p.pk: 1 for p in pairs}, ranked_by="j")
        monkeypatch.setattr(assigning, "RANK_CHUNK", 4)
        assert set_queue_ranks(project, ranks, ranked_by="j") == 15
        assert ranks_of(project) == {p.pk: ranks.get(p.pk, 0) for p in pairs}

    def test_inside_a_transaction_a_ranking_is_all_or_nothing(self, project, monkeypatch):
        monkeypatch.setattr(assigning, "RANK_CHUNK", 2)
        pairs = make_pairs(project, 7)
        set_queue_ranks(project, {p.pk: 1 for p in pairs}, ranked_by="before")
        with pytest.raises(RuntimeError), transaction.atomic():
            set_queue_ranks(project, {p.pk: i + 2 for i, p in enumerate(pairs[:5])}, ranked_by="after")
            raise RuntimeError("the caller fails after the ranking")
        assert ranks_of(project) == {p.pk: 1 for p in pairs}
        assert Project.objects.get(pk=project.pk).queue_ranked_by == "before"

    def test_the_project_page_names_the_new_ranking_at_once(self, project, lead):
        """The project is cached (labeling.access): a ranking drops it, as saving the project does."""
        client = Client()
        client.force_login(lead)
        ordered(project)
        (pair,) = make_pairs(project, 1)
        assert "no pair is ranked yet" in client.get(project.get_absolute_url()).content.decode()
        set_queue_ranks(project, {pair.pk: 1}, ranked_by="judge “J”")
        assert "ranked by judge “J”" in client.get(project.get_absolute_url()).content.decode()


@pytest.mark.django_db(transaction=True)
class TestConcurrency:
    """The claim's PostgreSQL scenarios of test_assignment, rerun with pairs ranked at random."""

    @pytest.fixture(autouse=True)
    def _postgres_only(self):
        if connection.vendor != "postgresql":
            pytest.skip("concurrency guarantees are PostgreSQL's (select_for_update skip_locked)")

    @pytest.fixture(
        params=[(UNCERTAIN, 1), (Project.QueueOrder.JUDGE_INCONSISTENT, 2)], ids=["uncertain", "inconsistent"]
    )
    def ranked_pairs(self, request, monkeypatch):
        """test_assignment's make_pairs, then the project ordered by a judge and some pairs ranked at random
        (ties and unranked pairs included)."""
        order, seed = request.param
        rng = random.Random(seed)

        def make_ranked_pairs(project: Project, n: int, **kwargs) -> list[Pair]:
            pairs = make_pairs(project, n, **kwargs)
            ordered(project, order)
            set_queue_ranks(
                project,
                {p.pk: rng.randint(1, n // 2) for p in rng.sample(pairs, n * 2 // 3)},
                ranked_by="test",
            )
            return pairs

        monkeypatch.setattr(base, "make_pairs", make_ranked_pairs)

    def test_forty_threads_of_ten_annotators_never_exceed_k(self, make_user, ranked_pairs):
        base.TestConcurrency().test_forty_threads_of_ten_annotators_never_exceed_k(make_user)
        assert Project.objects.get(slug="race").queue_order != Project.QueueOrder.OLDEST
        assert Pair.objects.filter(queue_rank__gt=0).count() == 8

    def test_annotators_judging_in_many_tabs_keep_every_invariant(self, make_user, ranked_pairs):
        base.TestConcurrency().test_annotators_judging_in_many_tabs_keep_every_invariant(make_user)
        assert Pair.objects.filter(queue_rank__gt=0).count() == 13

    def test_rankings_while_annotators_judge_refuse_no_claim_and_keep_every_invariant(
        self, make_user, monkeypatch
    ):
        """A ranking writes a few pairs at a time while annotators judge in the workbench's path: no claim
        comes back empty while a pair is open to its annotator, and k holds. (No lease ends in between,
        so a pair closed to an annotator stays closed: an empty claim is checked after the fact.)"""
        monkeypatch.setattr(assigning, "RANK_CHUNK", 3)
        project = ordered(Project.objects.create(slug="rank-race", name="Rank race", overlap=3))
        pairs = make_pairs(project, 20)
        users = annotators(make_user, project, 6)
        finished, rng = [], random.Random(5)

        def work(i: int) -> None:
            if i == 6:  # the evaluation app ranking over and over, until the annotators are done
                while len(finished) < 6:
                    set_queue_ranks(project, {p.pk: rng.randint(1, 20) for p in pairs}, ranked_by="loop")
                return
            try:
                lease = claim_next_pair(project, users[i])
                while lease is not None:
                    _, lease, _ = submit_and_claim_next(
                        assignment_id=lease.pk,
                        annotator=users[i],
                        project=project,
                        verdict=Verdict(choice="left"),
                    )
                assert not Pair.objects.filter(assigning._open(project, users[i])).exists()
            finally:
                finished.append(i)

        run_threads(7, work)
        assert Judgment.objects.count() == 60  # 20 pairs x k=3, nothing lost, nothing twice
        live = Assignment.objects.filter(LIVE).values("pair").annotate(n=Count("annotator", distinct=True))
        assert {row["n"] for row in live} == {3}
        assert all(p.taken == 3 for p in Pair.objects.all())
        assert not Assignment.objects.filter(state="leased").exists()

    def test_rankings_at_once_take_turns(self, monkeypatch):
        """Each ranking of a project is written whole: rankings at once follow one another, never mixed."""
        monkeypatch.setattr(assigning, "RANK_CHUNK", 2)
        project = ordered(Project.objects.create(slug="turns", name="Rankings at once"))
        pairs = make_pairs(project, 120)
        rankings = [{p.pk: random.Random(i).randint(1, 1000) for p in pairs} for i in range(4)]
        run_threads(4, lambda i: set_queue_ranks(project, rankings[i], ranked_by=f"ranking {i}"))
        project.refresh_from_db()
        assert ranks_of(project) == rankings[int(project.queue_ranked_by[-1])]


@pytest.mark.django_db
class TestSetting:
    @pytest.fixture
    def sent(self):
        calls = []

        def receiver(sender, project, **kwargs):
            calls.append((sender, project.pk, project.queue_order))

        queue_order_changed.connect(receiver, dispatch_uid="test-queue-order")
        yield calls
        queue_order_changed.disconnect(dispatch_uid="test-queue-order")

    @pytest.fixture
    def admin_client(self, admin_user) -> Client:
        client = Client()
        client.force_login(admin_user)
        return client

    def settings_form(self, project: Project, **fields) -> dict:
        return {"name": project.name, "slug": project.slug, "overlap": project.overlap,
                "lease_minutes": project.lease_minutes, "gold_rate": project.gold_rate, **fields}  # fmt: skip

    def test_the_form_offers_the_orders_with_what_they_do(self, admin_client, project):
        body = admin_client.get(f"/projects/{project.slug}/edit/").content.decode()
        assert '<label for="id_queue_order">Queue order</label>' in body
        assert '<option value="oldest" selected>Oldest pairs first</option>' in body
        assert '<option value="judge-uncertain">Where the AI judge is least sure first</option>' in body
        assert (
            '<option value="judge-inconsistent">Where the AI judge contradicts itself first</option>' in body
        )
        assert (
            "Pairs sent back or partly judged still come first, and overlap k holds in every order." in body
        )

    def test_saving_another_order_stores_it_and_signals_once(self, admin_client, project, sent):
        url = f"/projects/{project.slug}/edit/"
        response = admin_client.post(url, self.settings_form(project, queue_order="judge-inconsistent"))
        assert response.status_code == 302
        assert Project.objects.get(pk=project.pk).queue_order == "judge-inconsistent"
        assert sent == [(Project, project.pk, "judge-inconsistent")]
        admin_client.post(url, self.settings_form(project, queue_order="judge-inconsistent", overlap=4))
        admin_client.post(url, self.settings_form(project, overlap=5))  # a form without it keeps the order
        assert Project.objects.get(pk=project.pk).queue_order == "judge-inconsistent"
        assert len(sent) == 1
        admin_client.post(url, self.settings_form(project, queue_order="oldest"))
        assert sent[1:] == [(Project, project.pk, "oldest")]

    def test_an_unknown_order_is_refused(self, admin_client, project, sent):
        response = admin_client.post(
            f"/projects/{project.slug}/edit/", self.settings_form(project, queue_order="x")
        )
        assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
        assert Project.objects.get(pk=project.pk).queue_order == "oldest" and not sent

    def test_a_new_project_takes_its_order_from_the_form(self, admin_client, sent):
        form = {"name": "New", "slug": "new-one", "overlap": 3, "lease_minutes": 30, "gold_rate": 0,
                "queue_order": "judge-uncertain"}  # fmt: skip
        assert admin_client.post("/projects/new/", form).status_code == 302
        assert Project.objects.get(slug="new-one").queue_order == "judge-uncertain"

    def test_leads_read_how_the_queue_is_ordered_annotators_do_not(self, project, lead, annotator):
        lead_client, annotator_client = Client(), Client()
        lead_client.force_login(lead)
        annotator_client.force_login(annotator)
        (pair,) = make_pairs(project, 1)

        def line() -> str:
            body = lead_client.get(project.get_absolute_url()).content.decode()
            start = body.index('<p class="queue-order" id="queue-order">')
            return body[start : body.index("</p>", start)].split(">", 1)[1]

        assert line() == "Queue order: Oldest pairs first."
        ordered(project)
        assert line() == (
            "Queue order: Where the AI judge is least sure first — no pair is ranked yet: pairs are served "
            "oldest first until a judge has judged them."
        )
        set_queue_ranks(
            project, {pair.pk: 1}, ranked_by="judge “Small” (run 3, finished 2026-12-07 14:00 UTC)"
        )
        assert line() == (
            "Queue order: Where the AI judge is least sure first — ranked by judge “Small” (run 3, finished "
            "2026-12-07 14:00 UTC)."
        )
        assert "queue-order" not in annotator_client.get(project.get_absolute_url()).content.decode()
