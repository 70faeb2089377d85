"""Every page works under the Content-Security-Policy: an annotator judges with htmx and KaTeX, a lead
reviews and previews an export, an admin previews and runs an import, edits a rubric live and opens
the training pages, and Chromium reports no policy violation anywhere."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from labeling.models import Assignment, Judgment, Pair, Project
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
DEMO_PASSWORD = "prefstudio-demo"
# Gathers the policy violations a page reports (Playwright's init scripts run outside the page's CSP).
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`));
"""
RICH = (
    "Let $x^2 + y^2 = r^2$, so \\(r = \\sqrt{x^2 + y^2}\\).\n\n| left | right |\n|:-----|------:|\n"
    "| 1 | 2 |\n\n```python\nprint('hi')\n```"
)


@pytest.fixture(autouse=True)
def _quick_passwords(settings):
    """seed_demo hashes ten passwords: a fast hasher keeps the test short (the login still checks it)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def watched(page):
    """The page, with every CSP violation it reports (as an event or on the console) collected."""
    console: list[str] = []
    page.add_init_script(WATCH)
    page.on(
        "console",
        lambda m: (
            console.append(m.text) if "Content Security Policy" in m.text or "Refused" in m.text else None
        ),
    )

    def violations() -> list[str]:
        try:
            seen = page.evaluate("window.__violations || []")
        except Exception:  # navigating: the next page's list is checked at its turn
            seen = []
        return seen + console

    return page, violations


def visit(page, violations, url: str) -> None:
    response = page.goto(url)
    assert response is not None and response.status < 400, (url, response and response.status)
    assert "script-src 'self'" in response.headers.get("content-security-policy", ""), url
    page.wait_for_load_state("networkidle")
    assert violations() == [], url


def test_every_page_works_under_the_content_security_policy(watched, live_server, login, make_user, tmp_path):
    page, violations = watched
    call_command("seed_demo", "--allow-production", stdout=io.StringIO())
    project = Project.objects.get(slug="demo")
    project.rubric = (
        "Prefer the **correct** answer. Math: $e^{i\\pi} = -1$.\n\n| a | b |\n|:-:|--:|\n| 1 | 2 |"
    )
    project.save()
    Pair.objects.filter(project=project, pk=Pair.objects.filter(project=project).first().pk).update(
        response_a=RICH, rendered=None
    )
    base = live_server.url

    # An annotator judges two pairs with the keyboard (htmx swaps), with math typeset by KaTeX.
    login("annotator1", DEMO_PASSWORD)
    page.wait_for_url(f"{base}/")
    visit(page, violations, f"{base}/label/")
    visit(page, violations, f"{base}/projects/demo/label/")
    page.wait_for_selector("#judgment-form")
    expect(page.locator(".wb-rubric .katex").first).to_be_visible()
    for key in ("1", "2"):
        before = Judgment.objects.count()
        page.keyboard.press(key)
        page.keyboard.press("Enter")
        page.wait_for_function(
            "n => document.querySelectorAll('#progress dd')[1].textContent.trim() !== n",
            arg=str(Judgment.objects.filter(annotator__username="annotator1").count()),
        )
        assert Judgment.objects.count() == before + 1
    assert violations() == []
    visit(page, violations, f"{base}/projects/demo/recent/")
    mine = Judgment.objects.filter(annotator__username="annotator1").first()
    visit(page, violations, f"{base}/projects/demo/judgments/{mine.pk}/edit/")
    page.get_by_role("button", name="Log out").click()

    # A lead reviews, opens a disagreement, and previews an export (htmx).
    login("lead", DEMO_PASSWORD)
    page.wait_for_url(f"{base}/")
    for url in (
        "/review/",
        "/projects/demo/",
        "/projects/demo/review/",
        "/projects/demo/review/disagreements/",
    ):
        visit(page, violations, f"{base}{url}")
    judged = Pair.objects.filter(project=project, judgments__isnull=False).first()
    visit(page, violations, f"{base}/projects/demo/review/pairs/{judged.pk}/")
    visit(page, violations, f"{base}/projects/demo/export/")
    page.locator("#export-preview").wait_for()
    checkbox = page.locator("form input[type=checkbox]").first
    checkbox.click()
    page.wait_for_load_state("networkidle")
    assert violations() == []
    page.get_by_role("button", name="Log out").click()

    # An admin previews and runs an import, edits a rubric with its live preview, opens training.
    login("admin", DEMO_PASSWORD)
    page.wait_for_url(f"{base}/")
    path = tmp_path / "more.jsonl"
    path.write_text(
        "".join(
            json.dumps({"prompt": f"Q{i} $a$", "response_a": RICH, "response_b": f"B{i}"}) + "\n"
            for i in range(3)
        )
    )
    visit(page, violations, f"{base}/projects/demo/import/")
    page.set_input_files("input[type=file]", str(path))
    page.get_by_role("button", name="Upload and preview").click()
    page.wait_for_selector("text=Preview: the first records")
    assert violations() == []
    page.get_by_role("button", name="Import the whole file").click()
    page.wait_for_selector("text=3 pairs imported")
    assert violations() == []
    visit(page, violations, f"{base}/projects/demo/edit/")
    page.fill("#id_rubric", "Live **preview** with $x$ and\n\n| a |\n|--:|\n| 1 |")
    expect(page.locator("#rubric-preview strong")).to_have_text("preview")
    assert violations() == []
    for url in ("/training/", "/training/runs/new/", "/admin/", "/admin/labeling/project/"):
        visit(page, violations, f"{base}{url}")
    assert Assignment.objects.filter(state="done").exists()


def test_the_policy_blocks_an_inline_script(watched, live_server, login, make_user):
    """The check above would see a violation: an inline script injected into a page is refused."""
    page, violations = watched
    make_user("kim", "annotator")
    login("kim", PASSWORD)
    page.wait_for_url(f"{live_server.url}/")
    page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.ran = 1';"
        " document.body.appendChild(s); }"
    )
    assert page.evaluate("window.ran") is None
    page.wait_for_timeout(100)
    assert any("script-src" in v for v in violations())
