"""An admin uploads a dataset in Chromium, checks the preview, imports it, and edits the rubric live."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labeling.models import ImportBatch, Pair, Project
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def test_upload_preview_and_import(page, live_server, login, screenshot, make_user, tmp_path):
    project = Project.objects.create(slug="chat", name="Chat quality")
    make_user("boss", "admin", is_staff=True)
    records = [
        {"id": f"r{i}", "prompt": f"How do I boil an egg, take {i}?", "response_a": "Boil it **9 minutes**.",
         "response_b": "<img src=x onerror=alert(1)> Crack it into a pan.", "model_a": "secret-model"}
        for i in range(14)
    ]  # fmt: skip
    records.append({"prompt": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", "rejected": "What."})
    path = tmp_path / "eggs.data"  # the name says nothing: the format comes from the content
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    login("boss", PASSWORD)
    page.goto(f"{live_server.url}{project.get_absolute_url()}")
    page.get_by_role("link", name="Import pairs").click()
    page.set_input_files("input[type=file]", str(path))
    page.get_by_role("button", name="Upload and preview").click()

    page.wait_for_selector("text=Preview: the first records")
    assert page.locator(".preview-pair").count() == 10
    assert "JSONL" in page.locator("p.muted").first.inner_text()
    assert "<img src=x onerror=alert(1)>" in page.locator(".preview-pair").first.inner_text()
    screenshot("import-preview")
    assert Pair.objects.count() == 0

    page.get_by_role("button", name="Import the whole file").click()
    page.wait_for_selector("text=15 pairs imported from 15 records.")
    screenshot("import-done")
    assert Pair.objects.filter(project=project).count() == 15
    assert ImportBatch.objects.get().state == "done"
    assert dialogs == []

    page.goto(f"{live_server.url}{project.get_absolute_url()}")
    assert page.locator("table.list").first.get_by_text("eggs.data").is_visible()


def test_rubric_preview_updates_while_typing(page, live_server, login, make_user):
    project = Project.objects.create(slug="r", name="Rubric test", rubric="Old rubric")
    make_user("boss", "admin", is_staff=True)
    login("boss", PASSWORD)
    page.goto(f"{live_server.url}/projects/{project.slug}/edit/")
    page.wait_for_selector("#rubric-preview >> text=Old rubric")
    page.fill(
        "textarea[name=rubric]", "# Be kind\n\nPrefer **short** answers. <script>window.pwned=1</script>"
    )
    page.wait_for_selector("#rubric-preview h1 >> text=Be kind")
    assert page.locator("#rubric-preview strong").inner_text() == "short"
    assert page.evaluate("window.pwned") is None
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"{live_server.url}/projects/{project.slug}/")
    project.refresh_from_db()
    assert project.rubric.startswith("# Be kind")


def test_preview_names_the_layout_and_a_mapping_reads_another(
    page, live_server, login, screenshot, make_user, tmp_path
):
    project = Project.objects.create(slug="pub", name="Public data")
    make_user("boss", "admin", is_staff=True)
    login("boss", PASSWORD)
    formats = Path(__file__).resolve().parents[1] / "labeling" / "formats"

    def upload(path: Path) -> None:
        page.goto(f"{live_server.url}/projects/{project.slug}/import/")
        page.set_input_files("input[type=file]", str(path))
        page.get_by_role("button", name="Upload and preview").click()
        page.wait_for_selector("text=Preview: the first records")

    upload(formats / "01_hh_rlhf_raw.jsonl.gz")
    assert page.locator(".layout-name").all_inner_texts() == ["HH-RLHF transcripts"]
    assert "the sides differ before the last turn" in page.locator(".preview-notes").inner_text()
    assert not page.locator("#mapping").evaluate("el => el.open")  # recognised: no mapping needed
    screenshot("import-preview-layout")

    other = tmp_path / "arena.jsonl"
    rows = [{"question": f"Q{i}?", "answer_a": f"A{i}", "answer_b": f"B{i}", "winner": "a"} for i in range(3)]
    other.write_text("".join(json.dumps(r) + "\n" for r in rows))
    upload(other)
    assert (
        "no layout matches keys [question, answer_a, answer_b, winner]"
        in page.locator(".preview-error").first.inner_text()
    )
    assert page.locator("#mapping").evaluate("el => el.open")
    assert page.locator("select[name=prompt]").input_value() == "question"  # pre-filled from the file's keys
    page.select_option("select[name=response_a]", "answer_a")
    page.select_option("select[name=response_b]", "answer_b")
    page.get_by_role("button", name="Apply the mapping and preview again").click()
    page.wait_for_selector(".layout-name")
    assert page.locator(".layout-name").inner_text() == "prefstudio pair, fields mapped"
    assert "winner" in page.locator("#preview-summary").inner_text()  # kept as metadata
    screenshot("import-mapping")
    page.get_by_role("button", name="Import the whole file").click()
    page.wait_for_selector("text=3 pairs imported from 3 records.")
    assert Pair.objects.filter(project=project, prompt="Q1?").get().metadata == {"winner": "a"}
