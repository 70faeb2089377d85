"""Defences a deployed app is expected to have: a Content-Security-Policy and a Permissions-Policy on
every page, bodies over the upload limit refused unread, and login throttling per account and per
address with a clear message and an unlock path for admins."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.test import Client

from labeling.models import ImportBatch
from tests.conftest import PASSWORD

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


@pytest.mark.django_db
def test_every_page_carries_a_strict_content_security_policy(client, annotator):
    client.force_login(annotator)
    for url in ("/", "/login/", "/label/", "/no-such-page/"):
        policy = client.get(url)["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
        assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'", url
        assert directives["default-src"] == "'self'" and directives["object-src"] == "'none'"
        assert directives["frame-ancestors"] == "'none'" and directives["base-uri"] == "'self'"
        assert "unsafe" not in policy


@pytest.mark.django_db
def test_every_response_carries_a_permissions_policy(client):
    policy = client.get("/login/")["Permissions-Policy"]
    assert "camera=()" in policy and "geolocation=()" in policy and "microphone=()" in policy


def test_templates_have_no_inline_script_or_style():
    """A CSP without 'unsafe-inline' would block them: scripts come from static/, styles from CSS."""
    found = []
    for path in TEMPLATES.rglob("*.html"):
        text = path.read_text()
        found += [f"{path.name}: inline <script>" for m in re.finditer(r"<script(?![^>]*\bsrc=)[^>]*>", text)
                  if "application/json" not in m.group(0)]  # fmt: skip
        found += [f"{path.name}: style attribute" for _ in re.finditer(r"\sstyle=", text)]
        found += [f"{path.name}: <style> element" for _ in re.finditer(r"<style\b", text)]
        found += [f"{path.name}: inline handler" for _ in re.finditer(r"\son[a-z]+=|hx-on", text)]
    assert found == []


@pytest.mark.django_db
def test_a_body_over_the_upload_limit_is_refused_before_it_is_read(admin_user, project, settings):
    settings.PREFSTUDIO_MAX_UPLOAD_BYTES = 1000
    client = Client()
    client.force_login(admin_user)
    response = client.generic(
        "POST",
        f"/projects/{project.slug}/import/",
        b"",  # nothing is sent: the declared length alone decides
        content_type="multipart/form-data; boundary=x",
        CONTENT_LENGTH=str(50 * 1024 * 1024),
    )
    assert response.status_code == 413
    assert "uploads are limited to 1000" in response.content.decode()
    assert not ImportBatch.objects.exists()


@pytest.fixture
def throttled(settings):
    settings.AXES_FAILURE_LIMIT = 3


def log_in(username: str, password: str, address: str = "10.0.0.1"):
    return Client(REMOTE_ADDR=address).post("/login/", {"username": username, "password": password})


@pytest.mark.django_db
def test_an_account_is_locked_after_repeated_failures_then_unlocked_by_an_admin(throttled, annotator):
    for address in ("10.0.0.1", "10.0.0.2"):  # spread over addresses: still one account
        assert log_in("ann", "wrong", address).status_code == 200
    assert log_in("ann", "wrong", "10.0.0.3").status_code == 429  # the third failure locks it
    locked = log_in("ann", PASSWORD, "10.0.0.4")
    assert locked.status_code == 429
    body = locked.content.decode()
    assert "Too many failed logins" in body and "after 3 failed attempts" in body
    assert "axes_reset_username" in body
    call_command("axes_reset_username", "ann", verbosity=0)
    assert log_in("ann", PASSWORD, "10.0.0.4").status_code == 302


@pytest.mark.django_db
def test_an_address_is_locked_after_failures_on_many_accounts(throttled, annotator):
    for username in ("alice", "bob", "carol"):
        log_in(username, "guess", "10.9.9.9")
    assert log_in("ann", PASSWORD, "10.9.9.9").status_code == 429
    assert log_in("ann", PASSWORD, "10.1.1.1").status_code == 302  # the account itself is fine
    call_command("axes_reset_ip", "10.9.9.9", verbosity=0)
    assert log_in("ann", PASSWORD, "10.9.9.9").status_code == 302


@pytest.mark.django_db
def test_admins_clear_lockouts_in_the_admin_site_without_a_lead(throttled, annotator, admin_user):
    for _ in range(3):
        log_in("ann", "wrong")
    assert log_in("ann", PASSWORD).status_code == 429
    admin = Client()
    admin.force_login(admin_user)  # the admin role (staff, not a superuser)
    page = admin.get("/admin/axes/accessattempt/")
    assert page.status_code == 200 and "ann" in page.content.decode()
    ids = [str(pk) for pk in AccessAttempt.objects.values_list("pk", flat=True)]
    admin.post(
        "/admin/axes/accessattempt/",
        {"action": "delete_selected", "_selected_action": ids, "post": "yes"},
    )
    assert log_in("ann", PASSWORD).status_code == 302
