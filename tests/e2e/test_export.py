"""A lead exports in Chromium: a rule changed updates the preview in place, a snapshot is created, its
files are listed and one is downloaded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import expect

from labeling.models import ExportSnapshot, Membership, Pair, Project
from tests.conftest import PASSWORD
from tests.labeling.boards import LAYOUT, make_board

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _quick_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def kept(page):
    return page.locator("#export-preview dl.stats > div", has=page.locator("dt", has_text="Kept")).locator(
        "dd"
    )


def test_preview_create_and_download(
    page, live_server, login, screenshot, project, lead, make_user, tmp_path
):
    make_board(project, lead, make_user)
    login("leah", PASSWORD)
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}/projects/{project.slug}/export/")
    expect(kept(page)).to_have_text("3")  # pairs 0, 1 and 6 (see tests/labeling/boards.py)
    expect(page.locator("#export-preview")).to_contain_text("Multi-turn chat prompt")

    # The conversational shape keeps the chat pair too: only the preview is swapped.
    page.evaluate("window.notReloaded = true")
    page.get_by_label("Shape", exact=True).select_option("conversational")
    expect(kept(page)).to_have_text("4")
    expect(page.locator("#export-preview")).not_to_contain_text("Multi-turn chat prompt")
    expect(page.locator("#export-preview .sample-row")).to_have_count(4)
    assert page.evaluate("window.notReloaded") is True
    page.get_by_label("Eval fraction", exact=True).fill("0.3")
    screenshot("export")

    page.get_by_role("button", name="Create snapshot").click()
    expect(page.locator("h1")).to_contain_text("Snapshot of")
    snapshot = ExportSnapshot.objects.get()
    assert (snapshot.state, snapshot.shape, snapshot.kept, snapshot.eval_fraction) == (
        "done",
        "conversational",
        4,
        0.3,
    )
    files = page.locator("table.list", has=page.locator("th", has_text="sha256")).locator("tbody tr")
    expect(files).to_have_count(2)
    for info in snapshot.files:
        expect(page.locator("code.hash", has_text=info["sha256"])).to_be_visible()
    screenshot("export-detail")

    with page.expect_download() as download_info:
        page.get_by_role("link", name="train.jsonl").click()
    download = download_info.value
    assert download.suggested_filename == f"{project.slug}-{str(snapshot.uuid)[:8]}-train.jsonl"
    saved = tmp_path / "train.jsonl"
    download.save_as(saved)
    train = next(info for info in snapshot.files if info["split"] == "train")
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == train["sha256"]
    original = Path(settings.MEDIA_ROOT) / snapshot.directory / "train.jsonl"
    assert saved.read_bytes() == original.read_bytes()
    rows = [json.loads(line) for line in saved.read_text().splitlines()]
    assert {row["id"] for row in rows} <= {f"p{i}" for i in range(len(LAYOUT))} and len(rows) == train["rows"]


def test_the_hosted_shape_shows_its_json_rows_and_exports_them(
    page, live_server, login, screenshot, lead, make_user
):
    """The preference format of hosted services: the preview shows each row as the file will hold it
    (JSON, keys in file order) under its vote chips; the snapshot's file has those rows."""
    # A slug of its own: the shared cache (Redis) keys projects by slug, and other test runs on the same
    # Redis cache their own "alpha".
    project = Project.objects.create(slug="hosted-export", name="Hosted export")
    Membership.objects.create(project=project, user=lead, role=Membership.Role.LEAD)
    board = make_board(project, lead, make_user)
    Pair.objects.filter(pk=board.pairs[0].pk).update(metadata={"input_ids": list(range(2000))})
    login("leah", PASSWORD)
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}/projects/{project.slug}/export/")
    rows = page.locator("#export-preview .sample-row")
    expect(rows.first).to_contain_text('"id": "p0"')
    first = json.loads(rows.first.inner_text())
    assert list(first) == ["id", "prompt", "chosen", "rejected", "meta"]
    assert first["meta"]["metadata"] == {"input_ids": list(range(2000))}  # an object, not JSON text
    sizes = page.locator("#export-row-sizes")
    expect(sizes).to_contain_text("pair metadata makes about")
    page.get_by_label("Include pair metadata in meta", exact=False).uncheck()
    expect(sizes).not_to_contain_text("pair metadata makes")
    expect(rows.first).not_to_contain_text('"metadata"')
    expect(page.locator("#export-preview")).to_contain_text("Fewer judgments than the minimum")
    expect(page.locator("#export-preview")).not_to_contain_text("too_few_votes")

    page.get_by_label("Shape", exact=True).select_option("openai-preference")
    expect(kept(page)).to_have_text("4")  # the chat pair too
    expect(rows).to_have_count(4)
    expect(page.locator("#export-preview")).to_contain_text("hosted services take these three keys only")
    shown = [json.loads(text) for text in rows.all_inner_texts()]
    assert [list(row) for row in shown] == [["input", "preferred_output", "non_preferred_output"]] * 4
    assert shown[3]["input"]["messages"] == LAYOUT[7][0]  # the chat prompt, whole
    chips = page.locator("#export-preview .sample").first.locator(".badge")
    expect(chips).to_have_text(["A is better 3"])
    expect(page.locator("#export-preview .sample").nth(3).locator(".badge")).to_have_text(["B is better 3"])
    page.get_by_label("Minimum share", exact=True).fill("0.667")
    expect(kept(page)).to_have_text("2")  # pairs won 2 to 1 no longer meet it
    page.get_by_label("Minimum share", exact=True).fill("2/3")
    expect(kept(page)).to_have_text("4")
    page.get_by_label("Eval fraction", exact=True).fill("0")
    screenshot("export-hosted")

    page.get_by_role("button", name="Create snapshot").click()
    expect(page.locator("h1")).to_contain_text("Snapshot of")
    snapshot = ExportSnapshot.objects.get()
    assert (snapshot.shape, snapshot.kept, snapshot.min_share_text) == ("openai-preference", 4, "2/3")
    expect(page.locator("#snapshot-rules")).to_contain_text("Minimum share2/3")
    screenshot("export-hosted-detail")
    written = Path(settings.MEDIA_ROOT) / snapshot.directory / "train.jsonl"
    assert [json.loads(line) for line in written.read_text().splitlines()] == shown
