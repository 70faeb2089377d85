"""The API's routers, one module per area, and what they share.

Every operation checks what the matching page checks, with the same functions: the role permission
first (`require`: 403, before anything is read or written), then the project (`labeling.access`: 404 for
a project the user does not see, as the pages answer).
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from ninja import Field, Schema
from ninja.pagination import LimitOffsetPagination

from labeling.access import project_for
from labeling.models import Membership, Project
from prefstudio.roles import user_can

LEADS = (Membership.Role.LEAD,)


def require(request: HttpRequest, permission: str) -> None:
    """403 unless the token's user holds `permission` (prefstudio.roles), as `roles.requires` decides."""
    if not user_can(request.user, permission):
        raise PermissionDenied


def lead_project(request: HttpRequest, slug: str) -> Project:
    """The project if the user leads it (admins: any), archived ones included: the review, export and
    import pages' rule. 404 otherwise."""
    return project_for(request.user, slug, roles=LEADS, include_archived=True)


class PageIn(Schema):
    limit: int = Field(50, ge=1, le=200, description="At most this many items.")
    offset: int = Field(0, ge=0, le=10**9, description="Skip this many first.")


class Pages(LimitOffsetPagination):
    """`limit` items from `offset`, with the total `count`."""

    Input = PageIn
