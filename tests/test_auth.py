"""Login, logout, and where `next` may send a user."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from tests.conftest import PASSWORD


@pytest.mark.django_db
def test_login_page_renders_and_logs_in(annotator, client):
    assert client.get("/login/").status_code == 200
    response = client.post("/login/", {"username": "ann", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200


@pytest.mark.django_db
def test_wrong_password_says_so(annotator, client):
    response = client.post("/login/", {"username": "ann", "password": "nope"})
    assert response.status_code == 200
    assert b"didn&#x27;t match" in response.content or b"didn't match" in response.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    "target",
    ["//evil.com", "https://evil.com/", "http://evil.com", "///evil.com", "/\\evil.com", "\\\\evil.com",
     "javascript:alert(1)", "https:evil.com"],
)  # fmt: skip
def test_next_never_leaves_the_site(annotator, client, target):
    response = client.post(
        f"/login/?next={target}", {"username": "ann", "password": PASSWORD, "next": target}
    )
    assert response.status_code == 302
    assert response["Location"] == "/", target


@pytest.mark.django_db
def test_next_inside_the_site_is_honoured(annotator, client):
    response = client.post("/login/", {"username": "ann", "password": PASSWORD, "next": "/label/"})
    assert response["Location"] == "/label/"


@pytest.mark.django_db
def test_next_is_escaped_on_the_login_page(client):
    payload = '"><script>alert(1)</script>'
    body = client.get("/login/", {"next": payload}).content.decode()
    assert "<script>alert(1)</script>" not in body
    assert "&quot;&gt;&lt;script&gt;" in body


@pytest.mark.django_db
def test_logout_needs_post_and_csrf(annotator):
    client = Client(enforce_csrf_checks=True)
    client.force_login(annotator)
    assert client.post("/logout/").status_code == 403
    assert client.get("/").status_code == 200
    token = client.get("/").context["csrf_token"]
    assert client.post("/logout/", {"csrfmiddlewaretoken": str(token)}).status_code == 302
    assert client.get("/").status_code == 302


@pytest.mark.django_db
def test_login_form_needs_csrf(annotator):
    client = Client(enforce_csrf_checks=True)
    assert client.post("/login/", {"username": "ann", "password": PASSWORD}).status_code == 403


@pytest.mark.django_db
def test_htmx_requests_carry_the_csrf_header(annotator, client):
    client.force_login(annotator)
    body = client.get("/").content.decode()
    assert 'hx-headers=\'{"x-csrftoken": "' in body
    assert 'src="/static/django-htmx/' in body or "htmx" in body


# Django's sessions (cached_db on Redis) and ModelBackend: what signing in and out must guarantee.


@pytest.mark.django_db
def test_a_session_ends_at_logout_even_for_a_copied_cookie(annotator):
    client = Client()
    client.force_login(annotator)
    copied = Client()
    copied.cookies = client.cookies.__class__(client.cookies)
    assert copied.get("/").status_code == 200
    client.post("/logout/")
    assert copied.get("/").status_code == 302  # to login: the session is gone from cache and database


@pytest.mark.django_db
def test_an_expired_session_is_anonymous(annotator):
    from django.contrib.sessions.models import Session

    client = Client()
    client.force_login(annotator)
    store = client.session  # saved past its time: the cache drops it, the database row is stale
    store.set_expiry(-1)
    store.save()
    assert Session.objects.filter(expire_date__gt=timezone.now()).count() == 0
    assert client.get("/").status_code == 302


@pytest.mark.django_db
def test_a_tampered_session_key_is_anonymous(annotator, settings):
    client = Client()
    client.force_login(annotator)
    client.cookies[settings.SESSION_COOKIE_NAME] = "x" * 32
    assert client.get("/").status_code == 302


def _deactivate(user) -> None:
    user.is_active = False
    user.save()


def _change_password(user) -> None:
    user.set_password("another-long-password-1")
    user.save()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change",
    [_deactivate, _change_password, lambda user: user.delete()],
    ids=["deactivated", "password", "deleted"],
)
def test_a_change_to_the_user_ends_their_other_sessions(annotator, change):
    client = Client()
    client.force_login(annotator)
    change(annotator)
    assert client.get("/").status_code == 302


@pytest.mark.django_db
def test_a_signed_in_request_reads_the_session_from_the_cache(annotator):
    """cached_db: the session row is read only when the cache lost it; the user is one query."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.post("/login/", {"username": "ann", "password": PASSWORD})
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/label/").status_code == 200
    assert not [q for q in queries if "django_session" in q["sql"]]
    assert len([q for q in queries if 'FROM "auth_user"' in q["sql"]]) == 1
