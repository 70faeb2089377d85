"""Invitations: admins and leads make links for a project and role; whoever holds a working link makes an
account and lands in the project; expired, revoked, used-up and forged links are refused with a reason."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.utils import timezone

from labeling.forms import JoinForm
from labeling.invitations import (
    InvitationRefused,
    UsernameTaken,
    invitation_accept,
    invitation_create,
    invitation_for_token,
    invitation_sign_up,
    invitation_token,
)
from labeling.models import Invitation, Membership
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db
NEW_PASSWORD = "violet-lantern-harbour-42"


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def make(project, user, **fields) -> Invitation:
    values = {"role": "annotator", "max_uses": 1, "days": 7, **fields}
    return invitation_create(project=project, created_by=user, **values)


def link(invitation: Invitation) -> str:
    return f"/invite/{invitation_token(invitation)}/"


def sign_up(client: Client, invitation: Invitation, username: str, password: str = NEW_PASSWORD):
    return client.post(link(invitation), {"username": username, "password1": password, "password2": password})


def test_an_admin_makes_a_link_that_the_project_page_lists(project, admin_user):
    client = logged_in(admin_user)
    form = {"invite-role": "lead", "invite-max_uses": 3, "invite-days": 30}
    response = client.post(f"/projects/{project.slug}/invitations/", form)
    assert response.status_code == 302 and response["Location"].endswith("#invitations")
    invitation = Invitation.objects.get()
    assert (invitation.role, invitation.max_uses, invitation.uses, invitation.created_by) == (
        "lead", 3, 0, admin_user
    )  # fmt: skip
    assert timedelta(days=29) < invitation.expires_at - timezone.now() <= timedelta(days=30)
    page = client.get(project.get_absolute_url()).content.decode()
    assert f"http://testserver{link(invitation)}" in page and "0 of 3" in page
    assert invitation.uuid.hex in link(invitation) and link(invitation) != f"/invite/{invitation.uuid.hex}/"


def test_leads_invite_annotators_only_and_annotators_cannot_invite(project, lead, annotator):
    client = logged_in(lead)
    page = client.get(project.get_absolute_url()).content.decode()
    assert 'name="invite-role"' in page and '<option value="lead"' not in page.split("invitation-new")[1]
    client.post(f"/projects/{project.slug}/invitations/", {"invite-role": "lead", "invite-max_uses": 1,
                                                            "invite-days": 7})  # fmt: skip
    assert not Invitation.objects.exists()
    client.post(f"/projects/{project.slug}/invitations/", {"invite-role": "annotator", "invite-max_uses": 1,
                                                            "invite-days": 7})  # fmt: skip
    assert Invitation.objects.get().role == "annotator"
    form = {"invite-role": "annotator", "invite-max_uses": 1, "invite-days": 7}
    assert logged_in(annotator).post(f"/projects/{project.slug}/invitations/", form).status_code == 403
    assert "Invitations" not in logged_in(annotator).get(project.get_absolute_url()).content.decode()


def test_leads_of_another_project_can_neither_invite_to_nor_revoke_in_this_one(
    project, other_project, make_user, admin_user
):
    stranger = make_user("lee", "lead")
    Membership.objects.create(project=other_project, user=stranger, role=Membership.Role.LEAD)
    invitation = make(project, admin_user)
    client = logged_in(stranger)
    form = {"invite-role": "annotator", "invite-max_uses": 1, "invite-days": 7}
    assert client.post(f"/projects/{project.slug}/invitations/", form).status_code == 404
    assert client.post(f"/projects/{project.slug}/invitations/{invitation.pk}/revoke/").status_code == 404
    assert (
        client.post(f"/projects/{other_project.slug}/invitations/{invitation.pk}/revoke/").status_code == 404
    )
    invitation.refresh_from_db()
    assert invitation.revoked_at is None


def test_a_new_person_joins_with_a_link_and_lands_in_the_project(project, admin_user):
    invitation = make(project, admin_user)
    client = Client()
    page = client.get(link(invitation)).content.decode()
    assert "Join Alpha" in page and "as an annotator" in page and 'name="password1"' in page
    response = sign_up(client, invitation, "newcomer")
    assert response.status_code == 302 and response["Location"] == project.get_absolute_url()
    user = get_user_model().objects.get(username="newcomer")
    assert user.check_password(NEW_PASSWORD)
    assert list(user.groups.values_list("name", flat=True)) == ["annotator"]
    membership = Membership.objects.get(user=user)
    assert (membership.project, membership.role, membership.active) == (project, "annotator", True)
    page = client.get(response["Location"]).content.decode()  # logged in by the sign-up
    assert "Welcome to Alpha: you joined as annotator." in page and "You are an annotator here." in page
    assert client.get("/label/").status_code == 200


def test_a_lead_invitation_gives_the_lead_role(project, admin_user):
    invitation = make(project, admin_user, role="lead")
    client = Client()
    sign_up(client, invitation, "newlead")
    user = get_user_model().objects.get(username="newlead")
    assert Membership.objects.get(user=user).role == "lead"
    assert client.get(f"/projects/{project.slug}/review/").status_code == 200


def test_passwords_go_through_django_validators_and_nothing_is_used_up(project, admin_user, annotator):
    invitation = make(project, admin_user)
    client = Client()
    response = sign_up(client, invitation, "weak", "12345678")
    body = response.content.decode()
    assert response.status_code == 400
    assert "This password is too common." in body and "This password is entirely numeric." in body
    response = sign_up(client, invitation, "ann")  # taken by the annotator fixture
    assert (
        response.status_code == 400
        and "A user with that username already exists." in response.content.decode()
    )
    invitation.refresh_from_db()
    assert invitation.uses == 0 and not get_user_model().objects.filter(username="weak").exists()


def test_a_used_link_is_refused_and_a_use_limit_is_kept(project, admin_user):
    once = make(project, admin_user)
    assert sign_up(Client(), once, "first").status_code == 302
    again = Client()
    response = again.get(link(once))
    assert response.status_code == 410
    assert "This invitation to Alpha was already used once." in response.content.decode()
    assert sign_up(again, once, "second").status_code == 410
    assert not get_user_model().objects.filter(username="second").exists()

    twice = make(project, admin_user, max_uses=2)
    assert sign_up(Client(), twice, "third").status_code == 302
    assert sign_up(Client(), twice, "fourth").status_code == 302
    response = sign_up(Client(), twice, "fifth")
    assert response.status_code == 410 and "already used 2 times" in response.content.decode()


def test_expired_revoked_and_forged_links_are_refused(project, admin_user):
    expired = make(project, admin_user)
    Invitation.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    response = Client().get(link(expired))
    assert response.status_code == 410 and "This invitation to Alpha expired on" in response.content.decode()
    assert sign_up(Client(), expired, "late").status_code == 410

    revoked = make(project, admin_user)
    client = logged_in(admin_user)
    client.post(f"/projects/{project.slug}/invitations/{revoked.pk}/revoke/")
    response = Client().get(link(revoked))
    assert response.status_code == 410 and "was revoked" in response.content.decode()
    page = client.get(project.get_absolute_url()).content.decode()
    assert link(revoked) not in page and "revoked" in page

    forged = link(revoked).replace(revoked.uuid.hex, make(project, admin_user).uuid.hex[:-1] + "0")
    response = Client().get(forged)
    assert response.status_code == 404 and "This invitation link is not valid" in response.content.decode()
    assert Client().get(f"/invite/{revoked.uuid.hex}/").status_code == 404  # the bare uuid is no link
    assert get_user_model().objects.filter(username="late").count() == 0


def test_a_signed_in_user_joins_with_their_account_once(project, other_project, admin_user, annotator):
    invitation = make(other_project, admin_user, max_uses=5)
    client = logged_in(annotator)
    page = client.get(link(invitation)).content.decode()
    assert "Join as ann" in page and 'name="password1"' not in page
    response = client.post(link(invitation))
    assert response["Location"] == other_project.get_absolute_url()
    assert Membership.objects.get(user=annotator, project=other_project).role == "annotator"
    response = client.post(link(invitation))
    assert response.status_code == 410 and "already a member of Bravo" in response.content.decode()
    invitation.refresh_from_db()
    assert invitation.uses == 1


def test_an_archived_project_takes_no_one(project, admin_user):
    invitation = make(project, admin_user)
    project.archived = True
    project.save()
    response = sign_up(Client(), invitation, "late")
    assert response.status_code == 410 and "archived" in response.content.decode()


def test_the_service_refuses_a_use_past_the_limit_even_with_a_stale_row(project, admin_user, make_user):
    invitation = make(project, admin_user)
    stale = invitation_for_token(invitation_token(invitation))
    invitation_accept(invitation=invitation, user=make_user("one"))
    with pytest.raises(InvitationRefused, match="already used once"):
        invitation_accept(invitation=stale, user=make_user("two"))
    assert Membership.objects.filter(project=project).count() == 1


def test_every_user_can_change_their_password(annotator):
    client = logged_in(annotator)
    page = client.get("/").content.decode()
    assert re.search(r'<a href="/password/">Password</a>', page)
    form = {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    response = client.post("/password/", form)
    assert response.status_code == 302 and response["Location"] == "/password/done/"
    assert "Password changed" in client.get("/password/done/").content.decode()  # still logged in
    annotator.refresh_from_db()
    assert annotator.check_password(NEW_PASSWORD)
    bad = client.post("/password/", {"old_password": "wrong", "new_password1": "x", "new_password2": "x"})
    assert "Your old password was entered incorrectly" in bad.content.decode()
    assert Client().get("/password/")["Location"] == "/login/?next=/password/"


def test_a_username_taken_after_the_form_check_is_refused_and_uses_nothing(project, admin_user, monkeypatch):
    invitation = make(project, admin_user)
    with pytest.raises(UsernameTaken):
        invitation_sign_up(invitation=invitation, username="root", password=NEW_PASSWORD)
    monkeypatch.setattr(JoinForm, "clean_username", lambda form: form.cleaned_data["username"])
    response = sign_up(Client(), invitation, "root")  # the form no longer sees the clash; the insert does
    assert response.status_code == 400
    assert "A user with that username already exists." in response.content.decode()
    invitation.refresh_from_db()
    assert invitation.uses == 0 and Membership.objects.filter(project=project).count() == 0


def in_parallel(count: int, request: Callable[[int], object]) -> list:
    """`request(i)` for i in range(count), each in its own thread with its own database connection,
    released together; what each returned."""
    start, results = threading.Barrier(count), [None] * count

    def run(i: int) -> None:
        try:
            start.wait()
            results[i] = request(i)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


USED_UP = "This invitation to Alpha was already used 3 times."


@pytest.fixture
def _threads_need_postgres():
    """Real threads racing for one invitation: PostgreSQL's row locks decide (as in CI). SQLite, the
    zero-setup default of `make test`, locks whole tables across the threads' connections instead."""
    if connection.vendor != "postgresql":
        pytest.skip("concurrent joins are decided by PostgreSQL's row locks; SQLite locks whole tables")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_threads_need_postgres")
def test_parallel_accepts_by_signed_in_users_fill_the_invitation_exactly(
    project, admin_user, make_user, settings
):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # ten users, quickly
    invitation = make(project, admin_user, max_uses=3)
    people = [make_user(f"member{i}") for i in range(10)]

    def accept(i: int):
        client = Client(raise_request_exception=False)
        client.force_login(people[i])
        return client.post(link(invitation))

    responses = in_parallel(len(people), accept)
    assert sorted(r.status_code for r in responses) == [302] * 3 + [410] * 7
    assert all(USED_UP in r.content.decode() for r in responses if r.status_code != 302)
    invitation.refresh_from_db()
    assert invitation.uses == 3 and Membership.objects.filter(project=project).count() == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_threads_need_postgres")
def test_parallel_sign_ups_fill_the_invitation_exactly_and_refuse_the_rest_as_used_up(
    project, admin_user, settings
):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # the race, not hashing
    invitation = make(project, admin_user, max_uses=3)
    responses = in_parallel(10, lambda i: sign_up(Client(raise_request_exception=False), invitation, f"u{i}"))
    assert sorted(r.status_code for r in responses) == [302] * 3 + [410] * 7
    bodies = [r.content.decode() for r in responses]
    assert not [b for b in bodies if "already exists" in b]
    assert all(USED_UP in b for r, b in zip(responses, bodies, strict=True) if r.status_code != 302)
    invitation.refresh_from_db()
    joined = {f"u{i}" for i, r in enumerate(responses) if r.status_code == 302}
    assert invitation.uses == 3
    new_users = get_user_model().objects.filter(username__startswith="u").values_list("username", flat=True)
    assert set(new_users) == joined
    assert set(Membership.objects.filter(project=project).values_list("user__username", flat=True)) == joined


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_threads_need_postgres")
def test_a_double_click_to_join_counts_one_use(project, admin_user, annotator, other_project):
    invitation = make(other_project, admin_user, max_uses=5)

    def accept(i: int):
        client = Client(raise_request_exception=False)
        client.force_login(annotator)
        return client.post(link(invitation))

    responses = in_parallel(4, accept)
    assert sorted(r.status_code for r in responses) == [302] + [410] * 3
    assert all("already a member of Bravo" in r.content.decode() for r in responses if r.status_code != 302)
    invitation.refresh_from_db()
    assert invitation.uses == 1
