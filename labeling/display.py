"""What an annotator is shown of a pair: its prompt and responses on the sides they were given, as
plain text or as sanitized markdown that is rendered once per pair and kept on its row.

Every part of a pair is shown as a list of turns (`Turn`), each a list of blocks (`Block`): a chat
prompt or a response of several messages gives one turn per message with its role; a plain text
gives one turn without a heading. Tool calls and tool results are shown as written, in code blocks
titled with what they are; an empty response is shown as a visibly empty answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import QuerySet
from django.utils.safestring import SafeString, mark_safe

from labeling.conversations import Message, response_key, response_messages
from labeling.models import Pair
from labeling.rendering import RENDER_VERSION, RenderLimits, render_markdown, render_pair

EMPTY_RESPONSE = "(empty response: nothing was written)"
EMPTY_TURN = "(empty)"
_SHOWN_KEYS = {"role", "content", "tool_calls", "tool_call_id", "name"}


@dataclass(frozen=True)
class Block:
    """A piece of a turn. `kind`: "text" (escaped `str`, or sanitized HTML as `SafeString`), "code"
    (a tool call or result, shown as written under `title`) or "empty" (nothing was written)."""

    kind: str
    body: str | SafeString
    title: str = ""


@dataclass(frozen=True)
class Turn:
    """One message, or a whole plain text (`role` and `label` empty)."""

    role: str
    label: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Shown:
    """The pair as laid out for the page."""

    plain: bool
    prompt: list[Turn]
    left: list[Turn]
    right: list[Turn]


def shown(pair: Pair, *, a_on_left: bool, plain: bool) -> Shown:
    """The pair as one annotator sees it: response A on the left when `a_on_left`."""
    html = None if plain else rendered(pair)
    prompt = (
        _message_turns(pair.prompt, html and html["prompt"])
        if pair.is_chat
        else [_text_turn(pair.prompt, html and html["prompt"], EMPTY_TURN)]
    )
    a = _response(pair.response_a, html and html["a"])
    b = _response(pair.response_b, html and html["b"])
    return Shown(plain=plain, prompt=prompt, left=a if a_on_left else b, right=b if a_on_left else a)


def _text(text: str, html: Any) -> str | SafeString:
    # Sanitized by nh3 with an allowlist in labeling.rendering: the only untrusted text marked safe.
    return mark_safe(html) if isinstance(html, str) else text


def _text_turn(text: str, html: Any, empty: str, role: str = "", label: str = "") -> Turn:
    if not response_key(text):
        return Turn(role, label, (Block("empty", empty),))
    return Turn(role, label, (Block("text", _text(text, html)),))


def _response(text: str, html: Any) -> list[Turn]:
    messages = response_messages(text)
    if messages is None:
        return [_text_turn(text, html, EMPTY_RESPONSE)]
    return _message_turns(messages, html if isinstance(html, list) else None)


def _as_written(value: Any) -> str:
    """JSON (as a value or as JSON text) pretty-printed; any other text as it is."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
        if not isinstance(value, dict | list):
            return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, indent=2)


def _call(call: dict[str, Any]) -> Block:
    function = call.get("function") if isinstance(call.get("function"), dict) else call
    name = function.get("name") if isinstance(function.get("name"), str) else "(no name)"
    arguments = function.get("arguments", {k: v for k, v in call.items() if k not in ("id", "type")})
    ident = f" ({call['id']})" if isinstance(call.get("id"), str) else ""
    return Block("code", _as_written(arguments), f"Tool call: {name}{ident}")


def _message_turns(messages: Sequence[Message], html: Sequence[str] | None) -> list[Turn]:
    turns = []
    for i, message in enumerate(messages):
        role, content = message["role"], message.get("content") or ""
        label = "tool result" if role == "tool" else role
        for key in ("name", "tool_call_id"):
            if isinstance(message.get(key), str):
                label += f" · {message[key]}"
        blocks: list[Block] = []
        if role == "tool":
            blocks.append(Block("code", _as_written(content), "Result"))
        elif content or not message.get("tool_calls"):
            blocks.extend(_text_turn(content, html[i] if html else None, EMPTY_TURN).blocks)
        blocks.extend(_call(call) for call in message.get("tool_calls") or () if isinstance(call, dict))
        if other := {k: v for k, v in message.items() if k not in _SHOWN_KEYS}:
            blocks.append(Block("code", _as_written(other), "Other fields"))
        turns.append(Turn(role, label, tuple(blocks)))
    return turns


def render_limits() -> RenderLimits:
    """The bounds on rendering untrusted markdown, from the settings."""
    return RenderLimits(
        max_chars=settings.PREFSTUDIO_RENDER_MAX_CHARS, seconds=settings.PREFSTUDIO_RENDER_SECONDS
    )


def rendered(pair: Pair) -> dict:
    """The pair's sanitized HTML (labeling.rendering.render_pair), rendered and kept on first use.

    Callers render outside any transaction that holds the pair's row (claims, judgments): the render
    takes up to PREFSTUDIO_RENDER_SECONDS, and its own UPDATE holds the row only while it writes.
    """
    if not pair.rendered or pair.rendered.get("v") != RENDER_VERSION:
        pair.rendered = render_pair(pair.prompt, pair.response_a, pair.response_b, limits=render_limits())
        Pair.objects.filter(pk=pair.pk).update(rendered=pair.rendered)
    return pair.rendered


MARKDOWN_CACHE_SECONDS = 24 * 3600


def markdown_html(text: str) -> SafeString:
    """Sanitized HTML of a text shown on many pages (a project's rubric), rendered once per content:
    kept in the cache under a hash of the text and the renderer's version."""
    digest = hashlib.sha256((text or "").encode("utf-8", "surrogatepass")).hexdigest()
    key = f"prefstudio:markdown:{RENDER_VERSION}:{digest}"
    html = cache.get(key)
    if html is None:
        html = render_markdown(text, limits=render_limits())
        cache.set(key, html, MARKDOWN_CACHE_SECONDS)
    # Sanitized by nh3 with an allowlist in labeling.rendering (or escaped as plain text).
    return mark_safe(html)


def render_missing(pairs: QuerySet[Pair], *, chunk: int = 500) -> int:
    """Render and keep the HTML of `pairs` that have none (or an older renderer's); how many.

    Runs after an import (labeling.tasks.render_batch), so annotators seldom wait on it.
    """
    done, limits = 0, render_limits()
    stale = pairs.exclude(rendered__v=RENDER_VERSION).only("id", "prompt", "response_a", "response_b")
    while batch := list(stale.order_by("id")[:chunk]):
        for pair in batch:
            pair.rendered = render_pair(pair.prompt, pair.response_a, pair.response_b, limits=limits)
        Pair.objects.bulk_update(batch, ["rendered"])
        done += len(batch)
    return done
