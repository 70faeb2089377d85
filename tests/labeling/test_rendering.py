"""Untrusted markdown renders as inert HTML that shows what was written: math as written for the
browser to typeset, single line breaks, and a direction per block."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labeling.conversations import response_text
from labeling.rendering import render_markdown, render_pair
from tests.labeling.xss import PAYLOADS, unsafe_markup

FORMATS = Path(__file__).parent / "formats"
MATH_PAYLOADS = [
    "$<img src=x onerror=alert('xss-math')>$",
    "\\(<script>alert('xss-math')</script>\\)",
    "$$\n</div><script>alert('xss-math')</script>\n$$",
    "\\[\\href{javascript:alert('xss-math')}{x}\\]",
]


@pytest.mark.parametrize("payload", PAYLOADS + MATH_PAYLOADS)
def test_payloads_render_inert(payload):
    html = render_markdown(payload)
    assert unsafe_markup(html, untrusted=True) == [], html


def test_markdown_still_works():
    html = render_markdown(
        "**bold** and `code`\n\n- item\n\n[docs](https://example.com)\n\n```python\nx = 1\n```"
    )
    assert (
        "<strong>bold</strong>" in html and "<code>code</code>" in html and '<li dir="auto">item</li>' in html
    )
    assert '<a href="https://example.com" rel="noopener noreferrer nofollow">docs</a>' in html
    assert '<span class="n">x</span>' in html  # pygments highlighting survives the sanitizer


def test_code_blocks_show_html_as_text():
    html = render_markdown("```html\n<script>alert(1)</script>\n```")
    assert "<script>" not in html and unsafe_markup(html, untrusted=True) == []
    assert '<span class="nt">script</span>' in html


def test_math_is_left_as_written_for_the_browser():
    [record] = [
        json.loads(line) for line in (FORMATS / "13_latex_and_long_code.jsonl").open() if "latex-1" in line
    ]
    html = render_markdown(record["response_a"])
    assert '<span class="math-inline">$S = \\{1, 2, 3\\}$</span>' in html
    assert '<span class="math-inline">$x*y*z = xyz$</span>' in html  # no emphasis inside math
    assert '<span class="math-inline">$\\frac{a_1}{b_1}$</span>' in html
    assert (
        '<div class="math-display">$$\\begin{pmatrix} 1 &amp; 0 \\\\ 0 &amp; 1 \\end{pmatrix}$$</div>' in html
    )
    assert '<span class="math-display">\\[ e^{i\\pi} + 1 = 0 \\]</span>' in html  # backslashes kept
    assert (
        render_markdown("so \\(a<b\\) holds")
        == '<p dir="auto">so <span class="math-inline">\\(a&lt;b\\)</span> holds</p>\n'
    )


@pytest.mark.parametrize(
    "text",
    ["I paid $5 and you paid $10.", "Prices: $ 3 and $ 4", "`$x$` is code", "a \\$ sign"],
)
def test_dollars_that_are_not_math_stay_text(text):
    assert "math-" not in render_markdown(text)


def test_single_line_breaks_are_kept():
    html = render_markdown("Roses are red,\nviolets are blue.\n\nNew verse")
    assert html == '<p dir="auto">Roses are red,<br>\nviolets are blue.</p>\n<p dir="auto">New verse</p>\n'


def test_every_text_block_decides_its_own_direction():
    html = render_markdown("# כותרת\n\nשלום\n\n- פריט\n\n> ציטוט\n\n| א | ב |\n|---|---|\n| 1 | 2 |")
    for tag in ("h1", "p", "li", "blockquote", "th", "td"):
        assert f'<{tag} dir="auto">' in html, tag
    assert '<pre dir="auto"' not in render_markdown("```\ncode\n```")  # code stays left to right


def test_pair_renders_messages_one_by_one_and_tool_results_not_at_all():
    prompt = [{"role": "user", "content": "*hi*"}, {"role": "tool", "content": "**raw**"}]
    reply = response_text([{"role": "assistant", "content": "one"}, {"role": "user", "content": "two"}])
    html = render_pair(prompt, reply, "plain")
    assert html["prompt"] == ['<p dir="auto"><em>hi</em></p>\n', ""]
    assert html["a"] == ['<p dir="auto">one</p>\n', '<p dir="auto">two</p>\n']
    assert html["b"] == '<p dir="auto">plain</p>\n'
