"""Benchmark: a local AI judge's verdicts, batched vs one pair at a time (issue #28).

32 pairs of the demo project (its prompts with a hand-written and a sampled answer), each judged in both
orders with the default judging prompt (evaluation.judges) and the demo project's rubric and criteria (as
labeling/management/commands/seed_demo.py sets them: what its users judge with), two ways, on the same
model, device, dtype and threads, after a warm-up, model loading not timed:
- `one_at_a_time` (the baseline): a plain scorer, as one would write it: each of the 64 prompts rendered
  with the chat template and run whole and alone, one forward pass each. That is what
  `choice_probabilities` did at batch_size 1 before it shared prefixes; at batch_size 1 it now runs the
  shared head once too, so it is no longer a one-pass-per-prompt baseline;
- `batched`: `LocalBackend.choice_probabilities` at batch_size 16: the tokens all 64 prompts start with
  (instructions, rubric, criteria) run once, then the prompts' own tails, left-padded 16 at a time.
The probabilities must agree (to 1e-4 on CPU). The sides take turns, `--rounds` times (on a shared machine
the load changes under a long run); each side's fastest round counts (as timeit does: the round least
slowed by other processes), and every round's seconds are in the report. pairs/s = 32 / seconds;
speed-up = batched / one_at_a_time, target on CPU at least 3x. A CPU's prefill is compute-bound (a batch
of whole prompts runs no faster per token than one prompt alone), so there the speed-up comes from the
tokens not run: about prompt_tokens_mean / (prompt_tokens_mean - shared_prefix_tokens), both reported.
Peak memory: the process's max RSS after each side's first round (the baseline runs first, so a higher
number after `batched` is what batching added), and torch.cuda.max_memory_allocated per side on CUDA.

Run: `.venv/bin/python bench/judge.py [--model PATH] [--pairs N] [--rounds N]`. Writes var/bench/judge.json.
"""

from __future__ import annotations

import argparse
import ast
import json
import platform
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evaluation.judges import judge_both_orders  # noqa: E402
from training.demo_model import FOLDER_NAME, prepare_demo_model  # noqa: E402

SPEEDUP_TARGET = 3.0
BATCH_SIZE = 16


def demo_pairs(n: int) -> list[tuple[str, str, str]]:
    rows = []
    with open(ROOT / "labeling" / "demo" / "concise_pairs.jsonl", encoding="utf-8") as file:
        for line in file:
            row = json.loads(line)
            prompt = row.get("prompt")
            chosen, rejected = row.get("chosen"), row.get("rejected")
            if isinstance(prompt, str) and isinstance(chosen, str) and isinstance(rejected, str):
                rows.append((prompt, chosen, rejected))
            if len(rows) == n:
                break
    return rows


def demo_rubric() -> tuple[str, list[dict]]:
    """The demo project's (rubric, criteria): DEMO_RUBRIC and DEMO_CRITERIA read from the source of the
    seed_demo command (importing it would need Django set up)."""
    source = ROOT / "labeling" / "management" / "commands" / "seed_demo.py"
    values = {}
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = node.value
    return ast.literal_eval(values["DEMO_RUBRIC"]), ast.literal_eval(values["DEMO_CRITERIA"])


class OneAtATime:
    """The baseline scorer: each prompt alone, whole, in one forward pass, on `backend`'s model. It keeps the
    token ids it ran (`encoded`)."""

    def __init__(self, backend: Any) -> None:
        self.tokenizer, self.model, self.device = backend.tokenizer, backend.model, backend.device
        self.encoded: list[list[int]] = []

    def choice_probabilities(self, prompts: Sequence[list[dict]], options: Sequence[str]) -> Any:
        import numpy as np
        import torch

        firsts = [self.tokenizer(option, add_special_tokens=False).input_ids[0] for option in options]
        rows, self.encoded = [], []
        with torch.inference_mode():
            for messages in prompts:
                text = self.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False
                )
                self.encoded.append(self.tokenizer(text, add_special_tokens=False).input_ids)
                ids = torch.tensor([self.encoded[-1]], device=self.device)
                logits = self.model(ids, logits_to_keep=1).logits[0, -1].float()
                rows.append(torch.softmax(torch.log_softmax(logits, -1)[firsts], -1).cpu().numpy())
        return np.array(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "var" / "bench" / "judge.json"))
    args = parser.parse_args()
    model = args.model
    if model is None:
        model = str(ROOT / "var" / "models" / FOLDER_NAME)
        prepare_demo_model(Path(model), log=lambda line: print(line, file=sys.stderr))
    import numpy as np
    import torch

    from generation.backends.local import LocalBackend, shared_prefix_length

    pairs = demo_pairs(args.pairs)
    rubric, criteria = demo_rubric()
    backend = LocalBackend(model, batch_size=BATCH_SIZE)
    cuda = backend.device.type == "cuda"
    sides = {"one_at_a_time": OneAtATime(backend), "batched": backend}
    for scorer in sides.values():
        judge_both_orders(scorer, pairs[:2], rubric=rubric, criteria=criteria)  # warm-up
    results: dict[str, dict[str, Any]] = {name: {"seconds": []} for name in sides}
    for _ in range(args.rounds):
        for name, scorer in sides.items():
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            shown, swapped = judge_both_orders(scorer, pairs, rubric=rubric, criteria=criteria)
            if cuda:
                torch.cuda.synchronize()
            results[name]["seconds"].append(time.perf_counter() - start)
            results[name].update(shown=shown, swapped=swapped)
            # Max RSS only grows: read after this side's first round, before the next side ran.
            results[name].setdefault("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            if cuda:
                results[name].setdefault("cuda_peak_mb", torch.cuda.max_memory_allocated() / 2**20)
    for side in results.values():
        side["pairs_per_second"] = len(pairs) / min(side["seconds"])

    batched, baseline = results["batched"], results["one_at_a_time"]
    speedup = batched["pairs_per_second"] / baseline["pairs_per_second"]
    worst = float(max(np.abs(batched[k] - baseline[k]).max() for k in ("shown", "swapped")))
    encoded = sides["one_at_a_time"].encoded
    report = {
        "model": model, "pairs": len(pairs), "orders": 2, "batch_size": BATCH_SIZE,
        "device": backend.device.type,
        "device_name": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "prompt_tokens_mean": sum(map(len, encoded)) / len(encoded),
        "shared_prefix_tokens": shared_prefix_length(encoded),
        **{f"{name}_seconds": side["seconds"] for name, side in results.items()},
        **{f"{name}_pairs_per_second": side["pairs_per_second"] for name, side in results.items()},
        "speedup": speedup, "max_probability_difference": worst,
        **{f"peak_rss_mb_after_{name}": side["peak_rss_mb"] for name, side in results.items()},
        **({f"cuda_peak_mb_{name}": side["cuda_peak_mb"] for name, side in results.items()} if cuda else {}),
        "target_speedup": SPEEDUP_TARGET,
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    if not cuda and (speedup < SPEEDUP_TARGET or worst > 1e-4):
        print(f"FAIL: speed-up {speedup:.2f}x (target {SPEEDUP_TARGET}x), difference {worst:.2g}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
