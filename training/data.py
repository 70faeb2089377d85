"""Preference files in, token-exact pairs and a batch order out, for the DPO engine. No Django import.

Files hold TRL's preference columns, one pair per JSON line or Parquet row: standard
`{"prompt": str, "chosen": str, "rejected": str}` or conversational `{"prompt": [messages], "chosen":
[assistant message(s)], "rejected": [...]}`; an `id` column names pairs in reports, other columns are ignored.

Tokenization follows TRL's `DPOTrainer`, so log-probabilities agree with it: conversations go through the
tokenizer's chat template, and a completion is the full conversation minus the prompt rendered with
`add_generation_prompt=True`; standard text gets the tokenizer's EOS appended to each completion. On top of
that, every pair is either trained on exactly as written or dropped with a named reason, and every change is
counted with the ids it touched (`DataReport`):

Dropped (`DataReport.dropped`):
- `identical_after_template`: chosen and rejected completion ids are equal once templated (a template that
  trims whitespace, say); `identical_after_truncation`: they become equal when cut to `max_length`.
- `empty_completion`: a side has no token after the prompt; `prompt_too_long`: the prompt alone leaves no
  room for a completion token within `max_length` (TRL drops these silently).
- `template_rewrite_unrecoverable`: the template rewrote a completion of several messages (below).
- `template_error`: the chat template refused the row (only with `strict=False`; otherwise `DataError`).

Kept but changed, or kept as written in a way worth knowing (`DataReport.changed`):
- `template_rewrote_completion`: decoding a completion's tokens must give back the response as written
  (whitespace and Unicode compatibility forms aside). Where the template drops or rewrites assistant content
  (reasoning templates remove `<think>…</think>`), the completion is rebuilt as the prompt rendered with the
  generation prompt, plus the response text, plus the template's own end-of-turn text, and decoded again.
- `tokenizer_changed_text`: the tokenizer itself cannot give the text back (its normalizer or unknown
  tokens); the pair is trained on what the tokenizer makes of it.
- `prefill_continued`: a prompt whose last message is the assistant's is continued
  (`continue_final_message=True`) and the completion continues that message, instead of closing the turn.
- `already_templated`: a standard prompt that already starts with the tokenizer's BOS text gets no second
  BOS; a completion that already ends with EOS text gets no second EOS.
- `system_merged`: the template refuses a system turn and `system_turn="merge"` merged it into the first
  user turn; with the default `system_turn="keep"` such a row is a template error.
- `prefix_mismatch`: the rendered prompt is not a prefix of the full conversation's tokens; the completion
  starts where they diverge (as in TRL).
- `prompt_truncated` (to `max_prompt_length`, keeping the prompt's end), `completion_truncated` (the
  completions' start is kept).

`check_files` runs the same tokenization with the tokenizer only and summarises it for a person (length
histograms, three pairs with their token boundaries) before a run is queued.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.config import SYSTEM_TURNS

# Every split's DataReport with all ids, written to a run's output folder before training starts.
DATA_REPORT = "data_report.json"
# Ids listed per reason where a report is shown or stored; the counts are always complete.
REPORT_IDS = 50
DROP_REASONS = (
    "identical_after_template",
    "identical_after_truncation",
    "empty_completion",
    "prompt_too_long",
    "template_rewrite_unrecoverable",
    "template_error",
)
CHANGE_REASONS = (
    "template_rewrote_completion",
    "tokenizer_changed_text",
    "prefill_continued",
    "already_templated",
    "system_merged",
    "prefix_mismatch",
    "prompt_truncated",
    "completion_truncated",
)
# Where a reason is explained to a person (run log, run card, run page, data check).
REASON_TEXT = {
    "identical_after_template": "chosen and rejected became the same tokens under the chat template",
    "identical_after_truncation": "chosen and rejected became the same tokens when cut to max_length",
    "empty_completion": "a response has no token after the prompt",
    "prompt_too_long": "the prompt alone fills max_length",
    "template_rewrite_unrecoverable": "the chat template rewrote a response of several messages",
    "template_error": "the chat template refused the row",
    "template_rewrote_completion": "the chat template rewrote a response; trained on the response as written",
    "tokenizer_changed_text": "the tokenizer cannot give the text back exactly; trained on its tokens",
    "prefill_continued": "the prompt ends in an assistant message, which the response continues",
    "already_templated": "BOS or EOS was already in the text; not added twice",
    "system_merged": "the template refuses system turns; merged into the first user turn",
    "prefix_mismatch": "the rendered prompt is not a prefix of the conversation; split where they diverge",
    "prompt_truncated": "prompt cut to max_prompt_length (its end kept)",
    "completion_truncated": "a response cut to fit max_length (its start kept)",
}
_SENTINEL = "prefstudio-end-of-turn-probe-7f3a"
_TRAILING_TAG = re.compile(r"<[^<>\s]{1,40}>\s*$")


class DataError(ValueError):
    """A preference file that cannot be trained on as written: the message names the file, row and id."""


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
    """What happened to the pairs of one file: kept, dropped and changed pairs by reason, with their ids."""

    file: str
    sha256: str
    total: int = 0
    kept: int = 0
    dropped: dict[str, list[str]] = field(default_factory=dict)
    changed: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # template errors, one message per row (first REPORT_IDS)

    def drop(self, reason: str, pair_id: str) -> None:
        self.dropped.setdefault(reason, []).append(pair_id)

    def change(self, reason: str, pair_id: str) -> None:
        self.changed.setdefault(reason, []).append(pair_id)

    @property
    def prompt_truncated(self) -> int:
        return len(self.changed.get("prompt_truncated", ()))

    @property
    def completion_truncated(self) -> int:
        return len(self.changed.get("completion_truncated", ()))

    @property
    def prefix_mismatch(self) -> int:
        return len(self.changed.get("prefix_mismatch", ()))

    def to_dict(self, *, ids_per_reason: int | None = None) -> dict[str, Any]:
        """JSON-safe: counts per reason, and the ids (all, or the first `ids_per_reason` of each reason)."""

        def ids(by_reason: dict[str, list[str]]) -> dict[str, list[str]]:
            return {reason: found[:ids_per_reason] for reason, found in by_reason.items()}

        return {
            "file": self.file,
            "sha256": self.sha256,
            "total": self.total,
            "kept": self.kept,
            "dropped": ids(self.dropped),
            "dropped_counts": {reason: len(found) for reason, found in self.dropped.items()},
            "changed": ids(self.changed),
            "changed_counts": {reason: len(found) for reason, found in self.changed.items()},
            "errors": self.errors,
            "prompt_truncated": self.prompt_truncated,
            "completion_truncated": self.completion_truncated,
            "prefix_mismatch": self.prefix_mismatch,
        }

    def lines(self, name: str, *, ids: int = 5) -> list[str]:
        """The report in words, for a log: one line for the totals, one per reason with its first ids."""
        dropped = sum(len(v) for v in self.dropped.values())
        out = [f"{name}: {self.kept} of {self.total} pairs kept, {dropped} dropped"]
        for kind, by_reason in (("dropped", self.dropped), ("changed", self.changed)):
            for reason, found in by_reason.items():
                more = f" and {len(found) - ids} more" if len(found) > ids else ""
                out.append(
                    f"  {kind} {len(found)} {reason} ({REASON_TEXT.get(reason, reason)}): "
                    f"{', '.join(found[:ids])}{more}"
                )
        out += [f"  error: {message}" for message in self.errors[:ids]]
        return out


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
    if all(_is_messages(v) for v in values) and row["chosen"] and row["rejected"]:
        return True
    raise ValueError(
        f"{where}: prompt, chosen and rejected must all be strings or all be lists of messages "
        "(chosen and rejected not empty)."
    )


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def _squash(text: str) -> str:
    """Text compared for fidelity: Unicode compatibility forms folded, all whitespace removed."""
    return "".join(unicodedata.normalize("NFKC", text).split())


def _contains_in_order(decoded: str, parts: Sequence[str]) -> bool:
    """Whether each of `parts` occurs in `decoded`, in order (both squashed)."""
    text, at = _squash(decoded), 0
    for part in parts:
        found = text.find(_squash(part), at)
        if found < 0:
            return False
        at = found + len(_squash(part))
    return True


def _texts(messages: list[dict[str, Any]]) -> list[str]:
    """The string contents of assistant messages: what decoding a completion must give back."""
    return [m["content"] for m in messages if m.get("role") == "assistant" and isinstance(m["content"], str)]


class _Templater:
    """Renders conversations with the tokenizer's chat template as text (tokenized later, in one batch)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def render(self, messages: list[dict], **options: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, **options)

    def end_of_turn(self, prompt: list[dict]) -> str | None:
        """What the template writes after an assistant message's content (`<|im_end|>\\n`, an EOS, ...)."""
        text = self.render([*prompt, {"role": "assistant", "content": _SENTINEL}])
        at = text.rfind(_SENTINEL)
        return None if at < 0 else text[at + len(_SENTINEL) :]


def _merge_system(messages: list[dict]) -> list[dict]:
    """System turns folded into the first user turn (`system\\n\\nuser`), for templates that refuse them."""
    system = "\n\n".join(
        m["content"] for m in messages if m["role"] == "system" and isinstance(m["content"], str)
    )
    rest = [m for m in messages if m["role"] != "system"]
    for i, message in enumerate(rest):
        if message["role"] == "user" and isinstance(message["content"], str):
            return [*rest[:i], {**message, "content": f"{system}\n\n{message['content']}"}, *rest[i + 1 :]]
    return [{"role": "user", "content": system}, *rest]


def _strip_eos(messages: list[dict], eos: str | None) -> tuple[list[dict], bool]:
    """The messages with EOS text removed from the end of the last one (the template adds its own)."""
    last = messages[-1] if messages else None
    if eos and last and isinstance(last.get("content"), str) and last["content"].endswith(eos):
        return [*messages[:-1], {**last, "content": last["content"][: -len(eos)]}], True
    return messages, False


@dataclass
class _Row:
    """One row on its way to token ids: texts first, ids after the batch tokenization."""

    index: int
    id: str
    conversational: bool
    prompt_text: str = ""
    texts: tuple[str, str] = ("", "")  # full chosen / rejected conversation (or prompt + completion)
    responses: tuple[list[str], list[str]] = ([], [])  # what decoding each completion must give back
    rebuild: tuple[str | None, str | None] = (None, None)  # a single message's content, when rebuildable
    end_of_turn: Any = None  # a callable giving the template's end-of-turn text, asked only on a rewrite
    add_special_tokens: bool = False
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    dropped: str | None = None  # the reason, once dropped

    def drop(self, reason: str, report: DataReport) -> None:
        self.dropped = reason
        report.drop(reason, self.id)


def _special_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer adds before and after text when asked to add special tokens (BOS, EOS)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    at = next((i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain), 0)
    return full[:at], full[at + len(plain) :]


def _prepare(rows: Sequence[dict[str, Any]], tokenizer: Any, *, file: str, system_turn: str) -> list[_Row]:
    """Validate every row and render its texts; template errors are kept on the row, not raised."""
    if system_turn not in SYSTEM_TURNS:
        raise ValueError(f"system_turn must be one of {', '.join(SYSTEM_TURNS)}, not {system_turn!r}.")
    templater = _Templater(tokenizer)
    eos = tokenizer.eos_token or ""
    before, after = _special_ids(tokenizer)
    bos_text = tokenizer.decode(before) if before else ""
    eos_added_by_tokenizer = bool(after)
    prepared = []
    for index, row in enumerate(rows):
        pair_id = (
            str(row["id"]) if isinstance(row, dict) and row.get("id") is not None else f"row {index + 1}"
        )
        where = f"{Path(file).name} row {index + 1} (id {pair_id})"
        item = _Row(index, pair_id, _check_row(row, where))
        if item.conversational:
            try:
                _render_conversation(item, row, templater, eos=eos, system_turn=system_turn)
            except Exception as exc:  # jinja2's TemplateError, or what a template's code raises
                item.error = f"{where}: the chat template refused it: {type(exc).__name__}: {exc}"
        else:
            prompt, sides = row["prompt"], []
            if bos_text and prompt.startswith(bos_text):
                item.notes.append("already_templated")
            else:
                item.add_special_tokens = True
            for response in (row["chosen"], row["rejected"]):
                if eos and response.endswith(eos):
                    item.notes.append("already_templated")
                elif eos and not eos_added_by_tokenizer:
                    response += eos
                sides.append(prompt + response)
            item.prompt_text, item.texts = prompt, (sides[0], sides[1])
            item.responses = ([row["chosen"].removesuffix(eos) if eos else row["chosen"]],
                              [row["rejected"].removesuffix(eos) if eos else row["rejected"]])  # fmt: skip
        prepared.append(item)
    return prepared


def _is_prefill(prompt: list[dict], sides: list[list[dict]]) -> bool:
    """Whether the prompt ends in an assistant message that both responses continue."""

    def text_turn(message: dict, role: str) -> bool:
        return message["role"] == role and isinstance(message["content"], str)

    return (
        bool(prompt)
        and text_turn(prompt[-1], "assistant")
        and all(text_turn(s[0], "assistant") for s in sides)
    )


def _render_conversation(item: _Row, row: dict, templater: _Templater, *, eos: str, system_turn: str) -> None:
    prompt = list(row["prompt"])
    sides = []
    for side in ("chosen", "rejected"):
        messages, stripped = _strip_eos(list(row[side]), eos)
        if stripped:
            item.notes.append("already_templated")
        sides.append(messages)
    prefill = _is_prefill(prompt, sides)
    options = {"continue_final_message": True} if prefill else {"add_generation_prompt": True}
    try:
        item.prompt_text = templater.render(prompt, **options)
    except Exception:
        if system_turn != "merge" or not any(m["role"] == "system" for m in prompt):
            raise
        prompt = _merge_system(prompt)
        item.prompt_text = templater.render(prompt, **options)
        item.notes.append("system_merged")
    if prefill:
        item.notes.append("prefill_continued")
    texts, responses, rebuild = [], [], []
    for messages in sides:
        if prefill:  # the response continues the prefilled message: one assistant turn, its two parts joined
            joined = {**messages[0], "content": prompt[-1]["content"] + messages[0]["content"]}
            conversation = [*prompt[:-1], joined, *messages[1:]]
        else:
            conversation = [*prompt, *messages]
        texts.append(templater.render(conversation))
        responses.append(_texts(messages))
        single = len(messages) == 1 and messages[0]["role"] == "assistant"
        rebuild.append(messages[0]["content"] if single and isinstance(messages[0]["content"], str) else None)
    item.texts, item.responses, item.rebuild = (texts[0], texts[1]), (responses[0], responses[1]), (
        rebuild[0], rebuild[1])  # fmt: skip
    closed_prompt = prompt[:-1] if prefill else prompt
    item.end_of_turn = lambda: templater.end_of_turn(closed_prompt)


def _rebuilt_text(prompt_text: str, content: str, end_of_turn: str) -> tuple[str, str]:
    """Prompt (with its generation prompt) + the response as written + the template's end of turn, and the
    part of the response it adds.

    A generation prompt that already opens a tag the response starts with (`<think>\n` before a response
    that begins `<think>`) is not written twice: the response goes on after it.
    """
    tag = _TRAILING_TAG.search(prompt_text)
    if tag and content.lstrip().startswith(tag.group().strip()):
        content = content.lstrip()[len(tag.group().strip()) :].lstrip("\n")
    return prompt_text + content + end_of_turn, content


def _encode(tokenizer: Any, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
    return list(tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]) if texts else []


@dataclass
class _Tokenized:
    """One row after tokenization, before truncation: what `tokenize_pairs` keeps and the check shows."""

    row: _Row
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


def _tokenize_rows(rows: list[_Row], tokenizer: Any, report: DataReport) -> list[_Tokenized]:
    """Token ids of every row without an error, completions checked against the responses as written."""
    ok = [r for r in rows if r.error is None]
    _, after = _special_ids(tokenizer)
    ids: dict[tuple[int, int], list[int]] = {}
    for special in (True, False):  # one batch per setting: the tokenizer's parallel path
        group = [r for r in ok if r.add_special_tokens == special]
        texts = [t for r in group for t in (r.prompt_text, *r.texts)]
        for k, encoded in enumerate(_encode(tokenizer, texts, special)):
            ids[group[k // 3].index, k % 3] = encoded
    out = []
    for row in ok:
        prompt = ids[row.index, 0]
        if row.add_special_tokens and after and prompt[-len(after) :] == after:
            prompt = prompt[: -len(after)]  # a tokenizer that appends EOS to every text: not to the prompt
        fulls: list[list[int] | None] = [ids[row.index, 1], ids[row.index, 2]]
        split = min(_common_prefix(prompt, f) for f in fulls)
        rewritten = False
        for k in (0, 1):
            if not _faithful(row, k, fulls[k][split:], tokenizer):
                fulls[k], rewritten = _rebuilt_ids(row, k, tokenizer), True
        if fulls[0] is None or fulls[1] is None:
            row.drop("template_rewrite_unrecoverable", report)
            continue
        if rewritten:  # rebuilt sides follow the prompt as rendered: split again, and check them again
            row.notes.append("template_rewrote_completion")
            split = min(_common_prefix(prompt, f) for f in fulls)
            if not all(
                _contains_in_order(tokenizer.decode(f[split:]), r)
                for f, r in zip(fulls, row.responses, strict=True)
            ):
                row.notes.append("tokenizer_changed_text")
        if split < len(prompt):
            row.notes.append("prefix_mismatch")
        out.append(_Tokenized(row, prompt[:split], fulls[0][split:], fulls[1][split:]))
    return out


def _faithful(row: _Row, side: int, completion: list[int], tokenizer: Any) -> bool:
    """Whether decoding `completion` gives the side's response back (as the tokenizer can write it)."""
    responses = row.responses[side]
    decoded = tokenizer.decode(completion)
    if _contains_in_order(decoded, responses):
        return True
    # The tokenizer's own normalization (not the template) may be what differs: compare with its round trip.
    round_trip = [tokenizer.decode(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in responses]
    if round_trip != responses and _contains_in_order(decoded, round_trip):
        row.notes.append("tokenizer_changed_text")
        return True
    return False


def _rebuilt_ids(row: _Row, side: int, tokenizer: Any) -> list[int] | None:
    """The side's full ids rebuilt from the response as written (`_rebuilt_text`); None when it cannot be
    (a completion of several messages, or a template whose end of turn cannot be found)."""
    content = row.rebuild[side]
    end_of_turn = row.end_of_turn() if content is not None and row.end_of_turn else None
    if content is None or end_of_turn is None:
        return None
    text, added = _rebuilt_text(row.prompt_text, content, end_of_turn)
    responses = list(row.responses)
    responses[side] = [added]  # what the rebuilt completion must decode to
    row.responses = (responses[0], responses[1])
    return tokenizer(text, add_special_tokens=row.add_special_tokens)["input_ids"]


def _truncate(
    item: _Tokenized, *, max_length: int, max_prompt_length: int | None, report: DataReport
) -> TokenizedPair | None:
    """The pair cut to `max_length` (see the module docstring), or None when it is dropped."""
    pair_id, prompt, chosen, rejected = item.row.id, item.prompt, item.chosen, item.rejected
    if not chosen or not rejected:
        item.row.drop("empty_completion", report)
        return None
    if chosen == rejected:
        item.row.drop("identical_after_template", report)
        return None
    if max_prompt_length is not None and len(prompt) > max_prompt_length:
        prompt = prompt[len(prompt) - max_prompt_length :]
        item.row.notes.append("prompt_truncated")
    room = max_length - len(prompt)
    if room < 1:
        item.row.drop("prompt_too_long", report)
        return None
    if max(len(chosen), len(rejected)) > room:
        chosen, rejected = chosen[:room], rejected[:room]
        if chosen == rejected:
            item.row.drop("identical_after_truncation", report)
            return None
        item.row.notes.append("completion_truncated")
    for note in dict.fromkeys(item.row.notes):  # counted for kept pairs only, once each
        report.change(note, pair_id)
    return TokenizedPair(pair_id, tuple(prompt), tuple(chosen), tuple(rejected))


def _raise_errors(report: DataReport, errors: list[str]) -> None:
    more = f" ({len(errors) - 1} more rows like it)" if len(errors) > 1 else ""
    raise DataError(
        f"{errors[0]}{more}. A template that refuses system turns can have them merged into the first user "
        "turn with system_turn 'merge'."
        if "system" in errors[0].lower()
        else f"{errors[0]}{more}."
    )


def tokenize_pairs(
    rows: Sequence[dict[str, Any]],
    tokenizer: Any,
    *,
    max_length: int,
    max_prompt_length: int | None,
    report: DataReport,
    system_turn: str = "keep",
    strict: bool = True,
) -> list[TokenizedPair]:
    """Tokenize and truncate `rows` (see the module docstring), filling in `report`.

    Raises `ValueError` for a row without the three columns or with mixed standard/conversational values,
    and `DataError` (a `ValueError`) naming the file, row, id and the template's message for a row the chat
    template refuses; with `strict=False` such rows are dropped as `template_error` and listed in
    `report.errors` instead.
    """
    pairs = _tokenize(rows, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length,
                      report=report, system_turn=system_turn, strict=strict)  # fmt: skip
    return [pair for _, pair in pairs if pair is not None]


def _tokenize(
    rows: Sequence[dict[str, Any]],
    tokenizer: Any,
    *,
    max_length: int,
    max_prompt_length: int | None,
    report: DataReport,
    system_turn: str,
    strict: bool,
) -> list[tuple[_Tokenized, TokenizedPair | None]]:
    report.total = len(rows)
    prepared = _prepare(rows, tokenizer, file=report.file, system_turn=system_turn)
    errors = [r.error for r in prepared if r.error]
    if errors and strict:
        _raise_errors(report, errors)
    for row in prepared:
        if row.error:
            row.drop("template_error", report)
    report.errors = errors[:REPORT_IDS]
    out = []
    for item in _tokenize_rows(prepared, tokenizer, report):
        pair = _truncate(item, max_length=max_length, max_prompt_length=max_prompt_length, report=report)
        out.append((item, pair))
    report.kept = sum(pair is not None for _, pair in out)
    return out


def load_pairs(
    path: Path,
    tokenizer: Any,
    *,
    max_length: int,
    max_prompt_length: int | None,
    system_turn: str = "keep",
    strict: bool = True,
) -> tuple[list[TokenizedPair], DataReport]:
    """Read, tokenize and truncate the pairs of `path`; the pairs kept and the file's report.

    Raises `ValueError` for a file that cannot be read as preference rows and `DataError` for a row the chat
    template refuses (see `tokenize_pairs`)."""
    report = DataReport(file=str(path), sha256=file_sha256(path))
    rows = read_rows(path)
    pairs = tokenize_pairs(rows, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length,
                           report=report, system_turn=system_turn, strict=strict)  # fmt: skip
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


# The data check: the same tokenization, summarised for a person before a run is queued.


def length_histogram(lengths: dict[str, Sequence[int]], *, max_length: int, bins: int = 16) -> dict[str, Any]:
    """Counts of `lengths` (name -> token counts) in `bins` equal bins from 0 to `max_length`, plus one bin
    for everything longer: `{"edges": [0, w, 2w, ..., max_length], "counts": {name: [...bins + 1]},
    "over": {name: n}}`. The bin width is a whole number of tokens."""
    width = max(1, -(-max_length // bins))
    edges = [min(i * width, max_length) for i in range(bins + 1)]
    counts, over = {}, {}
    for name, values in lengths.items():
        row = [0] * (bins + 1)
        for n in values:
            row[min(n // width, bins - 1) if n <= max_length else bins] += 1
        counts[name], over[name] = row, row[bins]
    return {"edges": edges, "counts": counts, "over": over, "max_length": max_length}


def token_pieces(tokenizer: Any, ids: Sequence[int]) -> list[tuple[str, bool, int]]:
    """`ids` as `(text, special, first token index)` pieces, one per token, except that tokens which only
    together make a character (byte-level BPE splits some) form one piece."""
    special = set(tokenizer.all_special_ids)
    pieces: list[tuple[str, bool, int]] = []
    start = 0
    for i in range(len(ids)):
        text = tokenizer.decode(ids[start : i + 1])
        if text.endswith("\ufffd") and i + 1 < len(ids) and i + 1 - start < 4:
            continue
        # Decoded after a little context, so tokenizers that drop a leading space at the start keep it.
        context = tokenizer.decode(ids[max(0, start - 3) : start]) if start else ""
        joined = tokenizer.decode(ids[max(0, start - 3) : i + 1]) if start else text
        piece = joined[len(context) :] if joined.startswith(context) else text
        pieces.append((piece, any(t in special for t in ids[start : i + 1]), start))
        start = i + 1
    return pieces


def _example(tokenizer: Any, split: str, item: _Tokenized, pair: TokenizedPair | None, why: str) -> dict:
    """A pair's tokens for display: per part, `[text, special, truncated]` pieces."""
    segments = []
    for part, full in (("prompt", item.prompt), ("chosen", item.chosen), ("rejected", item.rejected)):
        used = len(getattr(pair, part)) if pair else 0
        if part == "prompt":  # a prompt loses its start, a completion its end
            cut = (lambda k, used=used, full=full: k < len(full) - used) if pair else (lambda k: False)
        else:
            cut = (lambda k, used=used: k >= used) if pair else (lambda k: False)
        pieces = [[text, special, cut(k)] for text, special, k in token_pieces(tokenizer, full)]
        segments.append({"part": part, "tokens": len(full), "kept": used, "pieces": pieces})
    return {"id": item.row.id, "split": split, "why": why, "kept": pair is not None, "segments": segments}


def _why(item: _Tokenized, pair: TokenizedPair | None) -> tuple[str, str]:
    """(kind, words) of what happened to a pair, for picking and labelling the check's examples."""
    if pair is None:
        return "dropped", f"dropped: {item.row.dropped}"
    notes = list(dict.fromkeys(item.row.notes))
    if {"prompt_truncated", "completion_truncated"} & set(notes):
        return "truncated", "kept, " + ", ".join(notes)
    if notes:
        return "changed", "kept, " + ", ".join(notes)
    return "plain", "kept as written"


def check_files(
    files: dict[str, Path],
    tokenizer: Any,
    *,
    max_length: int,
    max_prompt_length: int | None,
    system_turn: str = "keep",
    limit: int | None = None,
    examples: int = 3,
) -> dict[str, Any]:
    """The data check: each split (`name -> file`) tokenized as a run would, with the tokenizer only.

    Returns a JSON-safe dict: per split the `DataReport` (first REPORT_IDS ids per reason), `rows` read and
    `checked` (the first `limit` rows are tokenized when `limit` is set), a `histogram` of untruncated
    prompt / chosen / rejected token lengths (`length_histogram`); `examples`: `examples` pairs with their
    token boundaries (`_example`; a truncated, a changed and a dropped one where there are such, else plain
    ones); `usable`: whether every split keeps a pair and no row is refused; `problems`: why not, in words.
    Raises `ValueError` for a file that cannot be read as preference rows.
    """
    result: dict[str, Any] = {"splits": {}, "problems": []}
    shown: dict[str, list[tuple]] = {}
    for name, path in files.items():
        path = Path(path)
        report = DataReport(file=str(path), sha256=file_sha256(path))
        rows = read_rows(path)
        checked = rows[:limit] if limit is not None else rows
        tokenized = _tokenize(checked, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length,
                              report=report, system_turn=system_turn, strict=False)  # fmt: skip
        lengths = {
            part: [len(getattr(t, part)) for t, _ in tokenized] for part in ("prompt", "chosen", "rejected")
        }
        result["splits"][name] = {
            **report.to_dict(ids_per_reason=REPORT_IDS),
            "rows": len(rows),
            "checked": len(checked),
            "histogram": length_histogram(lengths, max_length=max_length),
        }
        for item, pair in tokenized:
            kind, words = _why(item, pair)
            if len(shown.setdefault(kind, [])) < examples:
                shown[kind].append((name, item, pair, words))
        if report.kept == 0:
            result["problems"].append(f"{name}: every pair would be dropped ({_dropped_words(report)}).")
        if report.errors:
            result["problems"].append(report.errors[0])
    firsts = [shown[k][0] for k in ("truncated", "changed", "dropped") if shown.get(k)]
    rest = [
        p
        for k in ("plain", "truncated", "changed", "dropped")
        for p in shown.get(k, ())[1 if k != "plain" else 0 :]
    ]
    result["examples"] = [_example(tokenizer, *p) for p in (firsts + rest)[:examples]]
    result["usable"] = not result["problems"]
    return result


def _dropped_words(report: DataReport) -> str:
    return ", ".join(f"{len(ids)} {reason}" for reason, ids in report.dropped.items()) or "no rows"


def _pieces_text(pieces: list[list], *, tail: int | None = None) -> str:
    """Pieces joined with `|` between tokens, special tokens in ⟨⟩, cut tokens in [cut: …]."""
    if tail is not None and len(pieces) > tail:
        pieces = pieces[-tail:]
        prefix = "…"
    else:
        prefix = ""
    shown, cut = [], []
    for text, special, truncated in pieces:
        text = text.replace("\n", "↵")
        (cut if truncated else shown).append(f"⟨{text}⟩" if special else text)
    out = prefix + "|".join(shown)
    return out + (f" [cut: {'|'.join(cut)}]" if cut else "")


def format_check(check: dict[str, Any]) -> str:
    """`check_files`' result in words, for a terminal."""
    settings = check.get("settings", {})
    lines = [
        f"Data check: max_length {settings.get('max_length')}, max_prompt_length "
        f"{settings.get('max_prompt_length')}, system_turn {settings.get('system_turn')}, tokenizer of "
        f"{settings.get('base_model')}" + (f" ({check['seconds']} s)" if "seconds" in check else ""),
    ]
    for name, split in check["splits"].items():
        limited = (
            f" (first {split['checked']} of {split['rows']} rows)" if split["checked"] < split["rows"] else ""
        )
        dropped = sum(split["dropped_counts"].values())
        lines += ["", f"{name}: {split['kept']} of {split['checked']} pairs kept, {dropped} dropped{limited}"]
        for kind in ("dropped", "changed"):
            for reason, count in split[f"{kind}_counts"].items():
                ids = split[kind][reason]
                more = f" and {count - 5} more" if count > 5 else ""
                lines.append(
                    f"  {kind} {count} {reason}: {REASON_TEXT.get(reason, '')} ({', '.join(ids[:5])}{more})"
                )
        lines += [f"  error: {e}" for e in split["errors"][:5]]
        histogram = split["histogram"]
        lines.append(
            f"  token lengths (bins of {histogram['edges'][1]} up to {histogram['max_length']}, then over):"
        )
        for part, counts in histogram["counts"].items():
            lines.append(f"    {part:<8} " + " ".join(f"{n:>3}" for n in counts))
    for example in check["examples"]:
        lines += ["", f"{example['split']} pair {example['id']}: {example['why']}"]
        for segment in example["segments"]:
            tail = 24 if segment["part"] == "prompt" else None
            lines.append(f"  {segment['part']:<8} {_pieces_text(segment['pieces'], tail=tail)}")
    lines.append("")
    if check["usable"]:
        lines.append("Usable: every split keeps pairs to train on.")
    else:
        lines += ["Not usable:", *(f"  {p}" for p in check["problems"])]
    return "\n".join(lines)
