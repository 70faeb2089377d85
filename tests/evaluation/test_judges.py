"""AI judges end to end: the tiny model as a local judge through a real worker (both orders, probabilities
order-averaged, inconsistent pairs counted), an endpoint judge with and without log-probabilities and with
unparseable answers, restarts that judge only what is missing, the scope, the calibration numbers against
independent computations (scikit-learn), the command line, and the pages (kept apart from people)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from django.core.management import call_command
from django.urls import reverse
from sklearn.metrics import brier_score_loss, cohen_kappa_score

from evaluation import judge_jobs, judge_stats
from evaluation.calibration import judge_calibration
from evaluation.models import Judge, JudgeVerdict
from generation.models import Endpoint
from labeling.models import Assignment, Judgment, Membership
from tests.generation.chat_server import ChatServer
from tests.labeling.test_assignment import judged_by, make_pairs
from tests.workers import needs_postgres, start_worker, stop_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def state(judge: Judge) -> Judge:
    judge.refresh_from_db()
    return judge


def people_choose(project, pairs, choices: list[list[str]], make_user) -> list:
    """Annotators a0.. judge `pairs`: `choices[i]` are pair i's votes (one per annotator, in order)."""
    users = []
    for n in range(max(len(c) for c in choices)):
        user = make_user(f"p{n}", "annotator")
        Membership.objects.create(project=project, user=user)
        users.append(user)
    for pair, votes in zip(pairs, choices, strict=True):
        for user, choice in zip(users, votes, strict=False):
            judged_by(pair, user)
            lease = Assignment.objects.get(pair=pair, annotator=user)
            Judgment.objects.create(pair=pair, annotator=user, assignment=lease, choice=choice)
    return users


def first_shown(body) -> int:
    """Which pair a judging request is about, and whether it shows A first: i for A{i} first, -i-1 for
    B{i} first."""
    content = body["messages"][0]["content"]
    first = re.search(r"Answer A:\n(\S+)", content).group(1)
    index = int(first[1:])
    return index if first[0] == "A" else -index - 1


def scripted_judge(body):
    """Pair 0: prefers the real A, with log-probabilities. Pair 1: always the first shown, answered in
    text without log-probabilities (position-inconsistent). Pair 2: an answer that is not a verdict.
    Others: the real B, as text."""
    code = first_shown(body)
    index, a_first = (code, True) if code >= 0 else (-code - 1, False)
    if index == 0:
        top = [("A" if a_first else "B", math.log(0.7)), ("B" if a_first else "A", math.log(0.2)),
               ("tie", math.log(0.1))]  # fmt: skip
        return ("A" if a_first else "B"), top
    if index == 1:
        return "A", None
    if index == 2:
        return "Both answers have merit, it depends.", None
    return ("B" if a_first else "A"), None


class TestEndpointJudge:
    def test_log_probabilities_parsed_answers_and_unparseable_ones(self, project, admin_user):
        pairs = make_pairs(project, 4)
        with ChatServer(models=["judge"], judge=scripted_judge) as server:
            Endpoint.objects.create(name="judge", base_url=server.base_url, model="judge")
            judge = judge_jobs.judge_create(
                project=project, user=admin_user, model_ref="endpoint:judge", enqueue=False
            )
            assert judge_jobs.execute(judge.pk) == "succeeded", state(judge).error
        assert len(server.completions) == 8  # 4 pairs, both orders
        judge = state(judge)
        assert (judge.done, judge.total, judge.unparseable, judge.inconsistent) == (4, 4, 1, 1)
        verdicts = {v.pair_id: v for v in JudgeVerdict.objects.filter(judge=judge)}
        v0 = verdicts[pairs[0].pk]
        assert v0.method == "logprobs" and v0.label == "a" and not v0.inconsistent
        assert (
            v0.p_a == pytest.approx(0.7) and v0.p_b == pytest.approx(0.2) and v0.p_tie == pytest.approx(0.1)
        )
        v1 = verdicts[pairs[1].pk]  # "A" in both orders: the first shown, whichever it is
        assert v1.method == "parsed" and v1.inconsistent and v1.p_a == pytest.approx(0.5)
        v2 = verdicts[pairs[2].pk]
        assert v2.method == "unparseable" and v2.label == "" and v2.p_a is None
        assert "Both answers have merit" in v2.answer
        v3 = verdicts[pairs[3].pk]
        assert (v3.label, v3.probability, v3.inconsistent) == ("b", 1.0, False)
        assert not Judgment.objects.exists()  # a judge's verdicts are never people's judgments

    def test_a_restart_judges_only_the_pairs_not_judged_yet(self, project, admin_user):
        pairs = make_pairs(project, 5)
        with ChatServer(models=["judge"], judge=lambda body: ("tie", None)) as server:
            Endpoint.objects.create(name="judge", base_url=server.base_url, model="judge")
            judge = judge_jobs.judge_create(
                project=project, user=admin_user, model_ref="endpoint:judge", enqueue=False
            )
            judge_jobs.execute(judge.pk)
            JudgeVerdict.objects.filter(pair__in=pairs[:2]).delete()
            Judge.objects.filter(pk=judge.pk).update(state="queued")
            assert judge_jobs.execute(judge.pk) == "succeeded"
        assert len(server.completions) == 10 + 4
        assert JudgeVerdict.objects.filter(judge=judge, label="tie").count() == 5
        assert "3 of 5 pairs were already judged" in state(judge).log_tail

    def test_cancel_stops_between_chunks_and_keeps_the_verdicts_so_far(self, project, admin_user):
        from django.utils import timezone

        make_pairs(project, 2 * judge_jobs.CHUNK)
        seen = []

        def answer(body):
            seen.append(1)
            if len(seen) == 2 * judge_jobs.CHUNK + 3:  # in the second chunk: a lead presses Cancel
                Judge.objects.update(cancel_requested_at=timezone.now())
            return "A", None

        with ChatServer(models=["judge"], judge=answer, delay=0.01) as server:
            Endpoint.objects.create(name="judge", base_url=server.base_url, model="judge")
            judge = judge_jobs.judge_create(
                project=project, user=admin_user, model_ref="endpoint:judge", enqueue=False
            )
            assert judge_jobs.execute(judge.pk) == "canceled"
        judge = state(judge)
        assert judge.state == "canceled" and judge.done == judge_jobs.CHUNK
        assert JudgeVerdict.objects.filter(judge=judge).count() == judge_jobs.CHUNK
        assert "Canceled; the verdicts so far are kept." in judge.log_tail

    def test_an_endpoint_that_refuses_log_probabilities_is_read_strictly(self, project, admin_user):
        make_pairs(project, 2)
        with ChatServer(models=["judge"], judge=lambda body: ("B.", None), refuse_logprobs=True) as server:
            Endpoint.objects.create(name="judge", base_url=server.base_url, model="judge")
            judge = judge_jobs.judge_create(
                project=project, user=admin_user, model_ref="endpoint:judge", enqueue=False
            )
            assert judge_jobs.execute(judge.pk) == "succeeded", state(judge).error
        assert set(JudgeVerdict.objects.values_list("method", flat=True)) == {"parsed"}
        assert state(judge).inconsistent == 2  # "B" in both orders: the second shown, whichever it is


def test_only_unsettled_pairs_are_judged_when_asked(project, admin_user, make_user):
    pairs = make_pairs(project, 4)
    project.overlap = 2
    project.save()
    people_choose(project, pairs[:3], [["a", "a"], ["a", "b"], ["b"]], make_user)
    judge = Judge.objects.create(project=project, name="j", model_ref="x", template="t", scope="unsettled")
    # pair 0 has a consensus; 1 is split, 2 has too few votes, 3 has none
    assert judge_jobs.pairs_to_judge(judge) == [p.pk for p in pairs[1:]]
    judge.scope = "all"
    assert judge_jobs.pairs_to_judge(judge) == [p.pk for p in pairs]


def test_templates_are_checked_by_name():
    with pytest.raises(ValueError, match=r"needs \{second\}"):
        judge_jobs.check_template("Compare {prompt} with {first}.")
    with pytest.raises(ValueError, match=r"\{answer\} is not a placeholder"):
        judge_jobs.check_template("{prompt} {first} {second} {answer}")
    assert (
        judge_jobs.check_template("{{json}} {prompt} {first} {second}\n")
        == "{{json}} {prompt} {first} {second}"
    )


def test_models_that_cannot_be_called_are_refused(project, admin_user):
    make_pairs(project, 1)
    with pytest.raises(ValueError, match="model: endpoint:nowhere: no endpoint named nowhere"):
        judge_jobs.judge_create(project=project, user=admin_user, model_ref="endpoint:nowhere", enqueue=False)
    assert not Judge.objects.exists()


def verdict(judge, pair, shown, swapped):
    averaged = judge_stats.order_averaged([shown], [swapped])[0]
    best = int(averaged.argmax())
    return JudgeVerdict.objects.create(
        judge=judge, pair=pair, shown=shown, swapped=swapped, p_a=averaged[0], p_b=averaged[1],
        p_tie=averaged[2], label=judge_stats.LABELS[best], probability=averaged[best],
        inconsistent=bool(judge_stats.position_inconsistent([shown], [swapped])[0]), method="probabilities",
    )  # fmt: skip


def test_calibration_numbers_equal_independent_computations(project, make_user):
    project.overlap = 1
    project.save()
    rng = np.random.default_rng(3)
    n = 40
    pairs = make_pairs(project, n)
    people = [str(x) for x in rng.choice(["a", "b", "tie"], size=n, p=[0.45, 0.45, 0.1])]
    people_choose(project, pairs, [[c] for c in people], make_user)
    judge = Judge.objects.create(project=project, name="j", model_ref="x", template="t", state="succeeded")
    for pair, label in zip(pairs, people, strict=True):
        right = rng.random() < 0.7
        lean = 0.5 + 0.4 * rng.random()
        p_a = lean if (label == "a") == right else 1 - lean
        shown = [p_a * 0.9, (1 - p_a) * 0.9, 0.1]
        swapped = [(1 - p_a) * 0.9 + rng.uniform(-0.05, 0.05), 0, 0.1]
        swapped[1] = 0.9 - swapped[0]
        verdict(judge, pair, shown, swapped)
    c = judge_calibration(judge, n_boot=200)
    rows = {v.pair_id: v for v in JudgeVerdict.objects.filter(judge=judge)}
    judge_labels = [rows[p.pk].label for p in pairs]
    assert c["shared"] == n
    assert c["agreement"]["kappa"]["value"] == pytest.approx(cohen_kappa_score(judge_labels, people))
    assert c["agreement"]["percent"]["value"] == pytest.approx(np.mean(np.array(judge_labels) == people))
    decisive = [(rows[p.pk], label) for p, label in zip(pairs, people, strict=True) if label != "tie"]
    p = np.array([v.p_a / (v.p_a + v.p_b) for v, _ in decisive])
    y = np.array([1 if label == "a" else 0 for _, label in decisive])
    assert c["calibration"]["pairs"] == len(decisive)
    assert c["calibration"]["brier"] == pytest.approx(brier_score_loss(y, p))
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(abs(p[bins == b].mean() - y[bins == b].mean()) * (bins == b).sum() for b in set(bins)) / len(p)
    assert c["calibration"]["ece"] == pytest.approx(ece)
    # left: every order on its own; the first shown picked (column 0) among sided picks
    picks = [int(np.argmax(r)) for v in rows.values() for r in (v.shown, v.swapped)]
    assert c["left"]["n"] == sum(1 for x in picks if x < 2)
    assert c["left"]["rate"] == pytest.approx(sum(1 for x in picks if x == 0) / c["left"]["n"])
    assert c["inconsistent"] == sum(1 for v in rows.values() if v.inconsistent)
    assert c["people_agreement"] is None  # one annotator per pair: no leave-one-out majority to agree with
    wrong = [d for d in c["disagreements"]]
    assert [d["probability"] for d in wrong] == sorted((d["probability"] for d in wrong), reverse=True)
    assert all(d["judge"] != d["people"] for d in wrong)


@needs_postgres
def test_the_tiny_model_judges_through_a_real_worker(
    project, admin_user, make_user, tiny_base, lively_model_dir, training_queue
):
    pairs = make_pairs(project, 6)
    project.overlap = 2
    project.save()
    people_choose(project, pairs[:4], [["a", "a"], ["b", "b"], ["a", "a"], ["tie", "tie"]], make_user)
    judgments = Judgment.objects.count()
    judge = judge_jobs.judge_create(project=project, user=admin_user, model_ref=tiny_base)
    worker = start_worker(training_queue, PREFSTUDIO_BASE_MODELS=f"tiny={lively_model_dir}")
    try:
        wait_for(lambda: state(judge).state in ("succeeded", "failed"), timeout=180, what="the judge")
    finally:
        stop_worker(worker)
    judge = state(judge)
    assert judge.state == "succeeded", judge.error
    assert (judge.done, judge.total, judge.unparseable) == (6, 6, 0)
    verdicts = list(JudgeVerdict.objects.filter(judge=judge))
    for v in verdicts:
        shown, swapped = np.array(v.shown), np.array(v.swapped)
        assert np.all((shown >= 0) & (shown <= 1)) and shown.sum() == pytest.approx(1)
        assert np.all((swapped >= 0) & (swapped <= 1)) and swapped.sum() == pytest.approx(1)
        averaged = (shown + swapped[[1, 0, 2]]) / 2
        assert [v.p_a, v.p_b, v.p_tie] == pytest.approx(list(averaged))
        assert v.label == judge_stats.LABELS[int(averaged.argmax())]
        assert v.inconsistent == (int(shown.argmax()) != int(swapped[[1, 0, 2]].argmax()))
    assert judge.inconsistent == sum(v.inconsistent for v in verdicts)
    assert Judgment.objects.count() == judgments  # people's judgments untouched
    c = judge_calibration(judge, n_boot=100)
    assert c["shared"] == 4 and c["judged"] == 6


def test_the_command_line_judges_and_prints_the_calibration(project, make_user, tiny_base, capsys):
    pairs = make_pairs(project, 3)
    project.overlap = 1
    project.save()
    people_choose(project, pairs, [["a"], ["b"], ["a"]], make_user)
    call_command("judge_pairs", project.slug, "--model", tiny_base, "--only-unsettled")
    capsys.readouterr()
    judge = Judge.objects.get()
    assert judge.scope == "unsettled" and judge.total == 0 and judge.state == "succeeded"
    call_command("judge_pairs", project.slug, "--model", tiny_base, "--name", "tiny judge")
    out = capsys.readouterr().out
    judge = Judge.objects.get(name="tiny judge")
    assert judge.done == 3 and f"Judge {judge.pk}: succeeded." in out
    assert "Position consistency:" in out and "Agreement with the people's consensus on 3 pairs" in out
    assert "Brier" in out and "expected calibration error" in out


class TestPages:
    def test_a_lead_starts_a_judge_and_reads_its_calibration_on_the_review_page(
        self, client, project, lead, make_user, tiny_base, training_queue
    ):
        pairs = make_pairs(project, 3)
        project.overlap = 1
        project.save()
        people_choose(project, pairs, [["a"], ["b"], ["a"]], make_user)
        client.force_login(lead)
        page = client.get(reverse("evaluation:judge-create") + f"?project={project.slug}")
        assert page.status_code == 200 and "{first}" in page.content.decode()
        form = page.context["form"]
        response = client.post(reverse("evaluation:judge-create"), {
            "project": project.pk, "model": f"base:{tiny_base}", "name": "first judge", "scope": "all",
            "template": form.fields["template"].initial,
        })  # fmt: skip
        judge = Judge.objects.get()
        assert response.status_code == 302 and response.url == judge.get_absolute_url()
        assert judge.job_id  # on the queue
        Judge.objects.filter(pk=judge.pk).update(state="queued", job_id="")
        judge_jobs.execute(judge.pk)
        detail = client.get(judge.get_absolute_url()).content.decode()
        assert (
            "Agrees with the people&#x27;s consensus" in detail
            or "Agrees with the people's consensus" in detail
        )
        review = client.get(reverse("labeling:review-dashboard", args=[project.slug])).content.decode()
        assert "AI judges" in review and "first judge" in review and "model-badge" in review
        assert "Reliability diagram" in review and "Position consistency" in review

    def test_a_bad_template_says_what_is_missing(self, client, project, lead, tiny_base):
        make_pairs(project, 1)
        client.force_login(lead)
        response = client.post(reverse("evaluation:judge-create"), {
            "project": project.pk, "model": f"base:{tiny_base}", "scope": "all",
            "template": "Which? {prompt}",
        })  # fmt: skip
        assert response.status_code == 400 and "needs {first}, {second}" in response.content.decode()
        assert not Judge.objects.exists()

    def test_judges_of_other_projects_and_annotators_are_kept_out(
        self, client, project, other_project, lead, annotator
    ):
        other = Judge.objects.create(project=other_project, name="theirs", model_ref="x", template="t")
        client.force_login(lead)
        assert client.get(other.get_absolute_url()).status_code == 404
        assert client.post(reverse("evaluation:judge-cancel", args=[other.pk])).status_code == 404
        assert "theirs" not in client.get(reverse("evaluation:judge-index")).content.decode()
        client.force_login(annotator)
        assert client.get(reverse("evaluation:judge-index")).status_code == 403
        mine = Judge.objects.create(project=project, name="mine", model_ref="x", template="t")
        assert client.get(mine.get_absolute_url()).status_code == 403
