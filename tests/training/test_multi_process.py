"""Runs of several processes, launched by the worker under torchrun (training/launch.py): the same losses as
one process with the combined batch, cancel reaching every rank, a killed rank failing the run with a
reason. On CPU with gloo; the tiny model of tests/tiny_model.py."""

from __future__ import annotations

import os
import signal
import time

import django_rq
import psutil
import pytest
from django.test import Client

from tests.training.conftest import make_snapshot
from tests.training.test_runs import TINY_CONFIG, last_step, run_state
from tests.workers import needs_postgres, start_worker, stop_worker, wait_for
from training import runner, services
from training.models import TrainingRun


def _create(project, user, base, *, processes: int | None, **config) -> TrainingRun:
    return services.run_create(
        snapshot=make_snapshot(project),
        user=user,
        base_model=base,
        config={**TINY_CONFIG, "eval_steps": 0, "save_steps": 0, **config},
        check_data=False,
        processes=processes,
    )


def _ranks(worker) -> list[psutil.Process]:
    """The engine's processes under the worker (its work horse's torchrun's children)."""
    found = []
    for process in psutil.Process(worker.pid).children(recursive=True):
        try:
            line = process.cmdline()
            if "training.engine" in line and "training.launch" not in line and process.status() != "zombie":
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def _launched(worker) -> list[psutil.Process]:
    """Every process of a launch under the worker: torchrun's wrapper and the ranks."""
    found = []
    for process in psutil.Process(worker.pid).children(recursive=True):
        try:
            line = " ".join(process.cmdline())
            if ("training.engine" in line or "training.launch" in line) and process.status() != "zombie":
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.mark.django_db(transaction=True)
def test_two_processes_give_the_step_losses_of_one_process_with_the_combined_batch(
    training_queue, tiny_base, project, admin_user
):
    two = _create(project, admin_user, tiny_base, processes=2, batch_size=2, max_steps=4)
    one = _create(project, admin_user, tiny_base, processes=1, batch_size=4, max_steps=4)
    django_rq.get_queue(training_queue).empty()  # the worker's code runs here, one run after the other
    assert runner.execute(two.pk) == "succeeded", run_state(two).error
    assert runner.execute(one.pk) == "succeeded", run_state(one).error
    two, one = run_state(two), run_state(one)
    assert (two.world_size, one.world_size) == (2, 1)
    assert (
        "4 pairs per optimizer step (2 per process × 2 processes × 1 accumulation step)"
        in two.effective_batch
    )

    def losses(run: TrainingRun) -> list[float]:
        rows = run.metrics.filter(kind="train").order_by("step")
        return [row.values["loss"] for row in rows]

    assert len(losses(two)) == 4
    assert losses(two) == pytest.approx(losses(one), abs=1e-5)
    assert two.final_metrics["loss"] == pytest.approx(one.final_metrics["loss"], abs=1e-5)
    assert "2 processes" in two.log_tail and two.step == 4
    # The run page says it, with the effective batch.
    client = Client()
    client.force_login(admin_user)
    page = client.get(two.get_absolute_url()).content.decode()
    assert "<dt>Processes</dt><dd>2</dd>" in page and "2 per process × 2 processes" in page


@pytest.mark.django_db(transaction=True)
@needs_postgres
def test_cancel_reaches_both_ranks_and_the_run_ends_canceled_with_a_checkpoint(
    training_queue, tiny_base, project, admin_user
):
    run = _create(project, admin_user, tiny_base, processes=2, batch_size=2, max_steps=5000)
    worker = start_worker(training_queue)
    try:
        wait_for(lambda: last_step(run) >= 2, timeout=120, what="two steps")
        assert len(_ranks(worker)) == 2
        services.run_cancel(run)
        wait_for(lambda: run_state(run).state == "canceled", timeout=60, what="the cancel")
        wait_for(lambda: not _launched(worker), timeout=20, what="every rank to end")
    finally:
        stop_worker(worker)
    run = run_state(run)
    assert run.resumable and services.checkpoint_step(run) == run.step >= 2
    assert not run.error


@pytest.mark.django_db(transaction=True)
@needs_postgres
def test_a_rank_killed_with_sigkill_fails_the_run_with_the_reason_within_a_minute(
    training_queue, tiny_base, project, admin_user
):
    run = _create(project, admin_user, tiny_base, processes=2, batch_size=2, max_steps=5000)
    worker = start_worker(training_queue)
    try:
        wait_for(lambda: last_step(run) >= 1, timeout=120, what="a first step")
        (victim,) = [p for p in _ranks(worker) if p.environ().get("RANK") == "1"]
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: run_state(run).state == "failed", timeout=60, what="the run to fail")
        assert time.monotonic() - killed < 60
        wait_for(lambda: not _launched(worker), timeout=20, what="the other rank to end")
    finally:
        stop_worker(worker)
    run = run_state(run)
    assert f"rank 1 (pid {victim.pid}) was killed by SIGKILL" in run.error
    assert run.resumable  # Resume continues from a checkpoint, or from the start


@pytest.mark.django_db(transaction=True)
def test_processes_are_asked_on_the_form_and_shown_as_an_effective_batch(
    training_queue, tiny_base, project, admin_user
):
    snapshot = make_snapshot(project)
    client = Client()
    client.force_login(admin_user)
    page = client.get("/training/runs/new/").content.decode()
    assert "Processes (GPUs)" in page and "Effective batch: 4 pairs per optimizer step per process" in page
    data = {"snapshot": str(snapshot.uuid), "base_model": "tiny", "loss_type": "sigmoid", "beta": "0.1",
            "learning_rate": "5e-5", "num_epochs": "1", "batch_size": "2", "gradient_accumulation_steps": "3",
            "max_length": "64", "lora_r": "4", "lora_alpha": "8", "lora_dropout": "0", "seed": "1",
            "eval_steps": "0", "save_steps": "0", "max_steps": "2", "system_turn": "keep"}  # fmt: skip
    response = client.post("/training/runs/new/", {**data, "processes": "0"})
    assert (
        response.status_code == 400 and b"Processes (GPUs): Ensure this value is greater" in response.content
    )
    response = client.post("/training/runs/new/", {**data, "processes": "2"})
    assert response.status_code == 302, response.content.decode()[-2000:]
    queued = TrainingRun.objects.get()
    assert queued.processes == 2 and queued.config["gradient_accumulation_steps"] == 3
    page = client.get(queued.get_absolute_url()).content.decode()
    assert "12 pairs per optimizer step (2 per process × 2 processes × 3 accumulation steps)" in page
    assert "<dt>Processes</dt><dd>2 asked</dd>" in page
    run = _create(project, admin_user, tiny_base, processes=3, batch_size=2, gradient_accumulation_steps=2)
    assert run.processes == 3 and run.world_size is None
    assert (
        "12 pairs per optimizer step (2 per process × 3 processes × 2 accumulation steps)"
        in run.effective_batch
    )
    with pytest.raises(ValueError, match="processes"):
        _create(project, admin_user, tiny_base, processes=0)
