"""Preference files in, tokenized pairs and a batch order out, for the DPO engine. No Django import.

Files hold TRL's preference columns, one pair per JSON line or Parquet row: standard
`{"prompt": str, "chosen": str, "rejected": str}` or conversational `{"prompt": [messages], "chosen":
[assistant message(s)], "rejected": [...]}`; an `id` column names pairs in reports, other columns are ignored.

Tokenization follows TRL's `DPOTrainer`, so log-probabilities agree with it: conversations go through the
tokenizer's chat template, and a completion is the full conversation minus the prompt rendered with
`add_generation_prompt=True`; standard text gets the tokenizer's EOS appended to each completion. Where the
rendered prompt is not a prefix of the full conversation, the completion starts where they diverge (as in TRL)
and the pair is listed under `prefix_mismatch`. Pairs are truncated to `max_length` tokens per sequence,
keeping the prompt's end (to `max_prompt_length` when set) and the completions' start; a pair whose prompt
alone leaves no room for a completion token is dropped and reported, never silently.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Examples shown per reason in a report; the counts are always complete.
_REPORT_IDS = 50


@dataclass(frozen=True)
class TokenizedPair:
    """One pair as token ids: the shared prompt and the two completions that follow it."""

    id: str
    prompt: tuple[int, ...]
    chosen: tuple[int, ...]
    rejected: tuple[int, ...]

    @property
    def length(self) -> int:
        """Tokens in the packed row (`training.dpo.pack_pairs`): prompt once, both completions."""
        return len(self.prompt) + len(self.chosen) + len(self.rejected)


@dataclass
class DataReport:
    """What happened to the pairs of one file: kept, dropped (with ids) and truncated counts."""

    file: str
    sha256: str
    total: int = 0
    kept: int = 0
    dropped: dict[str, list[str]] = field(default_factory=dict)
    prompt_truncated: int = 0
    completion_truncated: int = 0
    prefix_mismatch: int = 0
    prefix_mismatch_ids: list[str] = field(default_factory=list)

    def drop(self, reason: str, pair_id: str) -> None:
        self.dropped.setdefault(reason, []).append(pair_id)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["dropped_counts"] = {reason: len(ids) for reason, ids in self.dropped.items()}
        return data


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a `.jsonl` / `.json` (JSON Lines) or `.parquet` file; `ValueError` on a bad line or suffix."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix not in (".jsonl", ".json"):
        raise ValueError(f"{path.name}: expected a .jsonl or .parquet preference file.")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path.name} line {number}: not JSON ({exc.msg}).") from exc
    return rows


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(m, dict) and "role" in m and "content" in m for m in value
    )


def _check_row(row: Any, where: str) -> bool:
    """Whether the row is conversational; `ValueError` when it is neither valid form."""
    if not isinstance(row, dict) or not {"prompt", "chosen", "rejected"} <= row.keys():
        raise ValueError(f"{where}: needs 'prompt', 'chosen' and 'rejected' columns.")
    values = row["prompt"], row["chosen"], row["rejected"]
    if all(isinstance(v, str) for v in values):
        return False
    if all(_is_messages(v) for v in values):
        return True
    raise ValueError(f"{where}: prompt, chosen and rejected must all be strings or all be lists of messages.")


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def _template_ids(tokenizer: Any, messages: list[dict], *, add_generation_prompt: bool = False) -> list[int]:
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
    )
    return list(encoded["input_ids"])


def tokenize_pairs(
    rows: Sequence[dict[str, Any]],
    tokenizer: Any,
    *,
    max_length: int,
    max_prompt_length: int | None,
    report: DataReport,
) -> list[TokenizedPair]:
    """Tokenize and truncate `rows` (see the module docstring), filling in `report`.

    Raises `ValueError` for a row without the three columns or with mixed standard/conversational values.
    """
    pairs = []
    report.total = len(rows)
    for index, row in enumerate(rows):
        pair_id = str(row["id"]) if isinstance(row, dict) and row.get("id") is not None else f"row {index}"
        if _check_row(row, f"{report.file} row {index}"):
            prompt_ids = _template_ids(tokenizer, row["prompt"], add_generation_prompt=True)
            chosen_full = _template_ids(tokenizer, row["prompt"] + row["chosen"])
            rejected_full = _template_ids(tokenizer, row["prompt"] + row["rejected"])
        else:
            eos = tokenizer.eos_token or ""
            chosen, rejected = row["chosen"], row["rejected"]
            chosen += "" if chosen.endswith(eos) else eos
            rejected += "" if rejected.endswith(eos) else eos
            prompt_ids = tokenizer(row["prompt"])["input_ids"]
            chosen_full = tokenizer(row["prompt"] + chosen)["input_ids"]
            rejected_full = tokenizer(row["prompt"] + rejected)["input_ids"]
        split = min(_common_prefix(prompt_ids, chosen_full), _common_prefix(prompt_ids, rejected_full))
        if split < len(prompt_ids):
            report.prefix_mismatch += 1
            if len(report.prefix_mismatch_ids) < _REPORT_IDS:
                report.prefix_mismatch_ids.append(pair_id)
        prompt, chosen_ids, rejected_ids = prompt_ids[:split], chosen_full[split:], rejected_full[split:]
        if not chosen_ids or not rejected_ids:
            report.drop("empty_completion", pair_id)
            continue
        if max_prompt_length is not None and len(prompt) > max_prompt_length:
            prompt = prompt[len(prompt) - max_prompt_length :]
            report.prompt_truncated += 1
        room = max_length - len(prompt)
        if room < 1:
            report.drop("prompt_too_long", pair_id)
            continue
        if max(len(chosen_ids), len(rejected_ids)) > room:
            chosen_ids, rejected_ids = chosen_ids[:room], rejected_ids[:room]
            report.completion_truncated += 1
        pairs.append(TokenizedPair(pair_id, tuple(prompt), tuple(chosen_ids), tuple(rejected_ids)))
    report.kept = len(pairs)
    return pairs


def load_pairs(
    path: Path, tokenizer: Any, *, max_length: int, max_prompt_length: int | None
) -> tuple[list[TokenizedPair], DataReport]:
    """Read, tokenize and truncate the pairs of `path`; the pairs kept and the file's report."""
    report = DataReport(file=str(path), sha256=file_sha256(path))
    rows = read_rows(path)
    pairs = tokenize_pairs(
        rows, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length, report=report
    )
    return pairs, report


def batch_plan(
    lengths: Sequence[int], *, batch_size: int, seed: int, epoch: int, group: int = 64
) -> list[list[int]]:
    """One epoch's batches of pair indices, shuffled but grouped by length.

    The pairs are shuffled (deterministically for `seed` and `epoch`), cut into groups of `group` batches,
    sorted by length inside each group so a batch holds pairs of similar length (less padding), and the
    batches are shuffled again so long and short ones alternate over the epoch. Only the last batch can be
    smaller than `batch_size`. Python's `random` keeps torch's generator untouched.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * group
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    # Keep the one possibly short batch last, so every other batch is full.
    short = [b for b in batches if len(b) < batch_size]
    full = [b for b in batches if len(b) == batch_size]
    rng.shuffle(full)
    return full + short


def eval_plan(lengths: Sequence[int], *, batch_size: int) -> list[list[int]]:
    """Batches for a pass over every pair without gradients: sorted by length, so padding is minimal."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
