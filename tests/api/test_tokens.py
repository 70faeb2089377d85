"""API tokens: made once and stored as a digest, refused when revoked, expired or of an inactive user; the
tokens page (own tokens only), `manage.py api_token`, the per-token throttle, and the interactive docs
under the Content-Security-Policy.

The API here is a small one built the way api/v1.py builds the real one (TokenAuth, THROTTLES, DOCS),
mounted at /api/test/ by this module's URLconf, so these tests need no endpoint of the real API.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.sessions.models import Session
from django.contrib.staticfiles import finders
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import path
from django.utils import timezone
from ninja import NinjaAPI
from playwright.sync_api import expect

import prefstudio.urls
from api.auth import TokenAuth
from api.docs import DOCS
from api.models import ApiToken
from api.throttle import THROTTLES, parse_rate
from api.tokens import LAST_USED_EVERY, authenticate, create_token, revoke, valid_token
from labeling.access import project_for, projects_for
from labeling.models import Membership
from tests.conftest import PASSWORD
from tests.e2e.conftest import CHROMIUM, browser_type_launch_args  # noqa: F401 (the fixture runs Debian's Chromium)

TOKEN = re.compile(r"ps_[A-Za-z0-9]{8}_[A-Za-z0-9]{43}")

api = NinjaAPI(
    title="prefstudio test API",
    urls_namespace="api-test-tokens",
    auth=TokenAuth(),
    throttle=THROTTLES,
    docs=DOCS,
    docs_url="/docs",
    docs_decorator=prefstudio.roles.requires(),
)


@api.get("/me")
def me(request):
    user, token = request.user, request.api_token
    return {"username": user.username, "auth": request.auth.username, "prefix": token.prefix}


@api.get("/projects")
def projects(request):
    """What the user may open in the UI, through the same permission functions the pages use."""
    return sorted(projects_for(request.user).values_list("slug", flat=True))


@api.get("/projects/{slug}")
def project(request, slug: str):
    return {"slug": project_for(request.user, slug).slug}


urlpatterns = [path("api/test/", api.urls), *prefstudio.urls.urlpatterns]
pytestmark = [pytest.mark.urls(__name__)]


def bearer(raw: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def database_text() -> str:
    """Every row of every table as text, and every session decoded."""
    out = io.StringIO()
    call_command("dumpdata", exclude=["django_rq"], stdout=out)  # its one model has no table
    return out.getvalue() + "".join(str(s.get_decoded()) for s in Session.objects.all())


# Tokens


@pytest.mark.django_db
def test_a_token_page_shows_the_token_once_and_the_database_keeps_only_its_digest(make_user, client):
    ann = make_user("ann")
    client.force_login(ann)
    response = client.post("/account/api-tokens/", {"name": "nightly export", "expires_days": "30"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    raw = TOKEN.search(response.content.decode()).group()
    token = ApiToken.objects.get(user=ann)
    assert token.name == "nightly export" and raw.startswith(f"ps_{token.prefix}_")
    assert token.digest == hashlib.sha256(raw.encode()).hexdigest()
    assert token.expires_at - timezone.now() > timedelta(days=29)
    assert all(raw not in c.value for c in response.cookies.values())
    secret = raw.rsplit("_", 1)[1]
    assert secret not in database_text()

    page = client.get("/account/api-tokens/").content.decode()
    assert "nightly export" in page and f"ps_{token.prefix}_" in page
    assert secret not in page
    assert authenticate(raw) == ann


def test_tokens_are_long_random_and_distinct(db, make_user):
    user = make_user("ann")
    made = [create_token(user, name=f"t{i}")[0] for i in range(20)]
    assert all(TOKEN.fullmatch(raw) for raw in made)
    assert len(set(made)) == 20 and len({raw[3:11] for raw in made}) == 20


@pytest.mark.django_db
def test_authenticate_refuses_revoked_expired_inactive_and_forged_tokens(make_user):
    ann = make_user("ann")
    raw, token = create_token(ann, name="t")
    assert authenticate(raw) == ann
    for forged in (raw[:-1] + ("a" if raw[-1] != "a" else "b"), raw + "x", raw[:-1], "", "ps__", raw.upper(),
                   "xx" + raw[2:], f"ps_{token.prefix}_" + "a" * 43):  # fmt: skip
        assert authenticate(forged) is None, forged

    expiring, short = create_token(ann, name="short", expires_days=1)
    assert authenticate(expiring) == ann
    ApiToken.objects.filter(pk=short.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert authenticate(expiring) is None

    revoke(token)
    first = ApiToken.objects.get(pk=token.pk).revoked_at
    assert first is not None and authenticate(raw) is None
    revoke(ApiToken.objects.get(pk=token.pk))
    assert ApiToken.objects.get(pk=token.pk).revoked_at == first

    other, _ = create_token(ann, name="other")
    ann.is_active = False
    ann.save()
    assert authenticate(other) is None


@pytest.mark.django_db
def test_last_used_is_written_at_most_once_a_minute(make_user, django_assert_num_queries):
    raw, token = create_token(make_user("ann"), name="t")
    start = timezone.now()
    with django_assert_num_queries(2):  # the lookup, and the first use
        valid_token(raw, now=start)
    with django_assert_num_queries(1):  # the lookup only
        valid_token(raw, now=start + LAST_USED_EVERY - timedelta(seconds=1))
    assert ApiToken.objects.get(pk=token.pk).last_used_at == start
    later = start + LAST_USED_EVERY
    valid_token(raw, now=later)
    assert ApiToken.objects.get(pk=token.pk).last_used_at == later


# The API acts as the token's user


@pytest.mark.django_db
def test_a_token_does_what_its_user_may_do_in_the_ui_and_nothing_more(
    project, other_project, annotator, admin_user, client
):
    raw, _ = create_token(annotator, name="t")
    response = client.get("/api/test/me", **bearer(raw))
    assert response.status_code == 200
    assert response.json() == {"username": "ann", "auth": "ann", "prefix": raw[3:11]}
    assert client.get("/api/test/projects", **bearer(raw)).json() == ["alpha"]
    assert client.get("/api/test/projects/alpha", **bearer(raw)).status_code == 200
    assert client.get("/api/test/projects/bravo", **bearer(raw)).status_code == 404

    Membership.objects.filter(user=annotator).update(active=False)
    Membership.objects.get(user=annotator).save()  # drops the cached membership, as the admin does
    assert client.get("/api/test/projects/alpha", **bearer(raw)).status_code == 404

    admin_raw, _ = create_token(admin_user, name="t")
    assert client.get("/api/test/projects", **bearer(admin_raw)).json() == ["alpha", "bravo"]


@pytest.mark.django_db
def test_the_api_refuses_sessions_and_bad_tokens(annotator, client):
    raw, token = create_token(annotator, name="t")
    client.force_login(annotator)
    assert client.get("/api/test/me").status_code == 401
    assert client.get("/api/test/me", HTTP_AUTHORIZATION=f"Token {raw}").status_code == 401
    assert client.get("/api/test/me", **bearer(raw[:-1] + "#")).status_code == 401
    revoke(token)
    assert client.get("/api/test/me", **bearer(raw)).status_code == 401


# The tokens page


@pytest.mark.django_db
def test_the_page_lists_only_my_tokens_and_revokes_only_mine(make_user, client):
    ann, bob = make_user("ann"), make_user("bob")
    _, mine = create_token(ann, name="ann's script")
    bob_raw, bobs = create_token(bob, name="bob's script")
    client.force_login(ann)
    page = client.get("/account/api-tokens/").content.decode()
    assert "ann&#x27;s script" in page and mine.prefix in page
    assert "bob" not in page and bobs.prefix not in page

    assert client.post(f"/account/api-tokens/{bobs.pk}/revoke/").status_code == 404
    assert ApiToken.objects.get(pk=bobs.pk).revoked_at is None and authenticate(bob_raw) == bob
    assert client.get(f"/account/api-tokens/{mine.pk}/revoke/").status_code == 405

    response = client.post(f"/account/api-tokens/{mine.pk}/revoke/", follow=True)
    assert response.redirect_chain == [("/account/api-tokens/", 302)]
    assert ApiToken.objects.get(pk=mine.pk).revoked_at is not None
    assert "revoked" in response.content.decode()


@pytest.mark.django_db
def test_the_page_needs_a_login_and_the_csrf_token(make_user):
    ann = make_user("ann")
    _, token = create_token(ann, name="t")
    anonymous = Client()
    assert anonymous.get("/account/api-tokens/")["Location"] == "/login/?next=/account/api-tokens/"
    assert anonymous.post(f"/account/api-tokens/{token.pk}/revoke/").status_code == 302
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(ann)
    assert strict.post("/account/api-tokens/", {"name": "x"}).status_code == 403
    assert strict.post(f"/account/api-tokens/{token.pk}/revoke/").status_code == 403
    assert ApiToken.objects.filter(user=ann).count() == 1
    assert ApiToken.objects.get().revoked_at is None


@pytest.mark.django_db
def test_a_bad_form_makes_no_token(make_user, client):
    client.force_login(make_user("ann"))
    for data in ({}, {"name": ""}, {"name": "x", "expires_days": "0"}, {"name": "x" * 101}):
        response = client.post("/account/api-tokens/", data)
        assert response.status_code == 400, data
        assert not TOKEN.search(response.content.decode())
    assert not ApiToken.objects.exists()


@pytest.mark.django_db
def test_the_admin_shows_tokens_but_never_their_digest(make_user, client):
    root = make_user("root", is_staff=True, is_superuser=True)
    _, token = create_token(make_user("ann"), name="t")
    client.force_login(root)
    response = client.get(f"/admin/api/apitoken/{token.pk}/change/")
    assert response.status_code == 200 and token.prefix in response.content.decode()
    assert token.digest not in response.content.decode()
    assert token.digest not in client.get("/admin/api/apitoken/").content.decode()
    assert client.get("/admin/api/apitoken/add/").status_code == 403
    client.post("/admin/api/apitoken/", {"action": "revoke_tokens", "_selected_action": [token.pk]})
    assert ApiToken.objects.get().revoked_at is not None


# The command


@pytest.mark.django_db
def test_the_command_prints_only_a_working_token(make_user, client):
    ann = make_user("ann")
    out = io.StringIO()
    call_command("api_token", "ann", "--name", "ci", "--expires-days", "7", stdout=out)
    raw = out.getvalue().strip()
    assert TOKEN.fullmatch(raw)
    assert client.get("/api/test/me", **bearer(raw)).json()["username"] == "ann"
    token = ApiToken.objects.get(user=ann)
    assert token.name == "ci" and timedelta(days=6) < token.expires_at - timezone.now() <= timedelta(days=7)

    with pytest.raises(CommandError, match="No user"):
        call_command("api_token", "nobody-here")
    ann.is_active = False
    ann.save()
    with pytest.raises(CommandError, match="inactive"):
        call_command("api_token", "ann")


# Throttling


def test_rates_parse():
    assert parse_rate("600/min") == (600, 60)
    assert parse_rate("10/s") == (10, 1)
    assert parse_rate("100/5min") == (100, 300)
    assert parse_rate("1000/day") == (1000, 86400)
    for bad in ("600", "x/min", "10/fortnight", "/min"):
        with pytest.raises(ValueError):
            parse_rate(bad)


@pytest.mark.django_db
def test_each_token_gets_429_with_retry_after_past_its_rate(make_user, client, settings):
    settings.PREFSTUDIO_API_RATE = "3/min"
    ann = make_user("ann")
    raw, _ = create_token(ann, name="a")
    other, _ = create_token(ann, name="b")
    assert [client.get("/api/test/me", **bearer(raw)).status_code for _ in range(3)] == [200] * 3
    refused = client.get("/api/test/me", **bearer(raw))
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert client.get("/api/test/me", **bearer(other)).status_code == 200
    assert client.get("/api/test/me", **bearer(raw + "x")).status_code == 401


@pytest.mark.django_db
def test_without_redis_the_api_serves_unthrottled(make_user, client, settings):
    settings.PREFSTUDIO_API_RATE = "1/min"
    settings.CACHES = {
        **settings.CACHES,
        "shared": {**settings.CACHES["shared"], "LOCATION": "redis://127.0.0.1:1/0"},
    }
    raw, _ = create_token(make_user("ann"), name="t")
    assert [client.get("/api/test/me", **bearer(raw)).status_code for _ in range(3)] == [200] * 3


# The interactive docs


def test_the_docs_assets_are_served_from_our_own_static_files():
    """django-ninja's Swagger UI files reach staticfiles only with "ninja" in INSTALLED_APPS."""
    for name in ("ninja/swagger-ui.css", "ninja/swagger-ui-bundle.js", "ninja/swagger-ui-init.js"):
        assert finders.find(name), f"{name} not found: add 'ninja' to INSTALLED_APPS"


@pytest.mark.django_db
def test_the_docs_page_loads_nothing_from_elsewhere_and_has_no_inline_script(make_user, client):
    assert client.get("/api/test/docs")["Location"] == "/login/?next=/api/test/docs"
    client.force_login(make_user("ann"))
    response = client.get("/api/test/docs")
    assert response.status_code == 200
    body = response.content.decode()
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert "http" not in body.lower().replace("http-equiv", "")
    scripts = re.findall(r"<script([^>]*)>", body)
    assert all("src=" in attrs or 'type="application/json"' in attrs for attrs in scripts)
    assert "<style" not in body and "style=" not in body
    assert client.get("/api/test/openapi.json").json()["components"]["securitySchemes"]["TokenAuth"] == {
        "type": "http",
        "scheme": "bearer",
    }


# Gathers the policy violations a page reports (Playwright's init scripts run outside the page's CSP).
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`));
"""


@pytest.mark.browser
@pytest.mark.skipif(not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)), reason=f"{CHROMIUM} not found")
@pytest.mark.django_db(transaction=True)
def test_in_chromium_a_token_made_on_the_page_works_from_the_docs_under_the_csp(page, live_server, make_user):
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if "Content Security Policy" in m.text else None)
    page.add_init_script(WATCH)
    make_user("kim")
    page.goto(f"{live_server.url}/account/api-tokens/")
    page.fill("#id_username", "kim")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/account/api-tokens/")
    page.fill("#id_name", "docs")
    page.get_by_role("button", name="Make a token").click()
    raw = page.locator("#new-token-value").input_value()
    assert TOKEN.fullmatch(raw)
    expect(page.get_by_role("button", name="Copy")).to_be_visible()  # tokens.js ran
    assert page.evaluate("window.__violations") == []

    response = page.goto(f"{live_server.url}/api/test/docs")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(page.locator(".opblock")).to_have_count(3)
    page.locator(".btn.authorize").first.click()
    page.locator(".auth-container input").fill(raw)
    page.locator(".auth-btn-wrapper .authorize").click()
    page.locator(".btn-done").click()
    page.locator(".opblock-summary", has_text="/api/test/me").click()
    page.locator(".try-out__btn").click()
    page.locator(".execute").click()
    answer = page.locator(".live-responses-table tbody tr").first
    expect(answer.locator(".response-col_status")).to_have_text("200")
    expect(answer.locator(".response-col_description")).to_contain_text('"kim"')
    page.wait_for_load_state("networkidle")
    assert page.evaluate("window.__violations") == [] and console == []
