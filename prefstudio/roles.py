"""Roles (annotator, lead, admin) as Django groups with permissions, and the view guards that check them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.cache import caches
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.functional import SimpleLazyObject

from prefstudio import shared_cache


class Role(StrEnum):
    ANNOTATOR = "annotator"
    LEAD = "lead"
    ADMIN = "admin"


# Permissions live on labeling.Project's Meta. Migration labeling/0002 first gave them to the
# groups; `sync_role_groups` keeps them so after every migrate and flush.
LABEL = "labeling.label_pairs"
REVIEW = "labeling.review_project"
EXPORT = "labeling.export_data"
TRAIN = "labeling.manage_training"

GROUP_PERMISSIONS: dict[Role, tuple[str, ...]] = {
    Role.ANNOTATOR: (LABEL,),
    Role.LEAD: (LABEL, REVIEW, EXPORT),
    Role.ADMIN: (LABEL, REVIEW, EXPORT, TRAIN),
}
# Admins also manage projects, members, imports and users in Django admin.
ADMIN_MODELS = ("labeling.project", "labeling.membership", "labeling.importbatch", "labeling.pair",
                "auth.user", "auth.group", "api.apitoken")  # fmt: skip


def sync_role_groups(**kwargs: Any) -> None:
    """Make the role groups exist with their permissions (a post_migrate receiver, like Django's own)."""
    from django.contrib.auth.models import Group, Permission
    from django.db.models import Q

    for role, perms in GROUP_PERMISSIONS.items():
        wanted = Q()
        for perm in perms:
            app_label, codename = perm.split(".")
            wanted |= Q(content_type__app_label=app_label, codename=codename)
        if role is Role.ADMIN:
            for model in ADMIN_MODELS:
                app_label, name = model.split(".")
                wanted |= Q(content_type__app_label=app_label, content_type__model=name)
        group, _ = Group.objects.get_or_create(name=role.value)
        group.permissions.add(*Permission.objects.filter(wanted))


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
            if permission and not user_can(request.user, permission):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        guarded.access = permission or "authenticated"  # type: ignore[attr-defined]
        return guarded

    return decorator


def user_can(user: Any, permission: str) -> bool:
    """Whether the user holds `permission`: through a role first (one query for the user's groups per
    request), else through Django's permission backends (permissions given one by one)."""
    return any(permission in GROUP_PERMISSIONS[role] for role in roles_of(user)) or user.has_perm(permission)


# Every request checks the user's roles: their group names come from the shared cache
# (prefstudio.shared_cache), dropped whenever the user's groups change. `is_active` and membership of a
# project are not cached here.


def _roles_key(user_id: int) -> str:
    return f"roles:{user_id}"


def roles_of(user: Any) -> list[Role]:
    """The global roles a user holds, from their groups (superusers count as admins)."""
    if not user.is_authenticated:
        return []
    if not hasattr(user, "_prefstudio_roles"):  # once per request: the user object lives that long
        cache, key = caches[shared_cache.ALIAS], _roles_key(user.pk)
        names = cache.get(key)
        if names is None:
            names = sorted(user.groups.values_list("name", flat=True))
            cache.set(key, names, shared_cache.SECONDS)
        roles = [r for r in Role if r.value in names]
        if user.is_superuser and Role.ADMIN not in roles:
            roles.append(Role.ADMIN)
        user._prefstudio_roles = roles
    return user._prefstudio_roles


def forget_roles(user_ids: Any) -> None:
    """The cached roles of these users are dropped (prefstudio.shared_cache.forget)."""
    shared_cache.forget(_roles_key(pk) for pk in user_ids)


def groups_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any
) -> None:
    """m2m_changed of User.groups (either side): the users whose groups change forget their roles."""
    if action in ("post_add", "post_remove", "pre_clear"):
        if not reverse:  # user.groups.add(...): one user
            forget_roles([instance.pk])
        else:  # group.user_set.add(...): those users, or every member on clear
            forget_roles(pk_set if action != "pre_clear" else instance.user_set.values_list("pk", flat=True))


def group_changed(sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
    """A group renamed or deleted: its members forget their roles (a new group has none)."""
    if instance.pk is not None and not created:
        forget_roles(instance.user_set.values_list("pk", flat=True))


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
    NavItem("Generation", "generation:job-index", EXPORT),
    NavItem("Evaluations", "evaluation:round-index", EXPORT),
    NavItem("Admin", "admin:index", None),
)


def navigation(request: HttpRequest) -> dict[str, Any]:
    """Template context: the navigation entries this user may open, and their roles."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_items": [], "user_roles": []}

    def items() -> list[dict[str, Any]]:
        visible = []
        for item in NAV:
            allowed = user.is_staff if item.permission is None else user_can(user, item.permission)
            if allowed:
                url = reverse(item.url_name)
                visible.append({"label": item.label, "url": url, "active": request.path.startswith(url)})
        return visible

    # Lazy: htmx fragments never show the navigation, so they never pay for it.
    return {
        "nav_items": SimpleLazyObject(items),
        "user_roles": SimpleLazyObject(lambda: [r.value for r in roles_of(user)]),
    }
