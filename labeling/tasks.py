"""RQ jobs of the labeling app. They take ids and call services."""

from __future__ import annotations

from rq import get_current_job

from labeling.batches import ImportFailed, batch_run
from labeling.display import render_missing
from labeling.models import ExportSnapshot, ImportBatch, Pair
from labeling.snapshots import snapshot_build


def import_batch(batch_id: int) -> dict:
    """Import an uploaded batch in a worker, reporting progress in the job's meta."""
    batch = ImportBatch.objects.select_related("project").get(pk=batch_id)
    job = get_current_job()

    def progress(done: int, total: int) -> None:
        if job is not None:
            job.meta["progress"] = [done, total]
            job.save_meta()

    try:
        summary = batch_run(batch, progress=progress)
    except ImportFailed as exc:  # recorded on the batch, which is the truth about the import
        return {"failed": str(exc)}
    return {"imported": summary.imported, "duplicates": summary.duplicates, "rejected": summary.rejected}


def render_batch(batch_id: int) -> int:
    """Render an imported batch's pairs to HTML ahead of the workbench; how many were rendered."""
    return render_missing(Pair.objects.filter(batch_id=batch_id))


def export_snapshot(snapshot_id: int) -> dict:
    """Build an export snapshot in a worker; its row holds the progress and the outcome."""
    snapshot = ExportSnapshot.objects.select_related("project").get(pk=snapshot_id)
    snapshot_build(snapshot)
    snapshot.refresh_from_db()
    return {"state": snapshot.state, "kept": snapshot.kept}
