"""RQ jobs of the generation app; the job machinery (prefstudio.jobs) wraps each."""

from __future__ import annotations

from typing import Any

from rq import get_current_job

from generation.models import GenerationJob
from generation.runner import execute
from prefstudio import job_rows
from prefstudio.jobs import drop_stale_connections, job, job_failure_message


@job
def generate(job_pk: int) -> str:
    """Answer one generation job's prompts (generation.runner.execute); how it ended."""
    current = get_current_job()
    if current is None:
        return execute(job_pk)
    return execute(job_pk, worker=current.worker_name or "", job_id=current.id)


def generation_job_failed(
    rq_job: Any, connection: Any, exc_type: type, exc_value: BaseException, tb: Any
) -> None:
    """RQ's failure callback: the job died without the row saying why (a killed work horse, a timeout)."""
    (job_pk,) = rq_job.args
    drop_stale_connections()
    message = job_failure_message(exc_value, what="The generation")
    job_rows.fail(GenerationJob, job_pk, message, states=job_rows.ACTIVE)
