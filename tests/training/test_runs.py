"""Training runs in the app: created from a snapshot, carried by RQ to a worker, recorded on their row,
canceled, lost with their worker, re-enqueued when Redis forgot them, resumed from a checkpoint.

The tiny model of tests/tiny_model.py stands in for a base model. Tests with a worker in a subprocess
need a database that another process can open: PostgreSQL (CI); on SQLite they are skipped.
"""

from __future__ import annotations

import io
import json
import os
import signal
import time
import zipfile
from datetime import timedelta

import django_rq
import psutil
import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from rq.job import Job

from labeling.models import ExportSnapshot, Membership, Project
from tests.conftest import worker_for
from tests.training.conftest import make_snapshot
from tests.workers import needs_postgres, start_worker, stop_worker, wait_for, worker_log
from training import runner, services
from training.config import TrainConfig
from training.forms import MAX_STEPS, RunForm
from training.models import TrainingRun

TINY_CONFIG = {
    "loss_type": "sigmoid",
    "beta": 0.1,
    "learning_rate": 5e-3,
    "batch_size": 4,
    "max_length": 96,
    "lora_r": 4,
    "lora_alpha": 8,
    "seed": 0,
    "eval_steps": 2,
    "save_steps": 2,
}


def create_run(project: Project, user, base: str, *, check_data: bool = False, **config) -> TrainingRun:
    """A run on a fresh snapshot; the data check (a child process) only where a test is about it."""
    return services.run_create(
        snapshot=make_snapshot(project),
        user=user,
        base_model=base,
        config={**TINY_CONFIG, **config},
        check_data=check_data,
    )


def last_step(run: TrainingRun) -> int:
    """The last training step whose metrics the worker stored (0 before the first)."""
    return max(run.metrics.filter(kind="train").values_list("step", flat=True), default=0)


def run_state(run: TrainingRun) -> TrainingRun:
    run.refresh_from_db()
    return run


@pytest.mark.django_db(transaction=True)
@needs_postgres
def test_a_run_goes_queued_running_succeeded_through_a_worker_and_its_adapter_loads(
    training_queue, tiny_base, project, admin_user
):
    run = create_run(project, admin_user, tiny_base, max_steps=4, check_data=True)
    assert run_state(run).state == "queued" and run.job_id  # enqueued once the transaction committed
    job = Job.fetch(
        run.job_id, connection=django_rq.get_connection(training_queue), serializer=settings.RQ_JOB_SERIALIZER
    )
    assert job.args == [run.pk] and job.timeout >= 6 * 3600  # ids only, JSON, hours
    worker = start_worker(training_queue, burst=True)
    assert worker.wait(timeout=240) == 0, worker_log(training_queue)
    run = run_state(run)
    assert run.state == "succeeded", run.error
    assert (run.step, run.total_steps) == (4, 4)
    assert run.device == "cpu" and run.worker_host and run.started_at and run.finished_at
    assert run.tokens_per_second > 0
    steps = list(run.metrics.filter(kind="train").values_list("step", flat=True))
    assert steps == [1, 2, 3, 4]
    evals = list(run.metrics.filter(kind="eval").values_list("step", flat=True))
    assert evals[0] == 0 and evals[-1] == 4
    assert "rewards/accuracies" in run.final_metrics and "logps/preference_share" in run.initial_metrics
    outcome = run.outcome
    assert outcome.pairs == 8 and outcome.before == run.initial_metrics["logps/preference_share"]
    assert outcome.after == pytest.approx(run.final_metrics["logps/preference_share"])
    assert outcome.low <= outcome.change <= outcome.high
    assert run.data_report["train"]["kept"] == 32 and run.data_report["eval"]["kept"] == 8
    assert (
        "train: 32 of 32 pairs kept, 0 dropped" in run.log_tail
        and "held-out preference share" in run.log_tail
    )
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(settings.PREFSTUDIO_BASE_MODELS["tiny"])
    tuned = PeftModel.from_pretrained(base, services.artifact_dir(run))
    assert tuned.merge_and_unload() is not None
    assert (services.artifact_dir(run) / "run_card.json").is_file()


@pytest.mark.django_db(transaction=True)
@needs_postgres
def test_cancel_mid_run_ends_canceled_within_a_step_with_a_checkpoint(
    training_queue, tiny_base, project, admin_user
):
    run = create_run(project, admin_user, tiny_base, max_steps=5000, eval_steps=0, save_steps=0)
    worker = start_worker(training_queue)
    try:
        wait_for(lambda: last_step(run) >= 2, what="two steps")
        services.run_cancel(run)
        # Every finished step stores its metrics at once (the row's progress columns are throttled).
        step_at_cancel = last_step(run)
        wait_for(lambda: run_state(run).state == "canceled", timeout=30, what="the cancel")
    finally:
        stop_worker(worker)
    run = run_state(run)
    # The flag is read before every step: only the step running when it was set may still finish.
    assert step_at_cancel <= last_step(run) <= step_at_cancel + 1
    assert run.step == last_step(run)  # the row says where it stopped
    assert run.resumable and list((services.artifact_dir(run) / "checkpoints").iterdir())


@pytest.mark.django_db(transaction=True)
@needs_postgres
def test_a_worker_killed_mid_run_leaves_the_run_failed_worker_lost(
    training_queue, tiny_base, project, admin_user, settings
):
    settings.TRAINING_LOST_SECONDS = 3
    run = create_run(project, admin_user, tiny_base, max_steps=5000, eval_steps=0)
    worker = start_worker(training_queue)
    try:
        wait_for(lambda: run_state(run).step >= 1, what="the first step")
    finally:
        # The worker and its work horse (RQ puts the horse in a session of its own), with no goodbye.
        tree = [worker.pid, *(p.pid for p in psutil.Process(worker.pid).children(recursive=True))]
        for pid in tree:
            os.kill(pid, signal.SIGKILL)
        worker.wait()
    killed = time.monotonic()
    client = Client()
    client.force_login(admin_user)
    # Whoever looks next (the run page polls every 2 s) finds it failed, well within a minute.
    wait_for(
        lambda: client.get(run.get_absolute_url()) and run_state(run).state == "failed",
        timeout=60,
        what="worker lost",
    )
    assert "Worker lost" in run.error and time.monotonic() - killed < 60
    assert run.resumable


@pytest.mark.django_db(transaction=True)
def test_a_queued_run_whose_job_redis_lost_is_enqueued_again(training_queue, tiny_base, project, admin_user):
    run = create_run(project, admin_user, tiny_base, max_steps=2)
    redis = django_rq.get_connection(training_queue)
    lost = run_state(run).job_id
    django_rq.get_queue(training_queue).empty()  # as if Redis restarted with nothing on disk
    redis.delete(f"rq:job:{lost}")
    assert services.runs_reap() == 0  # too early: its job may just be on its way
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert services.runs_reap() == 1
    run = run_state(run)
    assert run.state == "queued" and run.job_id != lost
    assert Job.exists(run.job_id, connection=redis)
    worker_for(training_queue, worker_class="rq.SimpleWorker").work(burst=True)  # not stuck: it runs
    assert run_state(run).state == "succeeded", run.error


@pytest.mark.django_db(transaction=True)
def test_resume_continues_at_the_checkpoint_step(training_queue, tiny_base, project, admin_user, monkeypatch):
    """A run canceled after step 3 (a checkpoint is saved on the stop) resumes after it and ends at 6."""
    run = create_run(project, admin_user, tiny_base, max_steps=6, save_steps=2)
    django_rq.get_queue(training_queue).empty()  # the first attempt runs here, not through its job
    stop_after = 3

    def record(run_id, kind, step, values):
        services.record_metric(run_id, kind, step, values)
        if kind == "train" and step == stop_after:  # as if an admin pressed Cancel during this step
            TrainingRun.objects.filter(pk=run_id).update(cancel_requested_at=timezone.now())

    monkeypatch.setattr(runner, "record_metric", record)
    first = runner.execute(run.pk)
    monkeypatch.undo()
    run = run_state(run)
    assert first == "canceled" and run.state == "canceled" and run.step <= stop_after + 1
    stopped_at = run.step
    before = timezone.now()
    services.run_resume(run)
    assert run_state(run).state == "queued"
    worker_for(training_queue, worker_class="rq.SimpleWorker").work(burst=True)
    run = run_state(run)
    assert run.state == "succeeded" and run.step == 6 and run.attempts == 2, run.error
    redone = sorted(run.metrics.filter(kind="train", created_at__gte=before).values_list("step", flat=True))
    assert redone == list(range(stopped_at + 1, 7))  # the second attempt began after the checkpoint
    assert "Resuming" in run.log_tail


@pytest.mark.django_db
def test_new_run_form_validates_fields_and_offers_the_measured_label_smoothing(
    tiny_base, project, admin_user
):
    snapshot = make_snapshot(project)
    ExportSnapshot.objects.filter(pk=snapshot.pk).update(suggested_label_smoothing=0.12)
    client = Client()
    client.force_login(admin_user)
    page = client.get("/training/runs/new/").content.decode()
    assert 'value="0.12"' in page and "the KL knob" in page and "tiny" in page
    data = {"snapshot": str(snapshot.uuid), "base_model": "tiny", "loss_type": "sigmoid", "beta": "-1",
            "learning_rate": "5e-5", "num_epochs": "1", "batch_size": "2", "gradient_accumulation_steps": "1",
            "max_length": "64", "lora_r": "4", "lora_alpha": "8", "lora_dropout": "0", "seed": "1",
            "eval_steps": "0", "save_steps": "0", "label_smoothing": "0.1"}  # fmt: skip
    response = client.post("/training/runs/new/", data)
    assert (
        response.status_code == 400
        and b"Beta: Ensure this value is greater than or equal to" in response.content
    )
    assert not TrainingRun.objects.exists()
    response = client.post("/training/runs/new/", {**data, "beta": "0.2", "base_model": "gpt-17"})
    assert response.status_code == 400 and b"gpt-17 is not one of the available choices" in response.content


@pytest.mark.django_db
def test_only_admins_create_cancel_resume_or_download_and_foreign_runs_are_404(
    project, other_project, lead, annotator, admin_user, make_user, tiny_base
):
    run = TrainingRun.objects.create(
        snapshot=make_snapshot(project), base_model="tiny", config={}, state="failed"
    )
    for user in (lead, annotator):
        client = Client()
        client.force_login(user)
        base = f"/training/runs/{run.pk}"
        for url in ("/training/runs/new/", f"{base}/cancel/", f"{base}/resume/", f"{base}/download/"):
            assert client.post(url).status_code == 403, (user, url)
    # A trainer who leads only the other project sees neither this run nor this project's snapshots.
    outsider = make_user("trainer", "lead")
    outsider.user_permissions.add(Permission.objects.get(codename="manage_training"))
    Membership.objects.create(project=other_project, user=outsider, role="lead")
    client = Client()
    client.force_login(outsider)
    assert client.get(run.get_absolute_url()).status_code == 404
    assert client.post(f"/training/runs/{run.pk}/resume/").status_code == 404
    assert str(run.snapshot.uuid) not in client.get("/training/runs/new/").content.decode()


@pytest.mark.django_db
def test_download_streams_a_zip_of_the_adapter_and_run_card(project, admin_user, tiny_base):
    run = TrainingRun.objects.create(
        snapshot=make_snapshot(project), base_model="tiny", config={}, state="succeeded"
    )
    folder = services.artifact_dir(run)
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 4096)
    (folder / "run_card.json").write_text("{}")
    (folder / "reference_logps.safetensors").write_bytes(b"cache")
    client = Client()
    client.force_login(admin_user)
    response = client.get(f"/training/runs/{run.pk}/download/")
    assert response.streaming and response["Content-Disposition"].startswith("attachment")
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    names = sorted(archive.namelist())
    assert names == [
        f"prefstudio-run-{run.pk}/adapter_model.safetensors",
        f"prefstudio-run-{run.pk}/run_card.json",
    ]
    assert archive.read(names[0]) == b"\0" * 4096


@pytest.mark.django_db
def test_deleting_a_snapshot_a_run_used_is_refused(project, admin_user):
    from labeling.snapshots import SnapshotInUse, snapshot_delete

    run = TrainingRun.objects.create(snapshot=make_snapshot(project), base_model="tiny", config={})
    with pytest.raises(SnapshotInUse):
        snapshot_delete(run.snapshot)
    assert ExportSnapshot.objects.filter(pk=run.snapshot_id).exists()


@pytest.mark.django_db(transaction=True)
def test_train_command_runs_one_run_in_the_foreground(training_queue, tiny_base, project, admin_user):
    run = create_run(project, admin_user, tiny_base, max_steps=2)
    out = io.StringIO()
    call_command("train", str(run.pk), stdout=out)
    assert "succeeded, step 2 of 2" in out.getvalue()
    assert run_state(run).state == "succeeded"
    with pytest.raises(CommandError, match="is succeeded, not queued"):
        call_command("train", str(run.pk))
    with pytest.raises(CommandError, match="only failed or canceled runs resume"):
        call_command("train", str(run.pk), "--resume")
    with pytest.raises(CommandError, match="No training run"):
        call_command("train", "999999")


@pytest.mark.django_db
def test_the_run_page_says_queued_then_what_the_worker_does(tiny_base, project, admin_user, training_queue):
    client = Client()
    client.force_login(admin_user)
    snapshot = make_snapshot(project)
    data = {"snapshot": str(snapshot.uuid), "base_model": "tiny", "loss_type": "sigmoid", "beta": "0.1",
            "learning_rate": "5e-3", "num_epochs": "1", "max_steps": "2", "batch_size": "4",
            "gradient_accumulation_steps": "1", "max_length": "96", "lora_r": "4", "lora_alpha": "8",
            "lora_dropout": "0", "seed": "0", "eval_steps": "0", "save_steps": "0", "system_turn": "keep",
            "action": "queue"}  # fmt: skip
    page = client.post("/training/runs/new/", data, follow=True).content.decode()
    run = TrainingRun.objects.get()
    assert f"Queued on <code>{training_queue}</code>: waiting for a worker" in page
    assert "is queued on" not in page  # no flash message that would outlive the queued state
    TrainingRun.objects.filter(pk=run.pk).update(
        state="running", phase="reference:train", phase_done=12, phase_total=29
    )
    status = client.get(run.get_absolute_url(), headers={"HX-Request": "true"}).content.decode()
    assert "Now: reference log-probs: 12 / 29 train pairs" in status and "Queued on" not in status
    assert '<progress max="29" value="12"' in status
    TrainingRun.objects.filter(pk=run.pk).update(phase="training", step=1, total_steps=2)
    status = client.get(run.get_absolute_url(), headers={"HX-Request": "true"}).content.decode()
    assert "Now:" not in status and "1 / 2" in status


@pytest.mark.django_db
def test_resume_says_from_which_step_it_continues(tiny_base, project, admin_user, training_queue):
    client = Client()
    client.force_login(admin_user)
    run = TrainingRun.objects.create(snapshot=make_snapshot(project), base_model="tiny", config={},
                                     state="canceled", attempts=1)  # fmt: skip
    assert "Resume from the start" in client.get(run.get_absolute_url()).content.decode()
    page = client.post(f"/training/runs/{run.pk}/resume/", follow=True).content.decode()
    assert "it continues from the start: no checkpoint was written" in page
    assert "continue from the start (no checkpoint was written)" in page  # the queued notice says it too
    checkpoint = services.artifact_dir(run) / "checkpoints" / "step-000003"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.json").write_text(json.dumps({"step": 3}))
    (services.artifact_dir(run) / "checkpoints" / ".step-000004.partial").mkdir()  # an interrupted save
    TrainingRun.objects.filter(pk=run.pk).update(state="failed")
    assert "Resume after step 3" in client.get(run.get_absolute_url()).content.decode()
    page = client.post(f"/training/runs/{run.pk}/resume/", follow=True).content.decode()
    assert "it continues after step 3, its last checkpoint" in page


@pytest.mark.django_db
def test_snapshots_in_the_run_form_are_told_apart(tiny_base, project, admin_user):
    first, second = make_snapshot(project), make_snapshot(project, train=40, evaluation=10)
    ExportSnapshot.objects.filter(pk=second.pk).update(format="parquet", shape="standard")
    client = Client()
    client.force_login(admin_user)
    page = client.get("/training/runs/new/").content.decode()
    assert f"snapshot #{first.pk} of" in page and "conversational jsonl, 32 train / 8 eval pairs" in page
    assert f"snapshot #{second.pk} of" in page and "standard parquet, 40 train / 10 eval pairs" in page


@pytest.mark.django_db
def test_the_run_form_bounds_the_seed_and_the_steps_and_accepts_the_bounds(tiny_base, project, admin_user):
    """A seed past NumPy's 2**32 - 1 would fail in the worker; a billion steps would run for months."""
    snapshot = make_snapshot(project)
    data = {"snapshot": str(snapshot.uuid), "base_model": "tiny", "loss_type": "sigmoid", "beta": "0.1",
            "learning_rate": "5e-5", "num_epochs": "1", "batch_size": "2", "gradient_accumulation_steps": "1",
            "max_length": "64", "lora_r": "4", "lora_alpha": "8", "lora_dropout": "0", "seed": "1",
            "max_steps": "10", "eval_steps": "0", "save_steps": "0", "system_turn": "keep"}  # fmt: skip
    client = Client()
    client.force_login(admin_user)
    response = client.post("/training/runs/new/", {**data, "seed": str(10**29), "max_steps": str(10**9)})
    body = response.content.decode()
    assert response.status_code == 400
    assert "Seed: At most 4294967295 (2³² − 1), the largest seed NumPy takes." in body
    assert f"Max steps: At most {MAX_STEPS} steps; leave it empty to train by epochs." in body
    assert not TrainingRun.objects.exists()

    def form(**values: object) -> RunForm:
        changed = {name: str(value) for name, value in values.items()}
        return RunForm({**data, **changed}, snapshots=ExportSnapshot.objects.all())

    bad = form(seed=2**32, max_steps=MAX_STEPS + 1, eval_steps=MAX_STEPS + 1, save_steps=-1)
    assert not bad.is_valid() and set(bad.errors) == {"seed", "max_steps", "eval_steps", "save_steps"}

    # A period longer than the run (12 steps, saves every 25) only means nothing before its end.
    for edge in (form(seed=2**32 - 1, max_steps=MAX_STEPS, eval_steps=MAX_STEPS, save_steps=MAX_STEPS),
                 form(seed=0, max_steps=1, eval_steps=1, save_steps=1),
                 form(max_steps="", eval_steps=MAX_STEPS, save_steps=MAX_STEPS),
                 form(max_steps=12, eval_steps=3, save_steps=25)):  # fmt: skip
        assert edge.is_valid(), edge.errors
        assert TrainConfig.from_dict(edge.config(base_model="tiny")).seed == edge.cleaned_data["seed"]
    with pytest.raises(ValueError, match=r"seed must be in \[0, 4294967295\]"):
        TrainConfig(base_model="tiny", seed=2**32)


@pytest.mark.django_db
def test_a_running_runs_polls_read_no_checkpoint_from_storage(tiny_base, project, admin_user, monkeypatch):
    """The resume step is read (a listing and a file, from a bucket maybe) only where the page shows it."""
    run = create_run(project, admin_user, tiny_base)
    TrainingRun.objects.filter(pk=run.pk).update(state="running", attempts=1, heartbeat_at=timezone.now())
    read = []
    monkeypatch.setattr(services, "checkpoint_step", lambda r: read.append(r.pk) or 0)
    client = Client()
    client.force_login(admin_user)
    assert client.get(run.get_absolute_url(), HTTP_HX_REQUEST="true").status_code == 200
    assert read == []
    TrainingRun.objects.filter(pk=run.pk).update(state="failed")
    assert b"Resume from the start" in client.get(run.get_absolute_url()).content and read == [run.pk]
