"""An annotator works through a project in Chromium with the keyboard; hostile content stays inert."""

from __future__ import annotations

import io
import json
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect

from labeling.batches import import_stream
from labeling.models import Assignment, ImportBatch, Judgment, Membership, Pair, Project
from tests.conftest import PASSWORD
from tests.e2e.conftest import SCREENSHOTS
from tests.labeling.xss import PAYLOADS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
FORMATS = Path(__file__).resolve().parents[1] / "labeling" / "formats"


def setup_project(make_user, prompts_and_answers) -> Project:
    project = Project.objects.create(
        slug="kb", name="Keyboard project", overlap=1, rubric="Prefer the **correct** answer.",
        criteria=[{"name": "Tone", "question": "Which is kinder?"}],
    )  # fmt: skip
    batch = ImportBatch.objects.create(project=project, source_name="x.jsonl", state="done")
    for i, (prompt, a, b) in enumerate(prompts_and_answers):
        Pair.objects.create(
            project=project, batch=batch, prompt=prompt, response_a=a, response_b=b, shape="pair",
            content_hash=f"{i:064d}", model_a="hidden-model-x",
        )  # fmt: skip
    user = make_user("kim", "annotator")
    Membership.objects.create(project=project, user=user)
    return project


def progress(page) -> tuple[str, str, str]:
    values = page.locator("#progress dd").all_inner_texts()
    return tuple(values)


def test_keyboard_only_judging_skip_change_and_all_done(page, live_server, login, make_user, screenshot):
    pairs = [
        ("How do I reverse a list in Python?", "Use `items[::-1]` or `items.reverse()`.", "You can't."),
        ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
         "Paris.", "Lyon."),
        ("Explain recursion", "A function calling itself, with a base case.", "See recursion."),
        ("Best way to learn SQL?", "Practice with real queries.", "```sql\nSELECT * FROM lessons;\n```"),
    ]  # fmt: skip
    project = setup_project(make_user, pairs)
    login("kim", PASSWORD)
    page.goto(f"{live_server.url}/projects/{project.slug}/label/")
    page.wait_for_selector("#judgment-form")
    assert "hidden-model-x" not in page.content()
    assert progress(page) == ("0", "0", "4")
    screenshot("workbench")

    page.keyboard.press("?")
    assert page.locator("#shortcuts").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator("#shortcuts").is_visible()
    # The closed dialog leaves the focus on the pair, not on its hidden button (where Enter would go).
    page.wait_for_function("() => !document.activeElement.closest('dialog')")

    def submit_with(key: str, expected_total: str) -> None:
        page.keyboard.press(key)
        page.keyboard.press("Enter")
        page.wait_for_function(
            "total => document.querySelectorAll('#progress dd')[1].textContent.trim() === total",
            arg=expected_total,
        )

    page.keyboard.press("Enter")  # no choice yet: nothing is sent
    expect(page.locator(".choices.needs-choice")).to_have_count(1)
    submit_with("1", "1")
    submit_with("ArrowRight", "2")

    page.keyboard.press("s")
    assert page.locator("#skip").get_attribute("open") is not None
    page.keyboard.press("Space")  # the first reason has the focus
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('#progress dd')[2].textContent.trim() === '1'")
    assert Assignment.objects.filter(state="skipped", skip_reason="cant_judge").count() == 1

    submit_with("3", "3")
    page.wait_for_selector("text=All done here")
    screenshot("workbench-all-done")
    assert Judgment.objects.count() == 3
    first = Judgment.objects.order_by("created_at").first()
    assert first.choice == ("a" if first.a_on_left else "b")  # "1" = whatever was shown on the left
    assert first.active_seconds is not None and first.seconds_spent >= 0

    page.get_by_role("link", name="Review my recent judgments").click()
    page.locator("table.list a", has_text="Change").last.click()
    page.locator("label.choice", has_text="B is better").click()
    page.get_by_role("button", name="Save").click()
    page.wait_for_selector("text=Judgment changed.")
    first.refresh_from_db()
    assert first.choice == ("b" if first.a_on_left else "a")


def test_hostile_content_stays_inert_in_chromium(page, live_server, login, make_user, screenshot):
    pairs = [(p, p, f"{p} (other)") for p in PAYLOADS]
    project = setup_project(make_user, pairs)
    dialogs, foreign = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    host = urlparse(live_server.url).netloc
    page.on("request", lambda r: foreign.append(r.url) if urlparse(r.url).netloc not in (host, "") else None)
    logouts = []
    page.on("request", lambda r: logouts.append(r.url) if "/logout/" in r.url else None)
    login("kim", PASSWORD)
    for i in range(len(PAYLOADS)):
        page.goto(f"{live_server.url}/projects/{project.slug}/label/")
        page.wait_for_selector("#judgment-form")
        page.wait_for_timeout(150)  # let load-triggered handlers (if any got through) fire
        if i == 0:
            screenshot("workbench-xss")
        assert (
            page.evaluate("document.querySelectorAll('.wb-response script, .wb-prompt script').length") == 0
        )
        page.keyboard.press("1")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "n => document.querySelectorAll('#progress dd')[1].textContent.trim() === String(n)", arg=i + 1
        )
    assert dialogs == [] and foreign == [] and logouts == []
    assert Judgment.objects.count() == len(PAYLOADS)


def import_pairs(project: Project, records: list[dict]) -> None:
    batch = ImportBatch.objects.create(project=project, source_name="shown.jsonl", state="running")
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    summary = import_stream(batch=batch, stream=io.BytesIO(data))
    assert summary.imported == len(records), summary.errors


def test_math_right_to_left_text_and_tool_calls_are_shown_as_written(
    page, live_server, login, make_user, screenshot
):
    project = setup_project(make_user, [])
    latex = json.loads((FORMATS / "13_latex_and_long_code.jsonl").read_text().splitlines()[0])
    tool = json.loads((FORMATS / "09b_tool_calls_with_content.jsonl").read_text().splitlines()[0])
    hebrew = {"prompt": "כתוב משפט אחד על חתולים.", "response_a": "חתולים אוהבים לישון בשמש. 🐈",
              "response_b": "Cats like sleeping in the sun."}  # fmt: skip
    import_pairs(project, [hebrew, latex, tool])
    login("kim", PASSWORD)
    page.goto(f"{live_server.url}/projects/{project.slug}/label/")

    # right-to-left: the Hebrew paragraphs are laid out right to left, the English one left to right
    page.wait_for_selector("text=כתוב משפט אחד על חתולים.")
    direction = "el => getComputedStyle(el).direction"
    assert page.locator(".wb-prompt p").evaluate(direction) == "rtl"
    directions = sorted(page.locator(".wb-response p").evaluate_all(f"els => els.map({direction})"))
    assert directions == ["ltr", "rtl"]
    screenshot("workbench-rtl")
    page.goto(f"{live_server.url}/projects/{project.slug}/label/?plain=1")
    assert page.locator(".wb-prompt .plain").evaluate(direction) == "rtl"
    page.goto(f"{live_server.url}/projects/{project.slug}/label/?plain=0")
    page.keyboard.press("1")
    page.keyboard.press("Enter")

    # math, in the pair htmx swapped in: typeset by KaTeX from static files, $ and brackets alike
    page.wait_for_selector(".wb-response .katex")
    math = page.locator(".wb-response .math-inline, .wb-response .math-display")
    assert math.count() == 6
    assert page.locator(".wb-response [data-typeset=katex]").count() == 6
    assert page.locator(".wb-response .katex-display").count() == 2  # $$...$$ and \[...\]
    screenshot("workbench-math")
    page.goto(f"{live_server.url}/projects/{project.slug}/label/?plain=1")  # plain text: raw
    assert page.locator(".katex").count() == 0
    assert "$S = \\{1, 2, 3\\}$" in "".join(page.locator(".wb-response .plain").all_inner_texts())
    page.goto(f"{live_server.url}/projects/{project.slug}/label/?plain=0")
    page.wait_for_selector(".wb-response .katex")  # and typeset on a full page load too
    page.keyboard.press("1")
    page.keyboard.press("Enter")

    # tool calls: visible on both sides as what they are, with the arguments that differ
    page.wait_for_selector(".tool-block")
    captions = page.locator(".wb-response .tool-block figcaption")
    assert captions.all_inner_texts() == ["Tool call: book_table (c1)"] * 2
    calls = sorted(page.locator(".wb-response .tool-block pre").all_inner_texts())
    assert calls == ['{\n  "people": 2,\n  "time": "19:00"\n}', '{\n  "people": 4,\n  "time": "17:00"\n}']
    assert all(caption.is_visible() for caption in captions.all())
    screenshot("workbench-tool-call")


def assignment_shown(page) -> str:
    return page.locator("#judgment-form").get_attribute("data-assignment")


def test_back_and_forward_never_show_a_pair_already_judged(page, live_server, login, make_user):
    project = setup_project(make_user, [(f"Question {i}", f"Yes {i}", f"No {i}") for i in range(3)])
    login("kim", PASSWORD)
    page.goto(f"{live_server.url}/projects/{project.slug}/label/")
    first = assignment_shown(page)
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('#progress dd')[1].textContent.trim() === '1'")
    second = assignment_shown(page)
    page.get_by_role("link", name="My recent judgments").click()
    page.wait_for_url("**/recent/")
    page.go_back()
    page.wait_for_selector("#judgment-form")
    assert assignment_shown(page) == second != first and progress(page)[1] == "1"
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('#progress dd')[1].textContent.trim() === '2'")
    page.go_forward()
    page.wait_for_url("**/recent/")
    assert page.locator("table.list tbody tr").count() == 2  # the list as it is now, not as it was
    page.go_back()
    page.wait_for_selector("#judgment-form")
    assert assignment_shown(page) not in (first, second) and progress(page)[1] == "2"


def test_two_tabs_judging_one_pair_differently_are_asked_and_change_in_one_step(
    page, live_server, login, make_user
):
    project = setup_project(make_user, [(f"Question {i}", f"Yes {i}", f"No {i}") for i in range(3)])
    login("kim", PASSWORD)
    workbench = f"{live_server.url}/projects/{project.slug}/label/"
    page.goto(workbench)
    other_tab = page.context.new_page()
    other_tab.goto(workbench)
    assert assignment_shown(other_tab) == assignment_shown(page)
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('#progress dd')[1].textContent.trim() === '1'")

    other_tab.keyboard.press("2")
    other_tab.keyboard.press("Enter")
    conflict = other_tab.locator("#conflict")
    conflict.wait_for()
    assert "You had already judged this pair as A in another tab" in conflict.inner_text()
    judgment = Judgment.objects.get()
    shown_left = judgment.choice if judgment.a_on_left else {"a": "b", "b": "a"}[judgment.choice]
    assert shown_left == "a"  # tab 1's choice stands until the annotator says otherwise
    other_tab.set_viewport_size({"width": 1366, "height": 900})
    screenshot_of(other_tab, "workbench-conflict")
    keep, change = (
        conflict.get_by_role("link", name="Keep A"),
        conflict.get_by_role("button", name="Change to B"),
    )
    assert abs(keep.bounding_box()["y"] - change.bounding_box()["y"]) < 2  # side by side on one line
    change.click()
    other_tab.wait_for_selector("text=Judgment changed.")
    judgment.refresh_from_db()
    assert judgment.choice == ("b" if judgment.a_on_left else "a") and Judgment.objects.count() == 1
    assert other_tab.locator("#progress dd").all_inner_texts()[1] == "1"


def screenshot_of(page, name: str, *, full_page: bool = True) -> None:
    """The `screenshot` fixture's, for another tab than `page` or the viewport alone."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def three_pairs(make_user, long: bool = False) -> Project:
    answer = (
        "\n\n".join(f"Paragraph {n} of a long answer, long enough to wrap." for n in range(40))
        if long
        else ""
    )
    return setup_project(
        make_user, [(f"Question {i}", f"Yes {i}. {answer}", f"No {i}. {answer}") for i in range(3)]
    )


def open_workbench(page, live_server, login, project: Project) -> None:
    login("kim", PASSWORD)
    page.goto(f"{live_server.url}/projects/{project.slug}/label/")
    page.wait_for_selector("#judgment-form")


def wait_for_total(page, total: int) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll('#progress dd')[1].textContent.trim() === String(n)", arg=total
    )


def test_enter_without_a_choice_says_what_is_missing(page, live_server, login, make_user):
    open_workbench(page, live_server, login, three_pairs(make_user))
    page.keyboard.press("Enter")
    status = page.locator("#verdict-status")
    assert status.get_attribute("aria-live") == "polite"
    assert (
        status.inner_text()
        == "Pick which response is better first: press 1 for A, 2 for B, 3 for Tie, 4 for Both bad."
    )
    page.keyboard.press("2")
    assert status.inner_text() == ""
    page.keyboard.press("Enter")
    wait_for_total(page, 1)


def test_focus_moves_to_the_new_pairs_heading_after_a_swap(page, live_server, login, make_user):
    open_workbench(page, live_server, login, three_pairs(make_user))
    page.locator("label.choice", has_text="A is better").click()
    page.get_by_role("button", name="Submit").click()
    wait_for_total(page, 1)
    assert page.evaluate("document.activeElement.id") == "pair-heading"
    assert page.evaluate("document.querySelectorAll('input[name=choice]:checked').length") == 0


def test_skip_by_keyboard_number_keys_pick_a_reason_enter_skips_escape_cancels(
    page, live_server, login, make_user
):
    open_workbench(page, live_server, login, three_pairs(make_user))
    skip = page.locator("#skip")
    page.keyboard.press("s")
    assert skip.get_attribute("open") is not None
    page.keyboard.press("Escape")
    assert skip.get_attribute("open") is None and not Assignment.objects.filter(state="skipped").exists()
    page.keyboard.press("s")
    page.keyboard.press("Enter")  # no reason yet: said, nothing sent
    assert page.locator("#skip-status").inner_text() == "Pick a reason first: press 1 to 3."
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('#progress dd')[2].textContent.trim() === '2'")
    assert Assignment.objects.get(state="skipped").skip_reason == "offensive"
    assert page.evaluate("document.activeElement.id") == "pair-heading"


def test_keys_work_on_the_change_page(page, live_server, login, make_user):
    open_workbench(page, live_server, login, three_pairs(make_user))
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    wait_for_total(page, 1)
    judgment = Judgment.objects.get()
    page.goto(f"{live_server.url}/projects/kb/judgments/{judgment.pk}/edit/")
    page.keyboard.press("Enter")  # the stored choice is checked: Enter saves it as it is
    page.wait_for_selector("text=Judgment changed.")
    page.goto(f"{live_server.url}/projects/kb/judgments/{judgment.pk}/edit/")
    page.keyboard.press("4")
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Judgment changed.")
    judgment.refresh_from_db()
    assert judgment.choice == "both_bad"


@pytest.mark.parametrize("size", [(1366, 900), (800, 1100)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_verdict_bar_stays_in_view_while_the_responses_scroll(
    page, live_server, login, make_user, screenshot, size
):
    width, height = size
    page.set_viewport_size({"width": width, "height": height})
    open_workbench(page, live_server, login, three_pairs(make_user, long=True))
    submit = page.get_by_role("button", name="Submit")

    def in_view() -> bool:
        box = submit.bounding_box()
        return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height

    assert in_view()
    screenshot_of(page, f"workbench-{width}x{height}", full_page=False)  # what the annotator sees
    page.locator(".wb-response").first.hover()
    page.mouse.wheel(0, 800)  # the response scrolls within its box
    page.wait_for_function("() => document.querySelector('.wb-response').scrollTop > 0")
    assert in_view()
    page.evaluate("window.scrollTo(0, document.body.scrollHeight / 3)")  # and the page itself
    assert in_view()
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    wait_for_total(page, 1)


def test_strength_is_required_for_a_or_b_when_the_project_asks(page, live_server, login, make_user):
    project = three_pairs(make_user)
    Project.objects.filter(pk=project.pk).update(use_strength=True, require_strength=True)
    open_workbench(page, live_server, login, project)
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    assert page.locator("#verdict-status").inner_text().startswith("Say how much better")
    assert not Judgment.objects.exists()
    page.get_by_label("Clearly").check()
    page.keyboard.press("Enter")
    wait_for_total(page, 1)
    page.keyboard.press("3")  # a tie needs no strength
    page.keyboard.press("Enter")
    wait_for_total(page, 2)
    assert sorted(Judgment.objects.values_list("strength", flat=True)) == ["", "clearly"]


JUDGE = "**/projects/kb/label/*/judge/"


def checked_choice(page) -> str | None:
    return page.evaluate("document.querySelector('input[name=choice]:checked')?.value ?? null")


def fail_with_500(route) -> None:
    route.fulfill(status=500, content_type="text/html", body="<h1>Server Error (500)</h1>")


def fail_to_connect(route) -> None:
    route.abort("internetdisconnected")


@pytest.mark.parametrize(
    "fail, reason",
    [(fail_with_500, "The server had an error (500)."), (fail_to_connect, "Could not reach the server")],
    ids=["500", "network-down"],
)
def test_a_failed_submit_says_not_saved_keeps_the_verdict_and_retry_stores_it_once(
    page, live_server, login, make_user, fail, reason
):
    open_workbench(page, live_server, login, three_pairs(make_user))
    first = assignment_shown(page)
    page.route(JUDGE, fail)
    page.locator("label.choice", has_text="B is better").click()
    page.fill("#id_rationale", "B answers the question.")
    page.get_by_role("button", name="Submit").click()

    fault = page.locator("#verdict-fault")
    expect(fault).to_contain_text(f"Your verdict was not saved. {reason}")
    assert fault.get_attribute("role") == "alert" and fault.get_attribute("aria-live") == "assertive"
    assert checked_choice(page) == "right" and page.input_value("#id_rationale") == "B answers the question."
    assert assignment_shown(page) == first and progress(page)[1] == "0"
    assert not Judgment.objects.exists()
    screenshot_of(page, f"workbench-not-saved-{fail.__name__}", full_page=False)

    page.unroute(JUDGE)
    fault.get_by_role("button", name="Retry").click()
    wait_for_total(page, 1)
    expect(page.locator("#verdict-fault")).to_be_empty()
    assert assignment_shown(page) != first
    judgment = Judgment.objects.get()
    assert judgment.rationale == "B answers the question."
    assert judgment.choice == ("b" if judgment.a_on_left else "a")  # "right" = B as shown


def stored_then_500(route) -> None:
    route.fetch()  # the server stores the vote; its answer never reaches the page
    fail_with_500(route)


def stored_then_lost(route) -> None:
    route.fetch()
    route.abort("connectionreset")


@pytest.mark.parametrize("lose", [stored_then_500, stored_then_lost], ids=["500", "connection-reset"])
def test_retry_after_an_answer_lost_on_the_way_back_stores_the_vote_once(
    page, live_server, login, make_user, lose
):
    open_workbench(page, live_server, login, three_pairs(make_user))
    first = assignment_shown(page)
    page.route(JUDGE, lose)
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    fault = page.locator("#verdict-fault")
    expect(fault).to_contain_text("Your verdict was not saved.")
    assert Judgment.objects.count() == 1 and checked_choice(page) == "left"

    page.unroute(JUDGE)
    fault.get_by_role("button", name="Retry").dblclick()  # twice, even: the server counts it once
    wait_for_total(page, 1)
    expect(page.locator("#verdict-fault")).to_be_empty()
    assert assignment_shown(page) != first
    assert Judgment.objects.count() == 1
    assert Assignment.objects.filter(state="leased").count() == 1  # the next pair, leased once


def test_a_submit_without_an_answer_in_time_says_so_and_enter_retries(page, live_server, login, make_user):
    open_workbench(page, live_server, login, three_pairs(make_user))
    form = page.locator("#judgment-form")
    assert json.loads(form.get_attribute("hx-request")) == {"timeout": 20000}
    patience = "(f, ms) => f.setAttribute('hx-request', JSON.stringify({timeout: ms}))"
    form.evaluate(patience, 300)  # not 20 s here
    held = []
    page.route(JUDGE, lambda route: held.append(route))  # never answered
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    fault = page.locator("#verdict-fault")
    expect(fault).to_contain_text("Your verdict was not saved. The server did not answer in time.")
    assert checked_choice(page) == "right" and not Judgment.objects.exists()

    page.unroute(JUDGE)
    form.evaluate(patience, 20000)
    page.keyboard.press("Enter")  # the keyboard retries as Submit does
    wait_for_total(page, 1)
    expect(page.locator("#verdict-fault")).to_be_empty()
    assert Judgment.objects.count() == 1


def test_a_failed_skip_says_so_and_retry_skips(page, live_server, login, make_user):
    open_workbench(page, live_server, login, three_pairs(make_user))
    page.route("**/projects/kb/label/*/skip/", fail_with_500)
    page.keyboard.press("s")
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    fault = page.locator("#skip-fault")
    expect(fault).to_contain_text("This pair was not skipped. The server had an error (500).")
    assert not Assignment.objects.filter(state="skipped").exists()
    page.unroute("**/projects/kb/label/*/skip/")
    fault.get_by_role("button", name="Retry").click()
    page.wait_for_function("() => document.querySelectorAll('#progress dd')[2].textContent.trim() === '2'")
    assert Assignment.objects.get(state="skipped").skip_reason == "offensive"


def test_without_javascript_a_verdict_posts_as_a_plain_form(browser, live_server, make_user):
    project = three_pairs(make_user)
    context = browser.new_context(java_script_enabled=False)
    plain = context.new_page()
    workbench = f"{live_server.url}/projects/{project.slug}/label/"
    plain.goto(workbench)  # to the login page, and back here after it
    plain.fill("#id_username", "kim")
    plain.fill("#id_password", PASSWORD)
    plain.click("button[type=submit]")
    plain.wait_for_url(workbench)
    first = assignment_shown(plain)
    plain.locator("label.choice", has_text="A is better").click()
    plain.get_by_role("button", name="Submit").click()
    plain.wait_for_url(workbench)
    assert progress(plain)[1] == "1" and assignment_shown(plain) != first
    assert plain.locator("#verdict-fault").inner_text() == ""
    context.close()
