"""Project setup and the browser import flow, through the views (no browser)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rq import SimpleWorker
from rq.job import Job

from labeling.display import markdown_html
from labeling.models import ImportBatch, Judgment, Membership, Pair, Project
from tests.conftest import worker_for

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def admin_client(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def rows(n: int, start: int = 0) -> bytes:
    return b"".join(
        json.dumps({"prompt": f"Q{i}", "response_a": f"A{i}", "response_b": f"B{i}"}).encode() + b"\n"
        for i in range(start, start + n)
    )


def upload(client, project, data: bytes, name="pairs.jsonl", **extra):
    return client.post(f"/projects/{project.slug}/import/", {"file": SimpleUploadedFile(name, data), **extra})


def test_admin_creates_a_project_with_criteria(admin_client):
    form = {
        "name": "Helpful chat", "slug": "helpful-chat", "description": "", "rubric": "Be *fair*.",
        "criteria_text": "Helpfulness: Which helps more?\n\nHonesty: Which is more honest?",
        "allow_tie": "on", "overlap": 5, "lease_minutes": 20, "gold_rate": 0.1,
    }  # fmt: skip
    response = admin_client.post("/projects/new/", form)
    assert response.status_code == 302 and response["Location"] == "/projects/helpful-chat/"
    project = Project.objects.get(slug="helpful-chat")
    assert project.criteria == [
        {"name": "Helpfulness", "question": "Which helps more?"},
        {"name": "Honesty", "question": "Which is more honest?"},
    ]
    assert (project.overlap, project.allow_tie, project.allow_both_bad) == (5, True, False)
    assert [c for c, _ in project.choices] == ["a", "b", "tie"]
    page = admin_client.get("/projects/helpful-chat/edit/").content.decode()
    assert "Helpfulness: Which helps more?" in page


@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        ("no colon here", "Line 1: write &#x27;Name: question&#x27;"),
        ("A: x\nA: y", "Line 2: &#x27;A&#x27; is listed twice."),
        (": question", "Line 1: write"),
    ],
)
def test_bad_criteria_say_which_line(admin_client, criteria, message):
    form = {
        "name": "P",
        "slug": "p",
        "criteria_text": criteria,
        "overlap": 3,
        "lease_minutes": 30,
        "gold_rate": 0,
    }
    response = admin_client.post("/projects/new/", form)
    assert response.status_code == 200 and message in response.content.decode()
    assert not Project.objects.filter(slug="p").exists()


def test_reserved_and_invalid_settings_are_refused(admin_client):
    form = {"name": "P", "slug": "new", "overlap": 0, "lease_minutes": 30, "gold_rate": 0.9}
    body = admin_client.post("/projects/new/", form).content.decode()
    assert "used by a page of its own" in body
    assert "greater than or equal to 1" in body and "less than or equal to 0.5" in body


def test_rubric_preview_is_an_htmx_fragment_and_sanitized(admin_client):
    response = admin_client.post(
        "/projects/rubric-preview/",
        {"rubric": "**bold** <script>alert(1)</script> [x](javascript:alert(1))"},
        HTTP_HX_REQUEST="true",
    )
    body = response.content.decode().strip()
    assert body.startswith('<div id="rubric-preview"') and "<html" not in body
    assert "<strong>bold</strong>" in body and "<script>" not in body and 'href="javascript' not in body


# As a browser sends a textarea: CRLF line ends; the first line indented (a code block if not stripped).
RICH_RUBRIC = (
    "   Prefer the **correct** answer: $e^{i\\pi} = -1$.\r\n\r\n$$\\int_0^1 x\\,dx = \\tfrac12$$\r\n\r\n"
    "| a | b |\r\n|:-:|--:|\r\n| 1 | 2 |\r\n\r\n```python\r\nprint('hi')\r\n```\r\n"
)
MATH_ASSETS = ("vendor/katex/katex.min.css", "vendor/katex/katex.min.js", "js/math.js", "css/pygments.css")


def test_rubric_preview_renders_exactly_as_the_workbench_shows_the_saved_rubric(
    admin_client, project, annotator
):
    """The preview is the workbench's rubric: the same sanitized HTML of the rubric as saving the form
    stores it, in the same frame, with the same KaTeX and code styles on the page."""
    preview = admin_client.post("/projects/rubric-preview/", {"rubric": RICH_RUBRIC}, HTTP_HX_REQUEST="true")
    edit_form = {
        "name": project.name, "slug": project.slug, "description": "", "rubric": RICH_RUBRIC,
        "overlap": 3, "lease_minutes": 30, "gold_rate": 0,
    }  # fmt: skip
    assert admin_client.post(f"/projects/{project.slug}/edit/", edit_form).status_code == 302
    project.refresh_from_db()
    html = markdown_html(project.rubric)
    parts = ('class="math-inline"', 'class="math-display"', "<table", '<code class="language-python"><span')
    assert all(part in html for part in parts)
    assert "<pre><code>Prefer" not in html  # saving strips the indent: no code block
    client = Client()
    client.force_login(annotator)
    workbench = client.get(f"/projects/{project.slug}/label/").content.decode()
    assert f'<div class="rendered" hx-disable>{html}</div>' in workbench
    assert (
        preview.content.decode().strip()
        == f'<div id="rubric-preview" class="rendered" hx-disable>{html}</div>'
    )
    edit_page = admin_client.get(f"/projects/{project.slug}/edit/").content.decode()
    assert f'<div id="rubric-preview" class="rendered" hx-disable>{html}</div>' in edit_page
    frame = re.compile(
        r'<aside class="wb-rubric[^"]*"[^>]*>\s*<details open>\s*<summary>Rubric</summary>\s*'
        r'<div[^>]*class="rendered"'
    )
    assert frame.search(workbench) and frame.search(edit_page)
    for asset in MATH_ASSETS:
        assert f"/static/{asset}" in workbench and f"/static/{asset}" in edit_page, asset
    new_page = admin_client.get("/projects/new/").content.decode()
    assert all(f"/static/{asset}" in new_page for asset in MATH_ASSETS)


def test_archive_and_restore(admin_client, project, annotator):
    admin_client.post(f"/projects/{project.slug}/archive/", {"archived": "1"})
    project.refresh_from_db()
    assert project.archived
    client = Client()
    client.force_login(annotator)
    assert client.get(f"/projects/{project.slug}/").status_code == 404
    assert admin_client.get(f"/projects/{project.slug}/").status_code == 200
    admin_client.post(f"/projects/{project.slug}/archive/", {"archived": "0"})
    assert client.get(f"/projects/{project.slug}/").status_code == 200


def test_upload_previews_then_imports(admin_client, project, admin_user):
    response = upload(admin_client, project, rows(12) + b'{"prompt": "x"}\n')
    batch = ImportBatch.objects.get()
    assert response["Location"] == batch.get_absolute_url()
    assert batch.state == "uploaded" and batch.format == "jsonl" and batch.created_by == admin_user
    assert batch.file.name == f"imports/{project.pk}/{batch.uuid}.upload"  # server-chosen name
    page = admin_client.get(batch.get_absolute_url()).content.decode()
    assert "Preview" in page and "Q0" in page and page.count('class="preview-pair"') == 10
    assert Pair.objects.count() == 0
    response = admin_client.post(f"/projects/{project.slug}/batches/{batch.uuid}/import/")
    batch.refresh_from_db()
    assert batch.state == "failed" and Pair.objects.count() == 0
    page = admin_client.get(response["Location"]).content.decode()
    assert "pairs.jsonl, line 13: no layout matches keys [prompt]; closest: prefstudio responses list" in page


def test_upload_with_skip_invalid_and_report_download(admin_client, project):
    upload(admin_client, project, rows(3) + b"{oops\n", skip_invalid="on")
    batch = ImportBatch.objects.get()
    admin_client.post(f"/projects/{project.slug}/batches/{batch.uuid}/import/")
    batch.refresh_from_db()
    assert (batch.state, batch.imported, batch.rejected) == ("done", 3, 1)
    report = admin_client.get(f"/projects/{project.slug}/batches/{batch.uuid}/report/")
    assert report["Content-Disposition"] == 'attachment; filename="pairs.jsonl.rejected.jsonl"'
    assert report["X-Content-Type-Options"] == "nosniff"
    assert report["Content-Type"] == "application/x-ndjson"
    assert json.loads(b"".join(report.streaming_content))["line"] == 4


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("pairs.jsonl", b"\x89PNG\r\n\x1a\n" + b"\0" * 64),
        ("pairs.csv", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"></svg>'),
        ("pairs.jsonl", b"<!doctype html><html><script>alert(1)</script></html>"),
    ],
)
def test_uploads_that_are_not_datasets_are_refused(admin_client, project, name, data):
    response = upload(admin_client, project, data, name=name)
    assert response.status_code == 200 and 'class="field-error"' in response.content.decode()
    assert ImportBatch.objects.count() == 0


def test_upload_limits(admin_client, project, settings):
    settings.PREFSTUDIO_MAX_UPLOAD_BYTES = 100
    body = upload(admin_client, project, rows(10)).content.decode()
    assert "the upload limit is 100\xa0bytes" in body
    assert "is empty" in upload(admin_client, project, b"").content.decode()
    assert ImportBatch.objects.count() == 0


def test_large_upload_runs_as_a_job_with_progress(
    admin_client, project, settings, django_capture_on_commit_callbacks, monkeypatch
):
    fetch = Job.fetch
    settings.PREFSTUDIO_IMPORT_SYNC_MAX_BYTES = 10
    upload(admin_client, project, rows(2500))
    batch = ImportBatch.objects.get()
    with django_capture_on_commit_callbacks(execute=True):  # django-rq enqueues on commit
        admin_client.post(f"/projects/{project.slug}/batches/{batch.uuid}/import/")
    batch.refresh_from_db()
    assert batch.state == "queued" and batch.job_id
    fetches = []
    monkeypatch.setattr(Job, "fetch", lambda *a, **kw: fetches.append(a) or fetch(*a, **kw))
    poll = admin_client.get(batch.get_absolute_url(), HTTP_HX_REQUEST="true")
    assert poll.status_code == 200 and 'hx-trigger="every 1s"' in poll.content.decode()
    assert len(fetches) == 1  # the job is read once per poll, for its progress and whether it is lost
    # In-process worker: the job must see this test's uncommitted rows (SQLite and PostgreSQL alike).
    worker_for("default", worker_class=SimpleWorker).work(burst=True)
    batch.refresh_from_db()
    assert (batch.state, batch.imported) == ("done", 2500)
    poll = admin_client.get(batch.get_absolute_url(), HTTP_HX_REQUEST="true")
    assert poll.status_code == 286  # htmx stops polling
    body = poll.content.decode()
    assert body.strip().startswith('<section id="batch-status"') and "every 1s" not in body
    assert "2500 pairs imported" in body


def test_a_job_lost_from_redis_marks_the_batch_failed(admin_client, project):
    upload(admin_client, project, rows(1))
    batch = ImportBatch.objects.get()
    ImportBatch.objects.filter(pk=batch.pk).update(state="queued", job_id="no-such-job")
    admin_client.get(batch.get_absolute_url())
    batch.refresh_from_db()
    assert batch.state == "failed" and "disappeared" in batch.message


def test_delete_batch_with_confirmation(admin_client, project, annotator):
    upload(admin_client, project, rows(4))
    batch = ImportBatch.objects.get()
    admin_client.post(f"/projects/{project.slug}/batches/{batch.uuid}/import/")
    url = f"/projects/{project.slug}/batches/{batch.uuid}/delete/"
    assert "cannot be undone" in admin_client.get(url).content.decode()
    Judgment.objects.create(pair=Pair.objects.first(), annotator=annotator, choice="a")
    response = admin_client.post(url, follow=True)
    assert "can no longer be deleted" in response.content.decode() and Pair.objects.count() == 4
    Judgment.objects.all().delete()
    response = admin_client.post(url, follow=True)
    assert "its 4 pairs" in response.content.decode()
    assert Pair.objects.count() == 0 and not ImportBatch.objects.exists()


def test_leads_see_imports_only_of_their_projects(project, other_project, lead, batch):
    Membership.objects.create(project=other_project, user=lead, role=Membership.Role.ANNOTATOR)
    foreign = ImportBatch.objects.create(project=other_project, source_name="x.jsonl", state="done")
    client = Client()
    client.force_login(lead)
    assert client.get(batch.get_absolute_url()).status_code == 200
    assert client.get(foreign.get_absolute_url()).status_code == 404
    # the batch of one project is not reachable through another project's URL either
    assert client.get(f"/projects/{project.slug}/batches/{foreign.uuid}/").status_code == 404
    assert client.get(f"/projects/{project.slug}/batches/{foreign.uuid}/report/").status_code == 404
    assert client.post(f"/projects/{project.slug}/batches/{batch.uuid}/import/").status_code == 403
    assert (
        client.post(f"/projects/{project.slug}/batches/{batch.uuid}/map/", {"prompt": "q"}).status_code == 403
    )


def test_project_page_lists_imports_for_leads_not_annotators(project, batch, lead, annotator):
    client = Client()
    client.force_login(lead)
    assert "pairs.jsonl" in client.get(project.get_absolute_url()).content.decode()
    client.force_login(annotator)
    assert "pairs.jsonl" not in client.get(project.get_absolute_url()).content.decode()


def test_admin_adds_and_changes_members_with_htmx(admin_client, project, make_user):
    make_user("newbie")
    response = admin_client.post(
        f"/projects/{project.slug}/members/", {"username": "newbie", "role": "lead"}, HTTP_HX_REQUEST="true"
    )
    body = response.content.decode()
    assert body.lstrip().startswith('<section id="members"') and "newbie" in body
    member = Membership.objects.get(user__username="newbie")
    assert member.role == "lead" and member.active
    admin_client.post(
        f"/projects/{project.slug}/members/{member.pk}/",
        {f"m{member.pk}-role": "annotator"},
        HTTP_HX_REQUEST="true",
    )
    member.refresh_from_db()
    assert (member.role, member.active) == ("annotator", False)  # unticked checkbox = disabled


def test_member_add_errors_say_what(admin_client, project, annotator):
    body = admin_client.post(
        f"/projects/{project.slug}/members/",
        {"username": "ghost", "role": "annotator"},
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert "No user named &#x27;ghost&#x27;" in body
    body = admin_client.post(
        f"/projects/{project.slug}/members/", {"username": "ann", "role": "annotator"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "already a member" in body
    response = admin_client.post(
        f"/projects/{project.slug}/members/", {"username": "ghost", "role": "annotator"}
    )
    assert response.status_code == 302  # without htmx: back to the project page with a message


def test_members_of_another_project_cannot_be_changed_through_this_one(
    admin_client, project, other_project, make_user
):
    user = make_user("zed")
    foreign = Membership.objects.create(project=other_project, user=user)
    url = f"/projects/{project.slug}/members/{foreign.pk}/"
    assert (
        admin_client.post(url, {f"m{foreign.pk}-role": "lead", f"m{foreign.pk}-active": "on"}).status_code
        == 404
    )
    foreign.refresh_from_db()
    assert foreign.role == "annotator"


def test_leads_see_members_but_cannot_change_them(project, lead, annotator):
    client = Client()
    client.force_login(lead)
    body = client.get(project.get_absolute_url()).content.decode()
    assert "ann" in body and "member-add" not in body
    membership = Membership.objects.get(user=annotator)
    assert client.post(f"/projects/{project.slug}/members/{membership.pk}/", {}).status_code == 403


def test_review_page_offers_new_project_to_admins_only(admin_client, lead):
    assert 'href="/projects/new/"' in admin_client.get("/review/").content.decode()
    client = Client()
    client.force_login(lead)
    assert 'href="/projects/new/"' not in client.get("/review/").content.decode()


def test_preview_names_the_layout_and_what_is_kept(admin_client, project):
    formats = Path(__file__).parent / "formats"
    upload(
        admin_client, project, (formats / "02_ultrafeedback_binarized.jsonl").read_bytes(), name="uf.jsonl"
    )
    page = admin_client.get(ImportBatch.objects.get().get_absolute_url()).content.decode()
    assert (
        '<span class="layout-name">UltraFeedback binarized</span> <span class="muted">(3 of 3)</span>' in page
    )
    assert "<dt>Kept as metadata</dt><dd>messages, prompt_id, score_chosen, score_rejected" in page
    assert "the responses repeat the prompt field: it is shown once" in page
    assert (
        "line 1 · UltraFeedback binarized" in page and '<details class="card mapping" id="mapping">' in page
    )


def test_a_file_of_another_layout_is_mapped_on_the_preview_page(admin_client, project):
    data = b"".join(
        json.dumps({"question": f"Q{i}?", "answer_a": f"A{i}", "answer_b": f"B{i}", "label": i}).encode()
        + b"\n"
        for i in range(3)
    )
    upload(admin_client, project, data, name="other.jsonl")
    batch = ImportBatch.objects.get()
    page = admin_client.get(batch.get_absolute_url()).content.decode()
    assert "other.jsonl, line 1: no layout matches keys [question, answer_a, answer_b, label]" in page
    assert '<details class="card mapping" id="mapping" open>' in page
    assert '<option value="question" selected>question</option>' in page  # a likely field, pre-selected
    assert '<option value="answer_a" selected>answer_a</option>' in page
    url = f"/projects/{project.slug}/batches/{batch.uuid}/map/"
    same = {"prompt": "question", "response_a": "question"}
    response = admin_client.post(url, same)
    assert (
        response.status_code == 400
        and "question: a source field can feed one target only" in response.content.decode()
    )
    mapping = {"prompt": "question", "response_a": "answer_a", "response_b": "answer_b", "chosen": ""}
    assert admin_client.post(url, mapping)["Location"] == batch.get_absolute_url()
    batch.refresh_from_db()
    assert batch.mapping == {"prompt": "question", "response_a": "answer_a", "response_b": "answer_b"}
    page = admin_client.get(batch.get_absolute_url()).content.decode()
    assert "prefstudio pair, fields mapped" in page and "<dt>Kept as metadata</dt><dd>label" in page
    admin_client.post(f"/projects/{project.slug}/batches/{batch.uuid}/import/")
    assert sorted(Pair.objects.values_list("prompt", flat=True)) == ["Q0?", "Q1?", "Q2?"]
    assert (
        admin_client.post(url, mapping)["Location"] == batch.get_absolute_url()
    )  # imported: nothing changes


def test_a_csv_header_that_fits_no_layout_offers_its_columns_to_map(admin_client, project):
    upload(admin_client, project, b"question;answer_a;answer_b\nQ?;A;B\n", name="q.csv")
    batch = ImportBatch.objects.get()
    page = admin_client.get(batch.get_absolute_url()).content.decode()
    assert (
        "q.csv: the CSV header fits no layout: no layout matches columns [question, answer_a, answer_b]"
        in page
    )
    assert '<option value="question" selected>question</option>' in page
    url = f"/projects/{project.slug}/batches/{batch.uuid}/map/"
    admin_client.post(url, {"prompt": "question", "response_a": "answer_a", "response_b": "answer_b"})
    page = admin_client.get(batch.get_absolute_url()).content.decode()
    assert "row 2 · prefstudio pair, fields mapped" in page
