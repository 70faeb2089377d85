"""Getting a team in, in Chromium: the new-project form fills the slug from the name (and works without
JavaScript), and an invitation link made by a lead brings a new annotator into the project, while
used, revoked and expired links are refused with a reason. No page reports a CSP violation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from playwright.sync_api import expect

from labeling.models import Invitation, Membership, Pair, Project
from tests.conftest import PASSWORD
from tests.e2e.conftest import SCREENSHOTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
NEW_PASSWORD = "violet-lantern-harbour-42"
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(e.violatedDirective));
"""


def no_violations(page) -> None:
    assert page.evaluate("window.__violations") == [], page.url


def log_in(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def test_the_slug_follows_the_name_until_it_is_edited(page, browser, live_server, make_user):
    make_user("boss", "admin", is_staff=True)
    base = live_server.url
    page.add_init_script(WATCH)
    log_in(page, base, "boss", PASSWORD)
    page.goto(f"{base}/projects/new/")
    slug = page.locator("#id_slug")
    page.locator("#id_name").press_sequentially("Code review — Round 2!")
    expect(slug).to_have_value("code-review-round-2")
    slug.fill("cr")
    page.locator("#id_name").fill("Code review — Round 2! more")
    expect(slug).to_have_value("cr")  # edited by hand: left alone
    slug.fill("")
    page.locator("#id_name").fill("Code review — Round 2! mores")
    expect(slug).to_have_value("code-review-round-2-mores")  # emptied: it follows the name again
    slug.fill("cr-2")
    page.get_by_role("button", name="Create project").click()
    page.wait_for_url(f"{base}/projects/cr-2/")
    assert Project.objects.get(slug="cr-2").name == "Code review — Round 2! mores"
    no_violations(page)

    # Without JavaScript the field stays empty and the server makes the slug from the name.
    context = browser.new_context(java_script_enabled=False)
    plain = context.new_page()
    log_in(plain, base, "boss", PASSWORD)
    plain.goto(f"{base}/projects/new/")
    plain.fill("#id_name", "Quiet Start")
    expect(plain.locator("#id_slug")).to_have_value("")
    plain.get_by_role("button", name="Create project").click()
    plain.wait_for_url(f"{base}/projects/quiet-start/")
    context.close()


def test_an_invitation_brings_a_new_annotator_in_and_dead_links_are_refused(
    page, browser, live_server, make_user, screenshot, project
):
    lead = make_user("leah", "lead")
    Membership.objects.create(project=project, user=lead, role=Membership.Role.LEAD)
    batch = project.batches.create(source_name="p.jsonl", state="done")
    for i in range(3):
        Pair.objects.create(project=project, batch=batch, prompt=f"Q{i}", response_a="a", response_b="b",
                            shape="pair", content_hash=f"{i:064d}")  # fmt: skip
    base = live_server.url
    page.add_init_script(WATCH)

    # The lead makes two single-use links: one to send, one to revoke.
    log_in(page, base, "leah", PASSWORD)
    page.goto(f"{base}{project.get_absolute_url()}")
    for _ in range(2):
        page.get_by_role("button", name="Make an invitation link").click()
        expect(page.locator(".msg.success")).to_contain_text("Invitation made")
    links = page.locator("input.invitation-link")
    expect(links).to_have_count(2)
    sent, to_revoke = links.nth(1).input_value(), links.nth(0).input_value()
    screenshot("invitations-lead")
    page.locator("tr.invitation-active").first.get_by_role("button", name="Revoke").click()
    expect(page.locator(".msg.success")).to_contain_text("Invitation revoked")
    no_violations(page)

    # A newcomer opens the link, makes an account, and lands in the project as an annotator.
    newcomer = browser.new_context().new_page()
    newcomer.add_init_script(WATCH)
    newcomer.goto(sent)
    expect(newcomer.locator("h1")).to_have_text("Join Alpha")
    newcomer.fill("#id_username", "newcomer")
    newcomer.fill("#id_password1", "password")
    newcomer.fill("#id_password2", "password")
    newcomer.get_by_role("button", name="Create my account and join").click()
    expect(newcomer.locator(".field-error").first).to_contain_text("too common")
    newcomer.fill("#id_password1", NEW_PASSWORD)
    newcomer.fill("#id_password2", NEW_PASSWORD)
    newcomer.get_by_role("button", name="Create my account and join").click()
    newcomer.wait_for_url(f"{base}{project.get_absolute_url()}")
    expect(newcomer.locator("main")).to_contain_text("You are an annotator here.")
    expect(newcomer.locator("#own-progress")).to_contain_text("Left for you")
    expect(newcomer.get_by_role("link", name="Start labeling")).to_be_visible()
    shoot(newcomer, "invitation-landed")
    no_violations(newcomer)
    newcomer.get_by_role("link", name="Start labeling").click()
    newcomer.wait_for_url(f"{base}{project.get_absolute_url()}label/")
    newcomer.get_by_role("link", name="Password").click()
    expect(newcomer.locator("h1")).to_have_text("Change your password")
    user = get_user_model().objects.get(username="newcomer")
    assert Membership.objects.get(user=user).role == "annotator"

    # The same link again, the revoked one, and an expired one: each refused with its reason.
    stranger = browser.new_context().new_page()
    stranger.goto(sent)
    expect(stranger.locator("[role=alert]")).to_contain_text("was already used once")
    stranger.goto(to_revoke)
    expect(stranger.locator("[role=alert]")).to_contain_text("was revoked")
    page.get_by_role("button", name="Make an invitation link").click()
    expired = page.locator("tr.invitation-active input.invitation-link").first.input_value()
    Invitation.objects.filter(revoked_at=None, uses=0).update(expires_at=timezone.now() - timedelta(hours=1))
    stranger.goto(expired)
    expect(stranger.locator("[role=alert]")).to_contain_text("expired on")
    shoot(stranger, "invitation-expired")
    assert get_user_model().objects.filter(is_superuser=False).count() == 2  # the lead and the newcomer


def shoot(other, name: str) -> None:
    """The screenshot fixture shoots the default page; this shoots another context's."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    other.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
