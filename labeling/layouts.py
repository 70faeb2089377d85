"""Record layouts: which public preference-data shape a record has, and the importer's fields it maps to.

Pure Python: this module must not import Django.

A layout is recognised from a record's keys (and, for `chosen` / `rejected`, whether they hold
transcripts, texts or messages). A field mapping (`TARGET=SOURCE`, SOURCE may be a dotted path into
nested objects and lists, `info.post`, `summaries.0.text` or `summaries[0].text`) renames a record's
fields to the importer's own names first, so any other layout imports too. Fields a layout does not
read are returned as `extras`, kept as the pair's metadata. An optional field that is empty or only
whitespace is absent.

The dataset's own preference between two responses (`label`, or `score_a` / `score_b`) is read only
through a mapping; what each value of a label means (a, b or tie) is given as the mapping's
`label_values`, or is one of `LABEL_WORDS`.
"""

from __future__ import annotations

import math
import re
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
    "chosen_model",
    "rejected_model",
    "id",
    "gold",
    "label",
    "score_a",
    "score_b",
)
# The dataset's own preference between response A and B: a pair reads these only when they are mapped
# (an unmapped `label` stays metadata), and stores the outcome as its hidden original label.
LABEL_TARGETS = ("label", "score_a", "score_b")
# Where a mapping keeps what each value of the label means: {the file's value (`value_key`): a, b or tie}.
LABEL_VALUES = "label_values"
LABEL_MEANINGS = ("a", "b", "tie")
# Label values understood without being told (casefolded): Chatbot Arena's `winner`, and our own words.
LABEL_WORDS = {
    "a": "a",
    "b": "b",
    "tie": "tie",
    "model_a": "a",
    "model_b": "b",
    "tie (bothbad)": "tie",
    "response_a": "a",
    "response_b": "b",
}
# What the values of well-known label fields mean, offered in the import page's field mapping (numbers
# are never read without being told: 1 is B in a 0-based index and A in a 1-based one).
LABEL_GUESSES = {
    "better_response_id": {"0": "a", "1": "b"},  # PKU-SafeRLHF
    "safer_response_id": {"0": "a", "1": "b"},
    "choice": {"0": "a", "1": "b"},  # openai/summarize_from_feedback
    "preference": {"1": "a", "2": "b", "1.5": "tie"},  # AlpacaEval
    "winner": {"model_a": "a", "model_b": "b", "tie": "tie", "tie (bothbad)": "tie"},  # Chatbot Arena
}
# Field names of a record's own that say which response is better: unmapped, the preview says the
# dataset's preference will not be audited.
_LABEL_LIKE = re.compile(
    r"(label|labels|better_response_id|safer_response_id|choice|preference|winner|preferred_id"
    r"|(score|rating)_?(a|b|0|1|2))",
    re.IGNORECASE,
)
# Model names as argilla's datasets spell them, read without a mapping.
ALIASES = {"chosen-model": "chosen_model", "rejected-model": "rejected_model"}
_MISSING = object()
_INDEX = re.compile(r"\[(\d+)\]")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_NUMBER_CHARS = 40  # a longer run of digits is a text (Python refuses to read ints of over 4,300 digits)


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


_PAIR_USES = ("prompt", "system", "response_a", "response_b", "model_a", "model_b", "id", "metadata", "gold",
              *LABEL_TARGETS)  # fmt: skip
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
KNOWN_KEYS = frozenset(TARGETS).union(ALIASES, *(layout.uses + layout.needs for layout in LAYOUTS))
# By layout: the fields it may go without (blank is absent), and those it reads without a mapping.
_OPTIONAL = {layout.key: frozenset(layout.uses) - frozenset(layout.needs) for layout in LAYOUTS}
_READS = {
    layout.key: frozenset(k for k in layout.uses if k not in LABEL_TARGETS or layout.kind == "unpaired")
    for layout in LAYOUTS
}


@dataclass
class Fields:
    """A record's values under the importer's names (`values`), the record's own name of each
    (`sources`, for messages), the fields no layout reads (`extras`, kept as metadata), the mapped
    targets the layout does not read (`ignored`, refused) and the record's own fields that look like
    the dataset's preference but are not read as its label (`unaudited`)."""

    layout: Layout
    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    mapped: bool = False
    ignored: tuple[str, ...] = ()
    unaudited: tuple[str, ...] = ()

    @property
    def layout_name(self) -> str:
        return f"{self.layout.name}, fields mapped" if self.mapped else self.layout.name


def type_name(value: object) -> str:
    if value is None or isinstance(value, bool):
        return "null" if value is None else "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def is_blank(value: object) -> bool:
    """Whether a value says nothing: null, NaN (a missing number in Parquet written by pandas), or a
    text that is empty or only whitespace."""
    if isinstance(value, float):
        return math.isnan(value)
    return value is None or (isinstance(value, str) and not value.strip())


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
    if is_blank(obj.get("prompt")):  # a blank prompt is no prompt: the sides hold it
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


def map_hint(form: bool) -> str:
    """Where a person maps fields: the import page's form (`form`), or the command line's --map."""
    return "in the Field mapping form" if form else "with --map"


def values_hint(form: bool) -> str:
    """Where a person says what a label value means."""
    return "under Label values in the Field mapping form" if form else "with --label-values, e.g. 0=a,1=b"


def no_layout_reason(keys: list[str], *, columns: bool = False, form: bool = False) -> str:
    """Why a record (or a header of `columns`) fits no layout, naming the closest layouts."""
    shown = ", ".join(keys[:20]) + (", …" if len(keys) > 20 else "")
    near = ", ".join(f"{layout.name} (lacks {', '.join(lacks)})" for layout, lacks in closest(set(keys)))
    what, near = "columns" if columns else "keys", f"; closest: {near}" if near else ""
    return f"no layout matches {what} [{shown}]{near}; map them {map_hint(form)}"


def ignored_reason(layout: Layout, target: str) -> str:
    """Why a mapped `target` is refused in a record of `layout`: nothing would read it."""
    kind = layout.kind
    if kind == "preference" and target in ("model_a", "model_b"):
        instead = "names the models with chosen_model and rejected_model"
    elif kind == "preference" and target in (*LABEL_TARGETS, "gold"):
        instead = "carries the dataset's label itself: the chosen side"
    elif kind == "pair" and target in ("chosen_model", "rejected_model"):
        instead = "names the models with model_a and model_b"
    elif kind == "pair" and target in ("chosen", "rejected"):
        instead = "reads response_a and response_b; map the dataset's preference between them to label"
    else:
        instead = f"reads {', '.join(layout.uses)}"
    return f"mapped to {target}, which the layout {layout.name} does not read: it {instead}"


def field_sources(mapping: Mapping[str, Any] | None) -> dict[str, str]:
    """The TARGET -> SOURCE part of a mapping, without its label values."""
    return {target: source for target, source in (mapping or {}).items() if target != LABEL_VALUES}


def label_values_of(mapping: Mapping[str, Any] | None) -> dict[str, str]:
    """What each value of the mapped label means (the file's value as `value_key` -> a, b or tie); an
    entry that says anything else is left out (`check_mapping` refuses it where mappings are made)."""
    given = (mapping or {}).get(LABEL_VALUES) or {}
    return {
        key: meaning.strip().lower()
        for value, meaning in (given.items() if isinstance(given, Mapping) else ())
        if (key := value_key(value))
        and isinstance(meaning, str)
        and meaning.strip().lower() in LABEL_MEANINGS
    }


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


def parse_label_values(text: str) -> dict[str, str]:
    """`VALUE=MEANING[,VALUE=MEANING...]`, each MEANING a, b or tie, as {value_key(VALUE): MEANING};
    ValueError saying what is wrong. A VALUE may hold spaces (`tie (bothbad)=tie`)."""
    values: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        value, equals, meaning = (s.strip() for s in item.rpartition("="))
        if not equals or not value or not meaning:
            raise ValueError(f"'{item}': write VALUE=a, VALUE=b or VALUE=tie, e.g. 0=a,1=b")
        values[value] = meaning
    return check_label_values(values)


def check_label_values(values: Mapping[str, str]) -> dict[str, str]:
    """The label values keyed by `value_key`, meanings lower-cased; ValueError for a value no label can
    have or a meaning other than a, b or tie."""
    if not isinstance(values, Mapping):
        raise ValueError(f"label values must be an object of VALUE: a, b or tie, got {type_name(values)}")
    checked = {}
    for value, meaning in values.items():
        key = value_key(value)
        if not key:
            raise ValueError(f"{value!r}: a label value is a number or a short text")
        if not isinstance(meaning, str) or meaning.strip().lower() not in LABEL_MEANINGS:
            raise ValueError(f"{value}={meaning}: a label value means a, b or tie")
        checked[key] = meaning.strip().lower()
    return checked


def check_mapping(mapping: Mapping[str, Any]) -> None:
    """ValueError for an unknown target, an empty source, a source given to two targets, half a pair of
    scores, a label given two ways, or label values without a label."""
    fields = field_sources(mapping)
    for target, source in fields.items():
        if target not in TARGETS:
            raise ValueError(f"unknown target '{target}'; targets are {', '.join(TARGETS)}")
        if not source:
            raise ValueError(f"{target}: the source field is empty")
    sources = list(fields.values())
    if twice := sorted({s for s in sources if sources.count(s) > 1}):
        raise ValueError(f"{', '.join(twice)}: a source field can feed one target only")
    if ("score_a" in fields) != ("score_b" in fields):
        raise ValueError("score_a and score_b: map both (the higher score wins, equal scores are a tie)")
    if "label" in fields and "score_a" in fields:
        raise ValueError("label and score_a / score_b: map the dataset's preference one way, not both")
    if LABEL_VALUES in mapping:
        if "label" not in fields:
            raise ValueError("label values say what the label's values mean: map label to a field too")
        check_label_values(mapping[LABEL_VALUES])


def describe_mapping(mapping: Mapping[str, Any] | None) -> str:
    """A mapping for people: `prompt ← question, label ← choice (0 → A, 1 → B)`."""
    meant = ", ".join(f"{v} → {m if m == 'tie' else m.upper()}" for v, m in label_values_of(mapping).items())
    parts = []
    for target, source in field_sources(mapping).items():
        parts.append(f"{target} ← {source}" + (f" ({meant})" if target == "label" and meant else ""))
    return ", ".join(parts)


def as_number(value: object) -> float | None:
    """A number given as a number or as a text ("8.5", " 3 "); None for anything else (a boolean too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    text = value.strip() if isinstance(value, str) else ""
    return float(text) if len(text) <= _NUMBER_CHARS and _NUMBER.fullmatch(text) else None


def value_key(value: object) -> str | None:
    """A label value as label values name it: numbers in their shortest form (1, 1.0 and "1" are all
    "1"), texts stripped and casefolded, booleans "true" / "false"; None for objects, lists, NaN."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        text = value.strip()
        if len(text) <= _NUMBER_CHARS and _NUMBER.fullmatch(text):
            return str(int(text)) if text.lstrip("+-").isdigit() else value_key(float(text))
        return text.casefold()
    return None


def known_label_values(source: str) -> dict[str, str]:
    """What the values of a well-known label field mean, by the field's name (`LABEL_GUESSES`)."""
    return dict(LABEL_GUESSES.get(path_steps(source)[-1].casefold(), {}))


def guess_label_values(source: str, values: list[str]) -> dict[str, str]:
    """What the values of the label field `source` likely mean (`known_label_values`, then
    `LABEL_WORDS`), for the values it can guess."""
    known = known_label_values(source)
    return {value: meaning for value in values if (meaning := known.get(value) or LABEL_WORDS.get(value))}


def path_steps(path: str) -> list[str]:
    """The steps of a SOURCE path: `summaries[0].text` and `summaries.0.text` are both
    ["summaries", "0", "text"]."""
    return _INDEX.sub(r".\1", path).split(".")


def _index(step: str) -> int | None:
    return int(step) if step.isascii() and step.isdigit() else None


def _emptied(value: Any) -> bool:
    """Whether what is left of a container after a value was taken from it holds nothing."""
    return value is None or value == {} or (isinstance(value, list) and all(map(_emptied, value)))


def _take(container: Any, steps: list[str]) -> tuple[Any, Any]:
    """The value at `steps` inside a dict or a list, and a copy of the container without it (emptied
    parents removed; a list keeps its length, with None for an item taken whole); (_MISSING, container)
    when there is nothing there."""
    head, rest = steps[0], steps[1:]
    if isinstance(container, dict) and head in container:
        value, inner = _take(container[head], rest) if rest else (container[head], None)
        if value is _MISSING:
            return _MISSING, container
        outer = {k: v for k, v in container.items() if k != head}
        return value, outer if _emptied(inner) else {**outer, head: inner}
    i = _index(head)
    if isinstance(container, list) and i is not None and i < len(container):
        value, inner = _take(container[i], rest) if rest else (container[i], None)
        if value is _MISSING:
            return _MISSING, container
        return value, [*container[:i], inner, *container[i + 1 :]]
    return _MISSING, container


def _pop_path(obj: dict[str, Any], path: str) -> tuple[Any, dict[str, Any]]:
    """The value at `path` of `obj` and a copy of `obj` without it; (_MISSING, obj) when there is none."""
    value, rest = _take(obj, path_steps(path))
    if value is _MISSING and path in obj:  # a key that itself contains dots or brackets
        return obj[path], {k: v for k, v in obj.items() if k != path}
    return value, rest


def _listed(keys: list[str]) -> str:
    return "[" + ", ".join(keys[:20]) + (", …" if len(keys) > 20 else "") + "]"


def missing_reason(obj: Mapping[str, Any], path: str) -> str:
    """Why `path` finds nothing in the record `obj`, naming what there is where it stops."""
    steps, container = path_steps(path), obj
    for depth, step in enumerate(steps):
        where = ".".join(steps[:depth])
        if isinstance(container, dict):
            if step not in container:
                keys = _listed([str(k) for k in container])
                if not depth:
                    return f"not in the record, whose fields are {keys}"
                return f"not in the record: {where} has no {step!r}; its keys are {keys}"
            container = container[step]
        elif isinstance(container, list):
            i = _index(step)
            if i is None:
                return f"not in the record: {where} is a list; name an item by its number, e.g. {where}.0"
            if i >= len(container):
                held = f"{len(container)} item{'s' if len(container) != 1 else ''}"
                return f"not in the record: {where} holds {held}" + (", numbered from 0" if container else "")
            container = container[i]
        else:
            found = "null" if container is None else f"a {type_name(container)}"
            return f"not in the record: {where} is {found}, not an object or a list"
    return "not in the record: another mapped field took it"


def _plain(value: Any) -> Any:
    """A value as JSON can hold it: NaN and infinities (Parquet's missing floats) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def rename(obj: Mapping[str, Any], mapping: Mapping[str, Any] | None) -> tuple[dict, dict, dict, dict]:
    """The record with `mapping`'s sources moved to their targets, the sources by target, the record's
    own fields that a mapped target displaced (kept as metadata), and for each target whose source
    finds nothing in the record, why."""
    record = dict(obj)
    sources = field_sources(mapping)
    if not sources:
        return record, {}, {}, {}
    taken, missing = {}, {}
    for target, source in sources.items():
        value, record = _pop_path(record, source)
        if value is _MISSING:
            missing[target] = missing_reason(obj, source)
        else:
            taken[target] = value
    displaced = {k: record.pop(k) for k in list(record) if k in sources}
    return {**record, **taken}, sources, displaced, missing


def fields_of(
    record: Mapping[str, Any],
    sources: Mapping[str, str],
    displaced: Mapping[str, Any],
    *,
    mapped: bool = False,
) -> Fields | None:
    """The record's layout and values (after `rename`); None when no layout fits. A value the layout
    may go without that is blank is absent; a pair reads its label only when it was mapped."""
    layout = recognise(record)
    if layout is None:
        return None
    ignored = tuple(target for target in sources if target not in layout.uses) if sources else ()
    sources = dict(sources)
    if layout.kind == "preference":
        for alias, name in ALIASES.items():
            if alias in record and name not in record:
                record = {name if k == alias else k: v for k, v in record.items()}
                sources[name] = alias
    optional, reads = _OPTIONAL[layout.key], _READS[layout.key]
    if sources and layout.kind != "unpaired":
        reads = reads | {k for k in LABEL_TARGETS if k in sources and k in layout.uses}
    values = {
        k: v
        for k, v in record.items()
        if k in reads and v is not None and not (k in optional and is_blank(v))
    }
    # A mapped field the layout does not read is kept under the file's own name.
    extras = {sources.get(k, k): v for k, v in record.items() if k not in reads}
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
    unaudited = tuple(k for k in extras if _LABEL_LIKE.fullmatch(k)) if layout.kind == "pair" else ()
    return Fields(layout, values, sources, extras, mapped=mapped, ignored=ignored, unaudited=unaudited)


def read_fields(obj: Mapping[str, Any], mapping: Mapping[str, Any] | None = None) -> Fields | None:
    """The record's layout and values after `mapping` renamed its fields; None when no layout fits."""
    record, sources, displaced, _ = rename(obj, mapping)
    return fields_of(record, sources, displaced, mapped=bool(sources))
