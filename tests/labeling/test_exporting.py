"""Tests for labeling.exporting: exact rows per shape, the train / eval split, the streaming JSONL and
Parquet writers (checked with `datasets`, pyarrow and TRL's own dataset functions), unicode, sha256."""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labeling import exporting
from labeling.consensus import REASONS, ConsensusRules, decide
from labeling.exporting import (
    FORMATS,
    HOSTED,
    SHAPES,
    ExportPair,
    FileInfo,
    SnapshotWriter,
    build_rows,
    columns,
    drop_reason,
    encode_rows,
    is_flat_prompt,
    pair_id,
    row_text,
    schema,
    split_of,
)

REPO = Path(__file__).resolve().parents[2]
RULES = ConsensusRules()
KEEP_ALL = ConsensusRules(drop_ties=False, drop_both_bad=False)
A_WINS = decide(["a", "a", "b"], rules=RULES)
B_WINS = decide(["b", "b", "b"], rules=RULES)
TOO_FEW = decide(["a"], rules=RULES)
BOTH_BAD = decide(["both_bad"] * 3, rules=KEEP_ALL)
TIE = decide(["tie"] * 3, rules=KEEP_ALL)
LEAD = decide(["b"], rules=RULES, adjudication="a")
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Name a colour."},
]
PAIR = ExportPair(
    id="p-1",
    pair_pk=7,
    prompt="What is 2+2?",
    response_a="4",
    response_b="5",
    model_a="m-a",
    model_b="m-b",
    criteria={"Honesty": {"a": 2, "b": 1}},
    metadata={"source": "unit", "n": 1},
)
META = {
    "pair_pk": 7,
    "label": "a",
    "votes": {"a": 2, "b": 1, "tie": 0, "both_bad": 0},
    "share": 2 / 3,
    "adjudicated": False,
    "criteria": {"Honesty": {"a": 2, "b": 1}},
    "metadata": {"source": "unit", "n": 1},
}
TRL_SHAPES = tuple(shape for shape in SHAPES if shape != HOSTED)
HOSTED_KEYS = ["input", "preferred_output", "non_preferred_output"]
# Hard to carry through JSON lines: line separators JSON leaves raw, RTL with direction marks,
# emoji sequences, combining marks, escapes, control characters, %-formatting.
UNICODE = (
    "שלום עולם \u200fمرحبا بالعالم\u200e 👩\u200d👩\u200d👧\u200d👦 🇯🇵 e\u0301 漢字 "
    'a\u2028b\u2029c\x85d "q" \\ \t\r\n\x1b\x7f %s %d %% {}'
)


def read_parquet(path: Path) -> list[dict]:
    """A Parquet file's rows as `build_rows` gives them: pyarrow hands the JSON columns out as their text."""
    rows = pq.read_table(path).to_pylist()
    for row in rows:
        for key in ("criteria", "metadata"):
            if key in row.get("meta", {}):
                row["meta"][key] = json.loads(row["meta"][key])
    return rows


def pair(i: int, *, prompt: object = None, **fields: object) -> ExportPair:
    values = {
        "id": f"pair-{i}",
        "pair_pk": i,
        "prompt": f"Prompt {i}" if prompt is None else prompt,
        "response_a": f"Answer A {i}",
        "response_b": f"Answer B {i}",
        "model_a": "small",
        "model_b": "large",
    }
    return ExportPair(**{**values, **fields})


# --- rows, shape by shape ------------------------------------------------------------------------


def test_standard_row() -> None:
    row = build_rows(PAIR, A_WINS, shape="standard")
    assert row == [
        {
            "id": "p-1",
            "prompt": "What is 2+2?",
            "chosen": "4",
            "rejected": "5",
            "meta": {**META, "models": {"chosen": "m-a", "rejected": "m-b"}},
        }
    ]
    assert list(row[0]) == ["id", "prompt", "chosen", "rejected", "meta"]
    assert list(row[0]["meta"]) == [*META, "models"]


def test_standard_row_when_b_wins() -> None:
    [row] = build_rows(PAIR, B_WINS, shape="standard")
    assert (row["chosen"], row["rejected"], row["meta"]["models"]) == (
        "5",
        "4",
        {"chosen": "m-b", "rejected": "m-a"},
    )
    assert (row["meta"]["label"], row["meta"]["votes"]["b"], row["meta"]["share"]) == ("b", 3, 1.0)


def test_conversational_row() -> None:
    rows = build_rows(PAIR, A_WINS, shape="conversational")
    assert rows == [
        {
            "id": "p-1",
            "prompt": [{"role": "user", "content": "What is 2+2?"}],
            "chosen": [{"role": "assistant", "content": "4"}],
            "rejected": [{"role": "assistant", "content": "5"}],
            "meta": {**META, "models": {"chosen": "m-a", "rejected": "m-b"}},
        }
    ]
    assert list(rows[0]) == ["id", "prompt", "chosen", "rejected", "meta"]


def test_conversational_row_keeps_every_turn_and_every_key() -> None:
    prompt = [{**message, "name": "x"} for message in CHAT]
    [row] = build_rows(pair(1, prompt=prompt), A_WINS, shape="conversational")
    assert row["prompt"] == prompt


CALL = {"type": "function", "function": {"name": "weather", "arguments": {"city": "Oslo"}}}
TOOL_TURNS = [
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "content": "-3 C", "tool_call_id": "call_1"},
    {"role": "assistant", "content": "It is -3 C in Oslo."},
]  # fmt: skip


def test_a_response_of_several_messages_is_written_whole_in_the_conversational_shapes(tmp_path) -> None:
    from labeling.conversations import response_text

    tools = pair(1, response_a=response_text(TOOL_TURNS))
    [row] = build_rows(tools, A_WINS, shape="conversational")
    assert row["chosen"] == TOOL_TURNS and row["rejected"] == [{"role": "assistant", "content": "Answer B 1"}]
    with SnapshotWriter(tmp_path, fmt="jsonl", shape="conversational", eval_fraction=0) as writer:
        assert writer.add(tools, A_WINS) is None
    line = json.loads((tmp_path / "train.jsonl").read_text())
    assert line["chosen"] == TOOL_TURNS  # tool calls and ids kept
    for shape in ("standard", "unpaired"):
        with pytest.raises(ValueError, match="chat_response"):
            build_rows(tools, A_WINS, shape=shape)
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    with SnapshotWriter(parquet, fmt="parquet", shape="conversational", eval_fraction=0) as writer:
        assert writer.add(tools, A_WINS) == "tool_calls"  # Parquet's messages hold role and content only
        said = [("assistant", "Let me check."), ("user", "ok"), ("assistant", "Done.")]
        turns = response_text([{"role": role, "content": text} for role, text in said])
        assert writer.add(pair(2, response_a=turns), A_WINS) is None
    import pyarrow.parquet as pq

    [written] = pq.read_table(parquet / "train.parquet").to_pylist()
    assert [m["content"] for m in written["chosen"]] == ["Let me check.", "ok", "Done."]


@pytest.mark.parametrize("shape", ["unpaired", "unpaired-conversational"])
def test_unpaired_rows(shape: str) -> None:
    rows = build_rows(PAIR, A_WINS, shape=shape)
    as_text = shape == "unpaired"
    prompt = "What is 2+2?" if as_text else [{"role": "user", "content": "What is 2+2?"}]

    def completion(text: str) -> object:
        return text if as_text else [{"role": "assistant", "content": text}]

    assert rows == [
        {
            "id": "p-1",
            "prompt": prompt,
            "completion": completion("4"),
            "label": True,
            "meta": {**META, "side": "a", "model": "m-a"},
        },
        {
            "id": "p-1",
            "prompt": prompt,
            "completion": completion("5"),
            "label": False,
            "meta": {**META, "side": "b", "model": "m-b"},
        },
    ]
    assert [list(row) for row in rows] == [["id", "prompt", "completion", "label", "meta"]] * 2


def test_unpaired_rows_when_b_wins_put_the_desirable_row_first() -> None:
    rows = build_rows(PAIR, B_WINS, shape="unpaired")
    assert [(r["completion"], r["label"], r["meta"]["side"], r["meta"]["model"]) for r in rows] == [
        ("5", True, "b", "m-b"),
        ("4", False, "a", "m-a"),
    ]


def test_a_kept_both_bad_pair_gives_two_undesirable_rows_and_no_preference() -> None:
    rows = build_rows(PAIR, BOTH_BAD, shape="unpaired")
    assert [(r["completion"], r["label"], r["meta"]["side"], r["meta"]["label"]) for r in rows] == [
        ("4", False, "a", "both_bad"),
        ("5", False, "b", "both_bad"),
    ]
    for shape in ("standard", "conversational"):
        assert drop_reason(BOTH_BAD, shape=shape) == "both_bad"


@pytest.mark.parametrize("shape", SHAPES)
def test_a_kept_tie_gives_no_rows_in_any_shape(shape: str) -> None:
    assert TIE.kept and drop_reason(TIE, shape=shape) == "tie"
    with pytest.raises(ValueError, match="no rows in the .* shape: tie"):
        build_rows(PAIR, TIE, shape=shape)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_dropped_pair_gives_its_reason(shape: str) -> None:
    assert drop_reason(TOO_FEW, shape=shape) == "too_few_votes"


def test_chat_prompts_in_the_text_shapes() -> None:
    one_user = [{"role": "user", "content": "Only turn"}]
    assert is_flat_prompt("text") and is_flat_prompt(one_user)
    assert not is_flat_prompt(CHAT) and not is_flat_prompt([{"role": "system", "content": "Rules"}])
    assert build_rows(pair(1, prompt=one_user), A_WINS, shape="standard")[0]["prompt"] == "Only turn"
    assert build_rows(pair(1, prompt=one_user), A_WINS, shape="unpaired")[0]["prompt"] == "Only turn"
    for shape in ("standard", "unpaired"):
        assert drop_reason(A_WINS, shape=shape, flat_prompt=False) == "chat_prompt"
        with pytest.raises(ValueError, match="chat_prompt"):
            build_rows(pair(1, prompt=CHAT), A_WINS, shape=shape)
    for shape in ("conversational", "unpaired-conversational"):
        assert drop_reason(A_WINS, shape=shape, flat_prompt=False) is None
    assert REASONS["chat_prompt"] == "Multi-turn chat prompt: use the conversational shape"


def test_criteria_and_metadata_are_objects_in_meta_never_json_text() -> None:
    # As the database gives them (PostgreSQL's jsonb text has spaces): held as they are, as objects.
    given = pair(3, criteria='{"Safety": {"a": 1}}', metadata='{"k": [1, 2], "ids": [5, 6, 7]}')
    [row] = build_rows(given, LEAD, shape="standard")
    assert row["meta"]["adjudicated"] is True and row["meta"]["share"] == 0.0
    assert row["meta"]["criteria"] == {"Safety": {"a": 1}}
    assert row["meta"]["metadata"] == {"k": [1, 2], "ids": [5, 6, 7]}
    [line] = encode_rows(given, LEAD, shape="standard")
    assert '"criteria":{"Safety": {"a": 1}}' in line and '"metadata":{"k": [1, 2], "ids": [5, 6, 7]}' in line
    assert json.loads(line) == row
    [row] = build_rows(pair(3), LEAD, shape="standard")
    assert (row["meta"]["criteria"], row["meta"]["metadata"]) == ({}, {})
    # Pretty-printed JSON text cannot sit on one line: it is written compact.
    [line] = encode_rows(pair(3, metadata='{\n  "k": 1\n}'), LEAD, shape="standard")
    assert '"metadata":{"k":1}' in line and json.loads(line)["meta"]["metadata"] == {"k": 1}


@pytest.mark.parametrize("shape", TRL_SHAPES)
def test_pair_metadata_goes_into_meta_only_when_the_export_says_so(tmp_path: Path, shape: str) -> None:
    tokens = {"input_ids": list(range(2000))}  # some datasets carry token ids: 8 KB a row
    given = pair(1, metadata=tokens, criteria={"Tone": {"a": 1, "b": 0, "tie": 0}})
    without = build_rows(given, A_WINS, shape=shape, include_metadata=False)
    assert all("metadata" not in row["meta"] and row["meta"]["criteria"] == given.criteria for row in without)
    assert [{**row, "meta": {k: v for k, v in row["meta"].items() if k != "metadata"}} for row in
            build_rows(given, A_WINS, shape=shape)] == without  # fmt: skip
    assert "metadata" not in schema(shape, include_metadata=False).field("meta").type.names
    assert schema(shape).field("meta").type.field("metadata").type == pa.json_()
    sizes = {}
    for include in (True, False):
        for fmt in FORMATS:
            folder = tmp_path / f"{fmt}-{include}"
            folder.mkdir()
            with SnapshotWriter(folder, fmt=fmt, shape=shape, eval_fraction=0, include_metadata=include) as w:
                w.add(given, A_WINS)
            [info] = w.close()
            sizes[fmt, include] = info.bytes
            path = folder / info.name
            rows = (
                read_parquet(path)
                if fmt == "parquet"
                else [json.loads(x) for x in path.read_text().splitlines()]
            )
            assert rows == build_rows(given, A_WINS, shape=shape, include_metadata=include)
    assert sizes["jsonl", True] > sizes["jsonl", False] + 8000


def test_unknown_shapes_are_refused() -> None:
    for call in (
        lambda: drop_reason(A_WINS, shape="paired"),
        lambda: columns("paired"),
        lambda: schema("paired"),
        lambda: SnapshotWriter(".", fmt="jsonl", shape="paired"),
    ):
        with pytest.raises(ValueError, match="shape must be one of"):
            call()
    with pytest.raises(ValueError, match="fmt must be one of"):
        SnapshotWriter(".", fmt="csv", shape="standard")


# --- the hosted services' preference shape (OpenAI, Together, Fireworks) ---------------------------


def hosted_problems(row: dict) -> list[str]:
    """What the services' documented rules find wrong in a row: the three keys and nothing else (Together
    refuses a line with another key), `input` holding `messages` only, a non-empty list of messages of
    a role (system, user, assistant) and a string content and nothing else (Fireworks), each output
    exactly one assistant message."""
    problems = []
    if list(row) != HOSTED_KEYS:
        problems.append(f"keys {list(row)}")
    messages = row.get("input", {}).get("messages")
    if list(row.get("input", {})) != ["messages"] or not isinstance(messages, list) or not messages:
        problems.append("input")
    for key in HOSTED_KEYS[1:]:
        output = row.get(key)
        if not isinstance(output, list) or len(output) != 1 or output[0].get("role") != "assistant":
            problems.append(key)
        messages = [*(messages or []), *(output or [])]
    for message in messages or []:
        if set(message) != {"role", "content"} or not isinstance(message["content"], str):
            problems.append(f"message {message}")
        elif message["role"] not in ("system", "user", "assistant"):
            problems.append(f"role {message['role']}")
    return problems


def test_a_hosted_row_holds_the_three_keys_and_nothing_else() -> None:
    [row] = build_rows(PAIR, B_WINS, shape=HOSTED)
    assert row == {
        "input": {"messages": [{"role": "user", "content": "What is 2+2?"}]},
        "preferred_output": [{"role": "assistant", "content": "5"}],
        "non_preferred_output": [{"role": "assistant", "content": "4"}],
    }
    assert list(row) == HOSTED_KEYS == list(columns(HOSTED)) and hosted_problems(row) == []
    [line] = encode_rows(PAIR, B_WINS, shape=HOSTED)
    assert json.loads(line) == row and '"id"' not in line and '"meta"' not in line
    assert build_rows(PAIR, B_WINS, shape=HOSTED, include_metadata=False) == [row]
    # A chat prompt goes in whole (system turn, earlier turns), as TRL's conversational shape has it.
    [row] = build_rows(pair(1, prompt=CHAT), A_WINS, shape=HOSTED)
    assert row["input"] == {"messages": CHAT} and hosted_problems(row) == []
    assert drop_reason(A_WINS, shape=HOSTED, flat_prompt=False) is None


def test_the_hosted_shape_drops_what_the_services_refuse(tmp_path: Path) -> None:
    from labeling.conversations import response_text

    several = pair(1, response_a=response_text(TOOL_TURNS))  # an assistant turn with a tool call, a result
    named = pair(2, prompt=[{"role": "user", "content": "Hi", "name": "ann"}])
    for given, reason in ((several, "chat_response"), (named, "tool_calls_hosted")):
        with pytest.raises(ValueError, match=f"openai-preference shape: {reason}"):
            build_rows(given, A_WINS, shape=HOSTED)
        assert build_rows(given, A_WINS, shape="conversational")  # kept whole there
    assert drop_reason(A_WINS, shape=HOSTED, extra_keys=True) == "tool_calls_hosted"
    assert drop_reason(A_WINS, shape=HOSTED, plain_responses=False) == "chat_response"
    assert (drop_reason(BOTH_BAD, shape=HOSTED), drop_reason(TIE, shape=HOSTED)) == ("both_bad", "tie")
    assert REASONS["tool_calls_hosted"].startswith("Tool calls or results: hosted preference fine-tuning")
    for fmt in FORMATS:
        (tmp_path / fmt).mkdir()
        with SnapshotWriter(tmp_path / fmt, fmt=fmt, shape=HOSTED, eval_fraction=0) as writer:
            for given in (several, named, pair(3)):
                writer.add(given, A_WINS)
        assert (writer.kept, writer.dropped) == (1, {"chat_response": 1, "tool_calls_hosted": 1})


@pytest.mark.parametrize("fmt", FORMATS)
def test_hosted_files_meet_the_services_rules(tmp_path: Path, fmt: str) -> None:
    items = mixed_pairs()
    infos = write(tmp_path, items, fmt=fmt, shape=HOSTED, eval_fraction=0).close()
    path = tmp_path / infos[0].name
    rows = read_parquet(path) if fmt == "parquet" else [json.loads(x) for x in path.read_text().splitlines()]
    assert (
        len(rows) == infos[0].rows == expected_rows(items, shape=HOSTED, eval_fraction=0)["train"].__len__()
    )
    assert rows == expected_rows(items, shape=HOSTED, eval_fraction=0)["train"]
    assert [hosted_problems(row) for row in rows] == [[]] * len(rows)
    if fmt == "parquet":
        assert pq.read_schema(path).remove_metadata() == schema(HOSTED)


@pytest.mark.parametrize("fmt", FORMATS)
def test_hosted_files_import_back_as_the_same_pairs(tmp_path: Path, fmt: str) -> None:
    """Our importer reads the file back (as it reads the services' own files): the same pairs, the same
    side preferred."""
    from labeling.conversations import content_hash, response_key
    from labeling.importing import iter_records
    from labeling.layouts import OPENAI
    from labeling.records import PairRecord

    items = mixed_pairs()
    [info] = write(tmp_path, items, fmt=fmt, shape=HOSTED, eval_fraction=0).close()
    with (tmp_path / info.name).open("rb") as stream:
        records = list(iter_records(stream, filename=info.name))
    assert all(isinstance(record, PairRecord) for record in records), records
    assert {record.layout for record in records} == {OPENAI.name}

    def chosen(a: str, b: str, side: str | None) -> str:
        return response_key(a if side == "a" else b)

    expected = {
        content_hash(p.prompt, p.response_a, p.response_b): chosen(p.response_a, p.response_b, d.chosen)
        for p, d in items
        if drop_reason(d, shape=HOSTED, flat_prompt=is_flat_prompt(p.prompt)) is None
    }
    got = {r.content_hash: chosen(r.response_a, r.response_b, r.original_label) for r in records}
    assert len(records) == info.rows == len(expected) > 10
    assert got == expected


def test_row_text_is_the_row_as_json_one_key_a_line_in_file_order() -> None:
    tokens = list(range(2000))
    for shape in SHAPES:
        prompt = None if shape in ("standard", "unpaired") else CHAT
        [row, *_] = build_rows(pair(1, prompt=prompt, metadata={"input_ids": tokens}), B_WINS, shape=shape)
        text = row_text(row)
        assert json.loads(text) == row
        lines = text.splitlines()
        assert [json.loads("{" + line.rstrip(",") + "}") for line in lines[1:-1]] == [
            {k: v} for k, v in row.items()
        ]
        assert (lines[0], lines[-1], len(lines)) == ("{", "}", len(row) + 2)
    assert row_text({"prompt": 'שלום\n"q"'}) == '{\n  "prompt": "שלום\\n\\"q\\""\n}'


@pytest.mark.parametrize("include_metadata", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_schema_matches_the_rows(shape: str, include_metadata: bool) -> None:
    given = schema(shape, include_metadata=include_metadata)
    [row, *_] = build_rows(PAIR, A_WINS, shape=shape, include_metadata=include_metadata)
    assert given.names == list(columns(shape)) == list(row)
    if shape == HOSTED:
        assert given.names == HOSTED_KEYS and given.field("input").type.names == ["messages"]
    else:
        assert given.names[0] == "id" and given.names[-1] == "meta"
        assert [field.name for field in given.field("meta").type] == list(row["meta"])


def test_pair_id() -> None:
    assert pair_id(external_id="hh-17", pk=3) == "hh-17"
    assert pair_id(external_id="", pk=3) == "pair-3"


# --- split ---------------------------------------------------------------------------------------


def test_split_is_pinned_to_sha256_of_the_id() -> None:
    # Snapshots taken later must put every pair in the same split: these must never change.
    ids = [
        "pair-1",
        "pair-2",
        "pair-3",
        "pair-4",
        "pair-5",
        "pair-6",
        "hh-rlhf/000017",
        "שלום-7",
        "pair-1000",
    ]
    assert [split_of(i, 0.5) for i in ids] == [
        "train",
        "train",
        "train",
        "eval",
        "train",
        "train",
        "eval",
        "eval",
        "eval",
    ]
    assert [i for i in ids if split_of(i, 0.05) == "eval"] == ["pair-4"]


def test_split_does_not_depend_on_the_process() -> None:
    code = (
        "from labeling.exporting import split_of; print(' '.join(split_of(f'x{i}', 0.5) for i in range(40)))"
    )
    runs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        runs.add(result.stdout)
    assert runs == {" ".join(split_of(f"x{i}", 0.5) for i in range(40)) + "\n"}


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5])
def test_split_respects_the_fraction_roughly(fraction: float) -> None:
    ids = [f"pair-{i}" for i in range(10_000)]
    share = sum(split_of(i, fraction) == "eval" for i in ids) / len(ids)
    # Four and a half standard deviations of a binomial share at 10,000 ids, or more.
    assert abs(share - fraction) < 0.01


def test_split_grows_the_eval_set_without_moving_pairs_out() -> None:
    ids = [f"pair-{i}" for i in range(2000)]
    small = {i for i in ids if split_of(i, 0.05) == "eval"}
    large = {i for i in ids if split_of(i, 0.2) == "eval"}
    assert small < large
    assert all(split_of(i, 0.0) == "train" for i in ids)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, math.nan, True, "0.1"])
def test_split_fraction_is_validated(fraction: object) -> None:
    with pytest.raises(ValueError, match="eval_fraction must be"):
        split_of("x", fraction)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eval_fraction must be"):
        SnapshotWriter(".", fmt="jsonl", shape="standard", eval_fraction=fraction)  # type: ignore[arg-type]


# --- writers -------------------------------------------------------------------------------------


def mixed_pairs() -> list[tuple[ExportPair, object]]:
    """Pairs of every kind: kept both ways, adjudicated, dropped by the rules and by the shape."""
    items = []
    for i in range(60):
        decision = [A_WINS, B_WINS, LEAD, TOO_FEW, BOTH_BAD, TIE][i % 6]
        prompt = [None, CHAT, [{"role": "user", "content": f"Solo {i}"}], UNICODE][i % 4]
        fields = {}
        if i % 5 == 0:
            fields = {"criteria": {"Honesty": {"a": i % 3, "b": 1}}, "metadata": {"topic": UNICODE, "i": i}}
        if i % 7 == 0:
            fields.update(response_b=UNICODE + str(i), model_a="", id=f"ext/{i}-{UNICODE[:5]}")
        items.append((pair(i, prompt=prompt, **fields), decision))
    return items


def write(
    directory: Path, items: list, *, fmt: str, shape: str, eval_fraction: float = 0.3
) -> SnapshotWriter:
    directory.mkdir(parents=True, exist_ok=True)
    writer = SnapshotWriter(directory, fmt=fmt, shape=shape, eval_fraction=eval_fraction)
    for export_pair, decision in items:
        writer.add(export_pair, decision)
    writer.close()
    return writer


def expected_rows(items: list, *, shape: str, eval_fraction: float) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {"train": [], "eval": []}
    for export_pair, decision in items:
        flat = is_flat_prompt(export_pair.prompt)
        if drop_reason(decision, shape=shape, flat_prompt=flat) is None:
            rows[split_of(export_pair.id, eval_fraction)] += build_rows(export_pair, decision, shape=shape)
    return rows


def expected_lines(items: list, *, shape: str, eval_fraction: float) -> dict[str, list[str]]:
    lines: dict[str, list[str]] = {"train": [], "eval": []}
    for export_pair, decision in items:
        if drop_reason(decision, shape=shape, flat_prompt=is_flat_prompt(export_pair.prompt)) is None:
            lines[split_of(export_pair.id, eval_fraction)] += encode_rows(export_pair, decision, shape=shape)
    return lines


def rounded(value: object) -> object:
    """`value` with its floats to 9 decimals, nested: `datasets` loads a JSONL file whose metadata objects
    differ from row to row by re-encoding its lines with 10 significant digits (its `Json` feature path)."""
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def load(directory: Path, fmt: str, infos: list[FileInfo], cache: Path) -> datasets.DatasetDict:
    files = {info.split: str(directory / info.name) for info in infos}
    return datasets.load_dataset(
        "json" if fmt == "jsonl" else "parquet", data_files=files, cache_dir=str(cache)
    )


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", SHAPES)
def test_files_load_with_datasets_exactly_as_built(tmp_path: Path, fmt: str, shape: str) -> None:
    items = mixed_pairs()
    writer = write(tmp_path / "out", items, fmt=fmt, shape=shape)
    infos = writer.close()
    expected = expected_rows(items, shape=shape, eval_fraction=0.3)
    assert [(i.name, i.split) for i in infos] == [(f"train.{fmt}", "train"), (f"eval.{fmt}", "eval")]
    assert [i.rows for i in infos] == [len(expected["train"]), len(expected["eval"])]
    assert all(i.rows > 0 for i in infos)

    loaded = load(tmp_path / "out", fmt, infos, tmp_path / "cache")
    for info in infos:
        assert loaded[info.split].column_names == list(columns(shape))
        got = loaded[info.split].to_list()
        if fmt == "parquet" or shape == HOSTED:  # the same values, bit for bit
            assert got == expected[info.split]
        else:
            assert rounded(got) == rounded(expected[info.split])
            assert any(row["meta"]["metadata"] for row in got) and any(
                not row["meta"]["metadata"] for row in got
            )
        content = (tmp_path / "out" / info.name).read_bytes()
        assert (info.bytes, info.sha256) == (len(content), hashlib.sha256(content).hexdigest())

    reasons = [drop_reason(d, shape=shape, flat_prompt=is_flat_prompt(p.prompt)) for p, d in items]
    assert writer.kept == reasons.count(None) == sum(i.pairs for i in infos)
    assert writer.dropped == {r: reasons.count(r) for r in set(reasons) - {None}}
    if fmt == "parquet":
        for info in infos:
            assert pq.read_schema(tmp_path / "out" / info.name).remove_metadata() == schema(shape)


@pytest.mark.parametrize("shape", SHAPES)
def test_jsonl_has_one_row_per_line_for_any_reader_and_the_same_meta_keys(tmp_path: Path, shape: str) -> None:
    items = mixed_pairs()
    infos = write(tmp_path, items, fmt="jsonl", shape=shape).close()
    expected = expected_rows(items, shape=shape, eval_fraction=0.3)
    for info in infos:
        text = (tmp_path / info.name).read_text(encoding="utf-8")
        assert not {"\u2028", "\u2029", "\x85"} & set(text)
        lines = text.splitlines()
        assert text.endswith("\n") and len(lines) == info.rows
        rows = [json.loads(line) for line in lines]
        assert rows == expected[info.split]
        assert lines == expected_lines(items, shape=shape, eval_fraction=0.3)[info.split]
        assert {json.dumps([list(r), list(r.get("meta", ""))]) for r in rows} == {
            json.dumps([list(columns(shape)), list(rows[0].get("meta", ""))])
        }


@pytest.mark.parametrize("fmt", FORMATS)
def test_unicode_round_trips_exactly(tmp_path: Path, fmt: str) -> None:
    given = ExportPair(
        id=UNICODE,
        pair_pk=1,
        prompt=[{"role": "system", "content": UNICODE}, {"role": "user", "content": UNICODE[::-1]}],
        response_a=UNICODE,
        response_b=UNICODE + "!",
        model_a=UNICODE,
        criteria={UNICODE: {"a": 1}},
        metadata={"k": UNICODE},
    )
    infos = write(tmp_path, [(given, A_WINS)], fmt=fmt, shape="conversational", eval_fraction=0).close()
    assert [i.name for i in infos] == [f"train.{fmt}"]
    if fmt == "jsonl":
        rows = [json.loads(line) for line in (tmp_path / infos[0].name).read_text("utf-8").splitlines()]
    else:
        rows = read_parquet(tmp_path / infos[0].name)
    assert rows == build_rows(given, A_WINS, shape="conversational")
    assert rows[0]["prompt"][0]["content"] == UNICODE and rows[0]["id"] == UNICODE
    assert rows[0]["meta"]["criteria"] == {UNICODE: {"a": 1}} and rows[0]["meta"]["metadata"] == {
        "k": UNICODE
    }


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", SHAPES)
def test_an_empty_export_writes_valid_empty_files(tmp_path: Path, fmt: str, shape: str) -> None:
    # `datasets` refuses to load a split without rows ("corresponds to no data"): whoever loads a
    # snapshot passes only the files with rows > 0. The files themselves are valid.
    writer = write(tmp_path, [(pair(1), TOO_FEW)], fmt=fmt, shape=shape)
    infos = writer.close()
    assert [(i.rows, i.pairs) for i in infos] == [(0, 0), (0, 0)]
    assert (writer.kept, writer.dropped) == (0, {"too_few_votes": 1})
    for info in infos:
        content = (tmp_path / info.name).read_bytes()
        assert (info.bytes, info.sha256) == (len(content), hashlib.sha256(content).hexdigest())
        if fmt == "jsonl":
            assert content == b""
        else:
            table = pq.read_table(tmp_path / info.name)
            assert table.num_rows == 0 and table.schema.remove_metadata() == schema(shape)


def test_rows_are_written_in_row_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = [(pair(i), A_WINS) for i in range(20)]
    plain = write(tmp_path / "plain", items, fmt="jsonl", shape="standard", eval_fraction=0).close()
    monkeypatch.setattr(exporting, "ROW_GROUP_ROWS", 3)
    chunked = write(tmp_path / "chunked", items, fmt="jsonl", shape="standard", eval_fraction=0).close()
    assert chunked == plain  # the same bytes, whatever the batching
    [info] = write(tmp_path / "pq", items, fmt="parquet", shape="standard", eval_fraction=0).close()
    assert pq.ParquetFile(tmp_path / "pq" / info.name).metadata.num_row_groups == 7
    # Long texts make smaller groups, so that the buffer stays small (here: a pair per group).
    monkeypatch.setattr(exporting, "ROW_GROUP_ROWS", 4096)
    monkeypatch.setattr(exporting, "ROW_GROUP_CHARS", 20)
    [info] = write(tmp_path / "long", items, fmt="parquet", shape="standard", eval_fraction=0).close()
    assert pq.ParquetFile(tmp_path / "long" / info.name).metadata.num_row_groups == 20
    assert read_parquet(tmp_path / "long" / info.name) == [
        build_rows(p, d, shape="standard")[0] for p, d in items
    ]


def test_parquet_memory_does_not_grow_with_the_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each flush must free its arrays at once, not at the next garbage collection (off here).
    monkeypatch.setattr(exporting, "ROW_GROUP_CHARS", 100_000)
    text = "x" * 10_000
    before = pa.total_allocated_bytes()
    gc.disable()
    try:
        with SnapshotWriter(tmp_path, fmt="parquet", shape="conversational", eval_fraction=0) as writer:
            for i in range(200):  # 6 MB of text, 4 pairs (120,000 characters) per row group
                writer.add(pair(i, prompt=f"{i}{text}", response_a=text + "a", response_b=text + "b"), A_WINS)
            held = pa.total_allocated_bytes() - before
    finally:
        gc.enable()
    assert held < 500_000
    assert pq.ParquetFile(tmp_path / "train.parquet").metadata.num_row_groups == 50


def test_existing_files_are_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "eval.jsonl").write_text("earlier snapshot\n")
    with pytest.raises(FileExistsError):
        SnapshotWriter(tmp_path, fmt="jsonl", shape="standard")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.jsonl"]  # train.jsonl removed again
    assert (tmp_path / "eval.jsonl").read_text() == "earlier snapshot\n"


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_error_inside_the_writer_block_removes_the_files(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(RuntimeError), SnapshotWriter(tmp_path, fmt=fmt, shape="standard") as writer:
        writer.add(pair(1), A_WINS)
        raise RuntimeError("database went away")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="closed"):
        writer.add(pair(2), A_WINS)


def test_close_is_idempotent_and_ends_adding(tmp_path: Path) -> None:
    with SnapshotWriter(tmp_path, fmt="parquet", shape="standard") as writer:
        writer.add(pair(1), A_WINS)
    assert writer.close() == writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.add(pair(2), A_WINS)


def test_the_writer_keeps_pace(tmp_path: Path) -> None:
    # About 30,000-60,000 pairs per CPU second on the 2-core CI machines (bench/export.py gives the
    # numbers); the floor leaves a wide margin and still fails on an accidental quadratic.
    items = [(pair(i, criteria='{"Honesty":{"a":2}}', metadata="{}"), A_WINS) for i in range(10_000)]
    for fmt in FORMATS:
        write(tmp_path / "warm" / fmt, items[:100], fmt=fmt, shape="standard")
        start = time.process_time()
        write(tmp_path / fmt, items, fmt=fmt, shape="standard")
        assert len(items) / (time.process_time() - start) > 8_000, fmt


# --- TRL's own dataset functions and a chat template ---------------------------------------------

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def trl_data():
    """trl.data_utils (imports transformers and torch: several seconds, once)."""
    from trl import data_utils

    return data_utils


@pytest.fixture(scope="module")
def tokenizer():
    """A tiny byte-level BPE tokenizer with a ChatML chat template, trained here (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    model = Tokenizer(models.BPE())
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = decoders.ByteLevel()
    special = ["<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    model.train_from_iterator(
        [f"Prompt {i} Answer A {i} Answer B {i} Be brief. Hi" for i in range(50)], trainer
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=model, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>"
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def exported(tmp_path: Path, shape: str, fmt: str = "parquet") -> datasets.Dataset:
    infos = write(tmp_path / shape, mixed_pairs(), fmt=fmt, shape=shape, eval_fraction=0).close()
    return load(tmp_path / shape, fmt, infos, tmp_path / "cache")["train"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_conversational_rows_go_through_the_chat_template(
    tmp_path: Path, fmt: str, trl_data, tokenizer
) -> None:
    dataset = exported(tmp_path, "conversational", fmt)
    assert all(trl_data.is_conversational(row) for row in dataset)
    templated = dataset.map(trl_data.maybe_apply_chat_template, fn_kwargs={"processing_class": tokenizer})
    assert templated.column_names == ["id", "prompt", "chosen", "rejected", "meta"]
    by_id = {row["id"]: row for row in templated}
    chat = by_id["pair-1"]  # the four-turn chat prompt, B preferred
    assert chat["prompt"] == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert (chat["chosen"], chat["rejected"]) == ("Answer B 1<|im_end|>\n", "Answer A 1<|im_end|>\n")
    for row in dataset:
        # TRL's DPO tokenization: the prompt with the generation prompt is a prefix of prompt + answer.
        prompt_ids = tokenizer.apply_chat_template(
            row["prompt"], add_generation_prompt=True, return_dict=True
        )
        for side in ("chosen", "rejected"):
            full = tokenizer.apply_chat_template(row["prompt"] + row[side], return_dict=True)["input_ids"]
            assert full[: len(prompt_ids["input_ids"])] == prompt_ids["input_ids"]
            assert row[side][0]["content"] in tokenizer.decode(full[len(prompt_ids["input_ids"]) :])


def test_standard_rows_are_left_alone_by_trl(tmp_path: Path, trl_data, tokenizer) -> None:
    dataset = exported(tmp_path, "standard")
    for row in dataset:
        assert not trl_data.is_conversational(row)
        assert trl_data.maybe_apply_chat_template(row, tokenizer) == row
        assert trl_data.maybe_extract_prompt(row) == row


def test_unpaired_rows_match_trls_unpairing_of_the_standard_rows(tmp_path: Path, trl_data, tokenizer) -> None:
    standard = trl_data.unpair_preference_dataset(exported(tmp_path, "standard"))
    unpaired = exported(tmp_path, "unpaired")
    assert {"prompt", "completion", "label"} <= set(standard.column_names)
    assert unpaired.column_names == ["id", "prompt", "completion", "label", "meta"]

    def triples(rows, keep) -> list[tuple]:
        return sorted((r["id"], r["prompt"], r["completion"], r["label"]) for r in rows if keep(r))

    # TRL unpairs only preferences; our unpaired export adds the both-bad pairs as two bad rows.
    assert triples(unpaired, lambda r: r["meta"]["label"] != "both_bad") == triples(standard, lambda r: True)
    assert any(r["meta"]["label"] == "both_bad" and not r["label"] for r in unpaired)

    conversational = exported(tmp_path, "unpaired-conversational")
    assert all(trl_data.is_conversational(row) for row in conversational)
    templated = conversational.map(
        trl_data.maybe_apply_chat_template, fn_kwargs={"processing_class": tokenizer}
    )
    rows = [r for r in templated if r["id"] == "pair-6"]  # A preferred, a one-message prompt
    assert [(r["prompt"], r["completion"], r["label"]) for r in rows] == [
        ("<|im_start|>user\nSolo 6<|im_end|>\n<|im_start|>assistant\n", "Answer A 6<|im_end|>\n", True),
        ("<|im_start|>user\nSolo 6<|im_end|>\n<|im_start|>assistant\n", "Answer B 6<|im_end|>\n", False),
    ]


# --- purity --------------------------------------------------------------------------------------


def test_module_imports_neither_django_nor_pyarrow() -> None:
    code = "import sys, labeling.exporting; print('django' in sys.modules, 'pyarrow' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]
