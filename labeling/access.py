"""Which projects a user may see, by project membership; admins see every project."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import Http404

from labeling.models import Membership, Project
from prefstudio import sql
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


_PROJECT_FIELDS = tuple(f.attname for f in Project._meta.concrete_fields)
_PROJECT = (
    f"SELECT {sql.columns(Project, _PROJECT_FIELDS, 'p')} FROM {Project._meta.db_table} p WHERE p.slug = %s"
)
_MEMBER = (
    f" AND EXISTS (SELECT 1 FROM {Membership._meta.db_table} m WHERE m.project_id = p.id"
    " AND m.user_id = %s AND m.active = %s AND m.role IN ({roles}))"
)


def project_for(
    user: Any,
    slug: str,
    *,
    roles: tuple[str, ...] = (Membership.Role.ANNOTATOR, Membership.Role.LEAD),
    include_archived: bool = False,
) -> Project:
    """The project with `slug` if the user may see it (as `projects_for` decides); 404 otherwise, so
    foreign projects stay invisible. Every workbench request asks, so the query is written out."""
    admin = is_admin(user)
    query, params = _PROJECT, [slug]
    if not (include_archived and admin):
        query, params = query + " AND p.archived = %s", [*params, False]
    if not admin:
        query += _MEMBER.format(roles=", ".join(["%s"] * len(roles)))
        params += [user.pk, True, *roles]
    row = sql.fetchone(query, params)
    if row is None:
        raise Http404("No such project.")
    return sql.load(Project, _PROJECT_FIELDS, row)
