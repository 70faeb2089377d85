"""Evaluate → judge → results in Chromium: an admin starts a blind round on a run, a worker in another
process answers, an annotator judges the pairs in the workbench without seeing the models, and the run's
page says what people preferred. Needs PostgreSQL (CI)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from evaluation.models import EvaluationRound
from labeling.models import Judgment, Membership
from tests.conftest import PASSWORD
from tests.generation.conftest import save_random_adapter
from tests.training.conftest import make_snapshot
from tests.workers import needs_postgres, start_worker, stop_worker, wait_for, worker_log
from training.models import TrainingRun
from training.services import artifact_dir

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), needs_postgres]


def test_evaluate_judge_blind_and_read_the_result(
    page, live_server, login, screenshot, lively_model_dir, training_queue, project, admin_user, annotator
):
    settings.PREFSTUDIO_BASE_MODELS = {"tiny": str(lively_model_dir)}
    Membership.objects.create(project=project, user=admin_user, role=Membership.Role.LEAD)
    run = TrainingRun.objects.create(
        snapshot=make_snapshot(project, evaluation=4), base_model="tiny", config={"lora_r": 4},
        created_by=admin_user, state="succeeded",
    )  # fmt: skip
    save_random_adapter(Path(lively_model_dir), artifact_dir(run))
    worker = start_worker(training_queue, PREFSTUDIO_BASE_MODELS=f"tiny={lively_model_dir}")
    try:
        login(admin_user.username, PASSWORD)
        page.goto(f"{live_server.url}{run.get_absolute_url()}")
        page.click("text=Evaluate: people judge base and tuned, blind")
        assert "held-out eval prompts" in page.inner_text("main")
        page.get_by_role("button", name="Start the evaluation").click()
        round_ = EvaluationRound.objects.get()
        wait_for(lambda: _job_state(round_) == "succeeded", timeout=120, what="the answers")
    finally:
        stop_worker(worker)
    job = round_.generation_job
    job.refresh_from_db()
    assert job.state == "succeeded", job.error or worker_log(training_queue)
    assert job.pairs_made > 0

    page.context.clear_cookies()
    login(annotator.username, PASSWORD)
    page.goto(f"{live_server.url}/projects/{round_.project.slug}/label/")
    for n in range(1, job.pairs_made + 1):
        text = page.inner_text("main")
        assert "run:" not in text and "base:tiny" not in text  # blind
        page.locator("label.choice").first.click()  # whatever is on the left
        page.get_by_role("button", name="Submit").click()
        page.wait_for_function(
            "n => document.querySelectorAll('#progress dd')[1].textContent.trim() === String(n)", arg=n
        )
    assert Judgment.objects.filter(pair__batch=job.batch).count() == job.pairs_made

    page.context.clear_cookies()
    login(admin_user.username, PASSWORD)
    page.goto(f"{live_server.url}{round_.get_absolute_url()}")
    result = page.inner_text("main")
    assert "% of prompts" in result and "95% CI" in result or "too few prompts" in result
    screenshot("evaluation-round-result")
    page.goto(f"{live_server.url}{run.get_absolute_url()}")
    assert "People's verdict" in page.inner_text("#evaluation")


def _job_state(round_: EvaluationRound) -> str:
    round_.generation_job.refresh_from_db()
    return round_.generation_job.state
