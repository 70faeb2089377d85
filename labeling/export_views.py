"""Export pages for leads and admins: the rules with a live preview, snapshots, their files.

Every view checks the export permission, then that the user leads the project (404 otherwise).
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from labeling import snapshots
from labeling.access import project_for
from labeling.consensus import ConsensusRules
from labeling.forms import ExportForm
from labeling.models import ExportSnapshot, Membership, Project
from prefstudio import storage
from prefstudio.jobs import QueueUnavailable
from prefstudio.roles import EXPORT, requires

_LEADS = (Membership.Role.LEAD,)


def _project(request: HttpRequest, slug: str) -> Project:
    return project_for(request.user, slug, roles=_LEADS, include_archived=True)


def _snapshot(project: Project, export: str) -> ExportSnapshot:
    return get_object_or_404(ExportSnapshot, uuid=export, project=project)


def _preview(project: Project, form: ExportForm) -> snapshots.Preview | None:
    if not form.is_valid():
        return None
    data = form.cleaned_data
    return snapshots.export_preview(
        project,
        rules=ConsensusRules(**form.rules()),
        shape=data["shape"],
        fmt=data["format"],
        include_metadata=data["include_metadata"],
        fill=form.judge_fill,
    )


def _page(request: HttpRequest, project: Project, form: ExportForm, *, status: int = 200) -> HttpResponse:
    context = {"project": project, "form": form, "preview": _preview(project, form)}
    if request.htmx:  # the rules changed: only the preview
        return render(request, "labeling/export.html#export-preview", context)
    context["snapshots"] = project.exports.select_related("created_by")
    return render(request, "labeling/export.html", context, status=status)


@requires(EXPORT)
@require_GET
def export_page(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project(request, slug)
    return _page(request, project, ExportForm(ExportForm.initial_data(project), project=project))


@requires(EXPORT)
@require_POST
def export_create(request: HttpRequest, slug: str) -> HttpResponse:
    """Create a snapshot; with `action=preview` (the preview button, or htmx as the rules change) only
    show what the rules would keep."""
    project = _project(request, slug)
    form = ExportForm(request.POST, project=project)
    if request.htmx or request.POST.get("action") == "preview" or not form.is_valid():
        return _page(request, project, form, status=200 if form.is_valid() else 400)
    data = form.cleaned_data
    try:
        snapshot = snapshots.snapshot_start(
            project=project,
            user=request.user,
            rules=ConsensusRules(**form.rules()),
            shape=data["shape"],
            fmt=data["format"],
            eval_fraction=data["eval_fraction"],
            include_metadata=data["include_metadata"],
            min_share_text=data["min_share"],
            fill=form.judge_fill,
        )
    except QueueUnavailable as exc:  # a worker's export: nothing stored, the form stays as filled in
        form.add_error(None, str(exc))
        return _page(request, project, form, status=503)
    return redirect(snapshot)


@requires(EXPORT)
@require_GET
def export_detail(request: HttpRequest, slug: str, export: str) -> HttpResponse:
    project = _project(request, slug)
    snapshot = _snapshot(project, export)
    snapshots.snapshot_check(snapshot)
    context = {
        "project": project,
        "snapshot": snapshot,
        "runs": _runs(snapshot),
        "rules": snapshots.rules_in_words(snapshot),
        "dropped": snapshots.dropped_in_words(snapshot.dropped),
    }
    if request.htmx:
        response = render(request, "labeling/export_detail.html#export-status", context)
        if snapshot.finished:  # 286: htmx stops polling; the page reloads to show the files
            stop = HttpResponseStopPolling(response.content)
            stop["HX-Refresh"] = "true"
            return stop
        return response
    return render(request, "labeling/export_detail.html", context)


def _runs(snapshot: ExportSnapshot) -> list:
    return list(snapshot.runs.order_by("-created_at"))


@requires(EXPORT)
@require_GET
def export_download(request: HttpRequest, slug: str, export: str, name: str) -> HttpResponse:
    """The file streamed, or a redirect to a short-lived presigned URL (prefstudio.storage.serve)."""
    project = _project(request, slug)
    stored = snapshots.snapshot_file(_snapshot(project, export), name)
    if stored is None:
        raise Http404("No such file in this export.")
    filename = f"{project.slug}-{str(export)[:8]}-{name}"
    content_type = "application/x-ndjson" if name.endswith(".jsonl") else "application/vnd.apache.parquet"
    try:
        return storage.serve(storage.media(), stored, filename=filename, content_type=content_type)
    except FileNotFoundError:
        raise Http404("No such file in this export.") from None


@requires(EXPORT)
@require_POST
def export_delete(request: HttpRequest, slug: str, export: str) -> HttpResponse:
    project = _project(request, slug)
    snapshot = _snapshot(project, export)
    try:
        snapshots.snapshot_delete(snapshot)
    except snapshots.SnapshotInUse as exc:
        messages.error(request, str(exc))
        return redirect(snapshot)
    messages.success(request, "The export and its files are deleted.")
    return redirect("labeling:export", project.slug)
