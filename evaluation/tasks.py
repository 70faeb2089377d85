"""RQ jobs of the evaluation app; the job machinery (prefstudio.jobs) wraps each."""

from __future__ import annotations

from typing import Any

from rq import get_current_job

from evaluation.judge_jobs import execute
from evaluation.models import Judge
from prefstudio import job_rows
from prefstudio.jobs import drop_stale_connections, job, job_failure_message


@job
def judge_pairs(judge_pk: int) -> str:
    """Judge a project's pairs with one AI judge (evaluation.judge_jobs.execute); how it ended."""
    current = get_current_job()
    if current is None:
        return execute(judge_pk)
    return execute(judge_pk, worker=current.worker_name or "", job_id=current.id)


@job
def rank_queue(project_pk: int) -> int:
    """Rank a project's pairs for its queue order (evaluation.queue_order.rank_project); pairs ranked."""
    from evaluation.queue_order import rank_project
    from labeling.models import Project

    project = Project.objects.filter(pk=project_pk).first()
    return rank_project(project) if project is not None else 0


def judge_failed(rq_job: Any, connection: Any, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    """RQ's failure callback: the job died without the row saying why (a killed work horse, a timeout)."""
    (judge_pk,) = rq_job.args
    drop_stale_connections()
    job_rows.fail(Judge, judge_pk, job_failure_message(exc_value, what="The judge"), states=job_rows.ACTIVE)
