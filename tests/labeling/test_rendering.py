"""Untrusted markdown renders as inert HTML."""

from __future__ import annotations

import pytest

from labeling.rendering import render_markdown
from tests.labeling.xss import PAYLOADS, unsafe_markup


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payloads_render_inert(payload):
    html = render_markdown(payload)
    assert unsafe_markup(html, untrusted=True) == [], html


def test_markdown_still_works():
    html = render_markdown(
        "**bold** and `code`\n\n- item\n\n[docs](https://example.com)\n\n```python\nx = 1\n```"
    )
    assert "<strong>bold</strong>" in html and "<code>code</code>" in html and "<li>item</li>" in html
    assert '<a href="https://example.com" rel="noopener noreferrer nofollow">docs</a>' in html
    assert '<span class="n">x</span>' in html  # pygments highlighting survives the sanitizer


def test_code_blocks_show_html_as_text():
    html = render_markdown("```html\n<script>alert(1)</script>\n```")
    assert "<script>" not in html and unsafe_markup(html, untrusted=True) == []
    assert '<span class="nt">script</span>' in html
