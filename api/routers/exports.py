"""Exports: snapshots of a project's consistent pairs under consensus rules, and their files."""

from __future__ import annotations

from uuid import UUID

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from ninja import Router, Status
from ninja.pagination import paginate

from api.errors import responses
from api.routers import Pages, lead_project, require
from api.schemas import ExportIn, ExportOut
from labeling import export_views, snapshots
from labeling.consensus import parse_share
from labeling.models import ExportSnapshot
from prefstudio.roles import EXPORT

router = Router(tags=["exports"])
_BINARY = {"schema": {"type": "string", "format": "binary"}}
FILES = {"application/x-ndjson": _BINARY, "application/vnd.apache.parquet": _BINARY}


@router.post("/projects/{slug}/exports", response=responses({201: ExportOut, 202: ExportOut}, 403, 404, 503))
def export_create(request: HttpRequest, slug: str, payload: ExportIn):
    """Make a snapshot: 201 once built here (done, or failed with its message), 202 while a worker builds a
    large project's (follow it at its GET)."""
    require(request, EXPORT)
    project = lead_project(request, slug)
    try:
        min_share = parse_share(payload.min_share)
    except ValueError as exc:
        raise ValueError(f"min_share: {exc}") from None
    overrides = {} if payload.min_judgments is None else {"min_judgments": payload.min_judgments}
    rules = snapshots.rules_for(
        project, **overrides, min_share=min_share, method=payload.method, min_posterior=payload.min_posterior,
        drop_ties=payload.drop_ties, drop_both_bad=payload.drop_both_bad,
        adjudication_overrides=payload.adjudication_overrides, drop_gold=payload.drop_gold,
    )  # fmt: skip
    snapshot = snapshots.snapshot_start(
        project=project, user=request.user, rules=rules, shape=payload.shape, fmt=payload.format,
        eval_fraction=payload.eval_fraction, include_metadata=payload.include_metadata,
        min_share_text=payload.min_share,
    )  # fmt: skip
    return Status(202 if not snapshot.finished else 201, snapshot)


@router.get("/projects/{slug}/exports", response=responses({200: list[ExportOut]}, 403, 404))
@paginate(Pages)
def export_list(request: HttpRequest, slug: str):
    """The project's snapshots, newest first."""
    require(request, EXPORT)
    return lead_project(request, slug).exports.select_related("project").order_by("-created_at", "-pk")


@router.get("/projects/{slug}/exports/{uuid}", response=responses({200: ExportOut}, 403, 404))
def export_get(request: HttpRequest, slug: str, uuid: UUID):
    """A snapshot; one whose worker is gone is marked failed, as its page does."""
    require(request, EXPORT)
    snapshot = get_object_or_404(
        ExportSnapshot.objects.select_related("project"), project=lead_project(request, slug), uuid=uuid
    )
    snapshots.snapshot_check(snapshot)
    return snapshot


@router.get(
    "/projects/{slug}/exports/{uuid}/files/{name}",
    response=responses({200: None}, 403, 404),
    openapi_extra={"responses": {200: {"description": "The file, as an attachment.", "content": FILES}}},
)
def export_download(request: HttpRequest, slug: str, uuid: UUID, name: str) -> HttpResponse:
    """One of a done snapshot's files (`files[].name`), as the export page serves it."""
    require(request, EXPORT)
    return export_views.export_download(request, slug=slug, export=str(uuid), name=name)
