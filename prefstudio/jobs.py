"""The one job machinery every long job of prefstudio runs through (imports, exports, rendering,
training runs, and the jobs to come): the worker class, the connection hygiene around each job, the retry
of a job that lost its database connection, what a user is told when a job fails, and the periodic
reaping of jobs whose worker died.

- `job` wraps each RQ job function: before and after it, database connections that were terminated
  (a restarted PostgreSQL, `pg_terminate_backend`, a network blip) or outlived CONN_MAX_AGE are dropped,
  so a worker never serves a later job from a dead connection; a job that fails because its connection was
  lost runs once more on a fresh one. A job function must therefore be safe to run again after a lost
  connection (every one of ours starts from its row's state, which the lost transaction did not change).
- `Worker` is RQ's forking worker that closes the parent's connections before each fork (a horse never
  shares a socket with its parent), tells a job's failure callback when its work horse was killed (RQ
  itself only does that for exceptions), and runs the REAPERS every MAINTENANCE_SECONDS, so a run whose
  horse died is marked failed within a minute without anyone opening a page.
- `failure_reason` turns an exception into the one line users see; tracebacks go to the log (and to
  admins, through RQ's own pages), never to a page.
"""

from __future__ import annotations

import errno
import functools
import logging
import signal
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import redis
from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.utils.module_loading import import_string
from rq import Worker as RQWorker

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# Called (no arguments) by every worker every MAINTENANCE_SECONDS; each settles what a dead worker or
# request left behind (runs of a killed work horse or a lost host, files of a failed upload) and must be
# cheap when there is nothing to do.
REAPERS = (
    "training.services.runs_reap",
    "generation.services.jobs_reap",
    "evaluation.judge_jobs.judges_reap",
    "labeling.batches.uploads_sweep_now_and_then",
)
MAINTENANCE_SECONDS = 30

QUEUE_UNAVAILABLE = (
    "The job queue is unavailable (Redis does not answer); nothing was started. Try again shortly."
)


class QueueUnavailable(Exception):
    """The job queue (Redis) does not answer, so a job could not be enqueued. str() is the user's message."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(QUEUE_UNAVAILABLE)
        self.detail = detail


def enqueue(queue_name: str, func: str, *args: Any, **kwargs: Any) -> Any:
    """`django_rq.get_queue(queue_name).enqueue(func, *args, **kwargs)`, raising QueueUnavailable instead
    of a Redis error. Inside a transaction django-rq enqueues on commit (RQ's COMMIT_MODE), so callers that
    must know at once check `queue_available()` first."""
    import django_rq

    try:
        return django_rq.get_queue(queue_name).enqueue(func, *args, **kwargs)
    except redis.RedisError as exc:
        raise QueueUnavailable(str(exc)) from exc


def cancel_rq_job(queue_name: str, job_id: str) -> None:
    """Take a job off its queue (RQ's cancel); one already gone, or a Redis that does not answer, is
    left as it is: the worker that picks it up finds its row canceled and does nothing."""
    import django_rq
    from rq.exceptions import InvalidJobOperation, NoSuchJobError
    from rq.job import Job

    try:
        queue = django_rq.get_queue(queue_name)
        Job.fetch(job_id, connection=queue.connection, serializer=queue.serializer).cancel()
    except (NoSuchJobError, InvalidJobOperation, redis.RedisError):
        pass


def queue_available(queue_name: str = "default") -> bool:
    """Whether the job queue answers a PING now (one round trip)."""
    import django_rq

    try:
        return bool(django_rq.get_connection(queue_name).ping())
    except redis.RedisError:
        return False


def connection_lost(exc: BaseException) -> bool:
    """Whether `exc` is a database error of a connection that no longer works (terminated by the server,
    the network, a restart), as opposed to an error in the query itself."""
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return False
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and not conn.is_usable():
            return True
    message = str(exc).lower()
    return any(
        words in message
        for words in ("terminating connection", "server closed the connection", "connection already closed",
                      "the connection is closed", "consuming input failed", "connection is lost")
    )  # fmt: skip


def drop_stale_connections() -> None:
    """Django's `close_old_connections`, for connections outside a transaction: one that is unusable or
    older than CONN_MAX_AGE is closed, and the next query health-checks the rest (CONN_HEALTH_CHECKS).
    A connection inside a transaction belongs to a caller that runs the job in-process (a request, a
    test): it is left alone."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is None or conn.in_atomic_block:
            continue
        if not conn.get_autocommit():
            continue
        conn.close_if_unusable_or_obsolete()


def _close_lost() -> None:
    """Close every connection a retry must not reuse: the unusable ones, and any outside a transaction."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and (not conn.in_atomic_block or not conn.is_usable()):
            conn.close()


# Which try of a `job`-wrapped call is running: 0 outside one, 1 the first, 2 the retry.
_attempt: ContextVar[int] = ContextVar("prefstudio_job_attempt", default=0)


def will_retry(exc: BaseException) -> bool:
    """Whether the job machinery will run the current job again after `exc`: the first try of a job lost
    its database connection. A job's own error handling then leaves its row as it is (running) and
    re-raises, instead of recording a failure that the retry would find."""
    return _attempt.get() == 1 and connection_lost(exc)


def job(func: F) -> F:
    """Wrap an RQ job function in the machinery: connection hygiene before and after, and one retry on a
    fresh connection when the first try failed because its database connection was lost."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        drop_stale_connections()
        token = _attempt.set(1)
        try:
            try:
                return func(*args, **kwargs)
            except DatabaseError as exc:
                if not connection_lost(exc) or any(
                    c.in_atomic_block for c in connections.all(initialized_only=True)
                ):
                    raise
                log.warning(
                    "%s%r lost its database connection (%s); running it once more", func.__name__, args, exc
                )
                _close_lost()
                _attempt.set(2)
                return func(*args, **kwargs)
        finally:
            _attempt.reset(token)
            drop_stale_connections()

    return wrapper  # type: ignore[return-value]


def failure_reason(exc: BaseException, *, what: str = "The job") -> str:
    """One line for users on why a job failed: no traceback, no server paths beyond what the message of
    a known cause needs."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return f"{what} failed: the server is out of disk space{where}. Free some space and try again."
    if connection_lost(exc):
        return f"{what} failed: the database connection was lost twice. Try again."
    first = next(iter(str(exc).strip().splitlines()), "")
    return f"{what} failed: {type(exc).__name__}: {first[:300]}"


def job_failure_message(exc: BaseException, *, what: str = "The job") -> str:
    """The one line a failure callback records: a killed work horse in its own words, else
    `failure_reason`."""
    if isinstance(exc, WorkHorseKilled):
        return f"{what} stopped: {exc}."
    return failure_reason(exc, what=what)


def reason_from_exc_info(exc_info: str, *, what: str = "The job") -> str:
    """The one-line reason in an RQ job's stored traceback (`job.exc_info`): its last line, which names the
    exception and its message; the traceback above it stays in RQ's record for admins."""
    lines = [line for line in (exc_info or "").strip().splitlines() if line.strip()]
    if not lines:
        return f"{what} failed without a reason (see the worker's log)."
    last = lines[-1].strip()
    if last.startswith("Work-horse terminated unexpectedly"):
        return f"{what} stopped: its worker process was killed ({last.split(';')[1].strip()})."
    return f"{what} failed: {last[:300]}"


class WorkHorseKilled(Exception):
    """A job's work horse died without raising (SIGKILL from the out-of-memory killer or an operator)."""


class Worker(RQWorker):
    """RQ's forking worker with prefstudio's job hygiene (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("maintenance_interval", MAINTENANCE_SECONDS)
        super().__init__(*args, **kwargs)

    def execute_job(self, job: Any, queue: Any) -> None:
        # The parent's own connections (opened by maintenance) are closed before the fork, so the horse
        # opens its own and never writes on a socket its parent holds.
        connections.close_all()
        super().execute_job(job, queue)

    def handle_work_horse_killed(self, job: Any, retpid: int, ret_val: int, rusage: Any) -> None:
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        sig = ""
        if ret_val and ret_val & 0x7F:
            number = ret_val & 0x7F
            try:
                sig = f" by {signal.Signals(number).name}"
            except ValueError:
                sig = f" by signal {number}"
        exc = WorkHorseKilled(
            f"its worker process was killed{sig} (out of memory, or stopped by an operator)"
        )
        try:
            job.execute_failure_callback(self.death_penalty_class, WorkHorseKilled, exc, None)
        except Exception:  # noqa: BLE001 - logged by RQ; the periodic reaper settles the row anyway
            pass
        finally:
            connections.close_all()

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        reap()


def reap() -> None:
    """Run every REAPER once; one that fails is logged and the others still run."""
    try:
        for path in REAPERS:
            try:
                import_string(path)()
            except Exception:  # noqa: BLE001 - a reaper must never stop a worker
                log.exception("job reaper %s failed", path)
    finally:
        connections.close_all()
