"""An admin uploads a dataset in Chromium, checks the preview, imports it, and edits the rubric live."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import expect

from labeling.models import ImportBatch, Pair, Project
from tests.conftest import PASSWORD
from tests.labeling.boards import vote

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
FORMATS = Path(__file__).resolve().parents[1] / "labeling" / "formats"


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
    rows = [
        {"question": f"Q{i}?", "answer_1": f"A{i}", "answer_2": f"B{i}", "winner": "a", "turn": 1}
        for i in range(3)
    ]
    other.write_text("".join(json.dumps(r) + "\n" for r in rows))
    upload(other)
    assert (
        "no layout matches keys [question, answer_1, answer_2, winner, turn]"
        in page.locator(".preview-error").first.inner_text()
    )
    assert "--map" not in page.locator(".preview-error").first.inner_text()  # the form, not the command line
    assert page.locator("#mapping").evaluate("el => el.open")
    assert page.locator("select[name=prompt]").input_value() == "question"  # pre-filled from the file's keys
    assert page.locator("select[name=label]").input_value() == "winner"  # and the dataset's preference
    assert page.locator("select[name=label_value_0]").input_value() == "a"
    page.select_option("select[name=response_a]", "answer_1")
    page.select_option("select[name=response_b]", "answer_2")
    page.get_by_role("button", name="Apply the mapping and preview again").click()
    page.wait_for_selector(".layout-name")
    assert page.locator(".layout-name").inner_text() == "prefstudio pair, fields mapped"
    assert "turn" in page.locator("#preview-summary").inner_text()  # kept as metadata
    assert "A better 3" in page.locator("#preview-labels").inner_text()
    screenshot("import-mapping")
    page.get_by_role("button", name="Import the whole file").click()
    page.wait_for_selector("text=3 pairs imported from 3 records.")
    stored = Pair.objects.filter(project=project, prompt="Q1?").get()
    assert (stored.metadata, stored.original_label) == ({"turn": 1}, "a")


def test_a_label_mapped_in_the_preview_is_audited_on_the_review_page(
    page, live_server, login, screenshot, make_user
):
    project = Project.objects.create(slug="tldr", name="Summaries")
    make_user("boss", "admin", is_staff=True)
    login("boss", PASSWORD)
    page.goto(f"{live_server.url}/projects/{project.slug}/import/")
    page.set_input_files("input[type=file]", str(FORMATS / "21_summarize_from_feedback.jsonl"))
    page.get_by_role("button", name="Upload and preview").click()
    page.wait_for_selector("text=Preview: the first records")
    assert (
        "no layout matches keys [info, summaries, choice" in page.locator(".preview-error").first.inner_text()
    )
    assert page.locator("#mapping").evaluate("el => el.open")
    fields = {
        "prompt": "info.post",
        "id": "info.id",
        "response_a": "summaries.0.text",
        "response_b": "summaries.1.text",
        "model_a": "summaries.0.policy",
        "model_b": "summaries.1.policy",
        "label": "choice",
    }
    for target, source in fields.items():
        page.select_option(f"select[name={target}]", source)
    # A row per value of the label field in the file, each saying which response it prefers.
    values = page.locator("#label-values")
    expect(values).to_contain_text("what each value of choice in the file means")
    assert values.locator("label").all_inner_texts() == ["0", "1"]
    page.select_option("select[name=label_value_0]", "a")
    page.select_option("select[name=label_value_1]", "b")
    page.get_by_role("button", name="Apply the mapping and preview again").click()
    page.wait_for_selector("#preview-labels")
    assert page.locator("#preview-labels dd").inner_text().startswith("A better 1 · B better 2")
    assert "label ← choice (0 → A, 1 → B)" in page.get_by_text("Read with the field mapping").inner_text()
    assert "the dataset's label: A better" in page.locator(".preview-meta").first.inner_text()
    screenshot("import-label-mapping")
    page.get_by_role("button", name="Import the whole file").click()
    page.wait_for_selector("text=3 pairs imported from 3 records.")
    assert dict(Pair.objects.values_list("external_id", "original_label")) == {
        "t3_8ad1x": "a",
        "t3_8ad2y": "b",
        "t3_8ad3z": "b",
    }

    # Three people judge: they side with the dataset on two pairs and against it on t3_8ad2y.
    raters = [make_user(f"ann{i}", "annotator") for i in range(3)]
    for pair in Pair.objects.all():
        for rater in raters:
            vote(pair, rater, "a" if pair.external_id != "t3_8ad3z" else "b")
    page.goto(f"{live_server.url}/projects/{project.slug}/review/")
    audit = page.locator("section[aria-labelledby=audit]")
    expect(audit).to_contain_text("On 3 of 3 audited pairs with a majority")
    expect(audit).to_contain_text("67% of the time")
    disputed = Pair.objects.get(external_id="t3_8ad2y")
    assert audit.locator("tbody tr").all_inner_texts() == [f"{disputed.pk}\tResponse B\tA is better\tLook"]
    screenshot("import-label-audit")
