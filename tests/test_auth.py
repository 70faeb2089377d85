"""Login, logout, and where `next` may send a user."""

from __future__ import annotations

import pytest
from django.test import Client

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
