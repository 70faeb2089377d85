"""What the model learns is what people chose: each chat-template hazard either trains on the pair exactly
as written or drops/reports it with its reason (training.data). Tiny tokenizers with other templates stand in
for the real model families (tests/tiny_model.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tiny_model import NO_SYSTEM_TEMPLATE, think_template, tokenizer_variant
from tests.training.conftest import write_jsonl
from training.data import DataError, DataReport, _squash, check_files, load_pairs, tokenize_pairs


def _tokenize(rows, tokenizer, **options):
    report = DataReport(file="pairs.jsonl", sha256="")
    options = {"max_length": 512, "max_prompt_length": None, **options}
    return tokenize_pairs(rows, tokenizer, report=report, **options), report


def _chat(prompt: str, chosen: str, rejected: str, *, pair_id: str = "p1", system: str | None = None) -> dict:
    turns = [{"role": "system", "content": system}] if system else []
    return {
        "id": pair_id,
        "prompt": [*turns, {"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def _decoded(tokenizer, ids) -> str:
    return tokenizer.decode(list(ids))


@pytest.fixture(scope="module")
def variants(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizers")
    return {
        "think": tokenizer_variant(tiny_model_dir, folder / "think", chat_template=think_template()),
        "think_prompt": tokenizer_variant(
            tiny_model_dir, folder / "think-prompt", chat_template=think_template(think_prompt=True)
        ),
        "no_system": tokenizer_variant(
            tiny_model_dir, folder / "no-system", chat_template=NO_SYSTEM_TEMPLATE
        ),
        "bos": tokenizer_variant(tiny_model_dir, folder / "bos", add_bos=True),
    }


@pytest.mark.parametrize("template", ["think", "think_prompt"])
def test_reasoning_that_the_template_strips_is_trained_on_as_written(variants, template: str) -> None:
    tokenizer = variants[template]
    chosen = "<think>\nThe user wants kind words.</think>\n\nHelpful kind answer."
    rejected = "<think>\nThe user wants harsh words.</think>\n\nHelpful kind answer."
    # Under the template alone both sides render as "Helpful kind answer.": the old data path trained on
    # two identical sequences and said every pair was kept.
    rendered = {tokenizer.apply_chat_template([{"role": "assistant", "content": t}], tokenize=False)
                for t in (chosen, rejected)}  # fmt: skip
    assert len(rendered) == 1

    (pair,), report = _tokenize([_chat("Question: why?", chosen, rejected)], tokenizer)
    assert report.kept == 1 and report.changed["template_rewrote_completion"] == ["p1"]
    assert pair.chosen != pair.rejected
    for side, text in ((pair.chosen, chosen), (pair.rejected, rejected)):
        # The prompt's own `<think>\n` (think_prompt) is the start of the response: prompt end + completion.
        reply = _decoded(tokenizer, pair.prompt + side).split("<|im_start|>assistant\n")[-1]
        assert _squash(reply) == _squash(text + "<|im_end|>")
        assert _decoded(tokenizer, side).endswith("<|im_end|>\n")  # the template's own end of turn
    assert _decoded(tokenizer, pair.prompt).endswith(
        "<think>\n" if template == "think_prompt" else "assistant\n"
    )


def test_every_kept_completion_decodes_to_the_response_as_written(tiny_tokenizer) -> None:
    rows = [
        _chat(f"Question {i}", f"Clear kind answer {i}.", f"Rude {i}!", pair_id=f"p{i}") for i in range(5)
    ]
    rows.append({"id": "s1", "prompt": "The sky is", "chosen": " bright.", "rejected": " muddled."})
    pairs, report = _tokenize(rows, tiny_tokenizer)
    assert report.kept == 6 and report.changed == {} and report.dropped == {}
    for pair, row in zip(pairs, rows, strict=True):
        for side in ("chosen", "rejected"):
            text = row[side] if isinstance(row[side], str) else row[side][0]["content"]
            assert _squash(text) in _squash(_decoded(tiny_tokenizer, getattr(pair, side)))


def test_pairs_equal_after_the_template_are_dropped_with_their_reason(variants) -> None:
    tokenizer = variants["no_system"]  # it trims message content
    rows = [_chat("Question?", "Yes, kind.", "Yes, kind.   \n", pair_id="same"),
            _chat("Question?", "Yes, kind.", "No, rude.", pair_id="differs")]  # fmt: skip
    pairs, report = _tokenize(rows, tokenizer)
    assert report.dropped == {"identical_after_template": ["same"]} and [p.id for p in pairs] == ["differs"]
    assert "identical_after_template" in "\n".join(report.lines("train"))


def test_pairs_equal_after_truncation_are_dropped_not_counted_as_truncated(tiny_tokenizer) -> None:
    shared = "Helpful kind answer. " * 30
    rows = [_chat("Question?", shared + "Bright.", shared + "Muddled.", pair_id="long"),
            _chat("Question?", "Kind.", "Rude.", pair_id="short")]  # fmt: skip
    pairs, report = _tokenize(rows, tiny_tokenizer, max_length=64)
    assert report.dropped == {"identical_after_truncation": ["long"]}
    assert [p.id for p in pairs] == ["short"] and report.completion_truncated == 0


def test_a_prompt_that_already_has_bos_gets_no_second_one(variants) -> None:
    tokenizer = variants["bos"]
    bos = tokenizer.bos_token_id
    rows = [
        {"id": "templated", "prompt": "<|bos|>The sky is", "chosen": " bright.", "rejected": " muddled."},
        {"id": "plain", "prompt": "The sky is", "chosen": " bright.", "rejected": " muddled."},
        {"id": "eos", "prompt": "The sky is", "chosen": " bright.<|im_end|>", "rejected": " muddled."},
    ]
    pairs, report = _tokenize(rows, tokenizer)
    assert report.kept == 3 and report.changed["already_templated"] == ["templated", "eos"]
    for pair in pairs:
        assert pair.prompt[0] == bos and bos not in pair.prompt[1:]  # one BOS, from the tokenizer or the text
        for side in (pair.chosen, pair.rejected):
            assert side.count(tokenizer.eos_token_id) == 1 and side[-1] == tokenizer.eos_token_id


def test_a_completion_already_ending_in_eos_gets_no_second_one(tiny_tokenizer) -> None:
    rows = [_chat("Question?", "Kind answer.<|im_end|>", "Rude answer.", pair_id="eos")]
    (pair,), report = _tokenize(rows, tiny_tokenizer)
    assert report.changed == {"already_templated": ["eos"]}
    assert pair.chosen.count(tiny_tokenizer.eos_token_id) == 1


def test_a_prefill_is_continued_not_closed(tiny_tokenizer) -> None:
    row = {
        "id": "prefill",
        "prompt": [
            {"role": "user", "content": "Give JSON."},
            {"role": "assistant", "content": '{"answer": '},
        ],
        "chosen": [{"role": "assistant", "content": "42}"}],
        "rejected": [{"role": "assistant", "content": '"many"}'}],
    }
    (pair,), report = _tokenize([row], tiny_tokenizer)
    assert report.changed == {"prefill_continued": ["prefill"]}
    prompt = _decoded(tiny_tokenizer, pair.prompt)
    assert prompt.endswith('<|im_start|>assistant\n{"answer": ') or prompt.endswith('{"answer":')
    assert prompt.count("<|im_start|>assistant") == 1  # no closed turn followed by a new one
    whole = _decoded(tiny_tokenizer, pair.prompt + pair.chosen)
    assert '{"answer": 42}<|im_end|>' in whole


def test_a_system_turn_the_template_refuses_stops_the_data_naming_the_row(variants, tmp_path: Path) -> None:
    tokenizer = variants["no_system"]
    rows = [_chat("Question?", "Kind.", "Rude.", pair_id="fine"),
            _chat("Question?", "Kind.", "Rude.", pair_id="with-system", system="Answer kindly.")]  # fmt: skip
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError) as caught:
        load_pairs(path, tokenizer, max_length=128, max_prompt_length=None)
    message = str(caught.value)
    assert "train.jsonl row 2 (id with-system)" in message and "System role not supported" in message
    assert "system_turn" in message and "Traceback" not in message

    pairs, report = load_pairs(path, tokenizer, max_length=128, max_prompt_length=None, system_turn="merge")
    assert report.kept == 2 and report.changed == {"system_merged": ["with-system"]}
    prompt = _decoded(tokenizer, pairs[1].prompt)
    assert "<|im_start|>user\nAnswer kindly.\n\nQuestion?<|im_end|>" in prompt


def test_the_data_check_reports_reasons_lengths_and_token_boundaries(variants, tmp_path: Path) -> None:
    tokenizer = variants["think"]
    long = "Helpful kind answer. " * 20
    rows = [_chat("Question?", "<think>a</think>Kind.", "<think>b</think>Kind.", pair_id="think"),
            _chat("Question?", long + "Bright.", "Rude.", pair_id="long"),
            _chat("Question?", "Same.", "Same.", pair_id="same"),
            _chat("Question?", "Kind.", "Rude.", pair_id="plain")]  # fmt: skip
    files = {"train": write_jsonl(tmp_path / "train.jsonl", rows),
             "eval": write_jsonl(tmp_path / "eval.jsonl", rows[-1:])}  # fmt: skip
    check = check_files(files, tokenizer, max_length=48, max_prompt_length=None)
    json.dumps(check)  # JSON-safe, for the command line and the page
    train = check["splits"]["train"]
    assert train["kept"] == 3 and train["dropped_counts"] == {"identical_after_template": 1}
    assert train["changed_counts"] == {"template_rewrote_completion": 1, "completion_truncated": 1}
    histogram = train["histogram"]
    assert histogram["edges"][-1] == 48 and histogram["over"]["chosen"] == 1
    assert sum(histogram["counts"]["prompt"]) == 4
    assert check["usable"] and check["problems"] == []
    examples = {e["id"]: e for e in check["examples"]}
    assert list(examples)[:3] == ["long", "think", "same"]  # truncated, changed, dropped first
    chosen = examples["long"]["segments"][1]
    assert (
        chosen["part"] == "chosen"
        and chosen["tokens"] > chosen["kept"] == 48 - examples["long"]["segments"][0]["kept"]
    )
    assert any(cut for _, _, cut in chosen["pieces"]) and not chosen["pieces"][0][2]
    assert any(special for _, special, _ in examples["long"]["segments"][0]["pieces"])  # <|im_start|> shown
    assert "".join(text for text, _, _ in examples["think"]["segments"][1]["pieces"]).startswith("<think>a")


def test_the_check_says_when_every_pair_would_be_dropped(tiny_tokenizer, variants, tmp_path: Path) -> None:
    rows = [_chat("Question? " * 40, "Kind.", "Rude.", pair_id=f"p{i}") for i in range(3)]
    files = {"train": write_jsonl(tmp_path / "train.jsonl", rows)}
    check = check_files(files, tiny_tokenizer, max_length=32, max_prompt_length=None)
    assert not check["usable"]
    assert check["problems"] == ["train: every pair would be dropped (3 prompt_too_long)."]

    refused = [_chat("Question?", "Kind.", "Rude.", pair_id="sys", system="Be kind.")]
    files = {"train": write_jsonl(tmp_path / "refused.jsonl", refused)}
    check = check_files(files, variants["no_system"], max_length=64, max_prompt_length=None)
    assert not check["usable"] and "refused.jsonl row 1 (id sys)" in check["problems"][-1]
    assert check["splits"]["train"]["dropped_counts"] == {"template_error": 1}
