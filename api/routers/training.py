"""Training runs (admins, as the Training pages): create, list, read with metrics, cancel, resume, download.

Runs are those on snapshots of projects the user sees as a lead (admins: all); any other run is 404.
"""

from __future__ import annotations

from django.http import HttpRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from ninja import Router, Status
from ninja.pagination import paginate

from api.errors import responses
from api.routers import LEADS, Pages, require
from api.schemas import RunDetailOut, RunIn, RunOut
from labeling.access import projects_for
from labeling.models import ExportSnapshot
from prefstudio.roles import TRAIN
from training import services, views
from training.models import TrainingRun

router = Router(tags=["training"])
ZIP = {"application/zip": {"schema": {"type": "string", "format": "binary"}}}


def _runs(request: HttpRequest):
    projects = projects_for(request.user, roles=LEADS, include_archived=True)
    return TrainingRun.objects.filter(snapshot__project__in=projects).select_related("snapshot__project")


def _run(request: HttpRequest, run_id: int) -> TrainingRun:
    return get_object_or_404(_runs(request), pk=run_id)


@router.post("/training/runs", response=responses({201: RunOut}, 403, 404, 503))
def run_create(request: HttpRequest, payload: RunIn):
    """Queue a run on a snapshot: its data is checked first (as the New run page does), and a config the
    engine refuses, a base model off the allow-list or data with nothing to train on is a 400."""
    require(request, TRAIN)
    projects = projects_for(request.user, roles=LEADS, include_archived=True)
    snapshot = get_object_or_404(ExportSnapshot, project__in=projects, uuid=payload.snapshot)
    if not services.trainable_snapshots(projects).filter(pk=snapshot.pk).exists():
        raise ValueError(
            "snapshot: not trainable; a run needs a done export in the standard or conversational shape, "
            f"with an eval split and at least {services.MIN_TRAIN_PAIRS} training pairs"
        )
    run = services.run_create(
        snapshot=snapshot,
        user=request.user,
        base_model=payload.base_model,
        config=payload.config.model_dump(),
        processes=payload.processes,
    )
    return Status(201, run)


@router.get("/training/runs", response=responses({200: list[RunOut]}, 403))
@paginate(Pages)
def run_list(request: HttpRequest):
    """Runs, newest first; runs whose worker or job is gone are brought to an honest state first."""
    require(request, TRAIN)
    services.runs_reap()
    return _runs(request).order_by("-created_at", "-pk")


@router.get("/training/runs/{run_id}", response=responses({200: RunDetailOut}, 403, 404))
def run_get(request: HttpRequest, run_id: int):
    """A run with its metrics per step (kind "train") and per evaluation (kind "eval")."""
    require(request, TRAIN)
    services.runs_reap()
    return _run(request, run_id)


@router.post("/training/runs/{run_id}/cancel", response=responses({200: RunOut}, 403, 404))
def run_cancel(request: HttpRequest, run_id: int):
    """A queued run is canceled at once; a running one stops after its current step, with a checkpoint."""
    require(request, TRAIN)
    return services.run_cancel(_run(request, run_id))


@router.post("/training/runs/{run_id}/resume", response=responses({200: RunOut}, 403, 404, 503))
def run_resume(request: HttpRequest, run_id: int):
    """Queue a failed or canceled run again, from its last checkpoint (400 for a run in another state)."""
    require(request, TRAIN)
    return services.run_resume(_run(request, run_id))


@router.get(
    "/training/runs/{run_id}/download",
    response=responses({200: None}, 403, 404),
    openapi_extra={
        "responses": {200: {"description": "A zip of the adapter, tokenizer and run card.", "content": ZIP}}
    },
)
def run_download(request: HttpRequest, run_id: int) -> StreamingHttpResponse:
    """A succeeded run's artifact, the zip its page offers."""
    require(request, TRAIN)
    return views.run_download(request, run_id=run_id)
