"""Which projects a user may see, by project membership; admins see every project."""

from __future__ import annotations

from typing import Any

from django.core.cache import caches
from django.db.models import QuerySet
from django.http import Http404

from labeling.models import Membership, Project
from prefstudio import shared_cache
from prefstudio.roles import Role, roles_of


def is_admin(user: Any) -> bool:
    return Role.ADMIN in roles_of(user)


def projects_for(
    user: Any,
    *,
    roles: tuple[str, ...] = (Membership.Role.ANNOTATOR, Membership.Role.LEAD),
    include_archived: bool = False,
) -> QuerySet[Project]:
    """Active projects where the user is an active member with one of `roles` (all of them for admins).

    Archived projects are left out unless `include_archived` and the user is an admin.
    """
    if is_admin(user):
        return Project.objects.all() if include_archived else Project.objects.filter(archived=False)
    return (
        Project.objects.filter(archived=False)
        .filter(memberships__user=user, memberships__active=True, memberships__role__in=roles)
        .distinct()
    )


def project_for(
    user: Any,
    slug: str,
    *,
    roles: tuple[str, ...] = (Membership.Role.ANNOTATOR, Membership.Role.LEAD),
    include_archived: bool = False,
) -> Project:
    """The project with `slug` if the user may see it (as `projects_for` decides); 404 otherwise, so
    foreign projects stay invisible.

    Every request asks this: the project and the user's membership of it come from the shared cache
    (prefstudio.shared_cache), dropped whenever either is saved or deleted.
    """
    admin = is_admin(user)
    project, member = _project_and_membership(slug, None if admin else user)
    if project is None or (project.archived and not (include_archived and admin)):
        raise Http404("No such project.")
    if not admin and (member is None or not member["active"] or member["role"] not in roles):
        raise Http404("No such project.")
    return project


def _project_key(slug: str) -> str:
    return f"project:{slug}"


def _member_key(slug: str, user_id: int) -> str:
    return f"member:{slug}:{user_id}"


def _project_and_membership(slug: str, user: Any) -> tuple[Project | None, dict | None]:
    """The project with `slug` and `user`'s membership of it ({"project_id", "role", "active"}; None for
    none, or when `user` is None), in one read of the shared cache; what it lacks from the database."""
    cache = caches[shared_cache.ALIAS]
    keys = [_project_key(slug)] + ([_member_key(slug, user.pk)] if user is not None else [])
    found = cache.get_many(keys)
    project = found.get(keys[0])
    if project is None:
        project = Project.objects.filter(slug=slug).first()
        if project is None:
            return None, None
        cache.set(keys[0], project, shared_cache.SECONDS)
    if user is None:
        return project, None
    member = found.get(keys[1])
    if member is None or member["project_id"] != project.pk:  # a slug a deleted project had
        row = Membership.objects.filter(project=project, user=user).values("role", "active").first()
        member = {"project_id": project.pk, "role": None, "active": False, **(row or {})}
        cache.set(keys[1], member, shared_cache.SECONDS)
    return project, member if member["role"] is not None else None


def project_changed(sender: Any, instance: Project, **kwargs: Any) -> None:
    """A project saved or deleted (its slug perhaps changed): it and its memberships are read again."""
    slugs = {instance.slug, getattr(instance, "_slug_before", None) or instance.slug}
    keys = [_project_key(slug) for slug in slugs]
    users = Membership.objects.filter(project_id=instance.pk).values_list("user_id", flat=True)
    shared_cache.forget(keys + [_member_key(slug, user_id) for slug in slugs for user_id in users])


def project_saving(sender: Any, instance: Project, **kwargs: Any) -> None:
    """Remember the slug a project had, so that its cache entry under the old slug is dropped too."""
    if instance.pk is not None:
        instance._slug_before = Project.objects.filter(pk=instance.pk).values_list("slug", flat=True).first()


def membership_saving(sender: Any, instance: Membership, **kwargs: Any) -> None:
    """Remember the project and user a membership had, so that a membership moved to another project or
    user (in the admin) drops the access it gave before too."""
    if instance.pk is not None:
        instance._access_before = (
            Membership.objects.filter(pk=instance.pk).values_list("project_id", "user_id").first()
        )


def membership_changed(sender: Any, instance: Membership, **kwargs: Any) -> None:
    """A membership saved or deleted: the user's access to that project, and the access it gave before it
    was moved, are read again."""
    places = {(instance.project_id, instance.user_id)}
    if before := getattr(instance, "_access_before", None):
        places.add(before)
    slugs = dict(Project.objects.filter(pk__in=[p for p, _ in places]).values_list("pk", "slug"))
    shared_cache.forget(_member_key(slugs[p], u) for p, u in places if p in slugs)
