"""Untrusted markdown (rubrics, prompts, model output) to safe HTML: raw HTML off, then an allowlist.

What was written is what is shown: single line breaks stay line breaks, math between `$...$`,
`$$...$$`, `\\(...\\)` and `\\[...\\]` is left as written inside `span.math-inline` /
`span.math-display` / `div.math-display` (static/js/math.js typesets it in the browser with the
vendored KaTeX), and every block carries `dir="auto"`, so right-to-left paragraphs read right to left.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from mdit_py_plugins.dollarmath import dollarmath_plugin
from mdit_py_plugins.texmath import texmath_plugin
from mdit_py_plugins.texmath.index import make_inline_func
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

from labeling.conversations import Message, Prompt, response_messages

_FORMATTER = HtmlFormatter(nowrap=True)
_CLOSE = {"$": "$", "$$": "$$", "\\(": "\\)", "\\[": "\\]"}


def _highlight(code: str, lang: str, _attrs: str) -> str:
    try:
        lexer = get_lexer_by_name(lang.strip()) if lang.strip() else None
    except ClassNotFound:
        lexer = None
    if lexer is None:
        return html.escape(code)
    return highlight(code, lexer, _FORMATTER)


def _math(tokens: Sequence[Token], idx: int, display: bool, block: bool) -> str:
    """The math as written, delimiters included, in an element the browser typesets."""
    token = tokens[idx]
    opening = token.markup if token.markup in _CLOSE else "$$" if display else "$"
    source = html.escape(f"{opening}{token.content}{_CLOSE[opening]}", quote=False)
    label = f" ({html.escape(token.info)})" if token.info and block else ""
    if block:
        return f'<div class="math-display">{source}</div>\n' + (f"<p>{label.strip()}</p>\n" if label else "")
    return f'<span class="math-{"display" if display else "inline"}">{source}</span>'


def _math_rules(md: MarkdownIt) -> None:
    """Pandoc's rules for `$`: no space inside the delimiters, no digit after the closing one, so
    "$5 and $10" stays text. `\\[...\\]` inside a paragraph is display math too."""
    dollarmath_plugin(md, allow_space=False, allow_digits=False, double_inline=True)
    texmath_plugin(md, delimiters="brackets")
    inline_brackets = {
        "name": "math_inline_double",
        "rex": re.compile(r"^\\\[(.+?)\\\]", re.DOTALL),
        "tag": "\\[",
    }
    md.inline.ruler.before("escape", "math_inline_brackets", make_inline_func(inline_brackets))
    kinds = {
        "math_inline": (False, False),
        "math_inline_double": (True, False),
        "math_single": (False, False),
        "math_block": (True, True),
        "math_block_label": (True, True),
        "math_block_eqno": (True, True),
    }
    for name, (display, block) in kinds.items():
        md.add_render_rule(
            name,
            lambda self, tokens, idx, options, env, d=display, b=block: _math(tokens, idx, d, b),
            fmt="html",
        )


# "js-default" is CommonMark with raw HTML disabled and javascript:/vbscript:/data: links refused.
_MD = MarkdownIt("js-default", {"highlight": _highlight, "breaks": True}).enable(["table", "strikethrough"])
_math_rules(_MD)
assert isinstance(_MD.renderer, RendererHTML)

_TAGS = {
    "p", "br", "hr", "em", "strong", "del", "s", "code", "pre", "span", "div", "blockquote",
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
_CLASSES = {"div": {"math-display"}}
# Blocks that hold text decide their own direction from their first strong character.
_DIR_AUTO = {
    tag: {"dir": "auto"} for tag in ("p", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "th", "td")
}
_URL_SCHEMES = {"http", "https", "mailto"}


def render_markdown(text: str) -> str:
    """Markdown to HTML that is safe to put in a page: no raw HTML, no script URLs, no event handlers."""
    rendered = _MD.render(text or "")
    return nh3.clean(
        rendered,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        allowed_classes=_CLASSES,
        set_tag_attribute_values=_DIR_AUTO,
        url_schemes=_URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        filter_style_properties={"text-align"},
    )


# Bump whenever the rendering or the allowlist changes: pairs keep their HTML under this version.
RENDER_VERSION = 2


def _turns(messages: Sequence[Message]) -> list[str]:
    # Tool results are shown as the raw text they are (labeling/display.py), not as markdown.
    return [render_markdown(m["content"]) if m["role"] != "tool" else "" for m in messages]


def render_pair(prompt: Prompt, response_a: str, response_b: str) -> dict[str, Any]:
    """A pair's texts as safe HTML, in the form kept on its row: a chat prompt, and a response of
    several messages (labeling.conversations.response_messages), give one entry per message."""
    shown: dict[str, Any] = {"v": RENDER_VERSION}
    shown["prompt"] = _turns(prompt) if isinstance(prompt, list) else render_markdown(prompt)
    for side, text in (("a", response_a), ("b", response_b)):
        messages = response_messages(text)
        shown[side] = render_markdown(text) if messages is None else _turns(messages)
    return shown
