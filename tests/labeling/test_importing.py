"""Tests for labeling.importing: formats, shapes, validation, streaming limits and robustness.

The public layouts (HH-RLHF, UltraFeedback, TRL, OpenAI, ...) are tested in test_formats.py."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labeling.conversations import response_key
from labeling.importing import (
    ImportFormatError,
    ImportOptions,
    PairRecord,
    RecordError,
    content_hash,
    detect_format,
    iter_records,
    parse_record,
)

REPO = Path(__file__).resolve().parents[2]
NO_LAYOUT = "no layout matches keys [prompt]; closest: prefstudio responses list (lacks responses); " + (
    "map them with --map"
)
NO_PROMPT = "so there is no prompt to show; add a prompt field or map one with --map"
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Name a colour."},
]


def jsonl(*rows: object) -> bytes:
    """JSONL bytes; str/bytes rows are taken verbatim."""
    lines = [
        r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode() for r in rows
    ]
    return b"\n".join(lines) + b"\n"


def read(data: bytes, filename: str = "data.jsonl", **kwargs: object) -> list[PairRecord | RecordError]:
    return list(iter_records(io.BytesIO(data), filename=filename, **kwargs))


def problems(items: list[PairRecord | RecordError]) -> list[tuple[int, str | None, str]]:
    return [(e.line, e.field, e.reason) for e in items if isinstance(e, RecordError)]


def pairs(items: list[PairRecord | RecordError]) -> list[PairRecord]:
    return [r for r in items if isinstance(r, PairRecord)]


def csv_bytes(header: list[str], *rows: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)  # "\r\n" line ends, so cells holding "\r" or "\n" are quoted
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def parquet_bytes(rows: list[dict], tmp_path: Path) -> bytes:
    path = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)
    return path.read_bytes()


# --- shapes -------------------------------------------------------------------------------------


def test_pair_with_all_fields() -> None:
    row = {
        "prompt": "Say hi",
        "response_a": "Hi",
        "response_b": "Hello",
        "model_a": "m1",
        "model_b": "m2",
        "id": 7,
        "metadata": {"src": "x", "n": [1, 2]},
        "gold": " A ",
    }
    [record] = read(jsonl(row))
    assert record == PairRecord(
        line=1,
        external_id="7",
        prompt="Say hi",
        response_a="Hi",
        response_b="Hello",
        model_a="m1",
        model_b="m2",
        metadata={"src": "x", "n": [1, 2]},
        gold="a",
        original_label=None,
        shape="pair",
        content_hash=content_hash("Say hi", "Hi", "Hello"),
        layout="prefstudio pair",
    )


def test_optional_fields_absent_or_null() -> None:
    [record] = read(jsonl({"prompt": "p", "response_a": "x", "response_b": "y", "gold": None, "id": None}))
    assert (record.external_id, record.model_a, record.model_b, record.metadata, record.gold) == (
        "",
        "",
        "",
        {},
        None,
    )


@pytest.mark.parametrize("gold", ["a", "B", "Tie"])
def test_gold_is_stored_lower_case(gold: str) -> None:
    [record] = read(jsonl({"prompt": "p", "response_a": "x", "response_b": "y", "gold": gold}))
    assert record.gold == gold.lower()


def test_chat_prompt_and_responses_as_assistant_messages() -> None:
    row = {
        "prompt": CHAT,
        "response_a": {"role": "assistant", "content": "Red."},
        "response_b": [{"role": "assistant", "content": "Blue."}],
    }
    [record] = read(jsonl(row))
    assert record.prompt == CHAT
    assert (record.response_a, record.response_b) == ("Red.", "Blue.")


def test_chat_prompt_keeps_every_field_of_a_message_but_nulls() -> None:
    message = {"role": "user", "content": "q", "name": "x", "weight": 1, "refusal": None}
    [record] = read(jsonl({"prompt": [message], "response_a": "a", "response_b": "b"}))
    assert record.prompt == [{"role": "user", "content": "q", "name": "x", "weight": 1}]


def test_responses_list_expands_to_distinct_pairs_with_models() -> None:
    row = {
        "prompt": "p",
        "responses": ["r0", "r1", " r0 ", "r3"],
        "models": ["m0", "m1", "m2", "m3"],
        "id": "q",
    }
    records = read(jsonl(row))
    got = [
        (r.external_id, r.response_a, r.response_b, r.model_a, r.model_b, r.shape, r.line) for r in records
    ]
    assert got == [
        ("q:0-1", "r0", "r1", "m0", "m1", "responses", 1),
        ("q:0-3", "r0", "r3", "m0", "m3", "responses", 1),
        ("q:1-3", "r1", "r3", "m1", "m3", "responses", 1),
    ]


def test_responses_over_the_cap_show_every_response_and_count_what_is_left_out() -> None:
    row = {"prompt": "p", "responses": [f"r{i}" for i in range(6)]}
    records = read(jsonl(row), options=ImportOptions(max_pairs_per_record=4))
    assert [(r.response_a, r.response_b) for r in records] == [
        ("r0", "r5"),
        ("r1", "r4"),
        ("r2", "r3"),
        ("r0", "r4"),
    ]
    assert [r.left_out for r in records] == [11, 0, 0, 0]  # 15 possible pairs, 4 kept
    assert {r.external_id for r in records} == {""}
    assert {r.model_a for r in records} == {""}
    default = read(jsonl(row))
    assert len(default) == 10 and default[0].left_out == 5  # default cap of 10 out of 15 possible pairs


@pytest.mark.parametrize("n", range(2, 12))
def test_round_robin_shows_every_response_within_half_the_pairs(n: int) -> None:
    from labeling.records import round_robin

    pairs = list(round_robin(n))
    assert sorted(pairs) == [(i, j) for i in range(n) for j in range(i + 1, n)]
    first = pairs[: (n + 1) // 2 + (n % 2)]
    assert {i for pair in first for i in pair} == set(range(n))


def test_responses_given_as_assistant_messages() -> None:
    row = {
        "prompt": CHAT,
        "responses": [{"role": "assistant", "content": "x"}, [{"role": "assistant", "content": "y"}]],
    }
    [record] = read(jsonl(row))
    assert (record.response_a, record.response_b) == ("x", "y")


@pytest.mark.parametrize("conversational", [False, True])
def test_trl_rows_are_shuffled_deterministically(conversational: bool) -> None:
    rows = []
    for i in range(40):
        chosen, rejected = f"good {i}", f"bad {i}"
        if conversational:
            row = {
                "prompt": [{"role": "user", "content": f"q{i}"}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        else:
            row = {"prompt": f"q{i}", "chosen": chosen, "rejected": rejected}
        rows.append(row)
    first, second = read(jsonl(*rows)), read(jsonl(*rows))
    assert first == second
    assert {r.original_label for r in first} == {"a", "b"}  # both orientations occur
    for i, record in enumerate(first):
        chosen = record.response_a if record.original_label == "a" else record.response_b
        rejected = record.response_b if record.original_label == "a" else record.response_a
        assert (chosen, rejected) == (f"good {i}", f"bad {i}")
        assert record.shape == "preference"
        assert record.gold is None


def test_trl_row_keeps_id_and_metadata() -> None:
    [record] = read(jsonl({"prompt": "p", "chosen": "c", "rejected": "r", "id": "x1", "metadata": {"k": 1}}))
    assert (record.external_id, record.metadata) == ("x1", {"k": 1})


def test_content_hash_ignores_order_and_is_stable() -> None:
    ab = {"prompt": CHAT, "response_a": "one", "response_b": "two"}
    ba = {"prompt": CHAT, "response_a": "two", "response_b": "one"}
    first = read(jsonl(ab, ba))
    again = read(jsonl(ab))
    assert first[0].content_hash == first[1].content_hash == again[0].content_hash
    other = read(jsonl({"prompt": "other", "response_a": "one", "response_b": "two"}))
    assert other[0].content_hash != first[0].content_hash
    assert len(first[0].content_hash) == 64


def test_content_hash_matches_documented_canonical_json() -> None:
    import hashlib

    expected = hashlib.sha256('["p",["a","é"]]'.encode()).hexdigest()
    assert content_hash("p", "é", "a") == expected


# --- validation -------------------------------------------------------------------------------

P = {"prompt": "p"}
SEEN = " as annotators see it (only line ends or spaces differ)"
BAD_RECORDS = [
    ([1, 2], [(None, "record must be a JSON object, got array")]),
    ("text", [(None, "record must be a JSON object, got string")]),
    (None, [(None, "record must be a JSON object, got null")]),
    (
        {"prompt": "p", "foo": 1},
        [
            (
                None,
                "no layout matches keys [prompt, foo]; closest: prefstudio responses list (lacks responses); "
                "map them with --map",
            )
        ],
    ),
    (
        {"history": [], "ref_A": "x", "ref_B": "y", "label": 1},
        [(None, "no layout matches keys [history, ref_A, ref_B, label]; map them with --map")],
    ),
    ({"response_a": "x", "response_b": "y"}, [("prompt", "is required")]),
    ({**P, "response_a": "x"}, [("response_b", "is required")]),
    ({"prompt": " \t", "response_a": "x", "response_b": "y"}, [("prompt", "must be a non-empty string")]),
    (
        {"prompt": 3, "response_a": "x", "response_b": "y"},
        [("prompt", "must be a string or a list of messages, got number")],
    ),
    ({"prompt": [], "response_a": "x", "response_b": "y"}, [("prompt", "must not be an empty list")]),
    (
        {**P, "response_a": 3, "response_b": "y"},
        [("response_a", "must be a string or a list of messages, got number")],
    ),
    ({**P, "response_a": "", "response_b": " \n"}, [("response_b", "is identical to response_a" + SEEN)]),
    (
        {**P, "response_a": "same", "response_b": " same\n"},
        [("response_b", "is identical to response_a" + SEEN)],
    ),
    ({**P, "response_a": "same", "response_b": "same"}, [("response_b", "is identical to response_a")]),
    ({**P, "chosen": "same", "rejected": "same"}, [("rejected", "is identical to chosen")]),
    ({**P, "chosen": "c"}, [("rejected", "is required")]),
    (
        {"prompt": [{"role": "robot", "content": "x"}], "response_a": "x", "response_b": "y"},
        [("prompt[0].role", "must be one of system, developer, user, assistant, tool, got 'robot'")],
    ),
    (
        {
            "prompt": [{"role": "user", "content": "q"}, {"role": "user"}],
            "response_a": "x",
            "response_b": "y",
        },
        [("prompt[1].content", "is required")],
    ),
    (
        {"prompt": [{"content": "q"}], "response_a": "x", "response_b": "y"},
        [("prompt[0].role", "is required")],
    ),
    (
        {"prompt": [{"role": "user", "content": " "}], "response_a": "x", "response_b": "y"},
        [("prompt[0].content", "must be a non-empty string")],
    ),
    (
        {"prompt": [{"role": "user", "content": 5}], "response_a": "x", "response_b": "y"},
        [("prompt[0].content", "must be a string or a list of parts, got number")],
    ),
    (
        {
            "prompt": [{"role": "user", "content": [{"type": "image_url"}]}],
            "response_a": "x",
            "response_b": "y",
        },
        [("prompt[0].content[0]", "images are not supported")],
    ),
    (
        {
            "prompt": [{"role": "user", "content": [{"type": "input_audio"}]}],
            "response_a": "x",
            "response_b": "y",
        },
        [("prompt[0].content[0]", "audio is not supported")],
    ),
    (
        {
            "prompt": [{"role": "user", "content": [{"type": "hologram"}]}],
            "response_a": "x",
            "response_b": "y",
        },
        [("prompt[0].content[0]", "content parts of type 'hologram' are not supported, only text")],
    ),
    (
        {"prompt": [{"role": "user", "tool_calls": "x"}], "response_a": "x", "response_b": "y"},
        [("prompt[0].tool_calls", "must be a list of tool calls (objects), got string")],
    ),
    (
        {"prompt": ["hi"], "response_a": "x", "response_b": "y"},
        [("prompt[0]", "must be a message object, got string")],
    ),
    (
        {**P, "response_a": {"role": "user", "content": "x"}, "response_b": "y"},
        [("response_a", "must end with an assistant message, got a user message")],
    ),
    (
        {**P, "response_a": "\x1e[]", "response_b": "y"},
        [("response_a", "must not start with U+001E (it marks a list of messages)")],
    ),
    ({**P, "response_a": {"role": "assistant"}, "response_b": "y"}, [("response_a.content", "is required")]),
    ({**P, "chosen": ["c"], "rejected": "r"}, [("chosen[0]", "must be a message object, got string")]),
    ({**P, "responses": ["a", " a"]}, [("responses", "must hold at least 2 distinct responses, got 1")]),
    ({**P, "responses": ["a"]}, [("responses", "must hold at least 2 distinct responses, got 1")]),
    ({**P, "responses": "a"}, [("responses", "must be an array of responses, got string")]),
    (
        {**P, "responses": ["a", 2]},
        [("responses[1]", "must be a string or a list of messages, got number")],
    ),
    ({**P, "responses": ["a", "b"], "models": ["m"]}, [("models", "has 1 name for 2 responses")]),
    ({**P, "responses": ["a", "b"], "models": "m"}, [("models", "must be an array of strings, got string")]),
    ({**P, "responses": ["a", "b"], "models": ["m", 1]}, [("models[1]", "must be a string, got number")]),
    (
        {**P, "response_a": "x", "response_b": "y", "gold": "c"},
        [("gold", "must be one of a, b, tie, got 'c'")],
    ),
    (
        {**P, "response_a": "x", "response_b": "y", "gold": 1},
        [("gold", "must be one of a, b, tie, got number")],
    ),
    (
        {**P, "response_a": "x", "response_b": "y", "metadata": [1]},
        [("metadata", "must be a JSON object, got array")],
    ),
    (
        {**P, "response_a": "x", "response_b": "y", "metadata": "{}"},
        [("metadata", "must be a JSON object, got string")],
    ),
    (
        {**P, "response_a": "x", "response_b": "y", "model_a": 5},
        [("model_a", "must be a string, got number")],
    ),
    (
        {**P, "response_a": "x", "response_b": "y", "id": 1.5},
        [("id", "must be a string or an integer, got number")],
    ),
    (
        {**P, "response_a": "x", "response_b": "y", "id": True},
        [("id", "must be a string or an integer, got boolean")],
    ),
    (
        {**P, "response_a": "x\x00", "response_b": "y"},
        [("response_a", "must not contain NUL characters (U+0000)")],
    ),
    (
        {**P, "response_a": "x", "response_b": "y", "metadata": {"k": "\x00"}},
        [("metadata", "must not contain NUL characters (U+0000)")],
    ),
    (
        {"chosen": "Yes.", "rejected": "No."},
        [
            (
                "chosen",
                f"shares no beginning with rejected, {NO_PROMPT}",
            )
        ],
    ),
    (
        {
            "chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "x"}],
            "rejected": [{"role": "user", "content": "b"}, {"role": "assistant", "content": "y"}],
        },
        [
            (
                "chosen",
                f"shares no first turn with rejected, {NO_PROMPT}",
            )
        ],
    ),  # fmt: skip
    ({"prompt": "p", "completion": "x", "label": "maybe"}, [("label", "must be true or false, got 'maybe'")]),
    (
        {"prompt": "\ud800", "response_a": "x", "response_b": "y"},
        [("prompt", "contains an unpaired surrogate character")],
    ),
]


@pytest.mark.parametrize(("record", "expected"), BAD_RECORDS)
def test_bad_record_reports_field_and_reason(record: object, expected: list[tuple[str | None, str]]) -> None:
    items = read(jsonl(json.dumps(record)), fmt="jsonl")
    assert all(isinstance(item, RecordError) for item in items)
    assert [(e.field, e.reason) for e in items] == expected
    assert {(e.file, e.line) for e in items} == {("data.jsonl", 1)}


def test_all_problems_of_a_record_are_collected() -> None:
    row = {"prompt": "", "response_a": 1, "response_b": "\x00", "gold": "z", "id": [], "metadata": 3}
    assert [(e.field, e.reason) for e in read(jsonl(row))] == [
        ("prompt", "must be a non-empty string"),
        ("response_a", "must be a string or a list of messages, got number"),
        ("response_b", "must not contain NUL characters (U+0000)"),
        ("gold", "must be one of a, b, tie, got 'z'"),
        ("id", "must be a string or an integer, got array"),
        ("metadata", "must be a JSON object, got number"),
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"prompt": "x" "response_a": "y"}', "malformed JSON: Expecting ',' delimiter at column 16"),
        ('{"prompt": "x",', "malformed JSON: Expecting property name enclosed in double quotes at column 16"),
        ('{"prompt": NaN}', "malformed JSON: NaN is not valid JSON"),
        ("{} {}", "malformed JSON: Extra data at column 4"),
    ],
)
def test_malformed_json(line: str, reason: str) -> None:
    [error] = read(jsonl(line), fmt="jsonl")
    assert (error.line, error.field, error.reason) == (1, None, reason)


def test_deeply_nested_json_is_a_record_error() -> None:
    [error] = read(jsonl("[" * 100_000), fmt="jsonl")
    assert error.reason.startswith("malformed JSON: maximum recursion depth exceeded")


def test_invalid_utf8_reports_byte_offset_and_continues() -> None:
    good = {"prompt": "p", "response_a": "x", "response_b": "y"}
    items = read(jsonl(good, b'{"prompt": "\xff"}', good))
    assert problems(items) == [(2, None, "invalid UTF-8 at byte 12")]
    assert [r.line for r in pairs(items)] == [1, 3]
    assert items[1].raw == '{"prompt": "\ufffd"}'


def test_line_numbers_count_blank_lines_and_bom() -> None:
    good = json.dumps({"prompt": "p", "response_a": "x", "response_b": "y"})
    data = b"\xef\xbb\xbf" + jsonl(good, "", "   ", good, "\r", "oops", good).replace(b"\n", b"\r\n")
    items = read(data)
    assert [r.line for r in pairs(items)] == [1, 4, 7]
    assert problems(items) == [(6, None, "malformed JSON: Expecting value at column 1")]


def test_record_error_text_and_raw_truncation() -> None:
    error = RecordError("data.jsonl", 7, "response_b", "is identical to response_a", "{}")
    assert str(error) == "data.jsonl, line 7, field response_b: is identical to response_a"
    assert str(RecordError("f.csv", 2, None, "bad", "")) == "f.csv, line 2: bad"
    [error] = read(jsonl({"prompt": "p", "response_a": "x" * 2000}))
    assert len(error.raw) == 500


def test_parse_record_directly() -> None:
    records = parse_record(
        {"prompt": "p", "chosen": "c", "rejected": "r"}, file="f", line=3, raw="", options=ImportOptions()
    )
    assert [(r.line, r.shape) for r in records] == [(3, "preference")]


class TrackingBytesIO(io.BytesIO):
    """Records how many bytes each read asked for."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sizes: list[int | None] = []

    def read(self, size: int | None = -1) -> bytes:
        self.sizes.append(size)
        return super().read(size)

    def readline(self, size: int | None = -1) -> bytes:
        self.sizes.append(size)
        return super().readline(size)


def test_giant_line_is_reported_without_reading_it_whole() -> None:
    good = {"prompt": "p", "response_a": "x", "response_b": "y"}
    giant = '{"prompt": "' + "x" * 5_000_000 + '"}'
    stream = TrackingBytesIO(jsonl(good, giant, good))
    items = list(iter_records(stream, filename="big.jsonl", options=ImportOptions(max_record_bytes=1000)))
    assert problems(items) == [(2, None, "record is 5,000,014 bytes; the limit is 1,000")]
    assert [r.line for r in pairs(items)] == [1, 3]
    assert items[1].raw.startswith('{"prompt": "xxx') and len(items[1].raw) == 500
    assert all(size is not None and 0 <= size <= 70_000 for size in stream.sizes)


def test_line_exactly_at_the_limit_is_accepted() -> None:
    line = json.dumps({"prompt": "p", "response_a": "x", "response_b": "y"})
    options = ImportOptions(max_record_bytes=len(line))
    assert len(pairs(read(jsonl(line).replace(b"\n", b"\r\n"), options=options))) == 1
    assert problems(read(jsonl(line), options=ImportOptions(max_record_bytes=len(line) - 1)))[0][2] == (
        f"record is {len(line)} bytes; the limit is {len(line) - 1}"
    )


# --- gzip ---------------------------------------------------------------------------------------


def test_jsonl_gz_all_shapes() -> None:
    rows = [
        {"prompt": "p", "response_a": "x", "response_b": "y"},
        {"prompt": CHAT, "responses": ["a", "b", "c"]},
        {"prompt": "p", "chosen": "c", "rejected": "r"},
        {"prompt": "p"},
    ]
    data = gzip.compress(jsonl(*rows))
    assert detect_format(data[:65536]) == "jsonl.gz"
    items = read(data, filename="data.jsonl.gz")
    assert [(r.line, r.shape) for r in pairs(items)] == [
        (1, "pair"),
        (2, "responses"),
        (2, "responses"),
        (2, "responses"),
        (3, "preference"),
    ]
    assert problems(items) == [(4, None, NO_LAYOUT)]


def test_truncated_gzip_is_a_format_error() -> None:
    data = gzip.compress(
        jsonl(*[{"prompt": f"p{i}", "response_a": "x", "response_b": "y"} for i in range(200)])
    )
    with pytest.raises(ImportFormatError, match="data.jsonl.gz: corrupt gzip"):
        read(data[: len(data) - 20], filename="data.jsonl.gz")


# --- CSV ----------------------------------------------------------------------------------------


def test_csv_all_shapes_with_json_cells() -> None:
    header = [
        "id",
        "prompt",
        "response_a",
        "response_b",
        "model_a",
        "gold",
        "responses",
        "models",
        "chosen",
        "rejected",
        "metadata",
    ]
    data = csv_bytes(
        header,
        ["1", "Say hi", "Hi", "Hello", "m1", "B", "", "", "", "", '{"k": 1}'],
        ["2", json.dumps(CHAT), "", "", "", "", '["a", "b"]', '["ma", "mb"]', "", "", ""],
        ["3", "p", "", "", "", "", "", "", "c", "r", ""],
        [
            "",
            "[1, 2]",
            '{"role": "assistant", "content": "x"}',
            '[{"role": "assistant", "content": "y"}]',
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ],
    )
    items = read(data, filename="data.csv")
    assert problems(items) == []
    one, two, three, four = items
    assert (one.line, one.external_id, one.gold, one.model_a, one.model_b, one.metadata) == (
        2,
        "1",
        "b",
        "m1",
        "",
        {"k": 1},
    )
    assert (two.line, two.prompt, two.model_a, two.model_b, two.external_id) == (3, CHAT, "ma", "mb", "2:0-1")
    assert (three.shape, three.original_label in ("a", "b"), three.line) == ("preference", True, 4)
    assert (four.prompt, four.response_a, four.response_b, four.external_id) == ("[1, 2]", "x", "y", "")


def test_csv_row_numbers_count_records_as_a_spreadsheet_does() -> None:
    data = (
        b"\xef\xbb\xbfprompt,response_a,response_b\r\n"
        b'"line1\nline2",a,b\r\n'
        b'p2,"x\ny\nz",w\r\n'
        b"\r\n"
        b"p3,c,d\r\n"
        b"p4,e,e\r\n"
    )
    items = read(data, filename="data.csv")
    assert [(r.unit, r.line, r.prompt) for r in pairs(items)] == [
        ("row", 2, "line1\nline2"),
        ("row", 3, "p2"),
        ("row", 5, "p3"),
    ]
    assert problems(items) == [(6, "response_b", "is identical to response_a")]
    assert str(items[-1]) == "data.csv, row 6, field response_b: is identical to response_a"


def test_csv_invalid_utf8_line_is_one_error() -> None:
    data = b"prompt,response_a,response_b\np1,a,b\np2,\xff\xfe,b\np3,a,b\n"
    items = read(data, filename="data.csv")
    assert problems(items) == [(3, None, "invalid UTF-8 at byte 3")]
    assert [r.line for r in pairs(items)] == [2, 4]


def test_csv_invalid_utf8_inside_a_multiline_cell_is_reported_on_the_record_line() -> None:
    data = b'prompt,response_a,response_b\np1,"a\n\xc3(\nb",c\np2,a,b\n'
    items = read(data, filename="data.csv")
    assert problems(items) == [(2, None, "invalid UTF-8 at byte 0 on line 3")]
    assert [r.line for r in pairs(items)] == [3]


def test_csv_row_problems() -> None:
    data = csv_bytes(
        ["prompt", "response_a", "response_b", "metadata"],
        ["p", "a", "b", "{not json"],
        ["p", "a"],
        ["p", "a", " ", '"x"'],
        ["p", "a", "", ""],
        ["p", "a,b,c"],
        ["p", "", "", ""],
    )
    items = read(data, filename="data.csv")
    assert problems(items) == [
        (2, "metadata", "malformed JSON: Expecting property name enclosed in double quotes at column 2"),
        (3, None, "row has 2 cells; the header has 4"),
        (4, "metadata", "must be a JSON object, got string"),
        (6, None, "row has 2 cells; the header has 4"),
        (7, None, "no layout matches keys [prompt]; closest: prefstudio responses list (lacks responses); "
         "map them with --map"),
    ]  # fmt: skip
    [empty] = pairs(items)  # an empty cell beside its other side is an empty response
    assert (empty.line, empty.response_a, empty.response_b, empty.empty_sides) == (5, "a", "", 1)


def test_csv_oversized_row_is_reported_and_the_next_row_parses() -> None:
    data = csv_bytes(["prompt", "response_a", "response_b"], ["p", "a" * 5000, "b"], ["p", "a", "b"])
    items = read(data, filename="data.csv", options=ImportOptions(max_record_bytes=1000))
    assert problems(items) == [(2, None, "record is 5,004 bytes; the limit is 1,000")]
    assert [r.line for r in pairs(items)] == [3]


@pytest.mark.parametrize(
    "big_cell",
    [
        "a" * 5_000_000,  # one giant physical line
        'line, with "quotes"\n' * 300_000,  # many short lines inside one quoted cell
        "x\n" + "y" * 5_000_000 + "\nz",  # a giant line in the middle of a quoted cell
    ],
)
def test_csv_oversized_record_is_skipped_without_holding_it(big_cell: str) -> None:
    data = csv_bytes(
        ["prompt", "response_a", "response_b"], ["p1", "a", "b"], ["p2", big_cell, "b"], ["p3", "a", "b"]
    )
    stream = TrackingBytesIO(data)
    items = list(iter_records(stream, filename="big.csv", options=ImportOptions(max_record_bytes=1000)))
    [error] = [e for e in items if isinstance(e, RecordError)]
    assert (error.line, error.field) == (3, None)
    assert error.reason.startswith("record is ") and error.reason.endswith("bytes; the limit is 1,000")
    assert [(r.line, r.prompt) for r in pairs(items)] == [(2, "p1"), (4, "p3")]
    assert all(size is not None and 0 <= size <= 70_000 for size in stream.sizes)


def test_csv_unclosed_quote_does_not_crash() -> None:
    data = b'prompt,response_a,response_b\np1,a,b\n"p2,a,b\np3,a,b\n'
    items = read(data, filename="data.csv")
    assert [r.line for r in pairs(items)] == [2]
    assert problems(items) == [(3, None, "row has 1 cell; the header has 3")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b"response_a,response_b\nx,y\n",
            "the CSV header fits no layout: no layout matches columns \\[response_a, response_b\\]; "
            "closest: prefstudio pair \\(lacks prompt\\); map them with --map",
        ),
        (b"prompt,answer\nx,y\n", "no layout matches columns \\[prompt, answer\\]"),
        (b"prompt|response_a|response_b\nx|y|z\n", "the CSV header looks split by '\\|', not by commas"),
        (b"prompt,response_a,response_b\n", "holds no records"),
        (b"prompt,response_a,response_b\n\n\n", "holds no records"),
    ],
)
def test_csv_whole_file_problems(data: bytes, message: str) -> None:
    with pytest.raises(ImportFormatError, match=message) as caught:
        read(data, filename="data.csv", fmt="csv")
    assert "data.csv" in str(caught.value)


# --- Parquet ------------------------------------------------------------------------------------


def test_parquet_pairs_and_nested_values(tmp_path: Path) -> None:
    rows = [
        {"prompt": CHAT, "response_a": "x", "response_b": "y", "metadata": {"k": 1}, "gold": "TIE", "id": 5},
        {
            "prompt": CHAT,
            "response_a": "x",
            "response_b": "x",
            "metadata": {"k": 2},
            "gold": None,
            "id": None,
        },
        {"prompt": CHAT, "response_a": "z", "response_b": "y", "metadata": None, "gold": "a", "id": 7},
    ]
    data = parquet_bytes(rows, tmp_path)
    assert detect_format(data[:100]) == "parquet"
    items = read(data, filename="data.parquet", options=ImportOptions(batch_size=1))
    assert [(r.line, r.prompt, r.gold, r.external_id, r.metadata) for r in pairs(items)] == [
        (1, CHAT, "tie", "5", {"k": 1}),
        (3, CHAT, "a", "7", {}),
    ]
    assert problems(items) == [(2, "response_b", "is identical to response_a")]


def test_parquet_trl_conversational_and_responses(tmp_path: Path) -> None:
    message = [{"role": "assistant", "content": "good"}]
    trl = [
        {
            "prompt": [{"role": "user", "content": "q"}],
            "chosen": message,
            "rejected": [{"role": "assistant", "content": "bad"}],
        }
    ]
    [record] = read(parquet_bytes(trl, tmp_path), filename="trl.parquet")
    chosen = record.response_a if record.original_label == "a" else record.response_b
    assert (chosen, record.shape) == ("good", "preference")

    lists = [{"prompt": "p", "responses": ["a", "b", "c"], "models": ["x", "y", "z"], "id": "r"}]
    records = read(parquet_bytes(lists, tmp_path), filename="lists.parquet")
    assert [r.external_id for r in records] == ["r:0-1", "r:0-2", "r:1-2"]


def test_parquet_mixed_shapes_with_null_columns(tmp_path: Path) -> None:
    rows = [
        {"prompt": "p", "response_a": "x", "response_b": "y", "chosen": None, "rejected": None},
        {"prompt": "p", "response_a": None, "response_b": None, "chosen": "c", "rejected": "r"},
    ]
    items = read(parquet_bytes(rows, tmp_path), filename="mixed.parquet")
    assert [r.shape for r in items] == ["pair", "preference"]


def test_parquet_oversized_row(tmp_path: Path) -> None:
    rows = [
        {"prompt": "p", "response_a": "x" * 3000, "response_b": "y"},
        {"prompt": "p", "response_a": "x", "response_b": "y"},
    ]
    items = read(
        parquet_bytes(rows, tmp_path), filename="big.parquet", options=ImportOptions(max_record_bytes=1000)
    )
    assert [(e.line, e.reason.split(";")[1]) for e in items if isinstance(e, RecordError)] == [
        (1, " the limit is 1,000")
    ]
    assert [r.line for r in pairs(items)] == [2]


def test_a_mapping_that_names_a_missing_column_is_refused_for_the_whole_file(tmp_path: Path) -> None:
    data = csv_bytes(["prompt", "response_a", "response_b"], ["q", "a", "b"])
    with pytest.raises(ImportFormatError) as raised:
        read(data, filename="data.csv", mapping={"label": "pick"})
    assert str(raised.value) == (
        "data.csv: label is mapped to pick, but the CSV header has no column pick; its columns are "
        "[prompt, response_a, response_b]"
    )
    rows = [{"q": "Q?", "sides": [{"text": "x"}, {"text": "y"}]}]
    with pytest.raises(
        ImportFormatError, match="prompt is mapped to question, but the Parquet schema has no "
    ):
        read(parquet_bytes(rows, tmp_path), filename="d.parquet", mapping={"prompt": "question"})


def test_csv_cells_of_mapped_columns_that_are_empty(tmp_path: Path) -> None:
    data = csv_bytes(
        ["q", "a", "b", "sys", "pick"], ["Q1", "x", "y", "", "b"], ["", "x", "y", "Be brief.", ""]
    )
    mapping = {"prompt": "q", "response_a": "a", "response_b": "b", "system": "sys", "label": "pick"}
    items = read(data, filename="data.csv", mapping=mapping)
    assert (items[0].prompt, items[0].original_label) == ("Q1", "b")  # a blank system is no system
    assert problems(items) == [(3, "q", "must be a non-empty string")]  # a blank prompt is not a prompt


def test_parquet_paths_reach_into_lists_of_structs(tmp_path: Path) -> None:
    rows = [
        {"info": {"post": "P1"}, "summaries": [{"text": "x", "policy": "m1"}, {"text": "y", "policy": "m2"}],
         "choice": 1},
    ]  # fmt: skip
    mapping = {"prompt": "info.post", "response_a": "summaries.0.text", "response_b": "summaries[1].text",
               "label": "choice", "label_values": {"0": "a", "1": "b"}}  # fmt: skip
    [record] = read(parquet_bytes(rows, tmp_path), filename="d.parquet", mapping=mapping)
    assert (record.unit, record.prompt, record.response_a, record.response_b) == ("row", "P1", "x", "y")
    assert record.original_label == "b" and record.metadata == {
        "summaries": [{"policy": "m1"}, {"policy": "m2"}]
    }


def test_unreadable_parquet_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(ImportFormatError, match="bad.parquet: unreadable Parquet"):
        read(b"PAR1" + os.urandom(300) + b"PAR1", filename="bad.parquet")
    no_prompt = parquet_bytes([{"question": "q", "response_a": "x", "response_b": "y"}], tmp_path)
    with pytest.raises(ImportFormatError, match="Parquet schema fits no layout: no layout matches columns"):
        read(no_prompt, filename="np.parquet")
    mapped = read(no_prompt, filename="np.parquet", mapping={"prompt": "question"})
    assert [(r.prompt, r.layout, r.unit) for r in mapped] == [("q", "prefstudio pair, fields mapped", "row")]


# --- format detection ---------------------------------------------------------------------------


def test_detection_uses_content_not_the_name() -> None:
    data = jsonl({"prompt": "p", "response_a": "x", "response_b": "y"})
    assert detect_format(data, "upload.csv") == "jsonl"
    assert len(read(data, filename="upload.csv")) == 1
    assert detect_format(b"\xef\xbb\xbf\n  {", "x") == "jsonl"
    assert detect_format(b'"prompt","response_a","response_b"\r\n') == "csv"
    assert detect_format(b"PAR1....") == "parquet"


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "unrecognized format"),
        (b'<!DOCTYPE html>\n<html><input name="prompt"></html>', "unrecognized format"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "unrecognized format"),
        (b"", "empty"),
        (b" \n\t\n", "empty"),
        (b"\x1f\x8b\x08\x00garbage-garbage", "corrupt gzip"),
        (gzip.compress(b"prompt,response_a,response_b\n"), "does not hold JSON lines"),
        (b"just some text\n", "unrecognized format"),
    ],
)
def test_detection_rejects_other_content(head: bytes, message: str) -> None:
    with pytest.raises(ImportFormatError, match=message) as caught:
        detect_format(head, "upload.bin")
    assert "upload.bin" in str(caught.value)
    with pytest.raises(ImportFormatError):
        read(head, filename="upload.bin")


def test_unknown_explicit_format() -> None:
    with pytest.raises(ImportFormatError, match="unknown format 'xml'"):
        read(b"{}", fmt="xml")


def test_only_blank_lines_is_a_format_error() -> None:
    with pytest.raises(ImportFormatError, match="holds no records"):
        read(b"\n\n  \n", fmt="jsonl")


# --- robustness properties ----------------------------------------------------------------------

KEYS = [
    "prompt",
    "response_a",
    "response_b",
    "responses",
    "models",
    "chosen",
    "rejected",
    "id",
    "metadata",
    "gold",
    "role",
    "content",
    "model_a",
    "model_b",
]
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["user", "assistant", "system", "tool", "a", "B", "tie", "", " "])
)
JSON_VALUES = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), children, max_size=6)
    ),
    max_leaves=25,
)

TEXTS = st.text(max_size=6) | st.sampled_from(["x", "y", " x ", "\x00", "\ud800"])
MESSAGES = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool"]), "content": TEXTS},
    optional={"name": TEXTS},
)
PROMPTS = TEXTS | st.lists(MESSAGES, max_size=3) | LEAVES
RESPONSES = TEXTS | MESSAGES | st.lists(MESSAGES, min_size=1, max_size=2) | LEAVES
OPTIONAL = {"id": LEAVES, "metadata": JSON_VALUES, "gold": LEAVES, "model_a": LEAVES}
RECORDS = st.one_of(
    st.fixed_dictionaries(
        {"prompt": PROMPTS, "response_a": RESPONSES, "response_b": RESPONSES}, optional=OPTIONAL
    ),
    st.fixed_dictionaries(
        {"prompt": PROMPTS, "responses": st.lists(RESPONSES, max_size=5)},
        optional={**OPTIONAL, "models": st.lists(LEAVES, max_size=5)},
    ),
    st.fixed_dictionaries({"prompt": PROMPTS, "chosen": RESPONSES, "rejected": RESPONSES}, optional=OPTIONAL),
)


def _check_items(items: list[object], expected_lines: set[int]) -> None:
    assert all(isinstance(item, PairRecord | RecordError) for item in items)
    assert {item.line for item in items} == expected_lines
    for line in expected_lines:  # a line yields either pairs or errors, never both
        kinds = {type(item) for item in items if item.line == line}
        assert len(kinds) == 1
    for record in items:
        if isinstance(record, PairRecord):
            assert response_key(record.response_a) != response_key(record.response_b)
            assert record.shape in ("pair", "responses", "preference")
            assert record.content_hash == content_hash(record.prompt, record.response_a, record.response_b)
            assert (record.original_label is not None) == (record.shape == "preference")


def _run_jsonl(data: bytes, expected_lines: set[int], options: ImportOptions) -> None:
    try:
        items = list(iter_records(io.BytesIO(data), filename="fuzz.jsonl", fmt="jsonl", options=options))
    except ImportFormatError:
        assert not expected_lines
        return
    _check_items(items, expected_lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(JSON_VALUES | RECORDS, max_size=8))
def test_property_json_values_never_crash(values: list[object]) -> None:
    data = b"\n".join(json.dumps(value).encode() for value in values)
    _run_jsonl(data, set(range(1, len(values) + 1)), ImportOptions(max_pairs_per_record=3))


LINES = st.lists(
    st.binary(max_size=80).map(lambda b: b.replace(b"\n", b""))
    | (JSON_VALUES | RECORDS).map(
        lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")
    )
    | st.sampled_from(
        [b"", b"  ", b"\r", b"\xef\xbb\xbf", b"{", b'{"prompt": "p", "response_a": "x", "response_b": "y"}']
    ),
    max_size=10,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(LINES, st.sampled_from([40, 1_000_000]))
def test_property_byte_lines_never_crash(lines: list[bytes], limit: int) -> None:
    def reported(number: int, line: bytes) -> bool:
        content = line.removesuffix(b"\r")
        text = (line.removeprefix(b"\xef\xbb\xbf") if number == 1 else line).decode("utf-8", "replace")
        return len(content) > limit or bool(text.strip())

    expected = {n for n, line in enumerate(lines, start=1) if reported(n, line)}
    _run_jsonl(b"\n".join(lines), expected, ImportOptions(max_record_bytes=limit))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_property_arbitrary_files_raise_only_format_errors(data: bytes) -> None:
    for fmt in ("auto", "csv", "jsonl.gz", "parquet"):
        try:
            items = read(data, filename="fuzz.bin", fmt=fmt)
        except ImportFormatError:
            continue
        assert all(isinstance(item, PairRecord | RecordError) for item in items)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(st.text(max_size=12) | JSON_VALUES.map(json.dumps), min_size=3, max_size=3), max_size=6)
)
def test_property_csv_rows_never_crash(rows: list[list[str]]) -> None:
    data = csv_bytes(["prompt", "response_a", "response_b"], *rows)
    try:
        items = read(data, filename="fuzz.csv", fmt="csv")
    except ImportFormatError:
        return
    assert all(isinstance(item, PairRecord | RecordError) for item in items)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(st.text(alphabet='",\n\r ab\u00e9', max_size=30), min_size=3, max_size=3), max_size=6),
    st.integers(min_value=1, max_value=60),
)
def test_property_csv_size_limit_only_replaces_oversized_records(rows: list[list[str]], limit: int) -> None:
    """With a small limit every record keeps its line; only records over the limit turn into size errors."""
    data = csv_bytes(["prompt", "response_a", "response_b"], *rows)
    try:
        unlimited = read(data, filename="f.csv", fmt="csv")
    except ImportFormatError:
        return
    limited = read(data, filename="f.csv", fmt="csv", options=ImportOptions(max_record_bytes=limit))
    oversized = {e.line for e in limited if isinstance(e, RecordError) and e.reason.startswith("record is")}
    assert [i for i in limited if i.line not in oversized] == [
        i for i in unlimited if i.line not in oversized
    ]


# --- purity -------------------------------------------------------------------------------------


def test_module_does_not_import_django() -> None:
    code = (
        "import sys, labeling.importing, labeling.records, labeling.layouts, labeling.conversations; "
        "print('django' in sys.modules, 'pyarrow' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]


PATHS = st.lists(
    st.sampled_from(["prompt", "q", "a", "b", "0", "1", "text", "[0]", "[5]", "x.y", ""]),
    min_size=1,
    max_size=4,
).map(lambda steps: ".".join(steps).replace(".[", "["))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(JSON_VALUES | RECORDS, max_size=4),
    st.dictionaries(st.sampled_from(["prompt", "response_a", "response_b", "system", "label", "id"]), PATHS,
                    max_size=4),
    st.dictionaries(LEAVES.map(str), st.sampled_from(["a", "b", "tie"]), max_size=3),
)  # fmt: skip
def test_property_mapped_paths_never_crash(values: list[object], mapping: dict, label_values: dict) -> None:
    if len(set(mapping.values())) < len(mapping) or "" in mapping.values():
        return  # refused by check_mapping before any record is read
    if label_values and "label" in mapping:
        mapping = {**mapping, "label_values": {k: v for k, v in label_values.items() if k.strip()}}
    data = b"\n".join(json.dumps(value).encode() for value in values)
    try:
        items = list(iter_records(io.BytesIO(data), filename="fuzz.jsonl", fmt="jsonl", mapping=mapping))
    except ImportFormatError:
        assert not values
        return
    assert all(isinstance(item, PairRecord | RecordError) for item in items)
    assert {item.line for item in items} == set(range(1, len(values) + 1))
    for record in pairs(items):
        assert record.original_label in (None, "a", "b", "t")
