"""Projects the token's user works on, and a project's agreement report."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router
from ninja.pagination import paginate

from api.errors import responses
from api.routers import Pages, lead_project, require
from api.schemas import AgreementOut, ProjectOut
from labeling.access import project_for, projects_for
from labeling.review import review_report
from prefstudio.roles import LABEL, REVIEW

router = Router(tags=["projects"])


@router.get("/projects", response=responses({200: list[ProjectOut]}, 403))
@paginate(Pages)
def project_list(request: HttpRequest):
    """The active projects the user is a member of (every one for admins), as the Label page lists them."""
    require(request, LABEL)
    return projects_for(request.user).order_by("name", "pk")


@router.get("/projects/{slug}", response=responses({200: ProjectOut}, 403, 404))
def project_get(request: HttpRequest, slug: str):
    require(request, LABEL)
    return project_for(request.user, slug, include_archived=True)


@router.get("/projects/{slug}/agreement", response=responses({200: AgreementOut}, 403, 404))
def agreement_get(request: HttpRequest, slug: str, refresh: bool = False):
    """The agreement report of the project's Review page, for its leads and admins: the one the page shows
    (`newer_judgments` says how many came in since), or with `refresh` computed now, as `manage.py
    agreement_report --json` and the page's Refresh button do."""
    require(request, REVIEW)
    return review_report(lead_project(request, slug), refresh=refresh)
