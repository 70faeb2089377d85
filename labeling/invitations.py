"""Invitations: a link that lets a person make an account (or bring their own) and join a project with a
role. The link is the invitation's uuid signed with the SECRET_KEY, so reading the table does not give
anyone a working link; whether it still works (not revoked, not expired, not used up) is the row's.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core import signing
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from labeling.models import Invitation, Membership, Project

SALT = "prefstudio.invitation"
_SIGNER = signing.Signer(salt=SALT)


class InvitationRefused(Exception):
    """The link does not (or no longer) let anyone in; the message says why, for the person holding it."""


class UsernameTaken(Exception):
    """The username was taken between the form's check and the sign-up; nothing was saved or used up."""


def invitation_create(
    *, project: Project, role: str, max_uses: int, days: int, created_by: Any, now: datetime | None = None
) -> Invitation:
    return Invitation.objects.create(
        project=project,
        role=role,
        max_uses=max_uses,
        expires_at=(now or timezone.now()) + timedelta(days=days),
        created_by=created_by,
    )


def invitation_token(invitation: Invitation) -> str:
    return _SIGNER.sign(invitation.uuid.hex)


def invitation_for_token(token: str) -> Invitation:
    """The invitation a link names, whatever its state; InvitationRefused when the link was not made here."""
    try:
        ident = _SIGNER.unsign(token)
        return Invitation.objects.select_related("project").get(uuid=ident)
    except (signing.BadSignature, ValueError, Invitation.DoesNotExist):
        raise InvitationRefused(
            "This invitation link is not valid: check that it was copied whole, or ask for a new one."
        ) from None


def invitation_problem(invitation: Invitation, *, now: datetime | None = None) -> str:
    """Why the invitation can no longer be used, in words; empty while it can."""
    now = now or timezone.now()
    ask = "Ask whoever invited you for a new link."
    if invitation.revoked_at is not None:
        return f"This invitation to {invitation.project.name} was revoked. {ask}"
    if invitation.expires_at <= now:
        when = f"{invitation.expires_at:%d %b %Y}"
        return f"This invitation to {invitation.project.name} expired on {when}. {ask}"
    if invitation.uses >= invitation.max_uses:
        used = "once" if invitation.max_uses == 1 else f"{invitation.max_uses} times"
        return f"This invitation to {invitation.project.name} was already used {used}. {ask}"
    if invitation.project.archived:
        return f"{invitation.project.name} is archived and takes no new members."
    return ""


def invitation_state(invitation: Invitation, *, now: datetime | None = None) -> str:
    """One word for lists: active, revoked, expired or used."""
    now = now or timezone.now()
    if invitation.revoked_at is not None:
        return "revoked"
    if invitation.expires_at <= now:
        return "expired"
    return "used" if invitation.uses >= invitation.max_uses else "active"


def invitation_revoke(*, invitation: Invitation) -> None:
    Invitation.objects.filter(pk=invitation.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


def invitation_sign_up(*, invitation: Invitation, username: str, password: str) -> Any:
    """Make the account and its membership, using up one use of the invitation; all or nothing.

    UsernameTaken when the username went to someone else after the form checked it; the use is not spent.
    """
    user_model = get_user_model()
    user = user_model(username=user_model.normalize_username(username))
    user.set_password(password)  # slow on purpose: done before the invitation row is locked
    with transaction.atomic():
        _claim(invitation)
        try:
            with transaction.atomic():
                user.save()
        except IntegrityError:
            raise UsernameTaken("A user with that username already exists.") from None
        _join(invitation, user)
    return user


def invitation_accept(*, invitation: Invitation, user: Any) -> Membership:
    """Let a signed-in user join the project with the invitation's role, using up one use."""
    if Membership.objects.filter(project=invitation.project_id, user=user).exists():
        raise InvitationRefused(_already_member(invitation))
    with transaction.atomic():
        _claim(invitation)
        return _join(invitation, user)


def _claim(invitation: Invitation) -> None:
    """Count one use, if the invitation still has one, in the caller's transaction (a failed sign-up gives
    it back).

    One conditional UPDATE on the invitation row alone: PostgreSQL re-checks its WHERE on the row it
    waited for, so two people taking the last use at once cannot both get it. A condition on a joined
    table would make Django move the whole WHERE into an `id IN (subquery)`, which is checked against the
    rows as they were before the wait; the project is tested with EXISTS for that reason.
    """
    now = timezone.now()
    claimed = Invitation.objects.filter(
        Exists(Project.objects.filter(pk=OuterRef("project_id"), archived=False)),
        pk=invitation.pk,
        revoked_at__isnull=True,
        expires_at__gt=now,
        uses__lt=F("max_uses"),
    ).update(uses=F("uses") + 1)
    if not claimed:
        invitation.refresh_from_db()  # and its project, read again when asked for
        problem = invitation_problem(invitation, now=now)
        raise InvitationRefused(problem or "This invitation can no longer be used.")


def _join(invitation: Invitation, user: Any) -> Membership:
    try:
        with transaction.atomic():
            membership = Membership.objects.create(
                project=invitation.project, user=user, role=invitation.role
            )
    except IntegrityError:  # joined a moment ago, from another tab
        raise InvitationRefused(_already_member(invitation)) from None
    # The project role needs the global role of the same name: its permissions open the pages.
    user.groups.add(Group.objects.get(name=invitation.role))
    return membership


def _already_member(invitation: Invitation) -> str:
    return f"You are already a member of {invitation.project.name}; the invitation is left for someone else."
