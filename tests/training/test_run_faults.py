"""Training runs through faults: a killed work horse under a live worker, a lost database connection in
the middle of a run, the periodic reaper of the job machinery."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import django_rq
import psutil
import pytest
from django.utils import timezone

from prefstudio import jobs
from tests.training.conftest import make_snapshot
from tests.training.test_runs import create_run, run_state
from tests.workers import needs_postgres, start_worker, stop_worker, wait_for
from training import runner
from training.models import TrainingRun


@pytest.mark.django_db(transaction=True)
@needs_postgres
def test_a_killed_work_horse_fails_its_run_at_once_without_anyone_looking(
    training_queue, tiny_base, project, admin_user
):
    run = create_run(project, admin_user, tiny_base, max_steps=5000, eval_steps=0)
    worker = start_worker(training_queue)
    try:
        wait_for(lambda: run_state(run).step >= 1, what="the first step")
        horses = psutil.Process(worker.pid).children()
        assert len(horses) == 1
        os.kill(horses[0].pid, signal.SIGKILL)  # the out-of-memory killer's way: the worker lives on
        killed = time.monotonic()
        # No page is opened: the worker itself settles the run.
        wait_for(lambda: run_state(run).state == TrainingRun.State.FAILED, timeout=60, what="the run failed")
        assert worker.poll() is None  # the worker is still serving its queue
    finally:
        stop_worker(worker)
    run = run_state(run)
    assert time.monotonic() - killed < 60
    assert run.error.startswith("The training stopped: its worker process was killed by SIGKILL"), run.error
    assert run.resumable


@pytest.mark.django_db(transaction=True)
def test_the_workers_maintenance_reaps_a_run_whose_heartbeat_stopped(project, admin_user, settings):
    """A run whose host vanished (no worker left to see its horse die) is failed by any worker's periodic
    maintenance, not only when a training page is opened."""
    snapshot = make_snapshot(project)
    silent = timezone.now() - timedelta(seconds=settings.TRAINING_LOST_SECONDS + 30)
    run = TrainingRun.objects.create(
        snapshot=snapshot, base_model="tiny", config={}, created_by=admin_user,
        state=TrainingRun.State.RUNNING, heartbeat_at=silent, worker_host="gone",
    )  # fmt: skip
    worker = jobs.Worker(["default"], connection=django_rq.get_connection("default"))
    assert worker.maintenance_interval == jobs.MAINTENANCE_SECONDS <= settings.TRAINING_LOST_SECONDS
    worker.run_maintenance_tasks()
    run.refresh_from_db()
    assert run.state == TrainingRun.State.FAILED
    assert run.error.startswith("Worker lost: no heartbeat from gone")


@pytest.mark.django_db(transaction=True)
def test_a_retried_job_takes_its_own_running_run_up_again_and_no_other(project, admin_user):
    snapshot = make_snapshot(project)
    run = TrainingRun.objects.create(snapshot=snapshot, base_model="tiny", config={}, created_by=admin_user,
                                     state=TrainingRun.State.RUNNING, job_id="job-1", attempts=1)  # fmt: skip
    assert runner._start(run.pk, "w", "job-2") is None  # another job: not its run
    assert runner._start(run.pk, "w", "") is None
    again = runner._start(run.pk, "w", "job-1")
    assert again is not None and again.attempts == 2 and again.state == TrainingRun.State.RUNNING
