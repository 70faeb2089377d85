"""Untrusted markdown (rubrics, prompts, model output) to safe HTML: raw HTML off, then an allowlist."""

from __future__ import annotations

import html

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

_FORMATTER = HtmlFormatter(nowrap=True)


def _highlight(code: str, lang: str, _attrs: str) -> str:
    try:
        lexer = get_lexer_by_name(lang.strip()) if lang.strip() else None
    except ClassNotFound:
        lexer = None
    if lexer is None:
        return html.escape(code)
    return highlight(code, lexer, _FORMATTER)


# "js-default" is CommonMark with raw HTML disabled and javascript:/vbscript:/data: links refused.
_MD = MarkdownIt("js-default", {"highlight": _highlight}).enable("table").enable("strikethrough")

_TAGS = {
    "p", "br", "hr", "em", "strong", "del", "s", "code", "pre", "span", "blockquote",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "a",
    "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
_ATTRIBUTES = {
    "a": {"href", "title"},
    "code": {"class"},
    "span": {"class"},
    "th": {"style"},
    "td": {"style"},
    "ol": {"start"},
}
_URL_SCHEMES = {"http", "https", "mailto"}


def render_markdown(text: str) -> str:
    """Markdown to HTML that is safe to put in a page: no raw HTML, no script URLs, no event handlers."""
    rendered = _MD.render(text or "")
    return nh3.clean(
        rendered,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes=_URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        filter_style_properties={"text-align"},
    )


# Bump whenever the rendering or the allowlist changes: pairs keep their HTML under this version.
RENDER_VERSION = 1


def render_pair(prompt: str | list[dict[str, str]], response_a: str, response_b: str) -> dict:
    """A pair's texts as safe HTML, in the form kept on its row: a chat prompt gives one entry per turn."""
    if isinstance(prompt, list):
        shown_prompt: str | list[str] = [render_markdown(turn["content"]) for turn in prompt]
    else:
        shown_prompt = render_markdown(prompt)
    return {"v": RENDER_VERSION, "prompt": shown_prompt, "a": render_markdown(response_a),
            "b": render_markdown(response_b)}  # fmt: skip
