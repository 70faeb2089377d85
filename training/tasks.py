"""RQ jobs of the training app. They take ids; the run's row holds everything else."""

from __future__ import annotations

from typing import Any

from rq import get_current_job

from prefstudio.jobs import WorkHorseKilled, drop_stale_connections, job
from training.models import TrainingRun
from training.runner import execute
from training.services import run_fail


@job
def train_run(run_id: int) -> str:
    """Train one run (training.runner.execute); how it ended. The machinery's retry after a lost database
    connection takes the run up again from its last checkpoint (execute knows its own job)."""
    current = get_current_job()
    if current is None:
        return execute(run_id)
    return execute(run_id, worker=current.worker_name or "", job_id=current.id)


def run_job_failed(job: Any, connection: Any, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    """RQ's failure callback: the job died without the run saying why (its work horse was killed, it
    timed out, or it was abandoned by a lost worker). A run the job already failed keeps its error."""
    (run_id,) = job.args
    drop_stale_connections()
    name = getattr(exc_type, "__name__", str(exc_type))
    active = (TrainingRun.State.RUNNING, TrainingRun.State.QUEUED)
    if isinstance(exc_value, WorkHorseKilled):
        run_fail(run_id, f"The training stopped: {exc_value}. Resume continues from the last checkpoint.",
                 states=active)  # fmt: skip
    elif "Abandoned" in name:
        run_fail(run_id, "Worker lost: its job was abandoned (the worker stopped mid-run).", states=active)
    else:
        run_fail(run_id, f"The training job ended: {name}: {exc_value}", states=active)
