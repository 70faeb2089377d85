"""Record layouts: which public preference-data shape a record has, and the importer's fields it maps to.

Pure Python: this module must not import Django.

A layout is recognised from a record's keys (and, for `chosen` / `rejected`, whether they hold
transcripts, texts or messages). A field mapping (`TARGET=SOURCE`, SOURCE may be a dotted path into
nested objects) renames a record's fields to the importer's own names first, so any other layout
imports too. Fields a layout does not read are returned as `extras`, kept as the pair's metadata.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from labeling.conversations import is_transcript

# The importer's own field names, as mapping targets.
TARGETS = (
    "prompt",
    "system",
    "response_a",
    "response_b",
    "chosen",
    "rejected",
    "responses",
    "model_a",
    "model_b",
    "id",
    "gold",
)
_MISSING = object()


@dataclass(frozen=True)
class Layout:
    """One recognised record layout. `kind` is what the record yields: "pair" (A/B, no label),
    "responses" (every pair of a list), "preference" (chosen/rejected: the label is kept hidden) or
    "unpaired" (one labelled completion; rows with the same prompt are paired)."""

    key: str
    name: str
    kind: str
    needs: tuple[str, ...]
    uses: tuple[str, ...]
    example: str


_PAIR_USES = ("prompt", "system", "response_a", "response_b", "model_a", "model_b", "id", "metadata", "gold")
_PREFERENCE_USES = (
    "prompt",
    "system",
    "chosen",
    "rejected",
    "chosen_model",
    "rejected_model",
    "id",
    "metadata",
)

PAIR = Layout(
    "pair",
    "prefstudio pair",
    "pair",
    ("prompt", "response_a", "response_b"),
    _PAIR_USES,
    '{"prompt": "Name a colour.", "response_a": "Red.", "response_b": "Blue.", "gold": "a"}',
)
RESPONSES = Layout(
    "responses",
    "prefstudio responses list",
    "responses",
    ("prompt", "responses"),
    ("prompt", "system", "responses", "models", "id", "metadata"),
    '{"prompt": "Name a colour.", "responses": ["Red.", "Blue.", "Green."], "models": ["m1", "m2", "m3"]}',
)
TRL_STANDARD = Layout(
    "trl-standard",
    "TRL preference, standard",
    "preference",
    ("prompt", "chosen", "rejected"),
    _PREFERENCE_USES,
    '{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}',
)
TRL_CONVERSATIONAL = Layout(
    "trl-conversational",
    "TRL preference, conversational",
    "preference",
    ("prompt", "chosen", "rejected"),
    _PREFERENCE_USES,
    '{"prompt": [{"role": "user", "content": "Sky colour?"}], '
    '"chosen": [{"role": "assistant", "content": "Blue."}], '
    '"rejected": [{"role": "assistant", "content": "Green."}]}',
)
TRL_IMPLICIT_STANDARD = Layout(
    "trl-implicit-standard",
    "TRL preference, implicit prompt, standard",
    "preference",
    ("chosen", "rejected"),
    _PREFERENCE_USES,
    '{"chosen": "The sky is blue.", "rejected": "The sky is green."}',
)
TRL_IMPLICIT_CONVERSATIONAL = Layout(
    "trl-implicit-conversational",
    "TRL preference, implicit prompt, conversational",
    "preference",
    ("chosen", "rejected"),
    _PREFERENCE_USES,
    '{"chosen": [{"role": "user", "content": "Sky colour?"}, {"role": "assistant", "content": "Blue."}], '
    '"rejected": [{"role": "user", "content": "Sky colour?"}, {"role": "assistant", "content": "Green."}]}',
)
TRL_UNPAIRED = Layout(
    "trl-unpaired",
    "TRL unpaired preference (KTO)",
    "unpaired",
    ("prompt", "completion", "label"),
    ("prompt", "system", "completion", "label", "id", "metadata"),
    '{"prompt": "The sky is", "completion": " blue.", "label": true}',
)
HH_RLHF = Layout(
    "hh-rlhf",
    "HH-RLHF transcripts",
    "preference",
    ("chosen", "rejected"),
    _PREFERENCE_USES,
    '{"chosen": "\\n\\nHuman: Tea for cats?\\n\\nAssistant: No.", '
    '"rejected": "\\n\\nHuman: Tea for cats?\\n\\nAssistant: Sure!"}',
)
ULTRAFEEDBACK = Layout(
    "ultrafeedback",
    "UltraFeedback binarized",
    "preference",
    ("prompt", "prompt_id", "chosen", "rejected", "score_chosen", "score_rejected"),
    _PREFERENCE_USES,
    '{"prompt": "Sky colour?", "prompt_id": "9f2c", '
    '"chosen": [{"role": "user", "content": "Sky colour?"}, {"role": "assistant", "content": "Blue."}], '
    '"rejected": [{"role": "user", "content": "Sky colour?"}, {"role": "assistant", "content": "Green."}], '
    '"score_chosen": 8.0, "score_rejected": 3.0}',
)
OPENAI = Layout(
    "openai-preference",
    "OpenAI / Together preference fine-tuning",
    "preference",
    ("input", "preferred_output", "non_preferred_output"),
    ("input", "preferred_output", "non_preferred_output", "id", "metadata"),
    '{"input": {"messages": [{"role": "user", "content": "Sky colour?"}]}, '
    '"preferred_output": [{"role": "assistant", "content": "Blue."}], '
    '"non_preferred_output": [{"role": "assistant", "content": "Green."}]}',
)

LAYOUTS = (
    PAIR,
    RESPONSES,
    TRL_STANDARD,
    TRL_CONVERSATIONAL,
    TRL_IMPLICIT_STANDARD,
    TRL_IMPLICIT_CONVERSATIONAL,
    TRL_UNPAIRED,
    HH_RLHF,
    ULTRAFEEDBACK,
    OPENAI,
)
KNOWN_KEYS = frozenset(TARGETS).union(*(layout.uses + layout.needs for layout in LAYOUTS))


@dataclass
class Fields:
    """A record's values under the importer's names (`values`), the record's own name of each
    (`sources`, for messages), and the fields no layout reads (`extras`, kept as metadata)."""

    layout: Layout
    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    mapped: bool = False

    @property
    def layout_name(self) -> str:
        return f"{self.layout.name}, fields mapped" if self.mapped else self.layout.name


def recognise(obj: Mapping[str, Any]) -> Layout | None:
    """The layout of a record from its keys with non-null values; None when none fits."""
    present = {key for key, value in obj.items() if value is not None}
    if {"preferred_output", "non_preferred_output"} & present and isinstance(obj.get("input"), dict):
        return OPENAI
    if present & {"response_a", "response_b"}:
        return PAIR
    if "responses" in present:
        return RESPONSES
    if {"completion", "label"} <= present:
        return TRL_UNPAIRED
    if not present & {"chosen", "rejected"}:
        return None
    chosen = obj.get("chosen", obj.get("rejected"))
    if isinstance(chosen, str) and is_transcript(chosen):
        return HH_RLHF
    if "prompt" not in present:
        return TRL_IMPLICIT_STANDARD if isinstance(chosen, str) else TRL_IMPLICIT_CONVERSATIONAL
    if present & {"prompt_id", "score_chosen", "score_rejected"}:
        return ULTRAFEEDBACK
    return TRL_STANDARD if isinstance(chosen, str) and isinstance(obj["prompt"], str) else TRL_CONVERSATIONAL


def closest(keys: set[str] | frozenset[str], *, limit: int = 2) -> list[tuple[Layout, list[str]]]:
    """The layouts sharing most keys with `keys` (fewest needed first), at least half of the keys each
    needs, with the keys each lacks."""
    scored = sorted(
        (-len(set(layout.needs) & keys), len(layout.needs), i) for i, layout in enumerate(LAYOUTS)
    )
    near = [(LAYOUTS[i], -shared) for shared, size, i in scored if -shared * 2 >= size]
    return [(layout, [k for k in layout.needs if k not in keys]) for layout, _ in near[:limit]]


def no_layout_reason(keys: list[str], *, columns: bool = False) -> str:
    """Why a record (or a header of `columns`) fits no layout, naming the closest layouts."""
    shown = ", ".join(keys[:20]) + (", …" if len(keys) > 20 else "")
    near = ", ".join(f"{layout.name} (lacks {', '.join(lacks)})" for layout, lacks in closest(set(keys)))
    what = "columns" if columns else "keys"
    return f"no layout matches {what} [{shown}]{'; closest: ' + near if near else ''}; map them with --map"


def parse_mapping(text: str) -> dict[str, str]:
    """`TARGET=SOURCE[,TARGET=SOURCE...]` as a dict; ValueError saying what is wrong."""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        target, equals, source = (s.strip() for s in item.partition("="))
        if not equals or not target or not source:
            raise ValueError(f"'{item}': write TARGET=SOURCE, e.g. prompt=question")
        mapping[target] = source
    check_mapping(mapping)
    return mapping


def check_mapping(mapping: Mapping[str, str]) -> None:
    """ValueError for an unknown target, an empty source, or a source given to two targets."""
    for target, source in mapping.items():
        if target not in TARGETS:
            raise ValueError(f"unknown target '{target}'; targets are {', '.join(TARGETS)}")
        if not source:
            raise ValueError(f"{target}: the source field is empty")
    sources = list(mapping.values())
    if twice := sorted({s for s in sources if sources.count(s) > 1}):
        raise ValueError(f"{', '.join(twice)}: a source field can feed one target only")


def _pop_path(obj: dict[str, Any], path: str) -> tuple[Any, dict[str, Any]]:
    """The value at a dotted `path` of `obj` and a copy of `obj` without it (emptied parents removed)."""
    head, _, rest = path.partition(".")
    if head in obj and not rest:
        return obj[head], {k: v for k, v in obj.items() if k != head}
    if head in obj and rest and isinstance(obj[head], dict):
        value, inner = _pop_path(obj[head], rest)
        if value is not _MISSING:
            outer = {k: v for k, v in obj.items() if k != head}
            return value, {**outer, head: inner} if inner else outer
    if path in obj:  # a key that itself contains dots
        return obj[path], {k: v for k, v in obj.items() if k != path}
    return _MISSING, obj


def _plain(value: Any) -> Any:
    """A value as JSON can hold it: NaN and infinities (Parquet's missing floats) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def rename(obj: Mapping[str, Any], mapping: Mapping[str, str] | None) -> tuple[dict, dict, dict]:
    """The record with `mapping`'s sources moved to their targets, the sources by target, and the
    record's own fields that a mapped target displaced (kept as metadata)."""
    record = dict(obj)
    if not mapping:
        return record, {}, {}
    taken = {}
    for target, source in mapping.items():
        value, record = _pop_path(record, source)
        if value is not _MISSING:
            taken[target] = value
    displaced = {k: record.pop(k) for k in list(record) if k in mapping}
    return {**record, **taken}, dict(mapping), displaced


def fields_of(
    record: Mapping[str, Any],
    sources: Mapping[str, str],
    displaced: Mapping[str, Any],
    *,
    mapped: bool = False,
) -> Fields | None:
    """The record's layout and values (after `rename`); None when no layout fits."""
    layout = recognise(record)
    if layout is None:
        return None
    values = {k: record[k] for k in layout.uses if record.get(k) is not None}
    # A mapped field the layout does not read is kept under the file's own name.
    extras = {sources.get(k, k): v for k, v in record.items() if k not in layout.uses}
    sources = dict(sources)
    if layout is OPENAI:
        given = dict(values.pop("input"))
        values["prompt"] = given.pop("messages", None)
        values["chosen"] = values.pop("preferred_output", None)
        values["rejected"] = values.pop("non_preferred_output", None)
        values = {k: v for k, v in values.items() if v is not None}
        names = {"prompt": "input.messages", "chosen": "preferred_output", "rejected": "non_preferred_output"}
        sources = {**names, **sources}
        if any(v is not None for v in given.values()):
            extras["input"] = given
    extras = {k: _plain(v) for k, v in {**extras, **displaced}.items() if v is not None}
    return Fields(layout, values, sources, extras, mapped=mapped)


def read_fields(obj: Mapping[str, Any], mapping: Mapping[str, str] | None = None) -> Fields | None:
    """The record's layout and values after `mapping` renamed its fields; None when no layout fits."""
    record, sources, displaced = rename(obj, mapping)
    return fields_of(record, sources, displaced, mapped=bool(mapping))
