"""The row every long job keeps (training runs, generation jobs, and the judge runs to come), and what the
job machinery does with it, in one place.

The row is the truth about a job: RQ carries the job, but its registries expire, so state, heartbeat,
cancel flag, attempts, error and log tail are written here as the job goes. A job type is a model that
inherits `JobRow` (adding its own progress and results) and a runner that calls `claim`, runs a
`Heartbeat`, asks `cancel_requested` between units of work and ends with `finish` or `fail` (`run` does all
of it around a function that does the work: generation jobs and judges use it); `reap_lost`
fails the rows whose worker went silent (prefstudio.jobs runs it every MAINTENANCE_SECONDS on every
worker, and the pages run it as they poll).
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import DatabaseError, connection, models, transaction
from django.utils import timezone


class JobRow(models.Model):
    """State, worker, heartbeat and outcome of one long job (abstract)."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELED = "canceled", "Canceled"

    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    job_id = models.CharField(max_length=64, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="The RQ worker running it.")
    worker_host = models.CharField(max_length=200, blank=True)
    device = models.CharField(max_length=64, blank=True, help_text='e.g. "cuda:0" or "cpu".')
    eta_seconds = models.FloatField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="Why it failed, in words.")
    log_tail = models.TextField(blank=True, help_text="The last lines the engine logged.")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Times a worker started it.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Last sign of life from its worker.")

    class Meta:
        abstract = True

    @property
    def finished(self) -> bool:
        return self.state in (self.State.SUCCEEDED, self.State.FAILED, self.State.CANCELED)

    @property
    def resumable(self) -> bool:
        return self.state in (self.State.FAILED, self.State.CANCELED)


Row = TypeVar("Row", bound=JobRow)
ACTIVE = (JobRow.State.QUEUED, JobRow.State.RUNNING)


def claim(model: type[Row], pk: int, *, worker: str, job_id: str = "", device: str = "") -> Row | None:
    """Take the row for this worker: queued -> running, or running -> running when `job_id` is the row's
    own job taking it up again (prefstudio.jobs' retry after a lost database connection); attempts + 1.
    None when it is neither (canceled before a worker got to it, or taken by another)."""
    with transaction.atomic():
        row = model.objects.select_for_update().filter(pk=pk).first()
        if row is None:
            return None
        retry = bool(job_id) and row.job_id == job_id and row.state == JobRow.State.RUNNING
        if row.state != JobRow.State.QUEUED and not retry:
            return None
        now = timezone.now()
        row.state, row.started_at, row.heartbeat_at = JobRow.State.RUNNING, now, now
        row.worker, row.worker_host, row.device = worker, socket.gethostname(), device
        row.attempts += 1
        row.error = ""
        row.save()
    return row


class Heartbeat(threading.Thread):
    """Writes a row's heartbeat every TRAINING_HEARTBEAT_SECONDS from its own thread, also while a long
    step runs. Use as a context manager around the work."""

    def __init__(self, model: type[JobRow], pk: int) -> None:
        super().__init__(name=f"heartbeat-{model._meta.model_name}-{pk}", daemon=True)
        self.model, self.pk = model, pk
        self.done = threading.Event()

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join(timeout=5)

    def run(self) -> None:
        try:
            while not self.done.wait(settings.TRAINING_HEARTBEAT_SECONDS):
                self.beat()
        finally:
            connection.close()  # this thread's own connection

    def beat(self) -> None:
        """One heartbeat. A lost database connection costs this beat, not the thread: the next one
        connects afresh, so a blip does not make a healthy job look lost."""
        try:
            self.model.objects.filter(pk=self.pk).update(heartbeat_at=timezone.now())
        except DatabaseError:
            connection.close()


def cancel_requested(model: type[JobRow], pk: int) -> bool:
    """Whether someone asked the job to stop: one primary-key lookup, asked between units of work."""
    return model.objects.filter(pk=pk, cancel_requested_at__isnull=False).exists()


def fail(
    model: type[JobRow], pk: int, error: str, *, states: tuple[str, ...] = (JobRow.State.RUNNING,)
) -> bool:
    """Mark the row failed with `error` if it is still in one of `states`; whether it was."""
    return bool(
        model.objects.filter(pk=pk, state__in=states).update(
            state=JobRow.State.FAILED, error=error, finished_at=timezone.now()
        )
    )


def finish(model: type[JobRow], pk: int, *, state: str, **fields: Any) -> bool:
    """End a running row with `state` and `fields`; whether it was still running (a reaper may have
    failed it meanwhile, and then it stays failed)."""
    fields.setdefault("finished_at", timezone.now())
    return bool(model.objects.filter(pk=pk, state=JobRow.State.RUNNING).update(state=state, **fields))


def reap_lost(model: type[JobRow], *, now: Any = None, then: str = "") -> int:
    """Fail the running rows whose heartbeat is older than TRAINING_LOST_SECONDS (a killed worker or
    host); how many. `then`: what the error adds ("Resume continues from the last checkpoint.")."""
    now = now or timezone.now()
    changed = 0
    lost_before = now - timedelta(seconds=settings.TRAINING_LOST_SECONDS)
    for row in model.objects.filter(state=JobRow.State.RUNNING, heartbeat_at__lt=lost_before):
        seconds = int((now - row.heartbeat_at).total_seconds())
        changed += fail(
            model,
            row.pk,
            f"Worker lost: no heartbeat from {row.worker_host or 'its worker'} for {seconds} s "
            f"(the worker or its host stopped). {then}".strip(),
        )
    return changed


def request_cancel(model: type[Row], pk: int, *, queue: str = "") -> Row:
    """Ask a job to stop: a queued one is canceled at once (and its RQ job on `queue` with it), a running
    one stops at its next check of `cancel_requested`. The row as it is now."""
    now = timezone.now()
    with transaction.atomic():
        row = model.objects.select_for_update().get(pk=pk)
        if row.finished:
            return row
        row.cancel_requested_at = now
        fields = ["cancel_requested_at"]
        if row.state == JobRow.State.QUEUED:
            row.state, row.finished_at = JobRow.State.CANCELED, now
            fields += ["state", "finished_at"]
        row.save(update_fields=fields)
    if row.state == JobRow.State.CANCELED and row.job_id and queue:
        from prefstudio.jobs import cancel_rq_job

        cancel_rq_job(queue, row.job_id)
    return row


def requeue(model: type[Row], pk: int, *, enqueue: Callable[[Row], None], what: str = "jobs") -> Row:
    """Queue a failed or canceled job again (`enqueue` runs once the transaction commits). ValueError
    for a job in another state, naming it."""
    with transaction.atomic():
        row = model.objects.select_for_update().get(pk=pk)
        if not row.resumable:
            raise ValueError(f"Only failed or canceled {what} can be resumed; this one is {row.state}.")
        row.state = JobRow.State.QUEUED
        row.cancel_requested_at = row.finished_at = None
        row.error = ""
        row.save(update_fields=["state", "cancel_requested_at", "finished_at", "error"])
        transaction.on_commit(lambda: enqueue(row))
    return row


def device_name() -> str:
    """Where a worker's model runs: "cuda:0" when torch sees a GPU, else "cpu" (imports torch)."""
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


class LogTail:
    """The last `lines` lines a job logged, kept on its row (`log_tail`) as they come: call it with a line.
    Starts from what the row holds (a resumed job goes on from its earlier lines)."""

    def __init__(self, model: type[JobRow], row: JobRow, *, lines: int = 40) -> None:
        self.model, self.pk = model, row.pk
        self.lines: deque[str] = deque(row.log_tail.splitlines()[-lines:], maxlen=lines)

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        self.model.objects.filter(pk=self.pk).update(log_tail=self.text)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def run(
    model: type[Row],
    pk: int,
    *,
    work: Callable[[Row, LogTail], dict[str, Any]],
    what: str,
    stopped: tuple[type[BaseException], ...],
    kept: str,
    worker: str = "",
    job_id: str = "",
    lines: int = 40,
    counts: Callable[[Row], dict[str, Any]] | None = None,
) -> str:
    """Run the job of the row with this id on this worker to its end, around `work(row, log)`; a word on how
    it ended: "not queued", "canceled", "succeeded" (or "already ended" when a reaper ended it meanwhile).

    Claims the row (`claim`, with this host's device), logs the start, keeps a `Heartbeat` while `work` runs,
    and ends the row: succeeded with the fields `work` returns; canceled, saying that `kept` ("the answers so
    far are kept"), when `work` raises one of `stopped`; failed with `jobs.failure_reason(exc, what=what)`
    for any other exception, which is re-raised for RQ (its failure callback), unless the job machinery will
    retry it (a lost database connection), when it is re-raised with the row left running. `counts(row)`
    adds fields to the canceled and failed endings (what was done before the stop).
    """
    import logging

    from prefstudio import jobs

    row = claim(model, pk, worker=worker, job_id=job_id, device=device_name())
    if row is None:
        return "not queued"
    log = LogTail(model, row, lines=lines)
    log(f"{'Resuming' if row.attempts > 1 else 'Starting'} on {row.worker_host} ({row.device}), "
        f"attempt {row.attempts}.")  # fmt: skip
    so_far = counts or (lambda _row: {})
    try:
        with Heartbeat(model, row.pk):
            fields = work(row, log)
    except stopped:
        log(f"Canceled; {kept}.")
        finish(model, row.pk, state=JobRow.State.CANCELED, log_tail=log.text, **so_far(row))
        return "canceled"
    except Exception as exc:
        if jobs.will_retry(exc):
            raise
        logging.getLogger(model.__module__).exception("%s %s failed", model.__name__, row.pk)
        reason = jobs.failure_reason(exc, what=what)
        log(reason)
        finish(model, row.pk, state=JobRow.State.FAILED, error=reason, log_tail=log.text, **so_far(row))
        raise
    ended = finish(model, row.pk, state=JobRow.State.SUCCEEDED, log_tail=log.text, eta_seconds=0, **fields)
    return "succeeded" if ended else "already ended"


def enqueue(model: type[Row], row: Row, *, queue: str, func: str, on_failure: str) -> None:
    """Put the row's job (`func` with the row's id) on `queue`, with RQ's `on_failure` callback; a queue
    that fails now leaves the row queued with a note in `error` (the reapers enqueue it again)."""
    from rq.job import Callback

    from prefstudio import jobs

    try:
        rq_job = jobs.enqueue(
            queue, func, row.pk, job_timeout=settings.TRAINING_JOB_TIMEOUT, result_ttl=24 * 3600,
            failure_ttl=7 * 24 * 3600, on_failure=Callback(on_failure),
        )  # fmt: skip
    except jobs.QueueUnavailable as exc:
        model.objects.filter(pk=row.pk).update(error=f"{exc} ({exc.detail})")
        return
    model.objects.filter(pk=row.pk).update(job_id=rq_job.id, error="", heartbeat_at=timezone.now())
    row.job_id = rq_job.id
