"""In Chromium, with every file in an S3 bucket (moto's server, tests/s3.py): an admin asks for a run of two
processes, sees the effective batch before queueing, a worker that shares no folder with the web app trains
it under torchrun, and the run page lists and downloads the adapter from the bucket. Needs PostgreSQL (a
worker in another process)."""

from __future__ import annotations

import zipfile

import pytest
from django.conf import settings

from tests.conftest import PASSWORD
from tests.s3 import bucket_keys
from tests.training.conftest import make_snapshot
from tests.workers import needs_postgres, start_worker, stop_worker, worker_log
from training.models import TrainingRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), needs_postgres]


def test_a_two_process_run_from_the_form_trains_on_a_worker_sharing_only_the_bucket(
    page, live_server, login, screenshot, s3, tiny_model_dir, training_queue, project, make_user, tmp_path
):
    settings.PREFSTUDIO_BASE_MODELS = {"tiny-test-model": str(tiny_model_dir)}
    make_user("ada", "admin", is_staff=True)
    snapshot = make_snapshot(project)  # its files go to the bucket through the storage API

    login("ada", PASSWORD)
    page.goto(f"{live_server.url}/training/runs/new/?snapshot={snapshot.uuid}")
    page.select_option("#id_loss_type", "sigmoid")
    for field, value in {"max_steps": "4", "batch_size": "2", "gradient_accumulation_steps": "2",
                         "processes": "2", "max_length": "96", "eval_steps": "0", "save_steps": "2",
                         "lora_r": "4", "lora_alpha": "8"}.items():  # fmt: skip
        page.fill(f"#id_{field}", value)
    page.get_by_role("button", name="Check the data").click()
    page.wait_for_selector("#checked-batch", timeout=60_000)
    assert "8 pairs per optimizer step (2 per process × 2 processes × 2 accumulation steps)" in (
        page.inner_text("#checked-batch")
    )
    page.get_by_role("button", name="Queue the run").click()
    page.wait_for_selector("text=Queued", timeout=10_000)
    run = TrainingRun.objects.get()
    assert run.processes == 2

    host = tmp_path / "gpu-host"  # the worker's own disk: nothing of the web's folders
    worker = start_worker(
        training_queue, MEDIA_ROOT=str(host / "media"), ARTIFACT_ROOT=str(host / "artifacts"),
        PREFSTUDIO_CACHE_DIR=str(host / "cache"), **s3,
    )  # fmt: skip
    try:
        page.wait_for_selector(".state-succeeded", timeout=240_000)
    finally:
        stop_worker(worker)
    run.refresh_from_db()
    assert run.state == "succeeded" and run.world_size == 2, run.error or worker_log(training_queue)
    page.wait_for_selector("ul.files")
    assert "adapter_model.safetensors" in page.inner_text("ul.files")
    assert "<dd>2</dd>" in page.inner_html(".run-progress")  # Processes: 2
    assert "8 pairs per optimizer step" in page.inner_text("#effective-batch")
    assert f"artifacts/runs/{run.pk}/adapter_model.safetensors" in bucket_keys(s3)
    assert "s3://" in page.inner_text("body")  # the vLLM hint copies the adapter down from the bucket
    screenshot("training-run-object-storage")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download adapter and run card (.zip)").click()
    path = tmp_path / "run.zip"
    download.value.save_as(path)
    names = zipfile.ZipFile(path).namelist()
    assert f"prefstudio-run-{run.pk}/adapter_model.safetensors" in names
    assert not any("checkpoints" in name for name in names)
