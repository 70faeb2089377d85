"""Roles (annotator, lead, admin) as Django groups with permissions, and the view guards that check them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import reverse


class Role(StrEnum):
    ANNOTATOR = "annotator"
    LEAD = "lead"
    ADMIN = "admin"


# Permissions live on labeling.Project's Meta; migration labeling/0002 gives them to the groups.
LABEL = "labeling.label_pairs"
REVIEW = "labeling.review_project"
EXPORT = "labeling.export_data"
TRAIN = "labeling.manage_training"

View = Callable[..., HttpResponse]


def public(view: View) -> View:
    """Mark a view as open to anonymous users (the URL walker test reads the mark)."""
    view.access = "public"  # type: ignore[attr-defined]
    return view


def requires(permission: str | None = None) -> Callable[[View], View]:
    """Guard a view: anonymous users go to login, users without `permission` get 403.

    `None` means any signed-in user.
    """

    def decorator(view: View) -> View:
        @wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if permission and not request.user.has_perm(permission):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        guarded.access = permission or "authenticated"  # type: ignore[attr-defined]
        return guarded

    return decorator


def roles_of(user: Any) -> list[Role]:
    """The global roles a user holds, from their groups (superusers count as admins)."""
    if not user.is_authenticated:
        return []
    names = {g.name for g in user.groups.all()}
    roles = [r for r in Role if r.value in names]
    if user.is_superuser and Role.ADMIN not in roles:
        roles.append(Role.ADMIN)
    return roles


@dataclass(frozen=True)
class NavItem:
    label: str
    url_name: str
    permission: str | None  # None: staff only (Django admin)


NAV: tuple[NavItem, ...] = (
    NavItem("Label", "labeling:label-index", LABEL),
    NavItem("Review", "labeling:review-index", REVIEW),
    NavItem("Export", "labeling:export-index", EXPORT),
    NavItem("Training", "training:run-index", TRAIN),
    NavItem("Admin", "admin:index", None),
)


def navigation(request: HttpRequest) -> dict[str, Any]:
    """Template context: the navigation entries this user may open, and their roles."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_items": [], "user_roles": []}
    items = []
    path = request.path
    for item in NAV:
        allowed = user.is_staff if item.permission is None else user.has_perm(item.permission)
        if not allowed:
            continue
        url = reverse(item.url_name)
        items.append({"label": item.label, "url": url, "active": path.startswith(url)})
    return {"nav_items": items, "user_roles": [r.value for r in roles_of(user)]}
