"""RQ jobs of the training app. They take ids; the run's row holds everything else."""

from __future__ import annotations

from typing import Any

from rq import get_current_job

from training.models import TrainingRun
from training.runner import execute
from training.services import run_fail


def train_run(run_id: int) -> str:
    """Train one run (training.runner.execute); how it ended."""
    job = get_current_job()
    return execute(run_id, worker=(job.worker_name or "") if job is not None else "")


def run_job_failed(job: Any, connection: Any, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    """RQ's failure callback: the job died without the run saying why (its work horse was killed, it
    timed out, or it was abandoned by a lost worker). A run the job already failed keeps its error."""
    (run_id,) = job.args
    name = getattr(exc_type, "__name__", str(exc_type))
    active = (TrainingRun.State.RUNNING, TrainingRun.State.QUEUED)
    if "Abandoned" in name:
        run_fail(run_id, "Worker lost: its job was abandoned (the worker stopped mid-run).", states=active)
    else:
        run_fail(run_id, f"The training job ended: {name}: {exc_value}", states=active)
