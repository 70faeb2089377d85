"""Pages say what matters to the person reading them (issue 15): an annotator's own progress, the
import preview's totals and rendering, removing failed and never-imported uploads, and a slug made
from the project's name."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from labeling.models import Assignment, ImportBatch, Pair, Project
from labeling.progress import own_progress

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def add_pairs(project, n: int, batch=None) -> list[Pair]:
    batch = batch or ImportBatch.objects.create(project=project, source_name="p.jsonl", state="done")
    return [
        Pair.objects.create(project=project, batch=batch, prompt=f"Q{i}", response_a="a", response_b="b",
                            shape="pair", content_hash=f"{i:064d}")
        for i in range(n)
    ]  # fmt: skip


def assign(pair, user, state, *, expires_in=timedelta(minutes=30)) -> Assignment:
    now = timezone.now()
    if state in (Assignment.State.DONE, Assignment.State.LEASED):
        Pair.objects.filter(pk=pair.pk).update(taken=pair.taken + 1)
    return Assignment.objects.create(
        project=pair.project,
        pair=pair,
        annotator=user,
        state=state,
        leased_at=now,
        expires_at=now + expires_in,
    )


# --- the annotator's project page ------------------------------------------------------------------


def test_an_annotator_sees_their_own_progress_and_a_start_button(project, annotator):
    pairs = add_pairs(project, 6)
    assign(pairs[0], annotator, Assignment.State.DONE)
    assign(pairs[1], annotator, Assignment.State.DONE)
    assign(pairs[2], annotator, Assignment.State.SKIPPED)
    assign(pairs[3], annotator, Assignment.State.LEASED)  # being judged now: still left
    project.overlap = 1
    project.save()
    Pair.objects.filter(pk=pairs[4].pk).update(taken=1)  # someone else's: full at k = 1
    progress = own_progress(project=project, user=annotator)
    assert (progress.judged, progress.skipped, progress.left) == (2, 1, 2)
    response = logged_in(annotator).get(project.get_absolute_url())
    body = response.content.decode()
    assert "You are an annotator here." in body and "a annotator" not in body
    assert response.context["progress"] == progress
    assert "<dt>Judged</dt><dd>2</dd>" in body and "<dt>Skipped</dt><dd>1</dd>" in body
    assert "<dt>Left for you</dt><dd>2</dd>" in body
    assert f'href="/projects/{project.slug}/label/">Continue labeling</a>' in body
    assert body.count(f'href="/projects/{project.slug}/label/"') == 1
    assert "Overlap k" not in body  # project settings are for leads


def test_a_new_annotator_is_asked_to_start_and_one_with_nothing_left_is_told(project, annotator):
    add_pairs(project, 2)
    body = logged_in(annotator).get(project.get_absolute_url()).content.decode()
    assert "<dt>Left for you</dt><dd>2</dd>" in body and ">Start labeling</a>" in body
    Pair.objects.update(taken=project.overlap)
    body = logged_in(annotator).get(project.get_absolute_url()).content.decode()
    assert "Nothing is left for you to judge right now" in body and ">Start labeling</a>" not in body


def test_a_lead_is_called_a_lead_and_sees_the_project_settings(project, lead):
    body = logged_in(lead).get(project.get_absolute_url()).content.decode()
    assert "You are a lead here." in body and "Overlap k" in body and "Your progress" not in body


# --- the new-project form: a slug from the name -----------------------------------------------------


def project_form(**fields) -> dict:
    return {"name": "P", "slug": "", "overlap": 3, "lease_minutes": 30, "gold_rate": 0, **fields}


def test_a_blank_slug_is_made_from_the_name_on_the_server(admin_user):
    client = logged_in(admin_user)
    response = client.post("/projects/new/", project_form(name="Helpful Chat — Café edition!"))
    assert response.status_code == 302 and response["Location"] == "/projects/helpful-chat-cafe-edition/"
    response = client.post("/projects/new/", project_form(name="Another", slug="my-own"))
    assert Project.objects.filter(slug="my-own", name="Another").exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("日本語", "The name has no letters or digits a slug can use: write a slug."),
        ("New", "&#x27;new&#x27; is used by a page of its own"),
        ("Alpha", "Project with this Slug already exists."),
    ],
)
def test_a_slug_that_cannot_be_made_from_the_name_says_why(admin_user, project, name, message):
    response = logged_in(admin_user).post("/projects/new/", project_form(name=name))
    assert response.status_code == 200 and message in response.content.decode()
    assert Project.objects.count() == 1


def test_the_form_loads_the_slug_script_from_static_and_marks_the_field(admin_user, project):
    client = logged_in(admin_user)
    body = client.get("/projects/new/").content.decode()
    assert 'data-slug-from="id_name"' in body and 'src="/static/js/slug.js"' in body
    edit = client.get(f"/projects/{project.slug}/edit/").content.decode()
    assert "data-slug-from" not in edit and "slug.js" not in edit  # an existing address stays put
    script = (Path(__file__).resolve().parents[2] / "static" / "js" / "slug.js").read_text()
    assert "data-slug-from" in script


# --- the import preview -----------------------------------------------------------------------------


def upload(client, project, lines: list, **extra):
    data = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()
    response = client.post(
        f"/projects/{project.slug}/import/", {"file": SimpleUploadedFile("d.jsonl", data), **extra}
    )
    return ImportBatch.objects.get(pk=ImportBatch.objects.latest("created_at").pk), response


def test_the_preview_counts_what_an_import_would_do_before_saving_anything(project, admin_user):
    client = logged_in(admin_user)
    old = {"prompt": "Old", "response_a": "x", "response_b": "y"}
    first, _ = upload(client, project, [old])
    client.post(f"/projects/{project.slug}/batches/{first.uuid}/import/")
    assert Pair.objects.count() == 1
    records = [
        old,  # already in the project
        {"prompt": "New 1", "response_a": "a", "response_b": "b"},
        {"prompt": "New 1", "response_a": "b", "response_b": "a"},  # the same pair again, sides swapped
        {"prompt": "New 2", "response_a": "a", "response_b": "b"},
        {"prompt": "No responses"},  # invalid
        "{not json",  # invalid
    ]
    batch, _ = upload(client, project, records)
    response = client.get(batch.get_absolute_url())
    preview = response.context["preview"]
    assert preview.complete
    assert (preview.records, preview.valid, preview.invalid) == (6, 4, 2)
    assert (preview.pairs, preview.existing, preview.repeated, preview.new_pairs) == (4, 1, 1, 2)
    body = response.content.decode()
    for label, value in [("Records read", 6), ("Valid", 4), ("Invalid", 2), ("Already in the project", 1),
                         ("Repeated in the file", 1), ("Pairs to create", 2)]:  # fmt: skip
        assert f"<dt>{label}</dt><dd>{value}</dd>" in body, label
    assert "Counted over the whole file" in body and Pair.objects.count() == 1


def test_with_invalid_records_the_whole_file_import_is_disabled_and_the_valid_ones_offered(
    project, admin_user
):
    client = logged_in(admin_user)
    batch, _ = upload(client, project, [{"prompt": f"Q{i}", "response_a": "a", "response_b": "b"}
                                        for i in range(3)] + ["{oops"])  # fmt: skip
    body = client.get(batch.get_absolute_url()).content.decode()
    assert '<button type="button" class="primary" disabled aria-describedby="whole-file-why">' in body
    assert "1 record is invalid, so importing the whole file would import nothing" in body
    assert '<input type="hidden" name="skip_invalid" value="1">' in body
    response = client.post(f"/projects/{project.slug}/batches/{batch.uuid}/import/", {"skip_invalid": "1"})
    batch.refresh_from_db()
    assert (batch.state, batch.skip_invalid, batch.imported, batch.rejected) == ("done", True, 3, 1)
    assert bool(batch.report) and response.status_code == 302

    clean, _ = upload(client, project, [{"prompt": "Z", "response_a": "a", "response_b": "b"}])
    body = client.get(clean.get_absolute_url()).content.decode()
    assert '<button type="submit" class="primary">Import the whole file</button>' in body
    assert "disabled" not in body.split('class="confirm"')[1]


def test_the_preview_shows_pairs_as_annotators_see_them_rendered_and_sanitized(
    project, admin_user, monkeypatch
):
    # What is shown, not how fast: on a loaded machine the first render (lexers loading) can pass 0.2 s.
    monkeypatch.setattr("labeling.batches.PREVIEW_RENDER_SECONDS", 30.0)
    client = logged_in(admin_user)
    record = {
        "prompt": "Sort **this** list",
        "response_a": "```python\nsorted(xs)\n```",
        "response_b": "<script>alert(1)</script><img src=x onerror=alert(2)> *ok*",
    }
    batch, _ = upload(client, project, [record])
    body = client.get(batch.get_absolute_url()).content.decode()
    pair = body.split('class="preview-pair"')[1].split("</li>")[0]
    assert "<strong>this</strong>" in pair and "<em>ok</em>" in pair
    assert "<pre" in pair and "sorted" in pair
    assert "<script>" not in pair and "<img" not in pair
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pair
    assert "secret" not in pair


# --- removing failed and never-imported uploads -----------------------------------------------------


def test_admins_remove_failed_and_never_imported_uploads_with_their_files(project, admin_user):
    client = logged_in(admin_user)
    failed, _ = upload(client, project, ["{broken"])
    client.post(f"/projects/{project.slug}/batches/{failed.uuid}/import/")
    failed.refresh_from_db()
    waiting, _ = upload(client, project, [{"prompt": "Q", "response_a": "a", "response_b": "b"}])
    assert failed.state == "failed" and waiting.state == "uploaded"
    files = [Path(failed.file.path), Path(waiting.file.path)]
    assert all(f.exists() for f in files)

    body = client.get(project.get_absolute_url()).content.decode()
    for batch in (failed, waiting):
        assert f'action="/projects/{project.slug}/batches/{batch.uuid}/delete/"' in body
    assert "Uploaded, waiting for confirmation" in body and ">Remove</button>" in body
    confirm = client.get(f"/projects/{project.slug}/batches/{failed.uuid}/delete/").content.decode()
    assert "Remove this failed import?" in confirm and "added no pairs" in confirm

    response = client.post(f"/projects/{project.slug}/batches/{failed.uuid}/delete/", follow=True)
    assert "Removed the failed import of d.jsonl and its file." in response.content.decode()
    response = client.post(f"/projects/{project.slug}/batches/{waiting.uuid}/delete/", follow=True)
    assert "Discarded the upload of d.jsonl." in response.content.decode()
    assert not ImportBatch.objects.exists() and not any(f.exists() for f in files)


def test_leads_see_the_imports_but_cannot_remove_them(project, lead, admin_user):
    batch, _ = upload(logged_in(admin_user), project, ["{broken"])
    client = logged_in(lead)
    body = client.get(project.get_absolute_url()).content.decode()
    assert "d.jsonl" in body and ">Remove</button>" not in body
    assert client.post(f"/projects/{project.slug}/batches/{batch.uuid}/delete/").status_code == 403
    assert ImportBatch.objects.filter(pk=batch.pk).exists()
