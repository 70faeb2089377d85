"""Build the demo's concise-answer pairs: a hand-written direct answer (chosen) against the demo base model's
own answer to the same question, sampled (rejected). Run once by a developer; the output is committed.

    python scripts/build_demo_pairs.py ANSWERS.jsonl labeling/demo/concise_pairs.jsonl

ANSWERS.jsonl holds `{"prompt": ..., "answer": ...}` lines: everyday questions with direct answers of one or
two sentences, written by hand. The rejected side is what SmolLM2-135M-Instruct (the demo model, `manage.py
prepare_demo_model`) says itself under its chat template, sampled at temperature 1 from a fixed seed:
long-winded and often wrong. Its answers are cut at the last full sentence within MAX_NEW_TOKENS, so both
sides end as finished answers. A preference against the model's own outputs (on-policy, as in iterative DPO)
is what moves its answers; padding added by hand to the chosen text would be text the model never writes,
and DPO would push it down without changing what the model says. Samples rather than greedy answers: a
greedy answer is the model's most likely text, so no held-out preference share could measure a change
against it. Pairs whose generated answer is not at least twice as long as the direct one are left out.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL = Path(__file__).resolve().parents[1] / "var" / "models" / "smollm2-135m-instruct"
MAX_NEW_TOKENS = 96
BATCH = 16
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n\n")


def finished(text: str) -> str:
    """The text up to its last complete sentence (the whole text when it has none)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return (text[: ends[-1]] if ends else text).strip()


def main(source: Path, target: Path) -> None:
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    items = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": item["prompt"]}], add_generation_prompt=True, tokenize=False
        )
        for item in items
    ]
    order = sorted(range(len(items)), key=lambda i: len(texts[i]))
    answers: dict[int, str] = {}
    for start in range(0, len(order), BATCH):
        batch = order[start : start + BATCH]
        encoded = tokenizer(
            [texts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False
        )
        with torch.inference_mode():
            output = model.generate(
                **encoded,
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                pad_token_id=tokenizer.pad_token_id,
            )
        for i, ids in zip(batch, output[:, encoded["input_ids"].shape[1] :], strict=True):
            answers[i] = finished(tokenizer.decode(ids, skip_special_tokens=True))
        print(f"{len(answers)} of {len(items)}", file=sys.stderr)
    kept = 0
    with target.open("w") as out:
        for i, item in enumerate(items):
            rejected = answers[i]
            if len(rejected.split()) < 2 * len(item["answer"].split()):
                continue
            kept += 1
            row = {"id": f"concise-{kept:03d}", "prompt": item["prompt"], "chosen": item["answer"],
                   "rejected": rejected}  # fmt: skip
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{kept} of {len(items)} pairs written to {target}", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
