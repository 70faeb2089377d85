"""Conversations inside preference records: transcripts, the prompt two sides share, responses of more
than one turn, and texts compared as annotators see them.

Pure Python: this module must not import Django.

A response is stored as text. When it is more than one assistant message's text (several turns, a
tool call, a tool result), it is stored as `MESSAGES_MARK` followed by the JSON list of its
messages: `response_text` writes that form, `response_messages` reads it back (None for plain
text), and the importer refuses plain text that starts with the mark, so the two never mix.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

Message = dict[str, Any]
Prompt = str | list[Message]

ROLES = ("system", "developer", "user", "assistant", "tool")
# U+001E RECORD SEPARATOR: a control character no model writes at the start of an answer.
MESSAGES_MARK = "\x1e"

_HH_MARK = re.compile(r"(?:^|\n\n)(Human|Assistant):[ ]?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}
_HH_NAMES = {role: name for name, role in _HH_ROLES.items()}
_RUNS = re.compile(r"[ \t]{2,}|\t")


def is_transcript(text: str) -> bool:
    """Whether `text` is an HH-RLHF style transcript: `Human:` first, then at least one `Assistant:` turn."""
    return text.lstrip(" \n").startswith("Human:") and "\n\nAssistant:" in text


def transcript_turns(text: str) -> list[Message]:
    """The chat turns of an HH-RLHF transcript (`\\n\\nHuman: ...\\n\\nAssistant: ...`), contents as written.

    The one space after each `Human:` / `Assistant:` belongs to the marker; text before the first
    marker is only blank (see `is_transcript`)."""
    parts = _HH_MARK.split(text.lstrip(" \n"))
    return [
        {"role": _HH_ROLES[name], "content": content}
        for name, content in zip(parts[1::2], parts[2::2], strict=True)
    ]


def transcript_text(turns: Sequence[Message]) -> str:
    """The inverse of `transcript_turns` for user and assistant turns."""
    return "".join(f"\n\n{_HH_NAMES[t['role']]}: {t['content']}" for t in turns)


def split_turns(sides: Sequence[Sequence[Message]]) -> tuple[list[Message], list[list[Message]]]:
    """The longest common prefix of whole turns (the prompt) and the rest of each side, like TRL's
    `extract_prompt`, except that every side keeps at least one turn: prefix + rest == side."""
    shortest = min(len(side) for side in sides)
    n = 0
    while n < shortest - 1 and all(side[n] == sides[0][n] for side in sides[1:]):
        n += 1
    return list(sides[0][:n]), [list(side[n:]) for side in sides]


def split_text(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(prompt, chosen rest, rejected rest) of two texts sharing a beginning, cut at the last whitespace
    of the common prefix, so no word is split (TRL's `extract_prompt` may cut inside a word).
    prompt + rest == text for both; the prompt is "" when the texts share no whole word."""
    common = 0
    for x, y in zip(chosen, rejected, strict=False):
        if x != y:
            break
        common += 1
    cut = max((i for i in range(common) if chosen[i].isspace()), default=0)
    while cut > 0 and chosen[cut - 1].isspace():  # keep a run of spaces with the responses
        cut -= 1
    return chosen[:cut], chosen[cut:], rejected[cut:]


def is_plain_reply(messages: Sequence[Message]) -> bool:
    """Whether `messages` is one assistant message holding text only (stored as that text)."""
    return (
        len(messages) == 1 and messages[0]["role"] == "assistant" and set(messages[0]) == {"role", "content"}
    )


def response_text(messages: Sequence[Message]) -> str:
    """A response as stored: one plain assistant message as its text, anything else as marked JSON."""
    if is_plain_reply(messages):
        return messages[0]["content"]
    return MESSAGES_MARK + json.dumps(list(messages), ensure_ascii=False)


def response_messages(text: str) -> list[Message] | None:
    """The messages of a response stored by `response_text` as marked JSON; None for a plain text."""
    if not text.startswith(MESSAGES_MARK):
        return None
    try:
        value = json.loads(text[len(MESSAGES_MARK) :])
    except ValueError:
        return None
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        return value
    return None


def comparable(text: str) -> str:
    """`text` as annotators see it, for comparing: NFC, line ends as LF, no trailing spaces on a line,
    runs of spaces or tabs between words as one space (indentation kept), no blank edges."""
    even = "\r" not in text and "\t" not in text and "  " not in text and " \n" not in text
    if even and (text.isascii() or unicodedata.is_normalized("NFC", text)):
        return text.strip()  # the common case: many times faster than the loop below
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = []
    for line in text.split("\n"):
        body = line.lstrip(" \t")
        lines.append(line[: len(line) - len(body)] + _RUNS.sub(" ", body.rstrip()))
    return "\n".join(lines).strip()


def _comparable_messages(messages: Sequence[Message]) -> list[Message]:
    return [
        {k: comparable(v) if k == "content" and isinstance(v, str) else v for k, v in m.items()}
        for m in messages
    ]


def response_key(response: str) -> str:
    """A stored response in its comparable form: two responses are the same pair side when equal."""
    messages = response_messages(response)
    if messages is None:
        return comparable(response)
    if is_plain_reply(messages):
        return comparable(messages[0]["content"])
    return MESSAGES_MARK + json.dumps(_comparable_messages(messages), sort_keys=True, ensure_ascii=False)


def prompt_key(prompt: Prompt) -> str | list[Message]:
    """A prompt in its comparable form: one user turn compares equal to the same text as a string."""
    if isinstance(prompt, str):
        return comparable(prompt)
    if len(prompt) == 1 and prompt[0].get("role") == "user" and set(prompt[0]) == {"role", "content"}:
        return comparable(prompt[0]["content"])
    return _comparable_messages(prompt)


def content_hash(prompt: Prompt, response_a: str, response_b: str) -> str:
    """SHA-256 of the comparable prompt and the unordered pair of comparable responses: swapping A and
    B, other line ends, trailing or repeated spaces give the same hash. For texts already in
    comparable form it is the hash of `[prompt, sorted([a, b])]` as compact JSON with sorted keys."""
    return keys_hash(prompt_key(prompt), response_key(response_a), response_key(response_b))


def keys_hash(prompt: str | list[Message], key_a: str, key_b: str) -> str:
    """`content_hash` from the prompt's and the responses' comparable forms (`prompt_key`, `response_key`)."""
    payload = json.dumps(
        [prompt, sorted([key_a, key_b])], sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def readable(value: Prompt) -> str:
    """A prompt or a stored response as plain text for a short preview: messages as `role: text` lines,
    tool calls as `role → tool call name(arguments)`."""
    messages = value if isinstance(value, list) else response_messages(value)
    if messages is None:
        return value
    lines = []
    for message in messages:
        if message.get("content"):
            lines.append(f"{message['role']}: {message['content']}")
        for call in message.get("tool_calls") or ():
            function = call.get("function", call) if isinstance(call, dict) else {}
            lines.append(
                f"{message['role']} → tool call {function.get('name', '?')}({function.get('arguments', '')})"
            )
    return "\n".join(lines)
