"""One decoded record of an imported file into validated pairs, or every problem found in it.

Pure Python: this module must not import Django. `labeling.importing` reads files into records;
`labeling.layouts` says which layout a record has; `labeling.conversations` splits conversations.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from labeling.conversations import (
    MESSAGES_MARK,
    ROLES,
    Message,
    Prompt,
    comparable,
    is_transcript,
    keys_hash,
    prompt_key,
    response_key,
    response_text,
    split_text,
    split_turns,
    transcript_turns,
)
from labeling.layouts import (
    LABEL_WORDS,
    Fields,
    as_number,
    fields_of,
    ignored_reason,
    label_values_of,
    map_hint,
    no_layout_reason,
    rename,
    type_name,
    value_key,
    values_hint,
)

GOLD_LABELS = ("a", "b", "tie")
RAW_CHARS = 500
NOTE_REPEATED = "the responses repeat the prompt field: it is shown once"
NOTE_PROMPT_KEPT = "the prompt field differs from the conversations' shared turns: kept as metadata"
NOTE_EARLY = "the sides differ before the last turn: the responses hold the differing turns"
NOTE_IMPLICIT = "prompt taken from the shared beginning of the two sides"
NOTE_UNAUDITED = "not audited: "
# A label's meaning as Pair.original_label keeps it, in one character: a tie is "t".
ORIGINAL_LABELS = {"a": "a", "b": "b", "tie": "t"}
# Targets that a record must hold when they are mapped; the others are absent when their field is.
_REQUIRED_WHEN_MAPPED = ("prompt", "response_a", "response_b", "chosen", "rejected", "responses")
_TEXT_PARTS = ("text", "input_text", "output_text")
_IMAGES, _AUDIO = "images are not supported", "audio is not supported"
_MEDIA = {
    **dict.fromkeys(("image", "image_url", "input_image"), _IMAGES),
    **dict.fromkeys(("audio", "input_audio"), _AUDIO),
    "video": "video is not supported",
    "file": "files are not supported",
}
# Fields that may hold chat messages; in CSV cells (and text columns anywhere) a JSON list of messages
# is decoded into messages.
_MESSAGE_FIELDS = (
    "prompt",
    "response_a",
    "response_b",
    "chosen",
    "rejected",
    "completion",
    "preferred_output",
    "non_preferred_output",
)
_JSON_CELLS = ("metadata", "responses", "models", "input")
_MISSING = object()


def plural(n: int, noun: str) -> str:
    """ "1 problem", "2 problems"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class PairRecord:
    """One pair of responses to one prompt, ready to be judged.

    `line` is the record's place in its file, in `unit`s: "line" (JSONL), "row" (CSV, Parquet) or
    "record" (a JSON document). A response of several turns is marked JSON (labeling.conversations).
    `layout` names the layout recognised, `notes` what the import did that a person should know,
    `kept` the fields kept as metadata, `left_out` the pairs of this record the cap left out.
    `original_label` is the dataset's own preference, hidden from annotators: "a" or "b" (the side it
    preferred) or "t" (a tie), from chosen / rejected or a mapped label or scores; None without one.
    """

    line: int
    external_id: str
    prompt: Prompt = field(hash=False)
    response_a: str
    response_b: str
    model_a: str
    model_b: str
    metadata: dict = field(hash=False)
    gold: str | None
    original_label: str | None
    shape: str
    content_hash: str
    layout: str = ""
    notes: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    left_out: int = 0
    unit: str = "line"

    @property
    def empty_sides(self) -> int:
        """How many of the two responses show nothing (a model that said nothing)."""
        return sum(not response_key(r) for r in (self.response_a, self.response_b))


@dataclass(frozen=True)
class RecordError:
    """One problem with one record of an imported file."""

    file: str
    line: int
    field: str | None
    reason: str
    raw: str
    unit: str = "line"

    def __str__(self) -> str:
        where = f"{self.file}, {self.unit} {self.line}"
        return f"{where}, field {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"


@dataclass(frozen=True)
class Completion:
    """One labelled completion of an unpaired (KTO) row: `labeling.importing.iter_records` pairs a
    desirable and an undesirable completion of the same prompt across the file."""

    file: str
    line: int
    raw: str
    external_id: str
    prompt: Prompt = field(hash=False)
    text: str
    desirable: bool
    metadata: dict = field(hash=False)
    layout: str
    kept: tuple[str, ...]
    unit: str = "line"


@dataclass(frozen=True)
class ImportOptions:
    """Limits applied while importing.

    `max_unpacked_bytes` and `max_records` cap a whole file as read (after gzip); a Parquet column
    chunk may unpack to `parquet_chunk_bytes`; Parquet is read in batches of about `batch_bytes`;
    unpaired (KTO) rows wait in memory for their pairing up to `max_unpaired_bytes` of text.
    `form`: problems tell people to map fields in the import page's Field mapping form rather than
    with the command line's --map.
    """

    max_record_bytes: int = 1_000_000
    max_pairs_per_record: int = 10
    batch_size: int = 1000
    max_document_bytes: int = 64 * 1024 * 1024
    max_unpacked_bytes: int = 2 * 1024**3
    max_records: int = 2_000_000
    parquet_chunk_bytes: int = 64 * 1024 * 1024
    batch_bytes: int = 16 * 1024 * 1024
    max_unpaired_bytes: int = 128 * 1024 * 1024
    form: bool = False

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, bool) and value < 1:
                raise ValueError(f"{name} must be at least 1")


DEFAULT_OPTIONS = ImportOptions()


def _char_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain NUL characters (U+0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired surrogate character"
    return None


def _json_problem(value: object) -> str | None:
    """Why `value` cannot be stored as a JSON document, or None."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        return f"cannot be stored as JSON: {exc}"
    return "must not contain NUL characters (U+0000)" if "\\u0000" in text else None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str) -> tuple[object, str | None]:
    """The decoded JSON value, or None and the reason it is malformed."""
    try:
        return json.loads(text, parse_constant=_reject_constant), None
    except json.JSONDecodeError as exc:
        return None, f"malformed JSON: {exc.msg} at column {exc.colno}"
    except (ValueError, RecursionError) as exc:
        return None, f"malformed JSON: {exc}"


def _messages_in(text: str) -> object:
    """Chat messages encoded as JSON text (a message or a list of them), decoded; else the text."""
    if text.lstrip()[:1] not in ("[", "{"):
        return text
    value, problem = loads(text)
    items = [value] if isinstance(value, dict) else value
    if problem or not isinstance(items, list) or not items:
        return text
    return value if all(isinstance(m, dict) and "role" in m for m in items) else text


class _Check:
    """Normalizes the fields of one record, collecting every problem found; problems name the
    record's own fields (`sources`: importer name -> the record's name)."""

    def __init__(self, file: str, line: int, raw: str, unit: str, *, form: bool = False) -> None:
        self.file, self.line, self.raw, self.unit, self.form = file, line, raw[:RAW_CHARS], unit, form
        self.errors: list[RecordError] = []
        self.sources: Mapping[str, str] = {}

    def fail(self, name: str | None, reason: str) -> None:
        if name and self.sources:
            head = re.match(r"[^.\[]*", name).group()
            name = self.sources.get(head, head) + name[len(head) :]
        if reason == "is required" and any(e.field == name for e in self.errors):
            return  # already named: a mapped path that finds nothing
        self.errors.append(RecordError(self.file, self.line, name, reason, self.raw, self.unit))

    def text(self, value: object, name: str, *, empty: bool = False) -> str | None:
        if not isinstance(value, str):
            return self.fail(name, f"must be a string, got {type_name(value)}")
        if not empty and not value.strip():
            return self.fail(name, "must be a non-empty string")
        problem = _char_problem(value)
        return self.fail(name, problem) if problem else value

    def label(self, value: object, name: str) -> str:
        """An optional name such as a model's; "" when absent or invalid."""
        if value is not None and not isinstance(value, str):
            self.fail(name, f"must be a string, got {type_name(value)}")
        elif value and (problem := _char_problem(value)):
            self.fail(name, problem)
        return value if isinstance(value, str) else ""

    def content(self, value: object, name: str, *, empty: bool) -> str | None:
        """Message content: a string, or a list of parts whose text parts are joined."""
        if not isinstance(value, list):
            if not isinstance(value, str):
                return self.fail(name, f"must be a string or a list of parts, got {type_name(value)}")
            return self.text(value, name, empty=empty)
        texts, before = [], len(self.errors)
        for i, part in enumerate(value):
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(part, str) or kind in _TEXT_PARTS:
                texts.append(self.text(part if isinstance(part, str) else part.get("text"), f"{name}[{i}]"))
            elif kind in _MEDIA:
                self.fail(f"{name}[{i}]", _MEDIA[kind])
            else:
                found = repr(kind) if isinstance(kind, str) else type_name(part)
                self.fail(f"{name}[{i}]", f"content parts of type {found[:40]} are not supported, only text")
        if len(self.errors) > before:
            return None
        joined = "\n\n".join(texts)
        return joined if empty or joined.strip() else self.fail(name, "must hold some text")

    def message(self, value: object, name: str) -> Message | None:
        """A chat message: role, content, and what else it carries (tool calls, ids, names) as given."""
        if not isinstance(value, dict):
            return self.fail(name, f"must be a message object, got {type_name(value)}")
        before, role = len(self.errors), value.get("role")
        if "role" not in value:
            self.fail(f"{name}.role", "is required")
        elif not isinstance(role, str):
            self.fail(f"{name}.role", f"must be a string, got {type_name(role)}")
        elif role not in ROLES:
            self.fail(f"{name}.role", f"must be one of {', '.join(ROLES)}, got {role[:40]!r}")
        calls = value.get("tool_calls")
        if calls is not None and (
            not isinstance(calls, list) or not calls or not all(isinstance(c, dict) for c in calls)
        ):
            self.fail(f"{name}.tool_calls", f"must be a list of tool calls (objects), got {type_name(calls)}")
        content: str | None = ""
        if value.get("content") is not None:
            content = self.content(value["content"], f"{name}.content", empty=role in ("assistant", "tool"))
        elif not calls:
            self.fail(f"{name}.content", "is required")
        rest = {k: v for k, v in value.items() if k not in ("role", "content") and v is not None}
        for key in ("tool_call_id", "name"):
            if key in rest and not isinstance(rest[key], str):
                self.fail(f"{name}.{key}", f"must be a string, got {type_name(rest[key])}")
        if rest and (problem := _json_problem(rest)):
            self.fail(name, problem)
        return None if len(self.errors) > before else {"role": role, "content": content, **rest}

    def conversation(self, value: object, name: str) -> str | list[Message] | None:
        """A side or a prompt: text, an HH-RLHF transcript (as turns), a message or a list of them."""
        if isinstance(value, str):
            if is_transcript(value):
                return transcript_turns(value)
            if value.startswith(MESSAGES_MARK):
                return self.fail(name, "must not start with U+001E (it marks a list of messages)")
            return self.text(value, name, empty=True)
        if isinstance(value, dict):
            message = self.message(value, name)
            return [message] if message else None
        if not isinstance(value, list):
            return self.fail(name, f"must be a string or a list of messages, got {type_name(value)}")
        if not value:
            return self.fail(name, "must not be an empty list")
        messages = [self.message(item, f"{name}[{i}]") for i, item in enumerate(value)]
        return None if None in messages else messages

    def prompt(self, value: object) -> Prompt | None:
        prompt = self.conversation(value, "prompt")
        if isinstance(prompt, str) and not prompt.strip():
            return self.fail("prompt", "must be a non-empty string")
        return prompt

    def external_id(self, value: object) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if value is None or isinstance(value, str):
            return self.label(value, "id")
        self.fail("id", f"must be a string or an integer, got {type_name(value)}")
        return ""

    def metadata(self, value: object, extras: dict[str, Any]) -> dict:
        """The record's metadata object with the fields no layout reads added (a clash keeps both)."""
        if value is not None and not isinstance(value, dict):
            self.fail("metadata", f"must be a JSON object, got {type_name(value)}")
            return {}
        merged = dict(value or {})
        for key, extra in extras.items():
            merged[key if key not in merged else f"field:{key}"] = extra
        if merged and (problem := _json_problem(merged)):
            self.fail("metadata", problem)
        return merged

    def gold(self, value: object) -> str | None:
        label = value.strip().lower() if isinstance(value, str) else None
        if value is not None and label not in GOLD_LABELS:
            found = repr(value[:40]) if isinstance(value, str) else type_name(value)
            self.fail("gold", f"must be one of a, b, tie, got {found}")
        return label

    def desirable(self, value: object) -> bool | None:
        if isinstance(value, bool):
            return value
        if isinstance(value, str | int) and str(value).strip().lower() in ("true", "false", "1", "0"):
            return str(value).strip().lower() in ("true", "1")
        found = repr(value[:40]) if isinstance(value, str) else type_name(value)
        return self.fail("label", f"must be true or false, got {found}")

    def original(self, values: Mapping[str, Any], meanings: Mapping[str, str]) -> str | None:
        """The dataset's own preference between response A and B ("a", "b", or "t" for a tie) from a
        mapped label (its value as `meanings` or LABEL_WORDS say) or pair of scores (the higher wins);
        None when the record has none."""
        if "label" in values:
            value = values["label"]
            key = value_key(value)
            if key is None:
                found = type_name(value)
                return self.fail("label", f"must be a number or a text such as model_a, got {found}")
            meaning = meanings.get(key) or LABEL_WORDS.get(key)
            if meaning is None:
                shown = repr(value.strip()[:40]) if isinstance(value, str) else key
                known = f"one of the label values ({', '.join(meanings)})" if meanings else "a label value"
                where = values_hint(self.form)
                return self.fail("label", f"{shown} is not {known}; say what it means {where}")
            return ORIGINAL_LABELS[meaning]
        if "score_a" not in values and "score_b" not in values:
            return None
        a, b = (self.score(values.get(name), name) for name in ("score_a", "score_b"))
        if a is None or b is None:
            return None
        return "a" if a > b else "b" if b > a else ORIGINAL_LABELS["tie"]

    def score(self, value: object, name: str) -> float | None:
        if value is None:
            return self.fail(name, "is required: the label is read from both scores")
        number = as_number(value)
        if number is None:
            found = repr(value[:40]) if isinstance(value, str) else type_name(value)
            return self.fail(name, f"must be a number, got {found}")
        return number


@dataclass
class _Sides:
    """A record's prompt and responses, after the turns conversational sides share moved to the prompt."""

    prompt: Prompt
    texts: list[str]
    notes: list[str] = field(default_factory=list)
    kept: dict[str, Any] = field(default_factory=dict)


def _repeats(given: Prompt, prefix: list[Message]) -> bool:
    if isinstance(given, str):
        return any(m["role"] == "user" and comparable(m["content"]) == comparable(given) for m in prefix)
    return prompt_key(given) == prompt_key(prefix[: len(given)])


def _repeats_text(prompt: str, side: str | list[Message]) -> bool:
    """Whether a text side starts with the whole prompt and goes on after it, from a word boundary."""
    if not isinstance(side, str) or not side.startswith(prompt) or side == prompt:
        return False
    return prompt[-1:].isspace() or side[len(prompt)].isspace()


def _with_system(prompt: Prompt, system: str) -> Prompt:
    turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if turns[0]["role"] == "system" and comparable(turns[0]["content"]) == comparable(system):
        return prompt
    return [{"role": "system", "content": system}, *turns]


def _assemble(
    check: _Check, given: Prompt | None, sides: list[str | list[Message]], names: list[str], implicit: bool
) -> _Sides | None:
    """The prompt and each side's response: sides that are conversations give their longest common
    prefix of whole turns to the prompt (TRL's extract_prompt); with `implicit`, two texts without a
    prompt give their shared beginning."""
    result = _Sides(prompt=given or "", texts=[])
    if any(isinstance(s, list) and any(m["role"] != "assistant" for m in s) for s in sides):
        turns = [s if isinstance(s, list) else [{"role": "assistant", "content": s}] for s in sides]
        prefix, replies = split_turns(turns)
        if not prefix and given is None:
            return check.fail(
                names[0],
                f"shares no first turn with {names[1]}, so there is no prompt to "
                f"show; add a prompt field or map one {map_hint(check.form)}",
            )
        if prefix and given is not None:
            repeated = _repeats(given, prefix)
            result.notes.append(NOTE_REPEATED if repeated else NOTE_PROMPT_KEPT)
            result.kept = {} if repeated else {"prompt": given}
        result.prompt = prefix or given
        if any(len(reply) > 1 for reply in replies):
            result.notes.append(NOTE_EARLY)
    elif given is None:
        if not implicit or not all(isinstance(s, str) for s in sides):
            return check.fail("prompt", "is required")
        prompt, *replies = split_text(*sides)
        if not prompt.strip():
            return check.fail(
                names[0],
                f"shares no beginning with {names[1]}, so there is no prompt to "
                f"show; add a prompt field or map one {map_hint(check.form)}",
            )
        result.prompt = prompt
        result.notes.append(NOTE_IMPLICIT)
    elif isinstance(given, str) and all(_repeats_text(given, s) for s in sides):
        replies = [s.removeprefix(given) for s in sides]
        result.notes.append(NOTE_REPEATED)
    else:
        replies = sides
    for reply, name in zip(replies, names, strict=True):
        if isinstance(reply, list) and reply[-1]["role"] != "assistant":
            check.fail(name, f"must end with an assistant message, got a {reply[-1]['role']} message")
        result.texts.append(reply if isinstance(reply, str) else response_text(reply))
    return result


def _distinct(check: _Check, texts: list[str], keys: list[str], names: list[str]) -> None:
    for i, j in itertools.combinations(range(len(texts)), 2):
        if keys[i] == keys[j]:
            same = "" if texts[i] == texts[j] else " as annotators see it (only line ends or spaces differ)"
            return check.fail(names[j], f"is identical to {names[i]}{same}")
    return None


def round_robin(n: int) -> Iterator[tuple[int, int]]:
    """Every pair of n items, in rounds (the circle method) where each item appears once per round:
    any prefix of ceil(n/2) pairs or more shows every item."""
    seats: list[int | None] = [*range(n), *([None] if n % 2 else [])]
    for _ in range(len(seats) - 1):
        for i in range(len(seats) // 2):
            a, b = seats[i], seats[-1 - i]
            if a is not None and b is not None:
                yield min(a, b), max(a, b)
        seats = [seats[0], seats[-1], *seats[1:-1]]


def _choose_pairs(n: int, cap: int) -> tuple[list[tuple[int, int]], int]:
    """Pairs of n distinct responses under `cap` (all when they fit, else rounds that show every
    response first), and how many the cap left out."""
    total = n * (n - 1) // 2
    if total <= cap:
        return list(itertools.combinations(range(n), 2)), 0
    return list(itertools.islice(round_robin(n), cap)), total - cap


def _decode_cells(check: _Check, record: dict[str, Any], *, text_cells: bool) -> dict[str, Any]:
    """Chat messages given as JSON text decoded; with `text_cells` (CSV) the JSON columns too."""
    decoded = dict(record)
    for name in _MESSAGE_FIELDS:
        if isinstance(decoded.get(name), str):
            decoded[name] = _messages_in(decoded[name])
    for name in _JSON_CELLS if text_cells else ():
        if isinstance(decoded.get(name), str) and decoded[name].strip():
            decoded[name], problem = loads(decoded[name])
            if problem:
                decoded[name] = None
                check.fail(name, problem)
    return decoded


def parse_record(
    obj: object,
    *,
    file: str,
    line: int,
    raw: str,
    options: ImportOptions = DEFAULT_OPTIONS,
    mapping: Mapping[str, Any] | None = None,
    unit: str = "line",
    text_cells: bool = False,
) -> list[PairRecord] | list[RecordError] | list[Completion]:
    """The pairs one decoded record yields (or, for an unpaired row, its completion), or every problem
    found in it. `mapping` renames fields first (importer name -> the record's field, and under
    `label_values` what each value of the label means); `text_cells` says the values are CSV cells,
    where JSON columns are decoded."""
    check = _Check(file, line, raw, unit, form=options.form)
    if not isinstance(obj, dict):
        check.fail(None, f"record must be a JSON object, got {type_name(obj)}")
        return check.errors
    record, sources, displaced, missing = rename(obj, mapping)
    check.sources = sources
    for target, reason in missing.items():
        if target in _REQUIRED_WHEN_MAPPED:
            check.fail(target, reason)
    record = _decode_cells(check, record, text_cells=text_cells)
    fields = fields_of(record, sources, displaced, mapped=bool(sources))
    if fields is None:
        if not check.errors:
            check.fail(None, no_layout_reason([str(k) for k in obj], form=options.form))
        return check.errors
    check.sources = fields.sources
    if not sources:
        return _records(check, fields, options, {}, [])
    for target in fields.ignored:
        check.fail(target, ignored_reason(fields.layout, target))
    meanings = label_values_of(mapping)
    if meanings and fields.layout.kind == "unpaired":
        reason = "label values say which of two responses is better; an unpaired (KTO) label is true or false"
        check.fail("label", reason)
    optional = [target for target in missing if target not in _REQUIRED_WHEN_MAPPED]
    absent = [f"{sources[t]}, mapped to {t}, is {missing[t]}: read as absent" for t in optional]
    return _records(check, fields, options, meanings, absent)


_SIDES = {
    "pair": ["response_a", "response_b"],
    "preference": ["chosen", "rejected"],
    "unpaired": ["completion"],
}


def note_unaudited(names: tuple[str, ...]) -> str:
    """The note for a pair with fields of its own that look like the dataset's preference, unread."""
    one = len(names) == 1
    return (
        f"{NOTE_UNAUDITED}{', '.join(names)} {'looks' if one else 'look'} like the dataset's preference but "
        f"{'is' if one else 'are'} not mapped to label (kept as metadata)"
    )


def _records(
    check: _Check, fields: Fields, options: ImportOptions, meanings: Mapping[str, str], notes: list[str]
) -> list:
    values, kind = fields.values, fields.layout.kind
    if kind == "responses":
        raw_sides = values["responses"]
        if not isinstance(raw_sides, list):
            check.fail("responses", f"must be an array of responses, got {type_name(raw_sides)}")
            raw_sides = []
        names = [f"responses[{i}]" for i in range(len(raw_sides))]
    else:
        names = _SIDES[kind]
        raw_sides = [values.get(name, _MISSING) for name in names]
    given = check.prompt(values["prompt"]) if "prompt" in values else None
    sides = [
        check.fail(name, "is required") if side is _MISSING else check.conversation(side, name)
        for side, name in zip(raw_sides, names, strict=True)
    ]
    system = check.text(values["system"], "system") if "system" in values else None
    models = _models(check, values, kind, len(names))
    gold = check.gold(values.get("gold"))
    external_id = check.external_id(values.get("id"))
    desirable = check.desirable(values["label"]) if kind == "unpaired" else None
    original = check.original(values, meanings) if kind == "pair" else None
    metadata = check.metadata(values.get("metadata"), fields.extras)
    if kind == "responses" and len(sides) < 2 and isinstance(values["responses"], list):
        check.fail("responses", f"must hold at least 2 distinct responses, got {len(sides)}")
    if check.errors or None in sides or ("prompt" in values and given is None):
        return check.errors
    assembled = _assemble(check, given, sides, names, implicit=kind == "preference")
    if assembled is None or check.errors:
        return check.errors
    prompt = _with_system(assembled.prompt, system) if system else assembled.prompt
    if assembled.kept:
        metadata = check.metadata(metadata, assembled.kept)
    keys = [response_key(text) for text in assembled.texts]
    if kind == "responses" and (distinct := len(set(keys))) < 2:
        check.fail("responses", f"must hold at least 2 distinct responses, got {distinct}")
    elif kind != "responses":
        _distinct(check, assembled.texts, keys, names)
    if check.errors:
        return check.errors
    kept = tuple(sorted({*fields.extras, *assembled.kept}))
    if kind == "unpaired":
        completion = Completion(
            file=check.file,
            line=check.line,
            raw=check.raw,
            external_id=external_id,
            prompt=prompt,
            text=assembled.texts[0],
            desirable=bool(desirable),
            metadata=metadata,
            layout=fields.layout_name,
            kept=kept,
            unit=check.unit,
        )
        return [completion]
    notes = [*assembled.notes, *notes, *([note_unaudited(fields.unaudited)] if fields.unaudited else [])]
    common = {"layout": fields.layout_name, "notes": tuple(notes), "kept": kept, "unit": check.unit}
    drafts, left_out = _drafts(assembled.texts, keys, models, kind, options)
    records, prompt_as_seen = [], prompt_key(prompt)
    for (a, key_a), (b, key_b), model_a, model_b, suffix in drafts:
        digest, label = keys_hash(prompt_as_seen, key_a, key_b), original
        if kind == "preference":  # a coin from the content decides which side the chosen response takes
            label = "b" if int(digest, 16) & 1 else "a"
            a, b, model_a, model_b = (b, a, model_b, model_a) if label == "b" else (a, b, model_a, model_b)
        ident = (f"{external_id}:{suffix}" if external_id else "") if suffix else external_id
        records.append(
            PairRecord(
                line=check.line,
                external_id=ident,
                prompt=prompt,
                response_a=a,
                response_b=b,
                model_a=model_a,
                model_b=model_b,
                metadata=metadata,
                gold=gold if kind == "pair" else None,
                original_label=label,
                shape=kind,
                content_hash=digest,
                left_out=0 if records else left_out,
                **common,
            )
        )
    return records


def _models(check: _Check, values: dict[str, Any], kind: str, count: int) -> list[str]:
    if kind == "pair":
        return [check.label(values.get("model_a"), "model_a"), check.label(values.get("model_b"), "model_b")]
    if kind == "preference":
        return [check.label(values.get(f"{side}_model"), f"{side}_model") for side in ("chosen", "rejected")]
    models = values.get("models")
    if kind != "responses" or models is None:
        return [""] * count
    if not isinstance(models, list):
        check.fail("models", f"must be an array of strings, got {type_name(models)}")
    elif len(models) != count:
        check.fail("models", f"has {plural(len(models), 'name')} for {plural(count, 'response')}")
    else:
        return [check.label(model, f"models[{i}]") for i, model in enumerate(models)]
    return [""] * count


def _drafts(
    texts: list[str], keys: list[str], models: list[str], kind: str, options: ImportOptions
) -> tuple[list[tuple[tuple[str, str], tuple[str, str], str, str, str]], int]:
    """((response_a, its key), (response_b, its key), model_a, model_b, id suffix) for each pair, and
    the pairs the cap left out."""
    sides = list(zip(texts, keys, strict=True))
    if kind != "responses":
        return [(sides[0], sides[1], models[0], models[1], "")], 0
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    kept = sorted(first.values())
    chosen, left_out = _choose_pairs(len(kept), options.max_pairs_per_record)
    pairs = [(kept[i], kept[j]) for i, j in chosen]
    return [(sides[i], sides[j], models[i], models[j], f"{i}-{j}") for i, j in pairs], left_out
