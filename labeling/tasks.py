"""RQ jobs of the labeling app. They take ids and call services; `prefstudio.jobs.job` gives each the
job machinery's connection hygiene and its one retry after a lost database connection."""

from __future__ import annotations

from typing import Any

from rq import get_current_job

from labeling.batches import ImportFailed, batch_fail, batch_run
from labeling.display import render_missing
from labeling.models import ExportSnapshot, ImportBatch, Pair
from labeling.snapshots import snapshot_build, snapshot_fail
from prefstudio.jobs import drop_stale_connections, job, job_failure_message


def _current_job_id() -> str:
    current = get_current_job()
    return current.id if current is not None else ""


@job
def import_batch(batch_id: int) -> dict:
    """Import an uploaded batch in a worker, reporting progress in the job's meta."""
    batch = ImportBatch.objects.select_related("project").get(pk=batch_id)
    current = get_current_job()

    def progress(done: int, total: int) -> None:
        if current is not None:
            current.meta["progress"] = [done, total]
            current.save_meta()

    # Running already under this very job: the first try lost its database connection (and with it the
    # import's transaction); this is the machinery's retry.
    rerun = (
        bool(batch.job_id) and batch.job_id == _current_job_id() and batch.state == ImportBatch.State.RUNNING
    )
    try:
        summary = batch_run(batch, progress=progress, rerun=rerun)
    except ImportFailed as exc:  # recorded on the batch, which is the truth about the import
        return {"failed": str(exc)}
    return {"imported": summary.imported, "duplicates": summary.duplicates, "rejected": summary.rejected}


@job
def render_batch(batch_id: int) -> int:
    """Render an imported batch's pairs to HTML ahead of the workbench; how many were rendered."""
    return render_missing(Pair.objects.filter(batch_id=batch_id))


@job
def export_snapshot(snapshot_id: int) -> dict:
    """Build an export snapshot in a worker; its row holds the progress and the outcome."""
    snapshot = ExportSnapshot.objects.select_related("project").get(pk=snapshot_id)
    rerun = (
        bool(snapshot.job_id)
        and snapshot.job_id == _current_job_id()
        and snapshot.state == ExportSnapshot.State.RUNNING
    )
    snapshot_build(snapshot, rerun=rerun)
    snapshot.refresh_from_db()
    return {"state": snapshot.state, "kept": snapshot.kept}


def import_job_failed(job: Any, connection: Any, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    """RQ's failure callback of an import job that died without recording why (its worker process was
    killed, or it timed out): the batch says so at once, in one line."""
    (batch_id,) = job.args
    drop_stale_connections()
    batch = ImportBatch.objects.filter(pk=batch_id).first()
    if batch is not None and not batch.finished:
        batch_fail(batch, job_failure_message(exc_value, what="The import") + " Import the file again.")


def export_job_failed(job: Any, connection: Any, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    """RQ's failure callback of an export job that died without recording why."""
    (snapshot_id,) = job.args
    drop_stale_connections()
    snapshot = ExportSnapshot.objects.filter(pk=snapshot_id).first()
    if snapshot is not None and not snapshot.finished:
        snapshot_fail(snapshot, job_failure_message(exc_value, what="The export"))
