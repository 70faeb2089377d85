"""A lead reviews the demo project in Chromium: headline numbers, a disagreement adjudicated with a note,
a pair sent back, an annotator excluded with the table updated in place."""

from __future__ import annotations

import io
import random

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from labeling.models import Adjudication, Membership, Pair, Project
from labeling.review import review_report
from labeling.templatetags.prefstudio_review import number
from tests.conftest import PASSWORD
from tests.e2e.conftest import SCREENSHOTS
from tests.labeling.boards import build_pairs, raters, vote

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

    # A judgment made since: within the refresh interval the page keeps its numbers and says so; the
    # Refresh button recomputes them in place.
    judge = Membership.objects.get(project=project, user__username="sim-ana").user
    vote(Pair.objects.filter(project=project).exclude(judgments__annotator=judge).first(), judge, "a")
    page.reload()
    expect(page.locator("#as-of")).to_contain_text("1 newer judgment since")
    expect(stat(page, "Judgments")).to_have_text(str(without["judgments"]))
    page.evaluate("window.notReloaded = true")
    page.locator("#as-of").get_by_role("button", name="Refresh").click()
    expect(stat(page, "Judgments")).to_have_text(str(without["judgments"] + 1))
    expect(page.locator("#as-of")).not_to_contain_text("newer")
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


def test_the_kappa_heatmap_of_30_annotators_is_readable(
    page, live_server, login, make_user, lead, screenshot
):
    """Thirty annotators on the same pairs: the heatmap takes the whole row and keeps its drawn size, so
    its cells and numbers stay as large as drawn inside the page; the undefined cells say why."""
    project = Project.objects.get(slug="alpha")
    rng = random.Random(3)
    users = raters(make_user, project, 30)
    truth = [rng.choice("ab") for _ in range(8)]
    layout = [
        (f"Q{i}", "", {j: truth[i] if rng.random() < 0.75 else rng.choice("ab") for j in range(30)})
        for i in range(8)
    ]
    # a28 and a29 judged only five other pairs, alike, choosing A each time: no variation between them.
    for _, _, votes in layout:
        del votes[28], votes[29]
    layout += [(f"R{i}", "", {28: "a", 29: "a"}) for i in range(5)]
    build_pairs(project, layout, users)

    login("leah", PASSWORD)
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}/projects/{project.slug}/review/")
    heatmap = page.locator('svg[aria-label="Pairwise Cohen\'s kappa between annotators"]')
    expect(heatmap).to_be_visible()
    drawn = float(heatmap.get_attribute("width"))
    box = heatmap.bounding_box()
    content = page.locator("main.page").bounding_box()
    assert box["width"] == pytest.approx(drawn, abs=0.5)  # not shrunk into half a row
    assert box["x"] >= content["x"] and box["x"] + box["width"] <= content["x"] + content["width"]
    cell = heatmap.locator("rect").first.bounding_box()
    assert cell["width"] >= 26 and cell["height"] >= 26
    number = heatmap.locator("text.cell-value").nth(1)  # a0 x a1
    assert page.evaluate("e => parseFloat(getComputedStyle(e).fontSize)", number.element_handle()) >= 10
    assert heatmap.locator("text.axis-label", has_text="a29").count() == 2
    expect(heatmap.locator("g", has_text="n/v").first.locator("title")).to_have_text(
        "a28 × a29: undefined: no variation (both chose one label on all 5 shared pairs)"
    )
    screenshot("review-kappa-30-annotators")
    heatmap.screenshot(path=SCREENSHOTS / "review-kappa-30-annotators-heatmap.png")  # a close-up


def test_the_rubric_preview_typesets_math_as_the_workbench_does(
    page, live_server, login, make_user, admin_user, annotator, screenshot
):
    project = Project.objects.get(slug="alpha")
    login("root", PASSWORD)
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}/projects/{project.slug}/edit/")
    expect(page.locator("#rubric-preview strong")).to_have_text("correct")  # the saved rubric
    rubric = (
        "Prefer the **correct** answer: $e^{i\\pi} = -1$.\n\n$$\\int_0^1 x\\,dx = \\tfrac12$$\n\n"
        "| a | b |\n|:-:|--:|\n| 1 | 2 |"
    )
    page.fill("#id_rubric", rubric)
    expect(page.locator("#rubric-preview .math-inline .katex")).to_be_visible()
    expect(page.locator("#rubric-preview .math-display .katex-display")).to_be_visible()
    assert page.locator('#rubric-preview [data-typeset="failed"]').count() == 0
    preview = page.locator("#rubric-preview").inner_html()
    preview_style = page.evaluate(
        "e => [getComputedStyle(e).fontSize, getComputedStyle(e).borderTopWidth]",
        page.locator("#rubric-preview").element_handle(),
    )
    page.locator("#rubric-preview").scroll_into_view_if_needed()
    screenshot("project-rubric-preview")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".messages")).to_contain_text("Project saved")
    page.get_by_role("button", name="Log out").click()

    login("ann", PASSWORD)
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}/projects/{project.slug}/label/")
    shown = page.locator(".wb-rubric .rendered")
    expect(shown.locator(".math-inline .katex")).to_be_visible()
    assert shown.inner_html() == preview  # the same markup, typeset the same way
    assert (
        page.evaluate(
            "e => [getComputedStyle(e).fontSize, getComputedStyle(e).borderTopWidth]", shown.element_handle()
        )
        == preview_style
    )
