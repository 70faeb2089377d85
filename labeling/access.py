"""Which projects a user may see, by project membership; admins see every project."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import Http404

from labeling.models import Membership, Project
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
    foreign projects stay invisible."""
    lookup = {"slug": slug}
    if not (include_archived and is_admin(user)):
        lookup["archived"] = False
    if not is_admin(user):  # one membership per (project, user): the join finds one row
        lookup.update(memberships__user=user, memberships__active=True)
        if set(Membership.Role.values) - set(roles):  # the default, every role, needs no test
            lookup["memberships__role__in"] = roles
    try:
        return Project.objects.get(**lookup)
    except Project.DoesNotExist:
        raise Http404("No such project.") from None
