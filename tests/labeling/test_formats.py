"""Public preference-data layouts, file by file (tests/labeling/formats/, copied from the formats
cases): what each record is stored as (prompt turns, responses, metadata, hidden label), in JSONL and
in Parquet where the layout exists in both; field mappings; file-level problems named as such."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labeling.conversations import response_messages
from labeling.importing import ImportFormatError, ImportOptions, PairRecord, RecordError, iter_records
from labeling.layouts import LAYOUTS, parse_mapping, read_fields
from labeling.records import NOTE_EARLY, NOTE_IMPLICIT, NOTE_PROMPT_KEPT, NOTE_REPEATED, parse_record

FORMATS = Path(__file__).parent / "formats"


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str, **more: object) -> dict:
    return {"role": "assistant", "content": text, **more}


def read(name: str, data: bytes | None = None, **kwargs: object) -> list[PairRecord | RecordError]:
    data = (FORMATS / name).read_bytes() if data is None else data
    return list(iter_records(io.BytesIO(data), filename=name, **kwargs))


def as_parquet(name: str) -> bytes:
    """The records of a JSONL fixture as a Parquet file, as the Hugging Face hub converts them."""
    rows = [json.loads(line) for line in (FORMATS / name).read_text().splitlines() if line.strip()]
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out.getvalue()


def chosen(record: PairRecord) -> tuple[str, str]:
    """(chosen, rejected) of a record with a hidden label."""
    assert record.original_label in ("a", "b") and record.shape == "preference"
    a, b = record.response_a, record.response_b
    return (a, b) if record.original_label == "a" else (b, a)


def errors(items: list) -> list[str]:
    return [str(i) for i in items if isinstance(i, RecordError)]


# --- HH-RLHF --------------------------------------------------------------------------------------

HH_FILES = ["01_hh_rlhf_raw.jsonl", "01_hh_rlhf_raw.jsonl.gz", "01_hh_rlhf_raw.parquet"]


@pytest.mark.parametrize("name", HH_FILES)
def test_hh_rlhf_transcripts_split_at_the_shared_turns(name):
    data = as_parquet("01_hh_rlhf_raw.jsonl") if name.endswith(".parquet") else None
    one, two, three = read(name, data)
    assert (one.layout, one.unit) == ("HH-RLHF transcripts", "row" if data else "line")
    assert one.prompt == [user("How long should I boil an egg for a soft yolk?")]
    assert chosen(one) == (
        "About six minutes in already-boiling water, then cool it in cold water.",
        "Eggs are a good source of protein.",
    )
    assert two.prompt == [
        user("What is a good name for a grey cat?"),
        assistant("How about Pebble or Ash?"),
        user("Something longer, please."),
    ]
    assert chosen(two) == ("Maybe Sir Whiskerton of the Window Sill.", "Cat.")
    assert one.notes == two.notes == () and one.metadata == {}
    # line 3 differs before the last turn: the responses keep the differing turns, and say so
    assert three.prompt == [user("Can you suggest a houseplant for a dark room?")]
    good, bad = (response_messages(text) for text in chosen(three))
    assert good == [
        assistant("A snake plant copes well with low light."),
        user("Thanks!"),
        assistant("You're welcome."),
    ]
    assert bad == [assistant("Any plant will do."), user("Thanks!"), assistant("You're welcome.")]
    assert three.notes == (NOTE_EARLY,)


def test_hh_with_a_prompt_field_shows_the_prompt_once():
    plain, with_prompt = read("01_hh_rlhf_raw.jsonl"), read("01b_hh_rlhf_leftsplit_prompt.jsonl")
    assert [r.prompt for r in with_prompt] == [r.prompt for r in plain]
    assert [r.content_hash for r in with_prompt] == [r.content_hash for r in plain]
    assert all(NOTE_REPEATED in r.notes for r in with_prompt) and with_prompt[0].metadata == {}


def test_texts_that_repeat_their_prompt_show_it_once():
    row = {"prompt": "The sky is", "chosen": "The sky is blue.", "rejected": "The sky is green."}
    [record] = read("x.jsonl", json.dumps(row).encode())
    assert (record.prompt, chosen(record), record.notes) == (
        "The sky is",
        (" blue.", " green."),
        (NOTE_REPEATED,),
    )
    echo = {
        "prompt": "Say hi",
        "response_a": "Say hi",
        "response_b": "Say hi!",
    }  # one side is the prompt only
    sums = {"prompt": "2+2", "response_a": "2+2=4", "response_b": "2+2=5"}  # not at a word boundary
    for row in (echo, sums):
        [record] = read("x.jsonl", json.dumps(row).encode())
        assert (record.response_a, record.response_b, record.notes) == (
            row["response_a"],
            row["response_b"],
            (),
        )


def test_a_prompt_field_that_is_not_in_the_conversation_is_kept_as_metadata():
    row = {
        "prompt": "A summary of the chat",
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Go away.",
    }
    [record] = read("x.jsonl", json.dumps(row).encode())
    assert record.prompt == [user("Hi")] and record.metadata == {"prompt": "A summary of the chat"}
    assert record.notes == (NOTE_PROMPT_KEPT,) and record.kept == ("prompt",)


# --- UltraFeedback binarized ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["02_ultrafeedback_binarized.jsonl", "02_ultrafeedback_binarized.parquet"])
def test_ultrafeedback_binarized(name):
    first, second, third = read(name)
    assert first.layout == "UltraFeedback binarized"
    assert first.prompt == [user("Write a haiku about autumn rain.")]
    assert chosen(first) == (
        "Grey drops on red leaves\nthe gutter hums a low song\nsummer washes out",
        "Autumn rain is rain that falls in autumn.",
    )
    assert first.metadata == {
        "prompt_id": "0" * 64,
        "score_chosen": 8.5,
        "score_rejected": 4.0,
        "messages": [user("Write a haiku about autumn rain."), assistant(chosen(first)[0])],
    }
    assert first.kept == ("messages", "prompt_id", "score_chosen", "score_rejected")
    assert first.notes == (NOTE_REPEATED,)
    assert chosen(third) == ("Cheerful.", "Sad.") and third.metadata["score_chosen"] == 7.0


def test_ultrafeedback_fixed_by_hand_is_the_same_pairs():
    fixed = read("02b_ultrafeedback_fixed_by_hand.jsonl")
    assert [r.prompt for r in fixed] == [
        "Write a haiku about autumn rain.",
        "Explain what a hash map is in one sentence.",
        "Give me a synonym for 'happy'.",
    ]
    assert fixed[1].metadata == {"prompt_id": "0" * 63 + "1", "score_chosen": 9.0, "score_rejected": 3.0}
    assert [r.content_hash for r in fixed] == [
        r.content_hash for r in read("02_ultrafeedback_binarized.jsonl")
    ]


# --- TRL ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("parquet", [False, True])
def test_trl_conversational_implicit_prompt(parquet):
    name = "03_trl_conversational_implicit_prompt.jsonl"
    banana, french = read(name, as_parquet(name) if parquet else None)
    assert banana.layout == "TRL preference, implicit prompt, conversational"
    assert banana.prompt == [user("What colour is a ripe banana?")] and chosen(banana) == ("Yellow.", "Blue.")
    assert french.prompt == [{"role": "system", "content": "Answer in French."}, user("Say good morning.")]
    assert chosen(french) == ("Bonjour.", "Good morning.")


def test_trl_standard_implicit_prompt():
    [record] = read("03b_trl_standard_implicit_prompt.jsonl")
    assert (record.layout, record.prompt, chosen(record)) == (
        "TRL preference, implicit prompt, standard",
        "The sky is",
        (" blue.", " green."),
    )
    assert record.notes == (NOTE_IMPLICIT,)


@pytest.mark.parametrize("parquet", [False, True])
def test_trl_conversational_with_system_turns_and_prefill_keeps_working(parquet):
    name = "04_trl_conversational_system_multiturn.jsonl"
    system, multi, prefill = read(name, as_parquet(name) if parquet else None)
    assert system.layout == "TRL preference, conversational" and system.external_id == "sys-1"
    assert system.prompt[0] == {
        "role": "system",
        "content": "You are a terse assistant. Never use more than ten words.",
    }
    assert chosen(multi) == ("How about **Rise & Tang**?", "Call it Bakery.") and len(multi.prompt) == 3
    assert prefill.prompt[-1] == assistant('{"colours": [')
    assert chosen(prefill) == ('"red", "yellow", "blue"]}', "red, yellow, blue")


def test_trl_unpaired_rows_pair_a_desirable_with_an_undesirable_completion():
    rows = [
        {"prompt": "The sky is", "completion": " blue.", "label": True, "id": "k1"},
        {"prompt": "Grass is", "completion": " green.", "label": True},
        {"prompt": "The sky is", "completion": " green.", "label": False, "id": "k2"},
        {"prompt": "The sky is", "completion": " clear.", "label": "true"},
    ]
    items = read("kto.jsonl", "\n".join(map(json.dumps, rows)).encode())
    assert errors(items) == [
        "kto.jsonl, line 2, field label: no undesirable completion for the same prompt in the file: "
        "an unpaired row is paired with one of the opposite label"
    ]
    pairs = [i for i in items if isinstance(i, PairRecord)]
    assert [(p.line, p.layout, chosen(p)) for p in pairs] == [
        (1, "TRL unpaired preference (KTO)", (" blue.", " green.")),
        (1, "TRL unpaired preference (KTO)", (" clear.", " green.")),
    ]
    assert pairs[0].external_id == "k1|k2"
    same = [
        {"prompt": "p", "completion": "x", "label": True},
        {"prompt": "p", "completion": "x ", "label": False},
    ]
    assert errors(read("same.jsonl", "\n".join(map(json.dumps, same)).encode()))[0] == (
        "same.jsonl, line 1, field completion: every desirable completion for this prompt is identical to an "
        "undesirable one"
    )


# --- OpenAI / Together ----------------------------------------------------------------------------


def test_openai_preference_fine_tuning_format_keeps_the_label_hidden():
    lisbon, porto, otters = read("05_openai_dpo.jsonl")
    assert lisbon.layout == "OpenAI / Together preference fine-tuning"
    assert lisbon.prompt == [user("How warm is it in Lisbon in May?")]
    assert chosen(lisbon) == ("Usually mild: around 20 to 24 °C in the afternoon.", "It is hot.")
    assert lisbon.metadata == {"input": {"tools": [], "parallel_tool_calls": True}} and lisbon.kept == (
        "input",
    )
    assert (
        porto.prompt[0] == {"role": "system", "content": "You are a polite travel agent."}
        and porto.metadata == {}
    )
    assert otters.prompt[0] == assistant("Hello, how can I help today?")
    assert {r.original_label for r in (lisbon, porto, otters)} <= {"a", "b"}


def test_openai_records_name_their_own_fields_in_problems():
    row = {"input": {"messages": 5}, "preferred_output": [assistant("a")], "non_preferred_output": 3}
    assert errors(read("o.jsonl", json.dumps(row).encode())) == [
        "o.jsonl, line 1, field input.messages: must be a string or a list of messages, got number",
        "o.jsonl, line 1, field non_preferred_output: must be a string or a list of messages, got number",
    ]


# --- tool calls, developer role, content parts ----------------------------------------------------


@pytest.mark.parametrize("parquet", [False, True])
def test_tool_calls_tool_results_and_developer_turns_are_kept(parquet):
    name = "09_tool_calls_and_developer_role.jsonl"
    tool, developer = read(name, as_parquet(name) if parquet else None)
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Bergen"}'},
    }
    assert tool.prompt[2:] == [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": '{"rain_mm": 12, "temp_c": 9}', "tool_call_id": "call_1"},
    ]
    assert chosen(tool)[0] == "Yes: about 12 mm of rain is forecast, so take an umbrella."
    assert developer.prompt == [{"role": "developer", "content": "Reply in lowercase."}, user("Greet me.")]


def test_sides_differing_only_in_a_tool_call_are_different_pairs():
    booking, calculation = read("09b_tool_calls_with_content.jsonl")
    good, bad = (response_messages(text) for text in chosen(booking))
    assert good[0]["tool_calls"][0]["function"]["arguments"] == '{"people": 2, "time": "19:00"}'
    assert bad[0]["tool_calls"][0]["function"]["arguments"] == '{"people": 4, "time": "17:00"}'
    assert good[0]["content"] == bad[0]["content"] == "Booking it now."
    assert calculation.prompt[1]["tool_calls"][0]["function"]["name"] == "calc"


def test_text_parts_are_joined_and_images_refused_plainly():
    items = read("10_content_parts_multimodal.jsonl")
    [parts] = [i for i in items if isinstance(i, PairRecord)]
    assert parts.prompt == [user("Summarise in five words: the meeting moved to Thursday.")]
    assert chosen(parts) == ("Meeting now happens on Thursday.", "Meetings are important.")
    assert errors(items) == [
        "10_content_parts_multimodal.jsonl, line 2, field prompt[0].content[0]: images are not supported"
    ]


# --- texts as given ---------------------------------------------------------------------------------


def test_excel_csv_with_bom_crlf_emoji_and_right_to_left_text_is_stored_as_given():
    arabic, poem, hebrew = read("11_excel_csv_bom_crlf_emoji_rtl.csv")
    assert (arabic.unit, arabic.line, arabic.external_id, arabic.model_a) == ("row", 2, "ex-1", "model-x")
    assert arabic.response_a == "تصبح على خير 🌙"
    assert poem.prompt == "Write two lines of a poem about the sea.\r\nKeep it short."  # line ends as given
    assert poem.response_a == "Waves fold over stones,\r\nthe tide keeps its own time. 🌊"
    assert (hebrew.line, hebrew.prompt, hebrew.model_a) == (4, "כתוב משפט אחד על חתולים.", "model-y")


def test_math_and_long_code_are_stored_as_written():
    latex, code = read("13_latex_and_long_code.jsonl")
    source = json.loads((FORMATS / "13_latex_and_long_code.jsonl").read_text().splitlines()[0])
    assert latex.response_a == source["response_a"] and "\\[ e^{i\\pi} + 1 = 0 \\]" in latex.response_a
    assert code.response_a.count("\ndef f") == 150 and code.response_a.endswith("padding \n```")


def test_empty_responses_are_imported_and_nul_refused():
    items = read("14_empty_and_nul.jsonl")
    empty_a, empty_b, ok = (i for i in items if isinstance(i, PairRecord))
    assert (empty_a.response_a, empty_a.empty_sides) == ("", 1)
    assert chosen(empty_b) == ("You matter.", "   ") and empty_b.empty_sides == 1
    assert ok.empty_sides == 0
    assert errors(items) == [
        "14_empty_and_nul.jsonl, line 3, field response_a: must not contain NUL characters (U+0000)"
    ]
    assert errors(read("14b_nul_byte.csv")) == [
        "14b_nul_byte.csv, row 2, field response_a: must not contain NUL characters (U+0000)"
    ]


def test_sides_equal_as_annotators_see_them_are_refused_and_reimports_add_nothing():
    rows = [{"prompt": "p", "response_a": "Line one\r\nline  two ", "response_b": "Line one\nline two"}]
    assert errors(read("x.jsonl", json.dumps(rows[0]).encode())) == [
        "x.jsonl, line 1, field response_b: is identical to response_a as annotators see it "
        "(only line ends or spaces differ)"
    ]
    lf = {"prompt": "Poem?", "response_a": "Roses\nare red", "response_b": "Violets\nare blue"}
    crlf = {k: v.replace("\n", "\r\n") + "  " for k, v in lf.items()}
    [one], [two] = read("lf.jsonl", json.dumps(lf).encode()), read("crlf.jsonl", json.dumps(crlf).encode())
    assert one.content_hash == two.content_hash and two.response_a == "Roses\r\nare red  "  # stored as given


# --- file-level problems ---------------------------------------------------------------------------


def test_a_pretty_printed_object_is_read_as_one_record():
    [record] = read("15c_pretty_printed_pair.jsonl")
    assert (record.unit, record.line, record.prompt, record.response_b) == (
        "record",
        1,
        "Name a river in Egypt.",
        "The Thames.",
    )


def test_a_json_array_is_read_as_records_and_a_huge_one_refused_with_what_to_do():
    records = [{"prompt": f"q{i}", "response_a": "x", "response_b": "y"} for i in range(3)] + [[1]]
    data = json.dumps(records, indent=2).encode()
    items = read("data.json", data)
    assert [(i.unit, i.line) for i in items] == [("record", 1), ("record", 2), ("record", 3), ("record", 4)]
    assert str(items[-1]) == "data.json, record 4: record must be a JSON object, got array"
    assert [i.prompt for i in read("data.json.gz", gzip.compress(data))[:3]] == ["q0", "q1", "q2"]
    objects = "\n".join(
        json.dumps(r, indent=2) for r in records[:2]
    ).encode()  # pretty-printed, one after another
    assert [(i.unit, i.line, i.prompt) for i in read("pretty.jsonl", objects)] == [
        ("record", 1, "q0"),
        ("record", 2, "q1"),
    ]
    with pytest.raises(
        ImportFormatError,
        match="one JSON document of more than 1 MB, not one record per line; convert it to JSON Lines",
    ):
        read("big.json", data + b" " * 2**20, options=ImportOptions(max_document_bytes=2**20))
    with pytest.raises(
        ImportFormatError,
        match="one JSON document, not one record per line, and it does not parse: Expecting ',' or",
    ):
        read("bad.json", b'[{"prompt": "p"} {"prompt": "q"}]')


@pytest.mark.parametrize(
    ("name", "delimiter"), [("17_excel_semicolon_csv.csv", ";"), ("17b_tab_separated.tsv", "\t")]
)
def test_csv_delimiters_are_sniffed(name, delimiter):
    items = read(name)
    assert errors(items) == []
    assert (items[0].unit, items[0].line, items[0].response_b) in {
        ("row", 2, "Die Seine."),
        ("row", 2, "The Seine."),
    }
    if delimiter == ";":
        assert (items[1].prompt, items[1].response_a, items[1].response_b) == (
            "Wie viel ist 2,5 + 2,5?",
            "5",
            "5,0",
        )


def test_a_header_split_by_another_character_is_named():
    with pytest.raises(
        ImportFormatError, match="the CSV header looks split by '\\|', not by commas, semicolons or tabs"
    ):
        read("pipes.csv", b"prompt|response_a|response_b\nq|a|b\n")
    items = read("mixed.csv", b"prompt;response_a;response_b\nq,a,b\n")
    assert errors(items) == [
        "mixed.csv, row 2: row has 1 cell; the header has 3 "
        "(the header is split by semicolons, this row by commas)"
    ]


def test_json_encoded_turns_in_csv_cells_are_decoded():
    rows = [
        ["chosen", "rejected", "source"],
        [
            json.dumps([user("Hi"), assistant("Hello!")]),
            json.dumps([user("Hi"), assistant("Go away.")]),
            "forum",
        ],
    ]
    data = "\n".join(",".join('"' + cell.replace('"', '""') + '"' for cell in row) for row in rows).encode()
    [record] = read("turns.csv", data)
    assert record.prompt == [user("Hi")] and chosen(record) == ("Hello!", "Go away.")
    assert record.metadata == {"source": "forum"} and record.kept == ("source",)


# --- field mapping -----------------------------------------------------------------------------------


def test_a_record_that_fits_no_layout_names_its_keys():
    row = {"history": [user("Hi")], "ref_A": "Hello", "ref_B": "Bye", "label": 0}
    assert errors(read("h.jsonl", json.dumps(row).encode())) == [
        "h.jsonl, line 1: no layout matches keys [history, ref_A, ref_B, label]; map them with --map"
    ]
    mapping = parse_mapping("prompt=history, response_a=ref_A,response_b=ref_B")
    [record] = read("h.jsonl", json.dumps(row).encode(), mapping=mapping)
    assert (record.layout, record.prompt, record.response_a, record.response_b) == (
        "prefstudio pair, fields mapped",
        [user("Hi")],
        "Hello",
        "Bye",
    )
    assert record.metadata == {"label": 0} and record.kept == ("label",)


def test_mapped_conversations_get_the_prefix_split_and_problems_name_the_file_fields():
    row = {
        "sys": "Be kind.",
        "nested": {"good": [user("Hi"), assistant("Hello!")], "keep": 1},
        "bad": [user("Hi"), assistant("Go away.")],
        "prompt": "an unrelated prompt column",
    }
    mapping = {"chosen": "nested.good", "rejected": "bad", "system": "sys"}
    [record] = read("m.jsonl", json.dumps(row).encode(), mapping=mapping)
    assert record.prompt == [{"role": "system", "content": "Be kind."}, user("Hi")]
    assert chosen(record) == ("Hello!", "Go away.")
    assert record.metadata == {"nested": {"keep": 1}, "prompt": "an unrelated prompt column"}
    row["bad"] = 5
    assert errors(read("m.jsonl", json.dumps(row).encode(), mapping=mapping)) == [
        "m.jsonl, line 1, field bad: must be a string or a list of messages, got number"
    ]


def test_a_top_level_system_field_becomes_the_system_turn():
    row = {"system": "Answer in French.", "prompt": "Say hi.", "chosen": "Salut.", "rejected": "Hi."}
    [record] = read("s.jsonl", json.dumps(row).encode())
    assert record.prompt == [{"role": "system", "content": "Answer in French."}, user("Say hi.")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prompt", "'prompt': write TARGET=SOURCE, e.g. prompt=question"),
        ("question=prompt", "unknown target 'question'; targets are prompt, system, response_a"),
        ("chosen=a,rejected=a", "a: a source field can feed one target only"),
    ],
)
def test_bad_mappings_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_mapping(text)


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.key)
def test_every_layout_reads_its_own_example(layout):
    record = json.loads(layout.example)
    assert read_fields(record).layout is layout
    items = parse_record(record, file="x", line=1, raw="")
    assert items and not any(isinstance(item, RecordError) for item in items), items


def test_a_mapped_field_the_layout_does_not_read_is_kept_under_its_own_name():
    row = {"question": "Q?", "answer_a": "A", "answer_b": "B", "winner": "model_a"}
    mapping = {"prompt": "question", "response_a": "answer_a", "response_b": "answer_b", "chosen": "winner"}
    [record] = read("w.jsonl", json.dumps(row).encode(), mapping=mapping)
    assert record.metadata == {"winner": "model_a"} and record.kept == ("winner",)


def test_the_readme_lists_every_layout_with_its_example():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Projects and data import") : readme.index("## Labeling")]
    for layout in LAYOUTS:
        assert f"| {layout.name} |" in section and f"`{layout.example}`" in section, layout.name
