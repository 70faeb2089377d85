"""The workbench pages through the test client: htmx swaps, plain posts, integrity, privacy, XSS."""

from __future__ import annotations

import re
import sys

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from labeling import assignment as assigning
from labeling import tally
from labeling.models import Assignment, ImportBatch, Judgment, Membership, Pair
from tests.labeling.test_assignment import make_pairs
from tests.labeling.xss import PAYLOADS, unsafe_markup

pytestmark = pytest.mark.django_db


@pytest.fixture
def labeled(project, annotator) -> Client:
    make_pairs(project, 3)
    Pair.objects.update(model_a="secret-model-a", model_b="secret-model-b")
    client = Client()
    client.force_login(annotator)
    return client


def lease_of(user) -> Assignment:
    return Assignment.objects.get(annotator=user, state="leased")


def judge_url(project, assignment) -> str:
    return f"/projects/{project.slug}/label/{assignment.pk}/judge/"


def test_page_shows_a_pair_without_model_names(labeled, project, annotator):
    body = labeled.get(f"/projects/{project.slug}/label/").content.decode()
    assignment = lease_of(annotator)
    assert "secret-model" not in body
    assert f'action="{judge_url(project, assignment)}"' in body
    # the pair's responses in the shown order (as rendered: random tokens in the page may contain "A0")
    a, b = '<p dir="auto">A0</p>', '<p dir="auto">B0</p>'
    left, right = (a, b) if assignment.a_on_left else (b, a)
    assert body.index(left) < body.index(right)
    assert 'id="workbench"' in body and "<html" in body


def test_htmx_submit_stores_and_swaps_in_the_next_pair(labeled, project, annotator):
    labeled.get(f"/projects/{project.slug}/label/")
    first = lease_of(annotator)
    response = labeled.post(
        judge_url(project, first), {"choice": "left", "rationale": "clearer", "active_seconds": "12.5"},
        HTTP_HX_REQUEST="true",
    )  # fmt: skip
    body = response.content.decode()
    assert (
        response.status_code == 200
        and body.lstrip().startswith('<div id="workbench"')
        and "<html" not in body
    )
    judgment = Judgment.objects.get()
    assert judgment.choice == ("a" if first.a_on_left else "b")
    assert (judgment.rationale, judgment.active_seconds, judgment.assignment) == ("clearer", 12.5, first)
    second = lease_of(annotator)
    assert second.pair != first.pair and f'action="{judge_url(project, second)}"' in body
    assert "<dd>1</dd>" in body  # judged today / total


def test_the_swapped_area_carries_a_csrf_token_that_both_its_forms_accept(project, annotator):
    make_pairs(project, 3)
    client = Client(enforce_csrf_checks=True)
    client.force_login(annotator)
    page = client.get(f"/projects/{project.slug}/label/").content.decode()
    area = page[page.index('<div id="workbench"') :]
    tokens = re.findall(r'name="csrfmiddlewaretoken" value="([^"]+)"', area)
    assert len(tokens) == 2 and tokens[0] == tokens[1]  # the verdict form and the skip form
    headers = {"HTTP_HX_REQUEST": "true", "HTTP_X_CSRFTOKEN": tokens[0]}
    area = client.post(judge_url(project, lease_of(annotator)), {"choice": "tie"}, **headers).content.decode()
    tokens = re.findall(r'name="csrfmiddlewaretoken" value="([^"]+)"', area)
    assert Judgment.objects.count() == 1 and len(tokens) == 2 and tokens[0] == tokens[1]
    skip = f"/projects/{project.slug}/label/{lease_of(annotator).pk}/skip/"
    assert client.post(skip, {"reason": "broken", "csrfmiddlewaretoken": tokens[1]}).status_code == 302
    assert Assignment.objects.filter(state="skipped").count() == 1
    assert client.post(skip, {"reason": "broken"}).status_code == 403  # without the token: refused


def test_htmx_refusal_says_why_in_the_swapped_area(labeled, project, annotator):
    labeled.get(f"/projects/{project.slug}/label/")
    skipped = lease_of(annotator)
    labeled.post(
        f"/projects/{project.slug}/label/{skipped.pk}/skip/", {"reason": "broken"}, HTTP_HX_REQUEST="true"
    )
    Pair.objects.filter(pk=skipped.pair_id).update(taken=project.overlap)  # others took every slot since
    response = labeled.post(judge_url(project, skipped), {"choice": "left"}, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    said = "You had skipped this pair, and it has all the judgments it needs now."
    assert response.status_code == 200 and f'<li class="msg warning">{said}</li>' in body
    assert f'action="{judge_url(project, lease_of(annotator))}"' in body and not Judgment.objects.exists()
    # shown once: the next page has no message left
    assert said not in labeled.get(f"/projects/{project.slug}/label/").content.decode()


def test_change_page_shows_the_pair_and_the_judgment_as_stored(labeled, project, annotator):
    labeled.get(f"/projects/{project.slug}/label/")
    lease = lease_of(annotator)
    labeled.post(judge_url(project, lease), {"choice": "left", "rationale": "<b>clearer</b>"})
    judgment = Judgment.objects.get()
    body = labeled.get(f"/projects/{project.slug}/judgments/{judgment.pk}/edit/").content.decode()
    assert 'value="left" id="id_choice_0" required checked' in body  # shown where the annotator saw it
    assert "&lt;b&gt;clearer&lt;/b&gt;</textarea>" in body  # the rationale, escaped
    assert (
        ('<p dir="auto">A0</p>' in body) and ('<p dir="auto">B0</p>' in body) and "secret-model" not in body
    )


def test_plain_form_post_redirects_to_the_next_pair(labeled, project, annotator):
    labeled.get(f"/projects/{project.slug}/label/")
    response = labeled.post(judge_url(project, lease_of(annotator)), {"choice": "tie"})
    assert response.status_code == 302 and response["Location"] == f"/projects/{project.slug}/label/"
    assert Judgment.objects.get().choice == "tie"


def test_double_submit_stores_one_and_shows_the_next(labeled, project, annotator):
    labeled.get(f"/projects/{project.slug}/label/")
    url = judge_url(project, lease_of(annotator))
    for _ in range(3):
        assert labeled.post(url, {"choice": "right"}, HTTP_HX_REQUEST="true").status_code == 200
    assert Judgment.objects.count() == 1
    assert Assignment.objects.filter(annotator=annotator, state="leased").count() == 1


def test_missing_or_disallowed_choice_is_an_error_not_a_judgment(labeled, project, annotator):
    project.allow_tie = False
    project.save()
    labeled.get(f"/projects/{project.slug}/label/")
    url = judge_url(project, lease_of(annotator))
    body = labeled.post(url, {"rationale": "hmm"}, HTTP_HX_REQUEST="true").content.decode()
    assert "Pick which response is better." in body
    body = labeled.post(url, {"choice": "tie"}, HTTP_HX_REQUEST="true").content.decode()
    assert "Select a valid choice" in body and Judgment.objects.count() == 0


def test_someone_elses_assignment_is_404_and_nothing_is_stored(labeled, project, make_user, other_project):
    intruder = make_user("mallory", "annotator")
    Membership.objects.create(project=project, user=intruder)
    labeled.get(f"/projects/{project.slug}/label/")
    victim_lease = Assignment.objects.get()
    client = Client()
    client.force_login(intruder)
    assert client.post(judge_url(project, victim_lease), {"choice": "left"}).status_code == 404
    assert (
        client.post(
            f"/projects/{project.slug}/label/{victim_lease.pk}/skip/", {"reason": "broken"}
        ).status_code
        == 404
    )
    # through another project's URL: the intruder is not a member there
    assert client.post(judge_url(other_project, victim_lease), {"choice": "left"}).status_code == 404
    assert not Judgment.objects.exists() and Assignment.objects.get().state == "leased"


def test_non_members_cannot_open_the_workbench(project, other_project, annotator):
    client = Client()
    client.force_login(annotator)
    assert client.get(f"/projects/{other_project.slug}/label/").status_code == 404
    Membership.objects.filter(user=annotator).update(active=False)
    assert client.get(f"/projects/{project.slug}/label/").status_code == 404


def test_skip_with_reason(labeled, project, annotator):
    labeled.get(f"/projects/{project.slug}/label/")
    lease = lease_of(annotator)
    response = labeled.post(
        f"/projects/{project.slug}/label/{lease.pk}/skip/", {"reason": "cant_judge"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    lease.refresh_from_db()
    assert (lease.state, lease.skip_reason) == ("skipped", "cant_judge")
    assert lease_of(annotator).pair != lease.pair


def test_all_done_state(labeled, project, annotator):
    labeled.get(f"/projects/{project.slug}/label/")
    for _ in range(3):
        labeled.post(judge_url(project, lease_of(annotator)), {"choice": "left"}, follow=True)
    body = labeled.get(f"/projects/{project.slug}/label/").content.decode()
    assert "All done here" in body and "3 in all" in body


def test_recent_judgments_and_changing_one(labeled, project, annotator):
    project.criteria = [{"name": "Honesty", "question": "Which is more honest?"}]
    project.use_strength = True
    project.save()
    labeled.get(f"/projects/{project.slug}/label/")
    lease = lease_of(annotator)
    labeled.post(judge_url(project, lease), {"choice": "left", "strength": "clearly", "criterion_0": "right"})
    judgment = Judgment.objects.get()
    shown_right = "b" if lease.a_on_left else "a"
    assert judgment.criteria == {"Honesty": shown_right} and judgment.strength == "clearly"
    page = labeled.get(f"/projects/{project.slug}/recent/").content.decode()
    assert "A is better (clearly)" in page
    edit_url = f"/projects/{project.slug}/judgments/{judgment.pk}/edit/"
    form = labeled.get(edit_url).content.decode()
    assert 'value="left" checked' in form.replace('checked="checked"', "checked") or 'value="left"' in form
    labeled.post(edit_url, {"choice": "right", "criterion_0": "tie"})
    judgment.refresh_from_db()
    assert (
        judgment.choice == shown_right and judgment.criteria == {"Honesty": "tie"} and judgment.strength == ""
    )


def test_annotators_cannot_edit_other_peoples_judgments(labeled, project, annotator, lead):
    labeled.get(f"/projects/{project.slug}/label/")
    labeled.post(judge_url(project, lease_of(annotator)), {"choice": "left"})
    judgment = Judgment.objects.get()
    client = Client()
    client.force_login(lead)
    assert client.get(f"/projects/{project.slug}/judgments/{judgment.pk}/edit/").status_code == 404
    assert (
        client.post(
            f"/projects/{project.slug}/judgments/{judgment.pk}/edit/", {"choice": "right"}
        ).status_code
        == 404
    )
    assert "left" not in client.get(f"/projects/{project.slug}/recent/").content.decode()


def test_plain_text_mode_is_remembered(labeled, project):
    labeled.get(f"/projects/{project.slug}/label/?plain=1")
    body = labeled.get(f"/projects/{project.slug}/label/").content.decode()
    assert 'class="plain"' in body
    labeled.get(f"/projects/{project.slug}/label/?plain=0")
    assert 'class="plain"' not in labeled.get(f"/projects/{project.slug}/label/").content.decode()


@pytest.mark.parametrize("plain", ["0", "1"])
def test_xss_corpus_renders_inert(project, annotator, plain):
    batch = ImportBatch.objects.create(project=project, source_name="x", state="done")
    for i, payload in enumerate(PAYLOADS):
        Pair.objects.create(
            project=project, batch=batch, shape="pair", content_hash=f"{i:064d}",
            prompt=[{"role": "user", "content": payload}] if i % 2 else payload,
            response_a=payload, response_b=f"{payload} (b)",
        )  # fmt: skip
    client = Client()
    client.force_login(annotator)
    for _ in PAYLOADS:
        body = client.get(f"/projects/{project.slug}/label/?plain={plain}").content.decode()
        assert unsafe_markup(body) == []
        assert body.count("hx-disable") >= 3  # prompt and both responses are inert to htmx
        client.post(judge_url(project, lease_of(annotator)), {"choice": "left"})  # next GET leases again


def test_own_assignment_through_another_projects_url_is_refused(labeled, project, other_project, annotator):
    Membership.objects.create(project=other_project, user=annotator)
    labeled.get(f"/projects/{project.slug}/label/")
    lease = lease_of(annotator)
    assert labeled.post(judge_url(other_project, lease), {"choice": "left"}).status_code == 404
    assert not Judgment.objects.exists()


def test_an_htmx_judgment_runs_a_bounded_number_of_statements(labeled, project, annotator, monkeypatch):
    """The hot path of the app: a regression here costs every annotator on every pair."""
    monkeypatch.setattr(assigning, "SWEEP_EVERY", 3600)  # the 10-second lease sweep must not fall in here
    labeled.get(f"/projects/{project.slug}/label/")
    url = judge_url(project, lease_of(annotator))
    with CaptureQueriesContext(connection) as queries:
        response = labeled.post(url, {"choice": "left"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and Judgment.objects.count() == 1
    # Transaction control aside (the test's own transaction turns BEGIN into a SAVEPOINT)
    statements = [q["sql"] for q in queries if q["sql"].split()[0] in ("SELECT", "INSERT", "UPDATE", "WITH")]
    # The user (the session, their roles and their access to the project come from the shared cache);
    # the annotator's tally (their lock, and the progress shown), the assignment, the judgment, the
    # assignment done, the tally counted; the claim, which on PostgreSQL also writes the lease; the next
    # pair's HTML kept (once per pair: a worker renders imported pairs ahead). Django's own session and
    # auth, the ORM for all but the claim.
    bound = 8 if connection.vendor == "postgresql" else 9  # SQLite: the lease is a statement of its own
    assert len(statements) <= bound, "\n".join(s[:70] for s in statements)


@pytest.fixture
def render_calls(monkeypatch) -> list[tuple[str, str]]:
    """Every untrusted text rendered to HTML, with whether a transaction was open when it was."""
    from labeling import rendering

    calls: list[tuple[str, str]] = []
    real = rendering.render_markdown

    def spy(text, *args, **kwargs):
        calls.append((text, "in a transaction" if connection.in_atomic_block else "outside"))
        return real(text, *args, **kwargs)

    monkeypatch.setattr(rendering, "render_markdown", spy)
    for module in ("labeling.display", "labeling.templatetags.prefstudio_markdown"):
        if hasattr(sys.modules.get(module), "render_markdown"):
            monkeypatch.setattr(sys.modules[module], "render_markdown", spy)
    return calls


@pytest.mark.django_db(transaction=True)  # so that the claim's own transaction is the only one open
def test_pairs_are_rendered_outside_the_claim_and_judge_transactions(project, annotator, render_calls):
    make_pairs(project, 3)
    Pair.objects.update(rendered=None)
    project.rubric = ""
    project.save()
    client = Client()
    client.force_login(annotator)
    client.get(f"/projects/{project.slug}/label/")
    client.post(judge_url(project, lease_of(annotator)), {"choice": "left"}, HTTP_HX_REQUEST="true")
    client.post(judge_url(project, lease_of(annotator)), {"choice": "tie"})  # plain form post, then GET
    client.get(f"/projects/{project.slug}/label/")
    assert render_calls and {where for _, where in render_calls} == {"outside"}
    assert Judgment.objects.count() == 2 and Pair.objects.filter(rendered__isnull=False).count() == 3


def test_an_unchanged_rubric_is_not_rendered_again_on_every_page(labeled, project, render_calls):
    project.rubric = "# Rubric\n\nPrefer **correct** answers. " + "![" * 100
    project.save()
    pages = [labeled.get(f"/projects/{project.slug}/label/").content.decode() for _ in range(4)]
    assert [text for text, _ in render_calls].count(project.rubric) == 1
    assert all("<strong>correct</strong>" in page for page in pages)
    project.rubric = "Prefer **short** answers."
    project.save()
    assert "<strong>short</strong>" in labeled.get(f"/projects/{project.slug}/label/").content.decode()


def test_workbench_pages_are_never_stored_by_the_browser(labeled, project, annotator):
    pages = [
        labeled.get(f"/projects/{project.slug}/label/"),
        labeled.get(f"/projects/{project.slug}/recent/"),
    ]
    pages.append(
        labeled.post(judge_url(project, lease_of(annotator)), {"choice": "left"}, HTTP_HX_REQUEST="true")
    )
    pages.append(labeled.get(f"/projects/{project.slug}/judgments/{Judgment.objects.get().pk}/edit/"))
    assert all("no-store" in response["Cache-Control"] for response in pages)


def conflict_form(body: str) -> tuple[str, dict[str, str]]:
    """The conflict's one-step change: where it posts, and what."""
    box = body[body.index('id="conflict"') :]
    box = box[: box.index("</form>")]
    action = re.search(r'<form method="post" action="([^"]+)">', box).group(1)
    return action, dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', box))


def test_another_choice_from_a_stale_page_is_asked_about_and_changed_in_one_step(labeled, project, annotator):
    labeled.get(f"/projects/{project.slug}/label/")
    first = lease_of(annotator)
    url = judge_url(project, first)
    labeled.post(url, {"choice": "left"}, HTTP_HX_REQUEST="true")  # tab 1
    body = labeled.post(
        url, {"choice": "right", "rationale": "B is right"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    question = (
        "You had already judged this pair as A in another tab or on an earlier page; keep A or change to B?"
    )
    assert question in body and "Keep A" in body and "Change to B" in body
    assert (
        f'action="{judge_url(project, lease_of(annotator))}"' in body
    )  # the current pair below the question
    judgment = Judgment.objects.get()
    assert judgment.choice == ("a" if first.a_on_left else "b")  # nothing changed without asking
    assert tally.read(project.pk, annotator.pk).judged == 1

    action, fields = conflict_form(body)
    assert fields.pop("csrfmiddlewaretoken")
    assert fields == {"choice": "right", "rationale": "B is right", "then": "workbench"}
    response = labeled.post(action, fields)
    assert response.status_code == 302 and response["Location"] == f"/projects/{project.slug}/label/"
    judgment.refresh_from_db()
    assert judgment.choice == ("b" if first.a_on_left else "a") and judgment.rationale == "B is right"
    assert Judgment.objects.count() == 1 and tally.read(project.pk, annotator.pk).judged == 1

    # the same choice again (a double click, a retry) stays silent
    body = labeled.post(url, {"choice": "right"}, HTTP_HX_REQUEST="true").content.decode()
    assert 'id="conflict"' not in body and "You had" not in body


def test_a_skipped_pair_judged_from_a_stale_page_can_be_judged_after_all(labeled, project, annotator):
    labeled.get(f"/projects/{project.slug}/label/")
    skipped = lease_of(annotator)
    labeled.post(
        f"/projects/{project.slug}/label/{skipped.pk}/skip/", {"reason": "broken"}, HTTP_HX_REQUEST="true"
    )
    body = labeled.post(
        judge_url(project, skipped), {"choice": "right"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert (
        "You had skipped this pair (Broken or empty)" in body and "leave it skipped or judge it as B?" in body
    )
    assert not Judgment.objects.exists()

    action, fields = conflict_form(body)
    assert action == f"/projects/{project.slug}/skipped/{skipped.pk}/judge/"
    assert labeled.post(action, fields)["Location"] == f"/projects/{project.slug}/label/"
    skipped.refresh_from_db()
    assert skipped.state == "done" and skipped.skip_reason == ""
    assert Judgment.objects.get().choice == ("b" if skipped.a_on_left else "a")
    counted = tally.read(project.pk, annotator.pk)
    assert (counted.judged, counted.skipped) == (1, 0)
    assert Pair.objects.get(pk=skipped.pair_id).taken == 1  # its slot, taken back


def test_skips_are_listed_with_their_reason_and_judged_after_all_only_while_open(labeled, project, annotator):
    labeled.get(f"/projects/{project.slug}/label/")
    skipped = lease_of(annotator)
    labeled.post(f"/projects/{project.slug}/label/{skipped.pk}/skip/", {"reason": "offensive"})
    labeled.get(f"/projects/{project.slug}/label/")
    labeled.post(judge_url(project, lease_of(annotator)), {"choice": "tie"})
    after_all = f"/projects/{project.slug}/skipped/{skipped.pk}/judge/"
    page = labeled.get(f"/projects/{project.slug}/recent/").content.decode()
    assert "Skipped: Offensive content" in page and f'href="{after_all}">Judge it after all' in page
    assert page.index("Tie") < page.index("Skipped:")  # newest first
    assert "Judge a skipped pair" in labeled.get(after_all).content.decode()

    Pair.objects.filter(pk=skipped.pair_id).update(taken=project.overlap)  # k others took it since
    page = labeled.get(f"/projects/{project.slug}/recent/").content.decode()
    assert "Judge it after all" not in page and "Has all its judgments" in page
    assert labeled.get(after_all)["Location"] == f"/projects/{project.slug}/recent/"
    labeled.post(after_all, {"choice": "left"})
    assert Judgment.objects.count() == 1 and Pair.objects.get(pk=skipped.pair_id).taken == project.overlap

    Pair.objects.filter(pk=skipped.pair_id).update(taken=project.overlap - 1)
    assert labeled.post(after_all, {"choice": "left"})["Location"] == f"/projects/{project.slug}/recent/"
    assert Judgment.objects.count() == 2 and Pair.objects.get(pk=skipped.pair_id).taken == project.overlap


def test_someone_elses_skip_cannot_be_judged(labeled, project, annotator, make_user):
    labeled.get(f"/projects/{project.slug}/label/")
    skipped = lease_of(annotator)
    labeled.post(f"/projects/{project.slug}/label/{skipped.pk}/skip/", {"reason": "broken"})
    intruder = make_user("mallory", "annotator")
    Membership.objects.create(project=project, user=intruder)
    client = Client()
    client.force_login(intruder)
    after_all = f"/projects/{project.slug}/skipped/{skipped.pk}/judge/"
    assert client.get(after_all).status_code == 404
    assert client.post(after_all, {"choice": "left"}).status_code == 404 and not Judgment.objects.exists()


def test_strength_is_required_for_a_or_b_when_the_project_says_so(labeled, project, annotator):
    project.use_strength = project.require_strength = True
    project.save()
    labeled.get(f"/projects/{project.slug}/label/")
    url = judge_url(project, lease_of(annotator))
    body = labeled.post(url, {"choice": "left"}, HTTP_HX_REQUEST="true").content.decode()
    assert "Say how much better: slightly or clearly." in body and not Judgment.objects.exists()
    assert "(required for A or B)" in body
    labeled.post(url, {"choice": "left", "strength": "slightly"}, HTTP_HX_REQUEST="true")
    assert Judgment.objects.get().strength == "slightly"
    labeled.post(judge_url(project, lease_of(annotator)), {"choice": "tie"}, HTTP_HX_REQUEST="true")
    assert Judgment.objects.count() == 2  # a tie has no strength to give

    project.require_strength = False  # optional again
    project.save()
    labeled.post(judge_url(project, lease_of(annotator)), {"choice": "right"}, HTTP_HX_REQUEST="true")
    assert Judgment.objects.count() == 3


def test_the_project_form_sets_whether_strength_is_required(project, admin_user):
    client = Client()
    client.force_login(admin_user)
    form = client.get(f"/projects/{project.slug}/edit/").content.decode()
    assert 'name="require_strength"' in form
    data = {"name": project.name, "slug": project.slug, "rubric": "r", "use_strength": "on",
            "require_strength": "on", "allow_tie": "on", "overlap": 3, "lease_minutes": 30,
            "gold_rate": 0}  # fmt: skip
    assert client.post(f"/projects/{project.slug}/edit/", data).status_code == 302
    project.refresh_from_db()
    assert project.use_strength and project.require_strength
