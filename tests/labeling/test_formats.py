"""Public preference-data layouts, file by file (tests/labeling/formats/, copied from the formats
cases): what each record is stored as (prompt turns, responses, metadata, hidden label), in JSONL and
in Parquet where the layout exists in both; field mappings; file-level problems named as such."""

from __future__ import annotations

import gzip
import io
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labeling.conversations import response_messages
from labeling.importing import (
    ImportFormatError,
    ImportOptions,
    PairRecord,
    RecordError,
    field_values,
    iter_records,
)
from labeling.layouts import LAYOUTS, check_mapping, parse_label_values, parse_mapping, read_fields, value_key
from labeling.records import (
    NOTE_EARLY,
    NOTE_IMPLICIT,
    NOTE_PROMPT_KEPT,
    NOTE_REPEATED,
    note_unaudited,
    parse_record,
)

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


def test_a_mapped_target_the_layout_does_not_read_is_refused_with_the_right_name():
    row = {"question": "Q?", "answer_a": "A", "answer_b": "B", "winner": "model_a"}
    mapping = {"prompt": "question", "response_a": "answer_a", "response_b": "answer_b", "chosen": "winner"}
    assert errors(read("w.jsonl", json.dumps(row).encode(), mapping=mapping)) == [
        "w.jsonl, line 1, field winner: mapped to chosen, which the layout prefstudio pair does not read: it "
        "reads response_a and response_b; map the dataset's preference between them to label"
    ]
    trl = {"prompt": "Q?", "chosen": "A", "rejected": "B", "gen": "m1", "score": 1}
    assert errors(
        read("t.jsonl", json.dumps(trl).encode(), mapping={"model_a": "gen", "label": "score"})
    ) == [
        "t.jsonl, line 1, field gen: mapped to model_a, which the layout TRL preference, standard does not "
        "read: it names the models with chosen_model and rejected_model",
        "t.jsonl, line 1, field score: mapped to label, which the layout TRL preference, standard does not "
        "read: it carries the dataset's label itself: the chosen side",
    ]
    pair = {"prompt": "Q?", "response_a": "A", "response_b": "B", "gen": "m1"}
    assert errors(read("p.jsonl", json.dumps(pair).encode(), mapping={"chosen_model": "gen"})) == [
        "p.jsonl, line 1, field gen: mapped to chosen_model, which the layout prefstudio pair does not read: "
        "it names the models with model_a and model_b"
    ]
    [record] = read("t.jsonl", json.dumps(trl).encode(), mapping={"chosen_model": "gen"})
    assert chosen(record) == ("A", "B") and record.metadata == {"score": 1}
    assert (record.model_a, record.model_b) == (("m1", "") if record.original_label == "a" else ("", "m1"))


# --- the dataset's own label -------------------------------------------------------------------------

PKU = {
    "response_a": "response_0",
    "response_b": "response_1",
    "model_a": "response_0_source",
    "model_b": "response_1_source",
    "label": "better_response_id",
}


def test_pku_saferlhf_better_response_id_becomes_the_original_label():
    name = "20_pku_saferlhf.jsonl"
    assert errors(read(name))[0].startswith(
        f"{name}, line 1: no layout matches keys [prompt, response_0, response_1, prompt_source,"
    )
    wifi, basil, spoon = read(name, mapping={**PKU, "label_values": parse_label_values("0=a,1=b")})
    assert [r.original_label for r in (wifi, basil, spoon)] == ["a", "b", "b"]
    assert (wifi.layout, wifi.shape, wifi.gold) == ("prefstudio pair, fields mapped", "pair", None)
    assert wifi.response_a.startswith("Ask your neighbour") and (wifi.model_a, wifi.model_b) == (
        "Alpaca-7B",
        "Alpaca2-7B",
    )
    assert wifi.metadata["safer_response_id"] == 0 and "better_response_id" not in wifi.metadata
    assert wifi.notes == (note_unaudited(("safer_response_id",)),)  # a second preference, not read
    # The same file in Parquet, as the hub serves it.
    parquet = read("pku.parquet", as_parquet(name), mapping={**PKU, "label_values": {"0": "a", "1": "b"}})
    assert [r.original_label for r in parquet] == ["a", "b", "b"]


def test_a_number_is_never_read_as_a_label_without_being_told_what_it_means():
    name = "20_pku_saferlhf.jsonl"
    assert errors(read(name, mapping=PKU)) == [
        f"{name}, line {n}, field better_response_id: {v} is not a label value; say what it means with "
        "--label-values, e.g. 0=a,1=b"
        for n, v in ((1, 0), (2, 1), (3, 1))
    ]
    on_the_page = read(name, mapping={**PKU, "label_values": {"0": "a"}}, options=ImportOptions(form=True))
    assert errors(on_the_page)[0] == (
        f"{name}, line 2, field better_response_id: 1 is not one of the label values (0); say what it means "
        "under Label values in the Field mapping form"
    )


def test_summarize_from_feedback_paths_reach_into_lists():
    name = "21_summarize_from_feedback.jsonl"
    mapping = {
        "prompt": "info.post",
        "id": "info.id",
        "label": "choice",
        "label_values": {"0": "a", "1": "b"},
    }
    dotted = read(
        name, mapping={**mapping, "response_a": "summaries.0.text", "response_b": "summaries.1.text"}
    )
    brackets = read(
        name, mapping={**mapping, "response_a": "summaries[0].text", "response_b": "summaries[1].text"}
    )
    assert dotted == brackets
    flatmate, party, parents = dotted
    assert flatmate.prompt.startswith("We agreed on a rota") and flatmate.external_id == "t3_8ad1x"
    assert (flatmate.response_a, flatmate.response_b) == (
        " Flatmate skips his cleaning weeks; I do everything.",
        " I clean.",
    )
    assert [r.original_label for r in dotted] == ["a", "b", "b"]
    # What the mapping did not take stays where it was, list items in their places.
    assert flatmate.metadata["info"] == {
        "title": "My flatmate never cleans",
        "subreddit": "relationships",
        "site": None,
        "article": None,
    }
    assert flatmate.metadata["summaries"] == [
        {"policy": "sup4_ppo_rm3_kl10", "note": None},
        {"policy": "sup4_bo8_rm3", "note": None},
    ]
    sides = {"response_a": "summaries.0.text", "response_b": "summaries.1.text"}
    policies = {"model_a": "summaries.0.policy", "model_b": "summaries.1.policy"}
    models = read(name, mapping={**mapping, **sides, **policies})
    assert (models[1].model_a, models[1].model_b) == ("ref", "sup4_ppo_rm3_kl10")
    assert [item["note"] for item in models[0].metadata["summaries"]] == [None, None]


def test_a_mapped_path_that_finds_nothing_names_what_is_there():
    name = "21_summarize_from_feedback.jsonl"
    first = (FORMATS / name).read_bytes().splitlines()[0]
    wrong = {
        "prompt": "info.body",
        "response_a": "summaries.0.text",
        "response_b": "summaries[2].text",
        "label": "summaries.choice",
    }
    assert errors(read(name, first, mapping=wrong)) == [
        f"{name}, line 1, field info.body: not in the record: info has no 'body'; its keys are "
        "[id, post, title, subreddit, site, article]",
        f"{name}, line 1, field summaries[2].text: not in the record: summaries holds 2 items, "
        "numbered from 0",
    ]
    top = {"prompt": "question", "response_a": "summaries.0.text.words", "response_b": "summaries.1.text"}
    assert errors(read(name, first, mapping=top)) == [
        f"{name}, line 1, field question: not in the record, whose fields are "
        "[info, summaries, choice, worker, batch, split, extra]",
        f"{name}, line 1, field summaries.0.text.words: not in the record: summaries.0.text is a string, not "
        "an object or a list",
    ]


def test_an_optional_mapped_field_that_is_missing_is_absent_and_said_so():
    rows = [{"q": "Q1?", "a": "A", "b": "B", "sys": "Be brief."}, {"q": "Q2?", "a": "A", "b": "B"}]
    mapping = {"prompt": "q", "response_a": "a", "response_b": "b", "system": "sys"}
    one, two = read("s.jsonl", "\n".join(map(json.dumps, rows)).encode(), mapping=mapping)
    assert one.prompt == [{"role": "system", "content": "Be brief."}, user("Q1?")] and one.notes == ()
    assert two.prompt == "Q2?" and two.notes == (
        "sys, mapped to system, is not in the record, whose fields are [q, a, b]: read as absent",
    )


def test_alpaca_eval_preference_of_1_2_and_1_5():
    name = "22_alpaca_eval_annotations.json"
    mapping = {
        "prompt": "instruction",
        "response_a": "output_1",
        "response_b": "output_2",
        "model_a": "generator_1",
        "model_b": "generator_2",
        "label": "preference",
    }
    tips, capital, hello = read(
        name, mapping={**mapping, "label_values": parse_label_values("1=a,2=b,1.5=tie")}
    )
    assert [r.original_label for r in (tips, capital, hello)] == ["a", "b", "t"]  # a tie is kept as "t"
    assert (tips.unit, tips.model_a, tips.model_b) == ("record", "gpt4_1106_preview", "my_model")
    assert tips.metadata == {
        "annotator": "weighted_alpaca_eval_gpt4_turbo",
        "time_per_example": 0.39,
        "price_per_example": 0.0117,
    }
    # 1.0 in the file and "1" on the command line are the same value; 1.5 must be named.
    assert errors(read(name, mapping={**mapping, "label_values": {"1": "a", "2": "b"}})) == [
        f"{name}, record 3, field preference: 1.5 is not one of the label values (1, 2); say what it means "
        "with --label-values, e.g. 0=a,1=b"
    ]


def test_chatbot_arena_winner_names_are_read_without_label_values():
    name = "23_chatbot_arena.jsonl"
    mapping = {"response_a": "conversation_a", "response_b": "conversation_b", "label": "winner"}
    cuda, wedding, cameras, arena = read(name, mapping=mapping)
    assert [r.original_label for r in (cuda, wedding, cameras, arena)] == ["b", "a", "t", "t"]
    assert cuda.prompt == [user("What is the difference between OpenCL and CUDA?")]  # the shared first turn
    assert cuda.response_b.startswith("CUDA runs only on NVIDIA GPUs")
    assert (cuda.model_a, cuda.model_b) == ("chatglm-6b", "koala-13b")
    assert cuda.metadata["judge"] == "arena_user_5821" and "winner" not in cuda.metadata
    # Unmapped, the winner stays metadata and the preview says the dataset's preference is not audited.
    unmapped = read(name, mapping={"response_a": "conversation_a", "response_b": "conversation_b"})
    assert {r.original_label for r in unmapped} == {None}
    assert unmapped[0].metadata["winner"] == "model_b"
    assert unmapped[0].notes == (
        "not audited: winner looks like the dataset's preference but is not mapped to label "
        "(kept as metadata)",
    )


def test_a_pair_of_scores_is_a_label_the_higher_wins():
    data = (
        b"prompt,response_a,response_b,rating_a,rating_b\nq1,x,y,8.5,3\nq2,x,y,2,7\nq3,x,y,5,5.0\nq4,x,y,,\n"
    )
    mapping = {"score_a": "rating_a", "score_b": "rating_b"}
    records = read("scores.csv", data, mapping=mapping)
    assert [r.original_label for r in records] == ["a", "b", "t", None]  # blank scores: no label
    bad = b"prompt,response_a,response_b,rating_a,rating_b\nq1,x,y,good,3\nq2,x,y,4,\n"
    assert errors(read("scores.csv", bad, mapping=mapping)) == [
        "scores.csv, row 2, field rating_a: must be a number, got 'good'",
        "scores.csv, row 3, field rating_b: is required: the label is read from both scores",
    ]
    # Unmapped, scores are metadata, and the preview says they are not audited.
    [plain] = read("scores.csv", data.split(b"\nq2")[0])
    assert plain.original_label is None and plain.metadata == {"rating_a": "8.5", "rating_b": "3"}
    assert plain.notes == (
        "not audited: rating_a, rating_b look like the dataset's preference but are not mapped to label "
        "(kept as metadata)",
    )


def test_a_pair_reads_its_own_label_field_only_when_it_is_mapped():
    row = {"prompt": "p", "response_a": "x", "response_b": "y", "label": "b"}
    [plain] = read("l.jsonl", json.dumps(row).encode())
    assert plain.original_label is None and plain.metadata == {"label": "b"}
    [mapped] = read("l.jsonl", json.dumps(row).encode(), mapping={"label": "label"})
    assert mapped.original_label == "b" and mapped.metadata == {} and mapped.notes == ()
    # Blank is absent: no label, not an invalid one.
    [blank] = read("l.jsonl", json.dumps({**row, "label": " "}).encode(), mapping={"label": "label"})
    assert blank.original_label is None
    kto = {"prompt": "p", "completion": "x", "label": True}
    assert errors(
        read("k.jsonl", json.dumps(kto).encode(), mapping={"label": "label", "label_values": {"1": "a"}})
    )[0] == (
        "k.jsonl, line 1, field label: label values say which of two responses is better; an unpaired (KTO) "
        "label is true or false"
    )


@pytest.mark.parametrize(
    ("value", "key"),
    [(1, "1"), (1.0, "1"), ("1", "1"), (" 1.0 ", "1"), ("+1", "1"), (1.5, "1.5"), ("1.50", "1.5"),
     ("Model_A", "model_a"), ("tie (bothbad)", "tie (bothbad)"), (True, "true"), (float("nan"), None),
     ({"a": 1}, None)],
)  # fmt: skip
def test_label_values_compare_numbers_by_value_and_texts_without_case(value, key):
    assert value_key(value) == key


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: parse_label_values("0=x"), "0=x: a label value means a, b or tie"),
        (lambda: parse_label_values("0"), "'0': write VALUE=a, VALUE=b or VALUE=tie, e.g. 0=a,1=b"),
        (lambda: check_mapping({"prompt": "q", "label_values": {"0": "a"}}), "map label to a field too"),
        (lambda: parse_mapping("score_a=s"), "score_a and score_b: map both"),
        (lambda: parse_mapping("label=x,score_a=s,score_b=t"), "map the dataset's preference one way"),
    ],
)
def test_bad_label_values_say_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_parsed_label_values_keep_names_with_spaces():
    assert parse_label_values("model_a=a, model_b=B,tie (bothbad)=tie,1.0=a") == {
        "model_a": "a",
        "model_b": "b",
        "tie (bothbad)": "tie",
        "1": "a",
    }


# --- blank fields, model names, Git LFS ----------------------------------------------------------------


@pytest.mark.parametrize("parquet", [False, True])
def test_orca_dpo_pairs_with_a_blank_system_have_no_system_turn(parquet):
    name = "24_orca_dpo_pairs.jsonl"
    french, water, tomato = read(name, as_parquet(name) if parquet else None, mapping={"prompt": "question"})
    assert (
        french.prompt.startswith("You will be given a definition") and tomato.prompt == "Is a tomato a fruit?"
    )
    assert water.prompt == [
        {"role": "system", "content": "You are an AI assistant. You will be given a task. You must "
         "generate a detailed and long answer."},
        user("What is the boiling point of water at sea level?"),
    ]  # fmt: skip
    assert chosen(tomato) == (
        "Botanically yes: it develops from the flower and holds seeds.",
        "No, it is a vegetable.",
    )


def test_every_blank_optional_field_is_absent_not_invalid():
    row = {"prompt": "p", "response_a": "x", "response_b": "y", "system": "", "id": " ", "gold": "",
           "model_a": "", "metadata": "", "label": "\t"}  # fmt: skip
    [record] = read("b.jsonl", json.dumps(row).encode(), mapping={"label": "label"})
    assert (record.prompt, record.external_id, record.gold, record.model_a, record.metadata) == (
        "p",
        "",
        None,
        "",
        {},
    )
    assert record.original_label is None
    trl = {"prompt": "  ", "chosen": "The sky is blue.", "rejected": "The sky is green.", "system": " "}
    [implicit] = read("t.jsonl", json.dumps(trl).encode())  # a blank prompt: the sides hold it
    assert implicit.prompt == "The sky is" and implicit.layout == "TRL preference, implicit prompt, standard"
    csv_data = b"prompt,response_a,response_b,gold,system\np,x,y,,\n"
    assert read("b.csv", csv_data)[0].gold is None
    # A required field stays required.
    assert errors(read("r.jsonl", json.dumps({**row, "prompt": " "}).encode())) == [
        "r.jsonl, line 1, field prompt: must be a non-empty string"
    ]


def test_argilla_model_names_are_read_without_a_mapping():
    gpt, wizard = read("25_argilla_model_names.jsonl")
    assert gpt.layout == "TRL preference, conversational"
    good, bad = chosen(gpt)
    assert (good, bad) == ("11.", "12.")
    models = {"a": (gpt.model_a, gpt.model_b), "b": (gpt.model_b, gpt.model_a)}[gpt.original_label]
    assert models == ("gpt-4", "llama-2-7b-chat")  # the chosen model goes with the chosen response
    assert wizard.metadata == {"source": "flan_v2_niv2", "chosen-rating": 4.5, "rejected-rating": 1.5}
    assert "wizardlm-70b" in (wizard.model_a, wizard.model_b)


def test_a_git_lfs_pointer_is_named_as_such():
    message = (
        "26_git_lfs_pointer.jsonl: this is a Git LFS pointer of a 12.6 MB file, not the data; fetch the file "
        "itself (git lfs pull in the repository, or the dataset's download link) and import that"
    )
    for fmt in ("auto", "jsonl", "csv"):
        with pytest.raises(ImportFormatError, match=re.escape(message)):
            read("26_git_lfs_pointer.jsonl", fmt=fmt)


def test_field_values_offer_paths_into_lists_and_the_values_of_each_field():
    def values(name: str, fmt: str) -> dict[str, list[str]]:
        return field_values(io.BytesIO((FORMATS / name).read_bytes()), filename=name, fmt=fmt)

    summaries = values("21_summarize_from_feedback.jsonl", "jsonl")
    assert {"info.post", "summaries.0.text", "summaries.1.policy", "choice"} <= set(summaries)
    assert "summaries.0" not in summaries and summaries["choice"] == ["0", "1"]
    arena = values("23_chatbot_arena.jsonl", "jsonl")
    assert arena["winner"] == ["model_b", "model_a", "tie", "tie (bothbad)"]
    assert "conversation_a.0.role" not in arena  # chat messages are offered whole
    assert values("22_alpaca_eval_annotations.json", "json")["preference"] == ["1", "2", "1.5"]
    parquet = field_values(io.BytesIO(as_parquet("20_pku_saferlhf.jsonl")), filename="p", fmt="parquet")
    assert parquet["better_response_id"] == ["0", "1"] and "response_0_harm_category.Violence" in parquet
    csv_values = field_values(io.BytesIO(b"q,a,b,pick\nQ,x,y,2\nR,x,y,1\n"), filename="c.csv", fmt="csv")
    assert csv_values == {"q": ["q", "r"], "a": ["x"], "b": ["y"], "pick": ["2", "1"]}


def test_problems_on_the_import_page_point_at_the_field_mapping_form():
    row = {"history": [user("Hi")], "ref_A": "Hello", "ref_B": "Bye"}
    [problem] = errors(read("h.jsonl", json.dumps(row).encode(), options=ImportOptions(form=True)))
    assert problem.endswith("; map them in the Field mapping form") and "--map" not in problem
    sides = {"chosen": [user("Hi"), assistant("A")], "rejected": [user("Ho"), assistant("B")]}
    [problem] = errors(read("s.jsonl", json.dumps(sides).encode(), options=ImportOptions(form=True)))
    assert problem.endswith("add a prompt field or map one in the Field mapping form")


def test_the_readme_lists_every_layout_with_its_example():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Projects and data import") : readme.index("## Labeling")]
    for layout in LAYOUTS:
        assert f"| {layout.name} |" in section and f"`{layout.example}`" in section, layout.name
