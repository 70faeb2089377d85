"""Untrusted markdown (rubrics, prompts, model output) to safe HTML: raw HTML off, then an allowlist.

What was written is what is shown: single line breaks stay line breaks, math between `$...$`,
`$$...$$`, `\\(...\\)` and `\\[...\\]` is left as written inside `span.math-inline` /
`span.math-display` / `div.math-display` (static/js/math.js typesets it in the browser with the
vendored KaTeX), and every block carries `dir="auto"`, so right-to-left paragraphs read right to left.

Rendering is bounded. markdown-it is pure Python and some shapes of text are slow for it (a long run
of `![` costs about 0.3 ms per character: 100,000 of them, 30 s). A text longer than `max_chars`,
or one that is still being laid out when its time is up, is shown as escaped plain text under a note
instead. The time bound is kept cooperatively: every markdown-it rule and every Pygments token first
checks the deadline, so a render overruns it by at most one rule's work on a text of at most
`max_chars`. Neither an alarm signal (it only reaches the main thread, and the app renders in request
threads and RQ workers too) nor a subprocess per text (tens of milliseconds each, for every pair of
an import) would do: checking costs about 10% on ordinary text.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from io import StringIO
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from mdit_py_plugins.dollarmath import dollarmath_plugin
from mdit_py_plugins.texmath import texmath_plugin
from mdit_py_plugins.texmath.index import make_inline_func
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

from labeling.conversations import Message, Prompt, response_messages

_FORMATTER = HtmlFormatter(nowrap=True)
_CLOSE = {"$": "$", "$$": "$$", "\\(": "\\)", "\\[": "\\]"}
# Longer code blocks are shown unhighlighted: some lexers are slow on hostile input.
HIGHLIGHT_MAX_CHARS = 20_000


@dataclass(frozen=True)
class RenderLimits:
    """How much untrusted markdown one render may take on: `max_chars` characters per text and
    `seconds` of work (per text for `render_markdown`, per pair for `render_pair`)."""

    max_chars: int = 200_000
    seconds: float = 1.0


DEFAULT_LIMITS = RenderLimits()
# The monotonic time by which the render running in this thread (or task) must be done.
_deadline: ContextVar[float] = ContextVar("prefstudio_render_deadline", default=float("inf"))


class _TooSlow(Exception):
    """The render ran out of time."""


def _check_deadline() -> None:
    if time.monotonic() > _deadline.get():
        raise _TooSlow


def _checked(fn: Callable[..., Any]) -> Callable[..., Any]:
    def rule(*args: Any) -> Any:
        if time.monotonic() > _deadline.get():
            raise _TooSlow
        return fn(*args)

    return rule


def _with_deadline(md: MarkdownIt) -> None:
    """Every rule of every markdown-it ruler checks the deadline before it runs. (Rules are wrapped in
    place: `Ruler.at` finds rules by name, and the math plugins register two rules of the same name.)"""
    for ruler in (md.core.ruler, md.block.ruler, md.inline.ruler, md.inline.ruler2):
        for rule in ruler.__rules__:
            rule.fn = _checked(rule.fn)
        ruler.__cache__ = None


def _tokens(tokens: Iterator[Any]) -> Iterator[Any]:
    for token in tokens:
        _check_deadline()
        yield token


def _highlight(code: str, lang: str, _attrs: str) -> str:
    try:
        lexer = get_lexer_by_name(lang.strip()) if lang.strip() and len(code) <= HIGHLIGHT_MAX_CHARS else None
    except ClassNotFound:
        lexer = None
    if lexer is None:
        return html.escape(code)
    out = StringIO()
    _FORMATTER.format(_tokens(lexer.get_tokens(code)), out)
    return out.getvalue()


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


def _align_classes(state: Any) -> None:
    """Table cells aligned by a class, not a style attribute: pages allow no inline styles (CSP)."""
    for token in state.tokens:
        if token.type in ("th_open", "td_open") and (style := token.attrs.pop("style", None)):
            token.attrSet("class", f"align-{str(style).removeprefix('text-align:')}")


# "js-default" is CommonMark with raw HTML disabled and javascript:/vbscript:/data: links refused.
_MD = MarkdownIt("js-default", {"highlight": _highlight, "breaks": True}).enable(["table", "strikethrough"])
_math_rules(_MD)
_MD.core.ruler.push("align_classes", _align_classes)
_with_deadline(_MD)
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
    "ol": {"start"},
}
_ALIGN = {"align-left", "align-center", "align-right"}
_CLASSES = {"div": {"math-display"}, "th": _ALIGN, "td": _ALIGN}
# Blocks that hold text decide their own direction from their first strong character.
_DIR_AUTO = {
    tag: {"dir": "auto"} for tag in ("p", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "th", "td")
}
_URL_SCHEMES = {"http", "https", "mailto"}


def plain_text(text: str, note: str) -> str:
    """`text` escaped, as written (line breaks kept by CSS), under a note that says why."""
    return (
        f'<p class="render-note">{html.escape(note)}</p>\n'
        f'<div class="plain-text" dir="auto">{html.escape(text)}</div>\n'
    )


def render_markdown(
    text: str, *, limits: RenderLimits = DEFAULT_LIMITS, deadline: float | None = None
) -> str:
    """Markdown to HTML that is safe to put in a page: no raw HTML, no script URLs, no event handlers.

    The one entry point for untrusted text. Past `limits.max_chars` characters, or past its time
    (`limits.seconds` from now, or the monotonic `deadline` a caller shares between several texts),
    the text comes back escaped as plain text under a note (`plain_text`).
    """
    text = text or ""
    if len(text) > limits.max_chars:
        return plain_text(
            text, f"Shown as plain text: {len(text):,} characters, over the {limits.max_chars:,} laid out."
        )
    token = _deadline.set(time.monotonic() + limits.seconds if deadline is None else deadline)
    try:
        _check_deadline()
        rendered = _MD.render(text)
    except _TooSlow:
        return plain_text(text, f"Shown as plain text: laying it out took longer than {limits.seconds:g} s.")
    except RecursionError:
        return plain_text(text, "Shown as plain text: nested too deeply to lay out.")
    finally:
        _deadline.reset(token)
    return nh3.clean(
        rendered,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        allowed_classes=_CLASSES,
        set_tag_attribute_values=_DIR_AUTO,
        url_schemes=_URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )


# Bump whenever the rendering or the allowlist changes: pairs keep their HTML under this version.
RENDER_VERSION = 3


def render_pair(
    prompt: Prompt, response_a: str, response_b: str, *, limits: RenderLimits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """A pair's texts as safe HTML, in the form kept on its row: a chat prompt, and a response of
    several messages (labeling.conversations.response_messages), give one entry per message.

    The pair shares one time budget (`limits.seconds`): texts still waiting when it runs out come
    back as plain text, so a pair of ten thousand turns costs no more than one slow text.
    """
    deadline = time.monotonic() + limits.seconds

    def one(text: str) -> str:
        return render_markdown(text, limits=limits, deadline=deadline)

    def turns(messages: Sequence[Message]) -> list[str]:
        # Tool results are shown as the raw text they are (labeling/display.py), not as markdown.
        return [one(m["content"]) if m["role"] != "tool" else "" for m in messages]

    shown: dict[str, Any] = {"v": RENDER_VERSION}
    shown["prompt"] = turns(prompt) if isinstance(prompt, list) else one(prompt)
    for side, text in (("a", response_a), ("b", response_b)):
        messages = response_messages(text)
        shown[side] = one(text) if messages is None else turns(messages)
    return shown
