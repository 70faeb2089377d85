"""Label what matters first: a project ordered by its AI judge serves fresh pairs where the judge is least
sure (or contradicts itself) first; pairs it has not judged come before them; k holds (the claim's own
tests cover it with ranks); changing the setting re-ranks, and "oldest first" unranks."""

from __future__ import annotations

import pytest
from django.urls import reverse

from evaluation.models import Judge
from evaluation.queue_order import rank_project, ranks
from labeling.assignment import claim_next_pair
from labeling.judging import Verdict, submit_judgment
from labeling.models import Pair
from tests.conftest import worker_for
from tests.evaluation.test_judges import verdict
from tests.labeling.test_assignment import make_pairs

pytestmark = pytest.mark.django_db(transaction=True)

# P(a) per pair with A shown first, and with it shown second (position-inconsistent when they disagree).
SHOWN = [(0.95, 0.95), (0.55, 0.55), (0.2, 0.2), (0.7, 0.3), (0.5, 0.5)]


def judge_of(project, name="j") -> Judge:
    pairs = make_pairs(project, len(SHOWN))
    judge = Judge.objects.create(project=project, name=name, model_ref="base:tiny", template="t",
                                 state="succeeded")  # fmt: skip
    for pair, (first, second) in zip(pairs, SHOWN, strict=True):
        # swapped: columns name what was shown first; in the swapped order A is shown second
        verdict(judge, pair, [first, 1 - first, 0.0], [1 - second, second, 0.0])
    return judge, pairs


def test_least_sure_first_then_inconsistent_first(project):
    judge, pairs = judge_of(project)
    by = {p.pk: i for i, p in enumerate(pairs)}
    uncertain = sorted(ranks(judge, "judge-uncertain").items(), key=lambda kv: kv[1])
    # |P(A beats B) - 1/2|: pair 3 averages 0.5 (0.7 and 0.3), 4 is 0.5, 1 is 0.55, 2 is 0.2, 0 is 0.95
    assert [by[pk] for pk, _ in uncertain] == [3, 4, 1, 2, 0]
    inconsistent = sorted(ranks(judge, "judge-inconsistent").items(), key=lambda kv: kv[1])
    assert [by[pk] for pk, _ in inconsistent][0] == 3
    assert Judge.objects.get().verdicts.get(pair=pairs[3]).inconsistent


def test_the_queue_follows_the_judge_and_unjudged_pairs_come_first(project, annotator):
    judge, pairs = judge_of(project)
    later = make_pairs(project, 1)[0]  # imported after the judge ran: not judged
    project.queue_order = "judge-uncertain"
    project.save()
    assert rank_project(project) == 5
    project.refresh_from_db()
    assert f"judge “j” (run {judge.pk}" in project.queue_ranked_by
    order = dict(Pair.objects.filter(project=project).values_list("pk", "queue_rank"))
    assert order[later.pk] == 0
    lease = claim_next_pair(project, annotator)
    assert lease.pair_id == later.pk  # the judge knows nothing of it: least sure of all
    served = [lease.pair_id]
    while lease is not None:
        submit_judgment(
            assignment_id=lease.pk, annotator=annotator, project=project, verdict=Verdict(choice="left")
        )
        lease = claim_next_pair(project, annotator)
        if lease is not None:
            served.append(lease.pair_id)
    by = {p.pk: i for i, p in enumerate(pairs)}
    assert [by[pk] for pk in served[1:]] == [3, 4, 1, 2, 0]
    assert len(served) == len(set(served)) == 6  # never twice


def test_oldest_first_unranks_and_a_changed_setting_reranks(client, project, lead):
    judge_of(project)
    project.queue_order = "judge-inconsistent"
    project.save()
    rank_project(project)
    assert Pair.objects.filter(project=project, queue_rank__gt=0).count() == 5
    project.queue_order = "oldest"
    project.save()
    rank_project(project)
    assert not Pair.objects.filter(project=project, queue_rank__gt=0).exists()
    project.refresh_from_db()
    assert project.queue_ranked_by == ""


def test_saving_another_order_ranks_the_pairs_in_a_worker(client, project, admin_user):
    judge_of(project)
    client.force_login(admin_user)
    data = {
        "name": project.name, "slug": project.slug, "overlap": project.overlap, "lease_minutes": 30,
        "gold_rate": 0, "queue_order": "judge-uncertain",
    }  # fmt: skip
    response = client.post(reverse("labeling:project-edit", args=[project.slug]), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert not Pair.objects.filter(project=project, queue_rank__gt=0).exists()  # not in the request
    worker_for("default", worker_class="rq.SimpleWorker").work(burst=True)
    assert Pair.objects.filter(project=project, queue_rank__gt=0).count() == 5
    project.refresh_from_db()
    assert project.queue_order == "judge-uncertain" and "judge “j”" in project.queue_ranked_by
