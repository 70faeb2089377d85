"""Labeling pages. Every view checks the role globally, then project membership (404 for others)."""

from __future__ import annotations

import contextlib

from django.contrib import messages
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from labeling.access import project_for, projects_for
from labeling.batches import (
    BatchInUse,
    ImportFailed,
    OutOfSpace,
    batch_check_lost,
    batch_claim,
    batch_create,
    batch_delete,
    batch_enqueue,
    batch_fields,
    batch_in_background,
    batch_preview,
    batch_progress,
    batch_run,
    batch_unclaim,
    preview_shown,
)
from labeling.forms import MappingForm, MemberAddForm, MemberChangeForm, ProjectForm, UploadForm
from labeling.importing import ImportFormatError, PairRecord
from labeling.invitation_views import invitations_context
from labeling.layouts import LAYOUTS, describe_mapping
from labeling.models import ImportBatch, Membership, Pair, Project
from labeling.progress import own_progress
from labeling.signals import queue_order_changed
from prefstudio.jobs import QueueUnavailable
from prefstudio.roles import EXPORT, LABEL, REVIEW, requires

_LEADS = (Membership.Role.LEAD,)
ADD_PROJECT = "labeling.add_project"
CHANGE_PROJECT = "labeling.change_project"
CHANGE_MEMBERS = "labeling.change_membership"
IMPORT = "labeling.add_importbatch"
DELETE_BATCH = "labeling.delete_importbatch"


def _count(queryset: QuerySet) -> Coalesce:
    """A per-project count as a subquery (two joined counts would multiply pairs by members)."""
    counted = queryset.filter(project=OuterRef("pk")).order_by().values("project").annotate(n=Count("id"))
    return Coalesce(Subquery(counted.values("n")), 0)


def _with_counts(projects: QuerySet[Project]) -> QuerySet[Project]:
    annotators = Membership.objects.filter(role=Membership.Role.ANNOTATOR, active=True)
    return projects.annotate(annotator_count=_count(annotators), pair_count=_count(Pair.objects)).order_by(
        "name"
    )


def _project_list(request: HttpRequest, section: str, **kwargs: object) -> HttpResponse:
    projects = _with_counts(projects_for(request.user, **kwargs))
    return render(request, "labeling/project_list.html", {"projects": projects, "section": section})


@require_GET
@requires(LABEL)
def label_index(request: HttpRequest) -> HttpResponse:
    return _project_list(request, "label")


@require_GET
@requires(REVIEW)
def review_index(request: HttpRequest) -> HttpResponse:
    return _project_list(request, "review", roles=_LEADS)


@require_GET
@requires(EXPORT)
def export_index(request: HttpRequest) -> HttpResponse:
    return _project_list(request, "export", roles=_LEADS)


@require_GET
@requires(LABEL)
def project_detail(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for(request.user, slug, include_archived=True)
    membership = Membership.objects.filter(project=project, user=request.user).first()
    is_lead_or_admin = membership is None or membership.role == Membership.Role.LEAD
    context = {"project": project, "membership": membership, "pair_count": project.pairs.count()}
    if membership is not None and membership.role == Membership.Role.ANNOTATOR:
        context["progress"] = own_progress(project=project, user=request.user)
    if is_lead_or_admin:
        context.update(_members_context(request, project), **invitations_context(request, project))
        context["batches"] = project.batches.all()
    return render(request, "labeling/project_detail.html", context)


def _members_context(request: HttpRequest, project: Project, add_form: MemberAddForm | None = None) -> dict:
    members = project.memberships.select_related("user").order_by("role", "user__username")
    editable = request.user.has_perm(CHANGE_MEMBERS)
    return {
        "project": project,
        "members": [
            (m, MemberChangeForm(instance=m, prefix=f"m{m.pk}") if editable else None) for m in members
        ],
        "add_form": (add_form or MemberAddForm(project=project)) if editable else None,
    }


def _members_response(
    request: HttpRequest, project: Project, add_form: MemberAddForm | None = None
) -> HttpResponse:
    if request.htmx:
        context = _members_context(request, project, add_form)
        return render(request, "labeling/project_detail.html#members", context)
    return redirect(project)


@requires(CHANGE_MEMBERS)
@require_POST
def member_add(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for(request.user, slug, include_archived=True)
    form = MemberAddForm(request.POST, project=project)
    if form.is_valid():
        Membership.objects.create(
            project=project, user=form.cleaned_data["username"], role=form.cleaned_data["role"]
        )
        return _members_response(request, project)
    if not request.htmx:
        messages.error(request, " ".join(e for errors in form.errors.values() for e in errors))
    return _members_response(request, project, form)


@requires(CHANGE_MEMBERS)
@require_POST
def member_change(request: HttpRequest, slug: str, member_id: int) -> HttpResponse:
    project = project_for(request.user, slug, include_archived=True)
    membership = get_object_or_404(Membership, pk=member_id, project=project)
    form = MemberChangeForm(request.POST, instance=membership, prefix=f"m{membership.pk}")
    if form.is_valid():
        form.save()
    return _members_response(request, project)


@requires(ADD_PROJECT)
@require_http_methods(["GET", "POST"])
def project_create(request: HttpRequest) -> HttpResponse:
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        project = form.save()
        messages.success(request, f"Project “{project.name}” created. Add members, then import pairs.")
        return redirect(project)
    return render(request, "labeling/project_form.html", {"form": form, "rubric": form["rubric"].value()})


@requires(CHANGE_PROJECT)
@require_http_methods(["GET", "POST"])
def project_edit(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for(request.user, slug, include_archived=True)
    order_before = project.queue_order
    form = ProjectForm(request.POST or None, instance=project)
    if request.method == "POST" and form.is_valid():
        form.save()
        if project.queue_order != order_before:  # the evaluation app ranks the pairs for the new order
            queue_order_changed.send(sender=Project, project=project)
        messages.success(request, "Project saved.")
        return redirect(project)
    context = {"form": form, "project": project, "rubric": form["rubric"].value()}
    return render(request, "labeling/project_form.html", context)


@requires(CHANGE_PROJECT)
@require_POST
def project_archive(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for(request.user, slug, include_archived=True)
    project.archived = request.POST.get("archived") == "1"
    project.save(update_fields=["archived", "updated_at"])
    messages.success(request, "Project archived: it no longer hands out work." if project.archived else
                     "Project restored.")  # fmt: skip
    return redirect(project)


@requires(CHANGE_PROJECT)
@require_POST
def rubric_preview(request: HttpRequest) -> HttpResponse:
    # Cleaned as saving the form cleans it (surrounding whitespace stripped: leading spaces would make
    # a code block here that the workbench never shows), so the preview renders what annotators see.
    rubric = ProjectForm.base_fields["rubric"].to_python(request.POST.get("rubric", ""))
    return render(request, "labeling/project_form.html#rubric-preview", {"rubric": rubric})


def _batch(request: HttpRequest, slug: str, batch: str) -> tuple[Project, ImportBatch]:
    project = project_for(request.user, slug, roles=_LEADS, include_archived=True)
    return project, get_object_or_404(ImportBatch, project=project, uuid=batch)


@requires(IMPORT)
@require_http_methods(["GET", "POST"])
def batch_upload(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for(request.user, slug, include_archived=True)
    form = UploadForm(request.POST or None, request.FILES or None)
    if stopped := getattr(request, "upload_stopped", ""):  # prefstudio.uploads: the upload could not be kept
        form.add_error("file", stopped)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            batch = batch_create(
                project=project,
                user=request.user,
                upload=upload,
                source_name=upload.name,
                size=upload.size,
                skip_invalid=form.cleaned_data["skip_invalid"],
            )
        except (ImportFormatError, OutOfSpace) as exc:
            form.add_error("file", str(exc))
        else:
            if shortened := getattr(upload, "shortened_from", ""):
                kept = f"it is kept as “{upload.name}”"
                messages.info(request, f"The file name was {len(shortened)} characters long; {kept}.")
            return redirect(batch)
    context = {"project": project, "form": form, "layouts": LAYOUTS}
    return render(request, "labeling/batch_upload.html", context)


@requires(REVIEW)
@require_GET
def batch_detail(request: HttpRequest, slug: str, batch: str) -> HttpResponse:
    project, batch = _batch(request, slug, batch)
    context = {"project": project, "batch": batch, "progress": batch_progress(batch)}
    if request.htmx:
        response = render(request, "labeling/batch_detail.html#batch-status", context)
        return HttpResponseStopPolling(response.content) if batch.finished else response
    if batch.state == ImportBatch.State.UPLOADED:
        context.update(_preview_context(batch))
    return render(request, "labeling/batch_detail.html", context)


def _preview_context(batch: ImportBatch, form: MappingForm | None = None) -> dict:
    """The preview of an upload, and the field mapping form (bound when it was just posted)."""
    background = batch_in_background(batch)
    try:  # every record of a file this request would import; the first ones of a larger file
        preview, error = batch_preview(batch, scan=500 if background else None), ""
    except ImportFormatError as exc:
        preview, error = None, str(exc)
    values = batch_fields(batch)
    if form is None:
        guess = bool(error or preview.unmatched)
        initial = MappingForm.initial_for(list(values), batch.mapping, guess=guess, values=values)
        form = MappingForm(initial=initial, keys=list(values), values=values, mapping=batch.mapping)
    return {
        "preview": preview,
        "preview_error": error,
        "shown_items": [(i, preview_shown(i) if isinstance(i, PairRecord) else None) for i in preview.items]
        if preview
        else [],
        "mapping_form": form,
        "mapping_text": describe_mapping(batch.mapping),
        "mapping_open": bool(
            error or batch.mapping or form.errors or (preview and (preview.unmatched or preview.unaudited))
        ),
        "runs_in_background": background,
    }


@requires(IMPORT)
@require_POST
def batch_map(request: HttpRequest, slug: str, batch: str) -> HttpResponse:
    project, batch = _batch(request, slug, batch)
    if batch.state != ImportBatch.State.UPLOADED:
        messages.info(request, "This file was already imported.")
        return redirect(batch)
    values = batch_fields(batch)
    form = MappingForm(request.POST, keys=list(values), values=values, mapping=batch.mapping)
    if not form.is_valid():
        context = {"project": project, "batch": batch, **_preview_context(batch, form)}
        return render(request, "labeling/batch_detail.html", context, status=400)
    batch.mapping = form.mapping()
    batch.save(update_fields=["mapping"])
    return redirect(batch)


@requires(IMPORT)
@require_POST
def batch_commit(request: HttpRequest, slug: str, batch: str) -> HttpResponse:
    project, batch = _batch(request, slug, batch)
    if request.POST.get("skip_invalid") == "1":  # "Import the valid records"
        ImportBatch.objects.filter(pk=batch.pk, state=ImportBatch.State.UPLOADED).update(skip_invalid=True)
        batch.skip_invalid = True
    background = batch.state == ImportBatch.State.UPLOADED and batch_in_background(batch)
    if not batch_claim(batch, background=background):  # another click, or an earlier import, has it
        messages.info(request, "This file is already being imported, or was imported.")
        return redirect(batch)
    if background:
        try:
            batch_enqueue(batch)
        except QueueUnavailable as exc:
            batch_unclaim(batch)  # back to "uploaded": nothing started, the same click works later
            messages.error(request, str(exc))
        return redirect(batch)
    with contextlib.suppress(ImportFailed):  # recorded on the batch, which the page shows
        batch_run(batch)
    return redirect(batch)


@requires(DELETE_BATCH)
@require_http_methods(["GET", "POST"])
def batch_remove(request: HttpRequest, slug: str, batch: str) -> HttpResponse:
    project, batch = _batch(request, slug, batch)
    if not batch_check_lost(batch) and batch.state in (ImportBatch.State.QUEUED, ImportBatch.State.RUNNING):
        messages.error(request, "This import is still running; delete it once it has finished.")
        return redirect(batch)
    if request.method == "POST":
        try:
            count = batch_delete(batch)
        except BatchInUse as exc:
            messages.error(request, str(exc))
            return redirect(batch)
        if batch.state == ImportBatch.State.UPLOADED:
            messages.info(request, f"Discarded the upload of {batch.source_name}.")
        elif batch.state == ImportBatch.State.FAILED and not count:
            messages.success(request, f"Removed the failed import of {batch.source_name} and its file.")
        else:
            messages.success(request, f"Deleted the import of {batch.source_name} and its {count} pairs.")
        return redirect(project)
    return render(request, "labeling/batch_delete.html", {"project": project, "batch": batch})


@requires(REVIEW)
@require_GET
def batch_report(request: HttpRequest, slug: str, batch: str) -> FileResponse:
    _, batch = _batch(request, slug, batch)
    if not batch.report:
        raise Http404("This import rejected no records.")
    response = FileResponse(
        batch.report.open("rb"),
        as_attachment=True,
        filename=f"{batch.source_name}.rejected.jsonl",
        content_type="application/x-ndjson",
    )
    response["X-Content-Type-Options"] = "nosniff"
    return response
