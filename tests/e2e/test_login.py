"""The demo annotator logs in through Chromium and sees their home page."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from labeling.management.commands.seed_demo import DEMO_PASSWORD


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_demo_annotator_logs_in_and_sees_home(page, live_server, login, screenshot):
    call_command("seed_demo", "--allow-production", verbosity=0)
    page.goto(f"{live_server.url}/label/")
    assert "/login/" in page.url
    login("annotator1", DEMO_PASSWORD)
    page.wait_for_url(f"{live_server.url}/label/")
    page.goto(f"{live_server.url}/")
    assert page.locator("h1").inner_text() == "Hello, annotator1"
    assert page.locator(".mainnav a").all_inner_texts() == ["Label"]
    assert page.get_by_role("link", name="Demo: everyday and coding help").is_visible()
    screenshot("home-annotator")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{live_server.url}/login/")
