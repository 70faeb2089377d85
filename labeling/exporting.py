"""Rows in TRL's preference formats and the streaming writers that put them in JSONL or Parquet files.

Pure Python: this module must not import Django, and imports pyarrow only when a Parquet file or a
schema is asked for (the export preview needs neither).

Shapes (every row of the first four begins with `id`, the pair's stable id, and ends with `meta`, see
below; the keys of a row are in this order in the files and in the preview):
- "standard": `prompt`, `chosen`, `rejected` strings, no chat template applied. A chat prompt of
  one user message becomes its text; a longer chat prompt cannot be a string without a template, so
  such pairs are dropped with reason "chat_prompt".
- "conversational": `prompt` a list of `{"role", "content"}` messages (a string prompt becomes one
  user message), `chosen` / `rejected` each a list of one assistant message.
- "unpaired" and "unpaired-conversational": TRL's unpaired preference rows for KTO, `prompt`,
  `completion`, `label` (bool), as strings / as messages like the two shapes above. A kept A/B
  pair gives a desirable row (its chosen response) and an undesirable one; a kept both-bad pair
  gives two undesirable rows; a tie says nothing about either response being good or bad, so it
  gives none (reason "tie").
- "openai-preference": the preference fine-tuning format of hosted services (OpenAI, Together,
  Fireworks): `input` ({"messages": the prompt as messages}), `preferred_output` and
  `non_preferred_output` (each a list of one assistant message), and nothing else: these services
  refuse a line with other keys, so the rows have no `id` and no `meta`. Their messages hold role and
  content only: a pair with tool calls or other keys is dropped ("tool_calls_hosted"), and one with a
  response of several messages too ("chat_response").
The preference shapes have no row for a tie or a both-bad pair, even when the rules keep them
(reasons "tie" and "both_bad").

`meta` has the same keys on every row of a file: `pair_pk` (int), `label` (the consensus label: "a",
"b" or "both_bad"), `votes` ({"a", "b", "tie", "both_bad"}: counted votes, in the pair's A/B order),
`share` (float), `adjudicated` (bool), `criteria` (an object: criterion -> label -> votes, in A/B
order), then, when the export lets an AI judge fill the pairs people left unsettled, `source`
("people" or "judge") and `judge` ({"name", "probability"} on a judge's rows, {} on people's), then,
when the export includes pair metadata, `metadata` (the pair's imported metadata, an
object as imported); preference shapes add `models` ({"chosen", "rejected"}: model names, "" when
unknown); unpaired shapes add `side` ("a" or "b": which response the completion is) and `model`.
In JSONL `criteria` and `metadata` are JSON objects, never JSON text inside a string. Parquet has no
type for free-form objects: they are columns of Parquet's JSON type (pyarrow's `pa.json_()`), which
`datasets` reads back as the same objects. `datasets` (5.x) loads a JSONL file whose metadata objects
differ from row to row as its `Json` feature, giving every row's object back, but it re-encodes such
a file's lines with 10 significant digits first: its floats (`share` too) come back rounded so.

Pairs go to "train" or "eval" by a hash of their id (`split_of`), so a pair stays in its split in
every later snapshot, and both rows of an unpaired pair go to the same split.

Files: JSONL is UTF-8, one compact JSON object per line, with U+0085, U+2028 and U+2029 escaped so
that no reader splits a row. Parquet is zstd-compressed, with the explicit schema of `schema(shape)`,
so an empty file still has its columns. (`datasets` refuses to load a split with no rows: load only
the files whose FileInfo.rows > 0.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from labeling.consensus import LABELS, Decision
from labeling.conversations import MESSAGES_MARK, response_messages

HOSTED = "openai-preference"
SHAPES = ("standard", "conversational", "unpaired", "unpaired-conversational", HOSTED)
FORMATS = ("jsonl", "parquet")
SPLITS = ("train", "eval")
DEFAULT_EVAL_FRACTION = 0.05

_UNPAIRED = ("unpaired", "unpaired-conversational")
_TEXT_SHAPES = ("standard", "unpaired")
# Rows buffered before they are written (a Parquet row group, or a batch of JSON lines): at most
# ROW_GROUP_ROWS rows, fewer when their texts reach ROW_GROUP_CHARS characters, so that long
# responses do not make the buffer, and the peak memory, grow.
ROW_GROUP_ROWS = 4096
ROW_GROUP_CHARS = 8 << 20
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
# Characters valid inside a JSON string that str.splitlines() and some JSONL readers take for a line
# break; written as escapes so that every row is exactly one line for any reader.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


@dataclass(slots=True)
class ExportPair:
    """One pair as the export reads it (not frozen: a million of them are built per export, and a
    frozen dataclass takes about 4 times as long to construct; nothing here changes one).

    `id`: the stable external id (see `pair_id`). `prompt`: a string or a list of `{"role",
    "content"}` messages (system / user / assistant turns). `criteria`: criterion name -> label ->
    counted votes, in A/B order (empty without criteria). `metadata`: the pair's imported metadata.
    `criteria` and `metadata` may also be given as the JSON text of an object (e.g. `metadata::text`
    from PostgreSQL), which JSONL files hold as it is, saving a decode and an encode per pair.
    """

    id: str
    pair_pk: int
    prompt: str | Sequence[Mapping[str, str]]
    response_a: str
    response_b: str
    model_a: str = ""
    model_b: str = ""
    criteria: Mapping[str, Mapping[str, int]] | str = field(default_factory=dict)
    metadata: Mapping[str, Any] | str = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One written file: its name inside the snapshot directory, its split, the rows and pairs in
    it, its size in bytes and the hex sha256 of its content."""

    name: str
    split: str
    rows: int
    pairs: int
    bytes: int
    sha256: str


def pair_id(*, external_id: str, pk: int) -> str:
    """The id a pair is exported (and split) under: its external id, or "pair-<pk>" without one."""
    return external_id or f"pair-{pk}"


def _check_fraction(eval_fraction: float) -> None:
    if (
        not isinstance(eval_fraction, int | float)
        or isinstance(eval_fraction, bool)
        or not 0 <= eval_fraction < 1
    ):
        raise ValueError(f"eval_fraction must be a number from 0 to below 1, got {eval_fraction!r}")


def split_of(pair_id: str, eval_fraction: float) -> str:
    """ "eval" for about `eval_fraction` of ids, "train" for the rest, by the first 8 bytes of the
    sha256 of the id's UTF-8 bytes: stable across processes, machines and Python versions. An id
    in eval at one fraction stays in eval at any larger one. Raises ValueError for a fraction
    outside [0, 1)."""
    _check_fraction(eval_fraction)
    return _split(pair_id, eval_fraction)


def _split(pair_id: str, eval_fraction: float) -> str:
    point = int.from_bytes(hashlib.sha256(pair_id.encode("utf-8")).digest()[:8], "big")
    return "eval" if point < eval_fraction * 2**64 else "train"


def is_flat_prompt(prompt: str | Sequence[Mapping[str, str]]) -> bool:
    """Whether the prompt can be a plain string in the text shapes: a string, or one user message.
    (In SQL over the stored JSON: jsonb_typeof(prompt) = 'string' OR (jsonb_array_length(prompt) = 1
    AND prompt->0->>'role' = 'user').)"""
    return isinstance(prompt, str) or (len(prompt) == 1 and prompt[0]["role"] == "user")


def has_plain_responses(pair: ExportPair) -> bool:
    """Whether both responses are plain texts (not several messages, see labeling.conversations)."""
    return not (pair.response_a.startswith(MESSAGES_MARK) or pair.response_b.startswith(MESSAGES_MARK))


def has_extra_keys(pair: ExportPair) -> bool:
    """Whether a message of the pair carries more than role and content (tool calls, a tool call id)."""
    messages = [] if isinstance(pair.prompt, str) else list(pair.prompt)
    for response in (pair.response_a, pair.response_b):
        messages += response_messages(response) or []
    return any(set(message) - {"role", "content"} for message in messages)


def drop_reason(
    decision: Decision,
    *,
    shape: str,
    flat_prompt: bool = True,
    plain_responses: bool = True,
    extra_keys: bool = False,
    fmt: str = "jsonl",
) -> str | None:
    """Why a pair gives no rows in `shape`, or None when it gives some: the decision's own reason,
    "tie" / "both_bad" for kept pairs the shape cannot express, "chat_prompt" for a prompt that is
    not flat (`is_flat_prompt`) and "chat_response" for a response of several messages in a text
    shape or the hosted one, "tool_calls_hosted" for messages with more than role and content in the
    hosted shape, "tool_calls" for such messages in a Parquet file (its message struct holds those
    two; JSONL keeps every key). Raises ValueError for an unknown shape."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    if not decision.kept:
        return decision.reason
    if decision.label == "tie" or (decision.chosen is None and shape not in _UNPAIRED):
        return decision.label
    if shape in _TEXT_SHAPES and not flat_prompt:
        return "chat_prompt"
    if shape in (*_TEXT_SHAPES, HOSTED) and not plain_responses:
        return "chat_response"
    if shape == HOSTED and extra_keys:
        return "tool_calls_hosted"
    if fmt == "parquet" and extra_keys:
        return "tool_calls"
    return None


# The fields of a row, leaf by leaf, as (dotted path, kind), in column order. One list per shape (and
# with or without pair metadata) is the single description that the dict rows, the JSON lines, the
# pyarrow schema and the Parquet columns are all derived from.
_META_FIELDS = (
    ("meta.pair_pk", "int"),
    ("meta.label", "text"),
    *((f"meta.votes.{label}", "int") for label in LABELS),
    ("meta.share", "float"),
    ("meta.adjudicated", "bool"),
    ("meta.criteria", "json"),
)
# With an AI judge filling pairs people left unsettled: who labelled each row, and the judge's name and
# probability ({} on people's rows).
_JUDGE_FIELDS = (("meta.source", "text"), ("meta.judge", "json"))


def _shape_fields(shape: str, metadata: bool, judged: bool = False) -> tuple[tuple[str, str], ...]:
    # Kinds: "messages" holds a prompt as given (a string is one user message), "reply" a response
    # text that is written as one assistant message, "json" an object (or its JSON text); the other
    # kinds are plain values.
    if shape == HOSTED:
        return (
            ("input.messages", "messages"),
            ("preferred_output", "reply"),
            ("non_preferred_output", "reply"),
        )
    prompt, reply = ("text", "text") if shape in _TEXT_SHAPES else ("messages", "reply")
    meta = (
        *_META_FIELDS,
        *(_JUDGE_FIELDS if judged else ()),
        *((("meta.metadata", "json"),) if metadata else ()),
    )
    if shape in _UNPAIRED:
        head = (("id", "text"), ("prompt", prompt), ("completion", reply), ("label", "bool"))
        tail = (("meta.side", "text"), ("meta.model", "text"))
    else:
        head = (("id", "text"), ("prompt", prompt), ("chosen", reply), ("rejected", reply))
        tail = (("meta.models.chosen", "text"), ("meta.models.rejected", "text"))
    return (*head, *meta, *tail)


_FIELDS = {
    (shape, metadata, judged): _shape_fields(shape, metadata, judged)
    for shape in SHAPES
    for metadata in (True, False)
    for judged in (True, False)
}


def _nest(paths: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for path, value in zip(paths, values, strict=True):
        *parents, leaf = path.split(".")
        target = row
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return row


def _messages(prompt: str | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The prompt as messages, every key kept (tool calls, tool call ids)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(message) for message in prompt]


def _reply(text: str) -> list[dict[str, Any]]:
    """A response as messages: one assistant message, or the messages a multi-message response holds."""
    return response_messages(text) or [{"role": "assistant", "content": text}]


def _json_text(value: Mapping[str, Any] | str) -> str:
    """An object's compact JSON text on one line; JSON text is taken as it is, unless it spans lines
    (pretty-printed), which one JSON line cannot hold."""
    if isinstance(value, str):
        if "\n" in value or "\r" in value:
            return _JSON.encode(json.loads(value))
        return value
    return _JSON.encode(dict(value)) if value else "{}"


def _json_value(value: Mapping[str, Any] | str) -> Any:
    return json.loads(_json_text(value))


# Leaf values as the rows hold them, by kind (other kinds are held as they are).
_VALUES = {"messages": _messages, "reply": _reply, "json": _json_value}


def _encode_message_list(messages: Sequence[Mapping[str, Any]]) -> str:
    encode = json.encoder.encode_basestring
    if all(len(message) == 2 for message in messages):  # role and content: the common, fast case
        return (
            "["
            + ",".join(
                f'{{"role":{encode(message["role"])},"content":{encode(message["content"])}}}'
                for message in messages
            )
            + "]"
        )
    return _JSON.encode([dict(message) for message in messages])


def _encode_messages(prompt: str | Sequence[Mapping[str, Any]]) -> str:
    if isinstance(prompt, str):
        return f'[{{"role":"user","content":{json.encoder.encode_basestring(prompt)}}}]'
    return _encode_message_list(prompt)


def _encode_reply(text: str) -> str:
    if text.startswith(MESSAGES_MARK) and (messages := response_messages(text)):
        return _encode_message_list(messages)
    return f'[{{"role":"assistant","content":{json.encoder.encode_basestring(text)}}}]'


class _FloatText(dict[float, str]):
    """float -> its JSON text, remembered: shares are few distinct ratios, and repr is slow."""

    def __missing__(self, value: float) -> str:
        if len(self) >= 4096:
            self.clear()
        text = self[value] = float.__repr__(value)
        return text


_ENCODERS = {
    "text": json.encoder.encode_basestring,
    "messages": _encode_messages,
    "reply": _encode_reply,
    "int": int.__repr__,
    "float": _FloatText().__getitem__,
    "bool": {False: "false", True: "true"}.__getitem__,
    "json": _json_text,
}


def _line_template(fields: Sequence[tuple[str, str]]) -> str:
    """A %-template of one JSON line with a %s per leaf: the JSON encoding of the nested row whose
    leaves are placeholders. Keys are our own constants, so they hold no % sign."""
    placeholders = [f"@{i}@" for i in range(len(fields))]
    text = json.dumps(_nest([path for path, _ in fields], placeholders), separators=(",", ":"))
    for placeholder in placeholders:
        text = text.replace(f'"{placeholder}"', "%s", 1)
    return text


def _flat_rows(
    pair: ExportPair, decision: Decision, shape: str, metadata: bool, judge: str | None = None
) -> list[tuple[Any, ...]]:
    """The leaf values of the rows of a pair that gives rows, in the order of
    _FIELDS[shape, metadata, judge is not None]."""
    prompt: Any = pair.prompt
    if shape in _TEXT_SHAPES and not isinstance(prompt, str):
        prompt = prompt[0]["content"]
    first, second, first_model, second_model = pair.response_a, pair.response_b, pair.model_a, pair.model_b
    if decision.chosen == "b":
        first, second, first_model, second_model = second, first, second_model, first_model
    if shape == HOSTED:
        return [(prompt, first, second)]
    votes = decision.votes
    # Spelled out rather than derived from LABELS: this runs once per exported pair.
    meta = (
        pair.pair_pk,
        decision.label,
        votes["a"],
        votes["b"],
        votes["tie"],
        votes["both_bad"],
        decision.share,
        decision.adjudicated,
        pair.criteria,
    )
    if judge is not None:
        filled = decision.judge_probability is not None
        marks = {"name": judge, "probability": decision.judge_probability} if filled else {}
        meta = (*meta, decision.source, marks)
    if metadata:
        meta = (*meta, pair.metadata)
    if shape not in _UNPAIRED:
        return [(pair.id, prompt, first, second, *meta, first_model, second_model)]
    # Unpaired: the chosen response first (A for a both-bad pair), both undesirable when none is.
    chosen = decision.chosen is not None
    first_side, second_side = ("b", "a") if decision.chosen == "b" else ("a", "b")
    return [
        (pair.id, prompt, first, chosen, *meta, first_side, first_model),
        (pair.id, prompt, second, False, *meta, second_side, second_model),
    ]


def _checked_rows(
    pair: ExportPair, decision: Decision, shape: str, include_metadata: bool, judge: str | None = None
) -> list[tuple[Any, ...]]:
    reason = drop_reason(
        decision,
        shape=shape,
        flat_prompt=is_flat_prompt(pair.prompt),
        plain_responses=has_plain_responses(pair),
        extra_keys=shape == HOSTED and has_extra_keys(pair),
    )
    if reason is not None:
        raise ValueError(f"pair {pair.id!r} gives no rows in the {shape} shape: {reason}")
    return _flat_rows(pair, decision, shape, include_metadata, judge)


def build_rows(
    pair: ExportPair,
    decision: Decision,
    *,
    shape: str,
    include_metadata: bool = True,
    judge: str | None = None,
) -> list[dict[str, Any]]:
    """The rows `pair` gives in `shape` (see the module docstring), as the files hold them, keys in file
    order: one for the preference shapes, two for the unpaired ones. `include_metadata`: whether `meta`
    holds the pair's metadata; `judge`: the name of the AI judge the export lets fill unsettled pairs
    (rows then say their `source` and `judge` in meta). Raises ValueError when `drop_reason` names a
    reason."""
    fields = _FIELDS[shape, include_metadata, judge is not None]
    paths = [path for path, _ in fields]
    convert = [_VALUES.get(kind) for _, kind in fields]
    return [
        _nest(paths, [value if to is None else to(value) for to, value in zip(convert, values, strict=True)])
        for values in _checked_rows(pair, decision, shape, include_metadata, judge)
    ]


def encode_rows(
    pair: ExportPair,
    decision: Decision,
    *,
    shape: str,
    include_metadata: bool = True,
    judge: str | None = None,
) -> list[str]:
    """The lines `pair` gives in a JSONL file of `shape`, without their line breaks (`build_rows` for the
    same rows as dicts). Raises ValueError when `drop_reason` names a reason."""
    encoder = _LineEncoder(_FIELDS[shape, include_metadata, judge is not None])
    return [encoder.line(values) for values in _checked_rows(pair, decision, shape, include_metadata, judge)]


def row_text(row: Mapping[str, Any]) -> str:
    """A row for people to read, as the preview shows it: JSON, one key of the row a line in file order,
    each value compact (an 8 KB list of token ids stays one line)."""
    items = [f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}" for key, value in row.items()]
    return "{\n" + ",\n".join(items) + "\n}"


def columns(shape: str) -> tuple[str, ...]:
    """The columns of a row in `shape`, in order."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    return tuple(dict.fromkeys(path.split(".")[0] for path, _ in _FIELDS[shape, True, False]))


def _tree(fields: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The row of `fields` with the index of each leaf in `fields` as its value."""
    return _nest([path for path, _ in fields], range(len(fields)))


def _arrow_type(kind: str) -> Any:
    import pyarrow as pa

    if kind in ("messages", "reply"):
        return pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    types = {
        "text": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "json": pa.json_(),
    }
    return types[kind]


def _arrow_column(values: list[Any], kind: str) -> Any:
    """A pyarrow array of one leaf column. Message lists are built from flat role and content
    arrays rather than converted from dicts, which would cost a dict per message."""
    import pyarrow as pa

    if kind == "json":
        return pa.array([_json_text(value) for value in values], type=pa.json_())
    if kind not in ("messages", "reply"):
        return pa.array(values, type=_arrow_type(kind))
    if kind == "reply" and not any(text.startswith(MESSAGES_MARK) for text in values):
        roles, contents, offsets = ["assistant"] * len(values), values, range(len(values) + 1)
    else:
        roles, contents, offsets = [], [], [0]
        for value in values:
            if isinstance(value, str):
                messages = _reply(value) if kind == "reply" else [{"role": "user", "content": value}]
            else:
                messages = value
            for message in messages:
                roles.append(message["role"])
                contents.append(message["content"])
            offsets.append(len(roles))
    messages = pa.StructArray.from_arrays(
        [pa.array(roles, type=pa.string()), pa.array(contents, type=pa.string())], names=["role", "content"]
    )
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), messages)


# Module-level recursion, not a nested function calling itself: such a closure is a reference
# cycle, and the arrays it holds would wait for the garbage collector (measured: memory grew by a
# row group per flush until a collection).
def _struct_type(node: int | dict[str, Any], kinds: Sequence[str]) -> Any:
    import pyarrow as pa

    if isinstance(node, dict):
        return pa.struct([(name, _struct_type(child, kinds)) for name, child in node.items()])
    return _arrow_type(kinds[node])


def _struct_array(node: int | dict[str, Any], leaves: Sequence[Any]) -> Any:
    import pyarrow as pa

    if isinstance(node, dict):
        children = [_struct_array(child, leaves) for child in node.values()]
        return pa.StructArray.from_arrays(children, names=list(node))
    return leaves[node]


def _schema(fields: Sequence[tuple[str, str]]) -> Any:
    import pyarrow as pa

    kinds = [kind for _, kind in fields]
    return pa.schema([(name, _struct_type(node, kinds)) for name, node in _tree(fields).items()])


def schema(shape: str, *, include_metadata: bool = True, judged: bool = False) -> Any:
    """The pyarrow schema of `shape` (a `pyarrow.Schema`; typed Any so that importing this module
    does not import pyarrow). Raises ValueError for an unknown shape."""
    columns(shape)
    return _schema(_FIELDS[shape, include_metadata, judged])


class _HashingFile:
    """A binary file opened for exclusive creation that keeps the sha256 and size of what it wrote
    (pyarrow writes to it sequentially, without seeking)."""

    def __init__(self, path: Path) -> None:
        self._file: BinaryIO = open(path, "xb", buffering=1 << 20)  # noqa: SIM115 (closed in close())
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._file.write(data)

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self.closed = True
        self._file.close()


class _LineEncoder:
    """Rows of `fields` (their leaf values) as JSON lines, without line breaks."""

    def __init__(self, fields: Sequence[tuple[str, str]]) -> None:
        self._template = _line_template(fields)
        self._encoders = [_ENCODERS[kind] for _, kind in fields]

    def line(self, values: tuple[Any, ...]) -> str:
        line = self._template % tuple(map(operator.call, self._encoders, values))
        if "\u2028" in line or "\u2029" in line or "\x85" in line:
            line = line.translate(_LINE_BREAKS)
        return line


class _JsonlFile:
    def __init__(self, path: Path, fields: Sequence[tuple[str, str]]) -> None:
        self._sink = _HashingFile(path)
        self._line = _LineEncoder(fields).line
        self._lines: list[str] = []
        self._chars = 0

    def write(self, rows: list[tuple[Any, ...]], chars: int) -> None:
        self._chars += chars
        self._lines.extend(map(self._line, rows))
        if len(self._lines) >= ROW_GROUP_ROWS or self._chars >= ROW_GROUP_CHARS:
            self._flush()

    def _flush(self) -> None:
        if self._lines:
            self._lines.append("")
            self._sink.write("\n".join(self._lines).encode("utf-8"))
            self._lines.clear()
            self._chars = 0

    def close(self) -> _HashingFile:
        self._flush()
        self._sink.close()
        return self._sink


class _ParquetFile:
    def __init__(self, path: Path, fields: Sequence[tuple[str, str]]) -> None:
        import pyarrow.parquet as pq

        self._sink = _HashingFile(path)
        self._schema = _schema(fields)
        self._tree = _tree(fields)
        self._kinds = [kind for _, kind in fields]
        # No min/max statistics: for text columns they are large (kept per row group until the
        # footer is written) and no reader of training data filters on them.
        self._writer = pq.ParquetWriter(self._sink, self._schema, compression="zstd", write_statistics=False)
        self._rows: list[tuple[Any, ...]] = []
        self._chars = 0

    def write(self, rows: list[tuple[Any, ...]], chars: int) -> None:
        self._rows.extend(rows)
        self._chars += chars
        if len(self._rows) >= ROW_GROUP_ROWS or self._chars >= ROW_GROUP_CHARS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._rows:
            return
        # Column by column, each a list: far faster than converting nested dicts, and pyarrow
        # converts a tuple of strings about 70 times slower than a list.
        columns = map(list, zip(*self._rows, strict=True))
        leaves = [_arrow_column(column, kind) for column, kind in zip(columns, self._kinds, strict=True)]
        arrays = [_struct_array(node, leaves) for node in self._tree.values()]
        table = pa.Table.from_arrays(arrays, schema=self._schema)
        self._writer.write_table(table, row_group_size=len(self._rows))
        self._rows.clear()
        self._chars = 0

    def close(self) -> _HashingFile:
        self._flush()
        self._writer.close()
        self._sink.close()
        return self._sink


class SnapshotWriter:
    """Writes the rows of one export into `<directory>/train.<fmt>` and, when `eval_fraction` > 0,
    `<directory>/eval.<fmt>`, streaming: at most a row group per split is held in memory (see
    ROW_GROUP_ROWS), and the sha256 of each file is computed as it is written.

    `fmt`: one of FORMATS; `shape`: one of SHAPES; `eval_fraction`: in [0, 1); `include_metadata`:
    whether `meta` holds each pair's metadata (some datasets carry kilobytes of it a row, token ids
    for instance). The directory must exist; existing files are never overwritten (FileExistsError).
    Feed every pair with `add`, then `close` for the files; `kept` counts pairs written, `dropped`
    counts the others by reason. As a context manager it closes on success and, on an exception,
    `abort`s (the files are removed).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fmt: str,
        shape: str,
        eval_fraction: float = DEFAULT_EVAL_FRACTION,
        include_metadata: bool = True,
        judge: str | None = None,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
        columns(shape)
        _check_fraction(eval_fraction)
        self.fmt, self.shape, self.eval_fraction = fmt, shape, eval_fraction
        self.include_metadata = include_metadata
        self.judge = judge
        self.directory = Path(directory)
        self.kept = 0
        self.dropped: dict[str, int] = {}
        self._rows = dict.fromkeys(SPLITS, 0)
        self._pairs = dict.fromkeys(SPLITS, 0)
        self._paths: dict[str, Path] = {}
        self._files: dict[str, _JsonlFile | _ParquetFile] = {}
        self._infos: list[FileInfo] | None = None
        kind = _JsonlFile if fmt == "jsonl" else _ParquetFile
        fields = _FIELDS[shape, include_metadata, judge is not None]
        try:
            for split in SPLITS if eval_fraction > 0 else SPLITS[:1]:
                path = self.directory / f"{split}.{fmt}"
                self._files[split] = kind(path, fields)
                self._paths[split] = path
        except BaseException:
            self.abort()
            raise

    def add(self, pair: ExportPair, decision: Decision) -> str | None:
        """Write the rows of `pair` to its split; the reason it gives none (counted in `dropped`), or
        None when it was written."""
        if self._infos is not None or not self._files:
            raise ValueError("the writer is closed")
        reason = drop_reason(
            decision,
            shape=self.shape,
            flat_prompt=is_flat_prompt(pair.prompt),
            plain_responses=has_plain_responses(pair),
            extra_keys=(self.fmt == "parquet" or self.shape == HOSTED) and has_extra_keys(pair),
            fmt=self.fmt,
        )
        if reason is not None:
            self.dropped[reason] = self.dropped.get(reason, 0) + 1
            return reason
        rows = _flat_rows(pair, decision, self.shape, self.include_metadata, self.judge)
        split = _split(pair.id, self.eval_fraction) if self.eval_fraction else "train"
        prompt, metadata = pair.prompt, pair.metadata
        chars = len(prompt) if isinstance(prompt, str) else sum(len(m["content"]) for m in prompt)
        if self.include_metadata and isinstance(metadata, str):
            chars += len(metadata)  # kilobytes a row in some datasets: it counts towards the buffer
        self._files[split].write(rows, len(rows) * chars + len(pair.response_a) + len(pair.response_b))
        self._rows[split] += len(rows)
        self._pairs[split] += 1
        self.kept += 1
        return None

    def close(self) -> list[FileInfo]:
        """Finish the files; one FileInfo per split written, train first. Idempotent."""
        if self._infos is None:
            infos = []
            for split, file in self._files.items():
                sink = file.close()
                infos.append(
                    FileInfo(
                        name=self._paths[split].name,
                        split=split,
                        rows=self._rows[split],
                        pairs=self._pairs[split],
                        bytes=sink.size,
                        sha256=sink.sha256.hexdigest(),
                    )
                )
            self._infos = infos
        return list(self._infos)

    def abort(self) -> None:
        """Close and remove the files written so far (after an error); the writer cannot be used."""
        for file in self._files.values():
            with contextlib.suppress(Exception):  # the files are removed anyway
                file.close()
        for path in self._paths.values():
            path.unlink(missing_ok=True)
        self._files.clear()
        self._infos = []

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
