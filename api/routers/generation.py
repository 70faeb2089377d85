"""Generation jobs (leads and admins, as the Generation pages): prompts answered by models into a project's
new batch. Jobs are those of projects the user leads (admins: all); any other job is 404."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Router, Status
from ninja.pagination import paginate

from api.errors import responses
from api.routers import LEADS, Pages, require
from api.schemas import JobIn, JobOut
from generation import registry, services
from generation.models import GenerationJob
from labeling.access import projects_for
from labeling.models import ExportSnapshot, Project
from prefstudio.roles import EXPORT

router = Router(tags=["generation"])


def _jobs(request: HttpRequest):
    projects = projects_for(request.user, roles=LEADS)
    return GenerationJob.objects.filter(project__in=projects).select_related("project", "batch")


@router.post("/generation/jobs", response=responses({201: JobOut}, 403, 404, 503))
def job_create(request: HttpRequest, payload: JobIn):
    """Queue a job: N samples from one model, or one answer each from two or more, on the project's own
    prompts, the eval prompts of one of its snapshots, or the prompts given."""
    require(request, EXPORT)
    project = get_object_or_404(projects_for(request.user, roles=LEADS), slug=payload.project)
    allowed = {ref for ref, _ in registry.choices_for(request.user)}
    if refused := [ref for ref in payload.models if ref not in allowed]:
        raise ValueError(f"models: not a model you may call: {', '.join(refused)}")
    prompts, source = _prompts(project, payload)
    kind = payload.kind
    job = services.job_create(
        kind=kind, user=request.user, model_refs=payload.models, prompts=prompts[: payload.limit],
        source=source, samples=payload.samples if kind == GenerationJob.Kind.SAMPLES else 1, project=project,
        params={"max_new_tokens": payload.max_new_tokens, "temperature": payload.temperature,
                "top_p": payload.top_p, "seed": payload.seed},
    )  # fmt: skip
    return Status(201, job)


def _prompts(project: Project, payload: JobIn) -> tuple[list[Any], str]:
    """The job's prompts and where they came from, in words (as the New job page words it)."""
    if payload.source == "prompts":
        if not payload.prompts:
            raise ValueError("prompts: give the prompts, or choose another source")
        prompts = [p if isinstance(p, str) else [m.model_dump() for m in p] for p in payload.prompts]
        return prompts, f"{len(prompts)} prompts sent through the API"
    if payload.source == "snapshot":
        if payload.snapshot is None:
            raise ValueError("snapshot: choose the snapshot whose eval prompts to use")
        done = ExportSnapshot.objects.filter(state=ExportSnapshot.State.DONE)
        snapshot = get_object_or_404(done, project=project, uuid=payload.snapshot)
        words = f"{project.name}: eval prompts of the snapshot of {snapshot.created_at:%Y-%m-%d %H:%M}"
        return services.prompts_from_snapshot(snapshot), words
    return services.prompts_from_project(project), f"{project.name}: its prompts"


@router.get("/generation/jobs", response=responses({200: list[JobOut]}, 403))
@paginate(Pages)
def job_list(request: HttpRequest):
    """Jobs, newest first (playground requests are not listed)."""
    require(request, EXPORT)
    services.jobs_reap()
    return _jobs(request).exclude(kind=GenerationJob.Kind.PLAYGROUND).order_by("-created_at", "-pk")


@router.get("/generation/jobs/{job_id}", response=responses({200: JobOut}, 403, 404))
def job_get(request: HttpRequest, job_id: int):
    require(request, EXPORT)
    job = get_object_or_404(_jobs(request), pk=job_id)
    if not job.finished:
        services.jobs_reap()
        job.refresh_from_db()
    return job


@router.post("/generation/jobs/{job_id}/cancel", response=responses({200: JobOut}, 403, 404))
def job_cancel(request: HttpRequest, job_id: int):
    """A queued job is canceled at once; a running one stops after its current prompts."""
    require(request, EXPORT)
    return services.job_cancel(get_object_or_404(_jobs(request), pk=job_id))


@router.post("/generation/jobs/{job_id}/resume", response=responses({200: JobOut}, 403, 404, 503))
def job_resume(request: HttpRequest, job_id: int):
    """Queue a failed or canceled job again: it answers only the prompts not answered yet."""
    require(request, EXPORT)
    return services.job_resume(get_object_or_404(_jobs(request), pk=job_id))
