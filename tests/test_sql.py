"""Written-out statements (prefstudio/sql.py) and the session and user loading built on them
(prefstudio/auth.py): same values as the ORM, same security as Django's own classes."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from labeling.assignment import LEASE_FIELDS, PAIR_SHOWN, current_lease, next_assignment
from labeling.models import Assignment, Judgment, Pair
from prefstudio import sql
from prefstudio.auth import UserBackend
from prefstudio.models import Session
from tests.conftest import PASSWORD
from tests.labeling.test_assignment import make_pairs

pytestmark = pytest.mark.django_db


def test_rows_load_with_the_orms_conversions(project, annotator):
    (pair,) = make_pairs(project, 1)
    Pair.objects.filter(pk=pair.pk).update(prompt=[{"role": "user", "content": "Hi"}], rendered={"v": 1})
    lease = next_assignment(project, annotator)
    again = current_lease(project, annotator)
    orm = Assignment.objects.select_related("pair").get(pk=lease.pk)
    for name in LEASE_FIELDS:
        assert getattr(again, name) == getattr(orm, name), name
        assert type(getattr(again, name)) is type(getattr(orm, name)), name  # bools, aware datetimes
    for name in PAIR_SHOWN:
        assert getattr(again.pair, name) == getattr(orm.pair, name), name
    assert again.pair.is_chat and again.pair.prompt[0]["content"] == "Hi"
    assert timezone.is_aware(again.expires_at)


def test_insert_returns_the_id_or_none_on_a_conflict(project, annotator):
    (pair,) = make_pairs(project, 1)
    now = timezone.now()
    values = {"pair_id": pair.pk, "annotator_id": annotator.pk, "choice": "a", "strength": "",
              "criteria": {"Safety": "tie"}, "rationale": "", "a_on_left": True, "is_gold": False,
              "created_at": now, "updated_at": now}  # fmt: skip
    first = sql.insert(Judgment, values, on_conflict=("pair_id", "annotator_id"))
    second = sql.insert(Judgment, {**values, "choice": "b"}, on_conflict=("pair_id", "annotator_id"))
    assert first and second is None
    assert Judgment.objects.get().criteria == {"Safety": "tie"} and Judgment.objects.get().choice == "a"


def test_a_session_ends_at_logout_even_for_a_copied_cookie(annotator):
    client = Client()
    client.force_login(annotator)
    copied = Client()
    copied.cookies = client.cookies.__class__(client.cookies)
    assert copied.get("/").status_code == 200
    client.post("/logout/")
    assert copied.get("/").status_code == 302  # to login: the session row is gone


def test_an_expired_session_is_anonymous(annotator):
    client = Client()
    client.force_login(annotator)
    Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))
    assert client.get("/").status_code == 302


def test_a_tampered_session_key_is_anonymous(annotator, settings):
    client = Client()
    client.force_login(annotator)
    client.cookies[settings.SESSION_COOKIE_NAME] = "x" * 32
    assert client.get("/").status_code == 302


def test_a_deactivated_user_is_signed_out(annotator):
    client = Client()
    client.force_login(annotator)
    annotator.is_active = False
    annotator.save()
    assert client.get("/").status_code == 302
    assert UserBackend().get_user(annotator.pk) is None


def test_a_password_change_ends_other_sessions(annotator):
    client = Client()
    client.force_login(annotator)
    annotator.set_password("another-long-password-1")
    annotator.save()
    assert client.get("/").status_code == 302


def test_user_loads_like_the_orm(annotator):
    loaded = UserBackend().get_user(str(annotator.pk))
    assert loaded == annotator and loaded.username == annotator.username
    assert loaded.date_joined == annotator.date_joined and loaded.is_active is True
    assert UserBackend().get_user(10**9) is None


def test_one_statement_loads_the_session_its_user_and_their_groups(annotator, make_user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.post("/login/", {"username": "ann", "password": PASSWORD})
    row = Session.objects.get()
    assert row.user_id == annotator.pk  # the row names its signed-in user
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/label/").status_code == 200  # a page that needs the user's roles
    loads = [q["sql"] for q in queries if re.search(r'FROM "?(auth_user|prefstudio_session)"? ', q["sql"])]
    assert len(loads) == 1 and "JOIN auth_group" in loads[0], loads  # no second query for the user
    client.post("/logout/")
    assert not Session.objects.exists()


def test_a_session_row_naming_another_user_does_not_sign_them_in(annotator, make_user):
    """The session data decides who is signed in; the row's user is only a way to load them early."""
    other = make_user("mallory", "admin")
    client = Client()
    client.force_login(annotator)
    Session.objects.update(user=other)
    response = client.get("/")
    assert response.status_code == 200 and response.wsgi_request.user == annotator


def test_deleting_a_user_ends_their_sessions(annotator):
    client = Client()
    client.force_login(annotator)
    annotator.delete()
    assert not Session.objects.exists()
    assert client.get("/").status_code == 302
