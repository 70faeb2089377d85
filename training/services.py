"""Training runs from the web app's side: create, enqueue, cancel, resume, and notice runs whose worker
or job is gone. The worker's side is training/runner.py; the engine itself is training/engine.py.

The database row is the truth about a run. RQ carries the job (ids only, JSON), Redis may lose it, a
worker may die: `runs_reap` brings every such run to a state that says what happened.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import django_rq
import redis
from django.conf import settings
from django.core.cache import caches
from django.db import transaction
from django.utils import timezone
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Callback, Job

from labeling.models import ExportSnapshot
from prefstudio import job_rows, jobs, storage
from training.config import TrainConfig
from training.models import RunMetric, TrainingRun

logger = logging.getLogger(__name__)

# Preference shapes the DPO engine trains on (unpaired rows are for KTO).
TRAINABLE_SHAPES = (ExportSnapshot.Shape.STANDARD, ExportSnapshot.Shape.CONVERSATIONAL)
MIN_TRAIN_PAIRS = 8
# A queued run whose job Redis no longer has is enqueued again this long after it was last enqueued.
REQUEUE_AFTER = timedelta(seconds=30)
# A cancel that the engine has not honoured by then (a step longer than this) stops the job outright.
FORCE_STOP_AFTER = timedelta(seconds=60)
LOG_TAIL_LINES = 200


def queue_name() -> str:
    return settings.PREFSTUDIO_TRAINING_QUEUE


def base_models() -> dict[str, str]:
    """The allow-list (settings.PREFSTUDIO_BASE_MODELS) as name -> what the engine loads: a local folder
    (relative paths from the project root; left out until it exists, e.g. before `prepare_demo_model`)
    or, written `hf:ORG/NAME`, a model name the GPU hosts resolve themselves."""
    models = {}
    for name, where in settings.PREFSTUDIO_BASE_MODELS.items():
        if where.startswith("hf:"):
            models[name] = where.removeprefix("hf:")
            continue
        path = Path(where)
        path = path if path.is_absolute() else settings.BASE_DIR / path
        if path.is_dir():
            models[name] = str(path)
    return models


def trainable_snapshots(projects: Any) -> Any:
    """Snapshots of these projects that a run can use: done, a preference shape, an eval split and at
    least MIN_TRAIN_PAIRS training rows."""
    return (
        ExportSnapshot.objects.filter(project__in=projects, state=ExportSnapshot.State.DONE)
        .filter(shape__in=TRAINABLE_SHAPES, eval_rows__gt=0, train_rows__gte=MIN_TRAIN_PAIRS)
        .select_related("project")
    )


def artifact_name(run: TrainingRun) -> str:
    """The run's folder in the artifacts storage (prefstudio.storage.artifacts())."""
    return f"runs/{run.pk}"


def artifact_dir(run: TrainingRun) -> Path:
    """The local folder the run is written in: its folder in a local artifacts storage, otherwise a working
    copy under PREFSTUDIO_CACHE_DIR that the worker uploads from (prefstudio.storage.Mirror)."""
    name = artifact_name(run)
    folder = storage.local_path(storage.artifacts(), name)
    return folder if folder is not None else Path(settings.PREFSTUDIO_CACHE_DIR) / "artifacts" / name


def local_artifacts(run: TrainingRun) -> Path:
    """`artifact_dir(run)` holding the run's adapter, tokenizer and run card (downloaded from a remote
    artifacts storage when this machine lacks them or holds other sizes); checkpoints are not fetched."""
    folder, artifacts = artifact_dir(run), storage.artifacts()
    if storage.is_remote(artifacts):
        for name in artifact_files(run):
            stored = f"{artifact_name(run)}/{name}"
            target = folder / name
            if not (target.is_file() and target.stat().st_size == artifacts.size(stored)):
                storage.download(artifacts, stored, target)
    return folder


def split_files(snapshot: ExportSnapshot) -> tuple[Path, Path | None]:
    """The snapshot's train and eval files on this machine's disk: where a local media storage keeps them,
    or copies under PREFSTUDIO_CACHE_DIR/media/<the snapshot's folder>/ downloaded once from the object store
    (so that, relative to that root, a copy has the stored file's name)."""
    media, cache = storage.media(), ("media", snapshot.directory)
    names = {f["split"]: f"{snapshot.directory}/{f['name']}" for f in snapshot.files}
    by_split = {split: storage.local_copy(media, name, *cache) for split, name in names.items()}
    return by_split["train"], by_split.get("eval")


def _check_files(snapshot: ExportSnapshot, limit: int) -> tuple[Path, Path | None]:
    """The files the data check reads: `split_files`, except that from a remote storage only the first
    `limit` lines of a JSONL file are fetched (all the check tokenizes), so the web process never downloads a
    whole large snapshot; Parquet files come whole (their footer is at the end)."""
    media = storage.media()
    if not storage.is_remote(media) or any(not f["name"].endswith(".jsonl") for f in snapshot.files):
        return split_files(snapshot)
    folder = storage.cache_dir("data-check", str(snapshot.uuid), str(limit))
    paths = {}
    for info in snapshot.files:
        target = folder / info["name"]
        if not target.is_file():
            stream = storage.open_stream(media, f"{snapshot.directory}/{info['name']}")
            lines = stream.iter_lines(keepends=True) if hasattr(stream, "iter_lines") else stream
            partial = target.with_name(f".{target.name}.partial")
            try:
                with partial.open("wb") as out:
                    out.writelines(itertools.islice(lines, limit))
            finally:
                stream.close()
            partial.replace(target)
        paths[info["split"]] = target
    return paths["train"], paths.get("eval")


def _config(base_model: str, config: dict[str, Any]) -> TrainConfig:
    models = base_models()
    if base_model not in models:
        raise ValueError(
            f"base_model: {base_model!r} is not on the allow-list ({', '.join(models) or 'empty'})"
        )
    return TrainConfig.from_dict({**config, "base_model": models[base_model]})


def data_check(*, snapshot: ExportSnapshot, base_model: str, config: dict[str, Any]) -> dict[str, Any]:
    """What a run would train on: `python -m training.engine CONFIG --check --json` on the snapshot's
    files, in a child process, so the web process loads neither torch nor a tokenizer.

    The tokenizer alone is loaded (no weights); at most PREFSTUDIO_DATA_CHECK_MAX_ROWS rows of each file are
    tokenized (a worker checks every row before it trains). Returns `training.data.check_files`' dict plus
    `settings` and `seconds`, or `{"error": ...}` in words when the check could not run (a tokenizer this
    host cannot load, a timeout). Results are cached by snapshot and settings for an hour in the shared
    cache (snapshots never change). Raises ValueError for a base model off the allow-list or an invalid
    config."""
    checked = _config(base_model, config)
    limit = settings.PREFSTUDIO_DATA_CHECK_MAX_ROWS
    fields = ("base_model", "max_length", "max_prompt_length", "system_turn")
    key = (
        "data-check:"
        + hashlib.sha256(
            json.dumps([str(snapshot.uuid), limit, *(getattr(checked, f) for f in fields)]).encode()
        ).hexdigest()
    )
    cache = caches["shared"]
    try:
        found = cache.get(key)
    except Exception:  # a Redis that does not answer only costs the check again
        found = None
    if found is not None:
        return found
    train_file, eval_file = _check_files(snapshot, limit)
    spec = {"train_file": str(train_file), "eval_file": str(eval_file) if eval_file else None,
            **{f: getattr(checked, f) for f in fields}}  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".json") as handle:
        json.dump(spec, handle)
        handle.flush()
        command = [
            sys.executable,
            "-m",
            "training.engine",
            handle.name,
            "--check",
            "--json",
            "--limit",
            str(limit),
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, cwd=settings.BASE_DIR,
                timeout=settings.PREFSTUDIO_DATA_CHECK_SECONDS, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"error": f"The data check took longer than {settings.PREFSTUDIO_DATA_CHECK_SECONDS} s."}
    if done.returncode not in (0, 4):
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        logger.warning("data check of snapshot %s failed: %s", snapshot.uuid, done.stderr[-2000:])
        return {"error": f"The data check could not run on this host: {last}"}
    result = json.loads(done.stdout)
    with contextlib.suppress(Exception):
        cache.set(key, result, 3600)
    return result


def run_create(
    *,
    snapshot: ExportSnapshot,
    user: Any,
    base_model: str,
    config: dict[str, Any],
    check_data: bool = True,
    processes: int | None = None,
) -> TrainingRun:
    """Record a run and enqueue it once the transaction commits. `config`: TrainConfig fields but
    `base_model`, which comes from the allow-list. Raises ValueError for an unknown base model, an invalid
    config (the message names the field), or data the check finds nothing to train on (`data_check`, skipped
    with `check_data=False`; a check that cannot run on this host does not stop the run: its worker checks
    every pair before it trains). Raises prefstudio.jobs.QueueUnavailable, with nothing stored, when the
    training queue does not answer."""
    checked = _config(base_model, config).to_dict()
    if processes is not None and processes < 1:
        raise ValueError(f"processes: {processes}; at least 1 (or none: every GPU of the worker)")
    _require_queue()
    if check_data:
        check = data_check(snapshot=snapshot, base_model=base_model, config=config)
        if check.get("usable") is False:
            raise ValueError(
                "Not queued: the data check finds nothing to train on. " + " ".join(check["problems"])
            )
    with transaction.atomic():
        run = TrainingRun.objects.create(
            snapshot=snapshot, base_model=base_model, config=checked, created_by=user, processes=processes
        )
        run.artifact_path = f"runs/{run.pk}"
        run.save(update_fields=["artifact_path"])
        transaction.on_commit(lambda: run_enqueue(run))
    return run


def _require_queue() -> None:
    """Refuse to record work that only the queue can start while the queue does not answer. (A queue that
    fails between this check and the commit leaves the run queued with a note; `runs_reap` enqueues it.)"""
    if not jobs.queue_available(settings.PREFSTUDIO_TRAINING_QUEUE):
        raise jobs.QueueUnavailable()


def run_enqueue(run: TrainingRun) -> None:
    """Put the run's job on the training queue (ids only) and remember its id; a Redis that does not
    answer leaves the run queued with a note, and `runs_reap` enqueues it again later."""
    try:
        queue = django_rq.get_queue(settings.PREFSTUDIO_TRAINING_QUEUE)
        job = queue.enqueue(
            "training.tasks.train_run",
            run.pk,
            job_timeout=settings.TRAINING_JOB_TIMEOUT,
            result_ttl=24 * 3600,
            failure_ttl=7 * 24 * 3600,
            on_failure=Callback("training.tasks.run_job_failed"),
        )
    except redis.RedisError as exc:
        TrainingRun.objects.filter(pk=run.pk).update(error=f"Could not reach Redis to enqueue: {exc}")
        logger.warning("run %s: enqueue failed: %s", run.pk, exc)
        return
    TrainingRun.objects.filter(pk=run.pk).update(job_id=job.id, error="", heartbeat_at=timezone.now())
    run.job_id = job.id


def run_cancel(run: TrainingRun) -> TrainingRun:
    """Ask the run to stop. A queued run is canceled at once; a running one stops between two steps
    (its worker checks the flag), saving a checkpoint so it can be resumed."""
    return job_rows.request_cancel(TrainingRun, run.pk, queue=settings.PREFSTUDIO_TRAINING_QUEUE)


def run_resume(run: TrainingRun) -> TrainingRun:
    """Queue a failed or canceled run again: it continues from its last checkpoint (or starts over
    when it has none). Raises ValueError for a run in another state, QueueUnavailable (nothing changed)
    when the training queue does not answer."""
    _require_queue()
    return job_rows.requeue(TrainingRun, run.pk, enqueue=run_enqueue, what="runs")


def artifact_files(run: TrainingRun) -> list[str]:
    """The file names a run's download holds: the adapter, tokenizer and run card (not checkpoints, caches
    or partial writes), from the artifacts storage."""
    try:
        _, files = storage.artifacts().listdir(artifact_name(run))
    except FileNotFoundError:
        return []
    return sorted(f for f in files if not f.startswith(("reference_logps", ".")))


def checkpoint_step(run: TrainingRun) -> int:
    """The step a resumed run continues after: its latest complete checkpoint's, 0 when there is none (it
    starts over). The engine resumes from the same folder (training.engine.restore_checkpoint), which the
    worker first downloads from a remote artifacts storage."""
    artifacts, folder = storage.artifacts(), f"{artifact_name(run)}/checkpoints"
    try:
        steps, _ = artifacts.listdir(folder)
    except FileNotFoundError:
        return 0
    for step in sorted((s for s in steps if s.startswith("step-")), reverse=True):
        with (
            contextlib.suppress(OSError, ValueError, KeyError),
            artifacts.open(f"{folder}/{step}/state.json", "rb") as state,
        ):
            return int(json.loads(state.read())["step"])
    return 0


def full_data_report(run: TrainingRun) -> dict[str, Any]:
    """The run's data report with every id (`data_report.json`, written by the engine before training), or
    the stored one (the first ids of each reason) where that file is gone."""
    from training.data import DATA_REPORT

    with (
        contextlib.suppress(OSError, ValueError),
        storage.artifacts().open(f"{artifact_name(run)}/{DATA_REPORT}", "rb") as report,
    ):
        return json.loads(report.read())
    return run.data_report or {}


def _job_exists(job_id: str) -> bool | None:
    """Whether Redis still has the job; None when Redis does not answer (then nothing is decided)."""
    try:
        queue = django_rq.get_queue(settings.PREFSTUDIO_TRAINING_QUEUE)
        return Job.exists(job_id, connection=queue.connection)
    except redis.RedisError:
        return None


def run_fail(run_id: int, error: str, *, states: tuple[str, ...] = (TrainingRun.State.RUNNING,)) -> bool:
    """Mark the run failed with `error` if it is still in one of `states`; whether it was."""
    return job_rows.fail(TrainingRun, run_id, error, states=states)


def runs_reap(*, now: Any = None) -> int:
    """Bring runs whose worker or job is gone to an honest state; how many changed.

    - running, no heartbeat for TRAINING_LOST_SECONDS: failed, "worker lost" (a killed worker or host);
    - running, canceled more than FORCE_STOP_AFTER ago: the job is stopped (RQ's stop-job command) and
      the run canceled;
    - queued, and Redis no longer has its job (Redis restarted or flushed): enqueued again.
    Called by the training pages (each poll of a running run's page), by every worker every
    prefstudio.jobs.MAINTENANCE_SECONDS (its maintenance), and by `manage.py reap_runs`.
    """
    now = now or timezone.now()
    changed = 0
    changed += job_rows.reap_lost(TrainingRun, now=now, then="Resume continues from the last checkpoint.")
    stuck = TrainingRun.objects.filter(
        state=TrainingRun.State.RUNNING, cancel_requested_at__lt=now - FORCE_STOP_AFTER
    )
    for run in stuck:
        try:
            queue = django_rq.get_queue(settings.PREFSTUDIO_TRAINING_QUEUE)
            send_stop_job_command(queue.connection, run.job_id, serializer=queue.serializer)
        except (InvalidJobOperation, NoSuchJobError, redis.RedisError):
            pass
        changed += TrainingRun.objects.filter(pk=run.pk, state=TrainingRun.State.RUNNING).update(
            state=TrainingRun.State.CANCELED, finished_at=now, error="Stopped by force: a step took too long."
        )
    waiting = TrainingRun.objects.filter(state=TrainingRun.State.QUEUED, heartbeat_at__lt=now - REQUEUE_AFTER)
    for run in waiting:
        exists = _job_exists(run.job_id) if run.job_id else False
        if exists is False:
            logger.warning("run %s: job %s is gone from Redis; enqueuing it again", run.pk, run.job_id)
            run_enqueue(run)
            changed += 1
    return changed


def record_metric(run_id: int, kind: str, step: int, values: dict[str, float]) -> None:
    """Keep one step's (or one evaluation's) metrics; a repeated step (after a resume) replaces them."""
    RunMetric.objects.update_or_create(run_id=run_id, kind=kind, step=step, defaults={"values": values})
