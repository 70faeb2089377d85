"""An admin asks base and tuned for an answer in the playground, then queues a generation job and watches
it land pairs, in Chromium. A real RQ worker in another process answers, so this needs PostgreSQL (CI)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from generation.models import GenerationJob
from labeling.models import Membership
from tests.conftest import PASSWORD
from tests.generation.conftest import save_random_adapter
from tests.labeling.test_assignment import make_pairs
from tests.training.conftest import make_snapshot
from tests.workers import needs_postgres, start_worker, stop_worker, worker_log
from training.models import TrainingRun
from training.services import artifact_dir

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), needs_postgres]


def test_playground_base_and_tuned_then_a_generation_job_lands_pairs(
    page, live_server, login, screenshot, lively_model_dir, training_queue, project, admin_user
):
    settings.PREFSTUDIO_BASE_MODELS = {"tiny": str(lively_model_dir)}
    Membership.objects.create(project=project, user=admin_user, role=Membership.Role.LEAD)
    make_pairs(project, 3)
    run = TrainingRun.objects.create(snapshot=make_snapshot(project), base_model="tiny", config={"lora_r": 4},
                                     created_by=admin_user, state="succeeded")  # fmt: skip
    save_random_adapter(Path(lively_model_dir), artifact_dir(run))
    worker = start_worker(training_queue, PREFSTUDIO_BASE_MODELS=f"tiny={lively_model_dir}")
    try:
        login(admin_user.username, PASSWORD)
        page.goto(f"{live_server.url}{run.get_absolute_url()}")
        page.click("text=Playground: base and tuned side by side")
        page.fill("#id_prompt", "Tell me about the **river**.")
        page.get_by_role("button", name="Answer").click()
        page.wait_for_selector("#answers:not([hx-get])", timeout=120_000)
        answers = page.locator("#answers .wb-response")
        assert answers.count() == 2 and "tiny (base)" in answers.nth(0).inner_text()
        assert f"run {run.pk}" in answers.nth(1).inner_text()
        assert page.locator(".wb-prompt strong").inner_text() == "river"
        screenshot("generation-playground")

        page.goto(f"{live_server.url}/generation/")
        page.click("text=New generation job")
        page.select_option("#id_project", str(project.pk))
        page.check("input[name=models][value='base:tiny']")
        page.fill("#id_samples", "3")
        page.fill("#id_max_new_tokens", "16")
        page.get_by_role("button", name="Queue the job").click()
        page.wait_for_selector("#job-status", timeout=10_000)
        page.wait_for_selector("#job-status .state-succeeded", timeout=120_000)
        screenshot("generation-job-progress")
    finally:
        stop_worker(worker)
    job = GenerationJob.objects.get(kind="samples")
    assert job.state == "succeeded", job.error or worker_log(training_queue)
    assert job.pairs_made + job.identical_skipped == 9
    assert page.locator("#job-status").get_by_text("Pairs imported").count() == 1
