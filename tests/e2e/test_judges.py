"""An AI judge in Chromium: a lead starts a judge on the tiny model from the New judge page, a worker in
another process judges every pair in both orders, and the Review page shows the judge's calibration
against the project's people (agreement and κ, position consistency, the reliability diagram, the
disagreement queue), with a screenshot. Needs PostgreSQL (CI)."""

from __future__ import annotations

import pytest
from django.conf import settings

from evaluation.models import Judge
from tests.conftest import PASSWORD
from tests.evaluation.test_judges import people_choose
from tests.labeling.test_assignment import make_pairs
from tests.workers import needs_postgres, start_worker, stop_worker, wait_for, worker_log

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), needs_postgres]


def test_a_lead_runs_a_judge_and_reads_its_calibration(
    page, live_server, login, screenshot, lively_model_dir, training_queue, project, lead, make_user
):
    settings.PREFSTUDIO_BASE_MODELS = {"tiny": str(lively_model_dir)}
    project.overlap = 2
    project.save()
    pairs = make_pairs(project, 12)
    votes = [["a", "a"], ["b", "b"], ["a", "b"], ["b"]] * 3
    people_choose(project, pairs, votes, make_user)
    login(lead.username, PASSWORD)
    page.goto(f"{live_server.url}/projects/{project.slug}/review/")
    assert "No AI judge has judged this project's pairs yet." in page.inner_text("#judges")
    page.get_by_role("link", name="New judge").click()
    page.select_option("#id_model", "base:tiny")
    page.fill("#id_name", "tiny judge")
    page.get_by_role("button", name="Start judging").click()
    judge = Judge.objects.get()
    assert judge.project == project and "{first}" in judge.template
    worker = start_worker(training_queue, PREFSTUDIO_BASE_MODELS=f"tiny={lively_model_dir}")
    try:
        wait_for(lambda: Judge.objects.get().finished, timeout=180, what="the judge")
    finally:
        stop_worker(worker)
    judge.refresh_from_db()
    assert judge.state == "succeeded", judge.error or worker_log(training_queue)
    page.wait_for_selector("#judge-status .state-succeeded", timeout=15_000)  # htmx polled the status
    page.goto(f"{live_server.url}/projects/{project.slug}/review/#judges")
    section = page.locator(f"#judge-{judge.pk}-calibration")
    text = section.inner_text()
    assert "tiny judge" in text and "AI judge" in text
    assert "Agrees with the people's consensus" in text and "of 6 pairs" in text
    assert "Position consistency" in text and "Expected calibration error" in text
    assert section.locator("svg[role=img]").count() == 1  # the reliability diagram, server-rendered
    section.scroll_into_view_if_needed()
    screenshot("judge-calibration")
