"""Invitation pages: admins and a project's leads make and revoke links on the project page; whoever
holds a working link makes an account (or uses theirs) and lands in the project."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import authenticate, login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from labeling.access import is_admin, project_for
from labeling.forms import InvitationForm, JoinForm
from labeling.invitations import (
    InvitationRefused,
    UsernameTaken,
    invitation_accept,
    invitation_create,
    invitation_for_token,
    invitation_problem,
    invitation_revoke,
    invitation_sign_up,
    invitation_state,
    invitation_token,
)
from labeling.models import Invitation, Membership, Project
from prefstudio.roles import REVIEW, public, requires

_LEADS = (Membership.Role.LEAD,)
SHOWN = 30


def invitable_roles(user: Any) -> list[str]:
    """Admins invite annotators and leads; leads invite annotators (they cannot change members)."""
    if is_admin(user):
        return [Membership.Role.ANNOTATOR, Membership.Role.LEAD]
    return [Membership.Role.ANNOTATOR]


def invitations_context(request: HttpRequest, project: Project) -> dict:
    """The project page's invitations, with the link of each usable one, and a form for a new one."""
    rows = []
    for invitation in project.invitations.select_related("created_by")[:SHOWN]:
        state = invitation_state(invitation)
        link = ""
        if state == "active":
            path = reverse("labeling:invitation-accept", kwargs={"token": invitation_token(invitation)})
            link = request.build_absolute_uri(path)
        rows.append({"invitation": invitation, "state": state, "link": link})
    return {"invitations": rows, "invitation_form": InvitationForm(roles=invitable_roles(request.user))}


@requires(REVIEW)
@require_POST
def invitation_new(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for(request.user, slug, roles=_LEADS)
    form = InvitationForm(request.POST, roles=invitable_roles(request.user))
    if form.is_valid():
        invitation_create(project=project, created_by=request.user, **form.cleaned_data)
        messages.success(request, "Invitation made: copy its link from the list and send it.")
    else:
        messages.error(request, " ".join(e for errors in form.errors.values() for e in errors))
    return redirect(f"{project.get_absolute_url()}#invitations")


@requires(REVIEW)
@require_POST
def invitation_remove(request: HttpRequest, slug: str, invitation_id: int) -> HttpResponse:
    project = project_for(request.user, slug, roles=_LEADS, include_archived=True)
    invitation_revoke(invitation=get_object_or_404(Invitation, pk=invitation_id, project=project))
    messages.success(request, "Invitation revoked: its link no longer works.")
    return redirect(f"{project.get_absolute_url()}#invitations")


@public
@require_http_methods(["GET", "POST"])
def invitation_join(request: HttpRequest, token: str) -> HttpResponse:
    try:
        invitation = invitation_for_token(token)
    except InvitationRefused as exc:
        return _refused(request, str(exc), status=404)
    if problem := invitation_problem(invitation):
        return _refused(request, problem, invitation=invitation)
    form = JoinForm(request.POST or None) if not request.user.is_authenticated else None
    if request.method == "POST":
        try:
            if form is None:
                invitation_accept(invitation=invitation, user=request.user)
                return _welcome(request, invitation)
            if form.is_valid():
                username, password = form.cleaned_data["username"], form.cleaned_data["password1"]
                invitation_sign_up(invitation=invitation, username=username, password=password)
                login(request, authenticate(request, username=username, password=password))
                return _welcome(request, invitation)
        except InvitationRefused as exc:
            return _refused(request, str(exc), invitation=invitation)
        except UsernameTaken as exc:
            form.add_error("username", str(exc))
    status = 400 if form is not None and form.errors else 200
    return render(
        request, "labeling/invitation_join.html", {"invitation": invitation, "form": form}, status=status
    )


def _welcome(request: HttpRequest, invitation: Invitation) -> HttpResponse:
    role = invitation.get_role_display().lower()
    messages.success(request, f"Welcome to {invitation.project.name}: you joined as {role}.")
    return redirect(invitation.project)


def _refused(request: HttpRequest, reason: str, *, invitation: Invitation | None = None, status: int = 410):
    context = {"invitation": invitation, "reason": reason}
    return render(request, "labeling/invitation_join.html", context, status=status)
