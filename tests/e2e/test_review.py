"""A lead reviews the demo project in Chromium: headline numbers, a disagreement adjudicated with a note,
a pair sent back, an annotator excluded with the table updated in place."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from labeling.models import Adjudication, Membership, Pair, Project
from labeling.review import review_report
from labeling.templatetags.prefstudio_review import number

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
DEMO_PASSWORD = "prefstudio-demo"


@pytest.fixture(autouse=True)
def _quick_passwords(settings):
    """seed_demo hashes ten passwords: a fast hasher keeps the test short (the login still checks it)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def stat(page, label: str):
    """The headline value whose term is `label`."""
    return page.locator("#review-numbers dl.stats > div", has=page.locator("dt", has_text=label)).locator(
        "dd"
    )


def test_a_lead_reviews_adjudicates_sends_back_and_excludes(page, live_server, login, screenshot):
    call_command("seed_demo", "--allow-production", stdout=io.StringIO())
    project = Project.objects.get(slug="demo")
    headline = review_report(project)["headline"]["without_excluded"]

    login("lead", DEMO_PASSWORD)
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}/projects/{project.slug}/review/")
    expect(stat(page, "Judgments")).to_have_text(str(headline["judgments"]))
    expect(stat(page, "Pairs judged")).to_have_text(str(headline["pairs"]))
    expect(stat(page, "Krippendorff's α (nominal)")).to_contain_text(number(headline["alpha"]["value"]))
    expect(page.locator(".flag .badge", has_text="position bias")).to_have_count(1)  # sim-eve
    assert page.locator('svg[aria-label="Pairwise Cohen\'s kappa between annotators"]').count() == 1
    screenshot("review-dashboard")

    # Exclude the biased annotator: the table and the numbers change in place, without a page load.
    page.evaluate("window.notReloaded = true")
    row = page.locator("#annotator-table tbody tr", has_text="sim-eve")
    row.get_by_role("button", name="Exclude").click()
    expect(page.locator("#annotator-table tbody tr", has_text="sim-eve")).to_contain_text("Include again")
    eve = Membership.objects.get(project=project, user__username="sim-eve")
    assert eve.excluded
    without = review_report(project)["headline"]["without_excluded"]
    assert without["judgments"] < headline["judgments"]
    expect(stat(page, "Judgments")).to_have_text(str(without["judgments"]))
    expect(page.locator("#headline")).to_contain_text("1 annotator excluded")
    assert page.evaluate("window.notReloaded") is True

    # The disagreement queue, then the first pair in it.
    page.get_by_role("link", name="Disagreements", exact=True).click()
    expect(page.locator("h1")).to_have_text("Disagreements")
    page.locator("table.list tbody tr").first.locator("a").click()
    expect(page.get_by_role("heading", name="Votes")).to_be_visible()
    pair = Pair.objects.get(pk=int(page.url.rstrip("/").split("/")[-1]))
    assert page.locator("#votes tbody tr").count() == pair.judgments.count()

    page.get_by_label("Response B is better").check()
    page.get_by_label("Note").fill("B answers the question; A does not.")
    page.get_by_role("button", name="Save final label").click()
    expect(page.locator(".messages")).to_contain_text("Final label saved")
    expect(page.locator(".adjudicate")).to_contain_text("Set to B is better by lead")
    adjudication = Adjudication.objects.get(pair=pair)
    assert (adjudication.label, adjudication.note) == ("b", "B answers the question; A does not.")

    wanted = project.overlap + pair.extra_wanted + 1
    page.get_by_role("button", name="Send back for one more judgment").click()
    expect(page.locator(".messages")).to_contain_text(f"the pair now wants {wanted} judgments")
    expect(page.locator(".page-head")).to_contain_text("sent back")
    pair.refresh_from_db()
    assert pair.extra_wanted == 1
