"""Labeling pages. Every view checks the role globally, then project membership."""

from __future__ import annotations

from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from labeling.access import project_for, projects_for
from labeling.models import Membership
from prefstudio.roles import EXPORT, LABEL, REVIEW, requires

_LEADS = (Membership.Role.LEAD,)


def _with_counts(projects):
    return projects.annotate(
        annotator_count=Count(
            "memberships",
            filter=Q(memberships__role=Membership.Role.ANNOTATOR, memberships__active=True),
            distinct=True,
        ),
    ).order_by("name")


@require_GET
@requires(LABEL)
def label_index(request: HttpRequest) -> HttpResponse:
    projects = _with_counts(projects_for(request.user))
    return render(request, "labeling/project_list.html", {"projects": projects, "section": "label"})


@require_GET
@requires(REVIEW)
def review_index(request: HttpRequest) -> HttpResponse:
    projects = _with_counts(projects_for(request.user, roles=_LEADS))
    return render(request, "labeling/project_list.html", {"projects": projects, "section": "review"})


@require_GET
@requires(EXPORT)
def export_index(request: HttpRequest) -> HttpResponse:
    projects = _with_counts(projects_for(request.user, roles=_LEADS))
    return render(request, "labeling/project_list.html", {"projects": projects, "section": "export"})


@require_GET
@requires(LABEL)
def project_detail(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for(request.user, slug)
    membership = Membership.objects.filter(project=project, user=request.user).first()
    members = project.memberships.select_related("user").order_by("role", "user__username")
    can_see_members = membership is None or membership.role == Membership.Role.LEAD
    return render(
        request,
        "labeling/project_detail.html",
        {
            "project": project,
            "membership": membership,
            "members": members if can_see_members else None,
        },
    )
