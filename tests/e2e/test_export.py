"""A lead exports in Chromium: a rule changed updates the preview in place, a snapshot is created, its
files are listed and one is downloaded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import expect

from labeling.models import ExportSnapshot
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
