"""Imports: a dataset file into a project, and how its import went.

The import page's steps in one call: the file is stored (`batch_create`), claimed and imported in this
request, or handed to a worker when it is large (`batch_in_background`), all or nothing unless
`skip_invalid`. An import that fails on invalid records answers 422 with each problem's line and field,
and leaves nothing behind.
"""

from __future__ import annotations

from itertools import islice
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import filesizeformat
from ninja import File, Router, Status, UploadedFile
from ninja.pagination import paginate

from api.errors import ApiError, responses
from api.routers import Pages, lead_project, require
from api.schemas import ImportOut, ImportStatusOut
from labeling.batches import (
    ERRORS_SHOWN,
    ImportFailed,
    batch_claim,
    batch_create,
    batch_delete,
    batch_enqueue,
    batch_in_background,
    batch_run,
    batch_unclaim,
    import_options,
)
from labeling.forms import UploadForm
from labeling.importing import ImportFormatError, RecordError, iter_records
from labeling.models import ImportBatch
from labeling.views import IMPORT
from prefstudio.jobs import QueueUnavailable
from prefstudio.roles import REVIEW
from prefstudio.uploads import short_name

router = Router(tags=["imports"])

CHUNK = 1 << 20
_FILE = {"type": "string", "format": "binary"}
# The body is the file itself (any content type but multipart), or a multipart form with a `file`.
UPLOAD_BODY = {
    "requestBody": {
        "content": {
            "application/x-ndjson": {"schema": _FILE},
            "application/octet-stream": {"schema": _FILE},
        },
        "description": "The dataset (JSONL, .jsonl.gz, a JSON array, CSV or Parquet; read from its "
        "content), as the body or as the multipart field `file`.",
    }
}


@router.post(
    "/projects/{slug}/imports",
    response=responses({201: ImportOut, 202: ImportOut}, 403, 404, 413, 503, 507),
    openapi_extra=UPLOAD_BODY,
)
def import_create(
    request: HttpRequest,
    slug: str,
    skip_invalid: bool = False,
    name: str = "request body",
    file: File[UploadedFile | None] = None,
):
    """Import a file into the project: 201 with the outcome, or 202 while a worker imports a large file
    (follow it at its GET). `skip_invalid`: import the valid records and count the others, instead of
    importing nothing when one is invalid. `name`: the file's name for people (a body has none)."""
    require(request, IMPORT)
    project = lead_project(request, slug)
    upload = file or _body_file(request, name)
    try:
        form = UploadForm(data={}, files={"file": upload})
        if not form.is_valid():
            problems = [{"loc": ["body", "file"], "msg": m} for m in form.errors.get("file", [])]
            raise ApiError(422, " ".join(p["msg"] for p in problems), problems)
        try:
            batch = batch_create(
                project=project, user=request.user, upload=upload, source_name=upload.name,
                size=upload.size, skip_invalid=skip_invalid,
            )  # fmt: skip
        except ImportFormatError as exc:
            raise ApiError(422, str(exc), [{"loc": ["body"], "msg": str(exc)}]) from None
    finally:
        upload.close()
    return _start(batch)


def _body_file(request: HttpRequest, name: str) -> UploadedFile:
    """The request body as an uploaded file, read in chunks up to the upload limit (413 past it)."""
    limit = settings.PREFSTUDIO_MAX_UPLOAD_BYTES
    upload = TemporaryUploadedFile(short_name(name), request.content_type or "", 0, None)
    while chunk := request.read(CHUNK):
        upload.size += len(chunk)
        if upload.size > limit:
            upload.close()
            raise ApiError(413, f"The body is larger than the upload limit of {filesizeformat(limit)}.")
        upload.write(chunk)
    upload.seek(0)
    return upload


def _start(batch: ImportBatch) -> Status:
    background = batch_in_background(batch)
    batch_claim(batch, background=background)  # a batch made by this request: always claimed
    if background:
        try:
            batch_enqueue(batch)
        except QueueUnavailable:
            batch_unclaim(batch)
            batch_delete(batch)  # nothing started: the same call works later
            raise
        return Status(202, batch)
    try:
        batch_run(batch)
    except ImportFailed as exc:  # recorded on the batch
        if not isinstance(exc.__cause__, ImportFormatError):
            raise  # not the file's fault: a 500, the batch failed as its page shows
    if batch.state == ImportBatch.State.FAILED:
        problems = _record_errors(batch) if batch.error_count else []
        batch_delete(batch)
        raise ApiError(422, batch.message, problems or [{"loc": ["body"], "msg": batch.message}])
    return Status(201, batch)


def _record_errors(batch: ImportBatch) -> list[dict[str, Any]]:
    """The first ERRORS_SHOWN problems of a batch's file, each at ["body", "line", N, field]: its file read
    again as the import read it (labeling.importing), for what the batch keeps only as text."""
    with batch.file.open("rb") as stream:
        items = iter_records(
            stream,
            filename=batch.source_name,
            fmt=batch.format,
            options=import_options(),
            mapping=batch.mapping,
        )
        problems = islice((i for i in items if isinstance(i, RecordError)), ERRORS_SHOWN)
        return [
            {"loc": ["body", p.unit, p.line, *([p.field] if p.field else [])], "msg": p.reason}
            for p in problems
        ]


@router.get("/projects/{slug}/imports", response=responses({200: list[ImportOut]}, 403, 404))
@paginate(Pages)
def import_list(request: HttpRequest, slug: str):
    """The project's imports, newest first."""
    require(request, REVIEW)
    return lead_project(request, slug).batches.select_related("project").order_by("-created_at", "-pk")


@router.get("/projects/{slug}/imports/{uuid}", response=responses({200: ImportStatusOut}, 403, 404))
def import_get(request: HttpRequest, slug: str, uuid: UUID):
    """An import's state, counts, message and (while a worker imports it) percent done. A queued or
    running import whose worker is gone is marked failed, as its page does."""
    require(request, REVIEW)
    batches = ImportBatch.objects.select_related("project")
    return get_object_or_404(batches, project=lead_project(request, slug), uuid=uuid)
