"""training.data: tokenization as TRL does it, truncation and its report, file formats, batch order."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_model import CHAT_TEMPLATE, preference_rows, tokenizer_variant
from tests.training.conftest import write_jsonl
from training.data import DataReport, batch_plan, load_pairs, read_rows, tokenize_pairs


def _tokenize(rows, tokenizer, *, max_length=512, max_prompt_length=None):
    report = DataReport(file="rows", sha256="")
    pairs = tokenize_pairs(
        rows, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length, report=report
    )
    return pairs, report


@pytest.mark.parametrize("conversational", [True, False])
def test_tokenization_equals_trl(
    tiny_model_dir, tiny_tokenizer, tmp_path: Path, conversational: bool
) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    rows = preference_rows(6, seed=5, conversational=conversational)
    args = DPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", max_length=512)
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tiny_tokenizer,
    )
    pairs, report = _tokenize(rows, tiny_tokenizer)
    assert report.kept == 6 and report.prefix_mismatch == 0
    for pair, theirs in zip(pairs, trainer.train_dataset, strict=True):
        assert list(pair.prompt) == theirs["prompt_ids"]
        assert list(pair.chosen) == theirs["chosen_ids"]
        assert list(pair.rejected) == theirs["rejected_ids"]
    if conversational:  # the completion keeps the template's end-of-turn token and newline
        assert tiny_tokenizer.decode(pairs[0].chosen).endswith("<|im_end|>\n")
    else:  # standard text gets EOS appended, as in TRL
        assert pairs[0].chosen[-1] == tiny_tokenizer.eos_token_id


def test_prompt_too_long_is_reported_not_silently_dropped(tiny_tokenizer) -> None:
    rows = preference_rows(4, seed=6)
    rows[2]["prompt"][1]["content"] = "Question: " + "apple river " * 60
    pairs, report = _tokenize(rows, tiny_tokenizer, max_length=64)
    assert report.dropped == {"prompt_too_long": [rows[2]["id"]]}
    assert report.to_dict()["dropped_counts"] == {"prompt_too_long": 1}
    assert (
        [p.id for p in pairs] == [rows[i]["id"] for i in (0, 1, 3)] and report.kept == 3 and report.total == 4
    )


def test_truncation_keeps_the_prompt_end_and_the_completion_start(tiny_tokenizer) -> None:
    rows = preference_rows(1, seed=7)
    rows[0]["prompt"][1]["content"] = "Question: " + "apple river " * 60 + "Why is the sky bright?"
    rows[0]["chosen"][0]["content"] = "Helpful kind answer. " * 20
    (full,), _ = _tokenize(rows, tiny_tokenizer)
    (cut,), report = _tokenize(rows, tiny_tokenizer, max_length=96, max_prompt_length=40)
    assert cut.prompt == full.prompt[-40:] and report.prompt_truncated == 1
    assert (
        cut.chosen == full.chosen[:56] and cut.rejected == full.rejected and report.completion_truncated == 1
    )
    assert len(cut.prompt) + max(len(cut.chosen), len(cut.rejected)) == 96


def test_a_template_that_renders_the_prompt_differently_is_reported(tiny_model_dir, tmp_path: Path) -> None:
    """A generation prompt that the full conversation does not have: the completion starts where they
    diverge (as in TRL), and the pair is listed under prefix_mismatch."""
    template = CHAT_TEMPLATE.replace(
        "<|im_start|>assistant\n{% endif %}", "<|im_start|>assistant\nsky{% endif %}"
    )
    tokenizer = tokenizer_variant(tiny_model_dir, tmp_path / "tok", chat_template=template)
    pairs, report = _tokenize(preference_rows(2, seed=8), tokenizer)
    assert report.prefix_mismatch == 2 and report.changed["prefix_mismatch"] == ["s8-0", "s8-1"]
    assert report.kept == 2
    assert not tokenizer.decode(pairs[0].prompt).endswith("sky")


def test_jsonl_and_parquet_read_the_same(tiny_tokenizer, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = preference_rows(5, seed=9)
    jsonl = write_jsonl(tmp_path / "pairs.jsonl", rows)
    parquet = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    assert read_rows(parquet) == read_rows(jsonl) == rows
    from_jsonl, report = load_pairs(jsonl, tiny_tokenizer, max_length=256, max_prompt_length=None)
    from_parquet, _ = load_pairs(parquet, tiny_tokenizer, max_length=256, max_prompt_length=None)
    assert from_jsonl == from_parquet and len(report.sha256) == 64


def test_bad_files_raise_clear_errors(tiny_tokenizer, tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{oops\n')
    with pytest.raises(ValueError, match="line 2: not JSON"):
        read_rows(bad_json)
    with pytest.raises(ValueError, match=r"\.jsonl or \.parquet"):
        read_rows(tmp_path / "pairs.csv")
    with pytest.raises(ValueError, match="row 1 \\(id row 1\\): needs 'prompt'"):
        _tokenize([{"chosen": "b", "rejected": "c"}], tiny_tokenizer)
    mixed = {"prompt": "a", "chosen": [{"role": "assistant", "content": "b"}], "rejected": "c"}
    with pytest.raises(ValueError, match="all be strings or all be lists of messages"):
        _tokenize([mixed], tiny_tokenizer)


def test_batch_plan_groups_lengths_and_depends_only_on_seed_and_epoch() -> None:
    lengths = [(i * 37) % 101 for i in range(100)]
    plan = batch_plan(lengths, batch_size=8, seed=3, epoch=0, group=4)
    assert sorted(i for batch in plan for i in batch) == list(range(100))
    assert [len(b) for b in plan[:-1]] == [8] * 12 and len(plan[-1]) == 4  # only the last batch is short
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plan)
    shuffled = sum(
        max(lengths[i] for i in b) - min(lengths[i] for i in b)
        for b in batch_plan(lengths, batch_size=8, seed=3, epoch=0, group=1)
    )
    assert spread < shuffled / 2  # grouping by length leaves far less padding than a plain shuffle
    assert plan == batch_plan(lengths, batch_size=8, seed=3, epoch=0, group=4)
    assert plan != batch_plan(lengths, batch_size=8, seed=3, epoch=1, group=4)
