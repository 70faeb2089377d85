"""An admin launches a DPO run on the demo snapshot in Chromium, watches it learn, and downloads the
adapter. A real RQ worker in another process runs it, so this needs PostgreSQL (CI)."""

from __future__ import annotations

import zipfile

import pytest
from django.conf import settings
from django.core.management import call_command

from labeling.models import ExportSnapshot
from tests.workers import needs_postgres, start_worker, stop_worker, worker_log
from training.models import TrainingRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), needs_postgres]


def test_admin_launches_a_run_watches_it_learn_and_downloads_the_adapter(
    page, live_server, login, screenshot, tiny_model_dir, training_queue, tmp_path
):
    settings.PREFSTUDIO_BASE_MODELS = {"tiny-test-model": str(tiny_model_dir)}
    call_command("seed_demo", "--allow-production")
    snapshot = ExportSnapshot.objects.get(project__slug="demo")
    assert snapshot.state == "done" and snapshot.eval_rows > 0

    login("admin", "prefstudio-demo")
    page.goto(f"{live_server.url}/training/")
    page.click("text=New run")
    page.select_option("#id_snapshot", str(snapshot.uuid))
    assert page.input_value("#id_label_smoothing") == str(snapshot.suggested_label_smoothing)
    page.fill("#id_max_steps", "12")
    page.fill("#id_max_length", "256")
    page.fill("#id_eval_steps", "3")
    # Check the data first: htmx swaps the check in below the form; nothing is queued.
    page.get_by_role("button", name="Check the data").click()
    page.wait_for_selector("#data-check h2", timeout=60_000)
    check = page.locator("#data-check")
    assert "Train:" in check.inner_text() and check.locator("svg rect").count() > 3
    assert check.locator(".token-pair").count() == 3 and check.locator(".tok-special").count() > 0
    assert page.url.endswith("/training/runs/new/") and not TrainingRun.objects.exists()
    check.locator(".token-pair").first.scroll_into_view_if_needed()
    screenshot("training-data-check")
    page.get_by_role("button", name="Queue the run").click()
    page.wait_for_selector("text=Queued", timeout=10_000)
    run = TrainingRun.objects.get()

    worker = start_worker(training_queue)
    try:
        page.wait_for_selector("#run-status progress[value]:not([value='0'])", timeout=120_000)
        page.wait_for_selector("#run-status polyline", timeout=120_000)  # the curves draw as it learns
        screenshot("training-run-progress")
        page.wait_for_selector(".state-succeeded", timeout=240_000)
    finally:
        stop_worker(worker)
    run.refresh_from_db()
    assert run.state == "succeeded", run.error or worker_log(training_queue)
    page.wait_for_selector("#before-after .outcome")
    assert "held-out preference share" in page.inner_text("#before-after .outcome")
    assert "Reward accuracy at the end" in page.inner_text("#before-after")
    screenshot("training-run")
    with page.expect_download() as download:
        page.click("text=Download adapter and run card")
    path = tmp_path / "run.zip"
    download.value.save_as(path)
    names = zipfile.ZipFile(path).namelist()
    assert any(n.endswith("adapter_model.safetensors") for n in names)
    assert any(n.endswith("run_card.md") for n in names)
