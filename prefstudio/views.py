"""Site-wide views: the home dashboard and the health probe."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from labeling.access import projects_for
from labeling.models import Membership
from prefstudio.health import database_status, redis_status
from prefstudio.roles import public, requires


@require_GET
@requires()
def home(request: HttpRequest) -> HttpResponse:
    memberships = (
        Membership.objects.filter(user=request.user, active=True, project__archived=False)
        .select_related("project")
        .order_by("project__name")
    )
    return render(
        request,
        "home.html",
        {"memberships": memberships, "project_count": projects_for(request.user).count()},
    )


@require_GET
@never_cache
@public
def healthz(request: HttpRequest) -> JsonResponse:
    checks = {"database": database_status(), "redis": redis_status()}
    healthy = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if healthy else "error", **checks}, status=200 if healthy else 503)
